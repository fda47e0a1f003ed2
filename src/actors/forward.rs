//! RSVP writes handed to the instance that owns their scope
//! ([`crate::actors::owners`]). The instance that took the request has
//! authenticated and authorised it; it sends the decided-upon command with
//! its meta (replay key included) to `{prefix}.internal.writes.<owner>`,
//! HMAC-signed with the service's secret, and passes the owner's answer on.
//! The owner queues it in its scope actor like its own requests, so one
//! group commit batches the scope's RSVPs from every instance, and claims
//! its replay key in that transaction: a forward sent twice is applied once.
//! Forwards to one owner share a message while earlier ones are in flight,
//! so a busy scope's hand-overs cost few NATS round trips.
//!
//! A forward nobody answers at once (no subscriber: the owner stopped) is
//! applied where it arrived. One that times out is answered with the same
//! 503 a local write that timed out gets: it may or may not have been
//! applied.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::actors::ScopeKey;
use crate::actors::registry::{Registry, Shared, timeout};
use crate::auth::{AuthError, UnauthorizedReason};
use crate::domain::{ErrorCode, EventId, RequestedRsvp, RsvpCounts, RsvpStatus, TenantId, UserId};
use crate::error::{AppError, Relayed};
use crate::store::batch::{CommandMeta, CommandResult, Envelope, WriteCommand, WriteOutcome};

/// The header carrying a forward's signature (lower-case hex HMAC-SHA256).
pub const SIGNATURE_HEADER: &str = "Events-Forward-Signature";

/// What an RSVP write answers with, wherever it ran.
#[derive(Debug, Clone, PartialEq)]
pub struct RsvpDone {
    pub event_id: EventId,
    /// The event's seat capacity (`None`: unlimited).
    pub capacity: Option<u32>,
    pub counts: RsvpCounts,
    pub status: Option<RsvpStatus>,
    pub guests: u32,
}

impl RsvpDone {
    pub fn of(outcome: WriteOutcome) -> Result<Self, AppError> {
        match outcome {
            WriteOutcome::Rsvp {
                event,
                counts,
                status,
                guests,
                ..
            } => Ok(Self {
                event_id: event.id,
                capacity: event.seat_capacity(),
                counts,
                status,
                guests,
            }),
            other => Err(AppError::internal(
                "rsvp",
                format!("unexpected outcome {other:?}"),
            )),
        }
    }
}

/// An RSVP write as the owner receives it.
#[derive(Debug, Serialize, Deserialize)]
struct Forward {
    key: ScopeKey,
    event_id: EventId,
    requested: Option<RequestedRsvp>,
    guests: u32,
    meta: WireMeta,
}

