//! Where the cgroup hierarchies are mounted, and which controller lives on which.
//!
//! A host may run pure cgroup v1 (one mount per hierarchy, controllers alone or co-mounted
//! like `cpu,cpuacct`), pure v2 (one unified mount), or a hybrid of the two. The daemon
//! learns this once, from `/proc/self/mountinfo`, and then asks [`Layout::mount_for`] where
//! to read each [`Controller`]: a v1 mount carrying the controller wins, otherwise the
//! unified mount if its root `cgroup.controllers` lists it.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use super::CgroupError;

/// The controllers the views read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Controller {
    Memory,
    Cpu,
    /// CPU accounting: v1 `cpuacct`; on v2 the `cpu` controller (`cpu.stat`).
    Cpuacct,
    Cpuset,
    /// Block I/O: v1 `blkio`, v2 `io`.
    Io,
    Pids,
}

impl Controller {
    /// Every controller, in declaration order (the order of [`Controller::index`]).
    pub const ALL: [Controller; 6] = [
        Controller::Memory,
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Cpuset,
        Controller::Io,
        Controller::Pids,
    ];

    /// The controller's name on a v1 mount (super options, `/proc/PID/cgroup`).
    pub fn v1_name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Cpuset => "cpuset",
            Controller::Io => "blkio",
            Controller::Pids => "pids",
        }
    }

    /// The controller's name in a v2 `cgroup.controllers`.
    pub fn v2_name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu | Controller::Cpuacct => "cpu",
            Controller::Cpuset => "cpuset",
            Controller::Io => "io",
            Controller::Pids => "pids",
        }
    }

    /// Position in [`Controller::ALL`], for per-controller tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Which hierarchy a mount is, and the controllers on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A v1 hierarchy. Controllers as in the super options, named hierarchies as
    /// `name=systemd`, exactly as `/proc/PID/cgroup` spells them.
    V1 { controllers: Vec<String> },
    /// The unified hierarchy; controllers from `cgroup.controllers` at the mount root.
    V2 { controllers: Vec<String> },
}

impl MountKind {
    pub fn controllers(&self) -> &[String] {
        match self {
            MountKind::V1 { controllers } | MountKind::V2 { controllers } => controllers,
        }
    }
}

/// One cgroup filesystem mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountKind,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// The cgroup the mount shows at its mountpoint (mountinfo field 4; `/` usually).
    pub root: String,
    /// The v1 hierarchy id (as in `/proc/cgroups` and `/proc/PID/cgroup`), if known.
    pub hierarchy_id: Option<u32>,
}

impl Mount {
    pub fn is_v2(&self) -> bool {
        matches!(self.kind, MountKind::V2 { .. })
    }

    /// Whether `name` (a v1 or v2 controller name, or `name=...`) is on this mount.
    pub fn has_controller(&self, name: &str) -> bool {
        self.kind.controllers().iter().any(|c| c == name)
    }

    /// Whether this mount serves `c`.
    pub fn serves(&self, c: Controller) -> bool {
        match self.kind {
            MountKind::V1 { .. } => self.has_controller(c.v1_name()),
            MountKind::V2 { .. } => self.has_controller(c.v2_name()),
        }
    }
}

/// The cgroup mounts of a host.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub mounts: Vec<Mount>,
}

/// v1 super options that are not controllers (`show_sb_opts` and `cgroup1_show_options`).
const V1_NON_CONTROLLER_OPTIONS: &[&str] = &[
    "rw",
    "ro",
    "sync",
    "dirsync",
    "mand",
    "lazytime",
    "noprefix",
    "xattr",
    "clone_children",
    "cpuset_v2_mode",
    "favordynmods",
    "nofavordynmods",
    "none",
    "all",
];

