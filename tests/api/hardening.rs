//! What an attacker on the internal network tries against two instances on
//! one database: replaying captured requests (to another instance, with
//! other unsigned headers), calling as the nil user, suspended callers
//! probing events, and whether DSAR and the audit trail are complete.

use serde_json::{Value, json};
use updspace_events::app::Op;
use updspace_events::client::Identity;
use uuid::Uuid;

use crate::helpers::{HttpReply, TestApp, admin, capture, identity};

const EVENTS: &str = "/api/v1/events";

fn event_body(tenant: Uuid, title: &str, visibility: &str) -> Value {
    json!({
        "scopeType": "TENANT", "scopeId": tenant.to_string(), "title": title,
        "visibility": visibility,
        "startsAt": "2030-01-10T18:00:00Z", "endsAt": "2030-01-10T21:00:00Z", "capacity": 5,
    })
}

async fn create(app: &TestApp, who: &Identity, body: Value) -> String {
    let reply = app
        .client()
        .call("event.create", who, &body)
        .await
        .expect("create reply");
    assert_eq!(reply.status, 200, "create: {:?}", reply.body);
    reply.body["id"].as_str().expect("id").to_string()
}

async fn nats(app: &TestApp, op: &str, who: &Identity, body: Value) -> Value {
    let reply = app.client().call(op, who, &body).await.expect("reply");
    assert!(
        reply.status < 300,
        "{op}: {} {:?}",
        reply.status,
        reply.body
    );
    reply.body
}

/// Everything a write could change, as one comparable value.
async fn fingerprint(app: &TestApp) -> Vec<i64> {
    #[allow(clippy::type_complexity)]
    let row: (i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events),
                (SELECT coalesce(sum(version), 0)::bigint FROM events),
                (SELECT count(*) FROM events WHERE status = 'cancelled'),
                (SELECT coalesce(sum(revision), 0)::bigint FROM event_counters),
                (SELECT count(*) FROM event_rsvps),
                (SELECT count(*) FROM event_attendance),
                (SELECT count(*) FROM outbox),
                (SELECT count(*) FROM role_bindings),
                (SELECT count(*) FROM scope_memberships),
                (SELECT count(*) FROM audit_log),
                (SELECT count(*) FROM feed_tokens),
                (SELECT count(*) FROM ics_import_keys)",
    )
    .fetch_one(&app.db)
    .await
    .expect("fingerprint");
    vec![
        row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9, row.10, row.11,
    ]
}

fn assert_replayed(reply: &HttpReply, what: &str) {
    let body = reply.json();
    assert_eq!(
        (reply.status, body["error"]["code"].as_str()),
        (401, Some("UNAUTHORIZED")),
        "{what}: a replay must be refused, got {} {}",
        reply.status,
        reply.text
    );
    assert_eq!(
        body["error"]["message"], "Replayed request",
        "{what}: {}",
        reply.text
    );
}

/// The HTTP request of one write operation, made ready by `prepare` so that
/// it changes something when first sent.
struct WriteCase {
    method: &'static str,
    path: String,
    body: Option<Value>,
}

