//! The application layer's one error type, and its rendering as the error
//! envelope shared by HTTP and NATS. Internal details are logged, never
//! returned.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::auth::AuthError;
use crate::domain::{DomainError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// A 4xx whose code and message are the whole story (bad id, bad query…).
    #[error("{message}")]
    Rejected { code: ErrorCode, message: String },
    #[error("Event not found")]
    NotFound,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("A create with this X-Request-Id was already made with a different body")]
    IdempotencyConflict,
    #[error("{message}")]
    Unavailable { code: ErrorCode, message: String },
    /// A calendar that cannot be read (422), with the line of the problem.
    #[error("line {line}: {message}")]
    Calendar { line: usize, message: String },
    /// Too many requests for one thing (a feed token) in too little time.
    #[error("Too many requests; retry in {retry_after} s")]
    TooManyRequests { retry_after: u32 },
    /// Anything unexpected. The cause is logged; callers see a generic message.
    #[error("internal error: {0}")]
    Internal(String),
    /// The answer another instance gave to a write it ran for this one,
    /// passed on as the caller would have had it from that instance.
    #[error("{}", .0.message)]
    Relayed(Box<Relayed>),
}

/// An error as callers see it: everything its envelope and status say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Relayed {
    pub status: u16,
    pub code: ErrorCode,
    pub message: String,
    pub details: Value,
    pub retry_after: Option<u32>,
}

impl From<&AppError> for Relayed {
    fn from(e: &AppError) -> Self {
        Self {
            status: e.status(),
            code: e.code(),
            message: e.public_message(),
            details: e.details(),
            retry_after: e.retry_after(),
        }
    }
}

impl AppError {
    pub fn rejected(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError::Rejected {
            code,
            message: message.into(),
        }
    }

    pub fn internal(context: &str, cause: impl std::fmt::Display) -> Self {
        AppError::Internal(format!("{context}: {cause}"))
    }

    /// A failed database call: 503 `SERVICE_UNAVAILABLE` when Postgres could
    /// not be reached (the caller retries), else internal.
    pub fn database(context: &str, e: sqlx::Error) -> Self {
        if unreachable(&e) {
            tracing::debug!(context, error = %e, "Postgres unreachable");
            Self::database_unreachable()
        } else {
            Self::internal(context, e)
        }
    }

    fn database_unreachable() -> Self {
        AppError::Unavailable {
            code: ErrorCode::ServiceUnavailable,
            message: "The database could not be reached. Retry the request: a change may or may \
                      not have been made, and making it again is safe (a create with the same \
                      X-Request-Id returns the first result)"
                .into(),
        }
    }

    /// The same answer for another caller who waited on the same work (a
    /// load or a commit shared by several requests).
    pub fn for_another_caller(&self, context: &str) -> Self {
        match self {
            AppError::Unavailable { code, message } => AppError::Unavailable {
                code: *code,
                message: message.clone(),
            },
            other => Self::internal(context, other),
        }
    }

    /// Seconds a caller should wait before retrying, for answers that say
    /// "not now" (503).
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            AppError::TooManyRequests { retry_after } => Some(*retry_after),
            AppError::Relayed(r) => r.retry_after,
            _ => (self.status() == 503).then_some(1),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            AppError::Auth(e) => e.code(),
            AppError::Domain(e) => e.code(),
            AppError::Rejected { code, .. } | AppError::Unavailable { code, .. } => *code,
            AppError::NotFound => ErrorCode::NotFound,
            AppError::Forbidden(_) => ErrorCode::Forbidden,
            AppError::IdempotencyConflict => ErrorCode::IdempotencyConflict,
            AppError::Calendar { .. } => ErrorCode::ValidationError,
            AppError::TooManyRequests { .. } => ErrorCode::RateLimited,
            AppError::Internal(_) => ErrorCode::InternalError,
            AppError::Relayed(r) => r.code,
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            AppError::Auth(e) => e.http_status(),
            AppError::Relayed(r) => r.status,
            _ => self.code().http_status(),
        }
    }

    /// The message callers see.
    pub fn public_message(&self) -> String {
        match self {
            AppError::Auth(e) => e.message().to_string(),
            AppError::Domain(e) => e.message(),
            AppError::Internal(_) => {
                "Internal error; it has been logged with the request id".to_string()
            }
            AppError::Relayed(r) => r.message.clone(),
            other => other.to_string(),
        }
    }

    pub fn details(&self) -> Value {
        match self {
            AppError::Domain(e) => e.details(),
            AppError::Calendar { line, message } => json!({
                "fields": {"ics": format!("line {line}: {message}")},
                "line": line,
            }),
            AppError::Relayed(r) => r.details.clone(),
            _ => json!({}),
        }
    }

    /// Whether this is the service's fault, to be logged at error level here.
    pub fn is_internal(&self) -> bool {
        match self {
            AppError::Internal(_) => true,
            // The instance that ran it has logged the cause.
            AppError::Relayed(_) | AppError::Unavailable { .. } => false,
            _ => self.status() >= 500,
        }
    }

    /// `{"error":{"code","message","details","request_id"}}`.
    pub fn envelope(&self, request_id: Option<&str>) -> Value {
        serde_json::to_value(ErrorEnvelope {
            error: ErrorBody {
                code: self.code(),
                message: self.public_message(),
                details: self.details(),
                request_id: request_id.map(str::to_owned),
            },
        })
        .unwrap_or_else(|_| json!({}))
    }
}

/// Every error, on every route and on NATS. The BFF nests it under
/// `details.upstream_body`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// For people; `code` is the stable part.
    pub message: String,
    /// Always an object: `{}`, or for `VALIDATION_ERROR`
    /// `{"fields": {"<camelCase field>": "<message>"}}` with every bad field
    /// (and, for a calendar that cannot be read, `line`: where, from 1).
    #[schema(schema_with = details_schema)]
    pub details: Value,
    /// The request's `X-Request-Id`; `null` when it had none.
    #[schema(required = true)]
    pub request_id: Option<String>,
}

fn details_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    let message = ObjectBuilder::new().schema_type(Type::String);
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "fields",
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(AdditionalProperties::RefOr(message.into()))),
        )
        .property(
            "line",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1)),
        )
        .build()
        .into()
}

// The codes are the domain's; their schema lists every one.
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .description(Some(
                "Machine-readable and stable. Each response of the document lists the codes \
                 its operation answers with at that status.",
            ))
            .into()
    }
}

impl ToSchema for ErrorCode {}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::database("database", e)
    }
}

/// Whether `e` says Postgres could not be reached or the connection was lost
/// (rather than that the statement failed): refused, reset or timed-out
/// connections, a pool that found no connection in time, the server shutting
/// down or refusing connections. A request that fails so may succeed when
/// retried; a write may or may not have been committed (the reply to a
/// COMMIT can be what was lost).
pub fn unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Class 08: connection exceptions; 57P01-57P03: shutting down or
        // starting up; 53300: no connection slot left.
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::unreachable;

    #[test]
    fn lost_connections_are_unreachable_and_failed_statements_are_not() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(unreachable(&sqlx::Error::Io(refused)));
        assert!(unreachable(&sqlx::Error::PoolTimedOut));
        assert!(unreachable(&sqlx::Error::Protocol(
            "unexpected end of file".into()
        )));
        assert!(!unreachable(&sqlx::Error::RowNotFound));
        assert!(!unreachable(&sqlx::Error::ColumnNotFound("x".into())));
    }
}
