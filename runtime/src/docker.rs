//! What Docker made for a container, as far as the runtime needs it.
//!
//! Docker keeps each container's files in `<data-root>/containers/<id>/`: the `hosts`,
//! `hostname` and `resolv.conf` it binds into the container ([`FILES`]), and
//! `hostconfig.json`, the options the container was created with. The OCI config does not
//! say which seccomp profile the user asked for (Docker's default and a user's
//! `--security-opt seccomp=profile.json` both arrive as a profile), so the runtime reads
//! the `SecurityOpt` list of `hostconfig.json` ([`seccomp_option`]). The directory is
//! found from the sources of the file binds, whose directory is named by the container's
//! id (Docker runs the runtime with that id).

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

/// The files Docker writes for a container and binds into it (`/etc/<name>`).
pub const FILES: &[&str] = &["hosts", "hostname", "resolv.conf"];

/// The `--security-opt seccomp=...` a Docker container was created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompOption {
    /// None: Docker's default profile (or the daemon's `--seccomp-profile`).
    Default,
    /// `seccomp=unconfined`.
    Unconfined,
    /// `seccomp=<profile JSON>`: the user's own profile.
    Profile,
}

/// Whether `source` is one of Docker's own [`FILES`] of the container `id`
/// (`.../containers/<id>/<file>`).
pub fn is_container_file(source: &Path, id: &str) -> bool {
    let Some(dir) = source.parent() else { return false };
    let named = |p: &Path, name: &str| p.file_name().is_some_and(|n| n == name);
    source.file_name().is_some_and(|n| FILES.iter().any(|f| n == *f))
        && named(dir, id)
        && dir.parent().is_some_and(|containers| named(containers, "containers"))
}

/// Docker's directory of container `id`, from the sources of the spec's bind mounts.
pub fn container_dir(spec: &Spec, id: &str) -> Option<PathBuf> {
    spec.mounts()
        .iter()
        .flatten()
        .filter_map(|m| m.source().as_deref())
        .find(|source| is_container_file(source, id))
        .and_then(Path::parent)
        .map(Path::to_path_buf)
}

/// The seccomp option in the text of a `hostconfig.json`; `None` when it is not one.
pub fn parse_seccomp_option(hostconfig: &str) -> Option<SeccompOption> {
    let value: serde_json::Value = serde_json::from_str(hostconfig).ok()?;
    let options = match &value["SecurityOpt"] {
        serde_json::Value::Null => return Some(SeccompOption::Default),
        serde_json::Value::Array(options) => options,
        _ => return None,
    };
    let seccomp = options.iter().filter_map(|o| o.as_str()).find_map(|o| {
        // Docker accepts `seccomp=x` and the older `seccomp:x`.
        o.strip_prefix("seccomp=").or_else(|| o.strip_prefix("seccomp:"))
    });
    Some(match seccomp {
        None => SeccompOption::Default,
        Some("unconfined") => SeccompOption::Unconfined,
        Some(_) => SeccompOption::Profile,
    })
}

/// The seccomp option of the Docker container `id` whose config is `spec`; `None` when
/// the container is not Docker's (no directory found) or its `hostconfig.json` cannot be
/// read.
pub fn seccomp_option(spec: &Spec, id: &str) -> Option<SeccompOption> {
    let dir = container_dir(spec, id)?;
    let text = std::fs::read_to_string(dir.join("hostconfig.json")).ok()?;
    parse_seccomp_option(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4ca3138ecd76";

    #[test]
    fn only_the_containers_own_files_are_dockers() {
        let dir = Path::new("/var/lib/docker/containers").join(ID);
        for f in FILES {
            assert!(is_container_file(&dir.join(f), ID), "{f}");
        }
        assert!(!is_container_file(&dir.join("hostconfig.json"), ID));
        assert!(!is_container_file(&dir.join("hosts"), "other"));
        assert!(!is_container_file(&Path::new("/srv/x").join(ID).join("hosts"), ID));
        assert!(!is_container_file(Path::new("hosts"), ID));
    }

    #[test]
    fn seccomp_options_as_docker_records_them() {
        let opt = |json: &str| parse_seccomp_option(json);
        assert_eq!(opt(r#"{"SecurityOpt":null}"#), Some(SeccompOption::Default));
        assert_eq!(opt(r#"{"Privileged":false}"#), Some(SeccompOption::Default));
        assert_eq!(opt(r#"{"SecurityOpt":["label=disable"]}"#), Some(SeccompOption::Default));
        assert_eq!(
            opt(r#"{"SecurityOpt":["seccomp=unconfined"]}"#),
            Some(SeccompOption::Unconfined)
        );
        assert_eq!(
            opt(r#"{"SecurityOpt":["seccomp:unconfined"]}"#),
            Some(SeccompOption::Unconfined)
        );
        assert_eq!(
            opt(
                r#"{"SecurityOpt":["no-new-privileges","seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}"]}"#
            ),
            Some(SeccompOption::Profile)
        );
        assert_eq!(opt("not json"), None);
        assert_eq!(opt(r#"{"SecurityOpt":"seccomp=x"}"#), None);
    }
}
