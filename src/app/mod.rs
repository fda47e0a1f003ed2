//! The application layer: one function per operation, shared by every
//! transport. Each runs: authorize (permission at the event's scope, and
//! visibility) → route to the scope actor → reply. Authentication happens
//! before, in [`App::authenticate`], which transports call first.

mod admin;
pub mod feeds;
pub mod fields;
mod import;
pub mod live;
pub mod pipeline;
pub mod requests;
mod series;
pub mod views;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use crate::error::AppError;

use crate::actors::{Registry, ScopeKey, Snapshot};
use crate::auth::replay::ReplayKey;
use crate::auth::{
    AuthError, HeaderSource, InternalContext, ReplayGuard, RequestParts, SignatureVersion,
    Transport, UnauthorizedReason, Verifier,
};
use crate::authz::{Authorizer, Guard, Permission, Sight};
use crate::domain::ErrorCode;
use crate::domain::{
    ApplyTo, CancelReason, EventId, EventPatch, Scope, TenantId, UserId, format_utc, ics,
};
use crate::store::audit::{self, AuditEntry};
use crate::store::batch::{CommandMeta, Envelope, WriteCommand, WriteOutcome};
use crate::store::reads::{self, Audience};
use crate::subjects::replays::{Claimed, ReplayBucket};
use requests::{Checked, CreateEvent, PageQuery, Request, RsvpBody, RsvpQuery};
use views::{EventView, RsvpView, View};

/// Every operation of the API, by its NATS name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    EventCreate,
    EventGet,
    EventList,
    EventUpdate,
    EventCancel,
    RsvpSet,
    RsvpClear,
    RsvpList,
    AttendanceMark,
    AttendanceList,
    EventIcs,
    DsarExport,
    DsarErase,
    AdminRolesList,
    AdminRolesGrant,
    AdminRolesRevoke,
    MembershipAdd,
    MembershipRemove,
    MembershipList,
    AdminAuditList,
    MeCapabilities,
    SeriesGet,
    SeriesIcs,
    RsvpApprove,
    RsvpDecline,
    EventStats,
    FeedCreate,
    FeedList,
    FeedRevoke,
    EventImport,
    /// `GET /stream`: live updates over HTTP (server-sent events). Not in
    /// [`Op::ALL`], the operations of the request/reply API: a stream is no
    /// request/reply exchange, and NATS callers read the stream itself.
    EventStream,
    /// `GET /{id}/rsvps.csv` and `GET /{id}/attendance.csv`: the listings
    /// as CSV, streamed. HTTP only, like the live stream: a download of
    /// any size is no request/reply exchange (NATS callers page the
    /// listings).
    RsvpExport,
    AttendanceExport,
}

impl Op {
    pub const ALL: [Op; 30] = [
        Op::EventCreate,
        Op::EventGet,
        Op::EventList,
        Op::EventUpdate,
        Op::EventCancel,
        Op::RsvpSet,
        Op::RsvpClear,
        Op::RsvpList,
        Op::AttendanceMark,
        Op::AttendanceList,
        Op::EventIcs,
        Op::DsarExport,
        Op::DsarErase,
        Op::AdminRolesList,
        Op::AdminRolesGrant,
        Op::AdminRolesRevoke,
        Op::MembershipAdd,
        Op::MembershipRemove,
        Op::MembershipList,
        Op::AdminAuditList,
        Op::MeCapabilities,
        Op::SeriesGet,
        Op::SeriesIcs,
        Op::RsvpApprove,
        Op::RsvpDecline,
        Op::EventStats,
        Op::FeedCreate,
        Op::FeedList,
        Op::FeedRevoke,
        Op::EventImport,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Op::EventCreate => "event.create",
            Op::EventGet => "event.get",
            Op::EventList => "event.list",
            Op::EventUpdate => "event.update",
            Op::EventCancel => "event.cancel",
            Op::RsvpSet => "rsvp.set",
            Op::RsvpClear => "rsvp.clear",
            Op::RsvpList => "rsvp.list",
            Op::AttendanceMark => "attendance.mark",
            Op::AttendanceList => "attendance.list",
            Op::EventIcs => "event.ics",
            Op::DsarExport => "dsar.export",
            Op::DsarErase => "dsar.erase",
            Op::AdminRolesList => "admin.roles.list",
            Op::AdminRolesGrant => "admin.roles.grant",
            Op::AdminRolesRevoke => "admin.roles.revoke",
            Op::MembershipAdd => "membership.add",
            Op::MembershipRemove => "membership.remove",
            Op::MembershipList => "membership.list",
            Op::AdminAuditList => "admin.audit.list",
            Op::MeCapabilities => "me.capabilities",
            Op::SeriesGet => "series.get",
            Op::SeriesIcs => "series.ics",
            Op::RsvpApprove => "rsvp.approve",
            Op::RsvpDecline => "rsvp.decline",
            Op::EventStats => "event.stats",
            Op::FeedCreate => "feed.create",
            Op::FeedList => "feed.list",
            Op::FeedRevoke => "feed.revoke",
            Op::EventImport => "event.import",
            Op::EventStream => "event.stream",
            Op::RsvpExport => "rsvp.export",
            Op::AttendanceExport => "attendance.export",
        }
    }

    /// The operations only the HTTP gateway serves.
    pub const HTTP_ONLY: [Op; 3] = [Op::EventStream, Op::RsvpExport, Op::AttendanceExport];

    /// Every operation of either transport.
    pub fn every() -> impl Iterator<Item = Op> {
        Op::ALL.into_iter().chain(Op::HTTP_ONLY)
    }

    /// The operation of that name, HTTP's own included.
    pub fn from_name(name: &str) -> Option<Op> {
        Op::every().find(|op| op.name() == name)
    }

    /// Where the operation's signed triple is claimed so that a replay of it
    /// is refused on every instance. Every operation says so explicitly: a
    /// new one cannot be added without deciding.
    pub const fn replay_claim(self) -> ReplayClaim {
        match self {
            Op::EventCreate
            | Op::EventUpdate
            | Op::EventCancel
            | Op::RsvpSet
            | Op::RsvpClear
            | Op::RsvpApprove
            | Op::RsvpDecline
            | Op::AttendanceMark => ReplayClaim::InWriteTransaction,
            Op::DsarErase
            | Op::AdminRolesGrant
            | Op::AdminRolesRevoke
            | Op::MembershipAdd
            | Op::MembershipRemove
            | Op::FeedCreate
            | Op::FeedRevoke
            | Op::EventImport => ReplayClaim::BeforeRunning,
            Op::EventGet
            | Op::EventList
            | Op::RsvpList
            | Op::AttendanceList
            | Op::EventIcs
            | Op::DsarExport
            | Op::AdminRolesList
            | Op::MembershipList
            | Op::AdminAuditList
            | Op::MeCapabilities
            | Op::SeriesGet
            | Op::SeriesIcs
            | Op::EventStats
            | Op::EventStream
            | Op::RsvpExport
            | Op::FeedList
            | Op::AttendanceExport => ReplayClaim::Read,
        }
    }

    /// Whether the operation changes state.
    pub const fn is_write(self) -> bool {
        !matches!(self.replay_claim(), ReplayClaim::Read)
    }

    /// Whether an empty body is refused (400 `INVALID_BODY`). Over NATS the
    /// target is in the body, so only the listings whose fields are all
    /// optional may come without one; over HTTP the target is in the path,
    /// and only the operations with required fields need a body.
    pub const fn requires_body(self, transport: Transport) -> bool {
        match transport {
            Transport::Nats => !matches!(
                self,
                Op::EventList
                    | Op::AdminRolesList
                    | Op::MembershipList
                    | Op::AdminAuditList
                    | Op::MeCapabilities
                    | Op::FeedCreate
                    | Op::FeedList
                    | Op::EventStream
            ),
            Transport::Http => matches!(
                self,
                Op::EventCreate
                    | Op::EventUpdate
                    | Op::RsvpSet
                    | Op::AttendanceMark
                    | Op::MembershipAdd
                    | Op::EventImport
            ),
        }
    }

    /// The largest body the operation takes: `configured`
    /// (`EVENTS_MAX_BODY_BYTES`), and for an import at least room for a
    /// calendar of [`ics_import::MAX_BYTES`] (JSON-escaped over NATS).
    pub const fn max_body_bytes(self, configured: usize) -> usize {
        match self {
            Op::EventImport => {
                let room = 2 * crate::domain::ics_import::MAX_BYTES;
                if configured > room { configured } else { room }
            }
            _ => configured,
        }
    }
}

