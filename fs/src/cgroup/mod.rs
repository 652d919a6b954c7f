//! Cgroup reading: where a process's cgroups are, and what limits and usage they have.
//!
//! One interface ([`Cgroups`]) over both hierarchies. Each controller is found either on a
//! cgroup v1 mount of its own or on the unified (v2) hierarchy; hybrid hosts mix the two.
//! The v1 and v2 file formats are read by [`v1`] and [`v2`]; this module picks which one
//! applies per controller and folds limits over ancestors (a limit set on a parent binds
//! its children, so the effective limit is the minimum along the path).

pub mod layout;
pub mod proc_cgroup;
pub mod v1;
pub mod v2;

mod reader;

pub use layout::{Controller, Layout, Mount, MountKind};
pub use proc_cgroup::{CgroupEntry, ProcCgroups};
pub use reader::{Cgroups, PressureSource};

use std::fmt;
use std::path::{Path, PathBuf};

/// Errors while reading cgroup files.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed {path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("cannot find cgroup mounts: {0}")]
    Layout(String),
}

/// Why the contents of a cgroup file could not be parsed.
///
/// The pure parsers in [`v1`] and [`v2`] work on text and do not know which file it came
/// from; the readers turn this into [`CgroupError::Malformed`] with the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl ParseError {
    /// The error for this parse failure in the file at `path`.
    pub fn at(self, path: &Path) -> CgroupError {
        CgroupError::Malformed { path: path.to_path_buf(), reason: self.0 }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// Memory figures of one cgroup, in bytes, limits already folded over ancestors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryInfo {
    /// Effective memory limit; `None` when neither the cgroup nor an ancestor sets one.
    pub limit: Option<u64>,
    /// Memory charged to the cgroup (v1 `memory.usage_in_bytes`, v2 `memory.current`).
    pub usage: u64,
    /// Effective limit on swap alone (v1: memsw limit minus memory limit; v2:
    /// `memory.swap.max`); `None` when unlimited.
    pub swap_limit: Option<u64>,
    /// Swap in use by the cgroup (v1: memsw usage minus usage; v2: `memory.swap.current`).
    pub swap_usage: u64,
    pub stat: MemoryStat,
}

/// The memory.stat figures meminfo needs, in bytes (hierarchical `total_*` keys on v1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStat {
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
    pub mapped_file: u64,
    pub dirty: u64,
    pub writeback: u64,
    pub active_anon: u64,
    pub inactive_anon: u64,
    pub active_file: u64,
    pub inactive_file: u64,
    pub unevictable: u64,
    pub slab_reclaimable: u64,
    pub slab_unreclaimable: u64,
    pub kernel_stack: u64,
    pub pagetables: u64,
    pub swapcached: u64,
}

/// CFS bandwidth limit: `quota_us` of CPU time per `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuQuota {
    pub quota_us: u64,
    pub period_us: u64,
}

impl CpuQuota {
    /// Whole CPUs the quota allows, rounded up (a quota of 1.5 CPUs gives 2).
    pub fn cpus(&self) -> usize {
        if self.period_us == 0 {
            return usize::MAX;
        }
        (self.quota_us.div_ceil(self.period_us)).max(1) as usize
    }
}

/// CPU limits of one cgroup, folded over ancestors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuLimits {
    /// Effective cpuset (host CPU numbers, ascending); `None` when no cpuset controller.
    pub cpuset: Option<Vec<u32>>,
    /// The tightest quota along the path, by CPUs allowed; `None` when unlimited.
    pub quota: Option<CpuQuota>,
}

impl CpuLimits {
    /// The host CPUs a cgroup's view shows: its cpuset (or `online` when none) within the
    /// host's online CPUs, cut to the first `ceil(quota/period)` when a quota is tighter.
    pub fn visible_cpus(&self, online: &[u32]) -> Vec<u32> {
        let mut cpus: Vec<u32> = match &self.cpuset {
            Some(set) => online.iter().copied().filter(|c| set.contains(c)).collect(),
            None => online.to_vec(),
        };
        if cpus.is_empty() {
            cpus = online.to_vec();
        }
        if let Some(q) = self.quota {
            cpus.truncate(q.cpus().max(1));
        }
        cpus
    }

    /// Whether the cgroup's CPU view differs from the host's.
    pub fn is_limited(&self, online: &[u32]) -> bool {
        self.visible_cpus(online).len() != online.len()
    }
}

/// CPU time used by a cgroup, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuUsage {
    pub user_ns: u64,
    pub system_ns: u64,
    /// Per host CPU (index = CPU number): (user, system) ns. v1 cpuacct has it; v2 does not.
    pub per_cpu: Option<Vec<(u64, u64)>>,
}

/// I/O done by a cgroup on one block device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceIo {
    pub major: u32,
    pub minor: u32,
    pub read_ios: u64,
    pub write_ios: u64,
    pub discard_ios: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub discard_bytes: u64,
}

/// I/O done by a cgroup, per device, ordered by (major, minor).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoStats {
    pub devices: Vec<DeviceIo>,
}
