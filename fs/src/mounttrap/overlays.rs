//! The overlays of a container's proc and sysfs mounts, from one place: what is mounted over
//! `/proc` and `/sys` in the container (sysvisor-fs' views and any other bind), which paths
//! are masked, which are read-only. The trap puts the same overlays on every proc or sysfs
//! mount the container makes, and refuses to unmount them.
//!
//! The list comes from the container's own (rewritten) `config.json`, so whatever the
//! runtime adds there (a new view, a read-write `/proc/sys` view, a user's LXCFS bind)
//! applies to new mounts too:
//! - every bind mount whose destination lies below `/proc` or `/sys`, with its options;
//! - the dynamic trees (`/proc/sys`, `/sys/kernel`, ...) that sysvisor-runc's mirror hook
//!   mounts, as planned in the [`MIRRORS_ANNOTATION`] annotation, after the binds as the
//!   hook makes them;
//! - `linux.readonlyPaths` and `linux.maskedPaths` below `/proc` or `/sys`.
//!
//! They are applied in runc's order: binds, then read-only paths, then masks. When the
//! config cannot be read, [`Overlays::defaults`] stands in: every view of sysvisor-fs'
//! table and the masked and read-only paths of Docker's default configuration.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::policy::FsKind;

/// One mount over part of a proc or sysfs mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overlay {
    /// The path inside the file system, without a leading slash (`meminfo`).
    pub rel: String,
    pub kind: OverlayKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OverlayKind {
    /// A host file or directory bound over it (a view of sysvisor-fs, or the user's).
    Bind {
        source: PathBuf,
        recursive: bool,
        /// mount(2) flags of the bind (`MS_RDONLY`, `MS_NOSUID`, ...), applied by a remount.
        flags: u64,
    },
    /// Made read-only (bound on itself, remounted read-only).
    ReadOnly,
    /// Hidden: /dev/null over a file, an empty read-only tmpfs over a directory.
    Mask,
}

/// The overlays of both file systems.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlays {
    proc: Vec<Overlay>,
    sysfs: Vec<Overlay>,
}

/// Docker's default masked paths (moby `oci.DefaultSpec`).
pub const DOCKER_MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's default read-only paths.
pub const DOCKER_READONLY: &[&str] =
    &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

#[derive(Debug, thiserror::Error)]
#[error("cannot read the container's config {path}: {reason}")]
pub struct OverlayError {
    pub path: PathBuf,
    pub reason: String,
}

/// The parts of an OCI config the overlays come from.
/// The annotation in which sysvisor-runc plans the mirror hook's mounts (see
/// `runtime/src/mirrors.rs`): `{"mounts": [{"source", "target", "writable"}], ...}`.
pub const MIRRORS_ANNOTATION: &str = "io.sysvisor.mirrors";

#[derive(Debug, Deserialize)]
struct Config {
    #[serde(default)]
    mounts: Vec<ConfigMount>,
    #[serde(default)]
    linux: Option<ConfigLinux>,
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct MirrorPlan {
    #[serde(default)]
    mounts: Vec<MirrorMount>,
}

#[derive(Debug, Deserialize)]
struct MirrorMount {
    source: PathBuf,
    target: String,
    #[serde(default)]
    writable: bool,
}

#[derive(Debug, Deserialize)]
struct ConfigMount {
    destination: String,
    #[serde(rename = "type", default)]
    typ: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    options: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct ConfigLinux {
    #[serde(rename = "maskedPaths", default)]
    masked_paths: Option<Vec<String>>,
    #[serde(rename = "readonlyPaths", default)]
    readonly_paths: Option<Vec<String>>,
}

impl Overlays {
    pub fn new(proc: Vec<Overlay>, sysfs: Vec<Overlay>) -> Overlays {
        Overlays { proc, sysfs }
    }

    /// The overlays of one file system, in the order they are applied.
    pub fn of(&self, fs: FsKind) -> &[Overlay] {
        match fs {
            FsKind::Proc => &self.proc,
            FsKind::Sysfs => &self.sysfs,
        }
    }

    /// Whether `rel` (inside a mount of `fs`) carries an overlay.
    pub fn covers(&self, fs: FsKind, rel: &str) -> bool {
        self.of(fs).iter().any(|o| o.rel == rel)
    }

    /// Whether an absolute path could name an overlay: it ends with one overlay's path (of
    /// either file system), component-wise. Cheap, so that unmounts of anything else need
    /// not read the caller's mount table.
    pub fn may_cover_path(&self, path: &str) -> bool {
        self.proc
            .iter()
            .chain(&self.sysfs)
            .any(|o| path.strip_suffix(o.rel.as_str()).is_some_and(|head| head.ends_with('/')))
    }

