//! The OpenAPI 3.1 document of the HTTP API, generated with utoipa.
//!
//! The handlers in `api.rs` are one thin adapter for every route, so the
//! documentation lives here: schema types that mirror the JSON the
//! application layer renders (`app::views`, `store::dsar`), and one
//! documented stub per operation. [`Aliases`] then copies every
//! `/api/v1/events/…` path to the `/api/v1/…` alias the BFF calls, and
//! [`Common`] adds what every signed operation shares (the HMAC security
//! scheme, the context headers, the error responses with examples), so the
//! stubs only say what is particular to them. `GET /api/v1/events/openapi.json`
//! needs no signature.

use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::response::{Response as OaResponse, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, RefOr, Required};
use utoipa::{IntoParams, Modify, OpenApi, PartialSchema, ToSchema};

use crate::domain::ErrorCode;

/// `GET /api/v1/events/openapi.json` (also `/api/v1/openapi.json`, where
/// the Django service had it). No signature needed.
pub async fn serve() -> Response {
    // Serialised straight from utoipa's types, which keep the declared
    // order of paths and fields (a `serde_json::Value` would sort them).
    static BODY: LazyLock<String> =
        LazyLock::new(|| ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".into()));
    let mut response = BODY.as_str().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The whole document as JSON.
pub fn document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}))
}

const LONG_PREFIX: &str = "/api/v1/events";
const SHORT_PREFIX: &str = "/api/v1";

const API_DESCRIPTION: &str = "\
The HTTP gateway of the UpdSpace Events service: a drop-in replacement for the \
Django events service behind the BFF, on port 8005.

**Prefixes.** Every route is served under `/api/v1/events/…` (the Django \
service's prefix) and under `/api/v1/…` (what the BFF actually sends, since \
it strips `events`). A trailing slash is tolerated on every route; nothing \
ever redirects. The `/api/v1/…` copies have operation ids ending in `Bff`, \
and the list's slash-less spellings ids ending in `NoSlash`.

**Authentication.** Every route except `openapi.json` and `/health` needs the \
internal HMAC headers (`X-Request-Id`, `X-Tenant-Id`, `X-Tenant-Slug`, \
`X-User-Id`, optional `X-Master-Flags`, `X-Updspace-Timestamp`, \
`X-Updspace-Signature`, and `X-Updspace-Signature-Version: 2` for v2). v1 \
signs `METHOD\\nPATH\\nsha256_hex(body)\\nX-Request-Id\\ntimestamp` over the \
path actually received (query excluded), exactly as the BFF does; v2 also \
signs the query string and every identity header. \
`EVENTS_HMAC_MIN_VERSION=2` refuses v1. Authentication runs before the body \
is parsed, so an unsigned caller never learns the schema from a 422.

**Errors.** Always `{\"error\":{\"code\",\"message\",\"details\",\"request_id\"}}` \
with `Content-Type: application/json`: schema errors are 422 \
`VALIDATION_ERROR` with `details.fields` keyed by camelCase field name, unknown \
routes a 404 and wrong methods a 405 in the same envelope. Every response \
echoes `X-Request-Id` and carries `X-Content-Type-Options: nosniff`, \
`Referrer-Policy: same-origin` and `X-Frame-Options: DENY`.

**What differs from the Django service.** Both prefixes are served; \
datetimes are always UTC with `Z`; ids in headers are canonicalised \
(lower-case hyphenated UUIDs) and a non-UUID tenant is a 400; list query \
parameters are accepted in snake_case and camelCase; visibility is enforced \
on every targeted route and in the list (pages are full and `meta.total` \
counts only visible events); hidden events are 404 before any 403; creates \
are idempotent on (tenant, user, `X-Request-Id`); input limits give 422 \
instead of a 500; new: `capacity`, waitlist, cancel, RSVP removal, RSVP and \
attendance listings, and the additive fields `updatedAt`, `status`, \
`capacity`, `version`, `cancelledAt`, `cancelReason`, `rsvpCounts.waitlisted`.

**Role administration (new).** `GET /admin/roles`, `POST` and `DELETE \
/admin/role-bindings`: the role catalog and the tenant's role bindings, for \
system admins; kept in our tables (`local` mode) or proxied to Access \
(`access` mode), every grant and revoke audited.";

// ---------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------

/// The kind of scope an event belongs to.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub enum ScopeType {
    #[serde(rename = "TENANT")]
    Tenant,
    #[serde(rename = "COMMUNITY")]
    Community,
    #[serde(rename = "TEAM")]
    Team,
}

/// Who may see an event: `public` (anyone who may read the scope),
/// `community` (COMMUNITY scope only) and `team` (TEAM scope only: members of
/// the scope), `private` (the creator and system admins).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Visibility {
    Public,
    Community,
    Team,
    Private,
}

/// An RSVP a caller may ask for.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum RequestedRsvp {
    Interested,
    Going,
    NotGoing,
}

/// A stored RSVP: what was asked for, or `waitlisted` when `going` was
/// asked for and no seat was free.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum RsvpStatus {
    Interested,
    Going,
    NotGoing,
    Waitlisted,
}

/// The lifecycle of an event (new).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum EventStatus {
    Scheduled,
    Cancelled,
}

/// RSVP counters. The keys are snake_case (the frontend reads
/// `not_going`) and always all present; `waitlisted` is new.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct RsvpCounts {
    pub interested: u32,
    pub going: u32,
    pub not_going: u32,
    pub waitlisted: u32,
}

/// An event as every read and write returns it. Keys are camelCase;
/// datetimes are RFC 3339 in UTC with `Z` (milliseconds only when not
/// zero). The Django service echoed the input offset on create; this one
/// never does.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!(example_event()))]
#[allow(dead_code)]
pub struct EventView {
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(format = "uuid")]
    pub tenant_id: String,
    pub scope_type: ScopeType,
    /// The tenant id for TENANT scope; the community or team id otherwise.
    pub scope_id: String,
    pub title: String,
    /// `null` when empty.
    pub description: Option<String>,
    #[schema(format = DateTime)]
    pub starts_at: String,
    #[schema(format = DateTime)]
    pub ends_at: String,
    /// `null` when empty.
    pub location_text: Option<String>,
    #[schema(format = "uri")]
    pub location_url: Option<String>,
    pub game_id: Option<String>,
    pub visibility: Visibility,
    /// The nil UUID once the creator's data was erased (DSAR).
    #[schema(format = "uuid")]
    pub created_by: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// New. Moves on every update that changes something.
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// New.
    pub status: EventStatus,
    /// New. Seats for `going`; `null` is unlimited.
    #[schema(minimum = 1)]
    pub capacity: Option<u32>,
    /// New. Starts at 1 and grows by one per change (update or cancel).
    #[schema(minimum = 1)]
    pub version: i64,
    /// New. When the event was cancelled.
    #[schema(format = DateTime)]
    pub cancelled_at: Option<String>,
    /// New. The reason given on cancel, if any.
    pub cancel_reason: Option<String>,
    pub rsvp_counts: RsvpCounts,
    /// The caller's own RSVP, `null` when unset.
    pub my_rsvp: Option<RsvpStatus>,
}

