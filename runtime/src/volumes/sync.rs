//! Inner engines' data in committed images: the host-backed volumes of [`super`] are
//! copied into the container's rootfs when it is paused or stopped, and back from the
//! rootfs into a fresh volume when a container starts, as Sysbox does.
//!
//! - [`save`] (after `runc pause` and at `delete`, so `docker commit`, which pauses a
//!   running container, and `docker commit` of a stopped one both see it): for each of
//!   [`SYNCED`], the rootfs directory (`/var/lib/docker` in Docker's merged overlay, so in
//!   Docker's own upper layer) is replaced by a copy of the volume, through an idmapped
//!   view of the volume ([`Rootfs::unshifted_view`]) so that the copy has the container's
//!   own ids (root 0, uid 1000 stays 1000), as every other file of the layer.
//! - [`seed`] (at `create`, before the rootfs is shifted): a volume that is empty gets a
//!   copy of the rootfs directory (an image committed so), written through the same view,
//!   so that it belongs to the container's range.
//!
//! The cost: each pause and stop copies all of the inner engines' data (images, containers)
//! once more, and the container's layer holds a second copy of it (the inner engine reads
//! only the volume; the copy in the rootfs is hidden below the volume's mount). Copies are
//! made with `cp -a` (owners, modes, hard links, xattrs, device nodes such as overlay
//! whiteouts). The rootfs directory is reached with openat2(RESOLVE_IN_ROOT), so a symlink
//! the container planted on the way (`/var/lib -> /etc`) cannot make the copy land on
//! the host.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{io_err, VolumeError, Volumes, VOLUMES};
use crate::idrange::IdRange;
use crate::rootfs::{mountinfo, sys, Rootfs};

/// The volumes whose data goes into the committed image (those of the inner container
/// engines; kubelet's pods are not an image's content).
pub const SYNCED: &[&str] = &["docker", "containerd"];

/// Copies each synced volume of container `id` into its rootfs. Does nothing for a
/// container that is not shifted (nothing recorded) or whose rootfs is not mounted any
/// more. Returns the rootfs paths written.
pub fn save(volumes: &Volumes, rootfs: &Rootfs, id: &str) -> Result<Vec<PathBuf>, VolumeError> {
    let Some((root, range)) = rootfs.recorded(id).map_err(|e| VolumeError::Sync(e.to_string()))?
    else {
        return Ok(Vec::new());
    };
    let mounts = mountinfo::read().map_err(io_err("reading /proc/self/mountinfo"))?;
    if mountinfo::top_at(&mounts, &root).is_none_or(|m| m.fstype != "overlay") {
        return Ok(Vec::new()); // Docker unmounted it already: nothing to write to
    }
    let dir = volumes.dir(id)?;
    let root_fd = open_root(&root)?;
    let mut written = Vec::new();
    for (name, inside) in synced() {
        let source = dir.join(name);
        if !source.is_dir() {
            continue; // not one of this container's volumes (the user mounted their own)
        }
        let parent = in_root_dir(&root_fd, &root, parent_of(inside)?, true)?;
        let target = fd_path(&parent).join(file_name(inside)?);
        if is_empty_dir(&source)? && !target.exists() {
            continue;
        }
        let view = rootfs
            .unshifted_view(id, &source, &range)
            .map_err(|e| VolumeError::Sync(e.to_string()))?;
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&target),
            Ok(_) => fs::remove_file(&target),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
        .map_err(io_err(format!("removing the old copy {}{inside}", root.display())))?;
        copy(view.path(), &target)?;
        written.push(root.join(inside.trim_start_matches('/')));
    }
    Ok(written)
}

