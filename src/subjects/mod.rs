//! NATS: connection, subject names, the JetStream stream and the micro
//! service registration.

pub mod endpoints;
pub mod live;
pub mod micro;
pub mod replays;

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::backoff::Backoff;
use crate::config::{NatsAuth, NatsConfig, StreamConfig, redact};

pub use crate::names::{QUEUE_GROUP, SERVICE_NAME, Subjects};

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot reach NATS at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("cannot read NATS_CREDS_FILE '{path}': {source}")]
    Credentials {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "JetStream is not available on the NATS server ({0}); start nats-server with -js \
         (or `jetstream {{}}` in its config)"
    )]
    NoJetStream(String),
    #[error("stream {name}: {message}")]
    Stream { name: String, message: String },
    #[error("cannot register the NATS micro service: {0}")]
    Service(String),
}

async fn connect_once(config: &NatsConfig) -> Result<async_nats::Client, NatsError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("events-svc {}", env!("CARGO_PKG_VERSION")))
        .connection_timeout(Duration::from_secs(5))
        // Replies arrive here: a server that lets each user read only its
        // own inbox prefix keeps others' replies from it.
        .custom_inbox_prefix(config.inbox_prefix.clone())
        // After the first connection, keep reconnecting for as long as we run.
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("NATS connection (re)established"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("NATS connection lost; reconnecting")
                }
                other => tracing::info!(event = %other, "NATS connection event"),
            }
        });
    options = match &config.auth {
        NatsAuth::None => options,
        NatsAuth::Token(token) => options.token(token.clone()),
        NatsAuth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.clone())
        }
        NatsAuth::CredsFile(path) => {
            options
                .credentials_file(path)
                .await
                .map_err(|source| NatsError::Credentials {
                    path: path.clone(),
                    source,
                })?
        }
    };
    let urls: Vec<&str> = config.url.split(',').map(str::trim).collect();
    options
        .connect(urls.as_slice())
        .await
        .map_err(|e| NatsError::Unreachable {
            url: redact(&config.url),
            message: e.to_string(),
        })
}

