//! Role administration (`docs/authorization.md`, "Roles and bindings"):
//! `admin.roles.list|grant|revoke` over NATS and HTTP, and `events-svc
//! access bootstrap|grant|revoke|list`.
//!
//! `local` mode: only system admins; a grant makes `event.create` work
//! (at the tenant: everywhere; at a community: only there) and a revoke
//! undoes it; grants are idempotent; listings filter; every grant and revoke
//! is audited; bad bodies are 422. `access` mode, against a fake Access that
//! implements the tenant-admin API it really has (`/access/admin/roles` and
//! `/access/admin/role-bindings`) and verifies signatures: grant, revoke and
//! list are proxied (paths, bodies, headers, canonical ids recorded), a role
//! missing in Access is 409, Access down or unreachable is 503, `bootstrap`
//! creates the roles once. The binary's `access grant|revoke` in `local`
//! mode.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use updspace_events::client::{CallReply, Identity};
use uuid::Uuid;

use crate::helpers::{
    FakeAuthority, Isolation, RecordedCall, TEST_SECRET, TestApp, admin, cleanup, free_port,
    identity,
};

const ORGANIZER_KEYS: [&str; 3] = [
    "events.event.create",
    "events.event.manage",
    "events.attendance.mark",
];
const PARTICIPANT_KEYS: [&str; 2] = ["events.event.read", "events.rsvp.set"];

async fn call(app: &TestApp, op: &str, who: &Identity, body: Value) -> CallReply {
    app.client()
        .call(op, who, &body)
        .await
        .unwrap_or_else(|e| panic!("{op}: no reply: {e}"))
}

fn event_body(scope_type: &str, scope_id: &str) -> Value {
    json!({
        "scopeType": scope_type, "scopeId": scope_id, "title": "Board games",
        "startsAt": "2030-01-10T18:00:00Z", "endsAt": "2030-01-10T21:00:00Z",
    })
}

/// The status `event.create` answers `who` at a scope.
async fn create_status(app: &TestApp, who: &Identity, scope_type: &str, scope_id: &str) -> u16 {
    call(app, "event.create", who, event_body(scope_type, scope_id))
        .await
        .status
}

fn fields(body: &Value) -> BTreeSet<String> {
    body["error"]["details"]["fields"]
        .as_object()
        .map(|f| f.keys().cloned().collect())
        .unwrap_or_default()
}

fn assert_forbidden(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 403, "{what}: {body}");
    assert_eq!(body["error"]["code"], "FORBIDDEN", "{what}: {body}");
    assert_eq!(
        body["error"]["message"], "Tenant admin required",
        "{what}: {body}"
    );
}

/// An `audit_log` row: action, actor, target type, target id, request id,
/// details.
type AuditRow = (
    String,
    Option<Uuid>,
    String,
    Option<String>,
    Option<String>,
    Value,
);

/// `audit_log` rows of a tenant whose action starts with `role.`, once at
/// least `n` are there (the writer is asynchronous).
async fn role_audit(app: &TestApp, tenant: Uuid, n: usize) -> Vec<AuditRow> {
    for _ in 0..100 {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT action, actor_user_id, target_type, target_id, request_id, details
                 FROM audit_log WHERE tenant_id = $1 AND action LIKE 'role.%'
                 ORDER BY created_at, request_id",
        )
        .bind(tenant)
        .fetch_all(&app.db)
        .await
        .expect("audit rows");
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} role audit rows for tenant {tenant}");
}

// ---------------------------------------------------------------------------
// local mode
// ---------------------------------------------------------------------------

