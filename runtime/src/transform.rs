//! The rewrite of a container's `config.json` into a system container's.
//!
//! [`to_system_container`] is a pure function over oci-spec types: it reads no file and
//! touches nothing, so every rule below is unit-tested without root. The side effects
//! around it (allocating the range, shifting the rootfs, registering with sysvisor-fs)
//! live in other modules.
//!
//! What it does:
//! - refuses a container that shares the host's pid, network, UTS or IPC namespace (no
//!   entry, or an entry with a path: the host's or another container's; sysvisor-fs writes
//!   the hostname and IPC limits of the container's own namespaces, never the host's), that
//!   joins an existing user namespace, whose id mappings are not the one-entry shape of
//!   Docker's `userns-remap`, or that is already a system container's (our annotations) —
//!   [`validate`] checks that alone, so that the caller can refuse before allocating
//!   anything;
//! - adds a user namespace mapping container ids 0..count to the allocated host range (it
//!   replaces the engine's own mapping under `userns-remap`: the container still gets an
//!   exclusive range, and [`disk_root`] tells the rootfs shift which ids own the layers),
//!   and a private cgroup namespace;
//! - bind-mounts the sysvisor-fs views read-only over `/proc/{meminfo,cpuinfo,stat,uptime,
//!   loadavg,diskstats,swaps}` (when the container mounts a procfs at `/proc`) and
//!   `/sys/devices/system/cpu/{online,possible,present}` (when it mounts a sysfs at `/sys`), right after the
//!   last of those mounts; a mount the user already placed on one of these paths (LXCFS
//!   users' `-v`) wins over ours;
//! - drops `maskedPaths` entries that would hide a view (the path itself or a parent);
//!   every other masked or read-only path stays;
//! - plans sysvisor-fs's dynamic trees (`/proc/sys` read-write, `/sys/kernel`,
//!   `/sys/devices/virtual/dmi/id`, `/sys/module/nf_conntrack/parameters`), which a
//!   `createContainer` hook mounts (runc refuses such mounts inside /proc): see
//!   [`crate::mirrors::add_to_spec`]; `/proc/sys` leaves `readonlyPaths`, and the
//!   container's `sysctl` entries go to that hook, which writes them first;
//! - gives the process every capability of its user namespace that the host's bounding set
//!   has, minus those the user dropped, or exactly the set of `--cap-drop ALL --cap-add ...`
//!   (see [`capabilities_for`] and [`crate::caps`]);
//! - replaces the engine's default seccomp profile (or none) with
//!   [`crate::seccomp::profile`]: the system container profile, and the mount trap served
//!   by sysvisor-fs when a listener socket is given; merges a user's own profile with them
//!   ([`crate::seccomp::profile_for`]);
//! - for system software inside, applies [`crate::nesting`] (read-write cgroups, the
//!   unified hierarchy of a hybrid host, host-backed `/var/lib/docker` & co) and, when the
//!   process is systemd, [`crate::systemd::prepare`] (tmpfs `/run`, `container=`, the
//!   stop-signal record);
//! - cuts Docker's `net.ipv4.ping_group_range` sysctl (`0 2147483647`) to the groups the
//!   user namespace maps, which the kernel otherwise refuses;
//! - records the range in annotations ([`ANNOTATION_UID_BASE`] and friends).
//!
//! Left as they are: Docker's bind mounts (`/etc/hosts`, `/etc/resolv.conf`,
//! `/etc/hostname`, volumes; which are id-shifted is decided around the transform, see
//! [`crate::binds`]), AppArmor, SELinux and `noNewPrivileges`, devices,
//! resources, other sysctls, rlimits, hooks, masked/read-only paths other than the above, and the
//! sysfs mount: the container always has a network namespace of its own (a shared one is
//! refused), so its user namespace owns it and may mount sysfs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilities, LinuxIdMapping, LinuxIdMappingBuilder,
    LinuxNamespace, LinuxNamespaceType, Mount, Process, Spec,
};

use crate::idrange::DiskRoot;
use crate::nesting::{self, NestingInputs};
use crate::{caps, seccomp, systemd};

