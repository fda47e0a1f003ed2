//! Authorization: permissions, roles, visibility, and the `Authorizer`
//! that answers them (embedded `local` mode here; Access/Portal in `access`).

pub mod access;
pub mod admin;
pub mod guard;
pub mod local;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use futures::future::BoxFuture;

use crate::auth::InternalContext;
use crate::domain::{Scope, ScopeType};
use crate::error::AppError;

pub use access::{AccessAuthorizer, AccessSettings, AccessStats, AccessStatsSnapshot};
pub use admin::{
    AccessRoleAdmin, Binding, BindingFilter, BindingSpec, LocalRoleAdmin, RevokeTarget, RoleAdmin,
    RoleAdministration,
};
pub use guard::{Guard, Sight};
pub use local::LocalAuthorizer;

/// The permission keys registered in Access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    EventRead,
    EventCreate,
    EventManage,
    RsvpSet,
    AttendanceMark,
    /// Tenant administration: role bindings, memberships, the audit log.
    AdminManage,
}

impl Permission {
    pub const ALL: [Permission; 6] = [
        Permission::EventRead,
        Permission::EventCreate,
        Permission::EventManage,
        Permission::RsvpSet,
        Permission::AttendanceMark,
        Permission::AdminManage,
    ];

    pub const fn key(self) -> &'static str {
        match self {
            Permission::EventRead => "events.event.read",
            Permission::EventCreate => "events.event.create",
            Permission::EventManage => "events.event.manage",
            Permission::RsvpSet => "events.rsvp.set",
            Permission::AttendanceMark => "events.attendance.mark",
            Permission::AdminManage => "events.admin.manage",
        }
    }

    /// The action asked of Access for this permission. A tenant admin is
    /// whoever Access lets write the tenant's role bindings: Access knows
    /// its tenant admins, and `events.admin.manage` is not in its catalog.
    pub const fn access_action(self) -> &'static str {
        match self {
            Permission::AdminManage => "portal.role_bindings.write",
            other => other.key(),
        }
    }
}

/// The roles of the Events service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Participant,
    Organizer,
    /// A tenant admin: manages the tenant's role bindings and memberships
    /// and reads its audit log.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Participant, Role::Organizer, Role::Admin];
    /// The roles kept in Access when it is the authority (its permission
    /// catalog has no `events.admin.manage`).
    pub const IN_ACCESS: [Role; 2] = [Role::Participant, Role::Organizer];

    pub const fn name(self) -> &'static str {
        match self {
            Role::Participant => "events.participant",
            Role::Organizer => "events.organizer",
            Role::Admin => "events.admin",
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        match name {
            "events.participant" | "participant" => Some(Role::Participant),
            "events.organizer" | "organizer" => Some(Role::Organizer),
            "events.admin" | "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub const fn permissions(self) -> &'static [Permission] {
        match self {
            Role::Participant => &[Permission::EventRead, Permission::RsvpSet],
            Role::Organizer => &[
                Permission::EventCreate,
                Permission::EventManage,
                Permission::AttendanceMark,
            ],
            Role::Admin => &[Permission::AdminManage],
        }
    }

    /// Whether only a system admin may grant or revoke this role. A tenant
    /// admin may hand out every other role, so granting `events.admin`
    /// would let one tenant admin make others and never be removable.
    pub const fn system_admins_only(self) -> bool {
        matches!(self, Role::Admin)
    }
}

/// The role every tenant member holds without a binding.
pub const MEMBER_ROLE: &str = "member";

/// What every tenant member holds implicitly (Access's default `member` role).
pub const MEMBER_PERMISSIONS: [Permission; 2] = [Permission::EventRead, Permission::RsvpSet];

/// Answers of a membership look-up: scopes the user belongs to, and scopes
/// the authority could not answer for (unavailable, no usable cached answer).
#[derive(Debug, Clone, Default)]
pub struct Memberships {
    pub member_of: HashSet<Scope>,
    pub unknown: HashSet<Scope>,
}

/// How many calls to the authorities (Access, Portal) one request may still
/// make, and how many of them may run at once: a list over many gated
/// scopes must not turn one request into an unbounded burst of calls.
pub struct CallBudget {
    remaining: AtomicUsize,
    running: Arc<Semaphore>,
}

impl CallBudget {
    /// Calls of one request in flight at once.
    pub const MAX_CONCURRENT: usize = 8;

    pub fn new(max_calls: usize) -> Self {
        Self {
            remaining: AtomicUsize::new(max_calls),
            running: Arc::new(Semaphore::new(Self::MAX_CONCURRENT)),
        }
    }

    /// For callers that are not a request (tools, tests).
    pub fn unlimited() -> Self {
        Self::new(usize::MAX)
    }

    /// One more call: `None` once the budget is spent. Waits while
    /// [`Self::MAX_CONCURRENT`] of this request's calls are running; the
    /// permit is held until the call is over.
    pub async fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .ok()?;
        self.running.clone().acquire_owned().await.ok()
    }
}

/// The authority on permissions and memberships. Master flags (suspended,
/// banned, system admin) are handled by [`Guard`] before it is asked.
pub trait Authorizer: Send + Sync {
    /// Whether the caller holds `permission` at `scope` of their tenant;
    /// `None` when answering would need a call the request's `budget`
    /// no longer allows.
    fn has_permission<'a>(
        &'a self,
        ctx: &'a InternalContext,
        permission: Permission,
        scope: &'a Scope,
        budget: &'a CallBudget,
    ) -> BoxFuture<'a, Result<Option<bool>, AppError>>;

    /// True when memberships live in our own `scope_memberships` table, so
    /// a list can filter by them inside its query.
    fn memberships_in_database(&self) -> bool {
        false
    }

    /// The names of the caller's roles that apply at `scope`: the implicit
    /// `member` role every tenant member holds, then the bound ones.
    fn roles<'a>(
        &'a self,
        ctx: &'a InternalContext,
        scope: &'a Scope,
        budget: &'a CallBudget,
    ) -> BoxFuture<'a, Result<Vec<String>, AppError>>;

    /// Which of `scopes` (COMMUNITY or TEAM) the caller is a member of;
    /// scopes the `budget` leaves no call for are `unknown`.
    fn memberships<'a>(
        &'a self,
        ctx: &'a InternalContext,
        scopes: &'a [Scope],
        budget: &'a CallBudget,
    ) -> BoxFuture<'a, Result<Memberships, AppError>>;
}

/// Whether membership decides who sees events of this visibility in this scope.
pub fn membership_gated(scope_type: ScopeType) -> bool {
    matches!(scope_type, ScopeType::Community | ScopeType::Team)
}
