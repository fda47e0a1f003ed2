//! Tenant administration in the embedded (`local`) mode: memberships
//! managed through the API, tenant admins (`events.admin`) whose powers
//! stop at their tenant and at `events.admin` itself, the audit log read
//! back, and capabilities that agree with what the operations then allow.
//! The `access` mode's side is in `admin_roles.rs` (its fake Access).

use serde_json::{Value, json};
use updspace_events::client::{CallReply, Identity};
use uuid::Uuid;

use crate::helpers::{TestApp, admin, identity};

async fn call(app: &TestApp, op: &str, who: &Identity, body: Value) -> CallReply {
    app.client()
        .call(op, who, &body)
        .await
        .unwrap_or_else(|e| panic!("{op}: no reply: {e}"))
}

async fn ok(app: &TestApp, op: &str, who: &Identity, body: Value) -> Value {
    let reply = call(app, op, who, body).await;
    assert!(reply.status < 300, "{op}: {} {}", reply.status, reply.body);
    reply.body
}

fn event(scope_type: &str, scope_id: &str, visibility: &str) -> Value {
    json!({
        "scopeType": scope_type, "scopeId": scope_id, "title": "Guild meeting",
        "visibility": visibility,
        "startsAt": "2031-03-01T18:00:00Z", "endsAt": "2031-03-01T20:00:00Z",
    })
}

/// A tenant admin made by a system admin through the API.
async fn tenant_admin(app: &TestApp, tenant: Uuid) -> Identity {
    let user = Uuid::new_v4();
    ok(
        app,
        "admin.roles.grant",
        &admin(tenant),
        json!({"userId": user.to_string(), "role": "admin"}),
    )
    .await;
    identity(tenant, user)
}

async fn audit_actions(app: &TestApp, tenant: Uuid, actor: Uuid) -> Vec<(String, Value)> {
    let rows: Vec<(String, Value)> = sqlx::query_as(
        "SELECT action, details FROM audit_log WHERE tenant_id = $1 AND actor_user_id = $2
         ORDER BY created_at",
    )
    .bind(tenant)
    .bind(actor)
    .fetch_all(&app.db)
    .await
    .expect("audit");
    rows
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&app.db)
        .await
        .expect("count")
}

