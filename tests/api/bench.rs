//! `events-bench`: short runs of the real binary against a running service,
//! so the benchmark keeps working as the service changes.

use serde_json::Value;

use crate::helpers::{NATS_URL, Run, TEST_SECRET, TestApp, events_bench, run_blocking};

impl Run {
    /// The one JSON object `--json` prints for the scenario.
    fn report(&self) -> Value {
        assert_eq!(self.code, Some(0), "{self:?}");
        let lines: Vec<&str> = self
            .stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "one JSON line on stdout: {self:?}");
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// Runs `events-bench <args>` aimed at `prefix`, off the runtime's threads
/// so the in-process service keeps answering.
async fn bench(prefix: &str, args: &[&str]) -> Run {
    let mut cmd = events_bench();
    cmd.env("NATS_URL", NATS_URL)
        .env("EVENTS_SUBJECT_PREFIX", prefix)
        .env("BFF_INTERNAL_HMAC_SECRET", TEST_SECRET);
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || run_blocking(cmd, args, None))
        .await
        .expect("the runner thread")
}

fn assert_measured(report: &Value, scenario: &str, transport: &str) {
    assert_eq!(report["scenario"], scenario, "{report}");
    assert_eq!(report["transport"], transport, "{report}");
    assert_eq!(report["concurrency"], 4, "{report}");
    let requests = report["requests"].as_u64().expect("requests");
    assert!(requests > 0, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(
        report["throughput_rps"].as_f64().expect("throughput") > 0.0,
        "{report}"
    );
    let at = |k: &str| {
        report[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k}: {report}"))
    };
    assert!(
        at("p50_us") <= at("p90_us") && at("p90_us") <= at("p99_us"),
        "{report}"
    );
    assert!(at("p99_us") <= at("max_us") && at("max_us") > 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_over_nats_and_http_are_measured_and_reported_as_json() {
    let app = TestApp::spawn().await;
    let prefix = &app.isolation.prefix;
    let common = ["--duration", "1", "--concurrency", "4", "--events", "20"];

    let run = bench(prefix, &[&["get", "--json"][..], &common[..]].concat()).await;
    assert_measured(&run.report(), "get", "nats");
    assert!(run.stderr.contains("seeding 20 events"), "{run:?}");

    let url = app.url("");
    let http = [
        &["get", "--json", "--transport", "http", "--http-url", &url][..],
        &common[..],
    ]
    .concat();
    assert_measured(&bench(prefix, &http).await.report(), "get", "http");

    // Every run seeded its own tenant through the public API.
    let tenants: i64 = sqlx::query_scalar("SELECT count(DISTINCT tenant_id) FROM events")
        .fetch_one(&app.db)
        .await
        .expect("count tenants");
    assert_eq!(tenants, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsvp_hot_fills_the_capacity_and_waitlists_the_rest() {
    let app = TestApp::spawn().await;
    let args = [
        "rsvp-hot",
        "--json",
        "--duration",
        "1",
        "--concurrency",
        "4",
        "--capacity",
        "3",
    ];
    let report = bench(&app.isolation.prefix, &args).await.report();
    assert_measured(&report, "rsvp-hot", "nats");
    assert_eq!(report["capacity"], 3, "{report}");
    assert_eq!(report["capacity_respected"], true, "{report}");
    assert_eq!(report["going"], 3, "{report}");
    assert!(
        report["waitlisted"].as_u64().expect("waitlisted") > 0,
        "{report}"
    );

    // What the reply said is what Postgres holds.
    let (going, waitlisted): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'going'), count(*) FILTER (WHERE status = 'waitlisted')
         FROM event_rsvps",
    )
    .fetch_one(&app.db)
    .await
    .expect("count RSVPs");
    assert_eq!(going, 3);
    assert_eq!(Some(waitlisted), report["waitlisted"].as_i64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_service_the_benchmark_stops_and_says_why() {
    let prefix = format!("nobody{}", uuid::Uuid::new_v4().simple());
    let run = bench(&prefix, &["get", "--duration", "1", "--events", "5"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(run.stderr.contains("seeding failed"), "{run:?}");
    assert!(
        run.stderr.contains(&prefix),
        "names the subject nobody answered: {run:?}"
    );
}

/// The soak checks the stream against the outbox at the end: with faults
/// injected by a command (here one that only succeeds), nothing is lost or
/// duplicated, and the service's memory is sampled over the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_samples_memory_runs_its_faults_and_finds_every_change_in_the_stream() {
    let app = TestApp::spawn().await;
    let database_url = app.isolation.database_url();
    let pid = std::process::id().to_string();
    let args = [
        "soak",
        "--json",
        "--duration",
        "3",
        "--concurrency",
        "4",
        "--events",
        "10",
        "--sample",
        "1",
        "--fault-cmd",
        "true",
        "--fault-every",
        "1",
        "--pid",
        &pid,
        "--database-url",
        &database_url,
        "--stream",
        &app.isolation.stream,
    ];
    let report = bench(&app.isolation.prefix, &args).await.report();
    assert_measured(&report, "soak", "nats");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicated"], 0, "{report}");
    let rows = report["outbox_rows"].as_u64().expect("outbox rows");
    assert!(rows >= 10, "at least the seeded creates: {report}");
    assert_eq!(report["stream_messages"], rows, "{report}");
    assert!(report["faults"].as_u64().expect("faults") >= 1, "{report}");
    let samples = report["rss_samples"].as_array().expect("samples");
    assert!(samples.len() >= 3, "{report}");
    assert!(
        samples
            .iter()
            .all(|s| s[1].as_f64().is_some_and(|mb| mb > 0.0)),
        "{report}"
    );
}
