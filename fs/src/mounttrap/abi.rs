//! The kernel ABI the trap speaks: which system call a notification is about (numbers differ
//! per architecture, and the profile covers several), the mount API constants libc lacks,
//! and the ioctls of a seccomp notify fd.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `AUDIT_ARCH_*` values as they appear in `seccomp_data.arch`.
pub const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
pub const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;
pub const AUDIT_ARCH_ARM: u32 = 0x4000_0028;
/// x32 system calls carry this bit in their number (and report `AUDIT_ARCH_X86_64`).
pub const X32_SYSCALL_BIT: i32 = 0x4000_0000;

/// `open_tree(2)` flags (linux/mount.h).
pub const OPEN_TREE_CLONE: libc::c_uint = 1;
pub const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
/// `move_mount(2)` flags (linux/mount.h).
pub const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
pub const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
/// Mount beneath the top mount of the target (Linux 6.5).
pub const MOVE_MOUNT_BENEATH: libc::c_uint = 0x200;
/// Follow a trailing symlink and trigger automounts at the target, as mount(2) does.
pub const MOVE_MOUNT_T_SYMLINKS: libc::c_uint = 0x10;
pub const MOVE_MOUNT_T_AUTOMOUNTS: libc::c_uint = 0x20;

/// `fsopen(2)`, `fsconfig(2)` and `fsmount(2)` (linux/mount.h).
pub const FSOPEN_CLOEXEC: libc::c_uint = 1;
pub const FSCONFIG_SET_FLAG: libc::c_uint = 0;
pub const FSCONFIG_SET_STRING: libc::c_uint = 1;
pub const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
pub const FSMOUNT_CLOEXEC: libc::c_uint = 1;
/// `MOUNT_ATTR_*`: the per-mount flags of `fsmount(2)`.
pub const MOUNT_ATTR_RDONLY: libc::c_uint = 0x01;
pub const MOUNT_ATTR_NOSUID: libc::c_uint = 0x02;
pub const MOUNT_ATTR_NODEV: libc::c_uint = 0x04;
pub const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x08;
pub const MOUNT_ATTR_NOATIME: libc::c_uint = 0x10;
pub const MOUNT_ATTR_STRICTATIME: libc::c_uint = 0x20;
pub const MOUNT_ATTR_NODIRATIME: libc::c_uint = 0x80;

/// The magic number old programs put in the upper half of mount(2)'s flags.
const MS_MGC_MSK: u64 = 0xffff_0000;
const MS_MGC_VAL: u64 = 0xc0ed_0000;

/// The system calls the profile sends to the trap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syscall {
    /// `mount(source, target, fstype, flags, data)`
    Mount,
    /// `umount2(target, flags)`
    Umount2,
    /// `umount(target)` (32-bit x86 only)
    Umount,
    /// `fsopen(fsname, flags)`
    Fsopen,
    /// `open_tree`, `move_mount`, `mount_setattr`: trapped so that they wait until a new
    /// container's views are locked (see `lock`), then continued; for a container whose
    /// views are not locked, checked by mount identity first (see `identity`).
    OpenTree,
    MoveMount,
    MountSetattr,
    /// `sysinfo(info)`: answered with the container's figures (see `sysinfo`).
    Sysinfo,
}

impl Syscall {
    /// Which trapped call `nr` is on `arch`; `None` for anything else.
    pub fn decode(arch: u32, nr: i32) -> Option<Syscall> {
        let generic = |nr: i32| match nr {
            428 => Some(Syscall::OpenTree),
            429 => Some(Syscall::MoveMount),
            430 => Some(Syscall::Fsopen),
            442 => Some(Syscall::MountSetattr),
            _ => None,
        };
        match arch {
            AUDIT_ARCH_X86_64 => match nr & !X32_SYSCALL_BIT {
                165 => Some(Syscall::Mount),
                166 => Some(Syscall::Umount2),
                99 => Some(Syscall::Sysinfo),
                other => generic(other),
            },
            AUDIT_ARCH_I386 => match nr {
                21 => Some(Syscall::Mount),
                22 => Some(Syscall::Umount),
                52 => Some(Syscall::Umount2),
                116 => Some(Syscall::Sysinfo),
                other => generic(other),
            },
            AUDIT_ARCH_AARCH64 => match nr {
                40 => Some(Syscall::Mount),
                39 => Some(Syscall::Umount2),
                179 => Some(Syscall::Sysinfo),
                other => generic(other),
            },
            AUDIT_ARCH_ARM => match nr {
                21 => Some(Syscall::Mount),
                52 => Some(Syscall::Umount2),
                116 => Some(Syscall::Sysinfo),
                other => generic(other),
            },
            _ => None,
        }
    }
}

/// Whether pointers and longs of `arch` are 32 bits wide (their upper halves in
/// `seccomp_data.args` are then meaningless).
pub fn is_32bit(arch: u32, nr: i32) -> bool {
    matches!(arch, AUDIT_ARCH_I386 | AUDIT_ARCH_ARM)
        || (arch == AUDIT_ARCH_X86_64 && nr & X32_SYSCALL_BIT != 0)
}

/// An argument as the caller passed it: truncated to 32 bits on 32-bit ABIs.
pub fn arg(arch: u32, nr: i32, raw: u64) -> u64 {
    if is_32bit(arch, nr) {
        raw & 0xffff_ffff
    } else {
        raw
    }
}

/// mount(2) flags without the old magic number.
pub fn mount_flags(raw: u64) -> u64 {
    if raw & MS_MGC_MSK == MS_MGC_VAL {
        raw & !MS_MGC_MSK
    } else {
        raw
    }
}

