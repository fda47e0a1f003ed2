//! Error codes shared by every face of the service, and the errors the pure
//! domain layer can produce.
//!
//! The codes are a wire contract: the HTTP envelope, the NATS
//! `Nats-Service-Error` header and the logs all carry `ErrorCode::as_str()`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Every error code the service answers with. The first group is every code
/// the previous service had, so clients keep recognising them; the second
/// is ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    MissingRequestId,
    MissingTenantContext,
    Unauthorized,
    Unauthenticated,
    InvalidUserId,
    InvalidEventId,
    InvalidSeriesId,
    NotFound,
    Forbidden,
    InvalidFrom,
    InvalidTo,
    InvalidTimeRange,
    NoUpdates,
    ServerError,
    InvalidTenantId,
    InvalidBody,
    InvalidQuery,
    ValidationError,
    EventCancelled,
    RsvpClosed,
    NotEnoughSeats,
    IdempotencyConflict,
    Conflict,
    MembershipAuthorityIsPortal,
    PayloadTooLarge,
    MethodNotAllowed,
    UnsupportedMediaType,
    AccessUnavailable,
    PortalUnavailable,
    ServiceUnavailable,
    TooManyStreams,
    RateLimited,
    Timeout,
    InternalError,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 34] = [
        ErrorCode::MissingRequestId,
        ErrorCode::MissingTenantContext,
        ErrorCode::Unauthorized,
        ErrorCode::Unauthenticated,
        ErrorCode::InvalidUserId,
        ErrorCode::InvalidEventId,
        ErrorCode::InvalidSeriesId,
        ErrorCode::NotFound,
        ErrorCode::Forbidden,
        ErrorCode::InvalidFrom,
        ErrorCode::InvalidTo,
        ErrorCode::InvalidTimeRange,
        ErrorCode::NoUpdates,
        ErrorCode::ServerError,
        ErrorCode::InvalidTenantId,
        ErrorCode::InvalidBody,
        ErrorCode::InvalidQuery,
        ErrorCode::ValidationError,
        ErrorCode::EventCancelled,
        ErrorCode::RsvpClosed,
        ErrorCode::NotEnoughSeats,
        ErrorCode::IdempotencyConflict,
        ErrorCode::Conflict,
        ErrorCode::MembershipAuthorityIsPortal,
        ErrorCode::PayloadTooLarge,
        ErrorCode::MethodNotAllowed,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::AccessUnavailable,
        ErrorCode::PortalUnavailable,
        ErrorCode::ServiceUnavailable,
        ErrorCode::TooManyStreams,
        ErrorCode::RateLimited,
        ErrorCode::Timeout,
        ErrorCode::InternalError,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MissingRequestId => "MISSING_REQUEST_ID",
            ErrorCode::MissingTenantContext => "MISSING_TENANT_CONTEXT",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::InvalidUserId => "INVALID_USER_ID",
            ErrorCode::InvalidEventId => "INVALID_EVENT_ID",
            ErrorCode::InvalidSeriesId => "INVALID_SERIES_ID",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::InvalidFrom => "INVALID_FROM",
            ErrorCode::InvalidTo => "INVALID_TO",
            ErrorCode::InvalidTimeRange => "INVALID_TIME_RANGE",
            ErrorCode::NoUpdates => "NO_UPDATES",
            ErrorCode::ServerError => "SERVER_ERROR",
            ErrorCode::InvalidTenantId => "INVALID_TENANT_ID",
            ErrorCode::InvalidBody => "INVALID_BODY",
            ErrorCode::InvalidQuery => "INVALID_QUERY",
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::EventCancelled => "EVENT_CANCELLED",
            ErrorCode::RsvpClosed => "RSVP_CLOSED",
            ErrorCode::NotEnoughSeats => "NOT_ENOUGH_SEATS",
            ErrorCode::IdempotencyConflict => "IDEMPOTENCY_CONFLICT",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::MembershipAuthorityIsPortal => "MEMBERSHIP_AUTHORITY_IS_PORTAL",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ErrorCode::AccessUnavailable => "ACCESS_UNAVAILABLE",
            ErrorCode::PortalUnavailable => "PORTAL_UNAVAILABLE",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::TooManyStreams => "TOO_MANY_STREAMS",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::InternalError => "INTERNAL_ERROR",
        }
    }

    /// The HTTP status; NATS replies carry the same number in
    /// `Nats-Service-Error-Code`.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::MissingRequestId
            | ErrorCode::MissingTenantContext
            | ErrorCode::InvalidUserId
            | ErrorCode::InvalidEventId
            | ErrorCode::InvalidSeriesId
            | ErrorCode::InvalidFrom
            | ErrorCode::InvalidTo
            | ErrorCode::InvalidTimeRange
            | ErrorCode::NoUpdates
            | ErrorCode::InvalidTenantId
            | ErrorCode::InvalidBody
            | ErrorCode::InvalidQuery => 400,
            ErrorCode::Unauthorized | ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::EventCancelled
            | ErrorCode::RsvpClosed
            | ErrorCode::NotEnoughSeats
            | ErrorCode::IdempotencyConflict
            | ErrorCode::Conflict
            | ErrorCode::MembershipAuthorityIsPortal => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::ValidationError => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::ServerError | ErrorCode::InternalError => 500,
            ErrorCode::AccessUnavailable
            | ErrorCode::PortalUnavailable
            | ErrorCode::ServiceUnavailable
            | ErrorCode::TooManyStreams => 503,
            ErrorCode::Timeout => 504,
        }
    }

    /// A generic user-facing message, the previous service's wording where
    /// it had one. Callers with a more precise message (the previous service
    /// used several for `UNAUTHORIZED` and `INVALID_USER_ID`) should prefer
    /// their own.
    pub const fn default_message(self) -> &'static str {
        match self {
            ErrorCode::MissingRequestId => "X-Request-Id is required",
            ErrorCode::MissingTenantContext => "Tenant headers required",
            ErrorCode::Unauthorized => "Invalid internal signature",
            ErrorCode::Unauthenticated => "X-User-Id is required",
            ErrorCode::InvalidUserId => "Invalid user id",
            ErrorCode::InvalidEventId => "Invalid event id",
            ErrorCode::InvalidSeriesId => "Invalid series id",
            ErrorCode::NotFound => "Event not found",
            ErrorCode::Forbidden => "Permission denied",
            ErrorCode::InvalidFrom => "from must be ISO datetime",
            ErrorCode::InvalidTo => "to must be ISO datetime",
            ErrorCode::InvalidTimeRange => "starts_at must be before ends_at",
            ErrorCode::NoUpdates => "Provide at least one editable field",
            ErrorCode::ServerError => "Server error",
            ErrorCode::InvalidTenantId => "X-Tenant-Id must be a UUID",
            ErrorCode::InvalidBody => "Cannot parse request body",
            ErrorCode::InvalidQuery => "Invalid query parameters",
            ErrorCode::ValidationError => "Validation failed",
            ErrorCode::EventCancelled => "Event is cancelled",
            ErrorCode::RsvpClosed => "RSVPs are not taken now",
            ErrorCode::NotEnoughSeats => "Not enough free seats for the larger party",
            ErrorCode::IdempotencyConflict => {
                "X-Request-Id was already used for a different request"
            }
            ErrorCode::Conflict => "Conflict",
            ErrorCode::MembershipAuthorityIsPortal => {
                "Memberships are Portal's to manage while Access and Portal are the authority"
            }
            ErrorCode::PayloadTooLarge => "Payload too large",
            ErrorCode::MethodNotAllowed => "Method not allowed",
            ErrorCode::UnsupportedMediaType => "Unsupported media type",
            ErrorCode::AccessUnavailable => "Access service unavailable",
            ErrorCode::PortalUnavailable => "Portal service unavailable",
            ErrorCode::ServiceUnavailable => "Service unavailable",
            ErrorCode::TooManyStreams => "Too many live streams",
            ErrorCode::RateLimited => "Too many requests",
            ErrorCode::Timeout => "Timed out",
            ErrorCode::InternalError => "Internal error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of `ErrorCode::from_str`: the string is not a known code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code {0:?}")]
