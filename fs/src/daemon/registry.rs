//! The registry of system containers: who is registered, when each counts as started, and
//! which pid namespace is whose.
//!
//! In memory it is two sharded maps: id -> container, and pid namespace -> when it counts as
//! started (the FUSE workers' lookup, which takes no lock). Every change is written to
//! `STATE_DIR/containers.json` (temp file, fsync, rename) before it takes effect, so a
//! registration that was acknowledged survives a daemon restart, and a change that cannot be
//! saved is refused without changing anything.
//!
//! A container's init is identified by its pid *and* its start time (/proc/PID/stat field
//! 22), recorded at registration: a pid reused by another process is never mistaken for it.
//! Containers whose init is gone are dropped when the state is loaded and by
//! [`Registry::sweep`] (run periodically by the daemon); the state file also records the
//! boot it was written in, and a file from another boot keeps nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sysvisor_proto::Container;

use super::clock;
use crate::caller::{pidns, NsStartTimes};
use crate::sysctl::identity::{ContainerRef, Containers};

/// Name of the state file in the state directory.
pub const STATE_FILE: &str = "containers.json";
/// Version of the state file's format.
pub const STATE_VERSION: u32 = 1;
/// The longest container id accepted.
pub const MAX_ID_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot create the state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the state file {path}: {source}; starting with no containers")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state file {path} is not a valid registry ({source}); starting with no containers, the file is kept as {kept}")]
    Corrupt {
        path: PathBuf,
        kept: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("state file {path} has format version {found}, this daemon reads version {STATE_VERSION}; starting with no containers, the file is kept as {kept}")]
    Version { path: PathBuf, found: u32, kept: String },
    #[error("cannot save the registry to {path}: {source}")]
    Save {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid container id {id:?}: {reason}")]
    BadId { id: String, reason: &'static str },
    #[error("init process {pid} of container {id} does not exist")]
    NoInit { id: String, pid: u32 },
    #[error("init process {pid} of container {id} is in the daemon's own pid namespace: a system container needs its own")]
    HostPidNamespace { id: String, pid: u32 },
}

/// A process as the registry identifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcIdentity {
    /// Start time in clock ticks since boot.
    pub start_ticks: u64,
    /// Pid namespace (nsfs inode number).
    pub pid_ns: u64,
}

/// What the registry asks the host: a trait so that tests can play the host.
pub trait Processes: Send + Sync {
    /// Process `pid` (host pid namespace), if it exists.
    fn identity(&self, pid: u32) -> Option<ProcIdentity>;
    /// The daemon's own pid namespace.
    fn own_pid_ns(&self) -> Option<u64>;
    /// An id of the current boot.
    fn boot_id(&self) -> Option<String>;
}

/// The running host, through /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostProcesses;

impl Processes for HostProcesses {
    fn identity(&self, pid: u32) -> Option<ProcIdentity> {
        if pid == 0 {
            return None;
        }
        let start_ticks = pidns::start_ticks(pid)?;
        let pid_ns = pidns::pid_ns_of(pid).ok()?;
        Some(ProcIdentity { start_ticks, pid_ns })
    }

    fn own_pid_ns(&self) -> Option<u64> {
        pidns::pid_ns_of(std::process::id()).ok()
    }

    fn boot_id(&self) -> Option<String> {
        let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        Some(id.trim().to_string()).filter(|id| !id.is_empty())
    }
}

/// One container in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    container: Container,
    /// Start time of the init process (clock ticks since boot): with `init_pid`, its
    /// identity.
    init_start_ticks: u64,
    /// `created_unix_ms` in clock ticks since boot, converted at registration.
    start_ticks: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    #[serde(default)]
    boot_id: Option<String>,
    #[serde(default)]
    containers: Vec<Record>,
}

/// Only the version, to tell a newer format from garbage.
#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

struct Entry {
    record: Record,
    pid_ns: u64,
}

