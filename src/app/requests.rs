//! Every operation's input, parsed once at the edge into a typed request.
//!
//! Transports turn what they received into one JSON value (NATS: the body;
//! HTTP: the body with the path and query parameters merged in) and call
//! [`Request::parse`]; from there on nothing reads JSON. Fields are read by
//! the one rule of [`super::fields`].
//!
//! The order of errors is part of the contract: for an operation on an event,
//! an absent or hidden event (404) and a missing permission (403) come before
//! anything wrong in the rest of the body, so a stranger learns nothing.
//! Those later parts are parsed here too, but carried as [`Checked`] values
//! that the operation opens once the event is found and allowed.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::app::Op;
use crate::app::fields::{
    CANNOT_BE_NULL, Fields, Key, MUST_BE_STRING, NOT_AN_OBJECT, REQUIRED, Raw, text,
};
use crate::auth::Transport;
use crate::authz::Role;
use crate::authz::admin::{self, BindingFilter, BindingSpec, RevokeTarget};
use crate::domain::{
    CancelReason, Description, DomainError, ErrorCode, EventField, EventId, EventPatch, GameId,
    LocationText, LocationUrl, NewEvent, NewEventFields, RequestedRsvp, RsvpStatus, Scope, ScopeId,
    ScopeType, TenantId, Title, Tri, UserId, Visibility, parse_datetime_str, visibility_fits_scope,
    visibility_scope_mismatch,
};
use crate::error::AppError;
use crate::store::reads::ListFilter;

/// A part of a request whose error is reported only once the target event
/// is known to be visible and the operation allowed.
pub type Checked<T> = Result<T, AppError>;

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 250;

/// One operation with its input.
#[derive(Debug)]
pub enum Request {
    EventCreate(CreateEvent),
    EventGet(EventId),
    EventList(ListFilter),
    EventUpdate {
        id: EventId,
        patch: Checked<EventPatch>,
    },
    EventCancel {
        id: EventId,
        reason: Checked<Option<CancelReason>>,
    },
    RsvpSet {
        id: EventId,
        status: Checked<RequestedRsvp>,
    },
    RsvpClear(EventId),
    RsvpList {
        id: EventId,
        query: Checked<RsvpQuery>,
    },
    AttendanceMark {
        id: EventId,
        user: Checked<UserId>,
    },
    AttendanceList {
        id: EventId,
        page: Checked<PageQuery>,
    },
    EventIcs(EventId),
    DsarExport(UserId),
    DsarErase(UserId),
    /// Role administration: the body is read only once the caller is known
    /// to be allowed, so others learn nothing of its schema.
    AdminRolesList(Checked<BindingFilter>),
    AdminRolesGrant(Checked<BindingSpec>),
    AdminRolesRevoke(Checked<RevokeTarget>),
}

/// A validated create, and what makes two creates "the same request".
#[derive(Debug, Clone)]
pub struct CreateEvent {
    pub new: NewEvent,
    /// SHA-256 of the body's value: equal bodies hash equally whatever
    /// their key order or encoding on the wire (a retry with the same
    /// request id and another body is a conflict).
    pub fingerprint: String,
}

/// `rsvp.list`: a page, optionally of one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsvpQuery {
    pub status: Option<RsvpStatus>,
    pub page: PageQuery,
}

/// `limit` (1..=250, default 100) and `offset` (≥ 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageQuery {
    pub limit: i64,
    pub offset: i64,
}

impl Request {
    pub fn op(&self) -> Op {
        match self {
            Request::EventCreate(_) => Op::EventCreate,
            Request::EventGet(_) => Op::EventGet,
            Request::EventList(_) => Op::EventList,
            Request::EventUpdate { .. } => Op::EventUpdate,
            Request::EventCancel { .. } => Op::EventCancel,
            Request::RsvpSet { .. } => Op::RsvpSet,
            Request::RsvpClear(_) => Op::RsvpClear,
            Request::RsvpList { .. } => Op::RsvpList,
            Request::AttendanceMark { .. } => Op::AttendanceMark,
            Request::AttendanceList { .. } => Op::AttendanceList,
            Request::EventIcs(_) => Op::EventIcs,
            Request::DsarExport(_) => Op::DsarExport,
            Request::DsarErase(_) => Op::DsarErase,
            Request::AdminRolesList(_) => Op::AdminRolesList,
            Request::AdminRolesGrant(_) => Op::AdminRolesGrant,
            Request::AdminRolesRevoke(_) => Op::AdminRolesRevoke,
        }
    }