/// Annotation recording the first host uid of the container's range.
pub const ANNOTATION_UID_BASE: &str = "io.sysvisor.uid-base";
/// Annotation recording the first host gid of the container's range.
pub const ANNOTATION_GID_BASE: &str = "io.sysvisor.gid-base";
/// Annotation recording the size of the range.
pub const ANNOTATION_ID_COUNT: &str = "io.sysvisor.id-count";

/// The size of every container's id range.
pub const DEFAULT_ID_COUNT: u32 = 65536;

/// The files sysvisor-fs serves, relative to its mountpoint; each is mounted at `/` + the
/// same path inside the container.
pub const VIEWS: &[&str] = &[
    "proc/meminfo",
    "proc/cpuinfo",
    "proc/stat",
    "proc/uptime",
    "proc/loadavg",
    "proc/diskstats",
    "proc/swaps",
    "proc/slabinfo",
    "sys/devices/system/cpu/online",
    "sys/devices/system/cpu/possible",
    "sys/devices/system/cpu/present",
];

/// The view of a file some kernels lack (no `/proc/slabinfo` without SLUB debugging):
/// bound only where the host has it, since a bind needs its target to exist.
pub const SLABINFO_VIEW: &str = "proc/slabinfo";

/// Mount options of a view: a read-only bind. `nosuid`, `nodev` and `noexec` are asked for
/// explicitly because a FUSE mount carries `nosuid,nodev`, and inside a user namespace a
/// read-only remount must keep such locked flags.
pub const VIEW_MOUNT_OPTIONS: &[&str] = &["rbind", "ro", "nosuid", "nodev", "noexec"];

/// Everything the transform needs besides the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformInputs {
    /// First host uid of the container's range (container uid 0).
    pub uid_base: u32,
    /// First host gid of the container's range (container gid 0).
    pub gid_base: u32,
    /// Size of the range ([`DEFAULT_ID_COUNT`]).
    pub id_count: u32,
    /// Where sysvisor-fs mounts its views on the host.
    pub fs_mountpoint: PathBuf,
    /// The container's own view files (`<mountpoint>-containers/<id>`: the same views,
    /// rendered for the container and served from the page cache), bound instead of the
    /// per-caller ones of `fs_mountpoint` when the daemon serves them.
    pub own_views: Option<PathBuf>,
    /// The host's capability bounding set (names like `CAP_SYS_ADMIN`).
    pub host_capabilities: Vec<String>,
    /// The sysvisor-fs daemon's seccomp listener socket: the container's mount-family
    /// calls go there (see [`crate::seccomp::profile`]). `None`: no mount trap.
    pub seccomp_listener: Option<PathBuf>,
    /// Where the container's own seccomp profile came from (replaced or merged, see
    /// [`crate::seccomp::profile_for`]).
    pub seccomp_origin: seccomp::Origin,
    /// The host's online CPUs, ascending.
    pub host_cpus: Vec<u32>,
    /// Whether the host kernel has `/proc/slabinfo` (see [`SLABINFO_VIEW`]).
    pub host_slabinfo: bool,
    /// Spreads pinned containers over the CPUs (the index of the container's id range).
    pub cpu_spread: u32,
    /// Cgroups, volumes and systemd for system software inside ([`crate::nesting`]).
    pub nesting: NestingInputs,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    #[error("the container has no linux section in its config")]
    NoLinux,
    #[error("system containers need their own pid namespace; --pid=host is not supported")]
    HostPid,
    #[error("system containers need their own network namespace; --network=host is not supported")]
    HostNetwork,
    #[error(
        "system containers need their own network namespace; --network=host and \
         --network=container:... are not supported (the config joins {0})"
    )]
    SharedNetwork(String),
    #[error(
        "system containers need their own pid namespace; --pid=host and --pid=container:... \
         are not supported (the config joins {0})"
    )]
    SharedPid(String),
    #[error(
        "system containers need their own UTS namespace; --uts=host is not supported (its \
         root could change the host's hostname)"
    )]
    HostUts,
    #[error(
        "system containers need their own UTS namespace; --uts=host and joining another \
         namespace are not supported (the config joins {0})"
    )]
    SharedUts(String),
    #[error(
        "system containers need their own IPC namespace; --ipc=host is not supported (its \
         root could change the host's IPC limits)"
    )]
    HostIpc,
    #[error(
        "system containers need their own IPC namespace; --ipc=host and --ipc=container:... \
         are not supported (the config joins {0})"
    )]
    SharedIpc(String),
    #[error(
        "the container joins an existing user namespace ({0}); system containers need their \
         own (sysvisor-runc assigns it)"
    )]
    UserNamespacePresent(String),
    #[error(
        "unsupported id mappings in the config ({0}): sysvisor-runc accepts none, or one \
         mapping from container id 0 for uids and one for gids in a new user namespace \
         (Docker's userns-remap)"
    )]
    UnsupportedIdMappings(String),
    #[error("the config is already a system container's (it carries {ANNOTATION_UID_BASE})")]
    AlreadySystemContainer,
    #[error("refusing to map container root to host {kind} 0: the id range must start above 0")]
    RootRange { kind: &'static str },
    #[error("the id range is empty")]
    EmptyRange,
    #[error("the id range {base}+{count} overflows 32 bits")]
    RangeOverflow { base: u32, count: u32 },
    #[error("unknown capability name {0:?}")]
    UnknownCapability(String),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
}

