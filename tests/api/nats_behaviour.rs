//! Every operation's behaviour over the NATS request/reply API (the
//! contract is `docs/nats-api.md`), with the previous service's test cases
//! rewritten at the NATS level where they apply. DSAR is covered elsewhere.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use updspace_events::client::{CallReply, EventsClient, Identity};
use updspace_events::encoding::Encoding;
use uuid::Uuid;

use crate::helpers::{TestApp, admin, identity};

// ---------------------------------------------------------------- harness

struct World {
    app: TestApp,
    client: EventsClient,
    tenant: Uuid,
    org_id: Uuid,
    /// Holds `events.organizer` tenant-wide.
    org: Identity,
}

async fn world() -> World {
    let app = TestApp::spawn().await;
    let client = app.client();
    let tenant = Uuid::new_v4();
    let org_id = Uuid::new_v4();
    app.grant(
        tenant,
        org_id,
        "events.organizer",
        "TENANT",
        &tenant.to_string(),
    )
    .await;
    World {
        client,
        tenant,
        org_id,
        org: identity(tenant, org_id),
        app,
    }
}

/// `base` with the keys of `extra` set (null values included).
fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

#[track_caller]
fn ok(r: &CallReply) {
    assert_eq!(
        r.status, 200,
        "expected success, got {:?} {}",
        r.code, r.body
    );
    assert!(r.code.is_none(), "{:?}", r.code);
}

/// An error reply: status, `Nats-Service-Error` code and the envelope.
#[track_caller]
fn err(r: &CallReply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.code.as_deref(), Some(code), "{}", r.body);
    assert_eq!(r.body["error"]["code"], code, "{}", r.body);
    assert!(r.body["error"]["message"].is_string(), "{}", r.body);
    assert!(r.body["error"]["details"].is_object(), "{}", r.body);
    assert!(r.body["error"]["request_id"].is_string(), "{}", r.body);
}

#[track_caller]
fn field_error(r: &CallReply, field: &str) {
    err(r, 422, "VALIDATION_ERROR");
    assert!(
        r.body["error"]["details"]["fields"][field].is_string(),
        "no error for {field}: {}",
        r.body
    );
}

impl World {
    async fn call(&self, op: &str, who: &Identity, body: Value) -> CallReply {
        self.client
            .call(op, who, &body)
            .await
            .unwrap_or_else(|e| panic!("{op}: {e}"))
    }

    fn member(&self) -> Identity {
        identity(self.tenant, Uuid::new_v4())
    }

    fn body(&self, title: &str) -> Value {
        json!({
            "scopeType": "TENANT", "scopeId": self.tenant.to_string(), "title": title,
            "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z",
        })
    }

    async fn create_as(&self, who: &Identity, body: Value) -> Value {
        let r = self.call("event.create", who, body).await;
        ok(&r);
        r.body
    }

    async fn create(&self, body: Value) -> String {
        let view = self.create_as(&self.org, body).await;
        view["id"].as_str().expect("id").to_string()
    }

    async fn get(&self, who: &Identity, id: &str) -> CallReply {
        self.call("event.get", who, json!({ "id": id })).await
    }

    async fn rsvp(&self, who: &Identity, id: &str, status: &str) -> CallReply {
        let r = self
            .call("rsvp.set", who, json!({"eventId": id, "status": status}))
            .await;
        ok(&r);
        r
    }

    async fn outbox(&self) -> Vec<(String, Value)> {
        sqlx::query_as("SELECT event_type, payload FROM outbox ORDER BY seq")
            .fetch_all(&self.app.db)
            .await
            .expect("outbox")
    }

    async fn outbox_of(&self, event_type: &str) -> Vec<Value> {
        self.outbox()
            .await
            .into_iter()
            .filter(|(t, _)| t == event_type)
            .map(|(_, p)| p)
            .collect()
    }

    async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.app.db)
            .await
            .expect("count")
    }

    async fn list(&self, who: &Identity, filter: Value) -> CallReply {
        let r = self.call("event.list", who, filter).await;
        ok(&r);
        r
    }
}

fn titles(list: &CallReply) -> Vec<String> {
    list.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["title"].as_str().expect("title").to_string())
        .collect()
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

const CREATED_FIELDS: [&str; 10] = [
    "event_id",
    "tenant_id",
    "scope_type",
    "scope_id",
    "title",
    "visibility",
    "starts_at",
    "ends_at",
    "created_by",
    "created_at",
];

// ------------------------------------------------------------------ create

#[tokio::test]
async fn create_normalises_times_to_utc_and_fills_defaults() {
    let w = world().await;
    let r = w
        .call(
            "event.create",
            &w.org,
            json!({
                "scopeType": "TENANT", "scopeId": w.tenant.to_string(), "title": "Board games",
                "startsAt": "2030-01-10T13:00:00+03:00", "endsAt": "2030-01-10T15:30:00.250+03:00",
            }),
        )
        .await;
    ok(&r);
    let v = &r.body;
    assert_eq!(v["startsAt"], "2030-01-10T10:00:00Z");
    assert_eq!(v["endsAt"], "2030-01-10T12:30:00.250Z");
    assert_eq!(v["tenantId"], w.tenant.to_string());
    assert_eq!(v["scopeType"], "TENANT");
    assert_eq!(v["scopeId"], w.tenant.to_string());
    assert_eq!(v["title"], "Board games");
    assert_eq!(v["description"], Value::Null);
    assert_eq!(v["locationText"], Value::Null);
    assert_eq!(v["locationUrl"], Value::Null);
    assert_eq!(v["gameId"], Value::Null);
    assert_eq!(v["visibility"], "public");
    assert_eq!(v["status"], "scheduled");
    assert_eq!(v["capacity"], Value::Null);
    assert_eq!(v["version"], 1);
    assert_eq!(v["createdBy"], w.org_id.to_string());
    assert_eq!(v["myRsvp"], Value::Null);
    assert_eq!(
        v["rsvpCounts"],
        json!({"interested": 0, "going": 0, "not_going": 0, "waitlisted": 0, "pending": 0, "declined": 0})
    );
    let created_at = v["createdAt"].as_str().expect("createdAt");
    assert!(created_at.ends_with('Z'), "{created_at}");
    assert_eq!(v["updatedAt"], v["createdAt"]);
    let id = v["id"].as_str().expect("id");
    assert_eq!(Uuid::parse_str(id).expect("uuid").to_string(), id);

    // A naive time next to an aware one is read as UTC (the previous service
    // answered 500 to such a mix).
    let mixed = w
        .create_as(
            &w.org,
            merge(
                w.body("Mixed"),
                json!({"startsAt": "2030-01-10T10:00:00", "endsAt": "2030-01-10T15:00:00+03:00"}),
            ),
        )
        .await;
    assert_eq!(mixed["startsAt"], "2030-01-10T10:00:00Z");
    assert_eq!(mixed["endsAt"], "2030-01-10T12:00:00Z");

    // A later read gives the same view.
    let got = w.get(&w.org, id).await;
    ok(&got);
    assert_eq!(&got.body, v);

    // Rows and one event.created each, with every contract field.
    assert_eq!(w.count("events").await, 2);
    let created = w.outbox_of("event.created").await;
    assert_eq!(created.len(), 2);
    let p = &created[0];
    for k in CREATED_FIELDS {
        assert!(p.get(k).is_some(), "event.created lacks {k}: {p}");
    }
    assert_eq!(p["event_id"], id);
    assert_eq!(p["tenant_id"], w.tenant.to_string());
    assert_eq!(p["scope_type"], "TENANT");
    assert_eq!(p["title"], "Board games");
    assert_eq!(p["visibility"], "public");
    assert_eq!(p["starts_at"], "2030-01-10T10:00:00Z");
    assert_eq!(p["ends_at"], "2030-01-10T12:30:00.250Z");
    assert_eq!(p["created_by"], w.org_id.to_string());
    assert_eq!(p["created_at"], *created_at);
}

#[tokio::test]
async fn create_with_every_field_in_camel_and_snake_case() {
    let w = world().await;
    let camel = w
        .create_as(
            &w.org,
            json!({
                "scopeType": "COMMUNITY", "scopeId": "guild-1", "title": "Raid",
                "description": "Bring potions", "startsAt": "2030-02-01T18:00:00Z",
                "endsAt": "2030-02-01T21:00:00Z", "locationText": "Discord",
                "locationUrl": "https://example.com/raid", "gameId": "wow",
                "visibility": "community", "capacity": 25,
            }),
        )
        .await;
    let snake = w
        .create_as(
            &w.org,
            json!({
                "scope_type": "COMMUNITY", "scope_id": "guild-1", "title": "Raid",
                "description": "Bring potions", "starts_at": "2030-02-01T18:00:00Z",
                "ends_at": "2030-02-01T21:00:00Z", "location_text": "Discord",
                "location_url": "https://example.com/raid", "game_id": "wow",
                "visibility": "community", "capacity": 25,
            }),
        )
        .await;
    for v in [&camel, &snake] {
        assert_eq!(v["scopeType"], "COMMUNITY");
        assert_eq!(v["scopeId"], "guild-1");
        assert_eq!(v["description"], "Bring potions");
        assert_eq!(v["startsAt"], "2030-02-01T18:00:00Z");
        assert_eq!(v["endsAt"], "2030-02-01T21:00:00Z");
        assert_eq!(v["locationText"], "Discord");
        assert_eq!(v["locationUrl"], "https://example.com/raid");
        assert_eq!(v["gameId"], "wow");
        assert_eq!(v["visibility"], "community");
        assert_eq!(v["capacity"], 25);
    }
    // The creator reads it back (member of the community or not).
    let got = w.get(&w.org, camel["id"].as_str().expect("id")).await;
    ok(&got);
    assert_eq!(got.body["capacity"], 25);
    assert_eq!(got.body["locationUrl"], "https://example.com/raid");
}

