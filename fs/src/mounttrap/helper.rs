//! The helper process that performs a proc or sysfs mount for a container.
//!
//! Entering a mount or user namespace needs a single-threaded process, and a procfs shows
//! the pid namespace of the process that mounts it, so the daemon runs each such mount in
//! a short-lived helper: its own binary (`/proc/self/exe`) with the hidden argument
//! [`HELPER_ARG`], the [`Job`] as JSON on stdin, the caller's namespaces, root and working
//! directory as file descriptors 3 to 8 (and a target directory as 9), the [`Outcome`] as
//! JSON on stdout. The daemon kills it (its whole process group) after a timeout.
//!
//! What it does, and why in this order:
//! 1. `unshare(CLONE_NEWNS)`, everything private: a copy of the host's mount table of its
//!    own, owned by the initial user namespace. Mounts made there are not subject to the
//!    "fully visible" rule that refuses a new procfs inside the container.
//! 2. `setns` into the caller's pid and network namespaces, then `fork`: the child lives in
//!    the caller's pid namespace (a procfs shows the mounter's), and a sysfs shows the
//!    mounter's network namespace.
//! 3. The child mounts the file system on the stage directory and puts the overlays on it
//!    (views, masks, read-only binds; host paths resolve here).
//! 4. `setns` into the caller's user namespace and `unshare(CLONE_NEWNS)` again: the copy
//!    now belongs to a less privileged user namespace, so the kernel locks every mount in
//!    it (`MNT_LOCKED`, and read-only, nosuid, ... flags become unchangeable). From here
//!    on no process of the container can unmount, move or remount an overlay, nor bind
//!    the file system without them.
//! 5. `open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)` of the stage: a detached copy with the
//!    locks (only the top mount is unlocked, so the container may unmount it whole).
//! 6. `setns` into the caller's mount namespace, `chroot` to its root, `chdir` to its
//!    working directory, and `move_mount` the tree onto the target as the caller named it.
//!
//! With [`Job::replace`] (used once per container, on its own `/proc` and `/sys`), the tree
//! goes beneath the existing top mount (`MOVE_MOUNT_BENEATH`), the children of the old
//! mount that are not overlays (`/sys/fs/cgroup`) move over to the new one, and the old
//! one is detached: an atomic swap, so readers never find the path empty.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::abi::{
    MOVE_MOUNT_BENEATH, MOVE_MOUNT_F_EMPTY_PATH, MOVE_MOUNT_T_EMPTY_PATH, OPEN_TREE_CLOEXEC,
    OPEN_TREE_CLONE,
};
use super::overlays::{Overlay, OverlayKind};
use super::policy::FsKind;

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

/// Steps whose failure is the caller's own error (a bad option, a missing target): their
/// errno goes back to the caller as it is. Any other failure is the trap's, and the caller
/// gets EIO.
pub const CALLER_STEPS: &[&str] = &["mount", "attach", "umount"];

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

/// The caller's descriptors for a job.
pub struct JobFds<'a> {
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
    let input = serde_json::to_vec(task).map_err(|e| HelperError::Spawn(e.into()))?;

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

/// The helper's `main`: reads the task, performs it, prints the outcome. The exit code is 0
/// whenever an outcome was printed.
pub fn main() -> i32 {
    let mut input = String::new();
    let task: Task =
        match io::stdin().read_to_string(&mut input).map(|_| serde_json::from_str(&input)) {
            Ok(Ok(task)) => task,
            Ok(Err(err)) => {
                eprintln!("bad task: {err}");
                return 2;
            }
            Err(err) => {
                eprintln!("cannot read the task: {err}");
                return 2;
            }
        };
    let result = match &task {
        Task::Mount(job) => perform(job),
        Task::Unmount { target, flags } => unmount(target, *flags),
    };
    match result {
        Ok(()) => report(&Outcome { errno: 0, step: None }),
        Err(failure) => {
            eprintln!("{}: {}", failure.step, io::Error::from_raw_os_error(failure.errno));
            report(&Outcome { errno: failure.errno, step: Some(failure.step) })
        }
    }
}

fn report(outcome: &Outcome) -> i32 {
    let line = serde_json::to_string(outcome).unwrap_or_else(|_| "{}".into());
    let mut out = io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        return 3;
    }
    0
}

/// A failed step.
#[derive(Debug)]
struct Failure {
    step: String,
    errno: i32,
}

type Step<T> = Result<T, Failure>;

fn fail(step: &str) -> impl FnOnce(io::Error) -> Failure + '_ {
    move |err| Failure { step: step.to_string(), errno: err.raw_os_error().unwrap_or(libc::EIO) }
}

fn check(rc: libc::c_long, step: &str) -> Step<libc::c_long> {
    if rc < 0 {
        return Err(fail(step)(io::Error::last_os_error()));
    }
    Ok(rc)
}

