//! Which bind mounts are id-shifted.
//!
//! An id-shifted bind (an idmapped clone of its source, [`crate::rootfs`]) shows host uid
//! 0 as the container's root and writes the container root's files as host uid 0: on
//! that path, container root *is* host root (it can leave a setuid-root binary on the
//! host). So a bind is bound as it is, unshifted, unless the user asks for the shift, as
//! with Docker's userns-remap: host files show as `nobody` inside unless they belong to
//! the container's range, and what the container writes belongs to its range on the host.
//!
//! The shift is asked for per container path, with the annotation [`ANNOTATION`] or,
//! since Docker 20.10 cannot pass annotations, the environment variable [`ENV`]
//! (`docker run -e SYSVISOR_SHIFT_BINDS=/data,/srv -v /host/data:/data ...`): a
//! comma-separated list of the destinations of the container's bind mounts. A listed path
//! that is not a bind mount's destination is an error. Shifted binds are mounted
//! `nosuid,nodev` ([`SHIFTED_BIND_OPTIONS`]), so a setuid file or a device node on them
//! gives nothing inside the container.
//!
//! Not affected: Docker's own per-container files (`/etc/hosts`, `/etc/hostname`,
//! `/etc/resolv.conf`, see [`crate::docker`]), which are given to the container's root
//! instead (chown to the range, as userns-remap does), and sysvisor's own host-backed
//! volumes and views, which already belong to the range or answer by the caller's ids.

use std::path::PathBuf;

use oci_spec::runtime::{Mount, Spec};

/// Annotation listing the bind destinations to id-shift.
pub const ANNOTATION: &str = "io.sysvisor.shift-binds";
/// Environment variable of the container's process listing the bind destinations to
/// id-shift (for engines that cannot pass annotations).
pub const ENV: &str = "SYSVISOR_SHIFT_BINDS";
/// Options added to a shifted bind.
pub const SHIFTED_BIND_OPTIONS: &[&str] = &["nosuid", "nodev"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error(
        "{from} asks to id-shift {path:?}, which is not the destination of one of the \
         container's bind mounts (give absolute container paths, comma-separated)"
    )]
    NotABind { from: &'static str, path: String },
}

/// A bind mount (`type: bind`, or a `bind`/`rbind` option as runc reads it).
pub fn is_bind(mount: &Mount) -> bool {
    mount.typ().as_deref() == Some("bind")
        || mount.options().iter().flatten().any(|o| o == "bind" || o == "rbind")
}

/// The bind destinations `spec` asks to id-shift (annotation and environment together).
pub fn shift_requests(spec: &Spec) -> Result<Vec<PathBuf>, BindError> {
    let mut lists: Vec<(&'static str, String)> = Vec::new();
    if let Some(value) = spec.annotations().as_ref().and_then(|a| a.get(ANNOTATION)) {
        lists.push((ANNOTATION, value.clone()));
    }
    let env = spec.process().as_ref().and_then(|p| p.env().clone()).unwrap_or_default();
    let prefix = format!("{ENV}=");
    for value in env.iter().filter_map(|e| e.strip_prefix(&prefix)) {
        lists.push((ENV, value.to_string()));
    }
    let binds: Vec<&Mount> = spec.mounts().iter().flatten().filter(|m| is_bind(m)).collect();
    let mut wanted = Vec::new();
    for (from, list) in lists {
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let path = PathBuf::from(item);
            if !path.is_absolute() || !binds.iter().any(|m| m.destination() == &path) {
                return Err(BindError::NotABind { from, path: item.to_string() });
            }
            if !wanted.contains(&path) {
                wanted.push(path);
            }
        }
    }
    Ok(wanted)
}

/// Adds [`SHIFTED_BIND_OPTIONS`] to a shifted bind's options.
pub fn harden(mount: &mut Mount) {
    let mut options = mount.options().clone().unwrap_or_default();
    for option in SHIFTED_BIND_OPTIONS {
        let opposite = option.replacen("no", "", 1);
        options.retain(|o| *o != opposite);
        if !options.iter().any(|o| o == option) {
            options.push(option.to_string());
        }
    }
    mount.set_options(Some(options));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        let mut base = serde_json::json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"}});
        base.as_object_mut().unwrap().extend(json.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    fn bind(dest: &str) -> serde_json::Value {
        serde_json::json!({"destination": dest, "type": "bind", "source": "/srv", "options": ["rbind", "suid"]})
    }

    #[test]
    fn nothing_is_shifted_unless_asked() {
        let s = spec(serde_json::json!({"mounts": [bind("/data")]}));
        assert!(shift_requests(&s).unwrap().is_empty());
    }

    #[test]
    fn annotation_and_environment_name_bind_destinations() {
        let s = spec(serde_json::json!({
            "mounts": [bind("/data"), bind("/srv"), bind("/x")],
            "annotations": {ANNOTATION: "/data, /srv"},
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0},
                        "env": ["PATH=/bin", format!("{ENV}=/x,/data")]}
        }));
        assert_eq!(
            shift_requests(&s).unwrap(),
            [PathBuf::from("/data"), PathBuf::from("/srv"), PathBuf::from("/x")]
        );
    }

    #[test]
    fn a_path_that_is_no_bind_is_an_error() {
        let s = spec(serde_json::json!({
            "mounts": [bind("/data"), {"destination": "/proc", "type": "proc", "source": "proc"}],
            "annotations": {ANNOTATION: "/proc"}
        }));
        let err = shift_requests(&s).unwrap_err();
        assert_eq!(err, BindError::NotABind { from: ANNOTATION, path: "/proc".into() });
        assert!(err.to_string().contains("io.sysvisor.shift-binds"), "{err}");
        let s = spec(serde_json::json!({
            "mounts": [bind("/data")],
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "env": [format!("{ENV}=data")]}
        }));
        assert!(matches!(shift_requests(&s), Err(BindError::NotABind { from: ENV, .. })));
    }

    #[test]
    fn shifted_binds_are_nosuid_and_nodev() {
        let s = spec(serde_json::json!({"mounts": [bind("/data")]}));
        let mut m = s.mounts().as_ref().unwrap()[0].clone();
        harden(&mut m);
        assert_eq!(m.options().as_deref().unwrap(), ["rbind", "nosuid", "nodev"]);
        harden(&mut m);
        assert_eq!(m.options().as_deref().unwrap(), ["rbind", "nosuid", "nodev"]);
    }
}
