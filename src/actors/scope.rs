//! The scope actor: one per (tenant, scope type, scope id). It owns the warm
//! state of that scope's events and serialises their writes, committing
//! whatever arrived while the previous transaction ran as one batch.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::Instrument;

use crate::actors::listing::Listed;
use crate::actors::registry::Shared;
use crate::actors::{ScopeKey, Snapshot};
use crate::domain::EventId;
use crate::error::AppError;
use crate::store::batch::{self, BatchEffects, CommandResult, Envelope};

pub enum ScopeMsg {
    Write(Box<Envelope>, RpcReplyPort<CommandResult>),
    /// The cached state of one event, loading it on a miss.
    Get(EventId, RpcReplyPort<Result<Option<Snapshot>, AppError>>),
    /// A snapshot read elsewhere (warms the cache unless it is older).
    Prime(Box<Snapshot>, u64),
    Flush,
    Committed(Box<Committed>),
    Loaded {
        id: EventId,
        result: Box<Result<Option<Snapshot>, AppError>>,
        generation: u64,
    },
    /// Another instance changed these events: forget them.
    Invalidate(Vec<EventId>),
    /// Idle: stop once nothing is queued or in flight.
    Passivate,
    /// Sent to itself on `Passivate`, so it queues behind the requests that
    /// found this actor just before the registry forgot it: from here on
    /// the actor stops as soon as it is idle (no write or load running).
    Retire,
}

pub struct Committed {
    replies: Vec<RpcReplyPort<CommandResult>>,
    results: Vec<CommandResult>,
    effects: BatchEffects,
    size: usize,
}

pub struct ScopeActor;

type GetReply = RpcReplyPort<Result<Option<Snapshot>, AppError>>;

pub struct ScopeArgs {
    pub key: ScopeKey,
    pub shared: Arc<Shared>,
    pub cache: Arc<ScopeCache>,
}

struct CacheEntry {
    snapshot: Snapshot,
    at: Instant,
}

/// The events a scope actor has cached. Only the actor fills it (in the
/// order of its commits), but reads of a fresh entry take it directly: a
/// `get` of a hot event is a map look-up, not a trip through the mailbox.
#[derive(Default)]
pub struct ScopeCache {
    entries: RwLock<HashMap<EventId, CacheEntry>>,
}

impl ScopeCache {
    /// The cached snapshot of an event, if it is younger than `ttl`.
    pub fn fresh(&self, id: &EventId, ttl: Duration) -> Option<Snapshot> {
        self.read()
            .get(id)
            .filter(|entry| entry.at.elapsed() < ttl)
            .map(|entry| entry.snapshot.clone())
    }

