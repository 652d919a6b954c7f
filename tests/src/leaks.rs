//! The leak check: after a container is gone, nothing of it may remain on the host.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::engine::{Container, Engine};
use crate::{EXEC_ROOT, SYSVISOR_LIB, SYSVISOR_ROOTFS, SYSVISOR_RUN};

/// One line of a uid_map (or gid_map): `inside outside count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

impl IdMap {
    /// Whether two host ranges overlap.
    pub fn overlaps(&self, other: &IdMap) -> bool {
        let (a0, a1) = (self.outside as u64, self.outside as u64 + self.count as u64);
        let (b0, b1) = (other.outside as u64, other.outside as u64 + other.count as u64);
        a0 < b1 && b0 < a1
    }

    /// Whether host id `id` is in the range.
    pub fn contains_host(&self, id: u32) -> bool {
        id >= self.outside && (id as u64) < self.outside as u64 + self.count as u64
    }
}

/// The first line of a `/proc/PID/uid_map`.
pub fn parse_uid_map(text: &str) -> Option<IdMap> {
    let mut fields = text.lines().next()?.split_whitespace().map(|f| f.parse::<u32>());
    let inside = fields.next()?.ok()?;
    let outside = fields.next()?.ok()?;
    let count = fields.next()?.ok()?;
    Some(IdMap { inside, outside, count })
}

/// An ELF file without a PT_INTERP program header (a static executable).
pub fn is_static_elf(path: &Path) -> bool {
    let Ok(data) = fs::read(path) else {
        return false;
    };
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        o + 4 > data.len() || u32::from_le_bytes(data[o..o + 4].try_into().unwrap()) != 3
    })
}

/// A mountinfo path with its octal escapes (`\040` for a space, ...) decoded.
pub fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Pids (not ours) whose command line contains `needle`.
pub fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut pids = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

