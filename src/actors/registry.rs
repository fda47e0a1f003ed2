//! The registry of scope actors: activates them on demand (one per scope,
//! even when requests race), passivates idle ones, caps how many are live,
//! and supervises them: a crashed actor is forgotten and the next request
//! starts a fresh one, while its callers get an error reply.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::{Notify, OnceCell};

use crate::actors::forward::{self, RsvpDone, Sent};
use crate::actors::scope::{CALL_TIMEOUT, ScopeActor, ScopeArgs, ScopeCache, ScopeMsg};
use crate::actors::{ActorConfig, ScopeKey, Snapshot};
use crate::domain::RequestedRsvp;
use crate::domain::{ErrorCode, EventId};
use crate::error::AppError;
use crate::names::Subjects;
use crate::store::batch::{CommandMeta, CommandResult, Envelope, WriteCommand};

const SHARDS: usize = 64;

/// How many actors an over-cap sweep leaves live: nine tenths of the cap,
/// at least one less than the cap (a sweep always makes room) and at least
/// one (the actor just activated).
fn low_water(cap: usize) -> usize {
    (cap - cap / 10).min(cap.saturating_sub(1)).max(1)
}

struct Slot {
    cell: Arc<OnceCell<ActorRef<ScopeMsg>>>,
    last_used: Arc<AtomicU64>,
    /// The actor's cache: it goes with the slot, so a replaced actor's
    /// entries are never read.
    cache: Arc<ScopeCache>,
}

/// State shared by the registry and every scope actor.
pub struct Shared {
    pub metrics: Arc<crate::telemetry::metrics::Metrics>,
    pub db: PgPool,
    pub subjects: Subjects,
    pub nats: async_nats::Client,
    pub config: ActorConfig,
    pub outbox_wakeup: Arc<Notify>,
    pub instance: String,
    pub batches: AtomicU64,
    /// Milliseconds since `Shared` was made when another instance was last heard of.
    pub peer_seen_ms: AtomicU64,
    pub created: Instant,
    pub batched_commands: AtomicU64,
    pub largest_batch: AtomicU64,
    /// The list read model the scope actors keep.
    pub listing: Arc<crate::actors::listing::Listing>,
    /// What the cached RSVP maps of every scope may hold together.
    pub rsvp_budget: Arc<crate::actors::RsvpBudget>,
    /// The other instances heard from lately, which own some scopes' writes.
    pub peers: crate::actors::owners::Peers,
    /// The HMAC secrets: the first signs forwarded writes, all verify them.
    pub secrets: Vec<String>,
    /// Set once this instance has said it is stopping: no more heartbeats,
    /// which would make the others hand it writes again.
    pub left: AtomicBool,
    /// The queues of RSVP writes handed to other instances.
    pub forwarder: crate::actors::forward::Forwarder,
}

impl Shared {
    pub fn observe_batch(&self, size: usize, took: Duration) {
        self.metrics.batch_size.observe(size as f64);
        self.metrics.batch_commit.observe(took.as_secs_f64());
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batched_commands
            .fetch_add(size as u64, Ordering::Relaxed);
        self.largest_batch.fetch_max(size as u64, Ordering::Relaxed);
    }

    /// Records a sign of life from another instance; true when it is new
    /// (see [`crate::actors::owners::Peers::saw`]).
    pub fn saw_peer(&self, instance: &str) -> bool {
        let now = self.created.elapsed().as_millis() as u64;
        self.peer_seen_ms.store(now.max(1), Ordering::Relaxed);
        self.peers.saw(instance)
    }

    /// The instance that owns `key`'s writes when it is another one and
    /// routing is on.
    pub fn owner_of(&self, key: &ScopeKey) -> Option<String> {
        if !self.config.route_writes {
            return None;
        }
        self.peers.owner_of(key)
    }

    /// `instance` stopped: it owns no scope, and its queue of forwards goes.
    pub fn peer_gone(&self, instance: &str) {
        self.peers.gone(instance);
        self.forwarder.forget(instance);
    }

