//! RSVP rules end to end: the RSVP window at its edges, guests under a
//! concurrent burst on two instances, approval by a manager (one and in
//! bulk), reminders committed once through restarts and instances with the
//! clock moved by configuration, statistics against the listings, the CSV
//! exports read back by Python's `csv` module, and hostile values.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::join_all;
use serde_json::{Value, json};
use sqlx::PgPool;
use updspace_events::client::{CallReply, EventsClient, Identity};
use uuid::Uuid;

use crate::helpers::{NATS_URL, TEST_SECRET, TestApp, identity};

const EVENTS: &str = "/api/v1/events";

/// The heavy bursts run one at a time (the machine has two cores).
static BURSTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A time as the service writes it back: milliseconds, shown only when
/// they are not zero (one time in a thousand they are).
fn iso(t: DateTime<Utc>) -> String {
    updspace_events::domain::time::format_utc(&t)
}

struct Setup {
    app: TestApp,
    tenant: Uuid,
    organizer: Identity,
}

impl Setup {
    async fn new(app: TestApp) -> Self {
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
            tenant,
            organizer: identity(tenant, organizer),
        }
    }

    async fn start() -> Self {
        Self::new(TestApp::spawn().await).await
    }

    fn user(&self) -> Identity {
        identity(self.tenant, Uuid::new_v4())
    }

    fn body(&self, extra: Value) -> Value {
        let mut body = json!({
            "scopeType": "TENANT", "scopeId": self.tenant.to_string(), "title": "Rules",
            "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z",
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        body
    }

    async fn call(&self, op: &str, who: &Identity, body: Value) -> CallReply {
        self.app
            .client()
            .call(op, who, &body)
            .await
            .unwrap_or_else(|e| panic!("{op}: no reply: {e}"))
    }

    async fn create(&self, extra: Value) -> String {
        let reply = self
            .call("event.create", &self.organizer, self.body(extra))
            .await;
        assert_eq!(reply.status, 200, "create: {:?}", reply.body);
        reply.body["id"].as_str().expect("id").to_string()
    }

    async fn rsvp(&self, who: &Identity, event: &str, status: &str, guests: u32) -> CallReply {
        self.call(
            "rsvp.set",
            who,
            json!({"eventId": event, "status": status, "guests": guests}),
        )
        .await
    }
}

fn ok(reply: &CallReply, what: &str) {
    assert_eq!(reply.status, 200, "{what}: {:?}", reply.body);
}

fn refused(reply: &CallReply, status: u16, code: &str, what: &str) {
    assert_eq!(
        (reply.status, reply.body["error"]["code"].as_str()),
        (status, Some(code)),
        "{what}: {:?}",
        reply.body
    );
}

fn field_refused(reply: &CallReply, field: &str, what: &str) {
    refused(reply, 422, "VALIDATION_ERROR", what);
    assert!(
        reply.body["error"]["details"]["fields"][field].is_string(),
        "{what}: no error on {field}: {:?}",
        reply.body
    );
}

/// Everything a write could leave behind.
async fn footprint(db: &PgPool) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM event_rsvps),
                (SELECT count(*) FROM outbox), (SELECT count(*) FROM event_reminders)",
    )
    .fetch_one(db)
    .await
    .expect("footprint")
}

/// RSVPs of the event: user → (status, guests, waitlist_seq).
async fn parties(db: &PgPool, event: &str) -> HashMap<Uuid, (String, i32, Option<i64>)> {
    let rows: Vec<(Uuid, String, i32, Option<i64>)> = sqlx::query_as(
        "SELECT user_id, status::text, guests, waitlist_seq FROM event_rsvps WHERE event_id = $1::uuid",
    )
    .bind(event)
    .fetch_all(db)
    .await
    .expect("rsvps");
    rows.into_iter()
        .map(|(u, s, g, q)| (u, (s, g, q)))
        .collect()
}

/// The counters row agrees with a recount of the RSVPs, guests included.
async fn assert_counters_match(db: &PgPool, event: &str) {
    let stored: (i32, i32, i32, i32, i32, i32) = sqlx::query_as(
        "SELECT going, guests, waitlisted, pending, declined, interested
         FROM event_counters WHERE event_id = $1::uuid",
    )
    .bind(event)
    .fetch_one(db)
    .await
    .expect("counters");
    let recount: (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'going'),
                COALESCE(sum(guests) FILTER (WHERE status = 'going'), 0),
                count(*) FILTER (WHERE status = 'waitlisted'),
                count(*) FILTER (WHERE status = 'pending'),
                count(*) FILTER (WHERE status = 'declined'),
                count(*) FILTER (WHERE status = 'interested')
         FROM event_rsvps WHERE event_id = $1::uuid",
    )
    .bind(event)
    .fetch_one(db)
    .await
    .expect("recount");
    let stored = (
        i64::from(stored.0),
        i64::from(stored.1),
        i64::from(stored.2),
        i64::from(stored.3),
        i64::from(stored.4),
        i64::from(stored.5),
    );
    assert_eq!(stored, recount, "event_counters differ from a recount");
}

async fn sleep_until(t: DateTime<Utc>) {
    let left = t - Utc::now();
    if let Ok(d) = left.to_std() {
        tokio::time::sleep(d).await;
    }
}

