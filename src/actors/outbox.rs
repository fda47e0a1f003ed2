//! The outbox actor: publishes committed outbox rows to JetStream.
//!
//! Exactly one instance publishes at a time: the holder of a Postgres
//! advisory lock on a dedicated connection. If that instance dies, its
//! connection closes, the lock is released, and another instance takes it
//! on its next tick. Rows are claimed by state (pending, due), in insertion
//! order, so a row committed late is simply picked up by a later cycle;
//! nothing is skipped. Publishes are pipelined across events and sent one
//! after the other within an event, so an event's messages are stored in
//! order even when one of them is lost on the way; `Nats-Msg-Id` = outbox
//! id lets JetStream drop duplicates when a cycle is retried after a crash
//! between publish and mark.
//!
//! JetStream remembers ids only for the stream's duplicate window, and a
//! retried row may be in the stream already (its ack lost). So every row
//! is stamped with the time it was first sent, and a row whose first send
//! is nearly a window old is looked for in the stream before it is sent
//! again: found, it is marked published as it stands.
//!
//! A failure that is NATS's, not the row's (no connection, no stream leader,
//! no ack in time), is retried after a short pause that grows while the
//! outage lasts, and never counts towards the row's attempts: a row goes
//! dead for its own failures only, and goes out soon after NATS is back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
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

pub use crate::config::OutboxConfig;

/// Figures the publisher keeps for metrics and readiness.
#[derive(Debug, Default)]
pub struct PublisherStats {
    pub leader: AtomicBool,
    pub published: AtomicU64,
    pub failed: AtomicU64,
    pub dead: AtomicU64,
    pub cycles: AtomicU64,
    /// Times the cursor waited for running writers to tell a gap.
    pub gap_waits: AtomicU64,
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
    /// After an outage, rows above the cursor are tried again from then on.
    resume_at: std::sync::Mutex<Option<Instant>>,
    /// Stepped down for good (shutdown): a cycle still running must not
    /// take the lock again.
    stopped: AtomicBool,
    pub stats: Arc<PublisherStats>,
    metrics: Arc<crate::telemetry::metrics::Metrics>,
    /// Consecutive cycles that ended in an outage (for the retry pause).
    outages: std::sync::atomic::AtomicU32,
    last_gauges: Arc<std::sync::Mutex<Option<Instant>>>,
    last_outage_warning: std::sync::Mutex<Option<Instant>>,
}

/// A cycle, the watch on running writers and a gauge refresh can run at once.
const PUBLISHER_CONNECTIONS: u32 = 3;

/// How often the cursor asks whether the transactions that may fill a gap
/// have ended: first soon (most write transactions take milliseconds),
/// then less often.
const GAP_POLL_FIRST: Duration = Duration::from_micros(500);
const GAP_POLL_MAX: Duration = Duration::from_millis(20);
/// A gap held open longer than this is logged (with what holds it).
const GAP_WARNING_AFTER: Duration = Duration::from_secs(10);

/// Why a row did not reach the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    /// NATS's fault: no connection, no answer in time, or no stream leader.
    Outage,
    /// No stream captures the subject (or it has no leader right now: the
    /// publisher asks the stream to tell the two apart).
    NoStream,
    /// The row's own failure (too large, refused by the stream).
    Row,
}

/// The pause before outage-failed rows are tried again: short at first,
/// growing with each cycle the outage lasts, so rows go out soon after NATS
/// is back without being rewritten on every tick of a long outage.
const OUTAGE_RETRY_FIRST: Duration = Duration::from_millis(250);
const OUTAGE_RETRY_MAX: Duration = Duration::from_secs(2);

/// While an outage lasts, its failures are logged at warning level this often.
const OUTAGE_WARNING_EVERY: Duration = Duration::from_secs(10);

/// The outbox gauges are refreshed after the publisher's cycles at most this often.
const GAUGE_REFRESH: Duration = Duration::from_millis(200);

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
        "sequence": row.published_seq.unwrap_or(row.seq),
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