    /// Counts an RSVP write routed between instances, by what came of it.
    pub fn count_forward(&self, outcome: &str) {
        self.metrics
            .write_forwards
            .with_label_values(&[outcome])
            .inc();
    }

    pub fn forward_secret(&self) -> &str {
        self.secrets.first().map_or("", String::as_str)
    }

    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// Whether another instance may have changed what this one caches, so
    /// cached reads must be checked against Postgres: during start-up, and
    /// while other instances' heartbeats or notes keep arriving. A single
    /// instance serves its cache unchecked.
    pub fn peers_possible(&self) -> bool {
        let now = self.created.elapsed();
        let grace = self.config.peer_grace;
        if now < grace {
            return true;
        }
        let seen = self.peer_seen_ms.load(Ordering::Relaxed);
        seen > 0 && now.saturating_sub(Duration::from_millis(seen)) < grace
    }

    /// Tells the other instances which events changed, so their caches drop them.
    pub fn announce_changes(&self, key: &ScopeKey, ids: &[EventId]) {
        let note = ChangeNote {
            instance: self.instance.clone(),
            key: Some(key.clone()),
            events: ids.to_vec(),
            leaving: false,
        };
        if let Ok(body) = serde_json::to_vec(&note) {
            let nats = self.nats.clone();
            let subject = self.subjects.internal_changes();
            // A lost note only delays invalidation until the cache TTL.
            tokio::spawn(async move {
                let _ = nats.publish(subject, body.into()).await;
            });
        }
    }
}

/// A change note as the instances send it, for writers outside a running
/// instance (an import) that must make every instance reload `ids`.
pub fn change_note(origin: &str, key: &ScopeKey, ids: &[EventId]) -> Vec<u8> {
    let note = ChangeNote {
        instance: origin.to_string(),
        key: Some(key.clone()),
        events: ids.to_vec(),
        leaving: false,
    };
    serde_json::to_vec(&note).unwrap_or_default()
}

/// A note between instances: changed events of a scope, or (without a
/// scope) a heartbeat saying "another instance is here".
#[derive(Debug, Serialize, Deserialize)]
struct ChangeNote {
    instance: String,
    key: Option<ScopeKey>,
    events: Vec<EventId>,
    /// The instance is stopping: it owns no scope from now on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    leaving: bool,
}

/// Heartbeats come every 5 s, well within the default peer grace (15 s).
const HEARTBEAT: Duration = Duration::from_secs(5);