/// `rsvp.set` and `rsvp.clear` are refused just before the window opens
/// and from the moment it closes, and taken inside it.
#[tokio::test]
async fn the_rsvp_window_is_kept_at_its_edges() {
    let s = Setup::start().await;
    // Margins of a second before each edge: a request admitted late on a
    // loaded machine still lands on the side it was sent for.
    let opens = Utc::now() + chrono::Duration::milliseconds(2_500);
    let closes = opens + chrono::Duration::milliseconds(2_500);
    let event = s
        .create(json!({"rsvpOpensAt": iso(opens), "rsvpClosesAt": iso(closes)}))
        .await;
    let got = s
        .call("event.get", &s.organizer, json!({"id": event}))
        .await;
    assert_eq!(got.body["rsvpOpensAt"], json!(iso(opens)));
    assert_eq!(got.body["rsvpClosesAt"], json!(iso(closes)));
    let (a, b) = (s.user(), s.user());

    // Just before it opens.
    sleep_until(opens - chrono::Duration::milliseconds(1_000)).await;
    refused(
        &s.rsvp(&a, &event, "going", 0).await,
        409,
        "RSVP_CLOSED",
        "set before the window",
    );
    refused(
        &s.call("rsvp.clear", &a, json!({"eventId": event})).await,
        409,
        "RSVP_CLOSED",
        "clear before the window",
    );
    // Just after it opens.
    sleep_until(opens + chrono::Duration::milliseconds(100)).await;
    ok(&s.rsvp(&a, &event, "going", 0).await, "set in the window");
    ok(
        &s.rsvp(&b, &event, "interested", 0).await,
        "set in the window",
    );
    ok(
        &s.call("rsvp.clear", &b, json!({"eventId": event})).await,
        "clear in the window",
    );
    // Just before it closes.
    sleep_until(closes - chrono::Duration::milliseconds(1_000)).await;
    ok(
        &s.rsvp(&b, &event, "going", 0).await,
        "set just before it closes",
    );
    // Just after it closes.
    sleep_until(closes + chrono::Duration::milliseconds(100)).await;
    refused(
        &s.rsvp(&a, &event, "not_going", 0).await,
        409,
        "RSVP_CLOSED",
        "set after the window",
    );
    refused(
        &s.call("rsvp.clear", &b, json!({"eventId": event})).await,
        409,
        "RSVP_CLOSED",
        "clear after the window",
    );
    // Over HTTP as well.
    let reply = s
        .app
        .bff(
            "POST",
            &format!("{EVENTS}/{event}/rsvp"),
            &a,
            Some(json!({"status": "interested"})),
        )
        .await;
    assert_eq!(reply.status, 409, "{}", reply.text);
    assert_eq!(reply.json()["error"]["code"], "RSVP_CLOSED");
    let stored = parties(&s.app.db, &event).await;
    assert_eq!(stored.len(), 2);
    assert!(stored.values().all(|p| p.0 == "going"), "{stored:?}");
}

