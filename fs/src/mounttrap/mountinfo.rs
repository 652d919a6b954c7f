//! A process's `/proc/PID/mountinfo`, parsed, and the questions the trap asks of it: which
//! mount a path names, whether that mount is one of the overlays (a view, a mask, a
//! read-only path) on a proc or sysfs mount, which flags a mount has. Pure functions.
//!
//! Mount points in a process's mountinfo are relative to that process's root, so they
//! compare directly with the absolute paths the process passes to `umount2`.

use super::overlays::Overlays;
use super::policy::FsKind;

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u64,
    pub parent: u64,
    /// The directory of the file system mounted here (a bind of a subdirectory is not `/`).
    pub root: String,
    pub mount_point: String,
    /// Per-mount options (`ro,nosuid,...`).
    pub options: String,
    pub fstype: String,
    pub source: String,
}

/// Parses mountinfo; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let (before, after) = line.split_once(" - ")?;
    let mut fields = before.split(' ');
    let id = fields.next()?.parse().ok()?;
    let parent = fields.next()?.parse().ok()?;
    let _devices = fields.next()?;
    let root = unescape(fields.next()?);
    let mount_point = unescape(fields.next()?);
    let options = fields.next()?.to_string();
    let mut after = after.split(' ');
    let fstype = after.next()?.to_string();
    let source = unescape(after.next().unwrap_or(""));
    Some(MountEntry { id, parent, root, mount_point, options, fstype, source })
}

/// Undoes the kernel's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).ok();
            if let Some(value) = digits.and_then(|d| u8::from_str_radix(d, 8).ok()) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `target` made absolute against `cwd` and cleaned lexically (`.`, `..`, repeated
/// slashes), as the kernel would walk it if no component were a symlink. `None` for an
/// empty target.
pub fn absolute(cwd: &str, target: &str) -> Option<String> {
    if target.is_empty() {
        return None;
    }
    let joined =
        if target.starts_with('/') { target.to_string() } else { format!("{cwd}/{target}") };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// The mount a path names: the topmost of the mounts at that mount point.
pub fn top_mount_at<'a>(entries: &'a [MountEntry], path: &str) -> Option<&'a MountEntry> {
    let at: Vec<&MountEntry> = entries.iter().filter(|e| e.mount_point == path).collect();
    // Stacked mounts: each is the parent of the next; the top one is nobody's parent.
    at.iter().copied().find(|e| !at.iter().any(|other| other.parent == e.id))
}

/// The parent of `entry`, if listed.
pub fn parent_of<'a>(entries: &'a [MountEntry], entry: &MountEntry) -> Option<&'a MountEntry> {
    entries.iter().find(|e| e.id == entry.parent && e.id != entry.id)
}

/// The mounts directly on `entry`.
pub fn children_of<'a>(
    entries: &'a [MountEntry],
    entry: &'a MountEntry,
) -> impl Iterator<Item = &'a MountEntry> + 'a {
    entries.iter().filter(move |e| e.parent == entry.id && e.id != entry.id)
}

/// Where `child` sits inside the file system of `parent`, without a leading slash
/// (`meminfo` for `/proc/meminfo` on a proc mount at `/proc`). `None` if `child` is not
/// below `parent`'s mount point.
pub fn path_in_fs(parent: &MountEntry, child: &MountEntry) -> Option<String> {
    let below = strip_dir(&child.mount_point, &parent.mount_point)?;
    let joined = format!("{}/{}", parent.root.trim_end_matches('/'), below);
    Some(joined.trim_matches('/').to_string())
}

/// `path` relative to `dir` (component-wise), without a leading slash.
fn strip_dir<'a>(path: &'a str, dir: &str) -> Option<&'a str> {
    if dir == "/" {
        return Some(path.trim_start_matches('/'));
    }
    let rest = path.strip_prefix(dir)?;
    if rest.is_empty() {
        Some(rest)
    } else {
        rest.strip_prefix('/')
    }
}

/// Whether `entry` is an overlay that keeps something of a proc or sysfs mount hidden or
/// read-only: it sits directly on a proc or sysfs mount, at a path the container's overlay
/// list names, or it is one of sysvisor-fs' views. Unmounting it would uncover the host's
/// file (or make it writable). (The trap only asks for paths that
/// [`Overlays::may_cover_path`], so a view at a path the list lacks is left to the kernel's
/// lock.)
pub fn is_protected(entries: &[MountEntry], entry: &MountEntry, overlays: &Overlays) -> bool {
    let Some(parent) = parent_of(entries, entry) else {
        return false;
    };
    let Some(fs) = FsKind::from_name(&parent.fstype) else {
        return false;
    };
    if entry.fstype == format!("fuse.{}", crate::fuse::session::SUBTYPE) {
        return true;
    }
    path_in_fs(parent, entry).is_some_and(|rel| overlays.covers(fs, &rel))
}