/// [`CommandMeta`] without audit entries (a write that owes some is not
/// forwarded) and with the replay key it must have.
#[derive(Debug, Serialize, Deserialize)]
struct WireMeta {
    tenant: TenantId,
    actor: UserId,
    request_id: String,
    traceparent: Option<String>,
    tracestate: Option<String>,
    tenant_slug: Option<String>,
    replay_key: [u8; 32],
    replay_expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireDone {
    event_id: EventId,
    capacity: Option<u32>,
    counts: RsvpCounts,
    /// `counts.guests`, which `RsvpCounts` does not serialise (views hide it).
    seat_guests: u32,
    status: Option<RsvpStatus>,
    guests: u32,
}

type WireAnswer = Result<WireDone, Relayed>;

/// The answer to a message: one per forward it carried, in their order, or
/// the refusal of the whole message (its signature, its body).
type MessageAnswer = Result<Vec<WireAnswer>, Relayed>;

/// What a forward came to.
pub enum Sent {
    /// The owner answered.
    Answered(Result<RsvpDone, AppError>),
    /// Nobody took it: the owner is gone, nothing was applied.
    Untaken,
}

/// The signed text: a label of its own, so a forward's signature can never
/// pass for a request's, and the body's digest.
fn canonical(body: &[u8]) -> String {
    format!("events-forward-v1\n{}", hex::encode(Sha256::digest(body)))
}

/// Whether a write can be forwarded, and its wire meta if so.
fn wire_meta(meta: &CommandMeta) -> Option<WireMeta> {
    if !meta.audit.is_empty() {
        return None;
    }
    Some(WireMeta {
        tenant: meta.tenant,
        actor: meta.actor,
        request_id: meta.request_id.clone(),
        traceparent: meta.traceparent.clone(),
        tracestate: meta.tracestate.clone(),
        tenant_slug: meta.tenant_slug.clone(),
        replay_key: meta.replay_key?,
        replay_expires_at: meta.replay_expires_at,
        now: meta.now,
    })
}

/// Most forwards one message carries.
pub const MAX_PER_MESSAGE: usize = 256;

/// Messages in flight to one owner. While they are, further forwards wait
/// and leave together in the next message: one NATS round trip for many
/// RSVPs when the owner is busy, as a group commit is one transaction.
const IN_FLIGHT_PER_OWNER: usize = 2;

type Queued = (Forward, oneshot::Sender<Sent>);

/// The queue of forwards to each owner, and its sending task.
#[derive(Default)]
pub struct Forwarder {
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<Queued>>>,
}

impl Forwarder {
    fn queue(&self, shared: &Shared, owner: &str) -> mpsc::UnboundedSender<Queued> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(queue) = queues.get(owner).filter(|q| !q.is_closed()) {
            return queue.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(drain(
            Link {
                nats: shared.nats.clone(),
                subject: shared.subjects.internal_writes(owner),
                secret: shared.forward_secret().to_string(),
                metrics: shared.metrics.clone(),
            },
            rx,
        ));
        queues.insert(owner.to_string(), tx.clone());
        tx
    }

