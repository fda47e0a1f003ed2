//! The instance's one reader of the stream for live updates: an ordered
//! JetStream consumer on `{prefix}.out.>` whose messages are fanned out in
//! memory to every open `GET /stream` connection, and the per-connection
//! replay of what a resuming client missed.
//!
//! One consumer per instance (not per connection) keeps the server's work
//! flat however many browsers are connected. The fan-out is a broadcast
//! channel: the sender never waits for a receiver, so a connection that does
//! not keep up falls behind on its own (and is dropped) without slowing the
//! others.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{Notify, broadcast};

use crate::backoff::Backoff;
use crate::encoding::Encoding;

/// One domain event as the stream holds it, decoded once for every
/// connection.
#[derive(Debug)]
pub struct LiveMessage {
    /// The JetStream stream sequence: the SSE `id`.
    pub seq: u64,
    /// The CloudEvent `id` (the outbox row's).
    pub id: String,
    pub event_type: String,
    pub tenant_id: uuid::Uuid,
    pub event_id: uuid::Uuid,
    /// The CloudEvent `time`.
    pub time: String,
    pub data: Value,
    /// Filled by the application layer on first use: what every connection
    /// needs of this message (the event as it is now), computed once.
    pub shared: tokio::sync::OnceCell<Arc<dyn std::any::Any + Send + Sync>>,
}

impl LiveMessage {
    /// Decodes a stream message; `None` for one that is not a domain event
    /// of this service (nothing to show).
    pub fn decode(seq: u64, content_type: Option<&str>, payload: &[u8]) -> Option<Self> {
        let encoding = match content_type {
            Some(c) if c.contains("json") => Encoding::Json,
            Some(_) => Encoding::Msgpack,
            None if payload.first() == Some(&b'{') => Encoding::Json,
            None => Encoding::Msgpack,
        };
        let mut envelope = encoding.decode_lenient(payload);
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let uuid = |v: &Value, k: &str| text(v, k).and_then(|s| s.parse::<uuid::Uuid>().ok());
        Some(Self {
            seq,
            id: text(&envelope, "id")?,
            event_type: text(&envelope, "type")?,
            tenant_id: uuid(&envelope, "tenantid")?,
            event_id: uuid(&envelope, "subject")?,
            time: text(&envelope, "time").unwrap_or_default(),
            data: envelope
                .get_mut("data")
                .map(Value::take)
                .unwrap_or(Value::Null),
            shared: Default::default(),
        })
    }

    /// Decodes a message read from the stream at sequence `seq`.
    pub fn of(seq: u64, message: &jetstream::Message) -> Option<Self> {
        let content_type = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Content-Type"))
            .map(|v| v.as_str());
        Self::decode(seq, content_type, &message.payload)
    }

    /// `data.user_id`: the user an RSVP or attendance message is about.
    pub fn user_id(&self) -> Option<uuid::Uuid> {
        self.data
            .get("user_id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
    }
}

/// What a new connection starts from.
pub struct Subscription {
    pub receiver: broadcast::Receiver<Arc<LiveMessage>>,
    /// The last sequence sent to the fan-out before `receiver` was made: the
    /// receiver yields exactly the messages after it.
    pub after: u64,
}

/// Where the stream starts and ends now.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub first_seq: u64,
    pub last_seq: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("the stream cannot be read: {0}")]
    Stream(String),
}

struct Inner {
    js: jetstream::Context,
    stream: String,
    filter: String,
    sender: broadcast::Sender<Arc<LiveMessage>>,
    /// The sequence last broadcast. Held while sending, so that a new
    /// receiver and the point it starts after are taken together.
    last: Mutex<u64>,
    closing: Notify,
    closed: std::sync::atomic::AtomicBool,
    /// The reader knows where the stream ends and is reading from there.
    ready: std::sync::atomic::AtomicBool,
}

/// Cheap to clone; every clone is the same feed.
#[derive(Clone)]
pub struct LiveFeed {
    inner: Arc<Inner>,
}

impl LiveFeed {
    /// Starts the instance's reader. `buffer` is how many messages a
    /// connection may fall behind before it is dropped. It never holds
    /// start-up back: until the stream answers (a cluster electing its
    /// leader), the feed is not ready and streams are refused with 503.
    pub fn start(js: jetstream::Context, stream: &str, filter: String, buffer: usize) -> Self {
        let (sender, _) = broadcast::channel(buffer.max(1));
        let feed = Self {
            inner: Arc::new(Inner {
                js,
                stream: stream.to_string(),
                filter,
                sender,
                last: Mutex::new(0),
                closing: Notify::new(),
                closed: Default::default(),
                ready: Default::default(),
            }),
        };
        tokio::spawn(feed.clone().run());
        feed
    }

    /// Whether streams can be served (the reader knows its position).
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn lock_last(&self) -> std::sync::MutexGuard<'_, u64> {
        self.inner
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A receiver of every message after the current point.
    pub fn subscribe(&self) -> Subscription {
        let last = self.lock_last();
        Subscription {
            receiver: self.inner.sender.subscribe(),
            after: *last,
        }
    }

