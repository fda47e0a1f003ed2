//! The REST routes of the BFF contract and the one adapter that runs them.
//!
//! [`routes`] is the one list of routes: the router serves it and the
//! OpenAPI document is collected from it, each handler's `#[utoipa::path]`
//! saying what is particular to it. What every operation shares (the
//! signature, the context headers, the error responses, the query fields
//! the parser reads) is added from the code in [`crate::http::openapi`].

use crate::app::pipeline::{Framing, Incoming, Target};
use crate::app::{Op, Reply};
use crate::auth::{HeaderSource, RequestParts};
use crate::domain::ErrorCode;
use crate::error::AppError;
use crate::http::AppState;
use crate::http::middleware::{ReceivedTarget, no_content};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::requests::{
    AttendanceBody, CancelBody, CreateBody, PatchBody, ReviewBody, RsvpBody,
};
use crate::app::views::{EventView, Page};
use crate::domain::{EventId, UserId};

/// The routes of the API, relative to each prefix it is served under.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(crate::http::openapi::serve))
        .routes(routes!(get_event, update))
        .routes(routes!(rsvp_set, rsvp_clear))
        .routes(routes!(rsvp_list))
        .routes(routes!(rsvp_approve))
        .routes(routes!(rsvp_decline))
        .routes(routes!(rsvp_approve_many))
        .routes(routes!(rsvp_decline_many))
        .routes(routes!(stats))
        .routes(routes!(rsvps_csv))
        .routes(routes!(attendance_csv))
        .routes(routes!(attendance_mark, attendance_list))
        .routes(routes!(ics))
        .routes(routes!(series_get))
        .routes(routes!(series_ics))
        .routes(routes!(cancel))
        .routes(routes!(dsar_export))
        .routes(routes!(dsar_erase))
        .routes(routes!(admin_roles_list))
        .routes(routes!(admin_role_grant, admin_role_revoke))
        .routes(routes!(membership_add, membership_remove, membership_list))
        .routes(routes!(audit_list))
        .routes(routes!(capabilities))
        .routes(routes!(stream))
        .routes(routes!(feed_create, feed_list))
        .routes(routes!(feed_calendar, feed_revoke))
        .routes(routes!(import))
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
    run_with(state, op, target, request, None).await
}

/// [`run`], reading the operation's fields from `fields_query` instead of
/// the query the signature covers.
async fn run_with(
    state: &AppState,
    op: Op,
    target: Target,
    request: Request,
    fields_query: Option<String>,
) -> Response {
    let (parts, body) = request.into_parts();
    let limit = op.max_body_bytes(state.app.max_body_bytes());
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
                query: fields_query.as_deref().unwrap_or(&received.query),
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
        (_, Reply::Stream(live)) => crate::http::stream::response(*live),
        (_, Reply::Csv(export)) => {
            let mut response =
                (StatusCode::OK, axum::body::Body::from_stream(export.body)).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8; header=present"),
            );
            if let Ok(v) =
                HeaderValue::from_str(&format!("attachment; filename=\"{}\"", export.filename))
            {
                headers.insert(header::CONTENT_DISPOSITION, v);
            }
            response
        }
        (_, Reply::Calendar { filename, body }) => {
            let mut response = (StatusCode::OK, body).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::domain::ics::CONTENT_TYPE),
            );
            if let Ok(v) =
                HeaderValue::from_str(&crate::domain::ics::content_disposition(&filename))
            {
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

/// Two path segments, as [`segment`].
fn segments(path: Result<Path<(String, String)>, PathRejection>) -> (String, String) {
    path.map(|Path(s)| s)
        .unwrap_or_else(|_| ("\u{FFFD}".to_string(), "\u{FFFD}".to_string()))
}

/// List events
///
/// Events of the caller's tenant that the caller may see, ordered by start
/// time then id; cancelled events included. Needs `events.event.read` at the
/// filtered scope (the tenant when none). Visibility is part of the query,
/// so pages are full and `meta.total` counts only visible events.
#[utoipa::path(get, path = "", operation_id = "listEvents", tag = "events",
    extensions(("x-nats-operation" = json!("event.list"))),
    responses((status = 200, description = "A page of events", body = Page<EventView>)))]
