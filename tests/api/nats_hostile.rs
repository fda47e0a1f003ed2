//! Hostile input over NATS: every bad request gets the contract's error
//! (`docs/nats-api.md`, "Replies and errors"), changes nothing, never hangs
//! and never answers 500.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use serde_json::{Value, json};
use updspace_events::auth::{ContextHeaders, RequestParts, sign_headers_v2, sign_v1};
use updspace_events::client::{CallReply, EventsClient, Identity};
use updspace_events::encoding::Encoding;
use uuid::Uuid;

use crate::helpers::{TEST_SECRET, TestApp, admin, identity};

// ---------------------------------------------------------------- harness

struct World {
    app: TestApp,
    client: EventsClient,
    tenant: Uuid,
    org_id: Uuid,
    org: Identity,
}

async fn world_with(adjust: impl FnOnce(&mut updspace_events::config::Settings)) -> World {
    let app = TestApp::spawn_with(adjust).await;
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

async fn world() -> World {
    world_with(|_| {}).await
}

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
}

#[track_caller]
fn err(r: &CallReply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{:?} {}", r.code, r.body);
    assert_eq!(r.code.as_deref(), Some(code), "{}", r.body);
    assert_eq!(r.body["error"]["code"], code, "{}", r.body);
    assert!(r.body["error"]["message"].is_string(), "{}", r.body);
    assert!(r.body["error"]["details"].is_object(), "{}", r.body);
}

#[track_caller]
fn unauthorized(r: &CallReply, message: &str) {
    err(r, 401, "UNAUTHORIZED");
    assert_eq!(r.body["error"]["message"], message, "{}", r.body);
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

/// Row counts of the tables a write touches.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Rows {
    events: i64,
    rsvps: i64,
    attendance: i64,
    outbox: i64,
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

    async fn create(&self, body: Value) -> String {
        let r = self.call("event.create", &self.org, body).await;
        ok(&r);
        r.body["id"].as_str().expect("id").to_string()
    }

    async fn rows(&self) -> Rows {
        let n = |table: &str| {
            let db = self.app.db.clone();
            let sql = format!("SELECT count(*) FROM {table}");
            async move {
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&db)
                    .await
                    .expect("count")
            }
        };
        Rows {
            events: n("events").await,
            rsvps: n("event_rsvps").await,
            attendance: n("event_attendance").await,
            outbox: n("outbox").await,
        }
    }

    /// A correctly signed request with raw bytes and a chosen Content-Type
    /// (`None`: no Content-Type header).
    async fn raw(
        &self,
        op: &str,
        who: &Identity,
        payload: &[u8],
        content_type: Option<&str>,
    ) -> CallReply {
        let subject = self.client.subject(op);
        let headers = sign(
            &subject,
            payload,
            &Uuid::new_v4().to_string(),
            who,
            updspace_events::auth::now_unix(),
        );
        let headers = match content_type {
            Some(ct) => with(&headers, "Content-Type", ct),
            None => headers,
        };
        self.send(&subject, &headers, payload).await
    }

    async fn send(&self, subject: &str, headers: &[(String, String)], payload: &[u8]) -> CallReply {
        self.client
            .send(
                subject.to_string(),
                to_map(headers),
                Bytes::copy_from_slice(payload),
            )
            .await
            .unwrap_or_else(|e| panic!("{subject}: {e}"))
    }
}

/// The v2 header set for `who`, without Content-Type.
fn sign(
    subject: &str,
    payload: &[u8],
    request_id: &str,
    who: &Identity,
    ts: i64,
) -> Vec<(String, String)> {
    sign_headers_v2(
        TEST_SECRET,
        &RequestParts::nats(subject, payload),
        &ContextHeaders {
            request_id,
            tenant_id: &who.tenant_id,
            tenant_slug: &who.tenant_slug,
            user_id: Some(&who.user_id),
            master_flags: who.master_flags.as_deref(),
        },
        ts,
    )
}

fn to_map(headers: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(k.as_str(), v.as_str());
    }
    map
}

fn without(headers: &[(String, String)], name: &str) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case(name))
        .cloned()
        .collect()
}

fn with(headers: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    let mut out = without(headers, name);
    out.push((name.to_string(), value.to_string()));
    out
}

fn msgpack(v: &Value) -> Vec<u8> {
    Encoding::Msgpack.encode(v).to_vec()
}

// -------------------------------------------------------- malformed bodies

#[tokio::test]
async fn malformed_bodies_are_400_invalid_body_and_change_nothing() {
    let w = world().await;
    let id = w.create(w.body("Target")).await;
    let before = w.rows().await;

    let json_cases: Vec<&[u8]> = vec![
        br#"{"title":"#,
        br#"{"title": "x",}"#,
        br#"{"id": "x"} trailing"#,
        br#"{'single': 'quotes'}"#,
        b"{\"title\": \"\\ud800\"}",
        b"[1, 2]",
        br#""a string""#,
        b"42",
        b"true",
        b"\xff\xfe{}",
    ];
    for payload in &json_cases {
        for op in ["event.create", "event.update", "rsvp.set", "event.list"] {
            let r = w.raw(op, &w.org, payload, Some("application/json")).await;
            err(&r, 400, "INVALID_BODY");
            assert_eq!(r.content_type.as_deref(), Some("application/json"));
            assert!(r.body["error"]["request_id"].is_string());
        }
    }

    let msgpack_cases: Vec<Vec<u8>> = vec![
        vec![0xc1],                         // never used
        vec![0x82, 0xa1, b'a'],             // truncated map
        vec![0xdf, 0xff, 0xff, 0xff, 0xff], // map claiming 4 billion entries
        vec![0x81, 0x01, 0x02],             // integer key
        msgpack(&json!([1, 2])),
        msgpack(&json!("a string")),
        msgpack(&json!(42)),
        msgpack(&json!({"a": 1}))
            .into_iter()
            .chain([0x01])
            .collect(), // trailing byte
    ];
    for payload in &msgpack_cases {
        for op in ["event.create", "event.update", "rsvp.set", "event.get"] {
            let r = w
                .raw(op, &w.org, payload, Some("application/msgpack"))
                .await;
            err(&r, 400, "INVALID_BODY");
            assert_eq!(r.content_type.as_deref(), Some("application/msgpack"));
        }
    }

    // Array/string/number where an object is needed, via the normal client.
    for body in [json!([{"id": id}]), json!(id), json!(7), json!(null)] {
        for op in [
            "event.create",
            "event.update",
            "event.get",
            "rsvp.set",
            "attendance.mark",
        ] {
            let r = w.call(op, &w.org, body.clone()).await;
            err(&r, 400, "INVALID_BODY");
        }
    }

    // An empty body where one is required.
    for op in [
        "event.create",
        "event.get",
        "event.update",
        "event.cancel",
        "rsvp.set",
        "rsvp.clear",
        "attendance.mark",
        "event.ics",
    ] {
        for ct in [Some("application/json"), Some("application/msgpack"), None] {
            let r = w.raw(op, &w.org, b"", ct).await;
            err(&r, 400, "INVALID_BODY");
        }
    }
    assert_eq!(w.rows().await, before);
    assert_eq!(
        w.call("event.get", &w.org, json!({"id": id})).await.body["version"],
        1
    );
}

