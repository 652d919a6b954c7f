//! Inner engines' data in committed images: the host-backed volumes of [`super`] are
//! copied into the container's layer when it is paused or stopped, and from the image into
//! a fresh volume when a container is created, as Sysbox does.
//!
//! - [`save`] (after `runc pause` and at `delete`: `docker commit` pauses a running
//!   container, and a stopped one was saved at its stop): for each of [`SYNCED`], the
//!   directory (`/var/lib/docker`) in Docker's upper dir, the container's layer that
//!   `docker diff`, `commit` and `export` read, is replaced by a copy of the volume, made
//!   opaque (`trusted.overlay.opaque`) so that an older copy in the image below does not
//!   mix in. The copy is read through an idmapped view of the volume
//!   ([`Rootfs::unshifted_view`]), so it has the container's own ids (root 0, uid 1000
//!   stays 1000) as every other file of the layer. The upper dir is written directly: the
//!   container sees its volume there, never this copy, and going through Docker's overlay
//!   while the container's own overlay shares its upper dir would meet entries that
//!   overlay cached before.
//! - [`seed`] (at `create`, once the rootfs is shifted): a volume that is empty gets a copy
//!   of what the shifted rootfs holds at its place (an image committed so), read through
//!   the container's overlay, where files already show with the range's host ids. Device
//!   nodes but overlay whiteouts are left out of it: host root makes the copy, and an
//!   image must not give the container's root a node of a host device.
//!
//! An inner overlay's whiteouts (character devices 0/0) would be the outer overlay's own
//! in the layer: they are stored there as empty files [`WHITEOUT_PREFIX`] + their name
//! and turned back into whiteouts in the volume. An inner opaque directory's xattr
//! (`user.overlay.opaque`) is copied as it is, but Docker's layer tar does not carry
//! `user.*` xattrs.
//!
//! The cost: each pause and stop copies all of the inner engines' data (images, containers)
//! once more, and the container's layer holds a second copy of it (the inner engine reads
//! only the volume). Copies are made with `cp -a` (owners, modes, hard links, xattrs,
//! device nodes such as the inner overlay's whiteouts). Directories on the way are opened
//! one by one without following symlinks (a `/var/lib -> /etc` the container planted
//! refuses the copy rather than send it to the host).

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{io_err, VolumeError, Volumes, VOLUMES};
use crate::rootfs::{sys, Rootfs};

/// The volumes whose data goes into the committed image (those of the inner container
/// engines; kubelet's pods are not an image's content).
pub const SYNCED: &[&str] = &["docker", "containerd"];

/// Copies each synced volume of container `id` into its layer. Does nothing for a
/// container that is not shifted. Returns the paths written.
pub fn save(volumes: &Volumes, rootfs: &Rootfs, id: &str) -> Result<Vec<PathBuf>, VolumeError> {
    let Some(shifted) = rootfs.recorded(id).map_err(|e| VolumeError::Sync(e.to_string()))? else {
        return Ok(Vec::new());
    };
    let layer = shifted.upper.clone().unwrap_or_else(|| shifted.rootfs.clone());
    let dir = volumes.dir(id)?;
    let mut written = Vec::new();
    for (name, inside) in synced() {
        let source = dir.join(name);
        if !source.is_dir() {
            continue; // not one of this container's volumes (the user mounted their own)
        }
        let rel = Path::new(inside.trim_start_matches('/'));
        let shown = layer.join(rel);
        let parent = open_beneath(&layer, parent_of(rel)?)?;
        let target = fd_path(&parent).join(file_name(rel)?);
        let existing = fs::symlink_metadata(&target);
        if is_empty_dir(&source)? && existing.is_err() {
            continue;
        }
        let view = rootfs
            .unshifted_view(id, &source, &shifted.range)
            .map_err(|e| VolumeError::Sync(e.to_string()))?;
        match existing {
            Ok(m) if m.is_dir() => empty_dir(&target),
            Ok(_) => fs::remove_file(&target),
            Err(_) => Ok(()),
        }
        .map_err(io_err(format!("removing the older copy {}", shown.display())))?;
        copy(&view.path().join("."), &target)?;
        escape_whiteouts(&target)
            .map_err(io_err(format!("escaping the whiteouts in {}", shown.display())))?;
        if shifted.upper.is_some() {
            sys::set_opaque(&target)
                .map_err(io_err(format!("marking {} opaque", shown.display())))?;
        }
        written.push(shown);
    }
    Ok(written)
}

