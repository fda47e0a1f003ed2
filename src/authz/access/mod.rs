//! The `access` authorization mode: permissions come from the Access service
//! (`POST {ACCESS_BASE_URL}/access/check`), memberships from Portal
//! (`GET {PORTAL_SERVICE_URL}/communities|teams/{id}/members/{user}`).
//!
//! What this adds to a plain HTTP client (the contract is
//! `docs/authorization.md`):
//! - one pooled client, a deadline on every look-up, redirects refused;
//! - outgoing calls signed with v1 over the path the receiver sees (the
//!   percent-decoded full path, base URL path included), canonical ids in
//!   headers, body and path, path segments percent-escaped;
//! - decision and membership caches (a positive TTL and a shorter negative
//!   one), bounded in size;
//! - identical look-ups in flight at the same time share one call, which runs
//!   in its own task so a caller giving up does not waste it;
//! - the last answer Portal gave stays usable for a bounded time while Portal
//!   is unreachable; after that the membership is unknown (the guard then
//!   answers 503 `PORTAL_UNAVAILABLE`, lists say `meta.partial`);
//! - Access failing in any way is a 503 `ACCESS_UNAVAILABLE`: fail closed.
//!
//! Counters for the metrics endpoint are plain atomics ([`AccessStats`]),
//! also reported to the service's metrics registry when one is given.
//!
//! Here: the authorizer and its caches' use; `calls` makes the HTTP calls,
//! `cache` holds answers and calls in flight, `stats` counts.

mod cache;
mod calls;
mod stats;

use cache::{Flights, TtlCache};
use calls::{Caller, endpoint, portal_addressable, read_body_up_to};
pub use stats::{AccessStats, AccessStatsSnapshot};
use stats::{bump, micros};

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde_json::Value;
use url::Url;
use uuid::Uuid;

use crate::auth::{InternalContext, sign_v1};
use crate::authz::{Authorizer, CallBudget, Memberships, Permission, membership_gated};
use crate::domain::{ErrorCode, Scope};
use crate::error::AppError;
use tokio::sync::OwnedSemaphorePermit;

/// Largest response body read from Access or Portal; their answers are tiny.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Largest answer of the admin API (role and binding listings).
const MAX_ADMIN_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Settings of the `access` mode (from `EVENTS_AUTHZ_*`, `ACCESS_BASE_URL`,
/// `PORTAL_SERVICE_URL` and the first HMAC secret).
#[derive(Debug, Clone)]
pub struct AccessSettings {
    /// e.g. `http://access:8002/api/v1`; calls go to `{this}/access/check`.
    pub access_base_url: Url,
    /// e.g. `http://portal:8003/api/v1`.
    pub portal_base_url: Url,
    /// Signs outgoing calls (the first of `BFF_INTERNAL_HMAC_SECRET` and the
    /// previous secrets).
    pub secret: String,
    /// How long an allow, or a "member", is reused.
    pub cache_ttl: Duration,
    /// How long a deny, or a "not a member" (Portal 404), is reused.
    pub negative_ttl: Duration,
    /// Deadline of one look-up: connecting, sending and reading the answer,
    /// and, for several scopes at once, all of them together.
    pub timeout: Duration,
    /// How old a Portal answer may be and still be used while Portal is
    /// unreachable.
    pub portal_stale_max: Duration,
    /// Most entries per cache (decisions; memberships).
    pub max_entries: usize,
}

impl AccessSettings {
    pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

    /// The settings of a validated configuration; `None` unless it names an
    /// Access base URL and a signing secret.
    pub fn from_config(config: &crate::config::Config) -> Option<Self> {
        Self::from_parts(&config.authz, &config.hmac)
    }

    /// The same from the two parts of the configuration it needs (for the
    /// operator commands, which load no full `serve` configuration).
    pub fn from_parts(
        authz: &crate::config::AuthzConfig,
        hmac: &crate::config::HmacConfig,
    ) -> Option<Self> {
        Some(Self {
            access_base_url: authz.access_base_url.clone()?,
            portal_base_url: authz.portal_service_url.clone(),
            secret: hmac.secrets.first()?.clone(),
            cache_ttl: authz.cache_ttl,
            negative_ttl: authz.negative_ttl,
            timeout: authz.timeout,
            portal_stale_max: authz.portal_stale_max,
            max_entries: Self::DEFAULT_MAX_ENTRIES,
        })
    }
}

/// The authorizer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AccessSetupError {
    #[error("ACCESS_BASE_URL: EVENTS_AUTHZ=access needs it and a signing secret")]
    Missing,
    #[error("{var}: '{url}' cannot take a path (use http://host:port/path)")]
    BaseUrl { var: &'static str, url: String },
    #[error("the HTTP client for Access and Portal cannot be built: {0}")]
    Client(#[source] reqwest::Error),
}

/// What a cached permission depends on. Suspended, banned and system-admin
/// callers never reach Access, so of the master flags only
/// `membership_status` (forwarded to Access) can vary.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DecisionKey {
    tenant: Uuid,
    user: Uuid,
    permission: Permission,
    scope: Scope,
    membership_status: Option<String>,
}

/// What a caller's cached roles depend on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RolesKey {
    tenant: Uuid,
    user: Uuid,
    scope: Scope,
    membership_status: Option<String>,
}

