//! Internal authentication: HMAC request signatures (v1 for the legacy BFF, v2 for
//! NATS and new callers), the caller context they establish, master flags, and the
//! replay guard. Shared by the HTTP gateway and the NATS endpoints, which only adapt
//! their headers to [`HeaderSource`]. The wire contract is `docs/hmac-signatures.md`.

pub mod context;
pub mod flags;
pub mod hmac;
pub mod replay;

pub use self::context::{
    AuthError, ContextHeaders, HeaderSource, InternalContext, RequestParts, Transport,
    UnauthorizedReason, Verifier, headers, sign_headers_v1, sign_headers_v2,
};
pub use self::flags::MasterFlags;
pub use self::hmac::{SignatureVersion, V2Input, sign_v1, sign_v2};
pub use self::replay::ReplayGuard;

/// The clock every check uses, in Unix seconds. Checks take `now` as an argument so
/// tests can pin it; production callers pass this.
pub fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}
