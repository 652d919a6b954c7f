//! Root integration tests of the containers' own view files (daemon mode,
//! `MOUNT-containers/<id>/...`, served from the page cache): each container's files show
//! its own limits to every reader, read(2) and sendfile alike, however reads of different
//! containers interleave; a limit change is seen within the TTL; files bound before the
//! registration (as `runc create` does) fill once the container is registered; the end of
//! a registration removes them; an open + read + close within the TTL reaches no server.
//!
//! Skipped (with "skipped: <why>") when not root, without /dev/fuse or without python3.

mod common;

use std::time::Duration;

use sysvisor_proto::Request;

use common::daemon::*;
use common::*;

/// Python: reads PATH (argv 2) for SECONDS (argv 3) by MODE (argv 1: `read`, read(2) to
/// EOF, or `sendfile`, sendfile(2) into a pipe as busybox `cat` does), open + read + close
/// each time, and counts the readings whose MemTotal is not KB (argv 4): prints
/// `reads=N wrong=M` and the first wrong reading.
const READER: &str = r#"
import os, sys, time
mode, path, seconds, want = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
r, w = os.pipe()
reads = wrong = 0
first_wrong = ""
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    fd = os.open(path, os.O_RDONLY)
    out = b""
    if mode == "read":
        while True:
            part = os.read(fd, 65536)
            if not part:
                break
            out += part
    else:
        while True:
            n = os.sendfile(w, fd, None, 65536)
            if n == 0:
                break
            out += os.read(r, 65536)
    os.close(fd)
    reads += 1
    line = out.split(b"\n", 1)[0].decode()
    if line.split()[1:2] != [want]:
        wrong += 1
        first_wrong = first_wrong or out.decode()[:200]
print("reads=%d wrong=%d" % (reads, wrong))
if first_wrong:
    print(first_wrong)
"#;

/// Python: polls PATH (argv 1) every millisecond until its MemTotal is KB (argv 2), at
/// most 10 s; prints how long it took in ms (or `timeout`).
const WAIT_FOR: &str = r#"
import sys, time
path, want = sys.argv[1], sys.argv[2]
start = time.monotonic()
while time.monotonic() - start < 10:
    with open(path) as f:
        if f.readline().split()[1:2] == [want]:
            print("%.1f" % ((time.monotonic() - start) * 1000))
            sys.exit(0)
    time.sleep(0.001)
print("timeout")
"#;

/// How long the interleaved readers run, in seconds (`SYSVISOR_OWN_SECONDS`, default 15).
fn reader_seconds() -> f64 {
    std::env::var("SYSVISOR_OWN_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(15.0)
}

/// A fake container: an init in a fresh pid namespace, moved into a cgroup limited to
/// `mib` MiB, registered as `id`. Fields drop in order: the init first, then its cgroup.
struct Fake {
    /// Held for its drop (kills the init).
    _init: NsInit,
    cgroup: TestCgroup,
}

impl Fake {
    fn start(site: &Site, id: &str, mib: u64) -> Fake {
        let cgroup = TestCgroup::new();
        cgroup.memory_limit(mib * MIB);
        let init = NsInit::start();
        cgroup.add_process(init.pid);
        register(site, &container(id, init.pid, now_unix_ms()));
        Fake { _init: init, cgroup }
    }
}

fn mem_total(text: &str) -> u64 {
    meminfo_value(text, "MemTotal").unwrap_or_else(|| panic!("no MemTotal in {text:?}"))
}

/// The request counts the daemon logged for the containers' mount when it stopped:
/// (total, OPEN).
fn own_requests(log: &str) -> (u64, u64) {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("unmounted the containers' own files"))
        .unwrap_or_else(|| panic!("no request counts in the log:\n{log}"));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.trim_matches('"').parse().ok())
            .unwrap_or(0)
    };
    (field("requests="), field("OPEN="))
}

#[test]
fn readers_of_different_containers_never_see_each_others_view() {
    let Some(_leaks) = setup() else { return };
    if !have_python() {
        return;
    }
    let site = Site::new();
    let mut daemon = Daemon::start(&site);
    let a = Fake::start(&site, "small", 256);
    let b = Fake::start(&site, "large", 512);
    let seconds = reader_seconds();

    // Each container's readers in its cgroup, through a bind mount as in a container:
    // read(2) and sendfile, all four at once.
    let readers: Vec<_> = [("small", &a, 256u64), ("large", &b, 512u64)]
        .into_iter()
        .flat_map(|(id, fake, mib)| {
            let src = site.own_path(id, "proc/meminfo");
            ["read", "sendfile"].map(|mode| {
                let reader = Reader::new(python3())
                    .args(["-c", READER, mode, "/proc/meminfo", &seconds.to_string()])
                    .arg((mib * 1024).to_string())
                    .in_cgroup(&fake.cgroup)
                    .bind(src.clone(), "/proc/meminfo")
                    .timeout(Duration::from_secs_f64(seconds + 30.0));
                (format!("{id} {mode}"), std::thread::spawn(move || reader.run_ok()))
            })
        })
        .collect();
    let mut total = 0u64;
    for (what, reader) in readers {
        let out = reader.join().expect("reader thread");
        let first = out.lines().next().unwrap_or_default();
        println!("{what}: {first}");
        let reads: u64 = first
            .strip_prefix("reads=")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("{what}: bad output {out:?}"));
        assert!(first.ends_with(" wrong=0"), "{what} saw another view:\n{out}");
        assert!(reads > 0, "{what}: no reads");
        total += reads;
    }

    // The host reads both by path too: each its own.
    assert_eq!(mem_total(&host_read(&site.own_path("small", "proc/meminfo"))), 256 * 1024);
    assert_eq!(mem_total(&host_read(&site.own_path("large", "proc/meminfo"))), 512 * 1024);

    // Zero-message opens: OPEN is answered ENOSYS once for the whole mount (the readers'
    // first opens may race it: at most one each), and far fewer requests than reads (about
    // one GETATTR and READ per file and TTL).
    daemon.terminate();
    let (requests, opens) = own_requests(&site.log());
    println!("{total} reads, {requests} requests to the containers' mount, {opens} OPEN");
    assert!(opens <= 4, "{opens} OPENs: opens are not zero-message");
    assert!(requests * 10 < total, "{requests} requests for {total} reads");
    drop((a, b));
}