fn example_event() -> Value {
    json!({
        "id": "3f1c0a52-0000-4000-8000-000000000001",
        "tenantId": "6f1c2b9e-8d1a-4c3e-9b7a-2f4d5e6a7b8c",
        "scopeType": "TENANT",
        "scopeId": "6f1c2b9e-8d1a-4c3e-9b7a-2f4d5e6a7b8c",
        "title": "Board game night",
        "description": null,
        "startsAt": "2030-01-10T07:00:00Z",
        "endsAt": "2030-01-10T09:00:00Z",
        "locationText": "Hall 3",
        "locationUrl": null,
        "gameId": null,
        "visibility": "public",
        "createdBy": "0b8e4c2a-3d5f-4a6b-8c7d-9e0f1a2b3c4d",
        "createdAt": "2029-12-01T10:15:30.250Z",
        "updatedAt": "2029-12-01T10:15:30.250Z",
        "status": "scheduled",
        "capacity": 20,
        "version": 1,
        "cancelledAt": null,
        "cancelReason": null,
        "rsvpCounts": {"interested": 2, "going": 5, "not_going": 1, "waitlisted": 0},
        "myRsvp": "going"
    })
}

/// Body of a create. Every key is accepted in camelCase or snake_case
/// (`scope_type`, `starts_at`, …); unknown keys are ignored. Datetimes
/// accept RFC 3339 with any offset, naive ISO (read as UTC), a date, or Unix
/// seconds/milliseconds.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "scopeType": "TENANT", "scopeId": "6f1c2b9e-8d1a-4c3e-9b7a-2f4d5e6a7b8c",
    "title": "Board game night", "startsAt": "2030-01-10T10:00:00+03:00",
    "endsAt": "2030-01-10T12:00:00+03:00", "locationText": "Hall 3", "capacity": 20
}))]
#[allow(dead_code)]
pub struct EventCreate {
    pub scope_type: ScopeType,
    /// For TENANT scope it must be the tenant id. At most 128 characters.
    #[schema(min_length = 1, max_length = 128)]
    pub scope_id: String,
    #[schema(min_length = 1, max_length = 255)]
    pub title: String,
    #[schema(max_length = 20000)]
    pub description: Option<String>,
    #[schema(format = DateTime)]
    pub starts_at: String,
    /// Must be after `startsAt` (else 400 `INVALID_TIME_RANGE`).
    #[schema(format = DateTime)]
    pub ends_at: String,
    #[schema(max_length = 255)]
    pub location_text: Option<String>,
    /// An absolute http or https URL (`javascript:` is refused).
    #[schema(format = "uri", max_length = 2048)]
    pub location_url: Option<String>,
    #[schema(max_length = 128)]
    pub game_id: Option<String>,
    /// Default `public`. Must fit the scope (`community` needs COMMUNITY,
    /// `team` needs TEAM).
    pub visibility: Option<Visibility>,
    /// New. Positive; `null` or absent is unlimited.
    #[schema(minimum = 1)]
    pub capacity: Option<u32>,
}

/// Body of an update: only the keys present change (camelCase or
/// snake_case). `null` clears `description`, `locationText`, `locationUrl`,
/// `gameId` and `capacity`; `null` for `startsAt` or `endsAt` is 422 (a 500
/// in the Django service); `null` `title` or `visibility` is ignored. The
/// scope cannot change. No known key at all is 400 `NO_UPDATES`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"title": "Board game night (moved)", "startsAt": "2030-01-11T10:00:00Z",
                          "endsAt": "2030-01-11T12:00:00Z", "locationUrl": null}))]
#[allow(dead_code)]
pub struct EventPatch {
    #[schema(min_length = 1, max_length = 255)]
    pub title: Option<String>,
    #[schema(max_length = 20000)]
    pub description: Option<String>,
    #[schema(format = DateTime)]
    pub starts_at: Option<String>,
    #[schema(format = DateTime)]
    pub ends_at: Option<String>,
    #[schema(max_length = 255)]
    pub location_text: Option<String>,
    #[schema(format = "uri", max_length = 2048)]
    pub location_url: Option<String>,
    #[schema(max_length = 128)]
    pub game_id: Option<String>,
    pub visibility: Option<Visibility>,
    #[schema(minimum = 1)]
    pub capacity: Option<u32>,
}

/// Body of `POST /{id}/rsvp`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status": "going"}))]
#[allow(dead_code)]
pub struct RsvpRequest {
    pub status: RequestedRsvp,
}

/// What an RSVP change results in: the NATS `rsvp.set`/`rsvp.clear` reply.
/// Over HTTP both answer 204 with no body (the SPA expects it); read the
/// event to see the new counters.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct RsvpReply {
    #[schema(format = "uuid")]
    pub event_id: String,
    /// The effective status (`waitlisted` when no seat was free); `null`
    /// after a clear.
    pub status: Option<RsvpStatus>,
    pub rsvp_counts: RsvpCounts,
    pub my_rsvp: Option<RsvpStatus>,
}

/// Body of `POST /{id}/attendance` (`userId` or `user_id`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"userId": "0b8e4c2a-3d5f-4a6b-8c7d-9e0f1a2b3c4d"}))]
#[allow(dead_code)]
pub struct AttendanceRequest {
    /// Not a UUID: 400 `INVALID_USER_ID`.
    #[schema(format = "uuid")]
    pub user_id: String,
}

/// Optional body of `POST /{id}/cancel`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"reason": "Venue unavailable"}))]
#[allow(dead_code)]
pub struct CancelRequest {
    pub reason: Option<String>,
}

/// Paging information of a listing.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct PageMeta {
    /// Everything that matches and the caller may see (the Django service
    /// counted invisible events too).
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
    /// Present and `true` only when the membership authority could not be
    /// reached and membership-gated events were left out.
    pub partial: Option<bool>,
}

/// A page of events.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct EventPage {
    pub items: Vec<EventView>,
    pub meta: PageMeta,
}

/// One RSVP of an event.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct RsvpEntry {
    #[schema(format = "uuid")]
    pub user_id: String,
    pub status: RsvpStatus,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// 1 for the first in line; `null` unless waitlisted.
    #[schema(minimum = 1)]
    pub waitlist_position: Option<i64>,
}

/// A page of RSVPs.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct RsvpPage {
    pub items: Vec<RsvpEntry>,
    pub meta: PageMeta,
}

/// One attendance mark.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct AttendanceEntry {
    #[schema(format = "uuid")]
    pub user_id: String,
    #[schema(format = "uuid")]
    pub marked_by: String,
    #[schema(format = DateTime)]
    pub marked_at: String,
}

/// A page of attendance marks.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct AttendancePage {
    pub items: Vec<AttendanceEntry>,
    pub meta: PageMeta,
}

/// A user's data in one tenant (keys snake_case, as in the Django service).
/// Rows have no integer `id`; `rsvps` entries add `created_at`; other users'
/// ids are shown as `"[redacted]"`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct DsarExport {
    /// Always `events`.
    pub service: String,
    #[schema(format = "uuid")]
    pub tenant_id: String,
    #[schema(format = "uuid")]
    pub user_id: String,
    #[schema(format = DateTime)]
    pub exported_at: String,
    /// Events the user created: `id, tenant_id, scope_type, scope_id, title,
    /// description, starts_at, ends_at, location_text, location_url, game_id,
    /// visibility, created_by, created_at, updated_at`.
    pub events_created: Vec<Value>,
    /// `event_id, tenant_id, user_id, status, created_at, updated_at`.
    pub rsvps: Vec<Value>,
    /// Rows where the user attended or marked: `event_id, tenant_id,
    /// user_id, marked_by, marked_at`.
    pub attendance: Vec<Value>,
    /// Domain events about the user: `id, tenant_id, event_type, payload,
    /// occurred_at, published_at`.
    pub outbox: Vec<Value>,
}