/// Hostile rules and RSVP bodies are answered 422 on the field at fault,
/// and nothing is written.
#[tokio::test]
async fn hostile_values_are_refused_with_nothing_written() {
    let s = Setup::start().await;
    let event = s.create(json!({"maxGuests": 2, "capacity": 10})).await;
    let before = footprint(&s.app.db).await;
    let creates = [
        (json!({"maxGuests": -1}), "maxGuests"),
        (json!({"maxGuests": 51}), "maxGuests"),
        (json!({"maxGuests": "2"}), "maxGuests"),
        (json!({"maxGuests": 1.5}), "maxGuests"),
        (json!({"rsvpApproval": "yes"}), "rsvpApproval"),
        (json!({"reminders": [0]}), "reminders"),
        (json!({"reminders": [-60]}), "reminders"),
        (json!({"reminders": [43_201]}), "reminders"),
        (json!({"reminders": [1, 2, 3, 4, 5, 6]}), "reminders"),
        (json!({"reminders": "60"}), "reminders"),
        (json!({"reminders": [60.5]}), "reminders"),
        (json!({"reminders": [[60]]}), "reminders"),
        (json!({"rsvpOpensAt": "soon"}), "rsvpOpensAt"),
        (
            json!({"rsvpOpensAt": "2030-01-09T10:00:00Z", "rsvpClosesAt": "2030-01-08T10:00:00Z"}),
            "rsvpOpensAt",
        ),
        (
            json!({"rsvpOpensAt": "2030-01-09T10:00:00Z", "rsvpClosesAt": "2030-01-09T10:00:00Z"}),
            "rsvpOpensAt",
        ),
        (
            json!({"rsvpClosesAt": "2030-01-10T12:00:00.001Z"}),
            "rsvpClosesAt",
        ),
        (
            json!({"rsvpOpensAt": "2030-01-10T12:00:00Z"}),
            "rsvpOpensAt",
        ),
    ];
    for (extra, field) in creates {
        let reply = s
            .call("event.create", &s.organizer, s.body(extra.clone()))
            .await;
        field_refused(&reply, field, &format!("create {extra}"));
        let mut update = extra.clone();
        update["id"] = json!(event);
        let reply = s.call("event.update", &s.organizer, update).await;
        field_refused(&reply, field, &format!("update {extra}"));
    }
    // An update that moves the end before the stored close.
    let closing = s
        .create(json!({"rsvpClosesAt": "2030-01-10T11:00:00Z"}))
        .await;
    let before = (before.0 + 1, before.1, before.2 + 1, before.3);
    let reply = s
        .call(
            "event.update",
            &s.organizer,
            json!({"id": closing, "endsAt": "2030-01-10T10:30:00Z"}),
        )
        .await;
    field_refused(&reply, "rsvpClosesAt", "end moved before the close");
    let who = s.user();
    let rsvps = [
        (json!({"status": "going", "guests": -1}), "guests"),
        (json!({"status": "going", "guests": 3}), "guests"),
        (json!({"status": "going", "guests": 51}), "guests"),
        (json!({"status": "going", "guests": "1"}), "guests"),
        (json!({"status": "going", "guests": 1e20}), "guests"),
        (json!({"status": "interested", "guests": 1}), "guests"),
        (json!({"status": "pending"}), "status"),
        (json!({"status": "declined"}), "status"),
    ];
    for (body, field) in rsvps {
        let mut body = body.clone();
        body["eventId"] = json!(event);
        let reply = s.call("rsvp.set", &who, body.clone()).await;
        field_refused(&reply, field, &format!("rsvp {body}"));
    }
    // Approvals name users properly.
    for (body, code) in [
        (json!({"userIds": []}), "VALIDATION_ERROR"),
        (json!({"userIds": ["nope"]}), "VALIDATION_ERROR"),
        (json!({"userIds": "x"}), "VALIDATION_ERROR"),
        (
            json!({"userIds": (0..501).map(|_| Uuid::new_v4().to_string()).collect::<Vec<_>>()}),
            "VALIDATION_ERROR",
        ),
        (json!({"userId": "nope"}), "INVALID_USER_ID"),
    ] {
        let mut body = body.clone();
        body["eventId"] = json!(event);
        let reply = s.call("rsvp.approve", &s.organizer, body).await;
        assert_eq!(reply.body["error"]["code"], code, "{:?}", reply.body);
    }
    assert_eq!(
        footprint(&s.app.db).await,
        before,
        "a refusal wrote something"
    );
}

/// A client on its own NATS connection.
async fn client_on_new_connection(prefix: &str) -> EventsClient {
    let nats = async_nats::connect(NATS_URL).await.expect("NATS connects");
    let mut client = EventsClient::new(nats, prefix, TEST_SECRET);
    client.timeout = Duration::from_secs(60);
    client
}

/// The longest prefix of `queue` (parties in order) that fits in `free`.
fn fitting_prefix(queue: &[(Uuid, i32)], mut free: i64) -> Vec<Uuid> {
    let mut out = Vec::new();
    for (user, guests) in queue {
        let party = i64::from(*guests) + 1;
        if party > free {
            break;
        }
        free -= party;
        out.push(*user);
    }
    out
}

/// The waitlist by place, with each party's guests.
fn queue_of(stored: &HashMap<Uuid, (String, i32, Option<i64>)>) -> Vec<(Uuid, i32)> {
    let mut q: Vec<(i64, Uuid, i32)> = stored
        .iter()
        .filter(|(_, p)| p.0 == "waitlisted")
        .map(|(u, p)| (p.2.unwrap_or(i64::MAX), *u, p.1))
        .collect();
    q.sort();
    q.into_iter().map(|(_, u, g)| (u, g)).collect()
}

fn taken(stored: &HashMap<Uuid, (String, i32, Option<i64>)>) -> i64 {
    stored
        .values()
        .filter(|p| p.0 == "going")
        .map(|p| i64::from(p.1) + 1)
        .sum()
}

