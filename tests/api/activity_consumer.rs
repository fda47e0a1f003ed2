//! `examples/activity_consumer.py` against a real stream: every message
//! becomes one feed item mapped as Activity needs it (only public items stay
//! public; targets for RSVPs and attendance; titles remembered for messages
//! without one), stored once per `source_ref` however often it is read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use updspace_events::client::{EventsClient, Identity};
use uuid::Uuid;

use crate::helpers::{NATS_URL, TempDir, TestApp, admin, free_port, identity, nats_server_bin};
use crate::outbox::{Published, read_stream, wait_for_stream};

const INSTALL: &str = "python3 -m pip install -r examples/requirements.txt";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/activity_consumer.py")
}

/// Fails the test (never skips it) when Python or its packages are missing.
fn require_python() {
    let check = Command::new("python3")
        .args(["-c", "import nats, msgpack"])
        .output();
    match check {
        Err(e) => panic!("python3 cannot run ({e}); install Python 3 and then `{INSTALL}`"),
        Ok(out) => assert!(
            out.status.success(),
            "the consumer's Python packages are missing ({}); install them with `{INSTALL}`",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// What one run of the script printed.
struct Run {
    code: Option<i32>,
    items: Vec<Value>,
    summary: String,
    stderr: String,
}

/// Runs the script with `--once` and the given options.
async fn consume(args: &[&str]) -> Run {
    let mut command = Command::new("python3");
    command
        .arg(script())
        .arg("--once")
        .args(["--nats-url", NATS_URL])
        .args(args)
        .env_remove("NATS_USER")
        .env_remove("NATS_PASSWORD")
        .env_remove("NATS_INBOX_PREFIX")
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the run finishes")
        .unwrap_or_else(|e| panic!("python3 could not run ({e}); `{INSTALL}`"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let items = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let summary = stderr
        .lines()
        .rev()
        .find(|l| l.contains("stored="))
        .unwrap_or_default()
        .to_string();
    Run {
        code: out.status.code(),
        items,
        summary,
        stderr,
    }
}

/// Runs the script on one durable consumer and expects it to succeed.
async fn consume_ok(app: &TestApp, durable: &str, db: &Path) -> Run {
    let filter = format!("{}.out.>", app.isolation.prefix);
    let run = consume(&[
        "--stream",
        &app.isolation.stream,
        "--filter",
        &filter,
        "--durable",
        durable,
        "--db",
        db.to_str().expect("utf-8 path"),
        "--batch",
        "3",
    ])
    .await;
    assert_eq!(run.code, Some(0), "the consumer failed:\n{}", run.stderr);
    run
}

/// Rows of the feed table, counted by SQLite itself.
fn stored_rows(db: &Path) -> u64 {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; \
             print(sqlite3.connect(sys.argv[1]).execute(\
             'SELECT count(*) FROM act_activity_event').fetchone()[0])",
        ])
        .arg(db)
        .output()
        .expect("python3 runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no count: {}", String::from_utf8_lossy(&out.stderr)))
}

async fn ok(client: &EventsClient, op: &str, who: &Identity, body: Value) -> Value {
    let reply = client.call(op, who, &body).await.expect("reply");
    assert_eq!(reply.status, 200, "{op}: {:?}", reply.body);
    reply.body
}

async fn create(
    client: &EventsClient,
    who: &Identity,
    scope: (&str, &str),
    visibility: &str,
    title: &str,
) -> String {
    let body = json!({"scopeType": scope.0, "scopeId": scope.1, "title": title,
                      "visibility": visibility,
                      "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z"});
    ok(client, "event.create", who, body).await["id"]
        .as_str()
        .expect("id")
        .to_string()
}

/// Waits until the outbox has published `n` messages and returns them.
async fn published(app: &TestApp, n: u64) -> Vec<Published> {
    let count = wait_for_stream(NATS_URL, &app.isolation.stream, n, Duration::from_secs(20)).await;
    assert_eq!(count, n, "the outbox published {count} of {n} messages");
    read_stream(NATS_URL, &app.isolation.stream).await
}

/// The items of a run by `source_ref`, one per message of the stream, each
/// mapped from its message as the feed needs it.
fn check_items(run: &Run, messages: &[Published]) -> HashMap<String, Value> {
    assert_eq!(
        run.items.len(),
        messages.len(),
        "one item per message:\n{}",
        run.stderr
    );
    let items: HashMap<String, Value> = run
        .items
        .iter()
        .map(|i| {
            (
                i["source_ref"].as_str().expect("source_ref").to_string(),
                i.clone(),
            )
        })
        .collect();
    assert_eq!(items.len(), messages.len(), "source_refs are unique");
    for m in messages {
        let e = &m.envelope;
        let data = &e["data"];
        let source_ref = format!("events:{}", e["id"].as_str().expect("id"));
        let item = items
            .get(&source_ref)
            .unwrap_or_else(|| panic!("no item for {source_ref}: {:?}", run.items));
        let kind = e["type"].as_str().expect("type");
        assert_eq!(item["tenant_id"], e["tenantid"], "{source_ref}");
        assert_eq!(item["type"], e["type"], "{source_ref}");
        assert_eq!(item["occurred_at"], e["time"], "{source_ref}");
        assert_eq!(item["actor_user_id"], data["actor_user_id"], "{source_ref}");
        assert!(item["actor_user_id"].is_string(), "{source_ref}: {item}");
        assert_eq!(item["scope_type"], data["scope_type"], "{source_ref}");
        assert_eq!(item["scope_id"], data["scope_id"], "{source_ref}");
        assert_eq!(item["payload_json"], *data, "{source_ref}");
        assert_eq!(item["raw_event_id"], Value::Null, "{source_ref}");
        let target = if matches!(kind, "event.rsvp.changed" | "event.attendance.marked") {
            assert!(data["user_id"].is_string(), "{source_ref}: {data}");
            data["user_id"].clone()
        } else {
            Value::Null
        };
        assert_eq!(item["target_user_id"], target, "{kind} {source_ref}");
        let visibility = if data["visibility"] == "public" {
            "public"
        } else {
            "private"
        };
        assert_eq!(item["visibility"], visibility, "{kind} {source_ref}");
        if data["title"].is_string() {
            assert_eq!(item["title"], data["title"], "{source_ref}");
        }
    }
    items
}

/// The one item of a type about an event.
fn item_of<'a>(items: &'a HashMap<String, Value>, kind: &str, event: &str) -> &'a Value {
    let found: Vec<&Value> = items
        .values()
        .filter(|i| i["type"] == kind && i["payload_json"]["event_id"] == event)
        .collect();
    assert_eq!(found.len(), 1, "{kind} of {event}: {found:?}");
    found[0]
}