/// How many rows an erase touched.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct DsarCounts {
    pub events_anonymized: u64,
    pub rsvps_deleted: u64,
    pub attendance_deleted: u64,
    pub attendance_marked_by_redacted: u64,
    pub outbox_scrubbed: u64,
}

/// The summary of an erase: events keep their content but `created_by`
/// becomes the nil UUID, the user's RSVPs and attendance are deleted, marks
/// they made are anonymised, and their id in domain events becomes
/// `"[redacted]"`. One transaction.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct DsarErase {
    pub service: String,
    #[schema(format = "uuid")]
    pub tenant_id: String,
    #[schema(format = "uuid")]
    pub user_id: String,
    /// Always `hybrid`.
    pub mode: String,
    #[schema(format = DateTime)]
    pub erased_at: String,
    pub counts: DsarCounts,
}

/// A role's name as listed.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub enum RoleName {
    #[serde(rename = "events.participant")]
    Participant,
    #[serde(rename = "events.organizer")]
    Organizer,
}

/// A role as a grant or revoke names it: the short or the full name.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub enum RoleInput {
    #[serde(rename = "participant")]
    Participant,
    #[serde(rename = "organizer")]
    Organizer,
    #[serde(rename = "events.participant")]
    EventsParticipant,
    #[serde(rename = "events.organizer")]
    EventsOrganizer,
}

/// A role of the catalog and the permissions it holds.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct RoleView {
    pub name: RoleName,
    pub permissions: Vec<String>,
    /// `access` mode only: the role's id in Access, `null` while it does not
    /// exist there (run `events-svc access bootstrap`). Absent in `local` mode.
    pub access_role_id: Option<Value>,
}

/// A role binding: a role held by a user at a scope of the tenant.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "id": "5d0c8f3e-2b1a-4c9d-8e7f-6a5b4c3d2e1f", "userId": "0b8e4c2a-3d5f-4a6b-8c7d-9e0f1a2b3c4d",
    "role": "events.organizer", "scopeType": "TENANT", "scopeId": "6f1c2b9e-8d1a-4c3e-9b7a-2f4d5e6a7b8c",
    "createdBy": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", "createdAt": "2029-12-01T10:15:30.250Z"
}))]
#[allow(dead_code)]
pub struct RoleBinding {
    /// A UUID in `local` mode; Access's id (as text) in `access` mode.
    pub id: String,
    #[schema(format = "uuid")]
    pub user_id: String,
    pub role: RoleName,
    pub scope_type: ScopeType,
    /// The tenant id for TENANT scope.
    pub scope_id: String,
    /// Who granted it; `null` in `access` mode (Access keeps it in its own audit log).
    #[schema(format = "uuid")]
    pub created_by: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
}

/// The answer of a grant: the binding, and whether the grant created it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct GrantedRoleBinding {
    pub id: String,
    #[schema(format = "uuid")]
    pub user_id: String,
    pub role: RoleName,
    pub scope_type: ScopeType,
    pub scope_id: String,
    #[schema(format = "uuid")]
    pub created_by: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    /// `false` when the user already held the role at that scope (nothing changed).
    pub created: bool,
}

/// The role catalog and the bindings of the caller's tenant the filters select.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct RoleListing {
    pub roles: Vec<RoleView>,
    /// Oldest first, at most `limit`.
    pub bindings: Vec<RoleBinding>,
}

/// Body of a grant (camelCase or snake_case keys).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"userId": "0b8e4c2a-3d5f-4a6b-8c7d-9e0f1a2b3c4d", "role": "organizer",
                          "scopeType": "COMMUNITY", "scopeId": "c-42"}))]
#[allow(dead_code)]
pub struct RoleGrantRequest {
    #[schema(format = "uuid")]
    pub user_id: String,
    pub role: RoleInput,
    /// Default `TENANT`.
    pub scope_type: Option<ScopeType>,
    /// Default (and, for TENANT, the only value allowed): the tenant id.
    /// Required for COMMUNITY and TEAM. At most 128 characters.
    #[schema(max_length = 128)]
    pub scope_id: Option<String>,
}

/// Body (or query) of a revoke: `bindingId`, or `userId` + `role` (+ scope,
/// default the tenant), not both.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"userId": "0b8e4c2a-3d5f-4a6b-8c7d-9e0f1a2b3c4d", "role": "organizer"}))]
#[allow(dead_code)]
pub struct RoleRevokeRequest {
    #[schema(max_length = 128)]
    pub binding_id: Option<String>,
    #[schema(format = "uuid")]
    pub user_id: Option<String>,
    pub role: Option<RoleInput>,
    pub scope_type: Option<ScopeType>,
    #[schema(max_length = 128)]
    pub scope_id: Option<String>,
}

/// How many bindings a revoke removed (0: there was none; not an error).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct RoleRevokeReply {
    pub revoked: u64,
}

/// Every error code the service answers with.
#[allow(dead_code)]
pub struct ErrorCodeName;

impl PartialSchema for ErrorCodeName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .description(Some(
                "Machine-readable error code. The Django service's `HTTP_ERROR` \
                 (malformed JSON) is now `INVALID_BODY`, and its 422 `{\"detail\":[…]}` \
                 is now `VALIDATION_ERROR`.",
            ))
            .into()
    }
}

impl ToSchema for ErrorCodeName {
    fn name() -> std::borrow::Cow<'static, str> {
        "ErrorCode".into()
    }
}

/// The error body.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    #[schema(value_type = ErrorCodeName)]
    pub code: String,
    pub message: String,
    /// Always an object: `{}`, or `{"fields": {"<camelCase field>": "<message>"}}`
    /// for `VALIDATION_ERROR`.
    pub details: Value,
    /// The caller's `X-Request-Id`, `null` when none was sent.
    pub request_id: Option<String>,
}

/// Every error, on every route: the BFF nests it under
/// `details.upstream_body`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "NOT_FOUND", "message": "Event not found",
                                    "details": {}, "request_id": "9b2f0c1e-5d4a-4f3b-8a7c-6e5d4c3b2a19"}}))]
#[allow(dead_code)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

// ---------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------

