//! Handling one notification: read the caller's arguments, decide ([`super::policy`]), and
//! for a new proc or sysfs mount check the caller's privileges and run the helper.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::abi::{self, Answer, Notification};
use super::helper::{self, Job, JobFds, Target, Task};
use super::identity;
use super::locks::Guard;
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
    /// See [`super::MountTrapOptions::allow_unlocked_views`].
    pub allow_unlocked_views: bool,
    /// See [`super::MountTrapOptions::pretend_no_beneath`].
    pub pretend_no_beneath: bool,
    /// See [`super::MountTrapOptions::sysinfo`].
    pub sysinfo: Option<Arc<dyn super::sysinfo::FiguresSource>>,
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
            allow_unlocked_views: false,
            pretend_no_beneath: false,
            sysinfo: None,
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
    /// How its calls are served (whether the container's views are locked).
    pub guard: Guard,
    /// What mounts made in another pid namespace than the container's get: the same, with
    /// the per-caller views instead of the container's own files (see
    /// [`Overlays::per_caller`]).
    pub nested_overlays: Arc<Overlays>,
    /// The container's pid namespace (device, inode), if it could be read.
    pub pid_ns: Option<(u64, u64)>,
}

/// Where the trap mounted proc or sysfs for each container (absolute paths as the callers
/// see them, lexically cleaned; the newest [`Mounted::KEEP`] per container). Only a hint:
/// an unmount of such a path is worth a look at the caller's mount table (see
/// [`check_umount`]); what is really there decides.
#[derive(Debug, Default)]
pub struct Mounted(Mutex<HashMap<String, VecDeque<String>>>);

impl Mounted {
    pub const KEEP: usize = 64;

    pub fn add(&self, container: &str, path: String) {
        let mut map = self.0.lock();
        let paths = map.entry(container.to_string()).or_default();
        paths.retain(|p| *p != path);
        if paths.len() >= Mounted::KEEP {
            paths.pop_front();
        }
        paths.push_back(path);
    }

    pub fn contains(&self, container: &str, path: &str) -> bool {
        self.0.lock().get(container).is_some_and(|paths| paths.iter().any(|p| p == path))
    }

    pub fn forget(&self, container: &str) {
        self.0.lock().remove(container);
    }
}

/// The caller's working directory as it sees it (/proc/TID/cwd shows paths relative to the
/// caller's mount namespace), for relative paths only.
fn absolute_path(notif: &Notification, target: &str) -> Option<String> {
    let cwd = if target.starts_with('/') {
        String::from("/")
    } else {
        std::fs::read_link(format!("/proc/{}/cwd", notif.pid)).ok()?.to_string_lossy().into_owned()
    };
    mountinfo::absolute(&cwd, target)
}

/// Decides and carries out one notification; returns the answer to send.
pub fn handle(ctx: &Context, source: &Source, mounted: &Mounted, notif: &Notification) -> Answer {
    // Not a mount: no guard applies (it touches no mount), answered on its own.
    if abi::Syscall::decode(notif.arch, notif.nr) == Some(abi::Syscall::Sysinfo) {
        return super::sysinfo::answer(ctx, source, notif);
    }
    // A caller that is gone cannot be answered anyway (the send fails with ENOENT).
    let Ok(dir) = process::proc_dir_in(ctx.proc.as_fd(), notif.pid) else {
        return Answer::Continue;
    };
    let Ok(mut memory) = Memory::open(dir.as_fd()) else {
        return Answer::Continue;
    };
    match source.guard {
        // Fail closed: the container's views could not be locked.
        Guard::Deny => return Answer::Errno(libc::EPERM),
        Guard::Unlocked => {
            if let Some(answer) = identity::check(source, notif, dir.as_fd(), &mut memory) {
                return answer;
            }
        }
        Guard::Locked => {}
    }
    if !abi::id_valid(source.fd.as_fd(), notif.id) {
        return Answer::Continue;
    }
    match policy::decide(notif, &mut memory) {
        Decision::Answer(answer) => answer,
        Decision::NewMount(mount) => {
            let answer = new_mount(ctx, source, notif, dir.as_fd(), &mount);
            if answer == Answer::Success {
                remember(source, mounted, notif, &mount.target);
            }
            answer
        }
        // A target through the caller's /proc/self would be the helper's own: left to the
        // kernel (EPERM), as before the trap knew these file systems.
        Decision::EmptyMount(mount) if self_relative(&mount.target).is_some() => Answer::Continue,
        Decision::EmptyMount(mount) => {
            let task = Task::EmptyMount { fs: mount.fs, target: mount.target, flags: mount.flags };
            run_as_caller(ctx, source, notif, dir.as_fd(), &task, "the empty mount helper failed")
        }
        Decision::CheckUmount { target, flags } => {
            check_umount(ctx, source, mounted, notif, dir.as_fd(), &target, flags)
        }
    }
}