/// Checks the parts of a spec that make it impossible as a system container. Cheap and
/// pure: callers run it before allocating anything.
pub fn validate(spec: &Spec) -> Result<(), TransformError> {
    let linux = spec.linux().as_ref().ok_or(TransformError::NoLinux)?;
    let namespaces = linux.namespaces().as_deref().unwrap_or(&[]);
    let find = |typ| namespaces.iter().find(|ns| ns.typ() == typ);
    let own = |typ, host: TransformError, shared: fn(String) -> TransformError| match find(typ) {
        None => Err(host),
        Some(ns) => match ns.path() {
            Some(path) => Err(shared(path.display().to_string())),
            None => Ok(()),
        },
    };
    own(LinuxNamespaceType::Pid, TransformError::HostPid, TransformError::SharedPid)?;
    own(LinuxNamespaceType::Network, TransformError::HostNetwork, TransformError::SharedNetwork)?;
    own(LinuxNamespaceType::Uts, TransformError::HostUts, TransformError::SharedUts)?;
    own(LinuxNamespaceType::Ipc, TransformError::HostIpc, TransformError::SharedIpc)?;
    if spec.annotations().as_ref().is_some_and(|a| a.contains_key(ANNOTATION_UID_BASE)) {
        return Err(TransformError::AlreadySystemContainer);
    }
    disk_root(spec).map(drop)
}

