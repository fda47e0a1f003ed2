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

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::app::Op;
use crate::app::fields::{
    CANNOT_BE_NULL, Fields, Key, MUST_BE_STRING, NOT_AN_OBJECT, REQUIRED, Raw, text,
};
use crate::auth::Transport;
use crate::authz::Role;
use crate::authz::admin::{self, BindingFilter, BindingSpec, RevokeTarget};
use crate::domain::{
    ApplyTo, CancelReason, Capacity, DatetimeInput, Description, DomainError, ErrorCode,
    EventField, EventId, EventPatch, GameId, LocationText, LocationUrl, MaxGuests, NewEvent,
    NewEventFields, Recurrence, Reminders, RequestedRsvp, RsvpRules, RsvpStatus, Scope, ScopeId,
    ScopeType, SeriesId, TenantId, TimeZone, Title, Tri, UserId, Visibility, parse_datetime_str,
    visibility_fits_scope, visibility_scope_mismatch,
};
use crate::error::AppError;
use crate::store::audit::AuditFilter;
use crate::store::memberships::{MembershipFilter, MembershipSpec};
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
        apply_to: Checked<ApplyTo>,
    },
    EventCancel {
        id: EventId,
        reason: Checked<Option<CancelReason>>,
        apply_to: Checked<ApplyTo>,
    },
    RsvpSet {
        id: EventId,
        rsvp: Checked<RsvpBody>,
    },
    RsvpClear(EventId),
    /// `rsvp.approve` (`approve`) and `rsvp.decline`.
    RsvpReview {
        id: EventId,
        approve: bool,
        users: Checked<Vec<UserId>>,
    },
    EventStats(EventId),
    /// The RSVPs as CSV (HTTP only).
    RsvpExport(EventId),
    /// The attendance as CSV (HTTP only).
    AttendanceExport(EventId),
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
    /// Memberships and the audit log: for tenant admins, the body read
    /// once the caller is allowed, as for role administration.
    MembershipAdd(Checked<MembershipSpec>),
    MembershipRemove(Checked<MembershipSpec>),
    MembershipList(Checked<MembershipFilter>),
    AdminAuditList(Checked<AuditQuery>),
    /// What the caller may do at a scope (the tenant when none is given).
    MeCapabilities(Scope),
    EventStream(StreamFilter),
    SeriesGet(SeriesId),
    SeriesIcs(SeriesId),
    /// A calendar feed of the caller's: its filters, read once the caller
    /// is known.
    FeedCreate(Checked<FeedSpec>),
    FeedList,
    FeedRevoke(Checked<uuid::Uuid>),
    EventImport(ImportSpec),
}

/// The filters of a new feed: one scope, one RSVP status of the owner's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSpec {
    pub scope: Option<Scope>,
    pub my_rsvp: Option<RsvpStatus>,
}

/// `event.import`: the calendar text and where its events go.
#[derive(Debug, Clone)]
pub struct ImportSpec {
    pub ics: String,
    pub scope: Scope,
    pub visibility: Visibility,
}

/// `admin.audit.list`: the tenant asked for (only system admins may name
/// another than their own) and the filters.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditQuery {
    pub tenant: Option<TenantId>,
    pub filter: AuditFilter,
}

