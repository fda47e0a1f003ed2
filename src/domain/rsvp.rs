//! RSVP statuses, and the seat arithmetic of one event.
//!
//! Only `going` uses seats: a party of one user and their guests uses
//! `1 + guests` of them. A `going` request that finds no room for its whole
//! party, or finds others already waiting, joins the end of the waitlist
//! and the user's effective status is `waitlisted`. Seats freed later
//! (someone leaves `going` or brings fewer guests, capacity is raised or
//! removed) go to the waitlist in strict FIFO order: the head party is
//! seated when all of it fits, and nobody behind it is seated before it.
//! Lowering capacity below the seats taken removes no one: it only makes
//! new requests wait.
//!
//! With approval on, `going` becomes `pending` (no seat) until a manager
//! approves it (then it is placed like a new `going`) or declines it.
//!
//! These functions only count. Which parties are "at the head of the
//! waitlist" is the caller's to resolve (by the time each joined).

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
        /// Asked for `going` where a manager approves RSVPs; no seat yet.
        Pending => "pending",
        /// A manager declined the request.
        Declined => "declined",
    }
}

impl RsvpStatus {
    /// Whether the status keeps a party (the user and their guests) that
    /// holds or waits for seats.
    pub const fn is_party(self) -> bool {
        matches!(
            self,
            RsvpStatus::Going | RsvpStatus::Waitlisted | RsvpStatus::Pending
        )
    }
}

wire_enum! {
    /// What a user may ask for. `waitlisted`, `pending` and `declined` are
    /// outcomes, never requests.
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
        /// Seats freed up and the user's party left the waitlist for `going`.
        Promoted => "promoted",
        /// The user removed their RSVP.
        Cleared => "cleared",
        /// A manager approved a pending request (to `going` or `waitlisted`).
        Approved => "approved",
        /// A manager declined the request.
        Declined => "declined",
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
    /// Seats taken by `going` parties (guests included).
    pub taken: u32,
    /// Parties on the waitlist.
    pub waiting: u32,
}

impl Seats {
    /// Seats not taken; `None` when unlimited. Zero, not negative, when
    /// capacity was lowered below the seats taken.
    pub fn free(&self) -> Option<u32> {
        self.capacity.map(|c| c.saturating_sub(self.taken))
    }

    /// Whether a party of `party` seats fits in the free seats.
    pub fn fits(&self, party: u32) -> bool {
        self.free().is_none_or(|free| free >= party)
    }

    /// Where a party that is not waiting yet goes when it asks for
    /// `going`: seated only when nobody waits and all of it fits, so a
    /// newcomer never overtakes the queue.
    pub fn place(&self, party: u32) -> RsvpStatus {
        if self.waiting == 0 && self.fits(party) {
            RsvpStatus::Going
        } else {
            RsvpStatus::Waitlisted
        }
    }
}

/// How many parties at the head of the waitlist (`queue`: their sizes, in
/// order) the free seats take now: strict FIFO, so counting stops at the
/// first party that does not fit whole.
pub fn promotable(
    capacity: Option<u32>,
    taken: u32,
    queue: impl IntoIterator<Item = u32>,
) -> usize {
    let mut taken = taken;
    let mut n = 0;
    for party in queue {
        let seats = Seats {
            capacity,
            taken,
            waiting: 0,
        };
        if !seats.fits(party) {
            break;
        }
        taken = taken.saturating_add(party);
        n += 1;
    }
    n
}

/// Counts per status, as shown in `rsvpCounts` (all keys always present):
/// people (parties), not seats. `guests` (the guests of `going` parties)
/// is kept beside them for the seats and not shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RsvpCounts {
    pub interested: u32,
    pub going: u32,
    pub not_going: u32,
    pub waitlisted: u32,
    #[serde(default)]
    pub pending: u32,
    #[serde(default)]
    pub declined: u32,
    /// Guests of the `going` parties: seats taken = `going + guests`.
    #[serde(skip)]
    pub guests: u32,
}

