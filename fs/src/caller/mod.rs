//! Caller identification: from the pid in a FUSE request to the cgroups and pid namespace
//! whose view that process must see.
//!
//! Resolving a pid reads /proc/PID/{stat,cgroup,ns/pid}: several file opens. Callers read
//! many files in a row, so identities are cached per pid. A pid number can be reused once
//! its process is reaped, so each entry holds a pidfd: a cache hit first checks, with one
//! syscall, that the very process it was made for is still alive. Entries are re-read after
//! `refresh` so that a process moved to another cgroup soon sees its new view; the process
//! start time taken then must match the cached one, or the entry is rebuilt from scratch.
//!
//! In daemon mode an [`NsStartTimes`] source (the registry of containers) may know when a
//! pid namespace counts as started (its container's creation time); it is asked first, at
//! every lookup and refresh, and the namespace's init is the fallback.

pub mod pidfd;
pub mod pidns;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::cgroup::{CgroupError, ProcCgroups};
use pidfd::PidFd;
use pidns::NsInits;

/// The process a request comes from, as far as the views care.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Pid in the daemon's (the host's) pid namespace.
    pub pid: u32,
    /// Start time of the process in clock ticks since boot: with the pid, its identity.
    pub start_ticks: u64,
    /// The caller's cgroups, as /proc/PID/cgroup names them.
    pub cgroups: Arc<ProcCgroups>,
    /// A small number naming `cgroups`: callers in the same cgroups share it.
    pub cgroup_id: u64,
    /// The caller's pid namespace (nsfs inode number).
    pub pid_ns: u64,
    /// When the init process of the caller's pid namespace started, in clock ticks since
    /// boot (field 22 of /proc/PID/stat); `None` when the caller shares the host's pid
    /// namespace.
    pub ns_init_start_ticks: Option<u64>,
}

impl Caller {
    /// This caller as if it sat in `cgroup` wherever it sits below it (a container's init
    /// moved into `init.scope` by systemd, seen from the container's cgroup); `None` when
    /// no hierarchy places it below `cgroup`. The copy keeps `cgroup_id`: it must not key a
    /// cache.
    pub fn moved_up_to(&self, cgroup: &str) -> Option<Caller> {
        let top = cgroup.trim_end_matches('/');
        if top.is_empty() {
            return None;
        }
        let below = format!("{top}/");
        let mut cgroups = (*self.cgroups).clone();
        let mut moved = false;
        for entry in &mut cgroups.entries {
            if entry.path.starts_with(&below) {
                entry.path = top.to_string();
                moved = true;
            }
        }
        moved.then(|| Caller { cgroups: Arc::new(cgroups), ..self.clone() })
    }
}

/// Start times of pid namespaces known from elsewhere than their init process: in daemon
/// mode, the registry of containers.
pub trait NsStartTimes: Send + Sync + std::fmt::Debug {
    /// When pid namespace `pid_ns` (nsfs inode number) counts as started, in clock ticks
    /// since boot, if this source knows it.
    fn ns_start_ticks(&self, pid_ns: u64) -> Option<u64>;
}

#[derive(Debug, thiserror::Error)]
pub enum CallerError {
    #[error("process {pid} is gone")]
    Gone { pid: u32 },
    #[error("cgroups of process {pid}: {source}")]
    Cgroup {
        pid: u32,
        #[source]
        source: CgroupError,
    },
}

struct Cached {
    caller: Arc<Caller>,
    pidfd: PidFd,
    checked: Instant,
    /// `caller.ns_init_start_ticks` came from the [`NsStartTimes`] source, not the init.
    registered: bool,
}

/// Interns cgroup sets so that equal sets share one `Arc` and one small id.
#[derive(Default)]
struct Interner {
    ids: DashMap<Arc<ProcCgroups>, u64>,
    next: AtomicU64,
}

impl Interner {
    fn intern(&self, cgroups: ProcCgroups) -> (Arc<ProcCgroups>, u64) {
        if let Some(entry) = self.ids.get(&cgroups) {
            return (entry.key().clone(), *entry.value());
        }
        let cgroups = Arc::new(cgroups);
        let entry = self
            .ids
            .entry(cgroups.clone())
            .or_insert_with(|| self.next.fetch_add(1, Ordering::Relaxed));
        (entry.key().clone(), *entry.value())
    }

    /// Forgets sets that nobody but the interner holds any more.
    fn sweep(&self) {
        self.ids.retain(|set, _| Arc::strong_count(set) > 1);
    }
}

/// The pid -> [`Caller`] cache.
pub struct Callers {
    entries: DashMap<u32, Cached>,
    interner: Interner,
    ns_inits: NsInits,
    host_pid_ns: u64,
    refresh: Duration,
    ns_starts: Option<Arc<dyn NsStartTimes>>,
}

