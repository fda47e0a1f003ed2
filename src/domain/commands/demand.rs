//! How much of the waitlist a writer must load before deciding.

use crate::domain::{RequestedRsvp, Tri};

use super::{Command, CommandKind, EventState};

/// How many of the earliest users waitlisted on `state`'s event (before
/// `commands`) deciding `commands` can look at; [`super::decide`] never
/// needs more of [`EventState::waitlist_head`] than this. Zero when no one
/// is waitlisted or nothing in `commands` can free a seat.
///
/// The bound: at the last promotion, `going` is at most the largest
/// capacity the event has during the commands, so there are at most that
/// capacity minus `going` before them promotions, plus one per command
/// that takes someone out of `going`. Besides the users it promotes, a
/// decision passes over waitlisted users who left the waitlist by their
/// own command; that command did not take anyone out of `going`, so
/// counting every command that could (any answer but `going`, an erase)
/// covers both. An unlimited capacity, and the waitlisted counter itself,
/// cap it.
pub fn waitlist_demand(state: &EventState, commands: &[Command]) -> u32 {
    let waitlisted = state.counts.waitlisted;
    if waitlisted == 0 {
        return 0;
    }
    let id = state.event.id;
    let mut largest = state.event.seat_capacity();
    let mut leaving: u32 = 0;
    for command in commands.iter().filter(|c| c.kind.event_id() == id) {
        match &command.kind {
            CommandKind::Update { patch, .. } => match patch.capacity {
                Tri::Absent => {}
                Tri::Null => largest = None,
                Tri::Set(capacity) => largest = largest.map(|c| c.max(capacity.get())),
            },
            CommandKind::SetRsvp { requested, .. } if *requested != Some(RequestedRsvp::Going) => {
                leaving = leaving.saturating_add(1);
            }
            CommandKind::EraseUser { .. } => leaving = leaving.saturating_add(1),
            _ => {}
        }
    }
    let Some(largest) = largest else {
        return waitlisted;
    };
    largest
        .saturating_sub(state.counts.going)
        .saturating_add(leaving)
        .min(waitlisted)
}
