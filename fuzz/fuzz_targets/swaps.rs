//! `/proc/swaps`: `views::swaps::parse` and `render` never panic; the view keeps the host's
//! header, is valid UTF-8, re-parses, and shows at most the host's swap.
//!
//! Input: a `MEMORY_INFO_LEN`-byte `MemoryInfo` header, then the host file's text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysvisor_fs::views::swaps;
use sysvisor_fuzz::{memory_info, split_header, MEMORY_INFO_LEN};

fuzz_target!(|data: &[u8]| {
    let (mut header, text) = split_header(data, MEMORY_INFO_LEN);
    let mem = memory_info(&mut header);
    let Ok(host) = swaps::parse(text) else { return };
    assert!(host.header.starts_with("Filename"));
    assert_eq!(swaps::render(&host, None), text.as_bytes());

    let out = swaps::render(&host, Some(&mem));
    let out = String::from_utf8(out).expect("swaps view of UTF-8 is not UTF-8");
    if mem.swap_limit.is_none() || host.areas == 0 || host.total_kb == 0 {
        assert_eq!(out, text);
        return;
    }
    assert!(out.starts_with(host.header));
    let view = swaps::parse(&out).unwrap_or_else(|e| panic!("view does not parse: {e}\n{out:?}"));
    assert!(view.areas <= 1);
    assert!(view.total_kb <= host.total_kb, "view size {} above host {}", view.total_kb, host.total_kb);
    assert!(view.used_kb <= view.total_kb, "view used {} above size {}", view.used_kb, view.total_kb);
});
