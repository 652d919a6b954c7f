//! Root integration tests: the views a process gets from a mounted `sysvisor-fs` follow its
//! cgroup limits and pid namespace, and common readers (procps, busybox, glibc, Python) work
//! on them. Each test mounts its own server and makes its own cgroups, so the tests can run
//! in parallel; each ends with a leak check (mounts, cgroups, child processes).
//!
//! Skipped (with "skipped: not root" / "skipped: no /dev/fuse") when not root or without
//! /dev/fuse. Needs util-linux (unshare, mount), procps, coreutils, busybox and python3:
//! `scripts/install-deps.sh` installs them.

mod common;

use std::time::Duration;

use common::*;

/// `free`'s "Mem:" total (first number after "Mem:").
fn free_mem_total(out: &str) -> u64 {
    out.lines()
        .find(|l| l.starts_with("Mem:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Mem: total in free's output:\n{out}"))
}

fn memtotal_kb(text: &str) -> u64 {
    meminfo_value(text, "MemTotal").unwrap_or_else(|| panic!("no MemTotal in:\n{text}"))
}

fn host_online_cpus() -> usize {
    cpuinfo_processors(&host_file("/proc/cpuinfo"))
}

/// Whether `s` is a non-negative decimal with exactly two digits after the point.
fn is_fixed2(s: &str) -> bool {
    match s.split_once('.') {
        Some((i, f)) => {
            !i.is_empty()
                && i.bytes().all(|b| b.is_ascii_digit())
                && f.len() == 2
                && f.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Checks the /proc/loadavg format: `0.00 0.01 0.05 1/123 4567\n`.
fn assert_loadavg_format(text: &str) {
    assert!(text.ends_with('\n'), "loadavg does not end with a newline: {text:?}");
    let f: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(f.len(), 5, "loadavg has {} fields: {text:?}", f.len());
    for v in &f[..3] {
        assert!(is_fixed2(v), "bad load average {v:?} in {text:?}");
    }
    let (running, total) = f[3].split_once('/').unwrap_or_else(|| panic!("bad r/t in {text:?}"));
    let running: u64 = running.parse().unwrap_or_else(|_| panic!("bad running in {text:?}"));
    let total: u64 = total.parse().unwrap_or_else(|_| panic!("bad total in {text:?}"));
    assert!(running <= total, "running > total in {text:?}");
    f[4].parse::<u64>().unwrap_or_else(|_| panic!("bad last pid in {text:?}"));
}

/// Checks the /proc/uptime format (`123.45 678.90\n`) and returns the uptime in seconds.
fn parse_uptime(text: &str) -> f64 {
    assert!(text.ends_with('\n'), "uptime does not end with a newline: {text:?}");
    let f: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(f.len(), 2, "uptime has {} fields: {text:?}", f.len());
    assert!(is_fixed2(f[0]) && is_fixed2(f[1]), "bad uptime format: {text:?}");
    f[0].parse().unwrap()
}

/// A reader that prints `os.cpu_count()` (glibc: sysconf(_SC_NPROCESSORS_ONLN), which reads
/// /sys/devices/system/cpu/online).
fn python_cpu_count() -> Reader {
    Reader::new(python3()).args(["-c", "import os; print(os.cpu_count())"])
}

#[test]
fn memory_limit_256m_shows_in_meminfo_and_free() {
    let Some(_leaks) = setup() else { return };
    let m = Mounted::new();
    let cg = TestCgroup::new();
    cg.memory_limit(256 * MIB);

    // The view itself, read straight from the mount by a process in the cgroup.
    let meminfo = Reader::new("cat").arg(m.path("proc/meminfo")).in_cgroup(&cg).run_ok();
    assert_eq!(memtotal_kb(&meminfo), 262144, "MemTotal in:\n{meminfo}");
    for key in ["MemFree", "MemAvailable"] {
        let v = meminfo_value(&meminfo, key).unwrap_or_else(|| panic!("no {key} in:\n{meminfo}"));
        assert!(v <= 262144, "{key} {v} kB > MemTotal 262144 kB in:\n{meminfo}");
    }

    // `grep MemTotal /proc/meminfo` with the view bind-mounted over /proc/meminfo.
    let grep = Reader::new("grep")
        .args(["MemTotal", "/proc/meminfo"])
        .in_cgroup(&cg)
        .bind_view(&m, "proc/meminfo")
        .run_ok();
    assert_eq!(
        grep.split_whitespace().collect::<Vec<_>>(),
        ["MemTotal:", "262144", "kB"],
        "{grep:?}"
    );

    // procps `free -m`.
    let free = Reader::new("free").arg("-m").in_cgroup(&cg).bind_view(&m, "proc/meminfo").run_ok();
    assert_eq!(free_mem_total(&free), 256, "free -m:\n{free}");
}

#[test]
fn cpuset_of_one_cpu() {
    let Some(_leaks) = setup() else { return };
    let m = Mounted::new();
    let cg = TestCgroup::new();
    cg.cpuset("0");

    // nproc uses sched_getaffinity, which the cpuset itself limits: checks the setup.
    let nproc = Reader::new("nproc").in_cgroup(&cg).run_ok();
    assert_eq!(nproc.trim(), "1", "nproc");

    let online =
        Reader::new("cat").arg(m.path("sys/devices/system/cpu/online")).in_cgroup(&cg).run_ok();
    assert_eq!(online.trim_end(), "0", "online: {online:?}");

    let count = Reader::new("grep")
        .args(["-c", "^processor"])
        .arg(m.path("proc/cpuinfo"))
        .in_cgroup(&cg)
        .run_ok();
    assert_eq!(count.trim(), "1", "grep -c ^processor cpuinfo");

    let stat = Reader::new("cat").arg(m.path("proc/stat")).in_cgroup(&cg).run_ok();
    assert_eq!(stat_cpu_lines(&stat), ["cpu", "cpu0"], "stat:\n{stat}");

    let py =
        python_cpu_count().in_cgroup(&cg).bind_view(&m, "sys/devices/system/cpu/online").run_ok();
    assert_eq!(py.trim(), "1", "os.cpu_count()");

    let getconf = Reader::new("getconf")
        .arg("_NPROCESSORS_ONLN")
        .in_cgroup(&cg)
        .bind_view(&m, "sys/devices/system/cpu/online")
        .run_ok();
    assert_eq!(getconf.trim(), "1", "getconf _NPROCESSORS_ONLN");
}

#[test]
fn cfs_quota_of_one_cpu() {
    let Some(_leaks) = setup() else { return };
    if host_online_cpus() < 2 {
        sysvisor_skip::optional(
            "partly: the host has one CPU, so a one-CPU quota cannot be told from no quota",
        );
    }
    let m = Mounted::new();
    let cg = TestCgroup::new();
    cg.cpu_quota(100_000, 100_000);

    let cpuinfo = Reader::new("cat").arg(m.path("proc/cpuinfo")).in_cgroup(&cg).run_ok();
    assert_eq!(cpuinfo_processors(&cpuinfo), 1, "cpuinfo:\n{cpuinfo}");

    let stat = Reader::new("cat").arg(m.path("proc/stat")).in_cgroup(&cg).run_ok();
    assert_eq!(stat_cpu_lines(&stat), ["cpu", "cpu0"], "stat:\n{stat}");

    let online =
        Reader::new("cat").arg(m.path("sys/devices/system/cpu/online")).in_cgroup(&cg).run_ok();
    assert_eq!(online.trim_end(), "0", "online: {online:?}");

    // No cpuset limit, so sched_getaffinity still allows every CPU: this goes through the
    // online view only.
    let py =
        python_cpu_count().in_cgroup(&cg).bind_view(&m, "sys/devices/system/cpu/online").run_ok();
    assert_eq!(py.trim(), "1", "os.cpu_count()");
}

#[test]
fn fresh_pid_namespace_sees_its_own_uptime() {
    let Some(_leaks) = setup() else { return };
    let m = Mounted::new();
    let host_uptime = parse_uptime(&host_file("/proc/uptime"));

    // `cat` is the init of a new pid namespace.
    let out =
        Reader::new("unshare").args(["--fork", "--pid", "cat"]).arg(m.path("proc/uptime")).run_ok();
    let uptime = parse_uptime(&out);
    assert!(
        (0.0..10.0).contains(&uptime),
        "uptime in a fresh pid namespace is {uptime} s: {out:?}"
    );
    if host_uptime >= 20.0 {
        assert!(uptime < host_uptime, "pid-ns uptime {uptime} >= host uptime {host_uptime}");
    } else {
        sysvisor_skip::optional(&format!(
            "partly: host uptime {host_uptime} s < 20 s, not compared with it"
        ));
    }
}

#[test]
fn unconstrained_reader_sees_the_host() {
    let Some(_leaks) = setup() else { return };
    let m = Mounted::new();
    let cat = |rel: &str| Reader::new("cat").arg(m.path(rel)).in_root_cgroup().run_ok();

    let meminfo = cat("proc/meminfo");
    assert_eq!(
        memtotal_kb(&meminfo),
        memtotal_kb(&host_file("/proc/meminfo")),
        "meminfo:\n{meminfo}"
    );

    let cpuinfo = cat("proc/cpuinfo");
    assert_eq!(cpuinfo_processors(&cpuinfo), host_online_cpus(), "cpuinfo:\n{cpuinfo}");

    let online = cat("sys/devices/system/cpu/online");
    assert_eq!(online.trim_end(), host_file("/sys/devices/system/cpu/online").trim_end());

    let stat = cat("proc/stat");
    assert_eq!(stat_cpu_lines(&stat), stat_cpu_lines(&host_file("/proc/stat")), "stat:\n{stat}");

    assert_loadavg_format(&cat("proc/loadavg"));

    let before = parse_uptime(&host_file("/proc/uptime"));
    let uptime = parse_uptime(&cat("proc/uptime"));
    let after = parse_uptime(&host_file("/proc/uptime"));
    // A little slack for the server's cache TTL.
    assert!(
        uptime >= before - 3.0 && uptime <= after + 1.0,
        "uptime {uptime} not within the host's [{before} - 3, {after} + 1]"
    );

    let diskstats = cat("proc/diskstats");
    for line in diskstats.lines() {
        assert!(line.split_whitespace().count() >= 14, "short diskstats line {line:?}");
    }
    let swaps = cat("proc/swaps");
    assert!(swaps.starts_with("Filename"), "swaps: {swaps:?}");
}

#[test]
fn procps_and_busybox_readers_work_on_the_views() {
    let Some(_leaks) = setup() else { return };
    let m = Mounted::new();
    let cg = TestCgroup::new();
    cg.memory_limit(256 * MIB).cpuset("0");
    let reader = |cmd: &str, args: &[&str]| {
        Reader::new(cmd).args(args).in_cgroup(&cg).bind_views(&m).env("TERM", "dumb").run_ok()
    };

    let free = reader("free", &["-m"]);
    assert_eq!(free_mem_total(&free), 256, "free -m:\n{free}");

    let vmstat = reader("vmstat", &[]);
    let lines: Vec<&str> = vmstat.lines().collect();
    assert_eq!(lines.len(), 3, "vmstat:\n{vmstat}");
    assert!(lines[0].starts_with("procs"), "vmstat:\n{vmstat}");
    // Columns: r b swpd free ...; free is in KiB and cannot exceed the 256 MiB limit.
    let free_kb: u64 =
        lines[2].split_whitespace().nth(3).and_then(|v| v.parse().ok()).expect("vmstat free");
    assert!(free_kb <= 262144, "vmstat free {free_kb} KiB > 256 MiB:\n{vmstat}");

    let uptime = reader("uptime", &[]);
    assert!(uptime.contains("load average:"), "uptime: {uptime:?}");

    let top = reader("top", &["-b", "-n", "1"]);
    let head: Vec<&str> = top.lines().take(6).collect();
    assert!(head.iter().any(|l| l.starts_with("%Cpu")), "top:\n{}", head.join("\n"));
    let mem = head
        .iter()
        .find(|l| l.starts_with("MiB Mem"))
        .unwrap_or_else(|| panic!("no MiB Mem line in top:\n{}", head.join("\n")));
    let total = mem.split(':').nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or("");
    assert_eq!(total, "256.0", "top: {mem}");

    // busybox cat reads the view; busybox free and uptime take their figures from
    // sysinfo(2), not from /proc, so only their running and format are checked.
    let bb_meminfo = reader("busybox", &["cat", "/proc/meminfo"]);
    assert_eq!(memtotal_kb(&bb_meminfo), 262144, "busybox cat /proc/meminfo:\n{bb_meminfo}");
    let bb_free = reader("busybox", &["free"]);
    assert!(bb_free.lines().any(|l| l.starts_with("Mem:")), "busybox free:\n{bb_free}");
    let bb_uptime = reader("busybox", &["uptime"]);
    assert!(bb_uptime.contains("load average:"), "busybox uptime: {bb_uptime:?}");
}

/// 4 cgroups x 8 threads x 200 open/read/close of proc/meminfo, all at once: each read must
/// give the reader's own cgroup's MemTotal.
#[test]
fn concurrent_readers_in_different_cgroups() {
    const THREADS: usize = 8;
    const READS: usize = 200;
    const SCRIPT: &str = r#"
import sys, threading
path, want, nthreads, nreads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
errors, counts = [], [0] * nthreads
start = threading.Barrier(nthreads)
def work(i):
    start.wait()
    for _ in range(nreads):
        try:
            with open(path, "rb") as f:
                data = f.read()
            first = data.split(b"\n", 1)[0].split()
            if len(first) < 2 or first[0] != b"MemTotal:" or int(first[1]) != want:
                errors.append("wrong content: %r" % data[:100])
            else:
                counts[i] += 1
        except Exception as e:
            errors.append("error: %r" % e)
threads = [threading.Thread(target=work, args=(i,)) for i in range(nthreads)]
for t in threads: t.start()
for t in threads: t.join()
print("reads", sum(counts))
print("errors", len(errors))
for e in errors[:10]: print(e)
sys.exit(1 if errors else 0)
"#;
    let Some(_leaks) = setup() else { return };
    let m = Mounted::new();
    let limits_mib = [64u64, 128, 192, 256];
    let cgroups: Vec<TestCgroup> = limits_mib
        .iter()
        .map(|&mib| {
            let cg = TestCgroup::new();
            cg.memory_limit(mib * MIB);
            cg
        })
        .collect();
    let readers: Vec<(u64, Reader)> = limits_mib
        .iter()
        .zip(&cgroups)
        .map(|(&mib, cg)| {
            let r = Reader::new(python3())
                .args(["-c", SCRIPT])
                .arg(m.path("proc/meminfo"))
                .args([(mib * 1024).to_string(), THREADS.to_string(), READS.to_string()])
                .in_cgroup(cg)
                .timeout(Duration::from_secs(60));
            (mib, r)
        })
        .collect();
    let outputs: Vec<(u64, std::process::Output)> = std::thread::scope(|s| {
        let handles: Vec<_> =
            readers.iter().map(|(mib, r)| (*mib, s.spawn(move || r.run()))).collect();
        handles
            .into_iter()
            .map(|(mib, h)| (mib, h.join().expect("reader thread panicked")))
            .collect()
    });
    for (mib, out) in &outputs {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains(&format!("reads {}\n", THREADS * READS)),
            "cgroup with {mib} MiB: status {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
    }
}

/// A limit changed while mounted shows once the cache TTL has passed.
#[test]
fn changed_limit_shows_after_cache_ttl() {
    let Some(_leaks) = setup() else { return };
    let m = Mounted::with_args(&["--cache-ttl-ms", "100"]);
    let cg = TestCgroup::new();
    cg.memory_limit(256 * MIB);
    let read =
        || memtotal_kb(&Reader::new("cat").arg(m.path("proc/meminfo")).in_cgroup(&cg).run_ok());
    assert_eq!(read(), 262144);
    cg.memory_limit(128 * MIB);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read(), 131072);
}
