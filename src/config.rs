//! Every setting of the service, read from the environment (or the matching
//! command-line flag) and validated before anything starts, so a wrong value
//! fails fast with a one-line message that names the variable to fix.

use crate::encoding::Encoding;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use url::Url;

/// The secret used when `EVENTS_DEV=1` and no secret is configured. It is the
/// value the platform's local development setup already uses.
pub const DEV_HMAC_SECRET: &str = "dev-internal-hmac";

/// Raw settings as given on the command line or in the environment. Every
/// field is a string so that validation (and its messages) stays ours.
#[derive(Debug, Clone, Default, Args)]
pub struct Settings {
    /// Postgres URL. The database is created if it does not exist.
    #[arg(long, env = "DATABASE_URL", global = true, value_name = "URL")]
    pub database_url: Option<String>,

    /// Maximum number of pooled Postgres connections.
    #[arg(
        long,
        env = "EVENTS_DB_MAX_CONNECTIONS",
        global = true,
        value_name = "N"
    )]
    pub db_max_connections: Option<String>,

    /// Run database migrations at `serve` start-up (true/false).
    #[arg(long, env = "EVENTS_AUTO_MIGRATE", global = true, value_name = "BOOL")]
    pub auto_migrate: Option<String>,

    /// NATS server URL(s), comma-separated.
    #[arg(long, env = "NATS_URL", global = true, value_name = "URL")]
    pub nats_url: Option<String>,

    /// NATS credentials file (JWT + nkey seed). Exclusive with user/password and token.
    #[arg(long, env = "NATS_CREDS_FILE", global = true, value_name = "PATH")]
    pub nats_creds_file: Option<String>,

    /// NATS user name (needs NATS_PASSWORD).
    #[arg(long, env = "NATS_USER", global = true, value_name = "USER")]
    pub nats_user: Option<String>,

    /// NATS password (needs NATS_USER).
    #[arg(
        long,
        env = "NATS_PASSWORD",
        global = true,
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub nats_password: Option<String>,

    /// NATS token.
    #[arg(
        long,
        env = "NATS_TOKEN",
        global = true,
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub nats_token: Option<String>,

    /// Prefix of this connection's reply subjects (JetStream API replies,
    /// publish acks, replies to `call`). With nats/nats-server.conf, each
    /// user may only read its own: `_INBOX_events`, `_INBOX_bff`, ... Default _INBOX.
    #[arg(long, env = "NATS_INBOX_PREFIX", global = true, value_name = "PREFIX")]
    pub nats_inbox_prefix: Option<String>,

    /// Address the HTTP gateway (BFF API, /health, /ready, /metrics) listens on.
    #[arg(
        long,
        env = "EVENTS_HTTP_ADDR",
        global = true,
        value_name = "HOST:PORT"
    )]
    pub http_addr: Option<String>,

    /// Shared secret for internal HMAC signatures (required unless EVENTS_DEV=1).
    #[arg(
        long,
        env = "BFF_INTERNAL_HMAC_SECRET",
        global = true,
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub hmac_secret: Option<String>,

    /// Previous HMAC secrets still accepted during a rotation, comma-separated.
    #[arg(
        long,
        env = "BFF_INTERNAL_HMAC_PREVIOUS_SECRETS",
        global = true,
        value_name = "LIST",
        hide_env_values = true
    )]
    pub hmac_previous_secrets: Option<String>,

    /// Lowest HMAC signature version accepted over HTTP: 1 (BFF legacy) or 2.
    #[arg(
        long,
        env = "EVENTS_HMAC_MIN_VERSION",
        global = true,
        value_name = "1|2"
    )]
    pub hmac_min_version: Option<String>,

    /// Authorization mode: `local` (embedded tables) or `access` (Access + Portal).
    /// Defaults to `access` when ACCESS_BASE_URL is set, else `local`.
    #[arg(long, env = "EVENTS_AUTHZ", global = true, value_name = "MODE")]
    pub authz: Option<String>,

    /// Base URL of the Access service, e.g. http://access:8002/api/v1.
    #[arg(long, env = "ACCESS_BASE_URL", global = true, value_name = "URL")]
    pub access_base_url: Option<String>,

    /// Base URL of the Portal service (membership authority).
    #[arg(long, env = "PORTAL_SERVICE_URL", global = true, value_name = "URL")]
    pub portal_service_url: Option<String>,

    /// `access` mode: how long an allow from Access (or a "member" from
    /// Portal) is reused, e.g. 30s; 0s disables the cache. Default 30s.
    #[arg(
        long,
        env = "EVENTS_AUTHZ_CACHE_TTL",
        global = true,
        value_name = "DURATION"
    )]
    pub authz_cache_ttl: Option<String>,

    /// `access` mode: how long a deny from Access (or a 404 "not a member"
    /// from Portal) is reused, e.g. 5s; 0s disables it. Default 5s.
    #[arg(
        long,
        env = "EVENTS_AUTHZ_NEGATIVE_TTL",
        global = true,
        value_name = "DURATION"
    )]
    pub authz_negative_ttl: Option<String>,

    /// `access` mode: deadline of one authorization look-up (connect and
    /// answer, all scopes of a list together), e.g. 2s. Default 2s.
    #[arg(
        long,
        env = "EVENTS_AUTHZ_TIMEOUT",
        global = true,
        value_name = "DURATION"
    )]
    pub authz_timeout: Option<String>,

    /// `access` mode: how long the last answer Portal gave may still be used
    /// while Portal is unreachable, e.g. 10m; 0s never uses one. Default 10m.
    #[arg(
        long,
        env = "EVENTS_PORTAL_STALE_MAX",
        global = true,
        value_name = "DURATION"
    )]
    pub portal_stale_max: Option<String>,

    /// `access` mode: most calls to Access and Portal one request may make
    /// (a list over more gated scopes than this answers what it could
    /// decide, with `meta.partial`). Default 32.
    #[arg(long, env = "EVENTS_AUTHZ_MAX_CALLS", global = true, value_name = "N")]
    pub authz_max_calls: Option<String>,

    /// First token of every NATS subject the service uses.
    #[arg(
        long,
        env = "EVENTS_SUBJECT_PREFIX",
        global = true,
        value_name = "PREFIX"
    )]
    pub subject_prefix: Option<String>,

    /// JetStream stream that receives the domain events.
    #[arg(long, env = "EVENTS_STREAM", global = true, value_name = "NAME")]
    pub stream: Option<String>,

    /// Maximum age of messages in the stream, e.g. 7d, 36h, 90m.
    #[arg(
        long,
        env = "EVENTS_STREAM_MAX_AGE",
        global = true,
        value_name = "DURATION"
    )]
    pub stream_max_age: Option<String>,

    /// Stream replicas: 1 for a single server, 3 in a cluster.
    #[arg(long, env = "EVENTS_STREAM_REPLICAS", global = true, value_name = "N")]
    pub stream_replicas: Option<String>,

    /// Stream duplicate window (at least 10m), e.g. 20m.
    #[arg(
        long,
        env = "EVENTS_STREAM_DUPLICATE_WINDOW",
        global = true,
        value_name = "DURATION"
    )]
    pub stream_duplicate_window: Option<String>,

    /// How long start-up waits for JetStream to answer for the stream while
    /// it cannot (a cluster electing a leader, a node restarting) before it
    /// exits with the reason, e.g. 2m. Default 2m.
    #[arg(
        long,
        env = "EVENTS_STREAM_STARTUP_WAIT",
        global = true,
        value_name = "DURATION"
    )]
    pub stream_startup_wait: Option<String>,

    /// Encoding of published domain events: msgpack or json.
    #[arg(
        long,
        env = "EVENTS_OUT_ENCODING",
        global = true,
        value_name = "ENCODING"
    )]
    pub out_encoding: Option<String>,

    /// Days to keep published outbox rows (for replay after a NATS data loss).
    #[arg(
        long,
        env = "EVENTS_RETENTION_PUBLISHED_OUTBOX_DAYS",
        global = true,
        value_name = "DAYS"
    )]
    pub retention_published_outbox_days: Option<String>,

    /// Largest accepted request body (HTTP and NATS), in bytes.
    #[arg(
        long,
        env = "EVENTS_MAX_BODY_BYTES",
        global = true,
        value_name = "BYTES"
    )]
    pub max_body_bytes: Option<String>,

    /// Deadline for one request, e.g. 5s (keep it well inside the BFF's 10 s).
    #[arg(
        long,
        env = "EVENTS_REQUEST_TIMEOUT",
        global = true,
        value_name = "DURATION"
    )]
    pub request_timeout: Option<String>,

    /// OTLP endpoint for traces, e.g. http://otel-collector:4318. Unset: no export.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        global = true,
        value_name = "URL"
    )]
    pub otel_endpoint: Option<String>,

    /// Service name reported in traces.
    #[arg(long, env = "OTEL_SERVICE_NAME", global = true, value_name = "NAME")]
    pub otel_service_name: Option<String>,

    /// Log filter in tracing's EnvFilter syntax, e.g. info or updspace_events=debug.
    #[arg(long, env = "RUST_LOG", global = true, value_name = "FILTER")]
    pub log_filter: Option<String>,

    /// Log format: json (one JSON object per line) or pretty (for humans).
    #[arg(long, env = "EVENTS_LOG_FORMAT", global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// A scope actor idle this long is stopped (its state lives in Postgres), e.g. 120s.
    #[arg(
        long,
        env = "EVENTS_ACTOR_IDLE_TIMEOUT",
        global = true,
        value_name = "DURATION"
    )]
    pub actor_idle_timeout: Option<String>,

    /// Most scope actors alive at once; beyond it the least recently used stop.
    #[arg(long, env = "EVENTS_MAX_LIVE_ACTORS", global = true, value_name = "N")]
    pub max_live_actors: Option<String>,

    /// RSVPs one instance keeps in its events' cached maps, across all of
    /// them (about 55 bytes each); events beyond it are served from
    /// Postgres for the caller's own RSVP. Default 1000000.
    #[arg(long, env = "EVENTS_MAX_CACHED_RSVPS", global = true, value_name = "N")]
    pub max_cached_rsvps: Option<String>,

    /// With several instances, hand each RSVP write to the instance that
    /// owns its scope, so one instance's group commit batches all of a
    /// scope's RSVPs. Default true.
    #[arg(long, env = "EVENTS_ROUTE_WRITES", global = true, value_name = "BOOL")]
    pub route_writes: Option<String>,

    /// Signed requests one instance remembers to refuse their replays
    /// (about 20 bytes each, kept 5 minutes). When full, requests are
    /// checked in the shared replay bucket instead. Default 4000000.
    #[arg(long, env = "EVENTS_REPLAY_MEMORY", global = true, value_name = "N")]
    pub replay_memory: Option<String>,

    /// Reminders of an event created without `reminders`, in minutes
    /// before its start, comma-separated (e.g. `1440,60`). Default: none.
    #[arg(
        long,
        env = "EVENTS_DEFAULT_REMINDERS",
        global = true,
        value_name = "MINUTES"
    )]
    pub default_reminders: Option<String>,

    /// How often the reminder scheduler looks for reminders due, e.g. 1s.
    #[arg(
        long,
        env = "EVENTS_REMINDER_POLL",
        global = true,
        value_name = "DURATION"
    )]
    pub reminder_poll: Option<String>,

    /// Shifts the service's clock (RSVP windows, reminders, the times
    /// changes carry) by this much, e.g. `-90s` or `25h`. For tests and
    /// rehearsals only; signatures are always checked against the real
    /// clock. Default 0.
    #[arg(
        long,
        env = "EVENTS_CLOCK_OFFSET",
        global = true,
        value_name = "DURATION",
        allow_hyphen_values = true
    )]
    pub clock_offset: Option<String>,

    /// Requests one calendar feed token may make per minute on one
    /// instance (`GET /feeds/<token>.ics`); more are answered 429 with
    /// Retry-After. Default 30.
    #[arg(
        long,
        env = "EVENTS_FEED_RATE_PER_MINUTE",
        global = true,
        value_name = "N"
    )]
    pub feed_rate_per_minute: Option<String>,

    /// Base URL of the Activity service (e.g. http://activity:8004/api/v1);
    /// when set, the Activity bridge delivers every domain event to
    /// `{url}/events/ingest`.
    #[arg(long, env = "ACTIVITY_SERVICE_URL", global = true, value_name = "URL")]
    pub activity_service_url: Option<String>,

    /// Deadline of one delivery to Activity, e.g. 5s.
    #[arg(
        long,
        env = "EVENTS_ACTIVITY_TIMEOUT",
        global = true,
        value_name = "DURATION"
    )]
    pub activity_timeout: Option<String>,

    /// Longest pause between two attempts to deliver one event to Activity
    /// (the pause doubles from 250ms up to it), e.g. 30s.
    #[arg(
        long,
        env = "EVENTS_ACTIVITY_RETRY_MAX",
        global = true,
        value_name = "DURATION"
    )]
    pub activity_retry_max: Option<String>,

    /// Live streams (`GET /stream`) one instance serves at most; over it,
    /// 503 `TOO_MANY_STREAMS`. Default 10000.
    #[arg(
        long,
        env = "EVENTS_SSE_MAX_CONNECTIONS",
        global = true,
        value_name = "N"
    )]
    pub sse_max_connections: Option<String>,

    /// Messages a live stream's client may fall behind before it is
    /// dropped (it resumes with `Last-Event-ID`). Default 1024.
    #[arg(long, env = "EVENTS_SSE_BUFFER", global = true, value_name = "N")]
    pub sse_buffer: Option<String>,

    /// Silence after which a live stream sends a keep-alive comment, e.g. 15s.
    #[arg(
        long,
        env = "EVENTS_SSE_KEEPALIVE",
        global = true,
        value_name = "DURATION"
    )]
    pub sse_keepalive: Option<String>,

    /// How far ahead the occurrences of recurring events exist, in days.
    /// Default 400.
    #[arg(
        long,
        env = "EVENTS_SERIES_HORIZON_DAYS",
        global = true,
        value_name = "DAYS"
    )]
    pub series_horizon_days: Option<String>,

    /// How often the series extender makes the occurrences that came within
    /// the horizon, e.g. 1h. Default 1h.
    #[arg(
        long,
        env = "EVENTS_SERIES_EXTEND_INTERVAL",
        global = true,
        value_name = "DURATION"
    )]
    pub series_extend_interval: Option<String>,

    /// How often the outbox publisher looks for rows written elsewhere, e.g. 500ms.
    #[arg(
        long,
        env = "EVENTS_OUTBOX_POLL_INTERVAL",
        global = true,
        value_name = "DURATION"
    )]
    pub outbox_poll_interval: Option<String>,

    /// Failed publish attempts before an outbox row is marked dead (NATS
    /// outages do not count).
    #[arg(
        long,
        env = "EVENTS_OUTBOX_MAX_ATTEMPTS",
        global = true,
        value_name = "N"
    )]
    pub outbox_max_attempts: Option<String>,

    /// Longest wait between two publish attempts of a row, e.g. 5m.
    #[arg(
        long,
        env = "EVENTS_OUTBOX_BACKOFF_MAX",
        global = true,
        value_name = "DURATION"
    )]
    pub outbox_backoff_max: Option<String>,

    /// Development mode (1/true): allows a missing BFF_INTERNAL_HMAC_SECRET
    /// (then `dev-internal-hmac` is used) and nothing else.
    #[arg(long, env = "EVENTS_DEV", global = true, value_name = "BOOL")]
    pub dev: Option<String>,
}

