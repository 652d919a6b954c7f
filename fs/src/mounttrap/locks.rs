//! Whether each container's views were locked, and how its notify fds are served.
//!
//! The init's registration locks the container's `/proc` and `/sys` ([`super::lock`]) and
//! records the outcome here; sysvisor-runc waits for it (`Request::Locked` on the control
//! socket) before `create` returns, so a container never starts with unlocked views: on a
//! failure it deletes the container and `create` fails with the reason. The daemon fails
//! closed on its own too: a container whose lock failed gets EPERM for every trapped call
//! ([`Guard::Deny`]), so nothing can unmount, move or copy its views.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// How a container's trapped calls are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The views are locked mounts: the kernel refuses what could uncover them, the trap
    /// only adds its usual checks.
    Locked,
    /// The views could not be locked and the host opted in to run such containers
    /// (`--allow-unlocked-views`): unmounts, moves, `open_tree` and `move_mount` of a
    /// protected mount are refused by the mount's identity ([`super::identity`]).
    Unlocked,
    /// The lock failed: every trapped call gets EPERM.
    Deny,
}

/// The outcome of a container's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// The init's registration is locking the views.
    Pending,
    /// Served with this guard.
    Done(Guard),
    /// Not locked, and the container must not run: why.
    Failed(String),
}

impl LockState {
    fn guard(&self) -> Option<Guard> {
        match self {
            LockState::Pending => None,
            LockState::Done(guard) => Some(*guard),
            LockState::Failed(_) => Some(Guard::Deny),
        }
    }
}

#[derive(Debug)]
struct Entry {
    init_pid: u32,
    state: LockState,
}

/// The lock outcome of every container whose init registered, by container id.
#[derive(Debug, Default)]
pub struct ViewLocks {
    map: Mutex<HashMap<String, Entry>>,
    changed: Condvar,
}

/// Why [`ViewLocks::wait`] has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error("the views of container {id} could not be locked, so it must not run: {reason}")]
    Failed { id: String, reason: String },
    #[error(
        "no seccomp notify fd of container {id} (init pid {pid}) reached the mount trap \
         within {waited:?}: its views are not locked"
    )]
    NotRegistered { id: String, pid: u32, waited: Duration },
    #[error("the views of container {id} are still being locked after {waited:?}")]
    StillPending { id: String, waited: Duration },
}

impl ViewLocks {
    /// The init `init_pid` of container `id` registers: its lock begins.
    pub fn begin(&self, id: &str, init_pid: u32) {
        let entry = Entry { init_pid, state: LockState::Pending };
        self.map.lock().insert(id.to_string(), entry);
        self.changed.notify_all();
    }

    /// The lock of `id`'s init `init_pid` ended (ignored if a newer init took its place).
    pub fn finish(&self, id: &str, init_pid: u32, state: LockState) {
        let mut map = self.map.lock();
        if let Some(entry) = map.get_mut(id).filter(|e| e.init_pid == init_pid) {
            entry.state = state;
        }
        drop(map);
        self.changed.notify_all();
    }

    /// The notify fd of `pid` in container `id` is gone: if it was the init's, so is the
    /// container (a newer init of the same id stays).
    pub fn forget(&self, id: &str, pid: u32) {
        let mut map = self.map.lock();
        if map.get(id).is_some_and(|e| e.init_pid == pid) {
            map.remove(id);
        }
    }

    /// The guard for another notify fd of container `id` (a `runc exec` process): waits
    /// while its lock is pending, at most `timeout`; one whose lock is still pending after
    /// the timeout is denied. A container whose init the daemon never saw registered
    /// with a daemon before a restart: that one locked its views (or failed, and
    /// sysvisor-runc deleted the container before it started), so it is served as locked.
    /// (An exec cannot come before its init's registration: `create` waits for the lock.)
    pub fn guard_for(&self, id: &str, timeout: Duration) -> Guard {
        let deadline = Instant::now() + timeout;
        let mut map = self.map.lock();
        loop {
            match map.get(id).map(|e| e.state.guard()) {
                None => return Guard::Locked,
                Some(Some(guard)) => return guard,
                Some(None) => {
                    if self.changed.wait_until(&mut map, deadline).timed_out() {
                        return Guard::Deny;
                    }
                }
            }
        }
    }

    /// Waits (at most `timeout`) until the lock of container `id` whose init is `pid` has
    /// ended; `Ok` when the container may run.
    pub fn wait(&self, id: &str, pid: u32, timeout: Duration) -> Result<Guard, WaitError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut map = self.map.lock();
        loop {
            let registered = match map.get(id).filter(|e| e.init_pid == pid).map(|e| &e.state) {
                Some(LockState::Done(guard)) => return Ok(*guard),
                Some(LockState::Failed(reason)) => {
                    return Err(WaitError::Failed { id: id.into(), reason: reason.clone() })
                }
                state => state.is_some(),
            };
            if self.changed.wait_until(&mut map, deadline).timed_out() {
                let waited = started.elapsed();
                return Err(match registered {
                    true => WaitError::StillPending { id: id.into(), waited },
                    false => WaitError::NotRegistered { id: id.into(), pid, waited },
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_wait_ends_with_the_lock() {
        let locks = Arc::new(ViewLocks::default());
        let waiter = {
            let locks = locks.clone();
            std::thread::spawn(move || locks.wait("c", 7, Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(20));
        locks.begin("c", 7);
        locks.finish("c", 7, LockState::Done(Guard::Locked));
        assert_eq!(waiter.join().unwrap(), Ok(Guard::Locked));
    }

    #[test]
    fn failures_and_silence_are_errors() {
        let locks = ViewLocks::default();
        locks.begin("c", 7);
        locks.finish("c", 7, LockState::Failed("no MOVE_MOUNT_BENEATH".into()));
        let err = locks.wait("c", 7, Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("no MOVE_MOUNT_BENEATH"), "{err}");
        assert_eq!(locks.guard_for("c", Duration::ZERO), Guard::Deny);
        // Another init of the same id (a restarted container) is not the one that failed.
        let err = locks.wait("c", 8, Duration::from_millis(10)).unwrap_err();
        assert!(matches!(err, WaitError::NotRegistered { pid: 8, .. }), "{err}");
        locks.begin("d", 9);
        let err = locks.wait("d", 9, Duration::from_millis(10)).unwrap_err();
        assert!(matches!(err, WaitError::StillPending { .. }), "{err}");
        assert_eq!(locks.guard_for("d", Duration::from_millis(10)), Guard::Deny);
    }

    #[test]
    fn other_fds_get_the_inits_guard() {
        let locks = ViewLocks::default();
        assert_eq!(locks.guard_for("unknown", Duration::ZERO), Guard::Locked);
        locks.begin("c", 7);
        locks.finish("c", 7, LockState::Done(Guard::Unlocked));
        assert_eq!(locks.guard_for("c", Duration::ZERO), Guard::Unlocked);
        locks.finish("c", 6, LockState::Done(Guard::Locked));
        assert_eq!(locks.guard_for("c", Duration::ZERO), Guard::Unlocked, "a stale init");
        locks.forget("c", 8);
        assert_eq!(locks.wait("c", 7, Duration::ZERO), Ok(Guard::Unlocked), "not the init");
        locks.forget("c", 7);
        assert!(locks.wait("c", 7, Duration::ZERO).is_err());
    }
}
