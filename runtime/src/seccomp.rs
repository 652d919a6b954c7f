//! The seccomp profile of a system container.
//!
//! Docker's default profile is an allow list built for application containers: it blocks
//! `mount`, `umount2`, `unshare`, `setns`, `pivot_root`, `clone` with namespace flags and
//! more unless the container has `CAP_SYS_ADMIN` on the host. System software (systemd,
//! Docker, containerd, runc inside) needs exactly those. Inside its own user namespace,
//! root's capabilities only reach what that namespace owns, and the kernel itself checks
//! every such call against the owning namespace, so these are safe to allow.
//!
//! The profile therefore allows every system call by default (`SCMP_ACT_ALLOW`) and
//! returns `EPERM` for a deny list of calls that act on the whole host, are not
//! namespaced, or are a known attack surface for no use inside a container:
//!
//! | calls | why they are blocked |
//! | --- | --- |
//! | `kexec_load`, `kexec_file_load` | load a new kernel |
//! | `init_module`, `finit_module`, `delete_module`, `create_module`, `get_kernel_syms`, `query_module` | kernel modules are global |
//! | `swapon`, `swapoff` | swap is global |
//! | `settimeofday`, `stime`, `clock_settime`, `clock_settime64` | the clock is global (`adjtimex`/`clock_adjtime` stay allowed: their read-only use is common and writing needs `CAP_SYS_TIME` on the host anyway) |
//! | `acct` | process accounting is global |
//! | `iopl`, `ioperm` | raw I/O port access |
//! | `nfsservctl`, `uselib`, `vm86`, `vm86old`, `lookup_dcookie` | obsolete interfaces with a history of bugs |
//! | `open_by_handle_at` | opens files by handle past the mount namespace ("shocker"); `name_to_handle_at` alone is harmless and used by systemd, so it stays allowed |
//! | `keyctl`, `add_key`, `request_key` | the kernel keyring is not fully namespaced (as in Docker's profile); refused with `ENOSYS`, not `EPERM` ([`ENOSYS_NAMES`]) |
//! | `perf_event_open` | host-wide performance data and a large attack surface (as in Docker's profile) |
//! | `bpf` | eBPF programs are a large attack surface; systemd copes with `EPERM` (as in Docker's profile) |
//! | `userfaultfd` | a classic helper for kernel race exploits (as in Docker's profile) |
//! | `syslog` | the host's kernel log |
//! | `io_uring_setup`, `io_uring_enter`, `io_uring_register` | a frequent source of kernel vulnerabilities; programs fall back to plain I/O (as in Docker's profile since 25.0) |
//!
//! Deliberately allowed: `mount`, `umount2`, `pivot_root`, `unshare`, `setns`, `clone`,
//! `clone3` (nested containers), the new mount API (`open_tree`, `move_mount`, `fsopen`,
//! `fsconfig`, `fsmount`, `fspick`, `mount_setattr`), `ptrace`, `personality`, and
//! `reboot`: the container always has its own pid namespace, where `reboot` only ends the
//! container (that is how `systemctl poweroff` inside stops it).
//!
//! The mount family (`mount`, `umount2`, `umount`, `fsopen`, `open_tree`, `move_mount`,
//! `mount_setattr`: [`sysvisor_proto::MOUNT_TRAP_SYSCALLS`]) goes to the sysvisor-fs daemon
//! instead (`SCMP_ACT_NOTIFY`, with `listenerPath` set to the daemon's seccomp socket): it
//! performs proc and sysfs mounts itself with the virtual views on them, refuses to unmount
//! a view, and lets every other call continue as if nothing had trapped it (see
//! docs/mounttrap.md). `sysinfo` goes there too ([`sysvisor_proto::INFO_TRAP_SYSCALLS`]),
//! answered with the container's memory, uptime and loads (docs/fs.md). Every other
//! system call runs without any round trip.
//!
//! Which profile a container gets ([`profile_for`]):
//!
//! - the engine's default profile ([`Origin::EngineDefault`], Docker's when the container
//!   was given no `--security-opt seccomp=...`, see [`crate::docker`]) is replaced by this
//!   one: its allow list refuses the calls above to anything without `CAP_SYS_ADMIN` on
//!   the host;
//! - no profile at all (`--privileged`, `--security-opt seccomp=unconfined`): this one too,
//!   so that the views are served and protected and module loading stays blocked;
//! - the user's own profile ([`Origin::User`]) is kept and merged with what system
//!   containers need ([`merge`]): the deny list above wins over the user's rules, and the
//!   mount family goes to the listener wherever the user's profile lets it run; a call the
//!   user's profile refuses stays refused (no trap for it). A profile that cannot be merged
//!   is refused with a clear error ([`SeccompError`]), never replaced.
//!
//! The filter covers x86_64 with its 32-bit and x32 ABIs, and aarch64 with 32-bit arm, so
//! a deny rule cannot be bypassed through another ABI. runc skips names that do not exist
//! on the host's architecture.

