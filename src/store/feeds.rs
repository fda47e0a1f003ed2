//! Calendar feed tokens: made, listed and revoked by their owner (revoked
//! by a tenant admin too), looked up by the SHA-256 of the token.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{RsvpStatus, Scope, ScopeId, ScopeType, TenantId, UserId};
use crate::store::audit::{self, AuditEntry};
use crate::store::rows::parse_rsvp_status;

/// One feed, as stored (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    pub id: Uuid,
    pub tenant: TenantId,
    pub owner: UserId,
    pub tenant_slug: String,
    pub scope: Option<Scope>,
    pub my_rsvp: Option<RsvpStatus>,
    pub owner_blocked: bool,
    pub created_at: DateTime<Utc>,
}

type Row = (
    Uuid,
    Uuid,
    Uuid,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
    DateTime<Utc>,
);

const COLUMNS: &str = "id, tenant_id, owner_id, tenant_slug, scope_type::text, scope_id, \
                       my_rsvp::text, owner_blocked, created_at";

fn feed(row: Row) -> Feed {
    let (id, tenant, owner, tenant_slug, scope_type, scope_id, my_rsvp, owner_blocked, created_at) =
        row;
    let scope = match (
        scope_type.and_then(|t| t.parse::<ScopeType>().ok()),
        scope_id.and_then(|s| ScopeId::parse(&s).ok()),
    ) {
        (Some(t), Some(id)) => Some(Scope::from_stored(t, id)),
        _ => None,
    };
    Feed {
        id,
        tenant: tenant.into(),
        owner: owner.into(),
        tenant_slug,
        scope,
        my_rsvp: my_rsvp.as_deref().and_then(parse_rsvp_status),
        owner_blocked,
        created_at,
    }
}

/// Stores a new feed with the SHA-256 of its token, and the entries owed;
/// `false` (nothing stored) when the owner already has `max` feeds.
pub async fn create(
    db: &PgPool,
    feed: &Feed,
    token_hash: &[u8; 32],
    owed: &[AuditEntry],
    max: i64,
) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    // One owner's feeds are counted under a lock of their own, so two
    // creates at once cannot both pass the cap.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("feeds:{}:{}", feed.tenant, feed.owner))
        .execute(&mut *tx)
        .await?;
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM feed_tokens WHERE tenant_id = $1 AND owner_id = $2",
    )
    .bind(Uuid::from(feed.tenant))
    .bind(Uuid::from(feed.owner))
    .fetch_one(&mut *tx)
    .await?;
    if held >= max {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO feed_tokens (id, tenant_id, owner_id, token_hash, tenant_slug, scope_type,
                                  scope_id, my_rsvp, created_at)
         VALUES ($1, $2, $3, $4, $5, $6::scope_type, $7, $8::rsvp_status, $9)",
    )
    .bind(feed.id)
    .bind(Uuid::from(feed.tenant))
    .bind(Uuid::from(feed.owner))
    .bind(&token_hash[..])
    .bind(&feed.tenant_slug)
    .bind(feed.scope.as_ref().map(|s| s.scope_type().as_str()))
    .bind(
        feed.scope
            .as_ref()
            .map(|s| s.scope_id().as_str().to_string()),
    )
    .bind(feed.my_rsvp.map(|s| s.as_str()))
    .bind(feed.created_at)
    .execute(&mut *tx)
    .await?;
    audit::insert(&mut tx, owed).await?;
    tx.commit().await?;
    Ok(true)
}

/// The owner's feeds, oldest first.
pub async fn list(db: &PgPool, tenant: TenantId, owner: UserId) -> Result<Vec<Feed>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM feed_tokens WHERE tenant_id = $1 AND owner_id = $2
         ORDER BY created_at, id"
    )))
    .bind(Uuid::from(tenant))
    .bind(Uuid::from(owner))
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(feed).collect())
}

/// One feed of the tenant by id.
pub async fn get(db: &PgPool, tenant: TenantId, id: Uuid) -> Result<Option<Feed>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM feed_tokens WHERE tenant_id = $1 AND id = $2"
    )))
    .bind(Uuid::from(tenant))
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(feed))
}

/// The feed whose token has this SHA-256.
pub async fn by_token_hash(db: &PgPool, hash: &[u8; 32]) -> Result<Option<Feed>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM feed_tokens WHERE token_hash = $1"
    )))
    .bind(&hash[..])
    .fetch_optional(db)
    .await?;
    Ok(row.map(feed))
}

/// Deletes the feed (and writes the entries owed); whether there was one.
pub async fn revoke(
    db: &PgPool,
    tenant: TenantId,
    id: Uuid,
    owed: &[AuditEntry],
) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let gone = sqlx::query("DELETE FROM feed_tokens WHERE tenant_id = $1 AND id = $2")
        .bind(Uuid::from(tenant))
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if gone > 0 {
        audit::insert(&mut tx, owed).await?;
    }
    tx.commit().await?;
    Ok(gone > 0)
}

/// Records whether the owner's signed requests show them suspended or
/// banned; only rows whose mark changes are written.
pub async fn mark_owner_blocked(
    db: &PgPool,
    tenant: TenantId,
    owner: UserId,
    blocked: bool,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE feed_tokens SET owner_blocked = $3
         WHERE tenant_id = $1 AND owner_id = $2 AND owner_blocked <> $3",
    )
    .bind(Uuid::from(tenant))
    .bind(Uuid::from(owner))
    .bind(blocked)
    .execute(db)
    .await?
    .rows_affected())
}
