//! Group commit: a batch of write commands applied in one transaction.
//!
//! Postgres is the source of truth, so a batch never trusts cached state:
//! it locks the counter rows of every event it touches (in id order, so two
//! batches cannot deadlock), reads the rows it needs, decides every command
//! in memory with the domain rules, and writes everything with a handful of
//! set-based statements, outbox rows included. Several instances can run
//! batches for the same scope at once; the counter locks serialise their
//! seat decisions, so capacity is never exceeded.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::published::{self, Published};
use crate::domain::{
    CancelReason, DomainError, Event, EventId, EventPatch, RequestedRsvp, RsvpChangeReason,
    RsvpCounts, RsvpStatus, TenantId, UserId, decide, promotions_after_capacity_change,
};
use crate::error::AppError;
use crate::names::Subjects;
use crate::store::rows::{EVENT_COLUMNS, EventRow, parse_rsvp_status};

/// What a write command needs besides its own fields.
#[derive(Debug, Clone)]
pub struct CommandMeta {
    pub tenant: TenantId,
    pub actor: UserId,
    pub request_id: String,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// The signed request's replay key; refused if already claimed.
    pub replay_key: Option<[u8; 32]>,
    pub replay_expires_at: DateTime<Utc>,
    /// Audit entries the request owes (an admin bypass), written in the
    /// transaction when the command succeeds.
    pub audit: Vec<crate::store::audit::AuditEntry>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub enum WriteCommand {
    /// `event` is complete (id, timestamps); `result` is what a retry with
    /// the same request id gets back.
    Create {
        event: Box<Event>,
        request_hash: String,
        result: Value,
    },
    Update {
        event_id: EventId,
        patch: Box<EventPatch>,
    },
    Cancel {
        event_id: EventId,
        reason: Option<CancelReason>,
    },
    /// `None` clears the actor's RSVP.
    SetRsvp {
        event_id: EventId,
        requested: Option<RequestedRsvp>,
    },
    MarkAttendance {
        event_id: EventId,
        user: UserId,
    },
}

impl WriteCommand {
    pub(crate) fn target(&self) -> Option<EventId> {
        match self {
            WriteCommand::Create { .. } => None,
            WriteCommand::Update { event_id, .. }
            | WriteCommand::Cancel { event_id, .. }
            | WriteCommand::SetRsvp { event_id, .. }
            | WriteCommand::MarkAttendance { event_id, .. } => Some(*event_id),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Envelope {
    pub meta: CommandMeta,
    pub command: WriteCommand,
}

#[derive(Debug, Clone)]
pub enum WriteOutcome {
    Created {
        event: Event,
        counts: RsvpCounts,
    },
    /// A retried create: the first result, unchanged.
    CreatedEarlier {
        result: Value,
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
        status: Option<RsvpStatus>,
        changed: bool,
    },
    Attendance {
        event: Event,
        user: UserId,
        marked_by: UserId,
        marked_at: DateTime<Utc>,
        newly: bool,
    },
}

pub type CommandResult = Result<WriteOutcome, AppError>;

/// What a committed batch changed, for caches and the outbox publisher.
#[derive(Debug, Default)]
pub struct BatchEffects {
    /// Events whose row or counters changed, with their state after commit.
    pub changed: Vec<ChangedEvent>,
    pub outbox_rows: usize,
}

/// One event after a commit, with the RSVPs the commit changed.
#[derive(Debug, Clone)]
pub struct ChangedEvent {
    pub event: Event,
    pub counts: RsvpCounts,
    /// The event's revision after this commit.
    pub revision: i64,
    /// Created by this commit (so it has no other RSVPs than `rsvps`).
    pub is_new: bool,
    /// `None` status: the RSVP was removed.
    pub rsvps: Vec<(UserId, Option<RsvpStatus>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RsvpRow {
    status: RsvpStatus,
    seq: Option<i64>,
}

struct EventState {
    event: Event,
    counts: RsvpCounts,
    /// The revision read under the lock; the commit writes `revision + 1`.
    revision: i64,
    attended_delta: i32,
    is_new: bool,
    event_dirty: bool,
    counts_dirty: bool,
    /// Known RSVPs (loaded, or changed by this batch). `None`: no RSVP.
    rsvps: HashMap<UserId, Option<RsvpRow>>,
    dirty_rsvps: Vec<UserId>,
    /// Users who joined the waitlist in this batch, in order; their
    /// sequence numbers are drawn when the batch is written.
    new_waitlisters: VecDeque<UserId>,
    attendance: HashMap<UserId, Option<(UserId, DateTime<Utc>)>>,
    new_attendance: Vec<(UserId, UserId, DateTime<Utc>)>,
}

impl EventState {
    fn new(event: Event, counts: RsvpCounts, is_new: bool) -> Self {
        Self {
            event,
            counts,
            revision: 0,
            attended_delta: 0,
            is_new,
            event_dirty: is_new,
            counts_dirty: is_new,
            rsvps: HashMap::new(),
            dirty_rsvps: Vec::new(),
            new_waitlisters: VecDeque::new(),
            attendance: HashMap::new(),
            new_attendance: Vec::new(),
        }
    }

    fn set_rsvp(&mut self, user: UserId, row: Option<RsvpRow>) {
        let previous = self.rsvps.insert(user, row).flatten();
        self.counts
            .transition(previous.map(|r| r.status), row.map(|r| r.status));
        self.counts_dirty = true;
        if !self.dirty_rsvps.contains(&user) {
            self.dirty_rsvps.push(user);
        }
        if previous.is_some_and(|p| p.status == RsvpStatus::Waitlisted) {
            self.new_waitlisters.retain(|u| *u != user);
        }
    }
}

struct Batch<'a> {
    subjects: &'a Subjects,
    events: HashMap<EventId, EventState>,
    outbox: Vec<(Published, usize)>,
}

/// What the scope actor already knows of an event: if the revision read
/// under the lock is this one, nothing changed since, and the event (and
/// the RSVPs, when the map is there) need not be read again.
#[derive(Debug, Clone)]
pub struct Known {
    pub event: std::sync::Arc<Event>,
    /// Every RSVP of the event, when the actor holds them all.
    pub rsvps: Option<std::sync::Arc<HashMap<UserId, RsvpStatus>>>,
    pub revision: i64,
}

/// Applies `commands` in one transaction; one result per command, in order.
/// An `Err` means the transaction itself failed (nothing was written); the
/// caller may then retry the commands one by one to isolate a bad one.
pub async fn execute(
    db: &PgPool,
    subjects: &Subjects,
    commands: &[Envelope],
    known: &HashMap<EventId, Known>,
) -> Result<(Vec<CommandResult>, BatchEffects), sqlx::Error> {
    // Every statement of a batch looks rows up by key. The planner would
    // otherwise pick sequential scans and hash joins whenever its statistics
    // say a table is small, and keep those plans (prepared statements) while
    // a fresh or fast-growing table outgrows them until autovacuum analyses
    // it again: index lookups are right at every size. One round trip still.
    let mut tx = db
        .begin_with(
            "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; \
             SET LOCAL enable_mergejoin = off",
        )
        .await?;
    let mut results: Vec<Option<CommandResult>> = (0..commands.len()).map(|_| None).collect();

    refuse_replays(&mut tx, commands, &mut results).await?;
    claim_idempotency_keys(&mut tx, commands, &mut results).await?;

    let mut batch = Batch {
        subjects,
        events: HashMap::new(),
        outbox: Vec::new(),
    };
    let tenant = commands.first().map(|c| c.meta.tenant);
    let targets: Vec<Uuid> = {
        let mut ids: Vec<Uuid> = commands
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_none())
            .filter_map(|(c, _)| c.command.target().map(Uuid::from))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    if let (Some(tenant), false) = (tenant, targets.is_empty()) {
        let maps = load_events(&mut tx, tenant, &targets, known, &mut batch).await?;
        load_rsvps(&mut tx, commands, &maps, &mut batch).await?;
        load_attendance(&mut tx, commands, &mut batch).await?;
    }

    for (i, envelope) in commands.iter().enumerate() {
        if results[i].is_some() {
            continue;
        }
        let outcome = apply(&mut tx, &mut batch, envelope, i).await?;
        results[i] = Some(outcome);
    }

    let effects = write(&mut tx, &mut batch, commands).await?;
    let owed: Vec<crate::store::audit::AuditEntry> = commands
        .iter()
        .zip(&results)
        .filter(|(_, r)| matches!(r, Some(Ok(_))))
        .flat_map(|(c, _)| c.meta.audit.iter().cloned())
        .collect();
    crate::store::audit::insert(&mut tx, &owed).await?;
    tx.commit().await?;
    let results = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(AppError::internal("batch", "command was not decided"))))
        .collect();
    Ok((results, effects))
}

async fn refuse_replays(
    tx: &mut PgConnection,
    commands: &[Envelope],
    results: &mut [Option<CommandResult>],
) -> Result<(), sqlx::Error> {
    let keyed: Vec<(usize, [u8; 32], DateTime<Utc>)> = commands
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.meta.replay_key.map(|k| (i, k, c.meta.replay_expires_at)))
        .collect();
    if keyed.is_empty() {
        return Ok(());
    }
    let mut seen = HashSet::new();
    let mut keys = Vec::new();
    let mut expiries = Vec::new();
    for (i, key, expires) in &keyed {
        if seen.insert(*key) {
            keys.push(*key);
            expiries.push(*expires);
        } else {
            results[*i] = Some(Err(crate::auth::AuthError::from(
                crate::auth::UnauthorizedReason::Replayed,
            )
            .into()));
        }
    }
    let inserted = crate::store::replays::claim_all(&mut *tx, &keys, &expiries).await?;
    let mut first_use = HashSet::new();
    for (i, key, _) in keyed {
        if results[i].is_some() {
            continue;
        }
        if !inserted.contains(&key) || !first_use.insert(key) {
            results[i] = Some(Err(crate::auth::AuthError::from(
                crate::auth::UnauthorizedReason::Replayed,
            )
            .into()));
        }
    }
    Ok(())
}

/// One create's idempotency record.
struct KeyRow {
    index: usize,
    tenant: Uuid,
    user: Uuid,
    request_id: String,
    hash: String,
    result: Value,
    expires_at: DateTime<Utc>,
}

/// Records the idempotency key of every create before anything is
/// written. A key another transaction holds makes this one wait for it;
/// the earlier result (or a conflict, for a different body) is the answer.
async fn claim_idempotency_keys(
    tx: &mut PgConnection,
    commands: &[Envelope],
    results: &mut [Option<CommandResult>],
) -> Result<(), sqlx::Error> {
    let mut first: HashSet<(Uuid, Uuid, String)> = HashSet::new();
    // Later creates in this batch with a key an earlier one claims: they are
    // answered once the key's owner is known (below), never before. The
    // first claimant may itself lose to a key committed earlier, and its
    // own (never written) event must not reach anyone.
    let mut followers: Vec<(usize, (Uuid, Uuid, String), String)> = Vec::new();
    let mut rows: Vec<KeyRow> = Vec::new();
    for (i, c) in commands.iter().enumerate() {
        if results[i].is_some() {
            continue;
        }
        let WriteCommand::Create {
            request_hash,
            result,
            ..
        } = &c.command
        else {
            continue;
        };
        let key = (
            Uuid::from(c.meta.tenant),
            Uuid::from(c.meta.actor),
            c.meta.request_id.clone(),
        );
        if first.contains(&key) {
            // The same create twice in one batch: the second is a retry.
            followers.push((i, key, request_hash.clone()));
            continue;
        }
        first.insert(key.clone());
        rows.push(KeyRow {
            index: i,
            tenant: key.0,
            user: key.1,
            request_id: key.2,
            hash: request_hash.clone(),
            result: result.clone(),
            expires_at: c.meta.now + chrono::Duration::hours(24),
        });
    }
    if rows.is_empty() {
        return Ok(());
    }
    let inserted: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "INSERT INTO idempotency_keys (tenant_id, user_id, request_id, operation, request_hash, result, expires_at)
         SELECT t, u, r, 'event.create', h, res, x
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[]) AS q(t, u, r, h, res, x)
         ON CONFLICT (tenant_id, user_id, operation, request_id) DO UPDATE
             SET request_hash = EXCLUDED.request_hash, result = EXCLUDED.result,
                 created_at = now(), expires_at = EXCLUDED.expires_at
             WHERE idempotency_keys.expires_at < now()
         RETURNING tenant_id, user_id, request_id",
    )
    .bind(rows.iter().map(|r| r.tenant).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.user).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.request_id.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.hash.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.result.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.expires_at).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let inserted: HashSet<(Uuid, Uuid, String)> = inserted.into_iter().collect();
    // Each key's owner: (request hash, result) of the create that holds it.
    let mut owners: HashMap<(Uuid, Uuid, String), Option<(String, Value)>> = HashMap::new();
    for KeyRow {
        index: i,
        tenant,
        user,
        request_id,
        hash,
        result,
        ..
    } in rows
    {
        if inserted.contains(&(tenant, user, request_id.clone())) {
            owners.insert((tenant, user, request_id), Some((hash, result)));
            continue;
        }
        let earlier: Option<(String, Value)> = sqlx::query_as(
            "SELECT request_hash, result FROM idempotency_keys
             WHERE tenant_id = $1 AND user_id = $2 AND operation = 'event.create' AND request_id = $3",
        )
        .bind(tenant)
        .bind(user)
        .bind(&request_id)
        .fetch_optional(&mut *tx)
        .await?;
        results[i] = Some(match &earlier {
            Some((earlier_hash, result)) if *earlier_hash == hash => {
                Ok(WriteOutcome::CreatedEarlier {
                    result: result.clone(),
                })
            }
            _ => Err(AppError::IdempotencyConflict),
        });
        owners.insert((tenant, user, request_id), earlier);
    }
    for (i, key, hash) in followers {
        results[i] = Some(match owners.get(&key) {
            Some(Some((owner_hash, result))) if *owner_hash == hash => {
                Ok(WriteOutcome::CreatedEarlier {
                    result: result.clone(),
                })
            }
            _ => Err(AppError::IdempotencyConflict),
        });
    }
    Ok(())
}

