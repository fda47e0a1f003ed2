//! Refusing a signed request that is presented a second time.
//!
//! A signature stays valid for the whole clock window, so without a guard anyone
//! who sees one request (a log line, a proxy) can send it again for up to five
//! minutes. A retry by an honest client carries a new timestamp and signature and is
//! not a replay; retries of a create are deduplicated elsewhere, on the request id.
//!
//! This module holds what every instance keeps for itself: the key of a signed
//! request, and the per-instance memory of the keys it accepted. Which requests
//! are also checked in a store shared by all instances is decided by the
//! application layer (`docs/hmac-signatures.md`, "Replays").

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

use crate::auth::context::{AuthError, InternalContext, UnauthorizedReason};

/// The identity of one signed request: SHA-256 over its length-prefixed
/// (request id, signature) and its timestamp, so no two different triples
/// share an input, whatever the request id's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplayKey(pub [u8; 32]);

impl ReplayKey {
    pub fn of(ctx: &InternalContext) -> Self {
        Self::of_triple(&ctx.request_id, ctx.timestamp, &ctx.signature)
    }

    pub fn of_triple(request_id: &str, timestamp: i64, signature: &str) -> Self {
        let mut hasher = Sha256::new();
        for field in [request_id.as_bytes(), signature.as_bytes()] {
            hasher.update((field.len() as u64).to_le_bytes());
            hasher.update(field);
        }
        hasher.update(timestamp.to_le_bytes());
        Self(hasher.finalize().into())
    }

    /// The key a write's triple is claimed under in the shared table before
    /// it runs, when the replay bucket cannot be asked: apart from the key
    /// the write's group commit claims in the same table.
    pub fn before_running(&self) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"claimed before running");
        hasher.update(self.0);
        Self(hasher.finalize().into())
    }

    /// What the per-instance memory keeps of the key: 64 bits, and the byte
    /// that picks its shard.
    fn in_memory(&self) -> (u64, u8) {
        let mut bits = [0u8; 8];
        bits.copy_from_slice(&self.0[..8]);
        (u64::from_le_bytes(bits), self.0[8])
    }

    /// The first 128 bits.
    fn short(&self) -> Short {
        let mut short = [0u8; 16];
        short.copy_from_slice(&self.0[..16]);
        short
    }

    /// Lower-case hex of the first 128 bits (a key name for shared stores).
    pub fn short_hex(&self) -> String {
        hex::encode(self.short())
    }
}

type Short = [u8; 16];

/// Remembers the keys of requests this instance accepted until their signature
/// expires, and refuses them while remembered.
///
/// Memory is bounded by `capacity` entries (about 20 bytes each). Nothing is
/// ever forgotten early, since that would reopen a replay window: once full, a
/// new request is accepted without being remembered, and the guard reports that
/// it is *diverting* until the last such request has expired. While it is, the
/// caller must check every request in the shared store instead
/// ([`ReplayGuard::diverting`]).
///
/// Keys are kept in buckets by the seconds their signature expires, which a
/// request's own timestamp fixes: a replay carries the same timestamp, so a check
/// probes one bucket, and a bucket whose last second has passed is dropped whole
/// (no per-entry expiry index). Within a bucket a key is 64 bits of the request's
/// SHA-256: two different requests share them with a probability of about 2^-64 per
/// remembered key, and the worst that can do is refuse an honest request once,
/// whose client signs again.
pub struct ReplayGuard {
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
    window_secs: i64,
    /// Unix seconds until which requests not remembered here may still be
    /// replayed (0: none).
    diverted_until: AtomicI64,
}

/// Seconds of expiry one bucket covers: an entry's memory is released at most this
/// long after its signature expired.
const BUCKET_SECS: i64 = 8;

#[derive(Default)]
struct Shard {
    /// Bucket number (expiry / `BUCKET_SECS`) → the keys expiring in it.
    buckets: BTreeMap<i64, HashSet<u64, BuildHasherDefault<KeyBits>>>,
    len: usize,
}

impl Shard {
    fn forget_expired(&mut self, now_unix: i64) {
        while let Some(oldest) = self.buckets.first_entry() {
            let last_second = oldest
                .key()
                .saturating_mul(BUCKET_SECS)
                .saturating_add(BUCKET_SECS - 1);
            if last_second >= now_unix {
                break;
            }
            self.len -= oldest.get().len();
            oldest.remove();
        }
    }
}

/// The keys are already uniformly distributed bits of a SHA-256, so the set uses
/// them as their own hash instead of hashing them again.
#[derive(Default)]
struct KeyBits(u64);

impl Hasher for KeyBits {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used for a `u64` key; fold anything else in anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::new(
            crate::auth::context::Verifier::DEFAULT_WINDOW_SECS,
            Self::DEFAULT_CAPACITY,
        )
    }
}

impl std::fmt::Debug for ReplayGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayGuard")
            .field("entries", &self.len())
            .field("capacity", &(self.shard_capacity * self.shards.len()))
            .field("window_secs", &self.window_secs)
            .finish()
    }
}

