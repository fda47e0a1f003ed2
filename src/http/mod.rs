//! The axum gateway: the BFF's REST API, health, readiness and metrics.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::startup::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health).head(health))
        .fallback(not_found)
        .with_state(state)
}

/// Liveness only: answers while the process serves HTTP, touching nothing else.
async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {"code": "NOT_FOUND", "message": "No such route", "details": {}, "request_id": null}})),
    )
        .into_response()
}