/// The RSVP maps of the events taken from what the actor knew.
type KnownRsvps = HashMap<EventId, std::sync::Arc<HashMap<UserId, RsvpStatus>>>;

async fn load_events(
    tx: &mut PgConnection,
    tenant: TenantId,
    ids: &[Uuid],
    known: &HashMap<EventId, Known>,
    batch: &mut Batch<'_>,
) -> Result<KnownRsvps, sqlx::Error> {
    // Locking the counter rows first, in id order, serialises every writer
    // of these events across instances without deadlocks. The events are
    // read by a second statement on purpose: in READ COMMITTED it takes a
    // fresh snapshot after the locks are held, so it sees what the writer
    // we waited for committed (a join in the locking statement would not).
    // Every change to an event or its RSVPs moves its revision, so an event
    // the actor knows at the locked revision is not read again at all.
    let counts: Vec<(Uuid, i32, i32, i32, i32, i64)> = sqlx::query_as(
        "SELECT event_id, interested, going, not_going, waitlisted, revision FROM event_counters
         WHERE event_id = ANY($1) AND tenant_id = $2 ORDER BY event_id FOR UPDATE",
    )
    .bind(ids)
    .bind(Uuid::from(tenant))
    .fetch_all(&mut *tx)
    .await?;
    let counts: HashMap<Uuid, (RsvpCounts, i64)> = counts
        .into_iter()
        .map(|(id, i, g, n, w, revision)| {
            let c = |v: i32| u32::try_from(v).unwrap_or(0);
            (
                id,
                (
                    RsvpCounts {
                        interested: c(i),
                        going: c(g),
                        not_going: c(n),
                        waitlisted: c(w),
                    },
                    revision,
                ),
            )
        })
        .collect();
    let mut maps = KnownRsvps::new();
    let mut unknown: Vec<Uuid> = Vec::new();
    for id in ids {
        let Some((c, revision)) = counts.get(id).copied() else {
            continue;
        };
        let event_id = EventId::from(*id);
        match known.get(&event_id) {
            Some(k) if k.revision == revision && k.event.tenant_id == tenant => {
                let mut state = EventState::new((*k.event).clone(), c, false);
                state.revision = revision;
                batch.events.insert(event_id, state);
                if let Some(map) = &k.rsvps {
                    maps.insert(event_id, map.clone());
                }
            }
            _ => unknown.push(*id),
        }
    }
    if unknown.is_empty() {
        return Ok(maps);
    }
    let sql =
        format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = ANY($1) AND e.tenant_id = $2");
    let rows: Vec<EventRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&unknown)
        .bind(Uuid::from(tenant))
        .fetch_all(&mut *tx)
        .await?;
    for row in rows {
        let id = row.id;
        match Event::try_from(row) {
            Ok(event) => {
                let (c, revision) = counts.get(&id).copied().unwrap_or_default();
                let mut state = EventState::new(event, c, false);
                state.revision = revision;
                batch.events.insert(state.event.id, state);
            }
            Err(e) => tracing::error!(error = %e, "skipping an event row that does not validate"),
        }
    }
    Ok(maps)
}

