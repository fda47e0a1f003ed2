//! One request, whatever transport brought it: size limit → authentication
//! (and the replay checks) → decoding → parsing into a typed request → trace
//! context → deadline → the operation → the outcome, which the transport
//! renders and then reports (log line and metrics). The HTTP and NATS
//! adapters only translate their framing into an [`Incoming`] and the
//! [`Outcome`] back.

use std::time::Instant;

use serde_json::{Map, Value};
use tracing::Instrument;

use crate::app::requests::Request;
use crate::app::{App, CallMeta, Op, Reply};
use crate::auth::{HeaderSource, RequestParts, Transport, headers};
use crate::domain::{DomainError, ErrorCode};
use crate::encoding::Encoding;
use crate::error::AppError;

/// Where an HTTP request's input comes from besides its body.
#[derive(Debug, Clone)]
pub enum Target {
    /// The body alone.
    None,
    /// The query string's parameters, as fields.
    Query,
    /// An event id from the path (`id` and `eventId`).
    Event(String),
    /// An event id from the path and the query's parameters (listings of one
    /// event: `limit`, `offset`, `status`).
    EventQuery(String),
    /// A user id from the path (`userId`).
    User(String),
    /// A series id from the path (`seriesId`).
    Series(String),
    /// An event id and a user id from the path.
    EventUser(String, String),
}

/// How the body is framed.
#[derive(Debug, Clone)]
pub enum Framing<'a> {
    /// A NATS request: JSON or msgpack by its `Content-Type` (or its first
    /// byte), carrying every field, the target included.
    Nats,
    /// An HTTP request: a JSON body (or none), plus the path and query.
    Http { target: Target, query: &'a str },
}

/// One request as a transport received it.
pub struct Incoming<'a, H: HeaderSource> {
    pub op: Op,
    pub headers: &'a H,
    /// What the signature covers: method, path (or subject), query, body.
    pub parts: RequestParts<'a>,
    pub framing: Framing<'a>,
    /// The body was larger than `EVENTS_MAX_BODY_BYTES` (HTTP stops reading
    /// it there; `parts.body` is then empty).
    pub oversized: bool,
}

/// What came of one request, for the transport to render and report.
pub struct Outcome {
    pub result: Result<Reply, AppError>,
    /// The encoding of the reply: the request's, JSON when it is unknown.
    pub encoding: Encoding,
    /// The caller's `X-Request-Id`, echoed in error envelopes.
    pub request_id: Option<String>,
    pub report: Report,
}

/// The log line and metrics of one request, written once it is answered.
pub struct Report {
    op: Op,
    transport: Transport,
    request_id: Option<String>,
    caller: Option<(uuid::Uuid, uuid::Uuid)>,
    code: Option<&'static str>,
    started: Instant,
}

impl Report {
    /// The error code, if the request failed.
    pub fn code(&self) -> Option<&'static str> {
        self.code
    }

    /// How long the request has taken so far.
    pub fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Logs the request and counts it, once the transport has answered with
    /// `status` (on success HTTP answers some writes with 204).
    pub fn finish(self, app: &App, status: u16) {
        crate::telemetry::finish_request(
            app.metrics(),
            &crate::telemetry::RequestRecord {
                transport: match self.transport {
                    Transport::Http => "http",
                    Transport::Nats => "nats",
                },
                op: self.op.name(),
                request_id: self.request_id.as_deref(),
                tenant_id: self.caller.map(|c| c.0),
                user_id: self.caller.map(|c| c.1),
                status,
                code: self.code,
                took: self.started.elapsed(),
                write: self.op.is_write(),
            },
        );
    }
}