/// The host ids that own the container root's files in the rootfs's layers: those the
/// engine's own user namespace maps container id 0 to (Docker's `userns-remap` chowns the
/// image layers to that range), or the host's root when the spec has no id mappings.
/// Refuses a user namespace joined by path and mappings of another shape (several
/// entries, or not starting at container id 0), which no rootfs shift could honour.
pub fn disk_root(spec: &Spec) -> Result<DiskRoot, TransformError> {
    let linux = spec.linux().as_ref().ok_or(TransformError::NoLinux)?;
    let user = linux
        .namespaces()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .find(|ns| ns.typ() == LinuxNamespaceType::User);
    if let Some(path) = user.and_then(|ns| ns.path().as_ref()) {
        return Err(TransformError::UserNamespacePresent(path.display().to_string()));
    }
    let entries = |m: &Option<Vec<LinuxIdMapping>>| m.as_deref().unwrap_or(&[]).to_vec();
    let (uids, gids) = (entries(linux.uid_mappings()), entries(linux.gid_mappings()));
    if uids.is_empty() && gids.is_empty() {
        return Ok(DiskRoot::HOST);
    }
    let root_of = |kind: &str, m: &[LinuxIdMapping]| match m {
        [one] if one.container_id() == 0 && one.size() > 0 => Ok(one.host_id()),
        _ => Err(TransformError::UnsupportedIdMappings(format!(
            "{kind}: {}",
            m.iter()
                .map(|e| format!("{} {} {}", e.container_id(), e.host_id(), e.size()))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    };
    let (uid, gid) = (root_of("uids", &uids)?, root_of("gids", &gids)?);
    if user.is_none() {
        return Err(TransformError::UnsupportedIdMappings(
            "id mappings without a user namespace".into(),
        ));
    }
    Ok(DiskRoot { uid, gid })
}

/// Rewrites `spec` into a system container's spec (see the module doc).
pub fn to_system_container(
    mut spec: Spec,
    inputs: &TransformInputs,
) -> Result<Spec, TransformError> {
    validate(&spec)?;
    check_range(inputs)?;
    let capabilities = capabilities_for(&spec, &inputs.host_capabilities)?;

    let linux = spec.linux_mut().as_mut().ok_or(TransformError::NoLinux)?;

    // Namespaces: a fresh user namespace and a private cgroup namespace.
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    namespaces
        .retain(|ns| !matches!(ns.typ(), LinuxNamespaceType::User | LinuxNamespaceType::Cgroup));
    namespaces.push(namespace(LinuxNamespaceType::User));
    namespaces.push(namespace(LinuxNamespaceType::Cgroup));
    linux.set_namespaces(Some(namespaces));
    linux.set_uid_mappings(Some(vec![mapping(inputs.uid_base, inputs.id_count)]));
    linux.set_gid_mappings(Some(vec![mapping(inputs.gid_base, inputs.id_count)]));

    // The views must not be hidden by a masked parent.
    let mounts = spec.mounts().clone().unwrap_or_default();
    let views_dir = inputs.own_views.as_deref().unwrap_or(&inputs.fs_mountpoint);
    let (mounts, targets) = add_view_mounts(mounts, views_dir, inputs.host_slabinfo);
    spec.set_mounts(Some(nesting::apply(mounts, &inputs.nesting)));
    if inputs.nesting.systemd {
        systemd::prepare(&mut spec);
    }
    let linux = spec.linux_mut().as_mut().ok_or(TransformError::NoLinux)?;
    if let Some(masked) = linux.masked_paths_mut() {
        masked.retain(|path| {
            !targets.iter().any(|target| is_ancestor_or_self(Path::new(path), target))
        });
    }

    let profile = seccomp::profile_for(
        linux.seccomp().as_ref(),
        inputs.seccomp_origin,
        inputs.seccomp_listener.as_deref(),
    )?;
    linux.set_seccomp(Some(profile));

    if let Some(value) = linux.sysctl_mut().as_mut().and_then(|s| s.get_mut(PING_GROUP_RANGE)) {
        *value = clamp_group_range(value, inputs.id_count);
    }

    if let Some(cpus) = pin_cpus_for_quota(&spec, &inputs.host_cpus, inputs.cpu_spread) {
        if let Some(cpu) = spec
            .linux_mut()
            .as_mut()
            .and_then(|l| l.resources_mut().as_mut())
            .and_then(|r| r.cpu_mut().as_mut())
        {
            cpu.set_cpus(Some(cpus));
        }
    }

    if let Some(process) = spec.process_mut() {
        process.set_capabilities(Some(capabilities));
    }

    crate::mirrors::add_to_spec(&mut spec, &inputs.fs_mountpoint);

    let annotations = spec.annotations_mut().get_or_insert_with(HashMap::new);
    annotations.insert(ANNOTATION_UID_BASE.into(), inputs.uid_base.to_string());
    annotations.insert(ANNOTATION_GID_BASE.into(), inputs.gid_base.to_string());
    annotations.insert(ANNOTATION_ID_COUNT.into(), inputs.id_count.to_string());
    Ok(spec)
}

/// A CPU quota with no cpuset (`docker run --cpus 1`) limits CPU time but not which CPUs
/// run the container, so `nproc`, glibc's `sched_getaffinity`-based counts, the JVM and Go
/// would all see every host CPU. A system container should look like a host with that many
/// CPUs, so it is given a cpuset of `ceil(quota / period)` CPUs: the same CPU time, on a
/// fixed set. `spread` rotates the choice so that containers do not all share the first
/// CPUs. Returns the cpuset to set, or `None` when a cpuset is already given, there is no
/// quota, or the quota covers every CPU.
pub fn pin_cpus_for_quota(spec: &Spec, host_cpus: &[u32], spread: u32) -> Option<String> {
    let cpu = spec.linux().as_ref()?.resources().as_ref()?.cpu().as_ref()?;
    if cpu.cpus().as_deref().is_some_and(|c| !c.trim().is_empty()) {
        return None;
    }
    let quota = u64::try_from(cpu.quota()?).ok().filter(|q| *q > 0)?;
    let period = cpu.period().filter(|p| *p > 0).unwrap_or(100_000);
    let wanted = usize::try_from(quota.div_ceil(period)).ok()?.max(1);
    if host_cpus.is_empty() || wanted >= host_cpus.len() {
        return None;
    }
    let start = (spread as usize).wrapping_mul(wanted) % host_cpus.len();
    let mut chosen: Vec<u32> =
        (0..wanted).map(|i| host_cpus[(start + i) % host_cpus.len()]).collect();
    chosen.sort_unstable();
    Some(chosen.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
}

/// Parses a kernel CPU list such as `0-3,8` (as in /sys/devices/system/cpu/online).
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 65_536 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// Docker sets it to `0 2147483647` (every group may ping); inside a user namespace the
/// kernel refuses groups the namespace does not map (EINVAL, and runc fails the
/// container), so the range is cut to the container's ids.
pub const PING_GROUP_RANGE: &str = "net.ipv4.ping_group_range";

/// `"LOW HIGH"` cut to `0..count`; anything unreadable is left for runc to judge.
pub fn clamp_group_range(value: &str, count: u32) -> String {
    let parts: Vec<_> = value.split_whitespace().map(str::parse::<u64>).collect();
    match parts.as_slice() {
        [Ok(low), Ok(high)] => {
            let max = u64::from(count.saturating_sub(1));
            format!("{} {}", (*low).min(max), (*high).min(max))
        }
        _ => value.to_string(),
    }
}

/// Whether `spec` is the output of [`to_system_container`] (it carries our annotation).
pub fn is_transformed(spec: &Spec) -> bool {
    spec.annotations().as_ref().is_some_and(|a| a.contains_key(ANNOTATION_UID_BASE))
}

/// The capabilities of a system container's process: what its config asked for, read by
/// [`caps::Requested::of`] (every capability by default, minus what the user dropped, or
/// exactly the set of `--cap-drop ALL --cap-add ...`), among those the host's bounding set
/// has (asking runc for one the host lacks makes it fail).
///
/// - Bounding, effective and permitted: that set, whatever the user.
/// - Inheritable and ambient: that set for root (uid 0), none for another user. A
///   non-root process thus drops its capabilities on `execve` like on a real host, instead
///   of every user of the container being root in disguise.
pub fn capabilities_for(
    spec: &Spec,
    host_capabilities: &[String],
) -> Result<LinuxCapabilities, TransformError> {
    match spec.process() {
        Some(process) => process_capabilities(process, host_capabilities),
        None => Ok(capability_sets(usable_capabilities(host_capabilities)?, true)),
    }
}

/// [`capabilities_for`] of one process (a container's, or that of an `exec`).
pub fn process_capabilities(
    process: &Process,
    host_capabilities: &[String],
) -> Result<LinuxCapabilities, TransformError> {
    let requested = caps::Requested::of(process.capabilities().as_ref());
    let granted = requested
        .granted(host_capabilities)
        .into_iter()
        .map(parse_capability)
        .collect::<Result<Capabilities, _>>()?;
    Ok(capability_sets(granted, process.user().uid() == 0))
}

/// The capability sets for a process given its granted set (see [`capabilities_for`]).
pub fn capability_sets(all: Capabilities, is_root: bool) -> LinuxCapabilities {
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(all.clone()));
    caps.set_effective(Some(all.clone()));
    caps.set_permitted(Some(all.clone()));
    if is_root {
        caps.set_inheritable(Some(all.clone()));
        caps.set_ambient(Some(all));
    } else {
        caps.set_inheritable(Some(Capabilities::new()));
        caps.set_ambient(Some(Capabilities::new()));
    }
    caps
}

/// Known capabilities that are also in the host's bounding set.
pub fn usable_capabilities(host_capabilities: &[String]) -> Result<Capabilities, TransformError> {
    caps::Requested::Default.granted(host_capabilities).into_iter().map(parse_capability).collect()
}

fn parse_capability(name: &str) -> Result<Capability, TransformError> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| TransformError::UnknownCapability(name.to_string()))
}

fn check_range(inputs: &TransformInputs) -> Result<(), TransformError> {
    if inputs.id_count == 0 {
        return Err(TransformError::EmptyRange);
    }
    if inputs.uid_base == 0 {
        return Err(TransformError::RootRange { kind: "uid" });
    }
    if inputs.gid_base == 0 {
        return Err(TransformError::RootRange { kind: "gid" });
    }
    for base in [inputs.uid_base, inputs.gid_base] {
        if base.checked_add(inputs.id_count - 1).is_none() {
            return Err(TransformError::RangeOverflow { base, count: inputs.id_count });
        }
    }
    Ok(())
}

fn namespace(typ: LinuxNamespaceType) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns
}

