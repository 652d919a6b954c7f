//! Request service: "process PID reads view V" -> bytes, and the dynamic trees.
//!
//! The path of one view request: identify the caller (cached per pid), look for a fresh
//! rendering of the view for the caller's cgroups (cached per cgroup set), and on a miss
//! run the view's generator. Requests below a mirror directory (`proc/sys`, ...) go to
//! [`Mirrors`]. A housekeeping thread samples load averages and sweeps the caches of
//! exited processes and stale renderings.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::cache::{ViewCache, ViewKey};
use crate::caller::{Caller, CallerError, Callers, NsStartTimes};
use crate::cgroup::{CgroupError, Cgroups};
use crate::host::HostProc;
use crate::loadavg::{LoadavgTracker, SAMPLE_INTERVAL};
use crate::sysctl::identity::Containers;
use crate::sysctl::store::Store;
use crate::sysctl::{Mirrors, MirrorsConfig};
use crate::views::sysinfo::Figures;
use crate::views::{Request, Scope, ViewError, ViewSpec, TABLE};

/// How the service is set up.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// How long a rendered view may be served again to callers with the same view, and
    /// how long a caller's identity is trusted before /proc is read again.
    pub cache_ttl: Duration,
    pub host: HostProc,
    /// Daemon mode: the registry of containers, which knows when the pid namespace of a
    /// registered container counts as started (its uptime). `None` (standalone `mount`):
    /// every pid namespace counts from its init.
    pub registry: Option<Arc<dyn NsStartTimes>>,
    /// Daemon mode: the registered containers, whose processes the dynamic trees serve
    /// read-write. `None` (standalone `mount`): every caller gets a read-only mirror.
    pub containers: Option<Arc<dyn Containers>>,
    /// The containers' emulated sysctls (saved in the state directory in daemon mode).
    pub sysctl_store: Arc<Store>,
}

