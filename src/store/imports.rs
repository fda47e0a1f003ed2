//! The record of what `events-svc import django` brought over
//! (`django_import`), and the few writes of an import that are not a
//! decision: keeping the source's RSVP times, carrying over unpublished
//! outbox rows, and counting what was imported for the verification.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// What kind of source row a ledger entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Event,
    Rsvp,
    Attendance,
    Outbox,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Event => "event",
            Kind::Rsvp => "rsvp",
            Kind::Attendance => "attendance",
            Kind::Outbox => "outbox",
        }
    }
}

/// A ledger key: the row id and, for RSVPs and attendance, the user.
pub type Key = (Uuid, Uuid);

/// One imported row to record.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: Key,
    pub tenant: Uuid,
    pub fingerprint: Vec<u8>,
    pub fixed: bool,
}

/// The recorded fingerprints of `keys`.
pub async fn fingerprints(
    conn: &mut PgConnection,
    kind: Kind,
    keys: &[Key],
) -> Result<HashMap<Key, Vec<u8>>, sqlx::Error> {
    let (ids, users): (Vec<Uuid>, Vec<Uuid>) = keys.iter().copied().unzip();
    let rows: Vec<(Uuid, Uuid, Vec<u8>)> = sqlx::query_as(
        "SELECT l.row_id, l.user_id, l.fingerprint
         FROM django_import l JOIN UNNEST($2::uuid[], $3::uuid[]) AS k(r, u)
           ON l.row_id = k.r AND l.user_id = k.u
         WHERE l.kind = $1",
    )
    .bind(kind.as_str())
    .bind(&ids)
    .bind(&users)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(r, u, f)| ((r, u), f)).collect())
}

/// Records (or re-records) imported rows.
pub async fn record(
    conn: &mut PgConnection,
    kind: Kind,
    entries: &[Entry],
) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = entries.iter().map(|e| e.key.0).collect();
    let users: Vec<Uuid> = entries.iter().map(|e| e.key.1).collect();
    let tenants: Vec<Uuid> = entries.iter().map(|e| e.tenant).collect();
    let prints: Vec<Vec<u8>> = entries.iter().map(|e| e.fingerprint.clone()).collect();
    let fixed: Vec<bool> = entries.iter().map(|e| e.fixed).collect();
    sqlx::query(
        "INSERT INTO django_import (kind, row_id, user_id, tenant_id, fingerprint, fixed)
         SELECT $1, * FROM UNNEST($2::uuid[], $3::uuid[], $4::uuid[], $5::bytea[], $6::bool[])
         ON CONFLICT (kind, row_id, user_id) DO UPDATE
             SET fingerprint = EXCLUDED.fingerprint, fixed = EXCLUDED.fixed, updated_at = now()",
    )
    .bind(kind.as_str())
    .bind(&ids)
    .bind(&users)
    .bind(&tenants)
    .bind(&prints)
    .bind(&fixed)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Every recorded key of `kind` (of one tenant, or all).
pub async fn recorded(
    db: &PgPool,
    kind: Kind,
    tenant: Option<Uuid>,
) -> Result<HashSet<Key>, sqlx::Error> {
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT row_id, user_id FROM django_import WHERE kind = $1 AND ($2::uuid IS NULL OR tenant_id = $2)",
    )
    .bind(kind.as_str())
    .bind(tenant)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().collect())
}

