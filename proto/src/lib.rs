//! The control protocol between `sysvisor-runc` and the `sysvisor-fs` daemon.
//!
//! One JSON object per line over a unix stream socket (default [`DEFAULT_SOCKET`]): the
//! client writes a [`Request`], the daemon answers one [`Response`] line. Plain JSON lines
//! keep the protocol debuggable with `socat` and stable across versions (unknown fields are
//! ignored).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/sysvisor/fs.sock";
/// Where the daemon mounts its views unless told otherwise.
pub const DEFAULT_MOUNTPOINT: &str = "/var/lib/sysvisor-fs";
/// Where the daemon keeps its registry of containers unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/sysvisor/fs";
/// The longest request line the daemon reads (newline included); longer ones are refused.
pub const MAX_LINE: usize = 1 << 20;

/// The file name of the daemon's seccomp listener socket, beside its control socket: runc
/// hands it each container's seccomp notify fd (the OCI `linux.seccomp.listenerPath`).
pub const SECCOMP_SOCKET_NAME: &str = "seccomp.sock";

/// The system calls a system container's seccomp profile sends to the daemon
/// (`SCMP_ACT_NOTIFY`): the mount family, so that the daemon can perform proc and sysfs
/// mounts with the virtual views on them (see sysvisor-fs' `mounttrap`). Names that do not
/// exist on an architecture (`umount` on x86_64) are skipped by runc.
pub const MOUNT_TRAP_SYSCALLS: &[&str] =
    &["mount", "umount", "umount2", "fsopen", "open_tree", "move_mount", "mount_setattr"];

/// The system calls about the machine that the daemon answers with the container's own
/// figures (`SCMP_ACT_NOTIFY` to the same listener): `sysinfo` (memory, swap, uptime,
/// loads, tasks; see sysvisor-fs' `mounttrap::sysinfo`).
pub const INFO_TRAP_SYSCALLS: &[&str] = &["sysinfo"];

/// mount(2) flags that keep a `mount` call from being trapped at all: remounts
/// (`MS_REMOUNT`) and propagation changes (`MS_SHARED`, `MS_PRIVATE`, `MS_SLAVE`,
/// `MS_UNBINDABLE`). The daemon would only let them continue (the kernel refuses whatever
/// would touch a locked view), so the filter lets them through without the round trip.
/// Binds and moves stay trapped: before a new container's views are locked they must wait
/// for the lock (see sysvisor-fs' `mounttrap::lock`).
pub const MOUNT_FLAGS_NOT_TRAPPED: u64 =
    32 /* MS_REMOUNT */ | 1 << 17 /* MS_UNBINDABLE */ | 1 << 18 /* MS_PRIVATE */
    | 1 << 19 /* MS_SLAVE */ | 1 << 20 /* MS_SHARED */;

/// The seccomp listener socket that goes with the control socket `control`.
pub fn seccomp_socket_for(control: &Path) -> std::path::PathBuf {
    control.with_file_name(SECCOMP_SOCKET_NAME)
}

/// The mount point of every registered container's own view files
/// (`CONTAINERS/<id>/proc/meminfo`, ...), beside the daemon's per-caller mount `mountpoint`:
/// the same path with `-containers` appended (`/var/lib/sysvisor-fs-containers`).
pub fn containers_mountpoint_for(mountpoint: &Path) -> std::path::PathBuf {
    let mut path = mountpoint.as_os_str().to_owned();
    path.push("-containers");
    std::path::PathBuf::from(path)
}

/// A system container as the daemon knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// The OCI container id.
    pub id: String,
    /// Host pid of the container's init process.
    pub init_pid: u32,
    /// First host uid and gid of the container's user namespace range, and its size.
    pub uid_base: u32,
    pub gid_base: u32,
    pub id_count: u32,
    /// The container's cgroup path (as in /proc/PID/cgroup), if known.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// When the container was created, in milliseconds since the Unix epoch: its uptime
    /// counts from here.
    pub created_unix_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    Register {
        container: Container,
    },
    Unregister {
        id: String,
    },
    List,
    /// Answers once the mount trap has locked the views of container `id`, whose init is
    /// `init_pid` (sysvisor-runc asks after `runc create`, while the init still waits for
    /// `runc start`); an error says why the container must not run.
    ViewsLocked {
        id: String,
        init_pid: u32,
    },
}

