//! `/proc/loadavg`: `views::loadavg::parse`, `render` and the fixed-point helpers never
//! panic; the view of a cgroup's load has the kernel's shape, re-parses and keeps the
//! host's last pid.
//!
//! Input: a `LOAD_LEN`-byte header (three fixed-point averages u64, running u32, total u32),
//! then the host file's text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysvisor_fs::loadavg::CgroupLoad;
use sysvisor_fs::views::loadavg::{self, calc_load, load_frac, load_int, EXP_1, EXP_15, EXP_5, FIXED_1};
use sysvisor_fuzz::split_header;

const LOAD_LEN: usize = 3 * 8 + 4 + 4;

fuzz_target!(|data: &[u8]| {
    let (mut header, text) = split_header(data, LOAD_LEN);
    let load = CgroupLoad {
        avg: [header.u64(), header.u64(), header.u64()],
        running: header.u32(),
        total: header.u32(),
    };
    for (i, &x) in load.avg.iter().enumerate() {
        assert!(load_frac(x) < 100);
        assert_eq!(load_int(x), x / FIXED_1);
        let active = load.avg[(i + 1) % 3];
        for exp in [EXP_1, EXP_5, EXP_15] {
            let next = calc_load(x, exp, active);
            // An average moves toward the active count and never past it (for figures
            // small enough not to saturate: real ones are below 2^32 * FIXED_1).
            if x.max(active) > u64::MAX / FIXED_1 {
                continue;
            }
            assert!(next >= x.min(active) && next <= x.max(active), "calc_load({x}, {exp}, {active}) = {next}");
        }
    }

    let Ok(host) = loadavg::parse(text) else { return };
    assert!(!host.last_pid.is_empty() && host.last_pid.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(loadavg::render(&host, None), text.as_bytes());
    let out = loadavg::render(&host, Some(&load));
    let out = String::from_utf8(out).expect("loadavg view is not UTF-8");
    let view = loadavg::parse(&out).unwrap_or_else(|e| panic!("view does not parse: {e:?}\n{out:?}"));
    assert_eq!(view.last_pid, host.last_pid);
    let fields: Vec<&str> = out.trim_end_matches('\n').split(' ').collect();
    assert_eq!(fields.len(), 5, "{out:?}");
    for f in &fields[..3] {
        let (int, frac) = f.split_once('.').expect("average without a point");
        assert!(int.parse::<u64>().is_ok() && frac.len() == 2 && frac.parse::<u8>().is_ok(), "average {f:?}");
    }
    assert_eq!(fields[3], format!("{}/{}", load.running, load.total));
});