#[tokio::test]
async fn create_capacity_must_be_positive_or_null() {
    let w = world().await;
    for bad in [json!(0), json!(-3), json!(1.5), json!("10")] {
        let r = w
            .call(
                "event.create",
                &w.org,
                merge(w.body("Cap"), json!({ "capacity": bad })),
            )
            .await;
        field_error(&r, "capacity");
    }
    assert_eq!(w.count("events").await, 0);
    let unlimited = w
        .create_as(&w.org, merge(w.body("Cap"), json!({"capacity": null})))
        .await;
    assert_eq!(unlimited["capacity"], Value::Null);
    let one = w
        .create_as(&w.org, merge(w.body("Cap"), json!({"capacity": 1})))
        .await;
    assert_eq!(one["capacity"], 1);
}

#[tokio::test]
async fn create_rejects_bad_time_range_and_misfit_visibility() {
    let w = world().await;
    let same = merge(
        w.body("T"),
        json!({"startsAt": "2030-01-10T12:00:00Z", "endsAt": "2030-01-10T12:00:00Z"}),
    );
    err(
        &w.call("event.create", &w.org, same).await,
        400,
        "INVALID_TIME_RANGE",
    );
    let reversed = merge(w.body("T"), json!({"endsAt": "2030-01-10T09:00:00Z"}));
    err(
        &w.call("event.create", &w.org, reversed).await,
        400,
        "INVALID_TIME_RANGE",
    );
    for vis in ["community", "team"] {
        let r = w
            .call(
                "event.create",
                &w.org,
                merge(w.body("T"), json!({ "visibility": vis })),
            )
            .await;
        field_error(&r, "visibility");
    }
    let team_in_community = json!({
        "scopeType": "COMMUNITY", "scopeId": "c1", "title": "T", "visibility": "team",
        "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z",
    });
    field_error(
        &w.call("event.create", &w.org, team_in_community).await,
        "visibility",
    );
    assert_eq!(w.count("events").await, 0);
    assert_eq!(w.count("outbox").await, 0);
}

#[tokio::test]
async fn create_needs_the_create_permission_and_admin_bypasses_it() {
    // From the previous service's tests: a system admin creates with a
    // camelCase body.
    let w = world().await;
    let member = w.member();
    err(
        &w.call("event.create", &member, w.body("Nope")).await,
        403,
        "FORBIDDEN",
    );
    let a = admin(w.tenant);
    let party = w
        .create_as(
            &a,
            json!({
                "scopeType": "TENANT", "scopeId": w.tenant.to_string(), "title": "Party",
                "description": "d", "startsAt": "2030-01-10T10:00:00Z",
                "endsAt": "2030-01-10T12:00:00Z", "visibility": "public",
            }),
        )
        .await;
    assert_eq!(party["title"], "Party");
    assert_eq!(party["createdBy"], a.user_id);
    assert_eq!(w.count("events").await, 1);
}

#[tokio::test]
async fn idempotent_create_returns_the_first_event() {
    let w = world().await;
    let body = w.body("Once");
    let first = w
        .client
        .call_as("event.create", &w.org, &body, "same-id")
        .await
        .expect("reply");
    ok(&first);
    // A retry carries a new timestamp (and so a new signature); an identical
    // signed request would be a replay.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let retry = w
        .client
        .call_as("event.create", &w.org, &body, "same-id")
        .await
        .expect("reply");
    ok(&retry);
    assert_eq!(retry.body, first.body);

    // The same body in JSON with another key order is the same request.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reordered: Value = serde_json::from_str(&format!(
        r#"{{"endsAt":"2030-01-10T12:00:00Z","title":"Once","startsAt":"2030-01-10T10:00:00Z","scopeId":"{}","scopeType":"TENANT"}}"#,
        w.tenant
    ))
    .expect("json");
    let json_retry = w
        .client
        .clone()
        .with_encoding(Encoding::Json)
        .call_as("event.create", &w.org, &reordered, "same-id")
        .await
        .expect("reply");
    ok(&json_retry);
    assert_eq!(json_retry.body["id"], first.body["id"]);

    assert_eq!(w.count("events").await, 1);
    assert_eq!(w.outbox_of("event.created").await.len(), 1);

    // Same id, different body: a conflict, nothing written.
    let other = w
        .client
        .call_as("event.create", &w.org, &w.body("Twice"), "same-id")
        .await
        .expect("reply");
    err(&other, 409, "IDEMPOTENCY_CONFLICT");
    assert_eq!(w.count("events").await, 1);

    // The key is per user: another organizer's "same-id" is a new create.
    let org2_id = Uuid::new_v4();
    w.app
        .grant(
            w.tenant,
            org2_id,
            "events.organizer",
            "TENANT",
            &w.tenant.to_string(),
        )
        .await;
    let theirs = w
        .client
        .call_as(
            "event.create",
            &identity(w.tenant, org2_id),
            &body,
            "same-id",
        )
        .await
        .expect("reply");
    ok(&theirs);
    assert_ne!(theirs.body["id"], first.body["id"]);
    assert_eq!(w.count("events").await, 2);
}

// --------------------------------------------------------------------- get

#[tokio::test]
async fn get_of_absent_or_other_tenants_event_is_404() {
    let w = world().await;
    let id = w.create(w.body("Mine")).await;
    let stranger_tenant = Uuid::new_v4();
    let outsider = identity(stranger_tenant, Uuid::new_v4());
    let outsider_admin = admin(stranger_tenant);
    for who in [&outsider, &outsider_admin] {
        err(&w.get(who, &id).await, 404, "NOT_FOUND");
        err(
            &w.call("event.ics", who, json!({ "id": id })).await,
            404,
            "NOT_FOUND",
        );
        err(
            &w.call("rsvp.set", who, json!({"eventId": id, "status": "going"}))
                .await,
            404,
            "NOT_FOUND",
        );
        err(
            &w.call("event.update", who, json!({"id": id, "title": "Hijack"}))
                .await,
            404,
            "NOT_FOUND",
        );
        err(
            &w.call("event.cancel", who, json!({ "id": id })).await,
            404,
            "NOT_FOUND",
        );
    }
    err(
        &w.get(&w.org, &Uuid::new_v4().to_string()).await,
        404,
        "NOT_FOUND",
    );
    // `eventId` is accepted wherever an event is targeted.
    let by_event_id = w.call("event.get", &w.org, json!({ "eventId": id })).await;
    ok(&by_event_id);
    assert_eq!(by_event_id.body["title"], "Mine");
    assert_eq!(w.count("event_rsvps").await, 0);
    let got = w.get(&w.org, &id).await;
    assert_eq!(got.body["title"], "Mine");
}

#[tokio::test]
async fn private_event_is_seen_by_its_creator_and_admins_only() {
    let w = world().await;
    let id = w
        .create(merge(w.body("Secret"), json!({"visibility": "private"})))
        .await;
    ok(&w.get(&w.org, &id).await);
    ok(&w.get(&admin(w.tenant), &id).await);
    let member = w.member();
    err(&w.get(&member, &id).await, 404, "NOT_FOUND");
    // Hidden first, forbidden second: a stranger cannot learn it exists.
    err(
        &w.call("event.update", &member, json!({"id": id, "title": "x"}))
            .await,
        404,
        "NOT_FOUND",
    );
    err(
        &w.call("rsvp.list", &member, json!({ "eventId": id })).await,
        404,
        "NOT_FOUND",
    );
    err(
        &w.call(
            "rsvp.set",
            &member,
            json!({"eventId": id, "status": "going"}),
        )
        .await,
        404,
        "NOT_FOUND",
    );
    assert_eq!(w.list(&member, json!({})).await.body["meta"]["total"], 0);
    assert_eq!(w.list(&w.org, json!({})).await.body["meta"]["total"], 1);
    // Another organizer holds attendance.mark but may not see it (the
    // previous service checked the permission only, not visibility).
    let org2_id = Uuid::new_v4();
    w.app
        .grant(
            w.tenant,
            org2_id,
            "events.organizer",
            "TENANT",
            &w.tenant.to_string(),
        )
        .await;
    let org2 = identity(w.tenant, org2_id);
    err(
        &w.call(
            "attendance.mark",
            &org2,
            json!({"eventId": id, "userId": member.user_id}),
        )
        .await,
        404,
        "NOT_FOUND",
    );
    err(
        &w.call("attendance.list", &org2, json!({ "eventId": id }))
            .await,
        404,
        "NOT_FOUND",
    );
    assert_eq!(w.count("event_attendance").await, 0);
    assert_eq!(w.count("event_rsvps").await, 0);
}

// -------------------------------------------------------------------- list

