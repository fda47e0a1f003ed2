//! The `access` authorization mode (`docs/authorization.md`) against real
//! HTTP fakes of Access and Portal that implement their contracts (Access's
//! `POST /access/check`, Portal's community and team member look-ups): v1
//! signatures over the full percent-decoded path, tenant/user in the body
//! equal to the headers, the implicit member role, Portal's 404 for a
//! non-member. Covered: the shared visibility
//! matrix, call counts and caching on a 100-event list, Portal's 404 being
//! final, Access down → 503 and recovery, a slow Portal not stalling other
//! scopes, stale memberships for a bounded time, canonical ids and headers in
//! every call, no calls at all for blocked users and system admins, and
//! coalescing of identical look-ups.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};
use updspace_events::auth::{InternalContext, MasterFlags, SignatureVersion};
use updspace_events::authz::{
    AccessAuthorizer, AccessSettings, Authorizer, CallBudget, Permission,
};
use updspace_events::client::{CallReply, Identity};
use updspace_events::config::Settings;
use updspace_events::domain::{Scope, ScopeId, ScopeType};
use uuid::Uuid;

use crate::helpers::{
    FakeAuthority, RecordedCall, TEST_SECRET, TestApp, admin, free_port, identity,
};
use crate::visibility::{Authorities, run_visibility_matrix};

const ORGANIZER: &str = "events.organizer";
const CATALOG: [&str; 5] = [
    "events.event.read",
    "events.event.create",
    "events.event.manage",
    "events.rsvp.set",
    "events.attendance.mark",
];
/// Access's implicit `member` role for the events service.
const MEMBER_ROLE: [&str; 2] = ["events.event.read", "events.rsvp.set"];

/// How a fake answers.
const UP: u8 = 0;
const ANSWER_500: u8 = 1;
const ANSWER_400: u8 = 2;
const ANSWER_NOT_OBJECT: u8 = 3;
const ANSWER_NO_BOOLEAN: u8 = 4;
const ANSWER_503: u8 = 5;

/// A role binding in the fake Access: (tenant, user, role, scope type,
/// scope id), canonical ids.
type Binding = (String, String, String, String, String);
/// A membership in the fake Portal: (tenant, "communities" | "teams",
/// scope id, user).
type Membership = (String, String, String, String);

/// What the fake Access and Portal know, and how they behave.
#[derive(Default)]
struct Directory {
    bindings: Mutex<Vec<Binding>>,
    members: Mutex<HashSet<Membership>>,
    access_mode: AtomicU8,
    portal_mode: AtomicU8,
    access_delay_ms: AtomicU64,
    portal_delay_ms: AtomicU64,
}

fn envelope(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message, "details": {}, "request_id": null}})
}

fn header<'a>(call: &'a RecordedCall, name: &str) -> &'a str {
    call.headers.get(name).map(String::as_str).unwrap_or("")
}

fn role_permissions(role: &str) -> &'static [&'static str] {
    match role {
        "events.organizer" => &[
            "events.event.create",
            "events.event.manage",
            "events.attendance.mark",
        ],
        "events.participant" => &MEMBER_ROLE,
        _ => &[],
    }
}

impl Directory {
    /// `POST /access/check` as Access implements it: tenant and user
    /// headers required, the body's ids equal to them, the body's master
    /// flags decide first, then the implicit member role and the bindings.
    fn access(&self, call: &RecordedCall) -> (StatusCode, Value) {
        let delay = self.access_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        match self.access_mode.load(Ordering::SeqCst) {
            ANSWER_500 => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    envelope("SERVER_ERROR", "boom"),
                );
            }
            ANSWER_503 => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    envelope("UNAVAILABLE", "down"),
                );
            }
            ANSWER_400 => {
                return (
                    StatusCode::BAD_REQUEST,
                    envelope("TENANT_MISMATCH", "forced"),
                );
            }
            ANSWER_NOT_OBJECT => return (StatusCode::OK, json!([true])),
            ANSWER_NO_BOOLEAN => return (StatusCode::OK, json!({"allowed": "yes"})),
            _ => {}
        }
        if call.method != "POST" || !call.path.ends_with("/access/check") {
            return (StatusCode::NOT_FOUND, envelope("NOT_FOUND", "no route"));
        }
        if header(call, "x-tenant-id").is_empty() || header(call, "x-tenant-slug").is_empty() {
            return (
                StatusCode::BAD_REQUEST,
                envelope("MISSING_TENANT_CONTEXT", "tenant"),
            );
        }
        if Uuid::parse_str(header(call, "x-user-id")).is_err() {
            return (StatusCode::BAD_REQUEST, envelope("INVALID_USER_ID", "user"));
        }
        let Ok(body) = serde_json::from_slice::<Value>(&call.body) else {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"detail": [{"msg": "invalid json"}]}),
            );
        };
        let uuid_field = |k: &str| body[k].as_str().and_then(|s| Uuid::parse_str(s).ok());
        let (Some(tenant), Some(user)) = (uuid_field("tenant_id"), uuid_field("user_id")) else {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"detail": [{"msg": "ids"}]}),
            );
        };
        // Canonical body ids against the raw header strings.
        if tenant.to_string() != header(call, "x-tenant-id") {
            return (
                StatusCode::BAD_REQUEST,
                envelope("TENANT_MISMATCH", "tenant_id"),
            );
        }
        if user.to_string() != header(call, "x-user-id") {
            return (
                StatusCode::BAD_REQUEST,
                envelope("USER_MISMATCH", "user_id"),
            );
        }
        let scope_type = body["scope"]["type"].as_str().unwrap_or("");
        let scope_id = body["scope"]["id"].as_str().unwrap_or("");
        if !["GLOBAL", "TENANT", "COMMUNITY", "TEAM", "SERVICE"].contains(&scope_type) {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"detail": [{"msg": "scope.type"}]}),
            );
        }
        let action = body["action"].as_str().unwrap_or("");
        let decision = |allowed: bool, reason: &str| {
            (
                StatusCode::OK,
                json!({"allowed": allowed, "reason_code": reason, "effective_roles": [], "effective_permissions": null}),
            )
        };
        if !CATALOG.contains(&action) {
            return decision(false, "UNKNOWN_PERMISSION");
        }
        let flags = &body["master_flags"];
        if flags["suspended"] == json!(true) || flags["banned"] == json!(true) {
            return decision(false, "MASTER_SUSPENDED");
        }
        if flags["system_admin"] == json!(true) {
            return decision(true, "MASTER_SYSTEM_ADMIN");
        }
        if MEMBER_ROLE.contains(&action) {
            return decision(true, "RBAC_ALLOW");
        }
        let t = tenant.to_string();
        let u = user.to_string();
        let granted =
            self.bindings
                .lock()
                .expect("bindings")
                .iter()
                .any(|(bt, bu, role, st, sid)| {
                    *bt == t
                        && *bu == u
                        && role_permissions(role).contains(&action)
                        && ((st == "TENANT" && *sid == t) || (st == scope_type && sid == scope_id))
                });
        decision(granted, if granted { "RBAC_ALLOW" } else { "RBAC_DENY" })
    }

    /// `GET {base}/communities|teams/{id}/members/{user}` as Portal answers it.
    fn portal(&self, call: &RecordedCall) -> (StatusCode, Value) {
        let delay = self.portal_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        if self.portal_mode.load(Ordering::SeqCst) == ANSWER_503 {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                envelope("UNAVAILABLE", "down"),
            );
        }
        if call.method != "GET" {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                envelope("METHOD_NOT_ALLOWED", "GET"),
            );
        }
        if header(call, "x-tenant-id").is_empty() || header(call, "x-tenant-slug").is_empty() {
            return (
                StatusCode::BAD_REQUEST,
                envelope("MISSING_TENANT_CONTEXT", "tenant"),
            );
        }
        if Uuid::parse_str(header(call, "x-user-id")).is_err() {
            return (
                StatusCode::UNAUTHORIZED,
                envelope("UNAUTHENTICATED", "user"),
            );
        }
        // Routing on the path Portal receives, each segment decoded.
        let Some(rest) = call.path.strip_prefix("/api/v1/") else {
            return (StatusCode::NOT_FOUND, envelope("NOT_FOUND", "no route"));
        };
        let segments: Vec<String> = rest
            .split('/')
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        let [kind, id, members, user] = segments.as_slice() else {
            return (StatusCode::NOT_FOUND, envelope("NOT_FOUND", "no route"));
        };
        if !(kind == "communities" || kind == "teams") || members != "members" {
            return (StatusCode::NOT_FOUND, envelope("NOT_FOUND", "no route"));
        }
        let key = (
            header(call, "x-tenant-id").to_string(),
            kind.clone(),
            id.clone(),
            user.clone(),
        );
        if self.members.lock().expect("members").contains(&key) {
            (StatusCode::OK, json!({"member": true, "role_hint": null}))
        } else {
            (
                StatusCode::NOT_FOUND,
                envelope("NOT_FOUND", "Membership not found"),
            )
        }
    }
}

