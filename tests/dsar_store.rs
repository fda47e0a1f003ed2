//! DSAR export and erase, and the retention purge, against the machine's
//! real Postgres. Each test gets a fresh database (`events_dsar_<uuid>`),
//! dropped at the end even when the test fails.

use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use updspace_events::domain::{TenantId, UserId};
use updspace_events::store::{MIGRATOR, dsar};
use updspace_events::subjects::Subjects;
use uuid::Uuid;

const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432";
const NIL: &str = "00000000-0000-0000-0000-000000000000";
const PREFIX: &str = "tdsar";

/// Drops the database when dropped. Runs on its own thread and runtime:
/// Drop cannot await, and the test's runtime may be shutting down.
struct DropDatabase(String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(admin) = PgPool::connect(&format!("{PG_SERVER}/postgres")).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

struct TestDb {
    pool: PgPool,
    // Declared last: dropped after the pool.
    _drop: DropDatabase,
}

impl TestDb {
    async fn new() -> Self {
        let name = format!("events_dsar_{}", Uuid::new_v4().simple());
        let admin = PgPool::connect(&format!("{PG_SERVER}/postgres"))
            .await
            .expect("Postgres is reachable");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&admin)
            .await
            .expect("test database is created");
        admin.close().await;
        let guard = DropDatabase(name.clone());
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&format!("{PG_SERVER}/{name}"))
            .await
            .expect("test database is reachable");
        MIGRATOR.run(&pool).await.expect("migrations run");
        Self { pool, _drop: guard }
    }
}

fn subjects() -> Subjects {
    Subjects::new(PREFIX)
}

async fn event(db: &PgPool, tenant: Uuid, created_by: Uuid, capacity: Option<i32>) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO events (id, tenant_id, scope_type, scope_id, title, description, starts_at, ends_at,
                             capacity, created_by)
         VALUES ($1, $2, 'TENANT', $2::text, 'Game night', 'Bring snacks', now() + interval '1 day',
                 now() + interval '2 days', $3, $4)",
    )
    .bind(id)
    .bind(tenant)
    .bind(capacity)
    .bind(created_by)
    .execute(db)
    .await
    .expect("event inserted");
    sqlx::query("INSERT INTO event_counters (event_id, tenant_id) VALUES ($1, $2)")
        .bind(id)
        .bind(tenant)
        .execute(db)
        .await
        .expect("counters inserted");
    id
}

async fn rsvp(db: &PgPool, tenant: Uuid, event: Uuid, user: Uuid, status: &str, seq: Option<i64>) {
    sqlx::query(
        "INSERT INTO event_rsvps (event_id, user_id, tenant_id, status, waitlist_seq)
         VALUES ($1, $2, $3, $4::text::rsvp_status, $5)",
    )
    .bind(event)
    .bind(user)
    .bind(tenant)
    .bind(status)
    .bind(seq)
    .execute(db)
    .await
    .expect("rsvp inserted");
}

async fn attend(db: &PgPool, tenant: Uuid, event: Uuid, user: Uuid, marked_by: Uuid) {
    sqlx::query(
        "INSERT INTO event_attendance (event_id, user_id, tenant_id, marked_by) VALUES ($1, $2, $3, $4)",
    )
    .bind(event)
    .bind(user)
    .bind(tenant)
    .bind(marked_by)
    .execute(db)
    .await
    .expect("attendance inserted");
}

/// An outbox row in `state`, occurred (and, if published, published)
/// `days_ago` days ago.
async fn outbox(
    db: &PgPool,
    tenant: Uuid,
    event: Uuid,
    event_type: &str,
    payload: Value,
    state: &str,
    days_ago: i32,
) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO outbox (id, tenant_id, event_id, event_type, subject, payload, occurred_at, state,
                             published_at, published_seq, dead_at)
         VALUES ($1, $2, $3, $4, 'tdsar.out.x', $5, now() - make_interval(days => $6),
                 $7::text::outbox_state,
                 CASE WHEN $7::text = 'published' THEN now() - make_interval(days => $6) END,
                 CASE WHEN $7::text = 'published' THEN nextval('outbox_published_seq') END,
                 CASE WHEN $7::text = 'dead' THEN now() END)",
    )
    .bind(id)
    .bind(tenant)
    .bind(event)
    .bind(event_type)
    .bind(payload)
    .bind(days_ago)
    .bind(state)
    .execute(db)
    .await
    .expect("outbox row inserted");
    id
}

