//! Daemon mode helpers: a [`Site`] (mount point, socket and state directory of one
//! `sysvisor-fs serve`), the [`Daemon`] running on it, and [`NsInit`], the init of a
//! fake container (a fresh pid namespace, and optionally the user, network, UTS and IPC
//! namespaces of a system container).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sysvisor_proto::{call, Container, Request, Response};

use super::*;

/// How long one control request may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

static SITES: AtomicUsize = AtomicUsize::new(0);

pub fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}

pub fn mode(path: &Path) -> u32 {
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
pub struct Site {
    pub root: PathBuf,
    pub mnt: PathBuf,
    /// The containers' own files (`mnt-containers`, beside `mnt`).
    pub own: PathBuf,
    pub sock: PathBuf,
    pub state: PathBuf,
    pub log: PathBuf,
}

impl Site {
    pub fn new() -> Site {
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
            own: sysvisor_proto::containers_mountpoint_for(&root.join("mnt")),
            sock: root.join("run/fs.sock"),
            state: root.join("state"),
            log: root.join("daemon.log"),
            root,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the per-caller mount or the containers' one is mounted.
    pub fn mounted(&self) -> bool {
        mountinfo().iter().any(|m| m.mount_point == self.mnt || m.mount_point == self.own)
    }

    /// Container `id`'s own file `rel` (`proc/meminfo`).
    pub fn own_path(&self, id: &str, rel: &str) -> PathBuf {
        self.own.join(id).join(rel)
    }

    /// Sends one request; the daemon's answer, refusals included.
    pub fn call(&self, request: &Request) -> Result<Response, sysvisor_proto::ProtoError> {
        call(&self.sock, request, CALL_TIMEOUT)
    }

    pub fn ping(&self) {
        self.call(&Request::Ping).unwrap_or_else(|e| panic!("ping: {e}\nlog:\n{}", self.log()));
    }

    pub fn list(&self) -> Vec<Container> {
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
            for dir in [&self.mnt, &self.own] {
                let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.root) {
            eprintln!("cannot remove {}: {e}", self.root.display());
        }
    }
}

/// A running `sysvisor-fs serve` on a [`Site`]. Drop SIGKILLs it if it still runs (the
/// site then detaches its mount); while panicking, the daemon's log is printed.
pub struct Daemon<'a> {
    site: &'a Site,
    child: Option<Child>,
}

impl<'a> Daemon<'a> {
    /// Starts the daemon and waits until it answers on its socket with its mount up.
    pub fn start(site: &'a Site) -> Daemon<'a> {
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

    pub fn spawn(site: &Site) -> Child {
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

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("daemon running").id() as i32)
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten();
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Waits up to `timeout` for the daemon to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
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
    pub fn terminate(&mut self) {
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
    pub fn crash(&mut self) {
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
/// `unshare --fork --pid sleep`, whose child (the `sleep`) is the init. Drop kills it all.
pub struct NsInit {
    unshare: Option<Child>,
    /// `sleep` holding the namespaces made before the pid namespace ([`NsInit::container`]).
    holder: Option<Child>,
    /// Host pid of the `sleep`.
    pub pid: u32,
}

impl NsInit {
    /// An init in a fresh pid namespace, everything else the host's.
    pub fn start() -> NsInit {
        let mut cmd = Command::new("unshare");
        cmd.args(["--fork", "--pid", "--", "sleep", "300"]);
        NsInit::spawn(cmd, None)
    }

    /// An init in namespaces of its own like a system container's: a user namespace
    /// mapping 0..65536 to host ids `base..`, and network, UTS, IPC and pid namespaces
    /// owned by it. (util-linux cannot map a range without newuidmap: a `sleep` holds the
    /// user, network, UTS and IPC namespaces while the maps are written, then `nsenter`
    /// enters them as root and `unshare` makes the pid namespace.)
    pub fn container(base: u32) -> NsInit {
        NsInit::container_with(base, &["net", "uts", "ipc"])
    }

    /// As [`NsInit::container`], with only the namespaces `own` (of "net", "uts", "ipc")
    /// of its own: the others are the host's (what `--uts=host` or `--ipc=host` would give).
    pub fn container_with(base: u32, own: &[&str]) -> NsInit {
        let own_flags: Vec<String> = own.iter().map(|ns| format!("--{ns}")).collect();
        let holder = Command::new("unshare")
            .arg("--user")
            .args(&own_flags)
            .args(["--", "sleep", "300"])
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start unshare --user");
        let hpid = holder.id();
        let mut holder = Some(holder);
        let deadline = Instant::now() + Duration::from_secs(10);
        // The maps can be written once unshare has made the namespace (and exec'd sleep).
        let map = format!("0 {base} 65536\n");
        loop {
            let comm = fs::read_to_string(format!("/proc/{hpid}/comm")).unwrap_or_default();
            let own_userns = fs::read_link(format!("/proc/{hpid}/ns/user")).ok()
                != fs::read_link("/proc/self/ns/user").ok();
            if comm.trim() == "sleep" && own_userns {
                break;
            }
            if Instant::now() > deadline {
                if let Some(mut h) = holder.take() {
                    let _ = h.kill();
                    let _ = h.wait();
                }
                panic!("unshare --user did not exec its sleep");
            }
            thread::sleep(Duration::from_millis(5));
        }
        for file in ["uid_map", "gid_map"] {
            fs::write(format!("/proc/{hpid}/{file}"), &map)
                .unwrap_or_else(|e| panic!("write {file} of {hpid}: {e}"));
        }
        let mut cmd = Command::new("nsenter");
        let enter = own.iter().map(|ns| format!("-{}", &ns[..1]));
        cmd.args(["-t", &hpid.to_string(), "-U"]).args(enter).arg("--");
        cmd.args(["unshare", "--fork", "--pid", "--", "sleep", "300"]);
        NsInit::spawn(cmd, holder)
    }

    fn spawn(mut cmd: Command, holder: Option<Child>) -> NsInit {
        let unshare = cmd.stdin(Stdio::null()).process_group(0).spawn().expect("start unshare");
        let mut init = NsInit { pid: 0, unshare: Some(unshare), holder };
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

    /// Runs `args` in all of the init's namespaces but the mount namespace (so the test's
    /// mounts are visible), as the user `uid` of its user namespace (0 for its root; a
    /// plain [`NsInit::start`] has no user namespace and ignores it).
    pub fn reader(&self, uid: u32) -> Reader {
        let pid = self.pid.to_string();
        let mut reader = Reader::new("nsenter").args(["-t", &pid, "-p", "-n", "-u", "-i"]);
        if self.holder.is_some() {
            let id = uid.to_string();
            reader = reader.args(["-U", "-S", &id, "-G", &id]);
        }
        reader.arg("--")
    }

    /// Kills the init now, and waits for its `unshare` to reap it and exit (so that the
    /// init is gone, not a zombie, when this returns); then the namespace holder.
    pub fn kill(&mut self) {
        if self.pid != 0 {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        }
        let wait_exit = |child: &mut Child| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        };
        if let Some(mut unshare) = self.unshare.take() {
            wait_exit(&mut unshare);
        }
        if let Some(mut holder) = self.holder.take() {
            let _ = holder.kill();
            wait_exit(&mut holder);
        }
    }
}

impl Drop for NsInit {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The NSpid line of /proc/PID/status: the pid in each namespace, outermost first.
pub fn nspid(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|ids| ids.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

pub fn container(id: &str, init_pid: u32, created_unix_ms: u64) -> Container {
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

pub fn register(site: &Site, container: &Container) {
    site.call(&Request::Register { container: container.clone() })
        .unwrap_or_else(|e| panic!("register {}: {e}\nlog:\n{}", container.id, site.log()));
}

/// Polls `f` until it holds (views are cached for up to --cache-ttl-ms).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within 5 s");
        thread::sleep(Duration::from_millis(50));
    }
}
