//! A client for the NATS API: signs v2 requests and decodes replies. Used by
//! `events-svc call`, the benchmark and the tests. Replies come back under
//! the connection's inbox prefix (`ConnectOptions::custom_inbox_prefix`;
//! `NATS_INBOX_PREFIX` for the connections `subjects::connect_with_retry`
//! makes), which the caller's NATS user must be allowed to subscribe to.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use serde_json::Value;

use crate::auth::{ContextHeaders, RequestParts, sign_headers_v2};
use crate::encoding::Encoding;
use crate::names::Subjects;

/// Who a request is made as.
#[derive(Debug, Clone)]
pub struct Identity {
    pub tenant_id: String,
    pub tenant_slug: String,
    pub user_id: String,
    /// Raw `X-Master-Flags` JSON object, if any.
    pub master_flags: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no reply within {0:?}: is events-svc running and subscribed to this subject prefix?")]
    Timeout(Duration),
    #[error("no events service answers on {0}: start events-svc (or check EVENTS_SUBJECT_PREFIX)")]
    NoResponders(String),
    #[error("NATS request failed: {0}")]
    Request(String),
    #[error("cannot decode the reply: {0}")]
    Decode(String),
}

/// A decoded reply.
#[derive(Debug, Clone)]
pub struct CallReply {
    /// 200 for success, else the `Nats-Service-Error-Code`.
    pub status: u16,
    /// The `Nats-Service-Error` code, for errors.
    pub code: Option<String>,
    pub content_type: Option<String>,
    /// The decoded body; a calendar reply is a JSON string.
    pub body: Value,
    pub headers: HeaderMap,
}

#[derive(Clone)]
pub struct EventsClient {
    nats: async_nats::Client,
    subjects: Subjects,
    secret: String,
    pub encoding: Encoding,
    pub timeout: Duration,
}

impl EventsClient {
    pub fn new(nats: async_nats::Client, prefix: &str, secret: &str) -> Self {
        Self {
            nats,
            subjects: Subjects::new(prefix),
            secret: secret.to_string(),
            encoding: Encoding::Msgpack,
            timeout: Duration::from_secs(10),
        }
    }

    pub fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Calls `op` with a fresh request id.
    pub async fn call(
        &self,
        op: &str,
        who: &Identity,
        body: &Value,
    ) -> Result<CallReply, ClientError> {
        let request_id = uuid::Uuid::new_v4().to_string();
        self.call_as(op, who, body, &request_id).await
    }

    /// Calls `op` with a chosen request id (retries reuse it).
    pub async fn call_as(
        &self,
        op: &str,
        who: &Identity,
        body: &Value,
        request_id: &str,
    ) -> Result<CallReply, ClientError> {
        let (subject, headers, payload) = self.prepare(op, who, body, request_id);
        self.send(subject, headers, payload).await
    }

    /// Calls `op` and returns only the reply's status, leaving the body
    /// undecoded (load generators check success, not content).
    pub async fn status_of(
        &self,
        op: &str,
        who: &Identity,
        body: &Value,
    ) -> Result<u16, ClientError> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let (subject, headers, payload) = self.prepare(op, who, body, &request_id);
        let message = self.request(subject, headers, payload).await?;
        Ok(message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Service-Error-Code"))
            .and_then(|c| c.as_str().parse().ok())
            .unwrap_or(200))
    }

    /// The subject, signed headers and encoded body of a call.
    fn prepare(
        &self,
        op: &str,
        who: &Identity,
        body: &Value,
        request_id: &str,
    ) -> (String, HeaderMap, Bytes) {
        let payload = self.encoding.encode(body);
        let subject = self.subjects.command(op);
        let headers =
            self.signed_headers(&subject, who, &payload, request_id, crate::auth::now_unix());
        (subject, headers, payload)
    }

    /// The signed header set of a request (exposed for tests that tamper with it).
    pub fn signed_headers(
        &self,
        subject: &str,
        who: &Identity,
        payload: &[u8],
        request_id: &str,
        ts: i64,
    ) -> HeaderMap {
        let identity = ContextHeaders {
            request_id,
            tenant_id: &who.tenant_id,
            tenant_slug: &who.tenant_slug,
            user_id: Some(&who.user_id),
            master_flags: who.master_flags.as_deref(),
        };
        let mut headers = HeaderMap::new();
        for (k, v) in sign_headers_v2(
            &self.secret,
            &RequestParts::nats(subject, payload),
            &identity,
            ts,
        ) {
            headers.insert(k.as_str(), v.as_str());
        }
        headers.insert("Content-Type", self.encoding.content_type());
        headers
    }

    pub fn subject(&self, op: &str) -> String {
        self.subjects.command(op)
    }

    /// Sends a prepared request and waits for the reply.
    async fn request(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<async_nats::Message, ClientError> {
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(payload)
            .timeout(Some(self.timeout));
        self.nats
            .send_request(subject.clone(), request)
            .await
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::TimedOut => ClientError::Timeout(self.timeout),
                async_nats::RequestErrorKind::NoResponders => ClientError::NoResponders(subject),
                _ => ClientError::Request(e.to_string()),
            })
    }

    /// Sends a prepared request and decodes the reply.
    pub async fn send(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<CallReply, ClientError> {
        let message = self.request(subject, headers, payload).await?;
        let headers = message.headers.clone().unwrap_or_default();
        let get = |name: &str| headers.get(name).map(|v| v.as_str().to_string());
        let status = get("Nats-Service-Error-Code")
            .and_then(|c| c.parse().ok())
            .unwrap_or(200);
        let content_type = get("Content-Type");
        let body = match content_type.as_deref() {
            Some(ct) if ct.starts_with("text/calendar") => {
                Value::String(String::from_utf8_lossy(&message.payload).into_owned())
            }
            _ if message.payload.is_empty() => Value::Null,
            Some("application/json") => serde_json::from_slice(&message.payload)
                .map_err(|e| ClientError::Decode(e.to_string()))?,
            _ => rmp_serde::from_slice(&message.payload)
                .map_err(|e| ClientError::Decode(e.to_string()))?,
        };
        Ok(CallReply {
            status,
            code: get("Nats-Service-Error"),
            content_type,
            body,
            headers,
        })
    }
}