/// Stops a fake's private runtime when dropped.
struct OwnRuntime {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A fake on a runtime of its own: a responder that sleeps blocks only it,
/// never the service under test.
fn fake_on_own_runtime(
    respond: impl Fn(&RecordedCall) -> (StatusCode, Value) + Send + Sync + 'static,
) -> (FakeAuthority, OwnRuntime) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(8)
            .enable_all()
            .build()
            .expect("fake runtime");
        runtime.block_on(async move {
            let fake = FakeAuthority::start(TEST_SECRET, respond).await;
            let _ = tx.send(fake);
            let _ = stop_rx.await;
        });
    });
    let fake = rx.recv().expect("the fake starts");
    (
        fake,
        OwnRuntime {
            stop: Some(stop_tx),
        },
    )
}

/// Access and Portal fakes sharing one directory.
struct Fakes {
    dir: Arc<Directory>,
    access: FakeAuthority,
    portal: FakeAuthority,
    _runtimes: [OwnRuntime; 2],
}

impl Fakes {
    fn start() -> Self {
        let dir: Arc<Directory> = Arc::default();
        let d = dir.clone();
        let (access, access_rt) = fake_on_own_runtime(move |call| d.access(call));
        let d = dir.clone();
        let (portal, portal_rt) = fake_on_own_runtime(move |call| d.portal(call));
        Self {
            dir,
            access,
            portal,
            _runtimes: [access_rt, portal_rt],
        }
    }

    /// The service in `access` mode against these fakes.
    async fn spawn(&self, adjust: impl FnOnce(&mut Settings)) -> TestApp {
        let access = self.access.base_url("/api/v1");
        let portal = self.portal.base_url("/api/v1");
        TestApp::spawn_with(move |s| {
            s.authz = Some("access".into());
            s.access_base_url = Some(access);
            s.portal_service_url = Some(portal);
            adjust(s);
        })
        .await
    }

    fn counts(&self) -> (usize, usize) {
        (self.access.calls().len(), self.portal.calls().len())
    }

    fn grant_now(&self, tenant: Uuid, user: Uuid, role: &str, scope_type: &str, scope_id: &str) {
        self.dir.bindings.lock().expect("bindings").push((
            tenant.to_string(),
            user.to_string(),
            role.into(),
            scope_type.into(),
            scope_id.into(),
        ));
    }

    fn join_now(&self, tenant: Uuid, user: Uuid, scope_type: &str, scope_id: &str) {
        let kind = if scope_type == "TEAM" {
            "teams"
        } else {
            "communities"
        };
        self.dir.members.lock().expect("members").insert((
            tenant.to_string(),
            kind.into(),
            scope_id.into(),
            user.to_string(),
        ));
    }
}

impl Authorities for Fakes {
    async fn grant(&self, tenant: Uuid, user: Uuid, role: &str, scope_type: &str, scope_id: &str) {
        self.grant_now(tenant, user, role, scope_type, scope_id);
    }

    async fn join(&self, tenant: Uuid, user: Uuid, scope_type: &str, scope_id: &str) {
        self.join_now(tenant, user, scope_type, scope_id);
    }
}

async fn call(app: &TestApp, op: &str, who: &Identity, body: Value) -> CallReply {
    app.client()
        .call(op, who, &body)
        .await
        .unwrap_or_else(|e| panic!("{op}: no reply: {e}"))
}

async fn call_as(app: &TestApp, op: &str, who: &Identity, body: Value, rid: &str) -> CallReply {
    app.client()
        .call_as(op, who, &body, rid)
        .await
        .unwrap_or_else(|e| panic!("{op}: no reply: {e}"))
}

async fn create(
    app: &TestApp,
    who: &Identity,
    scope_type: &str,
    scope_id: &str,
    visibility: &str,
    n: u32,
) -> String {
    let reply = call(
        app,
        "event.create",
        who,
        json!({
            "scopeType": scope_type, "scopeId": scope_id, "title": format!("event {n}"),
            "visibility": visibility,
            "startsAt": format!("2030-01-10T{:02}:{:02}:00Z", 10 + n / 60, n % 60),
            "endsAt": "2030-01-11T12:00:00Z",
        }),
    )
    .await;
    assert_eq!(
        reply.status, 200,
        "create {visibility} in {scope_type}/{scope_id}: {:?}",
        reply.body
    );
    reply.body["id"].as_str().expect("id").to_string()
}

