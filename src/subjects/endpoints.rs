//! The NATS request/reply face: one micro-service endpoint per operation on
//! `{prefix}.v1.<op>`. This adapter only decodes, calls the application
//! layer and encodes; every rule lives below it.

use std::sync::Arc;

use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::app::pipeline::{Framing, Incoming, Outcome};
use crate::app::{App, Op, Reply};
use crate::auth::{HeaderSource, RequestParts};
use crate::subjects::micro::{self, Micro};
use crate::subjects::{NatsError, QUEUE_GROUP, Subjects};

/// How many requests one instance works on at once; more wait in NATS.
const MAX_IN_FLIGHT: usize = 4096;

/// NATS headers for the authentication layer (first value, any case).
struct NatsHeaders<'a>(Option<&'a HeaderMap>);

impl HeaderSource for NatsHeaders<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        // One pass over the few headers, comparing strings: `HeaderMap::get`
        // would parse (and allocate) a `HeaderName` per lookup.
        let map = self.0?;
        let mut folded = None;
        for (k, values) in map.iter() {
            let k: &str = k.as_ref();
            if k == name {
                return values.first().map(HeaderValue::as_str);
            }
            if folded.is_none() && k.eq_ignore_ascii_case(name) {
                folded = values.first();
            }
        }
        folded.map(HeaderValue::as_str)
    }
}

/// Registers every operation (and the micro-service discovery subjects)
/// and serves requests; returns the subscription tasks (aborting them
/// unsubscribes) and the micro-service record.
pub async fn serve(
    app: App,
    client: async_nats::Client,
    subjects: &Subjects,
) -> Result<(Vec<tokio::task::JoinHandle<()>>, Arc<Micro>), NatsError> {
    let micro = Arc::new(Micro::new(
        "UpdSpace Events: events, RSVP, attendance, calendar export",
        Op::ALL
            .iter()
            .map(|op| (op.name().replace('.', "-"), subjects.command(op.name())))
            .collect(),
    ));
    let mut tasks = micro::serve_discovery(client.clone(), micro.clone()).await?;
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    for (index, op) in Op::ALL.into_iter().enumerate() {
        let subject = subjects.command(op.name());
        let mut subscription = client
            .queue_subscribe(subject.clone(), QUEUE_GROUP.to_string())
            .await
            .map_err(|e| NatsError::Service(format!("subscribe {subject}: {e}")))?;
        let (app, permits, client, micro) =
            (app.clone(), permits.clone(), client.clone(), micro.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let request = NatsRequest {
                    message,
                    client: client.clone(),
                    micro: micro.clone(),
                    endpoint: index,
                };
                let app = app.clone();
                // Boxed: the request's future is large, and a task's future
                // is moved around by value when spawned.
                tokio::spawn(async move {
                    Box::pin(request.serve(&app, op)).await;
                    drop(permit);
                });
            }
        }));
    }
    // A subscription is live once the server has read it: until this
    // round trip, a request sent right after start-up could find no
    // responder.
    client
        .flush()
        .await
        .map_err(|e| NatsError::Service(format!("flush the subscriptions: {e}")))?;
    Ok((tasks, micro))
}

/// One request received on an endpoint: it owns the reply subject and the
/// endpoint's statistics.
struct NatsRequest {
    message: async_nats::Message,
    client: async_nats::Client,
    micro: Arc<Micro>,
    endpoint: usize,
}

impl NatsRequest {
    async fn serve(self, app: &App, op: Op) {
        // A publish without a reply subject expects no answer.
        let Some(reply_to) = self.message.reply.clone() else {
            return;
        };
        let headers = NatsHeaders(self.message.headers.as_ref());
        let outcome = app
            .handle(Incoming {
                op,
                headers: &headers,
                parts: RequestParts::nats(self.message.subject.as_str(), &self.message.payload),
                framing: Framing::Nats,
                oversized: false,
            })
            .await;
        let Outcome {
            result,
            encoding,
            request_id,
            report,
        } = outcome;
        let mut reply_headers = HeaderMap::new();
        if let Some(id) = &request_id {
            reply_headers.insert("X-Request-Id", id.as_str());
        }
        // Live streams are HTTP's alone: no NATS subject opens one.
        let result = match result {
            Ok(Reply::Stream(_) | Reply::Csv(_)) => Err(crate::error::AppError::internal(
                "nats reply",
                "a live stream or an export cannot be a NATS reply",
            )),
            other => other,
        };
        let (payload, status) = match result {
            Ok(Reply::Json(value)) => {
                reply_headers.insert("Content-Type", encoding.content_type());
                (encoding.encode(&value), 200)
            }
            Ok(Reply::View(view)) => {
                reply_headers.insert("Content-Type", encoding.content_type());
                (encoding.encode(&view), 200)
            }
            Ok(Reply::Calendar { body, .. }) => {
                reply_headers.insert("Content-Type", crate::domain::ics::CONTENT_TYPE);
                (Bytes::from(body), 200)
            }
            Ok(Reply::Stream(_) | Reply::Csv(_)) => (Bytes::new(), 500),
            Err(err) => {
                reply_headers.insert("Content-Type", encoding.content_type());
                reply_headers.insert("Nats-Service-Error-Code", err.status().to_string().as_str());
                reply_headers.insert("Nats-Service-Error", err.code().as_str());
                if let Some(seconds) = err.retry_after() {
                    reply_headers.insert("Retry-After", seconds.to_string().as_str());
                }
                (
                    encoding.encode(&err.envelope(request_id.as_deref())),
                    err.status(),
                )
            }
        };
        if let Err(e) = self
            .client
            .publish_with_headers(reply_to, reply_headers, payload)
            .await
        {
            tracing::warn!(op = op.name(), error = %e, "could not send the reply");
        }
        if let Some(endpoint) = self.micro.endpoints.get(self.endpoint) {
            endpoint.stats.record(
                report.elapsed(),
                report.code().map(|c| format!("{status}:{c}")),
            );
        }
        report.finish(app, status);
    }
}
