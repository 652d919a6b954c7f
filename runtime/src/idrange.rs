//! Exclusive uid/gid ranges for system containers.
//!
//! Every system container gets its own slice of [`RANGE_SIZE`] host ids for its user
//! namespace (uid and gid), taken from a pool: the `sysvisor` entries of /etc/subuid and
//! /etc/subgid. The pool is cut into 65536-aligned slices; slot `i` is the `i`-th uid slice
//! together with the `i`-th gid slice.
//!
//! Allocations live on disk (`/var/lib/sysvisor/idranges/state.json`) and are changed only
//! under an exclusive `flock` on `/var/lib/sysvisor/idranges/lock`, so concurrent `create`s
//! (threads or processes) never get overlapping ranges, and allocations survive restarts of
//! everything. The state file is replaced atomically (temp file, fsync, rename).
//!
//! A container keeps its range across `runc delete` + `runc create` with the same id (what
//! `docker stop` + `docker start` does): its persistent upper layer holds files owned by that
//! range. A range goes back to the pool only through [`Allocator::release`] or
//! [`Allocator::reclaim`], which frees the ranges of containers gone for good: none of the
//! paths recorded at allocation still exists (see [`Allocator::allocate`]).

mod state;
pub mod subid;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use subid::ensure_subid_entries;

/// Number of uids (and gids) in one container's range.
pub const RANGE_SIZE: u32 = 65536;

/// Owner name of the pool's entries in /etc/subuid and /etc/subgid.
pub const SUBID_USER: &str = "sysvisor";

/// Pool size the install step asks for: 1024 containers.
pub const DEFAULT_POOL_COUNT: u32 = RANGE_SIZE * 1024;

/// Where [`Allocator::system`] keeps its state.
pub const SYSTEM_STATE_DIR: &str = "/var/lib/sysvisor/idranges";
pub const SYSTEM_SUBUID: &str = "/etc/subuid";
pub const SYSTEM_SUBGID: &str = "/etc/subgid";

/// A container's host id range: container uid `n` is host uid `uid_base + n` for
/// `n < count`, likewise for gids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IdRange {
    pub uid_base: u32,
    pub gid_base: u32,
    pub count: u32,
}

impl IdRange {
    /// Whether the uid intervals or the gid intervals of `self` and `other` intersect.
    pub fn overlaps(&self, other: &IdRange) -> bool {
        fn meet(a: u32, b: u32, n: u32, m: u32) -> bool {
            let (a, b, n, m) = (u64::from(a), u64::from(b), u64::from(n), u64::from(m));
            a < b + m && b < a + n
        }
        meet(self.uid_base, other.uid_base, self.count, other.count)
            || meet(self.gid_base, other.gid_base, self.count, other.count)
    }
}

/// The host ids that own the container root's files in the image layers on disk: 0 when
/// the engine gives the container no user namespace, Docker's remapped root (the first
/// ids of the `dockremap` subordinate ranges) under `userns-remap`. The rootfs shift maps
/// container id `n`'s files (`DiskRoot + n` on disk) to the container's own range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiskRoot {
    pub uid: u32,
    pub gid: u32,
}