/// 500 parties of 1 to 4 ask for `going` at once through two instances:
/// the seats are never exceeded, each party is seated or waits whole, and
/// the head of the waitlist is the first that did not fit. When 40 going
/// parties leave at once, exactly the longest prefix of the queue that the
/// freed seats hold is seated, in order.
#[tokio::test]
async fn guests_under_a_burst_on_two_instances_keep_seats_fifo_and_parties_whole() {
    let _serial = BURSTS.lock().await;
    let s = Setup::start().await;
    let second = s.app.spawn_sibling(|_| {}).await;
    let clients = [
        client_on_new_connection(&s.app.isolation.prefix).await,
        client_on_new_connection(&second.isolation.prefix).await,
    ];
    let capacity = 120;
    let event = s
        .create(json!({"capacity": capacity, "maxGuests": 3}))
        .await;
    let users: Vec<(Uuid, u32)> = (0..500u32).map(|i| (Uuid::new_v4(), i % 4)).collect();
    let started = Instant::now();
    let calls = users.iter().enumerate().map(|(i, (user, guests))| {
        let client = &clients[i % 2];
        let who = identity(s.tenant, *user);
        let body = json!({"eventId": event, "status": "going", "guests": guests});
        async move { client.call("rsvp.set", &who, &body).await }
    });
    let replies = join_all(calls).await;
    eprintln!("500 parties through two instances: {:?}", started.elapsed());
    for ((user, guests), reply) in users.iter().zip(&replies) {
        let reply = reply
            .as_ref()
            .unwrap_or_else(|e| panic!("{user}: no reply: {e}"));
        ok(reply, "burst");
        assert_eq!(reply.body["myGuests"], json!(guests));
    }
    let stored = parties(&s.app.db, &event).await;
    assert_eq!(stored.len(), 500);
    for (user, guests) in &users {
        let (status, stored_guests, _) = &stored[user];
        assert!(status == "going" || status == "waitlisted", "{status}");
        assert_eq!(
            i64::from(*stored_guests),
            i64::from(*guests),
            "a party was split"
        );
    }
    let seated = taken(&stored);
    assert!(seated <= capacity, "{seated} seats taken of {capacity}");
    let queue = queue_of(&stored);
    assert!(!queue.is_empty());
    assert!(
        i64::from(queue[0].1) + 1 > capacity - seated,
        "the head ({} guests) waits with {} seats free",
        queue[0].1,
        capacity - seated
    );
    assert_counters_match(&s.app.db, &event).await;
    let got = s
        .call("event.get", &s.organizer, json!({"id": event}))
        .await;
    assert_eq!(
        got.body["seats"],
        json!({"capacity": capacity, "taken": seated, "available": capacity - seated})
    );

    // 40 going parties leave at once.
    let leavers: Vec<Uuid> = users
        .iter()
        .map(|u| u.0)
        .filter(|u| stored[u].0 == "going")
        .take(40)
        .collect();
    let freed: i64 = leavers.iter().map(|u| i64::from(stored[u].1) + 1).sum();
    let expected = fitting_prefix(&queue, capacity - seated + freed);
    let calls = leavers.iter().enumerate().map(|(i, user)| {
        let client = &clients[i % 2];
        let who = identity(s.tenant, *user);
        let body = json!({"eventId": event});
        async move { client.call("rsvp.clear", &who, &body).await }
    });
    for reply in join_all(calls).await {
        ok(&reply.expect("clear reply"), "clear");
    }
    let after = parties(&s.app.db, &event).await;
    let promoted: Vec<Uuid> = queue
        .iter()
        .map(|q| q.0)
        .filter(|u| after[u].0 == "going")
        .collect();
    assert_eq!(promoted, expected, "promotions were not the queue's prefix");
    assert!(taken(&after) <= capacity);
    let rest = queue_of(&after);
    if let Some(head) = rest.first() {
        assert!(i64::from(head.1) + 1 > capacity - taken(&after));
    }
    assert_counters_match(&s.app.db, &event).await;
    // The stream's data carries the guests.
    let promotions: Vec<(Value,)> = sqlx::query_as(
        "SELECT payload FROM outbox WHERE event_id = $1::uuid AND payload->>'reason' = 'promoted'",
    )
    .bind(&event)
    .fetch_all(&s.app.db)
    .await
    .expect("promotions");
    assert_eq!(promotions.len(), expected.len());
    for (payload,) in promotions {
        let user: Uuid = payload["user_id"]
            .as_str()
            .and_then(|u| u.parse().ok())
            .expect("user");
        assert_eq!(payload["guests"], json!(after[&user].1));
    }
}

