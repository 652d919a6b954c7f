//! Caller identification: from the pid in a FUSE request to the cgroups and pid namespace
//! whose view that process must see.

use std::sync::Arc;

use crate::cgroup::ProcCgroups;

/// The process a request comes from, as far as the views care.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Pid in the daemon's (the host's) pid namespace.
    pub pid: u32,
    /// The caller's cgroups, as /proc/PID/cgroup names them.
    pub cgroups: Arc<ProcCgroups>,
    /// When the init process of the caller's pid namespace started, in clock ticks since
    /// boot (field 22 of /proc/PID/stat); `None` when the caller shares the host's pid
    /// namespace.
    pub ns_init_start_ticks: Option<u64>,
}
