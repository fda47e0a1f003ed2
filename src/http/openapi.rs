//! The OpenAPI 3.1 document, collected from the routes the router serves.
//!
//! [`crate::http::routes`] is the one route list: `utoipa-axum` gathers each
//! handler's `#[utoipa::path]` (its path, method, success reply and typed
//! request body, with the schemas of the real view and body types) as the
//! router is built. [`finish`] then adds, for every operation, what the code
//! says it shares with the others: which NATS operation it is
//! (`x-nats-operation`, from which everything else follows), the query
//! fields its parser reads ([`requests::fields_of`]), whether its body is
//! required ([`Op::requires_body`]), the signature and context headers, and
//! one response per error status it can answer, listing the codes of
//! [`errors_of`].

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{
    AllOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type,
};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::{Tag, TagBuilder};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, InfoBuilder, LicenseBuilder, OpenApi, Ref, RefOr, Required,
    SchemaFormat,
};
use utoipa::{PartialSchema, ToSchema};

use crate::app::Op;
use crate::app::requests::{self, FieldSpec};
use crate::domain::values::uuid_input_pattern;
use crate::domain::{ErrorCode, RsvpStatus, ScopeType};
use crate::error::ErrorEnvelope;

/// The prefix the Django service served, and the one the BFF calls (it
/// strips `events`).
pub const PREFIX: &str = "/api/v1/events";
pub const BFF_PREFIX: &str = "/api/v1";

/// The extension naming the NATS operation an HTTP operation runs.
pub const NATS_OPERATION: &str = "x-nats-operation";

const SIGNATURE: &str = "hmacSignature";
const TIMESTAMP: &str = "hmacTimestamp";
const REQUEST_ID: &str = "X-Request-Id";

/// This document
///
/// OpenAPI 3.1, collected from the routes the service serves. No signature.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Value)))]
pub async fn serve() -> Response {
    // Serialised straight from utoipa's types, which keep the declared
    // order of paths and fields (a `serde_json::Value` would sort them).
    static BODY: LazyLock<String> =
        LazyLock::new(|| document().to_json().unwrap_or_else(|_| "{}".into()));
    let mut response = BODY.as_str().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The document, built once.
pub fn document() -> &'static OpenApi {
    static DOC: LazyLock<OpenApi> = LazyLock::new(|| finish(crate::http::routes().into_openapi()));
    &DOC
}

/// The document as JSON.
pub fn document_json() -> Value {
    serde_json::to_value(document()).unwrap_or_else(|_| json!({}))
}

/// The API's routes as the BFF prefix serves them: the same operations
/// with operation ids of their own.
pub fn bff_copy<S>(
    mut api: utoipa_axum::router::OpenApiRouter<S>,
) -> utoipa_axum::router::OpenApiRouter<S>
where
    S: Send + Sync + Clone + 'static,
{
    for item in api.get_openapi_mut().paths.paths.values_mut() {
        for (_, op) in operations(item) {
            if let Some(id) = op.operation_id.as_mut() {
                id.push_str("Bff");
            }
        }
    }
    api
}

const API_DESCRIPTION: &str = "\
The HTTP gateway of the UpdSpace Events service: a drop-in replacement for the \
Django events service behind the BFF. The same operations are served over NATS \
(`x-nats-operation` names each).

