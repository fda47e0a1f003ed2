//! Cross-cutting HTTP concerns: the received path kept for signatures,
//! trailing slashes, request ids, panics, security headers, and 405s in
//! the error envelope.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;

use crate::domain::ErrorCode;
use crate::error::AppError;
use crate::http::api::error_response;

/// The path and query exactly as received, before trailing-slash trimming:
/// signatures are verified over what the caller actually sent.
#[derive(Debug, Clone)]
pub struct ReceivedTarget {
    /// Percent-decoded, like Django's `request.path`.
    pub path: String,
    /// Raw, without `?`.
    pub query: String,
}

/// The request id of the request, or one made up for a request without it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn trim_trailing_slash(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    if path.len() <= 1 || !path.ends_with('/') {
        return None;
    }
    let trimmed = path.trim_end_matches('/');
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    let rebuilt = match uri.query() {
        Some(q) => format!("{trimmed}?{q}"),
        None => trimmed.to_string(),
    };
    rebuilt.parse().ok()
}

/// Records the received target, tolerates trailing slashes (no redirect),
/// echoes `X-Request-Id`, and turns a panic into a logged 500 envelope.
pub async fn request_id_and_panics(mut request: Request, next: Next) -> Response {
    let uri = request.uri().clone();
    let path = percent_encoding::percent_decode_str(uri.path())
        .decode_utf8_lossy()
        .into_owned();
    let received = ReceivedTarget {
        path,
        query: uri.query().unwrap_or("").to_string(),
    };
    let supplied = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|v| !v.trim().is_empty());
    let request_id = supplied
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if let Some(trimmed) = trim_trailing_slash(&uri) {
        *request.uri_mut() = trimmed;
    }
    request.extensions_mut().insert(received);
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    let method = request.method().clone();
    let outcome = std::panic::AssertUnwindSafe(next.run(request))
        .catch_unwind()
        .await;
    let mut response = match outcome {
        Ok(response) => response,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(request_id = %request_id, method = %method, path = %uri.path(), panic = %what, "handler panicked");
            error_response(
                &AppError::internal("panic", what),
                supplied.as_deref().or(Some(&request_id)),
            )
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// The headers the Django service sent on every response.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// axum answers a wrong method with an empty 405; callers get the envelope.
pub async fn method_not_allowed(request: Request, next: Next) -> Response {
    let request_id = request.extensions().get::<RequestId>().cloned();
    let response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut replaced = error_response(
        &AppError::rejected(
            ErrorCode::MethodNotAllowed,
            "Method not allowed on this route",
        ),
        request_id.as_ref().map(|r| r.0.as_str()),
    );
    if let Some(allow) = allow {
        replaced.headers_mut().insert(header::ALLOW, allow);
    }
    replaced
}

/// An empty 204.
pub fn no_content() -> Response {
    (StatusCode::NO_CONTENT, Body::empty()).into_response()
}
