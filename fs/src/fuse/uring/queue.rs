//! One FUSE-over-io_uring queue: a thread pinned to its CPU with its own io_uring, serving the
//! requests that callers on that CPU make.
//!
//! The thread registers [`ENTRIES`] entries (a header buffer and a payload buffer each) with
//! REGISTER commands. A caller's request goes to the queue of the CPU it runs on; the kernel
//! copies it into a free entry (in this thread's context, as io_uring task work) and
//! completes that entry's command. The thread rebuilds the contiguous FUSE message the
//! [`Server`] expects (`fuse_in_header`, the opcode's argument from `op_in`, the payload),
//! serves it with the reply captured straight into the entry's payload buffer, and answers
//! with COMMIT_AND_FETCH, which also re-arms the entry. Caller and server stay on one CPU.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use fuse_backend_rs::api::filesystem::FileSystem;
use fuse_backend_rs::api::server::Server;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::abi::{self, Fetched, IN_HEADER_LEN, OP_IN, OUT_HEADER_LEN};
use super::capture::{self, Sink};
use crate::fuse::worker::{pin_to_cpu, ExitNotice, RequestCounter, RequestStats, Shared};

/// Entries per queue. The thread serves one request at a time; a second entry lets the
/// kernel hand over the next request while the first is being served.
pub const ENTRIES: usize = 2;

/// `user_data` of the poll on the stop eventfd (entries use their index).
const STOP: u64 = u64::MAX;

/// A queue's io_uring, created before INIT so that a kernel that cannot make one is noticed
/// while the mount can still fall back to /dev/fuse.
pub struct Ring {
    pub qid: u16,
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
}

impl Ring {
    pub fn new(qid: u16) -> io::Result<Ring> {
        // 128-byte SQEs (the entry type says so): the FUSE command lives in the extra bytes.
        // Task work (the kernel copying a request into an entry) runs only when the queue
        // thread waits for completions: no signalling of the thread (measured: about 15%
        // less CPU per request than plain task work). That needs a single issuer, the
        // queue thread, which enables the ring it did not create.
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_r_disabled()
            .build((ENTRIES + 1).next_power_of_two() as u32)?;
        Ok(Ring { qid, ring })
    }
}

/// An entry's buffers, shared with the kernel from REGISTER on: the kernel writes a request
/// into them before completing the entry's command and reads the reply when the thread
/// submits COMMIT_AND_FETCH; in between they are the thread's alone. Never resized, so the
/// addresses handed to the kernel stay valid.
struct Entry {
    /// `struct fuse_uring_req_header`.
    header: Vec<u8>,
    /// [`OUT_HEADER_LEN`] bytes where the captured reply's header lands, then the payload
    /// buffer registered with the kernel: the reply's payload is written in place.
    payload: Vec<u8>,
    /// The two iovecs of REGISTER (header, payload).
    iovecs: Box<[libc::iovec; 2]>,
}

impl Entry {
    fn new(payload_len: usize) -> Entry {
        let mut header = vec![0u8; abi::HEADER_LEN];
        let mut payload = vec![0u8; OUT_HEADER_LEN + payload_len];
        let iovecs = Box::new([
            libc::iovec { iov_base: header.as_mut_ptr().cast(), iov_len: header.len() },
            libc::iovec {
                iov_base: payload[OUT_HEADER_LEN..].as_mut_ptr().cast(),
                iov_len: payload_len,
            },
        ]);
        Entry { header, payload, iovecs }
    }

