//! Writer processes: a container's namespaced sysctls are written with exactly the power
//! of the container's root, never the daemon's.
//!
//! A write to /proc/sys runs the kernel's handler as the writing task: a handler that asks
//! `capable()` (the initial user namespace) would see host root in a daemon thread, and
//! the kernel would let that thread write any namespace it has joined, the host's too. So
//! every write of a namespaced entry goes to a **writer**: this binary re-executed with
//! [`WRITER_ARG`], one per container user namespace and set of network, UTS and IPC
//! namespaces, which
//! 1. makes itself non-dumpable (first instruction of its `main`; it was executed in the
//!    host's namespaces, so its memory belongs to the initial user namespace and only host
//!    root could ever trace it), and sets no_new_privs;
//! 2. drops its supplementary groups, joins the container's user namespace (it is still
//!    single-threaded), then the caller's network, UTS and IPC namespaces, which the
//!    kernel lets it join only where the container's user namespace has `CAP_SYS_ADMIN`;
//! 3. becomes uid and gid 0 of that user namespace: the container root's host ids, every
//!    capability in the container's user namespace (and those below it), none in the
//!    initial one;
//! 4. answers write jobs on a `SOCK_SEQPACKET` socket (fd 3) until the daemon closes it,
//!    or the daemon thread that started it ends (`PR_SET_PDEATHSIG`: a job that finds its
//!    writer gone goes to a new one).
//!
//! It stays in the host's mount and pid namespaces: no process of a container can see it.
//! The daemon checks, before it starts one, that each of the caller's namespaces is owned
//! by the container's user namespace or one below it (`NS_GET_USERNS`, then
//! `NS_GET_PARENT` up to it): a container sharing the host's UTS or IPC namespace gets
//! EACCES, and the kernel would refuse the writer's `setns` anyway.
//!
//! The host name and domain name are set with sethostname(2)/setdomainname(2), as the
//! kernel's `proc_do_uts_string` would write them ([`uts_string_write`]): the kernel lets
//! only host root write them through /proc/sys.
//!
//! Writers are limited like the namespace threads: at most [`super::MAX_WORKERS`], each
//! gone after [`super::WORKER_IDLE`] without a job (reaped by [`Writers::reap_idle`]),
//! every answer awaited at most [`JOB_TIMEOUT`] (then the writer is killed). A container's
//! writers end with its registration ([`Writers::end_container`]): none outlives it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::identity::owner_within;
use super::nsworker::{NsError, NsFds, NsKey, JOB_TIMEOUT};

/// The hidden first argument that makes `sysvisor-fs` run as a writer.
pub const WRITER_ARG: &str = "__sysctl-writer";
/// The most bytes of one write passed on (a longer write is short: the kernel parses at
/// most a page of a number, and 64 bytes of a host name).
pub const MAX_WRITE: usize = 16 * 1024;
/// The longest path a job may name.
const MAX_PATH: usize = 4096;
/// `__NEW_UTS_LEN`: the longest host or domain name.
const UTS_LEN: usize = 64;

/// File descriptor numbers in the writer.
const FD_SOCKET: RawFd = 3;
const FD_USER: RawFd = 4;
const FD_NS: [(RawFd, libc::c_int); 3] =
    [(5, libc::CLONE_NEWNET), (6, libc::CLONE_NEWUTS), (7, libc::CLONE_NEWIPC)];

/// How a job writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// write(2) to the file at the offset.
    File,
    /// sethostname(2) of what the kernel's handler of the file would make of the write.
    Hostname,
    /// setdomainname(2), likewise.
    Domainname,
}

impl How {
    fn code(self) -> u8 {
        match self {
            How::File => 0,
            How::Hostname => 1,
            How::Domainname => 2,
        }
    }

    fn from_code(code: u8) -> Option<How> {
        [How::File, How::Hostname, How::Domainname].into_iter().find(|h| h.code() == code)
    }
}

