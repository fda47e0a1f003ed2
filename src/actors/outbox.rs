//! The outbox actor: publishes committed outbox rows to JetStream.
//!
//! Exactly one instance publishes at a time: the holder of a Postgres
//! advisory lock on a dedicated connection. If that instance dies, its
//! connection closes, the lock is released, and another instance takes it
//! on its next tick. Rows are claimed by state (pending, due), in insertion
//! order, so a row committed late is simply picked up by a later cycle;
//! nothing is skipped. Publishes are pipelined and their acks awaited
//! together; `Nats-Msg-Id` = outbox id lets JetStream drop duplicates
//! when a cycle is retried after a crash between publish and mark.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{Mutex, Notify};
use uuid::Uuid;

use crate::domain::format_utc;
use crate::encoding::Encoding;
use crate::store::outbox::{self as store, Failure, OutboxRow};

#[derive(Debug, Clone)]
pub struct OutboxConfig {
    pub batch: i64,
    /// Rows written by other instances (or before a restart) are found by
    /// polling at this interval; local commits wake the publisher at once.
    pub poll_interval: Duration,
    pub max_attempts: i32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub encoding: Encoding,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            batch: 2000,
            poll_interval: Duration::from_millis(500),
            max_attempts: 50,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            encoding: Encoding::Msgpack,
        }
    }
}

/// Figures the publisher keeps for metrics and readiness.
#[derive(Debug, Default)]
pub struct PublisherStats {
    pub leader: AtomicBool,
    pub published: AtomicU64,
    pub failed: AtomicU64,
    pub dead: AtomicU64,
    pub cycles: AtomicU64,
    /// Unix millis of the last cycle that reached NATS without a connection error.
    pub last_healthy_ms: AtomicU64,
    pub last_error: std::sync::Mutex<Option<String>>,
}

impl PublisherStats {
    fn record_error(&self, e: impl std::fmt::Display) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(e.to_string());
        }
    }
}

pub struct Publisher {
    db: PgPool,
    connect: PgConnectOptions,
    nats: async_nats::Client,
    js: jetstream::Context,
    config: OutboxConfig,
    lock: Mutex<Option<PgConnection>>,
    /// The previous cycle's "mark published" update, still running, and the
    /// `seq` of its rows: the next cycle claims around them, so claiming and
    /// publishing the next batch overlaps that update.
    marking: Mutex<Option<Marking>>,
    pub stats: Arc<PublisherStats>,
    metrics: Arc<crate::telemetry::metrics::Metrics>,
}

/// The `seq` of the rows being marked published, and the update doing it.
type Marking = (Arc<Vec<i64>>, tokio::task::JoinHandle<()>);

/// The CloudEvents 1.0 structured envelope of one row.
pub fn envelope(row: &OutboxRow, encoding: Encoding) -> (Vec<u8>, &'static str) {
    let (data_type, content_type, enc) = (
        encoding.content_type(),
        encoding.cloudevents_content_type(),
        encoding,
    );
    let body = json!({
        "specversion": "1.0",
        "id": row.id.to_string(),
        "source": "updspace/events",
        "type": row.event_type,
        "time": format_utc(&row.occurred_at),
        "subject": row.event_id.to_string(),
        "tenantid": row.tenant_id.to_string(),
        "sequence": row.published_seq,
        "datacontenttype": data_type,
        "data": row.payload,
    });
    (enc.encode(&body).to_vec(), content_type)
}

fn headers(row: &OutboxRow, content_type: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", row.id.to_string().as_str());
    h.insert("Content-Type", content_type);
    if let Some(tp) = &row.traceparent {
        h.insert("traceparent", tp.as_str());
    }
    if let Some(ts) = &row.tracestate {
        h.insert("tracestate", ts.as_str());
    }
    h
}

fn now_ms() -> u64 {
    Utc::now().timestamp_millis().max(0) as u64
}

