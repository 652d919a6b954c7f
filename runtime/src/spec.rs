//! A bundle's `config.json`: loading, atomic saving, and the kept original.
//!
//! The first `create` of a bundle copies its `config.json` byte for byte to
//! [`ORIGINAL_FILE`] before writing the rewritten spec. A later `create` of the same bundle
//! (`docker start` after `docker stop` reuses the bundle directory's contents) starts again
//! from that original, not from our own output, and `delete` puts the original back.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::transform;

/// The OCI config of a bundle.
pub const CONFIG_FILE: &str = "config.json";
/// The untouched original of a rewritten `config.json`, beside it.
pub const ORIGINAL_FILE: &str = "config.json.sysvisor-orig";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed OCI config {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serialize the OCI config for {path}: {source}")]
    Serialize {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path} was already rewritten by sysvisor-runc and its original ({original}) is missing; \
         recreate the bundle"
    )]
    OriginalMissing { path: PathBuf, original: PathBuf },
}

/// Parses a config from its bytes; `path` only names it in errors.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Spec, SpecError> {
    parse_with_capabilities(path, bytes, "/process/capabilities")
}

/// Parses JSON into `T` after writing out the capability sets left out of the object under
/// the JSON pointer `capabilities` as empty sets. runc reads a missing set as empty, and
/// Docker leaves empty sets out (`--cap-drop ALL` gives `"capabilities": {}`), but
/// oci-spec fills a missing set with its own default (`CAP_AUDIT_WRITE`, `CAP_KILL`,
/// `CAP_NET_BIND_SERVICE`), which would turn "none" into "runc spec's default".
pub fn parse_with_capabilities<T: serde::de::DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
    capabilities: &str,
) -> Result<T, SpecError> {
    let parse_err = |source| SpecError::Parse { path: path.to_path_buf(), source };
    let mut json: serde_json::Value = serde_json::from_slice(bytes).map_err(parse_err)?;
    if let Some(sets) = json.pointer_mut(capabilities).and_then(serde_json::Value::as_object_mut) {
        for set in ["bounding", "effective", "inheritable", "permitted", "ambient"] {
            sets.entry(set).or_insert_with(|| serde_json::Value::Array(Vec::new()));
        }
    }
    serde_json::from_value(json).map_err(parse_err)
}

/// Reads and parses a config file.
pub fn load(path: &Path) -> Result<Spec, SpecError> {
    let bytes = read(path)?;
    parse(path, &bytes)
}

/// Writes `spec` to `path` atomically (see [`write_atomic`]).
pub fn save(path: &Path, spec: &Spec) -> Result<(), SpecError> {
    write_json(path, spec, "/process/capabilities")
}

/// Writes `value` as pretty JSON to `path` atomically, with the capability sets under the
/// JSON pointer `capabilities` in kernel order (oci-spec keeps them in hash sets, whose
/// order changes from run to run).
pub fn write_json<T: serde::Serialize>(
    path: &Path,
    value: &T,
    capabilities: &str,
) -> Result<(), SpecError> {
    let serialize_err = |source| SpecError::Serialize { path: path.to_path_buf(), source };
    let mut json = serde_json::to_value(value).map_err(serialize_err)?;
    if let Some(sets) = json.pointer_mut(capabilities).and_then(serde_json::Value::as_object_mut) {
        for set in sets.values_mut().filter_map(serde_json::Value::as_array_mut) {
            let rank = |v: &serde_json::Value| {
                let name = v.as_str().unwrap_or_default();
                crate::caps::ALL.iter().position(|c| *c == name).unwrap_or(usize::MAX)
            };
            set.sort_by_key(rank);
        }
    }
    let mut bytes = serde_json::to_vec_pretty(&json).map_err(serialize_err)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Replaces `path` with `bytes` atomically: a temporary file in the same directory, synced,
/// then renamed over it. Keeps the mode of the file it replaces (0644 for a new one).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SpecError> {
    crate::atomic_file::replace(path, bytes, 0o644)
        .map_err(|source| SpecError::Write { path: path.to_path_buf(), source })
}

fn read(path: &Path) -> Result<Vec<u8>, SpecError> {
    fs::read(path).map_err(|source| SpecError::Read { path: path.to_path_buf(), source })
}

/// A bundle's original config, as a `create` starts from it.
#[derive(Debug, Clone)]
pub struct Original {
    /// The parsed original.
    pub spec: Spec,
    /// Its exact bytes, kept as [`ORIGINAL_FILE`].
    pub bytes: Vec<u8>,
    /// It came from [`ORIGINAL_FILE`] (which therefore already holds it).
    pub from_backup: bool,
}

/// `bundle/config.json`.
pub fn config_path(bundle: &Path) -> PathBuf {
    bundle.join(CONFIG_FILE)
}

/// `bundle/config.json.sysvisor-orig`.
pub fn original_path(bundle: &Path) -> PathBuf {
    bundle.join(ORIGINAL_FILE)
}