#[tokio::test]
async fn only_admins_may_use_the_role_operations() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let target = Uuid::new_v4().to_string();
    let member = identity(tenant, Uuid::new_v4());
    let suspended_admin = Identity {
        master_flags: Some(r#"{"system_admin":true,"suspended":true}"#.into()),
        ..identity(tenant, Uuid::new_v4())
    };
    let truthy_admin = Identity {
        master_flags: Some(r#"{"system_admin":"true"}"#.into()),
        ..identity(tenant, Uuid::new_v4())
    };
    for who in [&member, &suspended_admin, &truthy_admin] {
        for (op, body) in [
            ("admin.roles.list", json!({})),
            (
                "admin.roles.grant",
                json!({"userId": target, "role": "organizer"}),
            ),
            (
                "admin.roles.revoke",
                json!({"userId": target, "role": "organizer"}),
            ),
            // A bad body is refused as such, not validated: no schema leaks.
            ("admin.roles.grant", json!({"role": 7})),
        ] {
            let reply = call(&app, op, who, body).await;
            assert_forbidden(reply.status, &reply.body, op);
            assert_eq!(reply.code.as_deref(), Some("FORBIDDEN"));
        }
        for (method, path, body) in [
            ("GET", "/api/v1/events/admin/roles", None),
            ("GET", "/api/v1/admin/roles?role=organizer", None),
            (
                "POST",
                "/api/v1/events/admin/role-bindings",
                Some(json!({"userId": target, "role": "organizer"})),
            ),
            (
                "DELETE",
                "/api/v1/admin/role-bindings",
                Some(json!({"userId": target, "role": "organizer"})),
            ),
        ] {
            let reply = app.bff(method, path, who, body).await;
            assert_forbidden(reply.status, &reply.json(), &format!("{method} {path}"));
        }
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM role_bindings")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(count, 0);
}

#[tokio::test]
async fn a_tenant_grant_lets_a_user_create_and_a_revoke_takes_it_back() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let admin = admin(tenant);
    let user = Uuid::new_v4();
    let who = identity(tenant, user);
    let t = tenant.to_string();
    assert_eq!(create_status(&app, &who, "TENANT", &t).await, 403);

    // The id in any spelling; the role by its short name.
    let granted = call(
        &app,
        "admin.roles.grant",
        &admin,
        json!({"userId": user.to_string().to_uppercase(), "role": "organizer"}),
    )
    .await;
    assert_eq!(granted.status, 200, "{:?}", granted.body);
    let b = &granted.body;
    assert!(
        Uuid::parse_str(b["id"].as_str().expect("id")).is_ok(),
        "{b}"
    );
    assert_eq!(b["userId"], user.to_string());
    assert_eq!(b["role"], "events.organizer");
    assert_eq!(b["scopeType"], "TENANT");
    assert_eq!(b["scopeId"], t);
    assert_eq!(b["createdBy"], admin.user_id);
    assert!(
        b["createdAt"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{b}"
    );
    assert_eq!(b["created"], true);

    // At once on this instance, at every scope of the tenant.
    assert_eq!(create_status(&app, &who, "TENANT", &t).await, 200);
    assert_eq!(create_status(&app, &who, "COMMUNITY", "c-any").await, 200);

    // Granting again changes nothing and answers the same binding.
    let again = call(
        &app,
        "admin.roles.grant",
        &admin,
        json!({"user_id": user.to_string(), "role": "events.organizer", "scopeType": "TENANT", "scopeId": t}),
    )
    .await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["id"], b["id"]);
    assert_eq!(again.body["created"], false);

    let revoked = call(
        &app,
        "admin.roles.revoke",
        &admin,
        json!({"userId": user.to_string(), "role": "organizer"}),
    )
    .await;
    assert_eq!(revoked.status, 200, "{:?}", revoked.body);
    assert_eq!(revoked.body, json!({"revoked": 1}));
    assert_eq!(create_status(&app, &who, "TENANT", &t).await, 403);
    assert_eq!(create_status(&app, &who, "COMMUNITY", "c-any").await, 403);

    let nothing = call(
        &app,
        "admin.roles.revoke",
        &admin,
        json!({"userId": user.to_string(), "role": "organizer"}),
    )
    .await;
    assert_eq!(nothing.body, json!({"revoked": 0}));
}

#[tokio::test]
async fn a_community_grant_over_http_allows_create_only_in_that_community() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let admin = admin(tenant);
    let user = Uuid::new_v4();
    let who = identity(tenant, user);
    let granted = app
        .bff(
            "POST",
            "/api/v1/events/admin/role-bindings",
            &admin,
            Some(json!({"userId": user.to_string(), "role": "organizer",
                        "scopeType": "COMMUNITY", "scopeId": "c1"})),
        )
        .await;
    assert_eq!(granted.status, 200, "{}", granted.text);
    let binding = granted.json();
    assert_eq!(binding["scopeType"], "COMMUNITY");
    assert_eq!(binding["scopeId"], "c1");
    assert_eq!(binding["created"], true);
    assert_eq!(create_status(&app, &who, "COMMUNITY", "c1").await, 200);
    assert_eq!(create_status(&app, &who, "COMMUNITY", "c2").await, 403);
    assert_eq!(create_status(&app, &who, "TEAM", "c1").await, 403);
    assert_eq!(
        create_status(&app, &who, "TENANT", &tenant.to_string()).await,
        403
    );

    // The BFF alias, the binding named in the query.
    let id = binding["id"].as_str().expect("id");
    let revoked = app
        .bff(
            "DELETE",
            &format!("/api/v1/admin/role-bindings?bindingId={id}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert_eq!(revoked.json(), json!({"revoked": 1}));
    assert_eq!(create_status(&app, &who, "COMMUNITY", "c1").await, 403);

    // A revoke by user, role and scope in a DELETE body.
    let regranted = app
        .bff(
            "POST",
            "/api/v1/admin/role-bindings",
            &admin,
            Some(json!({"userId": user.to_string(), "role": "organizer",
                        "scopeType": "COMMUNITY", "scopeId": "c1"})),
        )
        .await;
    assert_eq!(regranted.json()["created"], true, "{}", regranted.text);
    let revoked = app
        .bff(
            "DELETE",
            "/api/v1/events/admin/role-bindings",
            &admin,
            Some(json!({"userId": user.to_string(), "role": "organizer",
                        "scopeType": "COMMUNITY", "scopeId": "c1"})),
        )
        .await;
    assert_eq!(revoked.json(), json!({"revoked": 1}), "{}", revoked.text);
}

#[tokio::test]
async fn listings_show_the_catalog_and_filter_the_tenants_bindings() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let admin = admin(tenant);
    let (u1, u2) = (Uuid::new_v4(), Uuid::new_v4());
    for body in [
        json!({"userId": u1.to_string(), "role": "organizer"}),
        json!({"userId": u1.to_string(), "role": "participant", "scopeType": "COMMUNITY", "scopeId": "c1"}),
        json!({"userId": u2.to_string(), "role": "organizer", "scopeType": "TEAM", "scopeId": "t1"}),
    ] {
        let reply = call(&app, "admin.roles.grant", &admin, body).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }
    // Another tenant's binding never shows.
    let other = Uuid::new_v4();
    let reply = call(
        &app,
        "admin.roles.grant",
        &crate::helpers::admin(other),
        json!({"userId": u1.to_string(), "role": "organizer"}),
    )
    .await;
    assert_eq!(reply.status, 200);

    // No body at all is an empty filter over NATS.
    let all = call(&app, "admin.roles.list", &admin, Value::Null).await;
    assert_eq!(all.status, 200, "{:?}", all.body);
    assert_eq!(
        all.body["roles"],
        json!([
            {"name": "events.participant", "permissions": PARTICIPANT_KEYS},
            {"name": "events.organizer", "permissions": ORGANIZER_KEYS},
            {"name": "events.admin", "permissions": ["events.admin.manage"]},
        ])
    );
    let bindings = all.body["bindings"].as_array().expect("bindings");
    assert_eq!(bindings.len(), 3, "{:?}", all.body);
    for b in bindings {
        for key in [
            "id",
            "userId",
            "role",
            "scopeType",
            "scopeId",
            "createdBy",
            "createdAt",
        ] {
            assert!(b.get(key).is_some_and(|v| !v.is_null()), "{key}: {b}");
        }
        assert_eq!(b["createdBy"], admin.user_id);
    }

    let count = |body: &Value| body["bindings"].as_array().map(Vec::len).unwrap_or(99);
    for (filter, n) in [
        (json!({"userId": u1.to_string()}), 2),
        (json!({"role": "organizer"}), 2),
        (json!({"role": "events.participant"}), 1),
        (json!({"scopeType": "TEAM"}), 1),
        (json!({"scopeId": "c1"}), 1),
        (
            json!({"scope_type": "TENANT", "user_id": u2.to_string()}),
            0,
        ),
        (json!({"limit": 1}), 1),
    ] {
        let reply = call(&app, "admin.roles.list", &admin, filter.clone()).await;
        assert_eq!(reply.status, 200, "{filter}: {:?}", reply.body);
        assert_eq!(count(&reply.body), n, "{filter}: {:?}", reply.body);
    }
    // The same over HTTP, the filters in the query.
    let reply = app
        .bff(
            "GET",
            &format!("/api/v1/events/admin/roles?role=organizer&userId={u2}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    assert_eq!(count(&body), 1, "{body}");
    assert_eq!(body["bindings"][0]["scopeType"], "TEAM");
    assert_eq!(body["bindings"][0]["scopeId"], "t1");
}

#[tokio::test]
async fn every_grant_and_revoke_is_audited() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let admin = admin(tenant);
    let admin_id = Uuid::parse_str(&admin.user_id).expect("admin id");
    let user = Uuid::new_v4();
    let client = app.client();
    let grant = json!({"userId": user.to_string(), "role": "organizer", "scopeType": "COMMUNITY", "scopeId": "c9"});
    for (op, body, rid) in [
        ("admin.roles.grant", grant.clone(), "rid-grant"),
        ("admin.roles.grant", grant.clone(), "rid-regrant"),
        ("admin.roles.revoke", grant.clone(), "rid-revoke"),
        ("admin.roles.revoke", grant.clone(), "rid-revoke-none"),
    ] {
        let reply = client.call_as(op, &admin, &body, rid).await.expect("reply");
        assert_eq!(reply.status, 200, "{op}: {:?}", reply.body);
    }
    let rows = role_audit(&app, tenant, 4).await;
    assert_eq!(rows.len(), 4, "{rows:?}");
    let expected = [
        ("role.granted", "rid-grant", json!(true)),
        ("role.granted", "rid-regrant", json!(false)),
        ("role.revoked", "rid-revoke", Value::Null),
        ("role.revoked", "rid-revoke-none", json!(0)),
    ];
    for (row, (action, rid, flag)) in rows.iter().zip(expected) {
        let (a, actor, target_type, target_id, request_id, details) = row;
        assert_eq!(a, action, "{row:?}");
        assert_eq!(*actor, Some(admin_id), "{row:?}");
        assert_eq!(target_type, "user", "{row:?}");
        assert_eq!(target_id.as_deref(), Some(user.to_string().as_str()));
        assert_eq!(request_id.as_deref(), Some(rid), "{row:?}");
        assert_eq!(details["role"], "events.organizer", "{row:?}");
        assert_eq!(details["scopeType"], "COMMUNITY", "{row:?}");
        assert_eq!(details["scopeId"], "c9", "{row:?}");
        assert_eq!(details["authz"], "local", "{row:?}");
        match action {
            "role.granted" => assert_eq!(details["created"], flag, "{row:?}"),
            _ if flag == json!(0) => assert_eq!(details["revoked"], 0, "{row:?}"),
            _ => assert!(details["bindingId"].is_string(), "{row:?}"),
        }
    }
}

#[tokio::test]
async fn bad_bodies_are_422_with_the_fields_named() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let admin = admin(tenant);
    let user = Uuid::new_v4().to_string();
    for (op, body, expected) in [
        ("admin.roles.grant", json!({}), &["role", "userId"][..]),
        (
            "admin.roles.grant",
            json!({"userId": user, "role": "owner"}),
            &["role"],
        ),
        (
            "admin.roles.grant",
            json!({"userId": "nope", "role": "organizer"}),
            &["userId"],
        ),
        (
            "admin.roles.grant",
            json!({"userId": 5, "role": ["organizer"]}),
            &["role", "userId"],
        ),
        // The nil id stands for erased users.
        (
            "admin.roles.grant",
            json!({"userId": Uuid::nil().to_string(), "role": "organizer"}),
            &["userId"],
        ),
        (
            "admin.roles.grant",
            json!({"userId": user, "role": "organizer", "scopeType": "GALAXY", "scopeId": "x"}),
            &["scopeType"],
        ),
        (
            "admin.roles.grant",
            json!({"userId": user, "role": "organizer", "scopeType": "COMMUNITY"}),
            &["scopeId"],
        ),
        (
            "admin.roles.grant",
            json!({"userId": user, "role": "organizer", "scopeType": "TENANT", "scopeId": Uuid::new_v4().to_string()}),
            &["scopeId"],
        ),
        (
            "admin.roles.grant",
            json!({"userId": user, "role": "organizer", "scopeType": "TEAM", "scopeId": "x".repeat(129)}),
            &["scopeId"],
        ),
        ("admin.roles.revoke", json!({}), &["role", "userId"]),
        (
            "admin.roles.revoke",
            json!({"bindingId": Uuid::new_v4().to_string(), "userId": user}),
            &["bindingId"],
        ),
        (
            "admin.roles.revoke",
            json!({"bindingId": ""}),
            &["bindingId"],
        ),
        (
            "admin.roles.revoke",
            json!({"bindingId": "not-a-uuid"}),
            &["bindingId"],
        ),
        ("admin.roles.list", json!({"limit": 0}), &["limit"]),
        (
            "admin.roles.list",
            json!({"role": "boss", "userId": "x", "scopeType": "tenant"}),
            &["role", "scopeType", "userId"],
        ),
    ] {
        let reply = call(&app, op, &admin, body.clone()).await;
        assert_eq!(reply.status, 422, "{op} {body}: {:?}", reply.body);
        assert_eq!(reply.body["error"]["code"], "VALIDATION_ERROR");
        let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            fields(&reply.body),
            expected,
            "{op} {body}: {:?}",
            reply.body
        );
    }
    // Not an object at all, or no body where one is needed: 400.
    let reply = call(&app, "admin.roles.grant", &admin, json!([1])).await;
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    let reply = call(&app, "admin.roles.grant", &admin, Value::Null).await;
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    assert_eq!(reply.body["error"]["code"], "INVALID_BODY");
    // Over HTTP the same 422.
    let reply = app
        .bff(
            "POST",
            "/api/v1/events/admin/role-bindings",
            &admin,
            Some(json!({"userId": user, "role": "overlord"})),
        )
        .await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert_eq!(fields(&reply.json()), BTreeSet::from(["role".to_string()]));
    let reply = app
        .bff("GET", "/api/v1/events/admin/roles?limit=5000", &admin, None)
        .await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    let reply = app
        .bff("PUT", "/api/v1/events/admin/role-bindings", &admin, None)
        .await;
    assert_eq!(reply.status, 405, "{}", reply.text);
    // `admin` is still an (invalid) event id on the event routes.
    for path in [
        "/api/v1/events/admin/ics",
        "/api/v1/admin",
        "/api/v1/admin/rsvps",
    ] {
        let reply = app.bff("GET", path, &admin, None).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.text);
        assert_eq!(reply.json()["error"]["code"], "INVALID_EVENT_ID", "{path}");
    }
}

