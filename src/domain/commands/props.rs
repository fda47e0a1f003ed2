//! Properties of the decide step over random batches of commands on one
//! event, run against a small in-memory store that loads and writes the
//! way a real writer does (the head of the waitlist bounded by
//! [`waitlist_demand`], places drawn at write time in join order).

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;
use serde_json::Value;

use super::tests::{at, by_organiser, capacity_patch, event, rsvp, user};
use super::*;
use crate::domain::published::{EVENT_CANCELLED, EVENT_UPDATED, RSVP_CHANGED};
use crate::domain::{EventPatch, RequestedRsvp as R, RsvpStatus as S, Tri};

const USERS: u32 = 8;
/// The event's `maxGuests`.
const MAX_GUESTS: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    /// A user's answer, with guests (kept only with `going`).
    Rsvp(u32, Option<R>, u32),
    Capacity(Option<u32>),
    /// Approval turned on or off.
    Approval(bool),
    /// A manager approves (`true`) or declines these users.
    Review(Vec<u32>, bool),
    /// A patch that changes nothing.
    SameTitle,
    Mark(u32),
    Erase(u32),
    Cancel,
}

fn requested() -> impl Strategy<Value = Option<R>> {
    prop_oneof![
        Just(None),
        Just(Some(R::Interested)),
        Just(Some(R::Going)),
        Just(Some(R::Going)),
        Just(Some(R::Going)),
        Just(Some(R::NotGoing)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        40 => (0..USERS, requested(), prop_oneof![3 => Just(0u32), 1 => 1u32..=MAX_GUESTS])
            .prop_map(|(u, r, g)| Op::Rsvp(u, r, g)),
        6 => prop::option::of(1u32..9).prop_map(Op::Capacity),
        2 => any::<bool>().prop_map(Op::Approval),
        4 => (prop::collection::vec(0..USERS, 1..4), any::<bool>())
            .prop_map(|(users, approve)| Op::Review(users, approve)),
        2 => Just(Op::SameTitle),
        3 => (0..USERS).prop_map(Op::Mark),
        3 => (0..USERS).prop_map(Op::Erase),
        1 => Just(Op::Cancel),
    ]
}

fn batches() -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(prop::collection::vec(op(), 1..8), 0..24)
}

fn command(op: &Op, minute: i64) -> Command {
    let id = event(None).id;
    let mut command = match op {
        Op::Rsvp(u, requested, guests) => {
            let mut c = rsvp(*u, *requested);
            if let CommandKind::SetRsvp { guests: g, .. } = &mut c.kind
                && *requested == Some(R::Going)
            {
                *g = *guests;
            }
            c
        }
        Op::Capacity(to) => by_organiser(capacity_patch(*to)),
        Op::Approval(on) => by_organiser(CommandKind::Update {
            event_id: id,
            patch: Box::new(EventPatch {
                rsvp_approval: Tri::Set(*on),
                ..EventPatch::default()
            }),
        }),
        Op::Review(users, approve) => by_organiser(CommandKind::Review {
            event_id: id,
            users: users.iter().map(|u| user(*u)).collect(),
            approve: *approve,
        }),
        Op::SameTitle => by_organiser(CommandKind::Update {
            event_id: id,
            patch: Box::new(EventPatch {
                title: Tri::Set(event(None).title),
                ..EventPatch::default()
            }),
        }),
        Op::Mark(u) => by_organiser(CommandKind::MarkAttendance {
            event_id: id,
            user: user(*u),
        }),
        Op::Erase(u) => by_organiser(CommandKind::EraseUser {
            event_id: id,
            user: user(*u),
        }),
        Op::Cancel => by_organiser(CommandKind::Cancel {
            event_id: id,
            reason: None,
        }),
    };
    command.at = at(minute);
    command
}

/// What a database holds of the one event.
#[derive(Debug, Clone)]
struct Store {
    event: Event,
    counts: RsvpCounts,
    attended: u32,
    rows: BTreeMap<UserId, RsvpRow>,
    marks: BTreeMap<UserId, Mark>,
    next_seq: i64,
}