/// Loads the bundle's original config: `config.json` itself unless it is our own rewrite,
/// in which case the kept original. Writes nothing.
pub fn load_original(bundle: &Path) -> Result<Original, SpecError> {
    let config = config_path(bundle);
    let bytes = read(&config)?;
    let spec = parse(&config, &bytes)?;
    if !transform::is_transformed(&spec) {
        return Ok(Original { spec, bytes, from_backup: false });
    }
    let original = original_path(bundle);
    let bytes = match fs::read(&original) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SpecError::OriginalMissing { path: config, original })
        }
        Err(source) => return Err(SpecError::Read { path: original, source }),
    };
    let spec = parse(&original, &bytes)?;
    Ok(Original { spec, bytes, from_backup: true })
}

/// Saves the rewritten `spec` as the bundle's `config.json`, keeping `original` beside it
/// first (unless it is already there).
pub fn save_transformed(bundle: &Path, original: &Original, spec: &Spec) -> Result<(), SpecError> {
    if !original.from_backup {
        write_atomic(&original_path(bundle), &original.bytes)?;
    }
    save(&config_path(bundle), spec)
}

/// Puts the kept original back as `config.json`. Returns whether there was one.
pub fn restore_original(bundle: &Path) -> Result<bool, SpecError> {
    let original = original_path(bundle);
    match fs::rename(&original, config_path(bundle)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(SpecError::Write { path: config_path(bundle), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const MINIMAL: &str = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"linux":{"namespaces":[{"type":"pid"}]}}"#;

    #[test]
    fn malformed_config_names_the_file_and_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        fs::write(&path, "{\"ociVersion\": \"1.0.2\",,}").unwrap();
        let err = load_original(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("malformed OCI config {}: ", path.display())), "{msg}");
        assert!(msg.contains("line 1 column"), "{msg}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"ociVersion\": \"1.0.2\",,}");
        assert!(!original_path(dir.path()).exists());
    }

    #[test]
    fn missing_capability_sets_are_empty_as_runc_reads_them() {
        let text = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
            "process":{"cwd":"/","user":{"uid":0,"gid":0},"capabilities":{"bounding":["CAP_KILL"]}}}"#;
        let spec = parse(Path::new("config.json"), text.as_bytes()).unwrap();
        let caps = spec.process().as_ref().unwrap().capabilities().clone().unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 1);
        assert!(caps.effective().as_ref().unwrap().is_empty());
        assert!(caps.ambient().as_ref().unwrap().is_empty());
    }

    #[test]
    fn missing_config_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(&dir.path().join(CONFIG_FILE)).unwrap_err();
        assert!(matches!(err, SpecError::Read { .. }));
        assert!(err.to_string().contains("config.json"), "{err}");
    }

    #[test]
    fn atomic_write_keeps_mode_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let names: Vec<_> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f")]);
    }

    #[test]
    fn second_create_starts_from_the_original_and_delete_restores_it() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path();
        fs::write(config_path(bundle), MINIMAL).unwrap();

        let first = load_original(bundle).unwrap();
        assert!(!first.from_backup);
        let mut rewritten = first.spec.clone();
        rewritten.set_annotations(Some(
            [(transform::ANNOTATION_UID_BASE.to_string(), "1".to_string())].into(),
        ));
        save_transformed(bundle, &first, &rewritten).unwrap();
        assert_eq!(fs::read_to_string(original_path(bundle)).unwrap(), MINIMAL);
        assert_eq!(load(&config_path(bundle)).unwrap(), rewritten);

        let second = load_original(bundle).unwrap();
        assert!(second.from_backup);
        assert_eq!(second.spec, first.spec);
        save_transformed(bundle, &second, &rewritten).unwrap();
        assert_eq!(fs::read_to_string(original_path(bundle)).unwrap(), MINIMAL);

        assert!(restore_original(bundle).unwrap());
        assert_eq!(fs::read_to_string(config_path(bundle)).unwrap(), MINIMAL);
        assert!(!original_path(bundle).exists());
        assert!(!restore_original(bundle).unwrap());
    }

    #[test]
    fn a_user_edited_config_replaces_a_stale_original() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path();
        fs::write(original_path(bundle), r#"{"ociVersion":"0.0.1"}"#).unwrap();
        fs::write(config_path(bundle), MINIMAL).unwrap();
        let original = load_original(bundle).unwrap();
        assert!(!original.from_backup);
        save_transformed(bundle, &original, &original.spec).unwrap();
        assert_eq!(fs::read_to_string(original_path(bundle)).unwrap(), MINIMAL);
    }

    #[test]
    fn rewritten_config_without_original_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path();
        let mut spec: Spec = serde_json::from_str(MINIMAL).unwrap();
        spec.set_annotations(Some(
            [(transform::ANNOTATION_UID_BASE.to_string(), "1".to_string())].into(),
        ));
        save(&config_path(bundle), &spec).unwrap();
        let err = load_original(bundle).unwrap_err();
        assert!(matches!(err, SpecError::OriginalMissing { .. }), "{err}");
    }
}
