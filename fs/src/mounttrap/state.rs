//! What runc sends to the seccomp listener: the OCI `ContainerProcessState` as JSON, with the
//! seccomp notify fd attached (SCM_RIGHTS) to the same message. runc 1.1 closes only a
//! duplicate of its end, so the connection stays open as long as that runc process lives
//! (a foreground `runc run`: the container's whole life): the message ends where the JSON
//! value ends, not at EOF. runc 1.1 does that for the container's init (state `creating`, `pid` =
//! `state.pid`) and for every `runc exec` process (state `running`, `pid` = the new process).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// The name of the seccomp fd in `fds` (runtime-spec `SeccompFdName`).
pub const SECCOMP_FD_NAME: &str = "seccompFd";
/// The largest state the listener reads.
pub const MAX_STATE: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProcessState {
    /// Names of the attached fds, in order.
    #[serde(default)]
    pub fds: Vec<String>,
    /// The process the fd belongs to (host pid).
    pub pid: i64,
    #[serde(default)]
    pub metadata: String,
    pub state: ContainerState,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ContainerState {
    pub id: String,
    #[serde(default)]
    pub status: String,
    /// The container's init (host pid).
    #[serde(default)]
    pub pid: i64,
    #[serde(default)]
    pub bundle: PathBuf,
}

impl ProcessState {
    pub fn parse(bytes: &[u8]) -> Result<ProcessState, String> {
        let state: ProcessState = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if state.pid <= 0 || state.pid > i64::from(i32::MAX) {
            return Err(format!("bad pid {}", state.pid));
        }
        if state.state.id.is_empty() {
            return Err("no container id".into());
        }
        Ok(state)
    }

    /// Where the seccomp fd is among the attached fds (runc sends just that one).
    pub fn seccomp_fd_index(&self) -> Option<usize> {
        if self.fds.is_empty() {
            return Some(0);
        }
        self.fds.iter().position(|name| name == SECCOMP_FD_NAME)
    }

    /// Whether the fd belongs to the container's init (rather than to a `runc exec`).
    pub fn is_init(&self) -> bool {
        self.pid == self.state.pid
    }
}

/// Whether `data` holds a whole JSON value (or something that can never become one, which
/// the parser then reports): runc's message is complete.
pub fn is_complete(data: &[u8]) -> bool {
    match serde_json::from_slice::<serde::de::IgnoredAny>(data) {
        Ok(_) => true,
        Err(err) => !err.is_eof(),
    }
}

/// Reads a connection's message (until [`is_complete`] or EOF, at most [`MAX_STATE`] bytes,
/// within `timeout`) and every fd attached to it.
pub fn receive(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let deadline = Instant::now() + timeout;
    let mut data = Vec::new();
    let mut fds = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::from(io::ErrorKind::TimedOut));
        }
        let mut poll = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on one pollfd we own.
        let rc = unsafe { libc::poll(&mut poll, 1, left.as_millis().min(60_000) as libc::c_int) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if rc == 0 {
            continue;
        }
        let mut buf = vec![0u8; 64 * 1024];
        let n = recv_with_fds(fd, &mut buf, &mut fds)?;
        if n == 0 {
            return Ok((data, fds));
        }
        data.extend_from_slice(&buf[..n]);
        if data.len() > MAX_STATE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "state too large"));
        }
        if is_complete(&data) {
            return Ok((data, fds));
        }
    }
}

