//! Outbox queries: claiming rows to publish, recording results, and the
//! operator's views (status, dead rows, replay).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// One row ready to be published.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: Uuid,
    pub seq: i64,
    pub tenant_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub subject: String,
    pub payload: Value,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub attempts: i32,
    pub published_seq: Option<i64>,
    pub published_at: Option<DateTime<Utc>>,
    /// When the row was first handed to NATS, by the database's clock; None:
    /// never. A row numbered before sends were stamped counts as sent when
    /// it occurred, the earliest it can have been.
    pub first_sent_at: Option<DateTime<Utc>>,
    /// Seconds from `first_sent_at` to the moment the row was read, by the
    /// same clock, so that instances whose clocks differ agree on it.
    pub sent_secs_ago: Option<f64>,
}

const ROW_COLUMNS: &str = "o.id, o.seq, o.tenant_id, o.event_id, o.event_type, o.subject, o.payload, o.traceparent, \
     o.tracestate, o.occurred_at, o.attempts, o.published_seq, o.published_at, \
     COALESCE(o.first_sent_at, CASE WHEN o.published_seq IS NOT NULL THEN o.occurred_at END) AS first_sent_at, \
     EXTRACT(EPOCH FROM now() - COALESCE(o.first_sent_at, CASE WHEN o.published_seq IS NOT NULL THEN o.occurred_at END))::float8 AS sent_secs_ago";

/// The next pending rows that are due, in insertion order. A row waiting
/// for a retry holds back the later rows of its event, so each event's
/// messages reach the stream in order; dead rows hold back nothing. `skip`:
/// rows being marked published right now. Only a
/// failed attempt sets `next_attempt_at` ahead, so waiting rows have
/// `attempts > 0`, which lets `outbox_waiting_idx` answer the check.
pub async fn due(db: &PgPool, limit: i64, skip: &[i64]) -> Result<Vec<OutboxRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {ROW_COLUMNS} FROM outbox o
         WHERE o.state = 'pending' AND o.next_attempt_at <= now()
           AND o.seq NOT IN (SELECT unnest($2::bigint[]))
           AND NOT EXISTS (
               SELECT 1 FROM outbox w
               WHERE w.event_id = o.event_id AND w.state = 'pending' AND w.attempts > 0
                 AND w.seq < o.seq AND w.next_attempt_at > now()
           )
         ORDER BY o.seq LIMIT $1"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .bind(skip)
        .fetch_all(db)
        .await
}

/// Readies rows to be sent: gives those without one their global publish
/// sequence, in `seq` order (drawn once, so a retried publish carries the
/// same number), and stamps the send time on those without one. Both are
/// stored before anything is sent, so whichever instance publishes next
/// knows what may already be in the stream.
pub async fn assign_sequences(db: &PgPool, rows: &mut [OutboxRow]) -> Result<(), sqlx::Error> {
    let listed: Vec<usize> = (0..rows.len())
        .filter(|i| rows[*i].published_seq.is_none() || rows[*i].first_sent_at.is_none())
        .collect();
    if listed.is_empty() {
        return Ok(());
    }
    let missing = listed
        .iter()
        .filter(|i| rows[**i].published_seq.is_none())
        .count();
    let mut numbers: Vec<i64> = if missing == 0 {
        Vec::new()
    } else {
        sqlx::query_scalar("SELECT nextval('outbox_published_seq') FROM generate_series(1, $1)")
            .bind(missing as i64)
            .fetch_all(db)
            .await?
    };
    numbers.sort_unstable();
    let mut numbers = numbers.into_iter();
    let drawn: Vec<Option<i64>> = listed
        .iter()
        .map(|i| match rows[*i].published_seq {
            Some(_) => None,
            None => numbers.next(),
        })
        .collect();
    let ids: Vec<Uuid> = listed.iter().map(|i| rows[*i].id).collect();
    let stamped: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "UPDATE outbox o SET published_seq = COALESCE(o.published_seq, u.n), first_sent_at = now()
         FROM UNNEST($1::uuid[], $2::bigint[]) AS u(id, n)
         WHERE o.id = u.id RETURNING o.first_sent_at",
    )
    .bind(&ids)
    .bind(&drawn)
    .fetch_all(db)
    .await?;
    let at = stamped.first().copied();
    for (i, n) in listed.into_iter().zip(drawn) {
        if n.is_some() {
            rows[i].published_seq = n;
        }
        rows[i].first_sent_at = at;
        rows[i].sent_secs_ago = at.map(|_| 0.0);
    }
    Ok(())
}

pub async fn mark_published(db: &PgPool, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE outbox SET state = 'published', published_at = now(), attempts = attempts + 1, last_error = NULL
         WHERE id = ANY($1) AND state = 'pending'",
    )
    .bind(ids)
    .execute(db)
    .await?;
    Ok(())
}

/// A failed publish attempt.
#[derive(Debug, Clone)]
pub struct Failure {
    pub id: Uuid,
    pub error: String,
    pub retry_at: DateTime<Utc>,
    /// Attempts exhausted: the row becomes dead (counted, kept, retryable by hand).
    pub dead: bool,
    /// Counts as an attempt of the row's. An outage does not: the row only
    /// gets marked as tried (`attempts` at least 1), which makes it hold
    /// back the later rows of its event until its retry.
    pub counted: bool,
}

