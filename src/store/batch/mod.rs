//! Group commit: a batch of write commands applied in one transaction.
//!
//! Postgres is the source of truth, so a batch decides on nothing it has
//! not seen under its locks: it locks the counter rows of every event it
//! touches (in id order, so two batches cannot deadlock), loads what the
//! commands can need ([`load`]), lets the domain decide every command in
//! memory ([`crate::domain::commands::decide`]), and writes what the
//! decision asks for with one set-based statement, outbox rows included
//! ([`write`]). Several instances can run batches for the same scope at
//! once; the counter locks serialise their seat decisions, so capacity is
//! never exceeded.

pub(crate) mod claims;
pub(crate) mod load;
pub(crate) mod write;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

use crate::domain::commands::{self, Command, CommandKind, Outcome, Refusal, Verdict};
use crate::domain::{
    CancelReason, Event, EventId, EventPatch, RequestedRsvp, RsvpCounts, RsvpStatus, TenantId,
    UserId,
};
use crate::error::AppError;
use crate::names::Subjects;

/// What a write command needs besides its own fields.
#[derive(Debug, Clone)]
pub struct CommandMeta {
    pub tenant: TenantId,
    pub actor: UserId,
    pub request_id: String,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// The `X-Tenant-Slug` of the request, carried into every domain event
    /// it causes (`data.tenant_slug`).
    pub tenant_slug: Option<String>,
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
    /// `None` clears the actor's RSVP; `guests` go with `going`.
    SetRsvp {
        event_id: EventId,
        requested: Option<RequestedRsvp>,
        guests: u32,
    },
    /// A manager approves (or declines) these users' RSVPs.
    Review {
        event_id: EventId,
        users: Vec<UserId>,
        approve: bool,
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
            | WriteCommand::Review { event_id, .. }
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
        guests: u32,
        changed: bool,
    },
    Reviewed {
        event: Event,
        counts: RsvpCounts,
        results: Vec<commands::Reviewed>,
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

/// What the scope actor already knows of an event: if the revision read
/// under the lock is this one, nothing changed since, and the event (and
/// the RSVPs, when the map is there) need not be read again.
#[derive(Debug, Clone)]
pub struct Known {
    pub event: std::sync::Arc<Event>,
    /// Every RSVP of the event, when the actor holds them all.
    pub rsvps: Option<std::sync::Arc<crate::actors::RsvpMap>>,
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

    claims::refuse_replays(&mut tx, commands, &mut results).await?;
    claims::claim_idempotency_keys(&mut tx, commands, &mut results).await?;

    // The commands left to decide, by their index in `commands`.
    let pending: Vec<usize> = (0..commands.len())
        .filter(|i| results[*i].is_none())
        .collect();
    let decided: Vec<Command> = pending.iter().map(|i| command(&commands[*i])).collect();
    let loaded = match commands.first() {
        Some(first) => load::for_batch(&mut tx, first.meta.tenant, &decided, known).await?,
        None => load::Loaded::default(),
    };
    let decision = commands::decide(loaded.locked, &decided);
    for (i, verdict) in pending.iter().zip(decision.outcomes) {
        results[*i] = Some(result(verdict));
    }

    let trace = |decided: usize| {
        let meta = pending
            .get(decided)
            .and_then(|i| commands.get(*i))
            .map(|c| &c.meta);
        write::Trace {
            parent: meta.and_then(|m| m.traceparent.as_deref()),
            state: meta.and_then(|m| m.tracestate.as_deref()),
            tenant_slug: meta.and_then(|m| m.tenant_slug.as_deref()),
        }
    };
    let now = commands.first().map_or_else(Utc::now, |c| c.meta.now);
    let effects = write::batch(
        &mut tx,
        subjects,
        decision.events,
        &decision.published,
        trace,
        &loaded.revisions,
        now,
    )
    .await?;
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

/// Decides `commands` of one tenant like every other write (locks, the
/// decide step, the same writers) and writes what they change, but no
/// outbox rows: for history brought over from another system, which
/// happened before this service and publishes nothing of its own.
pub async fn apply_history(
    tx: &mut sqlx::PgConnection,
    subjects: &Subjects,
    tenant: TenantId,
    commands: &[Command],
) -> Result<(Vec<Verdict>, BatchEffects), sqlx::Error> {
    let loaded = load::for_batch(tx, tenant, commands, &HashMap::new()).await?;
    let decision = commands::decide(loaded.locked, commands);
    let effects = write::batch(
        tx,
        subjects,
        decision.events,
        &[],
        |_| write::Trace::default(),
        &loaded.revisions,
        Utc::now(),
    )
    .await?;
    Ok((decision.outcomes, effects))
}

/// The trace context and tenant slug an import's outbox rows carry.
#[derive(Debug, Clone, Default)]
pub struct ImportTrace {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub tenant_slug: Option<String>,
    /// The service's time of the import (reminders already past are not
    /// scheduled).
    pub now: DateTime<Utc>,
}

/// Decides `commands` of one tenant like every other write (locks, the
/// decide step, the same writers) inside the caller's transaction, outbox
/// rows included: for `event.import`, whose commands come from a calendar
/// rather than from one request each, and which records its keys in the
/// same transaction.
pub async fn apply_imported(
    tx: &mut sqlx::PgConnection,
    subjects: &Subjects,
    tenant: TenantId,
    commands: &[Command],
    trace: &ImportTrace,
) -> Result<(Vec<Verdict>, BatchEffects), sqlx::Error> {
    let loaded = load::for_batch(tx, tenant, commands, &HashMap::new()).await?;
    let decision = commands::decide(loaded.locked, commands);
    let effects = write::batch(
        tx,
        subjects,
        decision.events,
        &decision.published,
        |_| write::Trace {
            parent: trace.traceparent.as_deref(),
            state: trace.tracestate.as_deref(),
            tenant_slug: trace.tenant_slug.as_deref(),
        },
        &loaded.revisions,
        trace.now,
    )
    .await?;
    Ok((decision.outcomes, effects))
}

/// The domain's view of a request's command.
fn command(envelope: &Envelope) -> Command {
    let meta = &envelope.meta;
    let kind = match &envelope.command {
        WriteCommand::Create { event, .. } => CommandKind::Create {
            event: event.clone(),
        },
        WriteCommand::Update { event_id, patch } => CommandKind::Update {
            event_id: *event_id,
            patch: patch.clone(),
        },
        WriteCommand::Cancel { event_id, reason } => CommandKind::Cancel {
            event_id: *event_id,
            reason: reason.clone(),
        },
        WriteCommand::SetRsvp {
            event_id,
            requested,
            guests,
        } => CommandKind::SetRsvp {
            event_id: *event_id,
            user: meta.actor,
            requested: *requested,
            guests: *guests,
            window: true,
        },
        WriteCommand::Review {
            event_id,
            users,
            approve,
        } => CommandKind::Review {
            event_id: *event_id,
            users: users.clone(),
            approve: *approve,
        },
        WriteCommand::MarkAttendance { event_id, user } => CommandKind::MarkAttendance {
            event_id: *event_id,
            user: *user,
        },
    };
    Command {
        actor: meta.actor,
        at: meta.now,
        kind,
    }
}

/// A decided command's answer to the request.
fn result(verdict: Verdict) -> CommandResult {
    match verdict {
        Ok(Outcome::Created { event, counts }) => Ok(WriteOutcome::Created { event, counts }),
        Ok(Outcome::Updated {
            event,
            counts,
            changed,
        }) => Ok(WriteOutcome::Updated {
            event,
            counts,
            changed,
        }),
        Ok(Outcome::Cancelled {
            event,
            counts,
            already,
        }) => Ok(WriteOutcome::Cancelled {
            event,
            counts,
            already,
        }),
        Ok(Outcome::Rsvp {
            event,
            counts,
            status,
            guests,
            changed,
        }) => Ok(WriteOutcome::Rsvp {
            event,
            counts,
            status,
            guests,
            changed,
        }),
        Ok(Outcome::Reviewed {
            event,
            counts,
            results,
        }) => Ok(WriteOutcome::Reviewed {
            event,
            counts,
            results,
        }),
        Ok(Outcome::Attendance {
            event,
            user,
            marked_by,
            marked_at,
            newly,
        }) => Ok(WriteOutcome::Attendance {
            event,
            user,
            marked_by,
            marked_at,
            newly,
        }),
        Ok(Outcome::Erased { .. }) => Err(AppError::internal(
            "batch",
            "an erase outcome for a request command",
        )),
        Err(Refusal::NotFound) => Err(AppError::NotFound),
        Err(Refusal::Domain(e)) => Err(e.into()),
    }
}
