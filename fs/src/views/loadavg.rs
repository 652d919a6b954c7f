//! `/proc/loadavg` with the caller's cgroup's load averages, and the kernel's
//! fixed-point load arithmetic the background sampler uses to compute them.
//!
//! The host line is "0.00 0.01 0.05 1/123 4567\n": three averages, running/total
//! threads, the last pid allocated. With a [`CgroupLoad`] the first four fields are the
//! cgroup's, formatted as the kernel's `loadavg_proc_show` does (rounded to hundredths
//! by adding `FIXED_1/200` first); the last pid stays the host's. When the tracker has
//! no figures for the cgroup yet (`None`) the caller reads the host's bytes.

use super::{Request, ViewError};
use crate::host::fmt::push_u64;
use crate::loadavg::CgroupLoad;

const PATH: &str = "/proc/loadavg";

/// Bits of fraction in the kernel's fixed-point load averages.
pub const FSHIFT: u32 = 11;
/// 1.0 in fixed point.
pub const FIXED_1: u64 = 1 << FSHIFT;
/// 1/exp(5s/1min) in fixed point.
pub const EXP_1: u64 = 1884;
/// 1/exp(5s/5min) in fixed point.
pub const EXP_5: u64 = 2014;
/// 1/exp(5s/15min) in fixed point.
pub const EXP_15: u64 = 2037;
/// How often the kernel (and the sampler) folds the active count in: every 5 seconds.
pub const LOAD_FREQ_SECS: u64 = 5;

/// One step of the kernel's exponential moving average (`calc_load`): `load` and
/// `active` are fixed point (`active` = runnable + uninterruptible tasks × [`FIXED_1`]),
/// `exp` one of [`EXP_1`], [`EXP_5`], [`EXP_15`]. Rounds up while the load rises, so a
/// steady load converges to it. Saturates instead of overflowing.
pub fn calc_load(load: u64, exp: u64, active: u64) -> u64 {
    let exp = exp.min(FIXED_1);
    let mut newload = load.saturating_mul(exp).saturating_add(active.saturating_mul(FIXED_1 - exp));
    if active >= load {
        newload = newload.saturating_add(FIXED_1 - 1);
    }
    newload / FIXED_1
}

/// Integer part of a fixed-point value.
pub fn load_int(x: u64) -> u64 {
    x >> FSHIFT
}

/// Hundredths of a fixed-point value.
pub fn load_frac(x: u64) -> u64 {
    ((x & (FIXED_1 - 1)) * 100) >> FSHIFT
}

/// The host's /proc/loadavg: its text and its last field (the last pid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLoadavg<'a> {
    pub text: &'a str,
    pub last_pid: &'a str,
}

/// Parses the host file: five whitespace-separated fields, the fourth "running/total".
pub fn parse(text: &str) -> Result<HostLoadavg<'_>, ViewError> {
    let bad = |reason: &str| ViewError::Malformed { path: PATH.into(), reason: reason.into() };
    let mut f = text.split_ascii_whitespace();
    let (Some(_), Some(_), Some(_), Some(threads), Some(last_pid), None) =
        (f.next(), f.next(), f.next(), f.next(), f.next(), f.next())
    else {
        return Err(bad("expected 5 fields"));
    };
    if !threads.contains('/') {
        return Err(bad("4th field is not running/total"));
    }
    if last_pid.is_empty() || !last_pid.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("last pid is not a number"));
    }
    Ok(HostLoadavg { text, last_pid })
}

/// Renders the view: the host's bytes for `None`, else the cgroup's load line.
pub fn render(host: &HostLoadavg<'_>, load: Option<&CgroupLoad>) -> Vec<u8> {
    let Some(l) = load else { return host.text.as_bytes().to_vec() };
    let mut out = Vec::with_capacity(48);
    for (i, &avg) in l.avg.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        let x = avg.saturating_add(FIXED_1 / 200);
        push_u64(&mut out, load_int(x));
        out.push(b'.');
        let frac = load_frac(x);
        out.push(b'0' + (frac / 10) as u8);
        out.push(b'0' + (frac % 10) as u8);
    }
    out.push(b' ');
    push_u64(&mut out, u64::from(l.running));
    out.push(b'/');
    push_u64(&mut out, u64::from(l.total));
    out.push(b' ');
    out.extend_from_slice(host.last_pid.as_bytes());
    out.push(b'\n');
    out
}

