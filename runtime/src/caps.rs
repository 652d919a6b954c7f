//! Capability names and the host's bounding set.
//!
//! runc fails a container ("unable to apply caps: operation not permitted") when its
//! config asks for a capability that runc's own bounding set lacks, and hosts differ in
//! that (these machines lack `CAP_SYS_RESOURCE`). The transform therefore asks only for the
//! capabilities the host's bounding set has; this module reads that set.

use std::path::Path;

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

    #[test]
    fn this_process_has_a_bounding_set() {
        // Any process has one; it may be empty for an unprivileged test runner.
        host_bounding_set().unwrap();
    }
}
