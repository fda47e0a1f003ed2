//! The NATS micro-service protocol (`$SRV.PING|INFO|STATS`), kept by the
//! service itself: error replies carry the error envelope in their body,
//! which the async-nats service helper cannot send while counting them as
//! errors, and STATS must report real error counts.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::subjects::{NatsError, QUEUE_GROUP, SERVICE_NAME};

/// Counters of one endpoint, as STATS reports them.
#[derive(Debug, Default)]
pub struct EndpointStats {
    requests: AtomicU64,
    errors: AtomicU64,
    processing_ns: AtomicU64,
    last_error: Mutex<String>,
}

impl EndpointStats {
    /// Records one answered request; `error` is `"<status>:<CODE>"` for an error.
    pub fn record(&self, took: Duration, error: Option<String>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.processing_ns.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if let Some(e) = error {
            self.errors.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = self.last_error.lock() {
                *last = e;
            }
        }
    }
}

pub struct Endpoint {
    pub name: String,
    pub subject: String,
    pub stats: EndpointStats,
}

/// The service's identity and endpoints.
pub struct Micro {
    id: String,
    version: String,
    description: String,
    started: String,
    pub endpoints: Vec<Endpoint>,
}

impl Micro {
    pub fn new(description: &str, endpoints: Vec<(String, String)>) -> Self {
        Self {
            id: uuid::Uuid::new_v4().simple().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: description.to_string(),
            started: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            endpoints: endpoints
                .into_iter()
                .map(|(name, subject)| Endpoint {
                    name,
                    subject,
                    stats: EndpointStats::default(),
                })
                .collect(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn base(&self, kind: &str) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert(
            "type".into(),
            json!(format!("io.nats.micro.v1.{kind}_response")),
        );
        m.insert("name".into(), json!(SERVICE_NAME));
        m.insert("id".into(), json!(self.id));
        m.insert("version".into(), json!(self.version));
        m.insert("metadata".into(), json!({}));
        m
    }

    pub fn ping(&self) -> Value {
        Value::Object(self.base("ping"))
    }

    pub fn info(&self) -> Value {
        let mut m = self.base("info");
        m.insert("description".into(), json!(self.description));
        let endpoints: Vec<Value> = self
            .endpoints
            .iter()
            .map(|e| json!({"name": e.name, "subject": e.subject, "queue_group": QUEUE_GROUP, "metadata": null}))
            .collect();
        m.insert("endpoints".into(), Value::Array(endpoints));
        Value::Object(m)
    }

    pub fn stats(&self) -> Value {
        let mut m = self.base("stats");
        m.insert("started".into(), json!(self.started));
        let endpoints: Vec<Value> = self
            .endpoints
            .iter()
            .map(|e| {
                let requests = e.stats.requests.load(Ordering::Relaxed);
                let ns = e.stats.processing_ns.load(Ordering::Relaxed);
                let last_error = e
                    .stats
                    .last_error
                    .lock()
                    .map(|l| l.clone())
                    .unwrap_or_default();
                json!({
                    "name": e.name,
                    "subject": e.subject,
                    "queue_group": QUEUE_GROUP,
                    "num_requests": requests,
                    "num_errors": e.stats.errors.load(Ordering::Relaxed),
                    "last_error": last_error,
                    "processing_time": ns,
                    "average_processing_time": ns.checked_div(requests).unwrap_or(0),
                    "data": null,
                })
            })
            .collect();
        m.insert("endpoints".into(), Value::Array(endpoints));
        Value::Object(m)
    }
}

/// Answers `$SRV.{PING,INFO,STATS}`, `$SRV.{…}.events` and
/// `$SRV.{…}.events.<id>` until the client closes.
pub async fn serve_discovery(
    client: async_nats::Client,
    micro: std::sync::Arc<Micro>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, NatsError> {
    let mut tasks = Vec::new();
    for verb in ["PING", "INFO", "STATS"] {
        for subject in [
            format!("$SRV.{verb}"),
            format!("$SRV.{verb}.{SERVICE_NAME}"),
            format!("$SRV.{verb}.{SERVICE_NAME}.{}", micro.id()),
        ] {
            let mut sub = client
                .subscribe(subject.clone())
                .await
                .map_err(|e| NatsError::Service(format!("subscribe {subject}: {e}")))?;
            let client = client.clone();
            let micro = micro.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    let Some(reply) = msg.reply else { continue };
                    let body = match verb {
                        "PING" => micro.ping(),
                        "INFO" => micro.info(),
                        _ => micro.stats(),
                    };
                    let bytes = serde_json::to_vec(&body).unwrap_or_default();
                    let _ = client.publish(reply, bytes.into()).await;
                }
            }));
        }
    }
    Ok(tasks)
}
