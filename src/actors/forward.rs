//! RSVP writes handed to the instance that owns their scope
//! ([`crate::actors::owners`]). The instance that took the request has
//! authenticated and authorised it; it sends the decided-upon command with
//! its meta (replay key included) to `{prefix}.internal.writes.<owner>`,
//! HMAC-signed with the service's secret, and passes the owner's answer on.
//! The owner queues it in its scope actor like its own requests, so one
//! group commit batches the scope's RSVPs from every instance, and claims
//! its replay key in that transaction: a forward sent twice is applied once.
//!
//! A forward nobody answers at once (no subscriber: the owner stopped) is
//! applied where it arrived. One that times out is answered with the same
//! 503 a local write that timed out gets: it may or may not have been
//! applied.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::actors::ScopeKey;
use crate::actors::registry::{Registry, Shared};
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
    let body = match rmp_serde::to_vec_named(&forward) {
        Ok(body) => body,
        Err(e) => {
            return Some(Sent::Answered(Err(AppError::internal(
                "encode forwarded write",
                e,
            ))));
        }
    };
    let mut headers = async_nats::HeaderMap::new();
    let signature = crate::auth::hmac::sign_canonical(shared.forward_secret(), &canonical(&body));
    headers.insert(SIGNATURE_HEADER, signature.as_str());
    let subject = shared.subjects.internal_writes(owner);
    let asked = tokio::time::timeout(
        crate::actors::scope::CALL_TIMEOUT,
        shared
            .nats
            .request_with_headers(subject, headers, Bytes::from(body)),
    )
    .await;
    use async_nats::RequestErrorKind;
    let reply = match asked {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => return Some(Sent::Untaken),
        Ok(Err(e)) if e.kind() != RequestErrorKind::TimedOut => {
            // Not sent (the connection is down): nothing was applied.
            tracing::debug!(error = %e, owner, "forwarded write not sent; applying it here");
            return Some(Sent::Untaken);
        }
        Ok(Err(_)) | Err(_) => return Some(Sent::Answered(Err(timed_out()))),
    };
    let answer = match rmp_serde::from_slice::<WireAnswer>(&reply.payload) {
        Ok(answer) => answer,
        Err(e) => {
            return Some(Sent::Answered(Err(AppError::internal(
                "decode the owner's answer",
                e,
            ))));
        }
    };
    Some(Sent::Answered(match answer {
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
    }))
}

fn timed_out() -> AppError {
    AppError::Unavailable {
        code: ErrorCode::Timeout,
        message: "The request took too long; it may or may not have been applied".into(),
    }
}

/// Takes the writes other instances forward to this one, until aborted
/// (aborting unsubscribes, so later forwards find no responder and are
/// applied where they arrived).
pub async fn serve(registry: Registry) -> Option<tokio::task::JoinHandle<()>> {
    let shared = registry.shared().clone();
    let subject = shared.subjects.internal_writes(&shared.instance);
    let mut sub = match shared.nats.subscribe(subject).await {
        Ok(sub) => sub,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take forwarded writes; other instances apply theirs themselves");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply.clone() else {
                continue;
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                let shared = registry.shared().clone();
                let answer = match accept(&shared, &msg) {
                    Ok((key, envelope)) => {
                        shared
                            .metrics
                            .write_forwards
                            .with_label_values(&["received"])
                            .inc();
                        answer_of(registry.write(&key, envelope).await)
                    }
                    Err(e) => {
                        shared
                            .metrics
                            .write_forwards
                            .with_label_values(&["refused"])
                            .inc();
                        tracing::warn!(error = %e, "refused a forwarded write");
                        Err(Relayed::from(&e))
                    }
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

/// A forward's signature, freshness and body, as a write for the actor.
fn accept(shared: &Shared, msg: &async_nats::Message) -> Result<(ScopeKey, Envelope), AppError> {
    let signed = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(SIGNATURE_HEADER))
        .map(|v| v.as_str())
        .unwrap_or_default();
    if !crate::auth::hmac::verify_canonical(shared.secrets(), &canonical(&msg.payload), signed) {
        return Err(AuthError::Unauthorized(UnauthorizedReason::InvalidSignature).into());
    }
    let forward: Forward = rmp_serde::from_slice(&msg.payload).map_err(|e| {
        AppError::rejected(
            ErrorCode::InvalidBody,
            format!("Cannot decode a forwarded write: {e}"),
        )
    })?;
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
