//! The virtual files: one module per file, registered in [`TABLE`].
//!
//! Each module has a pure `render` function (parsed inputs in, the file's bytes out,
//! unit-tested on fixtures) and a `generate` function that gathers those inputs for one
//! request (host files, the caller's cgroup figures) and calls `render`.

pub mod cpu_online;
pub mod cpuinfo;
pub mod diskstats;
pub mod loadavg;
pub mod meminfo;
pub mod pressure;
pub mod slabinfo;
pub mod stat;
pub mod swaps;
pub mod sysinfo;
pub mod uptime;

use crate::caller::Caller;
use crate::cgroup::{CgroupError, Cgroups};
use crate::host::HostProc;
use crate::loadavg::LoadavgTracker;

/// What one request may look at.
pub struct Request<'a> {
    pub host: &'a HostProc,
    pub cgroups: &'a Cgroups,
    pub caller: &'a Caller,
    pub loadavg: &'a LoadavgTracker,
}

/// Why a view could not be generated. The transport answers EIO and logs it.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("cannot read host file {path}: {source}")]
    Host {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed host file {path}: {reason}")]
    Malformed { path: String, reason: String },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The file does not exist for this caller (ENOENT): the figures it would show are not
    /// the caller's to see (the host's pressure, say, when its cgroup has none).
    #[error("{0} has no figures for this caller")]
    Absent(String),
}

/// What a rendered view depends on besides host files, and so how it may be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Depends on the caller's cgroups only: callers in the same cgroups share it.
    Cgroup,
    /// Depends on the caller's cgroups and its pid namespace (uptime).
    CgroupAndPidNs,
}

pub type Generator = fn(&Request<'_>) -> Result<Vec<u8>, ViewError>;

/// One virtual file.
pub struct ViewSpec {
    /// Path below the mount point, e.g. `proc/meminfo`.
    pub path: &'static str,
    pub generate: Generator,
    pub scope: Scope,
}

/// The views only root may read (mode 0400, as the kernel's files): for a container's
/// callers the owner is the container's root, for others the host's.
pub const ROOT_ONLY: &[&str] = &["proc/slabinfo"];

/// Every virtual file, by path. The transport builds its directory tree from this table.
pub static TABLE: &[ViewSpec] = &[
    ViewSpec { path: "proc/cpuinfo", generate: cpuinfo::generate, scope: Scope::Cgroup },
    ViewSpec { path: "proc/diskstats", generate: diskstats::generate, scope: Scope::Cgroup },
    ViewSpec { path: "proc/loadavg", generate: loadavg::generate, scope: Scope::Cgroup },
    ViewSpec { path: "proc/meminfo", generate: meminfo::generate, scope: Scope::Cgroup },
    ViewSpec { path: "proc/pressure/cpu", generate: pressure::generate_cpu, scope: Scope::Cgroup },
    ViewSpec { path: "proc/pressure/io", generate: pressure::generate_io, scope: Scope::Cgroup },
    ViewSpec {
        path: "proc/pressure/memory",
        generate: pressure::generate_memory,
        scope: Scope::Cgroup,
    },
    ViewSpec { path: "proc/slabinfo", generate: slabinfo::generate, scope: Scope::Cgroup },
    ViewSpec { path: "proc/stat", generate: stat::generate, scope: Scope::Cgroup },
    ViewSpec { path: "proc/swaps", generate: swaps::generate, scope: Scope::Cgroup },
    ViewSpec { path: "proc/uptime", generate: uptime::generate, scope: Scope::CgroupAndPidNs },
    ViewSpec {
        path: "sys/devices/system/cpu/online",
        generate: cpu_online::generate,
        scope: Scope::Cgroup,
    },
    ViewSpec {
        path: "sys/devices/system/cpu/possible",
        generate: cpu_online::generate_possible,
        scope: Scope::Cgroup,
    },
    ViewSpec {
        path: "sys/devices/system/cpu/present",
        generate: cpu_online::generate_present,
        scope: Scope::Cgroup,
    },
];
