//! Handling one notification: read the caller's arguments, decide ([`super::policy`]), and
//! for a new proc or sysfs mount check the caller's privileges and run the helper.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::abi::{self, Answer, Notification};
use super::helper::{self, Job, JobFds, Target};
use super::mountinfo;
use super::overlays::Overlays;
use super::policy::{self, Decision, FsKind, NewMount};
use super::process::{self, Memory, ProcessFds};

/// What every handler needs.
#[derive(Debug, Clone)]
pub struct Context {
    /// The daemon's own binary, run as the helper.
    pub exe: PathBuf,
    /// The helper's stage directory.
    pub stage: PathBuf,
    pub helper_timeout: Duration,
    /// The daemon's own user and mount namespaces: a "caller" in them is no container, and
    /// the trap never touches them.
    pub own_userns: (u64, u64),
    pub own_mntns: (u64, u64),
    /// `/proc`, kept open.
    pub proc: Arc<OwnedFd>,
}

impl Context {
    pub fn new(exe: PathBuf, stage: PathBuf, helper_timeout: Duration) -> std::io::Result<Context> {
        let dir = process::proc_dir(std::process::id())?;
        let fds = ProcessFds::open(dir.as_fd())?;
        let proc = OwnedFd::from(std::fs::File::open("/proc")?);
        Ok(Context {
            exe,
            stage,
            helper_timeout,
            own_userns: process::ns_id(fds.user.as_fd())?,
            own_mntns: process::ns_id(fds.mnt.as_fd())?,
            proc: Arc::new(proc),
        })
    }
}

/// A notify fd and the container it belongs to.
#[derive(Debug)]
pub struct Source {
    pub fd: OwnedFd,
    pub container: String,
    /// The pid runc reported for it (the init, or an exec'd process).
    pub pid: u32,
    pub overlays: Arc<Overlays>,
}

/// Decides and carries out one notification; returns the answer to send.
pub fn handle(ctx: &Context, source: &Source, notif: &Notification) -> Answer {
    // A caller that is gone cannot be answered anyway (the send fails with ENOENT).
    let Ok(dir) = process::proc_dir_in(ctx.proc.as_fd(), notif.pid) else {
        return Answer::Continue;
    };
    let Ok(mut memory) = Memory::open(dir.as_fd()) else {
        return Answer::Continue;
    };
    if !abi::id_valid(source.fd.as_fd(), notif.id) {
        return Answer::Continue;
    }
    match policy::decide(notif, &mut memory) {
        Decision::Answer(answer) => answer,
        Decision::NewMount(mount) => new_mount(ctx, source, notif, dir.as_fd(), &mount),
        Decision::CheckUmount { target } => check_umount(source, notif, dir.as_fd(), &target),
    }
}

/// `umount2` of a protected mount: EPERM. Anything else continues (if the lexical lookup
/// misses a protected mount, say through a symlink, the kernel still refuses: the overlays
/// are locked mounts).
fn check_umount(
    source: &Source,
    notif: &Notification,
    dir: BorrowedFd<'_>,
    target: &str,
) -> Answer {
    let cwd = if target.starts_with('/') {
        String::from("/")
    } else {
        match std::fs::read_link(format!("/proc/{}/cwd", notif.pid)) {
            Ok(cwd) => cwd.to_string_lossy().into_owned(),
            Err(_) => return Answer::Continue,
        }
    };
    let Some(path) = mountinfo::absolute(&cwd, target) else {
        return Answer::Continue;
    };
    if !source.overlays.may_cover_path(&path) {
        return Answer::Continue;
    }
    let Ok(text) = process::read_text(dir, "mountinfo") else {
        return Answer::Continue;
    };
    let entries = mountinfo::parse(&text);
    match mountinfo::top_mount_at(&entries, &path) {
        Some(entry) if mountinfo::is_protected(&entries, entry, &source.overlays) => {
            tracing::info!(
                container = %source.container,
                pid = notif.pid,
                path = %path,
                "refused to unmount a view, mask or read-only path"
            );
            Answer::Errno(libc::EPERM)
        }
        _ => Answer::Continue,
    }
}

/// A target the caller named through its own /proc/self (runc mounts on
/// `/proc/self/fd/N`): the rest of the path below `/proc/TID`. The helper's own
/// /proc/self would be the helper, so such targets are opened by the daemon instead.
pub fn self_relative(target: &str) -> Option<&str> {
    let rest =
        target.strip_prefix("/proc/self/").or_else(|| target.strip_prefix("/proc/thread-self/"))?;
    let clean = !rest.is_empty() && rest.split('/').all(|c| !matches!(c, "" | "." | ".."));
    clean.then_some(rest)
}