async fn write_case(app: &TestApp, op: Op, tenant: Uuid, who: &Identity) -> WriteCase {
    let fresh_event = || create(app, who, event_body(tenant, "Replay target", "public"));
    match op {
        Op::EventCreate => WriteCase {
            method: "POST",
            path: format!("{EVENTS}/"),
            body: Some(event_body(tenant, "Created once", "public")),
        },
        Op::EventUpdate => WriteCase {
            method: "PATCH",
            path: format!("{EVENTS}/{}", fresh_event().await),
            body: Some(json!({"title": "Changed once"})),
        },
        Op::EventCancel => WriteCase {
            method: "POST",
            path: format!("{EVENTS}/{}/cancel", fresh_event().await),
            body: Some(json!({"reason": "weather"})),
        },
        Op::RsvpSet => WriteCase {
            method: "POST",
            path: format!("{EVENTS}/{}/rsvp", fresh_event().await),
            body: Some(json!({"status": "going"})),
        },
        Op::RsvpClear => {
            let id = fresh_event().await;
            nats(
                app,
                "rsvp.set",
                who,
                json!({"eventId": id, "status": "going"}),
            )
            .await;
            WriteCase {
                method: "DELETE",
                path: format!("{EVENTS}/{id}/rsvp"),
                body: None,
            }
        }
        Op::AttendanceMark => WriteCase {
            method: "POST",
            path: format!("{EVENTS}/{}/attendance", fresh_event().await),
            body: Some(json!({"userId": Uuid::new_v4().to_string()})),
        },
        Op::DsarErase => {
            let subject = Uuid::new_v4();
            let id = fresh_event().await;
            nats(
                app,
                "rsvp.set",
                &identity(tenant, subject),
                json!({"eventId": id, "status": "going"}),
            )
            .await;
            WriteCase {
                method: "POST",
                path: format!("{EVENTS}/internal/dsar/users/{subject}/erase"),
                body: None,
            }
        }
        Op::AdminRolesGrant => WriteCase {
            method: "POST",
            path: format!("{EVENTS}/admin/role-bindings"),
            body: Some(json!({"userId": Uuid::new_v4().to_string(), "role": "organizer"})),
        },
        Op::AdminRolesRevoke => {
            let user = Uuid::new_v4().to_string();
            nats(
                app,
                "admin.roles.grant",
                who,
                json!({"userId": user, "role": "organizer"}),
            )
            .await;
            WriteCase {
                method: "DELETE",
                path: format!("{EVENTS}/admin/role-bindings"),
                body: Some(json!({"userId": user, "role": "organizer"})),
            }
        }
        Op::MembershipAdd => WriteCase {
            method: "POST",
            path: format!("{EVENTS}/admin/memberships"),
            body: Some(json!({"userId": Uuid::new_v4().to_string(),
                              "scopeType": "COMMUNITY", "scopeId": "c-replay"})),
        },
        Op::MembershipRemove => {
            let user = Uuid::new_v4().to_string();
            let body = json!({"userId": user, "scopeType": "TEAM", "scopeId": "t-replay"});
            nats(app, "membership.add", who, body.clone()).await;
            WriteCase {
                method: "DELETE",
                path: format!("{EVENTS}/admin/memberships"),
                body: Some(body),
            }
        }
        Op::RsvpApprove | Op::RsvpDecline => {
            let mut body = event_body(tenant, "Replay target", "public");
            body["rsvpApproval"] = json!(op == Op::RsvpApprove);
            let id = create(app, who, body).await;
            let user = Uuid::new_v4();
            nats(
                app,
                "rsvp.set",
                &identity(tenant, user),
                json!({"eventId": id, "status": "going"}),
            )
            .await;
            let verb = if op == Op::RsvpApprove {
                "approve"
            } else {
                "decline"
            };
            WriteCase {
                method: "POST",
                path: format!("{EVENTS}/{id}/rsvps/{user}/{verb}"),
                body: None,
            }
        }
        Op::FeedCreate => WriteCase {
            method: "POST",
            path: format!("{EVENTS}/feeds"),
            body: Some(json!({"myRsvp": "going"})),
        },
        Op::FeedRevoke => {
            let feed = nats(app, "feed.create", who, json!({})).await;
            WriteCase {
                method: "DELETE",
                path: format!("{EVENTS}/feeds/{}", feed["id"].as_str().expect("feed id")),
                body: None,
            }
        }
        Op::EventImport => WriteCase {
            method: "POST",
            path: format!("{EVENTS}/import?scopeType=TENANT&scopeId={tenant}&visibility=public"),
            body: Some(Value::String(format!(
                "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:{}\r\n\
                 DTSTART:20300110T180000Z\r\nDTEND:20300110T190000Z\r\nSUMMARY:Imported once\r\n\
                 END:VEVENT\r\nEND:VCALENDAR\r\n",
                Uuid::new_v4()
            ))),
        },
        other => panic!(
            "{} changes state: give it a replay case here, so that the test proves a replay of it is refused",
            other.name()
        ),
    }
}

/// Every state-changing operation, signed with v2 and with v1, is refused
/// when the same signed request reaches another instance, and the replay
/// changes nothing.
#[tokio::test]
async fn every_write_replayed_to_another_instance_is_refused_and_changes_nothing() {
    let a = TestApp::spawn().await;
    let b = a.spawn_sibling(|_| {}).await;
    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    let writes: Vec<Op> = Op::ALL.into_iter().filter(|op| op.is_write()).collect();
    assert!(writes.len() >= 9, "{writes:?}");
    for version in [2u8, 1] {
        for op in &writes {
            let case = write_case(&a, *op, tenant, &boss).await;
            let captured = capture(
                case.method,
                &case.path,
                &boss,
                case.body.map(|b| match b {
                    // A calendar goes as it is, not as a JSON string.
                    Value::String(text) => text.into_bytes(),
                    other => other.to_string().into_bytes(),
                }),
                version,
            );
            let first = a.send(&captured).await;
            assert!(
                first.status < 300,
                "v{version} {}: the first request must succeed: {} {}",
                op.name(),
                first.status,
                first.text
            );
            let before = fingerprint(&a).await;
            let what = format!("v{version} {} replayed to another instance", op.name());
            assert_replayed(&b.send(&captured).await, &what);
            assert_replayed(
                &a.send(&captured).await,
                &format!("{what}, then to the first"),
            );
            assert_eq!(fingerprint(&a).await, before, "{what} changed something");
        }
    }
}

