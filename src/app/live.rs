//! Live updates (`GET /stream`): who may open a stream, where it starts,
//! and what each domain event becomes for one caller. Visibility is the
//! API's own (`Guard::sight` on the event as it is when the message is
//! sent), so a stream never shows what `event.get` would hide.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::actors::Snapshot;
use crate::app::requests::StreamFilter;
use crate::app::views::EventView;
use crate::app::{App, Reply};
use crate::auth::InternalContext;
use crate::authz::{Guard, Permission, Sight};
pub use crate::config::LiveConfig;
use crate::domain::published::{REMINDER_DUE, RSVP_CHANGED};
use crate::domain::{ErrorCode, RsvpStatus};
use crate::error::AppError;
use crate::store::{audit, reads};
use crate::subjects::live::{LiveFeed, LiveMessage, Subscription};

/// The instance's feed and its open connections.
pub struct Live {
    pub feed: LiveFeed,
    pub config: LiveConfig,
    open: AtomicUsize,
}

impl Live {
    pub fn new(feed: LiveFeed, config: LiveConfig) -> Self {
        Self {
            feed,
            config,
            open: AtomicUsize::new(0),
        }
    }
}

/// One frame of a stream, for the transport to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `id:`, `event:` and one JSON line of `data:`.
    Message {
        id: u64,
        event: String,
        data: Arc<str>,
    },
    /// The requested point is no longer held: the stream goes on from now,
    /// whose position is `id`.
    Reset { id: u64 },
}

/// Holds one of the instance's connection slots while it lives.
struct Slot {
    app: App,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(live) = &self.app.inner.live {
            let open = live.open.fetch_sub(1, Ordering::SeqCst) - 1;
            self.app.inner.metrics.sse_connections.set(open as i64);
        }
    }
}

enum Start {
    Live,
    Reset,
    History(BoxStream<'static, Arc<LiveMessage>>),
}

/// An opened stream, not yet running: the transport runs it with a channel
/// it writes out.
pub struct LiveStream {
    app: App,
    feed: LiveFeed,
    config: LiveConfig,
    ctx: InternalContext,
    filter: StreamFilter,
    subscription: Subscription,
    start: Start,
    /// Given back when the stream ends.
    _slot: Slot,
    bypass_noted: bool,
}

impl std::fmt::Debug for LiveStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveStream")
            .field("filter", &self.filter)
            .field("after", &self.subscription.after)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Opens a stream for the caller: refused when the caller is blocked, the
    /// filtered event is not theirs to see, or the instance is full.
    pub(super) async fn open_stream(
        &self,
        guard: &Guard<'_>,
        filter: StreamFilter,
    ) -> Result<Reply, AppError> {
        let Some(live) = &self.inner.live else {
            return Err(AppError::Unavailable {
                code: ErrorCode::ServiceUnavailable,
                message: "Live updates are not served here".into(),
            });
        };
        if guard.is_blocked() {
            return Err(AppError::Forbidden("Permission denied"));
        }
        if !live.feed.is_ready() {
            return Err(AppError::Unavailable {
                code: ErrorCode::ServiceUnavailable,
                message: "Live updates are starting; try again shortly".into(),
            });
        }
        if let Some(id) = filter.event {
            self.visible(guard, id).await?;
        }
        let open = live.open.fetch_add(1, Ordering::SeqCst) + 1;
        let slot = Slot { app: self.clone() };
        self.inner.metrics.sse_connections.set(open as i64);
        if open > live.config.max_connections {
            return Err(AppError::Unavailable {
                code: ErrorCode::TooManyStreams,
                message: format!(
                    "This instance serves {} live streams already; try again shortly",
                    live.config.max_connections
                ),
            });
        }
        let subscription = live.feed.subscribe();
        let start = match filter.last_event_id {
            None => Start::Live,
            Some(last) => {
                let bounds = live.feed.bounds().await.map_err(unavailable)?;
                let caught_up = last >= subscription.after;
                // Past the stream's end: not a position of this stream (it
                // was recreated, or the id is made up); before its start:
                // one it no longer holds.
                let reset = if caught_up {
                    last > bounds.last_seq
                } else {
                    last + 1 < bounds.first_seq
                };
                if reset {
                    Start::Reset
                } else if caught_up {
                    Start::Live
                } else {
                    let subjects = &self.inner.registry.shared().subjects;
                    let filter = subjects.tenant_events(&guard.ctx().tenant_id);
                    Start::History(
                        live.feed
                            .history(filter, last, subscription.after)
                            .await
                            .map_err(unavailable)?,
                    )
                }
            }
        };
        Ok(Reply::Stream(Box::new(LiveStream {
            app: self.clone(),
            feed: live.feed.clone(),
            config: live.config.clone(),
            ctx: guard.ctx().clone(),
            filter,
            subscription,
            start,
            _slot: slot,
            bypass_noted: false,
        })))
    }

