//! Distributed tracing: OTLP export when configured, and W3C trace context
//! carried from a request (HTTP or NATS) into the actor, the outbox row and
//! the JetStream message, so one trace spans the BFF call and the consumer.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The span of one request, a child of the caller's `traceparent` if any.
pub fn request_span(
    transport: &'static str,
    op: &'static str,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{transport} {op}"),
        otel.kind = "server",
        transport,
        op,
    );
    if let Some(tp) = traceparent {
        let _ = span.set_parent(extract(tp, tracestate));
    }
    span
}

/// The context a `traceparent` (and `tracestate`) header describes.
pub fn extract(traceparent: &str, tracestate: Option<&str>) -> opentelemetry::Context {
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_string(), traceparent.to_string());
    if let Some(ts) = tracestate {
        carrier.insert("tracestate".to_string(), ts.to_string());
    }
    TraceContextPropagator::new().extract(&carrier)
}

/// The trace context to store with a change: the request span's own when
/// traces are recorded, else the caller's, passed through unchanged.
pub fn context_of(
    span: &tracing::Span,
    incoming_parent: Option<&str>,
    incoming_state: Option<&str>,
) -> (Option<String>, Option<String>) {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        let mut carrier: HashMap<String, String> = HashMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut carrier);
        if let Some(tp) = carrier.remove("traceparent") {
            return (
                Some(tp),
                carrier.remove("tracestate").filter(|s| !s.is_empty()),
            );
        }
    }
    (
        incoming_parent.map(str::to_string),
        incoming_state.map(str::to_string),
    )
}