/// One write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteJob {
    pub how: How,
    /// An absolute path below /proc/sys (as the writer's namespaces show it).
    pub path: PathBuf,
    pub offset: u64,
    pub data: Vec<u8>,
}

impl WriteJob {
    /// `how`, offset (8 bytes little-endian), path length (4), path, data.
    fn encode(&self) -> Vec<u8> {
        let path = self.path.as_os_str().as_bytes();
        let mut out = Vec::with_capacity(13 + path.len() + self.data.len());
        out.push(self.how.code());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&(path.len() as u32).to_le_bytes());
        out.extend_from_slice(path);
        out.extend_from_slice(&self.data);
        out
    }

    fn decode(bytes: &[u8]) -> Option<WriteJob> {
        let how = How::from_code(*bytes.first()?)?;
        let offset = u64::from_le_bytes(bytes.get(1..9)?.try_into().ok()?);
        let len = u32::from_le_bytes(bytes.get(9..13)?.try_into().ok()?) as usize;
        let path = bytes.get(13..13usize.checked_add(len)?)?;
        let data = bytes.get(13 + len..)?;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(path));
        Some(WriteJob { how, path, offset, data: data.to_vec() })
    }
}

/// A writer's namespaces: the container's user namespace and the caller's three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WriterKey {
    pub ns: NsKey,
    /// The container's user namespace (nsfs inode).
    pub user_ns: u64,
}

/// Handles on a writer's namespaces, checked.
#[derive(Debug)]
pub struct WriterFds {
    user: File,
    ns: NsFds,
}

impl WriterFds {
    /// The namespaces of process `pid` (which must be `key.ns`), each of which must be
    /// owned by user namespace `key.user_ns` or one below it ([`NsError::NotOwned`]).
    pub fn open(pid: u32, key: WriterKey) -> Result<WriterFds, NsError> {
        let ns = NsFds::open(pid).map_err(NsError::Open)?;
        if ns.key().map_err(NsError::Open)? != key.ns {
            return Err(NsError::Moved);
        }
        let mut user = None;
        for file in ns.files() {
            match owner_within(file, key.user_ns).map_err(NsError::Open)? {
                Some(owner) => user = Some(owner),
                None => return Err(NsError::NotOwned),
            }
        }
        Ok(WriterFds { user: user.ok_or(NsError::NotOwned)?, ns })
    }
}

/// One running writer.
struct Writer {
    /// The id of the container it writes for.
    container: String,
    channel: Mutex<Channel>,
    used: Mutex<Instant>,
}

struct Channel {
    socket: UnixStream,
    child: Child,
}

impl Drop for Channel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Writer {
    /// Sends `job` and waits for the answer: bytes written, or the kernel's errno. `None`
    /// when the job could not be sent (the writer is gone; nothing was written).
    fn call(&self, job: &WriteJob) -> Option<Result<Result<usize, i32>, NsError>> {
        *self.used.lock() = Instant::now();
        let mut channel = self.channel.lock();
        let request = job.encode();
        match channel.socket.write(&request) {
            Ok(n) if n == request.len() => {}
            _ => return None,
        }
        let answer = receive_answer(&mut channel.socket);
        Some(answer.map(|a| if a < 0 { Err((-a) as i32) } else { Ok(a as usize) }))
    }
}

/// One answer of a writer: a non-negative count or a negated errno.
fn receive_answer(socket: &mut UnixStream) -> Result<i64, NsError> {
    let mut buf = [0u8; 8];
    match socket.read(&mut buf) {
        Ok(8) => Ok(i64::from_le_bytes(buf)),
        Ok(_) => Err(NsError::Gone),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            Err(NsError::Timeout(JOB_TIMEOUT))
        }
        Err(_) => Err(NsError::Gone),
    }
}

/// The writers, by [`WriterKey`]. Dropping it ends every writer.
pub struct Writers {
    procs: Mutex<HashMap<WriterKey, Arc<Writer>>>,
    exe: PathBuf,
    idle: Duration,
    max: usize,
}

