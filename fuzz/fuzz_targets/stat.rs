//! `/proc/stat`: `views::stat::parse` and `render` never panic; the view of valid UTF-8
//! is valid UTF-8, re-parses into cpu0..cpu(n-1) for the n visible CPUs with the host's
//! field count, and its "cpu" line is the sum of its per-CPU lines.
//!
//! Input: a `CPU_SET_LEN + 3 + CPU_USAGE_LEN`-byte header (visible CPUs; a flags byte, bit
//! 0: per-CPU figures may be used; clock ticks as u16; the cgroup's CPU usage), then the
//! host file's text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysvisor_fs::cgroup::{CpuLimits, CpuQuota};
use sysvisor_fs::views::stat::{self, StatInputs};
use sysvisor_fuzz::{cpu_set, cpu_usage, split_header, CPU_SET_LEN, CPU_USAGE_LEN};

const HEADER: usize = CPU_SET_LEN + 1 + 2 + CPU_USAGE_LEN;

fuzz_target!(|data: &[u8]| {
    let (mut header, text) = split_header(data, HEADER);
    let visible = cpu_set(&mut header);
    let flags = header.u8();
    let clock_ticks = u64::from(header.u16());
    let usage = cpu_usage(&mut header);
    let Ok(host) = stat::parse(text) else { return };
    assert!((4..=stat::CPU_FIELDS).contains(&host.fields), "field count {}", host.fields);

    let inputs = StatInputs { visible: &visible, usage: usage.as_ref(), per_cpu: flags & 1 != 0, clock_ticks };
    let out = stat::render(&host, &inputs);
    let out = String::from_utf8(out).expect("stat view of UTF-8 is not UTF-8");
    let view = stat::parse(&out).unwrap_or_else(|e| panic!("view does not parse: {e:?}\n{out:?}"));
    assert_eq!(view.fields, host.fields, "field count of the view");
    let ids: Vec<u32> = view.cpus.iter().map(|c| c.id).collect();
    let want: Vec<u32> = (0..visible.len() as u32).collect();
    assert_eq!(ids, want, "cpu lines of the view");

    // The "cpu" line (the first line) is the saturating sum of the cpuN lines.
    let first = out.lines().next().unwrap_or("");
    assert!(first.starts_with("cpu "), "view starts with {first:?}");
    let total: Vec<u64> = first.split_ascii_whitespace().skip(1).map(|v| v.parse().unwrap()).collect();
    let mut sum = vec![0u64; view.fields];
    for c in &view.cpus {
        for (s, f) in sum.iter_mut().zip(c.fields) {
            *s = s.saturating_add(f);
        }
    }
    assert_eq!(total, sum, "cpu line is not the sum of the cpuN lines");

    // Without CPU accounting each line is that host CPU's own (which one is ambiguous
    // when the host repeats a cpuN line).
    let mut host_ids: Vec<u32> = host.cpus.iter().map(|c| c.id).collect();
    host_ids.sort_unstable();
    host_ids.dedup();
    if usage.is_none() && host_ids.len() == host.cpus.len() {
        for (c, &host_id) in view.cpus.iter().zip(&visible) {
            let mut want = host.cpus.iter().find(|h| h.id == host_id).map_or([0; stat::CPU_FIELDS], |h| h.fields);
            want[host.fields..].fill(0);
            assert_eq!(c.fields, want, "cpu{} (host cpu{host_id})", c.id);
        }
    }

    // per_cpu_applies never panics, and holds without a quota.
    let limits = CpuLimits { cpuset: Some(visible.clone()), quota: None };
    let online: Vec<u32> = host.cpus.iter().map(|c| c.id).collect();
    assert!(stat::per_cpu_applies(&limits, &online));
    let quota = CpuQuota { quota_us: usage.as_ref().map_or(0, |u| u.user_ns), period_us: clock_ticks };
    let _ = stat::per_cpu_applies(&CpuLimits { cpuset: Some(visible), quota: Some(quota) }, &online);
});
