//! `/proc/uptime` as seen from the caller's pid namespace.
//!
//! The host line is "UP IDLE\n", seconds with two decimals (the kernel truncates to
//! hundredths; IDLE is summed over all CPUs). For a caller in its own pid namespace
//! (`Caller::ns_init_start_ticks` is `Some`), UP is the age of that namespace's init:
//! host UP - init start time; IDLE is UP × visible CPUs - the cgroup's CPU time (user +
//! system), clamped to [0, UP × visible CPUs]; without CPU accounting the host's IDLE
//! scaled by UP / host UP, with the same clamp. All arithmetic is in integer hundredths,
//! so the output has the kernel's "%lu.%02lu %lu.%02lu\n" shape. A caller in the host's
//! pid namespace reads the host's bytes.

use super::{Request, ViewError};
use crate::host::clock_ticks;
use crate::host::fmt::push_centis;

const PATH: &str = "/proc/uptime";

/// The host's /proc/uptime, in hundredths of a second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostUptime<'a> {
    pub text: &'a str,
    pub up_centis: u64,
    pub idle_centis: u64,
}

/// Parses "UP IDLE\n" (each "S.FF", a missing or longer fraction is accepted).
pub fn parse(text: &str) -> Result<HostUptime<'_>, ViewError> {
    let mut f = text.split_ascii_whitespace();
    let (Some(up), Some(idle), None) = (f.next(), f.next(), f.next()) else {
        return Err(ViewError::Malformed { path: PATH.into(), reason: "expected 2 fields".into() });
    };
    let up_centis = parse_centis(up)?;
    let idle_centis = parse_centis(idle)?;
    Ok(HostUptime { text, up_centis, idle_centis })
}

/// "123.45" -> 12345 (extra decimals truncated, like the kernel).
fn parse_centis(s: &str) -> Result<u64, ViewError> {
    let bad = || ViewError::Malformed {
        path: PATH.into(),
        reason: format!("{s:?} is not a number of seconds"),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) {
        return Err(bad());
    }
    let int: u64 = int.parse().map_err(|_| bad())?;
    let mut f = frac.bytes().chain(std::iter::repeat(b'0')).take(2).map(|b| u64::from(b - b'0'));
    let hundredths = f.next().unwrap_or(0) * 10 + f.next().unwrap_or(0);
    int.checked_mul(100).and_then(|c| c.checked_add(hundredths)).ok_or_else(bad)
}

/// What the view needs besides the host file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UptimeInputs {
    /// Start of the caller's pid namespace init, in clock ticks since boot.
    pub ns_init_start_ticks: u64,
    /// Clock ticks per second ([`clock_ticks`]).
    pub clock_ticks: u64,
    /// CPUs the caller sees.
    pub visible_cpus: usize,
    /// CPU time (user + system) of the caller's cgroup, in ns; `None` without accounting.
    pub cpu_usage_ns: Option<u64>,
}

/// Renders the namespace's uptime line.
pub fn render(host: &HostUptime<'_>, v: &UptimeInputs) -> Vec<u8> {
    let hz = v.clock_ticks.max(1);
    let start =
        u64::try_from(u128::from(v.ns_init_start_ticks) * 100 / u128::from(hz)).unwrap_or(u64::MAX);
    let up = host.up_centis.saturating_sub(start);
    let max_idle = up.saturating_mul(v.visible_cpus.max(1) as u64);
    let idle = match v.cpu_usage_ns {
        Some(ns) => max_idle.saturating_sub(ns / 10_000_000),
        None if host.up_centis == 0 => 0,
        None => {
            let scaled = u128::from(host.idle_centis) * u128::from(up) / u128::from(host.up_centis);
            u64::try_from(scaled).unwrap_or(u64::MAX)
        }
    }
    .min(max_idle);
    let mut out = Vec::with_capacity(32);
    push_centis(&mut out, up);
    out.push(b' ');
    push_centis(&mut out, idle);
    out.push(b'\n');
    out
}