impl ServiceConfig {
    /// The running host's /proc and /sys, with the given TTL, no registry.
    pub fn new(cache_ttl: Duration) -> ServiceConfig {
        ServiceConfig {
            cache_ttl,
            host: HostProc::system(),
            registry: None,
            containers: None,
            sysctl_store: Arc::new(Store::in_memory()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("no such view {0}")]
    NoSuchView(usize),
    #[error(transparent)]
    Caller(#[from] CallerError),
    #[error(transparent)]
    View(#[from] ViewError),
    #[error(transparent)]
    Setup(#[from] CgroupError),
    #[error("cannot set up the service: {0}")]
    Io(#[from] std::io::Error),
}

/// Shared by all FUSE workers.
pub struct Service {
    host: HostProc,
    cgroups: Arc<Cgroups>,
    callers: Callers,
    views: ViewCache,
    loadavg: LoadavgTracker,
    mirrors: Mirrors,
    stop: Mutex<bool>,
    wake: Condvar,
    housekeeper: Mutex<Option<JoinHandle<()>>>,
}

impl Service {
    /// Finds the host's cgroup mounts and starts the housekeeping thread.
    pub fn new(config: ServiceConfig) -> Result<Arc<Service>, ServiceError> {
        Service::with_cgroups(config, Cgroups::detect()?)
    }

    /// As [`Service::new`], with cgroup mounts given (fixture trees in tests).
    pub fn with_cgroups(
        config: ServiceConfig,
        cgroups: Cgroups,
    ) -> Result<Arc<Service>, ServiceError> {
        raise_fd_limit();
        let cgroups = Arc::new(cgroups);
        let mirrors = Mirrors::new(MirrorsConfig {
            host: config.host.clone(),
            containers: config.containers,
            store: config.sysctl_store,
            identity_ttl: config.cache_ttl,
        });
        let service = Arc::new(Service {
            host: config.host,
            mirrors,
            callers: Callers::with_ns_starts(config.cache_ttl, config.registry)?,
            views: ViewCache::new(config.cache_ttl),
            loadavg: LoadavgTracker::new(cgroups.clone()),
            cgroups,
            stop: Mutex::new(false),
            wake: Condvar::new(),
            housekeeper: Mutex::new(None),
        });
        let worker = service.clone();
        let handle = std::thread::Builder::new()
            .name("housekeeping".into())
            .spawn(move || worker.housekeep())?;
        *service.housekeeper.lock() = Some(handle);
        Ok(service)
    }

    /// The bytes of view `view` (an index into [`TABLE`]) as process `pid` must see them.
    pub fn content(&self, view: usize, pid: u32) -> Result<Vec<u8>, ServiceError> {
        self.content_for(view, pid, true)
    }

    /// View `view` of the container whose init is `pid`, rendered now (a container's own
    /// files keep their rendering for `--cache-ttl-ms` themselves): for the container's
    /// `cgroup` (as registered) when the init sits below it (systemd moves itself into
    /// `init.scope`), else for the init's own cgroups (then the per-caller cache gets it).
    pub fn container_content(
        &self,
        view: usize,
        pid: u32,
        cgroup: Option<&str>,
    ) -> Result<Vec<u8>, ServiceError> {
        let spec = TABLE.get(view).ok_or(ServiceError::NoSuchView(view))?;
        let caller = self.callers.resolve(pid)?;
        match cgroup.and_then(|cgroup| caller.moved_up_to(cgroup)) {
            Some(container) => {
                let request = Request {
                    host: &self.host,
                    cgroups: &self.cgroups,
                    caller: &container,
                    loadavg: &self.loadavg,
                };
                Ok((spec.generate)(&request)?)
            }
            None => self.content_for(view, pid, false),
        }
    }

    fn content_for(&self, view: usize, pid: u32, cached: bool) -> Result<Vec<u8>, ServiceError> {
        let spec = TABLE.get(view).ok_or(ServiceError::NoSuchView(view))?;
        let caller = self.callers.resolve(pid)?;
        match self.render(view, spec, &caller, cached) {
            // The cached identity may name a cgroup the process has since left and that
            // was then removed: read the identity afresh and try once more.
            Err(ViewError::Cgroup(CgroupError::Io { .. })) => {
                self.callers.forget(pid);
                let caller = self.callers.resolve(pid)?;
                Ok(self.render(view, spec, &caller, cached)?)
            }
            other => Ok(other?),
        }
    }

    /// `spec` for `caller`, from the cache when fresh and `cached`.
    fn render(
        &self,
        view: usize,
        spec: &ViewSpec,
        caller: &Caller,
        cached: bool,
    ) -> Result<Vec<u8>, ViewError> {
        let key = ViewKey {
            view,
            cgroup_id: caller.cgroup_id,
            pid_ns: match spec.scope {
                Scope::Cgroup => 0,
                Scope::CgroupAndPidNs => caller.pid_ns,
            },
        };
        if let Some(bytes) = self.views.get(&key).filter(|_| cached) {
            return Ok(bytes.to_vec());
        }
        let request =
            Request { host: &self.host, cgroups: &self.cgroups, caller, loadavg: &self.loadavg };
        let bytes = (spec.generate)(&request)?;
        self.views.insert(key, Arc::from(bytes.as_slice()));
        Ok(bytes)
    }

    /// sysinfo(2)'s figures for process `pid`, read back from its meminfo, uptime and
    /// loadavg views (see [`crate::views::sysinfo`]), so that they agree with the files.
    pub fn sysinfo(&self, pid: u32) -> Result<Figures, ServiceError> {
        let view = |path: &str| -> Result<String, ServiceError> {
            let index = TABLE.iter().position(|spec| spec.path == path).ok_or_else(|| {
                ServiceError::View(ViewError::Malformed {
                    path: path.into(),
                    reason: "not in the views table".into(),
                })
            })?;
            Ok(String::from_utf8_lossy(&self.content(index, pid)?).into_owned())
        };
        let (meminfo, uptime, loadavg) =
            (view("proc/meminfo")?, view("proc/uptime")?, view("proc/loadavg")?);
        Ok(crate::views::sysinfo::from_views(&meminfo, &uptime, &loadavg)?)
    }

    /// The id of the cgroup set process `pid` is in (`Caller::cgroup_id`): processes that
    /// share it see the same views.
    /// Meant for path lookups: see [`Callers::resolve_provisional`].
    pub fn cgroup_id(&self, pid: u32) -> Result<u64, ServiceError> {
        Ok(self.callers.resolve_provisional(pid)?.cgroup_id)
    }

    /// The dynamic trees.
    pub fn mirrors(&self) -> &Mirrors {
        &self.mirrors
    }

    /// Sizes of the caches: (callers, rendered views, load-tracked cgroups).
    pub fn cache_sizes(&self) -> (usize, usize, usize) {
        (self.callers.len(), self.views.len(), self.loadavg.len())
    }

    /// Stops the housekeeping thread. Requests may still be served afterwards.
    pub fn shutdown(&self) {
        *self.stop.lock() = true;
        self.wake.notify_all();
        if let Some(handle) = self.housekeeper.lock().take() {
            let _ = handle.join();
        }
    }

    fn housekeep(&self) {
        let mut stop = self.stop.lock();
        while !*stop {
            self.wake.wait_for(&mut stop, SAMPLE_INTERVAL);
            if *stop {
                break;
            }
            parking_lot::MutexGuard::unlocked(&mut stop, || {
                self.loadavg.sample_all();
                self.callers.sweep();
                self.views.sweep();
                self.mirrors.sweep();
            });
        }
    }
}

/// Cached callers each hold a pidfd; lift the soft fd limit to the hard one so a busy
/// host does not run the daemon out of descriptors.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            tracing::debug!(%err, "cannot raise the open file limit");
        }
    }
}
