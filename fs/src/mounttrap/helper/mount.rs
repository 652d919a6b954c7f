//! A proc or sysfs mount, or an unmount, carried out by the helper processes (the steps and
//! why they are split so are in the parent module).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use super::confine::{become_caller, close_all_but, limit_caps};
use super::sys::{
    check, check_fd, cstring, cwd_fd, fchdir, fork_child, make_tree_read_only, move_mount,
    path_cstring, receive, send, setns, socket_pair, success, sys_mount, unshare_mounts, wait,
    Failure, Step,
};
use super::{Job, Target, FD_CWD, FD_MNT, FD_NET, FD_PID, FD_ROOT, FD_TARGET};
use crate::mounttrap::abi::{
    FSCONFIG_CMD_CREATE, FSCONFIG_SET_FLAG, FSCONFIG_SET_STRING, FSMOUNT_CLOEXEC, FSOPEN_CLOEXEC,
    MOUNT_ATTR_NOATIME, MOUNT_ATTR_NODEV, MOUNT_ATTR_NODIRATIME, MOUNT_ATTR_NOEXEC,
    MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, MOUNT_ATTR_STRICTATIME, MOVE_MOUNT_BENEATH,
    MOVE_MOUNT_F_EMPTY_PATH, MOVE_MOUNT_T_AUTOMOUNTS, MOVE_MOUNT_T_EMPTY_PATH,
    MOVE_MOUNT_T_SYMLINKS, OPEN_TREE_CLOEXEC, OPEN_TREE_CLONE,
};
use crate::mounttrap::overlays::{Overlay, OverlayKind};
use crate::mounttrap::policy::{EmptyFs, FsKind, PASSED_FLAGS};
use crate::mounttrap::process::Credentials;

/// The whole mount, run by the helper (host root, in the host's pid namespace).
pub fn perform(job: &Job, creds: Credentials) -> Step<()> {
    unshare_mounts("unshare")?;
    let root = cstring("/", "private")?;
    sys_mount(None, &root, None, libc::MS_REC | libc::MS_PRIVATE, None, "private")?;

    let (ours, theirs) = socket_pair()?;
    let maker = fork_child(theirs.as_fd(), || make(job, creds, theirs.as_fd()))?;
    drop(theirs);
    let context = receive(ours.as_fd(), "the superblock's creator ended");
    wait(maker, "maker")?;
    let context =
        context?.ok_or_else(|| Failure { step: "no context".into(), errno: libc::EIO })?;

    let tree = fsmount(context.as_fd(), job.flags)?;
    let stage = path_cstring(&job.stage, "stage")?;
    let stage_str =
        stage.to_str().map_err(|_| Failure { step: "stage".into(), errno: libc::EINVAL })?;
    move_mount(tree.as_fd(), None, cwd_fd(), Some(stage_str), MOVE_MOUNT_F_EMPTY_PATH, "stage")?;
    for overlay in &job.overlays {
        apply(&job.stage, overlay)?;
    }
    // A read-only proc or sysfs is read-only through every tree grafted on it (the
    // writable sysctl mirror of /proc/sys included), as the kernel's own file would be.
    // Not for the swap of a container's own /proc and /sys: its planned overlays stay.
    if job.flags & libc::MS_RDONLY != 0 && job.replace.is_none() {
        make_tree_read_only(&job.stage, "read-only overlays")?;
    }
    let staged = std::fs::File::open(&job.stage).map_err(super::sys::fail("stage"))?;

    let (ours, theirs) = socket_pair()?;
    let attacher = fork_child(theirs.as_fd(), || {
        attach(job, creds, staged.as_fd())?;
        send(theirs.as_fd(), &success(), None)
    })?;
    drop(theirs);
    let attached = receive(ours.as_fd(), "the attacher ended");
    wait(attacher, "attacher")?;
    attached.map(drop)
}

/// The maker: becomes the caller, enters its mount namespace, root and the namespace the
/// file system shows, and forks the creator there.
fn make(job: &Job, creds: Credentials, report: BorrowedFd<'_>) -> Step<()> {
    become_caller(creds)?;
    enter_caller()?;
    match job.fs {
        FsKind::Proc => setns(FD_PID, libc::CLONE_NEWPID, "setns pid")?,
        FsKind::Sysfs => setns(FD_NET, libc::CLONE_NEWNET, "setns net")?,
    }
    let creator = fork_child(report, || create(job, creds, report))?;
    wait(creator, "creator")
}

