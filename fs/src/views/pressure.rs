//! `/proc/pressure/{cpu,memory,io}`: the pressure stall information (PSI) of the caller's
//! cgroup instead of the host's.
//!
//! The kernel's `psi_show` prints one line per kind, `some` and then `full`:
//! `"%s avg10=%lu.%02lu avg60=%lu.%02lu avg300=%lu.%02lu total=%llu\n"` (averages in
//! percent with two decimals, `total` the stall time in microseconds). A cgroup's
//! `cpu.pressure`, `memory.pressure` and `io.pressure` on the unified hierarchy have the
//! same layout, and the kernel accounts them on cgroup v2 and on hybrid hosts alike (the
//! unified hierarchy follows every task, with or without controllers).
//!
//! - A caller in a cgroup of the unified hierarchy reads its cgroup's file, checked and
//!   printed in the kernel's layout (as LXCFS 7 serves it).
//! - A caller in the root of the unified hierarchy (the host) reads the host's bytes.
//! - A caller without per-cgroup figures (a pure cgroup v1 host, PSI turned off for the
//!   cgroup) gets ENOENT ([`ViewError::Absent`]): the host's pressure is never shown to
//!   a container, and "no such file" is what a kernel without PSI answers.
//!
//! Not pollable: the views are read-only, so LXCFS 7's poll triggers (writing
//! `some 150000 1000000` and polling for POLLPRI) are refused (EACCES at open for
//! writing). A monitor that needs triggers (systemd-oomd, lmkd) uses the cgroup's own
//! file in `/sys/fs/cgroup`, which the kernel serves with triggers.

use super::{Request, ViewError};
use crate::cgroup::PressureSource;
use crate::host::fmt::push_u64;

/// The resources the kernel reports, as named in `/proc/pressure/` and in the cgroup files.
pub const RESOURCES: [&str; 3] = ["cpu", "memory", "io"];

/// One line of a pressure file. Averages are hundredths of a percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PsiLine {
    /// `true` for `full`, `false` for `some`.
    pub full: bool,
    pub avg10: u64,
    pub avg60: u64,
    pub avg300: u64,
    /// Total stall time, microseconds.
    pub total: u64,
}

/// Parses a pressure file: one `some` line, optionally one `full` line, in that order.
pub fn parse(text: &str) -> Result<Vec<PsiLine>, String> {
    let mut lines = Vec::with_capacity(2);
    for line in text.lines() {
        let mut fields = line.split(' ');
        let full = match fields.next() {
            Some("some") if lines.is_empty() => false,
            Some("full") if lines.len() == 1 => true,
            _ => return Err(format!("unexpected line {line:?}")),
        };
        let mut value = |key: &str| -> Result<&str, String> {
            fields
                .next()
                .and_then(|f| f.strip_prefix(key))
                .and_then(|f| f.strip_prefix('='))
                .ok_or_else(|| format!("no {key} in {line:?}"))
        };
        let avg10 = parse_percent(value("avg10")?)?;
        let avg60 = parse_percent(value("avg60")?)?;
        let avg300 = parse_percent(value("avg300")?)?;
        let total = value("total")?;
        let total = total.parse().map_err(|_| format!("bad total {total:?}"))?;
        if fields.next().is_some() {
            return Err(format!("extra fields in {line:?}"));
        }
        lines.push(PsiLine { full, avg10, avg60, avg300, total });
    }
    if lines.is_empty() {
        return Err("no some line".into());
    }
    Ok(lines)
}

/// `12.34` as 1234 (the kernel always prints two decimals).
fn parse_percent(s: &str) -> Result<u64, String> {
    let bad = || format!("bad average {s:?}");
    let (int, frac) = s.split_once('.').ok_or_else(bad)?;
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.len() != 2 || !digits(frac) {
        return Err(bad());
    }
    let int: u64 = int.parse().map_err(|_| bad())?;
    let frac: u64 = frac.parse().map_err(|_| bad())?;
    int.checked_mul(100).and_then(|v| v.checked_add(frac)).ok_or_else(bad)
}

/// The lines in the kernel's layout.
pub fn render(lines: &[PsiLine]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * lines.len());
    for line in lines {
        out.extend_from_slice(if line.full { b"full" } else { b"some" });
        for (key, avg) in
            [(" avg10=", line.avg10), (" avg60=", line.avg60), (" avg300=", line.avg300)]
        {
            out.extend_from_slice(key.as_bytes());
            push_u64(&mut out, avg / 100);
            out.push(b'.');
            let frac = avg % 100;
            if frac < 10 {
                out.push(b'0');
            }
            push_u64(&mut out, frac);
        }
        out.extend_from_slice(b" total=");
        push_u64(&mut out, line.total);
        out.push(b'\n');
    }
    out
}

