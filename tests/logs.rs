//! Log lines of a request carry its identity and outcome as top-level JSON
//! fields, and never the signature or the body: refused requests and every
//! state-changing one at info, served reads only at debug.

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

/// The log of this test binary (one subscriber per process, shared by its
/// tests; each looks for its own request ids).
fn captured() -> &'static Buffer {
    static BUFFER: std::sync::OnceLock<Buffer> = std::sync::OnceLock::new();
    BUFFER.get_or_init(|| {
        let buffer = Buffer::default();
        // The same JSON layer the service installs, writing into the buffer,
        // at the default level.
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_env_filter("info")
            .with_writer(buffer.clone())
            .init();
        buffer
    })
}

fn lines(buffer: &Buffer) -> (String, Vec<Value>) {
    let text = String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf-8");
    let lines = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (text, lines)
}

#[tokio::test]
async fn a_failing_request_logs_its_request_id_and_code() {
    let buffer = captured();
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

    let (text, lines) = lines(buffer);
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

/// Every state-changing request is logged at info when served, on both
/// transports; a served read is not (it is at debug).
#[tokio::test]
async fn every_served_write_logs_one_info_line_and_reads_do_not() {
    let buffer = captured();
    let app = TestApp::spawn().await;
    let tenant = uuid::Uuid::new_v4();
    let boss = helpers::admin(tenant);
    let created = app
        .client()
        .call_as(
            "event.create",
            &boss,
            &json!({"scopeType": "TENANT", "scopeId": tenant.to_string(), "title": "Logged",
                    "startsAt": "2030-01-10T18:00:00Z", "endsAt": "2030-01-10T21:00:00Z"}),
            "req-log-create",
        )
        .await
        .expect("reply");
    assert_eq!(created.status, 200, "{:?}", created.body);
    let id = created.body["id"].as_str().expect("id").to_string();
    let user = uuid::Uuid::new_v4();
    let who = identity(tenant, user);
    let rsvp = app
        .client()
        .call_as(
            "rsvp.set",
            &who,
            &json!({"eventId": id, "status": "going"}),
            "req-log-rsvp",
        )
        .await
        .expect("reply");
    assert_eq!(rsvp.status, 200);
    let read = app
        .client()
        .call_as("event.get", &who, &json!({ "id": id }), "req-log-read")
        .await
        .expect("reply");
    assert_eq!(read.status, 200);
    let http = app
        .bff("DELETE", &format!("/api/v1/events/{id}/rsvp"), &who, None)
        .await;
    assert_eq!(http.status, 204);

    let (text, lines) = lines(buffer);
    for (rid, op, transport, user_id) in [
        (
            "req-log-create",
            "event.create",
            "nats",
            boss.user_id.clone(),
        ),
        ("req-log-rsvp", "rsvp.set", "nats", user.to_string()),
    ] {
        let found: Vec<&Value> = lines.iter().filter(|l| l["request_id"] == rid).collect();
        assert_eq!(found.len(), 1, "one line for {rid} in:\n{text}");
        let line = found[0];
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["op"], op);
        assert_eq!(line["transport"], transport);
        assert_eq!(line["status"], 200);
        assert!(line["code"].is_null(), "{line}");
        assert_eq!(line["tenant_id"], tenant.to_string());
        assert_eq!(line["user_id"], user_id);
        assert!(line["duration_ms"].as_f64().is_some());
    }
    assert!(
        lines.iter().any(|l| l["transport"] == "http"
            && l["op"] == "rsvp.clear"
            && l["status"] == 204
            && l["level"] == "INFO"
            && l["user_id"] == user.to_string()),
        "no info line for the HTTP write:\n{text}"
    );
    assert!(
        !lines.iter().any(|l| l["request_id"] == "req-log-read"),
        "a served read was logged at info:\n{text}"
    );
}