pub struct UnknownErrorCode(pub String);

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownErrorCode(s.to_owned()))
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What the pure domain layer can refuse. Anything about identity,
/// permissions or storage belongs to the layers above.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The body is not the shape an operation needs at all (not an object).
    #[error("{0}")]
    InvalidBody(String),
    /// Schema errors, keyed by camelCase field name.
    #[error("validation failed: {fields:?}")]
    Validation { fields: BTreeMap<String, String> },
    #[error("starts_at must be before ends_at")]
    InvalidTimeRange,
    #[error("Provide at least one editable field")]
    NoUpdates,
    #[error("Event is cancelled")]
    EventCancelled,
    /// An RSVP outside the event's RSVP window.
    #[error("RSVPs are not taken now")]
    RsvpClosed,
    /// More guests on a `going` RSVP than there are free seats for.
    #[error("Not enough free seats for the larger party")]
    NotEnoughSeats,
}

impl DomainError {
    /// A validation error about one field.
    pub fn field(name: impl Into<String>, message: impl Into<String>) -> Self {
        let mut fields = BTreeMap::new();
        fields.insert(name.into(), message.into());
        DomainError::Validation { fields }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            DomainError::InvalidBody(_) => ErrorCode::InvalidBody,
            DomainError::Validation { .. } => ErrorCode::ValidationError,
            DomainError::InvalidTimeRange => ErrorCode::InvalidTimeRange,
            DomainError::NoUpdates => ErrorCode::NoUpdates,
            DomainError::EventCancelled => ErrorCode::EventCancelled,
            DomainError::RsvpClosed => ErrorCode::RsvpClosed,
            DomainError::NotEnoughSeats => ErrorCode::NotEnoughSeats,
        }
    }

    pub fn http_status(&self) -> u16 {
        self.code().http_status()
    }

    /// The message for the error envelope.
    pub fn message(&self) -> String {
        match self {
            DomainError::InvalidBody(message) => message.clone(),
            // Spelling the fields out helps a curl user; clients read
            // `details.fields` instead.
            DomainError::Validation { fields } => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(field, message)| format!("{field}: {message}"))
                    .collect();
                if parts.is_empty() {
                    ErrorCode::ValidationError.default_message().to_owned()
                } else {
                    format!("Validation failed: {}", parts.join("; "))
                }
            }
            DomainError::InvalidTimeRange
            | DomainError::NoUpdates
            | DomainError::EventCancelled
            | DomainError::RsvpClosed
            | DomainError::NotEnoughSeats => self.code().default_message().to_owned(),
        }
    }

    /// The envelope's `details`: always an object.
    pub fn details(&self) -> serde_json::Value {
        match self {
            DomainError::Validation { fields } => {
                let fields: serde_json::Map<String, serde_json::Value> = fields
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect();
                serde_json::json!({ "fields": fields })
            }
            _ => serde_json::Value::Object(serde_json::Map::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate {code}");
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(code));
            assert_eq!(serde_json::to_value(code).ok(), Some(json!(code.as_str())));
        }
        assert!("not_found".parse::<ErrorCode>().is_err());
    }

    #[test]
    fn statuses_match_the_contract() {
        let expected = [
            ("MISSING_REQUEST_ID", 400),
            ("MISSING_TENANT_CONTEXT", 400),
            ("UNAUTHORIZED", 401),
            ("UNAUTHENTICATED", 401),
            ("INVALID_USER_ID", 400),
            ("INVALID_EVENT_ID", 400),
            ("INVALID_SERIES_ID", 400),
            ("NOT_FOUND", 404),
            ("FORBIDDEN", 403),
            ("INVALID_FROM", 400),
            ("INVALID_TO", 400),
            ("INVALID_TIME_RANGE", 400),
            ("NO_UPDATES", 400),
            ("SERVER_ERROR", 500),
            ("INVALID_TENANT_ID", 400),
            ("INVALID_BODY", 400),
            ("INVALID_QUERY", 400),
            ("VALIDATION_ERROR", 422),
            ("EVENT_CANCELLED", 409),
            ("RSVP_CLOSED", 409),
            ("NOT_ENOUGH_SEATS", 409),
            ("IDEMPOTENCY_CONFLICT", 409),
            ("CONFLICT", 409),
            ("MEMBERSHIP_AUTHORITY_IS_PORTAL", 409),
            ("PAYLOAD_TOO_LARGE", 413),
            ("METHOD_NOT_ALLOWED", 405),
            ("UNSUPPORTED_MEDIA_TYPE", 415),
            ("ACCESS_UNAVAILABLE", 503),
            ("PORTAL_UNAVAILABLE", 503),
            ("SERVICE_UNAVAILABLE", 503),
            ("TOO_MANY_STREAMS", 503),
            ("RATE_LIMITED", 429),
            ("TIMEOUT", 504),
            ("INTERNAL_ERROR", 500),
        ];
        assert_eq!(expected.len(), ErrorCode::ALL.len());
        for (name, status) in expected {
            let code: ErrorCode = match name.parse() {
                Ok(code) => code,
                Err(e) => panic!("{e}"),
            };
            assert_eq!(code.http_status(), status, "{name}");
        }
    }

    #[test]
    fn domain_errors_map_to_codes_and_messages() {
        assert_eq!(
            DomainError::InvalidTimeRange.code().as_str(),
            "INVALID_TIME_RANGE"
        );
        assert_eq!(
            DomainError::InvalidTimeRange.message(),
            "starts_at must be before ends_at"
        );
        assert_eq!(
            DomainError::NoUpdates.message(),
            "Provide at least one editable field"
        );
        assert_eq!(DomainError::NoUpdates.http_status(), 400);
        assert_eq!(DomainError::EventCancelled.http_status(), 409);
        assert_eq!(DomainError::InvalidBody("x".into()).http_status(), 400);
        assert_eq!(DomainError::InvalidTimeRange.details(), json!({}));
    }

    #[test]
    fn validation_details_list_fields() {
        let mut fields = BTreeMap::new();
        fields.insert("title".to_owned(), "field required".to_owned());
        fields.insert("capacity".to_owned(), "bad".to_owned());
        let err = DomainError::Validation { fields };
        assert_eq!(err.http_status(), 422);
        assert_eq!(
            err.details(),
            json!({"fields": {"title": "field required", "capacity": "bad"}})
        );
        assert_eq!(
            err.message(),
            "Validation failed: capacity: bad; title: field required"
        );
    }
}
