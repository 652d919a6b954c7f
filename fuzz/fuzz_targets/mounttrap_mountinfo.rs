//! The mount trap's view of a caller's mount table and paths (`mounttrap::mountinfo`):
//! `parse`, the lookups the unmount check makes (`top_mount_at`, `parent_of`,
//! `children_of`, `path_in_fs`, `is_protected`, `is_overlaid_root`), `mount_flags`, and
//! `absolute` (a trapped call's target made absolute against the caller's cwd). Never a
//! panic, and:
//! - `absolute` gives a clean absolute path (no empty, `.` or `..` component), and is
//!   idempotent (a clean path made absolute again is itself, whatever the cwd);
//! - the top mount at a path is at that path and nothing at that path sits on it;
//! - a parent has the id the entry names; children name the entry as parent;
//! - `path_in_fs` has no leading or trailing slash;
//! - `mount_flags` gives only the flags it knows.
//!
//! Input: mountinfo text, a NUL, the cwd, a NUL, the target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysvisor_fs::mounttrap::mountinfo::{
    absolute, children_of, is_overlaid_root, is_protected, mount_flags, parent_of, parse,
    path_in_fs, top_mount_at,
};
use sysvisor_fs::mounttrap::overlays::Overlays;
use sysvisor_fuzz::{split2, utf8_prefix};

const KNOWN_FLAGS: u64 = libc::MS_RDONLY
    | libc::MS_NOSUID
    | libc::MS_NODEV
    | libc::MS_NOEXEC
    | libc::MS_NOATIME
    | libc::MS_NODIRATIME
    | libc::MS_RELATIME
    | libc::MS_SYNCHRONOUS;

fn assert_clean(path: &str) {
    assert!(path.starts_with('/'), "{path:?}");
    if path != "/" {
        for part in path[1..].split('/') {
            assert!(!matches!(part, "" | "." | ".."), "{path:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (mountinfo, rest) = split2(utf8_prefix(data));
    let (cwd, target) = split2(rest);

    let path = absolute(cwd, target);
    assert_eq!(path.is_none(), target.is_empty());
    if let Some(path) = &path {
        assert_clean(path);
        assert_eq!(absolute(cwd, path).as_ref(), Some(path), "not idempotent");
        assert_eq!(absolute("/elsewhere", path).as_ref(), Some(path), "depends on the cwd");
    }

    let entries = parse(mountinfo);
    let overlays = Overlays::defaults(std::path::Path::new("/var/lib/sysvisor-fs"));
    for entry in entries.iter().take(64) {
        assert_eq!(mount_flags(&entry.options) & !KNOWN_FLAGS, 0);
        if let Some(top) = top_mount_at(&entries, &entry.mount_point) {
            assert_eq!(top.mount_point, entry.mount_point);
            assert!(!entries
                .iter()
                .any(|e| e.mount_point == top.mount_point && e.parent == top.id));
        }
        if let Some(parent) = parent_of(&entries, entry) {
            assert_eq!(parent.id, entry.parent);
            if let Some(rel) = path_in_fs(parent, entry) {
                assert!(!rel.starts_with('/') && !rel.ends_with('/'), "{rel:?}");
            }
        }
        for child in children_of(&entries, entry) {
            assert_eq!(child.parent, entry.id);
        }
        let _ = is_protected(&entries, entry, &overlays);
        let _ = is_overlaid_root(&entries, entry, &overlays);
    }
    if let Some(path) = &path {
        let _ = top_mount_at(&entries, path);
        let _ = overlays.may_cover_path(path);
    }
});