/// What the FUSE workers look up: a registered pid namespace.
#[derive(Debug, Clone)]
struct NsEntry {
    init_pid: u32,
    init_start_ticks: u64,
    start_ticks: u64,
    container: ContainerRef,
}

/// Called with the id of a container whose registration began or ended.
type ResetHook = Box<dyn Fn(&str) + Send + Sync>;

/// What [`Registry::open`] found in the state file.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Containers kept.
    pub loaded: usize,
    /// Ids of containers dropped because their init is gone (or from another boot).
    pub dropped: Vec<String>,
    /// Why the state file could not be used (already logged): the registry started empty.
    pub problem: Option<RegistryError>,
}

/// Whether a registration was new or replaced one with the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    New,
    Replaced,
}

/// The registry. Shared by the control server (changes), the housekeeping thread (sweeps)
/// and the FUSE workers (as the service's [`NsStartTimes`]).
pub struct Registry {
    entries: DashMap<String, Entry>,
    by_ns: DashMap<u64, NsEntry>,
    state_dir: PathBuf,
    processes: Arc<dyn Processes>,
    own_pid_ns: Option<u64>,
    boot_id: Option<String>,
    /// Held across every change and its save, so that the file always holds the latest
    /// state and the maps change only after the file did.
    writer: Mutex<()>,
    /// See [`Registry::on_reset`].
    reset_hooks: Mutex<Vec<ResetHook>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("state_dir", &self.state_dir)
            .field("containers", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Opens the registry kept in `state_dir` (created, mode 0700, if missing) on the running
    /// host. An unreadable or malformed state file is logged and the registry starts empty;
    /// only a state directory that cannot be created is an error.
    pub fn open(state_dir: &Path) -> Result<(Registry, LoadReport), RegistryError> {
        Registry::open_with(state_dir, Arc::new(HostProcesses))
    }

    /// As [`Registry::open`], asking `processes` about processes.
    pub fn open_with(
        state_dir: &Path,
        processes: Arc<dyn Processes>,
    ) -> Result<(Registry, LoadReport), RegistryError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|source| RegistryError::StateDir { path: state_dir.to_path_buf(), source })?;
        let registry = Registry {
            entries: DashMap::new(),
            by_ns: DashMap::new(),
            state_dir: state_dir.to_path_buf(),
            own_pid_ns: processes.own_pid_ns(),
            boot_id: processes.boot_id(),
            processes,
            writer: Mutex::new(()),
            reset_hooks: Mutex::new(Vec::new()),
        };
        let report = registry.load();
        Ok((registry, report))
    }

    /// The state file.
    pub fn state_path(&self) -> PathBuf {
        self.state_dir.join(STATE_FILE)
    }

    fn load(&self) -> LoadReport {
        let _writer = self.writer.lock();
        let path = self.state_path();
        let mut report = LoadReport::default();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                tracing::info!(path = %path.display(), "no state file: starting with no containers");
                return report;
            }
            Err(source) => {
                let err = RegistryError::Read { path, source };
                tracing::error!("{err}");
                report.problem = Some(err);
                return report;
            }
        };
        let file = match serde_json::from_slice::<StateFile>(&bytes) {
            Ok(file) if file.version == STATE_VERSION => file,
            Ok(file) => {
                let kept = self.set_aside(&path);
                let err = RegistryError::Version { path, found: file.version, kept };
                tracing::error!("{err}");
                report.problem = Some(err);
                return report;
            }
            Err(source) => {
                let kept = self.set_aside(&path);
                let err = match serde_json::from_slice::<VersionOnly>(&bytes) {
                    Ok(v) if v.version != STATE_VERSION => {
                        RegistryError::Version { path, found: v.version, kept }
                    }
                    _ => RegistryError::Corrupt { path, kept, source },
                };
                tracing::error!("{err}");
                report.problem = Some(err);
                return report;
            }
        };
        let other_boot =
            matches!((&file.boot_id, &self.boot_id), (Some(then), Some(now)) if then != now);
        for record in file.containers {
            let id = record.container.id.clone();
            let alive = if other_boot || validate_id(&id).is_err() {
                None
            } else {
                self.processes
                    .identity(record.container.init_pid)
                    .filter(|p| p.start_ticks == record.init_start_ticks)
            };
            match alive {
                Some(process) => {
                    self.entries.insert(id, Entry { record, pid_ns: process.pid_ns });
                }
                None => report.dropped.push(id),
            }
        }
        let namespaces: Vec<u64> = self.entries.iter().map(|e| e.pid_ns).collect();
        for ns in namespaces {
            self.reindex(ns);
        }
        report.loaded = self.entries.len();
        if other_boot {
            tracing::info!(
                dropped = report.dropped.len(),
                "state file from a previous boot: no container survived"
            );
        }
        for id in &report.dropped {
            tracing::info!(container = %id, "dropped: its init process is gone");
        }
        tracing::info!(path = %path.display(), containers = report.loaded, "registry loaded");
        if !report.dropped.is_empty() {
            if let Err(err) = self.save(&self.records()) {
                tracing::warn!("{err}");
            }
        }
        report
    }

    /// Moves an unusable state file out of the way (the next save would overwrite it) and
    /// says where it went.
    fn set_aside(&self, path: &Path) -> String {
        let aside = self.state_dir.join(format!("{STATE_FILE}.bad-{}", clock::now_unix_ms()));
        match fs::rename(path, &aside) {
            Ok(()) => aside.display().to_string(),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "cannot move the bad state file aside");
                path.display().to_string()
            }
        }
    }

    /// Registers `container`, replacing a registration with the same id (`docker start`
    /// creates the same id again). Its init must exist and be in a pid namespace of its own.
    pub fn register(&self, container: Container) -> Result<Registered, RegistryError> {
        validate_id(&container.id)?;
        let (id, pid) = (container.id.clone(), container.init_pid);
        let process = self
            .processes
            .identity(pid)
            .ok_or_else(|| RegistryError::NoInit { id: id.clone(), pid })?;
        if Some(process.pid_ns) == self.own_pid_ns {
            return Err(RegistryError::HostPidNamespace { id, pid });
        }
        let start_ticks = clock::unix_ms_to_boot_ticks(container.created_unix_ms);
        let record = Record { container, init_start_ticks: process.start_ticks, start_ticks };

        let writer = self.writer.lock();
        let mut records = self.records();
        records.retain(|r| r.container.id != id);
        records.push(record.clone());
        self.save(&records)?;
        let previous = self.entries.insert(id.clone(), Entry { record, pid_ns: process.pid_ns });
        if let Some(previous) = &previous {
            if previous.pid_ns != process.pid_ns {
                self.reindex(previous.pid_ns);
            }
        }
        self.reindex(process.pid_ns);
        drop(writer);
        // A registration is a new life of the container (create, or start after stop):
        // nothing of a previous one carries over.
        self.reset(&id);
        Ok(if previous.is_some() { Registered::Replaced } else { Registered::New })
    }

    /// Forgets container `id`; `Ok(false)` if it was not registered (not an error: `delete`
    /// may run more than once).
    pub fn unregister(&self, id: &str) -> Result<bool, RegistryError> {
        let writer = self.writer.lock();
        if !self.entries.contains_key(id) {
            return Ok(false);
        }
        let mut records = self.records();
        records.retain(|r| r.container.id != id);
        self.save(&records)?;
        if let Some((_, entry)) = self.entries.remove(id) {
            self.reindex(entry.pid_ns);
        }
        drop(writer);
        self.reset(id);
        Ok(true)
    }

    /// Runs `hook` with the id of every container whose registration begins (`register`)
    /// or ends (`unregister`, sweeps, loads that drop it): the per-container state kept
    /// elsewhere (emulated sysctls) must start afresh or go. Hooks run without the
    /// registry's lock held.
    pub fn on_reset(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        self.reset_hooks.lock().push(Box::new(hook));
    }

    fn reset(&self, id: &str) {
        for hook in self.reset_hooks.lock().iter() {
            hook(id);
        }
    }

    /// Whether container `id` is registered.
    pub fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    /// Drops the containers whose init process is gone; returns their ids. The change is
    /// saved; if that fails it is logged (the next load drops them again).
    pub fn sweep(&self) -> Vec<String> {
        let inits: Vec<(String, u32, u64)> = self
            .entries
            .iter()
            .map(|e| (e.key().clone(), e.record.container.init_pid, e.record.init_start_ticks))
            .collect();
        let dead: Vec<(String, u32, u64)> = inits
            .into_iter()
            .filter(|(_, pid, start)| {
                !matches!(self.processes.identity(*pid), Some(p) if p.start_ticks == *start)
            })
            .collect();
        if dead.is_empty() {
            return Vec::new();
        }
        let writer = self.writer.lock();
        let mut dropped = Vec::new();
        for (id, pid, start) in dead {
            // Unless re-registered (another init) in the meantime.
            let removed = self.entries.remove_if(&id, |_, e| {
                e.record.container.init_pid == pid && e.record.init_start_ticks == start
            });
            if let Some((id, entry)) = removed {
                self.reindex(entry.pid_ns);
                tracing::info!(container = %id, init_pid = pid, "dropped: its init process is gone");
                dropped.push(id);
            }
        }
        if !dropped.is_empty() {
            if let Err(err) = self.save(&self.records()) {
                tracing::warn!("{err}");
            }
        }
        drop(writer);
        for id in &dropped {
            self.reset(id);
        }
        dropped
    }

    /// The registered containers, by id.
    pub fn list(&self) -> Vec<Container> {
        self.records().into_iter().map(|r| r.container).collect()
    }

    /// Number of registered containers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every record, by id.
    fn records(&self) -> Vec<Record> {
        let mut records: Vec<Record> = self.entries.iter().map(|e| e.record.clone()).collect();
        records.sort_by(|a, b| a.container.id.cmp(&b.container.id));
        records
    }

    /// Recomputes what namespace `ns` maps to: several containers may share one (`--pid
    /// container:X`); the namespace counts from the earliest of them.
    fn reindex(&self, ns: u64) {
        let earliest = self
            .entries
            .iter()
            .filter(|e| e.pid_ns == ns)
            .map(|e| NsEntry {
                init_pid: e.record.container.init_pid,
                init_start_ticks: e.record.init_start_ticks,
                start_ticks: e.record.start_ticks,
                container: ContainerRef {
                    id: e.record.container.id.clone(),
                    uid_base: e.record.container.uid_base,
                    gid_base: e.record.container.gid_base,
                    id_count: e.record.container.id_count,
                },
            })
            .min_by_key(|n| n.start_ticks);
        match earliest {
            Some(entry) => {
                self.by_ns.insert(ns, entry);
            }
            None => {
                self.by_ns.remove(&ns);
            }
        }
    }

    fn save(&self, records: &[Record]) -> Result<(), RegistryError> {
        let path = self.state_path();
        let mut containers = records.to_vec();
        containers.sort_by(|a, b| a.container.id.cmp(&b.container.id));
        let file = StateFile { version: STATE_VERSION, boot_id: self.boot_id.clone(), containers };
        let save_error = |source| RegistryError::Save { path: path.clone(), source };
        let mut bytes =
            serde_json::to_vec_pretty(&file).map_err(|e| save_error(io::Error::other(e)))?;
        bytes.push(b'\n');
        write_atomically(&path, &bytes).map_err(save_error)
    }
}