/// Sets every counter row from the rows it counts.
async fn recount(db: &PgPool) {
    sqlx::query(
        "UPDATE event_counters c SET
             interested = (SELECT count(*) FROM event_rsvps r WHERE r.event_id = c.event_id AND r.status = 'interested'),
             going = (SELECT count(*) FROM event_rsvps r WHERE r.event_id = c.event_id AND r.status = 'going'),
             not_going = (SELECT count(*) FROM event_rsvps r WHERE r.event_id = c.event_id AND r.status = 'not_going'),
             waitlisted = (SELECT count(*) FROM event_rsvps r WHERE r.event_id = c.event_id AND r.status = 'waitlisted'),
             attended = (SELECT count(*) FROM event_attendance a WHERE a.event_id = c.event_id)",
    )
    .execute(db)
    .await
    .expect("counters recounted");
}

type CounterRow = (Uuid, i32, i32, i32, i32, i32);

/// Every counter row, as stored and as recounted from the rows.
async fn assert_counters_exact(db: &PgPool) {
    let stored: Vec<CounterRow> = sqlx::query_as(
        "SELECT event_id, interested, going, not_going, waitlisted, attended FROM event_counters ORDER BY event_id",
    )
    .fetch_all(db)
    .await
    .expect("counters read");
    let counted: Vec<CounterRow> = sqlx::query_as(
        "SELECT c.event_id,
                (SELECT count(*)::int FROM event_rsvps r WHERE r.event_id = c.event_id AND r.status = 'interested'),
                (SELECT count(*)::int FROM event_rsvps r WHERE r.event_id = c.event_id AND r.status = 'going'),
                (SELECT count(*)::int FROM event_rsvps r WHERE r.event_id = c.event_id AND r.status = 'not_going'),
                (SELECT count(*)::int FROM event_rsvps r WHERE r.event_id = c.event_id AND r.status = 'waitlisted'),
                (SELECT count(*)::int FROM event_attendance a WHERE a.event_id = c.event_id)
         FROM event_counters c ORDER BY c.event_id",
    )
    .fetch_all(db)
    .await
    .expect("rows counted");
    assert_eq!(
        stored, counted,
        "event_counters must equal a recount of the rows"
    );
}

async fn payload(db: &PgPool, id: Uuid) -> Value {
    sqlx::query_scalar("SELECT payload FROM outbox WHERE id = $1")
        .bind(id)
        .fetch_one(db)
        .await
        .expect("outbox row exists")
}

/// Everything in the tenant's tables, for "nothing else changed" checks.
async fn snapshot(db: &PgPool, tenant: Uuid) -> Value {
    sqlx::query_scalar(
        "SELECT jsonb_build_object(
             'events', (SELECT coalesce(jsonb_agg(to_jsonb(e) ORDER BY e.id), '[]') FROM events e WHERE e.tenant_id = $1),
             'counters', (SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.event_id), '[]') FROM event_counters c WHERE c.tenant_id = $1),
             'rsvps', (SELECT coalesce(jsonb_agg(to_jsonb(r) ORDER BY r.event_id, r.user_id), '[]') FROM event_rsvps r WHERE r.tenant_id = $1),
             'attendance', (SELECT coalesce(jsonb_agg(to_jsonb(a) ORDER BY a.event_id, a.user_id), '[]') FROM event_attendance a WHERE a.tenant_id = $1),
             'outbox', (SELECT coalesce(jsonb_agg(to_jsonb(o) ORDER BY o.seq), '[]') FROM outbox o WHERE o.tenant_id = $1))",
    )
    .bind(tenant)
    .fetch_one(db)
    .await
    .expect("snapshot read")
}

fn len(v: &Value, key: &str) -> usize {
    v[key].as_array().map_or(usize::MAX, Vec::len)
}

