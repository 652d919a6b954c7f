//! The control server: the sysvisor-proto protocol (one JSON request per line, one JSON
//! response line each) on a unix stream socket, for the runtime to register containers.
//!
//! One thread accepts; each connection gets a short-lived thread of its own, with read and
//! write timeouts and an overall deadline, so a client that connects and says nothing (or
//! half a line) ties up nothing but its own thread, and only for a while. A request that
//! cannot be understood gets a `{"ok":false,"error":...}` line; nothing a client sends can
//! stop the server.
//!
//! The socket is made mode 0600 (root only) before it appears under its name: it is bound
//! under a temporary name in the same directory, chmod-ed, then renamed. Its directory is
//! created mode 0711 when missing (see [`ControlServer::start`] for why). A socket file left by a dead daemon (connecting to it is
//! refused) is removed; one with a live daemon behind it is an error.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use parking_lot::{Condvar, Mutex};
use sysvisor_proto::{Request, Response, MAX_LINE};

use super::registry::{Registered, Registry};
use crate::mounttrap::listener::LOCK_WAIT;
use crate::mounttrap::ViewLocks;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot create the socket directory {path}: {source}")]
    SocketDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("another sysvisor-fs daemon is listening on {path}")]
    AlreadyRunning { path: PathBuf },
    #[error("{path} exists and is not a socket; not touching it")]
    NotASocket { path: PathBuf },
    #[error("cannot use the socket path {path}: {source}")]
    SocketPath {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the control server: {0}")]
    Spawn(#[source] io::Error),
}

/// Limits of the control server.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// How long a client may stay silent: before its first request, between requests and
    /// in the middle of one. Also the write timeout of each answer.
    pub idle_timeout: Duration,
    /// How long one connection may last in all.
    pub max_connection_time: Duration,
    /// Connections served at once; one more is answered with an error and closed.
    pub max_connections: usize,
    /// The mount trap's lock outcomes, for `views_locked` (`None`: no trap runs).
    pub views: Option<Arc<ViewLocks>>,
}

impl Default for ControlOptions {
    fn default() -> Self {
        ControlOptions {
            idle_timeout: Duration::from_secs(5),
            max_connection_time: Duration::from_secs(30),
            max_connections: 64,
            views: None,
        }
    }
}

/// How long [`ControlServer::stop`] waits for requests in flight.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Checks the socket path before the daemon starts anything: fine if nothing is there;
/// a stale socket (nobody accepts on it) is removed; a live one or a non-socket is an error.
pub fn check_socket(path: &Path) -> Result<(), ControlError> {
    match fs::symlink_metadata(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ControlError::SocketPath { path: path.to_path_buf(), source }),
        Ok(meta) if !meta.file_type().is_socket() => {
            Err(ControlError::NotASocket { path: path.to_path_buf() })
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => Err(ControlError::AlreadyRunning { path: path.to_path_buf() }),
            Err(err) => {
                fs::remove_file(path).map_err(|source| ControlError::SocketPath {
                    path: path.to_path_buf(),
                    source,
                })?;
                tracing::info!(path = %path.display(), reason = %err, "removed a stale control socket");
                Ok(())
            }
        },
    }
}

/// Connections being served, so that stopping can wait for them and unblock idle ones.
#[derive(Default)]
struct Active {
    streams: Mutex<HashMap<u64, UnixStream>>,
    next: AtomicU64,
    idle: Condvar,
}

/// Removes a connection from [`Active`] when its thread ends, however it ends.
struct ActiveGuard {
    active: Arc<Active>,
    id: u64,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let mut streams = self.active.streams.lock();
        streams.remove(&self.id);
        if streams.is_empty() {
            self.active.idle.notify_all();
        }
    }
}

/// A listening control server. Dropping it stops it (as [`ControlServer::stop`]).
pub struct ControlServer {
    path: PathBuf,
    /// (device, inode) of the socket file it made: only that file is removed at the end.
    socket_file: (u64, u64),
    stop: Arc<AtomicBool>,
    waker: UnixStream,
    accept: Option<JoinHandle<()>>,
    active: Arc<Active>,
}

