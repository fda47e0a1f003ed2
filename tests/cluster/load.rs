//! Steady writes from several callers that retry as real callers do, a
//! ledger of what the service acknowledged, and the checks that the stream
//! and the database hold exactly that.
//!
//! Each writer creates an event, then renames it a few times, one call at a
//! time, and starts over with a new event. A call is retried until it is
//! acknowledged: a create with the same `X-Request-Id` (the service answers
//! a retry with the first result), an update with the same title (applying
//! it twice changes nothing the second time). Every retry is signed again
//! with a fresh timestamp, since the service refuses a replayed signature.
//! So each acknowledged change must appear exactly once in the outbox and in
//! the stream, in the order it was acknowledged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;
use updspace_events::client::{EventsClient, Identity};
use uuid::Uuid;

use crate::helpers::TEST_SECRET;

/// How long one call may keep failing before the writer reports it lost.
const CALL_DEADLINE: Duration = Duration::from_secs(90);
/// A caller's wait for one reply: longer than the service's own deadline
/// (`EVENTS_REQUEST_TIMEOUT`, 5 s), as the BFF's (10 s) is, so the caller
/// gets the service's answer rather than giving up first.
const REPLY_TIMEOUT: Duration = Duration::from_secs(6);
/// Renames per event before a writer moves on to a new event.
const UPDATES_PER_EVENT: usize = 4;

/// One way of reaching the service.
#[derive(Clone)]
pub enum Transport {
    Nats(EventsClient),
    /// HTTP gateways; a failed attempt moves on to the next, as behind a
    /// load balancer.
    Http(Vec<String>),
}

impl Transport {
    pub fn nats(client: async_nats::Client, prefix: &str) -> Self {
        let mut events = EventsClient::new(client, prefix, TEST_SECRET);
        events.timeout = REPLY_TIMEOUT;
        Transport::Nats(events)
    }

    fn name(&self) -> &'static str {
        match self {
            Transport::Nats(_) => "nats",
            Transport::Http(_) => "http",
        }
    }
}

/// What one attempt came back with.
#[derive(Debug)]
enum Attempt {
    Done(Value),
    /// A status other than success, with its error code.
    Status(u16, String),
    /// No reply at all: timeout, no responders, connection refused.
    NoReply(String),
}

/// What the service acknowledged, and every answer it gave.
#[derive(Default)]
pub struct Ledger {
    inner: Mutex<LedgerInner>,
}

#[derive(Default)]
struct LedgerInner {
    /// Event id → acknowledged titles, in acknowledgement order (the create first).
    titles: HashMap<String, Vec<String>>,
    /// "transport status code" → how many answers.
    answers: BTreeMap<String, u64>,
    /// Calls that were never acknowledged within [`CALL_DEADLINE`].
    lost_calls: Vec<String>,
    /// Longest time one call needed from its first attempt to its acknowledgement.
    slowest_call: Duration,
}

impl Ledger {
    fn answer(&self, transport: &str, attempt: &Attempt) {
        let key = match attempt {
            Attempt::Done(_) => format!("{transport} 200"),
            Attempt::Status(status, code) => format!("{transport} {status} {code}"),
            Attempt::NoReply(_) => format!("{transport} no reply"),
        };
        let mut inner = self.inner.lock().expect("ledger");
        *inner.answers.entry(key).or_default() += 1;
    }

    fn acknowledged(&self, event: &str, title: &str, took: Duration) {
        let mut inner = self.inner.lock().expect("ledger");
        inner
            .titles
            .entry(event.to_string())
            .or_default()
            .push(title.to_string());
        inner.slowest_call = inner.slowest_call.max(took);
    }

    fn lost(&self, what: String) {
        self.inner.lock().expect("ledger").lost_calls.push(what);
    }

    pub fn titles(&self) -> HashMap<String, Vec<String>> {
        self.inner.lock().expect("ledger").titles.clone()
    }

    pub fn answers(&self) -> BTreeMap<String, u64> {
        self.inner.lock().expect("ledger").answers.clone()
    }

    pub fn changes(&self) -> usize {
        let inner = self.inner.lock().expect("ledger");
        inner.titles.values().map(Vec::len).sum()
    }

