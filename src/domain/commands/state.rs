//! The state a decision starts from, as a writer loads it under its locks,
//! and the working copy [`super::decide`] changes.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Utc};

use crate::domain::{Event, EventId, RsvpCounts, RsvpStatus, UserId};

use super::EventChanges;

/// The locked events a decision may touch. An event missing here is not
/// found, whatever the commands say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Locked {
    pub events: BTreeMap<EventId, EventState>,
}

impl Locked {
    pub fn insert(&mut self, state: EventState) {
        self.events.insert(state.event.id, state);
    }
}

/// One event as stored when its counter row was locked, with the rows its
/// commands can need.
#[derive(Debug, Clone, PartialEq)]
pub struct EventState {
    pub event: Event,
    pub counts: RsvpCounts,
    /// The stored `attended` counter.
    pub attended: u32,
    /// The RSVPs of the users the commands name (`None`: known to have
    /// none). A user missing here has no RSVP.
    pub rsvps: HashMap<UserId, Option<RsvpRow>>,
    /// The earliest users waitlisted before these commands, by `seq`: at
    /// least [`super::waitlist_demand`] of them, or all there are.
    pub waitlist_head: Vec<Waiter>,
    /// The attendance marks of the users the commands name (`None`: not
    /// marked). A user missing here is not marked.
    pub attendance: HashMap<UserId, Option<Mark>>,
}

impl EventState {
    /// An event with only its counters known; the writer adds the rows.
    pub fn new(event: Event, counts: RsvpCounts) -> Self {
        Self {
            event,
            counts,
            attended: 0,
            rsvps: HashMap::new(),
            waitlist_head: Vec::new(),
            attendance: HashMap::new(),
        }
    }
}

/// A stored RSVP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsvpRow {
    pub status: RsvpStatus,
    /// The place in the waitlist (only for `waitlisted`; lower is earlier).
    pub seq: Option<i64>,
    /// The guests the user brings (kept while the status is a party's:
    /// `going`, `waitlisted`, `pending`; 0 otherwise).
    pub guests: u32,
}

impl RsvpRow {
    pub fn new(status: RsvpStatus) -> Self {
        Self::party(status, 0)
    }

    /// A row of `status` with `guests` (dropped unless the status keeps a
    /// party).
    pub fn party(status: RsvpStatus, guests: u32) -> Self {
        Self {
            status,
            seq: None,
            guests: if status.is_party() { guests } else { 0 },
        }
    }

    /// Seats the party uses when `going`.
    pub fn seats(&self) -> u32 {
        self.guests.saturating_add(1)
    }
}

/// A waitlisted user, their place and their guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter {
    pub user: UserId,
    pub seq: i64,
    pub guests: u32,
}

/// Who marked a user as attended, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub by: UserId,
    pub at: DateTime<Utc>,
}

/// An event while commands are decided on it.
pub(super) struct Working {
    pub(super) state: EventState,
    pub(super) is_new: bool,
    pub(super) row_changed: bool,
    pub(super) counters_changed: bool,
    pub(super) attended_delta: i32,
    dirty_rsvps: Vec<UserId>,
    /// Users who joined the waitlist during this decision, in order.
    pub(super) joins: VecDeque<UserId>,
    dirty_attendance: Vec<UserId>,
    /// Waitlisted when loaded: the loaded head is the whole queue when it
    /// is this long.
    pub(super) stored_waiting: u32,
    /// How many of the loaded head were passed over (promoted or gone).
    pub(super) head_cursor: usize,
}

impl Working {
    pub(super) fn loaded(state: EventState) -> Self {
        Self {
            stored_waiting: state.counts.waitlisted,
            head_cursor: 0,
            state,
            is_new: false,
            row_changed: false,
            counters_changed: false,
            attended_delta: 0,
            dirty_rsvps: Vec::new(),
            joins: VecDeque::new(),
            dirty_attendance: Vec::new(),
        }
    }

    pub(super) fn created(event: Event) -> Self {
        Self {
            is_new: true,
            row_changed: true,
            counters_changed: true,
            ..Self::loaded(EventState::new(event, RsvpCounts::default()))
        }
    }

    pub(super) fn rsvp(&self, user: UserId) -> Option<RsvpRow> {
        self.state.rsvps.get(&user).copied().flatten()
    }

    /// Sets a user's RSVP, keeping the counters and the waitlist joins in
    /// step with it.
    pub(super) fn set_rsvp(&mut self, user: UserId, row: Option<RsvpRow>) {
        let previous = self.state.rsvps.insert(user, row).flatten();
        self.state.counts.transition_party(
            previous.map(|r| (r.status, r.guests)),
            row.map(|r| (r.status, r.guests)),
        );
        self.counters_changed = true;
        if !self.dirty_rsvps.contains(&user) {
            self.dirty_rsvps.push(user);
        }
        let was_waiting = previous.is_some_and(|p| p.status == RsvpStatus::Waitlisted);
        let waits = row.is_some_and(|r| r.status == RsvpStatus::Waitlisted);
        // A waiting party that only changes its guests keeps its place.
        if was_waiting && waits {
            return;
        }
        if was_waiting {
            self.joins.retain(|u| *u != user);
        }
        if waits && row.is_some_and(|r| r.seq.is_none()) {
            self.joins.push_back(user);
        }
    }

    pub(super) fn mark(&self, user: UserId) -> Option<Mark> {
        self.state.attendance.get(&user).copied().flatten()
    }

    pub(super) fn set_mark(&mut self, user: UserId, mark: Option<Mark>) {
        let previous = self.state.attendance.insert(user, mark).flatten();
        let delta: i32 = match (previous, mark) {
            (None, Some(_)) => 1,
            // The counter never goes below zero, even if it was wrong.
            (Some(_), None) if self.attended() > 0 => -1,
            _ => 0,
        };
        self.attended_delta += delta;
        self.counters_changed = true;
        if !self.dirty_attendance.contains(&user) {
            self.dirty_attendance.push(user);
        }
    }

    fn attended(&self) -> i64 {
        i64::from(self.state.attended) + i64::from(self.attended_delta)
    }

    pub(super) fn into_changes(self) -> EventChanges {
        let rsvps = self
            .dirty_rsvps
            .iter()
            .map(|u| (*u, self.state.rsvps.get(u).copied().flatten()))
            .collect();
        let attendance = self
            .dirty_attendance
            .iter()
            .map(|u| (*u, self.state.attendance.get(u).copied().flatten()))
            .collect();
        EventChanges {
            event: self.state.event,
            counts: self.state.counts,
            is_new: self.is_new,
            row_changed: self.row_changed,
            counters_changed: self.counters_changed,
            attended_delta: self.attended_delta,
            rsvps,
            waitlist_joins: self.joins.into_iter().collect(),
            attendance,
        }
    }
}