/// v1 signs neither the tenant nor the user: a captured erase replayed with
/// another tenant's header must not erase the user there.
#[tokio::test]
async fn a_v1_erase_replayed_with_another_tenant_is_refused() {
    let a = TestApp::spawn().await;
    let b = a.spawn_sibling(|_| {}).await;
    let (t1, t2) = (Uuid::new_v4(), Uuid::new_v4());
    let subject = Uuid::new_v4();
    for tenant in [t1, t2] {
        let id = create(
            &a,
            &admin(tenant),
            event_body(tenant, "Game night", "public"),
        )
        .await;
        nats(
            &a,
            "rsvp.set",
            &identity(tenant, subject),
            json!({"eventId": id, "status": "going"}),
        )
        .await;
    }
    let who = identity(t1, subject);
    let erase = capture(
        "POST",
        &format!("{EVENTS}/internal/dsar/users/{subject}/erase"),
        &who,
        None,
        1,
    );
    let first = a.send(&erase).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let replay = erase.with_header("X-Tenant-Id", &t2.to_string());
    assert_replayed(
        &b.send(&replay).await,
        "v1 erase replayed into another tenant",
    );
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_rsvps WHERE tenant_id = $1 AND user_id = $2",
    )
    .bind(t2)
    .bind(subject)
    .fetch_one(&a.db)
    .await
    .expect("count");
    assert_eq!(left, 1, "the user's RSVP in the other tenant was erased");
}

/// A v2 grant captured before a revoke gives the role back when replayed.
#[tokio::test]
async fn a_grant_replayed_after_a_revoke_does_not_give_the_role_back() {
    let a = TestApp::spawn().await;
    let b = a.spawn_sibling(|_| {}).await;
    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    let user = Uuid::new_v4().to_string();
    let body = json!({"userId": user, "role": "organizer"});
    let grant = capture(
        "POST",
        &format!("{EVENTS}/admin/role-bindings"),
        &boss,
        Some(body.to_string().into_bytes()),
        2,
    );
    assert_eq!(a.send(&grant).await.status, 200);
    nats(&a, "admin.roles.revoke", &boss, body).await;
    assert_replayed(&b.send(&grant).await, "grant replayed after a revoke");
    let bindings: i64 = sqlx::query_scalar("SELECT count(*) FROM role_bindings WHERE user_id = $1")
        .bind(Uuid::parse_str(&user).expect("uuid"))
        .fetch_one(&a.db)
        .await
        .expect("count");
    assert_eq!(bindings, 0);
}