/// Records where a new mount went, as the caller sees the path.
fn remember(source: &Source, mounted: &Mounted, notif: &Notification, target: &str) {
    let path = match self_relative(target) {
        // /proc/self/fd/N: where that fd points, in the caller's terms.
        Some(rest) => std::fs::read_link(format!("/proc/{}/{rest}", notif.pid))
            .ok()
            .map(|p| p.to_string_lossy().into_owned()),
        None => absolute_path(notif, target),
    };
    if let Some(path) = path {
        mounted.add(&source.container, path);
    }
}

/// `umount2`:
/// - of the container's own `/proc` or `/sys`, lazily or not: EBUSY, as the kernel answers
///   for a mount in use (the views stand on it, and every later `docker exec` needs it);
/// - of a protected mount (an overlay): EPERM;
/// - without MNT_DETACH, of a proc or sysfs the trap mounted and whose only children are its
///   overlays: performed lazily for the caller (the kernel would say EBUSY because of the
///   overlays, which the container did not put there);
/// - anything else continues. If the lexical lookup misses a protected mount (through a
///   symlink, say), the kernel still refuses: the overlays are locked mounts.
///
/// The caller's mount table is only read when the path could be an overlay or is where
/// the trap mounted something.
fn check_umount(
    ctx: &Context,
    source: &Source,
    mounted: &Mounted,
    notif: &Notification,
    dir: BorrowedFd<'_>,
    target: &str,
    flags: i32,
) -> Answer {
    let Some(path) = absolute_path(notif, target) else {
        return Answer::Continue;
    };
    let ours = flags & libc::MNT_DETACH == 0 && mounted.contains(&source.container, &path);
    let own_fs = FsKind::is_container_path(&path);
    if !ours && !own_fs && !source.overlays.may_cover_path(&path) {
        return Answer::Continue;
    }
    let Ok(text) = process::read_text(dir, "mountinfo") else {
        return Answer::Continue;
    };
    let entries = mountinfo::parse(&text);
    let Some(entry) = mountinfo::top_mount_at(&entries, &path) else {
        return Answer::Continue;
    };
    let refuse = |errno: i32, what: &str| {
        tracing::info!(container = %source.container, pid = notif.pid, path = %path, "refused to unmount {what}");
        Answer::Errno(errno)
    };
    if own_fs && mountinfo::is_container_root_fs(&entries, entry) {
        return refuse(libc::EBUSY, "the container's own proc or sysfs");
    }
    if mountinfo::is_protected(&entries, entry, &source.overlays) {
        return refuse(libc::EPERM, "a view, mask or read-only path");
    }
    if ours && mountinfo::is_overlaid_root(&entries, entry, &source.overlays) {
        return unmount_lazily(ctx, source, notif, dir, target, flags);
    }
    Answer::Continue
}

