//! Shared helpers for the root integration tests: a mounted `sysvisor-fs`, throwaway
//! cgroups, readers run inside a cgroup (optionally with views bind-mounted over the real
//! /proc and /sys files), and a leak check.
//!
//! Everything cleans up in `Drop`, so a failing or panicking test leaves no mount, cgroup or
//! process behind. Every resource is named `sysvisor-test-<pid>-<tid>-<n>` after the test
//! thread that made it, so tests can run in parallel and [`assert_no_leaks`] only looks at
//! the calling test's own resources. Create [`Mounted`] and [`TestCgroup`] on the test's own
//! thread (readers may run on other threads).
//!
//! Typical use:
//!
//! ```ignore
//! #[test]
//! fn something() {
//!     let Some(_leaks) = common::setup() else { return };
//!     let m = Mounted::new();
//!     let cg = TestCgroup::new();
//!     cg.memory_limit(256 << 20);
//!     let out = Reader::new("free").arg("-m").in_cgroup(&cg).bind_view(&m, "proc/meminfo").run_ok();
//!     ...
//! } // cg, m, then the leak check (`_leaks`) are dropped in that order
//! ```

#![allow(dead_code, clippy::new_without_default)]

pub mod daemon;

use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sysvisor-fs");
/// Prefix of every temp dir and cgroup these helpers create.
pub const PREFIX: &str = "sysvisor-test-";
/// Every file the server serves, relative to the mount point; each is bind-mounted over
/// `/<path>` by [`Reader::bind_views`].
pub const VIEWS: &[&str] = &[
    "proc/cpuinfo",
    "proc/diskstats",
    "proc/loadavg",
    "proc/meminfo",
    "proc/stat",
    "proc/swaps",
    "proc/uptime",
    "sys/devices/system/cpu/online",
    "sys/devices/system/cpu/possible",
    "sys/devices/system/cpu/present",
];
/// How long a reader may run before it counts as hung.
pub const READER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the server may take to mount.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the server may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

pub const MIB: u64 = 1024 * 1024;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn gettid() -> i32 {
    nix::unistd::gettid().as_raw()
}

/// `sysvisor-test-<pid>-<tid>-`: the prefix of the calling thread's resources.
fn thread_prefix() -> String {
    format!("{PREFIX}{}-{}-", std::process::id(), gettid())
}

fn unique_name() -> String {
    format!("{}{}", thread_prefix(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn temp_root() -> PathBuf {
    let t = std::env::temp_dir();
    t.canonicalize().unwrap_or(t)
}

// ---------------------------------------------------------------------------------------
// Skipping and leak checks
// ---------------------------------------------------------------------------------------

/// Starts a root integration test. Returns `None` after recording the skip (not root, no
/// /dev/fuse: see the `sysvisor-skip` crate) when the test cannot run here (the test then
/// just returns). Otherwise returns a guard that runs
/// [`assert_no_leaks`] when dropped, unless the test is already panicking; bind it first
/// (`let Some(_leaks) = setup() else { return };`) so it is dropped last.
#[must_use]
pub fn setup() -> Option<LeakCheck> {
    if !sysvisor_skip::unless_root_and_fuse() {
        return None;
    }
    Some(LeakCheck { tid: gettid() })
}

/// Runs [`assert_no_leaks`] on drop (see [`setup`]).
pub struct LeakCheck {
    tid: i32,
}

impl Drop for LeakCheck {
    fn drop(&mut self) {
        if !thread::panicking() {
            assert_eq!(self.tid, gettid(), "LeakCheck dropped on another thread");
            assert_no_leaks();
        }
    }
}

/// Panics if the calling test thread left anything behind: a mount under one of its temp
/// dirs (from /proc/self/mountinfo), one of its temp dirs, one of its `sysvisor-test-*`
/// cgroup dirs, or a child process (running or zombie) of this thread.
pub fn assert_no_leaks() {
    let prefix = thread_prefix();
    let mut leaks = Vec::new();

    let tmp_prefix = temp_root().join(&prefix);
    let tmp_prefix = tmp_prefix.to_string_lossy().into_owned();
    for mp in mount_points() {
        if mp.to_string_lossy().starts_with(&tmp_prefix) {
            leaks.push(format!("mount left at {}", mp.display()));
        }
    }
    if let Ok(entries) = fs::read_dir(temp_root()) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                leaks.push(format!("temp dir left: {}", e.path().display()));
            }
        }
    }
    for root in cgroup_layout().roots() {
        if let Ok(entries) = fs::read_dir(&root) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    leaks.push(format!("cgroup left: {}", e.path().display()));
                }
            }
        }
    }
    for pid in thread_children() {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let state = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next().map(|r| r.trim().chars().next().unwrap_or('?')))
            .unwrap_or('?');
        leaks.push(format!("child process left: pid {pid} ({}) state {state}", comm.trim()));
    }
    assert!(leaks.is_empty(), "leaked resources:\n  {}", leaks.join("\n  "));
}

