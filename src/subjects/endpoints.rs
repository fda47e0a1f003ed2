//! The NATS request/reply face: one micro-service endpoint per operation on
//! `{prefix}.v1.<op>`. This adapter only decodes, calls the application
//! layer and encodes; every rule lives below it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::app::{App, AppError, CallMeta, Op, Reply};
use crate::auth::{HeaderSource, RequestParts};
use crate::domain::{DomainError, ErrorCode};
use crate::subjects::micro::{self, Micro};
use crate::subjects::{NatsError, QUEUE_GROUP, Subjects};
use tracing::Instrument;

/// How many requests one instance works on at once; more wait in NATS.
const MAX_IN_FLIGHT: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Msgpack,
}

impl Encoding {
    pub const fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Msgpack => "application/msgpack",
        }
    }

    /// The request's encoding: its Content-Type, or, without one, JSON when
    /// the body starts with `{` (no msgpack request can) and msgpack otherwise.
    pub fn of_request(content_type: Option<&str>, body: &[u8]) -> Result<Encoding, AppError> {
        match content_type.map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        }) {
            Some(c) if c == "application/json" => Ok(Encoding::Json),
            Some(c) if c == "application/msgpack" || c == "application/x-msgpack" => {
                Ok(Encoding::Msgpack)
            }
            Some(c) if !c.is_empty() => Err(AppError::rejected(
                ErrorCode::UnsupportedMediaType,
                format!(
                    "Content-Type {c} is not supported; use application/msgpack or application/json"
                ),
            )),
            _ => Ok(if body.first() == Some(&b'{') {
                Encoding::Json
            } else {
                Encoding::Msgpack
            }),
        }
    }

    pub fn decode(self, body: &[u8]) -> Result<Value, AppError> {
        if body.is_empty() {
            return Ok(Value::Null);
        }
        let decoded = match self {
            Encoding::Json => serde_json::from_slice::<Value>(body).map_err(|e| e.to_string()),
            Encoding::Msgpack => decode_msgpack(body),
        };
        decoded.map_err(|e| {
            let kind = if self == Encoding::Json {
                "JSON"
            } else {
                "msgpack"
            };
            DomainError::InvalidBody(format!("Cannot parse request body as {kind}: {e}")).into()
        })
    }

    pub fn encode<T: serde::Serialize + ?Sized>(self, value: &T) -> Bytes {
        let bytes = match self {
            Encoding::Json => serde_json::to_vec(value).unwrap_or_default(),
            // Maps with field names, never positional arrays.
            Encoding::Msgpack => rmp_serde::to_vec_named(value).unwrap_or_default(),
        };
        Bytes::from(bytes)
    }
}

/// How deeply msgpack values may nest: serde_json's own limit. rmp-serde's
/// default (1024) let a 200 KB body of nested arrays overflow a 2 MiB
/// worker stack and abort the whole process.
const MAX_MSGPACK_DEPTH: usize = 128;

/// One msgpack value filling the whole body, nested at most
/// [`MAX_MSGPACK_DEPTH`] deep, holding only what JSON can. `rmp_serde::from_slice`
/// stops after the first value and ignores what follows, so a body with
/// trailing bytes was accepted where the same mistake in JSON is a 400.
fn decode_msgpack(body: &[u8]) -> Result<Value, String> {
    use serde::Deserialize;
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(body));
    de.set_max_depth(MAX_MSGPACK_DEPTH);
    let JsonValue(value) = JsonValue::deserialize(&mut de).map_err(|e| e.to_string())?;
    let used = usize::try_from(de.position()).unwrap_or(usize::MAX);
    if used == body.len() {
        Ok(value)
    } else {
        Err(format!(
            "{} trailing bytes after the value",
            body.len().saturating_sub(used)
        ))
    }
}

/// A JSON value read from msgpack, refusing what JSON cannot hold: NaN and
/// infinities, which `serde_json::Value` silently turns into `null` (so a
/// msgpack `capacity: NaN` made an event unlimited), and non-string keys.
struct JsonValue(Value);

impl<'de> serde::Deserialize<'de> for JsonValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor).map(JsonValue)
    }
}

struct JsonVisitor;

