//! Root integration tests: a reader that keeps a view open and reads it again from offset 0
//! (`lseek(fd, 0)` + read, as top, vmstat and free do every interval) gets live figures,
//! and a reader that reads it in chunks never sees a torn file. Standalone mount and daemon
//! (its view files and its dynamic `proc/sys` tree), real cgroups, Python readers.
//!
//! Skipped (with "skipped: <why>") when not root, without /dev/fuse or without python3.

mod common;

use std::collections::BTreeMap;

use common::daemon::*;
use common::*;

/// Python: opens each path of the command line once (`fds`); `sample(TAG)` prints every
/// file (`==== TAG PATH` then its bytes) from those descriptors: `lseek(fd, 0)`, then
/// reads to EOF.
const SAMPLER: &str = r#"
import os, socket, sys, time
paths = sys.argv[1:]
fds = [os.open(p, os.O_RDONLY) for p in paths]
def whole(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    out = b""
    while True:
        part = os.read(fd, 65536)
        if not part:
            return out
        out += part
def sample(tag):
    for p, fd in zip(paths, fds):
        sys.stdout.write("==== %s %s\n%s" % (tag, p, whole(fd).decode()))
"#;

/// After [`SAMPLER`]: samples, burns 0.6 s of CPU, fills 64 MiB, sleeps 0.4 s, samples.
const LIVE_STEPS: &str = r#"
sample("before")
start = time.process_time()
while time.process_time() - start < 0.6:
    pass
hog = b"\x01" * (64 << 20)
time.sleep(0.4)
sample("after")
"#;

/// Opens each path once and reads it whole (`==== open PATH`: the rendering whose length
/// the kernel took as `st_size` at the open); then, with a busy child in its cgroup, waits
/// until the first file read again from 0 is longer than that (the child's ticks gain a
/// digit), and reads each path ROUNDS times from the same descriptor, from offset 0 to EOF
/// in chunks of 7, 61, 512 or 4096 bytes (one size per round), printing every reading
/// (`==== ROUND PATH` then its bytes).
const CHUNKS_SCRIPT: &str = r#"
import os, sys, time
rounds, paths = int(sys.argv[1]), sys.argv[2:]
fds = [os.open(p, os.O_RDONLY) for p in paths]
first = [os.pread(fd, 1 << 20, 0) for fd in fds]
busy = os.fork()
if busy == 0:
    while True:
        pass
try:
    deadline = time.monotonic() + 60
    while len(os.pread(fds[0], 1 << 20, 0)) <= len(first[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for p, data in zip(paths, first):
        sys.stdout.write("==== open %s\n%s" % (p, data.decode()))
    for r in range(rounds):
        chunk = (7, 61, 512, 4096)[r % 4]
        for p, fd in zip(paths, fds):
            os.lseek(fd, 0, os.SEEK_SET)
            out = b""
            while True:
                part = os.read(fd, chunk)
                if not part:
                    break
                out += part
            sys.stdout.write("==== %d %s\n%s" % (r, p, out.decode()))
finally:
    os.kill(busy, 9)
    os.waitpid(busy, 0)
"#;

/// After [`SAMPLER`], as a system container's root with the paths kernel/panic,
/// kernel/hostname and uptime: samples, writes 7 to panic through another descriptor, sets
/// the host name, sleeps 0.4 s, samples.
const SYSCTL_STEPS: &str = r#"
sample("before")
fd = os.open(paths[0], os.O_WRONLY | os.O_TRUNC)
os.write(fd, b"7\n")
os.close(fd)
socket.sethostname("reread-live")
time.sleep(0.4)
sample("after")
"#;

/// The readings a script printed, by (tag, path).
fn readings(out: &str) -> BTreeMap<(String, String), String> {
    let mut all = BTreeMap::new();
    for section in out.split("==== ").skip(1) {
        let (head, body) = section.split_once('\n').unwrap_or((section, ""));
        let (tag, path) = head.split_once(' ').unwrap_or_else(|| panic!("bad header {head:?}"));
        all.insert((tag.to_string(), path.to_string()), body.to_string());
    }
    all
}

fn reading<'a>(all: &'a BTreeMap<(String, String), String>, tag: &str, path: &str) -> &'a str {
    all.get(&(tag.to_string(), path.to_string()))
        .unwrap_or_else(|| panic!("no {tag} reading of {path}; have {:?}", all.keys()))
}

/// The numbers of the `cpu` (all CPUs) line of a /proc/stat text.
fn cpu_total(stat: &str) -> Vec<u64> {
    let line = stat.lines().next().unwrap_or_default();
    assert!(line.starts_with("cpu "), "no cpu line first in:\n{stat}");
    line.split_whitespace().skip(1).map(|v| v.parse().expect("cpu field")).collect()
}

/// The uptime in seconds of a /proc/uptime text.
fn uptime_secs(text: &str) -> f64 {
    assert!(text.ends_with('\n') && text.split_whitespace().count() == 2, "uptime {text:?}");
    text.split_whitespace().next().and_then(|v| v.parse().ok()).expect("uptime seconds")
}

/// The first word of every line.
fn keys(text: &str) -> Vec<&str> {
    text.lines().map(|l| l.split_whitespace().next().unwrap_or("")).collect()
}

/// A whole /proc/stat view of one CPU: the host's lines in the host's order, each complete,
/// and the `cpu` line the sum of the `cpu0` line (nothing from two renderings).
fn assert_whole_stat(text: &str, host: &str, what: &str) {
    assert!(text.ends_with('\n'), "{what}: cut:\n{text}");
    let want: Vec<&str> = keys(host).into_iter().filter(|k| !k.starts_with("cpu")).collect();
    let got = keys(text);
    assert_eq!(got[..2], ["cpu", "cpu0"], "{what}:\n{text}");
    assert_eq!(got[2..], want[..], "{what}:\n{text}");
    let cpu0: Vec<u64> = text
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{what}: bad field {v:?}:\n{text}")))
        .collect();
    assert_eq!(cpu_total(text), cpu0, "{what}: cpu is not the sum of cpu0:\n{text}");
}

/// A whole /proc/meminfo view of a 256 MiB cgroup: the host's keys in order, each value a
/// number.
fn assert_whole_meminfo(text: &str, host: &str, what: &str) {
    assert!(text.ends_with('\n'), "{what}: cut:\n{text}");
    assert_eq!(keys(text), keys(host), "{what}:\n{text}");
    for line in text.lines() {
        let value = line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok());
        assert!(value.is_some(), "{what}: bad line {line:?}");
    }
    assert_eq!(meminfo_value(text, "MemTotal"), Some(262144), "{what}");
}

