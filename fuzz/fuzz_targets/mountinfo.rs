//! `/proc/self/mountinfo` and `/proc/cgroups`: `Layout::from_mountinfo` and
//! `Layout::set_hierarchy_ids` never panic, and lookups on what they give are consistent.
//!
//! Input: mountinfo text, optionally a NUL and /proc/cgroups text. Note: a `cgroup2` line
//! makes the parser read `<mountpoint>/cgroup.controllers` (missing is fine), so this target
//! touches the file system read-only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysvisor_fs::cgroup::{Controller, Layout, MountKind};
use sysvisor_fuzz::{split2, utf8_prefix};

fuzz_target!(|data: &[u8]| {
    let (mountinfo, proc_cgroups) = split2(utf8_prefix(data));
    let Ok(mut layout) = Layout::from_mountinfo(mountinfo) else { return };
    assert!(!layout.mounts.is_empty());
    assert!(layout.mounts.iter().all(|m| m.hierarchy_id.is_none()));
    layout.set_hierarchy_ids(proc_cgroups);
    for m in &layout.mounts {
        if let Some(id) = m.hierarchy_id {
            assert_ne!(id, 0);
            assert!(matches!(m.kind, MountKind::V1 { .. }), "hierarchy id on a v2 mount");
        }
        if let MountKind::V1 { controllers } = &m.kind {
            for c in controllers {
                assert!(!c.is_empty() && !c.contains(','), "v1 controller {c:?}");
                assert!(c.starts_with("name=") || !c.contains('='), "v1 option {c:?} as controller");
            }
        }
    }
    for c in Controller::ALL {
        if let Some(m) = layout.mount_for(c) {
            assert!(m.serves(c), "mount_for({c:?}) gave a mount not serving it");
        }
    }
    if let Some(m) = layout.v2_mount() {
        assert!(m.is_v2());
    }
});
