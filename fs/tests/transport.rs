//! End-to-end tests of the FUSE transport: run the built binary as root, mount on a temporary
//! directory and use the mount like any reader would.
//!
//! Skipped (with a message) unless running as root with /dev/fuse. Every daemon is wrapped in
//! a guard that kills it and lazily unmounts on drop, and so are bind mounts, temporary cgroups
//! (processes killed, directories removed) and reader processes, so a failing test leaves
//! nothing behind.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sysvisor_fs::sysctl::rules::MIRRORS;
use sysvisor_fs::views::{ROOT_ONLY, TABLE};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_sysvisor-fs");
const FSTYPE: &str = "fuse.sysvisor-fs";
const TIMEOUT: Duration = Duration::from_secs(20);

/// Root and /dev/fuse, or a recorded skip.
fn can_mount() -> bool {
    sysvisor_skip::unless_root_and_fuse()
}

/// File system types mounted on `path` (canonical), innermost last.
fn mounts_at(path: &Path) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            let point = sysvisor_fs::fuse::session::unescape_mountinfo(fields.get(4)?);
            (Path::new(&point) == path).then(|| fields.get(sep + 1).unwrap_or(&"").to_string())
        })
        .collect()
}

fn fuse_mounted(path: &Path) -> bool {
    mounts_at(path).iter().any(|t| t == FSTYPE)
}

/// A running `sysvisor-fs mount` on its own temporary directory.
struct Daemon {
    child: Option<Child>,
    mountpoint: PathBuf,
    stderr_path: PathBuf,
    // Dropped after Drop::drop has unmounted: removes the (empty) mount point and the log.
    _dirs: (TempDir, TempDir),
}