    /// Serves the request the kernel put into this entry and leaves the reply in it; returns
    /// the id to commit it under.
    fn serve<F: FileSystem + Sync>(
        &mut self,
        server: &Server<F>,
        request: &mut Vec<u8>,
        sink: &Sink,
        counter: &RequestCounter,
    ) -> u64 {
        let fetched = Fetched::parse(&self.header);
        let capacity = self.payload.len() - OUT_HEADER_LEN;
        let reply = match fetched.op_in_len(capacity) {
            Some(op_len) => {
                request.clear();
                request.extend_from_slice(&self.header[..IN_HEADER_LEN]);
                request.extend_from_slice(&self.header[OP_IN..OP_IN + op_len]);
                let payload = &self.payload[OUT_HEADER_LEN..OUT_HEADER_LEN + fetched.payload_len];
                request.extend_from_slice(payload);
                capture::serve(server, request, &mut self.payload, sink, counter)
            }
            None => {
                tracing::warn!(?fetched, "malformed FUSE request from io_uring");
                None
            }
        };
        let mut out = [0u8; OUT_HEADER_LEN];
        let payload_len = match reply {
            Some(reply) => {
                out.copy_from_slice(&self.payload[..OUT_HEADER_LEN]);
                (reply.len - OUT_HEADER_LEN) as u32
            }
            None => {
                abi::put_u32(&mut out, 0, OUT_HEADER_LEN as u32);
                abi::put_u32(&mut out, 4, (-libc::EIO) as u32);
                out[8..16].copy_from_slice(&fetched.unique.to_ne_bytes());
                0
            }
        };
        abi::set_reply(&mut self.header, &out, payload_len);
        fetched.commit_id
    }
}

/// What a queue thread needs besides its ring.
pub struct QueueContext<F: FileSystem + Sync> {
    pub server: Arc<Server<F>>,
    /// The FUSE device (a duplicate, kept open as long as the thread runs).
    pub device: File,
    pub payload_len: usize,
    /// Polled for readability: the thread stops when it is.
    pub stop: Arc<std::os::fd::OwnedFd>,
    pub shared: Arc<Shared>,
    pub cpu: Option<usize>,
    /// Where the thread reports whether its REGISTERs were accepted.
    pub registered: Sender<io::Result<()>>,
}

/// How a queue's loop ended.
enum End {
    /// Woken by the stop eventfd.
    Stopped,
    /// The connection is gone (unmounted or aborted).
    Disconnected,
    /// Serving became impossible.
    Failed,
}

/// The queue thread: pin, register, serve until stopped or disconnected.
pub fn serve<F: FileSystem + Sync>(ring: Ring, cx: QueueContext<F>) -> RequestStats {
    let _notice = ExitNotice(Arc::clone(&cx.shared));
    if let Some(cpu) = cx.cpu {
        pin_to_cpu(cpu);
    }
    let Ring { qid, mut ring } = ring;
    let mut entries: Vec<Entry> = (0..ENTRIES).map(|_| Entry::new(cx.payload_len)).collect();
    let counter = RequestCounter::default();
    let end = run(qid, &mut ring, &mut entries, &cx, &counter);
    match end {
        End::Stopped => {}
        End::Disconnected => {
            if !cx.shared.stopping.load(Ordering::SeqCst) {
                tracing::debug!(qid, "FUSE connection gone");
            }
        }
        End::Failed => cx.shared.worker_failed.store(true, Ordering::SeqCst),
    }
    // The ring goes first: once it is closed the kernel no longer touches the entries.
    drop(ring);
    drop(entries);
    counter.stats().from_uring()
}