    /// From a bundle's `config.json`.
    pub fn from_bundle(bundle: &Path) -> Result<Overlays, OverlayError> {
        let path = bundle.join("config.json");
        let error = |reason: String| OverlayError { path: path.clone(), reason };
        let bytes = std::fs::read(&path).map_err(|e| error(e.to_string()))?;
        Overlays::from_config(&bytes).map_err(error)
    }

    /// From the bytes of an OCI `config.json`.
    pub fn from_config(bytes: &[u8]) -> Result<Overlays, String> {
        let config: Config = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let mut overlays = Overlays::default();
        for mount in &config.mounts {
            let options = mount.options.as_deref().unwrap_or(&[]);
            let is_bind = mount.typ.as_deref() == Some("bind")
                || options.iter().any(|o| o == "bind" || o == "rbind");
            let Some(source) = mount.source.as_deref().filter(|_| is_bind) else {
                continue;
            };
            let recursive = options.iter().any(|o| o == "rbind");
            let kind =
                OverlayKind::Bind { source: source.into(), recursive, flags: bind_flags(options) };
            overlays.push(&mount.destination, kind);
        }
        if let Some(plan) = config.annotations.get(MIRRORS_ANNOTATION) {
            let plan: MirrorPlan = serde_json::from_str(plan)
                .map_err(|e| format!("annotation {MIRRORS_ANNOTATION}: {e}"))?;
            for mirror in plan.mounts {
                let read_only = if mirror.writable { 0 } else { libc::MS_RDONLY };
                let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | read_only;
                let kind = OverlayKind::Bind { source: mirror.source, recursive: false, flags };
                overlays.push(&mirror.target, kind);
            }
        }
        let linux = config.linux.unwrap_or_default();
        for path in linux.readonly_paths.iter().flatten() {
            overlays.push(path, OverlayKind::ReadOnly);
        }
        for path in linux.masked_paths.iter().flatten() {
            overlays.push(path, OverlayKind::Mask);
        }
        Ok(overlays)
    }

    /// Without a config: every view of sysvisor-fs (mounted at `fs_mountpoint`), read-only,
    /// and Docker's default read-only and masked paths.
    pub fn defaults(fs_mountpoint: &Path) -> Overlays {
        let mut overlays = Overlays::default();
        for view in crate::views::TABLE {
            let kind = OverlayKind::Bind {
                source: fs_mountpoint.join(view.path),
                recursive: false,
                flags: VIEW_FLAGS,
            };
            overlays.push(&format!("/{}", view.path), kind);
        }
        for path in DOCKER_READONLY {
            overlays.push(path, OverlayKind::ReadOnly);
        }
        for path in DOCKER_MASKED {
            overlays.push(path, OverlayKind::Mask);
        }
        overlays
    }

    /// These overlays with the container's own view files (binds from below `own_root`,
    /// `<own_root>/<id>/proc/meminfo`) replaced by the per-caller views at `shared`
    /// (`<shared>/proc/meminfo`): what proc and sysfs mounts made in a nested pid namespace
    /// get (an inner runtime's containers see their own limits, not the container's).
    pub fn per_caller(&self, own_root: &Path, shared: &Path) -> Overlays {
        let swap = |list: &[Overlay]| -> Vec<Overlay> {
            list.iter()
                .map(|overlay| match &overlay.kind {
                    OverlayKind::Bind { source, recursive, flags } => {
                        // Below the container's directory (`<id>/`).
                        let rest: Option<PathBuf> =
                            source.strip_prefix(own_root).ok().map(|r| r.iter().skip(1).collect());
                        match rest.filter(|r| !r.as_os_str().is_empty()) {
                            Some(rest) => Overlay {
                                rel: overlay.rel.clone(),
                                kind: OverlayKind::Bind {
                                    source: shared.join(rest),
                                    recursive: *recursive,
                                    flags: *flags,
                                },
                            },
                            None => overlay.clone(),
                        }
                    }
                    _ => overlay.clone(),
                })
                .collect()
        };
        Overlays { proc: swap(&self.proc), sysfs: swap(&self.sysfs) }
    }

