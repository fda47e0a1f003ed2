//! Capacity and waitlist under concurrency across two service instances
//! sharing one database and one subject prefix (each write decides in its
//! own Postgres transaction, so capacity holds whichever instance answers;
//! see `docs/scaling.md`), and the scope-actor registry (one actor per
//! scope, idle passivation).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use updspace_events::actors::ScopeKey;
use updspace_events::client::{CallReply, EventsClient, Identity};
use updspace_events::config::{Config, Settings};
use updspace_events::domain::{EventId, ScopeType, TenantId};
use updspace_events::startup::{AppState, Application};
use uuid::Uuid;

use crate::helpers::{Isolation, NATS_URL, TEST_SECRET, TestApp, identity};
use crate::http_contract::organizer;

/// The heavy bursts run one at a time (the machine has two cores).
static BURSTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Another instance of the service on an existing isolation (same
/// database, subject prefix and stream). It never drops the database: the
/// [`TestApp`] that created the isolation does.
struct Instance {
    state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Instance {
    async fn start(isolation: &Isolation, adjust: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = isolation.settings();
        adjust(&mut settings);
        let config = Config::load(&settings).expect("test settings are valid");
        let app = Application::build(config)
            .await
            .expect("the second instance starts");
        let state = app.state().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = app
                .run_until(async {
                    let _ = rx.await;
                })
                .await;
        });
        Self {
            state,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    fn registry(&self) -> &updspace_events::actors::Registry {
        self.state.app.registry()
    }

    fn db(&self) -> &PgPool {
        &self.state.db
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A client on its own NATS connection.
async fn client_on_new_connection(prefix: &str) -> EventsClient {
    let nats = async_nats::connect(NATS_URL).await.expect("NATS connects");
    let mut client = EventsClient::new(nats, prefix, TEST_SECRET);
    client.timeout = Duration::from_secs(30);
    client
}

/// Creates one event in each of `scopes` community scopes, in turn.
async fn one_event_per_scope(client: &EventsClient, org: &Identity, scopes: usize) -> Vec<String> {
    let mut events = Vec::new();
    for i in 0..scopes {
        let reply = client
            .call(
                "event.create",
                org,
                &json!({
                    "scopeType": "COMMUNITY", "scopeId": format!("s{i}"), "title": "one of many",
                    "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z",
                }),
            )
            .await
            .expect("reply");
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        events.push(reply.body["id"].as_str().expect("id").to_string());
    }
    events
}

struct Fixture {
    app: TestApp,
    second: Instance,
    clients: [EventsClient; 2],
    tenant: Uuid,
    organizer: Identity,
}

impl Fixture {
    async fn start() -> Self {
        let app = TestApp::spawn().await;
        let second = Instance::start(&app.isolation, |_| {}).await;
        let clients = [
            client_on_new_connection(&app.isolation.prefix).await,
            client_on_new_connection(&app.isolation.prefix).await,
        ];
        let tenant = Uuid::new_v4();
        let organizer = Uuid::new_v4();
        app.grant(
            tenant,
            organizer,
            "events.organizer",
            "TENANT",
            &tenant.to_string(),
        )
        .await;
        Self {
            app,
            second,
            clients,
            tenant,
            organizer: identity(tenant, organizer),
        }
    }

    fn db(&self) -> &PgPool {
        &self.app.db
    }

    async fn create(&self, capacity: u32) -> String {
        let reply = self.clients[0]
            .call(
                "event.create",
                &self.organizer,
                &json!({
                    "scopeType": "TENANT", "scopeId": self.tenant.to_string(), "title": "Crowded",
                    "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z",
                    "capacity": capacity,
                }),
            )
            .await
            .expect("create reply");
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.body["id"].as_str().expect("id").to_string()
    }

    async fn update_capacity(&self, event: &str, capacity: u32) -> CallReply {
        let reply = self.clients[1]
            .call(
                "event.update",
                &self.organizer,
                &json!({"id": event, "capacity": capacity}),
            )
            .await
            .expect("update reply");
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply
    }

    /// One `rsvp.set`/`rsvp.clear` per user, all at once, alternating clients.
    async fn burst(&self, event: &str, users: &[Uuid], status: Option<&str>) -> Vec<CallReply> {
        let calls = users.iter().enumerate().map(|(i, user)| {
            let client = &self.clients[i % 2];
            let who = identity(self.tenant, *user);
            let event = event.to_string();
            async move {
                let (op, body) = match status {
                    Some(s) => ("rsvp.set", json!({"eventId": event, "status": s})),
                    None => ("rsvp.clear", json!({"eventId": event})),
                };
                client.call(op, &who, &body).await
            }
        });
        join_all(calls)
            .await
            .into_iter()
            .zip(users)
            .map(|(reply, user)| {
                let reply = reply.unwrap_or_else(|e| panic!("{user}: no reply: {e}"));
                assert_eq!(reply.status, 200, "{user}: {:?}", reply.body);
                reply
            })
            .collect()
    }

    fn batch_stats(&self) -> (u64, u64, u64) {
        let shared = self.second.registry().shared();
        (
            shared.batches.load(Ordering::Relaxed),
            shared.batched_commands.load(Ordering::Relaxed),
            shared.largest_batch.load(Ordering::Relaxed),
        )
    }
}

/// Every RSVP of an event: user → (status, waitlist_seq).
async fn rsvps(db: &PgPool, event: &str) -> HashMap<Uuid, (String, Option<i64>)> {
    let rows: Vec<(Uuid, String, Option<i64>)> = sqlx::query_as(
        "SELECT user_id, status::text, waitlist_seq FROM event_rsvps WHERE event_id = $1::uuid",
    )
    .bind(event)
    .fetch_all(db)
    .await
    .expect("rsvps");
    rows.into_iter().map(|(u, s, q)| (u, (s, q))).collect()
}

fn count(rows: &HashMap<Uuid, (String, Option<i64>)>, status: &str) -> usize {
    rows.values().filter(|(s, _)| s == status).count()
}

/// Waitlisted users, earliest first (by `waitlist_seq`).
fn waitlist(rows: &HashMap<Uuid, (String, Option<i64>)>) -> Vec<Uuid> {
    let mut w: Vec<(i64, Uuid)> = rows
        .iter()
        .filter(|(_, (s, _))| s == "waitlisted")
        .map(|(u, (_, q))| (q.expect("a waitlisted row has a seq"), *u))
        .collect();
    w.sort();
    let seqs: HashSet<i64> = w.iter().map(|(q, _)| *q).collect();
    assert_eq!(seqs.len(), w.len(), "two waitlisted users share a seq");
    w.into_iter().map(|(_, u)| u).collect()
}

/// The stored counters equal a recount of the RSVP rows.
async fn assert_counters_match(db: &PgPool, event: &str) {
    let stored: (i32, i32, i32, i32) = sqlx::query_as(
        "SELECT interested, going, not_going, waitlisted FROM event_counters WHERE event_id = $1::uuid",
    )
    .bind(event)
    .fetch_one(db)
    .await
    .expect("counters");
    let recount: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'interested'), count(*) FILTER (WHERE status = 'going'),
                count(*) FILTER (WHERE status = 'not_going'), count(*) FILTER (WHERE status = 'waitlisted')
         FROM event_rsvps WHERE event_id = $1::uuid",
    )
    .bind(event)
    .fetch_one(db)
    .await
    .expect("recount");
    assert_eq!(
        (
            i64::from(stored.0),
            i64::from(stored.1),
            i64::from(stored.2),
            i64::from(stored.3)
        ),
        recount,
        "event_counters differ from a recount"
    );
}

/// Waitlist positions as `rsvp.list` shows them: 1..n without gaps, in
/// `waitlist_seq` order.
async fn assert_positions(f: &Fixture, event: &str, expected: &[Uuid]) {
    let mut positions: BTreeMap<i64, Uuid> = BTreeMap::new();
    let mut offset = 0;
    loop {
        let page = f.clients[0]
            .call(
                "rsvp.list",
                &f.organizer,
                &json!({"eventId": event, "status": "waitlisted", "limit": 250, "offset": offset}),
            )
            .await
            .expect("rsvp.list reply");
        assert_eq!(page.status, 200, "{:?}", page.body);
        assert_eq!(page.body["meta"]["total"], json!(expected.len()));
        let items = page.body["items"].as_array().expect("items").clone();
        if items.is_empty() {
            break;
        }
        for item in &items {
            assert_eq!(item["status"], "waitlisted");
            let pos = item["waitlistPosition"].as_i64().expect("a position");
            let user: Uuid = item["userId"]
                .as_str()
                .expect("user")
                .parse()
                .expect("uuid");
            assert!(
                positions.insert(pos, user).is_none(),
                "position {pos} twice"
            );
        }
        offset += items.len();
    }
    let keys: Vec<i64> = positions.keys().copied().collect();
    let want: Vec<i64> = (1..=expected.len() as i64).collect();
    assert_eq!(keys, want, "waitlist positions have gaps");
    let by_position: Vec<Uuid> = positions.into_values().collect();
    assert_eq!(
        by_position, expected,
        "positions do not follow waitlist_seq"
    );
}

#[derive(Debug, Clone)]
struct Change {
    user: Uuid,
    previous: Option<String>,
    status: Option<String>,
    reason: String,
}

async fn changes(db: &PgPool, event: &str) -> Vec<Change> {
    let rows: Vec<Value> = sqlx::query_scalar(
        "SELECT payload FROM outbox WHERE event_id = $1::uuid AND event_type = 'event.rsvp.changed'
         ORDER BY seq",
    )
    .bind(event)
    .fetch_all(db)
    .await
    .expect("outbox");
    rows.into_iter()
        .map(|p| Change {
            user: p["user_id"]
                .as_str()
                .expect("user_id")
                .parse()
                .expect("uuid"),
            previous: p["previous_status"].as_str().map(str::to_string),
            status: p["status"].as_str().map(str::to_string),
            reason: p["reason"].as_str().expect("reason").to_string(),
        })
        .collect()
}

/// Replays the `event.rsvp.changed` rows: each one is a real change (from
/// the user's previous status, to a different one), and together they end
/// in the stored state. Returns how many rows there are.
async fn assert_outbox_replays_to_state(db: &PgPool, event: &str) -> usize {
    let all = changes(db, event).await;
    let mut state: HashMap<Uuid, Option<String>> = HashMap::new();
    for (i, c) in all.iter().enumerate() {
        let before = state.get(&c.user).cloned().flatten();
        assert_eq!(
            c.previous, before,
            "row {i} {c:?}: previous_status is not the user's status"
        );
        assert_ne!(c.previous, c.status, "row {i} {c:?}: not a change");
        state.insert(c.user, c.status.clone());
    }
    let stored = rsvps(db, event).await;
    let replayed: HashMap<Uuid, String> = state
        .into_iter()
        .filter_map(|(u, s)| Some((u, s?)))
        .collect();
    let stored: HashMap<Uuid, String> = stored.into_iter().map(|(u, (s, _))| (u, s)).collect();
    assert_eq!(
        replayed, stored,
        "the outbox does not replay to the stored RSVPs"
    );
    all.len()
}

/// Rows per writing transaction: the group-commit sizes as seen by the
/// database, across both instances.
async fn commit_sizes(db: &PgPool, event: &str, since_seq: i64) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE event_id = $1::uuid AND event_type = 'event.rsvp.changed'
           AND seq > $2 GROUP BY tx_id ORDER BY min(seq)",
    )
    .bind(event)
    .bind(since_seq)
    .fetch_all(db)
    .await
    .expect("commit sizes")
}

