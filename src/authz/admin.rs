//! Role administration: the role catalog and the role bindings of one
//! tenant, granted and revoked by its tenant admins (system admins in
//! every tenant); only a system admin grants or revokes `events.admin`.
//!
//! Two backends behind [`RoleAdmin`], one per authorization mode:
//! [`LocalRoleAdmin`] keeps bindings in our `role_bindings` table (`local`
//! mode); [`AccessRoleAdmin`] proxies to Access's tenant-admin API
//! (`access` mode: `/access/admin/roles` and `/access/admin/role-bindings`),
//! and also seeds our two roles there as system templates
//! ([`AccessRoleAdmin::bootstrap`], through `/access/roles`).
//! [`RoleAdministration`] wraps either with the audit log; the admin
//! operations (`admin.roles.*`) and the `events-svc access` commands both
//! go through it, so they behave alike.
//! Each backend forgets the cached permissions of the users it changes.
//! The contract is `docs/authorization.md` ("Roles and bindings").

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::InternalContext;
use crate::authz::{AccessAuthorizer, LocalAuthorizer, Role};
use crate::domain::{DomainError, ErrorCode, Scope, ScopeId, ScopeType, TenantId, format_utc};
use crate::error::AppError;
use crate::store::audit::{self, AuditEntry};

/// The `service` of our roles in Access.
pub const ACCESS_SERVICE: &str = "events";
/// Bindings a listing returns by default, and at most.
pub const DEFAULT_LIST_LIMIT: i64 = 500;
pub const MAX_LIST_LIMIT: i64 = 1000;
/// Bindings asked of Access when looking for one user's bindings at one
/// scope (grant, revoke): far more than one user ever has there.
const SEARCH_LIMIT: &str = "200";

/// Which bindings of the caller's tenant a listing shows.
#[derive(Debug, Clone)]
pub struct BindingFilter {
    pub user: Option<Uuid>,
    pub role: Option<Role>,
    pub scope_type: Option<ScopeType>,
    pub scope_id: Option<ScopeId>,
    /// 1..=[`MAX_LIST_LIMIT`].
    pub limit: i64,
}

impl Default for BindingFilter {
    fn default() -> Self {
        Self {
            user: None,
            role: None,
            scope_type: None,
            scope_id: None,
            limit: DEFAULT_LIST_LIMIT,
        }
    }
}

/// A binding to grant, or to revoke by what it binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingSpec {
    pub user: Uuid,
    pub role: Role,
    pub scope: Scope,
}

/// The scope of a grant or revoke: `TENANT` (the tenant itself) unless a
/// type is given; a `COMMUNITY` or `TEAM` scope needs its id; a `TENANT`
/// scope's id, when given, must be the tenant id. The error names the field.
pub fn binding_scope(
    tenant: TenantId,
    scope_type: Option<ScopeType>,
    scope_id: Option<&str>,
) -> Result<Scope, (&'static str, String)> {
    let scope_type = scope_type.unwrap_or(ScopeType::Tenant);
    let id = match scope_id {
        Some(id) => ScopeId::parse(id).map_err(|e| ("scopeId", e.into_message()))?,
        None if scope_type == ScopeType::Tenant => ScopeId::from(tenant),
        None => {
            return Err(("scopeId", format!("field required for {scope_type} scope")));
        }
    };
    Scope::new(tenant, scope_type, id).map_err(|e| ("scopeId", e.into_message()))
}

/// What a revoke removes: one binding by id, or the binding of a user,
/// role and scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    Id(String),
    Binding(BindingSpec),
}

/// A role binding as the admin operations show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Ours: a UUID; Access's: its id, as text.
    pub id: String,
    pub user: Uuid,
    pub role: Role,
    pub scope_type: ScopeType,
    pub scope_id: String,
    /// Unknown (`None`) for bindings kept by Access.
    pub created_by: Option<Uuid>,
    pub created_at: Option<String>,
}

impl Binding {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "userId": self.user.to_string(),
            "role": self.role.name(),
            "scopeType": self.scope_type.as_str(),
            "scopeId": self.scope_id,
            "createdBy": self.created_by.map(|u| u.to_string()),
            "createdAt": self.created_at,
        })
    }
}

/// One role of the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleEntry {
    pub role: Role,
    /// `access` mode: the role's id in Access, `None` while it does not
    /// exist there (`events-svc access bootstrap` creates it).
    pub access_id: Option<Value>,
}

/// The catalog and the bindings a filter selects.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    pub roles: Vec<RoleEntry>,
    pub bindings: Vec<Binding>,
    /// Whether roles have ids in an authority (Access) to show.
    pub remote: bool,
}

impl Listing {
    pub fn to_json(&self) -> Value {
        let roles: Vec<Value> = self
            .roles
            .iter()
            .map(|r| {
                let mut role = json!({
                    "name": r.role.name(),
                    "permissions": r.role.permissions().iter().map(|p| p.key()).collect::<Vec<_>>(),
                });
                if self.remote {
                    role["accessRoleId"] = r.access_id.clone().unwrap_or(Value::Null);
                }
                role
            })
            .collect();
        json!({
            "roles": roles,
            "bindings": self.bindings.iter().map(Binding::to_json).collect::<Vec<_>>(),
        })
    }
}