impl Callers {
    /// `refresh`: how long a cached identity is trusted before /proc is read again.
    pub fn new(refresh: Duration) -> std::io::Result<Callers> {
        Callers::with_ns_starts(refresh, None)
    }

    /// As [`Callers::new`]; a caller in a pid namespace that `ns_starts` knows gets that
    /// start time as `ns_init_start_ticks` instead of its namespace init's.
    pub fn with_ns_starts(
        refresh: Duration,
        ns_starts: Option<Arc<dyn NsStartTimes>>,
    ) -> std::io::Result<Callers> {
        Ok(Callers {
            entries: DashMap::new(),
            interner: Interner::default(),
            ns_inits: NsInits::new(),
            host_pid_ns: pidns::pid_ns_of(std::process::id())?,
            refresh,
            ns_starts,
        })
    }

    /// Who process `pid` is.
    pub fn resolve(&self, pid: u32) -> Result<Arc<Caller>, CallerError> {
        self.resolve_with(pid, false)
    }

    /// As [`Callers::resolve`], but an identity read afresh here is cached as already due
    /// for a refresh. For path lookups: runtimes bind-mount the views from a process that
    /// then joins the container's cgroup and execs the container's program under the same
    /// pid, so what a lookup saw must not be trusted by that program's first open.
    pub fn resolve_provisional(&self, pid: u32) -> Result<Arc<Caller>, CallerError> {
        self.resolve_with(pid, true)
    }

    fn resolve_with(&self, pid: u32, provisional: bool) -> Result<Arc<Caller>, CallerError> {
        let previous = match self.entries.get(&pid) {
            Some(entry) if entry.pidfd.is_alive() => {
                if entry.checked.elapsed() < self.refresh {
                    return Ok(entry.caller.clone());
                }
                Some((entry.caller.clone(), entry.registered))
            }
            _ => None,
        };
        let previous = previous.as_ref().map(|(caller, registered)| (&**caller, *registered));
        let mut cached = self.lookup(pid, previous)?;
        if provisional {
            cached.checked = Instant::now().checked_sub(self.refresh).unwrap_or(cached.checked);
        }
        let caller = cached.caller.clone();
        self.entries.insert(pid, cached);
        Ok(caller)
    }

    /// Reads the identity of `pid` from /proc. Everything read between opening the pidfd
    /// and the final liveness check belongs to one process. `previous`: the cached identity
    /// being refreshed, and whether its namespace start came from the [`NsStartTimes`].
    fn lookup(&self, pid: u32, previous: Option<(&Caller, bool)>) -> Result<Cached, CallerError> {
        let gone = || CallerError::Gone { pid };
        let pidfd = PidFd::open(pid).map_err(|_| gone())?;
        let start_ticks = pidns::start_ticks(pid).ok_or_else(gone)?;
        let cgroups = ProcCgroups::read(pid).map_err(|source| match source {
            CgroupError::Io { .. } => gone(),
            source => CallerError::Cgroup { pid, source },
        })?;
        let same_process = previous.filter(|(p, _)| p.start_ticks == start_ticks);
        let previous_registered = same_process.is_some_and(|(_, registered)| registered);
        let same_process = same_process.map(|(p, _)| p);
        let (cgroups, cgroup_id) = match same_process {
            Some(p) if *p.cgroups == cgroups => (p.cgroups.clone(), p.cgroup_id),
            _ => self.interner.intern(cgroups),
        };
        let (pid_ns, known_init) = match same_process {
            // A process cannot change its own pid namespace, nor its namespace its init.
            Some(p) => (p.pid_ns, (!previous_registered).then_some(p.ns_init_start_ticks)),
            None => (pidns::pid_ns_of(pid).map_err(|_| gone())?, None),
        };
        // A registration can come and go while the process lives: asked at every refresh.
        let registered = match &self.ns_starts {
            Some(source) if pid_ns != self.host_pid_ns => source.ns_start_ticks(pid_ns),
            _ => None,
        };
        let ns_init_start_ticks = match (registered, known_init) {
            (Some(ticks), _) => Some(ticks),
            (None, Some(known)) => known,
            (None, None) if pid_ns == self.host_pid_ns => None,
            (None, None) => self.ns_inits.init_start(pid_ns, pid),
        };
        if !pidfd.is_alive() {
            return Err(gone());
        }
        let caller = Caller { pid, start_ticks, cgroups, cgroup_id, pid_ns, ns_init_start_ticks };
        Ok(Cached {
            caller: Arc::new(caller),
            pidfd,
            checked: Instant::now(),
            registered: registered.is_some(),
        })
    }

