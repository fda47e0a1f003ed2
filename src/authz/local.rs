//! The embedded authorization mode: role bindings and memberships live in
//! our own tables and are managed through the admin operations.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::InternalContext;
use crate::authz::{
    Authorizer, CallBudget, MEMBER_PERMISSIONS, MEMBER_ROLE, Memberships, Permission, Role,
};
use crate::domain::{Scope, ScopeType};
use crate::error::AppError;

/// How long one instance may use a user's role bindings before reading
/// them again. Grants and revokes made through this instance apply at once.
pub const BINDINGS_TTL: Duration = Duration::from_secs(2);
const MAX_CACHED_USERS: usize = 100_000;

#[derive(Debug, Clone)]
struct Binding {
    role: Role,
    scope_type: ScopeType,
    scope_id: String,
}

impl Binding {
    /// Whether the binding applies at `scope`: a tenant-wide binding covers
    /// every scope of the tenant, any other only its own scope.
    fn covers(&self, ctx: &InternalContext, scope: &Scope) -> bool {
        match self.scope_type {
            ScopeType::Tenant => self.scope_id == ctx.tenant_id.to_string(),
            other => other == scope.scope_type() && self.scope_id == scope.scope_id().as_str(),
        }
    }
}

/// (tenant, user) → when read, and the user's bindings.
type BindingCache = HashMap<(Uuid, Uuid), (Instant, Vec<Binding>)>;

pub struct LocalAuthorizer {
    db: PgPool,
    bindings: Mutex<BindingCache>,
}

impl LocalAuthorizer {
    pub fn new(db: PgPool) -> Self {
        Self {
            db,
            bindings: Mutex::default(),
        }
    }

    /// Forgets a user's cached bindings (after a grant or revoke).
    pub fn invalidate(&self, tenant: Uuid, user: Uuid) {
        self.lock().remove(&(tenant, user));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BindingCache> {
        self.bindings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn bindings_of(&self, tenant: Uuid, user: Uuid) -> Result<Vec<Binding>, AppError> {
        if let Some((at, cached)) = self.lock().get(&(tenant, user))
            && at.elapsed() < BINDINGS_TTL
        {
            return Ok(cached.clone());
        }
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT role, scope_type::text, scope_id FROM role_bindings WHERE tenant_id = $1 AND user_id = $2",
        )
        .bind(tenant)
        .bind(user)
        .fetch_all(&self.db)
        .await?;
        let bindings: Vec<Binding> = rows
            .into_iter()
            .filter_map(|(role, scope_type, scope_id)| {
                Some(Binding {
                    role: Role::from_name(&role)?,
                    scope_type: scope_type.parse().ok()?,
                    scope_id,
                })
            })
            .collect();
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED_USERS {
            cache.retain(|_, (at, _)| at.elapsed() < BINDINGS_TTL);
            if cache.len() >= MAX_CACHED_USERS {
                cache.clear();
            }
        }
        cache.insert((tenant, user), (Instant::now(), bindings.clone()));
        Ok(bindings)
    }
}

impl Authorizer for LocalAuthorizer {
    fn memberships_in_database(&self) -> bool {
        true
    }

    fn has_permission<'a>(
        &'a self,
        ctx: &'a InternalContext,
        permission: Permission,
        scope: &'a Scope,
        _budget: &'a CallBudget,
    ) -> BoxFuture<'a, Result<Option<bool>, AppError>> {
        async move {
            // Every tenant member holds the implicit member role at any scope.
            if MEMBER_PERMISSIONS.contains(&permission) {
                return Ok(Some(true));
            }
            let bindings = self.bindings_of(ctx.tenant_id, ctx.user_id).await?;
            Ok(Some(bindings.iter().any(|b| {
                b.role.permissions().contains(&permission) && b.covers(ctx, scope)
            })))
        }
        .boxed()
    }

    fn roles<'a>(
        &'a self,
        ctx: &'a InternalContext,
        scope: &'a Scope,
        _budget: &'a CallBudget,
    ) -> BoxFuture<'a, Result<Vec<String>, AppError>> {
        async move {
            let bindings = self.bindings_of(ctx.tenant_id, ctx.user_id).await?;
            let mut roles = vec![MEMBER_ROLE.to_string()];
            for b in bindings.iter().filter(|b| b.covers(ctx, scope)) {
                if !roles.iter().any(|r| r == b.role.name()) {
                    roles.push(b.role.name().to_string());
                }
            }
            Ok(roles)
        }
        .boxed()
    }

    fn memberships<'a>(
        &'a self,
        ctx: &'a InternalContext,
        scopes: &'a [Scope],
        _budget: &'a CallBudget,
    ) -> BoxFuture<'a, Result<Memberships, AppError>> {
        async move {
            let types: Vec<&str> = scopes.iter().map(|s| s.scope_type().as_str()).collect();
            let ids: Vec<&str> = scopes.iter().map(|s| s.scope_id().as_str()).collect();
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT m.scope_type::text, m.scope_id FROM scope_memberships m
                 JOIN UNNEST($3::text[], $4::text[]) AS q(scope_type, scope_id)
                   ON m.scope_type::text = q.scope_type AND m.scope_id = q.scope_id
                 WHERE m.tenant_id = $1 AND m.user_id = $2",
            )
            .bind(ctx.tenant_id)
            .bind(ctx.user_id)
            .bind(types)
            .bind(ids)
            .fetch_all(&self.db)
            .await?;
            let member_of = crate::store::reads::scopes_of(rows).into_iter().collect();
            Ok(Memberships {
                member_of,
                unknown: Default::default(),
            })
        }
        .boxed()
    }
}