impl RsvpCounts {
    pub fn get(&self, status: RsvpStatus) -> u32 {
        match status {
            RsvpStatus::Interested => self.interested,
            RsvpStatus::Going => self.going,
            RsvpStatus::NotGoing => self.not_going,
            RsvpStatus::Waitlisted => self.waitlisted,
            RsvpStatus::Pending => self.pending,
            RsvpStatus::Declined => self.declined,
        }
    }

    fn slot(&mut self, status: RsvpStatus) -> &mut u32 {
        match status {
            RsvpStatus::Interested => &mut self.interested,
            RsvpStatus::Going => &mut self.going,
            RsvpStatus::NotGoing => &mut self.not_going,
            RsvpStatus::Waitlisted => &mut self.waitlisted,
            RsvpStatus::Pending => &mut self.pending,
            RsvpStatus::Declined => &mut self.declined,
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

    /// Moves one party: its status and, while `going`, its guests.
    pub fn transition_party(
        &mut self,
        from: Option<(RsvpStatus, u32)>,
        to: Option<(RsvpStatus, u32)>,
    ) {
        self.transition(from.map(|f| f.0), to.map(|t| t.0));
        if let Some((RsvpStatus::Going, guests)) = from {
            self.guests = self.guests.saturating_sub(guests);
        }
        if let Some((RsvpStatus::Going, guests)) = to {
            self.guests = self.guests.saturating_add(guests);
        }
    }

    /// Seats taken by `going` parties.
    pub fn taken(&self) -> u32 {
        self.going.saturating_add(self.guests)
    }

    pub fn seats(&self, capacity: Option<u32>) -> Seats {
        Seats {
            capacity,
            taken: self.taken(),
            waiting: self.waitlisted,
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
    use RsvpStatus as S;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn seats(capacity: Option<u32>, taken: u32, waiting: u32) -> Seats {
        Seats {
            capacity,
            taken,
            waiting,
        }
    }

    #[test]
    fn wire_values() {
        let all: Vec<&str> = S::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            all,
            [
                "interested",
                "going",
                "not_going",
                "waitlisted",
                "pending",
                "declined"
            ]
        );
        assert!("waitlisted".parse::<RequestedRsvp>().is_err());
        assert!("pending".parse::<RequestedRsvp>().is_err());
        assert_eq!(
            "waitlisted"
                .parse::<RequestedRsvp>()
                .map_err(|e| e.into_message()),
            Err("status must be one of: interested, going, not_going".to_owned())
        );
        assert_eq!(
            "not_going".parse::<RequestedRsvp>(),
            Ok(RequestedRsvp::NotGoing)
        );
        assert!("Going".parse::<RsvpStatus>().is_err());
        assert_eq!(RsvpChangeReason::Promoted.as_str(), "promoted");
        assert_eq!(RsvpChangeReason::Approved.as_str(), "approved");
        assert_eq!(RsvpChangeReason::Declined.as_str(), "declined");
        // `guests` is internal: seats are shown apart.
        assert_eq!(
            serde_json::to_value(RsvpCounts {
                guests: 4,
                ..RsvpCounts::default()
            })
            .ok(),
            Some(
                serde_json::json!({"interested":0,"going":0,"not_going":0,"waitlisted":0,
                                    "pending":0,"declined":0})
            )
        );
    }

    #[test]
    fn a_party_is_seated_only_whole_and_only_when_nobody_waits() {
        assert_eq!(seats(Some(5), 2, 0).place(3), S::Going);
        assert_eq!(seats(Some(5), 2, 0).place(4), S::Waitlisted);
        assert_eq!(seats(Some(5), 0, 1).place(1), S::Waitlisted);
        assert_eq!(seats(None, 1_000_000, 0).place(51), S::Going);
        // Capacity lowered below the seats taken.
        assert_eq!(seats(Some(3), 5, 0).free(), Some(0));
        assert_eq!(seats(Some(3), 5, 0).place(1), S::Waitlisted);
    }

    #[test]
    fn promotion_is_strict_fifo() {
        // The head (3) does not fit in 2 free seats: the 1 behind it waits.
        assert_eq!(promotable(Some(10), 8, [3, 1]), 0);
        assert_eq!(promotable(Some(10), 7, [3, 1]), 1);
        assert_eq!(promotable(Some(10), 6, [3, 1, 1]), 2);
        assert_eq!(promotable(None, 6, [3, 1, 50]), 3);
        assert_eq!(promotable(Some(10), 12, [1]), 0);
        assert_eq!(promotable(Some(10), 0, std::iter::empty()), 0);
    }

    #[test]
    fn counts_transitions() {
        let mut c: RsvpCounts = [S::Going, S::Going, S::Interested].into_iter().collect();
        assert_eq!((c.going, c.interested), (2, 1));
        c.transition_party(Some((S::Interested, 0)), Some((S::Going, 3)));
        assert_eq!((c.going, c.guests, c.taken()), (3, 3, 6));
        c.transition_party(Some((S::Going, 3)), Some((S::Going, 1)));
        assert_eq!((c.going, c.guests), (3, 1));
        c.transition_party(Some((S::Going, 1)), Some((S::Pending, 1)));
        assert_eq!((c.going, c.guests, c.pending), (2, 0, 1));
        c.transition_party(Some((S::Pending, 1)), Some((S::Declined, 0)));
        assert_eq!((c.pending, c.declined), (0, 1));
        c.transition(None, Some(S::NotGoing));
        assert_eq!(c.seats(Some(4)), seats(Some(4), 2, 0));
        assert_eq!(c.get(S::Declined), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Going(usize, u32),
        Leave(usize),
        Capacity(Option<u32>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0usize..10, 0u32..4).prop_map(|(u, g)| Op::Going(u, g)),
            3 => (0usize..10).prop_map(Op::Leave),
            1 => prop::option::of(1u32..12).prop_map(Op::Capacity),
        ]
    }

    /// Parties joining, leaving and capacity moving, decided with `place`
    /// and `promotable` the way the decide step uses them.
    fn simulate(capacity: Option<u32>, ops: &[Op]) -> Result<(), String> {
        let mut party: Vec<Option<(RsvpStatus, u32)>> = vec![None; 10];
        let mut queue: VecDeque<usize> = VecDeque::new();
        let mut capacity = capacity;
        let mut lowered = false;
        let taken = |party: &[Option<(RsvpStatus, u32)>]| -> u32 {
            party
                .iter()
                .flatten()
                .filter(|p| p.0 == S::Going)
                .map(|p| 1 + p.1)
                .sum()
        };
        for (step, op) in ops.iter().enumerate() {
            let before = taken(&party);
            match *op {
                Op::Going(u, g) => {
                    if party[u].is_none() {
                        let s = seats(capacity, before, queue.len() as u32).place(1 + g);
                        if s == S::Going && !queue.is_empty() {
                            return Err(format!("step {step}: jumped the queue"));
                        }
                        if s == S::Waitlisted {
                            queue.push_back(u);
                        }
                        party[u] = Some((s, g));
                    }
                }
                Op::Leave(u) => {
                    party[u] = None;
                    queue.retain(|w| *w != u);
                }
                Op::Capacity(c) => {
                    lowered |= c.is_some_and(|c| c < before);
                    capacity = c;
                }
            }
            let sizes: Vec<u32> = queue
                .iter()
                .map(|u| party[*u].map_or(1, |p| 1 + p.1))
                .collect();
            let n = promotable(capacity, taken(&party), sizes.iter().copied());
            for _ in 0..n {
                if let Some(u) = queue.pop_front()
                    && let Some(p) = party[u].as_mut()
                {
                    p.0 = S::Going;
                }
            }
            let now = taken(&party);
            if let Some(cap) = capacity {
                if !lowered && now > cap {
                    return Err(format!("step {step}: {now} seats taken of {cap}"));
                }
                if now > before && now > cap {
                    return Err(format!("step {step}: seated a party over capacity"));
                }
            }
            if let Some(head) = queue.front() {
                let size = party[*head].map_or(1, |p| 1 + p.1);
                if seats(capacity, now, 0).fits(size) {
                    return Err(format!("step {step}: the head waits though it fits"));
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parties_keep_the_invariants(
            capacity in prop::option::of(1u32..10),
            ops in prop::collection::vec(op(), 0..150),
        ) {
            prop_assert_eq!(simulate(capacity, &ops), Ok(()));
        }
    }
}
