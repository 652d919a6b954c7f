//! What the two transports' worker threads share: request counters, the exit notice that
//! wakes the main thread when a worker stops on its own, and CPU pinning.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use fuse_backend_rs::abi::fuse_abi::{InHeader, OutHeader};
use fuse_backend_rs::api::server::MetricsHook;
use nix::sched::{sched_setaffinity, CpuSet};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{getpid, Pid};

/// Internal wake-up: a worker that stops on its own sends it to the process so that the main
/// thread (in `sigwait`) notices.
pub const WORKER_EXIT_SIGNAL: Signal = Signal::SIGUSR1;

/// FUSE requests served, by opcode, summed over the workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestStats {
    counts: [u64; OPCODE_SLOTS],
    /// How many of them came through io_uring queues.
    via_uring: u64,
}

impl Default for RequestStats {
    fn default() -> Self {
        RequestStats { counts: [0; OPCODE_SLOTS], via_uring: 0 }
    }
}

impl RequestStats {
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Requests served by io_uring queues.
    pub fn via_uring(&self) -> u64 {
        self.via_uring
    }

    /// Marks every request counted so far as served through io_uring.
    pub fn from_uring(mut self) -> RequestStats {
        self.via_uring = self.total();
        self
    }

    /// Requests with FUSE opcode `opcode`.
    pub fn count(&self, opcode: u32) -> u64 {
        self.counts[slot(opcode)]
    }

    /// `LOOKUP=3 OPEN=10 ...` (non-zero counts only).
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (op, &n) in self.counts.iter().enumerate() {
            if n > 0 {
                parts.push(format!("{}={n}", opcode_name(op as u32)));
            }
        }
        parts.join(" ")
    }

    pub fn add(&mut self, other: &RequestStats) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.via_uring += other.via_uring;
    }
}

const OPCODE_SLOTS: usize = 64;

fn slot(opcode: u32) -> usize {
    (opcode as usize).min(OPCODE_SLOTS - 1)
}

/// Name of a FUSE opcode (linux/fuse.h), for the request summary.
pub fn opcode_name(opcode: u32) -> &'static str {
    const NAMES: [&str; 53] = [
        "OP0",
        "LOOKUP",
        "FORGET",
        "GETATTR",
        "SETATTR",
        "READLINK",
        "SYMLINK",
        "OP7",
        "MKNOD",
        "MKDIR",
        "UNLINK",
        "RMDIR",
        "RENAME",
        "LINK",
        "OPEN",
        "READ",
        "WRITE",
        "STATFS",
        "RELEASE",
        "OP19",
        "FSYNC",
        "SETXATTR",
        "GETXATTR",
        "LISTXATTR",
        "REMOVEXATTR",
        "FLUSH",
        "INIT",
        "OPENDIR",
        "READDIR",
        "RELEASEDIR",
        "FSYNCDIR",
        "GETLK",
        "SETLK",
        "SETLKW",
        "ACCESS",
        "CREATE",
        "INTERRUPT",
        "BMAP",
        "DESTROY",
        "IOCTL",
        "POLL",
        "NOTIFY_REPLY",
        "BATCH_FORGET",
        "FALLOCATE",
        "READDIRPLUS",
        "RENAME2",
        "LSEEK",
        "COPY_FILE_RANGE",
        "SETUPMAPPING",
        "REMOVEMAPPING",
        "SYNCFS",
        "TMPFILE",
        "STATX",
    ];
    NAMES.get(opcode as usize).copied().unwrap_or("OTHER")
}

/// Per-worker request counter (plain cells: one thread, no contention on the hot path).
pub struct RequestCounter {
    counts: [Cell<u64>; OPCODE_SLOTS],
}

impl Default for RequestCounter {
    fn default() -> Self {
        RequestCounter { counts: std::array::from_fn(|_| Cell::new(0)) }
    }
}

impl MetricsHook for RequestCounter {
    fn collect(&self, ih: &InHeader) {
        let cell = &self.counts[slot(ih.opcode)];
        cell.set(cell.get() + 1);
    }

    fn release(&self, _oh: Option<&OutHeader>) {}
}

impl RequestCounter {
    pub fn stats(&self) -> RequestStats {
        let mut stats = RequestStats::default();
        for (out, cell) in stats.counts.iter_mut().zip(self.counts.iter()) {
            *out = cell.get();
        }
        stats
    }
}

/// State shared by the main thread and the workers.
#[derive(Default)]
pub struct Shared {
    /// Set before waking the workers: a worker that stops now is not news.
    pub stopping: AtomicBool,
    /// A worker stopped while not stopping.
    pub worker_exited: AtomicBool,
    /// A worker stopped because of an error or a panic.
    pub worker_failed: AtomicBool,
}

/// Tells the main thread when its worker ends unexpectedly, panics included (runs on drop).
pub struct ExitNotice(pub Arc<Shared>);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.worker_failed.store(true, Ordering::SeqCst);
        }
        if !self.0.stopping.load(Ordering::SeqCst) {
            self.0.worker_exited.store(true, Ordering::SeqCst);
            // Process-directed, so the main thread's sigwait takes it.
            if let Err(err) = kill(getpid(), WORKER_EXIT_SIGNAL) {
                tracing::error!(error = %err, "cannot notify the main thread of a worker exit");
            }
        }
    }
}

pub fn pin_to_cpu(cpu: usize) {
    let mut set = CpuSet::new();
    let pinned = set.set(cpu).and_then(|()| sched_setaffinity(Pid::from_raw(0), &set));
    match pinned {
        Ok(()) => tracing::debug!(cpu, "worker pinned"),
        Err(err) => tracing::warn!(cpu, error = %err, "cannot pin worker to its CPU"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_stats_summary() {
        let counter = RequestCounter::default();
        for op in [14u32, 15, 15, 18, 1000] {
            counter.collect(&InHeader { opcode: op, ..InHeader::default() });
        }
        let mut stats = RequestStats::default();
        stats.add(&counter.stats());
        stats.add(&counter.stats());
        assert_eq!(stats.total(), 10);
        assert_eq!(stats.count(15), 4);
        assert_eq!(stats.summary(), "OPEN=2 READ=4 RELEASE=2 OTHER=2");
        assert_eq!(opcode_name(26), "INIT");
        assert_eq!(opcode_name(44), "READDIRPLUS");
    }
}
