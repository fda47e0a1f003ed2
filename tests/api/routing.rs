//! RSVP writes routed to the instance that owns their scope
//! (`docs/scaling.md`, "Writes go to the scope's owner"): whichever instance
//! a write reaches, the owner's group commit applies it and the answer is
//! the one the owner gave; forwards nobody signed, stale ones and replayed
//! ones change nothing; an owner that has gone leaves its writes to the
//! instance they reached.
//!
//! The three-instance workload of `scaling.rs` runs with routing on too, so
//! every view and error envelope of a forwarded write is also compared
//! there with what a single instance answers.

use std::time::Duration;

use serde_json::{Value, json};
use updspace_events::actors::{ScopeKey, Shared};
use updspace_events::client::Identity;
use updspace_events::config::Settings;
use updspace_events::domain::{ScopeType, TenantId};
use uuid::Uuid;

use crate::helpers::{TEST_SECRET, TestApp, identity};
use crate::http_contract::{create, id_of, organizer};

fn shared(app: &TestApp) -> &std::sync::Arc<Shared> {
    app.state.app.registry().shared()
}

fn key(tenant: Uuid, scope: &str) -> ScopeKey {
    ScopeKey {
        tenant: TenantId::from_uuid(tenant),
        scope_type: ScopeType::Community,
        scope_id: scope.to_string(),
    }
}

/// Two instances of one deployment that have heard of each other.
async fn pair() -> (TestApp, TestApp) {
    pair_with(|_| {}).await
}

async fn pair_with(adjust: impl Fn(&mut Settings)) -> (TestApp, TestApp) {
    let a = TestApp::spawn_with(&adjust).await;
    let b = a.spawn_sibling(&adjust).await;
    until("the instances heard of each other", || {
        shared(&a).peers.knows(&shared(&b).instance) && shared(&b).peers.knows(&shared(&a).instance)
    })
    .await;
    (a, b)
}

/// Waits (at most 10 s) until `done`.
async fn until(what: &str, done: impl Fn() -> bool) {
    crate::outbox::eventually(Duration::from_secs(10), what, || {
        let done = done();
        async move { done.then_some(()) }
    })
    .await
}

/// A tenant with its organizer, a community scope of it that `b` owns, and
/// an event created in that scope through `a`.
struct TheirScope {
    tenant: Uuid,
    org: Identity,
    b_id: String,
    scope: String,
    event: String,
}

async fn scope_of_b(a: &TestApp, b: &TestApp, capacity: Option<u32>) -> TheirScope {
    let tenant = Uuid::new_v4();
    let org = organizer(a, tenant).await;
    let b_id = shared(b).instance.clone();
    let scope = scopes_owned(a, tenant, Some(&b_id), 1).remove(0);
    let event = event_in(a, &org, &scope, capacity).await;
    TheirScope {
        tenant,
        org,
        b_id,
        scope,
        event,
    }
}

/// The first community scopes `s0, s1, …` that `app` sees owned by
/// `owner` (`None`: by itself), `n` of them.
fn scopes_owned(app: &TestApp, tenant: Uuid, owner: Option<&str>, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("s{i}"))
        .filter(|s| shared(app).owner_of(&key(tenant, s)).as_deref() == owner)
        .take(n)
        .collect()
}

async fn event_in(app: &TestApp, org: &Identity, scope: &str, capacity: Option<u32>) -> String {
    let mut body = json!({
        "scopeType": "COMMUNITY", "scopeId": scope, "title": format!("In {scope}"),
        "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z",
    });
    if let Some(c) = capacity {
        body["capacity"] = json!(c);
    }
    id_of(&create(app, org, body).await)
}

async fn rsvp(
    app: &TestApp,
    who: &Identity,
    event: &str,
    status: &str,
) -> crate::helpers::HttpReply {
    app.bff(
        "POST",
        &format!("/api/v1/events/{event}/rsvp"),
        who,
        Some(json!({"status": status})),
    )
    .await
}

fn forwards(app: &TestApp, outcome: &str) -> u64 {
    shared(app)
        .metrics
        .write_forwards
        .with_label_values(&[outcome])
        .get()
}

fn batches(app: &TestApp) -> u64 {
    shared(app)
        .batches
        .load(std::sync::atomic::Ordering::Relaxed)
}