/// With approval on, `going` waits as `pending` until a manager answers:
/// approved into a free seat, approved onto the waitlist when the party
/// does not fit, declined (its seats going to the waitlist), and approved
/// in bulk in one transaction.
#[tokio::test]
async fn approval_flows_through_nats_and_http() {
    let s = Setup::start().await;
    let event = s
        .create(json!({"capacity": 2, "maxGuests": 1, "rsvpApproval": true}))
        .await;
    let (a, b) = (s.user(), s.user());
    let reply = s.rsvp(&a, &event, "going", 0).await;
    ok(&reply, "a asks");
    assert_eq!(reply.body["myRsvp"], "pending");
    assert_eq!(reply.body["rsvpCounts"]["pending"], 1);
    let got = s.call("event.get", &a, json!({"id": event})).await;
    assert_eq!(got.body["myRsvp"], "pending");
    assert_eq!(got.body["rsvpApproval"], true);
    assert_eq!(got.body["seats"]["taken"], 0);

    // Only a manager answers.
    let reply = s
        .app
        .bff(
            "POST",
            &format!("{EVENTS}/{event}/rsvps/{}/approve", a.user_id),
            &b,
            None,
        )
        .await;
    assert_eq!(reply.status, 403, "{}", reply.text);
    let reply = s
        .app
        .bff(
            "POST",
            &format!("{EVENTS}/{event}/rsvps/{}/approve", a.user_id),
            &s.organizer,
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["results"][0]["status"], "going");
    // b brings a guest: one seat is free, the party of two waits.
    ok(&s.rsvp(&b, &event, "going", 1).await, "b asks");
    let reply = s
        .call(
            "rsvp.approve",
            &s.organizer,
            json!({"eventId": event, "userId": b.user_id}),
        )
        .await;
    ok(&reply, "approve b");
    assert_eq!(reply.body["results"][0]["status"], "waitlisted");
    assert_eq!(
        reply.body["seats"],
        json!({"capacity": 2, "taken": 1, "available": 1})
    );
    // Declining a frees their seat: b's party fits and is seated.
    let reply = s
        .app
        .bff(
            "POST",
            &format!("{EVENTS}/{event}/rsvps/{}/decline", a.user_id),
            &s.organizer,
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let got = s.call("event.get", &a, json!({"id": event})).await;
    assert_eq!(got.body["myRsvp"], "declined");
    assert_eq!(got.body["rsvpCounts"]["declined"], 1);
    // Asking again leaves a declined RSVP declined.
    let again = s.rsvp(&a, &event, "going", 0).await;
    assert_eq!(again.body["myRsvp"], "declined");
    let got = s.call("event.get", &b, json!({"id": event})).await;
    assert_eq!(
        (got.body["myRsvp"].as_str(), got.body["myGuests"].as_i64()),
        (Some("going"), Some(1))
    );

    // Bulk: three pending users approved at once, onto the waitlist.
    let many: Vec<Identity> = (0..3).map(|_| s.user()).collect();
    for who in &many {
        ok(&s.rsvp(who, &event, "going", 0).await, "pending");
    }
    let ids: Vec<String> = many.iter().map(|w| w.user_id.clone()).collect();
    let reply = s
        .app
        .bff(
            "POST",
            &format!("{EVENTS}/{event}/rsvps/approve"),
            &s.organizer,
            Some(json!({"userIds": ids})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let results = reply.json()["results"].clone();
    assert_eq!(results.as_array().map(Vec::len), Some(3));
    for r in results.as_array().into_iter().flatten() {
        assert_eq!(r["status"], "waitlisted");
        assert_eq!(r["changed"], true);
    }
    let stored = parties(&s.app.db, &event).await;
    let order: Vec<Uuid> = queue_of(&stored).into_iter().map(|q| q.0).collect();
    let asked: Vec<Uuid> = ids.iter().filter_map(|i| i.parse().ok()).collect();
    assert_eq!(order, asked, "bulk approval kept the order given");
    let txs: Vec<(String, String)> = sqlx::query_as(
        "SELECT payload->>'reason', tx_id::text FROM outbox
         WHERE event_id = $1::uuid AND payload->>'reason' IN ('approved', 'declined') ORDER BY seq",
    )
    .bind(&event)
    .fetch_all(&s.app.db)
    .await
    .expect("outbox");
    let reasons: Vec<&str> = txs.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "approved", "approved", "declined", "approved", "approved", "approved"
        ]
    );
    let bulk: HashSet<&str> = txs[3..].iter().map(|t| t.1.as_str()).collect();
    assert_eq!(
        bulk.len(),
        1,
        "the bulk approval took more than one transaction"
    );
    let actors: Vec<(String,)> = sqlx::query_as(
        "SELECT payload->>'actor_user_id' FROM outbox
         WHERE event_id = $1::uuid AND payload->>'reason' = 'approved'",
    )
    .bind(&event)
    .fetch_all(&s.app.db)
    .await
    .expect("actors");
    assert!(actors.iter().all(|a| a.0 == s.organizer.user_id));
    assert_counters_match(&s.app.db, &event).await;
}

/// `(event, user, minutes_before)` of every committed reminder.
async fn reminders_sent(db: &PgPool) -> Vec<(String, String, i64)> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT payload->>'event_id', payload->>'user_id', (payload->>'minutes_before')::bigint
         FROM outbox WHERE event_type = 'event.reminder.due' ORDER BY 1, 2, 3",
    )
    .fetch_all(db)
    .await
    .expect("reminders");
    rows
}