async fn load_rsvps(
    tx: &mut PgConnection,
    commands: &[Envelope],
    maps: &KnownRsvps,
    batch: &mut Batch<'_>,
) -> Result<(), sqlx::Error> {
    let mut pairs: Vec<(Uuid, Uuid)> = Vec::new();
    for c in commands {
        let WriteCommand::SetRsvp { event_id, .. } = c.command else {
            continue;
        };
        let user = c.meta.actor;
        // From the actor's complete map, unless the user is waitlisted:
        // the map does not hold their place in the queue.
        let cached = maps.get(&event_id).map(|m| m.get(&user).copied());
        match (cached, batch.events.get_mut(&event_id)) {
            (Some(status), Some(state)) if status != Some(RsvpStatus::Waitlisted) => {
                state
                    .rsvps
                    .entry(user)
                    .or_insert(status.map(|status| RsvpRow { status, seq: None }));
            }
            _ => pairs.push((Uuid::from(event_id), Uuid::from(user))),
        }
    }
    if pairs.is_empty() {
        return Ok(());
    }
    let rows: Vec<(Uuid, Uuid, String, Option<i64>)> = sqlx::query_as(
        "SELECT r.event_id, r.user_id, r.status::text, r.waitlist_seq FROM event_rsvps r
         JOIN UNNEST($1::uuid[], $2::uuid[]) AS q(event_id, user_id)
           ON r.event_id = q.event_id AND r.user_id = q.user_id",
    )
    .bind(pairs.iter().map(|p| p.0).collect::<Vec<_>>())
    .bind(pairs.iter().map(|p| p.1).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    for (event, user) in &pairs {
        if let Some(state) = batch.events.get_mut(&EventId::from(*event)) {
            state.rsvps.entry(UserId::from(*user)).or_insert(None);
        }
    }
    for (event, user, status, seq) in rows {
        if let (Some(state), Some(status)) = (
            batch.events.get_mut(&EventId::from(event)),
            parse_rsvp_status(&status),
        ) {
            state
                .rsvps
                .insert(UserId::from(user), Some(RsvpRow { status, seq }));
        }
    }
    Ok(())
}

async fn load_attendance(
    tx: &mut PgConnection,
    commands: &[Envelope],
    batch: &mut Batch<'_>,
) -> Result<(), sqlx::Error> {
    let pairs: Vec<(Uuid, Uuid)> = commands
        .iter()
        .filter_map(|c| match c.command {
            WriteCommand::MarkAttendance { event_id, user } => {
                Some((Uuid::from(event_id), Uuid::from(user)))
            }
            _ => None,
        })
        .collect();
    if pairs.is_empty() {
        return Ok(());
    }
    let rows: Vec<(Uuid, Uuid, Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT a.event_id, a.user_id, a.marked_by, a.marked_at FROM event_attendance a
         JOIN UNNEST($1::uuid[], $2::uuid[]) AS q(event_id, user_id)
           ON a.event_id = q.event_id AND a.user_id = q.user_id",
    )
    .bind(pairs.iter().map(|p| p.0).collect::<Vec<_>>())
    .bind(pairs.iter().map(|p| p.1).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    for (event, user) in &pairs {
        if let Some(state) = batch.events.get_mut(&EventId::from(*event)) {
            state.attendance.entry(UserId::from(*user)).or_insert(None);
        }
    }
    for (event, user, by, at) in rows {
        if let Some(state) = batch.events.get_mut(&EventId::from(event)) {
            state
                .attendance
                .insert(UserId::from(user), Some((UserId::from(by), at)));
        }
    }
    Ok(())
}

async fn apply(
    tx: &mut PgConnection,
    batch: &mut Batch<'_>,
    envelope: &Envelope,
    index: usize,
) -> Result<CommandResult, sqlx::Error> {
    let meta = &envelope.meta;
    let now = meta.now;
    match &envelope.command {
        WriteCommand::Create { event, .. } => {
            let event = (**event).clone();
            batch.outbox.push((published::created(&event), index));
            let counts = RsvpCounts::default();
            batch
                .events
                .insert(event.id, EventState::new(event.clone(), counts, true));
            Ok(Ok(WriteOutcome::Created { event, counts }))
        }
        WriteCommand::Update { event_id, patch } => {
            let Some(state) = batch.events.get_mut(event_id) else {
                return Ok(Err(AppError::NotFound));
            };
            let outcome = match state.event.apply_patch(patch, now, meta.actor) {
                Ok(o) => o,
                Err(e) => return Ok(Err(e.into())),
            };
            if !outcome.is_changed() {
                return Ok(Ok(WriteOutcome::Updated {
                    event: state.event.clone(),
                    counts: state.counts,
                    changed: false,
                }));
            }
            let old_capacity = state.event.seat_capacity();
            state.event = outcome.event;
            state.event_dirty = true;
            batch.outbox.push((
                published::updated(&state.event, &outcome.changed, meta.actor),
                index,
            ));
            let new_capacity = state.event.seat_capacity();
            if new_capacity != old_capacity {
                let seats = state.counts.seats(old_capacity);
                let promotions = promotions_after_capacity_change(&seats, new_capacity);
                promote(tx, batch, *event_id, promotions, now, index).await?;
            }
            let state = &batch.events[event_id];
            Ok(Ok(WriteOutcome::Updated {
                event: state.event.clone(),
                counts: state.counts,
                changed: true,
            }))
        }
        WriteCommand::Cancel { event_id, reason } => {
            let Some(state) = batch.events.get_mut(event_id) else {
                return Ok(Err(AppError::NotFound));
            };
            let outcome = state.event.cancel(reason.clone(), meta.actor, now);
            if !outcome.already_cancelled {
                state.event = outcome.event;
                state.event_dirty = true;
                batch
                    .outbox
                    .push((published::cancelled(&state.event), index));
            }
            Ok(Ok(WriteOutcome::Cancelled {
                event: state.event.clone(),
                counts: state.counts,
                already: outcome.already_cancelled,
            }))
        }
        WriteCommand::SetRsvp {
            event_id,
            requested,
        } => {
            let Some(state) = batch.events.get_mut(event_id) else {
                return Ok(Err(AppError::NotFound));
            };
            if state.event.is_cancelled() {
                return Ok(Err(DomainError::EventCancelled.into()));
            }
            let user = meta.actor;
            let current = state.rsvps.get(&user).copied().flatten();
            let decision = decide(
                current.map(|r| r.status),
                *requested,
                &state.counts.seats(state.event.seat_capacity()),
            );
            if !decision.changed {
                return Ok(Ok(WriteOutcome::Rsvp {
                    event: state.event.clone(),
                    counts: state.counts,
                    status: current.map(|r| r.status),
                    changed: false,
                }));
            }
            let new_row = decision
                .new_status
                .map(|status| RsvpRow { status, seq: None });
            state.set_rsvp(user, new_row);
            if decision.new_status == Some(RsvpStatus::Waitlisted) {
                state.new_waitlisters.push_back(user);
            }
            let reason = if requested.is_none() {
                RsvpChangeReason::Cleared
            } else {
                RsvpChangeReason::User
            };
            batch.outbox.push((
                published::rsvp_changed(
                    &state.event,
                    user,
                    decision.new_status,
                    current.map(|r| r.status),
                    reason,
                    now,
                ),
                index,
            ));
            promote(tx, batch, *event_id, decision.promotions, now, index).await?;
            let state = &batch.events[event_id];
            Ok(Ok(WriteOutcome::Rsvp {
                event: state.event.clone(),
                counts: state.counts,
                status: decision.new_status,
                changed: true,
            }))
        }
        WriteCommand::MarkAttendance { event_id, user } => {
            let Some(state) = batch.events.get_mut(event_id) else {
                return Ok(Err(AppError::NotFound));
            };
            if state.event.is_cancelled() {
                return Ok(Err(DomainError::EventCancelled.into()));
            }
            if let Some(Some((by, at))) = state.attendance.get(user) {
                return Ok(Ok(WriteOutcome::Attendance {
                    event: state.event.clone(),
                    user: *user,
                    marked_by: *by,
                    marked_at: *at,
                    newly: false,
                }));
            }
            state.attendance.insert(*user, Some((meta.actor, now)));
            state.new_attendance.push((*user, meta.actor, now));
            state.attended_delta += 1;
            state.counts_dirty = true;
            batch.outbox.push((
                published::attendance_marked(&state.event, *user, meta.actor, now),
                index,
            ));
            Ok(Ok(WriteOutcome::Attendance {
                event: state.event.clone(),
                user: *user,
                marked_by: meta.actor,
                marked_at: now,
                newly: true,
            }))
        }
    }
}

/// Moves the `count` earliest waitlisted users of an event to `going`.
async fn promote(
    tx: &mut PgConnection,
    batch: &mut Batch<'_>,
    event_id: EventId,
    count: u32,
    now: DateTime<Utc>,
    index: usize,
) -> Result<(), sqlx::Error> {
    if count == 0 {
        return Ok(());
    }
    let Some(state) = batch.events.get(&event_id) else {
        return Ok(());
    };
    // Rows waitlisted before this batch come first (their sequence numbers
    // are older than any drawn now); users this batch knows about are
    // judged by their in-memory state.
    let known = state.rsvps.len() as i64;
    let head: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT user_id, waitlist_seq FROM event_rsvps
         WHERE event_id = $1 AND status = 'waitlisted' ORDER BY waitlist_seq LIMIT $2",
    )
    .bind(Uuid::from(event_id))
    .bind(i64::from(count) + known)
    .fetch_all(&mut *tx)
    .await?;
    let mut chosen: Vec<(UserId, RsvpRow)> = Vec::new();
    for (user, seq) in head {
        if chosen.len() as u32 >= count {
            break;
        }
        let user = UserId::from(user);
        let still_waiting = match state.rsvps.get(&user) {
            None => true,
            Some(Some(row)) => row.status == RsvpStatus::Waitlisted && row.seq == Some(seq),
            Some(None) => false,
        };
        if still_waiting {
            chosen.push((
                user,
                RsvpRow {
                    status: RsvpStatus::Waitlisted,
                    seq: Some(seq),
                },
            ));
        }
    }
    for user in &state.new_waitlisters {
        if chosen.len() as u32 >= count {
            break;
        }
        chosen.push((
            *user,
            RsvpRow {
                status: RsvpStatus::Waitlisted,
                seq: None,
            },
        ));
    }
    let Some(state) = batch.events.get_mut(&event_id) else {
        return Ok(());
    };
    for (user, row) in chosen {
        // Make sure the counters see the user as waitlisted before moving them.
        state.rsvps.entry(user).or_insert(Some(row));
        state.set_rsvp(
            user,
            Some(RsvpRow {
                status: RsvpStatus::Going,
                seq: None,
            }),
        );
        batch.outbox.push((
            published::rsvp_changed(
                &state.event,
                user,
                Some(RsvpStatus::Going),
                Some(RsvpStatus::Waitlisted),
                RsvpChangeReason::Promoted,
                now,
            ),
            index,
        ));
    }
    Ok(())
}

async fn write(
    tx: &mut PgConnection,
    batch: &mut Batch<'_>,
    commands: &[Envelope],
) -> Result<BatchEffects, sqlx::Error> {
    let mut effects = BatchEffects::default();

    // Waitlist places for users who joined in this batch, in join order.
    let joiners: usize = batch.events.values().map(|s| s.new_waitlisters.len()).sum();
    if joiners > 0 {
        let mut seqs: Vec<i64> =
            sqlx::query_scalar("SELECT nextval('rsvp_waitlist_seq') FROM generate_series(1, $1)")
                .bind(joiners as i64)
                .fetch_all(&mut *tx)
                .await?;
        seqs.sort_unstable();
        let mut seqs = seqs.into_iter();
        let mut ids: Vec<EventId> = batch.events.keys().copied().collect();
        ids.sort();
        for id in ids {
            if let Some(state) = batch.events.get_mut(&id) {
                let joined: Vec<UserId> = state.new_waitlisters.iter().copied().collect();
                for user in joined {
                    if let (Some(Some(row)), Some(seq)) = (state.rsvps.get_mut(&user), seqs.next())
                    {
                        row.seq = Some(seq);
                    }
                }
            }
        }
    }

    let mut writes = Writes::default();
    insert_events(&mut writes, batch)?;
    update_events(&mut writes, batch)?;
    write_rsvps(&mut writes, batch)?;
    insert_attendance(&mut writes, batch)?;
    write_counters(&mut writes, batch)?;
    effects.outbox_rows = insert_outbox(&mut writes, batch, commands)?;
    writes.execute(tx).await?;

    effects.changed = batch
        .events
        .values()
        .filter(|s| s.event_dirty || s.counts_dirty)
        .map(|s| ChangedEvent {
            event: s.event.clone(),
            counts: s.counts,
            revision: if s.is_new { 0 } else { s.revision + 1 },
            is_new: s.is_new,
            rsvps: s
                .dirty_rsvps
                .iter()
                .map(|u| (*u, s.rsvps.get(u).copied().flatten().map(|r| r.status)))
                .collect(),
        })
        .collect();
    Ok(effects)
}

/// Every write of a batch as one statement of data-modifying CTEs: one
/// round trip instead of one per table. The sub-statements touch distinct
/// rows, and constraint checks run at the end of the statement, so the
/// order Postgres runs them in does not matter.
#[derive(Default)]
struct Writes {
    ctes: Vec<String>,
    args: sqlx::postgres::PgArguments,
    n: usize,
}

impl Writes {
    /// Binds a value; returns its placeholder.
    fn p<'t, T>(&mut self, value: T) -> Result<String, sqlx::Error>
    where
        T: sqlx::Encode<'t, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        use sqlx::Arguments;
        self.args.add(value).map_err(sqlx::Error::Encode)?;
        self.n += 1;
        Ok(format!("${}", self.n))
    }

    fn cte(&mut self, sql: String) {
        self.ctes.push(sql);
    }

    async fn execute(self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.ctes.is_empty() {
            return Ok(());
        }
        let parts: Vec<String> = self
            .ctes
            .iter()
            .enumerate()
            .map(|(i, c)| format!("w{i} AS ({c})"))
            .collect();
        let sql = format!("WITH {} SELECT 1", parts.join(", "));
        sqlx::query_with(sqlx::AssertSqlSafe(sql), self.args)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

fn insert_events(w: &mut Writes, batch: &Batch<'_>) -> Result<(), sqlx::Error> {
    let new: Vec<&Event> = batch
        .events
        .values()
        .filter(|s| s.is_new)
        .map(|s| &s.event)
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    let c = EventColumns::of(&new);
    let sql = format!(
        "INSERT INTO events (id, tenant_id, scope_type, scope_id, title, description, starts_at, ends_at,
                             location_text, location_url, game_id, visibility, status, capacity, created_by,
                             created_at, updated_at, version)
         SELECT id, tenant_id, scope_type::scope_type, scope_id, title, description, starts_at, ends_at,
                location_text, location_url, game_id, visibility::event_visibility, status::event_status,
                capacity, created_by, created_at, updated_at, version
         FROM UNNEST({}::uuid[], {}::uuid[], {}::text[], {}::text[], {}::text[], {}::text[], {}::timestamptz[],
                     {}::timestamptz[], {}::text[], {}::text[], {}::text[], {}::text[], {}::text[], {}::int[],
                     {}::uuid[], {}::timestamptz[], {}::timestamptz[], {}::bigint[])
           AS u(id, tenant_id, scope_type, scope_id, title, description, starts_at, ends_at, location_text,
                location_url, game_id, visibility, status, capacity, created_by, created_at, updated_at, version)",
        w.p(&c.id)?,
        w.p(&c.tenant_id)?,
        w.p(&c.scope_type)?,
        w.p(&c.scope_id)?,
        w.p(&c.title)?,
        w.p(&c.description)?,
        w.p(&c.starts_at)?,
        w.p(&c.ends_at)?,
        w.p(&c.location_text)?,
        w.p(&c.location_url)?,
        w.p(&c.game_id)?,
        w.p(&c.visibility)?,
        w.p(&c.status)?,
        w.p(&c.capacity)?,
        w.p(&c.created_by)?,
        w.p(&c.created_at)?,
        w.p(&c.updated_at)?,
        w.p(&c.version)?,
    );
    w.cte(sql);
    let sql = format!(
        "INSERT INTO event_counters (event_id, tenant_id) SELECT * FROM UNNEST({}::uuid[], {}::uuid[])",
        w.p(&c.id)?,
        w.p(&c.tenant_id)?,
    );
    w.cte(sql);
    Ok(())
}

fn update_events(w: &mut Writes, batch: &Batch<'_>) -> Result<(), sqlx::Error> {
    let changed: Vec<&Event> = batch
        .events
        .values()
        .filter(|s| !s.is_new && s.event_dirty)
        .map(|s| &s.event)
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let c = EventColumns::of(&changed);
    let cancelled_at: Vec<Option<DateTime<Utc>>> = changed.iter().map(|e| e.cancelled_at).collect();
    let cancelled_by: Vec<Option<Uuid>> = changed
        .iter()
        .map(|e| e.cancelled_by.map(Uuid::from))
        .collect();
    let cancel_reason: Vec<Option<String>> = changed
        .iter()
        .map(|e| e.cancel_reason.as_ref().map(|r| r.as_str().to_string()))
        .collect();
    let sql = format!(
        "UPDATE events e SET title = u.title, description = u.description, starts_at = u.starts_at,
                ends_at = u.ends_at, location_text = u.location_text, location_url = u.location_url,
                game_id = u.game_id, visibility = u.visibility::event_visibility, status = u.status::event_status,
                capacity = u.capacity, updated_at = u.updated_at, version = u.version,
                cancelled_at = u.cancelled_at, cancelled_by = u.cancelled_by, cancel_reason = u.cancel_reason
         FROM UNNEST({}::uuid[], {}::text[], {}::text[], {}::timestamptz[], {}::timestamptz[], {}::text[],
                     {}::text[], {}::text[], {}::text[], {}::text[], {}::int[], {}::timestamptz[], {}::bigint[],
                     {}::timestamptz[], {}::uuid[], {}::text[])
           AS u(id, title, description, starts_at, ends_at, location_text, location_url, game_id, visibility,
                status, capacity, updated_at, version, cancelled_at, cancelled_by, cancel_reason)
         WHERE e.id = u.id",
        w.p(&c.id)?,
        w.p(&c.title)?,
        w.p(&c.description)?,
        w.p(&c.starts_at)?,
        w.p(&c.ends_at)?,
        w.p(&c.location_text)?,
        w.p(&c.location_url)?,
        w.p(&c.game_id)?,
        w.p(&c.visibility)?,
        w.p(&c.status)?,
        w.p(&c.capacity)?,
        w.p(&c.updated_at)?,
        w.p(&c.version)?,
        w.p(&cancelled_at)?,
        w.p(&cancelled_by)?,
        w.p(&cancel_reason)?,
    );
    w.cte(sql);
    Ok(())
}

/// Column vectors of RSVP rows, for UNNEST.
#[derive(Default)]
struct RsvpColumns {
    event: Vec<Uuid>,
    user: Vec<Uuid>,
    tenant: Vec<Uuid>,
    status: Vec<&'static str>,
    seq: Vec<Option<i64>>,
}

/// Column vectors of attendance rows, for UNNEST.
#[derive(Default)]
struct AttendanceColumns {
    event: Vec<Uuid>,
    user: Vec<Uuid>,
    tenant: Vec<Uuid>,
    marked_by: Vec<Uuid>,
    marked_at: Vec<DateTime<Utc>>,
}

fn write_rsvps(w: &mut Writes, batch: &Batch<'_>) -> Result<(), sqlx::Error> {
    let mut upsert = RsvpColumns::default();
    let mut delete: (Vec<Uuid>, Vec<Uuid>) = Default::default();
    for state in batch.events.values() {
        for user in &state.dirty_rsvps {
            match state.rsvps.get(user).copied().flatten() {
                Some(row) => {
                    upsert.event.push(Uuid::from(state.event.id));
                    upsert.user.push(Uuid::from(*user));
                    upsert.tenant.push(Uuid::from(state.event.tenant_id));
                    upsert.status.push(row.status.as_str());
                    upsert.seq.push(row.seq);
                }
                None => {
                    delete.0.push(Uuid::from(state.event.id));
                    delete.1.push(Uuid::from(*user));
                }
            }
        }
    }
    if !upsert.event.is_empty() {
        let sql = format!(
            "INSERT INTO event_rsvps (event_id, user_id, tenant_id, status, waitlist_seq, created_at, updated_at)
             SELECT e, u, t, s::rsvp_status, q, now(), now()
             FROM UNNEST({}::uuid[], {}::uuid[], {}::uuid[], {}::text[], {}::bigint[]) AS x(e, u, t, s, q)
             ON CONFLICT (event_id, user_id) DO UPDATE
                 SET status = EXCLUDED.status, waitlist_seq = EXCLUDED.waitlist_seq, updated_at = now()",
            w.p(upsert.event)?,
            w.p(upsert.user)?,
            w.p(upsert.tenant)?,
            w.p(upsert.status)?,
            w.p(upsert.seq)?,
        );
        w.cte(sql);
    }
    if !delete.0.is_empty() {
        let sql = format!(
            "DELETE FROM event_rsvps r USING UNNEST({}::uuid[], {}::uuid[]) AS x(e, u)
             WHERE r.event_id = x.e AND r.user_id = x.u",
            w.p(delete.0)?,
            w.p(delete.1)?,
        );
        w.cte(sql);
    }
    Ok(())
}

fn insert_attendance(w: &mut Writes, batch: &Batch<'_>) -> Result<(), sqlx::Error> {
    let mut cols = AttendanceColumns::default();
    for state in batch.events.values() {
        for (user, by, at) in &state.new_attendance {
            cols.event.push(Uuid::from(state.event.id));
            cols.user.push(Uuid::from(*user));
            cols.tenant.push(Uuid::from(state.event.tenant_id));
            cols.marked_by.push(Uuid::from(*by));
            cols.marked_at.push(*at);
        }
    }
    if cols.event.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO event_attendance (event_id, user_id, tenant_id, marked_by, marked_at)
         SELECT * FROM UNNEST({}::uuid[], {}::uuid[], {}::uuid[], {}::uuid[], {}::timestamptz[])",
        w.p(cols.event)?,
        w.p(cols.user)?,
        w.p(cols.tenant)?,
        w.p(cols.marked_by)?,
        w.p(cols.marked_at)?,
    );
    w.cte(sql);
    Ok(())
}

