//! [`Cgroups`]: the one interface the views use to read a process's cgroup figures.
//!
//! It finds, per controller, the mount to read ([`Layout::mount_for`], decided once in
//! [`Cgroups::new`]), resolves the process's cgroup directory on it from
//! `/proc/PID/cgroup`, and hands the directory to the [`v1`] or [`v2`] reader, which fold
//! limits over ancestors with [`walk_up`]: a limit on a parent binds its children, so the
//! effective limit is the minimum from the cgroup up to the mount point.
//!
//! This sits on the read path of every virtual /proc file, so it reads each file once,
//! reuses one path buffer per walk, and never panics on file contents: a removed cgroup
//! gives [`CgroupError::Io`], bad contents [`CgroupError::Malformed`] with the path.

use std::io::ErrorKind;
use std::ops::ControlFlow;
use std::path::{Component, Path, PathBuf};

use super::layout::{Controller, Layout, Mount};
use super::proc_cgroup::ProcCgroups;
use super::{v1, v2, CgroupError, CpuLimits, CpuQuota, CpuUsage, IoStats, MemoryInfo, ParseError};

/// Reads cgroup limits and usage for any process, on v1, v2 or hybrid hosts.
#[derive(Debug, Clone)]
pub struct Cgroups {
    layout: Layout,
    /// Per [`Controller::index`], the position in `layout.mounts` of its mount.
    by_controller: [Option<usize>; Controller::ALL.len()],
    /// The mount whose thread lists [`Cgroups::tasks`] reads.
    tasks_mount: Option<usize>,
    /// USER_HZ, for v1 `cpuacct.stat` ticks.
    clk_tck: u64,
}

impl Cgroups {
    pub fn new(layout: Layout) -> Cgroups {
        let position = |m: Option<&Mount>| {
            m.and_then(|m| layout.mounts.iter().position(|x| std::ptr::eq(x, m)))
        };
        let by_controller = Controller::ALL.map(|c| position(layout.mount_for(c)));
        let tasks_mount = position(
            layout
                .mount_for(Controller::Cpu)
                .or_else(|| layout.mount_for(Controller::Cpuacct))
                .or_else(|| layout.mount_for(Controller::Pids))
                .or_else(|| layout.v2_mount()),
        );
        Cgroups { by_controller, tasks_mount, clk_tck: clk_tck(), layout }
    }

