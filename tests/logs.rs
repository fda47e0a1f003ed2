//! Log lines of a failing request carry its identity and error code as
//! top-level JSON fields, and never the signature or the body.

#[path = "api/helpers.rs"]
mod helpers;

use std::io::Write;
use std::sync::{Arc, Mutex};

use helpers::{TestApp, identity};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(data);
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn a_failing_request_logs_its_request_id_and_code() {
    let buffer = Buffer::default();
    // The same JSON layer the service installs, writing into the buffer.
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter("info")
        .with_writer(buffer.clone())
        .init();
    let app = TestApp::spawn().await;
    let tenant = uuid::Uuid::new_v4();
    let user = uuid::Uuid::new_v4();
    let who = identity(tenant, user);
    let missing = uuid::Uuid::new_v4().to_string();
    let reply = app
        .client()
        .call_as(
            "event.get",
            &who,
            &json!({"id": missing, "secretish": "do-not-log-me"}),
            "req-log-42",
        )
        .await
        .expect("reply");
    assert_eq!(reply.status, 404);
    let http = app
        .bff("GET", &format!("/api/v1/events/{missing}"), &who, None)
        .await;
    assert_eq!(http.status, 404);

    let text = String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf-8");
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let nats_line = lines
        .iter()
        .find(|l| l["request_id"] == "req-log-42")
        .unwrap_or_else(|| panic!("no log line with the request id in:\n{text}"));
    assert_eq!(nats_line["code"], "NOT_FOUND");
    assert_eq!(nats_line["status"], 404);
    assert_eq!(nats_line["op"], "event.get");
    assert_eq!(nats_line["transport"], "nats");
    assert_eq!(nats_line["tenant_id"], tenant.to_string());
    assert_eq!(nats_line["user_id"], user.to_string());
    assert!(nats_line["duration_ms"].as_f64().is_some());
    assert!(nats_line["timestamp"].is_string() && nats_line["level"] == "INFO");
    assert!(
        lines.iter().any(|l| l["transport"] == "http"
            && l["code"] == "NOT_FOUND"
            && l["tenant_id"] == tenant.to_string()),
        "no HTTP line:\n{text}"
    );
    assert!(!text.contains("do-not-log-me"), "a body reached the logs");
    assert!(
        !text.contains(helpers::TEST_SECRET),
        "the secret reached the logs"
    );
    assert!(
        !text.to_lowercase().contains("x-updspace-signature"),
        "a signature header reached the logs"
    );
}