    /// Drops events changed elsewhere, before the actor hears of it.
    pub fn forget(&self, ids: &[EventId]) {
        let mut entries = self.write();
        for id in ids {
            entries.remove(id);
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<EventId, CacheEntry>> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<EventId, CacheEntry>> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }
}

pub struct ScopeState {
    key: ScopeKey,
    shared: Arc<Shared>,
    pending: Vec<(Envelope, RpcReplyPort<CommandResult>)>,
    /// Group commits running now (at most `max_in_flight_batches`).
    in_flight: usize,
    flush_scheduled: bool,
    passivating: bool,
    cache: Arc<ScopeCache>,
    loading: HashMap<EventId, Vec<GetReply>>,
    /// Per event, how many changes other instances announced: a load that
    /// started before one of them must not fill the cache.
    remote_changes: HashMap<EventId, u64>,
}

impl Actor for ScopeActor {
    type Msg = ScopeMsg;
    type State = ScopeState;
    type Arguments = ScopeArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ScopeMsg>,
        args: ScopeArgs,
    ) -> Result<ScopeState, ActorProcessingErr> {
        Ok(ScopeState {
            key: args.key,
            shared: args.shared,
            pending: Vec::new(),
            in_flight: 0,
            flush_scheduled: false,
            passivating: false,
            cache: args.cache,
            loading: HashMap::new(),
            remote_changes: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ScopeMsg>,
        msg: ScopeMsg,
        state: &mut ScopeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ScopeMsg::Write(envelope, reply) => {
                state.pending.push((*envelope, reply));
                if state.in_flight < state.shared.config.max_in_flight_batches
                    && !state.flush_scheduled
                {
                    // The flush is queued behind everything already in the
                    // mailbox, so those writes join this batch.
                    state.flush_scheduled = true;
                    let _ = myself.send_message(ScopeMsg::Flush);
                }
            }
            ScopeMsg::Flush => {
                state.flush_scheduled = false;
                start_commit(&myself, state);
            }
            ScopeMsg::Committed(done) => {
                state.in_flight = state.in_flight.saturating_sub(1);
                finish_commit(state, *done);
                if !state.pending.is_empty() {
                    start_commit(&myself, state);
                } else {
                    stop_if_retired(&myself, state);
                }
            }
            ScopeMsg::Get(id, reply) => get(&myself, state, id, reply),
            ScopeMsg::Prime(snapshot, _) => {
                if !state.remote_changes.contains_key(&snapshot.event.id) {
                    offer(state, *snapshot);
                }
            }
            ScopeMsg::Loaded {
                id,
                result,
                generation,
            } => {
                let waiters = state.loading.remove(&id).unwrap_or_default();
                // A change made by another instance while this load ran
                // could be missing from it; local commits are ordered by revision.
                let remote = state.remote_changes.get(&id).copied().unwrap_or(0);
                if let Ok(Some(snapshot)) = result.as_ref()
                    && generation == remote
                {
                    offer(state, snapshot.clone());
                }
                for waiter in waiters {
                    let answer = match result.as_ref() {
                        Ok(v) => Ok(v.clone()),
                        Err(e) => Err(e.for_another_caller("load")),
                    };
                    let _ = waiter.send(answer);
                }
                stop_if_retired(&myself, state);
            }
            ScopeMsg::Invalidate(ids) => {
                if state.remote_changes.len() > 100_000 {
                    state.remote_changes.clear();
                }
                state.cache.forget(&ids);
                for id in ids {
                    *state.remote_changes.entry(id).or_insert(0) += 1;
                }
            }
            ScopeMsg::Passivate => {
                // Stopping now would drop whatever is queued behind this
                // message (its callers would get no answer).
                let _ = myself.send_message(ScopeMsg::Retire);
            }
            ScopeMsg::Retire => {
                state.passivating = true;
                stop_if_retired(&myself, state);
            }
        }
        Ok(())
    }
}

/// Stops a retiring actor once no write, commit or load is outstanding.
fn stop_if_retired(myself: &ActorRef<ScopeMsg>, state: &ScopeState) {
    if state.passivating
        && state.in_flight == 0
        && !state.flush_scheduled
        && state.pending.is_empty()
        && state.loading.is_empty()
    {
        myself.stop(Some("passivated".into()));
    }
}

/// Caches a snapshot unless a newer one is cached; at equal revisions the
/// one carrying the RSVP map wins.
fn offer(state: &mut ScopeState, snapshot: Snapshot) {
    let keep = state.cache.read().get(&snapshot.event.id).is_some_and(|c| {
        c.snapshot.revision > snapshot.revision
            || (c.snapshot.revision == snapshot.revision && snapshot.rsvps.is_none())
    });
    if !keep {
        insert(state, snapshot);
    }
}

fn insert(state: &mut ScopeState, snapshot: Snapshot) {
    let limit = state.shared.config.max_cached_events_per_scope;
    let mut cache = state.cache.write();
    if cache.len() >= limit && !cache.contains_key(&snapshot.event.id) {
        // Drop the stalest entry; scopes rarely hold this many hot events.
        if let Some(oldest) = cache.iter().min_by_key(|(_, c)| c.at).map(|(id, _)| *id) {
            cache.remove(&oldest);
        }
    }
    cache.insert(
        snapshot.event.id,
        CacheEntry {
            snapshot,
            at: Instant::now(),
        },
    );
}

fn get(myself: &ActorRef<ScopeMsg>, state: &mut ScopeState, id: EventId, reply: GetReply) {
    if let Some(snapshot) = state.cache.fresh(&id, state.shared.config.cache_ttl) {
        let _ = reply.send(Ok(Some(snapshot)));
        return;
    }
    if let Some(waiters) = state.loading.get_mut(&id) {
        waiters.push(reply);
        return;
    }
    state.loading.insert(id, vec![reply]);
    let db = state.shared.db.clone();
    let tenant = state.key.tenant;
    let generation = state.remote_changes.get(&id).copied().unwrap_or(0);
    let budget = state.shared.rsvp_budget.clone();
    let me = myself.clone();
    tokio::spawn(async move {
        let result = crate::store::reads::event(&db, tenant, id)
            .await
            .map(|found| {
                found.map(|(event, counts, revision)| {
                    let mut snapshot = Snapshot::new(event, counts);
                    snapshot.revision = revision;
                    snapshot
                })
            });
        // The RSVPs go with the event, so reads need no query for `myRsvp`;
        // except for an event another instance changes: each of its changes
        // drops the entry here, and reading every RSVP again after each
        // would cost a write elsewhere O(RSVPs) on this instance. Without
        // the map, reads and commits look up only the users they concern.
        let result = match result {
            Ok(Some(mut snapshot)) if generation == 0 => {
                match crate::store::reads::all_rsvps(&db, id, crate::actors::MAX_CACHED_RSVPS).await
                {
                    Ok(map) => {
                        snapshot.rsvps = map
                            .and_then(|m| crate::actors::RsvpMap::new(m, &budget))
                            .map(Arc::new);
                    }
                    Err(e) => tracing::debug!(error = %e, "RSVPs not cached"),
                }
                Ok(Some(snapshot))
            }
            other => other,
        };
        let _ = me.send_message(ScopeMsg::Loaded {
            id,
            result: Box::new(result),
            generation,
        });
    });
}

fn start_commit(myself: &ActorRef<ScopeMsg>, state: &mut ScopeState) {
    if state.in_flight >= state.shared.config.max_in_flight_batches || state.pending.is_empty() {
        return;
    }
    let take = state.pending.len().min(state.shared.config.max_batch);
    let (envelopes, replies): (Vec<Envelope>, Vec<RpcReplyPort<CommandResult>>) =
        state.pending.drain(..take).unzip();
    state.in_flight += 1;
    // What the cache knows of the touched events, so the batch reads only
    // what changed since (it compares revisions under the lock).
    let cache = state.cache.read();
    let known: HashMap<EventId, batch::Known> = envelopes
        .iter()
        .filter_map(|e| e.command.target())
        .filter_map(|id| {
            cache.get(&id).map(|c| {
                (
                    id,
                    batch::Known {
                        event: c.snapshot.event.clone(),
                        rsvps: c.snapshot.rsvps.clone(),
                        revision: c.snapshot.revision,
                    },
                )
            })
        })
        .collect();
    drop(cache);
    let shared = state.shared.clone();
    let tenant = state.key.tenant;
    let me = myself.clone();
    tokio::spawn(async move {
        let size = envelopes.len();
        let worker = tokio::spawn(commit(shared.clone(), envelopes, known));
        let (results, effects) = match worker.await {
            Ok(done) => done,
            Err(e) => {
                // A panic while committing: every caller still gets an answer.
                tracing::error!(error = %e, "commit task failed");
                let results = (0..size)
                    .map(|_| Err(AppError::internal("commit", "the commit task failed")))
                    .collect();
                (results, BatchEffects::default())
            }
        };
        let done = Committed {
            replies,
            results,
            effects,
            size,
        };
        // If the actor is gone, answer the callers from here.
        if let Err(ractor::MessagingErr::SendErr(ScopeMsg::Committed(done))) =
            me.send_message(ScopeMsg::Committed(Box::new(done)))
        {
            let Committed {
                replies,
                results,
                effects,
                ..
            } = *done;
            // Nobody applies these changes to the list read model now.
            if !effects.changed.is_empty() {
                shared.listing.forget(tenant);
            }
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
    });
}

/// The span of one group commit: a child of the first command's trace,
/// linked to the others' (one transaction serves several requests).
fn commit_span(envelopes: &[Envelope]) -> tracing::Span {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let span = tracing::info_span!(
        "scope.commit",
        otel.name = "scope.commit",
        db.system = "postgresql",
        batch.size = envelopes.len()
    );
    let mut parented = false;
    for envelope in envelopes {
        let Some(tp) = envelope.meta.traceparent.as_deref() else {
            continue;
        };
        let cx = crate::telemetry::trace::extract(tp, envelope.meta.tracestate.as_deref());
        if parented {
            span.add_link(cx.span().span_context().clone());
        } else {
            let _ = span.set_parent(cx);
            parented = true;
        }
    }
    span
}

/// Runs one batch; if the transaction fails, runs each command alone so
/// one bad command cannot fail the others.
async fn commit(
    shared: Arc<Shared>,
    envelopes: Vec<Envelope>,
    known: HashMap<EventId, batch::Known>,
) -> (Vec<CommandResult>, BatchEffects) {
    let started = Instant::now();
    let span = commit_span(&envelopes);
    match batch::execute(&shared.db, &shared.subjects, &envelopes, &known)
        .instrument(span)
        .await
    {
        Ok(done) => {
            shared.observe_batch(envelopes.len(), started.elapsed());
            done
        }
        // With Postgres unreachable, each command alone would fail the same
        // way, one connection timeout after the other.
        Err(e) if envelopes.len() > 1 && !crate::error::unreachable(&e) => {
            tracing::warn!(error = %e, size = envelopes.len(), "batch failed; retrying its commands one by one");
            let mut results = Vec::with_capacity(envelopes.len());
            let mut effects = BatchEffects::default();
            for envelope in envelopes {
                match batch::execute(
                    &shared.db,
                    &shared.subjects,
                    std::slice::from_ref(&envelope),
                    &known,
                )
                .await
                {
                    Ok((mut r, e)) => {
                        results.push(
                            r.pop()
                                .unwrap_or_else(|| Err(AppError::internal("commit", "no result"))),
                        );
                        effects.changed.extend(e.changed);
                        effects.outbox_rows += e.outbox_rows;
                    }
                    Err(e) => results.push(Err(AppError::database("commit", e))),
                }
            }
            (results, effects)
        }
        Err(e) => {
            if crate::error::unreachable(&e) {
                tracing::warn!(error = %e, size = envelopes.len(), "commit failed: Postgres unreachable");
            } else {
                tracing::error!(error = %e, "commit failed");
            }
            let first = AppError::database("commit", e);
            let results = (1..envelopes.len())
                .map(|_| Err(first.for_another_caller("commit")))
                .collect::<Vec<_>>();
            (
                std::iter::once(Err(first)).chain(results).collect(),
                BatchEffects::default(),
            )
        }
    }
}

fn finish_commit(state: &mut ScopeState, done: Committed) {
    let Committed {
        replies,
        results,
        effects,
        size,
    } = done;
    if !effects.changed.is_empty() {
        let ids: Vec<EventId> = effects.changed.iter().map(|c| c.event.id).collect();
        let mut listed = Vec::with_capacity(ids.len());
        for changed in effects.changed {
            // Batches of one scope may commit concurrently; revisions say
            // which view of an event is the newer one.
            let previous = {
                let mut cache = state.cache.write();
                if cache
                    .get(&changed.event.id)
                    .is_some_and(|old| old.snapshot.revision > changed.revision)
                {
                    continue;
                }
                cache.remove(&changed.event.id)
            };
            // The RSVP map stays valid only if it was exactly one change behind.
            let base = if changed.is_new {
                crate::actors::RsvpMap::new(HashMap::new(), &state.shared.rsvp_budget).map(Arc::new)
            } else {
                previous
                    .filter(|old| old.snapshot.revision + 1 == changed.revision)
                    .and_then(|old| old.snapshot.rsvps)
            };
            let rsvps = base.and_then(|map| crate::actors::RsvpMap::changed(map, &changed.rsvps));
            let event = Arc::new(changed.event);
            listed.push(Listed {
                event: event.clone(),
                counts: changed.counts,
                revision: changed.revision,
            });
            insert(
                state,
                Snapshot {
                    event,
                    counts: changed.counts,
                    rsvps,
                    revision: changed.revision,
                },
            );
        }
        state.shared.listing.apply(state.key.tenant, listed);
        state.shared.announce_changes(&state.key, &ids);
    }
    if effects.outbox_rows > 0 {
        state.shared.outbox_wakeup.notify_one();
    }
    tracing::debug!(size, "batch committed");
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(result);
    }
}

/// How long a caller waits for its scope actor before answering with an error.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