impl Layout {
    /// Parses `/proc/self/mountinfo` text, keeping the `cgroup` and `cgroup2` mounts.
    ///
    /// For each v2 mount this reads `<mountpoint>/cgroup.controllers` (a missing file gives
    /// an empty list). Fails with [`CgroupError::Layout`] on a line without the ` - `
    /// separator or with too few fields, and when there is no cgroup mount at all.
    pub fn from_mountinfo(text: &str) -> Result<Layout, CgroupError> {
        let mut mounts = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |what: &str| CgroupError::Layout(format!("mountinfo line {}: {what}", n + 1));
            let (pre, post) = line.split_once(" - ").ok_or_else(|| bad("no ' - ' separator"))?;
            // Fields after the separator are single-space separated and the source may be
            // empty, so split on ' ' rather than on runs of whitespace.
            let mut post = post.split(' ');
            let fstype = post.next().unwrap_or("");
            let is_v2 = match fstype {
                "cgroup" => false,
                "cgroup2" => true,
                _ => continue,
            };
            let _source = post.next();
            let super_opts = post.next().ok_or_else(|| bad("no super options"))?;
            let mut pre = pre.split_ascii_whitespace();
            let (Some(_id), Some(_parent), Some(_dev), Some(root), Some(mountpoint)) =
                (pre.next(), pre.next(), pre.next(), pre.next(), pre.next())
            else {
                return Err(bad("too few fields"));
            };
            let mountpoint = PathBuf::from(OsString::from_vec(unescape(mountpoint)));
            let root = String::from_utf8_lossy(&unescape(root)).into_owned();
            let kind = if is_v2 {
                MountKind::V2 { controllers: read_v2_controllers(&mountpoint)? }
            } else {
                MountKind::V1 { controllers: v1_controllers(super_opts) }
            };
            mounts.push(Mount { kind, mountpoint, root, hierarchy_id: None });
        }
        if mounts.is_empty() {
            return Err(CgroupError::Layout("no cgroup or cgroup2 mount in mountinfo".into()));
        }
        Ok(Layout { mounts })
    }

    /// The running host's layout, from `/proc/self/mountinfo`, with v1 hierarchy ids from
    /// `/proc/cgroups` where that file is readable.
    pub fn detect() -> Result<Layout, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path)
            .map_err(|source| CgroupError::Io { path: path.to_path_buf(), source })?;
        let mut layout = Layout::from_mountinfo(&text)?;
        if let Ok(proc_cgroups) = std::fs::read_to_string("/proc/cgroups") {
            layout.set_hierarchy_ids(&proc_cgroups);
        }
        Ok(layout)
    }

    /// Fills `hierarchy_id` of the v1 mounts from `/proc/cgroups` text
    /// (`subsys_name hierarchy num_cgroups enabled`). Named hierarchies such as
    /// `name=systemd` are not listed there and keep `None`; unparsable lines are skipped.
    pub fn set_hierarchy_ids(&mut self, proc_cgroups: &str) {
        for line in proc_cgroups.lines() {
            if line.starts_with('#') {
                continue;
            }
            let mut f = line.split_ascii_whitespace();
            let (Some(name), Some(id)) = (f.next(), f.next()) else { continue };
            let Ok(id) = id.parse::<u32>() else { continue };
            if id == 0 {
                continue;
            }
            for m in &mut self.mounts {
                if matches!(m.kind, MountKind::V1 { .. }) && m.has_controller(name) {
                    m.hierarchy_id = Some(id);
                }
            }
        }
    }

    /// Where to read `c`: a v1 mount carrying it wins, else a v2 mount whose controllers
    /// list it. Among several mounts of the same hierarchy, one showing the root cgroup
    /// (`root == "/"`) is preferred, so every cgroup is reachable.
    pub fn mount_for(&self, c: Controller) -> Option<&Mount> {
        let pick = |v2: bool| {
            let mut candidates = self.mounts.iter().filter(|m| m.is_v2() == v2 && m.serves(c));
            let first = candidates.next()?;
            if first.root == "/" {
                return Some(first);
            }
            Some(candidates.find(|m| m.root == "/").unwrap_or(first))
        };
        pick(false).or_else(|| pick(true))
    }

    /// The unified (v2) mount, if any, preferring one that shows the root cgroup.
    pub fn v2_mount(&self) -> Option<&Mount> {
        let mut v2 = self.mounts.iter().filter(|m| m.is_v2());
        let first = v2.next()?;
        if first.root == "/" {
            return Some(first);
        }
        Some(v2.find(|m| m.root == "/").unwrap_or(first))
    }
}

/// The controllers in v1 super options such as `rw,cpu,cpuacct` or `rw,xattr,name=systemd`.
fn v1_controllers(super_opts: &str) -> Vec<String> {
    super_opts
        .split(',')
        .filter(|o| !o.is_empty() && !V1_NON_CONTROLLER_OPTIONS.contains(o))
        .filter(|o| o.starts_with("name=") || !o.contains('='))
        .map(str::to_owned)
        .collect()
}

/// `<mountpoint>/cgroup.controllers`, split; a missing file gives an empty list.
fn read_v2_controllers(mountpoint: &Path) -> Result<Vec<String>, CgroupError> {
    let path = mountpoint.join("cgroup.controllers");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.split_ascii_whitespace().map(str::to_owned).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CgroupError::Io { path, source }),
    }
}