    /// Parses the input of `op` sent by a caller of `tenant`.
    pub fn parse(
        op: Op,
        transport: Transport,
        body: &Value,
        tenant: TenantId,
    ) -> Result<Request, AppError> {
        if body.is_null() && op.requires_body(transport) {
            return Err(DomainError::InvalidBody("Request body is required".into()).into());
        }
        let fields = Fields::new(body)?;
        Ok(match op {
            Op::EventCreate => Request::EventCreate(CreateEvent {
                new: new_event(tenant, body)?,
                fingerprint: hex::encode(Sha256::digest(body.to_string().as_bytes())),
            }),
            Op::EventGet => Request::EventGet(event_id(&fields)?),
            Op::EventList => Request::EventList(list_filter(body)?),
            Op::EventUpdate => Request::EventUpdate {
                id: event_id(&fields)?,
                patch: patch(body).map_err(AppError::from),
            },
            Op::EventCancel => Request::EventCancel {
                id: event_id(&fields)?,
                reason: cancel_reason_of(body).map_err(AppError::from),
            },
            Op::RsvpSet => Request::RsvpSet {
                id: event_id(&fields)?,
                status: requested_rsvp(&fields),
            },
            Op::RsvpClear => Request::RsvpClear(event_id(&fields)?),
            Op::RsvpList => Request::RsvpList {
                id: event_id(&fields)?,
                query: rsvp_query(body),
            },
            Op::AttendanceMark => Request::AttendanceMark {
                id: event_id(&fields)?,
                user: user_id(&fields, "user_id must be a UUID"),
            },
            Op::AttendanceList => Request::AttendanceList {
                id: event_id(&fields)?,
                page: pagination(body),
            },
            Op::EventIcs => Request::EventIcs(event_id(&fields)?),
            Op::DsarExport => Request::DsarExport(user_id(&fields, "Invalid user id")?),
            Op::DsarErase => Request::DsarErase(user_id(&fields, "Invalid user id")?),
            Op::AdminRolesList => Request::AdminRolesList(binding_filter(body)),
            Op::AdminRolesGrant => Request::AdminRolesGrant(binding_spec(body, tenant)),
            Op::AdminRolesRevoke => Request::AdminRolesRevoke(revoke_target(body, tenant)),
        })
    }
}

const ID: Key = Key::word("id");
const EVENT_ID: Key = Key::new("eventId", "event_id");
const USER_ID: Key = Key::new("userId", "user_id");
const STATUS: Key = Key::word("status");
const LIMIT: Key = Key::word("limit");
const OFFSET: Key = Key::word("offset");
const SCOPE_TYPE: Key = Key::new("scopeType", "scope_type");
const SCOPE_ID: Key = Key::new("scopeId", "scope_id");

/// The targeted event: `id`, else `eventId` (`event_id`).
fn event_id(fields: &Fields<'_>) -> Result<EventId, AppError> {
    let invalid = || AppError::rejected(ErrorCode::InvalidEventId, "Invalid event id");
    match fields.sent(ID).or_else(|| fields.sent(EVENT_ID)) {
        Some(Value::String(s)) => EventId::parse(s).map_err(|_| invalid()),
        Some(_) => Err(invalid()),
        None => Err(DomainError::field("id", REQUIRED).into()),
    }
}

