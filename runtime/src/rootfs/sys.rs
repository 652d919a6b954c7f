//! Thin wrappers over the mount syscalls the rootfs shift needs (new mount API, idmapped
//! mounts) and the helper user namespace that carries an id mapping.

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libc::{c_int, c_uint};

use crate::idrange::{DiskRoot, IdRange};

// From <linux/mount.h>; stable kernel ABI.
pub const OPEN_TREE_CLONE: c_uint = 0x1;
pub const OPEN_TREE_CLOEXEC: c_uint = libc::O_CLOEXEC as c_uint;
const MOVE_MOUNT_F_EMPTY_PATH: c_uint = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const FSOPEN_CLOEXEC: c_uint = 0x1;
const FSMOUNT_CLOEXEC: c_uint = 0x1;
const FSCONFIG_SET_STRING: c_uint = 1;
const FSCONFIG_CMD_CREATE: c_uint = 6;

/// `struct mount_attr` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"))
}

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn fd_from(rc: libc::c_long) -> io::Result<OwnedFd> {
    let fd = check(rc)? as c_int;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

const EMPTY: &CStr = c"";

/// `open_tree(AT_FDCWD, path, flags)`: with OPEN_TREE_CLONE a detached copy of the mount
/// (sub)tree at `path`; `recursive` adds AT_RECURSIVE (copies submounts too).
pub fn open_tree_clone(path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let p = cpath(path)?;
    let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as c_uint;
    }
    // SAFETY: p is a valid NUL-terminated string living across the call.
    let rc = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, p.as_ptr(), flags) };
    fd_from(rc)
}

/// Sets MOUNT_ATTR_IDMAP on the detached mount `mnt` with the mapping of `userns`.
pub fn set_idmap(mnt: BorrowedFd<'_>, userns: BorrowedFd<'_>, recursive: bool) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let mut flags = libc::AT_EMPTY_PATH as c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as c_uint;
    }
    // SAFETY: attr is a properly laid out struct mount_attr of the size we pass, EMPTY a
    // valid C string; both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt.as_raw_fd(),
            EMPTY.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(rc).map(drop)
}

/// Attaches the detached mount `mnt` at `target`.
pub fn move_mount_to(mnt: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
    let t = cpath(target)?;
    // SAFETY: both strings are valid NUL-terminated strings living across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            EMPTY.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    check(rc).map(drop)
}

/// `mount_setattr(2)` flags.
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOVE_MOUNT_T_EMPTY_PATH: c_uint = 0x40;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// Sets the mount attributes `set` (`MOUNT_ATTR_*`) on the detached mount `mnt`, and makes
/// it private (no propagation to or from its source's peers).
pub fn set_mount_attrs(mnt: BorrowedFd<'_>, set: u64) -> io::Result<()> {
    mount_setattr(mnt, set, libc::MS_PRIVATE)
}

/// Sets the mount attributes `set` on the mount whose root `path` is, propagation kept.
pub fn add_mount_attrs(path: &Path, set: u64) -> io::Result<()> {
    let dir = fs::File::open(path)?;
    mount_setattr(std::os::fd::AsFd::as_fd(&dir), set, 0)
}

fn mount_setattr(mnt: BorrowedFd<'_>, set: u64, propagation: u64) -> io::Result<()> {
    let attr = MountAttr { attr_set: set, attr_clr: 0, propagation, userns_fd: 0 };
    // SAFETY: attr is a properly laid out struct mount_attr of the size we pass, EMPTY a
    // valid C string; both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt.as_raw_fd(),
            EMPTY.as_ptr(),
            libc::AT_EMPTY_PATH as c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(rc).map(drop)
}

/// Attaches the detached mount `mnt` on the directory `target` is open on (O_PATH).
pub fn move_mount_onto(mnt: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: EMPTY is a valid C string; both descriptors are open for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            EMPTY.as_ptr(),
            target.as_raw_fd(),
            EMPTY.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    check(rc).map(drop)
}

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens directory `rel` below `root` with O_PATH, resolving it as if `root` were `/`
/// (symlinks, `..` and absolute paths cannot leave it; no magic links).
pub fn open_dir_in_root(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    open_in_root(root, rel, libc::O_PATH | libc::O_DIRECTORY)
}

/// As [`open_dir_in_root`] with open `flags` (O_CLOEXEC is added).
pub fn open_in_root(root: BorrowedFd<'_>, rel: &Path, flags: c_int) -> io::Result<OwnedFd> {
    let p = cpath(rel)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: p is a valid C string and how a properly laid out open_how of the size we
    // pass; both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            p.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    fd_from(rc)
}

/// A filesystem context (`fsopen`), for building an overlay parameter by parameter.
pub struct FsContext {
    fd: OwnedFd,
}

