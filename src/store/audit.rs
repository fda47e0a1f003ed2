//! The audit log: who used elevated rights (system-admin bypass, role
//! changes, DSAR). Entries are written in the transaction of the change
//! they record, or, for reads, before the answer leaves: an entry is never
//! lost to a crash, and a change whose entry cannot be written does not
//! happen.

use serde_json::Value;
use sqlx::PgConnection;
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
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntry {
    pub id: Uuid,
    pub at: chrono::DateTime<chrono::Utc>,
    pub tenant_id: Option<Uuid>,
    pub actor_user_id: Option<Uuid>,
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub request_id: Option<String>,
    pub details: Value,
}

type StoredRow = (
    Uuid,
    chrono::DateTime<chrono::Utc>,
    Option<Uuid>,
    Option<Uuid>,
    String,
    String,
    Option<String>,
    Option<String>,
    Value,
    i64,
);

/// One page of the entries `filter` selects, newest first, and how many
/// it selects in all. `from` is inclusive, `to` exclusive.
pub async fn list(
    db: &sqlx::PgPool,
    filter: &AuditFilter,
) -> Result<(Vec<StoredEntry>, i64), sqlx::Error> {
    const WHERE: &str = "WHERE tenant_id = $1
            AND ($2::uuid IS NULL OR actor_user_id = $2)
            AND ($3::text IS NULL OR target_id = $3)
            AND ($4::text IS NULL OR action = $4)
            AND ($5::timestamptz IS NULL OR created_at >= $5)
            AND ($6::timestamptz IS NULL OR created_at < $6)";
    let sql = format!(
        "SELECT id, created_at, tenant_id, actor_user_id, action, target_type, target_id,
                request_id, details, count(*) OVER ()
           FROM audit_log {WHERE}
          ORDER BY created_at DESC, id DESC
          LIMIT $7 OFFSET $8"
    );
    let rows: Vec<StoredRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(filter.tenant)
        .bind(filter.actor)
        .bind(filter.target_id.as_deref())
        .bind(filter.action.as_deref())
        .bind(filter.from)
        .bind(filter.to)
        .bind(filter.limit)
        .bind(filter.offset)
        .fetch_all(db)
        .await?;
    let total = match rows.first() {
        Some(row) => row.9,
        None if filter.offset > 0 => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM audit_log {WHERE} AND $7::bigint IS NOT NULL AND $8::bigint IS NOT NULL"
            )))
            .bind(filter.tenant)
            .bind(filter.actor)
            .bind(filter.target_id.as_deref())
            .bind(filter.action.as_deref())
            .bind(filter.from)
            .bind(filter.to)
            .bind(filter.limit)
            .bind(filter.offset)
            .fetch_one(db)
            .await?
        }
        None => 0,
    };
    let entries = rows
        .into_iter()
        .map(
            |(
                id,
                at,
                tenant_id,
                actor_user_id,
                action,
                target_type,
                target_id,
                request_id,
                details,
                _,
            )| {
                StoredEntry {
                    id,
                    at,
                    tenant_id,
                    actor_user_id,
                    action,
                    target_type,
                    target_id,
                    request_id,
                    details,
                }
            },
        )
        .collect();
    Ok((entries, total))
}