/// A user id field (`userId`/`user_id`); a malformed one is
/// `INVALID_USER_ID` with `message`.
fn user_id(fields: &Fields<'_>, message: &'static str) -> Result<UserId, AppError> {
    match fields.sent(USER_ID) {
        Some(Value::String(s)) => {
            UserId::parse(s).map_err(|_| AppError::rejected(ErrorCode::InvalidUserId, message))
        }
        Some(_) => Err(DomainError::field("userId", MUST_BE_STRING).into()),
        None => Err(DomainError::field("userId", REQUIRED).into()),
    }
}

/// The `status` of `rsvp.set`.
fn requested_rsvp(fields: &Fields<'_>) -> Result<RequestedRsvp, AppError> {
    match fields.sent(STATUS) {
        Some(Value::String(s)) => s.parse().map_err(|e: crate::domain::FieldError| {
            DomainError::field("status", e.into_message()).into()
        }),
        None => Err(DomainError::field("status", REQUIRED).into()),
        Some(_) => Err(DomainError::field("status", MUST_BE_STRING).into()),
    }
}

fn page(fields: &mut Fields<'_>) -> PageQuery {
    PageQuery {
        limit: fields.integer(LIMIT, DEFAULT_LIMIT, 1, MAX_LIMIT),
        offset: fields.integer(OFFSET, 0, 0, i64::MAX),
    }
}

/// `limit` and `offset` of a listing of one event.
fn pagination(body: &Value) -> Checked<PageQuery> {
    let mut fields = Fields::new(body)?;
    let page = page(&mut fields);
    fields.finish()?;
    Ok(page)
}

fn rsvp_query(body: &Value) -> Checked<RsvpQuery> {
    // Paging errors first, then the status filter, each on its own.
    let page = pagination(body)?;
    let status = match Fields::new(body)?.sent(STATUS) {
        Some(Value::String(s)) => Some(
            s.parse::<RsvpStatus>()
                .map_err(|e| DomainError::field("status", e.into_message()))?,
        ),
        Some(_) => return Err(DomainError::field("status", MUST_BE_STRING).into()),
        None => None,
    };
    Ok(RsvpQuery { status, page })
}

/// The filters of `event.list` (the HTTP query parameters as fields).
fn list_filter(body: &Value) -> Result<ListFilter, AppError> {
    let mut b = Fields::new(body)?;
    let mut filter = ListFilter::default();
    if let Some(v) = b.sent(Key::word("from")) {
        let s = text(v).unwrap_or_default();
        filter.from = Some(parse_datetime_str(&s).map_err(|_| {
            AppError::rejected(ErrorCode::InvalidFrom, "from must be ISO datetime")
        })?);
    }
    if let Some(v) = b.sent(Key::word("to")) {
        let s = text(v).unwrap_or_default();
        filter.to =
            Some(parse_datetime_str(&s).map_err(|_| {
                AppError::rejected(ErrorCode::InvalidTo, "to must be ISO datetime")
            })?);
    }
    let scope_type = match b.sent(SCOPE_TYPE) {
        Some(Value::String(s)) if !s.is_empty() => match s.parse::<ScopeType>() {
            Ok(t) => Some(t),
            Err(e) => b.fail(SCOPE_TYPE, e.into_message()),
        },
        Some(Value::String(_)) | None => None,
        Some(_) => b.fail(SCOPE_TYPE, MUST_BE_STRING),
    };
    let scope_id = match b.sent(SCOPE_ID) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::String(_)) | None => None,
        Some(_) => b.fail(SCOPE_ID, MUST_BE_STRING),
    };
    // The scope filter needs both halves, as in the original.
    if let (Some(t), Some(id)) = (scope_type, scope_id) {
        let id = ScopeId::parse(&id)
            .map(|s| s.as_str().to_string())
            .unwrap_or(id);
        filter.scope = Some((t, id));
    }
    let q = Key::word("q");
    if let Some(v) = b.sent(q) {
        match v {
            Value::String(s) if s.chars().count() > 200 => {
                b.fail::<()>(q, "must be at most 200 characters");
            }
            // Postgres cannot compare text holding U+0000 (it was a 500).
            Value::String(s) if s.contains('\0') => {
                b.fail::<()>(q, "must not contain NUL characters");
            }
            Value::String(s) if !s.trim().is_empty() => filter.q = Some(s.trim().to_string()),
            Value::String(_) => {}
            _ => {
                b.fail::<()>(q, MUST_BE_STRING);
            }
        }
    }
    let visibility = Key::word("visibility");
    if let Some(v) = b.sent(visibility) {
        match text(v).map(|s| s.parse::<Visibility>()) {
            Some(Ok(vis)) => filter.visibility = Some(vis),
            Some(Err(e)) => {
                b.fail::<()>(visibility, e.into_message());
            }
            None => {
                b.fail::<()>(visibility, MUST_BE_STRING);
            }
        }
    }
    let my_rsvp = Key::new("myRsvp", "my_rsvp");
    if let Some(v) = b.sent(my_rsvp) {
        match text(v).map(|s| s.parse::<RsvpStatus>()) {
            Some(Ok(status)) => filter.my_rsvp = Some(status),
            Some(Err(e)) => {
                b.fail::<()>(my_rsvp, e.into_message());
            }
            None => {
                b.fail::<()>(my_rsvp, MUST_BE_STRING);
            }
        }
    }
    let created_by = Key::new("createdBy", "created_by");
    if let Some(v) = b.sent(created_by) {
        match text(v).map(|s| UserId::parse(&s)) {
            Some(Ok(u)) => filter.created_by = Some(u),
            _ => {
                b.fail::<()>(created_by, "must be a user id (UUID)");
            }
        }
    }
    filter.limit = b.integer(LIMIT, DEFAULT_LIMIT, 1, MAX_LIMIT);
    filter.offset = b.integer(OFFSET, 0, 0, i64::MAX / 2);
    b.finish()?;
    Ok(filter)
}

