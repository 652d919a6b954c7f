//! What to do with a trapped system call: pure decisions over its decoded arguments.
//!
//! | call | decision |
//! | --- | --- |
//! | `mount` of a new `proc` or `sysfs` | performed by the trap ([`Decision::NewMount`]) |
//! | `mount` of `debugfs`, `tracefs`, `securityfs`, `configfs` | an empty read-only tmpfs ([`Decision::EmptyMount`]) |
//! | any other `mount` (bind, remount, move, propagation, other file systems) | continued |
//! | `umount2`/`umount` | checked against the protected mounts ([`Decision::CheckUmount`]) |
//! | `fsopen` of those six | `ENOSYS`, so that tools fall back to `mount(2)` |
//! | any other `fsopen`; `open_tree`, `move_mount`, `mount_setattr` | continued |
//!
//! Continuing is safe because the kernel then runs the call in the caller's own context,
//! with every check it always makes; the views and masks are locked mounts (see `lock`), so
//! no continued call can uncover what they hide. Where they are not (see `locks::Guard`),
//! `identity` refuses what would uncover them before these decisions are made.

use super::abi::{self, Notification, Syscall};

/// The file systems the trap mounts itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    Proc,
    Sysfs,
}

impl FsKind {
    pub fn from_name(name: &str) -> Option<FsKind> {
        match name {
            "proc" => Some(FsKind::Proc),
            "sysfs" => Some(FsKind::Sysfs),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FsKind::Proc => "proc",
            FsKind::Sysfs => "sysfs",
        }
    }

    /// Whether `path` (absolute, cleaned) is where a system container has proc or sysfs.
    pub fn is_container_path(path: &str) -> bool {
        [FsKind::Proc, FsKind::Sysfs].iter().any(|fs| fs.container_path() == path)
    }

    /// Where a system container has this file system mounted.
    pub fn container_path(self) -> &'static str {
        match self {
            FsKind::Proc => "/proc",
            FsKind::Sysfs => "/sys",
        }
    }
}

/// Kernel file systems that no user namespace may mount (the kernel answers EPERM) and
/// that system software mounts at boot anyway (systemd's `sys-kernel-debug.mount`,
/// `sys-kernel-tracing.mount`, ...). The trap answers them with an empty, read-only tmpfs,
/// what a host without them offers: the unit succeeds and nothing of the host is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmptyFs {
    Debugfs,
    Tracefs,
    Securityfs,
    Configfs,
}

impl EmptyFs {
    pub fn from_name(name: &str) -> Option<EmptyFs> {
        match name {
            "debugfs" => Some(EmptyFs::Debugfs),
            "tracefs" => Some(EmptyFs::Tracefs),
            "securityfs" => Some(EmptyFs::Securityfs),
            "configfs" => Some(EmptyFs::Configfs),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EmptyFs::Debugfs => "debugfs",
            EmptyFs::Tracefs => "tracefs",
            EmptyFs::Securityfs => "securityfs",
            EmptyFs::Configfs => "configfs",
        }
    }

    /// The mode of the file system's root as the kernel makes it (debugfs and tracefs:
    /// 0700; securityfs and configfs: 0755).
    pub fn root_mode(self) -> u32 {
        match self {
            EmptyFs::Debugfs | EmptyFs::Tracefs => 0o700,
            EmptyFs::Securityfs | EmptyFs::Configfs => 0o755,
        }
    }
}

/// An empty mount the trap performs in place of an [`EmptyFs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmptyMount {
    pub fs: EmptyFs,
    /// As the caller wrote it (relative to its cwd, or absolute in its root).
    pub target: String,
    /// [`PASSED_FLAGS`] of the caller's flags.
    pub flags: u64,
}

/// mount(2) flags that make a call something else than a new mount.
const NOT_A_NEW_MOUNT: u64 = libc::MS_REMOUNT
    | libc::MS_BIND
    | libc::MS_MOVE
    | libc::MS_SHARED
    | libc::MS_PRIVATE
    | libc::MS_SLAVE
    | libc::MS_UNBINDABLE;

/// The flags of a new mount the trap passes on (per-mount and superblock flags that mean
/// something for proc and sysfs); the rest (MS_REC, MS_SILENT, ...) changes nothing for a
/// new mount and is dropped.
pub const PASSED_FLAGS: u64 = libc::MS_RDONLY
    | libc::MS_NOSUID
    | libc::MS_NODEV
    | libc::MS_NOEXEC
    | libc::MS_SYNCHRONOUS
    | libc::MS_DIRSYNC
    | libc::MS_NOATIME
    | libc::MS_NODIRATIME
    | libc::MS_RELATIME
    | libc::MS_STRICTATIME
    | libc::MS_LAZYTIME;

/// The longest path or option string read from a caller (the kernel's own limits: PATH_MAX
/// for paths, a page for mount data).
pub const MAX_STRING: usize = 4096;

