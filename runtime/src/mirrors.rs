//! sysvisor-fs's dynamic trees in a system container: its `proc/sys` over `/proc/sys`
//! (read-write: namespaced sysctls are the container's own, others emulated or read-only),
//! its `proc/pressure` (the directory of pressure views) over `/proc/pressure`,
//! `sys/kernel` over `/sys/kernel`, `sys/devices/virtual/dmi/id` over the same path, and
//! `sys/module/nf_conntrack/parameters` (read-write: hashsize) over the same path.
//!
//! runc 1.1 refuses a mount inside `/proc` other than a few single files, and applies
//! `readonlyPaths` after the mounts, so these cannot be OCI mounts. Instead:
//! - the transform ([`add_to_spec`], pure) records the mounts to make in an annotation
//!   ([`ANNOTATION`]), for the parents the container mounts (procfs at `/proc`, sysfs at
//!   `/sys`) and where the user did not mount something of their own; it takes
//!   `/proc/sys` out of `readonlyPaths` (runc would remount our tree read-only) and drops
//!   the masks that would hide a mirror. It also moves the spec's `sysctl` entries (Docker's
//!   `ip_unprivileged_port_start`, `--sysctl`) there: runc writes them after the hooks, as
//!   the container's root, when the container is not registered with sysvisor-fs yet, so
//!   through our tree they would be refused;
//! - the lifecycle adds a `createContainer` hook running this binary ([`HOOK_COMMAND`],
//!   [`add_hook`]): runc runs it inside the container's namespaces, as the container's
//!   root, after its mounts and before `pivot_root` and `readonlyPaths`. The hook
//!   ([`attach`]) first writes the sysctls to the container's own procfs, as runc would
//!   have (same process, same credentials, same namespaces), then clones each source with
//!   `open_tree`, sets its mount flags, and moves it onto its target, resolved inside the
//!   rootfs (`openat2` with `RESOLVE_IN_ROOT`). A target that does not exist in the
//!   container (no DMI table, nf_conntrack not loaded) is skipped: the container's sysfs
//!   shows what the host kernel has.
//!
//! The hook acts with the container's own credentials in its own mount namespace: it can do
//! nothing the container's root could not.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Hook, Spec};
use serde::{Deserialize, Serialize};

use crate::rootfs::sys;

/// Annotation holding what the hook does (JSON of a [`Plan`]).
pub const ANNOTATION: &str = "io.sysvisor.mirrors";

/// The argument that makes this binary the `createContainer` hook.
pub const HOOK_COMMAND: &str = "sysvisor-hook-mirrors";

/// The trees: path below the sysvisor-fs mount point (and, with a `/` in front, in the
/// container), and whether the container may write.
pub const MIRRORS: &[(&str, bool)] = &[
    ("proc/sys", true),
    // The pressure views (a directory of views, not a dynamic tree): runc 1.1 refuses a
    // bind below /proc/pressure, and a host kernel without PSI has no target (skipped).
    ("proc/pressure", false),
    ("sys/kernel", false),
    ("sys/devices/virtual/dmi/id", false),
    ("sys/module/nf_conntrack/parameters", true),
];

/// One mount the hook makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorMount {
    /// The tree on the host (below the sysvisor-fs mount point).
    pub source: PathBuf,
    /// Where it goes in the container.
    pub target: PathBuf,
    /// Mounted read-write (else read-only). Always nosuid, nodev, noexec.
    pub writable: bool,
}