impl ControlServer {
    /// Listens on `path` (see the module docs) and starts accepting.
    pub fn start(
        path: &Path,
        registry: Arc<Registry>,
        options: ControlOptions,
    ) -> Result<ControlServer, ControlError> {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        // 0711: the socket itself is 0600, and sysvisor-runc keeps the id-shifted root
        // filesystems below /run/sysvisor, which runc must be able to traverse as the
        // container's user.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(parent)
            .map_err(|source| ControlError::SocketDir { path: parent.to_path_buf(), source })?;
        check_socket(path)?;
        let listener = bind_private(path)?;
        let bind_error = |source| ControlError::Bind { path: path.to_path_buf(), source };
        let meta = fs::symlink_metadata(path).map_err(bind_error)?;
        let socket_file = (meta.dev(), meta.ino());
        listener.set_nonblocking(true).map_err(bind_error)?;
        let (waker, wake_rx) = UnixStream::pair().map_err(ControlError::Spawn)?;
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(Active::default());
        let accept = {
            let (stop, active) = (stop.clone(), active.clone());
            thread::Builder::new()
                .name("control-accept".into())
                .spawn(move || {
                    accept_loop(&listener, &wake_rx, &stop, "control", |stream| {
                        dispatch(stream, &active, &registry, &options)
                    })
                })
                .map_err(ControlError::Spawn)
        };
        let mut server = ControlServer {
            path: path.to_path_buf(),
            socket_file,
            stop,
            waker,
            accept: None,
            active,
        };
        // On error, dropping `server` removes the socket.
        server.accept = Some(accept?);
        Ok(server)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, ends the connections (requests in flight are answered), removes the
    /// socket file.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            if let Err(err) = (&self.waker).write_all(b"x") {
                tracing::warn!(error = %err, "cannot wake the control server");
            }
            if accept.join().is_err() {
                tracing::error!("the control server's accept thread panicked");
            }
        }
        // Idle connections are waiting in a read: end it. A request already read is still
        // answered (only the reading side is shut).
        {
            let mut streams = self.active.streams.lock();
            for stream in streams.values() {
                let _ = stream.shutdown(Shutdown::Read);
            }
            let deadline = Instant::now() + STOP_GRACE;
            while !streams.is_empty() {
                if self.active.idle.wait_until(&mut streams, deadline).timed_out() {
                    tracing::warn!(
                        connections = streams.len(),
                        "control connections still busy; leaving them"
                    );
                    break;
                }
            }
        }
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.socket_file => {
                if let Err(err) = fs::remove_file(&self.path) {
                    let path = self.path.display();
                    tracing::warn!(%path, error = %err, "cannot remove the control socket");
                }
            }
            Ok(_) => {
                tracing::warn!(path = %self.path.display(), "the control socket was replaced; leaving it")
            }
            Err(_) => {}
        }
        tracing::info!(path = %self.path.display(), "control socket closed");
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if !self.stop.load(Ordering::SeqCst) {
            self.shutdown();
        }
    }
}

/// Binds a socket that is mode 0600 from the moment it has its name.
pub(crate) fn bind_private(path: &Path) -> Result<UnixListener, ControlError> {
    let bind_error = |source| ControlError::Bind { path: path.to_path_buf(), source };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(bind_error)?;
    let placed = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(err) = placed {
        let _ = fs::remove_file(&tmp);
        return Err(bind_error(err));
    }
    Ok(listener)
}

/// Accepts on a non-blocking `listener` until `stop` is set (and `wake` is written to), and
/// hands each connection to `on_connection`. `what` names the socket in logs. Shared with
/// the mount trap's listener.
pub(crate) fn accept_loop(
    listener: &UnixListener,
    wake: &UnixStream,
    stop: &AtomicBool,
    what: &str,
    mut on_connection: impl FnMut(UnixStream),
) {
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(err) => {
                tracing::error!(error = %err, socket = what, "poll on a socket failed");
                thread::sleep(Duration::from_millis(100));
            }
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        loop {
            match listener.accept() {
                Ok((stream, _)) => on_connection(stream),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    // Out of descriptors or memory: let it pass instead of spinning.
                    tracing::warn!(error = %err, socket = what, "cannot accept a connection");
                    thread::sleep(Duration::from_millis(50));
                    break;
                }
            }
        }
    }
}