/// Publishes rows, pipelined; returns the ids acknowledged and the failures.
async fn publish_rows(
    js: &jetstream::Context,
    rows: &[OutboxRow],
    encoding: Encoding,
) -> (Vec<Uuid>, Vec<(Uuid, String, bool)>) {
    let mut pending = Vec::with_capacity(rows.len());
    let mut failed = Vec::new();
    for row in rows {
        let (payload, content_type) = envelope(row, encoding);
        let message = PublishMessage::build()
            .payload(payload.into())
            .headers(headers(row, content_type));
        match js.send_publish(row.subject.clone(), message).await {
            Ok(ack) => pending.push((row.id, ack)),
            Err(e) => failed.push((row.id, e.to_string(), true)),
        }
    }
    let acks = futures::future::join_all(
        pending
            .into_iter()
            .map(|(id, ack)| async move { (id, ack.await) }),
    )
    .await;
    let mut ok = Vec::with_capacity(acks.len());
    for (id, ack) in acks {
        match ack {
            Ok(_) => ok.push(id),
            Err(e) => {
                let outage = matches!(
                    e.kind(),
                    PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe
                );
                failed.push((id, e.to_string(), outage));
            }
        }
    }
    (ok, failed)
}

impl Publisher {
    pub fn new(
        db: PgPool,
        connect: PgConnectOptions,
        nats: async_nats::Client,
        config: OutboxConfig,
    ) -> Self {
        Self {
            db,
            connect,
            js: jetstream::new(nats.clone()),
            nats,
            config,
            lock: Mutex::new(None),
            marking: Mutex::new(None),
            stats: Arc::default(),
            metrics: crate::telemetry::metrics::Metrics::new(),
        }
    }

