//! The seccomp listener socket runc connects to (`linux.seccomp.listenerPath`).
//!
//! One thread accepts; each connection is registered by a short-lived thread of its own (at
//! most [`MAX_REGISTERING`] at once; beyond that the accepting thread registers it itself,
//! which slows accepting down instead of dropping anything): read runc's state and the
//! notify fd (bounded in size and time), load the container's overlays from its bundle,
//! lock the container's `/proc` and `/sys` if the fd is its init's, then hand the fd to the
//! dispatcher. A client that sends nothing ties up its own thread for [`RECEIVE_TIMEOUT`]. runc does not wait for any of this (it only connects and sends),
//! and the container's mount-family calls simply wait in the kernel until their fd is
//! served. The socket is root-only (0600), like the control socket.

use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::dispatch::Dispatcher;
use super::handler::Source;
use super::lock;
use super::locks::{Guard, LockState};
use super::overlays::Overlays;
use super::state::{self, ProcessState};
use super::MountTrapError;
use crate::daemon::control;

/// How long runc may take to send its message.
pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long another notify fd of a container waits for the lock of its views (two
/// helpers, each bounded by its 10 s timeout, with room to spare).
pub const LOCK_WAIT: Duration = Duration::from_secs(30);
/// Connections registered at once by threads of their own.
pub const MAX_REGISTERING: usize = 16;

pub struct Listener {
    path: PathBuf,
    socket_file: (u64, u64),
    stop: Arc<AtomicBool>,
    waker: UnixStream,
    accept: Option<JoinHandle<()>>,
}

impl Listener {
    pub fn start(
        path: &Path,
        dispatcher: Arc<Dispatcher>,
        fs_mountpoint: PathBuf,
    ) -> Result<Listener, MountTrapError> {
        let socket_error = |source| MountTrapError::Socket { path: path.to_path_buf(), source };
        control::check_socket(path).map_err(|e| MountTrapError::Control(Box::new(e)))?;
        let listener =
            control::bind_private(path).map_err(|e| MountTrapError::Control(Box::new(e)))?;
        let meta = fs::symlink_metadata(path).map_err(socket_error)?;
        listener.set_nonblocking(true).map_err(socket_error)?;
        let (waker, wake_rx) = UnixStream::pair().map_err(socket_error)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut server = Listener {
            path: path.to_path_buf(),
            socket_file: (meta.dev(), meta.ino()),
            stop: stop.clone(),
            waker,
            accept: None,
        };
        let handle = thread::Builder::new()
            .name("mounttrap-listen".into())
            .spawn(move || {
                let fs_mountpoint = Arc::new(fs_mountpoint);
                let busy = Arc::new(AtomicUsize::new(0));
                control::accept_loop(&listener, &wake_rx, &stop, "seccomp listener", |stream| {
                    spawn_registration(stream, &dispatcher, &fs_mountpoint, &busy)
                })
            })
            .map_err(socket_error)?;
        server.accept = Some(handle);
        Ok(server)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = (&self.waker).write_all(b"x");
        if let Some(handle) = self.accept.take() {
            if handle.join().is_err() {
                tracing::error!("the seccomp listener thread panicked");
            }
        }
        // Only the socket file this listener made (another daemon may have replaced it).
        if fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.socket_file) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Registers a connection in a thread of its own, or here when too many run already (or a
/// thread cannot be started).
fn spawn_registration(
    stream: UnixStream,
    dispatcher: &Arc<Dispatcher>,
    fs_mountpoint: &Arc<PathBuf>,
    busy: &Arc<AtomicUsize>,
) {
    if busy.fetch_add(1, Ordering::SeqCst) < MAX_REGISTERING {
        // A second handle on the same socket: if the thread cannot start, the message is
        // still there to be read through it.
        if let Ok(spare) = stream.try_clone() {
            let (d, m, b) = (dispatcher.clone(), fs_mountpoint.clone(), busy.clone());
            let spawned =
                thread::Builder::new().name("mounttrap-register".into()).spawn(move || {
                    register_logged(&stream, &d, &m);
                    b.fetch_sub(1, Ordering::SeqCst);
                });
            match spawned {
                Ok(_) => return,
                Err(err) => {
                    busy.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!(error = %err, "cannot start a registration thread");
                    register_logged(&spare, dispatcher, fs_mountpoint);
                    return;
                }
            }
        }
    }
    busy.fetch_sub(1, Ordering::SeqCst);
    register_logged(&stream, dispatcher, fs_mountpoint);
}

fn register_logged(stream: &UnixStream, dispatcher: &Dispatcher, fs_mountpoint: &Path) {
    if let Err(err) = register(stream, dispatcher, fs_mountpoint) {
        tracing::warn!(error = %err, "refused a seccomp notify fd");
    }
}

/// Registers one connection's notify fd.
fn register(
    stream: &UnixStream,
    dispatcher: &Dispatcher,
    fs_mountpoint: &Path,
) -> Result<(), String> {
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    let (data, mut fds) = state::receive(stream.as_fd(), RECEIVE_TIMEOUT)
        .map_err(|e| format!("cannot read runc's message: {e}"))?;
    let state = ProcessState::parse(&data).map_err(|e| format!("bad state from runc: {e}"))?;
    let index = state.seccomp_fd_index().ok_or("no seccompFd in the message")?;
    if index >= fds.len() {
        return Err(format!("container {}: no fd attached", state.state.id));
    }
    let fd: OwnedFd = fds.swap_remove(index);
    drop(fds);
    if !state::is_seccomp_notify_fd(fd.as_fd()) {
        return Err(format!("container {}: the fd is not a seccomp notify fd", state.state.id));
    }
    let id = state.state.id.clone();
    let overlays = match Overlays::from_bundle(&state.state.bundle) {
        Ok(overlays) => overlays,
        Err(err) => {
            tracing::warn!(container = %id, error = %err, "using the default overlays");
            Overlays::defaults(fs_mountpoint)
        }
    };
    let pid = state.pid as u32;
    let guard = if state.is_init() {
        lock_init(dispatcher, &id, pid, &overlays)
    } else {
        // A `runc exec` process: served as its container's init once the lock has ended.
        dispatcher.locks().guard_for(&id, LOCK_WAIT)
    };
    let own_root = sysvisor_proto::containers_mountpoint_for(fs_mountpoint);
    let nested_overlays = Arc::new(overlays.per_caller(&own_root, fs_mountpoint));
    let pid_ns = std::fs::metadata(format!("/proc/{pid}/ns/pid"))
        .map(|m| (std::os::unix::fs::MetadataExt::dev(&m), std::os::unix::fs::MetadataExt::ino(&m)))
        .ok();
    let source = Source {
        fd,
        container: id.clone(),
        pid,
        overlays: Arc::new(overlays),
        nested_overlays,
        pid_ns,
        guard,
    };
    dispatcher
        .add(source)
        .map_err(|e| format!("container {id}: cannot serve its notify fd: {e}"))?;
    tracing::debug!(container = %id, pid, init = state.is_init(), "serving a notify fd");
    Ok(())
}

/// Locks the views of the container whose init is `pid`, records the outcome for
/// sysvisor-runc ([`super::locks`]) and returns how the init's notify fd is served. A
/// failure fails closed: sysvisor-runc deletes the container before it starts, and until
/// then (or if nothing asks, as with `runc run`) every trapped call of the container gets
/// EPERM. (Killing the init here would break `runc create`, still talking to it.)
fn lock_init(dispatcher: &Dispatcher, id: &str, pid: u32, overlays: &Overlays) -> Guard {
    let locks = dispatcher.locks();
    locks.begin(id, pid);
    let ctx = dispatcher.context();
    let state = match lock::lock_container(ctx, pid, overlays) {
        Ok(locked) => {
            for fs in &locked {
                dispatcher.mounted().add(id, fs.container_path().to_string());
            }
            let names: Vec<&str> = locked.iter().map(|fs| fs.container_path()).collect();
            tracing::info!(container = %id, pid, locked = ?names, "views locked");
            LockState::Done(Guard::Locked)
        }
        Err(lock::LockError::Gone(_)) => {
            tracing::debug!(container = %id, pid, "the init is gone: nothing to lock");
            LockState::Done(Guard::Locked)
        }
        Err(lock::LockError::NoBeneath) if ctx.allow_unlocked_views => {
            tracing::warn!(
                container = %id,
                pid,
                "views not locked (no MOVE_MOUNT_BENEATH); --allow-unlocked-views: the trap \
                 refuses unmounts and moves of protected mounts by their identity"
            );
            LockState::Done(Guard::Unlocked)
        }
        Err(err) => {
            tracing::error!(container = %id, pid, error = %err, "cannot lock the views; refusing the container");
            LockState::Failed(err.to_string())
        }
    };
    let guard = match &state {
        LockState::Done(guard) => *guard,
        _ => Guard::Deny,
    };
    locks.finish(id, pid, state);
    guard
}
