//! sysvisor-runc's reading of /etc/subuid and /etc/subgid (`idrange::subid`): `parse`,
//! the pool's slices (`slices_in`) and the base the install picks for a new pool
//! (`install_base`). Never a panic (ids near the top of u64 included), and:
//! - every slice is 65536-aligned, lies inside a `sysvisor` entry and below 2^32-1, and
//!   comes once;
//! - a new pool is 65536-aligned, at least 100000, after every well-formed entry and below
//!   2^32-1.
//!
//! Input: byte 0 scales the pool size of the install (in slices of 65536 ids, 0 is too
//! small), then the text of the subuid file, optionally a NUL and the subgid file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sysvisor_fuzz::{split2, utf8_prefix};
use sysvisor_runc::idrange::subid::{install_base, parse, slices_in};
use sysvisor_runc::idrange::{RANGE_SIZE, SUBID_USER};

const ID_LIMIT: u64 = u32::MAX as u64;

fuzz_target!(|data: &[u8]| {
    let Some((&scale, text)) = data.split_first() else { return };
    let (subuid, subgid) = split2(utf8_prefix(text));
    let size = u64::from(RANGE_SIZE);

    let entries: Vec<_> = parse(subuid).into_iter().filter_map(|(_, _, e)| e.ok()).collect();
    if let Ok(bases) = slices_in(subuid, Path::new("subuid")) {
        let mut seen = std::collections::BTreeSet::new();
        for base in bases {
            let base = u64::from(base);
            assert_eq!(base % size, 0, "{base}");
            assert!(base + size <= ID_LIMIT, "{base}");
            assert!(seen.insert(base), "{base} twice");
            assert!(
                entries
                    .iter()
                    .any(|e| e.owner == SUBID_USER && e.start <= base && base + size <= e.end()),
                "{base} in no entry"
            );
        }
    }

    let count = u32::from(scale) * RANGE_SIZE;
    if let Ok(base) = install_base(&[subuid, subgid], count) {
        assert!(count >= RANGE_SIZE);
        assert_eq!(base % size, 0, "{base}");
        assert!(base >= 100_000, "{base}");
        assert!(base + u64::from(count) <= ID_LIMIT, "{base}+{count}");
        for text in [subuid, subgid] {
            for (_, line, entry) in parse(text) {
                if let Ok(e) = entry {
                    assert!(e.end() <= base, "{line:?} overlaps the pool at {base}");
                }
            }
        }
    }
});
