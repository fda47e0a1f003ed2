//! The HTTP calls to Access and Portal: signed over the path the receiver
//! verifies, with canonical ids, bounded answers, one retry after a
//! connection-level failure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::stats::{bump, micros};
use super::{Failure, Inner, MAX_ANSWER_BYTES};
use crate::auth::{InternalContext, sign_v1};
use crate::authz::Permission;
use crate::domain::{Scope, ScopeType};

/// The caller's identity as sent to Access and Portal: canonical ids.
#[derive(Debug, Clone)]
pub(super) struct Caller {
    pub(super) request_id: String,
    pub(super) tenant: Uuid,
    pub(super) tenant_slug: String,
    pub(super) user: Uuid,
    /// The caller's master flags as compact JSON, `None` when there are none.
    pub(super) flags: Option<String>,
    pub(super) membership_status: Option<String>,
}

impl Caller {
    pub(super) fn of(ctx: &InternalContext) -> Self {
        Self {
            request_id: ctx.request_id.clone(),
            tenant: ctx.tenant_id,
            tenant_slug: ctx.tenant_slug.clone(),
            user: ctx.user_id,
            flags: ctx.master_flags.to_header_value(),
            membership_status: ctx.master_flags.membership_status().map(str::to_string),
        }
    }

    /// The identity and signature headers. Access always gets
    /// `X-Master-Flags` (`{}` when there are none, as the original sent);
    /// Portal only when there are flags.
    pub(super) fn headers(
        &self,
        always_flags: bool,
        timestamp: i64,
        signature: &str,
    ) -> Result<HeaderMap, Failure> {
        let mut headers = HeaderMap::with_capacity(9);
        let mut put = |name: &'static str, value: &str| -> Result<(), Failure> {
            let value = HeaderValue::from_bytes(value.as_bytes())
                .map_err(|_| Failure::new(None, format!("{name} cannot be sent as a header")))?;
            headers.insert(HeaderName::from_static(name), value);
            Ok(())
        };
        put("x-request-id", &self.request_id)?;
        put("x-tenant-id", &self.tenant.to_string())?;
        put("x-tenant-slug", &self.tenant_slug)?;
        put("x-user-id", &self.user.to_string())?;
        put("x-forwarded-proto", "https")?;
        match (&self.flags, always_flags) {
            (Some(flags), _) => put("x-master-flags", flags)?,
            (None, true) => put("x-master-flags", "{}")?,
            (None, false) => {}
        }
        put("x-updspace-timestamp", &timestamp.to_string())?;
        put("x-updspace-signature", signature)?;
        Ok(headers)
    }
}

/// The body Access expects (`CheckIn`), keys in the original's order.
#[derive(Serialize)]
struct CheckBody<'a> {
    tenant_id: String,
    user_id: String,
    action: &'static str,
    scope: CheckScope<'a>,
    master_flags: CheckFlags<'a>,
    /// Asked for the caller's roles (`effective_roles`); left out otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    return_effective_permissions: bool,
}

#[derive(Serialize)]
struct CheckScope<'a> {
    #[serde(rename = "type")]
    scope_type: &'static str,
    id: &'a str,
}

/// Our reading of the flags. Only callers that are neither suspended, banned
/// nor system admins reach Access, so the three booleans are `false`; they
/// are sent because Access uses the body's flags instead of the header's.
#[derive(Serialize)]
struct CheckFlags<'a> {
    suspended: bool,
    banned: bool,
    system_admin: bool,
    membership_status: Option<&'a str>,
}

/// The body of an Access check; `effective` asks for the caller's roles too.
fn check_request<'a>(
    caller: &'a Caller,
    permission: Permission,
    scope: &'a Scope,
    effective: bool,
) -> CheckBody<'a> {
    CheckBody {
        tenant_id: caller.tenant.to_string(),
        user_id: caller.user.to_string(),
        action: permission.access_action(),
        scope: CheckScope {
            scope_type: scope.scope_type().as_str(),
            id: scope.scope_id().as_str(),
        },
        master_flags: CheckFlags {
            suspended: false,
            banned: false,
            system_admin: false,
            membership_status: caller.membership_status.as_deref(),
        },
        return_effective_permissions: effective,
    }
}

/// The compact JSON body of an Access check.
pub(super) fn check_body(caller: &Caller, permission: Permission, scope: &Scope) -> Vec<u8> {
    serde_json::to_vec(&check_request(caller, permission, scope, false)).unwrap_or_default()
}

/// The body of the check that reads the caller's roles at `scope`.
pub(super) fn roles_check_body(caller: &Caller, scope: &Scope) -> Value {
    serde_json::to_value(check_request(caller, Permission::EventRead, scope, true))
        .unwrap_or_default()
}

/// A scope id that cannot name a Portal resource: Portal routes on the
/// decoded path, where a `/` would split the id, and `.`/`..` are dot
/// segments any URL layer may resolve away. Portal can never say "member"
/// for such an id, so it is "not a member" without a call.
pub(super) fn portal_addressable(id: &str) -> bool {
    !(id == "." || id == ".." || id.contains(['/', '\\']))
}

pub(super) use crate::auth::hmac::endpoint;

/// Reads at most [`MAX_ANSWER_BYTES`] of a response body.
pub(super) async fn read_body(response: reqwest::Response) -> Result<Vec<u8>, Failure> {
    read_body_up_to(response, MAX_ANSWER_BYTES).await
}

