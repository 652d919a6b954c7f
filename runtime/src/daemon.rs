//! Talking to the sysvisor-fs daemon: a thin wrapper around [`sysvisor_proto::call`].
//!
//! `create` pings the daemon before anything else happens (no daemon, no container),
//! registers the container once runc created it, and `delete` unregisters it.
//! Which daemon: the global flags `--fs-socket` and `--fs-mountpoint` (see
//! [`crate::cli::DaemonOpts`], given to [`use_paths`]), else `SYSVISOR_FS_SOCKET` and
//! `SYSVISOR_FS_MOUNTPOINT`, else the defaults.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sysvisor_proto::{call, Container, ProtoError, Request, DEFAULT_MOUNTPOINT, DEFAULT_SOCKET};

/// Environment variable overriding the daemon's socket.
pub const ENV_SOCKET: &str = "SYSVISOR_FS_SOCKET";
/// Environment variable overriding the daemon's mountpoint.
pub const ENV_MOUNTPOINT: &str = "SYSVISOR_FS_MOUNTPOINT";
/// How long one request may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// How long the daemon may take to lock a new container's views (it waits up to 30 s
/// itself, and answers with the reason when that is not enough).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(40);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(
        "sysvisor-fs daemon not reachable at {socket}: {reason}; start it with \
         `systemctl start sysvisor-fs` or `sysvisor-fs serve`"
    )]
    Unreachable {
        socket: PathBuf,
        reason: String,
        #[source]
        source: ProtoError,
    },
    #[error("sysvisor-fs daemon at {socket} failed to {op} container {id}: {source}")]
    Request {
        socket: PathBuf,
        op: &'static str,
        id: String,
        #[source]
        source: ProtoError,
    },
    #[error("cannot read the container's pid file {path}: {reason}")]
    PidFile { path: PathBuf, reason: String },
}

/// The paths given on the command line, for the life of the process.
static FLAG_PATHS: OnceLock<(Option<PathBuf>, Option<PathBuf>)> = OnceLock::new();

/// Makes [`socket_path`] and [`mountpoint`] answer `socket` and `mountpoint` where given
/// (the command line's `--fs-socket` and `--fs-mountpoint`). The first call wins.
pub fn use_paths(socket: Option<PathBuf>, mountpoint: Option<PathBuf>) {
    let _ = FLAG_PATHS.set((socket, mountpoint));
}

/// The daemon's socket: `--fs-socket`, `$SYSVISOR_FS_SOCKET` or [`DEFAULT_SOCKET`].
pub fn socket_path() -> PathBuf {
    FLAG_PATHS
        .get()
        .and_then(|(socket, _)| socket.clone())
        .or_else(|| env_path(ENV_SOCKET))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// Where the daemon's views live: `--fs-mountpoint`, `$SYSVISOR_FS_MOUNTPOINT` or
/// [`DEFAULT_MOUNTPOINT`].
pub fn mountpoint() -> PathBuf {
    FLAG_PATHS
        .get()
        .and_then(|(_, mountpoint)| mountpoint.clone())
        .or_else(|| env_path(ENV_MOUNTPOINT))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MOUNTPOINT))
}

/// `statfs` type of a FUSE mount.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Container `id`'s own view files (`<mountpoint>-containers/<id>`, see
/// [`sysvisor_proto::containers_mountpoint_for`]) when the daemon serves them there: the
/// directory is a FUSE mount. `None` (an older daemon): the per-caller views are bound.
pub fn own_views(id: &str) -> Option<PathBuf> {
    let dir = sysvisor_proto::containers_mountpoint_for(&mountpoint());
    let fs = nix::sys::statfs::statfs(&dir).ok()?;
    (fs.filesystem_type().0 as i64 == FUSE_SUPER_MAGIC).then(|| dir.join(id))
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// A client of one daemon socket.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub socket: PathBuf,
    pub timeout: Duration,
}

impl Daemon {
    pub fn new(socket: impl Into<PathBuf>) -> Daemon {
        Daemon { socket: socket.into(), timeout: TIMEOUT }
    }

    /// The daemon named by the environment (see [`socket_path`]).
    pub fn from_env() -> Daemon {
        Daemon::new(socket_path())
    }

    /// Checks that the daemon answers.
    pub fn ping(&self) -> Result<(), DaemonError> {
        call(&self.socket, &Request::Ping, self.timeout).map(drop).map_err(|source| {
            let reason = match &source {
                ProtoError::Connect { source, .. } => source.to_string(),
                other => other.to_string(),
            };
            DaemonError::Unreachable { socket: self.socket.clone(), reason, source }
        })
    }

