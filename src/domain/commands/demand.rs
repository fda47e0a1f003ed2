//! How much of the waitlist a writer must load before deciding.

use crate::domain::{RequestedRsvp, Tri};

use super::{Command, CommandKind, EventState};

/// How many of the earliest users waitlisted on `state`'s event (before
/// `commands`) deciding `commands` can look at; [`super::decide`] never
/// needs more of [`EventState::waitlist_head`] than this. Zero when no one
/// is waitlisted.
///
/// The bound: every party promoted takes at least one seat, and at the
/// last promotion the seats taken are at most the largest capacity the
/// event has during the commands; so there are at most that capacity minus
/// the seats taken before them, plus the seats the commands free,
/// promotions. A command frees at most the party it names: a `going`
/// request the stored guests it drops, and it counts the guests it asks
/// for, which a later command may give back; any other answer, a decline
/// or an erase the whole stored party (1 + its guests): the user was
/// counted as one seat by whichever command seated them. Besides the
/// parties it promotes, a decision passes over waitlisted users who left
/// the waitlist by their own command or a manager's: one per such command,
/// which the `1 +` covers. An
/// unlimited capacity, and the waitlisted counter itself, cap it.
pub fn waitlist_demand(state: &EventState, commands: &[Command]) -> u32 {
    let waitlisted = state.counts.waitlisted;
    if waitlisted == 0 {
        return 0;
    }
    let id = state.event.id;
    let stored_guests = |user| {
        state
            .rsvps
            .get(user)
            .copied()
            .flatten()
            .map_or(0, |r| r.guests)
    };
    let mut largest = state.event.seat_capacity();
    let mut freed: u32 = 0;
    for command in commands.iter().filter(|c| c.kind.event_id() == id) {
        match &command.kind {
            CommandKind::Update { patch, .. } => match patch.capacity {
                Tri::Absent => {}
                Tri::Null => largest = None,
                Tri::Set(capacity) => largest = largest.map(|c| c.max(capacity.get())),
            },
            // Asking for `going` frees at most the stored guests it drops;
            // the guests it asks for are counted here too, for a later
            // command of the batch that gives them back.
            CommandKind::SetRsvp {
                user,
                requested: Some(RequestedRsvp::Going),
                guests,
                ..
            } => {
                freed = freed
                    .saturating_add(stored_guests(user))
                    .saturating_add(*guests);
            }
            CommandKind::SetRsvp { user, .. } => {
                freed = freed.saturating_add(1).saturating_add(stored_guests(user));
            }
            CommandKind::Review { users, .. } => {
                for user in users {
                    freed = freed.saturating_add(1).saturating_add(stored_guests(user));
                }
            }
            CommandKind::EraseUser { user, .. } => {
                freed = freed.saturating_add(1).saturating_add(stored_guests(user));
            }
            CommandKind::Create { .. }
            | CommandKind::Cancel { .. }
            | CommandKind::MarkAttendance { .. } => {}
        }
    }
    let Some(largest) = largest else {
        return waitlisted;
    };
    largest
        .saturating_sub(state.counts.taken())
        .saturating_add(freed)
        .min(waitlisted)
}
