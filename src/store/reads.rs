//! Read queries: one event, the caller's RSVPs, lists filtered in SQL.
//!
//! A query that finds its rows by part of a key (an event's RSVPs, a
//! tenant's events, a filtered list) is planned at each call
//! (`persistent(false)`), not prepared once per connection. A prepared
//! statement is planned for its parameters five times, then Postgres may
//! keep one generic plan for the connection's lifetime, costed on the
//! table as it was then; until statistics are refreshed (autovacuum
//! behind or off) nothing replaces it. Prepared on a near-empty table, that
//! plan is a sequential scan, which then reads the whole table at every
//! call. A plan per call sees the table's current size. Look-ups by a
//! whole key stay prepared: their plan is an index probe at any size.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::domain::{
    Event, EventId, RsvpCounts, RsvpStatus, Scope, ScopeId, ScopeType, TenantId, UserId, Visibility,
};
use crate::error::AppError;
use crate::store::rows::{COUNT_COLUMNS, CountsRow, EVENT_COLUMNS, EventRow, parse_rsvp_status};

#[derive(sqlx::FromRow)]
struct EventWithCounts {
    #[sqlx(flatten)]
    event: EventRow,
    #[sqlx(flatten)]
    counts: CountsRow,
}

fn to_domain(row: EventWithCounts) -> Result<(Event, RsvpCounts), AppError> {
    let counts = row.counts.into();
    let event = Event::try_from(row.event).map_err(|e| AppError::internal("stored event", e))?;
    Ok((event, counts))
}

/// One event of a tenant with its counters and their revision.
pub async fn event(
    db: &PgPool,
    tenant: TenantId,
    id: EventId,
) -> Result<Option<(Event, RsvpCounts, i64)>, AppError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS}, {COUNT_COLUMNS} FROM events e LEFT JOIN event_counters c ON c.event_id = e.id
         WHERE e.id = $1 AND e.tenant_id = $2"
    );
    let row: Option<EventWithCounts> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(Uuid::from(id))
        .bind(Uuid::from(tenant))
        .fetch_optional(db)
        .await?;
    row.map(|r| {
        let revision = r.counts.revision;
        to_domain(r).map(|(e, c)| (e, c, revision))
    })
    .transpose()
}

/// Every event of a tenant with its counters and their revision, for the
/// list read model; `None` if the tenant has more than `max`.
pub async fn tenant_events(
    db: &PgPool,
    tenant: TenantId,
    max: usize,
) -> Result<Option<Vec<(Event, RsvpCounts, i64)>>, AppError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS}, {COUNT_COLUMNS} FROM events e LEFT JOIN event_counters c ON c.event_id = e.id
         WHERE e.tenant_id = $1 LIMIT $2"
    );
    let rows: Vec<EventWithCounts> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(Uuid::from(tenant))
        .bind(i64::try_from(max).unwrap_or(i64::MAX).saturating_add(1))
        .persistent(false)
        .fetch_all(db)
        .await?;
    if rows.len() > max {
        return Ok(None);
    }
    rows.into_iter()
        .map(|r| {
            let revision = r.counts.revision;
            to_domain(r).map(|(e, c)| (e, c, revision))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A user's RSVP status and guests on each of `events` that has one.
pub async fn parties_of(
    db: &PgPool,
    user: UserId,
    events: &[EventId],
) -> Result<HashMap<EventId, (Option<RsvpStatus>, u32)>, AppError> {
    let ids: Vec<Uuid> = events.iter().map(|id| Uuid::from(*id)).collect();
    let rows: Vec<(Uuid, String, i32)> = sqlx::query_as(
        "SELECT event_id, status::text, guests FROM event_rsvps
         WHERE event_id = ANY($1) AND user_id = $2",
    )
    .bind(ids)
    .bind(Uuid::from(user))
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, status, guests)| (EventId::from(id), party(&status, guests)))
        .collect())
}

/// Scopes read back as `(scope_type::text, scope_id)`; a row neither parses
/// as cannot name an event's scope and is left out.
pub fn scopes_of(rows: Vec<(String, String)>) -> Vec<Scope> {
    rows.into_iter()
        .filter_map(|(t, id)| {
            Some(Scope::from_stored(
                t.parse().ok()?,
                ScopeId::parse(&id).ok()?,
            ))
        })
        .collect()
}

/// The scopes of a tenant whose member a user is (embedded memberships).
pub async fn member_scopes(
    db: &PgPool,
    tenant: TenantId,
    user: UserId,
) -> Result<Vec<Scope>, AppError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT scope_type::text, scope_id FROM scope_memberships WHERE tenant_id = $1 AND user_id = $2",
    )
    .bind(Uuid::from(tenant))
    .bind(Uuid::from(user))
    .persistent(false)
    .fetch_all(db)
    .await?;
    Ok(scopes_of(rows))
}

