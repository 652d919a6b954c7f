//! What a server process costs, from /proc: resident memory and CPU time.

use anyhow::{Context, Result};
use serde::Serialize;

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
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Ok(ticks as f64 / hz as f64)
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
}