/// Children of the calling thread.
fn thread_children() -> Vec<i32> {
    let path = format!("/proc/self/task/{}/children", gettid());
    fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Mounts
// ---------------------------------------------------------------------------------------

/// One parsed line of /proc/self/mountinfo.
#[derive(Debug, Clone)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
    pub super_options: String,
}

fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

/// The mounts of this process's mount namespace.
pub fn mountinfo() -> Vec<MountEntry> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            Some(MountEntry {
                mount_point: unescape_mountinfo(pre.get(4)?),
                fstype: post.first()?.to_string(),
                source: post.get(1).unwrap_or(&"").to_string(),
                super_options: post.get(2).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

fn mount_points() -> Vec<PathBuf> {
    mountinfo().into_iter().map(|m| m.mount_point).collect()
}

/// Whether a FUSE file system is mounted exactly at `dir`.
pub fn is_fuse_mounted(dir: &Path) -> bool {
    mountinfo().iter().any(|m| m.mount_point == dir && m.fstype.starts_with("fuse"))
}

fn is_mounted(dir: &Path) -> bool {
    mountinfo().iter().any(|m| m.mount_point == dir)
}

/// Runs `f` on a helper thread and gives up after `timeout` (the thread is left blocked,
/// e.g. in a FUSE request; killing the server unblocks it). Used for direct file access from
/// the test process, which would otherwise hang the test if the server hangs.
pub fn with_timeout<T: Send + 'static>(
    what: &str,
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(timeout) {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {timeout:?} (hung?)"),
    }
}

/// A running `sysvisor-fs mount <dir>` on a fresh temp dir.
///
/// Drop sends SIGTERM and waits up to [`STOP_TIMEOUT`]; if the server is still running it
/// is SIGKILLed, a mount still present is detached (`umount2(MNT_DETACH)`), and the temp dir
/// is removed. Unless the test is already panicking, Drop then panics if the shutdown was
/// not clean (exit status other than 0, server exited early, killed, or mount left behind);
/// while panicking it prints the server's log instead.
pub struct Mounted {
    root: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Mounted {
    /// Mounts with default options.
    pub fn new() -> Mounted {
        Mounted::with_args(&[])
    }

    /// Mounts with extra arguments after `mount <dir>`, e.g. `["--cache-ttl-ms", "0"]`.
    pub fn with_args(extra: &[&str]) -> Mounted {
        let root = temp_root().join(unique_name());
        fs::create_dir(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        let dir = root.join("mnt");
        fs::create_dir(&dir).expect("mkdir mount point");
        let log = root.join("server.log");
        let logf = fs::File::create(&log).expect("create server log");
        let child = Command::new(BIN)
            .arg("mount")
            .arg(&dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("dup log"))
            .stderr(logf)
            .process_group(0)
            .spawn();
        let mut m = Mounted { root, dir, log, child: None };
        match child {
            Ok(c) => m.child = Some(c),
            Err(e) => panic!("cannot start {BIN}: {e}"),
        }
        m.wait_mounted();
        m
    }

    fn wait_mounted(&mut self) {
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "sysvisor-fs exited with {st} before mounting {}; log:\n{}",
                    self.dir.display(),
                    self.log()
                );
            }
            if is_fuse_mounted(&self.dir) {
                let probe = self.path("proc/meminfo");
                let exists = with_timeout(
                    "stat of proc/meminfo on the new mount",
                    MOUNT_TIMEOUT,
                    move || probe.exists(),
                );
                if exists {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{} was not mounted (with proc/meminfo) within {MOUNT_TIMEOUT:?}; log:\n{}",
                    self.dir.display(),
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A path below the mount point, e.g. `m.path("proc/meminfo")`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The server's stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Reads a view directly from the test process (as the test's own cgroup sees it),
    /// with a timeout.
    pub fn read(&self, rel: &str) -> io::Result<String> {
        let p = self.path(rel);
        with_timeout(&format!("read {rel}"), READER_TIMEOUT, move || fs::read_to_string(p))
    }

    /// Stops the server and asserts that it shut down cleanly (same as dropping it).
    pub fn stop(self) {
        drop(self)
    }

    /// Stops the server, unmounts if needed, removes the temp dir. Returns what was not
    /// clean about it.
    fn shutdown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            match child.try_wait() {
                Ok(Some(st)) => problems.push(format!("server exited early with {st}")),
                _ => {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                    match wait_timeout(&mut child, STOP_TIMEOUT) {
                        Some(st) if st.success() => {}
                        Some(st) => problems.push(format!("server exited with {st} after SIGTERM")),
                        None => {
                            problems.push(format!(
                                "server still running {STOP_TIMEOUT:?} after SIGTERM; SIGKILLed"
                            ));
                            let _ = child.kill();
                            let _ = child.wait();
                        }
                    }
                }
            }
        }
        if is_mounted(&self.dir) {
            problems.push(format!(
                "{} still mounted after the server exited; detaching",
                self.dir.display()
            ));
            let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
        }
        if is_mounted(&self.dir) {
            problems.push(format!("cannot unmount {}", self.dir.display()));
        } else if let Err(e) = fs::remove_dir_all(&self.root) {
            problems.push(format!("cannot remove {}: {e}", self.root.display()));
        }
        problems
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let log = self.log();
        let problems = self.shutdown();
        if thread::panicking() {
            eprintln!("--- sysvisor-fs log ({}) ---\n{log}--- end of log ---", self.dir.display());
            for p in &problems {
                eprintln!("sysvisor-fs shutdown: {p}");
            }
        } else if !problems.is_empty() {
            panic!(
                "sysvisor-fs did not shut down cleanly:\n  {}\nlog:\n{log}",
                problems.join("\n  ")
            );
        }
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------
// Cgroups
// ---------------------------------------------------------------------------------------

/// The controllers a test cgroup is made in (those the views depend on).
pub const CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "cpuset"];

/// Where the cgroup hierarchies are.
#[derive(Debug, Clone)]
pub enum CgroupLayout {
    /// Pure cgroup v2: one hierarchy at this path.
    V2(PathBuf),
    /// cgroup v1 (possibly hybrid): controller -> mount point of its hierarchy.
    V1(Vec<(String, PathBuf)>),
}

impl CgroupLayout {
    fn detect() -> CgroupLayout {
        let root = Path::new("/sys/fs/cgroup");
        if let Ok(st) = nix::sys::statfs::statfs(root) {
            if st.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC {
                return CgroupLayout::V2(root.to_path_buf());
            }
        }
        let mut v = Vec::new();
        for m in mountinfo() {
            if m.fstype != "cgroup" {
                continue;
            }
            for opt in m.super_options.split(',') {
                if CONTROLLERS.contains(&opt)
                    && !v.iter().any(|(c, _): &(String, PathBuf)| c == opt)
                {
                    v.push((opt.to_string(), m.mount_point.clone()));
                }
            }
        }
        CgroupLayout::V1(v)
    }

    pub fn is_v2(&self) -> bool {
        matches!(self, CgroupLayout::V2(_))
    }

    /// The root directory of each hierarchy holding one of [`CONTROLLERS`], each once.
    pub fn roots(&self) -> Vec<PathBuf> {
        match self {
            CgroupLayout::V2(p) => vec![p.clone()],
            CgroupLayout::V1(v) => {
                let mut out: Vec<PathBuf> = Vec::new();
                for (_, p) in v {
                    if !out.contains(p) {
                        out.push(p.clone());
                    }
                }
                out
            }
        }
    }

    /// The hierarchy root that holds `controller`.
    pub fn root_of(&self, controller: &str) -> Option<PathBuf> {
        match self {
            CgroupLayout::V2(p) => Some(p.clone()),
            CgroupLayout::V1(v) => v.iter().find(|(c, _)| c == controller).map(|(_, p)| p.clone()),
        }
    }
}

/// The host's cgroup layout (detected once).
pub fn cgroup_layout() -> &'static CgroupLayout {
    static LAYOUT: OnceLock<CgroupLayout> = OnceLock::new();
    LAYOUT.get_or_init(CgroupLayout::detect)
}

fn write_file(path: &Path, value: &str) {
    fs::write(path, value).unwrap_or_else(|e| panic!("write {value:?} to {}: {e}", path.display()));
}

/// Enables `memory`, `cpu` and `cpuset` for the children of the v2 root, where available.
fn enable_v2_controllers(root: &Path) {
    let available = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let enabled = fs::read_to_string(root.join("cgroup.subtree_control")).unwrap_or_default();
    for c in ["memory", "cpu", "cpuset"] {
        let has = |s: &str| s.split_whitespace().any(|x| x == c);
        if has(&available) && !has(&enabled) {
            write_file(&root.join("cgroup.subtree_control"), &format!("+{c}"));
        }
    }
}

/// A uniquely named cgroup (`sysvisor-test-<pid>-<tid>-<n>`) directly below the root of each
/// hierarchy holding [`CONTROLLERS`] (v1), or below the v2 root with memory, cpu and cpuset
/// enabled. On v1 its cpuset starts as a copy of the parent's (`cpuset.cpus`, `cpuset.mems`).
///
/// Drop SIGKILLs whatever is still inside and removes the directories, retrying briefly.
pub struct TestCgroup {
    name: String,
    /// (controller or "" on v2, directory), in creation order.
    dirs: Vec<(String, PathBuf)>,
}

impl TestCgroup {
    pub fn new() -> TestCgroup {
        let name = unique_name();
        let mut cg = TestCgroup { name: name.clone(), dirs: Vec::new() };
        match cgroup_layout() {
            CgroupLayout::V2(root) => {
                enable_v2_controllers(root);
                let dir = root.join(&name);
                fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                cg.dirs.push((String::new(), dir));
            }
            layout @ CgroupLayout::V1(ctrls) => {
                for root in layout.roots() {
                    let dir = root.join(&name);
                    fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                    let is_cpuset = ctrls.iter().any(|(c, p)| c == "cpuset" && *p == root);
                    let label = ctrls
                        .iter()
                        .filter(|(_, p)| *p == root)
                        .map(|(c, _)| c.as_str())
                        .collect::<Vec<_>>()
                        .join(",");
                    cg.dirs.push((label, dir.clone()));
                    if is_cpuset {
                        for f in ["cpuset.cpus", "cpuset.mems"] {
                            let v = fs::read_to_string(root.join(f)).expect("read parent cpuset");
                            write_file(&dir.join(f), v.trim());
                        }
                    }
                }
            }
        }
        cg
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every directory of this cgroup (one per v1 hierarchy, or the one v2 directory).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.clone()).collect()
    }

    /// The directory holding `controller`'s files.
    pub fn dir_of(&self, controller: &str) -> PathBuf {
        self.dirs
            .iter()
            .find(|(c, _)| c.is_empty() || c.split(',').any(|x| x == controller))
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| panic!("no {controller} controller on this host"))
    }

    /// Sets the memory limit (v1 `memory.limit_in_bytes`, v2 `memory.max`).
    pub fn memory_limit(&self, bytes: u64) -> &Self {
        let file = if cgroup_layout().is_v2() { "memory.max" } else { "memory.limit_in_bytes" };
        write_file(&self.dir_of("memory").join(file), &bytes.to_string());
        self
    }

    /// Sets the CPUs, e.g. `"0"` or `"0-1"` (`cpuset.cpus`).
    pub fn cpuset(&self, cpus: &str) -> &Self {
        write_file(&self.dir_of("cpuset").join("cpuset.cpus"), cpus);
        self
    }

    /// Sets the CFS bandwidth limit (v1 `cpu.cfs_period_us` + `cpu.cfs_quota_us`, v2
    /// `cpu.max`).
    pub fn cpu_quota(&self, quota_us: u64, period_us: u64) -> &Self {
        let dir = self.dir_of("cpu");
        if cgroup_layout().is_v2() {
            write_file(&dir.join("cpu.max"), &format!("{quota_us} {period_us}"));
        } else {
            write_file(&dir.join("cpu.cfs_period_us"), &period_us.to_string());
            write_file(&dir.join("cpu.cfs_quota_us"), &quota_us.to_string());
        }
        self
    }

    /// Moves process `pid` into this cgroup (every hierarchy).
    pub fn add_process(&self, pid: u32) {
        for (_, d) in &self.dirs {
            write_file(&d.join("cgroup.procs"), &pid.to_string());
        }
    }

    /// The pids in any of this cgroup's directories.
    pub fn procs(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = Vec::new();
        for (_, d) in &self.dirs {
            for p in fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
            {
                if !pids.contains(&p) {
                    pids.push(p);
                }
            }
        }
        pids
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            for pid in self.procs() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let mut left = Vec::new();
            for (_, d) in &self.dirs {
                match fs::remove_dir(d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => left.push(format!("{}: {e}", d.display())),
                }
            }
            if left.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                eprintln!("cannot remove test cgroup: {}", left.join("; "));
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Readers
// ---------------------------------------------------------------------------------------

/// A command run as a reader of the views: it first moves itself into a cgroup (writes "0",
/// i.e. itself, to `cgroup.procs` of each of the cgroup's directories, in `pre_exec`), and
/// optionally runs in a private mount namespace where views are bind-mounted over the real
/// /proc and /sys files (through util-linux `unshare -m` + `mount --bind`, so that a hung
/// server makes the reader time out instead of hanging `spawn`). It is killed (its whole
/// process group) if it runs longer than its timeout, which fails the test.
#[derive(Clone)]
pub struct Reader {
    cmd: OsString,
    args: Vec<OsString>,
    procs_files: Vec<PathBuf>,
    binds: Vec<(PathBuf, PathBuf)>,
    env: Vec<(OsString, OsString)>,
    timeout: Duration,
}

impl Reader {
    pub fn new(cmd: impl AsRef<OsStr>) -> Reader {
        Reader {
            cmd: cmd.as_ref().to_owned(),
            args: Vec::new(),
            procs_files: Vec::new(),
            binds: Vec::new(),
            env: Vec::new(),
            timeout: READER_TIMEOUT,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Reader {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Reader {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Reader {
        self.env.push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }

    /// Runs the reader inside `cg`.
    pub fn in_cgroup(mut self, cg: &TestCgroup) -> Reader {
        self.procs_files = cg.dirs().into_iter().map(|d| d.join("cgroup.procs")).collect();
        self
    }

    /// Runs the reader in the root cgroup of each hierarchy holding [`CONTROLLERS`]:
    /// unconstrained, whatever cgroup the test itself runs in.
    pub fn in_root_cgroup(mut self) -> Reader {
        self.procs_files =
            cgroup_layout().roots().into_iter().map(|d| d.join("cgroup.procs")).collect();
        self
    }

    /// Bind-mounts `src` over `dst` in the reader's private mount namespace.
    pub fn bind(mut self, src: impl Into<PathBuf>, dst: impl Into<PathBuf>) -> Reader {
        self.binds.push((src.into(), dst.into()));
        self
    }

    /// Bind-mounts `m.path(rel)` over `/rel` in the reader's private mount namespace.
    pub fn bind_view(self, m: &Mounted, rel: &str) -> Reader {
        let (src, dst) = (m.path(rel), Path::new("/").join(rel));
        self.bind(src, dst)
    }

    /// Bind-mounts every view in [`VIEWS`] over the real file.
    pub fn bind_views(mut self, m: &Mounted) -> Reader {
        for v in VIEWS {
            self = self.bind_view(m, v);
        }
        self
    }

    pub fn timeout(mut self, t: Duration) -> Reader {
        self.timeout = t;
        self
    }

    fn describe(&self) -> String {
        let mut s = self.cmd.to_string_lossy().into_owned();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    fn command(&self) -> Command {
        let mut cmd;
        if self.binds.is_empty() {
            cmd = Command::new(&self.cmd);
        } else {
            // sh -c SCRIPT sh SRC DST ... -- CMD ARGS
            const SCRIPT: &str = r#"set -e
while [ "$1" != "--" ]; do mount --bind "$1" "$2"; shift 2; done
shift
exec "$@""#;
            cmd = Command::new("unshare");
            cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c", SCRIPT, "sh"]);
            for (src, dst) in &self.binds {
                cmd.arg(src).arg(dst);
            }
            cmd.arg("--").arg(&self.cmd);
        }
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let procs: Vec<CString> = self
            .procs_files
            .iter()
            .map(|p| CString::new(p.as_os_str().as_bytes()).expect("path with NUL"))
            .collect();
        if !procs.is_empty() {
            // SAFETY: the closure only makes raw syscalls (open/write/close) on data prepared
            // before fork; it allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    for p in &procs {
                        let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                        if fd < 0 {
                            return Err(io::Error::last_os_error());
                        }
                        let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                        let err = io::Error::last_os_error();
                        libc::close(fd);
                        if n != 1 {
                            return Err(err);
                        }
                    }
                    Ok(())
                });
            }
        }
        cmd
    }

    /// Runs the reader to completion and returns its output, whatever its exit status.
    /// Panics if it cannot be started or runs longer than its timeout.
    pub fn run(&self) -> Output {
        let what = self.describe();
        let mut child =
            self.command().spawn().unwrap_or_else(|e| panic!("cannot start reader `{what}`: {e}"));
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        pump(child.stdout.take().expect("stdout").boxed(), out.clone(), tx.clone());
        pump(child.stderr.take().expect("stderr").boxed(), err.clone(), tx);
        let status = match wait_timeout(&mut child, self.timeout) {
            Some(st) => st,
            None => {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.kill();
                let _ = child.wait();
                wait_pumps(&rx, Duration::from_secs(2));
                panic!(
                    "reader `{what}` did not finish within {:?} (hung?)\nstdout so far:\n{}\nstderr so far:\n{}",
                    self.timeout,
                    String::from_utf8_lossy(&out.lock().unwrap()),
                    String::from_utf8_lossy(&err.lock().unwrap()),
                );
            }
        };
        // The reader is done; give its pipes a moment to drain (a stray grandchild holding
        // them open must not hang the test).
        if !wait_pumps(&rx, Duration::from_secs(5)) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            wait_pumps(&rx, Duration::from_secs(2));
        }
        let stdout = out.lock().unwrap().clone();
        let stderr = err.lock().unwrap().clone();
        Output { status, stdout, stderr }
    }

    /// Runs the reader, asserts that it exited 0 and returns its stdout (stderr is shown
    /// when it fails).
    pub fn run_ok(&self) -> String {
        let o = self.run();
        assert!(
            o.status.success(),
            "reader `{}` failed with {}{}\nstdout:\n{}\nstderr:\n{}",
            self.describe(),
            o.status,
            o.status.signal().map(|s| format!(" (signal {s})")).unwrap_or_default(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        String::from_utf8(o.stdout).expect("reader output is not UTF-8")
    }
}

trait Boxed {
    fn boxed(self) -> Box<dyn Read + Send>;
}
impl<R: Read + Send + 'static> Boxed for R {
    fn boxed(self) -> Box<dyn Read + Send> {
        Box::new(self)
    }
}

fn pump(mut r: Box<dyn Read + Send>, buf: Arc<Mutex<Vec<u8>>>, done: mpsc::Sender<()>) {
    thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = done.send(());
    });
}