async fn list(State(state): State<AppState>, request: Request) -> Response {
    run(&state, Op::EventList, Target::Query, request).await
}

/// Create an event
///
/// Needs `events.event.create` at the event's scope. Answers **200** with
/// the event (`version` 1). Idempotent: a retry with the same `X-Request-Id`
/// by the same user in the same tenant within 24 h answers the first event;
/// the same id with another body is 409 `IDEMPOTENCY_CONFLICT`.
#[utoipa::path(post, path = "", operation_id = "createEvent", tag = "events",
    extensions(("x-nats-operation" = json!("event.create"))),
    request_body = CreateBody,
    responses((status = 200, description = "The created event (or the first one, on a retry)", body = EventView)))]
async fn create(State(state): State<AppState>, request: Request) -> Response {
    run(&state, Op::EventCreate, Target::None, request).await
}

/// Get an event
///
/// An event of another tenant, a hidden one and a missing one are all 404.
#[utoipa::path(get, path = "/{event_id}", operation_id = "getEvent", tag = "events",
    extensions(("x-nats-operation" = json!("event.get"))),
    params(("event_id" = inline(EventId), Path, description = "Not a UUID: 400 `INVALID_EVENT_ID`")),
    responses((status = 200, description = "The event", body = EventView)))]
async fn get_event(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::EventGet, Target::Event(segment(id)), request).await
}

/// Update an event
///
/// Needs `events.event.manage`. Only the keys present are considered; none
/// at all is 400 `NO_UPDATES`. An update that changes nothing leaves
/// `version` and `updatedAt` as they were. A cancelled event is 409.
#[utoipa::path(patch, path = "/{event_id}", operation_id = "updateEvent", tag = "events",
    extensions(("x-nats-operation" = json!("event.update"))),
    params(("event_id" = inline(EventId), Path, description = "Not a UUID: 400 `INVALID_EVENT_ID`")),
    request_body = PatchBody,
    responses((status = 200, description = "The event after the update", body = EventView)))]
async fn update(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::EventUpdate, Target::Event(segment(id)), request).await
}

/// Cancel an event
///
/// Needs `events.event.manage`. Answers the event with `status:
/// "cancelled"`; cancelling again changes nothing (200). Afterwards update,
/// RSVP, RSVP removal and attendance are 409 `EVENT_CANCELLED`.
#[utoipa::path(post, path = "/{event_id}/cancel", operation_id = "cancelEvent", tag = "events",
    extensions(("x-nats-operation" = json!("event.cancel"))),
    params(("event_id" = inline(EventId), Path, description = "Not a UUID: 400 `INVALID_EVENT_ID`")),
    request_body(content = CancelBody, description = "Optional: no body means no reason"),
    responses((status = 200, description = "The cancelled event", body = EventView)))]
async fn cancel(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::EventCancel, Target::Event(segment(id)), request).await
}

/// Set the caller's RSVP
///
/// Needs `events.rsvp.set`. An upsert: **204**, empty body, whether it
/// changed or not. `going` on a full event is stored as `waitlisted` and
/// promoted when a seat frees up.
#[utoipa::path(post, path = "/{event_id}/rsvp", operation_id = "setRsvp", tag = "rsvp",
    extensions(("x-nats-operation" = json!("rsvp.set"))),
    params(("event_id" = inline(EventId), Path, description = "Not a UUID: 400 `INVALID_EVENT_ID`")),
    request_body = RsvpBody,
    responses((status = 204, description = "Stored; no body")))]
async fn rsvp_set(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::RsvpSet, Target::Event(segment(id)), request).await
}

