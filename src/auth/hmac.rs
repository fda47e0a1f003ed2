//! HMAC-SHA256 request signatures, versions 1 and 2.
//!
//! v1 is the legacy BFF scheme, byte-compatible with the original service: it binds
//! the method, path, body, request id and timestamp, but not the query string or the
//! identity headers. v2 binds all of them, so a captured request cannot be replayed
//! under another user, tenant or set of master flags.

use ::hmac::digest::Key;
use ::hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

type HmacSha256 = Hmac<Sha256>;

/// First line of every v2 canonical string; keeps a v2 signature from ever being a
/// valid v1 signature (no v1 canonical string starts with it).
pub const V2_PREFIX: &str = "UPDSPACE-HMAC-V2";

/// The METHOD line of a v2 signature over a NATS request.
pub const NATS_METHOD: &str = "NATS";

/// Length of a signature on the wire: 32 bytes, lower-case hex.
pub const SIGNATURE_HEX_LEN: usize = 64;

/// The signature scheme a request was signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignatureVersion {
    V1,
    V2,
}

impl SignatureVersion {
    /// Reads `X-Updspace-Signature-Version`: absent (or blank) means v1, `2` means
    /// v2. Anything else is `None`, so an unknown future version is refused rather
    /// than silently verified as an older one.
    pub fn from_header(value: Option<&str>) -> Option<Self> {
        match value.map(str::trim) {
            None | Some("") => Some(Self::V1),
            Some("2") => Some(Self::V2),
            Some(_) => None,
        }
    }

    /// The number as written in headers and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "1",
            Self::V2 => "2",
        }
    }
}

impl std::fmt::Display for SignatureVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lower-case hex SHA-256 of the raw body bytes.
pub fn sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The v1 string to sign: `METHOD\nPATH\nsha256_hex(body)\nX-Request-Id\nts`.
pub fn canonical_v1(method: &str, path: &str, body: &[u8], request_id: &str, ts: i64) -> String {
    [
        method.to_ascii_uppercase().as_str(),
        path,
        &sha256_hex(body),
        request_id,
        &ts.to_string(),
    ]
    .join("\n")
}

/// Signs a request with v1; returns lower-case hex.
pub fn sign_v1(
    secret: &str,
    method: &str,
    path: &str,
    body: &[u8],
    request_id: &str,
    ts: i64,
) -> String {
    sign_canonical(secret, &canonical_v1(method, path, body, request_id, ts))
}

/// Everything a v2 signature covers. Header values are the raw strings as sent; an
/// absent header is the empty string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V2Input<'a> {
    /// HTTP method, or [`NATS_METHOD`] for NATS.
    pub method: &'a str,
    /// HTTP path (percent-decoded, no query string), or the NATS subject.
    pub path: &'a str,
    /// Raw query string without `?`; empty for NATS.
    pub query: &'a str,
    pub body: &'a [u8],
    pub request_id: &'a str,
    pub timestamp: i64,
    pub tenant_id: &'a str,
    pub tenant_slug: &'a str,
    pub user_id: &'a str,
    pub master_flags: &'a str,
}

impl V2Input<'_> {
    /// True when a field other than the body holds a line break. The canonical string
    /// is line-delimited, so such a value could shift the boundary between two fields
    /// and make one signature valid for a different split of the same bytes.
    pub fn has_line_break(&self) -> bool {
        [
            self.method,
            self.path,
            self.query,
            self.request_id,
            self.tenant_id,
            self.tenant_slug,
            self.user_id,
            self.master_flags,
        ]
        .iter()
        .any(|v| v.contains(['\n', '\r']))
    }
}

/// The v2 string to sign (see `docs/hmac-signatures.md`).
pub fn canonical_v2(input: &V2Input<'_>) -> String {
    [
        V2_PREFIX,
        input.method.to_ascii_uppercase().as_str(),
        input.path,
        input.query,
        &sha256_hex(input.body),
        input.request_id,
        &input.timestamp.to_string(),
        input.tenant_id,
        input.tenant_slug,
        input.user_id,
        input.master_flags,
    ]
    .join("\n")
}

