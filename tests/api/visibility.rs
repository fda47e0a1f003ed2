//! Visibility (the rules are in `docs/authorization.md`): who sees which
//! event through get, list, ics, rsvp.set and attendance.mark; hidden events
//! are indistinguishable from absent ones; lists are filtered in SQL so
//! pages are full and totals count only visible events.
//!
//! The previous service got these wrong: community and team visibility was
//! not enforced, RSVP and attendance skipped it, ids were compared as raw
//! strings, hidden events leaked (403 before 404, totals counting them,
//! private events hidden even from admins) and visibility was filtered after
//! paging (short pages, wrong totals).

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use updspace_events::client::{CallReply, EventsClient, Identity};
use uuid::Uuid;

use crate::helpers::{TestApp, admin, identity};

const ORGANIZER: &str = "events.organizer";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vis {
    Public,
    Community,
    Team,
    Private,
}

impl Vis {
    const ALL: [Vis; 4] = [Vis::Public, Vis::Community, Vis::Team, Vis::Private];

    fn index(self) -> usize {
        self as usize
    }
}

/// Creates an event and returns its id (panics with the reply otherwise).
async fn create(
    client: &EventsClient,
    who: &Identity,
    scope_type: &str,
    scope_id: &str,
    visibility: &str,
    title: &str,
    minute: u32,
) -> String {
    let reply = client
        .call(
            "event.create",
            who,
            &json!({
                "scopeType": scope_type, "scopeId": scope_id, "title": title,
                "visibility": visibility,
                "startsAt": format!("2030-01-10T{:02}:{:02}:00Z", 10 + minute / 60, minute % 60),
                "endsAt": "2030-01-11T12:00:00Z",
            }),
        )
        .await
        .expect("create reply");
    assert_eq!(
        reply.status, 200,
        "create {visibility} in {scope_type}/{scope_id}: {:?}",
        reply.body
    );
    reply.body["id"].as_str().expect("id").to_string()
}

async fn call(
    client: &EventsClient,
    op: &str,
    who: &Identity,
    body: &Value,
) -> (CallReply, String) {
    let rid = Uuid::new_v4().to_string();
    let reply = client
        .call_as(op, who, body, &rid)
        .await
        .unwrap_or_else(|e| panic!("{op}: no reply: {e}"));
    (reply, rid)
}

/// The error envelope without its request id (checked separately), and the
/// NATS status and code headers: what a caller can compare.
fn error_shape(reply: &CallReply, rid: &str) -> Result<(u16, Option<String>, Value), String> {
    let mut body = reply.body.clone();
    let Some(error) = body.get_mut("error").and_then(Value::as_object_mut) else {
        return Err(format!(
            "not an error envelope: {} {:?}",
            reply.status, reply.body
        ));
    };
    let echoed = error.remove("request_id");
    if echoed != Some(json!(rid)) {
        return Err(format!("envelope request_id {echoed:?}, sent {rid}"));
    }
    Ok((reply.status, reply.code.clone(), body))
}

fn body_for(op: &str, id: &str, target_user: Uuid) -> Value {
    match op {
        "event.get" | "event.ics" | "event.cancel" => json!({"id": id}),
        // A no-op patch for absent events (the matrix sends the current title).
        "event.update" => json!({"id": id, "title": "unchanged"}),
        "rsvp.set" => json!({"eventId": id, "status": "interested"}),
        "rsvp.clear" | "rsvp.list" | "attendance.list" => json!({"eventId": id}),
        "attendance.mark" => json!({"eventId": id, "userId": target_user.to_string()}),
        other => panic!("no body for {other}"),
    }
}

struct Viewer {
    label: &'static str,
    who: Identity,
    /// Holds `events.organizer` at the scope of every event.
    organizer: bool,
    /// Expected visibility of [public, community, team, private]; for a
    /// blocked viewer, what they would see were they not blocked.
    sees: [bool; 4],
    /// Suspended callers are refused the list itself.
    list_forbidden: bool,
    /// Suspended or banned: 403 on what they would see, 404 on the rest.
    blocked: bool,
}

/// Where a test keeps roles and memberships: the local tables (`local`
/// mode) or the fake Access and Portal (`access` mode, see
/// `access_mode.rs`). The visibility matrix runs against either.
pub(crate) trait Authorities {
    /// Binds `role` (e.g. `events.organizer`) to `user` at a scope.
    async fn grant(&self, tenant: Uuid, user: Uuid, role: &str, scope_type: &str, scope_id: &str);
    /// Makes `user` a member of a COMMUNITY or TEAM.
    async fn join(&self, tenant: Uuid, user: Uuid, scope_type: &str, scope_id: &str);
}