/// Remove the caller's RSVP
///
/// **204**, empty body, also when there was none. A freed seat goes to the
/// first waitlisted user.
#[utoipa::path(delete, path = "/{event_id}/rsvp", operation_id = "clearRsvp", tag = "rsvp",
    extensions(("x-nats-operation" = json!("rsvp.clear"))),
    params(("event_id" = inline(EventId), Path, description = "Not a UUID: 400 `INVALID_EVENT_ID`")),
    responses((status = 204, description = "Removed (or there was none); no body")))]
async fn rsvp_clear(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::RsvpClear, Target::Event(segment(id)), request).await
}

/// List an event's RSVPs
///
/// Needs `events.event.manage`. In the order the RSVPs were first made;
/// waitlisted entries carry their position, from 1.
#[utoipa::path(get, path = "/{event_id}/rsvps", operation_id = "listRsvps", tag = "rsvp",
    extensions(("x-nats-operation" = json!("rsvp.list"))),
    params(("event_id" = inline(EventId), Path, description = "Not a UUID: 400 `INVALID_EVENT_ID`")),
    responses((status = 200, description = "A page of RSVPs")))]
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

/// Approve an RSVP
///
/// Needs `events.event.manage`. A `pending` (or `declined`) RSVP becomes
/// `going`, or `waitlisted` at the end of the queue when the party does not
/// fit or others wait; any other RSVP is left as it is (`changed: false`).
#[utoipa::path(post, path = "/{event_id}/rsvps/{user_id}/approve", operation_id = "approveRsvp", tag = "rsvp",
    extensions(("x-nats-operation" = json!("rsvp.approve"))),
    params(("event_id" = inline(EventId), Path, description = "Not a UUID: 400 `INVALID_EVENT_ID`"),
           ("user_id" = inline(UserId), Path, description = "Whose RSVP; not a UUID: 400 `INVALID_USER_ID`")),
    responses((status = 200, description = "What became of the RSVP, and the event's counters")))]
async fn rsvp_approve(
    State(state): State<AppState>,
    ids: Result<Path<(String, String)>, PathRejection>,
    request: Request,
) -> Response {
    let (id, uid) = segments(ids);
    run(&state, Op::RsvpApprove, Target::EventUser(id, uid), request).await
}

/// Decline an RSVP
///
/// Needs `events.event.manage`. A `pending`, `going` or `waitlisted` RSVP
/// becomes `declined` (seats it held go to the waitlist); asking for
/// `going` again leaves it declined.
#[utoipa::path(post, path = "/{event_id}/rsvps/{user_id}/decline", operation_id = "declineRsvp", tag = "rsvp",
    extensions(("x-nats-operation" = json!("rsvp.decline"))),
    params(("event_id" = inline(EventId), Path, description = "Not a UUID: 400 `INVALID_EVENT_ID`"),
           ("user_id" = inline(UserId), Path, description = "Whose RSVP; not a UUID: 400 `INVALID_USER_ID`")),
    responses((status = 200, description = "What became of the RSVP, and the event's counters")))]
async fn rsvp_decline(
    State(state): State<AppState>,
    ids: Result<Path<(String, String)>, PathRejection>,
    request: Request,
) -> Response {
    let (id, uid) = segments(ids);
    run(&state, Op::RsvpDecline, Target::EventUser(id, uid), request).await
}

/// Approve RSVPs in bulk
///
/// As approving one, for up to 500 users (`userIds`), in one transaction,
/// in the order given.
#[utoipa::path(post, path = "/{event_id}/rsvps/approve", operation_id = "approveRsvps", tag = "rsvp",
    extensions(("x-nats-operation" = json!("rsvp.approve"))),
    params(("event_id" = inline(EventId), Path, description = "Not a UUID: 400 `INVALID_EVENT_ID`")),
    request_body = ReviewBody,
    responses((status = 200, description = "What became of each RSVP, and the event's counters")))]
async fn rsvp_approve_many(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::RsvpApprove, Target::Event(segment(id)), request).await
}