**Prefixes.** Every route is served under `/api/v1/events/…` (the Django \
service's prefix) and under `/api/v1/…` (what the BFF sends, `events` stripped; \
operation ids end in `Bff`). A trailing slash is accepted on every route; nothing \
ever redirects. Every `GET` also answers `HEAD`. An unknown path is 404 \
`NOT_FOUND` and a known path with a method it does not list 405 \
`METHOD_NOT_ALLOWED` (with `Allow`), in the error envelope.

**Authentication.** Every route except `openapi.json`, `/health`, `/ready` and \
`/metrics` needs the internal HMAC headers: `X-Request-Id`, `X-Tenant-Id`, \
`X-Tenant-Slug`, `X-User-Id`, optional `X-Master-Flags`, `X-Updspace-Timestamp`, \
`X-Updspace-Signature`, and `X-Updspace-Signature-Version: 2` for v2. v1 signs \
`METHOD\\nPATH\\nsha256_hex(body)\\nX-Request-Id\\ntimestamp` over the path received \
(query excluded); v2 also signs the query string and every identity header. \
Authentication runs before the body is parsed.

**Fields.** Body keys and query parameters are read in camelCase or snake_case \
(camelCase wins when both are sent); unknown keys are ignored. What `null` and \
`\"\"` mean is each field's own rule, stated in its schema. A body is read as JSON \
whatever its `Content-Type`.

**Errors.** Always `{\"error\":{\"code\",\"message\",\"details\",\"request_id\"}}`; \
each response lists the codes its operation can answer with at that status. \
Schema errors are 422 `VALIDATION_ERROR` with every bad field in \
`details.fields`, keyed by camelCase name. A 500 is a bug, logged with the \
request id.";

/// What an error status means, whatever the operation.
fn status_description(status: u16) -> &'static str {
    match status {
        400 => "Bad request: headers, ids, query, JSON or time range",
        401 => "Not authenticated: missing, expired, wrong or replayed signature, or no user",
        403 => "Authenticated but not allowed",
        404 => "No such event in the caller's tenant, or not visible to the caller",
        409 => "Conflict with the event's state or an earlier request",
        413 => "The body is larger than `EVENTS_MAX_BODY_BYTES` (default 256 KiB)",
        422 => "Schema error; `details.fields` maps camelCase field names to messages",
        500 => "A bug: logged with the request id, no details returned",
        503 => {
            "An authority or the service itself could not answer; retry after `Retry-After`. \
             When a check made before the operation runs could not be made (a permission \
             or membership asked of Access or Portal, the replay check), nothing was \
             applied; otherwise (Postgres unreachable, Access failing during role \
             administration) a write may or may not have been applied, and retrying it is safe"
        }
        504 => {
            "The request took too long (`EVENTS_REQUEST_TIMEOUT`); a write may have been applied"
        }
        _ => "Error",
    }
}

/// Codes no documented operation answers with: routing answers
/// `NOT_FOUND` ("No such route") and `METHOD_NOT_ALLOWED` for what the
/// document does not list; `UNSUPPORTED_MEDIA_TYPE` is NATS's (HTTP reads
/// JSON whatever the `Content-Type`); `SERVER_ERROR` needs a service
/// without a secret, which does not start; `INVALID_QUERY` is kept for
/// compatibility and never produced; `RATE_LIMITED` is the unsigned
/// calendar feed's (`GET /feeds/<token>.ics`), which is no operation.
pub const NOT_FROM_OPERATIONS: [ErrorCode; 5] = [
    ErrorCode::RateLimited,
    ErrorCode::MethodNotAllowed,
    ErrorCode::UnsupportedMediaType,
    ErrorCode::ServerError,
    ErrorCode::InvalidQuery,
];

/// Whether the operation names one event in its path.
const fn targets_event(op: Op) -> bool {
    matches!(
        op,
        Op::EventGet
            | Op::EventUpdate
            | Op::EventCancel
            | Op::RsvpSet
            | Op::RsvpClear
            | Op::RsvpList
            | Op::AttendanceMark
            | Op::AttendanceList
            | Op::EventIcs
            | Op::RsvpApprove
            | Op::RsvpDecline
            | Op::EventStats
            | Op::RsvpExport
            | Op::AttendanceExport
    )
}