/// A validated create, and what makes two creates "the same request".
#[derive(Debug, Clone)]
pub struct CreateEvent {
    pub new: NewEvent,
    /// Set for a recurring event.
    pub recurrence: Option<Recurrence>,
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
            Request::RsvpReview { approve: true, .. } => Op::RsvpApprove,
            Request::RsvpReview { approve: false, .. } => Op::RsvpDecline,
            Request::EventStats(_) => Op::EventStats,
            Request::RsvpExport(_) => Op::RsvpExport,
            Request::AttendanceExport(_) => Op::AttendanceExport,
            Request::RsvpList { .. } => Op::RsvpList,
            Request::AttendanceMark { .. } => Op::AttendanceMark,
            Request::AttendanceList { .. } => Op::AttendanceList,
            Request::EventIcs(_) => Op::EventIcs,
            Request::DsarExport(_) => Op::DsarExport,
            Request::DsarErase(_) => Op::DsarErase,
            Request::AdminRolesList(_) => Op::AdminRolesList,
            Request::AdminRolesGrant(_) => Op::AdminRolesGrant,
            Request::AdminRolesRevoke(_) => Op::AdminRolesRevoke,
            Request::MembershipAdd(_) => Op::MembershipAdd,
            Request::MembershipRemove(_) => Op::MembershipRemove,
            Request::MembershipList(_) => Op::MembershipList,
            Request::AdminAuditList(_) => Op::AdminAuditList,
            Request::MeCapabilities(_) => Op::MeCapabilities,
            Request::EventStream(_) => Op::EventStream,
            Request::SeriesGet(_) => Op::SeriesGet,
            Request::SeriesIcs(_) => Op::SeriesIcs,
            Request::FeedCreate(_) => Op::FeedCreate,
            Request::FeedList => Op::FeedList,
            Request::FeedRevoke(_) => Op::FeedRevoke,
            Request::EventImport(_) => Op::EventImport,
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
            Op::EventCreate => {
                let new = new_event(tenant, body)?;
                let recurrence = recurrence_of(body, &new)?;
                Request::EventCreate(CreateEvent {
                    new,
                    recurrence,
                    fingerprint: hex::encode(Sha256::digest(body.to_string().as_bytes())),
                })
            }
            Op::EventGet => Request::EventGet(event_id(&fields)?),
            Op::EventList => Request::EventList(list_filter(body)?),
            Op::EventUpdate => Request::EventUpdate {
                id: event_id(&fields)?,
                patch: patch(body).map_err(AppError::from),
                apply_to: apply_to_of(body).map_err(AppError::from),
            },
            Op::EventCancel => Request::EventCancel {
                id: event_id(&fields)?,
                reason: cancel_reason_of(body).map_err(AppError::from),
                apply_to: apply_to_of(body).map_err(AppError::from),
            },
            Op::RsvpSet => Request::RsvpSet {
                id: event_id(&fields)?,
                rsvp: requested_rsvp(&fields),
            },
            Op::RsvpClear => Request::RsvpClear(event_id(&fields)?),
            Op::RsvpApprove | Op::RsvpDecline => Request::RsvpReview {
                id: event_id(&fields)?,
                approve: op == Op::RsvpApprove,
                users: review_users(&fields),
            },
            Op::EventStats => Request::EventStats(event_id(&fields)?),
            Op::RsvpExport => Request::RsvpExport(event_id(&fields)?),
            Op::AttendanceExport => Request::AttendanceExport(event_id(&fields)?),
            Op::RsvpList => Request::RsvpList {
                id: event_id(&fields)?,
                query: rsvp_query(body),
            },
            Op::AttendanceMark => Request::AttendanceMark {
                id: event_id(&fields)?,
                user: user_id(&fields, "user_id must be a UUID")
                    .map(|user_id| AttendanceBody { user_id }.user_id),
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
            Op::MembershipAdd => Request::MembershipAdd(membership_spec(body, tenant)),
            Op::MembershipRemove => Request::MembershipRemove(membership_spec(body, tenant)),
            Op::MembershipList => Request::MembershipList(membership_filter(body)),
            Op::AdminAuditList => Request::AdminAuditList(audit_query(body, tenant)),
            Op::MeCapabilities => Request::MeCapabilities(capability_scope(body, tenant)?),
            Op::EventStream => Request::EventStream(stream_filter(body)?),
            Op::SeriesGet => Request::SeriesGet(series_id(&fields)?),
            Op::SeriesIcs => Request::SeriesIcs(series_id(&fields)?),
            Op::FeedCreate => Request::FeedCreate(feed_spec(body, tenant)),
            Op::FeedList => Request::FeedList,
            Op::FeedRevoke => Request::FeedRevoke(feed_id(body)),
            Op::EventImport => Request::EventImport(import_spec(body, tenant)?),
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
const FROM: Key = Key::word("from");
const TO: Key = Key::word("to");
const Q: Key = Key::word("q");
const VISIBILITY_FILTER: Key = Key::word("visibility");
const MY_RSVP: Key = Key::new("myRsvp", "my_rsvp");
const CREATED_BY: Key = Key::new("createdBy", "created_by");
const BINDING_ID: Key = Key::new("bindingId", "binding_id");
const TENANT_ID: Key = Key::new("tenantId", "tenant_id");
const ACTOR_USER_ID: Key = Key::new("actorUserId", "actor_user_id");
const TARGET_ID: Key = Key::new("targetId", "target_id");
const ACTION: Key = Key::word("action");

const SERIES_ID: Key = Key::new("seriesId", "series_id");

/// The targeted series: `id`, else `seriesId` (`series_id`).
fn series_id(fields: &Fields<'_>) -> Result<SeriesId, AppError> {
    let invalid = || AppError::rejected(ErrorCode::InvalidSeriesId, "Invalid series id");
    match fields.sent(ID).or_else(|| fields.sent(SERIES_ID)) {
        Some(Value::String(s)) => SeriesId::parse(s).map_err(|_| invalid()),
        _ => Err(invalid()),
    }
}

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

/// The body of `rsvp.set`: `status`, and `guests` (only with `going`).
fn requested_rsvp(fields: &Fields<'_>) -> Result<RsvpBody, AppError> {
    let status: RequestedRsvp = match fields.sent(STATUS) {
        Some(Value::String(s)) => s.parse().map_err(|e: crate::domain::FieldError| {
            AppError::from(DomainError::field("status", e.into_message()))
        })?,
        None => return Err(DomainError::field("status", REQUIRED).into()),
        Some(_) => return Err(DomainError::field("status", MUST_BE_STRING).into()),
    };
    let max = crate::domain::rules::MAX_GUESTS;
    let guests = match fields.sent(GUESTS) {
        None => 0,
        Some(v) => match whole_number(v).map(u32::try_from) {
            Some(Ok(n)) if n <= max => n,
            _ => {
                return Err(DomainError::field(
                    "guests",
                    format!("must be an integer between 0 and {max}"),
                )
                .into());
            }
        },
    };
    if guests > 0 && status != RequestedRsvp::Going {
        return Err(DomainError::field("guests", "guests come with status going only").into());
    }
    Ok(RsvpBody { status, guests })
}

/// The users of `rsvp.approve` and `rsvp.decline`: `userIds` (a list of
/// 1..=500 UUIDs), else `userId`.
fn review_users(fields: &Fields<'_>) -> Checked<Vec<UserId>> {
    if let Some(list) = fields.sent(USER_IDS) {
        let invalid = || {
            AppError::from(DomainError::field(
                USER_IDS.camel,
                format!("must be a list of 1 to {MAX_REVIEW_USERS} user ids (UUIDs)"),
            ))
        };
        let Value::Array(items) = list else {
            return Err(invalid());
        };
        if items.is_empty() || items.len() > MAX_REVIEW_USERS {
            return Err(invalid());
        }
        let mut users = Vec::with_capacity(items.len());
        for item in items {
            let user = match item {
                Value::String(s) => UserId::parse(s).map_err(|_| invalid())?,
                _ => return Err(invalid()),
            };
            if !users.contains(&user) {
                users.push(user);
            }
        }
        return Ok(users);
    }
    user_id(fields, "Invalid user id").map(|u| vec![u])
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
    if let Some(v) = b.sent(FROM) {
        let s = text(v).unwrap_or_default();
        filter.from = Some(parse_datetime_str(&s).map_err(|_| {
            AppError::rejected(ErrorCode::InvalidFrom, "from must be ISO datetime")
        })?);
    }
    if let Some(v) = b.sent(TO) {
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
    // Checked even when sent alone, so that the limits the document states
    // hold whatever else the query has.
    let scope_id = match b.sent(SCOPE_ID) {
        Some(Value::String(s)) if !s.is_empty() => match ScopeId::parse(s) {
            Ok(id) => Some(id.into_string()),
            Err(e) => b.fail(SCOPE_ID, e.into_message()),
        },
        Some(Value::String(_)) | None => None,
        Some(_) => b.fail(SCOPE_ID, MUST_BE_STRING),
    };
    // The scope filter needs both halves, as in the original.
    if let (Some(t), Some(id)) = (scope_type, scope_id) {
        filter.scope = Some((t, id));
    }
    let q = Q;
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
    let visibility = VISIBILITY_FILTER;
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
    let my_rsvp = MY_RSVP;
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
    let created_by = CREATED_BY;
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

/// What a live stream (`GET /stream`) shows and where it starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamFilter {
    pub scope_type: Option<ScopeType>,
    /// Only with `scope_type`.
    pub scope_id: Option<String>,
    pub event: Option<EventId>,
    /// Resume after this stream sequence (`Last-Event-ID`).
    pub last_event_id: Option<u64>,
}

const LAST_EVENT_ID: Key = Key::new("lastEventId", "last_event_id");

fn stream_filter(body: &Value) -> Result<StreamFilter, AppError> {
    let mut b = Fields::new(body)?;
    let mut filter = StreamFilter::default();
    match b.sent(SCOPE_TYPE) {
        Some(Value::String(s)) if !s.is_empty() => match s.parse::<ScopeType>() {
            Ok(t) => filter.scope_type = Some(t),
            Err(e) => {
                b.fail::<()>(SCOPE_TYPE, e.into_message());
            }
        },
        Some(Value::String(_)) | None => {}
        Some(_) => {
            b.fail::<()>(SCOPE_TYPE, MUST_BE_STRING);
        }
    }
    match b.sent(SCOPE_ID) {
        Some(Value::String(s)) if !s.is_empty() => match ScopeId::parse(s) {
            Ok(id) if filter.scope_type.is_some() => filter.scope_id = Some(id.into_string()),
            Ok(_) if b.has_error(SCOPE_TYPE) => {}
            Ok(_) => {
                b.fail::<()>(SCOPE_ID, "needs scopeType as well");
            }
            Err(e) => {
                b.fail::<()>(SCOPE_ID, e.into_message());
            }
        },
        Some(Value::String(_)) | None => {}
        Some(_) => {
            b.fail::<()>(SCOPE_ID, MUST_BE_STRING);
        }
    }
    match b.sent(EVENT_ID) {
        Some(Value::String(s)) if !s.is_empty() => match EventId::parse(s) {
            Ok(id) => filter.event = Some(id),
            Err(_) => {
                b.fail::<()>(EVENT_ID, "must be an event id (UUID)");
            }
        },
        Some(Value::String(_)) | None => {}
        Some(_) => {
            b.fail::<()>(EVENT_ID, MUST_BE_STRING);
        }
    }
    if b.sent(LAST_EVENT_ID).is_some() {
        let n = b.integer(LAST_EVENT_ID, 0, 0, i64::MAX);
        filter.last_event_id = u64::try_from(n).ok();
    }
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
const TIME_ZONE: Key = key(EventField::TimeZone);
const RECURRENCE: Key = Key::word("recurrence");
const APPLY_TO: Key = Key::new("applyTo", "apply_to");
const RSVP_OPENS_AT: Key = key(EventField::RsvpOpensAt);
const RSVP_CLOSES_AT: Key = key(EventField::RsvpClosesAt);
const MAX_GUESTS: Key = key(EventField::MaxGuests);
const RSVP_APPROVAL: Key = key(EventField::RsvpApproval);
const REMINDERS: Key = key(EventField::Reminders);
const GUESTS: Key = Key::word("guests");
const USER_IDS: Key = Key::new("userIds", "user_ids");

/// Most users one approval or decline may name.
pub const MAX_REVIEW_USERS: usize = 500;

/// A whole number (`5.0` counts, `5.5` does not), as i64.
fn whole_number(value: &Value) -> Option<i64> {
    let Value::Number(n) = value else {
        return None;
    };
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    if n.is_u64() {
        return Some(i64::MAX);
    }
    n.as_f64()
        .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
        .map(|f| f as i64)
}

fn max_guests_of(b: &mut Fields<'_>, value: &Value) -> Option<MaxGuests> {
    let parsed = whole_number(value).map(MaxGuests::new);
    match parsed {
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => b.fail(MAX_GUESTS, e.into_message()),
        None => b.fail(
            MAX_GUESTS,
            format!(
                "must be an integer between 0 and {}",
                crate::domain::rules::MAX_GUESTS
            ),
        ),
    }
}

fn approval_of(b: &mut Fields<'_>, value: &Value) -> Option<bool> {
    match value {
        Value::Bool(v) => Some(*v),
        _ => b.fail(RSVP_APPROVAL, "must be a boolean"),
    }
}

fn reminders_of(b: &mut Fields<'_>, value: &Value) -> Option<Reminders> {
    const SHAPE: &str = "must be a list of minutes before the start, e.g. [1440, 60]";
    let Value::Array(items) = value else {
        return b.fail(REMINDERS, SHAPE);
    };
    if items.len() > 64 {
        return b.fail(REMINDERS, SHAPE);
    }
    let mut minutes = Vec::with_capacity(items.len());
    for item in items {
        match whole_number(item) {
            Some(m) => minutes.push(m),
            None => return b.fail(REMINDERS, SHAPE),
        }
    }
    match Reminders::new(&minutes) {
        Ok(r) => Some(r),
        Err(e) => b.fail(REMINDERS, e.into_message()),
    }
}

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
    let time_zone = match b.raw(TIME_ZONE) {
        Raw::Absent | Raw::Null => Some(TimeZone::UTC),
        Raw::Value(v) => b.string(TIME_ZONE, v, TimeZone::parse),
    };
    let rsvp_opens_at = match b.raw(RSVP_OPENS_AT) {
        Raw::Absent | Raw::Null => Some(None),
        Raw::Value(v) => b.datetime(RSVP_OPENS_AT, v).map(Some),
    };
    let rsvp_closes_at = match b.raw(RSVP_CLOSES_AT) {
        Raw::Absent | Raw::Null => Some(None),
        Raw::Value(v) => b.datetime(RSVP_CLOSES_AT, v).map(Some),
    };
    let max_guests = match b.raw(MAX_GUESTS) {
        Raw::Absent | Raw::Null => Some(MaxGuests::default()),
        Raw::Value(v) => max_guests_of(&mut b, v),
    };
    let rsvp_approval = match b.raw(RSVP_APPROVAL) {
        Raw::Absent | Raw::Null => Some(false),
        Raw::Value(v) => approval_of(&mut b, v),
    };
    let reminders_sent = b.present(REMINDERS);
    let reminders = match b.raw(REMINDERS) {
        Raw::Absent | Raw::Null => Some(Reminders::none()),
        Raw::Value(v) => reminders_of(&mut b, v),
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
        Some(time_zone),
        Some(rsvp_opens_at),
        Some(rsvp_closes_at),
        Some(max_guests),
        Some(rsvp_approval),
        Some(reminders),
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
        time_zone,
        rsvp_opens_at,
        rsvp_closes_at,
        max_guests,
        rsvp_approval,
        reminders,
    )
    else {
        return Err(DomainError::InvalidBody(NOT_AN_OBJECT.to_owned()));
    };
    CreateBody {
        scope_type: scope.scope_type(),
        scope_id: scope.scope_id().clone(),
        title,
        description,
        starts_at,
        ends_at,
        location_text,
        location_url,
        game_id,
        visibility,
        capacity,
        time_zone,
        recurrence: None,
        rsvp_opens_at,
        rsvp_closes_at,
        max_guests: max_guests.get(),
        rsvp_approval,
        reminders: reminders.minutes().to_vec(),
        reminders_sent,
    }
    .into_new_event(tenant)
}

/// The `recurrence` of a create, checked against the event it repeats:
/// `{rrule, exdates?}`. Errors name `recurrence.rrule` or
/// `recurrence.exdates`.
pub fn recurrence_of(body: &Value, new: &NewEvent) -> Result<Option<Recurrence>, DomainError> {
    let fields = Fields::new(body)?;
    let value = match fields.sent(RECURRENCE) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(DomainError::field(
                "recurrence",
                "must be an object {rrule, exdates}",
            ));
        }
    };
    let rule = match value.get("rrule") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(DomainError::field("recurrence.rrule", MUST_BE_STRING)),
        None => return Err(DomainError::field("recurrence.rrule", REQUIRED)),
    };
    let exdates = match value.get("exdates") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            if items.len() > crate::domain::calendar::MAX_EXDATES {
                return Err(DomainError::field(
                    "recurrence.exdates",
                    format!("at most {} dates", crate::domain::calendar::MAX_EXDATES),
                ));
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let parsed = match item {
                    Value::String(s) => crate::domain::parse_datetime_str(s).ok(),
                    _ => None,
                };
                match parsed {
                    Some(at) => out.push(at),
                    None => {
                        return Err(DomainError::field(
                            "recurrence.exdates",
                            "must be a list of RFC 3339 datetimes",
                        ));
                    }
                }
            }
            out
        }
        Some(_) => {
            return Err(DomainError::field(
                "recurrence.exdates",
                "must be a list of RFC 3339 datetimes",
            ));
        }
    };
    Recurrence::parse(rule, exdates, new.starts_at(), new.time_zone())
        .map(Some)
        .map_err(|e| DomainError::field(e.field, e.message))
}