/// Query of the event list. Names are snake_case; the camelCase spellings
/// (`scopeType`, `scopeId`, `myRsvp`, `createdBy`) are accepted too (the
/// Django service ignored them silently). A `+` in a datetime should be sent
/// as `%2B`; an unencoded one (read as a space) is forgiven.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListQuery {
    /// Events that end at or after this instant (overlap test, inclusive).
    /// Unparsable: 400 `INVALID_FROM`.
    #[param(format = DateTime, example = "2030-01-01T00:00:00Z")]
    pub from: Option<String>,
    /// Events that start at or before this instant. Unparsable: 400
    /// `INVALID_TO`.
    #[param(format = DateTime, example = "2030-02-01T00:00:00Z")]
    pub to: Option<String>,
    /// With `scope_id`: only that scope (both are needed). Validated (422).
    #[param(inline)]
    pub scope_type: Option<ScopeType>,
    #[param(max_length = 128)]
    pub scope_id: Option<String>,
    /// 1..=250, default 100.
    #[param(minimum = 1, maximum = 250)]
    pub limit: Option<i64>,
    /// ≥ 0, default 0.
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    /// New: case-insensitive substring of title, description or location.
    #[param(max_length = 200)]
    pub q: Option<String>,
    /// New.
    #[param(inline)]
    pub visibility: Option<Visibility>,
    /// New: only events where the caller's RSVP is this.
    #[param(inline)]
    pub my_rsvp: Option<RsvpStatus>,
    /// New: only events created by this user.
    #[param(format = "uuid")]
    pub created_by: Option<String>,
}

/// Query of the RSVP listing.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RsvpListQuery {
    #[param(minimum = 1, maximum = 250)]
    pub limit: Option<i64>,
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    /// Only RSVPs with this status.
    #[param(inline)]
    pub status: Option<RsvpStatus>,
}

/// Query of the attendance listing.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageQuery {
    #[param(minimum = 1, maximum = 250)]
    pub limit: Option<i64>,
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

/// Query of the role listing (camelCase spellings accepted too).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RoleListQuery {
    /// Only this user's bindings.
    #[param(format = "uuid")]
    pub user_id: Option<String>,
    /// Only bindings of this role (short or full name).
    #[param(inline)]
    pub role: Option<RoleInput>,
    /// Only bindings at scopes of this type.
    #[param(inline)]
    pub scope_type: Option<ScopeType>,
    /// Only bindings at this scope id.
    #[param(max_length = 128)]
    pub scope_id: Option<String>,
    /// 1..=1000, default 500.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// Query of a revoke (instead of a body).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RoleRevokeQuery {
    #[param(max_length = 128)]
    pub binding_id: Option<String>,
    #[param(format = "uuid")]
    pub user_id: Option<String>,
    #[param(inline)]
    pub role: Option<RoleInput>,
    #[param(inline)]
    pub scope_type: Option<ScopeType>,
    #[param(max_length = 128)]
    pub scope_id: Option<String>,
}

// ---------------------------------------------------------------------------
// Operations (documented stubs; the real handlers are in `api.rs`)
// ---------------------------------------------------------------------------

/// List events
///
/// Events of the caller's tenant that the caller may see, ordered by start
/// time then id. Needs `events.event.read` at the filtered scope (the tenant
/// when none). Differences: visibility is applied in the query, so pages are
/// full and `meta.total` counts only visible events; camelCase parameters
/// work; `q`, `visibility`, `my_rsvp`, `created_by` are new. Served without
/// the trailing slash too.
#[utoipa::path(get, path = "/api/v1/events/", operation_id = "listEvents", tag = "events",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of events", body = EventPage),
        (status = 400, description = "`INVALID_FROM`, `INVALID_TO`"),
        (status = 403, description = "`FORBIDDEN`: no read permission at the scope"),
        (status = 422, description = "`VALIDATION_ERROR` for `limit`, `offset`, `scopeType`, `q`…"),
    ))]
#[allow(dead_code)]
fn list_events() {}

/// Create an event
///
/// Needs `events.event.create` at the event's scope (role
/// `events.organizer`) or system admin. Answers **200** with the event.
/// Idempotent: a retry with the same `X-Request-Id` by the same user in the
/// same tenant (within 24 h) returns the first event; the same id with a
/// different body is 409 `IDEMPOTENCY_CONFLICT`. Differences: datetimes come
/// back in UTC with `Z`; limits and URL checks give 422 rather than a 500;
/// `capacity` is new.
#[utoipa::path(post, path = "/api/v1/events/", operation_id = "createEvent", tag = "events",
    request_body = EventCreate,
    responses(
        (status = 200, description = "The created event (or the first one, on a retry)", body = EventView),
        (status = 400, description = "`INVALID_BODY`, `INVALID_TIME_RANGE`"),
        (status = 403, description = "`FORBIDDEN`"),
        (status = 409, description = "`IDEMPOTENCY_CONFLICT`"),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`"),
        (status = 422, description = "`VALIDATION_ERROR`"),
    ))]
#[allow(dead_code)]
fn create_event() {}

/// Get an event
///
/// An event of another tenant, a hidden one and a missing one are all 404.
/// Differences: the creator and system admins always see private events.
#[utoipa::path(get, path = "/api/v1/events/{event_id}", operation_id = "getEvent", tag = "events",
    params(("event_id" = String, Path, format = "uuid", description = "Event id (400 `INVALID_EVENT_ID` if not a UUID)")),
    responses(
        (status = 200, description = "The event", body = EventView),
        (status = 400, description = "`INVALID_EVENT_ID`"),
        (status = 404, description = "`NOT_FOUND`"),
    ))]
#[allow(dead_code)]
fn get_event() {}

/// Update an event
///
/// Needs `events.event.manage` at the event's scope. Only fields whose value
/// changes are written; if any does, `version` grows and `updatedAt` moves
/// (the Django service never moved `updated_at`). Differences: explicit null
/// times are 422 (a 500 before); a cancelled event is 409.
#[utoipa::path(patch, path = "/api/v1/events/{event_id}", operation_id = "updateEvent", tag = "events",
    params(("event_id" = String, Path, format = "uuid", description = "Event id")),
    request_body = EventPatch,
    responses(
        (status = 200, description = "The event after the update", body = EventView),
        (status = 400, description = "`INVALID_EVENT_ID`, `INVALID_BODY`, `NO_UPDATES`, `INVALID_TIME_RANGE`"),
        (status = 403, description = "`FORBIDDEN`"),
        (status = 404, description = "`NOT_FOUND`"),
        (status = 409, description = "`EVENT_CANCELLED`"),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`"),
        (status = 422, description = "`VALIDATION_ERROR`"),
    ))]
#[allow(dead_code)]
fn update_event() {}

/// Cancel an event (new)
///
/// Needs `events.event.manage`. Answers the event with `status:
/// "cancelled"`; cancelling again is a no-op (200). Afterwards RSVP, RSVP
/// removal, attendance and update are 409 `EVENT_CANCELLED`; reads still
/// work, and the ICS says `STATUS:CANCELLED`.
#[utoipa::path(post, path = "/api/v1/events/{event_id}/cancel", operation_id = "cancelEvent", tag = "events",
    params(("event_id" = String, Path, format = "uuid", description = "Event id")),
    request_body(content = CancelRequest, description = "Optional"),
    responses(
        (status = 200, description = "The cancelled event", body = EventView),
        (status = 400, description = "`INVALID_EVENT_ID`, `INVALID_BODY`"),
        (status = 403, description = "`FORBIDDEN`"),
        (status = 404, description = "`NOT_FOUND`"),
        (status = 422, description = "`VALIDATION_ERROR` (`reason`)"),
    ))]
#[allow(dead_code)]
fn cancel_event() {}

