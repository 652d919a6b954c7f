//! The transport: pre-mount checks, mount(2) through fuse-backend-rs [`FuseSession`], the
//! threads that serve requests, and shutdown.
//!
//! Requests reach the server one of two ways ([`Transport`]):
//! - /dev/fuse: one worker thread per CPU, each reading its own clone of the device with a
//!   blocking read(2) ([`super::devfuse`]: one idle worker woken per request);
//! - FUSE over io_uring ([`super::uring`]): one queue per CPU, served by a thread pinned to
//!   that CPU, so a request never waits for another CPU to wake up. The /dev/fuse workers
//!   run as well: FORGET and INTERRUPT still come that way, and the kernel falls back to it
//!   if it refuses the queues.
//!
//! Lifecycle, as driven by the binary:
//! 1. [`check_privileges`], [`check_mountpoint`], [`online_cpus`]: fail before touching
//!    anything;
//! 2. [`ShutdownSignals::block`] in the main thread before any other thread exists, so every
//!    thread inherits the mask and the signals are only ever taken by [`Mount::wait`];
//! 3. [`Mount::start`]: mount, answer INIT (by hand for io_uring), then spawn the workers
//!    (pinned to their CPUs);
//! 4. [`Mount::wait`]: until SIGINT/SIGTERM, or until a worker stops on its own (the file
//!    system was unmounted externally: ENODEV or ENOTCONN, or a transport error);
//! 5. [`Mount::stop`]: wake the workers, join them, unmount. Dropping a [`Mount`] does the
//!    same, so an error or a panic never leaves the file system mounted.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::thread::JoinHandleExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::FuseSession;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{sched_getaffinity, CpuSet};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{geteuid, Pid};

use super::uring::{self, Queues, UringError};
pub use super::worker::{opcode_name, RequestStats};
use super::worker::{RequestCounter, Shared, WORKER_EXIT_SIGNAL};
use super::FuseError;
use fuse_backend_rs::api::filesystem::FileSystem;

/// `fsname` of the mount (the "device" column of mountinfo).
pub const FSNAME: &str = "sysvisor-fs";
/// Subtype: the mount's file system type is `fuse.sysvisor-fs`.
pub const SUBTYPE: &str = "sysvisor-fs";
/// The FUSE device.
pub const FUSE_DEVICE: &str = "/dev/fuse";

/// Mounting needs root, and a usable FUSE device.
pub fn check_privileges() -> Result<(), FuseError> {
    let euid = geteuid();
    if !euid.is_root() {
        return Err(FuseError::NotRoot { euid: euid.as_raw() });
    }
    let no_device = |reason: String| FuseError::NoFuseDevice { path: FUSE_DEVICE, reason };
    match fs::metadata(FUSE_DEVICE) {
        Ok(meta) if meta.file_type().is_char_device() => {}
        Ok(_) => return Err(no_device("not a character device".into())),
        Err(err) => return Err(no_device(err.to_string())),
    }
    // Catches a missing module (ENODEV) or a device cgroup that denies it (EPERM).
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(FUSE_DEVICE)
        .map_err(|err| no_device(err.to_string()))?;
    Ok(())
}

/// Checks that `path` is an existing directory that is not already a mount point; returns
/// its canonical path (what gets mounted on and what mountinfo will show).
pub fn check_mountpoint(path: &Path) -> Result<PathBuf, FuseError> {
    let access = |source| FuseError::MountPointAccess { path: path.to_path_buf(), source };
    let meta = fs::metadata(path).map_err(access)?;
    if !meta.is_dir() {
        return Err(FuseError::NotADirectory { path: path.to_path_buf() });
    }
    let canonical = fs::canonicalize(path).map_err(access)?;
    if is_mount_point(&canonical, &meta) {
        return Err(FuseError::AlreadyMounted { path: canonical });
    }
    Ok(canonical)
}

/// A directory is a mount point if it is `/`, if it is on another device than its parent, or
/// if mountinfo lists it (this also catches bind mounts from the same device).
fn is_mount_point(canonical: &Path, meta: &fs::Metadata) -> bool {
    let Some(parent) = canonical.parent() else {
        return true;
    };
    if fs::metadata(parent).is_ok_and(|p| p.dev() != meta.dev()) {
        return true;
    }
    fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|info| mount_points(&info).any(|mp| Path::new(&mp) == canonical))
}