    /// The running host's cgroups ([`Layout::detect`]).
    pub fn detect() -> Result<Cgroups, CgroupError> {
        Layout::detect().map(Cgroups::new)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn mount(&self, c: Controller) -> Option<&Mount> {
        let i = self.by_controller.get(c.index()).copied().flatten()?;
        self.layout.mounts.get(i)
    }

    /// The process's cgroup directory for `c`: the mount point plus its cgroup path with
    /// the mount's root stripped. `None` when no mount serves `c`, or the cgroup is not
    /// visible under the mount (outside its root, or a path with `..`).
    pub fn dir(&self, pc: &ProcCgroups, c: Controller) -> Option<PathBuf> {
        resolve(self.mount(c)?, pc)
    }

    /// The mount for `c` and the process's directory on it; `None` when no mount serves
    /// `c`, an error when one does but the process's cgroup is not visible under it.
    fn locate(
        &self,
        pc: &ProcCgroups,
        c: Controller,
    ) -> Result<Option<(&Mount, PathBuf)>, CgroupError> {
        let Some(m) = self.mount(c) else { return Ok(None) };
        match resolve(m, pc) {
            Some(dir) => Ok(Some((m, dir))),
            None => Err(not_visible(m, pc)),
        }
    }

    /// Memory figures, limits folded over ancestors. `None` when no memory controller is
    /// mounted, or (v2) the cgroup and its ancestors below the root do not enable it.
    pub fn memory(&self, pc: &ProcCgroups) -> Result<Option<MemoryInfo>, CgroupError> {
        match self.locate(pc, Controller::Memory)? {
            None => Ok(None),
            Some((m, dir)) if m.is_v2() => v2::read_memory(dir, &m.mountpoint),
            Some((m, dir)) => v1::read_memory(dir, &m.mountpoint).map(Some),
        }
    }

    /// The effective cpuset and the tightest CFS quota along the path.
    pub fn cpu_limits(&self, pc: &ProcCgroups) -> Result<CpuLimits, CgroupError> {
        let quota = match self.locate(pc, Controller::Cpu)? {
            None => None,
            Some((m, dir)) if m.is_v2() => v2::read_cpu_quota(dir, &m.mountpoint)?,
            Some((m, dir)) => v1::read_cpu_quota(dir, &m.mountpoint)?,
        };
        let cpuset = match self.locate(pc, Controller::Cpuset)? {
            None => None,
            Some((m, dir)) if m.is_v2() => v2::read_cpuset(dir, &m.mountpoint)?,
            Some((_, dir)) => Some(v1::read_cpuset(dir)?),
        };
        Ok(CpuLimits { cpuset, quota })
    }

    /// CPU time used by the cgroup (and its descendants). `None` when no cpuacct (v1) or
    /// cpu (v2) controller is mounted.
    pub fn cpu_usage(&self, pc: &ProcCgroups) -> Result<Option<CpuUsage>, CgroupError> {
        match self.locate(pc, Controller::Cpuacct)? {
            None => Ok(None),
            Some((m, dir)) if m.is_v2() => v2::read_cpu_usage(dir, &m.mountpoint),
            Some((_, dir)) => v1::read_cpu_usage(dir, self.clk_tck).map(Some),
        }
    }

    /// Block I/O per device, sorted by (major, minor). `None` when no blkio/io controller
    /// is mounted or the cgroup has no statistics file.
    pub fn io(&self, pc: &ProcCgroups) -> Result<Option<IoStats>, CgroupError> {
        let devices = match self.locate(pc, Controller::Io)? {
            None => None,
            Some((m, dir)) if m.is_v2() => v2::read_io(dir, &m.mountpoint)?,
            Some((_, dir)) => v1::read_io(dir)?,
        };
        Ok(devices.map(|devices| IoStats { devices }))
    }

    /// Every thread id in the cgroup and its descendants (a container's processes often
    /// sit in sub-cgroups; on v2 they must, once the container enables controllers),
    /// ascending. Read from v1 `tasks` of the cpu, cpuacct or pids hierarchy, else v2
    /// `cgroup.threads`. Descendants removed during the walk are skipped.
    pub fn tasks(&self, pc: &ProcCgroups) -> Result<Vec<u32>, CgroupError> {
        let m = self.tasks_mount.and_then(|i| self.layout.mounts.get(i)).ok_or_else(|| {
            CgroupError::Layout("no cpu, cpuacct or pids hierarchy and no unified hierarchy".into())
        })?;
        let dir = resolve(m, pc).ok_or_else(|| not_visible(m, pc))?;
        let file = if m.is_v2() { v2::THREADS_FILE } else { v1::TASKS_FILE };
        subtree_tasks(dir, file)
    }

    /// Whether the process sits in the root cgroup of the hierarchy serving `c`, or `c`
    /// is not mounted at all: then that controller gives it nothing to virtualize.
    pub fn is_root_for(&self, pc: &ProcCgroups, c: Controller) -> bool {
        self.layout.mount_for(c).is_none_or(|m| at_mount_root(m, pc))
    }

    /// Whether the cgroup that [`Cgroups::tasks`] lists is a hierarchy's root (so its
    /// tasks are every task of the host).
    pub fn tasks_at_root(&self, pc: &ProcCgroups) -> bool {
        self.tasks_mount
            .and_then(|i| self.layout.mounts.get(i))
            .is_none_or(|m| at_mount_root(m, pc))
    }

    /// Whether the process is in the root cgroup of every hierarchy (path `/`, or the
    /// root of the mount showing that hierarchy): then there is nothing to virtualize.
    pub fn is_root(&self, pc: &ProcCgroups) -> bool {
        pc.entries.iter().all(|e| {
            e.path == "/"
                || self.layout.mounts.iter().any(|m| {
                    m.root == e.path && pc.entry_for(m).is_some_and(|x| std::ptr::eq(x, e))
                })
        })
    }
}

/// Where a process's pressure (PSI) figures for one resource come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PressureSource {
    /// The process is in the root of the unified hierarchy: the host's own file is its.
    Host,
    /// Its unified cgroup's file (`cpu.pressure`, ...), as read.
    Cgroup(String),
    /// No per-cgroup figures: no unified hierarchy (pure v1), the cgroup is not visible
    /// under it, or the kernel has no such file (PSI off, `cgroup.pressure` 0).
    Unavailable,
}

impl Cgroups {
    /// The pressure figures of `resource` (`cpu`, `memory`, `io`) for the process: its
    /// cgroup on the unified hierarchy, which the kernel's PSI accounting follows on v2
    /// and on hybrid hosts alike (whether controllers are enabled there or not).
    pub fn pressure(
        &self,
        pc: &ProcCgroups,
        resource: &str,
    ) -> Result<PressureSource, CgroupError> {
        let Some(m) = self.layout.v2_mount() else {
            return Ok(PressureSource::Unavailable);
        };
        if pc.path_for(m).is_none() {
            return Ok(PressureSource::Unavailable);
        }
        if at_mount_root(m, pc) && m.root == "/" {
            return Ok(PressureSource::Host);
        }
        let Some(dir) = resolve(m, pc) else {
            return Ok(PressureSource::Unavailable);
        };
        let path = dir.join(format!("{resource}.pressure"));
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(PressureSource::Cgroup(text)),
            // Missing (PSI off), or refused with EOPNOTSUPP (`cgroup.pressure` set to 0).
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EOPNOTSUPP)) => {
                Ok(PressureSource::Unavailable)
            }
            Err(e) => Err(io_error(&path, e)),
        }
    }
}