/// Host processes whose real or effective uid lies in `range`, except those of another
/// container (one whose cgroup does not name `id`: a reclaimed range may serve a new
/// container at once).
pub fn processes_in_range(range: IdMap, id: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let Ok(status) = fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let uids: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .map(|l| l.split_whitespace().filter_map(|u| u.parse().ok()).collect())
            .unwrap_or_default();
        let cgroup = fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        let other_container = cgroup.lines().any(|l| l.contains("docker")) && !cgroup.contains(id);
        if uids.iter().take(2).any(|&u| range.contains_host(u)) && !other_container {
            let name =
                status.lines().next().unwrap_or("").trim_start_matches("Name:").trim().to_string();
            found.push(format!(
                "process {} ({name}) runs with uids {uids:?}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// Leftovers that the runtime removes lazily, when it next reclaims the ranges of containers
/// gone for good (at the next `create`): the allocation record of the range, the
/// persistent upper layer under /var/lib/sysvisor/rootfs and the volume directories under
/// /var/lib/sysvisor/volumes.
pub fn is_pending_reclaim(leak: &str) -> bool {
    leak.starts_with(&format!("file: {SYSVISOR_LIB}/rootfs/"))
        || leak.starts_with(&format!("file: {SYSVISOR_LIB}/volumes/"))
        || leak.starts_with(&format!("file mentions the id: {SYSVISOR_LIB}/idranges/"))
        || leak.starts_with(&format!("file mentions the id: {SYSVISOR_LIB}/rootfs/"))
}

/// What is left of container `id` (empty when nothing is):
///
/// - the engine still knows the container;
/// - a mount whose source or mount point names the id (the id-shifted rootfs, the views);
/// - anything under /run/sysvisor/rootfs named after it;
/// - its registration in the sysvisor-fs daemon (if one answers);
/// - a file or directory under /run/sysvisor, /var/lib/sysvisor or the engine's exec root
///   whose name names the id, or a small state file (not `*.log`) whose content does (an
///   allocation record of its uid range, say);
/// - with `range`: a host process still running in the container's uid range.
pub fn leftovers(engine: &Engine, id: &str, range: Option<crate::IdMap>) -> Vec<String> {
    let mut found = Vec::new();
    if id.is_empty() {
        return vec!["(no container id to check)".into()];
    }
    let inspect =
        engine.docker_timeout(&["inspect", "-f", "{{.State.Status}}", id], Duration::from_secs(30));
    if inspect.success() {
        found.push(format!("the engine still has the container (status {})", inspect.out()));
    }
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in info.lines().filter(|l| l.contains(id)) {
        found.push(format!("mount: {line}"));
    }
    if let Ok(entries) = fs::read_dir(SYSVISOR_ROOTFS) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().contains(id) {
                found.push(format!("rootfs dir: {}", entry.path().display()));
            }
        }
    }
    let socket = Path::new(crate::FS_SOCKET);
    if let Ok(answer) =
        sysvisor_proto::call(socket, &sysvisor_proto::Request::List, Duration::from_secs(5))
    {
        if answer.containers.iter().any(|c| c.id == id) {
            found.push("still registered with the sysvisor-fs daemon".into());
        }
    }
    for root in [SYSVISOR_RUN, SYSVISOR_LIB, EXEC_ROOT] {
        walk(Path::new(root), id, 0, &mut found);
    }
    if let Some(range) = range {
        found.extend(processes_in_range(range, id));
    }
    found
}

fn walk(dir: &Path, id: &str, depth: usize, found: &mut Vec<String>) {
    let Ok(dir_meta) = fs::symlink_metadata(dir) else {
        return;
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if name.contains(id) {
            found.push(format!("file: {}", path.display()));
            continue;
        }
        let ft = meta.file_type();
        if ft.is_dir() {
            // Never cross into another file system (a rootfs, the FUSE views, a netns).
            if meta.dev() == dir_meta.dev() && depth < 8 {
                walk(&path, id, depth + 1, found);
            }
        } else if ft.is_file() && meta.len() < 1 << 20 && !name.ends_with(".log") && !ft.is_socket()
        {
            if let Ok(data) = fs::read(&path) {
                if String::from_utf8_lossy(&data).contains(id) {
                    found.push(format!("file mentions the id: {}", path.display()));
                }
            }
        }
    }
}

/// Nothing of the mount trap is left on the host: no mount on its stage directory, no
/// helper process (waits up to 5 s for helpers to finish; one stopped by a tracer would
/// stay).
#[track_caller]
pub fn assert_trap_clean() {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let stage: Vec<&str> = info.lines().filter(|l| l.contains("mounttrap-stage")).collect();
    assert!(stage.is_empty(), "mounts on the stage directory: {stage:#?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let helpers = pids_with_cmdline("__mounttrap-helper");
        if helpers.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "mount helpers still running: {helpers:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes the container and checks that nothing of it, nor of the mount trap, is left.
#[track_caller]
pub fn remove_and_assert_clean(e: &Engine, c: Container<'_>) {
    let id = c.id();
    let range = c.uid_map();
    assert!(c.remove().success());
    e.assert_no_leaks(&id, range);
    assert_trap_clean();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_maps_parse_and_overlap() {
        let a = parse_uid_map("         0     165536      65536\n").unwrap();
        assert_eq!(a, IdMap { inside: 0, outside: 165536, count: 65536 });
        let b = IdMap { inside: 0, outside: 165536 + 65536, count: 65536 };
        assert!(!a.overlaps(&b) && !b.overlaps(&a));
        let c = IdMap { inside: 0, outside: 165536 + 65535, count: 65536 };
        assert!(a.overlaps(&c) && c.overlaps(&a));
        assert!(a.contains_host(165536) && !a.contains_host(165536 + 65536));
        assert_eq!(parse_uid_map(""), None);
    }

    #[test]
    fn mount_paths_unescape() {
        assert_eq!(unescape_mount_path(r"/a\040b/c"), "/a b/c");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }

    #[test]
    fn static_elf_detection() {
        // The test binary itself is dynamically linked (glibc target).
        let me = std::env::current_exe().unwrap();
        assert!(!is_static_elf(&me));
        assert!(!is_static_elf(Path::new("/nonexistent")));
    }
}