async fn statuses(app: &TestApp, event: &str) -> Vec<(Uuid, String)> {
    sqlx::query_as(
        "SELECT user_id, status::text FROM event_rsvps WHERE event_id = $1::uuid ORDER BY status::text, user_id",
    )
    .bind(event)
    .fetch_all(&app.db)
    .await
    .expect("rsvps")
}

#[tokio::test]
async fn an_rsvp_reaching_any_instance_is_decided_by_its_scopes_owner() {
    let (a, b) = pair().await;
    let tenant = Uuid::new_v4();
    let org = organizer(&a, tenant).await;
    let b_id = shared(&b).instance.clone();
    let theirs = scopes_owned(&a, tenant, Some(&b_id), 2);
    let ours = scopes_owned(&a, tenant, None, 1);
    // Both instances agree on who owns what.
    for s in &theirs {
        assert_eq!(shared(&b).owner_of(&key(tenant, s)), None, "{s}");
    }
    // One seat, in a scope `b` owns: two RSVPs sent to `a` are seated in
    // the order `b` decides them.
    let full = event_in(&a, &org, &theirs[0], Some(1)).await;
    let open = event_in(&a, &org, &theirs[1], None).await;
    let local = event_in(&a, &org, &ours[0], None).await;
    let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let (a_batches, b_batches) = (batches(&a), batches(&b));

    for (user, event) in [(ann, &full), (bob, &full), (ann, &open)] {
        let reply = rsvp(&a, &identity(tenant, user), event, "going").await;
        assert_eq!(reply.status, 204, "{}", reply.text);
    }
    assert_eq!(forwards(&a, "forwarded"), 3);
    assert_eq!(forwards(&b, "received"), 3);
    assert_eq!(
        batches(&a),
        a_batches,
        "the receiving instance committed nothing"
    );
    assert!(batches(&b) > b_batches, "the owner committed them");
    let mut seated = vec![(ann, "going".to_string()), (bob, "waitlisted".to_string())];
    seated.sort_by(|x, y| x.1.cmp(&y.1).then(x.0.cmp(&y.0)));
    assert_eq!(statuses(&a, &full).await, seated);

    // The answer is the owner's: the view of a NATS caller, through the
    // app layer of `a` (the queue group would pick any instance).
    let ctx = crate::outbox::ctx(tenant, bob, false);
    let reply = a
        .state
        .app
        .execute(
            &ctx,
            updspace_events::app::Op::RsvpSet,
            &json!({"eventId": open, "status": "interested"}),
            &updspace_events::app::CallMeta::default(),
        )
        .await
        .expect("rsvp.set through the owner");
    let view = reply.into_value();
    assert_eq!(view["status"], "interested", "{view}");
    assert_eq!(view["rsvpCounts"]["going"], 1, "{view}");
    assert_eq!(view["rsvpCounts"]["interested"], 1, "{view}");
    assert_eq!(view["seats"]["capacity"], Value::Null, "{view}");
    assert_eq!(forwards(&a, "forwarded"), 4);

    // A scope `a` owns stays on `a`.
    let reply = rsvp(&a, &identity(tenant, ann), &local, "going").await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    assert_eq!(forwards(&a, "forwarded"), 4);
    assert_eq!(forwards(&b, "received"), 4);

    // A refusal comes back as the owner gave it, the same envelope a local
    // refusal has.
    for event in [&full, &local] {
        let cancel = a
            .bff(
                "POST",
                &format!("/api/v1/events/{event}/cancel"),
                &org,
                Some(json!({})),
            )
            .await;
        assert_eq!(cancel.status, 200, "{}", cancel.text);
    }
    let carol = identity(tenant, Uuid::new_v4());
    let forwarded = rsvp(&a, &carol, &full, "going").await;
    let here = rsvp(&a, &carol, &local, "going").await;
    assert_eq!(forwarded.status, 409, "{}", forwarded.text);
    assert_eq!(forwarded.status, here.status);
    let (mut f, mut h) = (forwarded.json(), here.json());
    f["error"]["request_id"] = Value::Null;
    h["error"]["request_id"] = Value::Null;
    assert_eq!(f, h);
    assert_eq!(forwards(&a, "forwarded"), 5);
    assert_eq!(forwards(&a, "fallback"), 0);
}

