//! Liveness, readiness and metrics.

use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::startup::AppState;

/// How long one readiness check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// A leading publisher whose last cycle reached NATS longer ago than this is unhealthy.
const PUBLISHER_STALE: Duration = Duration::from_secs(30);

/// Liveness only: answers while the process serves HTTP, touching nothing else.
pub async fn health() -> axum::Json<Value> {
    axum::Json(json!({"status": "ok"}))
}

struct Check {
    name: &'static str,
    ok: bool,
    latency: Duration,
    message: String,
}

async fn timed<F>(name: &'static str, check: F) -> Check
where
    F: std::future::Future<Output = Result<String, String>>,
{
    let started = Instant::now();
    let (ok, message) = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(m)) => (true, m),
        Ok(Err(m)) => (false, m),
        Err(_) => (
            false,
            format!("no answer within {} ms", CHECK_TIMEOUT.as_millis()),
        ),
    };
    Check {
        name,
        ok,
        latency: started.elapsed(),
        message,
    }
}

async fn run_checks(state: &AppState) -> Vec<Check> {
    let postgres = timed("postgres", async {
        sqlx::query("SELECT 1")
            .execute(&state.db)
            .await
            .map(|_| "reachable".to_string())
            .map_err(|e| e.to_string())
    });
    let nats = timed("nats", async {
        if state.nats.connection_state() != async_nats::connection::State::Connected {
            return Err("not connected; reconnecting".to_string());
        }
        state
            .nats
            .flush()
            .await
            .map(|_| "connected".to_string())
            .map_err(|e| e.to_string())
    });
    let stream = timed("stream", async {
        let js = async_nats::jetstream::new(state.nats.clone());
        let name = &state.config.stream.name;
        let mut stream = js
            .get_stream(name)
            .await
            .map_err(|e| format!("stream {name}: {e}"))?;
        let info = stream
            .info()
            .await
            .map_err(|e| format!("stream {name}: {e}"))?;
        Ok(format!("{name}: {} messages", info.state.messages))
    });
    let publisher = timed("outbox_publisher", async {
        let stats = &state.publisher.stats;
        if stats.leader.load(std::sync::atomic::Ordering::Relaxed) {
            let last = stats
                .last_healthy_ms
                .load(std::sync::atomic::Ordering::Relaxed);
            let age_ms =
                chrono::Utc::now().timestamp_millis().max(0) as u64 - last.min(i64::MAX as u64);
            if last > 0 && age_ms <= PUBLISHER_STALE.as_millis() as u64 {
                Ok("publishing on this instance".to_string())
            } else {
                let error = stats
                    .last_error
                    .lock()
                    .ok()
                    .and_then(|e| e.clone())
                    .unwrap_or_default();
                Err(format!(
                    "this instance publishes but has not reached NATS for {} s: {error}",
                    age_ms / 1000
                ))
            }
        } else {
            match crate::store::outbox::lock_held_elsewhere(&state.db).await {
                Ok(true) => Ok("standby; another instance publishes".to_string()),
                Ok(false) => Err("no instance holds the publisher lock yet".to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    });
    let (a, b, c, d) = tokio::join!(postgres, nats, stream, publisher);
    vec![a, b, c, d]
}

/// `GET /ready`: 200 when Postgres, NATS, the stream and the outbox
/// publisher are fine, else 503; always the list of checks.
pub async fn ready(State(state): State<AppState>) -> Response {
    let checks = run_checks(&state).await;
    let all_ok = checks.iter().all(|c| c.ok);
    for c in &checks {
        state
            .metrics
            .ready
            .with_label_values(&[c.name])
            .set(i64::from(c.ok));
    }
    let body = json!({
        "status": if all_ok { "ok" } else { "unavailable" },
        "checks": checks.iter().map(|c| json!({
            "name": c.name,
            "status": if c.ok { "ok" } else { "error" },
            "latency_ms": (c.latency.as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
            "message": c.message,
        })).collect::<Vec<_>>(),
    });
    let status = if all_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text, or JSON with `?format=json`. The query
/// is read leniently (a repeated or undecodable parameter must not turn
/// into axum's plain-text 400).
pub async fn metrics(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    state
        .metrics
        .live_actors
        .set(state.app.registry().live() as i64);
    let json = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .any(|(k, v)| k == "format" && v == "json");
    if json {
        return axum::Json(state.metrics.render_json()).into_response();
    }
    let mut response = state.metrics.render_text().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Keeps the `events_ready` gauges current for alerting, every 5 s.
pub fn spawn_ready_refresher(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            if state.db.is_closed() {
                return;
            }
            for c in run_checks(&state).await {
                state
                    .metrics
                    .ready
                    .with_label_values(&[c.name])
                    .set(i64::from(c.ok));
            }
        }
    });
}
