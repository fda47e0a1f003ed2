//! The Activity bridge: delivers every domain event of the stream to the
//! Activity service's ingest endpoint, so its feed follows events as they
//! happen.
//!
//! One instance at a time delivers (the holder of a Postgres advisory lock
//! on a connection of its own, like the outbox publisher); the others stand
//! by and take over when its connection goes. It reads the durable consumer
//! `activity-bridge`, one message at a time, so events reach Activity in
//! stream order (and so in commit order per event): a 2xx is acked, a 4xx
//! is terminated (Activity refused it; sending it again cannot help), and a
//! 5xx or no answer is tried again, with a growing pause, before anything
//! after it. Activity deduplicates by `source_ref`, so a redelivery after a
//! crash between its answer and our ack inserts nothing.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgPool};
use url::Url;

use crate::backoff::Backoff;
use crate::config::ActivityConfig;
use crate::domain::published::{ATTENDANCE_MARKED, REMINDER_DUE, RSVP_CHANGED};
use crate::subjects::live::LiveMessage;
use crate::telemetry::metrics::Metrics;

/// The durable consumer the bridge reads.
pub const CONSUMER: &str = "activity-bridge";

/// Session-level advisory lock naming the one delivering instance.
pub const BRIDGE_LOCK: i64 = 0x6576_656e_7473_6163; // "eventsac"

/// How long a delivered message may stay unacknowledged before JetStream
/// offers it again (to whoever delivers then).
const ACK_WAIT: Duration = Duration::from_secs(30);

/// How often a standing-by instance tries for the lock, and the delivering
/// one checks that its lock connection is alive.
const LOCK_CHECK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
enum BridgeError {
    #[error("the stream cannot be read: {0}")]
    Stream(String),
    #[error("the lock connection was lost: {0}")]
    Lock(#[from] sqlx::Error),
}

/// What became of one delivery attempt.
enum Answer {
    Delivered,
    Refused(u16, String),
    Failed(String),
}

pub struct Bridge {
    js: jetstream::Context,
    stream: String,
    filter: String,
    db: PgPool,
    lock_options: PgConnectOptions,
    secret: String,
    url: Url,
    /// The path Activity verifies the signature over.
    signed_path: String,
    http: reqwest::Client,
    config: ActivityConfig,
    metrics: Arc<Metrics>,
    stop: crate::actors::stopper::Stopper,
}

pub struct BridgeParts {
    pub nats: async_nats::Client,
    pub stream: String,
    pub filter: String,
    pub db: PgPool,
    pub lock_options: PgConnectOptions,
    pub secret: String,
    pub config: ActivityConfig,
    pub metrics: Arc<Metrics>,
}

impl Bridge {
    /// The bridge, when `ACTIVITY_SERVICE_URL` is set.
    pub fn new(parts: BridgeParts) -> Option<Arc<Self>> {
        let base = parts.config.url.clone()?;
        let Some((url, signed_path)) = crate::auth::hmac::endpoint(&base, &["events", "ingest"])
        else {
            tracing::error!(url = %base, "Activity bridge: ACTIVITY_SERVICE_URL cannot take a path; the bridge is off");
            return None;
        };
        let http = match reqwest::Client::builder()
            .timeout(parts.config.timeout)
            .build()
        {
            Ok(http) => http,
            Err(e) => {
                tracing::error!(error = %e, "Activity bridge: no HTTP client; the bridge is off");
                return None;
            }
        };
        Some(Arc::new(Self {
            js: jetstream::new(parts.nats),
            stream: parts.stream,
            filter: parts.filter,
            db: parts.db,
            lock_options: parts
                .lock_options
                .log_statements(tracing::log::LevelFilter::Off),
            secret: parts.secret,
            url,
            signed_path,
            http,
            config: parts.config,
            metrics: parts.metrics,
            stop: Default::default(),
        }))
    }

    /// Runs until [`Bridge::stop`]: stands by, delivers while it holds the
    /// lock, stands by again when it loses it.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let bridge = self.clone();
        tokio::spawn(async move { bridge.run().await })
    }

    /// Stops delivering; a message being tried is handed back at once.
    pub fn stop(&self) {
        self.stop.stop();
    }

    fn stopped(&self) -> bool {
        self.stop.stopped()
    }

    /// Sleeps `d`; false when stopped meanwhile.
    async fn pause(&self, d: Duration) -> bool {
        self.stop.pause(d).await
    }

