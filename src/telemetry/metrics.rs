//! Prometheus metrics. One registry per running service (tests run several
//! in one process). Gauges that come from the database are refreshed on an
//! interval by [`spawn_refresher`], never per scrape.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use serde_json::{Map, Value, json};

const LATENCY_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

pub struct Metrics {
    registry: Registry,
    pub events_total: IntGaugeVec,
    pub rsvp_total: IntGaugeVec,
    pub outbox_pending: IntGauge,
    pub outbox_failed: IntGauge,
    pub outbox_oldest_age_seconds: Gauge,
    pub outbox_published: IntCounter,
    pub outbox_publish_errors: IntCounter,
    pub outbox_dead: IntCounter,
    pub outbox_leader: IntGauge,
    pub outbox_gap_wait: Histogram,
    pub requests: IntCounterVec,
    pub request_errors: IntCounterVec,
    pub request_duration: HistogramVec,
    pub live_actors: IntGauge,
    pub actor_evictions: IntCounter,
    pub cached_rsvps: IntGauge,
    pub write_forwards: IntCounterVec,
    pub write_forward_messages: IntCounter,
    pub batch_size: Histogram,
    pub batch_commit: Histogram,
    pub authz_calls: IntCounterVec,
    pub authz_duration: HistogramVec,
    pub authz_cache: IntCounterVec,
    pub lists: IntCounterVec,
    pub ready: IntGaugeVec,
    pub sse_connections: IntGauge,
    pub sse_messages: IntCounter,
    pub sse_dropped: IntCounter,
    pub sse_resets: IntCounter,
    pub activity_delivered: IntCounterVec,
    pub activity_lag_seconds: Gauge,
    pub activity_pending: IntGauge,
    pub activity_leader: IntGauge,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Names are fixed and unique here, so registration cannot collide.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    match IntCounterVec::new(Opts::new(name, help), labels) {
        Ok(m) => register(r, m),
        Err(_) => unreachable_metric(name),
    }
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    match IntGaugeVec::new(Opts::new(name, help), labels) {
        Ok(m) => register(r, m),
        Err(_) => unreachable_metric(name),
    }
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    match HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    ) {
        Ok(m) => register(r, m),
        Err(_) => unreachable_metric(name),
    }
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    match Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())) {
        Ok(m) => register(r, m),
        Err(_) => unreachable_metric(name),
    }
}

fn int_counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    match IntCounter::new(name, help) {
        Ok(m) => register(r, m),
        Err(_) => unreachable_metric(name),
    }
}

fn int_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    match IntGauge::new(name, help) {
        Ok(m) => register(r, m),
        Err(_) => unreachable_metric(name),
    }
}

fn gauge(r: &Registry, name: &str, help: &str) -> Gauge {
    match Gauge::new(name, help) {
        Ok(m) => register(r, m),
        Err(_) => unreachable_metric(name),
    }
}

