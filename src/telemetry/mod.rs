//! Logs (JSON lines or pretty) and, later, traces and metrics.

pub mod metrics;
pub mod trace;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, TelemetryConfig};

/// Keeps the trace exporter alive; dropping it flushes pending spans.
#[must_use]
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

fn tracer_provider(
    config: &TelemetryConfig,
) -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let endpoint = config.otlp_endpoint.as_ref()?;
    let mut url = endpoint.to_string();
    if !url.trim_end_matches('/').ends_with("/v1/traces") {
        url = format!("{}/v1/traces", url.trim_end_matches('/'));
    }
    let protocol = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
        Ok("http/json") => Protocol::HttpJson,
        _ => Protocol::HttpBinary,
    };
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .with_protocol(protocol)
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("events-svc: traces will not be exported: {e}");
            return None;
        }
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    Some(
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    )
}

/// Installs the global subscriber (JSON lines or pretty logs, plus an
/// OpenTelemetry layer when `OTEL_EXPORTER_OTLP_ENDPOINT` is set). Safe to
/// call twice (the second call is a no-op), which in-process tests rely on.
pub fn init(config: &TelemetryConfig) -> TelemetryGuard {
    use opentelemetry::trace::TracerProvider;
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = tracer_provider(config);
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("updspace-events")));
    let filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let result = match config.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    // An already-installed subscriber (tests, embedding) is fine.
    drop(result);
    TelemetryGuard { provider }
}

/// What one finished request reports: a log line with the request's
/// identity at top level, and the request metrics.
pub struct RequestRecord<'a> {
    pub transport: &'static str,
    pub op: &'static str,
    pub request_id: Option<&'a str>,
    pub tenant_id: Option<uuid::Uuid>,
    pub user_id: Option<uuid::Uuid>,
    pub status: u16,
    pub code: Option<&'static str>,
    pub took: std::time::Duration,
    /// A state-changing operation: logged at info even when served.
    pub write: bool,
}

/// Logs (4xx and every state-changing request at info, other successes at
/// debug, 5xx at error; never bodies, secrets or signatures) and counts
/// one request.
pub fn finish_request(metrics: &metrics::Metrics, r: &RequestRecord<'_>) {
    metrics.observe_request(r.transport, r.op, r.code, r.status, r.took);
    let duration_ms = r.took.as_secs_f64() * 1000.0;
    let tenant_id = r.tenant_id.map(|t| t.to_string());
    let user_id = r.user_id.map(|u| u.to_string());
    macro_rules! line {
        ($level:ident, $msg:literal) => {
            tracing::$level!(
                transport = r.transport,
                op = r.op,
                request_id = r.request_id,
                tenant_id = tenant_id.as_deref(),
                user_id = user_id.as_deref(),
                status = r.status,
                code = r.code,
                duration_ms,
                $msg
            )
        };
    }
    match r.status {
        500.. => line!(error, "request failed"),
        400.. => line!(info, "request refused"),
        _ if r.write => line!(info, "request served"),
        _ => line!(debug, "request served"),
    }
}
