//! CPU and memory accounting from /proc: what a server process costs (resident memory,
//! CPU time), what this process and its readers cost (getrusage), and how busy the whole
//! machine is, so that a measurement taken while something else ran (another build on a
//! shared machine) can be told apart and taken again.

use anyhow::{Context, Result};
use serde::Serialize;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A server's resident memory (`VmRSS`, and its peak `VmHWM`), kB.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rss {
    pub rss_kb: u64,
    pub hwm_kb: u64,
}

pub fn rss(pid: u32) -> Result<Rss> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Rss { rss_kb: field("VmRSS:")?, hwm_kb: field("VmHWM:")? })
}

/// User + system CPU time of the whole process (all its threads) so far, seconds:
/// fields 14 and 15 of /proc/PID/stat, in clock ticks.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("/proc/{pid}/stat"))?;
    let ticks = parse_cpu_ticks(&s).with_context(|| format!("bad /proc/{pid}/stat: {s:?}"))?;
    Ok(ticks as f64 / clock_ticks_per_s())
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// User + system CPU time of this process (all its threads) so far, seconds.
pub fn self_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass; an all-zero rusage is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The machine's idle time so far (all CPUs, idle + iowait from the first line of
/// /proc/stat, in ticks), and when it was read. Busy time is the wall time of every CPU
/// minus the idle time: on a tickless kernel the idle figure is measured exactly, while the
/// user and system figures are sampled at each tick and miss short bursts that start just
/// after one (readers woken by timers do exactly that).
#[derive(Debug, Clone, Copy)]
pub struct HostCpu {
    idle: u64,
    at: Instant,
}

impl HostCpu {
    pub fn now() -> HostCpu {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        HostCpu { idle: idle_ticks(stat.lines().next().unwrap_or_default()), at: Instant::now() }
    }

    /// CPU-seconds spent busy, all CPUs together, since `self` was taken.
    pub fn busy_seconds_since(&self) -> f64 {
        let now = HostCpu::now();
        let wall =
            now.at.duration_since(self.at).as_secs_f64() * crate::report::online_cpus() as f64;
        let idle = now.idle.saturating_sub(self.idle) as f64 / clock_ticks_per_s();
        (wall - idle).max(0.0)
    }

    /// The fraction of CPU time (0-1) spent busy since `self` was taken.
    pub fn busy_fraction_since(&self) -> f64 {
        let wall = self.at.elapsed().as_secs_f64() * crate::report::online_cpus() as f64;
        if wall <= 0.0 {
            return 0.0;
        }
        (self.busy_seconds_since() / wall).clamp(0.0, 1.0)
    }
}

/// `cpu  user nice system idle iowait irq softirq steal ...`: idle + iowait.
fn idle_ticks(line: &str) -> u64 {
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0)
}

/// The machine is quiet when its CPUs are at most this busy (0-1) over [`QUIET_SAMPLE`].
pub const QUIET_BUSY: f64 = 0.10;
const QUIET_SAMPLE: Duration = Duration::from_millis(300);
/// How long a measurement waits for a quiet machine before it goes ahead anyway (the
/// global option `--quiet-wait`; 0 for smoke runs).
static QUIET_WAIT: OnceLock<Duration> = OnceLock::new();

pub fn set_quiet_wait(d: Duration) {
    let _ = QUIET_WAIT.set(d);
}

/// Waits (at most `--quiet-wait`) until the machine's CPUs are at most [`QUIET_BUSY`] busy:
/// the busy fraction seen last, for the report.
pub fn wait_quiet() -> f64 {
    let deadline = Instant::now() + *QUIET_WAIT.get_or_init(|| Duration::from_secs(120));
    let mut said = false;
    loop {
        let t = HostCpu::now();
        std::thread::sleep(QUIET_SAMPLE);
        let busy = t.busy_fraction_since();
        if busy <= QUIET_BUSY || Instant::now() > deadline {
            return busy;
        }
        if !said {
            eprintln!(
                "sysvisor-bench: the machine is busy ({:.0}% CPU); waiting for it to calm down",
                busy * 100.0
            );
            said = true;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// utime + stime from a /proc/PID/stat line (the command may hold spaces and parentheses:
/// fields are counted after the last ')').
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')': state is field 3, so utime (14) and stime (15) are the 12th and 13th.
    let mut f = rest.split_whitespace().skip(11);
    Some(f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_ticks_after_the_command() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 600 0 0 0 17 25 0 0 20 0 9 0 100 0";
        assert_eq!(super::parse_cpu_ticks(line), Some(42));
        assert_eq!(super::parse_cpu_ticks("12 (x) S 1"), None);
    }

    #[test]
    fn cpu_line_idle_and_iowait_are_idle() {
        assert_eq!(super::idle_ticks("cpu  100 5 50 800 40 0 5 0 0 0"), 840);
        assert_eq!(super::idle_ticks("cpu"), 0);
    }
}
