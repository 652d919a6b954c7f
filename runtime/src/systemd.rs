//! systemd as the container's init (`docker run IMG /sbin/init`).
//!
//! [`is_systemd`] tells, at `create`, whether the process starts systemd: its `args[0]`
//! (looked up in the `PATH` of its environment when it has no slash) resolved inside the
//! rootfs, symlink by symlink, to a file named `systemd` (`/sbin/init` -> `/lib/systemd/systemd` on Debian,
//! `/usr/lib/systemd/systemd`, ...). The pure [`prepare`] then gives it what it needs in
//! a container:
//!
//! - a tmpfs at `/run` and `/run/lock` (systemd refuses to boot without a writable `/run`,
//!   and expects no stale state from the image there), unless the user mounts them;
//! - `container=sysvisor` in its environment (unless the image or the user sets
//!   `container`): systemd takes any non-empty value as "in a container" (it skips
//!   hardware units, `ConditionVirtualization=container` holds) and reports an unknown one
//!   as `container-other` (`systemd-detect-virt`);
//! - the annotation [`ANNOTATION_INIT`] = `systemd`, the record that `kill` reads from
//!   `runc state` to turn the SIGTERM of `docker stop` into [`STOP_SIGNAL`] (SIGRTMIN+3,
//!   systemd's "halt"; systemd as PID 1 ignores SIGTERM, so `docker stop` would wait its
//!   whole timeout and then SIGKILL it).
//!
//! The writable, delegated cgroups systemd also needs are every system container's (see
//! [`crate::nesting`] and [`crate::cgroups`]).

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{Mount, Spec};

use crate::nesting::insert_before_descendants;

/// Annotation recording what the container's init is (`systemd`).
pub const ANNOTATION_INIT: &str = "io.sysvisor.init";
/// The value of [`ANNOTATION_INIT`] for systemd.
pub const INIT_SYSTEMD: &str = "systemd";
/// The environment variable telling systemd it runs in a container, and our value.
pub const CONTAINER_ENV: &str = "container";
pub const CONTAINER_ENV_VALUE: &str = "sysvisor";

/// systemd's halt signal SIGRTMIN+3, what `docker stop` sends it instead of SIGTERM. A
/// number, not `libc::SIGRTMIN() + 3`: that depends on the C library this binary is built
/// with (musl reserves one more real-time signal than glibc), while systemd, like Docker's
/// `STOPSIGNAL` parser, counts from glibc's SIGRTMIN, 34.
pub const STOP_SIGNAL: i32 = 37;

/// Tmpfs mounts systemd needs: (destination, options).
pub const TMPFS_MOUNTS: &[(&str, &[&str])] = &[
    ("/run", &["rw", "nosuid", "nodev", "mode=755"]),
    ("/run/lock", &["rw", "nosuid", "nodev", "noexec", "mode=1777", "size=5120k"]),
];

/// The default `PATH` for a process without one (runc's, Docker's).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Symlinks followed at most while resolving (the kernel's limit).
const MAX_SYMLINKS: usize = 40;

/// Whether the spec's process starts systemd (see the module doc). `rootfs` is the host
/// path of the container's root filesystem; if the program cannot be found there, only a
/// name `systemd` counts.
pub fn is_systemd(spec: &Spec, rootfs: &Path) -> bool {
    let Some(process) = spec.process() else { return false };
    let args = process.args().as_deref().unwrap_or(&[]);
    let env = process.env().as_deref().unwrap_or(&[]);
    let Some(program) = args.first() else { return false };
    let path_var = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![Path::new("/").join(program)]
    } else {
        path_var
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| Path::new(d).join(program))
            .collect()
    };
    for candidate in candidates {
        if let Some(resolved) = resolve_in_root(rootfs, &candidate) {
            if rootfs.join(relative(&resolved)).is_file() {
                return resolved.file_name() == Some(OsStr::new("systemd"));
            }
        }
    }
    Path::new(program).file_name() == Some(OsStr::new("systemd"))
}

fn relative(inside: &Path) -> &Path {
    inside.strip_prefix("/").unwrap_or(inside)
}

/// Resolves the absolute path `inside` as the container would see it with `rootfs` as its
/// root: every symlink on the way, absolute targets from `rootfs`, `..` never above it.
/// Returns the resolved path inside (its last component need not exist); `None` after
/// too many symlinks or on an unreadable link.
pub fn resolve_in_root(rootfs: &Path, inside: &Path) -> Option<PathBuf> {
    let mut pending: Vec<PathBuf> = components_rev(inside);
    let mut resolved = PathBuf::from("/");
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part.as_os_str() == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let host = rootfs.join(relative(&candidate));
        match std::fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return None;
                }
                let target = std::fs::read_link(&host).ok()?;
                if target.is_absolute() {
                    resolved = PathBuf::from("/");
                }
                pending.extend(components_rev(&target));
            }
            _ => resolved = candidate,
        }
    }
    Some(resolved)
}

/// The normal and `..` components of `path`, last first (a stack to pop).
fn components_rev(path: &Path) -> Vec<PathBuf> {
    let mut parts: Vec<PathBuf> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    parts.reverse();
    parts
}

