//! `/proc/cpuinfo`: `views::cpuinfo::parse` and `render` never panic; the view of valid
//! UTF-8 is valid UTF-8 and re-parses into the visible CPUs' blocks, renumbered from 0.
//!
//! Input: a `CPU_SET_LEN`-byte header (the visible host CPUs), then the host file's text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysvisor_fs::views::cpuinfo;
use sysvisor_fuzz::{cpu_set, split_header, CPU_SET_LEN};

fuzz_target!(|data: &[u8]| {
    let (mut header, text) = split_header(data, CPU_SET_LEN);
    let visible = cpu_set(&mut header);
    let Ok(host) = cpuinfo::parse(text) else { return };
    let mut pos = 0;
    for b in &host.blocks {
        assert_eq!(b.start, pos, "blocks do not tile the text");
        assert!(b.end > b.start && b.end <= text.len());
        pos = b.end;
    }
    assert_eq!(pos, text.len(), "blocks do not cover the text");

    let out = cpuinfo::render(&host, &visible);
    let out = String::from_utf8(out).expect("cpuinfo view of UTF-8 is not UTF-8");
    if !host.has_processor_blocks() {
        assert_eq!(out, text);
        return;
    }
    let view = cpuinfo::parse(&out).unwrap_or_else(|e| panic!("view does not parse: {e:?}\n{out:?}"));
    let kept: Vec<u32> = host
        .blocks
        .iter()
        .filter_map(|b| b.processor)
        .filter_map(|p| visible.binary_search(&p).ok())
        .map(|i| i as u32)
        .collect();
    let shown: Vec<u32> = view.blocks.iter().filter_map(|b| b.processor).collect();
    assert_eq!(shown, kept, "processor numbers of the view");
    let other = |h: &cpuinfo::HostCpuinfo<'_>| h.blocks.iter().filter(|b| b.processor.is_none()).count();
    assert_eq!(other(&view), other(&host), "blocks without a processor line");
});