/// A setting that cannot be used, with the variable to fix.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl ConfigError {
    fn new(var: &'static str, message: impl Into<String>) -> Self {
        Self {
            var,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
    pub auto_migrate: bool,
    /// How long a query waits for a pooled connection (or for Postgres to
    /// accept a new one) before it fails.
    pub acquire_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsAuth {
    None,
    CredsFile(String),
    UserPassword { user: String, password: String },
    Token(String),
}

#[derive(Debug, Clone)]
pub struct NatsConfig {
    pub url: String,
    pub auth: NatsAuth,
    pub subject_prefix: String,
    /// Where replies to this connection's requests arrive (`<prefix>.<id>`).
    pub inbox_prefix: String,
}

#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub name: String,
    pub max_age: Duration,
    pub replicas: usize,
    pub duplicate_window: Duration,
    /// How long start-up waits for JetStream (EVENTS_STREAM_STARTUP_WAIT).
    pub startup_wait: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthzMode {
    Local,
    Access,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct HmacConfig {
    /// The first secret signs outgoing calls; all are accepted.
    pub secrets: Vec<String>,
    pub min_version: u8,
    /// True when the secret is the development default.
    pub using_dev_secret: bool,
}

#[derive(Debug, Clone)]
pub struct AuthzConfig {
    pub mode: AuthzMode,
    pub access_base_url: Option<Url>,
    pub portal_service_url: Url,
    /// `access` mode: reuse of an allow / a membership (EVENTS_AUTHZ_CACHE_TTL).
    pub cache_ttl: Duration,
    /// `access` mode: reuse of a deny / a non-membership (EVENTS_AUTHZ_NEGATIVE_TTL).
    pub negative_ttl: Duration,
    /// `access` mode: deadline of one look-up (EVENTS_AUTHZ_TIMEOUT).
    pub timeout: Duration,
    /// `access` mode: oldest Portal answer usable while Portal is down (EVENTS_PORTAL_STALE_MAX).
    pub portal_stale_max: Duration,
    /// `access` mode: most authority calls per request (EVENTS_AUTHZ_MAX_CALLS).
    pub max_calls: usize,
}

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub log_filter: String,
    pub log_format: LogFormat,
    pub otlp_endpoint: Option<Url>,
    pub service_name: String,
}

/// Scope actors and their registry.
#[derive(Debug, Clone)]
pub struct ActorConfig {
    /// A scope actor idle this long is stopped (its state is in Postgres).
    pub idle_timeout: Duration,
    /// How often idle actors are looked for.
    pub sweep_interval: Duration,
    /// Above this many live actors, the least recently used are stopped.
    pub max_live_actors: usize,
    /// Entries of the cached RSVP maps of all events together.
    pub max_cached_rsvps: usize,
    /// Most commands committed in one transaction.
    pub max_batch: usize,
    /// How long a cached event may be served without re-reading it. Changes
    /// made through any instance invalidate it sooner (see `docs/`).
    pub cache_ttl: Duration,
    pub max_cached_events_per_scope: usize,
    /// Group commits one scope actor may have in flight at once. Postgres
    /// row locks keep them correct; more than one lets a busy scope use
    /// more than one connection.
    pub max_in_flight_batches: usize,
    /// How long after start-up, and after the last sign of another
    /// instance, cached reads are checked against Postgres.
    pub peer_grace: Duration,
    /// RSVP writes go to the instance that owns their scope.
    pub route_writes: bool,
}

impl ActorConfig {
    /// The sweep interval that goes with an idle timeout: a quarter of it,
    /// within [50ms, 10s], so an idle actor stops at most ~25% late.
    pub fn sweep_interval_for(idle_timeout: Duration) -> Duration {
        (idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(10))
    }
}

impl Default for ActorConfig {
    fn default() -> Self {
        let idle_timeout = Duration::from_secs(120);
        Self {
            idle_timeout,
            sweep_interval: Self::sweep_interval_for(idle_timeout),
            max_live_actors: 4_096,
            max_cached_rsvps: crate::actors::MAX_CACHED_RSVPS_PER_INSTANCE,
            max_batch: 512,
            cache_ttl: Duration::from_secs(5),
            max_cached_events_per_scope: 1_000,
            max_in_flight_batches: 2,
            peer_grace: Duration::from_secs(15),
            route_writes: true,
        }
    }
}

/// The outbox publisher.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    pub batch: i64,
    /// Rows written by other instances (or before a restart) are found by
    /// polling at this interval; local commits wake the publisher at once.
    pub poll_interval: Duration,
    pub max_attempts: i32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub encoding: Encoding,
    /// The stream whose duplicate window a retry is weighed against, where
    /// a row that may have outlived it is looked for, and which is asked
    /// whether a publish nobody answered was an outage.
    pub stream: String,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            batch: 2000,
            poll_interval: Duration::from_millis(500),
            max_attempts: 50,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            encoding: Encoding::Msgpack,
            stream: "EVENTS".to_string(),
        }
    }
}