impl Store {
    fn new(capacity: Option<u32>) -> Self {
        let mut event = event(capacity);
        event.rules.max_guests = crate::domain::MaxGuests::new(i64::from(MAX_GUESTS))
            .unwrap_or_else(|e| panic!("{e:?}"));
        Self {
            event,
            counts: RsvpCounts::default(),
            attended: 0,
            rows: BTreeMap::new(),
            marks: BTreeMap::new(),
            next_seq: 1,
        }
    }

    /// What a writer loads under the lock for `commands`; the head of the
    /// waitlist bounded by the demand, or all of it.
    fn lock(&self, commands: &[Command], whole_waitlist: bool) -> Locked {
        let mut state = EventState::new(self.event.clone(), self.counts);
        state.attended = self.attended;
        for c in commands {
            match &c.kind {
                CommandKind::SetRsvp { user, .. } => {
                    state.rsvps.insert(*user, self.rows.get(user).copied());
                }
                CommandKind::Review { users, .. } => {
                    for user in users {
                        state.rsvps.insert(*user, self.rows.get(user).copied());
                    }
                }
                CommandKind::MarkAttendance { user, .. } => {
                    state
                        .attendance
                        .insert(*user, self.marks.get(user).copied());
                }
                CommandKind::EraseUser { user, .. } => {
                    state.rsvps.insert(*user, self.rows.get(user).copied());
                    state
                        .attendance
                        .insert(*user, self.marks.get(user).copied());
                }
                _ => {}
            }
        }
        let queue = self.queue();
        let n = if whole_waitlist {
            queue.len()
        } else {
            waitlist_demand(&state, commands) as usize
        };
        state.waitlist_head = queue.into_iter().take(n).collect();
        let mut locked = Locked::default();
        locked.insert(state);
        locked
    }

    /// The waitlist by place.
    fn queue(&self) -> Vec<Waiter> {
        let mut queue: Vec<Waiter> = self
            .rows
            .iter()
            .filter_map(|(user, row)| match (row.status, row.seq) {
                (S::Waitlisted, Some(seq)) => Some(Waiter {
                    user: *user,
                    seq,
                    guests: row.guests,
                }),
                _ => None,
            })
            .collect();
        queue.sort_by_key(|w| w.seq);
        queue
    }

    fn commit(&mut self, decision: &Decision) -> Result<(), String> {
        for e in &decision.events {
            self.event = e.event.clone();
            self.counts = e.counts;
            self.attended = u32::try_from(i64::from(self.attended) + i64::from(e.attended_delta))
                .map_err(|_| "attended went below zero".to_owned())?;
            let mut rows = e.rsvps.clone();
            for joiner in &e.waitlist_joins {
                let Some((_, Some(row))) = rows.iter_mut().find(|(u, _)| u == joiner) else {
                    return Err(format!("joiner {joiner} has no waitlisted row"));
                };
                if row.status != S::Waitlisted || row.seq.is_some() {
                    return Err(format!("joiner {joiner} written as {row:?}"));
                }
                row.seq = Some(self.next_seq);
                self.next_seq += 1;
            }
            for (user, row) in rows {
                match row {
                    Some(row) if row.status == S::Waitlisted && row.seq.is_none() => {
                        return Err(format!("{user} waitlisted without a place"));
                    }
                    Some(row) => self.rows.insert(user, row),
                    None => self.rows.remove(&user),
                };
            }
            for (user, mark) in &e.attendance {
                match mark {
                    Some(mark) => self.marks.insert(*user, *mark),
                    None => self.marks.remove(user),
                };
            }
        }
        Ok(())
    }
}

/// The event as the published stream (plus the silent erasures) tells it.
#[derive(Debug)]
struct Watch {
    capacity: Option<u32>,
    /// Seats taken (guests included).
    going: u32,
    /// Waitlisted users in the order they joined.
    queue: VecDeque<UserId>,
    /// Each user's party size (1 + guests) as last published.
    party: BTreeMap<UserId, u32>,
}

impl Watch {
    fn leave(&mut self, user: UserId, previous: Option<S>) -> Result<(), String> {
        match previous {
            Some(S::Going) => {
                let party = self.party.get(&user).copied().unwrap_or(1);
                self.going = self
                    .going
                    .checked_sub(party)
                    .ok_or("more left than were going")?;
            }
            Some(S::Waitlisted) => {
                let at = self.queue.iter().position(|u| *u == user);
                let at = at.ok_or_else(|| format!("{user} left a queue they were not in"))?;
                self.queue.remove(at);
            }
            _ => {}
        }
        Ok(())
    }