use std::path::Path;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompOperator,
    LinuxSyscall,
};

/// Where a container's seccomp profile came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The container engine's default, chosen by nobody: replaced.
    EngineDefault,
    /// Given by the user (or of unknown origin): merged, never replaced.
    User,
}

/// A user's profile that cannot be merged with a system container's needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeccompError {
    #[error(
        "the container's seccomp profile has its own notify listener ({0}); a system container's \
         profile notifies sysvisor-fs's mount trap, and a filter has one listener only"
    )]
    OwnListener(String),
    #[error(
        "the container's seccomp profile has argument conditions on {0}, which the mount trap of \
         a system container must receive: allow or refuse {0} as a whole"
    )]
    ConditionalTrapRule(String),
}

/// The system calls the profile refuses, with the reason (see the module doc).
pub const BLOCKED: &[(&[&str], &str)] = &[
    (&["kexec_load", "kexec_file_load"], "loads a new kernel"),
    (
        &[
            "init_module",
            "finit_module",
            "delete_module",
            "create_module",
            "get_kernel_syms",
            "query_module",
        ],
        "kernel modules are global",
    ),
    (&["swapon", "swapoff"], "swap is global"),
    (&["settimeofday", "stime", "clock_settime", "clock_settime64"], "the clock is global"),
    (&["acct"], "process accounting is global"),
    (&["iopl", "ioperm"], "raw I/O port access"),
    (&["nfsservctl", "uselib", "vm86", "vm86old", "lookup_dcookie"], "obsolete, bug-prone"),
    (&["open_by_handle_at"], "opens files past the mount namespace"),
    (&["keyctl", "add_key", "request_key"], "the keyring is not fully namespaced"),
    (&["perf_event_open"], "host-wide performance data, attack surface"),
    (&["bpf"], "attack surface"),
    (&["userfaultfd"], "helper for kernel race exploits"),
    (&["syslog"], "the host's kernel log"),
    (&["io_uring_setup", "io_uring_enter", "io_uring_register"], "attack surface"),
];

/// Blocked calls refused with `ENOSYS` ("no such call here") instead of `EPERM`: programs
/// take that as a kernel without keyrings and go on, where `EPERM` is fatal to them. runc
/// inside (an inner `docker run`) fails with "unable to join session keyring: operation
/// not permitted" otherwise; systemd copes with both.
pub const ENOSYS_NAMES: &[&str] = &["keyctl", "add_key", "request_key"];

/// The architectures the filter is built for.
pub const ARCHES: &[Arch] = &[
    Arch::ScmpArchX86_64,
    Arch::ScmpArchX86,
    Arch::ScmpArchX32,
    Arch::ScmpArchAarch64,
    Arch::ScmpArchArm,
];

/// Every blocked system call name, in table order.
pub fn blocked_names() -> Vec<&'static str> {
    BLOCKED.iter().flat_map(|(names, _)| names.iter().copied()).collect()
}

/// The profile: allow by default, `EPERM` for [`BLOCKED`] (`ENOSYS` for those of
/// [`ENOSYS_NAMES`]).
pub fn system_container_profile() -> LinuxSeccomp {
    let rule = |names: Vec<&str>, errno: i32| {
        let mut deny = LinuxSyscall::default();
        deny.set_names(names.into_iter().map(String::from).collect());
        deny.set_action(LinuxSeccompAction::ScmpActErrno);
        deny.set_errno_ret(Some(errno as u32));
        deny
    };
    let (enosys, eperm): (Vec<&str>, Vec<&str>) =
        blocked_names().into_iter().partition(|n| ENOSYS_NAMES.contains(n));

    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActAllow);
    profile.set_architectures(Some(ARCHES.to_vec()));
    profile.set_syscalls(Some(vec![rule(eperm, libc::EPERM), rule(enosys, libc::ENOSYS)]));
    profile
}

