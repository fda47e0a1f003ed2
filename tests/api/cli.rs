//! The binary itself: exit codes and messages of `events-svc`.

use std::process::Command;

use crate::helpers::{Isolation, cleanup};

fn events_svc() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_events-svc"));
    // Start from a clean environment so the machine's settings do not leak in.
    for (key, _) in std::env::vars() {
        if key.starts_with("EVENTS_")
            || key.starts_with("NATS_")
            || key.starts_with("BFF_")
            || key == "DATABASE_URL"
        {
            cmd.env_remove(key);
        }
    }
    cmd
}

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