/// The Activity bridge: where it delivers, and how patiently.
#[derive(Debug, Clone)]
pub struct ActivityConfig {
    /// `ACTIVITY_SERVICE_URL`; the bridge runs only when it is set.
    pub url: Option<Url>,
    pub timeout: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for ActivityConfig {
    fn default() -> Self {
        Self {
            url: None,
            timeout: Duration::from_secs(5),
            retry_min: Duration::from_millis(250),
            retry_max: Duration::from_secs(30),
        }
    }
}

impl ActivityConfig {
    pub fn load(s: &Settings) -> Result<Self, ConfigError> {
        let d = Self::default();
        let url = match value(&s.activity_service_url) {
            None => None,
            Some(text) => Some(parse_http_url("ACTIVITY_SERVICE_URL", text)?),
        };
        let retry_max = parse_duration_var(
            "EVENTS_ACTIVITY_RETRY_MAX",
            &s.activity_retry_max,
            d.retry_max,
            Duration::from_millis(10),
        )?;
        Ok(Self {
            url,
            timeout: parse_duration_var(
                "EVENTS_ACTIVITY_TIMEOUT",
                &s.activity_timeout,
                d.timeout,
                Duration::from_millis(100),
            )?,
            retry_min: d.retry_min.min(retry_max),
            retry_max,
        })
    }
}

/// Limits of the live streams (`GET /stream`) of one instance.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Open streams at most (`EVENTS_SSE_MAX_CONNECTIONS`); over it, 503.
    pub max_connections: usize,
    /// Messages a connection may fall behind before it is dropped
    /// (`EVENTS_SSE_BUFFER`).
    pub buffer: usize,
    /// A comment line is sent after this long without a message
    /// (`EVENTS_SSE_KEEPALIVE`).
    pub keepalive: Duration,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            buffer: 1024,
            keepalive: Duration::from_secs(15),
        }
    }
}