    /// Completes when the instance shuts down; open connections end then.
    pub async fn closed(&self) {
        let notified = self.inner.closing.notified();
        if self.is_closed() {
            return;
        }
        notified.await;
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Ends every open connection (at shutdown: the HTTP server waits for
    /// responses to finish, and these never would).
    pub fn close(&self) {
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.closing.notify_waiters();
    }

    pub async fn bounds(&self) -> Result<Bounds, LiveError> {
        let mut stream = self
            .inner
            .js
            .get_stream(&self.inner.stream)
            .await
            .map_err(|e| LiveError::Stream(e.to_string()))?;
        let info = stream
            .info()
            .await
            .map_err(|e| LiveError::Stream(e.to_string()))?;
        Ok(Bounds {
            first_seq: info.state.first_sequence,
            last_seq: info.state.last_sequence,
        })
    }

    /// The messages on `filter` after `after` up to and including `until`,
    /// in order, read on demand (a slow client reads them at its pace).
    pub async fn history(
        &self,
        filter: String,
        after: u64,
        until: u64,
    ) -> Result<futures::stream::BoxStream<'static, Arc<LiveMessage>>, LiveError> {
        if after >= until {
            return Ok(futures::stream::empty().boxed());
        }
        let mut consumer = self.ordered(filter, after).await?;
        let pending = consumer
            .info()
            .await
            .map_err(|e| LiveError::Stream(e.to_string()))?
            .num_pending;
        if pending == 0 {
            return Ok(futures::stream::empty().boxed());
        }
        let messages = consumer
            .messages()
            .await
            .map_err(|e| LiveError::Stream(e.to_string()))?;
        // Ends at `until`, or when nothing matching is left in the stream.
        let read =
            futures::stream::unfold((messages, false), move |(mut messages, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let message = match messages.next().await? {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::debug!(error = %e, "a resumed stream's read failed");
                            return None;
                        }
                    };
                    let Ok(info) = message.info() else { continue };
                    let (seq, pending) = (info.stream_sequence, info.pending);
                    if seq > until {
                        return None;
                    }
                    let last = seq >= until || pending == 0;
                    if let Some(decoded) = LiveMessage::of(seq, &message) {
                        return Some((Arc::new(decoded), (messages, last)));
                    }
                    if last {
                        return None;
                    }
                }
            });
        Ok(read.boxed())
    }

    /// Reads the stream for as long as the instance runs, through NATS
    /// restarts: the ordered consumer recreates itself after a gap, and a
    /// reader that fails altogether starts again after the last message it
    /// broadcast.
    async fn run(self) {
        let fresh = || Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut backoff = fresh();
        while !self.is_closed() {
            if !self.is_ready() {
                // Live from the stream's end now: what came before is
                // history, read per connection on request.
                match self.bounds().await {
                    Ok(bounds) => {
                        *self.lock_last() = bounds.last_seq;
                        self.inner
                            .ready
                            .store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "live updates: waiting for the stream");
                        tokio::select! {
                            () = tokio::time::sleep(backoff.next_delay()) => {}
                            () = self.closed() => return,
                        }
                        continue;
                    }
                }
            }
            let after = *self.lock_last();
            let started = std::time::Instant::now();
            if let Err(e) = self.read_from(after).await {
                tracing::warn!(error = %e, after, "live updates: the stream reader stopped; starting again");
            }
            if started.elapsed() > Duration::from_secs(30) {
                backoff = fresh();
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = self.closed() => return,
            }
        }
    }

    /// An ordered consumer of `filter` from the message after `after`.
    async fn ordered(
        &self,
        filter: String,
        after: u64,
    ) -> Result<jetstream::consumer::Consumer<OrderedConfig>, LiveError> {
        let stream = self
            .inner
            .js
            .get_stream(&self.inner.stream)
            .await
            .map_err(|e| LiveError::Stream(e.to_string()))?;
        let deliver_policy = if after == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            }
        };
        stream
            .create_consumer(OrderedConfig {
                filter_subject: filter,
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| LiveError::Stream(e.to_string()))
    }

    async fn read_from(&self, after: u64) -> Result<(), LiveError> {
        let consumer = self.ordered(self.inner.filter.clone(), after).await?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| LiveError::Stream(e.to_string()))?;
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                () = self.closed() => return Ok(()),
            };
            let message = match next {
                None => return Err(LiveError::Stream("the consumer ended".into())),
                Some(Err(e)) => return Err(LiveError::Stream(e.to_string())),
                Some(Ok(m)) => m,
            };
            let Ok(info) = message.info() else { continue };
            let seq = info.stream_sequence;
            let decoded = LiveMessage::of(seq, &message);
            let mut last = self.lock_last();
            if seq <= *last {
                continue;
            }
            *last = seq;
            if let Some(decoded) = decoded {
                // No receiver is no error: nobody is connected.
                let _ = self.inner.sender.send(Arc::new(decoded));
            }
        }
    }
}