async fn max_seq(db: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM outbox")
        .fetch_one(db)
        .await
        .expect("max seq")
}

fn report(label: &str, before: (u64, u64, u64), after: (u64, u64, u64), sizes: &[i64]) {
    let batches = after.0 - before.0;
    let commands = after.1 - before.1;
    println!(
        "[{label}] second instance: {batches} batches, {commands} commands, mean {:.1}, largest ever {}; \
         database (both instances): {} transactions, sizes {:?}",
        if batches == 0 {
            0.0
        } else {
            commands as f64 / batches as f64
        },
        after.2,
        sizes.len(),
        sizes
    );
}

/// Capacity 50, 500 concurrent `going` over two instances; then clears,
/// promotions (FIFO), a raise and a lowering of capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_and_waitlist_hold_across_two_instances() {
    let _serial = BURSTS.lock().await;
    let f = Fixture::start().await;
    let db = f.db().clone();
    let event = f.create(50).await;
    let users: Vec<Uuid> = (0..500).map(|_| Uuid::new_v4()).collect();

    let before = f.batch_stats();
    let since = max_seq(&db).await;
    let started = Instant::now();
    let replies = f.burst(&event, &users, Some("going")).await;
    let took = started.elapsed();
    report(
        &format!("capacity 50, 500 going, {took:?}"),
        before,
        f.batch_stats(),
        &commit_sizes(&db, &event, since).await,
    );

    let answered: HashMap<Uuid, String> = users
        .iter()
        .zip(&replies)
        .map(|(u, r)| (*u, r.body["status"].as_str().expect("status").to_string()))
        .collect();
    assert_eq!(answered.values().filter(|s| *s == "going").count(), 50);
    assert_eq!(
        answered.values().filter(|s| *s == "waitlisted").count(),
        450
    );
    let stored = rsvps(&db, &event).await;
    assert_eq!(stored.len(), 500);
    assert_eq!(count(&stored, "going"), 50);
    assert_eq!(count(&stored, "waitlisted"), 450);
    for (user, status) in &answered {
        assert_eq!(&stored[user].0, status, "{user} was told {status}");
    }
    assert_counters_match(&db, &event).await;
    let queue = waitlist(&stored);
    assert_positions(&f, &event, &queue).await;
    assert_eq!(assert_outbox_replays_to_state(&db, &event).await, 500);

    // Asking again changes nothing: no rows, waitlisted users keep their place.
    let going: Vec<Uuid> = users
        .iter()
        .copied()
        .filter(|u| stored[u].0 == "going")
        .collect();
    let again: Vec<Uuid> = going[..10].iter().chain(&queue[..10]).copied().collect();
    let replies = f.burst(&event, &again, Some("going")).await;
    for (user, reply) in again.iter().zip(&replies) {
        assert_eq!(reply.body["status"].as_str(), Some(stored[user].0.as_str()));
    }
    assert_eq!(rsvps(&db, &event).await, stored);
    assert_eq!(assert_outbox_replays_to_state(&db, &event).await, 500);

    // 10 going users leave at once: exactly the 10 earliest waitlisted move up.
    let since = max_seq(&db).await;
    let leavers = &going[..10];
    let replies = f.burst(&event, leavers, None).await;
    for reply in &replies {
        assert_eq!(reply.body["status"], Value::Null);
    }
    let stored = rsvps(&db, &event).await;
    assert_eq!(count(&stored, "going"), 50);
    assert_eq!(count(&stored, "waitlisted"), 440);
    for user in leavers {
        assert!(!stored.contains_key(user), "{user} still has an RSVP");
    }
    for user in &queue[..10] {
        assert_eq!(
            stored[user].0, "going",
            "{user} (earliest waitlisted) was not promoted"
        );
    }
    assert_eq!(waitlist(&stored), queue[10..].to_vec());
    let new_rows: Vec<Change> = changes(&db, &event).await.into_iter().skip(500).collect();
    let promoted: HashSet<Uuid> = new_rows
        .iter()
        .filter(|c| c.reason == "promoted")
        .map(|c| {
            assert_eq!(c.previous.as_deref(), Some("waitlisted"));
            assert_eq!(c.status.as_deref(), Some("going"));
            c.user
        })
        .collect();
    assert_eq!(
        promoted,
        queue[..10].iter().copied().collect::<HashSet<_>>()
    );
    let cleared: HashSet<Uuid> = new_rows
        .iter()
        .filter(|c| c.reason == "cleared")
        .map(|c| c.user)
        .collect();
    assert_eq!(cleared, leavers.iter().copied().collect::<HashSet<_>>());
    assert_eq!(new_rows.len(), 20);
    println!(
        "[10 clears] database transactions: {:?}",
        commit_sizes(&db, &event, since).await
    );
    assert_counters_match(&db, &event).await;
    assert_positions(&f, &event, &queue[10..]).await;

    // Raising capacity to 100 promotes the next 50 at once.
    let raised = f.update_capacity(&event, 100).await;
    assert_eq!(raised.body["capacity"], 100);
    assert_eq!(raised.body["rsvpCounts"]["going"], 100);
    assert_eq!(raised.body["rsvpCounts"]["waitlisted"], 390);
    let stored = rsvps(&db, &event).await;
    assert_eq!(count(&stored, "going"), 100);
    assert_eq!(count(&stored, "waitlisted"), 390);
    for user in &queue[10..60] {
        assert_eq!(
            stored[user].0, "going",
            "{user} was not promoted by the raise"
        );
    }
    assert_eq!(waitlist(&stored), queue[60..].to_vec());
    let promoted_by_raise: Vec<Change> = changes(&db, &event).await.into_iter().skip(520).collect();
    assert_eq!(promoted_by_raise.len(), 50);
    assert!(promoted_by_raise.iter().all(|c| c.reason == "promoted"));
    assert_counters_match(&db, &event).await;

    // Lowering capacity to 10 removes no one; new `going` requests wait, and
    // a seat freed above the new capacity promotes no one.
    let lowered = f.update_capacity(&event, 10).await;
    assert_eq!(lowered.body["capacity"], 10);
    assert_eq!(lowered.body["rsvpCounts"]["going"], 100);
    let newcomers: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let replies = f.burst(&event, &newcomers, Some("going")).await;
    for reply in &replies {
        assert_eq!(reply.body["status"], "waitlisted");
    }
    let leaver = queue[0];
    let replies = f.burst(&event, &[leaver], None).await;
    assert_eq!(replies[0].body["rsvpCounts"]["going"], 99);
    let stored = rsvps(&db, &event).await;
    assert_eq!(count(&stored, "going"), 99);
    assert_eq!(count(&stored, "waitlisted"), 395);
    let final_queue = waitlist(&stored);
    assert_eq!(&final_queue[..390], &queue[60..]);
    let tail: HashSet<Uuid> = final_queue[390..].iter().copied().collect();
    assert_eq!(tail, newcomers.iter().copied().collect::<HashSet<_>>());
    assert_counters_match(&db, &event).await;
    assert_positions(&f, &event, &final_queue).await;

    // One outbox row per real change: 500 + 10 cleared + 10 promoted + 50
    // promoted + 5 waitlisted + 1 cleared.
    assert_eq!(assert_outbox_replays_to_state(&db, &event).await, 576);
}