/// Connects, retrying with backoff while the server is unreachable.
/// `give_up_after` bounds the wait (None: forever).
pub async fn connect_with_retry(
    config: &NatsConfig,
    give_up_after: Option<Duration>,
) -> Result<async_nats::Client, NatsError> {
    let started = std::time::Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    loop {
        match connect_once(config).await {
            Ok(client) => {
                tracing::info!(url = %redact(&config.url), "connected to NATS");
                return Ok(client);
            }
            Err(e @ NatsError::Credentials { .. }) => return Err(e),
            Err(e) => {
                if give_up_after.is_some_and(|limit| started.elapsed() >= limit) {
                    return Err(e);
                }
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "NATS not available yet; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The stream definition the service owns.
pub fn stream_definition(config: &StreamConfig, prefix: &str) -> stream::Config {
    stream::Config {
        name: config.name.clone(),
        description: Some("UpdSpace Events domain events (transactional outbox)".to_string()),
        subjects: vec![Subjects::new(prefix).stream_filter()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: config.max_age,
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        ..Default::default()
    }
}

/// JetStream's answers that mean "not now" rather than "no": the cluster has
/// no meta or stream leader yet, or too few servers are up to place the
/// replicas. An election or a restarting node ends them.
pub(crate) fn unavailable_for_now(code: jetstream::ErrorCode) -> bool {
    matches!(
        code,
        jetstream::ErrorCode::CLUSTER_NOT_AVAILABLE
            | jetstream::ErrorCode::CLUSTER_NOT_LEADER
            | jetstream::ErrorCode::CLUSTER_INCOMPLETE
            | jetstream::ErrorCode::CLUSTER_NO_PEERS
            | jetstream::ErrorCode::CLUSTER_NOT_ASSIGNED
            | jetstream::ErrorCode::INSUFFICIENT_RESOURCES
            | jetstream::ErrorCode::RAFT_GENERAL
    )
}

/// Why one attempt at a stream failed.
pub(crate) struct StreamFailure {
    pub(crate) error: NatsError,
    /// Worth retrying: a timeout or a cluster between leaders.
    pub(crate) transient: bool,
}

impl From<NatsError> for StreamFailure {
    fn from(error: NatsError) -> Self {
        Self {
            error,
            transient: false,
        }
    }
}

/// Creates the stream, or brings an existing one to our definition. Settings
/// that cannot change in place (storage, replicas on some servers) are
/// reported with what to do. One attempt: see [`ensure_stream_with_retry`].
pub async fn ensure_stream(
    client: &async_nats::Client,
    config: &StreamConfig,
    prefix: &str,
) -> Result<stream::Info, NatsError> {
    try_ensure_stream(client, config, prefix)
        .await
        .map_err(|f| f.error)
}

/// [`ensure_stream`], retried with backoff while JetStream cannot answer
/// yet: a stream (or the cluster's meta group) whose leader is gone answers
/// nothing until a new one is elected, usually within seconds. Gives up
/// after `give_up_after`, since the same silence is what a NATS user
/// without permission for the stream API gets.
pub async fn ensure_stream_with_retry(
    client: &async_nats::Client,
    config: &StreamConfig,
    prefix: &str,
    give_up_after: Duration,
) -> Result<stream::Info, NatsError> {
    retry_while_unavailable(&config.name, give_up_after, || {
        try_ensure_stream(client, config, prefix)
    })
    .await
}

/// Runs `attempt` until it succeeds, fails for good, or has failed for
/// `give_up_after` in ways that mean "not now" (see [`StreamFailure`]).
pub(crate) async fn retry_while_unavailable<T, F, Fut>(
    name: &str,
    give_up_after: Duration,
    mut attempt: F,
) -> Result<T, NatsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StreamFailure>>,
{
    let started = std::time::Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(StreamFailure {
                error,
                transient: true,
            }) => {
                let waited = started.elapsed();
                if waited >= give_up_after {
                    return Err(NatsError::Stream {
                        name: name.to_string(),
                        message: format!(
                            "no usable answer from JetStream for {} s ({error}); the stream or the \
                             cluster may have no leader (too few NATS servers up), the NATS user \
                             may not use $JS.API.STREAM.* for this stream, or it may receive replies \
                             only under its own inbox prefix (set NATS_INBOX_PREFIX to it, e.g. \
                             _INBOX_events with nats/nats-server.conf)",
                            waited.as_secs()
                        ),
                    });
                }
                let delay = backoff.next_delay();
                tracing::warn!(
                    stream = %name,
                    error = %error,
                    retry_in_ms = delay.as_millis() as u64,
                    "JetStream cannot answer for the stream yet (electing a leader?); retrying"
                );
                tokio::time::sleep(delay).await;
            }
            Err(failure) => return Err(failure.error),
        }
    }
}

async fn try_ensure_stream(
    client: &async_nats::Client,
    config: &StreamConfig,
    prefix: &str,
) -> Result<stream::Info, StreamFailure> {
    let js = jetstream::new(client.clone());
    let wanted = stream_definition(config, prefix);
    let failure = |message: String, transient: bool| StreamFailure {
        error: NatsError::Stream {
            name: config.name.clone(),
            message,
        },
        transient,
    };
    let request_failure = |what: &str, e: &jetstream::context::CreateStreamError| {
        let transient = match e.kind() {
            jetstream::context::CreateStreamErrorKind::TimedOut => true,
            jetstream::context::CreateStreamErrorKind::JetStream(js_err) => {
                unavailable_for_now(js_err.error_code())
            }
            _ => false,
        };
        failure(format!("{what}: {e}"), transient)
    };
    match js.get_stream(&config.name).await {
        Ok(mut existing) => {
            let info = existing
                .info()
                .await
                .map_err(|e| failure(format!("cannot read stream info: {e}"), true))?
                .clone();
            let have = &info.config;
            let mut differences = Vec::new();
            if have.subjects != wanted.subjects {
                differences.push(format!(
                    "subjects {:?} (want {:?})",
                    have.subjects, wanted.subjects
                ));
            }
            if have.max_age != wanted.max_age {
                differences.push(format!(
                    "max_age {:?} (want {:?})",
                    have.max_age, wanted.max_age
                ));
            }
            if have.duplicate_window != wanted.duplicate_window {
                differences.push(format!(
                    "duplicate_window {:?} (want {:?})",
                    have.duplicate_window, wanted.duplicate_window
                ));
            }
            if have.num_replicas != wanted.num_replicas {
                differences.push(format!(
                    "replicas {} (want {})",
                    have.num_replicas, wanted.num_replicas
                ));
            }
            if have.storage != wanted.storage {
                return Err(failure(
                    format!(
                        "exists with {:?} storage, which cannot be changed to file storage in place; \
                         back it up and delete it, or set EVENTS_STREAM to another name",
                        have.storage
                    ),
                    false,
                ));
            }
            if differences.is_empty() {
                return Ok(info);
            }
            tracing::warn!(stream = %config.name, differences = %differences.join(", "), "updating stream to the configured definition");
            js.update_stream(&wanted).await.map_err(|e| {
                request_failure(
                    &format!(
                        "exists with a different definition ({}) and the update was refused",
                        differences.join(", ")
                    ),
                    &e,
                )
            })
        }
        Err(e)
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(js_err)
            if js_err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            let mut created = js
                .create_stream(wanted)
                .await
                .map_err(|e| request_failure("cannot be created", &e))?;
            tracing::info!(stream = %config.name, "created stream");
            created
                .info()
                .await
                .cloned()
                .map_err(|e| failure(format!("cannot read stream info: {e}"), true))
        }
        Err(e) => {
            let text = e.to_string();
            if text.contains("not enabled") || text.contains("no responders") {
                return Err(NatsError::NoJetStream(text).into());
            }
            let transient = match e.kind() {
                jetstream::context::GetStreamErrorKind::Request => true,
                jetstream::context::GetStreamErrorKind::JetStream(js_err) => {
                    unavailable_for_now(js_err.error_code())
                }
                _ => false,
            };
            Err(failure(format!("cannot be read: {text}"), transient))
        }
    }
}