impl Request {
    /// The `op` of every request, as it appears on the wire.
    pub const OPS: &'static [&'static str] =
        &["ping", "register", "unregister", "list", "views_locked"];

    /// This request's `op`.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Register { .. } => "register",
            Request::Unregister { .. } => "unregister",
            Request::List => "list",
            Request::ViewsLocked { .. } => "views_locked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
}

impl Response {
    pub fn ok() -> Response {
        Response { ok: true, error: None, containers: Vec::new() }
    }

    pub fn error(message: impl Into<String>) -> Response {
        Response { ok: false, error: Some(message.into()), containers: Vec::new() }
    }

    /// A successful answer to [`Request::List`].
    pub fn with_containers(containers: Vec<Container>) -> Response {
        Response { ok: true, error: None, containers }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error(
        "cannot reach the sysvisor-fs daemon at {path}: {source} (is sysvisor-fs serve running?)"
    )]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the sysvisor-fs daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad message from the sysvisor-fs daemon: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the sysvisor-fs daemon closed the connection without answering")]
    NoAnswer,
    #[error("the sysvisor-fs daemon refused: {0}")]
    Refused(String),
}

/// Sends one request and waits (at most `timeout`) for its answer.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, ProtoError> {
    let stream = UnixStream::connect(socket)
        .map_err(|source| ProtoError::Connect { path: socket.display().to_string(), source })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    (&stream).write_all(&line)?;
    let mut answer = String::new();
    if BufReader::new(&stream).read_line(&mut answer)? == 0 {
        return Err(ProtoError::NoAnswer);
    }
    let response: Response = serde_json::from_str(&answer)?;
    if !response.ok {
        return Err(ProtoError::Refused(
            response.error.unwrap_or_else(|| "no reason given".into()),
        ));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json_lines() {
        let json = serde_json::to_string(&Request::Unregister { id: "abc".into() }).unwrap();
        assert_eq!(json, r#"{"op":"unregister","id":"abc"}"#);
        let back: Request = serde_json::from_str(r#"{"op":"ping","extra":1}"#).unwrap();
        assert_eq!(back, Request::Ping);
    }

    #[test]
    fn ops_match_the_wire_tags() {
        let container = Container {
            id: "c".into(),
            init_pid: 1,
            uid_base: 0,
            gid_base: 0,
            id_count: 0,
            cgroup: None,
            created_unix_ms: 0,
        };
        let all = [
            Request::Ping,
            Request::Register { container },
            Request::Unregister { id: "c".into() },
            Request::List,
            Request::ViewsLocked { id: "c".into(), init_pid: 1 },
        ];
        assert_eq!(all.len(), Request::OPS.len());
        for (request, op) in all.iter().zip(Request::OPS) {
            let json = serde_json::to_value(request).unwrap();
            assert_eq!(json["op"], *op);
            assert_eq!(request.op(), *op);
        }
    }

    #[test]
    fn seccomp_socket_sits_beside_the_control_socket() {
        assert_eq!(
            seccomp_socket_for(Path::new(DEFAULT_SOCKET)),
            Path::new("/run/sysvisor/seccomp.sock")
        );
        assert_eq!(
            seccomp_socket_for(Path::new("/tmp/x/c.sock")),
            Path::new("/tmp/x/seccomp.sock")
        );
    }

    #[test]
    fn containers_mount_sits_beside_the_mount() {
        assert_eq!(
            containers_mountpoint_for(Path::new(DEFAULT_MOUNTPOINT)),
            Path::new("/var/lib/sysvisor-fs-containers")
        );
        assert_eq!(
            containers_mountpoint_for(Path::new("/tmp/x/mnt")),
            Path::new("/tmp/x/mnt-containers")
        );
    }

    #[test]
    fn missing_daemon_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = call(&dir.path().join("none.sock"), &Request::Ping, Duration::from_secs(1))
            .unwrap_err();
        assert!(err.to_string().contains("is sysvisor-fs serve running?"), "{err}");
    }

    #[test]
    fn refusal_carries_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            let mut out = serde_json::to_vec(&Response::error("no such container")).unwrap();
            out.push(b'\n');
            (&stream).write_all(&out).unwrap();
        });
        let err = call(&path, &Request::List, Duration::from_secs(5)).unwrap_err();
        server.join().unwrap();
        assert!(matches!(err, ProtoError::Refused(ref m) if m == "no such container"), "{err}");
    }
}
