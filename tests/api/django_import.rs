//! The cut-over from the Django service: its schema, filled with every kind
//! of row in a database of its own, imported by `events-svc import django`
//! into a running service, and compared through the public API and the
//! stream.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{
    NATS_URL, PG_SERVER, Run, TestApp, admin, events_svc, identity, run_blocking,
};
use crate::outbox::{read_stream, wait_for_stream};

const SCHEMA: &str = include_str!("../fixtures/django_schema.sql");

/// The original's database, dropped at the end.
struct SourceDb {
    name: String,
    pool: PgPool,
}

impl SourceDb {
    async fn create() -> Self {
        let name = format!("django_src_{}", &Uuid::new_v4().simple().to_string()[..12]);
        let admin = PgPool::connect(&format!("{PG_SERVER}/postgres"))
            .await
            .expect("postgres");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create source database");
        let pool = PgPool::connect(&format!("{PG_SERVER}/{name}"))
            .await
            .expect("source");
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .expect("the original's schema");
        Self { name, pool }
    }

    fn url(&self) -> String {
        format!("{PG_SERVER}/{}", self.name)
    }

    async fn drop(self) {
        self.pool.close().await;
        if let Ok(admin) = PgPool::connect(&format!("{PG_SERVER}/postgres")).await {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&admin)
            .await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn event(
    db: &PgPool,
    tenant: Uuid,
    scope_type: &str,
    scope_id: &str,
    visibility: &str,
    title: &str,
    location_url: Option<&str>,
    game_id: Option<&str>,
) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO events_event VALUES ($1, $2, $3, $4, $5, 'About it', '2026-05-01T21:00:00+03:00',
            '2026-05-01T21:00:00Z', 'Club', $6, $7, $8, $9,
            '2026-04-01T10:00:00.123456Z', '2026-04-02T10:00:00Z')",
    )
    .bind(id)
    .bind(tenant)
    .bind(scope_type)
    .bind(scope_id)
    .bind(title)
    .bind(location_url)
    .bind(game_id)
    .bind(visibility)
    .bind(Uuid::new_v4())
    .execute(db)
    .await
    .expect("source event");
    id
}

async fn rsvp(db: &PgPool, tenant: Uuid, event: Uuid, user: Uuid, status: &str) {
    sqlx::query(
        "INSERT INTO events_rsvp (event_id, tenant_id, user_id, status, updated_at)
         VALUES ($1, $2, $3, $4, '2026-04-03T12:00:00Z')",
    )
    .bind(event)
    .bind(tenant)
    .bind(user)
    .bind(status)
    .execute(db)
    .await
    .expect("source rsvp");
}

async fn outbox(
    db: &PgPool,
    tenant: Uuid,
    event: Uuid,
    kind: &str,
    at: &str,
    published: bool,
) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO events_outbox (id, tenant_id, event_type, payload, occurred_at, published_at)
         VALUES ($1, $2, $3, $4, $5::timestamptz, CASE WHEN $6 THEN now() END)",
    )
    .bind(id)
    .bind(tenant)
    .bind(kind)
    .bind(json!({"event_id": event.to_string(), "tenant_id": tenant.to_string()}))
    .bind(at)
    .bind(published)
    .execute(db)
    .await
    .expect("source outbox row");
    id
}

fn import(app: &TestApp, source: &str, extra: &[&str]) -> Run {
    let mut cmd = events_svc();
    cmd.env("DATABASE_URL", app.isolation.database_url())
        .env("NATS_URL", NATS_URL)
        .env("EVENTS_SUBJECT_PREFIX", &app.isolation.prefix);
    let mut args: Vec<String> = ["import", "django", "--source", source, "--quiet"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    run_blocking(cmd, args, None)
}

/// `(created, updated, unchanged, fixed, refused)` of one table's line.
fn tally(run: &Run, table: &str) -> [u64; 5] {
    let line = run
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(table))
        .unwrap_or_else(|| panic!("no {table} line in:\n{}", run.stdout));
    let n: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().expect("a count"))
        .collect();
    [n[0], n[1], n[2], n[3], n[4]]
}

async fn get(app: &TestApp, who: &updspace_events::client::Identity, id: Uuid) -> Value {
    let reply = app
        .client()
        .call("event.get", who, &json!({"id": id}))
        .await
        .expect("reply");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body
}

