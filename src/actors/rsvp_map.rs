//! The RSVPs a scope actor caches with an event, held against a budget
//! shared by the whole instance.
//!
//! An event's map is capped (`MAX_CACHED_RSVPS`), but a scope caches up to
//! a thousand events and an instance keeps thousands of scopes live, so
//! per-event caps alone bound nothing an operator can plan for. Every entry
//! of every map counts against one budget while the map exists; a map that
//! would overdraw it is not kept, and its event is cached without it
//! (reads then look up the caller's own RSVP, commits the users they touch).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::domain::{RsvpStatus, UserId};

/// Events with more RSVPs than this are cached without them.
pub const MAX_CACHED_RSVPS: i64 = 5_000;

/// The default of `EVENTS_MAX_CACHED_RSVPS`, the RSVPs an instance caches
/// across all its events: about 55 bytes of RSS each (measured over a
/// soak), so ~55 MB at most.
pub const MAX_CACHED_RSVPS_PER_INSTANCE: usize = 1_000_000;

/// How many cached RSVPs exist, and how many may.
#[derive(Debug)]
pub struct RsvpBudget {
    held: AtomicUsize,
    max: usize,
}

impl RsvpBudget {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            held: AtomicUsize::new(0),
            max,
        })
    }

    /// RSVPs held in cached maps now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn take(&self, n: usize) -> bool {
        let before = self.held.fetch_add(n, Ordering::AcqRel);
        if before.saturating_add(n) > self.max {
            self.held.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn give_back(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Every RSVP of one event, counted against its budget for as long as it
/// exists (the count always equals the map's length).
#[derive(Debug)]
pub struct RsvpMap {
    map: HashMap<UserId, RsvpStatus>,
    budget: Arc<RsvpBudget>,
}

impl RsvpMap {
    /// The map, unless it is over the per-event cap or the budget has no
    /// room for it.
    pub fn new(map: HashMap<UserId, RsvpStatus>, budget: &Arc<RsvpBudget>) -> Option<Self> {
        if map.len() as i64 > MAX_CACHED_RSVPS || !budget.take(map.len()) {
            return None;
        }
        Some(Self {
            map,
            budget: budget.clone(),
        })
    }

    pub fn get(&self, user: &UserId) -> Option<RsvpStatus> {
        self.map.get(user).copied()
    }

    /// The map after a commit's changes (`None`: the RSVP is gone). Copies
    /// the map when a reader still holds it. `None` when the result would
    /// pass either cap: the event is then cached without its RSVPs.
    pub fn changed(this: Arc<Self>, changes: &[(UserId, Option<RsvpStatus>)]) -> Option<Arc<Self>> {
        let mut owned = match Arc::try_unwrap(this) {
            Ok(owned) => owned,
            Err(shared) => Self::new(shared.map.clone(), &shared.budget)?,
        };
        for (user, status) in changes {
            match status {
                Some(s) => {
                    if !owned.map.contains_key(user)
                        && (owned.map.len() as i64 >= MAX_CACHED_RSVPS || !owned.budget.take(1))
                    {
                        return None;
                    }
                    owned.map.insert(*user, *s);
                }
                None => {
                    if owned.map.remove(user).is_some() {
                        owned.budget.give_back(1);
                    }
                }
            }
        }
        Some(Arc::new(owned))
    }
}

impl Drop for RsvpMap {
    fn drop(&mut self) {
        self.budget.give_back(self.map.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(n: usize) -> HashMap<UserId, RsvpStatus> {
        (0..n)
            .map(|_| (UserId::from(uuid::Uuid::new_v4()), RsvpStatus::Going))
            .collect()
    }

    #[test]
    fn maps_hold_their_entries_against_the_budget_until_dropped() {
        let budget = RsvpBudget::new(10);
        let a = RsvpMap::new(users(6), &budget).expect("room for 6");
        assert_eq!(budget.held(), 6);
        assert!(RsvpMap::new(users(5), &budget).is_none(), "6 + 5 > 10");
        assert_eq!(budget.held(), 6);
        let b = RsvpMap::new(users(4), &budget).expect("room for 4");
        assert_eq!(budget.held(), 10);
        drop(a);
        assert_eq!(budget.held(), 4);
        drop(b);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn changes_move_the_count_and_a_shared_map_is_copied() {
        let budget = RsvpBudget::new(10);
        let map = Arc::new(RsvpMap::new(users(3), &budget).expect("room"));
        let (new, old) = (
            UserId::from(uuid::Uuid::new_v4()),
            *map.map.keys().next().expect("a user"),
        );
        let map = RsvpMap::changed(map, &[(new, Some(RsvpStatus::Interested)), (old, None)])
            .expect("within the budget");
        assert_eq!((map.map.len(), budget.held()), (3, 3));
        assert_eq!(map.get(&new), Some(RsvpStatus::Interested));
        assert_eq!(map.get(&old), None);

        // A reader still holds this version: the change copies it, and both
        // copies count until the reader lets go.
        let reader = map.clone();
        let map = RsvpMap::changed(map, &[]).expect("a copy fits");
        assert_eq!(budget.held(), 6);
        drop((reader, map));
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn an_event_past_the_per_event_cap_is_cached_without_its_map() {
        let budget = RsvpBudget::new(MAX_CACHED_RSVPS_PER_INSTANCE);
        let cap = MAX_CACHED_RSVPS as usize;
        assert!(RsvpMap::new(users(cap + 1), &budget).is_none());
        let full = Arc::new(RsvpMap::new(users(cap), &budget).expect("at the cap"));
        let one_more = [(UserId::from(uuid::Uuid::new_v4()), Some(RsvpStatus::Going))];
        assert!(RsvpMap::changed(full, &one_more).is_none());
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_copy_or_a_new_rsvp_that_does_not_fit_leaves_the_event_without_its_map() {
        let budget = RsvpBudget::new(5);
        let map = Arc::new(RsvpMap::new(users(3), &budget).expect("room"));
        let reader = map.clone();
        assert!(
            RsvpMap::changed(map, &[]).is_none(),
            "a copy of 3 beside 3 > 5"
        );
        assert_eq!(budget.held(), 3);
        let more: Vec<_> = (0..3)
            .map(|_| (UserId::from(uuid::Uuid::new_v4()), Some(RsvpStatus::Going)))
            .collect();
        assert!(RsvpMap::changed(reader, &more).is_none(), "3 + 3 > 5");
        assert_eq!(budget.held(), 0);
    }
}