/// `/proc/uptime` for the caller.
pub fn generate(req: &Request<'_>) -> Result<Vec<u8>, ViewError> {
    let text = req.host.read("uptime")?;
    let Some(start) = req.caller.ns_init_start_ticks else { return Ok(text.into_bytes()) };
    let host = parse(&text)?;
    let pc = &req.caller.cgroups;
    let online = req.host.online_cpus()?;
    let visible = req.cgroups.cpu_limits(pc)?.visible_cpus(&online).len();
    let usage = req.cgroups.cpu_usage(pc)?;
    let inputs = UptimeInputs {
        ns_init_start_ticks: start,
        clock_ticks: clock_ticks(),
        visible_cpus: visible,
        cpu_usage_ns: usage.map(|u| u.user_ns.saturating_add(u.system_ns)),
    };
    Ok(render(&host, &inputs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM2: &str = include_str!("../../tests/fixtures/host/vm2/proc/uptime");
    const BIG4: &str = include_str!("../../tests/fixtures/host/big4/proc/uptime");

    fn s(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn parses() {
        let h = parse(BIG4).unwrap();
        assert_eq!((h.up_centis, h.idle_centis), (259383, 1034187));
        assert!(parse(VM2).is_ok());
        assert_eq!(parse("12 3.4567\n").unwrap().up_centis, 1200);
        assert_eq!(parse("12 3.4567\n").unwrap().idle_centis, 345);
        assert_eq!(parse("0.5 0.\n").unwrap().up_centis, 50);
    }

    #[test]
    fn namespace_uptime() {
        let h = parse(BIG4).unwrap(); // 2593.83 up, 10341.87 idle, 4 CPUs
        let mut v = UptimeInputs {
            ns_init_start_ticks: 193_383, // 1933.83 s after boot: 660 s old
            clock_ticks: 100,
            visible_cpus: 2,
            cpu_usage_ns: Some(100_500_000_000), // 100.5 s
        };
        assert_eq!(s(render(&h, &v)), "660.00 1219.50\n");
        // Usage beyond what the CPUs could do: idle 0; no usage: all idle.
        v.cpu_usage_ns = Some(u64::MAX);
        assert_eq!(s(render(&h, &v)), "660.00 0.00\n");
        v.cpu_usage_ns = Some(0);
        assert_eq!(s(render(&h, &v)), "660.00 1320.00\n");
        // No accounting: host idle scaled by 660/2593.83, capped at 2 CPUs' worth.
        v.cpu_usage_ns = None;
        assert_eq!(s(render(&h, &v)), "660.00 1320.00\n");
        v.visible_cpus = 4;
        assert_eq!(s(render(&h, &v)), "660.00 2631.48\n");
        // Init started "after now" (clock skew): 0.
        v.ns_init_start_ticks = u64::MAX;
        assert_eq!(s(render(&h, &v)), "0.00 0.00\n");
        // Other tick rates.
        v.ns_init_start_ticks = 1_933_830;
        v.clock_ticks = 1000;
        assert_eq!(s(render(&h, &v)), "660.00 2631.48\n");
        v.clock_ticks = 0;
        let _ = render(&h, &v);
    }

    #[test]
    fn zero_host_uptime() {
        let h = parse("0.00 0.00\n").unwrap();
        let v = UptimeInputs {
            ns_init_start_ticks: 0,
            clock_ticks: 100,
            visible_cpus: 0,
            cpu_usage_ns: None,
        };
        assert_eq!(s(render(&h, &v)), "0.00 0.00\n");
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [
            "",
            "1",
            "1 2 3",
            "a b",
            "1.2.3 4",
            "-1 2",
            ".5 1",
            "1 +2",
            "99999999999999999999 1",
            "1e3 1",
            "1,5 2",
        ] {
            assert!(matches!(parse(bad), Err(ViewError::Malformed { .. })), "{bad:?}");
        }
    }

    #[test]
    fn generate_end_to_end() {
        use crate::host::testenv::TestEnv;
        let mut env = TestEnv::new(
            "big4",
            &[
                ("cpuset.cpus.effective", "0-1\n"),
                ("cpu.stat", "usage_usec 100500000\nuser_usec 100000000\nsystem_usec 500000\n"),
            ],
        );
        assert_eq!(env.run(generate).unwrap(), BIG4);
        let hz = clock_ticks();
        env.caller.ns_init_start_ticks = Some(1933 * hz + 83 * hz / 100);
        assert_eq!(env.run(generate).unwrap(), "660.00 1219.50\n");
    }
}
