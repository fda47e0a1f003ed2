//! Answers kept for a while, and calls in flight shared by identical
//! look-ups.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::Flight;

pub(super) struct Entry<V> {
    value: V,
    fetched: Instant,
    fresh_until: Instant,
}

/// A bounded map of answers with their age.
pub(super) struct TtlCache<K, V> {
    map: Mutex<HashMap<K, Entry<V>>>,
    cap: usize,
    /// Entries older than this are useless (fresh and stale windows passed).
    keep: Duration,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub(super) fn new(cap: usize, keep: Duration) -> Self {
        Self {
            map: Mutex::default(),
            cap: cap.max(16),
            keep,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<K, Entry<V>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn fresh(&self, key: &K, now: Instant) -> Option<V> {
        self.lock()
            .get(key)
            .filter(|e| now < e.fresh_until)
            .map(|e| e.value.clone())
    }

    /// The last answer when it is at most `max_age` old, fresh or not.
    pub(super) fn within(&self, key: &K, now: Instant, max_age: Duration) -> Option<V> {
        self.lock()
            .get(key)
            .filter(|e| now.saturating_duration_since(e.fetched) <= max_age)
            .map(|e| e.value.clone())
    }

    pub(super) fn insert(&self, key: K, value: V, ttl: Duration) {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= self.cap && !map.contains_key(&key) {
            let keep = self.keep;
            map.retain(|_, e| now.saturating_duration_since(e.fetched) <= keep);
            if map.len() >= self.cap {
                // Still full of live entries: drop the oldest tenth.
                let mut ages: Vec<Instant> = map.values().map(|e| e.fetched).collect();
                let cut = ages.len() / 10;
                let (_, nth, _) = ages.select_nth_unstable(cut);
                let threshold = *nth;
                map.retain(|_, e| e.fetched > threshold);
            }
        }
        map.insert(
            key,
            Entry {
                value,
                fetched: now,
                fresh_until: now + ttl,
            },
        );
    }

    pub(super) fn retain(&self, keep: impl Fn(&K) -> bool) {
        self.lock().retain(|k, _| keep(k));
    }
}

/// Calls in flight, by what they look up.
pub(super) struct Flights<K, V> {
    map: Mutex<HashMap<K, Flight<V>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> Flights<K, V> {
    pub(super) fn new() -> Self {
        Self {
            map: Mutex::default(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<K, Flight<V>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