fn mapping(host_id: u32, size: u32) -> LinuxIdMapping {
    LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(host_id)
        .size(size)
        .build()
        .expect("every field of an id mapping is set")
}

/// Adds the view mounts to `mounts`; returns the new list and the container paths that now
/// carry a view (ours or the user's).
fn add_view_mounts(
    mut mounts: Vec<Mount>,
    views_dir: &Path,
    host_slabinfo: bool,
) -> (Vec<Mount>, Vec<PathBuf>) {
    let has_fs = |dest: &str, typ: &str| {
        mounts.iter().any(|m| m.destination() == Path::new(dest) && m.typ().as_deref() == Some(typ))
    };
    let has_proc = has_fs("/proc", "proc");
    let has_sys = has_fs("/sys", "sysfs");

    let mut targets = Vec::new();
    let mut new = Vec::new();
    for view in VIEWS {
        let target = Path::new("/").join(view);
        let wanted = if view.starts_with("proc/") { has_proc } else { has_sys };
        if !wanted || (!host_slabinfo && *view == SLABINFO_VIEW) {
            continue;
        }
        targets.push(target.clone());
        if mounts.iter().any(|m| m.destination() == &target) {
            continue; // the user's own mount of this path wins
        }
        let mut m = Mount::default();
        m.set_destination(target);
        m.set_typ(Some("bind".into()));
        m.set_source(Some(views_dir.join(view)));
        m.set_options(Some(VIEW_MOUNT_OPTIONS.iter().map(|o| o.to_string()).collect()));
        new.push(m);
    }
    if new.is_empty() {
        return (mounts, targets);
    }
    // After the last mount of a parent of a view (/proc, /sys, /sys/devices, ...), so that
    // the view lands on the filesystem the container sees.
    let position = mounts
        .iter()
        .rposition(|m| {
            let dest = m.destination();
            dest != Path::new("/") && new.iter().any(|v| is_ancestor_or_self(dest, v.destination()))
        })
        .map_or(mounts.len(), |i| i + 1);
    mounts.splice(position..position, new);
    (mounts, targets)
}