/// Decline RSVPs in bulk
///
/// As declining one, for up to 500 users (`userIds`), in one transaction.
#[utoipa::path(post, path = "/{event_id}/rsvps/decline", operation_id = "declineRsvps", tag = "rsvp",
    extensions(("x-nats-operation" = json!("rsvp.decline"))),
    params(("event_id" = inline(EventId), Path, description = "Not a UUID: 400 `INVALID_EVENT_ID`")),
    request_body = ReviewBody,
    responses((status = 200, description = "What became of each RSVP, and the event's counters")))]
async fn rsvp_decline_many(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::RsvpDecline, Target::Event(segment(id)), request).await
}

/// An event's RSVP statistics
///
/// Needs `events.event.manage`: `{eventId, rsvpCounts, seats,
/// waitlistLength, attended, attendanceRate}`, where `attendanceRate` is
/// attended / going (0 to 1; 0 when nobody is going).
#[utoipa::path(get, path = "/{event_id}/stats", operation_id = "eventStats", tag = "events",
    extensions(("x-nats-operation" = json!("event.stats"))),
    params(("event_id" = inline(EventId), Path, description = "Not a UUID: 400 `INVALID_EVENT_ID`")),
    responses((status = 200, description = "The statistics")))]
async fn stats(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::EventStats, Target::Event(segment(id)), request).await
}

/// Export the RSVPs as CSV
///
/// Needs `events.event.manage`. RFC 4180 (CRLF, a header line), in the
/// order of the RSVP listing, streamed: `user_id, status, guests,
/// waitlist_position, created_at, updated_at`. HTTP only.
#[utoipa::path(get, path = "/{event_id}/rsvps.csv", operation_id = "exportRsvps", tag = "rsvp",
    extensions(("x-nats-operation" = json!("rsvp.export"))),
    params(("event_id" = inline(EventId), Path, description = "Not a UUID: 400 `INVALID_EVENT_ID`")),
    responses((status = 200, description = "The RSVPs", content_type = "text/csv", body = String,
        headers(("Content-Disposition" = String, description = "`attachment; filename=\"event-{id}-rsvps.csv\"`")))))]
async fn rsvps_csv(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::RsvpExport, Target::Event(segment(id)), request).await
}

/// Export the attendance as CSV
///
/// Needs `events.event.manage` or `events.attendance.mark`. RFC 4180, in
/// the order of the attendance listing, streamed: `user_id, marked_by,
/// marked_at`. HTTP only.
#[utoipa::path(get, path = "/{event_id}/attendance.csv", operation_id = "exportAttendance", tag = "attendance",
    extensions(("x-nats-operation" = json!("attendance.export"))),
    params(("event_id" = inline(EventId), Path, description = "Not a UUID: 400 `INVALID_EVENT_ID`")),
    responses((status = 200, description = "The attendance", content_type = "text/csv", body = String,
        headers(("Content-Disposition" = String, description = "`attachment; filename=\"event-{id}-attendance.csv\"`")))))]
async fn attendance_csv(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(
        &state,
        Op::AttendanceExport,
        Target::Event(segment(id)),
        request,
    )
    .await
}

/// Mark a user as attended
///
/// Needs `events.attendance.mark`. The first mark wins; **204**, empty body.
#[utoipa::path(post, path = "/{event_id}/attendance", operation_id = "markAttendance", tag = "attendance",
    extensions(("x-nats-operation" = json!("attendance.mark"))),
    params(("event_id" = inline(EventId), Path, description = "Not a UUID: 400 `INVALID_EVENT_ID`")),
    request_body = AttendanceBody,
    responses((status = 204, description = "Marked; no body")))]
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

/// List an event's attendance
///
/// Needs `events.event.manage` or `events.attendance.mark`.
#[utoipa::path(get, path = "/{event_id}/attendance", operation_id = "listAttendance", tag = "attendance",
    extensions(("x-nats-operation" = json!("attendance.list"))),
    params(("event_id" = inline(EventId), Path, description = "Not a UUID: 400 `INVALID_EVENT_ID`")),
    responses((status = 200, description = "A page of attendance marks")))]
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