    /// Reports into the service's metrics registry.
    pub fn with_metrics(mut self, metrics: Arc<crate::telemetry::metrics::Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    fn set_leader(&self, leader: bool) {
        self.stats.leader.store(leader, Ordering::Relaxed);
        self.metrics.outbox_leader.set(i64::from(leader));
    }

    fn backoff(&self, attempts: i32) -> Duration {
        let exp = self
            .config
            .backoff_base
            .saturating_mul(1u32 << attempts.clamp(0, 20) as u32)
            .min(self.config.backoff_max);
        exp.mul_f64(rand::random_range(0.5..=1.0))
    }

    /// Holds (or takes) the publisher lock; false if another instance has it.
    async fn lead(&self) -> bool {
        let mut lock = self.lock.lock().await;
        if let Some(conn) = lock.as_mut() {
            if sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok() {
                return true;
            }
            tracing::warn!("lost the outbox publisher lock connection; stepping down");
            *lock = None;
            self.set_leader(false);
        }
        let Ok(mut conn) = PgConnection::connect_with(&self.connect).await else {
            return false;
        };
        match store::try_lock(&mut conn).await {
            Ok(true) => {
                tracing::info!("this instance is now the outbox publisher");
                *lock = Some(conn);
                self.set_leader(true);
                true
            }
            _ => {
                let _ = conn.close().await;
                self.set_leader(false);
                false
            }
        }
    }

    /// Gives up the lock (on shutdown), so another instance takes over at once.
    pub async fn step_down(&self) {
        self.settle().await;
        if let Some(conn) = self.lock.lock().await.take() {
            let _ = conn.close().await;
        }
        self.set_leader(false);
    }

    /// Waits for the previous cycle's "mark published" update.
    pub async fn settle(&self) {
        if let Some((_, marking)) = self.marking.lock().await.take() {
            let _ = marking.await;
        }
    }

    /// One cycle: publish up to one batch. Returns how many rows it handled.
    pub async fn cycle(&self) -> usize {
        self.stats.cycles.fetch_add(1, Ordering::Relaxed);
        if !self.lead().await {
            self.settle().await;
            return 0;
        }
        // While the previous batch is being marked its rows still look
        // pending: the claim skips them.
        let in_flight = match self.marking.lock().await.as_ref() {
            Some((seqs, marking)) if !marking.is_finished() => seqs.clone(),
            _ => Arc::default(),
        };
        let mut rows = match store::due(&self.db, self.config.batch, &in_flight).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outbox");
                self.stats.record_error(&e);
                return 0;
            }
        };
        if rows.is_empty() {
            self.stats
                .last_healthy_ms
                .store(now_ms(), Ordering::Relaxed);
            return 0;
        }
        if let Err(e) = store::assign_sequences(&self.db, &mut rows).await {
            tracing::warn!(error = %e, "cannot number outbox rows");
            return 0;
        }
        let (ok, failed) =
            if self.nats.connection_state() == async_nats::connection::State::Connected {
                publish_rows(&self.js, &rows, self.config.encoding).await
            } else {
                // Publishing into a dead connection would only buffer and time out.
                let error = "NATS is not connected".to_string();
                (
                    Vec::new(),
                    rows.iter().map(|r| (r.id, error.clone(), true)).collect(),
                )
            };
        if failed.iter().all(|(_, _, outage)| !outage) {
            self.stats
                .last_healthy_ms
                .store(now_ms(), Ordering::Relaxed);
        }
        self.stats
            .published
            .fetch_add(ok.len() as u64, Ordering::Relaxed);
        self.metrics.outbox_published.inc_by(ok.len() as u64);
        // One update in flight at a time; this one runs while the next
        // batch is claimed and published.
        self.settle().await;
        let seqs = Arc::new(rows.iter().map(|r| r.seq).collect::<Vec<_>>());
        let db = self.db.clone();
        let marking = tokio::spawn(async move {
            if let Err(e) = store::mark_published(&db, &ok).await {
                // Published but not marked: a later cycle sends them again
                // and JetStream drops the duplicates by Nats-Msg-Id.
                tracing::warn!(error = %e, rows = ok.len(), "cannot mark rows published; they will be re-sent and deduplicated");
            }
        });
        *self.marking.lock().await = Some((seqs, marking));
        if !failed.is_empty() {
            let attempts: std::collections::HashMap<Uuid, i32> =
                rows.iter().map(|r| (r.id, r.attempts)).collect();
            let now: DateTime<Utc> = Utc::now();
            let failures: Vec<Failure> = failed
                .iter()
                .map(|(id, error, _)| {
                    let tried = attempts.get(id).copied().unwrap_or(0) + 1;
                    let dead = tried >= self.config.max_attempts;
                    Failure {
                        id: *id,
                        error: error.clone(),
                        retry_at: now
                            + chrono::Duration::from_std(self.backoff(tried)).unwrap_or_default(),
                        dead,
                    }
                })
                .collect();
            let newly_dead = failures.iter().filter(|f| f.dead).count();
            self.stats
                .failed
                .fetch_add(failures.len() as u64, Ordering::Relaxed);
            self.stats
                .dead
                .fetch_add(newly_dead as u64, Ordering::Relaxed);
            self.metrics
                .outbox_publish_errors
                .inc_by(failures.len() as u64);
            self.metrics.outbox_dead.inc_by(newly_dead as u64);
            if let Some((_, first, _)) = failed.first() {
                self.stats.record_error(first);
                tracing::warn!(failed = failures.len(), dead = newly_dead, error = %first, "publishing outbox rows failed; they will be retried with backoff");
            }
            if let Err(e) = store::mark_failed(&self.db, &failures).await {
                tracing::warn!(error = %e, "cannot record failed publishes");
            }
        }
        rows.len()
    }

    /// Re-publishes rows published since `since` (after a NATS data loss).
    /// JetStream drops those it still holds within its duplicate window.
    pub async fn replay(
        &self,
        since: DateTime<Utc>,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<(usize, usize), sqlx::Error> {
        let mut after = store::replay_from(since);
        let (mut sent, mut failed) = (0usize, 0usize);
        loop {
            let rows = store::published_since(&self.db, after, self.config.batch).await?;
            let Some(last) = rows.last() else { break };
            // Never taken: a CHECK constraint gives every published row its time.
            let Some(at) = last.published_at else { break };
            after = (at, last.seq);
            let (ok, bad) = publish_rows(&self.js, &rows, self.config.encoding).await;
            sent += ok.len();
            failed += bad.len();
            progress(sent, failed);
        }
        Ok((sent, failed))
    }
}