impl Daemon {
    fn start(extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = tempfile::tempdir().expect("tempdir");
        let mountpoint = fs::canonicalize(dir.path()).unwrap();
        let stderr_path = logs.path().join("stderr");
        let stderr = File::create(&stderr_path).unwrap();
        let child = Command::new(BIN)
            .arg("mount")
            .arg(&mountpoint)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn sysvisor-fs");
        let mut daemon = Daemon { child: Some(child), mountpoint, stderr_path, _dirs: (dir, logs) };
        let start = Instant::now();
        loop {
            if fuse_mounted(&daemon.mountpoint) {
                break;
            }
            if let Some(status) = daemon.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sysvisor-fs exited early ({status}): {}", daemon.stderr());
            }
            assert!(start.elapsed() < TIMEOUT, "not mounted in time: {}", daemon.stderr());
            thread::sleep(Duration::from_millis(10));
        }
        daemon
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits for the daemon to exit (with a deadline) and returns its status.
    fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(start.elapsed() < TIMEOUT, "daemon did not exit: {}", self.stderr());
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(&mut self, signal: Signal) -> ExitStatus {
        kill(self.pid(), signal).expect("signal daemon");
        self.wait_exit()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        while fuse_mounted(&self.mountpoint) {
            if umount2(&self.mountpoint, MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
    }
}

/// Every static directory implied by the view and mirror tables, with the names it must
/// list (the mirror directories themselves are dynamic: tests/sysctl.rs covers them).
fn expected_dirs() -> BTreeMap<String, BTreeSet<String>> {
    let mut dirs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    dirs.entry(String::new()).or_default();
    for path in TABLE.iter().map(|s| s.path).chain(MIRRORS.iter().map(|m| m.path)) {
        let parts: Vec<&str> = path.split('/').collect();
        for i in 0..parts.len() {
            dirs.entry(parts[..i].join("/")).or_default().insert(parts[i].to_string());
        }
    }
    dirs
}

/// Lines reduced to their shape: the number of tokens and every token without digits.
/// Two reads of a live view differ in numbers, not in shape.
fn shape(text: &str) -> Vec<(usize, Vec<String>)> {
    text.lines()
        .map(|line| {
            let tokens: Vec<&str> = line.split_whitespace().collect();
            let words = tokens
                .iter()
                .filter(|t| !t.chars().any(|c| c.is_ascii_digit()))
                .map(|t| t.to_string())
                .collect();
            (tokens.len(), words)
        })
        .collect()
}

fn errno_of(err: &std::io::Error) -> i32 {
    err.raw_os_error().unwrap_or_else(|| panic!("no errno in {err}"))
}

#[test]
fn every_view_reads_non_empty_with_its_exact_size() {
    if !can_mount() {
        return;
    }
    // Renderings stay cached for a minute: the size seen by stat is the length read.
    let daemon = Daemon::start(&["--cache-ttl-ms", "60000"]);
    for spec in TABLE {
        let path = daemon.path(spec.path);
        let meta = fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", spec.path));
        assert!(meta.is_file(), "{}", spec.path);
        let mode = if ROOT_ONLY.contains(&spec.path) { 0o400 } else { 0o444 };
        assert_eq!(meta.mode() & 0o7777, mode, "{} mode", spec.path);
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{} owner", spec.path);
        let body = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", spec.path));
        assert!(!body.is_empty(), "{} is empty", spec.path);
        assert_eq!(meta.len(), body.len() as u64, "{} st_size", spec.path);
        // fstat of the open file: the length of its own snapshot.
        let file = File::open(&path).unwrap();
        let mut again = Vec::new();
        (&file).read_to_end(&mut again).unwrap();
        assert_eq!(file.metadata().unwrap().len(), again.len() as u64, "{} fstat", spec.path);
    }
    for dir in expected_dirs().keys() {
        let meta = fs::metadata(daemon.path(dir)).unwrap();
        assert!(meta.is_dir(), "{dir:?}");
        assert_eq!(meta.mode() & 0o7777, 0o555, "{dir:?} mode");
    }
}

#[test]
fn busybox_cat_reads_the_full_content() {
    if !can_mount() {
        return;
    }
    if !Command::new("busybox").arg("true").status().is_ok_and(|s| s.success()) {
        sysvisor_skip::required("no busybox (scripts/install-deps.sh installs busybox-static)");
        return;
    }
    let daemon = Daemon::start(&[]);
    for spec in TABLE {
        let path = daemon.path(spec.path);
        // busybox cat uses sendfile, which goes through the page cache and stops at st_size.
        let out = Command::new("busybox").arg("cat").arg(&path).output().unwrap();
        assert!(out.status.success(), "busybox cat {}: {:?}", spec.path, out);
        let cat = String::from_utf8(out.stdout).unwrap();
        let direct = fs::read_to_string(&path).unwrap();
        assert!(!cat.is_empty(), "{}: busybox cat read nothing", spec.path);
        assert!(cat.ends_with('\n'), "{}: truncated: {cat:?}", spec.path);
        assert_eq!(shape(&cat), shape(&direct), "{}: busybox cat vs read", spec.path);
    }
}

#[test]
fn small_reads_at_offsets_match_one_read() {
    if !can_mount() {
        return;
    }
    // Renderings stay cached for a minute: a read from offset 0 again, which renders the
    // view anew (tests/reread.rs), gets the same bytes here.
    let daemon = Daemon::start(&["--cache-ttl-ms", "60000"]);
    for spec in TABLE {
        let file = File::open(daemon.path(spec.path)).unwrap();
        let mut whole = vec![0u8; 1 << 20];
        let n = file.read_at(&mut whole, 0).unwrap();
        whole.truncate(n);
        assert!(n > 0, "{}", spec.path);
        // Any way of slicing the rendering gives the same bytes.
        for chunk in [1usize, 7, 64, 1000] {
            let mut pieces = Vec::new();
            let mut buf = vec![0u8; chunk];
            loop {
                let got = file.read_at(&mut buf, pieces.len() as u64).unwrap();
                if got == 0 {
                    break;
                }
                pieces.extend_from_slice(&buf[..got]);
            }
            assert_eq!(pieces, whole, "{} in chunks of {chunk}", spec.path);
        }
        let mut buf = [0u8; 10];
        let mid = whole.len() / 2;
        let got = file.read_at(&mut buf, mid as u64).unwrap();
        assert_eq!(&buf[..got], &whole[mid..(mid + 10).min(whole.len())]);
        assert_eq!(file.read_at(&mut buf, whole.len() as u64).unwrap(), 0);
        assert_eq!(file.read_at(&mut buf, 1 << 30).unwrap(), 0);
        // Sequential small reads through the file offset.
        let mut sequential = Vec::new();
        let mut reader = &file;
        let mut small = [0u8; 5];
        let _ = std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(0)).unwrap();
        loop {
            let got = reader.read(&mut small).unwrap();
            if got == 0 {
                break;
            }
            sequential.extend_from_slice(&small[..got]);
        }
        assert_eq!(sequential, whole, "{} sequential", spec.path);
    }
}

#[test]
fn writes_are_refused_with_eacces() {
    if !can_mount() {
        return;
    }
    let daemon = Daemon::start(&[]);
    for spec in TABLE {
        let path = daemon.path(spec.path);
        for (what, opts) in [
            ("write", OpenOptions::new().write(true).clone()),
            ("read+write", OpenOptions::new().read(true).write(true).clone()),
            ("append", OpenOptions::new().append(true).clone()),
            ("truncate", OpenOptions::new().write(true).truncate(true).clone()),
        ] {
            let err = opts.open(&path).expect_err(what);
            assert_eq!(errno_of(&err), libc::EACCES, "{what} {}: {err}", spec.path);
        }
    }
    let meminfo = daemon.path("proc/meminfo");
    let cases: Vec<(&str, std::io::Result<()>)> = vec![
        ("create", File::create(daemon.path("proc/new")).map(drop)),
        ("mkdir", fs::create_dir(daemon.path("proc/newdir"))),
        ("unlink", fs::remove_file(&meminfo)),
        ("rmdir", fs::remove_dir(daemon.path("sys/devices/system/cpu"))),
        ("rename", fs::rename(&meminfo, daemon.path("proc/renamed"))),
        ("chmod", fs::set_permissions(&meminfo, fs::Permissions::from_mode(0o644))),
    ];
    for (what, result) in cases {
        let err = result.expect_err(what);
        assert_eq!(errno_of(&err), libc::EACCES, "{what}: {err}");
    }
    // Still readable afterwards.
    assert!(!fs::read(&meminfo).unwrap().is_empty());
}

#[test]
fn unknown_names_are_enoent() {
    if !can_mount() {
        return;
    }
    let daemon = Daemon::start(&[]);
    for rel in ["nope", "proc/nope", "proc/Meminfo", "sys/devices/system/cpu/nope", "sys/x/y"] {
        for _ in 0..2 {
            // The second time comes from the kernel's negative entry cache.
            let err = fs::metadata(daemon.path(rel)).expect_err(rel);
            assert_eq!(err.kind(), ErrorKind::NotFound, "{rel}: {err}");
            let err = File::open(daemon.path(rel)).expect_err(rel);
            assert_eq!(errno_of(&err), libc::ENOENT, "{rel}");
        }
    }
    let err = fs::metadata(daemon.path("proc/meminfo/x")).expect_err("below a file");
    assert_eq!(errno_of(&err), libc::ENOTDIR);
}

#[test]
fn readdir_lists_every_entry() {
    if !can_mount() {
        return;
    }
    let daemon = Daemon::start(&[]);
    for round in 0..2 {
        for (dir, names) in expected_dirs() {
            let mut listed = BTreeMap::new();
            for entry in fs::read_dir(daemon.path(&dir)).unwrap() {
                let entry = entry.unwrap();
                let name = entry.file_name().into_string().unwrap();
                listed.insert(name, entry.file_type().unwrap().is_dir());
            }
            let got: BTreeSet<String> = listed.keys().cloned().collect();
            assert_eq!(got, names, "round {round}: entries of {dir:?}");
            for (name, is_dir) in listed {
                let rel = if dir.is_empty() { name.clone() } else { format!("{dir}/{name}") };
                let is_view = TABLE.iter().any(|s| s.path == rel);
                assert_eq!(is_dir, !is_view, "{rel} type");
            }
        }
    }
    // `.` and `..` are there too (read_dir hides them).
    let out = Command::new("ls").arg("-a").arg(daemon.path("proc")).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().any(|l| l == "."), "{text}");
    assert!(text.lines().any(|l| l == ".."), "{text}");
}

