//! The Activity bridge against a real HTTP server that verifies the v1
//! signature over `/api/v1/events/ingest` and records every call: each
//! domain event reaches Activity once, in commit order, with the feed's
//! mapping; 5xx and silence are tried again, a 4xx never; several instances
//! deliver once in total; a restart loses nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use updspace_events::client::Identity;
use uuid::Uuid;

use crate::helpers::{
    FakeAuthority, RecordedCall, TEST_SECRET, TestApp, admin, events_svc, identity,
};

const INGEST: &str = "/api/v1/events/ingest";

fn body_of(call: &RecordedCall) -> Value {
    serde_json::from_slice(&call.body).unwrap_or(Value::Null)
}

/// The calls Activity answered with 2xx, in the order they came.
fn delivered(activity: &FakeAuthority, ok: &dyn Fn(&RecordedCall) -> bool) -> Vec<Value> {
    activity
        .calls()
        .iter()
        .filter(|c| ok(c))
        .map(body_of)
        .collect()
}

/// The outbox's event ids (CloudEvent ids), in commit order.
async fn outbox_ids(app: &TestApp) -> Vec<String> {
    let rows: Vec<(Uuid,)> = sqlx::query_as("SELECT id FROM outbox ORDER BY seq")
        .fetch_all(&app.db)
        .await
        .expect("outbox rows");
    rows.into_iter().map(|r| r.0.to_string()).collect()
}

async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    for _ in 0..400 {
        if let Some(v) = check() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 20 s");
}

async fn call(app: &TestApp, op: &str, who: &Identity, body: Value) -> Value {
    let reply = app
        .client()
        .call(op, who, &body)
        .await
        .unwrap_or_else(|e| panic!("{op}: {e}"));
    assert_eq!(reply.status, 200, "{op}: {:?}", reply.body);
    reply.body
}

fn event(tenant: Uuid, scope: (&str, &str), visibility: &str, title: &str) -> Value {
    let scope_id = if scope.0 == "TENANT" {
        tenant.to_string()
    } else {
        scope.1.to_string()
    };
    json!({"scopeType": scope.0, "scopeId": scope_id, "title": title, "visibility": visibility,
           "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z"})
}

fn bridged(activity: &FakeAuthority) -> impl FnOnce(&mut updspace_events::config::Settings) {
    let url = activity.base_url("/api/v1");
    move |s| {
        s.activity_service_url = Some(url);
        s.activity_retry_max = Some("50ms".into());
    }
}

