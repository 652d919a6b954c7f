//! The checks for containers whose views are not locked mounts ([`Guard::Unlocked`]: a
//! kernel without `MOVE_MOUNT_BENEATH`, and a host that opted in with
//! `--allow-unlocked-views`). The kernel then refuses nothing, so the trap refuses, by the
//! identity of the mount a call would act on rather than by its path string:
//!
//! | call | refused (EPERM) when |
//! | --- | --- |
//! | `umount2`, `umount` | the target's mount is protected |
//! | `mount(MS_MOVE)`, `move_mount` | the source's mount is protected |
//! | `mount(MS_BIND)` without `MS_REC`, `open_tree(OPEN_TREE_CLONE)` without `AT_RECURSIVE` | the source's mount has a protected mount on it (the copy would lack it) |
//! | `open_tree` without `OPEN_TREE_CLONE` | the mount is protected (its fd could be moved) |
//!
//! The path is resolved as the caller would (in its root, against its cwd or directory
//! fd), the mount found by `statx(STATX_MNT_ID)` on what it resolves to and looked up by id
//! in the caller's mount table, where [`mountinfo::is_protected`] decides. A path that
//! cannot be resolved the same way from here (a symlink below a directory fd, a magic
//! `/proc/PID/fd` link, `..` below a directory fd) is refused. What stays is a race: a
//! caller that swaps a path component between this check and the kernel's own walk; that
//! is the documented risk of the opt-in (docs/security.md).
//!
//! [`Guard::Unlocked`]: super::locks::Guard::Unlocked

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::abi::{self, Answer, Notification, Syscall, OPEN_TREE_CLONE};
use super::handler::Source;
use super::mountinfo::{self, MountEntry};
use super::policy::Strings;
use super::process;

const UMOUNT_NOFOLLOW: u64 = 8;
const MOVE_MOUNT_F_SYMLINKS: u64 = 0x01;
const MOVE_MOUNT_F_EMPTY_PATH: u64 = 0x04;

/// What a call does to the mount it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    /// Unmounts or moves it: refused if it is protected.
    Detach,
    /// Copies it without what is mounted on it: refused if anything on it is protected.
    CopyShallow,
}

/// A path argument: `dfd` (AT_FDCWD or a caller's fd), the path, whether a final symlink
/// is followed and whether an empty path names `dfd` itself.
struct PathArg {
    dfd: i32,
    path: String,
    follow: bool,
    empty_is_fd: bool,
}