impl NsStartTimes for Registry {
    /// When the registered container owning pid namespace `pid_ns` was created, if its init
    /// is still the process that was registered (a namespace inode number is reused once the
    /// namespace is gone).
    fn ns_start_ticks(&self, pid_ns: u64) -> Option<u64> {
        self.live_ns(pid_ns).map(|entry| entry.start_ticks)
    }
}

impl Containers for Registry {
    /// The registered container owning pid namespace `pid_ns` (the earliest, if several
    /// share it), if its init is still the process that was registered.
    fn by_pid_ns(&self, pid_ns: u64) -> Option<ContainerRef> {
        self.live_ns(pid_ns).map(|entry| entry.container)
    }
}

impl crate::fuse::ContainerInits for Registry {
    fn init(&self, id: &str) -> Option<crate::fuse::own::ContainerInit> {
        self.entries.get(id).map(|entry| crate::fuse::own::ContainerInit {
            pid: entry.record.container.init_pid,
            cgroup: entry.record.container.cgroup.clone(),
            root: (entry.record.container.uid_base, entry.record.container.gid_base),
        })
    }

    fn ids(&self) -> Vec<String> {
        self.entries.iter().map(|entry| entry.key().clone()).collect()
    }
}

impl Registry {
    /// The entry of pid namespace `pid_ns` if its init is still the registered process (a
    /// namespace inode number is reused once the namespace is gone).
    fn live_ns(&self, pid_ns: u64) -> Option<NsEntry> {
        let entry = self.by_ns.get(&pid_ns)?.clone();
        let expected = ProcIdentity { start_ticks: entry.init_start_ticks, pid_ns };
        (self.processes.identity(entry.init_pid) == Some(expected)).then_some(entry)
    }
}

