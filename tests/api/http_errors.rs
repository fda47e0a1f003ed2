//! Every error the HTTP gateway answers (the previous service's codes plus
//! ours, `docs/http-api.md` "Errors"): always the envelope `{"error":{"code","message","details",
//! "request_id"}}` with JSON content type and the caller's request id,
//! authentication before any look at the body, signatures over the path
//! actually received, v2 binding the query and identity, and never a 500
//! (nor an HTML page) for bad input.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{HttpReply, TestApp, admin, identity};
use crate::http_contract::{Call, PREFIXES, assert_error, create, event_body, id_of, organizer};

/// Sends `call` and asserts the error, with the request id it sent.
async fn expect(app: &TestApp, call: Call, status: u16, code: &str) -> Value {
    let reply = call.send(app).await;
    assert_error(&reply, status, code, call.rid())
}

/// Like [`expect`], also checking the message.
async fn expect_message(app: &TestApp, call: Call, status: u16, code: &str, message: &str) {
    let what = format!("{call:?}");
    let error = expect(app, call, status, code).await;
    assert_eq!(error["message"], message, "{what}");
}

fn fields(error: &Value) -> Vec<String> {
    error["details"]["fields"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Authentication (`docs/hmac-signatures.md`, check order)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn preamble_errors_have_the_originals_codes_messages_and_order() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let member = identity(tenant, Uuid::new_v4());
    let list = "/api/v1/events/";
    let get = |who| Call::new("GET", list, who);
    let now = chrono::Utc::now().timestamp();

    // The request id is required, and the envelope then has none to echo.
    let reply = get(&member).no_request_id().send(&app).await;
    let error = assert_error(&reply, 400, "MISSING_REQUEST_ID", None);
    assert_eq!(error["message"], "X-Request-Id is required");

    for missing in ["x-tenant-id", "x-tenant-slug"] {
        expect_message(
            &app,
            get(&member).without(missing),
            400,
            "MISSING_TENANT_CONTEXT",
            "Tenant headers required",
        )
        .await;
    }
    expect_message(
        &app,
        get(&member).header("x-tenant-slug", ""),
        400,
        "MISSING_TENANT_CONTEXT",
        "Tenant headers required",
    )
    .await;
    for bad in [
        "acme",
        "1234",
        "6f1c2b9e-8d1a-4c3e-9b7a-2f4d5e6a7b8",
        "' OR 1=1 --",
    ] {
        expect_message(
            &app,
            get(&member).header("x-tenant-id", bad),
            400,
            "INVALID_TENANT_ID",
            "X-Tenant-Id must be a UUID",
        )
        .await;
    }

    let missing = "Missing internal signature";
    expect_message(&app, get(&member).unsigned(), 401, "UNAUTHORIZED", missing).await;
    expect_message(
        &app,
        get(&member).without("x-updspace-signature"),
        401,
        "UNAUTHORIZED",
        missing,
    )
    .await;
    expect_message(
        &app,
        get(&member).without("x-updspace-timestamp"),
        401,
        "UNAUTHORIZED",
        missing,
    )
    .await;
    for bad in ["soon", "1.7e9", "0x10", ""] {
        let call = get(&member).header("x-updspace-timestamp", bad);
        let message = if bad.is_empty() {
            missing
        } else {
            "Invalid internal timestamp"
        };
        expect_message(&app, call, 401, "UNAUTHORIZED", message).await;
    }
    // Read the clock again: a slow machine may have spent seconds since `now`.
    for offset in [-320, 320, i64::MIN] {
        let now = chrono::Utc::now().timestamp();
        let ts = if offset == i64::MIN { 0 } else { now + offset };
        expect_message(
            &app,
            get(&member).ts(ts),
            401,
            "UNAUTHORIZED",
            "Internal signature expired",
        )
        .await;
    }
    // Inside the window is fine.
    let reply = get(&member)
        .ts(chrono::Utc::now().timestamp() - 280)
        .send(&app)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    let invalid = "Invalid internal signature";
    expect_message(
        &app,
        get(&member).secret("other-secret"),
        401,
        "UNAUTHORIZED",
        invalid,
    )
    .await;
    expect_message(
        &app,
        get(&member).header("x-updspace-signature", &"0".repeat(64)),
        401,
        "UNAUTHORIZED",
        invalid,
    )
    .await;
    // The right signature in upper-case hex is refused; in lower case it passes.
    let call = get(&member).ts(now);
    let signature = updspace_events::auth::sign_v1(
        crate::helpers::TEST_SECRET,
        "GET",
        list,
        b"",
        call.rid().unwrap_or(""),
        now,
    );
    let upper = call
        .clone()
        .header("x-updspace-signature", &signature.to_uppercase());
    expect_message(&app, upper, 401, "UNAUTHORIZED", invalid).await;
    let lower = call.header("x-updspace-signature", &signature);
    assert_eq!(lower.send(&app).await.status, 200);
    // A signature over another request id does not fit.
    let reply = Call::new("GET", list, &member)
        .request_id("signed-id")
        .header("x-request-id", "sent-id")
        .send(&app)
        .await;
    assert_error(&reply, 401, "UNAUTHORIZED", Some("sent-id"));
    expect_message(
        &app,
        get(&member).header("x-updspace-signature-version", "3"),
        401,
        "UNAUTHORIZED",
        "Unsupported signature version",
    )
    .await;

    // The same signed request twice: the second is a replay.
    let once = get(&member);
    assert_eq!(once.send(&app).await.status, 200);
    expect_message(&app, once, 401, "UNAUTHORIZED", "Replayed request").await;

    // v1 does not sign X-User-Id, so the user checks come after the signature.
    expect_message(
        &app,
        get(&member).without("x-user-id"),
        401,
        "UNAUTHENTICATED",
        "X-User-Id is required",
    )
    .await;
    for bad in ["nope", "12345", "6f1c2b9e-8d1a-4c3e-9b7a-2f4d5e6a7b8"] {
        expect_message(
            &app,
            get(&member).header("x-user-id", bad),
            400,
            "INVALID_USER_ID",
            "X-User-Id must be a UUID",
        )
        .await;
    }

    // Order: each request below has several faults and gets the first.
    let reply = get(&member)
        .no_request_id()
        .without("x-tenant-id")
        .unsigned()
        .send(&app)
        .await;
    assert_error(&reply, 400, "MISSING_REQUEST_ID", None);
    expect(
        &app,
        get(&member).without("x-tenant-slug").unsigned(),
        400,
        "MISSING_TENANT_CONTEXT",
    )
    .await;
    expect(
        &app,
        get(&member).header("x-tenant-id", "acme").unsigned(),
        400,
        "INVALID_TENANT_ID",
    )
    .await;
    expect(
        &app,
        get(&member).unsigned().without("x-user-id"),
        401,
        "UNAUTHORIZED",
    )
    .await;
    expect(
        &app,
        get(&member).secret("wrong").header("x-user-id", "nope"),
        401,
        "UNAUTHORIZED",
    )
    .await;
    expect(
        &app,
        get(&member).ts(now - 1000).secret("wrong"),
        401,
        "UNAUTHORIZED",
    )
    .await;
}

#[tokio::test]
async fn v1_is_refused_when_the_minimum_signature_version_is_2() {
    let app = TestApp::spawn_with(|s| s.hmac_min_version = Some("2".into())).await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    for prefix in PREFIXES {
        expect_message(
            &app,
            Call::new("GET", &format!("{prefix}/"), &boss),
            401,
            "UNAUTHORIZED",
            "Signature version 1 is not accepted; sign with version 2",
        )
        .await;
        let reply = Call::new("GET", &format!("{prefix}/?limit=5"), &boss)
            .v2()
            .send(&app)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let reply = Call::new("POST", "/api/v1/", &boss)
        .v2()
        .json(event_body(tenant, "v2 only"))
        .send(&app)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // A v1 body error still answers 401 first.
    expect(
        &app,
        Call::new("POST", "/api/v1/", &boss).raw("{not json"),
        401,
        "UNAUTHORIZED",
    )
    .await;
}

#[tokio::test]
async fn v2_verifies_over_http_and_binds_the_query_and_identity_which_v1_does_not() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let id = id_of(&create(&app, &boss, event_body(tenant, "Bound")).await);
    let member = identity(tenant, Uuid::new_v4());
    let intruder = Uuid::new_v4().to_string();
    let list = "/api/v1/events/?limit=1";

    // v2 works on every kind of route, ids signed as sent.
    let reply = Call::new("GET", list, &member).v2().send(&app).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["meta"]["limit"], 1);
    let mut shouty = member.clone();
    shouty.user_id = member.user_id.to_uppercase();
    let reply = Call::new("POST", &format!("/api/v1/{id}/rsvp"), &shouty)
        .v2()
        .json(json!({"status": "going"}))
        .send(&app)
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    let reply = Call::new("PATCH", &format!("/api/v1/events/{id}/"), &boss)
        .v2()
        .json(json!({"title": "Bound v2"}))
        .send(&app)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    let invalid = "Invalid internal signature";
    // Tampering with the query after signing.
    let tampered = Call::new("GET", "/api/v1/events/?limit=250", &member)
        .v2()
        .sign_query("limit=1");
    expect_message(&app, tampered, 401, "UNAUTHORIZED", invalid).await;
    let tampered = Call::new("GET", "/api/v1/events/", &member)
        .v2()
        .sign_query("limit=1");
    expect_message(&app, tampered, 401, "UNAUTHORIZED", invalid).await;
    // Tampering with the identity after signing.
    for (name, value) in [
        ("x-user-id", intruder.as_str()),
        ("x-user-id", shouty.user_id.as_str()),
        ("x-tenant-id", &Uuid::new_v4().to_string()),
        ("x-tenant-slug", "other"),
        ("x-master-flags", r#"{"system_admin":true}"#),
    ] {
        let call = Call::new("GET", &format!("/api/v1/{id}"), &member)
            .v2()
            .header(name, value);
        expect_message(&app, call, 401, "UNAUTHORIZED", invalid).await;
    }
    let call = Call::new("GET", &format!("/api/v1/{id}"), &member)
        .v2()
        .without("x-user-id");
    expect_message(&app, call, 401, "UNAUTHORIZED", invalid).await;

    // v1 signs neither (the BFF's scheme): the same tampering goes through.
    let reply = Call::new("GET", "/api/v1/events/?limit=250", &member)
        .sign_query("limit=1")
        .send(&app)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["meta"]["limit"], 250);
    let reply = Call::new("GET", &format!("/api/v1/{id}"), &member)
        .header("x-user-id", &intruder)
        .send(&app)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["myRsvp"], Value::Null, "read as the intruder");
    let reply = Call::new("GET", &format!("/api/v1/{id}"), &member)
        .send(&app)
        .await;
    assert_eq!(reply.json()["myRsvp"], "going");
}

