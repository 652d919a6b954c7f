//! FUSE over io_uring (Linux 6.14+, `CONFIG_FUSE_IO_URING`): one request queue per possible
//! CPU, each served by a thread pinned to that CPU with its own io_uring, so a request is
//! served on its caller's CPU instead of waking a thread on another one.
//!
//! How the transport in [`crate::fuse::session`] uses it:
//! 1. [`prepare`] before mounting: the kernel has the feature, its `enable_uring` module
//!    parameter is (or is turned) on, and one io_uring per queue can be created;
//! 2. [`init::answer`] right after mount(2): INIT still comes over /dev/fuse, and its reply
//!    must ask for io_uring (see [`init`]);
//! 3. [`Queues::start`]: the queue threads register their entries; once every queue has one
//!    the kernel sends all requests through the rings. FORGET and INTERRUPT keep coming
//!    over /dev/fuse (6.18 sends only requests that expect a reply through io_uring), so
//!    the /dev/fuse workers keep running; they also take over everything if a REGISTER is
//!    refused, which makes the kernel fall back for the whole connection;
//! 4. [`Queues::stop`]: wake the threads through an eventfd each ring polls, join them.
//!    An unmount completes every entry with ENOTCONN, which stops the threads by themselves.

pub mod abi;
pub mod capture;
pub mod init;
pub mod queue;

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use fuse_backend_rs::api::filesystem::FileSystem;
use fuse_backend_rs::api::server::Server;
use io_uring::{cqueue, squeue, IoUring};

use super::worker::{RequestStats, Shared};
use queue::{QueueContext, Ring};

/// The module parameter that allows FUSE connections to use io_uring.
pub const ENABLE_PARAM: &str = "/sys/module/fuse/parameters/enable_uring";
/// The CPUs the kernel makes queues for (`num_possible_cpus()`).
const POSSIBLE_CPUS: &str = "/sys/devices/system/cpu/possible";
/// How long queue threads may take to register their entries.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why FUSE over io_uring cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UringError {
    #[error("the kernel has no FUSE over io_uring ({ENABLE_PARAM} is missing)")]
    NotBuilt,
    #[error("cannot read {ENABLE_PARAM}")]
    ReadParam(#[source] io::Error),
    #[error("cannot turn on {ENABLE_PARAM}")]
    Enable(#[source] io::Error),
    #[error("cannot read {POSSIBLE_CPUS}: {0}")]
    PossibleCpus(String),
    #[error("cannot create an io_uring")]
    Ring(#[source] io::Error),
    #[error("cannot create the stop eventfd")]
    EventFd(#[source] io::Error),
    #[error("FUSE INIT: {0}")]
    Init(String),
    #[error("the kernel did not offer FUSE over io_uring in INIT")]
    NotOffered,
    #[error("an io_uring queue could not be registered")]
    Register(#[source] io::Error),
    #[error("a queue thread did not register within {REGISTER_TIMEOUT:?}")]
    RegisterTimeout,
}

/// Makes sure the kernel can serve this mount over io_uring and creates the rings, one per
/// possible CPU. Turns `enable_uring` on if it is off (it only allows connections to ask).
pub fn prepare() -> Result<Vec<Ring>, UringError> {
    enable()?;
    let text =
        fs::read_to_string(POSSIBLE_CPUS).map_err(|e| UringError::PossibleCpus(e.to_string()))?;
    let count = count_cpus(&text)
        .ok_or_else(|| UringError::PossibleCpus(format!("cannot parse {:?}", text.trim())))?;
    (0..count).map(|qid| Ring::new(qid).map_err(UringError::Ring)).collect()
}

fn enable() -> Result<(), UringError> {
    let value = fs::read_to_string(ENABLE_PARAM).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => UringError::NotBuilt,
        _ => UringError::ReadParam(e),
    })?;
    if value.trim() == "Y" {
        return Ok(());
    }
    fs::write(ENABLE_PARAM, "1").map_err(UringError::Enable)?;
    tracing::info!(param = ENABLE_PARAM, "turned FUSE over io_uring on");
    Ok(())
}

/// Number of CPUs in a sysfs CPU list ("0-3,8,10-11").
fn count_cpus(list: &str) -> Option<u16> {
    let mut count = 0u16;
    for part in list.trim().split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.parse::<u16>().ok()?, hi.parse::<u16>().ok()?),
            None => {
                let cpu = part.parse::<u16>().ok()?;
                (cpu, cpu)
            }
        };
        count = count.checked_add(hi.checked_sub(lo)?.checked_add(1)?)?;
    }
    (count > 0).then_some(count)
}

