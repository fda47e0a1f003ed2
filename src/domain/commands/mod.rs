//! What every write decides, in one pure step.
//!
//! A writer (the group commit, the DSAR erase, and whichever comes next)
//! locks the counter rows of the events it touches, loads into [`Locked`]
//! what its commands can need, and hands both to [`decide`]. The answer is
//! everything there is to write: for each event the rows that changed
//! ([`EventChanges`]), the domain events for the outbox in the order they
//! were decided, and one [`Verdict`] per command. The writer then writes
//! exactly that; it chooses no status and counts no seat.
//!
//! Commands are decided in order, each on the state the earlier ones left,
//! so one call decides what running the commands one at a time would.
//! Nothing here does I/O, which is why the rules can be tested, and
//! reused by new writers, without a database.

mod decide;
mod demand;
mod state;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};

use crate::domain::published::Published;
use crate::domain::{
    CancelReason, DomainError, Event, EventId, EventPatch, RequestedRsvp, RsvpCounts, RsvpStatus,
    UserId,
};

pub use decide::decide;
pub use demand::waitlist_demand;
pub use state::{EventState, Locked, Mark, RsvpRow, Waiter};

/// One write to decide.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Who asks: the `updated_by`, `cancelled_by` or `marked_by` of what
    /// the command changes.
    pub actor: UserId,
    /// When the command happens; the changes it makes carry this time.
    pub at: DateTime<Utc>,
    pub kind: CommandKind,
}

/// What a command asks for. Every kind names the one event it is about.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandKind {
    /// `event` is complete (id, timestamps, version).
    Create {
        event: Box<Event>,
    },
    Update {
        event_id: EventId,
        patch: Box<EventPatch>,
    },
    Cancel {
        event_id: EventId,
        reason: Option<CancelReason>,
    },
    /// `requested: None` clears the user's RSVP. `guests` go with
    /// `going` only (0 otherwise). `window`: refused outside the event's
    /// RSVP window (a request); history brought over from another system
    /// is not.
    SetRsvp {
        event_id: EventId,
        user: UserId,
        requested: Option<RequestedRsvp>,
        guests: u32,
        window: bool,
    },
    /// A manager's answer to RSVPs awaiting approval: `approve` places
    /// each `pending` (or `declined`) party like a new `going` (seated, or
    /// at the end of the waitlist); otherwise each `pending`, `going` or
    /// `waitlisted` user becomes `declined`. Users in another state are
    /// left as they are. One command, however many users.
    Review {
        event_id: EventId,
        users: Vec<UserId>,
        approve: bool,
    },
    MarkAttendance {
        event_id: EventId,
        user: UserId,
    },
    /// Removes the user's RSVP and attendance from the event (a DSAR
    /// erase). The seat it frees goes to the waitlist as any other would;
    /// the removal itself publishes nothing, so no event names the user.
    EraseUser {
        event_id: EventId,
        user: UserId,
    },
}

impl CommandKind {
    pub fn event_id(&self) -> EventId {
        match self {
            CommandKind::Create { event } => event.id,
            CommandKind::Update { event_id, .. }
            | CommandKind::Cancel { event_id, .. }
            | CommandKind::SetRsvp { event_id, .. }
            | CommandKind::Review { event_id, .. }
            | CommandKind::MarkAttendance { event_id, .. }
            | CommandKind::EraseUser { event_id, .. } => *event_id,
        }
    }
}

/// What a command did, with the event as it left it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Created {
        event: Event,
        counts: RsvpCounts,
    },
    Updated {
        event: Event,
        counts: RsvpCounts,
        changed: bool,
    },
    Cancelled {
        event: Event,
        counts: RsvpCounts,
        already: bool,
    },
    Rsvp {
        event: Event,
        counts: RsvpCounts,
        /// The user's status afterwards.
        status: Option<RsvpStatus>,
        /// The user's guests afterwards.
        guests: u32,
        changed: bool,
    },
    Reviewed {
        event: Event,
        counts: RsvpCounts,
        /// One per user named, in order.
        results: Vec<Reviewed>,
    },
    Attendance {
        event: Event,
        user: UserId,
        marked_by: UserId,
        marked_at: DateTime<Utc>,
        newly: bool,
    },
    Erased {
        event: Event,
        counts: RsvpCounts,
        /// The status of the RSVP removed, if there was one.
        rsvp: Option<RsvpStatus>,
        /// Whether an attendance mark was removed.
        attendance: bool,
    },
}

/// What a review did to one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reviewed {
    pub user: UserId,
    /// The user's status afterwards (`None`: they have no RSVP).
    pub status: Option<RsvpStatus>,
    pub changed: bool,
}

/// Why a command was refused. A refused command changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The event is not in the locked state: it does not exist (in this
    /// tenant).
    NotFound,
    Domain(DomainError),
}

pub type Verdict = Result<Outcome, Refusal>;

/// Everything [`decide`] decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// One per command, in command order.
    pub outcomes: Vec<Verdict>,
    /// Every event of the locked state and every event created, in id
    /// order, changed or not.
    pub events: Vec<EventChanges>,
    /// Domain events in the order they were decided; the outbox keeps this
    /// order, which is the per-event order consumers rely on.
    pub published: Vec<Emitted>,
}

/// A domain event and the command (its index) that caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    pub command: usize,
    pub event: Published,
}

/// The rows one event needs written.
#[derive(Debug, Clone, PartialEq)]
pub struct EventChanges {
    /// The event after every command.
    pub event: Event,
    pub counts: RsvpCounts,
    /// Created by these commands: insert it (and its zero counters).
    pub is_new: bool,
    /// The event row changed.
    pub row_changed: bool,
    /// The counters changed (RSVP counts or attendance).
    pub counters_changed: bool,
    /// Added to the stored `attended` counter.
    pub attended_delta: i32,
    /// Every RSVP that changed, with its final row (`None`: delete it), in
    /// the order they first changed. A waitlisted row without `seq` joined
    /// the waitlist here; its place is drawn when it is written.
    pub rsvps: Vec<(UserId, Option<RsvpRow>)>,
    /// The users of `rsvps` who joined the waitlist here, in the order they
    /// joined: the order their places must be drawn in.
    pub waitlist_joins: Vec<UserId>,
    /// Every attendance mark that changed (`None`: delete it).
    pub attendance: Vec<(UserId, Option<Mark>)>,
}

impl EventChanges {
    /// Whether anything of the event changed (its revision moves).
    pub fn is_changed(&self) -> bool {
        self.row_changed || self.counters_changed
    }

    /// The RSVPs that changed, as statuses (`None`: removed).
    pub fn rsvp_statuses(&self) -> Vec<(UserId, Option<RsvpStatus>)> {
        self.rsvps
            .iter()
            .map(|(user, row)| (*user, row.map(|r| r.status)))
            .collect()
    }
}
