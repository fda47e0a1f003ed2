//! The replay table shared by every instance: the signed triple of each
//! state-changing request, claimed once, kept until its signature expires.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// Claims `keys` (each with its expiry); returns those that were free. A
/// key held by an expired claim is free again.
pub async fn claim_all(
    conn: &mut PgConnection,
    keys: &[[u8; 32]],
    expiries: &[DateTime<Utc>],
) -> Result<HashSet<[u8; 32]>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(HashSet::new());
    }
    let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
    let inserted: Vec<Vec<u8>> = sqlx::query_scalar(
        "INSERT INTO request_replays (key, expires_at)
         SELECT * FROM UNNEST($1::bytea[], $2::timestamptz[])
         ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at
             WHERE request_replays.expires_at < now()
         RETURNING key",
    )
    .bind(&keys)
    .bind(expiries)
    .fetch_all(&mut *conn)
    .await?;
    Ok(inserted
        .into_iter()
        .filter_map(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
        .collect())
}

/// Claims one key in a statement of its own; `false`: already claimed.
///
/// The claim is committed without waiting for its WAL flush: the change it
/// guards is committed after it on the same server, and a synchronous
/// commit flushes all WAL before its own, so whenever that change is
/// durable, so is this claim.
pub async fn claim(
    db: &sqlx::PgPool,
    key: [u8; 32],
    expires_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let mut tx = db
        .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
        .await?;
    let claimed = claim_all(&mut tx, &[key], &[expires_at]).await?;
    tx.commit().await?;
    Ok(claimed.contains(&key))
}