/// Every error code an HTTP request to `op` can be answered with, by the
/// stage of the request pipeline that answers it.
pub fn errors_of(op: Op) -> Vec<ErrorCode> {
    use ErrorCode as C;
    // Size limit, authentication, JSON decoding, deadline, bugs: every
    // operation.
    let mut codes = vec![
        C::PayloadTooLarge,
        C::MissingRequestId,
        C::MissingTenantContext,
        C::InvalidTenantId,
        C::Unauthorized,
        C::Unauthenticated,
        C::InvalidUserId,
        C::InvalidBody,
        C::Forbidden,
        C::Timeout,
        C::InternalError,
    ];
    // Reads may be checked in the shared replay bucket; event operations go
    // through the scope actors, which refuse work when overloaded.
    if !op.is_write() || targets_event(op) || op == Op::EventCreate {
        codes.push(C::ServiceUnavailable);
    }
    // Permissions come from Access in `access` mode (DSAR needs only the
    // caller's flags).
    if !matches!(op, Op::DsarExport | Op::DsarErase) {
        codes.push(C::AccessUnavailable);
    }
    // Seeing a community or team event needs its membership.
    if targets_event(op) || op == Op::EventList {
        codes.push(C::PortalUnavailable);
    }
    if targets_event(op) {
        codes.extend([C::InvalidEventId, C::NotFound]);
    }
    if matches!(op, Op::SeriesGet | Op::SeriesIcs) {
        codes.extend([C::InvalidSeriesId, C::NotFound, C::PortalUnavailable]);
    }
    let has_fields = !requests::fields_of(op).is_empty()
        || matches!(
            op,
            Op::EventCreate
                | Op::EventUpdate
                | Op::EventCancel
                | Op::RsvpSet
                | Op::AttendanceMark
                | Op::RsvpApprove
                | Op::RsvpDecline
        );
    if has_fields {
        codes.push(C::ValidationError);
    }
    match op {
        Op::EventList => codes.extend([C::InvalidFrom, C::InvalidTo]),
        Op::EventCreate => codes.extend([C::InvalidTimeRange, C::IdempotencyConflict]),
        Op::EventUpdate => codes.extend([C::InvalidTimeRange, C::NoUpdates, C::EventCancelled]),
        // A series-wide cancel may find an occurrence cancelled meanwhile.
        Op::EventCancel => codes.push(C::ValidationError),
        Op::RsvpSet => codes.extend([C::EventCancelled, C::RsvpClosed, C::NotEnoughSeats]),
        Op::RsvpClear => codes.extend([C::EventCancelled, C::RsvpClosed]),
        Op::AttendanceMark => codes.push(C::EventCancelled),
        Op::RsvpApprove | Op::RsvpDecline => codes.extend([C::EventCancelled, C::InvalidUserId]),
        // A role missing in Access, or a binding Access refuses.
        Op::AdminRolesGrant | Op::AdminRolesRevoke => codes.push(C::Conflict),
        // Memberships are Portal's while Access and Portal are the authority.
        Op::MembershipAdd | Op::MembershipRemove | Op::MembershipList => {
            codes.push(C::MembershipAuthorityIsPortal)
        }
        // The instance's cap on open streams; the filtered event must be
        // visible.
        Op::EventStream => codes.extend([C::TooManyStreams, C::PortalUnavailable, C::NotFound]),
        // Feeds and imports are written to Postgres directly.
        // At most so many feeds per user.
        Op::FeedCreate => codes.extend([C::ServiceUnavailable, C::Conflict]),
        Op::FeedList => codes.push(C::ServiceUnavailable),
        Op::FeedRevoke => codes.extend([C::ServiceUnavailable, C::NotFound, C::ValidationError]),
        Op::EventImport => codes.extend([C::ServiceUnavailable, C::ValidationError]),
        _ => {}
    }
    codes.sort();
    codes.dedup();
    codes
}

/// The JSON replies the application assembles as values (not typed views):
/// their schema, and the name it is registered under.
fn json_reply(op: Op) -> Option<(&'static str, RefOr<Schema>)> {
    Some(match op {
        Op::RsvpList => ("RsvpPage", page_of(rsvp_entry())),
        Op::AttendanceList => ("AttendancePage", page_of(attendance_entry())),
        Op::DsarExport => ("DsarExport", dsar_export()),
        Op::DsarErase => ("DsarErase", dsar_erase()),
        Op::AdminRolesList => ("RoleListing", role_listing()),
        Op::AdminRolesGrant => ("GrantedRoleBinding", granted_binding()),
        Op::AdminRolesRevoke => ("RevokeReply", revoke_reply()),
        Op::MembershipAdd => ("AddedMembership", added_membership()),
        Op::MembershipRemove => ("RemovedMemberships", removed_memberships()),
        Op::MembershipList => ("MembershipPage", page_of(membership().into())),
        Op::AdminAuditList => ("AuditPage", page_of(audit_entry())),
        Op::MeCapabilities => ("Capabilities", capabilities()),
        Op::SeriesGet => ("Series", series()),
        _ => return None,
    })
}