fn write_counters(w: &mut Writes, batch: &Batch<'_>) -> Result<(), sqlx::Error> {
    let dirty: Vec<&EventState> = batch
        .events
        .values()
        .filter(|s| (s.counts_dirty || s.event_dirty) && !s.is_new)
        .collect();
    if dirty.is_empty() {
        return Ok(());
    }
    let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let sql = format!(
        "UPDATE event_counters c SET interested = u.i, going = u.g, not_going = u.n, waitlisted = u.w,
                attended = c.attended + u.a, revision = c.revision + 1, updated_at = now()
         FROM UNNEST({}::uuid[], {}::int[], {}::int[], {}::int[], {}::int[], {}::int[]) AS u(id, i, g, n, w, a)
         WHERE c.event_id = u.id",
        w.p(dirty.iter().map(|s| Uuid::from(s.event.id)).collect::<Vec<_>>())?,
        w.p(dirty.iter().map(|s| n(s.counts.interested)).collect::<Vec<_>>())?,
        w.p(dirty.iter().map(|s| n(s.counts.going)).collect::<Vec<_>>())?,
        w.p(dirty.iter().map(|s| n(s.counts.not_going)).collect::<Vec<_>>())?,
        w.p(dirty.iter().map(|s| n(s.counts.waitlisted)).collect::<Vec<_>>())?,
        w.p(dirty.iter().map(|s| s.attended_delta).collect::<Vec<_>>())?,
    );
    w.cte(sql);
    Ok(())
}

