//! The decide step itself: every command kind, and promotion.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::domain::published::{self, Published};
use crate::domain::{
    DomainError, EventId, RsvpChangeReason, RsvpStatus, UserId, decide as decide_rsvp,
    promotions_after_capacity_change,
};

use super::state::Working;
use super::{
    Command, CommandKind, Decision, Emitted, Locked, Mark, Outcome, Refusal, RsvpRow, Verdict,
};

/// Decides `commands` in order on `locked`: what each one does, the rows
/// to write and the domain events to publish.
///
/// Seats follow [`crate::domain::rsvp`]: a seat freed (someone leaves
/// `going`, capacity is raised or removed) goes at once to the earliest
/// waitlisted user: first those waitlisted before these commands, by their
/// place, then those who joined during them, in the order they joined. A
/// user who joined and then changed their answer again is not waiting any
/// more. A command that changes nothing writes and publishes nothing.
pub fn decide(locked: Locked, commands: &[Command]) -> Decision {
    let mut batch = Batch {
        events: locked
            .events
            .into_iter()
            .map(|(id, state)| (id, Working::loaded(state)))
            .collect(),
        published: Vec::new(),
    };
    let outcomes = commands
        .iter()
        .enumerate()
        .map(|(index, command)| batch.apply(index, command))
        .collect();
    Decision {
        outcomes,
        events: batch
            .events
            .into_values()
            .map(Working::into_changes)
            .collect(),
        published: batch.published,
    }
}

struct Batch {
    events: BTreeMap<EventId, Working>,
    published: Vec<Emitted>,
}

/// What a command publishes goes through here, tagged with the command.
struct Out<'a> {
    published: &'a mut Vec<Emitted>,
    command: usize,
}

impl Out<'_> {
    fn emit(&mut self, event: Published) {
        self.published.push(Emitted {
            command: self.command,
            event,
        });
    }
}