/// Adds what every operation shares, from the code, to the collected paths.
fn finish(mut api: OpenApi) -> OpenApi {
    api.info = InfoBuilder::new()
        .title("UpdSpace Events")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(API_DESCRIPTION))
        .license(Some(LicenseBuilder::new().name("Proprietary").build()))
        .build();
    api.tags = Some(tags());
    let components = api.components.get_or_insert_with(Default::default);
    security_schemes(components);
    let mut schemas = Vec::new();
    ErrorEnvelope::schemas(&mut schemas);
    schemas.push((ErrorEnvelope::name().into(), ErrorEnvelope::schema()));
    components.schemas.extend(schemas);
    for header in context_headers() {
        components
            .parameters
            .insert(header.name.clone(), RefOr::T(header));
    }
    components.headers.insert(
        REQUEST_ID.to_owned(),
        RefOr::T(
            HeaderBuilder::new()
                .schema(Some(String::schema()))
                .description(Some(
                    "The request's `X-Request-Id`, or one made up when none was sent",
                ))
                .build(),
        ),
    );
    let mut replies = BTreeMap::new();
    for item in api.paths.paths.values_mut() {
        for (_, operation) in operations(item) {
            let op = nats_operation(operation);
            if let Some(op) = op {
                signed(operation, op, &mut replies);
            }
            let statuses: Vec<u16> = match op {
                Some(op) => errors_of(op).iter().map(|c| c.http_status()).collect(),
                None => vec![500],
            };
            error_responses(operation, op, &statuses);
            for response in operation.responses.responses.values_mut() {
                if let RefOr::T(response) = response {
                    response.headers.insert(
                        REQUEST_ID.to_owned(),
                        RefOr::Ref(Ref::new(format!("#/components/headers/{REQUEST_ID}"))),
                    );
                }
            }
        }
    }
    if let Some(components) = api.components.as_mut() {
        components.schemas.extend(replies);
    }
    api
}

fn nats_operation(operation: &Operation) -> Option<Op> {
    operation
        .extensions
        .as_ref()
        .and_then(|e| e.get(NATS_OPERATION))
        .and_then(Value::as_str)
        .and_then(Op::from_name)
}

/// Whether the operation's fields may come in the query: the listings, and
/// the removals (a DELETE body is not always possible); HTTP merges the
/// query into the body's fields.
pub fn reads_query(op: Op) -> bool {
    matches!(
        op,
        Op::EventList
            | Op::RsvpList
            | Op::AttendanceList
            | Op::AdminRolesList
            | Op::AdminRolesRevoke
            | Op::MembershipRemove
            | Op::MembershipList
            | Op::AdminAuditList
            | Op::MeCapabilities
            | Op::EventStream
            | Op::EventImport
    )
}

/// The signature, the context headers, the fields the parser reads and the
/// JSON reply of one signed operation.
fn signed(operation: &mut Operation, op: Op, replies: &mut BTreeMap<String, RefOr<Schema>>) {
    operation.security = Some(vec![
        SecurityRequirement::new::<_, _, String>(SIGNATURE, []).add::<_, _, String>(TIMESTAMP, []),
    ]);
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    parameters.extend(
        context_headers()
            .into_iter()
            .map(|p| RefOr::Ref(Ref::new(format!("#/components/parameters/{}", p.name)))),
    );
    let fields = requests::fields_of(op);
    if reads_query(op) {
        parameters.extend(fields.iter().flat_map(query_parameters).map(RefOr::T));
    }
    if matches!(
        op,
        Op::AdminRolesGrant
            | Op::AdminRolesRevoke
            | Op::MembershipAdd
            | Op::MembershipRemove
            | Op::FeedCreate
    ) {
        operation.request_body = Some(RefOr::T(
            RequestBodyBuilder::new()
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(fields_object(fields, !reads_query(op))))
                        .build(),
                )
                .build(),
        ));
    }
    if let Some(RefOr::T(body)) = operation.request_body.as_mut() {
        let required = op.requires_body(crate::auth::Transport::Http);
        body.required = Some(if required {
            Required::True
        } else {
            Required::False
        });
        // An optional body may also be the JSON `null`, read as no body.
        if !required {
            for content in body.content.values_mut() {
                if let RefOr::T(content) = content {
                    content.schema = content.schema.take().map(nullable);
                }
            }
        }
    }
    if let Some((name, schema)) = json_reply(op) {
        replies.insert(name.to_owned(), schema);
        if let Some(RefOr::T(ok)) = operation.responses.responses.get_mut("200") {
            ok.content.insert(
                "application/json".to_owned(),
                RefOr::T(
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(name)))
                        .build(),
                ),
            );
        }
    }
}