/// A message of one forward as an instance sends it (the wire form of
/// `src/actors/forward.rs`), for `user` going to `event` in `scope`.
fn forward_body(tenant: Uuid, scope: &str, event: &str, user: Uuid, expires_in: i64) -> Vec<u8> {
    let now = chrono::Utc::now();
    let replay_key: Vec<u8> = Uuid::new_v4()
        .as_bytes()
        .iter()
        .chain(Uuid::new_v4().as_bytes())
        .copied()
        .collect();
    let forward = json!({
        "key": {"tenant": tenant.to_string(), "scope_type": "COMMUNITY", "scope_id": scope},
        "event_id": event,
        "requested": "going",
        "guests": 0,
        "meta": {
            "tenant": tenant.to_string(),
            "actor": user.to_string(),
            "request_id": Uuid::new_v4().to_string(),
            "traceparent": null, "tracestate": null, "tenant_slug": null,
            "replay_key": replay_key,
            "replay_expires_at": (now + chrono::Duration::seconds(expires_in)).to_rfc3339(),
            "now": now.to_rfc3339(),
        },
    });
    rmp_serde::to_vec_named(&json!([forward])).expect("encode")
}

fn sign(secret: &str, body: &[u8]) -> String {
    use sha2::Digest;
    let canonical = format!(
        "events-forward-v1\n{}",
        hex::encode(sha2::Sha256::digest(body))
    );
    updspace_events::auth::hmac::sign_canonical(secret, &canonical)
}

/// The error code of an owner's answer, or `None` when it applied the write.
async fn send_forward(
    app: &TestApp,
    to: &str,
    body: Vec<u8>,
    signature: Option<String>,
) -> Option<String> {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(s) = signature {
        headers.insert("Events-Forward-Signature", s.as_str());
    }
    let subject = format!("{}.internal.writes.{to}", app.isolation.prefix);
    let reply = app
        .nats
        .request_with_headers(subject, headers, body.into())
        .await
        .expect("the owner answers");
    let answer: Value = rmp_serde::from_slice(&reply.payload).expect("msgpack answer");
    fn code(v: &Value) -> Option<String> {
        match v {
            Value::Object(m) => m
                .get("code")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| m.values().find_map(code)),
            Value::Array(items) => items.iter().find_map(code),
            _ => None,
        }
    }
    code(&answer)
}

/// Many RSVPs at once for a scope another instance owns: they share
/// messages while earlier ones are in flight, and the owner still seats
/// them one by one against the capacity.
#[tokio::test]
async fn concurrent_rsvps_share_messages_to_their_owner_and_keep_the_capacity() {
    let (a, b) = pair().await;
    let TheirScope { tenant, event, .. } = scope_of_b(&a, &b, Some(10)).await;
    let people: Vec<Identity> = (0..60).map(|_| identity(tenant, Uuid::new_v4())).collect();
    let replies =
        futures::future::join_all(people.iter().map(|who| rsvp(&a, who, &event, "going"))).await;
    for reply in &replies {
        assert_eq!(reply.status, 204, "{}", reply.text);
    }
    assert_eq!(forwards(&a, "forwarded"), 60);
    assert_eq!(forwards(&b, "received"), 60);
    let messages = shared(&a).metrics.write_forward_messages.get();
    assert!(
        (1..=60).contains(&messages),
        "{messages} messages for 60 forwards"
    );
    let rows = statuses(&a, &event).await;
    let going = rows.iter().filter(|(_, s)| s == "going").count();
    let waitlisted = rows.iter().filter(|(_, s)| s == "waitlisted").count();
    assert_eq!((going, waitlisted), (10, 50));
}