#[tokio::test]
async fn list_tenant_isolation_meta_and_counts() {
    // From the previous service's tests: tenant isolation, list meta and
    // RSVP counts.
    let w = world().await;
    let e1 = w.create(w.body("E1")).await;
    let other_tenant = Uuid::new_v4();
    let other = w.app.client();
    let r = other
        .call(
            "event.create",
            &admin(other_tenant),
            &json!({
                "scopeType": "TENANT", "scopeId": other_tenant.to_string(), "title": "E2",
                "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z",
            }),
        )
        .await
        .expect("reply");
    ok(&r);
    let me = w.member();
    let someone = w.member();
    w.rsvp(&me, &e1, "going").await;
    w.rsvp(&someone, &e1, "interested").await;
    let list = w.list(&me, json!({})).await;
    assert_eq!(
        list.body["meta"],
        json!({"total": 1, "limit": 100, "offset": 0})
    );
    assert_eq!(titles(&list), ["E1"]);
    let item = &list.body["items"][0];
    assert_eq!(item["rsvpCounts"]["going"], 1);
    assert_eq!(item["rsvpCounts"]["interested"], 1);
    assert_eq!(item["rsvpCounts"]["not_going"], 0);
    assert_eq!(item["rsvpCounts"]["waitlisted"], 0);
    assert_eq!(item["myRsvp"], "going");
}

/// E1..E7 in one tenant, a day apart, as in the list tests below.
async fn seed_list(w: &World) -> Identity {
    let day = |d: u32| {
        (
            format!("2030-01-0{d}T10:00:00Z"),
            format!("2030-01-0{d}T12:00:00Z"),
        )
    };
    let t = w.tenant.to_string();
    let specs = [
        json!({"scopeType": "TENANT", "scopeId": t, "title": "Alpha meetup", "description": "Bring SNACKS"}),
        json!({"scopeType": "TENANT", "scopeId": t, "title": "Beta", "locationText": "Room Snack-bar"}),
        json!({"scopeType": "TENANT", "scopeId": t, "title": "Gamma"}),
        json!({"scopeType": "COMMUNITY", "scopeId": "c1", "title": "Delta"}),
        json!({"scopeType": "COMMUNITY", "scopeId": "c2", "title": "Epsilon"}),
        json!({"scopeType": "TENANT", "scopeId": t, "title": "Zeta", "visibility": "private"}),
    ];
    for (i, spec) in specs.into_iter().enumerate() {
        let (s, e) = day(i as u32 + 1);
        w.create(merge(spec, json!({"startsAt": s, "endsAt": e})))
            .await;
    }
    let a = admin(w.tenant);
    w.create_as(
        &a,
        json!({"scopeType": "TENANT", "scopeId": t, "title": "Eta",
               "startsAt": "2030-01-07T10:00:00Z", "endsAt": "2030-01-07T12:00:00Z"}),
    )
    .await;
    a
}

