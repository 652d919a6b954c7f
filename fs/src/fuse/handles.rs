//! Open handles: file snapshots and directory listings.
//!
//! `open` renders a file and stores the bytes under a fresh handle; every `read` on that
//! handle serves a slice of the same bytes, so partial and offset reads see one consistent
//! file, until a read from offset 0 swaps in a new rendering (see `filesystem::read`);
//! `release` drops it. A dynamic directory's `opendir` keeps its listing
//! the same way, for the READDIRs that follow. The table is a sharded map (dashmap) keyed
//! by handle id: reads take one shard's read lock for the duration of a memcpy, never a
//! global lock. It is generic over what a handle holds (see `filesystem::Handle`).

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

/// The rendered content of one open file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub data: Box<[u8]>,
}

impl Snapshot {
    pub fn new(data: Vec<u8>) -> Snapshot {
        Snapshot { data: data.into_boxed_slice() }
    }

    /// The bytes at `offset`, at most `size` of them; empty at or past the end.
    pub fn slice(&self, offset: u64, size: usize) -> &[u8] {
        let len = self.data.len();
        let start = usize::try_from(offset).map_or(len, |o| o.min(len));
        let end = start.saturating_add(size).min(len);
        &self.data[start..end]
    }
}

/// Open handles of the file system. Handle ids start at 1 (0 means "no handle" in FUSE) and
/// are never reused within one mount.
#[derive(Debug)]
pub struct HandleTable<H = Snapshot> {
    map: DashMap<u64, H, BuildHasherDefault<IdHasher>>,
    next: AtomicU64,
}

impl<H> Default for HandleTable<H> {
    fn default() -> Self {
        HandleTable::new()
    }
}

impl<H> HandleTable<H> {
    pub fn new() -> HandleTable<H> {
        HandleTable { map: DashMap::with_hasher(Default::default()), next: AtomicU64::new(1) }
    }

    /// Stores a handle's state and returns its new id.
    pub fn insert(&self, handle: H) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.map.insert(id, handle);
        id
    }

    /// Runs `f` on the state of handle `id`, `None` if there is no such handle. The shard
    /// stays read-locked while `f` runs: keep `f` short (a copy into the reply).
    pub fn with<R>(&self, id: u64, f: impl FnOnce(&H) -> R) -> Option<R> {
        self.map.get(&id).map(|handle| f(&handle))
    }

    /// Runs `f` on the state of handle `id` for a change, `None` if there is no such handle.
    /// The shard stays write-locked while `f` runs: keep `f` shorter still (a swap and a
    /// copy), and render before.
    pub fn with_mut<R>(&self, id: u64, f: impl FnOnce(&mut H) -> R) -> Option<R> {
        self.map.get_mut(&id).map(|mut handle| f(&mut handle))
    }

    /// Drops handle `id`, returning its state.
    pub fn remove(&self, id: u64) -> Option<H> {
        self.map.remove(&id).map(|(_, handle)| handle)
    }

    /// Drops every handle (the connection is gone).
    pub fn clear(&self) {
        self.map.clear();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Hasher for handle ids: Fibonacci multiplicative hashing, which spreads sequential ids over
/// the high bits dashmap picks shards with. Ids are not attacker-chosen (we allocate them).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    #[test]
    fn insert_read_remove() {
        let table = HandleTable::new();
        assert!(table.is_empty());
        let a = table.insert(Snapshot::new(b"hello world".to_vec()));
        let b = table.insert(Snapshot::new(b"other".to_vec()));
        assert_ne!(a, 0);
        assert_ne!(a, b);
        assert_eq!(table.len(), 2);
        assert_eq!(table.with(a, |s| s.slice(6, 100).to_vec()), Some(b"world".to_vec()));
        let swapped = table.with_mut(b, |s| std::mem::replace(s, Snapshot::new(b"new".to_vec())));
        assert_eq!(swapped, Some(Snapshot::new(b"other".to_vec())));
        assert_eq!(table.with(b, |s| s.slice(0, 2).to_vec()), Some(b"ne".to_vec()));
        table.with_mut(b, |s| *s = Snapshot::new(b"other".to_vec()));
        assert_eq!(table.with(b, |s| s.slice(0, 2).to_vec()), Some(b"ot".to_vec()));
        assert_eq!(table.remove(a).map(|s| s.data.len()), Some(11));
        assert_eq!(table.remove(a), None);
        assert_eq!(table.with(a, |_| ()), None);
        assert_eq!(table.with_mut(a, |_| ()), None);
        assert_eq!(table.len(), 1);
        table.clear();
        assert!(table.is_empty());
        assert_eq!(table.with(b, |_| ()), None);
    }

    #[test]
    fn ids_are_never_zero_nor_reused() {
        let table: HandleTable = HandleTable::new();
        let mut seen = HashSet::new();
        for i in 0..1000 {
            let id = table.insert(Snapshot::new(vec![i as u8]));
            assert_ne!(id, 0);
            assert!(seen.insert(id), "id {id} reused");
            if i % 2 == 0 {
                table.remove(id);
            }
        }
        assert_eq!(table.len(), 500);
    }

    #[test]
    fn slices_at_offsets_reassemble_the_snapshot() {
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let snapshot = Snapshot::new(data.clone());
        for chunk in [1usize, 7, 64, 4096, 20_000] {
            let mut out = Vec::new();
            let mut offset = 0u64;
            loop {
                let part = snapshot.slice(offset, chunk);
                if part.is_empty() {
                    break;
                }
                out.extend_from_slice(part);
                offset += part.len() as u64;
            }
            assert_eq!(out, data, "chunk {chunk}");
        }
        assert!(snapshot.slice(10_000, 10).is_empty());
        assert!(snapshot.slice(u64::MAX, usize::MAX).is_empty());
        assert_eq!(snapshot.slice(9_999, usize::MAX).len(), 1);
        assert!(snapshot.slice(0, 0).is_empty());
    }

    #[test]
    fn concurrent_open_read_release() {
        let table: Arc<HandleTable> = Arc::new(HandleTable::new());
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let table = Arc::clone(&table);
                std::thread::spawn(move || {
                    for i in 0..2000u32 {
                        let body = format!("{t}:{i}").into_bytes();
                        let id = table.insert(Snapshot::new(body.clone()));
                        let got = table.with(id, |s| s.slice(0, usize::MAX).to_vec());
                        assert_eq!(got, Some(body));
                        assert!(table.remove(id).is_some());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(table.is_empty());
    }

    #[test]
    fn hasher_spreads_sequential_ids() {
        let shards: HashSet<u64> = (1..=64u64)
            .map(|id| {
                let mut h = IdHasher::default();
                h.write_u64(id);
                h.finish() >> 58 // top 6 bits, as a 64-shard map would use
            })
            .collect();
        assert!(shards.len() > 32, "only {} distinct shards", shards.len());
    }
}