#[tokio::test]
async fn wrong_types_are_422_naming_the_camel_case_field() {
    let w = world().await;
    let id = w.create(w.body("Target")).await;
    let before = w.rows().await;
    let base = w.body("T");
    for (patch, field) in [
        (json!({"title": 5}), "title"),
        (json!({"title": ["x"]}), "title"),
        (json!({"scopeId": 7}), "scopeId"),
        (json!({"scopeType": "tenant"}), "scopeType"),
        (json!({"capacity": "x"}), "capacity"),
        (json!({"capacity": true}), "capacity"),
        (json!({"startsAt": true}), "startsAt"),
        (json!({"endsAt": {}}), "endsAt"),
        (json!({"description": 1}), "description"),
        (json!({"locationText": []}), "locationText"),
        (json!({"locationUrl": 3}), "locationUrl"),
        (json!({"gameId": false}), "gameId"),
        (json!({"visibility": 1}), "visibility"),
        (json!({"visibility": null}), "visibility"),
    ] {
        let r = w
            .call("event.create", &w.org, merge(base.clone(), patch.clone()))
            .await;
        field_error(&r, field);
        assert_eq!(
            r.body["error"]["details"]["fields"]
                .as_object()
                .map(|f| f.len()),
            Some(1),
            "{patch}: {}",
            r.body
        );
    }
    // snake_case input, camelCase in the error.
    let snake = json!({
        "scope_type": "TENANT", "scope_id": 7, "title": "T",
        "starts_at": "2030-01-10T10:00:00Z", "ends_at": 1.5e300,
    });
    let r = w.call("event.create", &w.org, snake).await;
    field_error(&r, "scopeId");
    field_error(&r, "endsAt");
    // Missing fields are listed together.
    let r = w.call("event.create", &w.org, json!({})).await;
    for f in ["scopeType", "scopeId", "title", "startsAt", "endsAt"] {
        field_error(&r, f);
    }

    for (body, field) in [
        (json!({"eventId": id, "status": 1}), "status"),
        (json!({"eventId": id, "status": "maybe"}), "status"),
    ] {
        field_error(&w.call("rsvp.set", &w.org, body).await, field);
    }
    for (body, field) in [
        (json!({"id": id, "title": 5}), "title"),
        (json!({"id": id, "capacity": "x"}), "capacity"),
        (json!({"id": id, "startsAt": "not a date"}), "startsAt"),
        (
            json!({"id": id, "locationUrl": "javascript:alert(1)"}),
            "locationUrl",
        ),
    ] {
        field_error(&w.call("event.update", &w.org, body).await, field);
    }
    field_error(
        &w.call(
            "attendance.mark",
            &w.org,
            json!({"eventId": id, "userId": 5}),
        )
        .await,
        "userId",
    );
    field_error(&w.call("event.list", &w.org, json!({"q": 5})).await, "q");
    field_error(
        &w.call("event.cancel", &w.org, json!({"id": id, "reason": 5}))
            .await,
        "reason",
    );
    assert_eq!(w.rows().await, before);
}

#[tokio::test]
async fn oversized_and_unsafe_fields_are_422() {
    let w = world().await;
    let id = w.create(w.body("Target")).await;
    let before = w.rows().await;
    let base = w.body("T");
    let long_url = format!("https://example.com/{}", "a".repeat(2049 - 20));
    assert_eq!(long_url.chars().count(), 2049);
    let cases = [
        (json!({"title": "x".repeat(256)}), "title"),
        (json!({"title": "é".repeat(256)}), "title"),
        (json!({"title": ""}), "title"),
        (json!({"title": "   "}), "title"),
        (json!({"description": "d".repeat(20_001)}), "description"),
        (json!({"locationText": "l".repeat(256)}), "locationText"),
        (json!({"locationUrl": long_url}), "locationUrl"),
        (json!({"locationUrl": "javascript:alert(1)"}), "locationUrl"),
        (json!({"locationUrl": "JAVASCRIPT:alert(1)"}), "locationUrl"),
        (
            json!({"locationUrl": "data:text/html,<script>"}),
            "locationUrl",
        ),
        (json!({"locationUrl": "ftp://example.com"}), "locationUrl"),
        (json!({"locationUrl": "https://"}), "locationUrl"),
        (json!({"gameId": "g".repeat(129)}), "gameId"),
        (
            json!({"scopeType": "COMMUNITY", "scopeId": "s".repeat(129)}),
            "scopeId",
        ),
        (
            json!({"scopeType": "COMMUNITY", "scopeId": "a\nb"}),
            "scopeId",
        ),
        (json!({"scopeId": Uuid::new_v4().to_string()}), "scopeId"),
        (json!({"capacity": 1_000_001}), "capacity"),
        (json!({"capacity": u64::MAX}), "capacity"),
        (json!({"startsAt": "10000-01-01T00:00:00Z"}), "startsAt"),
        (json!({"startsAt": 1e300}), "startsAt"),
    ];
    for (patch, field) in &cases {
        let r = w
            .call("event.create", &w.org, merge(base.clone(), patch.clone()))
            .await;
        field_error(&r, field);
        let mut update = patch.clone();
        update["id"] = json!(id);
        if !["scopeId", "scopeType"].contains(field) {
            let r = w.call("event.update", &w.org, update).await;
            field_error(&r, field);
        }
    }
    field_error(
        &w.call(
            "event.cancel",
            &w.org,
            json!({"id": id, "reason": "r".repeat(1001)}),
        )
        .await,
        "reason",
    );
    field_error(
        &w.call("event.list", &w.org, json!({"q": "q".repeat(201)}))
            .await,
        "q",
    );
    assert_eq!(w.rows().await, before);

    // The limits count characters, not bytes: 255 two-byte characters fit.
    let r = w
        .call(
            "event.create",
            &w.org,
            merge(base.clone(), json!({"title": "é".repeat(255)})),
        )
        .await;
    ok(&r);
    assert_eq!(
        r.body["title"].as_str().map(|t| t.chars().count()),
        Some(255)
    );
    let r = w
        .call(
            "event.create",
            &w.org,
            merge(base, json!({"description": "ж".repeat(20_000), "locationUrl": format!("https://example.com/{}", "a".repeat(2048 - 20))})),
        )
        .await;
    ok(&r);
}

