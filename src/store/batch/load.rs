//! Locking and loading what a decision needs: the counter rows (locked),
//! the events, the RSVPs and attendance marks the commands name, and the
//! head of each waitlist the commands can promote from. Shared by every
//! writer that decides with [`crate::domain::commands`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::Known;
use crate::domain::commands::{
    Command, CommandKind, EventState, Locked, Mark, RsvpRow, Waiter, waitlist_demand,
};
use crate::domain::{Event, EventId, RsvpCounts, RsvpStatus, TenantId, UserId};
use crate::store::rows::{EVENT_COLUMNS, EventRow, parse_rsvp_status};

/// One event's counter row, as locked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counters {
    pub(crate) counts: RsvpCounts,
    pub(crate) attended: u32,
    /// Moves with every committed change of the event.
    pub(crate) revision: i64,
}

/// A batch's locked state, and the revision of each event in it.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) locked: Locked,
    pub(crate) revisions: HashMap<EventId, i64>,
}

/// Locks the counter rows of `ids` in the tenant and returns them.
///
/// Locking in id order serialises every writer of these events across
/// instances without deadlocks. Anything else about the events must be
/// read by later statements: in READ COMMITTED each takes a fresh snapshot
/// after the locks are held, so it sees what the writer we waited for
/// committed (a join in the locking statement would not).
pub(crate) async fn lock_counters(
    tx: &mut PgConnection,
    tenant: TenantId,
    ids: &[Uuid],
) -> Result<BTreeMap<EventId, Counters>, sqlx::Error> {
    type Row = (Uuid, i32, i32, i32, i32, i32, i32, i32, i32, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT event_id, interested, going, not_going, waitlisted, pending, declined, guests,
                attended, revision
         FROM event_counters WHERE event_id = ANY($1) AND tenant_id = $2
         ORDER BY event_id FOR UPDATE",
    )
    .bind(ids)
    .bind(Uuid::from(tenant))
    .fetch_all(&mut *tx)
    .await?;
    let n = |v: i32| u32::try_from(v).unwrap_or(0);
    Ok(rows
        .into_iter()
        .map(|(id, i, g, no, w, p, d, guests, a, revision)| {
            let counts = RsvpCounts {
                interested: n(i),
                going: n(g),
                not_going: n(no),
                waitlisted: n(w),
                pending: n(p),
                declined: n(d),
                guests: n(guests),
            };
            let counters = Counters {
                counts,
                attended: n(a),
                revision,
            };
            (EventId::from(id), counters)
        })
        .collect())
}

/// The events of the tenant with these ids, as stored now. A row that does
/// not validate is logged and left out.
pub(crate) async fn read_events(
    tx: &mut PgConnection,
    tenant: TenantId,
    ids: &[Uuid],
) -> Result<Vec<Event>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql =
        format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = ANY($1) AND e.tenant_id = $2");
    let rows: Vec<EventRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ids)
        .bind(Uuid::from(tenant))
        .fetch_all(&mut *tx)
        .await?;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        match Event::try_from(row) {
            Ok(event) => events.push(event),
            Err(e) => tracing::error!(error = %e, "skipping an event row that does not validate"),
        }
    }
    Ok(events)
}