/// Every RSVP of an event, if it has at most `max`.
pub async fn all_rsvps(
    db: impl sqlx::PgExecutor<'_>,
    event: EventId,
    max: i64,
) -> Result<Option<HashMap<UserId, RsvpStatus>>, AppError> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT user_id, status::text FROM event_rsvps WHERE event_id = $1 LIMIT $2",
    )
    .bind(Uuid::from(event))
    .bind(max + 1)
    .persistent(false)
    .fetch_all(db)
    .await?;
    if rows.len() as i64 > max {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter()
            .filter_map(|(u, s)| Some((UserId::from(u), parse_rsvp_status(&s)?)))
            .collect(),
    ))
}

/// The caller's own RSVP on one event, with their guests.
pub async fn party_of(
    db: &PgPool,
    event: EventId,
    user: UserId,
) -> Result<(Option<RsvpStatus>, u32), AppError> {
    let row: Option<(String, i32)> = sqlx::query_as(
        "SELECT status::text, guests FROM event_rsvps WHERE event_id = $1 AND user_id = $2",
    )
    .bind(Uuid::from(event))
    .bind(Uuid::from(user))
    .fetch_optional(db)
    .await?;
    Ok(row.map_or((None, 0), |(status, guests)| party(&status, guests)))
}

/// A stored RSVP's status and guests.
fn party(status: &str, guests: i32) -> (Option<RsvpStatus>, u32) {
    (
        parse_rsvp_status(status),
        u32::try_from(guests).unwrap_or(0),
    )
}

/// An event's counters as stored, with its attendance count.
pub async fn stats(db: &PgPool, event: EventId) -> Result<(RsvpCounts, u32), AppError> {
    let sql = format!(
        "SELECT {COUNT_COLUMNS}, COALESCE(c.attended, 0) AS attended
         FROM (SELECT $1::uuid AS id) e LEFT JOIN event_counters c ON c.event_id = e.id"
    );
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        counts: CountsRow,
        attended: i32,
    }
    let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(Uuid::from(event))
        .fetch_one(db)
        .await?;
    Ok((row.counts.into(), u32::try_from(row.attended).unwrap_or(0)))
}

/// The caller's own RSVP on one event.
pub async fn rsvp_of(
    db: &PgPool,
    event: EventId,
    user: UserId,
) -> Result<Option<RsvpStatus>, AppError> {
    let status: Option<String> = sqlx::query_scalar(
        "SELECT status::text FROM event_rsvps WHERE event_id = $1 AND user_id = $2",
    )
    .bind(Uuid::from(event))
    .bind(Uuid::from(user))
    .fetch_optional(db)
    .await?;
    Ok(status.as_deref().and_then(parse_rsvp_status))
}

/// The filters of `event.list`, already validated.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub scope: Option<(ScopeType, String)>,
    pub q: Option<String>,
    pub visibility: Option<Visibility>,
    pub my_rsvp: Option<RsvpStatus>,
    pub created_by: Option<UserId>,
    pub limit: i64,
    pub offset: i64,
}

/// Who is looking: everything (system admin), or public events, the
/// caller's own, and membership-gated events of the listed scopes (or, in
/// the embedded mode, of the scopes the memberships table lists).
#[derive(Debug, Clone)]
pub enum Audience {
    Everything,
    Member {
        user: UserId,
        member_scopes: Vec<Scope>,
    },
    LocalMember {
        user: UserId,
    },
}

fn push_filters(qb: &mut QueryBuilder<Postgres>, tenant: TenantId, viewer: UserId, f: &ListFilter) {
    qb.push(" WHERE e.tenant_id = ")
        .push_bind(Uuid::from(tenant));
    if let Some((scope_type, scope_id)) = &f.scope {
        qb.push(" AND e.scope_type = ")
            .push_bind(scope_type.as_str())
            .push("::scope_type AND e.scope_id = ")
            .push_bind(scope_id.as_str());
    }
    // Overlap with [from, to], bounds included, as the original did.
    if let Some(from) = f.from {
        qb.push(" AND e.ends_at >= ").push_bind(from);
    }
    if let Some(to) = f.to {
        qb.push(" AND e.starts_at <= ").push_bind(to);
    }
    if let Some(q) = &f.q {
        let pattern = format!("%{}%", escape_like(q));
        qb.push(" AND (e.title ILIKE ")
            .push_bind(pattern.clone())
            .push(" OR e.description ILIKE ")
            .push_bind(pattern.clone())
            .push(" OR e.location_text ILIKE ")
            .push_bind(pattern)
            .push(")");
    }
    if let Some(v) = f.visibility {
        qb.push(" AND e.visibility = ")
            .push_bind(v.as_str())
            .push("::event_visibility");
    }
    if let Some(by) = f.created_by {
        qb.push(" AND e.created_by = ").push_bind(Uuid::from(by));
    }
    if let Some(status) = f.my_rsvp {
        qb.push(
            " AND EXISTS (SELECT 1 FROM event_rsvps r WHERE r.event_id = e.id AND r.user_id = ",
        )
        .push_bind(Uuid::from(viewer))
        .push(" AND r.status = ")
        .push_bind(status.as_str())
        .push("::rsvp_status)");
    }
}

