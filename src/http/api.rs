//! The REST routes of the BFF contract and the one adapter that runs them.

use std::time::Instant;

use tracing::Instrument;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value};

use crate::app::{AppError, CallMeta, Op, Reply};
use crate::auth::{HeaderSource, RequestParts};
use crate::domain::{DomainError, ErrorCode};
use crate::http::middleware::{ReceivedTarget, no_content};
use crate::startup::AppState;

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

/// Where an operation's input comes from besides the body.
enum Target {
    None,
    Query,
    Event(String),
    /// An event listing (`/rsvps`, `/attendance`): the query string pages
    /// and filters it (`limit`, `offset`, `status`), as the NATS body does.
    EventQuery(String),
    User(String),
}

async fn run(state: &AppState, op: Op, target: Target, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let supplied_id = parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .map(str::to_string);
    let received = parts
        .extensions
        .get::<ReceivedTarget>()
        .cloned()
        .unwrap_or(ReceivedTarget {
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or("").to_string(),
        });
    let mut who: Option<(uuid::Uuid, uuid::Uuid)> = None;
    let span = crate::telemetry::trace::request_span(
        "http",
        op.name(),
        Headers(&parts.headers).header("traceparent"),
        Headers(&parts.headers).header("tracestate"),
    );
    let outcome = async {
        let limit = state.config.max_body_bytes;
        let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
            AppError::rejected(
                ErrorCode::PayloadTooLarge,
                format!("Request body is larger than {limit} bytes"),
            )
        })?;
        // Authentication comes before any look at the body.
        let ctx = state.app.authenticate(
            &Headers(&parts.headers),
            &RequestParts::http(
                parts.method.as_str(),
                &received.path,
                &received.query,
                &bytes,
            ),
        )?;
        who = Some((ctx.tenant_id, ctx.user_id));
        let body: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                DomainError::InvalidBody(format!("Cannot parse request body as JSON: {e}"))
            })?
        };
        let input = input(op, target, body, &received.query)?;
        let incoming = Headers(&parts.headers);
        let (traceparent, tracestate) = crate::telemetry::trace::context_of(
            &span,
            incoming.header("traceparent"),
            incoming.header("tracestate"),
        );
        let meta = CallMeta {
            traceparent,
            tracestate,
        };
        tokio::time::timeout(
            state.config.request_timeout,
            state
                .app
                .execute(&ctx, op, &input, &meta)
                .instrument(span.clone()),
        )
        .await
        .map_err(|_| AppError::Unavailable {
            code: ErrorCode::Timeout,
            message: "The request took too long; it may or may not have been applied".into(),
        })?
    }
    .await;
    let (response, code) = match outcome {
        Ok(reply) => (render(op, reply), None),
        Err(err) => {
            if err.is_internal() {
                tracing::error!(op = op.name(), request_id = ?supplied_id, error = %err, "internal error");
            }
            (
                error_response(&err, supplied_id.as_deref()),
                Some(err.code().as_str()),
            )
        }
    };
    crate::telemetry::finish_request(
        state.app.metrics(),
        &crate::telemetry::RequestRecord {
            transport: "http",
            op: op.name(),
            request_id: supplied_id.as_deref(),
            tenant_id: who.map(|w| w.0),
            user_id: who.map(|w| w.1),
            status: response.status().as_u16(),
            code,
            took: started.elapsed(),
        },
    );
    response
}

fn input(op: Op, target: Target, body: Value, query: &str) -> Result<Value, AppError> {
    let requires_body = matches!(
        op,
        Op::EventCreate | Op::EventUpdate | Op::RsvpSet | Op::AttendanceMark
    );
    let mut object = match body {
        Value::Object(map) => map,
        Value::Null if requires_body => return Ok(Value::Null),
        Value::Null => Map::new(),
        _ => {
            return Err(
                DomainError::InvalidBody("Request body must be a JSON object".into()).into(),
            );
        }
    };
    match target {
        Target::None => {}
        Target::Query => merge_query(&mut object, query),
        Target::EventQuery(id) => {
            merge_query(&mut object, query);
            object.insert("id".into(), Value::String(id.clone()));
            object.insert("eventId".into(), Value::String(id));
        }
        Target::Event(id) => {
            object.insert("id".into(), Value::String(id.clone()));
            object.insert("eventId".into(), Value::String(id));
        }
        Target::User(uid) => {
            object.insert("userId".into(), Value::String(uid));
        }
    }
    Ok(Value::Object(object))
}

/// Query parameters as string fields (the last of a repeated name wins).
fn merge_query(object: &mut Map<String, Value>, query: &str) {
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        object.insert(k.into_owned(), Value::String(v.into_owned()));
    }
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
