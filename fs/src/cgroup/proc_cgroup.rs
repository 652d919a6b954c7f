//! A process's cgroup membership, as `/proc/PID/cgroup` states it.
//!
//! Each line is `hierarchy-id:controllers:path` (`4:memory:/a/b`, `1:name=systemd:/`, and
//! `0::/x` for the unified hierarchy). The caller layer reads this once per process and
//! the reader combines it with a [`Mount`] to find the cgroup directory.
//!
//! The kernel does not escape cgroup names here, and a name may contain a newline, so a
//! process that can create cgroups could forge extra lines. Parsing therefore rejects a
//! repeated hierarchy id or a controller named on two lines as malformed, so a forged
//! line can never redirect a controller to another directory.

use std::path::{Path, PathBuf};

use super::layout::{Mount, MountKind};
use super::CgroupError;

/// One line of `/proc/PID/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CgroupEntry {
    /// Hierarchy id; 0 for the unified hierarchy.
    pub hierarchy_id: u32,
    /// Controllers (and `name=...` for named v1 hierarchies); empty for the unified one.
    pub controllers: Vec<String>,
    /// Path of the cgroup from the hierarchy's root, without a ` (deleted)` suffix.
    pub path: String,
}

/// All the lines of `/proc/PID/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProcCgroups {
    pub entries: Vec<CgroupEntry>,
}

/// Suffix the kernel appends to the path of a removed v2 cgroup.
const DELETED: &str = " (deleted)";

impl ProcCgroups {
    /// Parses `/proc/PID/cgroup` text. Malformed input (a bad hierarchy id, a path not
    /// starting with `/`, a repeated hierarchy or controller, no entry at all) gives
    /// [`CgroupError::Malformed`].
    pub fn parse(text: &str) -> Result<ProcCgroups, CgroupError> {
        Self::parse_at(text, Path::new("/proc/<pid>/cgroup"))
    }

    /// Reads and parses `/proc/<pid>/cgroup`.
    pub fn read(pid: u32) -> Result<ProcCgroups, CgroupError> {
        let path = PathBuf::from(format!("/proc/{pid}/cgroup"));
        let text = std::fs::read_to_string(&path)
            .map_err(|source| CgroupError::Io { path: path.clone(), source })?;
        Self::parse_at(&text, &path)
    }