/// What a systemd container gets (see the module doc).
pub fn prepare(spec: &mut Spec) {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for (dest, options) in TMPFS_MOUNTS {
        if mounts.iter().any(|m| m.destination() == Path::new(dest)) {
            continue;
        }
        let mut m = Mount::default();
        m.set_destination(PathBuf::from(dest));
        m.set_typ(Some("tmpfs".into()));
        m.set_source(Some("tmpfs".into()));
        m.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
        insert_before_descendants(&mut mounts, m);
    }
    spec.set_mounts(Some(mounts));
    if let Some(process) = spec.process_mut() {
        let mut env = process.env().clone().unwrap_or_default();
        let prefix = format!("{CONTAINER_ENV}=");
        if !env.iter().any(|e| e.starts_with(&prefix)) {
            env.push(format!("{prefix}{CONTAINER_ENV_VALUE}"));
        }
        process.set_env(Some(env));
    }
    spec.annotations_mut()
        .get_or_insert_with(Default::default)
        .insert(ANNOTATION_INIT.into(), INIT_SYSTEMD.into());
}

/// Whether annotations (a spec's, or `runc state`'s) record a systemd init.
pub fn runs_systemd(annotations: Option<&std::collections::HashMap<String, String>>) -> bool {
    annotations.and_then(|a| a.get(ANNOTATION_INIT)).is_some_and(|v| v == INIT_SYSTEMD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn spec(args: &[&str], env: &[&str]) -> Spec {
        let json = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "args": args, "env": env},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/run/secrets", "type": "bind", "source": "/s", "options": ["rbind"]}
            ]
        });
        serde_json::from_value(json).unwrap()
    }

    /// A merged-/usr rootfs like Debian bookworm's.
    fn bookworm() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
        std::fs::create_dir_all(r.join("usr/sbin")).unwrap();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::write(r.join("usr/lib/systemd/systemd"), "").unwrap();
        std::fs::write(r.join("usr/bin/busybox"), "").unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        symlink("/usr/sbin", r.join("sbin")).unwrap(); // absolute: must stay in the rootfs
        symlink("/lib/systemd/systemd", r.join("usr/sbin/init")).unwrap();
        symlink("../bin/busybox", r.join("usr/sbin/bbinit")).unwrap();
        dir
    }

    #[test]
    fn systemd_is_found_through_symlinks_inside_the_rootfs() {
        let root = bookworm();
        let r = root.path();
        for args in [
            &["/sbin/init"][..],
            &["/lib/systemd/systemd", "--log-level=debug"],
            &["/usr/lib/systemd/systemd"],
            &["init"],
        ] {
            assert!(is_systemd(&spec(args, &["PATH=/usr/bin:/sbin"]), r), "{args:?}");
        }
        // systemd must be PID 1: under Docker's --init (tini) it is not the init.
        for args in
            [&["/sbin/bbinit"][..], &["/bin/sh"], &["/sbin/docker-init", "--", "/sbin/init"], &[]]
        {
            assert!(!is_systemd(&spec(args, &[]), r), "{args:?}");
        }
        assert_eq!(
            resolve_in_root(r, Path::new("/sbin/init")),
            Some("/usr/lib/systemd/systemd".into())
        );
        assert_eq!(resolve_in_root(r, Path::new("/../../sbin/../lib")), Some("/usr/lib".into()));
    }

    #[test]
    fn without_the_file_only_the_name_counts_and_loops_end() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        assert!(is_systemd(&spec(&["/lib/systemd/systemd"], &[]), r));
        assert!(!is_systemd(&spec(&["/sbin/init"], &[]), r));
        symlink("b", r.join("a")).unwrap();
        symlink("a", r.join("b")).unwrap();
        assert_eq!(resolve_in_root(r, Path::new("/a")), None);
        assert!(!is_systemd(&spec(&["/a"], &[]), r));
    }

    #[test]
    fn prepare_adds_run_tmpfs_env_and_annotation_once() {
        let mut s = spec(&["/sbin/init"], &["PATH=/bin"]);
        prepare(&mut s);
        let dests: Vec<_> = s
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect();
        assert_eq!(dests, ["/proc", "/run", "/run/secrets", "/run/lock"]);
        let env = s.process().as_ref().unwrap().env().clone().unwrap();
        assert_eq!(env, ["PATH=/bin", "container=sysvisor"]);
        assert!(runs_systemd(s.annotations().as_ref()));
        let once = s.clone();
        prepare(&mut s);
        assert_eq!(s, once);

        // The image's own `container` and the user's /run stay.
        let mut s = spec(&["/sbin/init"], &["container=docker"]);
        let mut mounts = s.mounts().clone().unwrap();
        let mut run = Mount::default();
        run.set_destination("/run".into());
        run.set_typ(Some("bind".into()));
        mounts.push(run);
        s.set_mounts(Some(mounts));
        prepare(&mut s);
        assert_eq!(s.process().as_ref().unwrap().env().clone().unwrap(), ["container=docker"]);
        let runs = s
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|m| m.destination() == Path::new("/run"))
            .count();
        assert_eq!(runs, 1);
    }

    #[test]
    fn stop_signal_is_sigrtmin_plus_3() {
        // This test binary is built against glibc, as systemd is.
        assert_eq!(STOP_SIGNAL, libc::SIGRTMIN() + 3);
        assert!(!runs_systemd(None));
    }
}