#[test]
fn concurrent_readers() {
    if !can_mount() {
        return;
    }
    let daemon = Daemon::start(&["--threads", "4"]);
    let paths: Vec<PathBuf> = TABLE.iter().map(|s| daemon.path(s.path)).collect();
    thread::scope(|scope| {
        for t in 0..8 {
            let paths = &paths;
            scope.spawn(move || {
                for i in 0..100 {
                    let path = &paths[(t + i) % paths.len()];
                    let body = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    assert!(!body.is_empty());
                }
            });
        }
    });
}

/// CPU lists (`Cpus_allowed_list`) of the daemon's /dev/fuse worker threads, sorted.
fn worker_affinities(pid: Pid) -> Vec<String> {
    thread_affinities(pid, "fuse-worker")
}

#[test]
fn one_pinned_worker_per_cpu() {
    if !can_mount() {
        return;
    }
    let cpus = sysvisor_fs::fuse::session::online_cpus().unwrap();
    let mut want: Vec<String> = cpus.iter().map(|c| c.to_string()).collect();
    want.sort();
    let daemon = Daemon::start(&[]);
    let start = Instant::now();
    // Workers pin themselves as they start, just after the mount appears.
    while worker_affinities(daemon.pid()) != want {
        assert!(
            start.elapsed() < TIMEOUT,
            "workers {:?}, want one per CPU {want:?}",
            worker_affinities(daemon.pid())
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert!(!fs::read(daemon.path("proc/loadavg")).unwrap().is_empty());
}

#[test]
fn sigterm_and_sigint_unmount_cleanly() {
    if !can_mount() {
        return;
    }
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut daemon = Daemon::start(&[]);
        // A reader holding a file open must not keep the daemon from exiting.
        let held = File::open(daemon.path("proc/uptime")).unwrap();
        let status = daemon.stop(signal);
        assert!(status.success(), "{signal}: {status}: {}", daemon.stderr());
        assert!(mounts_at(&daemon.mountpoint).is_empty(), "{signal}: still mounted");
        let mut buf = [0u8; 64];
        assert!(held.read_at(&mut buf, 0).is_err(), "read after unmount must fail");
        let log = daemon.stderr();
        assert!(log.contains("unmounted"), "{log}");
    }
}

#[test]
fn external_unmount_stops_the_daemon() {
    if !can_mount() {
        return;
    }
    let mut daemon = Daemon::start(&[]);
    assert!(!fs::read(daemon.path("proc/meminfo")).unwrap().is_empty());
    umount2(&daemon.mountpoint, MntFlags::empty()).expect("umount");
    let status = daemon.wait_exit();
    assert!(status.success(), "{status}: {}", daemon.stderr());
    assert!(mounts_at(&daemon.mountpoint).is_empty());
}

/// Whether the kernel has FUSE over io_uring (else the io_uring tests record a skip).
fn kernel_has_uring() -> bool {
    let has = Path::new(sysvisor_fs::fuse::uring::ENABLE_PARAM).exists();
    if !has {
        sysvisor_skip::optional("the kernel has no FUSE over io_uring");
    }
    has
}

/// CPU lists (`Cpus_allowed_list`) of the daemon's threads named `prefix*`, sorted.
fn thread_affinities(pid: Pid, prefix: &str) -> Vec<String> {
    let mut lists = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return lists };
    for task in tasks.flatten() {
        let comm = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let status = fs::read_to_string(task.path().join("status")).unwrap_or_default();
        if let Some(list) = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")) {
            lists.push(list.trim().to_string());
        }
    }
    lists.sort();
    lists
}