fn is_utc(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

/// The DSAR fixture of the previous service's tests: in one tenant, U
/// created A and O created B; U is going to B; U attended B (marked by O)
/// and marked O on B; two outbox rows mention U.
struct Fixture {
    tenant: Uuid,
    u: Uuid,
    o: Uuid,
    a: Uuid,
    b: Uuid,
    created_row: Uuid,
    rsvp_row: Uuid,
}

async fn original_fixture(db: &PgPool) -> Fixture {
    let tenant = Uuid::new_v4();
    let (u, o) = (Uuid::new_v4(), Uuid::new_v4());
    let a = event(db, tenant, u, None).await;
    let b = event(db, tenant, o, None).await;
    rsvp(db, tenant, b, u, "going", None).await;
    attend(db, tenant, b, u, o).await;
    attend(db, tenant, b, o, u).await;
    let created_row = outbox(
        db,
        tenant,
        a,
        "event.created",
        json!({"event_id": a.to_string(), "created_by": u.to_string()}),
        "published",
        1,
    )
    .await;
    let rsvp_row = outbox(
        db,
        tenant,
        b,
        "event.rsvp.changed",
        json!({"event_id": b.to_string(), "user_id": u.to_string()}),
        "pending",
        0,
    )
    .await;
    recount(db).await;
    Fixture {
        tenant,
        u,
        o,
        a,
        b,
        created_row,
        rsvp_row,
    }
}

// Reference test 18.
#[tokio::test]
async fn export_returns_the_events_bundle() {
    let t = TestDb::new().await;
    let f = original_fixture(&t.pool).await;

    let bundle = dsar::export(&t.pool, TenantId::from(f.tenant), UserId::from(f.u))
        .await
        .expect("export succeeds");

    assert_eq!(bundle["service"], "events");
    assert_eq!(bundle["tenant_id"], f.tenant.to_string());
    assert_eq!(bundle["user_id"], f.u.to_string());
    assert!(is_utc(&bundle["exported_at"]), "{bundle}");
    assert_eq!(len(&bundle, "events_created"), 1);
    assert_eq!(len(&bundle, "rsvps"), 1);
    assert_eq!(len(&bundle, "attendance"), 2, "includes the row U marked");
    assert_eq!(len(&bundle, "outbox"), 2);

    let event = &bundle["events_created"][0];
    let mut keys: Vec<&str> = event
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "created_by",
            "description",
            "ends_at",
            "game_id",
            "id",
            "location_text",
            "location_url",
            "scope_id",
            "scope_type",
            "starts_at",
            "tenant_id",
            "title",
            "updated_at",
            "visibility",
        ]
    );
    assert_eq!(event["id"], f.a.to_string());
    assert_eq!(event["created_by"], f.u.to_string());
    assert_eq!(event["scope_type"], "TENANT");
    assert_eq!(event["visibility"], "public");
    assert_eq!(event["location_url"], Value::Null);
    assert!(is_utc(&event["starts_at"]) && is_utc(&event["created_at"]));

    let rsvp = &bundle["rsvps"][0];
    assert_eq!(rsvp["event_id"], f.b.to_string());
    assert_eq!(rsvp["user_id"], f.u.to_string());
    assert_eq!(rsvp["tenant_id"], f.tenant.to_string());
    assert_eq!(rsvp["status"], "going");
    assert!(rsvp.get("id").is_none(), "our RSVPs have no integer id");
    assert!(is_utc(&rsvp["updated_at"]));

    for row in bundle["attendance"].as_array().expect("array") {
        assert!(row.get("id").is_none());
        assert_eq!(row["event_id"], f.b.to_string());
        assert!(is_utc(&row["marked_at"]));
    }

    let outbox_ids: Vec<&Value> = bundle["outbox"]
        .as_array()
        .expect("array")
        .iter()
        .map(|o| &o["id"])
        .collect();
    assert!(outbox_ids.contains(&&json!(f.created_row.to_string())));
    assert!(outbox_ids.contains(&&json!(f.rsvp_row.to_string())));
    for row in bundle["outbox"].as_array().expect("array") {
        let mut keys: Vec<&str> = row
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "event_type",
                "id",
                "occurred_at",
                "payload",
                "published_at",
                "tenant_id"
            ]
        );
        if row["id"] == json!(f.rsvp_row.to_string()) {
            assert_eq!(row["published_at"], Value::Null, "pending row");
            assert_eq!(row["payload"]["user_id"], f.u.to_string());
        } else {
            assert!(is_utc(&row["published_at"]));
            assert_eq!(row["payload"]["created_by"], f.u.to_string());
        }
    }
}

