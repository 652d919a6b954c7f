//! The host's own /proc and /sys files, read from configurable roots (fixtures in tests),
//! plus the small host facts several views share: the online CPUs, the clock tick rate,
//! the time since boot, and the cpu-list format ("0-3,5").

pub mod cpulist;
pub mod fmt;
#[cfg(test)]
pub(crate) mod testenv;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

pub use cpulist::{format_cpu_list, parse_cpu_list, write_cpu_list, CpuListError};

use crate::views::ViewError;

/// Path of the online CPU list below the sys root.
pub const ONLINE_CPUS: &str = "devices/system/cpu/online";

/// Where the host's /proc and /sys are.
#[derive(Debug, Clone)]
pub struct HostProc {
    pub proc_root: PathBuf,
    pub sys_root: PathBuf,
}

impl HostProc {
    pub fn new(proc_root: impl Into<PathBuf>, sys_root: impl Into<PathBuf>) -> Self {
        HostProc { proc_root: proc_root.into(), sys_root: sys_root.into() }
    }

    /// The running system's /proc and /sys.
    pub fn system() -> Self {
        HostProc::new("/proc", "/sys")
    }

    /// Reads a file below the proc root, e.g. `meminfo`.
    pub fn read(&self, rel: &str) -> Result<String, ViewError> {
        let path = self.proc_root.join(rel);
        std::fs::read_to_string(&path)
            .map_err(|source| ViewError::Host { path: path.display().to_string(), source })
    }

    /// Reads a file below the sys root, e.g. `devices/system/cpu/online`.
    pub fn read_sys(&self, rel: &str) -> Result<String, ViewError> {
        let path = self.sys_root.join(rel);
        std::fs::read_to_string(&path)
            .map_err(|source| ViewError::Host { path: path.display().to_string(), source })
    }

    /// The host's online CPUs, ascending, from `devices/system/cpu/online` below the sys
    /// root. An empty or unparsable list is [`ViewError::Malformed`].
    pub fn online_cpus(&self) -> Result<Vec<u32>, ViewError> {
        let text = self.read_sys(ONLINE_CPUS)?;
        online_from_text(&text).map_err(|reason| ViewError::Malformed {
            path: self.sys_root.join(ONLINE_CPUS).display().to_string(),
            reason,
        })
    }
}

/// Parses the text of `devices/system/cpu/online`; at least one CPU is required.
pub fn online_from_text(text: &str) -> Result<Vec<u32>, String> {
    let cpus = parse_cpu_list(text).map_err(|e| e.to_string())?;
    if cpus.is_empty() {
        return Err("no online CPU".into());
    }
    Ok(cpus)
}

/// The kernel's USER_HZ as user space sees it (`sysconf(_SC_CLK_TCK)`): the unit of the
/// times in /proc/stat and of process start times in /proc/PID/stat. 100 on every Linux
/// architecture in practice; 100 is also the fallback should sysconf fail.
pub fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        // SAFETY: sysconf has no preconditions; it only reads a configuration value.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 {
            t as u64
        } else {
            100
        }
    })
}

/// Time since boot, suspend included (`CLOCK_BOOTTIME`, the clock behind /proc/uptime
/// and process start times).
pub fn boot_relative_now() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME exists on every kernel
    // this daemon supports (2.6.39+). On failure `ts` stays zero.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 || ts.tv_sec < 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// Converts nanoseconds to clock ticks of a `hz` clock (truncating, no overflow).
pub fn ns_to_ticks(ns: u64, hz: u64) -> u64 {
    let t = u128::from(ns) * u128::from(hz) / 1_000_000_000;
    u64::try_from(t).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/host");

    #[test]
    fn reads_fixture_roots() {
        let h = HostProc::new(format!("{FIX}/vm2/proc"), format!("{FIX}/vm2/sys"));
        assert!(h.read("meminfo").unwrap().starts_with("MemTotal:"));
        assert_eq!(h.read_sys(ONLINE_CPUS).unwrap(), "0-1\n");
        assert_eq!(h.online_cpus().unwrap(), vec![0, 1]);
        let h4 = HostProc::new(format!("{FIX}/big4/proc"), format!("{FIX}/big4/sys"));
        assert_eq!(h4.online_cpus().unwrap(), vec![0, 1, 2, 3]);
        assert!(matches!(h.read("nonexistent"), Err(ViewError::Host { .. })));
        assert!(matches!(h.read_sys("nonexistent"), Err(ViewError::Host { .. })));
    }

    #[test]
    fn online_errors() {
        assert_eq!(online_from_text("0-3\n").unwrap(), vec![0, 1, 2, 3]);
        assert!(online_from_text("\n").is_err());
        assert!(online_from_text("x").is_err());
        let h = HostProc::new(format!("{FIX}/misc"), format!("{FIX}/misc/badsys"));
        assert!(matches!(h.online_cpus(), Err(ViewError::Malformed { .. })));
    }

    #[test]
    fn clock() {
        assert!(clock_ticks() > 0);
        let a = boot_relative_now();
        let up = std::fs::read_to_string("/proc/uptime").unwrap();
        let up: f64 = up.split_whitespace().next().unwrap().parse().unwrap();
        assert!((a.as_secs_f64() - up).abs() < 5.0, "{a:?} vs {up}");
        assert!(boot_relative_now() >= a);
    }

    #[test]
    fn ticks() {
        assert_eq!(ns_to_ticks(1_000_000_000, 100), 100);
        assert_eq!(ns_to_ticks(19_999_999, 100), 1);
        assert_eq!(ns_to_ticks(u64::MAX, 100), u64::MAX / 10_000_000);
        assert_eq!(ns_to_ticks(u64::MAX, u64::MAX), u64::MAX);
    }
}
