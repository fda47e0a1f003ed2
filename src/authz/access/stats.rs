//! What the access authorizer counts, for the metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Counters and summed latencies, for the metrics endpoint. Monotonic.
#[derive(Debug, Default)]
pub struct AccessStats {
    /// HTTP calls made to Access (retries included).
    pub access_calls: AtomicU64,
    /// Access look-ups that ended without a decision (→ 503).
    pub access_failures: AtomicU64,
    pub access_latency_micros: AtomicU64,
    pub access_latency_max_micros: AtomicU64,
    /// HTTP calls made to Portal (retries included).
    pub portal_calls: AtomicU64,
    /// Portal look-ups that ended without an answer (→ stale or unknown).
    pub portal_failures: AtomicU64,
    pub portal_latency_micros: AtomicU64,
    pub portal_latency_max_micros: AtomicU64,
    /// Permission questions answered from the decision cache.
    pub decision_hits: AtomicU64,
    /// Permission questions that needed Access (or a call already in flight).
    pub decision_misses: AtomicU64,
    /// Membership questions answered from the membership cache.
    pub membership_hits: AtomicU64,
    /// Membership questions that needed Portal (or a call already in flight).
    pub membership_misses: AtomicU64,
    /// Misses that joined an identical call already in flight.
    pub coalesced: AtomicU64,
    /// Membership answers taken from an expired entry because Portal failed.
    pub stale_memberships: AtomicU64,
    /// Memberships answered "unknown" (no usable answer at all).
    pub unknown_memberships: AtomicU64,
    /// Questions left undecided because their request had spent its calls
    /// (`EVENTS_AUTHZ_MAX_CALLS`).
    pub over_budget: AtomicU64,
    /// Second attempts after a connection-level failure.
    pub retries: AtomicU64,
    /// Calls of the authorizer (`has_permission` + `memberships`).
    pub lookups: AtomicU64,
    /// Time callers spent inside the authorizer, summed.
    pub lookup_micros: AtomicU64,
}

/// A copy of [`AccessStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AccessStatsSnapshot {
    pub access_calls: u64,
    pub access_failures: u64,
    pub access_latency_micros: u64,
    pub access_latency_max_micros: u64,
    pub portal_calls: u64,
    pub portal_failures: u64,
    pub portal_latency_micros: u64,
    pub portal_latency_max_micros: u64,
    pub decision_hits: u64,
    pub decision_misses: u64,
    pub membership_hits: u64,
    pub membership_misses: u64,
    pub coalesced: u64,
    pub stale_memberships: u64,
    pub unknown_memberships: u64,
    pub over_budget: u64,
    pub retries: u64,
    pub lookups: u64,
    pub lookup_micros: u64,
}

impl AccessStats {
    pub fn snapshot(&self) -> AccessStatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AccessStatsSnapshot {
            access_calls: get(&self.access_calls),
            access_failures: get(&self.access_failures),
            access_latency_micros: get(&self.access_latency_micros),
            access_latency_max_micros: get(&self.access_latency_max_micros),
            portal_calls: get(&self.portal_calls),
            portal_failures: get(&self.portal_failures),
            portal_latency_micros: get(&self.portal_latency_micros),
            portal_latency_max_micros: get(&self.portal_latency_max_micros),
            decision_hits: get(&self.decision_hits),
            decision_misses: get(&self.decision_misses),
            membership_hits: get(&self.membership_hits),
            membership_misses: get(&self.membership_misses),
            coalesced: get(&self.coalesced),
            stale_memberships: get(&self.stale_memberships),
            unknown_memberships: get(&self.unknown_memberships),
            over_budget: get(&self.over_budget),
            retries: get(&self.retries),
            lookups: get(&self.lookups),
            lookup_micros: get(&self.lookup_micros),
        }
    }
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