impl Writers {
    /// Writers run `exe`; they end after `idle` without a job; at most `max` at once.
    pub fn new(exe: PathBuf, idle: Duration, max: usize) -> Writers {
        Writers { procs: Mutex::new(HashMap::new()), exe, idle, max }
    }

    /// Runs `job` in the writer of `key`, started for container `container` with handles
    /// from `open` if there is none. The outer error is the writer's (the job was not
    /// done), the inner one the kernel's answer to the write.
    pub fn write(
        &self,
        key: WriterKey,
        container: &str,
        open: impl FnOnce() -> Result<WriterFds, NsError>,
        job: &WriteJob,
    ) -> Result<Result<usize, i32>, NsError> {
        // A writer can end between jobs (its parent thread exited: PR_SET_PDEATHSIG); a job
        // it never got goes to a new one, once.
        let mut open = Some(open);
        for _ in 0..2 {
            let running = self.procs.lock().get(&key).cloned();
            let writer = match running {
                Some(writer) => writer,
                None => self.writer(key, container, open.take().ok_or(NsError::Gone)?)?,
            };
            let answer = writer.call(job);
            if !matches!(answer, Some(Ok(_))) {
                // A writer that timed out or died is ended; the next job starts a new one.
                let mut procs = self.procs.lock();
                if procs.get(&key).is_some_and(|w| Arc::ptr_eq(w, &writer)) {
                    procs.remove(&key);
                }
            }
            if let Some(answer) = answer {
                return answer;
            }
        }
        Err(NsError::Gone)
    }

    /// Ends the writers of container `id` (its registration ended: none may outlive it,
    /// they run with its ids and hold its namespaces).
    pub fn end_container(&self, id: &str) {
        self.procs.lock().retain(|_, w| w.container != id);
    }

    /// Ends the writers idle for longer than the idle time.
    pub fn reap_idle(&self) {
        self.procs.lock().retain(|_, w| w.used.lock().elapsed() < self.idle);
    }