/// `applyTo` of an update or cancel: `this` (default), `following`, `all`.
pub fn apply_to_of(body: &Value) -> Result<ApplyTo, DomainError> {
    let fields = Fields::new(body)?;
    match fields.sent(APPLY_TO) {
        None | Some(Value::Null) => Ok(ApplyTo::default()),
        Some(Value::String(s)) => s
            .parse::<ApplyTo>()
            .map_err(|e| DomainError::field(APPLY_TO.camel, e.into_message())),
        Some(_) => Err(DomainError::field(APPLY_TO.camel, MUST_BE_STRING)),
    }
}

/// The body of a create, as read: every field checked, then the visibility
/// against the scope and `startsAt` < `endsAt`. Keys in camelCase or
/// snake_case; unknown keys are ignored.
#[derive(Debug, Clone, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = EventCreate)]
pub struct CreateBody {
    pub scope_type: ScopeType,
    pub scope_id: ScopeId,
    pub title: Title,
    /// `null`, absent or `""`: none.
    #[schema(value_type = Option<Description>)]
    pub description: Description,
    #[schema(value_type = DatetimeInput)]
    pub starts_at: DateTime<Utc>,
    /// After `startsAt` (else 400 `INVALID_TIME_RANGE`).
    #[schema(value_type = DatetimeInput)]
    pub ends_at: DateTime<Utc>,
    /// `null`, absent or `""`: none.
    #[schema(value_type = Option<LocationText>)]
    pub location_text: LocationText,
    /// `null`, absent or `""`: none.
    #[schema(schema_with = empty_or::<LocationUrl>, required = false)]
    pub location_url: Option<LocationUrl>,
    /// `null`, absent or `""`: none.
    #[schema(schema_with = empty_or::<GameId>, required = false)]
    pub game_id: Option<GameId>,
    /// Absent: `public`; `null` is refused. Must fit the scope: `community`
    /// needs COMMUNITY and `team` needs TEAM.
    #[schema(required = false)]
    pub visibility: Visibility,
    /// `null` or absent: unlimited.
    pub capacity: Option<Capacity>,
    /// RSVPs are taken from this time on; `null` or absent: from now. Must
    /// be before `rsvpClosesAt` (or `endsAt`), else 422.
    #[schema(value_type = Option<DatetimeInput>)]
    pub rsvp_opens_at: Option<DateTime<Utc>>,
    /// RSVPs are taken until (excluding) this time; `null` or absent: until
    /// the event ends. Must not be after `endsAt`, else 422.
    #[schema(value_type = Option<DatetimeInput>)]
    pub rsvp_closes_at: Option<DateTime<Utc>>,
    /// Guests each going user may bring (0..=50); `null` or absent: 0.
    #[schema(minimum = 0, maximum = 50, required = false)]
    pub max_guests: u32,
    /// `going` becomes `pending` until a manager approves it; `null` or
    /// absent: false.
    #[schema(required = false)]
    pub rsvp_approval: bool,
    /// Minutes before the start at which each going user is reminded
    /// (`event.reminder.due`): at most 5, each 1..=43200; absent: the
    /// service's default (`EVENTS_DEFAULT_REMINDERS`), `null`: none.
    #[schema(value_type = Option<Vec<u32>>, max_items = 5, required = false)]
    pub reminders: Vec<u32>,
    #[serde(skip)]
    #[schema(ignore)]
    pub reminders_sent: bool,
    /// An IANA zone name (`Europe/Berlin`); absent or `null`: `UTC`. An
    /// unknown name is refused (422).
    #[schema(value_type = Option<String>, example = "Europe/Berlin")]
    pub time_zone: TimeZone,
    /// Makes the event recurring: every occurrence is an event of its own.
    /// The reply is the first occurrence.
    #[schema(required = false)]
    pub recurrence: Option<RecurrenceBody>,
}

/// The recurrence of a create.
#[derive(Debug, Clone, ToSchema)]
pub struct RecurrenceBody {
    /// An RFC 5545 RRULE value: `FREQ` (`DAILY`, `WEEKLY`, `MONTHLY`,
    /// `YEARLY`), `INTERVAL`, `COUNT` (≤ 500) or `UNTIL` (≤ 10 years),
    /// `BYDAY`, `BYMONTHDAY`, `BYMONTH`, `BYSETPOS`, `WKST`. Expanded in the
    /// event's `timeZone`, so 18:00 stays 18:00 across daylight saving.
    #[schema(example = "FREQ=WEEKLY;BYDAY=TU;COUNT=10")]
    pub rrule: String,
    /// Instances left out (their starts, RFC 3339), at most 500.
    #[schema(value_type = Option<Vec<DatetimeInput>>)]
    pub exdates: Vec<DateTime<Utc>>,
}

impl CreateBody {
    /// The create, once the rules between fields hold (the TENANT scope was
    /// checked with the other fields).
    fn into_new_event(self, tenant: TenantId) -> Result<NewEvent, DomainError> {
        let scope = Scope::new(tenant, self.scope_type, self.scope_id)
            .map_err(|e| DomainError::field(SCOPE_ID.camel, e.into_message()))?;
        NewEvent::new(
            tenant,
            NewEventFields {
                scope,
                title: self.title,
                description: self.description,
                starts_at: self.starts_at,
                ends_at: self.ends_at,
                location_text: self.location_text,
                location_url: self.location_url,
                game_id: self.game_id,
                visibility: self.visibility,
                capacity: self.capacity,
                time_zone: self.time_zone,
                rules: RsvpRules {
                    opens_at: self.rsvp_opens_at,
                    closes_at: self.rsvp_closes_at,
                    max_guests: MaxGuests::new(i64::from(self.max_guests))
                        .map_err(|e| DomainError::field(MAX_GUESTS.camel, e.into_message()))?,
                    approval: self.rsvp_approval,
                    reminders: Reminders::new(
                        &self
                            .reminders
                            .iter()
                            .map(|m| i64::from(*m))
                            .collect::<Vec<_>>(),
                    )
                    .map_err(|e| DomainError::field(REMINDERS.camel, e.into_message()))?,
                },
                reminders_sent: self.reminders_sent,
            },
        )
    }
}

/// The schema of a field where `""` and `null` mean none: `T`, `""` or null.
fn empty_or<T: ToSchema>() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(T::schema())
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([""])),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .build()
        .into()
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

    let mut patch = PatchBody::default();
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
    patch.time_zone = tri(b.raw(TIME_ZONE), |v| {
        b.string(TIME_ZONE, v, TimeZone::parse)
    });
    patch.rsvp_opens_at = tri(b.raw(RSVP_OPENS_AT), |v| b.datetime(RSVP_OPENS_AT, v));
    patch.rsvp_closes_at = tri(b.raw(RSVP_CLOSES_AT), |v| b.datetime(RSVP_CLOSES_AT, v));
    patch.max_guests = tri(b.raw(MAX_GUESTS), |v| max_guests_of(&mut b, v));
    patch.rsvp_approval = tri(b.raw(RSVP_APPROVAL), |v| approval_of(&mut b, v));
    patch.reminders = tri(b.raw(REMINDERS), |v| reminders_of(&mut b, v));

    b.finish()?;
    Ok(patch.into())
}

/// The body of an update, as read: each field absent, null or set. Only the
/// keys present are considered; none at all is 400 `NO_UPDATES`. The scope
/// cannot change: `scopeType` and `scopeId`, like unknown keys, are ignored.
#[derive(Debug, Clone, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = EventPatch)]
pub struct PatchBody {
    /// `null` is ignored.
    #[schema(value_type = Option<Title>)]
    pub title: Tri<Title>,
    /// `null` or `""` clears it.
    #[schema(value_type = Option<Description>)]
    pub description: Tri<Description>,
    /// `null` is refused (422).
    #[schema(value_type = DatetimeInput, required = false)]
    pub starts_at: Tri<DateTime<Utc>>,
    /// `null` is refused (422). The merged times must keep `startsAt` <
    /// `endsAt` (else 400 `INVALID_TIME_RANGE`).
    #[schema(value_type = DatetimeInput, required = false)]
    pub ends_at: Tri<DateTime<Utc>>,
    /// `null` or `""` clears it.
    #[schema(value_type = Option<LocationText>)]
    pub location_text: Tri<LocationText>,
    /// `null` or `""` clears it.
    #[schema(schema_with = empty_or::<LocationUrl>, required = false)]
    pub location_url: Tri<LocationUrl>,
    /// `null` or `""` clears it.
    #[schema(schema_with = empty_or::<GameId>, required = false)]
    pub game_id: Tri<GameId>,
    /// `null` is ignored. Must fit the event's scope.
    #[schema(value_type = Option<Visibility>)]
    pub visibility: Tri<Visibility>,
    /// `null`: unlimited. Raising it promotes waitlisted users at once.
    #[schema(value_type = Option<Capacity>)]
    pub capacity: Tri<Capacity>,
    /// An IANA zone name; `null`: `UTC`. Cannot change for a whole series.
    #[schema(value_type = Option<String>)]
    pub time_zone: Tri<TimeZone>,
    /// For an occurrence of a recurring event: `this` (default), `following`
    /// (this one and every later one: the series is split here) or `all`.
    #[schema(value_type = Option<ApplyTo>)]
    pub apply_to: Tri<ApplyTo>,
    /// `null`: RSVPs open from creation. The window must fit the merged
    /// times (else 422).
    #[schema(value_type = Option<DatetimeInput>)]
    pub rsvp_opens_at: Tri<DateTime<Utc>>,
    /// `null`: RSVPs close when the event ends.
    #[schema(value_type = Option<DatetimeInput>)]
    pub rsvp_closes_at: Tri<DateTime<Utc>>,
    /// `null`: 0. Parties already larger keep their guests.
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 50)]
    pub max_guests: Tri<MaxGuests>,
    /// `null` is ignored. Turning it off leaves pending RSVPs pending.
    #[schema(value_type = Option<bool>)]
    pub rsvp_approval: Tri<bool>,
    /// `null`: none. Reminders not sent yet are scheduled again.
    #[schema(value_type = Option<Vec<u32>>, max_items = 5)]
    pub reminders: Tri<Reminders>,
}