    /// What every connection needs of a message, worked out once: the event
    /// as it is now, and the frames rendered so far.
    async fn shared_of<'m>(&self, message: &'m LiveMessage) -> Result<&'m Shared, AppError> {
        let shared = message
            .shared
            .get_or_try_init(|| async {
                let snapshot = self
                    .load(message.tenant_id.into(), message.event_id.into())
                    .await?;
                Ok::<_, AppError>(Arc::new(Shared {
                    snapshot,
                    rendered: Default::default(),
                }) as Arc<dyn Any + Send + Sync>)
            })
            .await?;
        shared
            .downcast_ref::<Shared>()
            .ok_or_else(|| AppError::internal("live updates", "a message's shared state"))
    }

    /// What `message` is for this caller: `None` when it is not theirs to
    /// see or not what they asked for.
    async fn frame_for(
        &self,
        ctx: &InternalContext,
        filter: &StreamFilter,
        message: &LiveMessage,
        bypass_noted: &mut bool,
    ) -> Result<Option<Frame>, AppError> {
        if message.tenant_id != ctx.tenant_id
            || filter
                .event
                .is_some_and(|id| uuid::Uuid::from(id) != message.event_id)
        {
            return Ok(None);
        }
        let shared = self.shared_of(message).await?;
        let Some(snapshot) = &shared.snapshot else {
            return Ok(None);
        };
        let event = &snapshot.event;
        if filter.scope_type.is_some_and(|t| t != event.scope_type())
            || filter
                .scope_id
                .as_deref()
                .is_some_and(|id| id != event.scope_id().as_str())
        {
            return Ok(None);
        }
        let guard = Guard::new(
            ctx,
            self.inner.authorizer.as_ref(),
            "event.stream",
            self.inner.authz_max_calls,
        );
        let sight = guard.sight(event).await?;
        // A system admin's look past visibility is audited once per stream.
        let owed = guard.take_audit();
        if !owed.is_empty() && !*bypass_noted {
            audit::record(&self.inner.db, &owed)
                .await
                .map_err(|e| AppError::internal("audit log", e))?;
            *bypass_noted = true;
        }
        if sight != Sight::Visible {
            return Ok(None);
        }
        // A reminder is for the user it names alone.
        if message.event_type == REMINDER_DUE && message.user_id() != Some(ctx.user_id) {
            return Ok(None);
        }
        let mine = match snapshot.rsvp_of(&guard.user()) {
            Some(cached) => cached,
            None => reads::rsvp_of(&self.inner.db, event.id, guard.user()).await?,
        };
        let with_user = message.event_type == RSVP_CHANGED
            && match message.user_id() {
                Some(user) => {
                    user == ctx.user_id || guard.can(Permission::EventManage, &event.scope).await?
                }
                None => false,
            };
        // Callers differ only in their own RSVP and in whether they may
        // know who changed one: a frame is rendered once per such variant.
        let data = shared.render(mine, with_user, || {
            let mut data = json!({
                "type": message.event_type,
                "eventId": message.event_id.to_string(),
                "time": message.time,
                "event": EventView::new(snapshot.event.clone(), snapshot.counts, mine),
            });
            if with_user {
                data["userId"] = json!(message.user_id().map(|u| u.to_string()));
                data["status"] = message.data.get("status").cloned().unwrap_or(Value::Null);
            }
            data.to_string()
        });
        Ok(Some(Frame::Message {
            id: message.seq,
            event: message.event_type.clone(),
            data,
        }))
    }
}