/// The answer for a call of a container with unlocked views; `None` lets the usual policy
/// decide.
pub fn check(
    source: &Source,
    notif: &Notification,
    dir: BorrowedFd<'_>,
    strings: &mut impl Strings,
) -> Option<Answer> {
    let call = Syscall::decode(notif.arch, notif.nr)?;
    let arg = |i: usize| abi::arg(notif.arch, notif.nr, notif.args[i]);
    let path_at = |strings: &mut dyn FnMut(u64) -> Option<String>, i: usize| strings(arg(i));
    let mut read = |address: u64| strings.string(address);
    let (what, act) = match call {
        Syscall::Umount2 | Syscall::Umount => {
            let flags = if call == Syscall::Umount2 { arg(1) } else { 0 };
            let path = path_at(&mut read, 0)?;
            let follow = flags & UMOUNT_NOFOLLOW == 0;
            (PathArg { dfd: libc::AT_FDCWD, path, follow, empty_is_fd: false }, Act::Detach)
        }
        Syscall::Mount => {
            let flags = abi::mount_flags(arg(3));
            let act = if flags & libc::MS_MOVE != 0 {
                Act::Detach
            } else if flags & libc::MS_BIND != 0 && flags & libc::MS_REC == 0 {
                Act::CopyShallow
            } else {
                return None;
            };
            let path = path_at(&mut read, 0)?;
            (PathArg { dfd: libc::AT_FDCWD, path, follow: true, empty_is_fd: false }, act)
        }
        Syscall::OpenTree => {
            let flags = arg(2);
            let recursive = flags & libc::AT_RECURSIVE as u64 != 0;
            let act = match flags & OPEN_TREE_CLONE as u64 != 0 {
                true if recursive => return None,
                true => Act::CopyShallow,
                false => Act::Detach,
            };
            let path = PathArg {
                dfd: arg(0) as i32,
                path: path_at(&mut read, 1)?,
                follow: flags & libc::AT_SYMLINK_NOFOLLOW as u64 == 0,
                empty_is_fd: flags & libc::AT_EMPTY_PATH as u64 != 0,
            };
            (path, act)
        }
        Syscall::MoveMount => {
            let flags = arg(4);
            let path = PathArg {
                dfd: arg(0) as i32,
                path: path_at(&mut read, 1)?,
                follow: flags & MOVE_MOUNT_F_SYMLINKS != 0,
                empty_is_fd: flags & MOVE_MOUNT_F_EMPTY_PATH != 0,
            };
            (path, Act::Detach)
        }
        Syscall::Fsopen | Syscall::MountSetattr | Syscall::Sysinfo => return None,
    };
    let refuse = |why: &str| {
        tracing::info!(
            container = %source.container,
            pid = notif.pid,
            call = ?call,
            path = %what.path,
            "refused ({why}): the views of this container are not locked"
        );
        Some(Answer::Errno(libc::EPERM))
    };
    let mount_id = match resolve(dir, notif.pid, &what) {
        Ok(Some(id)) => id,
        // The kernel's own walk fails the same way (ENOENT, ENOTDIR, EACCES, ...).
        Ok(None) => return None,
        Err(err) => return refuse(&format!("the path cannot be checked: {err}")),
    };
    let text = match process::read_text(dir, "mountinfo") {
        Ok(text) => text,
        Err(err) => return refuse(&format!("cannot read the mount table: {err}")),
    };
    let entries = mountinfo::parse(&text);
    // A mount not in the caller's table (a detached copy from open_tree) uncovers nothing.
    let entry = entries.iter().find(|e| e.id == mount_id)?;
    if acts_on_protected(&entries, entry, act, &source.overlays) {
        return refuse("a protected mount");
    }
    None
}

/// Whether `act` on `entry` would uncover something (pure, unit-tested).
fn acts_on_protected(
    entries: &[MountEntry],
    entry: &MountEntry,
    act: Act,
    overlays: &super::overlays::Overlays,
) -> bool {
    match act {
        Act::Detach => mountinfo::is_protected(entries, entry, overlays),
        Act::CopyShallow => mountinfo::children_of(entries, entry)
            .any(|child| mountinfo::is_protected(entries, child, overlays)),
    }
}

/// The id of the mount `arg` names for the caller whose `/proc/TID` is `dir`: `Ok(None)`
/// when it does not resolve (the call fails by itself), `Err` when it cannot be resolved
/// here the way the kernel would for the caller.
fn resolve(dir: BorrowedFd<'_>, pid: u32, arg: &PathArg) -> io::Result<Option<u64>> {
    let denied = |what: &str| io::Error::new(io::ErrorKind::PermissionDenied, what.to_string());
    let base = match (arg.path.starts_with('/'), arg.dfd) {
        (true, _) => "root".to_string(),
        (false, libc::AT_FDCWD) => "cwd".to_string(),
        (false, fd) if fd >= 0 => format!("fd/{fd}"),
        (false, _) => return Ok(None), // EBADF
    };
    if arg.path.is_empty() {
        if !arg.empty_is_fd {
            return Ok(None); // ENOENT
        }
        return absent_is_none(
            process::open_at(dir, &base, libc::O_PATH).and_then(|fd| mnt_id(&fd)),
        );
    }
    let (base, rel, resolve) = if arg.path.starts_with('/') || arg.dfd == libc::AT_FDCWD {
        // In the caller's root, with its cwd made absolute as the caller sees it.
        let cwd = if arg.path.starts_with('/') {
            "/".to_string()
        } else {
            // As the caller sees it (the link shows paths in its mount namespace).
            std::fs::read_link(format!("/proc/{pid}/cwd"))?.to_string_lossy().into_owned()
        };
        let absolute = mountinfo::absolute(&cwd, &arg.path).ok_or_else(|| denied("empty path"))?;
        ("root".to_string(), absolute, libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS)
    } else {
        if arg.path.split('/').any(|c| c == "..") {
            return Err(denied("`..` below a directory fd"));
        }
        (base, arg.path.clone(), libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS)
    };
    let base = absent_is_none(process::open_at(dir, &base, libc::O_PATH | libc::O_DIRECTORY))?;
    let Some(base) = base else { return Ok(None) };
    let flags = libc::O_PATH | if arg.follow { 0 } else { libc::O_NOFOLLOW };
    absent_is_none(
        openat2(&base, rel.trim_start_matches('/'), flags, resolve).and_then(|f| mnt_id(&f)),
    )
}

