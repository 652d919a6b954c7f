//! What the trap learns about a calling process through /proc/PID: its namespaces, root and
//! working directory (as file descriptors, to hand to the helper), its capabilities, and
//! the strings it passed to the system call (from /proc/PID/mem).
//!
//! Everything opened here is only trusted after the notification was checked to be still
//! pending ([`super::abi::id_valid`]): then the pid still names the blocked caller.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use super::policy::{Strings, MAX_STRING};

/// Opens `path` below the directory `dir` (O_CLOEXEC plus `flags`).
pub fn open_at(dir: BorrowedFd<'_>, path: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c_path =
        std::ffi::CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: openat with a valid directory fd and a NUL-terminated path; it returns a new
    // fd or -1.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c_path.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2(dir, path, O_PATH | O_CLOEXEC)` with `resolve` (`RESOLVE_*`): the kernel
/// resolves the path, symlinks included, without leaving `dir` (`RESOLVE_IN_ROOT` treats
/// `dir` as `/`), as a process whose root is `dir` would.
pub fn open_path_in(dir: BorrowedFd<'_>, path: &str, resolve: u64) -> io::Result<OwnedFd> {
    openat2(dir, path, libc::O_PATH, resolve)
}

/// `openat2(dir, path, flags | O_CLOEXEC, resolve)`.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &str,
    flags: libc::c_int,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let c_path =
        std::ffi::CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain data; zeroed is its "no flags" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    // SAFETY: openat2 with a valid directory fd, a NUL-terminated path and an open_how of
    // the size passed; it returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c_path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// `/proc/PID` as a directory handle.
pub fn proc_dir(pid: u32) -> io::Result<OwnedFd> {
    let proc = File::open("/proc")?;
    proc_dir_in(proc.as_fd(), pid)
}

/// `PID` below an open `/proc`: one syscall for the trap's every notification.
pub fn proc_dir_in(proc: BorrowedFd<'_>, pid: u32) -> io::Result<OwnedFd> {
    open_at(proc, &pid.to_string(), libc::O_PATH | libc::O_DIRECTORY)
}

/// A process's effective user and group ids, as the host sees them, and its effective
/// capabilities (in its own user namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub caps: u64,
}

impl Credentials {
    /// From /proc/PID/status (`Uid:` and `Gid:` list real, effective, saved and file system
    /// ids; `CapEff:` is hexadecimal).
    pub fn from_status(status: &str) -> Option<Credentials> {
        let effective = |key: &str| {
            let line = status.lines().find_map(|line| line.strip_prefix(key))?;
            line.split_whitespace().nth(1)?.parse().ok()
        };
        Some(Credentials {
            uid: effective("Uid:")?,
            gid: effective("Gid:")?,
            caps: effective_caps(status)?,
        })
    }
}

/// A process's namespaces, root and working directory, and its credentials.
#[derive(Debug)]
pub struct ProcessFds {
    pub creds: Credentials,
    pub user: OwnedFd,
    pub mnt: OwnedFd,
    pub pid: OwnedFd,
    pub net: OwnedFd,
    pub root: OwnedFd,
    pub cwd: OwnedFd,
}

impl ProcessFds {
    pub fn open(dir: BorrowedFd<'_>) -> io::Result<ProcessFds> {
        let ns = |name: &str| open_at(dir, &format!("ns/{name}"), libc::O_RDONLY);
        let status = read_text(dir, "status")?;
        let creds = Credentials::from_status(&status)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no ids in status"))?;
        Ok(ProcessFds {
            creds,
            user: ns("user")?,
            mnt: ns("mnt")?,
            pid: ns("pid")?,
            net: ns("net")?,
            root: open_at(dir, "root", libc::O_PATH | libc::O_DIRECTORY)?,
            cwd: open_at(dir, "cwd", libc::O_PATH | libc::O_DIRECTORY)?,
        })
    }
}