/// The rules that send the mount family to the seccomp listener: `mount` unless its flags
/// hold one of [`sysvisor_proto::MOUNT_FLAGS_NOT_TRAPPED`] (remounts and propagation
/// changes run without the round trip), every other call of the family always, and
/// `sysinfo` ([`sysvisor_proto::INFO_TRAP_SYSCALLS`]), which the daemon answers with the
/// container's figures.
pub fn mount_trap_rules() -> Vec<LinuxSyscall> {
    let notify = |names: Vec<String>| {
        let mut rule = LinuxSyscall::default();
        rule.set_names(names);
        rule.set_action(LinuxSeccompAction::ScmpActNotify);
        rule
    };
    let flags = LinuxSeccompArgBuilder::default()
        .index(3usize)
        .value(sysvisor_proto::MOUNT_FLAGS_NOT_TRAPPED)
        .value_two(0u64)
        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
        .build()
        .expect("every field of the argument is set");
    let mut mount = notify(vec!["mount".into()]);
    mount.set_args(Some(vec![flags]));
    let others = sysvisor_proto::MOUNT_TRAP_SYSCALLS.iter().filter(|n| **n != "mount");
    let info = sysvisor_proto::INFO_TRAP_SYSCALLS.iter();
    vec![
        mount,
        notify(others.map(|n| n.to_string()).collect()),
        notify(info.map(|n| n.to_string()).collect()),
    ]
}

/// Every call the listener receives: the mount family and [`sysvisor_proto::INFO_TRAP_SYSCALLS`].
fn trapped_names() -> impl Iterator<Item = &'static str> {
    sysvisor_proto::MOUNT_TRAP_SYSCALLS.iter().chain(sysvisor_proto::INFO_TRAP_SYSCALLS).copied()
}

/// The profile of a system container: [`system_container_profile`], plus the mount trap
/// when the daemon's seccomp socket `listener` is given.
pub fn profile(listener: Option<&Path>) -> LinuxSeccomp {
    let mut profile = system_container_profile();
    if let Some(listener) = listener {
        let mut rules = profile.syscalls().clone().unwrap_or_default();
        rules.extend(mount_trap_rules());
        profile.set_syscalls(Some(rules));
        profile.set_listener_path(Some(listener.to_path_buf()));
    }
    profile
}

/// The profile of a system container given the container's own `user` profile and its
/// [`Origin`] (see the module doc).
pub fn profile_for(
    user: Option<&LinuxSeccomp>,
    origin: Origin,
    listener: Option<&Path>,
) -> Result<LinuxSeccomp, SeccompError> {
    match (user, origin) {
        (Some(user), Origin::User) => merge(user, listener),
        _ => Ok(profile(listener)),
    }
}

fn lets_through(action: LinuxSeccompAction) -> bool {
    matches!(action, LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog)
}