pub async fn mark_failed(db: &PgPool, failures: &[Failure]) -> Result<(), sqlx::Error> {
    if failures.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = failures.iter().map(|f| f.id).collect();
    let errors: Vec<String> = failures
        .iter()
        .map(|f| f.error.chars().take(2000).collect())
        .collect();
    let retry: Vec<DateTime<Utc>> = failures.iter().map(|f| f.retry_at).collect();
    let dead: Vec<bool> = failures.iter().map(|f| f.dead).collect();
    let counted: Vec<bool> = failures.iter().map(|f| f.counted).collect();
    sqlx::query(
        "UPDATE outbox o SET attempts = CASE WHEN u.counted THEN o.attempts + 1 ELSE GREATEST(o.attempts, 1) END,
                last_error = u.err, next_attempt_at = u.retry,
                state = CASE WHEN u.dead THEN 'dead'::outbox_state ELSE o.state END,
                dead_at = CASE WHEN u.dead THEN now() ELSE o.dead_at END
         FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::bool[], $5::bool[])
              AS u(id, err, retry, dead, counted)
         WHERE o.id = u.id AND o.state = 'pending'",
    )
    .bind(&ids)
    .bind(&errors)
    .bind(&retry)
    .bind(&dead)
    .bind(&counted)
    .execute(db)
    .await?;
    Ok(())
}

/// The outbox at a glance.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Status {
    pub pending: i64,
    pub dead: i64,
    pub published: i64,
    pub oldest_pending_age_seconds: Option<f64>,
    pub by_type: Vec<TypeStatus>,
}

#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct TypeStatus {
    pub event_type: String,
    pub pending: i64,
    pub dead: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

pub async fn status(db: &PgPool) -> Result<Status, sqlx::Error> {
    let (pending, dead, published, oldest): (i64, i64, i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'pending'),
                count(*) FILTER (WHERE state = 'dead'),
                count(*) FILTER (WHERE state = 'published'),
                EXTRACT(EPOCH FROM now() - min(occurred_at) FILTER (WHERE state = 'pending'))::float8
         FROM outbox",
    )
    .fetch_one(db)
    .await?;
    let by_type = sqlx::query_as(
        "SELECT event_type,
                count(*) FILTER (WHERE state = 'pending') AS pending,
                count(*) FILTER (WHERE state = 'dead') AS dead,
                (array_agg(last_error ORDER BY next_attempt_at DESC) FILTER (WHERE last_error IS NOT NULL))[1] AS last_error,
                max(next_attempt_at) FILTER (WHERE last_error IS NOT NULL) AS last_error_at
         FROM outbox WHERE state <> 'published' GROUP BY event_type ORDER BY event_type",
    )
    .fetch_all(db)
    .await?;
    Ok(Status {
        pending,
        dead,
        published,
        oldest_pending_age_seconds: oldest,
        by_type,
    })
}

/// Cheap gauges for metrics and readiness (uses the partial indexes).
pub async fn gauges(db: &PgPool) -> Result<(i64, i64, Option<f64>), sqlx::Error> {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM outbox WHERE state = 'pending'),
                (SELECT count(*) FROM outbox WHERE state = 'dead'),
                (SELECT EXTRACT(EPOCH FROM now() - min(occurred_at))::float8 FROM outbox WHERE state = 'pending')",
    )
    .fetch_one(db)
    .await
}

/// Puts dead rows back in the queue (all of them, or those listed).
pub async fn retry_dead(db: &PgPool, ids: Option<&[Uuid]>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE outbox SET state = 'pending', dead_at = NULL, attempts = 0, next_attempt_at = now()
         WHERE state = 'dead' AND ($1::uuid[] IS NULL OR id = ANY($1))",
    )
    .bind(ids.map(<[Uuid]>::to_vec))
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Where a replay has got to: the publish time and insertion order of the
/// last row it sent.
pub type ReplayCursor = (DateTime<Utc>, i64);

/// The replay's starting point: every row published at `since` or later.
pub fn replay_from(since: DateTime<Utc>) -> ReplayCursor {
    (since, 0)
}

/// Published rows after `after`, in the order they reached the stream:
/// by publish time (one mark per publisher cycle), then insertion order,
/// which within a cycle is the order of their numbers and of each event's
/// changes.
pub async fn published_since(
    db: &PgPool,
    after: ReplayCursor,
    limit: i64,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {ROW_COLUMNS} FROM outbox o
         WHERE o.state = 'published' AND (o.published_at, o.seq) > ($1, $2)
         ORDER BY o.published_at, o.seq LIMIT $3"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// Session-level advisory lock naming the single publisher.
pub const PUBLISHER_LOCK: i64 = 0x6576_656e_7473_6f62; // "eventsob"

pub async fn try_lock(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(PUBLISHER_LOCK)
        .fetch_one(conn)
        .await
}

/// Whether another session holds the publisher lock.
pub async fn lock_held_elsewhere(db: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                AND ((classid::bigint << 32) | objid::bigint) = $1 AND pid <> pg_backend_pid())",
    )
    .bind(PUBLISHER_LOCK)
    .fetch_one(db)
    .await
}