#[tokio::test]
async fn list_pagination_and_inclusive_time_overlap() {
    let w = world().await;
    seed_list(&w).await;
    let member = w.member();

    let all = w.list(&member, json!({})).await;
    assert_eq!(
        titles(&all),
        ["Alpha meetup", "Beta", "Gamma", "Delta", "Epsilon", "Eta"]
    );
    assert_eq!(all.body["meta"]["total"], 6);

    let page = w.list(&member, json!({"limit": 2, "offset": 0})).await;
    assert_eq!(titles(&page), ["Alpha meetup", "Beta"]);
    assert_eq!(
        page.body["meta"],
        json!({"total": 6, "limit": 2, "offset": 0})
    );
    let page = w.list(&member, json!({"limit": 2, "offset": 2})).await;
    assert_eq!(titles(&page), ["Gamma", "Delta"]);
    // Pages are never short because of visibility (Zeta is hidden).
    let page = w.list(&member, json!({"limit": 2, "offset": 4})).await;
    assert_eq!(titles(&page), ["Epsilon", "Eta"]);
    let page = w.list(&member, json!({"limit": "2", "offset": "5"})).await;
    assert_eq!(titles(&page), ["Eta"]);
    let page = w.list(&member, json!({"limit": 2, "offset": 10})).await;
    assert!(titles(&page).is_empty());
    assert_eq!(page.body["meta"]["total"], 6);
    assert_eq!(
        w.list(&member, json!({"limit": 250})).await.body["meta"]["limit"],
        250
    );
    assert_eq!(
        w.list(&member, json!({"limit": 1})).await.body["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // Beta ends exactly at `from`, Delta starts exactly at `to`: both in.
    let window = w
        .list(
            &member,
            json!({"from": "2030-01-02T12:00:00Z", "to": "2030-01-04T10:00:00Z"}),
        )
        .await;
    assert_eq!(titles(&window), ["Beta", "Gamma", "Delta"]);
    assert_eq!(window.body["meta"]["total"], 3);
    // The same instants written with an offset.
    let window = w
        .list(
            &member,
            json!({"from": "2030-01-02T15:00:00+03:00", "to": "2030-01-04T13:00:00+03:00"}),
        )
        .await;
    assert_eq!(titles(&window), ["Beta", "Gamma", "Delta"]);
    // One microsecond later/earlier drops them.
    let window = w
        .list(
            &member,
            json!({"from": "2030-01-02T12:00:00.001Z", "to": "2030-01-04T09:59:59.999Z"}),
        )
        .await;
    assert_eq!(titles(&window), ["Gamma"]);
    let only_from = w
        .list(&member, json!({"from": "2030-01-05T00:00:00Z"}))
        .await;
    assert_eq!(titles(&only_from), ["Epsilon", "Eta"]);

    for bad in [json!({"from": "yesterday"}), json!({"from": "2030-13-01"})] {
        let r = w.call("event.list", &member, bad).await;
        err(&r, 400, "INVALID_FROM");
    }
    err(
        &w.call("event.list", &member, json!({"to": "soon"})).await,
        400,
        "INVALID_TO",
    );
}

#[tokio::test]
async fn list_limit_and_offset_bounds_are_422() {
    let w = world().await;
    let member = w.member();
    for bad in [
        json!({"limit": 0}),
        json!({"limit": 251}),
        json!({"limit": -1}),
        json!({"limit": "many"}),
        json!({"limit": 2.5}),
    ] {
        field_error(&w.call("event.list", &member, bad).await, "limit");
    }
    field_error(
        &w.call("event.list", &member, json!({"offset": -1})).await,
        "offset",
    );
    // Both reported at once.
    let r = w
        .call("event.list", &member, json!({"limit": 0, "offset": -1}))
        .await;
    field_error(&r, "limit");
    field_error(&r, "offset");
}

#[tokio::test]
async fn list_filters_scope_q_visibility_rsvp_and_creator_in_both_casings() {
    let w = world().await;
    let a = seed_list(&w).await;
    let member = w.member();

    let all = w.list(&member, json!({})).await;
    let id_of = |title: &str| -> String {
        all.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|i| i["title"] == title)
            .and_then(|i| i["id"].as_str())
            .expect("id")
            .to_string()
    };
    let gamma = id_of("Gamma");
    let delta = id_of("Delta");
    w.rsvp(&member, &gamma, "going").await;
    w.rsvp(&member, &delta, "interested").await;

    // Each filter in camelCase and snake_case gives the same answer.
    let cases: Vec<(Value, Value, Vec<&str>)> = vec![
        (
            json!({"scopeType": "COMMUNITY", "scopeId": "c1"}),
            json!({"scope_type": "COMMUNITY", "scope_id": "c1"}),
            vec!["Delta"],
        ),
        (
            // Exact: case matters.
            json!({"scopeType": "COMMUNITY", "scopeId": "C1"}),
            json!({"scope_type": "COMMUNITY", "scope_id": "C1"}),
            vec![],
        ),
        (
            json!({"scopeType": "TENANT", "scopeId": w.tenant.to_string()}),
            json!({"scope_type": "TENANT", "scope_id": w.tenant.to_string()}),
            vec!["Alpha meetup", "Beta", "Gamma", "Eta"],
        ),
        (
            json!({"myRsvp": "going"}),
            json!({"my_rsvp": "going"}),
            vec!["Gamma"],
        ),
        (
            json!({"myRsvp": "interested"}),
            json!({"my_rsvp": "interested"}),
            vec!["Delta"],
        ),
        (
            json!({"myRsvp": "not_going"}),
            json!({"my_rsvp": "not_going"}),
            vec![],
        ),
        (
            json!({"createdBy": a.user_id}),
            json!({"created_by": a.user_id}),
            vec!["Eta"],
        ),
        (
            json!({"createdBy": w.org_id.to_string().to_uppercase()}),
            json!({"created_by": w.org_id.to_string()}),
            vec!["Alpha meetup", "Beta", "Gamma", "Delta", "Epsilon"],
        ),
        (
            json!({"visibility": "public", "scopeType": "COMMUNITY", "scopeId": "c2"}),
            json!({"visibility": "public", "scope_type": "COMMUNITY", "scope_id": "c2"}),
            vec!["Epsilon"],
        ),
    ];
    for (camel, snake, expected) in cases {
        let c = w.list(&member, camel.clone()).await;
        assert_eq!(titles(&c), expected, "{camel}");
        assert_eq!(c.body["meta"]["total"], expected.len(), "{camel}");
        let s = w.list(&member, snake.clone()).await;
        assert_eq!(titles(&s), expected, "{snake}");
    }
    // Half a scope filters nothing.
    assert_eq!(
        w.list(&member, json!({"scopeType": "COMMUNITY"}))
            .await
            .body["meta"]["total"],
        6
    );

    // q: case-insensitive over title, description and location_text.
    for (q, expected) in [
        ("snack", vec!["Alpha meetup", "Beta"]),
        ("SNACK", vec!["Alpha meetup", "Beta"]),
        ("alpha", vec!["Alpha meetup"]),
        ("room", vec!["Beta"]),
        ("mm", vec!["Gamma"]),
        ("%", vec![]),
        ("_", vec![]),
        ("\\", vec![]),
        ("a\\", vec![]),
        ("nothing like it", vec![]),
    ] {
        let r = w.list(&member, json!({ "q": q })).await;
        assert_eq!(titles(&r), expected, "q={q}");
        assert_eq!(r.body["meta"]["total"], expected.len(), "q={q}");
    }

    // visibility: the member sees no private event; the creator sees theirs.
    assert!(titles(&w.list(&member, json!({"visibility": "private"})).await).is_empty());
    assert_eq!(
        titles(&w.list(&w.org, json!({"visibility": "private"})).await),
        ["Zeta"]
    );

    for (bad, field) in [
        (json!({"visibility": "secret"}), "visibility"),
        (json!({"myRsvp": "maybe"}), "myRsvp"),
        (json!({"createdBy": "bob"}), "createdBy"),
        (json!({"scopeType": "GUILD", "scopeId": "x"}), "scopeType"),
    ] {
        field_error(&w.call("event.list", &member, bad).await, field);
    }
}

#[tokio::test]
async fn community_and_team_events_need_membership() {
    // From the previous service's tests, with Portal replaced by local
    // memberships.
    let w = world().await;
    let at = json!({"startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z"});
    let community = w
        .create(merge(
            json!({"scopeType": "COMMUNITY", "scopeId": "c1", "title": "Guild", "visibility": "community"}),
            at.clone(),
        ))
        .await;
    let team = w
        .create(merge(
            json!({"scopeType": "TEAM", "scopeId": "t1", "title": "Squad", "visibility": "team"}),
            at,
        ))
        .await;
    let outsider = w.member();
    let insider_id = Uuid::new_v4();
    let insider = identity(w.tenant, insider_id);
    w.app.join(w.tenant, insider_id, "COMMUNITY", "c1").await;
    w.app.join(w.tenant, insider_id, "TEAM", "t1").await;
    let other_member_id = Uuid::new_v4();
    let other_member = identity(w.tenant, other_member_id);
    w.app
        .join(w.tenant, other_member_id, "COMMUNITY", "c2")
        .await;

    for (scope_type, scope_id, title, id) in [
        ("COMMUNITY", "c1", "Guild", &community),
        ("TEAM", "t1", "Squad", &team),
    ] {
        let filter = json!({"scopeType": scope_type, "scopeId": scope_id});
        for who in [&outsider, &other_member] {
            let l = w.list(who, filter.clone()).await;
            assert_eq!(l.body["meta"]["total"], 0);
            assert!(titles(&l).is_empty());
            err(&w.get(who, id).await, 404, "NOT_FOUND");
            err(
                &w.call("event.ics", who, json!({ "id": id })).await,
                404,
                "NOT_FOUND",
            );
            err(
                &w.call("rsvp.set", who, json!({"eventId": id, "status": "going"}))
                    .await,
                404,
                "NOT_FOUND",
            );
        }
        let l = w.list(&insider, filter.clone()).await;
        assert_eq!(titles(&l), [title]);
        ok(&w.get(&insider, id).await);
        // The creator sees it, member or not.
        assert_eq!(titles(&w.list(&w.org, filter).await), [title]);
    }
    assert_eq!(w.list(&outsider, json!({})).await.body["meta"]["total"], 0);
    assert_eq!(w.list(&insider, json!({})).await.body["meta"]["total"], 2);
    assert_eq!(w.count("event_rsvps").await, 0);
}

// ------------------------------------------------------------------ update

#[tokio::test]
async fn update_null_rules() {
    let w = world().await;
    let id = w
        .create(merge(
            w.body("Keep"),
            json!({"description": "Some text", "locationText": "Hall",
                   "locationUrl": "https://example.com", "gameId": "cs2", "capacity": 3}),
        ))
        .await;
    let outbox_before = w.count("outbox").await;

    // title: null is ignored, as is visibility: null.
    let r = w
        .call(
            "event.update",
            &w.org,
            json!({"id": id, "title": null, "visibility": null}),
        )
        .await;
    ok(&r);
    assert_eq!(r.body["title"], "Keep");
    assert_eq!(r.body["visibility"], "public");
    assert_eq!(r.body["version"], 1);
    assert_eq!(w.count("outbox").await, outbox_before);

    // description/locationText: null → none; locationUrl/gameId: "" or null → none;
    // capacity: null → unlimited.
    let r = w
        .call(
            "event.update",
            &w.org,
            json!({"id": id, "description": null, "locationText": null,
                   "locationUrl": "", "gameId": null, "capacity": null}),
        )
        .await;
    ok(&r);
    assert_eq!(r.body["description"], Value::Null);
    assert_eq!(r.body["locationText"], Value::Null);
    assert_eq!(r.body["locationUrl"], Value::Null);
    assert_eq!(r.body["gameId"], Value::Null);
    assert_eq!(r.body["capacity"], Value::Null);
    assert_eq!(r.body["version"], 2);
    let got = w.get(&w.org, &id).await;
    assert_eq!(got.body["description"], Value::Null);
    assert_eq!(got.body["capacity"], Value::Null);

    // startsAt/endsAt: null is a 422, never a 500, and changes nothing.
    for field in ["startsAt", "endsAt", "starts_at"] {
        let r = w
            .call(
                "event.update",
                &w.org,
                json!({"id": id, field: null, "title": "Changed"}),
            )
            .await;
        let camel = if field == "starts_at" {
            "startsAt"
        } else {
            field
        };
        field_error(&r, camel);
    }
    assert_eq!(w.get(&w.org, &id).await.body["title"], "Keep");

    // Over NATS the target is in the body: a bare `{}` names no event.
    field_error(&w.call("event.update", &w.org, json!({})).await, "id");
    // Nothing editable besides the target: NO_UPDATES.
    for body in [
        json!({ "id": id }),
        json!({"id": id, "foo": 1}),
        json!({"id": id, "scopeType": "TEAM", "scopeId": "x"}),
    ] {
        err(
            &w.call("event.update", &w.org, body).await,
            400,
            "NO_UPDATES",
        );
    }
    assert_eq!(w.get(&w.org, &id).await.body["version"], 2);
}

#[tokio::test]
async fn unchanged_update_writes_nothing() {
    let w = world().await;
    let id = w
        .create(merge(
            w.body("Same"),
            json!({"description": "D", "capacity": 4}),
        ))
        .await;
    let before = w.get(&w.org, &id).await.body;
    let rows_before = w.count("outbox").await;
    let updated_at_db: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT updated_at FROM events")
            .fetch_one(&w.app.db)
            .await
            .expect("row");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = w
        .call(
            "event.update",
            &w.org,
            json!({"id": id, "title": "Same", "description": "D", "capacity": 4,
                   "startsAt": "2030-01-10T13:00:00+03:00", "visibility": "public"}),
        )
        .await;
    ok(&r);
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["updatedAt"], before["updatedAt"]);
    assert_eq!(w.count("outbox").await, rows_before);
    let after: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT updated_at FROM events")
        .fetch_one(&w.app.db)
        .await
        .expect("row");
    assert_eq!(after, updated_at_db);
    assert_eq!(w.get(&w.org, &id).await.body, before);
}

#[tokio::test]
async fn real_update_bumps_version_and_lists_fields_in_fixed_order() {
    let w = world().await;
    let id = w.create(w.body("Old")).await;
    let created = w.get(&w.org, &id).await.body;
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Keys sent in reverse order; title unchanged so it is not listed.
    let r = w
        .call(
            "event.update",
            &w.org,
            json!({
                "id": id, "capacity": 10, "visibility": "private", "gameId": "dota",
                "locationUrl": "http://example.org/x", "locationText": "Pub",
                "endsAt": "2030-01-10T14:00:00Z", "startsAt": "2030-01-10T11:00:00Z",
                "description": "New", "title": "Old",
            }),
        )
        .await;
    ok(&r);
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["startsAt"], "2030-01-10T11:00:00Z");
    assert_eq!(r.body["visibility"], "private");
    assert_eq!(r.body["createdAt"], created["createdAt"]);
    assert_ne!(r.body["updatedAt"], created["updatedAt"]);
    let (c, u): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT created_at, updated_at FROM events")
            .fetch_one(&w.app.db)
            .await
            .expect("row");
    assert!(u > c, "{u} > {c}");

    let updates = w.outbox_of("event.updated").await;
    assert_eq!(updates.len(), 1);
    let p = &updates[0];
    assert_eq!(
        p["updated_fields"],
        json!([
            "description",
            "starts_at",
            "ends_at",
            "location_text",
            "location_url",
            "game_id",
            "visibility",
            "capacity"
        ])
    );
    for k in CREATED_FIELDS {
        assert!(p.get(k).is_some(), "event.updated lacks {k}: {p}");
    }
    assert_eq!(p["updated_by"], w.org_id.to_string());
    assert_eq!(p["updated_at"], r.body["updatedAt"]);
    assert_eq!(p["version"], 2);
    assert_eq!(p["visibility"], "private");
    assert_eq!(p["starts_at"], "2030-01-10T11:00:00Z");
    assert_eq!(p["created_at"], created["createdAt"]);

    // Now private: members no longer see it anywhere.
    let member = w.member();
    err(&w.get(&member, &id).await, 404, "NOT_FOUND");
    assert_eq!(w.list(&member, json!({})).await.body["meta"]["total"], 0);

    // A single changed field is listed alone; version moves by one.
    let r = w
        .call(
            "event.update",
            &w.org,
            json!({"id": id, "title": "New title"}),
        )
        .await;
    ok(&r);
    assert_eq!(r.body["version"], 3);
    let updates = w.outbox_of("event.updated").await;
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[1]["updated_fields"], json!(["title"]));
    assert_eq!(updates[1]["title"], "New title");
}

