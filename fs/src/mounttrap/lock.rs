//! Locking a new container's own `/proc` and `/sys`.
//!
//! runc mounts `/proc`, `/sys` and everything over them (the views, masks, read-only
//! binds) inside the container's mount namespace, so none of these mounts is locked: root
//! in the container could unmount `/proc/meminfo` and read the host's. When the trap
//! receives the notify fd of a container's init (its mounts are all in place then, and its
//! process has not started), it replaces each of the two with a fresh mount carrying the
//! same overlays, made by the helper and therefore locked (see `helper`), swapped in
//! beneath the old one so that the path is never empty. Mounts on the old one that are not
//! overlays (`/sys/fs/cgroup`) move over unchanged, unlocked.
//!
//! The container's mount-family calls wait in the kernel meanwhile: its notify fd is only
//! served once this is done.

use std::os::fd::AsFd;

use crate::caller::pidfd::PidFd;

use super::handler::Context;
use super::helper::{self, Job, JobFds, Target, Task};
use super::mountinfo::{self, MountEntry};
use super::overlays::Overlays;
use super::policy::FsKind;
use super::process::{self, ProcessFds};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot inspect process {pid}: {source}")]
    Inspect {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("process {0} is not in a container (it shares the daemon's namespaces)")]
    NotAContainer(u32),
    #[error("process {0} is gone")]
    Gone(u32),
    #[error(transparent)]
    Helper(#[from] helper::HelperError),
    #[error("the swap of {fs} failed at {step}: {error}")]
    Failed { fs: &'static str, step: String, error: std::io::Error },
    #[error(
        "this kernel cannot lock the views: it lacks MOVE_MOUNT_BENEATH (Linux 6.5), which \
         swaps /proc and /sys for locked copies; the host can accept running containers with \
         unlocked views, guarded by the mount trap only, with `sysvisor-fs serve \
         --allow-unlocked-views` (see docs/security.md)"
    )]
    NoBeneath,
}

/// How to swap one file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapPlan {
    pub fs: FsKind,
    /// The flags of the old mount, for the new one.
    pub flags: u64,
    /// Children of the old mount that are not overlays, by path inside the file system.
    pub carry: Vec<String>,
}

/// The plan for `fs` from the container's mountinfo: `None` when the container has no such
/// mount at the usual place, or nothing on it to protect.
pub fn plan(entries: &[MountEntry], fs: FsKind, overlays: &Overlays) -> Option<SwapPlan> {
    let top = mountinfo::top_mount_at(entries, fs.container_path())?;
    if top.fstype != fs.name() || top.root != "/" {
        return None;
    }
    let mut carry = Vec::new();
    let mut protected = false;
    for child in mountinfo::children_of(entries, top) {
        let Some(rel) = mountinfo::path_in_fs(top, child) else {
            continue;
        };
        if overlays.covers(fs, &rel) {
            protected = true;
        } else {
            carry.push(rel);
        }
    }
    // Nothing hides anything: a plain proc or sysfs needs no lock.
    if !protected && overlays.of(fs).is_empty() {
        return None;
    }
    Some(SwapPlan { fs, flags: mountinfo::mount_flags(&top.options), carry })
}