// ---------------------------------------------------------------------------
// Events: create, update, cancel
// ---------------------------------------------------------------------------

const fn key(field: EventField) -> Key {
    Key::new(field.as_camel_str(), field.as_snake_str())
}

const TITLE: Key = key(EventField::Title);
const DESCRIPTION: Key = key(EventField::Description);
const STARTS_AT: Key = key(EventField::StartsAt);
const ENDS_AT: Key = key(EventField::EndsAt);
const LOCATION_TEXT: Key = key(EventField::LocationText);
const LOCATION_URL: Key = key(EventField::LocationUrl);
const GAME_ID: Key = key(EventField::GameId);
const VISIBILITY: Key = key(EventField::Visibility);
const CAPACITY: Key = key(EventField::Capacity);

/// A free-text field where null and `""` both mean empty.
fn text_or_empty<T: Default>(
    b: &mut Fields<'_>,
    field: Key,
    parse: impl FnOnce(&str) -> Result<T, crate::domain::FieldError>,
) -> Option<T> {
    match b.raw(field) {
        Raw::Absent | Raw::Null => Some(T::default()),
        Raw::Value(v) => b.string(field, v, parse),
    }
}

/// Validates a create body.
///
/// Required: `scopeType`, `scopeId`, `title`, `startsAt`, `endsAt`. Null
/// rules (as in the original): `description` and `locationText` null or `""`
/// → empty; `locationUrl` and `gameId` null or `""` → none; `visibility`
/// absent → `public`, null → error; `capacity` absent or null → unlimited.
///
/// Every field error is reported at once (422). Then, in this order: the
/// visibility must fit the scope (422, reported together with the field
/// errors when both fields are valid), and `startsAt < endsAt` (400
/// `INVALID_TIME_RANGE`).
pub fn new_event(tenant: TenantId, body: &Value) -> Result<NewEvent, DomainError> {
    let mut b = match body {
        Value::Object(_) => Fields::new(body)?,
        _ => return Err(DomainError::InvalidBody(NOT_AN_OBJECT.to_owned())),
    };

    let scope_type = b.required_string(SCOPE_TYPE, str::parse::<ScopeType>);
    let scope_id = b.required_string(SCOPE_ID, ScopeId::parse);
    let scope = match (scope_type, scope_id) {
        (Some(scope_type), Some(scope_id)) => match Scope::new(tenant, scope_type, scope_id) {
            Ok(scope) => Some(scope),
            Err(e) => b.fail(SCOPE_ID, e.into_message()),
        },
        _ => None,
    };
    let title = b.required_string(TITLE, Title::parse);
    let description = text_or_empty(&mut b, DESCRIPTION, Description::parse);
    let starts_at = b.required_datetime(STARTS_AT);
    let ends_at = b.required_datetime(ENDS_AT);
    let location_text = text_or_empty(&mut b, LOCATION_TEXT, LocationText::parse);
    let location_url = match b.raw(LOCATION_URL) {
        Raw::Absent | Raw::Null => Some(None),
        Raw::Value(Value::String(s)) if s.is_empty() => Some(None),
        Raw::Value(v) => b.string(LOCATION_URL, v, LocationUrl::parse).map(Some),
    };
    let game_id = match b.raw(GAME_ID) {
        Raw::Absent | Raw::Null => Some(None),
        Raw::Value(Value::String(s)) if s.is_empty() => Some(None),
        Raw::Value(v) => b.string(GAME_ID, v, GameId::parse).map(Some),
    };
    let visibility = match b.raw(VISIBILITY) {
        Raw::Absent => Some(Visibility::default()),
        Raw::Null => b.fail(VISIBILITY, CANNOT_BE_NULL),
        Raw::Value(v) => b.string(VISIBILITY, v, str::parse::<Visibility>),
    };
    let capacity = match b.raw(CAPACITY) {
        Raw::Absent | Raw::Null => Some(None),
        Raw::Value(v) => b.capacity(CAPACITY, v).map(Some),
    };
    if let (Some(visibility), Some(scope_type)) = (visibility, scope_type)
        && !visibility_fits_scope(visibility, scope_type)
    {
        b.fail::<()>(
            VISIBILITY,
            visibility_scope_mismatch(visibility, scope_type).into_message(),
        );
    }
    b.finish()?;

    // `finish` succeeded, so every field parsed; the fallback arm is
    // unreachable but keeps this free of unwraps.
    let (
        Some(scope),
        Some(title),
        Some(description),
        Some(starts_at),
        Some(ends_at),
        Some(location_text),
        Some(location_url),
        Some(game_id),
        Some(visibility),
        Some(capacity),
    ) = (
        scope,
        title,
        description,
        starts_at,
        ends_at,
        location_text,
        location_url,
        game_id,
        visibility,
        capacity,
    )
    else {
        return Err(DomainError::InvalidBody(NOT_AN_OBJECT.to_owned()));
    };
    NewEvent::new(
        tenant,
        NewEventFields {
            scope,
            title,
            description,
            starts_at,
            ends_at,
            location_text,
            location_url,
            game_id,
            visibility,
            capacity,
        },
    )
}