/// v1 binds no identity: a member's captured list replayed elsewhere as a
/// system admin of another tenant must not read that tenant's events.
#[tokio::test]
async fn a_v1_read_replayed_with_a_forged_identity_is_refused_on_every_instance() {
    let a = TestApp::spawn().await;
    let b = a.spawn_sibling(|_| {}).await;
    let (t1, t2) = (Uuid::new_v4(), Uuid::new_v4());
    let secret_title = "Board meeting (private)";
    create(&a, &admin(t2), event_body(t2, secret_title, "private")).await;
    let public = create(&a, &admin(t1), event_body(t1, "Open game", "public")).await;
    let member = identity(t1, Uuid::new_v4());
    for path in [format!("{EVENTS}/?limit=50"), format!("{EVENTS}/{public}")] {
        let captured = capture("GET", &path, &member, None, 1);
        let first = a.send(&captured).await;
        assert_eq!(first.status, 200, "{}", first.text);
        let forged = captured
            .with_header("X-Tenant-Id", &t2.to_string())
            .with_header("X-User-Id", &Uuid::new_v4().to_string())
            .with_header("X-Master-Flags", r#"{"system_admin":true}"#);
        let replay = b.send(&forged).await;
        assert!(
            !replay.text.contains(secret_title),
            "another tenant's private event leaked: {}",
            replay.text
        );
        assert_replayed(
            &replay,
            &format!("forged v1 GET {path} on another instance"),
        );
        assert_replayed(&a.send(&forged).await, &format!("forged v1 GET {path}"));
    }
}

/// A v1 write refused where it was first sent (here: the caller may not
/// create in that tenant) claimed nothing in the group commit; replayed to
/// another instance with a forged identity it must still be refused.
#[tokio::test]
async fn a_refused_v1_write_replayed_with_a_forged_identity_is_refused_on_every_instance() {
    let a = TestApp::spawn().await;
    let b = a.spawn_sibling(|_| {}).await;
    let tenant = Uuid::new_v4();
    let member = identity(tenant, Uuid::new_v4());
    let body = event_body(tenant, "Forged by replay", "public");
    let captured = capture(
        "POST",
        &format!("{EVENTS}/"),
        &member,
        Some(body.to_string().into_bytes()),
        1,
    );
    let first = a.send(&captured).await;
    assert_eq!(
        first.status, 403,
        "a plain member may not create: {}",
        first.text
    );
    let before = fingerprint(&a).await;
    let forged = captured
        .with_header("X-User-Id", &Uuid::new_v4().to_string())
        .with_header("X-Master-Flags", r#"{"system_admin":true}"#);
    assert_replayed(
        &b.send(&forged).await,
        "refused v1 create replayed as a system admin on another instance",
    );
    assert_eq!(
        fingerprint(&a).await,
        before,
        "the replay changed something"
    );
}

/// The nil UUID stands for erased users: it is nobody, and no caller.
#[tokio::test]
async fn the_nil_user_is_not_a_caller_on_either_transport() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let nil = identity(tenant, Uuid::nil());
    let before = fingerprint(&app).await;
    for version in [1u8, 2] {
        for (method, path, body) in [
            ("GET", format!("{EVENTS}/"), None),
            (
                "POST",
                format!("{EVENTS}/"),
                Some(event_body(tenant, "As nobody", "private")),
            ),
        ] {
            let reply = app
                .send(&capture(
                    method,
                    &path,
                    &nil,
                    body.map(|b| b.to_string().into_bytes()),
                    version,
                ))
                .await;
            assert_eq!(
                (reply.status, reply.json()["error"]["code"].as_str()),
                (400, Some("INVALID_USER_ID")),
                "v{version} {method} {path}: {}",
                reply.text
            );
        }
    }
    for (op, body) in [
        ("event.list", json!({})),
        ("event.create", event_body(tenant, "As nobody", "private")),
    ] {
        let reply = app.client().call(op, &nil, &body).await.expect("reply");
        assert_eq!(
            (reply.status, reply.code.as_deref()),
            (400, Some("INVALID_USER_ID")),
            "{op}: {:?}",
            reply.body
        );
    }
    assert_eq!(fingerprint(&app).await, before);
}

async fn audit_rows_naming(app: &TestApp, user: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM audit_log
         WHERE actor_user_id = $1 OR target_id = $2 OR details::text LIKE '%' || $2 || '%'",
    )
    .bind(user)
    .bind(user.to_string())
    .fetch_one(&app.db)
    .await
    .expect("audit rows")
}

