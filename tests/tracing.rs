//! One trace runs from an HTTP request through the scope actor's commit to
//! the JetStream message: spans are exported over OTLP to a receiver this
//! test starts, and the message carries the request's trace context.

#[path = "api/helpers.rs"]
mod helpers;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use updspace_events::config::{LogFormat, TelemetryConfig};

use helpers::{NATS_URL, TEST_SECRET, TestApp};

/// A minimal OTLP/HTTP (JSON) trace receiver.
async fn start_collector() -> (String, Arc<Mutex<Vec<Value>>>) {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = received.clone();
    let router = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    sink.lock().expect("lock").push(v);
                }
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{addr}"), received)
}

fn spans(batches: &[Value]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for batch in batches {
        for rs in batch["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    out.push((
                        span["traceId"].as_str().unwrap_or_default().to_lowercase(),
                        span["name"].as_str().unwrap_or_default().to_string(),
                        span["parentSpanId"]
                            .as_str()
                            .unwrap_or_default()
                            .to_lowercase(),
                    ));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_the_http_call_to_the_stream_message() {
    let (collector, received) = start_collector().await;
    // SAFETY of intent: this test binary sets the variable before any thread reads it.
    unsafe { std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json") };
    let guard = updspace_events::telemetry::init(&TelemetryConfig {
        log_filter: "warn,updspace_events=info".into(),
        log_format: LogFormat::Json,
        otlp_endpoint: Some(collector.parse().expect("url")),
        service_name: "events-test".into(),
    });
    let app = TestApp::spawn().await;
    let tenant = uuid::Uuid::new_v4();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let incoming = format!("00-{trace_id}-00f067aa0ba902b7-01");

    let body = json!({"scopeType": "TENANT", "scopeId": tenant.to_string(), "title": "Traced",
                      "startsAt": "2030-01-10T10:00:00Z", "endsAt": "2030-01-10T12:00:00Z"})
    .to_string();
    let path = "/api/v1/events/";
    let request_id = uuid::Uuid::new_v4().to_string();
    let user = uuid::Uuid::new_v4().to_string();
    let tenant_s = tenant.to_string();
    let identity = updspace_events::auth::ContextHeaders {
        request_id: &request_id,
        tenant_id: &tenant_s,
        tenant_slug: "acme",
        user_id: Some(&user),
        master_flags: Some(r#"{"system_admin":true}"#),
    };
    let parts = updspace_events::auth::RequestParts::http("POST", path, "", body.as_bytes());
    let signed = updspace_events::auth::sign_headers_v1(
        TEST_SECRET,
        &parts,
        &identity,
        chrono::Utc::now().timestamp(),
    );
    let mut request = app
        .http
        .post(app.url(path))
        .header("Content-Type", "application/json")
        .header("traceparent", &incoming);
    for (k, v) in signed {
        request = request.header(k, v);
    }
    let response = request.body(body).send().await.expect("request");
    assert_eq!(response.status(), 200);

    // The JetStream message continues the request's trace.
    let client = async_nats::connect(NATS_URL).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut message = None;
    for _ in 0..100 {
        if let Ok(stream) = js.get_stream(&app.isolation.stream).await
            && let Ok(m) = stream.get_raw_message(1).await
        {
            message = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let message = message.expect("the change reached the stream");
    let traceparent = message
        .headers
        .get("traceparent")
        .map(|v| v.as_str().to_string())
        .expect("traceparent header on the stream message");
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    assert_eq!(fields[1], trace_id, "same trace as the HTTP request");
    assert_ne!(
        fields[2], "00f067aa0ba902b7",
        "the message's parent is the service's span, not the caller's"
    );

    // Spans of that trace: the HTTP request and the group commit.
    drop(app);
    drop(guard);
    let mut names = Vec::new();
    for _ in 0..50 {
        names = spans(&received.lock().expect("lock"))
            .into_iter()
            .filter(|(t, _, _)| t == trace_id)
            .map(|(_, n, _)| n)
            .collect();
        if names.iter().any(|n| n == "scope.commit") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(names.iter().any(|n| n == "http event.create"), "{names:?}");
    assert!(names.iter().any(|n| n == "scope.commit"), "{names:?}");
}