impl DiskRoot {
    /// Layers owned by the host's own ids (no engine user namespace).
    pub const HOST: DiskRoot = DiskRoot { uid: 0, gid: 0 };
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "uids {}..{} gids {}..{}",
            self.uid_base,
            u64::from(self.uid_base) + u64::from(self.count),
            self.gid_base,
            u64::from(self.gid_base) + u64::from(self.count)
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdRangeError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no \"{SUBID_USER}\" entry in {}: run the sysvisor install (it adds \
         \"{SUBID_USER}:BASE:COUNT\" to /etc/subuid and /etc/subgid), or add such a line to \
         both files by hand, COUNT a multiple of {RANGE_SIZE}",
        file.display()
    )]
    MissingEntry { file: PathBuf },
    #[error("malformed line {line_no} in {}: {line:?} ({reason})", file.display())]
    BadEntry { file: PathBuf, line_no: usize, line: String, reason: String },
    #[error(
        "the \"{SUBID_USER}\" entries of {} and {} hold no complete {RANGE_SIZE}-aligned range \
         of {RANGE_SIZE} ids: raise their COUNT (the install uses {DEFAULT_POOL_COUNT})",
        subuid.display(),
        subgid.display()
    )]
    PoolTooSmall { subuid: PathBuf, subgid: PathBuf },
    #[error(
        "uid/gid pool exhausted: all {ranges} ranges of {RANGE_SIZE} ids from the \
         \"{SUBID_USER}\" entries of {} and {} are in use by system containers that still \
         exist; enlarge the pool by raising COUNT in the \"{SUBID_USER}\" lines of both files \
         (by a multiple of {RANGE_SIZE}; each {RANGE_SIZE} ids are one more container), or \
         remove containers no longer needed (docker rm)",
        subuid.display(),
        subgid.display()
    )]
    Exhausted { ranges: usize, subuid: PathBuf, subgid: PathBuf },
    #[error(
        "id range state {} is corrupt ({detail}); refusing to go on, since starting afresh \
         could hand out a range twice: repair it, or move it aside once no sysvisor container \
         exists any more",
        path.display()
    )]
    CorruptState { path: PathBuf, detail: String },
    #[error("invalid container id {0:?}: expected 1-1024 characters of [A-Za-z0-9_+.-]")]
    InvalidContainerId(String),
    #[error(
        "invalid pool size {0}: the pool must hold at least {RANGE_SIZE} ids and fit below 2^32"
    )]
    InvalidPoolSize(u64),
}

impl IdRangeError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        IdRangeError::Io { context: context.into(), source }
    }
}

/// Container ids as runc accepts them (`^[\w+-\.]+$`), minus "." and "..": they become
/// file names here and in [`crate::rootfs`].
pub fn valid_container_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'))
}

/// Hands out and records the ranges. Cheap to create; holds no lock between calls.
#[derive(Debug, Clone)]
pub struct Allocator {
    state_dir: PathBuf,
    subuid: PathBuf,
    subgid: PathBuf,
}

impl Allocator {
    /// The host's allocator: state in [`SYSTEM_STATE_DIR`], pool from /etc/subuid and
    /// /etc/subgid.
    pub fn system() -> Result<Allocator, IdRangeError> {
        Allocator::open(
            Path::new(SYSTEM_STATE_DIR),
            Path::new(SYSTEM_SUBUID),
            Path::new(SYSTEM_SUBGID),
        )
    }

    /// An allocator over `state_dir` (created 0700 when missing) and the given subid files.
    /// Fails when the files lack a `sysvisor` entry or the state is corrupt.
    pub fn open(state_dir: &Path, subuid: &Path, subgid: &Path) -> Result<Allocator, IdRangeError> {
        state::create_dir(state_dir)?;
        let allocator = Allocator {
            state_dir: state_dir.to_path_buf(),
            subuid: subuid.to_path_buf(),
            subgid: subgid.to_path_buf(),
        };
        allocator.pool()?;
        let _lock = state::Lock::acquire(&allocator.state_dir)?;
        state::load(&allocator.state_dir)?;
        Ok(allocator)
    }