    /// Writers running now.
    pub fn len(&self) -> usize {
        self.procs.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn writer(
        &self,
        key: WriterKey,
        container: &str,
        open: impl FnOnce() -> Result<WriterFds, NsError>,
    ) -> Result<Arc<Writer>, NsError> {
        let mut procs = self.procs.lock();
        if let Some(writer) = procs.get(&key) {
            return Ok(writer.clone());
        }
        if procs.len() >= self.max {
            return Err(NsError::TooMany(self.max));
        }
        let fds = open()?;
        let writer = Arc::new(spawn(&self.exe, &fds, container)?);
        procs.insert(key, writer.clone());
        tracing::debug!(net = key.ns.net, user = key.user_ns, "sysctl writer started");
        Ok(writer)
    }
}

/// Starts a writer on `fds` and waits until it is in its namespaces as the container root.
fn spawn(exe: &Path, fds: &WriterFds, container: &str) -> Result<Writer, NsError> {
    let (socket, theirs) = seqpacket_pair().map_err(NsError::Spawn)?;
    let [net, uts, ipc] = fds.ns.files();
    let sources = [theirs.as_raw_fd(), fds.user.as_raw_fd()].into_iter().chain([
        net.as_raw_fd(),
        uts.as_raw_fd(),
        ipc.as_raw_fd(),
    ]);
    // Duplicates above the range 3..=7 first, so that the child's dup2 calls cannot
    // overwrite one of them with another.
    let mut high = Vec::new();
    for fd in sources {
        // SAFETY: F_DUPFD_CLOEXEC on a valid fd returns a new fd or -1.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64) };
        if dup < 0 {
            return Err(NsError::Spawn(io::Error::last_os_error()));
        }
        // SAFETY: the fd was just created for us.
        high.push(unsafe { OwnedFd::from_raw_fd(dup) });
    }
    let raw: Vec<RawFd> = high.iter().map(|fd| fd.as_raw_fd()).collect();
    let mut command = Command::new(exe);
    command
        .arg(WRITER_ARG)
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0);
    // SAFETY: between fork and exec the closure only calls dup2 (async-signal-safe) on fds
    // that are open in the child; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            for (i, fd) in raw.iter().enumerate() {
                if libc::dup2(*fd, FD_SOCKET + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(NsError::Spawn)?;
    drop(high);
    drop(theirs);
    // From here on, dropping the channel kills and reaps the writer.
    let mut channel = Channel { socket, child };
    channel.socket.set_read_timeout(Some(JOB_TIMEOUT)).map_err(NsError::Spawn)?;
    channel.socket.set_write_timeout(Some(JOB_TIMEOUT)).map_err(NsError::Spawn)?;
    match receive_answer(&mut channel.socket)? {
        0 => Ok(Writer {
            container: container.to_string(),
            channel: Mutex::new(channel),
            used: Mutex::new(Instant::now()),
        }),
        errno => Err(NsError::Join(io::Error::from_raw_os_error((-errno) as i32))),
    }
}

/// A connected pair of `SOCK_SEQPACKET` sockets (one message per read, EOF when the peer
/// is gone), close-on-exec.
fn seqpacket_pair() -> io::Result<(UnixStream, UnixStream)> {
    let mut fds: [libc::c_int; 2] = [-1; 2];
    let kind = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC;
    // SAFETY: socketpair writes two new fds into the array we own.
    if unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and nothing else owns them.
    Ok(unsafe { (UnixStream::from_raw_fd(fds[0]), UnixStream::from_raw_fd(fds[1])) })
}

/// The writer's `main` (see the module doc). Exit code 0 when the daemon closed the socket.
pub fn main() -> i32 {
    // SAFETY: prctl with integer arguments. Before anything else: never traceable.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"sysctl-writer".as_ptr(), 0, 0, 0) };
    let parent = std::env::args().nth(2).and_then(|p| p.parse::<libc::pid_t>().ok());
    // SAFETY: the daemon passed the socket as this fd; nothing else in this process owns it.
    let mut socket = unsafe { UnixStream::from_raw_fd(FD_SOCKET) };
    if let Err(err) = become_container_root(parent.unwrap_or(-1)) {
        eprintln!("sysvisor-fs sysctl writer: {err}");
        let errno = err.raw_os_error().unwrap_or(libc::EIO);
        let _ = socket.write(&(-i64::from(errno)).to_le_bytes());
        return 1;
    }
    if socket.write(&0i64.to_le_bytes()).is_err() {
        return 1;
    }
    let mut buf = vec![0u8; 13 + MAX_PATH + MAX_WRITE + 1];
    loop {
        let n = match socket.read(&mut buf) {
            Ok(0) | Err(_) => return 0,
            Ok(n) => n,
        };
        let answer = match WriteJob::decode(&buf[..n]) {
            Some(job) => match perform(&job) {
                Ok(written) => written as i64,
                Err(errno) => -i64::from(errno),
            },
            None => -i64::from(libc::EINVAL),
        };
        if socket.write(&answer.to_le_bytes()).is_err() {
            return 0;
        }
    }
}

/// Steps 1-3 of the module doc: the writer's ids and namespaces.
fn become_container_root(parent: libc::pid_t) -> io::Result<()> {
    let check = |rc: libc::c_int| if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) };
    // SAFETY: each call below is a plain syscall on integers, fds the daemon passed (4..7)
    // or null pointers; none touches memory of ours.
    unsafe {
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setns(FD_USER, libc::CLONE_NEWUSER))?;
        for (fd, kind) in FD_NS {
            check(libc::setns(fd, kind))?;
        }
        for fd in std::iter::once(FD_USER).chain(FD_NS.map(|(fd, _)| fd)) {
            libc::close(fd);
        }
        check(libc::setresgid(0, 0, 0))?;
        check(libc::setresuid(0, 0, 0))?;
        // A change of credentials resets both: set them again.
        check(libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0))?;
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
        if libc::getppid() != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}