/// Copies into each empty volume among `sources` what the container's shifted rootfs
/// (`shifted_root`, where files show with the range's host ids) holds at its place.
/// Returns the volumes filled.
pub fn seed(shifted_root: &Path, sources: &[PathBuf]) -> Result<Vec<PathBuf>, VolumeError> {
    let mut filled = Vec::new();
    let mut root_fd = None;
    for (name, inside) in synced() {
        let Some(source) = sources.iter().find(|s| s.file_name() == Some(OsStr::new(name))) else {
            continue;
        };
        if !is_empty_dir(source)? {
            continue; // the container's own data, kept across stop and start
        }
        let fd = match &root_fd {
            Some(fd) => fd,
            None => root_fd.insert(open_dir(shifted_root)?),
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
        copy(&from.join("."), source)?;
        // The container has not started: nothing can race the clean-up.
        remove_device_nodes(source)
            .and_then(|()| unescape_whiteouts(source))
            .map_err(io_err(format!("preparing {}", source.display())))?;
        filled.push(source.clone());
    }
    Ok(filled)
}

fn synced() -> impl Iterator<Item = (&'static str, &'static str)> {
    VOLUMES.iter().copied().filter(|(name, _)| SYNCED.contains(name))
}

fn open_dir(dir: &Path) -> Result<OwnedFd, VolumeError> {
    fs::File::open(dir).map(OwnedFd::from).map_err(io_err(format!("opening {}", dir.display())))
}

/// Directory `rel` below `base`, opened one component at a time without following
/// symlinks, made (0755, root's) where missing.
fn open_beneath(base: &Path, rel: &Path) -> Result<OwnedFd, VolumeError> {
    let mut dir = open_dir(base)?;
    let mut at = base.to_path_buf();
    for part in rel.components().filter(|c| matches!(c, std::path::Component::Normal(_))) {
        at.push(part);
        let part = Path::new(part.as_os_str());
        let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        dir = match sys::open_in_root(dir.as_fd(), part, flags) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let path = fd_path(&dir).join(part);
                fs::create_dir(&path).map_err(io_err(format!("creating {}", at.display())))?;
                sys::open_in_root(dir.as_fd(), part, flags)
            }
            other => other,
        }
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOTDIR) {
                VolumeError::Sync(format!("{} is not a directory (a symlink?)", at.display()))
            } else {
                io_err(format!("opening {}", at.display()))(e)
            }
        })?;
    }
    Ok(dir)
}

/// The name an inner overlay's whiteout `NAME` (a character device 0/0) gets in the
/// container's layer, as an empty regular file: there, a whiteout would be one of the
/// outer overlay's own and hide the entry instead of being copied.
pub const WHITEOUT_PREFIX: &str = ".sysvisor-wh.";

/// Replaces each whiteout below `dir` with an empty file `WHITEOUT_PREFIX` + its name
/// (same owner).
fn escape_whiteouts(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = fs::symlink_metadata(entry.path())?;
        if meta.is_dir() {
            escape_whiteouts(&entry.path())?;
        } else if meta.file_type().is_char_device() && meta.rdev() == 0 {
            let mut name = std::ffi::OsString::from(WHITEOUT_PREFIX);
            name.push(entry.file_name());
            let escaped = dir.join(name);
            fs::remove_file(entry.path())?;
            fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&escaped)?;
            std::os::unix::fs::lchown(&escaped, Some(meta.uid()), Some(meta.gid()))?;
        }
    }
    Ok(())
}

/// Turns each empty file `WHITEOUT_PREFIX` + NAME below `dir` back into a whiteout NAME
/// (same owner).
fn unescape_whiteouts(dir: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = fs::symlink_metadata(entry.path())?;
        let file_name = entry.file_name();
        let name = file_name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes());
        if meta.is_dir() {
            unescape_whiteouts(&entry.path())?;
        } else if let Some(name) =
            name.filter(|n| !n.is_empty() && meta.is_file() && meta.len() == 0)
        {
            let whiteout = dir.join(OsStr::from_bytes(name));
            fs::remove_file(entry.path())?;
            sys::mknod_whiteout(&whiteout)?;
            std::os::unix::fs::lchown(&whiteout, Some(meta.uid()), Some(meta.gid()))?;
        }
    }
    Ok(())
}

/// Removes the device nodes below `dir` but overlay whiteouts (character devices 0/0): the
/// copy was made by host root, which can create nodes the container's root could not,
/// and the volume is not mounted `nodev` (a node of the host's disk there would be
/// readable inside).
fn remove_device_nodes(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = fs::symlink_metadata(entry.path())?;
        let kind = meta.file_type();
        if kind.is_dir() {
            remove_device_nodes(&entry.path())?;
        } else if kind.is_block_device() || (kind.is_char_device() && meta.rdev() != 0) {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Removes what `dir` holds (not following symlinks), keeping `dir` itself.
fn empty_dir(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// The path of an open directory for a child process (`/proc/PID/fd/N`: the directory
/// itself, whatever its path).
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd()))
}

fn parent_of(rel: &Path) -> Result<&Path, VolumeError> {
    rel.parent().ok_or_else(|| VolumeError::Sync(format!("{} has no parent", rel.display())))
}

fn file_name(rel: &Path) -> Result<&OsStr, VolumeError> {
    rel.file_name().ok_or_else(|| VolumeError::Sync(format!("{} has no name", rel.display())))
}

fn is_empty_dir(dir: &Path) -> Result<bool, VolumeError> {
    let mut rd = fs::read_dir(dir).map_err(io_err(format!("reading {}", dir.display())))?;
    Ok(rd.next().is_none())
}

/// `cp -a FROM TO`; with FROM ending in `/.` and TO a directory, FROM's content and
/// attributes go into TO.
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
