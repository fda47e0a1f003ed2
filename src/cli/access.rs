//! `events-svc access …`: the role catalog and role bindings from the
//! command line. `grant`, `revoke` and `list` run the same code as the
//! `admin.roles.*` operations ([`RoleAdministration`]): our tables in
//! `local` mode, Access's admin API in `access` mode, audited with the
//! operator as the actor. `bootstrap` creates our two roles in Access.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;
use uuid::Uuid;

use crate::auth::{InternalContext, MasterFlags, SignatureVersion};
use crate::authz::admin::{Seeded, binding_scope};
use crate::authz::{
    AccessAuthorizer, AccessRoleAdmin, AccessSettings, BindingFilter, BindingSpec, LocalAuthorizer,
    LocalRoleAdmin, RevokeTarget, Role, RoleAdmin, RoleAdministration,
};
use crate::config::{AuthzConfig, AuthzMode, DatabaseConfig, HmacConfig, Settings};
use crate::domain::{ErrorCode, Scope, ScopeType, TenantId};
use crate::error::AppError;
use crate::store;

/// The default operator: the nil UUID, recorded as the actor of what the
/// commands change (audit log; `X-User-Id` towards Access).
pub const OPERATOR: &str = "00000000-0000-0000-0000-000000000000";

const AFTER_HELP: &str = "\
The mode is EVENTS_AUTHZ (default: access when ACCESS_BASE_URL is set, else local).
local: bindings live in this service's database (DATABASE_URL). access: roles and
bindings live in Access (ACCESS_BASE_URL, calls signed with BFF_INTERNAL_HMAC_SECRET,
made as --as-user with X-Master-Flags {\"system_admin\":true}); the audit rows still go
to this service's database.

Exit status: 0 done (or nothing to change); 1 refused or failed (a role missing in
Access, a role there with other permissions, …); 2 usage; 69 Access or Postgres
unreachable; 78 unusable setting.

Examples (T, U: tenant and user UUIDs):
  events-svc access bootstrap --tenant-id $T
  events-svc access grant  --tenant-id $T --user-id $U --role organizer
  events-svc access grant  --tenant-id $T --user-id $U --role organizer --scope COMMUNITY:c-42
  events-svc access revoke --tenant-id $T --user-id $U --role organizer --scope COMMUNITY:c-42
  events-svc access list   --tenant-id $T --role organizer";

#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Create the roles events.participant and events.organizer in Access,
    /// once, as system templates every tenant shares (idempotent; in local
    /// mode they are built in and nothing is created).
    #[command(after_help = AFTER_HELP)]
    Bootstrap(Operator),
    /// Grant a role to a user at a scope (the tenant by default).
    #[command(after_help = AFTER_HELP)]
    Grant(GrantArgs),
    /// Revoke a role binding: by --binding-id, or by user, role and scope.
    #[command(after_help = AFTER_HELP)]
    Revoke(RevokeArgs),
    /// List the role catalog and the tenant's role bindings.
    #[command(after_help = AFTER_HELP)]
    List(ListArgs),
}

/// Who runs the command, and in which tenant.
#[derive(Debug, Args)]
pub struct Operator {
    /// The tenant whose roles and bindings change.
    #[arg(long, value_name = "UUID")]
    tenant_id: Uuid,
    /// The operator recorded as the actor (audit log) and sent to Access
    /// as X-User-Id.
    #[arg(long, value_name = "UUID", default_value = OPERATOR)]
    as_user: Uuid,
    /// X-Tenant-Slug sent to Access (it must not be empty there).
    #[arg(long, value_name = "SLUG", default_value = "events-svc")]
    tenant_slug: String,
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    #[command(flatten)]
    operator: Operator,
    /// The user who gets the role.
    #[arg(long, value_name = "UUID")]
    user_id: Uuid,
    /// participant, organizer or admin (events.participant, events.organizer,
    /// events.admin; admin: local mode, TENANT scope).
    #[arg(long, value_name = "ROLE", value_parser = parse_role)]
    role: Role,
    /// TENANT (the default: the tenant itself), COMMUNITY:<id> or TEAM:<id>.
    #[arg(long, value_name = "TYPE:ID")]
    scope: Option<String>,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    operator: Operator,
    /// The binding's id (as `list` shows it); instead of user, role and scope.
    #[arg(long, value_name = "ID", conflicts_with_all = ["user_id", "role", "scope"])]
    binding_id: Option<String>,
    /// The user who loses the role.
    #[arg(long, value_name = "UUID", required_unless_present = "binding_id")]
    user_id: Option<Uuid>,
    /// participant or organizer.
    #[arg(long, value_name = "ROLE", value_parser = parse_role, required_unless_present = "binding_id")]
    role: Option<Role>,
    /// TENANT (the default), COMMUNITY:<id> or TEAM:<id>.
    #[arg(long, value_name = "TYPE:ID")]
    scope: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    operator: Operator,
    /// Only this user's bindings.
    #[arg(long, value_name = "UUID")]
    user_id: Option<Uuid>,
    /// Only bindings of this role.
    #[arg(long, value_name = "ROLE", value_parser = parse_role)]
    role: Option<Role>,
    /// Only bindings at this scope: TENANT, COMMUNITY:<id> or TEAM:<id>.
    #[arg(long, value_name = "TYPE:ID")]
    scope: Option<String>,
    /// Print the admin.roles.list JSON instead of lines.
    #[arg(long)]
    json: bool,
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::from_name(text.trim())
        .ok_or_else(|| format!("'{text}' is not a role; use participant, organizer or admin"))
}

/// `--scope TYPE[:ID]` in `tenant`.
fn parse_scope(tenant: TenantId, text: Option<&str>) -> Result<Scope, String> {
    let Some(text) = text else {
        return Ok(Scope::tenant(tenant));
    };
    let (kind, id) = match text.split_once(':') {
        Some((kind, id)) => (kind, Some(id)),
        None => (text, None),
    };
    let kind: ScopeType =
        kind.trim()
            .to_ascii_uppercase()
            .parse()
            .map_err(|e: crate::domain::FieldError| {
                format!("--scope '{text}': {}", e.into_message())
            })?;
    binding_scope(tenant, Some(kind), id).map_err(|(_, m)| format!("--scope '{text}': {m}"))
}

fn scope_text(scope_type: ScopeType, scope_id: &str) -> String {
    format!("{scope_type}:{scope_id}")
}

const EXIT_USAGE: u8 = 2;
const EXIT_UNAVAILABLE: u8 = 69;

fn usage(message: &str) -> ExitCode {
    eprintln!("events-svc access: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// An error of the shared code path as an exit status.
fn app_failure(e: &AppError) -> ExitCode {
    let code = e.code();
    let details = e.details();
    let fields = if details["fields"].is_object() {
        format!(" {}", details["fields"])
    } else {
        String::new()
    };
    eprintln!(
        "events-svc access: {} {}: {}{fields}",
        e.status(),
        code,
        e.public_message()
    );
    match code {
        ErrorCode::AccessUnavailable | ErrorCode::ServiceUnavailable => {
            ExitCode::from(EXIT_UNAVAILABLE)
        }
        ErrorCode::ValidationError => ExitCode::from(EXIT_USAGE),
        _ => ExitCode::FAILURE,
    }
}

/// What a command works with: the backend of the configured mode and the
/// database (which holds the audit log).
struct Session {
    ctx: InternalContext,
    mode: AuthzMode,
    roles: RoleAdministration,
    access: Option<AccessRoleAdmin>,
    db: sqlx::PgPool,
    access_url: String,
}

impl Session {
    async fn open(settings: &Settings, operator: &Operator) -> Result<Self, ExitCode> {
        let authz = AuthzConfig::load(settings).map_err(|e| super::config_error(&e))?;
        let database = DatabaseConfig::load(settings).map_err(|e| super::config_error(&e))?;
        // In access mode, check the settings Access needs before anything
        // is touched.
        let access = match authz.mode {
            AuthzMode::Local => None,
            AuthzMode::Access => {
                let dev = crate::config::dev_mode(settings).map_err(|e| super::config_error(&e))?;
                let hmac = HmacConfig::load(settings, dev).map_err(|e| super::config_error(&e))?;
                let access_settings =
                    AccessSettings::from_parts(&authz, &hmac).ok_or_else(|| {
                        super::config_error(&crate::config::ConfigError {
                            var: "ACCESS_BASE_URL",
                            message: "access mode needs it and a signing secret".into(),
                        })
                    })?;
                let authorizer = AccessAuthorizer::new(access_settings).map_err(|e| {
                    eprintln!("events-svc access: configuration error: {e}");
                    ExitCode::from(super::EXIT_CONFIG)
                })?;
                Some(Arc::new(authorizer))
            }
        };
        let db = store::connect_with_retry(&database, Some(Duration::from_secs(10)))
            .await
            .map_err(|e| {
                eprintln!("events-svc access: {e}");
                ExitCode::from(EXIT_UNAVAILABLE)
            })?;
        let (backend, access_admin): (Arc<dyn RoleAdmin>, Option<AccessRoleAdmin>) = match access {
            None => (
                Arc::new(LocalRoleAdmin::new(
                    db.clone(),
                    Arc::new(LocalAuthorizer::new(db.clone())),
                )),
                None,
            ),
            Some(authorizer) => (
                Arc::new(AccessRoleAdmin::new(authorizer.clone(), db.clone())),
                Some(AccessRoleAdmin::new(authorizer, db.clone())),
            ),
        };
        let ctx = InternalContext {
            request_id: format!("events-svc-access-{}", Uuid::new_v4()),
            tenant_id: operator.tenant_id,
            tenant_slug: operator.tenant_slug.clone(),
            user_id: operator.as_user,
            master_flags: MasterFlags::parse(Some(r#"{"system_admin":true}"#)),
            signature_version: SignatureVersion::V1,
            signature: String::new(),
            timestamp: crate::auth::now_unix(),
        };
        Ok(Self {
            ctx,
            mode: authz.mode,
            roles: RoleAdministration::new(backend),
            access: access_admin,
            db,
            access_url: authz
                .access_base_url
                .as_ref()
                .map(|u| crate::config::redact(u.as_str()))
                .unwrap_or_default(),
        })
    }

    fn mode_name(&self) -> &'static str {
        self.roles.mode()
    }

    /// Closes the database connections, then returns `code`.
    async fn close(self, code: ExitCode) -> ExitCode {
        self.db.close().await;
        code
    }
}

pub async fn run(settings: &Settings, command: AccessCommand) -> ExitCode {
    match command {
        AccessCommand::Bootstrap(operator) => bootstrap(settings, &operator).await,
        AccessCommand::Grant(args) => grant(settings, args).await,
        AccessCommand::Revoke(args) => revoke(settings, args).await,
        AccessCommand::List(args) => list(settings, args).await,
    }
}

async fn bootstrap(settings: &Settings, operator: &Operator) -> ExitCode {
    let mode = match AuthzConfig::load(settings) {
        Ok(authz) => authz.mode,
        Err(e) => return super::config_error(&e),
    };
    if mode == AuthzMode::Local {
        println!(
            "local mode (EVENTS_AUTHZ=local): the roles events.participant and events.organizer \
             are built in; nothing to create"
        );
        return ExitCode::SUCCESS;
    }
    let session = match Session::open(settings, operator).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let Some(access) = session.access.as_ref() else {
        return session.close(ExitCode::FAILURE).await;
    };
    eprintln!(
        "checking the events role templates in Access at {} (asked in tenant {})",
        session.access_url, session.ctx.tenant_id
    );
    let seeded = match access.bootstrap(&session.ctx).await {
        Ok(seeded) => seeded,
        Err(e) => {
            let code = app_failure(&e);
            return session.close(code).await;
        }
    };
    let mut differs = false;
    for (role, outcome) in &seeded {
        let wanted: Vec<&str> = role.permissions().iter().map(|p| p.key()).collect();
        match outcome {
            Seeded::Created(id) => {
                println!(
                    "{}: created in Access as a system template, shared by every tenant (id {id}) with {}",
                    role.name(),
                    wanted.join(", ")
                );
                let recorded = crate::store::audit::record(
                    &session.db,
                    &[crate::store::audit::AuditEntry {
                        tenant_id: Some(session.ctx.tenant_id),
                        actor_user_id: Some(session.ctx.user_id),
                        action: "role.created",
                        target_type: "role",
                        target_id: Some(role.name().to_string()),
                        request_id: Some(session.ctx.request_id.clone()),
                        details: json!({"service": crate::authz::admin::ACCESS_SERVICE,
                                        "permissionKeys": wanted, "accessRoleId": id,
                                        "authz": "access"}),
                    }],
                )
                .await;
                if let Err(e) = recorded {
                    eprintln!(
                        "events-svc access: {}: the audit row could not be written: {e}",
                        role.name()
                    );
                }
            }
            Seeded::Present(id) => println!(
                "{}: already present as a system template (id {id})",
                role.name()
            ),
            Seeded::Differs {
                id,
                permission_keys,
            } => {
                differs = true;
                println!(
                    "{}: present (id {id}) with other permissions: has [{}], expected [{}]; \
                     left unchanged, correct it in Access",
                    role.name(),
                    permission_keys.join(", "),
                    wanted.join(", ")
                );
            }
        }
    }
    let code = if differs {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    };
    session.close(code).await
}

async fn grant(settings: &Settings, args: GrantArgs) -> ExitCode {
    let tenant = TenantId::from(args.operator.tenant_id);
    let scope = match parse_scope(tenant, args.scope.as_deref()) {
        Ok(s) => s,
        Err(m) => return usage(&m),
    };
    let spec = BindingSpec {
        user: args.user_id,
        role: args.role,
        scope,
    };
    let session = match Session::open(settings, &args.operator).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let code = match session.roles.grant(&session.ctx, &spec, Vec::new()).await {
        Ok((b, created)) => {
            let at = scope_text(b.scope_type, &b.scope_id);
            if created {
                println!(
                    "granted {} to {} at {at} (binding {}, {} mode)",
                    b.role.name(),
                    b.user,
                    b.id,
                    session.mode_name()
                );
            } else {
                println!(
                    "unchanged: {} already holds {} at {at} (binding {}, {} mode)",
                    b.user,
                    b.role.name(),
                    b.id,
                    session.mode_name()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => app_failure(&e),
    };
    session.close(code).await
}

async fn revoke(settings: &Settings, args: RevokeArgs) -> ExitCode {
    let tenant = TenantId::from(args.operator.tenant_id);
    let target = match (&args.binding_id, args.user_id, args.role) {
        (Some(id), _, _) if !id.trim().is_empty() => RevokeTarget::Id(id.trim().to_string()),
        (None, Some(user), Some(role)) => match parse_scope(tenant, args.scope.as_deref()) {
            Ok(scope) => RevokeTarget::Binding(BindingSpec { user, role, scope }),
            Err(m) => return usage(&m),
        },
        _ => return usage("give --binding-id, or --user-id and --role (and --scope)"),
    };
    let session = match Session::open(settings, &args.operator).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let code = match session
        .roles
        .revoke(&session.ctx, &target, Vec::new())
        .await
    {
        Ok(revoked) => {
            for b in &revoked.bindings {
                println!(
                    "revoked {} of {} at {} (binding {})",
                    b.role.name(),
                    b.user,
                    scope_text(b.scope_type, &b.scope_id),
                    b.id
                );
            }
            for id in &revoked.ids {
                println!("revoked binding {id}");
            }
            if revoked.count() == 0 {
                match &target {
                    RevokeTarget::Id(id) => println!("nothing to revoke: no binding {id}"),
                    RevokeTarget::Binding(spec) => println!(
                        "nothing to revoke: {} does not hold {} at {}",
                        spec.user,
                        spec.role.name(),
                        scope_text(spec.scope.scope_type(), spec.scope.scope_id())
                    ),
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => app_failure(&e),
    };
    session.close(code).await
}

async fn list(settings: &Settings, args: ListArgs) -> ExitCode {
    let tenant = TenantId::from(args.operator.tenant_id);
    let scope = match args.scope.as_deref() {
        None => None,
        Some(text) => match parse_scope(tenant, Some(text)) {
            Ok(s) => Some(s),
            Err(m) => return usage(&m),
        },
    };
    let filter = BindingFilter {
        user: args.user_id,
        role: args.role,
        scope_type: scope.as_ref().map(Scope::scope_type),
        scope_id: scope.as_ref().map(|s| s.scope_id().clone()),
        ..BindingFilter::default()
    };
    let session = match Session::open(settings, &args.operator).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let code = match session.roles.list(&session.ctx, &filter).await {
        Ok(listing) if args.json => {
            super::ops::print_json(&listing.to_json());
            ExitCode::SUCCESS
        }
        Ok(listing) => {
            for r in &listing.roles {
                let keys: Vec<&str> = r.role.permissions().iter().map(|p| p.key()).collect();
                let access = match (session.mode, &r.access_id) {
                    (AuthzMode::Access, Some(id)) => format!(" (Access id {id})"),
                    (AuthzMode::Access, None) => {
                        " (missing in Access: run events-svc access bootstrap)".into()
                    }
                    (AuthzMode::Local, _) => String::new(),
                };
                println!("role {}: {}{access}", r.role.name(), keys.join(", "));
            }
            for b in &listing.bindings {
                println!(
                    "binding {} {} {} {}",
                    b.id,
                    b.user,
                    b.role.name(),
                    scope_text(b.scope_type, &b.scope_id)
                );
            }
            eprintln!("{} binding(s)", listing.bindings.len());
            ExitCode::SUCCESS
        }
        Err(e) => app_failure(&e),
    };
    session.close(code).await
}
