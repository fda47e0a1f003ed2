//! A first tour of the NATS operations.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, admin, identity};

#[tokio::test]
async fn create_get_rsvp_list_round_trip() {
    let app = TestApp::spawn().await;
    let client = app.client();
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
    let org = identity(tenant, organizer);

    let created = client
        .call(
            "event.create",
            &org,
            &json!({
                "scopeType": "TENANT", "scopeId": tenant.to_string(), "title": "Board games",
                "startsAt": "2030-01-10T10:00:00+03:00", "endsAt": "2030-01-10T12:00:00Z", "capacity": 1
            }),
        )
        .await
        .expect("reply");
    assert_eq!(created.status, 200, "{:?}", created.body);
    assert_eq!(created.body["startsAt"], "2030-01-10T07:00:00Z");
    let id = created.body["id"].as_str().expect("id").to_string();

    let alice = identity(tenant, Uuid::new_v4());
    let bob = identity(tenant, Uuid::new_v4());
    let a = client
        .call(
            "rsvp.set",
            &alice,
            &json!({"eventId": id, "status": "going"}),
        )
        .await
        .expect("reply");
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["status"], "going");
    let b = client
        .call("rsvp.set", &bob, &json!({"eventId": id, "status": "going"}))
        .await
        .expect("reply");
    assert_eq!(b.body["status"], "waitlisted");
    assert_eq!(
        b.body["rsvpCounts"],
        json!({"interested": 0, "going": 1, "not_going": 0, "waitlisted": 1, "pending": 0, "declined": 0})
    );

    // Alice leaves: Bob is promoted in the same transaction.
    let cleared = client
        .call("rsvp.clear", &alice, &json!({"eventId": id}))
        .await
        .expect("reply");
    assert_eq!(cleared.body["status"], serde_json::Value::Null);
    let got = client
        .call("event.get", &bob, &json!({"id": id}))
        .await
        .expect("reply");
    assert_eq!(got.body["myRsvp"], "going");
    assert_eq!(got.body["rsvpCounts"]["going"], 1);
    assert_eq!(got.body["rsvpCounts"]["waitlisted"], 0);

    let list = client
        .call("event.list", &alice, &json!({}))
        .await
        .expect("reply");
    assert_eq!(list.body["meta"]["total"], 1);

    let outbox: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT event_type, payload FROM outbox ORDER BY seq")
            .fetch_all(&app.db)
            .await
            .expect("outbox");
    let types: Vec<&str> = outbox.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "event.created",
            "event.rsvp.changed",
            "event.rsvp.changed",
            "event.rsvp.changed",
            "event.rsvp.changed"
        ]
    );
    assert_eq!(outbox[3].1["reason"], "cleared");
    assert_eq!(outbox[4].1["reason"], "promoted");

    let ics = client
        .call("event.ics", &admin(tenant), &json!({"id": id}))
        .await
        .expect("reply");
    assert_eq!(ics.status, 200);
    assert!(
        ics.body
            .as_str()
            .unwrap_or_default()
            .contains("SUMMARY:Board games")
    );
}

/// Finds this test's instance among every `events` service on the bus.
async fn own_instance_id(app: &TestApp) -> String {
    let subject_prefix = format!("{}.v1.", app.isolation.prefix);
    // Scatter-gather by hand: every instance answers INFO on the inbox.
    let inbox = app.nats.new_inbox();
    let mut answers = app.nats.subscribe(inbox.clone()).await.expect("subscribe");
    app.nats
        .publish_with_reply("$SRV.INFO.events", inbox, "".into())
        .await
        .expect("publish");
    app.nats.flush().await.expect("flush");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while let Ok(Some(msg)) =
        tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut answers)).await
    {
        let info: serde_json::Value = serde_json::from_slice(&msg.payload).expect("json");
        let ours = info["endpoints"].as_array().is_some_and(|e| {
            e.iter().any(|e| {
                e["subject"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(&subject_prefix))
            })
        });
        if ours {
            return info["id"].as_str().expect("id").to_string();
        }
    }
    panic!("this instance did not answer $SRV.INFO.events");
}

#[tokio::test]
async fn srv_stats_count_requests_and_errors() {
    let app = TestApp::spawn().await;
    let client = app.client();
    let tenant = Uuid::new_v4();
    let who = admin(tenant);
    let missing = client
        .call(
            "event.get",
            &who,
            &json!({"id": Uuid::new_v4().to_string()}),
        )
        .await
        .expect("reply");
    assert_eq!(missing.status, 404);
    let list = client
        .call("event.list", &who, &json!({}))
        .await
        .expect("reply");
    assert_eq!(list.status, 200);
    let id = own_instance_id(&app).await;
    let reply = app
        .nats
        .request(format!("$SRV.STATS.events.{id}"), "".into())
        .await
        .expect("stats");
    let stats: serde_json::Value = serde_json::from_slice(&reply.payload).expect("json");
    assert_eq!(stats["type"], "io.nats.micro.v1.stats_response");
    let endpoint = |name: &str| {
        stats["endpoints"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["name"] == name).cloned())
            .expect("endpoint")
    };
    let get = endpoint("event-get");
    assert_eq!(get["num_requests"], 1);
    assert_eq!(get["num_errors"], 1);
    assert_eq!(get["last_error"], "404:NOT_FOUND");
    let list = endpoint("event-list");
    assert_eq!(list["num_requests"], 1);
    assert_eq!(list["num_errors"], 0);
    assert!(list["processing_time"].as_u64().is_some_and(|t| t > 0));
}