impl FsContext {
    pub fn open(fstype: &str) -> io::Result<FsContext> {
        let t = cstr(fstype)?;
        // SAFETY: t is a valid NUL-terminated string living across the call.
        let rc = unsafe { libc::syscall(libc::SYS_fsopen, t.as_ptr(), FSOPEN_CLOEXEC) };
        Ok(FsContext { fd: fd_from(rc)? })
    }

    pub fn set_string(&self, key: &str, value: &str) -> io::Result<()> {
        let k = cstr(key)?;
        let v = cstr(value)?;
        // SAFETY: k and v are valid NUL-terminated strings living across the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0 as c_int,
            )
        };
        check(rc).map(drop)
    }

    /// Creates the superblock and returns a detached mount of it.
    pub fn create_and_mount(&self) -> io::Result<OwnedFd> {
        // SAFETY: no pointers are passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_char>(),
                0 as c_int,
            )
        };
        check(rc)?;
        // SAFETY: no pointers are passed.
        let rc = unsafe {
            libc::syscall(libc::SYS_fsmount, self.fd.as_raw_fd(), FSMOUNT_CLOEXEC, 0 as c_uint)
        };
        fd_from(rc)
    }

    /// The messages the filesystem logged on this context ("e overlay: ...").
    pub fn log(&self) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            // SAFETY: buf is a writable buffer of the given length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            out.push(String::from_utf8_lossy(&buf[..n as usize]).trim().to_string());
        }
        out.join("; ")
    }
}

/// Classic `mount(2)` of an overlay with a data string (fallback for kernels without the
/// `lowerdir+` parameter).
pub fn mount_overlay_legacy(target: &Path, data: &str) -> io::Result<()> {
    let t = cpath(target)?;
    let d = cstr(data)?;
    // SAFETY: every pointer is a valid NUL-terminated string living across the call.
    let rc = unsafe {
        libc::mount(c"overlay".as_ptr(), t.as_ptr(), c"overlay".as_ptr(), 0, d.as_ptr().cast())
    };
    check(rc.into()).map(drop)
}

/// `umount2(path, MNT_DETACH)`.
pub fn umount_detach(path: &Path) -> io::Result<()> {
    let p = cpath(path)?;
    // SAFETY: p is a valid NUL-terminated string living across the call.
    let rc = unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
    check(rc.into()).map(drop)
}

/// A user namespace whose uid and gid maps are `ROOT BASE COUNT` for `range` and `disk`
/// (ROOT: `disk.uid`, resp. `disk.gid`), as an fd (for MOUNT_ATTR_IDMAP): an idmapped
/// mount with it shows the files that `disk` ids own as owned by the range.
pub fn userns_fd(range: &IdRange, disk: DiskRoot) -> io::Result<OwnedFd> {
    userns_fd_with_maps(
        &format!("{} {} {}\n", disk.uid, range.uid_base, range.count),
        &format!("{} {} {}\n", disk.gid, range.gid_base, range.count),
    )
}

/// The inverse of [`userns_fd`] for host-owned data (`disk` = 0): maps `BASE COUNT` to
/// `0 COUNT` (an idmapped mount with it shows files the range owns on disk with the
/// container's own ids, and stores what is written as id x with BASE + x).
pub fn unshift_userns_fd(range: &IdRange) -> io::Result<OwnedFd> {
    userns_fd_with_maps(
        &format!("{} 0 {}\n", range.uid_base, range.count),
        &format!("{} 0 {}\n", range.gid_base, range.count),
    )
}

/// A user namespace with these maps, as an fd. A forked child unshares CLONE_NEWUSER, the
/// parent writes its maps, opens /proc/CHILD/ns/user, then kills and reaps the child; the
/// namespace lives on in the fd.
fn userns_fd_with_maps(uid_map: &str, gid_map: &str) -> io::Result<OwnedFd> {
    let (ready_r, ready_w) = pipe()?;
    let (hold_r, hold_w) = pipe()?;
    // SAFETY: the child runs only async-signal-safe syscalls (unshare, write, read, _exit)
    // on descriptors prepared before the fork, never touching the allocator or locks.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: raw syscalls on inherited descriptors and a stack buffer; the child
        // never returns into Rust code.
        unsafe {
            let ok: u8 = if libc::unshare(libc::CLONE_NEWUSER) == 0 { b'1' } else { b'0' };
            libc::write(ready_w.as_raw_fd(), (&ok as *const u8).cast(), 1);
            let mut b = 0u8;
            libc::read(hold_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    let child = Child(pid);
    drop(ready_w);
    drop(hold_r);
    let mut b = 0u8;
    // SAFETY: reading one byte into a stack variable from a descriptor we own.
    let n = unsafe { libc::read(ready_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1) };
    if n != 1 || b != b'1' {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "kernel lacks user namespaces (unshare(CLONE_NEWUSER) failed in the helper child)",
        ));
    }
    let ns = fs::File::open(format!("/proc/{pid}/ns/user"))?;
    fs::write(format!("/proc/{pid}/uid_map"), uid_map)?;
    fs::write(format!("/proc/{pid}/gid_map"), gid_map)?;
    drop(hold_w);
    drop(child);
    Ok(ns.into())
}