#[tokio::test]
async fn every_domain_event_reaches_activity_once_in_order_through_5xx_bursts() {
    // The first three calls and every fifth after them fail with 503; the
    // server notes what it answered to which event.
    let calls = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(std::sync::Mutex::new(Vec::<(String, bool)>::new()));
    let (counter, noted) = (calls.clone(), answers.clone());
    let activity = FakeAuthority::start(TEST_SECRET, move |call| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let ok = !(n < 3 || n % 5 == 0);
        let id = body_of(call)["event_id"].as_str().unwrap_or("").to_string();
        noted.lock().expect("lock").push((id, ok));
        if ok {
            (
                StatusCode::OK,
                json!({"ok": true, "activity_created": true}),
            )
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": {"code": "UNAVAILABLE"}}),
            )
        }
    })
    .await;
    let app = TestApp::spawn_with(bridged(&activity)).await;
    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    let member_id = Uuid::new_v4();
    let member = identity(tenant, member_id);
    app.join(tenant, member_id, "COMMUNITY", "c-1").await;

    let id_of = |v: Value| v["id"].as_str().expect("id").to_string();
    let public = id_of(
        call(
            &app,
            "event.create",
            &boss,
            event(tenant, ("TENANT", ""), "public", "Open night"),
        )
        .await,
    );
    let community = id_of(
        call(
            &app,
            "event.create",
            &boss,
            event(tenant, ("COMMUNITY", "c-1"), "community", "Guild meet"),
        )
        .await,
    );
    call(
        &app,
        "rsvp.set",
        &member,
        json!({"eventId": public, "status": "going"}),
    )
    .await;
    call(
        &app,
        "rsvp.set",
        &member,
        json!({"eventId": community, "status": "interested"}),
    )
    .await;
    call(
        &app,
        "attendance.mark",
        &boss,
        json!({"eventId": public, "userId": member_id.to_string()}),
    )
    .await;
    call(
        &app,
        "event.update",
        &boss,
        json!({"id": community, "title": "Guild meet (moved)"}),
    )
    .await;
    call(&app, "event.cancel", &boss, json!({"id": public})).await;

    let expected = outbox_ids(&app).await;
    assert_eq!(expected.len(), 7, "one domain event per change");
    let answered = wait_for("every event delivered", || {
        let answered = answers.lock().expect("lock").clone();
        (answered.iter().filter(|a| a.1).count() >= expected.len()).then_some(answered)
    })
    .await;
    let successes: Vec<String> = answered
        .iter()
        .filter(|a| a.1)
        .map(|a| a.0.clone())
        .collect();
    assert_eq!(successes, expected, "each event once, in commit order");
    // A failed event is tried again before anything after it.
    for (i, (id, ok)) in answered.iter().enumerate() {
        if !ok {
            assert_eq!(answered.get(i + 1).map(|a| &a.0), Some(id), "{answered:?}");
        }
    }
    assert!(answered.iter().filter(|a| !a.1).count() >= 3);
    assert!(
        app.state
            .metrics
            .activity_delivered
            .with_label_values(&["retried"])
            .get()
            >= 3
    );
    let ok_bodies: Vec<Value> = activity
        .calls()
        .iter()
        .filter(|c| c.signature_valid && c.path == INGEST)
        .map(body_of)
        .collect();

    // The mapping, per type.
    let by_id: HashMap<String, Value> = ok_bodies
        .iter()
        .map(|b| (b["event_id"].as_str().unwrap_or("").to_string(), b.clone()))
        .collect();
    let calls = activity.calls();
    for id in &expected {
        let body = &by_id[id];
        let payload = &body["payload"];
        assert_eq!(body["source"], json!("events"));
        assert_eq!(body["tenant_id"], json!(tenant.to_string()));
        assert_eq!(payload["source_ref"], json!(format!("events:{id}")));
        assert_eq!(payload["data"]["tenant_slug"], json!("acme"));
        let subject = payload["data"]["event_id"].as_str().expect("data.event_id");
        let (visibility, title) = if subject == public {
            ("public", "Open night")
        } else {
            ("private", "")
        };
        assert_eq!(payload["visibility"], json!(visibility), "{body}");
        if subject == public {
            assert_eq!(payload["title"], json!(title), "{body}");
        } else {
            assert!(
                payload["title"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("Guild meet")),
                "{body}"
            );
        }
        let target = match body["event_type"].as_str() {
            Some("event.rsvp.changed" | "event.attendance.marked") => json!(member_id.to_string()),
            _ => Value::Null,
        };
        assert_eq!(payload["target_user_id"], target, "{body}");
        let call = calls
            .iter()
            .find(|c| body_of(c)["event_id"] == json!(id))
            .expect("its call");
        assert_eq!(call.headers.get("x-request-id"), Some(id));
        assert_eq!(call.headers.get("x-tenant-id"), Some(&tenant.to_string()));
        assert_eq!(
            call.headers.get("x-tenant-slug").map(String::as_str),
            Some("acme")
        );
    }
    let actors: Vec<Value> = expected
        .iter()
        .map(|id| by_id[id]["payload"]["actor_user_id"].clone())
        .collect();
    assert!(
        actors.contains(&json!(member_id.to_string())),
        "RSVPs are the member's"
    );
    assert!(
        calls.iter().all(|c| c.signature_valid),
        "every call is signed"
    );
}

#[tokio::test]
async fn an_event_activity_refuses_is_not_sent_again_and_the_next_ones_go_on() {
    let activity = FakeAuthority::start(TEST_SECRET, |call| {
        if body_of(call)["payload"]["title"] == json!("Refused") {
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": {"code": "VALIDATION_ERROR"}}),
            )
        } else {
            (StatusCode::OK, json!({"ok": true}))
        }
    })
    .await;
    let app = TestApp::spawn_with(bridged(&activity)).await;
    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    call(
        &app,
        "event.create",
        &boss,
        event(tenant, ("TENANT", ""), "public", "Refused"),
    )
    .await;
    call(
        &app,
        "event.create",
        &boss,
        event(tenant, ("TENANT", ""), "public", "Accepted"),
    )
    .await;
    wait_for("the next event delivered", || {
        delivered(&activity, &|c| c.signature_valid)
            .iter()
            .any(|b| b["payload"]["title"] == json!("Accepted"))
            .then_some(())
    })
    .await;
    let refused = activity
        .calls()
        .iter()
        .filter(|c| body_of(c)["payload"]["title"] == json!("Refused"))
        .count();
    assert_eq!(refused, 1, "a 4xx is not retried");
    assert_eq!(
        app.state
            .metrics
            .activity_delivered
            .with_label_values(&["rejected"])
            .get(),
        1
    );
}