impl From<PatchBody> for EventPatch {
    fn from(b: PatchBody) -> Self {
        EventPatch {
            title: b.title,
            description: b.description,
            starts_at: b.starts_at,
            ends_at: b.ends_at,
            location_text: b.location_text,
            location_url: b.location_url,
            game_id: b.game_id,
            visibility: b.visibility,
            capacity: b.capacity,
            time_zone: b.time_zone,
            series: Default::default(),
            rsvp_opens_at: b.rsvp_opens_at,
            rsvp_closes_at: b.rsvp_closes_at,
            max_guests: b.max_guests,
            rsvp_approval: b.rsvp_approval,
            reminders: b.reminders,
        }
    }
}

/// The optional `reason` of a cancel: no body, a missing, null or empty
/// `reason` all mean no reason.
pub fn cancel_reason_of(body: &Value) -> Result<Option<CancelReason>, DomainError> {
    cancel_body(body).map(|b| b.reason)
}

fn cancel_body(body: &Value) -> Result<CancelBody, DomainError> {
    let fields = Fields::new(body)?;
    let reason = Key::word("reason");
    let reason = match fields.sent(reason) {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(
            CancelReason::parse(s).map_err(|e| DomainError::field("reason", e.into_message()))?,
        ),
        Some(_) => return Err(DomainError::field("reason", MUST_BE_STRING)),
    };
    Ok(CancelBody {
        reason,
        apply_to: Tri::Absent,
    })
}

/// The optional body of a cancel.
#[derive(Debug, Clone, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelBody {
    /// `null`, absent or `""`: no reason.
    pub reason: Option<CancelReason>,
    /// For an occurrence of a recurring event: `this` (default),
    /// `following` (this one and every later one) or `all`.
    #[schema(value_type = Option<ApplyTo>)]
    pub apply_to: Tri<ApplyTo>,
}

/// The body of an RSVP.
#[derive(Debug, Clone, Copy, ToSchema)]
pub struct RsvpBody {
    /// With approval on, `going` is stored as `pending`; on a full event
    /// (or one with a waitlist) as `waitlisted`.
    pub status: RequestedRsvp,
    /// Guests the user brings, with `going` only (else 422): 0 up to the
    /// event's `maxGuests` (else 422 field `guests`). The party uses
    /// `1 + guests` seats. More guests on a seated party than there are
    /// free seats: 409 `NOT_ENOUGH_SEATS`, the party keeps what it had.
    /// `null` or absent: 0.
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 50, required = false)]
    pub guests: u32,
}

/// The body of `rsvp.approve` and `rsvp.decline` over HTTP in bulk.
#[derive(Debug, Clone, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewBody {
    /// 1 to 500 user ids, decided in one transaction, in this order.
    #[schema(value_type = Vec<String>, min_items = 1, max_items = 500)]
    pub user_ids: Vec<UserId>,
}

/// The body of an attendance mark (`userId` or `user_id`).
#[derive(Debug, Clone, Copy, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttendanceBody {
    /// Not a UUID: 400 `INVALID_USER_ID` "user_id must be a UUID"; not a
    /// string: 422.
    pub user_id: UserId,
}

// ---------------------------------------------------------------------------
// Role administration (`admin.roles.*`)
// ---------------------------------------------------------------------------

const ROLE_NAMES: &str =
    "participant, organizer, admin, events.participant, events.organizer, events.admin";
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

/// The required `userId` of someone a role or membership is given to. The
/// nil id stands for erased users: nobody to give anything to.
fn subject_user(b: &mut Fields<'_>) -> Option<uuid::Uuid> {
    uuid_field(b, USER_ID, true).and_then(|u| {
        if u.is_nil() {
            b.fail(
                USER_ID,
                "must be a user's id, not the nil UUID (erased users)",
            )
        } else {
            Some(u)
        }
    })
}

/// `scopeType` and `scopeId` as a scope of `tenant`: the tenant itself
/// unless a type is given ([`admin::binding_scope`]).
fn scope_in_tenant(b: &mut Fields<'_>, tenant: TenantId) -> Option<Scope> {
    let (scope_type, scope_id) = scope_fields(b);
    if b.has_error(SCOPE_TYPE) || b.has_error(SCOPE_ID) {
        return None;
    }
    match admin::binding_scope(tenant, scope_type, scope_id.as_deref()) {
        Ok(scope) => Some(scope),
        Err((name, message)) => b.fail(Key::word(name), message),
    }
}

/// The binding of `admin.roles.grant` (and of a revoke without `bindingId`):
/// `userId`, `role`, and a scope that defaults to the tenant.
fn binding_spec(body: &Value, tenant: TenantId) -> Result<BindingSpec, AppError> {
    let mut b = Fields::new(body)?;
    let user = subject_user(&mut b);
    let role = role_field(&mut b, true);
    let scope = scope_in_tenant(&mut b, tenant);
    if role.is_some_and(Role::system_admins_only)
        && scope
            .as_ref()
            .is_some_and(|s| s.scope_type() != ScopeType::Tenant)
    {
        b.fail::<()>(SCOPE_TYPE, "events.admin is held at TENANT scope only");
    }
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
    let binding_id = BINDING_ID;
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

/// A membership's user and scope: `userId`, `scopeType` (COMMUNITY or
/// TEAM) and `scopeId`, all required; a UUID scope id is stored canonical.
fn membership_spec(body: &Value, tenant: TenantId) -> Result<MembershipSpec, AppError> {
    let mut b = Fields::new(body)?;
    let user = subject_user(&mut b);
    let (scope_type, scope_id) = scope_fields(&mut b);
    let scope_type = match scope_type {
        Some(t) if crate::authz::membership_gated(t) => Some(t),
        Some(_) => b.fail(SCOPE_TYPE, "must be COMMUNITY or TEAM"),
        None if b.has_error(SCOPE_TYPE) => None,
        None => b.fail(SCOPE_TYPE, REQUIRED),
    };
    let scope_id = match scope_id {
        Some(id) => match ScopeId::parse(&id) {
            Ok(id) => Some(id),
            Err(e) => b.fail(SCOPE_ID, e.into_message()),
        },
        None if b.has_error(SCOPE_ID) => None,
        None => b.fail(SCOPE_ID, REQUIRED),
    };
    b.finish()?;
    match (user, scope_type, scope_id) {
        (Some(user), Some(scope_type), Some(scope_id)) => {
            let scope = Scope::new(tenant, scope_type, scope_id)
                .map_err(|e| DomainError::field("scopeId", e.into_message()))?;
            Ok(MembershipSpec { user, scope })
        }
        _ => Err(DomainError::Validation {
            fields: BTreeMap::new(),
        }
        .into()),
    }
}

/// The filters of `membership.list` (all optional) and a page.
fn membership_filter(body: &Value) -> Result<MembershipFilter, AppError> {
    let mut b = Fields::new(body)?;
    let user = uuid_field(&mut b, USER_ID, false);
    let (scope_type, scope_id) = scope_fields(&mut b);
    if let Some(t) = scope_type
        && !crate::authz::membership_gated(t)
    {
        b.fail::<()>(SCOPE_TYPE, "must be COMMUNITY or TEAM");
    }
    let scope_id = match scope_id {
        Some(id) => match ScopeId::parse(&id) {
            Ok(id) => Some(id),
            Err(e) => b.fail(SCOPE_ID, e.into_message()),
        },
        None => None,
    };
    let PageQuery { limit, offset } = page(&mut b);
    b.finish()?;
    Ok(MembershipFilter {
        user,
        scope_type,
        scope_id,
        limit,
        offset,
    })
}

/// The filters of `admin.audit.list` (all optional) and a page.
fn audit_query(body: &Value, tenant: TenantId) -> Result<AuditQuery, AppError> {
    let mut b = Fields::new(body)?;
    let asked = uuid_field(&mut b, TENANT_ID, false).map(TenantId::from);
    let actor = uuid_field(&mut b, ACTOR_USER_ID, false);
    let short_text = |b: &mut Fields<'_>, key: Key, max: usize| match b.sent(key) {
        Some(Value::String(s))
            if !s.trim().is_empty()
                && s.chars().count() <= max
                && !s.chars().any(char::is_control) =>
        {
            Some(s.trim().to_string())
        }
        Some(Value::String(_)) => b.fail(
            key,
            format!("must be 1 to {max} characters, not only white space, no control characters"),
        ),
        Some(_) => b.fail(key, MUST_BE_STRING),
        None => None,
    };
    let target_id = short_text(&mut b, TARGET_ID, 255);
    let action = short_text(&mut b, ACTION, 64);
    let datetime = |b: &mut Fields<'_>, key: Key| match b.sent(key) {
        Some(Value::String(s)) => match parse_datetime_str(s) {
            Ok(at) => Some(at),
            Err(_) => b.fail(key, "must be an ISO 8601 datetime"),
        },
        Some(_) => b.fail(key, "must be a string (an ISO 8601 datetime)"),
        None => None,
    };
    let from = datetime(&mut b, FROM);
    let to = datetime(&mut b, TO);
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        b.fail::<()>(TO, "must be after from");
    }
    let PageQuery { limit, offset } = page(&mut b);
    b.finish()?;
    Ok(AuditQuery {
        tenant: asked,
        filter: AuditFilter {
            tenant: asked.unwrap_or(tenant).into(),
            actor,
            target_id,
            action,
            from,
            to,
            limit,
            offset,
        },
    })
}

/// The scope `me.capabilities` answers for: `scopeType` and `scopeId`, the
/// tenant when neither is sent.
/// The body of `feed.create`: an optional scope (both halves or neither)
/// and an optional RSVP status.
fn feed_spec(body: &Value, tenant: TenantId) -> Checked<FeedSpec> {
    let mut b = Fields::new(body)?;
    let (scope_type, scope_id) = scoped_fields(&mut b);
    let scope = match (scope_type, scope_id) {
        (Some(t), Some(id)) => match Scope::new(tenant, t, id) {
            Ok(scope) => Some(scope),
            Err(e) => b.fail(SCOPE_ID, e.into_message()),
        },
        (Some(_), None) if !b.has_error(SCOPE_ID) => b.fail(SCOPE_ID, "needs scopeType as well"),
        (None, Some(_)) if !b.has_error(SCOPE_TYPE) => b.fail(SCOPE_TYPE, "needs scopeId as well"),
        _ => None,
    };
    let my_rsvp = match b.sent(MY_RSVP) {
        Some(Value::String(s)) => match s.parse::<RsvpStatus>() {
            Ok(status) => Some(status),
            Err(e) => b.fail(MY_RSVP, e.into_message()),
        },
        Some(_) => b.fail(MY_RSVP, MUST_BE_STRING),
        None => None,
    };
    b.finish()?;
    Ok(FeedSpec { scope, my_rsvp })
}