pub enum OutboxMsg {
    Wake,
    Tick,
    Done(usize),
}

pub struct OutboxActor;

pub struct OutboxState {
    publisher: Arc<Publisher>,
    running: bool,
    again: bool,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for OutboxActor {
    type Msg = OutboxMsg;
    type State = OutboxState;
    type Arguments = (Arc<Publisher>, Arc<Notify>);

    async fn pre_start(
        &self,
        myself: ActorRef<OutboxMsg>,
        (publisher, wakeup): Self::Arguments,
    ) -> Result<OutboxState, ActorProcessingErr> {
        let every = publisher.config.poll_interval;
        let me = myself.clone();
        // Scope actors signal commits in-process; polling finds the rest.
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let msg = tokio::select! {
                    _ = tick.tick() => OutboxMsg::Tick,
                    () = wakeup.notified() => OutboxMsg::Wake,
                };
                if me.send_message(msg).is_err() {
                    return;
                }
            }
        });
        Ok(OutboxState {
            publisher,
            running: false,
            again: false,
            ticker: Some(ticker),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<OutboxMsg>,
        state: &mut OutboxState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.ticker.take() {
            t.abort();
        }
        state.publisher.step_down().await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<OutboxMsg>,
        msg: OutboxMsg,
        state: &mut OutboxState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            OutboxMsg::Wake | OutboxMsg::Tick => {
                if state.running {
                    state.again = true;
                } else {
                    start(&myself, state);
                }
            }
            OutboxMsg::Done(handled) => {
                state.running = false;
                let full = handled as i64 >= state.publisher.config.batch;
                if full || std::mem::take(&mut state.again) {
                    start(&myself, state);
                }
            }
        }
        Ok(())
    }
}

fn start(myself: &ActorRef<OutboxMsg>, state: &mut OutboxState) {
    state.running = true;
    let publisher = state.publisher.clone();
    let me = myself.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let handled = tokio::spawn(async move { publisher.cycle().await })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "outbox cycle failed");
                0
            });
        if handled > 0 {
            tracing::debug!(
                handled,
                took_ms = started.elapsed().as_millis() as u64,
                "outbox cycle"
            );
        }
        let _ = me.send_message(OutboxMsg::Done(handled));
    });
}

/// Starts the outbox actor.
pub async fn start_actor(
    publisher: Arc<Publisher>,
    wakeup: Arc<Notify>,
) -> Result<ActorRef<OutboxMsg>, String> {
    Actor::spawn(None, OutboxActor, (publisher, wakeup))
        .await
        .map(|(actor, _)| actor)
        .map_err(|e| e.to_string())
}

/// A preview of what the publisher would send next.
pub async fn dry_run(
    db: &PgPool,
    limit: i64,
    encoding: Encoding,
) -> Result<Vec<Value>, sqlx::Error> {
    let rows = store::due(db, limit, &[]).await?;
    Ok(rows
        .iter()
        .map(|row| {
            let (body, content_type) = envelope(row, encoding);
            let decoded = encoding.decode_lenient(&body);
            json!({
                "subject": row.subject,
                "headers": {"Nats-Msg-Id": row.id.to_string(), "Content-Type": content_type, "traceparent": row.traceparent},
                "attempts": row.attempts,
                "message": decoded,
            })
        })
        .collect())
}
