//! The tables of virtualized paths: every dynamic subtree of the mount ([`MIRRORS`]) and,
//! for each, one [`Rule`] per path with a behaviour of its own. A path without a rule is
//! [`Kind::ReadOnly`]. docs/sysctl.md lists the same table for users; keep them in step.

use super::format::Format;

/// A namespace a sysctl belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ns {
    Net,
    Uts,
    Ipc,
}

/// What a path does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// What the caller's own view of the host has there; writes are refused (EACCES).
    ReadOnly,
    /// Read and written for real in the caller's own namespace; the kernel decides what
    /// is writable (its mode bits) and what is valid.
    Namespaced(Ns),
    /// As `Namespaced(Net)`, with the group ids translated through the caller's gid map
    /// (the kernel's reader would print them in the daemon's user namespace).
    GidRange,
    /// Emulated per container: reads give the host's value until the container writes
    /// one, writes are checked by `Format` and kept for that container only.
    Emulated(Format),
    /// Real in the caller's network namespace when it is writable there (kernels that
    /// namespace it), emulated as `Emulated(Format)` otherwise.
    NetOrEmulated(Format),
    /// An empty directory, whatever the host has below it (it exists if the host's does).
    EmptyDir,
    /// A UUID of the caller's container, derived from its id, readable by its root only.
    ContainerUuid,
}

impl Kind {
    /// Whether the entry is served from per-container state for registered callers.
    pub fn is_emulated(&self) -> bool {
        matches!(self, Kind::Emulated(_) | Kind::NetOrEmulated(_) | Kind::ContainerUuid)
    }
}

/// One path's behaviour. A path ending in `/` covers everything below it.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub path: &'static str,
    pub kind: Kind,
}

/// A dynamic subtree of the mount.
#[derive(Debug)]
pub struct Mirror {
    /// Its directory below the mount point.
    pub path: &'static str,
    /// The host directory it mirrors.
    pub host: HostRoot,
    /// The directories (and everything below) whose entries depend on the caller's
    /// namespace, listed and looked up in it: their existence varies between callers.
    pub per_namespace: &'static [(&'static str, Ns)],
    pub rules: &'static [Rule],
}

