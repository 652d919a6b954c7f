//! The reader of scenario "many" (`sysvisor-bench many-reader`): one per container, the
//! init of a pid namespace of its own inside a cgroup of its own. It prints `ready`, then
//! runs the jobs it reads from stdin (one JSON line each) and answers each with one JSON
//! line: the latency of every open + read to EOF + close in the job's window, per file, and
//! the reads that failed, including reads whose content does not match its own cgroup's
//! limits (MemTotal, CPU count) or its own age (uptime).

use crate::procstat;
use crate::worker::one;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

/// Most latencies kept per file and job (bounds memory; 80 s of back-to-back reads).
const MAX_SAMPLES: usize = 4_000_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// Files are read at `root/proc/FILE`.
    pub root: PathBuf,
    /// Read in turn, starting at the reader's index (so readers spread over the files).
    pub files: Vec<String>,
    /// Reads per second of this reader, on a fixed schedule; 0: back to back.
    pub rate: f64,
    /// CLOCK_MONOTONIC (ns) at which every reader's window opens.
    pub start_ns: u64,
    pub seconds: f64,
    /// Shift of this reader's schedule, as a fraction of one period: readers are spread
    /// evenly over the period instead of all firing at once.
    pub phase: f64,
    /// Whether to check the contents (not for native /proc, which shows the host).
    pub check: bool,
    /// `root` is the daemon's containers' mount: read this reader's own files, at
    /// `root/<container id>/proc/FILE` (see [`container_id`]).
    #[serde(default)]
    pub own: bool,
}

/// The id reader `index`'s container is registered under.
pub fn container_id(index: usize) -> String {
    format!("sysvisor-bench-many-{index:03}")
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct JobResult {
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Every read made for the job, warm-up reads and failures included (what the server
    /// served, for its CPU time per read).
    pub attempts: u64,
    /// This reader's CPU time (user + system) for the job, seconds.
    pub cpu_s: f64,
    /// Latencies (ns) of the successful reads, per file of the job (same order).
    pub lat_ns: Vec<Vec<u32>>,
}

/// What this reader's views must show: its own cgroup's limits.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    pub memtotal_kb: u64,
    pub cpus: usize,
}

pub fn run(index: usize, expect: Expect) -> Result<()> {
    let born = Instant::now();
    // Sleeps end on time (the default slack is 50 us).
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let job: Job = serde_json::from_str(&line?).context("bad job")?;
        let r = run_job(&job, index, expect, born);
        writeln!(out, "{}", serde_json::to_string(&r)?)?;
        out.flush()?;
    }
    Ok(())
}

fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// One read of `path`, checked: Ok(()) or the error message.
fn read_checked(
    job: &Job,
    file: &str,
    path: &std::path::Path,
    buf: &mut [u8],
    expect: Expect,
    born: Instant,
) -> Result<(), String> {
    let n = one(path, buf).map_err(|e| format!("{}: {e}", path.display()))?;
    if n == 0 {
        return Err(format!("{}: empty read", path.display()));
    }
    if job.check {
        check(file, &buf[..n.min(buf.len())], expect, born.elapsed().as_secs_f64())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn run_job(job: &Job, index: usize, expect: Expect, born: Instant) -> JobResult {
    let cpu0 = procstat::self_cpu_seconds();
    let mut r = measure(job, index, expect, born);
    r.cpu_s = procstat::self_cpu_seconds() - cpu0;
    r
}

fn measure(job: &Job, index: usize, expect: Expect, born: Instant) -> JobResult {
    let mut r = JobResult { lat_ns: vec![Vec::new(); job.files.len()], ..Default::default() };
    if job.files.is_empty() {
        return r;
    }
    let root = match job.own {
        true => job.root.join(container_id(index)),
        false => job.root.clone(),
    };
    let paths: Vec<PathBuf> = job.files.iter().map(|f| root.join("proc").join(f)).collect();
    let mut buf = vec![0u8; 1 << 16];
    let fail = |r: &mut JobResult, e: String| {
        r.errors += 1;
        r.first_error.get_or_insert(e);
    };
    // Warm-up (outside the window): one checked read of each file.
    for (f, p) in job.files.iter().zip(&paths) {
        r.attempts += 1;
        if let Err(e) = read_checked(job, f, p, &mut buf, expect, born) {
            fail(&mut r, e);
        }
    }
    let now = monotonic_ns();
    if job.start_ns > now {
        thread::sleep(Duration::from_nanos(job.start_ns - now));
    }
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(job.seconds);
    let period = (job.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / job.rate));
    let mut k: u64 = 0;
    loop {
        let slot = period.map(|p| start + p.mul_f64(job.phase + k as f64));
        // A read on schedule is timed from when it starts; one behind schedule from its slot
        // (the time it waited counts: no coordinated omission).
        let from = match slot {
            Some(s) if s >= end => break,
            Some(s) if Instant::now() < s => {
                thread::sleep(s.saturating_duration_since(Instant::now()));
                Instant::now()
            }
            Some(s) => s,
            None => Instant::now(),
        };
        if from >= end {
            break;
        }
        let i = (index + k as usize) % job.files.len();
        let res = read_checked(job, &job.files[i], &paths[i], &mut buf, expect, born);
        r.attempts += 1;
        let ns = from.elapsed().as_nanos().min(u32::MAX as u128) as u32;
        match res {
            Ok(()) => {
                r.ops += 1;
                if r.lat_ns[i].len() < MAX_SAMPLES {
                    r.lat_ns[i].push(ns);
                }
            }
            Err(e) => fail(&mut r, e),
        }
        k += 1;
    }
    r
}

/// Whether `content` of `file` is what this reader's cgroup must see. Cheap next to a read
/// (a scan of a few kB): done on every read.
pub fn check(file: &str, content: &[u8], expect: Expect, age_s: f64) -> Result<(), String> {
    let text = std::str::from_utf8(content).map_err(|_| "not UTF-8".to_string())?;
    match file {
        "meminfo" => {
            let first = text.lines().next().unwrap_or_default();
            let kb = first
                .strip_prefix("MemTotal:")
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| format!("first line is not MemTotal: {first:?}"))?;
            if kb != expect.memtotal_kb {
                return Err(format!("MemTotal {kb} kB, expected {} kB", expect.memtotal_kb));
            }
        }
        "cpuinfo" | "stat" => {
            let n = if file == "cpuinfo" {
                text.lines().filter(|l| l.starts_with("processor")).count()
            } else {
                text.lines()
                    .filter(|l| {
                        l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
                    })
                    .count()
            };
            if n != expect.cpus {
                return Err(format!("{n} CPUs, expected {}", expect.cpus));
            }
        }
        "uptime" => {
            let up = text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("not an uptime: {text:?}"))?;
            // The container's uptime counts from its init, which is this reader.
            if up > age_s + 2.0 {
                return Err(format!("uptime {up} s, but the container is {age_s:.1} s old"));
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check, Expect};

    const E: Expect = Expect { memtotal_kb: 66560, cpus: 1 };

    #[test]
    fn meminfo_must_show_the_own_limit() {
        let ok = b"MemTotal:          66560 kB\nMemFree:           60000 kB\n";
        assert_eq!(check("meminfo", ok, E, 1.0), Ok(()));
        let other = b"MemTotal:          67584 kB\n";
        assert!(check("meminfo", other, E, 1.0).unwrap_err().contains("67584"));
        assert!(check("meminfo", b"MemFree: 1 kB\n", E, 1.0).is_err());
    }

    #[test]
    fn cpu_count_in_cpuinfo_and_stat() {
        let cpuinfo = b"processor\t: 0\nmodel name\t: X\n\nprocessor\t: 1\nmodel name\t: X\n";
        assert!(check("cpuinfo", cpuinfo, E, 1.0).is_err());
        assert_eq!(check("cpuinfo", cpuinfo, Expect { cpus: 2, ..E }, 1.0), Ok(()));
        let stat = b"cpu  1 2 3 4\ncpu0 1 2 3 4\nintr 5\nctxt 6\n";
        assert_eq!(check("stat", stat, E, 1.0), Ok(()));
        assert!(check("stat", b"cpu  1\ncpu0 1\ncpu1 1\n", E, 1.0).is_err());
    }

    #[test]
    fn uptime_is_the_containers_age() {
        assert_eq!(check("uptime", b"3.20 6.10\n", E, 2.0), Ok(()));
        assert!(check("uptime", b"11000.52 20000.10\n", E, 2.0).is_err());
        assert!(check("uptime", b"x\n", E, 2.0).is_err());
        assert_eq!(check("loadavg", b"0.00 0.00 0.00 1/1 1\n", E, 2.0), Ok(()));
    }
}
