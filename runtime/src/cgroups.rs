//! Delegating a container's cgroups to its root, so that an inner systemd or dockerd can
//! make cgroups of its own.
//!
//! runc creates the container's cgroups owned by host root, which the container's root (host
//! uid BASE) cannot write: with them mounted read-write inside (see
//! [`crate::nesting::writable_cgroups`]) it could still create no sub-cgroup. runc 1.1.5
//! gives them away itself only on cgroup v2 with its systemd driver. So after `runc
//! create` (and from the `createRuntime` hook of `runc run`), before the container's first
//! instruction, [`delegate`] gives the container's root, in every hierarchy:
//!
//! - cgroup v2 (the unified hierarchy, also the one of a hybrid host): the container's
//!   cgroup directory and the files the kernel lists as delegatable in
//!   `/sys/kernel/cgroup/delegate` (`cgroup.procs`, `cgroup.threads`,
//!   `cgroup.subtree_control`, ...; the documented three when that file is missing), as the
//!   kernel's delegation model asks. The container's own limits (`memory.max`, ...) stay
//!   root's: it cannot raise them.
//! - cgroup v1, each hierarchy: the container's directory, `cgroup.procs` and `tasks`. v1
//!   has no delegation model; these are what creating sub-cgroups and moving processes
//!   into them needs. Limit files (`memory.limit_in_bytes`, ...) stay root's, and so does
//!   `notify_on_release`, which would let the container trigger the host's release agent.
//!
//! Sub-cgroups made inside belong to their maker (the kernel gives a new cgroup's files the
//! creator's ids), so their limits are the container's to set, within the container's.
//! Ownership is changed with `fchownat(AT_SYMLINK_NOFOLLOW)` on paths built from the
//! host's mountinfo and the init's `/proc/PID/cgroup`, and only below a cgroup mount.

use std::io;
use std::path::{Path, PathBuf};

use crate::rootfs::mountinfo::{self, Mount};

/// Where the kernel lists the files of a v2 cgroup that a delegatee may own.
pub const DELEGATE_FILE: &str = "/sys/kernel/cgroup/delegate";
/// cgroups(7)'s list, for kernels without [`DELEGATE_FILE`] (before 4.15).
pub const V2_DELEGATE_FALLBACK: &[&str] =
    &["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"];
/// The files of a v1 cgroup given with its directory.
pub const V1_DELEGATED: &[&str] = &["cgroup.procs", "tasks"];

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("process {pid} is in no cgroup known to this host's mounts ({detail})")]
    NotFound { pid: u32, detail: String },
}

/// How the host mounts its cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// cgroup v1 only.
    #[default]
    Legacy,
    /// cgroup v1 controllers beside a cgroup2 hierarchy without them (systemd's
    /// "hybrid", with the v2 hierarchy at `/sys/fs/cgroup/unified`).
    Hybrid,
    /// cgroup v2 only, at `/sys/fs/cgroup`.
    Unified,
}

/// One cgroup hierarchy as mounted on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where it is mounted (the first mount of it found).
    pub mount_point: PathBuf,
    /// The cgroup at that mount point (`/` but in a cgroup namespace or a bind).
    pub root: PathBuf,
    /// `None` for v2; for v1, the controllers and `name=` of the hierarchy.
    pub v1: Option<Vec<String>>,
}

/// The cgroup hierarchies mounted in `mounts`, one entry per hierarchy (a hierarchy
/// mounted twice keeps its first mount).
pub fn hierarchies(mounts: &[Mount]) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for m in mounts {
        let h = match m.fstype.as_str() {
            "cgroup2" => {
                Hierarchy { mount_point: m.mount_point.clone(), root: m.root.clone(), v1: None }
            }
            "cgroup" => {
                let mut names: Vec<String> = m
                    .super_opts
                    .split(',')
                    .filter(|o| !is_generic_option(o))
                    .map(str::to_string)
                    .collect();
                names.sort();
                Hierarchy {
                    mount_point: m.mount_point.clone(),
                    root: m.root.clone(),
                    v1: Some(names),
                }
            }
            _ => continue,
        };
        if !out.iter().any(|o| o.v1 == h.v1) {
            out.push(h);
        }
    }
    out
}