#[tokio::test]
async fn the_v1_signature_is_over_the_path_actually_received() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let id = id_of(&create(&app, &boss, event_body(tenant, "Paths")).await);
    let long = format!("/api/v1/events/{id}");
    let short = format!("/api/v1/{id}");
    for path in [&long, &short, &format!("{long}/"), &format!("{short}/")] {
        let reply = Call::new("GET", path, &boss).send(&app).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
    }
    for (sent, signed) in [
        (long.clone(), short.clone()),
        (short.clone(), long.clone()),
        (format!("{long}/"), long.clone()),
        (long.clone(), format!("{long}/")),
        ("/api/v1/".to_string(), "/api/v1/events/".to_string()),
        ("/api/v1/events".to_string(), "/api/v1/events/".to_string()),
    ] {
        let call = Call::new("GET", &sent, &boss).sign_path(&signed);
        expect_message(
            &app,
            call,
            401,
            "UNAUTHORIZED",
            "Invalid internal signature",
        )
        .await;
    }
    // The same for a write, whose body is signed too.
    let call = Call::new("POST", &format!("{short}/rsvp"), &boss)
        .sign_path(&format!("{long}/rsvp"))
        .json(json!({"status": "going"}));
    expect(&app, call, 401, "UNAUTHORIZED").await;
    let call = Call::new("POST", &format!("{short}/rsvp"), &boss)
        .json(json!({"status": "going"}))
        .header("content-length", "18");
    let reply = call.send(&app).await;
    assert_eq!(reply.status, 204, "{}", reply.text);
}