/// A field as query parameters: one per spelling the parser reads.
fn query_parameters(field: &FieldSpec) -> Vec<Parameter> {
    let mut names = vec![(field.key.snake, field.description.to_owned())];
    if field.key.camel != field.key.snake {
        names.push((
            field.key.camel,
            format!(
                "`{}` in camelCase; wins when both are sent.",
                field.key.snake
            ),
        ));
    }
    names
        .into_iter()
        .map(|(name, description)| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(description))
                .schema(Some((field.schema)()))
                .build()
        })
        .collect()
}

/// Fields as a body object, keyed by their camelCase names.
/// The body of fields. Where the query may carry them too
/// (`required_in_body` false), none is required in the body alone.
fn fields_object(fields: &[FieldSpec], required_in_body: bool) -> RefOr<Schema> {
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "Keys in camelCase or snake_case (camelCase wins when both are sent); `null` is \
             not sent.",
        ));
    for field in fields {
        let required = field.required && required_in_body;
        let schema = (field.schema)();
        // The field rule reads `null` as not sent: refused where the field
        // is required (422 "field required"), nothing otherwise.
        let schema = if required { schema } else { nullable(schema) };
        let schema = match schema {
            RefOr::T(Schema::Object(mut o)) => {
                o.description = Some(field.description.to_owned());
                RefOr::T(Schema::Object(o))
            }
            RefOr::T(Schema::OneOf(mut o)) => {
                o.description = Some(field.description.to_owned());
                RefOr::T(Schema::OneOf(o))
            }
            other => other,
        };
        object = object.property(field.key.camel, schema);
        if required {
            object = object.required(field.key.camel);
        }
    }
    object.into()
}

/// One response per error status, its schema the envelope with `code`
/// narrowed to what the operation answers with at that status.
fn error_responses(operation: &mut Operation, op: Option<Op>, statuses: &[u16]) {
    let codes: Vec<ErrorCode> = match op {
        Some(op) => errors_of(op),
        None => vec![ErrorCode::InternalError],
    };
    for status in statuses {
        let at: Vec<&str> = codes
            .iter()
            .filter(|c| c.http_status() == *status)
            .map(|c| c.as_str())
            .collect();
        let narrowed = AllOfBuilder::new()
            .item(Ref::from_schema_name(ErrorEnvelope::name()))
            .item(
                ObjectBuilder::new().property(
                    "error",
                    ObjectBuilder::new().property(
                        "code",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .enum_values(Some(at.clone())),
                    ),
                ),
            );
        let listed: Vec<String> = at.iter().map(|c| format!("`{c}`")).collect();
        let response = ResponseBuilder::new()
            .description(format!(
                "{}: {}",
                status_description(*status),
                listed.join(", ")
            ))
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(narrowed)).build(),
            )
            .build();
        operation
            .responses
            .responses
            .insert(status.to_string(), RefOr::T(response));
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("put", item.put.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
        ("options", item.options.as_mut()),
        ("head", item.head.as_mut()),
        ("patch", item.patch.as_mut()),
        ("trace", item.trace.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
}

fn tags() -> Vec<Tag> {
    [
        (
            "events",
            "Events: list, create, read, update, cancel, calendar export",
        ),
        ("rsvp", "The caller's RSVP, and an event's RSVP list"),
        ("attendance", "Attendance marks"),
        (
            "dsar",
            "Data-subject requests (the BFF's account export and deletion)",
        ),
        (
            "admin",
            "Tenant administration: roles and bindings (our tables or Access, per mode), \
             memberships (embedded mode), the audit log; for tenant admins",
        ),
        ("me", "What the caller may do, for the web app's gating"),
        (
            "feeds",
            "Subscribable calendar feeds: made, listed and revoked signed; read by calendar apps \
             with the token alone",
        ),
        ("meta", "Unsigned service endpoints"),
    ]
    .into_iter()
    .map(|(name, description)| {
        TagBuilder::new()
            .name(name)
            .description(Some(description))
            .build()
    })
    .collect()
}

fn security_schemes(components: &mut utoipa::openapi::Components) {
    components.add_security_scheme(
        SIGNATURE,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-Updspace-Signature",
            "64 lower-case hex characters: HMAC-SHA256 with the shared secret. v1: over \
             `METHOD\\nPATH\\nsha256_hex(body)\\nX-Request-Id\\nTIMESTAMP`, PATH the \
             percent-decoded path received, query excluded. v2 (with \
             `X-Updspace-Signature-Version: 2`): over `UPDSPACE-HMAC-V2\\nMETHOD\\nPATH\\nQUERY\\n\
             sha256_hex(body)\\nX-Request-Id\\nTIMESTAMP\\nX-Tenant-Id\\nX-Tenant-Slug\\nX-User-Id\\n\
             X-Master-Flags`.",
        ))),
    );
    components.add_security_scheme(
        TIMESTAMP,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-Updspace-Timestamp",
            "Unix seconds; accepted within ±300 s. A signed request is accepted once: sent \
             again it is 401 `Replayed request`.",
        ))),
    );
}