#[test]
fn views_kept_open_show_cpu_memory_and_uptime_grow_when_read_again_from_0() {
    let Some(_leaks) = setup() else { return };
    if !have_python() {
        return;
    }
    let m = Mounted::new();
    let cg = TestCgroup::new();
    cg.memory_limit(256 * MIB).cpuset("0");
    let files = ["/proc/stat", "/proc/meminfo", "/proc/uptime", "/proc/loadavg"];
    let out = Reader::new(python3())
        .args(["-c", &format!("{SAMPLER}{LIVE_STEPS}")])
        .args(files)
        .in_cgroup(&cg)
        .bind_views(&m)
        .run_ok();
    let all = readings(&out);

    let (before, after) = (reading(&all, "before", files[0]), reading(&all, "after", files[0]));
    let host_stat = host_file("/proc/stat");
    assert_whole_stat(before, &host_stat, "stat before");
    assert_whole_stat(after, &host_stat, "stat after");
    let busy = |s: &str| cpu_total(s)[0] + cpu_total(s)[2];
    // 0.6 s of CPU is 60 ticks; the view converts the cgroup's own accounting.
    assert!(
        busy(after) >= busy(before) + 30,
        "user+system ticks did not grow by 30 after 0.6 s of CPU:\nbefore: {}\nafter:  {}",
        before.lines().next().unwrap(),
        after.lines().next().unwrap()
    );

    let (before, after) = (reading(&all, "before", files[1]), reading(&all, "after", files[1]));
    let host_meminfo = host_file("/proc/meminfo");
    assert_whole_meminfo(before, &host_meminfo, "meminfo before");
    assert_whole_meminfo(after, &host_meminfo, "meminfo after");
    let free = |s: &str| meminfo_value(s, "MemFree").unwrap();
    assert!(
        free(after) + 32 * 1024 <= free(before),
        "MemFree did not drop by 32 MiB after 64 MiB were filled: {} -> {} kB",
        free(before),
        free(after)
    );

    let (before, after) = (reading(&all, "before", files[2]), reading(&all, "after", files[2]));
    let (up0, up1) = (uptime_secs(before), uptime_secs(after));
    assert!(up1 >= up0 + 0.5, "uptime from one descriptor: {up0} -> {up1} over 1 s");
    let loadavg = reading(&all, "after", files[3]);
    assert_eq!(loadavg.split_whitespace().count(), 5, "loadavg after: {loadavg:?}");
}

