//! The mount trap: proc and sysfs mounts inside system containers, with the views on them.
//!
//! A container with sysvisor-fs views bound over `/proc/*` cannot mount a new procfs
//! itself once those binds are locked (the kernel's "fully visible" rule), and a procfs it
//! can mount shows the host's files. Inner container runtimes and `unshare --mount-proc`
//! need new procfs and sysfs mounts. So sysvisor-runc gives each system container a seccomp
//! profile whose mount-family calls notify this daemon (`SCMP_ACT_NOTIFY`, with
//! `linux.seccomp.listenerPath` pointing at [`listener`]'s socket), and the daemon:
//! - performs new `proc` and `sysfs` mounts itself, in the caller's namespaces and at the
//!   target as the caller named it, with the container's overlays (views, masks,
//!   read-only paths: [`overlays`]) on them as locked mounts ([`helper`]);
//! - locks the container's own `/proc` and `/sys` the same way when its init starts
//!   ([`lock`]), so that nothing can unmount, move or remount an overlay;
//! - refuses `umount2` of an overlay with EPERM ([`handler`]), answers `fsopen("proc")`
//!   with ENOSYS (tools fall back to `mount(2)`), and lets every other call continue
//!   untouched ([`policy`]);
//! - answers `sysinfo` with the container's memory, swap, uptime, loads and tasks
//!   ([`sysinfo`]).
//!
//! Layers: [`abi`] (system call numbers, notify ioctls), [`state`] (runc's message),
//! [`policy`] (pure decisions), [`mountinfo`] and [`overlays`] (pure), [`process`] (the
//! caller through /proc), [`helper`] (the process that mounts), [`lock`], [`handler`],
//! [`dispatch`] (epoll and workers), [`listener`] (the socket). See docs/mounttrap.md.

pub mod abi;
pub mod dispatch;
pub mod handler;
pub mod helper;
pub mod identity;
pub mod listener;
pub mod lock;
pub mod locks;
pub mod mountinfo;
pub mod overlays;
pub mod policy;
pub mod process;
pub mod state;
pub mod sysinfo;

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use dispatch::{Dispatcher, Workers};
pub use handler::Context;
pub use listener::Listener;
pub use locks::{Guard, ViewLocks};

