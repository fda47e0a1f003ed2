//! Table tests of the decide step, one behaviour each.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::domain::published::{ATTENDANCE_MARKED, EVENT_CANCELLED, EVENT_UPDATED, RSVP_CHANGED};
use crate::domain::{
    Capacity, ErrorCode, EventId, EventPatch, NewEvent, NewEventFields, RequestedRsvp as R,
    RsvpStatus as S, Scope, ScopeId, ScopeType, TenantId, Title, Tri, Visibility,
};

pub(super) fn user(n: u32) -> UserId {
    UserId::from(Uuid::from_u128(0x1000 + u128::from(n)))
}

pub(super) fn organiser() -> UserId {
    user(9_999)
}

pub(super) fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + Duration::days(20_000) + Duration::minutes(minutes)
}

pub(super) fn event(capacity: Option<u32>) -> Event {
    let tenant = TenantId::from(Uuid::from_u128(7));
    let time = |s: &str| crate::domain::parse_datetime_str(s).unwrap_or_else(|e| panic!("{e}"));
    let fields = NewEventFields {
        scope: Scope::new(
            tenant,
            ScopeType::Community,
            ScopeId::parse("guild-1").unwrap_or_else(|e| panic!("{e:?}")),
        )
        .unwrap_or_else(|e| panic!("{e:?}")),
        title: Title::parse("Raid night").unwrap_or_else(|e| panic!("{e:?}")),
        description: Default::default(),
        starts_at: time("2026-01-10T10:00:00Z"),
        ends_at: time("2026-01-10T12:00:00Z"),
        location_text: Default::default(),
        location_url: None,
        game_id: None,
        visibility: Visibility::Public,
        capacity: capacity.map(|n| Capacity::new(i64::from(n)).unwrap_or_else(|e| panic!("{e:?}"))),
        time_zone: Default::default(),
        rules: Default::default(),
        reminders_sent: false,
    };
    NewEvent::new(tenant, fields)
        .unwrap_or_else(|e| panic!("{e:?}"))
        .into_event(EventId::from(Uuid::from_u128(42)), organiser(), at(-1_000))
}

pub(super) fn capacity(n: u32) -> Capacity {
    Capacity::new(i64::from(n)).unwrap_or_else(|e| panic!("{n}: {e:?}"))
}

pub(super) fn capacity_patch(to: Option<u32>) -> CommandKind {
    CommandKind::Update {
        event_id: event(None).id,
        patch: Box::new(EventPatch {
            capacity: to.map_or(Tri::Null, |n| Tri::Set(capacity(n))),
            ..EventPatch::default()
        }),
    }
}

pub(super) fn rsvp(u: u32, requested: Option<R>) -> Command {
    Command {
        actor: user(u),
        at: at(i64::from(u)),
        kind: CommandKind::SetRsvp {
            event_id: event(None).id,
            user: user(u),
            requested,
            guests: 0,
            window: true,
        },
    }
}

pub(super) fn by_organiser(kind: CommandKind) -> Command {
    Command {
        actor: organiser(),
        at: at(0),
        kind,
    }
}

/// The event with `going` users going and `waiting` users waitlisted
/// (places 10, 20, …), every one of them loaded as the head and as RSVPs.
fn with_rsvps(capacity: Option<u32>, going: &[u32], waiting: &[u32]) -> EventState {
    let mut state = EventState::new(event(capacity), RsvpCounts::default());
    for &u in going {
        state.rsvps.insert(user(u), Some(RsvpRow::new(S::Going)));
        state.counts.add(S::Going);
    }
    for (place, &u) in (1i64..).zip(waiting) {
        let seq = place * 10;
        state.rsvps.insert(
            user(u),
            Some(RsvpRow {
                status: S::Waitlisted,
                seq: Some(seq),
                guests: 0,
            }),
        );
        state.counts.add(S::Waitlisted);
        state.waitlist_head.push(Waiter {
            user: user(u),
            seq,
            guests: 0,
        });
    }
    state
}