#[tokio::test]
async fn two_instances_deliver_each_event_once_in_total() {
    let activity =
        FakeAuthority::start(TEST_SECRET, |_| (StatusCode::OK, json!({"ok": true}))).await;
    let a = TestApp::spawn_with(bridged(&activity)).await;
    let b = a.spawn_sibling(bridged(&activity)).await;
    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    for i in 0..10 {
        let app = if i % 2 == 0 { &a } else { &b };
        call(
            app,
            "event.create",
            &boss,
            event(tenant, ("TENANT", ""), "public", &format!("E{i}")),
        )
        .await;
    }
    let expected = outbox_ids(&a).await;
    let ids = wait_for("all delivered", || {
        let got: Vec<String> = delivered(&activity, &|c| c.signature_valid)
            .iter()
            .map(|b| b["event_id"].as_str().unwrap_or("").to_string())
            .collect();
        (got.len() >= expected.len()).then_some(got)
    })
    .await;
    assert_eq!(ids, expected, "once each, in commit order");
    let leaders = a.state.metrics.activity_leader.get() + b.state.metrics.activity_leader.get();
    assert_eq!(leaders, 1, "one instance delivers");
}

#[tokio::test]
async fn a_restart_while_activity_is_down_loses_nothing() {
    let down = Arc::new(AtomicBool::new(true));
    let flag = down.clone();
    let activity = FakeAuthority::start(TEST_SECRET, move |_| {
        if flag.load(Ordering::SeqCst) {
            (StatusCode::BAD_GATEWAY, json!({}))
        } else {
            (StatusCode::OK, json!({"ok": true}))
        }
    })
    .await;
    let mut first = TestApp::spawn_with(bridged(&activity)).await;
    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    for i in 0..5 {
        call(
            &first,
            "event.create",
            &boss,
            event(tenant, ("TENANT", ""), "public", &format!("E{i}")),
        )
        .await;
    }
    wait_for("a failed attempt", || {
        (!activity.calls().is_empty()).then_some(())
    })
    .await;
    first.stop().await;
    let tried = activity.calls().len();
    let second = first.spawn_sibling(bridged(&activity)).await;
    down.store(false, Ordering::SeqCst);
    let expected = outbox_ids(&second).await;
    let ok = |c: &RecordedCall| c.signature_valid;
    let ids = wait_for("all delivered after the restart", || {
        let calls = activity.calls();
        let got: Vec<String> = calls[tried.min(calls.len())..]
            .iter()
            .filter(|c| ok(c))
            .map(|c| body_of(c)["event_id"].as_str().unwrap_or("").to_string())
            .collect();
        (got.len() >= expected.len()).then_some(got)
    })
    .await;
    assert_eq!(
        ids, expected,
        "every event once, in order, after the restart"
    );

    // The console reports where the bridge stands.
    let out = events_svc()
        .args(["bridge", "status"])
        .env("NATS_URL", crate::helpers::NATS_URL)
        .env("EVENTS_STREAM", &second.isolation.stream)
        .output()
        .expect("events-svc runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("pending    0 event(s)"), "{text}");
    assert!(text.contains("caught up"), "{text}");
}

#[tokio::test]
async fn bridge_status_says_when_the_bridge_never_ran() {
    let app = TestApp::spawn().await;
    let out = events_svc()
        .args(["bridge", "status"])
        .env("NATS_URL", crate::helpers::NATS_URL)
        .env("EVENTS_STREAM", &app.isolation.stream)
        .output()
        .expect("events-svc runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no consumer activity-bridge"), "{err}");
    assert!(err.contains("ACTIVITY_SERVICE_URL"), "{err}");
}