/// Where an operation claims the (request id, timestamp, signature) of its
/// request in the replay table all instances share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayClaim {
    /// Changes nothing: refused when replayed to the instance that saw it;
    /// v1-signed reads are checked in the shared replay bucket too.
    Read,
    /// Claimed in the transaction of the group commit that applies it, so a
    /// write that fails leaves its triple unclaimed.
    InWriteTransaction,
    /// Claimed in the shared table before it runs.
    BeforeRunning,
}

/// A successful result.
#[derive(Debug)]
pub enum Reply {
    Json(Value),
    /// A typed view, encoded without building a `Value`.
    View(views::View),
    /// An iCalendar document.
    Calendar {
        filename: String,
        body: String,
    },
    /// A live stream, opened, for the HTTP gateway to run.
    Stream(Box<live::LiveStream>),
    /// A CSV download, streamed by the HTTP gateway.
    Csv(Box<CsvExport>),
}

/// A CSV document produced while it is sent.
pub struct CsvExport {
    pub filename: String,
    pub body: futures::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>,
}

impl std::fmt::Debug for CsvExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvExport")
            .field("filename", &self.filename)
            .finish_non_exhaustive()
    }
}

impl Reply {
    /// The reply as a JSON value (a calendar becomes its text).
    pub fn into_value(self) -> Value {
        match self {
            Reply::Json(v) => v,
            Reply::View(view) => serde_json::to_value(view).unwrap_or(Value::Null),
            Reply::Calendar { body, .. } => Value::String(body),
            Reply::Stream(_) | Reply::Csv(_) => Value::Null,
        }
    }
}

/// Per-request context beyond identity.
#[derive(Debug, Clone, Default)]
pub struct CallMeta {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// Event id → owning scope. Scopes never change, so entries never go stale;
/// the map is bounded by dropping a shard when it fills.
struct ScopeIndex {
    shards: Vec<Mutex<HashMap<EventId, ScopeKey>>>,
}

impl ScopeIndex {
    const SHARDS: usize = 32;
    const PER_SHARD: usize = 20_000;

