//! Lookup results by key, least recently used evicted first, each valid for a time to live.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;
use serde_json::{Map, Value};

/// An enrichment per cache key (also for keys not found, so misses are not asked again within
/// the TTL). Failed lookups are never cached.
pub struct LookupCache {
    entries: LruCache<String, (Instant, Map<String, Value>)>,
    ttl: Duration,
}

impl LookupCache {
    pub fn new(max_entries: NonZeroUsize, ttl: Duration) -> Self {
        LookupCache {
            entries: LruCache::new(max_entries),
            ttl,
        }
    }

    pub fn get(&mut self, key: &str, now: Instant) -> Option<&Map<String, Value>> {
        let fresh = self
            .entries
            .peek(key)
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) < self.ttl);
        if !fresh {
            self.entries.pop(key);
            return None;
        }
        self.entries.get(key).map(|(_, v)| v)
    }

    pub fn insert(&mut self, key: String, value: Map<String, Value>, now: Instant) {
        self.entries.put(key, (now, value));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn m(v: i64) -> Map<String, Value> {
        json!({ "v": v }).as_object().unwrap().clone()
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let t0 = Instant::now();
        let mut c = LookupCache::new(NonZeroUsize::new(10).unwrap(), Duration::from_secs(5));
        c.insert("a".into(), m(1), t0);
        assert_eq!(c.get("a", t0 + Duration::from_secs(4)), Some(&m(1)));
        assert_eq!(c.get("a", t0 + Duration::from_secs(5)), None);
        assert_eq!(c.len(), 0, "an expired entry is removed");
    }

    #[test]
    fn the_least_recently_used_entry_is_evicted() {
        let t0 = Instant::now();
        let mut c = LookupCache::new(NonZeroUsize::new(2).unwrap(), Duration::from_secs(60));
        c.insert("a".into(), m(1), t0);
        c.insert("b".into(), m(2), t0);
        assert!(c.get("a", t0).is_some());
        c.insert("c".into(), m(3), t0);
        assert!(c.get("b", t0).is_none(), "b was least recently used");
        assert!(c.get("a", t0).is_some());
        assert!(c.get("c", t0).is_some());
    }
}
