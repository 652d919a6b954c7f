//! Host directories backing the data directories of inner container engines.
//!
//! An inner dockerd or containerd keeps its images and containers in /var/lib/docker or
//! /var/lib/containerd and wants overlayfs there, which cannot stack on the container's
//! own rootfs overlay (the inner dockerd then falls back to copying every layer, `vfs`).
//! So each system container gets, for each of [`VOLUMES`], a directory of the host's
//! filesystem at `/var/lib/sysvisor/volumes/<id>/<name>` bind-mounted there (see
//! [`crate::nesting::add_volume_mounts`]; a mount the user placed there or on a parent
//! wins).
//!
//! - Created on `create`, owned by the container's root (host BASE:BASE), mode 0700 (the
//!   engine's own directory). The container's directory `volumes/<id>` is 0710 root:BASE,
//!   so only the container's root can reach inside; `volumes` itself is 0711.
//! - Kept across `delete` + `create` with the same id (`docker stop` / `docker start`): the
//!   container gets its id range back (see [`crate::idrange`]), so the files still belong
//!   to it.
//! - Removed with [`Volumes::remove`] once the container is gone for good, where its range and
//!   upper layer are freed (the reclaim path in `main.rs`). Nothing may be mounted below
//!   them then (the container's mount namespace is gone with it); a mount found there
//!   fails the removal, which is retried at the next reclaim.
//! - Copied into the container's rootfs at pause and stop, and from an image's rootfs into
//!   an empty volume at create, so that `docker commit` carries the inner engines' images
//!   ([`sync`]).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::idrange::{valid_container_id, IdRange};
use crate::rootfs::mountinfo;

pub mod sync;

/// Where the per-container directories live.
pub const SYSTEM_DIR: &str = "/var/lib/sysvisor/volumes";

/// The data directories given a host directory: (name of the host directory, path inside).
pub const VOLUMES: &[(&str, &str)] = &[
    ("docker", "/var/lib/docker"),
    ("containerd", "/var/lib/containerd"),
    ("kubelet", "/var/lib/kubelet"),
];

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid container id {0:?}: expected 1-1024 characters of [A-Za-z0-9_+.-]")]
    InvalidContainerId(String),
    #[error("{} is not one of sysvisor's volume directories", .0.display())]
    Foreign(PathBuf),
    #[error("{} is still mounted: {detail}", path.display())]
    Busy { path: PathBuf, detail: String },
    #[error(
        "{} belongs to {uid}:{gid}, not to the container's range ({range}): the container \
         would not own its data; remove it or give the container back its range",
        path.display()
    )]
    RangeMismatch { path: PathBuf, uid: u32, gid: u32, range: IdRange },
    /// Copying a volume to or from the container's rootfs ([`sync`]) failed.
    #[error("copying the inner engines' data between the volume and the rootfs: {0}")]
    Sync(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> VolumeError {
    let context = context.into();
    move |source| VolumeError::Io { context, source }
}

/// The volume directories under one root (`SYSTEM_DIR` on a host, a temporary one in
/// tests).
#[derive(Debug, Clone)]
pub struct Volumes {
    root: PathBuf,
}

impl Volumes {
    pub fn system() -> Volumes {
        Volumes::at(Path::new(SYSTEM_DIR))
    }

    pub fn at(root: &Path) -> Volumes {
        Volumes { root: root.to_path_buf() }
    }

    /// The directory of container `id` (it need not exist).
    pub fn dir(&self, id: &str) -> Result<PathBuf, VolumeError> {
        if !valid_container_id(id) {
            return Err(VolumeError::InvalidContainerId(id.to_string()));
        }
        Ok(self.root.join(id))
    }

    /// Makes the host directories `sources` (each directly in [`dir`](Self::dir)`(id)`)
    /// for a container with `range`; existing ones are kept if they belong to the range.
    pub fn ensure(
        &self,
        id: &str,
        range: &IdRange,
        sources: &[PathBuf],
    ) -> Result<(), VolumeError> {
        let dir = self.dir(id)?;
        for source in sources {
            if source.parent() != Some(dir.as_path()) {
                return Err(VolumeError::Foreign(source.clone()));
            }
        }
        if sources.is_empty() {
            return Ok(());
        }
        mkdir(&self.root, 0o711, 0, 0)?;
        mkdir(&dir, 0o710, 0, range.gid_base)?;
        for source in sources {
            mkdir(source, 0o700, range.uid_base, range.gid_base)?;
            let meta = fs::symlink_metadata(source)
                .map_err(io_err(format!("reading {}", source.display())))?;
            if !meta.is_dir() || meta.uid() != range.uid_base || meta.gid() != range.gid_base {
                return Err(VolumeError::RangeMismatch {
                    path: source.clone(),
                    uid: meta.uid(),
                    gid: meta.gid(),
                    range: *range,
                });
            }
        }
        Ok(())
    }

    /// Removes everything of container `id` (no-op when it has nothing). Refuses while
    /// anything is mounted below its directory.
    pub fn remove(&self, id: &str) -> Result<(), VolumeError> {
        let dir = self.dir(id)?;
        if fs::symlink_metadata(&dir).is_err() {
            return Ok(());
        }
        let mounts = mountinfo::read().map_err(io_err("reading /proc/self/mountinfo"))?;
        if let Some(m) = mounts.iter().find(|m| m.mount_point.starts_with(&dir)) {
            return Err(VolumeError::Busy {
                path: dir,
                detail: format!("mount {} at {}", m.id, m.mount_point.display()),
            });
        }
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(io_err(format!("removing {}", dir.display()))(e))
            }
            _ => Ok(()),
        }
    }
}

/// Creates `path` with `mode` and owner if missing; an existing directory keeps its owner
/// but gets `mode` (a parent made by an older version, say).
fn mkdir(path: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), VolumeError> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                .map_err(io_err(format!("chown {}", path.display())))?;
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(format!("creating {}", path.display()))(e)),
    }
    // The umask may have cut the mode at creation.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANGE: IdRange = IdRange { uid_base: 0, gid_base: 0, count: 65536 };

    #[test]
    fn sources_must_lie_in_the_containers_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let v = Volumes::at(tmp.path());
        let err = v.ensure("c1", &RANGE, &[tmp.path().join("c2/docker")]).unwrap_err();
        assert!(matches!(err, VolumeError::Foreign(_)), "{err}");
        let err = v.ensure("c1", &RANGE, &[tmp.path().join("c1/a/b")]).unwrap_err();
        assert!(matches!(err, VolumeError::Foreign(_)), "{err}");
        assert!(matches!(v.dir("../x"), Err(VolumeError::InvalidContainerId(_))));
        assert!(!tmp.path().join("c1").exists());
    }
}