    fn new() -> Self {
        Self {
            shards: (0..Self::SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, id: &EventId) -> std::sync::MutexGuard<'_, HashMap<EventId, ScopeKey>> {
        let n = uuid::Uuid::from(*id).as_bytes()[15] as usize % Self::SHARDS;
        self.shards[n]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, id: &EventId) -> Option<ScopeKey> {
        self.shard(id).get(id).cloned()
    }

    fn insert(&self, id: EventId, key: ScopeKey) {
        let mut shard = self.shard(&id);
        if shard.len() >= Self::PER_SHARD {
            shard.clear();
        }
        shard.insert(id, key);
    }
}

pub struct AppParts {
    pub metrics: Arc<crate::telemetry::metrics::Metrics>,
    pub db: sqlx::PgPool,
    pub registry: Registry,
    pub authorizer: Arc<dyn Authorizer>,
    pub verifier: Verifier,
    /// Where reads that must be refused on every instance are claimed.
    pub replay_bucket: ReplayBucket,
    /// Most authority calls one request may make.
    pub authz_max_calls: usize,
    /// Entries of the per-instance replay memory.
    pub replay_memory: usize,
    /// Requests per calendar feed token and minute.
    pub feed_rate_per_minute: u32,
    /// Largest request body, and the deadline of one request.
    pub max_body_bytes: usize,
    pub request_timeout: std::time::Duration,
    pub replay_window_secs: i64,
    /// Where role bindings are granted and revoked (`admin.roles.*`).
    pub role_admin: Arc<dyn crate::authz::RoleAdmin>,
    /// The feed of live updates (`GET /stream`); none where they are not served.
    pub live: Option<live::Live>,
    /// How far ahead recurring events have occurrences.
    pub series: crate::config::SeriesConfig,
    /// Default reminders and the clock.
    pub rsvp: crate::config::RsvpConfig,
}

#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    metrics: Arc<crate::telemetry::metrics::Metrics>,
    db: sqlx::PgPool,
    registry: Registry,
    authorizer: Arc<dyn Authorizer>,
    verifier: Verifier,
    replay: ReplayGuard,
    replay_bucket: ReplayBucket,
    authz_max_calls: usize,
    max_body_bytes: usize,
    request_timeout: std::time::Duration,
    index: ScopeIndex,
    replay_window_secs: i64,
    roles: crate::authz::RoleAdministration,
    live: Option<live::Live>,
    series: crate::config::SeriesConfig,
    rsvp: crate::config::RsvpConfig,
    feeds: feeds::FeedState,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl App {
    pub fn new(parts: AppParts) -> Self {
        Self {
            inner: Arc::new(Inner {
                metrics: parts.metrics,
                db: parts.db,
                registry: parts.registry,
                authorizer: parts.authorizer,
                roles: crate::authz::RoleAdministration::new(parts.role_admin),
                verifier: parts.verifier,
                replay_bucket: parts.replay_bucket,
                authz_max_calls: parts.authz_max_calls,
                max_body_bytes: parts.max_body_bytes,
                request_timeout: parts.request_timeout,
                replay: ReplayGuard::new(parts.replay_window_secs, parts.replay_memory),
                index: ScopeIndex::new(),
                replay_window_secs: parts.replay_window_secs,
                live: parts.live,
                series: parts.series,
                rsvp: parts.rsvp,
                feeds: feeds::FeedState::new(parts.feed_rate_per_minute),
            }),
        }
    }

    /// The feed of live updates, where they are served.
    pub fn live_feed(&self) -> Option<&crate::subjects::live::LiveFeed> {
        self.inner.live.as_ref().map(|l| &l.feed)
    }

    pub fn metrics(&self) -> &Arc<crate::telemetry::metrics::Metrics> {
        &self.inner.metrics
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn db(&self) -> &sqlx::PgPool {
        &self.inner.db
    }

    /// The largest request body accepted (`EVENTS_MAX_BODY_BYTES`).
    pub fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    /// Verifies the signature, builds the caller's context and refuses a
    /// replay: of any request on this instance, and, where the operation or
    /// the signature version asks for it, on every instance
    /// (`docs/hmac-signatures.md`, "Replays").
    pub async fn authenticate(
        &self,
        op: Op,
        headers: &impl HeaderSource,
        parts: &RequestParts<'_>,
    ) -> Result<InternalContext, AppError> {
        let now = crate::auth::now_unix();
        let ctx =
            self.inner
                .verifier
                .authenticate_guarded(headers, parts, now, &self.inner.replay)?;
        self.claim_shared(op, &ctx, now).await?;
        Ok(ctx)
    }

    /// Claims the request's triple where all instances see it, as its
    /// operation says ([`Op::replay_claim`]).
    async fn claim_shared(&self, op: Op, ctx: &InternalContext, now: i64) -> Result<(), AppError> {
        let key = ReplayKey::of(ctx);
        let replayed = || AppError::from(AuthError::from(UnauthorizedReason::Replayed));
        // v1 binds no identity: a request replayed elsewhere with other
        // headers would act as someone else. Its triple is claimed where all
        // instances see it before anything runs, reads and writes alike: a
        // write refused before its group commit claimed nothing there.
        let unbound =
            ctx.signature_version == SignatureVersion::V1 || self.inner.replay.diverting(now);
        match op.replay_claim() {
            // The group commit claims it, in the transaction of the change.
            ReplayClaim::InWriteTransaction if !unbound => Ok(()),
            ReplayClaim::BeforeRunning => {
                let expires = self.replay_expiry(ctx);
                if crate::store::replays::claim(&self.inner.db, key.0, expires).await? {
                    Ok(())
                } else {
                    Err(replayed())
                }
            }
            ReplayClaim::Read if !unbound => Ok(()),
            ReplayClaim::Read | ReplayClaim::InWriteTransaction => {
                match self.inner.replay_bucket.claim(&key).await {
                    Ok(Claimed::First) => Ok(()),
                    Ok(Claimed::Replayed) => Err(replayed()),
                    // Writes need Postgres only, NATS away or not: without
                    // the bucket, the triple is claimed in the shared table.
                    Err(e) if op.is_write() => {
                        tracing::debug!(error = %e, "replay bucket unavailable; claimed in Postgres");
                        let expires = self.replay_expiry(ctx);
                        let claimed = crate::store::replays::claim(
                            &self.inner.db,
                            key.before_running().0,
                            expires,
                        )
                        .await?;
                        if claimed { Ok(()) } else { Err(replayed()) }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the replay bucket could not be reached");
                        Err(AppError::Unavailable {
                            code: ErrorCode::ServiceUnavailable,
                            message: "The replay check could not be made; try again shortly".into(),
                        })
                    }
                }
            }
        }
    }

    /// When a request's claim may be forgotten: once its signature expired.
    fn replay_expiry(&self, ctx: &InternalContext) -> chrono::DateTime<Utc> {
        chrono::DateTime::from_timestamp(ctx.timestamp + self.inner.replay_window_secs + 1, 0)
            .unwrap_or_else(|| {
                Utc::now() + chrono::Duration::seconds(self.inner.replay_window_secs)
            })
    }

    /// Runs one operation for an authenticated caller, its input given as
    /// the body a NATS caller sends (tools and tests call this).
    pub async fn execute(
        &self,
        ctx: &InternalContext,
        op: Op,
        body: &Value,
        meta: &CallMeta,
    ) -> Result<Reply, AppError> {
        let request = Request::parse(op, Transport::Nats, body, ctx.tenant_id.into())?;
        self.run(ctx, request, meta).await
    }

    /// Runs one parsed request for an authenticated caller.
    pub async fn run(
        &self,
        ctx: &InternalContext,
        request: Request,
        meta: &CallMeta,
    ) -> Result<Reply, AppError> {
        let guard = Guard::new(
            ctx,
            self.inner.authorizer.as_ref(),
            request.op().name(),
            self.inner.authz_max_calls,
        );
        let op = request.op();
        self.note_feed_owner(
            &guard,
            matches!(op, Op::FeedCreate | Op::FeedList | Op::FeedRevoke),
        )
        .await;
        let result = self.dispatch(&guard, request, meta).await;
        // What the request owes the audit log and no write took with it
        // (a read's admin bypass, a refusal after one) is written before
        // the answer leaves: an answer never outlives its audit entry.
        let owed = guard.take_audit();
        if !owed.is_empty() {
            audit::record(&self.inner.db, &owed)
                .await
                .map_err(|e| AppError::internal("audit log", e))?;
        }
        result
    }

    async fn dispatch(
        &self,
        guard: &Guard<'_>,
        request: Request,
        meta: &CallMeta,
    ) -> Result<Reply, AppError> {
        // Each operation's future is boxed: unboxed, every request's task
        // would be as large as the largest operation's state and be copied
        // around at that size when spawned.
        let run: futures::future::BoxFuture<'_, Result<Reply, AppError>> = match request {
            Request::EventCreate(create) => Box::pin(self.create(guard, create, meta)),
            Request::EventGet(id) => Box::pin(self.get(guard, id)),
            Request::EventList(filter) => Box::pin(self.list(guard, filter)),
            Request::EventUpdate {
                id,
                patch,
                apply_to,
            } => Box::pin(self.update(guard, id, patch, apply_to, meta)),
            Request::EventCancel {
                id,
                reason,
                apply_to,
            } => Box::pin(self.cancel(guard, id, reason, apply_to, meta)),
            Request::RsvpSet { id, rsvp } => Box::pin(self.set_rsvp(guard, id, Some(rsvp), meta)),
            Request::RsvpClear(id) => Box::pin(self.set_rsvp(guard, id, None, meta)),
            Request::RsvpReview { id, approve, users } => {
                Box::pin(self.review(guard, id, approve, users, meta))
            }
            Request::EventStats(id) => Box::pin(self.stats(guard, id)),
            Request::RsvpExport(id) => {
                Box::pin(self.export(guard, id, crate::store::exports::Listing::Rsvps))
            }
            Request::AttendanceExport(id) => {
                Box::pin(self.export(guard, id, crate::store::exports::Listing::Attendance))
            }
            Request::RsvpList { id, query } => Box::pin(self.rsvp_list(guard, id, query)),
            Request::AttendanceMark { id, user } => {
                Box::pin(self.mark_attendance(guard, id, user, meta))
            }
            Request::AttendanceList { id, page } => Box::pin(self.attendance_list(guard, id, page)),
            Request::EventIcs(id) => Box::pin(self.ics(guard, id)),
            Request::DsarExport(user) => Box::pin(self.dsar(guard, user, Op::DsarExport)),
            Request::DsarErase(user) => Box::pin(self.dsar(guard, user, Op::DsarErase)),
            Request::AdminRolesList(filter) => Box::pin(self.admin_roles_list(guard, filter)),
            Request::AdminRolesGrant(spec) => Box::pin(self.admin_roles_grant(guard, spec)),
            Request::AdminRolesRevoke(target) => Box::pin(self.admin_roles_revoke(guard, target)),
            Request::MembershipAdd(spec) => Box::pin(self.membership_add(guard, spec)),
            Request::MembershipRemove(spec) => Box::pin(self.membership_remove(guard, spec)),
            Request::MembershipList(filter) => Box::pin(self.membership_list(guard, filter)),
            Request::AdminAuditList(query) => Box::pin(self.audit_list(guard, query)),
            Request::MeCapabilities(scope) => Box::pin(self.capabilities(guard, scope)),
            Request::EventStream(filter) => Box::pin(self.open_stream(guard, filter)),
            Request::SeriesGet(id) => Box::pin(self.series_get(guard, id)),
            Request::SeriesIcs(id) => Box::pin(self.series_ics(guard, id)),
            Request::FeedCreate(spec) => Box::pin(self.feed_create(guard, spec)),
            Request::FeedList => Box::pin(self.feed_list(guard)),
            Request::FeedRevoke(id) => Box::pin(self.feed_revoke(guard, id)),
            Request::EventImport(spec) => Box::pin(self.import(guard, spec, meta)),
        };
        run.await
    }

    fn meta(&self, guard: &Guard<'_>, meta: &CallMeta) -> CommandMeta {
        let ctx = guard.ctx();
        let now = self.inner.rsvp.clock.now();
        // Trace context is the caller's to send and ours to carry into the
        // outbox and stream headers: a malformed or oversized one is dropped
        // (W3C: then tracestate goes too), never stored or fatal.
        let traceparent = meta.traceparent.as_deref().filter(|t| valid_traceparent(t));
        let tracestate = meta
            .tracestate
            .as_deref()
            .filter(|t| traceparent.is_some() && valid_tracestate(t));
        CommandMeta {
            tenant: guard.tenant(),
            actor: guard.user(),
            request_id: idempotency_request_id(&ctx.request_id),
            traceparent: traceparent.map(str::to_string),
            tracestate: tracestate.map(str::to_string),
            tenant_slug: Some(ctx.tenant_slug.clone()).filter(|s| !s.is_empty()),
            replay_key: Some(ReplayKey::of(ctx).0),
            replay_expires_at: self.replay_expiry(ctx),
            audit: guard.take_audit(),
            now,
        }
    }

    /// The event and its counters, from the owning actor's warm state.
    async fn load(&self, tenant: TenantId, id: EventId) -> Result<Option<Snapshot>, AppError> {
        if let Some(key) = self.inner.index.get(&id) {
            if key.tenant != tenant {
                return Ok(None);
            }
            let cached = self.inner.registry.get(&key, id).await?;
            // With other instances about, a change they just committed may
            // not have reached this cache yet: check the revision first, so
            // a user reads their own writes on any instance.
            if let Some(snapshot) = &cached
                && self.inner.registry.shared().peers_possible()
            {
                let current: Option<i64> =
                    sqlx::query_scalar("SELECT revision FROM event_counters WHERE event_id = $1")
                        .bind(uuid::Uuid::from(id))
                        .fetch_optional(&self.inner.db)
                        .await?;
                if current != Some(snapshot.revision) {
                    self.inner.registry.forget_cached(&key, &[id]);
                    return self.inner.registry.get(&key, id).await;
                }
            }
            return Ok(cached);
        }
        let Some((event, counts, revision)) = reads::event(&self.inner.db, tenant, id).await?
        else {
            return Ok(None);
        };
        let key = ScopeKey::of(&event);
        self.inner.index.insert(id, key.clone());
        let mut snapshot = Snapshot::new(event, counts);
        snapshot.revision = revision;
        let registry = self.inner.registry.clone();
        let primed = snapshot.clone();
        tokio::spawn(async move { registry.prime(&key, primed).await });
        Ok(Some(snapshot))
    }

    /// Finds an event the caller may see (404 otherwise, hidden or absent
    /// alike; 403 for a suspended or banned caller who could see it).
    async fn visible(&self, guard: &Guard<'_>, id: EventId) -> Result<Snapshot, AppError> {
        let snapshot = self
            .load(guard.tenant(), id)
            .await?
            .ok_or(AppError::NotFound)?;
        match guard.sight(&snapshot.event).await? {
            Sight::Visible => Ok(snapshot),
            Sight::Hidden => Err(AppError::NotFound),
            Sight::Blocked => Err(AppError::Forbidden("Permission denied")),
        }
    }

    async fn write(
        &self,
        key: &ScopeKey,
        meta: CommandMeta,
        command: WriteCommand,
    ) -> Result<WriteOutcome, AppError> {
        self.inner
            .registry
            .write(key, Envelope { meta, command })
            .await
    }

    async fn create(
        &self,
        guard: &Guard<'_>,
        create: CreateEvent,
        meta: &CallMeta,
    ) -> Result<Reply, AppError> {
        let CreateEvent {
            mut new,
            recurrence,
            fingerprint,
        } = create;
        new.default_reminders(&self.inner.rsvp.default_reminders);
        guard.require(Permission::EventCreate, new.scope()).await?;
        if let Some(recurrence) = recurrence {
            return self
                .create_series(guard, new, recurrence, fingerprint, meta)
                .await;
        }
        let meta = self.meta(guard, meta);
        let event = new.into_event(EventId::new_v4(), guard.user(), meta.now);
        let key = ScopeKey::of(&event);
        let result = views::event(&event, &Default::default(), None);
        let id = event.id;
        let outcome = self
            .write(
                &key,
                meta,
                WriteCommand::Create {
                    event: Box::new(event),
                    request_hash: fingerprint,
                    result,
                },
            )
            .await?;
        match outcome {
            WriteOutcome::Created { event, counts } => {
                self.inner.index.insert(id, key);
                Ok(Reply::View(View::Event(EventView::new(
                    Arc::new(event),
                    counts,
                    None,
                ))))
            }
            WriteOutcome::CreatedEarlier { result } => Ok(Reply::Json(result)),
            other => Err(AppError::internal(
                "create",
                format!("unexpected outcome {other:?}"),
            )),
        }
    }

    async fn get(&self, guard: &Guard<'_>, id: EventId) -> Result<Reply, AppError> {
        let snapshot = self.visible(guard, id).await?;
        // The cache knows statuses, not guests: a party's guests are read
        // where the event can have any.
        let guests_possible =
            snapshot.event.rules.max_guests.get() > 0 || snapshot.counts.guests > 0;
        let (mine, guests) = match snapshot.rsvp_of(&guard.user()) {
            Some(cached) if !(guests_possible && cached.is_some_and(|s| s.is_party())) => {
                (cached, 0)
            }
            _ => reads::party_of(&self.inner.db, id, guard.user()).await?,
        };
        Ok(Reply::View(View::Event(
            EventView::new(snapshot.event, snapshot.counts, mine).with_guests(guests),
        )))
    }

    async fn list(&self, guard: &Guard<'_>, filter: reads::ListFilter) -> Result<Reply, AppError> {
        let (rows, total, partial) = self.visible_rows(guard, &filter).await?;
        let items = rows
            .into_iter()
            .map(|(e, c, mine, guests)| EventView::new(e, c, mine).with_guests(guests))
            .collect();
        let mut page = views::Page::new(items, total, filter.limit, filter.offset);
        if partial {
            page.meta.partial = Some(true);
        }
        Ok(Reply::View(View::Events(page)))
    }

    /// The page of events `filter` selects that the caller may see, the
    /// total, and whether the authority left some scopes undecided (their
    /// events are then left out).
    async fn visible_rows(
        &self,
        guard: &Guard<'_>,
        filter: &reads::ListFilter,
    ) -> Result<(Vec<reads::ListedEvent>, i64, bool), AppError> {
        let tenant = guard.tenant();
        let scope = match &filter.scope {
            Some((t, id)) => match crate::domain::ScopeId::parse(id) {
                Ok(id) => Scope::from_stored(*t, id),
                Err(e) => {
                    return Err(
                        crate::domain::DomainError::field("scopeId", e.into_message()).into(),
                    );
                }
            },
            None => Scope::tenant(tenant),
        };
        guard.require(Permission::EventRead, &scope).await?;
        let user = guard.user();
        let mut partial = false;
        let audience = if guard.is_admin() {
            guard.note_admin_bypass("event_list", None);
            Audience::Everything
        } else if self.inner.authorizer.memberships_in_database() {
            // Every member reads at every scope here, so memberships are
            // the only question left, and the query answers it itself.
            Audience::LocalMember { user }
        } else {
            let gated = reads::gated_scopes(&self.inner.db, tenant, user, filter).await?;
            // Read permission and membership of each gated scope, asked
            // together, a few scopes at a time (never one call after
            // another), within the request's call budget: what it leaves
            // undecided makes the page partial.
            use futures::{StreamExt, TryStreamExt};
            let decided: Vec<(Scope, Option<bool>, Option<bool>)> = futures::stream::iter(gated)
                .map(|scope| async move {
                    let (readable, member) = futures::future::try_join(
                        guard.decide(Permission::EventRead, &scope),
                        guard.memberships(std::slice::from_ref(&scope)),
                    )
                    .await?;
                    let member = member.get(&scope).copied().flatten();
                    Ok::<_, AppError>((scope, readable, member))
                })
                .buffered(crate::authz::CallBudget::MAX_CONCURRENT / 2)
                .try_collect()
                .await?;
            let mut member_scopes = Vec::new();
            for (scope, readable, member) in decided {
                match (readable, member) {
                    // Hidden whatever the membership: not a partial answer.
                    (Some(false), _) => {}
                    (Some(true), Some(true)) => member_scopes.push(scope),
                    (Some(true), Some(false)) => {}
                    (None, _) | (_, None) => partial = true,
                }
            }
            Audience::Member {
                user,
                member_scopes,
            }
        };
        let lists = &self.inner.registry.shared().metrics.lists;
        let (rows, total) = match self
            .list_from_memory(tenant, user, filter, &audience)
            .await?
        {
            Some(found) => {
                lists.with_label_values(&["memory"]).inc();
                found
            }
            None => {
                lists.with_label_values(&["postgres"]).inc();
                reads::list(&self.inner.db, tenant, user, filter, &audience).await?
            }
        };
        Ok((rows, total, partial))
    }

    /// A page from the list read model, with the caller's RSVPs read for its
    /// events only; `None` where Postgres must answer: a text or RSVP filter
    /// (the model holds neither), other instances about (their commits
    /// reach the model only by a note, and the caller must see their own
    /// writes on any instance), or a tenant too large to hold.
    async fn list_from_memory(
        &self,
        tenant: TenantId,
        user: UserId,
        filter: &reads::ListFilter,
        audience: &Audience,
    ) -> Result<Option<(Vec<reads::ListedEvent>, i64)>, AppError> {
        use crate::actors::listing::{Listed, Listing, MAX_EVENTS_PER_TENANT, Viewer};
        let shared = self.inner.registry.shared();
        if !Listing::answers(filter) || shared.peers_possible() {
            return Ok(None);
        }
        let viewer = match audience {
            Audience::Everything => Viewer::Everything,
            Audience::Member {
                user,
                member_scopes,
            } => Viewer::Member {
                user: *user,
                member_of: member_scopes.iter().cloned().collect(),
            },
            // Memberships matter only where the tenant has gated events.
            Audience::LocalMember { user } if shared.listing.has_gated(tenant) == Some(false) => {
                Viewer::Member {
                    user: *user,
                    member_of: HashSet::new(),
                }
            }
            Audience::LocalMember { user } => Viewer::Member {
                user: *user,
                member_of: reads::member_scopes(&self.inner.db, tenant, *user)
                    .await?
                    .into_iter()
                    .collect(),
            },
        };
        let listing = &shared.listing;
        let mut found = listing.page(tenant, filter, &viewer);
        if found.is_none()
            && let Some(load) = listing.begin_load(tenant)
        {
            let rows = reads::tenant_events(&self.inner.db, tenant, MAX_EVENTS_PER_TENANT)
                .await
                .map(|rows| {
                    rows.map(|rows| {
                        rows.into_iter()
                            .map(|(event, counts, revision)| Listed {
                                event: Arc::new(event),
                                counts,
                                revision,
                            })
                            .collect()
                    })
                });
            if let Err(e) = &rows {
                tracing::warn!(error = %e, "the list read model could not load a tenant");
            }
            listing.install(load, rows);
            found = listing.page(tenant, filter, &viewer);
        }
        let Some((page, total)) = found else {
            return Ok(None);
        };
        let ids: Vec<EventId> = page.iter().map(|l| l.event.id).collect();
        let mut parties = if ids.is_empty() {
            HashMap::new()
        } else {
            reads::parties_of(&self.inner.db, user, &ids).await?
        };
        let rows = page
            .into_iter()
            .map(|l| {
                let (mine, guests) = parties.remove(&l.event.id).unwrap_or((None, 0));
                (l.event, l.counts, mine, guests)
            })
            .collect();
        Ok(Some((rows, i64::try_from(total).unwrap_or(i64::MAX))))
    }

    async fn update(
        &self,
        guard: &Guard<'_>,
        id: EventId,
        patch: Checked<EventPatch>,
        apply_to: Checked<ApplyTo>,
        meta: &CallMeta,
    ) -> Result<Reply, AppError> {
        let snapshot = self.visible(guard, id).await?;
        guard
            .require(Permission::EventManage, &snapshot.event.scope)
            .await?;
        let patch = patch?;
        let apply_to = apply_to?;
        if apply_to != ApplyTo::This && snapshot.event.series.is_some() {
            return self
                .update_series(guard, &snapshot.event, patch, apply_to, meta)
                .await;
        }
        let key = ScopeKey::of(&snapshot.event);
        let outcome = self
            .write(
                &key,
                self.meta(guard, meta),
                WriteCommand::Update {
                    event_id: id,
                    patch: Box::new(patch),
                },
            )
            .await?;
        match outcome {
            WriteOutcome::Updated { event, counts, .. } => {
                let (mine, guests) = reads::party_of(&self.inner.db, id, guard.user()).await?;
                Ok(Reply::View(View::Event(
                    EventView::new(Arc::new(event), counts, mine).with_guests(guests),
                )))
            }
            other => Err(AppError::internal(
                "update",
                format!("unexpected outcome {other:?}"),
            )),
        }
    }

    async fn cancel(
        &self,
        guard: &Guard<'_>,
        id: EventId,
        reason: Checked<Option<CancelReason>>,
        apply_to: Checked<ApplyTo>,
        meta: &CallMeta,
    ) -> Result<Reply, AppError> {
        let snapshot = self.visible(guard, id).await?;
        guard
            .require(Permission::EventManage, &snapshot.event.scope)
            .await?;
        let reason = reason?;
        let apply_to = apply_to?;
        if apply_to != ApplyTo::This && snapshot.event.series.is_some() {
            return self
                .cancel_series(guard, &snapshot.event, reason, apply_to, meta)
                .await;
        }
        let key = ScopeKey::of(&snapshot.event);
        let outcome = self
            .write(
                &key,
                self.meta(guard, meta),
                WriteCommand::Cancel {
                    event_id: id,
                    reason,
                },
            )
            .await?;
        match outcome {
            WriteOutcome::Cancelled { event, counts, .. } => {
                let (mine, guests) = reads::party_of(&self.inner.db, id, guard.user()).await?;
                Ok(Reply::View(View::Event(
                    EventView::new(Arc::new(event), counts, mine).with_guests(guests),
                )))
            }
            other => Err(AppError::internal(
                "cancel",
                format!("unexpected outcome {other:?}"),
            )),
        }
    }

    async fn set_rsvp(
        &self,
        guard: &Guard<'_>,
        id: EventId,
        rsvp: Option<Checked<RsvpBody>>,
        meta: &CallMeta,
    ) -> Result<Reply, AppError> {
        let snapshot = self.visible(guard, id).await?;
        guard
            .require(Permission::RsvpSet, &snapshot.event.scope)
            .await?;
        // `None`: a clear.
        let body = rsvp.transpose()?;
        let key = ScopeKey::of(&snapshot.event);
        let done = self
            .inner
            .registry
            .set_rsvp(
                &key,
                self.meta(guard, meta),
                id,
                body.map(|b| b.status),
                body.map_or(0, |b| b.guests),
            )
            .await?;
        Ok(Reply::View(View::Rsvp(RsvpView::new(&done))))
    }

    async fn mark_attendance(
        &self,
        guard: &Guard<'_>,
        id: EventId,
        user: Checked<UserId>,
        meta: &CallMeta,
    ) -> Result<Reply, AppError> {
        let snapshot = self.visible(guard, id).await?;
        guard
            .require(Permission::AttendanceMark, &snapshot.event.scope)
            .await?;
        let user = user?;
        let key = ScopeKey::of(&snapshot.event);
        let outcome = self
            .write(
                &key,
                self.meta(guard, meta),
                WriteCommand::MarkAttendance { event_id: id, user },
            )
            .await?;
        match outcome {
            WriteOutcome::Attendance {
                user,
                marked_by,
                marked_at,
                ..
            } => Ok(Reply::Json(json!({
                "eventId": id.to_string(),
                "userId": user.to_string(),
                "markedBy": marked_by.to_string(),
                "markedAt": format_utc(&marked_at),
            }))),
            other => Err(AppError::internal(
                "attendance",
                format!("unexpected outcome {other:?}"),
            )),
        }
    }

    async fn rsvp_list(
        &self,
        guard: &Guard<'_>,
        id: EventId,
        query: Checked<RsvpQuery>,
    ) -> Result<Reply, AppError> {
        let snapshot = self.visible(guard, id).await?;
        guard
            .require(Permission::EventManage, &snapshot.event.scope)
            .await?;
        let RsvpQuery {
            status,
            page: PageQuery { limit, offset },
        } = query?;
        let (rows, total) = reads::rsvps(&self.inner.db, id, status, limit, offset).await?;
        let items = rows
            .into_iter()
            .map(|r| {
                json!({
                    "userId": r.user_id.to_string(),
                    "status": r.status,
                    "guests": r.guests,
                    "updatedAt": format_utc(&r.updated_at),
                    "waitlistPosition": r.waitlist_position,
                })
            })
            .collect();
        Ok(Reply::Json(views::page(items, total, limit, offset)))
    }

    async fn attendance_list(
        &self,
        guard: &Guard<'_>,
        id: EventId,
        page: Checked<PageQuery>,
    ) -> Result<Reply, AppError> {
        let snapshot = self.visible(guard, id).await?;
        let scope = &snapshot.event.scope;
        if !(guard.can(Permission::EventManage, scope).await?
            || guard.can(Permission::AttendanceMark, scope).await?)
        {
            return Err(AppError::Forbidden("Permission denied"));
        }
        let PageQuery { limit, offset } = page?;
        let (rows, total) = reads::attendance(&self.inner.db, id, limit, offset).await?;
        let items = rows
            .into_iter()
            .map(|r| {
                json!({
                    "userId": r.user_id.to_string(),
                    "markedBy": r.marked_by.to_string(),
                    "markedAt": format_utc(&r.marked_at),
                })
            })
            .collect();
        Ok(Reply::Json(views::page(items, total, limit, offset)))
    }

    /// `rsvp.approve` / `rsvp.decline`: for whoever may manage the event.
    async fn review(
        &self,
        guard: &Guard<'_>,
        id: EventId,
        approve: bool,
        users: Checked<Vec<UserId>>,
        meta: &CallMeta,
    ) -> Result<Reply, AppError> {
        let snapshot = self.visible(guard, id).await?;
        guard
            .require(Permission::EventManage, &snapshot.event.scope)
            .await?;
        let users = users?;
        let key = ScopeKey::of(&snapshot.event);
        let outcome = self
            .write(
                &key,
                self.meta(guard, meta),
                WriteCommand::Review {
                    event_id: id,
                    users,
                    approve,
                },
            )
            .await?;
        match outcome {
            WriteOutcome::Reviewed {
                event,
                counts,
                results,
            } => {
                let results: Vec<Value> = results
                    .iter()
                    .map(|r| {
                        json!({
                            "userId": r.user.to_string(),
                            "status": r.status.map(|s| s.as_str()),
                            "changed": r.changed,
                        })
                    })
                    .collect();
                Ok(Reply::Json(json!({
                    "eventId": id.to_string(),
                    "results": results,
                    "rsvpCounts": views::counts(&counts),
                    "seats": views::SeatsView::of(event.seat_capacity(), &counts),
                })))
            }
            other => Err(AppError::internal(
                "review",
                format!("unexpected outcome {other:?}"),
            )),
        }
    }

    /// `event.stats`: the counters as stored, for managers.
    async fn stats(&self, guard: &Guard<'_>, id: EventId) -> Result<Reply, AppError> {
        let snapshot = self.visible(guard, id).await?;
        guard
            .require(Permission::EventManage, &snapshot.event.scope)
            .await?;
        let (counts, attended) = reads::stats(&self.inner.db, id).await?;
        let rate = if counts.going == 0 {
            0.0
        } else {
            (f64::from(attended) / f64::from(counts.going)).min(1.0)
        };
        Ok(Reply::Json(json!({
            "eventId": id.to_string(),
            "rsvpCounts": views::counts(&counts),
            "seats": views::SeatsView::of(snapshot.event.seat_capacity(), &counts),
            "waitlistLength": counts.waitlisted,
            "attended": attended,
            "attendanceRate": rate,
        })))
    }

    /// The RSVPs or the attendance as CSV: for managers (attendance also
    /// for those who mark it, as its listing).
    async fn export(
        &self,
        guard: &Guard<'_>,
        id: EventId,
        listing: crate::store::exports::Listing,
    ) -> Result<Reply, AppError> {
        use crate::store::exports::Listing;
        let snapshot = self.visible(guard, id).await?;
        let scope = &snapshot.event.scope;
        let allowed = match listing {
            Listing::Rsvps => guard.can(Permission::EventManage, scope).await?,
            Listing::Attendance => {
                guard.can(Permission::EventManage, scope).await?
                    || guard.can(Permission::AttendanceMark, scope).await?
            }
        };
        if !allowed {
            return Err(AppError::Forbidden("Permission denied"));
        }
        let name = match listing {
            Listing::Rsvps => "rsvps",
            Listing::Attendance => "attendance",
        };
        Ok(Reply::Csv(Box::new(CsvExport {
            filename: format!("event-{id}-{name}.csv"),
            body: crate::store::exports::stream(self.inner.db.clone(), listing, id),
        })))
    }

    async fn ics(&self, guard: &Guard<'_>, id: EventId) -> Result<Reply, AppError> {
        let snapshot = self.visible(guard, id).await?;
        Ok(Reply::Calendar {
            filename: ics::filename(&snapshot.event),
            body: ics::render(&snapshot.event, &guard.ctx().tenant_slug, Utc::now()),
        })
    }

    async fn dsar(&self, guard: &Guard<'_>, target: UserId, op: Op) -> Result<Reply, AppError> {
        let is_subject = target == guard.user();
        // Only the subject, or a system admin who is not suspended or banned;
        // `system_admin` must be the literal `true` (the original accepted any truthy value).
        if !is_subject && !guard.is_admin() {
            return Err(AppError::Forbidden("DSAR access denied"));
        }
        let tenant = guard.tenant();
        let ctx = guard.ctx();
        guard.record(AuditEntry {
            tenant_id: Some(ctx.tenant_id),
            actor_user_id: Some(ctx.user_id),
            action: if op == Op::DsarErase {
                "dsar.erased"
            } else {
                "dsar.exported"
            },
            target_type: "user",
            target_id: Some(target.to_string()),
            request_id: Some(ctx.request_id.clone()),
            details: json!({"via": if is_subject { "self" } else { "system_admin" }}),
        });
        if op == Op::DsarExport {
            // The entry is written after the export was read, before it is
            // answered (by `execute`).
            return Ok(Reply::Json(
                crate::store::dsar::export(&self.inner.db, tenant, target).await?,
            ));
        }
        let shared = self.inner.registry.shared().clone();
        let erased = crate::store::dsar::erase(
            &self.inner.db,
            &shared.subjects,
            tenant,
            target,
            &guard.take_audit(),
        )
        .await?;
        for event in &erased.changed_events {
            self.inner
                .registry
                .invalidate(&ScopeKey::of(event), &[event.id])
                .await;
        }
        shared.outbox_wakeup.notify_one();
        Ok(Reply::Json(erased.summary))
    }
}

/// The longest request id stored as sent in `idempotency_keys`.
const MAX_STORED_REQUEST_ID_CHARS: usize = 255;

/// The idempotency key of a request id: the id itself when it fits the
/// column (1..=255 characters, no NUL, which Postgres text cannot hold),
/// else its SHA-256, so any id the signature accepted can key a create
/// (a longer id used to fail the insert with a 500).
fn idempotency_request_id(request_id: &str) -> String {
    if request_id.chars().count() <= MAX_STORED_REQUEST_ID_CHARS && !request_id.contains('\0') {
        request_id.to_string()
    } else {
        format!("sha256:{}", hex::encode(sha256(request_id.as_bytes())))
    }
}

/// A W3C `traceparent` (`vv-<32 hex>-<16 hex>-<2 hex>`, later versions may
/// append fields) that fits the outbox column (128 characters).
fn valid_traceparent(t: &str) -> bool {
    let b = t.as_bytes();
    let hex = |r: std::ops::Range<usize>| {
        b.get(r).is_some_and(|s| {
            s.iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        })
    };
    b.len() <= 128
        && b.len() >= 55
        && hex(0..2)
        && b[2] == b'-'
        && hex(3..35)
        && b[35] == b'-'
        && hex(36..52)
        && b[52] == b'-'
        && hex(53..55)
        && (b.len() == 55 || b[55] == b'-')
        && b.iter().all(|c| c.is_ascii_graphic())
}

/// A `tracestate` of printable ASCII that fits the outbox column (512).
fn valid_tracestate(t: &str) -> bool {
    t.len() <= 512 && t.bytes().all(|c| c == b' ' || c.is_ascii_graphic())
}
