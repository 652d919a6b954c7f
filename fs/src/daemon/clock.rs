//! Wall-clock times (what the runtime sends) to boot-relative clock ticks (what the views
//! and /proc/PID/stat use).
//!
//! /proc/uptime and a process's start time count from boot on CLOCK_BOOTTIME (suspend
//! included). The boot instant on the wall clock is CLOCK_REALTIME - CLOCK_BOOTTIME, so a
//! wall-clock time T is (T - that) after boot. The conversion is done once, when a container
//! is registered: a later step of the wall clock (NTP) does not move its uptime.

use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

use crate::host::clock_ticks;

/// `unix_ms` (milliseconds since the Unix epoch) as clock ticks since boot on this host now.
/// A time before boot is 0; a time in the future is in the future (its uptime reads 0).
pub fn unix_ms_to_boot_ticks(unix_ms: u64) -> u64 {
    let (realtime, boottime) =
        match (clock_gettime(ClockId::CLOCK_REALTIME), clock_gettime(ClockId::CLOCK_BOOTTIME)) {
            (Ok(r), Ok(b)) => (Duration::from(r), Duration::from(b)),
            // Neither clock can fail on Linux with these ids; if they did, the container would
            // count from boot.
            _ => return 0,
        };
    convert(unix_ms, realtime, boottime, clock_ticks())
}

/// The conversion, on given clock readings and tick rate.
pub fn convert(unix_ms: u64, realtime: Duration, boottime: Duration, hz: u64) -> u64 {
    let boot_at_ns = realtime.as_nanos().saturating_sub(boottime.as_nanos());
    let at_ns = u128::from(unix_ms) * 1_000_000;
    let since_boot_ns = at_ns.saturating_sub(boot_at_ns);
    since_boot_ns
        .checked_mul(u128::from(hz))
        .and_then(|t| u64::try_from(t / 1_000_000_000).ok())
        .unwrap_or(u64::MAX)
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_wall_clock_to_ticks_since_boot() {
        // Booted at 1_000_000.000 s on the wall clock; now 1_000_500.250 s (500.25 s up).
        let realtime = Duration::from_millis(1_000_500_250);
        let boottime = Duration::from_millis(500_250);
        assert_eq!(convert(1_000_100_000, realtime, boottime, 100), 10_000);
        assert_eq!(convert(1_000_100_005, realtime, boottime, 100), 10_000);
        assert_eq!(convert(1_000_100_010, realtime, boottime, 100), 10_001);
        assert_eq!(convert(1_000_100_000, realtime, boottime, 1000), 100_000);
        // Before boot: 0. In the future: beyond now.
        assert_eq!(convert(999_000_000, realtime, boottime, 100), 0);
        assert_eq!(convert(0, realtime, boottime, 100), 0);
        assert_eq!(convert(1_000_600_000, realtime, boottime, 100), 60_000);
        assert_eq!(convert(u64::MAX, realtime, boottime, 100), u64::MAX / 10 - 100_000_000);
        assert_eq!(convert(u64::MAX, realtime, boottime, u64::MAX), u64::MAX);
    }

    #[test]
    fn now_is_about_now_since_boot() {
        let hz = clock_ticks();
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|t| t.split_whitespace().next().and_then(|u| u.parse().ok()))
            .expect("/proc/uptime");
        let ticks = unix_ms_to_boot_ticks(now_unix_ms());
        let expected = (uptime * hz as f64) as u64;
        assert!(ticks.abs_diff(expected) <= 2 * hz, "{ticks} vs {expected}");
        // An hour ago is an hour of ticks earlier (clamped at boot).
        let hour_ago = unix_ms_to_boot_ticks(now_unix_ms() - 3_600_000);
        assert!(hour_ago.abs_diff(expected.saturating_sub(3600 * hz)) <= 2 * hz);
    }
}
