//! `/proc/stat` shaped by the caller's CPU limits and CPU accounting.
//!
//! The kernel's `show_stat` prints "cpu  " (two spaces) and the ten summed times (user
//! nice system idle iowait irq softirq steal guest guest_nice, in USER_HZ ticks), one
//! "cpuN" line per online CPU ("cpu%d" then " %llu" per field), then intr, ctxt, btime,
//! processes, procs_running, procs_blocked and softirq.
//!
//! For a caller that sees fewer CPUs than the host ([`CpuLimits::visible_cpus`]), the view
//! has lines cpu0..cpu(n-1) for the visible host CPUs, in order:
//! - with CPU accounting: user and system are the cgroup's, converted from ns to ticks;
//!   per CPU from `per_cpu` (v1 `cpuacct.usage_all`) of that host CPU when available and
//!   the CPU quota does not cut the cpuset down, otherwise the cgroup totals spread evenly
//!   over the visible CPUs (the remainder tick by tick from cpu0, so the lines add up to
//!   the totals); idle = that host CPU's total time - user - system (saturating), where
//!   the total is user + nice + system + idle + iowait + irq + softirq + steal (guest and
//!   guest_nice are already part of user and nice); every other field 0;
//! - without CPU accounting: the host CPU's own fields.
//!
//! The "cpu" line is the sum of the emitted per-CPU lines; every other line is the host's.
//! Lines keep the host's number of fields. A caller seeing all host CPUs reads the host's
//! bytes.
//!
//! [`CpuLimits::visible_cpus`]: crate::cgroup::CpuLimits::visible_cpus

use super::{Request, ViewError};
use crate::cgroup::{CpuLimits, CpuUsage};
use crate::host::fmt::push_u64;
use crate::host::{clock_ticks, ns_to_ticks};

const PATH: &str = "/proc/stat";

/// Most fields a cpu line has (since Linux 2.6.33).
pub const CPU_FIELDS: usize = 10;
/// Fewest fields accepted on a cpu line (user nice system idle).
const MIN_CPU_FIELDS: usize = 4;
/// Fields that make up a CPU's total time: user .. steal (guest is inside user).
const TOTAL_FIELDS: usize = 8;

const USER: usize = 0;
const SYSTEM: usize = 2;
const IDLE: usize = 3;

/// One host "cpuN" line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCpu {
    pub id: u32,
    /// The line's fields; those beyond the host's count are 0.
    pub fields: [u64; CPU_FIELDS],
}

impl HostCpu {
    /// The CPU's total time in ticks (user through steal).
    pub fn total(&self) -> u64 {
        self.fields[..TOTAL_FIELDS].iter().fold(0u64, |a, &v| a.saturating_add(v))
    }
}

/// The host's /proc/stat: its text, the field count of its cpu lines, its per-CPU lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStat<'a> {
    pub text: &'a str,
    /// Fields on the "cpu" line (10 on current kernels), at most [`CPU_FIELDS`].
    pub fields: usize,
    /// The "cpuN" lines, in the host's order.
    pub cpus: Vec<HostCpu>,
}

impl HostStat<'_> {
    fn cpu(&self, id: u32) -> Option<&HostCpu> {
        // Host lines are ascending by id; index first, search if that misses.
        match self.cpus.get(id as usize) {
            Some(c) if c.id == id => Some(c),
            _ => self.cpus.iter().find(|c| c.id == id),
        }
    }
}

/// What kind of line a /proc/stat line is.
enum Kind {
    Total,
    Cpu(u32),
    Other,
}

