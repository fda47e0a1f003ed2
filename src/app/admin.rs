//! The role-administration operations (`admin.roles.list|grant|revoke`):
//! system admins only; the work is [`crate::authz::RoleAdministration`]'s
//! (our tables in `local` mode, Access in `access` mode, audited).

use serde_json::json;

use crate::app::requests::Checked;
use crate::app::{App, Reply};
use crate::authz::Guard;
use crate::authz::admin::{BindingFilter, BindingSpec, RevokeTarget};
use crate::error::AppError;

impl App {
    /// Role administration is for system admins; the check comes before the
    /// body is looked at, so a caller who may not use these learns nothing
    /// about their schema.
    fn require_admin(guard: &Guard<'_>) -> Result<(), AppError> {
        if guard.is_admin() {
            Ok(())
        } else {
            Err(AppError::Forbidden("System admin required"))
        }
    }

    pub(super) async fn admin_roles_list(
        &self,
        guard: &Guard<'_>,
        filter: Checked<BindingFilter>,
    ) -> Result<Reply, AppError> {
        Self::require_admin(guard)?;
        let listing = self.inner.roles.list(guard.ctx(), &filter?).await?;
        Ok(Reply::Json(listing.to_json()))
    }

    pub(super) async fn admin_roles_grant(
        &self,
        guard: &Guard<'_>,
        spec: Checked<BindingSpec>,
    ) -> Result<Reply, AppError> {
        Self::require_admin(guard)?;
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
        Self::require_admin(guard)?;
        let revoked = self
            .inner
            .roles
            .revoke(guard.ctx(), &target?, guard.take_audit())
            .await?;
        Ok(Reply::Json(json!({"revoked": revoked.count()})))
    }
}