/// Copies the rootfs directory of each synced volume among `sources` that is empty into
/// it (with the container's range as owners). Returns the volumes filled.
pub fn seed(
    rootfs: &Rootfs,
    id: &str,
    range: &IdRange,
    container_rootfs: &Path,
    sources: &[PathBuf],
) -> Result<Vec<PathBuf>, VolumeError> {
    let mut filled = Vec::new();
    let mut root_fd = None;
    for (name, inside) in synced() {
        let Some(source) = sources.iter().find(|s| s.file_name() == Some(OsStr::new(name)))
        else {
            continue;
        };
        if !is_empty_dir(source)? {
            continue; // the container's own data, kept across stop and start
        }
        let fd = match &root_fd {
            Some(fd) => fd,
            None => root_fd.insert(open_root(container_rootfs)?),
        };
        let from = match sys::open_dir_in_root(fd.as_fd(), Path::new(inside)) {
            Ok(from) => from,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => continue,
            Err(e) => return Err(io_err(format!("opening {inside} in the rootfs"))(e)),
        };
        let from = fd_path(&from);
        if is_empty_dir(&from)? {
            continue;
        }
        let view = rootfs
            .unshifted_view(id, source, range)
            .map_err(|e| VolumeError::Sync(e.to_string()))?;
        copy(&from.join("."), view.path())?;
        filled.push(source.clone());
    }
    Ok(filled)
}

fn synced() -> impl Iterator<Item = (&'static str, &'static str)> {
    VOLUMES.iter().copied().filter(|(name, _)| SYNCED.contains(name))
}

fn open_root(root: &Path) -> Result<OwnedFd, VolumeError> {
    fs::File::open(root).map(OwnedFd::from).map_err(io_err(format!("opening {}", root.display())))
}

/// Directory `rel` below the rootfs, resolved inside it (each prefix from the rootfs'
/// root, so a symlink on the way resolves as it would inside); with `create`, made (0755,
/// root's) where missing. A dangling symlink on the way is an error.
fn in_root_dir(
    root_fd: &OwnedFd,
    root: &Path,
    rel: &Path,
    create: bool,
) -> Result<OwnedFd, VolumeError> {
    let open = |prefix: &Path| sys::open_dir_in_root(root_fd.as_fd(), prefix);
    let err = |p: &Path| io_err(format!("opening {} in {}", p.display(), root.display()));
    let mut dir = open(Path::new("/")).map_err(err(Path::new("/")))?;
    let mut prefix = PathBuf::from("/");
    for part in rel.components().filter(|c| matches!(c, std::path::Component::Normal(_))) {
        prefix.push(part);
        dir = match open(&prefix) {
            Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {
                let at = fd_path(&dir).join(part);
                fs::create_dir(&at).map_err(io_err(format!(
                    "creating {} in {} (a symlink leading nowhere?)",
                    prefix.display(),
                    root.display()
                )))?;
                open(&prefix)
            }
            other => other,
        }
        .map_err(err(&prefix))?;
    }
    Ok(dir)
}

/// The path of an open directory for a child process (`/proc/PID/fd/N`: the directory
/// itself, whatever its path).
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd()))
}

fn parent_of(inside: &str) -> Result<&Path, VolumeError> {
    Path::new(inside).parent().ok_or_else(|| VolumeError::Sync(format!("{inside} has no parent")))
}

fn file_name(inside: &str) -> Result<&OsStr, VolumeError> {
    Path::new(inside).file_name().ok_or_else(|| VolumeError::Sync(format!("{inside} has no name")))
}

fn is_empty_dir(dir: &Path) -> Result<bool, VolumeError> {
    let mut rd = fs::read_dir(dir).map_err(io_err(format!("reading {}", dir.display())))?;
    Ok(rd.next().is_none())
}

/// `cp -a FROM TO` (the child does not follow the /proc fd links it is given, they are
/// the directories themselves).
fn copy(from: &Path, to: &Path) -> Result<(), VolumeError> {
    let out = Command::new("cp")
        .arg("-a")
        .arg("--no-target-directory")
        .arg(from)
        .arg(to)
        .output()
        .map_err(io_err("running cp"))?;
    if !out.status.success() {
        return Err(VolumeError::Sync(format!(
            "cp -a {} {}: {}",
            from.display(),
            to.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
