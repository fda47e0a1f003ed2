//! The HTTP gateway, signed exactly like the BFF.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, admin, identity};

#[tokio::test]
async fn bff_round_trip_on_both_prefixes() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    let body = json!({"scopeType": "TENANT", "scopeId": tenant.to_string(), "title": "Party",
                      "startsAt": "2030-01-10T10:00:00+03:00", "endsAt": "2030-01-10T12:00:00Z"});
    let created = app.bff("POST", "/api/v1/events/", &boss, Some(body)).await;
    assert_eq!(created.status, 200, "{}", created.text);
    let event = created.json();
    assert_eq!(event["title"], "Party");
    assert_eq!(event["startsAt"], "2030-01-10T07:00:00Z");
    let id = event["id"].as_str().expect("id").to_string();

    let alice = identity(tenant, Uuid::new_v4());
    for prefix in ["/api/v1/events", "/api/v1"] {
        let rsvp = app
            .bff(
                "POST",
                &format!("{prefix}/{id}/rsvp"),
                &alice,
                Some(json!({"status": "going"})),
            )
            .await;
        assert_eq!(rsvp.status, 204, "{prefix}: {}", rsvp.text);
        assert!(rsvp.text.is_empty());
        for list_path in [format!("{prefix}/"), prefix.to_string()] {
            let list = app
                .bff(
                    "GET",
                    &format!("{list_path}?scope_type=TENANT&scope_id={tenant}&limit=10"),
                    &alice,
                    None,
                )
                .await;
            assert_eq!(list.status, 200, "{list_path}: {}", list.text);
            let page = list.json();
            assert_eq!(page["meta"], json!({"total": 1, "limit": 10, "offset": 0}));
            assert_eq!(page["items"][0]["myRsvp"], "going");
            assert_eq!(page["items"][0]["rsvpCounts"]["not_going"], 0);
        }
        let ics = app
            .bff("GET", &format!("{prefix}/{id}/ics"), &alice, None)
            .await;
        assert_eq!(ics.status, 200);
        assert_eq!(
            ics.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/calendar; charset=utf-8")
        );
        assert_eq!(
            ics.headers
                .get("content-disposition")
                .and_then(|v| v.to_str().ok()),
            Some(format!("attachment; filename=\"event-{id}.ics\"").as_str())
        );
    }
    let missing = app
        .bff("GET", "/api/v1/events/nope/extra/path", &alice, None)
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "NOT_FOUND");
    let wrong = app
        .bff("PUT", &format!("/api/v1/events/{id}"), &alice, None)
        .await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.json()["error"]["code"], "METHOD_NOT_ALLOWED");
    assert_eq!(
        wrong
            .headers
            .get("x-frame-options")
            .and_then(|v| v.to_str().ok()),
        Some("DENY")
    );
    assert!(wrong.headers.get("x-request-id").is_some());
}