/// The user's profile, merged with a system container's needs:
///
/// - its default action, architectures, flags and other rules are kept;
/// - the calls of [`BLOCKED`] leave the user's rules and are refused as in
///   [`system_container_profile`] (the deny list wins, whatever the user allowed);
/// - each call of the mount family that the user's profile lets run (an allowing rule
///   without conditions, or an allowing default action) goes to the listener instead
///   (`mount` with [`mount_trap_rules`]'s flag condition where the default action allows,
///   else unconditionally); one it refuses stays refused;
/// - a profile with its own listener or notify rules, or with argument conditions on a
///   call of the mount family, is refused ([`SeccompError`]).
pub fn merge(user: &LinuxSeccomp, listener: Option<&Path>) -> Result<LinuxSeccomp, SeccompError> {
    if let Some(path) = user.listener_path() {
        return Err(SeccompError::OwnListener(path.display().to_string()));
    }
    let rules = user.syscalls().clone().unwrap_or_default();
    if rules.iter().any(|r| r.action() == LinuxSeccompAction::ScmpActNotify) {
        return Err(SeccompError::OwnListener("SCMP_ACT_NOTIFY rules".into()));
    }
    let blocked = blocked_names();
    let default_allows = lets_through(user.default_action());

    // Which calls of the mount family the user's profile lets run.
    let mut trapped: Vec<&str> = Vec::new();
    if listener.is_some() {
        for name in trapped_names() {
            let naming: Vec<&LinuxSyscall> =
                rules.iter().filter(|r| r.names().iter().any(|n| n == name)).collect();
            if naming.iter().any(|r| r.args().as_ref().is_some_and(|a| !a.is_empty())) {
                return Err(SeccompError::ConditionalTrapRule(name.to_string()));
            }
            let allowed = if naming.is_empty() {
                default_allows
            } else {
                naming.iter().all(|r| lets_through(r.action()))
            };
            if allowed {
                trapped.push(name);
            }
        }
    }

    let mut merged: Vec<LinuxSyscall> =
        system_container_profile().syscalls().clone().unwrap_or_default();
    for mut rule in rules {
        let names: Vec<String> = rule
            .names()
            .iter()
            .filter(|n| !blocked.contains(&n.as_str()) && !trapped.contains(&n.as_str()))
            .cloned()
            .collect();
        if !names.is_empty() {
            rule.set_names(names);
            merged.push(rule);
        }
    }
    for rule in mount_trap_rules() {
        let names: Vec<String> =
            rule.names().iter().filter(|n| trapped.contains(&n.as_str())).cloned().collect();
        if names.is_empty() {
            continue;
        }
        let mut rule = rule.clone();
        if !default_allows {
            rule.set_args(None); // nothing else would let the remounts through
        }
        rule.set_names(names);
        merged.push(rule);
    }

    let mut profile = user.clone();
    profile.set_syscalls(Some(merged));
    if !trapped.is_empty() {
        profile.set_listener_path(listener.map(Path::to_path_buf));
        // Metadata goes to the listener: the user's is not meant for sysvisor-fs.
        profile.set_listener_metadata(None);
    }
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_allow_with_eperm_deny_list() {
        let p = system_container_profile();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        let rules = p.syscalls().as_ref().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(rules[0].errno_ret(), Some(1));
        for name in
            ["kexec_load", "init_module", "finit_module", "delete_module", "open_by_handle_at"]
        {
            assert!(rules[0].names().iter().any(|n| n == name), "{name} must be blocked");
        }
        // The keyring calls: ENOSYS, which runc and systemd inside take as "no keyrings".
        assert_eq!(rules[1].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(rules[1].errno_ret(), Some(libc::ENOSYS as u32));
        assert_eq!(
            rules[1].names(),
            &ENOSYS_NAMES.iter().map(|n| n.to_string()).collect::<Vec<_>>()
        );
        assert!(!rules[0].names().iter().any(|n| n == "keyctl"));
    }

    #[test]
    fn system_software_calls_stay_allowed() {
        let names = blocked_names();
        for name in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "clone",
            "clone3",
            "pivot_root",
            "reboot",
            "ptrace",
            "name_to_handle_at",
            "open_tree",
            "move_mount",
            "mount_setattr",
            "fsopen",
            "adjtimex",
        ] {
            assert!(!names.contains(&name), "{name} must stay allowed");
        }
    }

    #[test]
    fn the_mount_family_goes_to_the_listener() {
        assert_eq!(profile(None), system_container_profile());
        let p = profile(Some(Path::new("/run/sysvisor/seccomp.sock")));
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["listenerPath"], "/run/sysvisor/seccomp.sock");
        assert_eq!(json["defaultAction"], "SCMP_ACT_ALLOW");
        let rules = json["syscalls"].as_array().unwrap();
        // The deny rules of the system container profile come first, unchanged.
        let deny = system_container_profile().syscalls().as_ref().map_or(0, |r| r.len());
        assert_eq!(rules.len(), deny + 3);
        assert!(rules[..deny].iter().all(|r| r["action"] == "SCMP_ACT_ERRNO"));
        let (mount, others) = (&rules[deny], &rules[deny + 1]);
        // mount: notified unless a remount or a propagation change.
        assert_eq!(mount["action"], "SCMP_ACT_NOTIFY");
        assert_eq!(mount["names"], serde_json::json!(["mount"]));
        let arg = &mount["args"][0];
        assert_eq!(arg["index"], 3);
        assert_eq!(arg["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(arg["valueTwo"], 0);
        let skipped = arg["value"].as_u64().unwrap();
        assert_eq!(
            skipped,
            libc::MS_REMOUNT
                | libc::MS_SHARED
                | libc::MS_PRIVATE
                | libc::MS_SLAVE
                | libc::MS_UNBINDABLE
        );
        assert_eq!(skipped & (libc::MS_BIND | libc::MS_MOVE), 0, "binds and moves stay trapped");
        assert_eq!(others["action"], "SCMP_ACT_NOTIFY");
        let mut trapped: Vec<&str> =
            others["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
        trapped.push("mount");
        let info = &rules[deny + 2];
        assert_eq!(info["action"], "SCMP_ACT_NOTIFY");
        assert_eq!(info["names"], serde_json::json!(["sysinfo"]));
        assert!(info["args"].is_null(), "every sysinfo is answered");
        trapped.push("sysinfo");
        trapped.sort();
        let mut all: Vec<&str> = trapped_names().collect();
        all.sort();
        assert_eq!(trapped, all);
        // Nothing is both trapped and denied, and the ordinary calls are in neither list.
        let denied = blocked_names();
        for name in &trapped {
            assert!(!denied.contains(name), "{name}");
        }
        for name in ["getpid", "read", "write", "openat", "unshare", "clone", "pivot_root"] {
            assert!(!trapped.contains(&name) && !denied.contains(&name), "{name}");
        }
    }

    #[test]
    fn no_duplicates_and_serializes_like_runc_expects() {
        let names = blocked_names();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());

        let json = serde_json::to_value(system_container_profile()).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ALLOW");
        assert_eq!(json["architectures"][0], "SCMP_ARCH_X86_64");
        assert_eq!(json["syscalls"][0]["action"], "SCMP_ACT_ERRNO");
        assert_eq!(json["syscalls"][0]["errnoRet"], 1);
    }
}
