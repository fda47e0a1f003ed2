//! The HTTP contract the BFF, the SPA and curl users rely on
//! (`docs/http-api.md`): every route on both prefixes, the JSON shapes, the
//! ICS bytes, id canonicalisation, idempotent create, tolerated headers, and
//! the request id and security headers on every response. The previous
//! service's 23 tests are rewritten here at the HTTP level where they apply
//! (`original_NN_…`, numbered as that suite numbered them):
//!
//! - 1–11, 18, 19: below, with permissions from local role bindings
//!   (`events.organizer`) and memberships from `app.join` instead of mocks.
//! - 12, 21 (no HMAC secret): the service now refuses to start without one
//!   (`original_12_and_21_…`), so the request-time 500 cannot happen.
//! - 13: at the HTTP level, equal start and end is refused (400), and the id
//!   is generated and the visibility stored.
//! - 17 (`X_FRAME_OPTIONS = DENY`): `X-Frame-Options: DENY` is checked on
//!   every response sent by [`Call::send`].
//! - 14 (`str(event)`), 15, 16, 22, 23 (Django strict-mode settings: secret
//!   key, `ALLOWED_HOSTS`, TLS redirect, HSTS, cookies) have no counterpart:
//!   there is no Django, no session and no redirect; TLS ends at the proxy.
//! - 20 (retention purge) is a CLI command, not HTTP.
//!
//! Requests go through [`Call`], which signs like the BFF but lets a test
//! choose the request id, timestamp, signed path and headers, never follows
//! redirects, and checks the headers every response must carry.

use std::collections::BTreeSet;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use updspace_events::client::Identity;
use uuid::Uuid;

use crate::helpers::{HttpReply, TEST_SECRET, TestApp, admin, identity};

pub const ORGANIZER: &str = "events.organizer";
/// The two mounts: the original's, and the one the BFF actually calls.
pub const PREFIXES: [&str; 2] = ["/api/v1/events", "/api/v1"];
pub const NIL: &str = "00000000-0000-0000-0000-000000000000";

/// One HTTP request, signed like the BFF signs (v1 over the path sent, the
/// query excluded) unless told otherwise.
#[derive(Debug, Clone)]
pub struct Call {
    method: String,
    target: String,
    sign_path: Option<String>,
    sign_query: Option<String>,
    body: Vec<u8>,
    who: Identity,
    request_id: Option<String>,
    ts: i64,
    /// 0: unsigned; 1 or 2: the signature version.
    version: u8,
    secret: String,
    /// Applied after signing, in order: `None` removes the header.
    after: Vec<(String, Option<String>)>,
}

impl Call {
    pub fn new(method: &str, target: &str, who: &Identity) -> Self {
        Self {
            method: method.to_string(),
            target: target.to_string(),
            sign_path: None,
            sign_query: None,
            body: Vec::new(),
            who: who.clone(),
            request_id: Some(Uuid::new_v4().to_string()),
            ts: chrono::Utc::now().timestamp(),
            version: 1,
            secret: TEST_SECRET.to_string(),
            after: Vec::new(),
        }
    }

    pub fn json(mut self, body: Value) -> Self {
        self.body = body.to_string().into_bytes();
        self
    }

    pub fn raw(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn request_id(mut self, id: &str) -> Self {
        self.request_id = Some(id.to_string());
        self
    }

    /// No `X-Request-Id` at all.
    pub fn no_request_id(mut self) -> Self {
        self.request_id = None;
        self
    }

    pub fn ts(mut self, ts: i64) -> Self {
        self.ts = ts;
        self
    }

    pub fn v2(mut self) -> Self {
        self.version = 2;
        self
    }

    pub fn unsigned(mut self) -> Self {
        self.version = 0;
        self
    }

    pub fn secret(mut self, secret: &str) -> Self {
        self.secret = secret.to_string();
        self
    }

    /// Signs over `path` (sent as given, before percent-decoding) instead of
    /// the path of the target.
    pub fn sign_path(mut self, path: &str) -> Self {
        self.sign_path = Some(path.to_string());
        self
    }

    /// Signs `query` (v2 covers the query) instead of the query sent.
    pub fn sign_query(mut self, query: &str) -> Self {
        self.sign_query = Some(query.to_string());
        self
    }

    /// The `X-Request-Id` this call sends.
    pub fn rid(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// Sets a header after signing (replacing what signing produced).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.after.push((name.to_string(), Some(value.to_string())));
        self
    }

    /// Removes a header after signing.
    pub fn without(mut self, name: &str) -> Self {
        self.after.push((name.to_string(), None));
        self
    }

    pub async fn send(&self, app: &TestApp) -> HttpReply {
        let (path, query) = self.target.split_once('?').unwrap_or((&self.target, ""));
        let signed_path = self.sign_path.as_deref().unwrap_or(path);
        let decoded = percent_encoding::percent_decode_str(signed_path)
            .decode_utf8_lossy()
            .into_owned();
        let request_id = self.request_id.clone().unwrap_or_default();
        let context = updspace_events::auth::ContextHeaders {
            request_id: &request_id,
            tenant_id: &self.who.tenant_id,
            tenant_slug: &self.who.tenant_slug,
            user_id: Some(&self.who.user_id),
            master_flags: self.who.master_flags.as_deref(),
        };
        let signed_query = self.sign_query.as_deref().unwrap_or(query);
        let parts = updspace_events::auth::RequestParts::http(
            &self.method,
            &decoded,
            signed_query,
            &self.body,
        );
        let mut pairs = if self.version == 2 {
            updspace_events::auth::sign_headers_v2(&self.secret, &parts, &context, self.ts)
        } else {
            updspace_events::auth::sign_headers_v1(&self.secret, &parts, &context, self.ts)
        };
        if self.version == 0 {
            pairs.retain(|(k, _)| {
                !k.eq_ignore_ascii_case("x-updspace-timestamp")
                    && !k.eq_ignore_ascii_case("x-updspace-signature")
            });
        }
        if self.request_id.is_none() {
            pairs.retain(|(k, _)| !k.eq_ignore_ascii_case("x-request-id"));
        }
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        for (k, v) in pairs {
            headers.insert(
                HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                HeaderValue::from_str(&v).expect("header value"),
            );
        }
        for (k, v) in &self.after {
            let name = HeaderName::from_bytes(k.as_bytes()).expect("header name");
            match v {
                Some(v) => {
                    headers.insert(name, HeaderValue::from_str(v).expect("header value"));
                }
                None => {
                    headers.remove(name);
                }
            }
        }
        let sent_request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client");
        let response = client
            .request(self.method.parse().expect("method"), app.url(&self.target))
            .headers(headers)
            .body(self.body.clone())
            .send()
            .await
            .expect("HTTP request");
        let reply = HttpReply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            text: response.text().await.unwrap_or_default(),
        };
        let what = format!("{} {}", self.method, self.target);
        check_common_headers(&reply, sent_request_id.as_deref(), &what);
        reply
    }
}

fn header<'a>(reply: &'a HttpReply, name: &str) -> Option<&'a str> {
    reply.headers.get(name).and_then(|v| v.to_str().ok())
}