/// Hands a new connection to a thread of its own, unless too many are being served.
fn dispatch(
    stream: UnixStream,
    active: &Arc<Active>,
    registry: &Arc<Registry>,
    options: &ControlOptions,
) {
    let _ = stream.set_nonblocking(false);
    let id = {
        let mut streams = active.streams.lock();
        if streams.len() >= options.max_connections {
            drop(streams);
            tracing::warn!(
                limit = options.max_connections,
                "too many control connections; refusing one"
            );
            refuse(stream);
            return;
        }
        let id = active.next.fetch_add(1, Ordering::Relaxed);
        match stream.try_clone() {
            Ok(clone) => {
                streams.insert(id, clone);
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot serve a control connection");
                return;
            }
        }
        id
    };
    let guard = ActiveGuard { active: active.clone(), id };
    let registry = registry.clone();
    let options = options.clone();
    let spawned = thread::Builder::new().name("control-conn".into()).spawn(move || {
        let _guard = guard;
        serve_connection(&stream, &registry, &options);
    });
    if let Err(err) = spawned {
        // The closure, guard included, was dropped: the connection is forgotten and closed.
        tracing::warn!(error = %err, "cannot start a thread for a control connection");
    }
}

/// Answers a connection that cannot be served with an error, without waiting for it.
fn refuse(mut stream: UnixStream) {
    // Take what the client already sent: closing a unix socket with unread data resets the
    // connection, and the client would see that instead of the answer.
    if stream.set_nonblocking(true).is_ok() {
        let mut scratch = [0u8; 4096];
        for _ in 0..(MAX_LINE / scratch.len()) {
            match stream.read(&mut scratch) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = write_response(&stream, &Response::error("the sysvisor-fs daemon is busy; try again"));
}

/// Answers the requests of one connection, one line each, until the client closes it, stays
/// silent for `idle_timeout`, or has been connected for `max_connection_time`.
pub fn serve_connection(stream: &UnixStream, registry: &Registry, options: &ControlOptions) {
    let deadline = Instant::now() + options.max_connection_time;
    if stream.set_write_timeout(Some(options.idle_timeout)).is_err() {
        return;
    }
    let mut reader = BufReader::new(stream);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::debug!("control connection open too long; closing it");
            return;
        }
        if stream.set_read_timeout(Some(left.min(options.idle_timeout))).is_err() {
            return;
        }
        let mut line = Vec::new();
        match reader.by_ref().take(MAX_LINE as u64).read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {
                let complete = line.ends_with(b"\n");
                if !complete && line.len() >= MAX_LINE {
                    let message = format!("request longer than {MAX_LINE} bytes");
                    tracing::warn!("refused a control request: {message}");
                    let _ = write_response(stream, &Response::error(message));
                    return;
                }
                if write_response(
                    stream,
                    &handle_line_with(registry, options.views.as_deref(), &line),
                )
                .is_err()
                    || !complete
                {
                    // Gone, or it closed after a last line without a newline.
                    return;
                }
            }
            Err(err)
                if matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
            {
                tracing::debug!("control client silent too long; closing the connection");
                return;
            }
            Err(err) => {
                tracing::debug!(error = %err, "control connection failed");
                return;
            }
        }
    }
}

fn write_response(mut stream: &UnixStream, response: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(response)
        .unwrap_or_else(|_| br#"{"ok":false,"error":"cannot encode the answer"}"#.to_vec());
    line.push(b'\n');
    stream.write_all(&line)
}

/// The answer to one request line, without a mount trap.
pub fn handle_line(registry: &Registry, line: &[u8]) -> Response {
    handle_line_with(registry, None, line)
}

/// The answer to one request line; `views` answers `views_locked`.
pub fn handle_line_with(registry: &Registry, views: Option<&ViewLocks>, line: &[u8]) -> Response {
    match parse_request(line) {
        Ok(Request::ViewsLocked { id, init_pid }) => views_locked(views, &id, init_pid),
        Ok(request) => handle(registry, request),
        Err(message) => Response::error(message),
    }
}

/// One request line, decoded; `Err` holds the message the client gets back.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let Ok(text) = std::str::from_utf8(line) else {
        return Err("malformed request: not UTF-8".into());
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(
            r#"empty request: expected one JSON object per line, e.g. {"op":"ping"}"#.into()
        );
    }
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(err) => return Err(format!("malformed request: not JSON ({err})")),
    };
    let known = Request::OPS.join(", ");
    let op = match value.get("op") {
        Some(serde_json::Value::String(op)) => op.clone(),
        Some(_) => return Err(r#"malformed request: "op" is not a string"#.into()),
        None => {
            return Err(format!(
                r#"malformed request: expected a JSON object with an "op" (one of {known})"#
            ))
        }
    };
    if !Request::OPS.contains(&op.as_str()) {
        let shown: String = op.chars().take(64).collect();
        return Err(format!("unknown op {shown:?} (known: {known})"));
    }
    serde_json::from_value::<Request>(value).map_err(|err| format!("malformed {op} request: {err}"))
}

