//! Reading request bodies: every key in camelCase or snake_case (camelCase
//! wins), ids canonicalised, and a clear error for everything malformed.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::app::AppError;
use crate::authz::Role;
use crate::authz::admin::{self, BindingFilter, BindingSpec, RevokeTarget};
use crate::domain::{
    DomainError, ErrorCode, EventId, RequestedRsvp, RsvpStatus, ScopeId, ScopeType, TenantId,
    UserId, Visibility, parse_datetime_str,
};
use crate::store::reads::ListFilter;

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 250;

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

/// The body as an object; no body (`null`) counts as an empty object.
pub fn object(body: &Value) -> Result<&Map<String, Value>, AppError> {
    match body {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(&EMPTY),
        _ => Err(DomainError::InvalidBody("Request body must be a JSON object".into()).into()),
    }
}

/// A key in camelCase or snake_case; an explicit null counts as absent.
pub fn field<'a>(obj: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    obj.get(camel)
        .filter(|v| !v.is_null())
        .or_else(|| obj.get(snake).filter(|v| !v.is_null()))
}

/// The targeted event: `id` or `eventId` (`event_id`).
pub fn event_id(obj: &Map<String, Value>) -> Result<EventId, AppError> {
    let value = obj
        .get("id")
        .filter(|v| !v.is_null())
        .or_else(|| field(obj, "eventId", "event_id"));
    let invalid = || AppError::rejected(ErrorCode::InvalidEventId, "Invalid event id");
    match value {
        Some(Value::String(s)) => EventId::parse(s).map_err(|_| invalid()),
        Some(_) => Err(invalid()),
        None => Err(DomainError::field("id", "field required").into()),
    }
}

/// A user id field (`userId`/`user_id`).
pub fn user_id(obj: &Map<String, Value>, message: &'static str) -> Result<UserId, AppError> {
    match field(obj, "userId", "user_id") {
        Some(Value::String(s)) => {
            UserId::parse(s).map_err(|_| AppError::rejected(ErrorCode::InvalidUserId, message))
        }
        Some(_) => Err(DomainError::field("userId", "must be a string").into()),
        None => Err(DomainError::field("userId", "field required").into()),
    }
}

