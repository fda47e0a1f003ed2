//! One request's authorization: master flags first, then the authorizer,
//! each (permission, scope) and each membership asked at most once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;

use crate::app::AppError;
use crate::auth::InternalContext;
use crate::authz::{AuditEntry, AuditLog, Authorizer, Permission, membership_gated};
use crate::domain::{ErrorCode, Event, Scope, TenantId, UserId, Visibility, visibility_fits_scope};

pub struct Guard<'a> {
    ctx: &'a InternalContext,
    authorizer: &'a dyn Authorizer,
    audit: &'a AuditLog,
    op: &'static str,
    permissions: Mutex<HashMap<(Permission, Scope), bool>>,
    memberships: Mutex<HashMap<Scope, Option<bool>>>,
    admin_noted: AtomicBool,
}

impl<'a> Guard<'a> {
    pub fn new(
        ctx: &'a InternalContext,
        authorizer: &'a dyn Authorizer,
        audit: &'a AuditLog,
        op: &'static str,
    ) -> Self {
        Self {
            ctx,
            authorizer,
            audit,
            op,
            permissions: Mutex::default(),
            memberships: Mutex::default(),
            admin_noted: AtomicBool::new(false),
        }
    }

    pub fn ctx(&self) -> &InternalContext {
        self.ctx
    }

    pub fn user(&self) -> UserId {
        self.ctx.user_id.into()
    }

    pub fn tenant(&self) -> TenantId {
        self.ctx.tenant_id.into()
    }

    pub fn is_blocked(&self) -> bool {
        self.ctx.master_flags.is_suspended_or_banned()
    }

    /// A system admin who is not also suspended or banned.
    pub fn is_admin(&self) -> bool {
        !self.is_blocked() && self.ctx.master_flags.is_system_admin()
    }

    /// Records, once per request, that the system-admin bypass was used.
    pub async fn note_admin_bypass(&self, target_type: &'static str, target_id: Option<String>) {
        if self.admin_noted.swap(true, Ordering::SeqCst) {
            return;
        }
        self.audit
            .record(AuditEntry {
                tenant_id: Some(self.ctx.tenant_id),
                actor_user_id: Some(self.ctx.user_id),
                action: "system_admin.bypass",
                target_type,
                target_id,
                request_id: Some(self.ctx.request_id.clone()),
                details: json!({"op": self.op}),
            })
            .await;
    }

    /// Whether the caller holds `permission` at `scope`.
    pub async fn can(&self, permission: Permission, scope: &Scope) -> Result<bool, AppError> {
        if self.is_blocked() {
            return Ok(false);
        }
        if self.is_admin() {
            self.note_admin_bypass(
                "scope",
                Some(format!("{}:{}", scope.scope_type(), scope.scope_id())),
            )
            .await;
            return Ok(true);
        }
        let key = (permission, scope.clone());
        if let Some(known) = self.lock_permissions().get(&key) {
            return Ok(*known);
        }
        let allowed = self
            .authorizer
            .has_permission(self.ctx, permission, scope)
            .await?;
        self.lock_permissions().insert(key, allowed);
        Ok(allowed)
    }

    pub async fn require(&self, permission: Permission, scope: &Scope) -> Result<(), AppError> {
        if self.can(permission, scope).await? {
            Ok(())
        } else {
            Err(AppError::Forbidden("Permission denied"))
        }
    }

    /// Membership answers for several scopes at once (asked concurrently by
    /// the authorizer); `None` in the map means the authority could not answer.
    pub async fn memberships(
        &self,
        scopes: &[Scope],
    ) -> Result<HashMap<Scope, Option<bool>>, AppError> {
        let missing: Vec<Scope> = {
            let known = self.lock_memberships();
            let mut missing: Vec<Scope> = scopes
                .iter()
                .filter(|s| !known.contains_key(*s))
                .cloned()
                .collect();
            missing.sort();
            missing.dedup();
            missing
        };
        if !missing.is_empty() {
            let answer = self.authorizer.memberships(self.ctx, &missing).await?;
            let mut known = self.lock_memberships();
            for scope in missing {
                let value = if answer.member_of.contains(&scope) {
                    Some(true)
                } else if answer.unknown.contains(&scope) {
                    None
                } else {
                    Some(false)
                };
                known.insert(scope, value);
            }
        }
        let known = self.lock_memberships();
        Ok(scopes
            .iter()
            .map(|s| (s.clone(), known.get(s).copied().flatten()))
            .collect())
    }

    /// Whether the caller may see `event` (DESIGN §8). Read permission is
    /// part of visibility. A membership the authority cannot answer for is
    /// an error (`PORTAL_UNAVAILABLE`), never a guess.
    pub async fn can_see(&self, event: &Event) -> Result<bool, AppError> {
        if event.tenant_id != self.tenant() {
            return Ok(false);
        }
        if self.is_admin() {
            self.note_admin_bypass("event", Some(event.id.to_string()))
                .await;
            return Ok(true);
        }
        if self.is_blocked() {
            return Ok(false);
        }
        if event.created_by == self.user() {
            return Ok(true);
        }
        if !self.can(Permission::EventRead, &event.scope).await? {
            return Ok(false);
        }
        match event.visibility {
            Visibility::Public => Ok(true),
            Visibility::Private => Ok(false),
            Visibility::Community | Visibility::Team => {
                if !visibility_fits_scope(event.visibility, event.scope_type())
                    || !membership_gated(event.scope_type())
                {
                    return Ok(false);
                }
                let answer = self.memberships(std::slice::from_ref(&event.scope)).await?;
                match answer.get(&event.scope).copied().flatten() {
                    Some(member) => Ok(member),
                    None => Err(AppError::Unavailable {
                        code: ErrorCode::PortalUnavailable,
                        message: "Membership could not be checked; try again shortly".into(),
                    }),
                }
            }
        }
    }

    fn lock_permissions(&self) -> std::sync::MutexGuard<'_, HashMap<(Permission, Scope), bool>> {
        self.permissions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_memberships(&self) -> std::sync::MutexGuard<'_, HashMap<Scope, Option<bool>>> {
        self.memberships
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
