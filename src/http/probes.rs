//! Liveness, readiness and metrics.

use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::AppState;

/// How long one readiness check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// A leading publisher whose last cycle reached NATS longer ago than this is unhealthy.
const PUBLISHER_STALE: Duration = Duration::from_secs(30);

/// The liveness answer.
#[derive(Serialize, ToSchema)]
pub struct Liveness {
    #[schema(value_type = String, pattern = "^ok$")]
    status: &'static str,
}

/// Liveness
///
/// `{"status":"ok"}` while the process serves HTTP; touches no dependency.
/// No signature. GET (and so HEAD) only, as probes send.
#[utoipa::path(get, path = "/health", operation_id = "health", tag = "meta", security(()),
    responses((status = 200, description = "Alive", body = Liveness)))]
pub async fn health() -> axum::Json<Liveness> {
    axum::Json(Liveness { status: "ok" })
}

/// The readiness answer: every check, failing or not.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    #[schema(value_type = String, pattern = "^(ok|unavailable)$")]
    status: &'static str,
    checks: Vec<CheckView>,
}

#[derive(Serialize, ToSchema)]
pub struct CheckView {
    /// `postgres`, `nats`, `stream` or `outbox_publisher`.
    #[schema(value_type = String)]
    name: &'static str,
    #[schema(value_type = String, pattern = "^(ok|error)$")]
    status: &'static str,
    #[schema(minimum = 0)]
    latency_ms: f64,
    message: String,
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

/// Readiness
///
/// 200 when Postgres, NATS, the JetStream stream and the outbox publisher
/// are fine, else 503; the body always lists the checks. No signature.
#[utoipa::path(get, path = "/ready", operation_id = "ready", tag = "meta", security(()),
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready; the failing checks say why", body = Readiness),
    ))]
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
    let body = Readiness {
        status: if all_ok { "ok" } else { "unavailable" },
        checks: checks
            .into_iter()
            .map(|c| CheckView {
                name: c.name,
                status: if c.ok { "ok" } else { "error" },
                latency_ms: (c.latency.as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
                message: c.message,
            })
            .collect(),
    };
    let status = if all_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Metrics
///
/// Prometheus text exposition, or JSON with `?format=json`. No signature.
/// The query is read leniently: any other value, a repeated or an
/// undecodable parameter is the text form, never an error.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "meta", security(()),
    params(("format" = Option<String>, Query, description = "`json` for JSON; anything else is text")),
    responses((status = 200, description = "The metrics", content(
        (String = "text/plain; version=0.0.4; charset=utf-8"),
        (serde_json::Value = "application/json"),
    ))))]
pub async fn metrics(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    state
        .metrics
        .live_actors
        .set(state.app.registry().live() as i64);
    state
        .metrics
        .cached_rsvps
        .set(state.app.registry().shared().rsvp_budget.held() as i64);
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
