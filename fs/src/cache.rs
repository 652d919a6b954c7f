//! Rendered views, cached per (view, cgroup set, pid namespace) for a short TTL.
//!
//! Readers in one container share a cgroup set, so within the TTL only the first of them
//! pays for reading cgroup and host files; the rest get a copy of the same bytes. The map
//! is sharded (dashmap), so there is no global lock on the read path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// What a cached view was rendered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ViewKey {
    /// Index into `views::TABLE`.
    pub view: usize,
    /// `Caller::cgroup_id`.
    pub cgroup_id: u64,
    /// `Caller::pid_ns` for views that depend on it, else 0.
    pub pid_ns: u64,
}

struct Entry {
    rendered_at: Instant,
    bytes: Arc<[u8]>,
}

pub struct ViewCache {
    ttl: Duration,
    entries: DashMap<ViewKey, Entry>,
}

impl ViewCache {
    /// A TTL of zero disables caching.
    pub fn new(ttl: Duration) -> ViewCache {
        ViewCache { ttl, entries: DashMap::new() }
    }

    /// The bytes cached under `key` if still fresh.
    pub fn get(&self, key: &ViewKey) -> Option<Arc<[u8]>> {
        let entry = self.entries.get(key)?;
        (entry.rendered_at.elapsed() < self.ttl).then(|| entry.bytes.clone())
    }

    /// Caches `bytes` as rendered now.
    pub fn insert(&self, key: ViewKey, bytes: Arc<[u8]>) {
        if self.ttl.is_zero() {
            return;
        }
        self.entries.insert(key, Entry { rendered_at: Instant::now(), bytes });
    }

    /// Drops stale entries, so that views of gone containers do not pile up.
    pub fn sweep(&self) {
        self.entries.retain(|_, entry| entry.rendered_at.elapsed() < self.ttl);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(view: usize) -> ViewKey {
        ViewKey { view, cgroup_id: 1, pid_ns: 0 }
    }

    #[test]
    fn fresh_entries_hit_and_stale_ones_miss() {
        let cache = ViewCache::new(Duration::from_millis(50));
        cache.insert(key(0), Arc::from(&b"abc"[..]));
        assert_eq!(cache.get(&key(0)).as_deref(), Some(&b"abc"[..]));
        assert!(cache.get(&key(1)).is_none());
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get(&key(0)).is_none());
        cache.sweep();
        assert!(cache.is_empty());
    }

    #[test]
    fn zero_ttl_caches_nothing() {
        let cache = ViewCache::new(Duration::ZERO);
        cache.insert(key(0), Arc::from(&b"abc"[..]));
        assert!(cache.get(&key(0)).is_none());
        assert!(cache.is_empty());
    }
}