impl<'de> serde::de::Visitor<'de> for JsonVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a value JSON can represent")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("NaN and infinite numbers are not allowed"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // No capacity from the declared length: a hostile header may claim billions.
        let mut items = Vec::new();
        while let Some(JsonValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some((key, JsonValue(value))) = map.next_entry::<String, JsonValue>()? {
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

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
    max_body: usize,
    timeout: Duration,
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
                let (app, client, micro) = (app.clone(), client.clone(), micro.clone());
                tokio::spawn(async move {
                    handle(&app, &client, &micro, index, op, message, max_body, timeout).await;
                    drop(permit);
                });
            }
        }));
    }
    Ok((tasks, micro))
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    app: &App,
    client: &async_nats::Client,
    micro: &Micro,
    index: usize,
    op: Op,
    message: async_nats::Message,
    max_body: usize,
    timeout: Duration,
) {
    let started = Instant::now();
    let Some(reply_to) = message.reply.clone() else {
        return;
    };
    let headers = NatsHeaders(message.headers.as_ref());
    let request_id = headers.header("X-Request-Id").map(str::to_string);
    let body = message.payload.as_ref();
    let encoding = Encoding::of_request(headers.header("Content-Type"), body);
    let reply_encoding = *encoding.as_ref().unwrap_or(&Encoding::Json);
    let span = crate::telemetry::trace::request_span(
        "nats",
        op.name(),
        headers.header("traceparent"),
        headers.header("tracestate"),
    );
    let mut who: Option<(uuid::Uuid, uuid::Uuid)> = None;
    let outcome = async {
        if body.len() > max_body {
            return Err(AppError::rejected(
                ErrorCode::PayloadTooLarge,
                format!("Request body is larger than {max_body} bytes"),
            ));
        }
        let ctx = app.authenticate(
            &headers,
            &RequestParts::nats(message.subject.as_str(), body),
        )?;
        who = Some((ctx.tenant_id, ctx.user_id));
        let value = encoding?.decode(body)?;
        // Over NATS the body carries the target, so only the listings whose
        // fields are all optional (`event.list`, `admin.roles.list`) may come
        // without one (DESIGN §12: an empty body where one is required is
        // 400 INVALID_BODY).
        if value.is_null() && !matches!(op, Op::EventList | Op::AdminRolesList) {
            return Err(DomainError::InvalidBody("Request body is required".into()).into());
        }
        let (traceparent, tracestate) = crate::telemetry::trace::context_of(
            &span,
            headers.header("traceparent"),
            headers.header("tracestate"),
        );
        let meta = CallMeta {
            traceparent,
            tracestate,
        };
        tokio::time::timeout(
            timeout,
            app.execute(&ctx, op, &value, &meta)
                .instrument(span.clone()),
        )
        .await
        .map_err(|_| AppError::Unavailable {
            code: ErrorCode::Timeout,
            message: "The request took too long; it may or may not have been applied".into(),
        })?
    }
    .await;

    let mut reply_headers = HeaderMap::new();
    if let Some(id) = &request_id {
        reply_headers.insert("X-Request-Id", id.as_str());
    }
    let (payload, status, code) = match outcome {
        Ok(Reply::Json(value)) => {
            reply_headers.insert("Content-Type", reply_encoding.content_type());
            (reply_encoding.encode(&value), 200, None)
        }
        Ok(Reply::View(view)) => {
            reply_headers.insert("Content-Type", reply_encoding.content_type());
            (reply_encoding.encode(&view), 200, None)
        }
        Ok(Reply::Calendar { body, .. }) => {
            reply_headers.insert("Content-Type", crate::domain::ics::CONTENT_TYPE);
            (Bytes::from(body), 200, None)
        }
        Err(err) => {
            if err.is_internal() {
                tracing::error!(op = op.name(), request_id = ?request_id, error = %err, "internal error");
            }
            reply_headers.insert("Content-Type", reply_encoding.content_type());
            reply_headers.insert("Nats-Service-Error-Code", err.status().to_string().as_str());
            reply_headers.insert("Nats-Service-Error", err.code().as_str());
            if let Some(seconds) = err.retry_after() {
                reply_headers.insert("Retry-After", seconds.to_string().as_str());
            }
            (
                reply_encoding.encode(&err.envelope(request_id.as_deref())),
                err.status(),
                Some(err.code().as_str()),
            )
        }
    };
    if let Err(e) = client
        .publish_with_headers(reply_to, reply_headers, payload)
        .await
    {
        tracing::warn!(op = op.name(), error = %e, "could not send the reply");
    }
    let took = started.elapsed();
    if let Some(endpoint) = micro.endpoints.get(index) {
        endpoint
            .stats
            .record(took, code.map(|c| format!("{status}:{c}")));
    }
    crate::telemetry::finish_request(
        app.metrics(),
        &crate::telemetry::RequestRecord {
            transport: "nats",
            op: op.name(),
            request_id: request_id.as_deref(),
            tenant_id: who.map(|w| w.0),
            user_id: who.map(|w| w.1),
            status,
            code,
            took,
        },
    );
}