/// Metric names and help texts are constants of this file; an invalid one
/// is a programming error caught by the unit test below.
fn unreachable_metric(name: &str) -> ! {
    panic!("invalid metric definition: {name}")
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let r = Registry::new();
        Arc::new(Self {
            events_total: gauge_vec(&r, "events_total", "Events stored, by status", &["status"]),
            rsvp_total: gauge_vec(&r, "rsvp_total", "RSVPs stored, by status", &["status"]),
            outbox_pending: int_gauge(&r, "outbox_pending", "Outbox rows not yet published"),
            outbox_failed: int_gauge(&r, "outbox_failed", "Outbox rows that went dead"),
            outbox_oldest_age_seconds: gauge(
                &r,
                "outbox_oldest_age_seconds",
                "Age of the oldest pending outbox row (0 when none)",
            ),
            outbox_published: int_counter(
                &r,
                "events_outbox_published_total",
                "Outbox rows published",
            ),
            outbox_publish_errors: int_counter(
                &r,
                "events_outbox_publish_errors_total",
                "Failed publish attempts",
            ),
            outbox_dead: int_counter(&r, "events_outbox_dead_total", "Outbox rows that went dead"),
            outbox_leader: int_gauge(
                &r,
                "events_outbox_publisher_leader",
                "1 on the instance holding the publisher lock",
            ),
            outbox_gap_wait: histogram(
                &r,
                "events_outbox_gap_wait_seconds",
                "Time the outbox publisher waited at a missing number for the transactions that were writing outbox rows",
                &LATENCY_BUCKETS,
            ),
            requests: counter_vec(
                &r,
                "events_requests_total",
                "Requests by transport, operation and result code",
                &["transport", "op", "code"],
            ),
            request_errors: counter_vec(
                &r,
                "events_request_errors_total",
                "Failed requests by transport, operation and status class",
                &["transport", "op", "status_class"],
            ),
            request_duration: histogram_vec(
                &r,
                "events_request_duration_seconds",
                "Request latency",
                &["transport", "op"],
                &LATENCY_BUCKETS,
            ),
            live_actors: int_gauge(&r, "events_live_scope_actors", "Scope actors alive"),
            actor_evictions: int_counter(
                &r,
                "events_scope_actor_evictions_total",
                "Scope actors stopped before their idle timeout to stay under EVENTS_MAX_LIVE_ACTORS",
            ),
            cached_rsvps: int_gauge(
                &r,
                "events_cached_rsvps",
                "RSVPs held in the scope actors' cached RSVP maps (at most 1,000,000 an instance)",
            ),
            write_forwards: counter_vec(
                &r,
                "events_write_forwards_total",
                "RSVP writes routed between instances: forwarded (answered by the scope's owner), \
                 fallback (owner gone, applied here), received (applied for another instance), \
                 refused (a forward that failed its signature, freshness or decoding)",
                &["outcome"],
            ),
            write_forward_messages: int_counter(
                &r,
                "events_write_forward_messages_total",
                "Messages that carried this instance's forwarded RSVP writes to their owners \
                 (several writes share one while earlier ones are in flight)",
            ),
            batch_size: histogram(
                &r,
                "events_batch_size",
                "Commands per group commit",
                &BATCH_BUCKETS,
            ),
            batch_commit: histogram(
                &r,
                "events_batch_commit_seconds",
                "Time to commit one batch",
                &LATENCY_BUCKETS,
            ),
            authz_calls: counter_vec(
                &r,
                "events_authz_calls_total",
                "Calls to Access and Portal",
                &["authority", "outcome"],
            ),
            authz_duration: histogram_vec(
                &r,
                "events_authz_call_duration_seconds",
                "Latency of calls to Access and Portal",
                &["authority"],
                &LATENCY_BUCKETS,
            ),
            authz_cache: counter_vec(
                &r,
                "events_authz_cache_total",
                "Authorization cache look-ups",
                &["kind", "result"],
            ),
            lists: counter_vec(
                &r,
                "events_lists_total",
                "Event lists answered, by source: memory (the list read model) or postgres",
                &["source"],
            ),
            ready: gauge_vec(
                &r,
                "events_ready",
                "1 when the readiness check passed at the last refresh",
                &["check"],
            ),
            sse_connections: int_gauge(
                &r,
                "events_sse_connections",
                "Open live streams (GET /stream)",
            ),
            sse_messages: int_counter(
                &r,
                "events_sse_messages_total",
                "Messages sent on live streams",
            ),
            sse_dropped: int_counter(
                &r,
                "events_sse_dropped_total",
                "Live streams dropped because their client fell behind",
            ),
            sse_resets: int_counter(
                &r,
                "events_sse_resets_total",
                "Live streams resumed from a point the stream no longer holds",
            ),
            activity_delivered: counter_vec(
                &r,
                "events_activity_delivered_total",
                "Deliveries to Activity by result: ok, rejected (4xx, not retried), retried (5xx or no answer)",
                &["result"],
            ),
            activity_lag_seconds: gauge(
                &r,
                "events_activity_lag_seconds",
                "Age of the domain event the Activity bridge is delivering (0 when caught up)",
            ),
            activity_pending: int_gauge(
                &r,
                "events_activity_pending",
                "Domain events the Activity bridge has yet to deliver",
            ),
            activity_leader: int_gauge(
                &r,
                "events_activity_bridge_leader",
                "1 on the instance running the Activity bridge",
            ),
            registry: r,
        })
    }

    /// One finished request.
    pub fn observe_request(
        &self,
        transport: &str,
        op: &str,
        code: Option<&str>,
        status: u16,
        took: Duration,
    ) {
        self.requests
            .with_label_values(&[transport, op, code.unwrap_or("OK")])
            .inc();
        if status >= 400 {
            let class = if status >= 500 { "5xx" } else { "4xx" };
            self.request_errors
                .with_label_values(&[transport, op, class])
                .inc();
        }
        self.request_duration
            .with_label_values(&[transport, op])
            .observe(took.as_secs_f64());
    }

    /// Prometheus text exposition.
    pub fn render_text(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// The same figures as JSON: `{name: value}` for unlabelled metrics,
    /// `{name: [{labels, value}]}` for labelled ones; histograms give
    /// count, sum and buckets.
    pub fn render_json(&self) -> Value {
        let mut out = Map::new();
        for family in self.registry.gather() {
            let mut series = Vec::new();
            for m in family.get_metric() {
                let labels: Map<String, Value> = m
                    .get_label()
                    .iter()
                    .map(|l| (l.name().to_string(), json!(l.value())))
                    .collect();
                let value = if family.get_field_type() == prometheus::proto::MetricType::HISTOGRAM {
                    let h = m.get_histogram();
                    let buckets: Map<String, Value> = h
                        .get_bucket()
                        .iter()
                        .map(|b| (b.upper_bound().to_string(), json!(b.cumulative_count())))
                        .collect();
                    json!({"count": h.get_sample_count(), "sum": h.get_sample_sum(), "buckets": buckets})
                } else if family.get_field_type() == prometheus::proto::MetricType::COUNTER {
                    json!(m.get_counter().get_value())
                } else {
                    json!(m.get_gauge().get_value())
                };
                series.push((labels, value));
            }
            let entry = if series.len() == 1 && series[0].0.is_empty() {
                series.remove(0).1
            } else {
                Value::Array(
                    series
                        .into_iter()
                        .map(|(labels, value)| json!({"labels": labels, "value": value}))
                        .collect(),
                )
            };
            out.insert(family.name().to_string(), entry);
        }
        Value::Object(out)
    }
}

