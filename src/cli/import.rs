//! `events-svc import django`: the cut-over command (runbook in
//! `docs/operations.md`).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use uuid::Uuid;

use crate::config::Settings;
use crate::import::{self, Options, progress::Progress, source::Source, verify};

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Import the Django service's events, RSVPs, attendance and unpublished
    /// outbox rows, then verify them against the source.
    #[command(
        long_about = "Import the Django service's events, RSVPs, attendance and \
        unpublished outbox rows from its database (read-only, in one snapshot), keeping every \
        id, through the same write rules as the API; then print a verification table per \
        tenant. Re-running imports only what changed at the source.\n\n\
        Exit status: 0 everything imported and verified; 1 rows refused, rows gone from the \
        source, or a verification difference (all listed); 69 a database cannot be reached or the source is not the Django one; \
        78 unusable setting."
    )]
    Django(DjangoArgs),
}

#[derive(Debug, Args)]
pub struct DjangoArgs {
    /// The Django service's Postgres URL (read only).
    #[arg(long, value_name = "URL")]
    source: String,
    /// Import one tenant only.
    #[arg(long, value_name = "UUID")]
    tenant_id: Option<Uuid>,
    /// Read and compare only: write nothing, print the plan and the refusals.
    #[arg(long)]
    dry_run: bool,
    /// Import refused rows with the nearest safe value (listed), e.g. a
    /// visibility that does not fit the scope becomes private.
    #[arg(long)]
    fix: bool,
    /// Rows per transaction.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..=50_000))]
    batch: i64,
    /// No progress on stderr.
    #[arg(long)]
    quiet: bool,
}

pub async fn run(settings: &Settings, command: ImportCommand) -> ExitCode {
    let ImportCommand::Django(args) = command;
    let mut source = match Source::open(&args.source, args.tenant_id).await {
        Ok(s) => s,
        Err(message) => {
            eprintln!(
                "events-svc import: {message} ({})",
                crate::config::redact(&args.source)
            );
            return ExitCode::from(super::EXIT_UNAVAILABLE);
        }
    };
    let db = match super::ops::pool(settings).await {
        Ok(db) => db,
        Err(code) => return code,
    };
    if let Err(e) = crate::store::migrate(&db).await {
        eprintln!("events-svc import: cannot bring this database's schema up to date: {e}");
        return ExitCode::FAILURE;
    }
    let prefix = settings
        .subject_prefix
        .clone()
        .unwrap_or_else(|| "events".into());
    let subjects = crate::names::Subjects::new(prefix);
    let options = Options {
        tenant: args.tenant_id,
        dry_run: args.dry_run,
        fix: args.fix,
        batch: args.batch,
    };
    let mut progress = Progress::new(!args.quiet);
    let report = match import::run(&mut source, &db, &subjects, &options, &mut progress).await {
        Ok(r) => r,
        Err(message) => {
            eprintln!(
                "events-svc import: {message}; nothing after the last completed batch was written, run it again to resume"
            );
            return ExitCode::FAILURE;
        }
    };
    if !args.dry_run {
        super::announce_changes(settings, &report.changed).await;
    }

    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "table", "created", "updated", "unchanged", "fixed", "refused"
    );
    for (table, t) in &report.tallies {
        println!(
            "{table:<12} {:>9} {:>9} {:>9} {:>9} {:>9}",
            t.created, t.updated, t.unchanged, t.fixed, t.refused
        );
    }
    if args.dry_run {
        println!("(dry run: nothing was written; the counts above are what an import would do)");
    }
    let refused = report
        .refusals
        .iter()
        .filter(|r| !r.reason.starts_with("fixed: "))
        .count();
    if !report.refusals.is_empty() {
        println!("\nrows refused or fixed:");
        for r in &report.refusals {
            println!("  {} {}: {}", r.table, r.id, r.reason);
        }
    }
    if !report.gone.is_empty() {
        println!(
            "\nimported earlier, gone from the source (kept here; remove them with the API or `events-svc dsar erase` if the source erased a user):"
        );
        for (table, id) in &report.gone {
            println!("  {table} {id}");
        }
    }
    if args.dry_run {
        return ExitCode::SUCCESS;
    }
    let checks = match verify::check(&mut source, &db, args.tenant_id, &report.outbox_here).await {
        Ok(c) => c,
        Err(message) => {
            eprintln!("events-svc import: the verification failed: {message}");
            return ExitCode::FAILURE;
        }
    };
    println!("\n{}", verify::render(&checks));
    let agrees = checks.iter().all(verify::TenantCheck::agrees);
    if agrees && refused == 0 && report.gone.is_empty() {
        println!("verified: everything at the source is here");
        ExitCode::SUCCESS
    } else {
        let mut why = Vec::new();
        if refused > 0 {
            why.push(format!(
                "{refused} rows refused (see above; --fix imports the fixable ones)"
            ));
        }
        if !report.gone.is_empty() {
            why.push(format!("{} rows gone from the source", report.gone.len()));
        }
        if !agrees {
            why.push("the verification differs".to_string());
        }
        eprintln!("events-svc import: not verified: {}", why.join("; "));
        ExitCode::FAILURE
    }
}