struct Inner {
    shards: Vec<Mutex<HashMap<ScopeKey, Slot>>>,
    by_id: Mutex<HashMap<ActorId, ScopeKey>>,
    live: AtomicUsize,
    /// Slots holding an activated actor. Unlike `live`, a slot stops
    /// counting as soon as its actor is told to passivate.
    slots: AtomicUsize,
    /// An over-cap sweep is running: activations above the cap start one
    /// only when none is.
    sweeping: AtomicBool,
    started: Instant,
    shared: Arc<Shared>,
    supervisor: ActorRef<SupervisorMsg>,
    /// The task taking the writes other instances forward to this one.
    forwarded: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

/// A registry that tasks of its own can hold without keeping it alive.
#[derive(Clone)]
pub struct WeakRegistry(std::sync::Weak<Inner>);

impl WeakRegistry {
    pub fn upgrade(&self) -> Option<Registry> {
        self.0.upgrade().map(|inner| Registry { inner })
    }
}

fn shard_of(key: &ScopeKey) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

impl Registry {
    pub async fn start(shared: Shared) -> Result<Self, AppError> {
        let shared = Arc::new(shared);
        let inner_slot: Arc<std::sync::OnceLock<std::sync::Weak<Inner>>> = Arc::default();
        let (supervisor, _) = Actor::spawn(None, Supervisor, inner_slot.clone())
            .await
            .map_err(|e| AppError::internal("start scope supervisor", e))?;
        let inner = Arc::new(Inner {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            by_id: Mutex::default(),
            live: AtomicUsize::new(0),
            slots: AtomicUsize::new(0),
            sweeping: AtomicBool::new(false),
            started: Instant::now(),
            shared,
            supervisor,
            forwarded: Mutex::default(),
        });
        let _ = inner_slot.set(Arc::downgrade(&inner));
        let registry = Self { inner };
        registry.spawn_sweeper();
        registry.spawn_change_listener().await;
        // Taking forwards before the first heartbeat: whoever hears of this
        // instance may hand it writes at once.
        let forwarded = forward::serve(&registry).await;
        *registry
            .inner
            .forwarded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = forwarded;
        registry.spawn_heartbeat();
        Ok(registry)
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    pub fn downgrade(&self) -> WeakRegistry {
        WeakRegistry(Arc::downgrade(&self.inner))
    }

    /// Number of live scope actors.
    pub fn live(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        self.inner.started.elapsed().as_millis() as u64
    }

    fn lock(&self, shard: usize) -> std::sync::MutexGuard<'_, HashMap<ScopeKey, Slot>> {
        self.inner.shards[shard]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The live actor of a scope, activating it if needed. Concurrent first
    /// requests for one scope share one activation.
    async fn actor(&self, key: &ScopeKey) -> Result<ActorRef<ScopeMsg>, AppError> {
        let shard = shard_of(key);
        let (cell, last_used, cache) = {
            let mut map = self.lock(shard);
            let slot = map.entry(key.clone()).or_insert_with(|| Slot {
                cell: Arc::new(OnceCell::new()),
                last_used: Arc::new(AtomicU64::new(0)),
                cache: Arc::default(),
            });
            (
                slot.cell.clone(),
                slot.last_used.clone(),
                slot.cache.clone(),
            )
        };
        last_used.store(self.now_ms(), Ordering::Relaxed);
        let actor = cell
            .get_or_try_init(|| async {
                let args = ScopeArgs {
                    key: key.clone(),
                    shared: self.inner.shared.clone(),
                    cache,
                };
                let (actor, _) =
                    Actor::spawn_linked(None, ScopeActor, args, self.inner.supervisor.get_cell())
                        .await
                        .map_err(|e| AppError::internal("spawn scope actor", e))?;
                self.inner
                    .by_id
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(actor.get_id(), key.clone());
                let live = self.inner.live.fetch_add(1, Ordering::Relaxed) + 1;
                self.inner.shared.metrics.live_actors.set(live as i64);
                self.inner.slots.fetch_add(1, Ordering::AcqRel);
                self.sweep_if_over_cap();
                Ok::<_, AppError>(actor)
            })
            .await?;
        Ok(actor.clone())
    }

    /// Starts an over-cap sweep unless one is running. The running one
    /// looks again when it ends, so activations during it are not missed.
    fn sweep_if_over_cap(&self) {
        let cap = self.inner.shared.config.max_live_actors;
        if self.inner.slots.load(Ordering::Acquire) <= cap
            || self.inner.sweeping.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.sweep(true);
                me.inner.sweeping.store(false, Ordering::Release);
                if me.inner.slots.load(Ordering::Acquire) <= cap
                    || me.inner.sweeping.swap(true, Ordering::AcqRel)
                {
                    return;
                }
            }
        });
    }

    /// Removes a scope's slot if it still holds the actor `id`, and returns
    /// that actor.
    fn remove_slot(&self, key: &ScopeKey, id: ActorId) -> Option<ActorRef<ScopeMsg>> {
        let mut map = self.lock(shard_of(key));
        let same = map
            .get(key)
            .and_then(|s| s.cell.get())
            .is_some_and(|a| a.get_id() == id);
        if !same {
            return None;
        }
        let actor = map.remove(key).and_then(|s| s.cell.get().cloned());
        self.inner.slots.fetch_sub(1, Ordering::AcqRel);
        actor
    }

    /// Forgets a scope's slot if it still holds `actor`.
    fn forget(&self, key: &ScopeKey, actor: &ActorCell) {
        self.remove_slot(key, actor.get_id());
    }

    /// Sends a write to its scope actor and waits for the committed result.
    pub async fn write(&self, key: &ScopeKey, envelope: Envelope) -> CommandResult {
        let mut envelope = Some(envelope);
        for _ in 0..3 {
            let actor = self.actor(key).await?;
            let Some(env) = envelope.take() else { break };
            let spare = env.clone();
            let sent = actor
                .call(
                    |reply| ScopeMsg::Write(Box::new(env), reply),
                    Some(CALL_TIMEOUT),
                )
                .await;
            match sent {
                Ok(ractor::rpc::CallResult::Success(result)) => return result,
                Ok(ractor::rpc::CallResult::Timeout) => return Err(timeout()),
                // The actor stopped without answering. If it was passivated
                // or evicted (its slot is gone), it stopped with the message
                // still in its mailbox: nothing was applied, so a fresh one
                // may. (A stopping actor keeps running its pending and
                // in-flight writes to the end, so they always get a reply; a
                // replayed write is refused by its replay key anyway.)
                Ok(ractor::rpc::CallResult::SenderError)
                    if !self.is_current(key, &actor.get_cell()) =>
                {
                    envelope = Some(spare);
                }
                Ok(ractor::rpc::CallResult::SenderError) => return Err(actor_failed()),
                // The actor stopped before taking the message (passivated
                // or crashed): nothing was applied, so a fresh one may.
                Err(ractor::MessagingErr::SendErr(ScopeMsg::Write(env, _))) => {
                    self.forget(key, &actor.get_cell());
                    envelope = Some(*env);
                }
                Err(_) => return Err(actor_failed()),
            }
        }
        Err(actor_failed())
    }

    /// An RSVP write, run by the instance that owns its scope: handed to it
    /// when that is another one, applied here when this one owns it, when
    /// the owner is gone, or when the write cannot be forwarded.
    pub async fn set_rsvp(
        &self,
        key: &ScopeKey,
        meta: CommandMeta,
        event_id: EventId,
        requested: Option<RequestedRsvp>,
        guests: u32,
    ) -> Result<RsvpDone, AppError> {
        let shared = &self.inner.shared;
        if let Some(owner) = shared.owner_of(key) {
            match forward::send(shared, &owner, key, &meta, event_id, requested, guests).await {
                Some(Sent::Answered(result)) => {
                    shared.count_forward("forwarded");
                    return result;
                }
                Some(Sent::Untaken) => {
                    shared.peer_gone(&owner);
                    shared.count_forward("fallback");
                }
                None => {}
            }
        }
        let command = WriteCommand::SetRsvp {
            event_id,
            requested,
            guests,
        };
        RsvpDone::of(self.write(key, Envelope { meta, command }).await?)
    }

    /// The warm state of one event (loaded on a miss).
    pub async fn get(&self, key: &ScopeKey, id: EventId) -> Result<Option<Snapshot>, AppError> {
        if let Some(snapshot) = self.cached(key, &id) {
            return Ok(Some(snapshot));
        }
        for _ in 0..3 {
            let actor = self.actor(key).await?;
            match actor
                .call(|reply| ScopeMsg::Get(id, reply), Some(CALL_TIMEOUT))
                .await
            {
                Ok(ractor::rpc::CallResult::Success(result)) => return result,
                Ok(ractor::rpc::CallResult::Timeout) => return Err(timeout()),
                // Passivated or evicted before answering (the look-up was
                // queued, or its load still running): a read, so ask again.
                Ok(ractor::rpc::CallResult::SenderError)
                    if !self.is_current(key, &actor.get_cell()) => {}
                Ok(ractor::rpc::CallResult::SenderError) => return Err(actor_failed()),
                Err(_) => self.forget(key, &actor.get_cell()),
            }
        }
        Err(actor_failed())
    }

    /// A fresh snapshot from a live actor's cache, read without its mailbox.
    /// What the actor commits is in its cache before any caller hears of the
    /// commit, so a caller reads its own writes here as well.
    fn cached(&self, key: &ScopeKey, id: &EventId) -> Option<Snapshot> {
        let (cache, last_used) = {
            let map = self.lock(shard_of(key));
            let slot = map.get(key).filter(|s| s.cell.initialized())?;
            (slot.cache.clone(), slot.last_used.clone())
        };
        let snapshot = cache.fresh(id, self.inner.shared.config.cache_ttl)?;
        last_used.store(self.now_ms(), Ordering::Relaxed);
        Some(snapshot)
    }

    /// Whether `actor` is still the registered actor of `key`.
    fn is_current(&self, key: &ScopeKey, actor: &ActorCell) -> bool {
        self.lock(shard_of(key))
            .get(key)
            .and_then(|s| s.cell.get())
            .is_some_and(|a| a.get_id() == actor.get_id())
    }

    /// Offers a snapshot read elsewhere to the scope's cache.
    pub async fn prime(&self, key: &ScopeKey, snapshot: Snapshot) {
        if let Ok(actor) = self.actor(key).await {
            let _ = actor.send_message(ScopeMsg::Prime(Box::new(snapshot), 0));
        }
    }

    /// Drops this instance's cached state of events (no note to others).
    pub fn forget_cached(&self, key: &ScopeKey, ids: &[EventId]) {
        if let Some(actor) = self.forget_in_slot(key, ids) {
            let _ = actor.send_message(ScopeMsg::Invalidate(ids.to_vec()));
        }
    }

    /// Drops cached state of events changed outside their scope actor
    /// (DSAR erase), here and on the other instances.
    pub async fn invalidate(&self, key: &ScopeKey, ids: &[EventId]) {
        if let Some(actor) = self.forget_in_slot(key, ids) {
            let _ = actor.send_message(ScopeMsg::Invalidate(ids.to_vec()));
        }
        self.inner.shared.announce_changes(key, ids);
    }

    /// Drops events from a scope's cache at once (reads skip the mailbox,
    /// so the actor's own `Invalidate` would come too late for them) and
    /// their tenant from the list read model, and returns the scope's live
    /// actor.
    fn forget_in_slot(&self, key: &ScopeKey, ids: &[EventId]) -> Option<ActorRef<ScopeMsg>> {
        self.inner.shared.listing.forget(key.tenant);
        let (cache, actor) = {
            let map = self.lock(shard_of(key));
            let slot = map.get(key)?;
            (slot.cache.clone(), slot.cell.get().cloned())
        };
        cache.forget(ids);
        actor
    }

    fn spawn_sweeper(&self) {
        let weak = Arc::downgrade(&self.inner);
        let every = self.inner.shared.config.sweep_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                Registry { inner }.sweep(false);
            }
        });
    }

    /// Passivates idle actors; when over the cap, also the least recently
    /// used ones, down to nine tenths of the cap. The headroom makes a sweep
    /// (a pass over every slot) one per tenth of the cap of activations
    /// rather than one per activation while scopes come and go.
    /// The slots are counted, not the live actors: an actor told to
    /// passivate stays live until it has stopped, and counting it would
    /// evict others in its place.
    fn sweep(&self, over_cap: bool) {
        let idle_ms = self.inner.shared.config.idle_timeout.as_millis() as u64;
        let now = self.now_ms();
        let mut victims: Vec<(u64, ScopeKey, ActorId)> = Vec::new();
        let mut all: Vec<(u64, ScopeKey, ActorId)> = Vec::new();
        for shard in 0..SHARDS {
            let map = self.lock(shard);
            for (key, slot) in map.iter() {
                let Some(actor) = slot.cell.get() else {
                    continue;
                };
                let used = slot.last_used.load(Ordering::Relaxed);
                if now.saturating_sub(used) >= idle_ms {
                    victims.push((used, key.clone(), actor.get_id()));
                } else if over_cap {
                    all.push((used, key.clone(), actor.get_id()));
                }
            }
        }
        let idle = victims.len();
        let keep = low_water(self.inner.shared.config.max_live_actors);
        if over_cap && all.len() > keep {
            let evict = all.len() - keep;
            all.select_nth_unstable_by_key(evict - 1, |(used, _, _)| *used);
            all.truncate(evict);
            victims.extend(all);
        }
        let mut evicted = 0;
        for (n, (_, key, id)) in victims.into_iter().enumerate() {
            // Between the pass and now the slot may have been forgotten and
            // taken by a new activation, which is not this sweep's to stop.
            if let Some(actor) = self.remove_slot(&key, id) {
                let _ = actor.send_message(ScopeMsg::Passivate);
                if n >= idle {
                    evicted += 1;
                }
            }
        }
        self.inner.shared.metrics.actor_evictions.inc_by(evicted);
    }

    /// Announces this instance to the others every few seconds.
    fn spawn_heartbeat(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                announce(&inner.shared, false).await;
            }
        });
    }

    /// Tells the other instances this one is stopping, so they stop
    /// forwarding writes to it now rather than when its heartbeats stop.
    /// Forwards already taken are still answered; later ones find no
    /// subscriber and are applied where they arrived.
    pub async fn leave(&self) {
        announce(&self.inner.shared, true).await;
        self.inner.shared.left.store(true, Ordering::Release);
        let task = self
            .inner
            .forwarded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.abort();
        }
    }

    async fn spawn_change_listener(&self) {
        let shared = self.inner.shared.clone();
        let subject = shared.subjects.internal_changes();
        let Ok(mut sub) = shared.nats.subscribe(subject).await else {
            tracing::warn!("cannot subscribe to change notes; caches rely on their TTL alone");
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(msg) = sub.next().await {
                let Some(inner) = weak.upgrade() else { return };
                let Ok(note) = serde_json::from_slice::<ChangeNote>(&msg.payload) else {
                    continue;
                };
                if note.instance == inner.shared.instance {
                    continue;
                }
                if note.leaving {
                    inner.shared.peer_gone(&note.instance);
                    continue;
                }
                // A newcomer has not heard of this instance yet: it should
                // before it decides whom a scope's writes belong to.
                if inner.shared.saw_peer(&note.instance) {
                    let shared = inner.shared.clone();
                    tokio::spawn(async move { announce(&shared, false).await });
                }
                let Some(key) = note.key else { continue };
                // Another instance committed: its outbox rows are due now,
                // not at the publisher's next poll (a standing-by publisher
                // lets the wake pass).
                inner.shared.outbox_wakeup.notify_one();
                Registry { inner }.forget_cached(&key, &note.events);
            }
        });
    }
}

