//! A pidfd: a handle on one process that, unlike its pid number, cannot come to mean another
//! process after the first one is reaped. The caller cache keeps one per cached pid so that
//! a cache hit costs one syscall instead of re-reading /proc.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// Opens a pidfd for `pid` (in the daemon's pid namespace).
    pub fn open(pid: u32) -> io::Result<PidFd> {
        let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is
        // passed in.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: the kernel just returned this fd to us and nothing else owns it.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Whether the process is still alive (a zombie counts as alive: its pid is not free).
    pub fn is_alive(&self) -> bool {
        // SAFETY: signal 0 only checks for existence; the info pointer may be null and the
        // fd is a valid pidfd we own.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                0,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        // EPERM would mean "exists but not ours"; as root we do not see it, but it still
        // proves the process exists.
        rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive() {
        let fd = PidFd::open(std::process::id()).expect("pidfd_open on self");
        assert!(fd.is_alive());
    }

    #[test]
    fn reaped_child_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let fd = PidFd::open(child.id()).expect("pidfd_open on child");
        child.wait().expect("wait");
        assert!(!fd.is_alive());
    }

    #[test]
    fn missing_pid_is_an_error() {
        // pid_max is at most 2^22, so this pid cannot exist.
        assert!(PidFd::open(1 << 30).is_err());
    }
}