async fn wait_for_reminders(db: &PgPool, n: usize) -> Vec<(String, String, i64)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sent = reminders_sent(db).await;
        if sent.len() >= n || Instant::now() > deadline {
            return sent;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn shifted(offset: &str) -> impl FnOnce(&mut updspace_events::config::Settings) {
    let offset = offset.to_string();
    move |s| {
        s.clock_offset = Some(offset);
        s.reminder_poll = Some("50ms".into());
    }
}

/// Two going users and two offsets make four reminders, each committed
/// once, by two instances whose clock is past them, through a restart;
/// a user who stopped going and one who never went get none.
#[tokio::test]
async fn reminders_are_committed_once_per_going_user_and_offset() {
    let mut s =
        Setup::new(TestApp::spawn_with(|s| s.reminder_poll = Some("50ms".into())).await).await;
    let starts = Utc::now() + chrono::Duration::hours(3);
    let event = s
        .create(json!({
            "startsAt": iso(starts), "endsAt": iso(starts + chrono::Duration::hours(2)),
            "reminders": [60, 120],
        }))
        .await;
    // The service's own pool closes with it.
    let db = PgPool::connect(&s.app.isolation.database_url())
        .await
        .expect("a pool of the test");
    let (a, b, c, d) = (s.user(), s.user(), s.user(), s.user());
    ok(&s.rsvp(&a, &event, "going", 0).await, "a");
    ok(&s.rsvp(&b, &event, "going", 0).await, "b");
    ok(&s.rsvp(&c, &event, "going", 0).await, "c");
    ok(&s.rsvp(&c, &event, "not_going", 0).await, "c leaves");
    ok(&s.rsvp(&d, &event, "interested", 0).await, "d");
    let scheduled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM event_reminders WHERE event_id = $1::uuid")
            .bind(&event)
            .fetch_one(&db)
            .await
            .expect("scheduled");
    assert_eq!(scheduled, 4);
    // Nothing is due yet by the real clock.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(reminders_sent(&db).await.is_empty());

    // Two instances whose clock is past the first offset only.
    s.app.stop().await;
    let x = s.app.spawn_sibling(shifted("61m")).await;
    let y = s.app.spawn_sibling(shifted("61m")).await;
    let sent = wait_for_reminders(&db, 2).await;
    let mut expected = vec![
        (event.clone(), a.user_id.clone(), 120),
        (event.clone(), b.user_id.clone(), 120),
    ];
    expected.sort();
    assert_eq!(sent, expected);
    // Restarted, past both offsets: the second ones, and the first not again.
    drop(x);
    drop(y);
    let z = s.app.spawn_sibling(shifted("125m")).await;
    let w = s.app.spawn_sibling(shifted("125m")).await;
    let sent = wait_for_reminders(&db, 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = reminders_sent(&db).await;
    assert_eq!(sent, again, "a reminder was committed twice");
    let mut expected = vec![
        (event.clone(), a.user_id.clone(), 60),
        (event.clone(), a.user_id.clone(), 120),
        (event.clone(), b.user_id.clone(), 60),
        (event.clone(), b.user_id.clone(), 120),
    ];
    expected.sort();
    assert_eq!(again, expected);
    let payload: Value = sqlx::query_scalar(
        "SELECT payload FROM outbox WHERE event_type = 'event.reminder.due' LIMIT 1",
    )
    .fetch_one(&db)
    .await
    .expect("payload");
    assert_eq!(payload["tenant_id"], json!(s.tenant.to_string()));
    assert_eq!(
        payload["starts_at"],
        json!(iso(starts).replace(".000Z", "Z"))
    );
    drop((z, w));
}

/// A moved event's reminders follow its new start; a cancelled event's
/// are never sent.
#[tokio::test]
async fn a_moved_event_is_rescheduled_and_a_cancelled_one_reminds_no_one() {
    let mut s =
        Setup::new(TestApp::spawn_with(|s| s.reminder_poll = Some("50ms".into())).await).await;
    let starts = Utc::now() + chrono::Duration::hours(2);
    let times = json!({
        "startsAt": iso(starts), "endsAt": iso(starts + chrono::Duration::hours(1)),
        "reminders": [60],
    });
    let db = PgPool::connect(&s.app.isolation.database_url())
        .await
        .expect("a pool of the test");
    let moved = s.create(times.clone()).await;
    let cancelled = s.create(times).await;
    let a = s.user();
    ok(&s.rsvp(&a, &moved, "going", 0).await, "a on moved");
    ok(&s.rsvp(&a, &cancelled, "going", 0).await, "a on cancelled");
    let later = starts + chrono::Duration::hours(3);
    let reply = s
        .call(
            "event.update",
            &s.organizer,
            json!({"id": moved, "startsAt": iso(later), "endsAt": iso(later + chrono::Duration::hours(1))}),
        )
        .await;
    ok(&reply, "move");
    let reply = s
        .call("event.cancel", &s.organizer, json!({"id": cancelled}))
        .await;
    ok(&reply, "cancel");
    s.app.stop().await;

    // Past the old time: nothing.
    let x = s.app.spawn_sibling(shifted("70m")).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(reminders_sent(&db).await, Vec::new());
    drop(x);
    // Past the new time: the moved event's, once.
    let y = s.app.spawn_sibling(shifted("245m")).await;
    let sent = wait_for_reminders(&db, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sent, vec![(moved.clone(), a.user_id.clone(), 60)]);
    assert_eq!(reminders_sent(&db).await, sent);
    let payload: Value =
        sqlx::query_scalar("SELECT payload FROM outbox WHERE event_type = 'event.reminder.due'")
            .fetch_one(&db)
            .await
            .expect("payload");
    assert_eq!(
        payload["starts_at"],
        json!(iso(later).replace(".000Z", "Z"))
    );
    drop(y);
}

/// `event.stats` says what the listings show.
#[tokio::test]
async fn stats_equal_what_the_listings_show() {
    let s = Setup::start().await;
    let event = s.create(json!({"capacity": 4, "maxGuests": 2})).await;
    let (a, b, c, d, e) = (s.user(), s.user(), s.user(), s.user(), s.user());
    ok(&s.rsvp(&a, &event, "going", 2).await, "a");
    ok(&s.rsvp(&b, &event, "going", 0).await, "b");
    ok(&s.rsvp(&c, &event, "going", 1).await, "c waits");
    ok(&s.rsvp(&d, &event, "interested", 0).await, "d");
    ok(&s.rsvp(&e, &event, "not_going", 0).await, "e");
    ok(
        &s.call(
            "attendance.mark",
            &s.organizer,
            json!({"eventId": event, "userId": a.user_id}),
        )
        .await,
        "mark",
    );
    let stats = s
        .call("event.stats", &s.organizer, json!({"id": event}))
        .await;
    ok(&stats, "stats");
    let stats = stats.body;
    let total = |status: Option<&str>| {
        let mut body = json!({"eventId": event});
        if let Some(status) = status {
            body["status"] = json!(status);
        }
        body
    };
    for status in [
        "going",
        "waitlisted",
        "interested",
        "not_going",
        "pending",
        "declined",
    ] {
        let page = s.call("rsvp.list", &s.organizer, total(Some(status))).await;
        ok(&page, "rsvp.list");
        assert_eq!(
            stats["rsvpCounts"][status], page.body["meta"]["total"],
            "{status}: {stats}"
        );
    }
    let waitlist = s
        .call("rsvp.list", &s.organizer, total(Some("waitlisted")))
        .await;
    assert_eq!(stats["waitlistLength"], waitlist.body["meta"]["total"]);
    let going = s
        .call("rsvp.list", &s.organizer, total(Some("going")))
        .await;
    let taken: i64 = going.body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i["guests"].as_i64().unwrap_or(0) + 1)
        .sum();
    assert_eq!(
        stats["seats"],
        json!({"capacity": 4, "taken": taken, "available": 4 - taken})
    );
    let attendance = s.call("attendance.list", &s.organizer, total(None)).await;
    assert_eq!(stats["attended"], attendance.body["meta"]["total"]);
    assert_eq!(stats["attended"], 1);
    assert_eq!(stats["attendanceRate"], json!(0.5));
    assert_eq!(stats["eventId"], json!(event));
    // Managers only, over HTTP too.
    let denied = s.call("event.stats", &a, json!({"id": event})).await;
    assert_eq!(denied.status, 403);
    let http = s
        .app
        .bff(
            "GET",
            &format!("{EVENTS}/{event}/stats"),
            &s.organizer,
            None,
        )
        .await;
    assert_eq!(http.status, 200, "{}", http.text);
    assert_eq!(http.json(), stats);
    // Nobody going: the rate is 0.
    let empty = s.create(json!({})).await;
    let stats = s
        .call("event.stats", &s.organizer, json!({"id": empty}))
        .await;
    assert_eq!(stats.body["attendanceRate"], json!(0.0));
    assert_eq!(stats.body["seats"]["available"], Value::Null);
}

/// Python's `csv` module reads `text` back as rows.
fn python_rows(text: &str) -> Vec<Vec<String>> {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import csv, json, sys; print(json.dumps(list(csv.reader(sys.stdin, strict=True))))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 cannot run ({e})"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python3 ran");
    assert!(out.status.success(), "python3 failed");
    serde_json::from_slice(&out.stdout).expect("python3 printed rows")
}