/// What every response carries: no redirect, the request id echoed (or one
/// made up when none was sent), and the security headers.
pub fn check_common_headers(reply: &HttpReply, sent_request_id: Option<&str>, what: &str) {
    assert!(
        !(300..400).contains(&reply.status),
        "{what}: a redirect ({}) {:?}",
        reply.status,
        reply.headers
    );
    match sent_request_id.filter(|s| !s.trim().is_empty()) {
        Some(id) => assert_eq!(
            header(reply, "x-request-id"),
            Some(id),
            "{what}: request id echo"
        ),
        None => assert!(
            header(reply, "x-request-id").is_some_and(|v| !v.is_empty()),
            "{what}: no request id on the response"
        ),
    }
    assert_eq!(
        header(reply, "x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        header(reply, "referrer-policy"),
        Some("same-origin"),
        "{what}"
    );
    assert_eq!(header(reply, "x-frame-options"), Some("DENY"), "{what}");
}

/// Asserts an error reply: status, JSON content type, the exact envelope
/// keys, the code, and the request id. Returns the `error` object.
pub fn assert_error(reply: &HttpReply, status: u16, code: &str, request_id: Option<&str>) -> Value {
    assert_eq!(
        reply.status, status,
        "expected {status} {code}: {}",
        reply.text
    );
    let content_type = header(reply, "content-type").unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "{code}: content type {content_type:?}: {}",
        reply.text
    );
    let body = reply.json();
    let keys: BTreeSet<&str> = body
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(keys, BTreeSet::from(["error"]), "{}", reply.text);
    let error = body["error"].clone();
    let keys: BTreeSet<&str> = error
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        BTreeSet::from(["code", "message", "details", "request_id"]),
        "{}",
        reply.text
    );
    assert_eq!(error["code"], code, "{}", reply.text);
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        reply.text
    );
    assert!(error["details"].is_object(), "{}", reply.text);
    assert_eq!(error["request_id"], json!(request_id), "{}", reply.text);
    error
}

/// A valid create body in the TENANT scope.
pub fn event_body(tenant: Uuid, title: &str) -> Value {
    json!({
        "scopeType": "TENANT",
        "scopeId": tenant.to_string(),
        "title": title,
        "startsAt": "2030-01-10T10:00:00Z",
        "endsAt": "2030-01-10T12:00:00Z",
    })
}

/// A user holding `events.organizer` across the tenant.
pub async fn organizer(app: &TestApp, tenant: Uuid) -> Identity {
    let user = Uuid::new_v4();
    app.grant(tenant, user, ORGANIZER, "TENANT", &tenant.to_string())
        .await;
    identity(tenant, user)
}

/// Creates an event through the BFF path and returns its view.
pub async fn create(app: &TestApp, who: &Identity, body: Value) -> Value {
    let reply = app.bff("POST", "/api/v1/events/", who, Some(body)).await;
    assert_eq!(reply.status, 200, "create: {}", reply.text);
    reply.json()
}

pub fn id_of(view: &Value) -> String {
    view["id"].as_str().expect("id").to_string()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .map(|a| a.iter().map(id_of).collect())
        .unwrap_or_default()
}

/// `YYYY-MM-DDTHH:MM:SS[.mmm]Z`.
fn is_utc_z(s: &str) -> bool {
    let b = s.as_bytes();
    let base = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && s.ends_with('Z');
    base && (b.len() == 20 || (b.len() == 24 && b[19] == b'.'))
}

const EVENT_KEYS: [&str; 32] = [
    "id",
    "tenantId",
    "scopeType",
    "scopeId",
    "title",
    "description",
    "startsAt",
    "endsAt",
    "locationText",
    "locationUrl",
    "gameId",
    "visibility",
    "createdBy",
    "createdAt",
    "updatedAt",
    "status",
    "capacity",
    "version",
    "cancelledAt",
    "cancelReason",
    "rsvpCounts",
    "seats",
    "rsvpOpensAt",
    "rsvpClosesAt",
    "maxGuests",
    "rsvpApproval",
    "reminders",
    "myRsvp",
    "timeZone",
    "seriesId",
    "recurrenceId",
    "myGuests",
];

/// The event view contract: every key, camelCase at the top, the six
/// snake_case counters, datetimes in UTC with `Z`.
fn check_view(view: &Value) {
    assert_eq!(keys(view), set(&EVENT_KEYS), "{view}");
    assert!(
        keys(view).iter().all(|k| !k.contains('_')),
        "top-level keys are camelCase: {view}"
    );
    assert_eq!(
        keys(&view["rsvpCounts"]),
        set(&[
            "interested",
            "going",
            "not_going",
            "waitlisted",
            "pending",
            "declined"
        ]),
        "{view}"
    );
    for k in [
        "interested",
        "going",
        "not_going",
        "waitlisted",
        "pending",
        "declined",
    ] {
        assert!(view["rsvpCounts"][k].is_u64(), "{k}: {view}");
    }
    for k in ["startsAt", "endsAt", "createdAt", "updatedAt"] {
        let s = view[k].as_str().unwrap_or_else(|| panic!("{k}: {view}"));
        assert!(is_utc_z(s), "{k} = {s}");
    }
    assert!(view["version"].is_i64(), "{view}");
    assert!(
        view["status"] == "scheduled" || view["status"] == "cancelled",
        "{view}"
    );
}

// ---------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------

#[tokio::test]
async fn every_route_answers_on_both_prefixes_with_and_without_a_trailing_slash() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    for prefix in PREFIXES {
        for slash in ["", "/"] {
            let at = |rest: &str| format!("{prefix}{rest}{slash}");
            let ctx = format!("{prefix} (trailing {slash:?})");

            let created = Call::new("POST", &format!("{prefix}{slash}"), &boss)
                .json(event_body(tenant, "Route check"))
                .send(&app)
                .await;
            assert_eq!(created.status, 200, "{ctx} create: {}", created.text);
            check_view(&created.json());
            let id = id_of(&created.json());

            let list = Call::new(
                "GET",
                &format!("{prefix}{slash}?scope_type=TENANT&scope_id={tenant}"),
                &boss,
            )
            .send(&app)
            .await;
            assert_eq!(list.status, 200, "{ctx} list: {}", list.text);
            assert!(ids(&list.json()).contains(&id), "{ctx}: {}", list.text);

            let got = Call::new("GET", &at(&format!("/{id}")), &boss)
                .send(&app)
                .await;
            assert_eq!(got.status, 200, "{ctx} get: {}", got.text);
            assert_eq!(got.json()["id"], id.as_str());

            let patched = Call::new("PATCH", &at(&format!("/{id}")), &boss)
                .json(json!({"title": "Renamed"}))
                .send(&app)
                .await;
            assert_eq!(patched.status, 200, "{ctx} patch: {}", patched.text);
            assert_eq!(patched.json()["title"], "Renamed");

            let guest = identity(tenant, Uuid::new_v4());
            let rsvp = Call::new("POST", &at(&format!("/{id}/rsvp")), &guest)
                .json(json!({"status": "going"}))
                .send(&app)
                .await;
            assert_eq!(rsvp.status, 204, "{ctx} rsvp: {}", rsvp.text);
            assert!(rsvp.text.is_empty(), "{ctx}: 204 has no body");

            let rsvps = Call::new("GET", &at(&format!("/{id}/rsvps")), &boss)
                .send(&app)
                .await;
            assert_eq!(rsvps.status, 200, "{ctx} rsvps: {}", rsvps.text);
            assert_eq!(rsvps.json()["items"][0]["userId"], guest.user_id.as_str());

            let cleared = Call::new("DELETE", &at(&format!("/{id}/rsvp")), &guest)
                .send(&app)
                .await;
            assert_eq!(cleared.status, 204, "{ctx} rsvp clear: {}", cleared.text);
            assert!(cleared.text.is_empty());
            let again = Call::new("POST", &at(&format!("/{id}/rsvp")), &guest)
                .json(json!({"status": "interested"}))
                .send(&app)
                .await;
            assert_eq!(again.status, 204, "{ctx}: {}", again.text);

            let marked = Call::new("POST", &at(&format!("/{id}/attendance")), &boss)
                .json(json!({"userId": guest.user_id}))
                .send(&app)
                .await;
            assert_eq!(marked.status, 204, "{ctx} attendance: {}", marked.text);
            assert!(marked.text.is_empty());

            let attendance = Call::new("GET", &at(&format!("/{id}/attendance")), &boss)
                .send(&app)
                .await;
            assert_eq!(attendance.status, 200, "{ctx}: {}", attendance.text);
            assert_eq!(
                attendance.json()["items"][0]["userId"],
                guest.user_id.as_str()
            );
            assert_eq!(
                attendance.json()["items"][0]["markedBy"],
                boss.user_id.as_str()
            );

            let ics = Call::new("GET", &at(&format!("/{id}/ics")), &guest)
                .send(&app)
                .await;
            assert_eq!(ics.status, 200, "{ctx} ics: {}", ics.text);
            assert_eq!(
                header(&ics, "content-type"),
                Some("text/calendar; charset=utf-8")
            );
            assert!(ics.text.starts_with("BEGIN:VCALENDAR\r\n"), "{}", ics.text);

            let uid = &guest.user_id;
            let export = Call::new(
                "GET",
                &at(&format!("/internal/dsar/users/{uid}/export")),
                &guest,
            )
            .send(&app)
            .await;
            assert_eq!(export.status, 200, "{ctx} export: {}", export.text);
            assert_eq!(export.json()["user_id"], uid.as_str());
            assert_eq!(export.json()["rsvps"].as_array().map(Vec::len), Some(1));
            assert_eq!(
                export.json()["attendance"].as_array().map(Vec::len),
                Some(1)
            );

            let erase = Call::new(
                "POST",
                &at(&format!("/internal/dsar/users/{uid}/erase")),
                &guest,
            )
            .send(&app)
            .await;
            assert_eq!(erase.status, 200, "{ctx} erase: {}", erase.text);
            assert_eq!(erase.json()["counts"]["rsvps_deleted"], 1);
            assert_eq!(erase.json()["counts"]["attendance_deleted"], 1);

            let cancelled = Call::new("POST", &at(&format!("/{id}/cancel")), &boss)
                .send(&app)
                .await;
            assert_eq!(cancelled.status, 200, "{ctx} cancel: {}", cancelled.text);
            assert_eq!(cancelled.json()["status"], "cancelled");
            check_view(&cancelled.json());

            let openapi = Call::new("GET", &at("/openapi.json"), &guest)
                .unsigned()
                .send(&app)
                .await;
            assert_eq!(openapi.status, 200, "{ctx} openapi: {}", openapi.text);
        }
    }
}