    /// Adds an overlay at container path `destination` if it lies below `/proc` or `/sys`
    /// (and is a clean absolute path).
    fn push(&mut self, destination: &str, kind: OverlayKind) {
        let Some((fs, rel)) = split_destination(destination) else {
            return;
        };
        let list = match fs {
            FsKind::Proc => &mut self.proc,
            FsKind::Sysfs => &mut self.sysfs,
        };
        list.retain(|o| !(o.rel == rel && o.kind == kind));
        list.push(Overlay { rel, kind });
    }
}

/// How sysvisor-runc mounts a view: read-only, nosuid, nodev, noexec.
pub const VIEW_FLAGS: u64 = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// The flags a bind's options ask for.
fn bind_flags(options: &[String]) -> u64 {
    options
        .iter()
        .map(|o| match o.as_str() {
            "ro" => libc::MS_RDONLY,
            "nosuid" => libc::MS_NOSUID,
            "nodev" => libc::MS_NODEV,
            "noexec" => libc::MS_NOEXEC,
            _ => 0,
        })
        .fold(0, |flags, flag| flags | flag)
}

/// `/proc/meminfo` -> (proc, `meminfo`); `None` for the mount points themselves, paths
/// elsewhere, and paths with `.`, `..` or empty components.
fn split_destination(destination: &str) -> Option<(FsKind, String)> {
    for fs in [FsKind::Proc, FsKind::Sysfs] {
        let Some(rest) = destination.strip_prefix(fs.container_path()) else {
            continue;
        };
        let rel = rest.strip_prefix('/')?.trim_end_matches('/');
        let clean = !rel.is_empty() && rel.split('/').all(|c| !matches!(c, "" | "." | ".."));
        return clean.then(|| (fs, rel.to_string()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relevant parts of a config.json as sysvisor-runc writes it for `docker run`.
    const CONFIG: &str = r#"{
      "ociVersion": "1.0.2",
      "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid","noexec","nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid","noexec","nodev","ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro"]},
        {"destination": "/proc/meminfo", "type": "bind", "source": "/var/lib/sysvisor-fs/proc/meminfo",
         "options": ["rbind","ro","nosuid","nodev","noexec"]},
        {"destination": "/sys/devices/system/cpu/online", "type": "bind",
         "source": "/var/lib/sysvisor-fs/sys/devices/system/cpu/online", "options": ["rbind","ro","nosuid","nodev","noexec"]},
        {"destination": "/proc/driver/x", "source": "/srv/x", "options": ["bind"]},
        {"destination": "/etc/hosts", "type": "bind", "source": "/h", "options": ["rbind"]},
        {"destination": "/procfoo/x", "type": "bind", "source": "/h", "options": ["rbind"]},
        {"destination": "/proc/../etc", "type": "bind", "source": "/h", "options": ["rbind"]}
      ],
      "linux": {
        "maskedPaths": ["/proc/keys", "/sys/firmware", "/dev/foo"],
        "readonlyPaths": ["/proc/sys", "/proc/bus/"]
      }
    }"#;

    #[test]
    fn nested_mounts_get_the_per_caller_views_instead_of_the_containers_own() {
        let config = CONFIG.replace(
            "/var/lib/sysvisor-fs/proc/meminfo",
            "/var/lib/sysvisor-fs-containers/c1/proc/meminfo",
        );
        let own = Overlays::from_config(config.as_bytes()).unwrap();
        let nested = own.per_caller(
            Path::new("/var/lib/sysvisor-fs-containers"),
            Path::new("/var/lib/sysvisor-fs"),
        );
        let source = |o: &Overlays, rel: &str| match &o
            .of(FsKind::Proc)
            .iter()
            .find(|o| o.rel == rel)
            .unwrap()
            .kind
        {
            OverlayKind::Bind { source, .. } => source.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            source(&own, "meminfo"),
            Path::new("/var/lib/sysvisor-fs-containers/c1/proc/meminfo")
        );
        assert_eq!(source(&nested, "meminfo"), Path::new("/var/lib/sysvisor-fs/proc/meminfo"));
        // Everything else is kept as it is, in order.
        assert_eq!(source(&nested, "driver/x"), Path::new("/srv/x"));
        assert_eq!(nested.of(FsKind::Sysfs), own.of(FsKind::Sysfs));
        assert_eq!(nested.of(FsKind::Proc).len(), own.of(FsKind::Proc).len());
    }

    #[test]
    fn overlays_come_from_the_config() {
        let o = Overlays::from_config(CONFIG.as_bytes()).unwrap();
        let proc: Vec<(&str, &OverlayKind)> =
            o.of(FsKind::Proc).iter().map(|o| (o.rel.as_str(), &o.kind)).collect();
        assert_eq!(
            proc,
            [
                (
                    "meminfo",
                    &OverlayKind::Bind {
                        source: "/var/lib/sysvisor-fs/proc/meminfo".into(),
                        recursive: true,
                        flags: VIEW_FLAGS,
                    }
                ),
                (
                    "driver/x",
                    &OverlayKind::Bind { source: "/srv/x".into(), recursive: false, flags: 0 }
                ),
                ("sys", &OverlayKind::ReadOnly),
                ("bus", &OverlayKind::ReadOnly),
                ("keys", &OverlayKind::Mask),
            ]
        );
        let sysfs: Vec<&str> = o.of(FsKind::Sysfs).iter().map(|o| o.rel.as_str()).collect();
        assert_eq!(sysfs, ["devices/system/cpu/online", "firmware"]);
        assert!(o.covers(FsKind::Proc, "meminfo"));
        assert!(!o.covers(FsKind::Proc, "cpuinfo"));
        assert!(!o.covers(FsKind::Sysfs, "fs/cgroup"), "cgroup mounts are not binds");
    }