impl ReplayGuard {
    /// Five minutes of about 13,000 signed requests a second, in at most about
    /// 80 MB: past it, every request costs a write to the shared bucket.
    pub const DEFAULT_CAPACITY: usize = 4_000_000;
    /// Independent locks, so concurrent requests rarely wait on each other.
    const MAX_SHARDS: usize = 16;

    /// `window_secs` must be the verifier's window: an entry is kept exactly as long
    /// as its signature could still be accepted.
    pub fn new(window_secs: i64, capacity: usize) -> Self {
        Self::with_shards(window_secs, capacity, capacity.clamp(1, Self::MAX_SHARDS))
    }

    fn with_shards(window_secs: i64, capacity: usize, shard_count: usize) -> Self {
        let shard_count = shard_count.max(1);
        let shards = (0..shard_count)
            .map(|_| Mutex::new(Shard::default()))
            .collect();
        Self {
            shards,
            shard_capacity: capacity.max(1).div_ceil(shard_count),
            window_secs,
            diverted_until: AtomicI64::new(0),
        }
    }

    /// Accepts the request the first time its triple is seen, and refuses it with
    /// `Unauthorized(Replayed)` while it is remembered. Call it after
    /// [`Verifier::authenticate`](crate::auth::context::Verifier::authenticate)
    /// succeeded, with the same `now_unix`, or use
    /// [`Verifier::authenticate_guarded`](crate::auth::context::Verifier::authenticate_guarded),
    /// which checks at the contract's place in the order.
    pub fn check_and_remember(
        &self,
        ctx: &InternalContext,
        now_unix: i64,
    ) -> Result<(), AuthError> {
        self.check_and_remember_triple(&ctx.request_id, ctx.timestamp, &ctx.signature, now_unix)
    }

    /// [`check_and_remember`](Self::check_and_remember) for a request whose signature
    /// is verified but whose context is not built yet.
    pub fn check_and_remember_triple(
        &self,
        request_id: &str,
        timestamp: i64,
        signature: &str,
        now_unix: i64,
    ) -> Result<(), AuthError> {
        let expiry = timestamp.saturating_add(self.window_secs);
        if expiry < now_unix {
            // Out of the window: the verifier refuses it anyway, and remembering it
            // would only take space.
            return Err(UnauthorizedReason::Expired.into());
        }
        let (key, shard_byte) = ReplayKey::of_triple(request_id, timestamp, signature).in_memory();
        let mut shard = self.shards[usize::from(shard_byte) % self.shards.len()]
            .lock()
            // Every update leaves the maps consistent, so a panic elsewhere while the
            // lock was held cannot have corrupted them.
            .unwrap_or_else(PoisonError::into_inner);
        shard.forget_expired(now_unix);
        let bucket = expiry.div_euclid(BUCKET_SECS);
        if shard
            .buckets
            .get(&bucket)
            .is_some_and(|keys| keys.contains(&key))
        {
            return Err(UnauthorizedReason::Replayed.into());
        }
        if shard.len >= self.shard_capacity {
            self.diverted_until.fetch_max(expiry, Ordering::SeqCst);
            return Ok(());
        }
        shard.buckets.entry(bucket).or_default().insert(key);
        shard.len += 1;
        Ok(())
    }

    /// Whether a request accepted without being remembered here may still be
    /// replayed: then every request must also be checked in the shared store.
    pub fn diverting(&self, now_unix: i64) -> bool {
        now_unix <= self.diverted_until.load(Ordering::SeqCst)
    }

    /// Entries currently remembered (expired ones may linger until their shard is
    /// next used, and up to `BUCKET_SECS` after their expiry).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::flags::MasterFlags;
    use crate::auth::hmac::SignatureVersion;
    use std::sync::Arc;
    use uuid::Uuid;

    const NOW: i64 = 1_700_000_000;

    fn ctx(request_id: &str, ts: i64, signature: &str) -> InternalContext {
        InternalContext {
            request_id: request_id.to_owned(),
            tenant_id: Uuid::nil(),
            tenant_slug: "acme".to_owned(),
            user_id: Uuid::nil(),
            master_flags: MasterFlags::default(),
            signature_version: SignatureVersion::V2,
            signature: signature.to_owned(),
            timestamp: ts,
        }
    }

    fn replayed() -> Result<(), AuthError> {
        Err(AuthError::Unauthorized(UnauthorizedReason::Replayed))
    }

    #[test]
    fn replay_is_refused() {
        let guard = ReplayGuard::default();
        let c = ctx("req-1", NOW, "aa");
        assert_eq!(guard.check_and_remember(&c, NOW), Ok(()));
        assert_eq!(guard.check_and_remember(&c, NOW), replayed());
        assert_eq!(guard.check_and_remember(&c, NOW + 300), replayed());
        let err = guard.check_and_remember(&c, NOW + 1).unwrap_err();
        assert_eq!(err.code().as_str(), "UNAUTHORIZED");
        assert_eq!(err.http_status(), 401);
        assert_eq!(err.message(), "Replayed request");
    }