// ---------------------------------------------------------------------------
// JSON shapes
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_event_view_is_camel_case_with_utc_datetimes_and_additive_fields() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;

    // camelCase input with an offset: the reply is UTC with `Z` (C2).
    let view = create(
        &app,
        &boss,
        json!({
            "scopeType": "TENANT", "scopeId": tenant.to_string(), "title": "Camel",
            "description": "", "startsAt": "2030-01-10T13:00:00+03:00",
            "endsAt": "2030-01-10T15:30:00.250+03:00", "locationText": null,
        }),
    )
    .await;
    check_view(&view);
    assert_eq!(view["startsAt"], "2030-01-10T10:00:00Z");
    assert_eq!(view["endsAt"], "2030-01-10T12:30:00.250Z");
    assert_eq!(view["description"], Value::Null, "\"\" reads as null");
    assert_eq!(view["locationText"], Value::Null);
    assert_eq!(view["locationUrl"], Value::Null);
    assert_eq!(view["gameId"], Value::Null);
    assert_eq!(view["visibility"], "public");
    assert_eq!(view["tenantId"], tenant.to_string());
    assert_eq!(view["createdBy"], boss.user_id.as_str());
    assert_eq!(view["status"], "scheduled");
    assert_eq!(view["capacity"], Value::Null);
    assert_eq!(view["version"], 1);
    assert_eq!(view["myRsvp"], Value::Null);
    assert_eq!(
        view["rsvpCounts"],
        json!({"interested": 0, "going": 0, "not_going": 0, "waitlisted": 0, "pending": 0, "declined": 0})
    );
    assert_eq!(view["updatedAt"], view["createdAt"]);
    let id = id_of(&view);

    // A later GET says exactly what create said.
    let got = app
        .bff("GET", &format!("/api/v1/events/{id}"), &boss, None)
        .await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.json(), view);
    assert!(
        header(&got, "content-type").is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        got.headers
    );

    // snake_case input is accepted too, with the optional fields set.
    let snake = create(
        &app,
        &boss,
        json!({
            "scope_type": "TENANT", "scope_id": tenant.to_string(), "title": "Snake",
            "description": "About", "starts_at": "2030-02-01T10:00:00Z",
            "ends_at": "2030-02-01T11:00:00Z", "location_text": "Hall",
            "location_url": "https://example.com/x", "game_id": "chess",
            "visibility": "private", "capacity": 5,
        }),
    )
    .await;
    check_view(&snake);
    assert_eq!(snake["scopeType"], "TENANT");
    assert_eq!(snake["description"], "About");
    assert_eq!(snake["locationText"], "Hall");
    assert_eq!(snake["locationUrl"], "https://example.com/x");
    assert_eq!(snake["gameId"], "chess");
    assert_eq!(snake["visibility"], "private");
    assert_eq!(snake["capacity"], 5);

    // PATCH (camel and snake keys; null clears optional fields) moves
    // updatedAt and version (C3).
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let patched = app
        .bff(
            "PATCH",
            &format!("/api/v1/{}", id_of(&snake)),
            &boss,
            Some(json!({"location_text": null, "locationUrl": null, "game_id": "",
                        "startsAt": "2030-02-01T12:00:00+02:00", "ends_at": "2030-02-01T12:00:00Z"})),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    let patched = patched.json();
    check_view(&patched);
    assert_eq!(patched["locationText"], Value::Null);
    assert_eq!(patched["locationUrl"], Value::Null);
    assert_eq!(patched["gameId"], Value::Null);
    assert_eq!(patched["startsAt"], "2030-02-01T10:00:00Z");
    assert_eq!(patched["endsAt"], "2030-02-01T12:00:00Z");
    assert_eq!(patched["version"], 2);
    assert_eq!(patched["createdAt"], snake["createdAt"]);
    assert_ne!(patched["updatedAt"], snake["updatedAt"]);

    // A patch that changes nothing leaves version and updatedAt alone.
    let same = app
        .bff(
            "PATCH",
            &format!("/api/v1/{}", id_of(&snake)),
            &boss,
            Some(json!({"title": "Snake"})),
        )
        .await;
    assert_eq!(same.status, 200, "{}", same.text);
    assert_eq!(same.json()["version"], 2);
    assert_eq!(same.json()["updatedAt"], patched["updatedAt"]);
}