/// Set the caller's RSVP
///
/// Needs `events.rsvp.set` (every tenant member). An upsert: **204**, empty
/// body, whether it changed or not. `going` on a full event is stored as
/// `waitlisted` and promoted when a seat frees up. Differences: the event's
/// visibility is checked (the Django service skipped it).
#[utoipa::path(post, path = "/api/v1/events/{event_id}/rsvp", operation_id = "setRsvp", tag = "rsvp",
    params(("event_id" = String, Path, format = "uuid", description = "Event id")),
    request_body = RsvpRequest,
    responses(
        (status = 204, description = "Stored; no body"),
        (status = 400, description = "`INVALID_EVENT_ID`, `INVALID_BODY`"),
        (status = 404, description = "`NOT_FOUND`"),
        (status = 409, description = "`EVENT_CANCELLED`"),
        (status = 422, description = "`VALIDATION_ERROR` (`status`)"),
    ))]
#[allow(dead_code)]
fn set_rsvp() {}

/// Remove the caller's RSVP (new)
///
/// **204**, empty body. Frees a seat, promoting the first waitlisted user.
#[utoipa::path(delete, path = "/api/v1/events/{event_id}/rsvp", operation_id = "clearRsvp", tag = "rsvp",
    params(("event_id" = String, Path, format = "uuid", description = "Event id")),
    responses(
        (status = 204, description = "Removed (or there was none); no body"),
        (status = 400, description = "`INVALID_EVENT_ID`"),
        (status = 404, description = "`NOT_FOUND`"),
        (status = 409, description = "`EVENT_CANCELLED`"),
    ))]
#[allow(dead_code)]
fn clear_rsvp() {}

/// List an event's RSVPs (new)
///
/// Needs `events.event.manage`. In the order the RSVPs were first made;
/// waitlisted entries carry their position (from 1). The query pages and
/// filters, as for the list.
#[utoipa::path(get, path = "/api/v1/events/{event_id}/rsvps", operation_id = "listRsvps", tag = "rsvp",
    params(("event_id" = String, Path, format = "uuid", description = "Event id"), RsvpListQuery),
    responses(
        (status = 200, description = "A page of RSVPs", body = RsvpPage),
        (status = 400, description = "`INVALID_EVENT_ID`"),
        (status = 403, description = "`FORBIDDEN`"),
        (status = 404, description = "`NOT_FOUND`"),
        (status = 422, description = "`VALIDATION_ERROR`"),
    ))]
#[allow(dead_code)]
fn list_rsvps() {}

/// Mark a user as attended
///
/// Needs `events.attendance.mark` (role `events.organizer`). Idempotent:
/// the first mark wins. **204**, empty body. Differences: the event's
/// visibility is checked.
#[utoipa::path(post, path = "/api/v1/events/{event_id}/attendance", operation_id = "markAttendance", tag = "attendance",
    params(("event_id" = String, Path, format = "uuid", description = "Event id")),
    request_body = AttendanceRequest,
    responses(
        (status = 204, description = "Marked; no body"),
        (status = 400, description = "`INVALID_EVENT_ID`, `INVALID_USER_ID`, `INVALID_BODY`"),
        (status = 403, description = "`FORBIDDEN`"),
        (status = 404, description = "`NOT_FOUND`"),
        (status = 409, description = "`EVENT_CANCELLED`"),
        (status = 422, description = "`VALIDATION_ERROR` (`userId`)"),
    ))]
#[allow(dead_code)]
fn mark_attendance() {}

/// List an event's attendance (new)
///
/// Needs `events.event.manage` or `events.attendance.mark`.
#[utoipa::path(get, path = "/api/v1/events/{event_id}/attendance", operation_id = "listAttendance", tag = "attendance",
    params(("event_id" = String, Path, format = "uuid", description = "Event id"), PageQuery),
    responses(
        (status = 200, description = "A page of attendance marks", body = AttendancePage),
        (status = 400, description = "`INVALID_EVENT_ID`"),
        (status = 403, description = "`FORBIDDEN`"),
        (status = 404, description = "`NOT_FOUND`"),
        (status = 422, description = "`VALIDATION_ERROR`"),
    ))]
#[allow(dead_code)]
fn list_attendance() {}

/// Download the event as iCalendar
///
/// RFC 5545, CRLF line ends, lines folded at 75 octets. Differences:
/// `SEQUENCE`, `LAST-MODIFIED`, `CREATED` and `STATUS` are added so calendar
/// clients see changes and cancellations; the file name in
/// `Content-Disposition` is quoted; the tenant slug in `UID` is reduced to
/// `[a-z0-9-]`.
#[utoipa::path(get, path = "/api/v1/events/{event_id}/ics", operation_id = "exportIcs", tag = "events",
    params(("event_id" = String, Path, format = "uuid", description = "Event id")),
    responses(
        (status = 200, description = "The calendar", content_type = "text/calendar; charset=utf-8", body = String,
            headers(("Content-Disposition" = String, description = "attachment; filename=\"event-{id}.ics\"")),
            example = json!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//UpdSpace//Events//EN\r\nCALSCALE:GREGORIAN\r\nBEGIN:VEVENT\r\nUID:3f1c0a52-0000-4000-8000-000000000001@acme.updspace\r\nDTSTAMP:20291201T101530Z\r\nDTSTART:20300110T070000Z\r\nDTEND:20300110T090000Z\r\nSEQUENCE:0\r\nLAST-MODIFIED:20291201T101530Z\r\nCREATED:20291201T101530Z\r\nSTATUS:CONFIRMED\r\nSUMMARY:Board game night\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")),
        (status = 400, description = "`INVALID_EVENT_ID`"),
        (status = 404, description = "`NOT_FOUND`"),
    ))]
#[allow(dead_code)]
fn export_ics() {}

/// Export a user's data (DSAR)
///
/// Allowed to the subject (even when suspended) and to system admins.
/// Scoped to the caller's tenant. Differences: `system_admin` must be the
/// JSON literal `true` (`"no"` passed before); the subject's id is compared
/// canonically (an upper-case `X-User-Id` was refused); other users' ids are
/// redacted.
#[utoipa::path(get, path = "/api/v1/events/internal/dsar/users/{user_id}/export", operation_id = "dsarExport", tag = "dsar",
    params(("user_id" = String, Path, format = "uuid", description = "The subject (400 `INVALID_USER_ID` if not a UUID)")),
    responses(
        (status = 200, description = "The bundle", body = DsarExport),
        (status = 400, description = "`INVALID_USER_ID`"),
        (status = 403, description = "`FORBIDDEN` (`DSAR access denied`)"),
    ))]
#[allow(dead_code)]
fn dsar_export() {}

/// Erase a user's data (DSAR)
///
/// Same access rule as export. One transaction; emits no domain event. A
/// body, if sent, must be JSON (and is ignored).
#[utoipa::path(post, path = "/api/v1/events/internal/dsar/users/{user_id}/erase", operation_id = "dsarErase", tag = "dsar",
    params(("user_id" = String, Path, format = "uuid", description = "The subject")),
    responses(
        (status = 200, description = "What was erased", body = DsarErase),
        (status = 400, description = "`INVALID_USER_ID`"),
        (status = 403, description = "`FORBIDDEN` (`DSAR access denied`)"),
    ))]
#[allow(dead_code)]
fn dsar_erase() {}