#[tokio::test]
async fn the_django_data_is_imported_verified_and_re_imported_for_the_delta() {
    let app = TestApp::spawn_trusting_its_cache().await;
    let source = SourceDb::create().await;
    let db = &source.pool;
    let (t, big) = (Uuid::new_v4(), Uuid::new_v4());
    let (u1, u2, u3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let community = Uuid::new_v4().to_string().to_uppercase();
    let team = Uuid::new_v4().to_string();
    let tenant_wide = event(
        db,
        t,
        "TENANT",
        &t.to_string().to_uppercase(),
        "public",
        "Board games",
        Some(""),
        Some(""),
    )
    .await;
    let in_community = event(
        db,
        t,
        "COMMUNITY",
        &community,
        "community",
        "Guild meet",
        None,
        None,
    )
    .await;
    let in_team = event(
        db,
        t,
        "TEAM",
        &team,
        "team",
        "Raid",
        Some("https://x.example/raid"),
        Some("wow"),
    )
    .await;
    let private = event(
        db,
        t,
        "TENANT",
        &t.to_string(),
        "private",
        "Planning",
        None,
        None,
    )
    .await;
    // A visibility the scope cannot have: the original stored it.
    let misfit = event(db, t, "COMMUNITY", &community, "team", "Misfit", None, None).await;
    rsvp(db, t, tenant_wide, u1, "going").await;
    rsvp(db, t, tenant_wide, u2, "interested").await;
    rsvp(db, t, tenant_wide, u3, "not_going").await;
    rsvp(db, t, in_community, u1, "interested").await;
    sqlx::query(
        "INSERT INTO events_attendance (event_id, tenant_id, user_id, marked_by, marked_at)
         VALUES ($1, $2, $3, $4, '2026-05-01T19:00:00Z')",
    )
    .bind(tenant_wide)
    .bind(t)
    .bind(u1)
    .bind(u2)
    .execute(db)
    .await
    .expect("attendance");
    outbox(
        db,
        t,
        tenant_wide,
        "event.created",
        "2026-04-01T10:00:00Z",
        true,
    )
    .await;
    let second = outbox(
        db,
        t,
        in_community,
        "event.updated",
        "2026-04-03T12:00:02Z",
        false,
    )
    .await;
    let first = outbox(
        db,
        t,
        tenant_wide,
        "event.rsvp.changed",
        "2026-04-03T12:00:01Z",
        false,
    )
    .await;
    // A tenant of 10,000 events, each with one RSVP.
    sqlx::query(
        "INSERT INTO events_event
         SELECT gen_random_uuid(), $1, 'TENANT', $1::text, 'Event ' || n, '', now() + n * interval '1 hour',
                now() + n * interval '1 hour' + interval '2 hours', '', NULL, NULL, 'public',
                gen_random_uuid(), now(), now()
         FROM generate_series(1, 10000) n",
    )
    .bind(big)
    .execute(db)
    .await
    .expect("big tenant");
    sqlx::query(
        "INSERT INTO events_rsvp (event_id, tenant_id, user_id, status, updated_at)
         SELECT id, tenant_id, gen_random_uuid(), 'going', now() FROM events_event WHERE tenant_id = $1",
    )
    .bind(big)
    .execute(db)
    .await
    .expect("big tenant's RSVPs");

    // Without --fix: the misfit is listed, the rest imported, exit 1.
    let run = import(&app, &source.url(), &[]);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "events {misfit}: visibility team does not fit a COMMUNITY scope"
        )),
        "{}",
        run.stdout
    );
    assert_eq!(tally(&run, "events"), [10_004, 0, 0, 0, 1]);
    assert!(run.stdout.contains("DIFFERS"));

    // With --fix: everything is here and verified.
    let started = Instant::now();
    let run = import(&app, &source.url(), &["--fix"]);
    let took = started.elapsed();
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("verified: everything at the source is here")
    );
    assert_eq!(tally(&run, "events"), [1, 0, 10_004, 1, 0]);
    println!(
        "second run (10,005 events, 10,004 RSVPs, most unchanged) took {:.2} s",
        took.as_secs_f64()
    );

    // The public API shows the original's ids, fields and answers.
    let view = get(&app, &identity(t, u1), tenant_wide).await;
    assert_eq!(view["title"], json!("Board games"));
    assert_eq!(view["scopeId"], json!(t.to_string()));
    assert_eq!(view["startsAt"], json!("2026-05-01T18:00:00Z"));
    // Stored as 21:00 at +03:00: 18:00 UTC.
    assert_eq!(view["endsAt"], json!("2026-05-01T21:00:00Z"));
    // Views show milliseconds; the row keeps the source's microseconds.
    assert_eq!(view["createdAt"], json!("2026-04-01T10:00:00.123Z"));
    let kept: (String, String) = sqlx::query_as(
        "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),
                to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')
         FROM events WHERE id = $1",
    )
    .bind(tenant_wide)
    .fetch_one(&app.db)
    .await
    .expect("stored times");
    assert_eq!(
        kept,
        (
            "2026-04-01 10:00:00.123456".into(),
            "2026-04-02 10:00:00.000000".into()
        )
    );
    assert_eq!(view["locationUrl"], Value::Null);
    assert_eq!(view["myRsvp"], json!("going"));
    assert_eq!(view["rsvpCounts"]["going"], json!(1));
    assert_eq!(view["rsvpCounts"]["interested"], json!(1));
    assert_eq!(view["rsvpCounts"]["not_going"], json!(1));
    assert_eq!(
        get(&app, &identity(t, u2), tenant_wide).await["myRsvp"],
        json!("interested")
    );
    let team_view = get(&app, &admin(t), in_team).await;
    assert_eq!(team_view["gameId"], json!("wow"));
    assert_eq!(team_view["scopeId"], json!(team));
    assert_eq!(
        get(&app, &admin(t), in_community).await["scopeId"],
        json!(community.to_lowercase())
    );
    assert_eq!(
        get(&app, &admin(t), private).await["visibility"],
        json!("private")
    );
    assert_eq!(
        get(&app, &admin(t), misfit).await["visibility"],
        json!("private")
    );
    let attended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_attendance WHERE event_id = $1 AND marked_by = $2",
    )
    .bind(tenant_wide)
    .bind(u2)
    .fetch_one(&app.db)
    .await
    .expect("attendance here");
    assert_eq!(attended, 1);

    // Only the unpublished rows reach the stream, once, in their order, with their ids.
    assert_eq!(
        wait_for_stream(NATS_URL, &app.isolation.stream, 2, Duration::from_secs(10)).await,
        2
    );
    let stream = read_stream(NATS_URL, &app.isolation.stream).await;
    let ids: Vec<&str> = stream.iter().map(|m| m.msg_id.as_str()).collect();
    assert_eq!(ids, vec![first.to_string(), second.to_string()]);

    // A third run changes nothing.
    let run = import(&app, &source.url(), &["--fix"]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    for table in ["events", "rsvps", "attendance"] {
        let [created, updated, ..] = tally(&run, table);
        assert_eq!((created, updated), (0, 0), "{table}: {}", run.stdout);
    }
    assert_eq!(tally(&run, "outbox")[2], 2);

    // The delta: a changed title, an RSVP gone at the source.
    sqlx::query("UPDATE events_event SET title = 'Guild meet (moved)' WHERE id = $1")
        .bind(in_community)
        .execute(db)
        .await
        .expect("change at the source");
    sqlx::query("DELETE FROM events_rsvp WHERE user_id = $1")
        .bind(u3)
        .execute(db)
        .await
        .expect("delete at the source");
    // The Django publisher stamps a row it had not published before.
    sqlx::query("UPDATE events_outbox SET published_at = now() WHERE id = $1")
        .bind(second)
        .execute(db)
        .await
        .expect("stamped at the source");
    let run = import(&app, &source.url(), &["--fix", "--dry-run"]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(tally(&run, "events")[1], 1);
    assert_eq!(
        get(&app, &admin(t), in_community).await["title"],
        json!("Guild meet"),
        "a dry run writes nothing"
    );

    let run = import(&app, &source.url(), &["--fix"]);
    assert_eq!(
        run.code,
        Some(1),
        "a row gone from the source is reported: {}\n{}",
        run.stdout,
        run.stderr
    );
    assert_eq!(tally(&run, "events")[1], 1);
    assert!(
        run.stdout.contains(&format!("rsvps {tenant_wide}/{u3}")),
        "{}",
        run.stdout
    );
    let outbox_line = run
        .stdout
        .lines()
        .find(|l| l.starts_with(&t.to_string()) && l.contains("unpublished outbox"))
        .unwrap_or_else(|| panic!("no outbox line: {}", run.stdout));
    assert!(
        outbox_line.ends_with("ok"),
        "a row published at the source since is no difference: {outbox_line}"
    );
    // The running instance cached the event: the import's note makes it reload.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let title = get(&app, &admin(t), in_community).await["title"].clone();
        if title == json!("Guild meet (moved)") {
            break;
        }
        assert!(Instant::now() < deadline, "still {title} after 2 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    source.drop().await;
}

#[tokio::test]
async fn an_unreachable_source_fails_with_one_line() {
    let app = TestApp::spawn().await;
    let run = import(&app, "postgres://postgres@127.0.0.1:1/django", &[]);
    assert_eq!(run.code, Some(69), "{}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot connect to the source database"),
        "{}",
        run.stderr
    );
    let imported: i64 = sqlx::query_scalar("SELECT count(*) FROM django_import")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(imported, 0);
}

#[tokio::test]
async fn one_tenant_is_imported_alone_and_a_database_that_is_not_the_django_one_is_refused() {
    let app = TestApp::spawn().await;
    let source = SourceDb::create().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mine = event(
        &source.pool,
        a,
        "TENANT",
        &a.to_string(),
        "public",
        "Mine",
        None,
        None,
    )
    .await;
    let theirs = event(
        &source.pool,
        b,
        "TENANT",
        &b.to_string(),
        "public",
        "Theirs",
        None,
        None,
    )
    .await;
    rsvp(&source.pool, a, mine, Uuid::new_v4(), "going").await;
    rsvp(&source.pool, b, theirs, Uuid::new_v4(), "going").await;

    let run = import(&app, &source.url(), &["--tenant-id", &a.to_string()]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&a.to_string()));
    assert!(!run.stdout.contains(&b.to_string()), "{}", run.stdout);
    let here: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM events")
        .fetch_all(&app.db)
        .await
        .expect("events");
    assert_eq!(here, vec![mine]);

    // This service's own database has none of the original's tables.
    let run = import(&app, &app.isolation.database_url(), &[]);
    assert_eq!(run.code, Some(69), "{}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("has no table events_event"),
        "{}",
        run.stderr
    );
    source.drop().await;
}
