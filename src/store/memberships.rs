//! Community and team memberships of the embedded (`local`) authorization
//! mode: added, removed and listed by tenant admins, each change written
//! with its audit entry in one transaction. Reads ask this table directly
//! (no cache), so a change applies to every instance's next read.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::domain::{Scope, ScopeId, ScopeType, TenantId};
use crate::store::audit::{self, AuditEntry};

/// One membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub user: Uuid,
    pub scope_type: ScopeType,
    pub scope_id: String,
    /// Unknown for memberships written before they were managed here.
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// A user and the community or team they belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipSpec {
    pub user: Uuid,
    /// COMMUNITY or TEAM.
    pub scope: Scope,
}

/// Which memberships of a tenant a listing shows, one page of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipFilter {
    pub user: Option<Uuid>,
    pub scope_type: Option<ScopeType>,
    pub scope_id: Option<ScopeId>,
    pub limit: i64,
    pub offset: i64,
}

type Row = (Uuid, String, String, Option<Uuid>, DateTime<Utc>);
/// A row, and whether the insert made it.
type AddedRow = (Uuid, String, String, Option<Uuid>, DateTime<Utc>, bool);

fn membership((user, scope_type, scope_id, created_by, created_at): Row) -> Option<Membership> {
    Some(Membership {
        user,
        scope_type: scope_type.parse().ok()?,
        scope_id,
        created_by,
        created_at,
    })
}

/// Adds `user` to `scope` (idempotent): the membership, and whether it is
/// new. `audit` makes the entries that record the outcome.
pub async fn add(
    db: &PgPool,
    tenant: TenantId,
    user: Uuid,
    scope: &Scope,
    actor: Uuid,
    audit: impl Fn(&Membership, bool) -> Vec<AuditEntry>,
) -> Result<(Membership, bool), sqlx::Error> {
    let mut tx = db.begin().await?;
    // Inserted, or the existing one; a concurrent remove between the
    // conflict and the read leaves neither, so once more then.
    for _ in 0..2 {
        let row: Option<AddedRow> =
            sqlx::query_as(
                "WITH ins AS (
                   INSERT INTO scope_memberships (tenant_id, scope_type, scope_id, user_id, created_by)
                   VALUES ($1, $2::scope_type, $3, $4, $5)
                   ON CONFLICT DO NOTHING
                   RETURNING user_id, scope_type::text, scope_id, created_by, created_at
                 )
                 SELECT *, true FROM ins
                 UNION ALL
                 SELECT user_id, scope_type::text, scope_id, created_by, created_at, false
                   FROM scope_memberships
                  WHERE tenant_id = $1 AND scope_type = $2::scope_type AND scope_id = $3
                    AND user_id = $4 AND NOT EXISTS (SELECT 1 FROM ins)",
            )
            .bind(Uuid::from(tenant))
            .bind(scope.scope_type().as_str())
            .bind(scope.scope_id().as_str())
            .bind(user)
            .bind(actor)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some((user, scope_type, scope_id, created_by, created_at, created)) = row
            && let Some(found) = membership((user, scope_type, scope_id, created_by, created_at))
        {
            audit::insert(&mut tx, &audit(&found, created)).await?;
            tx.commit().await?;
            return Ok((found, created));
        }
    }
    Err(sqlx::Error::RowNotFound)
}

/// Removes `user` from `scope`: how many memberships went (0 or 1).
pub async fn remove(
    db: &PgPool,
    tenant: TenantId,
    user: Uuid,
    scope: &Scope,
    audit: impl Fn(u64) -> Vec<AuditEntry>,
) -> Result<u64, sqlx::Error> {
    let mut tx = db.begin().await?;
    let removed = sqlx::query(
        "DELETE FROM scope_memberships
          WHERE tenant_id = $1 AND scope_type = $2::scope_type AND scope_id = $3 AND user_id = $4",
    )
    .bind(Uuid::from(tenant))
    .bind(scope.scope_type().as_str())
    .bind(scope.scope_id().as_str())
    .bind(user)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    audit::insert(&mut tx, &audit(removed)).await?;
    tx.commit().await?;
    Ok(removed)
}

#[derive(sqlx::FromRow)]
struct CountedRow {
    user_id: Uuid,
    scope_type: String,
    scope_id: String,
    created_by: Option<Uuid>,
    created_at: DateTime<Utc>,
    total_count: i64,
}

/// `WHERE` with the tenant and the filters that are set.
fn push_filter(qb: &mut QueryBuilder<Postgres>, tenant: TenantId, f: &MembershipFilter) {
    qb.push(" WHERE tenant_id = ").push_bind(Uuid::from(tenant));
    if let Some(user) = f.user {
        qb.push(" AND user_id = ").push_bind(user);
    }
    if let Some(scope_type) = f.scope_type {
        qb.push(" AND scope_type = ")
            .push_bind(scope_type.as_str())
            .push("::scope_type");
    }
    if let Some(scope_id) = &f.scope_id {
        qb.push(" AND scope_id = ")
            .push_bind(scope_id.as_str().to_string());
    }
}

/// One page of the tenant's memberships that `filter` selects, newest
/// first, and how many it selects in all.
pub async fn list(
    db: &PgPool,
    tenant: TenantId,
    filter: &MembershipFilter,
) -> Result<(Vec<Membership>, i64), sqlx::Error> {
    let mut page = QueryBuilder::new(
        "SELECT user_id, scope_type::text AS scope_type, scope_id, created_by, created_at, \
         count(*) OVER () AS total_count FROM scope_memberships",
    );
    push_filter(&mut page, tenant, filter);
    page.push(" ORDER BY created_at DESC, scope_type, scope_id, user_id LIMIT ")
        .push_bind(filter.limit)
        .push(" OFFSET ")
        .push_bind(filter.offset);
    let rows = page.build_query_as::<CountedRow>().fetch_all(db).await?;
    let total = match rows.first() {
        Some(row) => row.total_count,
        None if filter.offset == 0 => 0,
        // Past the end: the page is empty, the total still counts.
        None => {
            let mut count = QueryBuilder::new("SELECT count(*) FROM scope_memberships");
            push_filter(&mut count, tenant, filter);
            count.build_query_scalar::<i64>().fetch_one(db).await?
        }
    };
    Ok((
        rows.into_iter()
            .filter_map(|r| {
                membership((
                    r.user_id,
                    r.scope_type,
                    r.scope_id,
                    r.created_by,
                    r.created_at,
                ))
            })
            .collect(),
        total,
    ))
}