/// Whether a NATS subject filter (`*` one token, `>` the rest) matches a subject.
fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut wanted = filter.split('.');
    let mut given = subject.split('.');
    loop {
        match (wanted.next(), given.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(w), Some(g)) if w == g => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn now_ms() -> u64 {
    Utc::now().timestamp_millis().max(0) as u64
}

/// What one round of publishing did with its rows.
#[derive(Default)]
struct Published {
    ok: Vec<Uuid>,
    failed: Vec<(Uuid, String, FailureKind)>,
    /// Not sent: a row before them of the same event failed.
    held: Vec<Uuid>,
}

fn send_failure(e: &async_nats::jetstream::context::PublishError) -> FailureKind {
    if matches!(e.kind(), PublishErrorKind::MaxPayloadExceeded) {
        FailureKind::Row
    } else {
        FailureKind::Outage
    }
}

fn ack_failure(e: &async_nats::jetstream::context::PublishError) -> FailureKind {
    match e.kind() {
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => FailureKind::Outage,
        PublishErrorKind::StreamNotFound => FailureKind::NoStream,
        _ => FailureKind::Row,
    }
}

/// Publishes rows, pipelined across events and one at a time within an
/// event: a row is sent once the one before it of its event is
/// acknowledged. Pipelining an event's rows would let a later one be stored
/// while an earlier one is lost: a node dying with the earlier one in a
/// buffer, a new stream leader whose interest reaches this connection's
/// server between the two. When a row fails, the later rows of its event
/// in `rows` are not sent. When the connection drops, the acknowledgements
/// still awaited cannot come any more (replies to the old connection are
/// lost): their rows fail at once instead of at the ack timeout.
async fn publish_rows(
    client: &async_nats::Client,
    js: &jetstream::Context,
    rows: &[OutboxRow],
    encoding: Encoding,
) -> Published {
    use futures::StreamExt;
    let mut queues: std::collections::HashMap<Uuid, std::collections::VecDeque<&OutboxRow>> =
        std::collections::HashMap::new();
    let mut firsts = Vec::new();
    for row in rows {
        let queue = queues.entry(row.event_id).or_default();
        if queue.is_empty() {
            firsts.push(row.event_id);
        }
        queue.push_back(row);
    }
    let mut done = Published::default();
    let connects = client.statistics().connects.load(Ordering::Relaxed);
    let mut acks = futures::stream::FuturesUnordered::new();
    // The row each event has in flight.
    let mut in_flight: std::collections::HashMap<Uuid, Uuid> = std::collections::HashMap::new();
    for event in firsts {
        if let Some(queue) = queues.get_mut(&event)
            && let Some((id, ack)) = send_next(js, encoding, queue, &mut done).await
        {
            in_flight.insert(event, id);
            acks.push(ack);
        }
    }
    let lost = connection_lost(client, connects);
    tokio::pin!(lost);
    loop {
        let next = tokio::select! {
            next = acks.next() => next,
            () = &mut lost, if !in_flight.is_empty() => {
                for (event, id) in in_flight.drain() {
                    done.failed.push((
                        id,
                        "the NATS connection was lost before the acknowledgement".into(),
                        FailureKind::Outage,
                    ));
                    if let Some(queue) = queues.get_mut(&event) {
                        done.held.extend(queue.drain(..).map(|r| r.id));
                    }
                }
                return done;
            }
        };
        let Some((id, event, ack)) = next else {
            return done;
        };
        in_flight.remove(&event);
        let Some(queue) = queues.get_mut(&event) else {
            continue;
        };
        match ack {
            Ok(_) => {
                done.ok.push(id);
                if let Some((next_id, ack)) = send_next(js, encoding, queue, &mut done).await {
                    in_flight.insert(event, next_id);
                    acks.push(ack);
                }
            }
            Err(e) => {
                done.failed.push((id, e.to_string(), ack_failure(&e)));
                done.held.extend(queue.drain(..).map(|r| r.id));
            }
        }
    }
}

/// Completes once the connection is not the one of `connects` any more:
/// down, or replaced by a reconnect.
async fn connection_lost(client: &async_nats::Client, connects: u64) {
    loop {
        if client.connection_state() != async_nats::connection::State::Connected
            || client.statistics().connects.load(Ordering::Relaxed) != connects
        {
            return;
        }
        // The client reports its state but offers no way to wait for a change.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An acknowledgement to wait for, with the row and event it is for.
type Ack = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = (
                    Uuid,
                    Uuid,
                    Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
                ),
            > + Send,
    >,
>;

/// Sends the next row of an event's queue; a row that cannot even be sent
/// fails, and the rest of its event is held.
async fn send_next(
    js: &jetstream::Context,
    encoding: Encoding,
    queue: &mut std::collections::VecDeque<&OutboxRow>,
    done: &mut Published,
) -> Option<(Uuid, Ack)> {
    let row = queue.pop_front()?;
    let (payload, content_type) = envelope(row, encoding);
    let message = PublishMessage::build()
        .payload(payload.into())
        .headers(headers(row, content_type));
    match js.send_publish(row.subject.clone(), message).await {
        Ok(ack) => {
            let (id, event) = (row.id, row.event_id);
            Some((id, Box::pin(async move { (id, event, ack.await) })))
        }
        Err(e) => {
            done.failed.push((row.id, e.to_string(), send_failure(&e)));
            done.held.extend(queue.drain(..).map(|r| r.id));
            None
        }
    }
}

/// How far the cursor can walk from `through` over `rows` (in `seq`
/// order): the number of rows it takes, and the `seq` it reaches. It stops
/// at a missing number, unless the number is at or below `skip_to`, which
/// is known not to exist.
fn walk(through: i64, rows: &[store::AheadRow], skip_to: Option<i64>) -> (usize, i64) {
    let mut reached = through;
    let mut taken = 0;
    for ahead in rows {
        let seq = ahead.row.seq;
        if seq != reached + 1 && skip_to.is_none_or(|to| seq > to) {
            break;
        }
        reached = seq;
        taken += 1;
    }
    (taken, reached)
}

/// How much of the duplicate window the publisher does not rely on: room
/// for the time between reading a row and its copy reaching the server, and
/// for Postgres (which stamps sends) and NATS (which stamps messages)
/// keeping slightly different clocks.
fn safety_margin(window: Duration) -> Duration {
    (window / 4).min(Duration::from_secs(300))
}

/// A row that cannot go out in this cycle.
#[derive(Debug, Clone, PartialEq)]
struct Unsent {
    id: Uuid,
    attempts: i32,
    error: String,
    /// NATS could not be reached (as opposed to refusing the row).
    outage: bool,
}

/// What a cycle does with the rows it claimed.
#[derive(Debug, Default)]
struct Plan {
    /// Rows to publish, in `seq` order. A row the stream was found not to
    /// hold has its send stamp cleared, so it is stamped again.
    send: Vec<OutboxRow>,
    /// Rows found in the stream: published already, by an earlier attempt
    /// whose ack was lost (their `id` and `seq`).
    in_stream: Vec<(Uuid, i64)>,
    /// Rows whose earlier copies could not be looked for; their events'
    /// later rows are left pending, so that they keep their order.
    unsent: Vec<Unsent>,
}

impl Plan {
    /// Sorts rows into a plan: `beyond` tells the rows whose first send may
    /// have left the duplicate window; `found` is what the stream holds of
    /// them, or why it could not be asked.
    fn sort(
        rows: Vec<OutboxRow>,
        beyond: impl Fn(&OutboxRow) -> bool,
        found: &Result<HashSet<Uuid>, String>,
    ) -> Self {
        let mut plan = Plan::default();
        let mut held: HashSet<Uuid> = HashSet::new();
        for mut row in rows {
            if held.contains(&row.event_id) {
                continue;
            }
            if !beyond(&row) {
                plan.send.push(row);
                continue;
            }
            match found {
                Ok(ids) if ids.contains(&row.id) => plan.in_stream.push((row.id, row.seq)),
                Ok(_) => {
                    row.first_sent_at = None;
                    row.sent_secs_ago = None;
                    plan.send.push(row);
                }
                Err(error) => {
                    held.insert(row.event_id);
                    plan.unsent.push(Unsent {
                        id: row.id,
                        attempts: row.attempts,
                        error: error.clone(),
                        outage: true,
                    });
                }
            }
        }
        plan
    }

    /// Nothing goes out: the first row of each event is retried later for
    /// `error`, and stands for its event (the ones after it wait behind it).
    fn none(rows: Vec<OutboxRow>, error: &str) -> Self {
        let mut seen = HashSet::new();
        Plan {
            unsent: rows
                .into_iter()
                .filter(|row| seen.insert(row.event_id))
                .map(|row| Unsent {
                    id: row.id,
                    attempts: row.attempts,
                    error: error.to_string(),
                    outage: true,
                })
                .collect(),
            ..Plan::default()
        }
    }
}

/// The next message in `stream` at or after `seq` on `subject` (which may
/// be a wildcard); None past the end. A plain (not direct) get: it works
/// with direct get off, as the service's stream has it.
async fn next_message(
    stream: &Stream,
    subject: &str,
    seq: u64,
) -> Result<Option<jetstream::message::StreamMessage>, String> {
    match stream.get_first_raw_message_by_subject(subject, seq).await {
        Ok(message) => Ok(Some(message)),
        Err(e) if matches!(e.kind(), RawMessageErrorKind::NoMessageFound) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The lowest stream sequence at or after which every message stored at
/// `since` or later lies. The server stamps messages as it stores them, in
/// sequence order, so the times can be bisected.
async fn first_sequence_since(
    stream: &Stream,
    state: &jetstream::stream::State,
    since: DateTime<Utc>,
) -> Result<u64, String> {
    let since = i128::from(since.timestamp_nanos_opt().unwrap_or(i64::MIN));
    let (mut low, mut high) = (state.first_sequence, state.last_sequence);
    while low < high {
        let middle = low + (high - low) / 2;
        match next_message(stream, ">", middle).await? {
            Some(m) if m.time.unix_timestamp_nanos() < since => low = m.sequence + 1,
            _ => high = middle,
        }
    }
    Ok(low)
}

/// The ids of `rows` that `stream` holds: each row is looked for by its
/// `Nats-Msg-Id` among the messages on its subject stored since the
/// earliest first send of them, less `slack` for the clocks.
async fn find_in_stream(
    stream: &Stream,
    rows: &[&OutboxRow],
    slack: Duration,
) -> Result<HashSet<Uuid>, String> {
    let mut found = HashSet::new();
    let state = &stream.cached_info().state;
    let Some(earliest) = rows.iter().filter_map(|r| r.first_sent_at).min() else {
        return Ok(found);
    };
    if state.messages == 0 {
        return Ok(found);
    }
    let since = earliest - chrono::Duration::from_std(slack).unwrap_or_default();
    let from = first_sequence_since(stream, state, since).await?;
    let mut by_subject: BTreeMap<&str, HashSet<Uuid>> = BTreeMap::new();
    for row in rows {
        by_subject
            .entry(row.subject.as_str())
            .or_default()
            .insert(row.id);
    }
    for (subject, mut wanted) in by_subject {
        let mut seq = from;
        while !wanted.is_empty() {
            let Some(message) = next_message(stream, subject, seq).await? else {
                break;
            };
            let id = message
                .headers
                .get("Nats-Msg-Id")
                .and_then(|v| v.as_str().parse::<Uuid>().ok());
            if let Some(id) = id
                && wanted.remove(&id)
            {
                found.insert(id);
            }
            seq = message.sequence + 1;
        }
    }
    Ok(found)
}

impl Publisher {
    /// `connect`: how to reach Postgres, for the publisher's own
    /// connections (its lock, and a small pool planned for index look-ups).
    pub fn new(connect: PgConnectOptions, nats: async_nats::Client, config: OutboxConfig) -> Self {
        Self {
            db: crate::store::index_only_pool(&connect, PUBLISHER_CONNECTIONS),
            connect,
            js: jetstream::new(nats.clone()),
            nats,
            config,
            lock: Mutex::new(None),
            resume_at: std::sync::Mutex::new(None),
            stopped: AtomicBool::new(false),
            stats: Arc::default(),
            metrics: crate::telemetry::metrics::Metrics::new(),
            outages: Default::default(),
            last_gauges: Arc::default(),
            last_outage_warning: std::sync::Mutex::new(None),
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

    /// The pause before rows failed by an outage are tried again.
    fn outage_retry(&self) -> Duration {
        // The cycle that failed is already counted in the streak.
        let streak = self
            .outages
            .load(Ordering::Relaxed)
            .saturating_sub(1)
            .min(16);
        OUTAGE_RETRY_FIRST
            .saturating_mul(1u32 << streak)
            .min(OUTAGE_RETRY_MAX)
            .min(self.config.backoff_max)
            .mul_f64(rand::random_range(0.5..=1.0))
    }

    /// The stream's subjects if it answers now (it has a leader). A leader
    /// answers in milliseconds; waiting longer would only hold up the retry.
    async fn stream_subjects(&self) -> Option<Vec<String>> {
        let name = &self.config.stream;
        let asked = async {
            let mut stream = self.js.get_stream(name).await.ok()?;
            Some(stream.info().await.ok()?.config.subjects.clone())
        };
        tokio::time::timeout(Duration::from_secs(1), asked)
            .await
            .ok()
            .flatten()
    }

    /// Holds (or takes) the publisher lock; false if another instance has it.
    async fn lead(&self) -> bool {
        if self.stopped.load(Ordering::Acquire) {
            return false;
        }
        let mut lock = self.lock.lock().await;
        if self.stopped.load(Ordering::Acquire) {
            return false;
        }
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

    /// Gives up the lock for good (on shutdown), so another instance takes
    /// over at once, and closes the publisher's pool: a cycle still running
    /// on a stopped instance could otherwise take the lock again and send
    /// rows or move the cursor behind the next publisher's back.
    pub async fn step_down(&self) {
        self.stopped.store(true, Ordering::Release);
        if let Some(conn) = self.lock.lock().await.take() {
            let _ = conn.close().await;
        }
        self.set_leader(false);
        self.db.close().await;
    }

    /// Whether an outage's pause is still running.
    fn pausing(&self) -> bool {
        self.resume_at
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| Instant::now() < at)
    }

    /// The rows above the cursor that are settled: the walk takes rows in
    /// `seq` order as long as no number is missing. A missing number is a
    /// row whose transaction is still running (it commits later, and must
    /// not be overtaken) or one that will never exist (its transaction
    /// rolled back, or a restart of Postgres skipped numbers). When the very
    /// next number is missing, the cursor waits for every transaction that
    /// may be writing outbox rows to end; a number below a row already seen
    /// that is still missing then is skipped. Returns the rows and the
    /// `seq` the cursor may move to.
    async fn settled(&self, through: i64) -> Result<(Vec<store::AheadRow>, i64), sqlx::Error> {
        let mut rows = store::ahead(&self.db, through, self.config.batch).await?;
        let (taken, top) = walk(through, &rows, None);
        if taken > 0 || rows.is_empty() {
            rows.truncate(taken);
            return Ok((rows, top));
        }
        // Every number below this one was drawn before the rows were read,
        // by a transaction running now or one that has ended.
        let seen = rows.last().map_or(through, |r| r.row.seq);
        let writers = store::writers(&self.db).await?;
        self.wait_for(&writers).await?;
        let mut rows = store::ahead(&self.db, through, self.config.batch).await?;
        let (taken, top) = walk(through, &rows, Some(seen));
        if top > through + taken as i64 {
            tracing::debug!(
                from = through + 1,
                to = top,
                "outbox numbers that no transaction wrote were skipped"
            );
        }
        rows.truncate(taken);
        Ok((rows, top))
    }

    /// Waits until none of `writers` is running any more.
    async fn wait_for(&self, writers: &[String]) -> Result<(), sqlx::Error> {
        if writers.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut pause = GAP_POLL_FIRST;
        let mut warned = false;
        self.stats.gap_waits.fetch_add(1, Ordering::Relaxed);
        loop {
            tokio::time::sleep(pause).await;
            if !store::still_writing(&self.db, writers).await? {
                self.metrics
                    .outbox_gap_wait
                    .observe(started.elapsed().as_secs_f64());
                return Ok(());
            }
            pause = (pause * 2).min(GAP_POLL_MAX);
            if !warned && started.elapsed() >= GAP_WARNING_AFTER {
                warned = true;
                tracing::warn!(
                    transactions = ?writers,
                    "the outbox waits for transactions that may still write rows before the next one; a session left open inside a transaction holds every later row back (see pg_stat_activity)"
                );
            }
        }
    }

    /// One cycle: publish up to one batch of rows above the cursor, and the
    /// retries that are due. Returns how many rows it handled.
    pub async fn cycle(&self) -> usize {
        self.stats.cycles.fetch_add(1, Ordering::Relaxed);
        if !self.lead().await {
            return 0;
        }
        let cursor = match store::cursor(&self.db).await {
            Ok(cursor) => cursor,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outbox cursor");
                self.stats.record_error(&e);
                return 0;
            }
        };
        let retries = match store::due(&self.db, self.config.batch).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outbox");
                self.stats.record_error(&e);
                return 0;
            }
        };
        let paused = self.pausing();
        let (ahead, top) = if paused {
            (Vec::new(), cursor.published_through)
        } else {
            match self.settled(cursor.published_through).await {
                Ok(settled) => settled,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the outbox");
                    self.stats.record_error(&e);
                    return 0;
                }
            }
        };
        if retries.is_empty() && top == cursor.published_through {
            if paused {
                // Rows may be waiting above the cursor for the outage's
                // pause to end: not healthy, and the gauges must show them.
                self.gauge_refresher().refresh(false).await;
                return 0;
            }
            self.stats
                .last_healthy_ms
                .store(now_ms(), Ordering::Relaxed);
            // Nothing due: a gauge still showing pending rows is out of date
            // (or shows rows waiting for a retry, which this keeps current).
            if self.metrics.outbox_pending.get() > 0 {
                self.gauge_refresher().refresh(true).await;
            }
            return 0;
        }
        // A long wait for a gap may have outlived the lock.
        if !self.lead().await {
            return 0;
        }
        let mut waiting = Vec::new();
        let mut fresh = Vec::new();
        for ahead in ahead {
            if !ahead.written {
                continue;
            }
            if ahead.behind {
                waiting.push(ahead.row.id);
                continue;
            }
            let mut row = ahead.row;
            if row.seq <= cursor.sending_through {
                row.first_sent_at = cursor.sending_since;
                row.sent_secs_ago = cursor.sending_secs_ago;
            }
            fresh.push(row);
        }
        let retried: HashSet<Uuid> = retries.iter().map(|r| r.id).collect();
        let attempts: HashMap<Uuid, i32> = retries.iter().map(|r| (r.id, r.attempts)).collect();
        let handled = retries.len() + fresh.len() + waiting.len();
        let restamp = fresh.iter().any(|r| r.sent_secs_ago.is_some());
        let mut rows = retries;
        rows.extend(fresh);
        rows.sort_by_key(|r| r.seq);
        let mut plan = if self.nats.connection_state() == async_nats::connection::State::Connected {
            self.plan(rows).await
        } else {
            // Publishing into a dead connection would only buffer and time out.
            Plan::none(rows, "NATS is not connected")
        };
        let (mut resent, sending): (Vec<OutboxRow>, Vec<OutboxRow>) =
            std::mem::take(&mut plan.send)
                .into_iter()
                .partition(|r| retried.contains(&r.id));
        if let Err(e) = store::stamp_sends(&self.db, &mut resent).await {
            tracing::warn!(error = %e, "cannot stamp outbox rows before sending them");
            return 0;
        }
        if let Some(last) = sending.iter().map(|r| r.seq).max() {
            // A row the stream was found not to hold was sent as if for
            // the first time: its window starts now.
            let restart = restamp && sending.iter().any(|r| r.sent_secs_ago.is_none());
            if let Err(e) = store::mark_sending(&self.db, last, restart).await {
                tracing::warn!(error = %e, "cannot note outbox rows as being sent");
                return 0;
            }
        }
        plan.send = resent;
        plan.send.extend(sending);
        plan.send.sort_by_key(|r| r.seq);
        let Published {
            ok,
            mut failed,
            held,
        } = publish_rows(&self.nats, &self.js, &plan.send, self.config.encoding).await;
        if !held.is_empty() {
            tracing::debug!(
                held = held.len(),
                "rows not sent: an earlier row of their event did not reach the stream"
            );
        }
        failed.extend(plan.unsent.iter().map(|u| {
            let kind = if u.outage {
                FailureKind::Outage
            } else {
                FailureKind::Row
            };
            (u.id, u.error.clone(), kind)
        }));
        if failed
            .iter()
            .any(|(_, _, kind)| *kind == FailureKind::NoStream)
        {
            self.tell_no_stream_apart(&plan.send, &mut failed).await;
        }
        let outage = failed
            .iter()
            .any(|(_, _, kind)| *kind == FailureKind::Outage);
        if outage {
            self.outages.fetch_add(1, Ordering::Relaxed);
        } else {
            self.outages.store(0, Ordering::Relaxed);
            self.stats
                .last_healthy_ms
                .store(now_ms(), Ordering::Relaxed);
        }
        if !plan.in_stream.is_empty() {
            tracing::info!(
                rows = plan.in_stream.len(),
                "rows retried after the stream's duplicate window were in the stream already; counting them published without sending them again"
            );
        }
        let in_stream = plan.in_stream.iter().map(|(id, _)| *id);
        // Retried rows are marked one by one; rows above the cursor are
        // published by moving it, unless an outage stopped them: then none
        // of them counts, and all go again after the pause (JetStream drops
        // the copies of those that got in).
        let mut published: Vec<Uuid> = ok
            .iter()
            .copied()
            .chain(in_stream.clone())
            .filter(|id| retried.contains(id))
            .collect();
        let mut failed_retries = Vec::new();
        let mut failed_fresh = Vec::new();
        for failure in failed {
            if retried.contains(&failure.0) {
                failed_retries.push(failure);
            } else {
                failed_fresh.push(failure);
            }
        }
        let mut fresh_published = 0;
        if outage && (!failed_fresh.is_empty() || !held.iter().all(|id| retried.contains(id))) {
            if let Ok(mut at) = self.resume_at.lock() {
                *at = Some(Instant::now() + self.outage_retry());
            }
            if let Some((_, error, _)) = failed_fresh
                .iter()
                .find(|(_, _, kind)| *kind == FailureKind::Outage)
                .or(failed_fresh.first())
            {
                self.note_outage(error, failed_fresh.len()).await;
            }
            // Retried rows held back by an outage wait for their retry too.
            failed_retries.extend(held.iter().filter(|id| retried.contains(id)).map(|id| {
                (
                    *id,
                    "held back by an outage".to_string(),
                    FailureKind::Outage,
                )
            }));
            self.record_failures(&attempts, &failed_retries).await;
            if let Err(e) = store::mark_published(&self.db, &published).await {
                tracing::warn!(error = %e, rows = published.len(), "cannot mark rows published; they will be re-sent and deduplicated");
            }
            self.count_published(published.len());
            self.gauge_refresher().refresh(false).await;
            return handled;
        }
        // Rows that wait behind one of their event's: those the stream
        // refused, the later ones of their events, and those behind a
        // retry. They leave the cursor's path first, so that moving the
        // cursor never counts them published.
        waiting.extend(held.iter().filter(|id| !retried.contains(id)));
        let refused: Vec<_> = failed_fresh
            .into_iter()
            .filter(|(_, _, kind)| *kind == FailureKind::Row)
            .collect();
        failed_retries.extend(refused.iter().cloned());
        if let Err(e) = store::hold(&self.db, &waiting).await {
            tracing::warn!(error = %e, "cannot hold outbox rows back for a retry");
            return 0;
        }
        // Recording a refused row's failure makes it pending; unrecorded,
        // the cursor must not pass it.
        if !failed_retries.is_empty()
            && !self.record_failures(&attempts, &failed_retries).await
            && !refused.is_empty()
        {
            return 0;
        }
        if top > cursor.published_through {
            if let Err(e) = store::advance(&self.db, top).await {
                // Not moved: the next cycle sends the rows again, and
                // JetStream drops the copies by Nats-Msg-Id.
                tracing::warn!(error = %e, "cannot move the outbox cursor; its rows will be re-sent and deduplicated");
                return 0;
            }
            let failed_or_waiting: HashSet<Uuid> = waiting
                .iter()
                .copied()
                .chain(refused.iter().map(|f| f.0))
                .collect();
            fresh_published = plan
                .send
                .iter()
                .filter(|r| !retried.contains(&r.id) && !failed_or_waiting.contains(&r.id))
                .count()
                + in_stream.filter(|id| !retried.contains(id)).count();
        }
        if let Err(e) = store::mark_published(&self.db, &published).await {
            tracing::warn!(error = %e, rows = published.len(), "cannot mark rows published; they will be re-sent and deduplicated");
            published.clear();
        }
        self.count_published(published.len() + fresh_published);
        self.gauge_refresher().refresh(false).await;
        handled
    }

    /// An outage stopped the rows above the cursor: recorded for the
    /// operator's status, counted and logged as retried rows' failures are.
    async fn note_outage(&self, error: &str, rows: usize) {
        self.stats.failed.fetch_add(rows as u64, Ordering::Relaxed);
        self.metrics.outbox_publish_errors.inc_by(rows as u64);
        self.stats.record_error(error);
        self.log_failure(rows, 0, error, true);
        if let Err(e) = store::note_outage(&self.db, error).await {
            tracing::warn!(error = %e, "cannot record the outbox's outage");
        }
    }

    fn count_published(&self, n: usize) {
        self.stats.published.fetch_add(n as u64, Ordering::Relaxed);
        self.metrics.outbox_published.inc_by(n as u64);
    }

    /// "No responders" means no server took the message: the stream has no
    /// leader right now, or its new leader's interest has not reached this
    /// connection's server yet (an outage, both), or no stream captures the
    /// subject at all (the row's failure). Without the stream's name every
    /// such failure is the row's.
    async fn tell_no_stream_apart(
        &self,
        rows: &[OutboxRow],
        failed: &mut [(Uuid, String, FailureKind)],
    ) {
        let subjects = Some(self.stream_subjects().await);
        let subject_of: std::collections::HashMap<Uuid, &str> =
            rows.iter().map(|r| (r.id, r.subject.as_str())).collect();
        for failure in failed.iter_mut() {
            if failure.2 != FailureKind::NoStream {
                continue;
            }
            failure.2 = match &subjects {
                None => FailureKind::Row,
                Some(None) => FailureKind::Outage,
                Some(Some(filters)) => {
                    let subject = subject_of.get(&failure.0).copied().unwrap_or_default();
                    if filters.iter().any(|f| subject_matches(f, subject)) {
                        FailureKind::Outage
                    } else {
                        FailureKind::Row
                    }
                }
            };
        }
    }

    /// Marks the rows that did not reach the stream: those NATS failed are
    /// retried soon and keep their attempts, the others back off and go
    /// dead after `max_attempts`. False if the marks could not be stored.
    async fn record_failures(
        &self,
        attempts: &HashMap<Uuid, i32>,
        failed: &[(Uuid, String, FailureKind)],
    ) -> bool {
        if failed.is_empty() {
            return true;
        }
        let now: DateTime<Utc> = Utc::now();
        let soon = now + chrono::Duration::from_std(self.outage_retry()).unwrap_or_default();
        let failures: Vec<Failure> = failed
            .iter()
            .map(|(id, error, kind)| {
                if *kind == FailureKind::Row {
                    let tried = attempts.get(id).copied().unwrap_or(0) + 1;
                    Failure {
                        id: *id,
                        error: error.clone(),
                        retry_at: now
                            + chrono::Duration::from_std(self.backoff(tried)).unwrap_or_default(),
                        dead: tried >= self.config.max_attempts,
                        counted: true,
                    }
                } else {
                    Failure {
                        id: *id,
                        error: error.clone(),
                        retry_at: soon,
                        dead: false,
                        counted: false,
                    }
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
        if let Some((_, first, kind)) = failed.first() {
            self.stats.record_error(first);
            self.log_failure(failures.len(), newly_dead, first, *kind != FailureKind::Row);
        }
        let stored = match store::mark_failed(&self.db, &failures).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot record failed publishes");
                false
            }
        };
        self.gauge_refresher().refresh(false).await;
        stored
    }

    /// Every cycle of an outage fails the same way: its start, and then a
    /// line every so often, say enough.
    fn log_failure(&self, failed: usize, dead: usize, error: &str, outage: bool) {
        let streak = self.outages.load(Ordering::Relaxed);
        let quiet = streak > 1
            && self
                .last_outage_warning
                .lock()
                .ok()
                .and_then(|at| *at)
                .is_some_and(|at| at.elapsed() < OUTAGE_WARNING_EVERY);
        if quiet {
            tracing::debug!(failed, error = %error, "publishing outbox rows failed again");
        } else {
            if streak > 0
                && let Ok(mut at) = self.last_outage_warning.lock()
            {
                *at = Some(Instant::now());
            }
            tracing::warn!(failed, dead, error = %error, outage, outage_cycles = streak, "publishing outbox rows failed; they will be retried");
        }
    }

    fn gauge_refresher(&self) -> GaugeRefresher {
        GaugeRefresher {
            db: self.db.clone(),
            metrics: self.metrics.clone(),
            last: self.last_gauges.clone(),
        }
    }

    /// Decides, for rows sent before, whether JetStream can still be
    /// trusted to drop a second copy. Those whose first send may have left
    /// the stream's duplicate window are looked for in the stream: found,
    /// they are published already; not found, they are sent again as if
    /// for the first time. Never-sent rows go out as they are.
    async fn plan(&self, rows: Vec<OutboxRow>) -> Plan {
        if rows.iter().all(|r| r.sent_secs_ago.is_none()) {
            return Plan::sort(rows, |_| false, &Ok(HashSet::new()));
        }
        let name = &self.config.stream;
        // Read each time: the window is the stream's, whoever last set it.
        let stream = match self.js.get_stream(name).await {
            Ok(stream) => stream,
            Err(e) => {
                let error = format!("cannot read stream {name}: {e}");
                return Plan::sort(rows, |r| r.sent_secs_ago.is_some(), &Err(error));
            }
        };
        let window = stream.cached_info().config.duplicate_window;
        let margin = safety_margin(window);
        let trusted = window.saturating_sub(margin).as_secs_f64();
        let beyond = |r: &OutboxRow| r.sent_secs_ago.is_some_and(|ago| ago >= trusted);
        let wanted: Vec<&OutboxRow> = rows.iter().filter(|r| beyond(r)).collect();
        let found = if wanted.is_empty() {
            Ok(HashSet::new())
        } else {
            tracing::info!(
                rows = wanted.len(),
                window_secs = window.as_secs_f64(),
                "looking in the stream for rows first sent nearly a duplicate window ago or earlier"
            );
            find_in_stream(&stream, &wanted, margin)
                .await
                .map_err(|e| format!("cannot look for earlier copies in stream {name}: {e}"))
        };
        Plan::sort(rows, beyond, &found)
    }

    /// Re-publishes rows published since `since` (after a NATS data loss).
    /// JetStream drops those it still holds within its duplicate window.
    pub async fn replay(
        &self,
        since: DateTime<Utc>,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<(usize, usize), sqlx::Error> {
        let mut after: store::ReplayCursor = 0;
        let (mut sent, mut failed) = (0usize, 0usize);
        loop {
            let rows = store::published_since(&self.db, since, after, self.config.batch).await?;
            let Some(last) = rows.last() else { break };
            after = last.seq;
            let done = publish_rows(&self.nats, &self.js, &rows, self.config.encoding).await;
            sent += done.ok.len();
            failed += done.failed.len() + done.held.len();
            progress(sent, failed);
        }
        Ok((sent, failed))
    }
}

/// Refreshes the outbox gauges from the database after publisher cycles,
/// so they follow the publisher rather than the metrics timer.
struct GaugeRefresher {
    db: PgPool,
    metrics: Arc<crate::telemetry::metrics::Metrics>,
    last: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl GaugeRefresher {
    /// At most every [`GAUGE_REFRESH`] unless `always`.
    async fn refresh(&self, always: bool) {
        {
            let Ok(mut last) = self.last.lock() else {
                return;
            };
            if !always && last.is_some_and(|at| at.elapsed() < GAUGE_REFRESH) {
                return;
            }
            *last = Some(Instant::now());
        }
        crate::telemetry::metrics::refresh_outbox(&self.metrics, &self.db).await;
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
            // A standing-by instance's commits are published by the leader,
            // which hears of them by their change note; trying the lock at
            // every local commit would open a connection each time (at a few
            // hundred commits a second, a new Postgres backend per commit).
            // Its ticks keep trying it.
            OutboxMsg::Wake if !state.publisher.stats.leader.load(Ordering::Relaxed) => {}
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
    let rows = store::next_rows(db, limit).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64, event: Uuid, sent_secs_ago: Option<f64>) -> OutboxRow {
        OutboxRow {
            id: Uuid::new_v4(),
            seq,
            tenant_id: Uuid::nil(),
            event_id: event,
            event_type: "event.updated".into(),
            subject: "events.out.t.event.updated".into(),
            payload: json!({}),
            traceparent: None,
            tracestate: None,
            occurred_at: Utc::now(),
            attempts: 1,
            published_seq: Some(seq),
            published_at: None,
            first_sent_at: sent_secs_ago.map(|_| Utc::now()),
            sent_secs_ago,
        }
    }

    fn beyond(r: &OutboxRow) -> bool {
        r.sent_secs_ago.is_some_and(|ago| ago >= 900.0)
    }

    #[test]
    fn rows_the_stream_holds_are_published_as_they_stand_and_the_rest_go_out_in_order() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let rows = vec![
            row(1, a, Some(3600.0)),
            row(2, b, Some(3600.0)),
            row(3, a, Some(60.0)),
            row(4, b, None),
        ];
        let held = HashSet::from([rows[0].id]);
        let (first, second) = (rows[0].id, rows[1].id);
        let plan = Plan::sort(rows, beyond, &Ok(held));
        assert_eq!(plan.in_stream, vec![(first, 1)]);
        assert!(plan.unsent.is_empty());
        let sent: Vec<i64> = plan.send.iter().map(|r| r.seq).collect();
        assert_eq!(sent, [2, 3, 4]);
        // Not in the stream: sent as if for the first time, stamped again.
        assert_eq!(plan.send[0].id, second);
        assert_eq!(plan.send[0].first_sent_at, None);
        // Within the window: JetStream drops a copy, the stamp stays.
        assert!(plan.send[1].first_sent_at.is_some());
    }

    #[test]
    fn a_row_that_cannot_be_looked_up_holds_back_its_event_only() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let rows = vec![
            row(1, a, None),
            row(2, a, Some(3600.0)),
            row(3, b, None),
            row(4, a, None),
            row(5, b, Some(10.0)),
        ];
        let waiting = rows[1].id;
        let plan = Plan::sort(rows, beyond, &Err("stream unavailable".into()));
        let sent: Vec<i64> = plan.send.iter().map(|r| r.seq).collect();
        assert_eq!(sent, [1, 3, 5], "row 4 waits behind row 2 of its event");
        assert!(plan.in_stream.is_empty());
        assert_eq!(
            plan.unsent,
            vec![Unsent {
                id: waiting,
                attempts: 1,
                error: "stream unavailable".into(),
                outage: true,
            }]
        );
    }

    #[test]
    fn the_margin_is_a_quarter_of_the_window_and_at_most_five_minutes() {
        assert_eq!(
            safety_margin(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
        assert_eq!(
            safety_margin(Duration::from_secs(600)),
            Duration::from_secs(150)
        );
        assert_eq!(
            safety_margin(Duration::from_secs(7200)),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn subject_filters_match_as_nats_matches_them() {
        assert!(subject_matches(
            "events.out.>",
            "events.out.t1.event.created"
        ));
        assert!(subject_matches("events.out.>", "events.out.t1"));
        assert!(!subject_matches("events.out.>", "events.out"));
        assert!(!subject_matches("events.out.>", "nowhere.poison"));
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(!subject_matches("a.*.c", "a.b.d"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
    }
}
