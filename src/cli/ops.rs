//! Operator commands that work on the database directly: the outbox,
//! retention and DSAR.

use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use uuid::Uuid;

use crate::config::{DatabaseConfig, Settings, parse_duration};
use crate::domain::{TenantId, UserId};
use crate::store;

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Pending and dead rows, the age of the oldest pending one, and the
    /// last error per event type.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show what the publisher would send next, without sending anything.
    DryRun {
        /// How many rows to show.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Put dead rows back in the queue (all of them, or the given ids).
    RetryDead {
        /// Outbox row ids; repeat the flag for several.
        #[arg(long = "id", value_name = "UUID")]
        ids: Vec<Uuid>,
    },
    /// Publish again every row published since a time (after a NATS data
    /// loss). JetStream drops the ones it still holds by Nats-Msg-Id.
    Replay {
        /// An RFC 3339 time (2026-11-26T10:00:00Z) or a duration back from now (2h, 3d).
        #[arg(long, value_name = "TIME")]
        since: String,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DsarAction {
    Export,
    Erase,
}

#[derive(Debug, Args)]
pub struct DsarArgs {
    /// export: print everything the service holds about the user; erase:
    /// delete or anonymise it (one transaction).
    #[arg(value_enum)]
    pub action: DsarAction,
    #[arg(long, value_name = "UUID")]
    pub tenant_id: String,
    #[arg(long, value_name = "UUID")]
    pub user_id: String,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("events-svc: {message}");
    ExitCode::FAILURE
}

pub(super) fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

pub(super) async fn pool(settings: &Settings) -> Result<sqlx::PgPool, ExitCode> {
    let config = DatabaseConfig::load(settings).map_err(|e| super::config_error(&e))?;
    store::connect_with_retry(&config, Some(Duration::from_secs(10)))
        .await
        .map_err(fail)
}

fn parse_since(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    let back = parse_duration(text)?;
    Some(Utc::now() - chrono::Duration::from_std(back).ok()?)
}

pub async fn outbox(settings: &Settings, command: OutboxCommand) -> ExitCode {
    let db = match pool(settings).await {
        Ok(db) => db,
        Err(code) => return code,
    };
    match command {
        OutboxCommand::Status { json } => match store::outbox::status(&db).await {
            Ok(status) if json => {
                print_json(&serde_json::to_value(&status).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Ok(status) => {
                println!("pending    {}", status.pending);
                println!("dead       {}", status.dead);
                println!("published  {}", status.published);
                match status.oldest_pending_age_seconds {
                    Some(age) => println!("oldest pending row: {age:.1} s old"),
                    None => println!("oldest pending row: none"),
                }
                if !status.by_type.is_empty() {
                    println!();
                    println!("{:<26} {:>8} {:>6}  last error", "type", "pending", "dead");
                    for t in &status.by_type {
                        println!(
                            "{:<26} {:>8} {:>6}  {}",
                            t.event_type,
                            t.pending,
                            t.dead,
                            t.last_error.as_deref().unwrap_or("-")
                        );
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        OutboxCommand::DryRun { limit } => {
            let encoding = match crate::config::out_encoding(settings) {
                Ok(e) => e,
                Err(e) => return super::config_error(&e),
            };
            match crate::actors::outbox::dry_run(&db, limit.clamp(1, 10_000), encoding).await {
                Ok(rows) => {
                    eprintln!(
                        "{} row(s) would be published next; nothing was sent",
                        rows.len()
                    );
                    print_json(&serde_json::Value::Array(rows));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        OutboxCommand::RetryDead { ids } => {
            let ids = (!ids.is_empty()).then_some(ids.as_slice());
            match store::outbox::retry_dead(&db, ids).await {
                Ok(n) => {
                    println!(
                        "{n} dead row(s) put back in the queue; a running publisher sends them shortly"
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        OutboxCommand::Replay { since } => {
            let Some(since) = parse_since(&since) else {
                eprintln!(
                    "events-svc: --since '{since}' is neither an RFC 3339 time nor a duration like 2h"
                );
                return ExitCode::from(2);
            };
            let loaded = (|| {
                Ok::<_, crate::config::ConfigError>((
                    crate::config::NatsConfig::load(settings)?,
                    DatabaseConfig::load(settings)?,
                    crate::config::outbox_config(settings)?,
                ))
            })();
            let (nats_config, database, outbox) = match loaded {
                Ok(c) => c,
                Err(e) => return super::config_error(&e),
            };
            let nats = match crate::subjects::connect_with_retry(
                &nats_config,
                Some(Duration::from_secs(10)),
            )
            .await
            {
                Ok(n) => n,
                Err(e) => return fail(e),
            };
            let connect = match store::connect_options(&database) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let publisher = crate::actors::outbox::Publisher::new(connect, nats.clone(), outbox);
            eprintln!("replaying rows published since {since}");
            let result = publisher
                .replay(since, |sent, failed| {
                    eprintln!("  sent {sent} message(s), {failed} failed");
                })
                .await;
            let _ = nats.flush().await;
            match result {
                Ok((sent, 0)) => {
                    println!("replayed {sent} message(s); JetStream dropped those it still held");
                    ExitCode::SUCCESS
                }
                Ok((sent, failed)) => fail(format!(
                    "replayed {sent} message(s) but {failed} failed; run the command again (it is safe)"
                )),
                Err(e) => fail(e),
            }
        }
    }
}

pub async fn purge_retention(settings: &Settings, days: Option<u32>) -> ExitCode {
    let days = match days {
        Some(d) => d,
        None => match crate::config::retention_days(settings) {
            Ok(d) => d,
            Err(e) => return super::config_error(&e),
        },
    };
    let db = match pool(settings).await {
        Ok(db) => db,
        Err(code) => return code,
    };
    match store::dsar::purge_published_outbox(&db, days).await {
        Ok(report) => {
            print_json(&report);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

pub async fn dsar(settings: &Settings, args: DsarArgs) -> ExitCode {
    let (Ok(tenant), Ok(user)) = (
        TenantId::parse(&args.tenant_id),
        UserId::parse(&args.user_id),
    ) else {
        eprintln!("events-svc: tenant-id and user-id must be valid UUID values");
        return ExitCode::from(2);
    };
    let db = match pool(settings).await {
        Ok(db) => db,
        Err(code) => return code,
    };
    let prefix = settings
        .subject_prefix
        .clone()
        .unwrap_or_else(|| "events".into());
    let subjects = crate::names::Subjects::new(prefix);
    // Run by an operator at the console: no user is the actor.
    let entry = |action: &'static str| store::audit::AuditEntry {
        tenant_id: Some(tenant.into()),
        actor_user_id: None,
        action,
        target_type: "user",
        target_id: Some(user.to_string()),
        request_id: None,
        details: serde_json::json!({"via": "cli"}),
    };
    let result = match args.action {
        DsarAction::Export => match store::dsar::export(&db, tenant, user).await {
            Ok(bundle) => store::audit::record(&db, &[entry("dsar.exported")])
                .await
                .map(|()| bundle)
                .map_err(Into::into),
            Err(e) => Err(e),
        },
        DsarAction::Erase => {
            match store::dsar::erase(&db, &subjects, tenant, user, &[entry("dsar.erased")]).await {
                Ok(erased) => {
                    let mut changed: std::collections::HashMap<_, Vec<_>> = Default::default();
                    for event in &erased.changed_events {
                        changed
                            .entry(crate::actors::ScopeKey::of(event))
                            .or_default()
                            .push(event.id);
                    }
                    super::announce_changes(settings, &changed).await;
                    Ok(erased.summary)
                }
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(report) => {
            print_json(&report);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