/// What a revoke removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revoked {
    /// Bindings removed, with what they bound.
    pub bindings: Vec<Binding>,
    /// Ids of bindings removed whose content the authority did not tell
    /// (Access, revoking by id).
    pub ids: Vec<String>,
}

impl Revoked {
    pub fn count(&self) -> usize {
        self.bindings.len() + self.ids.len()
    }
}

/// Where bindings are kept: our tables or Access.
pub trait RoleAdmin: Send + Sync {
    /// `local` or `access`.
    fn mode(&self) -> &'static str;

    /// The catalog and the bindings of the caller's tenant that `filter` selects.
    fn list<'a>(
        &'a self,
        ctx: &'a InternalContext,
        filter: &'a BindingFilter,
    ) -> BoxFuture<'a, Result<Listing, AppError>>;

    /// Grants `spec` in the caller's tenant; the binding, and whether it is
    /// new (`false`: it existed and nothing changed). `audit` makes the
    /// entries that record the outcome; they are written with the change
    /// (in its transaction where the bindings are ours).
    fn grant<'a>(
        &'a self,
        ctx: &'a InternalContext,
        spec: &'a BindingSpec,
        audit: Recorder<'a, (Binding, bool)>,
    ) -> BoxFuture<'a, Result<(Binding, bool), AppError>>;

    /// Removes the bindings `target` names in the caller's tenant.
    fn revoke<'a>(
        &'a self,
        ctx: &'a InternalContext,
        target: &'a RevokeTarget,
        audit: Recorder<'a, Revoked>,
    ) -> BoxFuture<'a, Result<Revoked, AppError>>;
}

/// The audit entries that record the outcome of a role change.
pub type Recorder<'a, T> = &'a (dyn Fn(&T) -> Vec<AuditEntry> + Send + Sync);

/// A backend with the audit log: every grant and revoke writes
/// `role.granted` / `role.revoked` rows (actor, tenant, request id, the
/// user as target, role and scope in the details), with the change. Cheap
/// to clone.
#[derive(Clone)]
pub struct RoleAdministration {
    backend: Arc<dyn RoleAdmin>,
}

impl RoleAdministration {
    pub fn new(backend: Arc<dyn RoleAdmin>) -> Self {
        Self { backend }
    }

    pub fn mode(&self) -> &'static str {
        self.backend.mode()
    }

    pub async fn list(
        &self,
        ctx: &InternalContext,
        filter: &BindingFilter,
    ) -> Result<Listing, AppError> {
        self.backend.list(ctx, filter).await
    }

    /// Grants `spec`; `owed` are entries the request owes the audit log
    /// besides the grant's own, written with it.
    pub async fn grant(
        &self,
        ctx: &InternalContext,
        spec: &BindingSpec,
        owed: Vec<AuditEntry>,
    ) -> Result<(Binding, bool), AppError> {
        may_assign(ctx, spec.role)?;
        let mode = self.mode();
        let recorder = move |(binding, created): &(Binding, bool)| {
            let mut entries = owed.clone();
            entries.push(entry(
                ctx,
                "role.granted",
                "user",
                spec.user.to_string(),
                json!({
                    "role": spec.role.name(),
                    "scopeType": spec.scope.scope_type().as_str(),
                    "scopeId": spec.scope.scope_id().as_str(),
                    "bindingId": binding.id,
                    "created": created,
                    "authz": mode,
                }),
            ));
            entries
        };
        self.backend.grant(ctx, spec, &recorder).await
    }

    /// Revokes what `target` names; `owed` as for [`Self::grant`].
    pub async fn revoke(
        &self,
        ctx: &InternalContext,
        target: &RevokeTarget,
        owed: Vec<AuditEntry>,
    ) -> Result<Revoked, AppError> {
        if let RevokeTarget::Binding(spec) = target {
            may_assign(ctx, spec.role)?;
        }
        let mode = self.mode();
        let recorder = move |revoked: &Revoked| {
            let mut entries = owed.clone();
            entries.extend(revoke_entries(ctx, target, revoked, mode));
            entries
        };
        self.backend.revoke(ctx, target, &recorder).await
    }
}

/// A system admin who is not also suspended or banned.
fn is_system_admin(ctx: &InternalContext) -> bool {
    ctx.master_flags.is_system_admin() && !ctx.master_flags.is_suspended_or_banned()
}

/// Whether the caller may grant or revoke `role`: the roles only system
/// admins hand out ([`Role::system_admins_only`]) are refused to others.
/// Callers reach this only as tenant admins.
fn may_assign(ctx: &InternalContext, role: Role) -> Result<(), AppError> {
    if role.system_admins_only() && !is_system_admin(ctx) {
        return Err(AppError::Forbidden(
            "Only a system admin may grant or revoke events.admin",
        ));
    }
    Ok(())
}