#[tokio::test]
async fn list_meta_and_query_parameters_in_snake_and_camel_case() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let t = tenant.to_string();
    let mk = |title: &str, month: u32, extra: Value| {
        let mut body = json!({
            "scopeType": "TENANT", "scopeId": t, "title": title,
            "startsAt": format!("2030-{month:02}-10T10:00:00Z"),
            "endsAt": format!("2030-{month:02}-10T12:00:00Z"),
        });
        if let (Some(o), Value::Object(extra)) = (body.as_object_mut(), extra) {
            o.extend(extra);
        }
        body
    };
    let jan = id_of(
        &create(
            &app,
            &boss,
            mk("January Raid", 1, json!({"locationText": "Dungeon"})),
        )
        .await,
    );
    let feb = id_of(
        &create(
            &app,
            &boss,
            mk(
                "February chess",
                2,
                json!({"description": "a RAID of pawns"}),
            ),
        )
        .await,
    );
    let mar = id_of(
        &create(
            &app,
            &boss,
            mk("March quiz", 3, json!({"visibility": "private"})),
        )
        .await,
    );
    app.join(
        tenant,
        Uuid::parse_str(&boss.user_id).expect("uuid"),
        "COMMUNITY",
        "c1",
    )
    .await;
    let community = id_of(
        &create(
            &app,
            &boss,
            json!({"scopeType": "COMMUNITY", "scopeId": "c1", "title": "Club night",
                   "visibility": "community",
                   "startsAt": "2030-04-10T10:00:00Z", "endsAt": "2030-04-10T12:00:00Z"}),
        )
        .await,
    );
    let rsvp = app
        .bff(
            "POST",
            &format!("/api/v1/{feb}/rsvp"),
            &boss,
            Some(json!({"status": "going"})),
        )
        .await;
    assert_eq!(rsvp.status, 204, "{}", rsvp.text);

    let list = |query: String| {
        let app = &app;
        let boss = &boss;
        async move {
            let reply = app
                .bff("GET", &format!("/api/v1/?{query}"), boss, None)
                .await;
            assert_eq!(reply.status, 200, "{query}: {}", reply.text);
            let page = reply.json();
            assert_eq!(keys(&page), set(&["items", "meta"]), "{query}: {page}");
            for item in page["items"].as_array().expect("items") {
                check_view(item);
            }
            page
        }
    };

    let all = list(String::new()).await;
    assert_eq!(all["meta"], json!({"total": 4, "limit": 100, "offset": 0}));
    assert_eq!(
        ids(&all),
        [jan.clone(), feb.clone(), mar.clone(), community.clone()]
    );
    assert_eq!(all["items"][1]["myRsvp"], "going");
    assert_eq!(all["items"][0]["myRsvp"], Value::Null);

    // Scope filter, snake_case and camelCase (the original ignored camelCase).
    for q in [
        "scope_type=COMMUNITY&scope_id=c1".to_string(),
        "scopeType=COMMUNITY&scopeId=c1".to_string(),
    ] {
        let page = list(q.clone()).await;
        assert_eq!(ids(&page), [community.as_str()], "{q}");
        assert_eq!(page["meta"]["total"], 1, "{q}");
    }
    let page = list(format!("scope_type=TENANT&scope_id={t}")).await;
    assert_eq!(ids(&page), [jan.clone(), feb.clone(), mar.clone()]);

    // from/to overlap, with the offset's `+` encoded or not.
    let page = list("from=2030-02-10T11:00:00Z".into()).await;
    assert_eq!(ids(&page), [feb.clone(), mar.clone(), community.clone()]);
    let page = list("to=2030-02-10T11:00:00%2B01:00".into()).await;
    assert_eq!(ids(&page), [jan.clone(), feb.clone()]);
    let page = list("from=2030-02-10T13:00:00+02:00&to=2030-03-10T10:00:00Z".into()).await;
    assert_eq!(ids(&page), [feb.clone(), mar.clone()]);

    // Pagination: meta echoes limit and offset; total counts the whole match.
    let page = list("limit=1&offset=1".into()).await;
    assert_eq!(page["meta"], json!({"total": 4, "limit": 1, "offset": 1}));
    assert_eq!(ids(&page), [feb.as_str()]);
    // Past the end: no items, and the total still counts the whole match.
    let page = list("limit=2&offset=10".into()).await;
    assert_eq!(page["meta"], json!({"total": 4, "limit": 2, "offset": 10}));
    assert!(ids(&page).is_empty());

    // New filters, snake and camel.
    let page = list("q=raid".into()).await;
    assert_eq!(ids(&page), [jan.clone(), feb.clone()]);
    let page = list("q=dungeon".into()).await;
    assert_eq!(ids(&page), [jan.as_str()]);
    let page = list("visibility=private".into()).await;
    assert_eq!(ids(&page), [mar.as_str()]);
    for q in ["my_rsvp=going", "myRsvp=going"] {
        assert_eq!(ids(&list(q.into()).await), [feb.as_str()], "{q}");
    }
    for q in [
        format!("created_by={}", boss.user_id),
        format!("createdBy={}", boss.user_id.to_uppercase()),
    ] {
        assert_eq!(list(q.clone()).await["meta"]["total"], 4, "{q}");
    }
    let page = list(format!("created_by={}", Uuid::new_v4())).await;
    assert_eq!(page["meta"]["total"], 0);
    assert_eq!(page["items"], json!([]));

    // meta.total counts only what the caller sees: a plain member sees
    // neither the private event nor the community one.
    let member = identity(tenant, Uuid::new_v4());
    let reply = app
        .bff("GET", "/api/v1/events?limit=2", &member, None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json()["meta"],
        json!({"total": 2, "limit": 2, "offset": 0})
    );
    assert_eq!(ids(&reply.json()), [jan, feb]);
}

#[tokio::test]
async fn rsvp_waitlist_and_attendance_listings_have_the_documented_shapes() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let mut body = event_body(tenant, "Two seats");
    body["capacity"] = json!(1);
    let id = id_of(&create(&app, &boss, body).await);
    let first = identity(tenant, Uuid::new_v4());
    let second = identity(tenant, Uuid::new_v4());
    for who in [&first, &second] {
        let reply = app
            .bff(
                "POST",
                &format!("/api/v1/{id}/rsvp"),
                who,
                Some(json!({"status": "going"})),
            )
            .await;
        assert_eq!(reply.status, 204, "{}", reply.text);
        assert!(reply.text.is_empty());
    }
    let view = app
        .bff("GET", &format!("/api/v1/{id}"), &second, None)
        .await
        .json();
    assert_eq!(view["myRsvp"], "waitlisted");
    assert_eq!(
        view["rsvpCounts"],
        json!({"interested": 0, "going": 1, "not_going": 0, "waitlisted": 1, "pending": 0, "declined": 0})
    );

    let rsvps = app
        .bff("GET", &format!("/api/v1/events/{id}/rsvps"), &boss, None)
        .await;
    assert_eq!(rsvps.status, 200, "{}", rsvps.text);
    let page = rsvps.json();
    assert_eq!(page["meta"], json!({"total": 2, "limit": 100, "offset": 0}));
    let items = page["items"].as_array().expect("items");
    for item in items {
        assert_eq!(
            keys(item),
            set(&[
                "userId",
                "status",
                "guests",
                "updatedAt",
                "waitlistPosition"
            ]),
            "{item}"
        );
        assert!(is_utc_z(item["updatedAt"].as_str().unwrap_or("")), "{item}");
    }
    let by_user = |u: &Identity| {
        items
            .iter()
            .find(|i| i["userId"] == u.user_id.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{} not listed: {page}", u.user_id))
    };
    assert_eq!(by_user(&first)["status"], "going");
    assert_eq!(by_user(&first)["waitlistPosition"], Value::Null);
    assert_eq!(by_user(&second)["status"], "waitlisted");
    assert_eq!(by_user(&second)["waitlistPosition"], 1);

    // The query string pages and filters the HTTP listings, as the NATS
    // body fields do.
    let paged = app
        .bff(
            "GET",
            &format!("/api/v1/{id}/rsvps?limit=1&offset=1"),
            &boss,
            None,
        )
        .await;
    assert_eq!(paged.status, 200, "{}", paged.text);
    assert_eq!(
        paged.json()["meta"],
        json!({"total": 2, "limit": 1, "offset": 1})
    );
    assert_eq!(paged.json()["items"].as_array().map(Vec::len), Some(1));
    let waiting = app
        .bff(
            "GET",
            &format!("/api/v1/{id}/rsvps?status=waitlisted"),
            &boss,
            None,
        )
        .await;
    assert_eq!(waiting.status, 200, "{}", waiting.text);
    assert_eq!(waiting.json()["meta"]["total"], 1);
    assert_eq!(
        waiting.json()["items"][0]["userId"],
        second.user_id.as_str()
    );

    // Clearing the seat promotes the waitlisted user.
    let cleared = app
        .bff("DELETE", &format!("/api/v1/{id}/rsvp"), &first, None)
        .await;
    assert_eq!(cleared.status, 204, "{}", cleared.text);
    assert!(cleared.text.is_empty());
    // Removing an RSVP that is not there is a no-op, also 204.
    let again = app
        .bff("DELETE", &format!("/api/v1/{id}/rsvp/"), &first, None)
        .await;
    assert_eq!(again.status, 204, "{}", again.text);
    assert!(again.text.is_empty());
    let view = app
        .bff("GET", &format!("/api/v1/{id}"), &second, None)
        .await
        .json();
    assert_eq!(view["myRsvp"], "going");
    let view = app
        .bff("GET", &format!("/api/v1/{id}"), &first, None)
        .await
        .json();
    assert_eq!(view["myRsvp"], Value::Null);

    for who in [&first, &second] {
        let reply = app
            .bff(
                "POST",
                &format!("/api/v1/{id}/attendance"),
                &boss,
                Some(json!({"user_id": who.user_id})),
            )
            .await;
        assert_eq!(reply.status, 204, "{}", reply.text);
        assert!(reply.text.is_empty());
    }
    let attendance = app
        .bff(
            "GET",
            &format!("/api/v1/{id}/attendance?limit=1"),
            &boss,
            None,
        )
        .await;
    assert_eq!(attendance.status, 200, "{}", attendance.text);
    let page = attendance.json();
    assert_eq!(page["meta"], json!({"total": 2, "limit": 1, "offset": 0}));
    let item = &page["items"][0];
    assert_eq!(
        keys(item),
        set(&["userId", "markedBy", "markedAt"]),
        "{item}"
    );
    assert_eq!(item["markedBy"], boss.user_id.as_str());
    assert!(is_utc_z(item["markedAt"].as_str().unwrap_or("")), "{item}");
}