fn at_mount_root(m: &Mount, pc: &ProcCgroups) -> bool {
    pc.path_for(m).is_none_or(|p| p.trim_end_matches('/') == m.root.trim_end_matches('/'))
}

fn not_visible(m: &Mount, pc: &ProcCgroups) -> CgroupError {
    CgroupError::Layout(format!(
        "cgroup {:?} of the process is not visible under {} (root {:?})",
        pc.path_for(m).unwrap_or("<none>"),
        m.mountpoint.display(),
        m.root
    ))
}

/// The directory of the process's cgroup on `m` (see [`Cgroups::dir`]).
fn resolve(m: &Mount, pc: &ProcCgroups) -> Option<PathBuf> {
    let path = pc.path_for(m)?;
    let root = m.root.trim_end_matches('/');
    let rel = path.strip_prefix(root)?;
    if !(rel.is_empty() || rel.starts_with('/')) {
        return None; // `/a/bc` is not below the root `/a/b`.
    }
    let rel = Path::new(rel.trim_start_matches('/'));
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(m.mountpoint.join(rel))
}

/// USER_HZ; 100 if sysconf fails.
fn clk_tck() -> u64 {
    // SAFETY: sysconf takes no pointers and has no side effects; any return is valid.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(v).ok().filter(|&v| v > 0).unwrap_or(100)
}

/// Tasks of `dir` and all directories below it. `dir` itself must have `file`.
fn subtree_tasks(dir: PathBuf, file: &str) -> Result<Vec<u32>, CgroupError> {
    let mut out = Vec::new();
    let mut stack = vec![dir];
    let mut top = true;
    while let Some(mut dir) = stack.pop() {
        let text = if top {
            read_file(&mut dir, file)?
        } else {
            match read_optional(&mut dir, file) {
                Ok(Some(text)) => text,
                // Removed while we walked (ENOENT, or ENODEV from a dying cgroup).
                Ok(None) | Err(CgroupError::Io { .. }) => continue,
                Err(e) => return Err(e),
            }
        };
        v1::parse_tasks_into(&text, &mut out).map_err(|e| e.at(&dir.join(file)))?;
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(entry.path());
                    }
                }
            }
            Err(source) if top => return Err(CgroupError::Io { path: dir, source }),
            Err(_) => {}
        }
        top = false;
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

// ---- Helpers shared by the v1 and v2 readers. ----

fn io_error(path: &Path, source: std::io::Error) -> CgroupError {
    if source.kind() == ErrorKind::InvalidData {
        CgroupError::Malformed { path: path.to_path_buf(), reason: "not UTF-8".into() }
    } else {
        CgroupError::Io { path: path.to_path_buf(), source }
    }
}

/// Reads `dir/name`; a missing file is an error. `dir` is unchanged on return.
pub(super) fn read_file(dir: &mut PathBuf, name: &str) -> Result<String, CgroupError> {
    dir.push(name);
    let out = std::fs::read_to_string(&*dir).map_err(|e| io_error(dir, e));
    dir.pop();
    out
}

/// Reads `dir/name`; a missing file gives `None`. `dir` is unchanged on return.
pub(super) fn read_optional(dir: &mut PathBuf, name: &str) -> Result<Option<String>, CgroupError> {
    dir.push(name);
    let out = match std::fs::read_to_string(&*dir) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(dir, e)),
    };
    dir.pop();
    out
}

/// Reads and parses `dir/name`; a missing file is an error.
pub(super) fn read_parse<T>(
    dir: &mut PathBuf,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, ParseError>,
) -> Result<T, CgroupError> {
    let text = read_file(dir, name)?;
    parse(&text).map_err(|e| e.at(&dir.join(name)))
}

/// Reads and parses `dir/name`; a missing file gives `None`.
pub(super) fn read_parse_optional<T>(
    dir: &mut PathBuf,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, ParseError>,
) -> Result<Option<T>, CgroupError> {
    match read_optional(dir, name)? {
        Some(text) => parse(&text).map(Some).map_err(|e| e.at(&dir.join(name))),
        None => Ok(None),
    }
}

/// An error unless `dir` exists (tells "file not there" from "cgroup removed").
pub(super) fn ensure_dir(dir: &Path) -> Result<(), CgroupError> {
    std::fs::metadata(dir)
        .map(drop)
        .map_err(|source| CgroupError::Io { path: dir.to_path_buf(), source })
}

/// Calls `f(dir, is_leaf)` on `dir`, then on each ancestor up to and including `top`,
/// until `f` breaks (giving its value). `dir` ends at the level where it stopped.
pub(super) fn walk_up<T>(
    dir: &mut PathBuf,
    top: &Path,
    mut f: impl FnMut(&mut PathBuf, bool) -> Result<ControlFlow<T>, CgroupError>,
) -> Result<Option<T>, CgroupError> {
    let mut is_leaf = true;
    while dir.starts_with(top) {
        if let ControlFlow::Break(v) = f(dir, is_leaf)? {
            return Ok(Some(v));
        }
        if dir.as_path() == top || !dir.pop() {
            break;
        }
        is_leaf = false;
    }
    Ok(None)
}