/// The `status` of an RSVP request.
pub fn requested_rsvp(obj: &Map<String, Value>) -> Result<RequestedRsvp, AppError> {
    match obj.get("status") {
        Some(Value::String(s)) => s.parse().map_err(|e: crate::domain::FieldError| {
            DomainError::field("status", e.into_message()).into()
        }),
        Some(Value::Null) | None => Err(DomainError::field("status", "field required").into()),
        Some(_) => Err(DomainError::field("status", "must be a string").into()),
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn integer(
    fields: &mut BTreeMap<String, String>,
    name: &str,
    v: Option<&Value>,
    default: i64,
    min: i64,
    max: i64,
) -> i64 {
    let Some(v) = v else { return default };
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => n,
        _ => {
            let bound = if max == i64::MAX {
                format!("an integer ≥ {min}")
            } else {
                format!("an integer between {min} and {max}")
            };
            fields.insert(name.to_string(), format!("must be {bound}"));
            default
        }
    }
}

/// `limit` and `offset` of a paginated read.
pub fn pagination(obj: &Map<String, Value>) -> Result<(i64, i64), AppError> {
    let mut fields = BTreeMap::new();
    let limit = integer(
        &mut fields,
        "limit",
        field(obj, "limit", "limit"),
        DEFAULT_LIMIT,
        1,
        MAX_LIMIT,
    );
    let offset = integer(
        &mut fields,
        "offset",
        field(obj, "offset", "offset"),
        0,
        0,
        i64::MAX,
    );
    if fields.is_empty() {
        Ok((limit, offset))
    } else {
        Err(DomainError::Validation { fields }.into())
    }
}

/// The filters of `event.list` (the HTTP query parameters as fields).
pub fn list_filter(obj: &Map<String, Value>) -> Result<ListFilter, AppError> {
    let mut filter = ListFilter::default();
    if let Some(v) = field(obj, "from", "from") {
        let s = text(v).unwrap_or_default();
        filter.from = Some(parse_datetime_str(&s).map_err(|_| {
            AppError::rejected(ErrorCode::InvalidFrom, "from must be ISO datetime")
        })?);
    }
    if let Some(v) = field(obj, "to", "to") {
        let s = text(v).unwrap_or_default();
        filter.to =
            Some(parse_datetime_str(&s).map_err(|_| {
                AppError::rejected(ErrorCode::InvalidTo, "to must be ISO datetime")
            })?);
    }
    let mut fields = BTreeMap::new();
    let scope_type = match field(obj, "scopeType", "scope_type") {
        Some(Value::String(s)) if !s.is_empty() => match s.parse::<ScopeType>() {
            Ok(t) => Some(t),
            Err(e) => {
                fields.insert("scopeType".to_string(), e.into_message());
                None
            }
        },
        Some(Value::String(_)) | None => None,
        Some(_) => {
            fields.insert("scopeType".to_string(), "must be a string".to_string());
            None
        }
    };
    let scope_id = match field(obj, "scopeId", "scope_id") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::String(_)) | None => None,
        Some(_) => {
            fields.insert("scopeId".to_string(), "must be a string".to_string());
            None
        }
    };
    // The scope filter needs both halves, as in the original.
    if let (Some(t), Some(id)) = (scope_type, scope_id) {
        let id = crate::domain::ScopeId::parse(&id)
            .map(|s| s.as_str().to_string())
            .unwrap_or(id);
        filter.scope = Some((t, id));
    }
    if let Some(v) = field(obj, "q", "q") {
        match v {
            Value::String(s) if s.chars().count() > 200 => {
                fields.insert("q".into(), "must be at most 200 characters".into());
            }
            // Postgres cannot compare text holding U+0000 (it was a 500).
            Value::String(s) if s.contains('\0') => {
                fields.insert("q".into(), "must not contain NUL characters".into());
            }
            Value::String(s) if !s.trim().is_empty() => filter.q = Some(s.trim().to_string()),
            Value::String(_) => {}
            _ => {
                fields.insert("q".into(), "must be a string".into());
            }
        }
    }
    if let Some(v) = field(obj, "visibility", "visibility") {
        match text(v).map(|s| s.parse::<Visibility>()) {
            Some(Ok(vis)) => filter.visibility = Some(vis),
            Some(Err(e)) => {
                fields.insert("visibility".into(), e.into_message());
            }
            None => {
                fields.insert("visibility".into(), "must be a string".into());
            }
        }
    }
    if let Some(v) = field(obj, "myRsvp", "my_rsvp") {
        match text(v).map(|s| s.parse::<RsvpStatus>()) {
            Some(Ok(status)) => filter.my_rsvp = Some(status),
            Some(Err(e)) => {
                fields.insert("myRsvp".into(), e.into_message());
            }
            None => {
                fields.insert("myRsvp".into(), "must be a string".into());
            }
        }
    }
    if let Some(v) = field(obj, "createdBy", "created_by") {
        match text(v).map(|s| UserId::parse(&s)) {
            Some(Ok(u)) => filter.created_by = Some(u),
            _ => {
                fields.insert("createdBy".into(), "must be a user id (UUID)".into());
            }
        }
    }
    let limit = integer(
        &mut fields,
        "limit",
        field(obj, "limit", "limit"),
        DEFAULT_LIMIT,
        1,
        MAX_LIMIT,
    );
    let offset = integer(
        &mut fields,
        "offset",
        field(obj, "offset", "offset"),
        0,
        0,
        i64::MAX / 2,
    );
    filter.limit = limit;
    filter.offset = offset;
    if fields.is_empty() {
        Ok(filter)
    } else {
        Err(DomainError::Validation { fields }.into())
    }
}

// ---------------------------------------------------------------------------
// Role administration (`admin.roles.*`)
// ---------------------------------------------------------------------------

const ROLE_NAMES: &str = "participant, organizer, events.participant, events.organizer";

/// A UUID field; a malformed one is noted in `fields`.
fn uuid_field(
    fields: &mut BTreeMap<String, String>,
    obj: &Map<String, Value>,
    camel: &str,
    snake: &str,
    required: bool,
) -> Option<uuid::Uuid> {
    match field(obj, camel, snake) {
        Some(Value::String(s)) => match uuid::Uuid::parse_str(s.trim()) {
            Ok(u) => Some(u),
            Err(_) => {
                fields.insert(camel.into(), "must be a UUID".into());
                None
            }
        },
        Some(_) => {
            fields.insert(camel.into(), "must be a string (a UUID)".into());
            None
        }
        None => {
            if required {
                fields.insert(camel.into(), "field required".into());
            }
            None
        }
    }
}

