//! The values containers wrote to emulated entries, kept per container and, in daemon
//! mode, saved to `STATE_DIR/sysctl.json` so that they survive a restart of the daemon.
//!
//! Keys are paths below the mount point (`proc/sys/kernel/panic`), values the text the
//! kernel would print (no trailing newline). A change is saved (temp file, fsync, rename)
//! before it takes effect, under one writer lock: the file always holds the latest state,
//! and a change that cannot be saved is refused (EIO) without changing anything. A
//! container's values are dropped when it is unregistered or swept ([`Store::drop_container`]
//! and [`Store::retain`]); a file that cannot be read is logged, set aside and the store
//! starts empty.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use dashmap::DashMap;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::format::{Errno, Written};

/// Name of the state file in the daemon's state directory.
pub const STATE_FILE: &str = "sysctl.json";
/// Version of its format.
pub const STATE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    #[serde(default)]
    containers: BTreeMap<String, BTreeMap<String, String>>,
}

/// Emulated values by container id, then by path.
pub struct Store {
    values: DashMap<String, HashMap<String, String>>,
    file: Option<PathBuf>,
    writer: Mutex<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("file", &self.file)
            .field("containers", &self.values.len())
            .finish()
    }
}

impl Store {
    /// A store kept in memory only (standalone mode, tests).
    pub fn in_memory() -> Store {
        Store { values: DashMap::new(), file: None, writer: Mutex::new(()) }
    }

    /// The store saved in `dir/sysctl.json`, loaded from it if it exists.
    pub fn open(dir: &Path) -> Store {
        let path = dir.join(STATE_FILE);
        let store =
            Store { values: DashMap::new(), file: Some(path.clone()), writer: Mutex::new(()) };
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<StateFile>(&bytes) {
                Ok(file) if file.version == STATE_VERSION => {
                    for (id, values) in file.containers {
                        store.values.insert(id, values.into_iter().collect());
                    }
                    tracing::info!(path = %path.display(), containers = store.values.len(), "emulated sysctls loaded");
                }
                Ok(file) => set_aside(&path, &format!("format version {}", file.version)),
                Err(e) => set_aside(&path, &e.to_string()),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the emulated sysctls; starting with none")
            }
        }
        store
    }

    /// The state file, if the store is saved.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The value container `id` wrote to `key`, if any.
    pub fn get(&self, id: &str, key: &str) -> Option<String> {
        self.values.get(id)?.get(key).cloned()
    }

    /// Applies a write to `key` of container `id`: `write` gets the current value (the
    /// container's, else `initial()`) and says what to store. The new value is saved
    /// before it is used; a save failure is EIO and changes nothing.
    pub fn update(
        &self,
        id: &str,
        key: &str,
        initial: impl FnOnce() -> Result<String, Errno>,
        write: impl FnOnce(&str) -> Written,
    ) -> Result<usize, Errno> {
        let _writer = self.writer.lock();
        let current = match self.get(id, key) {
            Some(value) => value,
            None => initial()?,
        };
        let written = write(&current);
        if let Some(value) = written.value.filter(|v| *v != current) {
            let mut all = self.snapshot();
            all.entry(id.to_string()).or_default().insert(key.to_string(), value.clone());
            self.save(&all)?;
            self.values.entry(id.to_string()).or_default().insert(key.to_string(), value);
        }
        written.result
    }

    /// Forgets container `id` (unregistered, or its init is gone).
    pub fn drop_container(&self, id: &str) {
        self.retain(|other| other != id);
    }

    /// Keeps only the containers `keep` accepts.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let _writer = self.writer.lock();
        if self.values.iter().all(|e| keep(e.key())) {
            return;
        }
        let mut all = self.snapshot();
        all.retain(|id, _| keep(id));
        if let Err(errno) = self.save(&all) {
            tracing::warn!(errno, "cannot save the emulated sysctls after dropping containers");
        }
        self.values.retain(|id, _| keep(id));
    }

    /// Containers with values.
    pub fn containers(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.values.iter().map(|e| e.key().clone()).collect();
        ids.sort();
        ids
    }

    fn snapshot(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.values
            .iter()
            .map(|e| {
                (e.key().clone(), e.value().iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            })
            .collect()
    }

    fn save(&self, all: &BTreeMap<String, BTreeMap<String, String>>) -> Result<(), Errno> {
        let Some(path) = &self.file else { return Ok(()) };
        let file = StateFile { version: STATE_VERSION, containers: all.clone() };
        let result =
            serde_json::to_vec_pretty(&file).map_err(io::Error::other).and_then(|mut bytes| {
                bytes.push(b'\n');
                crate::daemon::registry::write_atomically(path, &bytes)
            });
        result.map_err(|e| {
            tracing::error!(path = %path.display(), error = %e, "cannot save the emulated sysctls");
            libc::EIO
        })
    }
}