fn entry(
    ctx: &InternalContext,
    action: &'static str,
    target_type: &'static str,
    target_id: String,
    details: Value,
) -> AuditEntry {
    AuditEntry {
        tenant_id: Some(ctx.tenant_id),
        actor_user_id: Some(ctx.user_id),
        action,
        target_type,
        target_id: Some(target_id),
        request_id: Some(ctx.request_id.clone()),
        details,
    }
}

/// One `role.revoked` row per binding removed; one for the attempt when
/// nothing matched.
fn revoke_entries(
    ctx: &InternalContext,
    target: &RevokeTarget,
    revoked: &Revoked,
    mode: &'static str,
) -> Vec<AuditEntry> {
    let mut entries = Vec::new();
    for b in &revoked.bindings {
        entries.push(entry(
            ctx,
            "role.revoked",
            "user",
            b.user.to_string(),
            json!({"role": b.role.name(), "scopeType": b.scope_type.as_str(),
                   "scopeId": b.scope_id, "bindingId": b.id, "authz": mode}),
        ));
    }
    for id in &revoked.ids {
        entries.push(entry(
            ctx,
            "role.revoked",
            "role_binding",
            id.clone(),
            json!({"bindingId": id, "authz": mode}),
        ));
    }
    if revoked.count() == 0 {
        let (target_type, target_id, details) = match target {
            RevokeTarget::Id(id) => (
                "role_binding",
                id.clone(),
                json!({"bindingId": id, "revoked": 0, "authz": mode}),
            ),
            RevokeTarget::Binding(spec) => (
                "user",
                spec.user.to_string(),
                json!({"role": spec.role.name(), "scopeType": spec.scope.scope_type().as_str(),
                       "scopeId": spec.scope.scope_id().as_str(), "revoked": 0, "authz": mode}),
            ),
        };
        entries.push(entry(ctx, "role.revoked", target_type, target_id, details));
    }
    entries
}

fn field_error(field: &str, message: impl Into<String>) -> AppError {
    DomainError::field(field, message).into()
}

// ---------------------------------------------------------------------------
// local mode
// ---------------------------------------------------------------------------

/// Bindings in our `role_bindings` table.
pub struct LocalRoleAdmin {
    db: PgPool,
    authorizer: Arc<LocalAuthorizer>,
}

type BindingRow = (Uuid, Uuid, String, String, String, Uuid, DateTime<Utc>);

const BINDING_COLUMNS: &str =
    "id, user_id, role, scope_type::text, scope_id, created_by, created_at";

fn local_binding(row: BindingRow) -> Option<Binding> {
    let (id, user, role, scope_type, scope_id, created_by, created_at) = row;
    Some(Binding {
        id: id.to_string(),
        user,
        role: Role::from_name(&role)?,
        scope_type: scope_type.parse().ok()?,
        scope_id,
        created_by: Some(created_by),
        created_at: Some(format_utc(&created_at)),
    })
}

impl LocalRoleAdmin {
    pub fn new(db: PgPool, authorizer: Arc<LocalAuthorizer>) -> Self {
        Self { db, authorizer }
    }

    async fn list_local(
        &self,
        ctx: &InternalContext,
        filter: &BindingFilter,
    ) -> Result<Listing, AppError> {
        let sql = format!(
            "SELECT {BINDING_COLUMNS} FROM role_bindings
             WHERE tenant_id = $1
               AND ($2::uuid IS NULL OR user_id = $2)
               AND ($3::text IS NULL OR role = $3)
               AND ($4::text IS NULL OR scope_type::text = $4)
               AND ($5::text IS NULL OR scope_id = $5)
             ORDER BY created_at, id
             LIMIT $6"
        );
        let rows: Vec<BindingRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(ctx.tenant_id)
            .bind(filter.user)
            .bind(filter.role.map(Role::name))
            .bind(filter.scope_type.map(ScopeType::as_str))
            .bind(filter.scope_id.as_ref().map(|s| s.as_str().to_string()))
            .bind(filter.limit)
            .fetch_all(&self.db)
            .await?;
        Ok(Listing {
            roles: Role::ALL
                .into_iter()
                .map(|role| RoleEntry {
                    role,
                    access_id: None,
                })
                .collect(),
            bindings: rows.into_iter().filter_map(local_binding).collect(),
            remote: false,
        })
    }

