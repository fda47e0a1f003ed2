//! Lists from the list read model (`docs/performance.md`, "Lists"): an
//! instance that knows it is alone answers `event.list` from memory, and
//! every path that changes what a list shows reaches the model before its
//! caller hears back: RSVPs, updates that move an event, creates, cancels,
//! and a DSAR erasure, which changes events outside the scope actors.

use serde_json::{Value, json};
use updspace_events::client::{EventsClient, Identity};
use uuid::Uuid;

use crate::helpers::{TestApp, admin, identity};
use crate::visibility::lists_from;

async fn ok(client: &EventsClient, op: &str, who: &Identity, body: Value) -> Value {
    let reply = client
        .call(op, who, &body)
        .await
        .unwrap_or_else(|e| panic!("{op}: no reply: {e}"));
    assert_eq!(reply.status, 200, "{op} {body}: {:?}", reply.body);
    reply.body
}

fn event(title: &str, starts: &str, visibility: &str, tenant: &str) -> Value {
    json!({
        "scopeType": "TENANT", "scopeId": tenant, "title": title, "visibility": visibility,
        "startsAt": starts, "endsAt": "2030-01-20T00:00:00Z", "capacity": 1,
    })
}

/// (title, myRsvp, going, status) of every item, and the total.
fn listed(list: &Value) -> (Vec<(String, Value, Value, Value)>, Value) {
    let items = list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("items: {list}"))
        .iter()
        .map(|i| {
            (
                i["title"].as_str().unwrap_or_default().to_string(),
                i["myRsvp"].clone(),
                i["rsvpCounts"]["going"].clone(),
                i["status"].clone(),
            )
        })
        .collect();
    (items, list["meta"]["total"].clone())
}

fn titles(list: &Value) -> Vec<String> {
    listed(list).0.into_iter().map(|(t, ..)| t).collect()
}

#[tokio::test]
async fn a_list_from_memory_shows_every_write_before_its_reply() {
    let app = TestApp::spawn_trusting_its_cache().await;
    let client = app.client();
    let tenant = Uuid::new_v4();
    let t = tenant.to_string();
    let (org, fan) = (Uuid::new_v4(), Uuid::new_v4());
    app.grant(tenant, org, "events.organizer", "TENANT", &t)
        .await;
    let (org_id, fan_id) = (identity(tenant, org), identity(tenant, fan));
    let list = |who: &Identity| {
        let (client, who) = (client.clone(), who.clone());
        async move { ok(&client, "event.list", &who, json!({"limit": 10})).await }
    };

    let mut ids = Vec::new();
    for (title, starts) in [
        ("A", "2030-01-10T10:00:00Z"),
        ("B", "2030-01-10T11:00:00Z"),
        ("C", "2030-01-10T12:00:00Z"),
    ] {
        let created = ok(
            &client,
            "event.create",
            &org_id,
            event(title, starts, "public", &t),
        )
        .await;
        ids.push(created["id"].as_str().unwrap_or_default().to_string());
    }
    let first = list(&fan_id).await;
    assert_eq!(titles(&first), ["A", "B", "C"]);
    assert_eq!(first["meta"]["total"], 3);

    // An RSVP: the caller's status and the counters.
    ok(
        &client,
        "rsvp.set",
        &fan_id,
        json!({"eventId": ids[1], "status": "going"}),
    )
    .await;
    let (items, _) = listed(&list(&fan_id).await);
    assert_eq!(
        items[1],
        ("B".into(), json!("going"), json!(1), json!("scheduled"))
    );
    assert_eq!(items[0].1, Value::Null);

    // An update that moves an event to the front.
    ok(
        &client,
        "event.update",
        &org_id,
        json!({"id": ids[2], "startsAt": "2030-01-10T09:00:00Z"}),
    )
    .await;
    assert_eq!(titles(&list(&fan_id).await), ["C", "A", "B"]);

    // A create the fan may not see, and a cancel.
    ok(
        &client,
        "event.create",
        &org_id,
        event("D", "2030-01-10T08:00:00Z", "private", &t),
    )
    .await;
    ok(&client, "event.cancel", &org_id, json!({"id": ids[0]})).await;
    let fans = list(&fan_id).await;
    assert_eq!(titles(&fans), ["C", "A", "B"]);
    assert_eq!(listed(&fans).0[1].3, json!("cancelled"));
    assert_eq!(titles(&list(&org_id).await), ["D", "C", "A", "B"]);

    // Erasing the organizer's data makes D nobody's private event.
    ok(
        &client,
        "dsar.erase",
        &admin(tenant),
        json!({"userId": org}),
    )
    .await;
    assert_eq!(titles(&list(&org_id).await), ["C", "A", "B"]);

    assert_eq!(lists_from(&app, "memory").await, 6.0);
    assert_eq!(lists_from(&app, "postgres").await, 0.0);
}