/// DSAR covers role bindings, memberships and the audit trail.
#[tokio::test]
async fn dsar_exports_and_erases_bindings_memberships_and_audit_entries() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let other_tenant = Uuid::new_v4();
    let subject = Uuid::new_v4();
    let boss = admin(tenant);
    // The subject holds a role, belongs to a community, acted as a system
    // admin (granting someone a role) and was granted a role: audit rows by
    // and about them.
    nats(
        &app,
        "admin.roles.grant",
        &boss,
        json!({"userId": subject.to_string(), "role": "organizer"}),
    )
    .await;
    app.join(tenant, subject, "COMMUNITY", "chess").await;
    app.join(other_tenant, subject, "COMMUNITY", "chess").await;
    let subject_admin = Identity {
        master_flags: Some(r#"{"system_admin":true}"#.into()),
        ..identity(tenant, subject)
    };
    nats(
        &app,
        "admin.roles.grant",
        &subject_admin,
        json!({"userId": Uuid::new_v4().to_string(), "role": "participant"}),
    )
    .await;
    assert!(audit_rows_naming(&app, subject).await >= 2);

    let export = nats(
        &app,
        "dsar.export",
        &identity(tenant, subject),
        json!({"userId": subject.to_string()}),
    )
    .await;
    let bindings = export["role_bindings"].as_array().expect("role_bindings");
    assert_eq!(bindings.len(), 1, "{export}");
    assert_eq!(bindings[0]["role"], "events.organizer");
    assert_eq!(bindings[0]["user_id"], subject.to_string());
    let memberships = export["memberships"].as_array().expect("memberships");
    assert_eq!(memberships.len(), 1, "only this tenant's: {export}");
    assert_eq!(memberships[0]["scope_type"], "COMMUNITY");
    assert_eq!(memberships[0]["scope_id"], "chess");
    assert_eq!(export["feed_tokens"], json!([]));

    let erased = nats(
        &app,
        "dsar.erase",
        &identity(tenant, subject),
        json!({"userId": subject.to_string()}),
    )
    .await;
    let counts = &erased["counts"];
    assert_eq!(counts["role_bindings_deleted"], 1, "{erased}");
    assert_eq!(counts["memberships_deleted"], 1, "{erased}");
    assert_eq!(counts["feed_tokens_deleted"], 0, "{erased}");
    assert!(
        counts["audit_entries_anonymized"].as_i64().unwrap_or(0) >= 2,
        "{erased}"
    );
    let left: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM role_bindings WHERE user_id = $1 AND tenant_id = $2),
                (SELECT count(*) FROM scope_memberships WHERE user_id = $1 AND tenant_id = $2)",
    )
    .bind(subject)
    .bind(tenant)
    .fetch_one(&app.db)
    .await
    .expect("left");
    assert_eq!(left, (0, 0));
    assert_eq!(
        audit_rows_naming(&app, subject).await,
        0,
        "audit rows still name the erased user"
    );
    let anonymized: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND (actor_user_id = $2 OR target_id = $3)",
    )
    .bind(tenant)
    .bind(Uuid::nil())
    .bind(Uuid::nil().to_string())
    .fetch_one(&app.db)
    .await
    .expect("anonymized");
    assert!(anonymized >= 2, "the audit rows are kept, anonymised");
    // The export and the erase are audited themselves, in the tenant.
    let dsar_actions: Vec<(String,)> = sqlx::query_as(
        "SELECT action FROM audit_log WHERE tenant_id = $1 AND action LIKE 'dsar.%' ORDER BY created_at, id",
    )
    .bind(tenant)
    .fetch_all(&app.db)
    .await
    .expect("dsar audit rows");
    assert_eq!(
        dsar_actions
            .iter()
            .map(|a| a.0.as_str())
            .collect::<Vec<_>>(),
        ["dsar.exported", "dsar.erased"]
    );
    // The other tenant's membership is not this erase's to delete.
    let elsewhere: i64 =
        sqlx::query_scalar("SELECT count(*) FROM scope_memberships WHERE user_id = $1")
            .bind(subject)
            .fetch_one(&app.db)
            .await
            .expect("count");
    assert_eq!(elsewhere, 1);
}