fn push_audience(qb: &mut QueryBuilder<Postgres>, tenant: TenantId, audience: &Audience) {
    if let Audience::LocalMember { user } = audience {
        qb.push(" AND (e.visibility = 'public' OR e.created_by = ")
            .push_bind(Uuid::from(*user))
            .push(
                " OR (((e.visibility = 'community' AND e.scope_type = 'COMMUNITY') \
                   OR (e.visibility = 'team' AND e.scope_type = 'TEAM')) \
                  AND EXISTS (SELECT 1 FROM scope_memberships m WHERE m.tenant_id = ",
            )
            .push_bind(Uuid::from(tenant))
            .push(" AND m.user_id = ")
            .push_bind(Uuid::from(*user))
            .push(" AND m.scope_type = e.scope_type AND m.scope_id = e.scope_id)))");
        return;
    }
    let Audience::Member {
        user,
        member_scopes,
    } = audience
    else {
        return;
    };
    let types: Vec<&str> = member_scopes
        .iter()
        .map(|s| s.scope_type().as_str())
        .collect();
    let ids: Vec<&str> = member_scopes
        .iter()
        .map(|s| s.scope_id().as_str())
        .collect();
    qb.push(" AND (e.visibility = 'public' OR e.created_by = ")
        .push_bind(Uuid::from(*user))
        .push(
            " OR (((e.visibility = 'community' AND e.scope_type = 'COMMUNITY') \
               OR (e.visibility = 'team' AND e.scope_type = 'TEAM')) \
              AND (e.scope_type::text, e.scope_id) IN (SELECT * FROM UNNEST(",
        )
        .push_bind(types)
        .push("::text[], ")
        .push_bind(ids)
        .push("::text[]))))");
}