#[tokio::test]
async fn a_membership_change_moves_visibility_at_once_on_every_instance() {
    let a = TestApp::spawn().await;
    let b = a.spawn_sibling(|_| {}).await;
    let tenant = Uuid::new_v4();
    let boss = tenant_admin(&a, tenant).await;
    let member = Uuid::new_v4();
    let reader = identity(tenant, member);
    let community = ok(
        &a,
        "event.create",
        &admin(tenant),
        event("COMMUNITY", "c-7", "community"),
    )
    .await;
    let team = ok(
        &a,
        "event.create",
        &admin(tenant),
        event("TEAM", "t-3", "team"),
    )
    .await;
    let ids = [community["id"].clone(), team["id"].clone()];
    let visible = |app: &TestApp| {
        let reader = reader.clone();
        let ids = ids.clone();
        let client = app.client();
        async move {
            let mut seen = Vec::new();
            for id in &ids {
                let reply = client
                    .call("event.get", &reader, &json!({"eventId": id}))
                    .await
                    .expect("reply");
                seen.push(reply.status);
            }
            let list = client
                .call("event.list", &reader, &json!({}))
                .await
                .expect("reply");
            seen.push(list.body["meta"]["total"].as_u64().unwrap_or(99) as u16);
            seen
        }
    };
    assert_eq!(visible(&a).await, [404, 404, 0]);
    assert_eq!(visible(&b).await, [404, 404, 0]);

    let added = ok(
        &a,
        "membership.add",
        &boss,
        json!({"userId": member.to_string(), "scopeType": "COMMUNITY", "scopeId": "c-7"}),
    )
    .await;
    assert_eq!(added["created"], true, "{added}");
    assert_eq!(added["userId"], member.to_string());
    assert_eq!(added["scopeType"], "COMMUNITY");
    assert_eq!(added["createdBy"], boss.user_id);
    assert_eq!(visible(&a).await, [200, 404, 1]);
    assert_eq!(visible(&b).await, [200, 404, 1]);

    // Over HTTP too, and the second add of the same membership is a no-op.
    let http = a
        .bff(
            "POST",
            "/api/v1/events/admin/memberships",
            &boss,
            Some(json!({"user_id": member.to_string(), "scope_type": "TEAM", "scope_id": "t-3"})),
        )
        .await;
    assert_eq!(http.status, 200, "{}", http.text);
    assert_eq!(visible(&b).await, [200, 200, 2]);
    let again = ok(
        &b,
        "membership.add",
        &boss,
        json!({"userId": member.to_string(), "scopeType": "TEAM", "scopeId": "t-3"}),
    )
    .await;
    assert_eq!(again["created"], false, "{again}");
    assert_eq!(count(&a, "SELECT count(*) FROM scope_memberships").await, 2);

    let listed = ok(
        &a,
        "membership.list",
        &boss,
        json!({"userId": member.to_string()}),
    )
    .await;
    assert_eq!(listed["meta"]["total"], 2, "{listed}");
    let removed = a
        .bff(
            "DELETE",
            &format!("/api/v1/admin/memberships?scopeType=COMMUNITY&scopeId=c-7&userId={member}"),
            &boss,
            None,
        )
        .await;
    assert_eq!(removed.json()["removed"], 1, "{}", removed.text);
    assert_eq!(visible(&a).await, [404, 200, 1]);
    assert_eq!(visible(&b).await, [404, 200, 1]);
    let none = ok(
        &a,
        "membership.remove",
        &boss,
        json!({"userId": member.to_string(), "scopeType": "COMMUNITY", "scopeId": "c-7"}),
    )
    .await;
    assert_eq!(none["removed"], 0);

    let actor = Uuid::parse_str(&boss.user_id).expect("uuid");
    let actions: Vec<String> = audit_actions(&a, tenant, actor)
        .await
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(
        actions,
        [
            "membership.added",
            "membership.added",
            "membership.added",
            "membership.removed",
            "membership.removed"
        ]
    );
}