#[tokio::test]
async fn a_body_over_the_size_limit_is_413() {
    let w = world_with(|s| s.max_body_bytes = Some("2048".into())).await;
    let id = w.create(w.body("Small")).await;
    let before = w.rows().await;
    let big = merge(w.body("Big"), json!({"description": "x".repeat(3000)}));
    for encoding in [Encoding::Json, Encoding::Msgpack] {
        let c = w.client.clone().with_encoding(encoding);
        let r = c.call("event.create", &w.org, &big).await.expect("reply");
        err(&r, 413, "PAYLOAD_TOO_LARGE");
        assert_eq!(r.content_type.as_deref(), Some(encoding.content_type()));
        let r = c
            .call(
                "event.update",
                &w.org,
                &json!({"id": id, "description": "y".repeat(5000)}),
            )
            .await
            .expect("reply");
        err(&r, 413, "PAYLOAD_TOO_LARGE");
        let r = c
            .call(
                "event.get",
                &w.org,
                &json!({"id": id, "pad": "p".repeat(2100)}),
            )
            .await
            .expect("reply");
        err(&r, 413, "PAYLOAD_TOO_LARGE");
    }
    assert_eq!(w.rows().await, before);
    // Just under the limit is fine.
    let fits = merge(w.body("Fits"), json!({"description": "x".repeat(1500)}));
    assert!(Encoding::Json.encode(&fits).len() < 2048);
    ok(&w
        .client
        .clone()
        .with_encoding(Encoding::Json)
        .call("event.create", &w.org, &fits)
        .await
        .expect("reply"));
}

// --------------------------------------------------------------------- ids

#[tokio::test]
async fn event_ids_are_validated_and_canonicalised() {
    let w = world().await;
    let id = w
        .create(merge(w.body("Target"), json!({"capacity": 5})))
        .await;
    let member = w.member();
    let before = w.rows().await;
    let targeted = [
        "event.get",
        "event.update",
        "event.cancel",
        "rsvp.set",
        "rsvp.clear",
        "rsvp.list",
        "attendance.mark",
        "attendance.list",
        "event.ics",
    ];
    for op in targeted {
        for bad in [
            json!("nope"),
            json!(""),
            json!(5),
            json!({}),
            json!(format!("{id}x")),
        ] {
            let body = json!({"id": bad, "eventId": bad, "title": "x", "status": "going",
                              "userId": member.user_id});
            let r = w.call(op, &w.org, body).await;
            err(&r, 400, "INVALID_EVENT_ID");
        }
        // No id at all.
        let r = w
            .call(op, &w.org, json!({"title": "x", "status": "going"}))
            .await;
        assert!(r.status == 422 || r.status == 400, "{op}: {}", r.body);
        assert_ne!(r.status, 500);
    }
    assert_eq!(w.rows().await, before);

    // Upper-case, braced, URN and hyphen-less spellings reach the same event.
    let simple = id.replace('-', "");
    for spelling in [
        id.to_uppercase(),
        format!("{{{id}}}"),
        format!("urn:uuid:{id}"),
        simple,
        format!("  {id} "),
    ] {
        let r = w
            .call("event.get", &member, json!({ "id": spelling }))
            .await;
        ok(&r);
        assert_eq!(r.body["id"], id, "{spelling}");
    }
    let r = w
        .call(
            "rsvp.set",
            &member,
            json!({"eventId": id.to_uppercase(), "status": "going"}),
        )
        .await;
    ok(&r);
    assert_eq!(r.body["eventId"], id);
    let r = w
        .call(
            "rsvp.set",
            &member,
            json!({"eventId": format!("{{{id}}}"), "status": "going"}),
        )
        .await;
    ok(&r);
    let stored: Vec<(Uuid,)> = sqlx::query_as("SELECT event_id FROM event_rsvps")
        .fetch_all(&w.app.db)
        .await
        .expect("rows");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0.to_string(), id);
    assert_eq!(w.rows().await.outbox, before.outbox + 1);
}

#[tokio::test]
async fn upper_case_identity_headers_are_canonicalised() {
    let w = world().await;
    // The organizer signs with an upper-case X-User-Id.
    let loud = Identity {
        user_id: w.org_id.to_string().to_uppercase(),
        ..w.org.clone()
    };
    let r = w
        .call(
            "event.create",
            &loud,
            merge(w.body("Mine"), json!({"visibility": "private"})),
        )
        .await;
    ok(&r);
    assert_eq!(r.body["createdBy"], w.org_id.to_string());
    let id = r.body["id"].as_str().expect("id").to_string();
    // The creator sees their private event whatever the spelling.
    for who in [&w.org, &loud] {
        ok(&w.call("event.get", who, json!({ "id": id })).await);
        let l = w.call("event.list", who, json!({})).await;
        ok(&l);
        assert_eq!(l.body["meta"]["total"], 1);
    }
    let braced = Identity {
        user_id: format!("{{{}}}", w.org_id),
        ..w.org.clone()
    };
    ok(&w.call("event.get", &braced, json!({ "id": id })).await);
    // An upper-case tenant id is the same tenant.
    let public = w.create(w.body("Open")).await;
    let shouting_member = Identity {
        tenant_id: w.tenant.to_string().to_uppercase(),
        ..w.member()
    };
    ok(&w
        .call("event.get", &shouting_member, json!({ "id": public }))
        .await);
    let r = w
        .call(
            "rsvp.set",
            &shouting_member,
            json!({"eventId": public, "status": "going"}),
        )
        .await;
    ok(&r);
    let tenants: Vec<(Uuid, Uuid)> = sqlx::query_as("SELECT tenant_id, user_id FROM event_rsvps")
        .fetch_all(&w.app.db)
        .await
        .expect("rows");
    assert_eq!(tenants.len(), 1);
    assert_eq!(tenants[0].0, w.tenant);
    assert_eq!(
        tenants[0].1.to_string(),
        shouting_member.user_id.to_lowercase()
    );
    // Someone else, spelled any way, does not see the private event.
    let stranger = Identity {
        user_id: Uuid::new_v4().to_string().to_uppercase(),
        ..w.org.clone()
    };
    err(
        &w.call("event.get", &stranger, json!({ "id": id })).await,
        404,
        "NOT_FOUND",
    );
}

