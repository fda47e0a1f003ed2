//! The Django service's tables, read in one snapshot.
//!
//! The whole import reads through one `REPEATABLE READ READ ONLY`
//! transaction, so a source that keeps serving writes still gives a
//! consistent cut: every row as of the moment the import began. Rows are
//! read in primary-key order, a batch at a time (keyset pagination).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// A row of `events_event`, as the original stored it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SourceEvent {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub scope_type: String,
    pub scope_id: String,
    pub title: String,
    pub description: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub location_text: String,
    pub location_url: Option<String>,
    pub game_id: Option<String>,
    pub visibility: String,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A row of `events_rsvp`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SourceRsvp {
    pub id: i64,
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub status: String,
    pub updated_at: DateTime<Utc>,
}

/// A row of `events_attendance`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SourceAttendance {
    pub id: i64,
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub marked_by: Uuid,
    pub marked_at: DateTime<Utc>,
}

/// An unpublished row of `events_outbox`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SourceOutbox {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub event_type: String,
    pub payload: Value,
    pub occurred_at: DateTime<Utc>,
}

/// SHA-256 of a source row: what a re-run compares to tell a changed row
/// from an unchanged one.
pub fn fingerprint(row: &impl Serialize) -> Vec<u8> {
    let bytes = serde_json::to_vec(row).unwrap_or_default();
    Sha256::digest(bytes).to_vec()
}

/// Rows per table and tenant, as the snapshot holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceCounts {
    pub events: i64,
    pub interested: i64,
    pub going: i64,
    pub not_going: i64,
    /// RSVPs with a status the original never wrote.
    pub other_status: i64,
    pub attendance: i64,
    pub unpublished_outbox: i64,
}

/// The open snapshot of the source database.
pub struct Source {
    conn: PgConnection,
    tenant: Option<Uuid>,
}