// ---------------------------------------------------------------------------
// Ids, existence, permission (`docs/authorization.md`)
// ---------------------------------------------------------------------------

/// Every targeted route, as (method, suffix after the id, body).
fn targeted() -> Vec<(&'static str, &'static str, Option<Value>)> {
    vec![
        ("GET", "", None),
        ("PATCH", "", Some(json!({"title": "x"}))),
        ("POST", "/rsvp", Some(json!({"status": "going"}))),
        ("DELETE", "/rsvp", None),
        ("GET", "/rsvps", None),
        (
            "POST",
            "/attendance",
            Some(json!({"userId": Uuid::nil().to_string()})),
        ),
        ("GET", "/attendance", None),
        ("GET", "/ics", None),
        ("POST", "/cancel", None),
    ]
}

fn call_with(
    method: &str,
    path: &str,
    who: &updspace_events::client::Identity,
    body: &Option<Value>,
) -> Call {
    let call = Call::new(method, path, who);
    match body {
        Some(b) => call.json(b.clone()),
        None => call,
    }
}

#[tokio::test]
async fn malformed_ids_are_400_on_every_route_and_prefix() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let id = id_of(&create(&app, &boss, event_body(tenant, "Ids")).await);
    for prefix in PREFIXES {
        for bad in [
            "not-a-uuid",
            "internal",
            "12345",
            "6f1c2b9e-8d1a-4c3e-9b7a-2f4d5e6a7b8",
        ] {
            for (method, suffix, body) in targeted() {
                let call = call_with(method, &format!("{prefix}/{bad}{suffix}"), &boss, &body);
                expect_message(&app, call, 400, "INVALID_EVENT_ID", "Invalid event id").await;
            }
        }
        for bad in ["nope", "42"] {
            expect_message(
                &app,
                Call::new("POST", &format!("{prefix}/{id}/attendance"), &boss)
                    .json(json!({"userId": bad})),
                400,
                "INVALID_USER_ID",
                "user_id must be a UUID",
            )
            .await;
            expect_message(
                &app,
                Call::new(
                    "GET",
                    &format!("{prefix}/internal/dsar/users/{bad}/export"),
                    &boss,
                ),
                400,
                "INVALID_USER_ID",
                "Invalid user id",
            )
            .await;
            expect_message(
                &app,
                Call::new(
                    "POST",
                    &format!("{prefix}/internal/dsar/users/{bad}/erase"),
                    &boss,
                ),
                400,
                "INVALID_USER_ID",
                "Invalid user id",
            )
            .await;
        }
    }
}

