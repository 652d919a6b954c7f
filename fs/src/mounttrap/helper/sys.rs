//! The system calls the helper processes make, each failure named by the step it broke,
//! and the messages they send each other (an errno, a step, maybe a file descriptor).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::mounttrap::state::recv_with_fds;

/// A failed step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub step: String,
    pub errno: i32,
}

pub type Step<T> = Result<T, Failure>;

pub fn fail(step: &str) -> impl FnOnce(io::Error) -> Failure + '_ {
    move |err| Failure { step: step.to_string(), errno: err.raw_os_error().unwrap_or(libc::EIO) }
}

/// The failure of the last system call if `rc` is negative.
pub fn check(rc: libc::c_long, step: &str) -> Step<libc::c_long> {
    if rc < 0 {
        return Err(fail(step)(io::Error::last_os_error()));
    }
    Ok(rc)
}

/// A file descriptor the kernel just returned (`rc`), or the failure.
pub fn check_fd(rc: libc::c_long, step: &str) -> Step<OwnedFd> {
    let fd = check(rc, step)?;
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub fn cstring(s: &str, step: &str) -> Step<CString> {
    CString::new(s).map_err(|_| Failure { step: step.to_string(), errno: libc::EINVAL })
}

pub fn path_cstring(p: &Path, step: &str) -> Step<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Failure { step: step.to_string(), errno: libc::EINVAL })
}

pub fn sys_mount(
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

pub fn setns(fd: RawFd, nstype: libc::c_int, step: &str) -> Step<()> {
    // SAFETY: setns on an fd the daemon passed us.
    check(unsafe { libc::setns(fd, nstype) } as libc::c_long, step).map(drop)
}

pub fn unshare_mounts(step: &str) -> Step<()> {
    // SAFETY: unshare of the mount namespace in a single-threaded process.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) } as libc::c_long, step).map(drop)
}

pub fn fchdir(fd: RawFd, step: &str) -> Step<()> {
    // SAFETY: fchdir on an fd we hold.
    check(unsafe { libc::fchdir(fd) } as libc::c_long, step).map(drop)
}

pub fn cwd_fd() -> BorrowedFd<'static> {
    // SAFETY: AT_FDCWD is a valid "fd" for the *at calls for the life of the process.
    unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) }
}

pub fn move_mount(
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

/// Makes the mount at `path` and every mount below it read-only (`mount_setattr` with
/// `AT_RECURSIVE`).
pub fn make_tree_read_only(path: &Path, step: &str) -> Step<()> {
    let path = path_cstring(path, step)?;
    // `struct mount_attr` (MOUNT_ATTR_SIZE_VER0): attr_set, attr_clr, propagation, userns_fd.
    let attr: [u64; 4] = [crate::mounttrap::abi::MOUNT_ATTR_RDONLY as u64, 0, 0, 0];
    // SAFETY: mount_setattr with a NUL-terminated path and a mount_attr of the size passed;
    // both live across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    check(rc, step).map(drop)
}

/// Forks; the child runs `work` and leaves with `_exit` (its failure, if any, goes to
/// `report` first). Returns the child's pid to the parent.
pub fn fork_child(report: BorrowedFd<'_>, work: impl FnOnce() -> Step<()>) -> Step<libc::pid_t> {
    // SAFETY: the helper processes are single-threaded; the child only runs `work`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(fail("fork")(io::Error::last_os_error()));
    }
    if pid > 0 {
        return Ok(pid);
    }
    if let Err(failure) = work() {
        // The parent sees a missing message as a failure anyway.
        let _ = send(report, &failure, None);
    }
    // SAFETY: leave without running the parent's exit handlers twice.
    unsafe { libc::_exit(0) }
}

/// Waits for a child; a failure only if it did not exit normally.
pub fn wait(pid: libc::pid_t, step: &str) -> Step<()> {
    let mut status = 0;
    // SAFETY: waitpid on our own child, into a status we own.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    check(rc as libc::c_long, step)?;
    if libc::WIFEXITED(status) {
        return Ok(());
    }
    Err(Failure { step: format!("{step}: status {status:#x}"), errno: libc::EIO })
}

/// A pair of connected `SOCK_SEQPACKET` sockets: one message per send, and EOF once every
/// holder of the other end is gone.
pub fn socket_pair() -> Step<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills the two-element array we own.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    check(rc as libc::c_long, "socketpair")?;
    // SAFETY: the kernel just created both fds for us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The longest step name a message carries.
const MAX_STEP: usize = 60;

/// Sends a result: errno 0 and maybe a file descriptor, or a failure.
pub fn send(sock: BorrowedFd<'_>, failure: &Failure, fd: Option<BorrowedFd<'_>>) -> Step<()> {
    let mut buf = Vec::with_capacity(4 + MAX_STEP);
    buf.extend_from_slice(&failure.errno.to_ne_bytes());
    let step = failure.step.as_bytes();
    buf.extend_from_slice(&step[..step.len().min(MAX_STEP)]);
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: msghdr is plain data; zeroed means no name and no control data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: the control buffer holds exactly one SCM_RIGHTS header with one fd.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<RawFd>(), fd.as_raw_fd());
        }
    }
    // SAFETY: sendmsg with buffers that live across the call.
    let rc = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    check(rc as libc::c_long, "send").map(drop)
}

/// A success sent with [`send`].
pub fn success() -> Failure {
    Failure { step: String::new(), errno: 0 }
}

/// Receives one message: `Ok(fd)` for a success (with the fd sent, if any), the sender's
/// failure, or `Failure { step: when_gone, .. }` if the other side ended without a word.
pub fn receive(sock: BorrowedFd<'_>, when_gone: &str) -> Step<Option<OwnedFd>> {
    let mut buf = [0u8; 4 + MAX_STEP];
    let mut fds = Vec::new();
    let n = loop {
        match recv_with_fds(sock, &mut buf, &mut fds) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            other => break other.map_err(fail("receive"))?,
        }
    };
    if n < 4 {
        return Err(Failure { step: when_gone.to_string(), errno: libc::EIO });
    }
    let errno = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if errno == 0 {
        return Ok(fds.into_iter().next());
    }
    let step = String::from_utf8_lossy(&buf[4..n]).into_owned();
    Err(Failure { step, errno })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn messages_carry_failures_and_fds() {
        let (a, b) = socket_pair().unwrap();
        let failure = Failure { step: "mount".into(), errno: libc::EINVAL };
        send(a.as_fd(), &failure, None).unwrap();
        assert_eq!(receive(b.as_fd(), "gone").unwrap_err(), failure);
        let file = std::fs::File::open("/proc/self/status").unwrap();
        send(a.as_fd(), &success(), Some(file.as_fd())).unwrap();
        let fd = receive(b.as_fd(), "gone").unwrap().expect("an fd");
        assert!(std::fs::read_to_string(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap()
            .contains("Name:"));
        drop(a);
        let gone = receive(b.as_fd(), "gone").unwrap_err();
        assert_eq!(gone, Failure { step: "gone".into(), errno: libc::EIO });
    }
}