    fn follow(&mut self, published: &crate::domain::published::Published) -> Result<(), String> {
        let d = &published.data;
        match published.event_type {
            EVENT_UPDATED => {
                self.capacity = d["capacity"].as_u64().and_then(|c| u32::try_from(c).ok());
            }
            EVENT_CANCELLED => {}
            RSVP_CHANGED => {
                let status = |v: &Value| v.as_str().and_then(|s| s.parse::<S>().ok());
                let user = d["user_id"]
                    .as_str()
                    .and_then(|u| UserId::parse(u).ok())
                    .ok_or("an RSVP event without a user")?;
                let (now, before) = (status(&d["status"]), status(&d["previous_status"]));
                let guests = d["guests"]
                    .as_u64()
                    .and_then(|g| u32::try_from(g).ok())
                    .ok_or("an RSVP event without guests")?;
                // A waiting party changing its guests keeps its place.
                let keeps_place = before == Some(S::Waitlisted) && now == Some(S::Waitlisted);
                if d["reason"] == "promoted" {
                    if self.queue.front() != Some(&user) {
                        return Err(format!("promoted {user}, not the head {:?}", self.queue));
                    }
                    if (before, now) != (Some(S::Waitlisted), Some(S::Going)) {
                        return Err(format!("a promotion from {before:?} to {now:?}"));
                    }
                }
                if keeps_place {
                    self.party.insert(user, 1 + guests);
                    return Ok(());
                }
                let taken_before = self.going;
                self.leave(user, before)?;
                self.party.insert(user, 1 + guests);
                match now {
                    Some(S::Going) => {
                        self.going += 1 + guests;
                        // Seats only grow into free ones (capacity lowered
                        // below the seats taken keeps who is seated).
                        if self.going > taken_before
                            && self.capacity.is_some_and(|c| self.going > c)
                        {
                            return Err(format!(
                                "seated {user}: {} going, capacity {:?}",
                                self.going, self.capacity
                            ));
                        }
                    }
                    Some(S::Waitlisted) => self.queue.push_back(user),
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Runs `batches` through decide and the store; checks every property
/// after every batch. `doubled`: each command is sent twice in a row.
fn run(capacity: Option<u32>, batches: &[Vec<Op>], doubled: bool) -> Result<Store, String> {
    let mut store = Store::new(capacity);
    let mut watch = Watch {
        capacity,
        going: 0,
        queue: VecDeque::new(),
        party: BTreeMap::new(),
    };
    for (b, ops) in batches.iter().enumerate() {
        let minute = i64::try_from(b).map_err(|e| e.to_string())?;
        let commands: Vec<Command> = ops
            .iter()
            .flat_map(|op| {
                let c = command(op, minute);
                if doubled { vec![c.clone(), c] } else { vec![c] }
            })
            .collect();
        let decision = decide(store.lock(&commands, false), &commands);
        let whole = decide(store.lock(&commands, true), &commands);
        if decision != whole {
            return Err(format!(
                "batch {b}: the bounded head decided otherwise than the whole waitlist"
            ));
        }

        for (i, outcome) in decision.outcomes.iter().enumerate() {
            if let Ok(Outcome::Erased {
                rsvp: Some(status), ..
            }) = outcome
                && let CommandKind::EraseUser { user, .. } = commands[i].kind
            {
                watch.leave(user, Some(*status))?;
            }
            for emitted in decision.published.iter().filter(|e| e.command == i) {
                watch
                    .follow(&emitted.event)
                    .map_err(|e| format!("batch {b}: {e}"))?;
            }
            if doubled && i % 2 == 1 {
                repeat_changed_nothing(outcome, &decision, i)
                    .map_err(|e| format!("batch {b}: {e}"))?;
            }
        }
        let mut order: Vec<usize> = decision.published.iter().map(|e| e.command).collect();
        order.dedup();
        if !order.is_sorted() {
            return Err(format!(
                "batch {b}: outbox rows out of command order {order:?}"
            ));
        }

        store
            .commit(&decision)
            .map_err(|e| format!("batch {b}: {e}"))?;
        check_store(&store, &watch).map_err(|e| format!("batch {b}: {e}"))?;
    }
    Ok(store)
}

fn repeat_changed_nothing(outcome: &Verdict, decision: &Decision, i: usize) -> Result<(), String> {
    if decision.published.iter().any(|e| e.command == i) {
        return Err(format!("the repeated command {i} published something"));
    }
    let unchanged = match outcome {
        Ok(Outcome::Rsvp { changed, .. } | Outcome::Updated { changed, .. }) => !changed,
        Ok(Outcome::Cancelled { already, .. }) => *already,
        Ok(Outcome::Attendance { newly, .. }) => !newly,
        Ok(Outcome::Erased {
            rsvp, attendance, ..
        }) => rsvp.is_none() && !attendance,
        Ok(Outcome::Created { .. }) => false,
        Ok(Outcome::Reviewed { results, .. }) => results.iter().all(|r| !r.changed),
        Err(_) => true,
    };
    if !unchanged {
        return Err(format!(
            "the repeated command {i} changed something: {outcome:?}"
        ));
    }
    Ok(())
}

fn check_store(store: &Store, watch: &Watch) -> Result<(), String> {
    let mut recount = RsvpCounts::default();
    for row in store.rows.values() {
        recount.transition_party(None, Some((row.status, row.guests)));
        if !row.status.is_party() && row.guests != 0 {
            return Err(format!("guests kept on {row:?}"));
        }
    }
    if recount != store.counts {
        return Err(format!(
            "counters {:?} != recount {recount:?}",
            store.counts
        ));
    }
    if usize::try_from(store.attended).ok() != Some(store.marks.len()) {
        return Err(format!(
            "attended {} with {} marks",
            store.attended,
            store.marks.len()
        ));
    }
    if watch.going != store.counts.taken() {
        return Err(format!(
            "the stream says {} seats taken, the store {}",
            watch.going,
            store.counts.taken()
        ));
    }
    let by_place: Vec<UserId> = store.queue().iter().map(|w| w.user).collect();
    if !by_place.iter().eq(watch.queue.iter()) {
        return Err(format!(
            "places {by_place:?} differ from the join order {:?}",
            watch.queue
        ));
    }
    if store.event.seat_capacity() != watch.capacity {
        return Err("the stream lost a capacity change".to_owned());
    }
    // Promotions are immediate: the head of the waitlist waits only while
    // its whole party does not fit (an erase on a cancelled event seats no
    // one, so a cancelled event is exempt).
    if !store.event.is_cancelled()
        && let Some(head) = store.queue().first()
    {
        let seats = store.counts.seats(store.event.seat_capacity());
        if seats.fits(head.guests + 1) {
            return Err(format!(
                "{} waiting, the head's party of {} fits in {seats:?}",
                store.counts.waitlisted,
                head.guests + 1
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    /// Capacity is never exceeded when someone is seated, promotions take
    /// the head of the waitlist in join order, places are drawn in join
    /// order, the counters equal a recount of the statuses, and loading
    /// only the head the demand asks for decides as the whole waitlist.
    #[test]
    fn batches_keep_every_invariant(
        capacity in prop::option::weighted(0.85, 1u32..5),
        batches in batches(),
    ) {
        prop_assert_eq!(run(capacity, &batches, false).map(|_| ()), Ok(()));
    }

    /// The same command twice in a row: the second changes nothing and
    /// publishes nothing, within a batch and in the next one.
    #[test]
    fn a_repeated_command_changes_nothing(
        capacity in prop::option::weighted(0.85, 1u32..5),
        batches in batches(),
        last in op(),
    ) {
        let store = run(capacity, &batches, true);
        prop_assert!(store.is_ok(), "{:?}", store.as_ref().err());
        let Ok(mut store) = store else { return Ok(()) };
        let once = [command(&last, 1_000)];
        let first = decide(store.lock(&once, false), &once);
        prop_assert_eq!(store.commit(&first), Ok(()));
        let again = decide(store.lock(&once, false), &once);
        prop_assert!(again.published.is_empty(), "{:?}", again.published);
        for e in &again.events {
            prop_assert!(
                !e.is_changed() && e.rsvps.is_empty() && e.attendance.is_empty(),
                "{:?}", e
            );
        }
        prop_assert_eq!(repeat_changed_nothing(&again.outcomes[0], &again, 0), Ok(()));
    }
}