/// `ancestor` is `path` or one of its parents (component-wise: `/pro` is no parent of
/// `/proc/stat`).
fn is_ancestor_or_self(ancestor: &Path, path: &Path) -> bool {
    path.starts_with(ancestor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_are_component_wise() {
        assert!(is_ancestor_or_self(Path::new("/proc"), Path::new("/proc/stat")));
        assert!(is_ancestor_or_self(Path::new("/proc/stat"), Path::new("/proc/stat")));
        assert!(!is_ancestor_or_self(Path::new("/pro"), Path::new("/proc/stat")));
        assert!(!is_ancestor_or_self(Path::new("/proc/stat"), Path::new("/proc")));
    }

    #[test]
    fn range_checks() {
        let mut inputs = TransformInputs {
            uid_base: 100000,
            gid_base: 100000,
            id_count: DEFAULT_ID_COUNT,
            fs_mountpoint: "/var/lib/sysvisor-fs".into(),
            own_views: None,
            host_capabilities: vec![],
            seccomp_listener: None,
            seccomp_origin: seccomp::Origin::EngineDefault,
            host_cpus: vec![0, 1],
            host_slabinfo: true,
            cpu_spread: 0,
            nesting: NestingInputs::default(),
        };
        assert_eq!(check_range(&inputs), Ok(()));
        inputs.uid_base = 0;
        assert_eq!(check_range(&inputs), Err(TransformError::RootRange { kind: "uid" }));
        inputs.uid_base = u32::MAX - 10;
        assert!(matches!(check_range(&inputs), Err(TransformError::RangeOverflow { .. })));
        inputs.uid_base = 1;
        inputs.id_count = 0;
        assert_eq!(check_range(&inputs), Err(TransformError::EmptyRange));
    }

    fn spec_with_cpu(json: &str) -> Spec {
        let text = format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},"linux":{{"resources":{{"cpu":{json}}}}}}}"#
        );
        serde_json::from_str(&text).expect("spec")
    }

    #[test]
    fn quota_without_cpuset_pins_that_many_cpus() {
        let cpus: Vec<u32> = (0..8).collect();
        let one = spec_with_cpu(r#"{"quota":100000,"period":100000}"#);
        assert_eq!(pin_cpus_for_quota(&one, &cpus, 0).as_deref(), Some("0"));
        assert_eq!(pin_cpus_for_quota(&one, &cpus, 3).as_deref(), Some("3"));
        assert_eq!(pin_cpus_for_quota(&one, &cpus, 9).as_deref(), Some("1"));
        // 1.5 CPUs of time: two CPUs, wrapping round the end of the list.
        let one_and_a_half = spec_with_cpu(r#"{"quota":150000,"period":100000}"#);
        assert_eq!(pin_cpus_for_quota(&one_and_a_half, &cpus, 0).as_deref(), Some("0,1"));
        assert_eq!(pin_cpus_for_quota(&one_and_a_half, &cpus, 3).as_deref(), Some("6,7"));
        assert_eq!(pin_cpus_for_quota(&one_and_a_half, &cpus, 4).as_deref(), Some("0,1"));
    }

    #[test]
    fn no_pinning_without_quota_with_cpuset_or_when_all_cpus_are_allowed() {
        let cpus = [0, 1];
        for json in [
            r#"{"shares":1024}"#,
            r#"{"quota":-1,"period":100000}"#,
            r#"{"quota":100000,"period":100000,"cpus":"1"}"#,
            r#"{"quota":200000,"period":100000}"#,
        ] {
            assert_eq!(pin_cpus_for_quota(&spec_with_cpu(json), &cpus, 0), None, "{json}");
        }
        assert_eq!(pin_cpus_for_quota(&spec_with_cpu(r#"{"quota":1000}"#), &[], 0), None);
    }

    #[test]
    fn cpu_lists_parse_like_the_kernel_prints_them() {
        assert_eq!(parse_cpu_list("0-3,8\n"), Some(vec![0, 1, 2, 3, 8]));
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn ping_group_range_fits_the_namespace() {
        assert_eq!(clamp_group_range("0 2147483647", 65536), "0 65535");
        assert_eq!(clamp_group_range("1\t10", 65536), "1 10");
        assert_eq!(clamp_group_range("1 0", 65536), "1 0");
        assert_eq!(clamp_group_range("garbage", 65536), "garbage");
    }

    #[test]
    fn capability_names_are_case_insensitive_and_filtered() {
        let caps = usable_capabilities(&[
            "cap_sys_admin".into(),
            "CAP_CHOWN".into(),
            "CAP_NOT_A_THING".into(),
        ])
        .unwrap();
        assert_eq!(caps.len(), 2);
        assert!(caps.contains(&Capability::SysAdmin));
    }
}