/// `scopeType` and `scopeId`, each checked on its own.
fn scoped_fields(b: &mut Fields<'_>) -> (Option<ScopeType>, Option<ScopeId>) {
    let (scope_type, scope_id) = scope_fields(b);
    let scope_id = match scope_id {
        Some(id) => match ScopeId::parse(&id) {
            Ok(id) => Some(id),
            Err(e) => b.fail(SCOPE_ID, e.into_message()),
        },
        None => None,
    };
    (scope_type, scope_id)
}

/// The `id` of `feed.revoke`: a UUID.
fn feed_id(body: &Value) -> Checked<uuid::Uuid> {
    let mut b = Fields::new(body)?;
    let id = uuid_field(&mut b, ID, true);
    b.finish()?;
    id.ok_or_else(|| {
        DomainError::Validation {
            fields: BTreeMap::new(),
        }
        .into()
    })
}

/// `event.import`: `ics` (the calendar text), the scope (required) and the
/// visibility of the events (default `public`, fitting the scope).
fn import_spec(body: &Value, tenant: TenantId) -> Result<ImportSpec, AppError> {
    const ICS: Key = Key::word("ics");
    let mut b = Fields::new(body)?;
    let ics = match b.raw(ICS) {
        Raw::Value(Value::String(s)) => Some(s.clone()),
        Raw::Value(_) => b.fail(ICS, MUST_BE_STRING),
        Raw::Null => b.fail(ICS, CANNOT_BE_NULL),
        Raw::Absent => b.fail(ICS, REQUIRED),
    };
    let (scope_type, scope_id) = scoped_fields(&mut b);
    let scope = match (scope_type, scope_id) {
        (Some(t), Some(id)) => match Scope::new(tenant, t, id) {
            Ok(scope) => Some(scope),
            Err(e) => b.fail(SCOPE_ID, e.into_message()),
        },
        (t, id) => {
            if t.is_none() && !b.has_error(SCOPE_TYPE) {
                b.fail::<()>(SCOPE_TYPE, REQUIRED);
            }
            if id.is_none() && !b.has_error(SCOPE_ID) {
                b.fail::<()>(SCOPE_ID, REQUIRED);
            }
            None
        }
    };
    let visibility = match b.sent(VISIBILITY_FILTER) {
        Some(Value::String(s)) => match s.parse::<Visibility>() {
            Ok(v) => Some(v),
            Err(e) => b.fail(VISIBILITY_FILTER, e.into_message()),
        },
        Some(_) => b.fail(VISIBILITY_FILTER, MUST_BE_STRING),
        None => Some(Visibility::default()),
    };
    if let (Some(scope), Some(v)) = (&scope, visibility)
        && !visibility_fits_scope(v, scope.scope_type())
    {
        b.fail::<()>(
            VISIBILITY_FILTER,
            visibility_scope_mismatch(v, scope.scope_type()).into_message(),
        );
    }
    b.finish()?;
    match (ics, scope, visibility) {
        (Some(ics), Some(scope), Some(visibility)) => Ok(ImportSpec {
            ics,
            scope,
            visibility,
        }),
        _ => Err(DomainError::Validation {
            fields: BTreeMap::new(),
        }
        .into()),
    }
}

fn capability_scope(body: &Value, tenant: TenantId) -> Result<Scope, AppError> {
    let mut b = Fields::new(body)?;
    let scope = scope_in_tenant(&mut b, tenant);
    b.finish()?;
    scope.ok_or_else(|| {
        DomainError::Validation {
            fields: BTreeMap::new(),
        }
        .into()
    })
}

// ---------------------------------------------------------------------------
// The fields of the listings and of role administration, for the document
// ---------------------------------------------------------------------------

type SchemaFn = fn() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>;

/// A field an operation reads by the one field rule (both spellings of its
/// key; the camelCase one wins), with the schema of what it accepts. Over
/// HTTP the listings read them from the query string; role administration
/// from the body or, for a revoke, the query.
pub struct FieldSpec {
    pub key: Key,
    pub required: bool,
    pub schema: SchemaFn,
    pub description: &'static str,
}

impl FieldSpec {
    const fn optional(key: Key, schema: SchemaFn, description: &'static str) -> Self {
        Self {
            key,
            required: false,
            schema,
            description,
        }
    }

    const fn required(key: Key, schema: SchemaFn, description: &'static str) -> Self {
        Self {
            key,
            required: true,
            schema,
            description,
        }
    }
}

mod field_schemas {
    use utoipa::PartialSchema;
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};

    use crate::authz::Role;
    use crate::domain::values::{
        CONTROL_CLASS, WHITESPACE_CLASS, datetime_text_pattern, uuid_input_pattern,
    };
    use crate::domain::{RsvpStatus, ScopeId, ScopeType, Visibility};

    fn integer(min: i64, max: i64) -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(min))
            .maximum(Some(max))
            .into()
    }

    fn pattern(pattern: String) -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern))
            .into()
    }

    /// A value where `""` means not sent.
    fn or_empty(schema: RefOr<Schema>) -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(schema)
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([""])),
            )
            .into()
    }

    pub fn datetime_text() -> RefOr<Schema> {
        pattern(datetime_text_pattern(true))
    }

    pub fn uuid_text() -> RefOr<Schema> {
        pattern(uuid_input_pattern())
    }

    pub fn list_limit() -> RefOr<Schema> {
        integer(1, super::MAX_LIMIT)
    }

    pub fn list_offset() -> RefOr<Schema> {
        integer(0, i64::MAX / 2)
    }

    pub fn page_offset() -> RefOr<Schema> {
        integer(0, i64::MAX)
    }

    pub fn roles_limit() -> RefOr<Schema> {
        integer(1, crate::authz::admin::MAX_LIST_LIMIT)
    }

    pub fn scope_type_or_empty() -> RefOr<Schema> {
        or_empty(ScopeType::schema())
    }

    pub fn scope_id_or_empty() -> RefOr<Schema> {
        or_empty(ScopeId::schema())
    }

    /// A scope id, or a number read as its decimal text.
    pub fn scope_id_or_number() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(ScopeId::schema())
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .into()
    }

    /// The scope types a membership can have.
    pub fn member_scope_type() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["COMMUNITY", "TEAM"]))
            .into()
    }

    fn short_text(max: usize) -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(max))
            .pattern(Some(format!(
                "^[^{CONTROL_CLASS}]*[^{WHITESPACE_CLASS}{CONTROL_CLASS}][^{CONTROL_CLASS}]*$"
            )))
            .into()
    }

    pub fn target_id() -> RefOr<Schema> {
        short_text(255)
    }

    pub fn audit_action() -> RefOr<Schema> {
        short_text(64)
    }

    pub fn search() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(200))
            .pattern(Some("^[^\\u0000]*$"))
            .into()
    }

    pub fn visibility() -> RefOr<Schema> {
        Visibility::schema()
    }

    pub fn rsvp_status() -> RefOr<Schema> {
        RsvpStatus::schema()
    }

    pub fn scope_type() -> RefOr<Schema> {
        ScopeType::schema()
    }

    pub fn scope_id_text() -> RefOr<Schema> {
        ScopeId::schema()
    }

    /// A stream sequence: a non-negative integer.
    pub fn stream_sequence() -> RefOr<Schema> {
        integer(0, i64::MAX)
    }

    /// A role by its full or short name, surrounding white space allowed.
    pub fn role() -> RefOr<Schema> {
        let names: Vec<String> = Role::ALL
            .iter()
            .flat_map(|r| {
                let full = r.name().replace('.', "\\.");
                let short = r.name().rsplit('.').next().unwrap_or_default().to_owned();
                [full, short]
            })
            .collect();
        pattern(format!(
            "^[{WHITESPACE_CLASS}]*({})[{WHITESPACE_CLASS}]*$",
            names.join("|")
        ))
    }

    /// A binding id: a non-blank string of at most 128 characters without
    /// control characters, or a non-negative integer (Access's ids).
    pub fn binding_id() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(128))
                    .pattern(Some(format!(
                        "^[^{CONTROL_CLASS}]*[^{WHITESPACE_CLASS}{CONTROL_CLASS}][^{CONTROL_CLASS}]*$"
                    ))),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .into()
    }
}

use field_schemas as fs;

const PAGE_LIMIT_DOC: &str = "1 to 250, default 100.";

/// The query of `event.list`.
pub const LIST_FIELDS: &[FieldSpec] = &[
    FieldSpec::optional(
        FROM,
        fs::datetime_text,
        "Events ending at or after this instant; unparsable: 400 `INVALID_FROM`. Send a `+` \
         offset as `%2B`; one that arrived as a space is read as `+`.",
    ),
    FieldSpec::optional(
        TO,
        fs::datetime_text,
        "Events starting at or before this instant; unparsable: 400 `INVALID_TO`.",
    ),
    FieldSpec::optional(
        SCOPE_TYPE,
        fs::scope_type_or_empty,
        "With the scope id: only that scope (both are needed; `\"\"` is not sent).",
    ),
    FieldSpec::optional(
        SCOPE_ID,
        fs::scope_id_or_empty,
        "With the scope type: only that scope (both are needed; `\"\"` is not sent).",
    ),
    FieldSpec::optional(LIMIT, fs::list_limit, PAGE_LIMIT_DOC),
    FieldSpec::optional(OFFSET, fs::list_offset, "0 or more, default 0."),
    FieldSpec::optional(
        Q,
        fs::search,
        "Case-insensitive substring of title, description or location text; blank is not sent.",
    ),
    FieldSpec::optional(VISIBILITY_FILTER, fs::visibility, "Only this visibility."),
    FieldSpec::optional(
        MY_RSVP,
        fs::rsvp_status,
        "Only events where the caller's RSVP is this.",
    ),
    FieldSpec::optional(
        CREATED_BY,
        fs::uuid_text,
        "Only events this user created (a UUID in any spelling).",
    ),
];

/// The query of `rsvp.list`.
pub const RSVP_LIST_FIELDS: &[FieldSpec] = &[
    FieldSpec::optional(LIMIT, fs::list_limit, PAGE_LIMIT_DOC),
    FieldSpec::optional(OFFSET, fs::page_offset, "0 or more, default 0."),
    FieldSpec::optional(STATUS, fs::rsvp_status, "Only RSVPs with this status."),
];

/// The query of `attendance.list`.
pub const PAGE_FIELDS: &[FieldSpec] = &[
    FieldSpec::optional(LIMIT, fs::list_limit, PAGE_LIMIT_DOC),
    FieldSpec::optional(OFFSET, fs::page_offset, "0 or more, default 0."),
];