    /// Drops the queue to an owner that has gone; its task ends once the
    /// forwards already queued are answered.
    pub fn forget(&self, owner: &str) {
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(owner);
    }
}

/// What a queue's task needs to reach its owner.
#[derive(Clone)]
struct Link {
    nats: async_nats::Client,
    subject: String,
    secret: String,
    metrics: std::sync::Arc<crate::telemetry::metrics::Metrics>,
}

/// Sends an RSVP write to `owner`. `None` when the write cannot be
/// forwarded (it owes audit entries or has no replay key): run it here.
pub async fn send(
    shared: &Shared,
    owner: &str,
    key: &ScopeKey,
    meta: &CommandMeta,
    event_id: EventId,
    requested: Option<RequestedRsvp>,
    guests: u32,
) -> Option<Sent> {
    let forward = Forward {
        key: key.clone(),
        event_id,
        requested,
        guests,
        meta: wire_meta(meta)?,
    };
    let (answer, answered) = oneshot::channel();
    if shared
        .forwarder
        .queue(shared, owner)
        .send((forward, answer))
        .is_err()
    {
        // Never queued, so never sent.
        return Some(Sent::Untaken);
    }
    // A queue whose task ended without answering may have sent it.
    Some(
        answered
            .await
            .unwrap_or_else(|_| Sent::Answered(Err(timeout()))),
    )
}

/// Sends what waits in one owner's queue, a message at a time per free
/// slot, until the queue is dropped.
async fn drain(link: Link, mut queue: mpsc::UnboundedReceiver<Queued>) {
    let slots = std::sync::Arc::new(Semaphore::new(IN_FLIGHT_PER_OWNER));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_PER_MESSAGE {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let link = link.clone();
        tokio::spawn(async move {
            let (forwards, answers): (Vec<Forward>, Vec<_>) = batch.into_iter().unzip();
            let results = exchange(&link, &forwards).await;
            for (answer, result) in answers.into_iter().zip(results) {
                let _ = answer.send(result);
            }
            drop(slot);
        });
    }
}

/// One message to the owner: the forwards out, one answer each back.
async fn exchange(link: &Link, forwards: &[Forward]) -> Vec<Sent> {
    let each = |make: &dyn Fn() -> Sent| (0..forwards.len()).map(|_| make()).collect();
    let body = match rmp_serde::to_vec_named(forwards) {
        Ok(body) => body,
        Err(e) => {
            let e = e.to_string();
            return each(&|| {
                Sent::Answered(Err(AppError::internal("encode forwarded writes", &e)))
            });
        }
    };
    let mut headers = async_nats::HeaderMap::new();
    let signature = crate::auth::hmac::sign_canonical(&link.secret, &canonical(&body));
    headers.insert(SIGNATURE_HEADER, signature.as_str());
    link.metrics.write_forward_messages.inc();
    let asked = tokio::time::timeout(
        crate::actors::scope::CALL_TIMEOUT,
        link.nats
            .request_with_headers(link.subject.clone(), headers, Bytes::from(body)),
    )
    .await;
    use async_nats::RequestErrorKind;
    let reply = match asked {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => return each(&|| Sent::Untaken),
        Ok(Err(e)) if e.kind() != RequestErrorKind::TimedOut => {
            // Not sent (the connection is down): nothing was applied.
            tracing::debug!(error = %e, subject = %link.subject, "forwarded writes not sent; applying them here");
            return each(&|| Sent::Untaken);
        }
        Ok(Err(_)) | Err(_) => return each(&|| Sent::Answered(Err(timeout()))),
    };
    match rmp_serde::from_slice::<MessageAnswer>(&reply.payload) {
        Ok(Ok(answers)) if answers.len() == forwards.len() => answers
            .into_iter()
            .map(|answer| Sent::Answered(done_of(answer)))
            .collect(),
        Ok(Ok(answers)) => {
            let e = format!("{} answers to {} writes", answers.len(), forwards.len());
            each(&|| Sent::Answered(Err(AppError::internal("the owner's answer", &e))))
        }
        Ok(Err(refused)) => {
            each(&|| Sent::Answered(Err(AppError::Relayed(Box::new(refused.clone())))))
        }
        Err(e) => {
            let e = e.to_string();
            each(&|| Sent::Answered(Err(AppError::internal("decode the owner's answer", &e))))
        }
    }
}

fn done_of(answer: WireAnswer) -> Result<RsvpDone, AppError> {
    match answer {
        Ok(done) => {
            let mut counts = done.counts;
            counts.guests = done.seat_guests;
            Ok(RsvpDone {
                event_id: done.event_id,
                capacity: done.capacity,
                counts,
                status: done.status,
                guests: done.guests,
            })
        }
        Err(relayed) => Err(AppError::Relayed(Box::new(relayed))),
    }
}

/// Takes the writes other instances forward to this one, until aborted by
/// [`Registry::leave`] (aborting unsubscribes, so later forwards find no
/// responder and are applied where they arrived).
pub async fn serve(registry: &Registry) -> Option<tokio::task::JoinHandle<()>> {
    let shared = registry.shared().clone();
    let subject = shared.subjects.internal_writes(&shared.instance);
    let mut sub = match shared.nats.subscribe(subject).await {
        Ok(sub) => sub,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take forwarded writes; other instances apply theirs themselves");
            return None;
        }
    };
    // Live before this instance announces itself, so a forward to it finds
    // its subscriber.
    if let Err(e) = shared.nats.flush().await {
        tracing::debug!(error = %e, "flush after subscribing to forwarded writes");
    }
    let weak = registry.downgrade();
    Some(tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply.clone() else {
                continue;
            };
            let Some(registry) = weak.upgrade() else {
                return;
            };
            tokio::spawn(async move {
                let shared = registry.shared().clone();
                let answer: MessageAnswer = match open(&shared, &msg) {
                    Ok(forwards) => Ok(futures::future::join_all(
                        forwards.into_iter().map(|f| apply(&registry, f)),
                    )
                    .await),
                    Err(e) => Err(refuse(&shared, &e)),
                };
                match rmp_serde::to_vec_named(&answer) {
                    Ok(body) => {
                        let _ = shared.nats.publish(reply, body.into()).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot encode a forwarded write's answer")
                    }
                }
            });
        }
    }))
}