/// Capacity 1, 500 concurrent `going` over two instances: the counter
/// lock admits exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_one_survives_a_500_request_burst() {
    let _serial = BURSTS.lock().await;
    let f = Fixture::start().await;
    let db = f.db().clone();
    let event = f.create(1).await;
    let users: Vec<Uuid> = (0..500).map(|_| Uuid::new_v4()).collect();

    let before = f.batch_stats();
    let since = max_seq(&db).await;
    let started = Instant::now();
    let replies = f.burst(&event, &users, Some("going")).await;
    let took = started.elapsed();
    report(
        &format!("capacity 1, 500 going, {took:?}"),
        before,
        f.batch_stats(),
        &commit_sizes(&db, &event, since).await,
    );
    let going = replies
        .iter()
        .filter(|r| r.body["status"] == "going")
        .count();
    assert_eq!(going, 1);
    let stored = rsvps(&db, &event).await;
    assert_eq!(count(&stored, "going"), 1);
    assert_eq!(count(&stored, "waitlisted"), 499);
    assert_counters_match(&db, &event).await;
    let queue = waitlist(&stored);
    assert_positions(&f, &event, &queue).await;
    assert_eq!(assert_outbox_replays_to_state(&db, &event).await, 500);

    // The one seat changes hands in waitlist order.
    let holder = *stored
        .iter()
        .find(|(_, (s, _))| s == "going")
        .map(|(u, _)| u)
        .expect("a holder");
    f.burst(&event, &[holder], None).await;
    let stored = rsvps(&db, &event).await;
    assert_eq!(stored[&queue[0]].0, "going");
    assert_eq!(count(&stored, "going"), 1);
    assert_eq!(count(&stored, "waitlisted"), 498);
    assert_counters_match(&db, &event).await;
    assert_eq!(assert_outbox_replays_to_state(&db, &event).await, 502);

    // No limit at all: the whole waitlist is seated at once.
    let unlimited = f.clients[0]
        .call(
            "event.update",
            &f.organizer,
            &json!({"id": event, "capacity": null}),
        )
        .await
        .expect("update reply");
    assert_eq!(unlimited.status, 200, "{:?}", unlimited.body);
    assert_eq!(unlimited.body["capacity"], Value::Null);
    assert_eq!(unlimited.body["rsvpCounts"]["going"], 499);
    assert_eq!(unlimited.body["rsvpCounts"]["waitlisted"], 0);
    let stored = rsvps(&db, &event).await;
    assert_eq!(count(&stored, "going"), 499);
    assert_eq!(count(&stored, "waitlisted"), 0);
    assert_counters_match(&db, &event).await;
    assert_eq!(assert_outbox_replays_to_state(&db, &event).await, 502 + 498);
}