/// Download the event as iCalendar
///
/// RFC 5545, UTF-8, CRLF line ends, lines folded at 75 octets. `SEQUENCE`
/// is `version - 1` and `STATUS` is `CANCELLED` once cancelled.
#[utoipa::path(get, path = "/{event_id}/ics", operation_id = "exportIcs", tag = "events",
    extensions(("x-nats-operation" = json!("event.ics"))),
    params(("event_id" = inline(EventId), Path, description = "Not a UUID: 400 `INVALID_EVENT_ID`")),
    responses((status = 200, description = "The calendar", content_type = "text/calendar; charset=utf-8", body = String,
        headers(("Content-Disposition" = String, description = "`attachment; filename=\"event-{id}.ics\"`")))))]
async fn ics(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::EventIcs, Target::Event(segment(id)), request).await
}

/// Get a recurring event's series
///
/// The rule, its excluded dates, the zone it is expanded in and every
/// occurrence the caller may see (`id`, `recurrenceId`, `startsAt`,
/// `status`), in order. Hidden and missing series are both 404.
#[utoipa::path(get, path = "/series/{series_id}", operation_id = "getSeries", tag = "events",
    extensions(("x-nats-operation" = json!("series.get"))),
    params(("series_id" = inline(String), Path, description = "Not a UUID: 400 `INVALID_SERIES_ID`")),
    responses((status = 200, description = "The series")))]
async fn series_get(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::SeriesGet, Target::Series(segment(id)), request).await
}

/// Download a series as iCalendar
///
/// One `VEVENT` with `RRULE` and `EXDATE` for the series, plus one with
/// `RECURRENCE-ID` for each occurrence changed or cancelled on its own; a
/// `VTIMEZONE` for its zone.
#[utoipa::path(get, path = "/series/{series_id}/ics", operation_id = "exportSeriesIcs", tag = "events",
    extensions(("x-nats-operation" = json!("series.ics"))),
    params(("series_id" = inline(String), Path, description = "Not a UUID: 400 `INVALID_SERIES_ID`")),
    responses((status = 200, description = "The calendar", content_type = "text/calendar; charset=utf-8", body = String,
        headers(("Content-Disposition" = String, description = "`attachment; filename=\"series-{id}.ics\"`")))))]
async fn series_ics(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::SeriesIcs, Target::Series(segment(id)), request).await
}

/// Export a user's data (DSAR)
///
/// Allowed to the subject (even when suspended or banned) and to system
/// admins; anyone else gets 403 "DSAR access denied". The caller's tenant
/// only; other users' ids are shown as `"[redacted]"`.
#[utoipa::path(get, path = "/internal/dsar/users/{user_id}/export", operation_id = "dsarExport", tag = "dsar",
    extensions(("x-nats-operation" = json!("dsar.export"))),
    params(("user_id" = inline(UserId), Path, description = "The subject; not a UUID: 400 `INVALID_USER_ID`")),
    responses((status = 200, description = "The bundle")))]
async fn dsar_export(
    State(state): State<AppState>,
    uid: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::DsarExport, Target::User(segment(uid)), request).await
}

/// Erase a user's data (DSAR)
///
/// Same access rule as the export; one transaction. A body, if sent, must
/// be JSON and is ignored.
#[utoipa::path(post, path = "/internal/dsar/users/{user_id}/erase", operation_id = "dsarErase", tag = "dsar",
    extensions(("x-nats-operation" = json!("dsar.erase"))),
    params(("user_id" = inline(UserId), Path, description = "The subject; not a UUID: 400 `INVALID_USER_ID`")),
    responses((status = 200, description = "What was erased")))]
async fn dsar_erase(
    State(state): State<AppState>,
    uid: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::DsarErase, Target::User(segment(uid)), request).await
}

/// List roles and role bindings
///
/// Tenant admins only (else 403 "Tenant admin required"): the role catalog
/// and the role bindings of the caller's tenant the filters select.
#[utoipa::path(get, path = "/admin/roles", operation_id = "listRoles", tag = "admin",
    extensions(("x-nats-operation" = json!("admin.roles.list"))),
    responses((status = 200, description = "The catalog and the bindings")))]
