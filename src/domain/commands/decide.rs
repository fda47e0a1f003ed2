//! The decide step itself: every command kind, and promotion.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::domain::published::{self, Published, RsvpChange};
use crate::domain::{DomainError, EventId, RequestedRsvp, RsvpChangeReason, RsvpStatus, UserId};

use super::state::Working;
use super::{
    Command, CommandKind, Decision, Emitted, Locked, Mark, Outcome, Refusal, Reviewed, RsvpRow,
    Verdict,
};

/// Decides `commands` in order on `locked`: what each one does, the rows
/// to write and the domain events to publish.
///
/// Seats follow [`crate::domain::rsvp`]: seats freed (someone leaves
/// `going` or brings fewer guests, capacity is raised or removed) go at
/// once to the waitlist in strict FIFO order, the head party first and
/// only when all of it fits: first those waitlisted before these commands,
/// by their place, then those who joined during them, in the order they
/// joined. A user who joined and then changed their answer again is not
/// waiting any more. A command that changes nothing writes and publishes
/// nothing.
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

/// Where a party asking for `going` goes, given its current row (`None`:
/// leave it as it is).
fn going_row(
    working: &Working,
    current: Option<RsvpRow>,
    guests: u32,
) -> Result<Option<RsvpRow>, DomainError> {
    let rules = &working.state.event.rules;
    let seats = working
        .state
        .counts
        .seats(working.state.event.seat_capacity());
    let keep_place = |row: RsvpRow| (row.guests != guests).then_some(RsvpRow { guests, ..row });
    Ok(match current {
        Some(row) if row.status == RsvpStatus::Going => {
            if guests > row.guests {
                // More seats for a seated party: only from seats nobody
                // waits for; else it keeps what it has.
                let extra = guests - row.guests;
                if seats.waiting > 0 || !seats.fits(extra) {
                    return Err(DomainError::NotEnoughSeats);
                }
            }
            keep_place(row)
        }
        Some(row) if matches!(row.status, RsvpStatus::Waitlisted | RsvpStatus::Pending) => {
            keep_place(row)
        }
        // A declined request stays declined until a manager says otherwise.
        Some(row) if row.status == RsvpStatus::Declined => None,
        _ if rules.approval => Some(RsvpRow::party(RsvpStatus::Pending, guests)),
        _ => Some(RsvpRow::party(
            seats.place(guests.saturating_add(1)),
            guests,
        )),
    })
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
                    working.state.event = patched.event;
                    working.row_changed = true;
                    out.emit(published::updated(
                        &working.state.event,
                        &patched.changed,
                        actor,
                    ));
                    // A raised or removed capacity seats the waitlist.
                    settle(working, at, &mut out);
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
                user,
                requested,
                guests,
                window,
                ..
            } => {
                let event = &working.state.event;
                if event.is_cancelled() {
                    return Err(Refusal::Domain(DomainError::EventCancelled));
                }
                if *window && !event.rules.is_open(at, event.ends_at) {
                    return Err(Refusal::Domain(DomainError::RsvpClosed));
                }
                let guests = if *requested == Some(RequestedRsvp::Going) {
                    *guests
                } else {
                    0
                };
                let max = event.rules.max_guests.get();
                if guests > max {
                    return Err(Refusal::Domain(DomainError::field(
                        "guests",
                        format!("must be at most {max} (the event's maxGuests)"),
                    )));
                }
                let user = *user;
                let current = working.rsvp(user);
                let target = match requested {
                    None => current.map(|_| None),
                    Some(RequestedRsvp::Going) => going_row(working, current, guests)
                        .map_err(Refusal::Domain)?
                        .map(Some),
                    Some(other) => {
                        let row = RsvpRow::new(RsvpStatus::from(*other));
                        (current.map(|c| c.status) != Some(row.status)).then_some(Some(row))
                    }
                };
                let changed = target.is_some();
                if let Some(row) = target {
                    working.set_rsvp(user, row);
                    let reason = if requested.is_none() {
                        RsvpChangeReason::Cleared
                    } else {
                        RsvpChangeReason::User
                    };
                    out.emit(published::rsvp_changed(
                        &working.state.event,
                        &RsvpChange {
                            user,
                            status: row.map(|r| r.status),
                            previous: current.map(|r| r.status),
                            guests: row.map_or(0, |r| r.guests),
                            reason,
                            actor: user,
                            at,
                        },
                    ));
                    settle(working, at, &mut out);
                }
                let now = working.rsvp(user);
                Ok(Outcome::Rsvp {
                    event: working.state.event.clone(),
                    counts: working.state.counts,
                    status: now.map(|r| r.status),
                    guests: now.map_or(0, |r| r.guests),
                    changed,
                })
            }
            CommandKind::Review { users, approve, .. } => {
                if working.state.event.is_cancelled() {
                    return Err(Refusal::Domain(DomainError::EventCancelled));
                }
                let mut results = Vec::with_capacity(users.len());
                for &user in users {
                    let current = working.rsvp(user);
                    let target = match current {
                        Some(row)
                            if *approve
                                && matches!(
                                    row.status,
                                    RsvpStatus::Pending | RsvpStatus::Declined
                                ) =>
                        {
                            let seats = working
                                .state
                                .counts
                                .seats(working.state.event.seat_capacity());
                            let status = seats.place(row.seats());
                            Some(RsvpRow::party(status, row.guests))
                        }
                        Some(row) if !*approve && row.status.is_party() => {
                            Some(RsvpRow::new(RsvpStatus::Declined))
                        }
                        _ => None,
                    };
                    if let Some(row) = target {
                        working.set_rsvp(user, Some(row));
                        let reason = if *approve {
                            RsvpChangeReason::Approved
                        } else {
                            RsvpChangeReason::Declined
                        };
                        out.emit(published::rsvp_changed(
                            &working.state.event,
                            &RsvpChange {
                                user,
                                status: Some(row.status),
                                previous: current.map(|r| r.status),
                                guests: row.guests,
                                reason,
                                actor,
                                at,
                            },
                        ));
                        settle(working, at, &mut out);
                    }
                    results.push(Reviewed {
                        user,
                        status: working.rsvp(user).map(|r| r.status),
                        changed: target.is_some(),
                    });
                }
                Ok(Outcome::Reviewed {
                    event: working.state.event.clone(),
                    counts: working.state.counts,
                    results,
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
                    working.set_rsvp(user, None);
                    // A cancelled event seats no one, erase or not.
                    if !working.state.event.is_cancelled() {
                        settle(working, at, &mut out);
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

/// The party at the head of the waitlist now, with its row: those
/// waitlisted before these commands first (by place; passed over for good
/// once promoted or gone), then those who joined during them. `None` when
/// nobody waits, or when the loaded head ran out before the stored queue
/// (never, with [`super::waitlist_demand`] of them loaded: then promotion
/// stops rather than let a later joiner overtake).
fn head(working: &mut Working) -> Option<(UserId, RsvpRow)> {
    while let Some(waiter) = working
        .state
        .waitlist_head
        .get(working.head_cursor)
        .copied()
    {
        let loaded = RsvpRow {
            status: RsvpStatus::Waitlisted,
            seq: Some(waiter.seq),
            guests: waiter.guests,
        };
        // What the commands did is the truth, the loaded head only where
        // they did nothing.
        let row = match working.state.rsvps.get(&waiter.user) {
            None => Some(loaded),
            Some(current) => {
                current.filter(|r| r.status == RsvpStatus::Waitlisted && r.seq == Some(waiter.seq))
            }
        };
        match row {
            Some(row) => return Some((waiter.user, row)),
            None => working.head_cursor += 1,
        }
    }
    if (working.state.waitlist_head.len() as u64) < u64::from(working.stored_waiting) {
        return None;
    }
    let user = *working.joins.front()?;
    working.rsvp(user).map(|row| (user, row))
}

/// Seats waitlisted parties, strict FIFO, while the head fits whole.
fn settle(working: &mut Working, at: DateTime<Utc>, out: &mut Out<'_>) {
    let capacity = working.state.event.seat_capacity();
    while let Some((user, row)) = head(working) {
        if !working.state.counts.seats(capacity).fits(row.seats()) {
            return;
        }
        // Counted as waitlisted already: the counters move it to `going`.
        working.state.rsvps.entry(user).or_insert(Some(row));
        working.set_rsvp(user, Some(RsvpRow::party(RsvpStatus::Going, row.guests)));
        out.emit(published::rsvp_changed(
            &working.state.event,
            &RsvpChange {
                user,
                status: Some(RsvpStatus::Going),
                previous: Some(RsvpStatus::Waitlisted),
                guests: row.guests,
                reason: RsvpChangeReason::Promoted,
                actor: user,
                at,
            },
        ));
    }
}
