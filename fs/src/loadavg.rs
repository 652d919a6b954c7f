//! Per-cgroup load averages (placeholder until the sampler lands).

/// Load figures of one cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupLoad {
    /// 1, 5 and 15 minute averages in the kernel's fixed point (FSHIFT = 11).
    pub avg: [u64; 3],
    /// Tasks running (state R) now.
    pub running: u32,
    /// All tasks (threads) in the cgroup.
    pub total: u32,
}

pub struct LoadavgTracker {}