impl Batch {
    fn apply(&mut self, index: usize, command: &Command) -> Verdict {
        let mut out = Out {
            published: &mut self.published,
            command: index,
        };
        if let CommandKind::Create { event } = &command.kind {
            let event = (**event).clone();
            out.emit(published::created(&event));
            let working = Working::created(event.clone());
            let counts = working.state.counts;
            self.events.insert(event.id, working);
            return Ok(Outcome::Created { event, counts });
        }
        let Some(working) = self.events.get_mut(&command.kind.event_id()) else {
            return Err(Refusal::NotFound);
        };
        let (actor, at) = (command.actor, command.at);
        match &command.kind {
            // Decided above, before looking the event up.
            CommandKind::Create { .. } => Err(Refusal::NotFound),
            CommandKind::Update { patch, .. } => {
                let patched = working
                    .state
                    .event
                    .apply_patch(patch, at, actor)
                    .map_err(Refusal::Domain)?;
                let changed = patched.is_changed();
                if changed {
                    let before = working.state.event.seat_capacity();
                    working.state.event = patched.event;
                    working.row_changed = true;
                    out.emit(published::updated(
                        &working.state.event,
                        &patched.changed,
                        actor,
                    ));
                    let after = working.state.event.seat_capacity();
                    if after != before {
                        let seats = working.state.counts.seats(before);
                        promote(
                            working,
                            promotions_after_capacity_change(&seats, after),
                            at,
                            &mut out,
                        );
                    }
                }
                Ok(Outcome::Updated {
                    event: working.state.event.clone(),
                    counts: working.state.counts,
                    changed,
                })
            }
            CommandKind::Cancel { reason, .. } => {
                let cancelled = working.state.event.cancel(reason.clone(), actor, at);
                if !cancelled.already_cancelled {
                    working.state.event = cancelled.event;
                    working.row_changed = true;
                    out.emit(published::cancelled(&working.state.event));
                }
                Ok(Outcome::Cancelled {
                    event: working.state.event.clone(),
                    counts: working.state.counts,
                    already: cancelled.already_cancelled,
                })
            }
            CommandKind::SetRsvp {
                user, requested, ..
            } => {
                if working.state.event.is_cancelled() {
                    return Err(Refusal::Domain(DomainError::EventCancelled));
                }
                let user = *user;
                let current = working.rsvp(user).map(|r| r.status);
                let seats = working
                    .state
                    .counts
                    .seats(working.state.event.seat_capacity());
                let decision = decide_rsvp(current, *requested, &seats);
                if decision.changed {
                    working.set_rsvp(user, decision.new_status.map(RsvpRow::new));
                    let reason = if requested.is_none() {
                        RsvpChangeReason::Cleared
                    } else {
                        RsvpChangeReason::User
                    };
                    out.emit(published::rsvp_changed(
                        &working.state.event,
                        user,
                        decision.new_status,
                        current,
                        reason,
                        at,
                    ));
                    promote(working, decision.promotions, at, &mut out);
                }
                Ok(Outcome::Rsvp {
                    event: working.state.event.clone(),
                    counts: working.state.counts,
                    status: decision.new_status,
                    changed: decision.changed,
                })
            }
            CommandKind::MarkAttendance { user, .. } => {
                if working.state.event.is_cancelled() {
                    return Err(Refusal::Domain(DomainError::EventCancelled));
                }
                let user = *user;
                let (mark, newly) = match working.mark(user) {
                    Some(mark) => (mark, false),
                    None => {
                        let mark = Mark { by: actor, at };
                        working.set_mark(user, Some(mark));
                        out.emit(published::attendance_marked(
                            &working.state.event,
                            user,
                            actor,
                            at,
                        ));
                        (mark, true)
                    }
                };
                Ok(Outcome::Attendance {
                    event: working.state.event.clone(),
                    user,
                    marked_by: mark.by,
                    marked_at: mark.at,
                    newly,
                })
            }
            CommandKind::EraseUser { user, .. } => {
                let user = *user;
                let removed = working.rsvp(user).map(|r| r.status);
                if removed.is_some() {
                    let seats = working
                        .state
                        .counts
                        .seats(working.state.event.seat_capacity());
                    let freed = decide_rsvp(removed, None, &seats).promotions;
                    working.set_rsvp(user, None);
                    // A cancelled event seats no one, erase or not.
                    if !working.state.event.is_cancelled() {
                        promote(working, freed, at, &mut out);
                    }
                }
                let marked = working.mark(user).is_some();
                if marked {
                    working.set_mark(user, None);
                }
                Ok(Outcome::Erased {
                    event: working.state.event.clone(),
                    counts: working.state.counts,
                    rsvp: removed,
                    attendance: marked,
                })
            }
        }
    }
}

/// Moves the `count` earliest waitlisted users of the event to `going`.
fn promote(working: &mut Working, count: u32, at: DateTime<Utc>, out: &mut Out<'_>) {
    let count = count as usize;
    if count == 0 {
        return;
    }
    // Users waitlisted before these commands come first (their places are
    // older than any drawn now), unless a command moved them already: what
    // the commands did is the truth, the loaded head only where they did
    // nothing.
    let mut chosen: Vec<(UserId, RsvpRow)> = Vec::with_capacity(count);
    for waiter in &working.state.waitlist_head {
        if chosen.len() >= count {
            break;
        }
        let row = RsvpRow {
            status: RsvpStatus::Waitlisted,
            seq: Some(waiter.seq),
        };
        let still_waiting = match working.state.rsvps.get(&waiter.user) {
            None => true,
            Some(current) => *current == Some(row),
        };
        if still_waiting {
            chosen.push((waiter.user, row));
        }
    }
    for user in &working.joins {
        if chosen.len() >= count {
            break;
        }
        chosen.push((*user, RsvpRow::new(RsvpStatus::Waitlisted)));
    }
    for (user, row) in chosen {
        // Counted as waitlisted already: the counters move it to `going`.
        working.state.rsvps.entry(user).or_insert(Some(row));
        working.set_rsvp(user, Some(RsvpRow::new(RsvpStatus::Going)));
        out.emit(published::rsvp_changed(
            &working.state.event,
            user,
            Some(RsvpStatus::Going),
            Some(RsvpStatus::Waitlisted),
            RsvpChangeReason::Promoted,
            at,
        ));
    }
}