/// What the hook does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub mounts: Vec<MirrorMount>,
    /// The spec's sysctls, written before the mounts.
    #[serde(default)]
    pub sysctl: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("sysvisor-runc mirror hook: usage: {HOOK_COMMAND} ROOTFS")]
    Usage,
    #[error("sysvisor-runc mirror hook: unreadable container state: {0}")]
    State(String),
    #[error("sysvisor-runc mirror hook: cannot open the rootfs {path}: {source}")]
    Rootfs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "sysvisor-runc mirror hook: cannot set sysctl {key}={value:?} in the container: {source}"
    )]
    Sysctl {
        key: String,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("sysvisor-runc mirror hook: cannot mount {source_path} on {target} in the container: {step}: {source}")]
    Mount {
        source_path: PathBuf,
        target: PathBuf,
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

/// The mounts a container with `spec` gets (see the module doc).
pub fn plan(spec: &Spec, fs_mountpoint: &Path) -> Vec<MirrorMount> {
    let mounts = spec.mounts().as_deref().unwrap_or(&[]);
    let has = |dest: &str, typ: &str| {
        mounts.iter().any(|m| m.destination() == Path::new(dest) && m.typ().as_deref() == Some(typ))
    };
    let (has_proc, has_sys) = (has("/proc", "proc"), has("/sys", "sysfs"));
    MIRRORS
        .iter()
        .filter(|(path, _)| if path.starts_with("proc/") { has_proc } else { has_sys })
        .map(|(path, writable)| MirrorMount {
            source: fs_mountpoint.join(path),
            target: Path::new("/").join(path),
            writable: *writable,
        })
        // A mount the user placed on one of these paths (or below) wins over ours.
        .filter(|m| !mounts.iter().any(|u| u.destination().starts_with(&m.target)))
        .collect()
}

/// Records [`plan`]'s mounts, and the sysctls, in the spec (see the module doc).
pub fn add_to_spec(spec: &mut Spec, fs_mountpoint: &Path) {
    let planned = plan(spec, fs_mountpoint);
    if planned.is_empty() {
        return;
    }
    let mut sysctl = BTreeMap::new();
    if let Some(linux) = spec.linux_mut() {
        if planned.iter().any(|m| m.target == Path::new("/proc/sys")) {
            if let Some(entries) = linux.sysctl_mut().take() {
                sysctl.extend(entries);
            }
        }
        let hidden = |path: &String| planned.iter().any(|m| m.target.starts_with(path));
        if let Some(masked) = linux.masked_paths_mut() {
            masked.retain(|path| !hidden(path));
        }
        // Read-only paths at or below a writable tree (Docker's `/proc/sys`); a read-only
        // parent (say `/proc`) stays, and makes the tree read-only too.
        if let Some(readonly) = linux.readonly_paths_mut() {
            readonly.retain(|path| {
                !planned.iter().any(|m| m.writable && Path::new(path).starts_with(&m.target))
            });
        }
    }
    let plan = Plan { mounts: planned, sysctl };
    let json = serde_json::to_string(&plan).expect("a plan serializes");
    spec.annotations_mut().get_or_insert_with(Default::default).insert(ANNOTATION.into(), json);
}

/// Adds the `createContainer` hook that makes the mounts (when the spec plans any):
/// `EXE sysvisor-hook-mirrors ROOTFS`.
pub fn add_hook(spec: &mut Spec, exe: &Path, rootfs: &Path) {
    if !spec.annotations().as_ref().is_some_and(|a| a.contains_key(ANNOTATION)) {
        return;
    }
    let mut hook = Hook::default();
    hook.set_path(exe.to_path_buf());
    hook.set_args(Some(vec![
        "sysvisor-runc".into(),
        HOOK_COMMAND.into(),
        rootfs.display().to_string(),
    ]));
    let hooks = spec.hooks_mut().get_or_insert_with(Default::default);
    let mut list = hooks.create_container().clone().unwrap_or_default();
    list.push(hook);
    hooks.set_create_container(Some(list));
}

/// The hook: `args` after [`HOOK_COMMAND`] (the rootfs) and the OCI state runc writes on
/// stdin (its annotations carry the plan). Returns the targets mounted.
pub fn hook(args: &[String], state: &[u8]) -> Result<Vec<PathBuf>, MirrorError> {
    let [rootfs] = args else { return Err(MirrorError::Usage) };
    let state: serde_json::Value =
        serde_json::from_slice(state).map_err(|e| MirrorError::State(e.to_string()))?;
    let plan = match state["annotations"][ANNOTATION].as_str() {
        Some(json) => serde_json::from_str::<Plan>(json)
            .map_err(|e| MirrorError::State(format!("{ANNOTATION}: {e}")))?,
        None => return Ok(Vec::new()),
    };
    attach(Path::new(rootfs), &plan)
}

/// Writes the sysctls of `plan` into the container's procfs below `rootfs`, then makes
/// its mounts, in the calling process's mount namespace; skips targets that do not exist.
/// Returns the targets mounted.
pub fn attach(rootfs: &Path, plan: &Plan) -> Result<Vec<PathBuf>, MirrorError> {
    let root: OwnedFd = std::fs::File::open(rootfs)
        .map_err(|source| MirrorError::Rootfs { path: rootfs.to_path_buf(), source })?
        .into();
    // As runc's writeSystemProperty: /proc/sys/ + the key with dots as slashes.
    for (key, value) in &plan.sysctl {
        let rel = Path::new("proc/sys").join(key.replace('.', "/"));
        let err = |source| MirrorError::Sysctl { key: key.clone(), value: value.clone(), source };
        let fd =
            sys::open_in_root(root.as_fd(), &rel, libc::O_WRONLY | libc::O_TRUNC).map_err(err)?;
        std::fs::File::from(fd).write_all(value.as_bytes()).map_err(err)?;
    }
    let mut done = Vec::new();
    for m in &plan.mounts {
        let err = |step, source| MirrorError::Mount {
            source_path: m.source.clone(),
            target: m.target.clone(),
            step,
            source,
        };
        let rel = m.target.strip_prefix("/").unwrap_or(&m.target);
        let target = match sys::open_dir_in_root(root.as_fd(), rel) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => continue,
            Err(e) => return Err(err("open the target", e)),
        };
        let tree =
            sys::open_tree_clone(&m.source, false).map_err(|e| err("clone the source", e))?;
        let mut flags = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC;
        if !m.writable {
            flags |= sys::MOUNT_ATTR_RDONLY;
        }
        sys::set_mount_attrs(tree.as_fd(), flags).map_err(|e| err("set its flags", e))?;
        sys::move_mount_onto(tree.as_fd(), target.as_fd()).map_err(|e| err("attach it", e))?;
        done.push(m.target.clone());
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_arguments_and_state_are_checked() {
        assert!(matches!(hook(&[], b"{}"), Err(MirrorError::Usage)));
        assert!(matches!(hook(&["/r".into()], b"nonsense"), Err(MirrorError::State(_))));
        // No plan: nothing to do.
        assert_eq!(hook(&["/r".into()], br#"{"annotations":{}}"#).unwrap(), Vec::<PathBuf>::new());
        let bad = format!(r#"{{"annotations":{{"{ANNOTATION}":"{{\"mounts\":1}}"}}}}"#);
        assert!(matches!(hook(&["/r".into()], bad.as_bytes()), Err(MirrorError::State(_))));
    }
}