#[test]
fn uring_serves_every_view_from_one_queue_per_cpu() {
    if !can_mount() || !kernel_has_uring() {
        return;
    }
    let mut daemon = Daemon::start(&["--transport", "uring", "--log-format", "json"]);
    // Reads from every online CPU, each served by the queue of its CPU.
    let cpus = sysvisor_fs::fuse::session::online_cpus().unwrap();
    for &cpu in &cpus {
        let paths: Vec<PathBuf> = TABLE.iter().map(|spec| daemon.path(spec.path)).collect();
        thread::spawn(move || {
            let mut set = nix::sched::CpuSet::new();
            set.set(cpu).unwrap();
            nix::sched::sched_setaffinity(Pid::from_raw(0), &set).unwrap();
            for path in paths {
                let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(!data.is_empty(), "{} is empty", path.display());
                assert_eq!(data.len() as u64, fs::metadata(&path).unwrap().len());
            }
        })
        .join()
        .unwrap();
    }
    let mut queues: Vec<String> = thread_affinities(daemon.pid(), "fuse-uring");
    queues.retain(|list| cpus.iter().any(|c| c.to_string() == *list));
    let want: BTreeSet<String> = cpus.iter().map(|c| c.to_string()).collect();
    assert_eq!(queues.into_iter().collect::<BTreeSet<_>>(), want, "one pinned queue per CPU");
    let status = daemon.stop(Signal::SIGTERM);
    assert!(status.success(), "{status}: {}", daemon.stderr());
    let log = daemon.stderr();
    assert!(log.contains(r#""transport":"uring""#), "not served over io_uring: {log}");
    let counts = request_counts(&log);
    let opens = counts.get("OPEN").copied().unwrap_or(0);
    assert!(opens >= (TABLE.len() * cpus.len()) as u64, "{counts:?}");
    // All but INIT (and FORGETs, if any) come through the queues.
    let total: u64 = counts.values().sum();
    let via_uring = json_number(&log, "via_uring");
    assert!(via_uring + 1 + counts.get("FORGET").copied().unwrap_or(0) >= total, "{log}");
}

/// The number in `"key":N` in a JSON log.
fn json_number(log: &str, key: &str) -> u64 {
    let pattern = format!("\"{key}\":");
    let start = log.rfind(&pattern).unwrap_or_else(|| panic!("no {key} in {log}")) + pattern.len();
    let digits: String = log[start..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("{key} is not a number in {log}"))
}

#[test]
fn auto_transport_picks_uring_where_the_kernel_has_it() {
    if !can_mount() || !kernel_has_uring() {
        return;
    }
    let mut daemon = Daemon::start(&["--transport", "auto", "--log-format", "json"]);
    assert!(!fs::read(daemon.path("proc/uptime")).unwrap().is_empty());
    let status = daemon.stop(Signal::SIGTERM);
    assert!(status.success(), "{status}: {}", daemon.stderr());
    assert!(daemon.stderr().contains(r#""transport":"uring""#), "{}", daemon.stderr());
    assert!(json_number(&daemon.stderr(), "via_uring") > 0, "{}", daemon.stderr());
}

#[test]
fn epoll_transport_is_used_when_asked() {
    if !can_mount() {
        return;
    }
    let mut daemon = Daemon::start(&["--transport", "epoll", "--log-format", "json"]);
    assert!(!fs::read(daemon.path("proc/meminfo")).unwrap().is_empty());
    assert!(thread_affinities(daemon.pid(), "fuse-uring").is_empty(), "no io_uring queues");
    let status = daemon.stop(Signal::SIGTERM);
    assert!(status.success(), "{status}: {}", daemon.stderr());
    assert!(daemon.stderr().contains(r#""transport":"epoll""#), "{}", daemon.stderr());
}

/// Per-opcode request counts from the daemon's final "unmounted" log line.
fn request_counts(log: &str) -> BTreeMap<String, u64> {
    let start = log.rfind("by_opcode").unwrap_or_else(|| panic!("no request summary: {log}"));
    let rest = log[start + "by_opcode".len()..].trim_start_matches(['=', '"', ':']);
    let end = rest.find(['"', '\n']).unwrap_or(rest.len());
    rest[..end]
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

/// Serves `N + 1` open + read(2)-to-EOF + close (no fstat) of proc/meminfo, through the path
/// or through a bind mount of it, with one worker; returns the requests the daemon served.
fn round_trips(through_bind_mount: bool) -> BTreeMap<String, u64> {
    let mut daemon = Daemon::start(&["--threads", "1", "--log-format", "json"]);
    let bind = through_bind_mount.then(|| BindMount::new(&daemon.path("proc/meminfo"), None));
    let path = bind.as_ref().map_or_else(|| daemon.path("proc/meminfo"), |b| b.target.clone());
    let read_all = |path: &Path| {
        let mut file = File::open(path).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            let n = file.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        assert!(total > 0 && total < buf.len());
    };
    read_all(&path); // warm-up: directory LOOKUPs, GETATTR of the root, the one FLUSH
    for _ in 0..ROUND_TRIP_OPENS {
        read_all(&path);
    }
    drop(bind);
    let status = daemon.stop(Signal::SIGTERM);
    assert!(status.success());
    let log = daemon.stderr();
    for line in log.lines() {
        assert!(line.starts_with('{') && line.ends_with('}'), "not JSON: {line}");
    }
    let counts = request_counts(&log);
    let how = if through_bind_mount { "a bind mount" } else { "the path" };
    eprintln!("requests for {} open+read+close through {how}: {counts:?}", ROUND_TRIP_OPENS + 1);
    counts
}

const ROUND_TRIP_OPENS: u64 = 200;

/// Checks the requests common to both ways in: OPEN, READ (data), READ (0 = EOF) and an
/// asynchronous RELEASE per open, FLUSH once, and nothing but `allowed` besides.
fn check_open_read_release(counts: &BTreeMap<String, u64>, allowed: &[&str]) {
    const N: u64 = ROUND_TRIP_OPENS;
    let get = |op: &str| counts.get(op).copied().unwrap_or(0);
    assert_eq!(get("OPEN"), N + 1, "{counts:?}");
    assert_eq!(get("READ"), 2 * (N + 1), "{counts:?}");
    // RELEASE is sent asynchronously after close: the last one may still be in flight.
    assert!((N..=N + 1).contains(&get("RELEASE")), "RELEASE: {counts:?}");
    assert!(get("FLUSH") <= 1, "FLUSH must be answered ENOSYS once: {counts:?}");
    let other: u64 = counts
        .iter()
        .filter(|(k, _)| {
            !["OPEN", "READ", "RELEASE", "FLUSH", "INIT"].contains(&k.as_str())
                && !allowed.contains(&k.as_str())
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(other, 0, "unexpected requests: {counts:?}");
}

#[test]
fn round_trips_per_open_read_close() {
    if !can_mount() {
        return;
    }
    const N: u64 = ROUND_TRIP_OPENS;
    // Through the path: the entries stay cached (one inode for every caller), GETATTR
    // (attribute timeout 0: the kernel's size is the opener's), OPEN, READ, READ (EOF),
    // RELEASE.
    let counts = round_trips(false);
    let get = |op: &str| counts.get(op).copied().unwrap_or(0);
    assert!(get("LOOKUP") <= 3, "only the first path walk looks up: {counts:?}");
    assert!((N + 1..=N + 2).contains(&get("GETATTR")), "one GETATTR per open: {counts:?}");
    check_open_read_release(&counts, &["LOOKUP", "GETATTR"]);
}

#[test]
fn round_trips_through_a_bind_mount() {
    if !can_mount() {
        return;
    }
    const N: u64 = ROUND_TRIP_OPENS;
    // Through a bind mount (how containers read the views): no LOOKUP, GETATTR, OPEN, READ,
    // READ (EOF), RELEASE.
    let counts = round_trips(true);
    let get = |op: &str| counts.get(op).copied().unwrap_or(0);
    assert!(get("LOOKUP") <= 3, "only the LOOKUPs of the bind mount itself: {counts:?}");
    assert!((N + 1..=N + 2).contains(&get("GETATTR")), "one GETATTR per open: {counts:?}");
    check_open_read_release(&counts, &["LOOKUP", "GETATTR"]);
}

/// Runs the binary expecting a failure before anything is mounted.
fn expect_one_line_error(args: &[&Path], uid: Option<u32>) -> String {
    let mut cmd = Command::new(BIN);
    cmd.arg("mount").args(args).stdin(Stdio::null());
    if let Some(uid) = uid {
        cmd.uid(uid);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{args:?} must fail");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr:?}");
    assert!(stderr.starts_with("sysvisor-fs: error: "), "{stderr:?}");
    stderr
}

#[test]
fn bad_mount_points_fail_with_one_line() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = fs::canonicalize(dir.path()).unwrap();

    let missing = base.join("missing");
    let err = expect_one_line_error(&[&missing], None);
    assert!(err.contains("No such file"), "{err}");
    assert!(mounts_at(&missing).is_empty());

    let file = base.join("file");
    fs::write(&file, b"x").unwrap();
    let err = expect_one_line_error(&[&file], None);
    assert!(err.contains("not a directory"), "{err}");
    assert!(mounts_at(&file).is_empty());

    let mounted = base.join("mounted");
    fs::create_dir(&mounted).unwrap();
    mount(Some("tmpfs"), &mounted, Some("tmpfs"), MsFlags::empty(), None::<&str>)
        .expect("mount tmpfs");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = umount2(self.0, MntFlags::MNT_DETACH);
        }
    }
    let _guard = Unmount(&mounted);
    let err = expect_one_line_error(&[&mounted], None);
    assert!(err.contains("already a mount point"), "{err}");
    assert_eq!(mounts_at(&mounted), ["tmpfs"]);

    // Not root: refused before anything else (if nobody may run the test binary at all,
    // e.g. below a 0700 home directory, there is nothing to check).
    let plain = base.join("plain");
    fs::create_dir(&plain).unwrap();
    let runnable = Command::new(BIN).arg("--version").uid(65534).output();
    match runnable {
        Ok(out) if out.status.success() => {
            let err = expect_one_line_error(&[&plain], Some(65534));
            assert!(err.contains("root"), "{err}");
            assert!(mounts_at(&plain).is_empty());
        }
        _ => sysvisor_skip::optional(&format!("the non-root case: uid 65534 cannot run {BIN}")),
    }
}

// ---------------------------------------------------------------------------------------
// Callers in other cgroups, sendfile/splice readers and bind mounts
// ---------------------------------------------------------------------------------------

/// How long a reader process may run.
const READER_TIMEOUT: Duration = Duration::from_secs(60);

/// Python 3 for the sendfile readers (Debian's if present: fast start), if any.
fn python3() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| Command::new(p).arg("-c").arg("").status().is_ok_and(|s| s.success()))
}

fn have_busybox() -> bool {
    Command::new("busybox").arg("true").status().is_ok_and(|s| s.success())
}

/// A hierarchy holding a controller: a cgroup v1 mount carrying it, or the v2 root.
fn cgroup_root_of(controller: &str) -> Option<(PathBuf, bool)> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut v2 = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else { continue };
        let (Some(point), Some(fstype), Some(opts)) =
            (fields.get(4), fields.get(sep + 1), fields.get(sep + 3))
        else {
            continue;
        };
        let point = PathBuf::from(sysvisor_fs::fuse::session::unescape_mountinfo(point));
        if *fstype == "cgroup" && opts.split(',').any(|o| o == controller) {
            return Some((point, false));
        }
        if *fstype == "cgroup2" && v2.is_none() {
            let available =
                fs::read_to_string(point.join("cgroup.controllers")).unwrap_or_default();
            if available.split_whitespace().any(|c| c == controller) {
                v2 = Some(point);
            }
        }
    }
    v2.map(|p| (p, true))
}

static CGROUPS: AtomicUsize = AtomicUsize::new(0);

/// A temporary cgroup in the hierarchies of some controllers. Drop kills whatever is still
/// in it and removes it (retrying for a few seconds while the killed processes exit).
struct TempCgroup {
    /// (controller, directory, on cgroup v2).
    dirs: Vec<(String, PathBuf, bool)>,
}

impl TempCgroup {
    /// `None` (the test skips) if a controller is missing.
    fn new(controllers: &[&str]) -> Option<TempCgroup> {
        let name = format!(
            "sysvisor-transport-{}-{}",
            std::process::id(),
            CGROUPS.fetch_add(1, Ordering::Relaxed)
        );
        let mut cg = TempCgroup { dirs: Vec::new() };
        for controller in controllers {
            let Some((root, v2)) = cgroup_root_of(controller) else {
                sysvisor_skip::optional(&format!("no {controller} cgroup controller"));
                return None;
            };
            let dir = root.join(&name);
            if v2 {
                let control = root.join("cgroup.subtree_control");
                let enabled = fs::read_to_string(&control).unwrap_or_default();
                if !enabled.split_whitespace().any(|c| c == *controller) {
                    fs::write(&control, format!("+{controller}")).expect("enable controller");
                }
            }
            if !dir.exists() {
                fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                if *controller == "cpuset" && !v2 {
                    for file in ["cpuset.cpus", "cpuset.mems"] {
                        let parent = fs::read_to_string(root.join(file)).unwrap();
                        fs::write(dir.join(file), parent.trim()).unwrap();
                    }
                }
            }
            cg.dirs.push((controller.to_string(), dir, v2));
        }
        Some(cg)
    }

    fn dir_of(&self, controller: &str) -> &Path {
        &self.dirs.iter().find(|(c, _, _)| c == controller).expect("controller").1
    }

    fn memory_limit(&self, bytes: u64) {
        let v2 = self.dirs.iter().any(|(c, _, v2)| c == "memory" && *v2);
        let file = if v2 { "memory.max" } else { "memory.limit_in_bytes" };
        fs::write(self.dir_of("memory").join(file), bytes.to_string()).expect("memory limit");
    }

    fn cpus(&self, cpus: &str) {
        fs::write(self.dir_of("cpuset").join("cpuset.cpus"), cpus).expect("cpuset.cpus");
    }

    /// The cgroup.procs files a process writes itself into.
    fn procs_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> =
            self.dirs.iter().map(|(_, d, _)| d.join("cgroup.procs")).collect();
        files.dedup();
        files
    }

    /// Makes `cmd` move itself into this cgroup before it execs.
    fn enter(&self, cmd: &mut Command) {
        let files: Vec<CString> = self
            .procs_files()
            .iter()
            .map(|p| CString::new(p.as_os_str().as_bytes()).unwrap())
            .collect();
        // SAFETY: the closure runs between fork and exec: it only calls open, write and
        // close (async-signal-safe) on strings allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                for file in &files {
                    let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                    let err = std::io::Error::last_os_error();
                    libc::close(fd);
                    if n != 1 {
                        return Err(err);
                    }
                }
                Ok(())
            });
        }
    }
}