/// One recvmsg: data into `buf`, attached fds (close-on-exec) appended to `fds`.
pub(crate) fn recv_with_fds(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    const MAX_FDS: usize = 16;
    // Room for one SCM_RIGHTS message of MAX_FDS descriptors, aligned for cmsghdr.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is plain data; zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: recvmsg into buffers we own and that outlive the call.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: walking the control messages the kernel just wrote into `control`, with the
    // libc macros that stay within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = (len / std::mem::size_of::<RawFd>()).min(MAX_FDS);
                for i in 0..count {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(n as usize)
}

/// Whether `fd` is a seccomp notify fd.
pub fn is_seccomp_notify_fd(fd: BorrowedFd<'_>) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .is_ok_and(|target| target.as_os_str() == "anon_inode:seccomp notify")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    /// What runc 1.1 sends for an init (from its `initProcess.start`).
    const INIT: &str = r#"{"ociVersion":"1.0.2-dev","fds":["seccompFd"],"pid":4242,"metadata":"",
        "state":{"ociVersion":"1.0.2-dev","id":"abc","status":"creating","pid":4242,
        "bundle":"/run/containerd/io.containerd.runtime.v2.task/moby/abc","annotations":{"a":"b"}}}"#;

    #[test]
    fn parses_runcs_state() {
        let s = ProcessState::parse(INIT.as_bytes()).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.state.id, "abc");
        assert!(s.is_init());
        assert_eq!(s.seccomp_fd_index(), Some(0));
        assert_eq!(
            s.state.bundle,
            PathBuf::from("/run/containerd/io.containerd.runtime.v2.task/moby/abc")
        );

        let exec = INIT.replace(r#""pid":4242,"metadata""#, r#""pid":4300,"metadata""#);
        let s = ProcessState::parse(exec.as_bytes()).unwrap();
        assert!(!s.is_init());
    }

    #[test]
    fn bad_states_are_refused() {
        assert!(ProcessState::parse(b"{").is_err());
        assert!(ProcessState::parse(br#"{"pid":0,"state":{"id":"a"}}"#).is_err());
        assert!(ProcessState::parse(br#"{"pid":-5,"state":{"id":"a"}}"#).is_err());
        assert!(ProcessState::parse(br#"{"pid":5,"state":{"id":""}}"#).is_err());
        let other = ProcessState::parse(br#"{"pid":5,"fds":["x"],"state":{"id":"a"}}"#).unwrap();
        assert_eq!(other.seccomp_fd_index(), None);
    }

    #[test]
    fn receives_the_state_and_its_fd() {
        let (a, b) = UnixStream::pair().unwrap();
        let passed = std::fs::File::open("/dev/null").unwrap();
        let sender = std::thread::spawn(move || {
            let raw = passed.as_raw_fd();
            let payload = INIT.as_bytes();
            let mut iov =
                libc::iovec { iov_base: payload.as_ptr() as *mut _, iov_len: payload.len() };
            let mut control = [0u64; 4];
            // SAFETY: building one SCM_RIGHTS message in buffers owned by this test.
            unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                msg.msg_control = control.as_mut_ptr().cast();
                msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len = libc::CMSG_LEN(4) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), raw);
                assert!(libc::sendmsg(a.as_raw_fd(), &msg, 0) > 0);
            }
            (&a).write_all(b" ").unwrap();
            drop(a);
        });
        let (data, fds) = receive(b.as_fd(), Duration::from_secs(5)).unwrap();
        sender.join().unwrap();
        assert_eq!(data.len(), INIT.len(), "the trailing byte is not waited for");
        assert_eq!(fds.len(), 1);
        assert!(!is_seccomp_notify_fd(fds[0].as_fd()));
        assert!(ProcessState::parse(&data).is_ok());
    }

    #[test]
    fn the_message_ends_with_its_json_value() {
        assert!(is_complete(INIT.as_bytes()));
        assert!(!is_complete(&INIT.as_bytes()[..20]));
        assert!(!is_complete(b""));
        assert!(is_complete(b"{\"a\": nonsense"), "a syntax error is final");
        // runc keeps its end open: the state alone must do.
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(INIT.as_bytes()).unwrap();
        let (data, fds) = receive(b.as_fd(), Duration::from_secs(5)).unwrap();
        assert_eq!(data, INIT.as_bytes());
        assert!(fds.is_empty());
        drop(a);
    }

    #[test]
    fn a_silent_peer_times_out() {
        let (_a, b) = UnixStream::pair().unwrap();
        let err = receive(b.as_fd(), Duration::from_millis(50)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