/// Refreshes the database gauges (outbox every 5 s, stored totals every
/// 15 s) until the pool closes.
pub fn spawn_refresher(metrics: Arc<Metrics>, db: sqlx::PgPool) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            if db.is_closed() {
                return;
            }
            refresh_outbox(&metrics, &db).await;
            if n.is_multiple_of(3) {
                refresh_totals(&metrics, &db).await;
            }
            n += 1;
        }
    });
}

/// Reads the outbox gauges from the database. The timer above refreshes
/// them on every instance; the publishing instance also after its cycles.
pub async fn refresh_outbox(metrics: &Metrics, db: &sqlx::PgPool) {
    if let Ok((pending, dead, oldest)) = crate::store::outbox::gauges(db).await {
        metrics.outbox_pending.set(pending);
        metrics.outbox_failed.set(dead);
        metrics
            .outbox_oldest_age_seconds
            .set(oldest.unwrap_or(0.0).max(0.0));
    }
}

async fn refresh_totals(metrics: &Metrics, db: &sqlx::PgPool) {
    let events: Result<Vec<(String, i64)>, _> =
        sqlx::query_as("SELECT status::text, count(*) FROM events GROUP BY status")
            .fetch_all(db)
            .await;
    if let Ok(rows) = events {
        for status in ["scheduled", "cancelled"] {
            let n = rows
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            metrics.events_total.with_label_values(&[status]).set(n);
        }
    }
    let rsvps: Result<(i64, i64, i64, i64), _> = sqlx::query_as(
        "SELECT COALESCE(sum(interested), 0)::bigint, COALESCE(sum(going), 0)::bigint,
                COALESCE(sum(not_going), 0)::bigint, COALESCE(sum(waitlisted), 0)::bigint
         FROM event_counters",
    )
    .fetch_one(db)
    .await;
    if let Ok((i, g, n, w)) = rsvps {
        for (status, v) in [
            ("interested", i),
            ("going", g),
            ("not_going", n),
            ("waitlisted", w),
        ] {
            metrics.rsvp_total.with_label_values(&[status]).set(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_valid_and_rendered() {
        let m = Metrics::new();
        m.observe_request("nats", "event.get", None, 200, Duration::from_millis(3));
        m.observe_request(
            "http",
            "event.get",
            Some("NOT_FOUND"),
            404,
            Duration::from_millis(1),
        );
        let text = m.render_text();
        assert!(
            text.contains(r#"events_requests_total{code="OK",op="event.get",transport="nats"} 1"#),
            "{text}"
        );
        assert!(text.contains(
            r#"events_request_errors_total{op="event.get",status_class="4xx",transport="http"} 1"#
        ));
        assert!(text.contains("events_request_duration_seconds_bucket"));
        let json = m.render_json();
        assert_eq!(json["outbox_pending"], json!(0.0));
        assert!(
            json["events_requests_total"]
                .as_array()
                .is_some_and(|a| a.len() == 2)
        );
    }
}