/// The filters of `admin.roles.list`.
pub const ROLES_LIST_FIELDS: &[FieldSpec] = &[
    FieldSpec::optional(
        USER_ID,
        fs::uuid_text,
        "Only this user's bindings (a UUID in any spelling).",
    ),
    FieldSpec::optional(ROLE, fs::role, "Only this role (full or short name)."),
    FieldSpec::optional(
        SCOPE_TYPE,
        fs::scope_type,
        "Only bindings at scopes of this type.",
    ),
    FieldSpec::optional(
        SCOPE_ID,
        fs::scope_id_or_number,
        "Only bindings at this scope id.",
    ),
    FieldSpec::optional(LIMIT, fs::roles_limit, "1 to 1000, default 500."),
];

/// The body of `admin.roles.grant`.
pub const GRANT_FIELDS: &[FieldSpec] = &[
    FieldSpec::required(USER_ID, fs::uuid_text, "The user (a UUID in any spelling)."),
    FieldSpec::required(ROLE, fs::role, "The role, by its full or short name."),
    FieldSpec::optional(SCOPE_TYPE, fs::scope_type, "Default `TENANT`."),
    FieldSpec::optional(
        SCOPE_ID,
        fs::scope_id_or_number,
        "Required for COMMUNITY and TEAM; for TENANT it must be the tenant id (the default).",
    ),
];

/// What `admin.roles.revoke` reads: `bindingId`, or the grant's fields.
pub const REVOKE_FIELDS: &[FieldSpec] = &[
    FieldSpec::optional(
        BINDING_ID,
        fs::binding_id,
        "The binding to remove; not together with `userId` and `role`.",
    ),
    FieldSpec::optional(USER_ID, fs::uuid_text, "With `role`: the user."),
    FieldSpec::optional(ROLE, fs::role, "With `userId`: the role."),
    FieldSpec::optional(SCOPE_TYPE, fs::scope_type, "Default `TENANT`."),
    FieldSpec::optional(
        SCOPE_ID,
        fs::scope_id_or_number,
        "Required for COMMUNITY and TEAM; for TENANT it must be the tenant id (the default).",
    ),
];

/// The body of `membership.add` and `membership.remove`.
pub const MEMBERSHIP_FIELDS: &[FieldSpec] = &[
    FieldSpec::required(USER_ID, fs::uuid_text, "The user (a UUID in any spelling)."),
    FieldSpec::required(SCOPE_TYPE, fs::member_scope_type, "COMMUNITY or TEAM."),
    FieldSpec::required(
        SCOPE_ID,
        fs::scope_id_or_number,
        "The community or team (a UUID is stored in its canonical form).",
    ),
];

/// The filters of `membership.list`.
pub const MEMBERSHIP_LIST_FIELDS: &[FieldSpec] = &[
    FieldSpec::optional(USER_ID, fs::uuid_text, "Only this user's memberships."),
    FieldSpec::optional(
        SCOPE_TYPE,
        fs::member_scope_type,
        "Only memberships of this type.",
    ),
    FieldSpec::optional(
        SCOPE_ID,
        fs::scope_id_or_number,
        "Only memberships of this scope id.",
    ),
    FieldSpec::optional(LIMIT, fs::list_limit, PAGE_LIMIT_DOC),
    FieldSpec::optional(OFFSET, fs::page_offset, "0 or more, default 0."),
];

/// The filters of `admin.audit.list`.
pub const AUDIT_LIST_FIELDS: &[FieldSpec] = &[
    FieldSpec::optional(
        TENANT_ID,
        fs::uuid_text,
        "System admins: another tenant's log (default: the caller's tenant).",
    ),
    FieldSpec::optional(ACTOR_USER_ID, fs::uuid_text, "Only entries by this user."),
    FieldSpec::optional(
        TARGET_ID,
        fs::target_id,
        "Only entries about this target (a user id, a binding id, …).",
    ),
    FieldSpec::optional(
        ACTION,
        fs::audit_action,
        "Only this action, e.g. `role.granted`.",
    ),
    FieldSpec::optional(FROM, fs::datetime_text, "Entries at or after this time."),
    FieldSpec::optional(TO, fs::datetime_text, "Entries before this time."),
    FieldSpec::optional(LIMIT, fs::list_limit, PAGE_LIMIT_DOC),
    FieldSpec::optional(OFFSET, fs::page_offset, "0 or more, default 0."),
];

/// The scope `me.capabilities` answers for.
pub const CAPABILITY_FIELDS: &[FieldSpec] = &[
    FieldSpec::optional(SCOPE_TYPE, fs::scope_type, "Default `TENANT`."),
    FieldSpec::optional(
        SCOPE_ID,
        fs::scope_id_or_number,
        "Required for COMMUNITY and TEAM; for TENANT it must be the tenant id (the default).",
    ),
];

/// The query of `GET /stream`.
pub const STREAM_FIELDS: &[FieldSpec] = &[
    FieldSpec::optional(
        SCOPE_TYPE,
        fs::scope_type,
        "Only events of scopes of this type.",
    ),
    FieldSpec::optional(
        SCOPE_ID,
        fs::scope_id_text,
        "Only events of this scope (with `scopeType`).",
    ),
    FieldSpec::optional(
        EVENT_ID,
        fs::uuid_text,
        "Only this event (it must be visible).",
    ),
    FieldSpec::optional(
        LAST_EVENT_ID,
        fs::stream_sequence,
        "Resume after this message `id` (the `Last-Event-ID` header does the same).",
    ),
];

/// The body of `feed.create`.
pub const FEED_FIELDS: &[FieldSpec] = &[
    FieldSpec::optional(
        SCOPE_TYPE,
        fs::scope_type,
        "With `scopeId`: only events of this scope.",
    ),
    FieldSpec::optional(
        SCOPE_ID,
        fs::scope_id_text,
        "With `scopeType`; for TENANT it must be the tenant id.",
    ),
    FieldSpec::optional(
        MY_RSVP,
        fs::rsvp_status,
        "Only events the owner has an RSVP of this status on.",
    ),
];

/// The query of `event.import` (over NATS, the body with `ics`).
pub const IMPORT_FIELDS: &[FieldSpec] = &[
    FieldSpec::required(SCOPE_TYPE, fs::scope_type, "The scope the events go to."),
    FieldSpec::required(
        SCOPE_ID,
        fs::scope_id_text,
        "The scope the events go to; for TENANT it must be the tenant id.",
    ),
    FieldSpec::optional(
        VISIBILITY_FILTER,
        fs::visibility,
        "The visibility of every imported event (default `public`); it must fit the scope.",
    ),
];

/// The fields an operation reads beyond its path and its typed body.
pub fn fields_of(op: Op) -> &'static [FieldSpec] {
    match op {
        Op::MembershipAdd | Op::MembershipRemove => MEMBERSHIP_FIELDS,
        Op::MembershipList => MEMBERSHIP_LIST_FIELDS,
        Op::AdminAuditList => AUDIT_LIST_FIELDS,
        Op::MeCapabilities => CAPABILITY_FIELDS,
        Op::EventStream => STREAM_FIELDS,
        Op::EventList => LIST_FIELDS,
        Op::RsvpList => RSVP_LIST_FIELDS,
        Op::AttendanceList => PAGE_FIELDS,
        Op::AdminRolesList => ROLES_LIST_FIELDS,
        Op::AdminRolesGrant => GRANT_FIELDS,
        Op::AdminRolesRevoke => REVOKE_FIELDS,
        Op::FeedCreate => FEED_FIELDS,
        Op::EventImport => IMPORT_FIELDS,
        Op::FeedList | Op::FeedRevoke => &[],
        Op::EventCreate
        | Op::EventGet
        | Op::EventUpdate
        | Op::EventCancel
        | Op::RsvpSet
        | Op::RsvpClear
        | Op::AttendanceMark
        | Op::EventIcs
        | Op::DsarExport
        | Op::DsarErase
        | Op::SeriesGet
        | Op::SeriesIcs => &[],
        Op::RsvpApprove
        | Op::RsvpDecline
        | Op::EventStats
        | Op::RsvpExport
        | Op::AttendanceExport => &[],
    }
}

#[cfg(test)]
mod tests {
    //! Reading create, update and cancel bodies, and what the domain then
    //! does with them.

    use super::*;
    use crate::domain::{Capacity, Event, EventStatus, PatchOutcome};
    use chrono::{DateTime, Utc};
    use proptest::prelude::*;
    use serde_json::{Map, json};

    const TENANT: &str = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b";
    const USER: &str = "11111111-2222-4333-8444-555555555555";

    fn tenant() -> TenantId {
        TenantId::parse(TENANT).unwrap_or_else(|e| panic!("{e}"))
    }

    fn user() -> UserId {
        UserId::parse(USER).unwrap_or_else(|e| panic!("{e}"))
    }

