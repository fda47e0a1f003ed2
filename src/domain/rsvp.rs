//! RSVP statuses, and the capacity/waitlist arithmetic of one event.
//!
//! Only `going` uses a seat. A `going` request that finds no free seat joins
//! the end of the waitlist and the user's effective status is `waitlisted`;
//! seats freed later (someone leaves `going`, capacity is raised or removed)
//! go to the earliest waitlisted users at once. Lowering capacity below the
//! current `going` count removes no one: it only makes new requests wait.
//!
//! These functions only count. Which users are "the earliest waitlisted" is
//! the caller's to resolve (by the time each joined the waitlist), applying
//! `promotions` to that many of them in order.

use serde::{Deserialize, Serialize};

use crate::domain::values::wire_enum;

wire_enum! {
    /// A stored (effective) RSVP status.
    RsvpStatus, "status" {
        Interested => "interested",
        Going => "going",
        NotGoing => "not_going",
        /// Asked for `going` when the event was full.
        Waitlisted => "waitlisted",
    }
}

wire_enum! {
    /// What a user may ask for. `waitlisted` is an outcome, never a request.
    RequestedRsvp, "status" {
        Interested => "interested",
        Going => "going",
        NotGoing => "not_going",
    }
}

wire_enum! {
    /// Why an RSVP changed, as carried by `event.rsvp.changed`.
    RsvpChangeReason, "reason" {
        /// The user asked for it.
        User => "user",
        /// A seat freed up and the user left the waitlist for `going`.
        Promoted => "promoted",
        /// The user removed their RSVP.
        Cleared => "cleared",
    }
}

impl From<RequestedRsvp> for RsvpStatus {
    fn from(requested: RequestedRsvp) -> Self {
        match requested {
            RequestedRsvp::Interested => RsvpStatus::Interested,
            RequestedRsvp::Going => RsvpStatus::Going,
            RequestedRsvp::NotGoing => RsvpStatus::NotGoing,
        }
    }
}

/// The seat state of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seats {
    /// `None` means unlimited.
    pub capacity: Option<u32>,
    pub going: u32,
    pub waitlisted: u32,
}

impl Seats {
    /// Seats not taken; `None` when unlimited. Zero, not negative, when
    /// capacity was lowered below the `going` count.
    pub fn free(&self) -> Option<u32> {
        self.capacity.map(|c| c.saturating_sub(self.going))
    }

    /// How many waitlisted users the free seats can take now.
    fn promotable(&self) -> u32 {
        match self.free() {
            None => self.waitlisted,
            Some(free) => free.min(self.waitlisted),
        }
    }

    /// Whether someone who is not yet waiting gets a seat: only if one is
    /// left after every earlier waitlisted user has been seated, so a
    /// newcomer never overtakes the queue.
    fn seat_for_newcomer(&self) -> bool {
        match self.free() {
            None => true,
            Some(free) => free > self.waitlisted,
        }
    }

    fn with_promotions(mut self) -> (Seats, u32) {
        let promotions = self.promotable();
        self.going = self.going.saturating_add(promotions);
        self.waitlisted -= promotions;
        (self, promotions)
    }

    /// The seat state after capacity becomes `new_capacity`, promotions
    /// included, and how many were promoted.
    pub fn after_capacity_change(&self, new_capacity: Option<u32>) -> (Seats, u32) {
        Seats {
            capacity: new_capacity,
            ..*self
        }
        .with_promotions()
    }
}

/// The outcome of one RSVP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsvpDecision {
    /// The requester's status afterwards; `None` when cleared or never set.
    pub new_status: Option<RsvpStatus>,
    /// Whether the requester's status changes (nothing is written otherwise).
    pub changed: bool,
    /// The counters after the request and the promotions.
    pub seats_after: Seats,
    /// How many of the earliest waitlisted users (never the requester)
    /// become `going` as a consequence.
    pub promotions: u32,
}

