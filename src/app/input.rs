//! Reading request bodies: every key in camelCase or snake_case (camelCase
//! wins), ids canonicalised, and a clear error for everything malformed.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::app::AppError;
use crate::domain::{
    DomainError, ErrorCode, EventId, RequestedRsvp, RsvpStatus, ScopeType, UserId, Visibility,
    parse_datetime_str,
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