    fn at(s: &str) -> DateTime<Utc> {
        crate::domain::time::parse_datetime_str(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn minimal() -> Value {
        json!({
            "scopeType": "COMMUNITY",
            "scopeId": "guild-1",
            "title": "Raid night",
            "startsAt": "2026-01-10T10:00:00Z",
            "endsAt": "2026-01-10T12:00:00Z",
        })
    }

    fn with(mut body: Value, key: &str, value: Value) -> Value {
        if let Some(obj) = body.as_object_mut() {
            obj.insert(key.to_owned(), value);
        }
        body
    }

    fn without(mut body: Value, key: &str) -> Value {
        if let Some(obj) = body.as_object_mut() {
            obj.remove(key);
        }
        body
    }

    fn create(body: &Value) -> NewEvent {
        new_event(tenant(), body).unwrap_or_else(|e| panic!("{body}: {e:?}"))
    }

    fn fields(result: Result<impl std::fmt::Debug, DomainError>) -> BTreeMap<String, String> {
        match result {
            Err(DomainError::Validation { fields }) => fields,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn event() -> Event {
        let body = with(minimal(), "capacity", json!(10));
        create(&body).into_event(EventId::new_v4(), user(), at("2026-01-01T00:00:00Z"))
    }

    fn patch(body: Value) -> EventPatch {
        super::patch(&body).unwrap_or_else(|e| panic!("{body}: {e:?}"))
    }

    fn apply(event: &Event, body: Value) -> Result<PatchOutcome, DomainError> {
        event.apply_patch(&patch(body), at("2026-01-02T00:00:00Z"), user())
    }

    #[test]
    fn creates_with_defaults() {
        let e = create(&minimal());
        assert_eq!(e.scope().scope_type(), ScopeType::Community);
        assert_eq!(e.scope().scope_id(), "guild-1");
        assert_eq!(e.title(), "Raid night");
        assert_eq!(e.description(), "");
        assert_eq!(e.location_text(), "");
        assert_eq!(e.location_url(), None);
        assert_eq!(e.game_id(), None);
        assert_eq!(e.visibility(), Visibility::Public);
        assert_eq!(e.capacity(), None);
        assert_eq!(e.tenant_id(), tenant());
        let stored = e.into_event(EventId::new_v4(), user(), at("2026-01-01T00:00:00Z"));
        assert_eq!(stored.version, 1);
        assert_eq!(stored.status, EventStatus::Scheduled);
        assert_eq!(stored.created_at, stored.updated_at);
        assert_eq!(stored.cancelled_at, None);
    }

    #[test]
    fn accepts_snake_case_and_prefers_camel_case() {
        let snake = json!({
            "scope_type": "TEAM",
            "scope_id": "team-9",
            "title": "T",
            "starts_at": "2026-01-10 10:00",
            "ends_at": "2026-01-10",
            "location_text": "Hall",
            "location_url": "https://example.com",
            "game_id": "cs2",
            "visibility": "team",
            "capacity": 3,
            "unknown": {"x": 1},
        });
        // 10:00 is after midnight: swap to get a valid range.
        let snake = with(snake, "ends_at", json!("2026-01-11"));
        let e = create(&snake);
        assert_eq!(e.scope().scope_type(), ScopeType::Team);
        assert_eq!(e.location_text(), "Hall");
        assert_eq!(
            e.location_url().map(|u| u.as_str()),
            Some("https://example.com")
        );
        assert_eq!(e.game_id().map(|g| g.as_str()), Some("cs2"));
        assert_eq!(e.capacity().map(Capacity::get), Some(3));
        assert_eq!(e.starts_at(), at("2026-01-10T10:00:00Z"));

        let both = with(
            with(minimal(), "title", json!("camel")),
            "scope_id",
            json!(7),
        );
        let both = with(both, "starts_at", json!("garbage"));
        let e = create(&both);
        assert_eq!(e.scope().scope_id(), "guild-1");
        assert_eq!(e.starts_at(), at("2026-01-10T10:00:00Z"));
    }

    #[test]
    fn reports_every_missing_field() {
        let f = fields(new_event(tenant(), &json!({})));
        let expected: BTreeMap<String, String> =
            ["endsAt", "scopeId", "scopeType", "startsAt", "title"]
                .into_iter()
                .map(|k| (k.to_owned(), REQUIRED.to_owned()))
                .collect();
        assert_eq!(f, expected);
    }

    #[test]
    fn reports_wrong_types() {
        let body = json!({
            "scopeType": "community",
            "scopeId": 42,
            "title": ["x"],
            "description": 5,
            "startsAt": true,
            "endsAt": "soon",
            "locationText": {},
            "locationUrl": "javascript:alert(1)",
            "gameId": 3,
            "visibility": "PUBLIC",
            "capacity": "10",
        });
        let f = fields(new_event(tenant(), &body));
        assert_eq!(f.len(), 11, "{f:?}");
        assert_eq!(f["scopeId"], "must be a string");
        assert_eq!(
            f["scopeType"],
            "scopeType must be one of: TENANT, COMMUNITY, TEAM"
        );
        assert_eq!(f["title"], "must be a string");
        assert_eq!(
            f["locationUrl"],
            "locationUrl must be an absolute http or https URL"
        );
        assert_eq!(f["capacity"], "must be an integer");
        assert!(f["startsAt"].contains("datetime"));
    }

    #[test]
    fn create_null_rules() {
        let body = with(minimal(), "description", json!(null));
        let body = with(body, "locationText", json!(null));
        let body = with(body, "locationUrl", json!(""));
        let body = with(body, "gameId", json!(null));
        let body = with(body, "capacity", json!(null));
        let e = create(&body);
        assert_eq!(e.description(), "");
        assert_eq!(e.location_text(), "");
        assert_eq!(e.location_url(), None);
        assert_eq!(e.game_id(), None);
        assert_eq!(e.capacity(), None);

        let e = create(&with(
            with(minimal(), "locationUrl", json!(null)),
            "gameId",
            json!(""),
        ));
        assert_eq!((e.location_url(), e.game_id()), (None, None));
        let e = create(&with(
            with(minimal(), "description", json!("")),
            "locationText",
            json!(""),
        ));
        assert_eq!(
            (e.description().as_str(), e.location_text().as_str()),
            ("", "")
        );

        let f = fields(new_event(
            tenant(),
            &with(minimal(), "visibility", json!(null)),
        ));
        assert_eq!(f["visibility"], CANNOT_BE_NULL);
        let f = fields(new_event(tenant(), &with(minimal(), "title", json!(null))));
        assert_eq!(f["title"], CANNOT_BE_NULL);
        let f = fields(new_event(tenant(), &with(minimal(), "capacity", json!(0))));
        assert_eq!(f["capacity"], "capacity must be a positive integer or null");
    }

    #[test]
    fn capacity_numbers() {
        let cap = |v: Value| new_event(tenant(), &with(minimal(), "capacity", v));
        assert_eq!(
            cap(json!(5.0)).map(|e| e.capacity().map(Capacity::get)),
            Ok(Some(5))
        );
        assert_eq!(fields(cap(json!(5.5)))["capacity"], "must be an integer");
        assert_eq!(
            fields(cap(json!(-1)))["capacity"],
            "capacity must be a positive integer or null"
        );
        assert_eq!(
            fields(cap(json!(u64::MAX)))["capacity"],
            "capacity must be at most 1000000"
        );
        assert_eq!(fields(cap(json!(true)))["capacity"], "must be an integer");
    }

    #[test]
    fn title_boundaries_count_characters() {
        let ok = create(&with(minimal(), "title", json!("ё".repeat(255))));
        assert_eq!(ok.title().chars().count(), 255);
        let f = fields(new_event(
            tenant(),
            &with(minimal(), "title", json!("ё".repeat(256))),
        ));
        assert_eq!(f["title"], "title must be at most 255 characters");
        let f = fields(new_event(tenant(), &with(minimal(), "title", json!("   "))));
        assert_eq!(f["title"], "title must not be empty");
    }

    #[test]
    fn visibility_must_fit_scope() {
        let body = with(minimal(), "visibility", json!("team"));
        let f = fields(new_event(tenant(), &body));
        assert_eq!(
            f["visibility"],
            "visibility team is not allowed for scopeType COMMUNITY"
        );
        // Reported together with other field errors.
        let f = fields(new_event(tenant(), &without(body, "title")));
        assert_eq!(f.len(), 2);
        assert!(
            create(&with(minimal(), "visibility", json!("community"))).visibility()
                == Visibility::Community
        );
        assert!(
            create(&with(minimal(), "visibility", json!("private"))).visibility()
                == Visibility::Private
        );
    }

    #[test]
    fn tenant_scope_is_the_tenant() {
        let body = with(
            with(minimal(), "scopeType", json!("TENANT")),
            "scopeId",
            json!(TENANT.to_uppercase()),
        );
        let e = create(&body);
        assert_eq!(e.scope(), &Scope::tenant(tenant()));
        let body = with(body, "scopeId", json!("guild-1"));
        let f = fields(new_event(tenant(), &body));
        assert_eq!(
            f["scopeId"],
            "for TENANT scope, scopeId must be the tenant id"
        );
    }

    #[test]
    fn time_range_is_checked_after_fields() {
        let same = with(minimal(), "endsAt", json!("2026-01-10T10:00:00Z"));
        assert_eq!(
            new_event(tenant(), &same),
            Err(DomainError::InvalidTimeRange)
        );
        let before = with(minimal(), "endsAt", json!("2026-01-10T09:59:59.999Z"));
        assert_eq!(
            new_event(tenant(), &before),
            Err(DomainError::InvalidTimeRange)
        );
        // Offsets are compared as instants: 12:30+03:00 is 09:30Z.
        let offset = with(minimal(), "endsAt", json!("2026-01-10T12:30:00+03:00"));
        assert_eq!(
            new_event(tenant(), &offset),
            Err(DomainError::InvalidTimeRange)
        );
        let offset = with(minimal(), "endsAt", json!("2026-01-10T13:30:00+03:00"));
        assert_eq!(create(&offset).ends_at(), at("2026-01-10T10:30:00Z"));
        // Field errors win over the time range.
        let both = with(same, "title", json!(""));
        assert!(matches!(
            new_event(tenant(), &both),
            Err(DomainError::Validation { .. })
        ));
    }

    #[test]
    fn non_objects_are_invalid_bodies() {
        for body in [json!(null), json!([]), json!("x"), json!(1)] {
            assert!(matches!(
                new_event(tenant(), &body),
                Err(DomainError::InvalidBody(_))
            ));
            assert!(matches!(
                super::patch(&body),
                Err(DomainError::InvalidBody(_))
            ));
        }
    }

    #[test]
    fn equal_requests_compare_equal() {
        let a = create(&minimal());
        let b = create(&json!({
            "scope_type": "COMMUNITY", "scope_id": "guild-1", "title": "Raid night",
            "startsAt": "2026-01-10T13:00:00+03:00", "endsAt": 1768046400,
            "visibility": "public", "description": null,
        }));
        assert_eq!(a, b);
        assert_ne!(a, create(&with(minimal(), "title", json!("Other"))));
    }

    #[test]
    fn patch_without_editable_keys_is_no_updates() {
        for body in [
            json!({}),
            json!({"foo": 1}),
            json!({"scopeType": "TEAM", "scopeId": "x", "scope_type": "TEAM"}),
        ] {
            assert_eq!(super::patch(&body), Err(DomainError::NoUpdates), "{body}");
        }
    }

    #[test]
    fn patch_null_rules() {
        let p = patch(json!({
            "title": null, "description": null, "locationText": null,
            "locationUrl": null, "gameId": "", "visibility": null, "capacity": null,
        }));
        assert!(p.title.is_null());
        assert!(p.description.is_null());
        assert!(p.location_url.is_null());
        assert!(p.game_id.is_null());
        assert_eq!(p.starts_at, Tri::Absent);
        assert_eq!(patch(json!({"locationUrl": ""})).location_url, Tri::Null);

        let f = fields(super::patch(&json!({"startsAt": null, "ends_at": null})));
        assert_eq!(f["startsAt"], "cannot be null");
        assert_eq!(f["endsAt"], "cannot be null");
        let f = fields(super::patch(
            &json!({"title": "", "capacity": 0, "visibility": "x"}),
        ));
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn ignored_nulls_change_nothing() {
        let e = event();
        let out = apply(&e, json!({"title": null, "visibility": null}));
        assert_eq!(
            out,
            Ok(PatchOutcome {
                event: e.clone(),
                changed: vec![],
                updated_by: user()
            })
        );
    }

    #[test]
    fn same_values_change_nothing() {
        let e = event();
        let out = apply(
            &e,
            json!({
                "title": "Raid night", "description": "", "startsAt": "2026-01-10T13:00:00+03:00",
                "ends_at": 1768046400, "locationText": null, "locationUrl": "", "gameId": null,
                "visibility": "public", "capacity": 10,
            }),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(out.changed.is_empty());
        assert!(!out.is_changed());
        assert_eq!(out.event, e);
        assert_eq!(out.event.version, 1);
        assert_eq!(out.event.updated_at, e.updated_at);
    }

    #[test]
    fn changes_are_listed_in_fixed_order() {
        let e = event();
        // Keys deliberately in a different order from the fixed one.
        let out = apply(
            &e,
            json!({
                "reminders": [60], "rsvp_approval": true, "maxGuests": 2,
                "rsvpClosesAt": "2026-01-10T20:00:00Z", "rsvpOpensAt": "2026-01-01T00:00:00Z",
                "capacity": null, "visibility": "community", "game_id": "dota",
                "location_url": "https://x.example", "locationText": "Hall",
                "endsAt": "2026-01-11T00:00:00Z", "startsAt": "2026-01-10T09:00:00Z",
                "description": "Bring snacks", "title": "Raid night 2",
                "timeZone": "Europe/Berlin",
            }),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(out.changed, EventField::ALL.to_vec());
        let names: Vec<&str> = out.changed.iter().map(|f| f.as_snake_str()).collect();
        assert_eq!(
            names,
            [
                "title",
                "description",
                "starts_at",
                "ends_at",
                "location_text",
                "location_url",
                "game_id",
                "visibility",
                "capacity",
                "rsvp_opens_at",
                "rsvp_closes_at",
                "max_guests",
                "rsvp_approval",
                "reminders",
                "time_zone"
            ]
        );
        assert_eq!(serde_json::to_value(&out.changed).ok(), Some(json!(names)));
        assert_eq!(out.event.version, 2);
        assert_eq!(out.event.updated_at, at("2026-01-02T00:00:00Z"));
        assert_eq!(out.event.created_at, e.created_at);
        assert_eq!(out.event.capacity, None);
        assert_eq!(out.event.title, "Raid night 2");
    }

    #[test]
    fn only_real_changes_are_listed() {
        let e = event();
        let out = apply(
            &e,
            json!({"title": "Raid night", "description": "New", "capacity": 10}),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(out.changed, vec![EventField::Description]);
        let out = out.event.apply_patch(
            &patch(json!({"description": null})),
            at("2026-01-03T00:00:00Z"),
            user(),
        );
        let out = out.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(out.changed, vec![EventField::Description]);
        assert_eq!(out.event.description, "");
        assert_eq!(out.event.version, 3);
    }

    #[test]
    fn patch_checks_the_merged_time_range() {
        let e = event();
        assert_eq!(
            apply(&e, json!({"startsAt": "2026-01-10T12:00:00Z"})),
            Err(DomainError::InvalidTimeRange)
        );
        assert_eq!(
            apply(&e, json!({"endsAt": "2026-01-10T09:00:00Z"})),
            Err(DomainError::InvalidTimeRange)
        );
        let moved = apply(
            &e,
            json!({"startsAt": "2026-01-10T13:00:00Z", "endsAt": "2026-01-10T14:00:00Z"}),
        );
        assert_eq!(
            moved.map(|o| o.changed),
            Ok(vec![EventField::StartsAt, EventField::EndsAt])
        );
    }

    #[test]
    fn patch_checks_visibility_against_scope() {
        let e = event();
        let f = fields(apply(&e, json!({"visibility": "team"})));
        assert_eq!(
            f["visibility"],
            "visibility team is not allowed for scopeType COMMUNITY"
        );
        // A stored misfit does not block editing other fields.
        let mut legacy = e.clone();
        legacy.visibility = Visibility::Team;
        assert!(apply(&legacy, json!({"title": "Renamed"})).is_ok());
    }

    #[test]
    fn hand_built_null_times_are_refused() {
        let p = EventPatch {
            starts_at: Tri::Null,
            ..EventPatch::default()
        };
        let f = fields(event().apply_patch(&p, at("2026-01-02T00:00:00Z"), user()));
        assert_eq!(f["startsAt"], "cannot be null");
        assert!(EventPatch::default().is_empty());
    }

    #[test]
    fn cancelled_events_cannot_be_patched() {
        let cancelled = event()
            .cancel(None, user(), at("2026-01-05T00:00:00Z"))
            .event;
        assert_eq!(
            apply(&cancelled, json!({"title": "x"})),
            Err(DomainError::EventCancelled)
        );
        assert_eq!(
            apply(&cancelled, json!({"title": null})),
            Err(DomainError::EventCancelled)
        );
    }

    #[test]
    fn cancel_once() {
        let e = event();
        let reason = CancelReason::parse("Venue closed").ok();
        let first = e.cancel(reason.clone(), user(), at("2026-01-05T00:00:00.123456789Z"));
        assert!(!first.already_cancelled);
        assert!(first.event.is_cancelled());
        assert_eq!(first.event.cancel_reason, reason);
        assert_eq!(first.event.cancelled_by, Some(user()));
        assert_eq!(
            first.event.cancelled_at,
            Some(at("2026-01-05T00:00:00.123456Z"))
        );
        assert_eq!(first.event.updated_at, at("2026-01-05T00:00:00.123456Z"));
        assert_eq!(first.event.version, 2);
        let second = first.event.cancel(None, user(), at("2026-01-06T00:00:00Z"));
        assert!(second.already_cancelled);
        assert_eq!(second.event, first.event);
        let blank = e.cancel(
            CancelReason::parse("  ").ok(),
            user(),
            at("2026-01-05T00:00:00Z"),
        );
        assert_eq!(blank.event.cancel_reason, None);
    }

    #[test]
    fn cancel_body() {
        assert_eq!(cancel_reason_of(&json!(null)), Ok(None));
        assert_eq!(cancel_reason_of(&json!({})), Ok(None));
        assert_eq!(cancel_reason_of(&json!({"reason": ""})), Ok(None));
        assert_eq!(cancel_reason_of(&json!({"reason": null})), Ok(None));
        assert_eq!(
            cancel_reason_of(&json!({"reason": "Rain"})),
            Ok(CancelReason::parse("Rain").ok())
        );
        assert_eq!(
            fields(cancel_reason_of(&json!({"reason": 1})))["reason"],
            "must be a string"
        );
        assert!(cancel_reason_of(&json!({"reason": "r".repeat(1001)})).is_err());
        assert!(matches!(
            cancel_reason_of(&json!([])),
            Err(DomainError::InvalidBody(_))
        ));
    }

    fn differs(a: &Event, b: &Event, field: EventField) -> bool {
        match field {
            EventField::Title => a.title != b.title,
            EventField::Description => a.description != b.description,
            EventField::StartsAt => a.starts_at != b.starts_at,
            EventField::EndsAt => a.ends_at != b.ends_at,
            EventField::LocationText => a.location_text != b.location_text,
            EventField::LocationUrl => a.location_url != b.location_url,
            EventField::GameId => a.game_id != b.game_id,
            EventField::Visibility => a.visibility != b.visibility,
            EventField::Capacity => a.capacity != b.capacity,
            EventField::TimeZone => a.time_zone != b.time_zone,
            EventField::Series => a.series != b.series,
            EventField::RsvpOpensAt => a.rules.opens_at != b.rules.opens_at,
            EventField::RsvpClosesAt => a.rules.closes_at != b.rules.closes_at,
            EventField::MaxGuests => a.rules.max_guests != b.rules.max_guests,
            EventField::RsvpApproval => a.rules.approval != b.rules.approval,
            EventField::Reminders => a.rules.reminders != b.rules.reminders,
        }
    }

    fn maybe(values: Vec<Value>) -> impl Strategy<Value = Option<Value>> {
        prop::option::of(prop::sample::select(values))
    }

    proptest! {
        #[test]
        fn changed_lists_exactly_the_differing_fields_in_order(
            title in maybe(vec![json!(null), json!("Raid night"), json!("Other")]),
            description in maybe(vec![json!(null), json!(""), json!("Text")]),
            starts in maybe(vec![json!("2026-01-10T10:00:00Z"), json!("2026-01-10T08:00:00Z")]),
            ends in maybe(vec![json!("2026-01-10T12:00:00Z"), json!("2026-01-10T15:00:00Z")]),
            location_text in maybe(vec![json!(null), json!(""), json!("Hall")]),
            location_url in maybe(vec![json!(null), json!(""), json!("https://a.example")]),
            game_id in maybe(vec![json!(null), json!(""), json!("cs2")]),
            visibility in maybe(vec![json!(null), json!("public"), json!("private"), json!("community")]),
            capacity in maybe(vec![json!(null), json!(10), json!(3)]),
        ) {
            let mut body = Map::new();
            for (k, v) in [
                ("title", title), ("description", description), ("startsAt", starts),
                ("endsAt", ends), ("locationText", location_text), ("locationUrl", location_url),
                ("gameId", game_id), ("visibility", visibility), ("capacity", capacity),
            ] {
                if let Some(v) = v {
                    body.insert(k.to_owned(), v);
                }
            }
            let body = Value::Object(body);
            let parsed = super::patch(&body);
            if body.as_object().is_some_and(Map::is_empty) {
                prop_assert_eq!(parsed, Err(DomainError::NoUpdates));
                return Ok(());
            }
            let p = parsed.unwrap_or_else(|e| panic!("{e:?}"));
            let e = event();
            let out = e.apply_patch(&p, at("2026-01-02T00:00:00Z"), user()).unwrap_or_else(|e| panic!("{e:?}"));
            let expected: Vec<EventField> =
                EventField::ALL.into_iter().filter(|f| differs(&e, &out.event, *f)).collect();
            prop_assert_eq!(&out.changed, &expected);
            if expected.is_empty() {
                prop_assert_eq!(&out.event, &e);
            } else {
                prop_assert_eq!(out.event.version, e.version + 1);
            }
        }
    }
}