/// The creator, in the caller's pid namespace: holds nothing but the socket and the
/// caller's capabilities, opens the file system, sets the caller's options, creates the
/// superblock with the caller's rights and sends the context to the helper.
fn create(job: &Job, creds: Credentials, report: BorrowedFd<'_>) -> Step<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    close_all_but(report.as_raw_fd())?;
    // The swap of a container's own /proc and /sys is the daemon's work, done before the
    // container's first instruction: a container started with `--cap-drop ALL` still gets
    // its views locked (its init has no CAP_SYS_ADMIN to create a procfs with).
    if job.replace.is_none() {
        limit_caps(creds.caps)?;
    }
    let name = cstring(job.fs.name(), "fsopen")?;
    // SAFETY: fsopen with a NUL-terminated name; returns a new fd or -1.
    let context = check_fd(
        unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) },
        "fsopen",
    )?;
    configure(context.as_fd(), "source", Some(job.fs.name()))?;
    for flag in superblock_flags(job.flags) {
        configure(context.as_fd(), flag, None)?;
    }
    for (key, value) in options(job.data.as_deref().unwrap_or("")) {
        configure(context.as_fd(), key, value)?;
    }
    fsconfig(context.as_fd(), FSCONFIG_CMD_CREATE, None, None)?;
    send(report, &success(), Some(context.as_fd()))
}

fn configure(context: BorrowedFd<'_>, key: &str, value: Option<&str>) -> Step<()> {
    match value {
        Some(value) => fsconfig(context, FSCONFIG_SET_STRING, Some(key), Some(value)),
        None => fsconfig(context, FSCONFIG_SET_FLAG, Some(key), None),
    }
}

/// `fsconfig`: a failure is the caller's own (a bad option, say), step "mount".
fn fsconfig(
    context: BorrowedFd<'_>,
    command: libc::c_uint,
    key: Option<&str>,
    value: Option<&str>,
) -> Step<()> {
    let key = key.map(|k| cstring(k, "mount")).transpose()?;
    let value = value.map(|v| cstring(v, "mount")).transpose()?;
    let ptr = |s: &Option<std::ffi::CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: fsconfig with a context fd we hold and NUL-terminated strings (or null).
    let rc = unsafe {
        libc::syscall(libc::SYS_fsconfig, context.as_raw_fd(), command, ptr(&key), ptr(&value), 0)
    };
    check(rc, "mount").map(drop)
}

/// `fsmount` in the helper's private namespace, owned by the initial user namespace.
fn fsmount(context: BorrowedFd<'_>, flags: u64) -> Step<OwnedFd> {
    // SAFETY: fsmount with a context fd we hold; returns a new fd or -1.
    check_fd(
        unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                context.as_raw_fd(),
                FSMOUNT_CLOEXEC,
                mount_attrs(flags),
            )
        },
        "fsmount",
    )
}

/// The superblock flags among mount(2) `flags`, as `fsconfig` names them.
fn superblock_flags(flags: u64) -> Vec<&'static str> {
    [
        (libc::MS_RDONLY, "ro"),
        (libc::MS_SYNCHRONOUS, "sync"),
        (libc::MS_DIRSYNC, "dirsync"),
        (libc::MS_LAZYTIME, "lazytime"),
    ]
    .into_iter()
    .filter(|(flag, _)| flags & flag != 0)
    .map(|(_, name)| name)
    .collect()
}

