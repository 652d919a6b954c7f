//! A pidfd: a handle on one process that, unlike its pid number, cannot come to mean another
//! process after the first one is reaped. The caller cache keeps one per cached pid so that
//! a cache hit costs one syscall instead of re-reading /proc.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

#[derive(Debug)]
pub struct PidFd(OwnedFd);

/// pidfd_open's flag for a pidfd on a single thread (it is O_EXCL's value).
const PIDFD_THREAD: libc::c_int = libc::O_EXCL;

fn pidfd_open(pid: libc::pid_t, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is
    // passed in.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The process (thread group) a thread belongs to, from /proc/TID/status.
fn thread_group_of(tid: u32) -> Option<libc::pid_t> {
    let status = super::pidns::read_proc_text(&format!("/proc/{tid}/status"))?;
    status.lines().find_map(|line| line.strip_prefix("Tgid:")?.trim().parse().ok())
}

impl PidFd {
    /// Opens a pidfd for `pid` (in the daemon's pid namespace). FUSE requests carry the
    /// id of the calling *thread*, so `pid` may be a thread that is not its process's
    /// leader: that needs PIDFD_THREAD (Linux 6.9). Older kernels refuse it with EINVAL;
    /// there the handle is taken on the thread's process instead, which still cannot be
    /// confused with a later process of the same number.
    pub fn open(pid: u32) -> io::Result<PidFd> {
        let raw =
            libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
        let fd = match pidfd_open(raw, PIDFD_THREAD) {
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                let tgid = thread_group_of(pid).ok_or(err)?;
                pidfd_open(tgid, 0)?
            }
            other => other?,
        };
        Ok(PidFd(fd))
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
    fn non_leader_thread_is_alive_until_it_exits() {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: gettid has no arguments and cannot fail.
            tid_tx.send(unsafe { libc::gettid() } as u32).expect("send tid");
            stop_rx.recv().ok();
        });
        let tid = tid_rx.recv().expect("tid");
        assert_ne!(tid, std::process::id());
        let fd = PidFd::open(tid).expect("pidfd on a thread");
        assert!(fd.is_alive());
        stop_tx.send(()).expect("stop");
        thread.join().expect("join");
        assert!(!fd.is_alive(), "the thread has exited");
    }

    #[test]
    fn missing_pid_is_an_error() {
        // pid_max is at most 2^22, so this pid cannot exist.
        assert!(PidFd::open(1 << 30).is_err());
    }
}