/// Loads into `locked` the RSVPs of these (event, user) pairs; a pair
/// without one is recorded as having none.
pub(crate) async fn rsvps(
    tx: &mut PgConnection,
    locked: &mut Locked,
    pairs: &[Pair],
) -> Result<(), sqlx::Error> {
    if pairs.is_empty() {
        return Ok(());
    }
    let rows: Vec<(Uuid, Uuid, String, Option<i64>, i32)> = sqlx::query_as(
        "SELECT r.event_id, r.user_id, r.status::text, r.waitlist_seq, r.guests FROM event_rsvps r
         JOIN UNNEST($1::uuid[], $2::uuid[]) AS q(event_id, user_id)
           ON r.event_id = q.event_id AND r.user_id = q.user_id",
    )
    .bind(pairs.iter().map(|p| Uuid::from(p.0)).collect::<Vec<_>>())
    .bind(pairs.iter().map(|p| Uuid::from(p.1)).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    for (event, user) in pairs {
        if let Some(state) = locked.events.get_mut(event) {
            state.rsvps.entry(*user).or_insert(None);
        }
    }
    for (event, user, status, seq, guests) in rows {
        if let (Some(state), Some(status)) = (
            locked.events.get_mut(&EventId::from(event)),
            parse_rsvp_status(&status),
        ) {
            let guests = u32::try_from(guests).unwrap_or(0);
            state.rsvps.insert(
                UserId::from(user),
                Some(RsvpRow {
                    status,
                    seq,
                    guests,
                }),
            );
        }
    }
    Ok(())
}

/// Loads into `locked` the attendance marks of these (event, user) pairs;
/// a pair without one is recorded as not marked.
pub(crate) async fn attendance(
    tx: &mut PgConnection,
    locked: &mut Locked,
    pairs: &[Pair],
) -> Result<(), sqlx::Error> {
    if pairs.is_empty() {
        return Ok(());
    }
    let rows: Vec<(Uuid, Uuid, Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT a.event_id, a.user_id, a.marked_by, a.marked_at FROM event_attendance a
         JOIN UNNEST($1::uuid[], $2::uuid[]) AS q(event_id, user_id)
           ON a.event_id = q.event_id AND a.user_id = q.user_id",
    )
    .bind(pairs.iter().map(|p| Uuid::from(p.0)).collect::<Vec<_>>())
    .bind(pairs.iter().map(|p| Uuid::from(p.1)).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    for (event, user) in pairs {
        if let Some(state) = locked.events.get_mut(event) {
            state.attendance.entry(*user).or_insert(None);
        }
    }
    for (event, user, by, at) in rows {
        if let Some(state) = locked.events.get_mut(&EventId::from(event)) {
            let mark = Mark {
                by: UserId::from(by),
                at,
            };
            state.attendance.insert(UserId::from(user), Some(mark));
        }
    }
    Ok(())
}

/// Loads the head of the waitlist of every locked event, as deep as
/// deciding `commands` can reach. Only events whose locked counters have
/// someone waitlisted, and whose commands can free a seat, are queried,
/// all in one statement; `locked` must already hold the commands' RSVPs.
pub(crate) async fn waitlist_heads(
    tx: &mut PgConnection,
    locked: &mut Locked,
    commands: &[Command],
) -> Result<(), sqlx::Error> {
    let wanted: Vec<(Uuid, i64)> = locked
        .events
        .values()
        .filter(|state| state.counts.waitlisted > 0)
        .map(|state| {
            let depth = waitlist_demand(state, commands);
            (Uuid::from(state.event.id), i64::from(depth))
        })
        .filter(|(_, depth)| *depth > 0)
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let rows: Vec<(Uuid, Uuid, i64, i32)> = sqlx::query_as(
        "SELECT w.event_id, r.user_id, r.waitlist_seq, r.guests
         FROM UNNEST($1::uuid[], $2::bigint[]) AS w(event_id, n)
         CROSS JOIN LATERAL (
             SELECT user_id, waitlist_seq, guests FROM event_rsvps
             WHERE event_id = w.event_id AND status = 'waitlisted'
             ORDER BY waitlist_seq LIMIT w.n) r
         ORDER BY w.event_id, r.waitlist_seq",
    )
    .bind(wanted.iter().map(|w| w.0).collect::<Vec<_>>())
    .bind(wanted.iter().map(|w| w.1).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    for (event, user, seq, guests) in rows {
        if let Some(state) = locked.events.get_mut(&EventId::from(event)) {
            state.waitlist_head.push(Waiter {
                user: UserId::from(user),
                seq,
                guests: u32::try_from(guests).unwrap_or(0),
            });
        }
    }
    Ok(())
}

/// An event and a user.
pub(crate) type Pair = (EventId, UserId);

/// The rows the commands name: whose RSVP and whose attendance they need.
#[derive(Debug, Default)]
pub(crate) struct Named {
    pub(crate) rsvps: Vec<Pair>,
    pub(crate) attendance: Vec<Pair>,
}

pub(crate) fn named_rows(commands: &[Command]) -> Named {
    let mut named = Named::default();
    for command in commands {
        match command.kind {
            CommandKind::SetRsvp { event_id, user, .. } => named.rsvps.push((event_id, user)),
            CommandKind::Review {
                event_id,
                ref users,
                ..
            } => named.rsvps.extend(users.iter().map(|u| (event_id, *u))),
            CommandKind::MarkAttendance { event_id, user } => {
                named.attendance.push((event_id, user));
            }
            CommandKind::EraseUser { event_id, user } => {
                named.rsvps.push((event_id, user));
                named.attendance.push((event_id, user));
            }
            CommandKind::Create { .. }
            | CommandKind::Update { .. }
            | CommandKind::Cancel { .. } => {}
        }
    }
    named
}

/// The RSVP maps of the events taken from what the actor knew.
type KnownRsvps = HashMap<EventId, Arc<crate::actors::RsvpMap>>;

/// Everything a batch's `commands` can need, locked and loaded.
///
/// Every change to an event or its RSVPs moves its revision, so an event
/// the scope actor knows at the locked revision is taken from `known`
/// instead of being read again, and so are its RSVPs when the actor holds
/// them all.
pub(crate) async fn for_batch(
    tx: &mut PgConnection,
    tenant: TenantId,
    commands: &[Command],
    known: &HashMap<EventId, Known>,
) -> Result<Loaded, sqlx::Error> {
    let mut ids: Vec<Uuid> = commands
        .iter()
        .filter(|c| !matches!(c.kind, CommandKind::Create { .. }))
        .map(|c| Uuid::from(c.kind.event_id()))
        .collect();
    ids.sort();
    ids.dedup();
    let mut loaded = Loaded::default();
    if ids.is_empty() {
        return Ok(loaded);
    }
    let counters = lock_counters(tx, tenant, &ids).await?;
    let mut maps = KnownRsvps::new();
    let mut unknown: Vec<Uuid> = Vec::new();
    for (id, c) in &counters {
        match known.get(id) {
            Some(k) if k.revision == c.revision && k.event.tenant_id == tenant => {
                loaded.locked.insert(state(&k.event, c));
                if let Some(map) = &k.rsvps {
                    maps.insert(*id, map.clone());
                }
            }
            _ => unknown.push(Uuid::from(*id)),
        }
    }
    for event in read_events(tx, tenant, &unknown).await? {
        if let Some(c) = counters.get(&event.id) {
            loaded.locked.insert(state(&event, c));
        }
    }
    loaded.revisions = counters.iter().map(|(id, c)| (*id, c.revision)).collect();

    let named = named_rows(commands);
    let mut unanswered = Vec::new();
    for (event_id, user) in named.rsvps {
        // From the actor's complete map, unless the user has a party: the
        // map holds neither their guests nor their place in the queue.
        let cached = maps.get(&event_id).map(|m| m.get(&user));
        match (cached, loaded.locked.events.get_mut(&event_id)) {
            (Some(status), Some(state)) if !status.is_some_and(RsvpStatus::is_party) => {
                state.rsvps.entry(user).or_insert(status.map(RsvpRow::new));
            }
            _ => unanswered.push((event_id, user)),
        }
    }
    rsvps(tx, &mut loaded.locked, &unanswered).await?;
    attendance(tx, &mut loaded.locked, &named.attendance).await?;
    waitlist_heads(tx, &mut loaded.locked, commands).await?;
    Ok(loaded)
}

fn state(event: &Event, c: &Counters) -> EventState {
    let mut state = EventState::new(event.clone(), c.counts);
    state.attended = c.attended;
    state
}