#[tokio::test]
async fn update_time_range_visibility_and_permission() {
    let w = world().await;
    let id = w.create(w.body("Range")).await;
    // Merged with the stored values: a start after the stored end.
    err(
        &w.call(
            "event.update",
            &w.org,
            json!({"id": id, "startsAt": "2030-01-10T12:00:00Z"}),
        )
        .await,
        400,
        "INVALID_TIME_RANGE",
    );
    err(
        &w.call(
            "event.update",
            &w.org,
            json!({"id": id, "startsAt": "2030-01-11T10:00:00Z", "endsAt": "2030-01-11T09:00:00Z"}),
        )
        .await,
        400,
        "INVALID_TIME_RANGE",
    );
    field_error(
        &w.call(
            "event.update",
            &w.org,
            json!({"id": id, "visibility": "community"}),
        )
        .await,
        "visibility",
    );
    field_error(
        &w.call("event.update", &w.org, json!({"id": id, "capacity": 0}))
            .await,
        "capacity",
    );
    field_error(
        &w.call("event.update", &w.org, json!({"id": id, "title": ""}))
            .await,
        "title",
    );
    // From the previous service's tests: manage is needed; a system admin
    // has it.
    let member = w.member();
    err(
        &w.call(
            "event.update",
            &member,
            json!({"id": id, "title": "Updated Title"}),
        )
        .await,
        403,
        "FORBIDDEN",
    );
    let r = w
        .call(
            "event.update",
            &admin(w.tenant),
            json!({"id": id, "title": "Updated Title"}),
        )
        .await;
    ok(&r);
    assert_eq!(r.body["title"], "Updated Title");
    assert_eq!(w.outbox_of("event.updated").await.len(), 1);
    let got = w.get(&member, &id).await.body;
    assert_eq!(got["version"], 2);
    assert_eq!(got["startsAt"], "2030-01-10T10:00:00Z");
}

// ------------------------------------------------------------------ cancel