fn validate_id(id: &str) -> Result<(), RegistryError> {
    let bad = |reason| Err(RegistryError::BadId { id: id.chars().take(80).collect(), reason });
    if id.is_empty() {
        return bad("empty");
    }
    if id.len() > MAX_ID_LEN {
        return bad("longer than 1024 bytes");
    }
    if id.chars().any(char::is_control) {
        return bad("contains control characters");
    }
    Ok(())
}

/// Writes `bytes` to `path` so that a reader (or a crash) sees either the old file or the
/// new one: a temp file in the same directory, fsynced, renamed over `path`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file =
            OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    // Makes the rename itself durable; the new state is in place either way.
    if let Err(err) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), error = %err, "cannot fsync the state directory");
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::host::clock_ticks;
    use std::collections::HashMap;

    /// A host whose processes the test decides.
    #[derive(Debug, Default)]
    pub(crate) struct FakeProcesses {
        pub procs: Mutex<HashMap<u32, ProcIdentity>>,
        pub boot: Mutex<Option<String>>,
    }

    /// The daemon's own pid namespace in [`FakeProcesses`].
    pub(crate) const OWN_NS: u64 = 1;

    impl FakeProcesses {
        pub(crate) fn new() -> Arc<FakeProcesses> {
            let fake = FakeProcesses::default();
            *fake.boot.lock() = Some("boot-1".into());
            Arc::new(fake)
        }

        /// Process `pid`, started at tick `start`, in namespace `ns`.
        pub(crate) fn spawn(&self, pid: u32, start: u64, ns: u64) {
            self.procs.lock().insert(pid, ProcIdentity { start_ticks: start, pid_ns: ns });
        }

        pub(crate) fn kill(&self, pid: u32) {
            self.procs.lock().remove(&pid);
        }
    }

    impl Processes for FakeProcesses {
        fn identity(&self, pid: u32) -> Option<ProcIdentity> {
            self.procs.lock().get(&pid).copied()
        }
        fn own_pid_ns(&self) -> Option<u64> {
            Some(OWN_NS)
        }
        fn boot_id(&self) -> Option<String> {
            self.boot.lock().clone()
        }
    }

    pub(crate) fn container(id: &str, init_pid: u32, created_unix_ms: u64) -> Container {
        Container {
            id: id.into(),
            init_pid,
            uid_base: 100_000,
            gid_base: 100_000,
            id_count: 65536,
            cgroup: Some(format!("/sysvisor/{id}")),
            created_unix_ms,
        }
    }

    fn open(dir: &Path, fake: &Arc<FakeProcesses>) -> (Registry, LoadReport) {
        Registry::open_with(dir, fake.clone()).expect("open registry")
    }

    fn ids(registry: &Registry) -> Vec<String> {
        registry.list().into_iter().map(|c| c.id).collect()
    }

    /// The wall-clock time (Unix ms) `ms` after this host booted. A time before boot counts
    /// as boot (tick 0), so tests that compare start ticks register times after boot, also
    /// on a host up for a few seconds.
    fn after_boot(ms: u64) -> u64 {
        let up = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).unwrap();
        let up_ms = std::time::Duration::from(up).as_millis() as u64;
        clock::now_unix_ms() - up_ms + ms
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn persist_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state/fs");
        let fake = FakeProcesses::new();
        fake.spawn(10, 500, 100);
        fake.spawn(20, 600, 200);
        // An hour apart, both after boot whatever the host's uptime (b may be in the future).
        let (at_a, at_b) = (after_boot(60_000), after_boot(60_000 + 3_600_000));
        let (registry, report) = open(&state, &fake);
        assert!(report.problem.is_none() && report.loaded == 0);
        assert_eq!(registry.register(container("b", 20, at_b)).unwrap(), Registered::New);
        assert_eq!(registry.register(container("a", 10, at_a)).unwrap(), Registered::New);
        let ticks_a = registry.ns_start_ticks(100).expect("ns 100 registered");
        let ticks_b = registry.ns_start_ticks(200).expect("ns 200 registered");
        let hz = clock_ticks();
        assert!(ticks_b.abs_diff(ticks_a + 3600 * hz) <= 1, "{ticks_a} {ticks_b}");
        assert_eq!(registry.ns_start_ticks(300), None);

        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(
            fs::metadata(registry.state_path()).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Only the state file: no temp file left behind.
        assert_eq!(files_in(&state), [STATE_FILE]);
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(registry.state_path()).unwrap()).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["containers"][0]["id"], "a");
        assert_eq!(json["containers"][0]["init_pid"], 10);
        assert_eq!(json["containers"][0]["init_start_ticks"], 500);

        let (reloaded, report) = open(&state, &fake);
        assert!(report.problem.is_none(), "{:?}", report.problem);
        assert_eq!((report.loaded, report.dropped.len()), (2, 0));
        assert_eq!(reloaded.list(), registry.list());
        assert_eq!(reloaded.list()[0], container("a", 10, at_a));
        assert_eq!(reloaded.ns_start_ticks(100), Some(ticks_a));
        assert_eq!(reloaded.ns_start_ticks(200), Some(ticks_b));
    }

    #[test]
    fn register_of_an_existing_id_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeProcesses::new();
        fake.spawn(10, 500, 100);
        fake.spawn(11, 900, 101);
        let (registry, _) = open(dir.path(), &fake);
        registry.register(container("c", 10, 1000)).unwrap();
        // `docker start`: same id, new init, new namespace, new creation time.
        fake.kill(10);
        assert_eq!(registry.register(container("c", 11, 2000)).unwrap(), Registered::Replaced);
        assert_eq!(registry.list(), [container("c", 11, 2000)]);
        assert_eq!(registry.ns_start_ticks(100), None);
        assert!(registry.ns_start_ticks(101).is_some());
        let (reloaded, _) = open(dir.path(), &fake);
        assert_eq!(reloaded.list(), [container("c", 11, 2000)]);
    }

    #[test]
    fn unregister_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeProcesses::new();
        fake.spawn(10, 500, 100);
        let (registry, _) = open(dir.path(), &fake);
        assert!(!registry.unregister("never-registered").unwrap());
        registry.register(container("c", 10, 1000)).unwrap();
        assert!(registry.unregister("c").unwrap());
        assert!(!registry.unregister("c").unwrap());
        assert!(registry.is_empty());
        assert_eq!(registry.ns_start_ticks(100), None);
        let (reloaded, report) = open(dir.path(), &fake);
        assert!(reloaded.is_empty() && report.problem.is_none());
    }

    #[test]
    fn registration_needs_a_live_init_in_its_own_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeProcesses::new();
        fake.spawn(10, 500, OWN_NS);
        let (registry, _) = open(dir.path(), &fake);
        let err = registry.register(container("c", 42, 0)).unwrap_err();
        assert!(matches!(err, RegistryError::NoInit { pid: 42, .. }), "{err}");
        assert_eq!(err.to_string(), "init process 42 of container c does not exist");
        let err = registry.register(container("c", 10, 0)).unwrap_err();
        assert!(matches!(err, RegistryError::HostPidNamespace { .. }), "{err}");
        for bad in ["", "a\nb", &"x".repeat(MAX_ID_LEN + 1)] {
            let err = registry.register(container(bad, 10, 0)).unwrap_err();
            assert!(matches!(err, RegistryError::BadId { .. }), "{err}");
        }
        assert!(registry.is_empty());
        assert!(!registry.state_path().exists(), "nothing to save");
    }

    /// Runs `f` with the log captured; returns what was logged.
    fn capture_logs(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl Write for Buffer {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber =
            tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer.0.lock().clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn garbage_state_file_is_logged_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeProcesses::new();
        fake.spawn(10, 500, 100);
        let path = dir.path().join(STATE_FILE);
        fs::write(&path, b"{\"version\": 1, \"containers\": [{\"id\": 3}").unwrap();
        let mut opened = None;
        let log = capture_logs(|| opened = Some(open(dir.path(), &fake)));
        let (registry, report) = opened.unwrap();
        assert!(registry.is_empty());
        let problem = report.problem.expect("a problem is reported");
        assert!(matches!(problem, RegistryError::Corrupt { .. }), "{problem}");
        let message = problem.to_string();
        assert!(
            message.contains(&path.display().to_string())
                && message.contains("starting with no containers"),
            "{message}"
        );
        assert!(log.contains("ERROR") && log.contains("is not a valid registry"), "log: {log}");
        // The bad file is kept aside for inspection, and the registry works.
        let names = files_in(dir.path());
        assert!(names.len() == 1 && names[0].starts_with("containers.json.bad-"), "{names:?}");
        registry.register(container("c", 10, 0)).unwrap();
        let (reloaded, report) = open(dir.path(), &fake);
        assert!(report.problem.is_none());
        assert_eq!(ids(&reloaded), ["c"]);

        // Binary garbage and a format from the future.
        for (bytes, future) in
            [(&b"\xff\x00garbage"[..], false), (&b"{\"version\": 7, \"containers\": {}}"[..], true)]
        {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(STATE_FILE), bytes).unwrap();
            let (registry, report) = open(dir.path(), &fake);
            assert!(registry.is_empty());
            match report.problem {
                Some(RegistryError::Version { found: 7, .. }) => assert!(future),
                Some(RegistryError::Corrupt { .. }) => assert!(!future),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn dead_inits_are_dropped_on_load_and_by_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeProcesses::new();
        fake.spawn(10, 500, 100);
        fake.spawn(20, 600, 200);
        fake.spawn(30, 700, 300);
        let (registry, _) = open(dir.path(), &fake);
        for (id, pid) in [("a", 10), ("b", 20), ("c", 30)] {
            registry.register(container(id, pid, 1000)).unwrap();
        }
        assert!(registry.sweep().is_empty());
        fake.kill(10);
        // The lookup checks the init at once; the sweep drops it.
        assert_eq!(registry.ns_start_ticks(100), None);
        assert_eq!(registry.sweep(), ["a"]);
        assert_eq!(ids(&registry), ["b", "c"]);
        // Pid 20 reused by another process: not the registered init.
        fake.spawn(20, 601, 200);
        assert_eq!(registry.ns_start_ticks(200), None);
        let (reloaded, report) = open(dir.path(), &fake);
        assert_eq!(report.dropped, ["b"]);
        assert_eq!(ids(&reloaded), ["c"]);
        // The drop was saved.
        let (again, report) = open(dir.path(), &fake);
        assert!(report.dropped.is_empty());
        assert_eq!(ids(&again), ["c"]);
    }

    #[test]
    fn state_from_another_boot_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeProcesses::new();
        fake.spawn(10, 500, 100);
        let (registry, _) = open(dir.path(), &fake);
        registry.register(container("c", 10, 1000)).unwrap();
        *fake.boot.lock() = Some("boot-2".into());
        let (reloaded, report) = open(dir.path(), &fake);
        assert!(reloaded.is_empty());
        assert_eq!(report.dropped, ["c"]);
    }

    #[test]
    fn a_change_that_cannot_be_saved_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeProcesses::new();
        fake.spawn(10, 500, 100);
        fake.spawn(20, 600, 200);
        let (registry, _) = open(dir.path(), &fake);
        registry.register(container("a", 10, 1000)).unwrap();
        // The state file's name taken by a directory: rename fails, even for root.
        fs::remove_file(registry.state_path()).unwrap();
        fs::create_dir(registry.state_path()).unwrap();
        let err = registry.register(container("b", 20, 1000)).unwrap_err();
        assert!(matches!(err, RegistryError::Save { .. }), "{err}");
        assert!(registry.unregister("a").is_err());
        assert_eq!(ids(&registry), ["a"]);
        assert_eq!(registry.ns_start_ticks(200), None);
        assert!(registry.ns_start_ticks(100).is_some());
        // An unreadable state file: logged, empty registry.
        let (reopened, report) = open(dir.path(), &fake);
        assert!(reopened.is_empty());
        assert!(matches!(report.problem, Some(RegistryError::Read { .. })));
        // No temp file left behind.
        assert_eq!(files_in(dir.path()), [STATE_FILE]);
    }

    #[test]
    fn containers_by_pid_namespace_and_reset_hooks() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeProcesses::new();
        fake.spawn(10, 500, 100);
        fake.spawn(20, 600, 200);
        let (registry, _) = open(dir.path(), &fake);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        registry.on_reset(move |id| log.lock().push(id.to_string()));
        registry.register(container("a", 10, 1000)).unwrap();
        registry.register(container("b", 20, 1000)).unwrap();
        let a = registry.by_pid_ns(100).expect("a by its pid namespace");
        assert_eq!(
            (a.id.as_str(), a.uid_base, a.gid_base, a.id_count),
            ("a", 100_000, 100_000, 65536)
        );
        assert_eq!(registry.by_pid_ns(300), None);
        assert!(registry.contains("a") && !registry.contains("c"));
        registry.unregister("a").unwrap();
        registry.unregister("a").unwrap();
        fake.kill(20);
        assert_eq!(registry.by_pid_ns(200), None, "a dead init is never matched");
        registry.sweep();
        assert_eq!(*seen.lock(), ["a", "b", "a", "b"]);
    }

    #[test]
    fn shared_namespace_counts_from_the_earliest_container() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeProcesses::new();
        fake.spawn(10, 500, 100);
        fake.spawn(11, 501, 100);
        let (registry, _) = open(dir.path(), &fake);
        registry.register(container("late", 11, after_boot(200_000))).unwrap();
        let late = registry.ns_start_ticks(100).unwrap();
        registry.register(container("early", 10, after_boot(100_000))).unwrap();
        let early = registry.ns_start_ticks(100).unwrap();
        assert!(early < late);
        registry.unregister("early").unwrap();
        assert_eq!(registry.ns_start_ticks(100), Some(late));
        registry.unregister("late").unwrap();
        assert_eq!(registry.ns_start_ticks(100), None);
    }
}
