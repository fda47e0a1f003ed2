//! `/ready` follows the dependencies; `/metrics` moves as operations run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::helpers::{TempDir, TestApp, admin, free_port, nats_server_bin};

async fn ready(app: &TestApp) -> (u16, Value) {
    let r = app.http.get(app.url("/ready")).send().await.expect("ready");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn wait_ready(app: &TestApp, want: u16) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = ready(app).await;
        if status == want {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/ready stayed {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn check<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {name} check in {body}"))
}

fn start_nats(port: u16, store: &TempDir) -> std::process::Child {
    std::process::Command::new(nats_server_bin())
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nats-server")
}

#[tokio::test]
async fn ready_turns_503_without_nats_and_back_to_200() {
    let port = free_port();
    let store = TempDir::new();
    let mut nats = start_nats(port, &store);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let app = TestApp::spawn_with(|s| s.nats_url = Some(format!("nats://127.0.0.1:{port}"))).await;
    let body = wait_ready(&app, 200).await;
    assert_eq!(body["status"], "ok");
    for name in ["postgres", "nats", "stream", "outbox_publisher"] {
        assert_eq!(check(&body, name)["status"], "ok", "{body}");
        assert!(check(&body, name)["latency_ms"].as_f64().is_some());
    }
    let _ = nats.kill();
    let _ = nats.wait();
    let body = wait_ready(&app, 503).await;
    assert_eq!(check(&body, "nats")["status"], "error", "{body}");
    assert_eq!(check(&body, "postgres")["status"], "ok");
    let health = app
        .http
        .get(app.url("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200, "liveness does not depend on NATS");
    let mut nats = start_nats(port, &store);
    wait_ready(&app, 200).await;
    drop(app);
    let _ = nats.kill();
    let _ = nats.wait();
}

#[tokio::test]
async fn ready_turns_503_without_postgres_and_back_to_200() {
    // The service reaches Postgres through a proxy the test can cut.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = proxy.local_addr().expect("addr").port();
    let open = Arc::new(AtomicBool::new(true));
    let links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
    let (gate, tasks) = (open.clone(), links.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = proxy.accept().await else {
                return;
            };
            if !gate.load(Ordering::SeqCst) {
                continue;
            }
            let link = tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
            tasks.lock().await.push(link);
        }
    });
    let app = TestApp::spawn_with(|s| {
        s.database_url = s
            .database_url
            .as_ref()
            .map(|u| u.replace("127.0.0.1:5432", &format!("127.0.0.1:{port}")));
    })
    .await;
    wait_ready(&app, 200).await;
    // Cut every connection and refuse new ones.
    open.store(false, Ordering::SeqCst);
    for link in links.lock().await.drain(..) {
        link.abort();
    }
    let body = wait_ready(&app, 503).await;
    assert_eq!(check(&body, "postgres")["status"], "error", "{body}");
    let health = app
        .http
        .get(app.url("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200, "liveness does not depend on Postgres");
    open.store(true, Ordering::SeqCst);
    let body = wait_ready(&app, 200).await;
    assert_eq!(check(&body, "postgres")["status"], "ok");
}

#[tokio::test]
async fn metrics_move_as_operations_run() {
    let app = TestApp::spawn().await;
    let client = app.client();
    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    for i in 0..3 {
        let created = client
            .call(
                "event.create",
                &boss,
                &json!({"scopeType": "TENANT", "scopeId": tenant.to_string(), "title": format!("M{i}"),
                        "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z"}),
            )
            .await
            .expect("create");
        assert_eq!(created.status, 200);
    }
    let missing = client
        .call(
            "event.get",
            &boss,
            &json!({"id": Uuid::new_v4().to_string()}),
        )
        .await
        .expect("get");
    assert_eq!(missing.status, 404);
    let http = app
        .bff(
            "GET",
            &format!("/api/v1/events/{}", Uuid::new_v4()),
            &boss,
            None,
        )
        .await;
    assert_eq!(http.status, 404);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = app.metrics_text().await;
        let has = |needle: &str| text.lines().any(|l| l.starts_with(needle));
        let value = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(-1.0)
        };
        let requests_ok =
            value(r#"events_requests_total{code="OK",op="event.create",transport="nats"}"#) == 3.0;
        let not_found =
            value(r#"events_requests_total{code="NOT_FOUND",op="event.get",transport="nats"}"#)
                == 1.0
                && value(
                    r#"events_requests_total{code="NOT_FOUND",op="event.get",transport="http"}"#,
                ) == 1.0;
        let histogram = value(
            r#"events_request_duration_seconds_count{op="event.create",transport="nats"}"#,
        ) == 3.0
            && has(
                r#"events_request_duration_seconds_bucket{op="event.create",transport="nats",le="0.005"}"#,
            );
        let published = value("events_outbox_published_total") >= 3.0;
        let gauges = value("outbox_pending") == 0.0
            && value(r#"events_total{status="scheduled"}"#) == 3.0
            && has("outbox_oldest_age_seconds")
            && has("outbox_failed")
            && has("events_cached_rsvps");
        let batches =
            value("events_batch_size_count") >= 1.0 && value("events_live_scope_actors") >= 1.0;
        if requests_ok && not_found && histogram && published && gauges && batches {
            let json_form: Value = app
                .http
                .get(app.url("/metrics?format=json"))
                .send()
                .await
                .expect("json")
                .json()
                .await
                .expect("json body");
            assert!(
                json_form["events_requests_total"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            );
            assert_eq!(json_form["outbox_pending"], json!(0.0));
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics did not move: ok={requests_ok} 404={not_found} hist={histogram} pub={published} gauges={gauges} batches={batches}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