/// A suspended or banned caller learns why: 403 on events they could see
/// were they not blocked, 404 on those hidden from them anyway.
#[tokio::test]
async fn blocked_callers_get_403_on_events_they_could_see_and_404_on_hidden_ones() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let user = Uuid::new_v4();
    let boss = admin(tenant);
    let public = create(&app, &boss, event_body(tenant, "Open", "public")).await;
    let hidden = create(&app, &boss, event_body(tenant, "Board only", "private")).await;
    app.grant(
        tenant,
        user,
        "events.organizer",
        "TENANT",
        &tenant.to_string(),
    )
    .await;
    let own_private = create(
        &app,
        &identity(tenant, user),
        json!({"scopeType": "TENANT", "scopeId": tenant.to_string(), "title": "Mine",
               "visibility": "private", "startsAt": "2030-01-10T18:00:00Z", "endsAt": "2030-01-10T21:00:00Z"}),
    )
    .await;
    let before = fingerprint(&app).await;
    for flags in [
        r#"{"suspended":true}"#,
        r#"{"banned":true}"#,
        r#"{"status":"suspended"}"#,
    ] {
        let who = Identity {
            master_flags: Some(flags.into()),
            ..identity(tenant, user)
        };
        for (id, expected) in [
            (&public, (403, "FORBIDDEN")),
            (&own_private, (403, "FORBIDDEN")),
            (&hidden, (404, "NOT_FOUND")),
        ] {
            for (op, body) in [
                ("event.get", json!({ "id": id })),
                ("event.ics", json!({ "id": id })),
                ("event.update", json!({"id": id, "title": "Taken over"})),
                ("event.cancel", json!({ "id": id })),
                ("rsvp.set", json!({"eventId": id, "status": "going"})),
                ("rsvp.clear", json!({ "eventId": id })),
                ("rsvp.list", json!({ "eventId": id })),
                (
                    "attendance.mark",
                    json!({"eventId": id, "userId": Uuid::new_v4().to_string()}),
                ),
                ("attendance.list", json!({ "eventId": id })),
            ] {
                let reply = app.client().call(op, &who, &body).await.expect("reply");
                assert_eq!(
                    (reply.status, reply.code.as_deref().unwrap_or("")),
                    expected,
                    "{flags} {op} on {}: {:?}",
                    if id == &hidden {
                        "a hidden event"
                    } else {
                        "a visible event"
                    },
                    reply.body
                );
            }
            for path in [format!("{EVENTS}/{id}"), format!("{EVENTS}/{id}/ics")] {
                let http = app.bff("GET", &path, &who, None).await;
                assert_eq!(
                    http.status, expected.0,
                    "{flags} HTTP GET {path}: {}",
                    http.text
                );
            }
        }
        let http_list = app.bff("GET", &format!("{EVENTS}/"), &who, None).await;
        assert_eq!(
            http_list.status, 403,
            "{flags} HTTP list: {}",
            http_list.text
        );
        let list = app
            .client()
            .call("event.list", &who, &json!({}))
            .await
            .expect("reply");
        assert_eq!(
            (list.status, list.code.as_deref()),
            (403, Some("FORBIDDEN"))
        );
    }
    assert_eq!(
        fingerprint(&app).await,
        before,
        "a blocked caller changed something"
    );
}

/// Audit entries are written in the transaction of what they record: when
/// one cannot be written, the change does not happen, and a read that used
/// the admin bypass is not answered.
#[tokio::test]
async fn a_change_whose_audit_entry_cannot_be_written_does_not_happen() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    let id = create(&app, &boss, event_body(tenant, "Audited", "public")).await;
    let subject = Uuid::new_v4();
    nats(
        &app,
        "rsvp.set",
        &identity(tenant, subject),
        json!({"eventId": id, "status": "going"}),
    )
    .await;
    sqlx::query(
        "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS
         $$ BEGIN RAISE EXCEPTION 'audit log is read-only for this test'; END $$",
    )
    .execute(&app.db)
    .await
    .expect("function");
    sqlx::query(
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
    )
    .execute(&app.db)
    .await
    .expect("trigger");
    let before = fingerprint(&app).await;
    for (op, body) in [
        (
            "admin.roles.grant",
            json!({"userId": Uuid::new_v4().to_string(), "role": "organizer"}),
        ),
        ("dsar.erase", json!({"userId": subject.to_string()})),
        (
            "event.update",
            json!({"id": id, "title": "Changed by an admin"}),
        ),
        ("event.get", json!({ "id": id })),
    ] {
        let reply = app.client().call(op, &boss, &body).await.expect("reply");
        assert!(
            reply.status >= 500,
            "{op} succeeded although its audit entry could not be written: {} {:?}",
            reply.status,
            reply.body
        );
    }
    assert_eq!(fingerprint(&app).await, before);
}

/// An instance whose memory of accepted requests is full forgets none of
/// them: it checks requests in the shared bucket instead, so a replay is
/// refused however many requests came in between.
#[tokio::test]
async fn a_full_replay_memory_does_not_reopen_the_replay_window() {
    let app = TestApp::spawn_with(|s| s.replay_memory = Some("2".into())).await;
    let tenant = Uuid::new_v4();
    let member = identity(tenant, Uuid::new_v4());
    let mut sent = Vec::new();
    for n in 0..8 {
        let captured = capture(
            "GET",
            &format!("{EVENTS}/?limit={}", n + 1),
            &member,
            None,
            2,
        );
        let first = app.send(&captured).await;
        assert_eq!(first.status, 200, "{}", first.text);
        sent.push(captured);
    }
    for (n, captured) in sent.iter().enumerate() {
        assert_replayed(
            &app.send(captured).await,
            &format!("v2 read {n} after the memory filled"),
        );
    }
}