/// The exports are RFC 4180 with a header, hold every row (more than one
/// page of them) in the listings' order, and are for managers only.
#[tokio::test]
async fn csv_exports_are_read_back_by_python() {
    let s = Setup::start().await;
    let event = s.create(json!({"capacity": 3, "maxGuests": 2})).await;
    let (a, b) = (s.user(), s.user());
    ok(&s.rsvp(&a, &event, "going", 2).await, "a");
    ok(&s.rsvp(&b, &event, "going", 1).await, "b waits");
    ok(
        &s.call(
            "attendance.mark",
            &s.organizer,
            json!({"eventId": event, "userId": a.user_id}),
        )
        .await,
        "mark",
    );
    // More rows than one page, written straight to the table.
    sqlx::query(
        "INSERT INTO event_rsvps (event_id, user_id, tenant_id, status, created_at, updated_at)
         SELECT $1::uuid, gen_random_uuid(), $2, 'interested', now() + make_interval(secs => i), now()
         FROM generate_series(1, 2345) AS i",
    )
    .bind(&event)
    .bind(s.tenant)
    .execute(&s.app.db)
    .await
    .expect("bulk rsvps");
    sqlx::query(
        "INSERT INTO event_attendance (event_id, user_id, tenant_id, marked_by, marked_at)
         SELECT $1::uuid, gen_random_uuid(), $2, $3, now() + make_interval(secs => i)
         FROM generate_series(1, 1500) AS i",
    )
    .bind(&event)
    .bind(s.tenant)
    .bind(Uuid::parse_str(&s.organizer.user_id).expect("uuid"))
    .execute(&s.app.db)
    .await
    .expect("bulk attendance");

    let reply = s
        .app
        .bff(
            "GET",
            &format!("{EVENTS}/{event}/rsvps.csv"),
            &s.organizer,
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let content_type = reply
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    assert!(reply.text.contains("\r\n"));
    let rows = python_rows(&reply.text);
    assert_eq!(
        rows[0],
        [
            "user_id",
            "status",
            "guests",
            "waitlist_position",
            "created_at",
            "updated_at"
        ]
    );
    assert_eq!(rows.len(), 1 + 2 + 2345);
    let stored: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT user_id::text, status::text, guests FROM event_rsvps WHERE event_id = $1::uuid
         ORDER BY created_at, user_id",
    )
    .bind(&event)
    .fetch_all(&s.app.db)
    .await
    .expect("stored");
    let exported: Vec<(String, String, i32)> = rows[1..]
        .iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].parse().unwrap_or(-1)))
        .collect();
    assert_eq!(exported, stored);
    let b_row = rows.iter().find(|r| r[0] == b.user_id).expect("b exported");
    assert_eq!((b_row[1].as_str(), b_row[3].as_str()), ("waitlisted", "1"));

    let reply = s
        .app
        .bff(
            "GET",
            &format!("{EVENTS}/{event}/attendance.csv"),
            &s.organizer,
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let rows = python_rows(&reply.text);
    assert_eq!(rows[0], ["user_id", "marked_by", "marked_at"]);
    assert_eq!(rows.len(), 1 + 1 + 1500);
    assert_eq!(rows[1][0], a.user_id);
    let marked: HashSet<&String> = rows[1..].iter().map(|r| &r[0]).collect();
    assert_eq!(marked.len(), 1501);

    // Not for a participant; not over NATS.
    let reply = s
        .app
        .bff("GET", &format!("{EVENTS}/{event}/rsvps.csv"), &a, None)
        .await;
    assert_eq!(reply.status, 403, "{}", reply.text);
    let reply = s
        .app
        .bff("GET", &format!("{EVENTS}/{event}/attendance.csv"), &a, None)
        .await;
    assert_eq!(reply.status, 403, "{}", reply.text);
    let nats = s
        .app
        .client()
        .call("rsvp.export", &s.organizer, &json!({"id": event}))
        .await;
    assert!(
        nats.as_ref().map_or(true, |r| r.status != 200),
        "an export over NATS: {:?}",
        nats.map(|r| r.body)
    );
}