// ---------------------------------------------------------------------------
// ICS
// ---------------------------------------------------------------------------

/// RFC 5545 TEXT escaping as the previous service did it.
fn ics_escape(s: &str) -> String {
    s.replace("\r\n", "\n")
        .replace('\r', "\n")
        .replace('\\', "\\\\")
        .replace(';', "\\;")
        .replace(',', "\\,")
        .replace('\n', "\\n")
}

/// Folds one content line into physical lines of at most 75 octets, the
/// continuation's leading space included, never inside a character.
fn ics_fold(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    for c in line.chars() {
        let current = out.last_mut().expect("a line");
        if !current.is_empty() && current.len() + c.len_utf8() > 75 {
            out.push(format!(" {c}"));
        } else {
            current.push(c);
        }
    }
    out
}

/// `2030-01-10T07:00:00.250Z` → `20300110T070000Z`.
fn ics_time(json_time: &str) -> String {
    let base = json_time.trim_end_matches('Z');
    let base = base.split('.').next().unwrap_or(base);
    format!("{}Z", base.replace(['-', ':'], ""))
}

#[tokio::test]
async fn ics_is_byte_exact_for_a_folded_multibyte_title() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let title = "Большой открытый турнир по настольным играм, шахматам; и «Го» 🎲 — \
                 финал осеннего сезона 2030 \\ тур №1, приходите все";
    let description = "Первая строка\r\nSecond line, with a comma; and a semicolon\nend";
    let location = "Москва, ул. Тверская, д. 1";
    let url = "https://example.com/e?a=1,2;b";
    let view = create(
        &app,
        &boss,
        json!({"scopeType": "TENANT", "scopeId": tenant.to_string(), "title": title,
               "description": description, "locationText": location, "locationUrl": url,
               "startsAt": "2030-01-10T13:00:00+03:00", "endsAt": "2030-01-10T15:30:45.999Z"}),
    )
    .await;
    let id = id_of(&view);
    let summary = format!("SUMMARY:{}", ics_escape(title));
    assert!(summary.len() > 150, "the title must need folding twice");
    let mut expected: Vec<String> = [
        "BEGIN:VCALENDAR".to_string(),
        "VERSION:2.0".into(),
        "PRODID:-//UpdSpace//Events//EN".into(),
        "CALSCALE:GREGORIAN".into(),
        "BEGIN:VEVENT".into(),
        format!("UID:{id}@acme.updspace"),
        "DTSTAMP:<varies>".into(),
        "DTSTART:20300110T100000Z".into(),
        "DTEND:20300110T153045Z".into(),
        "SEQUENCE:0".into(),
        format!(
            "LAST-MODIFIED:{}",
            ics_time(view["updatedAt"].as_str().expect("updatedAt"))
        ),
        format!(
            "CREATED:{}",
            ics_time(view["createdAt"].as_str().expect("createdAt"))
        ),
        "STATUS:CONFIRMED".into(),
    ]
    .into_iter()
    .collect();
    expected.extend(ics_fold(&summary));
    expected.extend(ics_fold(&format!(
        "DESCRIPTION:{}",
        ics_escape(description)
    )));
    expected.extend(ics_fold(&format!("LOCATION:{}", ics_escape(location))));
    expected.extend(ics_fold(&format!("URL:{url}")));
    expected.push("END:VEVENT".into());
    expected.push("END:VCALENDAR".into());
    assert!(ics_fold(&summary).len() >= 3, "{:?}", ics_fold(&summary));

    for prefix in PREFIXES {
        let reply = app
            .bff("GET", &format!("{prefix}/{id}/ics"), &boss, None)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(
            header(&reply, "content-type"),
            Some("text/calendar; charset=utf-8")
        );
        assert_eq!(
            header(&reply, "content-disposition"),
            Some(format!("attachment; filename=\"event-{id}.ics\"").as_str())
        );
        let body = &reply.text;
        let trimmed = body
            .strip_suffix("\r\n")
            .unwrap_or_else(|| panic!("no trailing CRLF: {body:?}"));
        assert!(!trimmed.contains('\n') || trimmed.split("\r\n").all(|l| !l.contains('\n')));
        let lines: Vec<&str> = trimmed.split("\r\n").collect();
        assert_eq!(lines.len(), expected.len(), "{body}");
        for (n, (got, want)) in lines.iter().zip(&expected).enumerate() {
            if want == "DTSTAMP:<varies>" {
                let stamp = got
                    .strip_prefix("DTSTAMP:")
                    .unwrap_or_else(|| panic!("line {n}: {got}"));
                assert_eq!(stamp.len(), 16, "{got}");
                assert!(stamp.ends_with('Z') && stamp.as_bytes()[8] == b'T', "{got}");
                let at = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
                    .unwrap_or_else(|e| panic!("{got}: {e}"))
                    .and_utc();
                let off = (chrono::Utc::now() - at).num_seconds().abs();
                assert!(off < 120, "DTSTAMP {got} is the time of the request (UTC)");
                continue;
            }
            assert_eq!(got, want, "line {n}");
            assert!(got.len() <= 75, "line {n} is {} octets", got.len());
        }
    }

    // The tenant slug is reduced to [a-z0-9-] in the UID.
    let mut odd = boss.clone();
    odd.tenant_slug = "Acme_Corp 2".into();
    let reply = app
        .bff("GET", &format!("/api/v1/{id}/ics"), &odd, None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        reply
            .text
            .contains(&format!("\r\nUID:{id}@acmecorp2.updspace\r\n")),
        "{}",
        reply.text
    );
}

// ---------------------------------------------------------------------------
// Identity headers, idempotency, tolerated headers
// ---------------------------------------------------------------------------