/// `role`: `participant`, `organizer` or their full names.
fn role_field(
    fields: &mut BTreeMap<String, String>,
    obj: &Map<String, Value>,
    required: bool,
) -> Option<Role> {
    match field(obj, "role", "role") {
        Some(Value::String(s)) => Role::from_name(s.trim()).or_else(|| {
            fields.insert("role".into(), format!("must be one of: {ROLE_NAMES}"));
            None
        }),
        Some(_) => {
            fields.insert("role".into(), "must be a string".into());
            None
        }
        None => {
            if required {
                fields.insert("role".into(), "field required".into());
            }
            None
        }
    }
}

/// `scopeType` and the raw `scopeId`.
fn scope_fields(
    fields: &mut BTreeMap<String, String>,
    obj: &Map<String, Value>,
) -> (Option<ScopeType>, Option<String>) {
    let scope_type = match field(obj, "scopeType", "scope_type") {
        Some(Value::String(s)) => s
            .parse::<ScopeType>()
            .map_err(|e| fields.insert("scopeType".into(), e.into_message()))
            .ok(),
        Some(_) => {
            fields.insert("scopeType".into(), "must be a string".into());
            None
        }
        None => None,
    };
    let scope_id = match field(obj, "scopeId", "scope_id") {
        Some(v) => match text(v) {
            Some(s) => Some(s),
            None => {
                fields.insert("scopeId".into(), "must be a string".into());
                None
            }
        },
        None => None,
    };
    (scope_type, scope_id)
}

fn validated<T>(fields: BTreeMap<String, String>, value: T) -> Result<T, AppError> {
    if fields.is_empty() {
        Ok(value)
    } else {
        Err(DomainError::Validation { fields }.into())
    }
}

/// The filters of `admin.roles.list` (all optional; `limit` 1..=1000,
/// default 500).
pub fn binding_filter(obj: &Map<String, Value>) -> Result<BindingFilter, AppError> {
    let mut fields = BTreeMap::new();
    let user = uuid_field(&mut fields, obj, "userId", "user_id", false);
    let role = role_field(&mut fields, obj, false);
    let (scope_type, scope_id) = scope_fields(&mut fields, obj);
    let scope_id = scope_id.and_then(|id| {
        ScopeId::parse(&id)
            .map_err(|e| fields.insert("scopeId".into(), e.into_message()))
            .ok()
    });
    let limit = integer(
        &mut fields,
        "limit",
        field(obj, "limit", "limit"),
        admin::DEFAULT_LIST_LIMIT,
        1,
        admin::MAX_LIST_LIMIT,
    );
    validated(
        fields,
        BindingFilter {
            user,
            role,
            scope_type,
            scope_id,
            limit,
        },
    )
}

/// The binding of `admin.roles.grant` (and of a revoke without `bindingId`):
/// `userId`, `role`, and a scope that defaults to the tenant.
pub fn binding_spec(obj: &Map<String, Value>, tenant: TenantId) -> Result<BindingSpec, AppError> {
    let mut fields = BTreeMap::new();
    let user = uuid_field(&mut fields, obj, "userId", "user_id", true);
    let role = role_field(&mut fields, obj, true);
    let (scope_type, scope_id) = scope_fields(&mut fields, obj);
    let scope = if fields.contains_key("scopeType") || fields.contains_key("scopeId") {
        None
    } else {
        admin::binding_scope(tenant, scope_type, scope_id.as_deref())
            .map_err(|(name, message)| fields.insert(name.into(), message))
            .ok()
    };
    match (user, role, scope) {
        (Some(user), Some(role), Some(scope)) if fields.is_empty() => {
            Ok(BindingSpec { user, role, scope })
        }
        _ => Err(DomainError::Validation { fields }.into()),
    }
}

/// What `admin.roles.revoke` removes: `bindingId`, or `userId` + `role`
/// (+ scope, default the tenant), not both.
pub fn revoke_target(obj: &Map<String, Value>, tenant: TenantId) -> Result<RevokeTarget, AppError> {
    let Some(id) = field(obj, "bindingId", "binding_id") else {
        return binding_spec(obj, tenant).map(RevokeTarget::Binding);
    };
    let mut fields = BTreeMap::new();
    if field(obj, "userId", "user_id").is_some() || field(obj, "role", "role").is_some() {
        fields.insert(
            "bindingId".into(),
            "give either bindingId or userId and role, not both".into(),
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
        _ => {
            fields.insert(
                "bindingId".into(),
                "must be a binding id (a non-empty string of at most 128 characters)".into(),
            );
            None
        }
    };
    match id {
        Some(id) if fields.is_empty() => Ok(RevokeTarget::Id(id)),
        _ => Err(DomainError::Validation { fields }.into()),
    }
}