/// Super options of a v1 cgroup mount that name no controller.
fn is_generic_option(o: &str) -> bool {
    matches!(o, "rw" | "ro" | "noprefix" | "clone_children" | "xattr" | "cpuset_v2_mode" | "")
        || o.starts_with("release_agent=")
}

/// The host's layout, from its hierarchies.
pub fn layout(hierarchies: &[Hierarchy]) -> Layout {
    let v2 = hierarchies.iter().any(|h| h.v1.is_none());
    let v1 = hierarchies.iter().any(|h| h.v1.is_some());
    match (v1, v2) {
        (true, true) => Layout::Hybrid,
        (false, true) => Layout::Unified,
        _ => Layout::Legacy,
    }
}

/// The host's layout from /proc/self/mountinfo ([`Layout::Legacy`] when unreadable).
pub fn host_layout() -> Layout {
    mountinfo::read().map(|m| layout(&hierarchies(&m))).unwrap_or_default()
}

/// One of a process's cgroups, as a host path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDir {
    pub path: PathBuf,
    pub v2: bool,
}

/// The host directories of the cgroups listed in `proc_cgroup` (a `/proc/PID/cgroup`),
/// in the hierarchies of `hierarchies`. Lines naming a hierarchy that is not mounted, or a
/// cgroup outside its mount's root, are skipped.
pub fn cgroup_dirs(hierarchies: &[Hierarchy], proc_cgroup: &str) -> Vec<CgroupDir> {
    let mut out = Vec::new();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let hierarchy = if controllers.is_empty() {
            hierarchies.iter().find(|h| h.v1.is_none())
        } else {
            let mut names: Vec<String> = controllers.split(',').map(str::to_string).collect();
            names.sort();
            hierarchies.iter().find(|h| h.v1.as_ref() == Some(&names))
        };
        let Some(h) = hierarchy else { continue };
        let Ok(relative) = Path::new(path).strip_prefix(&h.root) else { continue };
        if relative.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
            continue;
        }
        out.push(CgroupDir { path: h.mount_point.join(relative), v2: h.v1.is_none() });
    }
    out
}

/// Every path to give the container's root: each directory, then its delegated files.
/// A cgroup that is not the container's own is never given away: the root of a hierarchy,
/// or one of `ours` (the cgroups of this process, run by the container's shim or by runc)
/// or an ancestor of them. The container shares those when its runc made it no cgroup in
/// a hierarchy (a runc that ignores a hybrid host's v2 hierarchy, say).
pub fn delegated_paths(
    dirs: &[CgroupDir],
    hierarchies: &[Hierarchy],
    v2_files: &[String],
    ours: &[CgroupDir],
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in dirs {
        if hierarchies.iter().any(|h| h.mount_point == dir.path)
            || ours.iter().any(|o| o.path.starts_with(&dir.path))
        {
            continue;
        }
        out.push(dir.path.clone());
        if dir.v2 {
            out.extend(v2_files.iter().map(|f| dir.path.join(f)));
        } else {
            out.extend(V1_DELEGATED.iter().map(|f| dir.path.join(f)));
        }
    }
    out
}