/// The tenant of each of `ids` that is an event here.
pub async fn event_tenants(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Uuid>, sqlx::Error> {
    let rows: Vec<(Uuid, Uuid)> =
        sqlx::query_as("SELECT id, tenant_id FROM events WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Gives imported RSVPs the source's time: the original kept only
/// `updated_at`, which also stands for when the RSVP was first made.
pub async fn keep_rsvp_times(
    conn: &mut PgConnection,
    rows: &[(Uuid, Uuid, DateTime<Utc>)],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let events: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let users: Vec<Uuid> = rows.iter().map(|r| r.1).collect();
    let times: Vec<DateTime<Utc>> = rows.iter().map(|r| r.2).collect();
    sqlx::query(
        "UPDATE event_rsvps r SET created_at = LEAST(r.created_at, x.t), updated_at = x.t
         FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[]) AS x(e, u, t)
         WHERE r.event_id = x.e AND r.user_id = x.u",
    )
    .bind(&events)
    .bind(&users)
    .bind(&times)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Rewrites who marked an attendance and when (the source changed it, e.g.
/// its DSAR erase anonymised the marker). Counters do not move; the
/// revision does, so caches reload the event. Returns the rows changed.
pub async fn rewrite_marks(
    conn: &mut PgConnection,
    rows: &[(Uuid, Uuid, Uuid, DateTime<Utc>)],
) -> Result<Vec<Uuid>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let events: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let users: Vec<Uuid> = rows.iter().map(|r| r.1).collect();
    let by: Vec<Uuid> = rows.iter().map(|r| r.2).collect();
    let at: Vec<DateTime<Utc>> = rows.iter().map(|r| r.3).collect();
    let changed: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE event_attendance a SET marked_by = x.b, marked_at = x.t
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[]) AS x(e, u, b, t)
         WHERE a.event_id = x.e AND a.user_id = x.u RETURNING a.event_id",
    )
    .bind(&events)
    .bind(&users)
    .bind(&by)
    .bind(&at)
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query("UPDATE event_counters SET revision = revision + 1, updated_at = now() WHERE event_id = ANY($1)")
        .bind(&changed)
        .execute(&mut *conn)
        .await?;
    Ok(changed)
}

/// One source outbox row to carry over, already mapped.
#[derive(Debug, Clone)]
pub struct CarriedRow {
    pub id: Uuid,
    pub tenant: Uuid,
    pub event: Uuid,
    pub event_type: String,
    pub subject: String,
    pub payload: Value,
    pub occurred_at: DateTime<Utc>,
}

/// Inserts carried-over rows as pending, in the given order (their `seq`
/// follows it, and so does publishing). A row already here is left alone.
pub async fn carry_outbox(
    conn: &mut PgConnection,
    rows: &[CarriedRow],
) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let tenants: Vec<Uuid> = rows.iter().map(|r| r.tenant).collect();
    let events: Vec<Uuid> = rows.iter().map(|r| r.event).collect();
    let types: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
    let subjects: Vec<&str> = rows.iter().map(|r| r.subject.as_str()).collect();
    let payloads: Vec<Value> = rows.iter().map(|r| r.payload.clone()).collect();
    let times: Vec<DateTime<Utc>> = rows.iter().map(|r| r.occurred_at).collect();
    let done = sqlx::query(
        "INSERT INTO outbox (id, tenant_id, event_id, event_type, subject, payload, occurred_at)
         SELECT id, t, e, ty, s, p, o
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::jsonb[], $7::timestamptz[])
              WITH ORDINALITY AS x(id, t, e, ty, s, p, o, n)
         ORDER BY n
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&tenants)
    .bind(&events)
    .bind(&types)
    .bind(&subjects)
    .bind(&payloads)
    .bind(&times)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// A tenant and seven counts, as one row of a counting query.
pub type TenantCounts = (Uuid, i64, i64, i64, i64, i64, i64, i64);

/// A tenant and six counts.
type ImportedCounts = (Uuid, i64, i64, i64, i64, i64, i64);

/// What is stored here of the imported rows, per tenant: events, RSVPs by
/// status (`interested`, `going`, `not_going`, others), attendance.
pub async fn imported_counts(
    db: &PgPool,
    tenant: Option<Uuid>,
) -> Result<HashMap<Uuid, [i64; 6]>, sqlx::Error> {
    let rows: Vec<ImportedCounts> = sqlx::query_as(
        "WITH l AS (SELECT * FROM django_import WHERE $1::uuid IS NULL OR tenant_id = $1)
         SELECT t.tenant_id,
            (SELECT count(*) FROM l JOIN events e ON e.id = l.row_id
              WHERE l.kind = 'event' AND l.tenant_id = t.tenant_id),
            (SELECT count(*) FROM l JOIN event_rsvps r ON r.event_id = l.row_id AND r.user_id = l.user_id
              WHERE l.kind = 'rsvp' AND l.tenant_id = t.tenant_id AND r.status = 'interested'),
            (SELECT count(*) FROM l JOIN event_rsvps r ON r.event_id = l.row_id AND r.user_id = l.user_id
              WHERE l.kind = 'rsvp' AND l.tenant_id = t.tenant_id AND r.status = 'going'),
            (SELECT count(*) FROM l JOIN event_rsvps r ON r.event_id = l.row_id AND r.user_id = l.user_id
              WHERE l.kind = 'rsvp' AND l.tenant_id = t.tenant_id AND r.status = 'not_going'),
            (SELECT count(*) FROM l JOIN event_rsvps r ON r.event_id = l.row_id AND r.user_id = l.user_id
              WHERE l.kind = 'rsvp' AND l.tenant_id = t.tenant_id
                AND r.status NOT IN ('interested', 'going', 'not_going')),
            (SELECT count(*) FROM l JOIN event_attendance a ON a.event_id = l.row_id AND a.user_id = l.user_id
              WHERE l.kind = 'attendance' AND l.tenant_id = t.tenant_id)
         FROM (SELECT DISTINCT tenant_id FROM l) t",
    )
    .bind(tenant)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.0, [r.1, r.2, r.3, r.4, r.5, r.6]))
        .collect())
}

/// `rsvpCounts` (interested, going, not_going) of every imported event.
pub async fn imported_event_counts(
    db: &PgPool,
    tenant: Option<Uuid>,
) -> Result<HashMap<Uuid, (Uuid, i64, i64, i64)>, sqlx::Error> {
    let rows: Vec<(Uuid, Uuid, i32, i32, i32)> = sqlx::query_as(
        "SELECT c.event_id, c.tenant_id, c.interested, c.going, c.not_going
         FROM django_import l JOIN event_counters c ON c.event_id = l.row_id
         WHERE l.kind = 'event' AND ($1::uuid IS NULL OR l.tenant_id = $1)",
    )
    .bind(tenant)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(e, t, i, g, n)| (e, (t, i64::from(i), i64::from(g), i64::from(n))))
        .collect())
}