/// Validates a PATCH body. Each field is `Absent`, `Null` or `Set`.
///
/// `scopeType` and `scopeId` cannot be changed and, like unknown keys, are
/// ignored. A body with no editable key at all is `NO_UPDATES` (400).
///
/// Null rules, part of the API:
/// - `title`: null is ignored;
/// - `description`: null or `""` → empty;
/// - `startsAt`, `endsAt`: null → 422 `VALIDATION_ERROR` "cannot be null"
///   (the original answered 500);
/// - `locationText`: null or `""` → empty;
/// - `locationUrl`, `gameId`: null or `""` → none (parsed as `Null`);
/// - `visibility`: null is ignored;
/// - `capacity`: null → unlimited.
///
/// A patch whose keys are all ignored nulls (e.g. `{"title": null}`) is
/// valid and changes nothing.
pub fn patch(body: &Value) -> Result<EventPatch, DomainError> {
    let mut b = match body {
        Value::Object(_) => Fields::new(body)?,
        _ => return Err(DomainError::InvalidBody(NOT_AN_OBJECT.to_owned())),
    };
    if !EventField::ALL.into_iter().any(|f| b.present(key(f))) {
        return Err(DomainError::NoUpdates);
    }

    let mut patch = EventPatch::default();
    // A failed field stays `Absent`; `finish` reports it.
    fn tri<T>(raw: Raw<'_>, set: impl FnOnce(&Value) -> Option<T>) -> Tri<T> {
        match raw {
            Raw::Absent => Tri::Absent,
            Raw::Null => Tri::Null,
            Raw::Value(v) => set(v).map_or(Tri::Absent, Tri::Set),
        }
    }
    fn empty_is_null(raw: Raw<'_>) -> Raw<'_> {
        match raw {
            Raw::Value(Value::String(s)) if s.is_empty() => Raw::Null,
            other => other,
        }
    }

    patch.title = tri(b.raw(TITLE), |v| b.string(TITLE, v, Title::parse));
    patch.description = tri(b.raw(DESCRIPTION), |v| {
        b.string(DESCRIPTION, v, Description::parse)
    });
    patch.starts_at = match b.raw(STARTS_AT) {
        Raw::Null => {
            b.fail::<()>(STARTS_AT, CANNOT_BE_NULL);
            Tri::Absent
        }
        raw => tri(raw, |v| b.datetime(STARTS_AT, v)),
    };
    patch.ends_at = match b.raw(ENDS_AT) {
        Raw::Null => {
            b.fail::<()>(ENDS_AT, CANNOT_BE_NULL);
            Tri::Absent
        }
        raw => tri(raw, |v| b.datetime(ENDS_AT, v)),
    };
    patch.location_text = tri(b.raw(LOCATION_TEXT), |v| {
        b.string(LOCATION_TEXT, v, LocationText::parse)
    });
    patch.location_url = tri(empty_is_null(b.raw(LOCATION_URL)), |v| {
        b.string(LOCATION_URL, v, LocationUrl::parse)
    });
    patch.game_id = tri(empty_is_null(b.raw(GAME_ID)), |v| {
        b.string(GAME_ID, v, GameId::parse)
    });
    patch.visibility = tri(b.raw(VISIBILITY), |v| {
        b.string(VISIBILITY, v, str::parse::<Visibility>)
    });
    patch.capacity = tri(b.raw(CAPACITY), |v| b.capacity(CAPACITY, v));

    b.finish()?;
    Ok(patch)
}

/// The optional `reason` of a cancel: no body, a missing, null or empty
/// `reason` all mean no reason.
pub fn cancel_reason_of(body: &Value) -> Result<Option<CancelReason>, DomainError> {
    let fields = Fields::new(body)?;
    let reason = Key::word("reason");
    match fields.sent(reason) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => CancelReason::parse(s)
            .map(Some)
            .map_err(|e| DomainError::field("reason", e.into_message())),
        Some(_) => Err(DomainError::field("reason", MUST_BE_STRING)),
    }
}

