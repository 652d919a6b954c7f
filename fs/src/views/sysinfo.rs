//! The figures of sysinfo(2) for a caller, taken from its own views.
//!
//! Not a file: the mount trap answers the `sysinfo` system call with these (see
//! `mounttrap::sysinfo`). They are read back from the caller's rendered `/proc/meminfo`,
//! `/proc/uptime` and `/proc/loadavg`, so that `free` (procps reads meminfo), busybox
//! `free` and `uptime` (sysinfo) and glibc's `get_phys_pages` (sysinfo) always agree with
//! the views, whatever shapes them:
//!
//! | field | from |
//! | --- | --- |
//! | `uptime` | the uptime view's first figure, rounded up to whole seconds as the kernel rounds |
//! | `loads` | the loadavg view's three averages (to its two decimals), in the kernel's 16-bit fixed point |
//! | `procs` | the loadavg view's task count (the container's cgroup: the tasks of its pid namespace) |
//! | `totalram`, `freeram`, `sharedram`, `bufferram` | MemTotal, MemFree, Shmem, Buffers of the meminfo view |
//! | `totalswap`, `freeswap` | SwapTotal, SwapFree of the meminfo view |
//!
//! Memory figures are kept in bytes here; the kernel's own scaling to `mem_unit` is in
//! `mounttrap::sysinfo`.

use super::ViewError;

/// sysinfo(2)'s figures, memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Figures {
    pub uptime_secs: u64,
    /// In the kernel's fixed point (`1 << SI_LOAD_SHIFT` is a load of 1).
    pub loads: [u64; 3],
    pub procs: u64,
    pub total_ram: u64,
    pub free_ram: u64,
    pub shared_ram: u64,
    pub buffer_ram: u64,
    pub total_swap: u64,
    pub free_swap: u64,
}

/// sysinfo's fixed point for loads (linux/kernel.h).
pub const SI_LOAD_SHIFT: u32 = 16;

fn malformed(path: &str, reason: impl Into<String>) -> ViewError {
    ViewError::Malformed { path: path.into(), reason: reason.into() }
}

/// "12.34" as hundredths (two decimals at most, as the views print them).
fn hundredths(path: &str, text: &str) -> Result<u64, ViewError> {
    let bad = || malformed(path, format!("{text:?} is not a decimal number"));
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || frac.len() > 2 {
        return Err(bad());
    }
    let int: u64 = int.parse().map_err(|_| bad())?;
    // "5" is 50 hundredths, "05" five.
    let frac = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(2)
        .fold(0, |acc, b| acc * 10 + u64::from(b - b'0'));
    int.checked_mul(100).and_then(|c| c.checked_add(frac)).ok_or_else(bad)
}

/// The figures from the caller's rendered views.
pub fn from_views(meminfo: &str, uptime: &str, loadavg: &str) -> Result<Figures, ViewError> {
    let mut f = Figures::default();

    let up = uptime.split_ascii_whitespace().next().unwrap_or("");
    f.uptime_secs = hundredths("/proc/uptime", up)?.div_ceil(100);

    let mut fields = loadavg.split_ascii_whitespace();
    for load in f.loads.iter_mut() {
        let h = hundredths("/proc/loadavg", fields.next().unwrap_or(""))?;
        *load = h.saturating_mul(1 << SI_LOAD_SHIFT) / 100;
    }
    let tasks = fields.next().and_then(|t| t.split_once('/')).map(|(_, total)| total);
    f.procs = tasks
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| malformed("/proc/loadavg", "no running/total field"))?;

    let mut total = None;
    for line in meminfo.lines() {
        let Some((name, rest)) = line.split_once(':') else { continue };
        let Some(kb) = rest.split_ascii_whitespace().next().and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        let bytes = kb.saturating_mul(1024);
        match name {
            "MemTotal" => total = Some(bytes),
            "MemFree" => f.free_ram = bytes,
            "Shmem" => f.shared_ram = bytes,
            "Buffers" => f.buffer_ram = bytes,
            "SwapTotal" => f.total_swap = bytes,
            "SwapFree" => f.free_swap = bytes,
            _ => {}
        }
    }
    f.total_ram = total.ok_or_else(|| malformed("/proc/meminfo", "no numeric MemTotal line"))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:         262144 kB\nMemFree:          200000 kB\n\
        MemAvailable:     230000 kB\nBuffers:               0 kB\nCached:            10000 kB\n\
        SwapTotal:        524288 kB\nSwapFree:         524000 kB\nShmem:              2048 kB\n";

    #[test]
    fn figures_come_from_the_views() {
        let f = from_views(MEMINFO, "12.01 20.00\n", "0.50 1.00 2.25 1/7 4567\n").unwrap();
        assert_eq!(f.total_ram, 256 << 20);
        assert_eq!(f.free_ram, 200000 * 1024);
        assert_eq!(f.shared_ram, 2 << 20);
        assert_eq!(f.buffer_ram, 0);
        assert_eq!(f.total_swap, 512 << 20);
        assert_eq!(f.free_swap, 524000 * 1024);
        // 12.01 s rounds up, as the kernel rounds a started second up.
        assert_eq!(f.uptime_secs, 13);
        assert_eq!(f.loads, [32768, 65536, 2 * 65536 + 16384]);
        assert_eq!(f.procs, 7);
        let f = from_views(MEMINFO, "12.00 1\n", "0.5 0 10.1 0/3 1\n").unwrap();
        assert_eq!(f.uptime_secs, 12);
        assert_eq!(f.loads, [32768, 0, 10 * 65536 + 6553]);
    }

    #[test]
    fn broken_views_are_errors() {
        let load = "0.00 0.00 0.00 1/2 3\n";
        assert!(from_views("MemFree: 1 kB\n", "1.00 1.00\n", load).is_err(), "no MemTotal");
        assert!(from_views(MEMINFO, "", load).is_err());
        assert!(from_views(MEMINFO, "-1.00 0\n", load).is_err());
        assert!(from_views(MEMINFO, "1.001 0\n", load).is_err());
        assert!(from_views(MEMINFO, "1.00 0\n", "0.00 0.00\n").is_err());
        assert!(from_views(MEMINFO, "1.00 0\n", "0.00 0.00 0.00 12 3\n").is_err());
        assert!(from_views(MEMINFO, "99999999999999999999.00 0\n", load).is_err());
    }
}