/// Signs a request with v2; returns lower-case hex.
pub fn sign_v2(secret: &str, input: &V2Input<'_>) -> String {
    sign_canonical(secret, &canonical_v2(input))
}

/// HMAC-SHA256 of an already built canonical string, lower-case hex.
pub fn sign_canonical(secret: &str, canonical: &str) -> String {
    hex::encode(tag(secret.as_bytes(), canonical.as_bytes()))
}

/// Verifies a v1 signature against any of `secrets`.
pub fn verify_v1<S: AsRef<str>>(
    secrets: &[S],
    method: &str,
    path: &str,
    body: &[u8],
    request_id: &str,
    ts: i64,
    signature: &str,
) -> bool {
    verify_canonical(
        secrets,
        &canonical_v1(method, path, body, request_id, ts),
        signature,
    )
}

/// Verifies a v2 signature against any of `secrets`. Inputs with a line break in a
/// header field never verify (see [`V2Input::has_line_break`]).
pub fn verify_v2<S: AsRef<str>>(secrets: &[S], input: &V2Input<'_>, signature: &str) -> bool {
    !input.has_line_break() && verify_canonical(secrets, &canonical_v2(input), signature)
}

/// Verifies `signature` (64 lower-case hex characters) over `canonical` against every
/// non-empty secret. An empty secret never verifies anything: the original treats it
/// as "not configured", and an empty HMAC key would be a key everyone knows.
pub fn verify_canonical<S: AsRef<str>>(secrets: &[S], canonical: &str, signature: &str) -> bool {
    let Some(provided) = decode_signature(signature) else {
        return false;
    };
    // Every secret is tried even after a match, so the time taken does not tell which
    // secret (current or previous) signed the request.
    let mut matched = Choice::from(0);
    for secret in secrets.iter().map(AsRef::as_ref) {
        if secret.is_empty() {
            continue;
        }
        matched |= tag(secret.as_bytes(), canonical.as_bytes()).ct_eq(&provided);
    }
    matched.into()
}

/// Decodes a wire signature. Upper-case hex is refused: the original compares the hex
/// strings case-sensitively, and accepting more spellings would let one request exist
/// under several signatures, which the replay guard keys on.
fn decode_signature(signature: &str) -> Option<[u8; 32]> {
    let well_formed = signature.len() == SIGNATURE_HEX_LEN
        && signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(signature, &mut out).ok()?;
    Some(out)
}

