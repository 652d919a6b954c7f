//! Daemon mode (`sysvisor-fs serve`): one FUSE mount for every container, plus a control
//! socket on which the runtime registers containers.
//!
//! - [`registry`]: the registered containers, persisted in the state directory, and the
//!   pid namespace -> start time lookup the service uses for container uptimes;
//! - [`control`]: the control server (sysvisor-proto JSON lines on a unix socket);
//! - [`clock`]: wall-clock creation times to boot-relative clock ticks;
//! - here: preparing the mount point (a dead mount of a crashed daemon is detached) and the
//!   housekeeping thread that drops containers whose init is gone.
//!
//! The binary puts them together: check the socket (no other daemon), prepare the mount
//! point, load the registry, mount (same transport as `mount`, the service given the
//! registry), start the control server, housekeeping and the mount trap
//! ([`crate::mounttrap`]), wait for SIGINT/SIGTERM, then stop accepting, remove the sockets
//! and unmount.

pub mod clock;
pub mod control;
pub mod registry;

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::mount::{umount2, MntFlags};
use parking_lot::{Condvar, Mutex};

use crate::fuse::{session, FuseError};
pub use control::{ControlError, ControlOptions, ControlServer};
pub use registry::{Registry, RegistryError};

/// Default state directory: see [`sysvisor_proto::DEFAULT_STATE_DIR`].
pub const DEFAULT_STATE_DIR: &str = sysvisor_proto::DEFAULT_STATE_DIR;
/// How often the registry is swept of containers whose init is gone.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create the mount point {path}: {source}")]
    CreateMountpoint {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} holds the dead mount of a previous daemon and it cannot be detached: {source}"
    )]
    StaleMount {
        path: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
    #[error(transparent)]
    Fuse(#[from] FuseError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("cannot start the housekeeping thread: {0}")]
    Spawn(#[source] io::Error),
}

/// Makes `dir` ready to be mounted on: created (mode 0755) if missing; the dead FUSE mount
/// of a daemon that crashed lazily detached. Returns the canonical path, after the same
/// checks as `mount` (a directory, not a mount point).
///
/// A dead FUSE mount answers ENOTCONN (or, right after the crash of a daemon that used
/// io_uring, ECONNABORTED) to whatever reaches the (gone) server. `stat` of its
/// root usually does not: the kernel has the root's attributes cached (for a day, see
/// `fuse::filesystem::TTL`); `statfs` always asks the server, so both are tried.
pub fn prepare_mountpoint(dir: &Path) -> Result<PathBuf, DaemonError> {
    // Dead mounts can be stacked (several crashes); each detach uncovers the next.
    for _ in 0..16 {
        // ECONNABORTED: a request that reached the dead daemon's io_uring queues just before
        // the kernel tore them down (it aborts the connection once the rings are gone).
        let dead = |err: &io::Error| {
            matches!(err.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED))
        };
        let status = fs::metadata(dir)
            .and_then(|_| nix::sys::statfs::statfs(dir).map(|_| ()).map_err(io::Error::from));
        match status {
            Err(err) if dead(&err) => {
                umount2(dir, MntFlags::MNT_DETACH).map_err(|source| DaemonError::StaleMount {
                    path: dir.to_path_buf(),
                    source,
                })?;
                tracing::warn!(path = %dir.display(), "detached the dead mount of a previous daemon");
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(
                    |source| DaemonError::CreateMountpoint { path: dir.to_path_buf(), source },
                )?;
                tracing::info!(path = %dir.display(), "created the mount point");
                break;
            }
            _ => break,
        }
    }
    Ok(session::check_mountpoint(dir)?)
}

/// The thread that sweeps the registry every `interval`. Dropping it stops it.
pub struct Housekeeper {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl Housekeeper {
    pub fn start(registry: Arc<Registry>, interval: Duration) -> Result<Housekeeper, DaemonError> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let handle = {
            let stop = stop.clone();
            thread::Builder::new()
                .name("registry-sweep".into())
                .spawn(move || {
                    let (flag, wake) = &*stop;
                    let mut stopped = flag.lock();
                    while !*stopped {
                        wake.wait_for(&mut stopped, interval);
                        if *stopped {
                            break;
                        }
                        parking_lot::MutexGuard::unlocked(&mut stopped, || {
                            registry.sweep();
                        });
                    }
                })
                .map_err(DaemonError::Spawn)?
        };
        Ok(Housekeeper { stop, handle: Some(handle) })
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let (flag, wake) = &*self.stop;
        *flag.lock() = true;
        wake.notify_all();
        if let Some(handle) = self.handle.take() {
            if handle.join().is_err() {
                tracing::error!("the registry housekeeping thread panicked");
            }
        }
    }
}

impl Drop for Housekeeper {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::registry::tests::{container, FakeProcesses};
    use super::*;

    #[test]
    fn housekeeping_drops_dead_containers() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeProcesses::new();
        fake.spawn(10, 500, 100);
        let (registry, _) = Registry::open_with(dir.path(), fake.clone()).unwrap();
        let registry = Arc::new(registry);
        registry.register(container("c", 10, 0)).unwrap();
        let housekeeper = Housekeeper::start(registry.clone(), Duration::from_millis(20)).unwrap();
        fake.kill(10);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !registry.is_empty() {
            assert!(std::time::Instant::now() < deadline, "not swept");
            thread::sleep(Duration::from_millis(10));
        }
        housekeeper.stop();
    }

    #[test]
    fn mountpoint_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("a/b/mnt");
        let canonical = prepare_mountpoint(&mnt).unwrap();
        assert_eq!(canonical, fs::canonicalize(&mnt).unwrap());
        // Existing: fine too.
        assert_eq!(prepare_mountpoint(&mnt).unwrap(), canonical);
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(
            prepare_mountpoint(&file),
            Err(DaemonError::Fuse(FuseError::NotADirectory { .. }))
        ));
    }
}