    async fn grant_local(
        &self,
        ctx: &InternalContext,
        spec: &BindingSpec,
        audit: Recorder<'_, (Binding, bool)>,
    ) -> Result<(Binding, bool), AppError> {
        let mut tx = self.db.begin().await?;
        // Inserted, or the existing one; a concurrent revoke between the
        // conflict and the read leaves neither, so once more then.
        for _ in 0..2 {
            let row: Option<(Uuid, Uuid, DateTime<Utc>, bool)> = sqlx::query_as(
                "WITH ins AS (
                   INSERT INTO role_bindings (id, tenant_id, user_id, role, scope_type, scope_id, created_by)
                   VALUES ($1, $2, $3, $4, $5::scope_type, $6, $7)
                   ON CONFLICT ON CONSTRAINT role_bindings_unique DO NOTHING
                   RETURNING id, created_by, created_at
                 )
                 SELECT id, created_by, created_at, true FROM ins
                 UNION ALL
                 SELECT id, created_by, created_at, false FROM role_bindings
                  WHERE tenant_id = $2 AND user_id = $3 AND role = $4
                    AND scope_type = $5::scope_type AND scope_id = $6
                    AND NOT EXISTS (SELECT 1 FROM ins)",
            )
            .bind(Uuid::new_v4())
            .bind(ctx.tenant_id)
            .bind(spec.user)
            .bind(spec.role.name())
            .bind(spec.scope.scope_type().as_str())
            .bind(spec.scope.scope_id().as_str())
            .bind(ctx.user_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((id, created_by, created_at, created)) = row {
                let outcome = (
                    Binding {
                        id: id.to_string(),
                        user: spec.user,
                        role: spec.role,
                        scope_type: spec.scope.scope_type(),
                        scope_id: spec.scope.scope_id().as_str().to_string(),
                        created_by: Some(created_by),
                        created_at: Some(format_utc(&created_at)),
                    },
                    created,
                );
                audit::insert(&mut tx, &audit(&outcome)).await?;
                tx.commit().await?;
                self.authorizer.invalidate(ctx.tenant_id, spec.user);
                return Ok(outcome);
            }
        }
        Err(AppError::internal(
            "grant",
            "the binding was neither inserted nor found",
        ))
    }

    async fn revoke_local(
        &self,
        ctx: &InternalContext,
        target: &RevokeTarget,
        audit: Recorder<'_, Revoked>,
    ) -> Result<Revoked, AppError> {
        let mut tx = self.db.begin().await?;
        let rows: Vec<BindingRow> = match target {
            RevokeTarget::Id(id) => {
                let id = Uuid::parse_str(id)
                    .map_err(|_| field_error("bindingId", "must be a binding id (a UUID)"))?;
                let sql = format!(
                    "DELETE FROM role_bindings WHERE tenant_id = $1 AND id = $2
                     RETURNING {BINDING_COLUMNS}"
                );
                sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(ctx.tenant_id)
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?
            }
            RevokeTarget::Binding(spec) => {
                let sql = format!(
                    "DELETE FROM role_bindings
                     WHERE tenant_id = $1 AND user_id = $2 AND role = $3
                       AND scope_type = $4::scope_type AND scope_id = $5
                     RETURNING {BINDING_COLUMNS}"
                );
                sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(ctx.tenant_id)
                    .bind(spec.user)
                    .bind(spec.role.name())
                    .bind(spec.scope.scope_type().as_str())
                    .bind(spec.scope.scope_id().as_str())
                    .fetch_all(&mut *tx)
                    .await?
            }
        };
        let revoked = Revoked {
            bindings: rows.into_iter().filter_map(local_binding).collect(),
            ids: Vec::new(),
        };
        // Revoked by id, the role is known only now; dropping the
        // transaction puts a binding the caller may not remove back.
        for b in &revoked.bindings {
            may_assign(ctx, b.role)?;
        }
        audit::insert(&mut tx, &audit(&revoked)).await?;
        tx.commit().await?;
        for b in &revoked.bindings {
            self.authorizer.invalidate(ctx.tenant_id, b.user);
        }
        Ok(revoked)
    }
}

impl RoleAdmin for LocalRoleAdmin {
    fn mode(&self) -> &'static str {
        "local"
    }

    fn list<'a>(
        &'a self,
        ctx: &'a InternalContext,
        filter: &'a BindingFilter,
    ) -> BoxFuture<'a, Result<Listing, AppError>> {
        self.list_local(ctx, filter).boxed()
    }

    fn grant<'a>(
        &'a self,
        ctx: &'a InternalContext,
        spec: &'a BindingSpec,
        audit: Recorder<'a, (Binding, bool)>,
    ) -> BoxFuture<'a, Result<(Binding, bool), AppError>> {
        self.grant_local(ctx, spec, audit).boxed()
    }

    fn revoke<'a>(
        &'a self,
        ctx: &'a InternalContext,
        target: &'a RevokeTarget,
        audit: Recorder<'a, Revoked>,
    ) -> BoxFuture<'a, Result<Revoked, AppError>> {
        self.revoke_local(ctx, target, audit).boxed()
    }
}

// ---------------------------------------------------------------------------
// access mode
// ---------------------------------------------------------------------------

/// A role as Access's admin API lists it (`{id,tenant_id,service,name,permission_keys[]}`).
#[derive(Debug, Clone)]
struct AccessRole {
    id: Value,
    role: Role,
    permission_keys: BTreeSet<String>,
    /// A role of the tenant itself (not a global template).
    own: bool,
}

/// What `bootstrap` found or did for one role.
#[derive(Debug, Clone, PartialEq)]
pub enum Seeded {
    /// Created now, with this id.
    Created(Value),
    /// There already, with our permissions.
    Present(Value),
    /// There already, with other permissions (left as it is).
    Differs {
        id: Value,
        permission_keys: Vec<String>,
    },
}

