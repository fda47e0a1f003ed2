// Temporary placeholder until the DSAR module lands.
use crate::app::AppError;
use crate::domain::{Event, TenantId, UserId};
use crate::subjects::Subjects;
pub struct Erased {
    pub summary: serde_json::Value,
    pub changed_events: Vec<Event>,
}
pub async fn export(
    _db: &sqlx::PgPool,
    _t: TenantId,
    _u: UserId,
) -> Result<serde_json::Value, AppError> {
    Err(AppError::internal("dsar", "not available"))
}
pub async fn erase(
    _db: &sqlx::PgPool,
    _s: &Subjects,
    _t: TenantId,
    _u: UserId,
) -> Result<Erased, AppError> {
    Err(AppError::internal("dsar", "not available"))
}