/// What a cached membership depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MembershipKey {
    tenant: Uuid,
    user: Uuid,
    scope: Scope,
}

/// Why a look-up ended without an answer.
#[derive(Debug, Clone)]
struct Failure {
    /// HTTP status when the authority answered, else `None`.
    status: Option<u16>,
    detail: String,
}

impl Failure {
    fn new(status: Option<u16>, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
        }
    }
}

type Flight<V> = Shared<BoxFuture<'static, Result<V, Failure>>>;

struct Inner {
    http: reqwest::Client,
    /// `ACCESS_BASE_URL`, for the admin API ([`AccessAuthorizer::call_access`]).
    access_base: Url,
    access_url: Url,
    /// The path Access receives and verifies: base path + `/access/check`.
    access_path: String,
    portal_base: Url,
    secret: String,
    cache_ttl: Duration,
    negative_ttl: Duration,
    timeout: Duration,
    portal_stale_max: Duration,
    decisions: TtlCache<DecisionKey, bool>,
    memberships: TtlCache<MembershipKey, bool>,
    roles: TtlCache<RolesKey, Vec<String>>,
    decision_flights: Flights<DecisionKey, bool>,
    membership_flights: Flights<MembershipKey, bool>,
    stats: AccessStats,
    /// The service's registry, once the service reports to one.
    metrics: std::sync::OnceLock<Arc<crate::telemetry::metrics::Metrics>>,
}

impl Inner {
    /// A cache look-up, for `events_authz_cache_total`.
    fn observe_cache(&self, kind: &str, hit: bool) {
        if let Some(m) = self.metrics.get() {
            m.authz_cache
                .with_label_values(&[kind, if hit { "hit" } else { "miss" }])
                .inc();
        }
    }
}

/// Permissions from Access, memberships from Portal. Cheap to clone.
#[derive(Clone)]
pub struct AccessAuthorizer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AccessAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessAuthorizer")
            .field("access_url", &self.inner.access_url.as_str())
            .field("portal_base", &self.inner.portal_base.as_str())
            .finish_non_exhaustive()
    }
}

