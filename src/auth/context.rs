//! Turning the context headers of a request (HTTP or NATS) into an authenticated
//! [`InternalContext`], with the checks in the original service's order so that every
//! caller sees the same error for the same mistake on either transport.

use std::collections::HashMap;
use std::fmt;

use uuid::Uuid;

use crate::auth::flags::MasterFlags;
use crate::auth::hmac::{
    NATS_METHOD, SignatureVersion, V2Input, sign_v1, sign_v2, verify_v1, verify_v2,
};
use crate::auth::replay::ReplayGuard;
use crate::domain::ErrorCode;

/// Header names as sent on the wire. Look-ups are case-insensitive.
pub mod headers {
    pub const REQUEST_ID: &str = "X-Request-Id";
    pub const TENANT_ID: &str = "X-Tenant-Id";
    pub const TENANT_SLUG: &str = "X-Tenant-Slug";
    pub const USER_ID: &str = "X-User-Id";
    pub const MASTER_FLAGS: &str = "X-Master-Flags";
    pub const TIMESTAMP: &str = "X-Updspace-Timestamp";
    pub const SIGNATURE: &str = "X-Updspace-Signature";
    pub const SIGNATURE_VERSION: &str = "X-Updspace-Signature-Version";
}

/// Read access to request headers, whatever the transport.
///
/// Names must be matched case-insensitively. When a header occurs more than once,
/// return the first value: only the returned value is verified, and the application
/// reads identity from the resulting [`InternalContext`], never from the headers again.
pub trait HeaderSource {
    fn header(&self, name: &str) -> Option<&str>;
}

impl<T: HeaderSource + ?Sized> HeaderSource for &T {
    fn header(&self, name: &str) -> Option<&str> {
        (**self).header(name)
    }
}

impl HeaderSource for HashMap<String, String> {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str).or_else(|| {
            self.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        })
    }
}