async fn admin_roles_list(State(state): State<AppState>, request: Request) -> Response {
    run(&state, Op::AdminRolesList, Target::Query, request).await
}

/// Grant a role
///
/// Tenant admins only; `events.admin` by system admins only. Answers
/// **200** with the binding; granting one that exists answers it with
/// `created: false`. Audited.
#[utoipa::path(post, path = "/admin/role-bindings", operation_id = "grantRole", tag = "admin",
    extensions(("x-nats-operation" = json!("admin.roles.grant"))),
    responses((status = 200, description = "The binding (new or existing)")))]
async fn admin_role_grant(State(state): State<AppState>, request: Request) -> Response {
    run(&state, Op::AdminRolesGrant, Target::None, request).await
}

/// Revoke a role
///
/// Tenant admins only; `events.admin` by system admins only. Removes the binding `bindingId` names, or the one of
/// `userId` + `role` at the scope (default the tenant), given in the body or
/// in the query, as a DELETE body is not always possible (one or the
/// other: both is 400 `INVALID_BODY`). `revoked: 0` when there was none. Audited.
#[utoipa::path(delete, path = "/admin/role-bindings", operation_id = "revokeRole", tag = "admin",
    extensions(("x-nats-operation" = json!("admin.roles.revoke"))),
    responses((status = 200, description = "How many bindings were removed")))]
async fn admin_role_revoke(State(state): State<AppState>, request: Request) -> Response {
    run(&state, Op::AdminRolesRevoke, Target::Query, request).await
}

/// Add a member to a community or team
///
/// Tenant admins only, embedded authorization only (409
/// `MEMBERSHIP_AUTHORITY_IS_PORTAL` with Access and Portal). Answers **200**
/// with the membership; adding one that exists answers it with
/// `created: false`. Audited. Reads see it at once, on every instance.
#[utoipa::path(post, path = "/admin/memberships", operation_id = "addMembership", tag = "admin",
    extensions(("x-nats-operation" = json!("membership.add"))),
    responses((status = 200, description = "The membership (new or existing)")))]
async fn membership_add(State(state): State<AppState>, request: Request) -> Response {
    run(&state, Op::MembershipAdd, Target::None, request).await
}

/// Remove a member from a community or team
///
/// As adding; the fields come in the body or in the query (one or the
/// other: both is 400 `INVALID_BODY`). `removed: 0` when there was no such membership.
#[utoipa::path(delete, path = "/admin/memberships", operation_id = "removeMembership", tag = "admin",
    extensions(("x-nats-operation" = json!("membership.remove"))),
    responses((status = 200, description = "How many memberships were removed")))]
async fn membership_remove(State(state): State<AppState>, request: Request) -> Response {
    run(&state, Op::MembershipRemove, Target::Query, request).await
}

/// List memberships
///
/// Tenant admins only, embedded authorization only. Newest first.
#[utoipa::path(get, path = "/admin/memberships", operation_id = "listMemberships", tag = "admin",
    extensions(("x-nats-operation" = json!("membership.list"))),
    responses((status = 200, description = "One page of memberships")))]
async fn membership_list(State(state): State<AppState>, request: Request) -> Response {
    run(&state, Op::MembershipList, Target::Query, request).await
}

/// Read the audit log
///
/// Tenant admins: their tenant's entries; system admins may name another
/// tenant (`tenantId`). Newest first.
#[utoipa::path(get, path = "/admin/audit", operation_id = "listAudit", tag = "admin",
    extensions(("x-nats-operation" = json!("admin.audit.list"))),
    responses((status = 200, description = "One page of audit entries")))]
async fn audit_list(State(state): State<AppState>, request: Request) -> Response {
    run(&state, Op::AdminAuditList, Target::Query, request).await
}

/// What the caller may do
///
/// Any signed caller, about themselves: their flags as interpreted, their
/// roles and every events permission at the scope (default the tenant),
/// decided by the same authorizer that guards the operations.
#[utoipa::path(get, path = "/me/capabilities", operation_id = "capabilities", tag = "me",
    extensions(("x-nats-operation" = json!("me.capabilities"))),
    responses((status = 200, description = "The caller's capabilities")))]