    /// The range of `container_id`: the one it already has, or the lowest free slot of the
    /// pool. When the pool is full, first [`reclaim`](Self::reclaim)s ranges of containers
    /// gone for good, then fails with [`IdRangeError::Exhausted`].
    ///
    /// Recorded with the allocation, as the container's liveness anchors: `bundle`, the
    /// rootfs named by `bundle/config.json` (`root.path`) when it can be read, and for a
    /// Docker overlay2 rootfs (`.../overlay2/<layer>/merged`) the layer directory, which
    /// lives until `docker rm` (bundle and `merged` both vanish on `docker stop`). A later
    /// call for the same id refreshes the anchors.
    pub fn allocate(&self, container_id: &str, bundle: &Path) -> Result<IdRange, IdRangeError> {
        if !valid_container_id(container_id) {
            return Err(IdRangeError::InvalidContainerId(container_id.to_string()));
        }
        let anchors = state::anchors_of(bundle);
        let _lock = state::Lock::acquire(&self.state_dir)?;
        let mut st = state::load(&self.state_dir)?;
        if let Some(rec) = st.ranges.get_mut(container_id) {
            let range = rec.range();
            if rec.anchors != anchors {
                rec.bundle = anchors[0].clone();
                rec.anchors = anchors;
                state::save(&self.state_dir, &st)?;
            }
            return Ok(range);
        }
        let pool = self.pool()?;
        let range = match pool.first_free(&st) {
            Some(range) => range,
            None => {
                let freed = state::reclaim(&mut st);
                if !freed.is_empty() {
                    tracing::info!(containers = ?freed, "reclaimed id ranges of removed containers");
                    state::save(&self.state_dir, &st)?;
                }
                pool.first_free(&st).ok_or_else(|| IdRangeError::Exhausted {
                    ranges: pool.len(),
                    subuid: self.subuid.clone(),
                    subgid: self.subgid.clone(),
                })?
            }
        };
        st.ranges.insert(container_id.to_string(), state::Record::new(range, anchors));
        state::save(&self.state_dir, &st)?;
        Ok(range)
    }

    /// Returns `container_id`'s range to the pool (no-op when it has none).
    pub fn release(&self, container_id: &str) -> Result<(), IdRangeError> {
        let _lock = state::Lock::acquire(&self.state_dir)?;
        let mut st = state::load(&self.state_dir)?;
        if st.ranges.remove(container_id).is_some() {
            state::save(&self.state_dir, &st)?;
        }
        Ok(())
    }

    /// Frees the ranges of containers gone for good (none of their anchors exists any more)
    /// and returns their ids, so the caller can also drop what else they left
    /// (`rootfs::forget`).
    pub fn reclaim(&self) -> Result<Vec<String>, IdRangeError> {
        let _lock = state::Lock::acquire(&self.state_dir)?;
        let mut st = state::load(&self.state_dir)?;
        let freed = state::reclaim(&mut st);
        if !freed.is_empty() {
            state::save(&self.state_dir, &st)?;
        }
        Ok(freed)
    }

    /// Every allocation, sorted by container id.
    pub fn ranges(&self) -> Result<Vec<(String, IdRange)>, IdRangeError> {
        let _lock = state::Lock::acquire(&self.state_dir)?;
        let st = state::load(&self.state_dir)?;
        Ok(st.ranges.iter().map(|(id, rec)| (id.clone(), rec.range())).collect())
    }

    /// How many ranges the pool holds in all (allocated or not).
    pub fn capacity(&self) -> Result<usize, IdRangeError> {
        Ok(self.pool()?.len())
    }

    fn pool(&self) -> Result<subid::Pool, IdRangeError> {
        let uids = subid::slices(&self.subuid)?;
        let gids = subid::slices(&self.subgid)?;
        let pool = subid::Pool::new(uids, gids);
        if pool.len() == 0 {
            return Err(IdRangeError::PoolTooSmall {
                subuid: self.subuid.clone(),
                subgid: self.subgid.clone(),
            });
        }
        Ok(pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap() {
        let a = IdRange { uid_base: 65536, gid_base: 65536, count: 65536 };
        let mut b = IdRange { uid_base: 131072, gid_base: 131072, count: 65536 };
        assert!(!a.overlaps(&b));
        b.gid_base = 65536 + 65535;
        assert!(a.overlaps(&b));
        assert!(a.overlaps(&a));
    }

    #[test]
    fn container_ids() {
        assert!(valid_container_id("0123abcdef"));
        assert!(valid_container_id("my_ctr-1.2+x"));
        for bad in ["", ".", "..", "a/b", "a b", "a:b", "a,b", "é"] {
            assert!(!valid_container_id(bad), "{bad:?}");
        }
        assert!(!valid_container_id(&"a".repeat(1025)));
    }
}
