//! sysvisor-runc's reading of /proc/self/mountinfo and overlay options
//! (`rootfs::mountinfo`): `parse`, `unescape`, `top_at`, `fstype_of`, `overlay`. Never a
//! panic, and:
//! - unescaping never lengthens a field, and a field without a backslash is unchanged;
//! - the top mount at a path is at that path and nothing at that path sits on it;
//! - an overlay that parses has at least one lower layer.
//!
//! Input: mountinfo bytes (any bytes: the parser takes the file as bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysvisor_runc::rootfs::mountinfo::{fstype_of, overlay, parse, top_at, unescape};

fuzz_target!(|data: &[u8]| {
    let unescaped = unescape(data);
    assert!(unescaped.len() <= data.len());
    if !data.contains(&b'\\') {
        assert_eq!(unescaped, data);
    }
    let mounts = parse(data);
    for m in mounts.iter().take(64) {
        if let Some(top) = top_at(&mounts, &m.mount_point) {
            assert_eq!(top.mount_point, m.mount_point);
            assert!(!mounts.iter().any(|o| o.mount_point == top.mount_point && o.parent == top.id));
        }
        let _ = fstype_of(&mounts, &m.mount_point.join("below"));
        if let Ok(layers) = overlay(&m.super_opts) {
            assert!(!layers.lowers.is_empty());
        }
    }
});
