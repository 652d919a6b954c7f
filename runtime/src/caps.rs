//! Capability names, the host's bounding set, and what a container asked for.
//!
//! runc fails a container ("unable to apply caps: operation not permitted") when its
//! config asks for a capability that runc's own bounding set lacks, and hosts differ in
//! that (these machines lack `CAP_SYS_RESOURCE`). The transform therefore asks only for the
//! capabilities the host's bounding set has; this module reads that set.
//!
//! A system container's root needs more than Docker's default set of 14 capabilities
//! (`CAP_SYS_ADMIN` to mount, `CAP_NET_ADMIN` for its network, ...), and inside its own
//! user namespace they only reach what that namespace owns. So by default it gets every
//! capability the host has. But Docker hands the runtime only the resulting set (its
//! default, minus `--cap-drop`, plus `--cap-add`), not the flags, so [`Requested::of`]
//! tells the user's wish from that set by comparing it with [`DOCKER_DEFAULT`]:
//!
//! - the whole default set is there (no flags, `--cap-add`, `--privileged`), or the
//!   config asks for nothing or for `runc spec`'s default ([`RUNC_SPEC_DEFAULT`]):
//!   [`Requested::Default`], every capability;
//! - more than half of the default set is there: the missing ones were dropped
//!   (`--cap-drop NET_RAW`): [`Requested::Dropped`], every capability but those;
//! - half of the default set or less is there: the set was built from nothing
//!   (`--cap-drop ALL`, maybe with `--cap-add`): [`Requested::Exact`], exactly that set.
//!
//! What cannot be told: dropping a capability outside Docker's default
//! (`--cap-drop SYS_ADMIN` gives Docker's default set unchanged), and dropping more than
//! half of the default one by one (taken as `--cap-drop ALL` plus adds: fewer
//! capabilities, never more). For an exact set, use `--cap-drop ALL --cap-add ...`.

use std::collections::BTreeSet;
use std::path::Path;

use oci_spec::runtime::LinuxCapabilities;

/// Every capability the kernel knows, indexed by its number (`CAP_CHOWN` = 0, ...).
pub const ALL: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Docker 20.10's default capability set for a container that is not `--privileged`
/// (moby `oci/caps/defaults.go`; containerd's default is the same).
pub const DOCKER_DEFAULT: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The set `runc spec` writes (runc 1.1.5): a hand-made bundle that never chose.
pub const RUNC_SPEC_DEFAULT: &[&str] = &["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

/// What a container's config asks for, as far as it can be told (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// The engine's default (or more): every capability the host has.
    Default,
    /// The default minus these (upper-case names): every capability but these.
    Dropped(BTreeSet<String>),
    /// Exactly these.
    Exact(BTreeSet<String>),
}

impl Requested {
    /// Reads the wish from a process's capability sets (Docker fills bounding, effective
    /// and permitted alike; the bounding set, else permitted, else effective, is read).
    /// Docker leaves empty sets out (`--cap-drop ALL` gives `"capabilities": {}`), which
    /// [`crate::spec::parse`] writes out as empty sets, so such a config asks for none; a
    /// config without the object (a hand-made bundle) gets the default.
    pub fn of(caps: Option<&LinuxCapabilities>) -> Requested {
        let Some(caps) = caps else { return Requested::Default };
        let set =
            caps.bounding().as_ref().or(caps.permitted().as_ref()).or(caps.effective().as_ref());
        let Some(set) = set else { return Requested::Default };
        let names: BTreeSet<String> = set.iter().map(capability_name).collect();
        Requested::from_names(names)
    }