/// Errors of the caller's own path walk (which the kernel's walk would give it too) become
/// `None`; the others stay errors (ELOOP from a refused symlink or magic link, EXDEV, ...).
fn absent_is_none<T>(result: io::Result<T>) -> io::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(
                    libc::ENOENT | libc::ENOTDIR | libc::EACCES | libc::ENAMETOOLONG | libc::EBADF
                )
            ) =>
        {
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

fn openat2(dir: &OwnedFd, path: &str, flags: libc::c_int, resolve: u64) -> io::Result<OwnedFd> {
    let path = if path.is_empty() { "." } else { path };
    process::openat2(dir.as_fd(), path, flags, resolve)
}

/// The id of the mount `fd` is on (`statx` `STATX_MNT_ID`, Linux 5.8).
fn mnt_id(fd: &OwnedFd) -> io::Result<u64> {
    // SAFETY: statx is a plain struct of integers; zeroed is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx on a valid fd with an empty NUL-terminated path, into memory we own.
    let rc = unsafe {
        libc::statx(fd.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH, libc::STATX_MNT_ID, &mut stx)
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    Ok(stx.stx_mnt_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounttrap::overlays::{Overlay, OverlayKind, Overlays};

    const TABLE: &str = "\
115 62 0:43 / / rw,relatime - overlay none rw
116 115 0:46 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
120 116 0:40 /proc/meminfo /proc/meminfo ro,nosuid,nodev,noexec - fuse.sysvisor-fs sysvisor-fs rw
121 116 0:5 /null /proc/keys ro - devtmpfs udev rw
130 115 0:60 / /tmp rw - tmpfs tmpfs rw
131 130 0:61 / /tmp/x rw - tmpfs tmpfs rw
";

    fn overlays() -> Overlays {
        Overlays::new(vec![Overlay { rel: "keys".into(), kind: OverlayKind::Mask }], vec![])
    }

    fn entry(entries: &[MountEntry], id: u64) -> &MountEntry {
        entries.iter().find(|e| e.id == id).unwrap()
    }

    #[test]
    fn detaching_a_view_or_mask_is_refused_anything_else_not() {
        let entries = mountinfo::parse(TABLE);
        let o = overlays();
        assert!(acts_on_protected(&entries, entry(&entries, 120), Act::Detach, &o));
        assert!(acts_on_protected(&entries, entry(&entries, 121), Act::Detach, &o));
        assert!(!acts_on_protected(&entries, entry(&entries, 116), Act::Detach, &o));
        assert!(!acts_on_protected(&entries, entry(&entries, 131), Act::Detach, &o));
    }

    #[test]
    fn a_shallow_copy_of_a_mount_with_views_on_it_is_refused() {
        let entries = mountinfo::parse(TABLE);
        let o = overlays();
        assert!(acts_on_protected(&entries, entry(&entries, 116), Act::CopyShallow, &o));
        assert!(!acts_on_protected(&entries, entry(&entries, 130), Act::CopyShallow, &o));
        assert!(!acts_on_protected(&entries, entry(&entries, 120), Act::CopyShallow, &o));
    }

    #[test]
    fn mount_ids_come_from_statx() {
        let root = OwnedFd::from(std::fs::File::open("/").unwrap());
        let id = mnt_id(&root).unwrap();
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let entries = mountinfo::parse(&table);
        let found = entries.iter().find(|e| e.id == id).expect("the root's mount is listed");
        assert_eq!(found.mount_point, "/");
    }
}