fn locked(state: EventState) -> Locked {
    let mut locked = Locked::default();
    locked.insert(state);
    locked
}

fn only(decision: &Decision) -> &EventChanges {
    assert_eq!(decision.events.len(), 1, "{decision:#?}");
    &decision.events[0]
}

fn row(decision: &Decision, u: u32) -> Option<Option<RsvpRow>> {
    only(decision)
        .rsvps
        .iter()
        .find(|(id, _)| *id == user(u))
        .map(|(_, row)| *row)
}

/// `(user, status, previous, reason)` of every `event.rsvp.changed`.
fn rsvp_events(decision: &Decision) -> Vec<(String, String, String, String)> {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("null").to_owned();
    decision
        .published
        .iter()
        .filter(|e| e.event.event_type == RSVP_CHANGED)
        .map(|e| {
            let d = &e.event.data;
            (
                s(&d["user_id"]),
                s(&d["status"]),
                s(&d["previous_status"]),
                s(&d["reason"]),
            )
        })
        .collect()
}

fn promoted(u: u32) -> (String, String, String, String) {
    (
        user(u).to_string(),
        "going".into(),
        "waitlisted".into(),
        "promoted".into(),
    )
}

#[test]
fn create_inserts_the_event_with_zero_counters() {
    let new = event(Some(3));
    let d = decide(
        Locked::default(),
        &[by_organiser(CommandKind::Create {
            event: Box::new(new.clone()),
        })],
    );
    assert_eq!(
        d.outcomes,
        vec![Ok(Outcome::Created {
            event: new.clone(),
            counts: RsvpCounts::default()
        })]
    );
    let e = only(&d);
    assert!(e.is_new && e.row_changed && e.counters_changed);
    assert_eq!(e.event, new);
    assert_eq!(d.published.len(), 1);
    assert_eq!(
        d.published[0].event,
        crate::domain::published::created(&new)
    );
}

#[test]
fn commands_on_an_unknown_event_are_not_found() {
    let d = decide(
        Locked::default(),
        &[
            rsvp(1, Some(R::Going)),
            by_organiser(capacity_patch(Some(2))),
        ],
    );
    assert_eq!(
        d.outcomes,
        vec![Err(Refusal::NotFound), Err(Refusal::NotFound)]
    );
    assert!(d.events.is_empty() && d.published.is_empty());
}

#[test]
fn an_update_that_changes_nothing_writes_nothing() {
    let state = with_rsvps(Some(2), &[1, 2], &[3]);
    let same_title = CommandKind::Update {
        event_id: state.event.id,
        patch: Box::new(EventPatch {
            title: Tri::Set(state.event.title.clone()),
            capacity: Tri::Set(capacity(2)),
            ..EventPatch::default()
        }),
    };
    let before = state.event.clone();
    let d = decide(locked(state), &[by_organiser(same_title)]);
    match &d.outcomes[..] {
        [Ok(Outcome::Updated { event, changed, .. })] => {
            assert!(!changed);
            assert_eq!(*event, before);
        }
        other => panic!("{other:?}"),
    }
    let e = only(&d);
    assert!(!e.is_changed());
    assert!(e.rsvps.is_empty());
    assert!(d.published.is_empty());
}

#[test]
fn an_update_writes_the_row_and_publishes_the_changed_fields() {
    let state = with_rsvps(Some(2), &[], &[]);
    let d = decide(locked(state), &[by_organiser(capacity_patch(Some(5)))]);
    let e = only(&d);
    assert!(e.row_changed && !e.counters_changed);
    assert_eq!(e.event.seat_capacity(), Some(5));
    assert_eq!(e.event.version, 2);
    assert_eq!(d.published.len(), 1);
    assert_eq!(d.published[0].event.event_type, EVENT_UPDATED);
    assert_eq!(
        d.published[0].event.data["updated_fields"],
        json!(["capacity"])
    );
    assert_eq!(
        d.published[0].event.data["updated_by"],
        organiser().to_string()
    );
}