#[tokio::test]
async fn export_never_reveals_another_users_id() {
    let t = TestDb::new().await;
    let f = original_fixture(&t.pool).await;
    // O answers U's event: matched through A, but O's id must not show.
    outbox(
        &t.pool,
        f.tenant,
        f.a,
        "event.rsvp.changed",
        json!({"event_id": f.a.to_string(), "user_id": f.o.to_string(), "actor_user_id": f.o.to_string()}),
        "published",
        0,
    )
    .await;

    let bundle = dsar::export(&t.pool, TenantId::from(f.tenant), UserId::from(f.u))
        .await
        .expect("export succeeds");

    assert_eq!(len(&bundle, "attendance"), 2);
    assert_eq!(len(&bundle, "outbox"), 3);
    let attendance = bundle["attendance"].to_string();
    assert!(!attendance.contains(&f.o.to_string()), "{attendance}");
    let marked_by_u = bundle["attendance"]
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["marked_by"] == f.u.to_string())
        .expect("the row U marked");
    assert_eq!(marked_by_u["user_id"], "[redacted]");
    let attended_by_u = bundle["attendance"]
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["user_id"] == f.u.to_string())
        .expect("U's own attendance");
    assert_eq!(attended_by_u["marked_by"], "[redacted]");
    assert!(
        !bundle.to_string().contains(&f.o.to_string()),
        "no part of the export shows O: {bundle}"
    );
}

// Reference test 19, plus exact counters.
#[tokio::test]
async fn erase_anonymizes_creator_and_deletes_user_rows() {
    let t = TestDb::new().await;
    let f = original_fixture(&t.pool).await;

    let erased = dsar::erase(
        &t.pool,
        &subjects(),
        TenantId::from(f.tenant),
        UserId::from(f.u),
        &[],
    )
    .await
    .expect("erase succeeds");

    let s = &erased.summary;
    assert_eq!(s["service"], "events");
    assert_eq!(s["tenant_id"], f.tenant.to_string());
    assert_eq!(s["user_id"], f.u.to_string());
    assert_eq!(s["mode"], "hybrid");
    assert!(is_utc(&s["erased_at"]));
    assert_eq!(
        s["counts"],
        json!({
            "events_anonymized": 1,
            "rsvps_deleted": 1,
            "attendance_deleted": 1,
            "attendance_marked_by_redacted": 1,
            "outbox_scrubbed": 2,
            "role_bindings_deleted": 0,
            "memberships_deleted": 0,
            "feed_tokens_deleted": 0,
            "series_anonymized": 0,
            "audit_entries_anonymized": 0,
        })
    );
    let mut keys: Vec<&str> = s
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "counts",
            "erased_at",
            "mode",
            "service",
            "tenant_id",
            "user_id"
        ]
    );

    let created_by: Uuid = sqlx::query_scalar("SELECT created_by FROM events WHERE id = $1")
        .bind(f.a)
        .fetch_one(&t.pool)
        .await
        .expect("A exists");
    assert_eq!(created_by.to_string(), NIL);
    let rsvps: i64 = sqlx::query_scalar("SELECT count(*) FROM event_rsvps WHERE user_id = $1")
        .bind(f.u)
        .fetch_one(&t.pool)
        .await
        .expect("count");
    assert_eq!(rsvps, 0);
    let attendance: Vec<(Uuid, Uuid)> =
        sqlx::query_as("SELECT user_id, marked_by FROM event_attendance ORDER BY user_id")
            .fetch_all(&t.pool)
            .await
            .expect("attendance read");
    assert_eq!(
        attendance,
        vec![(f.o, Uuid::nil())],
        "U's row deleted, U's marking redacted"
    );

    assert_eq!(
        payload(&t.pool, f.created_row).await["created_by"],
        "[redacted]"
    );
    assert_eq!(payload(&t.pool, f.rsvp_row).await["user_id"], "[redacted]");
    let state: String = sqlx::query_scalar("SELECT state::text FROM outbox WHERE id = $1")
        .bind(f.rsvp_row)
        .fetch_one(&t.pool)
        .await
        .expect("row kept");
    assert_eq!(
        state, "pending",
        "the scrubbed pending row is still to be published"
    );
    let outbox_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&t.pool)
        .await
        .expect("count");
    assert_eq!(outbox_rows, 2, "erase writes no outbox row of its own");
    assert_eq!(erased.outbox_rows, 0);

    assert_counters_exact(&t.pool).await;
    let mut changed: Vec<Uuid> = erased.changed_events.iter().map(|e| e.id.into()).collect();
    changed.sort_unstable();
    let mut expected = vec![f.a, f.b];
    expected.sort_unstable();
    assert_eq!(changed, expected);

    // Nothing of U is left to export.
    let after = dsar::export(&t.pool, TenantId::from(f.tenant), UserId::from(f.u))
        .await
        .expect("export succeeds");
    for key in ["events_created", "rsvps", "attendance", "outbox"] {
        assert_eq!(len(&after, key), 0, "{key}: {after}");
    }
    let everything = snapshot(&t.pool, f.tenant).await.to_string();
    assert!(
        !everything.contains(&f.u.to_string()),
        "U's id is gone: {everything}"
    );
}