/// A host directory, relative to the configured proc or sys root.
#[derive(Debug, Clone, Copy)]
pub enum HostRoot {
    Proc(&'static str),
    Sys(&'static str),
}

/// Every dynamic subtree. `sysvisor-runc` mounts each over the same path in a container.
pub static MIRRORS: &[Mirror] = &[
    Mirror {
        path: "proc/sys",
        host: HostRoot::Proc("sys"),
        per_namespace: &[("net", Ns::Net)],
        rules: PROC_SYS,
    },
    Mirror {
        path: "sys/kernel",
        host: HostRoot::Sys("kernel"),
        per_namespace: &[],
        rules: SYS_KERNEL,
    },
    Mirror {
        path: "sys/devices/virtual/dmi/id",
        host: HostRoot::Sys("devices/virtual/dmi/id"),
        per_namespace: &[],
        rules: DMI_ID,
    },
    Mirror {
        path: "sys/module/nf_conntrack/parameters",
        host: HostRoot::Sys("module/nf_conntrack/parameters"),
        per_namespace: &[],
        rules: NF_CONNTRACK_PARAMETERS,
    },
];

const INT_MIN: i64 = i32::MIN as i64;
const INT_MAX: i64 = i32::MAX as i64;
/// `proc_dointvec`: any int.
const INT: Format = Format::Ints { len: 1, min: INT_MIN, max: INT_MAX };
/// `proc_dointvec_minmax` with `SYSCTL_ZERO`..`SYSCTL_INT_MAX`.
const NON_NEGATIVE: Format = Format::Ints { len: 1, min: 0, max: INT_MAX };
const fn int_range(min: i64, max: i64) -> Format {
    Format::Ints { len: 1, min, max }
}
/// `proc_doulongvec_minmax` up to LONG_MAX (`SYSCTL_LONG_MAX`, fs.file-max).
const ULONG_TO_LONG_MAX: Format = Format::Ulongs { len: 1, min: 0, max: i64::MAX as u64 };
/// `proc_doulongvec_minmax` without bounds (vm.mmap_min_addr's handler).
const ULONG: Format = Format::Ulongs { len: 1, min: 0, max: u64::MAX };

/// Queueing disciplines a default may name (`qdisc_lookup_default` finds any registered
/// one; these are the kernel's built-ins and its sch_* modules).
pub const QDISCS: &[&str] = &[
    "bfifo",
    "cake",
    "cbs",
    "choke",
    "codel",
    "drr",
    "dualpi2",
    "etf",
    "ets",
    "fq",
    "fq_codel",
    "fq_pie",
    "gred",
    "hfsc",
    "hhf",
    "htb",
    "mq",
    "mqprio",
    "multiq",
    "netem",
    "noqueue",
    "pfifo",
    "pfifo_fast",
    "pfifo_head_drop",
    "pie",
    "plug",
    "prio",
    "qfq",
    "red",
    "sfb",
    "sfq",
    "skbprio",
    "taprio",
    "tbf",
];

/// `/proc/sys`.
pub static PROC_SYS: &[Rule] = &[
    // The caller's own namespaces.
    Rule { path: "net/", kind: Kind::Namespaced(Ns::Net) },
    Rule { path: "net/ipv4/ping_group_range", kind: Kind::GidRange },
    Rule { path: "kernel/hostname", kind: Kind::Namespaced(Ns::Uts) },
    Rule { path: "kernel/domainname", kind: Kind::Namespaced(Ns::Uts) },
    Rule { path: "kernel/shmmax", kind: Kind::Namespaced(Ns::Ipc) },
    Rule { path: "kernel/shmall", kind: Kind::Namespaced(Ns::Ipc) },
    Rule { path: "kernel/shmmni", kind: Kind::Namespaced(Ns::Ipc) },
    Rule { path: "kernel/shm_rmid_forced", kind: Kind::Namespaced(Ns::Ipc) },
    Rule { path: "kernel/shm_next_id", kind: Kind::Namespaced(Ns::Ipc) },
    Rule { path: "kernel/msgmax", kind: Kind::Namespaced(Ns::Ipc) },
    Rule { path: "kernel/msgmnb", kind: Kind::Namespaced(Ns::Ipc) },
    Rule { path: "kernel/msgmni", kind: Kind::Namespaced(Ns::Ipc) },
    Rule { path: "kernel/msg_next_id", kind: Kind::Namespaced(Ns::Ipc) },
    Rule { path: "kernel/auto_msgmni", kind: Kind::Namespaced(Ns::Ipc) },
    Rule { path: "kernel/sem", kind: Kind::Namespaced(Ns::Ipc) },
    Rule { path: "kernel/sem_next_id", kind: Kind::Namespaced(Ns::Ipc) },
    Rule { path: "fs/mqueue/", kind: Kind::Namespaced(Ns::Ipc) },
    // Emulated per container.
    Rule { path: "kernel/panic", kind: Kind::Emulated(INT) },
    Rule { path: "kernel/panic_on_oops", kind: Kind::Emulated(INT) },
    Rule { path: "kernel/kptr_restrict", kind: Kind::Emulated(int_range(0, 2)) },
    Rule { path: "kernel/dmesg_restrict", kind: Kind::Emulated(int_range(0, 1)) },
    Rule {
        path: "kernel/printk",
        kind: Kind::Emulated(Format::Ints { len: 4, min: INT_MIN, max: INT_MAX }),
    },
    Rule { path: "kernel/sysrq", kind: Kind::Emulated(INT) },
    Rule { path: "kernel/pid_max", kind: Kind::Emulated(int_range(301, 4 * 1024 * 1024)) },
    Rule {
        path: "kernel/yama/ptrace_scope",
        kind: Kind::Emulated(Format::IntLocked { min: 0, max: 3, lock: 3 }),
    },
    Rule { path: "vm/overcommit_memory", kind: Kind::Emulated(int_range(0, 2)) },
    Rule { path: "vm/mmap_min_addr", kind: Kind::Emulated(ULONG) },
    Rule { path: "fs/file-max", kind: Kind::Emulated(ULONG_TO_LONG_MAX) },
    Rule { path: "fs/nr_open", kind: Kind::Emulated(int_range(64, 2_147_483_584)) },
    Rule { path: "fs/protected_hardlinks", kind: Kind::Emulated(int_range(0, 1)) },
    Rule { path: "fs/protected_symlinks", kind: Kind::Emulated(int_range(0, 1)) },
    Rule { path: "net/netfilter/nf_conntrack_max", kind: Kind::NetOrEmulated(NON_NEGATIVE) },
    Rule {
        path: "net/netfilter/nf_conntrack_generic_timeout",
        kind: Kind::NetOrEmulated(Format::Jiffies),
    },
    Rule {
        path: "net/netfilter/nf_conntrack_tcp_be_liberal",
        kind: Kind::NetOrEmulated(Format::Uint { min: 0, max: 1 }),
    },
    Rule {
        path: "net/netfilter/nf_conntrack_tcp_timeout_established",
        kind: Kind::NetOrEmulated(Format::Jiffies),
    },
    Rule {
        path: "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
        kind: Kind::NetOrEmulated(Format::Jiffies),
    },
    Rule { path: "net/core/somaxconn", kind: Kind::NetOrEmulated(NON_NEGATIVE) },
    Rule {
        path: "net/core/default_qdisc",
        kind: Kind::NetOrEmulated(Format::Name { maxlen: 16, names: QDISCS }),
    },
    Rule { path: "net/unix/max_dgram_qlen", kind: Kind::NetOrEmulated(INT) },
    Rule { path: "net/ipv4/neigh/default/gc_thresh1", kind: Kind::NetOrEmulated(NON_NEGATIVE) },
    Rule { path: "net/ipv4/neigh/default/gc_thresh2", kind: Kind::NetOrEmulated(NON_NEGATIVE) },
    Rule { path: "net/ipv4/neigh/default/gc_thresh3", kind: Kind::NetOrEmulated(NON_NEGATIVE) },
    // Read-only, named for the documentation: the host's values.
    Rule { path: "kernel/ngroups_max", kind: Kind::ReadOnly },
    Rule { path: "kernel/cap_last_cap", kind: Kind::ReadOnly },
    // The kernel makes a new one at every read.
    Rule { path: "kernel/random/uuid", kind: Kind::ReadOnly },
];

/// `/sys/kernel`.
pub static SYS_KERNEL: &[Rule] = &[
    Rule { path: "config", kind: Kind::EmptyDir },
    Rule { path: "debug", kind: Kind::EmptyDir },
    Rule { path: "security", kind: Kind::EmptyDir },
    Rule { path: "tracing", kind: Kind::EmptyDir },
];

/// `/sys/devices/virtual/dmi/id`.
pub static DMI_ID: &[Rule] = &[Rule { path: "product_uuid", kind: Kind::ContainerUuid }];

/// `/sys/module/nf_conntrack/parameters`.
pub static NF_CONNTRACK_PARAMETERS: &[Rule] = &[Rule {
    path: "hashsize",
    // nf_conntrack_set_hashsize: kstrtouint, 0 is EINVAL, the table must fit
    // (UINT_MAX / sizeof(struct hlist_nulls_head)), rounded up to a page of buckets.
    kind: Kind::Emulated(Format::Param { min: 1, max: u32::MAX as u64 / 8, round: 512 }),
}];

/// The behaviour of `path` (relative to its mirror): its own rule, else the rule of its
/// closest covering prefix, else [`Kind::ReadOnly`].
pub fn kind_of(rules: &[Rule], path: &str) -> Kind {
    let mut best: Option<&Rule> = None;
    for rule in rules {
        if rule.path == path {
            return rule.kind;
        }
        if let Some(prefix) = rule.path.strip_suffix('/') {
            let covers = path == prefix || path.starts_with(rule.path);
            if covers && best.is_none_or(|b| b.path.len() < rule.path.len()) {
                best = Some(rule);
            }
        }
    }
    best.map_or(Kind::ReadOnly, |r| r.kind)
}

/// Rules of single paths strictly below directory `dir` ("" = the mirror's root).
pub fn rules_below<'r>(rules: &'r [Rule], dir: &'r str) -> impl Iterator<Item = &'r Rule> + 'r {
    rules.iter().filter(move |r| {
        !r.path.ends_with('/')
            && match dir {
                "" => true,
                _ => r.path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/')),
            }
    })
}

/// The component of `path` right below `dir` (`rules_below`'s paths).
pub fn child_below<'p>(dir: &str, path: &'p str) -> &'p str {
    let rest = if dir.is_empty() { path } else { &path[dir.len() + 1..] };
    rest.split('/').next().unwrap_or(rest)
}