#[test]
fn an_invalid_patch_is_refused_and_writes_nothing() {
    let state = with_rsvps(None, &[], &[]);
    let ends_before_start = CommandKind::Update {
        event_id: state.event.id,
        patch: Box::new(EventPatch {
            ends_at: Tri::Set(state.event.starts_at - Duration::hours(1)),
            ..EventPatch::default()
        }),
    };
    let d = decide(locked(state), &[by_organiser(ends_before_start)]);
    assert_eq!(
        d.outcomes,
        vec![Err(Refusal::Domain(DomainError::InvalidTimeRange))]
    );
    assert!(!only(&d).is_changed() && d.published.is_empty());
}

#[test]
fn cancel_once_then_already_cancelled() {
    let state = with_rsvps(Some(1), &[1], &[2]);
    let cancel = || {
        by_organiser(CommandKind::Cancel {
            event_id: event(None).id,
            reason: None,
        })
    };
    let d = decide(locked(state), &[cancel(), cancel()]);
    assert!(matches!(
        &d.outcomes[..],
        [
            Ok(Outcome::Cancelled { already: false, .. }),
            Ok(Outcome::Cancelled { already: true, .. })
        ]
    ));
    let e = only(&d);
    assert!(e.row_changed && e.event.is_cancelled());
    assert_eq!(e.event.cancelled_by, Some(organiser()));
    // A cancel frees no seat and keeps every RSVP as it was.
    assert!(e.rsvps.is_empty());
    assert_eq!(d.published.len(), 1);
    assert_eq!(d.published[0].event.event_type, EVENT_CANCELLED);
}

#[test]
fn rsvp_and_attendance_on_a_cancelled_event_are_refused() {
    let state = with_rsvps(Some(1), &[1], &[]);
    let id = state.event.id;
    let d = decide(
        locked(state),
        &[
            by_organiser(CommandKind::Cancel {
                event_id: id,
                reason: None,
            }),
            rsvp(1, None),
            rsvp(2, Some(R::Going)),
            by_organiser(CommandKind::MarkAttendance {
                event_id: id,
                user: user(1),
            }),
        ],
    );
    for outcome in &d.outcomes[1..] {
        match outcome {
            Err(Refusal::Domain(e)) => assert_eq!(e.code(), ErrorCode::EventCancelled),
            other => panic!("expected EVENT_CANCELLED, got {other:?}"),
        }
    }
    let e = only(&d);
    assert!(e.rsvps.is_empty() && e.attendance.is_empty());
    assert_eq!(e.counts.going, 1);
    assert_eq!(d.published.len(), 1, "only the cancellation");
}

#[test]
fn going_takes_a_free_seat_then_the_waitlist() {
    let state = with_rsvps(Some(1), &[], &[]);
    let d = decide(
        locked(state),
        &[rsvp(1, Some(R::Going)), rsvp(2, Some(R::Going))],
    );
    assert!(matches!(
        &d.outcomes[..],
        [
            Ok(Outcome::Rsvp {
                status: Some(S::Going),
                changed: true,
                ..
            }),
            Ok(Outcome::Rsvp {
                status: Some(S::Waitlisted),
                changed: true,
                ..
            })
        ]
    ));
    let e = only(&d);
    assert_eq!((e.counts.going, e.counts.waitlisted), (1, 1));
    // The joiner's place is drawn when the row is written.
    assert_eq!(row(&d, 2), Some(Some(RsvpRow::new(S::Waitlisted))));
    assert_eq!(e.waitlist_joins, vec![user(2)]);
    assert_eq!(
        rsvp_events(&d),
        vec![
            (
                user(1).to_string(),
                "going".into(),
                "null".into(),
                "user".into()
            ),
            (
                user(2).to_string(),
                "waitlisted".into(),
                "null".into(),
                "user".into()
            ),
        ]
    );
}