/// Decides what an RSVP request does, given the requester's current status
/// and the event's seats. `requested: None` clears the RSVP.
///
/// Asking for `going` while `going` or `waitlisted` changes nothing (a
/// waitlisted user keeps their place); any other request equal to the
/// current status changes nothing either.
pub fn decide(
    current: Option<RsvpStatus>,
    requested: Option<RequestedRsvp>,
    seats: &Seats,
) -> RsvpDecision {
    let unchanged = RsvpDecision {
        new_status: current,
        changed: false,
        seats_after: *seats,
        promotions: 0,
    };
    let target = match requested {
        None => None,
        Some(RequestedRsvp::Going) => {
            if matches!(current, Some(RsvpStatus::Going | RsvpStatus::Waitlisted)) {
                return unchanged;
            }
            if seats.seat_for_newcomer() {
                Some(RsvpStatus::Going)
            } else {
                Some(RsvpStatus::Waitlisted)
            }
        }
        Some(other) => Some(RsvpStatus::from(other)),
    };
    if target == current {
        return unchanged;
    }

    let mut after = *seats;
    match current {
        Some(RsvpStatus::Going) => after.going = after.going.saturating_sub(1),
        Some(RsvpStatus::Waitlisted) => after.waitlisted = after.waitlisted.saturating_sub(1),
        _ => {}
    }
    match target {
        Some(RsvpStatus::Going) => after.going = after.going.saturating_add(1),
        Some(RsvpStatus::Waitlisted) => after.waitlisted = after.waitlisted.saturating_add(1),
        _ => {}
    }
    // A newcomer who was waitlisted sits behind everyone counted in
    // `promotable`, because they were waitlisted only when the free seats
    // did not exceed the earlier queue.
    let (seats_after, promotions) = after.with_promotions();
    RsvpDecision {
        new_status: target,
        changed: true,
        seats_after,
        promotions,
    }
}

/// How many of the earliest waitlisted become `going` when capacity changes
/// to `new_capacity` (`None` = unlimited). Lowering promotes no one and
/// demotes no one.
pub fn promotions_after_capacity_change(seats: &Seats, new_capacity: Option<u32>) -> u32 {
    seats.after_capacity_change(new_capacity).1
}

/// Counts per status, as shown in `rsvpCounts` (all keys always present).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RsvpCounts {
    pub interested: u32,
    pub going: u32,
    pub not_going: u32,
    pub waitlisted: u32,
}

impl RsvpCounts {
    pub fn get(&self, status: RsvpStatus) -> u32 {
        match status {
            RsvpStatus::Interested => self.interested,
            RsvpStatus::Going => self.going,
            RsvpStatus::NotGoing => self.not_going,
            RsvpStatus::Waitlisted => self.waitlisted,
        }
    }

    fn slot(&mut self, status: RsvpStatus) -> &mut u32 {
        match status {
            RsvpStatus::Interested => &mut self.interested,
            RsvpStatus::Going => &mut self.going,
            RsvpStatus::NotGoing => &mut self.not_going,
            RsvpStatus::Waitlisted => &mut self.waitlisted,
        }
    }

    pub fn add(&mut self, status: RsvpStatus) {
        let slot = self.slot(status);
        *slot = slot.saturating_add(1);
    }

    pub fn remove(&mut self, status: RsvpStatus) {
        let slot = self.slot(status);
        *slot = slot.saturating_sub(1);
    }

    /// Moves one user from `from` to `to` (either may be none).
    pub fn transition(&mut self, from: Option<RsvpStatus>, to: Option<RsvpStatus>) {
        if from == to {
            return;
        }
        if let Some(from) = from {
            self.remove(from);
        }
        if let Some(to) = to {
            self.add(to);
        }
    }

    pub fn seats(&self, capacity: Option<u32>) -> Seats {
        Seats {
            capacity,
            going: self.going,
            waitlisted: self.waitlisted,
        }
    }
}

