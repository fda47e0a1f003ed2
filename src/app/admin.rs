//! The role-administration operations (`admin.roles.list|grant|revoke`):
//! system admins only; the work is [`crate::authz::RoleAdministration`]'s
//! (our tables in `local` mode, Access in `access` mode, audited).

use serde_json::{Map, Value, json};

use crate::app::{App, AppError, Op, Reply, input};
use crate::authz::Guard;

impl App {
    pub(super) async fn admin_roles(
        &self,
        guard: &Guard<'_>,
        obj: &Map<String, Value>,
        op: Op,
    ) -> Result<Reply, AppError> {
        // Before reading the body: a caller who may not use these learns
        // nothing about their schema.
        if !guard.is_admin() {
            return Err(AppError::Forbidden("System admin required"));
        }
        let ctx = guard.ctx();
        let roles = &self.inner.roles;
        match op {
            Op::AdminRolesList => {
                let filter = input::binding_filter(obj)?;
                Ok(Reply::Json(roles.list(ctx, &filter).await?.to_json()))
            }
            Op::AdminRolesGrant => {
                let spec = input::binding_spec(obj, guard.tenant())?;
                let (binding, created) = roles.grant(ctx, &spec, guard.take_audit()).await?;
                let mut reply = binding.to_json();
                reply["created"] = json!(created);
                Ok(Reply::Json(reply))
            }
            Op::AdminRolesRevoke => {
                let target = input::revoke_target(obj, guard.tenant())?;
                let revoked = roles.revoke(ctx, &target, guard.take_audit()).await?;
                Ok(Reply::Json(json!({"revoked": revoked.count()})))
            }
            other => Err(AppError::internal(
                "admin_roles",
                format!("not a role operation: {}", other.name()),
            )),
        }
    }
}