#[test]
fn repeating_a_request_changes_nothing() {
    let state = with_rsvps(Some(1), &[1], &[2]);
    let d = decide(
        locked(state),
        &[
            rsvp(1, Some(R::Going)),
            rsvp(2, Some(R::Going)),
            rsvp(3, None),
        ],
    );
    for outcome in &d.outcomes {
        assert!(
            matches!(outcome, Ok(Outcome::Rsvp { changed: false, .. })),
            "{outcome:?}"
        );
    }
    assert!(!only(&d).is_changed() && d.published.is_empty());
}

#[test]
fn raising_capacity_promotes_the_earliest() {
    // Places, not user ids, give the order: 4 waited longest.
    let state = with_rsvps(Some(1), &[1], &[4, 2, 3]);
    let d = decide(locked(state), &[by_organiser(capacity_patch(Some(3)))]);
    assert_eq!(rsvp_events(&d), vec![promoted(4), promoted(2)]);
    assert_eq!(
        d.published[0].event.event_type, EVENT_UPDATED,
        "the update first"
    );
    let e = only(&d);
    assert_eq!((e.counts.going, e.counts.waitlisted), (3, 1));
    assert_eq!(row(&d, 4), Some(Some(RsvpRow::new(S::Going))));
    assert_eq!(row(&d, 3), None, "the last one keeps their place");
}

#[test]
fn removing_capacity_promotes_everyone_waiting() {
    let state = with_rsvps(Some(1), &[1], &[2, 3]);
    let d = decide(locked(state), &[by_organiser(capacity_patch(None))]);
    assert_eq!(rsvp_events(&d), vec![promoted(2), promoted(3)]);
    assert_eq!(only(&d).counts.waitlisted, 0);
}

#[test]
fn lowering_capacity_removes_no_one() {
    let state = with_rsvps(Some(3), &[1, 2, 3], &[4]);
    let d = decide(
        locked(state),
        &[by_organiser(capacity_patch(Some(1))), rsvp(1, None)],
    );
    let e = only(&d);
    assert_eq!(e.event.seat_capacity(), Some(1));
    // Three going over a capacity of one: one leaving frees no seat.
    assert_eq!((e.counts.going, e.counts.waitlisted), (2, 1));
    assert_eq!(row(&d, 2), None);
    assert_eq!(row(&d, 4), None);
    assert_eq!(
        rsvp_events(&d),
        vec![(
            user(1).to_string(),
            "null".into(),
            "going".into(),
            "cleared".into()
        )]
    );
}

#[test]
fn clearing_a_going_user_promotes_the_head() {
    let state = with_rsvps(Some(2), &[1, 2], &[3, 4]);
    let d = decide(locked(state), &[rsvp(1, None)]);
    assert_eq!(row(&d, 1), Some(None), "the row is deleted");
    assert_eq!(row(&d, 3), Some(Some(RsvpRow::new(S::Going))));
    assert_eq!(row(&d, 4), None);
    assert_eq!(rsvp_events(&d)[1..], [promoted(3)]);
    let e = only(&d);
    assert_eq!((e.counts.going, e.counts.waitlisted), (2, 1));
    // Both rows come from the one command.
    assert!(d.published.iter().all(|p| p.command == 0));
}

#[test]
fn a_waitlisted_user_clearing_leaves_the_queue() {
    let state = with_rsvps(Some(1), &[1], &[2, 3]);
    let d = decide(locked(state), &[rsvp(2, None), rsvp(1, Some(R::NotGoing))]);
    // Leaving the waitlist frees no seat; the seat freed next goes to the
    // one behind, not to the user who left.
    assert_eq!(row(&d, 2), Some(None));
    assert_eq!(row(&d, 3), Some(Some(RsvpRow::new(S::Going))));
    let events = rsvp_events(&d);
    assert_eq!(events.len(), 3);
    assert_eq!(events[2], promoted(3));
    let e = only(&d);
    assert_eq!(
        (e.counts.going, e.counts.waitlisted, e.counts.not_going),
        (1, 0, 1)
    );
}