fn kind(line: &str) -> Kind {
    let Some(rest) = line.strip_prefix("cpu") else { return Kind::Other };
    if rest.starts_with(' ') {
        return Kind::Total;
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    match rest[..digits].parse() {
        Ok(id) if digits > 0 && rest[digits..].starts_with(' ') => Kind::Cpu(id),
        _ => Kind::Other,
    }
}

/// The numbers after the label of a cpu line.
fn cpu_fields(line: &str) -> Result<([u64; CPU_FIELDS], usize), ViewError> {
    let bad = |reason: &str| ViewError::Malformed {
        path: PATH.into(),
        reason: format!("{reason} in line {:?}", line.chars().take(80).collect::<String>()),
    };
    let mut fields = [0u64; CPU_FIELDS];
    let mut n = 0;
    for v in line.split_ascii_whitespace().skip(1) {
        let v = v.parse::<u64>().map_err(|_| bad("bad number"))?;
        if let Some(f) = fields.get_mut(n) {
            *f = v;
        }
        n += 1;
    }
    if n < MIN_CPU_FIELDS {
        return Err(bad("too few fields"));
    }
    Ok((fields, n.min(CPU_FIELDS)))
}

/// Parses the host file: it needs a "cpu " line; cpu lines must be numeric.
pub fn parse(text: &str) -> Result<HostStat<'_>, ViewError> {
    let mut fields = None;
    let mut cpus = Vec::new();
    for line in text.lines() {
        match kind(line) {
            Kind::Total => fields = Some(cpu_fields(line)?.1),
            Kind::Cpu(id) => cpus.push(HostCpu { id, fields: cpu_fields(line)?.0 }),
            Kind::Other => {}
        }
    }
    let fields = fields
        .ok_or_else(|| ViewError::Malformed { path: PATH.into(), reason: "no cpu line".into() })?;
    Ok(HostStat { text, fields, cpus })
}

/// Whether per-CPU accounting can be shown as is: the visible CPUs are the whole cpuset
/// (within `online`), not cut down to a quota's worth.
pub fn per_cpu_applies(limits: &CpuLimits, online: &[u32]) -> bool {
    let in_set = match &limits.cpuset {
        Some(set) => online.iter().filter(|c| set.contains(c)).count(),
        None => online.len(),
    };
    let in_set = if in_set == 0 { online.len() } else { in_set };
    limits.visible_cpus(online).len() == in_set
}

/// What the view needs besides the host file.
#[derive(Debug, Clone, Copy)]
pub struct StatInputs<'a> {
    /// Host CPUs the caller sees, ascending.
    pub visible: &'a [u32],
    /// The cgroup's CPU time; `None` without CPU accounting.
    pub usage: Option<&'a CpuUsage>,
    /// Whether `usage.per_cpu` may be used ([`per_cpu_applies`]).
    pub per_cpu: bool,
    /// Ticks per second of the output ([`clock_ticks`]).
    pub clock_ticks: u64,
}

/// `total` split over `n` parts, part `k`: the remainder goes one by one to the first.
fn share(total: u64, n: usize, k: usize) -> u64 {
    let n = n.max(1) as u64;
    total / n + u64::from((k as u64) < total % n)
}

fn write_line(out: &mut Vec<u8>, label: &[u8], fields: &[u64]) {
    out.extend_from_slice(label);
    for (i, &v) in fields.iter().enumerate() {
        if i > 0 || label == b"cpu " {
            out.push(b' ');
        }
        push_u64(out, v);
    }
    out.push(b'\n');
}