#[tokio::test]
async fn erase_scrubs_nested_values_and_leaves_unrelated_rows() {
    let t = TestDb::new().await;
    let tenant = Uuid::new_v4();
    let (u, o) = (Uuid::new_v4(), Uuid::new_v4());
    let a = event(&t.pool, tenant, u, None).await;
    let b = event(&t.pool, tenant, o, None).await;
    let nested = outbox(
        &t.pool,
        tenant,
        b,
        "event.updated",
        json!({
            "event_id": b.to_string(),
            "updated_by": format!("  {}\n", u.to_string().to_uppercase()),
            "extra": {"list": [format!(" {u} "), "other", {"deep": u.to_string()}], "count": 1},
        }),
        "dead",
        2,
    )
    .await;
    // O on U's event: matched through A, but nothing of U in it.
    let others_on_a = outbox(
        &t.pool,
        tenant,
        a,
        "event.rsvp.changed",
        json!({"event_id": a.to_string(), "user_id": o.to_string()}),
        "pending",
        0,
    )
    .await;
    // U's id only in free text: not matched, not changed.
    let unrelated_payload =
        json!({"event_id": b.to_string(), "user_id": o.to_string(), "note": u.to_string()});
    let unrelated = outbox(
        &t.pool,
        tenant,
        b,
        "event.rsvp.changed",
        unrelated_payload.clone(),
        "pending",
        0,
    )
    .await;

    let erased = dsar::erase(
        &t.pool,
        &subjects(),
        TenantId::from(tenant),
        UserId::from(u),
        &[],
    )
    .await
    .expect("erase succeeds");

    assert_eq!(erased.summary["counts"]["outbox_scrubbed"], 1);
    assert_eq!(erased.summary["counts"]["events_anonymized"], 1);
    assert_eq!(
        payload(&t.pool, nested).await,
        json!({
            "event_id": b.to_string(),
            "updated_by": "[redacted]",
            "extra": {"list": ["[redacted]", "other", {"deep": "[redacted]"}], "count": 1},
        })
    );
    assert_eq!(
        payload(&t.pool, others_on_a).await,
        json!({"event_id": a.to_string(), "user_id": o.to_string()})
    );
    assert_eq!(payload(&t.pool, unrelated).await, unrelated_payload);
}

