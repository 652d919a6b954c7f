//! Root integration tests of daemon mode (`sysvisor-fs serve`): the control socket, the
//! registry (uptime counted from a container's registered creation, kept across restarts),
//! bad clients, and recovery from a crashed daemon.
//!
//! Skipped (with a message) unless running as root with /dev/fuse. Every daemon, temporary
//! directory, mount and namespace made here is undone by a guard, also when a test fails.

mod common;

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sysvisor_proto::{call, Container, Request, Response};

use common::*;

/// How long one control request may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

static SITES: AtomicUsize = AtomicUsize::new(0);

fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The directories of one daemon: `<tmp>/sysvisor-test-<pid>-<tid>-daemon-<n>/` (named like
/// the common helpers' resources, so their leak check covers it) holding `mnt`, `run/fs.sock`,
/// `state` (none of which exist before the daemon makes them) and the daemon's log.
///
/// Drop detaches whatever is still mounted on `mnt` (a live or a dead mount) and removes
/// the directory.
struct Site {
    root: PathBuf,
    mnt: PathBuf,
    sock: PathBuf,
    state: PathBuf,
    log: PathBuf,
}

impl Site {
    fn new() -> Site {
        let tmp = std::env::temp_dir();
        let tmp = tmp.canonicalize().unwrap_or(tmp);
        let name = format!(
            "{PREFIX}{}-{}-daemon-{}",
            std::process::id(),
            nix::unistd::gettid(),
            SITES.fetch_add(1, Ordering::Relaxed)
        );
        let root = tmp.join(name);
        fs::create_dir(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        Site {
            mnt: root.join("mnt"),
            sock: root.join("run/fs.sock"),
            state: root.join("state"),
            log: root.join("daemon.log"),
            root,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn mounted(&self) -> bool {
        mountinfo().iter().any(|m| m.mount_point == self.mnt)
    }

    /// Sends one request; the daemon's answer, refusals included.
    fn call(&self, request: &Request) -> Result<Response, sysvisor_proto::ProtoError> {
        call(&self.sock, request, CALL_TIMEOUT)
    }

    fn ping(&self) {
        self.call(&Request::Ping).unwrap_or_else(|e| panic!("ping: {e}\nlog:\n{}", self.log()));
    }

    fn list(&self) -> Vec<Container> {
        self.call(&Request::List)
            .unwrap_or_else(|e| panic!("list: {e}\nlog:\n{}", self.log()))
            .containers
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        for _ in 0..4 {
            if !self.mounted() {
                break;
            }
            let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
        }
        if let Err(e) = fs::remove_dir_all(&self.root) {
            eprintln!("cannot remove {}: {e}", self.root.display());
        }
    }
}

/// A running `sysvisor-fs serve` on a [`Site`]. Drop SIGKILLs it if it still runs (the
/// site then detaches its mount); while panicking, the daemon's log is printed.
struct Daemon<'a> {
    site: &'a Site,
    child: Option<Child>,
}

impl<'a> Daemon<'a> {
    /// Starts the daemon and waits until it answers on its socket with its mount up.
    fn start(site: &'a Site) -> Daemon<'a> {
        let mut daemon = Daemon { site, child: Some(Daemon::spawn(site)) };
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            if let Some(status) = daemon.try_wait() {
                panic!(
                    "sysvisor-fs serve exited with {status} before serving; log:\n{}",
                    site.log()
                );
            }
            if site.call(&Request::Ping).is_ok() && is_fuse_mounted(&site.mnt) {
                let probe = site.path("proc/uptime");
                if with_timeout("stat of proc/uptime", MOUNT_TIMEOUT, move || probe.exists()) {
                    return daemon;
                }
            }
            assert!(
                Instant::now() < deadline,
                "daemon not serving within {MOUNT_TIMEOUT:?}; log:\n{}",
                site.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn spawn(site: &Site) -> Child {
        let log =
            OpenOptions::new().create(true).append(true).open(&site.log).expect("open daemon log");
        Command::new(BIN)
            .arg("serve")
            .arg("--mountpoint")
            .arg(&site.mnt)
            .arg("--socket")
            .arg(&site.sock)
            .arg("--state-dir")
            .arg(&site.state)
            .arg("--threads")
            .arg("2")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"))
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("daemon running").id() as i32)
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten();
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Waits up to `timeout` for the daemon to exit.
    fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM; asserts that the daemon exits 0 in time and leaves neither its socket nor
    /// its mount behind.
    fn terminate(&mut self) {
        kill(self.pid(), Signal::SIGTERM).expect("SIGTERM");
        match self.wait(STOP_TIMEOUT) {
            Some(status) => {
                assert!(status.success(), "daemon exited with {status}; log:\n{}", self.site.log())
            }
            None => panic!(
                "daemon still running {STOP_TIMEOUT:?} after SIGTERM; log:\n{}",
                self.site.log()
            ),
        }
        assert!(!self.site.sock.exists(), "socket left after SIGTERM");
        assert!(!self.site.mounted(), "mount left after SIGTERM");
    }

    /// SIGKILL, as a crash: the mount and the socket stay behind, dead.
    fn crash(&mut self) {
        kill(self.pid(), Signal::SIGKILL).expect("SIGKILL");
        self.wait(STOP_TIMEOUT).expect("daemon exits after SIGKILL");
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!("--- sysvisor-fs serve log ---\n{}--- end of log ---", self.site.log());
        }
    }
}

/// A process that is pid 1 of a fresh pid namespace, as a container's init would be:
/// `unshare --fork --pid sleep`, whose child (the `sleep`) is the init. Drop kills both.
struct NsInit {
    unshare: Option<Child>,
    /// Host pid of the `sleep`.
    pid: u32,
}

impl NsInit {
    fn start() -> NsInit {
        let unshare = Command::new("unshare")
            .args(["--fork", "--pid", "--", "sleep", "300"])
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start unshare");
        let mut init = NsInit { pid: 0, unshare: Some(unshare) };
        let parent = init.unshare.as_ref().map(Child::id).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while init.pid == 0 {
            let children = fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
                .unwrap_or_default();
            init.pid = children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .find(|&pid| {
                    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                    comm.trim() == "sleep" && nspid(pid).last() == Some(&1)
                })
                .unwrap_or(0);
            assert!(Instant::now() < deadline, "the sleep of `unshare -fp` did not show up");
            thread::sleep(Duration::from_millis(10));
        }
        init
    }

    /// Kills the init (and so its `unshare`) now.
    fn kill(&mut self) {
        if self.pid != 0 {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        }
        if let Some(mut unshare) = self.unshare.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while unshare.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = unshare.kill();
                    let _ = unshare.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// `/proc/uptime` of the mount as a process of this namespace reads it (`nsenter -p`
    /// forks, so `cat` runs inside), in seconds.
    fn read_uptime(&self, site: &Site) -> f64 {
        let out = Reader::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-p", "--", "cat"])
            .arg(site.path("proc/uptime"))
            .run_ok();
        parse_uptime(&out)
    }
}

impl Drop for NsInit {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The NSpid line of /proc/PID/status: the pid in each namespace, outermost first.
fn nspid(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|ids| ids.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// The uptime a container created `age` seconds ago must read: `age`, unless the host has
/// been up for less (a creation before boot counts from boot).
fn expected_uptime(age: f64) -> f64 {
    age.min(parse_uptime(&host_file("/proc/uptime")))
}

/// Asserts that `up` is about `expected` (it is read a little later).
fn assert_about(up: f64, expected: f64, what: &str) {
    assert!(
        up >= expected - 5.0 && up <= expected + 60.0,
        "{what}: uptime {up}, expected about {expected}"
    );
}

fn parse_uptime(text: &str) -> f64 {
    let up = text.split_whitespace().next().unwrap_or_else(|| panic!("empty uptime {text:?}"));
    up.parse().unwrap_or_else(|e| panic!("uptime {text:?}: {e}"))
}

fn container(id: &str, init_pid: u32, created_unix_ms: u64) -> Container {
    Container {
        id: id.into(),
        init_pid,
        uid_base: 231_072,
        gid_base: 231_072,
        id_count: 65_536,
        cgroup: None,
        created_unix_ms,
    }
}

fn register(site: &Site, container: &Container) {
    site.call(&Request::Register { container: container.clone() })
        .unwrap_or_else(|e| panic!("register {}: {e}\nlog:\n{}", container.id, site.log()));
}

/// Polls `f` until it holds (views are cached for up to --cache-ttl-ms).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within 5 s");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Writes `line` on `stream` and reads one answer line.
fn exchange(stream: &UnixStream, line: &str) -> Response {
    (&*stream).write_all(line.as_bytes()).expect("send");
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).expect("read answer");
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("answer {answer:?} to {line:?}: {e}"))
}

fn refusal(response: Response) -> String {
    assert!(!response.ok, "expected a refusal, got {response:?}");
    response.error.expect("refusal with a reason")
}

#[test]
fn registered_container_uptime_counts_from_its_creation_and_survives_restarts() {
    let Some(_leaks) = setup() else { return };
    let site = Site::new();
    let mut daemon = Daemon::start(&site);

    // Made by the daemon, privately.
    assert!(fs::symlink_metadata(&site.sock).unwrap().file_type().is_socket());
    assert_eq!(mode(&site.sock), 0o600);
    assert_eq!(mode(site.sock.parent().unwrap()), 0o711);
    assert_eq!(mode(&site.state), 0o700);
    assert!(site.mnt.is_dir());
    site.ping();
    assert!(site.list().is_empty());

    let mut init = NsInit::start();
    // Not registered: the namespace counts from its init, seconds ago.
    let up = init.read_uptime(&site);
    assert!(up < 60.0, "unregistered namespace uptime {up}");

    let c = container("sysvisor-test-c1", init.pid, now_unix_ms() - 3_600_000);
    register(&site, &c);
    // (The namespace's view rendered just before may be served for --cache-ttl-ms more.)
    let hour = expected_uptime(3600.0);
    eventually("uptime after registration", || (init.read_uptime(&site) - hour).abs() < 30.0);
    assert_about(init.read_uptime(&site), hour, "registered container");
    assert_eq!(site.list(), std::slice::from_ref(&c));
    // The host's own view is untouched.
    let host_view = parse_uptime(&with_timeout("read uptime", READER_TIMEOUT, {
        let p = site.path("proc/uptime");
        move || fs::read_to_string(p).expect("read uptime from the host")
    }));
    let host = parse_uptime(&host_file("/proc/uptime"));
    assert!((host_view - host).abs() < 5.0, "host reads {host_view}, /proc/uptime says {host}");
    // Registering the same id again replaces it (`docker start`).
    let c = Container { created_unix_ms: now_unix_ms() - 1_800_000, ..c };
    register(&site, &c);
    assert_eq!(site.list(), std::slice::from_ref(&c));
    let half_hour = expected_uptime(1800.0);
    eventually("uptime after re-registration", || {
        (init.read_uptime(&site) - half_hour).abs() < 30.0
    });

    // Restart: the registration is reloaded and the mount serves again.
    daemon.terminate();
    drop(daemon);
    let mut daemon = Daemon::start(&site);
    assert_eq!(site.list(), std::slice::from_ref(&c), "registration reloaded after a restart");
    assert_about(init.read_uptime(&site), half_hour, "after a restart");
    assert!(site.log().contains("registry loaded"), "{}", site.log());

    // Unregister (twice: idempotent); the namespace counts from its init again.
    for _ in 0..2 {
        site.call(&Request::Unregister { id: c.id.clone() }).expect("unregister");
    }
    assert!(site.list().is_empty());
    eventually("uptime after unregister", || init.read_uptime(&site) < 60.0);

    daemon.terminate();
    init.kill();
    assert!(!site.log().contains("panicked"), "{}", site.log());
}

#[test]
fn bad_requests_get_an_error_and_the_daemon_keeps_serving() {
    let Some(_leaks) = setup() else { return };
    let site = Site::new();
    let mut daemon = Daemon::start(&site);

    // Clients that connect and say nothing, or half a line, hold up no one.
    let silent = UnixStream::connect(&site.sock).expect("connect");
    let half = UnixStream::connect(&site.sock).expect("connect");
    (&half).write_all(br#"{"op":"regis"#).expect("send half a line");

    let stream = UnixStream::connect(&site.sock).expect("connect");
    stream.set_read_timeout(Some(CALL_TIMEOUT)).expect("timeout");
    let cases = [
        ("this is not json\n", "malformed request"),
        ("{\"op\":\"frobnicate\"}\n", "unknown op \"frobnicate\""),
        ("{\"op\":\"register\",\"container\":{\"id\":\"x\"}}\n", "malformed register request"),
        ("{\"no_op\":1}\n", "malformed request"),
        ("\n", "empty request"),
    ];
    for (line, expected) in cases {
        let message = refusal(exchange(&stream, line));
        assert!(message.contains(expected), "{line:?}: {message}");
    }
    // Registrations that cannot be right: a dead init, an init in the host's namespace.
    let mut child = Command::new("true").spawn().expect("spawn true");
    let dead = child.id();
    child.wait().expect("wait");
    let line = |c: Container| {
        format!("{}\n", serde_json::to_string(&Request::Register { container: c }).unwrap())
    };
    let message = refusal(exchange(&stream, &line(container("dead", dead, 0))));
    assert!(message.contains("does not exist"), "{message}");
    let message = refusal(exchange(&stream, &line(container("host", std::process::id(), 0))));
    assert!(message.contains("own pid namespace"), "{message}");
    // The same connection still works, and so does everyone else.
    assert!(exchange(&stream, "{\"op\":\"ping\"}\n").ok);
    let started = Instant::now();
    for _ in 0..10 {
        site.ping();
    }
    assert!(started.elapsed() < Duration::from_secs(5), "pings took {:?}", started.elapsed());
    assert!(site.list().is_empty());
    drop((stream, half));

    // A client that sends far too much is cut off; the daemon goes on.
    let flood = UnixStream::connect(&site.sock).expect("connect");
    let sent = (&flood).write_all(&vec![b'x'; 3 << 20]);
    let mut answer = String::new();
    let _ = BufReader::new(&flood).read_line(&mut answer);
    assert!(answer.contains("longer than") || sent.is_err(), "flood answered {answer:?}");
    drop(flood);
    site.ping();

    // A second daemon on the same socket is refused, before touching anything.
    let second = Command::new(BIN)
        .args(["serve", "--socket"])
        .arg(&site.sock)
        .arg("--mountpoint")
        .arg(&site.mnt)
        .arg("--state-dir")
        .arg(&site.state)
        .output()
        .expect("run a second daemon");
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another sysvisor-fs daemon is listening"), "{stderr}");
    site.ping();
    let meminfo = with_timeout("read meminfo", READER_TIMEOUT, {
        let p = site.path("proc/meminfo");
        move || fs::read_to_string(p)
    });
    assert!(meminfo.expect("read meminfo").contains("MemTotal"));

    // SIGTERM with a client still connected: clean exit all the same.
    daemon.terminate();
    drop(silent);
    assert!(!site.log().contains("panicked"), "{}", site.log());
}

#[test]
fn a_crashed_daemon_is_replaced_cleanly() {
    let Some(_leaks) = setup() else { return };
    let site = Site::new();
    let mut daemon = Daemon::start(&site);
    let survivor = NsInit::start();
    let mut victim = NsInit::start();
    register(&site, &container("survivor", survivor.pid, now_unix_ms() - 600_000));
    register(&site, &container("victim", victim.pid, now_unix_ms()));

    // Killed: a dead mount (ENOTCONN) and a socket nobody listens on stay behind.
    daemon.crash();
    drop(daemon);
    // (statfs: the root's attributes are cached, so stat may still succeed.)
    let mnt = site.mnt.clone();
    let statfs = with_timeout("statfs of the dead mount", READER_TIMEOUT, move || {
        nix::sys::statfs::statfs(&mnt).map(|_| ())
    });
    // ECONNABORTED if the statfs reached the dead daemon's io_uring queues before the kernel
    // tore them down (the rings outlive the process briefly), ENOTCONN after.
    assert!(
        matches!(statfs, Err(nix::errno::Errno::ENOTCONN | nix::errno::Errno::ECONNABORTED)),
        "dead mount: {statfs:?}"
    );
    assert!(site.sock.exists());
    assert!(
        UnixStream::connect(&site.sock).is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused)
    );
    // A container goes away while no daemon runs.
    victim.kill();

    let mut daemon = Daemon::start(&site);
    let log = site.log();
    assert!(log.contains("detached the dead mount"), "{log}");
    assert!(log.contains("removed a stale control socket"), "{log}");
    let ids: Vec<String> = site.list().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, ["survivor"], "the container whose init died is dropped on load");
    assert_about(survivor.read_uptime(&site), expected_uptime(600.0), "survivor");
    // Exactly one mount on the mount point: the dead one is gone.
    let mounts = mountinfo().into_iter().filter(|m| m.mount_point == site.mnt).count();
    assert_eq!(mounts, 1);

    daemon.terminate();
    assert!(!site.log().contains("panicked"), "{}", site.log());
}
