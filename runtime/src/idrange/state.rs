//! The allocation record on disk and the lock around it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{IdRange, IdRangeError};

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";
const VERSION: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct State {
    pub version: u32,
    pub ranges: BTreeMap<String, Record>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Record {
    pub uid_base: u32,
    pub gid_base: u32,
    pub count: u32,
    /// The bundle given at the last allocation.
    pub bundle: PathBuf,
    /// The container exists while any of these does (the first one is the bundle).
    pub anchors: Vec<PathBuf>,
    /// Seconds since the epoch at the first allocation.
    pub allocated_at: u64,
}

impl Record {
    pub fn new(range: IdRange, anchors: Vec<PathBuf>) -> Record {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Record {
            uid_base: range.uid_base,
            gid_base: range.gid_base,
            count: range.count,
            bundle: anchors[0].clone(),
            anchors,
            allocated_at: now,
        }
    }

    pub fn range(&self) -> IdRange {
        IdRange { uid_base: self.uid_base, gid_base: self.gid_base, count: self.count }
    }

    fn gone(&self) -> bool {
        // symlink_metadata: a dangling symlink still counts as existing. Any error other
        // than "not found" (EACCES, EIO...) counts as existing too: never free on doubt.
        self.anchors.iter().all(
            |p| matches!(fs::symlink_metadata(p), Err(e) if e.kind() == io::ErrorKind::NotFound),
        )
    }
}

/// Liveness anchors of a container allocated with `bundle`: the bundle, the rootfs its
/// config.json names, and for Docker's overlay2 layout (`<layer>/merged`) the layer dir.
pub(crate) fn anchors_of(bundle: &Path) -> Vec<PathBuf> {
    let bundle = std::path::absolute(bundle).unwrap_or_else(|_| bundle.to_path_buf());
    let mut out = vec![bundle.clone()];
    let root = fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("root")?.get("path")?.as_str().map(PathBuf::from));
    if let Some(root) = root {
        let root = if root.is_absolute() { root } else { bundle.join(root) };
        if root.file_name().is_some_and(|n| n == "merged") {
            if let Some(layer) = root.parent().filter(|p| *p != bundle && *p != Path::new("/")) {
                out.push(layer.to_path_buf());
            }
        }
        out.push(root);
    }
    out.dedup();
    out
}

/// Removes every record whose container is gone for good; returns their ids.
pub(crate) fn reclaim(st: &mut State) -> Vec<String> {
    let gone: Vec<String> =
        st.ranges.iter().filter(|(_, rec)| rec.gone()).map(|(id, _)| id.clone()).collect();
    for id in &gone {
        st.ranges.remove(id);
    }
    gone
}

pub(crate) fn create_dir(dir: &Path) -> Result<(), IdRangeError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| IdRangeError::io(format!("creating {}", dir.display()), e))
}

/// Exclusive `flock` on the lock file, released on drop. Each acquisition opens the file
/// anew, so threads of one process exclude each other as processes do.
pub(crate) struct Lock {
    _file: fs::File,
}

impl Lock {
    pub fn acquire(dir: &Path) -> Result<Lock, IdRangeError> {
        let path = dir.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| IdRangeError::io(format!("opening {}", path.display()), e))?;
        loop {
            // SAFETY: flock on a descriptor we own; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(Lock { _file: file });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(IdRangeError::io(format!("locking {}", path.display()), e));
            }
        }
    }
}

/// Reads the state (empty when the file does not exist). Call with the lock held.
pub(crate) fn load(dir: &Path) -> Result<State, IdRangeError> {
    let path = dir.join(STATE_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(State { version: VERSION, ranges: BTreeMap::new() })
        }
        Err(e) => return Err(IdRangeError::io(format!("reading {}", path.display()), e)),
    };
    let corrupt = |detail: String| IdRangeError::CorruptState { path: path.clone(), detail };
    let st: State = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if st.version != VERSION {
        return Err(corrupt(format!("unknown version {}", st.version)));
    }
    let recs: Vec<(&String, IdRange)> = st.ranges.iter().map(|(k, r)| (k, r.range())).collect();
    for (i, (id, r)) in recs.iter().enumerate() {
        if !super::valid_container_id(id) {
            return Err(corrupt(format!("invalid container id {id:?}")));
        }
        if r.count == 0
            || u64::from(r.uid_base) + u64::from(r.count) > u64::from(u32::MAX)
            || u64::from(r.gid_base) + u64::from(r.count) > u64::from(u32::MAX)
        {
            return Err(corrupt(format!("invalid range for {id}: {r}")));
        }
        if st.ranges[*id].anchors.is_empty() {
            return Err(corrupt(format!("no anchors for {id}")));
        }
        for (other, o) in &recs[i + 1..] {
            if r.overlaps(o) {
                return Err(corrupt(format!("ranges of {id} ({r}) and {other} ({o}) overlap")));
            }
        }
    }
    Ok(st)
}

/// Replaces the state file atomically and durably. Call with the lock held.
pub(crate) fn save(dir: &Path, st: &State) -> Result<(), IdRangeError> {
    let path = dir.join(STATE_FILE);
    let mut data = serde_json::to_vec_pretty(st).expect("state serializes");
    data.push(b'\n');
    crate::atomic_file::replace(&path, &data, 0o600)
        .map_err(|e| IdRangeError::io(format!("writing {}", path.display()), e))
}