fn set_aside(path: &Path, why: &str) {
    let aside = path.with_extension(format!("json.bad-{}", crate::daemon::clock::now_unix_ms()));
    let kept = match std::fs::rename(path, &aside) {
        Ok(()) => aside.display().to_string(),
        Err(_) => path.display().to_string(),
    };
    tracing::error!(path = %path.display(), kept, reason = why, "the emulated sysctls file is not valid; starting with none");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(value: &str) -> impl FnOnce(&str) -> Written + '_ {
        move |_| Written { value: Some(value.to_string()), result: Ok(value.len()) }
    }

    fn host() -> Result<String, Errno> {
        Ok("10".into())
    }

    #[test]
    fn values_persist_per_container_and_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path());
        assert_eq!(store.update("a", "proc/sys/kernel/panic", host, set("5")), Ok(1));
        assert_eq!(store.update("b", "proc/sys/kernel/panic", host, set("7")), Ok(1));
        assert_eq!(store.get("a", "proc/sys/kernel/panic").as_deref(), Some("5"));
        let reloaded = Store::open(dir.path());
        assert_eq!(reloaded.get("b", "proc/sys/kernel/panic").as_deref(), Some("7"));
        assert_eq!(reloaded.containers(), ["a", "b"]);
        reloaded.drop_container("a");
        assert_eq!(Store::open(dir.path()).containers(), ["b"]);
        reloaded.retain(|_| false);
        assert!(Store::open(dir.path()).containers().is_empty());
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [STATE_FILE], "no temp file left");
    }

    #[test]
    fn the_write_sees_the_current_value_and_errors_store_nothing() {
        let store = Store::in_memory();
        let mut seen = Vec::new();
        store
            .update("a", "k", host, |cur| {
                seen.push(cur.to_string());
                Written { value: None, result: Err(libc::EINVAL) }
            })
            .unwrap_err();
        assert_eq!(store.get("a", "k"), None);
        store.update("a", "k", host, set("3")).unwrap();
        store
            .update(
                "a",
                "k",
                || panic!("host not read again"),
                |cur| {
                    seen.push(cur.to_string());
                    Written { value: None, result: Ok(0) }
                },
            )
            .unwrap();
        assert_eq!(seen, ["10", "3"]);
        let err = store.update("a", "j", || Err(libc::ENOENT), set("1"));
        assert_eq!(err, Err(libc::ENOENT));
    }

    #[test]
    fn a_save_failure_changes_nothing_and_garbage_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path());
        store.update("a", "k", host, set("1")).unwrap();
        std::fs::remove_file(dir.path().join(STATE_FILE)).unwrap();
        std::fs::create_dir(dir.path().join(STATE_FILE)).unwrap();
        assert_eq!(store.update("a", "k", host, set("2")), Err(libc::EIO));
        assert_eq!(store.get("a", "k").as_deref(), Some("1"));
        std::fs::remove_dir(dir.path().join(STATE_FILE)).unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        let reopened = Store::open(dir.path());
        assert!(reopened.containers().is_empty());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.len() == 1 && names[0].starts_with("sysctl.json.bad-"), "{names:?}");
    }
}