impl Authorities for TestApp {
    async fn grant(&self, tenant: Uuid, user: Uuid, role: &str, scope_type: &str, scope_id: &str) {
        TestApp::grant(self, tenant, user, role, scope_type, scope_id).await;
    }

    async fn join(&self, tenant: Uuid, user: Uuid, scope_type: &str, scope_id: &str) {
        TestApp::join(self, tenant, user, scope_type, scope_id).await;
    }
}

#[tokio::test]
async fn visibility_matrix() {
    let app = TestApp::spawn().await;
    run_visibility_matrix(&app, &app).await;
}

/// The same matrix on an instance that knows it is alone, so its lists come
/// from the list read model instead of Postgres.
#[tokio::test]
async fn visibility_matrix_from_the_list_read_model() {
    let app = TestApp::spawn_trusting_its_cache().await;
    run_visibility_matrix(&app, &app).await;
    assert!(lists_from(&app, "memory").await > 0.0);
}

/// `events_lists_total` of one source.
pub(crate) async fn lists_from(app: &TestApp, source: &str) -> f64 {
    let metrics = app.metrics_text().await;
    let prefix = format!("events_lists_total{{source=\"{source}\"}} ");
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix)?.parse::<f64>().ok())
        .sum()
}

/// Every (viewer × visibility) cell: get, list, ics, rsvp.set and
/// attendance.mark. Every failing cell is reported, not only the first.
/// Shared by both authorization modes.
pub(crate) async fn run_visibility_matrix(app: &TestApp, authorities: &impl Authorities) {
    let client = app.client();
    let tenant = Uuid::new_v4();
    let t = tenant.to_string();

    // A TENANT binding covers every scope of the tenant, COMMUNITY and TEAM
    // included: it is all the creator needs.
    let creator = Uuid::new_v4();
    authorities
        .grant(tenant, creator, ORGANIZER, "TENANT", &t)
        .await;
    let creator_id = identity(tenant, creator);
    let mut ids = Vec::new();
    for (vis, scope_type, scope_id, visibility) in [
        (Vis::Public, "TENANT", t.as_str(), "public"),
        (Vis::Community, "COMMUNITY", "c1", "community"),
        (Vis::Team, "TEAM", "t1", "team"),
        (Vis::Private, "TENANT", t.as_str(), "private"),
    ] {
        let id = create(
            &client,
            &creator_id,
            scope_type,
            scope_id,
            visibility,
            &format!("{vis:?} event"),
            vis.index() as u32,
        )
        .await;
        ids.push(id);
    }

    // Organizers of every scope involved (scope-level bindings, plus TENANT
    // for the TENANT-scoped events).
    async fn organize(authorities: &impl Authorities, tenant: Uuid, user: Uuid) {
        authorities
            .grant(tenant, user, ORGANIZER, "COMMUNITY", "c1")
            .await;
        authorities
            .grant(tenant, user, ORGANIZER, "TEAM", "t1")
            .await;
        authorities
            .grant(tenant, user, ORGANIZER, "TENANT", &tenant.to_string())
            .await;
    }
    let member = Uuid::new_v4();
    authorities.join(tenant, member, "COMMUNITY", "c1").await;
    authorities.join(tenant, member, "TEAM", "t1").await;
    organize(authorities, tenant, member).await;
    let nonmember = Uuid::new_v4();
    organize(authorities, tenant, nonmember).await;
    let plain_member = Uuid::new_v4();
    authorities
        .join(tenant, plain_member, "COMMUNITY", "c1")
        .await;
    authorities.join(tenant, plain_member, "TEAM", "t1").await;
    let plain_nonmember = Uuid::new_v4();
    let suspended = Uuid::new_v4();
    authorities.join(tenant, suspended, "COMMUNITY", "c1").await;
    authorities.join(tenant, suspended, "TEAM", "t1").await;
    organize(authorities, tenant, suspended).await;
    let suspended_flags = Some(r#"{"suspended":true}"#.to_string());

    let viewers = [
        Viewer {
            label: "member (organizer)",
            who: identity(tenant, member),
            organizer: true,
            sees: [true, true, true, false],
            list_forbidden: false,
            blocked: false,
        },
        Viewer {
            label: "non-member (organizer)",
            who: identity(tenant, nonmember),
            organizer: true,
            sees: [true, false, false, false],
            list_forbidden: false,
            blocked: false,
        },
        Viewer {
            label: "member (no role)",
            who: identity(tenant, plain_member),
            organizer: false,
            sees: [true, true, true, false],
            list_forbidden: false,
            blocked: false,
        },
        Viewer {
            label: "non-member (no role)",
            who: identity(tenant, plain_nonmember),
            organizer: false,
            sees: [true, false, false, false],
            list_forbidden: false,
            blocked: false,
        },
        Viewer {
            label: "creator",
            who: creator_id.clone(),
            organizer: true,
            sees: [true, true, true, true],
            list_forbidden: false,
            blocked: false,
        },
        Viewer {
            label: "system admin",
            who: admin(tenant),
            organizer: true,
            sees: [true, true, true, true],
            list_forbidden: false,
            blocked: false,
        },
        Viewer {
            label: "suspended member (organizer)",
            who: Identity {
                master_flags: suspended_flags.clone(),
                ..identity(tenant, suspended)
            },
            organizer: true,
            sees: [true, true, true, false],
            list_forbidden: true,
            blocked: true,
        },
        Viewer {
            label: "suspended creator",
            who: Identity {
                master_flags: suspended_flags.clone(),
                ..identity(tenant, creator)
            },
            organizer: true,
            sees: [true; 4],
            list_forbidden: true,
            blocked: true,
        },
    ];

    // rsvp.clear comes before rsvp.set (a clear without an RSVP is a no-op),
    // so the RSVPs counted at the end are the sets.
    let ops = [
        "event.get",
        "event.ics",
        "rsvp.clear",
        "rsvp.set",
        "attendance.mark",
        "rsvp.list",
        "attendance.list",
        "event.update",
        "event.cancel",
    ];
    let attendee = Uuid::new_v4();
    let mut failures: Vec<String> = Vec::new();
    for viewer in &viewers {
        // The list first (the writes below do not change it).
        let (list, _) = call(&client, "event.list", &viewer.who, &json!({"limit": 250})).await;
        if viewer.list_forbidden {
            if list.status != 403 || list.code.as_deref() != Some("FORBIDDEN") {
                failures.push(format!(
                    "[{}] event.list: expected 403 FORBIDDEN, got {} {:?}",
                    viewer.label, list.status, list.body
                ));
            }
        } else {
            let expected: Vec<&str> = Vis::ALL
                .iter()
                .filter(|v| viewer.sees[v.index()])
                .map(|v| ids[v.index()].as_str())
                .collect();
            let listed: Vec<&str> = list.body["items"]
                .as_array()
                .map(|items| items.iter().filter_map(|i| i["id"].as_str()).collect())
                .unwrap_or_default();
            if list.status != 200 || listed != expected {
                failures.push(format!(
                    "[{}] event.list: expected items {expected:?}, got {} {listed:?}",
                    viewer.label, list.status
                ));
            }
            if list.body["meta"]["total"] != json!(expected.len()) {
                failures.push(format!(
                    "[{}] event.list: meta.total {} but {} visible",
                    viewer.label,
                    list.body["meta"]["total"],
                    expected.len()
                ));
            }
        }

        for op in ops {
            // What an absent event looks like to this viewer.
            let absent_id = Uuid::new_v4().to_string();
            let (absent, absent_rid) = call(
                &client,
                op,
                &viewer.who,
                &body_for(op, &absent_id, attendee),
            )
            .await;
            let absent_shape = match error_shape(&absent, &absent_rid) {
                Ok(shape) if shape.0 == 404 => shape,
                other => {
                    failures.push(format!(
                        "[{}] {op} on an absent event: expected 404, got {other:?}",
                        viewer.label
                    ));
                    continue;
                }
            };
            for vis in Vis::ALL {
                let id = &ids[vis.index()];
                let cell = format!("[{} × {vis:?}] {op}", viewer.label);
                // Cancelling a visible event as an organizer would change the
                // rest of the matrix; it is covered by the other tests.
                if op == "event.cancel"
                    && viewer.organizer
                    && !viewer.blocked
                    && viewer.sees[vis.index()]
                {
                    continue;
                }
                let body = if op == "event.update" {
                    json!({"id": id, "title": format!("{vis:?} event")})
                } else {
                    body_for(op, id, attendee)
                };
                let (reply, rid) = call(&client, op, &viewer.who, &body).await;
                if !viewer.sees[vis.index()] {
                    match error_shape(&reply, &rid) {
                        Ok(shape) if shape == absent_shape => {}
                        other => failures.push(format!(
                            "{cell}: hidden must look absent {absent_shape:?}, got {other:?}"
                        )),
                    }
                    continue;
                }
                if viewer.blocked {
                    // Visible were they not blocked: told why they are refused.
                    if (reply.status, reply.code.as_deref()) != (403, Some("FORBIDDEN")) {
                        failures.push(format!(
                            "{cell}: a blocked viewer must get 403 FORBIDDEN, got {} {:?}",
                            reply.status, reply.body
                        ));
                    }
                    continue;
                }
                let ok = match op {
                    "event.get" => reply.status == 200 && reply.body["id"] == json!(id),
                    "event.ics" => {
                        reply.status == 200
                            && reply
                                .content_type
                                .as_deref()
                                .is_some_and(|c| c.starts_with("text/calendar"))
                            && reply
                                .body
                                .as_str()
                                .is_some_and(|s| s.contains("BEGIN:VEVENT"))
                    }
                    "rsvp.set" => {
                        reply.status == 200
                            && reply.body["status"] == "interested"
                            && reply.body["eventId"] == json!(id)
                    }
                    "rsvp.clear" => {
                        reply.status == 200
                            && reply.body["status"].is_null()
                            && reply.body["eventId"] == json!(id)
                    }
                    // Visible but not permitted: 403 (after the visibility check).
                    "attendance.mark" | "rsvp.list" | "attendance.list" | "event.update"
                    | "event.cancel"
                        if !viewer.organizer =>
                    {
                        reply.status == 403 && reply.code.as_deref() == Some("FORBIDDEN")
                    }
                    "attendance.mark" => {
                        reply.status == 200
                            && reply.body["userId"] == json!(attendee.to_string())
                            && reply.body["eventId"] == json!(id)
                    }
                    "rsvp.list" | "attendance.list" => {
                        reply.status == 200 && reply.body["items"].is_array()
                    }
                    "event.update" => {
                        reply.status == 200
                            && reply.body["id"] == json!(id)
                            && reply.body["version"] == 1
                    }
                    _ => unreachable!(),
                };
                if !ok {
                    failures.push(format!(
                        "{cell}: expected {}, got {} {:?} {:?}",
                        if !viewer.organizer
                            && matches!(
                                op,
                                "attendance.mark"
                                    | "rsvp.list"
                                    | "attendance.list"
                                    | "event.update"
                                    | "event.cancel"
                            )
                        {
                            "403 FORBIDDEN"
                        } else {
                            "success"
                        },
                        reply.status,
                        reply.code,
                        reply.body
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing cells:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The hidden writes changed nothing; the visible ones were recorded.
    let rsvps: i64 = sqlx::query_scalar("SELECT count(*) FROM event_rsvps")
        .fetch_one(&app.db)
        .await
        .expect("count rsvps");
    let visible_cells: usize = viewers
        .iter()
        .filter(|v| !v.blocked)
        .map(|v| v.sees.iter().filter(|s| **s).count())
        .sum();
    assert_eq!(rsvps, visible_cells as i64);
    let marks: i64 = sqlx::query_scalar("SELECT count(*) FROM event_attendance")
        .fetch_one(&app.db)
        .await
        .expect("count attendance");
    // One attendee per event, marked by whichever permitted viewer came first.
    assert_eq!(marks, 4);
    // Nothing was updated or cancelled.
    let changed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE version <> 1 OR status <> 'scheduled'",
    )
    .fetch_one(&app.db)
    .await
    .expect("count events");
    assert_eq!(changed, 0);
}

/// 33 events, 20 hidden from the viewer and interleaved with the visible
/// ones: every page is full until the last, totals count only visible
/// events, and the pages together are exactly the visible set, in order.
#[tokio::test]
async fn pagination_is_never_short_because_of_visibility() {
    let app = TestApp::spawn().await;
    run_pagination(&app).await;
}

#[tokio::test]
async fn pagination_from_the_list_read_model_is_never_short_either() {
    let app = TestApp::spawn_trusting_its_cache().await;
    run_pagination(&app).await;
    assert_eq!(lists_from(&app, "postgres").await, 0.0);
}

async fn run_pagination(app: &TestApp) {
    let client = app.client();
    let tenant = Uuid::new_v4();
    let t = tenant.to_string();
    let other = Uuid::new_v4();
    let viewer = Uuid::new_v4();
    app.grant(tenant, other, ORGANIZER, "TENANT", &t).await;
    app.grant(tenant, viewer, ORGANIZER, "TENANT", &t).await;
    app.join(tenant, viewer, "COMMUNITY", "c2").await;
    app.join(tenant, other, "COMMUNITY", "c1").await;
    app.join(tenant, other, "TEAM", "t1").await;
    let other_id = identity(tenant, other);
    let viewer_id = identity(tenant, viewer);

    let total_events = 33u32;
    let mut visible: Vec<String> = Vec::new();
    let mut hidden = 0;
    for i in 0..total_events {
        let is_hidden = (i * 7) % total_events < 20;
        let (who, scope_type, scope_id, visibility) = if is_hidden {
            hidden += 1;
            match i % 3 {
                0 => (&other_id, "TENANT", t.as_str(), "private"),
                1 => (&other_id, "COMMUNITY", "c1", "community"),
                _ => (&other_id, "TEAM", "t1", "team"),
            }
        } else {
            match i % 3 {
                0 => (&other_id, "TENANT", t.as_str(), "public"),
                1 => (&other_id, "COMMUNITY", "c2", "community"),
                _ => (&viewer_id, "TENANT", t.as_str(), "private"),
            }
        };
        let id = create(
            &client,
            who,
            scope_type,
            scope_id,
            visibility,
            &format!("event {i}"),
            i,
        )
        .await;
        if !is_hidden {
            visible.push(id);
        }
    }
    assert_eq!(hidden, 20);
    assert_eq!(visible.len(), 13);

    for limit in [5usize, 4, 1] {
        let mut seen: Vec<String> = Vec::new();
        let mut offset = 0usize;
        loop {
            let (page, _) = call(
                &client,
                "event.list",
                &viewer_id,
                &json!({"limit": limit, "offset": offset}),
            )
            .await;
            assert_eq!(page.status, 200, "{:?}", page.body);
            assert_eq!(
                page.body["meta"]["total"], 13,
                "limit {limit} offset {offset}: total counts hidden events"
            );
            let items: Vec<String> = page.body["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|i| i["id"].as_str().expect("id").to_string())
                .collect();
            let expected_len = limit.min(visible.len().saturating_sub(offset));
            assert_eq!(
                items.len(),
                expected_len,
                "limit {limit} offset {offset}: short page"
            );
            if items.is_empty() {
                break;
            }
            seen.extend(items);
            offset += limit;
        }
        assert_eq!(
            seen, visible,
            "limit {limit}: the pages are not the visible set in order"
        );
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "a page repeated an event");
    }

    // Scope filters count only what the viewer may see, too.
    let (c1, _) = call(
        &client,
        "event.list",
        &viewer_id,
        &json!({"scopeType": "COMMUNITY", "scopeId": "c1"}),
    )
    .await;
    assert_eq!(c1.status, 200, "{:?}", c1.body);
    assert_eq!(c1.body["meta"]["total"], 0);
    assert_eq!(c1.body["items"], json!([]));
    let (private, _) = call(
        &client,
        "event.list",
        &viewer_id,
        &json!({"visibility": "private"}),
    )
    .await;
    assert_eq!(private.status, 200, "{:?}", private.body);
    let own_private = (0..total_events)
        .filter(|i| (i * 7) % total_events >= 20 && i % 3 == 2)
        .count();
    assert_eq!(private.body["meta"]["total"], json!(own_private));
}

/// Another tenant's events are 404 (exactly like absent ones) and never
/// listed, for members and for that tenant's own system admins alike.
#[tokio::test]
async fn other_tenants_events_are_absent() {
    let app = TestApp::spawn().await;
    let client = app.client();
    let tenant_a = Uuid::new_v4();
    let tenant_b = Uuid::new_v4();
    let organizer_b = Uuid::new_v4();
    app.grant(
        tenant_b,
        organizer_b,
        ORGANIZER,
        "TENANT",
        &tenant_b.to_string(),
    )
    .await;
    let b = identity(tenant_b, organizer_b);
    let public_b = create(
        &client,
        &b,
        "TENANT",
        &tenant_b.to_string(),
        "public",
        "B public",
        0,
    )
    .await;
    let community_b = create(
        &client,
        &b,
        "COMMUNITY",
        "c1",
        "community",
        "B community",
        1,
    )
    .await;

    // The same user id in tenant A, even a member of A's c1 and an organizer.
    let a_user = Uuid::new_v4();
    app.grant(tenant_a, a_user, ORGANIZER, "TENANT", &tenant_a.to_string())
        .await;
    app.join(tenant_a, a_user, "COMMUNITY", "c1").await;
    for who in [
        identity(tenant_a, a_user),
        identity(tenant_a, organizer_b),
        admin(tenant_a),
    ] {
        for op in ["event.get", "event.ics", "rsvp.set", "attendance.mark"] {
            let (absent, absent_rid) = call(
                &client,
                op,
                &who,
                &body_for(op, &Uuid::new_v4().to_string(), a_user),
            )
            .await;
            let absent = error_shape(&absent, &absent_rid).expect("absent is an error");
            assert_eq!(absent.0, 404);
            for id in [&public_b, &community_b] {
                let (reply, rid) = call(&client, op, &who, &body_for(op, id, a_user)).await;
                assert_eq!(
                    error_shape(&reply, &rid).as_ref(),
                    Ok(&absent),
                    "{op} on another tenant's event as {}",
                    who.user_id
                );
            }
        }
        for body in [
            json!({}),
            json!({"scopeType": "TENANT", "scopeId": tenant_b.to_string()}),
            json!({"scopeType": "COMMUNITY", "scopeId": "c1"}),
            json!({"createdBy": organizer_b.to_string()}),
        ] {
            let (list, _) = call(&client, "event.list", &who, &body).await;
            assert!(
                list.status == 200 || list.status == 403 || list.status == 422,
                "{body}: {:?}",
                list.body
            );
            if list.status == 200 {
                assert_eq!(list.body["items"], json!([]), "{body}");
                assert_eq!(list.body["meta"]["total"], 0, "{body}");
            }
        }
    }
    // Nothing was written to tenant B's events.
    let rsvps: i64 = sqlx::query_scalar("SELECT count(*) FROM event_rsvps")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(rsvps, 0);
    let marks: i64 = sqlx::query_scalar("SELECT count(*) FROM event_attendance")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(marks, 0);
}

/// Ids are canonicalised (the previous service compared raw strings, so
/// creators lost their private events): a creator whose `X-User-Id` is
/// upper-case or braced still sees their private event, and an upper-case
/// `X-Tenant-Id` still sees the tenant's public events.
#[tokio::test]
async fn non_canonical_ids_still_match() {
    let app = TestApp::spawn().await;
    let client = app.client();
    let tenant = Uuid::new_v4();
    let creator = Uuid::new_v4();
    app.grant(tenant, creator, ORGANIZER, "TENANT", &tenant.to_string())
        .await;
    let upper = creator.to_string().to_uppercase();
    let spellings = [
        upper.clone(),
        format!("{{{creator}}}"),
        format!("{{{upper}}}"),
        creator.simple().to_string().to_uppercase(),
    ];
    // Created with a non-canonical spelling: stored canonically.
    let loud = Identity {
        user_id: format!("{{{upper}}}"),
        ..identity(tenant, creator)
    };
    let private = create(
        &client,
        &loud,
        "TENANT",
        &tenant.to_string(),
        "private",
        "mine",
        0,
    )
    .await;
    let (got, _) = call(
        &client,
        "event.get",
        &identity(tenant, creator),
        &json!({"id": private}),
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.body["createdBy"], creator.to_string());

    for spelling in spellings {
        let who = Identity {
            user_id: spelling.clone(),
            ..identity(tenant, creator)
        };
        let (get, _) = call(&client, "event.get", &who, &json!({"id": private})).await;
        assert_eq!(get.status, 200, "{spelling}: {:?}", get.body);
        let (ics, _) = call(&client, "event.ics", &who, &json!({"id": private})).await;
        assert_eq!(ics.status, 200, "{spelling}: {:?}", ics.body);
        let (list, _) = call(&client, "event.list", &who, &json!({})).await;
        assert_eq!(list.body["meta"]["total"], 1, "{spelling}: {:?}", list.body);
        assert_eq!(list.body["items"][0]["id"], json!(private), "{spelling}");
        let (rsvp, _) = call(
            &client,
            "rsvp.set",
            &who,
            &json!({"eventId": private, "status": "going"}),
        )
        .await;
        assert_eq!(rsvp.status, 200, "{spelling}: {:?}", rsvp.body);
    }
    // All spellings are one user: one RSVP row.
    let rows: Vec<Uuid> = sqlx::query_scalar("SELECT user_id FROM event_rsvps")
        .fetch_all(&app.db)
        .await
        .expect("rsvps");
    assert_eq!(rows, vec![creator]);

    // An upper-case tenant id is the same tenant.
    let public = create(
        &client,
        &identity(tenant, creator),
        "TENANT",
        &tenant.to_string(),
        "public",
        "ours",
        1,
    )
    .await;
    let shouting = Identity {
        tenant_id: tenant.to_string().to_uppercase(),
        ..identity(tenant, Uuid::new_v4())
    };
    let (get, _) = call(&client, "event.get", &shouting, &json!({"id": public})).await;
    assert_eq!(get.status, 200, "{:?}", get.body);
    let (list, _) = call(&client, "event.list", &shouting, &json!({})).await;
    assert_eq!(list.body["meta"]["total"], 1, "{:?}", list.body);
}

async fn bypass_rows(
    app: &TestApp,
    rid: &str,
) -> Vec<(Option<Uuid>, Option<Uuid>, String, Option<String>)> {
    sqlx::query_as(
        "SELECT tenant_id, actor_user_id, target_type, target_id FROM audit_log
         WHERE action = 'system_admin.bypass' AND request_id = $1",
    )
    .bind(rid)
    .fetch_all(&app.db)
    .await
    .expect("audit rows")
}

/// Only the literal `system_admin: true` of a caller who is not suspended
/// or banned is an administrator.
#[tokio::test]
async fn admin_look_alikes_are_not_admins() {
    let app = TestApp::spawn().await;
    let client = app.client();
    let tenant = Uuid::new_v4();
    let creator = Uuid::new_v4();
    app.grant(tenant, creator, ORGANIZER, "TENANT", &tenant.to_string())
        .await;
    let creator_id = identity(tenant, creator);
    let private = create(
        &client,
        &creator_id,
        "TENANT",
        &tenant.to_string(),
        "private",
        "secret",
        0,
    )
    .await;
    let community = create(
        &client,
        &creator_id,
        "COMMUNITY",
        "c1",
        "community",
        "club",
        1,
    )
    .await;
    let public = create(
        &client,
        &creator_id,
        "TENANT",
        &tenant.to_string(),
        "public",
        "open",
        2,
    )
    .await;

    let mut rids = Vec::new();
    for flags in [
        r#"{"system_admin":true,"suspended":true}"#,
        r#"{"system_admin":true,"banned":true}"#,
        r#"{"system_admin":true,"status":"Suspended"}"#,
        r#"{"is_system_admin":true,"status":"banned"}"#,
    ] {
        let who = Identity {
            master_flags: Some(flags.into()),
            ..identity(tenant, Uuid::new_v4())
        };
        // No admin bypass: blocked like anyone, told why (403) where they
        // could see the event were they not blocked.
        for (id, expected) in [(&private, 404), (&community, 404), (&public, 403)] {
            for op in ["event.get", "event.ics", "rsvp.set", "attendance.mark"] {
                let (reply, rid) = call(&client, op, &who, &body_for(op, id, creator)).await;
                assert_eq!(reply.status, expected, "{flags} {op}: {:?}", reply.body);
                rids.push(rid);
            }
        }
        let (list, rid) = call(&client, "event.list", &who, &json!({})).await;
        assert_eq!(list.status, 403, "{flags}: {:?}", list.body);
        rids.push(rid);
    }
    for flags in [
        r#"{"system_admin":"yes"}"#,
        r#"{"system_admin":"true"}"#,
        r#"{"system_admin":1}"#,
        r#"{"system_admin":"no"}"#,
        r#"{"admin":true}"#,
        "system_admin",
    ] {
        let who = Identity {
            master_flags: Some(flags.into()),
            ..identity(tenant, Uuid::new_v4())
        };
        // An ordinary member: the public event, nothing else.
        for id in [&private, &community] {
            for op in ["event.get", "event.ics", "rsvp.set", "attendance.mark"] {
                let (reply, rid) = call(&client, op, &who, &body_for(op, id, creator)).await;
                assert_eq!(reply.status, 404, "{flags} {op}: {:?}", reply.body);
                rids.push(rid);
            }
        }
        let (get, rid) = call(&client, "event.get", &who, &json!({"id": public})).await;
        assert_eq!(get.status, 200, "{flags}: {:?}", get.body);
        rids.push(rid);
        let (mark, rid) = call(
            &client,
            "attendance.mark",
            &who,
            &body_for("attendance.mark", &public, creator),
        )
        .await;
        assert_eq!(mark.status, 403, "{flags}: {:?}", mark.body);
        rids.push(rid);
        let (list, rid) = call(&client, "event.list", &who, &json!({})).await;
        assert_eq!(list.status, 200, "{flags}: {:?}", list.body);
        assert_eq!(list.body["meta"]["total"], 1, "{flags}: {:?}", list.body);
        assert_eq!(list.body["items"][0]["id"], json!(public), "{flags}");
        rids.push(rid);
    }

    // A real admin's bypass is audited (asynchronously); wait for it, then
    // check that none of the look-alikes were.
    let (got, admin_rid) = call(
        &client,
        "event.get",
        &admin(tenant),
        &json!({"id": private}),
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let mut audited = Vec::new();
    for _ in 0..50 {
        audited = bypass_rows(&app, &admin_rid).await;
        if !audited.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(audited.len(), 1, "the real admin was audited once");
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'system_admin.bypass' AND request_id = ANY($1)",
    )
    .bind(&rids)
    .fetch_one(&app.db)
    .await
    .expect("audit count");
    assert_eq!(leaked, 0, "a look-alike was treated as an admin");
}

/// The admin bypass writes an `audit_log` row with the request id, once
/// per request, for targeted operations and lists.
#[tokio::test]
async fn admin_bypass_is_audited_with_the_request_id() {
    let app = TestApp::spawn().await;
    let client = app.client();
    let tenant = Uuid::new_v4();
    let creator = Uuid::new_v4();
    app.grant(tenant, creator, ORGANIZER, "TENANT", &tenant.to_string())
        .await;
    let private = create(
        &client,
        &identity(tenant, creator),
        "TENANT",
        &tenant.to_string(),
        "private",
        "secret",
        0,
    )
    .await;
    let admin_id = admin(tenant);
    let admin_user: Uuid = admin_id.user_id.parse().expect("uuid");

    let mut checks = Vec::new();
    for (op, body) in [
        ("event.get", json!({"id": private})),
        ("event.ics", json!({"id": private})),
        ("rsvp.set", json!({"eventId": private, "status": "going"})),
        (
            "attendance.mark",
            json!({"eventId": private, "userId": creator.to_string()}),
        ),
        ("event.list", json!({})),
    ] {
        let (reply, rid) = call(&client, op, &admin_id, &body).await;
        assert_eq!(reply.status, 200, "{op}: {:?}", reply.body);
        checks.push((op, rid));
    }
    let (list, _) = call(&client, "event.list", &admin_id, &json!({})).await;
    assert_eq!(list.body["meta"]["total"], 1);

    for (op, rid) in checks {
        let mut rows = Vec::new();
        for _ in 0..50 {
            rows = bypass_rows(&app, &rid).await;
            if !rows.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            rows.len(),
            1,
            "{op}: one audit row per request, got {rows:?}"
        );
        let (t, actor, target_type, target_id) = &rows[0];
        assert_eq!(*t, Some(tenant), "{op}");
        assert_eq!(*actor, Some(admin_user), "{op}");
        if op != "event.list" {
            assert_eq!(target_type, "event", "{op}");
            assert_eq!(target_id.as_deref(), Some(private.as_str()), "{op}");
        }
    }
}

/// Which bindings allow creating where: a TENANT binding covers every
/// scope; a COMMUNITY binding covers that community only.
#[tokio::test]
async fn create_needs_organizer_at_the_tenant_or_that_scope() {
    let app = TestApp::spawn().await;
    let client = app.client();
    let tenant = Uuid::new_v4();
    let local = Uuid::new_v4();
    app.grant(tenant, local, ORGANIZER, "COMMUNITY", "c1").await;
    let who = identity(tenant, local);
    let body = |scope_type: &str, scope_id: &str, visibility: &str| {
        json!({
            "scopeType": scope_type, "scopeId": scope_id, "title": "x", "visibility": visibility,
            "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z",
        })
    };
    let (ok, _) = call(
        &client,
        "event.create",
        &who,
        &body("COMMUNITY", "c1", "community"),
    )
    .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    for (scope_type, scope_id, visibility) in [
        ("COMMUNITY", "c2", "community"),
        ("TEAM", "t1", "team"),
        ("TENANT", tenant.to_string().as_str(), "public"),
    ] {
        let (denied, _) = call(
            &client,
            "event.create",
            &who,
            &body(scope_type, scope_id, visibility),
        )
        .await;
        assert_eq!(
            denied.status, 403,
            "{scope_type}/{scope_id}: {:?}",
            denied.body
        );
    }
    let nobody = identity(tenant, Uuid::new_v4());
    let (denied, _) = call(
        &client,
        "event.create",
        &nobody,
        &body("COMMUNITY", "c1", "community"),
    )
    .await;
    assert_eq!(denied.status, 403, "{:?}", denied.body);
    // A visibility that does not fit the scope is a validation error.
    let (bad, _) = call(
        &client,
        "event.create",
        &who,
        &body("COMMUNITY", "c1", "team"),
    )
    .await;
    assert_eq!(bad.status, 422, "{:?}", bad.body);
}