#[tokio::test]
async fn cancel_is_final_and_idempotent() {
    let w = world().await;
    let id = w.create(w.body("Doomed")).await;
    let member = w.member();
    w.rsvp(&member, &id, "going").await;
    err(
        &w.call("event.cancel", &member, json!({ "id": id })).await,
        403,
        "FORBIDDEN",
    );

    let r = w
        .call("event.cancel", &w.org, json!({"id": id, "reason": "Rain"}))
        .await;
    ok(&r);
    assert_eq!(r.body["status"], "cancelled");
    assert_eq!(r.body["cancelReason"], "Rain");
    assert!(
        r.body["cancelledAt"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["rsvpCounts"]["going"], 1);

    let cancelled = w.outbox_of("event.cancelled").await;
    assert_eq!(cancelled.len(), 1);
    let p = &cancelled[0];
    for k in [
        "event_id",
        "tenant_id",
        "scope_type",
        "scope_id",
        "title",
        "visibility",
        "cancelled_by",
        "cancelled_at",
        "reason",
    ] {
        assert!(p.get(k).is_some(), "event.cancelled lacks {k}: {p}");
    }
    assert_eq!(p["event_id"], id);
    assert_eq!(p["cancelled_by"], w.org_id.to_string());
    assert_eq!(p["cancelled_at"], r.body["cancelledAt"]);
    assert_eq!(p["reason"], "Rain");

    // Cancelling again: 200, the same view, no new domain event.
    let rows = w.count("outbox").await;
    let again = w
        .call("event.cancel", &w.org, json!({"id": id, "reason": "Other"}))
        .await;
    ok(&again);
    assert_eq!(again.body["status"], "cancelled");
    assert_eq!(again.body["cancelReason"], "Rain");
    assert_eq!(again.body["version"], 2);
    assert_eq!(w.count("outbox").await, rows);

    // Nothing else may change it.
    let rsvps = w.count("event_rsvps").await;
    let late = w.member();
    for (op, who, body) in [
        ("rsvp.set", &late, json!({"eventId": id, "status": "going"})),
        (
            "rsvp.set",
            &member,
            json!({"eventId": id, "status": "not_going"}),
        ),
        ("rsvp.clear", &member, json!({ "eventId": id })),
        (
            "attendance.mark",
            &w.org,
            json!({"eventId": id, "userId": member.user_id}),
        ),
        (
            "event.update",
            &w.org,
            json!({"id": id, "title": "Revived"}),
        ),
    ] {
        err(&w.call(op, who, body).await, 409, "EVENT_CANCELLED");
    }
    assert_eq!(w.count("outbox").await, rows);
    assert_eq!(w.count("event_rsvps").await, rsvps);
    assert_eq!(w.count("event_attendance").await, 0);

    let got = w.get(&member, &id).await;
    assert_eq!(got.body["status"], "cancelled");
    assert_eq!(got.body["myRsvp"], "going");
    assert_eq!(got.body["title"], "Doomed");

    // A cancel without a body field has no reason.
    let id2 = w.create(w.body("Quiet")).await;
    let r = w.call("event.cancel", &w.org, json!({ "id": id2 })).await;
    ok(&r);
    assert_eq!(r.body["cancelReason"], Value::Null);
    let cancelled = w.outbox_of("event.cancelled").await;
    assert_eq!(cancelled[1]["reason"], Value::Null);
}

// -------------------------------------------------------------------- rsvp

#[tokio::test]
async fn rsvp_changes_write_one_row_each_and_repeats_write_nothing() {
    // From the previous service's tests: going, going, not_going → 2 rows,
    // because repeating the current status changes and publishes nothing.
    let w = world().await;
    let id = w.create(w.body("Party")).await;
    let me_id = Uuid::new_v4();
    let me = identity(w.tenant, me_id);
    let rows = w.count("outbox").await;

    let r = w.rsvp(&me, &id, "going").await;
    assert_eq!(
        r.body,
        json!({"eventId": id, "status": "going", "myRsvp": "going", "myGuests": 0,
               "rsvpCounts": {"interested": 0, "going": 1, "not_going": 0, "waitlisted": 0, "pending": 0, "declined": 0},
               "seats": {"capacity": null, "taken": 1, "available": null}})
    );
    let updated_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT updated_at FROM event_rsvps")
            .fetch_one(&w.app.db)
            .await
            .expect("rsvp row");
    let r = w.rsvp(&me, &id, "going").await;
    assert_eq!(r.body["status"], "going");
    assert_eq!(r.body["rsvpCounts"]["going"], 1);
    let unchanged: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT updated_at FROM event_rsvps")
            .fetch_one(&w.app.db)
            .await
            .expect("rsvp row");
    assert_eq!(unchanged, updated_at, "an unchanged RSVP is not rewritten");
    let r = w.rsvp(&me, &id, "not_going").await;
    assert_eq!(r.body["status"], "not_going");
    assert_eq!(r.body["rsvpCounts"]["going"], 0);
    assert_eq!(r.body["rsvpCounts"]["not_going"], 1);

    assert_eq!(w.count("outbox").await, rows + 2);
    let changes = w.outbox_of("event.rsvp.changed").await;
    assert_eq!(changes.len(), 2);
    let first = &changes[0];
    for k in [
        "event_id",
        "tenant_id",
        "scope_type",
        "scope_id",
        "visibility",
        "user_id",
        "status",
        "previous_status",
        "reason",
        "updated_at",
    ] {
        assert!(
            first.get(k).is_some(),
            "event.rsvp.changed lacks {k}: {first}"
        );
    }
    assert_eq!(first["user_id"], me_id.to_string());
    assert_eq!(first["event_id"], id);
    assert_eq!(first["status"], "going");
    assert_eq!(first["previous_status"], Value::Null);
    assert_eq!(first["reason"], "user");
    assert_eq!(changes[1]["status"], "not_going");
    assert_eq!(changes[1]["previous_status"], "going");

    // The caller's RSVP shows in get and list.
    let got = w.get(&me, &id).await;
    assert_eq!(got.body["myRsvp"], "not_going");
    let list = w.list(&me, json!({})).await;
    assert_eq!(list.body["items"][0]["myRsvp"], "not_going");

    // Clear: status null, reason cleared; clearing again writes nothing.
    let r = w.call("rsvp.clear", &me, json!({ "eventId": id })).await;
    ok(&r);
    assert_eq!(r.body["status"], Value::Null);
    assert_eq!(r.body["myRsvp"], Value::Null);
    assert_eq!(r.body["rsvpCounts"]["not_going"], 0);
    let changes = w.outbox_of("event.rsvp.changed").await;
    assert_eq!(changes.len(), 3);
    assert_eq!(changes[2]["status"], Value::Null);
    assert_eq!(changes[2]["previous_status"], "not_going");
    assert_eq!(changes[2]["reason"], "cleared");
    ok(&w.call("rsvp.clear", &me, json!({ "eventId": id })).await);
    assert_eq!(w.outbox_of("event.rsvp.changed").await.len(), 3);
    assert_eq!(w.count("event_rsvps").await, 0);

    // Bad statuses: waitlisted is an outcome, never a request.
    for bad in [json!("waitlisted"), json!("GOING"), json!(null)] {
        field_error(
            &w.call("rsvp.set", &me, json!({"eventId": id, "status": bad}))
                .await,
            "status",
        );
    }
    field_error(
        &w.call("rsvp.set", &me, json!({ "eventId": id })).await,
        "status",
    );
    assert_eq!(w.count("event_rsvps").await, 0);
}

#[tokio::test]
async fn waitlist_is_fifo_and_promotes_on_leave() {
    let w = world().await;
    let id = w
        .create(merge(w.body("Tiny"), json!({"capacity": 1})))
        .await;
    let (a, b, c) = (w.member(), w.member(), w.member());
    assert_eq!(w.rsvp(&a, &id, "going").await.body["status"], "going");
    let rb = w.rsvp(&b, &id, "going").await;
    assert_eq!(rb.body["status"], "waitlisted");
    assert_eq!(rb.body["myRsvp"], "waitlisted");
    let rc = w.rsvp(&c, &id, "going").await;
    assert_eq!(rc.body["status"], "waitlisted");
    assert_eq!(
        rc.body["rsvpCounts"],
        json!({"interested": 0, "going": 1, "not_going": 0, "waitlisted": 2, "pending": 0, "declined": 0})
    );
    // Asking again keeps the place.
    assert_eq!(w.rsvp(&b, &id, "going").await.body["status"], "waitlisted");
    assert_eq!(w.get(&b, &id).await.body["myRsvp"], "waitlisted");
    let l = w.list(&b, json!({"myRsvp": "waitlisted"})).await;
    assert_eq!(l.body["meta"]["total"], 1);
    assert_eq!(l.body["items"][0]["myRsvp"], "waitlisted");

    // A leaves: B (first in line) is promoted, C still waits.
    let r = w.rsvp(&a, &id, "not_going").await;
    assert_eq!(r.body["rsvpCounts"]["going"], 1);
    assert_eq!(r.body["rsvpCounts"]["waitlisted"], 1);
    assert_eq!(w.get(&b, &id).await.body["myRsvp"], "going");
    assert_eq!(w.get(&c, &id).await.body["myRsvp"], "waitlisted");
    let changes = w.outbox_of("event.rsvp.changed").await;
    let last = changes.last().expect("promotion row");
    assert_eq!(last["user_id"], b.user_id);
    assert_eq!(last["status"], "going");
    assert_eq!(last["previous_status"], "waitlisted");
    assert_eq!(last["reason"], "promoted");

    // B switches to interested: C is promoted.
    w.rsvp(&b, &id, "interested").await;
    assert_eq!(w.get(&c, &id).await.body["myRsvp"], "going");
    let changes = w.outbox_of("event.rsvp.changed").await;
    let last = changes.last().expect("promotion row");
    assert_eq!(last["user_id"], c.user_id);
    assert_eq!(last["reason"], "promoted");
    let counts: (i32, i32) = sqlx::query_as("SELECT going, waitlisted FROM event_counters")
        .fetch_one(&w.app.db)
        .await
        .expect("counters");
    assert_eq!(counts, (1, 0));
}

#[tokio::test]
async fn raising_capacity_promotes_at_once_and_lowering_removes_no_one() {
    let w = world().await;
    let id = w
        .create(merge(w.body("Grow"), json!({"capacity": 1})))
        .await;
    let (a, b, c, d) = (w.member(), w.member(), w.member(), w.member());
    w.rsvp(&a, &id, "going").await;
    w.rsvp(&b, &id, "going").await;
    w.rsvp(&c, &id, "going").await;

    let r = w
        .call("event.update", &w.org, json!({"id": id, "capacity": 2}))
        .await;
    ok(&r);
    assert_eq!(r.body["capacity"], 2);
    assert_eq!(r.body["rsvpCounts"]["going"], 2);
    assert_eq!(r.body["rsvpCounts"]["waitlisted"], 1);
    assert_eq!(w.get(&b, &id).await.body["myRsvp"], "going");
    assert_eq!(w.get(&c, &id).await.body["myRsvp"], "waitlisted");
    let last = w
        .outbox_of("event.rsvp.changed")
        .await
        .pop()
        .expect("promotion");
    assert_eq!(last["user_id"], b.user_id);
    assert_eq!(last["reason"], "promoted");
    let types: Vec<String> = w.outbox().await.into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        types[types.len() - 2..],
        [
            "event.updated".to_string(),
            "event.rsvp.changed".to_string()
        ]
    );

    // Lowering below the going count removes no one; newcomers wait.
    let r = w
        .call("event.update", &w.org, json!({"id": id, "capacity": 1}))
        .await;
    ok(&r);
    assert_eq!(r.body["rsvpCounts"]["going"], 2);
    assert_eq!(w.get(&a, &id).await.body["myRsvp"], "going");
    assert_eq!(w.get(&b, &id).await.body["myRsvp"], "going");
    assert_eq!(w.rsvp(&d, &id, "going").await.body["status"], "waitlisted");
    // One going leaves: still at capacity, nobody promoted.
    w.rsvp(&a, &id, "not_going").await;
    assert_eq!(w.get(&c, &id).await.body["myRsvp"], "waitlisted");

    // Unlimited: everyone waiting is promoted, in order.
    let r = w
        .call("event.update", &w.org, json!({"id": id, "capacity": null}))
        .await;
    ok(&r);
    assert_eq!(r.body["rsvpCounts"]["going"], 3);
    assert_eq!(r.body["rsvpCounts"]["waitlisted"], 0);
    let promoted: Vec<Value> = w
        .outbox_of("event.rsvp.changed")
        .await
        .into_iter()
        .filter(|p| p["reason"] == "promoted")
        .map(|p| p["user_id"].clone())
        .collect();
    assert_eq!(
        promoted,
        [json!(b.user_id), json!(c.user_id), json!(d.user_id)]
    );
}

#[tokio::test]
async fn clearing_a_waitlisted_rsvp_promotes_no_one() {
    let w = world().await;
    let id = w
        .create(merge(w.body("Full"), json!({"capacity": 1})))
        .await;
    let (a, b) = (w.member(), w.member());
    w.rsvp(&a, &id, "going").await;
    w.rsvp(&b, &id, "going").await;
    let rows = w.count("outbox").await;
    let r = w.call("rsvp.clear", &b, json!({ "eventId": id })).await;
    ok(&r);
    assert_eq!(r.body["status"], Value::Null);
    assert_eq!(
        r.body["rsvpCounts"],
        json!({"interested": 0, "going": 1, "not_going": 0, "waitlisted": 0, "pending": 0, "declined": 0})
    );
    assert_eq!(w.count("outbox").await, rows + 1);
    let last = w
        .outbox_of("event.rsvp.changed")
        .await
        .pop()
        .expect("clear row");
    assert_eq!(last["user_id"], b.user_id);
    assert_eq!(last["status"], Value::Null);
    assert_eq!(last["previous_status"], "waitlisted");
    assert_eq!(last["reason"], "cleared");
    assert_eq!(w.get(&a, &id).await.body["myRsvp"], "going");
    assert_eq!(w.get(&b, &id).await.body["myRsvp"], Value::Null);
    assert_eq!(w.count("event_rsvps").await, 1);
}

