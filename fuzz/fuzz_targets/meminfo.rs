//! `/proc/meminfo`: `views::meminfo::parse` and `render` never panic; the view of valid
//! UTF-8 is valid UTF-8 with the host's lines, re-parses, and states the limited figures.
//!
//! Input: a `MEMORY_INFO_LEN`-byte `MemoryInfo` header, then the host file's text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysvisor_fs::views::meminfo;
use sysvisor_fuzz::{memory_info, newlines, split_header, MEMORY_INFO_LEN};

/// The number of every "Name: N" line of `text` called `name`.
fn values<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = u64> + 'a {
    text.lines().filter_map(move |l| {
        let (n, rest) = l.split_once(':')?;
        let digits: String = rest.trim_start_matches(' ').chars().take_while(char::is_ascii_digit).collect();
        (n == name).then(|| digits.parse().ok()).flatten()
    })
}

fuzz_target!(|data: &[u8]| {
    let (mut header, text) = split_header(data, MEMORY_INFO_LEN);
    let mem = memory_info(&mut header);
    let Ok(host) = meminfo::parse(text) else { return };
    assert_eq!(meminfo::render(&host, None), text.as_bytes());

    let out = meminfo::render(&host, Some(&mem));
    let out = String::from_utf8(out).expect("meminfo view of UTF-8 is not UTF-8");
    assert_eq!(newlines(out.as_bytes()), newlines(text.as_bytes()), "line count changed");
    let swap = host.swap_total_kb > 0 && (mem.limit.is_some() || mem.swap_limit.is_some());
    if mem.limit.is_none() && !swap {
        assert_eq!(out, text);
        return;
    }

    let view = meminfo::parse(&out).unwrap_or_else(|e| panic!("view does not parse: {e}\n{out:?}"));
    if let Some(limit) = mem.limit {
        let total = (limit / 1024).min(host.mem_total_kb);
        assert_eq!(view.mem_total_kb, total, "MemTotal");
        for name in ["MemFree", "MemAvailable"] {
            for v in values(&out, name) {
                assert!(v <= total, "{name} {v} above MemTotal {total}");
            }
        }
    } else {
        assert_eq!(view.mem_total_kb, host.mem_total_kb, "MemTotal without a limit");
    }
    if swap {
        let total = mem.swap_limit.map_or(host.swap_total_kb, |l| (l / 1024).min(host.swap_total_kb));
        assert_eq!(view.swap_total_kb, total, "SwapTotal");
        for v in values(&out, "SwapFree") {
            assert!(v <= total, "SwapFree {v} above SwapTotal {total}");
        }
    } else {
        assert_eq!(view.swap_total_kb, host.swap_total_kb, "SwapTotal without swap view");
    }
});