/// The kernel's list of delegatable v2 files (see [`DELEGATE_FILE`]).
pub fn parse_delegate_file(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

fn v2_delegate_files() -> Vec<String> {
    match std::fs::read_to_string(DELEGATE_FILE) {
        Ok(text) if !text.trim().is_empty() => parse_delegate_file(&text),
        _ => V2_DELEGATE_FALLBACK.iter().map(|s| s.to_string()).collect(),
    }
}

/// Gives the cgroups of process `pid` (the container's init) to `uid`:`gid` (see the
/// module doc). Returns the paths changed. A delegatable file the kernel does not have
/// (an older kernel's list) is skipped.
pub fn delegate(pid: u32, uid: u32, gid: u32) -> Result<Vec<PathBuf>, CgroupError> {
    let io_err = |context: String| move |source| CgroupError::Io { context, source };
    let mounts = mountinfo::read().map_err(io_err("reading /proc/self/mountinfo".into()))?;
    let hierarchies = hierarchies(&mounts);
    let cgroup_file = format!("/proc/{pid}/cgroup");
    let proc_cgroup =
        std::fs::read_to_string(&cgroup_file).map_err(io_err(format!("reading {cgroup_file}")))?;
    let dirs = cgroup_dirs(&hierarchies, &proc_cgroup);
    if dirs.is_empty() {
        return Err(CgroupError::NotFound { pid, detail: proc_cgroup.trim().replace('\n', "; ") });
    }
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(io_err("reading /proc/self/cgroup".into()))?;
    let ours = cgroup_dirs(&hierarchies, &own);
    let paths = delegated_paths(&dirs, &hierarchies, &v2_delegate_files(), &ours);
    let mut changed = Vec::with_capacity(paths.len());
    for path in paths {
        match chown_nofollow(&path, uid, gid) {
            Ok(()) => changed.push(path),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound && !dirs.iter().any(|d| d.path == path) => {}
            Err(e) => return Err(io_err(format!("chown {uid}:{gid} {}", path.display()))(e)),
        }
    }
    Ok(changed)
}

fn chown_nofollow(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: fchownat on a NUL-terminated path; no memory is shared with the kernel.
    let rc =
        unsafe { libc::fchownat(libc::AT_FDCWD, c.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's: v1 controllers, a named systemd hierarchy, an empty unified one.
    const HYBRID: &str = "\
24 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 24 0:23 / /sys/fs/cgroup rw,relatime shared:8 - tmpfs tmpfs rw,mode=755
26 25 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
27 25 0:30 / /sys/fs/cgroup/cpuacct rw,relatime shared:10 - cgroup cgroup rw,cpuacct
28 25 0:32 / /sys/fs/cgroup/memory rw,relatime shared:11 - cgroup cgroup rw,memory
29 25 0:37 / /sys/fs/cgroup/systemd rw,relatime shared:12 - cgroup cgroup rw,xattr,name=systemd
30 25 0:38 / /sys/fs/cgroup/unified rw,relatime shared:13 - cgroup2 cgroup2 rw
31 1 0:28 / /var/lib/x/cgroup-again rw,relatime - cgroup cgroup rw,memory
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/docker/abc
4:memory:/docker/abc
2:cpuacct:/docker/abc
1:cpu:/docker/abc
0::/docker/abc
";
    /// A v2 host with systemd, where the hierarchy is mounted once more by a container's
    /// bind (root not `/`).
    const UNIFIED: &str = "\
30 24 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn parse(text: &str) -> Vec<Hierarchy> {
        hierarchies(&mountinfo::parse(text.as_bytes()))
    }

    #[test]
    fn hybrid_host() {
        let h = parse(HYBRID);
        assert_eq!(layout(&h), Layout::Hybrid);
        assert_eq!(h.len(), 5, "{h:?}"); // the second memory mount is the same hierarchy
        assert_eq!(h[3].v1.as_deref(), Some(&["name=systemd".to_string()][..]));
        let dirs = cgroup_dirs(&h, HYBRID_CGROUP);
        let paths: Vec<_> = dirs.iter().map(|d| (d.path.to_str().unwrap(), d.v2)).collect();
        assert_eq!(
            paths,
            [
                ("/sys/fs/cgroup/systemd/docker/abc", false),
                ("/sys/fs/cgroup/memory/docker/abc", false),
                ("/sys/fs/cgroup/cpuacct/docker/abc", false),
                ("/sys/fs/cgroup/cpu/docker/abc", false),
                ("/sys/fs/cgroup/unified/docker/abc", true),
            ]
        );
        let v2 = parse_delegate_file(
            "cgroup.procs\ncgroup.threads\ncgroup.subtree_control\nmemory.oom.group\n",
        );
        let all = delegated_paths(&dirs, &h, &v2, &[]);
        let all: Vec<_> = all.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            &all[..3],
            [
                "/sys/fs/cgroup/systemd/docker/abc",
                "/sys/fs/cgroup/systemd/docker/abc/cgroup.procs",
                "/sys/fs/cgroup/systemd/docker/abc/tasks"
            ]
        );
        assert_eq!(
            &all[all.len() - 5..],
            [
                "/sys/fs/cgroup/unified/docker/abc",
                "/sys/fs/cgroup/unified/docker/abc/cgroup.procs",
                "/sys/fs/cgroup/unified/docker/abc/cgroup.threads",
                "/sys/fs/cgroup/unified/docker/abc/cgroup.subtree_control",
                "/sys/fs/cgroup/unified/docker/abc/memory.oom.group",
            ]
        );
        assert!(!all.iter().any(|p| p.contains("limit") || p.contains("notify_on_release")));
    }

    #[test]
    fn unified_host_with_combined_v1_names_and_odd_lines() {
        let h = parse(UNIFIED);
        assert_eq!(layout(&h), Layout::Unified);
        let dirs = cgroup_dirs(&h, "0::/system.slice/docker-abc.scope\n");
        assert_eq!(
            dirs,
            [CgroupDir { path: "/sys/fs/cgroup/system.slice/docker-abc.scope".into(), v2: true }]
        );
        // Unmounted hierarchies, escapes and garbage are skipped.
        assert!(cgroup_dirs(&h, "3:cpu,cpuacct:/x\n0::/../../etc\nnonsense\n").is_empty());
        // Controllers listed in another order name the same hierarchy.
        let v1 =
            parse("26 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpuacct,cpu\n");
        assert_eq!(layout(&v1), Layout::Legacy);
        let dirs = cgroup_dirs(&v1, "2:cpu,cpuacct:/docker/abc\n");
        assert_eq!(dirs[0].path, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/docker/abc"));
    }

    #[test]
    fn a_bind_of_a_sub_cgroup_maps_paths_below_its_root() {
        let h = parse("40 1 0:27 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let dirs = cgroup_dirs(&h, "0::/kubepods/pod1/ctr\n");
        assert_eq!(dirs[0].path, PathBuf::from("/sys/fs/cgroup/ctr"));
        assert!(cgroup_dirs(&h, "0::/elsewhere\n").is_empty());
    }

    #[test]
    fn the_root_cgroup_is_never_given_away() {
        let h = parse(UNIFIED);
        let dirs = cgroup_dirs(&h, "0::/\n");
        assert_eq!(dirs.len(), 1);
        assert!(delegated_paths(&dirs, &h, &["cgroup.procs".into()], &[]).is_empty());
    }

    #[test]
    fn the_runtimes_own_cgroups_and_their_parents_are_never_given_away() {
        let h = parse(HYBRID);
        // runc made the container no cgroup in the unified hierarchy: it shares the shim's.
        let container = "4:memory:/docker/abc\n0::/system.slice/containerd.service\n";
        let shim =
            "4:memory:/system.slice/containerd.service\n0::/system.slice/containerd.service/x\n";
        let dirs = cgroup_dirs(&h, container);
        let ours = cgroup_dirs(&h, shim);
        let all = delegated_paths(&dirs, &h, &["cgroup.procs".into()], &ours);
        assert_eq!(
            all,
            [
                PathBuf::from("/sys/fs/cgroup/memory/docker/abc"),
                PathBuf::from("/sys/fs/cgroup/memory/docker/abc/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/memory/docker/abc/tasks"),
            ]
        );
    }

    #[test]
    fn delegate_file_parsing() {
        assert_eq!(parse_delegate_file("a\nb c\n\n"), ["a", "b", "c"]);
        assert!(parse_delegate_file("").is_empty());
    }
}
