//! Keeping the helper out of the container's reach.
//!
//! - [`forbid_tracing`]: a non-dumpable process can only be ptraced (or have its memory,
//!   fds, root or cwd opened through /proc) by a process with CAP_SYS_PTRACE in the user
//!   namespace its program was executed in: the initial one, which no container has. Its
//!   /proc/PID files also belong to host root then. The kernel makes a process dumpable
//!   again on exec and, with `fs.suid_dumpable` set, on id changes, so it is set again after
//!   each.
//! - [`become_caller`]: a process that joins a namespace of the container takes the
//!   caller's host uid and gid, drops its supplementary groups and keeps capabilities only
//!   in the caller's user namespace (joining it replaces every capability it had); once
//!   it has entered what it needs, [`limit_caps`] keeps only the caller's own. So even
//!   reached, it could do no more than the caller.

use super::sys::{check, fail, setns, Failure, Step};
use super::FD_USER;
use crate::mounttrap::process::Credentials;

/// Makes this process non-dumpable, and checks that it is.
pub fn forbid_tracing() -> Step<()> {
    // SAFETY: prctl(PR_SET_DUMPABLE) only changes a flag of this process.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } as libc::c_long, "dumpable")?;
    // SAFETY: as above, reading it.
    let now = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    if now != 0 {
        return Err(Failure { step: "dumpable".into(), errno: libc::EPERM });
    }
    Ok(())
}

/// `capget`/`capset` with version 3 (two 32-bit words per set).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Changes this process's capability sets with `change` (capget, change, capset).
fn change_caps(change: impl FnOnce(&mut [CapData; 2])) -> Step<()> {
    let mut header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget fills the two CapData we own for the version-3 header.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    check(rc, "capget")?;
    change(&mut data);
    // SAFETY: capset reads the header and the two CapData we own.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    check(rc, "capset").map(drop)
}

/// Raises the effective capabilities to the permitted ones (which PR_SET_KEEPCAPS kept
/// across the change of ids, while the kernel cleared the effective set).
fn raise_effective() -> Step<()> {
    change_caps(|data| {
        for word in data {
            word.effective = word.permitted;
        }
    })
}

/// Keeps only the capabilities `caps` (the caller's effective set, bit N for capability
/// N): effective and permitted, for good; none inheritable. From then on the helper
/// resolves paths and mounts with no more rights than its caller has.
pub fn limit_caps(caps: u64) -> Step<()> {
    change_caps(|data| {
        for (word, bits) in data.iter_mut().zip([caps as u32, (caps >> 32) as u32]) {
            word.permitted &= bits;
            word.effective = word.permitted;
            word.inheritable = 0;
        }
    })
}

/// Becomes the caller: its host ids, no supplementary groups, every capability in its user
/// namespace (fd 3) and none elsewhere; non-dumpable. Refuses host uid or gid 0 (a host
/// root process that joined a container's namespaces): the helper never runs as host root
/// in them.
pub fn become_caller(creds: Credentials) -> Step<()> {
    if creds.uid == 0 || creds.gid == 0 {
        return Err(Failure { step: "identity".into(), errno: libc::EPERM });
    }
    // SAFETY: setgroups with an empty list.
    check(unsafe { libc::setgroups(0, std::ptr::null()) } as libc::c_long, "setgroups")?;
    // SAFETY: prctl(PR_SET_KEEPCAPS) only changes a flag of this process.
    check(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } as libc::c_long, "keepcaps")?;
    // SAFETY: setresgid/setresuid change only this process's ids.
    check(
        unsafe { libc::setresgid(creds.gid, creds.gid, creds.gid) } as libc::c_long,
        "setresgid",
    )?;
    // SAFETY: as above.
    check(
        unsafe { libc::setresuid(creds.uid, creds.uid, creds.uid) } as libc::c_long,
        "setresuid",
    )?;
    let (mut ruid, mut euid, mut suid) = (0, 0, 0);
    // SAFETY: getresuid into three ids we own.
    check(unsafe { libc::getresuid(&mut ruid, &mut euid, &mut suid) } as libc::c_long, "ids")?;
    if [ruid, euid, suid] != [creds.uid; 3] {
        return Err(Failure { step: "ids".into(), errno: libc::EPERM });
    }
    // Needed for setns into the user namespace; gone with it.
    raise_effective()?;
    setns(FD_USER, libc::CLONE_NEWUSER, "setns user")?;
    // SAFETY: as above.
    check(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) } as libc::c_long, "keepcaps")?;
    forbid_tracing()?;
    // The parent-death signal is cleared by the change of ids.
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of this process.
    check(
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } as libc::c_long,
        "pdeathsig",
    )
    .map(drop)
}

/// Closes every file descriptor from 3 on but `keep`.
pub fn close_all_but(keep: libc::c_int) -> Step<()> {
    let close = |first: libc::c_uint, last: libc::c_uint| {
        // SAFETY: close_range on this process's own fd table; nothing else uses them.
        let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
        check(rc, "close_range").map(drop)
    };
    let keep = u32::try_from(keep).map_err(|_| fail("close_range")(libc_ebadf()))?;
    if keep > 3 {
        close(3, keep - 1)?;
    }
    close(keep + 1, u32::MAX)
}

fn libc_ebadf() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::EBADF)
}