// ----------------------------------------------------------------- headers

#[tokio::test]
async fn missing_and_bad_headers_fail_in_contract_order() {
    let w = world().await;
    let before = w.rows().await;
    let subject = w.client.subject("event.create");
    let payload = msgpack(&w.body("Headers"));
    let now = updspace_events::auth::now_unix();
    let fresh = || Uuid::new_v4().to_string();
    let good = |rid: &str| {
        with(
            &sign(&subject, &payload, rid, &w.org, now),
            "Content-Type",
            "application/msgpack",
        )
    };

    // No X-Request-Id: first, whatever else is wrong.
    let h = without(&without(&good(&fresh()), "X-Request-Id"), "X-Tenant-Id");
    let h = without(&h, "X-Updspace-Signature");
    let r = w.send(&subject, &h, &payload).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.code.as_deref(), Some("MISSING_REQUEST_ID"));
    assert_eq!(r.body["error"]["request_id"], Value::Null);
    let r = w
        .send(
            &subject,
            &with(&good(&fresh()), "X-Request-Id", "  "),
            &payload,
        )
        .await;
    err(&r, 400, "MISSING_REQUEST_ID");

    // No tenant (id or slug): before the signature is looked at.
    for name in ["X-Tenant-Id", "X-Tenant-Slug"] {
        let h = without(&without(&good(&fresh()), name), "X-Updspace-Signature");
        err(
            &w.send(&subject, &h, &payload).await,
            400,
            "MISSING_TENANT_CONTEXT",
        );
        let h = with(&good(&fresh()), name, "");
        err(
            &w.send(&subject, &h, &payload).await,
            400,
            "MISSING_TENANT_CONTEXT",
        );
    }
    let r = w
        .send(&subject, &without(&good(&fresh()), "X-Tenant-Id"), &payload)
        .await;
    err(&r, 400, "MISSING_TENANT_CONTEXT");
    assert!(r.body["error"]["request_id"].is_string());

    // A tenant that is not a UUID: 400 even when correctly signed.
    let acme = Identity {
        tenant_id: "acme".into(),
        ..w.org.clone()
    };
    let h = sign(&subject, &payload, &fresh(), &acme, now);
    err(
        &w.send(&subject, &h, &payload).await,
        400,
        "INVALID_TENANT_ID",
    );
    let h = without(&h, "X-Updspace-Signature");
    err(
        &w.send(&subject, &h, &payload).await,
        400,
        "INVALID_TENANT_ID",
    );

    // Signature problems: 401 saying which.
    for name in ["X-Updspace-Signature", "X-Updspace-Timestamp"] {
        let r = w
            .send(&subject, &without(&good(&fresh()), name), &payload)
            .await;
        unauthorized(&r, "Missing internal signature");
    }
    let r = w
        .send(
            &subject,
            &with(&good(&fresh()), "X-Updspace-Timestamp", "soon"),
            &payload,
        )
        .await;
    unauthorized(&r, "Invalid internal timestamp");
    for skew in [-301, 305, -100_000] {
        let h = sign(&subject, &payload, &fresh(), &w.org, now + skew);
        let r = w.send(&subject, &h, &payload).await;
        unauthorized(&r, "Internal signature expired");
    }
    // Inside the window is fine (an old but valid signature).
    let h = sign(&subject, &payload, &fresh(), &w.org, now - 250);
    ok(&w.send(&subject, &h, &payload).await);
    let after_one = w.rows().await;
    assert_eq!(after_one.events, before.events + 1);

    // A v1 signature is refused on NATS.
    let rid = fresh();
    let v1 = sign_v1(TEST_SECRET, "NATS", &subject, &payload, &rid, now);
    let h: Vec<(String, String)> = vec![
        ("X-Request-Id".into(), rid.clone()),
        ("X-Tenant-Id".into(), w.tenant.to_string()),
        ("X-Tenant-Slug".into(), "acme".into()),
        ("X-User-Id".into(), w.org_id.to_string()),
        ("X-Updspace-Timestamp".into(), now.to_string()),
        ("X-Updspace-Signature".into(), v1.clone()),
    ];
    let r = w.send(&subject, &h, &payload).await;
    unauthorized(&r, "NATS requests must be signed with signature version 2");
    // An explicit "1" is not a version the service accepts at all.
    let r = w
        .send(
            &subject,
            &with(&h, "X-Updspace-Signature-Version", "1"),
            &payload,
        )
        .await;
    err(&r, 401, "UNAUTHORIZED");
    let r = w
        .send(
            &subject,
            &with(&good(&fresh()), "X-Updspace-Signature-Version", "3"),
            &payload,
        )
        .await;
    unauthorized(&r, "Unsupported signature version");
    // A v2 signature without the version header is checked as v1: refused.
    let r = w
        .send(
            &subject,
            &without(&good(&fresh()), "X-Updspace-Signature-Version"),
            &payload,
        )
        .await;
    unauthorized(&r, "NATS requests must be signed with signature version 2");
    // Wrong signatures.
    let g = good(&fresh());
    let sig = g
        .iter()
        .find(|(k, _)| k == "X-Updspace-Signature")
        .map(|(_, v)| v.clone())
        .expect("signature");
    for bad in [
        sig.to_uppercase(),
        format!("{}0", &sig[..63]),
        "0".repeat(64),
        "zz".into(),
        sign_v1(TEST_SECRET, "NATS", &subject, &payload, &fresh(), now),
    ] {
        if bad == sig {
            continue;
        }
        let r = w
            .send(&subject, &with(&g, "X-Updspace-Signature", &bad), &payload)
            .await;
        unauthorized(&r, "Invalid internal signature");
    }

    // Then the user checks.
    let anonymous = sign_headers_v2(
        TEST_SECRET,
        &RequestParts::nats(&subject, &payload),
        &ContextHeaders {
            request_id: &fresh(),
            tenant_id: &w.tenant.to_string(),
            tenant_slug: "acme",
            user_id: None,
            master_flags: None,
        },
        now,
    );
    err(
        &w.send(&subject, &anonymous, &payload).await,
        401,
        "UNAUTHENTICATED",
    );
    let bob = Identity {
        user_id: "bob".into(),
        ..w.org.clone()
    };
    let h = sign(&subject, &payload, &fresh(), &bob, now);
    err(
        &w.send(&subject, &h, &payload).await,
        400,
        "INVALID_USER_ID",
    );

    assert_eq!(w.rows().await, after_one);
}