#[test]
fn chunked_reads_of_views_read_again_from_0_are_never_torn() {
    const ROUNDS: usize = 40;
    let Some(_leaks) = setup() else { return };
    if !have_python() {
        return;
    }
    // No caching: every read from 0 renders anew while the busy child changes the figures.
    let m = Mounted::with_args(&["--cache-ttl-ms", "0"]);
    let cg = TestCgroup::new();
    cg.memory_limit(256 * MIB).cpuset("0");
    let files = ["/proc/stat", "/proc/meminfo", "/proc/cpuinfo", "/proc/uptime"];
    let out = Reader::new(python3())
        .args(["-c", CHUNKS_SCRIPT, &ROUNDS.to_string()])
        .args(files)
        .in_cgroup(&cg)
        .bind_views(&m)
        .timeout(std::time::Duration::from_secs(120))
        .run_ok();
    let all = readings(&out);
    let (host_stat, host_meminfo) = (host_file("/proc/stat"), host_file("/proc/meminfo"));
    let mut stats = Vec::new();
    for round in 0..ROUNDS {
        let at = |path| reading(&all, &round.to_string(), path);
        let what = |path| {
            format!("round {round} ({} bytes a read) of {path}", [7, 61, 512, 4096][round % 4])
        };
        assert_whole_stat(at(files[0]), &host_stat, &what(files[0]));
        assert_whole_meminfo(at(files[1]), &host_meminfo, &what(files[1]));
        let cpuinfo = at(files[2]);
        assert_eq!(cpuinfo_processors(cpuinfo), 1, "{}:\n{cpuinfo}", what(files[2]));
        assert!(cpuinfo.ends_with("\n\n"), "{}: cut:\n{cpuinfo}", what(files[2]));
        uptime_secs(at(files[3]));
        stats.push(cpu_total(at(files[0])));
    }
    // Every round was a new rendering: the busy child's ticks grow from round to round.
    assert!(stats.windows(2).all(|w| w[0] <= w[1]), "cpu ticks went back: {stats:?}");
    assert!(stats.first() < stats.last(), "one rendering for {ROUNDS} rounds: {stats:?}");
    // Longer than at the open (the kernel's `st_size` since: nothing else opened or
    // stat'ed the file), and whole all the same: read(2) is not cut at `st_size`.
    let at_open = reading(&all, "open", files[0]);
    assert_whole_stat(at_open, &host_stat, "stat at the open");
    let lengths: std::collections::BTreeSet<usize> =
        (0..ROUNDS).map(|r| reading(&all, &r.to_string(), files[0]).len()).collect();
    assert!(
        lengths.iter().all(|&len| len > at_open.len()),
        "/proc/stat did not grow past its {} bytes at the open: {lengths:?}",
        at_open.len()
    );
    note(&format!("reread: /proc/stat {} bytes at the open, then {lengths:?}", at_open.len()));
}

#[test]
fn daemon_views_and_sysctls_kept_open_read_fresh_from_0() {
    let Some(_leaks) = setup() else { return };
    if !have_python() {
        return;
    }
    let site = Site::new();
    let mut daemon = Daemon::start(&site);
    const BASE: u32 = 1_300_000;
    let init = NsInit::container(BASE);
    let mut c = container("reread", init.pid, now_unix_ms());
    (c.uid_base, c.gid_base) = (BASE, BASE);
    register(&site, &c);
    let panic = site.path("proc/sys/kernel/panic");
    let hostname = site.path("proc/sys/kernel/hostname");
    let uptime = site.path("proc/uptime");
    let paths: Vec<&str> =
        [&panic, &hostname, &uptime].iter().map(|p| p.to_str().unwrap()).collect();
    let out = init
        .reader(0)
        .args([python3(), "-c", &format!("{SAMPLER}{SYSCTL_STEPS}")])
        .args(&paths)
        .run_ok();
    let all = readings(&out);
    let host_panic = host_file("/proc/sys/kernel/panic");
    assert_eq!(reading(&all, "before", paths[0]), host_panic, "unwritten: the host's value");
    assert_eq!(reading(&all, "after", paths[0]), "7\n", "the written value, from 0 again");
    assert_ne!(reading(&all, "before", paths[1]), "reread-live\n");
    assert_eq!(reading(&all, "after", paths[1]), "reread-live\n", "the new host name");
    let up0 = uptime_secs(reading(&all, "before", paths[2]));
    let up1 = uptime_secs(reading(&all, "after", paths[2]));
    assert!(up1 >= up0 + 0.3, "the container's uptime from one descriptor: {up0} -> {up1}");
    assert_eq!(host_file("/proc/sys/kernel/panic"), host_panic, "the host's never changes");
    drop(init);
    daemon.terminate();
    assert!(!site.log().contains("panicked"), "{}", site.log());
}