#[tokio::test]
async fn upper_case_and_braced_uuids_in_identity_headers_are_canonicalised() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let mut body = event_body(tenant, "Mine only");
    body["visibility"] = json!("private");
    let id = id_of(&create(&app, &boss, body).await);
    let user = Uuid::parse_str(&boss.user_id).expect("uuid");
    let spellings = [
        user.to_string().to_uppercase(),
        format!("{{{user}}}"),
        format!("{{{}}}", user.to_string().to_uppercase()),
        user.simple().to_string(),
        format!("urn:uuid:{user}"),
    ];
    for spelling in &spellings {
        let mut who = boss.clone();
        who.user_id = spelling.clone();
        let got = app.bff("GET", &format!("/api/v1/{id}"), &who, None).await;
        assert_eq!(got.status, 200, "X-User-Id {spelling}: {}", got.text);
        let list = app.bff("GET", "/api/v1/events/", &who, None).await;
        assert_eq!(list.json()["meta"]["total"], 1, "{spelling}: {}", list.text);
        let export = app
            .bff(
                "GET",
                &format!("/api/v1/internal/dsar/users/{user}/export"),
                &who,
                None,
            )
            .await;
        assert_eq!(export.status, 200, "DSAR as {spelling}: {}", export.text);
        assert_eq!(export.json()["user_id"], user.to_string());
    }
    for spelling in [
        tenant.to_string().to_uppercase(),
        format!("{{{tenant}}}"),
        tenant.simple().to_string(),
    ] {
        let mut who = boss.clone();
        who.tenant_id = spelling.clone();
        let got = app.bff("GET", &format!("/api/v1/{id}"), &who, None).await;
        assert_eq!(got.status, 200, "X-Tenant-Id {spelling}: {}", got.text);
        assert_eq!(got.json()["tenantId"], tenant.to_string());
    }
    // Created under a non-canonical spelling, stored canonically.
    let mut shouty = boss.clone();
    shouty.user_id = boss.user_id.to_uppercase();
    shouty.tenant_id = tenant.to_string().to_uppercase();
    let view = create(&app, &shouty, event_body(tenant, "Shouty")).await;
    assert_eq!(view["createdBy"], boss.user_id.as_str());
    assert_eq!(view["tenantId"], tenant.to_string());
    // The DSAR path id is canonicalised too.
    let export = app
        .bff(
            "GET",
            &format!(
                "/api/v1/events/internal/dsar/users/{}/export",
                user.to_string().to_uppercase()
            ),
            &boss,
            None,
        )
        .await;
    assert_eq!(export.status, 200, "{}", export.text);
}

#[tokio::test]
async fn a_retried_create_with_the_same_request_id_returns_the_first_event() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let rid = Uuid::new_v4().to_string();
    let body = event_body(tenant, "Once");
    let now = chrono::Utc::now().timestamp();
    let first = Call::new("POST", "/api/v1/events/", &boss)
        .request_id(&rid)
        .ts(now)
        .json(body.clone())
        .send(&app)
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    // Fresh timestamps and signatures, as a retrying BFF sends; also on the
    // other prefix, with and without the slash, and as v2.
    let retries = [
        Call::new("POST", "/api/v1/events/", &boss).ts(now - 1),
        Call::new("POST", "/api/v1/", &boss).ts(now - 2),
        Call::new("POST", "/api/v1", &boss).ts(now + 1),
        Call::new("POST", "/api/v1/events", &boss).ts(now - 3).v2(),
    ];
    for retry in retries {
        let again = retry.request_id(&rid).json(body.clone()).send(&app).await;
        assert_eq!(again.status, 200, "{}", again.text);
        assert_eq!(again.json()["id"], first.json()["id"], "{}", again.text);
        assert_eq!(again.json()["title"], "Once");
    }
    // The same content with its keys in another order is the same request.
    let reordered = format!(
        r#"{{"endsAt":"2030-01-10T12:00:00Z","title":"Once","startsAt":"2030-01-10T10:00:00Z","scopeId":"{tenant}","scopeType":"TENANT"}}"#
    );
    let again = Call::new("POST", "/api/v1/events/", &boss)
        .request_id(&rid)
        .ts(now - 4)
        .raw(reordered)
        .send(&app)
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json()["id"], first.json()["id"]);
    let list = app.bff("GET", "/api/v1/events/", &boss, None).await;
    assert_eq!(list.json()["meta"]["total"], 1, "{}", list.text);

    // The key is (tenant, user, request id): another user's create with the
    // same request id is a new event. (Its timestamp differs: v1 does not
    // sign the user, so the same timestamp would be the same signed request,
    // which the replay guard refuses.)
    let other = organizer(&app, tenant).await;
    let theirs = Call::new("POST", "/api/v1/events/", &other)
        .request_id(&rid)
        .ts(now - 5)
        .json(body.clone())
        .send(&app)
        .await;
    assert_eq!(theirs.status, 200, "{}", theirs.text);
    assert_ne!(theirs.json()["id"], first.json()["id"]);
}

#[tokio::test]
async fn bff_headers_are_tolerated_and_every_response_carries_the_standard_headers() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let id = id_of(&create(&app, &boss, event_body(tenant, "Headers")).await);
    // The BFF's extra headers change nothing, and plain HTTP is no redirect.
    for proto in ["https", "http"] {
        let reply = Call::new("GET", &format!("/api/v1/{id}"), &boss)
            .header("authorization", "Bearer some-iam-token")
            .header("x-forwarded-proto", proto)
            .header("user-agent", "python-httpx/0.28.1")
            .header("accept", "application/json")
            .header("accept-language", "ru-RU")
            .send(&app)
            .await;
        assert_eq!(reply.status, 200, "{proto}: {}", reply.text);
    }
    // A content type that is not JSON does not matter (the body is JSON).
    let reply = Call::new("POST", "/api/v1/events/", &boss)
        .header("content-type", "text/plain")
        .json(event_body(tenant, "Plain"))
        .send(&app)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    // Each of these checks the echoed request id and security headers
    // inside `send`, whatever the outcome.
    let member = identity(tenant, Uuid::new_v4());
    let cases = [
        Call::new("GET", "/health", &member).unsigned(),
        Call::new("GET", "/health", &member).no_request_id(),
        Call::new("GET", "/api/v1/events/openapi.json", &member).unsigned(),
        Call::new("GET", "/api/v1/events/", &member),
        Call::new("GET", &format!("/api/v1/{id}/ics"), &member),
        Call::new("POST", &format!("/api/v1/{id}/rsvp"), &member).json(json!({"status": "going"})),
        Call::new("GET", "/api/v1/events/", &member).unsigned(),
        Call::new("GET", "/api/v1/events/", &member).no_request_id(),
        Call::new("GET", "/api/v1/not-a-uuid", &member),
        Call::new("GET", "/no/such/route", &member).unsigned(),
        Call::new("PUT", &format!("/api/v1/{id}"), &member),
        Call::new("PATCH", &format!("/api/v1/{id}"), &member).json(json!({"title": "x"})),
        Call::new("GET", &format!("/api/v1/{}", Uuid::new_v4()), &member),
    ];
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for case in &cases {
            out.push(case.send(&app).await.status);
        }
        out
    };
    assert_eq!(
        statuses,
        [
            200, 200, 200, 200, 200, 204, 401, 400, 400, 404, 405, 403, 404
        ]
    );
}

// ---------------------------------------------------------------------------
// The previous service's test suite, at the HTTP level
// ---------------------------------------------------------------------------

#[tokio::test]
async fn original_01_tenant_isolation_in_list() {
    let app = TestApp::spawn().await;
    let (t1, t2) = (Uuid::new_v4(), Uuid::new_v4());
    let b1 = organizer(&app, t1).await;
    let b2 = organizer(&app, t2).await;
    let e1 = create(&app, &b1, event_body(t1, "E1")).await;
    let e2 = create(&app, &b2, event_body(t2, "E2")).await;
    let reply = app.bff("GET", "/api/v1/events/", &b1, None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let page = reply.json();
    assert_eq!(page["meta"]["total"], 1);
    assert_eq!(page["items"][0]["title"], "E1");
    // The other tenant's event is 404 by id, even for an admin of this one.
    for who in [&b1, &admin(t1)] {
        let reply = app
            .bff("GET", &format!("/api/v1/events/{}", id_of(&e2)), who, None)
            .await;
        assert_error(&reply, 404, "NOT_FOUND", header(&reply, "x-request-id"));
    }
    let reply = app
        .bff("GET", &format!("/api/v1/events/{}", id_of(&e1)), &b2, None)
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text);
}