/// The tighter of two limits, `None` meaning unlimited.
pub(super) fn min_limit(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The tighter of two CFS quotas by CPUs allowed (`quota / period`); ties keep `best`.
pub(super) fn tighter(best: Option<CpuQuota>, q: CpuQuota) -> Option<CpuQuota> {
    match best {
        Some(b)
            if u128::from(b.quota_us) * u128::from(q.period_us)
                <= u128::from(q.quota_us) * u128::from(b.period_us) =>
        {
            Some(b)
        }
        _ => Some(q),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::{CpuQuota, DeviceIo, MemoryStat, MountKind};

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cgroup")
    }

    /// The fixture's `mountinfo`, with `@ROOT@` replaced by the fixture directory.
    fn layout(name: &str) -> Layout {
        let root = fixtures().join(name);
        let text = std::fs::read_to_string(root.join("mountinfo")).unwrap();
        let escaped = root.to_str().unwrap().replace('\\', "\\134").replace(' ', "\\040");
        Layout::from_mountinfo(&text.replace("@ROOT@", &escaped)).unwrap()
    }

    fn cgroups(name: &str) -> Cgroups {
        Cgroups::new(layout(name))
    }

    /// The fixture's `cgroup` file (a /proc/PID/cgroup).
    fn proc_cgroups(name: &str) -> ProcCgroups {
        ProcCgroups::parse(&std::fs::read_to_string(fixtures().join(name).join("cgroup")).unwrap())
            .unwrap()
    }

    fn v1_mount(dir: &Path, controllers: &[&str], root: &str) -> Mount {
        Mount {
            kind: MountKind::V1 {
                controllers: controllers.iter().map(|s| s.to_string()).collect(),
            },
            mountpoint: dir.to_path_buf(),
            root: root.into(),
            hierarchy_id: None,
        }
    }

    fn v2_mount(dir: &Path, controllers: &[&str]) -> Mount {
        Mount {
            kind: MountKind::V2 {
                controllers: controllers.iter().map(|s| s.to_string()).collect(),
            },
            mountpoint: dir.to_path_buf(),
            root: "/".into(),
            hierarchy_id: None,
        }
    }

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    #[test]
    fn send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Cgroups>();
        check::<ProcCgroups>();
        check::<CgroupError>();
    }

    #[test]
    fn v1_separate_mounts() {
        let cg = cgroups("v1");
        let pc = proc_cgroups("v1");
        let base = fixtures().join("v1");
        assert_eq!(cg.dir(&pc, Controller::Memory), Some(base.join("memory/parent/child")));
        assert_eq!(cg.dir(&pc, Controller::Cpuacct), Some(base.join("cpuacct/parent/child")));
        assert_eq!(cg.dir(&pc, Controller::Io), Some(base.join("blkio/parent/child")));
        assert!(!cg.is_root(&pc));

        let mem = cg.memory(&pc).unwrap().unwrap();
        // Parent limits 1 GiB (memsw 1.5 GiB); the child's looser 2 GiB (memsw 4 GiB) lose.
        assert_eq!(mem.limit, Some(GIB));
        assert_eq!(mem.swap_limit, Some(GIB / 2));
        assert_eq!(mem.usage, 100 * MIB);
        assert_eq!(mem.swap_usage, 10 * MIB);
        assert_eq!(
            mem.stat,
            MemoryStat {
                anon: 60 * MIB,
                file: 40 * MIB,
                shmem: MIB,
                mapped_file: 2 * MIB,
                dirty: 4096,
                writeback: 0,
                active_anon: 50 * MIB,
                inactive_anon: 10 * MIB,
                active_file: 30 * MIB,
                inactive_file: 10 * MIB,
                unevictable: 8192,
                swapcached: 12288,
                ..MemoryStat::default()
            }
        );

        let cpu = cg.cpu_limits(&pc).unwrap();
        // Parent 150000/100000 = 1.5 CPUs beats the child's 100000/50000 = 2 CPUs, even
        // though the child's quota number is smaller.
        assert_eq!(cpu.quota, Some(CpuQuota { quota_us: 150000, period_us: 100000 }));
        assert_eq!(cpu.cpuset, Some(vec![0, 1, 3]));
        assert_eq!(cpu.visible_cpus(&[0, 1, 2, 3]), vec![0, 1]);

        let usage = cg.cpu_usage(&pc).unwrap().unwrap();
        assert_eq!(usage.per_cpu, Some(vec![(100, 10), (200, 20), (300, 30), (400, 40)]));
        assert_eq!((usage.user_ns, usage.system_ns), (1000, 100));

        let io = cg.io(&pc).unwrap().unwrap();
        assert_eq!(
            io.devices,
            vec![
                DeviceIo {
                    major: 8,
                    minor: 0,
                    read_ios: 10,
                    write_ios: 20,
                    read_bytes: 40960,
                    write_bytes: 81920,
                    ..Default::default()
                },
                DeviceIo {
                    major: 8,
                    minor: 16,
                    read_ios: 1,
                    write_ios: 2,
                    discard_ios: 3,
                    read_bytes: 4096,
                    write_bytes: 8192,
                    discard_bytes: 12288
                },
                DeviceIo {
                    major: 253,
                    minor: 0,
                    read_ios: 5,
                    write_ios: 0,
                    read_bytes: 20480,
                    ..Default::default()
                },
            ]
        );

        // Threads of the cpu hierarchy's child and its sub-cgroup, not the parent's.
        assert_eq!(cg.tasks(&pc).unwrap(), vec![101, 102, 103]);
    }

    #[test]
    fn v1_comounted() {
        let cg = cgroups("v1-comounted");
        let pc = proc_cgroups("v1-comounted");
        let base = fixtures().join("v1-comounted");
        assert_eq!(cg.dir(&pc, Controller::Cpu), Some(base.join("cpu,cpuacct/lxc/c1")));
        assert_eq!(cg.dir(&pc, Controller::Cpuacct), cg.dir(&pc, Controller::Cpu));
        assert_eq!(cg.dir(&pc, Controller::Cpuset), None);
        assert_eq!(cg.dir(&pc, Controller::Io), None);

        let mem = cg.memory(&pc).unwrap().unwrap();
        // The walk finds 512 MiB; memory.stat's hierarchical limit (set above the mount
        // root) is tighter. No memsw files: swap unlimited, unused.
        assert_eq!(mem.limit, Some(256 * MIB));
        assert_eq!(mem.swap_limit, None);
        assert_eq!(mem.swap_usage, 0);
        assert_eq!(mem.usage, 50 * MIB);

        let cpu = cg.cpu_limits(&pc).unwrap();
        assert_eq!(cpu.quota, Some(CpuQuota { quota_us: 50000, period_us: 100000 }));
        assert_eq!(cpu.cpuset, None);

        let usage = cg.cpu_usage(&pc).unwrap().unwrap();
        assert_eq!(usage.per_cpu, Some(vec![(1000, 100), (2000, 200)]));
        assert_eq!((usage.user_ns, usage.system_ns), (3000, 300));
        assert_eq!(cg.io(&pc).unwrap(), None);
        assert_eq!(cg.tasks(&pc).unwrap(), vec![42]);
    }

    #[test]
    fn v1_old_kernel_cpuacct() {
        // cpuacct without usage_all / usage_percpu_{user,sys}: ratio from cpuacct.stat.
        let cg = cgroups("v1-comounted");
        let pc = ProcCgroups::parse("4:cpu,cpuacct:/old\n3:memory:/\n").unwrap();
        let usage = cg.cpu_usage(&pc).unwrap().unwrap();
        assert_eq!((usage.user_ns, usage.system_ns), (3000, 1000));
        assert_eq!(usage.per_cpu, Some(vec![(1500, 500), (1500, 500)]));
        // At the root: no limits anywhere.
        let mem = cg.memory(&pc).unwrap().unwrap();
        assert_eq!(mem.limit, None);
        assert_eq!(cg.cpu_limits(&pc).unwrap().quota, None);
    }

    #[test]
    fn v2_unified() {
        let cg = cgroups("v2");
        let pc = proc_cgroups("v2");
        let base = fixtures().join("v2");
        assert_eq!(cg.dir(&pc, Controller::Memory), Some(base.join("machine.slice/ctr")));
        assert_eq!(cg.dir(&pc, Controller::Cpuacct), Some(base.join("machine.slice/ctr")));
        assert!(!cg.is_root(&pc));

        let mem = cg.memory(&pc).unwrap().unwrap();
        assert_eq!(mem.limit, Some(2 * GIB)); // on machine.slice; ctr says max
        assert_eq!(mem.swap_limit, Some(GIB));
        assert_eq!(mem.usage, 300 * MIB);
        assert_eq!(mem.swap_usage, 5 * MIB);
        assert_eq!(mem.stat.anon, 200 * MIB);
        assert_eq!(mem.stat.slab_unreclaimable, 3 * MIB);
        assert_eq!(mem.stat.kernel_stack, 65536);

        let cpu = cg.cpu_limits(&pc).unwrap();
        assert_eq!(cpu.quota, Some(CpuQuota { quota_us: 200000, period_us: 100000 }));
        assert_eq!(cpu.cpuset, Some(vec![2, 3]));

        let usage = cg.cpu_usage(&pc).unwrap().unwrap();
        assert_eq!(
            usage,
            CpuUsage { user_ns: 7_000_000_000, system_ns: 3_000_000_000, per_cpu: None }
        );

        let io = cg.io(&pc).unwrap().unwrap();
        let keys: Vec<_> = io.devices.iter().map(|d| (d.major, d.minor)).collect();
        assert_eq!(keys, vec![(8, 0), (259, 0)]);
        assert_eq!(io.devices[1].read_bytes, 1048576);
        assert_eq!(io.devices[1].write_ios, 20);

        assert_eq!(cg.tasks(&pc).unwrap(), vec![200, 201, 202, 300]);
    }

    #[test]
    fn v2_controller_not_enabled_at_leaf() {
        // `nomem` has no memory.*, cpuset.*, io.stat: figures come from `ctr`.
        let cg = cgroups("v2");
        let pc = ProcCgroups::parse("0::/machine.slice/ctr/nomem\n").unwrap();
        let mem = cg.memory(&pc).unwrap().unwrap();
        assert_eq!(mem.usage, 300 * MIB);
        assert_eq!(mem.limit, Some(2 * GIB));
        assert_eq!(cg.cpu_limits(&pc).unwrap().cpuset, Some(vec![2, 3]));
        assert!(cg.io(&pc).unwrap().is_some());
        // cpu.stat is its own.
        assert_eq!(cg.cpu_usage(&pc).unwrap().unwrap().user_ns, 1_000_000);
        assert_eq!(cg.tasks(&pc).unwrap(), vec![300]);
    }

    #[test]
    fn v2_root() {
        let cg = cgroups("v2");
        let pc = ProcCgroups::parse("0::/\n").unwrap();
        assert!(cg.is_root(&pc));
        assert_eq!(cg.memory(&pc).unwrap(), None);
        let cpu = cg.cpu_limits(&pc).unwrap();
        assert_eq!(cpu.quota, None);
        assert_eq!(cpu.cpuset, Some((0..8).collect()));
        assert!(cg.cpu_usage(&pc).unwrap().is_some());
    }

    #[test]
    fn hybrid() {
        let cg = cgroups("hybrid");
        let pc = proc_cgroups("hybrid");
        let base = fixtures().join("hybrid");
        // v1 hierarchies win; io is only on the unified one.
        assert_eq!(cg.dir(&pc, Controller::Memory), Some(base.join("memory/user.slice")));
        assert_eq!(cg.dir(&pc, Controller::Cpuacct), Some(base.join("cpu,cpuacct/user.slice")));
        assert_eq!(
            cg.dir(&pc, Controller::Io),
            Some(base.join("unified/user.slice/session-1.scope"))
        );
        assert_eq!(cg.dir(&pc, Controller::Pids), None);
        assert!(!cg.is_root(&pc));

        let mem = cg.memory(&pc).unwrap().unwrap();
        assert_eq!(mem.limit, Some(4 * GIB));
        assert_eq!(mem.swap_limit, Some(0));
        let cpu = cg.cpu_limits(&pc).unwrap();
        assert_eq!(cpu.quota, None);
        assert_eq!(cpu.cpuset, Some(vec![0, 1, 2, 3]));
        assert_eq!(cg.cpu_usage(&pc).unwrap().unwrap().user_ns, 5);
        let io = cg.io(&pc).unwrap().unwrap();
        assert_eq!(io.devices.len(), 1);
        assert_eq!(io.devices[0].read_ios, 9);
        assert_eq!(cg.tasks(&pc).unwrap(), vec![7]);
    }

    #[test]
    fn garbage_is_malformed() {
        let base = fixtures().join("broken/v1");
        let cg = Cgroups::new(Layout {
            mounts: vec![
                v1_mount(&base.join("memory"), &["memory"], "/"),
                v1_mount(&base.join("cpu,cpuacct"), &["cpu", "cpuacct"], "/"),
                v1_mount(&base.join("cpuset"), &["cpuset"], "/"),
                v1_mount(&base.join("blkio"), &["blkio"], "/"),
            ],
        });
        let pc = ProcCgroups::parse(
            "4:memory:/garbage\n3:cpu,cpuacct:/garbage\n2:cpuset:/garbage\n1:blkio:/garbage\n",
        )
        .unwrap();
        let malformed = |r: Result<(), CgroupError>, file: &str| match r {
            Err(CgroupError::Malformed { path, .. }) => assert!(path.ends_with(file), "{path:?}"),
            other => panic!("{file}: {other:?}"),
        };
        malformed(cg.memory(&pc).map(drop), "garbage/memory.stat");
        malformed(cg.cpu_limits(&pc).map(drop), "garbage/cpu.cfs_quota_us");
        malformed(cg.cpu_usage(&pc).map(drop), "garbage/cpuacct.usage_percpu_user");
        malformed(cg.io(&pc).map(drop), "garbage/blkio.throttle.io_serviced");
        malformed(cg.tasks(&pc).map(drop), "garbage/tasks");

        // Invalid UTF-8 is malformed too.
        let pc = ProcCgroups::parse(
            "4:memory:/binary\n3:cpu,cpuacct:/\n2:cpuset:/garbage2\n1:blkio:/\n",
        )
        .unwrap();
        malformed(cg.memory(&pc).map(drop), "binary/memory.usage_in_bytes");
        malformed(cg.cpu_limits(&pc).map(drop), "garbage2/cpuset.effective_cpus");

        let v2 = fixtures().join("broken/v2");
        let cg = Cgroups::new(Layout {
            mounts: vec![v2_mount(&v2, &["cpu", "memory", "io", "cpuset"])],
        });
        let pc = ProcCgroups::parse("0::/garbage\n").unwrap();
        malformed(cg.memory(&pc).map(drop), "garbage/memory.max");
        malformed(cg.cpu_limits(&pc).map(drop), "garbage/cpu.max");
        malformed(cg.cpu_usage(&pc).map(drop), "garbage/cpu.stat");
        malformed(cg.io(&pc).map(drop), "garbage/io.stat");
        malformed(cg.tasks(&pc).map(drop), "garbage/cgroup.threads");
    }

    #[test]
    fn missing_files() {
        let base = fixtures().join("broken/v1");
        let cg = Cgroups::new(Layout {
            mounts: vec![
                v1_mount(&base.join("memory"), &["memory"], "/"),
                v1_mount(&base.join("cpu,cpuacct"), &["cpu", "cpuacct"], "/"),
                v1_mount(&base.join("blkio"), &["blkio"], "/"),
            ],
        });
        let io_err = |r: Result<(), CgroupError>, file: &str| match r {
            Err(CgroupError::Io { path, source }) => {
                assert!(path.ends_with(file), "{path:?}");
                assert_eq!(source.kind(), ErrorKind::NotFound);
            }
            other => panic!("{file}: {other:?}"),
        };
        // memory.stat missing.
        let pc = ProcCgroups::parse("4:memory:/nostat\n3:cpu,cpuacct:/nostat\n1:blkio:/nostat\n")
            .unwrap();
        io_err(cg.memory(&pc).map(drop), "nostat/memory.stat");
        // No CFS bandwidth files: no quota. No cpuacct files at all: cpuacct.stat missing.
        assert_eq!(cg.cpu_limits(&pc).unwrap().quota, None);
        io_err(cg.cpu_usage(&pc).map(drop), "nostat/cpuacct.stat");
        // No blkio statistics files: no I/O figures.
        assert_eq!(cg.io(&pc).unwrap(), None);
        // No tasks file in the cgroup itself.
        io_err(cg.tasks(&pc).map(drop), "nostat/tasks");

        // A cgroup that does not exist (removed): I/O errors, not other data.
        let pc =
            ProcCgroups::parse("4:memory:/gone\n3:cpu,cpuacct:/gone\n1:blkio:/gone\n").unwrap();
        io_err(cg.memory(&pc).map(drop), "gone/memory.usage_in_bytes");
        io_err(cg.cpu_limits(&pc).map(drop), "gone");
        io_err(cg.cpu_usage(&pc).map(drop), "gone/cpuacct.stat");
        io_err(cg.io(&pc).map(drop), "gone");
        io_err(cg.tasks(&pc).map(drop), "gone/tasks");

        let v2 = fixtures().join("v2");
        let cg = Cgroups::new(Layout {
            mounts: vec![v2_mount(&v2, &["cpu", "memory", "io", "cpuset"])],
        });
        let pc = ProcCgroups::parse("0::/machine.slice/gone\n").unwrap();
        io_err(cg.memory(&pc).map(drop), "gone");
        io_err(cg.cpu_limits(&pc).map(drop), "gone");
        io_err(cg.cpu_usage(&pc).map(drop), "gone/cpu.stat");
        io_err(cg.io(&pc).map(drop), "gone");
        io_err(cg.tasks(&pc).map(drop), "gone/cgroup.threads");
    }

    #[test]
    fn removed_while_reading() {
        // A real tree in a temporary directory; the child goes away between two reads.
        let tmp = tempfile::tempdir().unwrap();
        let child = tmp.path().join("a/b");
        std::fs::create_dir_all(&child).unwrap();
        for (dir, limit) in [
            (tmp.path().to_path_buf(), "9223372036854771712"),
            (tmp.path().join("a"), "1048576"),
            (child.clone(), "2097152"),
        ] {
            std::fs::write(dir.join("memory.limit_in_bytes"), limit).unwrap();
        }
        std::fs::write(child.join("memory.usage_in_bytes"), "4096\n").unwrap();
        std::fs::write(child.join("memory.stat"), "total_rss 4096\n").unwrap();
        let cg = Cgroups::new(Layout { mounts: vec![v1_mount(tmp.path(), &["memory"], "/")] });
        let pc = ProcCgroups::parse("1:memory:/a/b\n").unwrap();
        let mem = cg.memory(&pc).unwrap().unwrap();
        assert_eq!((mem.limit, mem.usage, mem.stat.anon), (Some(1048576), 4096, 4096));
        std::fs::remove_dir_all(&child).unwrap();
        assert!(matches!(cg.memory(&pc), Err(CgroupError::Io { .. })));
    }

    #[test]
    fn mount_roots_and_paths() {
        let base = fixtures().join("v1-comounted/memory");
        // A mount showing /lxc at its mount point (as inside a container).
        let cg =
            Cgroups::new(Layout { mounts: vec![v1_mount(&base.join("lxc"), &["memory"], "/lxc")] });
        let pc = ProcCgroups::parse("3:memory:/lxc/c1\n").unwrap();
        assert_eq!(cg.dir(&pc, Controller::Memory), Some(base.join("lxc/c1")));
        assert_eq!(cg.memory(&pc).unwrap().unwrap().limit, Some(256 * MIB));
        let pc_root = ProcCgroups::parse("3:memory:/lxc\n").unwrap();
        assert_eq!(cg.dir(&pc_root, Controller::Memory), Some(base.join("lxc")));
        assert!(cg.is_root(&pc_root));
        for outside in ["3:memory:/\n", "3:memory:/lxcfoo\n", "3:memory:/other/c1\n"] {
            let pc = ProcCgroups::parse(outside).unwrap();
            assert_eq!(cg.dir(&pc, Controller::Memory), None, "{outside}");
            assert!(matches!(cg.memory(&pc), Err(CgroupError::Layout(_))), "{outside}");
        }
        let pc = ProcCgroups::parse("3:memory:/lxc/../../etc\n").unwrap();
        assert_eq!(cg.dir(&pc, Controller::Memory), None);
        // The kernel never writes `.` components; anything but plain names is refused.
        let pc = ProcCgroups::parse("3:memory:/lxc/./c1\n").unwrap();
        assert_eq!(cg.dir(&pc, Controller::Memory), None);
        let pc = ProcCgroups::parse("3:memory:/lxc//c1/\n").unwrap();
        assert_eq!(cg.dir(&pc, Controller::Memory), Some(base.join("lxc/c1")));
        // Controllers no mount serves.
        assert_eq!(cg.cpu_usage(&pc).unwrap(), None);
        assert_eq!(cg.io(&pc).unwrap(), None);
        assert_eq!(cg.cpu_limits(&pc).unwrap(), CpuLimits::default());
        assert!(matches!(cg.tasks(&pc), Err(CgroupError::Layout(_))));
        // No entry for the hierarchy in /proc/PID/cgroup.
        let pc = ProcCgroups::parse("0::/\n").unwrap();
        assert_eq!(cg.dir(&pc, Controller::Memory), None);
    }

    #[test]
    fn helpers() {
        assert_eq!(min_limit(None, None), None);
        assert_eq!(min_limit(Some(3), None), Some(3));
        assert_eq!(min_limit(None, Some(4)), Some(4));
        assert_eq!(min_limit(Some(5), Some(4)), Some(4));
        let q = |quota_us, period_us| CpuQuota { quota_us, period_us };
        assert_eq!(tighter(None, q(1, 2)), Some(q(1, 2)));
        assert_eq!(tighter(Some(q(150000, 100000)), q(100000, 50000)), Some(q(150000, 100000)));
        assert_eq!(tighter(Some(q(100000, 50000)), q(150000, 100000)), Some(q(150000, 100000)));
        assert_eq!(
            tighter(Some(q(u64::MAX, 1)), q(u64::MAX, u64::MAX)),
            Some(q(u64::MAX, u64::MAX))
        );
        assert!(clk_tck() > 0);

        let mut seen = Vec::new();
        let mut dir = PathBuf::from("/m/a/b");
        let r = walk_up(&mut dir, Path::new("/m"), |d, leaf| {
            seen.push((d.clone(), leaf));
            Ok(ControlFlow::<()>::Continue(()))
        });
        assert!(matches!(r, Ok(None)));
        assert_eq!(
            seen,
            vec![
                (PathBuf::from("/m/a/b"), true),
                (PathBuf::from("/m/a"), false),
                (PathBuf::from("/m"), false)
            ]
        );
        let mut dir = PathBuf::from("/elsewhere");
        let r = walk_up(&mut dir, Path::new("/m"), |_, _| Ok(ControlFlow::Break(1)));
        assert!(matches!(r, Ok(None)));
    }

    /// The running host: as root on the development machine, the v1 memory controller is
    /// at /sys/fs/cgroup/memory. Reading our own cgroups must work wherever this runs.
    #[test]
    fn host() {
        let cg = Cgroups::detect().unwrap();
        if Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
            let m = cg.layout().mount_for(Controller::Memory).unwrap();
            assert_eq!(m.mountpoint, Path::new("/sys/fs/cgroup/memory"));
            assert!(!m.is_v2());
        }
        let pc = ProcCgroups::read(std::process::id()).unwrap();
        if let Some(mem) = cg.memory(&pc).unwrap() {
            assert!(mem.usage > 0);
        }
        let cpu = cg.cpu_limits(&pc).unwrap();
        if let Some(set) = &cpu.cpuset {
            assert!(!set.is_empty());
        }
        if let Some(usage) = cg.cpu_usage(&pc).unwrap() {
            assert!(usage.user_ns.saturating_add(usage.system_ns) > 0);
        }
        cg.io(&pc).unwrap();
        let tasks = cg.tasks(&pc).unwrap();
        assert!(tasks.contains(&std::process::id()), "{} not in {tasks:?}", std::process::id());
        let _ = cg.is_root(&pc);
    }
}