impl LiveConfig {
    fn load(s: &Settings) -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            max_connections: parse_number(
                "EVENTS_SSE_MAX_CONNECTIONS",
                &s.sse_max_connections,
                d.max_connections,
                1,
                1_000_000,
            )?,
            buffer: parse_number("EVENTS_SSE_BUFFER", &s.sse_buffer, d.buffer, 1, 1_000_000)?,
            keepalive: parse_duration_var(
                "EVENTS_SSE_KEEPALIVE",
                &s.sse_keepalive,
                d.keepalive,
                Duration::from_millis(50),
            )?,
        })
    }
}

/// Recurring events: how far ahead occurrences exist, and the extender.
#[derive(Debug, Clone, Copy)]
pub struct SeriesConfig {
    /// `EVENTS_SERIES_HORIZON_DAYS` and at most 500 occurrences made at once.
    pub horizon: crate::domain::Horizon,
    /// `EVENTS_SERIES_EXTEND_INTERVAL`.
    pub extend_interval: Duration,
    /// The service's clock (`EVENTS_CLOCK_OFFSET`): the extender goes by it.
    pub clock: Clock,
}

impl Default for SeriesConfig {
    fn default() -> Self {
        Self {
            horizon: crate::domain::Horizon::default(),
            extend_interval: Duration::from_secs(3600),
            clock: Clock::default(),
        }
    }
}

/// The service's clock: the real one, shifted by `EVENTS_CLOCK_OFFSET`.
/// Every time the service decides by (RSVP windows, reminders due, the
/// times changes carry) is read from it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    offset: chrono::TimeDelta,
}

impl Clock {
    pub fn shifted(offset: chrono::TimeDelta) -> Self {
        Self { offset }
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + self.offset
    }

    pub fn offset(&self) -> chrono::TimeDelta {
        self.offset
    }
}

/// RSVP rules the service applies: default reminders, the scheduler's
/// pace, the clock.
#[derive(Debug, Clone)]
pub struct RsvpConfig {
    /// `EVENTS_DEFAULT_REMINDERS`.
    pub default_reminders: crate::domain::Reminders,
    /// `EVENTS_REMINDER_POLL`.
    pub reminder_poll: Duration,
    /// `EVENTS_CLOCK_OFFSET`.
    pub clock: Clock,
}

impl Default for RsvpConfig {
    fn default() -> Self {
        Self {
            default_reminders: crate::domain::Reminders::none(),
            reminder_poll: Duration::from_secs(1),
            clock: Clock::default(),
        }
    }
}

impl SeriesConfig {
    fn load(s: &Settings, clock: Clock) -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            horizon: crate::domain::Horizon {
                days: parse_number(
                    "EVENTS_SERIES_HORIZON_DAYS",
                    &s.series_horizon_days,
                    d.horizon.days,
                    1,
                    3660,
                )?,
                ..d.horizon
            },
            extend_interval: parse_duration_var(
                "EVENTS_SERIES_EXTEND_INTERVAL",
                &s.series_extend_interval,
                d.extend_interval,
                Duration::from_millis(50),
            )?,
            clock,
        })
    }

    /// The time the extender goes by.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// Occurrences exist up to here.
    pub fn horizon_end(&self) -> chrono::DateTime<chrono::Utc> {
        self.now() + chrono::Duration::days(i64::from(self.horizon.days))
    }
}

impl RsvpConfig {
    fn load(s: &Settings) -> Result<Self, ConfigError> {
        let d = Self::default();
        let default_reminders = match value(&s.default_reminders) {
            None => d.default_reminders,
            Some(text) => {
                let minutes: Result<Vec<i64>, _> = text
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::parse::<i64>)
                    .collect();
                let minutes = minutes.map_err(|_| {
                    ConfigError::new(
                        "EVENTS_DEFAULT_REMINDERS",
                        format!("'{text}' is not a comma-separated list of minutes, e.g. 1440,60"),
                    )
                })?;
                crate::domain::Reminders::new(&minutes)
                    .map_err(|e| ConfigError::new("EVENTS_DEFAULT_REMINDERS", e.into_message()))?
            }
        };
        let reminder_poll = parse_duration_var(
            "EVENTS_REMINDER_POLL",
            &s.reminder_poll,
            d.reminder_poll,
            Duration::from_millis(10),
        )?;
        let clock = match value(&s.clock_offset) {
            None => d.clock,
            Some(text) => {
                let (negative, magnitude) = match text.strip_prefix('-') {
                    Some(rest) => (true, rest),
                    None => (false, text.strip_prefix('+').unwrap_or(text)),
                };
                let offset = parse_duration(magnitude)
                    .and_then(|d| chrono::TimeDelta::from_std(d).ok())
                    .ok_or_else(|| {
                        ConfigError::new(
                            "EVENTS_CLOCK_OFFSET",
                            format!("'{text}' is not a duration such as -90s or 25h"),
                        )
                    })?;
                Clock::shifted(if negative { -offset } else { offset })
            }
        };
        Ok(Self {
            default_reminders,
            reminder_poll,
            clock,
        })
    }
}