#[tokio::test]
async fn original_02_attendance_requires_permission() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let id = id_of(&create(&app, &boss, event_body(tenant, "Roll call")).await);
    let reader = identity(tenant, Uuid::new_v4());
    let reply = app
        .bff(
            "POST",
            &format!("/api/v1/events/{id}/attendance"),
            &reader,
            Some(json!({"userId": Uuid::new_v4().to_string()})),
        )
        .await;
    let error = assert_error(&reply, 403, "FORBIDDEN", header(&reply, "x-request-id"));
    assert_eq!(error["message"], "Permission denied");
}

#[tokio::test]
async fn original_03_system_admin_can_create() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    let reply = app
        .bff(
            "POST",
            "/api/v1/events/",
            &boss,
            Some(
                json!({"scopeType": "TENANT", "scopeId": tenant.to_string(), "title": "Party",
                        "description": "Fun", "startsAt": "2030-01-10T10:00:00Z",
                        "endsAt": "2030-01-10T12:00:00Z", "visibility": "public"}),
            ),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["title"], "Party");
    // Without the flag and without a role, the same request is 403.
    let plain = identity(tenant, Uuid::new_v4());
    let reply = app
        .bff(
            "POST",
            "/api/v1/events/",
            &plain,
            Some(event_body(tenant, "Party")),
        )
        .await;
    assert_eq!(reply.status, 403, "{}", reply.text);
}

#[tokio::test]
async fn original_04_list_includes_meta_and_rsvp_counts() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let id = id_of(&create(&app, &boss, event_body(tenant, "Counted")).await);
    let other = identity(tenant, Uuid::new_v4());
    for (who, status) in [(&boss, "going"), (&other, "interested")] {
        let reply = app
            .bff(
                "POST",
                &format!("/api/v1/events/{id}/rsvp"),
                who,
                Some(json!({ "status": status })),
            )
            .await;
        assert_eq!(reply.status, 204, "{}", reply.text);
    }
    let page = app.bff("GET", "/api/v1/events/", &boss, None).await.json();
    assert_eq!(page["meta"]["total"], 1);
    assert_eq!(page["items"][0]["rsvpCounts"]["going"], 1);
    assert_eq!(page["items"][0]["rsvpCounts"]["interested"], 1);
    assert_eq!(page["items"][0]["rsvpCounts"]["not_going"], 0);
    assert_eq!(page["items"][0]["myRsvp"], "going");
}

/// Tests 5–8: a COMMUNITY (TEAM) event with community (team) visibility is
/// listed only for members of the scope.
async fn membership_gates_the_list(scope_type: &str, visibility: &str) {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    app.grant(
        tenant,
        Uuid::parse_str(&boss.user_id).expect("uuid"),
        ORGANIZER,
        scope_type,
        "s1",
    )
    .await;
    let id = id_of(
        &create(
            &app,
            &boss,
            json!({"scopeType": scope_type, "scopeId": "s1", "title": "Members only",
                   "visibility": visibility,
                   "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z"}),
        )
        .await,
    );
    let outsider = identity(tenant, Uuid::new_v4());
    let member_id = Uuid::new_v4();
    app.join(tenant, member_id, scope_type, "s1").await;
    let member = identity(tenant, member_id);
    for query in [
        format!("scopeType={scope_type}&scopeId=s1"),
        format!("scope_type={scope_type}&scope_id=s1"),
        String::new(),
    ] {
        let reply = app
            .bff("GET", &format!("/api/v1/events/?{query}"), &outsider, None)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json()["items"], json!([]), "outsider, {query}");
        assert_eq!(reply.json()["meta"]["total"], 0, "outsider, {query}");
        let reply = app
            .bff("GET", &format!("/api/v1/events/?{query}"), &member, None)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(ids(&reply.json()), [id.as_str()], "member, {query}");
    }
    let reply = app
        .bff("GET", &format!("/api/v1/{id}"), &outsider, None)
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    let reply = app
        .bff("GET", &format!("/api/v1/{id}"), &member, None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test]
async fn original_05_06_community_event_requires_membership() {
    membership_gates_the_list("COMMUNITY", "community").await;
}

#[tokio::test]
async fn original_07_08_team_event_requires_membership() {
    membership_gates_the_list("TEAM", "team").await;
}

#[tokio::test]
async fn original_09_10_update_requires_manage_and_admins_may_update() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let id = id_of(&create(&app, &boss, event_body(tenant, "Original")).await);
    let reader = identity(tenant, Uuid::new_v4());
    let reply = app
        .bff(
            "PATCH",
            &format!("/api/v1/events/{id}"),
            &reader,
            Some(json!({"title": "Updated Title"})),
        )
        .await;
    assert_error(&reply, 403, "FORBIDDEN", header(&reply, "x-request-id"));
    let reply = app
        .bff(
            "PATCH",
            &format!("/api/v1/events/{id}"),
            &admin(tenant),
            Some(json!({"title": "Updated Title"})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["title"], "Updated Title");
}

#[tokio::test]
async fn original_11_rsvp_flow() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let id = id_of(&create(&app, &boss, event_body(tenant, "Flow")).await);
    let guest = identity(tenant, Uuid::new_v4());
    for status in ["interested", "not_going", "going", "going"] {
        let reply = app
            .bff(
                "POST",
                &format!("/api/v1/events/{id}/rsvp"),
                &guest,
                Some(json!({ "status": status })),
            )
            .await;
        assert_eq!(reply.status, 204, "{status}: {}", reply.text);
        assert!(reply.text.is_empty());
    }
    let page = app.bff("GET", "/api/v1/events/", &guest, None).await.json();
    assert_eq!(page["items"][0]["myRsvp"], "going");
    assert_eq!(
        page["items"][0]["rsvpCounts"],
        json!({"interested": 0, "going": 1, "not_going": 0, "waitlisted": 0, "pending": 0, "declined": 0})
    );
}

#[tokio::test]
async fn original_12_and_21_the_service_refuses_to_start_without_an_hmac_secret() {
    for secret in [None, Some(String::new()), Some("   ".to_string())] {
        let mut settings = crate::helpers::Isolation::new().settings();
        settings.hmac_secret = secret.clone();
        settings.dev = None;
        match updspace_events::config::Config::load(&settings) {
            Ok(_) => panic!("{secret:?}: the service must not start without a secret"),
            Err(e) => assert!(
                e.to_string().contains("BFF_INTERNAL_HMAC_SECRET"),
                "{secret:?}: {e}"
            ),
        }
    }
}

#[tokio::test]
async fn original_13_created_events_get_an_id_and_keep_their_visibility() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let mut body = event_body(tenant, "Stored");
    body["visibility"] = json!("private");
    let view = create(&app, &boss, body.clone()).await;
    assert!(Uuid::parse_str(view["id"].as_str().unwrap_or("")).is_ok());
    assert_eq!(view["visibility"], "private");
    // The API refuses start == end (the model allowed it).
    body["endsAt"] = body["startsAt"].clone();
    let reply = app.bff("POST", "/api/v1/events/", &boss, Some(body)).await;
    assert_error(
        &reply,
        400,
        "INVALID_TIME_RANGE",
        header(&reply, "x-request-id"),
    );
}

/// The fixture of the previous service's DSAR tests: U created A, O
/// created B, U is going to B, O marked U on B and U marked O on B.
struct DsarFixture {
    app: TestApp,
    tenant: Uuid,
    u: Identity,
    o: Identity,
    a: String,
    b: String,
}