#[tokio::test]
async fn a_tenant_admins_powers_stop_at_the_tenant_and_at_events_admin() {
    let app = TestApp::spawn().await;
    let (t1, t2) = (Uuid::new_v4(), Uuid::new_v4());
    let boss = tenant_admin(&app, t1).await;
    let user = Uuid::new_v4().to_string();

    // Inside the tenant: roles below events.admin, memberships, the log.
    let granted = ok(
        &app,
        "admin.roles.grant",
        &boss,
        json!({"userId": user, "role": "organizer", "scopeType": "COMMUNITY", "scopeId": "c1"}),
    )
    .await;
    assert_eq!(granted["created"], true);
    let organizer = identity(t1, Uuid::parse_str(&user).expect("uuid"));
    assert_eq!(
        call(
            &app,
            "event.create",
            &organizer,
            event("COMMUNITY", "c1", "public")
        )
        .await
        .status,
        200
    );
    ok(&app, "admin.audit.list", &boss, json!({})).await;

    // events.admin is for system admins to hand out and take back.
    let bindings_before = count(&app, "SELECT count(*) FROM role_bindings").await;
    for (op, body) in [
        (
            "admin.roles.grant",
            json!({"userId": user, "role": "admin"}),
        ),
        (
            "admin.roles.revoke",
            json!({"userId": boss.user_id, "role": "events.admin"}),
        ),
    ] {
        let reply = call(&app, op, &boss, body).await;
        assert_eq!(reply.status, 403, "{op}: {}", reply.body);
        assert_eq!(
            reply.body["error"]["message"],
            "Only a system admin may grant or revoke events.admin"
        );
    }
    let own: (Uuid,) = sqlx::query_as(
        "SELECT id FROM role_bindings WHERE tenant_id = $1 AND user_id = $2 AND role = 'events.admin'",
    )
    .bind(t1)
    .bind(Uuid::parse_str(&boss.user_id).expect("uuid"))
    .fetch_one(&app.db)
    .await
    .expect("the admin binding");
    let by_id = call(
        &app,
        "admin.roles.revoke",
        &boss,
        json!({"bindingId": own.0.to_string()}),
    )
    .await;
    assert_eq!(by_id.status, 403, "{}", by_id.body);
    assert_eq!(
        count(&app, "SELECT count(*) FROM role_bindings").await,
        bindings_before
    );
    // Not at a community either, even by a system admin: it is a tenant role.
    let scoped = call(
        &app,
        "admin.roles.grant",
        &admin(t1),
        json!({"userId": user, "role": "admin", "scopeType": "COMMUNITY", "scopeId": "c1"}),
    )
    .await;
    assert_eq!(scoped.status, 422, "{}", scoped.body);

    // Another tenant: nothing.
    let elsewhere = Identity {
        tenant_id: t2.to_string(),
        ..boss.clone()
    };
    for (op, body) in [
        ("admin.roles.list", json!({})),
        (
            "admin.roles.grant",
            json!({"userId": user, "role": "organizer"}),
        ),
        (
            "membership.add",
            json!({"userId": user, "scopeType": "TEAM", "scopeId": "t1"}),
        ),
        ("membership.list", json!({})),
        ("admin.audit.list", json!({})),
    ] {
        let reply = call(&app, op, &elsewhere, body).await;
        assert_eq!(reply.status, 403, "{op}: {}", reply.body);
        assert_eq!(reply.body["error"]["message"], "Tenant admin required");
    }
    let other_log = call(
        &app,
        "admin.audit.list",
        &boss,
        json!({"tenantId": t2.to_string()}),
    )
    .await;
    assert_eq!(other_log.status, 403, "{}", other_log.body);
    assert_eq!(
        count(&app, "SELECT count(*) FROM role_bindings").await,
        bindings_before
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM scope_memberships").await,
        0
    );

    // A system admin reads any tenant's log by naming it.
    ok(
        &app,
        "admin.roles.grant",
        &admin(t2),
        json!({"userId": user, "role": "participant"}),
    )
    .await;
    let log = ok(
        &app,
        "admin.audit.list",
        &admin(t1),
        json!({"tenantId": t2.to_string(), "action": "role.granted"}),
    )
    .await;
    assert_eq!(log["meta"]["total"], 1, "{log}");
    assert_eq!(log["items"][0]["tenantId"], t2.to_string());
    let noted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = 'system_admin.bypass'
           AND target_type = 'audit_log' AND target_id = $2",
    )
    .bind(t1)
    .bind(t2.to_string())
    .fetch_one(&app.db)
    .await
    .expect("bypass entry");
    assert_eq!(noted, 1, "reading another tenant's log is recorded");

    // Every action carries its actor.
    let actions = audit_actions(&app, t1, Uuid::parse_str(&boss.user_id).expect("uuid")).await;
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0].0, "role.granted");
    assert_eq!(actions[0].1["role"], "events.organizer");
}

