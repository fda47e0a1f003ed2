//! NATS: connection, subject names, the JetStream stream and the micro
//! service registration.

pub mod endpoints;
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

/// Creates the stream, or brings an existing one to our definition. Settings
/// that cannot change in place (storage, replicas on some servers) are
/// reported with what to do.
pub async fn ensure_stream(
    client: &async_nats::Client,
    config: &StreamConfig,
    prefix: &str,
) -> Result<stream::Info, NatsError> {
    let js = jetstream::new(client.clone());
    let wanted = stream_definition(config, prefix);
    let stream_err = |message: String| NatsError::Stream {
        name: config.name.clone(),
        message,
    };
    match js.get_stream(&config.name).await {
        Ok(mut existing) => {
            let info = existing
                .info()
                .await
                .map_err(|e| stream_err(format!("cannot read stream info: {e}")))?
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
                return Err(stream_err(format!(
                    "exists with {:?} storage, which cannot be changed to file storage in place; \
                     back it up and delete it, or set EVENTS_STREAM to another name",
                    have.storage
                )));
            }
            if differences.is_empty() {
                return Ok(info);
            }
            tracing::warn!(stream = %config.name, differences = %differences.join(", "), "updating stream to the configured definition");
            js.update_stream(&wanted).await.map_err(|e| {
                stream_err(format!(
                    "exists with a different definition ({}) and the update was refused: {e}",
                    differences.join(", ")
                ))
            })
        }
        Err(e)
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(js_err)
            if js_err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            let mut created = js
                .create_stream(wanted)
                .await
                .map_err(|e| stream_err(format!("cannot be created: {e}")))?;
            tracing::info!(stream = %config.name, "created stream");
            created
                .info()
                .await
                .cloned()
                .map_err(|e| stream_err(format!("cannot read stream info: {e}")))
        }
        Err(e) => {
            let text = e.to_string();
            if text.contains("not enabled") || text.contains("no responders") {
                Err(NatsError::NoJetStream(text))
            } else if text.contains("timed out") {
                // The request went out and its reply never came back: a
                // server that lets each user read only its own inbox
                // prefix drops replies sent anywhere else.
                Err(stream_err(format!(
                    "cannot be read: {text}; if the NATS user may receive replies only under its \
                     own inbox prefix, set NATS_INBOX_PREFIX to it (e.g. _INBOX_events with \
                     nats/nats-server.conf)"
                )))
            } else {
                Err(stream_err(format!("cannot be read: {text}")))
            }
        }
    }
}