/// Locks `/proc` and `/sys` of the container whose init is `pid`; returns what was swapped.
pub fn lock_container(
    ctx: &Context,
    pid: u32,
    overlays: &Overlays,
) -> Result<Vec<FsKind>, LockError> {
    // A container whose init is already gone (`docker run IMAGE true`) has nothing to lock.
    let inspect = |source: std::io::Error| match source.raw_os_error() {
        Some(libc::ESRCH | libc::ENOENT) => LockError::Gone(pid),
        _ => LockError::Inspect { pid, source },
    };
    let pidfd = PidFd::open(pid).map_err(inspect)?;
    let dir = process::proc_dir(pid).map_err(inspect)?;
    let fds = ProcessFds::open(dir.as_fd()).map_err(inspect)?;
    let text = process::read_text(dir.as_fd(), "mountinfo").map_err(inspect)?;
    // The pidfd was taken first: if the process is still alive, everything opened through
    // /proc/PID belongs to it.
    if !pidfd.is_alive() {
        return Err(LockError::Gone(pid));
    }
    if process::ns_id(fds.user.as_fd()).map_err(inspect)? == ctx.own_userns
        || process::ns_id(fds.mnt.as_fd()).map_err(inspect)? == ctx.own_mntns
    {
        return Err(LockError::NotAContainer(pid));
    }
    let entries = mountinfo::parse(&text);
    let mut locked = Vec::new();
    for fs in [FsKind::Proc, FsKind::Sysfs] {
        let Some(plan) = plan(&entries, fs, overlays) else {
            continue;
        };
        let job = Job {
            fs,
            flags: plan.flags,
            data: None,
            target: Target::Path(fs.container_path().into()),
            overlays: overlays.of(fs).to_vec(),
            stage: ctx.stage.clone(),
            replace: Some(plan.carry),
        };
        if ctx.pretend_no_beneath {
            return Err(LockError::NoBeneath);
        }
        let job_fds = JobFds::of(&fds, None);
        let outcome = helper::run(&ctx.exe, &Task::Mount(job), &job_fds, ctx.helper_timeout)?;
        // Kernels before 6.5 refuse the unknown flag with EINVAL.
        if outcome.step.as_deref() == Some("beneath") && outcome.errno == libc::EINVAL {
            return Err(LockError::NoBeneath);
        }
        if outcome.errno != 0 {
            return Err(LockError::Failed {
                fs: fs.name(),
                step: outcome.step.unwrap_or_default(),
                error: std::io::Error::from_raw_os_error(outcome.errno),
            });
        }
        locked.push(fs);
    }
    Ok(locked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounttrap::overlays::{Overlay, OverlayKind};

    const CONTAINER: &str = "\
115 62 0:43 / / rw,relatime - overlay none rw
116 115 0:46 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
119 115 0:49 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
120 116 0:40 /proc/meminfo /proc/meminfo ro,nosuid,nodev,noexec - fuse.sysvisor-fs sysvisor-fs rw
128 119 0:50 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw
129 128 0:29 / /sys/fs/cgroup/cpu ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu
90 119 0:59 / /sys/firmware ro,relatime - tmpfs tmpfs ro
";

    fn overlays() -> Overlays {
        let view =
            OverlayKind::Bind { source: "/m/proc/meminfo".into(), recursive: true, flags: 0 };
        Overlays::new(
            vec![Overlay { rel: "meminfo".into(), kind: view }],
            vec![Overlay { rel: "firmware".into(), kind: OverlayKind::Mask }],
        )
    }

    #[test]
    fn plans_keep_flags_and_carry_what_is_not_an_overlay() {
        let entries = mountinfo::parse(CONTAINER);
        let proc = plan(&entries, FsKind::Proc, &overlays()).unwrap();
        assert_eq!(
            proc.flags,
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RELATIME
        );
        assert!(proc.carry.is_empty());
        let sys = plan(&entries, FsKind::Sysfs, &overlays()).unwrap();
        assert!(sys.flags & libc::MS_RDONLY != 0);
        assert_eq!(sys.carry, ["fs/cgroup"], "cgroup/cpu moves with its parent");
    }

    #[test]
    fn nothing_to_protect_or_no_such_mount_means_no_swap() {
        let entries = mountinfo::parse(CONTAINER);
        assert_eq!(plan(&entries, FsKind::Proc, &Overlays::default()), None);
        let no_proc = mountinfo::parse("115 62 0:43 / / rw - overlay none rw\n");
        assert_eq!(plan(&no_proc, FsKind::Proc, &overlays()), None);
        let tmpfs_on_proc = mountinfo::parse(
            "115 62 0:43 / / rw - overlay none rw\n116 115 0:9 / /proc rw - tmpfs t rw\n",
        );
        assert_eq!(plan(&tmpfs_on_proc, FsKind::Proc, &overlays()), None);
    }
}