/// One burst mixing every kind of request over both instances: seats freed
/// go to the earliest waitlisted, newcomers never overtake the queue,
/// duplicates and no-ops write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_concurrent_requests_keep_fifo_and_count_only_real_changes() {
    let _serial = BURSTS.lock().await;
    let f = Fixture::start().await;
    let db = f.db().clone();
    let event = f.create(20).await;
    let users: Vec<Uuid> = (0..100).map(|_| Uuid::new_v4()).collect();
    f.burst(&event, &users, Some("going")).await;
    let stored = rsvps(&db, &event).await;
    assert_eq!(count(&stored, "going"), 20);
    let queue = waitlist(&stored);
    assert_eq!(queue.len(), 80);
    let going: Vec<Uuid> = users
        .iter()
        .copied()
        .filter(|u| stored[u].0 == "going")
        .collect();

    let leavers = &going[..10];
    let newcomers: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
    let switchers = &queue[70..75];
    let stayers = &queue[20..30];
    let mut requests: Vec<(Uuid, Option<&str>)> = Vec::new();
    for i in 0..10 {
        requests.push((leavers[i], None));
        requests.push((newcomers[i], Some("going")));
        requests.push((stayers[i], Some("going")));
        requests.push((newcomers[i], Some("going")));
        requests.push((going[10 + i], Some("going")));
        if i < 5 {
            requests.push((switchers[i], Some("interested")));
        }
    }
    let calls = requests.iter().enumerate().map(|(i, (user, status))| {
        let client = &f.clients[i % 2];
        let who = identity(f.tenant, *user);
        let event = event.clone();
        let status = *status;
        async move {
            match status {
                Some(s) => {
                    client
                        .call("rsvp.set", &who, &json!({"eventId": event, "status": s}))
                        .await
                }
                None => {
                    client
                        .call("rsvp.clear", &who, &json!({"eventId": event}))
                        .await
                }
            }
        }
    });
    for (reply, (user, _)) in join_all(calls).await.into_iter().zip(&requests) {
        let reply = reply.unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_eq!(reply.status, 200, "{user}: {:?}", reply.body);
    }

    let stored = rsvps(&db, &event).await;
    assert_eq!(count(&stored, "going"), 20);
    assert_eq!(count(&stored, "interested"), 5);
    for user in &queue[..10] {
        assert_eq!(
            stored[user].0, "going",
            "{user} (earliest waitlisted) was not promoted"
        );
    }
    let expected_queue: Vec<Uuid> = queue[10..70].iter().chain(&queue[75..]).copied().collect();
    let now_queue = waitlist(&stored);
    assert_eq!(
        &now_queue[..65],
        expected_queue.as_slice(),
        "the queue was reordered"
    );
    let tail: HashSet<Uuid> = now_queue[65..].iter().copied().collect();
    assert_eq!(
        tail,
        newcomers.iter().copied().collect::<HashSet<_>>(),
        "newcomers overtook the queue"
    );
    assert_counters_match(&db, &event).await;
    assert_positions(&f, &event, &now_queue).await;
    // 100 + 10 cleared + 10 promoted + 10 newcomers + 5 switches.
    assert_eq!(assert_outbox_replays_to_state(&db, &event).await, 135);
}