/// Bindings kept by Access, through its tenant-admin API:
/// `/access/admin/roles` and `/access/admin/role-bindings`, called as the
/// caller with their own flags (a tenant admin, whom Access allows
/// `portal.role_bindings.write` at the tenant, or a system admin, whom
/// `system_admin` lets through Access's permission gates), signed like
/// `/access/check`.
pub struct AccessRoleAdmin {
    access: Arc<AccessAuthorizer>,
    /// Where the audit rows go: Access holds the bindings, so an entry is
    /// written once Access has answered (it cannot share Access's
    /// transaction).
    db: PgPool,
}

/// The list in an Access answer: the answer itself, or its `items`,
/// `results` or `bindings`.
fn answer_items(answer: &Value) -> Option<&Vec<Value>> {
    match answer {
        Value::Array(items) => Some(items),
        Value::Object(map) => ["items", "results", "bindings", "roles"]
            .iter()
            .find_map(|k| map.get(*k).and_then(Value::as_array)),
        _ => None,
    }
}

/// An id (number or string) as text.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Access's error code in its envelope, if any.
fn error_code(answer: &Value) -> &str {
    answer["error"]["code"]
        .as_str()
        .or_else(|| answer["code"].as_str())
        .unwrap_or("")
}

fn missing_role(role: Role) -> AppError {
    AppError::rejected(
        ErrorCode::Conflict,
        format!(
            "Role {} does not exist in Access; run events-svc access bootstrap first",
            role.name()
        ),
    )
}

/// `events.admin` has no place in Access: there, a tenant admin is whoever
/// Access lets write the tenant's role bindings.
fn not_in_access(role: Role) -> Result<(), AppError> {
    if Role::IN_ACCESS.contains(&role) {
        return Ok(());
    }
    Err(AppError::rejected(
        ErrorCode::Conflict,
        format!(
            "{} is not kept in Access: with Access as the authority, tenant admins are the \
             users Access allows portal.role_bindings.write at TENANT scope; grant that in Access",
            role.name()
        ),
    ))
}

/// Access answered, but not as its contract says: 503 (fail closed), logged.
fn refused(ctx: &InternalContext, what: &str, status: StatusCode, answer: &Value) -> AppError {
    let excerpt: String = answer.to_string().chars().take(300).collect();
    if status.is_server_error() {
        tracing::warn!(authority = "access", %status, answer = %excerpt, request_id = %ctx.request_id,
            "Access failed to {what}");
    } else {
        tracing::error!(authority = "access", %status, answer = %excerpt, request_id = %ctx.request_id,
            "Access refused to {what}; check the signing secret and the caller's flags");
    }
    let code = error_code(answer);
    AppError::Unavailable {
        code: ErrorCode::AccessUnavailable,
        message: if code.is_empty() {
            format!(
                "The access service could not {what} (HTTP {})",
                status.as_u16()
            )
        } else {
            format!(
                "The access service could not {what} (HTTP {}, {code})",
                status.as_u16()
            )
        },
    }
}

impl AccessRoleAdmin {
    pub fn new(access: Arc<AccessAuthorizer>, db: PgPool) -> Self {
        Self { access, db }
    }

    async fn record(&self, entries: &[AuditEntry]) -> Result<(), AppError> {
        audit::record(&self.db, entries)
            .await
            .map_err(AppError::from)
    }

    async fn call(
        &self,
        ctx: &InternalContext,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), AppError> {
        self.access
            .call_access(ctx, method, segments, query, body)
            .await
    }

