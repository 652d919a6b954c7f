//! `/sys/devices/system/cpu/{online,present,possible}` shaped by the caller's cpuset and
//! CPU quota.
//!
//! A caller that sees `n` CPUs (see [`CpuLimits::visible_cpus`]) reads "0-(n-1)\n"
//! ("0\n" for one) in each: the visible CPUs renumbered from 0, as in the cpuinfo and
//! stat views, and the only CPUs it can ever get (no hot-plug slots beyond them).
//! glibc's `get_nprocs` reads `online`, its `get_nprocs_conf` (`nproc --all` of
//! coreutils) `possible`, lscpu all three; Python's `os.cpu_count`, the JVM and Go read
//! `online`. A caller without a CPU limit reads the host's bytes of each.
//!
//! [`CpuLimits::visible_cpus`]: crate::cgroup::CpuLimits::visible_cpus

use super::{Request, ViewError};
use crate::host::fmt::push_u64;
use crate::host::{online_from_text, ONLINE_CPUS};

/// The view for `n` visible CPUs: "0-(n-1)\n", "0\n" for one; `n == 0` counts as one.
pub fn render(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.push(b'0');
    if n > 1 {
        out.push(b'-');
        push_u64(&mut out, (n - 1) as u64);
    }
    out.push(b'\n');
    out
}

/// `/sys/devices/system/cpu/online` for the caller.
pub fn generate(req: &Request<'_>) -> Result<Vec<u8>, ViewError> {
    generate_list(req, ONLINE_CPUS)
}

/// `/sys/devices/system/cpu/present` for the caller.
pub fn generate_present(req: &Request<'_>) -> Result<Vec<u8>, ViewError> {
    generate_list(req, PRESENT_CPUS)
}

/// `/sys/devices/system/cpu/possible` for the caller.
pub fn generate_possible(req: &Request<'_>) -> Result<Vec<u8>, ViewError> {
    generate_list(req, POSSIBLE_CPUS)
}

const PRESENT_CPUS: &str = "devices/system/cpu/present";
const POSSIBLE_CPUS: &str = "devices/system/cpu/possible";

/// The CPU list file `file` (below the sys root) for the caller: [`render`] of the CPUs it
/// sees when its limits hide some of the online ones, else the host's bytes of `file`.
fn generate_list(req: &Request<'_>, file: &str) -> Result<Vec<u8>, ViewError> {
    let online_text = req.host.read_sys(ONLINE_CPUS)?;
    let online = online_from_text(&online_text).map_err(|reason| ViewError::Malformed {
        path: req.host.sys_root.join(ONLINE_CPUS).display().to_string(),
        reason,
    })?;
    let limits = req.cgroups.cpu_limits(&req.caller.cgroups)?;
    let visible = limits.visible_cpus(&online);
    if visible.len() == online.len() {
        return match file {
            ONLINE_CPUS => Ok(online_text.into_bytes()),
            _ => Ok(req.host.read_sys(file)?.into_bytes()),
        };
    }
    Ok(render(visible.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::{CpuLimits, CpuQuota};

    #[test]
    fn renders() {
        assert_eq!(render(1), b"0\n");
        assert_eq!(render(0), b"0\n");
        assert_eq!(render(2), b"0-1\n");
        assert_eq!(render(64), b"0-63\n");
        assert_eq!(render(usize::MAX), format!("0-{}\n", usize::MAX - 1).as_bytes());
    }

    #[test]
    fn from_limits() {
        let online = online_from_text("0-3\n").unwrap();
        let half = CpuQuota { quota_us: 150_000, period_us: 100_000 };
        let l = CpuLimits { cpuset: Some(vec![1, 3]), quota: None };
        assert_eq!(render(l.visible_cpus(&online).len()), b"0-1\n");
        let l = CpuLimits { cpuset: None, quota: Some(half) };
        assert_eq!(render(l.visible_cpus(&online).len()), b"0-1\n");
        let l = CpuLimits { cpuset: Some(vec![2]), quota: Some(half) };
        assert_eq!(render(l.visible_cpus(&online).len()), b"0\n");
        assert!(!CpuLimits::default().is_limited(&online));
    }

    #[test]
    fn generate_end_to_end() {
        use crate::host::testenv::TestEnv;
        let env = TestEnv::new("big4", &[("cpu.max", "max 100000\n")]);
        assert_eq!(env.run(generate).unwrap(), "0-3\n");
        let env = TestEnv::new("big4", &[("cpuset.cpus.effective", "1,3\n")]);
        assert_eq!(env.run(generate).unwrap(), "0-1\n");
        let env = TestEnv::new("big4", &[("cpu.max", "50000 100000\n")]);
        assert_eq!(env.run(generate).unwrap(), "0\n");
        let env = TestEnv::new("vm2", &[("cpu.max", "200000 100000\n")]);
        assert_eq!(env.run(generate).unwrap(), env.host_file("sys/devices/system/cpu/online"));
    }

    #[test]
    fn present_and_possible_follow_the_view() {
        use crate::host::testenv::TestEnv;
        let env = TestEnv::new("big4", &[("cpuset.cpus.effective", "1,3\n")]);
        assert_eq!(env.run(generate_present).unwrap(), "0-1\n");
        assert_eq!(env.run(generate_possible).unwrap(), "0-1\n");
        let env = TestEnv::new("big4", &[("cpu.max", "50000 100000\n")]);
        assert_eq!(env.run(generate_possible).unwrap(), "0\n");
        // Unlimited: the host's own files, hot-plug slots included.
        let env = TestEnv::new("big4", &[("cpu.max", "max 100000\n")]);
        let present = env.host_file("sys/devices/system/cpu/present");
        assert_eq!(env.run(generate_present).unwrap(), present);
        let possible = env.host_file("sys/devices/system/cpu/possible");
        assert_eq!(env.run(generate_possible).unwrap(), possible);
    }
}