fn new_mount(
    ctx: &Context,
    source: &Source,
    notif: &Notification,
    dir: BorrowedFd<'_>,
    mount: &NewMount,
) -> Answer {
    let fail = |what: &str, err: &dyn std::fmt::Display| {
        tracing::warn!(container = %source.container, pid = notif.pid, error = %err, "{what}");
        Answer::Errno(libc::EIO)
    };
    let fds = match ProcessFds::open(dir) {
        Ok(fds) => fds,
        Err(err) => return fail("cannot open the caller's namespaces", &err),
    };
    let status = match process::read_text(dir, "status") {
        Ok(status) => status,
        Err(err) => return fail("cannot read the caller's status", &err),
    };
    let target_fd = match self_relative(&mount.target) {
        Some(rest) => match process::open_at(dir, rest, libc::O_PATH) {
            Ok(fd) => Some(fd),
            Err(err) => return Answer::Errno(err.raw_os_error().unwrap_or(libc::ENOENT)),
        },
        None => None,
    };
    // Only now that everything is open: the pid still names the caller.
    if !abi::id_valid(source.fd.as_fd(), notif.id) {
        return Answer::Continue;
    }
    match process::ns_id(fds.user.as_fd()) {
        Ok(id) if id != ctx.own_userns => {}
        // Not in a container's user namespace: not ours to handle.
        _ => return Answer::Continue,
    }
    match may_mount(&fds, &status, mount.fs) {
        Ok(true) => {}
        Ok(false) => return Answer::Errno(libc::EPERM),
        Err(err) => return fail("cannot check the caller's privileges", &err),
    }
    let job = Job {
        fs: mount.fs,
        flags: mount.flags,
        data: mount.data.clone(),
        target: if target_fd.is_some() { Target::Fd } else { Target::Path(mount.target.clone()) },
        overlays: source.overlays.of(mount.fs).to_vec(),
        stage: ctx.stage.clone(),
        replace: None,
    };
    let job_fds = JobFds::of(&fds, target_fd.as_ref().map(|fd| fd.as_fd()));
    match helper::run(&ctx.exe, &job, &job_fds, ctx.helper_timeout) {
        Ok(outcome) if outcome.errno == 0 => {
            tracing::debug!(
                container = %source.container,
                pid = notif.pid,
                fs = mount.fs.name(),
                target = %mount.target,
                "mounted with the views"
            );
            Answer::Success
        }
        Ok(outcome) => {
            let errno = outcome.caller_errno();
            if errno == libc::EIO {
                tracing::warn!(
                    container = %source.container,
                    pid = notif.pid,
                    fs = mount.fs.name(),
                    step = ?outcome.step,
                    error = %std::io::Error::from_raw_os_error(outcome.errno),
                    "the mount helper failed"
                );
            }
            Answer::Errno(errno)
        }
        Err(err) => fail("the mount helper failed", &err),
    }
}

/// The kernel's own permission checks for a new mount, made for the caller (the helper
/// has every capability in the caller's user namespace, whoever the caller is): it needs
/// CAP_SYS_ADMIN over its mount namespace, and over the pid namespace (proc) or network
/// namespace (sysfs) the new mount shows.
fn may_mount(fds: &ProcessFds, status: &str, fs: FsKind) -> std::io::Result<bool> {
    if !process::has_cap_sys_admin(status) {
        return Ok(false);
    }
    let shown = match fs {
        FsKind::Proc => &fds.pid,
        FsKind::Sysfs => &fds.net,
    };
    for ns in [&fds.mnt, shown] {
        let owner = process::owner(ns.as_fd())?;
        if !process::userns_covers(fds.user.as_fd(), owner.as_fd())? {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_targets_are_recognised() {
        assert_eq!(self_relative("/proc/self/fd/7"), Some("fd/7"));
        assert_eq!(self_relative("/proc/thread-self/fd/12"), Some("fd/12"));
        assert_eq!(self_relative("/proc/self/"), None);
        assert_eq!(self_relative("/proc/self/../1/root"), None);
        assert_eq!(self_relative("/proc/selfish/fd/1"), None);
        assert_eq!(self_relative("/mnt"), None);
        assert_eq!(self_relative("proc/self/fd/7"), None);
    }
}