/// The view of `/proc/pressure/RESOURCE` for the caller.
fn generate_for(req: &Request<'_>, resource: &str) -> Result<Vec<u8>, ViewError> {
    let host_path = format!("pressure/{resource}");
    match req.cgroups.pressure(&req.caller.cgroups, resource)? {
        PressureSource::Host => Ok(req.host.read(&host_path)?.into_bytes()),
        PressureSource::Cgroup(text) => {
            let lines = parse(&text).map_err(|reason| ViewError::Malformed {
                path: format!("{resource}.pressure of the caller's cgroup"),
                reason,
            })?;
            Ok(render(&lines))
        }
        PressureSource::Unavailable => Err(ViewError::Absent(format!("/proc/{host_path}"))),
    }
}

pub fn generate_cpu(req: &Request<'_>) -> Result<Vec<u8>, ViewError> {
    generate_for(req, "cpu")
}

pub fn generate_memory(req: &Request<'_>) -> Result<Vec<u8>, ViewError> {
    generate_for(req, "memory")
}

pub fn generate_io(req: &Request<'_>) -> Result<Vec<u8>, ViewError> {
    generate_for(req, "io")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CGROUP_CPU: &str = "some avg10=1.52 avg60=0.40 avg300=0.09 total=1734592\n\
                              full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";

    #[test]
    fn round_trips_the_kernels_layout() {
        let lines = parse(CGROUP_CPU).unwrap();
        assert_eq!(
            lines[0],
            PsiLine { full: false, avg10: 152, avg60: 40, avg300: 9, total: 1_734_592 }
        );
        assert!(lines[1].full);
        assert_eq!(render(&lines), CGROUP_CPU.as_bytes());
        // A kernel before 5.13 prints no full line for cpu.
        let some = "some avg10=100.00 avg60=12.05 avg300=0.00 total=18446744073709551615\n";
        assert_eq!(render(&parse(some).unwrap()), some.as_bytes());
    }

    #[test]
    fn the_vms_host_files_parse() {
        for resource in RESOURCES {
            let path = format!(
                "{}/tests/fixtures/host/vm2/proc/pressure/{resource}",
                env!("CARGO_MANIFEST_DIR")
            );
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(render(&parse(&text).unwrap()), text.as_bytes(), "{resource}");
        }
    }

    #[test]
    fn generate_end_to_end() {
        use crate::host::testenv::TestEnv;
        // A container's cgroup: its own figures.
        let env = TestEnv::new("vm2", &[("cpu.pressure", CGROUP_CPU)]);
        assert_eq!(env.run(generate_cpu).unwrap(), CGROUP_CPU);
        // No such file for the cgroup (PSI off for it): absent, never the host's.
        assert!(matches!(env.run(generate_memory), Err(ViewError::Absent(_))));
        // Garbage from the cgroup: an error (EIO), not a guess.
        let env = TestEnv::new("vm2", &[("io.pressure", "some avg10=1\n")]);
        assert!(matches!(env.run(generate_io), Err(ViewError::Malformed { .. })));
        // The root of the unified hierarchy (the host): the host's bytes.
        let env = TestEnv::with_path("vm2", "/", &[]);
        assert_eq!(env.run(generate_io).unwrap(), env.host_file("pressure/io"));
    }

    #[test]
    fn without_a_unified_hierarchy_there_is_nothing_to_show() {
        use crate::caller::Caller;
        use crate::cgroup::{Cgroups, Layout, ProcCgroups};
        use crate::host::testenv::TestEnv;
        let env = TestEnv::new("vm2", &[]);
        let mountinfo = "30 1 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let cgroups = Cgroups::new(Layout::from_mountinfo(mountinfo).unwrap());
        let pc = ProcCgroups::parse("4:memory:/docker/x\n").unwrap();
        let caller = Caller { cgroups: std::sync::Arc::new(pc), ..env.caller.clone() };
        let req = Request { cgroups: &cgroups, caller: &caller, ..env.request() };
        assert!(matches!(generate_cpu(&req), Err(ViewError::Absent(_))));
    }

    #[test]
    fn malformed_files_are_refused() {
        for bad in [
            "",
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            "some avg10=0.00 avg60=0.00 avg300=0.00\n",
            "some avg10=0.0 avg60=0.00 avg300=0.00 total=0\n",
            "some avg10=x.00 avg60=0.00 avg300=0.00 total=0\n",
            "some avg60=0.00 avg10=0.00 avg300=0.00 total=0\n",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=-1\n",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=0 x\n",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nsome avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            "some avg10=99999999999999999999.00 avg60=0.00 avg300=0.00 total=0\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