/// Counts and logs a refused forward, and says why to its sender.
fn refuse(shared: &Shared, e: &AppError) -> Relayed {
    shared.count_forward("refused");
    tracing::warn!(error = %e, "refused a forwarded write");
    Relayed::from(e)
}

/// A message's signature and body: the forwards it carries.
fn open(shared: &Shared, msg: &async_nats::Message) -> Result<Vec<Forward>, AppError> {
    let signed = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(SIGNATURE_HEADER))
        .map(|v| v.as_str())
        .unwrap_or_default();
    if !crate::auth::hmac::verify_canonical(shared.secrets(), &canonical(&msg.payload), signed) {
        return Err(AuthError::Unauthorized(UnauthorizedReason::InvalidSignature).into());
    }
    let forwards: Vec<Forward> = rmp_serde::from_slice(&msg.payload).map_err(|e| {
        AppError::rejected(
            ErrorCode::InvalidBody,
            format!("Cannot decode a forwarded write: {e}"),
        )
    })?;
    if forwards.is_empty() || forwards.len() > MAX_PER_MESSAGE {
        return Err(AppError::rejected(
            ErrorCode::InvalidBody,
            format!(
                "A message carries 1 to {MAX_PER_MESSAGE} forwarded writes, not {}",
                forwards.len()
            ),
        ));
    }
    Ok(forwards)
}

/// Runs one forward in this instance's scope actor, or refuses it.
async fn apply(registry: &Registry, forward: Forward) -> WireAnswer {
    let shared = registry.shared();
    match accept(forward) {
        Ok((key, envelope)) => {
            shared.count_forward("received");
            answer_of(registry.write(&key, envelope).await)
        }
        Err(e) => Err(refuse(shared, &e)),
    }
}

/// A forward's freshness and tenant, as a write for the actor.
fn accept(forward: Forward) -> Result<(ScopeKey, Envelope), AppError> {
    // Past its expiry the replay key may be purged, and could no longer
    // stop a second application.
    if forward.meta.replay_expires_at <= Utc::now() {
        return Err(AuthError::Unauthorized(UnauthorizedReason::Expired).into());
    }
    let m = forward.meta;
    let meta = CommandMeta {
        tenant: m.tenant,
        actor: m.actor,
        request_id: m.request_id,
        traceparent: m.traceparent,
        tracestate: m.tracestate,
        tenant_slug: m.tenant_slug,
        replay_key: Some(m.replay_key),
        replay_expires_at: m.replay_expires_at,
        audit: Vec::new(),
        now: m.now,
    };
    if forward.key.tenant != meta.tenant {
        return Err(AppError::rejected(
            ErrorCode::InvalidBody,
            "A forwarded write's scope is in another tenant",
        ));
    }
    let command = WriteCommand::SetRsvp {
        event_id: forward.event_id,
        requested: forward.requested,
        guests: forward.guests,
    };
    Ok((forward.key, Envelope { meta, command }))
}

fn answer_of(result: CommandResult) -> WireAnswer {
    match result.and_then(RsvpDone::of) {
        Ok(done) => Ok(WireDone {
            event_id: done.event_id,
            capacity: done.capacity,
            counts: done.counts,
            seat_guests: done.counts.guests,
            status: done.status,
            guests: done.guests,
        }),
        Err(e) => {
            if e.is_internal() {
                tracing::error!(error = %e, "internal error in a forwarded write");
            }
            Err(Relayed::from(&e))
        }
    }
}