/// The validated configuration of `serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseConfig,
    pub nats: NatsConfig,
    pub stream: StreamConfig,
    pub http_addr: SocketAddr,
    pub hmac: HmacConfig,
    pub authz: AuthzConfig,
    pub out_encoding: Encoding,
    pub retention_published_outbox_days: u32,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// Entries of the per-instance replay memory (EVENTS_REPLAY_MEMORY).
    pub replay_memory: usize,
    /// Feed requests per token and minute (EVENTS_FEED_RATE_PER_MINUTE).
    pub feed_rate_per_minute: u32,
    pub telemetry: TelemetryConfig,
    pub actors: ActorConfig,
    pub outbox: OutboxConfig,
    pub live: LiveConfig,
    pub activity: ActivityConfig,
    pub series: SeriesConfig,
    pub rsvp: RsvpConfig,
    pub dev: bool,
}

fn value(raw: &Option<String>) -> Option<&str> {
    // An empty variable counts as unset, as in the service this one replaces.
    raw.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn parse_bool(var: &'static str, raw: &Option<String>, default: bool) -> Result<bool, ConfigError> {
    match value(raw).map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(other) => Err(ConfigError::new(
            var,
            format!("'{other}' is not a boolean; use true or false"),
        )),
    }
}

fn parse_number<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
    var: &'static str,
    raw: &Option<String>,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    let Some(text) = value(raw) else {
        return Ok(default);
    };
    match text.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(ConfigError::new(
            var,
            format!("'{text}' is not a whole number between {min} and {max}"),
        )),
    }
}

/// Parses `90`, `90s`, `15m`, `36h`, `7d` or `250ms`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs);
    match unit {
        "" | "s" => secs(1),
        "ms" => Some(Duration::from_millis(n)),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => None,
    }
}

fn parse_duration_var(
    var: &'static str,
    raw: &Option<String>,
    default: Duration,
    min: Duration,
) -> Result<Duration, ConfigError> {
    let Some(text) = value(raw) else {
        return Ok(default);
    };
    match parse_duration(text) {
        Some(d) if d >= min => Ok(d),
        Some(_) => Err(ConfigError::new(
            var,
            format!(
                "'{text}' is too short; the minimum is {}s",
                min.as_secs_f64()
            ),
        )),
        None => Err(ConfigError::new(
            var,
            format!("'{text}' is not a duration; write e.g. 90s, 15m, 36h or 7d"),
        )),
    }
}

fn parse_http_url(var: &'static str, text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text)
        .map_err(|e| ConfigError::new(var, format!("'{text}' is not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::new(
            var,
            format!("'{text}' must be an http:// or https:// URL with a host"),
        ));
    }
    Ok(url)
}

fn is_subject_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl DatabaseConfig {
    pub fn load(s: &Settings) -> Result<Self, ConfigError> {
        let url = value(&s.database_url)
            .unwrap_or("postgres://postgres@127.0.0.1:5432/events")
            .to_string();
        let parsed = Url::parse(&url).map_err(|e| {
            ConfigError::new(
                "DATABASE_URL",
                format!("'{}' is not a valid URL ({e})", redact(&url)),
            )
        })?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(ConfigError::new(
                "DATABASE_URL",
                format!("'{}' must start with postgres://", redact(&url)),
            ));
        }
        if parsed.path().trim_start_matches('/').is_empty() {
            return Err(ConfigError::new(
                "DATABASE_URL",
                format!(
                    "'{}' names no database; add one, e.g. /events",
                    redact(&url)
                ),
            ));
        }
        Ok(Self {
            url,
            max_connections: parse_number(
                "EVENTS_DB_MAX_CONNECTIONS",
                &s.db_max_connections,
                16,
                1,
                1000,
            )?,
            auto_migrate: parse_bool("EVENTS_AUTO_MIGRATE", &s.auto_migrate, true)?,
            acquire_timeout: Duration::from_secs(5),
        })
    }

    /// The database name in the URL.
    pub fn database_name(&self) -> String {
        Url::parse(&self.url)
            .map(|u| u.path().trim_start_matches('/').to_string())
            .unwrap_or_default()
    }
}

/// Hides the password of a URL before it is printed or logged.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl NatsConfig {
    pub fn load(s: &Settings) -> Result<Self, ConfigError> {
        let url = value(&s.nats_url)
            .unwrap_or("nats://127.0.0.1:4222")
            .to_string();
        for part in url.split(',') {
            let part = part.trim();
            let ok = Url::parse(part)
                .map(|u| {
                    matches!(u.scheme(), "nats" | "tls" | "ws" | "wss") && u.host_str().is_some()
                })
                .unwrap_or(false);
            if !ok {
                return Err(ConfigError::new(
                    "NATS_URL",
                    format!(
                        "'{}' is not a NATS URL; write e.g. nats://127.0.0.1:4222",
                        redact(part)
                    ),
                ));
            }
        }
        let creds = value(&s.nats_creds_file);
        let user = value(&s.nats_user);
        let password = value(&s.nats_password);
        let token = value(&s.nats_token);
        let chosen = [
            creds.is_some(),
            user.is_some() || password.is_some(),
            token.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if chosen > 1 {
            return Err(ConfigError::new(
                "NATS_CREDS_FILE",
                "set only one of NATS_CREDS_FILE, NATS_USER+NATS_PASSWORD or NATS_TOKEN",
            ));
        }
        let auth = match (creds, user, password, token) {
            (Some(path), ..) => {
                if !std::path::Path::new(path).is_file() {
                    return Err(ConfigError::new(
                        "NATS_CREDS_FILE",
                        format!("'{path}' is not a readable file"),
                    ));
                }
                NatsAuth::CredsFile(path.to_string())
            }
            (None, Some(user), Some(password), None) => NatsAuth::UserPassword {
                user: user.to_string(),
                password: password.to_string(),
            },
            (None, Some(_), None, None) => {
                return Err(ConfigError::new(
                    "NATS_PASSWORD",
                    "NATS_USER is set, so set NATS_PASSWORD too",
                ));
            }
            (None, None, Some(_), None) => {
                return Err(ConfigError::new(
                    "NATS_USER",
                    "NATS_PASSWORD is set, so set NATS_USER too",
                ));
            }
            (None, None, None, Some(token)) => NatsAuth::Token(token.to_string()),
            _ => NatsAuth::None,
        };
        let subject_prefix = value(&s.subject_prefix).unwrap_or("events").to_string();
        if !is_subject_token(&subject_prefix) {
            return Err(ConfigError::new(
                "EVENTS_SUBJECT_PREFIX",
                format!(
                    "'{subject_prefix}' must be one subject token of letters, digits, '-' or '_'"
                ),
            ));
        }
        let inbox_prefix = value(&s.nats_inbox_prefix).unwrap_or("_INBOX").to_string();
        if !inbox_prefix.split('.').all(is_subject_token) {
            return Err(ConfigError::new(
                "NATS_INBOX_PREFIX",
                format!(
                    "'{inbox_prefix}' must be subject tokens of letters, digits, '-' or '_' joined by '.', e.g. _INBOX_events"
                ),
            ));
        }
        Ok(Self {
            url,
            auth,
            subject_prefix,
            inbox_prefix,
        })
    }
}