/// `/proc/loadavg` for the caller.
pub fn generate(req: &Request<'_>) -> Result<Vec<u8>, ViewError> {
    let text = req.host.read("loadavg")?;
    let Some(load) = req.loadavg.load(&req.caller.cgroups) else {
        return Ok(text.into_bytes());
    };
    let host = parse(&text)?;
    Ok(render(&host, Some(&load)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM2: &str = include_str!("../../tests/fixtures/host/vm2/proc/loadavg");
    const BIG4: &str = include_str!("../../tests/fixtures/host/big4/proc/loadavg");

    #[test]
    fn host_passthrough() {
        for t in [VM2, BIG4] {
            assert_eq!(render(&parse(t).unwrap(), None), t.as_bytes());
        }
        assert_eq!(parse(BIG4).unwrap().last_pid, "21334");
    }

    #[test]
    fn formats_like_the_kernel() {
        let h = parse(BIG4).unwrap();
        let load = CgroupLoad { avg: [0, FIXED_1 / 2, 3 * FIXED_1 + 2047], running: 2, total: 17 };
        assert_eq!(render(&h, Some(&load)), b"0.00 0.50 4.00 2/17 21334\n");
        // 1.234 rounds to 1.23, 0.996 to 1.00 (FIXED_1/200 added first).
        let load = CgroupLoad { avg: [2527, 2040, 20], running: 0, total: 0 };
        assert_eq!(render(&h, Some(&load)), b"1.23 1.00 0.01 0/0 21334\n");
        let load = CgroupLoad { avg: [u64::MAX; 3], running: u32::MAX, total: u32::MAX };
        let out = String::from_utf8(render(&h, Some(&load))).unwrap();
        assert!(out.starts_with("9007199254740991.99 "), "{out}");
        assert!(out.ends_with(" 4294967295/4294967295 21334\n"));
    }

    #[test]
    fn calc_load_matches_kernel() {
        // One runnable task from idle: the 1-minute average after one 5 s step.
        assert_eq!(calc_load(0, EXP_1, FIXED_1), (FIXED_1 * (FIXED_1 - EXP_1)).div_ceil(FIXED_1));
        assert_eq!(calc_load(0, EXP_1, FIXED_1), 164);
        // Decay towards zero, truncating.
        assert_eq!(calc_load(FIXED_1, EXP_1, 0), EXP_1);
        assert_eq!(calc_load(0, EXP_15, 0), 0);
        // A steady load converges to itself, from below and above.
        let mut l = 0;
        for _ in 0..2000 {
            l = calc_load(l, EXP_1, 2 * FIXED_1);
        }
        assert_eq!(l, 2 * FIXED_1);
        let mut l = 10 * FIXED_1;
        for _ in 0..2000 {
            l = calc_load(l, EXP_5, 2 * FIXED_1);
        }
        assert!((2 * FIXED_1..=2 * FIXED_1 + 1).contains(&l), "{l}");
        assert_eq!(calc_load(u64::MAX, EXP_1, u64::MAX), u64::MAX / FIXED_1);
        assert_eq!(calc_load(5, u64::MAX, 0), 5);
        assert_eq!(
            (load_int(3 * FIXED_1 + FIXED_1 / 4), load_frac(3 * FIXED_1 + FIXED_1 / 4)),
            (3, 25)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [
            "",
            "garbage",
            "0.00 0.01 0.05 1/123",
            "0.00 0.01 0.05 1-123 4567\n",
            "a b c d/e f\n",
            "0.00 0.01 0.05 1/123 4567 8\n",
            "0.00 0.01 0.05 1/123 -1\n",
        ] {
            assert!(matches!(parse(bad), Err(ViewError::Malformed { .. })), "{bad:?}");
        }
    }

    #[test]
    fn generate_end_to_end() {
        use crate::host::testenv::TestEnv;
        let env = TestEnv::new("big4", &[]);
        assert_eq!(env.run(generate).unwrap(), "0.00 0.00 0.00 0/0 21334\n");
        let env = TestEnv::with_path("big4", "/", &[]);
        assert_eq!(env.run(generate).unwrap(), BIG4);
    }
}