/// Reads at most `limit` bytes of a response body.
pub(super) async fn read_body_up_to(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, Failure> {
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Failure::new(Some(status), format!("reading the answer: {e}")))?
    {
        if body.len() + chunk.len() > limit {
            return Err(Failure::new(
                Some(status),
                format!("the answer is larger than {} KiB", limit / 1024),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An excerpt of an error answer for the logs.
pub(super) fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

impl Inner {
    /// Sends a request, once more after a connection-level failure that
    /// left time (a pooled connection closed by the server under us).
    pub(super) async fn send(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let started = Instant::now();
        match build().send().await {
            Err(e)
                if !e.is_timeout()
                    && (e.is_connect() || e.is_request())
                    && started.elapsed() < self.timeout / 2 =>
            {
                bump(&self.stats.retries);
                build().send().await
            }
            other => other,
        }
    }

    pub(super) fn record(
        &self,
        authority: &str,
        answered: bool,
        calls: &AtomicU64,
        total: &AtomicU64,
        max: &AtomicU64,
        took: Duration,
    ) {
        if let Some(m) = self.metrics.get() {
            m.authz_calls
                .with_label_values(&[authority, if answered { "ok" } else { "error" }])
                .inc();
            m.authz_duration
                .with_label_values(&[authority])
                .observe(took.as_secs_f64());
        }
        bump(calls);
        total.fetch_add(micros(took), Ordering::Relaxed);
        max.fetch_max(micros(took), Ordering::Relaxed);
    }

    /// One Access check: `Ok(allowed)` only for a 200 with a JSON object
    /// whose `allowed` is a boolean; anything else is a failure.
    pub(super) async fn check_access(
        &self,
        caller: &Caller,
        permission: Permission,
        scope: &Scope,
    ) -> Result<bool, Failure> {
        let body = check_body(caller, permission, scope);
        let ts = crate::auth::now_unix();
        let signature = sign_v1(
            &self.secret,
            "POST",
            &self.access_path,
            &body,
            &caller.request_id,
            ts,
        );
        let mut headers = caller.headers(true, ts, &signature)?;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let started = Instant::now();
        let sent = self
            .send(|| {
                self.http
                    .post(self.access_url.clone())
                    .headers(headers.clone())
                    .body(body.clone())
            })
            .await;
        let outcome = match sent {
            Err(e) => Err(Failure::new(
                None,
                if e.is_timeout() {
                    format!("timed out: {e}")
                } else {
                    format!("request failed: {e}")
                },
            )),
            Ok(response) => {
                let status = response.status();
                let answer = read_body(response).await;
                match answer {
                    Err(f) => Err(f),
                    Ok(bytes) if status != StatusCode::OK => Err(Failure::new(
                        Some(status.as_u16()),
                        format!("Access answered {status}: {}", excerpt(&bytes)),
                    )),
                    Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                        Ok(Value::Object(map)) => match map.get("allowed") {
                            Some(Value::Bool(allowed)) => Ok(*allowed),
                            _ => Err(Failure::new(
                                Some(200),
                                "the answer has no boolean `allowed`",
                            )),
                        },
                        _ => Err(Failure::new(Some(200), "the answer is not a JSON object")),
                    },
                }
            }
        };
        self.record(
            "access",
            outcome.is_ok(),
            &self.stats.access_calls,
            &self.stats.access_latency_micros,
            &self.stats.access_latency_max_micros,
            started.elapsed(),
        );
        outcome
    }

    /// One Portal membership look-up: 200 → member (unless the body says
    /// `"member": false`), 404 → not a member, anything else → failure.
    pub(super) async fn check_membership(
        &self,
        caller: &Caller,
        scope: &Scope,
    ) -> Result<bool, Failure> {
        let collection = match scope.scope_type() {
            ScopeType::Community => "communities",
            ScopeType::Team => "teams",
            ScopeType::Tenant => return Ok(false),
        };
        let user = caller.user.to_string();
        let (url, path) = endpoint(
            &self.portal_base,
            &[collection, scope.scope_id().as_str(), "members", &user],
        )
        .ok_or_else(|| Failure::new(None, "the Portal URL cannot be built"))?;
        let ts = crate::auth::now_unix();
        let signature = sign_v1(&self.secret, "GET", &path, b"", &caller.request_id, ts);
        let headers = caller.headers(false, ts, &signature)?;
        let started = Instant::now();
        let sent = self
            .send(|| self.http.get(url.clone()).headers(headers.clone()))
            .await;
        let outcome = match sent {
            Err(e) => Err(Failure::new(
                None,
                if e.is_timeout() {
                    format!("Portal request timed out: {e}")
                } else {
                    format!("Portal request failed: {e}")
                },
            )),
            Ok(response) => {
                let status = response.status();
                match read_body(response).await {
                    Err(f) => Err(f),
                    Ok(_) if status == StatusCode::NOT_FOUND => Ok(false),
                    Ok(bytes) if status == StatusCode::OK => {
                        match serde_json::from_slice::<Value>(&bytes) {
                            Ok(Value::Object(map)) => {
                                Ok(map.get("member") != Some(&Value::Bool(false)))
                            }
                            _ => Err(Failure::new(Some(200), "the answer is not a JSON object")),
                        }
                    }
                    Ok(bytes) => Err(Failure::new(
                        Some(status.as_u16()),
                        format!("Unexpected portal status {status}: {}", excerpt(&bytes)),
                    )),
                }
            }
        };
        self.record(
            "portal",
            outcome.is_ok(),
            &self.stats.portal_calls,
            &self.stats.portal_latency_micros,
            &self.stats.portal_latency_max_micros,
            started.elapsed(),
        );
        outcome
    }
}