fn item_ids(reply: &CallReply) -> Vec<String> {
    reply.body["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn stats(app: &TestApp) -> updspace_events::authz::AccessStatsSnapshot {
    app.state
        .access_authorizer
        .as_ref()
        .expect("access mode has an access authorizer")
        .stats()
}

/// The shared visibility matrix, with roles in the fake Access and
/// memberships in the fake Portal.
#[tokio::test]
async fn visibility_matrix_in_access_mode() {
    let fakes = Fakes::start();
    let app = fakes.spawn(|_| {}).await;
    run_visibility_matrix(&app, &fakes).await;
    let access = fakes.access.calls();
    let portal = fakes.portal.calls();
    assert!(!access.is_empty() && !portal.is_empty());
    assert!(
        access.iter().all(|c| c.signature_valid),
        "an Access call was refused"
    );
    assert!(
        portal.iter().all(|c| c.signature_valid),
        "a Portal call was refused"
    );
}

/// 100 community events in 5 communities: one list asks Portal once per
/// community and Access once per distinct scope; repeated within the TTL it
/// asks neither. Prints the latency authorization adds.
#[tokio::test]
async fn a_list_of_100_events_makes_a_handful_of_calls_and_none_when_warm() {
    let fakes = Fakes::start();
    let app = fakes.spawn(|_| {}).await;
    let tenant = Uuid::new_v4();
    let organizer = Uuid::new_v4();
    fakes.grant_now(tenant, organizer, ORGANIZER, "TENANT", &tenant.to_string());
    let org = identity(tenant, organizer);
    let communities: Vec<String> = (0..5).map(|i| format!("club-{i}")).collect();
    for n in 0..100u32 {
        create(
            &app,
            &org,
            "COMMUNITY",
            &communities[(n % 5) as usize],
            "community",
            n,
        )
        .await;
    }
    // Five viewers, each a member of 3 of the 5 communities: each one's
    // first list is cold, the next ones warm.
    let viewers = 5u32;
    let rounds = 5u32;
    let (mut cold_total, mut warm_total) = (Duration::ZERO, Duration::ZERO);
    let s0 = stats(&app);
    for v in 0..viewers {
        let viewer = Uuid::new_v4();
        for c in communities.iter().cycle().skip(v as usize).take(3) {
            fakes.join_now(tenant, viewer, "COMMUNITY", c);
        }
        let who = identity(tenant, viewer);
        let (a0, p0) = fakes.counts();
        let started = Instant::now();
        let cold = call(&app, "event.list", &who, json!({"limit": 100})).await;
        cold_total += started.elapsed();
        let (a1, p1) = fakes.counts();
        assert_eq!(cold.status, 200, "{:?}", cold.body);
        assert_eq!(cold.body["meta"]["total"], 60);
        assert_eq!(item_ids(&cold).len(), 60);
        assert!(
            cold.body["meta"].get("partial").is_none(),
            "{:?}",
            cold.body["meta"]
        );
        assert!(p1 - p0 <= 5, "{} Portal calls for 5 communities", p1 - p0);
        assert!(
            a1 - a0 <= 6,
            "{} Access calls for 6 distinct scopes",
            a1 - a0
        );
        for _ in 0..rounds {
            let started = Instant::now();
            let warm = call(&app, "event.list", &who, json!({"limit": 100})).await;
            warm_total += started.elapsed();
            assert_eq!(warm.status, 200);
            assert_eq!(item_ids(&warm), item_ids(&cold));
        }
        assert_eq!(
            fakes.counts(),
            (a1, p1),
            "a repeated list within the TTL calls nobody"
        );
    }
    let s1 = stats(&app);

    // The same page for a system admin: no authorization calls at all.
    let mut admin_total = Duration::ZERO;
    for _ in 0..rounds {
        let started = Instant::now();
        let baseline = call(&app, "event.list", &admin(tenant), json!({"limit": 100})).await;
        admin_total += started.elapsed();
        assert_eq!(baseline.status, 200);
        assert_eq!(baseline.body["meta"]["total"], 100);
    }

    println!(
        "[access-mode list of 100 events in 5 communities, caller member of 3; {viewers} viewers]\n  \
         per cold list: Access calls {}, Portal calls {}, mean {:?}\n  \
         per warm list: Access calls 0, Portal calls 0, mean {:?}\n  \
         system admin list (no authorization at all, also unfiltered SQL): mean {:?}\n  \
         Access call mean {} µs (max {}), Portal call mean {} µs (max {}); \
         cache hits {} decisions, {} memberships; authorizer look-ups {} (summed time {} µs)",
        (s1.access_calls - s0.access_calls) / u64::from(viewers),
        (s1.portal_calls - s0.portal_calls) / u64::from(viewers),
        cold_total / viewers,
        warm_total / (viewers * rounds),
        admin_total / rounds,
        (s1.access_latency_micros - s0.access_latency_micros)
            / (s1.access_calls - s0.access_calls).max(1),
        s1.access_latency_max_micros,
        (s1.portal_latency_micros - s0.portal_latency_micros)
            / (s1.portal_calls - s0.portal_calls).max(1),
        s1.portal_latency_max_micros,
        s1.decision_hits - s0.decision_hits,
        s1.membership_hits - s0.membership_hits,
        s1.lookups - s0.lookups,
        s1.lookup_micros - s0.lookup_micros,
    );
}

/// A list over more gated scopes than one request may ask about makes at
/// most `EVENTS_AUTHZ_MAX_CALLS` authority calls, a few at a time, and
/// answers what it could decide with `meta.partial`; the next list, with
/// those answers cached, decides more.
#[tokio::test]
async fn a_list_over_many_gated_scopes_stays_within_its_call_budget() {
    let fakes = Fakes::start();
    let app = fakes.spawn(|s| s.authz_max_calls = Some("10".into())).await;
    let tenant = Uuid::new_v4();
    let organizer = Uuid::new_v4();
    fakes.grant_now(tenant, organizer, ORGANIZER, "TENANT", &tenant.to_string());
    let org = identity(tenant, organizer);
    let viewer = Uuid::new_v4();
    let clubs = 12u32;
    for n in 0..clubs {
        let club = format!("club-{n:02}");
        create(&app, &org, "COMMUNITY", &club, "community", n).await;
        fakes.join_now(tenant, viewer, "COMMUNITY", &club);
    }
    let who = identity(tenant, viewer);
    // Slow answers, so that calls of the list overlap if they are allowed to.
    fakes.dir.access_delay_ms.store(50, Ordering::SeqCst);
    fakes.dir.portal_delay_ms.store(50, Ordering::SeqCst);
    let (a0, p0) = fakes.counts();
    let first = call(&app, "event.list", &who, json!({"limit": 100})).await;
    let (a1, p1) = fakes.counts();
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert!(
        (a1 - a0) + (p1 - p0) <= 10,
        "{} Access + {} Portal calls for one list with a budget of 10",
        a1 - a0,
        p1 - p0
    );
    assert_eq!(
        first.body["meta"]["partial"], true,
        "{:?}",
        first.body["meta"]
    );
    let shown = item_ids(&first).len();
    assert!(
        (1..clubs as usize).contains(&shown),
        "{shown} of {clubs} events decided within the budget"
    );
    let second = call(&app, "event.list", &who, json!({"limit": 100})).await;
    assert!(item_ids(&second).len() > shown, "{:?}", second.body["meta"]);
    let third = call(&app, "event.list", &who, json!({"limit": 100})).await;
    assert_eq!(item_ids(&third).len(), clubs as usize);
    assert!(
        third.body["meta"].get("partial").is_none(),
        "{:?}",
        third.body["meta"]
    );
    assert!(stats(&app).over_budget > 0);
    // The calls and cache look-ups reach the metrics registry.
    let metrics = app.metrics_text().await;
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    for series in [
        r#"events_authz_calls_total{authority="access",outcome="ok"}"#,
        r#"events_authz_calls_total{authority="portal",outcome="ok"}"#,
        r#"events_authz_call_duration_seconds_count{authority="portal"}"#,
        r#"events_authz_cache_total{kind="membership",result="hit"}"#,
    ] {
        assert!(value(series) > 0.0, "{series} in:\n{metrics}");
    }
}

/// Portal's 404 is final: Access allowing read (the implicit member role)
/// does not make a community event visible.
#[tokio::test]
async fn portal_404_hides_an_event_access_would_allow() {
    let fakes = Fakes::start();
    let app = fakes.spawn(|_| {}).await;
    let tenant = Uuid::new_v4();
    let organizer = Uuid::new_v4();
    fakes.grant_now(tenant, organizer, ORGANIZER, "TENANT", &tenant.to_string());
    let org = identity(tenant, organizer);
    let community = create(&app, &org, "COMMUNITY", "c1", "community", 0).await;
    let team = create(&app, &org, "TEAM", "t1", "team", 1).await;
    let public = create(&app, &org, "TENANT", &tenant.to_string(), "public", 2).await;
    let stranger = Uuid::new_v4();
    let who = identity(tenant, stranger);

    for id in [&community, &team] {
        for (op, body) in [
            ("event.get", json!({"id": id})),
            ("event.ics", json!({"id": id})),
            ("rsvp.set", json!({"eventId": id, "status": "going"})),
        ] {
            let reply = call(&app, op, &who, body).await;
            assert_eq!(reply.status, 404, "{op}: {:?}", reply.body);
        }
    }
    let list = call(&app, "event.list", &who, json!({})).await;
    assert_eq!(item_ids(&list), vec![public.clone()]);
    assert!(list.body["meta"].get("partial").is_none());

    // Access was asked and (implicit member role) allowed read at the scopes;
    // Portal answered 404 for this user.
    let u = stranger.to_string();
    let asked: Vec<Value> = fakes
        .access
        .calls()
        .iter()
        .filter(|c| header(c, "x-user-id") == u)
        .map(|c| serde_json::from_slice(&c.body).expect("json"))
        .collect();
    for (st, sid) in [("COMMUNITY", "c1"), ("TEAM", "t1")] {
        assert!(
            asked.iter().any(|b| b["action"] == "events.event.read"
                && b["scope"]["type"] == st
                && b["scope"]["id"] == sid),
            "read at {st}/{sid} was not asked: {asked:?}"
        );
    }
    let portal: Vec<String> = fakes
        .portal
        .calls()
        .iter()
        .filter(|c| c.path.ends_with(&u))
        .map(|c| c.path.clone())
        .collect();
    assert_eq!(
        portal,
        vec![
            format!("/api/v1/communities/c1/members/{u}"),
            format!("/api/v1/teams/t1/members/{u}"),
        ],
        "one Portal call per scope, the 404 cached for the rest"
    );

    // Joining makes it visible (after the negative TTL).
    fakes.join_now(tenant, stranger, "COMMUNITY", "c1");
    tokio::time::sleep(Duration::from_millis(5_200)).await;
    let got = call(&app, "event.get", &who, json!({"id": community})).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
}

/// A TCP forwarder to the fake Access that can be closed (connection
/// refused) and opened again on the same port.
struct Switch {
    port: u16,
    target: SocketAddr,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Switch {
    async fn start(target: SocketAddr) -> Self {
        let switch = Self {
            port: free_port(),
            target,
            task: Mutex::new(None),
        };
        switch.up().await;
        switch
    }

    async fn up(&self) {
        let mut listener = None;
        for _ in 0..100 {
            if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                listener = Some(l);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let listener = listener.expect("the switch port binds again");
        let target = self.target;
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) cuts every
            // forwarded connection too.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        *self.task.lock().expect("task") = Some(task);
    }

    async fn down(&self) {
        let task = self.task.lock().expect("task").take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1", self.port)
    }
}

/// Access unreachable, answering 5xx or 4xx, or answering 200 without a
/// boolean decision: every operation that needs it is a 503
/// ACCESS_UNAVAILABLE; those that need no Access (creator, system admin,
/// DSAR on oneself) still work; everything recovers when Access is back.
#[tokio::test]
async fn access_down_is_503_on_every_operation_that_needs_it_and_recovers() {
    let fakes = Fakes::start();
    let switch = Switch::start(fakes.access.addr).await;
    let url = switch.base_url();
    let app = fakes.spawn(move |s| s.access_base_url = Some(url)).await;
    let tenant = Uuid::new_v4();
    let organizer = Uuid::new_v4();
    fakes.grant_now(tenant, organizer, ORGANIZER, "TENANT", &tenant.to_string());
    let org = identity(tenant, organizer);
    let public = create(&app, &org, "TENANT", &tenant.to_string(), "public", 0).await;
    let community = create(&app, &org, "COMMUNITY", "c1", "community", 1).await;
    let private = create(&app, &org, "TENANT", &tenant.to_string(), "private", 2).await;
    let viewer = Uuid::new_v4();
    fakes.join_now(tenant, viewer, "COMMUNITY", "c1");
    let who = identity(tenant, viewer);
    // A second organizer whose create permission was never cached.
    let organizer2 = Uuid::new_v4();
    fakes.grant_now(tenant, organizer2, ORGANIZER, "TENANT", &tenant.to_string());
    let org2 = identity(tenant, organizer2);
    let create_body = json!({
        "scopeType": "TENANT", "scopeId": tenant.to_string(), "title": "new",
        "startsAt": "2030-02-01T10:00:00Z", "endsAt": "2030-02-01T11:00:00Z",
    });

    let needs_access: Vec<(&str, &Identity, Value)> = vec![
        ("event.get", &who, json!({"id": public})),
        ("event.ics", &who, json!({"id": public})),
        (
            "rsvp.set",
            &who,
            json!({"eventId": public, "status": "going"}),
        ),
        ("event.get", &who, json!({"id": community})),
        (
            "rsvp.set",
            &who,
            json!({"eventId": community, "status": "going"}),
        ),
        ("event.list", &who, json!({})),
        ("event.create", &org2, create_body.clone()),
    ];
    let mut failures = Vec::new();
    for (label, mode) in [
        ("connection refused", None),
        ("500", Some(ANSWER_500)),
        ("503", Some(ANSWER_503)),
        ("400", Some(ANSWER_400)),
        ("200 with a JSON array", Some(ANSWER_NOT_OBJECT)),
        ("200 without a boolean `allowed`", Some(ANSWER_NO_BOOLEAN)),
    ] {
        match mode {
            None => switch.down().await,
            Some(mode) => fakes.dir.access_mode.store(mode, Ordering::SeqCst),
        }
        for (op, caller, body) in &needs_access {
            let reply = call(&app, op, caller, body.clone()).await;
            if reply.status != 503 || reply.code.as_deref() != Some("ACCESS_UNAVAILABLE") {
                failures.push(format!(
                    "[{label}] {op}: {} {:?} {:?}",
                    reply.status, reply.code, reply.body
                ));
            }
        }
        // No Access needed: the creator's own event, a system admin, DSAR.
        let own = call(&app, "event.get", &org, json!({"id": private})).await;
        let by_admin = call(&app, "event.get", &admin(tenant), json!({"id": community})).await;
        let dsar = call(
            &app,
            "dsar.export",
            &who,
            json!({"userId": viewer.to_string()}),
        )
        .await;
        for (what, reply) in [("creator", own), ("admin", by_admin), ("dsar", dsar)] {
            if reply.status != 200 {
                failures.push(format!(
                    "[{label}] {what}: {} {:?}",
                    reply.status, reply.body
                ));
            }
        }
        match mode {
            None => switch.up().await,
            Some(_) => fakes.dir.access_mode.store(UP, Ordering::SeqCst),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Back: the same callers succeed at once (failures are never cached).
    for (op, caller, body) in &needs_access {
        let reply = call(&app, op, caller, body.clone()).await;
        assert_eq!(reply.status, 200, "after recovery, {op}: {:?}", reply.body);
    }
    let list = call(&app, "event.list", &who, json!({})).await;
    let mut listed = item_ids(&list);
    listed.sort();
    assert!(
        listed.contains(&public) && listed.contains(&community),
        "{listed:?}"
    );
    let s = stats(&app);
    assert!(s.access_failures >= 6 * needs_access.len() as u64, "{s:?}");
}

/// Portal sleeping 3 s (beyond the 2 s deadline) delays only what needs
/// Portal: a TENANT-scope public event answers meanwhile, a list says
/// `meta.partial`, the membership-gated get is a 503 PORTAL_UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_portal_cannot_stall_unrelated_scopes() {
    let fakes = Fakes::start();
    let app = fakes.spawn(|_| {}).await;
    let tenant = Uuid::new_v4();
    let organizer = Uuid::new_v4();
    fakes.grant_now(tenant, organizer, ORGANIZER, "TENANT", &tenant.to_string());
    let org = identity(tenant, organizer);
    let public = create(&app, &org, "TENANT", &tenant.to_string(), "public", 0).await;
    let community = create(&app, &org, "COMMUNITY", "c1", "community", 1).await;
    let viewer = Uuid::new_v4();
    fakes.join_now(tenant, viewer, "COMMUNITY", "c1");
    let who = identity(tenant, viewer);
    // Warm Access for the viewer's read at the TENANT scope.
    let warm = call(
        &app,
        "event.get",
        &identity(tenant, viewer),
        json!({"id": public}),
    )
    .await;
    assert_eq!(warm.status, 200);

    fakes.dir.portal_delay_ms.store(3_000, Ordering::SeqCst);
    let started = Instant::now();
    let slow = {
        let client = app.client();
        let who = who.clone();
        let id = community.clone();
        tokio::spawn(async move {
            let reply = client
                .call("event.get", &who, &json!({"id": id}))
                .await
                .expect("reply");
            (reply, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fast_started = Instant::now();
    let fast = call(&app, "event.get", &who, json!({"id": public})).await;
    let fast_took = fast_started.elapsed();
    assert_eq!(fast.status, 200, "{:?}", fast.body);
    assert!(
        !slow.is_finished(),
        "the TENANT-scope get must not wait for the community get"
    );
    let list_started = Instant::now();
    let list = call(&app, "event.list", &who, json!({})).await;
    let list_took = list_started.elapsed();
    assert_eq!(list.status, 200, "{:?}", list.body);
    assert_eq!(item_ids(&list), vec![public.clone()]);
    assert_eq!(
        list.body["meta"]["partial"],
        json!(true),
        "{:?}",
        list.body["meta"]
    );
    let (slow_reply, slow_took) = slow.await.expect("slow task");
    assert_eq!(slow_reply.status, 503, "{:?}", slow_reply.body);
    assert_eq!(slow_reply.code.as_deref(), Some("PORTAL_UNAVAILABLE"));
    println!(
        "[slow Portal, 3 s] public TENANT get: {fast_took:?}; list (partial): {list_took:?}; \
         community get → 503 after {slow_took:?}"
    );

    // Portal fast again: the membership answers.
    fakes.dir.portal_delay_ms.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let got = call(&app, "event.get", &who, json!({"id": community})).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
}

/// While Portal fails, the last answer it gave is used for
/// EVENTS_PORTAL_STALE_MAX; after that the membership is unknown (503 for a
/// targeted operation, `meta.partial` for a list).
#[tokio::test]
async fn the_last_portal_answer_is_used_for_a_bounded_time() {
    let fakes = Fakes::start();
    let app = fakes
        .spawn(|s| {
            s.authz_cache_ttl = Some("1s".into());
            s.authz_negative_ttl = Some("1s".into());
            s.portal_stale_max = Some("3s".into());
            s.authz_timeout = Some("1s".into());
        })
        .await;
    let tenant = Uuid::new_v4();
    let organizer = Uuid::new_v4();
    fakes.grant_now(tenant, organizer, ORGANIZER, "TENANT", &tenant.to_string());
    let org = identity(tenant, organizer);
    let public = create(&app, &org, "TENANT", &tenant.to_string(), "public", 0).await;
    let community = create(&app, &org, "COMMUNITY", "c1", "community", 1).await;
    let member = Uuid::new_v4();
    fakes.join_now(tenant, member, "COMMUNITY", "c1");
    let member_id = identity(tenant, member);
    let outsider_id = identity(tenant, Uuid::new_v4());

    let fetched = Instant::now();
    assert_eq!(
        call(&app, "event.get", &member_id, json!({"id": community}))
            .await
            .status,
        200
    );
    assert_eq!(
        call(&app, "event.get", &outsider_id, json!({"id": community}))
            .await
            .status,
        404
    );

    fakes.dir.portal_mode.store(ANSWER_503, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    // Expired but within the stale bound: the last answers stand.
    let got = call(&app, "event.get", &member_id, json!({"id": community})).await;
    assert_eq!(got.status, 200, "stale member: {:?}", got.body);
    let hidden = call(&app, "event.get", &outsider_id, json!({"id": community})).await;
    assert_eq!(hidden.status, 404, "stale non-member: {:?}", hidden.body);
    let list = call(&app, "event.list", &member_id, json!({})).await;
    assert_eq!(item_ids(&list).len(), 2);
    assert!(list.body["meta"].get("partial").is_none());
    assert!(stats(&app).stale_memberships >= 2);

    // Past the bound: unknown.
    let wait = Duration::from_millis(3_300).saturating_sub(fetched.elapsed());
    tokio::time::sleep(wait).await;
    let got = call(&app, "event.get", &member_id, json!({"id": community})).await;
    assert_eq!(got.status, 503, "{:?}", got.body);
    assert_eq!(got.code.as_deref(), Some("PORTAL_UNAVAILABLE"));
    let list = call(&app, "event.list", &member_id, json!({})).await;
    assert_eq!(list.status, 200);
    assert_eq!(item_ids(&list), vec![public.clone()]);
    assert_eq!(list.body["meta"]["partial"], json!(true));
    // A public event needs no Portal.
    assert_eq!(
        call(&app, "event.get", &member_id, json!({"id": public}))
            .await
            .status,
        200
    );

    fakes.dir.portal_mode.store(UP, Ordering::SeqCst);
    let got = call(&app, "event.get", &member_id, json!({"id": community})).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
}

/// Upper-case and braced ids in; canonical ids out, in Access's headers and
/// body and in Portal's headers and path. Headers as the contracts want,
/// signatures over the full decoded path (the base URL's path is not
/// hard-coded), the inbound request id forwarded, scope ids escaped.
#[tokio::test]
async fn outgoing_calls_carry_canonical_ids_and_the_contracted_headers() {
    let fakes = Fakes::start();
    let access_base = fakes.access.base_url("/internal/acc");
    let app = fakes
        .spawn(move |s| s.access_base_url = Some(access_base))
        .await;
    let tenant = Uuid::new_v4();
    let organizer = Uuid::new_v4();
    fakes.grant_now(tenant, organizer, ORGANIZER, "TENANT", &tenant.to_string());
    let org = identity(tenant, organizer);
    let odd = "club ü?#%2F;x";
    let public = create(&app, &org, "TENANT", &tenant.to_string(), "public", 0).await;
    let community = create(&app, &org, "COMMUNITY", odd, "community", 1).await;
    let team = create(&app, &org, "TEAM", "t1", "team", 2).await;
    let user = Uuid::new_v4();
    fakes.join_now(tenant, user, "COMMUNITY", odd);
    fakes.join_now(tenant, user, "TEAM", "t1");
    let t = tenant.to_string();
    let u = user.to_string();
    let flags = r#"{"membership_status":"active","email_verified":true}"#;
    let loud = Identity {
        tenant_id: t.to_uppercase(),
        tenant_slug: "acme".into(),
        user_id: format!("{{{}}}", u.to_uppercase()),
        master_flags: Some(flags.into()),
    };

    let (a0, p0) = fakes.counts();
    let mut rids = HashSet::new();
    for (op, body) in [
        ("event.get", json!({"id": public})),
        ("event.get", json!({"id": community})),
        ("event.ics", json!({"id": team})),
        ("event.list", json!({})),
        ("rsvp.set", json!({"eventId": community, "status": "going"})),
    ] {
        let rid = format!("rid-{}", Uuid::new_v4());
        let reply = call_as(&app, op, &loud, body, &rid).await;
        assert_eq!(reply.status, 200, "{op}: {:?}", reply.body);
        rids.insert(rid);
    }
    let access: Vec<RecordedCall> = fakes.access.calls()[a0..].to_vec();
    let portal: Vec<RecordedCall> = fakes.portal.calls()[p0..].to_vec();
    assert!(
        !access.is_empty() && portal.len() == 2,
        "{} {}",
        access.len(),
        portal.len()
    );
    let flags_compact =
        serde_json::to_string(&serde_json::from_str::<Value>(flags).expect("flags"))
            .expect("compact");
    for c in access.iter().chain(&portal) {
        assert!(c.signature_valid, "{} {}", c.method, c.path);
        assert_eq!(header(c, "x-tenant-id"), t);
        assert_eq!(header(c, "x-user-id"), u);
        assert_eq!(header(c, "x-tenant-slug"), "acme");
        assert_eq!(header(c, "x-forwarded-proto"), "https");
        assert_eq!(header(c, "x-master-flags"), flags_compact);
        assert!(rids.contains(header(c, "x-request-id")), "{:?}", c.headers);
        assert!(header(c, "x-updspace-timestamp").parse::<i64>().is_ok());
        assert_eq!(header(c, "x-updspace-signature").len(), 64);
    }
    for c in &access {
        assert_eq!(c.method, "POST");
        assert_eq!(c.path, "/internal/acc/access/check");
        assert_eq!(header(c, "content-type"), "application/json");
        let body: Value = serde_json::from_slice(&c.body).expect("json body");
        // Compact, keys in the previous service's order, canonical ids.
        let expected = format!(
            r#"{{"tenant_id":"{t}","user_id":"{u}","action":{},"scope":{{"type":{},"id":{}}},"master_flags":{{"suspended":false,"banned":false,"system_admin":false,"membership_status":"active"}}}}"#,
            body["action"], body["scope"]["type"], body["scope"]["id"],
        );
        assert_eq!(String::from_utf8_lossy(&c.body), expected);
    }
    let mut paths: Vec<&str> = portal.iter().map(|c| c.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            format!("/api/v1/communities/club%20%C3%BC%3F%23%252F;x/members/{u}"),
            format!("/api/v1/teams/t1/members/{u}"),
        ]
    );
    assert!(
        portal
            .iter()
            .all(|c| c.method == "GET" && c.body.is_empty())
    );

    // Without flags: Access still gets `{}`, Portal no header at all.
    let plain = Uuid::new_v4();
    fakes.join_now(tenant, plain, "TEAM", "t1");
    let (a1, p1) = fakes.counts();
    let reply = call(
        &app,
        "event.get",
        &identity(tenant, plain),
        json!({"id": team}),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let access = &fakes.access.calls()[a1..];
    let portal = &fakes.portal.calls()[p1..];
    assert!(access.iter().all(|c| header(c, "x-master-flags") == "{}"));
    assert!(
        access
            .iter()
            .all(|c| String::from_utf8_lossy(&c.body).ends_with(r#""membership_status":null}}"#))
    );
    assert_eq!(portal.len(), 1);
    assert!(
        !portal[0].headers.contains_key("x-master-flags"),
        "{:?}",
        portal[0].headers
    );
}

async fn bypass_rows(app: &TestApp, rid: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'system_admin.bypass' AND request_id = $1",
    )
    .bind(rid)
    .fetch_one(&app.db)
    .await
    .expect("audit rows")
}

/// Suspended and banned callers are refused without any call to Access
/// (only Portal is asked, for the membership that tells them 403 from 404);
/// system admins are allowed without any call, and audited.
#[tokio::test]
async fn blocked_users_and_system_admins_make_no_outgoing_calls() {
    let fakes = Fakes::start();
    let app = fakes.spawn(|_| {}).await;
    let tenant = Uuid::new_v4();
    let organizer = Uuid::new_v4();
    fakes.grant_now(tenant, organizer, ORGANIZER, "TENANT", &tenant.to_string());
    let org = identity(tenant, organizer);
    let ids = [
        create(&app, &org, "TENANT", &tenant.to_string(), "public", 0).await,
        create(&app, &org, "COMMUNITY", "c1", "community", 1).await,
        create(&app, &org, "TEAM", "t1", "team", 2).await,
        create(&app, &org, "TENANT", &tenant.to_string(), "private", 3).await,
    ];
    // Visible were they not blocked: public, and c1 (they are a member).
    let expected = [403, 403, 404, 404];
    let (a0, p0) = fakes.counts();
    let blocked_flags = [
        r#"{"suspended":true}"#,
        r#"{"banned":true}"#,
        r#"{"status":"Suspended"}"#,
        r#"{"system_admin":true,"banned":true}"#,
    ];
    for flags in blocked_flags {
        let user = Uuid::new_v4();
        fakes.join_now(tenant, user, "COMMUNITY", "c1");
        fakes.grant_now(tenant, user, ORGANIZER, "TENANT", &tenant.to_string());
        let who = Identity {
            master_flags: Some(flags.into()),
            ..identity(tenant, user)
        };
        for (id, expected) in ids.iter().zip(expected) {
            for (op, body) in [
                ("event.get", json!({"id": id})),
                ("event.ics", json!({"id": id})),
                ("rsvp.set", json!({"eventId": id, "status": "going"})),
            ] {
                let reply = call(&app, op, &who, body).await;
                assert_eq!(reply.status, expected, "{flags} {op}: {:?}", reply.body);
            }
        }
        let list = call(&app, "event.list", &who, json!({})).await;
        assert_eq!(list.status, 403, "{flags}: {:?}", list.body);
        // DSAR on themselves stays their right.
        let dsar = call(
            &app,
            "dsar.export",
            &who,
            json!({"userId": user.to_string()}),
        )
        .await;
        assert_eq!(dsar.status, 200, "{flags}: {:?}", dsar.body);
    }
    let (a1, p1) = fakes.counts();
    assert_eq!(a1, a0, "a blocked caller caused a call to Access");
    assert!(
        p1 - p0 <= 2 * blocked_flags.len(),
        "{} Portal calls: one per gated event and blocked caller at most",
        p1 - p0
    );
    let (a0, p0) = (a1, p1);

    let boss = admin(tenant);
    let mut rids = Vec::new();
    for id in &ids {
        for (op, body) in [
            ("event.get", json!({"id": id})),
            ("event.ics", json!({"id": id})),
            ("rsvp.set", json!({"eventId": id, "status": "going"})),
        ] {
            let rid = Uuid::new_v4().to_string();
            let reply = call_as(&app, op, &boss, body, &rid).await;
            assert_eq!(reply.status, 200, "admin {op}: {:?}", reply.body);
            rids.push(rid);
        }
    }
    let rid = Uuid::new_v4().to_string();
    let list = call_as(&app, "event.list", &boss, json!({}), &rid).await;
    assert_eq!(list.body["meta"]["total"], 4);
    rids.push(rid);
    assert_eq!(
        fakes.counts(),
        (a0, p0),
        "a system admin caused an outgoing call"
    );
    for rid in &rids {
        let mut rows = 0;
        for _ in 0..50 {
            rows = bypass_rows(&app, rid).await;
            if rows > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(rows, 1, "request {rid}: one audit row");
    }
}

/// Many requests at once for the same (user, scope): one Access call and
/// one Portal call, the others wait for those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_lookups_share_one_call() {
    let fakes = Fakes::start();
    let app = fakes.spawn(|_| {}).await;
    let tenant = Uuid::new_v4();
    let organizer = Uuid::new_v4();
    fakes.grant_now(tenant, organizer, ORGANIZER, "TENANT", &tenant.to_string());
    let community = create(
        &app,
        &identity(tenant, organizer),
        "COMMUNITY",
        "c1",
        "community",
        0,
    )
    .await;
    let viewer = Uuid::new_v4();
    fakes.join_now(tenant, viewer, "COMMUNITY", "c1");
    let who = identity(tenant, viewer);
    fakes.dir.access_delay_ms.store(300, Ordering::SeqCst);
    fakes.dir.portal_delay_ms.store(300, Ordering::SeqCst);
    let (a0, p0) = fakes.counts();
    let s0 = stats(&app);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = app.client();
        let who = who.clone();
        let id = community.clone();
        tasks.push(tokio::spawn(async move {
            client
                .call("event.get", &who, &json!({"id": id}))
                .await
                .expect("reply")
        }));
    }
    for task in tasks {
        let reply = task.await.expect("task");
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }
    let (a1, p1) = fakes.counts();
    let s1 = stats(&app);
    assert_eq!(
        (a1 - a0, p1 - p0),
        (1, 1),
        "one call each for 20 identical look-ups"
    );
    assert!(s1.coalesced > s0.coalesced, "{s1:?}");
    println!(
        "[20 concurrent gets, cold] Access calls 1, Portal calls 1, coalesced waits {}",
        s1.coalesced - s0.coalesced
    );
}

fn context(tenant: Uuid, user: Uuid, flags: &str) -> InternalContext {
    InternalContext {
        request_id: format!("direct-{}", Uuid::new_v4()),
        tenant_id: tenant,
        tenant_slug: "acme".into(),
        user_id: user,
        master_flags: MasterFlags::parse(Some(flags)),
        signature_version: SignatureVersion::V1,
        signature: "0".repeat(64),
        timestamp: 0,
    }
}

fn direct_authorizer(fakes: &Fakes, timeout: Duration) -> AccessAuthorizer {
    AccessAuthorizer::new(AccessSettings {
        access_base_url: fakes.access.base_url("/api/v1").parse().expect("url"),
        portal_base_url: fakes.portal.base_url("/api/v1").parse().expect("url"),
        secret: TEST_SECRET.into(),
        cache_ttl: Duration::from_secs(30),
        negative_ttl: Duration::from_secs(5),
        timeout,
        portal_stale_max: Duration::from_secs(600),
        max_entries: 1_000,
    })
    .expect("authorizer")
}

fn community(id: &str) -> Scope {
    Scope::from_stored(ScopeType::Community, ScopeId::parse(id).expect("id"))
}

/// The authorizer on its own: several scopes are asked concurrently under
/// one deadline (five 500 ms answers fit a 1.5 s deadline only when asked
/// together), identical questions share a call, and the caches answer the
/// repeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorizer_asks_scopes_concurrently_and_coalesces() {
    let fakes = Fakes::start();
    let authorizer = Arc::new(direct_authorizer(&fakes, Duration::from_millis(1_500)));
    let tenant = Uuid::new_v4();
    let user = Uuid::new_v4();
    let scopes: Vec<Scope> = (0..5).map(|i| community(&format!("k{i}"))).collect();
    for i in [0, 2, 4] {
        fakes.join_now(tenant, user, "COMMUNITY", &format!("k{i}"));
    }
    fakes.dir.portal_delay_ms.store(500, Ordering::SeqCst);
    let ctx = context(tenant, user, "");
    let answer = authorizer
        .memberships(&ctx, &scopes, &CallBudget::unlimited())
        .await
        .expect("memberships");
    assert!(
        answer.unknown.is_empty(),
        "sequential calls would miss the deadline: {answer:?}"
    );
    let mut members: Vec<&str> = answer
        .member_of
        .iter()
        .map(|s| s.scope_id().as_str())
        .collect();
    members.sort();
    assert_eq!(members, ["k0", "k2", "k4"]);
    assert_eq!(fakes.portal.calls().len(), 5);
    // Cached: no new call.
    let again = authorizer
        .memberships(&ctx, &scopes, &CallBudget::unlimited())
        .await
        .expect("memberships");
    assert_eq!(again.member_of, answer.member_of);
    assert_eq!(fakes.portal.calls().len(), 5);

    // 30 identical permission questions at once: one Access call.
    fakes.dir.access_delay_ms.store(300, Ordering::SeqCst);
    let scope = community("k1");
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let authorizer = authorizer.clone();
        let ctx = context(tenant, user, "");
        let scope = scope.clone();
        tasks.push(tokio::spawn(async move {
            authorizer
                .has_permission(&ctx, Permission::RsvpSet, &scope, &CallBudget::unlimited())
                .await
                .expect("decision")
                .expect("decided")
        }));
    }
    for task in tasks {
        assert!(task.await.expect("task"));
    }
    assert_eq!(fakes.access.calls().len(), 1);
    let s = authorizer.stats();
    assert_eq!(s.coalesced, 29, "{s:?}");
    // A different permission, or different forwarded flags, is another question.
    assert!(
        !authorizer
            .has_permission(
                &ctx,
                Permission::EventCreate,
                &scope,
                &CallBudget::unlimited()
            )
            .await
            .expect("decision")
            .expect("decided")
    );
    let with_status = context(tenant, user, r#"{"membership_status":"active"}"#);
    assert!(
        authorizer
            .has_permission(
                &with_status,
                Permission::RsvpSet,
                &scope,
                &CallBudget::unlimited()
            )
            .await
            .expect("decision")
            .expect("decided")
    );
    assert_eq!(fakes.access.calls().len(), 3);
    // Suspended and admin contexts never reach Access; memberships of a
    // blocked caller are asked (they tell a 403 from a 404), here from the cache.
    let blocked = context(tenant, user, r#"{"banned":true}"#);
    assert!(
        !authorizer
            .has_permission(
                &blocked,
                Permission::EventRead,
                &scope,
                &CallBudget::unlimited()
            )
            .await
            .expect("d")
            .expect("decided")
    );
    assert!(
        authorizer
            .memberships(&blocked, &scopes, &CallBudget::unlimited())
            .await
            .expect("m")
            .member_of
            .len()
            == 3
    );
    let boss = context(tenant, user, r#"{"system_admin":true}"#);
    assert!(
        authorizer
            .has_permission(
                &boss,
                Permission::EventManage,
                &scope,
                &CallBudget::unlimited()
            )
            .await
            .expect("d")
            .expect("decided")
    );
    assert_eq!(fakes.access.calls().len(), 3);
    assert_eq!(fakes.portal.calls().len(), 5);
    // Ids that cannot name a Portal resource are "not a member", uncalled.
    let odd = [community(".."), community("a/b")];
    let answer = authorizer
        .memberships(&ctx, &odd, &CallBudget::unlimited())
        .await
        .expect("m");
    assert!(answer.member_of.is_empty() && answer.unknown.is_empty());
    assert_eq!(fakes.portal.calls().len(), 5);
}

/// A calendar feed with Access and Portal as the authority: the owner's
/// community event is in it while Portal says they are a member, and gone
/// at the next request once Portal says they are not (with no answer
/// cached, `EVENTS_AUTHZ_CACHE_TTL=0s`); a system admin's feed shows no
/// more than a member's (no master flags on a feed request).
#[tokio::test]
async fn a_feed_follows_portal_memberships() {
    let fakes = Fakes::start();
    let app = fakes
        .spawn(|s| {
            s.authz_cache_ttl = Some("0s".into());
            s.authz_negative_ttl = Some("0s".into());
        })
        .await;
    let tenant = Uuid::new_v4();
    let organizer = Uuid::new_v4();
    fakes.grant_now(tenant, organizer, ORGANIZER, "TENANT", &tenant.to_string());
    let org = identity(tenant, organizer);
    create(&app, &org, "COMMUNITY", "c1", "community", 1).await;
    create(&app, &org, "TENANT", &tenant.to_string(), "public", 2).await;
    let member = Uuid::new_v4();
    fakes.join_now(tenant, member, "COMMUNITY", "c1");
    let feed = call(&app, "feed.create", &identity(tenant, member), json!({})).await;
    assert_eq!(feed.status, 200, "{:?}", feed.body);
    let url = feed.body["url"].as_str().expect("url").to_string();
    let titles = |text: &str| -> Vec<String> {
        let mut t: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("SUMMARY:"))
            .map(str::to_string)
            .collect();
        t.sort();
        t
    };
    let get = |url: String| {
        let http = app.http.clone();
        let full = app.url(&url);
        async move {
            let r = http.get(full).send().await.expect("feed");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    let (status, text) = get(url.clone()).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(titles(&text), vec!["event 1", "event 2"]);

    fakes.dir.members.lock().expect("members").clear();
    let (status, text) = get(url.clone()).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        titles(&text),
        vec!["event 2"],
        "the lost membership still shows"
    );

    // A system admin who is no member sees only the public event in a feed.
    let boss = Identity {
        master_flags: Some(r#"{"system_admin":true}"#.into()),
        ..identity(tenant, Uuid::new_v4())
    };
    let feed = call(&app, "feed.create", &boss, json!({})).await;
    let (status, text) = get(feed.body["url"].as_str().expect("url").to_string()).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(titles(&text), vec!["event 2"]);
}
