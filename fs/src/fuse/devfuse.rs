//! /dev/fuse workers that never wake each other: each reads requests with a blocking
//! read(2) on its own clone of the connection's device fd (`FUSE_DEV_IOC_CLONE`). The kernel
//! queues a connection's requests in one input queue and wakes its blocked readers one at
//! a time (an exclusive wait), so a request wakes exactly one idle worker; pollers of the
//! device (the epoll workers this replaced) were all woken for every request, and all but
//! one went back to sleep. A reply is written to the clone the request was read from (the
//! kernel matches replies per clone).
//!
//! Stopping: a worker blocked in read(2) is woken by [`STOP_SIGNAL`] (a no-op handler
//! installed without `SA_RESTART`, so the read fails with EINTR) and then sees the stop
//! flag; an unmount or an aborted connection ends its read with ENODEV.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Once};

use fuse_backend_rs::api::filesystem::FileSystem;
use fuse_backend_rs::api::server::Server;
use nix::errno::Errno;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use super::uring::capture::{self, Sink};
use super::worker::{pin_to_cpu, ExitNotice, RequestCounter, RequestStats, Shared};

/// Wakes a worker blocked in read(2) (see the module doc).
pub const STOP_SIGNAL: Signal = Signal::SIGUSR2;

/// `FUSE_DEV_IOC_CLONE` (linux/fuse.h: `_IOR(229, 0, uint32_t)`).
const FUSE_DEV_IOC_CLONE: libc::c_ulong = 0x8004_e500;

extern "C" fn ignore(_: libc::c_int) {}

/// Installs the no-op handler of [`STOP_SIGNAL`], without `SA_RESTART` (once per process).
pub fn install_stop_handler() -> io::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        let action = SigAction::new(SigHandler::Handler(ignore), SaFlags::empty(), SigSet::empty());
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        if let Err(err) = unsafe { sigaction(STOP_SIGNAL, &action) } {
            result = Err(io::Error::from(err));
        }
    });
    result
}

/// A clone of the connection of `device` (the session's /dev/fuse fd): a new /dev/fuse
/// file, blocking, attached to the same connection.
pub fn clone_device(device: BorrowedFd<'_>) -> io::Result<File> {
    let clone = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(super::session::FUSE_DEVICE)?;
    let session_fd = device.as_raw_fd() as u32;
    // SAFETY: FUSE_DEV_IOC_CLONE reads one u32 (the fd to clone) from the pointer given,
    // which points to a live local.
    let rc = unsafe { libc::ioctl(clone.as_raw_fd(), FUSE_DEV_IOC_CLONE, &session_fd) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(clone)
}

/// A worker: pin to `cpu`, then read requests from `device` (a clone, see
/// [`clone_device`]) and answer them until told to stop or the file system is unmounted.
pub fn serve<F: FileSystem + Sync>(
    device: File,
    server: &Server<F>,
    bufsize: usize,
    cpu: Option<usize>,
    shared: Arc<Shared>,
) -> RequestStats {
    let _notice = ExitNotice(Arc::clone(&shared));
    if let Some(cpu) = cpu {
        pin_to_cpu(cpu);
    }
    let counter = RequestCounter::default();
    let sink = match Sink::open() {
        Ok(sink) => sink,
        Err(err) => {
            tracing::error!(error = %err, "cannot open /dev/null for replies");
            shared.worker_failed.store(true, Ordering::SeqCst);
            return counter.stats();
        }
    };
    let mut request = vec![0u8; bufsize];
    let mut reply = vec![0u8; bufsize];
    while !shared.stopping.load(Ordering::SeqCst) {
        let len = match nix::unistd::read(device.as_raw_fd(), &mut request) {
            Ok(len) => len,
            // Woken to stop (the loop checks), or a request that was interrupted meanwhile.
            Err(Errno::EINTR | Errno::EAGAIN | Errno::ENOENT) => continue,
            Err(Errno::ENODEV) => {
                if !shared.stopping.load(Ordering::SeqCst) {
                    tracing::debug!("file system unmounted externally");
                }
                break;
            }
            Err(err) => {
                tracing::error!(error = %err, "reading /dev/fuse failed");
                shared.worker_failed.store(true, Ordering::SeqCst);
                break;
            }
        };
        let Some(answer) = capture::serve(server, &mut request[..len], &mut reply, &sink, &counter)
        else {
            continue; // FORGET, INTERRUPT: no reply
        };
        match nix::unistd::write(device.as_fd(), &reply[..answer.len]) {
            // ENOENT: the request was interrupted and its caller is gone.
            Ok(_) | Err(Errno::ENOENT) => {}
            Err(Errno::ENODEV) => break,
            Err(err) => tracing::debug!(error = %err, "cannot write a FUSE reply"),
        }
    }
    counter.stats()
}