/// Reads a small text file below `dir` (plain reads: /proc files have no size to ask for).
pub fn read_text(dir: BorrowedFd<'_>, path: &str) -> io::Result<String> {
    let mut file = File::from(open_at(dir, path, libc::O_RDONLY)?);
    let mut bytes = Vec::with_capacity(16 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The capability number of CAP_SYS_ADMIN (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;

/// The effective capability set of /proc/PID/status.
fn effective_caps(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Whether /proc/PID/status shows CAP_SYS_ADMIN in the effective set.
pub fn has_cap_sys_admin(status: &str) -> bool {
    effective_caps(status).is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// (device, inode) of a namespace file: equal for the same namespace.
pub fn ns_id(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills the stat buffer we own for a valid fd.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded, so the buffer is initialised.
    let st = unsafe { st.assume_init() };
    Ok((st.st_dev, st.st_ino))
}

/// A namespace ioctl that returns a new namespace fd (NS_GET_USERNS, NS_GET_PARENT).
fn ns_ioctl(fd: BorrowedFd<'_>, request: libc::Ioctl) -> io::Result<OwnedFd> {
    // SAFETY: the namespace ioctls take no argument and return a new fd or -1.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(rc) })
}

/// The user namespace owning the namespace `ns`.
pub fn owner(ns: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    ns_ioctl(ns, libc::NS_GET_USERNS)
}

/// Whether a process in user namespace `caller` with CAP_SYS_ADMIN there holds it over
/// user namespace `target` too: `target` is `caller` or one of its descendants (the
/// kernel's `ns_capable`, leaving out the rare case of the owner of a child namespace).
pub fn userns_covers(caller: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<bool> {
    let wanted = ns_id(caller)?;
    let mut current = ns_id(target)?;
    let mut fd: Option<OwnedFd> = None;
    for _ in 0..64 {
        if current == wanted {
            return Ok(true);
        }
        let at = fd.as_ref().map_or(target, |f| f.as_fd());
        match ns_ioctl(at, libc::NS_GET_PARENT) {
            Ok(parent) => {
                current = ns_id(parent.as_fd())?;
                fd = Some(parent);
            }
            // The initial namespace (or one outside ours): no further parent.
            Err(err) if err.raw_os_error() == Some(libc::EPERM) => return Ok(false),
            Err(err) => return Err(err),
        }
    }
    Ok(false)
}

/// Strings from a process's memory, through /proc/PID/mem.
pub struct Memory(File);

impl Memory {
    pub fn open(dir: BorrowedFd<'_>) -> io::Result<Memory> {
        Ok(Memory(File::from(open_at(dir, "mem", libc::O_RDONLY)?)))
    }
}

const PAGE: u64 = 4096;

impl Strings for Memory {
    /// The NUL-terminated string at `address`, read a page at a time so that a string that
    /// ends just before an unmapped page still reads; `None` past [`MAX_STRING`] bytes, for
    /// a bad address or invalid UTF-8.
    fn string(&mut self, address: u64) -> Option<String> {
        let mut out = Vec::new();
        let mut at = address;
        while out.len() < MAX_STRING {
            let chunk = (PAGE - at % PAGE).min((MAX_STRING - out.len()) as u64) as usize;
            let mut buf = vec![0u8; chunk];
            let n = self.0.read_at(&mut buf, at).ok()?;
            if n == 0 {
                return None;
            }
            if let Some(end) = buf[..n].iter().position(|b| *b == 0) {
                out.extend_from_slice(&buf[..end]);
                return String::from_utf8(out).ok();
            }
            out.extend_from_slice(&buf[..n]);
            at = at.checked_add(n as u64)?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_sys_admin_from_status() {
        let root = "Name:\tsh\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert!(has_cap_sys_admin(root));
        let user = "CapEff:\t0000000000000000\n";
        assert!(!has_cap_sys_admin(user));
        let all_but_admin = format!("CapEff:\t{:016x}\n", 0x1ff_ffff_ffffu64 & !(1 << 21));
        assert!(!has_cap_sys_admin(&all_but_admin));
        assert!(!has_cap_sys_admin("garbage"));
    }

    #[test]
    fn strings_are_read_from_memory() {
        let dir = proc_dir(std::process::id()).unwrap();
        let mut memory = Memory::open(dir.as_fd()).unwrap();
        let text = std::ffi::CString::new("/proc/meminfo").unwrap();
        assert_eq!(memory.string(text.as_ptr() as u64).as_deref(), Some("/proc/meminfo"));
        // A string across a page boundary.
        let mut page = vec![b'x'; 3 * PAGE as usize];
        let base = page.as_ptr() as u64;
        let start = (base / PAGE + 1) * PAGE - 3;
        let offset = (start - base) as usize;
        page[offset + 6] = 0;
        assert_eq!(memory.string(start).as_deref(), Some("xxxxxx"));
        // Too long: no NUL within MAX_STRING.
        let long = vec![b'y'; 2 * MAX_STRING];
        assert_eq!(memory.string(long.as_ptr() as u64), None);
        assert_eq!(memory.string(0), None, "NULL");
    }

    #[test]
    fn effective_ids_from_status() {
        let status = "Name:\tsh\nUid:\t1000\t100000\t100000\t100000\nGid:\t5\t100005\t7\t8\n\
                      CapEff:\t0000000000200000\n";
        let creds = Credentials { uid: 100000, gid: 100005, caps: 1 << CAP_SYS_ADMIN };
        assert_eq!(Credentials::from_status(status), Some(creds));
        assert_eq!(Credentials::from_status("Uid:\t1\n"), None);
        assert_eq!(Credentials::from_status("Uid:\tx\tx\nGid:\t1\t1\n"), None);
    }

    #[test]
    fn paths_resolve_inside_the_given_root() {
        let base = std::env::temp_dir().join(format!("sysvisor-resolve-{}", std::process::id()));
        let inner = base.join("root");
        std::fs::create_dir_all(inner.join("dir")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        // An absolute symlink means the root's own /dir, not the real /dir.
        std::os::unix::fs::symlink("/dir", inner.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../outside", inner.join("up")).unwrap();
        let root = File::open(&inner).unwrap();
        let in_root = libc::RESOLVE_IN_ROOT;
        let abs = open_path_in(root.as_fd(), "abs", in_root).unwrap();
        let dir = std::fs::metadata(inner.join("dir")).unwrap();
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat into a buffer we own.
        assert_eq!(unsafe { libc::fstat(abs.as_raw_fd(), st.as_mut_ptr()) }, 0);
        // SAFETY: fstat succeeded.
        let st = unsafe { st.assume_init() };
        use std::os::unix::fs::MetadataExt;
        assert_eq!((st.st_dev, st.st_ino), (dir.dev(), dir.ino()));
        // `..` stops at the root: "outside" is not reached.
        let err = open_path_in(root.as_fd(), "up", in_root).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_user_namespace_covers_itself() {
        let dir = proc_dir(std::process::id()).unwrap();
        let fds = ProcessFds::open(dir.as_fd()).unwrap();
        assert!(userns_covers(fds.user.as_fd(), fds.user.as_fd()).unwrap());
        let mnt_owner = owner(fds.mnt.as_fd()).unwrap();
        assert!(userns_covers(fds.user.as_fd(), mnt_owner.as_fd()).unwrap());
    }
}