/// Visible ASCII, space and tab: what an HTTP header value may hold and
/// still be read; at least one character that is not white space.
fn header_text_pattern() -> String {
    "^[\\t -~]*[!-~][\\t -~]*$".to_owned()
}

fn header(name: &str, required: bool, schema: RefOr<Schema>, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .schema(Some(schema))
        .description(Some(description))
        .build()
}

fn text_with(min_length: Option<usize>, pattern: String) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(min_length)
        .pattern(Some(pattern))
        .into()
}

/// The identity headers of every signed request (the signature and the
/// timestamp are its security scheme).
fn context_headers() -> Vec<Parameter> {
    vec![
        header(
            REQUEST_ID,
            true,
            text_with(Some(1), header_text_pattern()),
            "Any non-blank text, signed as sent; echoed on every response and in errors. The \
             idempotency key of a create. Missing or blank: 400 `MISSING_REQUEST_ID`.",
        ),
        header(
            "X-Tenant-Id",
            true,
            text_with(Some(32), uuid_input_pattern()),
            "Tenant UUID in any spelling (upper case, braces, no hyphens, `urn:uuid:`), used \
             in canonical form. Missing: 400 `MISSING_TENANT_CONTEXT`; not a UUID: 400 \
             `INVALID_TENANT_ID`.",
        ),
        header(
            "X-Tenant-Slug",
            true,
            text_with(Some(1), header_text_pattern()),
            "Tenant slug; reduced to `[a-z0-9-]` in the calendar `UID`. Missing or blank: 400 \
             `MISSING_TENANT_CONTEXT`.",
        ),
        header(
            "X-User-Id",
            true,
            text_with(Some(32), uuid_input_pattern()),
            "User UUID in any spelling, used in canonical form; not the nil UUID. Missing: 401 \
             `UNAUTHENTICATED`; not a UUID, or nil: 400 `INVALID_USER_ID`.",
        ),
        header(
            "X-Master-Flags",
            false,
            String::schema(),
            "A JSON object, e.g. `{\"system_admin\":true}`; anything else means no flags. \
             `suspended` or `banned` `true` (or `status` one of those) deny everything but DSAR \
             on oneself; `system_admin` or `is_system_admin` exactly `true` allows everything.",
        ),
        header(
            "X-Updspace-Signature-Version",
            false,
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["2"]))
                .into(),
            "Absent: v1. `2`: v2, which also signs the query and the identity headers. \
             Anything else: 401.",
        ),
    ]
}

// ---------------------------------------------------------------------------
// Replies the application and store layers assemble as JSON values. Their
// shapes are stated here; the schemathesis run checks real replies against
// them.
// ---------------------------------------------------------------------------

