//! The audit log: who used elevated rights (system-admin bypass, role
//! changes, DSAR). Entries are written in the transaction of the change
//! they record, or, for reads, before the answer leaves: an entry is never
//! lost to a crash, and a change whose entry cannot be written does not
//! happen.

use serde_json::Value;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub tenant_id: Option<Uuid>,
    pub actor_user_id: Option<Uuid>,
    pub action: &'static str,
    pub target_type: &'static str,
    pub target_id: Option<String>,
    pub request_id: Option<String>,
    pub details: Value,
}

/// Writes `entries` on `conn` (a transaction's connection, or one of the pool).
pub async fn insert(conn: &mut PgConnection, entries: &[AuditEntry]) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = entries.iter().map(|_| Uuid::new_v4()).collect();
    let tenants: Vec<Option<Uuid>> = entries.iter().map(|e| e.tenant_id).collect();
    let actors: Vec<Option<Uuid>> = entries.iter().map(|e| e.actor_user_id).collect();
    let actions: Vec<&str> = entries.iter().map(|e| e.action).collect();
    let target_types: Vec<&str> = entries.iter().map(|e| e.target_type).collect();
    let target_ids: Vec<Option<String>> = entries
        .iter()
        .map(|e| e.target_id.as_deref().map(fit_column))
        .collect();
    let request_ids: Vec<Option<String>> = entries
        .iter()
        .map(|e| e.request_id.as_deref().map(fit_column))
        .collect();
    let details: Vec<Value> = entries.iter().map(|e| e.details.clone()).collect();
    // clock_timestamp(), not now(): entries of one long transaction keep
    // the order they were made in.
    sqlx::query(
        "INSERT INTO audit_log (id, tenant_id, actor_user_id, action, target_type, target_id, request_id, details, created_at)
         SELECT i, t, a, ac, tt, ti, r, d, clock_timestamp()
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::jsonb[])
           AS u(i, t, a, ac, tt, ti, r, d)",
    )
    .bind(ids)
    .bind(tenants)
    .bind(actors)
    .bind(actions)
    .bind(target_types)
    .bind(target_ids)
    .bind(request_ids)
    .bind(details)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Writes `entries` in a transaction of their own (reads, and changes made
/// by an authority that is not our database).
pub async fn record(db: &sqlx::PgPool, entries: &[AuditEntry]) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut conn = db.acquire().await?;
    insert(&mut conn, entries).await
}

/// A caller-supplied text (the request id) as the 255-character columns
/// take it: NUL removed (Postgres text cannot hold it) and cut to 255
/// characters. Without this, one long `X-Request-Id` failed the insert of
/// every entry written with it.
fn fit_column(s: &str) -> String {
    s.chars().filter(|c| *c != '\0').take(255).collect()
}

/// Which entries `admin.audit.list` shows: one tenant's, filtered, one page.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditFilter {
    pub tenant: Uuid,
    pub actor: Option<Uuid>,
    pub target_id: Option<String>,
    pub action: Option<String>,
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    pub limit: i64,
    pub offset: i64,
}

/// An entry as read back.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredEntry {
    pub id: Uuid,
    #[sqlx(rename = "created_at")]
    pub at: chrono::DateTime<chrono::Utc>,
    pub tenant_id: Option<Uuid>,
    pub actor_user_id: Option<Uuid>,
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub request_id: Option<String>,
    pub details: Value,
}

#[derive(sqlx::FromRow)]
struct CountedEntry {
    #[sqlx(flatten)]
    entry: StoredEntry,
    total_count: i64,
}

/// `WHERE` with the filters that are set.
fn push_filter(qb: &mut QueryBuilder<Postgres>, f: &AuditFilter) {
    qb.push(" WHERE tenant_id = ").push_bind(f.tenant);
    if let Some(actor) = f.actor {
        qb.push(" AND actor_user_id = ").push_bind(actor);
    }
    if let Some(target) = &f.target_id {
        qb.push(" AND target_id = ").push_bind(target.clone());
    }
    if let Some(action) = &f.action {
        qb.push(" AND action = ").push_bind(action.clone());
    }
    if let Some(from) = f.from {
        qb.push(" AND created_at >= ").push_bind(from);
    }
    if let Some(to) = f.to {
        qb.push(" AND created_at < ").push_bind(to);
    }
}

/// One page of the entries `filter` selects, newest first, and how many
/// it selects in all. `from` is inclusive, `to` exclusive.
pub async fn list(
    db: &sqlx::PgPool,
    filter: &AuditFilter,
) -> Result<(Vec<StoredEntry>, i64), sqlx::Error> {
    let mut page = QueryBuilder::new(
        "SELECT id, created_at, tenant_id, actor_user_id, action, target_type, target_id, \
         request_id, details, count(*) OVER () AS total_count FROM audit_log",
    );
    push_filter(&mut page, filter);
    page.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(filter.limit)
        .push(" OFFSET ")
        .push_bind(filter.offset);
    let rows = page.build_query_as::<CountedEntry>().fetch_all(db).await?;
    let total = match rows.first() {
        Some(row) => row.total_count,
        None if filter.offset == 0 => 0,
        // Past the end: the page is empty, the total still counts.
        None => {
            let mut count = QueryBuilder::new("SELECT count(*) FROM audit_log");
            push_filter(&mut count, filter);
            count.build_query_scalar::<i64>().fetch_one(db).await?
        }
    };
    Ok((rows.into_iter().map(|r| r.entry).collect(), total))
}