impl App {
    /// Runs one request end to end (see the module documentation).
    pub async fn handle<H: HeaderSource>(&self, incoming: Incoming<'_, H>) -> Outcome {
        let started = Instant::now();
        let Incoming {
            op,
            headers,
            parts,
            framing,
            oversized,
        } = incoming;
        let transport = parts.transport;
        let request_id = headers
            .header(headers::REQUEST_ID)
            .filter(|v| !v.trim().is_empty())
            .map(str::to_string);
        let encoding = match framing {
            Framing::Nats => Encoding::of_request(headers.header("Content-Type"), parts.body),
            Framing::Http { .. } => Ok(Encoding::Json),
        };
        let reply_encoding = *encoding.as_ref().unwrap_or(&Encoding::Json);
        let traceparent = headers.header("traceparent");
        let tracestate = headers.header("tracestate");
        let span = crate::telemetry::trace::request_span(
            match transport {
                Transport::Http => "http",
                Transport::Nats => "nats",
            },
            op.name(),
            traceparent,
            tracestate,
        );
        let mut caller = None;
        let result = async {
            let limit = op.max_body_bytes(self.inner.max_body_bytes);
            if oversized || parts.body.len() > limit {
                return Err(AppError::rejected(
                    ErrorCode::PayloadTooLarge,
                    format!("Request body is larger than {limit} bytes"),
                ));
            }
            // Authentication comes before any look at the body.
            let ctx = self.authenticate(op, headers, &parts).await?;
            caller = Some((ctx.tenant_id, ctx.user_id));
            let body = match &framing {
                Framing::Nats => encoding?.decode(parts.body)?,
                Framing::Http { target, query } => http_input(op, target, query, parts.body)?,
            };
            let request = Request::parse(op, transport, &body, ctx.tenant_id.into())?;
            let (traceparent, tracestate) =
                crate::telemetry::trace::context_of(&span, traceparent, tracestate);
            let meta = CallMeta {
                traceparent,
                tracestate,
            };
            tokio::time::timeout(
                self.inner.request_timeout,
                self.run(&ctx, request, &meta).instrument(span.clone()),
            )
            .await
            .map_err(|_| AppError::Unavailable {
                code: ErrorCode::Timeout,
                message: "The request took too long; it may or may not have been applied".into(),
            })?
        }
        .await;
        let code = result.as_ref().err().map(|e| {
            if e.is_internal() {
                tracing::error!(op = op.name(), request_id = ?request_id, error = %e, "internal error");
            }
            e.code().as_str()
        });
        Outcome {
            result,
            encoding: reply_encoding,
            request_id: request_id.clone(),
            report: Report {
                op,
                transport,
                request_id,
                caller,
                code,
                started,
            },
        }
    }
}

/// An HTTP request's input as one object: its JSON body (none, or only
/// whitespace, counts as none) with the path and query parameters merged in.
/// A body-less request to an operation that needs one stays `null`, so that
/// it is refused as such.
fn http_input(op: Op, target: &Target, query: &str, bytes: &[u8]) -> Result<Value, AppError> {
    if op == Op::EventImport {
        return import_input(query, bytes);
    }
    let body: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(bytes).map_err(|e| {
            DomainError::InvalidBody(format!("Cannot parse request body as JSON: {e}"))
        })?
    };
    let mut object = match body {
        Value::Object(map) => map,
        Value::Null if op.requires_body(Transport::Http) => return Ok(Value::Null),
        Value::Null => Map::new(),
        _ => {
            return Err(
                DomainError::InvalidBody("Request body must be a JSON object".into()).into(),
            );
        }
    };
    let in_query = url::form_urlencoded::parse(query.as_bytes())
        .next()
        .is_some();
    if matches!(target, Target::Query | Target::EventQuery(_)) && in_query && !object.is_empty() {
        // Which of two values of a field would count is a guess nobody
        // should have to make.
        return Err(DomainError::InvalidBody(
            "Send the fields either in the query or in the body, not both".into(),
        )
        .into());
    }
    match target {
        Target::None => {}
        Target::Query => merge_query(&mut object, query),
        Target::EventQuery(id) => {
            merge_query(&mut object, query);
            object.insert("id".into(), Value::String(id.clone()));
            object.insert("eventId".into(), Value::String(id.clone()));
        }
        Target::Event(id) => {
            object.insert("id".into(), Value::String(id.clone()));
            object.insert("eventId".into(), Value::String(id.clone()));
        }
        Target::User(uid) => {
            object.insert("userId".into(), Value::String(uid.clone()));
        }
        Target::Series(id) => {
            object.insert("seriesId".into(), Value::String(id.clone()));
        }
        Target::EventUser(id, uid) => {
            object.insert("id".into(), Value::String(id.clone()));
            object.insert("eventId".into(), Value::String(id.clone()));
            object.insert("userId".into(), Value::String(uid.clone()));
        }
    }
    Ok(Value::Object(object))
}

/// Query parameters as string fields (the last of a repeated name wins).
fn merge_query(object: &mut Map<String, Value>, query: &str) {
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        object.insert(k.into_owned(), Value::String(v.into_owned()));
    }
}

/// `POST /import`: the body is the calendar itself (`text/calendar`), the
/// scope and visibility come in the query.
fn import_input(query: &str, bytes: &[u8]) -> Result<Value, AppError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let before = &bytes[..e.valid_up_to()];
        AppError::Calendar {
            line: before.iter().filter(|b| **b == b'\n').count() + 1,
            message: "the calendar is not UTF-8".into(),
        }
    })?;
    let mut object = Map::new();
    merge_query(&mut object, query);
    // No calendar at all is reported with the query's field errors
    // (`ics`: field required).
    if !text.trim().is_empty() {
        object.insert("ics".into(), Value::String(text.to_string()));
    }
    Ok(Value::Object(object))
}