fn uuid_text() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom("uuid".into())))
}

fn datetime() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::DateTime,
        )))
}

fn nullable(schema: impl Into<RefOr<Schema>>) -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(schema)
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}

fn object(properties: Vec<(&str, RefOr<Schema>)>) -> ObjectBuilder {
    properties.into_iter().fold(
        ObjectBuilder::new().schema_type(Type::Object),
        |o, (k, v)| o.property(k, v).required(k),
    )
}

fn page_of(item: RefOr<Schema>) -> RefOr<Schema> {
    object(vec![
        ("items", ArrayBuilder::new().items(item).into()),
        ("meta", Ref::from_schema_name("PageMeta").into()),
    ])
    .into()
}

fn rsvp_entry() -> RefOr<Schema> {
    object(vec![
        ("userId", uuid_text().into()),
        ("status", RsvpStatus::schema()),
        ("updatedAt", datetime().into()),
        (
            "waitlistPosition",
            nullable(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1)),
            ),
        ),
    ])
    .description(Some(
        "One RSVP; `waitlistPosition` counts from 1, null unless waitlisted.",
    ))
    .into()
}

fn attendance_entry() -> RefOr<Schema> {
    object(vec![
        ("userId", uuid_text().into()),
        ("markedBy", uuid_text().into()),
        ("markedAt", datetime().into()),
    ])
    .into()
}

fn rows() -> RefOr<Schema> {
    ArrayBuilder::new()
        .items(ObjectBuilder::new().schema_type(Type::Object))
        .into()
}

fn dsar_export() -> RefOr<Schema> {
    object(vec![
        (
            "service",
            ObjectBuilder::new().schema_type(Type::String).into(),
        ),
        ("tenant_id", uuid_text().into()),
        ("user_id", uuid_text().into()),
        ("exported_at", datetime().into()),
        ("events_created", rows()),
        ("rsvps", rows()),
        ("attendance", rows()),
        ("outbox", rows()),
        ("role_bindings", rows()),
        ("memberships", rows()),
        ("feed_tokens", rows()),
        ("reminders", rows()),
    ])
    .description(Some(
        "A user's data in the caller's tenant, keys snake_case; other users' ids are \
         `\"[redacted]\"`.",
    ))
    .into()
}

fn dsar_erase() -> RefOr<Schema> {
    let count = || -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .into()
    };
    let counts = [
        "events_anonymized",
        "rsvps_deleted",
        "attendance_deleted",
        "attendance_marked_by_redacted",
        "outbox_scrubbed",
        "role_bindings_deleted",
        "memberships_deleted",
        "feed_tokens_deleted",
        "audit_entries_anonymized",
    ]
    .into_iter()
    .map(|k| (k, count()))
    .collect();
    object(vec![
        (
            "service",
            ObjectBuilder::new().schema_type(Type::String).into(),
        ),
        ("tenant_id", uuid_text().into()),
        ("user_id", uuid_text().into()),
        (
            "mode",
            ObjectBuilder::new().schema_type(Type::String).into(),
        ),
        ("erased_at", datetime().into()),
        ("counts", object(counts).into()),
    ])
    .into()
}

fn role_name() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(crate::authz::Role::ALL.iter().map(|r| r.name())))
        .into()
}

fn binding() -> ObjectBuilder {
    object(vec![
        ("id", ObjectBuilder::new().schema_type(Type::String).into()),
        ("userId", uuid_text().into()),
        ("role", role_name()),
        ("scopeType", ScopeType::schema()),
        (
            "scopeId",
            ObjectBuilder::new().schema_type(Type::String).into(),
        ),
        ("createdBy", nullable(uuid_text())),
        ("createdAt", nullable(datetime())),
    ])
}

fn role_listing() -> RefOr<Schema> {
    let role = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("name", role_name())
        .required("name")
        .property(
            "permissions",
            ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)),
        )
        .required("permissions")
        .property("accessRoleId", ObjectBuilder::new())
        .description(Some(
            "`accessRoleId`: `access` mode only, null while the role is missing there.",
        ));
    object(vec![
        ("roles", ArrayBuilder::new().items(role).into()),
        ("bindings", ArrayBuilder::new().items(binding()).into()),
    ])
    .into()
}

