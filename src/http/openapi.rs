//! The OpenAPI document of the HTTP API.

use axum::response::{IntoResponse, Response};

/// `GET /api/v1/events/openapi.json` (no signature needed).
pub async fn serve() -> Response {
    axum::Json(document()).into_response()
}

pub fn document() -> serde_json::Value {
    serde_json::json!({"openapi": "3.1.0", "info": {"title": "UpdSpace Events", "version": env!("CARGO_PKG_VERSION")}, "paths": {}})
}