/// Renders the view for the visible CPUs.
pub fn render(host: &HostStat<'_>, v: &StatInputs<'_>) -> Vec<u8> {
    let n = v.visible.len();
    let hz = v.clock_ticks;
    let spread = v.usage.map(|u| (ns_to_ticks(u.user_ns, hz), ns_to_ticks(u.system_ns, hz)));
    let per_cpu = v.usage.and_then(|u| u.per_cpu.as_deref()).filter(|_| v.per_cpu);
    let mut lines: Vec<[u64; CPU_FIELDS]> = Vec::with_capacity(n);
    let mut sum = [0u64; CPU_FIELDS];
    for (k, &c) in v.visible.iter().enumerate() {
        let hc = host.cpu(c);
        let fields = match spread {
            None => hc.map_or([0; CPU_FIELDS], |h| h.fields),
            Some((user_t, sys_t)) => {
                let (user, system) = match per_cpu {
                    Some(pc) => {
                        let (u, s) = pc.get(c as usize).copied().unwrap_or((0, 0));
                        (ns_to_ticks(u, hz), ns_to_ticks(s, hz))
                    }
                    None => (share(user_t, n, k), share(sys_t, n, k)),
                };
                let total = hc.map_or(0, HostCpu::total);
                let mut f = [0; CPU_FIELDS];
                f[USER] = user;
                f[SYSTEM] = system;
                f[IDLE] = total.saturating_sub(user).saturating_sub(system);
                f
            }
        };
        for (s, f) in sum.iter_mut().zip(fields) {
            *s = s.saturating_add(f);
        }
        lines.push(fields);
    }
    let nf = host.fields;
    let mut out = Vec::with_capacity(host.text.len());
    write_line(&mut out, b"cpu ", &sum[..nf]);
    let mut label = Vec::with_capacity(16);
    for (k, fields) in lines.iter().enumerate() {
        label.clear();
        label.extend_from_slice(b"cpu");
        push_u64(&mut label, k as u64);
        label.push(b' ');
        write_line(&mut out, &label, &fields[..nf]);
    }
    for line in host.text.split_inclusive('\n') {
        if let Kind::Other = kind(line) {
            out.extend_from_slice(line.as_bytes());
        }
    }
    out
}