impl AccessAuthorizer {
    pub fn new(settings: AccessSettings) -> Result<Self, AccessSetupError> {
        let (access_url, access_path) = endpoint(&settings.access_base_url, &["access", "check"])
            .ok_or_else(|| AccessSetupError::BaseUrl {
            var: "ACCESS_BASE_URL",
            url: settings.access_base_url.to_string(),
        })?;
        if endpoint(&settings.portal_base_url, &["x"]).is_none() {
            return Err(AccessSetupError::BaseUrl {
                var: "PORTAL_SERVICE_URL",
                url: settings.portal_base_url.to_string(),
            });
        }
        let http = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            // gunicorn closes idle keep-alive connections after a few
            // seconds; a reused connection closed under us is retried once.
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            // Internal calls go straight to the service, never via a proxy
            // from the environment, and never follow a redirect elsewhere.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("updspace-events/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(AccessSetupError::Client)?;
        let keep = settings
            .cache_ttl
            .max(settings.negative_ttl)
            .max(settings.portal_stale_max);
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                access_base: settings.access_base_url.clone(),
                access_url,
                access_path,
                portal_base: settings.portal_base_url,
                secret: settings.secret,
                cache_ttl: settings.cache_ttl,
                negative_ttl: settings.negative_ttl,
                timeout: settings.timeout,
                portal_stale_max: settings.portal_stale_max,
                decisions: TtlCache::new(
                    settings.max_entries,
                    settings.cache_ttl.max(settings.negative_ttl),
                ),
                memberships: TtlCache::new(settings.max_entries, keep),
                roles: TtlCache::new(settings.max_entries, settings.cache_ttl),
                decision_flights: Flights::new(),
                membership_flights: Flights::new(),
                stats: AccessStats::default(),
                metrics: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Reports calls, their latency and cache look-ups to `metrics`
    /// (`events_authz_*`).
    pub fn report_to(&self, metrics: Arc<crate::telemetry::metrics::Metrics>) {
        let _ = self.inner.metrics.set(metrics);
    }

    /// The counters (for metrics).
    pub fn stats(&self) -> AccessStatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// The live counters.
    pub fn counters(&self) -> &AccessStats {
        &self.inner.stats
    }

    /// Forgets every cached answer about one user (after a grant or revoke
    /// made through this instance, say). Calls in flight still complete.
    pub fn invalidate_user(&self, tenant: Uuid, user: Uuid) {
        self.inner
            .decisions
            .retain(|k| !(k.tenant == tenant && k.user == user));
        self.inner
            .memberships
            .retain(|k| !(k.tenant == tenant && k.user == user));
        self.inner
            .roles
            .retain(|k| !(k.tenant == tenant && k.user == user));
    }

    /// Forgets every cached answer.
    pub fn invalidate_all(&self) {
        self.inner.decisions.retain(|_| false);
        self.inner.memberships.retain(|_| false);
        self.inner.roles.retain(|_| false);
    }

    /// One call to Access's API on behalf of `ctx` (its role and
    /// role-binding admin API, [`crate::authz::admin`]): `{ACCESS_BASE_URL}`
    /// followed by `segments` (each escaped) and `query`, signed with v1 over
    /// the path Access receives, with the caller's identity headers (canonical ids,
    /// `X-Master-Flags` always) and a compact JSON body when there is one.
    /// Whatever status Access answers with is returned with its body as JSON
    /// (`null` when empty or not JSON); no answer at all (unreachable,
    /// timed out, unreadable) is 503 `ACCESS_UNAVAILABLE`. The decision
    /// caches and counters are not involved.
    pub async fn call_access(
        &self,
        ctx: &InternalContext,
        method: reqwest::Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), AppError> {
        let inner = &self.inner;
        let unavailable = |detail: String| {
            tracing::warn!(
                authority = "access",
                error = %detail,
                request_id = %ctx.request_id,
                path = ?segments,
                "Access admin call failed"
            );
            AppError::Unavailable {
                code: ErrorCode::AccessUnavailable,
                message: "The access service could not be reached; try again shortly".into(),
            }
        };
        let (mut url, path) = endpoint(&inner.access_base, segments)
            .ok_or_else(|| unavailable("the Access URL cannot be built".into()))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let bytes = body
            .map(|b| serde_json::to_vec(b).unwrap_or_default())
            .unwrap_or_default();
        let caller = Caller::of(ctx);
        let ts = crate::auth::now_unix();
        let signature = sign_v1(
            &inner.secret,
            method.as_str(),
            &path,
            &bytes,
            &caller.request_id,
            ts,
        );
        let mut headers = caller
            .headers(true, ts, &signature)
            .map_err(|f| unavailable(f.detail))?;
        if body.is_some() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let response = inner
            .send(|| {
                inner
                    .http
                    .request(method.clone(), url.clone())
                    .headers(headers.clone())
                    .body(bytes.clone())
            })
            .await
            .map_err(|e| unavailable(format!("request failed: {e}")))?;
        let status = response.status();
        let answer = read_body_up_to(response, MAX_ADMIN_ANSWER_BYTES)
            .await
            .map_err(|f| unavailable(f.detail))?;
        let value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        Ok((status, value))
    }

    async fn permission(
        &self,
        ctx: &InternalContext,
        permission: Permission,
        scope: &Scope,
        budget: &CallBudget,
    ) -> Result<Option<bool>, AppError> {
        let inner = &self.inner;
        // The guard decides these before asking; repeated here so that no
        // caller of the authorizer can send them to Access: suspended or
        // banned callers are denied and system admins allowed without a call
        // (steps 2–3 in docs/authorization.md).
        if ctx.master_flags.is_suspended_or_banned() {
            return Ok(Some(false));
        }
        if ctx.master_flags.is_system_admin() {
            return Ok(Some(true));
        }
        let started = Instant::now();
        bump(&inner.stats.lookups);
        let caller = Caller::of(ctx);
        let key = DecisionKey {
            tenant: caller.tenant,
            user: caller.user,
            permission,
            scope: scope.clone(),
            membership_status: caller.membership_status.clone(),
        };
        let result = if let Some(allowed) = inner.decisions.fresh(&key, started) {
            bump(&inner.stats.decision_hits);
            inner.observe_cache("decision", true);
            Ok(Some(allowed))
        } else {
            bump(&inner.stats.decision_misses);
            inner.observe_cache("decision", false);
            // Joining a call already in flight costs the authority nothing.
            let joined = inner.decision_flights.lock().get(&key).cloned();
            let flight = match joined {
                Some(flight) => {
                    bump(&inner.stats.coalesced);
                    flight
                }
                None => {
                    let Some(permit) = budget.take().await else {
                        bump(&inner.stats.over_budget);
                        return Ok(None);
                    };
                    self.decision_flight(key, caller, permit)
                }
            };
            match tokio::time::timeout(inner.timeout, flight).await {
                Ok(Ok(allowed)) => Ok(Some(allowed)),
                Ok(Err(_)) | Err(_) => Err(AppError::Unavailable {
                    code: ErrorCode::AccessUnavailable,
                    message: "The access service could not be reached; try again shortly".into(),
                }),
            }
        };
        inner
            .stats
            .lookup_micros
            .fetch_add(micros(started.elapsed()), Ordering::Relaxed);
        result
    }

    /// The call deciding `key`: the one in flight, or a new one holding
    /// `permit` (the request's share of concurrent calls) until it is over.
    fn decision_flight(
        &self,
        key: DecisionKey,
        caller: Caller,
        permit: OwnedSemaphorePermit,
    ) -> Flight<bool> {
        let mut flights = self.inner.decision_flights.lock();
        if let Some(flight) = flights.get(&key) {
            bump(&self.inner.stats.coalesced);
            return flight.clone();
        }
        let inner = self.inner.clone();
        let task_key = key.clone();
        let task = tokio::spawn(async move {
            let result = inner
                .check_access(&caller, task_key.permission, &task_key.scope)
                .await;
            drop(permit);
            match &result {
                Ok(allowed) => {
                    let ttl = if *allowed {
                        inner.cache_ttl
                    } else {
                        inner.negative_ttl
                    };
                    if !ttl.is_zero() {
                        inner.decisions.insert(task_key.clone(), *allowed, ttl);
                    }
                }
                Err(failure) => {
                    bump(&inner.stats.access_failures);
                    let client_side = failure.status.is_some_and(|s| (400..500).contains(&s));
                    if client_side {
                        // Access refusing our request is a contract or
                        // configuration fault (signature, headers, body).
                        tracing::error!(
                            authority = "access",
                            status = failure.status,
                            error = %failure.detail,
                            request_id = %caller.request_id,
                            tenant_id = %caller.tenant,
                            user_id = %caller.user,
                            permission = task_key.permission.key(),
                            scope_type = task_key.scope.scope_type().as_str(),
                            scope_id = task_key.scope.scope_id().as_str(),
                            "Access refused the check; failing closed with 503"
                        );
                    } else {
                        tracing::warn!(
                            authority = "access",
                            status = failure.status,
                            error = %failure.detail,
                            request_id = %caller.request_id,
                            tenant_id = %caller.tenant,
                            permission = task_key.permission.key(),
                            "Access unavailable; failing closed with 503"
                        );
                    }
                }
            }
            // The answer is cached before the flight leaves the map, so a
            // new look-up finds one or the other.
            inner.decision_flights.lock().remove(&task_key);
            result
        });
        let cleanup = (self.inner.clone(), key.clone());
        let flight = async move {
            task.await.unwrap_or_else(|e| {
                // The task died before removing its entry (panic, runtime
                // shutdown): remove it, or the key would fail forever.
                let (inner, key) = cleanup;
                inner.decision_flights.lock().remove(&key);
                Err(Failure::new(None, format!("look-up task failed: {e}")))
            })
        }
        .boxed()
        .shared();
        flights.insert(key, flight.clone());
        flight
    }

    async fn resolve_memberships(
        &self,
        ctx: &InternalContext,
        scopes: &[Scope],
        budget: &CallBudget,
    ) -> Memberships {
        let inner = &self.inner;
        let mut out = Memberships::default();
        // Asked for suspended and banned callers too: membership (never
        // sent with their flags) tells a 403 from a 404 for them.
        let started = Instant::now();
        bump(&inner.stats.lookups);
        let caller = Caller::of(ctx);
        let mut seen = HashSet::new();
        let mut pending: Vec<(Scope, MembershipKey, Flight<bool>)> = Vec::new();
        for scope in scopes {
            if !seen.insert(scope) {
                continue;
            }
            if !membership_gated(scope.scope_type()) || !portal_addressable(scope.scope_id()) {
                continue;
            }
            let key = MembershipKey {
                tenant: caller.tenant,
                user: caller.user,
                scope: scope.clone(),
            };
            match inner.memberships.fresh(&key, started) {
                Some(member) => {
                    bump(&inner.stats.membership_hits);
                    inner.observe_cache("membership", true);
                    if member {
                        out.member_of.insert(scope.clone());
                    }
                }
                None => {
                    bump(&inner.stats.membership_misses);
                    inner.observe_cache("membership", false);
                    let joined = inner.membership_flights.lock().get(&key).cloned();
                    let flight = match joined {
                        Some(flight) => {
                            bump(&inner.stats.coalesced);
                            flight
                        }
                        None => {
                            let Some(permit) = budget.take().await else {
                                bump(&inner.stats.over_budget);
                                out.unknown.insert(scope.clone());
                                continue;
                            };
                            self.membership_flight(key.clone(), caller.clone(), permit)
                        }
                    };
                    pending.push((scope.clone(), key, flight));
                }
            }
        }
        if !pending.is_empty() {
            // One deadline for all of them; each answers on its own, so a
            // slow scope does not hold back the others' answers.
            let deadline = tokio::time::Instant::from_std(started) + inner.timeout;
            let answers = futures::future::join_all(
                pending
                    .iter()
                    .map(|(_, _, flight)| tokio::time::timeout_at(deadline, flight.clone())),
            )
            .await;
            let now = Instant::now();
            for ((scope, key, _), answer) in pending.into_iter().zip(answers) {
                let member = match answer {
                    Ok(Ok(member)) => Some(member),
                    Ok(Err(_)) | Err(_) => {
                        let last = inner.memberships.within(&key, now, inner.portal_stale_max);
                        if last.is_some() {
                            bump(&inner.stats.stale_memberships);
                        } else {
                            bump(&inner.stats.unknown_memberships);
                        }
                        last
                    }
                };
                match member {
                    Some(true) => {
                        out.member_of.insert(scope);
                    }
                    Some(false) => {}
                    None => {
                        out.unknown.insert(scope);
                    }
                }
            }
        }
        inner
            .stats
            .lookup_micros
            .fetch_add(micros(started.elapsed()), Ordering::Relaxed);
        out
    }

    fn membership_flight(
        &self,
        key: MembershipKey,
        caller: Caller,
        permit: OwnedSemaphorePermit,
    ) -> Flight<bool> {
        let mut flights = self.inner.membership_flights.lock();
        if let Some(flight) = flights.get(&key) {
            bump(&self.inner.stats.coalesced);
            return flight.clone();
        }
        let inner = self.inner.clone();
        let task_key = key.clone();
        let task = tokio::spawn(async move {
            let result = inner.check_membership(&caller, &task_key.scope).await;
            drop(permit);
            match &result {
                Ok(member) => {
                    let ttl = if *member {
                        inner.cache_ttl
                    } else {
                        inner.negative_ttl
                    };
                    // Stored even with a zero TTL: it is the last known
                    // answer, usable while Portal is unreachable.
                    inner.memberships.insert(task_key.clone(), *member, ttl);
                }
                Err(failure) => {
                    bump(&inner.stats.portal_failures);
                    tracing::warn!(
                        authority = "portal",
                        status = failure.status,
                        error = %failure.detail,
                        request_id = %caller.request_id,
                        tenant_id = %caller.tenant,
                        user_id = %caller.user,
                        scope_type = task_key.scope.scope_type().as_str(),
                        scope_id = task_key.scope.scope_id().as_str(),
                        "Portal membership lookup failed"
                    );
                }
            }
            inner.membership_flights.lock().remove(&task_key);
            result
        });
        let cleanup = (self.inner.clone(), key.clone());
        let flight = async move {
            task.await.unwrap_or_else(|e| {
                // The task died before removing its entry (panic, runtime
                // shutdown): remove it, or the key would fail forever.
                let (inner, key) = cleanup;
                inner.membership_flights.lock().remove(&key);
                Err(Failure::new(None, format!("look-up task failed: {e}")))
            })
        }
        .boxed()
        .shared();
        flights.insert(key, flight.clone());
        flight
    }
}

impl Authorizer for AccessAuthorizer {
    fn has_permission<'a>(
        &'a self,
        ctx: &'a InternalContext,
        permission: Permission,
        scope: &'a Scope,
        budget: &'a CallBudget,
    ) -> BoxFuture<'a, Result<Option<bool>, AppError>> {
        self.permission(ctx, permission, scope, budget).boxed()
    }

    fn memberships<'a>(
        &'a self,
        ctx: &'a InternalContext,
        scopes: &'a [Scope],
        budget: &'a CallBudget,
    ) -> BoxFuture<'a, Result<Memberships, AppError>> {
        async move { Ok(self.resolve_memberships(ctx, scopes, budget).await) }.boxed()
    }

    fn roles<'a>(
        &'a self,
        ctx: &'a InternalContext,
        scope: &'a Scope,
        budget: &'a CallBudget,
    ) -> BoxFuture<'a, Result<Vec<String>, AppError>> {
        self.effective_roles(ctx, scope, budget).boxed()
    }
}