    /// The wish behind a set of capability names (`CAP_` prefixed, any case).
    pub fn from_names(names: BTreeSet<String>) -> Requested {
        let names: BTreeSet<String> = names.iter().map(|n| n.to_ascii_uppercase()).collect();
        let runc_default: BTreeSet<String> =
            RUNC_SPEC_DEFAULT.iter().map(|n| n.to_string()).collect();
        if names == runc_default {
            return Requested::Default;
        }
        let missing: BTreeSet<String> =
            DOCKER_DEFAULT.iter().filter(|n| !names.contains(**n)).map(|n| n.to_string()).collect();
        let kept = DOCKER_DEFAULT.len() - missing.len();
        if missing.is_empty() {
            Requested::Default
        } else if kept * 2 > DOCKER_DEFAULT.len() {
            Requested::Dropped(missing)
        } else {
            Requested::Exact(names)
        }
    }

    /// The capability names granted, in kernel order, given the host's bounding set (names
    /// the kernel does not know, or the host lacks, are left out: runc would fail).
    pub fn granted(&self, host: &[String]) -> Vec<&'static str> {
        let host: BTreeSet<String> = host.iter().map(|c| c.to_ascii_uppercase()).collect();
        ALL.iter()
            .copied()
            .filter(|name| host.contains(*name))
            .filter(|name| match self {
                Requested::Default => true,
                Requested::Dropped(dropped) => !dropped.contains(*name),
                Requested::Exact(wanted) => wanted.contains(*name),
            })
            .collect()
    }
}

/// `CAP_SYS_ADMIN` for `Capability::SysAdmin` (its OCI name).
pub fn capability_name(cap: &oci_spec::runtime::Capability) -> String {
    serde_json::to_value(cap)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{cap:?}"))
}

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("cannot read the host's capability bounding set from {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no valid CapBnd line in {path}")]
    NoCapBnd { path: String },
}

/// The names of the capabilities set in a `/proc/PID/status` text's `CapBnd:` mask, in
/// capability-number order. Bits beyond the capabilities this module knows are ignored.
pub fn parse_bounding_set(status: &str) -> Option<Vec<String>> {
    let hex = status.lines().find_map(|line| line.strip_prefix("CapBnd:"))?.trim();
    let mask = u64::from_str_radix(hex, 16).ok()?;
    Some(
        ALL.iter()
            .enumerate()
            .filter(|(bit, _)| mask & (1u64 << bit) != 0)
            .map(|(_, name)| name.to_string())
            .collect(),
    )
}

/// The bounding set of this process (which runc inherits), from `/proc/self/status`.
pub fn host_bounding_set() -> Result<Vec<String>, CapsError> {
    bounding_set_from(Path::new("/proc/self/status"))
}

