//! The outbox publisher: every committed change reaches the stream exactly
//! once, in per-event order, through restarts and outages.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream;
use serde_json::{Value, json};
use updspace_events::app::{CallMeta, Op};
use updspace_events::auth::{InternalContext, MasterFlags, SignatureVersion};
use uuid::Uuid;

use crate::helpers::{
    AckLosingProxy, NATS_URL, PrivateNats, TempDir, TestApp, admin, free_port, identity,
};

/// One message read back from the stream.
#[derive(Debug)]
pub struct Published {
    pub subject: String,
    pub msg_id: String,
    pub content_type: String,
    pub traceparent: Option<String>,
    pub envelope: Value,
}

/// Every message in a stream, in stream order.
pub async fn read_stream(nats_url: &str, stream: &str) -> Vec<Published> {
    let client = async_nats::connect(nats_url).await.expect("connect");
    let js = jetstream::new(client);
    let mut s = js.get_stream(stream).await.expect("stream");
    let info = s.info().await.expect("info").clone();
    let mut out = Vec::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if info.state.messages == 0 {
            break;
        }
        let Ok(m) = s.get_raw_message(seq).await else {
            continue;
        };
        let header = |n: &str| m.headers.get(n).map(|v| v.as_str().to_string());
        let content_type = header("Content-Type").unwrap_or_default();
        let envelope: Value = if content_type.ends_with("+json") {
            serde_json::from_slice(&m.payload).expect("json envelope")
        } else {
            rmp_serde::from_slice(&m.payload).expect("msgpack envelope")
        };
        out.push(Published {
            subject: m.subject.to_string(),
            msg_id: header("Nats-Msg-Id").unwrap_or_default(),
            content_type,
            traceparent: header("traceparent"),
            envelope,
        });
    }
    out
}

async fn stream_count(nats_url: &str, stream: &str) -> u64 {
    let Ok(client) = async_nats::connect(nats_url).await else {
        return 0;
    };
    let js = jetstream::new(client);
    let Ok(mut s) = js.get_stream(stream).await else {
        return 0;
    };
    s.info().await.map(|i| i.state.messages).unwrap_or(0)
}

