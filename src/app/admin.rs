//! The administration operations of a tenant: role bindings
//! (`admin.roles.*`, the work is [`crate::authz::RoleAdministration`]'s),
//! memberships (`membership.*`), the audit log (`admin.audit.list`), and
//! what a caller may do (`me.capabilities`).
//!
//! Tenant admins (holders of `events.admin.manage` at the tenant, system
//! admins everywhere) may use the admin operations inside their tenant;
//! the check comes before the body is looked at, so a caller who may not
//! use these learns nothing about their schema.

use serde_json::{Value, json};

use crate::app::requests::{AuditQuery, Checked};
use crate::app::{App, Reply, views};
use crate::authz::admin::{BindingFilter, BindingSpec, RevokeTarget};
use crate::authz::{Guard, Permission};
use crate::domain::{ErrorCode, Scope, format_utc};
use crate::error::AppError;
use crate::store::audit::{self, AuditEntry};
use crate::store::memberships::{self, Membership, MembershipFilter, MembershipSpec};

impl App {
    async fn require_tenant_admin(guard: &Guard<'_>) -> Result<(), AppError> {
        if guard.is_tenant_admin().await? {
            Ok(())
        } else {
            Err(AppError::Forbidden("Tenant admin required"))
        }
    }

    /// Memberships are ours only in the embedded mode; with Portal as the
    /// authority, changing them here would change nothing anyone reads.
    fn require_own_memberships(guard: &Guard<'_>) -> Result<(), AppError> {
        if guard.memberships_are_ours() {
            Ok(())
        } else {
            Err(AppError::rejected(
                ErrorCode::MembershipAuthorityIsPortal,
                "Memberships are managed in Portal while Access and Portal are the authority",
            ))
        }
    }

    pub(super) async fn admin_roles_list(
        &self,
        guard: &Guard<'_>,
        filter: Checked<BindingFilter>,
    ) -> Result<Reply, AppError> {
        Self::require_tenant_admin(guard).await?;
        let listing = self.inner.roles.list(guard.ctx(), &filter?).await?;
        Ok(Reply::Json(listing.to_json()))
    }

    pub(super) async fn admin_roles_grant(
        &self,
        guard: &Guard<'_>,
        spec: Checked<BindingSpec>,
    ) -> Result<Reply, AppError> {
        Self::require_tenant_admin(guard).await?;
        let (binding, created) = self
            .inner
            .roles
            .grant(guard.ctx(), &spec?, guard.take_audit())
            .await?;
        let mut reply = binding.to_json();
        reply["created"] = json!(created);
        Ok(Reply::Json(reply))
    }

    pub(super) async fn admin_roles_revoke(
        &self,
        guard: &Guard<'_>,
        target: Checked<RevokeTarget>,
    ) -> Result<Reply, AppError> {
        Self::require_tenant_admin(guard).await?;
        let revoked = self
            .inner
            .roles
            .revoke(guard.ctx(), &target?, guard.take_audit())
            .await?;
        Ok(Reply::Json(json!({"revoked": revoked.count()})))
    }

    pub(super) async fn membership_add(
        &self,
        guard: &Guard<'_>,
        spec: Checked<MembershipSpec>,
    ) -> Result<Reply, AppError> {
        Self::require_tenant_admin(guard).await?;
        Self::require_own_memberships(guard)?;
        let spec = spec?;
        let owed = guard.take_audit();
        let (membership, created) = memberships::add(
            &self.inner.db,
            guard.tenant(),
            spec.user,
            &spec.scope,
            guard.ctx().user_id,
            |m, created| {
                membership_entries(
                    guard,
                    &owed,
                    "membership.added",
                    &spec,
                    json!({"created": created, "createdBy": m.created_by.map(|u| u.to_string())}),
                )
            },
        )
        .await?;
        let mut reply = membership_json(&membership);
        reply["created"] = json!(created);
        Ok(Reply::Json(reply))
    }

    pub(super) async fn membership_remove(
        &self,
        guard: &Guard<'_>,
        spec: Checked<MembershipSpec>,
    ) -> Result<Reply, AppError> {
        Self::require_tenant_admin(guard).await?;
        Self::require_own_memberships(guard)?;
        let spec = spec?;
        let owed = guard.take_audit();
        let removed = memberships::remove(
            &self.inner.db,
            guard.tenant(),
            spec.user,
            &spec.scope,
            |removed| {
                membership_entries(
                    guard,
                    &owed,
                    "membership.removed",
                    &spec,
                    json!({"removed": removed}),
                )
            },
        )
        .await?;
        Ok(Reply::Json(json!({"removed": removed})))
    }