/// Concurrent first requests for one scope activate one actor.
#[tokio::test]
async fn concurrent_first_requests_share_one_actor() {
    let mut app = TestApp::spawn().await;
    let second = Instance::start(&app.isolation, |_| {}).await;
    let registry = second.registry().clone();

    // Directly: 64 racing look-ups in a scope nobody has used.
    let key = ScopeKey {
        tenant: TenantId::from(Uuid::new_v4()),
        scope_type: ScopeType::Community,
        scope_id: "fresh".into(),
    };
    let before = registry.live();
    let answers = join_all((0..64).map(|_| registry.get(&key, EventId::new_v4()))).await;
    for answer in answers {
        assert!(matches!(answer, Ok(None)), "{answer:?}");
    }
    assert_eq!(registry.live(), before + 1, "one scope, one actor");

    // Through NATS, with the second instance answering alone: two racing
    // creates are the first requests of a new scope.
    app.stop().await;
    let client = client_on_new_connection(&app.isolation.prefix).await;
    let tenant = Uuid::new_v4();
    let organizer = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO role_bindings (id, tenant_id, user_id, role, scope_type, scope_id, created_by)
         VALUES ($1, $2, $3, 'events.organizer', 'COMMUNITY', 'c9', $3)",
    )
    .bind(Uuid::new_v4())
    .bind(tenant)
    .bind(organizer)
    .execute(second.db())
    .await
    .expect("grant");
    let who = identity(tenant, organizer);
    let before = registry.live();
    let bodies: Vec<Value> = (0..2)
        .map(|i| {
            json!({
                "scopeType": "COMMUNITY", "scopeId": "c9", "title": format!("race {i}"),
                "visibility": "community",
                "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z",
            })
        })
        .collect();
    let creates = join_all(bodies.iter().map(|b| client.call("event.create", &who, b))).await;
    for reply in creates {
        let reply = reply.expect("reply");
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }
    assert_eq!(registry.live(), before + 1, "one scope, one actor");
}

/// With a short idle timeout, actors are passivated soon after their last
/// request, and a later request starts a fresh one that sees the state.
#[tokio::test]
async fn idle_actors_are_passivated() {
    let idle = |s: &mut Settings| s.actor_idle_timeout = Some("300ms".into());
    let mut app = TestApp::spawn_with(idle).await;
    let second = Instance::start(&app.isolation, idle).await;
    let registry = second.registry().clone();
    app.stop().await;

    let client = client_on_new_connection(&app.isolation.prefix).await;
    let tenant = Uuid::new_v4();
    let organizer = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO role_bindings (id, tenant_id, user_id, role, scope_type, scope_id, created_by)
         VALUES ($1, $2, $3, 'events.organizer', 'TENANT', $2::text, $3)",
    )
    .bind(Uuid::new_v4())
    .bind(tenant)
    .bind(organizer)
    .execute(second.db())
    .await
    .expect("grant");
    let created = client
        .call(
            "event.create",
            &identity(tenant, organizer),
            &json!({
                "scopeType": "TENANT", "scopeId": tenant.to_string(), "title": "Quiet",
                "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z", "capacity": 1,
            }),
        )
        .await
        .expect("reply");
    assert_eq!(created.status, 200, "{:?}", created.body);
    let id = created.body["id"].as_str().expect("id").to_string();
    assert_eq!(registry.live(), 1);

    async fn wait_until_idle(registry: &updspace_events::actors::Registry) -> Duration {
        let started = Instant::now();
        while registry.live() > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "still {} live actors {:?} after the last request (idle timeout 300ms)",
                registry.live(),
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    }
    let first = wait_until_idle(&registry).await;

    let user = Uuid::new_v4();
    let rsvp = client
        .call(
            "rsvp.set",
            &identity(tenant, user),
            &json!({"eventId": id, "status": "going"}),
        )
        .await
        .expect("reply");
    assert_eq!(rsvp.status, 200, "{:?}", rsvp.body);
    assert_eq!(rsvp.body["status"], "going");
    assert!(registry.live() >= 1);
    let second_wait = wait_until_idle(&registry).await;

    // A fresh actor serves the persisted state.
    let got = client
        .call("event.get", &identity(tenant, user), &json!({"id": id}))
        .await
        .expect("reply");
    assert_eq!(got.body["myRsvp"], "going");
    assert_eq!(got.body["rsvpCounts"]["going"], 1);
    println!("passivated after {first:?} and {second_wait:?}");
}

