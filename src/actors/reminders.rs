//! The reminder scheduler: commits `event.reminder.due` for every reminder
//! whose time has come.
//!
//! One instance at a time schedules (the holder of a Postgres advisory
//! lock on a connection of its own, like the outbox publisher and the
//! Activity bridge); the others stand by and take over when its connection
//! goes. Each round claims the reminders due (`FOR UPDATE SKIP LOCKED`),
//! marks them sent and writes their outbox rows in one transaction, so a
//! reminder is committed exactly once however often instances restart or
//! race; the outbox publisher then sends them like any other change.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgPool};
use tokio::sync::Notify;

use crate::config::Clock;
use crate::names::Subjects;
use crate::store::batch::write::{self, OutboxRow, Trace, Writes};

/// Session-level advisory lock naming the one scheduling instance.
pub const SCHEDULER_LOCK: i64 = 0x6576_656e_7473_726d; // "eventsrm"

/// Reminders committed per transaction.
const ROUND: i64 = 500;

/// How often a standing-by instance tries for the lock.
const LOCK_CHECK: Duration = Duration::from_secs(1);

pub struct Scheduler {
    db: PgPool,
    lock_options: PgConnectOptions,
    subjects: Subjects,
    clock: Clock,
    poll: Duration,
    outbox_wakeup: Arc<Notify>,
    stop: crate::actors::stopper::Stopper,
}

pub struct SchedulerParts {
    pub db: PgPool,
    pub lock_options: PgConnectOptions,
    pub subjects: Subjects,
    pub clock: Clock,
    pub poll: Duration,
    pub outbox_wakeup: Arc<Notify>,
}

impl Scheduler {
    pub fn new(parts: SchedulerParts) -> Arc<Self> {
        Arc::new(Self {
            db: parts.db,
            lock_options: parts
                .lock_options
                .log_statements(tracing::log::LevelFilter::Off),
            subjects: parts.subjects,
            clock: parts.clock,
            poll: parts.poll,
            outbox_wakeup: parts.outbox_wakeup,
            stop: Default::default(),
        })
    }

    /// Runs until [`Scheduler::stop`].
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let scheduler = self.clone();
        tokio::spawn(async move { scheduler.run().await })
    }

    pub fn stop(&self) {
        self.stop.stop();
    }

    fn stopped(&self) -> bool {
        self.stop.stopped()
    }

    async fn pause(&self, d: Duration) -> bool {
        self.stop.pause(d).await
    }

    async fn run(self: Arc<Self>) {
        while !self.stopped() {
            let mut conn = match self.lock_options.connect().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "reminders: no lock connection");
                    self.pause(LOCK_CHECK).await;
                    continue;
                }
            };
            let locked: Result<bool, sqlx::Error> =
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(SCHEDULER_LOCK)
                    .fetch_one(&mut conn)
                    .await;
            if !matches!(locked, Ok(true)) {
                drop(conn);
                self.pause(LOCK_CHECK).await;
                continue;
            }
            tracing::info!("reminders: scheduling (this instance holds the lock)");
            let led = self.lead(&mut conn).await;
            // Closing the connection gives the lock up.
            drop(conn);
            if let Err(e) = led {
                tracing::warn!(error = %e, "reminders: stopped scheduling; trying again");
                self.pause(LOCK_CHECK).await;
            }
        }
    }

    async fn lead(&self, lock: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
        let mut last_check = std::time::Instant::now();
        while !self.stopped() {
            if last_check.elapsed() >= LOCK_CHECK {
                sqlx::query("SELECT 1").execute(&mut *lock).await?;
                last_check = std::time::Instant::now();
            }
            let sent = match self.round().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "reminders: a round failed; trying again");
                    0
                }
            };
            // A full round may have left more due: go on at once.
            if sent < ROUND as usize && !self.pause(self.poll).await {
                break;
            }
        }
        Ok(())
    }

    /// One transaction: the reminders due now, marked sent, with their
    /// outbox rows. Returns how many.
    pub async fn round(&self) -> Result<usize, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let due = crate::store::reminders::claim_due(&mut tx, self.clock.now(), ROUND).await?;
        if due.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        let rows: Vec<OutboxRow<'_>> = due
            .iter()
            .map(|event| OutboxRow {
                event,
                trace: Trace::default(),
            })
            .collect();
        let mut w = Writes::default();
        let n = write::insert_outbox(&mut w, &self.subjects, &rows)?;
        w.execute(&mut tx).await?;
        tx.commit().await?;
        self.outbox_wakeup.notify_one();
        tracing::debug!(reminders = n, "reminders: committed");
        Ok(n)
    }
}
