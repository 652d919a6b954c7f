//! The parts of the transform that let system software run inside: writable, delegated
//! cgroups and host-backed data directories for inner container engines. Pure functions
//! over oci-spec types, called by [`crate::transform::to_system_container`].
//!
//! - The cgroup mount at `/sys/fs/cgroup` becomes read-write (Docker mounts it read-only
//!   for every container that is not `--privileged`). With the cgroup namespace the
//!   container sees only its own cgroups there, which the runtime gives to the container's
//!   root after `runc create` ([`crate::cgroups`]); their limits stay the host's.
//! - On a hybrid host (v1 controllers, an empty cgroup2 hierarchy at
//!   `/sys/fs/cgroup/unified`), the container's cgroup2 hierarchy is mounted at
//!   `/sys/fs/cgroup/unified` too, as on the host (runc 1.1.5 puts the container in a
//!   cgroup there but does not mount it): systemd then runs in its "hybrid" mode and
//!   tracks its services by cgroup2 instead of the v1 release agent, which a container
//!   cannot use.
//! - `/var/lib/docker`, `/var/lib/containerd` and `/var/lib/kubelet` are bind mounts of
//!   the container's host directories ([`crate::volumes`]), unless the user mounts
//!   something at one of them or at a parent (`-v data:/var/lib/docker`, `-v x:/var/lib`):
//!   the user's mount wins.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Mount;

use crate::cgroups::Layout;
use crate::volumes::VOLUMES;

/// What the transform needs for nesting, besides the spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NestingInputs {
    /// The container's directory of host-backed volumes ([`crate::volumes::Volumes::dir`]);
    /// `None`: no volume mounts.
    pub volumes_dir: Option<PathBuf>,
    /// How the host mounts its cgroups.
    pub cgroup_layout: Layout,
    /// The container's process is systemd ([`crate::systemd::is_systemd`]).
    pub systemd: bool,
}

/// Where cgroups are mounted in a container.
pub const CGROUP_MOUNT: &str = "/sys/fs/cgroup";
/// Where a hybrid host mounts its cgroup2 hierarchy (and so does the container).
pub const UNIFIED_MOUNT: &str = "/sys/fs/cgroup/unified";

/// Options of a bind mount of a volume.
pub const VOLUME_MOUNT_OPTIONS: &[&str] = &["rbind", "rw"];

/// Applies every rule of the module doc to `mounts`.
pub fn apply(mounts: Vec<Mount>, inputs: &NestingInputs) -> Vec<Mount> {
    let mut mounts = writable_cgroups(mounts);
    if inputs.cgroup_layout == Layout::Hybrid {
        mounts = add_unified_mount(mounts);
    }
    if let Some(dir) = &inputs.volumes_dir {
        mounts = add_volume_mounts(mounts, dir);
    }
    mounts
}

fn is_cgroup_mount(m: &Mount) -> bool {
    m.destination() == Path::new(CGROUP_MOUNT)
        && matches!(m.typ().as_deref(), Some("cgroup") | Some("cgroup2"))
}

/// The cgroup mount at `/sys/fs/cgroup` without `ro` (and with `rw`).
pub fn writable_cgroups(mut mounts: Vec<Mount>) -> Vec<Mount> {
    for m in mounts.iter_mut().filter(|m| is_cgroup_mount(m)) {
        let mut options: Vec<String> = m
            .options()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|o| o != "ro" && o != "rw")
            .collect();
        options.insert(0, "rw".to_string());
        m.set_options(Some(options));
    }
    mounts
}

/// A cgroup2 mount at `/sys/fs/cgroup/unified` right after the cgroup mount at
/// `/sys/fs/cgroup`, when there is one and nothing is mounted there yet.
pub fn add_unified_mount(mut mounts: Vec<Mount>) -> Vec<Mount> {
    let Some(position) = mounts.iter().position(is_cgroup_mount) else {
        return mounts;
    };
    if mounts.iter().any(|m| m.destination() == Path::new(UNIFIED_MOUNT)) {
        return mounts;
    }
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(UNIFIED_MOUNT));
    m.set_typ(Some("cgroup2".into()));
    m.set_source(Some("cgroup2".into()));
    m.set_options(Some(
        ["rw", "nosuid", "nodev", "noexec", "relatime"].iter().map(|o| o.to_string()).collect(),
    ));
    mounts.insert(position + 1, m);
    mounts
}