/// One notification, as the kernel gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notification {
    pub id: u64,
    /// The calling thread, in the daemon's pid namespace.
    pub pid: u32,
    pub nr: i32,
    pub arch: u32,
    pub args: [u64; 6],
}

/// How a notification is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The system call returns 0.
    Success,
    /// The system call fails with this errno.
    Errno(i32),
    /// The kernel runs the system call as if nothing had trapped it.
    Continue,
}

/// Receives one notification. Only called after the fd polled readable: the kernel then
/// has one pending (if its caller was killed meanwhile, ENOENT instead of blocking).
pub fn recv(fd: BorrowedFd<'_>) -> io::Result<Notification> {
    // SAFETY: seccomp_notif is plain data; the kernel insists on a zeroed buffer.
    let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl writes one seccomp_notif into the buffer we own.
    let rc = unsafe {
        libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut notif as *mut _)
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Notification {
        id: notif.id,
        pid: notif.pid,
        nr: notif.data.nr,
        arch: notif.data.arch,
        args: notif.data.args,
    })
}

/// Answers notification `id`. ENOENT means its caller is gone (killed, or interrupted by a
/// signal): nothing is waiting for the answer any more.
pub fn send(fd: BorrowedFd<'_>, id: u64, answer: Answer) -> io::Result<()> {
    let (error, flags) = match answer {
        Answer::Success => (0, 0),
        Answer::Errno(errno) => (-errno.abs(), 0),
        Answer::Continue => (0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
    };
    let mut resp = libc::seccomp_notif_resp { id, val: 0, error, flags };
    // SAFETY: the ioctl reads one seccomp_notif_resp from memory we own.
    let rc =
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp as *mut _) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether notification `id` still waits for an answer, i.e. whether its caller's pid
/// still names the same thread: checked after opening anything under /proc/PID.
pub fn id_valid(fd: BorrowedFd<'_>, id: u64) -> bool {
    let mut id = id;
    // SAFETY: the ioctl reads one u64 from memory we own.
    let rc = unsafe {
        libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id as *mut u64)
    };
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_architecture() {
        assert_eq!(Syscall::decode(AUDIT_ARCH_X86_64, 165), Some(Syscall::Mount));
        assert_eq!(Syscall::decode(AUDIT_ARCH_X86_64, 166), Some(Syscall::Umount2));
        assert_eq!(Syscall::decode(AUDIT_ARCH_X86_64, 430), Some(Syscall::Fsopen));
        assert_eq!(Syscall::decode(AUDIT_ARCH_X86_64, 39), None, "getpid");
        // x32: the same numbers with the x32 bit.
        assert_eq!(Syscall::decode(AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 165), Some(Syscall::Mount));
        assert_eq!(Syscall::decode(AUDIT_ARCH_I386, 21), Some(Syscall::Mount));
        assert_eq!(Syscall::decode(AUDIT_ARCH_I386, 22), Some(Syscall::Umount));
        assert_eq!(Syscall::decode(AUDIT_ARCH_I386, 52), Some(Syscall::Umount2));
        assert_eq!(Syscall::decode(AUDIT_ARCH_I386, 428), Some(Syscall::OpenTree));
        assert_eq!(Syscall::decode(AUDIT_ARCH_AARCH64, 40), Some(Syscall::Mount));
        assert_eq!(Syscall::decode(AUDIT_ARCH_AARCH64, 39), Some(Syscall::Umount2));
        assert_eq!(Syscall::decode(AUDIT_ARCH_AARCH64, 442), Some(Syscall::MountSetattr));
        assert_eq!(Syscall::decode(AUDIT_ARCH_ARM, 21), Some(Syscall::Mount));
        assert_eq!(Syscall::decode(AUDIT_ARCH_ARM, 429), Some(Syscall::MoveMount));
        assert_eq!(Syscall::decode(0x1234, 165), None, "unknown architecture");
        assert_eq!(Syscall::decode(AUDIT_ARCH_X86_64, 99), Some(Syscall::Sysinfo));
        assert_eq!(
            Syscall::decode(AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 99),
            Some(Syscall::Sysinfo)
        );
        assert_eq!(Syscall::decode(AUDIT_ARCH_I386, 116), Some(Syscall::Sysinfo));
        assert_eq!(Syscall::decode(AUDIT_ARCH_AARCH64, 179), Some(Syscall::Sysinfo));
        assert_eq!(Syscall::decode(AUDIT_ARCH_ARM, 116), Some(Syscall::Sysinfo));
    }

    #[test]
    fn arguments_of_32_bit_callers_are_truncated() {
        let raw = 0xdead_beef_0000_1000;
        assert_eq!(arg(AUDIT_ARCH_X86_64, 165, raw), raw);
        assert_eq!(arg(AUDIT_ARCH_I386, 21, raw), 0x1000);
        assert_eq!(arg(AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 165, raw), 0x1000);
        assert_eq!(arg(AUDIT_ARCH_AARCH64, 40, raw), raw);
    }

    #[test]
    fn magic_mount_flags_are_stripped() {
        assert_eq!(mount_flags(0xc0ed_0000 | libc::MS_RDONLY), libc::MS_RDONLY);
        assert_eq!(mount_flags(libc::MS_BIND | libc::MS_REC), libc::MS_BIND | libc::MS_REC);
    }

    #[test]
    fn the_profile_traps_every_decoded_call() {
        for name in
            ["mount", "umount2", "umount", "fsopen", "open_tree", "move_mount", "mount_setattr"]
        {
            assert!(sysvisor_proto::MOUNT_TRAP_SYSCALLS.contains(&name), "{name}");
        }
        assert_eq!(sysvisor_proto::INFO_TRAP_SYSCALLS, &["sysinfo"]);
    }
}