fn escape_like(q: &str) -> String {
    let mut out = String::with_capacity(q.len());
    for c in q.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Membership-gated scopes among the events the filter matches (not the
/// caller's own events): the only scopes whose membership a list must know.
pub async fn gated_scopes(
    db: &PgPool,
    tenant: TenantId,
    viewer: UserId,
    f: &ListFilter,
) -> Result<Vec<Scope>, AppError> {
    let mut qb = QueryBuilder::new("SELECT DISTINCT e.scope_type::text, e.scope_id FROM events e");
    push_filters(&mut qb, tenant, viewer, f);
    qb.push(
        " AND ((e.visibility = 'community' AND e.scope_type = 'COMMUNITY') \
           OR (e.visibility = 'team' AND e.scope_type = 'TEAM')) AND e.created_by <> ",
    )
    .push_bind(Uuid::from(viewer));
    let rows: Vec<(String, String)> = qb.build_query_as().persistent(false).fetch_all(db).await?;
    Ok(scopes_of(rows))
}

/// One listed event: the event, its counters, the viewer's RSVP and guests.
pub type ListedEvent = (Arc<Event>, RsvpCounts, Option<RsvpStatus>, u32);

#[derive(sqlx::FromRow)]
struct ListedRow {
    #[sqlx(flatten)]
    event: EventRow,
    #[sqlx(flatten)]
    counts: CountsRow,
    my_rsvp: Option<String>,
    my_guests: Option<i32>,
    total_count: i64,
}

/// One page of visible events, each with the viewer's RSVP, and the total
/// the caller may see, in one statement: the page's ids are chosen first,
/// with a window count over the (narrow) rows the filter matched anyway,
/// and only the page's rows are read whole and joined to their counters
/// and the viewer's RSVP, one index lookup each (`OFFSET 0` keeps the
/// planner from turning those into joins over every row of the tenant).
pub async fn list(
    db: &PgPool,
    tenant: TenantId,
    viewer: UserId,
    f: &ListFilter,
    audience: &Audience,
) -> Result<(Vec<ListedEvent>, i64), AppError> {
    let mut page = QueryBuilder::new(format!(
        "SELECT {EVENT_COLUMNS}, {COUNT_COLUMNS}, p.total_count,
                (SELECT r.status::text FROM event_rsvps r WHERE r.event_id = e.id AND r.user_id = "
    ));
    page.push_bind(Uuid::from(viewer));
    page.push(
        ") AS my_rsvp, (SELECT r.guests FROM event_rsvps r WHERE r.event_id = e.id AND r.user_id = ",
    );
    page.push_bind(Uuid::from(viewer));
    page.push(
        ") AS my_guests FROM (SELECT e.id, e.starts_at, count(*) OVER () AS total_count FROM events e",
    );
    push_filters(&mut page, tenant, viewer, f);
    push_audience(&mut page, tenant, audience);
    page.push(" ORDER BY e.starts_at, e.id LIMIT ")
        .push_bind(f.limit)
        .push(" OFFSET ")
        .push_bind(f.offset);
    page.push(
        ") p CROSS JOIN LATERAL (SELECT * FROM events e WHERE e.id = p.id OFFSET 0) e \
         LEFT JOIN LATERAL (SELECT * FROM event_counters c WHERE c.event_id = p.id OFFSET 0) c ON true \
         ORDER BY p.starts_at, p.id",
    );
    let rows = page
        .build_query_as::<ListedRow>()
        .persistent(false)
        .fetch_all(db)
        .await?;
    let total = match rows.first() {
        Some(row) => row.total_count,
        None if f.offset == 0 => 0,
        // Past the end: the page is empty, the total still counts.
        None => {
            let mut count = QueryBuilder::new("SELECT count(*) FROM events e");
            push_filters(&mut count, tenant, viewer, f);
            push_audience(&mut count, tenant, audience);
            count
                .build_query_scalar::<i64>()
                .persistent(false)
                .fetch_one(db)
                .await?
        }
    };
    let items = rows
        .into_iter()
        .map(|row| {
            let mine = row.my_rsvp.as_deref().and_then(parse_rsvp_status);
            let guests = row.my_guests.map_or(0, |g| u32::try_from(g).unwrap_or(0));
            let counts = row.counts.into();
            Event::try_from(row.event)
                .map(|event| (Arc::new(event), counts, mine, guests))
                .map_err(|e| AppError::internal("stored event", e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((items, total))
}

/// One RSVP as the managers' list shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RsvpEntry {
    pub user_id: Uuid,
    pub status: String,
    pub guests: i32,
    pub updated_at: DateTime<Utc>,
    pub waitlist_position: Option<i64>,
}

pub async fn rsvps(
    db: &PgPool,
    event: EventId,
    status: Option<RsvpStatus>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<RsvpEntry>, i64), AppError> {
    let status = status.map(|s| s.as_str());
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_rsvps WHERE event_id = $1 AND ($2::text IS NULL OR status::text = $2)",
    )
    .bind(Uuid::from(event))
    .bind(status)
    .persistent(false)
    .fetch_one(db)
    .await?;
    let rows = sqlx::query_as(
        "SELECT user_id, status::text AS status, guests, updated_at, waitlist_position FROM (
             SELECT user_id, status, guests, updated_at, created_at,
                    CASE WHEN status = 'waitlisted'
                         THEN row_number() OVER (PARTITION BY status = 'waitlisted' ORDER BY waitlist_seq)
                    END AS waitlist_position
             FROM event_rsvps WHERE event_id = $1
         ) r
         WHERE ($2::text IS NULL OR status::text = $2)
         ORDER BY created_at, user_id LIMIT $3 OFFSET $4",
    )
    .bind(Uuid::from(event))
    .bind(status)
    .bind(limit)
    .bind(offset)
    .persistent(false)
    .fetch_all(db)
    .await?;
    Ok((rows, total))
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttendanceEntry {
    pub user_id: Uuid,
    pub marked_by: Uuid,
    pub marked_at: DateTime<Utc>,
}

pub async fn attendance(
    db: &PgPool,
    event: EventId,
    limit: i64,
    offset: i64,
) -> Result<(Vec<AttendanceEntry>, i64), AppError> {
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM event_attendance WHERE event_id = $1")
            .bind(Uuid::from(event))
            .persistent(false)
            .fetch_one(db)
            .await?;
    let rows = sqlx::query_as(
        "SELECT user_id, marked_by, marked_at FROM event_attendance WHERE event_id = $1
         ORDER BY marked_at, user_id LIMIT $2 OFFSET $3",
    )
    .bind(Uuid::from(event))
    .bind(limit)
    .bind(offset)
    .persistent(false)
    .fetch_all(db)
    .await?;
    Ok((rows, total))
}
