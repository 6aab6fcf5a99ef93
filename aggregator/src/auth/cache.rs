//! A small TTL cache for TokenReview and SubjectAccessReview answers: bounded in size (when
//! full, expired entries go first, then everything), one short synchronous lock per lookup.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most entries kept.
pub(crate) const MAX_ENTRIES: usize = 10_000;

pub(crate) struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached value, if it has not expired at `now`.
    pub(crate) fn get(&self, key: &K, now: Instant) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(expires, _)| *expires > now)
            .map(|(_, v)| v.clone())
    }

    /// Caches `value` for `ttl` from `now` (a zero TTL caches nothing).
    pub(crate) fn insert(&self, key: K, value: V, ttl: Duration, now: Instant) {
        if ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (now + ttl, value));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_size_is_bounded() {
        let cache = TtlCache::new();
        let t0 = Instant::now();
        cache.insert(1u32, "a", Duration::from_secs(10), t0);
        assert_eq!(cache.get(&1, t0 + Duration::from_secs(9)), Some("a"));
        assert_eq!(cache.get(&1, t0 + Duration::from_secs(10)), None);
        cache.insert(2, "b", Duration::ZERO, t0);
        assert_eq!(cache.get(&2, t0), None);
        for i in 0..(MAX_ENTRIES as u32 + 5) {
            cache.insert(i, "x", Duration::from_secs(1), t0);
        }
        assert!(cache.len() <= MAX_ENTRIES);
    }
}