/// A new proc or sysfs mount the trap performs for its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMount {
    pub fs: FsKind,
    /// As the caller wrote it (relative to its cwd, or absolute in its root).
    pub target: String,
    /// [`PASSED_FLAGS`] of the caller's flags.
    pub flags: u64,
    /// The option string (`hidepid=2`, ...), if any.
    pub data: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answer at once.
    Answer(abi::Answer),
    /// Perform this mount in the caller's namespaces.
    NewMount(NewMount),
    /// Mount an empty, read-only tmpfs there for the caller instead.
    EmptyMount(EmptyMount),
    /// Refuse if `target` is a protected mount, else continue (see `handler`).
    CheckUmount { target: String, flags: i32 },
}

const CONTINUE: Decision = Decision::Answer(abi::Answer::Continue);

/// What the decision needs to read from the caller's memory: the string at an address.
/// `None` when it cannot be read (a bad pointer: the continued call then fails with EFAULT
/// by itself).
pub trait Strings {
    fn string(&mut self, address: u64) -> Option<String>;
}

/// Decides about one notification.
pub fn decide(notif: &Notification, strings: &mut impl Strings) -> Decision {
    let Some(call) = Syscall::decode(notif.arch, notif.nr) else {
        return CONTINUE;
    };
    let arg = |i: usize| abi::arg(notif.arch, notif.nr, notif.args[i]);
    match call {
        Syscall::Mount => {
            let flags = abi::mount_flags(arg(3));
            if flags & NOT_A_NEW_MOUNT != 0 {
                return CONTINUE;
            }
            let Some(fstype) = strings.string(arg(2)) else {
                return CONTINUE;
            };
            if let Some(fs) = EmptyFs::from_name(&fstype) {
                return match strings.string(arg(1)) {
                    Some(target) => {
                        Decision::EmptyMount(EmptyMount { fs, target, flags: flags & PASSED_FLAGS })
                    }
                    None => CONTINUE,
                };
            }
            let Some(fs) = FsKind::from_name(&fstype) else {
                return CONTINUE;
            };
            let Some(target) = strings.string(arg(1)) else {
                return CONTINUE;
            };
            let data = match arg(4) {
                0 => None,
                address => match strings.string(address) {
                    Some(data) => Some(data).filter(|d| !d.is_empty()),
                    None => return CONTINUE,
                },
            };
            Decision::NewMount(NewMount { fs, target, flags: flags & PASSED_FLAGS, data })
        }
        Syscall::Umount2 | Syscall::Umount => match strings.string(arg(0)) {
            Some(target) => {
                let flags = if call == Syscall::Umount2 { arg(1) as i32 } else { 0 };
                Decision::CheckUmount { target, flags }
            }
            None => CONTINUE,
        },
        Syscall::Fsopen => match strings.string(arg(0)).as_deref() {
            Some(name)
                if FsKind::from_name(name).is_some() || EmptyFs::from_name(name).is_some() =>
            {
                Decision::Answer(abi::Answer::Errno(libc::ENOSYS))
            }
            _ => CONTINUE,
        },
        // sysinfo is answered before any decision (see `handler::handle`).
        Syscall::OpenTree | Syscall::MoveMount | Syscall::MountSetattr | Syscall::Sysinfo => {
            CONTINUE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounttrap::abi::{Answer, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64};
    use std::collections::HashMap;

    /// Caller memory: strings at addresses.
    struct Memory(HashMap<u64, &'static str>);

    impl Strings for Memory {
        fn string(&mut self, address: u64) -> Option<String> {
            self.0.get(&address).map(|s| s.to_string())
        }
    }

    fn memory() -> Memory {
        Memory(HashMap::from([
            (0x10, "proc"),
            (0x20, "/mnt"),
            (0x30, "sysfs"),
            (0x40, "tmpfs"),
            (0x50, "hidepid=2"),
            (0x60, "none"),
            (0x70, ""),
            (0x80, "debugfs"),
            (0x90, "/sys/kernel/debug"),
            (0xa0, "tracefs"),
        ]))
    }

    fn mount(source: u64, target: u64, fstype: u64, flags: u64, data: u64) -> Notification {
        Notification {
            id: 1,
            pid: 100,
            nr: 165,
            arch: AUDIT_ARCH_X86_64,
            args: [source, target, fstype, flags, data, 0],
        }
    }

    #[test]
    fn new_proc_and_sysfs_mounts_are_performed() {
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_REC;
        let d = decide(&mount(0x60, 0x20, 0x10, flags, 0x50), &mut memory());
        assert_eq!(
            d,
            Decision::NewMount(NewMount {
                fs: FsKind::Proc,
                target: "/mnt".into(),
                flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                data: Some("hidepid=2".into()),
            })
        );
        let d = decide(&mount(0, 0x20, 0x30, 0xc0ed_0000 | libc::MS_RDONLY, 0x70), &mut memory());
        assert_eq!(
            d,
            Decision::NewMount(NewMount {
                fs: FsKind::Sysfs,
                target: "/mnt".into(),
                flags: libc::MS_RDONLY,
                data: None,
            })
        );
    }

    #[test]
    fn kernel_file_systems_no_user_namespace_may_mount_get_an_empty_one() {
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_SILENT;
        let d = decide(&mount(0x80, 0x90, 0x80, flags, 0), &mut memory());
        assert_eq!(
            d,
            Decision::EmptyMount(EmptyMount {
                fs: EmptyFs::Debugfs,
                target: "/sys/kernel/debug".into(),
                flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            })
        );
        // A bind or remount of one continues (the kernel judges it).
        let d = decide(&mount(0x80, 0x90, 0xa0, libc::MS_REMOUNT, 0), &mut memory());
        assert_eq!(d, CONTINUE);
        // fsopen falls back to mount(2).
        let mut n = mount(0xa0, 0, 0, 0, 0);
        n.nr = 430;
        assert_eq!(decide(&n, &mut memory()), Decision::Answer(Answer::Errno(libc::ENOSYS)));
        for name in ["debugfs", "tracefs", "securityfs", "configfs"] {
            let fs = EmptyFs::from_name(name).unwrap();
            assert_eq!(fs.name(), name);
            assert!(fs.root_mode() == 0o700 || fs.root_mode() == 0o755);
        }
        assert_eq!(EmptyFs::from_name("tmpfs"), None);
    }

    #[test]
    fn everything_else_continues() {
        let m = &mut memory();
        // Other file systems.
        assert_eq!(decide(&mount(0x60, 0x20, 0x40, 0, 0), m), CONTINUE);
        // Binds, remounts, moves and propagation changes of proc: the kernel judges them.
        for flags in [
            libc::MS_BIND | libc::MS_REC,
            libc::MS_REMOUNT | libc::MS_RDONLY,
            libc::MS_MOVE,
            libc::MS_PRIVATE | libc::MS_REC,
            libc::MS_SHARED,
        ] {
            assert_eq!(decide(&mount(0x60, 0x20, 0x10, flags, 0), m), CONTINUE, "{flags:#x}");
        }
        // Unreadable arguments: the kernel's EFAULT.
        assert_eq!(decide(&mount(0x60, 0x20, 0x999, 0, 0), m), CONTINUE);
        assert_eq!(decide(&mount(0x60, 0x999, 0x10, 0, 0), m), CONTINUE);
        assert_eq!(decide(&mount(0x60, 0x20, 0x10, 0, 0x999), m), CONTINUE);
        // Calls that are not trapped at all.
        let mut getpid = mount(0, 0, 0, 0, 0);
        getpid.nr = 39;
        assert_eq!(decide(&getpid, m), CONTINUE);
        for nr in [428, 429, 442] {
            let mut other = mount(0x10, 0, 0, 0, 0);
            other.nr = nr;
            assert_eq!(decide(&other, m), CONTINUE, "{nr}");
        }
    }

    #[test]
    fn what_the_filter_lets_through_would_continue_anyway() {
        // The profile does not trap these mount flags (sysvisor_proto::MOUNT_FLAGS_NOT_TRAPPED):
        // that must change nothing but speed.
        let skipped = sysvisor_proto::MOUNT_FLAGS_NOT_TRAPPED;
        assert_eq!(skipped & NOT_A_NEW_MOUNT, skipped);
        for bit in 0..64 {
            let flag = 1u64 << bit;
            if skipped & flag != 0 {
                assert_eq!(decide(&mount(0x60, 0x20, 0x10, flag, 0), &mut memory()), CONTINUE);
            }
        }
    }

    #[test]
    fn umounts_are_checked() {
        let mut n = mount(0x20, 2, 0, 0, 0);
        n.nr = 166;
        assert_eq!(
            decide(&n, &mut memory()),
            Decision::CheckUmount { target: "/mnt".into(), flags: libc::MNT_DETACH }
        );
        // i386 umount(target), with garbage in the upper half of the pointer.
        n.arch = AUDIT_ARCH_I386;
        n.nr = 22;
        n.args[0] = 0xffff_ffff_0000_0020;
        assert_eq!(
            decide(&n, &mut memory()),
            Decision::CheckUmount { target: "/mnt".into(), flags: 0 }
        );
        n.args[0] = 0x999;
        assert_eq!(decide(&n, &mut memory()), CONTINUE);
    }

    #[test]
    fn fsopen_of_proc_and_sysfs_falls_back_to_mount() {
        let mut n = mount(0x10, 0, 0, 0, 0);
        n.nr = 430;
        assert_eq!(decide(&n, &mut memory()), Decision::Answer(Answer::Errno(libc::ENOSYS)));
        n.args[0] = 0x30;
        assert_eq!(decide(&n, &mut memory()), Decision::Answer(Answer::Errno(libc::ENOSYS)));
        n.args[0] = 0x40;
        assert_eq!(decide(&n, &mut memory()), CONTINUE);
    }
}