/// `/proc/stat` for the caller.
pub fn generate(req: &Request<'_>) -> Result<Vec<u8>, ViewError> {
    let text = req.host.read("stat")?;
    let pc = &req.caller.cgroups;
    let online = req.host.online_cpus()?;
    let limits = req.cgroups.cpu_limits(pc)?;
    let visible = limits.visible_cpus(&online);
    if visible.len() == online.len() {
        return Ok(text.into_bytes());
    }
    let usage = req.cgroups.cpu_usage(pc)?;
    let host = parse(&text)?;
    let inputs = StatInputs {
        visible: &visible,
        usage: usage.as_ref(),
        per_cpu: per_cpu_applies(&limits, &online),
        clock_ticks: clock_ticks(),
    };
    Ok(render(&host, &inputs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::CpuQuota;

    const VM2: &str = include_str!("../../tests/fixtures/host/vm2/proc/stat");
    const BIG4: &str = include_str!("../../tests/fixtures/host/big4/proc/stat");
    const SEC: u64 = 1_000_000_000;

    fn s(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

    fn tail(text: &str) -> String {
        text.lines().filter(|l| !l.starts_with("cpu")).map(|l| format!("{l}\n")).collect()
    }

    #[test]
    fn parses() {
        let h = parse(BIG4).unwrap();
        assert_eq!(h.fields, 10);
        assert_eq!(h.cpus.len(), 4);
        assert_eq!(h.cpus[2].fields, [1135, 96, 448, 258734, 330, 0, 14, 0, 0, 0]);
        assert_eq!(h.cpus[2].total(), 1135 + 96 + 448 + 258734 + 330 + 14);
        let h = parse(VM2).unwrap();
        assert_eq!((h.fields, h.cpus.len()), (10, 2));
    }

    #[test]
    fn all_cpus_without_accounting_is_host() {
        // Rendering every CPU from host fields reproduces the host file exactly.
        let h = parse(BIG4).unwrap();
        let v =
            StatInputs { visible: &[0, 1, 2, 3], usage: None, per_cpu: false, clock_ticks: 100 };
        assert_eq!(s(render(&h, &v)), BIG4);
        // On a real host the "cpu" line is converted from summed ns, so it may be off by a
        // tick or two from the sum of the cpuN lines; everything else is identical.
        let h = parse(VM2).unwrap();
        let v = StatInputs { visible: &[0, 1], ..v };
        let out = s(render(&h, &v));
        assert_eq!(out.split_once('\n').unwrap().1, VM2.split_once('\n').unwrap().1);
    }

    #[test]
    fn cpuset_without_accounting() {
        let h = parse(BIG4).unwrap();
        let v = StatInputs { visible: &[1, 3], usage: None, per_cpu: true, clock_ticks: 100 };
        let out = s(render(&h, &v));
        let expect = "cpu  2177 203 902 517584 562 0 32 0 0 0\n\
                      cpu0 1097 101 449 258648 268 0 17 0 0 0\n\
                      cpu1 1080 102 453 258936 294 0 15 0 0 0\n";
        assert_eq!(out, format!("{expect}{}", tail(BIG4)));
    }

    #[test]
    fn per_cpu_accounting() {
        let h = parse(BIG4).unwrap();
        let usage = CpuUsage {
            user_ns: 30 * SEC,
            system_ns: 12 * SEC,
            per_cpu: Some(vec![
                (SEC, SEC),
                (20 * SEC, 5 * SEC),
                (0, 0),
                (9 * SEC, 6 * SEC + 9_999_999),
            ]),
        };
        let v =
            StatInputs { visible: &[1, 3], usage: Some(&usage), per_cpu: true, clock_ticks: 100 };
        let out = s(render(&h, &v));
        let idle1 = (1097 + 101 + 449 + 258648 + 268 + 17) - 2000 - 500;
        let idle3 = (1080 + 102 + 453 + 258936 + 294 + 15) - 900 - 600;
        let expect = format!(
            "cpu  2900 0 1100 {} 0 0 0 0 0 0\ncpu0 2000 0 500 {idle1} 0 0 0 0 0 0\ncpu1 900 0 600 {idle3} 0 0 0 0 0 0\n",
            idle1 + idle3
        );
        assert_eq!(out, format!("{expect}{}", tail(BIG4)));
    }

    #[test]
    fn spread_accounting() {
        let h = parse(BIG4).unwrap();
        // v2: no per-CPU figures. 10.01 s user, 0.03 s system over 3 CPUs.
        let usage = CpuUsage { user_ns: 10_010_000_000, system_ns: 30_000_000, per_cpu: None };
        let v = StatInputs {
            visible: &[0, 1, 2],
            usage: Some(&usage),
            per_cpu: true,
            clock_ticks: 100,
        };
        let out = s(render(&h, &v));
        let l: Vec<&str> = out.lines().collect();
        assert_eq!(l[1], format!("cpu0 334 0 1 {} 0 0 0 0 0 0", h.cpus[0].total() - 335));
        assert_eq!(l[2], format!("cpu1 334 0 1 {} 0 0 0 0 0 0", h.cpus[1].total() - 335));
        assert_eq!(l[3], format!("cpu2 333 0 1 {} 0 0 0 0 0 0", h.cpus[2].total() - 334));
        assert!(l[0].starts_with("cpu  1001 0 3 "));
        assert_eq!(
            l[4],
            "intr 1212883 9 0 0 0 0 0 0 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0"
        );
        // Quota narrowing: per_cpu present but not applicable -> spread.
        let usage = CpuUsage { per_cpu: Some(vec![(SEC, 0); 4]), ..usage };
        let v2 = StatInputs { usage: Some(&usage), per_cpu: false, ..v };
        assert_eq!(render(&h, &v2), out.into_bytes());
        // Usage beyond the host CPU's total: idle 0, no panic.
        let huge = CpuUsage { user_ns: u64::MAX, system_ns: u64::MAX, per_cpu: None };
        let v3 = StatInputs { usage: Some(&huge), visible: &[0, 9], ..v };
        let out = s(render(&h, &v3));
        let cpu0: Vec<&str> = out.lines().nth(1).unwrap().split(' ').collect();
        assert_eq!(
            cpu0[1..],
            ["922337203685", "0", "922337203685", "0", "0", "0", "0", "0", "0", "0"]
        );
    }

    #[test]
    fn per_cpu_rule() {
        let online = [0, 1, 2, 3];
        let q = |cpus: u64| Some(CpuQuota { quota_us: cpus * 100_000, period_us: 100_000 });
        assert!(per_cpu_applies(&CpuLimits { cpuset: Some(vec![1, 2]), quota: None }, &online));
        assert!(per_cpu_applies(&CpuLimits { cpuset: Some(vec![1, 2]), quota: q(2) }, &online));
        assert!(!per_cpu_applies(&CpuLimits { cpuset: Some(vec![1, 2]), quota: q(1) }, &online));
        assert!(!per_cpu_applies(&CpuLimits { cpuset: None, quota: q(3) }, &online));
        assert!(per_cpu_applies(&CpuLimits { cpuset: Some(vec![9]), quota: None }, &online));
    }

    #[test]
    fn old_kernel_field_count() {
        let host = "cpu  10 20 30 40 50 60 70\ncpu0 5 10 15 20 25 30 35\ncpu1 5 10 15 20 25 30 35\nctxt 1\n";
        let h = parse(host).unwrap();
        assert_eq!(h.fields, 7);
        let v = StatInputs { visible: &[1], usage: None, per_cpu: true, clock_ticks: 100 };
        assert_eq!(
            s(render(&h, &v)),
            "cpu  5 10 15 20 25 30 35\ncpu0 5 10 15 20 25 30 35\nctxt 1\n"
        );
    }

    #[test]
    fn garbage() {
        for bad in [
            "",
            "garbage",
            "intr 1\n",
            "cpu  a b c d\n",
            "cpu  1 2 3\n",
            "cpu  1 2 3 4\ncpu0 1 2 x 4\n",
            "cpu  1 2 3 4 -5\n",
        ] {
            assert!(matches!(parse(bad), Err(ViewError::Malformed { .. })), "{bad:?}");
        }
        // Lines that merely start with "cpu" pass through.
        let h = parse("cpu  1 2 3 4\ncpufoo 1\ncpu7x 2\ncpu99999999999 1 2 3 4\n").unwrap();
        assert!(h.cpus.is_empty());
        let v = StatInputs { visible: &[0], usage: None, per_cpu: true, clock_ticks: 0 };
        assert_eq!(
            s(render(&h, &v)),
            "cpu  0 0 0 0\ncpu0 0 0 0 0\ncpufoo 1\ncpu7x 2\ncpu99999999999 1 2 3 4\n"
        );
    }

    #[test]
    fn generate_end_to_end() {
        use crate::host::testenv::TestEnv;
        let env = TestEnv::new("big4", &[]);
        assert_eq!(env.run(generate).unwrap(), BIG4);
        // v2: spread over the visible CPUs.
        let cpu_stat = "usage_usec 4000000\nuser_usec 3000000\nsystem_usec 1000000\n";
        let env =
            TestEnv::new("big4", &[("cpuset.cpus.effective", "2-3\n"), ("cpu.stat", cpu_stat)]);
        let out = env.run(generate).unwrap();
        let h = parse(BIG4).unwrap();
        let hz = clock_ticks();
        let (u, sy) = (3 * hz / 2, hz / 2);
        assert_eq!(
            out.lines().nth(1).unwrap(),
            format!("cpu0 {u} 0 {sy} {} 0 0 0 0 0 0", h.cpus[2].total() - u - sy)
        );
        assert_eq!(
            out.lines().nth(2).unwrap(),
            format!("cpu1 {u} 0 {sy} {} 0 0 0 0 0 0", h.cpus[3].total() - u - sy)
        );
        assert!(out.ends_with(&tail(BIG4)));
        let env =
            TestEnv::new("big4", &[("cpu.stat", "garbage\n"), ("cpu.max", "100000 100000\n")]);
        assert!(env.run(generate).is_err());
    }
}