impl AccessAuthorizer {
    /// The caller's roles of our service at `scope`, as Access's check
    /// reports them (`return_effective_permissions`), cached as long as a
    /// permission decision.
    async fn effective_roles(
        &self,
        ctx: &InternalContext,
        scope: &Scope,
        budget: &CallBudget,
    ) -> Result<Vec<String>, AppError> {
        let key = RolesKey {
            tenant: ctx.tenant_id,
            user: ctx.user_id,
            scope: scope.clone(),
            membership_status: ctx.master_flags.membership_status().map(str::to_string),
        };
        let cached = self.inner.roles.fresh(&key, std::time::Instant::now());
        self.inner.observe_cache("roles", cached.is_some());
        if let Some(roles) = cached {
            return Ok(roles);
        }
        let roles = self.roles_from_access(ctx, scope, budget).await?;
        self.inner
            .roles
            .insert(key, roles.clone(), self.inner.cache_ttl);
        Ok(roles)
    }

    async fn roles_from_access(
        &self,
        ctx: &InternalContext,
        scope: &Scope,
        budget: &CallBudget,
    ) -> Result<Vec<String>, AppError> {
        let unavailable = || AppError::Unavailable {
            code: ErrorCode::AccessUnavailable,
            message: "The caller's roles could not be read from the access service".into(),
        };
        let Some(_permit) = budget.take().await else {
            return Err(unavailable());
        };
        let body = calls::roles_check_body(&Caller::of(ctx), scope);
        let (status, answer) = self
            .call_access(
                ctx,
                reqwest::Method::POST,
                &["access", "check"],
                &[],
                Some(&body),
            )
            .await?;
        let Some(found) = answer["effective_roles"]
            .as_array()
            .filter(|_| status.is_success())
        else {
            tracing::warn!(authority = "access", %status, request_id = %ctx.request_id,
                "Access answered a check without effective_roles");
            return Err(unavailable());
        };
        let mut roles = vec![crate::authz::MEMBER_ROLE.to_string()];
        for role in found {
            let ours = role["service"]
                .as_str()
                .is_none_or(|s| s == crate::authz::admin::ACCESS_SERVICE);
            if let Some(name) = role["name"].as_str().filter(|_| ours)
                && !roles.iter().any(|r| r == name)
            {
                roles.push(name.to_string());
            }
        }
        Ok(roles)
    }
}