#[test]
fn the_earlier_waitlist_goes_before_joiners_and_joiners_in_order() {
    let state = with_rsvps(Some(1), &[1], &[2]);
    let d = decide(
        locked(state),
        &[
            rsvp(3, Some(R::Going)),
            rsvp(4, Some(R::Going)),
            rsvp(5, Some(R::Going)),
            // Joined, then changed their mind: not waiting any more.
            rsvp(4, Some(R::Interested)),
            by_organiser(capacity_patch(Some(4))),
        ],
    );
    let events = rsvp_events(&d);
    assert_eq!(
        events[events.len() - 3..],
        [promoted(2), promoted(3), promoted(5)]
    );
    assert_eq!(row(&d, 4), Some(Some(RsvpRow::new(S::Interested))));
    let e = only(&d);
    assert!(e.waitlist_joins.is_empty(), "every joiner was seated");
    assert_eq!((e.counts.going, e.counts.waitlisted), (4, 0));
}

#[test]
fn joiners_keep_their_join_order_for_the_places_drawn() {
    let state = with_rsvps(Some(1), &[1], &[]);
    let d = decide(
        locked(state),
        &[
            rsvp(3, Some(R::Going)),
            rsvp(2, Some(R::Going)),
            rsvp(4, Some(R::Going)),
            rsvp(3, None),
            rsvp(3, Some(R::Going)),
        ],
    );
    assert_eq!(only(&d).waitlist_joins, vec![user(2), user(4), user(3)]);
}

#[test]
fn attendance_is_marked_once() {
    let mut state = with_rsvps(None, &[1], &[]);
    state.attended = 4;
    let id = state.event.id;
    let mark = || {
        by_organiser(CommandKind::MarkAttendance {
            event_id: id,
            user: user(1),
        })
    };
    let d = decide(locked(state), &[mark(), mark()]);
    let first = Mark {
        by: organiser(),
        at: at(0),
    };
    assert!(matches!(
        &d.outcomes[..],
        [
            Ok(Outcome::Attendance { newly: true, .. }),
            Ok(Outcome::Attendance { newly: false, marked_by, marked_at, .. })
        ] if *marked_by == first.by && *marked_at == first.at
    ));
    let e = only(&d);
    assert_eq!(e.attendance, vec![(user(1), Some(first))]);
    assert_eq!(e.attended_delta, 1);
    assert!(e.counters_changed && e.rsvps.is_empty());
    assert_eq!(d.published.len(), 1);
    assert_eq!(d.published[0].event.event_type, ATTENDANCE_MARKED);
}

#[test]
fn an_attendance_marked_earlier_is_reported_as_it_was() {
    let mut state = with_rsvps(None, &[], &[]);
    let earlier = Mark {
        by: user(8),
        at: at(-5),
    };
    state.attendance.insert(user(1), Some(earlier));
    let id = state.event.id;
    let d = decide(
        locked(state),
        &[by_organiser(CommandKind::MarkAttendance {
            event_id: id,
            user: user(1),
        })],
    );
    assert!(matches!(
        &d.outcomes[..],
        [Ok(Outcome::Attendance { newly: false, marked_by, .. })] if *marked_by == user(8)
    ));
    assert!(!only(&d).is_changed() && d.published.is_empty());
}

fn erase(u: u32) -> Command {
    by_organiser(CommandKind::EraseUser {
        event_id: event(None).id,
        user: user(u),
    })
}

