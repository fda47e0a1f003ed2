//! Schemathesis against the running service and its own document: every
//! documented operation is called with generated requests, valid and
//! invalid, signed with HMAC v2 by `tests/schemathesis/hooks.py`. It fails
//! on any 5xx, on a response the document does not describe (status,
//! content type, headers, body), on input the document refuses that the
//! service accepts, on a missing required header that is not refused, and
//! on an undocumented method that is not a 405.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use uuid::Uuid;

use crate::helpers::{TEST_SECRET, TestApp, admin};
use crate::http_contract::{create, event_body, id_of};

const INSTALL: &str = "pip install -r tests/schemathesis/requirements.txt";

/// Generated cases per operation and phase: enough to reach every field's
/// rule, few enough for about a minute on two cores.
const MAX_EXAMPLES: &str = "5";

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance,negative_data_rejection,\
missing_required_header,unsupported_method";

fn schemathesis() -> Command {
    let mut command = Command::new("schemathesis");
    command.arg("run");
    command
}

#[tokio::test]
async fn schemathesis_finds_nothing_the_document_does_not_say() {
    let installed = Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        installed,
        "schemathesis is not installed (or not on PATH); install it with `{INSTALL}`"
    );

    let app = TestApp::spawn().await;
    let tenant = Uuid::new_v4();
    let caller = admin(tenant);
    let event = id_of(&create(&app, &caller, event_body(tenant, "Fuzzed")).await);
    let doomed = id_of(&create(&app, &caller, event_body(tenant, "Cancelled")).await);
    let hooks = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    let url = app.url("/api/v1/events/openapi.json");
    let stats_name = format!("schemathesis-{}.json", Uuid::new_v4());
    let stats_path = std::env::temp_dir().join(&stats_name);

    let mut command = schemathesis();
    command
        .arg(&url)
        .args(["--checks", CHECKS])
        .args(["--max-examples", MAX_EXAMPLES])
        // The `/api/v1/…` copies are the same operations, handlers and
        // schemas as `/api/v1/events/…`: testing one of each keeps the run
        // short (that both are routed is checked with the document itself).
        .args([
            "--include-path-regex",
            "^/(health|ready|metrics|api/v1/events(/.*)?)$",
        ])
        // A live stream stays open until the client leaves: every generated
        // request would wait out its timeout. tests/api/live.rs covers it.
        .args(["--exclude-operation-id", "stream"])
        .args(["--seed", "20260101"])
        .args(["--phases", "examples,coverage,fuzzing"])
        // One worker: with two, hypothesis parses lambda sources from two
        // threads at once, which CPython 3.11 before 3.11.8 does not survive
        // ("AST constructor recursion depth mismatch").
        .args(["--workers", "1"])
        .args(["--generation-database", "none"])
        .args(["--generation-with-security-parameters", "false"])
        .args(["--request-timeout", "10"])
        // The role-binding revoke reads the same fields from the query and
        // the body, whose patterns hypothesis mostly filters.
        .args(["--suppress-health-check", "filter_too_much"])
        .arg("--no-color")
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", &hooks)
        .env("EVENTS_ST_SECRET", TEST_SECRET)
        .env("EVENTS_ST_TENANT", &caller.tenant_id)
        .env("EVENTS_ST_USER", &caller.user_id)
        .env("EVENTS_ST_EVENT", &event)
        .env("EVENTS_ST_DOOMED", &doomed)
        .env("EVENTS_ST_STATS", &stats_path)
        .current_dir(std::env::temp_dir());
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the run finishes")
        .unwrap_or_else(|e| {
            panic!("schemathesis could not run ({e}); install it with `{INSTALL}`")
        });
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            l.contains("passed")
                || l.contains("failed")
                || l.contains("generated")
                || l.contains("cases")
        })
        .collect();
    println!(
        "schemathesis took {:.1} s\n{}",
        took.as_secs_f64(),
        summary.join("\n")
    );
    assert!(
        output.status.success(),
        "schemathesis found problems (exit {:?}):\n{stdout}\n{stderr}",
        output.status.code()
    );

    // The run reached the operations themselves: signed requests were
    // accepted and answered by every operation, not refused at the door.
    let stats: BTreeMap<String, BTreeMap<String, u64>> = std::fs::read_to_string(&stats_path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_else(|| panic!("the hooks wrote no statistics: {stderr}"));
    let _ = std::fs::remove_file(&stats_path);
    let mut total = 0;
    let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
    let mut unsuccessful = Vec::new();
    for (operation, statuses) in &stats {
        // The undocumented methods the run tries on each path.
        if statuses.keys().all(|s| s == "405") {
            continue;
        }
        let answered: u64 = statuses.values().sum();
        let refused: u64 = statuses.get("401").copied().unwrap_or(0);
        total += answered;
        for (status, n) in statuses {
            *by_status.entry(status.as_str()).or_default() += n;
        }
        println!("{operation}: {statuses:?}");
        if !statuses.keys().any(|s| s.starts_with('2')) {
            unsuccessful.push(operation.as_str());
        }
        assert!(
            refused * 2 < answered,
            "{operation}: most requests were not authenticated: {statuses:?}"
        );
    }
    println!("{total} requests: {by_status:?}");
    // Generated bodies rarely satisfy every rule between fields (a revoke
    // names either a binding or a user and role), so a few operations may
    // only ever refuse; most must have answered a success.
    println!("never a success: {unsuccessful:?}");
    assert!(
        unsuccessful.len() * 4 <= stats.len(),
        "too many operations never succeeded: {unsuccessful:?}"
    );
}