#[tokio::test]
async fn forwards_not_signed_by_the_service_stale_or_replayed_change_nothing() {
    let (a, b) = pair().await;
    let TheirScope {
        tenant,
        b_id,
        scope,
        event,
        ..
    } = scope_of_b(&a, &b, None).await;
    let user = Uuid::new_v4();

    let fresh = forward_body(tenant, &scope, &event, user, 300);
    let expired = forward_body(tenant, &scope, &event, user, -1);
    let refused = [
        ("no signature", fresh.clone(), None),
        (
            "another secret",
            fresh.clone(),
            Some(sign("not-the-secret", &fresh)),
        ),
        (
            "signed, then changed",
            {
                let mut changed = fresh.clone();
                let last = changed.len() - 1;
                changed[last] ^= 1;
                changed
            },
            Some(sign(TEST_SECRET, &fresh)),
        ),
        (
            "signed garbage",
            b"\x93garbage".to_vec(),
            Some(sign(TEST_SECRET, b"\x93garbage")),
        ),
        (
            "expired",
            expired.clone(),
            Some(sign(TEST_SECRET, &expired)),
        ),
    ];
    let mut expected_refusals = 0;
    for (what, body, signature) in refused {
        let code = send_forward(&a, &b_id, body, signature).await;
        let want = if what == "signed garbage" {
            "INVALID_BODY"
        } else {
            "UNAUTHORIZED"
        };
        assert_eq!(code.as_deref(), Some(want), "{what}");
        expected_refusals += 1;
    }
    assert_eq!(forwards(&b, "refused"), expected_refusals);
    assert!(
        statuses(&a, &event).await.is_empty(),
        "a refused forward wrote an RSVP"
    );

    // Signed by the service: applied once, however often it is sent.
    let signature = sign(TEST_SECRET, &fresh);
    assert_eq!(
        send_forward(&a, &b_id, fresh.clone(), Some(signature.clone())).await,
        None
    );
    assert_eq!(
        send_forward(&a, &b_id, fresh, Some(signature))
            .await
            .as_deref(),
        Some("UNAUTHORIZED"),
        "a forward sent again is a replay"
    );
    assert_eq!(
        statuses(&a, &event).await,
        vec![(user, "going".to_string())]
    );
    let outbox: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'event.rsvp.changed'")
            .fetch_one(&a.db)
            .await
            .expect("outbox");
    assert_eq!(outbox, 1, "one RSVP, one domain event");
}

#[tokio::test]
async fn an_owner_that_has_gone_leaves_its_writes_where_they_arrive() {
    let (a, mut b) = pair().await;
    let TheirScope {
        tenant,
        org,
        b_id,
        event,
        ..
    } = scope_of_b(&a, &b, None).await;

    // An instance that stops says so: its scopes are the others' at once.
    b.stop().await;
    until("the farewell arrived", || !shared(&a).peers.knows(&b_id)).await;
    let reply = rsvp(&a, &identity(tenant, Uuid::new_v4()), &event, "going").await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    assert_eq!(
        (forwards(&a, "forwarded"), forwards(&a, "fallback")),
        (0, 0)
    );

    // One that vanished without a word (a crash, a lost network) answers
    // nothing: the write is applied where it arrived, and the instance is
    // forgotten until it is heard from again.
    let ghost = "0123456789abcdef0123456789abcdef";
    shared(&a).saw_peer(ghost);
    let haunted = scopes_owned(&a, tenant, Some(ghost), 1).remove(0);
    let event = event_in(&a, &org, &haunted, None).await;
    let user = Uuid::new_v4();
    let reply = rsvp(&a, &identity(tenant, user), &event, "going").await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    assert_eq!(forwards(&a, "fallback"), 1);
    assert!(!shared(&a).peers.knows(ghost));
    assert_eq!(shared(&a).owner_of(&key(tenant, &haunted)), None);
    assert_eq!(
        statuses(&a, &event).await,
        vec![(user, "going".to_string())]
    );
}

#[tokio::test]
async fn with_routing_off_every_instance_applies_its_own_writes() {
    let (a, b) = pair_with(|s| s.route_writes = Some("false".into())).await;
    let tenant = Uuid::new_v4();
    let org = organizer(&a, tenant).await;
    let scope = (0..)
        .map(|i| format!("s{i}"))
        .find(|s| shared(&a).peers.owner_of(&key(tenant, s)).is_some())
        .expect("some scope is b's");
    assert_eq!(shared(&a).owner_of(&key(tenant, &scope)), None);
    let event = event_in(&a, &org, &scope, None).await;
    let reply = rsvp(&a, &identity(tenant, Uuid::new_v4()), &event, "going").await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    assert_eq!(forwards(&a, "forwarded"), 0);
    assert_eq!(forwards(&b, "received"), 0);
}
