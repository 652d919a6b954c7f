//! Threads that live in other processes' network, UTS and IPC namespaces.
//!
//! Namespaced sysctls are read and written by opening /proc/sys from a thread in the
//! caller's namespaces: the kernel picks the values of the reader's (`current`'s)
//! namespaces. setns(2) into a network, UTS or IPC namespace changes only the calling
//! thread, even in a multithreaded process, so each distinct set of the three gets one
//! worker thread that joined them once ([`NsWorkers::run`] hands it closures). A worker
//! holds its namespaces alive; it exits after [`NsWorkers::new`]'s `idle` time without a
//! job, and the next request starts a new one. Workers are keyed by the namespaces'
//! inode numbers: while a worker lives, its namespaces do too, so the numbers cannot be
//! reused by others. Joining goes through file descriptors opened on the caller's
//! `/proc/PID/ns/*` (the caller's identity is pidfd-checked by the caller cache) whose
//! inode numbers must be the key, and the worker checks its own namespaces afterwards.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;

/// How long a caller waits for a worker's answer before giving up (EIO).
pub const JOB_TIMEOUT: Duration = Duration::from_secs(5);

/// A set of namespaces: nsfs inode numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NsKey {
    pub net: u64,
    pub uts: u64,
    pub ipc: u64,
}

const KINDS: [(&str, libc::c_int); 3] =
    [("net", libc::CLONE_NEWNET), ("uts", libc::CLONE_NEWUTS), ("ipc", libc::CLONE_NEWIPC)];

impl NsKey {
    /// The namespaces of process (or thread) `pid`, as the daemon sees it.
    pub fn of_pid(pid: u32) -> io::Result<NsKey> {
        NsKey::of_dir(&format!("/proc/{pid}/ns"))
    }

    /// The namespaces of the calling thread.
    pub fn of_current_thread() -> io::Result<NsKey> {
        NsKey::of_dir("/proc/thread-self/ns")
    }

    fn of_dir(dir: &str) -> io::Result<NsKey> {
        let ino = |kind: &str| std::fs::metadata(format!("{dir}/{kind}")).map(|m| m.ino());
        Ok(NsKey { net: ino("net")?, uts: ino("uts")?, ipc: ino("ipc")? })
    }
}

/// Open handles on the three namespaces of one process.
#[derive(Debug)]
pub struct NsFds {
    files: [File; 3],
}

impl NsFds {
    /// Opens `/proc/PID/ns/{net,uts,ipc}`.
    pub fn open(pid: u32) -> io::Result<NsFds> {
        let open = |kind: &str| File::open(format!("/proc/{pid}/ns/{kind}"));
        Ok(NsFds { files: [open("net")?, open("uts")?, open("ipc")?] })
    }

    /// The namespaces the handles are on.
    pub fn key(&self) -> io::Result<NsKey> {
        let ino = |i: usize| self.files[i].metadata().map(|m| m.ino());
        Ok(NsKey { net: ino(0)?, uts: ino(1)?, ipc: ino(2)? })
    }

    /// The handles: network, UTS, IPC.
    pub fn files(&self) -> &[File; 3] {
        &self.files
    }

