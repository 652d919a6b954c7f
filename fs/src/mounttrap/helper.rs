//! The helper processes that perform a proc or sysfs mount (or unmount) for a container.
//!
//! Entering a mount or user namespace needs a single-threaded process, and a procfs shows
//! the pid namespace of the process that creates it, so the daemon runs each such job in a
//! short-lived helper: its own binary (`/proc/self/exe`) with the hidden argument
//! [`HELPER_ARG`], the [`Request`] as JSON on stdin, the caller's namespaces, root and
//! working directory as file descriptors 3 to 8 (and a target as 9), the [`Outcome`] as JSON
//! on stdout. The daemon kills the helper's whole process group after a timeout.
//!
//! **Nothing of the container may reach a host-privileged process.** The helper makes
//! itself non-dumpable before anything else (exec made it dumpable), so no process without
//! CAP_SYS_PTRACE in the initial user namespace can ptrace it, read its memory or open its
//! /proc/PID/{root,cwd,fd}; and the part that runs as host root never joins a namespace of
//! the container. What does join them is forked and first becomes the caller (its
//! effective host uid and gid, no supplementary groups, no capability outside the caller's
//! user namespace and, once it has entered them, none the caller lacks), see [`confine`]. A mount takes three short-lived processes
//! ([`mount`]):
//!
//! 1. The helper (host root, host pid namespace) unshares a private copy of the host's
//!    mount table, owned by the initial user namespace: a new procfs mounted there is not
//!    subject to the "fully visible" rule that refuses one inside the container.
//! 2. A *maker* becomes the caller, enters its mount namespace and root, and its pid
//!    (proc) or network (sysfs) namespace, and forks the *creator*: the only process that
//!    lives in the caller's pid namespace. It runs `fsopen` (a procfs belongs to the pid
//!    namespace of the process that opens it, a sysfs to its network namespace), sets the
//!    caller's options and creates the superblock with the caller's own rights, and hands
//!    the file system context to the helper over a socket. Its root is the caller's.
//! 3. The helper `fsmount`s it in its private namespace, on the stage directory, and puts
//!    the overlays on it (views, masks, read-only binds; host paths resolve here).
//! 4. An *attacher* becomes the caller, starting in the stage, and unshares its mount
//!    namespace: the copy belongs to the caller's user namespace, so the kernel locks every
//!    mount in it (`MNT_LOCKED`; read-only, nosuid, ... become unchangeable). From here on no
//!    process of the container can unmount, move or remount an overlay, nor bind the file
//!    system without them. It takes a detached copy of the stage
//!    (`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`, locked but for its top mount, so the
//!    container may unmount it whole), enters the caller's mount namespace, root and
//!    working directory and moves the tree onto the target as the caller named it (a
//!    trailing symlink is followed, as mount(2) does). It lives in the host's pid
//!    namespace, where no process of the container can name it.
//!
//! With [`Job::replace`] (used once per container, on its own `/proc` and `/sys`), the tree
//! goes beneath the existing top mount (`MOVE_MOUNT_BENEATH`), the children of the old
//! mount that are not overlays (`/sys/fs/cgroup`) move over to the new one, and the old
//! one is detached: an atomic swap, so readers never find the path empty.
//!
//! An unmount is done by the helper itself after it became the caller.

mod confine;
mod mount;
mod sys;

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::overlays::Overlay;
use super::policy::{EmptyFs, FsKind};
use super::process::Credentials;

/// The hidden first argument that makes `sysvisor-fs` run as the helper.
pub const HELPER_ARG: &str = "__mounttrap-helper";

/// File descriptor numbers in the helper.
const FD_USER: RawFd = 3;
const FD_MNT: RawFd = 4;
const FD_PID: RawFd = 5;
const FD_NET: RawFd = 6;
const FD_ROOT: RawFd = 7;
const FD_CWD: RawFd = 8;
const FD_TARGET: RawFd = 9;

/// What the daemon sends a helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub task: Task,
    /// The caller's host ids and capabilities: whatever of the helper joins the caller's
    /// namespaces runs with them.
    pub creds: Credentials,
}

/// What a helper does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Task {
    Mount(Job),
    /// `umount2(target, flags)` in the caller's user and mount namespaces, root and cwd:
    /// the lazy unmount of a proc or sysfs the trap mounted (see `handler`).
    Unmount {
        target: String,
        flags: i32,
    },
    /// An empty, read-only tmpfs named `fs` on `target` (resolved as `Unmount`'s), mounted
    /// as the caller with its capabilities: what the trap gives for a debugfs & co.
    EmptyMount {
        fs: EmptyFs,
        target: String,
        flags: u64,
    },
}