/// The shape [`sign_headers_v1`] and [`sign_headers_v2`] return.
impl HeaderSource for Vec<(String, String)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request was refused with 401 `UNAUTHORIZED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnauthorizedReason {
    MissingSignature,
    InvalidTimestamp,
    Expired,
    UnsupportedVersion,
    NatsRequiresV2,
    V1NotAccepted,
    InvalidSignature,
    Replayed,
}

impl UnauthorizedReason {
    pub fn message(self) -> &'static str {
        match self {
            Self::MissingSignature => "Missing internal signature",
            Self::InvalidTimestamp => "Invalid internal timestamp",
            Self::Expired => "Internal signature expired",
            Self::UnsupportedVersion => "Unsupported signature version",
            Self::NatsRequiresV2 => "NATS requests must be signed with signature version 2",
            Self::V1NotAccepted => "Signature version 1 is not accepted; sign with version 2",
            Self::InvalidSignature => "Invalid internal signature",
            Self::Replayed => "Replayed request",
        }
    }
}

impl fmt::Display for UnauthorizedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// A refused request. `code`, `http_status` and `message` fill the error envelope
/// (HTTP) or the `Nats-Service-Error*` headers (NATS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("X-Request-Id is required")]
    MissingRequestId,
    #[error("Tenant headers required")]
    MissingTenantContext,
    #[error("X-Tenant-Id must be a UUID")]
    InvalidTenantId,
    #[error("{0}")]
    Unauthorized(UnauthorizedReason),
    #[error("Internal HMAC secret is not configured")]
    ServerMisconfigured,
    #[error("X-User-Id is required")]
    Unauthenticated,
    #[error("X-User-Id must be a UUID")]
    InvalidUserId,
    #[error("X-User-Id must not be the nil UUID")]
    NilUserId,
}

impl AuthError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::MissingRequestId => ErrorCode::MissingRequestId,
            Self::MissingTenantContext => ErrorCode::MissingTenantContext,
            Self::InvalidTenantId => ErrorCode::InvalidTenantId,
            Self::Unauthorized(_) => ErrorCode::Unauthorized,
            Self::ServerMisconfigured => ErrorCode::ServerError,
            Self::Unauthenticated => ErrorCode::Unauthenticated,
            Self::InvalidUserId | Self::NilUserId => ErrorCode::InvalidUserId,
        }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            Self::MissingRequestId
            | Self::MissingTenantContext
            | Self::InvalidTenantId
            | Self::InvalidUserId
            | Self::NilUserId => 400,
            Self::Unauthorized(_) | Self::Unauthenticated => 401,
            Self::ServerMisconfigured => 500,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            Self::MissingRequestId => "X-Request-Id is required",
            Self::MissingTenantContext => "Tenant headers required",
            Self::InvalidTenantId => "X-Tenant-Id must be a UUID",
            Self::Unauthorized(reason) => reason.message(),
            Self::ServerMisconfigured => "Internal HMAC secret is not configured",
            Self::Unauthenticated => "X-User-Id is required",
            Self::InvalidUserId => "X-User-Id must be a UUID",
            Self::NilUserId => {
                "X-User-Id must not be the nil UUID: it stands for erased users, not a caller"
            }
        }
    }
}

impl From<UnauthorizedReason> for AuthError {
    fn from(reason: UnauthorizedReason) -> Self {
        Self::Unauthorized(reason)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Http,
    Nats,
}

/// The parts of a request a signature covers, besides the headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestParts<'a> {
    /// HTTP method; ignored for NATS (signed as `NATS`).
    pub method: &'a str,
    /// HTTP: the percent-decoded path without the query string, exactly as received
    /// (trailing slash included). NATS: the subject.
    pub path: &'a str,
    /// HTTP: the raw query string without `?`; ignored for NATS (signed as empty).
    pub query: &'a str,
    pub body: &'a [u8],
    pub transport: Transport,
}

impl<'a> RequestParts<'a> {
    pub fn http(method: &'a str, path: &'a str, query: &'a str, body: &'a [u8]) -> Self {
        Self {
            method,
            path,
            query,
            body,
            transport: Transport::Http,
        }
    }

    pub fn nats(subject: &'a str, body: &'a [u8]) -> Self {
        Self {
            method: NATS_METHOD,
            path: subject,
            query: "",
            body,
            transport: Transport::Nats,
        }
    }

    fn signed_method(&self) -> &'a str {
        match self.transport {
            Transport::Http => self.method,
            Transport::Nats => NATS_METHOD,
        }
    }

    fn signed_query(&self) -> &'a str {
        match self.transport {
            Transport::Http => self.query,
            Transport::Nats => "",
        }
    }
}

/// Who is calling, established by a verified signature. Ids are canonical: parsing
/// accepts any spelling `uuid` accepts (upper case, braces, no hyphens, `urn:uuid:`),
/// and `Display` writes lower-case hyphenated.
#[derive(Debug, Clone, PartialEq)]
pub struct InternalContext {
    /// As sent; also the idempotency key of a create.
    pub request_id: String,
    pub tenant_id: Uuid,
    pub tenant_slug: String,
    pub user_id: Uuid,
    pub master_flags: MasterFlags,
    pub signature_version: SignatureVersion,
    /// As sent (64 lower-case hex); with `request_id` and `timestamp`, the replay key.
    pub signature: String,
    /// Unix seconds, as signed.
    pub timestamp: i64,
}

impl InternalContext {
    /// Headers for a call made on behalf of this caller, with canonical ids and the
    /// master flags re-encoded as compact JSON.
    pub fn signed_headers(
        &self,
        secret: &str,
        version: SignatureVersion,
        parts: &RequestParts<'_>,
        ts: i64,
    ) -> Vec<(String, String)> {
        let tenant_id = self.tenant_id.to_string();
        let user_id = self.user_id.to_string();
        let flags = self.master_flags.to_header_value();
        let identity = ContextHeaders {
            request_id: &self.request_id,
            tenant_id: &tenant_id,
            tenant_slug: &self.tenant_slug,
            user_id: Some(&user_id),
            master_flags: flags.as_deref(),
        };
        match version {
            SignatureVersion::V1 => sign_headers_v1(secret, parts, &identity, ts),
            SignatureVersion::V2 => sign_headers_v2(secret, parts, &identity, ts),
        }
    }
}

/// Checks signatures and builds [`InternalContext`]s.
#[derive(Clone)]
pub struct Verifier {
    /// Accepted secrets; the first non-empty one signs outgoing calls. Empty entries
    /// are ignored, and a list with no non-empty entry means "not configured".
    pub secrets: Vec<String>,
    /// Accepted clock skew, inclusive, in seconds.
    pub window_secs: i64,
    /// Lowest version accepted over HTTP (NATS always requires v2).
    pub min_version: SignatureVersion,
}

// Hand-written so that secrets never reach a log line through `{:?}`.
impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.secrets.len()),
            )
            .field("window_secs", &self.window_secs)
            .field("min_version", &self.min_version)
            .finish()
    }
}

impl Verifier {
    pub const DEFAULT_WINDOW_SECS: i64 = 300;

    /// The original's behaviour: a ±300 s window and v1 accepted over HTTP.
    pub fn new(secrets: Vec<String>) -> Self {
        Self {
            secrets,
            window_secs: Self::DEFAULT_WINDOW_SECS,
            min_version: SignatureVersion::V1,
        }
    }

    pub fn with_min_version(mut self, min_version: SignatureVersion) -> Self {
        self.min_version = min_version;
        self
    }

    pub fn with_window_secs(mut self, window_secs: i64) -> Self {
        self.window_secs = window_secs;
        self
    }

    /// The secret outgoing calls are signed with.
    pub fn signing_secret(&self) -> Option<&str> {
        self.secrets
            .iter()
            .map(String::as_str)
            .find(|s| !s.is_empty())
    }

    /// Authenticates a request. The order of the checks is part of the contract
    /// (`docs/hmac-signatures.md`): a request with several faults gets the error of
    /// the first failing check.
    pub fn authenticate(
        &self,
        headers: &impl HeaderSource,
        parts: &RequestParts<'_>,
        now_unix: i64,
    ) -> Result<InternalContext, AuthError> {
        self.authenticate_inner(headers, parts, now_unix, None)
    }

    /// [`authenticate`](Self::authenticate) plus the replay check, placed right after
    /// the signature check and before the user checks, as the contract orders them.
    /// What transports should call.
    pub fn authenticate_guarded(
        &self,
        headers: &impl HeaderSource,
        parts: &RequestParts<'_>,
        now_unix: i64,
        guard: &ReplayGuard,
    ) -> Result<InternalContext, AuthError> {
        self.authenticate_inner(headers, parts, now_unix, Some(guard))
    }

    fn authenticate_inner(
        &self,
        headers: &impl HeaderSource,
        parts: &RequestParts<'_>,
        now_unix: i64,
        guard: Option<&ReplayGuard>,
    ) -> Result<InternalContext, AuthError> {
        let request_id =
            present(headers, headers::REQUEST_ID).ok_or(AuthError::MissingRequestId)?;

        let tenant_id_raw = present(headers, headers::TENANT_ID);
        let tenant_slug = present(headers, headers::TENANT_SLUG);
        let (Some(tenant_id_raw), Some(tenant_slug)) = (tenant_id_raw, tenant_slug) else {
            return Err(AuthError::MissingTenantContext);
        };
        // Checked before the signature (unlike the user id) because the original
        // answered a bad tenant with an HTML 500 from the database layer, at any point;
        // a 400 here is the first place it can be refused cleanly.
        let tenant_id =
            Uuid::parse_str(tenant_id_raw.trim()).map_err(|_| AuthError::InvalidTenantId)?;

        let (Some(ts_raw), Some(signature)) = (
            present(headers, headers::TIMESTAMP),
            present(headers, headers::SIGNATURE),
        ) else {
            return Err(UnauthorizedReason::MissingSignature.into());
        };
        let signature = signature.trim();
        let timestamp = parse_timestamp(ts_raw)?;
        let window = u64::try_from(self.window_secs).unwrap_or(0);
        if now_unix.abs_diff(timestamp) > window {
            return Err(UnauthorizedReason::Expired.into());
        }

        if self.signing_secret().is_none() {
            return Err(AuthError::ServerMisconfigured);
        }

        let version = SignatureVersion::from_header(headers.header(headers::SIGNATURE_VERSION))
            .ok_or(UnauthorizedReason::UnsupportedVersion)?;
        if version == SignatureVersion::V1 {
            if parts.transport == Transport::Nats {
                return Err(UnauthorizedReason::NatsRequiresV2.into());
            }
            if self.min_version > SignatureVersion::V1 {
                return Err(UnauthorizedReason::V1NotAccepted.into());
            }
        }

        let user_id_raw = headers.header(headers::USER_ID);
        let master_flags_raw = headers.header(headers::MASTER_FLAGS);
        let valid = match version {
            SignatureVersion::V1 => verify_v1(
                &self.secrets,
                parts.signed_method(),
                parts.path,
                parts.body,
                request_id,
                timestamp,
                signature,
            ),
            SignatureVersion::V2 => verify_v2(
                &self.secrets,
                &V2Input {
                    method: parts.signed_method(),
                    path: parts.path,
                    query: parts.signed_query(),
                    body: parts.body,
                    request_id,
                    timestamp,
                    tenant_id: tenant_id_raw,
                    tenant_slug,
                    user_id: user_id_raw.unwrap_or(""),
                    master_flags: master_flags_raw.unwrap_or(""),
                },
                signature,
            ),
        };
        if !valid {
            return Err(UnauthorizedReason::InvalidSignature.into());
        }
        if let Some(guard) = guard {
            guard.check_and_remember_triple(request_id, timestamp, signature, now_unix)?;
        }

        let user_id_raw = user_id_raw
            .filter(|s| !s.trim().is_empty())
            .ok_or(AuthError::Unauthenticated)?;
        let user_id = Uuid::parse_str(user_id_raw.trim()).map_err(|_| AuthError::InvalidUserId)?;
        // The nil id stands for erased users (DSAR): it is nobody, and
        // would otherwise match every erased creator.
        if user_id.is_nil() {
            return Err(AuthError::NilUserId);
        }

        Ok(InternalContext {
            request_id: request_id.to_owned(),
            tenant_id,
            tenant_slug: tenant_slug.to_owned(),
            user_id,
            master_flags: MasterFlags::parse(master_flags_raw),
            signature_version: version,
            signature: signature.to_owned(),
            timestamp,
        })
    }
}

/// The header's raw value, unless it is absent or blank.
fn present<'h>(headers: &'h impl HeaderSource, name: &str) -> Option<&'h str> {
    headers.header(name).filter(|v| !v.trim().is_empty())
}

/// Parses a timestamp the way Python's `int()` does for ASCII input (surrounding
/// whitespace, a sign, leading zeros and `_` between digits), because the original
/// accepted exactly that and signs `str(int(ts))`, not the header text.
fn parse_timestamp(raw: &str) -> Result<i64, UnauthorizedReason> {
    let s = raw.trim();
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let well_formed = !digits.is_empty()
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__")
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    if !well_formed {
        return Err(UnauthorizedReason::InvalidTimestamp);
    }
    let mut value: i64 = 0;
    for d in digits.bytes().filter(u8::is_ascii_digit) {
        // Python has no overflow: such a number is a valid integer that is simply
        // far outside the window.
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(d - b'0')))
            .ok_or(UnauthorizedReason::Expired)?;
    }
    Ok(if negative { -value } else { value })
}

/// Identity headers to sign; ids are sent (and signed) exactly as given here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextHeaders<'a> {
    pub request_id: &'a str,
    pub tenant_id: &'a str,
    pub tenant_slug: &'a str,
    /// `None` leaves `X-User-Id` out.
    pub user_id: Option<&'a str>,
    /// Raw JSON object; `None` or empty leaves `X-Master-Flags` out.
    pub master_flags: Option<&'a str>,
}

/// The full header set of a v1-signed request.
pub fn sign_headers_v1(
    secret: &str,
    parts: &RequestParts<'_>,
    identity: &ContextHeaders<'_>,
    ts: i64,
) -> Vec<(String, String)> {
    let signature = sign_v1(
        secret,
        parts.signed_method(),
        parts.path,
        parts.body,
        identity.request_id,
        ts,
    );
    let mut out = identity_headers(identity);
    out.push((headers::TIMESTAMP.to_owned(), ts.to_string()));
    out.push((headers::SIGNATURE.to_owned(), signature));
    out
}

/// The full header set of a v2-signed request.
pub fn sign_headers_v2(
    secret: &str,
    parts: &RequestParts<'_>,
    identity: &ContextHeaders<'_>,
    ts: i64,
) -> Vec<(String, String)> {
    let signature = sign_v2(
        secret,
        &V2Input {
            method: parts.signed_method(),
            path: parts.path,
            query: parts.signed_query(),
            body: parts.body,
            request_id: identity.request_id,
            timestamp: ts,
            tenant_id: identity.tenant_id,
            tenant_slug: identity.tenant_slug,
            user_id: identity.user_id.unwrap_or(""),
            master_flags: identity.master_flags.unwrap_or(""),
        },
    );
    let mut out = identity_headers(identity);
    out.push((headers::TIMESTAMP.to_owned(), ts.to_string()));
    out.push((headers::SIGNATURE.to_owned(), signature));
    out.push((
        headers::SIGNATURE_VERSION.to_owned(),
        SignatureVersion::V2.as_str().to_owned(),
    ));
    out
}

fn identity_headers(identity: &ContextHeaders<'_>) -> Vec<(String, String)> {
    let mut out = vec![
        (
            headers::REQUEST_ID.to_owned(),
            identity.request_id.to_owned(),
        ),
        (headers::TENANT_ID.to_owned(), identity.tenant_id.to_owned()),
        (
            headers::TENANT_SLUG.to_owned(),
            identity.tenant_slug.to_owned(),
        ),
    ];
    if let Some(user_id) = identity.user_id {
        out.push((headers::USER_ID.to_owned(), user_id.to_owned()));
    }
    if let Some(flags) = identity.master_flags.filter(|f| !f.is_empty()) {
        out.push((headers::MASTER_FLAGS.to_owned(), flags.to_owned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "test-secret";
    const NOW: i64 = 1_700_000_000;
    const TENANT: &str = "6f1c2b9e-8d1a-4c3e-9b7a-2f4d5e6a7b8c";
    const USER: &str = "0b8e4c2a-3d5f-4a6b-8c7d-9e0f1a2b3c4d";
    const PATH: &str = "/api/v1/events/";
    const QUERY: &str = "scope_type=TENANT&limit=50";

    fn verifier() -> Verifier {
        Verifier::new(vec![SECRET.to_owned()])
    }

    fn identity() -> ContextHeaders<'static> {
        ContextHeaders {
            request_id: "req-1",
            tenant_id: TENANT,
            tenant_slug: "acme",
            user_id: Some(USER),
            master_flags: None,
        }
    }

    fn http_get() -> RequestParts<'static> {
        RequestParts::http("GET", PATH, QUERY, b"")
    }

    fn nats() -> RequestParts<'static> {
        RequestParts::nats("events.v1.event.create", br#"{"title":"x"}"#)
    }

    fn map(headers: Vec<(String, String)>) -> HashMap<String, String> {
        headers.into_iter().collect()
    }

    fn v1(parts: &RequestParts<'_>) -> HashMap<String, String> {
        map(sign_headers_v1(SECRET, parts, &identity(), NOW))
    }

    fn v2(parts: &RequestParts<'_>) -> HashMap<String, String> {
        map(sign_headers_v2(SECRET, parts, &identity(), NOW))
    }

    fn set(mut h: HashMap<String, String>, name: &str, value: &str) -> HashMap<String, String> {
        h.insert(name.to_owned(), value.to_owned());
        h
    }

    fn unset(mut h: HashMap<String, String>, name: &str) -> HashMap<String, String> {
        h.remove(name);
        h
    }

    fn auth(
        h: &HashMap<String, String>,
        parts: &RequestParts<'_>,
    ) -> Result<InternalContext, AuthError> {
        verifier().authenticate(h, parts, NOW)
    }

    fn unauthorized(reason: UnauthorizedReason) -> Result<InternalContext, AuthError> {
        Err(AuthError::Unauthorized(reason))
    }

    #[test]
    fn valid_v1_and_v2() {
        let ctx = auth(&v1(&http_get()), &http_get()).unwrap();
        assert_eq!(ctx.signature_version, SignatureVersion::V1);
        assert_eq!(ctx.request_id, "req-1");
        assert_eq!(ctx.tenant_id.to_string(), TENANT);
        assert_eq!(ctx.tenant_slug, "acme");
        assert_eq!(ctx.user_id.to_string(), USER);
        assert_eq!(ctx.timestamp, NOW);
        assert_eq!(ctx.signature.len(), 64);
        assert!(ctx.master_flags.is_empty());

        let ctx = auth(&v2(&http_get()), &http_get()).unwrap();
        assert_eq!(ctx.signature_version, SignatureVersion::V2);
        let ctx = auth(&v2(&nats()), &nats()).unwrap();
        assert_eq!(ctx.signature_version, SignatureVersion::V2);
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let h: HashMap<String, String> = v2(&http_get())
            .into_iter()
            .map(|(k, v)| (k.to_lowercase(), v))
            .collect();
        assert!(auth(&h, &http_get()).is_ok());
        let list = sign_headers_v2(SECRET, &http_get(), &identity(), NOW);
        assert!(verifier().authenticate(&list, &http_get(), NOW).is_ok());
    }

    #[test]
    fn missing_request_id_comes_first() {
        let h = unset(v1(&http_get()), headers::REQUEST_ID);
        let h = unset(h, headers::TENANT_ID);
        let h = set(h, headers::SIGNATURE, "bad");
        assert_eq!(auth(&h, &http_get()), Err(AuthError::MissingRequestId));
        let h = set(v1(&http_get()), headers::REQUEST_ID, "  ");
        assert_eq!(auth(&h, &http_get()), Err(AuthError::MissingRequestId));
    }

    #[test]
    fn missing_tenant_comes_before_the_signature() {
        for name in [headers::TENANT_ID, headers::TENANT_SLUG] {
            let h = set(unset(v1(&http_get()), name), headers::SIGNATURE, "bad");
            assert_eq!(auth(&h, &http_get()), Err(AuthError::MissingTenantContext));
            let h = set(v1(&http_get()), name, "");
            assert_eq!(auth(&h, &http_get()), Err(AuthError::MissingTenantContext));
        }
    }

    #[test]
    fn invalid_tenant_comes_before_the_signature() {
        let h = unset(v1(&http_get()), headers::SIGNATURE);
        let h = set(h, headers::TENANT_ID, "acme");
        assert_eq!(auth(&h, &http_get()), Err(AuthError::InvalidTenantId));
    }

    #[test]
    fn missing_signature_or_timestamp() {
        for name in [headers::SIGNATURE, headers::TIMESTAMP] {
            let h = unset(v1(&http_get()), name);
            assert_eq!(
                auth(&h, &http_get()),
                unauthorized(UnauthorizedReason::MissingSignature)
            );
            let h = set(v1(&http_get()), name, " ");
            assert_eq!(
                auth(&h, &http_get()),
                unauthorized(UnauthorizedReason::MissingSignature)
            );
        }
    }

    #[test]
    fn timestamp_parsing_follows_python_int() {
        for raw in [
            "abc", "1.5", "1e9", "", "+", "-", "0x10", "1__0", "_1", "1_", "1 0",
        ] {
            assert_eq!(
                parse_timestamp(raw),
                Err(UnauthorizedReason::InvalidTimestamp),
                "{raw:?}"
            );
        }
        assert_eq!(parse_timestamp(" 1700000000 "), Ok(NOW));
        assert_eq!(parse_timestamp("+1700000000"), Ok(NOW));
        assert_eq!(parse_timestamp("0001700000000"), Ok(NOW));
        assert_eq!(parse_timestamp("1_700_000_000"), Ok(NOW));
        assert_eq!(parse_timestamp("-5"), Ok(-5));
        assert_eq!(
            parse_timestamp("99999999999999999999999"),
            Err(UnauthorizedReason::Expired)
        );
    }

    #[test]
    fn non_canonical_timestamp_verifies_against_the_plain_decimal() {
        let h = set(v1(&http_get()), headers::TIMESTAMP, " +0001700000000");
        assert_eq!(auth(&h, &http_get()).unwrap().timestamp, NOW);
        let h = set(v2(&http_get()), headers::TIMESTAMP, "1_700_000_000");
        assert!(auth(&h, &http_get()).is_ok());
    }

    #[test]
    fn invalid_timestamp_comes_before_a_bad_signature() {
        let h = set(v1(&http_get()), headers::TIMESTAMP, "soon");
        let h = set(h, headers::SIGNATURE, "bad");
        assert_eq!(
            auth(&h, &http_get()),
            unauthorized(UnauthorizedReason::InvalidTimestamp)
        );
    }

    #[test]
    fn window_edges() {
        let h = v2(&http_get());
        let v = verifier();
        for now in [NOW - 300, NOW, NOW + 300] {
            assert!(v.authenticate(&h, &http_get(), now).is_ok(), "{now}");
        }
        for now in [NOW - 301, NOW + 301, i64::MIN, i64::MAX] {
            assert_eq!(
                v.authenticate(&h, &http_get(), now),
                unauthorized(UnauthorizedReason::Expired),
                "{now}"
            );
        }
    }

    #[test]
    fn expired_comes_before_missing_secret() {
        let v = Verifier::new(vec![]);
        assert_eq!(
            v.authenticate(&v1(&http_get()), &http_get(), NOW + 301),
            unauthorized(UnauthorizedReason::Expired)
        );
        assert_eq!(
            v.authenticate(&v1(&http_get()), &http_get(), NOW),
            Err(AuthError::ServerMisconfigured)
        );
        let v = Verifier::new(vec![String::new(), String::new()]);
        assert_eq!(
            v.authenticate(&v1(&http_get()), &http_get(), NOW),
            Err(AuthError::ServerMisconfigured)
        );
    }

    #[test]
    fn version_header() {
        for bad in ["1", "3", "v2", "2.0"] {
            let h = set(v2(&http_get()), headers::SIGNATURE_VERSION, bad);
            assert_eq!(
                auth(&h, &http_get()),
                unauthorized(UnauthorizedReason::UnsupportedVersion),
                "{bad}"
            );
        }
        // Without the version header a v2 signature is checked as v1, and fails.
        let h = unset(v2(&http_get()), headers::SIGNATURE_VERSION);
        assert_eq!(
            auth(&h, &http_get()),
            unauthorized(UnauthorizedReason::InvalidSignature)
        );
        // A v1 signature claimed as v2 fails too.
        let h = set(v1(&http_get()), headers::SIGNATURE_VERSION, "2");
        assert_eq!(
            auth(&h, &http_get()),
            unauthorized(UnauthorizedReason::InvalidSignature)
        );
    }

    #[test]
    fn nats_requires_v2() {
        let h = v1(&nats());
        assert_eq!(
            auth(&h, &nats()),
            unauthorized(UnauthorizedReason::NatsRequiresV2)
        );
        let h = set(h, headers::SIGNATURE, "bad");
        assert_eq!(
            auth(&h, &nats()),
            unauthorized(UnauthorizedReason::NatsRequiresV2)
        );
    }

    #[test]
    fn min_version_two_refuses_http_v1() {
        let v = verifier().with_min_version(SignatureVersion::V2);
        assert_eq!(
            v.authenticate(&v1(&http_get()), &http_get(), NOW),
            unauthorized(UnauthorizedReason::V1NotAccepted)
        );
        assert!(v.authenticate(&v2(&http_get()), &http_get(), NOW).is_ok());
    }

    #[test]
    fn wrong_signature() {
        let h = set(v1(&http_get()), headers::SIGNATURE, &"0".repeat(64));
        assert_eq!(
            auth(&h, &http_get()),
            unauthorized(UnauthorizedReason::InvalidSignature)
        );
        let upper = v1(&http_get())[headers::SIGNATURE].to_uppercase();
        let h = set(v1(&http_get()), headers::SIGNATURE, &upper);
        assert_eq!(
            auth(&h, &http_get()),
            unauthorized(UnauthorizedReason::InvalidSignature)
        );
        let other = Verifier::new(vec!["other".to_owned()]);
        assert_eq!(
            other.authenticate(&v1(&http_get()), &http_get(), NOW),
            unauthorized(UnauthorizedReason::InvalidSignature)
        );
    }

    #[test]
    fn signature_covers_method_path_body_request_id_and_time() {
        let post = RequestParts::http("POST", PATH, "", br#"{"title":"x"}"#);
        for version in [SignatureVersion::V1, SignatureVersion::V2] {
            let h = if version == SignatureVersion::V1 {
                v1(&post)
            } else {
                v2(&post)
            };
            assert!(auth(&h, &post).is_ok());
            let tampered = [
                RequestParts::http("PUT", PATH, "", post.body),
                RequestParts::http("POST", "/api/v1/events", "", post.body),
                RequestParts::http("POST", PATH, "", br#"{"title":"y"}"#),
            ];
            for parts in &tampered {
                assert_eq!(
                    auth(&h, parts),
                    unauthorized(UnauthorizedReason::InvalidSignature),
                    "{version} {parts:?}"
                );
            }
            let h2 = set(h.clone(), headers::REQUEST_ID, "req-other");
            assert_eq!(
                auth(&h2, &post),
                unauthorized(UnauthorizedReason::InvalidSignature)
            );
            let h2 = set(h, headers::TIMESTAMP, &(NOW + 1).to_string());
            assert_eq!(
                auth(&h2, &post),
                unauthorized(UnauthorizedReason::InvalidSignature)
            );
        }
    }

    /// v2 exists because v1 leaves identity and query unsigned.
    #[test]
    fn identity_and_query_are_bound_by_v2_only() {
        let other_uuid = "11111111-2222-4333-8444-555555555555";
        let changes: [(&str, &str); 4] = [
            (headers::USER_ID, other_uuid),
            (headers::TENANT_ID, other_uuid),
            (headers::TENANT_SLUG, "other"),
            (headers::MASTER_FLAGS, r#"{"system_admin":true}"#),
        ];
        for (name, value) in changes {
            let h = set(v1(&http_get()), name, value);
            assert!(auth(&h, &http_get()).is_ok(), "v1 {name}");
            let h = set(v2(&http_get()), name, value);
            assert_eq!(
                auth(&h, &http_get()),
                unauthorized(UnauthorizedReason::InvalidSignature),
                "v2 {name}"
            );
        }
        let other_query = RequestParts::http("GET", PATH, "scope_type=TENANT&limit=250", b"");
        assert!(auth(&v1(&http_get()), &other_query).is_ok());
        assert_eq!(
            auth(&v2(&http_get()), &other_query),
            unauthorized(UnauthorizedReason::InvalidSignature)
        );
        // Ids are signed as sent: an equivalent spelling of the same UUID is a change.
        let h = set(v2(&http_get()), headers::USER_ID, &USER.to_uppercase());
        assert_eq!(
            auth(&h, &http_get()),
            unauthorized(UnauthorizedReason::InvalidSignature)
        );
    }

    #[test]
    fn nats_ignores_method_and_query() {
        let h = v2(&nats());
        let mut parts = nats();
        parts.method = "POST";
        parts.query = "a=b";
        assert!(auth(&h, &parts).is_ok());
        let other_subject = RequestParts::nats("events.v1.event.update", nats().body);
        assert_eq!(
            auth(&h, &other_subject),
            unauthorized(UnauthorizedReason::InvalidSignature)
        );
    }

    #[test]
    fn rotation_accepts_previous_secrets() {
        let v = Verifier::new(["new-secret", "", "old-secret"].map(String::from).to_vec());
        assert_eq!(v.signing_secret(), Some("new-secret"));
        for secret in ["new-secret", "old-secret"] {
            let h = map(sign_headers_v2(secret, &http_get(), &identity(), NOW));
            assert!(v.authenticate(&h, &http_get(), NOW).is_ok(), "{secret}");
            let h = map(sign_headers_v1(secret, &http_get(), &identity(), NOW));
            assert!(v.authenticate(&h, &http_get(), NOW).is_ok(), "{secret}");
        }
        let h = map(sign_headers_v2("retired", &http_get(), &identity(), NOW));
        assert_eq!(
            v.authenticate(&h, &http_get(), NOW),
            unauthorized(UnauthorizedReason::InvalidSignature)
        );
    }

    #[test]
    fn guarded_refuses_replays_before_the_user_checks() {
        let guard = ReplayGuard::default();
        let v = verifier();
        let h = v2(&http_get());
        assert!(v.authenticate_guarded(&h, &http_get(), NOW, &guard).is_ok());
        assert_eq!(
            v.authenticate_guarded(&h, &http_get(), NOW + 10, &guard),
            unauthorized(UnauthorizedReason::Replayed)
        );
        // A fresh signature for the same request id is a retry, not a replay.
        let retry = map(sign_headers_v2(SECRET, &http_get(), &identity(), NOW + 1));
        assert!(
            v.authenticate_guarded(&retry, &http_get(), NOW + 10, &guard)
                .is_ok()
        );
        // A bad signature is reported as such and not remembered.
        let bad = set(v2(&http_get()), headers::SIGNATURE, &"0".repeat(64));
        assert_eq!(
            v.authenticate_guarded(&bad, &http_get(), NOW, &guard),
            unauthorized(UnauthorizedReason::InvalidSignature)
        );
        assert_eq!(guard.len(), 2);

        let no_user = ContextHeaders {
            user_id: None,
            request_id: "req-no-user",
            ..identity()
        };
        let h = map(sign_headers_v2(SECRET, &http_get(), &no_user, NOW));
        assert_eq!(
            v.authenticate_guarded(&h, &http_get(), NOW, &guard),
            Err(AuthError::Unauthenticated)
        );
        assert_eq!(
            v.authenticate_guarded(&h, &http_get(), NOW, &guard),
            unauthorized(UnauthorizedReason::Replayed)
        );
    }

    #[test]
    fn user_checks_come_after_the_signature() {
        let mut id = identity();
        id.user_id = None;
        let h = map(sign_headers_v2(SECRET, &http_get(), &id, NOW));
        assert!(!h.contains_key(headers::USER_ID));
        assert_eq!(auth(&h, &http_get()), Err(AuthError::Unauthenticated));
        let h = set(h, headers::SIGNATURE, &"0".repeat(64));
        assert_eq!(
            auth(&h, &http_get()),
            unauthorized(UnauthorizedReason::InvalidSignature)
        );

        id.user_id = Some("");
        let h = map(sign_headers_v2(SECRET, &http_get(), &id, NOW));
        assert_eq!(auth(&h, &http_get()), Err(AuthError::Unauthenticated));

        id.user_id = Some("not-a-uuid");
        let h = map(sign_headers_v2(SECRET, &http_get(), &id, NOW));
        assert_eq!(auth(&h, &http_get()), Err(AuthError::InvalidUserId));
    }

    #[test]
    fn ids_are_canonicalised() {
        let upper_tenant = TENANT.to_uppercase();
        let braced_user = format!("{{{}}}", USER.to_uppercase());
        let simple_user = USER.replace('-', "");
        let urn_user = format!("urn:uuid:{USER}");
        for user in [
            braced_user.as_str(),
            simple_user.as_str(),
            urn_user.as_str(),
        ] {
            let id = ContextHeaders {
                tenant_id: &upper_tenant,
                user_id: Some(user),
                ..identity()
            };
            let h = map(sign_headers_v2(SECRET, &http_get(), &id, NOW));
            let ctx = auth(&h, &http_get()).unwrap();
            assert_eq!(ctx.tenant_id.to_string(), TENANT);
            assert_eq!(ctx.user_id.to_string(), USER);
        }
    }

    #[test]
    fn master_flags_are_parsed_and_never_fail() {
        for (raw, admin) in [
            (r#"{"system_admin":true}"#, true),
            (r#"{"system_admin":"no"}"#, false),
            ("suspended", false),
        ] {
            let id = ContextHeaders {
                master_flags: Some(raw),
                ..identity()
            };
            let h = map(sign_headers_v2(SECRET, &http_get(), &id, NOW));
            assert_eq!(h[headers::MASTER_FLAGS], raw);
            let ctx = auth(&h, &http_get()).unwrap();
            assert_eq!(ctx.master_flags.is_system_admin(), admin, "{raw}");
        }
    }

    #[test]
    fn header_set() {
        let id = ContextHeaders {
            master_flags: Some(r#"{"a":1}"#),
            ..identity()
        };
        let names = |h: Vec<(String, String)>| h.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            names(sign_headers_v2(SECRET, &http_get(), &id, NOW)),
            [
                headers::REQUEST_ID,
                headers::TENANT_ID,
                headers::TENANT_SLUG,
                headers::USER_ID,
                headers::MASTER_FLAGS,
                headers::TIMESTAMP,
                headers::SIGNATURE,
                headers::SIGNATURE_VERSION,
            ]
        );
        assert_eq!(
            names(sign_headers_v1(SECRET, &http_get(), &identity(), NOW)),
            [
                headers::REQUEST_ID,
                headers::TENANT_ID,
                headers::TENANT_SLUG,
                headers::USER_ID,
                headers::TIMESTAMP,
                headers::SIGNATURE,
            ]
        );
        let id = ContextHeaders {
            master_flags: Some(""),
            ..identity()
        };
        let h = map(sign_headers_v2(SECRET, &http_get(), &id, NOW));
        assert!(!h.contains_key(headers::MASTER_FLAGS));
        assert_eq!(h[headers::SIGNATURE_VERSION], "2");
    }

    #[test]
    fn forwarding_a_context_re_signs_it() {
        let id = ContextHeaders {
            tenant_id: "6F1C2B9E8D1A4C3E9B7A2F4D5E6A7B8C",
            master_flags: Some(r#"{"membership_status":"active"}"#),
            ..identity()
        };
        let ctx = auth(
            &map(sign_headers_v2(SECRET, &http_get(), &id, NOW)),
            &http_get(),
        )
        .unwrap();
        let target = RequestParts::http("POST", "/api/v1/access/check", "", b"{}");
        for version in [SignatureVersion::V1, SignatureVersion::V2] {
            let h = ctx.signed_headers(SECRET, version, &target, NOW + 5);
            assert_eq!(h.header(headers::TENANT_ID), Some(TENANT));
            let again = verifier().authenticate(&h, &target, NOW + 5).unwrap();
            assert_eq!(again.tenant_id, ctx.tenant_id);
            assert_eq!(again.user_id, ctx.user_id);
            assert_eq!(again.master_flags, ctx.master_flags);
            assert_eq!(again.signature_version, version);
        }
    }

    #[test]
    fn error_codes_statuses_and_messages() {
        let cases = [
            (
                AuthError::MissingRequestId,
                "MISSING_REQUEST_ID",
                400,
                "X-Request-Id is required",
            ),
            (
                AuthError::MissingTenantContext,
                "MISSING_TENANT_CONTEXT",
                400,
                "Tenant headers required",
            ),
            (
                AuthError::InvalidTenantId,
                "INVALID_TENANT_ID",
                400,
                "X-Tenant-Id must be a UUID",
            ),
            (
                AuthError::Unauthorized(UnauthorizedReason::Expired),
                "UNAUTHORIZED",
                401,
                "Internal signature expired",
            ),
            (
                AuthError::ServerMisconfigured,
                "SERVER_ERROR",
                500,
                "Internal HMAC secret is not configured",
            ),
            (
                AuthError::Unauthenticated,
                "UNAUTHENTICATED",
                401,
                "X-User-Id is required",
            ),
            (
                AuthError::InvalidUserId,
                "INVALID_USER_ID",
                400,
                "X-User-Id must be a UUID",
            ),
        ];
        for (err, code, status, message) in cases {
            assert_eq!(err.code().as_str(), code);
            assert_eq!(err.http_status(), status);
            assert_eq!(err.message(), message);
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn debug_does_not_print_secrets() {
        let printed = format!("{:?}", verifier());
        assert!(!printed.contains(SECRET), "{printed}");
    }
}