fn cstring(s: &str, step: &str) -> Step<CString> {
    CString::new(s).map_err(|_| Failure { step: step.to_string(), errno: libc::EINVAL })
}

fn path_cstring(p: &Path, step: &str) -> Step<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Failure { step: step.to_string(), errno: libc::EINVAL })
}

fn sys_mount(
    source: Option<&CString>,
    target: &CString,
    fstype: Option<&CString>,
    flags: u64,
    data: Option<&CString>,
    step: &str,
) -> Step<()> {
    let ptr = |s: Option<&CString>| s.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: mount(2) with NUL-terminated strings that live across the call (or null).
    let rc = unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags as libc::c_ulong,
            ptr(data).cast(),
        )
    };
    check(rc as libc::c_long, step).map(drop)
}

fn setns(fd: RawFd, nstype: libc::c_int, step: &str) -> Step<()> {
    // SAFETY: setns on an fd the daemon passed us.
    check(unsafe { libc::setns(fd, nstype) } as libc::c_long, step).map(drop)
}

fn perform(job: &Job) -> Step<()> {
    // SAFETY: unshare of the mount namespace in this single-threaded process.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) } as libc::c_long, "unshare")?;
    let root = cstring("/", "private")?;
    sys_mount(None, &root, None, libc::MS_REC | libc::MS_PRIVATE, None, "private")?;
    setns(FD_PID, libc::CLONE_NEWPID, "setns pid")?;
    setns(FD_NET, libc::CLONE_NEWNET, "setns net")?;
    // SAFETY: fork in a single-threaded process; the child only runs this job and exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(fail("fork")(io::Error::last_os_error()));
    }
    if child == 0 {
        // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of this process.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let code = match in_pid_namespace(job) {
            Ok(()) => report(&Outcome { errno: 0, step: None }),
            Err(failure) => {
                eprintln!("{}: {}", failure.step, io::Error::from_raw_os_error(failure.errno));
                report(&Outcome { errno: failure.errno, step: Some(failure.step) })
            }
        };
        // SAFETY: leave without running the parent's exit handlers twice.
        unsafe { libc::_exit(code + 10) };
    }
    let mut status = 0;
    // SAFETY: waitpid on our own child, into a status we own.
    let rc = unsafe { libc::waitpid(child, &mut status, 0) };
    if rc < 0 {
        return Err(fail("wait")(io::Error::last_os_error()));
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 10 {
        // The child printed its outcome; print nothing more.
        // SAFETY: see above.
        unsafe { libc::_exit(0) };
    }
    Err(Failure { step: format!("child ended with status {status:#x}"), errno: libc::EIO })
}

/// Enters the caller's user and mount namespaces, root and working directory.
fn enter_caller() -> Step<()> {
    setns(FD_MNT, libc::CLONE_NEWNS, "setns mnt")?;
    // SAFETY: fchdir/chroot/fchdir on fds the daemon passed us.
    check(unsafe { libc::fchdir(FD_ROOT) } as libc::c_long, "chroot")?;
    let dot = cstring(".", "chroot")?;
    // SAFETY: chroot to the current directory.
    check(unsafe { libc::chroot(dot.as_ptr()) } as libc::c_long, "chroot")?;
    // SAFETY: as above.
    check(unsafe { libc::fchdir(FD_CWD) } as libc::c_long, "chdir").map(drop)
}

fn unmount(target: &str, flags: i32) -> Step<()> {
    setns(FD_USER, libc::CLONE_NEWUSER, "setns user")?;
    enter_caller()?;
    let target = cstring(target, "umount")?;
    // SAFETY: umount2 with a NUL-terminated path.
    check(unsafe { libc::umount2(target.as_ptr(), flags) } as libc::c_long, "umount").map(drop)
}

fn in_pid_namespace(job: &Job) -> Step<()> {
    let stage = path_cstring(&job.stage, "stage")?;
    let fstype = cstring(job.fs.name(), "mount")?;
    let data = job.data.as_deref().map(|d| cstring(d, "mount")).transpose()?;
    sys_mount(Some(&fstype), &stage, Some(&fstype), job.flags, data.as_ref(), "mount")?;
    for overlay in &job.overlays {
        apply(&job.stage, overlay)?;
    }

    // Lock: a copy of this namespace owned by the caller's user namespace.
    setns(FD_USER, libc::CLONE_NEWUSER, "setns user")?;
    // SAFETY: unshare in a single-threaded process.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) } as libc::c_long, "lock")?;
    // SAFETY: open_tree with a NUL-terminated path; returns a new fd or -1.
    let tree = check(
        unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                stage.as_ptr(),
                OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as libc::c_uint,
            )
        },
        "open_tree",
    )?;
    // SAFETY: the kernel just returned this fd.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as RawFd) };

    enter_caller()?;

    match &job.target {
        Target::Fd => move_mount(
            tree.as_fd(),
            None,
            // SAFETY: fd 9 was passed to us for this job and stays open.
            unsafe { BorrowedFd::borrow_raw(FD_TARGET) },
            None,
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
            "attach",
        ),
        Target::Path(path) if job.replace.is_none() => {
            let at_cwd = cwd_fd();
            move_mount(tree.as_fd(), None, at_cwd, Some(path), MOVE_MOUNT_F_EMPTY_PATH, "attach")
        }
        Target::Path(path) => replace(tree.as_fd(), path, job.replace.as_deref().unwrap_or(&[])),
    }
}