/// Waits for both pumps to reach EOF; false on timeout.
fn wait_pumps(rx: &mpsc::Receiver<()>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        if rx.recv_timeout(left).is_err() {
            return false;
        }
    }
    true
}

/// Runs `cmd args` inside `cg` (see [`Reader`]) with the default timeout.
pub fn run_in<S: AsRef<OsStr>>(cg: &TestCgroup, cmd: &str, args: &[S]) -> Output {
    Reader::new(cmd).args(args).in_cgroup(cg).run()
}

// ---------------------------------------------------------------------------------------
// Host facts and parsing
// ---------------------------------------------------------------------------------------

/// Python 3 to run readers with: Debian's if present (fast start), else the one on PATH.
pub fn python3() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Whether python3 runs here; prints `skipped: no python3` when not (the test then returns).
pub fn have_python() -> bool {
    let ok = Command::new(python3()).arg("-V").output().is_ok();
    if !ok {
        sysvisor_skip::required("no python3");
    }
    ok
}

/// The value (first number) of `key` in a meminfo-style text, e.g. `MemTotal` -> kB.
pub fn meminfo_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim() == key {
            v.split_whitespace().next()?.parse().ok()
        } else {
            None
        }
    })
}

/// The number of `processor` entries of a cpuinfo text.
pub fn cpuinfo_processors(text: &str) -> usize {
    text.lines().filter(|l| l.starts_with("processor")).count()
}

/// The first word of each `cpu*` line of a /proc/stat text.
pub fn stat_cpu_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("cpu"))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

/// The host's own file, read by the test process.
pub fn host_file(path: &str) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Writes a line to the test's output (shown by cargo test for failing tests, or with
/// --nocapture).
pub fn note(msg: &str) {
    let _ = writeln!(io::stdout(), "{msg}");
}