#[cfg(test)]
mod tests {
    use super::calls::check_body;
    use super::*;
    use crate::domain::ScopeId;
    use crate::domain::ScopeType;

    fn scope(t: ScopeType, id: &str) -> Scope {
        Scope::from_stored(t, ScopeId::parse(id).expect("scope id"))
    }

    #[test]
    fn access_path_follows_the_base_url() {
        for (base, path) in [
            ("http://access:8002/api/v1", "/api/v1/access/check"),
            ("http://access:8002/api/v1/", "/api/v1/access/check"),
            ("http://access:8002", "/access/check"),
            ("http://access:8002/", "/access/check"),
            ("http://access:8002/api/?x=1#f", "/api/access/check"),
            ("http://access:8002/a%20b", "/a b/access/check"),
        ] {
            let (url, signed) =
                endpoint(&Url::parse(base).expect("url"), &["access", "check"]).expect("endpoint");
            assert_eq!(signed, path, "{base}");
            assert_eq!(url.query(), None);
        }
    }

    #[test]
    fn portal_segments_are_escaped_and_signed_decoded() {
        let base = Url::parse("http://portal:8003/api/v1").expect("url");
        let (url, signed) =
            endpoint(&base, &["communities", "c 1?x=#y%z ü", "members", "u"]).expect("endpoint");
        assert_eq!(
            url.path(),
            "/api/v1/communities/c%201%3Fx=%23y%25z%20%C3%BC/members/u"
        );
        assert_eq!(signed, "/api/v1/communities/c 1?x=#y%z ü/members/u");
    }