#[tokio::test]
async fn erasing_a_going_user_promotes_the_first_waitlisted() {
    let t = TestDb::new().await;
    let tenant = Uuid::new_v4();
    let [u, o, p, w1, w2, i] = [(); 6].map(|_| Uuid::new_v4());
    let c = event(&t.pool, tenant, o, Some(2)).await;
    rsvp(&t.pool, tenant, c, u, "going", None).await;
    rsvp(&t.pool, tenant, c, p, "going", None).await;
    // W2 joined later (higher sequence) but is inserted first.
    rsvp(&t.pool, tenant, c, w2, "waitlisted", Some(20)).await;
    rsvp(&t.pool, tenant, c, w1, "waitlisted", Some(10)).await;
    rsvp(&t.pool, tenant, c, i, "interested", None).await;
    recount(&t.pool).await;
    let revision = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT revision FROM event_counters WHERE event_id = $1")
            .bind(c)
            .fetch_one(&pool)
            .await
            .expect("revision")
    };
    let before = revision(t.pool.clone()).await;

    let erased = dsar::erase(
        &t.pool,
        &subjects(),
        TenantId::from(tenant),
        UserId::from(u),
        &[],
    )
    .await
    .expect("erase succeeds");

    // Caches and group commits that know the event at the old revision
    // must read it again.
    assert!(revision(t.pool.clone()).await > before);
    assert_eq!(erased.summary["counts"]["rsvps_deleted"], 1);
    assert_eq!(erased.outbox_rows, 1);
    let statuses: Vec<(Uuid, String, Option<i64>)> = sqlx::query_as(
        "SELECT user_id, status::text, waitlist_seq FROM event_rsvps WHERE event_id = $1",
    )
    .bind(c)
    .fetch_all(&t.pool)
    .await
    .expect("rsvps read");
    let status_of = |user: Uuid| {
        statuses
            .iter()
            .find(|(id, _, _)| *id == user)
            .map(|(_, s, q)| (s.clone(), *q))
    };
    assert_eq!(status_of(u), None);
    assert_eq!(
        status_of(w1),
        Some(("going".into(), None)),
        "the earliest waitlisted"
    );
    assert_eq!(status_of(w2), Some(("waitlisted".into(), Some(20))));
    assert_eq!(status_of(p), Some(("going".into(), None)));
    assert_counters_exact(&t.pool).await;
    let (going, waitlisted): (i32, i32) =
        sqlx::query_as("SELECT going, waitlisted FROM event_counters WHERE event_id = $1")
            .bind(c)
            .fetch_one(&t.pool)
            .await
            .expect("counters read");
    assert_eq!((going, waitlisted), (2, 1));

    let rows: Vec<(String, String, Value, String)> =
        sqlx::query_as("SELECT event_type, subject, payload, status FROM outbox_view")
            .fetch_all(&t.pool)
            .await
            .expect("outbox read");
    assert_eq!(
        rows.len(),
        1,
        "one row for the promotion, none for the erased user"
    );
    let (event_type, subject, data, state) = &rows[0];
    assert_eq!(event_type, "event.rsvp.changed");
    assert_eq!(
        subject,
        &format!("{PREFIX}.out.{tenant}.event.rsvp.changed")
    );
    assert_eq!(state, "pending");
    assert_eq!(data["reason"], "promoted");
    assert_eq!(data["previous_status"], "waitlisted");
    assert_eq!(data["status"], "going");
    assert_eq!(data["user_id"], w1.to_string());
    assert_eq!(data["event_id"], c.to_string());
    assert!(!data.to_string().contains(&u.to_string()));
    assert_eq!(erased.changed_events.len(), 1);
    assert_eq!(Uuid::from(erased.changed_events[0].id), c);

    // Erasing a waitlisted user frees no seat: nobody is promoted.
    let erased = dsar::erase(
        &t.pool,
        &subjects(),
        TenantId::from(tenant),
        UserId::from(w2),
        &[],
    )
    .await
    .expect("erase succeeds");
    assert_eq!(erased.summary["counts"]["rsvps_deleted"], 1);
    assert_eq!(erased.outbox_rows, 0);
    assert_counters_exact(&t.pool).await;
    let outbox_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&t.pool)
        .await
        .expect("count");
    assert_eq!(outbox_rows, 1);
}

