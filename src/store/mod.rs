//! Postgres: the pool, database creation, and the embedded migrations.

pub mod audit;
pub mod batch;
pub mod dsar;
pub mod exports;
pub mod feeds;
pub mod ics_imports;
pub mod imports;
pub mod memberships;
pub mod outbox;
pub mod reads;
pub mod reminders;
pub mod replays;
pub mod rows;
pub mod series;

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::backoff::Backoff;
use crate::config::{DatabaseConfig, redact};

/// The schema, compiled into the binary so `serve` and `migrate` need no files.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot reach Postgres at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot create database '{name}': {source}")]
    CreateDatabase {
        name: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
}

/// Connection options for a dedicated connection (the publisher's lock).
pub fn connect_options(config: &DatabaseConfig) -> Result<PgConnectOptions, StoreError> {
    options(config)
}

fn options(config: &DatabaseConfig) -> Result<PgConnectOptions, StoreError> {
    let opts: PgConnectOptions = config
        .url
        .parse()
        .map_err(|source| StoreError::Unreachable {
            url: redact(&config.url),
            source,
        })?;
    // Statement logging at info would put every query in the service log.
    // No JIT: every statement here is a short key look-up or a bounded
    // page, and JIT compilation (tens of milliseconds) is triggered by cost
    // estimates, which stale statistics inflate.
    Ok(opts
        .log_statements(tracing::log::LevelFilter::Trace)
        .options([("jit", "off")]))
}

/// A small pool for a worker whose every statement finds its rows through
/// an index (the outbox publisher): its sessions do not plan sequential
/// scans, so its plans stay right when the statistics are stale (autovacuum
/// behind or off), which otherwise turns a claim of a few hundred due rows
/// into a scan of the whole outbox on every cycle.
pub fn index_only_pool(connect: &PgConnectOptions, max_connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(connect.clone().options([("enable_seqscan", "off")]))
}

/// Creates the configured database when it does not exist yet.
pub async fn create_database_if_missing(config: &DatabaseConfig) -> Result<(), StoreError> {
    let name = config.database_name();
    let admin = options(config)?.database("postgres");
    let mut conn = sqlx::PgConnection::connect_with(&admin)
        .await
        .map_err(|source| StoreError::Unreachable {
            url: redact(&config.url),
            source,
        })?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none() {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}")))
            .execute(&mut conn)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another instance created it between our check and our create.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(source) => return Err(StoreError::CreateDatabase { name, source }),
        }
    }
    let _ = conn.close().await;
    Ok(())
}

/// Opens the pool, creating the database first, and retries with backoff
/// while Postgres is unreachable. `give_up_after` bounds the wait (None: forever).
pub async fn connect_with_retry(
    config: &DatabaseConfig,
    give_up_after: Option<Duration>,
) -> Result<PgPool, StoreError> {
    let started = std::time::Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    loop {
        let attempt = async {
            create_database_if_missing(config).await?;
            let pool = PgPoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(config.acquire_timeout)
                .connect_with(options(config)?)
                .await
                .map_err(|source| StoreError::Unreachable {
                    url: redact(&config.url),
                    source,
                })?;
            Ok::<_, StoreError>(pool)
        };
        match attempt.await {
            Ok(pool) => {
                tracing::info!(url = %redact(&config.url), "connected to Postgres");
                return Ok(pool);
            }
            Err(e) => {
                if give_up_after.is_some_and(|limit| started.elapsed() >= limit) {
                    return Err(e);
                }
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Postgres not available yet; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Applies every pending migration. Safe to run from several instances at
/// once: sqlx holds an advisory lock while it migrates.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Deletes expired replay-guard and idempotency records every minute.
pub fn spawn_housekeeping(db: PgPool) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            if db.is_closed() {
                return;
            }
            let result = sqlx::query(
                "WITH a AS (DELETE FROM request_replays WHERE expires_at < now()),
                      -- Reminders of events over for a day: none can be due again.
                      b AS (DELETE FROM event_reminders r USING events e
                            WHERE e.id = r.event_id AND e.ends_at < now() - interval '1 day')
                 DELETE FROM idempotency_keys WHERE expires_at < now()",
            )
            .execute(&db)
            .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "housekeeping failed; will retry");
            }
        }
    });
}