    /// Our roles among Access's `events` roles (`query` narrows the search
    /// to one name). A tenant's own role wins over a global template.
    async fn roles(
        &self,
        ctx: &InternalContext,
        name: Option<&str>,
    ) -> Result<Vec<AccessRole>, AppError> {
        let mut query = vec![("service", ACCESS_SERVICE)];
        if let Some(name) = name {
            query.push(("query", name));
        }
        let (status, answer) = self
            .call(
                ctx,
                Method::GET,
                &["access", "admin", "roles"],
                &query,
                None,
            )
            .await?;
        let items = match answer_items(&answer) {
            Some(items) if status == StatusCode::OK => items,
            _ => return Err(refused(ctx, "list roles", status, &answer)),
        };
        let tenant = ctx.tenant_id.to_string();
        let mut found: Vec<AccessRole> = Vec::new();
        for item in items {
            let (Some(id), Some(name)) = (item.get("id"), item["name"].as_str()) else {
                continue;
            };
            let Some(role) = Role::IN_ACCESS.into_iter().find(|r| r.name() == name) else {
                continue;
            };
            if item["service"]
                .as_str()
                .is_some_and(|s| s != ACCESS_SERVICE)
            {
                continue;
            }
            let own = match item["tenant_id"].as_str() {
                Some(t) => match Uuid::parse_str(t) {
                    Ok(t) if t.to_string() == tenant => true,
                    _ => continue,
                },
                None => false,
            };
            let permission_keys = item["permission_keys"]
                .as_array()
                .map(|keys| {
                    keys.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let candidate = AccessRole {
                id: id.clone(),
                role,
                permission_keys,
                own,
            };
            match found.iter_mut().find(|r| r.role == role) {
                Some(existing) if candidate.own && !existing.own => *existing = candidate,
                Some(_) => {}
                None => found.push(candidate),
            }
        }
        Ok(found)
    }

    async fn role(
        &self,
        ctx: &InternalContext,
        role: Role,
    ) -> Result<Option<AccessRole>, AppError> {
        Ok(self
            .roles(ctx, Some(role.name()))
            .await?
            .into_iter()
            .find(|r| r.role == role))
    }

    /// `GET /access/admin/role-bindings/search`: Access's binding objects.
    async fn search(
        &self,
        ctx: &InternalContext,
        user: Option<Uuid>,
        scope_type: Option<ScopeType>,
        scope_id: Option<&str>,
        limit: &str,
    ) -> Result<Vec<Value>, AppError> {
        let user = user.map(|u| u.to_string());
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(user) = &user {
            query.push(("user_id", user));
        }
        if let Some(t) = scope_type {
            query.push(("scope_type", t.as_str()));
        }
        if let Some(id) = scope_id {
            query.push(("scope_id", id));
        }
        query.push(("limit", limit));
        let (status, answer) = self
            .call(
                ctx,
                Method::GET,
                &["access", "admin", "role-bindings", "search"],
                &query,
                None,
            )
            .await?;
        match answer_items(&answer) {
            Some(items) if status == StatusCode::OK => Ok(items.clone()),
            _ => Err(refused(ctx, "search role bindings", status, &answer)),
        }
    }

    /// One of Access's bindings (`{id,tenant_id,user_id,scope_type,scope_id,
    /// role_id,role_name,role_service,created_at}`) when it binds one of our
    /// roles in the caller's tenant at a scope we know.
    fn binding(
        &self,
        ctx: &InternalContext,
        item: &Value,
        roles: &[AccessRole],
    ) -> Option<Binding> {
        if let Some(t) = item["tenant_id"].as_str()
            && Uuid::parse_str(t).ok() != Some(ctx.tenant_id)
        {
            return None;
        }
        let by_name = match (item["role_service"].as_str(), item["role_name"].as_str()) {
            (Some(ACCESS_SERVICE), Some(name)) => {
                Role::IN_ACCESS.into_iter().find(|r| r.name() == name)
            }
            _ => None,
        };
        let role = by_name.or_else(|| {
            let id = item.get("role_id")?;
            roles.iter().find(|r| &r.id == id).map(|r| r.role)
        })?;
        Some(Binding {
            id: id_text(item.get("id")?)?,
            user: Uuid::parse_str(item["user_id"].as_str()?).ok()?,
            role,
            scope_type: item["scope_type"].as_str()?.parse().ok()?,
            scope_id: item["scope_id"].as_str()?.to_string(),
            created_by: None,
            created_at: item["created_at"].as_str().map(str::to_string),
        })
    }

    /// The existing binding `spec` describes, if Access has it.
    async fn find(
        &self,
        ctx: &InternalContext,
        spec: &BindingSpec,
        roles: &[AccessRole],
    ) -> Result<Vec<Binding>, AppError> {
        let found = self
            .search(
                ctx,
                Some(spec.user),
                Some(spec.scope.scope_type()),
                Some(spec.scope.scope_id().as_str()),
                SEARCH_LIMIT,
            )
            .await?;
        Ok(found
            .iter()
            .filter_map(|item| self.binding(ctx, item, roles))
            .filter(|b| {
                b.user == spec.user
                    && b.role == spec.role
                    && b.scope_type == spec.scope.scope_type()
                    && b.scope_id == spec.scope.scope_id().as_str()
            })
            .collect())
    }

    async fn list_access(
        &self,
        ctx: &InternalContext,
        filter: &BindingFilter,
    ) -> Result<Listing, AppError> {
        let limit = filter.limit.to_string();
        // The catalog and the bindings at once; the catalog then names the
        // roles of bindings Access did not label with their role's name.
        let (roles, found) = futures::future::try_join(
            self.roles(ctx, None),
            self.search(
                ctx,
                filter.user,
                filter.scope_type,
                filter.scope_id.as_ref().map(|s| s.as_str()),
                &limit,
            ),
        )
        .await?;
        let bindings = found
            .iter()
            .filter_map(|item| self.binding(ctx, item, &roles))
            .filter(|b| {
                filter.role.is_none_or(|r| b.role == r)
                    && filter.user.is_none_or(|u| b.user == u)
                    && filter.scope_type.is_none_or(|t| b.scope_type == t)
                    && filter
                        .scope_id
                        .as_ref()
                        .is_none_or(|id| b.scope_id == id.as_str())
            })
            .collect();
        Ok(Listing {
            roles: Role::IN_ACCESS
                .into_iter()
                .map(|role| RoleEntry {
                    role,
                    access_id: roles.iter().find(|r| r.role == role).map(|r| r.id.clone()),
                })
                .collect(),
            bindings,
            remote: true,
        })
    }

    async fn grant_access(
        &self,
        ctx: &InternalContext,
        spec: &BindingSpec,
    ) -> Result<(Binding, bool), AppError> {
        not_in_access(spec.role)?;
        let role = self
            .role(ctx, spec.role)
            .await?
            .ok_or_else(|| missing_role(spec.role))?;
        let roles = std::slice::from_ref(&role);
        if let Some(existing) = self.find(ctx, spec, roles).await?.into_iter().next() {
            return Ok((existing, false));
        }
        let body = json!({
            "user_id": spec.user.to_string(),
            "scope_type": spec.scope.scope_type().as_str(),
            "scope_id": spec.scope.scope_id().as_str(),
            "role_id": role.id,
        });
        let (status, answer) = self
            .call(
                ctx,
                Method::POST,
                &["access", "admin", "role-bindings"],
                &[],
                Some(&body),
            )
            .await?;
        self.access.invalidate_user(ctx.tenant_id, spec.user);
        if status.is_success() {
            let binding = self.binding(ctx, &answer, roles).or_else(|| {
                Some(Binding {
                    id: id_text(answer.get("id")?)?,
                    user: spec.user,
                    role: spec.role,
                    scope_type: spec.scope.scope_type(),
                    scope_id: spec.scope.scope_id().as_str().to_string(),
                    created_by: None,
                    created_at: answer["created_at"].as_str().map(str::to_string),
                })
            });
            return match binding {
                Some(binding) => Ok((binding, true)),
                None => Err(refused(ctx, "create the role binding", status, &answer)),
            };
        }
        if error_code(&answer) == "ROLE_NOT_FOUND" {
            return Err(missing_role(spec.role));
        }
        if matches!(status, StatusCode::BAD_REQUEST | StatusCode::CONFLICT) {
            // Made by someone else in the meantime?
            if let Some(existing) = self.find(ctx, spec, roles).await?.into_iter().next() {
                return Ok((existing, false));
            }
        }
        Err(refused(ctx, "create the role binding", status, &answer))
    }

    async fn delete(&self, ctx: &InternalContext, id: &str) -> Result<bool, AppError> {
        let (status, answer) = self
            .call(
                ctx,
                Method::DELETE,
                &["access", "admin", "role-bindings", id],
                &[],
                None,
            )
            .await?;
        match status {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(refused(ctx, "delete the role binding", s, &answer)),
        }
    }

    async fn revoke_access(
        &self,
        ctx: &InternalContext,
        target: &RevokeTarget,
    ) -> Result<Revoked, AppError> {
        let mut revoked = Revoked::default();
        match target {
            RevokeTarget::Id(id) => {
                if self.delete(ctx, id).await? {
                    revoked.ids.push(id.clone());
                    // Whose binding it was is unknown here: forget every
                    // cached decision rather than keep a stale allow.
                    self.access.invalidate_all();
                }
            }
            RevokeTarget::Binding(spec) => {
                not_in_access(spec.role)?;
                let Some(role) = self.role(ctx, spec.role).await? else {
                    return Ok(revoked);
                };
                let matches = self.find(ctx, spec, std::slice::from_ref(&role)).await?;
                for binding in matches {
                    let deleted = self.delete(ctx, &binding.id).await;
                    self.access.invalidate_user(ctx.tenant_id, spec.user);
                    match deleted {
                        Ok(true) => revoked.bindings.push(binding),
                        Ok(false) => {}
                        Err(e) => {
                            if revoked.count() > 0 {
                                tracing::warn!(removed = ?revoked, request_id = %ctx.request_id,
                                    "a revoke failed half-way; these bindings were removed");
                            }
                            return Err(e);
                        }
                    }
                }
            }
        }
        Ok(revoked)
    }

    /// Our roles among Access's system templates (`tenant_id` null): the
    /// roles every tenant sees. `GET /access/roles` answers any caller.
    async fn templates(&self, ctx: &InternalContext) -> Result<Vec<(Role, Value)>, AppError> {
        let (status, answer) = self
            .call(
                ctx,
                Method::GET,
                &["access", "roles"],
                &[("service", ACCESS_SERVICE)],
                None,
            )
            .await?;
        let items = match answer_items(&answer) {
            Some(items) if status == StatusCode::OK => items,
            _ => return Err(refused(ctx, "list the role templates", status, &answer)),
        };
        Ok(items
            .iter()
            .filter(|item| item["tenant_id"].is_null())
            .filter(|item| item["service"].as_str().is_none_or(|s| s == ACCESS_SERVICE))
            .filter_map(|item| {
                let role = Role::IN_ACCESS
                    .into_iter()
                    .find(|r| item["name"].as_str() == Some(r.name()))?;
                let id = item.get("id").filter(|id| id_text(id).is_some())?;
                Some((role, id.clone()))
            })
            .collect())
    }

    /// Creates our two roles once, as system templates every tenant shares
    /// (`POST /access/roles` with `is_system_template`), where
    /// `GET /access/roles?service=events` does not show them. Idempotent: a
    /// role already there is left as it is; each is reported as created,
    /// present, or present with other permissions (`Differs`, never changed
    /// silently).
    pub async fn bootstrap(&self, ctx: &InternalContext) -> Result<Vec<(Role, Seeded)>, AppError> {
        let mut templates = self.templates(ctx).await?;
        let mut out = Vec::new();
        for role in Role::IN_ACCESS {
            let wanted: BTreeSet<String> = role
                .permissions()
                .iter()
                .map(|p| p.key().to_string())
                .collect();
            if !templates.iter().any(|(r, _)| *r == role) {
                let body = json!({
                    "tenant_id": null,
                    "service": ACCESS_SERVICE,
                    "name": role.name(),
                    "is_system_template": true,
                    "permission_keys": wanted.iter().collect::<Vec<_>>(),
                });
                let (status, answer) = self
                    .call(ctx, Method::POST, &["access", "roles"], &[], Some(&body))
                    .await?;
                if status.is_success()
                    && let Some(id) = answer.get("id").filter(|id| id_text(id).is_some())
                {
                    out.push((role, Seeded::Created(id.clone())));
                    continue;
                }
                match error_code(&answer) {
                    // Made meanwhile by someone else: judge it below.
                    "ROLE_EXISTS" => templates = self.templates(ctx).await?,
                    "PERMISSION_NOT_FOUND" => {
                        return Err(AppError::rejected(
                            ErrorCode::Conflict,
                            format!(
                                "Access's permission catalog lacks {} (needed by {}): {}",
                                answer["error"]["details"]["missing"],
                                role.name(),
                                answer["error"]["message"].as_str().unwrap_or("")
                            ),
                        ));
                    }
                    _ => return Err(refused(ctx, "create the role template", status, &answer)),
                }
            }
            let Some((_, id)) = templates.iter().find(|(r, _)| *r == role).cloned() else {
                return Err(AppError::rejected(
                    ErrorCode::Conflict,
                    format!("Access said {} exists but does not list it", role.name()),
                ));
            };
            // The permissions of a template, as the admin listing shows them.
            let listed = self.roles(ctx, Some(role.name())).await?;
            let keys = listed
                .into_iter()
                .find(|r| r.id == id)
                .map(|r| r.permission_keys);
            out.push((
                role,
                match keys {
                    Some(keys) if keys != wanted => Seeded::Differs {
                        id,
                        permission_keys: keys.into_iter().collect(),
                    },
                    _ => Seeded::Present(id),
                },
            ));
        }
        Ok(out)
    }
}

impl RoleAdmin for AccessRoleAdmin {
    fn mode(&self) -> &'static str {
        "access"
    }

    fn list<'a>(
        &'a self,
        ctx: &'a InternalContext,
        filter: &'a BindingFilter,
    ) -> BoxFuture<'a, Result<Listing, AppError>> {
        self.list_access(ctx, filter).boxed()
    }

    fn grant<'a>(
        &'a self,
        ctx: &'a InternalContext,
        spec: &'a BindingSpec,
        audit: Recorder<'a, (Binding, bool)>,
    ) -> BoxFuture<'a, Result<(Binding, bool), AppError>> {
        async move {
            let outcome = self.grant_access(ctx, spec).await?;
            self.record(&audit(&outcome)).await?;
            Ok(outcome)
        }
        .boxed()
    }

    fn revoke<'a>(
        &'a self,
        ctx: &'a InternalContext,
        target: &'a RevokeTarget,
        audit: Recorder<'a, Revoked>,
    ) -> BoxFuture<'a, Result<Revoked, AppError>> {
        async move {
            let revoked = self.revoke_access(ctx, target).await?;
            self.record(&audit(&revoked)).await?;
            Ok(revoked)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        TenantId::parse("6f1c2b9e-8d1a-4c3e-9b7a-2f4d5e6a7b8c").expect("tenant")
    }

    #[test]
    fn scopes_default_to_the_tenant_and_check_their_ids() {
        let t = tenant();
        assert_eq!(binding_scope(t, None, None), Ok(Scope::tenant(t)));
        assert_eq!(
            binding_scope(
                t,
                Some(ScopeType::Tenant),
                Some("6F1C2B9E-8D1A-4C3E-9B7A-2F4D5E6A7B8C")
            ),
            Ok(Scope::tenant(t))
        );
        assert_eq!(
            binding_scope(t, None, Some("c1")).map_err(|e| e.0),
            Err("scopeId")
        );
        assert_eq!(
            binding_scope(t, Some(ScopeType::Community), None).map_err(|e| e.0),
            Err("scopeId")
        );
        let c = binding_scope(t, Some(ScopeType::Community), Some("c1")).expect("community");
        assert_eq!(c.scope_type(), ScopeType::Community);
        assert_eq!(c.scope_id().as_str(), "c1");
    }

    #[test]
    fn access_lists_come_bare_or_wrapped() {
        assert_eq!(answer_items(&json!([1])).map(Vec::len), Some(1));
        assert_eq!(
            answer_items(&json!({"items": [1, 2]})).map(Vec::len),
            Some(2)
        );
        assert_eq!(answer_items(&json!({"results": []})).map(Vec::len), Some(0));
        assert!(answer_items(&json!({"detail": "x"})).is_none());
        assert_eq!(id_text(&json!(7)).as_deref(), Some("7"));
        assert_eq!(id_text(&json!("b-1")).as_deref(), Some("b-1"));
        assert_eq!(id_text(&json!(null)), None);
    }
}