/// List roles and role bindings (new)
///
/// System admins only (`system_admin` exactly `true`, not suspended or
/// banned; else 403 `System admin required`). The catalog (`events.participant`,
/// `events.organizer` and their permissions) and the role bindings of the
/// caller's tenant, filtered. `local` mode reads our tables; `access` mode
/// asks Access (`GET /access/admin/roles?service=events` and
/// `GET /access/admin/role-bindings/search`), and each role carries its
/// Access id. The NATS operation `admin.roles.list` takes the same fields.
#[utoipa::path(get, path = "/api/v1/events/admin/roles", operation_id = "listRoles", tag = "admin",
    params(RoleListQuery),
    responses(
        (status = 200, description = "The catalog and the bindings", body = RoleListing),
        (status = 403, description = "`FORBIDDEN` (`System admin required`)"),
        (status = 422, description = "`VALIDATION_ERROR` (`userId`, `role`, `scopeType`, `scopeId`, `limit`)"),
        (status = 503, description = "`ACCESS_UNAVAILABLE` (`access` mode)"),
    ))]
#[allow(dead_code)]
fn list_roles() {}

/// Grant a role (new)
///
/// System admins only. Binds the role to the user at the scope (the tenant
/// when none is given; a TENANT binding covers every scope of the tenant).
/// Answers **200** (as create does) with the binding; idempotent: granting
/// a binding that exists answers it with `created: false`. Audited
/// (`role.granted`). `access` mode: the role must exist in Access (else 409:
/// run `events-svc access bootstrap`), and the binding is created there
/// (`POST /access/admin/role-bindings`). NATS: `admin.roles.grant`.
#[utoipa::path(post, path = "/api/v1/events/admin/role-bindings", operation_id = "grantRole", tag = "admin",
    request_body = RoleGrantRequest,
    responses(
        (status = 200, description = "The binding (new or existing)", body = GrantedRoleBinding),
        (status = 400, description = "`INVALID_BODY`"),
        (status = 403, description = "`FORBIDDEN` (`System admin required`)"),
        (status = 409, description = "`CONFLICT`: the role does not exist in Access yet"),
        (status = 422, description = "`VALIDATION_ERROR` (`userId`, `role`, `scopeType`, `scopeId`)"),
        (status = 503, description = "`ACCESS_UNAVAILABLE` (`access` mode)"),
    ))]
#[allow(dead_code)]
fn grant_role() {}

/// Revoke a role (new)
///
/// System admins only. Removes one binding by `bindingId`, or the binding of
/// `userId` + `role` at the scope (default the tenant); in the body or in
/// the query. `revoked: 0` when there was none. Audited (`role.revoked`).
/// `access` mode: deletes it in Access (`DELETE /access/admin/role-bindings/{id}`).
/// NATS: `admin.roles.revoke`.
#[utoipa::path(delete, path = "/api/v1/events/admin/role-bindings", operation_id = "revokeRole", tag = "admin",
    params(RoleRevokeQuery),
    request_body(content = RoleRevokeRequest, description = "Optional when the query names the binding"),
    responses(
        (status = 200, description = "How many bindings were removed", body = RoleRevokeReply),
        (status = 400, description = "`INVALID_BODY`"),
        (status = 403, description = "`FORBIDDEN` (`System admin required`)"),
        (status = 422, description = "`VALIDATION_ERROR` (`bindingId`, `userId`, `role`, `scopeType`, `scopeId`)"),
        (status = 503, description = "`ACCESS_UNAVAILABLE` (`access` mode)"),
    ))]
#[allow(dead_code)]
fn revoke_role() {}

/// This document
///
/// OpenAPI 3.1, generated from code. No signature needed.
#[utoipa::path(get, path = "/api/v1/events/openapi.json", operation_id = "openapi", tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = inline(Value))))]
#[allow(dead_code)]
fn openapi_json() {}

/// Liveness
///
/// `{"status":"ok"}` while the process serves HTTP; checks nothing else.
/// No signature, any method.
#[utoipa::path(get, path = "/health", operation_id = "health", tag = "meta",
    security(()),
    responses((status = 200, description = "Alive", body = inline(Value), example = json!({"status": "ok"}))))]
#[allow(dead_code)]
fn health() {}

/// Readiness
///
/// 200 when Postgres, NATS, the JetStream stream and the outbox publisher
/// are fine, else 503; the body always lists the checks. No signature.
#[utoipa::path(get, path = "/ready", operation_id = "ready", tag = "meta",
    security(()),
    responses(
        (status = 200, description = "Ready", body = inline(Value), example = json!({
            "status": "ok",
            "checks": [
                {"name": "postgres", "status": "ok", "latency_ms": 0.8, "message": "reachable"},
                {"name": "nats", "status": "ok", "latency_ms": 0.1, "message": "connected"},
            ]})),
        (status = 503, description = "Not ready; the failing checks say why", body = inline(Value)),
    ))]
#[allow(dead_code)]
fn ready() {}

/// Metrics
///
/// Prometheus text exposition, or JSON with `?format=json`. No signature.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "meta",
    security(()),
    params(("format" = Option<String>, Query, description = "`json` for JSON instead of Prometheus text")),
    responses(
        (status = 200, description = "The metrics", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
    ))]
#[allow(dead_code)]
fn metrics() {}

// ---------------------------------------------------------------------------
// The document
// ---------------------------------------------------------------------------

#[derive(OpenApi)]
#[openapi(
    info(
        title = "UpdSpace Events",
        description = API_DESCRIPTION,
        license(name = "Proprietary"),
    ),
    paths(
        list_events, create_event, get_event, update_event, cancel_event, set_rsvp, clear_rsvp,
        list_rsvps, mark_attendance, list_attendance, export_ics, dsar_export, dsar_erase,
        list_roles, grant_role, revoke_role, openapi_json, health, ready, metrics,
    ),
    components(schemas(
        EventView, EventCreate, EventPatch, EventPage, PageMeta, RsvpCounts, RsvpRequest, RsvpReply,
        RsvpEntry, RsvpPage, AttendanceRequest, AttendanceEntry, AttendancePage, CancelRequest,
        DsarExport, DsarErase, DsarCounts, ErrorEnvelope, ErrorBody, ErrorCodeName, ScopeType,
        Visibility, RequestedRsvp, RsvpStatus, EventStatus, RoleName, RoleInput, RoleView,
        RoleBinding, GrantedRoleBinding, RoleListing, RoleGrantRequest, RoleRevokeRequest,
        RoleRevokeReply,
    )),
    modifiers(&Common, &Aliases),
    tags(
        (name = "events", description = "Events: list, create, read, update, cancel, calendar export"),
        (name = "rsvp", description = "The caller's RSVP, and an event's RSVP list"),
        (name = "attendance", description = "Attendance marks"),
        (name = "dsar", description = "Data-subject requests (called by the BFF's account export and deletion)"),
        (name = "admin", description = "Roles and role bindings (system admins; our tables or Access, per mode)"),
        (name = "meta", description = "Unsigned service endpoints"),
    ),
)]
struct ApiDoc;

/// The security scheme names.
const SIGNATURE: &str = "hmacSignature";
const TIMESTAMP: &str = "hmacTimestamp";

/// Adds the HMAC security scheme, the context headers and the shared error
/// responses to every signed operation, and `X-Request-Id` to every
/// response.
struct Common;