impl Drop for TempCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for file in self.procs_files() {
                for pid in fs::read_to_string(file).unwrap_or_default().split_whitespace() {
                    if let Ok(pid) = pid.parse() {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
            let left: Vec<&PathBuf> = self
                .dirs
                .iter()
                .map(|(_, d, _)| d)
                .filter(|d| fs::remove_dir(d).is_err() && d.exists())
                .collect();
            if left.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                eprintln!("cannot remove test cgroups {left:?}");
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `source` bind-mounted on a temporary file, by `mount --bind` run in `cgroup` (so that
/// the bind mount holds that cgroup set's inode, as a container's does). Lazily unmounted on
/// drop.
struct BindMount {
    target: PathBuf,
    _dir: TempDir,
}

impl BindMount {
    fn new(source: &Path, cgroup: Option<&TempCgroup>) -> BindMount {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("view");
        File::create(&target).unwrap();
        let mut cmd = Command::new("mount");
        cmd.arg("--bind").arg(source).arg(&target);
        if let Some(cg) = cgroup {
            cg.enter(&mut cmd);
        }
        let bind = BindMount { target, _dir: dir };
        let (status, _, err) = Spawned::new(cmd).finish();
        assert!(status.success(), "mount --bind {}: {err}", source.display());
        bind
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = umount2(&self.target, MntFlags::MNT_DETACH);
    }
}

/// A reader process with its output in files (no pipe to fill up), killed on drop.
struct Spawned {
    child: Option<Child>,
    out: File,
    err: File,
}

impl Spawned {
    fn new(mut cmd: Command) -> Spawned {
        let out = tempfile::tempfile().unwrap();
        let err = tempfile::tempfile().unwrap();
        cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(err.try_clone().unwrap());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Spawned { child: Some(child), out, err }
    }

    /// Waits (at most [`READER_TIMEOUT`]) and returns the status, stdout and stderr.
    fn finish(mut self) -> (ExitStatus, String, String) {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > READER_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("reader timed out");
            }
            thread::sleep(Duration::from_millis(5));
        };
        let read = |f: &mut File| {
            let mut text = String::new();
            f.rewind().unwrap();
            f.read_to_string(&mut text).unwrap();
            text
        };
        (status, read(&mut self.out), read(&mut self.err))
    }

    /// As [`Spawned::finish`], panicking unless the process succeeded; returns stdout.
    fn finish_ok(self) -> String {
        let (status, out, err) = self.finish();
        assert!(status.success(), "reader failed ({status}): {err}");
        out
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `program args` in `cgroup` (or the test's own cgroup), started now.
fn spawn_in(cgroup: Option<&TempCgroup>, program: &str, args: &[&str]) -> Spawned {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(cg) = cgroup {
        cg.enter(&mut cmd);
    }
    Spawned::new(cmd)
}

/// `path` read with read(2) (coreutils cat) by a process in `cgroup`.
fn read_in(cgroup: Option<&TempCgroup>, path: &Path) -> String {
    spawn_in(cgroup, "cat", &[path.to_str().unwrap()]).finish_ok()
}

/// The value of meminfo line `key` (kB).
fn meminfo_kb(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.split_whitespace().next()?.parse().ok())?
    })
}

/// Splits concatenated meminfo outputs at their `MemTotal:` lines.
fn meminfo_outputs(text: &str) -> Vec<String> {
    let mut outputs: Vec<String> = Vec::new();
    for line in text.split_inclusive('\n') {
        if line.starts_with("MemTotal:") || outputs.is_empty() {
            outputs.push(String::new());
        }
        outputs.last_mut().unwrap().push_str(line);
    }
    outputs
}

/// What a runtime does to put a view into a container: open the source with O_PATH, then
/// bind-mount /proc/self/fd/N. A lookup of the same path by a process in another cgroup in
/// between must not invalidate the opened entry (it did when each cgroup set had an inode
/// of its own: the mount then failed with ENOENT and `docker run` with it).
#[test]
fn lookup_by_another_cgroup_keeps_a_pending_bind_mount_valid() {
    if !can_mount() {
        return;
    }
    let daemon = Daemon::start(&[]);
    let Some(cg) = TempCgroup::new(&["memory"]) else { return };
    cg.memory_limit(256 << 20);
    let path = daemon.path("proc/meminfo");
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("view");
    File::create(&target).unwrap();
    for round in 0..20 {
        let source = nix::fcntl::open(
            &path,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .expect("open O_PATH");
        // Another cgroup walks the same path (and reads it) meanwhile.
        let text = read_in(Some(&cg), &path);
        assert_eq!(meminfo_kb(&text, "MemTotal"), Some(256 * 1024));
        let via = PathBuf::from(format!("/proc/self/fd/{source}"));
        mount(Some(&via), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .unwrap_or_else(|e| panic!("round {round}: bind mount of the opened view: {e}"));
        let mine = fs::read_to_string(&target).expect("read through the bind mount");
        assert_ne!(meminfo_kb(&mine, "MemTotal"), Some(256 * 1024), "the reader's own view");
        umount2(&target, MntFlags::MNT_DETACH).expect("umount");
        nix::unistd::close(source).expect("close the O_PATH fd");
    }
}

/// Runs `busybox cat path` `times` times in a row in `cgroup`; returns the outputs.
fn busybox_cat_loop(cgroup: Option<&TempCgroup>, path: &Path, times: usize) -> Spawned {
    let script = format!("for i in $(seq {times}); do busybox cat '{}'; done", path.display());
    spawn_in(cgroup, "sh", &["-c", &script])
}

/// Several busybox cat loops in the same cgroup: they share the inode and its page cache,
/// and every read is still the whole file (no zero padding, nothing cut).
#[test]
fn busybox_cat_in_one_cgroup_concurrently() {
    if !can_mount() {
        return;
    }
    if !have_busybox() {
        sysvisor_skip::required("no busybox (scripts/install-deps.sh installs busybox-static)");
        return;
    }
    const TIMES: usize = 150;
    let daemon = Daemon::start(&["--cache-ttl-ms", "60000"]);
    let Some(cg) = TempCgroup::new(&["memory"]) else { return };
    cg.memory_limit(256 << 20);
    let path = daemon.path("proc/meminfo");
    let bind = BindMount::new(&path, Some(&cg));
    for path in [&path, &bind.target] {
        let want = read_in(Some(&cg), path);
        let readers: Vec<Spawned> =
            (0..4).map(|_| busybox_cat_loop(Some(&cg), path, TIMES)).collect();
        for reader in readers {
            let outputs = meminfo_outputs(&reader.finish_ok());
            assert_eq!(outputs.len(), TIMES);
            for (i, got) in outputs.iter().enumerate() {
                assert_eq!(*got, want, "{} output {i}", path.display());
            }
        }
    }
}

/// `SENDFILE_VS_READ N TOGGLE A B PATH...` reads each file N times: three times in a row
/// with sendfile(2), then with read(2) (no fstat: nothing else asks for the size); reports
/// every sendfile read that is cut, padded or shaped differently from the read(2) one (line
/// count, non-numeric words).
/// Before each round it writes A or B (alternately) to the file TOGGLE (unless "-") and
/// waits a little: a cpuset that changes the length of cpuinfo, stat and cpu/online.
const SENDFILE_VS_READ: &str = r#"
import os, sys, time
def sendfile_all(path):
    fd = os.open(path, os.O_RDONLY)
    r, w = os.pipe()
    out = bytearray()
    try:
        while True:
            n = os.sendfile(w, fd, None, 1 << 16)
            if n == 0:
                break
            while n > 0:
                chunk = os.read(r, n)
                out += chunk
                n -= len(chunk)
    finally:
        os.close(fd); os.close(r); os.close(w)
    return bytes(out)
def read_all(path):
    fd = os.open(path, os.O_RDONLY)
    out = bytearray()
    try:
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            out += chunk
    finally:
        os.close(fd)
    return bytes(out)
def shape(data):
    return [(len(l.split()), [t for t in l.split() if not any(c.isdigit() for c in t)])
            for l in data.decode("latin-1").splitlines()]
n, toggle, values, paths = int(sys.argv[1]), sys.argv[2], sys.argv[3:5], sys.argv[5:]
bad = 0
for i in range(n):
    if toggle != "-":
        with open(toggle, "w") as f:
            f.write(values[i % 2])
        time.sleep(0.005)
    for path in paths:
        sent = [sendfile_all(path) for _ in range(3)]
        r = read_all(path)
        for k, s in enumerate(sent):
            problems = []
            if not s.endswith(b"\n"):
                problems.append("last byte not a newline")
            if b"\0" in s:
                problems.append("NUL bytes")
            if shape(s) != shape(r):
                problems.append("lines differ from read(2)")
            if problems:
                bad += 1
                print(path, i, k, problems, len(s), len(r), repr(s[-40:]), repr(r[-40:]))
print("checked", n, "bad", bad)
"#;

/// Views whose length changes between opens: re-rendered at nearly every open (1 ms cache),
/// in a cgroup whose cpuset alternates between one CPU and all of them (cpuinfo, stat and
/// cpu/online change length). A sendfile read is never cut nor padded, whether the file is
/// reached by its path or through a bind mount made in the reader's cgroup, and also for a
/// reader outside that cgroup.
#[test]
fn sendfile_of_changing_views_is_never_cut() {
    if !can_mount() {
        return;
    }
    let Some(python) = python3() else {
        sysvisor_skip::required("no python3");
        return;
    };
    let cpus = sysvisor_fs::fuse::session::online_cpus().unwrap();
    let daemon = Daemon::start(&["--cache-ttl-ms", "1"]);
    let Some(cg) = TempCgroup::new(&["memory", "cpuset"]) else { return };
    cg.memory_limit(256 << 20);
    let all_cpus = cpus.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",");
    let one_cpu = cpus[0].to_string();
    let toggle = cg.dir_of("cpuset").join("cpuset.cpus").display().to_string();
    let binds: Vec<BindMount> =
        TABLE.iter().map(|spec| BindMount::new(&daemon.path(spec.path), Some(&cg))).collect();
    let direct: Vec<String> =
        TABLE.iter().map(|spec| daemon.path(spec.path).display().to_string()).collect();
    let bound: Vec<String> = binds.iter().map(|b| b.target.display().to_string()).collect();
    for (what, paths) in [("paths", &direct), ("bind mounts", &bound)] {
        for cgroup in [Some(&cg), None] {
            let toggle = if cgroup.is_some() { toggle.as_str() } else { "-" };
            let mut args = vec!["-c", SENDFILE_VS_READ, "60", toggle, &one_cpu, &all_cpus];
            args.extend(paths.iter().map(String::as_str));
            let out = spawn_in(cgroup, python, &args).finish_ok();
            let inside = cgroup.is_some();
            assert!(out.trim_end().ends_with("bad 0"), "{what}, in the cgroup {inside}:\n{out}");
        }
    }
}

/// The number of `processor` entries of a cpuinfo text.
fn processors(cpuinfo: &str) -> usize {
    cpuinfo.lines().filter(|l| l.starts_with("processor")).count()
}

/// A bind-mounted cpuinfo read by busybox cat while its cpuset grows and shrinks: the
/// length read is always the current one. (A short page-cache read shrinks the kernel's
/// size of the inode; without a refresh at every open the bind mount would keep the
/// shortest length forever.)
#[test]
fn bind_mounted_view_that_grows_is_read_whole() {
    if !can_mount() {
        return;
    }
    if !have_busybox() {
        sysvisor_skip::required("no busybox (scripts/install-deps.sh installs busybox-static)");
        return;
    }
    let cpus = sysvisor_fs::fuse::session::online_cpus().unwrap();
    if cpus.len() < 2 {
        sysvisor_skip::optional("needs two CPUs");
        return;
    }
    let daemon = Daemon::start(&["--cache-ttl-ms", "1"]);
    let Some(cg) = TempCgroup::new(&["cpuset"]) else { return };
    let all = fs::read_to_string(cg.dir_of("cpuset").join("cpuset.cpus")).unwrap();
    let all = if all.trim().is_empty() {
        cpus.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")
    } else {
        all.trim().to_string()
    };
    let one = cpus[0].to_string();
    let bind = BindMount::new(&daemon.path("proc/cpuinfo"), Some(&cg));
    let cat = |what: &str| {
        let target = bind.target.to_str().unwrap();
        let out = spawn_in(Some(&cg), "busybox", &["cat", target]).finish_ok();
        assert!(out.ends_with('\n') && !out.contains('\0'), "{what}: {out:?}");
        out
    };
    for round in 0..3 {
        cg.cpus(&one);
        thread::sleep(Duration::from_millis(20));
        let small = cat("one CPU");
        assert_eq!(processors(&small), 1, "round {round}");
        cg.cpus(&all);
        thread::sleep(Duration::from_millis(20));
        let big = cat("all CPUs");
        assert_eq!(processors(&big), cpus.len(), "round {round}: cut at the old length?\n{big}");
        assert_eq!(shape(&big), shape(&read_in(Some(&cg), &bind.target)), "round {round}");
    }
}