/// Mount points listed in a mountinfo text (fifth field, octal escapes decoded).
pub fn mount_points(mountinfo: &str) -> impl Iterator<Item = String> + '_ {
    mountinfo.lines().filter_map(|line| line.split(' ').nth(4).map(unescape_mountinfo))
}

/// Decodes mountinfo's `\ooo` escapes (space, tab, newline, backslash).
pub fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether this process is in the host's (initial) pid namespace, from the NSpid line of
/// /proc/self/status (a single pid: not nested). FUSE reports callers' pids in the namespace
/// of the mounter, and the service resolves them in the host's /proc. `None` if unknown.
pub fn in_host_pid_namespace() -> Option<bool> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let pids = status.lines().find_map(|line| line.strip_prefix("NSpid:"))?;
    Some(pids.split_whitespace().count() == 1)
}

/// The CPUs this process may run on, ascending: one worker each by default.
pub fn online_cpus() -> Result<Vec<usize>, FuseError> {
    let set = sched_getaffinity(Pid::from_raw(0)).map_err(FuseError::Affinity)?;
    Ok((0..CpuSet::count()).filter(|&cpu| set.is_set(cpu).unwrap_or(false)).collect())
}

/// SIGINT and SIGTERM (and the internal worker-exit wake-up), blocked in the calling thread
/// and in every thread it spawns afterwards, taken synchronously by [`Mount::wait`].
#[derive(Debug, Clone, Copy)]
pub struct ShutdownSignals {
    set: SigSet,
}

impl ShutdownSignals {
    /// Blocks the signals in the calling thread. Call it in the main thread before spawning
    /// any thread (workers, the service's background threads).
    pub fn block() -> Result<ShutdownSignals, FuseError> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        set.add(WORKER_EXIT_SIGNAL);
        set.thread_block().map_err(FuseError::Signal)?;
        Ok(ShutdownSignals { set })
    }

    fn wait(&self) -> Result<Signal, FuseError> {
        loop {
            match self.set.wait() {
                Ok(signal) => return Ok(signal),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(err) => return Err(FuseError::Signal(err)),
            }
        }
    }
}

/// Why [`Mount::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// SIGINT or SIGTERM.
    Signal(Signal),
    /// The workers stopped by themselves: the file system was unmounted externally (ENODEV)
    /// or the connection was aborted.
    Unmounted,
    /// A worker failed (transport error or panic); the others are stopped by [`Mount::stop`].
    WorkerFailed,
}

/// How requests reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// FUSE over io_uring when the kernel has it and it can be turned on, else /dev/fuse.
    Auto,
    /// FUSE over io_uring, or fail.
    Uring,
    /// /dev/fuse, read by one blocking worker per CPU on clones of the device (the name is
    /// kept from when the workers polled it with epoll).
    Epoll,
}

/// The transport a mount ended up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActiveTransport {
    /// FUSE over io_uring with this many queues (one per possible CPU).
    Uring { queues: usize },
    /// /dev/fuse; `fallback` says why when io_uring was wanted (`Transport::Auto`).
    Epoll { fallback: Option<String> },
}

impl ActiveTransport {
    pub fn name(&self) -> &'static str {
        match self {
            ActiveTransport::Uring { .. } => "uring",
            ActiveTransport::Epoll { .. } => "epoll",
        }
    }
}

/// A mounted file system and its workers. Dropping it stops the workers and unmounts.
pub struct Mount {
    mountpoint: PathBuf,
    signals: ShutdownSignals,
    session: Option<FuseSession>,
    workers: Vec<JoinHandle<RequestStats>>,
    queues: Option<Queues>,
    shared: Arc<Shared>,
    active: ActiveTransport,
    /// Requests served while starting (INIT, when answered here).
    startup: RequestStats,
}