/// Above `max_live_actors` the least recently used actors are stopped while
/// requests keep arriving for them: no request may fail because the actor
/// it reached was being evicted, and no write may be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_over_the_actor_cap_never_fails_a_request() {
    let _serial = BURSTS.lock().await;
    let cap = |s: &mut Settings| s.max_live_actors = Some("10".into());
    let mut app = TestApp::spawn_with(cap).await;
    let second = Instance::start(&app.isolation, cap).await;
    let registry = second.registry().clone();
    app.stop().await;
    let clients = [
        client_on_new_connection(&app.isolation.prefix).await,
        client_on_new_connection(&app.isolation.prefix).await,
    ];
    let tenant = Uuid::new_v4();
    let organizer = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO role_bindings (id, tenant_id, user_id, role, scope_type, scope_id, created_by)
         VALUES ($1, $2, $3, 'events.organizer', 'TENANT', $2::text, $3)",
    )
    .bind(Uuid::new_v4())
    .bind(tenant)
    .bind(organizer)
    .execute(second.db())
    .await
    .expect("grant");
    let org = identity(tenant, organizer);
    let scopes = 40;
    let events = one_event_per_scope(&clients[0], &org, scopes).await;

    let rounds = 15;
    let mut failures = Vec::new();
    let mut writes = 0;
    for round in 0..rounds {
        let calls = events.iter().enumerate().flat_map(|(i, event)| {
            let user = Uuid::new_v4();
            let get = (i, "event.get", json!({"id": event}), user);
            let set = (
                i,
                "rsvp.set",
                json!({"eventId": event, "status": "going"}),
                user,
            );
            [get, set]
        });
        let calls: Vec<_> = calls.collect();
        writes += calls.iter().filter(|c| c.1 == "rsvp.set").count();
        let replies = join_all(calls.iter().enumerate().map(|(n, (_, op, body, user))| {
            let client = &clients[n % 2];
            let who = identity(tenant, *user);
            async move { client.call(op, &who, body).await }
        }))
        .await;
        for ((i, op, _, _), reply) in calls.iter().zip(replies) {
            match reply {
                Ok(r) if r.status == 200 => {}
                Ok(r) => failures.push(format!(
                    "round {round} scope s{i} {op}: {} {:?}",
                    r.status, r.body
                )),
                Err(e) => failures.push(format!("round {round} scope s{i} {op}: {e}")),
            }
        }
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM event_rsvps")
        .fetch_one(second.db())
        .await
        .expect("count");
    println!(
        "eviction stress: {} requests, {} failed, {} live actors at the end (cap 10)",
        rounds * scopes * 2,
        failures.len(),
        registry.live()
    );
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(stored, writes as i64);
}

/// Over the actor cap a sweep stops the least recently used actors down to
/// nine tenths of the cap, and counts them as evictions. Activations that
/// arrive while a sweep runs are not missed: a burst of them still ends
/// within the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_actor_cap_actors_are_stopped_down_to_nine_tenths_of_it() {
    let app = TestApp::spawn_with(|s| s.max_live_actors = Some("10".into())).await;
    let registry = app.state.app.registry().clone();
    let metrics = registry.shared().metrics.clone();
    let client = app.client();
    let org = organizer(&app, Uuid::new_v4()).await;
    let settled = || async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while registry.live() > 10 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        registry.live()
    };

    let scopes = 40;
    let events = one_event_per_scope(&client, &org, scopes).await;
    let live = settled().await;
    assert!(
        (9..=10).contains(&live),
        "{live} live after one activation per scope"
    );
    // Each scope was activated once and none went idle: every scope not
    // live any more was evicted, once.
    assert_eq!(metrics.actor_evictions.get() as usize, scopes - live);

    // All at once: most of them wake while a sweep is running.
    let replies = join_all(events.iter().map(|id| {
        let (client, org) = (&client, &org);
        async move { client.call("event.get", org, &json!({"id": id})).await }
    }))
    .await;
    for reply in replies {
        assert_eq!(reply.expect("reply").status, 200);
    }
    let live = settled().await;
    assert!(
        (9..=10).contains(&live),
        "{live} live after a burst over every scope"
    );
}