    async fn run(self: Arc<Self>) {
        tracing::info!(url = %self.url, "Activity bridge: standing by for the delivery lock");
        while !self.stopped() {
            let mut conn = match self.lock_options.connect().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "Activity bridge: no lock connection");
                    self.pause(LOCK_CHECK).await;
                    continue;
                }
            };
            let locked: Result<bool, sqlx::Error> =
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(BRIDGE_LOCK)
                    .fetch_one(&mut conn)
                    .await;
            if !matches!(locked, Ok(true)) {
                drop(conn);
                self.pause(LOCK_CHECK).await;
                continue;
            }
            self.metrics.activity_leader.set(1);
            tracing::info!("Activity bridge: delivering (this instance holds the lock)");
            let led = self.lead(&mut conn).await;
            self.metrics.activity_leader.set(0);
            // Closing the connection gives the lock up.
            drop(conn);
            if let Err(e) = led {
                tracing::warn!(error = %e, "Activity bridge: stopped delivering; trying again");
                self.pause(LOCK_CHECK).await;
            }
        }
    }

    async fn consumer(&self) -> Result<consumer::PullConsumer, BridgeError> {
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| BridgeError::Stream(e.to_string()))?;
        stream
            .get_or_create_consumer(
                CONSUMER,
                consumer::pull::Config {
                    durable_name: Some(CONSUMER.to_string()),
                    description: Some("Delivers domain events to the Activity service".into()),
                    filter_subject: self.filter.clone(),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    // One at a time: events reach Activity in stream order.
                    max_ack_pending: 1,
                    deliver_policy: consumer::DeliverPolicy::All,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| BridgeError::Stream(e.to_string()))
    }

    async fn lead(&self, lock: &mut sqlx::PgConnection) -> Result<(), BridgeError> {
        let consumer = self.consumer().await?;
        let mut last_check = std::time::Instant::now();
        while !self.stopped() {
            if last_check.elapsed() >= LOCK_CHECK {
                sqlx::query("SELECT 1").execute(&mut *lock).await?;
                last_check = std::time::Instant::now();
            }
            let mut batch = consumer
                .fetch()
                .max_messages(1)
                .expires(LOCK_CHECK)
                .messages()
                .await
                .map_err(|e| BridgeError::Stream(e.to_string()))?;
            let next = tokio::select! {
                next = batch.next() => next,
                () = self.stop.notified() => return Ok(()),
            };
            match next {
                None => {
                    self.metrics.activity_pending.set(0);
                    self.metrics.activity_lag_seconds.set(0.0);
                }
                Some(Err(e)) => return Err(BridgeError::Stream(e.to_string())),
                Some(Ok(message)) => self.deliver(message).await,
            }
        }
        Ok(())
    }

    /// Delivers one message, trying again until Activity takes or refuses it
    /// (or the bridge stops: the message is handed back for the next one).
    async fn deliver(&self, message: jetstream::Message) {
        let info = message.info().ok().map(|i| (i.stream_sequence, i.pending));
        if let Some((_, pending)) = info {
            self.metrics.activity_pending.set(pending as i64 + 1);
        }
        let seq = info.map(|i| i.0).unwrap_or(0);
        let Some(event) = LiveMessage::of(seq, &message) else {
            tracing::warn!(seq, "Activity bridge: not a domain event; skipped");
            self.metrics
                .activity_delivered
                .with_label_values(&["rejected"])
                .inc();
            let _ = message.ack_with(AckKind::Term).await;
            return;
        };
        // A reminder is a notification for one user, not an activity of
        // the feed.
        if event.event_type == REMINDER_DUE {
            let _ = message.ack().await;
            return;
        }
        let body = self.ingest_body(&event).await;
        let mut backoff = Backoff::new(self.config.retry_min, self.config.retry_max);
        loop {
            self.metrics
                .activity_lag_seconds
                .set(age_seconds(&event.time));
            match self.post(&event, &body).await {
                Answer::Delivered => {
                    self.metrics
                        .activity_delivered
                        .with_label_values(&["ok"])
                        .inc();
                    if let Err(e) = message.ack().await {
                        // Offered again after the ack wait; Activity
                        // deduplicates it by its source_ref.
                        tracing::warn!(error = %e, id = %event.id, "Activity bridge: the ack was lost");
                    }
                    break;
                }
                Answer::Refused(status, reason) => {
                    self.metrics
                        .activity_delivered
                        .with_label_values(&["rejected"])
                        .inc();
                    tracing::warn!(
                        id = %event.id, event_type = %event.event_type, status, reason = %reason,
                        "Activity bridge: Activity refused a domain event; it is not sent again"
                    );
                    let _ = message.ack_with(AckKind::Term).await;
                    break;
                }
                Answer::Failed(reason) => {
                    self.metrics
                        .activity_delivered
                        .with_label_values(&["retried"])
                        .inc();
                    tracing::warn!(
                        id = %event.id, reason = %reason,
                        "Activity bridge: delivery failed; trying again"
                    );
                    // Still being worked on: JetStream keeps it ours.
                    let _ = message.ack_with(AckKind::Progress).await;
                    if !self.pause(backoff.next_delay()).await {
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                        return;
                    }
                }
            }
        }
        self.metrics
            .activity_pending
            .set(info.map_or(0, |i| i.1 as i64));
        if info.is_some_and(|i| i.1 == 0) {
            self.metrics.activity_lag_seconds.set(0.0);
        }
    }

    /// Activity's ingest envelope of a domain event.
    async fn ingest_body(&self, event: &LiveMessage) -> Vec<u8> {
        let data = &event.data;
        let text = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_string);
        let title = match text("title") {
            Some(t) => Some(t),
            // Attendance messages, and those carried over from the previous
            // service, name no title.
            None => sqlx::query_scalar::<_, String>("SELECT title FROM events WHERE id = $1")
                .bind(event.event_id)
                .fetch_optional(&self.db)
                .await
                .ok()
                .flatten(),
        };
        let target = if event.event_type == RSVP_CHANGED || event.event_type == ATTENDANCE_MARKED {
            text("user_id")
        } else {
            None
        };
        let body = json!({
            "event_id": event.id,
            "event_type": event.event_type,
            "tenant_id": event.tenant_id.to_string(),
            "occurred_at": event.time,
            "source": "events",
            "payload": {
                "title": title,
                "actor_user_id": text("actor_user_id"),
                "target_user_id": target,
                "visibility": feed_visibility(text("visibility").as_deref()),
                "scope_type": text("scope_type"),
                "scope_id": text("scope_id"),
                "source_ref": format!("events:{}", event.id),
                "data": data,
            },
        });
        serde_json::to_vec(&body).unwrap_or_default()
    }

    async fn post(&self, event: &LiveMessage, body: &[u8]) -> Answer {
        let ts = crate::auth::now_unix();
        let signature =
            crate::auth::sign_v1(&self.secret, "POST", &self.signed_path, body, &event.id, ts);
        let mut request = self
            .http
            .post(self.url.clone())
            .header("Content-Type", "application/json")
            .header("X-Request-Id", &event.id)
            .header("X-Tenant-Id", event.tenant_id.to_string())
            .header("X-Updspace-Timestamp", ts.to_string())
            .header("X-Updspace-Signature", signature);
        if let Some(slug) = event.data.get("tenant_slug").and_then(Value::as_str) {
            request = request.header("X-Tenant-Slug", slug);
        }
        match request.body(body.to_vec()).send().await {
            Ok(response) if response.status().is_success() => Answer::Delivered,
            // 408 and 429 say "later", not "never".
            Ok(response)
                if response.status().is_client_error()
                    && !matches!(response.status().as_u16(), 408 | 429) =>
            {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                Answer::Refused(status, text.chars().take(300).collect())
            }
            Ok(response) => Answer::Failed(format!("answered {}", response.status().as_u16())),
            Err(e) if e.is_timeout() => Answer::Failed("no answer in time".into()),
            Err(e) => Answer::Failed(e.to_string()),
        }
    }
}

/// `public` stays `public`; everything narrower goes as `private`, shown by
/// Activity to the actor and the target only, since Activity does not check
/// community or team memberships.
fn feed_visibility(visibility: Option<&str>) -> &'static str {
    match visibility {
        Some("public") => "public",
        _ => "private",
    }
}

fn age_seconds(time: &str) -> f64 {
    chrono::DateTime::parse_from_rfc3339(time)
        .map(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .num_milliseconds()
                .max(0) as f64
                / 1000.0
        })
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_stays_public_in_the_feed() {
        assert_eq!(feed_visibility(Some("public")), "public");
        for narrower in [Some("community"), Some("team"), Some("private"), None] {
            assert_eq!(feed_visibility(narrower), "private");
        }
    }

    #[test]
    fn the_ingest_path_follows_the_base_url() {
        let base = Url::parse("http://activity:8004/api/v1/").expect("a URL");
        let (url, signed) =
            crate::auth::hmac::endpoint(&base, &["events", "ingest"]).expect("an endpoint");
        assert_eq!(url.as_str(), "http://activity:8004/api/v1/events/ingest");
        assert_eq!(signed, "/api/v1/events/ingest");
    }
}