#[tokio::test]
async fn erase_of_a_user_without_data_changes_nothing() {
    let t = TestDb::new().await;
    let f = original_fixture(&t.pool).await;
    let before = snapshot(&t.pool, f.tenant).await;
    let stranger = Uuid::new_v4();

    let bundle = dsar::export(&t.pool, TenantId::from(f.tenant), UserId::from(stranger))
        .await
        .expect("export succeeds");
    for key in ["events_created", "rsvps", "attendance", "outbox"] {
        assert_eq!(len(&bundle, key), 0, "{key}");
    }
    let erased = dsar::erase(
        &t.pool,
        &subjects(),
        TenantId::from(f.tenant),
        UserId::from(stranger),
        &[],
    )
    .await
    .expect("erase succeeds");
    assert_eq!(
        erased.summary["counts"],
        json!({
            "events_anonymized": 0,
            "rsvps_deleted": 0,
            "attendance_deleted": 0,
            "attendance_marked_by_redacted": 0,
            "outbox_scrubbed": 0,
            "role_bindings_deleted": 0,
            "memberships_deleted": 0,
            "feed_tokens_deleted": 0,
            "series_anonymized": 0,
            "audit_entries_anonymized": 0,
        })
    );
    assert!(erased.changed_events.is_empty());
    assert_eq!(snapshot(&t.pool, f.tenant).await, before);

    // The nil id (what erase writes over erased users) is nobody's.
    dsar::erase(
        &t.pool,
        &subjects(),
        TenantId::from(f.tenant),
        UserId::from(f.u),
        &[],
    )
    .await
    .expect("erase succeeds");
    let before = snapshot(&t.pool, f.tenant).await;
    let erased = dsar::erase(
        &t.pool,
        &subjects(),
        TenantId::from(f.tenant),
        UserId::from(Uuid::nil()),
        &[],
    )
    .await
    .expect("erase succeeds");
    assert_eq!(erased.summary["counts"]["events_anonymized"], 0);
    assert_eq!(snapshot(&t.pool, f.tenant).await, before);
    let bundle = dsar::export(&t.pool, TenantId::from(f.tenant), UserId::from(Uuid::nil()))
        .await
        .expect("export succeeds");
    assert_eq!(len(&bundle, "events_created"), 0);
}

#[tokio::test]
async fn other_tenants_are_untouched() {
    let t = TestDb::new().await;
    let f = original_fixture(&t.pool).await;
    // The same user in another tenant.
    let other = Uuid::new_v4();
    let e = event(&t.pool, other, f.u, Some(1)).await;
    rsvp(&t.pool, other, e, f.u, "going", None).await;
    rsvp(&t.pool, other, e, f.o, "waitlisted", Some(1)).await;
    attend(&t.pool, other, e, f.u, f.u).await;
    outbox(
        &t.pool,
        other,
        e,
        "event.created",
        json!({"event_id": e.to_string(), "created_by": f.u.to_string()}),
        "pending",
        0,
    )
    .await;
    recount(&t.pool).await;
    let before = snapshot(&t.pool, other).await;

    let bundle = dsar::export(&t.pool, TenantId::from(f.tenant), UserId::from(f.u))
        .await
        .expect("export succeeds");
    assert_eq!(len(&bundle, "events_created"), 1);
    assert_eq!(len(&bundle, "rsvps"), 1);
    assert_eq!(len(&bundle, "attendance"), 2);
    assert_eq!(len(&bundle, "outbox"), 2);
    assert!(!bundle.to_string().contains(&other.to_string()));

    let erased = dsar::erase(
        &t.pool,
        &subjects(),
        TenantId::from(f.tenant),
        UserId::from(f.u),
        &[],
    )
    .await
    .expect("erase succeeds");
    assert_eq!(erased.summary["counts"]["rsvps_deleted"], 1);
    assert_eq!(erased.summary["counts"]["outbox_scrubbed"], 2);
    assert_eq!(
        snapshot(&t.pool, other).await,
        before,
        "the other tenant is untouched"
    );
    assert_counters_exact(&t.pool).await;
}