impl Modify for Common {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SIGNATURE,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Updspace-Signature",
                "Lower-case hex HMAC-SHA256 with the shared secret \
                 (`BFF_INTERNAL_HMAC_SECRET`, or one of `BFF_INTERNAL_HMAC_PREVIOUS_SECRETS`). \
                 v1 (the BFF's): over `METHOD\\nPATH\\nsha256_hex(body)\\nX-Request-Id\\nTIMESTAMP`, \
                 PATH being the percent-decoded path received, trailing slash included, query \
                 excluded. v2 (with `X-Updspace-Signature-Version: 2`): over \
                 `UPDSPACE-HMAC-V2\\nMETHOD\\nPATH\\nQUERY\\nsha256_hex(body)\\nX-Request-Id\\nTIMESTAMP\\n\
                 X-Tenant-Id\\nX-Tenant-Slug\\nX-User-Id\\nX-Master-Flags`. Example (v1, secret \
                 `test-secret`, `GET /api/v1/events/`, empty body, `X-Request-Id: req-1`, timestamp \
                 `1700000000`): `4f789da7d55eeec91461a7d1d764f8c746099a92d0b8db324be0d656a4b99a9d`.",
            ))),
        );
        components.add_security_scheme(
            TIMESTAMP,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Updspace-Timestamp",
                "Unix seconds, plain decimal; accepted within ±300 s. A signed request is \
                 accepted once: send it again and it is 401 `Replayed request`.",
            ))),
        );
        let mut errors = error_responses();
        for (_, response) in errors.iter_mut() {
            response
                .headers
                .insert(REQUEST_ID.to_string(), request_id_header_ref());
        }
        components
            .responses
            .extend(errors.into_iter().map(|(k, v)| (k, RefOr::T(v))));
        components.headers.insert(
            REQUEST_ID.to_string(),
            RefOr::T(
                HeaderBuilder::new()
                    .schema(Some(String::schema()))
                    .description(Some(
                        "The request's `X-Request-Id`, or one made up when none was sent",
                    ))
                    .build(),
            ),
        );
        let headers = context_headers();
        let header_names: Vec<String> = headers.iter().map(|p| p.name.clone()).collect();
        components
            .parameters
            .extend(headers.into_iter().map(|p| (p.name.clone(), RefOr::T(p))));
        let shared: Vec<String> = components.responses.keys().cloned().collect();

        for item in api.paths.paths.values_mut() {
            for op in operations(item) {
                for response in op.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response
                            .headers
                            .insert(REQUEST_ID.to_string(), request_id_header_ref());
                    }
                }
                let unsigned = op
                    .security
                    .as_ref()
                    .is_some_and(|s| s.iter().all(|r| *r == SecurityRequirement::default()));
                if unsigned {
                    continue;
                }
                op.security = Some(vec![
                    SecurityRequirement::new::<_, _, String>(SIGNATURE, [])
                        .add::<_, _, String>(TIMESTAMP, []),
                ]);
                op.parameters.get_or_insert_with(Vec::new).extend(
                    header_names.iter().map(|name| {
                        RefOr::Ref(Ref::new(format!("#/components/parameters/{name}")))
                    }),
                );
                for (status, _) in ERROR_STATUSES {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| {
                            RefOr::Ref(Ref::from_response_name(response_name(status)))
                        });
                }
                // An error the operation lists itself keeps its description
                // (which codes it answers with) and points at the shared
                // schema and examples.
                for (status, entry) in op.responses.responses.iter_mut() {
                    let name = format!("Error{status}");
                    if let RefOr::T(response) = entry
                        && shared.contains(&name)
                    {
                        let mut reference = Ref::from_response_name(name);
                        reference.description = response.description.clone();
                        *entry = RefOr::Ref(reference);
                    }
                }
            }
        }
    }
}

const REQUEST_ID: &str = "X-Request-Id";

fn request_id_header_ref() -> RefOr<utoipa::openapi::Header> {
    RefOr::Ref(Ref::new(format!("#/components/headers/{REQUEST_ID}")))
}

/// Copies every `/api/v1/events/…` path to its `/api/v1/…` alias (what the
/// BFF calls) and the list to its slash-less spellings, with distinct
/// operation ids.
struct Aliases;