/// One mount to perform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub fs: FsKind,
    /// mount(2) flags of the new mount.
    pub flags: u64,
    pub data: Option<String>,
    /// Where: a path as the caller wrote it, or the directory passed as fd 9.
    pub target: Target,
    /// The overlays to put on the new mount, in order.
    pub overlays: Vec<Overlay>,
    /// A directory of the host to mount on in the helper's private namespace.
    pub stage: PathBuf,
    /// Replace the top mount at the target instead of mounting on it; the children of the
    /// old mount at these paths (inside the file system) move to the new one.
    pub replace: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Path(String),
    Fd,
}

/// What the helper reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// 0 on success.
    pub errno: i32,
    /// The step that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// Steps whose failure is the caller's own error (a bad option, a missing target, host
/// ids the helper refuses to take): their errno goes back to the caller as it is. Any
/// other failure is the trap's, and the caller gets EIO.
pub const CALLER_STEPS: &[&str] = &["mount", "attach", "umount", "identity"];

impl Outcome {
    /// The errno for the trapped call.
    pub fn caller_errno(&self) -> i32 {
        match &self.step {
            Some(step) if !CALLER_STEPS.contains(&step.as_str()) => libc::EIO,
            _ => self.errno,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("cannot start the mount helper: {0}")]
    Spawn(#[source] io::Error),
    #[error("the mount helper did not finish within {0:?} and was killed")]
    Timeout(Duration),
    #[error("the mount helper ended with {status} without a result: {stderr}")]
    NoOutcome { status: ExitStatus, stderr: String },
}

/// The caller's descriptors (and credentials) for a job.
pub struct JobFds<'a> {
    pub creds: Credentials,
    pub user: BorrowedFd<'a>,
    pub mnt: BorrowedFd<'a>,
    pub pid: BorrowedFd<'a>,
    pub net: BorrowedFd<'a>,
    pub root: BorrowedFd<'a>,
    pub cwd: BorrowedFd<'a>,
    pub target: Option<BorrowedFd<'a>>,
}

impl<'a> JobFds<'a> {
    /// A process's descriptors, with an optional target directory.
    pub fn of(fds: &'a super::process::ProcessFds, target: Option<BorrowedFd<'a>>) -> JobFds<'a> {
        JobFds {
            creds: fds.creds,
            user: fds.user.as_fd(),
            mnt: fds.mnt.as_fd(),
            pid: fds.pid.as_fd(),
            net: fds.net.as_fd(),
            root: fds.root.as_fd(),
            cwd: fds.cwd.as_fd(),
            target,
        }
    }
}

/// Runs `task` in a helper process (`exe` with [`HELPER_ARG`]) and waits for it at most
/// `timeout`.
pub fn run(
    exe: &Path,
    task: &Task,
    fds: &JobFds<'_>,
    timeout: Duration,
) -> Result<Outcome, HelperError> {
    // Duplicates above the range 3..=9 first, so that the child's dup2 calls cannot
    // overwrite one of them with another.
    let mut high = Vec::new();
    for fd in [fds.user, fds.mnt, fds.pid, fds.net, fds.root, fds.cwd].into_iter().chain(fds.target)
    {
        // SAFETY: F_DUPFD_CLOEXEC on a valid fd returns a new fd or -1.
        let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 64) };
        if dup < 0 {
            return Err(HelperError::Spawn(io::Error::last_os_error()));
        }
        // SAFETY: the fd was just created for us.
        high.push(unsafe { OwnedFd::from_raw_fd(dup) });
    }
    let raw: Vec<RawFd> = high.iter().map(|fd| fd.as_raw_fd()).collect();
    let request = Request { task: task.clone(), creds: fds.creds };
    let input = serde_json::to_vec(&request).map_err(|e| HelperError::Spawn(e.into()))?;

    let mut command = Command::new(exe);
    command
        .arg(HELPER_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: between fork and exec the closure only calls dup2 (async-signal-safe) on fds
    // that are open in the child; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            for (i, fd) in raw.iter().enumerate() {
                if libc::dup2(*fd, FD_USER + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(HelperError::Spawn)?;
    drop(high);
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that died at once shows up as a missing outcome below.
        let _ = stdin.write_all(&input);
    }

    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => wait_a_little(child.id()),
            _ => {
                // The whole group: the child in the caller's pid namespace too.
                // SAFETY: kill with a negative pid signals the helper's own process group.
                unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
                let _ = child.wait();
                return Err(HelperError::Timeout(timeout));
            }
        }
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    if let Some(err) = child.stderr.take() {
        let _ = err.take(4096).read_to_string(&mut stderr);
    }
    serde_json::from_str(stdout.trim())
        .map_err(|_| HelperError::NoOutcome { status, stderr: stderr.trim().to_string() })
}

