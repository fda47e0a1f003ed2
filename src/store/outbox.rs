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

/// The rows waiting for a retry that are due, in insertion order. A row
/// waiting for its retry holds back the later rows of its event, so each
/// event's messages reach the stream in order; dead rows hold back nothing.
/// Only a failed attempt sets `next_attempt_at` ahead, so waiting rows have
/// `attempts > 0`.
pub async fn due(db: &PgPool, limit: i64) -> Result<Vec<OutboxRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {ROW_COLUMNS} FROM outbox o
         WHERE o.state = 'pending' AND o.next_attempt_at <= now()
           AND NOT EXISTS (
               SELECT 1 FROM outbox w
               WHERE w.event_id = o.event_id AND w.state = 'pending' AND w.attempts > 0
                 AND w.seq < o.seq AND w.next_attempt_at > now()
           )
         ORDER BY o.seq LIMIT $1"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .fetch_all(db)
        .await
}

/// Where the publisher stands (the one row of `outbox_cursor`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Cursor {
    /// Every row up to this `seq` has been handled.
    pub published_through: i64,
    /// Rows above `published_through` up to this one may be in the stream
    /// already, sent since `sending_since`.
    pub sending_through: i64,
    pub sending_since: Option<DateTime<Utc>>,
    /// Seconds since `sending_since`, by the database's clock.
    pub sending_secs_ago: Option<f64>,
}

pub async fn cursor(db: &PgPool) -> Result<Cursor, sqlx::Error> {
    sqlx::query_as(
        "SELECT published_through, sending_through, sending_since,
                EXTRACT(EPOCH FROM now() - sending_since)::float8 AS sending_secs_ago
         FROM outbox_cursor",
    )
    .fetch_one(db)
    .await
}

/// A row above the cursor, as the cursor's walk sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AheadRow {
    #[sqlx(flatten)]
    pub row: OutboxRow,
    /// Still 'written': the cursor decides its fate. Any other state was
    /// given to it explicitly (an imported or repaired row) and stands.
    pub written: bool,
    /// An earlier row of its event is pending (waiting for a retry): this
    /// one waits with it.
    pub behind: bool,
}

/// The rows above `through`, in `seq` order, whatever their state: the walk
/// must see every number that exists to tell a gap.
pub async fn ahead(db: &PgPool, through: i64, limit: i64) -> Result<Vec<AheadRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {ROW_COLUMNS}, o.state = 'written' AS written,
                EXISTS (SELECT 1 FROM outbox w
                        WHERE w.event_id = o.event_id AND w.state = 'pending' AND w.seq < o.seq) AS behind
         FROM outbox o WHERE o.seq > $1 ORDER BY o.seq LIMIT $2"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(through)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// The transactions (by virtual id) that may be inserting outbox rows right
/// now: every one holding the outbox's row-exclusive lock. A statement takes
/// that lock before it draws a row's `seq`, and a transaction keeps it to its
/// end, so a number drawn before this was asked belongs to a transaction
/// listed here, or to one that has ended.
pub async fn writers(db: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(array_agg(virtualtransaction), '{}') FROM pg_locks
         WHERE locktype = 'relation' AND relation = 'outbox'::regclass
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND mode = 'RowExclusiveLock' AND pid <> pg_backend_pid()",
    )
    .fetch_one(db)
    .await
}

/// Whether any of `writers` is still running.
pub async fn still_writing(db: &PgPool, writers: &[String]) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_locks
                        WHERE locktype = 'relation' AND relation = 'outbox'::regclass
                          AND mode = 'RowExclusiveLock' AND virtualtransaction = ANY($1))",
    )
    .bind(writers)
    .fetch_one(db)
    .await
}

/// Notes, before rows above the cursor up to `through` are sent, that they
/// may be in the stream from now on. `restart`: the earlier sends are known
/// not to have reached the stream, so the window starts again.
pub async fn mark_sending(db: &PgPool, through: i64, restart: bool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox_cursor SET sending_through = GREATEST(sending_through, $1),
                sending_since = CASE WHEN $2 THEN now() ELSE COALESCE(sending_since, now()) END",
    )
    .bind(through)
    .bind(restart)
    .execute(db)
    .await?;
    Ok(())
}

/// Moves the cursor to `through` and records when it passed there.
pub async fn advance(db: &PgPool, through: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH moved AS (
             UPDATE outbox_cursor SET published_through = $1, last_error = NULL, last_error_at = NULL,
                    sending_through = GREATEST(sending_through, $1),
                    sending_since = CASE WHEN sending_through <= $1 THEN NULL ELSE sending_since END
             WHERE published_through < $1 RETURNING published_through)
         INSERT INTO outbox_progress (second, through, at)
         SELECT date_trunc('second', now()), published_through, now() FROM moved
         ON CONFLICT (second) DO UPDATE SET through = GREATEST(outbox_progress.through, EXCLUDED.through),
                                            at = EXCLUDED.at",
    )
    .bind(through)
    .execute(db)
    .await?;
    Ok(())
}