    fn parse_at(text: &str, path: &Path) -> Result<ProcCgroups, CgroupError> {
        let bad = |n: usize, reason: &str| CgroupError::Malformed {
            path: path.to_path_buf(),
            reason: format!("line {}: {reason}", n + 1),
        };
        let mut entries: Vec<CgroupEntry> = Vec::new();
        // Split on '\n' alone: the kernel prints cgroup names raw, and a name may end in
        // '\r', which `lines()` would strip.
        for (n, line) in text.split('\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(cg_path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad(n, "expected id:controllers:path"));
            };
            let hierarchy_id: u32 = id.parse().map_err(|_| bad(n, "bad hierarchy id"))?;
            let controllers: Vec<String> =
                controllers.split(',').filter(|c| !c.is_empty()).map(str::to_owned).collect();
            if hierarchy_id == 0 && !controllers.is_empty() {
                return Err(bad(n, "hierarchy 0 with controllers"));
            }
            let cg_path = cg_path.strip_suffix(DELETED).unwrap_or(cg_path);
            if !cg_path.starts_with('/') {
                return Err(bad(n, "path does not start with '/'"));
            }
            if entries.iter().any(|e| e.hierarchy_id == hierarchy_id) {
                return Err(bad(n, "hierarchy listed twice"));
            }
            if entries.iter().any(|e| e.controllers.iter().any(|c| controllers.contains(c))) {
                return Err(bad(n, "controller listed twice"));
            }
            entries.push(CgroupEntry { hierarchy_id, controllers, path: cg_path.to_owned() });
        }
        if entries.is_empty() {
            return Err(CgroupError::Malformed {
                path: path.to_path_buf(),
                reason: "no entries".into(),
            });
        }
        Ok(ProcCgroups { entries })
    }

    /// The entry for `mount`: on v2 the `0::` entry; on v1 the entry sharing a controller
    /// with the mount (a v1 controller is bound to one hierarchy only), and with the same
    /// hierarchy id when the mount's is known.
    pub fn entry_for(&self, mount: &Mount) -> Option<&CgroupEntry> {
        match &mount.kind {
            MountKind::V2 { .. } => self.entries.iter().find(|e| e.hierarchy_id == 0),
            MountKind::V1 { controllers } => self.entries.iter().find(|e| {
                e.hierarchy_id != 0
                    && !matches!(mount.hierarchy_id, Some(h) if h != e.hierarchy_id)
                    && e.controllers.iter().any(|c| controllers.contains(c))
            }),
        }
    }

    /// The process's cgroup path on `mount`'s hierarchy (see [`ProcCgroups::entry_for`]).
    pub fn path_for(&self, mount: &Mount) -> Option<&str> {
        self.entry_for(mount).map(|e| e.path.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carriage_return_ending_a_name_is_kept() {
        let pc = ProcCgroups::parse("0::/a\r\n").expect("parse");
        assert_eq!(pc.entries[0].path, "/a\r");
    }

    const HOST: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
4:memory:/process_api/796ca6f1816cb91ed4b62aacb1c1622d
2:cpu,cpuacct:/lxc/c1
0::/
";

    fn v1(ctrl: &[&str], id: Option<u32>) -> Mount {
        Mount {
            kind: MountKind::V1 { controllers: ctrl.iter().map(|s| s.to_string()).collect() },
            mountpoint: "/m".into(),
            root: "/".into(),
            hierarchy_id: id,
        }
    }

    #[test]
    fn parses_host_file() {
        let pc = ProcCgroups::parse(HOST).unwrap();
        assert_eq!(pc.entries.len(), 6);
        assert_eq!(
            pc.entries[3],
            CgroupEntry {
                hierarchy_id: 4,
                controllers: vec!["memory".into()],
                path: "/process_api/796ca6f1816cb91ed4b62aacb1c1622d".into()
            }
        );
        assert_eq!(
            pc.entries[5],
            CgroupEntry { hierarchy_id: 0, controllers: vec![], path: "/".into() }
        );
        assert_eq!(
            pc.path_for(&v1(&["memory"], None)),
            Some("/process_api/796ca6f1816cb91ed4b62aacb1c1622d")
        );
        assert_eq!(
            pc.path_for(&v1(&["memory"], Some(4))),
            Some("/process_api/796ca6f1816cb91ed4b62aacb1c1622d")
        );
        assert_eq!(pc.path_for(&v1(&["memory"], Some(5))), None);
        assert_eq!(pc.path_for(&v1(&["cpuacct"], None)), Some("/lxc/c1"));
        assert_eq!(pc.path_for(&v1(&["cpu", "cpuacct"], Some(2))), Some("/lxc/c1"));
        assert_eq!(pc.path_for(&v1(&["name=systemd"], None)), Some("/"));
        assert_eq!(pc.path_for(&v1(&["cpuset"], None)), None);
        let v2 = Mount { kind: MountKind::V2 { controllers: vec![] }, ..v1(&[], None) };
        assert_eq!(pc.path_for(&v2), Some("/"));
    }

    #[test]
    fn deleted_and_colons() {
        let pc = ProcCgroups::parse("0::/a/b (deleted)\n").unwrap();
        assert_eq!(pc.entries[0].path, "/a/b");
        let pc = ProcCgroups::parse("3:cpuset:/a:b:c\n").unwrap();
        assert_eq!(pc.entries[0].path, "/a:b:c");
    }

    #[test]
    fn rejects_garbage() {
        for text in [
            "",
            "\n\n",
            "garbage",
            "x:memory:/",
            "4:memory",
            "4:memory:relative",
            "-1:memory:/",
            "99999999999:memory:/",
            "0:memory:/",
            "0::/a\n0::/b",
            "4:memory:/a\n4:cpu:/b",
            "4:memory:/a\n5:memory,cpu:/b",
            "\u{0}\u{1}:\u{2}",
        ] {
            match ProcCgroups::parse(text) {
                Err(CgroupError::Malformed { .. }) => {}
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn reads_own_process() {
        let pc = ProcCgroups::read(std::process::id()).unwrap();
        assert!(!pc.entries.is_empty());
        assert!(matches!(ProcCgroups::read(u32::MAX), Err(CgroupError::Io { .. })));
    }
}