    /// Drops the cached identity of `pid`, so that the next request reads it afresh.
    pub fn forget(&self, pid: u32) {
        self.entries.remove(&pid);
    }

    /// Drops entries of processes that have exited, and what only they used.
    pub fn sweep(&self) {
        self.entries.retain(|_, entry| entry.pidfd.is_alive());
        self.interner.sweep();
        self.ns_inits.sweep();
    }

    /// Number of cached processes.
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

    #[test]
    fn a_caller_below_a_cgroup_is_moved_up_to_it() {
        let text = "5:memory:/docker/c1/init.scope\n4:cpu,cpuacct:/docker/c1/init.scope\n\
                    1:name=systemd:/docker/c1/init.scope\n3:cpuset:/docker/c1\n0::/other\n";
        let caller = Caller {
            pid: 10,
            start_ticks: 1,
            cgroups: Arc::new(ProcCgroups::parse(text).unwrap()),
            cgroup_id: 7,
            pid_ns: 9,
            ns_init_start_ticks: None,
        };
        let moved = caller.moved_up_to("/docker/c1/").unwrap();
        let paths: Vec<&str> = moved.cgroups.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["/docker/c1", "/docker/c1", "/docker/c1", "/docker/c1", "/other"]);
        assert_eq!((moved.pid, moved.cgroup_id, moved.pid_ns), (10, 7, 9));
        // Already there, elsewhere, a mere name prefix, or the root: nothing to move.
        let at_top = Caller { cgroups: moved.cgroups.clone(), ..caller.clone() };
        assert!(at_top.moved_up_to("/docker/c1").is_none());
        assert!(caller.moved_up_to("/docker/c2").is_none());
        assert!(caller.moved_up_to("/docker/c").is_none());
        assert!(caller.moved_up_to("/").is_none());
    }

    #[test]
    fn resolves_self_in_host_namespace() {
        let callers = Callers::new(Duration::from_secs(60)).expect("callers");
        let me = callers.resolve(std::process::id()).expect("resolve self");
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.ns_init_start_ticks, None);
        let again = callers.resolve(std::process::id()).expect("resolve self again");
        assert!(Arc::ptr_eq(&me, &again), "second lookup is a cache hit");
    }

    /// Knows every namespace, the host's included.
    #[derive(Debug)]
    struct Everything(u64);

    impl NsStartTimes for Everything {
        fn ns_start_ticks(&self, _pid_ns: u64) -> Option<u64> {
            Some(self.0)
        }
    }

    #[test]
    fn host_namespace_ignores_registrations() {
        let source: Arc<dyn NsStartTimes> = Arc::new(Everything(42));
        let callers = Callers::with_ns_starts(Duration::ZERO, Some(source)).expect("callers");
        let me = callers.resolve(std::process::id()).expect("resolve self");
        assert_eq!(me.ns_init_start_ticks, None);
        // Refreshed (TTL zero): still the host's view.
        let again = callers.resolve(std::process::id()).expect("resolve self again");
        assert_eq!(again.ns_init_start_ticks, None);
    }

    #[test]
    fn provisional_identity_is_read_again_by_the_next_request() {
        let callers = Callers::new(Duration::from_secs(60)).expect("callers");
        let first = callers.resolve_provisional(std::process::id()).expect("provisional");
        let second = callers.resolve(std::process::id()).expect("resolve");
        assert!(!Arc::ptr_eq(&first, &second), "a provisional entry must be refreshed");
        let third = callers.resolve(std::process::id()).expect("resolve again");
        assert!(Arc::ptr_eq(&second, &third), "a refreshed entry is trusted for the TTL");
    }

    #[test]
    fn same_cgroups_share_an_id() {
        let callers = Callers::new(Duration::ZERO).expect("callers");
        let mut child = std::process::Command::new("sleep").arg("5").spawn().expect("spawn");
        let me = callers.resolve(std::process::id()).expect("resolve self");
        let other = callers.resolve(child.id()).expect("resolve child");
        child.kill().ok();
        child.wait().ok();
        assert_eq!(me.cgroups, other.cgroups);
        assert_eq!(me.cgroup_id, other.cgroup_id);
        assert!(Arc::ptr_eq(&me.cgroups, &other.cgroups));
    }

    #[test]
    fn reaped_process_is_gone_and_swept() {
        let callers = Callers::new(Duration::from_secs(60)).expect("callers");
        let mut child = std::process::Command::new("sleep").arg("5").spawn().expect("spawn");
        let pid = child.id();
        callers.resolve(pid).expect("resolve child");
        child.kill().ok();
        child.wait().ok();
        assert!(matches!(callers.resolve(pid), Err(CallerError::Gone { .. })));
        callers.sweep();
        assert!(callers.entries.get(&pid).is_none());
    }
}