#[test]
fn erasing_a_going_user_promotes_the_head_and_names_only_them() {
    let mut state = with_rsvps(Some(2), &[1, 2], &[3, 4]);
    state.attendance.insert(
        user(1),
        Some(Mark {
            by: user(2),
            at: at(-3),
        }),
    );
    state.attended = 1;
    let d = decide(locked(state), &[erase(1)]);
    assert!(matches!(
        &d.outcomes[..],
        [Ok(Outcome::Erased {
            rsvp: Some(S::Going),
            attendance: true,
            ..
        })]
    ));
    assert_eq!(rsvp_events(&d), vec![promoted(3)]);
    let e = only(&d);
    assert_eq!(row(&d, 1), Some(None));
    assert_eq!(e.attendance, vec![(user(1), None)]);
    assert_eq!(e.attended_delta, -1);
    assert_eq!((e.counts.going, e.counts.waitlisted), (2, 1));
}

#[test]
fn erasing_a_waitlisted_user_frees_no_seat() {
    let state = with_rsvps(Some(1), &[1], &[2, 3]);
    let d = decide(locked(state), &[erase(2)]);
    assert!(d.published.is_empty());
    let e = only(&d);
    assert_eq!(e.rsvps, vec![(user(2), None)]);
    assert_eq!((e.counts.going, e.counts.waitlisted), (1, 1));
}

#[test]
fn erasing_on_a_cancelled_event_seats_no_one() {
    let mut state = with_rsvps(Some(1), &[1], &[2]);
    state.event = state.event.cancel(None, organiser(), at(-1)).event;
    let d = decide(locked(state), &[erase(1)]);
    assert!(d.published.is_empty());
    let e = only(&d);
    assert_eq!(e.rsvps, vec![(user(1), None)]);
    assert_eq!((e.counts.going, e.counts.waitlisted), (0, 1));
}

#[test]
fn erasing_twice_or_nothing_changes_nothing() {
    let mut state = with_rsvps(Some(1), &[], &[]);
    state.attendance.insert(
        user(1),
        Some(Mark {
            by: user(1),
            at: at(-3),
        }),
    );
    // A counter already at zero stays there.
    let d = decide(locked(state.clone()), &[erase(1)]);
    assert_eq!(only(&d).attended_delta, 0);
    state.attendance.clear();
    let d = decide(locked(state), &[erase(1), erase(1)]);
    assert!(!only(&d).is_changed());
    assert!(matches!(
        &d.outcomes[..],
        [
            Ok(Outcome::Erased {
                rsvp: None,
                attendance: false,
                ..
            }),
            Ok(Outcome::Erased {
                rsvp: None,
                attendance: false,
                ..
            })
        ]
    ));
}

#[test]
fn outbox_order_follows_the_decisions_across_commands() {
    let state = with_rsvps(Some(1), &[1], &[2]);
    let d = decide(
        locked(state),
        &[rsvp(3, Some(R::Going)), rsvp(1, None), rsvp(2, None)],
    );
    let commands: Vec<usize> = d.published.iter().map(|p| p.command).collect();
    assert_eq!(commands, vec![0, 1, 1, 2, 2]);
    // User 3 joined behind user 2: the seat user 1 gives back goes to
    // user 2, and the one user 2 then gives back to user 3.
    let events = rsvp_events(&d);
    assert_eq!((&events[2], &events[4]), (&promoted(2), &promoted(3)));
    assert_eq!(events[3].0, user(2).to_string());
    assert_eq!(row(&d, 3), Some(Some(RsvpRow::new(S::Going))));
    assert!(only(&d).waitlist_joins.is_empty());
}

#[test]
fn demand_is_zero_without_a_waitlist_or_a_way_to_free_a_seat() {
    let state = with_rsvps(Some(2), &[1, 2], &[]);
    assert_eq!(waitlist_demand(&state, &[rsvp(1, None)]), 0);
    let full = with_rsvps(Some(2), &[1, 2], &[3, 4]);
    // New users asking for a seat of a full event promote no one.
    assert_eq!(
        waitlist_demand(&full, &[rsvp(5, Some(R::Going)), rsvp(6, Some(R::Going))]),
        0
    );
    assert_eq!(
        waitlist_demand(&full, &[by_organiser(capacity_patch(Some(1)))]),
        0
    );
}