#[tokio::test]
async fn hidden_and_absent_events_are_404_before_any_403() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let public = id_of(&create(&app, &boss, event_body(tenant, "Open")).await);
    let mut private = event_body(tenant, "Closed");
    private["visibility"] = json!("private");
    let private = id_of(&create(&app, &boss, private).await);
    let foreign_tenant = Uuid::new_v4();
    let foreign_boss = organizer(&app, foreign_tenant).await;
    let foreign =
        id_of(&create(&app, &foreign_boss, event_body(foreign_tenant, "Elsewhere")).await);
    let member = identity(tenant, Uuid::new_v4());
    let mut suspended = member.clone();
    suspended.master_flags = Some(r#"{"suspended":true}"#.into());

    for (method, suffix, body) in targeted() {
        let absent = Uuid::new_v4();
        for (who, target) in [
            (&member, absent.to_string()),
            (&member, private.clone()),
            (&member, foreign.clone()),
            (&boss, foreign.clone()),
            (&suspended, private.clone()),
        ] {
            let call = call_with(method, &format!("/api/v1/{target}{suffix}"), who, &body);
            expect_message(&app, call, 404, "NOT_FOUND", "Event not found").await;
        }
    }
    // Visible were they not suspended: 403, so they learn why.
    for (method, suffix, body) in targeted() {
        let call = call_with(
            method,
            &format!("/api/v1/events/{public}{suffix}"),
            &suspended,
            &body,
        );
        expect_message(&app, call, 403, "FORBIDDEN", "Permission denied").await;
    }
    // Visible, but not allowed: 403 with the original's message.
    for (method, suffix, body) in targeted() {
        if matches!(
            (method, suffix),
            ("GET", "") | ("GET", "/ics") | ("POST", "/rsvp") | ("DELETE", "/rsvp")
        ) {
            continue;
        }
        let call = call_with(
            method,
            &format!("/api/v1/events/{public}{suffix}"),
            &member,
            &body,
        );
        expect_message(&app, call, 403, "FORBIDDEN", "Permission denied").await;
    }
    expect_message(
        &app,
        Call::new("POST", "/api/v1/events/", &member).json(event_body(tenant, "Nope")),
        403,
        "FORBIDDEN",
        "Permission denied",
    )
    .await;
    expect(
        &app,
        Call::new("GET", "/api/v1/events/", &suspended),
        403,
        "FORBIDDEN",
    )
    .await;
    // DSAR on someone else.
    let other = Uuid::new_v4();
    for flags in [
        None,
        Some(r#"{"system_admin":"no"}"#),
        Some(r#"{"is_system_admin":"true"}"#),
    ] {
        let mut who = member.clone();
        who.master_flags = flags.map(str::to_string);
        for (method, action) in [("GET", "export"), ("POST", "erase")] {
            let call = Call::new(
                method,
                &format!("/api/v1/internal/dsar/users/{other}/{action}"),
                &who,
            );
            expect_message(&app, call, 403, "FORBIDDEN", "DSAR access denied").await;
        }
    }
    let reply = Call::new(
        "GET",
        &format!("/api/v1/internal/dsar/users/{other}/export"),
        &admin(tenant),
    )
    .send(&app)
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

// ---------------------------------------------------------------------------
// Query, time range, updates
// ---------------------------------------------------------------------------

#[tokio::test]
async fn list_query_errors() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let member = identity(tenant, Uuid::new_v4());
    let list = |q: &str| Call::new("GET", &format!("/api/v1/events/?{q}"), &member);
    for q in [
        "from=garbage",
        "from=",
        "from=2030-13-45",
        "from=2030-01-10T25:00:00Z",
    ] {
        expect_message(
            &app,
            list(q),
            400,
            "INVALID_FROM",
            "from must be ISO datetime",
        )
        .await;
    }
    for q in [
        "to=garbage",
        "to=yesterday",
        "from=2030-01-01&to=2030-02-30",
    ] {
        expect_message(&app, list(q), 400, "INVALID_TO", "to must be ISO datetime").await;
    }
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=251", "limit"),
        ("limit=ten", "limit"),
        ("limit=99999999999999999999", "limit"),
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
        ("scope_type=GUILD&scope_id=x", "scopeType"),
        ("scopeType=tenant&scopeId=x", "scopeType"),
        ("visibility=everyone", "visibility"),
        ("my_rsvp=maybe", "myRsvp"),
        ("myRsvp=waitlisted_or_not", "myRsvp"),
        ("created_by=nobody", "createdBy"),
    ] {
        let error = expect(&app, list(q), 422, "VALIDATION_ERROR").await;
        assert_eq!(fields(&error), [field], "{q}: {error}");
    }
    let q = format!("q={}", "x".repeat(201));
    let error = expect(&app, list(&q), 422, "VALIDATION_ERROR").await;
    assert_eq!(fields(&error), ["q"], "{error}");
}

#[tokio::test]
async fn time_ranges_and_empty_updates() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let t = tenant.to_string();
    let range = "starts_at must be before ends_at";
    for (starts, ends) in [
        ("2030-01-10T10:00:00Z", "2030-01-10T10:00:00Z"),
        ("2030-01-10T12:00:00Z", "2030-01-10T10:00:00Z"),
        ("2030-01-10T13:00:00+03:00", "2030-01-10T10:00:00Z"),
        // One naive and one aware datetime (a 500 in the original).
        ("2030-01-10T10:00:00", "2030-01-10T12:00:00+03:00"),
    ] {
        let body = json!({"scopeType": "TENANT", "scopeId": t, "title": "T",
                          "startsAt": starts, "endsAt": ends});
        let call = Call::new("POST", "/api/v1/events/", &boss).json(body);
        expect_message(&app, call, 400, "INVALID_TIME_RANGE", range).await;
    }
    let mixed = json!({"scopeType": "TENANT", "scopeId": t, "title": "Mixed",
                       "startsAt": "2030-01-10T10:00:00", "endsAt": "2030-01-10T14:00:00+03:00"});
    let view = create(&app, &boss, mixed).await;
    assert_eq!(view["startsAt"], "2030-01-10T10:00:00Z");
    assert_eq!(view["endsAt"], "2030-01-10T11:00:00Z");
    let id = id_of(&view);
    let patch = |body: Value| Call::new("PATCH", &format!("/api/v1/{id}"), &boss).json(body);
    for body in [
        json!({"endsAt": "2030-01-10T10:00:00Z"}),
        json!({"startsAt": "2030-01-10T11:30:00Z"}),
        json!({"starts_at": "2030-01-11T10:00:00Z", "ends_at": "2030-01-11T09:00:00Z"}),
    ] {
        expect_message(&app, patch(body), 400, "INVALID_TIME_RANGE", range).await;
    }
    for body in [
        json!({}),
        json!({"foo": 1}),
        json!({"scopeType": "TEAM"}),
        json!({"scope_id": "x", "id": "y"}),
    ] {
        expect_message(
            &app,
            patch(body),
            400,
            "NO_UPDATES",
            "Provide at least one editable field",
        )
        .await;
    }
    for key in ["startsAt", "endsAt", "starts_at", "ends_at"] {
        let error = expect(&app, patch(json!({ key: null })), 422, "VALIDATION_ERROR").await;
        let camel = if key.starts_with("start") {
            "startsAt"
        } else {
            "endsAt"
        };
        assert_eq!(fields(&error), [camel], "{error}");
    }
    let reply = patch(json!({"endsAt": "2030-01-10T12:00:00Z"}))
        .send(&app)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

// ---------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------

#[tokio::test]
async fn malformed_bodies_are_400_and_schema_errors_422_with_camel_case_fields() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let id = id_of(&create(&app, &boss, event_body(tenant, "Bodies")).await);
    let writes = [
        ("POST", "/api/v1/events/".to_string()),
        ("PATCH", format!("/api/v1/{id}")),
        ("POST", format!("/api/v1/{id}/rsvp")),
        ("POST", format!("/api/v1/{id}/attendance")),
    ];
    for (method, path) in &writes {
        for raw in [
            &b"{\"title\":"[..],
            b"not json",
            b"[]",
            b"\"a string\"",
            b"42",
            b"null",
            b"",
            b"   ",
            b"{\"title\": \"\xff\xfe\"}",
            b"{\"a\":1}{\"b\":2}",
        ] {
            let call = Call::new(method, path, &boss).raw(raw.to_vec());
            let reply = call.send(&app).await;
            let what = format!("{method} {path} {:?}", String::from_utf8_lossy(raw));
            assert_eq!(reply.status, 400, "{what}: {}", reply.text);
            assert_error(&reply, 400, "INVALID_BODY", call.rid());
        }
    }
    // A POST whose body is ignored still must be JSON if present.
    let reply = Call::new("POST", &format!("/api/v1/{id}/cancel"), &boss)
        .raw("{oops")
        .send(&app)
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);

    let t = tenant.to_string();
    let error = expect(
        &app,
        Call::new("POST", "/api/v1/events/", &boss).json(json!({
            "scope_type": "GUILD", "scope_id": 5, "title": "", "starts_at": "garbage",
            "ends_at": true, "visibility": null, "location_url": "javascript:alert(1)",
            "capacity": 0,
        })),
        422,
        "VALIDATION_ERROR",
    )
    .await;
    let mut got = fields(&error);
    got.sort();
    assert_eq!(
        got,
        [
            "capacity",
            "endsAt",
            "locationUrl",
            "scopeId",
            "scopeType",
            "startsAt",
            "title",
            "visibility"
        ],
        "{error}"
    );
    assert!(
        error["details"]["fields"].as_object().is_some_and(|f| f
            .values()
            .all(|m| m.as_str().is_some_and(|m| !m.is_empty()))),
        "{error}"
    );
    let error = expect(
        &app,
        Call::new("POST", "/api/v1/events/", &boss).json(json!({})),
        422,
        "VALIDATION_ERROR",
    )
    .await;
    let mut got = fields(&error);
    got.sort();
    assert_eq!(
        got,
        ["endsAt", "scopeId", "scopeType", "startsAt", "title"],
        "{error}"
    );
    for (body, field) in [
        (
            json!({"scopeType": "TENANT", "scopeId": t, "title": "V", "visibility": "community",
                "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z"}),
            "visibility",
        ),
        (
            json!({"scopeType": "TENANT", "scopeId": Uuid::new_v4().to_string(), "title": "V",
                "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z"}),
            "scopeId",
        ),
        (
            json!({"scopeType": "TENANT", "scopeId": t, "title": "V", "capacity": -3,
                "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z"}),
            "capacity",
        ),
        (
            json!({"scopeType": "TENANT", "scopeId": t, "title": 7,
                "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z"}),
            "title",
        ),
    ] {
        let error = expect(
            &app,
            Call::new("POST", "/api/v1/", &boss).json(body),
            422,
            "VALIDATION_ERROR",
        )
        .await;
        assert_eq!(fields(&error), [field], "{error}");
    }
    for (body, field) in [
        (json!({}), "status"),
        (json!({"status": "maybe"}), "status"),
        (json!({"status": 1}), "status"),
    ] {
        let call = Call::new("POST", &format!("/api/v1/{id}/rsvp"), &boss).json(body);
        let error = expect(&app, call, 422, "VALIDATION_ERROR").await;
        assert_eq!(fields(&error), [field], "{error}");
    }
    for body in [json!({}), json!({"userId": 5}), json!({"user_id": ["x"]})] {
        let call = Call::new("POST", &format!("/api/v1/{id}/attendance"), &boss).json(body);
        let error = expect(&app, call, 422, "VALIDATION_ERROR").await;
        assert_eq!(fields(&error), ["userId"], "{error}");
    }
    for (body, field) in [
        (json!({"title": ""}), "title"),
        (json!({"visibility": "team"}), "visibility"),
        (json!({"capacity": 0}), "capacity"),
        (json!({"location_url": "ftp://example.com"}), "locationUrl"),
    ] {
        let call = Call::new("PATCH", &format!("/api/v1/{id}"), &boss).json(body);
        let error = expect(&app, call, 422, "VALIDATION_ERROR").await;
        assert_eq!(fields(&error), [field], "{error}");
    }
}