fn insert_outbox(
    w: &mut Writes,
    batch: &mut Batch<'_>,
    commands: &[Envelope],
) -> Result<usize, sqlx::Error> {
    if batch.outbox.is_empty() {
        return Ok(0);
    }
    let rows = std::mem::take(&mut batch.outbox);
    let ids: Vec<Uuid> = rows.iter().map(|_| Uuid::new_v4()).collect();
    let tenants: Vec<Uuid> = rows.iter().map(|(p, _)| Uuid::from(p.tenant_id)).collect();
    let events: Vec<Uuid> = rows.iter().map(|(p, _)| Uuid::from(p.event_id)).collect();
    let types: Vec<&str> = rows.iter().map(|(p, _)| p.event_type).collect();
    let subjects: Vec<String> = rows
        .iter()
        .map(|(p, _)| {
            batch
                .subjects
                .domain_event(&Uuid::from(p.tenant_id), p.event_type)
        })
        .collect();
    let payloads: Vec<Value> = rows.iter().map(|(p, _)| p.data.clone()).collect();
    let traceparents: Vec<Option<String>> = rows
        .iter()
        .map(|(_, i)| commands.get(*i).and_then(|c| c.meta.traceparent.clone()))
        .collect();
    let tracestates: Vec<Option<String>> = rows
        .iter()
        .map(|(_, i)| commands.get(*i).and_then(|c| c.meta.tracestate.clone()))
        .collect();
    let occurred: Vec<DateTime<Utc>> = rows.iter().map(|(p, _)| p.occurred_at).collect();
    // WITH ORDINALITY keeps the insertion order, so `seq` follows the order
    // in which this batch decided the changes.
    let sql = format!(
        "INSERT INTO outbox (id, tenant_id, event_id, event_type, subject, payload, traceparent, tracestate, occurred_at)
         SELECT id, t, e, ty, s, p, tp, ts, o
         FROM UNNEST({}::uuid[], {}::uuid[], {}::uuid[], {}::text[], {}::text[], {}::jsonb[], {}::text[], {}::text[],
                     {}::timestamptz[]) WITH ORDINALITY AS x(id, t, e, ty, s, p, tp, ts, o, n)
         ORDER BY n",
        w.p(ids)?,
        w.p(tenants)?,
        w.p(events)?,
        w.p(types)?,
        w.p(subjects)?,
        w.p(payloads)?,
        w.p(traceparents)?,
        w.p(tracestates)?,
        w.p(occurred)?,
    );
    w.cte(sql);
    Ok(rows.len())
}

