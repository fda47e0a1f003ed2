//! Which instance owns a scope's writes. Every instance hears the others'
//! heartbeats and change notes; the owner of a scope is the instance,
//! among itself and those heard from within the peer grace, whose
//! rendezvous score for the scope is highest. Every instance that has
//! heard of the same set computes the same owner, and when an instance
//! comes or goes only the scopes it owned (or now owns) move.
//!
//! Ownership is an optimisation, not a lock: two instances that disagree
//! for a moment (one has not heard of a newcomer yet) both write, and the
//! row locks of the write keep that correct, as with routing switched off.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::actors::ScopeKey;

pub struct Peers {
    me: String,
    grace: Duration,
    seen: Mutex<HashMap<String, Instant>>,
}

impl Peers {
    pub fn new(me: String, grace: Duration) -> Self {
        Self {
            me,
            grace,
            seen: Mutex::default(),
        }
    }

    /// Records a sign of life from `instance`; true when it was not known
    /// (or known only as gone silent), so it has not heard of this one yet
    /// either, and deserves a heartbeat now rather than in 5 s.
    pub fn saw(&self, instance: &str) -> bool {
        if instance == self.me {
            return false;
        }
        let now = Instant::now();
        let mut seen = self.lock();
        let known = seen
            .insert(instance.to_string(), now)
            .is_some_and(|at| now.duration_since(at) < self.grace);
        seen.retain(|_, at| now.duration_since(*at) < self.grace);
        !known
    }

    /// Whether `instance` was heard from within the grace.
    pub fn knows(&self, instance: &str) -> bool {
        self.lock()
            .get(instance)
            .is_some_and(|at| at.elapsed() < self.grace)
    }

    /// `instance` stopped (it said so, or did not answer a forwarded write).
    pub fn gone(&self, instance: &str) {
        self.lock().remove(instance);
    }

    /// The instance that owns `key`'s writes, or `None` when it is this one.
    pub fn owner_of(&self, key: &ScopeKey) -> Option<String> {
        let now = Instant::now();
        let seen = self.lock();
        let mut best = (score(&self.me, key), None);
        for (instance, at) in seen.iter() {
            if now.duration_since(*at) >= self.grace {
                continue;
            }
            let s = score(instance, key);
            // Ties (astronomically rare) go to the smaller id, the same on
            // every instance.
            let wins =
                s > best.0 || s == best.0 && instance.as_str() < best.1.unwrap_or(self.me.as_str());
            if wins {
                best = (s, Some(instance.as_str()));
            }
        }
        best.1.map(str::to_string)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A stable 64-bit score of (instance, scope): FNV-1a over both, finished
/// with SplitMix64's mixer so close inputs spread. Fixed here rather than
/// `std`'s hasher, whose output may change between Rust releases: instances
/// of two builds (a rolling deploy) still agree.
fn score(instance: &str, key: &ScopeKey) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(PRIME);
    };
    eat(instance.as_bytes());
    eat(key.tenant.as_uuid().as_bytes());
    eat(key.scope_type.as_str().as_bytes());
    eat(key.scope_id.as_bytes());
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ScopeType, TenantId};

    fn key(n: usize) -> ScopeKey {
        ScopeKey {
            tenant: TenantId::from_uuid(uuid::Uuid::from_u128(7)),
            scope_type: ScopeType::Community,
            scope_id: format!("community-{n}"),
        }
    }

    fn view(me: &str, others: &[&str]) -> Peers {
        let peers = Peers::new(me.to_string(), Duration::from_secs(15));
        for other in others {
            peers.saw(other);
        }
        peers
    }

    /// The owner as an instance id, whoever computes it.
    fn owner(peers: &Peers, k: &ScopeKey) -> String {
        peers.owner_of(k).unwrap_or_else(|| peers.me.clone())
    }

    #[test]
    fn alone_an_instance_owns_every_scope() {
        let alone = view("a", &[]);
        assert!((0..100).all(|n| alone.owner_of(&key(n)).is_none()));
    }

    #[test]
    fn instances_that_heard_of_each_other_agree_and_share_the_scopes() {
        let a = view("a", &["b", "c"]);
        let b = view("b", &["a", "c"]);
        let c = view("c", &["a", "b"]);
        let mut owned: HashMap<String, usize> = HashMap::new();
        for n in 0..3000 {
            let k = key(n);
            let first = owner(&a, &k);
            assert_eq!(first, owner(&b, &k), "scope {n}");
            assert_eq!(first, owner(&c, &k), "scope {n}");
            *owned.entry(first).or_default() += 1;
        }
        for id in ["a", "b", "c"] {
            let share = owned.get(id).copied().unwrap_or(0);
            assert!((800..1200).contains(&share), "{id} owns {share} of 3000");
        }
    }

    #[test]
    fn when_an_instance_goes_only_its_scopes_move() {
        let before = view("a", &["b", "c"]);
        let after = view("a", &["b", "c"]);
        after.gone("c");
        for n in 0..1000 {
            let k = key(n);
            let was = owner(&before, &k);
            let now = owner(&after, &k);
            assert_ne!(now, "c");
            if was != "c" {
                assert_eq!(was, now, "scope {n} moved though its owner stayed");
            }
        }
    }

    #[test]
    fn a_peer_gone_silent_owns_nothing_and_is_greeted_when_it_returns() {
        let peers = Peers::new("a".into(), Duration::ZERO);
        assert!(peers.saw("b"), "a new peer is greeted");
        assert!((0..100).all(|n| peers.owner_of(&key(n)).is_none()));
        assert!(peers.saw("b"), "a peer silent past the grace is new again");
        let fresh = view("a", &["b"]);
        assert!(!fresh.saw("b"), "a known peer is not greeted again");
        assert!(!fresh.saw("a"), "an instance does not greet itself");
    }
}