/// Waits (bounded) until the stream holds `n` messages.
pub async fn wait_for_stream(nats_url: &str, stream: &str, n: u64, within: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let count = stream_count(nats_url, stream).await;
        if count >= n || tokio::time::Instant::now() >= deadline {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn outbox_ids(db: &sqlx::PgPool) -> Vec<(Uuid, Uuid, String)> {
    sqlx::query_as("SELECT id, event_id, status FROM outbox_view ORDER BY seq")
        .fetch_all(db)
        .await
        .expect("outbox rows")
}

pub fn ctx(tenant: Uuid, user: Uuid, admin: bool) -> InternalContext {
    InternalContext {
        request_id: Uuid::new_v4().to_string(),
        tenant_id: tenant,
        tenant_slug: "acme".into(),
        user_id: user,
        master_flags: if admin {
            MasterFlags::parse(Some(r#"{"system_admin":true}"#))
        } else {
            MasterFlags::default()
        },
        signature_version: SignatureVersion::V2,
        signature: format!("{:064x}", rand_u128()),
        timestamp: chrono::Utc::now().timestamp(),
    }
}

fn rand_u128() -> u128 {
    u128::from_le_bytes(*Uuid::new_v4().as_bytes())
}

/// Calls the application layer directly (no transport), as an admin.
async fn direct(app: &TestApp, tenant: Uuid, op: Op, body: Value) -> Value {
    let reply = app
        .state
        .app
        .execute(
            &ctx(tenant, Uuid::new_v4(), true),
            op,
            &body,
            &CallMeta::default(),
        )
        .await
        .expect("operation succeeds");
    reply.into_value()
}

fn event_body(tenant: Uuid, title: &str) -> Value {
    json!({"scopeType": "TENANT", "scopeId": tenant.to_string(), "title": title,
           "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z", "capacity": 1})
}

#[tokio::test]
async fn every_operation_reaches_the_stream_exactly_once_with_its_envelope() {
    let app = TestApp::spawn().await;
    let client = app.client();
    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    let alice = identity(tenant, Uuid::new_v4());
    let bob = identity(tenant, Uuid::new_v4());

    let mut traced = boss.clone();
    traced.master_flags = Some(r#"{"system_admin":true}"#.into());
    let created = client
        .call("event.create", &traced, &event_body(tenant, "Raid"))
        .await
        .expect("create");
    let id = created.body["id"].as_str().expect("id").to_string();
    client
        .call(
            "event.update",
            &boss,
            &json!({"id": id, "title": "Raid night", "capacity": 2}),
        )
        .await
        .expect("update");
    client
        .call(
            "event.update",
            &boss,
            &json!({"id": id, "title": "Raid night"}),
        )
        .await
        .expect("no-op update");
    client
        .call(
            "rsvp.set",
            &alice,
            &json!({"eventId": id, "status": "going"}),
        )
        .await
        .expect("rsvp");
    client
        .call(
            "rsvp.set",
            &alice,
            &json!({"eventId": id, "status": "going"}),
        )
        .await
        .expect("same rsvp");
    client
        .call(
            "rsvp.set",
            &bob,
            &json!({"eventId": id, "status": "interested"}),
        )
        .await
        .expect("rsvp");
    client
        .call("rsvp.clear", &bob, &json!({"eventId": id}))
        .await
        .expect("clear");
    client
        .call(
            "attendance.mark",
            &boss,
            &json!({"eventId": id, "userId": alice.user_id}),
        )
        .await
        .expect("mark");
    client
        .call(
            "attendance.mark",
            &boss,
            &json!({"eventId": id, "userId": alice.user_id}),
        )
        .await
        .expect("mark again");
    client
        .call("event.cancel", &boss, &json!({"id": id, "reason": "rain"}))
        .await
        .expect("cancel");
    client
        .call("event.cancel", &boss, &json!({"id": id}))
        .await
        .expect("cancel again");

    let expected_types = [
        "event.created",
        "event.updated",
        "event.rsvp.changed",
        "event.rsvp.changed",
        "event.rsvp.changed",
        "event.attendance.marked",
        "event.cancelled",
    ];
    let n = wait_for_stream(
        NATS_URL,
        &app.isolation.stream,
        expected_types.len() as u64,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        n,
        expected_types.len() as u64,
        "no-ops must publish nothing"
    );
    // Give a stray duplicate time to show up before counting for good.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let messages = read_stream(NATS_URL, &app.isolation.stream).await;
    assert_eq!(messages.len(), expected_types.len());

    let rows = outbox_ids(&app.db).await;
    assert!(
        rows.iter().all(|(_, _, state)| state == "published"),
        "{rows:?}"
    );
    let mut last_sequence = 0;
    for ((message, ty), (row_id, _, _)) in messages.iter().zip(expected_types).zip(&rows) {
        let env = &message.envelope;
        assert_eq!(env["type"], ty);
        assert_eq!(
            message.subject,
            format!("{}.out.{tenant}.{ty}", app.isolation.prefix)
        );
        assert_eq!(
            message.msg_id,
            row_id.to_string(),
            "Nats-Msg-Id is the outbox id"
        );
        assert_eq!(env["id"], row_id.to_string());
        assert_eq!(message.content_type, "application/cloudevents+msgpack");
        assert_eq!(env["specversion"], "1.0");
        assert_eq!(env["source"], "updspace/events");
        assert_eq!(env["subject"], id);
        assert_eq!(env["tenantid"], tenant.to_string());
        assert_eq!(env["datacontenttype"], "application/msgpack");
        let sequence = env["sequence"].as_i64().expect("sequence is an integer");
        assert!(sequence > last_sequence, "sequence grows in publish order");
        last_sequence = sequence;
        assert!(env["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(env["data"]["event_id"], id);
    }
    let data: Vec<&Value> = messages.iter().map(|m| &m.envelope["data"]).collect();
    assert_eq!(data[1]["updated_fields"], json!(["title", "capacity"]));
    assert_eq!(data[2]["previous_status"], Value::Null);
    assert_eq!(data[2]["status"], "going");
    assert_eq!(data[4]["status"], Value::Null);
    assert_eq!(data[4]["reason"], "cleared");
    assert_eq!(data[5]["marked_by"], boss.user_id);
    assert_eq!(data[6]["reason"], "rain");
}

#[tokio::test]
async fn json_encoding_and_traceparent_are_carried_to_the_stream() {
    let app = TestApp::spawn_with(|s| s.out_encoding = Some("json".into())).await;
    let tenant = Uuid::new_v4();
    let meta = CallMeta {
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        tracestate: None,
    };
    app.state
        .app
        .execute(
            &ctx(tenant, Uuid::new_v4(), true),
            Op::EventCreate,
            &event_body(tenant, "Traced"),
            &meta,
        )
        .await
        .expect("create");
    wait_for_stream(NATS_URL, &app.isolation.stream, 1, Duration::from_secs(10)).await;
    let messages = read_stream(NATS_URL, &app.isolation.stream).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].content_type, "application/cloudevents+json");
    assert_eq!(messages[0].envelope["datacontenttype"], "application/json");
    assert_eq!(
        messages[0].traceparent.as_deref(),
        meta.traceparent.as_deref()
    );
}

/// Inserts pending rows straight into the outbox (a backlog): `per_event`
/// numbered rows for each of `events` events.
async fn backlog(db: &sqlx::PgPool, prefix: &str, tenant: Uuid, events: usize, per_event: usize) {
    let n = events * per_event;
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    let event_ids: Vec<Uuid> = (0..events).map(|_| Uuid::new_v4()).collect();
    let owners: Vec<Uuid> = (0..n).map(|i| event_ids[i % events]).collect();
    let subject = format!("{prefix}.out.{tenant}.event.updated");
    sqlx::query(
        "INSERT INTO outbox (id, tenant_id, event_id, event_type, subject, payload)
         SELECT id, $2, e, 'event.updated', $3, jsonb_build_object('n', n)
         FROM UNNEST($1::uuid[], $4::uuid[]) WITH ORDINALITY AS x(id, e, n) ORDER BY n",
    )
    .bind(&ids)
    .bind(tenant)
    .bind(&subject)
    .bind(&owners)
    .execute(db)
    .await
    .expect("backlog");
}

/// A stopped instance (its database, prefix and stream stay for siblings)
/// whose outbox holds `events × per_event` pending rows, and a pool on
/// that database.
async fn stopped_with_backlog(events: usize, per_event: usize) -> (TestApp, sqlx::PgPool) {
    let mut first = TestApp::spawn().await;
    let db = sqlx::PgPool::connect(&first.isolation.database_url())
        .await
        .expect("pool");
    first.stop().await;
    backlog(
        &db,
        &first.isolation.prefix,
        Uuid::new_v4(),
        events,
        per_event,
    )
    .await;
    (first, db)
}

fn assert_per_event_order(messages: &[Published]) {
    let mut last: HashMap<String, i64> = HashMap::new();
    for m in messages {
        let event = m.envelope["subject"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let n = m.envelope["data"]["n"].as_i64().unwrap_or_default();
        if let Some(prev) = last.insert(event.clone(), n) {
            assert!(n > prev, "event {event}: message {n} after {prev}");
        }
    }
}

async fn assert_exactly_once(app: &TestApp, expected: u64) {
    let total = wait_for_stream(
        NATS_URL,
        &app.isolation.stream,
        expected,
        Duration::from_secs(90),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(total, expected);
    let messages = read_stream(NATS_URL, &app.isolation.stream).await;
    assert_eq!(messages.len() as u64, expected, "exactly once");
    let ids: HashSet<&str> = messages.iter().map(|m| m.msg_id.as_str()).collect();
    assert_eq!(ids.len() as u64, expected, "no duplicate ids");
    let rows = outbox_ids(&app.db).await;
    let row_ids: HashSet<String> = rows.iter().map(|r| r.0.to_string()).collect();
    assert!(
        ids.iter().all(|id| row_ids.contains(*id)),
        "every message is an outbox row"
    );
    assert_per_event_order(&messages);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox_view WHERE status <> 'published'")
                .fetch_one(&app.db)
                .await
                .expect("count");
        if pending == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pending} rows never marked published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_publisher_restarted_mid_backlog_loses_and_duplicates_nothing() {
    let (first, _) = stopped_with_backlog(50, 400).await;
    let mut second = first.spawn_sibling(|_| {}).await;
    // Stop it while it drains (somewhere in the 20,000 rows), then restart.
    wait_for_stream(
        NATS_URL,
        &first.isolation.stream,
        2000,
        Duration::from_secs(30),
    )
    .await;
    second.stop().await;
    let third = first.spawn_sibling(|_| {}).await;
    assert_exactly_once(&third, 20_000).await;
}

#[tokio::test]
async fn rows_published_but_not_marked_before_a_crash_are_not_duplicated() {
    let (first, isolation_db) = stopped_with_backlog(10, 30).await;
    // What a publisher that crashed between publishing and moving its
    // cursor leaves behind: the first 120 rows are in the stream, the
    // cursor still stands before them.
    let rows = about_to_send(&isolation_db, 120).await;
    assert_eq!(rows.len(), 120);
    assert!(
        rows.windows(2).all(|w| w[0].seq < w[1].seq),
        "the cursor walks in insertion order"
    );
    let js = jetstream::new(async_nats::connect(NATS_URL).await.expect("connect"));
    for row in &rows {
        let (payload, content_type) = updspace_events::actors::outbox::envelope(
            row,
            updspace_events::encoding::Encoding::Msgpack,
        );
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", row.id.to_string().as_str());
        headers.insert("Content-Type", content_type);
        js.publish_with_headers(row.subject.clone(), headers, payload.into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    let second = first.spawn_sibling(|_| {}).await;
    assert_exactly_once(&second, 300).await;
}

#[tokio::test]
async fn a_replay_after_a_stream_loss_sends_every_published_row_again_in_publish_order() {
    // More rows than one publisher cycle takes: several publish times.
    let (first, _) = stopped_with_backlog(10, 500).await;
    let app = first.spawn_sibling(|_| {}).await;
    assert_exactly_once(&app, 5000).await;
    let original: Vec<(String, Value)> = read_stream(NATS_URL, &app.isolation.stream)
        .await
        .into_iter()
        .map(|m| (m.msg_id, m.envelope["sequence"].clone()))
        .collect();

    // The stream is lost and created again, empty.
    let js = jetstream::new(app.nats.clone());
    js.delete_stream(&app.isolation.stream)
        .await
        .expect("delete stream");
    updspace_events::subjects::ensure_stream(
        &app.nats,
        &app.state.config.stream,
        &app.isolation.prefix,
    )
    .await
    .expect("stream again");

    // Pages smaller than a cycle, so page boundaries fall inside cycles.
    let connect = updspace_events::store::connect_options(&app.state.config.database)
        .expect("connect options");
    let replayer = updspace_events::actors::outbox::Publisher::new(
        connect,
        app.nats.clone(),
        updspace_events::actors::outbox::OutboxConfig {
            batch: 333,
            ..Default::default()
        },
    );
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let (sent, failed) = replayer.replay(since, |_, _| {}).await.expect("replay");
    assert_eq!((sent, failed), (5000, 0));
    let replayed: Vec<(String, Value)> = read_stream(NATS_URL, &app.isolation.stream)
        .await
        .into_iter()
        .map(|m| (m.msg_id, m.envelope["sequence"].clone()))
        .collect();
    assert_eq!(replayed.len(), 5000);
    // The same messages, with the same numbers, in the order they first
    // reached the stream.
    assert!(
        replayed == original,
        "the replay differs from what was first published"
    );
    let numbers: Vec<i64> = replayed.iter().filter_map(|(_, n)| n.as_i64()).collect();
    assert_eq!(numbers.len(), 5000);
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "sequence increases"
    );

    // Only rows published since the time given are sent.
    let (sent, _) = replayer
        .replay(chrono::Utc::now(), |_, _| {})
        .await
        .expect("replay");
    assert_eq!(sent, 0);
}

#[tokio::test]
async fn writes_continue_while_nats_is_down_and_arrive_once_after_it_returns() {
    let port = free_port();
    let store = TempDir::new();
    let start_nats = |store: &TempDir| {
        std::process::Command::new(crate::helpers::nats_server_bin())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server")
    };
    let mut nats = start_nats(&store);
    let url = format!("nats://127.0.0.1:{port}");
    let probe = PrivateNats::start_on(free_port());
    drop(probe);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Two attempts would be used up within a second of the outage if it
    // counted against the rows: it must not.
    let app = TestApp::spawn_with(|s| {
        s.nats_url = Some(url.clone());
        s.outbox_backoff_max = Some("300ms".into());
        s.outbox_poll_interval = Some("100ms".into());
        s.outbox_max_attempts = Some("2".into());
    })
    .await;
    let tenant = Uuid::new_v4();
    let mut ids = Vec::new();
    for i in 0..5 {
        let created = direct(
            &app,
            tenant,
            Op::EventCreate,
            event_body(tenant, &format!("E{i}")),
        )
        .await;
        ids.push(created["id"].as_str().expect("id").to_string());
    }
    assert_eq!(
        wait_for_stream(&url, &app.isolation.stream, 5, Duration::from_secs(10)).await,
        5
    );
    // Stored is not yet settled: the publisher moves its cursor past a row
    // only once the ack is back, and a kill in between leaves that row
    // pending too.
    eventually(
        Duration::from_secs(10),
        "the five creates are settled",
        || async {
            let status = updspace_events::store::outbox::status(&app.db)
                .await
                .expect("status");
            (status.pending == 0).then_some(())
        },
    )
    .await;

    // NATS goes away; writes go on (they only need Postgres).
    let _ = nats.kill();
    let _ = nats.wait();
    for round in 0..4 {
        for id in &ids {
            direct(
                &app,
                tenant,
                Op::EventUpdate,
                json!({"id": id, "title": format!("round {round}")}),
            )
            .await;
        }
    }
    // Until the publisher has tried each waiting event three times.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        let status = updspace_events::store::outbox::status(&app.db)
            .await
            .expect("status");
        let tried = app
            .state
            .publisher
            .stats
            .failed
            .load(std::sync::atomic::Ordering::Relaxed);
        if (status.by_type.iter().any(|t| t.last_error.is_some()) && tried >= 15)
            || tokio::time::Instant::now() >= deadline
        {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.pending, 20, "rows pile up while NATS is down");
    // Sooner than the 5 s timer every instance refreshes its gauges by:
    // the publisher keeps them current while it waits out the outage.
    eventually(
        Duration::from_secs(2),
        "the pending gauge shows the rows waiting out the outage",
        || async { (app.state.metrics.outbox_pending.get() == 20).then_some(()) },
    )
    .await;
    assert!(
        status.by_type.iter().any(|t| t.last_error.is_some()),
        "the failure is recorded: {status:?}"
    );

    let mut nats = start_nats(&store);
    let total = wait_for_stream(&url, &app.isolation.stream, 25, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let messages = read_stream(&url, &app.isolation.stream).await;
    assert_eq!(total, 25);
    assert_eq!(messages.len(), 25, "every change exactly once");
    // Per event: created, then the four updates in order.
    for id in &ids {
        let titles: Vec<&str> = messages
            .iter()
            .filter(|m| m.envelope["subject"] == json!(id))
            .map(|m| m.envelope["data"]["title"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(titles.len(), 5);
        assert_eq!(&titles[1..], ["round 0", "round 1", "round 2", "round 3"]);
    }
    let status = updspace_events::store::outbox::status(&app.db)
        .await
        .expect("status");
    assert_eq!(status.pending, 0);
    assert_eq!(status.dead, 0, "an outage is not the rows' failure");
    drop(app);
    let _ = nats.kill();
    let _ = nats.wait();
}

#[tokio::test]
async fn the_later_rows_of_an_event_wait_for_one_the_stream_refused() {
    let (first, db) = stopped_with_backlog(0, 0).await;
    let tenant = Uuid::new_v4();
    let (refused_event, other_event) = (Uuid::new_v4(), Uuid::new_v4());
    // Five changes of one event, the second too large for the stream for
    // now, and three of another event.
    let subject = format!("{}.out.{tenant}.event.updated", first.isolation.prefix);
    let rows: Vec<(Uuid, i64, Value)> = (1..=5)
        .map(|n| {
            let payload = if n == 2 {
                json!({"n": n, "pad": "x".repeat(4000)})
            } else {
                json!({"n": n})
            };
            (refused_event, n, payload)
        })
        .chain((1..=3).map(|n| (other_event, n, json!({"n": n}))))
        .collect();
    for (event, _, payload) in &rows {
        sqlx::query(
            "INSERT INTO outbox (id, tenant_id, event_id, event_type, subject, payload)
             VALUES ($1, $2, $3, 'event.updated', $4, $5)",
        )
        .bind(Uuid::new_v4())
        .bind(tenant)
        .bind(event)
        .bind(&subject)
        .bind(payload)
        .execute(&db)
        .await
        .expect("row");
    }
    let js = jetstream::new(async_nats::connect(NATS_URL).await.expect("connect"));
    let set_limit = |limit: i32| {
        let js = js.clone();
        let stream = first.isolation.stream.clone();
        async move {
            let mut s = js.get_stream(&stream).await.expect("stream");
            let mut config = s.info().await.expect("info").config.clone();
            config.max_message_size = limit;
            js.update_stream(&config).await.expect("limit");
        }
    };
    set_limit(2000).await;
    let app = first
        .spawn_sibling(|s| {
            s.outbox_backoff_max = Some("200ms".into());
            s.outbox_poll_interval = Some("50ms".into());
        })
        .await;
    let subjects_of = |messages: &[Published], event: Uuid| -> Vec<i64> {
        messages
            .iter()
            .filter(|m| m.envelope["subject"] == json!(event.to_string()))
            .filter_map(|m| m.envelope["data"]["n"].as_i64())
            .collect()
    };
    // The refused row has been tried (and refused) a few times.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM outbox WHERE payload ? 'pad'")
            .fetch_one(&db)
            .await
            .expect("attempts");
        if attempts >= 3 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let messages = read_stream(NATS_URL, &app.isolation.stream).await;
    assert_eq!(subjects_of(&messages, other_event), [1, 2, 3]);
    assert_eq!(
        subjects_of(&messages, refused_event),
        [1],
        "nothing of the event may be stored ahead of its refused change"
    );
    set_limit(-1).await;
    assert_eq!(
        wait_for_stream(NATS_URL, &app.isolation.stream, 8, Duration::from_secs(15)).await,
        8
    );
    let messages = read_stream(NATS_URL, &app.isolation.stream).await;
    assert_eq!(subjects_of(&messages, refused_event), [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn the_pending_gauge_follows_the_publisher_not_a_timer() {
    let (first, _) = stopped_with_backlog(10, 100).await;
    let app = first.spawn_sibling(|_| {}).await;
    assert_eq!(
        wait_for_stream(
            NATS_URL,
            &app.isolation.stream,
            1000,
            Duration::from_secs(30)
        )
        .await,
        1000
    );
    let published = tokio::time::Instant::now();
    // The metrics timer reads the outbox every 5 s; its first reading, at
    // start-up, saw the backlog.
    while app.state.metrics.outbox_pending.get() > 0 {
        assert!(
            published.elapsed() < Duration::from_secs(2),
            "outbox_pending still {} {:?} after the backlog reached the stream",
            app.state.metrics.outbox_pending.get(),
            published.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn one_instance_publishes_and_another_takes_over_when_it_stops() {
    let mut a = TestApp::spawn().await;
    let b = a.spawn_sibling(|_| {}).await;
    let tenant = Uuid::new_v4();
    direct(&a, tenant, Op::EventCreate, event_body(tenant, "one")).await;
    wait_for_stream(NATS_URL, &a.isolation.stream, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let leaders = [&a, &b]
        .iter()
        .filter(|app| {
            app.state
                .publisher
                .stats
                .leader
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .count();
    assert_eq!(leaders, 1, "exactly one publisher");
    let a_led = a
        .state
        .publisher
        .stats
        .leader
        .load(std::sync::atomic::Ordering::Relaxed);
    let (survivor, stopped) = if a_led {
        a.stop().await;
        (&b, &a)
    } else {
        let mut b = b;
        b.stop().await;
        let started = std::time::Instant::now();
        direct(&a, tenant, Op::EventCreate, event_body(tenant, "two")).await;
        let n = wait_for_stream(NATS_URL, &a.isolation.stream, 2, Duration::from_secs(10)).await;
        assert_eq!(n, 2, "the survivor publishes");
        assert!(started.elapsed() < Duration::from_secs(10));
        return;
    };
    let _ = stopped;
    let started = std::time::Instant::now();
    direct(survivor, tenant, Op::EventCreate, event_body(tenant, "two")).await;
    let n = wait_for_stream(
        NATS_URL,
        &survivor.isolation.stream,
        2,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(n, 2, "the survivor takes over and publishes");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        survivor
            .state
            .publisher
            .stats
            .leader
            .load(std::sync::atomic::Ordering::Relaxed)
    );
}

#[tokio::test]
async fn a_poison_row_goes_dead_without_blocking_the_rest() {
    let app = TestApp::spawn_with(|s| {
        s.outbox_max_attempts = Some("3".into());
        s.outbox_backoff_max = Some("50ms".into());
        s.outbox_poll_interval = Some("50ms".into());
    })
    .await;
    let tenant = Uuid::new_v4();
    // No stream captures this subject: every publish of it is rejected.
    let poison = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO outbox (id, tenant_id, event_id, event_type, subject, payload)
         VALUES ($1, $2, $3, 'event.created', 'nowhere.poison', '{}'::jsonb)",
    )
    .bind(poison)
    .bind(tenant)
    .bind(Uuid::new_v4())
    .execute(&app.db)
    .await
    .expect("poison row");
    for i in 0..3 {
        direct(
            &app,
            tenant,
            Op::EventCreate,
            event_body(tenant, &format!("ok {i}")),
        )
        .await;
    }
    assert_eq!(
        wait_for_stream(NATS_URL, &app.isolation.stream, 3, Duration::from_secs(10)).await,
        3
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (state, attempts, error): (String, i32, Option<String>) =
            sqlx::query_as("SELECT state::text, attempts, last_error FROM outbox WHERE id = $1")
                .bind(poison)
                .fetch_one(&app.db)
                .await
                .expect("row");
        if state == "dead" {
            assert_eq!(attempts, 3);
            assert!(error.is_some());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "poison row never went dead ({state}, {attempts})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = updspace_events::store::outbox::status(&app.db)
        .await
        .expect("status");
    assert_eq!(status.dead, 1);
    assert_eq!(status.pending, 0);
    // retry-dead puts it back in the queue.
    let retried = updspace_events::store::outbox::retry_dead(&app.db, Some(&[poison]))
        .await
        .expect("retry");
    assert_eq!(retried, 1);
}

/// Polls `probe` until it returns a value, for at most `within`.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    within: Duration,
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_row_whose_ack_was_lost_is_stored_once_when_retried_after_the_duplicate_window() {
    let nats = PrivateNats::start_on(free_port());
    nats.wait_ready().await;
    let proxy = AckLosingProxy::start(nats.port).await;
    let app = TestApp::spawn_with(|s| {
        s.nats_url = Some(proxy.url());
        s.outbox_backoff_max = Some("50ms".into());
        s.outbox_poll_interval = Some("50ms".into());
    })
    .await;
    // The service sets a window of at least ten minutes; the server accepts
    // one second, which the ack timeout (5 s) outlasts: the retry comes
    // after the window.
    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("connect"));
    let mut stream = js.get_stream(&app.isolation.stream).await.expect("stream");
    let mut config = stream.info().await.expect("info").config.clone();
    config.duplicate_window = Duration::from_secs(1);
    js.update_stream(config)
        .await
        .expect("shorten the duplicate window");

    proxy.lose_acks(true);
    let tenant = Uuid::new_v4();
    direct(
        &app,
        tenant,
        Op::EventCreate,
        event_body(tenant, "lost ack"),
    )
    .await;
    eventually(Duration::from_secs(10), "an ack is lost", || async {
        (proxy.acks_lost() > 0).then_some(())
    })
    .await;
    proxy.lose_acks(false);

    let (id, sequence): (Uuid, i64) =
        eventually(Duration::from_secs(30), "the row is published", || async {
            sqlx::query_as("SELECT id, sequence FROM outbox_view WHERE status = 'published'")
                .fetch_optional(&app.db)
                .await
                .expect("row")
        })
        .await;
    let messages = read_stream(&nats.url(), &app.isolation.stream).await;
    let ids: Vec<&str> = messages.iter().map(|m| m.msg_id.as_str()).collect();
    assert_eq!(
        ids,
        [id.to_string()],
        "the stream holds the row exactly once"
    );
    assert_eq!(messages[0].envelope["sequence"], json!(sequence));
}

/// Waits until the stream has forgotten the ids of the messages stored so
/// far: a marker stored after them is taken again (JetStream forgets in the
/// order it stored), then both copies of the marker are deleted.
async fn forget_ids(js: &jetstream::Context, stream: &str, prefix: &str) {
    let subject = format!("{prefix}.out.marker");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", Uuid::new_v4().to_string().as_str());
    let publish = || async {
        js.publish_with_headers(subject.clone(), headers.clone(), "marker".into())
            .await
            .expect("publish the marker")
            .await
            .expect("ack")
    };
    let first = publish().await;
    let again = eventually(Duration::from_secs(10), "the ids are forgotten", || async {
        let ack = publish().await;
        (!ack.duplicate).then_some(ack)
    })
    .await;
    let stream = js.get_stream(stream).await.expect("stream");
    for seq in [first.sequence, again.sequence] {
        stream.delete_message(seq).await.expect("delete the marker");
    }
}

/// The first `n` rows above the cursor, noted as being sent, as a
/// publisher notes them just before it sends them.
async fn about_to_send(
    db: &sqlx::PgPool,
    n: i64,
) -> Vec<updspace_events::store::outbox::OutboxRow> {
    use updspace_events::store::outbox as store;
    let cursor = store::cursor(db).await.expect("cursor");
    let rows: Vec<store::OutboxRow> = store::ahead(db, cursor.published_through, n)
        .await
        .expect("rows")
        .into_iter()
        .map(|ahead| ahead.row)
        .collect();
    if let Some(last) = rows.last() {
        store::mark_sending(db, last.seq, false)
            .await
            .expect("note the sends");
    }
    rows
}

/// [`about_to_send`], with the sends dated `ago` back.
async fn sent_long_ago(
    db: &sqlx::PgPool,
    n: i64,
    ago: &str,
) -> Vec<updspace_events::store::outbox::OutboxRow> {
    let rows = about_to_send(db, n).await;
    sqlx::query("UPDATE outbox_cursor SET sending_since = now() - $1::interval")
        .bind(ago)
        .execute(db)
        .await
        .expect("date the sends back");
    rows
}

#[tokio::test]
async fn rows_a_crashed_publisher_sent_an_hour_ago_are_not_sent_again() {
    let (first, isolation_db) = stopped_with_backlog(10, 30).await;
    // A publisher sent the first 120 rows and died before marking them.
    // An hour later JetStream no longer knows their ids: the shortest
    // window it allows, while they are stored, makes it forget them soon.
    let js = jetstream::new(async_nats::connect(NATS_URL).await.expect("connect"));
    let mut stream = js
        .get_stream(&first.isolation.stream)
        .await
        .expect("stream");
    let mut config = stream.info().await.expect("info").config.clone();
    config.duplicate_window = Duration::from_millis(100);
    js.update_stream(config)
        .await
        .expect("shorten the duplicate window");
    let rows = sent_long_ago(&isolation_db, 120, "1 hour").await;
    for row in &rows {
        let (payload, content_type) = updspace_events::actors::outbox::envelope(
            row,
            updspace_events::encoding::Encoding::Msgpack,
        );
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", row.id.to_string().as_str());
        headers.insert("Content-Type", content_type);
        js.publish_with_headers(row.subject.clone(), headers, payload.into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    forget_ids(&js, &first.isolation.stream, &first.isolation.prefix).await;
    // The next instance brings the window back to its 20 minutes, and
    // finds the rows in the stream rather than trusting it to drop them.
    let second = first.spawn_sibling(|_| {}).await;
    assert_exactly_once(&second, 300).await;
}

#[tokio::test]
async fn a_row_sent_long_ago_that_never_reached_the_stream_is_sent_once_in_order() {
    let (first, isolation_db) = stopped_with_backlog(1, 3).await;
    let lost = sent_long_ago(&isolation_db, 1, "1 hour").await;
    let second = first.spawn_sibling(|_| {}).await;
    assert_exactly_once(&second, 3).await;
    let messages = read_stream(NATS_URL, &second.isolation.stream).await;
    assert_eq!(messages[0].msg_id, lost[0].id.to_string());
    assert_eq!(
        messages[0].envelope["sequence"],
        json!(lost[0].seq),
        "the row keeps the number it was first sent with"
    );
    let since: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT sending_since FROM outbox_cursor")
            .fetch_one(&second.db)
            .await
            .expect("cursor");
    assert_eq!(since, None, "the cursor has passed every row it sent");
}

/// Inserts one outbox row of its own event (as a write would) and returns
/// its `seq`.
async fn insert_row(conn: &mut sqlx::PgConnection, app: &TestApp, tenant: Uuid, n: i64) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO outbox (id, tenant_id, event_id, event_type, subject, payload)
         VALUES ($1, $2, $3, 'event.updated', $4, jsonb_build_object('n', $5::bigint))
         RETURNING seq",
    )
    .bind(Uuid::new_v4())
    .bind(tenant)
    .bind(Uuid::new_v4())
    .bind(format!(
        "{}.out.{tenant}.event.updated",
        app.isolation.prefix
    ))
    .bind(n)
    .fetch_one(conn)
    .await
    .expect("outbox row")
}

fn gap_waits(app: &TestApp) -> u64 {
    app.state
        .publisher
        .stats
        .gap_waits
        .load(std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test]
async fn a_row_committed_late_is_not_overtaken_by_the_rows_numbered_after_it() {
    let app = TestApp::spawn_with(|s| s.outbox_poll_interval = Some("50ms".into())).await;
    let tenant = Uuid::new_v4();
    // A transaction draws its row's number and stays open; rows numbered
    // after it commit at once.
    let mut late = app.db.begin().await.expect("begin");
    let late_seq = insert_row(&mut late, &app, tenant, 1).await;
    let mut conn = app.db.acquire().await.expect("connection");
    let after = [
        insert_row(&mut conn, &app, tenant, 2).await,
        insert_row(&mut conn, &app, tenant, 3).await,
    ];
    assert!(after.iter().all(|seq| *seq > late_seq));
    eventually(
        Duration::from_secs(10),
        "the publisher waits at the gap",
        || async { (gap_waits(&app) > 0).then_some(()) },
    )
    .await;
    assert_eq!(
        stream_count(NATS_URL, &app.isolation.stream).await,
        0,
        "nothing numbered after an open transaction's row goes out before it"
    );
    late.commit().await.expect("commit");
    assert_eq!(
        wait_for_stream(NATS_URL, &app.isolation.stream, 3, Duration::from_secs(10)).await,
        3
    );
    let messages = read_stream(NATS_URL, &app.isolation.stream).await;
    let numbers: Vec<i64> = messages
        .iter()
        .filter_map(|m| m.envelope["sequence"].as_i64())
        .collect();
    assert_eq!(
        numbers,
        [late_seq, after[0], after[1]],
        "stream order is seq order"
    );
    let order: Vec<i64> = messages
        .iter()
        .filter_map(|m| m.envelope["data"]["n"].as_i64())
        .collect();
    assert_eq!(order, [1, 2, 3]);
    let waits = app.state.metrics.outbox_gap_wait.get_sample_count();
    assert!(waits >= 1, "the wait at the gap is in the metrics: {waits}");
}

#[tokio::test]
async fn a_number_whose_transaction_rolled_back_is_skipped_and_other_transactions_do_not_hold_the_outbox()
 {
    let app = TestApp::spawn_with(|s| s.outbox_poll_interval = Some("50ms".into())).await;
    let tenant = Uuid::new_v4();
    // A long transaction with a transaction id of its own (as any write
    // elsewhere gets), open throughout.
    let mut unrelated = app.db.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *unrelated)
        .await
        .expect("a transaction id");
    let mut aborted = app.db.begin().await.expect("begin");
    let gap = insert_row(&mut aborted, &app, tenant, 1).await;
    let mut conn = app.db.acquire().await.expect("connection");
    let kept = insert_row(&mut conn, &app, tenant, 2).await;
    assert!(kept > gap);
    eventually(
        Duration::from_secs(10),
        "the publisher waits at the gap",
        || async { (gap_waits(&app) > 0).then_some(()) },
    )
    .await;
    assert_eq!(stream_count(NATS_URL, &app.isolation.stream).await, 0);
    aborted.rollback().await.expect("rollback");
    assert_eq!(
        wait_for_stream(NATS_URL, &app.isolation.stream, 1, Duration::from_secs(10)).await,
        1,
        "the row after the gap goes out while the unrelated transaction is still open"
    );
    let messages = read_stream(NATS_URL, &app.isolation.stream).await;
    assert_eq!(messages[0].envelope["sequence"], json!(kept));
    let through: i64 = sqlx::query_scalar("SELECT published_through FROM outbox_cursor")
        .fetch_one(&mut *conn)
        .await
        .expect("cursor");
    assert!(through >= kept);
    unrelated.rollback().await.expect("rollback");
}