/// Does one job: bytes written, or the errno.
fn perform(job: &WriteJob) -> Result<usize, i32> {
    let errno = |e: io::Error| e.raw_os_error().unwrap_or(libc::EIO);
    let inside = job.path.starts_with("/proc/sys")
        && job.path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !inside {
        return Err(libc::EINVAL);
    }
    match job.how {
        How::File => {
            let file = std::fs::OpenOptions::new().write(true).open(&job.path).map_err(errno)?;
            file.write_at(&job.data, job.offset).map_err(errno)
        }
        How::Hostname | How::Domainname => {
            let current = std::fs::read(&job.path).map_err(errno)?;
            let current = current.strip_suffix(b"\n").unwrap_or(&current);
            if let Some(name) = uts_string_write(current, &job.data, job.offset) {
                let ptr = name.as_ptr().cast::<libc::c_char>();
                // SAFETY: the name is a buffer of `name.len()` bytes that lives across the call.
                let rc = unsafe {
                    match job.how {
                        How::Hostname => libc::sethostname(ptr, name.len()),
                        _ => libc::setdomainname(ptr, name.len()),
                    }
                };
                if rc != 0 {
                    return Err(errno(io::Error::last_os_error()));
                }
            }
            Ok(job.data.len())
        }
    }
}

/// What the kernel's `proc_dostring` (strict mode, as `proc_do_uts_string` calls it) makes
/// of a write of `data` at `offset` to a host or domain name `current`: the name up to the
/// offset, then the written bytes up to a NUL or newline, at most 64 in all; `None` (and
/// nothing changes) when the offset is past the end. The whole write is consumed.
pub fn uts_string_write(current: &[u8], data: &[u8], offset: u64) -> Option<Vec<u8>> {
    let len = current.len().min(UTS_LEN);
    let offset = usize::try_from(offset).ok().filter(|o| *o <= len)?;
    let mut name = current[..offset].to_vec();
    for &c in data {
        if name.len() >= UTS_LEN || c == 0 || c == b'\n' {
            break;
        }
        name.push(c);
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_survive_the_wire() {
        let job = WriteJob {
            how: How::Domainname,
            path: "/proc/sys/kernel/domainname".into(),
            offset: 3,
            data: b"x\n\0y".to_vec(),
        };
        assert_eq!(WriteJob::decode(&job.encode()), Some(job));
        assert_eq!(WriteJob::decode(&[9, 0, 0]), None);
        let mut long =
            WriteJob { how: How::File, path: "/p".into(), offset: 0, data: vec![] }.encode();
        long[9] = 0xff; // a path length past the end
        assert_eq!(WriteJob::decode(&long), None);
    }

    #[test]
    fn host_names_are_written_as_the_kernels_handler_does() {
        assert_eq!(uts_string_write(b"old", b"new\n", 0).as_deref(), Some(&b"new"[..]));
        assert_eq!(uts_string_write(b"old", b"a\nb", 0).as_deref(), Some(&b"a"[..]));
        assert_eq!(uts_string_write(b"old", b"er", 3).as_deref(), Some(&b"older"[..]));
        assert_eq!(uts_string_write(b"old", b"x", 1).as_deref(), Some(&b"ox"[..]));
        assert_eq!(uts_string_write(b"old", b"x", 4), None);
        assert_eq!(uts_string_write(b"old", b"", 0).as_deref(), Some(&b""[..]));
        let long = vec![b'h'; 100];
        assert_eq!(uts_string_write(b"", &long, 0).map(|n| n.len()), Some(UTS_LEN));
    }

    #[test]
    fn only_paths_below_proc_sys_are_written() {
        for path in ["/etc/passwd", "/proc/sys/../../etc/passwd", "proc/sys/kernel/hostname"] {
            let job = WriteJob { how: How::File, path: path.into(), offset: 0, data: vec![] };
            assert_eq!(perform(&job), Err(libc::EINVAL), "{path}");
        }
    }
}