// ---------------------------------------------------------------------------
// Role administration (`admin.roles.*`)
// ---------------------------------------------------------------------------

const ROLE_NAMES: &str = "participant, organizer, events.participant, events.organizer";
const ROLE: Key = Key::word("role");

/// A UUID field; a malformed one is noted.
fn uuid_field(b: &mut Fields<'_>, key: Key, required: bool) -> Option<uuid::Uuid> {
    match b.sent(key) {
        Some(Value::String(s)) => match uuid::Uuid::parse_str(s.trim()) {
            Ok(u) => Some(u),
            Err(_) => b.fail(key, "must be a UUID"),
        },
        Some(_) => b.fail(key, "must be a string (a UUID)"),
        None if required => b.fail(key, REQUIRED),
        None => None,
    }
}

/// `role`: `participant`, `organizer` or their full names.
fn role_field(b: &mut Fields<'_>, required: bool) -> Option<Role> {
    match b.sent(ROLE) {
        Some(Value::String(s)) => match Role::from_name(s.trim()) {
            Some(role) => Some(role),
            None => b.fail(ROLE, format!("must be one of: {ROLE_NAMES}")),
        },
        Some(_) => b.fail(ROLE, MUST_BE_STRING),
        None if required => b.fail(ROLE, REQUIRED),
        None => None,
    }
}