#[tokio::test]
async fn rsvp_list_is_for_managers_with_waitlist_positions() {
    let w = world().await;
    let id = w
        .create(merge(w.body("Seats"), json!({"capacity": 1})))
        .await;
    let (a, b, c, d) = (w.member(), w.member(), w.member(), w.member());
    w.rsvp(&a, &id, "going").await;
    w.rsvp(&b, &id, "going").await;
    w.rsvp(&c, &id, "interested").await;
    w.rsvp(&d, &id, "going").await;

    err(
        &w.call("rsvp.list", &a, json!({ "eventId": id })).await,
        403,
        "FORBIDDEN",
    );
    let r = w.call("rsvp.list", &w.org, json!({ "eventId": id })).await;
    ok(&r);
    assert_eq!(
        r.body["meta"],
        json!({"total": 4, "limit": 100, "offset": 0})
    );
    let items = r.body["items"].as_array().expect("items");
    let by_user = |u: &Identity| -> Value {
        items
            .iter()
            .find(|i| i["userId"] == u.user_id.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{} missing", u.user_id))
    };
    assert_eq!(by_user(&a)["status"], "going");
    assert_eq!(by_user(&a)["waitlistPosition"], Value::Null);
    assert_eq!(by_user(&b)["status"], "waitlisted");
    assert_eq!(by_user(&b)["waitlistPosition"], 1);
    assert_eq!(by_user(&c)["waitlistPosition"], Value::Null);
    assert_eq!(by_user(&d)["waitlistPosition"], 2);
    assert!(
        by_user(&a)["updatedAt"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );
    for item in items {
        assert_eq!(
            keys(item),
            [
                "guests",
                "status",
                "updatedAt",
                "userId",
                "waitlistPosition"
            ]
        );
    }

    // Positions move up when the head of the queue leaves.
    w.call("rsvp.clear", &b, json!({ "eventId": id })).await;
    let r = w
        .call(
            "rsvp.list",
            &admin(w.tenant),
            json!({"event_id": id, "status": "waitlisted"}),
        )
        .await;
    ok(&r);
    assert_eq!(r.body["meta"]["total"], 1);
    assert_eq!(r.body["items"][0]["userId"], d.user_id);
    assert_eq!(r.body["items"][0]["waitlistPosition"], 1);

    // Pagination.
    let p1 = w
        .call("rsvp.list", &w.org, json!({"eventId": id, "limit": 2}))
        .await;
    let p2 = w
        .call(
            "rsvp.list",
            &w.org,
            json!({"eventId": id, "limit": 2, "offset": 2}),
        )
        .await;
    ok(&p1);
    ok(&p2);
    assert_eq!(
        p1.body["meta"],
        json!({"total": 3, "limit": 2, "offset": 0})
    );
    assert_eq!(p1.body["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(p2.body["items"].as_array().map(Vec::len), Some(1));
    let mut seen: Vec<Value> = p1.body["items"]
        .as_array()
        .into_iter()
        .chain(p2.body["items"].as_array())
        .flatten()
        .map(|i| i["userId"].clone())
        .collect();
    seen.sort_by_key(|v| v.to_string());
    seen.dedup();
    assert_eq!(seen.len(), 3);
    field_error(
        &w.call("rsvp.list", &w.org, json!({"eventId": id, "limit": 0}))
            .await,
        "limit",
    );
}

// -------------------------------------------------------------- attendance

#[tokio::test]
async fn attendance_first_mark_wins() {
    let w = world().await;
    let id = w.create(w.body("Show up")).await;
    let guest_id = Uuid::new_v4();
    let member = w.member();

    // From the previous service's tests: without the permission, 403.
    err(
        &w.call(
            "attendance.mark",
            &member,
            json!({"eventId": id, "userId": guest_id.to_string()}),
        )
        .await,
        403,
        "FORBIDDEN",
    );
    err(
        &w.call(
            "attendance.mark",
            &w.org,
            json!({"eventId": id, "userId": "bob"}),
        )
        .await,
        400,
        "INVALID_USER_ID",
    );
    assert_eq!(w.count("event_attendance").await, 0);

    let first = w
        .call(
            "attendance.mark",
            &w.org,
            json!({"eventId": id, "userId": guest_id.to_string().to_uppercase()}),
        )
        .await;
    ok(&first);
    assert_eq!(first.body["eventId"], id);
    assert_eq!(first.body["userId"], guest_id.to_string());
    assert_eq!(first.body["markedBy"], w.org_id.to_string());
    assert!(
        first.body["markedAt"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );

    let marked = w.outbox_of("event.attendance.marked").await;
    assert_eq!(marked.len(), 1);
    let p = &marked[0];
    assert_eq!(p["event_id"], id);
    assert_eq!(p["tenant_id"], w.tenant.to_string());
    assert_eq!(p["user_id"], guest_id.to_string());
    assert_eq!(p["marked_by"], w.org_id.to_string());
    assert_eq!(p["marked_at"], first.body["markedAt"]);

    // A second mark, by someone else: the first one stands, nothing written.
    let rows = w.count("outbox").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = w
        .call(
            "attendance.mark",
            &admin(w.tenant),
            json!({"event_id": id, "user_id": guest_id.to_string()}),
        )
        .await;
    ok(&second);
    assert_eq!(second.body, first.body);
    assert_eq!(w.count("outbox").await, rows);
    assert_eq!(w.count("event_attendance").await, 1);

    // attendance.list: managers and markers only.
    err(
        &w.call("attendance.list", &member, json!({ "eventId": id }))
            .await,
        403,
        "FORBIDDEN",
    );
    let other = Uuid::new_v4();
    ok(&w
        .call(
            "attendance.mark",
            &w.org,
            json!({"eventId": id, "userId": other.to_string()}),
        )
        .await);
    let list = w
        .call("attendance.list", &w.org, json!({ "eventId": id }))
        .await;
    ok(&list);
    assert_eq!(
        list.body["meta"],
        json!({"total": 2, "limit": 100, "offset": 0})
    );
    let items = list.body["items"].as_array().expect("items");
    assert_eq!(items[0]["userId"], guest_id.to_string());
    assert_eq!(items[0]["markedBy"], w.org_id.to_string());
    assert_eq!(items[0]["markedAt"], first.body["markedAt"]);
    assert_eq!(keys(&items[0]), ["markedAt", "markedBy", "userId"]);
    let page = w
        .call(
            "attendance.list",
            &w.org,
            json!({"eventId": id, "limit": 1, "offset": 1}),
        )
        .await;
    ok(&page);
    assert_eq!(page.body["items"][0]["userId"], other.to_string());
    let counted: i32 = sqlx::query_scalar("SELECT attended FROM event_counters")
        .fetch_one(&w.app.db)
        .await
        .expect("counters");
    assert_eq!(counted, 2);
}

// --------------------------------------------------------------------- ics

#[tokio::test]
async fn ics_reflects_updates_and_cancellation() {
    let w = world().await;
    let id = w
        .create(merge(
            w.body("Launch, party; fun"),
            json!({"locationText": "Hall", "locationUrl": "https://example.com/l"}),
        ))
        .await;
    let member = w.member();
    let ics = w.call("event.ics", &member, json!({ "id": id })).await;
    ok(&ics);
    assert_eq!(
        ics.content_type.as_deref(),
        Some("text/calendar; charset=utf-8")
    );
    let text = ics.body.as_str().expect("calendar text").to_string();
    assert!(text.starts_with("BEGIN:VCALENDAR\r\n"), "{text}");
    assert!(text.ends_with("END:VCALENDAR\r\n"), "{text}");
    assert!(
        text.contains("SUMMARY:Launch\\, party\\; fun\r\n"),
        "{text}"
    );
    assert!(text.contains("DTSTART:20300110T100000Z\r\n"), "{text}");
    assert!(text.contains("DTEND:20300110T120000Z\r\n"), "{text}");
    assert!(
        text.contains(&format!("UID:{id}@acme.updspace\r\n")),
        "{text}"
    );
    assert!(text.contains("SEQUENCE:0\r\n"), "{text}");
    assert!(text.contains("STATUS:CONFIRMED\r\n"), "{text}");

    ok(&w
        .call("event.update", &w.org, json!({"id": id, "title": "Launch"}))
        .await);
    let text = w
        .call("event.ics", &member, json!({ "id": id }))
        .await
        .body
        .as_str()
        .expect("text")
        .to_string();
    assert!(text.contains("SEQUENCE:1\r\n"), "{text}");
    assert!(text.contains("SUMMARY:Launch\r\n"), "{text}");

    ok(&w.call("event.cancel", &w.org, json!({ "id": id })).await);
    let ics = w.call("event.ics", &member, json!({ "id": id })).await;
    ok(&ics);
    let text = ics.body.as_str().expect("text");
    assert!(text.contains("STATUS:CANCELLED\r\n"), "{text}");
    assert!(text.contains("SEQUENCE:2\r\n"), "{text}");
    err(
        &w.call("event.ics", &member, json!({"id": "nope"})).await,
        400,
        "INVALID_EVENT_ID",
    );
}

// --------------------------------------------------------------- encodings

#[tokio::test]
async fn replies_use_the_requests_encoding() {
    let w = world().await;
    let json_client = w.client.clone().with_encoding(Encoding::Json);
    let mp_client = w.client.clone().with_encoding(Encoding::Msgpack);

    let j = json_client
        .call("event.create", &w.org, &w.body("J"))
        .await
        .expect("reply");
    ok(&j);
    assert_eq!(j.content_type.as_deref(), Some("application/json"));
    let m = mp_client
        .call("event.create", &w.org, &w.body("M"))
        .await
        .expect("reply");
    ok(&m);
    assert_eq!(m.content_type.as_deref(), Some("application/msgpack"));
    // msgpack carries the same values as JSON: named maps, strings for ids and times.
    assert_eq!(keys(&j.body), keys(&m.body));
    assert!(m.body["id"].is_string());
    assert!(m.body["startsAt"].is_string());
    assert_eq!(m.body["rsvpCounts"]["going"], 0);

    // Errors too.
    let je = json_client
        .call("event.get", &w.org, &json!({"id": "nope"}))
        .await
        .expect("reply");
    err(&je, 400, "INVALID_EVENT_ID");
    assert_eq!(je.content_type.as_deref(), Some("application/json"));
    let me = mp_client
        .call("event.get", &w.org, &json!({"id": "nope"}))
        .await
        .expect("reply");
    err(&me, 400, "INVALID_EVENT_ID");
    assert_eq!(me.content_type.as_deref(), Some("application/msgpack"));

    // Without a Content-Type: `{` means JSON, anything else msgpack.
    for encoding in [Encoding::Json, Encoding::Msgpack] {
        let c = w.client.clone().with_encoding(encoding);
        let body = json!({ "id": j.body["id"] });
        let payload = encoding.encode(&body);
        let subject = c.subject("event.get");
        let signed = c.signed_headers(
            &subject,
            &w.org,
            &payload,
            &Uuid::new_v4().to_string(),
            updspace_events::auth::now_unix(),
        );
        let mut headers = async_nats::HeaderMap::new();
        for (k, vs) in signed.iter() {
            let name: &str = k.as_ref();
            if name.eq_ignore_ascii_case("Content-Type") {
                continue;
            }
            for v in vs {
                headers.append(name, v.as_str());
            }
        }
        let r = c.send(subject, headers, payload).await.expect("reply");
        ok(&r);
        assert_eq!(r.content_type.as_deref(), Some(encoding.content_type()));
        assert_eq!(r.body["title"], "J");
    }
}

// ---------------------------------------------------------- micro service

/// Finds this test's service instance among every `events` service on the
/// server (other tests run theirs at the same time): its id and INFO.
async fn our_service(app: &TestApp) -> (String, Value) {
    let prefix = format!("{}.v1.", app.isolation.prefix);
    for _ in 0..5 {
        let inbox = app.nats.new_inbox();
        let mut sub = app.nats.subscribe(inbox.clone()).await.expect("subscribe");
        app.nats
            .publish_with_reply("$SRV.INFO.events", inbox, "".into())
            .await
            .expect("publish");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, sub.next()).await {
            let info: Value = serde_json::from_slice(&msg.payload).expect("info json");
            let ours = info["endpoints"].as_array().is_some_and(|eps| {
                eps.iter().any(|e| {
                    e["subject"]
                        .as_str()
                        .is_some_and(|s| s.starts_with(&prefix))
                })
            });
            if ours {
                return (info["id"].as_str().expect("id").to_string(), info);
            }
        }
    }
    panic!("no events service with prefix {prefix} answered $SRV.INFO");
}

#[tokio::test]
async fn srv_ping_info_and_stats_answer_with_all_endpoints() {
    let w = world().await;
    ok(&w.call("event.create", &w.org, w.body("Counted")).await);
    let (id, info) = our_service(&w.app).await;
    assert_eq!(info["name"], "events");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));

    let ping = w
        .app
        .nats
        .request(format!("$SRV.PING.events.{id}"), "".into())
        .await
        .expect("ping");
    let ping: Value = serde_json::from_slice(&ping.payload).expect("ping json");
    assert_eq!(ping["name"], "events");
    assert_eq!(ping["id"], id);
    assert_eq!(ping["version"], env!("CARGO_PKG_VERSION"));
    // The unaddressed ping answers too (first responder wins).
    let any = w
        .app
        .nats
        .request("$SRV.PING.events", "".into())
        .await
        .expect("ping");
    let any: Value = serde_json::from_slice(&any.payload).expect("ping json");
    assert_eq!(any["name"], "events");

    let stats = w
        .app
        .nats
        .request(format!("$SRV.STATS.events.{id}"), "".into())
        .await
        .expect("stats");
    let stats: Value = serde_json::from_slice(&stats.payload).expect("stats json");
    assert_eq!(stats["name"], "events");
    let endpoints = stats["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 30, "{stats}");
    let mut subjects: Vec<String> = endpoints
        .iter()
        .map(|e| e["subject"].as_str().expect("subject").to_string())
        .collect();
    subjects.sort();
    let mut expected: Vec<String> = [
        "event.create",
        "event.get",
        "event.list",
        "event.update",
        "event.cancel",
        "rsvp.set",
        "rsvp.clear",
        "rsvp.list",
        "attendance.mark",
        "attendance.list",
        "event.ics",
        "dsar.export",
        "dsar.erase",
        "admin.roles.list",
        "admin.roles.grant",
        "admin.roles.revoke",
        "membership.add",
        "membership.remove",
        "membership.list",
        "admin.audit.list",
        "me.capabilities",
        "series.get",
        "series.ics",
        "rsvp.approve",
        "rsvp.decline",
        "event.stats",
        "feed.create",
        "feed.list",
        "feed.revoke",
        "event.import",
    ]
    .iter()
    .map(|op| format!("{}.v1.{op}", w.app.isolation.prefix))
    .collect();
    expected.sort();
    assert_eq!(subjects, expected);
    for e in endpoints {
        assert_eq!(e["queue_group"], "events", "{e}");
    }
    let create = endpoints
        .iter()
        .find(|e| {
            e["subject"]
                .as_str()
                .is_some_and(|s| s.ends_with(".v1.event.create"))
        })
        .expect("create endpoint");
    assert!(
        create["num_requests"].as_u64().unwrap_or(0) >= 1,
        "{create}"
    );
}

// ------------------------------------------------------------- concurrency

#[tokio::test]
async fn concurrent_rsvps_never_overfill_and_queue_everyone_else() {
    let w = world().await;
    let id = w
        .create(merge(w.body("Rush"), json!({"capacity": 5})))
        .await;
    let people: Vec<Identity> = (0..20).map(|_| w.member()).collect();
    let set = json!({"eventId": id, "status": "going"});
    let replies =
        futures::future::join_all(people.iter().map(|p| w.client.call("rsvp.set", p, &set))).await;
    let mut going = 0;
    let mut waiting = 0;
    for r in replies {
        let r = r.expect("reply");
        ok(&r);
        match r.body["status"].as_str() {
            Some("going") => going += 1,
            Some("waitlisted") => waiting += 1,
            other => panic!("unexpected status {other:?}"),
        }
    }
    assert_eq!((going, waiting), (5, 15));
    let got = w.get(&w.org, &id).await;
    assert_eq!(
        got.body["rsvpCounts"],
        json!({"interested": 0, "going": 5, "not_going": 0, "waitlisted": 15, "pending": 0, "declined": 0})
    );
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status::text, count(*) FROM event_rsvps GROUP BY 1 ORDER BY 1")
            .fetch_all(&w.app.db)
            .await
            .expect("rows");
    assert_eq!(
        rows,
        [("going".to_string(), 5), ("waitlisted".to_string(), 15)]
    );
    assert_eq!(w.outbox_of("event.rsvp.changed").await.len(), 20);
    let list = w
        .call(
            "rsvp.list",
            &w.org,
            json!({"eventId": id, "status": "waitlisted"}),
        )
        .await;
    ok(&list);
    let mut positions: Vec<i64> = list.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["waitlistPosition"].as_i64().expect("position"))
        .collect();
    positions.sort_unstable();
    assert_eq!(positions, (1..=15).collect::<Vec<i64>>());

    // Everyone going leaves at once: the first five in the queue move up.
    let going_people: Vec<&Identity> = {
        let mut v = Vec::new();
        for p in &people {
            if w.get(p, &id).await.body["myRsvp"] == "going" {
                v.push(p);
            }
        }
        v
    };
    let first_five: Vec<String> = list.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["waitlistPosition"].as_i64().is_some_and(|p| p <= 5))
        .map(|i| i["userId"].as_str().expect("user").to_string())
        .collect();
    let clear = json!({ "eventId": id });
    let replies = futures::future::join_all(
        going_people
            .iter()
            .map(|p| w.client.call("rsvp.clear", p, &clear)),
    )
    .await;
    for r in replies {
        ok(&r.expect("reply"));
    }
    let got = w.get(&w.org, &id).await;
    assert_eq!(got.body["rsvpCounts"]["going"], 5);
    assert_eq!(got.body["rsvpCounts"]["waitlisted"], 10);
    let mut promoted: Vec<String> = w
        .outbox_of("event.rsvp.changed")
        .await
        .into_iter()
        .filter(|p| p["reason"] == "promoted")
        .map(|p| p["user_id"].as_str().expect("user").to_string())
        .collect();
    promoted.sort();
    let mut expected = first_five;
    expected.sort();
    assert_eq!(promoted, expected);
}

#[tokio::test]
async fn concurrent_retries_of_one_create_make_one_event() {
    let w = world().await;
    let body = w.body("Retried");
    let payload = w.client.encoding.encode(&body);
    let subject = w.client.subject("event.create");
    let now = updspace_events::auth::now_unix();
    // Eight retries of the same request id, each freshly signed.
    let replies = futures::future::join_all((0..8).map(|i| {
        let headers = w
            .client
            .signed_headers(&subject, &w.org, &payload, "retry-id", now - i);
        w.client.send(subject.clone(), headers, payload.clone())
    }))
    .await;
    let mut ids = Vec::new();
    for r in replies {
        let r = r.expect("reply");
        ok(&r);
        ids.push(r.body["id"].clone());
    }
    // Every reply names the one stored event.
    let stored: Vec<(Uuid,)> = sqlx::query_as("SELECT id FROM events")
        .fetch_all(&w.app.db)
        .await
        .expect("rows");
    assert_eq!(stored.len(), 1);
    for id in &ids {
        assert_eq!(*id, json!(stored[0].0.to_string()), "{ids:?}");
    }
    assert_eq!(w.count("events").await, 1);
    assert_eq!(w.outbox_of("event.created").await.len(), 1);
}