/// Loading an event's RSVPs finds them through the index however the table
/// has grown since the connection first ran the query. Prepared once, the
/// query would keep the plan Postgres settled on while the table was empty
/// (a sequential scan) until statistics are refreshed, and read every RSVP
/// of every event at each load.
#[tokio::test]
async fn loading_an_events_rsvps_stays_an_index_probe_as_the_table_grows() {
    use sqlx::Connection;
    use updspace_events::store::reads;

    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let org = organizer(&app, tenant).await;
    let events: Vec<EventId> = one_event_per_scope(&app.client(), &org, 2)
        .await
        .iter()
        .map(|id| EventId::parse(id).expect("event id"))
        .collect();
    let (crowded, quiet) = (events[0], events[1]);
    // One session throughout: plans are cached per session.
    let mut session = sqlx::PgConnection::connect_with(&app.db.connect_options())
        .await
        .expect("session");
    for _ in 0..8 {
        reads::all_rsvps(&mut session, quiet, 5000)
            .await
            .expect("rsvps");
    }
    sqlx::query(
        "INSERT INTO event_rsvps (event_id, user_id, tenant_id, status)
         SELECT $1, gen_random_uuid(), $2, 'going' FROM generate_series(1, 20000)",
    )
    .bind(Uuid::from(crowded))
    .bind(tenant)
    .execute(&app.db)
    .await
    .expect("grow the table");

    // The scans of this transaction alone, whatever else the service runs.
    let mut tx = session.begin().await.expect("begin");
    for _ in 0..3 {
        let found = reads::all_rsvps(&mut *tx, quiet, 5000)
            .await
            .expect("rsvps");
        assert_eq!(found.map(|m| m.len()), Some(0));
    }
    let (seq, idx): (i64, i64) = sqlx::query_as(
        "SELECT seq_scan, COALESCE(idx_scan, 0) FROM pg_stat_xact_user_tables WHERE relname = 'event_rsvps'",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("scans of the transaction");
    assert_eq!(seq, 0, "sequential scans of event_rsvps");
    assert!(idx >= 3, "{idx} index scans of event_rsvps");
}

/// A group commit takes an event and its RSVPs from the scope actor's cache
/// only when the revision it locks is the cached one. A change made behind
/// the cache's back (as by an instance whose change note was lost) moves the
/// revision, and the commit reads the event again instead of deciding on
/// what it remembered.
#[tokio::test]
async fn a_group_commit_reads_again_what_changed_behind_the_cache() {
    use updspace_events::domain::{RequestedRsvp, RsvpStatus, UserId};
    use updspace_events::store::batch::{
        self, CommandMeta, Envelope, Known, WriteCommand, WriteOutcome,
    };

    let f = Fixture::start().await;
    let (app, tenant) = (&f.app, f.tenant);
    let event = f.create(1).await;
    let event_id = EventId::parse(&event).expect("event id");
    let user = Uuid::new_v4();
    f.burst(&event, &[user], Some("going")).await;

    // What a scope actor knows now: the event, its revision, and that the
    // user is going.
    let knowledge = || async {
        let (stored, _, revision) =
            updspace_events::store::reads::event(&app.db, TenantId::from(tenant), event_id)
                .await
                .expect("read")
                .expect("the event exists");
        let going = HashMap::from([(UserId::from(user), RsvpStatus::Going)]);
        let budget = updspace_events::actors::RsvpBudget::new(10);
        Known {
            event: std::sync::Arc::new(stored),
            rsvps: updspace_events::actors::RsvpMap::new(going, &budget).map(std::sync::Arc::new),
            revision,
        }
    };
    let remembered = knowledge().await;

    // The seat is given back behind that knowledge, moving the revision.
    let mut tx = app.db.begin().await.expect("begin");
    sqlx::query("DELETE FROM event_rsvps WHERE event_id = $1::uuid")
        .bind(&event)
        .execute(&mut *tx)
        .await
        .expect("delete");
    sqlx::query(
        "UPDATE event_counters SET going = 0, revision = revision + 1 WHERE event_id = $1::uuid",
    )
    .bind(&event)
    .execute(&mut *tx)
    .await
    .expect("counters");
    tx.commit().await.expect("commit");

    let now = chrono::Utc::now();
    let envelope = Envelope {
        meta: CommandMeta {
            tenant: TenantId::from(tenant),
            actor: UserId::from(user),
            request_id: Uuid::new_v4().to_string(),
            traceparent: None,
            tracestate: None,
            tenant_slug: None,
            replay_key: None,
            replay_expires_at: now,
            audit: Vec::new(),
            now,
        },
        command: WriteCommand::SetRsvp {
            event_id,
            requested: Some(RequestedRsvp::Going),
            guests: 0,
        },
    };
    let subjects = updspace_events::subjects::Subjects::new(app.isolation.prefix.clone());
    let known = HashMap::from([(event_id, remembered)]);
    let (results, _) = batch::execute(&app.db, &subjects, std::slice::from_ref(&envelope), &known)
        .await
        .expect("the batch commits");
    // Trusting the stale map would answer "already going" and write nothing.
    match results.into_iter().next() {
        Some(Ok(WriteOutcome::Rsvp {
            status, changed, ..
        })) => {
            assert_eq!(status, Some(RsvpStatus::Going));
            assert!(changed, "the commit decided on a stale cache");
        }
        other => panic!("unexpected outcome {other:?}"),
    }
    let rows = rsvps(&app.db, &event).await;
    assert_eq!(rows.get(&user).map(|r| r.0.as_str()), Some("going"));
    assert_counters_match(&app.db, &event).await;

    // At the current revision the same knowledge is used as it is: the
    // commit reads neither the event nor the RSVPs, and decides the same.
    let current = knowledge().await;
    let mut again = envelope.clone();
    again.meta.request_id = Uuid::new_v4().to_string();
    let (results, _) = batch::execute(
        &app.db,
        &subjects,
        std::slice::from_ref(&again),
        &HashMap::from([(event_id, current)]),
    )
    .await
    .expect("the batch commits");
    assert!(matches!(
        results.first(),
        Some(Ok(WriteOutcome::Rsvp { changed: false, .. }))
    ));
    assert_counters_match(&app.db, &event).await;
}

/// One group commit in which a waiter leaves and two going users leave:
/// the commit loads only as much of the waitlist as it can promote from,
/// passes over the waiter who left, seats the next two in queue order, and
/// queues a newcomer behind everyone still waiting.
#[tokio::test]
async fn a_group_commit_promotes_past_a_waiter_who_left_in_it() {
    use updspace_events::domain::{RequestedRsvp, UserId};
    use updspace_events::store::batch::{self, CommandMeta, Envelope, WriteCommand};

    let f = Fixture::start().await;
    let event = f.create(2).await;
    let event_id = EventId::parse(&event).expect("event id");
    let [g1, g2, w1, w2, w3, w4, newcomer] = [(); 7].map(|_| Uuid::new_v4());
    f.burst(&event, &[g1, g2], Some("going")).await;
    // One at a time, so the queue order is known.
    for w in [w1, w2, w3, w4] {
        f.burst(&event, &[w], Some("going")).await;
    }
    assert_eq!(waitlist(&rsvps(f.db(), &event).await), vec![w1, w2, w3, w4]);
    let before = changes(f.db(), &event).await.len();

    let now = chrono::Utc::now();
    let envelope = |user: Uuid, requested: Option<RequestedRsvp>| Envelope {
        meta: CommandMeta {
            tenant: TenantId::from(f.tenant),
            actor: UserId::from(user),
            request_id: Uuid::new_v4().to_string(),
            traceparent: None,
            tracestate: None,
            tenant_slug: None,
            replay_key: None,
            replay_expires_at: now,
            audit: Vec::new(),
            now,
        },
        command: WriteCommand::SetRsvp {
            event_id,
            requested,
            guests: 0,
        },
    };
    let commands = [
        envelope(w1, None),
        envelope(g1, None),
        envelope(g2, Some(RequestedRsvp::NotGoing)),
        envelope(newcomer, Some(RequestedRsvp::Going)),
    ];
    let subjects = updspace_events::subjects::Subjects::new(f.app.isolation.prefix.clone());
    let (results, effects) = batch::execute(&f.app.db, &subjects, &commands, &HashMap::new())
        .await
        .expect("the batch commits");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(effects.outbox_rows, 6);

    let rows = rsvps(f.db(), &event).await;
    assert_eq!(rows.get(&w1), None);
    assert_eq!(rows.get(&g1), None);
    assert_eq!(rows.get(&g2).map(|r| r.0.as_str()), Some("not_going"));
    assert_eq!(rows.get(&w2).map(|r| r.0.as_str()), Some("going"));
    assert_eq!(rows.get(&w3).map(|r| r.0.as_str()), Some("going"));
    assert_eq!(waitlist(&rows), vec![w4, newcomer]);
    assert_counters_match(f.db(), &event).await;

    let decided: Vec<(Uuid, Option<String>, String)> = changes(f.db(), &event).await[before..]
        .iter()
        .map(|c| (c.user, c.status.clone(), c.reason.clone()))
        .collect();
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        decided,
        vec![
            (w1, None, "cleared".to_string()),
            (g1, None, "cleared".to_string()),
            (w2, s("going"), "promoted".to_string()),
            (g2, s("not_going"), "user".to_string()),
            (w3, s("going"), "promoted".to_string()),
            (newcomer, s("waitlisted"), "user".to_string()),
        ]
    );
    assert_outbox_replays_to_state(f.db(), &event).await;
}