/// A heartbeat (or, `leaving`, a farewell) on the change-note subject.
async fn announce(shared: &Shared, leaving: bool) {
    if shared.left.load(Ordering::Acquire) {
        return;
    }
    let note = ChangeNote {
        instance: shared.instance.clone(),
        key: None,
        events: Vec::new(),
        leaving,
    };
    if let Ok(body) = serde_json::to_vec(&note) {
        let _ = shared
            .nats
            .publish(shared.subjects.internal_changes(), body.into())
            .await;
    }
}

pub(crate) fn timeout() -> AppError {
    AppError::Unavailable {
        code: ErrorCode::Timeout,
        message: "The request took too long; it may or may not have been applied".into(),
    }
}

fn actor_failed() -> AppError {
    AppError::Unavailable {
        code: ErrorCode::ServiceUnavailable,
        message: "The request could not be completed; retry it".into(),
    }
}

pub enum SupervisorMsg {}

/// Receives the scope actors' exits and failures.
struct Supervisor;

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = Arc<std::sync::OnceLock<std::sync::Weak<Inner>>>;
    type Arguments = Arc<std::sync::OnceLock<std::sync::Weak<Inner>>>;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            _ => return Ok(()),
        };
        let Some(inner) = state.get().and_then(std::sync::Weak::upgrade) else {
            return Ok(());
        };
        let key = inner
            .by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&cell.get_id());
        let live = inner.live.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        inner.shared.metrics.live_actors.set(live as i64);
        if let Some(key) = key {
            if let Some(reason) = failure {
                tracing::error!(scope = ?key, error = %reason, "scope actor crashed; the next request starts a fresh one");
            }
            Registry { inner }.forget(&key, &cell);
        }
        Ok(())
    }
}