// ---------------------------------------------------------------------------
// access mode: a fake Access with its real admin API
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct FakeRole {
    id: i64,
    tenant: String,
    service: String,
    name: String,
    keys: Vec<String>,
}

#[derive(Debug, Clone)]
struct FakeBinding {
    id: i64,
    tenant: String,
    user: String,
    scope_type: String,
    scope_id: String,
    role_id: i64,
}

const CATALOG: [&str; 5] = [
    "events.event.read",
    "events.event.create",
    "events.event.manage",
    "events.rsvp.set",
    "events.attendance.mark",
];

#[derive(Default)]
struct FakeAccess {
    roles: Mutex<Vec<FakeRole>>,
    bindings: Mutex<Vec<FakeBinding>>,
    /// (tenant, user) whom Access allows `portal.role_bindings.write`: its
    /// tenant admins, who pass its admin API's permission gates.
    tenant_admins: Mutex<Vec<(String, String)>>,
    next_id: AtomicI64,
    down: AtomicBool,
}

fn envelope(status: StatusCode, code: &str, message: &str, details: Value) -> (StatusCode, Value) {
    (
        status,
        json!({"error": {"code": code, "message": message, "details": details, "request_id": null}}),
    )
}

fn header<'a>(call: &'a RecordedCall, name: &str) -> &'a str {
    call.headers.get(name).map(String::as_str).unwrap_or("")
}