/// `EVENTS_MAX_CACHED_RSVPS` bounds the RSVPs an instance caches; at 0 it
/// caches none, and every read answers the caller's own RSVP from Postgres,
/// changes included.
#[tokio::test]
async fn with_no_rsvp_cache_budget_reads_still_answer_each_callers_own_rsvp() {
    async fn cached_rsvps(app: &TestApp) -> f64 {
        let text = app.metrics_text().await;
        text.lines()
            .find_map(|l| l.strip_prefix("events_cached_rsvps "))
            .and_then(|v| v.trim().parse().ok())
            .expect("events_cached_rsvps is exported")
    }
    async fn rsvp_and_read(app: &TestApp) -> (Value, Value, Value) {
        let tenant = Uuid::new_v4();
        let org = organizer(app, tenant).await;
        let client = app.client();
        let id = one_event_per_scope(&client, &org, 1).await.remove(0);
        let (ann, bob, cat) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        for (user, status) in [(ann, "going"), (bob, "interested"), (ann, "not_going")] {
            let set = client
                .call(
                    "rsvp.set",
                    &identity(tenant, user),
                    &json!({"eventId": id, "status": status}),
                )
                .await
                .expect("reply");
            assert_eq!(set.status, 200, "{:?}", set.body);
        }
        let mine = |user| {
            let client = client.clone();
            let id = id.clone();
            async move {
                let got = client
                    .call("event.get", &identity(tenant, user), &json!({"id": id}))
                    .await
                    .expect("reply");
                assert_eq!(got.status, 200, "{:?}", got.body);
                got.body["myRsvp"].clone()
            }
        };
        (mine(ann).await, mine(bob).await, mine(cat).await)
    }

    let cached = TestApp::spawn().await;
    let answers = rsvp_and_read(&cached).await;
    assert_eq!(cached_rsvps(&cached).await, 2.0, "two users' RSVPs cached");
    assert_eq!(
        answers,
        (json!("not_going"), json!("interested"), Value::Null)
    );

    let uncached = TestApp::spawn_with(|s| s.max_cached_rsvps = Some("0".into())).await;
    let answers = rsvp_and_read(&uncached).await;
    assert_eq!(cached_rsvps(&uncached).await, 0.0);
    assert_eq!(
        answers,
        (json!("not_going"), json!("interested"), Value::Null)
    );
}