    #[test]
    fn dot_segments_and_slashes_are_not_addressable() {
        for id in [".", "..", "a/b", "../teams/x", "a\\b"] {
            assert!(!portal_addressable(id), "{id}");
        }
        for id in ["c1", "...", ".a", "a.b", "%2F", "c 1"] {
            assert!(portal_addressable(id), "{id}");
        }
    }

    #[test]
    fn check_body_is_compact_and_ordered() {
        let caller = Caller {
            request_id: "r".into(),
            tenant: Uuid::parse_str("3F1C0A52-0000-4000-8000-000000000001").expect("uuid"),
            tenant_slug: "acme".into(),
            user: Uuid::parse_str("{3F1C0A52-0000-4000-8000-0000000000AA}").expect("uuid"),
            flags: None,
            membership_status: Some("active".into()),
        };
        let body = check_body(
            &caller,
            Permission::RsvpSet,
            &scope(ScopeType::Community, "c1"),
        );
        assert_eq!(
            String::from_utf8(body).expect("utf8"),
            r#"{"tenant_id":"3f1c0a52-0000-4000-8000-000000000001","user_id":"3f1c0a52-0000-4000-8000-0000000000aa","action":"events.rsvp.set","scope":{"type":"COMMUNITY","id":"c1"},"master_flags":{"suspended":false,"banned":false,"system_admin":false,"membership_status":"active"}}"#
        );
    }

    #[test]
    fn cache_is_fresh_then_stale_then_gone_and_bounded() {
        let cache: TtlCache<u32, bool> = TtlCache::new(16, Duration::from_millis(50));
        cache.insert(1, true, Duration::from_millis(10));
        let now = Instant::now();
        assert_eq!(cache.fresh(&1, now), Some(true));
        assert_eq!(cache.fresh(&1, now + Duration::from_millis(20)), None);
        assert_eq!(
            cache.within(
                &1,
                now + Duration::from_millis(20),
                Duration::from_millis(40)
            ),
            Some(true)
        );
        assert_eq!(
            cache.within(
                &1,
                now + Duration::from_millis(60),
                Duration::from_millis(40)
            ),
            None
        );
        for k in 0..1000 {
            cache.insert(k, false, Duration::from_secs(60));
        }
        assert!(cache.lock().len() <= 16);
    }
}
