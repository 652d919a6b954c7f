//! `/proc/slabinfo`: `views::slabinfo::render` never panics; what it returns is a prefix
//! of one of its inputs: the cgroup's own file whole, or the host's two header lines and
//! never a cache line of the host.
//!
//! Input: a 2-byte header (u16: length of the cgroup file's text; 0xffff: none), then the
//! cgroup file's text and the host file's text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysvisor_fs::views::slabinfo;
use sysvisor_fuzz::split_header;

fuzz_target!(|data: &[u8]| {
    let (mut header, rest) = split_header(data, 2);
    let len = header.u16();
    let (own, host) = if len == u16::MAX {
        (None, rest)
    } else {
        let at = rest.char_indices().map(|(i, _)| i).nth(usize::from(len)).unwrap_or(rest.len());
        (Some(&rest[..at]), &rest[at..])
    };
    let Ok(out) = slabinfo::render(host, own) else { return };
    let out = String::from_utf8(out).expect("slabinfo view is not UTF-8");
    if own == Some(out.as_str()) {
        assert!(slabinfo::header(&out).is_ok());
        return;
    }
    assert_eq!(slabinfo::header(host), Ok(out.as_str()));
    assert_eq!(out.lines().count(), 2, "more than the header of the host: {out:?}");
});