fn tag(secret: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = keyed(secret);
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// `new_from_slice` is fallible only in its signature (HMAC takes keys of any length),
/// so the key is brought to block size here as RFC 2104 prescribes (hashed if longer,
/// zero-padded) and the infallible constructor is used instead of an `unwrap`.
fn keyed(secret: &[u8]) -> HmacSha256 {
    let mut key = Key::<HmacSha256>::default();
    if secret.len() > key.len() {
        let digest = Sha256::digest(secret);
        key[..digest.len()].copy_from_slice(&digest);
    } else {
        key[..secret.len()].copy_from_slice(secret);
    }
    <HmacSha256 as KeyInit>::new(&key)
}

/// The URL of a signed call to another service: `base` with `segments` appended (each percent-escaped), and the path its
/// receiver sees and verifies the signature over: the percent-decoded path.
pub fn endpoint(base: &url::Url, segments: &[&str]) -> Option<(url::Url, String)> {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    {
        let mut path = url.path_segments_mut().ok()?;
        path.pop_if_empty();
        for segment in segments {
            path.push(segment);
        }
    }
    let signed = percent_encoding::percent_decode_str(url.path())
        .decode_utf8()
        .ok()?
        .into_owned();
    Some((url, signed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "test-secret";
    const TS: i64 = 1_700_000_000;
    const TENANT: &str = "6f1c2b9e-8d1a-4c3e-9b7a-2f4d5e6a7b8c";
    const USER: &str = "0b8e4c2a-3d5f-4a6b-8c7d-9e0f1a2b3c4d";
    const RSVP_PATH: &str = "/api/v1/events/3f1c0a52-0000-4000-8000-000000000001/rsvp";
    const CREATE_BODY: &[u8] = br#"{"title":"Game night","scopeType":"TENANT","scopeId":"6f1c2b9e-8d1a-4c3e-9b7a-2f4d5e6a7b8c","startsAt":"2024-01-05T18:00:00Z","endsAt":"2024-01-05T21:00:00Z","visibility":"public"}"#;

    fn input<'a>(method: &'a str, path: &'a str, query: &'a str, body: &'a [u8]) -> V2Input<'a> {
        V2Input {
            method,
            path,
            query,
            body,
            request_id: "",
            timestamp: TS,
            tenant_id: TENANT,
            tenant_slug: "acme",
            user_id: USER,
            master_flags: "",
        }
    }

    #[test]
    fn empty_body_hash() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn v1_vector_1() {
        let sig = sign_v1(SECRET, "GET", "/api/v1/events/", b"", "req-1", TS);
        assert_eq!(
            sig,
            "4f789da7d55eeec91461a7d1d764f8c746099a92d0b8db324be0d656a4b99a9d"
        );
        assert!(verify_v1(
            &[SECRET],
            "GET",
            "/api/v1/events/",
            b"",
            "req-1",
            TS,
            &sig
        ));
    }

    #[test]
    fn v1_vector_2() {
        let body = br#"{"status":"going"}"#;
        assert_eq!(
            sha256_hex(body),
            "e2932fa511e0e6ed51f1d937c49333b0d9c668f6ef3a5c696e87c912d4a0969c"
        );
        let sig = sign_v1(SECRET, "POST", RSVP_PATH, body, "req-2", TS);
        assert_eq!(
            sig,
            "c2adf48c729fdd7852518901a2bab36a4595895ba20b451e0b303461595fb493"
        );
    }

    #[test]
    fn v1_method_is_upper_cased() {
        assert_eq!(
            sign_v1(SECRET, "get", "/api/v1/events/", b"", "req-1", TS),
            sign_v1(SECRET, "GET", "/api/v1/events/", b"", "req-1", TS)
        );
    }

    // The expected values below come from an independent Python implementation
    // (`hmac`/`hashlib`), reproduced in docs/hmac-signatures.md.

    #[test]
    fn v2_vector_1_http_get_with_query() {
        let query = format!("scope_type=TENANT&scope_id={TENANT}&limit=50");
        let mut i = input("GET", "/api/v1/events/", &query, b"");
        i.request_id = "req-v2-1";
        assert_eq!(
            canonical_v2(&i),
            format!(
                "UPDSPACE-HMAC-V2\nGET\n/api/v1/events/\n{query}\n\
                 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
                 req-v2-1\n1700000000\n{TENANT}\nacme\n{USER}\n"
            )
        );
        assert_eq!(
            sign_v2(SECRET, &i),
            "9d7522f44a86a589dbe510e144354cba498c3d2cb52e8e6f909512cef34a316a"
        );
    }

    #[test]
    fn v2_vector_2_http_post_with_body_and_flags() {
        let mut i = input("POST", RSVP_PATH, "", br#"{"status":"going"}"#);
        i.request_id = "req-v2-2";
        i.master_flags = r#"{"email_verified":true,"system_admin":true}"#;
        assert_eq!(
            sign_v2(SECRET, &i),
            "df891f5e77949969310649a638306583ffe0746474f949d3f7489865b02039b3"
        );
    }

    #[test]
    fn v2_vector_3_nats_create() {
        let mut i = input(NATS_METHOD, "events.v1.event.create", "", CREATE_BODY);
        i.request_id = "req-v2-3";
        assert_eq!(
            sha256_hex(CREATE_BODY),
            "d7861ecfaf207bcc0236970749e5e4f3f89f5bccc3960f03c7f55a7ecd3ad3b2"
        );
        assert_eq!(
            sign_v2(SECRET, &i),
            "bc52097c049805a10260b4c1cdee256946746888c04258c039b9cc046547695a"
        );
    }

    #[test]
    fn v2_vector_4_raw_non_canonical_ids() {
        let tenant = TENANT.to_uppercase();
        let user = format!("{{{}}}", USER.to_uppercase());
        let mut i = input(
            "GET",
            "/api/v1/3f1c0a52-0000-4000-8000-000000000001",
            "",
            b"",
        );
        i.request_id = "req-v2-4";
        i.tenant_id = &tenant;
        i.user_id = &user;
        i.master_flags = r#"{"suspended":false}"#;
        assert_eq!(
            sign_v2(SECRET, &i),
            "a860892ea8c8ad420a17488dcd0ecd6d5f77b601e5d6e0d58b0bee4f69d7f2dc"
        );
    }

    #[test]
    fn v2_key_longer_than_a_block() {
        let secret = "k".repeat(100);
        let mut i = input(
            NATS_METHOD,
            "events.v1.event.get",
            "",
            br#"{"id":"3f1c0a52-0000-4000-8000-000000000001"}"#,
        );
        i.request_id = "req-v2-5";
        assert_eq!(
            sign_v2(&secret, &i),
            "fe652932384cc3d6795f03aff85cd4449f70245d8491f5c53cde3e08c854e4db"
        );
    }

    #[test]
    fn key_of_exactly_one_block_matches_the_hmac_crate() {
        for len in [0, 1, 63, 64, 65, 200] {
            let secret = "s".repeat(len);
            let Ok(mut reference) = HmacSha256::new_from_slice(secret.as_bytes()) else {
                panic!("HMAC accepts keys of any length");
            };
            reference.update(b"message");
            let expected: [u8; 32] = reference.finalize().into_bytes().into();
            assert_eq!(tag(secret.as_bytes(), b"message"), expected, "len {len}");
        }
    }

    #[test]
    fn verify_accepts_any_listed_secret_and_skips_empty_ones() {
        let sig = sign_canonical("old", "msg");
        assert!(verify_canonical(&["new", "old"], "msg", &sig));
        assert!(!verify_canonical(&["new"], "msg", &sig));
        let empty_key_sig = sign_canonical("", "msg");
        assert!(!verify_canonical(&["", "new"], "msg", &empty_key_sig));
        assert!(!verify_canonical::<&str>(&[], "msg", &sig));
    }

    #[test]
    fn verify_refuses_malformed_signatures() {
        let sig = sign_canonical("k", "msg");
        assert!(verify_canonical(&["k"], "msg", &sig));
        assert!(!verify_canonical(&["k"], "msg", &sig.to_uppercase()));
        assert!(!verify_canonical(&["k"], "msg", &sig[..63]));
        assert!(!verify_canonical(&["k"], "msg", &format!("{sig}0")));
        assert!(!verify_canonical(&["k"], "msg", &format!(" {}", &sig[1..])));
        assert!(!verify_canonical(&["k"], "msg", ""));
        assert!(!verify_canonical(&["k"], "other", &sig));
    }

    #[test]
    fn v2_line_breaks_never_verify() {
        let mut i = input("GET", "/p", "", b"");
        i.tenant_slug = "acme\nx";
        let sig = sign_v2(SECRET, &i);
        assert!(!verify_v2(&[SECRET], &i, &sig));
        i.tenant_slug = "acme";
        let sig = sign_v2(SECRET, &i);
        assert!(verify_v2(&[SECRET], &i, &sig));
    }

    #[test]
    fn v1_and_v2_signatures_differ() {
        let mut i = input("GET", "/api/v1/events/", "", b"");
        i.request_id = "req-1";
        assert_ne!(
            sign_v2(SECRET, &i),
            sign_v1(SECRET, "GET", "/api/v1/events/", b"", "req-1", TS)
        );
    }

    #[test]
    fn version_header() {
        assert_eq!(
            SignatureVersion::from_header(None),
            Some(SignatureVersion::V1)
        );
        assert_eq!(
            SignatureVersion::from_header(Some(" ")),
            Some(SignatureVersion::V1)
        );
        assert_eq!(
            SignatureVersion::from_header(Some("2")),
            Some(SignatureVersion::V2)
        );
        assert_eq!(SignatureVersion::from_header(Some("1")), None);
        assert_eq!(SignatureVersion::from_header(Some("3")), None);
        assert_eq!(SignatureVersion::from_header(Some("v2")), None);
    }
}