#[tokio::test]
async fn tampered_identity_or_payload_is_401() {
    let w = world().await;
    let id = w.create(w.body("Target")).await;
    let before = w.rows().await;
    let member_id = Uuid::new_v4();
    let member = identity(w.tenant, member_id);
    let now = updspace_events::auth::now_unix();

    let update_subject = w.client.subject("event.update");
    let payload = msgpack(&json!({"id": id, "title": "Owned"}));
    let signed = |who: &Identity| {
        with(
            &sign(
                &update_subject,
                &payload,
                &Uuid::new_v4().to_string(),
                who,
                now,
            ),
            "Content-Type",
            "application/msgpack",
        )
    };
    // Signed as a plain member, presented as the organizer or an admin.
    let as_member = signed(&member);
    for (name, value) in [
        ("X-User-Id", w.org_id.to_string()),
        ("X-Master-Flags", r#"{"system_admin":true}"#.to_string()),
        ("X-Tenant-Id", Uuid::new_v4().to_string()),
        ("X-Tenant-Slug", "other".to_string()),
    ] {
        let r = w
            .send(&update_subject, &with(&as_member, name, &value), &payload)
            .await;
        unauthorized(&r, "Invalid internal signature");
    }
    // Signed with flags, flags stripped or changed.
    let flagged = Identity {
        master_flags: Some(r#"{"suspended":true}"#.into()),
        ..w.org.clone()
    };
    let h = signed(&flagged);
    let r = w
        .send(&update_subject, &without(&h, "X-Master-Flags"), &payload)
        .await;
    unauthorized(&r, "Invalid internal signature");
    let r = w
        .send(
            &update_subject,
            &with(&h, "X-Master-Flags", r#"{"suspended":false}"#),
            &payload,
        )
        .await;
    unauthorized(&r, "Invalid internal signature");
    // A signed request replayed with another body, subject or timestamp.
    let as_org = signed(&w.org);
    let other_payload = msgpack(&json!({"id": id, "title": "Other"}));
    let r = w.send(&update_subject, &as_org, &other_payload).await;
    unauthorized(&r, "Invalid internal signature");
    let r = w
        .send(&w.client.subject("event.cancel"), &as_org, &payload)
        .await;
    unauthorized(&r, "Invalid internal signature");
    let r = w
        .send(
            &update_subject,
            &with(&as_org, "X-Updspace-Timestamp", &(now - 1).to_string()),
            &payload,
        )
        .await;
    unauthorized(&r, "Invalid internal signature");
    let r = w
        .send(
            &update_subject,
            &with(&as_org, "X-Request-Id", "another-id"),
            &payload,
        )
        .await;
    unauthorized(&r, "Invalid internal signature");
    assert_eq!(w.rows().await, before);
    assert_eq!(
        w.call("event.get", &w.org, json!({ "id": id })).await.body["title"],
        "Target"
    );

    // A second X-User-Id after the signed one changes nothing: the
    // request is the signer's (the member's), who may not update.
    let mut doubled = signed(&member);
    doubled.push(("X-User-Id".into(), w.org_id.to_string()));
    let r = w.send(&update_subject, &doubled, &payload).await;
    err(&r, 403, "FORBIDDEN");
    assert_eq!(w.rows().await, before);
}

#[tokio::test]
async fn a_replayed_request_is_refused_and_writes_once() {
    let w = world().await;
    let now = updspace_events::auth::now_unix();
    let subject = w.client.subject("event.create");
    let payload = msgpack(&w.body("Once"));
    let h = with(
        &sign(&subject, &payload, "replay-1", &w.org, now),
        "Content-Type",
        "application/msgpack",
    );
    let first = w.send(&subject, &h, &payload).await;
    ok(&first);
    let second = w.send(&subject, &h, &payload).await;
    unauthorized(&second, "Replayed request");
    let rows = w.rows().await;
    assert_eq!(rows.events, 1);
    assert_eq!(rows.outbox, 1);

    let id = first.body["id"].as_str().expect("id").to_string();
    let member = w.member();
    let rsvp_subject = w.client.subject("rsvp.set");
    let rsvp_payload = msgpack(&json!({"eventId": id, "status": "going"}));
    let h = with(
        &sign(&rsvp_subject, &rsvp_payload, "replay-2", &member, now),
        "Content-Type",
        "application/msgpack",
    );
    ok(&w.send(&rsvp_subject, &h, &rsvp_payload).await);
    // Clear, then replay the set: it must not come back.
    ok(&w
        .call("rsvp.clear", &member, json!({ "eventId": id }))
        .await);
    let replay = w.send(&rsvp_subject, &h, &rsvp_payload).await;
    unauthorized(&replay, "Replayed request");
    assert_eq!(w.rows().await.rsvps, 0);
    assert_eq!(w.rows().await.outbox, 3);

    // Reads are guarded too.
    let get_subject = w.client.subject("event.get");
    let get_payload = msgpack(&json!({ "id": id }));
    let h = with(
        &sign(&get_subject, &get_payload, "replay-3", &member, now),
        "Content-Type",
        "application/msgpack",
    );
    ok(&w.send(&get_subject, &h, &get_payload).await);
    unauthorized(
        &w.send(&get_subject, &h, &get_payload).await,
        "Replayed request",
    );

    // Many identical copies at once: exactly one is applied.
    let h = with(
        &sign(
            &subject,
            &msgpack(&w.body("Burst")),
            "replay-4",
            &w.org,
            now,
        ),
        "Content-Type",
        "application/msgpack",
    );
    let burst_payload = msgpack(&w.body("Burst"));
    let replies =
        futures::future::join_all((0..8).map(|_| w.send(&subject, &h, &burst_payload))).await;
    assert_eq!(replies.iter().filter(|r| r.status == 200).count(), 1);
    assert!(replies.iter().all(|r| r.status == 200 || r.status == 401));
    assert_eq!(w.rows().await.events, 2);
}

#[tokio::test]
async fn authentication_failures_take_precedence_over_bad_bodies() {
    let w = world().await;
    let before = w.rows().await;
    let now = updspace_events::auth::now_unix();
    let bodies: Vec<(&str, Vec<u8>, &str)> = vec![
        ("event.create", br#"{"title":"#.to_vec(), "application/json"),
        ("event.create", vec![0xc1], "application/msgpack"),
        ("event.create", br#"[1,2]"#.to_vec(), "application/json"),
        (
            "event.create",
            serde_json::to_vec(&json!({"title": 5})).expect("json"),
            "application/json",
        ),
        (
            "event.create",
            serde_json::to_vec(&json!({"title": "x".repeat(300)})).expect("json"),
            "application/json",
        ),
        (
            "event.get",
            serde_json::to_vec(&json!({"id": "nope"})).expect("json"),
            "application/json",
        ),
        (
            "event.list",
            serde_json::to_vec(&json!({"limit": 0})).expect("json"),
            "application/json",
        ),
        ("event.create", b"<xml/>".to_vec(), "application/xml"),
        ("event.create", b"".to_vec(), "application/json"),
    ];
    for (op, payload, ct) in &bodies {
        let subject = w.client.subject(op);
        let good = with(
            &sign(&subject, payload, &Uuid::new_v4().to_string(), &w.org, now),
            "Content-Type",
            ct,
        );
        // No signature.
        let r = w
            .send(&subject, &without(&good, "X-Updspace-Signature"), payload)
            .await;
        unauthorized(&r, "Missing internal signature");
        // Expired.
        let old = with(
            &sign(
                &subject,
                payload,
                &Uuid::new_v4().to_string(),
                &w.org,
                now - 400,
            ),
            "Content-Type",
            ct,
        );
        unauthorized(
            &w.send(&subject, &old, payload).await,
            "Internal signature expired",
        );
        // Tampered identity.
        let r = w
            .send(
                &subject,
                &with(&good, "X-User-Id", &Uuid::new_v4().to_string()),
                payload,
            )
            .await;
        unauthorized(&r, "Invalid internal signature");
    }
    assert_eq!(w.rows().await, before);
}

// ------------------------------------------------------------------- flags

#[tokio::test]
async fn suspended_and_banned_users_are_denied() {
    let w = world().await;
    let public = w.create(w.body("Open")).await;
    let before = w.rows().await;
    // Denied everything: an event they could see were they not blocked is
    // 403 (so they learn why), untargeted operations are 403.
    for flags in [
        r#"{"suspended":true}"#,
        r#"{"banned":true}"#,
        r#"{"status":"banned"}"#,
        r#"{"status":"Suspended"}"#,
        r#"{"suspended":true,"system_admin":true}"#,
        r#"{"status":"banned","system_admin":true}"#,
    ] {
        let who = Identity {
            master_flags: Some(flags.into()),
            ..w.org.clone()
        };
        err(
            &w.call("event.list", &who, json!({})).await,
            403,
            "FORBIDDEN",
        );
        err(
            &w.call("event.create", &who, w.body("Nope")).await,
            403,
            "FORBIDDEN",
        );
        for (op, body) in [
            ("event.get", json!({ "id": public })),
            ("event.ics", json!({ "id": public })),
            ("event.update", json!({"id": public, "title": "Mine now"})),
            ("event.cancel", json!({ "id": public })),
            ("rsvp.set", json!({"eventId": public, "status": "going"})),
            ("rsvp.clear", json!({ "eventId": public })),
            ("rsvp.list", json!({ "eventId": public })),
            (
                "attendance.mark",
                json!({"eventId": public, "userId": Uuid::new_v4().to_string()}),
            ),
            ("attendance.list", json!({ "eventId": public })),
        ] {
            let r = w.call(op, &who, body).await;
            err(&r, 403, "FORBIDDEN");
        }
    }
    assert_eq!(w.rows().await, before);
    // Look-alikes are not flags: only the literal `true` (or the status) counts.
    for flags in [
        r#"{"suspended":false}"#,
        r#"{"banned":"yes"}"#,
        "suspended",
        "{not json",
    ] {
        let who = Identity {
            master_flags: Some(flags.into()),
            ..w.member()
        };
        ok(&w.call("event.list", &who, json!({})).await);
        ok(&w.call("event.get", &who, json!({ "id": public })).await);
    }
    // Admin look-alikes do not grant anything.
    let fake_admin = Identity {
        master_flags: Some(r#"{"system_admin":"true"}"#.into()),
        ..w.member()
    };
    err(
        &w.call("event.create", &fake_admin, w.body("Nope")).await,
        403,
        "FORBIDDEN",
    );
    assert_eq!(w.rows().await, before);
}

// ---------------------------------------------------------- unknown fields

#[tokio::test]
async fn unknown_and_server_owned_fields_are_ignored() {
    let w = world().await;
    let other_user = Uuid::new_v4();
    let forced_id = Uuid::new_v4();
    let r = w
        .call(
            "event.create",
            &w.org,
            merge(
                w.body("Plain"),
                json!({
                    "id": forced_id.to_string(), "tenantId": Uuid::new_v4().to_string(),
                    "createdBy": other_user.to_string(), "created_by": other_user.to_string(),
                    "createdAt": "2000-01-01T00:00:00Z", "version": 99, "status": "cancelled",
                    "rsvpCounts": {"going": 1000}, "myRsvp": "going", "__proto__": {"admin": true},
                    "nested": {"deep": [1, 2, {"x": null}]}, "": "empty key",
                }),
            ),
        )
        .await;
    ok(&r);
    let v = &r.body;
    assert_ne!(v["id"], forced_id.to_string());
    assert_eq!(v["tenantId"], w.tenant.to_string());
    assert_eq!(v["createdBy"], w.org_id.to_string());
    assert_ne!(v["createdAt"], "2000-01-01T00:00:00Z");
    assert_eq!(v["version"], 1);
    assert_eq!(v["status"], "scheduled");
    assert_eq!(v["rsvpCounts"]["going"], 0);
    assert_eq!(v["myRsvp"], Value::Null);
    assert!(v.get("nested").is_none());
    let id = v["id"].as_str().expect("id").to_string();

    // Update: only editable fields apply; scope and status cannot be set.
    let r = w
        .call(
            "event.update",
            &w.org,
            json!({"id": id, "title": "Renamed", "status": "cancelled", "version": 7,
                   "scopeType": "COMMUNITY", "scopeId": "c1", "createdBy": other_user.to_string(),
                   "extra": true}),
        )
        .await;
    ok(&r);
    assert_eq!(r.body["title"], "Renamed");
    assert_eq!(r.body["status"], "scheduled");
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["scopeType"], "TENANT");
    assert_eq!(r.body["createdBy"], w.org_id.to_string());

    // An RSVP is always the caller's own, whatever userId the body names.
    let member_id = Uuid::new_v4();
    let member = identity(w.tenant, member_id);
    let r = w
        .call(
            "rsvp.set",
            &member,
            json!({"eventId": id, "status": "going", "userId": other_user.to_string(),
                   "user_id": other_user.to_string()}),
        )
        .await;
    ok(&r);
    let users: Vec<(Uuid,)> = sqlx::query_as("SELECT user_id FROM event_rsvps")
        .fetch_all(&w.app.db)
        .await
        .expect("rows");
    assert_eq!(users, [(member_id,)]);
    let stored: (String, i64) = sqlx::query_as("SELECT status::text, version FROM events")
        .fetch_one(&w.app.db)
        .await
        .expect("row");
    assert_eq!(stored, ("scheduled".to_string(), 2));
}

#[tokio::test]
async fn an_unsupported_content_type_is_415() {
    let w = world().await;
    let before = w.rows().await;
    let payload = serde_json::to_vec(&w.body("Typed")).expect("json");
    for ct in [
        "text/plain",
        "application/xml",
        "application/cbor",
        "multipart/form-data; boundary=x",
    ] {
        let r = w.raw("event.create", &w.org, &payload, Some(ct)).await;
        err(&r, 415, "UNSUPPORTED_MEDIA_TYPE");
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
    }
    assert_eq!(w.rows().await, before);
    // Parameters and case are tolerated.
    for ct in ["application/json; charset=utf-8", "APPLICATION/JSON"] {
        let r = w.raw("event.create", &w.org, &payload, Some(ct)).await;
        ok(&r);
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
    }
    let r = w
        .raw(
            "event.create",
            &w.org,
            &msgpack(&w.body("Typed")),
            Some("application/x-msgpack"),
        )
        .await;
    ok(&r);
    assert_eq!(w.rows().await.events, before.events + 3);
}

// ------------------------------------------------- hostile strings, headers

#[tokio::test]
async fn nul_characters_and_odd_headers_never_reach_postgres_as_500s() {
    let w = world().await;
    let id = w.create(w.body("Target")).await;
    let before = w.rows().await;
    let base = w.body("T");
    for (patch, field) in [
        (json!({"title": "a\u{0}b"}), "title"),
        (json!({"description": "a\u{0}b"}), "description"),
        (json!({"locationText": "\u{0}"}), "locationText"),
        (json!({"gameId": "g\u{0}"}), "gameId"),
    ] {
        let r = w
            .call("event.create", &w.org, merge(base.clone(), patch.clone()))
            .await;
        field_error(&r, field);
        let mut update = patch.clone();
        update["id"] = json!(id);
        field_error(&w.call("event.update", &w.org, update).await, field);
    }
    field_error(
        &w.call(
            "event.cancel",
            &w.org,
            json!({"id": id, "reason": "no\u{0}"}),
        )
        .await,
        "reason",
    );
    field_error(
        &w.call("event.list", &w.org, json!({"q": "a\u{0}"})).await,
        "q",
    );
    assert_eq!(w.rows().await, before);

    // Other control characters and odd Unicode are stored as sent.
    let r = w
        .call(
            "event.create",
            &w.org,
            merge(
                base.clone(),
                json!({"title": "tab\there 🎲 \u{202e}rtl", "description": "line1\nline2\r\n"}),
            ),
        )
        .await;
    ok(&r);
    assert_eq!(r.body["title"], "tab\there 🎲 \u{202e}rtl");
    ok(&w.call("event.list", &w.org, json!({"q": "🎲"})).await);

    // Oversized trace context is dropped, never stored or fatal.
    let subject = w.client.subject("event.create");
    let payload = msgpack(&merge(base.clone(), json!({"title": "Traced"})));
    let now = updspace_events::auth::now_unix();
    let h = with(
        &sign(&subject, &payload, &Uuid::new_v4().to_string(), &w.org, now),
        "Content-Type",
        "application/msgpack",
    );
    let h = with(
        &h,
        "traceparent",
        &format!("00-{}-{}-01", "a".repeat(200), "b".repeat(16)),
    );
    let h = with(&h, "tracestate", &"k=v,".repeat(300));
    let r = w.send(&subject, &h, &payload).await;
    ok(&r);
    let tp: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT traceparent, tracestate FROM outbox WHERE payload->>'title' = 'Traced'",
    )
    .fetch_all(&w.app.db)
    .await
    .expect("rows");
    assert_eq!(tp.len(), 1);
    assert!(tp[0].0.as_ref().is_none_or(|t| t.len() <= 128), "{tp:?}");
    assert!(tp[0].1.as_ref().is_none_or(|t| t.len() <= 512), "{tp:?}");
    // A valid traceparent is kept.
    let valid_tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let payload = msgpack(&merge(base.clone(), json!({"title": "Traced ok"})));
    let h = with(
        &with(
            &sign(&subject, &payload, &Uuid::new_v4().to_string(), &w.org, now),
            "Content-Type",
            "application/msgpack",
        ),
        "traceparent",
        valid_tp,
    );
    ok(&w.send(&subject, &h, &payload).await);
    let kept: Option<String> =
        sqlx::query_scalar("SELECT traceparent FROM outbox WHERE payload->>'title' = 'Traced ok'")
            .fetch_one(&w.app.db)
            .await
            .expect("row");
    assert_eq!(kept.as_deref(), Some(valid_tp));

    // A very long X-Request-Id still creates (once) and retries still dedupe.
    let long_rid = "r".repeat(1000);
    let body = merge(base, json!({"title": "Long id"}));
    let first = w
        .client
        .call_as("event.create", &w.org, &body, &long_rid)
        .await
        .expect("reply");
    ok(&first);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let retry = w
        .client
        .call_as("event.create", &w.org, &body, &long_rid)
        .await
        .expect("reply");
    ok(&retry);
    assert_eq!(retry.body["id"], first.body["id"]);
    let conflict = w
        .client
        .call_as("event.create", &w.org, &w.body("Other"), &long_rid)
        .await
        .expect("reply");
    err(&conflict, 409, "IDEMPOTENCY_CONFLICT");
    // The same long id through an admin (audited) works too.
    let a = admin(w.tenant);
    ok(&w
        .client
        .call_as("event.get", &a, &json!({ "id": id }), &"a".repeat(1000))
        .await
        .expect("reply"));
    // Its audit entry is written (the id shortened to what the log keeps).
    let mut audited = 0i64;
    for _ in 0..50 {
        audited = sqlx::query_scalar(
            "SELECT count(*) FROM audit_log WHERE action = 'system_admin.bypass' AND request_id LIKE 'aaaa%'",
        )
        .fetch_one(&w.app.db)
        .await
        .expect("count");
        if audited > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        audited > 0,
        "the admin call with a long request id was not audited"
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE title LIKE 'Long id'")
        .fetch_one(&w.app.db)
        .await
        .expect("count");
    assert_eq!(n, 1);
}

// ------------------------------------------------------------------- sweep

#[tokio::test]
async fn garbage_never_hangs_and_never_answers_500() {
    let w = world().await;
    let id = w.create(w.body("Target")).await;
    let member = w.member();
    // Cancel and erase last, so the others still meet a live event.
    let ops = [
        "event.create",
        "event.get",
        "event.list",
        "event.update",
        "rsvp.set",
        "rsvp.clear",
        "rsvp.list",
        "attendance.mark",
        "attendance.list",
        "event.ics",
        "dsar.export",
        "event.cancel",
        "dsar.erase",
    ];
    let values = [
        json!(null),
        json!({}),
        json!([]),
        json!(""),
        json!(-1),
        json!(1e308),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(true),
        json!({"a": {"b": {"c": [1, [2, [3]]]}}}),
        json!("\u{0}"),
        json!("x".repeat(5000)),
        json!("2030-01-10T10:00:00Z"),
        json!(id),
    ];
    let keys = [
        "id",
        "eventId",
        "userId",
        "status",
        "title",
        "scopeType",
        "scopeId",
        "startsAt",
        "endsAt",
        "capacity",
        "visibility",
        "limit",
        "offset",
        "from",
        "to",
        "q",
        "myRsvp",
        "createdBy",
        "reason",
        "locationUrl",
    ];
    let mut bodies: Vec<Value> = Vec::new();
    for key in keys {
        for v in &values {
            bodies.push(json!({ key: v }));
            bodies.push(json!({ "id": id, "eventId": id, key: v }));
        }
    }
    bodies.push(
        json!({"id": id, "eventId": id, "userId": member.user_id, "status": "going",
                       "title": "", "startsAt": null, "endsAt": 0, "capacity": -5}),
    );
    let json_client = w.client.clone().with_encoding(Encoding::Json);
    for op in ops {
        for (i, body) in bodies.iter().enumerate() {
            // Alternate encodings and callers (a member, an organizer).
            let (client, who) = if i % 2 == 0 {
                (&w.client, &member)
            } else {
                (&json_client, &w.org)
            };
            {
                let r = client
                    .call(op, who, body)
                    .await
                    .unwrap_or_else(|e| panic!("{op} {body}: {e}"));
                assert!(
                    r.status < 500,
                    "{op} {body}: {} {:?} {}",
                    r.status,
                    r.code,
                    r.body
                );
                if r.status != 200 {
                    assert!(
                        r.body["error"]["code"].is_string(),
                        "{op} {body}: {}",
                        r.body
                    );
                }
            }
        }
    }

    // Deep nesting, in both encodings, at every operation.
    let mut deep_json = "[".repeat(100_000);
    deep_json.push_str(&"]".repeat(100_000));
    let mut deep_obj = r#"{"id":"#.to_string();
    deep_obj.push_str(&"[".repeat(50_000));
    deep_obj.push_str(&"]".repeat(50_000));
    deep_obj.push('}');
    let mut deep_mp = vec![0x81, 0xa2, b'i', b'd'];
    deep_mp.extend(std::iter::repeat_n(0x91u8, 200_000));
    deep_mp.push(0xc0);
    let mut deep_map = Vec::new();
    for _ in 0..50_000 {
        deep_map.extend([0x81, 0xa1, b'a']);
    }
    deep_map.push(0xc0);
    for op in ops {
        for (payload, ct) in [
            (deep_json.as_bytes(), "application/json"),
            (deep_obj.as_bytes(), "application/json"),
            (&deep_mp[..], "application/msgpack"),
            (&deep_map[..], "application/msgpack"),
        ] {
            let r = w.raw(op, &w.org, payload, Some(ct)).await;
            assert!(
                r.status >= 400 && r.status < 500,
                "{op}: {} {}",
                r.status,
                r.body
            );
        }
    }
    // Still serving.
    ok(&w.call("event.get", &member, json!({ "id": id })).await);
}

/// `{"id": <id>, "capacity": <float>}` in msgpack, by hand (JSON has no NaN).
fn msgpack_capacity(id: &str, float: &[u8]) -> Vec<u8> {
    let mut p = vec![0x82, 0xa2, b'i', b'd', 0xd9, id.len() as u8];
    p.extend(id.as_bytes());
    p.push(0xa8);
    p.extend(b"capacity");
    p.extend(float);
    p
}

#[tokio::test]
async fn msgpack_numbers_json_cannot_hold_are_refused() {
    let w = world().await;
    let id = w
        .create(merge(w.body("Seats"), json!({"capacity": 3})))
        .await;
    let before = w.rows().await;
    let f64s = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
    let f32s = [f32::NAN, f32::INFINITY];
    let mut floats: Vec<Vec<u8>> = f64s
        .iter()
        .map(|f| std::iter::once(0xcb).chain(f.to_be_bytes()).collect())
        .collect();
    floats.extend(f32s.iter().map(|f| {
        std::iter::once(0xca)
            .chain(f.to_be_bytes())
            .collect::<Vec<u8>>()
    }));
    for float in &floats {
        // Not "null" (which would mean unlimited capacity): refused.
        let r = w
            .raw(
                "event.update",
                &w.org,
                &msgpack_capacity(&id, float),
                Some("application/msgpack"),
            )
            .await;
        err(&r, 400, "INVALID_BODY");
    }
    let got = w.call("event.get", &w.org, json!({ "id": id })).await;
    assert_eq!(got.body["capacity"], 3);
    assert_eq!(got.body["version"], 1);
    assert_eq!(w.rows().await, before);
    // A finite float that is a whole number is still a capacity.
    let five: Vec<u8> = std::iter::once(0xcb).chain(5.0f64.to_be_bytes()).collect();
    let r = w
        .raw(
            "event.update",
            &w.org,
            &msgpack_capacity(&id, &five),
            Some("application/msgpack"),
        )
        .await;
    ok(&r);
    assert_eq!(r.body["capacity"], 5);
}