/// The unmount of [`check_umount`]'s second case, in a helper (the path is resolved inside
/// the container, which may take time), after the kernel's permission check for the
/// caller.
fn unmount_lazily(
    ctx: &Context,
    source: &Source,
    notif: &Notification,
    dir: BorrowedFd<'_>,
    target: &str,
    flags: i32,
) -> Answer {
    let task = Task::Unmount { target: target.to_string(), flags: flags | libc::MNT_DETACH };
    run_as_caller(ctx, source, notif, dir, &task, "the unmount helper failed")
}

/// Runs `task` in a helper that becomes the caller, after the kernel's permission check
/// for the caller (CAP_SYS_ADMIN over its mount namespace's owner).
fn run_as_caller(
    ctx: &Context,
    source: &Source,
    notif: &Notification,
    dir: BorrowedFd<'_>,
    task: &Task,
    what: &str,
) -> Answer {
    let fail = |what: &str, err: &dyn std::fmt::Display| {
        tracing::warn!(container = %source.container, pid = notif.pid, error = %err, "{what}");
        Answer::Errno(libc::EIO)
    };
    let (fds, status) =
        match ProcessFds::open(dir).and_then(|f| Ok((f, process::read_text(dir, "status")?))) {
            Ok(opened) => opened,
            Err(err) => return fail("cannot open the caller's namespaces", &err),
        };
    if !abi::id_valid(source.fd.as_fd(), notif.id) {
        return Answer::Continue;
    }
    match process::ns_id(fds.user.as_fd()) {
        Ok(id) if id != ctx.own_userns => {}
        // Not in a container's user namespace: not ours to handle.
        _ => return Answer::Continue,
    }
    match caller_may_admin(&fds, &status, &[&fds.mnt]) {
        Ok(true) => {}
        Ok(false) => return Answer::Errno(libc::EPERM),
        Err(err) => return fail("cannot check the caller's privileges", &err),
    }
    match helper::run(&ctx.exe, task, &JobFds::of(&fds, None), ctx.helper_timeout) {
        Ok(outcome) if outcome.errno == 0 => Answer::Success,
        Ok(outcome) => Answer::Errno(outcome.caller_errno()),
        Err(err) => fail(what, &err),
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

/// Opens a `/proc/self/REST` target of the caller as the kernel would resolve it for the
/// caller, never through the daemon's own root:
/// - a magic link of the caller (`fd/N`, `cwd`, `root`) on its own is the caller's object;
/// - below `root`, the rest resolves inside the caller's root (`RESOLVE_IN_ROOT`: `/` and
///   absolute symlinks mean the caller's root);
/// - below another magic link (`fd/N/x`, `cwd/x`), the rest must stay beneath it
///   (`RESOLVE_BENEATH`: EXDEV for a symlink that leaves it, where the kernel would have
///   needed the caller's root);
/// - any other file of /proc/TID: beneath /proc/TID, without magic links.
///
/// Magic links further down (the caller's /proc inside its root) are refused (ELOOP).
fn open_self_target(
    dir: BorrowedFd<'_>,
    root: BorrowedFd<'_>,
    rest: &str,
) -> std::io::Result<OwnedFd> {
    let no_magic = libc::RESOLVE_NO_MAGICLINKS;
    let (link, below) = split_magic_link(rest);
    match (link, below) {
        (Some(link), None) => process::open_at(dir, link, libc::O_PATH),
        (Some("root"), Some(below)) => {
            process::open_path_in(root, below, libc::RESOLVE_IN_ROOT | no_magic)
        }
        (Some(link), Some(below)) => {
            let base = process::open_at(dir, link, libc::O_PATH | libc::O_DIRECTORY)?;
            process::open_path_in(base.as_fd(), below, libc::RESOLVE_BENEATH | no_magic)
        }
        (None, _) => process::open_path_in(dir, rest, libc::RESOLVE_BENEATH | no_magic),
    }
}

/// `fd/N`, `cwd` or `root` at the start of a path below /proc/TID, and what follows it.
fn split_magic_link(rest: &str) -> (Option<&str>, Option<&str>) {
    let len = match rest.split('/').next() {
        Some("root" | "cwd") => rest.split('/').next().map_or(0, str::len),
        Some("fd") => match rest.split('/').nth(1) {
            Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => 3 + n.len(),
            _ => return (None, None),
        },
        _ => return (None, None),
    };
    let below = rest[len..].strip_prefix('/').filter(|b| !b.is_empty());
    (Some(&rest[..len]), below)
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
        Some(rest) => match open_self_target(dir, fds.root.as_fd(), rest) {
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
    let shown = match mount.fs {
        FsKind::Proc => &fds.pid,
        FsKind::Sysfs => &fds.net,
    };
    match caller_may_admin(&fds, &status, &[&fds.mnt, shown]) {
        Ok(true) => {}
        Ok(false) => return Answer::Errno(libc::EPERM),
        Err(err) => return fail("cannot check the caller's privileges", &err),
    }
    let job = Job {
        fs: mount.fs,
        flags: mount.flags,
        data: mount.data.clone(),
        target: if target_fd.is_some() { Target::Fd } else { Target::Path(mount.target.clone()) },
        overlays: overlays_for(source, &fds).of(mount.fs).to_vec(),
        stage: ctx.stage.clone(),
        replace: None,
    };
    let job_fds = JobFds::of(&fds, target_fd.as_ref().map(|fd| fd.as_fd()));
    match helper::run(&ctx.exe, &Task::Mount(job), &job_fds, ctx.helper_timeout) {
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

/// The overlays for a new mount by the process of `fds`: the container's own view files
/// for its own pid namespace, the per-caller views for a nested one (an inner runtime's
/// container, which must see its own limits) or when the container's is unknown.
fn overlays_for<'a>(source: &'a Source, fds: &ProcessFds) -> &'a Overlays {
    let caller = process::ns_id(fds.pid.as_fd()).ok();
    match source.pid_ns {
        Some(own) if caller == Some(own) => &source.overlays,
        _ => &source.nested_overlays,
    }
}

/// The kernel's own permission checks, made for the caller (the helper has every
/// capability in the caller's user namespace, whoever the caller is): CAP_SYS_ADMIN over
/// each of `namespaces` (its mount namespace for any mount or unmount; for a new mount also
/// the pid namespace (proc) or network namespace (sysfs) it shows).
fn caller_may_admin(
    fds: &ProcessFds,
    status: &str,
    namespaces: &[&OwnedFd],
) -> std::io::Result<bool> {
    if !process::has_cap_sys_admin(status) {
        return Ok(false);
    }
    for ns in namespaces {
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
    fn mounted_paths_are_kept_per_container_newest_first() {
        let m = Mounted::default();
        m.add("a", "/mnt".into());
        m.add("b", "/proc".into());
        assert!(m.contains("a", "/mnt"));
        assert!(!m.contains("a", "/proc"));
        for i in 0..Mounted::KEEP {
            m.add("a", format!("/m{i}"));
        }
        assert!(!m.contains("a", "/mnt"), "the oldest went");
        assert!(m.contains("a", &format!("/m{}", Mounted::KEEP - 1)));
        m.forget("a");
        assert!(!m.contains("a", "/m1"));
        assert!(m.contains("b", "/proc"));
    }

    #[test]
    fn magic_links_are_told_from_what_lies_below_them() {
        assert_eq!(split_magic_link("fd/7"), (Some("fd/7"), None));
        assert_eq!(split_magic_link("fd/12/sub/dir"), (Some("fd/12"), Some("sub/dir")));
        assert_eq!(split_magic_link("root/secret/x"), (Some("root"), Some("secret/x")));
        assert_eq!(split_magic_link("root"), (Some("root"), None));
        assert_eq!(split_magic_link("cwd/a"), (Some("cwd"), Some("a")));
        assert_eq!(split_magic_link("fd/x"), (None, None));
        assert_eq!(split_magic_link("fdinfo/3"), (None, None));
        assert_eq!(split_magic_link("rootx/a"), (None, None));
        assert_eq!(split_magic_link("task/5/root"), (None, None));
    }

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
