//! End-to-end tests of the FUSE transport: run the built binary as root, mount on a temporary
//! directory and use the mount like any reader would.
//!
//! Skipped (with a message) unless running as root with /dev/fuse. Every daemon is wrapped in
//! a guard that kills it and lazily unmounts on drop, so a failing test leaves nothing behind.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{geteuid, Pid};
use sysvisor_fs::views::TABLE;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_sysvisor-fs");
const FSTYPE: &str = "fuse.sysvisor-fs";
const TIMEOUT: Duration = Duration::from_secs(20);

/// Root and /dev/fuse, or a printed reason to skip.
fn can_mount() -> bool {
    if !geteuid().is_root() {
        eprintln!("skipping: FUSE transport tests need root");
        return false;
    }
    if !Path::new("/dev/fuse").exists() {
        eprintln!("skipping: no /dev/fuse");
        return false;
    }
    true
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

/// Every directory implied by the table, with the names it must list.
fn expected_dirs() -> BTreeMap<String, BTreeSet<String>> {
    let mut dirs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    dirs.entry(String::new()).or_default();
    for spec in TABLE {
        let parts: Vec<&str> = spec.path.split('/').collect();
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
fn every_view_reads_non_empty_with_size_4096() {
    if !can_mount() {
        return;
    }
    let daemon = Daemon::start(&[]);
    for spec in TABLE {
        let path = daemon.path(spec.path);
        let meta = fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", spec.path));
        assert!(meta.is_file(), "{}", spec.path);
        assert_eq!(meta.len(), 4096, "{} st_size", spec.path);
        assert_eq!(meta.mode() & 0o7777, 0o444, "{} mode", spec.path);
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{} owner", spec.path);
        let body = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", spec.path));
        assert!(!body.is_empty(), "{} is empty", spec.path);
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
        eprintln!("skipping: no busybox (apt-get install -y busybox-static)");
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
    let daemon = Daemon::start(&[]);
    for spec in TABLE {
        let file = File::open(daemon.path(spec.path)).unwrap();
        let mut whole = vec![0u8; 1 << 20];
        let n = file.read_at(&mut whole, 0).unwrap();
        whole.truncate(n);
        assert!(n > 0, "{}", spec.path);
        // Same handle, so the same snapshot: any way of slicing it gives the same bytes.
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

/// CPU lists (`Cpus_allowed_list`) of the daemon's worker threads, sorted.
fn worker_affinities(pid: Pid) -> Vec<String> {
    let mut lists = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return lists };
    for task in tasks.flatten() {
        let comm = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("fuse-worker") {
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

#[test]
fn round_trips_per_open_read_close() {
    if !can_mount() {
        return;
    }
    const N: u64 = 200;
    let mut daemon = Daemon::start(&["--threads", "1", "--log-format", "json"]);
    let path = daemon.path("proc/meminfo");
    let read_all = |path: &Path| {
        // open + read(2) until 0 + close; no fstat.
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
    read_all(&path); // warm-up: LOOKUPs, GETATTR of the root, the one FLUSH
    for _ in 0..N {
        read_all(&path);
    }
    let status = daemon.stop(Signal::SIGTERM);
    assert!(status.success());
    let log = daemon.stderr();
    for line in log.lines() {
        assert!(line.starts_with('{') && line.ends_with('}'), "not JSON: {line}");
    }
    let counts = request_counts(&log);
    eprintln!("requests for {} open+read+close: {counts:?}", N + 1);
    let get = |op: &str| counts.get(op).copied().unwrap_or(0);
    // OPEN, READ (data), READ (0 = EOF) and an asynchronous RELEASE per open; nothing else
    // once the path is cached.
    assert_eq!(get("OPEN"), N + 1);
    assert_eq!(get("READ"), 2 * (N + 1));
    // RELEASE is sent asynchronously after close: the last one may still be in flight.
    assert!((N..=N + 1).contains(&get("RELEASE")), "RELEASE: {counts:?}");
    assert!(get("FLUSH") <= 1, "FLUSH must be answered ENOSYS once");
    assert!(get("LOOKUP") <= 2, "lookups are cached");
    assert!(get("GETATTR") <= 1, "attributes are cached");
    let other: u64 = counts
        .iter()
        .filter(|(k, _)| {
            !["OPEN", "READ", "RELEASE", "FLUSH", "LOOKUP", "GETATTR", "INIT"].contains(&k.as_str())
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(other, 0, "unexpected requests: {counts:?}");
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
        _ => eprintln!("skipping the non-root case: uid 65534 cannot run {BIN}"),
    }
}
