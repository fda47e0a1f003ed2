//! One request's authorization: master flags first, then the authorizer,
//! each (permission, scope) and each membership asked at most once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;

use crate::auth::InternalContext;
use crate::authz::{Authorizer, CallBudget, Permission, membership_gated};
use crate::domain::{ErrorCode, Event, Scope, TenantId, UserId, Visibility, visibility_fits_scope};
use crate::error::AppError;
use crate::store::audit::AuditEntry;

/// What a caller may know of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sight {
    Visible,
    /// Absent for this caller: the same answer as for an event that does
    /// not exist.
    Hidden,
    /// Visible were the caller not suspended or banned.
    Blocked,
}

pub struct Guard<'a> {
    ctx: &'a InternalContext,
    authorizer: &'a dyn Authorizer,
    op: &'static str,
    /// Entries this request owes the audit log; whoever persists the
    /// request's effect takes them ([`Guard::take_audit`]).
    audit: Mutex<Vec<AuditEntry>>,
    permissions: Mutex<HashMap<(Permission, Scope), bool>>,
    memberships: Mutex<HashMap<Scope, Option<bool>>>,
    admin_noted: AtomicBool,
    budget: CallBudget,
}

impl<'a> Guard<'a> {
    pub fn new(
        ctx: &'a InternalContext,
        authorizer: &'a dyn Authorizer,
        op: &'static str,
        max_calls: usize,
    ) -> Self {
        Self {
            ctx,
            authorizer,
            op,
            audit: Mutex::default(),
            permissions: Mutex::default(),
            memberships: Mutex::default(),
            admin_noted: AtomicBool::new(false),
            budget: CallBudget::new(max_calls),
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

    /// Whether the caller administers their tenant: a system admin, or
    /// holder of `events.admin.manage` at the tenant's scope (asked of the
    /// authorizer like any permission, so it is cached like the others).
    /// A system admin is no bypass here: the administration operations
    /// audit their changes with the actor themselves.
    pub async fn is_tenant_admin(&self) -> Result<bool, AppError> {
        if self.is_admin() {
            return Ok(true);
        }
        self.can(Permission::AdminManage, &Scope::tenant(self.tenant()))
            .await
    }

    /// The caller's role names at `scope` (the authorizer's answer).
    pub async fn roles(&self, scope: &Scope) -> Result<Vec<String>, AppError> {
        self.authorizer.roles(self.ctx, scope, &self.budget).await
    }

    /// Whether memberships are ours to manage (the embedded mode).
    pub fn memberships_are_ours(&self) -> bool {
        self.authorizer.memberships_in_database()
    }

    /// Notes, once per request, that the system-admin bypass was used.
    pub fn note_admin_bypass(&self, target_type: &'static str, target_id: Option<String>) {
        if self.admin_noted.swap(true, Ordering::SeqCst) {
            return;
        }
        self.record(AuditEntry {
            tenant_id: Some(self.ctx.tenant_id),
            actor_user_id: Some(self.ctx.user_id),
            action: "system_admin.bypass",
            target_type,
            target_id,
            request_id: Some(self.ctx.request_id.clone()),
            details: json!({"op": self.op}),
        });
    }

    /// Adds an entry the request owes the audit log.
    pub fn record(&self, entry: AuditEntry) {
        self.audit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(entry);
    }

    /// The entries owed so far, to be written with the request's effect.
    pub fn take_audit(&self) -> Vec<AuditEntry> {
        std::mem::take(
            &mut *self
                .audit
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Whether the caller holds `permission` at `scope`. A question the
    /// request has no authority calls left for is a 503.
    pub async fn can(&self, permission: Permission, scope: &Scope) -> Result<bool, AppError> {
        self.decide(permission, scope)
            .await?
            .ok_or_else(|| AppError::Unavailable {
                code: ErrorCode::AccessUnavailable,
                message: "The request needed more authorization look-ups than one request may \
                          make (EVENTS_AUTHZ_MAX_CALLS)"
                    .into(),
            })
    }

    /// Whether the caller holds `permission` at `scope`; `None` when the
    /// request's authority calls are spent and the answer is not known.
    pub async fn decide(
        &self,
        permission: Permission,
        scope: &Scope,
    ) -> Result<Option<bool>, AppError> {
        if self.is_blocked() {
            return Ok(Some(false));
        }
        if self.is_admin() {
            self.note_admin_bypass(
                "scope",
                Some(format!("{}:{}", scope.scope_type(), scope.scope_id())),
            );
            return Ok(Some(true));
        }
        let key = (permission, scope.clone());
        if let Some(known) = self.lock_permissions().get(&key) {
            return Ok(Some(*known));
        }
        let allowed = self
            .authorizer
            .has_permission(self.ctx, permission, scope, &self.budget)
            .await?;
        if let Some(allowed) = allowed {
            self.lock_permissions().insert(key, allowed);
        }
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
            let answer = self
                .authorizer
                .memberships(self.ctx, &missing, &self.budget)
                .await?;
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

    /// What the caller may know of `event`. Read permission is part of
    /// visibility. A membership the authority cannot answer for is an
    /// error (`PORTAL_UNAVAILABLE`), never a guess.
    pub async fn sight(&self, event: &Event) -> Result<Sight, AppError> {
        if event.tenant_id != self.tenant() {
            return Ok(Sight::Hidden);
        }
        if self.is_admin() {
            self.note_admin_bypass("event", Some(event.id.to_string()));
            return Ok(Sight::Visible);
        }
        if self.is_blocked() {
            // Told apart from "hidden" so that they learn why they are
            // refused. Judged as a plain member of the tenant (who reads
            // at every scope): no authority is asked for a permission on
            // behalf of a blocked caller.
            return Ok(if self.visible_by_rule(event).await? {
                Sight::Blocked
            } else {
                Sight::Hidden
            });
        }
        if !self.is_creator(event) && !self.can(Permission::EventRead, &event.scope).await? {
            return Ok(Sight::Hidden);
        }
        Ok(if self.visible_by_rule(event).await? {
            Sight::Visible
        } else {
            Sight::Hidden
        })
    }

    /// Whether the caller may see `event` now.
    pub async fn can_see(&self, event: &Event) -> Result<bool, AppError> {
        Ok(self.sight(event).await? == Sight::Visible)
    }

    /// The creator always sees their event. Nobody is the creator of an
    /// event whose creator was erased (the nil id).
    fn is_creator(&self, event: &Event) -> bool {
        event.created_by == self.user() && !event.created_by.is_anonymized()
    }

    /// The visibility rule alone: creator, public, or a member of the
    /// community or team the event is visible to.
    async fn visible_by_rule(&self, event: &Event) -> Result<bool, AppError> {
        if self.is_creator(event) {
            return Ok(true);
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