/// The per-mount flags among mount(2) `flags` as `MOUNT_ATTR_*` (strictatime wins over
/// noatime, as in mount(2); relatime is the default).
fn mount_attrs(flags: u64) -> libc::c_uint {
    let mut attrs = [
        (libc::MS_RDONLY, MOUNT_ATTR_RDONLY),
        (libc::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (libc::MS_NODEV, MOUNT_ATTR_NODEV),
        (libc::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
        (libc::MS_NODIRATIME, MOUNT_ATTR_NODIRATIME),
    ]
    .into_iter()
    .filter(|(flag, _)| flags & flag != 0)
    .fold(0, |attrs, (_, attr)| attrs | attr);
    if flags & libc::MS_STRICTATIME != 0 {
        attrs |= MOUNT_ATTR_STRICTATIME;
    } else if flags & libc::MS_NOATIME != 0 {
        attrs |= MOUNT_ATTR_NOATIME;
    }
    attrs
}

/// mount(2)'s option string as `fsconfig` calls: `key=value` sets a string, `key` a flag
/// (the kernel's own split for file systems without a parser of their own, like proc).
fn options(data: &str) -> Vec<(&str, Option<&str>)> {
    data.split(',')
        .filter(|option| !option.is_empty())
        .map(|option| match option.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (option, None),
        })
        .collect()
}

/// The attacher: becomes the caller, starting in the stage; locks a copy of it, enters
/// the caller's mount namespace, root and working directory, and puts the tree there.
fn attach(job: &Job, creds: Credentials, staged: BorrowedFd<'_>) -> Step<()> {
    fchdir(staged.as_raw_fd(), "stage")?;
    become_caller(creds)?;
    // A copy of the helper's namespace owned by the caller's user namespace: the kernel
    // locks every mount in it; the working directory moves to the copy of the stage.
    unshare_mounts("lock")?;
    let dot = cstring(".", "open_tree")?;
    // SAFETY: open_tree with a NUL-terminated path; returns a new fd or -1.
    let tree = check_fd(
        unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                dot.as_ptr(),
                OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as libc::c_uint,
            )
        },
        "open_tree",
    )?;
    enter_caller()?;
    // The target as the caller would reach it. Not for the swap of a container's own /proc
    // and /sys: that is the daemon's work, done before the container's first instruction,
    // whatever capabilities runc leaves its init.
    if job.replace.is_none() {
        limit_caps(creds.caps)?;
    }
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
        Target::Path(path) if job.replace.is_none() => move_mount(
            tree.as_fd(),
            None,
            cwd_fd(),
            Some(path),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_SYMLINKS | MOVE_MOUNT_T_AUTOMOUNTS,
            "attach",
        ),
        Target::Path(path) => replace(tree.as_fd(), path, job.replace.as_deref().unwrap_or(&[])),
    }
}

/// Enters the caller's mount namespace, root and working directory.
fn enter_caller() -> Step<()> {
    setns(FD_MNT, libc::CLONE_NEWNS, "setns mnt")?;
    fchdir(FD_ROOT, "chroot")?;
    let dot = cstring(".", "chroot")?;
    // SAFETY: chroot to the current directory.
    check(unsafe { libc::chroot(dot.as_ptr()) } as libc::c_long, "chroot")?;
    fchdir(FD_CWD, "chdir")
}

/// An empty, read-only tmpfs in place of `fs` for the caller, as the caller (its ids, its
/// capabilities, in its namespaces and root): nothing it could not mount itself. The
/// source names the file system asked for, so that mount tables read as expected.
pub fn empty_mount(fs: EmptyFs, target: &str, flags: u64, creds: Credentials) -> Step<()> {
    become_caller(creds)?;
    enter_caller()?;
    limit_caps(creds.caps)?;
    let source = cstring(fs.name(), "mount")?;
    let tmpfs = cstring("tmpfs", "mount")?;
    let target = cstring(target, "mount")?;
    let options = cstring(&format!("mode={:o},size=4k,nr_inodes=16", fs.root_mode()), "mount")?;
    let flags = (flags & PASSED_FLAGS) | libc::MS_RDONLY;
    sys_mount(Some(&source), &target, Some(&tmpfs), flags, Some(&options), "mount")
}

/// An unmount for the caller, as the caller.
pub fn unmount(target: &str, flags: i32, creds: Credentials) -> Step<()> {
    become_caller(creds)?;
    enter_caller()?;
    limit_caps(creds.caps)?;
    let target = cstring(target, "umount")?;
    // SAFETY: umount2 with a NUL-terminated path.
    check(unsafe { libc::umount2(target.as_ptr(), flags) } as libc::c_long, "umount").map(drop)
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
    fn options_split_as_the_kernel_splits_them() {
        assert_eq!(
            options("hidepid=2,gid=5,,subset=pid,x="),
            vec![
                ("hidepid", Some("2")),
                ("gid", Some("5")),
                ("subset", Some("pid")),
                ("x", Some(""))
            ]
        );
        assert_eq!(options("ro,newinstance"), vec![("ro", None), ("newinstance", None)]);
        assert!(options("").is_empty());
    }

    #[test]
    fn mount_flags_become_superblock_flags_and_mount_attributes() {
        let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        assert_eq!(superblock_flags(flags), vec!["ro"]);
        assert_eq!(
            mount_attrs(flags),
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC
        );
        assert_eq!(mount_attrs(libc::MS_NOATIME), MOUNT_ATTR_NOATIME);
        let both = libc::MS_NOATIME | libc::MS_STRICTATIME | libc::MS_NODIRATIME;
        assert_eq!(mount_attrs(both), MOUNT_ATTR_STRICTATIME | MOUNT_ATTR_NODIRATIME);
        assert_eq!(mount_attrs(libc::MS_RELATIME), 0);
        assert_eq!(
            superblock_flags(libc::MS_SYNCHRONOUS | libc::MS_LAZYTIME),
            vec!["sync", "lazytime"]
        );
    }
}