/// Marks a directory of an overlay's upper layer opaque (`trusted.overlay.opaque=y`): the
/// layers below do not show through it.
pub fn set_opaque(dir: &Path) -> io::Result<()> {
    let p = cpath(dir)?;
    let value = b"y";
    // SAFETY: p and the name are valid NUL-terminated strings and value a buffer of the
    // given length, all living across the call.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    check(rc.into()).map(drop)
}

/// Creates an overlay whiteout (a character device 0/0, mode 0) at `path`.
pub fn mknod_whiteout(path: &Path) -> io::Result<()> {
    let p = cpath(path)?;
    // SAFETY: p is a valid NUL-terminated string living across the call.
    let rc = unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR, 0) };
    check(rc.into()).map(drop)
}

/// `struct __user_cap_header_struct` and `__user_cap_data_struct` (version 3: two words).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn capget() -> io::Result<[CapData; 2]> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data are valid, writable structs of the sizes capget expects.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    check(rc).map(|_| data)
}

fn capset(data: &[CapData; 2]) -> io::Result<()> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    // SAFETY: header and data are valid structs of the sizes capset expects.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    check(rc).map(drop)
}

/// Runs `f` on this thread with filesystem ids `uid`:`gid` and every permitted capability
/// effective, then restores the thread's ids and capabilities.
///
/// An overlay acts on its layers with the credentials of whoever created it. Created so,
/// it creates its work directories and copy-up files as `uid` on layers that are idmapped
/// mounts, where host root itself has no mapping (EOVERFLOW). setfsuid away from 0 drops
/// the filesystem capabilities from the effective set; they are raised again for the
/// overlay's copy-up (chown, whiteouts, trusted.* xattrs).
pub fn with_creator_ids<T>(uid: u32, gid: u32, f: impl FnOnce() -> T) -> io::Result<T> {
    let saved = capget()?;
    // SAFETY: setfsgid/setfsuid change only this thread's credentials; no memory involved.
    let (old_gid, old_uid) = unsafe { (libc::setfsgid(gid), libc::setfsuid(uid)) };
    let mut raised = saved;
    for d in &mut raised {
        d.effective = d.permitted;
    }
    let result = capset(&raised).map(|()| f());
    // SAFETY: as above, back to the ids this thread had.
    unsafe {
        libc::setfsuid(old_uid as libc::uid_t);
        libc::setfsgid(old_gid as libc::gid_t);
    }
    capset(&saved)?;
    result
}

/// Kills and reaps the helper child on every path.
struct Child(libc::pid_t);

impl Drop for Child {
    fn drop(&mut self) {
        // SAFETY: signalling and reaping our own child; no memory is passed but a status
        // out-parameter on the stack.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            let mut status = 0;
            while libc::waitpid(self.0, &mut status, 0) < 0
                && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
            {}
        }
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: fds is a writable array of two ints as pipe2 requires.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    check(rc.into())?;
    // SAFETY: pipe2 succeeded: both descriptors are new and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Whether `e` is the given errno.
pub fn is_errno(e: &io::Error, errno: c_int) -> bool {
    e.raw_os_error() == Some(errno)
}

/// Short errno name for messages ("EINVAL").
pub fn errno_name(e: &io::Error) -> String {
    let names = [
        (libc::EINVAL, "EINVAL"),
        (libc::ENOSYS, "ENOSYS"),
        (libc::EPERM, "EPERM"),
        (libc::EACCES, "EACCES"),
        (libc::EOVERFLOW, "EOVERFLOW"),
        (libc::EBUSY, "EBUSY"),
        (libc::ENOENT, "ENOENT"),
        (libc::ENODEV, "ENODEV"),
        (libc::ENOTDIR, "ENOTDIR"),
        (libc::EXDEV, "EXDEV"),
        (libc::EOPNOTSUPP, "EOPNOTSUPP"),
    ];
    match e.raw_os_error() {
        Some(n) => names
            .iter()
            .find(|(c, _)| *c == n)
            .map(|(_, s)| s.to_string())
            .unwrap_or_else(|| format!("errno {n}")),
        None => e.to_string(),
    }
}