impl Source {
    /// Connects and opens the snapshot. The error says what failed, in one line.
    pub async fn open(url: &str, tenant: Option<Uuid>) -> Result<Self, String> {
        let connect = PgConnection::connect(url);
        let mut conn = match tokio::time::timeout(std::time::Duration::from_secs(10), connect).await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(format!("cannot connect to the source database: {e}")),
            Err(_) => {
                return Err("cannot connect to the source database: no answer within 10 s".into());
            }
        };
        sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut conn)
            .await
            .map_err(|e| format!("cannot open a snapshot of the source database: {e}"))?;
        // A missing table is a wrong URL, not an empty source.
        for table in [
            "events_event",
            "events_rsvp",
            "events_attendance",
            "events_outbox",
        ] {
            let found: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
                .bind(table)
                .fetch_one(&mut conn)
                .await
                .map_err(|e| format!("cannot read the source database: {e}"))?;
            if found.is_none() {
                return Err(format!(
                    "the source database has no table {table}: is --source the Django service's database?"
                ));
            }
        }
        Ok(Self { conn, tenant })
    }

    /// Rows per table in the snapshot (for progress).
    pub async fn totals(&mut self) -> Result<[i64; 4], sqlx::Error> {
        let t = self.tenant;
        let row: (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events_event WHERE $1::uuid IS NULL OR tenant_id = $1),
                    (SELECT count(*) FROM events_rsvp WHERE $1::uuid IS NULL OR tenant_id = $1),
                    (SELECT count(*) FROM events_attendance WHERE $1::uuid IS NULL OR tenant_id = $1),
                    (SELECT count(*) FROM events_outbox
                      WHERE published_at IS NULL AND ($1::uuid IS NULL OR tenant_id = $1))",
        )
        .bind(t)
        .fetch_one(&mut self.conn)
        .await?;
        Ok([row.0, row.1, row.2, row.3])
    }

    pub async fn events(
        &mut self,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<SourceEvent>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, tenant_id, scope_type, scope_id, title, description, starts_at, ends_at,
                    location_text, location_url, game_id, visibility, created_by, created_at, updated_at
             FROM events_event
             WHERE ($1::uuid IS NULL OR tenant_id = $1) AND ($2::uuid IS NULL OR id > $2)
             ORDER BY id LIMIT $3",
        )
        .bind(self.tenant)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut self.conn)
        .await
    }

    pub async fn rsvps(&mut self, after: i64, limit: i64) -> Result<Vec<SourceRsvp>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, event_id, tenant_id, user_id, status, updated_at FROM events_rsvp
             WHERE ($1::uuid IS NULL OR tenant_id = $1) AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(self.tenant)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut self.conn)
        .await
    }

    pub async fn attendance(
        &mut self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<SourceAttendance>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, event_id, tenant_id, user_id, marked_by, marked_at FROM events_attendance
             WHERE ($1::uuid IS NULL OR tenant_id = $1) AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(self.tenant)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut self.conn)
        .await
    }

    /// Unpublished outbox rows in the order the original wrote them.
    pub async fn unpublished(
        &mut self,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<SourceOutbox>, sqlx::Error> {
        let (at, id) = after.unzip();
        sqlx::query_as(
            "SELECT id, tenant_id, event_type, payload, occurred_at FROM events_outbox
             WHERE published_at IS NULL AND ($1::uuid IS NULL OR tenant_id = $1)
               AND ($2::timestamptz IS NULL OR (occurred_at, id) > ($2, $3))
             ORDER BY occurred_at, id LIMIT $4",
        )
        .bind(self.tenant)
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(&mut self.conn)
        .await
    }

    /// Counts per tenant, for the verification table.
    pub async fn counts(&mut self) -> Result<Vec<(Uuid, SourceCounts)>, sqlx::Error> {
        let rows: Vec<crate::store::imports::TenantCounts> = sqlx::query_as(
            "WITH t AS (
                SELECT tenant_id FROM events_event UNION SELECT tenant_id FROM events_rsvp
                UNION SELECT tenant_id FROM events_attendance
                UNION SELECT tenant_id FROM events_outbox WHERE published_at IS NULL)
             SELECT t.tenant_id,
                (SELECT count(*) FROM events_event e WHERE e.tenant_id = t.tenant_id),
                (SELECT count(*) FROM events_rsvp r WHERE r.tenant_id = t.tenant_id AND r.status = 'interested'),
                (SELECT count(*) FROM events_rsvp r WHERE r.tenant_id = t.tenant_id AND r.status = 'going'),
                (SELECT count(*) FROM events_rsvp r WHERE r.tenant_id = t.tenant_id AND r.status = 'not_going'),
                (SELECT count(*) FROM events_rsvp r WHERE r.tenant_id = t.tenant_id
                   AND r.status NOT IN ('interested', 'going', 'not_going')),
                (SELECT count(*) FROM events_attendance a WHERE a.tenant_id = t.tenant_id),
                (SELECT count(*) FROM events_outbox o WHERE o.tenant_id = t.tenant_id AND o.published_at IS NULL)
             FROM t WHERE $1::uuid IS NULL OR t.tenant_id = $1 ORDER BY 1",
        )
        .bind(self.tenant)
        .fetch_all(&mut self.conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.0,
                    SourceCounts {
                        events: r.1,
                        interested: r.2,
                        going: r.3,
                        not_going: r.4,
                        other_status: r.5,
                        attendance: r.6,
                        unpublished_outbox: r.7,
                    },
                )
            })
            .collect())
    }

    /// `(event, interested, going, not_going)` for every event.
    pub async fn per_event_rsvps(&mut self) -> Result<Vec<(Uuid, i64, i64, i64)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT event_id, count(*) FILTER (WHERE status = 'interested'),
                    count(*) FILTER (WHERE status = 'going'), count(*) FILTER (WHERE status = 'not_going')
             FROM events_rsvp WHERE $1::uuid IS NULL OR tenant_id = $1 GROUP BY event_id",
        )
        .bind(self.tenant)
        .fetch_all(&mut self.conn)
        .await
    }
}