    /// Moves the calling thread into the namespaces.
    fn join(&self) -> io::Result<()> {
        for (file, (_, flag)) in self.files.iter().zip(KINDS) {
            // SAFETY: setns takes a valid namespace fd (owned by `file`) and a flag.
            if unsafe { libc::setns(file.as_raw_fd(), flag) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("cannot open the namespaces of the caller: {0}")]
    Open(#[source] io::Error),
    #[error("the caller is no longer in the namespaces it was identified in")]
    Moved,
    #[error("cannot join the caller's namespaces: {0}")]
    Join(#[source] io::Error),
    #[error("the caller's namespaces are not its container's (not owned by its user namespace)")]
    NotOwned,
    #[error("too many namespace workers ({0}); try again later")]
    TooMany(usize),
    #[error("the namespace worker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the namespace worker is gone")]
    Gone,
    #[error("cannot start a namespace worker: {0}")]
    Spawn(#[source] io::Error),
}

impl NsError {
    /// The errno a FUSE caller gets.
    pub fn errno(&self) -> i32 {
        match self {
            NsError::Open(_) | NsError::Moved => libc::ESRCH,
            NsError::TooMany(_) => libc::EAGAIN,
            NsError::NotOwned => libc::EACCES,
            _ => libc::EIO,
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

struct Worker {
    id: u64,
    jobs: mpsc::Sender<Job>,
}

struct Inner {
    workers: Mutex<HashMap<NsKey, Worker>>,
    idle: Duration,
    max: usize,
    next_id: AtomicU64,
}

/// The worker threads, by namespace set. Dropping it lets every worker exit.
pub struct NsWorkers {
    inner: Arc<Inner>,
}

impl NsWorkers {
    /// Workers exit after `idle` without a job; at most `max` live at once.
    pub fn new(idle: Duration, max: usize) -> NsWorkers {
        NsWorkers {
            inner: Arc::new(Inner {
                workers: Mutex::new(HashMap::new()),
                idle,
                max,
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// Runs `job` on a thread in namespaces `key` and returns its result. `open` gives
    /// handles on those namespaces when no worker has them yet.
    pub fn run<R: Send + 'static>(
        &self,
        key: NsKey,
        open: impl Fn() -> io::Result<NsFds>,
        job: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, NsError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let mut job: Job = Box::new(move || {
            let _ = reply.send(job());
        });
        // A worker may exit (idle) between being found and being sent to: then once more.
        let mut sent = false;
        for _ in 0..2 {
            let (id, sender) = self.sender(key, &open)?;
            match sender.send(job) {
                Ok(()) => {
                    sent = true;
                    break;
                }
                Err(mpsc::SendError(back)) => {
                    job = back;
                    let mut workers = self.inner.workers.lock();
                    if workers.get(&key).is_some_and(|w| w.id == id) {
                        workers.remove(&key);
                    }
                }
            }
        }
        if !sent {
            return Err(NsError::Gone);
        }
        answer.recv_timeout(JOB_TIMEOUT).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => NsError::Timeout(JOB_TIMEOUT),
            mpsc::RecvTimeoutError::Disconnected => NsError::Gone,
        })
    }

    /// Workers alive right now.
    pub fn len(&self) -> usize {
        self.inner.workers.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The job queue of the worker of `key`, started if needed.
    fn sender(
        &self,
        key: NsKey,
        open: &impl Fn() -> io::Result<NsFds>,
    ) -> Result<(u64, mpsc::Sender<Job>), NsError> {
        let mut workers = self.inner.workers.lock();
        if let Some(worker) = workers.get(&key) {
            return Ok((worker.id, worker.jobs.clone()));
        }
        if workers.len() >= self.inner.max {
            return Err(NsError::TooMany(self.inner.max));
        }
        let fds = open().map_err(NsError::Open)?;
        if fds.key().map_err(NsError::Open)? != key {
            return Err(NsError::Moved);
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::sync_channel(1);
        let inner = Arc::clone(&self.inner);
        let affinity = process_affinity();
        thread::Builder::new()
            .name(format!("ns-{}", key.net))
            .spawn(move || {
                if let Some(set) = affinity {
                    // The spawner may be a FUSE worker pinned to one CPU.
                    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
                }
                let joined =
                    fds.join().map_err(NsError::Join).and_then(
                        |()| match NsKey::of_current_thread() {
                            Ok(now) if now == key => Ok(()),
                            Ok(_) => Err(NsError::Moved),
                            Err(e) => Err(NsError::Join(e)),
                        },
                    );
                drop(fds);
                let ok = joined.is_ok();
                let _ = ready_tx.send(joined);
                if ok {
                    serve(&inner, key, id, &queue);
                }
            })
            .map_err(NsError::Spawn)?;
        ready.recv_timeout(JOB_TIMEOUT).map_err(|_| NsError::Timeout(JOB_TIMEOUT))??;
        workers.insert(key, Worker { id, jobs: jobs.clone() });
        tracing::debug!(net = key.net, uts = key.uts, ipc = key.ipc, "namespace worker started");
        Ok((id, jobs))
    }
}

/// A worker's loop: jobs until idle for `inner.idle`, then it removes itself.
fn serve(inner: &Inner, key: NsKey, id: u64, queue: &mpsc::Receiver<Job>) {
    let run = |job: Job| {
        if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!(net = key.net, "a namespace job panicked");
        }
    };
    loop {
        match queue.recv_timeout(inner.idle) {
            Ok(job) => run(job),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let mut workers = inner.workers.lock();
                // A job sent while the lock was being taken is still served.
                if let Ok(job) = queue.try_recv() {
                    drop(workers);
                    run(job);
                    continue;
                }
                if workers.get(&key).is_some_and(|w| w.id == id) {
                    workers.remove(&key);
                }
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    tracing::debug!(net = key.net, "namespace worker stopped");
}

/// The CPUs of the process's main thread (never pinned).
fn process_affinity() -> Option<nix::sched::CpuSet> {
    let pid = nix::unistd::Pid::from_raw(std::process::id() as i32);
    nix::sched::sched_getaffinity(pid).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> NsKey {
        NsKey::of_current_thread().unwrap()
    }

    #[test]
    fn jobs_run_in_the_namespaces_and_idle_workers_exit() {
        let workers = NsWorkers::new(Duration::from_millis(100), 8);
        let key = me();
        let pid = std::process::id();
        let got = workers.run(key, || NsFds::open(pid), NsKey::of_current_thread).unwrap();
        assert_eq!(got.unwrap(), key);
        assert_eq!(workers.len(), 1);
        // The same worker serves the next job.
        let tid = workers.run(key, || NsFds::open(pid), || nix::unistd::gettid().as_raw()).unwrap();
        let again = workers.run(key, || panic!("no new worker"), || nix::unistd::gettid().as_raw());
        assert_eq!(again.unwrap(), tid);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !workers.is_empty() {
            assert!(std::time::Instant::now() < deadline, "idle worker not reaped");
            thread::sleep(Duration::from_millis(20));
        }
        // And a new one starts on demand.
        assert_eq!(workers.run(key, || NsFds::open(pid), || 7).unwrap(), 7);
    }

    #[test]
    fn a_key_that_does_not_match_the_handles_is_refused() {
        let workers = NsWorkers::new(Duration::from_millis(100), 8);
        let wrong = NsKey { net: 1, uts: 2, ipc: 3 };
        let err = workers.run(wrong, || NsFds::open(std::process::id()), || ()).unwrap_err();
        assert!(matches!(err, NsError::Moved), "{err}");
        assert_eq!(err.errno(), libc::ESRCH);
        let err = workers.run(wrong, || Err(io::Error::from_raw_os_error(libc::ENOENT)), || ());
        assert!(matches!(err, Err(NsError::Open(_))));
        assert!(workers.is_empty());
    }

    #[test]
    fn the_worker_limit_holds_and_a_panicking_job_is_survived() {
        let workers = NsWorkers::new(Duration::from_secs(10), 0);
        let err = workers.run(me(), || NsFds::open(std::process::id()), || ()).unwrap_err();
        assert_eq!(err.errno(), libc::EAGAIN);
        let workers = NsWorkers::new(Duration::from_secs(10), 1);
        let pid = std::process::id();
        let err = workers.run(me(), || NsFds::open(pid), || panic!("job fails")).unwrap_err();
        assert!(matches!(err, NsError::Gone), "{err}");
        assert_eq!(workers.run(me(), || NsFds::open(pid), || 1).unwrap(), 1);
    }
}
