//! Retention: published outbox rows are kept for a window, then purged.

use chrono::{Datelike, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::domain::{ErrorCode, format_utc, truncate_to_micros};
use crate::error::AppError;

/// Rows deleted per statement by the retention purge, so it never holds
/// locks on a large part of the outbox for long.
const PURGE_CHUNK: i64 = 5_000;

/// Deletes outbox rows published before `now - days` and returns the
/// original's `purge_retention` output:
/// `{"counts":{"published_outbox_deleted":n},"cutoffs":{"published_outbox_before":"<iso>"},
/// "executed_at":"<iso>","service":"events"}`. Pending and dead rows are
/// never purged, whatever their age. Rows are deleted in chunks, each its
/// own statement, so a large backlog does not hold one long transaction.
pub async fn purge_published_outbox(db: &PgPool, days: u32) -> Result<Value, AppError> {
    let executed_at = truncate_to_micros(Utc::now());
    let cutoff = chrono::Duration::try_days(i64::from(days))
        .and_then(|window| executed_at.checked_sub_signed(window))
        .filter(|cutoff| cutoff.year() >= 1)
        .ok_or_else(|| {
            AppError::rejected(
                ErrorCode::ValidationError,
                format!("a retention of {days} days reaches before year 1"),
            )
        })?;
    // Rows the cursor passed before the cutoff: every `seq` up to where it
    // stood at the last second recorded before then.
    let passed: Option<i64> =
        sqlx::query_scalar("SELECT max(through) FROM outbox_progress WHERE at < $1")
            .bind(cutoff)
            .fetch_one(db)
            .await?;
    let mut deleted: u64 = 0;
    loop {
        let n = sqlx::query(
            "DELETE FROM outbox WHERE id IN (
                 SELECT id FROM outbox
                 WHERE state = 'written' AND seq <= $1
                 ORDER BY seq LIMIT $2)",
        )
        .bind(passed.unwrap_or(0))
        .bind(PURGE_CHUNK)
        .execute(db)
        .await?
        .rows_affected();
        deleted += n;
        if n < PURGE_CHUNK as u64 {
            break;
        }
    }
    loop {
        let n = sqlx::query(
            "DELETE FROM outbox WHERE id IN (
                 SELECT id FROM outbox
                 WHERE state = 'published' AND published_at < $1
                 ORDER BY published_at LIMIT $2)",
        )
        .bind(cutoff)
        .bind(PURGE_CHUNK)
        .execute(db)
        .await?
        .rows_affected();
        deleted += n;
        if n < PURGE_CHUNK as u64 {
            break;
        }
    }
    // The rows those seconds cover are gone.
    sqlx::query("DELETE FROM outbox_progress WHERE at < $1")
        .bind(cutoff)
        .execute(db)
        .await?;
    Ok(json!({
        "counts": {"published_outbox_deleted": deleted},
        "cutoffs": {"published_outbox_before": format_utc(&cutoff)},
        "executed_at": format_utc(&executed_at),
        "service": "events",
    }))
}