async fn capabilities(State(state): State<AppState>, request: Request) -> Response {
    run(&state, Op::MeCapabilities, Target::Query, request).await
}

/// Live updates
///
/// Server-sent events, one per domain event the caller may see (visibility
/// judged when the message is sent): `id` is the stream sequence, `event`
/// the type, `data` one JSON line `{"type", "eventId", "time", "event"}`
/// with the caller's view of the event (and `userId`, `status` of an RSVP
/// change for that user and for the event's managers). A comment
/// `: keep-alive` comes every 15 s of silence. `Last-Event-ID` (or
/// `lastEventId`) resumes after that message; a point the stream no longer
/// holds gets `event: reset` and the stream from now. Not served over NATS:
/// read the JetStream stream there.
#[utoipa::path(get, path = "/stream", operation_id = "stream", tag = "events",
    extensions(("x-nats-operation" = json!("event.stream"))),
    params(("Last-Event-ID" = Option<String>, Header, description = "Resume after this message id (a stream sequence)")),
    responses((status = 200, description = "The stream (text/event-stream), open until either side ends it", content_type = "text/event-stream", body = String)))]
async fn stream(State(state): State<AppState>, request: Request) -> Response {
    // The header resumes like the query field; the query wins when both are
    // sent, and the signature covers the query as received.
    let header = request
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    let query = request
        .extensions()
        .get::<ReceivedTarget>()
        .map(|t| t.query.clone())
        .unwrap_or_else(|| request.uri().query().unwrap_or("").to_string());
    let in_query = url::form_urlencoded::parse(query.as_bytes())
        .any(|(k, _)| k == "lastEventId" || k == "last_event_id");
    let fields_query = match header {
        Some(id) if !in_query => {
            let extra: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("lastEventId", &id)
                .finish();
            Some(if query.is_empty() {
                extra
            } else {
                format!("{query}&{extra}")
            })
        }
        _ => None,
    };
    run_with(
        &state,
        Op::EventStream,
        Target::Query,
        request,
        fields_query,
    )
    .await
}

/// Create a calendar feed
///
/// Any signed caller who is not suspended or banned, for themselves. The
/// reply holds the `token` and the `url` (`/api/v1/events/feeds/<token>.ics`)
/// once: only its hash is stored. Optional filters: one scope
/// (`scopeType` with `scopeId`) and `myRsvp`. Audited.
#[utoipa::path(post, path = "/feeds", operation_id = "createFeed", tag = "feeds",
    extensions(("x-nats-operation" = json!("feed.create"))),
    responses((status = 200, description = "The feed with its token and URL (shown this once)")))]
async fn feed_create(State(state): State<AppState>, request: Request) -> Response {
    run(&state, Op::FeedCreate, Target::None, request).await
}

/// List the caller's calendar feeds
///
/// Their ids, filters and creation times; never their tokens.
#[utoipa::path(get, path = "/feeds", operation_id = "listFeeds", tag = "feeds",
    extensions(("x-nats-operation" = json!("feed.list"))),
    responses((status = 200, description = "The caller's feeds")))]
async fn feed_list(State(state): State<AppState>, request: Request) -> Response {
    run(&state, Op::FeedList, Target::Query, request).await
}

/// Revoke a calendar feed
///
/// The owner, or a tenant admin for any feed of the tenant; another's feed
/// is 404 to anyone else. Its URL answers 404 from then on. Audited.
#[utoipa::path(delete, path = "/feeds/{feed_id}", operation_id = "revokeFeed", tag = "feeds",
    extensions(("x-nats-operation" = json!("feed.revoke"))),
    params(("feed_id" = String, Path, description = "The feed's id (a UUID)")),
    responses((status = 200, description = "`{\"revoked\": 1}`; no such feed (or another's): 404")))]
