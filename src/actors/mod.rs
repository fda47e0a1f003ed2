//! Actors: a scope actor per (tenant, scope) owning that scope's warm
//! state and serialising its writes into group commits, and the registry
//! that activates, passivates and supervises them.

pub mod bridge;
pub mod extender;
pub mod forward;
pub mod listing;
pub mod outbox;
pub mod owners;
pub mod registry;
pub mod reminders;
pub mod rsvp_map;
pub mod scope;
pub mod stopper;

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::domain::{Event, RsvpCounts, RsvpStatus, Scope, ScopeId, ScopeType, TenantId, UserId};

pub use rsvp_map::{MAX_CACHED_RSVPS, MAX_CACHED_RSVPS_PER_INSTANCE, RsvpBudget, RsvpMap};

pub use registry::{Registry, Shared};

/// Which actor owns an event: its tenant and scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScopeKey {
    pub tenant: TenantId,
    pub scope_type: ScopeType,
    pub scope_id: String,
}

impl ScopeKey {
    pub fn new(tenant: TenantId, scope: &Scope) -> Self {
        Self {
            tenant,
            scope_type: scope.scope_type(),
            scope_id: scope.scope_id().as_str().to_string(),
        }
    }

    pub fn of(event: &Event) -> Self {
        Self::new(event.tenant_id, &event.scope)
    }

    pub fn scope(&self) -> Option<Scope> {
        ScopeId::parse(&self.scope_id)
            .ok()
            .map(|id| Scope::from_stored(self.scope_type, id))
    }
}

/// An event with its counters, as one consistent read, and (when the
/// event has few enough) every RSVP, so reads need no query for `myRsvp`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Shared with the replies built from it: reads never copy an event.
    pub event: Arc<Event>,
    pub counts: RsvpCounts,
    pub rsvps: Option<Arc<RsvpMap>>,
    /// `event_counters.revision` when read: which of two snapshots is newer.
    pub revision: i64,
}

impl Snapshot {
    pub fn new(event: Event, counts: RsvpCounts) -> Self {
        Self {
            event: Arc::new(event),
            counts,
            rsvps: None,
            revision: 0,
        }
    }

    /// The user's RSVP when the snapshot holds the event's RSVPs.
    pub fn rsvp_of(&self, user: &UserId) -> Option<Option<RsvpStatus>> {
        self.rsvps.as_ref().map(|m| m.get(user))
    }
}

// The settings live with the rest of the configuration; actors only read them.
pub use crate::config::ActorConfig;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sweep_interval_follows_the_idle_timeout() {
        let sweep = ActorConfig::sweep_interval_for;
        assert_eq!(sweep(Duration::from_millis(300)), Duration::from_millis(75));
        assert_eq!(sweep(Duration::from_millis(100)), Duration::from_millis(50));
        assert_eq!(sweep(Duration::from_secs(20)), Duration::from_secs(5));
        assert_eq!(sweep(Duration::from_secs(120)), Duration::from_secs(10));
        assert_eq!(
            ActorConfig::default().sweep_interval,
            Duration::from_secs(10)
        );
    }
}
