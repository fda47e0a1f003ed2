//! The replay bucket: a JetStream key-value bucket shared by every instance,
//! holding one key per signed read that must be refused everywhere when
//! replayed (v1 reads, whose signature binds no identity; and any read while
//! an instance's own memory of accepted requests is full). A key is created
//! atomically (it fails if it exists) and expires with the bucket's max age,
//! so nothing has to clean it up and no Postgres row is written per read.

use std::time::Duration;

use async_nats::jetstream::{self, kv};

use bytes::Bytes;

use crate::auth::replay::ReplayKey;
use crate::config::StreamConfig;
use crate::subjects::{NatsError, StreamFailure, retry_while_unavailable, unavailable_for_now};

pub use crate::names::replay_bucket as bucket_name;

/// How long a key must live: a request signed at `ts` is accepted until
/// `ts + window`, and `ts` may be up to `window` ahead of the clock that
/// claimed it; one more minute covers the clocks of other instances.
pub fn max_age(window_secs: i64) -> Duration {
    Duration::from_secs(u64::try_from(window_secs.max(0)).unwrap_or(0) * 2 + 60)
}

/// How long a claim may wait for the bucket (a stream leader election
/// lasts seconds; a request should not).
const CLAIM_WAIT: Duration = Duration::from_secs(1);

/// The bucket could not say whether a key was claimed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClaimError(String);

#[derive(Clone)]
pub struct ReplayBucket {
    store: kv::Store,
    client: async_nats::Client,
}

/// The outcome of a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    First,
    Replayed,
}

impl ReplayBucket {
    /// Creates the bucket, or brings it to our definition, waiting (as for
    /// the stream) while JetStream cannot answer yet.
    pub async fn ensure(
        client: &async_nats::Client,
        stream: &StreamConfig,
        window_secs: i64,
        give_up_after: Duration,
    ) -> Result<Self, NatsError> {
        let name = format!("KV_{}", bucket_name(&stream.name));
        retry_while_unavailable(&name, give_up_after, || {
            Self::try_ensure(client, stream, window_secs)
        })
        .await
    }

    async fn try_ensure(
        client: &async_nats::Client,
        stream: &StreamConfig,
        window_secs: i64,
    ) -> Result<Self, StreamFailure> {
        let js = jetstream::new(client.clone());
        let bucket = bucket_name(&stream.name);
        let name = format!("KV_{bucket}");
        let failed = |what: &str, e: &dyn std::fmt::Display, transient: bool| StreamFailure {
            error: NatsError::Stream {
                name: name.clone(),
                message: format!("{what}: {e}"),
            },
            transient,
        };
        let transient = |e: &jetstream::context::CreateStreamError| match e.kind() {
            jetstream::context::CreateStreamErrorKind::TimedOut => true,
            jetstream::context::CreateStreamErrorKind::JetStream(j) => {
                unavailable_for_now(j.error_code())
            }
            _ => false,
        };
        // The stream a key-value bucket is made of, written out here:
        // async-nats' own bucket creation reads account information in a
        // shape older servers (2.9) do not send.
        let config = jetstream::stream::Config {
            name: name.clone(),
            description: Some(
                "UpdSpace Events: signed requests already accepted (replay guard)".into(),
            ),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age: max_age(window_secs),
            // A key holds its claim's 32-character token (its existence is
            // the claim); the limit counts the headers a conditional write
            // carries too.
            max_message_size: 1024,
            storage: jetstream::stream::StorageType::File,
            num_replicas: stream.replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        };
        if let Err(e) = js.create_stream(config.clone()).await {
            let exists = matches!(e.kind(), jetstream::context::CreateStreamErrorKind::JetStream(ref j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST);
            if !exists {
                return Err(failed("cannot be created", &e, transient(&e)));
            }
            js.update_stream(&config).await.map_err(|e| {
                let t = transient(&e);
                failed("exists and cannot be updated", &e, t)
            })?;
        }
        let store = js
            .get_key_value(bucket)
            .await
            .map_err(|e| failed("cannot be opened as a key-value bucket", &e, true))?;
        Ok(Self {
            store,
            client: client.clone(),
        })
    }

    /// Claims `key`; exactly one claim of a key succeeds, on any instance.
    ///
    /// Each claim writes a value of its own: a create whose answer was lost
    /// (a stream leader election) is read back by the client, and finding
    /// its own value there means the claim is ours, not a replay.
    pub async fn claim(&self, key: &ReplayKey) -> Result<Claimed, ClaimError> {
        // A request waits for no reconnect: the caller decides at once what
        // to do without the bucket.
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(ClaimError("not connected to NATS".into()));
        }
        let claim = self.claim_connected(key);
        match tokio::time::timeout(CLAIM_WAIT, claim).await {
            Ok(claimed) => claimed,
            Err(_) => Err(ClaimError(format!("no answer within {CLAIM_WAIT:?}"))),
        }
    }

    async fn claim_connected(&self, key: &ReplayKey) -> Result<Claimed, ClaimError> {
        let mine = uuid::Uuid::new_v4().simple().to_string();
        match self
            .store
            .create(key.short_hex(), Bytes::from(mine.clone()))
            .await
        {
            Ok(_) => Ok(Claimed::First),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                match self.store.get(key.short_hex()).await {
                    Ok(Some(value)) if value.as_ref() == mine.as_bytes() => Ok(Claimed::First),
                    Ok(_) => Ok(Claimed::Replayed),
                    Err(e) => Err(ClaimError(e.to_string())),
                }
            }
            Err(e) => Err(ClaimError(e.to_string())),
        }
    }
}