impl StreamConfig {
    pub fn load(s: &Settings) -> Result<Self, ConfigError> {
        let name = value(&s.stream).unwrap_or("EVENTS").to_string();
        if !is_subject_token(&name) {
            return Err(ConfigError::new(
                "EVENTS_STREAM",
                format!("'{name}' is not a valid stream name (letters, digits, '-' or '_')"),
            ));
        }
        Ok(Self {
            name,
            max_age: parse_duration_var(
                "EVENTS_STREAM_MAX_AGE",
                &s.stream_max_age,
                Duration::from_secs(7 * 86_400),
                Duration::from_secs(60),
            )?,
            replicas: parse_number("EVENTS_STREAM_REPLICAS", &s.stream_replicas, 1, 1, 5)?,
            duplicate_window: parse_duration_var(
                "EVENTS_STREAM_DUPLICATE_WINDOW",
                &s.stream_duplicate_window,
                Duration::from_secs(20 * 60),
                Duration::from_secs(10 * 60),
            )?,
            startup_wait: parse_duration_var(
                "EVENTS_STREAM_STARTUP_WAIT",
                &s.stream_startup_wait,
                Duration::from_secs(120),
                Duration::from_secs(1),
            )?,
        })
    }
}

impl HmacConfig {
    pub fn load(s: &Settings, dev: bool) -> Result<Self, ConfigError> {
        let (first, using_dev_secret) = match value(&s.hmac_secret) {
            Some(secret) => (secret.to_string(), false),
            None if dev => (DEV_HMAC_SECRET.to_string(), true),
            None => {
                return Err(ConfigError::new(
                    "BFF_INTERNAL_HMAC_SECRET",
                    "is not set; set it to the secret shared with the BFF, or set EVENTS_DEV=1 for local development",
                ));
            }
        };
        let mut secrets = vec![first];
        if let Some(list) = value(&s.hmac_previous_secrets) {
            secrets.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_string),
            );
        }
        let min_version = match value(&s.hmac_min_version) {
            None | Some("1") => 1,
            Some("2") => 2,
            Some(other) => {
                return Err(ConfigError::new(
                    "EVENTS_HMAC_MIN_VERSION",
                    format!("'{other}' is not a signature version; use 1 or 2"),
                ));
            }
        };
        Ok(Self {
            secrets,
            min_version,
            using_dev_secret,
        })
    }
}

impl AuthzConfig {
    pub fn load(s: &Settings) -> Result<Self, ConfigError> {
        let access_base_url = value(&s.access_base_url)
            .map(|u| parse_http_url("ACCESS_BASE_URL", u))
            .transpose()?;
        let portal_service_url = parse_http_url(
            "PORTAL_SERVICE_URL",
            value(&s.portal_service_url).unwrap_or("http://portal:8003/api/v1"),
        )?;
        let mode = match value(&s.authz) {
            None if access_base_url.is_some() => AuthzMode::Access,
            None | Some("local") => AuthzMode::Local,
            Some("access") => AuthzMode::Access,
            Some(other) => {
                return Err(ConfigError::new(
                    "EVENTS_AUTHZ",
                    format!("'{other}' is not a mode; use local or access"),
                ));
            }
        };
        if mode == AuthzMode::Access && access_base_url.is_none() {
            return Err(ConfigError::new(
                "ACCESS_BASE_URL",
                "is required when EVENTS_AUTHZ=access; set it, e.g. http://access:8002/api/v1",
            ));
        }
        if mode == AuthzMode::Access {
            // The HTTP client is built without TLS (internal calls are plain
            // http inside the cluster): say so now rather than 503 later.
            for (var, url) in [
                ("ACCESS_BASE_URL", access_base_url.as_ref()),
                ("PORTAL_SERVICE_URL", Some(&portal_service_url)),
            ] {
                if let Some(url) = url
                    && url.scheme() != "http"
                {
                    return Err(ConfigError::new(
                        var,
                        format!(
                            "'{url}': only http:// is supported for calls to Access and Portal (use the in-cluster address or a TLS sidecar)"
                        ),
                    ));
                }
            }
        }
        Ok(Self {
            mode,
            access_base_url,
            portal_service_url,
            cache_ttl: parse_duration_var(
                "EVENTS_AUTHZ_CACHE_TTL",
                &s.authz_cache_ttl,
                Duration::from_secs(30),
                Duration::ZERO,
            )?,
            negative_ttl: parse_duration_var(
                "EVENTS_AUTHZ_NEGATIVE_TTL",
                &s.authz_negative_ttl,
                Duration::from_secs(5),
                Duration::ZERO,
            )?,
            timeout: parse_duration_var(
                "EVENTS_AUTHZ_TIMEOUT",
                &s.authz_timeout,
                Duration::from_secs(2),
                Duration::from_millis(50),
            )?,
            portal_stale_max: parse_duration_var(
                "EVENTS_PORTAL_STALE_MAX",
                &s.portal_stale_max,
                Duration::from_secs(600),
                Duration::ZERO,
            )?,
            max_calls: parse_number("EVENTS_AUTHZ_MAX_CALLS", &s.authz_max_calls, 32, 1, 10_000)?,
        })
    }
}

impl TelemetryConfig {
    pub fn load(s: &Settings) -> Result<Self, ConfigError> {
        let log_filter = value(&s.log_filter).unwrap_or("info").to_string();
        if tracing_subscriber::EnvFilter::try_new(&log_filter).is_err() {
            return Err(ConfigError::new(
                "RUST_LOG",
                format!(
                    "'{log_filter}' is not a valid log filter; write e.g. info or updspace_events=debug"
                ),
            ));
        }
        let log_format = match value(&s.log_format) {
            None | Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => {
                return Err(ConfigError::new(
                    "EVENTS_LOG_FORMAT",
                    format!("'{other}' is not a log format; use json or pretty"),
                ));
            }
        };
        let otlp_endpoint = value(&s.otel_endpoint)
            .map(|u| parse_http_url("OTEL_EXPORTER_OTLP_ENDPOINT", u))
            .transpose()?;
        Ok(Self {
            log_filter,
            log_format,
            otlp_endpoint,
            service_name: value(&s.otel_service_name).unwrap_or("events").to_string(),
        })
    }
}