/// The swap of [`Job::replace`].
fn replace(tree: BorrowedFd<'_>, path: &str, carry: &[String]) -> Step<()> {
    let at_cwd = cwd_fd();
    move_mount(
        tree,
        None,
        at_cwd,
        Some(path),
        MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_BENEATH,
        "beneath",
    )?;
    // On a failure from here on the old mount stays on top: the container keeps what it
    // had, and the new tree stays hidden beneath it.
    for rel in carry {
        let from = format!("{}/{rel}", path.trim_end_matches('/'));
        move_mount(at_cwd, Some(&from), tree, Some(rel), 0, "carry")?;
    }
    let target = cstring(path, "detach")?;
    // SAFETY: umount2 with a NUL-terminated path.
    check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } as libc::c_long, "detach")
        .map(drop)
}

fn cwd_fd() -> BorrowedFd<'static> {
    // SAFETY: AT_FDCWD is a valid "fd" for the *at calls for the life of the process.
    unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) }
}

fn move_mount(
    from: BorrowedFd<'_>,
    from_path: Option<&str>,
    to: BorrowedFd<'_>,
    to_path: Option<&str>,
    flags: libc::c_uint,
    step: &str,
) -> Step<()> {
    let from_path = cstring(from_path.unwrap_or(""), step)?;
    let to_path = cstring(to_path.unwrap_or(""), step)?;
    // SAFETY: move_mount with valid fds (or AT_FDCWD) and NUL-terminated paths.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            from_path.as_ptr(),
            to.as_raw_fd(),
            to_path.as_ptr(),
            flags,
        )
    };
    check(rc, step).map(drop)
}

/// Puts one overlay on the stage. A path the file system does not have is skipped (as runc
/// skips missing masked and read-only paths); symlinks are skipped too.
fn apply(stage: &Path, overlay: &Overlay) -> Step<()> {
    let step = format!("overlay {}", overlay.rel);
    let path = stage.join(&overlay.rel);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(meta) if !meta.file_type().is_symlink() => meta,
        _ => return Ok(()),
    };
    let target = path_cstring(&path, &step)?;
    let keep = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    match &overlay.kind {
        OverlayKind::Bind { source, recursive, flags } => {
            let source = path_cstring(source, &step)?;
            let rec = if *recursive { libc::MS_REC } else { 0 };
            sys_mount(Some(&source), &target, None, libc::MS_BIND | rec, None, &step)?;
            if *flags != 0 {
                let remount = libc::MS_BIND | libc::MS_REMOUNT | flags;
                sys_mount(None, &target, None, remount, None, &step)?;
            }
            Ok(())
        }
        OverlayKind::ReadOnly => {
            sys_mount(Some(&target), &target, None, libc::MS_BIND | libc::MS_REC, None, &step)?;
            let remount = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | keep;
            sys_mount(None, &target, None, remount, None, &step)
        }
        OverlayKind::Mask if meta.is_dir() => {
            let tmpfs = cstring("tmpfs", &step)?;
            let options = cstring("size=0,mode=0555", &step)?;
            sys_mount(
                Some(&tmpfs),
                &target,
                Some(&tmpfs),
                libc::MS_RDONLY | keep,
                Some(&options),
                &step,
            )
        }
        OverlayKind::Mask => {
            let null = cstring("/dev/null", &step)?;
            sys_mount(Some(&null), &target, None, libc::MS_BIND, None, &step)
        }
    }
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
            overlays: vec![Overlay { rel: "keys".into(), kind: OverlayKind::Mask }],
            stage: "/run/sysvisor/mounttrap".into(),
            replace: Some(vec!["fs/cgroup".into()]),
        };
        let task = Task::Mount(job);
        let json = serde_json::to_string(&task).unwrap();
        assert_eq!(serde_json::from_str::<Task>(&json).unwrap(), task);
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
        assert_eq!(at("overlay meminfo", libc::ENOENT).caller_errno(), libc::EIO);
        assert_eq!(at("setns user", libc::EPERM).caller_errno(), libc::EIO);
        assert_eq!(Outcome { errno: 0, step: None }.caller_errno(), 0);
    }
}