// Reference test 20, plus pending and dead rows.
#[tokio::test]
async fn purge_deletes_only_old_published_outbox_rows() {
    let t = TestDb::new().await;
    let tenant = Uuid::new_v4();
    let e = Uuid::new_v4();
    let body = || json!({"event_id": e.to_string()});
    let old = outbox(&t.pool, tenant, e, "event.created", body(), "published", 31).await;
    let recent = outbox(&t.pool, tenant, e, "event.updated", body(), "published", 3).await;
    let pending = outbox(&t.pool, tenant, e, "event.updated", body(), "pending", 40).await;
    let dead = outbox(&t.pool, tenant, e, "event.updated", body(), "dead", 40).await;

    let report = dsar::purge_published_outbox(&t.pool, 30)
        .await
        .expect("purge succeeds");

    assert_eq!(report["service"], "events");
    assert_eq!(report["counts"], json!({"published_outbox_deleted": 1}));
    assert!(is_utc(&report["executed_at"]));
    let cutoff = &report["cutoffs"]["published_outbox_before"];
    assert!(is_utc(cutoff), "{report}");
    let executed =
        chrono::DateTime::parse_from_rfc3339(report["executed_at"].as_str().unwrap_or_default())
            .expect("executed_at parses");
    let cutoff = chrono::DateTime::parse_from_rfc3339(cutoff.as_str().unwrap_or_default())
        .expect("cutoff parses");
    assert_eq!((executed - cutoff).num_days(), 30);
    let mut keys: Vec<&str> = report
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["counts", "cutoffs", "executed_at", "service"]);

    let mut left: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM outbox")
        .fetch_all(&t.pool)
        .await
        .expect("outbox read");
    left.sort_unstable();
    let mut expected = vec![recent, pending, dead];
    expected.sort_unstable();
    assert_eq!(left, expected);
    assert!(!left.contains(&old));

    let again = dsar::purge_published_outbox(&t.pool, 30)
        .await
        .expect("purge succeeds");
    assert_eq!(again["counts"]["published_outbox_deleted"], 0);
}

#[tokio::test]
async fn erase_starts_over_when_the_user_writes_meanwhile() {
    let t = TestDb::new().await;
    let f = original_fixture(&t.pool).await;
    let z = event(&t.pool, f.tenant, f.o, None).await;

    // Another writer holds B's counters, as a batch does, so the erase waits.
    let mut writer = t.pool.begin().await.expect("writer begins");
    sqlx::query("SELECT 1 FROM event_counters WHERE event_id = $1 FOR UPDATE")
        .bind(f.b)
        .execute(&mut *writer)
        .await
        .expect("writer locks B");
    let pool = t.pool.clone();
    let tenant = TenantId::from(f.tenant);
    let user = UserId::from(f.u);
    let erase =
        tokio::spawn(async move { dsar::erase(&pool, &subjects(), tenant, user, &[]).await });
    let mut waited = 0;
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&t.pool)
        .await
        .expect("activity read");
        if waiting > 0 {
            break;
        }
        waited += 1;
        assert!(waited < 500, "the erase never waited for the writer's lock");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Meanwhile the user answers an event the erase did not lock.
    sqlx::query(
        "INSERT INTO event_rsvps (event_id, user_id, tenant_id, status) VALUES ($1, $2, $3, 'interested')",
    )
    .bind(z)
    .bind(f.u)
    .bind(f.tenant)
    .execute(&mut *writer)
    .await
    .expect("writer inserts");
    sqlx::query("UPDATE event_counters SET interested = interested + 1 WHERE event_id = $1")
        .bind(z)
        .execute(&mut *writer)
        .await
        .expect("writer counts");
    writer.commit().await.expect("writer commits");

    let erased = erase.await.expect("erase task").expect("erase succeeds");
    assert_eq!(erased.summary["counts"]["rsvps_deleted"], 2);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM event_rsvps WHERE user_id = $1")
        .bind(f.u)
        .fetch_one(&t.pool)
        .await
        .expect("count");
    assert_eq!(left, 0);
    assert_counters_exact(&t.pool).await;
}
