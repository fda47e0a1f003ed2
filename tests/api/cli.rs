//! The binary itself: exit codes and messages of `events-svc`.

use std::process::Command;

use crate::helpers::{Isolation, cleanup, events_svc};

#[test]
fn a_missing_secret_is_one_line_naming_the_variable_and_dev_mode() {
    let out = events_svc().arg("serve").output().expect("run");
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("BFF_INTERNAL_HMAC_SECRET") && stderr.contains("EVENTS_DEV=1"),
        "{stderr}"
    );
}

#[test]
fn a_bad_url_names_the_variable_and_the_value() {
    let out = events_svc()
        .env("BFF_INTERNAL_HMAC_SECRET", "x")
        .env("NATS_URL", "localhost:4222")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NATS_URL") && stderr.contains("localhost:4222"),
        "{stderr}"
    );
}

#[test]
fn help_explains_every_setting_with_its_variable() {
    let out = events_svc().arg("--help").output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "DATABASE_URL",
        "NATS_URL",
        "NATS_CREDS_FILE",
        "NATS_USER",
        "NATS_PASSWORD",
        "NATS_TOKEN",
        "EVENTS_HTTP_ADDR",
        "BFF_INTERNAL_HMAC_SECRET",
        "EVENTS_AUTHZ",
        "ACCESS_BASE_URL",
        "PORTAL_SERVICE_URL",
        "EVENTS_SUBJECT_PREFIX",
        "EVENTS_STREAM",
        "EVENTS_OUT_ENCODING",
        "EVENTS_RETENTION_PUBLISHED_OUTBOX_DAYS",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_SERVICE_NAME",
        "RUST_LOG",
        "EVENTS_LOG_FORMAT",
        "EVENTS_AUTO_MIGRATE",
        "EVENTS_DEV",
    ] {
        assert!(help.contains(var), "--help does not mention {var}");
    }
}

#[test]
fn migrate_creates_and_migrates_a_fresh_database() {
    let isolation = Isolation::new();
    let out = events_svc()
        .arg("migrate")
        .env("DATABASE_URL", isolation.database_url())
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("up to date"), "{stdout}");
    // Running it again is harmless.
    let again = events_svc()
        .arg("migrate")
        .env("DATABASE_URL", isolation.database_url())
        .output()
        .expect("run");
    assert!(again.status.success());
    cleanup(&isolation.db_name, &isolation.stream);
}

#[test]
fn healthcheck_fails_when_nothing_listens() {
    let port = crate::helpers::free_port();
    let out = events_svc()
        .args([
            "healthcheck",
            "--url",
            &format!("http://127.0.0.1:{port}/health"),
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
}

fn run_json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).expect("JSON on stdout")
}

#[tokio::test]
async fn outbox_commands_show_retry_and_preview_rows() {
    let app =
        crate::helpers::TestApp::spawn_with(|s| s.outbox_poll_interval = Some("1h".into())).await;
    let url = app.isolation.database_url();
    // A dead row and a pending one, inserted behind the publisher's back.
    let dead = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO outbox (id, tenant_id, event_id, event_type, subject, payload, state, dead_at, attempts, last_error)
         VALUES ($1, $2, $2, 'event.created', 'x.out.t.event.created', '{}'::jsonb, 'dead', now(), 50, 'rejected')",
    )
    .bind(dead)
    .bind(uuid::Uuid::new_v4())
    .execute(&app.db)
    .await
    .expect("dead row");
    let status = run_json(
        events_svc()
            .args(["outbox", "status", "--json"])
            .env("DATABASE_URL", &url),
    );
    assert_eq!(status["dead"], 1);
    assert_eq!(status["by_type"][0]["last_error"], "rejected");

    let table = events_svc()
        .args(["outbox", "status"])
        .env("DATABASE_URL", &url)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("dead       1") && text.contains("rejected"),
        "{text}"
    );

    let out = events_svc()
        .args(["outbox", "retry-dead", "--id", &dead.to_string()])
        .env("DATABASE_URL", &url)
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 dead row(s) put back"));
    let preview = run_json(
        events_svc()
            .args(["outbox", "dry-run", "--limit", "5"])
            .env("DATABASE_URL", &url),
    );
    assert_eq!(preview[0]["headers"]["Nats-Msg-Id"], dead.to_string());
    assert_eq!(preview[0]["message"]["specversion"], "1.0");
    let state: String = sqlx::query_scalar("SELECT state::text FROM outbox WHERE id = $1")
        .bind(dead)
        .fetch_one(&app.db)
        .await
        .expect("state");
    assert_eq!(state, "pending", "a dry run publishes nothing");
}