/// The answer to one request.
pub fn handle(registry: &Registry, request: Request) -> Response {
    match request {
        Request::Ping => Response::ok(),
        Request::Register { container } => {
            let (id, init_pid, created_unix_ms) =
                (container.id.clone(), container.init_pid, container.created_unix_ms);
            match registry.register(container) {
                Ok(how) => {
                    tracing::info!(
                        container = %id,
                        init_pid,
                        created_unix_ms,
                        replaced = how == Registered::Replaced,
                        "registered"
                    );
                    Response::ok()
                }
                Err(err) => {
                    tracing::warn!(error = %err, "registration refused");
                    Response::error(err.to_string())
                }
            }
        }
        Request::Unregister { id } => match registry.unregister(&id) {
            Ok(true) => {
                tracing::info!(container = %id, "unregistered");
                Response::ok()
            }
            Ok(false) => {
                tracing::debug!(container = %id, "unregister of a container not registered");
                Response::ok()
            }
            Err(err) => {
                tracing::warn!(container = %id, error = %err, "unregister failed");
                Response::error(err.to_string())
            }
        },
        Request::List => Response::with_containers(registry.list()),
        Request::ViewsLocked { id, init_pid } => views_locked(None, &id, init_pid),
    }
}

/// Waits for the lock of a container's views (see `mounttrap::locks`).
fn views_locked(views: Option<&ViewLocks>, id: &str, init_pid: u32) -> Response {
    let Some(views) = views else {
        return Response::error("this daemon runs no mount trap: no views can be locked");
    };
    match views.wait(id, init_pid, LOCK_WAIT) {
        Ok(guard) => {
            tracing::debug!(container = %id, init_pid, ?guard, "views locked: the container may start");
            Response::ok()
        }
        Err(err) => {
            tracing::warn!(container = %id, init_pid, error = %err, "the container must not start");
            Response::error(err.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::registry::tests::{container, FakeProcesses};
    use sysvisor_proto::call;

    fn registry(dir: &Path) -> (Arc<Registry>, Arc<FakeProcesses>) {
        let fake = FakeProcesses::new();
        fake.spawn(10, 500, 100);
        let (registry, _) = Registry::open_with(&dir.join("state"), fake.clone()).unwrap();
        (Arc::new(registry), fake)
    }

    fn error_of(response: Response) -> String {
        assert!(!response.ok, "{response:?}");
        response.error.expect("an error message")
    }

    #[test]
    fn malformed_lines_get_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _) = registry(dir.path());
        let cases: &[(&[u8], &str)] = &[
            (b"this is not json\n", "malformed request: not JSON"),
            (b"{\"op\":\"ping\"\n", "malformed request: not JSON"),
            (b"\n", "empty request"),
            (b"   \r\n", "empty request"),
            (b"\xff\xfe\n", "not UTF-8"),
            (
                b"[1,2]\n",
                "expected a JSON object with an \"op\" (one of ping, register, unregister, list, views_locked)",
            ),
            (b"{}\n", "expected a JSON object"),
            (b"{\"op\":3}\n", "\"op\" is not a string"),
            (b"{\"op\":\"register\"}\n", "malformed register request: missing field `container`"),
            (b"{\"op\":\"register\",\"container\":{\"id\":\"x\"}}\n", "malformed register request"),
            (b"{\"op\":\"unregister\",\"id\":7}\n", "malformed unregister request"),
        ];
        for (line, expected) in cases {
            let message = error_of(handle_line(&registry, line));
            assert!(message.contains(expected), "{:?}: {message}", String::from_utf8_lossy(line));
        }
        assert!(registry.is_empty());
    }

    #[test]
    fn views_locked_answers_with_the_locks_outcome() {
        use crate::mounttrap::locks::{Guard, LockState};
        let dir = tempfile::tempdir().unwrap();
        let (registry, _) = registry(dir.path());
        let ask = |views, id: &str| {
            let line = serde_json::to_vec(&Request::ViewsLocked { id: id.into(), init_pid: 7 });
            handle_line_with(&registry, views, &line.unwrap())
        };
        assert!(error_of(ask(None, "c")).contains("runs no mount trap"));
        let views = ViewLocks::default();
        views.begin("ok", 7);
        views.finish("ok", 7, LockState::Done(Guard::Locked));
        assert_eq!(ask(Some(&views), "ok"), Response::ok());
        views.begin("bad", 7);
        views.finish("bad", 7, LockState::Failed("no MOVE_MOUNT_BENEATH".into()));
        let message = error_of(ask(Some(&views), "bad"));
        assert!(message.contains("must not run: no MOVE_MOUNT_BENEATH"), "{message}");
    }

    #[test]
    fn unknown_ops_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _) = registry(dir.path());
        let message = error_of(handle_line(&registry, br#"{"op":"frobnicate","id":"x"}"#));
        assert_eq!(
            message,
            r#"unknown op "frobnicate" (known: ping, register, unregister, list, views_locked)"#
        );
        let long = format!(r#"{{"op":"{}"}}"#, "y".repeat(10_000));
        assert!(error_of(handle_line(&registry, long.as_bytes())).len() < 200);
    }

    #[test]
    fn requests_are_handled() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _) = registry(dir.path());
        assert_eq!(handle_line(&registry, b"{\"op\":\"ping\"}\n"), Response::ok());
        // Unknown fields are ignored; no newline is fine.
        assert_eq!(handle_line(&registry, br#"{"op":"ping","version":2}"#), Response::ok());
        let register = |c| serde_json::to_vec(&Request::Register { container: c }).unwrap();
        assert_eq!(handle_line(&registry, &register(container("c1", 10, 1000))), Response::ok());
        let refused = error_of(handle_line(&registry, &register(container("c2", 99, 1000))));
        assert_eq!(refused, "init process 99 of container c2 does not exist");
        let list = handle_line(&registry, br#"{"op":"list"}"#);
        assert!(list.ok);
        assert_eq!(list.containers, [container("c1", 10, 1000)]);
        for _ in 0..2 {
            assert_eq!(handle_line(&registry, br#"{"op":"unregister","id":"c1"}"#), Response::ok());
        }
        assert_eq!(handle_line(&registry, br#"{"op":"list"}"#), Response::ok());
    }

    fn read_line(reader: &mut BufReader<&UnixStream>) -> Option<Response> {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).expect("a JSON response line")),
        }
    }

    #[test]
    fn a_connection_answers_each_line_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _) = registry(dir.path());
        let (client, server) = UnixStream::pair().unwrap();
        let worker = {
            let registry = registry.clone();
            thread::spawn(move || serve_connection(&server, &registry, &ControlOptions::default()))
        };
        (&client)
            .write_all(b"garbage\n{\"op\":\"ping\"}\n{\"op\":\"nope\"}\n{\"op\":\"list\"}")
            .unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut reader = BufReader::new(&client);
        assert!(!read_line(&mut reader).unwrap().ok);
        assert!(read_line(&mut reader).unwrap().ok);
        assert!(error_of(read_line(&mut reader).unwrap()).starts_with("unknown op"));
        assert!(read_line(&mut reader).unwrap().ok, "last line without a newline");
        assert!(read_line(&mut reader).is_none());
        worker.join().unwrap();
    }

    #[test]
    fn an_overlong_line_is_refused_and_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _) = registry(dir.path());
        let (client, server) = UnixStream::pair().unwrap();
        let worker =
            thread::spawn(move || serve_connection(&server, &registry, &ControlOptions::default()));
        let writer = {
            let client = client.try_clone().unwrap();
            // Fails with EPIPE once the server has closed: fine.
            thread::spawn(move || (&client).write_all(&vec![b'x'; MAX_LINE * 2]))
        };
        let mut reader = BufReader::new(&client);
        let message = error_of(read_line(&mut reader).unwrap());
        assert!(message.contains("longer than"), "{message}");
        assert!(read_line(&mut reader).is_none());
        worker.join().unwrap();
        let _ = writer.join().unwrap();
    }

    #[test]
    fn a_silent_client_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _) = registry(dir.path());
        let (client, server) = UnixStream::pair().unwrap();
        let options = ControlOptions {
            idle_timeout: Duration::from_millis(100),
            ..ControlOptions::default()
        };
        let started = Instant::now();
        let worker = thread::spawn(move || serve_connection(&server, &registry, &options));
        (&client).write_all(b"{\"op\":").unwrap();
        worker.join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(read_line(&mut BufReader::new(&client)).is_none());
    }

    #[test]
    fn server_listens_privately_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _) = registry(dir.path());
        let path = dir.path().join("run/sysvisor/fs.sock");
        let options =
            ControlOptions { idle_timeout: Duration::from_secs(30), ..ControlOptions::default() };
        let server = ControlServer::start(&path, registry.clone(), options.clone()).unwrap();
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o711);
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());

        // A client that says nothing (or half a line) does not hold up the others.
        let silent = UnixStream::connect(&path).unwrap();
        let half = UnixStream::connect(&path).unwrap();
        (&half).write_all(b"{\"op\":\"pi").unwrap();
        let started = Instant::now();
        for _ in 0..20 {
            call(&path, &Request::Ping, Duration::from_secs(5)).unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        let listed = call(&path, &Request::List, Duration::from_secs(5)).unwrap();
        assert!(listed.containers.is_empty());

        // A second server on the same path is refused while this one lives.
        let err = ControlServer::start(&path, registry.clone(), options.clone()).err().unwrap();
        assert!(matches!(err, ControlError::AlreadyRunning { .. }), "{err}");

        // Stopping is prompt even with idle clients, and removes the socket.
        let started = Instant::now();
        server.stop();
        assert!(started.elapsed() < STOP_GRACE + Duration::from_secs(1), "{:?}", started.elapsed());
        assert!(!path.exists());
        let mut reader = BufReader::new(&silent);
        assert!(read_line(&mut reader).is_none(), "the silent client was disconnected");
        drop(half);
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 0, "no temp socket left");
    }

    #[test]
    fn stale_sockets_are_replaced_and_other_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _) = registry(dir.path());
        let path = dir.path().join("fs.sock");
        // A socket nobody listens on any more.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let server =
            ControlServer::start(&path, registry.clone(), ControlOptions::default()).unwrap();
        call(&path, &Request::Ping, Duration::from_secs(5)).unwrap();
        drop(server);
        assert!(!path.exists());

        fs::write(&path, b"not a socket").unwrap();
        let err = ControlServer::start(&path, registry, ControlOptions::default()).err().unwrap();
        assert!(matches!(err, ControlError::NotASocket { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"not a socket");
    }

    #[test]
    fn too_many_connections_get_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _) = registry(dir.path());
        let path = dir.path().join("fs.sock");
        let options = ControlOptions { max_connections: 2, ..ControlOptions::default() };
        let server = ControlServer::start(&path, registry, options).unwrap();
        let held: Vec<UnixStream> = (0..2).map(|_| UnixStream::connect(&path).unwrap()).collect();
        // Let the accept thread take both.
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.active.streams.lock().len() < 2 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let extra = UnixStream::connect(&path).unwrap();
        // The server may answer "busy" and hang up before reading: EPIPE here is fine.
        let _ = (&extra).write_all(b"{\"op\":\"ping\"}\n");
        extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reader = BufReader::new(&extra);
        let message = error_of(read_line(&mut reader).expect("an answer"));
        assert!(message.contains("busy"), "{message}");
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(5);
        while call(&path, &Request::Ping, Duration::from_secs(5)).is_err() {
            assert!(Instant::now() < deadline, "still busy");
            thread::sleep(Duration::from_millis(10));
        }
    }
}