impl Modify for Aliases {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let originals: Vec<(String, PathItem)> = api
            .paths
            .paths
            .iter()
            .filter(|(path, _)| path.starts_with(LONG_PREFIX))
            .map(|(p, i)| (p.clone(), i.clone()))
            .collect();
        for (path, item) in originals {
            let rest = &path[LONG_PREFIX.len()..];
            let bff = format!("the path the BFF sends (`{SHORT_PREFIX}…`, `events` stripped)");
            let mut aliases = vec![(format!("{SHORT_PREFIX}{rest}"), "Bff", bff.as_str())];
            if rest == "/" {
                aliases.push((
                    LONG_PREFIX.to_string(),
                    "NoSlash",
                    "without the trailing slash",
                ));
                aliases.push((
                    SHORT_PREFIX.to_string(),
                    "BffNoSlash",
                    "the BFF's prefix without the trailing slash",
                ));
            }
            for (alias, suffix, how) in aliases {
                let mut copy = item.clone();
                for op in operations(&mut copy) {
                    if let Some(id) = op.operation_id.as_mut() {
                        id.push_str(suffix);
                    }
                    let note = format!("The same operation as `{path}`, served at {how}.");
                    op.summary = op.summary.take().map(|s| format!("{s} (alias)"));
                    op.description = Some(match op.description.take() {
                        Some(d) => format!("{note}\n\n{d}"),
                        None => note,
                    });
                }
                api.paths.paths.insert(alias, copy);
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn header_param(name: &str, required: bool, description: &str, example: Value) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .schema(Some(String::schema()))
        .description(Some(description))
        .example(Some(example))
        .build()
}

/// The identity and signature headers of every signed request (the
/// signature and timestamp are the security scheme).
fn context_headers() -> Vec<Parameter> {
    vec![
        header_param(
            "X-Request-Id",
            true,
            "Any non-blank string, signed as sent; echoed in errors and on every response. \
             Also the idempotency key of a create. Missing: 400 `MISSING_REQUEST_ID`.",
            json!("9b2f0c1e-5d4a-4f3b-8a7c-6e5d4c3b2a19"),
        ),
        header_param(
            "X-Tenant-Id",
            true,
            "Tenant UUID, any spelling (upper case, braces, no hyphens). Missing: 400 \
             `MISSING_TENANT_CONTEXT`; not a UUID: 400 `INVALID_TENANT_ID`.",
            json!("6f1c2b9e-8d1a-4c3e-9b7a-2f4d5e6a7b8c"),
        ),
        header_param(
            "X-Tenant-Slug",
            true,
            "Tenant slug (used, reduced to [a-z0-9-], in the ICS `UID`).",
            json!("acme"),
        ),
        header_param(
            "X-User-Id",
            true,
            "User UUID, any spelling; canonicalised. Missing: 401 `UNAUTHENTICATED`; not a \
             UUID: 400 `INVALID_USER_ID`.",
            json!("0b8e4c2a-3d5f-4a6b-8c7d-9e0f1a2b3c4d"),
        ),
        header_param(
            "X-Master-Flags",
            false,
            "JSON object. `suspended`/`banned` true (or `status` of those) deny everything \
             but DSAR on oneself; `system_admin` or `is_system_admin` exactly `true` allows \
             everything. Anything unparsable means no flags.",
            json!("{\"system_admin\":true}"),
        ),
        header_param(
            "X-Updspace-Signature-Version",
            false,
            "Absent: v1. `2`: v2 (also signs the query and the identity headers). Anything \
             else: 401.",
            json!("2"),
        ),
    ]
}

/// The error statuses every signed operation may answer, with the codes and
/// examples shown for each.
const ERROR_STATUSES: [(u16, &str); 7] = [
    (
        400,
        "Bad request: malformed headers, ids, query, JSON or time range",
    ),
    (
        401,
        "Not authenticated: missing, expired, wrong or replayed signature, or no user",
    ),
    (403, "Authenticated but not allowed"),
    (
        404,
        "No such event in the caller's tenant, or not visible to the caller",
    ),
    (
        413,
        "The body is larger than `EVENTS_MAX_BODY_BYTES` (default 256 KiB)",
    ),
    (
        503,
        "An authority (Access, Portal) could not be reached; the request was not applied",
    ),
    (
        504,
        "The request took too long (`EVENTS_REQUEST_TIMEOUT`); it may have been applied",
    ),
];

fn response_name(status: u16) -> String {
    format!("Error{status}")
}

fn error_example(code: ErrorCode, message: &str, details: Value) -> Value {
    json!({"error": {"code": code.as_str(), "message": message, "details": details,
                     "request_id": "9b2f0c1e-5d4a-4f3b-8a7c-6e5d4c3b2a19"}})
}

/// Reusable error responses with one example per code.
fn error_responses() -> Vec<(String, OaResponse)> {
    use ErrorCode as C;
    let examples: Vec<(u16, C, &str, Value)> = vec![
        (
            400,
            C::MissingRequestId,
            "X-Request-Id is required",
            json!({}),
        ),
        (
            400,
            C::MissingTenantContext,
            "Tenant headers required",
            json!({}),
        ),
        (
            400,
            C::InvalidTenantId,
            "X-Tenant-Id must be a UUID",
            json!({}),
        ),
        (400, C::InvalidUserId, "X-User-Id must be a UUID", json!({})),
        (400, C::InvalidEventId, "Invalid event id", json!({})),
        (400, C::InvalidFrom, "from must be ISO datetime", json!({})),
        (400, C::InvalidTo, "to must be ISO datetime", json!({})),
        (
            400,
            C::InvalidTimeRange,
            "starts_at must be before ends_at",
            json!({}),
        ),
        (
            400,
            C::NoUpdates,
            "Provide at least one editable field",
            json!({}),
        ),
        (
            400,
            C::InvalidBody,
            "Cannot parse request body as JSON: EOF while parsing an object at line 1 column 9",
            json!({}),
        ),
        (
            401,
            C::Unauthorized,
            "Missing internal signature",
            json!({}),
        ),
        (
            401,
            C::Unauthorized,
            "Invalid internal timestamp",
            json!({}),
        ),
        (
            401,
            C::Unauthorized,
            "Internal signature expired",
            json!({}),
        ),
        (
            401,
            C::Unauthorized,
            "Invalid internal signature",
            json!({}),
        ),
        (
            401,
            C::Unauthorized,
            "Signature version 1 is not accepted; sign with version 2",
            json!({}),
        ),
        (401, C::Unauthorized, "Replayed request", json!({})),
        (401, C::Unauthenticated, "X-User-Id is required", json!({})),
        (403, C::Forbidden, "Permission denied", json!({})),
        (403, C::Forbidden, "DSAR access denied", json!({})),
        (403, C::Forbidden, "System admin required", json!({})),
        (404, C::NotFound, "Event not found", json!({})),
        (
            405,
            C::MethodNotAllowed,
            "Method not allowed on this route",
            json!({}),
        ),
        (409, C::EventCancelled, "Event is cancelled", json!({})),
        (
            409,
            C::Conflict,
            "Role events.organizer does not exist in Access; run events-svc access bootstrap first",
            json!({}),
        ),
        (
            409,
            C::IdempotencyConflict,
            "A create with this X-Request-Id was already made with a different body",
            json!({}),
        ),
        (
            413,
            C::PayloadTooLarge,
            "Request body is larger than 262144 bytes",
            json!({}),
        ),
        (
            422,
            C::ValidationError,
            "Validation failed",
            json!({"fields": {"title": "title must be at most 255 characters",
                              "locationUrl": "locationUrl must be an absolute http or https URL"}}),
        ),
        (
            503,
            C::AccessUnavailable,
            "Access service unavailable",
            json!({}),
        ),
        (
            503,
            C::PortalUnavailable,
            "Membership could not be checked; try again shortly",
            json!({}),
        ),
        (
            504,
            C::Timeout,
            "The request took too long; it may or may not have been applied",
            json!({}),
        ),
    ];
    let described: Vec<(u16, &str)> = ERROR_STATUSES
        .iter()
        .copied()
        .chain([
            (
                405,
                "Wrong method for an existing route (with an `Allow` header)",
            ),
            (
                409,
                "Conflict with the event's state or an earlier request (or, for a grant, a role missing in Access)",
            ),
            (
                422,
                "Schema error; `details.fields` maps camelCase field names to messages",
            ),
        ])
        .collect();
    described
        .into_iter()
        .map(|(status, description)| {
            let mut content =
                ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorEnvelope")));
            for (n, (_, code, message, details)) in
                examples.iter().filter(|(s, ..)| *s == status).enumerate()
            {
                let key = format!(
                    "{}{}",
                    code.as_str(),
                    if n == 0 {
                        String::new()
                    } else {
                        format!("_{n}")
                    }
                );
                content = content.examples_from_iter([(
                    key,
                    ExampleBuilder::new()
                        .summary(message.to_string())
                        .value(Some(error_example(*code, message, details.clone())))
                        .build(),
                )]);
            }
            let response = ResponseBuilder::new()
                .description(description)
                .content("application/json", content.build())
                .build();
            (response_name(status), response)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_lists_every_route_on_both_prefixes() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        for prefix in [LONG_PREFIX, SHORT_PREFIX] {
            for (path, methods) in [
                ("/", &["get", "post"][..]),
                ("/{event_id}", &["get", "patch"]),
                ("/{event_id}/cancel", &["post"]),
                ("/{event_id}/rsvp", &["post", "delete"]),
                ("/{event_id}/rsvps", &["get"]),
                ("/{event_id}/attendance", &["post", "get"]),
                ("/{event_id}/ics", &["get"]),
                ("/internal/dsar/users/{user_id}/export", &["get"]),
                ("/internal/dsar/users/{user_id}/erase", &["post"]),
                ("/admin/roles", &["get"]),
                ("/admin/role-bindings", &["post", "delete"]),
                ("/openapi.json", &["get"]),
            ] {
                let full = format!("{prefix}{path}");
                let item = paths.get(&full).unwrap_or_else(|| panic!("{full} missing"));
                for m in methods {
                    assert!(item.get(*m).is_some(), "{m} {full}");
                }
            }
        }
        let mut ids = std::collections::HashSet::new();
        for item in paths.values() {
            for op in item.as_object().expect("item").values() {
                if let Some(id) = op.get("operationId").and_then(Value::as_str) {
                    assert!(ids.insert(id.to_string()), "duplicate operationId {id}");
                }
            }
        }
    }
}