/// `scopeType` and the raw `scopeId`.
fn scope_fields(b: &mut Fields<'_>) -> (Option<ScopeType>, Option<String>) {
    let scope_type = match b.sent(SCOPE_TYPE) {
        Some(Value::String(s)) => match s.parse::<ScopeType>() {
            Ok(t) => Some(t),
            Err(e) => b.fail(SCOPE_TYPE, e.into_message()),
        },
        Some(_) => b.fail(SCOPE_TYPE, MUST_BE_STRING),
        None => None,
    };
    let scope_id = match b.sent(SCOPE_ID) {
        Some(v) => match text(v) {
            Some(s) => Some(s),
            None => b.fail(SCOPE_ID, MUST_BE_STRING),
        },
        None => None,
    };
    (scope_type, scope_id)
}

/// The filters of `admin.roles.list` (all optional; `limit` 1..=1000,
/// default 500).
fn binding_filter(body: &Value) -> Result<BindingFilter, AppError> {
    let mut b = Fields::new(body)?;
    let user = uuid_field(&mut b, USER_ID, false);
    let role = role_field(&mut b, false);
    let (scope_type, scope_id) = scope_fields(&mut b);
    let scope_id = match scope_id {
        Some(id) => match ScopeId::parse(&id) {
            Ok(id) => Some(id),
            Err(e) => b.fail(SCOPE_ID, e.into_message()),
        },
        None => None,
    };
    let limit = b.integer(LIMIT, admin::DEFAULT_LIST_LIMIT, 1, admin::MAX_LIST_LIMIT);
    b.finish()?;
    Ok(BindingFilter {
        user,
        role,
        scope_type,
        scope_id,
        limit,
    })
}

/// The binding of `admin.roles.grant` (and of a revoke without `bindingId`):
/// `userId`, `role`, and a scope that defaults to the tenant.
fn binding_spec(body: &Value, tenant: TenantId) -> Result<BindingSpec, AppError> {
    let mut b = Fields::new(body)?;
    let user = uuid_field(&mut b, USER_ID, true);
    let role = role_field(&mut b, true);
    let (scope_type, scope_id) = scope_fields(&mut b);
    let scope = if b.has_error(SCOPE_TYPE) || b.has_error(SCOPE_ID) {
        None
    } else {
        match admin::binding_scope(tenant, scope_type, scope_id.as_deref()) {
            Ok(scope) => Some(scope),
            Err((name, message)) => b.fail(Key::word(name), message),
        }
    };
    b.finish()?;
    match (user, role, scope) {
        (Some(user), Some(role), Some(scope)) => Ok(BindingSpec { user, role, scope }),
        _ => Err(DomainError::Validation {
            fields: BTreeMap::new(),
        }
        .into()),
    }
}

/// What `admin.roles.revoke` removes: `bindingId`, or `userId` + `role`
/// (+ scope, default the tenant), not both.
fn revoke_target(body: &Value, tenant: TenantId) -> Result<RevokeTarget, AppError> {
    let mut b = Fields::new(body)?;
    let binding_id = Key::new("bindingId", "binding_id");
    let Some(id) = b.sent(binding_id) else {
        return binding_spec(body, tenant).map(RevokeTarget::Binding);
    };
    if b.sent(USER_ID).is_some() || b.sent(ROLE).is_some() {
        b.fail::<()>(
            binding_id,
            "give either bindingId or userId and role, not both",
        );
    }
    let id = match id {
        Value::String(s)
            if !s.trim().is_empty()
                && s.chars().count() <= 128
                && !s.chars().any(char::is_control) =>
        {
            Some(s.trim().to_string())
        }
        Value::Number(n) if n.as_u64().is_some() => Some(n.to_string()),
        _ => b.fail(
            binding_id,
            "must be a binding id (a non-empty string of at most 128 characters)",
        ),
    };
    b.finish()?;
    match id {
        Some(id) => Ok(RevokeTarget::Id(id)),
        None => Err(DomainError::Validation {
            fields: BTreeMap::new(),
        }
        .into()),
    }
}