    pub(super) async fn membership_list(
        &self,
        guard: &Guard<'_>,
        filter: Checked<MembershipFilter>,
    ) -> Result<Reply, AppError> {
        Self::require_tenant_admin(guard).await?;
        Self::require_own_memberships(guard)?;
        let filter = filter?;
        let (rows, total) = memberships::list(&self.inner.db, guard.tenant(), &filter).await?;
        let items = rows.iter().map(membership_json).collect();
        Ok(Reply::Json(views::page(
            items,
            total,
            filter.limit,
            filter.offset,
        )))
    }

    pub(super) async fn audit_list(
        &self,
        guard: &Guard<'_>,
        query: Checked<AuditQuery>,
    ) -> Result<Reply, AppError> {
        Self::require_tenant_admin(guard).await?;
        let AuditQuery { tenant, filter } = query?;
        if let Some(other) = tenant.filter(|t| *t != guard.tenant()) {
            if !guard.is_admin() {
                return Err(AppError::Forbidden(
                    "Only a system admin may read another tenant's audit log",
                ));
            }
            guard.note_admin_bypass("audit_log", Some(other.to_string()));
        }
        let (rows, total) = audit::list(&self.inner.db, &filter).await?;
        let items = rows
            .into_iter()
            .map(|e| {
                json!({
                    "id": e.id.to_string(),
                    "at": format_utc(&e.at),
                    "tenantId": e.tenant_id.map(|t| t.to_string()),
                    "actorUserId": e.actor_user_id.map(|u| u.to_string()),
                    "action": e.action,
                    "targetType": e.target_type,
                    "targetId": e.target_id,
                    "requestId": e.request_id,
                    "details": e.details,
                })
            })
            .collect();
        Ok(Reply::Json(views::page(
            items,
            total,
            filter.limit,
            filter.offset,
        )))
    }

    /// What the caller may do at `scope`, answered by the authorizer that
    /// guards the operations (its decisions are cached alike). A suspended
    /// or banned caller may do nothing, and no authority is asked; a
    /// system admin may do everything (not recorded as a bypass: nothing
    /// was done with it).
    pub(super) async fn capabilities(
        &self,
        guard: &Guard<'_>,
        scope: Scope,
    ) -> Result<Reply, AppError> {
        let ctx = guard.ctx();
        let flags = &ctx.master_flags;
        let (roles, permissions): (Vec<String>, Vec<bool>) = if guard.is_blocked() {
            (Vec::new(), vec![false; Permission::ALL.len()])
        } else if guard.is_admin() {
            (
                guard.roles(&scope).await?,
                vec![true; Permission::ALL.len()],
            )
        } else {
            let admin_scope = Scope::tenant(guard.tenant());
            let decisions = Permission::ALL.map(|p| {
                // Administration is held at the tenant, whatever the scope.
                let at = if p == Permission::AdminManage {
                    admin_scope.clone()
                } else {
                    scope.clone()
                };
                async move { guard.can(p, &at).await }
            });
            let (roles, decided) = futures::future::try_join(
                guard.roles(&scope),
                futures::future::try_join_all(decisions),
            )
            .await?;
            (roles, decided)
        };
        let permissions: serde_json::Map<String, Value> = Permission::ALL
            .iter()
            .zip(permissions)
            .map(|(p, allowed)| (p.key().to_string(), Value::Bool(allowed)))
            .collect();
        let tenant_admin = permissions
            .get(Permission::AdminManage.key())
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Reply::Json(json!({
            "tenantId": ctx.tenant_id.to_string(),
            "userId": ctx.user_id.to_string(),
            "scope": {"scopeType": scope.scope_type().as_str(), "scopeId": scope.scope_id().as_str()},
            "flags": {
                "systemAdmin": flags.is_system_admin(),
                "suspended": flags.is_suspended(),
                "banned": flags.is_banned(),
            },
            "tenantAdmin": tenant_admin,
            "roles": roles,
            "permissions": permissions,
        })))
    }
}

fn membership_json(m: &Membership) -> Value {
    json!({
        "userId": m.user.to_string(),
        "scopeType": m.scope_type.as_str(),
        "scopeId": m.scope_id,
        "createdBy": m.created_by.map(|u| u.to_string()),
        "createdAt": format_utc(&m.created_at),
    })
}

/// What a membership change writes to the audit log: the entries the
/// request owed already, then the change's own.
fn membership_entries(
    guard: &Guard<'_>,
    owed: &[AuditEntry],
    action: &'static str,
    spec: &MembershipSpec,
    mut details: Value,
) -> Vec<AuditEntry> {
    let ctx = guard.ctx();
    details["scopeType"] = json!(spec.scope.scope_type().as_str());
    details["scopeId"] = json!(spec.scope.scope_id().as_str());
    let mut entries = owed.to_vec();
    entries.push(AuditEntry {
        tenant_id: Some(ctx.tenant_id),
        actor_user_id: Some(ctx.user_id),
        action,
        target_type: "user",
        target_id: Some(spec.user.to_string()),
        request_id: Some(ctx.request_id.clone()),
        details,
    });
    entries
}