/// Undoes mountinfo's octal escapes (`\040` for space, `\011`, `\012`, `\134`).
/// A backslash not followed by three octal digits is kept as is.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if let (Some(b'\\'), Some(&d1), Some(&d2), Some(&d3)) =
            (b.get(i), b.get(i + 1), b.get(i + 2), b.get(i + 3))
        {
            let oct = |d: u8| (b'0'..=b'7').contains(&d).then(|| u32::from(d - b'0'));
            if let (Some(a), Some(m), Some(l)) = (oct(d1), oct(d2), oct(d3)) {
                let v = a * 64 + m * 8 + l;
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        if let Some(&c) = b.get(i) {
            out.push(c);
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST_V1: &str = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /nonexistent/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn parses_separate_v1_mounts() {
        let l = Layout::from_mountinfo(HOST_V1).unwrap();
        assert_eq!(l.mounts.len(), 8);
        let mem = l.mount_for(Controller::Memory).unwrap();
        assert_eq!(mem.mountpoint, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(mem.kind, MountKind::V1 { controllers: vec!["memory".into()] });
        assert_eq!(mem.root, "/");
        assert_eq!(mem.hierarchy_id, None);
        assert_eq!(
            l.mount_for(Controller::Cpuacct).unwrap().mountpoint,
            Path::new("/sys/fs/cgroup/cpuacct")
        );
        assert_eq!(
            l.mount_for(Controller::Io).unwrap().mountpoint,
            Path::new("/sys/fs/cgroup/blkio")
        );
        let systemd = &l.mounts[6];
        assert_eq!(systemd.mountpoint, Path::new("/sys/fs/cgroup/systemd"));
        assert_eq!(systemd.kind, MountKind::V1 { controllers: vec!["name=systemd".into()] });
        // The unified mount's cgroup.controllers does not exist: no controllers.
        let v2 = l.v2_mount().unwrap();
        assert_eq!(v2.kind, MountKind::V2 { controllers: vec![] });
    }

    #[test]
    fn comounted_and_options() {
        let text = "\
1 0 0:1 / /c rw - cgroup cgroup rw,cpu,cpuacct
2 0 0:2 / /n rw - cgroup cgroup rw,net_cls,net_prio,release_agent=/x,clone_children,noprefix
";
        let l = Layout::from_mountinfo(text).unwrap();
        assert!(l.mounts[0].has_controller("cpu"));
        assert!(l.mounts[0].has_controller("cpuacct"));
        assert_eq!(
            l.mounts[1].kind,
            MountKind::V1 { controllers: vec!["net_cls".into(), "net_prio".into()] }
        );
        assert_eq!(l.mount_for(Controller::Cpu), l.mount_for(Controller::Cpuacct));
        assert!(l.mount_for(Controller::Memory).is_none());
    }

    #[test]
    fn hierarchy_ids_from_proc_cgroups() {
        let mut l = Layout::from_mountinfo(HOST_V1).unwrap();
        l.set_hierarchy_ids(
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\ncpu\t1\t1\t1\n\
             memory\t4\t16\t1\nnet_cls\t0\t1\t1\ngarbage\n",
        );
        assert_eq!(l.mount_for(Controller::Memory).unwrap().hierarchy_id, Some(4));
        assert_eq!(l.mount_for(Controller::Cpu).unwrap().hierarchy_id, Some(1));
        assert_eq!(l.mount_for(Controller::Io).unwrap().hierarchy_id, None);
    }

    #[test]
    fn escapes_and_roots() {
        let text =
            "1 0 0:1 /docker/a\\040b /sys/fs/cgroup/mem\\040ory rw - cgroup cgroup rw,memory\n\
                    2 0 0:1 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let l = Layout::from_mountinfo(text).unwrap();
        assert_eq!(l.mounts[0].root, "/docker/a b");
        assert_eq!(l.mounts[0].mountpoint, Path::new("/sys/fs/cgroup/mem ory"));
        // The mount showing the root cgroup is preferred.
        assert_eq!(
            l.mount_for(Controller::Memory).unwrap().mountpoint,
            Path::new("/sys/fs/cgroup/memory")
        );
        assert_eq!(unescape("a\\\\b\\0"), b"a\\\\b\\0".to_vec());
        assert_eq!(unescape("\\777\\134"), b"\\777\\".to_vec());
        assert_eq!(unescape(""), Vec::<u8>::new());
    }

    #[test]
    fn empty_source_field() {
        let text = "5 1 0:5 / /x rw -  tmpfs  rw\n6 1 0:6 / /c rw - cgroup  rw,pids\n";
        let l = Layout::from_mountinfo(text).unwrap();
        assert_eq!(l.mounts.len(), 1);
        assert!(l.mount_for(Controller::Pids).is_some());
    }

    #[test]
    fn errors() {
        assert!(matches!(Layout::from_mountinfo(""), Err(CgroupError::Layout(_))));
        assert!(matches!(
            Layout::from_mountinfo("22 1 0:21 / /proc rw - proc proc rw\n"),
            Err(CgroupError::Layout(_))
        ));
        assert!(matches!(Layout::from_mountinfo("garbage"), Err(CgroupError::Layout(_))));
        assert!(matches!(
            Layout::from_mountinfo("1 2 - cgroup cgroup rw,cpu"),
            Err(CgroupError::Layout(_))
        ));
        assert!(matches!(
            Layout::from_mountinfo("1 2 3 / /x - cgroup"),
            Err(CgroupError::Layout(_))
        ));
        for junk in
            ["\u{0} - cgroup2", " - ", "- - -", "\\\\\\ - cgroup x y", "1 2 3 4 5 - cgroup2 x"]
        {
            let _ = Layout::from_mountinfo(junk);
        }
    }

    #[test]
    fn controller_names() {
        assert_eq!(Controller::Cpuacct.v2_name(), "cpu");
        assert_eq!(Controller::Io.v1_name(), "blkio");
        for (i, c) in Controller::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }

    #[test]
    fn host_detect() {
        let layout = Layout::detect();
        if Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
            let layout = layout.unwrap();
            let mem = layout.mount_for(Controller::Memory).unwrap();
            assert_eq!(mem.mountpoint, Path::new("/sys/fs/cgroup/memory"));
            assert!(matches!(mem.kind, MountKind::V1 { .. }));
        }
    }
}