    /// The mirror hook's trees (as runtime/src/mirrors.rs plans them) overlay new proc and
    /// sysfs mounts too, after the binds, read-write only where planned so.
    #[test]
    fn mirror_trees_come_from_the_annotation() {
        let plan = r#"{"mounts":[{"source":"/m/proc/sys","target":"/proc/sys","writable":true},{"source":"/m/sys/kernel","target":"/sys/kernel","writable":false}],"sysctl":{"net.ipv4.ip_forward":"1"}}"#;
        let config = serde_json::json!({
            "mounts": [{"destination": "/proc/meminfo", "type": "bind", "source": "/m/proc/meminfo",
                        "options": ["rbind", "ro"]}],
            "annotations": {MIRRORS_ANNOTATION: plan, "other": "x"},
            "linux": {"maskedPaths": ["/proc/keys"]}
        });
        let o = Overlays::from_config(config.to_string().as_bytes()).unwrap();
        let proc: Vec<&str> = o.of(FsKind::Proc).iter().map(|o| o.rel.as_str()).collect();
        assert_eq!(proc, ["meminfo", "sys", "keys"]);
        let base = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        assert_eq!(
            o.of(FsKind::Proc)[1].kind,
            OverlayKind::Bind { source: "/m/proc/sys".into(), recursive: false, flags: base }
        );
        assert_eq!(
            o.of(FsKind::Sysfs)[0].kind,
            OverlayKind::Bind {
                source: "/m/sys/kernel".into(),
                recursive: false,
                flags: base | libc::MS_RDONLY
            }
        );
        let bad = serde_json::json!({"annotations": {MIRRORS_ANNOTATION: "{"}});
        let err = Overlays::from_config(bad.to_string().as_bytes()).unwrap_err();
        assert!(err.contains(MIRRORS_ANNOTATION), "{err}");
    }

    #[test]
    fn paths_that_may_name_an_overlay() {
        let o = Overlays::from_config(CONFIG.as_bytes()).unwrap();
        for path in [
            "/proc/meminfo",
            "/x/meminfo",
            "/proc/sys",
            "/sys/devices/system/cpu/online",
            "/mnt/proc/driver/x",
            "/sys/firmware",
        ] {
            assert!(o.may_cover_path(path), "{path}");
        }
        for path in [
            "/tmp",
            "/",
            "/proc",
            "/proc/xmeminfo",
            "/var/lib/docker/overlay2/a/merged",
            "/proc/meminfo/x",
            "/devices/system/cpu/onlinex",
        ] {
            assert!(!o.may_cover_path(path), "{path}");
        }
    }

    #[test]
    fn bad_configs_are_errors() {
        assert!(Overlays::from_config(b"{").is_err());
        assert!(Overlays::from_config(b"5").is_err());
        assert!(Overlays::from_config(br#"{"mounts": 3}"#).is_err());
        assert_eq!(Overlays::from_config(b"{}").unwrap(), Overlays::default());
        let missing = Overlays::from_bundle(Path::new("/nonexistent/bundle")).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/bundle/config.json"), "{missing}");
    }

    #[test]
    fn defaults_cover_every_view_and_dockers_paths() {
        let o = Overlays::defaults(Path::new("/m"));
        assert!(o.covers(FsKind::Proc, "meminfo"));
        assert!(o.covers(FsKind::Proc, "uptime"));
        assert!(o.covers(FsKind::Sysfs, "devices/system/cpu/online"));
        assert!(o.covers(FsKind::Proc, "kcore"));
        assert!(o.covers(FsKind::Proc, "sysrq-trigger"));
        assert!(o.covers(FsKind::Sysfs, "firmware"));
        let view = o.of(FsKind::Proc).iter().find(|o| o.rel == "meminfo").unwrap();
        assert_eq!(
            view.kind,
            OverlayKind::Bind {
                source: "/m/proc/meminfo".into(),
                recursive: false,
                flags: VIEW_FLAGS
            }
        );
    }

    #[test]
    fn destinations_are_split_cleanly() {
        assert_eq!(split_destination("/proc/meminfo"), Some((FsKind::Proc, "meminfo".into())));
        assert_eq!(split_destination("/sys/a/b/"), Some((FsKind::Sysfs, "a/b".into())));
        assert_eq!(split_destination("/proc"), None);
        assert_eq!(split_destination("/proc/"), None);
        assert_eq!(split_destination("/process/x"), None);
        assert_eq!(split_destination("/proc/./x"), None);
        assert_eq!(split_destination("/proc//x"), None);
        assert_eq!(split_destination("/etc/hosts"), None);
    }
}
