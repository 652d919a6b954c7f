//! Per-cgroup load averages, sampled in the background like the kernel's own.
//!
//! The kernel updates its global load average every 5 seconds from the number of running
//! and uninterruptible tasks. We do the same per cgroup: a cgroup is tracked from the
//! first time somebody reads its loadavg, sampled every [`SAMPLE_INTERVAL`] by the
//! service's housekeeping thread, and dropped once nobody has read it for
//! [`IDLE_TIMEOUT`] or its cgroup is gone. Averaging uses the kernel's fixed-point
//! arithmetic (`views::loadavg::calc_load`), so the figures decay exactly as /proc/loadavg's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::cgroup::{Cgroups, ProcCgroups};
use crate::views::loadavg::{calc_load, EXP_1, EXP_15, EXP_5, FIXED_1};

/// How often the kernel (and we) fold the task counts into the averages.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// A cgroup nobody has read for this long stops being sampled.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Load figures of one cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupLoad {
    /// 1, 5 and 15 minute averages in the kernel's fixed point (FSHIFT = 11).
    pub avg: [u64; 3],
    /// Tasks running (state R) at the last sample.
    pub running: u32,
    /// All tasks (threads) in the cgroup at the last sample.
    pub total: u32,
}

impl CgroupLoad {
    /// Folds one sample (`active` = running + uninterruptible tasks) into the averages.
    pub fn fold(&mut self, counts: TaskCounts) {
        let active = u64::from(counts.active()).saturating_mul(FIXED_1);
        self.avg = [
            calc_load(self.avg[0], EXP_1, active),
            calc_load(self.avg[1], EXP_5, active),
            calc_load(self.avg[2], EXP_15, active),
        ];
        self.running = counts.running;
        self.total = counts.total;
    }
}

/// Task states counted in one sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskCounts {
    pub running: u32,
    pub uninterruptible: u32,
    pub total: u32,
}

impl TaskCounts {
    pub fn active(&self) -> u32 {
        self.running.saturating_add(self.uninterruptible)
    }

    /// Counts `tids` by the state in /proc/TID/stat. Threads that exit meanwhile are
    /// simply not counted.
    pub fn of_tasks(tids: &[u32]) -> TaskCounts {
        let mut counts = TaskCounts::default();
        for tid in tids {
            let Some(stat) = crate::caller::pidns::read_proc_text(&format!("/proc/{tid}/stat"))
            else {
                continue;
            };
            counts.total += 1;
            match task_state(&stat) {
                Some('R') => counts.running += 1,
                Some('D') => counts.uninterruptible += 1,
                _ => {}
            }
        }
        counts
    }
}

/// The state letter of a /proc/PID/stat line (the first field after the command name).
pub fn task_state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

struct Tracked {
    load: CgroupLoad,
    last_read: Instant,
}

/// The set of tracked cgroups and their averages.
pub struct LoadavgTracker {
    cgroups: Arc<Cgroups>,
    tracked: DashMap<Arc<ProcCgroups>, Tracked>,
}

impl LoadavgTracker {
    pub fn new(cgroups: Arc<Cgroups>) -> LoadavgTracker {
        LoadavgTracker { cgroups, tracked: DashMap::new() }
    }

    /// The load of a cgroup; `None` for the root cgroup or when its tasks cannot be read,
    /// in which case the view shows the host's load. The first call starts tracking the
    /// cgroup with the task counts of that moment and averages of zero, as a freshly
    /// booted host has.
    pub fn load(&self, cgroups: &Arc<ProcCgroups>) -> Option<CgroupLoad> {
        if self.cgroups.tasks_at_root(cgroups) {
            return None;
        }
        if let Some(mut entry) = self.tracked.get_mut(cgroups) {
            entry.last_read = Instant::now();
            return Some(entry.load);
        }
        let tids = match self.cgroups.tasks(cgroups) {
            Ok(tids) => tids,
            Err(err) => {
                tracing::warn!(%err, "cannot list the tasks of a cgroup for loadavg");
                return None;
            }
        };
        let counts = TaskCounts::of_tasks(&tids);
        let load = CgroupLoad { avg: [0; 3], running: counts.running, total: counts.total };
        self.tracked.insert(cgroups.clone(), Tracked { load, last_read: Instant::now() });
        Some(load)
    }

    /// One sampling tick: folds the current task counts of every tracked cgroup into its
    /// averages, and drops cgroups that are idle or gone.
    pub fn sample_all(&self) {
        self.tracked.retain(|cgroups, tracked| {
            if tracked.last_read.elapsed() > IDLE_TIMEOUT {
                return false;
            }
            match self.cgroups.tasks(cgroups) {
                Ok(tids) => {
                    tracked.load.fold(TaskCounts::of_tasks(&tids));
                    true
                }
                Err(err) => {
                    tracing::debug!(%err, "cgroup gone; no longer sampling its load");
                    false
                }
            }
        });
    }

    /// Number of tracked cgroups.
    pub fn len(&self) -> usize {
        self.tracked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracked.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_after_command_with_parentheses() {
        assert_eq!(task_state("12 (we(ird) na) me) R 1 2 3"), Some('R'));
        assert_eq!(task_state("12 (sh) D 1"), Some('D'));
        assert_eq!(task_state("garbage"), None);
    }

    #[test]
    fn constant_load_converges_like_the_kernel() {
        // Two always-runnable tasks: the kernel rounds up while the load rises, so every
        // average reaches exactly 2.00 and stays there.
        let mut load = CgroupLoad::default();
        let counts = TaskCounts { running: 2, uninterruptible: 0, total: 3 };
        for _ in 0..4000 {
            load.fold(counts);
        }
        assert_eq!(load.avg, [2 * FIXED_1; 3]);
        assert_eq!((load.running, load.total), (2, 3));
    }

    #[test]
    fn one_minute_average_moves_first() {
        let mut load = CgroupLoad::default();
        load.fold(TaskCounts { running: 1, uninterruptible: 0, total: 1 });
        assert!(load.avg[0] > load.avg[1] && load.avg[1] > load.avg[2]);
    }

    #[test]
    fn counts_own_process_threads() {
        let counts = TaskCounts::of_tasks(&[std::process::id()]);
        assert_eq!(counts.total, 1);
    }
}