#[test]
fn demand_counts_leavers_and_the_largest_capacity() {
    let mut full = with_rsvps(Some(2), &[1, 2], &[3, 4, 5, 6, 7, 8]);
    // One seat freed by a leaver.
    assert_eq!(waitlist_demand(&full, &[rsvp(1, None)]), 1);
    // A waiter who leaves frees no seat but is passed over: one either way.
    assert_eq!(waitlist_demand(&full, &[rsvp(3, Some(R::Interested))]), 1);
    assert_eq!(waitlist_demand(&full, &[rsvp(3, None), erase(1)]), 2);
    // The largest capacity reached counts, whatever comes after it.
    assert_eq!(
        waitlist_demand(
            &full,
            &[
                by_organiser(capacity_patch(Some(5))),
                by_organiser(capacity_patch(Some(3)))
            ]
        ),
        3
    );
    // Never more than are waiting; everyone when capacity goes away.
    assert_eq!(
        waitlist_demand(&full, &[by_organiser(capacity_patch(Some(100)))]),
        6
    );
    assert_eq!(
        waitlist_demand(&full, &[by_organiser(capacity_patch(None))]),
        6
    );
    // Commands on other events do not count.
    let mut elsewhere = rsvp(1, None);
    if let CommandKind::SetRsvp { event_id, .. } = &mut elsewhere.kind {
        *event_id = EventId::from(Uuid::from_u128(43));
    }
    assert_eq!(waitlist_demand(&full, &[elsewhere]), 0);
    // An unlimited event with a queue seats all of it at the first change.
    full.event.capacity = None;
    assert_eq!(waitlist_demand(&full, &[rsvp(9, Some(R::Going))]), 6);
}

fn going_with(u: u32, guests: u32) -> Command {
    let mut c = rsvp(u, Some(R::Going));
    if let CommandKind::SetRsvp { guests: g, .. } = &mut c.kind {
        *g = guests;
    }
    c
}

fn review(users: &[u32], approve: bool) -> Command {
    by_organiser(CommandKind::Review {
        event_id: event(None).id,
        users: users.iter().map(|u| user(*u)).collect(),
        approve,
    })
}

fn rules(state: &mut EventState, max_guests: u32, approval: bool) {
    state.event.rules.max_guests =
        crate::domain::MaxGuests::new(i64::from(max_guests)).unwrap_or_else(|e| panic!("{e:?}"));
    state.event.rules.approval = approval;
}

fn refusal(d: &Decision, i: usize) -> Option<ErrorCode> {
    match &d.outcomes[i] {
        Err(Refusal::Domain(e)) => Some(e.code()),
        _ => None,
    }
}

#[test]
fn rsvps_outside_the_window_are_refused_but_history_is_not() {
    let mut state = with_rsvps(Some(5), &[1], &[]);
    state.event.rules.opens_at = Some(at(10));
    state.event.rules.closes_at = Some(at(20));
    let mut early = rsvp(2, Some(R::Going));
    early.at = at(10) - Duration::microseconds(1);
    let mut first = rsvp(3, Some(R::Going));
    first.at = at(10);
    let mut last = rsvp(4, Some(R::Going));
    last.at = at(20) - Duration::microseconds(1);
    let mut late_clear = rsvp(1, None);
    late_clear.at = at(20);
    let mut history = rsvp(5, Some(R::Going));
    history.at = at(30);
    if let CommandKind::SetRsvp { window, .. } = &mut history.kind {
        *window = false;
    }
    let d = decide(locked(state), &[early, first, last, late_clear, history]);
    assert_eq!(refusal(&d, 0), Some(ErrorCode::RsvpClosed));
    assert!(d.outcomes[1].is_ok() && d.outcomes[2].is_ok());
    assert_eq!(refusal(&d, 3), Some(ErrorCode::RsvpClosed));
    assert!(d.outcomes[4].is_ok(), "{:?}", d.outcomes[4]);
    assert_eq!(only(&d).counts.going, 4);
}

