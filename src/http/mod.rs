//! The axum gateway: a drop-in for the Django service's REST API (served
//! under both `/api/v1/events/…` and `/api/v1/…`, as the BFF strips
//! `events`), plus health, readiness and metrics. Handlers only parse, call
//! the application layer and render; every rule lives below.

mod api;
mod middleware;
pub mod openapi;
pub mod probes;
mod stream;

use axum::Router;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use api::error_response;

/// Shared, cheap-to-clone handles every transport uses.
#[derive(Clone)]
pub struct AppState {
    pub config: std::sync::Arc<crate::config::Config>,
    pub db: sqlx::PgPool,
    pub nats: async_nats::Client,
    pub app: crate::app::App,
    pub outbox_wakeup: std::sync::Arc<tokio::sync::Notify>,
    pub publisher: std::sync::Arc<crate::actors::outbox::Publisher>,
    /// The `access` mode's authorizer (its counters are for metrics);
    /// `None` in `local` mode.
    pub access_authorizer: Option<std::sync::Arc<crate::authz::AccessAuthorizer>>,
    pub metrics: std::sync::Arc<crate::telemetry::metrics::Metrics>,
}

/// Every route: the unsigned probes, and the API under both prefixes. The
/// router serves this list and the OpenAPI document is collected from it.
pub fn routes() -> OpenApiRouter<AppState> {
    let api = api::routes();
    OpenApiRouter::new()
        .routes(routes!(probes::health))
        .routes(routes!(probes::ready))
        .routes(routes!(probes::metrics))
        .nest(openapi::PREFIX, api.clone())
        .nest(openapi::BFF_PREFIX, openapi::bff_copy(api))
}

pub fn router(state: AppState) -> Router {
    let (router, _) = routes().split_for_parts();
    router.fallback(api::not_found).with_state(state)
}

/// Serves HTTP until `shutdown` completes. The middleware that must run
/// before routing (trailing slashes are trimmed before a route is chosen)
/// wraps the whole router.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::ServiceExt;
    use tower::Layer;
    let inner = axum::middleware::from_fn(middleware::method_not_allowed).layer(router(state));
    let inner = axum::middleware::from_fn(middleware::request_id_and_panics).layer(inner);
    // Outermost, so that the 500 a caught panic becomes carries them too.
    let outer = axum::middleware::from_fn(middleware::security_headers).layer(inner);
    axum::serve(listener, outer.into_make_service())
        .with_graceful_shutdown(shutdown)
        .await
}
