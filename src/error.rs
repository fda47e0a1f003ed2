//! The application layer's one error type, and its rendering as the error
//! envelope shared by HTTP and NATS. Internal details are logged, never
//! returned.

use serde_json::{Value, json};

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
    /// Anything unexpected. The cause is logged; callers see a generic message.
    #[error("internal error: {0}")]
    Internal(String),
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

    pub fn code(&self) -> ErrorCode {
        match self {
            AppError::Auth(e) => e.code(),
            AppError::Domain(e) => e.code(),
            AppError::Rejected { code, .. } | AppError::Unavailable { code, .. } => *code,
            AppError::NotFound => ErrorCode::NotFound,
            AppError::Forbidden(_) => ErrorCode::Forbidden,
            AppError::IdempotencyConflict => ErrorCode::IdempotencyConflict,
            AppError::Internal(_) => ErrorCode::InternalError,
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            AppError::Auth(e) => e.http_status(),
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
            other => other.to_string(),
        }
    }

    pub fn details(&self) -> Value {
        match self {
            AppError::Domain(e) => e.details(),
            _ => json!({}),
        }
    }

    /// Whether this is the service's fault (logged at error level).
    pub fn is_internal(&self) -> bool {
        matches!(self, AppError::Internal(_))
            || self.status() >= 500 && !matches!(self, AppError::Unavailable { .. })
    }

    /// `{"error":{"code","message","details","request_id"}}`.
    pub fn envelope(&self, request_id: Option<&str>) -> Value {
        json!({
            "error": {
                "code": self.code().as_str(),
                "message": self.public_message(),
                "details": self.details(),
                "request_id": request_id,
            }
        })
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::internal("database", e)
    }
}