/// Records why the rows above the cursor did not go out.
pub async fn note_outage(db: &PgPool, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outbox_cursor SET last_error = $1, last_error_at = now()")
        .bind(error.chars().take(2000).collect::<String>())
        .execute(db)
        .await?;
    Ok(())
}

/// Hands rows the cursor passes without sending them to the retry path:
/// they wait behind an earlier row of their event.
pub async fn hold(db: &PgPool, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE outbox SET state = 'pending', next_attempt_at = now()
         WHERE id = ANY($1) AND state = 'written'",
    )
    .bind(ids)
    .execute(db)
    .await?;
    Ok(())
}

/// Stamps the send time on retried rows that have none, before they are
/// sent, so whichever instance publishes next knows what may already be in
/// the stream.
pub async fn stamp_sends(db: &PgPool, rows: &mut [OutboxRow]) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = rows
        .iter()
        .filter(|r| r.first_sent_at.is_none())
        .map(|r| r.id)
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let at: Option<DateTime<Utc>> = sqlx::query_scalar(
        "WITH s AS (UPDATE outbox SET first_sent_at = now() WHERE id = ANY($1) RETURNING first_sent_at)
         SELECT max(first_sent_at) FROM s",
    )
    .bind(&ids)
    .fetch_one(db)
    .await?;
    for row in rows.iter_mut().filter(|r| r.first_sent_at.is_none()) {
        row.first_sent_at = at;
        row.sent_secs_ago = at.map(|_| 0.0);
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
                state = CASE WHEN u.dead THEN 'dead'::outbox_state ELSE 'pending'::outbox_state END,
                dead_at = CASE WHEN u.dead THEN now() ELSE o.dead_at END,
                first_sent_at = COALESCE(o.first_sent_at, now())
         FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::bool[], $5::bool[])
              AS u(id, err, retry, dead, counted)
         WHERE o.id = u.id AND o.state IN ('pending', 'written')",
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
        "SELECT count(*) FILTER (WHERE status = 'pending'),
                count(*) FILTER (WHERE status = 'dead'),
                count(*) FILTER (WHERE status = 'published'),
                EXTRACT(EPOCH FROM now() - min(occurred_at) FILTER (WHERE status = 'pending'))::float8
         FROM outbox_view",
    )
    .fetch_one(db)
    .await?;
    let by_type = sqlx::query_as(
        "SELECT event_type,
                count(*) FILTER (WHERE status = 'pending') AS pending,
                count(*) FILTER (WHERE status = 'dead') AS dead,
                (array_agg(last_error ORDER BY next_attempt_at DESC) FILTER (WHERE last_error IS NOT NULL))[1] AS last_error,
                max(next_attempt_at) FILTER (WHERE last_error IS NOT NULL) AS last_error_at
         FROM outbox_view WHERE status <> 'published' GROUP BY event_type ORDER BY event_type",
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

/// Cheap gauges for metrics and readiness: pending rows are those waiting
/// for a retry (a partial index) and those above the cursor (the `seq`
/// index from the cursor on).
pub async fn gauges(db: &PgPool) -> Result<(i64, i64, Option<f64>), sqlx::Error> {
    sqlx::query_as(
        "WITH c AS (SELECT published_through FROM outbox_cursor),
              ahead AS (SELECT o.occurred_at FROM outbox o, c
                        WHERE o.seq > c.published_through AND o.state = 'written')
         SELECT (SELECT count(*) FROM outbox WHERE state = 'pending') + (SELECT count(*) FROM ahead),
                (SELECT count(*) FROM outbox WHERE state = 'dead'),
                EXTRACT(EPOCH FROM now() - LEAST(
                    (SELECT min(occurred_at) FROM outbox WHERE state = 'pending'),
                    (SELECT min(occurred_at) FROM ahead)))::float8",
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

/// Where a replay has got to: the `seq` of the last row it sent.
pub type ReplayCursor = i64;

/// Published rows after `after` in `seq` order that were published at
/// `since` or later (by the publish time `outbox_view` knows, which for a
/// row the cursor passed is the end of that second at the latest).
pub async fn published_since(
    db: &PgPool,
    since: DateTime<Utc>,
    after: ReplayCursor,
    limit: i64,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {ROW_COLUMNS} FROM outbox_view o
         WHERE o.status = 'published' AND o.seq > $2 AND o.published_at >= $1
         ORDER BY o.seq LIMIT $3"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(since)
        .bind(after)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// What the publisher would send next: rows above the cursor and retries
/// that are due, in `seq` order.
pub async fn next_rows(db: &PgPool, limit: i64) -> Result<Vec<OutboxRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {ROW_COLUMNS} FROM outbox o, outbox_cursor c
         WHERE (o.state = 'written' AND o.seq > c.published_through)
            OR (o.state = 'pending' AND o.next_attempt_at <= now())
         ORDER BY o.seq LIMIT $1"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
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