/// Sleeps until the helper exits or 2 ms pass (a pidfd polls readable on exit).
fn wait_a_little(pid: u32) {
    // SAFETY: pidfd_open takes a pid and flags, returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        std::thread::sleep(Duration::from_millis(2));
        return;
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let mut poll = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: poll on one pollfd we own.
    unsafe { libc::poll(&mut poll, 1, 50) };
}

/// The helper's `main`: makes itself non-dumpable, reads the request, performs it, prints
/// the outcome. The exit code is 0 whenever an outcome was printed.
pub fn main() -> i32 {
    // First of all: exec made this process dumpable again.
    if let Err(failure) = confine::forbid_tracing() {
        return report_failure(failure);
    }
    let mut input = String::new();
    let request: Request =
        match io::stdin().read_to_string(&mut input).map(|_| serde_json::from_str(&input)) {
            Ok(Ok(request)) => request,
            Ok(Err(err)) => {
                eprintln!("bad request: {err}");
                return 2;
            }
            Err(err) => {
                eprintln!("cannot read the request: {err}");
                return 2;
            }
        };
    let result = match &request.task {
        Task::Mount(job) => mount::perform(job, request.creds),
        Task::Unmount { target, flags } => mount::unmount(target, *flags, request.creds),
        Task::EmptyMount { fs, target, flags } => {
            mount::empty_mount(*fs, target, *flags, request.creds)
        }
    };
    match result {
        Ok(()) => report(&Outcome { errno: 0, step: None }),
        Err(failure) => report_failure(failure),
    }
}

fn report_failure(failure: sys::Failure) -> i32 {
    eprintln!("{}: {}", failure.step, io::Error::from_raw_os_error(failure.errno));
    report(&Outcome { errno: failure.errno, step: Some(failure.step) })
}

fn report(outcome: &Outcome) -> i32 {
    let line = serde_json::to_string(outcome).unwrap_or_else(|_| "{}".into());
    let mut out = io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        return 3;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip_as_json() {
        let job = Job {
            fs: FsKind::Proc,
            flags: libc::MS_NOSUID,
            data: Some("hidepid=2".into()),
            target: Target::Path("/proc".into()),
            overlays: vec![Overlay {
                rel: "keys".into(),
                kind: super::super::overlays::OverlayKind::Mask,
            }],
            stage: "/run/sysvisor/mounttrap".into(),
            replace: Some(vec!["fs/cgroup".into()]),
        };
        let request = Request {
            task: Task::Mount(job),
            creds: Credentials { uid: 100000, gid: 100000, caps: u64::MAX },
        };
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), request);
        assert!(json.contains(r#""task":"mount""#) && json.contains(r#""fs":"proc""#), "{json}");
        let unmount = Task::Unmount { target: "/mnt".into(), flags: libc::MNT_DETACH };
        let json = serde_json::to_string(&unmount).unwrap();
        assert_eq!(serde_json::from_str::<Task>(&json).unwrap(), unmount);
    }

    #[test]
    fn only_the_callers_own_errors_reach_it() {
        let at = |step: &str, errno| Outcome { errno, step: Some(step.into()) };
        assert_eq!(at("mount", libc::EINVAL).caller_errno(), libc::EINVAL);
        assert_eq!(at("attach", libc::ENOENT).caller_errno(), libc::ENOENT);
        assert_eq!(at("umount", libc::EBUSY).caller_errno(), libc::EBUSY);
        assert_eq!(at("identity", libc::EPERM).caller_errno(), libc::EPERM);
        assert_eq!(at("overlay meminfo", libc::ENOENT).caller_errno(), libc::EIO);
        assert_eq!(at("setns user", libc::EPERM).caller_errno(), libc::EIO);
        assert_eq!(Outcome { errno: 0, step: None }.caller_errno(), 0);
    }
}