#[test]
fn a_limit_change_is_seen_within_the_ttl() {
    let Some(_leaks) = setup() else { return };
    if !have_python() {
        return;
    }
    let site = Site::new();
    let _daemon = Daemon::start(&site);
    let a = Fake::start(&site, "grows", 256);
    let path = site.own_path("grows", "proc/meminfo");
    assert_eq!(mem_total(&host_read(&path)), 256 * 1024);
    // Fill the page cache, then change the limit and time how long the old one is served.
    for _ in 0..50 {
        assert_eq!(mem_total(&host_read(&path)), 256 * 1024);
    }
    a.cgroup.memory_limit(384 * MIB);
    let out = Reader::new(python3())
        .args(["-c", WAIT_FOR])
        .arg(&path)
        .arg((384 * 1024).to_string())
        .run_ok();
    let ms: f64 = out.trim().parse().unwrap_or_else(|_| panic!("limit change not seen: {out}"));
    println!("the new limit was read {ms} ms after the change (TTL 100 ms)");
    // TTL (100 ms) + the rendering reuse window (10 ms), with room for a loaded machine.
    assert!(ms < 1000.0, "the old limit was served for {ms} ms");
}

#[test]
fn files_bound_before_registration_fill_once_registered_and_go_with_it() {
    let Some(_leaks) = setup() else { return };
    let site = Site::new();
    let _daemon = Daemon::start(&site);
    let cgroup = TestCgroup::new();
    cgroup.memory_limit(200 * MIB);
    let init = NsInit::start();
    cgroup.add_process(init.pid);

    // As runc create: the files exist (empty) before the container is registered.
    let path = site.own_path("later", "proc/meminfo");
    assert_eq!(std::fs::metadata(&path).expect("stat before registration").len(), 0);
    assert_eq!(host_read(&path), "");
    let listed = || -> Vec<String> {
        let entries = std::fs::read_dir(&site.own).expect("list the containers");
        entries.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect()
    };
    assert!(listed().is_empty(), "an unregistered container is listed: {:?}", listed());

    // A process bound the file first (the container's /proc/meminfo), then registration.
    let reader = Reader::new("sh")
        .args(["-c", "sleep 0.5; head -1 /proc/meminfo"])
        .bind(path.clone(), "/proc/meminfo");
    let bound = std::thread::spawn(move || reader.run_ok());
    register(&site, &container("later", init.pid, now_unix_ms()));
    let first = bound.join().expect("reader thread");
    assert_eq!(mem_total(&first), 200 * 1024, "through the bind made before registration");
    assert_eq!(listed(), ["later"]);

    // Unregistered: its files are gone (an open one fails once its attributes expire) and
    // it is no longer listed; the name is again one nobody registered (empty files).
    let open = std::fs::File::open(&path).expect("open while registered");
    let mut buf = [0u8; 64];
    assert!(std::os::unix::fs::FileExt::read_at(&open, &mut buf, 0).expect("read") > 0);
    let answer = site.call(&Request::Unregister { id: "later".into() }).expect("unregister");
    assert!(answer.ok, "{answer:?}");
    eventually("the open file goes with the registration", || {
        std::os::unix::fs::FileExt::read_at(&open, &mut buf, 0)
            .is_err_and(|e| e.raw_os_error() == Some(libc::ENOENT))
    });
    assert!(listed().is_empty(), "still listed: {:?}", listed());
    assert_eq!(host_read(&path), "");
    drop(init);
}

#[test]
fn a_daemon_without_containers_serves_as_before() {
    let Some(_leaks) = setup() else { return };
    let site = Site::new();
    let mut daemon = Daemon::start(&site);
    assert!(is_fuse_mounted(&site.own), "the containers' mount is missing");
    assert!(std::fs::read_dir(&site.own).expect("list").next().is_none());
    let meminfo = host_read(&site.path("proc/meminfo"));
    assert!(meminfo.starts_with("MemTotal:"), "{meminfo}");
    daemon.terminate();
}

fn host_read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