impl Mount {
    /// Mounts `fs` on `mountpoint` (a checked, canonical directory) over `transport` and
    /// starts `threads` /dev/fuse workers, worker `i` pinned to `cpus[i % cpus.len()]`
    /// (unpinned if `cpus` is empty), plus the io_uring queues if used. `signals` (blocked
    /// in this thread, hence in the workers) are what [`Mount::wait`] waits for.
    pub fn start<F>(
        mountpoint: &Path,
        fs: F,
        cpus: &[usize],
        threads: usize,
        signals: &ShutdownSignals,
        transport: Transport,
    ) -> Result<Mount, FuseError>
    where
        F: FileSystem + Send + Sync + 'static,
    {
        // Whether io_uring can work is checked before anything is mounted.
        let mut fallback = None;
        let rings = match transport {
            Transport::Epoll => None,
            Transport::Auto | Transport::Uring => match uring::prepare() {
                Ok(rings) => Some(rings),
                Err(err) if transport == Transport::Auto => {
                    fallback = Some(error_chain(&err));
                    None
                }
                Err(err) => return Err(err.into()),
            },
        };
        let mount_error = |source| FuseError::Mount { path: mountpoint.to_path_buf(), source };
        let mut session =
            FuseSession::new(mountpoint, FSNAME, SUBTYPE, false).map_err(mount_error)?;
        session.set_allow_other(true);
        session.mount().map_err(mount_error)?;
        // If this fails, dropping `session` unmounts.
        super::devfuse::install_stop_handler().map_err(FuseError::Spawn)?;
        let bufsize = session.bufsize();
        let clones = {
            let device = session.get_fuse_file().ok_or_else(|| {
                FuseError::Spawn(std::io::Error::other("the FUSE session has no device"))
            })?;
            (0..threads.max(1))
                .map(|_| super::devfuse::clone_device(device.as_fd()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(FuseError::Spawn)?
        };
        // From here on, `mount`'s Drop stops the workers and unmounts if anything fails.
        let mut mount = Mount {
            mountpoint: mountpoint.to_path_buf(),
            signals: *signals,
            session: Some(session),
            workers: Vec::with_capacity(clones.len()),
            queues: None,
            shared: Arc::new(Shared::default()),
            active: ActiveTransport::Epoll { fallback: None },
            startup: RequestStats::default(),
        };
        let server = Arc::new(Server::new(fs));
        if let Some(rings) = rings {
            match mount.start_uring(rings, &server, transport == Transport::Uring)? {
                Ok(queues) => mount.active = ActiveTransport::Uring { queues },
                Err(err) => fallback = Some(error_chain(&err)),
            }
        }
        if let ActiveTransport::Epoll { fallback: why } = &mut mount.active {
            *why = fallback;
        }
        for (i, device) in clones.into_iter().enumerate() {
            let cpu = (!cpus.is_empty()).then(|| cpus[i % cpus.len()]);
            let server = Arc::clone(&server);
            let shared = Arc::clone(&mount.shared);
            let worker = thread::Builder::new()
                .name(format!("fuse-worker-{i}"))
                .spawn(move || super::devfuse::serve(device, &server, bufsize, cpu, shared))
                .map_err(FuseError::Spawn)?;
            mount.workers.push(worker);
        }
        Ok(mount)
    }

    /// Answers INIT asking for io_uring and starts the queues: `Ok(Ok(queues))` if the
    /// kernel serves the mount through them, `Ok(Err(why))` if it stays on /dev/fuse (an
    /// error instead if `required`).
    fn start_uring<F>(
        &mut self,
        rings: Vec<uring::queue::Ring>,
        server: &Arc<Server<F>>,
        required: bool,
    ) -> Result<Result<usize, UringError>, FuseError>
    where
        F: FileSystem + Send + Sync + 'static,
    {
        let bufsize = self.session.as_ref().map_or(0, FuseSession::bufsize);
        let device = self.device().map(File::try_clone).transpose();
        let Ok(Some(device)) = device else {
            return Err(UringError::Init("no FUSE device".into()).into());
        };
        let counter = RequestCounter::default();
        let negotiated = uring::init::answer(&device, server, bufsize, &counter);
        self.startup.add(&counter.stats());
        let negotiated = negotiated?;
        if !negotiated.uring {
            return match required {
                true => Err(UringError::NotOffered.into()),
                false => Ok(Err(UringError::NotOffered)),
            };
        }
        let (queues, registered) =
            Queues::start(rings, &device, server, negotiated.payload_len, &self.shared)?;
        let count = queues.len();
        self.queues = Some(queues);
        match registered {
            Ok(()) => Ok(Ok(count)),
            Err(err) if !required => Ok(Err(err)),
            Err(err) => Err(err.into()),
        }
    }

    fn device(&self) -> Option<&File> {
        self.session.as_ref().and_then(FuseSession::get_fuse_file)
    }

    /// The transport requests arrive through.
    pub fn transport(&self) -> &ActiveTransport {
        &self.active
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Blocks until SIGINT/SIGTERM or until a worker stops on its own.
    pub fn wait(&self) -> Result<StopReason, FuseError> {
        loop {
            match self.signals.wait()? {
                WORKER_EXIT_SIGNAL => {
                    // An unmount shows up in the workers as ENODEV or as a read error,
                    // depending on timing: ask the device.
                    if self.shared.worker_exited.load(Ordering::SeqCst) && self.disconnected() {
                        return Ok(StopReason::Unmounted);
                    }
                    if self.shared.worker_failed.load(Ordering::SeqCst) {
                        return Ok(StopReason::WorkerFailed);
                    }
                    if self.shared.worker_exited.load(Ordering::SeqCst) {
                        return Ok(StopReason::Unmounted);
                    }
                    // Someone else's SIGUSR1: nothing to do.
                }
                signal => return Ok(StopReason::Signal(signal)),
            }
        }
    }

    fn disconnected(&self) -> bool {
        self.device().is_none_or(disconnected)
    }

    /// Wakes the workers, joins them and unmounts. Returns the requests they served.
    pub fn stop(mut self) -> Result<RequestStats, FuseError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<RequestStats, FuseError> {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(session) = &self.session {
            if let Err(err) = session.wake() {
                tracing::error!(error = %err, "cannot wake the workers");
            }
        }
        // Workers blocked in read(2): wake each until it has seen the stop flag.
        loop {
            let running: Vec<_> = self.workers.iter().filter(|w| !w.is_finished()).collect();
            if running.is_empty() {
                break;
            }
            for worker in running {
                // SAFETY: the thread is alive (not finished, not joined: we hold its handle).
                unsafe {
                    libc::pthread_kill(
                        worker.as_pthread_t(),
                        super::devfuse::STOP_SIGNAL as libc::c_int,
                    )
                };
            }
            thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut stats = std::mem::take(&mut self.startup);
        for worker in self.workers.drain(..) {
            match worker.join() {
                Ok(served) => stats.add(&served),
                Err(_) => tracing::error!("a worker thread panicked"),
            }
        }
        if let Some(queues) = self.queues.take() {
            stats.add(&queues.stop(&self.shared));
        }
        if let Some(mut session) = self.session.take() {
            // Closes the device first (pending requests fail instead of hanging), then
            // umount2(MNT_DETACH); a no-op if it was already unmounted.
            session
                .umount()
                .map_err(|source| FuseError::Unmount { path: self.mountpoint.clone(), source })?;
        }
        Ok(stats)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.session.is_some() || !self.workers.is_empty() || self.queues.is_some() {
            if let Err(err) = self.shutdown() {
                tracing::error!(error = %err, "unmount failed");
            }
        }
    }
}

/// The kernel side of the connection is gone (unmounted or aborted): POLLERR on the device.
fn disconnected(device: &File) -> bool {
    let mut fds = [PollFd::new(device.as_fd(), PollFlags::empty())];
    poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0].revents().is_some_and(|r| r.contains(PollFlags::POLLERR))
}

/// An error and its sources on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo("/x\\134y\\011z"), "/x\\y\tz");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/trailing\\"), "/trailing\\");
        assert_eq!(unescape_mountinfo("/short\\04"), "/short\\04");
    }

    #[test]
    fn mount_points_of_mountinfo() {
        let info = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    40 22 0:35 / /tmp/my\\040dir rw - fuse.sysvisor-fs sysvisor-fs rw\n";
        let points: Vec<String> = mount_points(info).collect();
        assert_eq!(points, ["/", "/tmp/my dir"]);
    }

    #[test]
    fn mountpoint_checks() {
        let dir = tempfile::tempdir().unwrap();
        let canonical = check_mountpoint(dir.path()).unwrap();
        assert_eq!(canonical, fs::canonicalize(dir.path()).unwrap());
        let missing = dir.path().join("missing");
        assert!(matches!(check_mountpoint(&missing), Err(FuseError::MountPointAccess { .. })));
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(check_mountpoint(&file), Err(FuseError::NotADirectory { .. })));
        assert!(matches!(check_mountpoint(Path::new("/")), Err(FuseError::AlreadyMounted { .. })));
        assert!(matches!(
            check_mountpoint(Path::new("/proc")),
            Err(FuseError::AlreadyMounted { .. })
        ));
    }

    #[test]
    fn pid_namespace_is_known() {
        assert!(in_host_pid_namespace().is_some());
    }

    #[test]
    fn online_cpus_are_listed() {
        let cpus = online_cpus().unwrap();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]));
    }
}