async fn feed_revoke(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    run(&state, Op::FeedRevoke, Target::Event(segment(id)), request).await
}

/// A calendar feed (for calendar apps)
///
/// **Not signed**: the token in the path is the credential. The events the
/// feed's owner may see now (by their roles and memberships alone), from 30
/// days back, cancelled ones with `STATUS:CANCELLED`. `ETag` with
/// `If-None-Match` → 304. Unknown or revoked tokens, and owners who are
/// suspended or banned, are 404; too many requests for one token are 429
/// with `Retry-After`.
#[utoipa::path(get, path = "/feeds/{feed_id}", operation_id = "feedCalendar", tag = "feeds", security(()),
    params(("feed_id" = String, Path, description = "`<token>.ics`"),
           ("If-None-Match" = Option<String>, Header, description = "The `ETag` of a copy the client holds")),
    responses(
        (status = 200, description = "The calendar", content_type = "text/calendar; charset=utf-8", body = String,
            headers(("ETag" = String, description = "Changes whenever the document does"))),
        (status = 304, description = "Unchanged since the `ETag` sent"),
        (status = 404, description = "No such feed", body = crate::error::ErrorEnvelope),
        (status = 429, description = "Too many requests for this feed", body = crate::error::ErrorEnvelope,
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
        (status = 503, description = "Memberships or the database could not be reached", body = crate::error::ErrorEnvelope)))]
async fn feed_calendar(
    State(state): State<AppState>,
    file: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let started = std::time::Instant::now();
    let file = segment(file);
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok());
    let answer = state.app.feed_calendar(&file, if_none_match).await;
    let code = answer.as_ref().err().map(|e| e.code().as_str());
    let response = feed_response(answer, request_id);
    // The token is never logged: it is the credential.
    crate::telemetry::finish_request(
        state.app.metrics(),
        &crate::telemetry::RequestRecord {
            transport: "http",
            op: "feed.calendar",
            request_id,
            tenant_id: None,
            user_id: None,
            status: response.status().as_u16(),
            code,
            took: started.elapsed(),
            write: false,
        },
    );
    response
}

fn feed_response(
    answer: Result<crate::app::feeds::FeedAnswer, AppError>,
    request_id: Option<&str>,
) -> Response {
    match answer {
        Ok(crate::app::feeds::FeedAnswer::NotModified { etag }) => {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            if let Ok(v) = HeaderValue::from_str(&etag) {
                response.headers_mut().insert(header::ETAG, v);
            }
            response
        }
        Ok(crate::app::feeds::FeedAnswer::Calendar { body, etag }) => {
            let mut response = (StatusCode::OK, body.as_str().to_owned()).into_response();
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::domain::ics::CONTENT_TYPE),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            if let Ok(v) = HeaderValue::from_str(&etag) {
                h.insert(header::ETAG, v);
            }
            response
        }
        Err(err) => {
            if err.is_internal() {
                tracing::error!(error = %err, "feed failed");
            }
            error_response(&err, request_id)
        }
    }
}

/// Import events from an iCalendar file
///
/// The body is the calendar (`text/calendar`, UTF-8, at most 1 MiB and
/// 5,000 VEVENTs, else 413); the query names the scope (`scopeType`,
/// `scopeId`) and the `visibility` of the events. Needs
/// `events.event.create` there. Each VEVENT is keyed by its UID and
/// RECURRENCE-ID in the scope: importing again updates the changed ones and
/// creates no duplicates. Recurring VEVENTs are skipped with their reason.
/// A calendar that cannot be read is 422 with `details.line`.
#[utoipa::path(post, path = "/import", operation_id = "importCalendar", tag = "events",
    extensions(("x-nats-operation" = json!("event.import"))),
    request_body(content = String, content_type = "text/calendar", description = "The calendar"),
    responses((status = 200, description = "`{created, updated, unchanged, skipped: [{uid, line, reason}]}`")))]
async fn import(State(state): State<AppState>, request: Request) -> Response {
    run(&state, Op::EventImport, Target::Query, request).await
}