    pub fn register(&self, container: Container) -> Result<(), DaemonError> {
        let id = container.id.clone();
        call(&self.socket, &Request::Register { container }, self.timeout)
            .map(drop)
            .map_err(|source| self.request_error("register", id, source))
    }

    pub fn unregister(&self, id: &str) -> Result<(), DaemonError> {
        call(&self.socket, &Request::Unregister { id: id.to_string() }, self.timeout)
            .map(drop)
            .map_err(|source| self.request_error("unregister", id.to_string(), source))
    }

    /// Waits until the daemon has locked the views of container `id` (init `init_pid`):
    /// an error means the container must not start.
    pub fn views_locked(&self, id: &str, init_pid: u32) -> Result<(), DaemonError> {
        let request = Request::ViewsLocked { id: id.to_string(), init_pid };
        call(&self.socket, &request, LOCK_TIMEOUT)
            .map(drop)
            .map_err(|source| self.request_error("lock the views of", id.to_string(), source))
    }

    fn request_error(&self, op: &'static str, id: String, source: ProtoError) -> DaemonError {
        DaemonError::Request { socket: self.socket.clone(), op, id, source }
    }
}

/// Reads a pid file as runc writes it (decimal, no newline).
pub fn read_pid_file(path: &Path) -> Result<u32, DaemonError> {
    let err = |reason: String| DaemonError::PidFile { path: path.to_path_buf(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    match text.trim().parse::<u32>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(err(format!("not a pid: {:?}", text.trim()))),
    }
}

/// The cgroup path in a `/proc/PID/cgroup` text: the unified (`0::`) line when it names
/// a cgroup other than the root, else the memory controller's line (cgroup v1).
pub fn parse_cgroup(text: &str) -> Option<String> {
    let mut unified = None;
    let mut memory = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            unified = Some(path.to_string());
        } else if controllers.split(',').any(|c| c == "memory") {
            memory = Some(path.to_string());
        }
    }
    match (unified, memory) {
        (Some(u), Some(m)) if u == "/" => Some(m),
        (Some(u), _) => Some(u),
        (None, m) => m,
    }
}

/// The cgroup of a process (see [`parse_cgroup`]); `None` when it cannot be read.
pub fn cgroup_of(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok().and_then(|t| parse_cgroup(&t))
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    #[test]
    fn unreachable_daemon_says_how_to_start_it() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("fs.sock");
        let err = Daemon::new(&socket).ping().unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("sysvisor-fs daemon not reachable at {}: ", socket.display())),
            "{msg}"
        );
        assert!(msg.contains("No such file or directory"), "{msg}");
        assert!(
            msg.ends_with("start it with `systemctl start sysvisor-fs` or `sysvisor-fs serve`"),
            "{msg}"
        );
    }

    #[test]
    fn register_sends_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("fs.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            (&stream).write_all(b"{\"ok\":true}\n").unwrap();
            line
        });
        let container = Container {
            id: "c1".into(),
            init_pid: 42,
            uid_base: 165536,
            gid_base: 165536,
            id_count: 65536,
            cgroup: Some("/docker/c1".into()),
            created_unix_ms: 7,
        };
        Daemon::new(&socket).register(container.clone()).unwrap();
        let sent: Request = serde_json::from_str(&server.join().unwrap()).unwrap();
        assert_eq!(sent, Request::Register { container });
    }

    #[test]
    fn pid_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pid");
        std::fs::write(&path, "1234").unwrap();
        assert_eq!(read_pid_file(&path).unwrap(), 1234);
        std::fs::write(&path, "x").unwrap();
        assert!(read_pid_file(&path).unwrap_err().to_string().contains("not a pid"));
        assert!(read_pid_file(&dir.path().join("none")).is_err());
    }

    #[test]
    fn cgroup_lines() {
        let v2 = "0::/system.slice/docker-abc.scope\n";
        assert_eq!(parse_cgroup(v2).as_deref(), Some("/system.slice/docker-abc.scope"));
        let v1 = "12:pids:/docker/abc\n5:memory:/docker/abc\n1:name=systemd:/docker/abc\n0::/\n";
        assert_eq!(parse_cgroup(v1).as_deref(), Some("/docker/abc"));
        let hybrid = "4:cpu,memory:/docker/m\n0::/docker/u\n";
        assert_eq!(parse_cgroup(hybrid).as_deref(), Some("/docker/u"));
        assert_eq!(parse_cgroup("garbage"), None);
        assert!(cgroup_of(std::process::id()).is_some());
    }
}
