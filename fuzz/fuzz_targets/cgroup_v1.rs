//! cgroup v1 file formats: every `sysvisor_fs::cgroup::v1::parse_*` function (and
//! `merge_blkio`) runs on the input and never panics; what they accept obeys their docs.
//!
//! Input: one file's text; the two-file parsers (`parse_cfs`, `parse_blkio_throttle`) get
//! the text split at the first NUL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysvisor_fs::cgroup::v1::{self, BlkioUnit, MAX_CPUS, UNLIMITED_FROM};
use sysvisor_fs::cgroup::DeviceIo;
use sysvisor_fuzz::{assert_strictly_ascending, split2, utf8_prefix};

fn device_keys(devices: &[DeviceIo]) -> Vec<(u32, u32)> {
    devices.iter().map(|d| (d.major, d.minor)).collect()
}

fuzz_target!(|data: &[u8]| {
    let text = utf8_prefix(data);
    let tokens = text.split_ascii_whitespace().count();

    let u = v1::parse_u64(text);
    if u.is_ok() {
        assert_eq!(tokens, 1);
    }
    match v1::parse_limit(text) {
        Ok(Some(v)) => {
            assert!(v < UNLIMITED_FROM);
            assert_eq!(u, Ok(v));
        }
        Ok(None) => assert!(text.split_ascii_whitespace().next() == Some("-1") || matches!(u, Ok(v) if v >= UNLIMITED_FROM)),
        Err(_) => assert!(u.is_err()),
    }

    let stat = v1::parse_memory_stat(text);
    let with_limits = v1::parse_memory_stat_with_limits(text);
    assert_eq!(stat.is_ok(), with_limits.is_ok());
    if let (Ok(stat), Ok((stat2, hier))) = (&stat, &with_limits) {
        assert_eq!(stat, stat2);
        assert!(hier.memory.is_none_or(|v| v < UNLIMITED_FROM));
        assert!(hier.memsw.is_none_or(|v| v < UNLIMITED_FROM));
        // v1 memory.stat has no slab, kernel stack or page table figures.
        assert_eq!((stat.slab_reclaimable, stat.slab_unreclaimable), (0, 0));
        assert_eq!((stat.kernel_stack, stat.pagetables), (0, 0));
    }

    if let Ok(p) = v1::parse_cfs_period(text) {
        assert_ne!(p, 0);
    }
    let _ = v1::parse_cfs_quota(text);
    let (a, b) = split2(text);
    if let Ok(Some(q)) = v1::parse_cfs(a, b) {
        assert_ne!(q.period_us, 0);
        assert!(q.cpus() >= 1);
    }

    if let Ok(cpus) = v1::parse_cpuset_list(text) {
        assert_strictly_ascending(&cpus, "cpuset list");
        assert!(cpus.len() <= MAX_CPUS as usize);
        assert!(cpus.last().is_none_or(|&c| c < MAX_CPUS));
    }

    if let Ok(per) = v1::parse_percpu(text) {
        assert_eq!(per.len(), tokens);
        assert!(per.len() <= MAX_CPUS as usize);
    }
    if let Ok(all) = v1::parse_usage_all(text) {
        assert!(all.len() <= MAX_CPUS as usize);
    }
    let _ = v1::parse_cpuacct_stat(text);

    for unit in [BlkioUnit::Ios, BlkioUnit::Bytes] {
        let mut devices = Vec::new();
        if v1::merge_blkio(text, unit, &mut devices).is_ok() {
            let mut keys = device_keys(&devices);
            keys.sort_unstable();
            assert_strictly_ascending(&keys, "merge_blkio devices");
        }
    }
    if let Ok(devices) = v1::parse_blkio_throttle(a, b) {
        assert_strictly_ascending(&device_keys(&devices), "blkio devices");
    }

    let mut tids = vec![7];
    if v1::parse_tasks_into(text, &mut tids).is_ok() {
        assert_eq!(tids.len(), 1 + tokens);
        assert_eq!(tids[0], 7);
    }
});