#[tokio::test]
async fn purge_retention_deletes_only_old_published_rows() {
    // The test moves the publisher's cursor itself: no publisher runs.
    let mut app = crate::helpers::TestApp::spawn().await;
    let db = sqlx::PgPool::connect(&app.isolation.database_url())
        .await
        .expect("pool");
    app.stop().await;
    let insert = |days_ago: i32, state: &'static str| {
        sqlx::query(
            "INSERT INTO outbox (id, tenant_id, event_id, event_type, subject, payload, state, occurred_at, published_at, published_seq)
             VALUES ($1, $2, $2, 'event.created', 'x', '{}'::jsonb, $3::outbox_state, now() - make_interval(days => $4),
                     CASE WHEN $3 = 'published' THEN now() - make_interval(days => $4) END,
                     CASE WHEN $3 = 'published' THEN nextval('outbox_published_seq') END)",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(uuid::Uuid::new_v4())
        .bind(state)
        .bind(days_ago)
    };
    insert(31, "published").execute(&db).await.expect("old");
    insert(3, "published").execute(&db).await.expect("recent");
    insert(40, "pending")
        .execute(&db)
        .await
        .expect("old pending");
    // Rows published by the cursor: one it passed 31 days ago, one it
    // passed yesterday, and one above it (pending).
    let written = |days_ago: i32| {
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO outbox (id, tenant_id, event_id, event_type, subject, payload, occurred_at)
             VALUES ($1, $2, $2, 'event.created', 'x', '{}'::jsonb, now() - make_interval(days => $3))
             RETURNING seq",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(uuid::Uuid::new_v4())
        .bind(days_ago)
    };
    let passed_long_ago = written(40).fetch_one(&db).await.expect("old");
    let passed_yesterday = written(2).fetch_one(&db).await.expect("recent");
    written(40).fetch_one(&db).await.expect("above the cursor");
    sqlx::query("UPDATE outbox_cursor SET published_through = $1, sending_through = $1")
        .bind(passed_yesterday)
        .execute(&db)
        .await
        .expect("move the cursor");
    sqlx::query(
        "INSERT INTO outbox_progress (second, through, at) VALUES
             (date_trunc('second', now() - interval '31 days'), $1, now() - interval '31 days'),
             (date_trunc('second', now() - interval '1 day'), $2, now() - interval '1 day')",
    )
    .bind(passed_long_ago)
    .bind(passed_yesterday)
    .execute(&db)
    .await
    .expect("its progress");
    let report = run_json(
        events_svc()
            .arg("purge-retention")
            .env("DATABASE_URL", app.isolation.database_url())
            .env("EVENTS_RETENTION_PUBLISHED_OUTBOX_DAYS", "30"),
    );
    assert_eq!(report["counts"]["published_outbox_deleted"], 2);
    assert_eq!(report["service"], "events");
    let left: Vec<String> =
        sqlx::query_scalar("SELECT status || ' ' || seq FROM outbox_view ORDER BY seq")
            .fetch_all(&db)
            .await
            .expect("rows");
    assert_eq!(left.len(), 4, "{left:?}");
    assert!(
        !left.contains(&format!("published {passed_long_ago}")),
        "{left:?}"
    );
    assert!(
        left.contains(&format!("published {passed_yesterday}")),
        "{left:?}"
    );
    let (old, yesterday): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE at < now() - interval '30 days'),
                count(*) FILTER (WHERE through = $1)
         FROM outbox_progress",
    )
    .bind(passed_yesterday)
    .fetch_one(&db)
    .await
    .expect("progress");
    assert_eq!(
        (old, yesterday),
        (0, 1),
        "the seconds of deleted rows go with them, the others stay"
    );
}

#[test]
fn dsar_refuses_ids_that_are_not_uuids() {
    let out = events_svc()
        .args(["dsar", "export", "--tenant-id", "x", "--user-id", "y"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be valid UUID values"));
}

/// An erase run from the console changes rows behind the running
/// instances' caches: it tells them, as instances tell each other.
#[tokio::test]
async fn a_dsar_erase_from_the_console_is_seen_by_a_running_instance_at_once() {
    use serde_json::json;

    let app = crate::helpers::TestApp::spawn_trusting_its_cache().await;
    let tenant = uuid::Uuid::new_v4();
    let user = uuid::Uuid::new_v4();
    let boss = crate::helpers::admin(tenant);
    let created = app
        .client()
        .call(
            "event.create",
            &boss,
            &crate::http_contract::event_body(tenant, "Erased later"),
        )
        .await
        .expect("create");
    let id = created.body["id"].clone();
    let who = crate::helpers::identity(tenant, user);
    let set = app
        .client()
        .call("rsvp.set", &who, &json!({"eventId": id, "status": "going"}))
        .await
        .expect("rsvp");
    assert_eq!(set.status, 200, "{:?}", set.body);
    let going =
        |reply: &updspace_events::client::CallReply| reply.body["rsvpCounts"]["going"].clone();
    let before = app
        .client()
        .call("event.get", &boss, &json!({"id": id}))
        .await
        .expect("get");
    assert_eq!(going(&before), json!(1));

    let out = events_svc()
        .env("DATABASE_URL", app.isolation.database_url())
        .env("NATS_URL", crate::helpers::NATS_URL)
        .env("EVENTS_SUBJECT_PREFIX", &app.isolation.prefix)
        .args([
            "dsar",
            "erase",
            "--tenant-id",
            &tenant.to_string(),
            "--user-id",
            &user.to_string(),
        ])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let now = app
            .client()
            .call("event.get", &boss, &json!({"id": id}))
            .await
            .expect("get");
        if going(&now) == json!(0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the erased RSVP still counts after 2 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