fn summary_is(run: &Run, stored: usize, duplicates: usize) {
    let acked = stored + duplicates;
    assert!(
        run.summary.contains(&format!(
            "stored={stored} duplicates={duplicates} acked={acked} terminated=0"
        )),
        "summary: {}\n{}",
        run.summary,
        run.stderr
    );
}

#[tokio::test]
async fn activity_consumer_maps_every_type_and_stores_each_message_once() {
    require_python();
    let app = TestApp::spawn().await;
    let client = app.client();
    let tenant = Uuid::new_v4();
    let t = tenant.to_string();
    let boss = admin(tenant);
    let alice = identity(tenant, Uuid::new_v4());

    let public = create(&client, &boss, ("TENANT", &t), "public", "Board games").await;
    let community = create(&client, &boss, ("COMMUNITY", "c1"), "community", "Club").await;
    let private = create(&client, &boss, ("TENANT", &t), "private", "Staff only").await;
    ok(
        &client,
        "event.update",
        &boss,
        json!({"id": public, "title": "Board games night"}),
    )
    .await;
    ok(
        &client,
        "rsvp.set",
        &alice,
        json!({"eventId": public, "status": "going"}),
    )
    .await;
    ok(
        &client,
        "rsvp.set",
        &boss,
        json!({"eventId": community, "status": "interested"}),
    )
    .await;
    ok(
        &client,
        "attendance.mark",
        &boss,
        json!({"eventId": public, "userId": alice.user_id}),
    )
    .await;
    ok(
        &client,
        "event.cancel",
        &boss,
        json!({"id": private, "reason": "rain"}),
    )
    .await;
    let messages = published(&app, 8).await;
    assert!(
        messages
            .iter()
            .all(|m| m.content_type == "application/cloudevents+msgpack"),
        "msgpack by default"
    );

    let dir = TempDir::new();
    let db = dir.path().join("activity.sqlite3");
    let run = consume_ok(&app, "activity-test", &db).await;
    summary_is(&run, 8, 0);
    let items = check_items(&run, &messages);

    // Visibility: only public stays public, with actor and target kept.
    let created = item_of(&items, "event.created", &public);
    assert_eq!(created["visibility"], "public");
    assert_eq!(created["title"], "Board games");
    assert_eq!(created["actor_user_id"], boss.user_id.as_str());
    let club = item_of(&items, "event.created", &community);
    assert_eq!(club["visibility"], "private");
    assert_eq!(club["scope_type"], "COMMUNITY");
    assert_eq!(club["scope_id"], "c1");
    assert_eq!(
        item_of(&items, "event.created", &private)["visibility"],
        "private"
    );
    let cancelled = item_of(&items, "event.cancelled", &private);
    assert_eq!(cancelled["visibility"], "private");
    assert_eq!(cancelled["title"], "Staff only");
    assert_eq!(cancelled["target_user_id"], Value::Null);
    assert_eq!(
        item_of(&items, "event.updated", &public)["title"],
        "Board games night"
    );

    // RSVPs and attendance name their user as the target.
    let going = item_of(&items, "event.rsvp.changed", &public);
    assert_eq!(going["target_user_id"], alice.user_id.as_str());
    assert_eq!(going["actor_user_id"], alice.user_id.as_str());
    assert_eq!(going["visibility"], "public");
    let interested = item_of(&items, "event.rsvp.changed", &community);
    assert_eq!(interested["target_user_id"], boss.user_id.as_str());
    assert_eq!(interested["visibility"], "private");
    assert_eq!(interested["title"], "Club");
    // Attendance carries no title: the one the event last had is used.
    let attended = item_of(&items, "event.attendance.marked", &public);
    assert!(attended["payload_json"].get("title").is_none());
    assert_eq!(attended["title"], "Board games night");
    assert_eq!(attended["target_user_id"], alice.user_id.as_str());
    assert_eq!(attended["actor_user_id"], boss.user_id.as_str());
    for (source_ref, item) in &items {
        let id = source_ref.strip_prefix("events:").expect("events: prefix");
        Uuid::parse_str(id).unwrap_or_else(|_| panic!("not a CloudEvent id: {source_ref}"));
        assert_eq!(item["tenant_id"], t.as_str());
    }
    assert_eq!(stored_rows(&db), 8);

    // The same consumer again: everything was acked, nothing is left.
    let again = consume_ok(&app, "activity-test", &db).await;
    assert!(again.items.is_empty(), "{:?}", again.items);
    summary_is(&again, 0, 0);

    // A new consumer reads every message again: the feed already has each
    // source_ref, so nothing is stored twice, and all are acked.
    let replay = consume_ok(&app, "activity-replay", &db).await;
    assert!(replay.items.is_empty(), "{:?}", replay.items);
    summary_is(&replay, 0, 8);
    assert_eq!(stored_rows(&db), 8);
}