/// The bounding set in the given status file.
pub fn bounding_set_from(path: &Path) -> Result<Vec<String>, CapsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| CapsError::Read { path: path.display().to_string(), source })?;
    parse_bounding_set(&text)
        .ok_or_else(|| CapsError::NoCapBnd { path: path.display().to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_in_kernel_order() {
        assert_eq!(ALL.len(), 41);
        assert_eq!(ALL[21], "CAP_SYS_ADMIN");
        assert_eq!(ALL[24], "CAP_SYS_RESOURCE");
        assert_eq!(ALL[40], "CAP_CHECKPOINT_RESTORE");
    }

    #[test]
    fn every_name_is_an_oci_capability() {
        for name in ALL {
            let cap: Result<oci_spec::runtime::Capability, _> =
                serde_json::from_value(serde_json::Value::String(name.to_string()));
            assert!(cap.is_ok(), "{name}");
        }
    }

    #[test]
    fn bounding_set_without_sys_resource() {
        let status =
            "Name:\tcat\nCapInh:\t0000000000000000\nCapBnd:\t000001fffeffffff\nCapAmb:\t0\n";
        let set = parse_bounding_set(status).unwrap();
        assert_eq!(set.len(), 40);
        assert!(!set.iter().any(|c| c == "CAP_SYS_RESOURCE"));
        assert!(set.iter().any(|c| c == "CAP_SYS_ADMIN"));
        assert!(set.iter().any(|c| c == "CAP_CHECKPOINT_RESTORE"));
    }

    #[test]
    fn unknown_bits_are_ignored_and_garbage_refused() {
        assert_eq!(parse_bounding_set("CapBnd:\tffffffffffffffff\n").unwrap().len(), 41);
        assert_eq!(parse_bounding_set("CapBnd:\t0000000000000001\n").unwrap(), vec!["CAP_CHOWN"]);
        assert!(parse_bounding_set("CapBnd:\tzz\n").is_none());
        assert!(parse_bounding_set("Name: x\n").is_none());
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn dockers_default_and_more_is_the_default() {
        assert_eq!(Requested::from_names(names(DOCKER_DEFAULT)), Requested::Default);
        let mut more = names(DOCKER_DEFAULT);
        more.insert("CAP_NET_ADMIN".into());
        assert_eq!(Requested::from_names(more), Requested::Default);
        assert_eq!(Requested::from_names(names(ALL)), Requested::Default);
        assert_eq!(Requested::from_names(names(RUNC_SPEC_DEFAULT)), Requested::Default);
        assert_eq!(Requested::of(None), Requested::Default);
    }

    #[test]
    fn a_few_missing_are_dropped_and_most_missing_is_an_exact_set() {
        let mut set = names(DOCKER_DEFAULT);
        set.remove("CAP_NET_RAW");
        assert_eq!(Requested::from_names(set), Requested::Dropped(names(&["CAP_NET_RAW"])));
        assert_eq!(Requested::from_names(BTreeSet::new()), Requested::Exact(BTreeSet::new()));
        let wanted = names(&["CAP_CHOWN", "CAP_NET_ADMIN"]);
        assert_eq!(Requested::from_names(wanted.clone()), Requested::Exact(wanted));
        // Exactly half of the default kept: taken as an exact set (fewer, never more).
        let half = names(&DOCKER_DEFAULT[..7]);
        assert_eq!(Requested::from_names(half.clone()), Requested::Exact(half));
        let more_than_half = names(&DOCKER_DEFAULT[..8]);
        assert!(
            matches!(Requested::from_names(more_than_half), Requested::Dropped(d) if d.len() == 6)
        );
    }

    #[test]
    fn granted_follows_the_wish_and_the_host() {
        let host: Vec<String> =
            ALL.iter().filter(|c| **c != "CAP_SYS_RESOURCE").map(|c| c.to_string()).collect();
        assert_eq!(Requested::Default.granted(&host).len(), 40);
        let dropped = Requested::Dropped(names(&["CAP_NET_RAW"])).granted(&host);
        assert_eq!(dropped.len(), 39);
        assert!(!dropped.contains(&"CAP_NET_RAW") && dropped.contains(&"CAP_SYS_ADMIN"));
        let exact = Requested::Exact(names(&["CAP_SYS_RESOURCE", "CAP_KILL", "CAP_BOGUS"]));
        assert_eq!(exact.granted(&host), vec!["CAP_KILL"]);
        assert!(Requested::Exact(BTreeSet::new()).granted(&host).is_empty());
    }

    #[test]
    fn oci_capabilities_are_read_from_the_bounding_set() {
        let caps: LinuxCapabilities = serde_json::from_value(serde_json::json!({
            "bounding": ["CAP_KILL"], "effective": ["CAP_KILL", "CAP_CHOWN"]
        }))
        .unwrap();
        assert_eq!(Requested::of(Some(&caps)), Requested::Exact(names(&["CAP_KILL"])));
        // Docker's `--cap-drop ALL`, once crate::spec::parse has written out the sets.
        let none: LinuxCapabilities = serde_json::from_value(serde_json::json!({
            "bounding": [], "effective": [], "permitted": []
        }))
        .unwrap();
        assert_eq!(Requested::of(Some(&none)), Requested::Exact(BTreeSet::new()));
        assert_eq!(capability_name(&oci_spec::runtime::Capability::SysAdmin), "CAP_SYS_ADMIN");
    }

    #[test]
    fn this_process_has_a_bounding_set() {
        // Any process has one; it may be empty for an unprivileged test runner.
        host_bounding_set().unwrap();
    }
}