impl FromIterator<RsvpStatus> for RsvpCounts {
    fn from_iter<I: IntoIterator<Item = RsvpStatus>>(iter: I) -> Self {
        let mut counts = RsvpCounts::default();
        for status in iter {
            counts.add(status);
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RequestedRsvp as R;
    use RsvpStatus as S;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn seats(capacity: Option<u32>, going: u32, waitlisted: u32) -> Seats {
        Seats {
            capacity,
            going,
            waitlisted,
        }
    }

    #[test]
    fn wire_values() {
        let all: Vec<&str> = S::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(all, ["interested", "going", "not_going", "waitlisted"]);
        assert!("waitlisted".parse::<RequestedRsvp>().is_err());
        assert_eq!(
            "waitlisted"
                .parse::<RequestedRsvp>()
                .map_err(|e| e.into_message()),
            Err("status must be one of: interested, going, not_going".to_owned())
        );
        assert_eq!("not_going".parse::<RequestedRsvp>(), Ok(R::NotGoing));
        assert!("Going".parse::<RsvpStatus>().is_err());
        assert_eq!(RsvpChangeReason::Promoted.as_str(), "promoted");
        assert_eq!(
            serde_json::to_value(RsvpCounts::default()).ok(),
            Some(serde_json::json!({"interested":0,"going":0,"not_going":0,"waitlisted":0}))
        );
    }

    #[test]
    fn going_takes_a_free_seat() {
        let d = decide(None, Some(R::Going), &seats(Some(2), 1, 0));
        assert_eq!(d.new_status, Some(S::Going));
        assert!(d.changed);
        assert_eq!(d.seats_after, seats(Some(2), 2, 0));
        assert_eq!(d.promotions, 0);
    }

    #[test]
    fn going_when_full_joins_the_waitlist() {
        let d = decide(Some(S::Interested), Some(R::Going), &seats(Some(2), 2, 3));
        assert_eq!(d.new_status, Some(S::Waitlisted));
        assert_eq!(d.seats_after, seats(Some(2), 2, 4));
        assert_eq!(d.promotions, 0);
    }

    #[test]
    fn unlimited_always_has_a_seat() {
        let d = decide(None, Some(R::Going), &seats(None, 1_000_000, 0));
        assert_eq!(d.new_status, Some(S::Going));
        assert_eq!(d.seats_after.going, 1_000_001);
    }

    #[test]
    fn repeated_requests_change_nothing() {
        let full = seats(Some(1), 1, 1);
        for (current, requested) in [
            (Some(S::Going), Some(R::Going)),
            (Some(S::Waitlisted), Some(R::Going)),
            (Some(S::Interested), Some(R::Interested)),
            (Some(S::NotGoing), Some(R::NotGoing)),
            (None, None),
        ] {
            let d = decide(current, requested, &full);
            assert!(!d.changed, "{current:?} {requested:?}");
            assert_eq!(d.new_status, current);
            assert_eq!(d.seats_after, full);
            assert_eq!(d.promotions, 0);
        }
    }

    #[test]
    fn leaving_going_promotes_the_first_waitlisted() {
        let d = decide(Some(S::Going), Some(R::NotGoing), &seats(Some(2), 2, 3));
        assert_eq!(d.new_status, Some(S::NotGoing));
        assert_eq!(d.promotions, 1);
        assert_eq!(d.seats_after, seats(Some(2), 2, 2));
    }

    #[test]
    fn clearing_going_promotes_too() {
        let d = decide(Some(S::Going), None, &seats(Some(1), 1, 1));
        assert_eq!(d.new_status, None);
        assert!(d.changed);
        assert_eq!(d.promotions, 1);
        assert_eq!(d.seats_after, seats(Some(1), 1, 0));
    }

    #[test]
    fn leaving_going_with_an_empty_waitlist_frees_a_seat() {
        let d = decide(Some(S::Going), Some(R::Interested), &seats(Some(3), 3, 0));
        assert_eq!(d.promotions, 0);
        assert_eq!(d.seats_after, seats(Some(3), 2, 0));
    }

    #[test]
    fn leaving_the_waitlist_promotes_no_one() {
        let d = decide(
            Some(S::Waitlisted),
            Some(R::Interested),
            &seats(Some(2), 2, 3),
        );
        assert_eq!(d.new_status, Some(S::Interested));
        assert_eq!(d.promotions, 0);
        assert_eq!(d.seats_after, seats(Some(2), 2, 2));
        let cleared = decide(Some(S::Waitlisted), None, &seats(Some(2), 2, 1));
        assert_eq!(cleared.seats_after, seats(Some(2), 2, 0));
    }

    #[test]
    fn over_capacity_frees_no_seat_until_below_it() {
        // Capacity was lowered from 5 to 3 with 5 going.
        let d = decide(Some(S::Going), Some(R::NotGoing), &seats(Some(3), 5, 2));
        assert_eq!(d.promotions, 0);
        assert_eq!(d.seats_after, seats(Some(3), 4, 2));
        let d = decide(None, Some(R::Going), &seats(Some(3), 4, 0));
        assert_eq!(d.new_status, Some(S::Waitlisted));
        let d = decide(Some(S::Going), None, &seats(Some(3), 3, 2));
        assert_eq!((d.promotions, d.seats_after), (1, seats(Some(3), 3, 1)));
    }

    #[test]
    fn a_newcomer_never_overtakes_the_queue() {
        // A queue with free seats (capacity raised, promotions not applied
        // yet): the queue is seated first, the newcomer only if one is left.
        let d = decide(None, Some(R::Going), &seats(Some(5), 3, 2));
        assert_eq!(d.new_status, Some(S::Waitlisted));
        assert_eq!((d.promotions, d.seats_after), (2, seats(Some(5), 5, 1)));
        let d = decide(None, Some(R::Going), &seats(Some(5), 2, 2));
        assert_eq!(d.new_status, Some(S::Going));
        assert_eq!((d.promotions, d.seats_after), (2, seats(Some(5), 5, 0)));
    }

    #[test]
    fn capacity_changes() {
        let s = seats(Some(2), 2, 3);
        assert_eq!(promotions_after_capacity_change(&s, Some(4)), 2);
        assert_eq!(promotions_after_capacity_change(&s, Some(10)), 3);
        assert_eq!(promotions_after_capacity_change(&s, None), 3);
        assert_eq!(promotions_after_capacity_change(&s, Some(2)), 0);
        assert_eq!(promotions_after_capacity_change(&s, Some(1)), 0);
        assert_eq!(s.after_capacity_change(Some(1)), (seats(Some(1), 2, 3), 0));
        assert_eq!(s.after_capacity_change(Some(4)), (seats(Some(4), 4, 1), 2));
        assert_eq!(s.after_capacity_change(None), (seats(None, 5, 0), 3));
    }

    #[test]
    fn counts_transitions() {
        let mut c: RsvpCounts = [S::Going, S::Going, S::Interested].into_iter().collect();
        assert_eq!((c.going, c.interested), (2, 1));
        c.transition(Some(S::Going), Some(S::Waitlisted));
        c.transition(None, Some(S::NotGoing));
        c.transition(Some(S::Interested), None);
        c.transition(Some(S::NotGoing), Some(S::NotGoing));
        assert_eq!(
            c,
            RsvpCounts {
                interested: 0,
                going: 1,
                not_going: 1,
                waitlisted: 1
            }
        );
        assert_eq!(c.seats(Some(4)), seats(Some(4), 1, 1));
        assert_eq!(c.get(S::Waitlisted), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Rsvp(usize, Option<RequestedRsvp>),
        Capacity(Option<u32>),
    }

    fn requested() -> impl Strategy<Value = Option<RequestedRsvp>> {
        prop_oneof![
            Just(None),
            Just(Some(R::Interested)),
            Just(Some(R::Going)),
            Just(Some(R::Going)),
            Just(Some(R::NotGoing)),
        ]
    }

    fn op(users: usize, capacity_changes: bool) -> impl Strategy<Value = Op> {
        let rsvp = (0..users, requested()).prop_map(|(u, r)| Op::Rsvp(u, r));
        if capacity_changes {
            prop_oneof![
                8 => rsvp,
                1 => prop::option::of(1u32..8).prop_map(Op::Capacity),
            ]
            .boxed()
        } else {
            rsvp.boxed()
        }
    }

    /// Applies operations the way a scope actor would: `decide` for the
    /// requester, then seat the first `promotions` of the waitlist queue.
    /// Returns an error message on the first broken invariant.
    fn simulate(users: usize, capacity: Option<u32>, ops: &[Op]) -> Result<(), String> {
        let mut status: Vec<Option<RsvpStatus>> = vec![None; users];
        let mut queue: VecDeque<usize> = VecDeque::new();
        let mut seats = Seats {
            capacity,
            going: 0,
            waitlisted: 0,
        };
        let mut lowered_below_going = false;

        for (step, op) in ops.iter().enumerate() {
            let going_before = seats.going;
            let promotions = match *op {
                Op::Rsvp(user, requested) => {
                    let current = status[user];
                    let d = decide(current, requested, &seats);
                    if !d.changed {
                        if d.seats_after != seats || d.promotions != 0 {
                            return Err(format!("step {step}: unchanged decision moved seats"));
                        }
                        continue;
                    }
                    if current == Some(S::Waitlisted) {
                        queue.retain(|&u| u != user);
                    }
                    if d.new_status == Some(S::Waitlisted) {
                        queue.push_back(user);
                    }
                    status[user] = d.new_status;
                    seats = d.seats_after;
                    let promoted = d.promotions;
                    if current != Some(S::Going)
                        && d.new_status == Some(S::Going)
                        && queue.len() > promoted as usize
                    {
                        return Err(format!(
                            "step {step}: user {user} got a seat while others still wait"
                        ));
                    }
                    promoted
                }
                Op::Capacity(new_capacity) => {
                    if new_capacity.is_some_and(|c| c < seats.going) {
                        lowered_below_going = true;
                    }
                    let (after, promoted) = seats.after_capacity_change(new_capacity);
                    if promoted != promotions_after_capacity_change(&seats, new_capacity) {
                        return Err(format!("step {step}: the two capacity functions disagree"));
                    }
                    seats = after;
                    promoted
                }
            };
            for _ in 0..promotions {
                match queue.pop_front() {
                    Some(user) if status[user] == Some(S::Waitlisted) => {
                        status[user] = Some(S::Going);
                    }
                    other => return Err(format!("step {step}: promoted {other:?}, not a waiter")),
                }
            }

            let recount: RsvpCounts = status.iter().flatten().copied().collect();
            if (recount.going, recount.waitlisted) != (seats.going, seats.waitlisted) {
                return Err(format!(
                    "step {step}: counters {seats:?} != recount {recount:?}"
                ));
            }
            if queue.len() as u32 != seats.waitlisted {
                return Err(format!("step {step}: queue length differs from counter"));
            }
            if let Some(cap) = seats.capacity {
                if !lowered_below_going && seats.going > cap {
                    return Err(format!("step {step}: overfilled {seats:?}"));
                }
                if seats.going > going_before && seats.going > cap {
                    return Err(format!("step {step}: seated someone over capacity"));
                }
                if seats.waitlisted > 0 && seats.going < cap {
                    return Err(format!(
                        "step {step}: waiting while seats are free {seats:?}"
                    ));
                }
            } else if seats.waitlisted > 0 {
                return Err(format!("step {step}: waiting with unlimited capacity"));
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn fixed_capacity_invariants(
            capacity in prop::option::of(1u32..6),
            ops in prop::collection::vec(op(10, false), 0..120),
        ) {
            prop_assert_eq!(simulate(10, capacity, &ops), Ok(()));
        }

        #[test]
        fn changing_capacity_invariants(
            capacity in prop::option::of(1u32..6),
            ops in prop::collection::vec(op(10, true), 0..160),
        ) {
            prop_assert_eq!(simulate(10, capacity, &ops), Ok(()));
        }

        #[test]
        fn decide_is_consistent_on_any_counters(
            capacity in prop::option::of(0u32..10),
            going in 0u32..12,
            waitlisted in 0u32..12,
            current in prop::option::of(prop::sample::select(S::ALL)),
            requested in requested(),
        ) {
            // Counters always include the requester's own current status.
            prop_assume!(current != Some(S::Going) || going > 0);
            prop_assume!(current != Some(S::Waitlisted) || waitlisted > 0);
            let before = Seats { capacity, going, waitlisted };
            let d = decide(current, requested, &before);
            let after = d.seats_after;
            prop_assert_eq!(after.capacity, capacity);
            // Conservation: every user is counted once, before and after.
            let users_before = going + waitlisted;
            let mover_before = u32::from(matches!(current, Some(S::Going | S::Waitlisted)));
            let mover_after = u32::from(matches!(d.new_status, Some(S::Going | S::Waitlisted)));
            prop_assert_eq!(
                after.going + after.waitlisted + mover_before,
                users_before + mover_after
            );
            prop_assert!(d.promotions <= waitlisted);
            if requested == Some(R::Going) && d.changed {
                prop_assert!(matches!(d.new_status, Some(S::Going | S::Waitlisted)));
            }
            if requested.is_none() {
                prop_assert_eq!(d.new_status, None);
            }
        }
    }
}