/// Whether `entry` is a proc or sysfs mount whose only children are overlays: one the trap
/// made. A plain `umount` of it would fail with EBUSY because of them.
pub fn is_overlaid_root(entries: &[MountEntry], entry: &MountEntry, overlays: &Overlays) -> bool {
    if FsKind::from_name(&entry.fstype).is_none() {
        return false;
    }
    let mut children = children_of(entries, entry).peekable();
    children.peek().is_some() && children.all(|child| is_protected(entries, child, overlays))
}

/// Whether `entry` is the container's own `/proc` or `/sys`: a proc or sysfs mount at that
/// path, not stacked on another mount there (a proc mounted over `/proc` by
/// `unshare --mount-proc` is). The views, the sysctl trees and every `docker exec` stand on
/// it, so the kernel's answer to its unmount, EBUSY, is the trap's too.
pub fn is_container_root_fs(entries: &[MountEntry], entry: &MountEntry) -> bool {
    let Some(fs) = FsKind::from_name(&entry.fstype) else {
        return false;
    };
    entry.mount_point == fs.container_path()
        && parent_of(entries, entry).is_none_or(|parent| parent.mount_point != entry.mount_point)
}

/// mount(2) flags of a mount, from its per-mount options.
pub fn mount_flags(options: &str) -> u64 {
    options
        .split(',')
        .map(|option| match option {
            "ro" => libc::MS_RDONLY,
            "nosuid" => libc::MS_NOSUID,
            "nodev" => libc::MS_NODEV,
            "noexec" => libc::MS_NOEXEC,
            "noatime" => libc::MS_NOATIME,
            "nodiratime" => libc::MS_NODIRATIME,
            "relatime" => libc::MS_RELATIME,
            "sync" => libc::MS_SYNCHRONOUS,
            _ => 0,
        })
        .fold(0, |flags, flag| flags | flag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounttrap::overlays::{Overlay, OverlayKind};

    /// The mountinfo of a system container (abridged from a real one).
    const CONTAINER: &str = "\
115 62 0:43 / / rw,relatime - overlay none rw,lowerdir=/l
116 115 0:46 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
119 115 0:49 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
120 116 0:40 /proc/meminfo /proc/meminfo ro,nosuid,nodev,noexec,noatime - fuse.sysvisor-fs sysvisor-fs rw,user_id=0
127 119 0:40 /sys/devices/system/cpu/online /sys/devices/system/cpu/online ro,nosuid,nodev,noexec,noatime - fuse.sysvisor-fs sysvisor-fs rw
128 119 0:50 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755
66 116 0:46 /sys /proc/sys ro,nosuid,nodev,noexec,relatime - proc proc rw
68 116 0:6 /null /proc/keys rw,relatime - devtmpfs devtmpfs rw,size=1k
90 119 0:59 / /sys/firmware ro,relatime - tmpfs tmpfs ro
200 66 0:70 / /proc/sys/fs/binfmt_misc rw,relatime - binfmt_misc binfmt_misc rw
201 120 254:0 /x /proc/meminfo rw,relatime - ext4 /dev/vda rw
210 115 0:80 / /mnt\\040dir rw,nosuid,nodev,noexec,relatime - proc proc rw
211 210 0:40 /proc/meminfo /mnt\\040dir/meminfo ro,nosuid,nodev,noexec - fuse.sysvisor-fs sysvisor-fs rw
";

    fn overlays() -> Overlays {
        let proc = vec![
            Overlay { rel: "sys".into(), kind: OverlayKind::ReadOnly },
            Overlay { rel: "keys".into(), kind: OverlayKind::Mask },
        ];
        let sysfs = vec![Overlay { rel: "firmware".into(), kind: OverlayKind::Mask }];
        Overlays::new(proc, sysfs)
    }

    #[test]
    fn parses_and_unescapes() {
        let entries = parse(CONTAINER);
        assert_eq!(entries.len(), 13);
        assert_eq!(entries[1].fstype, "proc");
        assert_eq!(entries[1].mount_point, "/proc");
        assert_eq!(entries[6].root, "/sys");
        assert_eq!(entries[11].mount_point, "/mnt dir");
        assert!(parse("garbage\n1 2 3\n").is_empty());
    }

    #[test]
    fn paths_are_made_absolute_lexically() {
        assert_eq!(absolute("/", "proc/meminfo").as_deref(), Some("/proc/meminfo"));
        assert_eq!(absolute("/proc", "meminfo").as_deref(), Some("/proc/meminfo"));
        assert_eq!(absolute("/tmp", "../proc//./meminfo/").as_deref(), Some("/proc/meminfo"));
        assert_eq!(absolute("/tmp", "/../../proc").as_deref(), Some("/proc"));
        assert_eq!(absolute("/tmp", "").as_deref(), None);
    }

    #[test]
    fn the_top_mount_of_a_stack_is_found() {
        let entries = parse(CONTAINER);
        // The user's own file over the view: the user's mount is on top.
        assert_eq!(top_mount_at(&entries, "/proc/meminfo").unwrap().id, 201);
        assert_eq!(top_mount_at(&entries, "/proc").unwrap().id, 116);
        assert!(top_mount_at(&entries, "/nothing").is_none());
    }

    #[test]
    fn overlays_on_proc_and_sysfs_are_protected() {
        let entries = parse(CONTAINER);
        let overlays = overlays();
        let protected = |id: u64| {
            let entry = entries.iter().find(|e| e.id == id).unwrap();
            is_protected(&entries, entry, &overlays)
        };
        assert!(protected(120), "the meminfo view");
        assert!(protected(127), "the cpu/online view");
        assert!(protected(66), "read-only /proc/sys");
        assert!(protected(68), "masked /proc/keys");
        assert!(protected(90), "masked /sys/firmware");
        assert!(protected(211), "a view on a proc the container mounted elsewhere");
        assert!(!protected(116), "/proc itself");
        assert!(!protected(210), "a proc the container mounted");
        assert!(!protected(128), "cgroups are not overlays");
        assert!(!protected(200), "binfmt_misc sits on /proc/sys, not on an overlay path");
        assert!(!protected(201), "the user's own mount over a view");
        assert!(!protected(115), "the root");
    }

    #[test]
    fn a_proc_with_only_overlays_on_it_is_one_the_trap_made() {
        let entries = parse(CONTAINER);
        let overlays = overlays();
        let get = |id: u64| entries.iter().find(|e| e.id == id).unwrap();
        assert!(is_overlaid_root(&entries, get(210), &overlays), "/mnt dir: a view only");
        assert!(is_overlaid_root(&entries, get(116), &overlays), "/proc: views, masks, ro paths");
        assert!(!is_overlaid_root(&entries, get(119), &overlays), "/sys: cgroups on it");
        assert!(!is_overlaid_root(&entries, get(66), &overlays), "no children");
        assert!(!is_overlaid_root(&entries, get(115), &overlays), "not proc or sysfs");
    }

    #[test]
    fn the_containers_own_proc_and_sys_are_known() {
        let entries = parse(CONTAINER);
        let get = |id: u64| entries.iter().find(|e| e.id == id).unwrap();
        assert!(is_container_root_fs(&entries, get(116)), "/proc");
        assert!(is_container_root_fs(&entries, get(119)), "/sys");
        assert!(!is_container_root_fs(&entries, get(210)), "a proc elsewhere");
        assert!(!is_container_root_fs(&entries, get(128)), "cgroups at /sys/fs/cgroup");
        assert!(!is_container_root_fs(&entries, get(115)), "the root");
        // `unshare --mount-proc`: a new proc over /proc may go, the one beneath may not.
        let stacked = format!(
            "{CONTAINER}300 116 0:90 / /proc rw,nosuid - proc proc rw\n\
             301 115 0:91 / /sys rw - tmpfs tmpfs rw\n"
        );
        let entries = parse(&stacked);
        let get = |id: u64| entries.iter().find(|e| e.id == id).unwrap();
        assert!(!is_container_root_fs(&entries, get(300)), "a proc stacked on /proc");
        assert!(is_container_root_fs(&entries, get(116)));
        assert!(!is_container_root_fs(&entries, get(301)), "a tmpfs over /sys");
    }

    #[test]
    fn paths_inside_the_file_system() {
        let entries = parse(CONTAINER);
        let get = |id: u64| entries.iter().find(|e| e.id == id).unwrap();
        assert_eq!(path_in_fs(get(116), get(120)).as_deref(), Some("meminfo"));
        assert_eq!(path_in_fs(get(66), get(200)).as_deref(), Some("sys/fs/binfmt_misc"));
        assert_eq!(path_in_fs(get(119), get(127)).as_deref(), Some("devices/system/cpu/online"));
        assert_eq!(path_in_fs(get(115), get(116)).as_deref(), Some("proc"));
        assert_eq!(path_in_fs(get(116), get(128)), None, "not below");
        let children: Vec<u64> = children_of(&entries, get(119)).map(|e| e.id).collect();
        assert_eq!(children, [127, 128, 90]);
    }

    #[test]
    fn flags_from_options() {
        assert_eq!(
            mount_flags("ro,nosuid,nodev,noexec,relatime"),
            libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC
                | libc::MS_RELATIME
        );
        assert_eq!(mount_flags("rw,relatime,idmapped"), libc::MS_RELATIME);
    }
}
