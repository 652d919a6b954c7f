//! `/proc/diskstats`: `views::diskstats::parse`, `parse_line` and `render` never panic;
//! render fails exactly when parse does; the view of valid UTF-8 is valid UTF-8 and
//! re-parses into a subset of the host's devices, each with the host's counter count.
//!
//! Input: an `IO_STATS_LEN`-byte `IoStats` header (see `sysvisor_fuzz::io_stats`), then the
//! host file's text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysvisor_fs::views::diskstats;
use sysvisor_fuzz::{io_stats, split_header, IO_STATS_LEN};

fuzz_target!(|data: &[u8]| {
    let (mut header, text) = split_header(data, IO_STATS_LEN);
    let known: Vec<(u32, u32)> =
        text.lines().filter_map(|l| diskstats::parse_line(l).ok()).map(|d| (d.major, d.minor)).collect();
    let io = io_stats(&mut header, &known);

    let parsed = diskstats::parse(text);
    let out = diskstats::render(text, Some(&io));
    assert_eq!(parsed.is_ok(), out.is_ok(), "parse and render disagree");
    let (Ok(host), Ok(out)) = (parsed, out) else { return };
    for d in &host {
        assert!(d.fields >= diskstats::MIN_FIELDS);
    }
    assert_eq!(diskstats::render(text, None).unwrap(), text.as_bytes());

    let out = String::from_utf8(out).expect("diskstats view of UTF-8 is not UTF-8");
    let view = diskstats::parse(&out).unwrap_or_else(|e| panic!("view does not parse: {e:?}\n{out:?}"));
    assert!(view.len() <= host.len());
    // Every view line is a host line of a device the cgroup did I/O on, in host order.
    let mut rest = host.iter();
    for v in &view {
        let h = rest
            .find(|h| (h.major, h.minor, h.name) == (v.major, v.minor, v.name))
            .unwrap_or_else(|| panic!("view line {v:?} not in the host's order"));
        assert_eq!(v.fields, h.fields, "counter count of {}", v.name);
        assert!(io.devices.iter().any(|d| (d.major, d.minor) == (v.major, v.minor)));
    }
});