    /// Answers with this status (over any transport).
    pub fn answered(&self, status: u16) -> u64 {
        let inner = self.inner.lock().expect("ledger");
        let needle = format!(" {status}");
        inner
            .answers
            .iter()
            .filter(|(k, _)| k.contains(&needle))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn slowest_call(&self) -> Duration {
        self.inner.lock().expect("ledger").slowest_call
    }

    /// Every answer was a success, a documented 503, or (over NATS, while
    /// nodes come and go) no reply; every call was acknowledged in the end.
    pub fn assert_only_retryable_failures(&self) {
        let inner = self.inner.lock().expect("ledger");
        assert!(
            inner.lost_calls.is_empty(),
            "calls never acknowledged: {:?}",
            inner.lost_calls
        );
        for key in inner.answers.keys() {
            let allowed = key.ends_with(" 200")
                || key.ends_with(" 503 SERVICE_UNAVAILABLE")
                || key.ends_with(" no reply");
            assert!(allowed, "unexpected answers: {:?}", inner.answers);
        }
    }
}

/// The writers of one test: one tenant, as a system admin (no grants needed).
pub struct Load {
    pub tenant: Uuid,
    pub ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn admin_of(tenant: Uuid) -> Identity {
    Identity {
        tenant_id: tenant.to_string(),
        tenant_slug: "acme".into(),
        user_id: Uuid::new_v4().to_string(),
        master_flags: Some(r#"{"system_admin":true}"#.into()),
    }
}

impl Load {
    /// Starts one writer per transport.
    pub fn start(transports: Vec<Transport>) -> Self {
        let tenant = Uuid::new_v4();
        let ledger = Arc::new(Ledger::default());
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = transports
            .into_iter()
            .enumerate()
            .map(|(k, transport)| {
                let writer = Writer {
                    k,
                    transport,
                    who: admin_of(tenant),
                    tenant,
                    ledger: ledger.clone(),
                    http: reqwest::Client::builder()
                        .timeout(REPLY_TIMEOUT)
                        .build()
                        .expect("http client"),
                    next_gateway: k,
                };
                tokio::spawn(writer.run(stop.clone()))
            })
            .collect();
        Self {
            tenant,
            ledger,
            stop,
            tasks,
        }
    }

    /// Waits until `n` more changes have been acknowledged (bounded).
    pub async fn wait_for_changes(&self, n: usize, within: Duration) {
        let target = self.ledger.changes() + n;
        let deadline = Instant::now() + within;
        while self.ledger.changes() < target {
            assert!(
                Instant::now() < deadline,
                "writers made {} of {n} changes within {within:?}; answers {:?}",
                n + self.ledger.changes() - target,
                self.ledger.answers()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Lets every writer finish its current call (so nothing is in doubt),
    /// then stops them.
    pub async fn stop(self) -> Arc<Ledger> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("writer task");
        }
        self.ledger
    }
}

struct Writer {
    k: usize,
    transport: Transport,
    who: Identity,
    tenant: Uuid,
    ledger: Arc<Ledger>,
    http: reqwest::Client,
    next_gateway: usize,
}

impl Writer {
    async fn run(mut self, stop: Arc<AtomicBool>) {
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            let title = format!("w{}-e{n}", self.k);
            let body = json!({"scopeType": "TENANT", "scopeId": self.tenant.to_string(),
                "title": title, "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z"});
            let Some(created) = self.call("event.create", body, &title, None).await else {
                return;
            };
            let Some(id) = created["id"].as_str().map(str::to_string) else {
                self.ledger
                    .lost(format!("create {title}: no id in {created}"));
                return;
            };
            for j in 0..UPDATES_PER_EVENT {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let renamed = format!("{title}-u{j}");
                let body = json!({"id": id, "title": renamed});
                if self
                    .call("event.update", body, &renamed, Some(&id))
                    .await
                    .is_none()
                {
                    return;
                }
            }
            n += 1;
        }
    }

    /// One call, retried until acknowledged; records the acknowledgement.
    async fn call(
        &mut self,
        op: &str,
        body: Value,
        title: &str,
        event: Option<&str>,
    ) -> Option<Value> {
        let request_id = Uuid::new_v4().to_string();
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        // A retry never signs the same second as the attempt before it
        // (the same triple would be refused as a replay).
        let mut ts = 0;
        let mut last;
        loop {
            ts = updspace_events::auth::now_unix().max(ts + 1);
            let attempt = self.attempt(op, &body, &request_id, ts).await;
            self.ledger.answer(self.transport.name(), &attempt);
            match attempt {
                Attempt::Done(value) => {
                    let id = event
                        .map(str::to_string)
                        .or_else(|| value["id"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    self.ledger.acknowledged(&id, title, started.elapsed());
                    return Some(value);
                }
                Attempt::Status(status, code) if status < 500 => {
                    self.ledger
                        .lost(format!("{op} {title}: refused with {status} {code}"));
                    return None;
                }
                Attempt::Status(status, code) => last = format!("{status} {code}"),
                Attempt::NoReply(why) => last = why,
            }
            if started.elapsed() > CALL_DEADLINE {
                self.ledger.lost(format!(
                    "{op} {title}: not acknowledged in {CALL_DEADLINE:?} (last: {last})"
                ));
                return None;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    async fn attempt(&mut self, op: &str, body: &Value, request_id: &str, ts: i64) -> Attempt {
        match &self.transport {
            Transport::Nats(client) => {
                let subject = client.subject(op);
                let payload = client.encoding.encode(body);
                let headers = client.signed_headers(&subject, &self.who, &payload, request_id, ts);
                match client.send(subject, headers, payload).await {
                    Ok(reply) if reply.status == 200 => Attempt::Done(reply.body),
                    Ok(reply) => {
                        let code = reply.code.unwrap_or_default();
                        if reply.status == 503 && reply.headers.get("Retry-After").is_none() {
                            Attempt::Status(503, format!("{code} without Retry-After"))
                        } else {
                            Attempt::Status(reply.status, code)
                        }
                    }
                    Err(e) => Attempt::NoReply(e.to_string()),
                }
            }
            Transport::Http(gateways) => {
                let base = gateways[self.next_gateway % gateways.len()].clone();
                let (method, path) = match op {
                    "event.create" => ("POST", "/api/v1/events/".to_string()),
                    _ => (
                        "PATCH",
                        format!("/api/v1/events/{}", body["id"].as_str().unwrap_or_default()),
                    ),
                };
                let attempt = http_call(
                    &self.http, &base, method, &path, &self.who, body, request_id, ts,
                )
                .await;
                if !matches!(attempt, Attempt::Done(_)) {
                    self.next_gateway += 1;
                }
                attempt
            }
        }
    }
}

/// A request signed as the BFF signs it (v1), with a chosen request id and
/// timestamp.
#[allow(clippy::too_many_arguments)]
async fn http_call(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    who: &Identity,
    body: &Value,
    request_id: &str,
    ts: i64,
) -> Attempt {
    let bytes = body.to_string().into_bytes();
    let identity = updspace_events::auth::ContextHeaders {
        request_id,
        tenant_id: &who.tenant_id,
        tenant_slug: &who.tenant_slug,
        user_id: Some(&who.user_id),
        master_flags: who.master_flags.as_deref(),
    };
    let parts = updspace_events::auth::RequestParts::http(method, path, "", &bytes);
    let headers = updspace_events::auth::sign_headers_v1(TEST_SECRET, &parts, &identity, ts);
    let mut request = http
        .request(method.parse().expect("method"), format!("{base}{path}"))
        .header("Content-Type", "application/json");
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let response = match request.body(bytes).send().await {
        Ok(r) => r,
        Err(e) => return Attempt::NoReply(e.to_string()),
    };
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key("retry-after");
    let value: Value = match response.json().await {
        Ok(v) => v,
        Err(e) => return Attempt::NoReply(format!("{status}: unreadable body: {e}")),
    };
    if status == 200 {
        return Attempt::Done(value);
    }
    let code = value["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if status == 503 && !retry_after {
        return Attempt::Status(status, format!("{code} without Retry-After"));
    }
    Attempt::Status(status, code)
}

/// One message of the stream.
#[derive(Debug, Clone)]
pub struct StreamMsg {
    pub msg_id: String,
    pub envelope: Value,
    /// When the stream stored it, Unix nanoseconds.
    pub stored_ns: i128,
    /// Its place in the stream.
    pub stream_seq: u64,
}

/// Every message in the stream, in stream order, read with an ordered
/// consumer (one request per batch rather than per message). Right after a
/// fault the cluster may still be placing consumers: the read starts over
/// until it succeeds (bounded).
pub async fn read_stream(client: &async_nats::Client, stream: &str) -> Vec<StreamMsg> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match try_read_stream(client, stream).await {
            Ok(messages) => return messages,
            Err(e) => assert!(
                Instant::now() < deadline,
                "cannot read stream {stream}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn try_read_stream(
    client: &async_nats::Client,
    stream: &str,
) -> Result<Vec<StreamMsg>, String> {
    let js = jetstream::new(client.clone());
    let mut s = js.get_stream(stream).await.map_err(|e| e.to_string())?;
    let total = s.info().await.map_err(|e| e.to_string())?.state.messages;
    let mut out = Vec::with_capacity(total as usize);
    if total == 0 {
        return Ok(out);
    }
    let consumer = s
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .map_err(|e| format!("ordered consumer: {e}"))?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while (out.len() as u64) < total {
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .map_err(|_| format!("no message after {} of {total}", out.len()))?
            .ok_or("the consumer ended")?
            .map_err(|e| e.to_string())?;
        let header = |n: &str| {
            next.headers
                .as_ref()
                .and_then(|h| h.get(n))
                .map(|v| v.as_str().to_string())
                .unwrap_or_default()
        };
        let envelope: Value = if header("Content-Type").ends_with("+json") {
            serde_json::from_slice(&next.payload).expect("json envelope")
        } else {
            rmp_serde::from_slice(&next.payload).expect("msgpack envelope")
        };
        let (stored_ns, stream_seq) = next
            .info()
            .map(|i| (i.published.unix_timestamp_nanos(), i.stream_sequence))
            .unwrap_or_default();
        out.push(StreamMsg {
            msg_id: header("Nats-Msg-Id"),
            envelope,
            stored_ns,
            stream_seq,
        });
    }
    Ok(out)
}

/// An outbox row as the checks need it.
#[derive(Debug, sqlx::FromRow)]
pub struct Row {
    pub id: Uuid,
    pub event_id: Uuid,
    pub title: Option<String>,
    pub occurred_ns: i64,
}

pub async fn outbox_rows(db: &sqlx::PgPool) -> Vec<Row> {
    sqlx::query_as(
        "SELECT id, event_id, payload->>'title' AS title,
                (EXTRACT(EPOCH FROM occurred_at) * 1e9)::bigint AS occurred_ns
         FROM outbox ORDER BY seq",
    )
    .fetch_all(db)
    .await
    .expect("outbox rows")
}

/// Waits (bounded) until no outbox row is pending.
pub async fn wait_outbox_drained(db: &sqlx::PgPool, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox_view WHERE status <> 'published'")
                .fetch_one(db)
                .await
                .expect("count");
        if pending == 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{pending} outbox rows still not published after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the checks counted, for the test's report.
#[derive(Debug, Default)]
pub struct Verdict {
    pub acknowledged: usize,
    pub messages: usize,
    /// Longest time from a change's commit to its storage in the stream.
    pub slowest_publish: Duration,
}

/// Checks the stream and the outbox against the ledger:
/// - every acknowledged change is one outbox row, and the rows of each
///   event are its acknowledged titles in order (nothing lost, nothing
///   written twice);
/// - every outbox row is in the stream exactly once (by `Nats-Msg-Id`,
///   which is the CloudEvent id), and nothing else is;
/// - a failure prints the history of the events concerned: their messages
///   in the stream and their outbox rows as the publisher left them;
/// - per event, the CloudEvent `sequence` grows in stream order, and the
///   titles arrive in acknowledgement order (rows inserted as a backlog:
///   their `n` grows);
/// - each event's stored title is the last one acknowledged.
pub async fn verify(
    client: &async_nats::Client,
    stream: &str,
    db: &sqlx::PgPool,
    ledger: &Ledger,
) -> Verdict {
    wait_outbox_drained(db, Duration::from_secs(90)).await;
    let rows = outbox_rows(db).await;
    let messages = wait_stream_settled(client, stream, rows.len()).await;
    let acknowledged = ledger.titles();

    let mut by_event: HashMap<String, Vec<&Row>> = HashMap::new();
    for row in &rows {
        by_event
            .entry(row.event_id.to_string())
            .or_default()
            .push(row);
    }
    for (event, titles) in &acknowledged {
        let stored: Vec<&str> = by_event
            .get(event)
            .map(|rows| rows.iter().filter_map(|r| r.title.as_deref()).collect())
            .unwrap_or_default();
        assert_eq!(
            stored, *titles,
            "event {event}: outbox rows differ from the acknowledged changes"
        );
        let current: Option<String> =
            sqlx::query_scalar("SELECT title FROM events WHERE id = $1::uuid")
                .bind(event)
                .fetch_optional(db)
                .await
                .expect("event title");
        assert_eq!(current.as_deref(), titles.last().map(String::as_str));
    }

    let row_ids: HashMap<String, &Row> = rows.iter().map(|r| (r.id.to_string(), r)).collect();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut twice: Vec<&str> = Vec::new();
    let mut duplicated = 0;
    for m in &messages {
        assert!(
            row_ids.contains_key(&m.msg_id),
            "stream message {} is no outbox row",
            m.msg_id
        );
        assert_eq!(
            m.envelope["id"],
            json!(m.msg_id),
            "CloudEvent id is the msg id"
        );
        if !seen.insert(m.msg_id.as_str()) {
            duplicated += 1;
            twice.push(m.msg_id.as_str());
        }
    }
    let missing: Vec<&Row> = rows
        .iter()
        .filter(|r| !seen.contains(r.id.to_string().as_str()))
        .collect();
    let lost = missing.len();
    if lost > 0 || duplicated > 0 {
        let mut events: Vec<String> = missing.iter().map(|r| r.event_id.to_string()).collect();
        events.extend(
            twice
                .iter()
                .filter_map(|id| row_ids.get(*id))
                .map(|r| r.event_id.to_string()),
        );
        let mut listed = HashSet::new();
        events.retain(|e| listed.insert(e.clone()));
        let mut report = format!(
            "{lost} outbox rows are not in the stream and {duplicated} messages are there twice ({} messages for {} rows)\n",
            messages.len(),
            rows.len()
        );
        for event in events.iter().take(3) {
            report.push_str(&format!(
                "event {event}:\n{}",
                history(db, event, &messages).await
            ));
        }
        panic!("{report}");
    }

    let mut last: HashMap<String, (i64, Option<i64>, usize)> = HashMap::new();
    let mut slowest_publish = Duration::ZERO;
    for m in &messages {
        let event = m.envelope["subject"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let sequence = m.envelope["sequence"].as_i64().expect("sequence");
        let n = m.envelope["data"]["n"].as_i64();
        let entry = last.entry(event.clone()).or_insert((0, None, 0));
        let mut disorder = None;
        if sequence <= entry.0 {
            disorder = Some(format!("sequence {sequence} after {}", entry.0));
        }
        if let (Some(n), Some(prev)) = (n, entry.1)
            && n <= prev
        {
            disorder = Some(format!("backlog row {n} after {prev}"));
        }
        if let Some(titles) = acknowledged.get(&event) {
            let title = m.envelope["data"]["title"].as_str().unwrap_or_default();
            if titles.get(entry.2).map(String::as_str) != Some(title) {
                disorder = Some(format!(
                    "change {} in the stream is {title:?}, acknowledged as {:?}",
                    entry.2,
                    titles.get(entry.2)
                ));
            }
        }
        if let Some(disorder) = disorder {
            panic!(
                "event {event}: {disorder}\n{}",
                history(db, &event, &messages).await
            );
        }
        *entry = (sequence, n.or(entry.1), entry.2 + 1);
        if let Some(row) = row_ids.get(&m.msg_id) {
            let took = (m.stored_ns - i128::from(row.occurred_ns)).max(0);
            slowest_publish = slowest_publish.max(Duration::from_nanos(took as u64));
        }
    }
    Verdict {
        acknowledged: acknowledged.values().map(Vec::len).sum(),
        messages: messages.len(),
        slowest_publish,
    }
}

/// An event's messages in the stream and its outbox rows as the publisher
/// left them, to tell a message the stream lost from one sent out of order.
async fn history(db: &sqlx::PgPool, event: &str, messages: &[StreamMsg]) -> String {
    let mut out = String::from("its messages:\n");
    for m in messages
        .iter()
        .filter(|m| m.envelope["subject"].as_str() == Some(event))
    {
        out.push_str(&format!(
            "  stream #{} at {} ns: {} sequence {} {:?}\n",
            m.stream_seq,
            m.stored_ns,
            m.msg_id,
            m.envelope["sequence"],
            m.envelope["data"]["title"]
        ));
    }
    out.push_str("its outbox rows:\n");
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT format('  seq %s %s %L: %s, %s attempts, first sent %L, last error %L',
                       seq, id, payload->>'title', status, attempts, first_sent_at, last_error)
         FROM outbox_view WHERE event_id = $1::uuid ORDER BY seq",
    )
    .bind(event)
    .fetch_all(db)
    .await
    .unwrap_or_default();
    for row in rows {
        out.push_str(&row);
        out.push('\n');
    }
    out
}

/// Reads the stream once it holds at least `expected` messages.
async fn wait_stream_settled(
    client: &async_nats::Client,
    stream: &str,
    expected: usize,
) -> Vec<StreamMsg> {
    let js = jetstream::new(client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let count = async {
            let mut s = js.get_stream(stream).await.ok()?;
            Some(s.info().await.ok()?.state.messages as usize)
        }
        .await
        .unwrap_or(0);
        // Short at the deadline: the caller reports what is missing.
        if count >= expected || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    read_stream(client, stream).await
}

/// Commit-to-stream times of the rows committed in `[from, to]`
/// (Unix nanoseconds), the slowest first.
pub fn publish_times(
    messages: &[StreamMsg],
    rows: &[Row],
    from_ns: i128,
    to_ns: i128,
) -> Vec<Duration> {
    let committed: HashMap<String, i64> = rows
        .iter()
        .map(|r| (r.id.to_string(), r.occurred_ns))
        .collect();
    let mut times: Vec<Duration> = messages
        .iter()
        .filter_map(|m| {
            let at = i128::from(*committed.get(&m.msg_id)?);
            (at >= from_ns && at <= to_ns)
                .then(|| Duration::from_nanos((m.stored_ns - at).max(0) as u64))
        })
        .collect();
    times.sort_unstable_by(|a, b| b.cmp(a));
    times
}

/// Unix nanoseconds now (the clock outbox rows and the stream stamp with).
pub fn now_ns() -> i128 {
    chrono::Utc::now()
        .timestamp_nanos_opt()
        .map_or(0, i128::from)
}

/// When a probe was sent, and when it was answered (if it was).
type ProbeResult = (Instant, Option<Instant>);

/// Small reads over NATS, one every 100 ms, each on its own: when the
/// service answers again after a fault, whatever the writers' retry pauses.
pub struct Probe {
    results: Arc<Mutex<Vec<ProbeResult>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Probe {
    pub fn start(client: async_nats::Client, prefix: &str, tenant: Uuid) -> Self {
        let mut events = EventsClient::new(client, prefix, TEST_SECRET);
        events.timeout = Duration::from_secs(1);
        let who = admin_of(tenant);
        let results: Arc<Mutex<Vec<ProbeResult>>> = Arc::default();
        let recorded = results.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let (events, who, recorded) = (events.clone(), who.clone(), recorded.clone());
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let ok = matches!(
                        events.call("event.list", &who, &json!({"limit": 1})).await,
                        Ok(reply) if reply.status == 200
                    );
                    let answered = ok.then(Instant::now);
                    recorded.lock().expect("probe").push((sent, answered));
                });
            }
        });
        Self { results, task }
    }

    /// Waits until the service answers steadily again after `fault`, and
    /// returns how long after `fault` that was: the answer to the first
    /// probe sent after `fault` that is followed by a second of answered
    /// probes. Zero when no probe sent after `fault` went unanswered.
    pub async fn recovery_after(&self, fault: Instant, within: Duration) -> Duration {
        let deadline = fault + within;
        loop {
            let now = Instant::now();
            let settled: Vec<ProbeResult> = {
                let results = self.results.lock().expect("probe");
                let mut r: Vec<_> = results
                    .iter()
                    .copied()
                    // Unanswered probes count once their timeout is over.
                    .filter(|(sent, answered)| {
                        *sent >= fault
                            && (answered.is_some() || now - *sent > Duration::from_millis(1100))
                    })
                    .collect();
                r.sort_by_key(|(sent, _)| *sent);
                r
            };
            for (i, (sent, answered)) in settled.iter().enumerate() {
                let Some(answered) = answered else { continue };
                let window: Vec<_> = settled[i..]
                    .iter()
                    .take_while(|(s, _)| *s < *sent + Duration::from_secs(1))
                    .collect();
                let steady = window.iter().all(|(_, a)| a.is_some())
                    && settled
                        .last()
                        .is_some_and(|(s, _)| *s >= *sent + Duration::from_secs(1));
                if steady {
                    let failed_before = settled[..i].iter().any(|(_, a)| a.is_none());
                    return if failed_before {
                        *answered - fault
                    } else {
                        Duration::ZERO
                    };
                }
            }
            assert!(
                now < deadline,
                "the service did not answer steadily within {within:?} of the fault"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}