#[tokio::test]
async fn over_long_fields_are_422_and_the_limits_count_characters() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let base = |extra: Value| {
        let mut body = json!({"scopeType": "COMMUNITY", "scopeId": "c1", "title": "Limits",
                              "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z"});
        if let (Some(o), Value::Object(extra)) = (body.as_object_mut(), extra) {
            o.extend(extra);
        }
        body
    };
    let url = |n: usize| format!("https://example.com/{}", "p".repeat(n - 20));
    let cases: Vec<(&str, Value, Value)> = vec![
        ("title", json!("é".repeat(255)), json!("é".repeat(256))),
        ("scopeId", json!("ж".repeat(128)), json!("ж".repeat(129))),
        (
            "locationText",
            json!("ü".repeat(255)),
            json!("ü".repeat(256)),
        ),
        ("locationUrl", json!(url(2048)), json!(url(2049))),
        ("gameId", json!("g".repeat(128)), json!("g".repeat(129))),
        (
            "description",
            json!("д".repeat(20_000)),
            json!("д".repeat(20_001)),
        ),
    ];
    for (field, fits, too_long) in cases {
        let reply = Call::new("POST", "/api/v1/events/", &boss)
            .json(base(json!({ field: fits })))
            .send(&app)
            .await;
        assert_eq!(reply.status, 200, "{field} at the limit: {}", reply.text);
        let id = id_of(&reply.json());
        let call = Call::new("POST", "/api/v1/events/", &boss)
            .json(base(json!({ field: too_long.clone() })));
        let error = expect(&app, call, 422, "VALIDATION_ERROR").await;
        assert_eq!(fields(&error), [field], "{error}");
        if field != "scopeId" {
            let call = Call::new("PATCH", &format!("/api/v1/{id}"), &boss)
                .json(json!({ field: too_long }));
            let error = expect(&app, call, 422, "VALIDATION_ERROR").await;
            assert_eq!(fields(&error), [field], "{error}");
        }
    }
}