#[tokio::test]
async fn the_audit_log_reads_newest_first_with_filters_and_pages() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = tenant_admin(&app, tenant).await;
    let users: Vec<String> = (0..5).map(|_| Uuid::new_v4().to_string()).collect();
    for u in &users {
        ok(
            &app,
            "membership.add",
            &boss,
            json!({"userId": u, "scopeType": "TEAM", "scopeId": "t9"}),
        )
        .await;
    }
    let middle: (chrono::DateTime<chrono::Utc>,) =
        sqlx::query_as("SELECT created_at FROM audit_log WHERE target_id = $1")
            .bind(&users[2])
            .fetch_one(&app.db)
            .await
            .expect("entry");
    // The grant that made the admin, then five additions.
    let all = ok(&app, "admin.audit.list", &boss, json!({})).await;
    assert_eq!(all["meta"]["total"], 6, "{all}");
    let items = all["items"].as_array().expect("items");
    let targets: Vec<&str> = items
        .iter()
        .map(|i| i["targetId"].as_str().unwrap_or(""))
        .collect();
    let mut newest_first: Vec<&str> = users.iter().rev().map(String::as_str).collect();
    newest_first.push(boss.user_id.as_str());
    assert_eq!(targets, newest_first);
    let first = &all["items"][0];
    assert_eq!(first["action"], "membership.added");
    assert_eq!(first["actorUserId"], boss.user_id);
    assert_eq!(first["tenantId"], tenant.to_string());
    assert_eq!(first["details"]["scopeId"], "t9");

    let page = ok(
        &app,
        "admin.audit.list",
        &boss,
        json!({"limit": 2, "offset": 1}),
    )
    .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["items"][0]["targetId"], users[3]);
    assert_eq!(page["meta"]["total"], 6);
    let past = ok(&app, "admin.audit.list", &boss, json!({"offset": 50})).await;
    assert_eq!(past["meta"]["total"], 6);
    assert_eq!(past["items"], json!([]));
    let granted = ok(
        &app,
        "admin.audit.list",
        &boss,
        json!({"action": "role.granted"}),
    )
    .await;
    assert_eq!(granted["meta"]["total"], 1);
    let one = ok(
        &app,
        "admin.audit.list",
        &boss,
        json!({"targetId": users[1]}),
    )
    .await;
    assert_eq!(one["meta"]["total"], 1);
    let by_admin = ok(
        &app,
        "admin.audit.list",
        &boss,
        json!({"actorUserId": boss.user_id}),
    )
    .await;
    assert_eq!(by_admin["meta"]["total"], 5);
    let at = middle
        .0
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let since = ok(&app, "admin.audit.list", &boss, json!({"from": at})).await;
    assert_eq!(since["meta"]["total"], 3, "{since}");
    let before = app
        .bff(
            "GET",
            &format!(
                "/api/v1/events/admin/audit?to={}&limit=10",
                at.replace('+', "%2B")
            ),
            &boss,
            None,
        )
        .await;
    assert_eq!(before.status, 200, "{}", before.text);
    assert_eq!(before.json()["meta"]["total"], 3);

    // Hostile filters: 422 naming the field.
    for (body, field) in [
        (json!({"limit": 100_000}), "limit"),
        (json!({"offset": -1}), "offset"),
        (json!({"actorUserId": "nobody"}), "actorUserId"),
        (json!({"from": "yesterday"}), "from"),
        (json!({"from": 1_700_000_000}), "from"),
        (
            json!({"from": "2031-01-02T00:00:00Z", "to": "2031-01-01T00:00:00Z"}),
            "to",
        ),
        (json!({"action": "x\u{0}y"}), "action"),
        (json!({"targetId": "t".repeat(256)}), "targetId"),
        (json!({"tenantId": "acme"}), "tenantId"),
    ] {
        let reply = call(&app, "admin.audit.list", &boss, body.clone()).await;
        assert_eq!(reply.status, 422, "{body}: {}", reply.body);
        assert!(
            reply.body["error"]["details"]["fields"]
                .get(field)
                .is_some(),
            "{body}: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn hostile_membership_input_is_refused_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let boss = tenant_admin(&app, tenant).await;
    let user = Uuid::new_v4().to_string();
    let audit_before = count(&app, "SELECT count(*) FROM audit_log").await;
    for (body, field) in [
        (
            json!({"userId": user, "scopeType": "TENANT", "scopeId": tenant.to_string()}),
            "scopeType",
        ),
        (
            json!({"userId": user, "scopeType": "GUILD", "scopeId": "g"}),
            "scopeType",
        ),
        (json!({"userId": user, "scopeType": "TEAM"}), "scopeId"),
        (
            json!({"userId": user, "scopeType": "TEAM", "scopeId": "a\u{7}b"}),
            "scopeId",
        ),
        (
            json!({"userId": user, "scopeType": "TEAM", "scopeId": "x".repeat(129)}),
            "scopeId",
        ),
        (
            json!({"userId": user, "scopeType": "TEAM", "scopeId": "  "}),
            "scopeId",
        ),
        (json!({"scopeType": "TEAM", "scopeId": "t"}), "userId"),
        (
            json!({"userId": "42", "scopeType": "TEAM", "scopeId": "t"}),
            "userId",
        ),
        (
            json!({"userId": Uuid::nil().to_string(), "scopeType": "TEAM", "scopeId": "t"}),
            "userId",
        ),
    ] {
        for op in ["membership.add", "membership.remove"] {
            let reply = call(&app, op, &boss, body.clone()).await;
            assert_eq!(reply.status, 422, "{op} {body}: {}", reply.body);
            assert!(
                reply.body["error"]["details"]["fields"]
                    .get(field)
                    .is_some(),
                "{op} {body}: {}",
                reply.body
            );
        }
    }
    for body in [
        json!({"limit": 251}),
        json!({"limit": 0}),
        json!({"scopeType": "TENANT"}),
    ] {
        let reply = call(&app, "membership.list", &boss, body.clone()).await;
        assert_eq!(reply.status, 422, "{body}: {}", reply.body);
    }
    let empty = call(&app, "membership.add", &boss, Value::Null).await;
    assert_eq!(empty.status, 400, "{}", empty.body);
    let no_body = app
        .bff("POST", "/api/v1/events/admin/memberships", &boss, None)
        .await;
    assert_eq!(no_body.status, 400, "{}", no_body.text);
    // A plain member may not even learn the schema.
    let stranger = call(
        &app,
        "membership.add",
        &identity(tenant, Uuid::new_v4()),
        json!({"scopeType": 7}),
    )
    .await;
    assert_eq!(stranger.status, 403, "{}", stranger.body);
    assert_eq!(
        count(&app, "SELECT count(*) FROM scope_memberships").await,
        0
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM audit_log").await,
        audit_before
    );

    // A UUID scope id in any spelling is one scope.
    let scope = Uuid::new_v4();
    let upper = ok(
        &app,
        "membership.add",
        &boss,
        json!({"userId": user.to_uppercase(), "scopeType": "COMMUNITY", "scopeId": scope.to_string().to_uppercase()}),
    )
    .await;
    assert_eq!(upper["scopeId"], scope.to_string());
    assert_eq!(upper["userId"], user);
    let lower = ok(
        &app,
        "membership.add",
        &boss,
        json!({"userId": user, "scopeType": "COMMUNITY", "scopeId": scope.to_string()}),
    )
    .await;
    assert_eq!(lower["created"], false);
}

/// The permissions `me.capabilities` reports, then each tried for real.
/// Asks the caller's capabilities at `scope`, then tries each operation
/// they speak of and compares. `admin_probe` is an operation that needs
/// `events.admin.manage` in the app's mode.
pub(crate) async fn capabilities_agree(
    app: &TestApp,
    tenant: Uuid,
    who: &Identity,
    scope: (&str, &str),
    admin_probe: &str,
) {
    let (scope_type, scope_id) = scope;
    let asked = if scope_type == "TENANT" {
        json!({})
    } else {
        json!({"scopeType": scope_type, "scopeId": scope_id})
    };
    let caps = ok(app, "me.capabilities", who, asked).await;
    let may = |key: &str| {
        caps["permissions"][key]
            .as_bool()
            .unwrap_or_else(|| panic!("{key} missing in {caps}"))
    };
    let (create_type, create_id) = if scope_type == "TENANT" {
        ("COMMUNITY", "anywhere")
    } else {
        scope
    };
    // An event at the scope, made by a system admin, to read and manage.
    let target = ok(
        app,
        "event.create",
        &admin(tenant),
        event(create_type, create_id, "public"),
    )
    .await;
    let id = target["id"].clone();
    let tried = [
        (
            "events.event.read",
            call(app, "event.get", who, json!({"eventId": id}))
                .await
                .status,
        ),
        (
            "events.rsvp.set",
            call(
                app,
                "rsvp.set",
                who,
                json!({"eventId": id, "status": "going"}),
            )
            .await
            .status,
        ),
        (
            "events.event.create",
            call(
                app,
                "event.create",
                who,
                event(create_type, create_id, "public"),
            )
            .await
            .status,
        ),
        (
            "events.event.manage",
            call(
                app,
                "event.update",
                who,
                json!({"eventId": id, "title": "Renamed"}),
            )
            .await
            .status,
        ),
        (
            "events.attendance.mark",
            call(
                app,
                "attendance.mark",
                who,
                json!({"eventId": id, "userId": Uuid::new_v4().to_string()}),
            )
            .await
            .status,
        ),
        (
            "events.admin.manage",
            call(app, admin_probe, who, json!({})).await.status,
        ),
    ];
    for (key, status) in tried {
        assert!(status == 200 || status == 403, "{key}: {status}");
        assert_eq!(
            may(key),
            status == 200,
            "{} at {scope_type}:{scope_id}: capabilities say {key}={}, the operation answered {status}; {caps}",
            who.user_id,
            may(key)
        );
    }
    assert_eq!(
        caps["tenantAdmin"],
        caps["permissions"]["events.admin.manage"]
    );
}

#[tokio::test]
async fn capabilities_agree_with_what_the_operations_then_allow() {
    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let member = identity(tenant, Uuid::new_v4());
    let organizer = identity(tenant, Uuid::new_v4());
    let community_organizer = identity(tenant, Uuid::new_v4());
    let boss = tenant_admin(&app, tenant).await;
    let suspended = Identity {
        master_flags: Some(r#"{"suspended":true}"#.into()),
        ..identity(tenant, Uuid::new_v4())
    };
    for (who, role, scope_type, scope_id) in [
        (&organizer, "organizer", "TENANT", tenant.to_string()),
        (
            &community_organizer,
            "organizer",
            "COMMUNITY",
            "c5".to_string(),
        ),
    ] {
        ok(
            &app,
            "admin.roles.grant",
            &admin(tenant),
            json!({"userId": who.user_id, "role": role, "scopeType": scope_type, "scopeId": scope_id}),
        )
        .await;
    }
    let system = admin(tenant);
    let tenant_scope = tenant.to_string();
    for who in [
        &member,
        &organizer,
        &community_organizer,
        &boss,
        &system,
        &suspended,
    ] {
        for scope in [
            ("TENANT", tenant_scope.as_str()),
            ("COMMUNITY", "c5"),
            ("TEAM", "t8"),
        ] {
            capabilities_agree(&app, tenant, who, scope, "membership.list").await;
        }
    }

    // What the reply says of the caller.
    let caps = ok(
        &app,
        "me.capabilities",
        &community_organizer,
        json!({"scopeType": "COMMUNITY", "scopeId": "c5"}),
    )
    .await;
    assert_eq!(
        caps["roles"],
        json!(["member", "events.organizer"]),
        "{caps}"
    );
    assert_eq!(
        caps["scope"],
        json!({"scopeType": "COMMUNITY", "scopeId": "c5"})
    );
    assert_eq!(caps["userId"], community_organizer.user_id);
    assert_eq!(
        caps["flags"],
        json!({"systemAdmin": false, "suspended": false, "banned": false})
    );
    let elsewhere = ok(
        &app,
        "me.capabilities",
        &community_organizer,
        json!({"scopeType": "TEAM", "scopeId": "t8"}),
    )
    .await;
    assert_eq!(elsewhere["roles"], json!(["member"]));
    let blocked = ok(&app, "me.capabilities", &suspended, json!({})).await;
    assert_eq!(blocked["flags"]["suspended"], true);
    assert!(
        blocked["permissions"]
            .as_object()
            .expect("map")
            .values()
            .all(|v| v == false),
        "{blocked}"
    );
    let http = app
        .bff(
            "GET",
            "/api/v1/events/me/capabilities?scopeType=COMMUNITY&scopeId=c5",
            &community_organizer,
            None,
        )
        .await;
    assert_eq!(http.status, 200, "{}", http.text);
    assert_eq!(http.json()["permissions"], caps["permissions"]);
    for (query, status) in [
        ("?scopeType=COMMUNITY", 422),
        ("?scopeType=GUILD&scopeId=x", 422),
    ] {
        let reply = app
            .bff(
                "GET",
                &format!("/api/v1/events/me/capabilities{query}"),
                &member,
                None,
            )
            .await;
        assert_eq!(reply.status, status, "{query}: {}", reply.text);
    }
}