#[derive(Debug, thiserror::Error)]
pub enum MountTrapError {
    #[error("cannot use the seccomp listener socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Control(Box<crate::daemon::ControlError>),
    #[error("cannot prepare the mount trap's stage directory {path}: {source}")]
    Stage {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the mount trap: {0}")]
    Start(#[source] io::Error),
}

/// Settings of the trap.
#[derive(Debug, Clone)]
pub struct MountTrapOptions {
    /// The listener socket (see `sysvisor_proto::seccomp_socket_for`).
    pub socket: PathBuf,
    /// An empty directory the helpers mount on, each in a mount namespace of its own.
    pub stage: PathBuf,
    /// Where sysvisor-fs mounts its views (for the default overlays).
    pub fs_mountpoint: PathBuf,
    /// Worker threads serving notifications.
    pub workers: usize,
    /// Notifications of one container served at once (see [`dispatch`]).
    pub per_container: usize,
    /// How long a helper may take.
    pub helper_timeout: Duration,
    /// The binary run as the helper: the daemon's own (`/proc/self/exe`, which stays the
    /// running version even if the file is replaced by an upgrade).
    pub helper_exe: PathBuf,
    /// Run containers whose views cannot be locked (a kernel without
    /// `MOVE_MOUNT_BENEATH`) with the trap's identity checks instead of refusing them
    /// (`serve --allow-unlocked-views`; the risk is in docs/security.md).
    pub allow_unlocked_views: bool,
    /// Test only: behave as if the kernel had no `MOVE_MOUNT_BENEATH`
    /// ([`PRETEND_NO_BENEATH_ENV`]), so that the older kernels' path is tested here.
    pub pretend_no_beneath: bool,
    /// The outcome of each container's lock, shared with the control socket.
    pub locks: Arc<ViewLocks>,
    /// Where `sysinfo` answers come from (the daemon's service); `None`: the kernel
    /// answers (see [`sysinfo`]).
    pub sysinfo: Option<Arc<dyn sysinfo::FiguresSource>>,
}

/// The hidden, test-only switch of [`MountTrapOptions::pretend_no_beneath`]: set to `1` in
/// the daemon's environment.
pub const PRETEND_NO_BENEATH_ENV: &str = "SYSVISOR_FS_TEST_PRETEND_NO_MOVE_MOUNT_BENEATH";

impl MountTrapOptions {
    pub fn new(socket: PathBuf, fs_mountpoint: PathBuf) -> MountTrapOptions {
        let stage = socket.with_file_name("mounttrap-stage");
        MountTrapOptions {
            socket,
            stage,
            fs_mountpoint,
            workers: 4,
            per_container: 2,
            helper_timeout: Duration::from_secs(10),
            helper_exe: PathBuf::from("/proc/self/exe"),
            allow_unlocked_views: false,
            pretend_no_beneath: std::env::var_os(PRETEND_NO_BENEATH_ENV).is_some_and(|v| v == "1"),
            locks: Arc::new(ViewLocks::default()),
            sysinfo: None,
        }
    }
}

/// A running trap. Dropping it stops it: the listener first, then the workers; the notify
/// fds close with it (see docs/mounttrap.md for what that means to running containers).
pub struct MountTrap {
    listener: Option<Listener>,
    workers: Option<Workers>,
    dispatcher: Arc<Dispatcher>,
    stage: PathBuf,
}

impl MountTrap {
    pub fn start(options: &MountTrapOptions) -> Result<MountTrap, MountTrapError> {
        prepare_stage(&options.stage)?;
        let exe = options.helper_exe.clone();
        let mut ctx = Context::new(exe, options.stage.clone(), options.helper_timeout)
            .map_err(MountTrapError::Start)?;
        ctx.allow_unlocked_views = options.allow_unlocked_views;
        ctx.pretend_no_beneath = options.pretend_no_beneath;
        ctx.sysinfo = options.sysinfo.clone();
        if ctx.pretend_no_beneath {
            tracing::warn!("test switch: behaving as if the kernel had no MOVE_MOUNT_BENEATH");
        }
        let dispatcher = Arc::new(
            Dispatcher::new(ctx, options.locks.clone(), options.per_container)
                .map_err(MountTrapError::Start)?,
        );
        let workers =
            Workers::start(dispatcher.clone(), options.workers).map_err(MountTrapError::Start)?;
        let listener =
            Listener::start(&options.socket, dispatcher.clone(), options.fs_mountpoint.clone())?;
        Ok(MountTrap {
            listener: Some(listener),
            workers: Some(workers),
            dispatcher,
            stage: options.stage.clone(),
        })
    }

    pub fn socket(&self) -> Option<&Path> {
        self.listener.as_ref().map(|l| l.path())
    }

    /// The containers whose notify fds are served, with their number of fds.
    pub fn containers(&self) -> Vec<(String, usize)> {
        self.dispatcher.containers()
    }
}

impl Drop for MountTrap {
    fn drop(&mut self) {
        drop(self.listener.take());
        drop(self.workers.take());
        // Empty unless a helper is still being killed; then it stays for the next start.
        let _ = fs::remove_dir(&self.stage);
    }
}

/// The stage: a root-only empty directory (created if missing).
fn prepare_stage(path: &Path) -> Result<(), MountTrapError> {
    let error = |source| MountTrapError::Stage { path: path.to_path_buf(), source };
    match fs::DirBuilder::new().recursive(true).mode(0o700).create(path) {
        Ok(()) => {}
        Err(err) => return Err(error(err)),
    }
    let meta = fs::symlink_metadata(path).map_err(error)?;
    if !meta.is_dir() {
        return Err(error(io::Error::from_raw_os_error(libc::ENOTDIR)));
    }
    Ok(())
}