/// The running queue threads.
pub struct Queues {
    threads: Vec<JoinHandle<RequestStats>>,
    stop: Arc<OwnedFd>,
}

impl Queues {
    /// Starts one thread per ring (queue `q` pinned to CPU `q`), serving `server` on the
    /// connection of `device` with entries of `payload_len` bytes. Returns the threads and
    /// whether the kernel accepted their registrations; refused ones leave the connection on
    /// /dev/fuse.
    pub fn start<F: FileSystem + Sync + Send + 'static>(
        rings: Vec<Ring>,
        device: &File,
        server: &Arc<Server<F>>,
        payload_len: usize,
        shared: &Arc<Shared>,
    ) -> Result<(Queues, Result<(), UringError>), UringError> {
        let stop = Arc::new(eventfd()?);
        let mut queues = Queues { threads: Vec::with_capacity(rings.len()), stop };
        let (tx, rx) = mpsc::channel();
        for ring in rings {
            let cx = QueueContext {
                server: Arc::clone(server),
                device: match device.try_clone() {
                    Ok(device) => device,
                    Err(err) => return Ok((queues, Err(UringError::Register(err)))),
                },
                payload_len,
                stop: Arc::clone(&queues.stop),
                shared: Arc::clone(shared),
                cpu: Some(usize::from(ring.qid)),
                registered: tx.clone(),
            };
            let spawned = thread::Builder::new()
                .name(format!("fuse-uring-{}", ring.qid))
                .spawn(move || queue::serve(ring, cx));
            match spawned {
                Ok(thread) => queues.threads.push(thread),
                Err(err) => return Ok((queues, Err(UringError::Register(err)))),
            }
        }
        drop(tx);
        let mut outcome = Ok(());
        for _ in 0..queues.threads.len() {
            match rx.recv_timeout(REGISTER_TIMEOUT) {
                Ok(Ok(())) => {}
                Ok(Err(err)) => outcome = Err(UringError::Register(err)),
                Err(_) => {
                    outcome = Err(UringError::RegisterTimeout);
                    break;
                }
            }
        }
        if outcome.is_err() {
            // A queue that never registers would hold every request back for good.
            abandon(device);
        }
        Ok((queues, outcome))
    }

    /// Number of queues.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Wakes the threads, joins them; returns the requests they served.
    pub fn stop(self, shared: &Shared) -> RequestStats {
        debug_assert!(shared.stopping.load(Ordering::SeqCst));
        if let Err(err) = queue::wake(self.stop.as_fd()) {
            tracing::error!(error = %err, "cannot wake the io_uring queues");
        }
        let mut stats = RequestStats::default();
        for thread in self.threads {
            match thread.join() {
                Ok(served) => stats.add(&served),
                Err(_) => tracing::error!("an io_uring queue thread panicked"),
            }
        }
        stats
    }
}

/// Makes the kernel give io_uring up for the connection of `device`, so that requests it
/// holds back until every queue is registered go to /dev/fuse instead: a REGISTER it must
/// refuse (a queue id out of range), upon which it falls back and wakes them.
fn abandon(device: &File) {
    let refused = (|| -> io::Result<i32> {
        let mut ring: IoUring<squeue::Entry128, cqueue::Entry> = IoUring::builder().build(2)?;
        let no_buffers = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 2];
        let sqe = abi::register_sqe(device.as_raw_fd(), u16::MAX, no_buffers.as_ptr(), 0);
        // SAFETY: the kernel refuses the queue id before it reads the (empty) iovecs, which
        // live until after the completion is reaped anyway.
        unsafe { ring.submission().push(&sqe) }.map_err(|_| io::Error::other("queue full"))?;
        ring.submit_and_wait(1)?;
        let res = ring.completion().next().map_or(0, |c| c.result());
        Ok(res)
    })();
    match refused {
        Ok(res) if res < 0 => tracing::warn!("FUSE over io_uring given up; serving /dev/fuse"),
        Ok(_) => tracing::error!("the kernel accepted a REGISTER meant to be refused"),
        Err(err) => tracing::error!(error = %err, "cannot make the kernel give io_uring up"),
    }
}

fn eventfd() -> Result<OwnedFd, UringError> {
    // SAFETY: eventfd(2) with constant flags; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(UringError::EventFd(io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpus("0-1\n"), Some(2));
        assert_eq!(count_cpus("0"), Some(1));
        assert_eq!(count_cpus("0-3,8,10-11"), Some(7));
        assert_eq!(count_cpus(""), None);
        assert_eq!(count_cpus("3-1"), None);
        assert_eq!(count_cpus("x"), None);
    }
}