#[test]
fn a_party_waits_whole_and_nobody_jumps_it() {
    let mut state = with_rsvps(Some(4), &[1, 2], &[]);
    rules(&mut state, 3, false);
    // 2 seats free: a party of 3 waits, the single behind it waits too.
    let d = decide(
        locked(state),
        &[going_with(3, 2), going_with(4, 0), rsvp(1, None)],
    );
    let events = rsvp_events(&d);
    assert_eq!(events[0].1, "waitlisted");
    assert_eq!(events[1].1, "waitlisted");
    // User 1 leaves: 3 free, the party of 3 is seated, user 4 still waits.
    assert_eq!(events[3], promoted(3));
    assert_eq!(events.len(), 4);
    let e = only(&d);
    assert_eq!(
        (e.counts.going, e.counts.guests, e.counts.waitlisted),
        (2, 2, 1)
    );
}

#[test]
fn more_guests_need_free_seats_and_fewer_give_them_back() {
    let mut state = with_rsvps(Some(3), &[1], &[]);
    rules(&mut state, 5, false);
    let d = decide(
        locked(state),
        &[
            going_with(1, 2),
            going_with(1, 3),
            going_with(1, 0),
            going_with(1, 6),
        ],
    );
    assert!(d.outcomes[0].is_ok());
    assert_eq!(refusal(&d, 1), Some(ErrorCode::NotEnoughSeats));
    assert!(d.outcomes[2].is_ok());
    assert_eq!(refusal(&d, 3), Some(ErrorCode::ValidationError));
    assert_eq!(only(&d).counts.taken(), 1);
    assert_eq!(row(&d, 1), Some(Some(RsvpRow::new(S::Going))));
}

#[test]
fn approval_holds_going_until_a_manager_answers() {
    let mut state = with_rsvps(Some(2), &[1], &[]);
    rules(&mut state, 2, true);
    let d = decide(
        locked(state),
        &[
            going_with(2, 1),
            going_with(3, 0),
            review(&[2], true),
            review(&[3], true),
            review(&[4], true),
            review(&[1], false),
            going_with(1, 0),
        ],
    );
    let events = rsvp_events(&d);
    assert_eq!(events[0].1, "pending");
    assert_eq!(events[1].1, "pending");
    // 1 seat free for a party of 2: approved onto the waitlist.
    assert_eq!(
        (events[2].1.as_str(), events[2].3.as_str()),
        ("waitlisted", "approved")
    );
    assert_eq!(
        (events[3].1.as_str(), events[3].3.as_str()),
        ("waitlisted", "approved")
    );
    // Declining user 1 frees their seat: user 2's party (2) fits, then 3 waits.
    assert_eq!(
        (events[4].1.as_str(), events[4].3.as_str()),
        ("declined", "declined")
    );
    assert_eq!(events[5], promoted(2));
    assert_eq!(events.len(), 6, "{events:?}");
    match &d.outcomes[4] {
        Ok(Outcome::Reviewed { results, .. }) => {
            assert_eq!(results.len(), 1);
            assert!(!results[0].changed && results[0].status.is_none());
        }
        other => panic!("{other:?}"),
    }
    // A declined user asking again stays declined.
    match &d.outcomes[6] {
        Ok(Outcome::Rsvp {
            status, changed, ..
        }) => assert_eq!((*status, *changed), (Some(S::Declined), false)),
        other => panic!("{other:?}"),
    }
    let e = only(&d);
    assert_eq!(
        (
            e.counts.going,
            e.counts.guests,
            e.counts.waitlisted,
            e.counts.declined
        ),
        (1, 1, 1, 1)
    );
}