/// `EVENTS_DEV`.
pub fn dev_mode(s: &Settings) -> Result<bool, ConfigError> {
    parse_bool("EVENTS_DEV", &s.dev, false)
}

/// `EVENTS_OUT_ENCODING`.
pub fn out_encoding(s: &Settings) -> Result<Encoding, ConfigError> {
    match value(&s.out_encoding) {
        None | Some("msgpack") => Ok(Encoding::Msgpack),
        Some("json") => Ok(Encoding::Json),
        Some(other) => Err(ConfigError::new(
            "EVENTS_OUT_ENCODING",
            format!("'{other}' is not an encoding; use msgpack or json"),
        )),
    }
}

/// `EVENTS_RETENTION_PUBLISHED_OUTBOX_DAYS`.
pub fn retention_days(s: &Settings) -> Result<u32, ConfigError> {
    parse_number(
        "EVENTS_RETENTION_PUBLISHED_OUTBOX_DAYS",
        &s.retention_published_outbox_days,
        30,
        1,
        3650,
    )
}

/// The outbox publisher's settings.
pub fn outbox_config(s: &Settings) -> Result<OutboxConfig, ConfigError> {
    Ok(OutboxConfig {
        poll_interval: parse_duration_var(
            "EVENTS_OUTBOX_POLL_INTERVAL",
            &s.outbox_poll_interval,
            Duration::from_millis(500),
            Duration::from_millis(10),
        )?,
        max_attempts: parse_number(
            "EVENTS_OUTBOX_MAX_ATTEMPTS",
            &s.outbox_max_attempts,
            50,
            1,
            10_000,
        )?,
        backoff_max: parse_duration_var(
            "EVENTS_OUTBOX_BACKOFF_MAX",
            &s.outbox_backoff_max,
            Duration::from_secs(300),
            Duration::from_millis(10),
        )?,
        encoding: out_encoding(s)?,
        stream: StreamConfig::load(s)?.name,
        ..Default::default()
    })
}