    #[test]
    fn any_difference_in_the_triple_is_a_new_request() {
        let guard = ReplayGuard::default();
        assert!(
            guard
                .check_and_remember(&ctx("req-1", NOW, "aa"), NOW)
                .is_ok()
        );
        assert!(
            guard
                .check_and_remember(&ctx("req-1", NOW, "bb"), NOW)
                .is_ok()
        );
        assert!(
            guard
                .check_and_remember(&ctx("req-1", NOW + 1, "aa"), NOW)
                .is_ok()
        );
        assert!(
            guard
                .check_and_remember(&ctx("req-2", NOW, "aa"), NOW)
                .is_ok()
        );
        // Length prefixes keep field boundaries apart.
        assert!(
            guard
                .check_and_remember(&ctx("req-1a", NOW, "a"), NOW)
                .is_ok()
        );
        assert_eq!(guard.len(), 5);
    }

    #[test]
    fn entries_expire_with_the_signature() {
        let guard = ReplayGuard::with_shards(300, 100, 1);
        let c = ctx("req-1", NOW, "aa");
        assert!(guard.check_and_remember(&c, NOW).is_ok());
        assert_eq!(guard.check_and_remember(&c, NOW + 300), replayed());
        // Past the window the verifier already refuses it; the guard forgets it
        // once its bucket has passed, and keeps what expires later.
        assert_eq!(
            guard.check_and_remember(&c, NOW + 301),
            Err(AuthError::Unauthorized(UnauthorizedReason::Expired))
        );
        let later = NOW + 301 + BUCKET_SECS;
        assert!(
            guard
                .check_and_remember(&ctx("req-2", NOW + 10, "bb"), later)
                .is_ok()
        );
        assert!(
            guard
                .check_and_remember(&ctx("req-3", later, "bb"), later)
                .is_ok()
        );
        assert_eq!(guard.len(), 2);
        assert_eq!(
            guard.check_and_remember(&ctx("req-2", NOW + 10, "bb"), later),
            replayed()
        );
    }

    #[test]
    fn every_entry_is_refused_up_to_its_expiry_whatever_its_bucket() {
        let guard = ReplayGuard::with_shards(300, 1_000, 1);
        for offset in 0..(3 * BUCKET_SECS) {
            let c = ctx(&format!("req-{offset}"), NOW + offset, "aa");
            assert!(guard.check_and_remember(&c, NOW + offset).is_ok());
        }
        for offset in 0..(3 * BUCKET_SECS) {
            let c = ctx(&format!("req-{offset}"), NOW + offset, "aa");
            // The last second its signature is valid: entries expiring earlier
            // have been dropped by now, this one must not have been.
            assert_eq!(
                guard.check_and_remember(&c, NOW + offset + 300),
                replayed(),
                "offset {offset}"
            );
        }
        assert!(guard.len() <= usize::try_from(BUCKET_SECS).unwrap_or(0) + 1);
    }

    #[test]
    fn a_timestamp_from_the_future_is_kept_until_it_expires() {
        let guard = ReplayGuard::new(300, 100);
        let c = ctx("req-1", NOW + 300, "aa");
        assert!(guard.check_and_remember(&c, NOW).is_ok());
        assert_eq!(guard.check_and_remember(&c, NOW + 600), replayed());
    }

    #[test]
    fn memory_is_bounded() {
        let guard = ReplayGuard::new(300, 64);
        for i in 0..1_000 {
            let c = ctx(&format!("req-{i}"), NOW, "aa");
            assert!(guard.check_and_remember(&c, NOW).is_ok());
        }
        assert!(guard.len() <= 64, "{}", guard.len());
    }

    #[test]
    fn a_full_guard_forgets_nothing_and_diverts_until_the_unremembered_expire() {
        let guard = ReplayGuard::with_shards(300, 2, 1);
        let a = ctx("a", NOW, "aa");
        let b = ctx("b", NOW - 100, "aa");
        let late = ctx("late", NOW + 50, "aa");
        for x in [&a, &b] {
            assert!(guard.check_and_remember(x, NOW).is_ok());
        }
        assert!(!guard.diverting(NOW));
        // Full: accepted, not remembered, and the guard says so until the
        // request's signature has expired.
        assert!(guard.check_and_remember(&late, NOW).is_ok());
        assert_eq!(guard.len(), 2);
        assert!(guard.diverting(NOW));
        assert!(guard.diverting(NOW + 350));
        assert!(!guard.diverting(NOW + 351));
        // What it remembers stays refused.
        assert_eq!(guard.check_and_remember(&a, NOW), replayed());
        assert_eq!(guard.check_and_remember(&b, NOW), replayed());
    }

    #[test]
    fn concurrent_duplicates_let_exactly_one_through() {
        let guard = Arc::new(ReplayGuard::default());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let guard = Arc::clone(&guard);
                std::thread::spawn(move || {
                    (0..200)
                        .filter(|i| {
                            guard
                                .check_and_remember(&ctx(&format!("req-{i}"), NOW, "aa"), NOW)
                                .is_ok()
                        })
                        .count()
                })
            })
            .collect();
        let accepted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(accepted, 200);
    }
}