/// The namespace `path` of `mirror` is listed in, if its entries depend on the caller's.
pub fn namespace_of(mirror: &Mirror, path: &str) -> Option<Ns> {
    mirror.per_namespace.iter().find_map(|(dir, ns)| {
        (path == *dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))).then_some(*ns)
    })
}

/// Whether `path` of `mirror` may be something else for another caller (exist or not,
/// another inode, other attributes): what the kernel caches of it must not outlive the
/// request. Only entries that are the host's for everyone, read-only, may be cached.
pub fn varies(mirror: &Mirror, path: &str) -> bool {
    // (A directory holding emulated entries is the host's: they exist only where the
    // host has them, so the host has their directory; those outside `net`, which varies
    // anyway, are the same for everyone.)
    namespace_of(mirror, path).is_some()
        || !matches!(kind_of(mirror.rules, path), Kind::ReadOnly | Kind::EmptyDir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_resolve_exact_then_longest_prefix() {
        assert_eq!(kind_of(PROC_SYS, "net/ipv4/ip_forward"), Kind::Namespaced(Ns::Net));
        assert_eq!(kind_of(PROC_SYS, "net"), Kind::Namespaced(Ns::Net));
        assert_eq!(kind_of(PROC_SYS, "net/ipv4/ping_group_range"), Kind::GidRange);
        assert!(matches!(kind_of(PROC_SYS, "net/core/somaxconn"), Kind::NetOrEmulated(_)));
        assert_eq!(kind_of(PROC_SYS, "kernel/hostname"), Kind::Namespaced(Ns::Uts));
        assert_eq!(kind_of(PROC_SYS, "fs/mqueue/msg_max"), Kind::Namespaced(Ns::Ipc));
        assert!(matches!(kind_of(PROC_SYS, "kernel/panic"), Kind::Emulated(_)));
        assert_eq!(kind_of(PROC_SYS, "kernel/panic_print"), Kind::ReadOnly);
        assert_eq!(kind_of(PROC_SYS, "vm/swappiness"), Kind::ReadOnly);
        assert_eq!(kind_of(PROC_SYS, "netx"), Kind::ReadOnly);
        assert_eq!(kind_of(SYS_KERNEL, "debug"), Kind::EmptyDir);
        assert_eq!(kind_of(DMI_ID, "product_uuid"), Kind::ContainerUuid);
        assert_eq!(kind_of(DMI_ID, "product_name"), Kind::ReadOnly);
    }

    #[test]
    fn every_path_is_listed_once_and_well_formed() {
        for mirror in MIRRORS {
            let mut seen = std::collections::HashSet::new();
            for rule in mirror.rules {
                assert!(seen.insert(rule.path), "{} twice in {}", rule.path, mirror.path);
                assert!(!rule.path.starts_with('/') && !rule.path.contains("//"), "{}", rule.path);
                assert!(!rule.path.split('/').any(|c| c == "." || c == ".."), "{}", rule.path);
            }
        }
        let paths: Vec<&str> = MIRRORS.iter().map(|m| m.path).collect();
        assert_eq!(
            paths,
            [
                "proc/sys",
                "sys/kernel",
                "sys/devices/virtual/dmi/id",
                "sys/module/nf_conntrack/parameters"
            ]
        );
    }

    #[test]
    fn emulated_defaults_accept_the_hosts_usual_values() {
        for (path, value) in [
            ("kernel/panic", "10"),
            ("kernel/printk", "4 4 1 7"),
            ("kernel/pid_max", "4194304"),
            ("fs/file-max", "9223372036854775807"),
            ("fs/nr_open", "1048576"),
            ("net/core/default_qdisc", "fq_codel"),
            ("net/netfilter/nf_conntrack_max", "262144"),
        ] {
            let format = match kind_of(PROC_SYS, path) {
                Kind::Emulated(f) | Kind::NetOrEmulated(f) => f,
                other => panic!("{path}: {other:?}"),
            };
            assert!(format.accepts("0", value), "{path} refuses {value}");
        }
        assert!(
            !matches!(kind_of(PROC_SYS, "kernel/pid_max"), Kind::Emulated(f) if f.accepts("0", "300"))
        );
    }

    #[test]
    fn rules_below_a_directory() {
        let below: Vec<&str> = rules_below(PROC_SYS, "net/ipv4/neigh").map(|r| r.path).collect();
        assert_eq!(below.len(), 3);
        assert_eq!(child_below("net/ipv4/neigh", below[0]), "default");
        assert_eq!(child_below("", "net/core/somaxconn"), "net");
        assert!(rules_below(PROC_SYS, "net/ipv").next().is_none());
        let mirror = &MIRRORS[0];
        assert_eq!(namespace_of(mirror, "net"), Some(Ns::Net));
        assert_eq!(namespace_of(mirror, "net/core"), Some(Ns::Net));
        assert_eq!(namespace_of(mirror, "netx"), None);
        assert_eq!(namespace_of(mirror, ""), None);
        assert_eq!(namespace_of(&MIRRORS[1], "debug"), None);
        assert!(varies(mirror, "net/ipv4/conf"));
        assert!(varies(mirror, "kernel/panic"));
        assert!(!varies(mirror, "kernel/yama"));
        assert!(!varies(mirror, "kernel/ostype"));
        assert!(!varies(mirror, "vm"));
        assert!(!varies(&MIRRORS[1], "debug"));
        assert!(varies(&MIRRORS[2], "product_uuid"));
    }
}