fn granted_binding() -> RefOr<Schema> {
    binding()
        .property("created", ObjectBuilder::new().schema_type(Type::Boolean))
        .required("created")
        .description(Some(
            "`created: false` when the user already held the role there.",
        ))
        .into()
}

fn revoke_reply() -> RefOr<Schema> {
    object(vec![(
        "revoked",
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .into(),
    )])
    .into()
}

fn membership() -> ObjectBuilder {
    object(vec![
        ("userId", uuid_text().into()),
        (
            "scopeType",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["COMMUNITY", "TEAM"]))
                .into(),
        ),
        (
            "scopeId",
            ObjectBuilder::new().schema_type(Type::String).into(),
        ),
        ("createdBy", nullable(uuid_text())),
        ("createdAt", datetime().into()),
    ])
}

fn added_membership() -> RefOr<Schema> {
    membership()
        .property("created", ObjectBuilder::new().schema_type(Type::Boolean))
        .required("created")
        .description(Some("`created: false` when the user was a member already."))
        .into()
}

fn removed_memberships() -> RefOr<Schema> {
    object(vec![(
        "removed",
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .maximum(Some(1))
            .into(),
    )])
    .into()
}

fn audit_entry() -> RefOr<Schema> {
    let text = || ObjectBuilder::new().schema_type(Type::String);
    object(vec![
        ("id", uuid_text().into()),
        ("at", datetime().into()),
        ("tenantId", nullable(uuid_text())),
        ("actorUserId", nullable(uuid_text())),
        ("action", text().into()),
        ("targetType", text().into()),
        ("targetId", nullable(text())),
        ("requestId", nullable(text())),
        (
            "details",
            ObjectBuilder::new().schema_type(Type::Object).into(),
        ),
    ])
    .into()
}

fn series() -> RefOr<Schema> {
    let text = || ObjectBuilder::new().schema_type(Type::String);
    let boolean = || ObjectBuilder::new().schema_type(Type::Boolean);
    let occurrence = object(vec![
        ("id", uuid_text().into()),
        ("recurrenceId", datetime().into()),
        ("startsAt", datetime().into()),
        ("endsAt", datetime().into()),
        ("status", crate::domain::EventStatus::schema()),
        ("changed", boolean().into()),
    ]);
    object(vec![
        ("seriesId", uuid_text().into()),
        ("rrule", text().into()),
        ("exdates", ArrayBuilder::new().items(datetime()).into()),
        ("timeZone", text().into()),
        ("title", text().into()),
        ("startsAt", datetime().into()),
        (
            "durationMinutes",
            ObjectBuilder::new().schema_type(Type::Integer).into(),
        ),
        ("cancelled", boolean().into()),
        ("complete", boolean().into()),
        ("materialisedUntil", datetime().into()),
        ("occurrences", ArrayBuilder::new().items(occurrence).into()),
    ])
    .into()
}

fn capabilities() -> RefOr<Schema> {
    let boolean = || ObjectBuilder::new().schema_type(Type::Boolean);
    let permissions = crate::authz::Permission::ALL
        .iter()
        .fold(ObjectBuilder::new().schema_type(Type::Object), |o, p| {
            o.property(p.key(), boolean()).required(p.key())
        });
    object(vec![
        ("tenantId", uuid_text().into()),
        ("userId", uuid_text().into()),
        (
            "scope",
            object(vec![
                ("scopeType", ScopeType::schema()),
                (
                    "scopeId",
                    ObjectBuilder::new().schema_type(Type::String).into(),
                ),
            ])
            .into(),
        ),
        (
            "flags",
            object(vec![
                ("systemAdmin", boolean().into()),
                ("suspended", boolean().into()),
                ("banned", boolean().into()),
            ])
            .into(),
        ),
        ("tenantAdmin", boolean().into()),
        (
            "roles",
            ArrayBuilder::new()
                .items(ObjectBuilder::new().schema_type(Type::String))
                .into(),
        ),
        ("permissions", permissions.into()),
    ])
    .description(Some(
        "What the caller may do at the scope, as the operations decide it.",
    ))
    .into()
}
