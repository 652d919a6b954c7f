//! `/proc/PID/cgroup`: `ProcCgroups::parse` never panics; what it accepts is
//! self-consistent (paths absolute, hierarchies and controllers unique), re-serializes to
//! text that parses to the same entries, and `entry_for` finds each entry by its mount.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysvisor_fs::cgroup::{Mount, MountKind, ProcCgroups};
use sysvisor_fuzz::utf8_prefix;

fuzz_target!(|data: &[u8]| {
    let text = utf8_prefix(data);
    let Ok(pc) = ProcCgroups::parse(text) else { return };
    assert!(!pc.entries.is_empty());
    for (i, e) in pc.entries.iter().enumerate() {
        assert!(e.path.starts_with('/'), "relative path {:?}", e.path);
        assert!(!e.path.contains('\n'), "path with newline {:?}", e.path);
        assert!(e.hierarchy_id != 0 || e.controllers.is_empty());
        for c in &e.controllers {
            assert!(!c.is_empty() && !c.contains(',') && !c.contains(':'), "controller {c:?}");
        }
        for other in &pc.entries[i + 1..] {
            assert_ne!(e.hierarchy_id, other.hierarchy_id, "hierarchy twice");
            assert!(!e.controllers.iter().any(|c| other.controllers.contains(c)), "controller twice");
        }
    }

    // Each path is the whole rest of its line: the kernel ends lines with '\n' only and does
    // not escape cgroup names, so a name may end in '\r' (mkdir accepts it).
    for e in &pc.entries {
        let faithful = [e.path.clone(), format!("{} (deleted)", e.path)]
            .iter()
            .any(|p| text.contains(&format!(":{p}\n")) || text.ends_with(&format!(":{p}")));
        assert!(faithful, "path {:?} is not the rest of a line of {text:?}", e.path);
    }

    // Round trip. The last line keeps no newline: a bare '\r' ending it stays in its path.
    // A path ending in " (deleted)" loses one such suffix per parse, so skip those.
    if !pc.entries.iter().any(|e| e.path.ends_with(" (deleted)")) {
        let again: Vec<String> = pc
            .entries
            .iter()
            .map(|e| format!("{}:{}:{}", e.hierarchy_id, e.controllers.join(","), e.path))
            .collect();
        let again = again.join("\n");
        let reparsed = ProcCgroups::parse(&again).unwrap_or_else(|e| panic!("reparse of {again:?}: {e}"));
        assert_eq!(reparsed, pc);
    }

    // Lookup by mount: a v1 mount of an entry's controllers and hierarchy finds that entry;
    // a v2 mount finds the 0:: entry.
    for e in &pc.entries {
        let kind = if e.hierarchy_id == 0 {
            MountKind::V2 { controllers: vec![] }
        } else {
            MountKind::V1 { controllers: e.controllers.clone() }
        };
        let mount = Mount { kind, mountpoint: "/m".into(), root: "/".into(), hierarchy_id: Some(e.hierarchy_id) };
        if e.hierarchy_id == 0 || !e.controllers.is_empty() {
            assert_eq!(pc.entry_for(&mount), Some(e));
            assert_eq!(pc.path_for(&mount), Some(e.path.as_str()));
        } else {
            assert_eq!(pc.entry_for(&mount), None);
        }
    }
});