#[tokio::test]
async fn a_body_over_the_size_limit_is_413() {
    let app = TestApp::spawn_with(|s| s.max_body_bytes = Some("2048".into())).await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let mut body = event_body(tenant, "Big");
    body["description"] = json!("x".repeat(3000));
    for path in ["/api/v1/events/", "/api/v1"] {
        let call = Call::new("POST", path, &boss).json(body.clone());
        expect(&app, call, 413, "PAYLOAD_TOO_LARGE").await;
    }
    let id = id_of(&create(&app, &boss, event_body(tenant, "Small")).await);
    let call = Call::new("PATCH", &format!("/api/v1/{id}"), &boss).raw(vec![b' '; 2049]);
    expect(&app, call, 413, "PAYLOAD_TOO_LARGE").await;
    // Exactly at the limit is read (and then judged on its content).
    let mut fits = event_body(tenant, "Fits");
    fits["description"] = json!("");
    let without = fits.to_string().len();
    fits["description"] = json!("y".repeat(2048 - without));
    assert_eq!(fits.to_string().len(), 2048);
    let reply = Call::new("POST", "/api/v1/events/", &boss)
        .json(fits)
        .send(&app)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unknown_routes_are_a_json_404_and_wrong_methods_a_405_envelope() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let id = Uuid::new_v4();
    let uid = Uuid::new_v4();
    for path in [
        "/".to_string(),
        "/api".to_string(),
        "/api/v2/events/".to_string(),
        "/api/v1/events/nope/extra/path".to_string(),
        format!("/api/v1/events/{id}/nope"),
        format!("/api/v1/{id}/rsvp/extra"),
        format!("/api/v1/internal/dsar/users/{uid}"),
        format!("/api/v1/events/internal/dsar/users/{uid}/delete"),
        "/favicon.ico".to_string(),
    ] {
        for call in [
            Call::new("GET", &path, &boss),
            Call::new("POST", &path, &boss)
                .unsigned()
                .header("accept", "text/html"),
        ] {
            let reply = call.send(&app).await;
            assert_error(&reply, 404, "NOT_FOUND", call.rid());
            assert!(!reply.text.contains("<html"), "{path}: {}", reply.text);
        }
    }
    // One segment after a prefix is an event id, as in the original
    // (`/api/v1/events/internal` was 400 `INVALID_EVENT_ID` there too).
    for path in [
        "/api/v1/docs",
        "/api/v1/events/internal",
        "/api/v1/events/docs/",
    ] {
        let call = Call::new("GET", path, &boss);
        expect(&app, call, 400, "INVALID_EVENT_ID").await;
    }
    let wrong: Vec<(&str, String, &str)> = vec![
        ("DELETE", "/".into(), "GET,HEAD,POST"),
        ("PUT", "/".into(), "GET,HEAD,POST"),
        ("POST", format!("/{id}"), "GET,HEAD,PATCH"),
        ("PUT", format!("/{id}"), "GET,HEAD,PATCH"),
        ("DELETE", format!("/{id}"), "GET,HEAD,PATCH"),
        ("GET", format!("/{id}/rsvp"), "POST,DELETE"),
        ("PATCH", format!("/{id}/rsvp"), "POST,DELETE"),
        ("POST", format!("/{id}/rsvps"), "GET,HEAD"),
        ("DELETE", format!("/{id}/attendance"), "POST,GET,HEAD"),
        ("POST", format!("/{id}/ics"), "GET,HEAD"),
        ("GET", format!("/{id}/cancel"), "POST"),
        (
            "POST",
            format!("/internal/dsar/users/{uid}/export"),
            "GET,HEAD",
        ),
        ("GET", format!("/internal/dsar/users/{uid}/erase"), "POST"),
        ("POST", "/openapi.json".into(), "GET,HEAD"),
    ];
    for prefix in PREFIXES {
        for slash in ["", "/"] {
            for (method, rest, allowed) in &wrong {
                let path = format!("{prefix}{rest}{slash}");
                let path = path.replace("//", "/");
                let call = Call::new(method, &path, &boss);
                let reply = call.send(&app).await;
                let error = assert_error(&reply, 405, "METHOD_NOT_ALLOWED", call.rid());
                assert!(!error["message"].as_str().unwrap_or("").is_empty());
                let allow: Vec<String> = reply
                    .headers
                    .get("allow")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_else(|| panic!("{method} {path}: no Allow header"))
                    .split(',')
                    .map(|m| m.trim().to_string())
                    .collect();
                for m in allowed.split(',') {
                    assert!(
                        allow.iter().any(|a| a == m),
                        "{method} {path}: Allow {allow:?} lacks {m}"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Conflicts
// ---------------------------------------------------------------------------

#[tokio::test]
async fn cancelled_events_and_reused_request_ids_are_409() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let id = id_of(&create(&app, &boss, event_body(tenant, "Doomed")).await);
    let guest = identity(tenant, Uuid::new_v4());
    let reply = app
        .bff(
            "POST",
            &format!("/api/v1/{id}/rsvp"),
            &guest,
            Some(json!({"status": "going"})),
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    let first = Call::new("POST", &format!("/api/v1/{id}/cancel"), &boss)
        .json(json!({"reason": "Rain"}))
        .send(&app)
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.json()["status"], "cancelled");
    assert_eq!(first.json()["cancelReason"], "Rain");
    let again = Call::new("POST", &format!("/api/v1/events/{id}/cancel/"), &boss)
        .send(&app)
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json()["version"], first.json()["version"], "a no-op");
    let cases = [
        Call::new("POST", &format!("/api/v1/{id}/rsvp"), &guest)
            .json(json!({"status": "interested"})),
        Call::new("DELETE", &format!("/api/v1/{id}/rsvp"), &guest),
        Call::new("POST", &format!("/api/v1/{id}/attendance"), &boss)
            .json(json!({"userId": guest.user_id})),
        Call::new("PATCH", &format!("/api/v1/{id}"), &boss).json(json!({"title": "Revived"})),
    ];
    for call in cases {
        expect_message(&app, call, 409, "EVENT_CANCELLED", "Event is cancelled").await;
    }
    // Reads still work.
    for path in [
        format!("/api/v1/{id}"),
        format!("/api/v1/{id}/ics"),
        format!("/api/v1/{id}/rsvps"),
    ] {
        let reply = Call::new("GET", &path, &boss).send(&app).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
    }

    let rid = Uuid::new_v4().to_string();
    let now = chrono::Utc::now().timestamp();
    let reply = Call::new("POST", "/api/v1/events/", &boss)
        .request_id(&rid)
        .ts(now)
        .json(event_body(tenant, "First"))
        .send(&app)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let call = Call::new("POST", "/api/v1/", &boss)
        .request_id(&rid)
        .ts(now - 1)
        .json(event_body(tenant, "Second"));
    expect(&app, call, 409, "IDEMPOTENCY_CONFLICT").await;
}

// ---------------------------------------------------------------------------
// Precedence and robustness
// ---------------------------------------------------------------------------

#[tokio::test]
async fn authentication_failures_take_precedence_over_invalid_input() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let id = id_of(&create(&app, &boss, event_body(tenant, "Order")).await);
    let bad_bodies: [&[u8]; 4] = [
        b"{not json",
        b"[]",
        br#"{"title": "", "scopeType": "GUILD"}"#,
        b"",
    ];
    for raw in bad_bodies {
        for (method, path) in [
            ("POST", "/api/v1/events/".to_string()),
            ("PATCH", format!("/api/v1/{id}")),
            ("POST", format!("/api/v1/{id}/rsvp")),
            ("POST", "/api/v1/not-an-id/attendance".to_string()),
        ] {
            for call in [
                Call::new(method, &path, &boss).raw(raw.to_vec()).unsigned(),
                Call::new(method, &path, &boss)
                    .raw(raw.to_vec())
                    .secret("wrong"),
                Call::new(method, &path, &boss)
                    .raw(raw.to_vec())
                    .ts(chrono::Utc::now().timestamp() - 3600),
                // Signed over a different body than the one sent.
                Call::new(method, &path, &boss)
                    .raw(raw.to_vec())
                    .header("x-updspace-signature", &"a".repeat(64)),
            ] {
                expect(&app, call, 401, "UNAUTHORIZED").await;
            }
        }
    }
    let reply = Call::new("POST", "/api/v1/events/", &boss)
        .raw("{not json")
        .no_request_id()
        .send(&app)
        .await;
    assert_error(&reply, 400, "MISSING_REQUEST_ID", None);
    expect(
        &app,
        Call::new("GET", "/api/v1/not-an-id", &boss).unsigned(),
        401,
        "UNAUTHORIZED",
    )
    .await;
    expect(
        &app,
        Call::new("GET", "/api/v1/events/?limit=0&from=garbage", &boss).secret("wrong"),
        401,
        "UNAUTHORIZED",
    )
    .await;
}

#[tokio::test]
async fn bad_input_is_never_a_500() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = organizer(&app, tenant).await;
    let id = id_of(&create(&app, &boss, event_body(tenant, "Robust")).await);
    let t = tenant.to_string();
    let ev = |extra: Value| {
        let mut body = event_body(tenant, "Hostile");
        if let (Some(o), Value::Object(extra)) = (body.as_object_mut(), extra) {
            o.extend(extra);
        }
        body
    };
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let mut calls: Vec<Call> = vec![
        Call::new("POST", "/api/v1/events/", &boss).json(ev(json!({"title": "a\u{0}b"}))),
        Call::new("POST", "/api/v1/events/", &boss).json(ev(json!({"description": "\u{0}"}))),
        Call::new("POST", "/api/v1/events/", &boss)
            .json(ev(json!({"scopeId": "c\n1", "scopeType": "COMMUNITY"}))),
        Call::new("POST", "/api/v1/events/", &boss)
            .json(ev(json!({"scopeId": "", "scopeType": "TEAM"}))),
        Call::new("POST", "/api/v1/events/", &boss)
            .json(ev(json!({"startsAt": "99999-01-01T00:00:00Z"}))),
        Call::new("POST", "/api/v1/events/", &boss).json(ev(json!({"startsAt": 1e300}))),
        Call::new("POST", "/api/v1/events/", &boss).json(ev(json!({"startsAt": -1e20}))),
        Call::new("POST", "/api/v1/events/", &boss).json(ev(json!({"startsAt": i64::MAX}))),
        Call::new("POST", "/api/v1/events/", &boss).json(ev(json!({"startsAt": {"date": "x"}}))),
        Call::new("POST", "/api/v1/events/", &boss)
            .json(ev(json!({"endsAt": "0000-01-01T00:00:00Z"}))),
        Call::new("POST", "/api/v1/events/", &boss).json(ev(json!({"capacity": 1e30}))),
        Call::new("POST", "/api/v1/events/", &boss).json(ev(json!({"capacity": u64::MAX}))),
        Call::new("POST", "/api/v1/events/", &boss).json(ev(json!({"capacity": 2.5}))),
        Call::new("POST", "/api/v1/events/", &boss)
            .json(ev(json!({"locationUrl": "https://exa mple.com"}))),
        Call::new("POST", "/api/v1/events/", &boss).json(ev(json!({"locationUrl": "https://"}))),
        Call::new("POST", "/api/v1/events/", &boss).json(ev(json!({"gameId": "\u{0}"}))),
        Call::new("POST", "/api/v1/events/", &boss).raw(deep.clone()),
        Call::new("POST", "/api/v1/events/", &boss).raw(r#"{"title": 1e999999}"#),
        Call::new("POST", "/api/v1/events/", &boss).raw(r#"{"title": "\ud800"}"#),
        Call::new("PATCH", &format!("/api/v1/{id}"), &boss).json(json!({"capacity": "many"})),
        Call::new("PATCH", &format!("/api/v1/{id}"), &boss)
            .json(json!({"startsAt": "9999-12-31T23:59:59Z", "endsAt": "10000-01-01T00:00:00Z"})),
        Call::new("PATCH", &format!("/api/v1/{id}"), &boss).raw(deep),
        Call::new("POST", &format!("/api/v1/{id}/attendance"), &boss)
            .json(json!({"userId": Uuid::nil().to_string()})),
        Call::new("POST", &format!("/api/v1/{id}/attendance"), &boss)
            .json(json!({"userId": "\u{0}"})),
        Call::new("POST", &format!("/api/v1/{id}/cancel"), &boss)
            .json(json!({"reason": "r".repeat(100_000)})),
        Call::new("POST", &format!("/api/v1/{id}/cancel"), &boss).json(json!({"reason": 5})),
        Call::new(
            "GET",
            "/api/v1/events/?limit=1&offset=9223372036854775807",
            &boss,
        ),
        Call::new("GET", "/api/v1/events/?offset=4611686018427387904", &boss),
        Call::new("GET", "/api/v1/events/?from=0000-00-00", &boss),
        Call::new("GET", "/api/v1/events/?from=%00", &boss),
        Call::new("GET", "/api/v1/events/?from=99999999999999999999", &boss),
        Call::new("GET", "/api/v1/events/?to=-99999999999", &boss),
        Call::new("GET", "/api/v1/events/?q=%00", &boss),
        Call::new("GET", "/api/v1/events/?q=%25%5F%5C", &boss),
        Call::new("GET", "/api/v1/events/?q=%FF%FE", &boss),
        Call::new(
            "GET",
            &format!(
                "/api/v1/events/?scope_type=COMMUNITY&scope_id={}",
                "s".repeat(5000)
            ),
            &boss,
        ),
        Call::new(
            "GET",
            "/api/v1/events/?scope_type=COMMUNITY&scope_id=%00",
            &boss,
        ),
        Call::new(
            "GET",
            &format!("/api/v1/events/?scope_type=TENANT&scope_id={t}&scope_type=TEAM"),
            &boss,
        ),
        Call::new("GET", "/api/v1/events/?created_by=%00", &boss),
        Call::new("GET", "/api/v1/events/?limit=1&limit=2&limit=x", &boss),
        Call::new("GET", &format!("/api/v1/{id}/rsvps?status=nope"), &boss),
        Call::new("GET", &format!("/api/v1/{id}/rsvps?limit=-5"), &boss),
        Call::new("GET", &format!("/api/v1/{id}/attendance?offset=x"), &boss),
        Call::new("GET", "/api/v1/%00", &boss),
        Call::new("GET", "/api/v1/events/%FF", &boss),
        Call::new("GET", "/api/v1/events/%E2%82", &boss),
        Call::new(
            "GET",
            &format!("/api/v1/events/{}", "9".repeat(10_000)),
            &boss,
        ),
        Call::new("GET", "/api/v1/internal/dsar/users/%FF/export", &boss),
        Call::new("GET", "/api/v1/events/", &boss).header("x-master-flags", "{\"system_admin\":"),
        Call::new("GET", "/api/v1/events/", &boss).header("x-master-flags", "[1,2]"),
        Call::new("GET", "/api/v1/events/", &boss).header("x-master-flags", "{\"status\":7}"),
        Call::new("GET", "/api/v1/events/", &boss).request_id(&"r".repeat(4000)),
        Call::new("GET", "/api/v1/events/", &boss).header("x-updspace-timestamp", &"9".repeat(40)),
        Call::new("GET", "/api/v1/events/", &boss)
            .header("x-updspace-timestamp", "-9223372036854775808"),
        Call::new("GET", "/api/v1/events/", &boss).header("x-updspace-signature", "zz"),
        Call::new("GET", "/api/v1/events/", &boss).header("x-updspace-signature-version", "2 "),
    ];
    for path in [
        "/metrics?format=json&format=json",
        "/metrics?format=%FF",
        "/metrics?format",
        "/ready?x=%00",
        "/health?%FF",
    ] {
        calls.push(Call::new("GET", path, &boss).unsigned());
    }
    let long_rid = "q".repeat(300);
    calls.push(
        Call::new("POST", "/api/v1/events/", &boss)
            .request_id(&long_rid)
            .json(event_body(tenant, "Long request id")),
    );
    for call in calls {
        let what = format!("{call:?}");
        let what = what.chars().take(300).collect::<String>();
        let reply: HttpReply = call.send(&app).await;
        assert!(
            reply.status < 500,
            "{what}: {} {}",
            reply.status,
            reply.text
        );
        if reply.status >= 400 {
            assert_error(
                &reply,
                reply.status,
                reply.json()["error"]["code"].as_str().unwrap_or("?"),
                call.rid(),
            );
        }
    }
}
