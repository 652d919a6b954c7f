//! The kernel's cpu-list format (`host::cpulist`): `parse_cpu_list` never panics and gives
//! ascending, unique CPUs that format and parse back unchanged; it agrees with the cgroup
//! reader's `parse_cpuset_list` where both accept; any CPU set formats to a list that
//! parses back to it; `cpu_online::render(n)` parses to 0..n; `CpuLimits::visible_cpus`
//! stays within the online CPUs.
//!
//! Input: the text of a list; the same bytes, as little-endian u16s, also give a CPU set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysvisor_fs::cgroup::{v1, CpuLimits, CpuQuota};
use sysvisor_fs::host::{self, cpulist::MAX_CPU_ID, format_cpu_list, parse_cpu_list, write_cpu_list};
use sysvisor_fs::views::cpu_online;
use sysvisor_fuzz::{assert_strictly_ascending, utf8_prefix, Reader};

fn round_trip(cpus: &[u32]) {
    let text = format_cpu_list(cpus);
    let mut bytes = Vec::new();
    write_cpu_list(&mut bytes, cpus);
    assert_eq!(bytes, text.as_bytes());
    assert!(text.bytes().all(|b| b.is_ascii_digit() || b == b'-' || b == b','), "{text:?}");
    assert_eq!(parse_cpu_list(&text).as_deref(), Ok(cpus), "round trip through {text:?}");
    assert_eq!(v1::parse_cpuset_list(&text).as_deref(), Ok(cpus), "cpuset parse of {text:?}");
}

fuzz_target!(|data: &[u8]| {
    let text = utf8_prefix(data);
    let parsed = parse_cpu_list(text);
    if let Ok(cpus) = &parsed {
        assert_strictly_ascending(cpus, "parse_cpu_list");
        assert!(cpus.last().is_none_or(|&c| c <= MAX_CPU_ID));
        round_trip(cpus);
        assert_eq!(host::online_from_text(text).is_ok(), !cpus.is_empty());
    }
    if let (Ok(a), Ok(b)) = (&parsed, v1::parse_cpuset_list(text)) {
        assert_eq!(*a, b, "parse_cpu_list and parse_cpuset_list disagree on {text:?}");
    }

    // The raw bytes as a CPU set.
    let mut r = Reader::new(data);
    let mut set: Vec<u32> = (0..data.len() / 2).map(|_| u32::from(r.u16())).collect();
    set.sort_unstable();
    set.dedup();
    round_trip(&set);

    // The cpu online view for n CPUs.
    let n = set.len();
    let online = parse_cpu_list(std::str::from_utf8(&cpu_online::render(n)).unwrap()).unwrap();
    assert_eq!(online, (0..n.max(1) as u32).collect::<Vec<_>>());

    // Visible CPUs: a subset of online, ascending, within the quota's count.
    if let Ok(online) = &parsed {
        let quota = (data.len() >= 2).then(|| CpuQuota { quota_us: u64::from(data[0]), period_us: u64::from(data[1]) });
        let limits = CpuLimits { cpuset: Some(set.clone()), quota };
        let visible = limits.visible_cpus(online);
        assert!(visible.iter().all(|c| online.contains(c)));
        assert_strictly_ascending(&visible, "visible cpus");
        if let Some(q) = quota {
            assert!(visible.len() <= q.cpus().max(1));
        }
        if !online.is_empty() {
            assert!(!visible.is_empty() || online.is_empty());
        }
        let _ = limits.is_limited(online);
    }
});