/// `EVENTS_DEFAULT_REMINDERS` applies to events created without
/// `reminders`; `null` means none.
#[tokio::test]
async fn default_reminders_come_from_the_configuration() {
    let s =
        Setup::new(TestApp::spawn_with(|s| s.default_reminders = Some("60, 1440".into())).await)
            .await;
    let with_default = s.create(json!({})).await;
    let without = s.create(json!({"reminders": null})).await;
    let own = s.create(json!({"reminders": [15]})).await;
    for (id, expected) in [
        (with_default, json!([1440, 60])),
        (without, json!([])),
        (own, json!([15])),
    ] {
        let got = s.call("event.get", &s.organizer, json!({"id": id})).await;
        assert_eq!(got.body["reminders"], expected);
    }
}

/// A user's reminders are in their DSAR export, and an erase removes them.
#[tokio::test]
async fn dsar_exports_and_erases_reminders() {
    let s = Setup::start().await;
    let starts = Utc::now() + chrono::Duration::hours(3);
    let event = s
        .create(json!({
            "startsAt": iso(starts), "endsAt": iso(starts + chrono::Duration::hours(1)),
            "reminders": [60], "maxGuests": 2,
        }))
        .await;
    let a = s.user();
    ok(&s.rsvp(&a, &event, "going", 2).await, "a");
    let export = s
        .call("dsar.export", &a, json!({"userId": a.user_id}))
        .await;
    ok(&export, "export");
    assert_eq!(export.body["rsvps"][0]["guests"], 2);
    let reminders = export.body["reminders"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(reminders.len(), 1, "{}", export.body);
    assert_eq!(reminders[0]["event_id"], json!(event));
    assert_eq!(reminders[0]["minutes_before"], 60);
    assert_eq!(reminders[0]["sent_at"], Value::Null);
    ok(
        &s.call("dsar.erase", &a, json!({"userId": a.user_id})).await,
        "erase",
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM event_reminders WHERE user_id = $1")
        .bind(Uuid::parse_str(&a.user_id).expect("uuid"))
        .fetch_one(&s.app.db)
        .await
        .expect("count");
    assert_eq!(left, 0);
}

/// A seated party asking for more guests than there are free seats is
/// refused and keeps its seats; fewer guests give seats to the waitlist.
#[tokio::test]
async fn changing_guests_is_decided_under_the_lock() {
    let s = Setup::start().await;
    let event = s.create(json!({"capacity": 3, "maxGuests": 2})).await;
    let (a, b, c) = (s.user(), s.user(), s.user());
    ok(&s.rsvp(&a, &event, "going", 1).await, "a with one guest");
    ok(&s.rsvp(&b, &event, "going", 0).await, "b");
    let waiting = s.rsvp(&c, &event, "going", 0).await;
    assert_eq!(waiting.body["myRsvp"], "waitlisted");
    let more = s.rsvp(&a, &event, "going", 2).await;
    refused(&more, 409, "NOT_ENOUGH_SEATS", "a asks for a second guest");
    let stored = parties(&s.app.db, &event).await;
    let a_id: Uuid = a.user_id.parse().expect("uuid");
    assert_eq!((stored[&a_id].0.as_str(), stored[&a_id].1), ("going", 1));
    let fewer = s.rsvp(&a, &event, "going", 0).await;
    ok(&fewer, "a comes alone");
    assert_eq!(fewer.body["myGuests"], 0);
    assert_eq!(
        fewer.body["seats"],
        json!({"capacity": 3, "taken": 3, "available": 0})
    );
    let got = s.call("event.get", &c, json!({"id": event})).await;
    assert_eq!(
        got.body["myRsvp"], "going",
        "the seat a gave back went to c"
    );
    assert_counters_match(&s.app.db, &event).await;
}
