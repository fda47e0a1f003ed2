//! The REST routes of the BFF contract and the one adapter that runs them.

use crate::app::pipeline::{Framing, Incoming, Target};
use crate::app::{Op, Reply};
use crate::auth::{HeaderSource, RequestParts};
use crate::domain::ErrorCode;
use crate::error::AppError;
use crate::http::middleware::{ReceivedTarget, no_content};
use crate::startup::AppState;
use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(list).post(create))
        .route("/openapi.json", get(crate::http::openapi::serve))
        .route("/{id}", get(get_event).patch(update))
        .route("/{id}/rsvp", post(rsvp_set).delete(rsvp_clear))
        .route("/{id}/rsvps", get(rsvp_list))
        .route(
            "/{id}/attendance",
            post(attendance_mark).get(attendance_list),
        )
        .route("/{id}/ics", get(ics))
        .route("/{id}/cancel", post(cancel))
        .route("/internal/dsar/users/{uid}/export", get(dsar_export))
        .route("/internal/dsar/users/{uid}/erase", post(dsar_erase))
        .route("/admin/roles", get(admin_roles_list))
        .route(
            "/admin/role-bindings",
            post(admin_role_grant).delete(admin_role_revoke),
        )
}

/// The error envelope as an HTTP response.
pub fn error_response(err: &AppError, request_id: Option<&str>) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(err.envelope(request_id))).into_response();
    if let Some(seconds) = err.retry_after() {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, seconds.into());
    }
    response
}

pub async fn not_found(headers: HeaderMap) -> Response {
    let supplied = headers.get("x-request-id").and_then(|v| v.to_str().ok());
    error_response(
        &AppError::rejected(ErrorCode::NotFound, "No such route"),
        supplied,
    )
}

struct Headers<'a>(&'a HeaderMap);

impl HeaderSource for Headers<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Runs one route's operation through the application's request pipeline.
async fn run(state: &AppState, op: Op, target: Target, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let limit = state.app.max_body_bytes();
    let (bytes, oversized) = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => (bytes, false),
        Err(_) => (Default::default(), true),
    };
    let received = parts
        .extensions
        .get::<ReceivedTarget>()
        .cloned()
        .unwrap_or(ReceivedTarget {
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or("").to_string(),
        });
    let outcome = state
        .app
        .handle(Incoming {
            op,
            headers: &Headers(&parts.headers),
            parts: RequestParts::http(
                parts.method.as_str(),
                &received.path,
                &received.query,
                &bytes,
            ),
            framing: Framing::Http {
                target,
                query: &received.query,
            },
            oversized,
        })
        .await;
    let response = match outcome.result {
        Ok(reply) => render(op, reply),
        Err(err) => error_response(&err, outcome.request_id.as_deref()),
    };
    outcome
        .report
        .finish(&state.app, response.status().as_u16());
    response
}

fn render(op: Op, reply: Reply) -> Response {
    match (op, reply) {
        (Op::RsvpSet | Op::RsvpClear | Op::AttendanceMark, _) => no_content(),
        (_, Reply::Json(value)) => (StatusCode::OK, axum::Json(value)).into_response(),
        (_, Reply::View(view)) => (StatusCode::OK, axum::Json(view)).into_response(),
        (_, Reply::Calendar { filename, body }) => {
            let mut response = (StatusCode::OK, body).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::domain::ics::CONTENT_TYPE),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
                headers.insert(header::CONTENT_DISPOSITION, v);
            }
            response
        }
    }
}

/// A path segment, or (when it is not valid UTF-8 once percent-decoded)
/// a value no id parser accepts: the request then fails after
/// authentication, with `INVALID_EVENT_ID` or `INVALID_USER_ID` in the
/// envelope, instead of axum's plain-text 400 before it.
fn segment(path: Result<Path<String>, PathRejection>) -> String {
    path.map(|Path(s)| s)
        .unwrap_or_else(|_| "\u{FFFD}".to_string())
}

async fn list(State(state): State<AppState>, request: Request) -> Response {
    run(&state, Op::EventList, Target::Query, request).await
}

async fn create(State(state): State<AppState>, request: Request) -> Response {
    run(&state, Op::EventCreate, Target::None, request).await
}

async fn get_event(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::EventGet, Target::Event(segment(id)), request).await
}

async fn update(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::EventUpdate, Target::Event(segment(id)), request).await
}

async fn cancel(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::EventCancel, Target::Event(segment(id)), request).await
}

async fn rsvp_set(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::RsvpSet, Target::Event(segment(id)), request).await
}

async fn rsvp_clear(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::RsvpClear, Target::Event(segment(id)), request).await
}

async fn rsvp_list(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(
        &state,
        Op::RsvpList,
        Target::EventQuery(segment(id)),
        request,
    )
    .await
}

async fn attendance_mark(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(
        &state,
        Op::AttendanceMark,
        Target::Event(segment(id)),
        request,
    )
    .await
}

async fn attendance_list(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(
        &state,
        Op::AttendanceList,
        Target::EventQuery(segment(id)),
        request,
    )
    .await
}

async fn ics(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::EventIcs, Target::Event(segment(id)), request).await
}

async fn dsar_export(
    State(state): State<AppState>,
    uid: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::DsarExport, Target::User(segment(uid)), request).await
}

async fn dsar_erase(
    State(state): State<AppState>,
    uid: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::DsarErase, Target::User(segment(uid)), request).await
}

async fn admin_roles_list(State(state): State<AppState>, request: Request) -> Response {
    run(&state, Op::AdminRolesList, Target::Query, request).await
}

async fn admin_role_grant(State(state): State<AppState>, request: Request) -> Response {
    run(&state, Op::AdminRolesGrant, Target::None, request).await
}

/// The binding to revoke comes in the body or in the query (`bindingId`,
/// or `userId` + `role` + scope), as a DELETE body is not always possible.
async fn admin_role_revoke(State(state): State<AppState>, request: Request) -> Response {
    run(&state, Op::AdminRolesRevoke, Target::Query, request).await
}