#[tokio::test]
async fn activity_consumer_reads_json_envelopes_and_has_no_title_it_never_saw() {
    require_python();
    let app = TestApp::spawn_with(|s| s.out_encoding = Some("json".into())).await;
    let client = app.client();
    let tenant = Uuid::new_v4();
    let t = tenant.to_string();
    let boss = admin(tenant);
    let bob = identity(tenant, Uuid::new_v4());
    let event = create(&client, &boss, ("TENANT", &t), "public", "Quiz").await;
    ok(
        &client,
        "rsvp.set",
        &bob,
        json!({"eventId": event, "status": "going"}),
    )
    .await;
    ok(
        &client,
        "attendance.mark",
        &boss,
        json!({"eventId": event, "userId": bob.user_id}),
    )
    .await;
    let messages = published(&app, 3).await;
    assert!(
        messages
            .iter()
            .all(|m| m.content_type == "application/cloudevents+json"),
        "JSON envelopes"
    );

    let dir = TempDir::new();
    let db = dir.path().join("activity.sqlite3");
    let run = consume_ok(&app, "activity-json", &db).await;
    summary_is(&run, 3, 0);
    let items = check_items(&run, &messages);
    assert_eq!(
        item_of(&items, "event.attendance.marked", &event)["title"],
        "Quiz"
    );
    assert_eq!(
        item_of(&items, "event.rsvp.changed", &event)["target_user_id"],
        bob.user_id.as_str()
    );

    // A feed that only ever saw the attendance has no title for it.
    let fresh = dir.path().join("attendance.sqlite3");
    let filter = format!("{}.out.*.event.attendance.marked", app.isolation.prefix);
    let only = consume(&[
        "--stream",
        &app.isolation.stream,
        "--filter",
        &filter,
        "--durable",
        "attendance-only",
        "--db",
        fresh.to_str().expect("utf-8 path"),
    ])
    .await;
    assert_eq!(only.code, Some(0), "{}", only.stderr);
    assert_eq!(only.items.len(), 1, "{:?}", only.items);
    assert_eq!(only.items[0]["title"], Value::Null);
    assert_eq!(only.items[0]["target_user_id"], bob.user_id.as_str());
    summary_is(&only, 1, 0);
}