async fn dsar_fixture() -> DsarFixture {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let u = organizer(&app, tenant).await;
    let o = organizer(&app, tenant).await;
    let a = id_of(&create(&app, &u, event_body(tenant, "A")).await);
    let b = id_of(&create(&app, &o, event_body(tenant, "B")).await);
    let steps = [
        (&u, format!("/api/v1/{b}/rsvp"), json!({"status": "going"})),
        (
            &o,
            format!("/api/v1/{b}/attendance"),
            json!({"userId": u.user_id}),
        ),
        (
            &u,
            format!("/api/v1/{b}/attendance"),
            json!({"userId": o.user_id}),
        ),
    ];
    for (who, path, body) in steps {
        let reply = app.bff("POST", &path, who, Some(body)).await;
        assert_eq!(reply.status, 204, "{path}: {}", reply.text);
    }
    DsarFixture {
        app,
        tenant,
        u,
        o,
        a,
        b,
    }
}

fn outbox_of<'a>(bundle: &'a Value, event_type: &str) -> Vec<&'a Value> {
    bundle["outbox"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|r| r["event_type"] == event_type)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn original_18_dsar_export_returns_the_events_bundle() {
    let DsarFixture {
        app,
        tenant,
        u,
        o,
        a,
        b,
    } = dsar_fixture().await;
    let path = format!("/api/v1/events/internal/dsar/users/{}/export", u.user_id);
    let reply = app.bff("GET", &path, &u, None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let bundle = reply.json();
    assert_eq!(
        keys(&bundle),
        set(&[
            "service",
            "tenant_id",
            "user_id",
            "exported_at",
            "events_created",
            "rsvps",
            "attendance",
            "outbox",
            // Ours, besides the original's.
            "role_bindings",
            "memberships",
            "series_created",
            "feed_tokens",
            "reminders"
        ])
    );
    assert_eq!(bundle["service"], "events");
    assert_eq!(bundle["tenant_id"], tenant.to_string());
    assert_eq!(bundle["user_id"], u.user_id.as_str());
    assert_eq!(bundle["events_created"].as_array().map(Vec::len), Some(1));
    assert_eq!(bundle["events_created"][0]["id"], a.as_str());
    assert_eq!(bundle["rsvps"].as_array().map(Vec::len), Some(1));
    assert_eq!(bundle["rsvps"][0]["event_id"], b.as_str());
    assert_eq!(bundle["rsvps"][0]["status"], "going");
    assert_eq!(bundle["attendance"].as_array().map(Vec::len), Some(2));
    let created = outbox_of(&bundle, "event.created");
    assert_eq!(created.len(), 1, "{bundle}");
    assert_eq!(created[0]["payload"]["event_id"], a.as_str());
    assert_eq!(created[0]["payload"]["created_by"], u.user_id.as_str());
    let rsvp = outbox_of(&bundle, "event.rsvp.changed");
    assert_eq!(rsvp.len(), 1, "{bundle}");
    assert_eq!(rsvp[0]["payload"]["event_id"], b.as_str());
    assert_eq!(rsvp[0]["payload"]["user_id"], u.user_id.as_str());
    // Another user's id never leaks through the export (S5).
    assert!(!bundle.to_string().contains(&o.user_id), "{bundle}");

    // Only the subject or a system admin (literal `true`).
    let reply = app.bff("GET", &path, &o, None).await;
    let error = assert_error(&reply, 403, "FORBIDDEN", header(&reply, "x-request-id"));
    assert_eq!(error["message"], "DSAR access denied");
    for flags in [
        r#"{"system_admin":"no"}"#,
        r#"{"system_admin":"true"}"#,
        r#"{"system_admin":1}"#,
    ] {
        let mut who = o.clone();
        who.master_flags = Some(flags.into());
        let reply = app.bff("GET", &path, &who, None).await;
        assert_error(&reply, 403, "FORBIDDEN", header(&reply, "x-request-id"));
    }
    let reply = app.bff("GET", &path, &admin(tenant), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // A suspended user may still export themselves.
    let mut suspended = u.clone();
    suspended.master_flags = Some(r#"{"suspended":true}"#.into());
    let reply = app.bff("GET", &path, &suspended, None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test]
async fn original_19_dsar_erase_anonymises_the_creator_and_deletes_user_rows() {
    let DsarFixture {
        app,
        tenant,
        u,
        o,
        a,
        b,
    } = dsar_fixture().await;
    let path = format!("/api/v1/internal/dsar/users/{}/erase", u.user_id);
    // Neither another user nor a truthy-but-not-true admin flag may erase.
    let mut fake = o.clone();
    fake.master_flags = Some(r#"{"system_admin":"no"}"#.into());
    for who in [&o, &fake] {
        let reply = app.bff("POST", &path, who, None).await;
        assert_error(&reply, 403, "FORBIDDEN", header(&reply, "x-request-id"));
    }
    let reply = app.bff("POST", &path, &u, None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let summary = reply.json();
    assert_eq!(summary["service"], "events");
    assert_eq!(summary["mode"], "hybrid");
    assert_eq!(summary["tenant_id"], tenant.to_string());
    assert_eq!(summary["user_id"], u.user_id.as_str());
    assert!(
        is_utc_z(summary["erased_at"].as_str().unwrap_or("")),
        "{summary}"
    );
    let counts = &summary["counts"];
    assert_eq!(counts["events_anonymized"], 1, "{summary}");
    assert_eq!(counts["rsvps_deleted"], 1, "{summary}");
    assert_eq!(counts["attendance_deleted"], 1, "{summary}");
    assert_eq!(counts["attendance_marked_by_redacted"], 1, "{summary}");
    assert!(
        counts["outbox_scrubbed"].as_u64().unwrap_or(0) >= 2,
        "{summary}"
    );

    let boss = admin(tenant);
    let a_view = app
        .bff("GET", &format!("/api/v1/{a}"), &boss, None)
        .await
        .json();
    assert_eq!(a_view["createdBy"], NIL);
    let b_view = app
        .bff("GET", &format!("/api/v1/{b}"), &boss, None)
        .await
        .json();
    assert_eq!(b_view["rsvpCounts"]["going"], 0, "{b_view}");
    let attendance = app
        .bff("GET", &format!("/api/v1/{b}/attendance"), &o, None)
        .await
        .json();
    assert_eq!(attendance["meta"]["total"], 1, "{attendance}");
    assert_eq!(attendance["items"][0]["userId"], o.user_id.as_str());
    assert_eq!(attendance["items"][0]["markedBy"], NIL);

    let payloads: Vec<(String, Value)> =
        sqlx::query_as("SELECT event_type, payload FROM outbox WHERE tenant_id = $1 ORDER BY seq")
            .bind(tenant)
            .fetch_all(&app.db)
            .await
            .expect("outbox rows");
    let created = payloads
        .iter()
        .find(|(t, p)| t == "event.created" && p["event_id"] == a.as_str())
        .expect("A's event.created");
    assert_eq!(created.1["created_by"], "[redacted]");
    let rsvp = payloads
        .iter()
        .find(|(t, p)| t == "event.rsvp.changed" && p["event_id"] == b.as_str())
        .expect("U's event.rsvp.changed");
    assert_eq!(rsvp.1["user_id"], "[redacted]");
    for (_, payload) in &payloads {
        assert!(!payload.to_string().contains(&u.user_id), "{payload}");
    }
    // The export now finds nothing of U.
    let export = app
        .bff(
            "GET",
            &format!("/api/v1/internal/dsar/users/{}/export", u.user_id),
            &u,
            None,
        )
        .await
        .json();
    assert_eq!(export["events_created"], json!([]));
    assert_eq!(export["rsvps"], json!([]));
    assert_eq!(export["attendance"], json!([]));
}
