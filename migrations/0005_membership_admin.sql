-- Memberships are managed through the API: who added each one is kept
-- (NULL for those written before, by hand).
ALTER TABLE scope_memberships ADD COLUMN created_by uuid;

-- The audit log is read newest first within a tenant, optionally by actor.
CREATE INDEX audit_log_tenant_actor_idx ON audit_log (tenant_id, actor_user_id, created_at);

-- Tenant admins: the role events.admin, held at the tenant only.
ALTER TABLE role_bindings DROP CONSTRAINT role_bindings_role_check;
ALTER TABLE role_bindings ADD CONSTRAINT role_bindings_role_check
    CHECK (role IN ('events.participant', 'events.organizer', 'events.admin'));
ALTER TABLE role_bindings ADD CONSTRAINT role_bindings_admin_at_tenant
    CHECK (role <> 'events.admin' OR scope_type = 'TENANT');