fn query_of(call: &RecordedCall) -> Vec<(String, String)> {
    url::form_urlencoded::parse(call.query.as_deref().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn canonical(id: &str) -> bool {
    Uuid::parse_str(id).is_ok_and(|u| u.to_string() == id)
}

impl FakeAccess {
    fn next(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn seed_roles(&self, tenant: Uuid) {
        for (name, keys) in [
            ("events.participant", &PARTICIPANT_KEYS[..]),
            ("events.organizer", &ORGANIZER_KEYS[..]),
        ] {
            let id = self.next();
            self.roles.lock().expect("roles").push(FakeRole {
                id,
                tenant: tenant.to_string(),
                service: "events".into(),
                name: name.into(),
                keys: keys.iter().map(|k| k.to_string()).collect(),
            });
        }
    }

    /// A role; a system template (shared by every tenant) has no tenant.
    fn role_json(r: &FakeRole) -> Value {
        let tenant = if r.tenant.is_empty() {
            Value::Null
        } else {
            json!(r.tenant)
        };
        json!({"id": r.id, "tenant_id": tenant, "service": r.service, "name": r.name,
               "is_system_template": r.tenant.is_empty(), "permission_keys": r.keys})
    }

    fn binding_json(&self, b: &FakeBinding) -> Value {
        let roles = self.roles.lock().expect("roles");
        let role = roles.iter().find(|r| r.id == b.role_id);
        json!({"id": b.id, "tenant_id": b.tenant, "user_id": b.user, "scope_type": b.scope_type,
               "scope_id": b.scope_id, "role_id": b.role_id,
               "role_name": role.map(|r| r.name.clone()), "role_service": role.map(|r| r.service.clone()),
               "created_at": "2030-01-01T00:00:00Z"})
    }

    fn respond(&self, call: &RecordedCall) -> (StatusCode, Value) {
        if self.down.load(Ordering::SeqCst) {
            return envelope(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "down",
                json!({}),
            );
        }
        let tenant = header(call, "x-tenant-id").to_string();
        let user = header(call, "x-user-id").to_string();
        if !canonical(&tenant) || header(call, "x-tenant-slug").is_empty() || !canonical(&user) {
            return envelope(
                StatusCode::BAD_REQUEST,
                "MISSING_TENANT_CONTEXT",
                "context",
                json!({}),
            );
        }
        let Some(rest) = call.path.strip_prefix("/api/v1/access/") else {
            return envelope(StatusCode::NOT_FOUND, "NOT_FOUND", "no route", json!({}));
        };
        let body: Value = serde_json::from_slice(&call.body).unwrap_or(Value::Null);
        if rest == "check" && call.method == "POST" {
            return self.check(&tenant, &body);
        }
        let query = query_of(call);
        let q = |k: &str| {
            query
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        // Any internal caller may read the roles a tenant sees.
        if rest == "roles" && call.method == "GET" {
            let roles = self.roles.lock().expect("roles");
            let list: Vec<Value> = roles
                .iter()
                .filter(|r| r.tenant.is_empty() || r.tenant == tenant)
                .filter(|r| q("service").is_none_or(|s| s == r.service))
                .map(|r| {
                    let mut v = Self::role_json(r);
                    if let Some(o) = v.as_object_mut() {
                        o.remove("permission_keys");
                    }
                    v
                })
                .collect();
            return (StatusCode::OK, Value::Array(list));
        }
        // The admin API: a system admin passes Access's permission gates,
        // a tenant admin those of its tenant-admin API.
        let flags: Value = serde_json::from_str(header(call, "x-master-flags")).unwrap_or_default();
        let tenant_admin = rest.starts_with("admin/")
            && self
                .tenant_admins
                .lock()
                .expect("admins")
                .contains(&(tenant.clone(), user.clone()));
        if flags["system_admin"] != json!(true) && !tenant_admin {
            return envelope(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "Permission denied",
                json!({}),
            );
        }
        match (call.method.as_str(), rest) {
            // System-admin role creation: a template when `tenant_id` is null.
            ("POST", "roles") => {
                let (Some(service), Some(name)) = (body["service"].as_str(), body["name"].as_str())
                else {
                    return (StatusCode::UNPROCESSABLE_ENTITY, json!({"detail": []}));
                };
                let template = body["tenant_id"].is_null();
                assert_eq!(body["is_system_template"], json!(template), "{body}");
                let owner = if template {
                    String::new()
                } else {
                    body["tenant_id"].as_str().unwrap_or("").to_string()
                };
                let keys: Vec<String> = body["permission_keys"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                let mut roles = self.roles.lock().expect("roles");
                if roles
                    .iter()
                    .any(|r| r.tenant == owner && r.service == service && r.name == name)
                {
                    return envelope(StatusCode::BAD_REQUEST, "ROLE_EXISTS", "exists", json!({}));
                }
                let role = FakeRole {
                    id: self.next(),
                    tenant: owner,
                    service: service.into(),
                    name: name.into(),
                    keys,
                };
                roles.push(role.clone());
                (StatusCode::CREATED, Self::role_json(&role))
            }
            ("GET", "admin/roles") => {
                let roles = self.roles.lock().expect("roles");
                let list: Vec<Value> = roles
                    .iter()
                    .filter(|r| r.tenant.is_empty() || r.tenant == tenant)
                    .filter(|r| q("service").is_none_or(|s| s == r.service))
                    .filter(|r| q("query").is_none_or(|s| r.name.contains(s)))
                    .map(Self::role_json)
                    .collect();
                (StatusCode::OK, Value::Array(list))
            }
            ("POST", "admin/roles") => {
                let (Some(service), Some(name), Some(keys)) = (
                    body["service"].as_str(),
                    body["name"].as_str(),
                    body["permission_keys"].as_array(),
                ) else {
                    return (StatusCode::UNPROCESSABLE_ENTITY, json!({"detail": []}));
                };
                let keys: Vec<String> = keys
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect();
                let missing: Vec<&String> = keys
                    .iter()
                    .filter(|k| !CATALOG.contains(&k.as_str()))
                    .collect();
                if !missing.is_empty() {
                    return envelope(
                        StatusCode::BAD_REQUEST,
                        "PERMISSION_NOT_FOUND",
                        "unknown",
                        json!({"missing": missing}),
                    );
                }
                let mut roles = self.roles.lock().expect("roles");
                if roles
                    .iter()
                    .any(|r| r.tenant == tenant && r.service == service && r.name == name)
                {
                    return envelope(StatusCode::BAD_REQUEST, "ROLE_EXISTS", "exists", json!({}));
                }
                let role = FakeRole {
                    id: self.next(),
                    tenant: tenant.clone(),
                    service: service.into(),
                    name: name.into(),
                    keys,
                };
                roles.push(role.clone());
                (StatusCode::CREATED, Self::role_json(&role))
            }
            ("GET", "admin/role-bindings/search") => {
                let list: Vec<FakeBinding> = self
                    .bindings
                    .lock()
                    .expect("bindings")
                    .iter()
                    .filter(|b| b.tenant == tenant)
                    .filter(|b| q("user_id").is_none_or(|u| u == b.user))
                    .filter(|b| q("scope_type").is_none_or(|t| t == b.scope_type))
                    .filter(|b| q("scope_id").is_none_or(|s| s == b.scope_id))
                    .cloned()
                    .collect();
                (
                    StatusCode::OK,
                    Value::Array(list.iter().map(|b| self.binding_json(b)).collect()),
                )
            }
            ("POST", "admin/role-bindings") => {
                let (Some(user_id), Some(scope_type), Some(scope_id), Some(role_id)) = (
                    body["user_id"].as_str(),
                    body["scope_type"].as_str(),
                    body["scope_id"].as_str(),
                    body["role_id"].as_i64(),
                ) else {
                    return (StatusCode::UNPROCESSABLE_ENTITY, json!({"detail": []}));
                };
                if !canonical(user_id) {
                    return (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        json!({"detail": ["user_id"]}),
                    );
                }
                if !self
                    .roles
                    .lock()
                    .expect("roles")
                    .iter()
                    .any(|r| r.id == role_id && (r.tenant.is_empty() || r.tenant == tenant))
                {
                    return envelope(
                        StatusCode::BAD_REQUEST,
                        "ROLE_NOT_FOUND",
                        "no role",
                        json!({}),
                    );
                }
                let binding = FakeBinding {
                    id: self.next(),
                    tenant: tenant.clone(),
                    user: user_id.into(),
                    scope_type: scope_type.into(),
                    scope_id: scope_id.into(),
                    role_id,
                };
                self.bindings
                    .lock()
                    .expect("bindings")
                    .push(binding.clone());
                (StatusCode::CREATED, self.binding_json(&binding))
            }
            ("DELETE", path) if path.starts_with("admin/role-bindings/") => {
                let id = path["admin/role-bindings/".len()..].parse::<i64>().ok();
                let mut bindings = self.bindings.lock().expect("bindings");
                let before = bindings.len();
                bindings.retain(|b| !(Some(b.id) == id && b.tenant == tenant));
                if bindings.len() < before {
                    (StatusCode::OK, json!({"ok": true}))
                } else {
                    envelope(StatusCode::NOT_FOUND, "NOT_FOUND", "no binding", json!({}))
                }
            }
            _ => envelope(StatusCode::NOT_FOUND, "NOT_FOUND", "no route", json!({})),
        }
    }

    /// `POST /access/check`: the member role, then role bindings by role id.
    fn check(&self, tenant: &str, body: &Value) -> (StatusCode, Value) {
        let action = body["action"].as_str().unwrap_or("");
        let user = body["user_id"].as_str().unwrap_or("");
        let scope_type = body["scope"]["type"].as_str().unwrap_or("");
        let scope_id = body["scope"]["id"].as_str().unwrap_or("");
        let roles = self.roles.lock().expect("roles");
        let bindings = self.bindings.lock().expect("bindings");
        let applies = |b: &&FakeBinding| {
            b.tenant == tenant
                && b.user == user
                && ((b.scope_type == "TENANT" && b.scope_id == tenant)
                    || (b.scope_type == scope_type && b.scope_id == scope_id))
        };
        let bound: Vec<&FakeRole> = bindings
            .iter()
            .filter(applies)
            .filter_map(|b| roles.iter().find(|r| r.id == b.role_id))
            .collect();
        let allowed = if action == "portal.role_bindings.write" {
            scope_type == "TENANT"
                && self
                    .tenant_admins
                    .lock()
                    .expect("admins")
                    .contains(&(tenant.to_string(), user.to_string()))
        } else {
            PARTICIPANT_KEYS.contains(&action)
                || bound.iter().any(|r| r.keys.iter().any(|k| k == action))
        };
        let mut effective = vec![json!({"id": 0, "name": "member", "service": "events"})];
        if body["return_effective_permissions"] == json!(true) {
            effective.extend(
                bound
                    .iter()
                    .map(|r| json!({"id": r.id, "name": r.name, "service": r.service})),
            );
            effective.push(json!({"id": 99, "name": "moderator", "service": "portal"}));
        }
        (
            StatusCode::OK,
            json!({"allowed": allowed, "reason_code": if allowed { "RBAC_ALLOW" } else { "RBAC_DENY" },
                   "effective_roles": effective, "effective_permissions": null}),
        )
    }
}

async fn fake_access() -> (Arc<FakeAccess>, FakeAuthority) {
    let state: Arc<FakeAccess> = Arc::default();
    let s = state.clone();
    let fake = FakeAuthority::start(TEST_SECRET, move |call| s.respond(call)).await;
    (state, fake)
}

/// A tenant with the roles seeded in Access and one tenant admin (whom
/// Access lets write the tenant's role bindings).
fn tenant_with_admin(state: &FakeAccess) -> (Uuid, Identity) {
    let tenant = Uuid::new_v4();
    state.seed_roles(tenant);
    let boss = identity(tenant, Uuid::new_v4());
    state
        .tenant_admins
        .lock()
        .expect("admins")
        .push((tenant.to_string(), boss.user_id.clone()));
    (tenant, boss)
}

async fn spawn_access_mode(access_base: String) -> TestApp {
    TestApp::spawn_with(move |s| {
        s.authz = Some("access".into());
        s.portal_service_url = Some(access_base.clone());
        s.access_base_url = Some(access_base);
    })
    .await
}

fn admin_calls(fake: &FakeAuthority) -> Vec<RecordedCall> {
    fake.calls()
        .into_iter()
        .filter(|c| c.path.contains("/access/admin/"))
        .collect()
}

/// In `access` mode a tenant admin is whoever Access lets write the
/// tenant's role bindings; memberships are Portal's.
#[tokio::test]
async fn access_mode_tenant_admins_are_whom_access_lets_write_bindings() {
    let (state, fake) = fake_access().await;
    let app = spawn_access_mode(fake.base_url("/api/v1")).await;
    let (tenant, boss) = tenant_with_admin(&state);
    let t = tenant.to_string();
    let member = identity(tenant, Uuid::new_v4());
    let user = Uuid::new_v4();

    // A member is refused, after Access said no to the admin action.
    let refused = call(&app, "admin.roles.list", &member, json!({})).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.body["error"]["message"], "Tenant admin required");
    let asked: Vec<Value> = fake
        .calls()
        .iter()
        .filter(|c| c.path.ends_with("/access/check"))
        .map(|c| serde_json::from_slice(&c.body).expect("json"))
        .collect();
    assert!(
        asked
            .iter()
            .any(|b| b["action"] == "portal.role_bindings.write"
                && b["scope"]["type"] == "TENANT"
                && b["scope"]["id"] == t
                && b["user_id"] == member.user_id),
        "{asked:?}"
    );

    // The tenant admin grants through Access, as themselves.
    let granted = call(
        &app,
        "admin.roles.grant",
        &boss,
        json!({"userId": user.to_string(), "role": "organizer"}),
    )
    .await;
    assert_eq!(granted.status, 200, "{}", granted.body);
    let post = admin_calls(&fake)
        .into_iter()
        .find(|c| c.method == "POST")
        .expect("a POST to Access");
    assert_eq!(header(&post, "x-user-id"), boss.user_id);
    assert_eq!(
        create_status(&app, &identity(tenant, user), "TENANT", &t).await,
        200
    );

    // events.admin: not theirs to give, and not kept in Access at all.
    let own = call(
        &app,
        "admin.roles.grant",
        &boss,
        json!({"userId": user.to_string(), "role": "admin"}),
    )
    .await;
    assert_eq!(own.status, 403, "{}", own.body);
    let system = call(
        &app,
        "admin.roles.grant",
        &admin(tenant),
        json!({"userId": user.to_string(), "role": "admin"}),
    )
    .await;
    assert_eq!(system.status, 409, "{}", system.body);
    assert!(
        system.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("portal.role_bindings.write")),
        "{}",
        system.body
    );

    // Memberships are Portal's: 409 for the admin, 403 for anyone else.
    for (op, body) in [
        (
            "membership.add",
            json!({"userId": user.to_string(), "scopeType": "TEAM", "scopeId": "t1"}),
        ),
        (
            "membership.remove",
            json!({"userId": user.to_string(), "scopeType": "TEAM", "scopeId": "t1"}),
        ),
        ("membership.list", json!({})),
    ] {
        let reply = call(&app, op, &boss, body.clone()).await;
        assert_eq!(reply.status, 409, "{op}: {}", reply.body);
        assert_eq!(
            reply.code.as_deref(),
            Some("MEMBERSHIP_AUTHORITY_IS_PORTAL")
        );
        assert_eq!(call(&app, op, &member, body).await.status, 403, "{op}");
    }

    // Capabilities from the same authority: roles as Access reports them.
    let organizer = identity(tenant, user);
    let caps = call(&app, "me.capabilities", &organizer, json!({})).await;
    assert_eq!(caps.status, 200, "{}", caps.body);
    assert_eq!(caps.body["roles"], json!(["member", "events.organizer"]));
    assert_eq!(caps.body["permissions"]["events.event.create"], true);
    assert_eq!(caps.body["tenantAdmin"], false);
    // Asked again, the roles come from the cache, like decisions.
    let role_checks = || {
        fake.calls()
            .iter()
            .filter(|c| {
                c.path.ends_with("/access/check")
                    && String::from_utf8_lossy(&c.body)
                        .contains("\"return_effective_permissions\":true")
            })
            .count()
    };
    let before = role_checks();
    let again = call(&app, "me.capabilities", &organizer, json!({})).await;
    assert_eq!(again.body["roles"], caps.body["roles"]);
    assert_eq!(
        role_checks(),
        before,
        "the roles were asked of Access again"
    );
    let boss_caps = call(&app, "me.capabilities", &boss, json!({})).await;
    assert_eq!(boss_caps.body["tenantAdmin"], true, "{}", boss_caps.body);
    assert_eq!(boss_caps.body["permissions"]["events.event.create"], false);
    assert_eq!(boss_caps.body["roles"], json!(["member"]));

    // Another tenant: Access says no there.
    let elsewhere = Identity {
        tenant_id: Uuid::new_v4().to_string(),
        ..boss.clone()
    };
    assert_eq!(
        call(&app, "admin.roles.list", &elsewhere, json!({}))
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn access_mode_grant_revoke_and_list_are_proxied_to_access() {
    let (state, fake) = fake_access().await;
    let app = spawn_access_mode(fake.base_url("/api/v1")).await;
    let tenant = Uuid::new_v4();
    let t = tenant.to_string();
    state.seed_roles(tenant);
    let organizer_id = state.roles.lock().expect("roles")[1].id;
    let admin = Identity {
        // Ids in a non-canonical spelling: Access gets canonical ones.
        tenant_id: t.to_uppercase(),
        ..admin(tenant)
    };
    let user = Uuid::new_v4();
    let who = identity(tenant, user);
    // Denied (and the deny cached for EVENTS_AUTHZ_NEGATIVE_TTL).
    assert_eq!(create_status(&app, &who, "TENANT", &t).await, 403);

    let granted = call(
        &app,
        "admin.roles.grant",
        &admin,
        json!({"userId": format!("{{{}}}", user.to_string().to_uppercase()), "role": "organizer"}),
    )
    .await;
    assert_eq!(granted.status, 200, "{:?}", granted.body);
    let binding_id = granted.body["id"].as_str().expect("id").to_string();
    assert_eq!(granted.body["userId"], user.to_string());
    assert_eq!(granted.body["role"], "events.organizer");
    assert_eq!(granted.body["scopeType"], "TENANT");
    assert_eq!(granted.body["scopeId"], t);
    assert_eq!(granted.body["createdBy"], Value::Null);
    assert_eq!(granted.body["created"], true);

    let calls = admin_calls(&fake);
    let shape: Vec<(String, String, Option<String>)> = calls
        .iter()
        .map(|c| (c.method.clone(), c.path.clone(), c.query.clone()))
        .collect();
    assert_eq!(
        shape,
        [
            (
                "GET".to_string(),
                "/api/v1/access/admin/roles".to_string(),
                Some("service=events&query=events.organizer".to_string())
            ),
            (
                "GET".to_string(),
                "/api/v1/access/admin/role-bindings/search".to_string(),
                Some(format!(
                    "user_id={user}&scope_type=TENANT&scope_id={t}&limit=200"
                ))
            ),
            (
                "POST".to_string(),
                "/api/v1/access/admin/role-bindings".to_string(),
                None
            ),
        ]
    );
    for c in &calls {
        assert!(c.signature_valid, "{c:?}");
        assert_eq!(header(c, "x-tenant-id"), t, "{c:?}");
        assert_eq!(header(c, "x-user-id"), admin.user_id, "{c:?}");
        let flags: Value = serde_json::from_str(header(c, "x-master-flags")).expect("flags");
        assert_eq!(flags["system_admin"], true, "{c:?}");
    }
    let posted: Value = serde_json::from_slice(&calls[2].body).expect("body");
    assert_eq!(
        posted,
        json!({"user_id": user.to_string(), "scope_type": "TENANT", "scope_id": t, "role_id": organizer_id})
    );
    assert_eq!(header(&calls[2], "content-type"), "application/json");

    // The cached deny was forgotten: the grant applies at once.
    assert_eq!(create_status(&app, &who, "TENANT", &t).await, 200);

    // Again: found by the search, nothing posted.
    let again = call(
        &app,
        "admin.roles.grant",
        &admin,
        json!({"userId": user.to_string(), "role": "events.organizer"}),
    )
    .await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["created"], false);
    assert_eq!(again.body["id"], binding_id);
    let posts = admin_calls(&fake)
        .iter()
        .filter(|c| c.method == "POST")
        .count();
    assert_eq!(posts, 1);

    // The listing over HTTP: roles with their Access ids, the binding.
    let listed = app
        .bff("GET", "/api/v1/events/admin/roles", &admin, None)
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let body = listed.json();
    assert_eq!(body["roles"][1]["name"], "events.organizer");
    assert_eq!(body["roles"][1]["accessRoleId"], organizer_id);
    assert_eq!(body["roles"][1]["permissions"], json!(ORGANIZER_KEYS));
    assert_eq!(
        body["bindings"],
        json!([{"id": binding_id, "userId": user.to_string(), "role": "events.organizer",
                "scopeType": "TENANT", "scopeId": t, "createdBy": null,
                "createdAt": "2030-01-01T00:00:00Z"}])
    );
    let filtered = app
        .bff("GET", "/api/v1/admin/roles?role=participant", &admin, None)
        .await;
    assert_eq!(filtered.json()["bindings"], json!([]), "{}", filtered.text);
    let last = admin_calls(&fake);
    let search = last
        .iter()
        .rev()
        .find(|c| c.path.ends_with("/search"))
        .expect("search");
    assert_eq!(search.query.as_deref(), Some("limit=500"));

    // The revoke over HTTP: searched, then deleted by Access's id.
    let revoked = app
        .bff(
            "DELETE",
            "/api/v1/events/admin/role-bindings",
            &admin,
            Some(json!({"userId": user.to_string(), "role": "organizer"})),
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert_eq!(revoked.json(), json!({"revoked": 1}));
    let delete = admin_calls(&fake)
        .into_iter()
        .find(|c| c.method == "DELETE")
        .expect("a DELETE");
    assert_eq!(
        delete.path,
        format!("/api/v1/access/admin/role-bindings/{binding_id}")
    );
    assert!(delete.signature_valid);
    assert!(state.bindings.lock().expect("bindings").is_empty());
    // The cached allow was forgotten too.
    assert_eq!(create_status(&app, &who, "TENANT", &t).await, 403);

    // By Access's id: gone already → 0; a fresh one → 1.
    let gone = call(
        &app,
        "admin.roles.revoke",
        &admin,
        json!({"bindingId": binding_id}),
    )
    .await;
    assert_eq!(gone.body, json!({"revoked": 0}), "{:?}", gone.body);

    let rows = role_audit(&app, tenant, 4).await;
    // One batch of the audit writer shares a timestamp: compare as a set.
    let mut actions: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    actions.sort();
    assert_eq!(
        actions,
        [
            "role.granted",
            "role.granted",
            "role.revoked",
            "role.revoked"
        ]
    );
    assert!(rows.iter().all(|r| r.5["authz"] == "access"), "{rows:?}");
}

#[tokio::test]
async fn access_mode_a_missing_role_is_409_and_access_down_is_503() {
    let (state, fake) = fake_access().await;
    let app = spawn_access_mode(fake.base_url("/api/v1")).await;
    let tenant = Uuid::new_v4();
    let admin = admin(tenant);
    let grant = json!({"userId": Uuid::new_v4().to_string(), "role": "organizer"});

    let missing = call(&app, "admin.roles.grant", &admin, grant.clone()).await;
    assert_eq!(missing.status, 409, "{:?}", missing.body);
    assert_eq!(missing.body["error"]["code"], "CONFLICT");
    assert!(
        missing.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("events-svc access bootstrap")),
        "{:?}",
        missing.body
    );
    assert!(admin_calls(&fake).iter().all(|c| c.method == "GET"));
    // Listing says the roles are missing there.
    let listed = call(&app, "admin.roles.list", &admin, json!({})).await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    assert_eq!(listed.body["roles"][0]["accessRoleId"], Value::Null);

    state.seed_roles(tenant);
    state.down.store(true, Ordering::SeqCst);
    for (op, body) in [
        ("admin.roles.grant", grant.clone()),
        ("admin.roles.revoke", grant.clone()),
        ("admin.roles.list", json!({})),
    ] {
        let reply = call(&app, op, &admin, body).await;
        assert_eq!(reply.status, 503, "{op}: {:?}", reply.body);
        assert_eq!(reply.body["error"]["code"], "ACCESS_UNAVAILABLE", "{op}");
    }
    let reply = app
        .bff("GET", "/api/v1/events/admin/roles", &admin, None)
        .await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    state.down.store(false, Ordering::SeqCst);
    let reply = call(&app, "admin.roles.grant", &admin, grant).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);

    // Nothing listening at all.
    let nowhere = spawn_access_mode(format!("http://127.0.0.1:{}/api/v1", free_port())).await;
    let reply = call(&nowhere, "admin.roles.list", &admin, json!({})).await;
    assert_eq!(reply.status, 503, "{:?}", reply.body);
    assert_eq!(reply.body["error"]["code"], "ACCESS_UNAVAILABLE");
}

// ---------------------------------------------------------------------------
// the binary
// ---------------------------------------------------------------------------

fn events_svc() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_events-svc"));
    for (key, _) in std::env::vars() {
        if key.starts_with("EVENTS_")
            || key.starts_with("NATS_")
            || key.starts_with("BFF_")
            || key.starts_with("ACCESS_")
            || key == "DATABASE_URL"
        {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "error");
    cmd
}

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary off the async runtime (the fakes keep serving).
async fn run(mut cmd: Command) -> Run {
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run events-svc"))
        .await
        .expect("join");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn access_cli(database_url: &str, access_base: &str, args: &[&str]) -> Command {
    let mut cmd = events_svc();
    cmd.arg("access")
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("EVENTS_AUTHZ", "access")
        .env("ACCESS_BASE_URL", access_base)
        .env("BFF_INTERNAL_HMAC_SECRET", TEST_SECRET);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_creates_the_roles_in_access_once() {
    let isolation = Isolation::new();
    let migrated = run({
        let mut cmd = events_svc();
        cmd.arg("migrate")
            .env("DATABASE_URL", isolation.database_url());
        cmd
    })
    .await;
    assert_eq!(migrated.code, Some(0), "{migrated:?}");
    let db_url = isolation.database_url();
    let (state, fake) = fake_access().await;
    let base = fake.base_url("/api/v1");
    let tenant = Uuid::new_v4();
    let t = tenant.to_string();

    let first = run(access_cli(
        &db_url,
        &base,
        &["bootstrap", "--tenant-id", &t],
    ))
    .await;
    assert_eq!(first.code, Some(0), "{first:?}");
    assert_eq!(
        first.stdout.matches("created in Access").count(),
        2,
        "{first:?}"
    );
    {
        let roles = state.roles.lock().expect("roles");
        let mut seen: Vec<(String, String, Vec<String>)> = roles
            .iter()
            .map(|r| (r.name.clone(), r.service.clone(), r.keys.clone()))
            .collect();
        seen.sort();
        let mut organizer: Vec<String> = ORGANIZER_KEYS.iter().map(|k| k.to_string()).collect();
        organizer.sort();
        let mut participant: Vec<String> = PARTICIPANT_KEYS.iter().map(|k| k.to_string()).collect();
        participant.sort();
        assert_eq!(
            seen,
            [
                ("events.organizer".into(), "events".into(), organizer),
                ("events.participant".into(), "events".into(), participant),
            ]
        );
        // System templates, not roles of the tenant that ran it.
        assert!(roles.iter().all(|r| r.tenant.is_empty()), "{roles:?}");
    }
    let posts: Vec<RecordedCall> = fake
        .calls()
        .into_iter()
        .filter(|c| c.method == "POST")
        .collect();
    assert_eq!(posts.len(), 2);
    for c in &posts {
        assert_eq!(c.path, "/api/v1/access/roles");
        assert!(c.signature_valid, "{c:?}");
        assert_eq!(
            header(c, "x-user-id"),
            "00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(header(c, "x-master-flags"), r#"{"system_admin":true}"#);
    }

    let second = run(access_cli(
        &db_url,
        &base,
        &["bootstrap", "--tenant-id", &t],
    ))
    .await;
    assert_eq!(second.code, Some(0), "{second:?}");
    assert_eq!(
        second.stdout.matches("already present").count(),
        2,
        "{second:?}"
    );
    assert_eq!(state.roles.lock().expect("roles").len(), 2);
    // Once for all tenants: run for another tenant, it finds the templates.
    let other = Uuid::new_v4().to_string();
    let third = run(access_cli(
        &db_url,
        &base,
        &["bootstrap", "--tenant-id", &other],
    ))
    .await;
    assert_eq!(third.code, Some(0), "{third:?}");
    assert_eq!(
        third.stdout.matches("already present").count(),
        2,
        "{third:?}"
    );
    assert_eq!(state.roles.lock().expect("roles").len(), 2);
    assert_eq!(
        fake.calls().iter().filter(|c| c.method == "POST").count(),
        2
    );

    // A role with other permissions is reported and left alone.
    state.roles.lock().expect("roles")[1].keys = vec!["events.event.read".into()];
    let differs = run(access_cli(
        &db_url,
        &base,
        &["bootstrap", "--tenant-id", &t],
    ))
    .await;
    assert_eq!(differs.code, Some(1), "{differs:?}");
    assert!(differs.stdout.contains("other permissions"), "{differs:?}");
    assert_eq!(
        state.roles.lock().expect("roles")[1].keys,
        ["events.event.read"]
    );
    state.roles.lock().expect("roles")[1].keys =
        ORGANIZER_KEYS.iter().map(|k| k.to_string()).collect();

    // The CLI's grant and revoke in access mode: the same proxy.
    let user = Uuid::new_v4().to_string();
    let granted = run(access_cli(
        &db_url,
        &base,
        &[
            "grant",
            "--tenant-id",
            &t,
            "--user-id",
            &user,
            "--role",
            "organizer",
            "--scope",
            "team:t1",
        ],
    ))
    .await;
    assert_eq!(granted.code, Some(0), "{granted:?}");
    assert!(
        granted.stdout.contains("granted events.organizer"),
        "{granted:?}"
    );
    {
        let bindings = state.bindings.lock().expect("bindings");
        assert_eq!(bindings.len(), 1);
        assert_eq!(
            (
                bindings[0].user.as_str(),
                bindings[0].scope_type.as_str(),
                bindings[0].scope_id.as_str()
            ),
            (user.as_str(), "TEAM", "t1")
        );
    }
    let revoked = run(access_cli(
        &db_url,
        &base,
        &[
            "revoke",
            "--tenant-id",
            &t,
            "--user-id",
            &user,
            "--role",
            "organizer",
            "--scope",
            "TEAM:t1",
        ],
    ))
    .await;
    assert_eq!(revoked.code, Some(0), "{revoked:?}");
    assert!(
        revoked.stdout.contains("revoked events.organizer"),
        "{revoked:?}"
    );
    assert!(state.bindings.lock().expect("bindings").is_empty());

    // Audited: two roles created, one grant, one revoke, by the operator.
    let pool = sqlx::PgPool::connect(&db_url).await.expect("db");
    let rows: Vec<(String, Option<Uuid>)> = sqlx::query_as(
        "SELECT action, actor_user_id FROM audit_log WHERE tenant_id = $1 ORDER BY created_at, action",
    )
    .bind(tenant)
    .fetch_all(&pool)
    .await
    .expect("audit");
    let actions: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        actions,
        [
            "role.created",
            "role.created",
            "role.granted",
            "role.revoked"
        ]
    );
    assert!(rows.iter().all(|r| r.1 == Some(Uuid::nil())), "{rows:?}");
    pool.close().await;

    // Access down: 69; local mode: nothing to create.
    state.down.store(true, Ordering::SeqCst);
    let down = run(access_cli(
        &db_url,
        &base,
        &["bootstrap", "--tenant-id", &t],
    ))
    .await;
    assert_eq!(down.code, Some(69), "{down:?}");
    assert!(down.stderr.contains("ACCESS_UNAVAILABLE"), "{down:?}");
    let local = run({
        let mut cmd = events_svc();
        cmd.args(["access", "bootstrap", "--tenant-id", &t]);
        cmd
    })
    .await;
    assert_eq!(local.code, Some(0), "{local:?}");
    assert!(local.stdout.contains("built in"), "{local:?}");
    // Access mode without ACCESS_BASE_URL is a configuration error.
    let unset = run({
        let mut cmd = events_svc();
        cmd.args(["access", "bootstrap", "--tenant-id", &t])
            .env("EVENTS_AUTHZ", "access");
        cmd
    })
    .await;
    assert_eq!(unset.code, Some(78), "{unset:?}");
    cleanup(&isolation.db_name, &isolation.stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_grant_and_revoke_in_local_mode_change_what_the_service_allows() {
    let app = TestApp::spawn().await;
    let db_url = app.isolation.database_url();
    let tenant = Uuid::new_v4();
    let t = tenant.to_string();
    let user = Uuid::new_v4();
    let u = user.to_string();
    let who = identity(tenant, user);
    let cli = |args: &[&str]| {
        let mut cmd = events_svc();
        cmd.arg("access").args(args).env("DATABASE_URL", &db_url);
        cmd
    };
    let granted = run(cli(&[
        "grant",
        "--tenant-id",
        &t,
        "--user-id",
        &u,
        "--role",
        "organizer",
    ]))
    .await;
    assert_eq!(granted.code, Some(0), "{granted:?}");
    assert!(
        granted
            .stdout
            .contains(&format!("granted events.organizer to {u} at TENANT:{t}")),
        "{granted:?}"
    );
    let again = run(cli(&[
        "grant",
        "--tenant-id",
        &t,
        "--user-id",
        &u,
        "--role",
        "events.organizer",
    ]))
    .await;
    assert_eq!(again.code, Some(0), "{again:?}");
    assert!(again.stdout.starts_with("unchanged:"), "{again:?}");
    assert_eq!(create_status(&app, &who, "TENANT", &t).await, 200);

    let listed = run(cli(&["list", "--tenant-id", &t, "--json"])).await;
    assert_eq!(listed.code, Some(0), "{listed:?}");
    let listing: Value = serde_json::from_str(&listed.stdout).expect("json");
    assert_eq!(listing["bindings"].as_array().map(Vec::len), Some(1));
    assert_eq!(listing["bindings"][0]["userId"], u);
    assert_eq!(listing["bindings"][0]["createdBy"], Uuid::nil().to_string());

    let revoked = run(cli(&[
        "revoke",
        "--tenant-id",
        &t,
        "--user-id",
        &u,
        "--role",
        "organizer",
    ]))
    .await;
    assert_eq!(revoked.code, Some(0), "{revoked:?}");
    assert!(
        revoked.stdout.contains("revoked events.organizer"),
        "{revoked:?}"
    );
    let nothing = run(cli(&[
        "revoke",
        "--tenant-id",
        &t,
        "--user-id",
        &u,
        "--role",
        "organizer",
    ]))
    .await;
    assert_eq!(nothing.code, Some(0), "{nothing:?}");
    assert!(nothing.stdout.contains("nothing to revoke"), "{nothing:?}");
    // Another instance (the CLI) changed it: the service's cached bindings
    // expire within BINDINGS_TTL (2 s).
    tokio::time::sleep(updspace_events::authz::local::BINDINGS_TTL + Duration::from_millis(200))
        .await;
    assert_eq!(create_status(&app, &who, "TENANT", &t).await, 403);

    // A community grant, by the scope flag.
    let community = run(cli(&[
        "grant",
        "--tenant-id",
        &t,
        "--user-id",
        &u,
        "--role",
        "organizer",
        "--scope",
        "COMMUNITY:c7",
    ]))
    .await;
    assert_eq!(community.code, Some(0), "{community:?}");
    tokio::time::sleep(updspace_events::authz::local::BINDINGS_TTL + Duration::from_millis(200))
        .await;
    assert_eq!(create_status(&app, &who, "COMMUNITY", "c7").await, 200);

    // Usage errors: 2.
    for args in [
        &[
            "grant",
            "--tenant-id",
            &t,
            "--user-id",
            &u,
            "--role",
            "boss",
        ][..],
        &[
            "grant",
            "--tenant-id",
            &t,
            "--user-id",
            &u,
            "--role",
            "organizer",
            "--scope",
            "COMMUNITY",
        ],
        &[
            "grant",
            "--tenant-id",
            &t,
            "--user-id",
            &u,
            "--role",
            "organizer",
            "--scope",
            "GALAXY:x",
        ],
        &["revoke", "--tenant-id", &t],
        &[
            "revoke",
            "--tenant-id",
            &t,
            "--binding-id",
            "x",
            "--user-id",
            &u,
        ],
    ] {
        let bad = run(cli(args)).await;
        assert_eq!(bad.code, Some(2), "{args:?}: {bad:?}");
    }

    let rows = role_audit(&app, tenant, 5).await;
    let actions: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        actions,
        [
            "role.granted",
            "role.granted",
            "role.revoked",
            "role.revoked",
            "role.granted"
        ]
    );
    assert!(rows.iter().all(|r| r.1 == Some(Uuid::nil())), "{rows:?}");
}

/// The comparison of `tenant_admin.rs`, with Access as the authority:
/// capabilities come from the same authorizer as the operations' checks.
#[tokio::test]
async fn access_mode_capabilities_agree_with_what_the_operations_then_allow() {
    let (state, fake) = fake_access().await;
    let app = spawn_access_mode(fake.base_url("/api/v1")).await;
    let (tenant, boss) = tenant_with_admin(&state);
    let t = tenant.to_string();
    let member = identity(tenant, Uuid::new_v4());
    let organizer = identity(tenant, Uuid::new_v4());
    let community_organizer = identity(tenant, Uuid::new_v4());
    let suspended = Identity {
        master_flags: Some(r#"{"suspended":true}"#.into()),
        ..identity(tenant, Uuid::new_v4())
    };
    for (who, scope_type, scope_id) in [
        (&organizer, "TENANT", t.clone()),
        (&community_organizer, "COMMUNITY", "c5".to_string()),
    ] {
        let granted = call(
            &app,
            "admin.roles.grant",
            &admin(tenant),
            json!({"userId": who.user_id, "role": "organizer", "scopeType": scope_type, "scopeId": scope_id}),
        )
        .await;
        assert_eq!(granted.status, 200, "{}", granted.body);
    }
    let system = admin(tenant);
    for who in [
        &member,
        &organizer,
        &community_organizer,
        &boss,
        &system,
        &suspended,
    ] {
        for scope in [("TENANT", t.as_str()), ("COMMUNITY", "c5"), ("TEAM", "t8")] {
            crate::tenant_admin::capabilities_agree(&app, tenant, who, scope, "admin.roles.list")
                .await;
        }
    }
}