/// Column vectors of events, for UNNEST statements.
struct EventColumns {
    id: Vec<Uuid>,
    tenant_id: Vec<Uuid>,
    scope_type: Vec<&'static str>,
    scope_id: Vec<String>,
    title: Vec<String>,
    description: Vec<String>,
    starts_at: Vec<DateTime<Utc>>,
    ends_at: Vec<DateTime<Utc>>,
    location_text: Vec<String>,
    location_url: Vec<Option<String>>,
    game_id: Vec<Option<String>>,
    visibility: Vec<&'static str>,
    status: Vec<&'static str>,
    capacity: Vec<Option<i32>>,
    created_by: Vec<Uuid>,
    created_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
    version: Vec<i64>,
}

impl EventColumns {
    fn of(events: &[&Event]) -> Self {
        Self {
            id: events.iter().map(|e| Uuid::from(e.id)).collect(),
            tenant_id: events.iter().map(|e| Uuid::from(e.tenant_id)).collect(),
            scope_type: events.iter().map(|e| e.scope_type().as_str()).collect(),
            scope_id: events
                .iter()
                .map(|e| e.scope_id().as_str().to_string())
                .collect(),
            title: events
                .iter()
                .map(|e| e.title.as_str().to_string())
                .collect(),
            description: events
                .iter()
                .map(|e| e.description.as_str().to_string())
                .collect(),
            starts_at: events.iter().map(|e| e.starts_at).collect(),
            ends_at: events.iter().map(|e| e.ends_at).collect(),
            location_text: events
                .iter()
                .map(|e| e.location_text.as_str().to_string())
                .collect(),
            location_url: events
                .iter()
                .map(|e| e.location_url.as_ref().map(|u| u.as_str().to_string()))
                .collect(),
            game_id: events
                .iter()
                .map(|e| e.game_id.as_ref().map(|g| g.as_str().to_string()))
                .collect(),
            visibility: events.iter().map(|e| e.visibility.as_str()).collect(),
            status: events.iter().map(|e| e.status.as_str()).collect(),
            capacity: events
                .iter()
                .map(|e| {
                    e.seat_capacity()
                        .map(|c| i32::try_from(c).unwrap_or(i32::MAX))
                })
                .collect(),
            created_by: events.iter().map(|e| Uuid::from(e.created_by)).collect(),
            created_at: events.iter().map(|e| e.created_at).collect(),
            updated_at: events.iter().map(|e| e.updated_at).collect(),
            version: events.iter().map(|e| e.version).collect(),
        }
    }
}