fn run<F: FileSystem + Sync>(
    qid: u16,
    ring: &mut IoUring<squeue::Entry128, cqueue::Entry>,
    entries: &mut [Entry],
    cx: &QueueContext<F>,
    counter: &RequestCounter,
) -> End {
    let fd = cx.device.as_raw_fd();
    // Makes this thread the ring's only submitter (see `Ring::new`).
    if let Err(err) = ring.submitter().register_enable_rings() {
        return refused(cx, err);
    }
    let sink = match Sink::open() {
        Ok(sink) => sink,
        Err(err) => return refused(cx, err),
    };
    let stop_fd = cx.stop.as_raw_fd();
    let stop =
        opcode::PollAdd::new(types::Fd(stop_fd), libc::POLLIN as u32).build().user_data(STOP);
    for (i, entry) in entries.iter().enumerate() {
        push(ring, &abi::register_sqe(fd, qid, entry.iovecs.as_ptr(), i as u64));
    }
    push(ring, &stop.into());
    let mut done: Vec<(u64, i32)> = Vec::with_capacity(ENTRIES + 1);
    if let Err(err) = ring.submit() {
        return refused(cx, err);
    }
    // A REGISTER that fails does so at once (the kernel then falls back to /dev/fuse for
    // the whole connection); accepted ones complete only when a request arrives.
    done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
    let refusal = done.iter().find(|&&(ud, res)| ud != STOP && res < 0);
    let _ = cx.registered.send(match refusal {
        Some(&(_, res)) => Err(io::Error::from_raw_os_error(-res)),
        None => Ok(()),
    });
    let mut live = if refusal.is_some() { 0 } else { entries.len() };
    let registered = live > 0;
    let mut request = Vec::new();
    loop {
        let mut stopping = false;
        let mut disconnected = false;
        for (user_data, res) in done.drain(..) {
            if user_data == STOP {
                stopping = true;
                continue;
            }
            if res < 0 {
                live = live.saturating_sub(1);
                match -res {
                    libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED | libc::ENODEV => {
                        disconnected = true;
                    }
                    errno if registered => {
                        let err = io::Error::from_raw_os_error(errno);
                        tracing::warn!(qid, error = %err, "FUSE io_uring entry lost");
                    }
                    _ => {}
                }
                continue;
            }
            let Some(entry) = entries.get_mut(user_data as usize) else { continue };
            let commit_id = entry.serve(&cx.server, &mut request, &sink, counter);
            push(ring, &abi::commit_sqe(fd, qid, commit_id, user_data));
        }
        if stopping {
            // Replies already made still reach their callers.
            let _ = ring.submit();
            return End::Stopped;
        }
        if disconnected {
            return End::Disconnected;
        }
        if registered && live == 0 {
            tracing::error!(qid, "every FUSE io_uring entry of the queue is lost");
            return End::Failed;
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(err) if err.raw_os_error() == Some(libc::EINTR) => {}
            Err(err) => {
                tracing::error!(qid, error = %err, "io_uring_enter failed");
                return End::Failed;
            }
        }
        done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
    }
}

/// The queue cannot start: says so (the main thread then makes the kernel use /dev/fuse
/// instead) and waits to be stopped, so that its exit is not taken for an unmount.
fn refused<F: FileSystem + Sync>(cx: &QueueContext<F>, err: io::Error) -> End {
    let _ = cx.registered.send(Err(err));
    let mut fds = [PollFd::new(cx.stop.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) if fds[0].revents().is_some_and(|r| !r.is_empty()) => return End::Stopped,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(err) => {
                tracing::error!(error = %err, "cannot wait for the stop eventfd");
                return End::Failed;
            }
        }
    }
}

/// Queues `sqe`, submitting what is queued first if the submission queue is full (it holds
/// one SQE per entry plus the stop poll, so it never is in practice).
fn push(ring: &mut IoUring<squeue::Entry128, cqueue::Entry>, sqe: &squeue::Entry128) {
    loop {
        // SAFETY: the SQE's buffers (an entry's iovecs and buffers, or none) live in the
        // queue thread's `entries` until after the ring is dropped.
        if unsafe { ring.submission().push(sqe) }.is_ok() {
            return;
        }
        if let Err(err) = ring.submit() {
            tracing::error!(error = %err, "io_uring submit failed");
            return;
        }
    }
}

/// The stop eventfd's borrowed form, for writing to it.
pub fn wake(stop: BorrowedFd<'_>) -> io::Result<()> {
    nix::unistd::write(stop, &1u64.to_ne_bytes()).map(|_| ()).map_err(io::Error::from)
}