#[tokio::test]
async fn activity_consumer_says_when_the_stream_is_missing() {
    require_python();
    let dir = TempDir::new();
    let db = dir.path().join("activity.sqlite3");
    let stream = format!("EVENTS_MISSING_{}", Uuid::new_v4().simple());
    let run = consume(&["--stream", &stream, "--db", db.to_str().expect("path")]).await;
    assert_ne!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("stream {stream} does not exist")),
        "{}",
        run.stderr
    );
    assert!(run.items.is_empty());
}

/// A nats-server running `nats/nats-server.conf` with its users, killed on drop.
struct ConfiguredNats {
    child: std::process::Child,
    url: String,
    _dir: TempDir,
}

impl ConfiguredNats {
    const EVENTS_PASSWORD: &str = "events-pw";
    const ACTIVITY_PASSWORD: &str = "activity-pw";

    async fn start() -> Self {
        let dir = TempDir::new();
        std::fs::create_dir_all(dir.path().join("store")).expect("store dir");
        let port = free_port();
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("nats/nats-server.conf"))
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &free_port().to_string()])
            .env("NATS_STORE_DIR", dir.path().join("store"))
            .env("EVENTS_NATS_PASSWORD", Self::EVENTS_PASSWORD)
            .env("BFF_NATS_PASSWORD", "bff-pw")
            .env("ACTIVITY_NATS_PASSWORD", Self::ACTIVITY_PASSWORD)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server starts");
        let server = Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nats-server with nats/nats-server.conf did not start on port {port}");
    }
}

impl Drop for ConfiguredNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn activity_consumer_needs_no_more_than_the_activity_user_may_do() {
    require_python();
    let nats = ConfiguredNats::start().await;
    // The service's user owns the stream and writes the domain events.
    let events = async_nats::ConnectOptions::with_user_and_password(
        "events".into(),
        ConfiguredNats::EVENTS_PASSWORD.into(),
    )
    .custom_inbox_prefix("_INBOX_events")
    .connect(&nats.url)
    .await
    .expect("the events user connects");
    let js = async_nats::jetstream::new(events);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "EVENTS".into(),
        subjects: vec!["events.out.>".into()],
        ..Default::default()
    })
    .await
    .expect("the events user creates EVENTS");
    let (tenant, event, actor, attendee) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let data = [
        (
            "event.created",
            json!({"event_id": event, "tenant_id": tenant, "scope_type": "TEAM",
                   "scope_id": "t1", "title": "Scrim", "visibility": "team",
                   "actor_user_id": actor}),
        ),
        (
            "event.attendance.marked",
            json!({"event_id": event, "tenant_id": tenant, "scope_type": "TEAM",
                   "scope_id": "t1", "visibility": "team", "user_id": attendee,
                   "marked_by": actor, "actor_user_id": actor}),
        ),
    ];
    for (kind, data) in data {
        let id = Uuid::new_v4().to_string();
        let envelope = json!({"specversion": "1.0", "id": id, "source": "updspace/events",
                              "type": kind, "time": "2026-11-26T10:15:30.250Z",
                              "subject": event, "tenantid": tenant,
                              "datacontenttype": "application/msgpack", "data": data});
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        headers.insert("Content-Type", "application/cloudevents+msgpack");
        js.publish_with_headers(
            format!("events.out.{tenant}.{kind}"),
            headers,
            rmp_serde::to_vec_named(&envelope).expect("msgpack").into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
    }

    let dir = TempDir::new();
    let db = dir.path().join("activity.sqlite3");
    let run = consume(&[
        "--nats-url",
        &nats.url,
        "--user",
        "activity",
        "--password",
        ConfiguredNats::ACTIVITY_PASSWORD,
        "--inbox-prefix",
        "_INBOX_activity",
        "--db",
        db.to_str().expect("utf-8 path"),
    ])
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    summary_is(&run, 2, 0);
    let [created, attended] = &run.items[..] else {
        panic!("two items: {:?}", run.items);
    };
    assert_eq!(created["visibility"], "private");
    assert_eq!(created["target_user_id"], Value::Null);
    assert_eq!(attended["visibility"], "private");
    assert_eq!(attended["title"], "Scrim");
    assert_eq!(attended["target_user_id"], attendee.to_string());
    assert_eq!(attended["actor_user_id"], actor.to_string());
}
