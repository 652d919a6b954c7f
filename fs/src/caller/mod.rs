//! Caller identification: from the pid in a FUSE request to the cgroups and pid namespace
//! whose view that process must see.
//!
//! Resolving a pid reads /proc/PID/{stat,cgroup,ns/pid}: several file opens. Callers read
//! many files in a row, so identities are cached per pid. A pid number can be reused once
//! its process is reaped, so each entry holds a pidfd: a cache hit first checks, with one
//! syscall, that the very process it was made for is still alive. Entries are re-read after
//! `refresh` so that a process moved to another cgroup soon sees its new view; the process
//! start time taken then must match the cached one, or the entry is rebuilt from scratch.

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
}

impl Callers {
    /// `refresh`: how long a cached identity is trusted before /proc is read again.
    pub fn new(refresh: Duration) -> std::io::Result<Callers> {
        Ok(Callers {
            entries: DashMap::new(),
            interner: Interner::default(),
            ns_inits: NsInits::new(),
            host_pid_ns: pidns::pid_ns_of(std::process::id())?,
            refresh,
        })
    }

    /// Who process `pid` is.
    pub fn resolve(&self, pid: u32) -> Result<Arc<Caller>, CallerError> {
        let previous = match self.entries.get(&pid) {
            Some(entry) if entry.pidfd.is_alive() => {
                if entry.checked.elapsed() < self.refresh {
                    return Ok(entry.caller.clone());
                }
                Some(entry.caller.clone())
            }
            _ => None,
        };
        let cached = self.lookup(pid, previous.as_deref())?;
        let caller = cached.caller.clone();
        self.entries.insert(pid, cached);
        Ok(caller)
    }

    /// Reads the identity of `pid` from /proc. Everything read between opening the pidfd
    /// and the final liveness check belongs to one process.
    fn lookup(&self, pid: u32, previous: Option<&Caller>) -> Result<Cached, CallerError> {
        let gone = || CallerError::Gone { pid };
        let pidfd = PidFd::open(pid).map_err(|_| gone())?;
        let start_ticks = pidns::start_ticks(pid).ok_or_else(gone)?;
        let cgroups = ProcCgroups::read(pid).map_err(|source| match source {
            CgroupError::Io { .. } => gone(),
            source => CallerError::Cgroup { pid, source },
        })?;
        let same_process = previous.filter(|p| p.start_ticks == start_ticks);
        let (cgroups, cgroup_id) = match same_process {
            Some(p) if *p.cgroups == cgroups => (p.cgroups.clone(), p.cgroup_id),
            _ => self.interner.intern(cgroups),
        };
        let (pid_ns, ns_init_start_ticks) = match same_process {
            // A process cannot change its own pid namespace.
            Some(p) => (p.pid_ns, p.ns_init_start_ticks),
            None => {
                let ns = pidns::pid_ns_of(pid).map_err(|_| gone())?;
                let init = if ns == self.host_pid_ns { None } else { self.ns_inits.init_start(ns, pid) };
                (ns, init)
            }
        };
        if !pidfd.is_alive() {
            return Err(gone());
        }
        let caller = Caller { pid, start_ticks, cgroups, cgroup_id, pid_ns, ns_init_start_ticks };
        Ok(Cached { caller: Arc::new(caller), pidfd, checked: Instant::now() })
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
    fn resolves_self_in_host_namespace() {
        let callers = Callers::new(Duration::from_secs(60)).expect("callers");
        let me = callers.resolve(std::process::id()).expect("resolve self");
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.ns_init_start_ticks, None);
        let again = callers.resolve(std::process::id()).expect("resolve self again");
        assert!(Arc::ptr_eq(&me, &again), "second lookup is a cache hit");
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