impl Config {
    pub fn load(s: &Settings) -> Result<Self, ConfigError> {
        let dev = dev_mode(s)?;
        let http_addr_text = value(&s.http_addr).unwrap_or("0.0.0.0:8005");
        let http_addr = http_addr_text.parse().map_err(|_| {
            ConfigError::new(
                "EVENTS_HTTP_ADDR",
                format!(
                    "'{http_addr_text}' is not a socket address; write host:port, e.g. 0.0.0.0:8005"
                ),
            )
        })?;
        let out_encoding = out_encoding(s)?;
        let actor_idle_timeout = parse_duration_var(
            "EVENTS_ACTOR_IDLE_TIMEOUT",
            &s.actor_idle_timeout,
            Duration::from_secs(120),
            Duration::from_millis(100),
        )?;
        let request_timeout = parse_duration_var(
            "EVENTS_REQUEST_TIMEOUT",
            &s.request_timeout,
            Duration::from_secs(5),
            Duration::from_millis(100),
        )?;
        let mut database = DatabaseConfig::load(s)?;
        // A request kept waiting for a connection while Postgres is down gets
        // its 503 (retry) well before its deadline would answer 504 (which
        // says nothing about whether it was applied).
        database.acquire_timeout = database.acquire_timeout.min(request_timeout / 2);
        Ok(Self {
            database,
            nats: NatsConfig::load(s)?,
            stream: StreamConfig::load(s)?,
            http_addr,
            hmac: HmacConfig::load(s, dev)?,
            authz: AuthzConfig::load(s)?,
            out_encoding,
            retention_published_outbox_days: retention_days(s)?,
            max_body_bytes: parse_number(
                "EVENTS_MAX_BODY_BYTES",
                &s.max_body_bytes,
                256 * 1024,
                1024,
                16 * 1024 * 1024,
            )?,
            request_timeout,
            replay_memory: parse_number(
                "EVENTS_REPLAY_MEMORY",
                &s.replay_memory,
                crate::auth::ReplayGuard::DEFAULT_CAPACITY,
                1,
                100_000_000,
            )?,
            feed_rate_per_minute: parse_number(
                "EVENTS_FEED_RATE_PER_MINUTE",
                &s.feed_rate_per_minute,
                30,
                1,
                100_000,
            )?,
            telemetry: TelemetryConfig::load(s)?,
            actors: ActorConfig {
                idle_timeout: actor_idle_timeout,
                sweep_interval: ActorConfig::sweep_interval_for(actor_idle_timeout),
                max_live_actors: parse_number(
                    "EVENTS_MAX_LIVE_ACTORS",
                    &s.max_live_actors,
                    4_096,
                    10,
                    10_000_000,
                )?,
                max_cached_rsvps: parse_number(
                    "EVENTS_MAX_CACHED_RSVPS",
                    &s.max_cached_rsvps,
                    crate::actors::MAX_CACHED_RSVPS_PER_INSTANCE,
                    0,
                    100_000_000,
                )?,
                route_writes: parse_bool("EVENTS_ROUTE_WRITES", &s.route_writes, true)?,
                ..Default::default()
            },
            outbox: outbox_config(s)?,
            live: LiveConfig::load(s)?,
            activity: ActivityConfig::load(s)?,
            series: SeriesConfig::load(s, RsvpConfig::load(s)?.clock)?,
            rsvp: RsvpConfig::load(s)?,
            dev,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut Settings)) -> Settings {
        let mut s = Settings {
            hmac_secret: Some("s3cret".into()),
            ..Settings::default()
        };
        f(&mut s);
        s
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::load(&with(|_| {})).expect("defaults load");
        assert_eq!(c.database.url, "postgres://postgres@127.0.0.1:5432/events");
        assert_eq!(c.database.database_name(), "events");
        assert_eq!(c.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(c.http_addr.to_string(), "0.0.0.0:8005");
        assert_eq!(c.nats.subject_prefix, "events");
        assert_eq!(c.stream.name, "EVENTS");
        assert_eq!(c.stream.max_age, Duration::from_secs(7 * 86_400));
        assert_eq!(c.authz.mode, AuthzMode::Local);
        assert_eq!(c.out_encoding, Encoding::Msgpack);
        assert_eq!(c.retention_published_outbox_days, 30);
        assert_eq!(c.telemetry.log_format, LogFormat::Json);
        assert!(c.database.auto_migrate);
    }

    #[test]
    fn writes_are_routed_to_their_owner_unless_switched_off() {
        assert!(
            Config::load(&with(|_| {}))
                .expect("defaults")
                .actors
                .route_writes
        );
        let off = Config::load(&with(|s| s.route_writes = Some("false".into()))).expect("off");
        assert!(!off.actors.route_writes);
        let err = Config::load(&with(|s| s.route_writes = Some("sometimes".into())))
            .expect_err("must fail");
        assert_eq!(err.var, "EVENTS_ROUTE_WRITES");
        assert!(err.to_string().contains("sometimes"), "{err}");
    }

    #[test]
    fn the_rsvp_cache_budget_defaults_to_a_million_and_may_be_zero() {
        let c = Config::load(&with(|_| {})).expect("defaults load");
        assert_eq!(c.actors.max_cached_rsvps, 1_000_000);
        let c = Config::load(&with(|s| s.max_cached_rsvps = Some("0".into()))).expect("zero");
        assert_eq!(c.actors.max_cached_rsvps, 0);
        for bad in ["-1", "lots", "100000001"] {
            let err = Config::load(&with(|s| s.max_cached_rsvps = Some(bad.into())))
                .expect_err("must fail");
            assert_eq!(err.var, "EVENTS_MAX_CACHED_RSVPS");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn missing_secret_names_the_variable_and_the_dev_switch() {
        let err = Config::load(&with(|s| s.hmac_secret = None)).expect_err("must fail");
        assert_eq!(err.var, "BFF_INTERNAL_HMAC_SECRET");
        let line = err.to_string();
        assert!(
            line.contains("BFF_INTERNAL_HMAC_SECRET") && line.contains("EVENTS_DEV=1"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn dev_mode_supplies_the_dev_secret_only() {
        let c = Config::load(&with(|s| {
            s.hmac_secret = None;
            s.dev = Some("1".into());
        }))
        .expect("dev loads");
        assert_eq!(c.hmac.secrets, vec![DEV_HMAC_SECRET.to_string()]);
        assert!(c.hmac.using_dev_secret);
        // Dev mode does not relax other checks.
        let err = Config::load(&with(|s| {
            s.dev = Some("1".into());
            s.nats_url = Some("http://x".into());
        }))
        .expect_err("bad url still fails");
        assert_eq!(err.var, "NATS_URL");
    }

    #[test]
    fn bad_urls_name_variable_and_value() {
        let err =
            Config::load(&with(|s| s.database_url = Some("mysql://x/y".into()))).expect_err("fail");
        assert_eq!(err.var, "DATABASE_URL");
        assert!(err.to_string().contains("mysql://x/y"));
        let err = Config::load(&with(|s| s.access_base_url = Some("not a url".into())))
            .expect_err("fail");
        assert_eq!(err.var, "ACCESS_BASE_URL");
        assert!(err.to_string().contains("not a url"));
        let err = Config::load(&with(|s| s.http_addr = Some("8005".into()))).expect_err("fail");
        assert_eq!(err.var, "EVENTS_HTTP_ADDR");
    }

    #[test]
    fn database_password_is_redacted_in_errors() {
        let err = Config::load(&with(|s| {
            s.database_url = Some("postgres://u:hunter2@h".into())
        }))
        .expect_err("fail");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn access_url_selects_access_mode() {
        let c = Config::load(&with(|s| {
            s.access_base_url = Some("http://access:8002/api/v1".into())
        }))
        .expect("ok");
        assert_eq!(c.authz.mode, AuthzMode::Access);
        let err = Config::load(&with(|s| s.authz = Some("access".into()))).expect_err("needs url");
        assert_eq!(err.var, "ACCESS_BASE_URL");
    }

    #[test]
    fn access_mode_settings_default_and_refuse_https() {
        let c = Config::load(&with(|_| {})).expect("ok");
        assert_eq!(c.authz.cache_ttl, Duration::from_secs(30));
        assert_eq!(c.authz.negative_ttl, Duration::from_secs(5));
        assert_eq!(c.authz.timeout, Duration::from_secs(2));
        assert_eq!(c.authz.portal_stale_max, Duration::from_secs(600));
        let c = Config::load(&with(|s| {
            s.authz_cache_ttl = Some("0s".into());
            s.portal_stale_max = Some("1m".into());
        }))
        .expect("ok");
        assert_eq!(c.authz.cache_ttl, Duration::ZERO);
        assert_eq!(c.authz.portal_stale_max, Duration::from_secs(60));
        let err = Config::load(&with(|s| s.authz_timeout = Some("10ms".into()))).expect_err("min");
        assert_eq!(err.var, "EVENTS_AUTHZ_TIMEOUT");
        let err = Config::load(&with(|s| {
            s.access_base_url = Some("https://access:8002/api/v1".into())
        }))
        .expect_err("no TLS");
        assert_eq!(err.var, "ACCESS_BASE_URL");
        // Only access mode calls Portal: local mode keeps any URL.
        Config::load(&with(|s| {
            s.portal_service_url = Some("https://portal/api/v1".into())
        }))
        .expect("local mode ignores it");
    }

    #[test]
    fn previous_secrets_follow_the_current_one() {
        let c = Config::load(&with(|s| {
            s.hmac_previous_secrets = Some(" old1, ,old2 ".into())
        }))
        .expect("ok");
        assert_eq!(c.hmac.secrets, vec!["s3cret", "old1", "old2"]);
    }

    #[test]
    fn duplicate_window_has_a_floor_of_ten_minutes() {
        let err = Config::load(&with(|s| s.stream_duplicate_window = Some("5m".into())))
            .expect_err("fail");
        assert_eq!(err.var, "EVENTS_STREAM_DUPLICATE_WINDOW");
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("x"), None);
    }

    #[test]
    fn nats_credentials_must_be_complete_and_single() {
        let err = Config::load(&with(|s| s.nats_user = Some("u".into()))).expect_err("fail");
        assert_eq!(err.var, "NATS_PASSWORD");
        let err = Config::load(&with(|s| {
            s.nats_token = Some("t".into());
            s.nats_user = Some("u".into());
            s.nats_password = Some("p".into());
        }))
        .expect_err("fail");
        assert!(err.to_string().contains("only one"));
    }

    #[test]
    fn the_inbox_prefix_defaults_to_the_standard_one_and_must_be_a_plain_subject() {
        let c = Config::load(&with(|_| {})).expect("defaults load");
        assert_eq!(c.nats.inbox_prefix, "_INBOX");
        let c = Config::load(&with(|s| {
            s.nats_inbox_prefix = Some("_INBOX_events".into())
        }))
        .expect("ok");
        assert_eq!(c.nats.inbox_prefix, "_INBOX_events");
        for bad in ["_INBOX.>", "_INBOX.*.x", "_INBOX.", "a b", ".x"] {
            let err =
                Config::load(&with(|s| s.nats_inbox_prefix = Some(bad.into()))).expect_err("fail");
            assert_eq!(err.var, "NATS_INBOX_PREFIX", "{bad}");
        }
    }

    #[test]
    fn subject_prefix_must_be_one_token() {
        let err = Config::load(&with(|s| s.subject_prefix = Some("a.b".into()))).expect_err("fail");
        assert_eq!(err.var, "EVENTS_SUBJECT_PREFIX");
    }
}
