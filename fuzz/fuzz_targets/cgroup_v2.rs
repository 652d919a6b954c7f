//! cgroup v2 file formats: every `sysvisor_fs::cgroup::v2::parse_*` function runs on the
//! input and never panics; what they accept obeys their docs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysvisor_fs::cgroup::v2;
use sysvisor_fuzz::{assert_strictly_ascending, utf8_prefix};

fuzz_target!(|data: &[u8]| {
    let text = utf8_prefix(data);

    match v2::parse_max(text) {
        Ok(None) => assert_eq!(text.split_ascii_whitespace().collect::<Vec<_>>(), ["max"]),
        Ok(Some(_)) => assert_eq!(text.split_ascii_whitespace().count(), 1),
        Err(_) => {}
    }
    match v2::parse_cpu_max(text) {
        Ok(Some(q)) => {
            assert_ne!(q.period_us, 0);
            assert!(q.cpus() >= 1);
        }
        Ok(None) => assert_eq!(text.split_ascii_whitespace().next(), Some("max")),
        Err(_) => {}
    }
    let _ = v2::parse_memory_stat(text);
    if let Ok(usage) = v2::parse_cpu_stat(text) {
        assert!(usage.per_cpu.is_none());
        // usec figures scaled to ns, saturating.
        assert!(usage.user_ns % 1000 == 0 || usage.user_ns == u64::MAX);
        assert!(usage.system_ns % 1000 == 0 || usage.system_ns == u64::MAX);
    }
    if let Ok(devices) = v2::parse_io_stat(text) {
        let keys: Vec<(u32, u32)> = devices.iter().map(|d| (d.major, d.minor)).collect();
        assert_strictly_ascending(&keys, "io.stat devices");
    }
    if let Ok(cpus) = v2::parse_cpuset_list(text) {
        assert_strictly_ascending(&cpus, "cpuset list");
    }
});
