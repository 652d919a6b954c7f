//! `/proc/uptime`: `views::uptime::parse` and `render` never panic; the view has the
//! kernel's "%lu.%02lu %lu.%02lu\n" shape, re-parses, and stays within the host's uptime
//! and the visible CPUs' idle time.
//!
//! Input: an `INPUTS_LEN`-byte header (namespace init start ticks u64, clock ticks u16,
//! visible CPUs u16, flags u8 with bit 0: CPU usage known, CPU usage ns u64), then the host
//! file's text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysvisor_fs::views::uptime::{self, UptimeInputs};
use sysvisor_fuzz::split_header;

const INPUTS_LEN: usize = 8 + 2 + 2 + 1 + 8;

fn kernel_shape(field: &str) -> bool {
    let Some((int, frac)) = field.split_once('.') else { return false };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    !int.is_empty() && digits(int) && frac.len() == 2 && digits(frac)
}

fuzz_target!(|data: &[u8]| {
    let (mut header, text) = split_header(data, INPUTS_LEN);
    let inputs = UptimeInputs {
        ns_init_start_ticks: header.u64(),
        clock_ticks: u64::from(header.u16()),
        visible_cpus: usize::from(header.u16()),
        cpu_usage_ns: {
            let known = header.u8() & 1 != 0;
            let ns = header.u64();
            known.then_some(ns)
        },
    };
    let Ok(host) = uptime::parse(text) else { return };
    let out = uptime::render(&host, &inputs);
    let out = String::from_utf8(out).expect("uptime view is not UTF-8");
    let line = out.strip_suffix('\n').expect("no newline at the end");
    let fields: Vec<&str> = line.split(' ').collect();
    assert!(fields.len() == 2 && fields.iter().all(|f| kernel_shape(f)), "bad shape {out:?}");
    let view = uptime::parse(&out).unwrap_or_else(|e| panic!("view does not parse: {e:?}\n{out:?}"));
    assert!(view.up_centis <= host.up_centis, "uptime {} above the host's {}", view.up_centis, host.up_centis);
    let max_idle = view.up_centis.saturating_mul(inputs.visible_cpus.max(1) as u64);
    assert!(view.idle_centis <= max_idle, "idle {} above {max_idle}", view.idle_centis);
    if inputs.ns_init_start_ticks == 0 {
        assert_eq!(view.up_centis, host.up_centis);
    }
});
