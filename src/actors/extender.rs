//! The series extender: makes the occurrences of recurring events that
//! came within the horizon as time passes.
//!
//! One instance at a time extends (the holder of a Postgres advisory lock
//! on a connection of its own, like the outbox publisher and the Activity
//! bridge). Correctness does not rest on the lock: each series is extended
//! in a transaction that holds its row (`FOR UPDATE SKIP LOCKED`) and moves
//! its `materialised_until` with the occurrences it makes, and one
//! occurrence per instance of the rule is a unique index. The lock only
//! keeps the other instances from doing the same work for nothing.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgPool};
use tokio::sync::Notify;

use crate::config::SeriesConfig;
use crate::names::Subjects;
use crate::store::series;

/// Session-level advisory lock naming the one extending instance.
pub const EXTENDER_LOCK: i64 = 0x6576_656e_7473_7378; // "eventssx"

/// Series extended per look.
const BATCH: i64 = 100;

pub struct Extender {
    db: PgPool,
    lock_options: PgConnectOptions,
    subjects: Subjects,
    config: SeriesConfig,
    outbox_wakeup: Arc<Notify>,
    /// Occurrences are made outside the scope actors: their tenants' lists
    /// must be read again.
    listing: Arc<crate::actors::listing::Listing>,
    stop: crate::actors::stopper::Stopper,
}

impl Extender {
    pub fn new(
        db: PgPool,
        lock_options: PgConnectOptions,
        subjects: Subjects,
        config: SeriesConfig,
        outbox_wakeup: Arc<Notify>,
        listing: Arc<crate::actors::listing::Listing>,
    ) -> Arc<Self> {
        Arc::new(Self {
            db,
            lock_options: lock_options.log_statements(tracing::log::LevelFilter::Off),
            subjects,
            config,
            outbox_wakeup,
            listing,
            stop: Default::default(),
        })
    }

    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let extender = self.clone();
        tokio::spawn(async move { extender.run().await })
    }

    pub fn stop(&self) {
        self.stop.stop();
    }

    fn stopped(&self) -> bool {
        self.stop.stopped()
    }

    /// Sleeps `d`; false when stopped meanwhile.
    async fn pause(&self, d: Duration) -> bool {
        self.stop.pause(d).await
    }

    async fn run(self: Arc<Self>) {
        let every = self.config.extend_interval;
        while !self.stopped() {
            let mut conn = match self.lock_options.connect().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "series extender: no lock connection");
                    self.pause(every).await;
                    continue;
                }
            };
            let locked: Result<bool, sqlx::Error> =
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(EXTENDER_LOCK)
                    .fetch_one(&mut conn)
                    .await;
            if !matches!(locked, Ok(true)) {
                drop(conn);
                self.pause(every).await;
                continue;
            }
            tracing::info!("series extender: extending (this instance holds the lock)");
            loop {
                if let Err(e) = self.pass().await {
                    tracing::warn!(error = %e, "series extender: a pass failed; trying again");
                }
                if !self.pause(every).await {
                    break;
                }
                // Closing the connection gives the lock up; a dead one means
                // another instance may hold it now.
                if sqlx::query("SELECT 1").execute(&mut conn).await.is_err() {
                    break;
                }
            }
        }
    }

    /// Extends every series that is behind the horizon, a batch at a time.
    pub async fn pass(&self) -> Result<usize, crate::error::AppError> {
        let mut made = 0;
        loop {
            let until = self.config.horizon_end();
            let behind = series::behind(&self.db, until, BATCH).await?;
            let mut progressed = false;
            for (tenant, id) in &behind {
                if self.stopped() {
                    return Ok(made);
                }
                let written = series::extend(
                    &self.db,
                    &self.subjects,
                    *tenant,
                    *id,
                    until,
                    self.config.horizon.max_occurrences,
                    self.config.now(),
                )
                .await?;
                if let Some(written) = written {
                    progressed = true;
                    if !written.events.is_empty() {
                        self.listing.forget(*tenant);
                    }
                    made += written.events.len();
                    if written.effects.outbox_rows > 0 {
                        self.outbox_wakeup.notify_one();
                    }
                }
            }
            if !progressed || behind.len() < BATCH as usize {
                break;
            }
        }
        if made > 0 {
            tracing::info!(occurrences = made, "series extender: made occurrences");
        }
        Ok(made)
    }
}