/// Bind mounts of `volumes_dir/<name>` at each path of [`VOLUMES`] that the user leaves
/// free (no mount there nor on a parent but `/`).
pub fn add_volume_mounts(mut mounts: Vec<Mount>, volumes_dir: &Path) -> Vec<Mount> {
    for (name, target) in VOLUMES {
        let target = Path::new(target);
        let taken = mounts.iter().any(|m| {
            let dest = m.destination();
            dest != Path::new("/") && target.starts_with(dest)
        });
        if taken {
            continue;
        }
        let mut m = Mount::default();
        m.set_destination(target.to_path_buf());
        m.set_typ(Some("bind".into()));
        m.set_source(Some(volumes_dir.join(name)));
        m.set_options(Some(VOLUME_MOUNT_OPTIONS.iter().map(|o| o.to_string()).collect()));
        insert_before_descendants(&mut mounts, m);
    }
    mounts
}

/// The host directories of the volume mounts in `mounts` (those whose source lies directly
/// in `volumes_dir`), for the runtime to create.
pub fn volume_sources(mounts: &[Mount], volumes_dir: &Path) -> Vec<PathBuf> {
    mounts
        .iter()
        .filter_map(|m| m.source().clone())
        .filter(|s| s.parent() == Some(volumes_dir))
        .collect()
}

/// Inserts `new` before the first mount below its destination (the user's
/// `-v x:/var/lib/docker/volumes` must land on ours), else at the end.
pub fn insert_before_descendants(mounts: &mut Vec<Mount>, new: Mount) {
    let dest = new.destination().clone();
    let position = mounts
        .iter()
        .position(|m| m.destination() != &dest && m.destination().starts_with(&dest))
        .unwrap_or(mounts.len());
    mounts.insert(position, new);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(dest: &str, typ: &str, options: &[&str]) -> Mount {
        let mut m = Mount::default();
        m.set_destination(dest.into());
        m.set_typ(Some(typ.into()));
        m.set_source(Some(typ.into()));
        m.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
        m
    }

    fn dests(mounts: &[Mount]) -> Vec<String> {
        mounts.iter().map(|m| m.destination().display().to_string()).collect()
    }

    #[test]
    fn cgroups_become_writable_and_nothing_else_does() {
        let mounts = vec![
            mount("/sys", "sysfs", &["nosuid", "ro"]),
            mount("/sys/fs/cgroup", "cgroup", &["ro", "nosuid", "nodev", "noexec"]),
        ];
        let out = writable_cgroups(mounts);
        assert_eq!(out[0].options().as_deref().unwrap(), ["nosuid", "ro"]);
        assert_eq!(out[1].options().as_deref().unwrap(), ["rw", "nosuid", "nodev", "noexec"]);
    }

    #[test]
    fn unified_mount_follows_the_cgroup_mount_once() {
        let mounts = vec![
            mount("/sys", "sysfs", &[]),
            mount("/sys/fs/cgroup", "cgroup", &["ro"]),
            mount("/dev/mqueue", "mqueue", &[]),
        ];
        let out = add_unified_mount(mounts);
        assert_eq!(
            dests(&out),
            ["/sys", "/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/dev/mqueue"]
        );
        assert_eq!(out[2].typ().as_deref(), Some("cgroup2"));
        assert_eq!(dests(&add_unified_mount(out.clone())), dests(&out));
        assert!(add_unified_mount(vec![mount("/sys", "sysfs", &[])]).len() == 1);
    }

    #[test]
    fn volumes_are_added_unless_the_user_mounts_there_or_above() {
        let dir = Path::new("/var/lib/sysvisor/volumes/c1");
        let out = add_volume_mounts(vec![mount("/proc", "proc", &[])], dir);
        assert_eq!(
            dests(&out),
            ["/proc", "/var/lib/docker", "/var/lib/containerd", "/var/lib/kubelet"]
        );
        assert_eq!(out[1].source().as_deref(), Some(dir.join("docker").as_path()));
        assert_eq!(out[1].options().as_deref().unwrap(), ["rbind", "rw"]);
        assert_eq!(
            volume_sources(&out, dir),
            [dir.join("docker"), dir.join("containerd"), dir.join("kubelet")]
        );

        // The user's volume on /var/lib/docker or on /var/lib wins; one below ours follows it.
        let out = add_volume_mounts(vec![mount("/var/lib/docker", "bind", &[])], dir);
        assert_eq!(dests(&out), ["/var/lib/docker", "/var/lib/containerd", "/var/lib/kubelet"]);
        assert_eq!(volume_sources(&out, dir).len(), 2);
        let out = add_volume_mounts(vec![mount("/var/lib", "bind", &[])], dir);
        assert_eq!(dests(&out), ["/var/lib"]);
        let out = add_volume_mounts(vec![mount("/var/lib/docker/volumes", "bind", &[])], dir);
        assert_eq!(
            dests(&out),
            [
                "/var/lib/docker",
                "/var/lib/docker/volumes",
                "/var/lib/containerd",
                "/var/lib/kubelet"
            ]
        );
        // A mount at / (a user's --mount of a whole tree at /) takes nothing.
        assert_eq!(add_volume_mounts(vec![mount("/", "bind", &[])], dir).len(), 4);
    }
}