/// What tells one caller's frame of a message from another's: their own
/// RSVP, and whether they may know who changed one.
type Variant = (Option<RsvpStatus>, bool);

/// A message's state shared by every connection.
struct Shared {
    snapshot: Option<Snapshot>,
    rendered: std::sync::Mutex<HashMap<Variant, Arc<str>>>,
}

impl Shared {
    fn render(
        &self,
        mine: Option<RsvpStatus>,
        with_user: bool,
        build: impl FnOnce() -> String,
    ) -> Arc<str> {
        let mut rendered = self
            .rendered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rendered
            .entry((mine, with_user))
            .or_insert_with(|| Arc::from(build()))
            .clone()
    }
}

fn unavailable(e: crate::subjects::live::LiveError) -> AppError {
    tracing::warn!(error = %e, "live updates: the stream cannot be read");
    AppError::Unavailable {
        code: ErrorCode::ServiceUnavailable,
        message: "The stream cannot be read right now; try again shortly".into(),
    }
}

impl LiveStream {
    /// How long the transport lets the connection sit idle before it sends
    /// a keep-alive comment.
    pub fn keepalive(&self) -> Duration {
        self.config.keepalive
    }

    /// Writes the stream into `out` until the client goes, the instance
    /// shuts down, or the client falls too far behind (it is dropped then,
    /// and resumes by `Last-Event-ID`).
    pub async fn run(mut self, out: mpsc::Sender<Frame>) {
        let feed = self.feed.clone();
        let metrics = self.app.inner.metrics.clone();
        let mut last_sent = self.subscription.after;
        match std::mem::replace(&mut self.start, Start::Live) {
            Start::Live => {}
            Start::Reset => {
                metrics.sse_resets.inc();
                if out
                    .send(Frame::Reset {
                        id: self.subscription.after,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Start::History(mut history) => {
                last_sent = 0;
                loop {
                    let next = tokio::select! {
                        next = history.next() => next,
                        () = out.closed() => return,
                        () = feed.closed() => return,
                    };
                    let Some(message) = next else { break };
                    last_sent = message.seq;
                    if !self.deliver(&out, &message).await {
                        return;
                    }
                }
                last_sent = last_sent.max(self.subscription.after);
            }
        }
        loop {
            let received = tokio::select! {
                received = self.subscription.receiver.recv() => received,
                () = out.closed() => return,
                () = feed.closed() => return,
            };
            match received {
                Ok(message) if message.seq <= last_sent => {}
                Ok(message) => {
                    last_sent = message.seq;
                    if !self.deliver(&out, &message).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.dropped();
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    fn dropped(&self) {
        self.app.inner.metrics.sse_dropped.inc();
        tracing::debug!(
            user_id = %self.ctx.user_id,
            "live updates: a client fell behind and was dropped"
        );
    }

    /// How many frames may wait for the client before it counts as gone.
    pub fn buffer(&self) -> usize {
        self.config.buffer
    }

    /// Sends what `message` is for this caller; false when the stream must
    /// end (the client left, or the message could not be judged: the client
    /// resumes and is judged again rather than miss it).
    async fn deliver(&mut self, out: &mpsc::Sender<Frame>, message: &LiveMessage) -> bool {
        let judged = self
            .app
            .frame_for(&self.ctx, &self.filter, message, &mut self.bypass_noted)
            .await;
        match judged {
            Ok(None) => true,
            Ok(Some(frame)) => match out.try_send(frame) {
                Ok(()) => {
                    self.app.inner.metrics.sse_messages.inc();
                    true
                }
                // A full queue is a client that stopped reading: waiting
                // for it would hold this task forever.
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.dropped();
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            },
            Err(e) => {
                tracing::warn!(error = %e, seq = message.seq, "live updates: a message could not be judged; the stream ends");
                false
            }
        }
    }
}
