//! The id-shifted rootfs, without copying anything; the container's writes land in
//! Docker's own container layer with the ids they have inside (see docs/rootfs.md).
//!
//! runc 1.1.5 runs the container in its own user namespace (container uid 0 = host uid
//! BASE) but cannot make idmapped mounts, so the rootfs is prepared here before the hand
//! over:
//!
//! 1. The overlay mounted at `rootfs` (Docker's `.../overlay2/<id>/merged`) is looked up in
//!    /proc/self/mountinfo: its upper dir (Docker's container layer), work dir and lower
//!    dirs.
//! 2. Each lower dir gets an idmapped clone (open_tree(OPEN_TREE_CLONE) + mount_setattr(
//!    MOUNT_ATTR_IDMAP) with a user namespace mapping `0 BASE 65536`; under Docker's
//!    `userns-remap`, `DISK BASE 65536`, DISK being Docker's remapped root, [`DiskRoot`]) at
//!    `/run/sysvisor/rootfs/<id>/lower/<n>`: host uid 0 appears as BASE there. The
//!    directory holding Docker's upper and work dirs (`overlay2/<id>`) gets one at
//!    `/run/sysvisor/rootfs/<id>/layer`: what is written there as BASE + x is stored as x.
//! 3. A new overlay is mounted at `/run/sysvisor/rootfs/<id>/root` ([`shifted_root`]) over
//!    those lowers, with Docker's upper dir (through `layer`) as its upper and a work dir
//!    of its own inside Docker's. An overlay cannot be idmapped itself, and acts on its
//!    layers with its creator's credentials: it is created with filesystem ids BASE
//!    ([`sys::with_creator_ids`]), which the idmapped upper maps to 0 (host root has no
//!    mapping there: EOVERFLOW).
//! 4. Docker's overlay stays alone at `rootfs`: `docker cp` writes there as for runc.
//!    [`Rootfs::refresh_engine_mount`] mounts it afresh (at `pause`), since each of the two
//!    overlays keeps the entries it looked up.
//!
//! A rootfs that is not an overlay mount (a plain directory, as in a hand-made bundle) is
//! idmapped itself at `root` and written directly. Nothing is kept outside Docker's layer
//! (`docker stop` + `start` finds the files there); an upper layer kept under
//! `/var/lib/sysvisor/rootfs/<id>` by an older version is shown as the top lower layer,
//! and [`forget`] removes it.
//!
//! runc with a user namespace resolves `root.path` as the container's root (host uid and
//! gid BASE), which needs search permission on every ancestor directory: Docker's data root
//! (/var/lib/docker, mode 0710 root:root) refuses it ("error preparing rootfs: ...
//! permission denied"). [`shifted_root`] lies below directories that allow it (the
//! container's own directory is 0710 root:BASE), so the spec's `root.path` should be set
//! to it.
//!
//! Inside, image files belong to root and root can change them; on the host, in Docker's
//! layer, what the container's root wrote belongs to 0, its uid 1000's files to 1000.
//!
//! What was set up is recorded in `/run/sysvisor/rootfs/<id>/state.json`, but [`unshift`]
//! finds our mounts in /proc/self/mountinfo (every mount below the container's run
//! directory, every overlay whose upper dir is the container's), so it also cleans up
//! after a crash at any point. Directories are removed with rmdir/unlink of known names
//! only, never recursively, so nothing still mounted can lose files.

pub mod mountinfo;
pub(crate) mod sys;

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::idrange::{valid_container_id, DiskRoot, IdRange};

/// Where the shifted mounts of each container go (tmpfs: gone at reboot, as the mounts).
pub const SYSTEM_RUN_DIR: &str = "/run/sysvisor/rootfs";
/// Where each container's persistent upper layer lives.
pub const SYSTEM_LIB_DIR: &str = "/var/lib/sysvisor/rootfs";

const STATE_FILE: &str = "state.json";
/// Our overlay's work dir, inside Docker's work dir of the container's layer (removed with
/// the layer).
const OUR_WORK_DIR: &str = "sysvisor";
const STATE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The kernel (or the filesystem below a path) lacks a feature the shift needs.
    #[error("{0}")]
    Unsupported(String),
    #[error("invalid container id {0:?}: expected 1-1024 characters of [A-Za-z0-9_+.-]")]
    InvalidContainerId(String),
    #[error("cannot shift rootfs {}: {reason}", path.display())]
    Layout { path: PathBuf, reason: String },
    #[error(
        "persistent upper layer {} belongs to {uid}:{gid}, not to the container's range \
         ({range}): its files would show the wrong owners; `forget` the container's layer \
         or give it back its range",
        upper.display()
    )]
    RangeMismatch { upper: PathBuf, uid: u32, gid: u32, range: IdRange },
    #[error("{} is still mounted or busy: {detail}", path.display())]
    Busy { path: PathBuf, detail: String },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> RootfsError {
    let context = context.into();
    move |source| RootfsError::Io { context, source }
}

/// The host's layout: [`SYSTEM_RUN_DIR`] and [`SYSTEM_LIB_DIR`].
pub fn shift(
    container_id: &str,
    rootfs: &Path,
    range: &IdRange,
    disk: DiskRoot,
) -> Result<(), RootfsError> {
    Rootfs::system().shift_from(container_id, rootfs, range, disk)
}

/// See [`Rootfs::unshift`].
pub fn unshift(container_id: &str) -> Result<(), RootfsError> {
    Rootfs::system().unshift(container_id)
}

/// See [`Rootfs::forget`].
pub fn forget(container_id: &str) -> Result<(), RootfsError> {
    Rootfs::system().forget(container_id)
}

/// See [`Rootfs::shift_bind_source`].
pub fn shift_bind_source(
    container_id: &str,
    source: &Path,
    range: &IdRange,
) -> Result<PathBuf, RootfsError> {
    Rootfs::system().shift_bind_source(container_id, source, range)
}

/// See [`Rootfs::shifted_root`].
pub fn shifted_root(container_id: &str) -> PathBuf {
    Rootfs::system().shifted_root(container_id)
}

/// See [`Rootfs::persisted`].
pub fn persisted() -> Result<Vec<String>, RootfsError> {
    Rootfs::system().persisted()
}

/// The rootfs shifter over a run directory (mounts, state) and a lib directory (persistent
/// upper layers). Both must be absolute.
#[derive(Debug, Clone)]
pub struct Rootfs {
    run_dir: PathBuf,
    lib_dir: PathBuf,
}

/// Every path of one container.
struct Paths {
    /// `run/<id>`, 0710 root:BASE.
    dir: PathBuf,
    state: PathBuf,
    /// `run/<id>/root`: our overlay.
    root: PathBuf,
    /// `run/<id>/lower`, 0700: idmapped layer clones `lower/<n>`.
    lower: PathBuf,
    /// `run/<id>/layer`, 0700: idmapped clone of the directory holding Docker's upper and
    /// work dirs.
    layer: PathBuf,
    /// `run/<id>/bind`, 0710 root:BASE: idmapped bind sources `bind/<n>`.
    bind: PathBuf,
    /// `run/<id>/view`, 0700: idmapped clones of volumes with the container's own ids.
    view: PathBuf,
    /// `lib/<id>`, 0700: only made by older versions, which kept their own upper layer.
    persist: PathBuf,
    /// `lib/<id>/upper`: the upper layer an older version kept.
    upper: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    version: u32,
    range: Option<IdRange>,
    /// Docker's rootfs (its overlay's mount point) that was shifted.
    rootfs: Option<PathBuf>,
    /// Sources of `lower/<n>`, top-most first.
    layers: Vec<PathBuf>,
    /// Docker's upper dir (our overlay's upper, through `layer`).
    #[serde(default)]
    upper: Option<PathBuf>,
    /// Docker's work dir.
    #[serde(default)]
    work: Option<PathBuf>,
    binds: Vec<Bind>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Bind {
    source: PathBuf,
    target: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The rootfs overlay and its lowers; bind clones stay.
    Rootfs,
    /// Everything of the container.
    All,
}

impl Rootfs {
    pub fn system() -> Rootfs {
        Rootfs::with_dirs(Path::new(SYSTEM_RUN_DIR), Path::new(SYSTEM_LIB_DIR))
    }

    pub fn with_dirs(run_dir: &Path, lib_dir: &Path) -> Rootfs {
        Rootfs { run_dir: run_dir.to_path_buf(), lib_dir: lib_dir.to_path_buf() }
    }

    /// Where the shifted rootfs of `container_id` is mounted while it is shifted: the path
    /// to give runc as `root.path` (reachable by the container's root, unlike Docker's).
    pub fn shifted_root(&self, container_id: &str) -> PathBuf {
        self.run_dir.join(container_id).join("root")
    }

    fn paths(&self, id: &str) -> Result<Paths, RootfsError> {
        if !valid_container_id(id) {
            return Err(RootfsError::InvalidContainerId(id.to_string()));
        }
        for d in [&self.run_dir, &self.lib_dir] {
            if !d.is_absolute() {
                return Err(RootfsError::Layout {
                    path: d.clone(),
                    reason: "sysvisor's own directories must be absolute paths".into(),
                });
            }
        }
        let dir = self.run_dir.join(id);
        let persist = self.lib_dir.join(id);
        Ok(Paths {
            state: dir.join(STATE_FILE),
            root: dir.join("root"),
            lower: dir.join("lower"),
            layer: dir.join("layer"),
            view: dir.join("view"),
            bind: dir.join("bind"),
            upper: persist.join("upper"),
            dir,
            persist,
        })
    }

    /// Mounts the id-shifted view of `rootfs` for `range` at [`shifted_root`](Self::shifted_root)
    /// and over `rootfs`. Shifting an already shifted container redoes it (after a crash,
    /// or a repeated create); bind clones made by
    /// [`shift_bind_source`](Self::shift_bind_source) stay.
    pub fn shift(
        &self,
        container_id: &str,
        rootfs: &Path,
        range: &IdRange,
    ) -> Result<(), RootfsError> {
        self.shift_from(container_id, rootfs, range, DiskRoot::HOST)
    }

    /// As [`shift`](Self::shift), for layers whose files the `disk` ids own for the
    /// container's root (Docker's remapped root under `userns-remap`): on-disk id
    /// `disk + n` shows as the range's `base + n`.
    pub fn shift_from(
        &self,
        container_id: &str,
        rootfs: &Path,
        range: &IdRange,
        disk: DiskRoot,
    ) -> Result<(), RootfsError> {
        let p = self.paths(container_id)?;
        let rootfs = fs::canonicalize(rootfs)
            .map_err(io_err(format!("resolving rootfs {}", rootfs.display())))?;
        if !rootfs.is_dir() {
            return Err(RootfsError::Layout { path: rootfs, reason: "not a directory".into() });
        }
        if rootfs.starts_with(&self.run_dir) || rootfs.starts_with(&self.lib_dir) {
            return Err(RootfsError::Layout {
                path: rootfs,
                reason: "it lies in sysvisor's own directories".into(),
            });
        }
        self.teardown(&p, Scope::Rootfs)?;
        remove_rootfs_dirs(&p)?;

        let mounts = mountinfo::read().map_err(io_err("reading /proc/self/mountinfo"))?;
        let layout = layout_of(&mounts, &rootfs, &p)?;
        self.prepare_run_dir(&p, range)?;
        let legacy = legacy_upper(&p, range)?;

        let mut st = load_state(&p)?;
        st.range = Some(*range);
        st.rootfs = Some(rootfs.clone());
        st.layers = match &layout {
            Layout::Overlay { lowers, .. } => lowers.clone(),
            Layout::Plain => vec![rootfs.clone()],
        };
        (st.upper, st.work) = match &layout {
            Layout::Overlay { upper, work, .. } => (Some(upper.clone()), Some(work.clone())),
            Layout::Plain => (None, None),
        };
        save_state(&p, &st)?;

        let result =
            self.mount_rootfs(&p, &rootfs, &layout, legacy.as_deref(), range, disk, &mounts);
        if result.is_err() {
            let _ = self.teardown(&p, Scope::Rootfs);
            let _ = remove_rootfs_dirs(&p);
            st.rootfs = None;
            (st.upper, st.work) = (None, None);
            st.layers.clear();
            let _ = save_state(&p, &st);
        }
        result
    }

    // The inputs of one shift, each needed: bundling them would only rename them.
    #[allow(clippy::too_many_arguments)]
    fn mount_rootfs(
        &self,
        p: &Paths,
        rootfs: &Path,
        layout: &Layout,
        legacy: Option<&Path>,
        range: &IdRange,
        disk: DiskRoot,
        mounts: &[mountinfo::Mount],
    ) -> Result<(), RootfsError> {
        let userns = userns(range, disk)?;
        mkdir(&p.root, 0o755)?;
        let Layout::Overlay { upper, work, lowers } = layout else {
            // Not an overlay (a hand-made bundle): the directory itself, idmapped; what the
            // container writes lands there with its own ids, as with runc.
            idmapped_clone(rootfs, &p.root, &userns, false, mounts)?;
            return make_nodev(&p.root);
        };
        // Docker's upper and work dirs must stay on one mount for the overlay: their
        // common parent (`overlay2/<id>`) is cloned, idmapped.
        let home = upper.parent().filter(|h| Some(*h) == work.parent()).ok_or_else(|| {
            RootfsError::Layout {
                path: rootfs.to_path_buf(),
                reason: format!(
                    "its upper dir {} and work dir {} are not in one directory",
                    upper.display(),
                    work.display()
                ),
            }
        })?;
        mkdir(&p.layer, 0o700)?;
        idmapped_clone(home, &p.layer, &userns, false, mounts)?;
        mkdir(&p.lower, 0o700)?;
        let mut targets = Vec::with_capacity(lowers.len() + 1);
        // An upper layer kept by an older sysvisor-runc holds files the container wrote
        // then, owned by the range on disk: shown as they are, above the image.
        targets.extend(legacy.map(Path::to_path_buf));
        for (i, layer) in lowers.iter().enumerate() {
            let target = p.lower.join(i.to_string());
            mkdir(&target, 0o700)?;
            idmapped_clone(layer, &target, &userns, false, mounts)?;
            targets.push(target);
        }
        // A work dir of our own, inside Docker's: mounting an overlay empties its work dir's
        // `work`, which would pull it from under Docker's overlay (its copy-ups, as for
        // `docker cp` into the running container, would fail with ENOENT).
        // Owned by the disk's root (Docker's remapped root under userns-remap), which the
        // idmapped clone shows as the container's: the overlay's creator must own it, or
        // the overlay falls back to read-only.
        let our_work_dir = work.join(OUR_WORK_DIR);
        mkdir(&our_work_dir, 0o700)?;
        std::os::unix::fs::chown(&our_work_dir, Some(disk.uid), Some(disk.gid))
            .map_err(io_err(format!("chown {}", our_work_dir.display())))?;
        let name = |d: &Path| p.layer.join(d.file_name().unwrap_or_default());
        let our_work = name(work).join(OUR_WORK_DIR);
        sys::with_creator_ids(range.uid_base, range.gid_base, || {
            mount_overlay(&targets, &name(upper), &our_work, &p.root)
        })
        .map_err(io_err("taking the container's root ids to mount its overlay"))??;
        make_nodev(&p.root)
    }

    /// Unmounts everything [`shift`](Self::shift) and
    /// [`shift_bind_source`](Self::shift_bind_source) mounted for `container_id` (the
    /// overlay over the rootfs, the idmapped clones; MNT_DETACH) and removes its run
    /// directory. The persistent upper layer stays. Idempotent; works after a crash.
    pub fn unshift(&self, container_id: &str) -> Result<(), RootfsError> {
        let p = self.paths(container_id)?;
        self.teardown(&p, Scope::All)?;
        remove_run_dir(&p)
    }

    /// The container is gone for good: unshifts it and removes its persistent upper layer.
    pub fn forget(&self, container_id: &str) -> Result<(), RootfsError> {
        let p = self.paths(container_id)?;
        self.unshift(container_id)?;
        let mounts = mountinfo::read().map_err(io_err("reading /proc/self/mountinfo"))?;
        if let Some(m) =
            mounts.iter().find(|m| m.mount_point.starts_with(&p.persist) || is_our_overlay(m, &p))
        {
            return Err(RootfsError::Busy {
                path: p.persist,
                detail: format!("mount {} at {}", m.id, m.mount_point.display()),
            });
        }
        match fs::remove_dir_all(&p.persist) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(io_err(format!("removing {}", p.persist.display()))(e))
            }
            _ => Ok(()),
        }
    }

    /// An idmapped clone of `source` (a file or a directory, with its submounts) for the
    /// container with `range`, for the spec to bind instead of `source`: host uid 0 shows
    /// as the container's root, and what the container's root writes is owned by host uid
    /// 0 on disk (so it is made only for the binds the user asks to shift,
    /// [`crate::binds`]). The same source again gives the same clone. The clone goes away with
    /// [`unshift`](Self::unshift). A source on a filesystem without idmapped-mount support
    /// gives [`RootfsError::Unsupported`]; the caller may then keep binding the original.
    pub fn shift_bind_source(
        &self,
        container_id: &str,
        source: &Path,
        range: &IdRange,
    ) -> Result<PathBuf, RootfsError> {
        let p = self.paths(container_id)?;
        let source = fs::canonicalize(source)
            .map_err(io_err(format!("resolving bind source {}", source.display())))?;
        let meta =
            fs::metadata(&source).map_err(io_err(format!("reading {}", source.display())))?;
        self.prepare_run_dir(&p, range)?;
        mkdir(&p.bind, 0o710)?;
        chown(&p.bind, 0, range.gid_base)?;

        let mut st = load_state(&p)?;
        let mounts = mountinfo::read().map_err(io_err("reading /proc/self/mountinfo"))?;
        if let Some(i) = st.binds.iter().position(|b| b.source == source) {
            let target = st.binds[i].target.clone();
            if st.range == Some(*range) && mountinfo::top_at(&mounts, &target).is_some() {
                return Ok(target);
            }
            // Stale or made for another range: unmount and make it afresh.
            while mountinfo::top_at(&mountinfo::read().unwrap_or_default(), &target).is_some() {
                sys::umount_detach(&target)
                    .map_err(io_err(format!("unmounting {}", target.display())))?;
            }
            remove_placeholder(&target)?;
            st.binds.remove(i);
        }
        st.range = Some(*range);
        let n = (0..)
            .find(|n: &usize| {
                let t = p.bind.join(n.to_string());
                !st.binds.iter().any(|b| b.target == t) && fs::symlink_metadata(&t).is_err()
            })
            .expect("a free index");
        let target = p.bind.join(n.to_string());
        if meta.is_dir() {
            mkdir(&target, 0o755)?;
        } else {
            fs::File::create(&target).map_err(io_err(format!("creating {}", target.display())))?;
        }
        // A bind source belongs to the host: its root is the container's root.
        let result = userns(range, DiskRoot::HOST)
            .and_then(|ns| idmapped_clone(&source, &target, &ns, meta.is_dir(), &mounts));
        if let Err(e) = result {
            let _ = remove_placeholder(&target);
            return Err(e);
        }
        st.binds.push(Bind { source, target: target.clone() });
        save_state(&p, &st)?;
        Ok(target)
    }

    /// What [`shift`](Self::shift) last recorded for `container_id` (`None` when it is not
    /// shifted).
    pub fn recorded(&self, container_id: &str) -> Result<Option<Shifted>, RootfsError> {
        let p = self.paths(container_id)?;
        let st = load_state(&p)?;
        Ok(st.rootfs.zip(st.range).map(|(rootfs, range)| Shifted {
            rootfs,
            range,
            upper: st.upper,
        }))
    }

    /// Mounts Docker's overlay of `container_id` afresh at its place (same layers), so that
    /// what Docker reads there next (`docker commit`, `diff`, `export`, `cp` from the
    /// container) shows what the container wrote through its own overlay: two overlays
    /// over one upper dir each keep the directory entries they looked up, and Docker's
    /// looked at the rootfs (`/etc`, ...) before the container changed it. Returns whether
    /// it was remounted (`false`: not an overlay rootfs, or Docker's mount is not there).
    pub fn refresh_engine_mount(&self, container_id: &str) -> Result<bool, RootfsError> {
        let p = self.paths(container_id)?;
        let st = load_state(&p)?;
        let (Some(rootfs), Some(upper), Some(work)) = (st.rootfs, st.upper, st.work) else {
            return Ok(false);
        };
        let mounts = mountinfo::read().map_err(io_err("reading /proc/self/mountinfo"))?;
        match layout_of(&mounts, &rootfs, &p) {
            Ok(Layout::Overlay { upper: u, .. }) if u == upper => {}
            _ => return Ok(false),
        }
        // Our overlay keeps its own work dir: the fresh mount may empty Docker's.
        sys::umount_detach(&rootfs)
            .map_err(io_err(format!("unmounting Docker's overlay at {}", rootfs.display())))?;
        mount_overlay(&st.layers, &upper, &work, &rootfs)?;
        Ok(true)
    }

    /// Mounts an idmapped clone of `source` (a directory whose files the container's range
    /// owns on disk, such as a volume of [`crate::volumes`]) that shows them with the
    /// container's own ids (host BASE + x appears as x) and stores what is written as id x
    /// with BASE + x. It lies in the container's run directory and is unmounted when the
    /// returned guard drops (or by [`unshift`](Self::unshift)).
    pub fn unshifted_view(
        &self,
        container_id: &str,
        source: &Path,
        range: &IdRange,
    ) -> Result<View, RootfsError> {
        let p = self.paths(container_id)?;
        self.prepare_run_dir(&p, range)?;
        mkdir(&p.view, 0o700)?;
        let name = source.file_name().ok_or_else(|| RootfsError::Layout {
            path: source.to_path_buf(),
            reason: "a view needs a named directory".into(),
        })?;
        let target = p.view.join(name);
        if mountinfo::top_at(&mountinfo::read().unwrap_or_default(), &target).is_some() {
            sys::umount_detach(&target)
                .map_err(io_err(format!("unmounting {}", target.display())))?;
        }
        mkdir(&target, 0o700)?;
        let userns = sys::unshift_userns_fd(range)
            .map_err(io_err(format!("creating a user namespace for {range}")))?;
        let mounts = mountinfo::read().map_err(io_err("reading /proc/self/mountinfo"))?;
        if let Err(e) = idmapped_clone(source, &target, &userns, false, &mounts) {
            let _ = rmdir(&target);
            return Err(e);
        }
        Ok(View { path: target })
    }

    /// Ids of the containers with a persistent upper layer (for clean-up: those without an
    /// id range any more can be [`forget`](Self::forget)-ten).
    pub fn persisted(&self) -> Result<Vec<String>, RootfsError> {
        let rd = match fs::read_dir(&self.lib_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(format!("reading {}", self.lib_dir.display()))(e)),
        };
        let mut ids: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| valid_container_id(n))
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn prepare_run_dir(&self, p: &Paths, range: &IdRange) -> Result<(), RootfsError> {
        // runc resolves the shifted root as the container's root: every ancestor must let
        // others search it (x only; nothing can be listed). The parent (/run/sysvisor,
        // shared with the sysvisor-fs daemon, which makes it 0700 for its 0600 socket)
        // gets o+x; an ancestor above it that refuses is an error. The container's own
        // directory lets only its group (BASE) in.
        mkdir_all(&self.run_dir, 0o711)?;
        for (i, dir) in self.run_dir.ancestors().skip(1).enumerate() {
            let meta = fs::metadata(dir).map_err(io_err(format!("reading {}", dir.display())))?;
            let mode = meta.mode() & 0o7777;
            if mode & 0o001 != 0 {
                continue;
            }
            if i > 0 {
                return Err(RootfsError::Layout {
                    path: self.run_dir.clone(),
                    reason: format!(
                        "{} (mode {mode:o}) is not searchable by others, so runc, acting as the \
                         container's root, could not reach the shifted rootfs below it",
                        dir.display()
                    ),
                });
            }
            set_mode(dir, mode | 0o001)?;
        }
        mkdir(&p.dir, 0o710)?;
        chown(&p.dir, 0, range.gid_base)?;
        set_mode(&p.dir, 0o710)
    }

    /// Unmounts the container's mounts of `scope`, top-most and deepest first, until none
    /// is left.
    fn teardown(&self, p: &Paths, scope: Scope) -> Result<(), RootfsError> {
        let mut last_err: Option<String> = None;
        for _ in 0..64 {
            let mounts = mountinfo::read().map_err(io_err("reading /proc/self/mountinfo"))?;
            let mut ours: Vec<&mountinfo::Mount> = mounts
                .iter()
                .filter(|m| {
                    let under = m.mount_point.starts_with(&p.dir)
                        && (scope == Scope::All || !m.mount_point.starts_with(&p.bind));
                    under || is_our_overlay(m, p)
                })
                .collect();
            if ours.is_empty() {
                return Ok(());
            }
            ours.sort_by_key(|m| std::cmp::Reverse(m.mount_point.components().count()));
            let mut progressed = false;
            let mut done: Vec<&Path> = Vec::new();
            for m in ours {
                if done.contains(&m.mount_point.as_path()) {
                    continue;
                }
                done.push(&m.mount_point);
                match mountinfo::top_at(&mounts, &m.mount_point) {
                    Some(top) if top.id == m.id => {}
                    Some(top) => {
                        last_err = Some(format!(
                            "mount {} ({}) sits on top of ours at {}",
                            top.id,
                            top.fstype,
                            m.mount_point.display()
                        ));
                        continue;
                    }
                    None => continue,
                }
                match sys::umount_detach(&m.mount_point) {
                    Ok(()) => progressed = true,
                    Err(e) => last_err = Some(format!("umount {}: {e}", m.mount_point.display())),
                }
            }
            if !progressed {
                break;
            }
        }
        Err(RootfsError::Busy {
            path: p.dir.clone(),
            detail: last_err.unwrap_or_else(|| "mounts remain".into()),
        })
    }
}

/// A shifted container as [`Rootfs::recorded`] tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shifted {
    /// Docker's rootfs (its overlay's mount point, or a plain directory).
    pub rootfs: PathBuf,
    pub range: IdRange,
    /// Docker's upper dir, where the container's writes land (`None`: a plain directory
    /// rootfs, written directly).
    pub upper: Option<PathBuf>,
}

/// A mount made by [`Rootfs::unshifted_view`]: unmounted (and its mount point removed)
/// when dropped.
#[derive(Debug)]
pub struct View {
    path: PathBuf,
}

impl View {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for View {
    fn drop(&mut self) {
        // Failure leaves the mount for `unshift`, which finds it below the run dir.
        if sys::umount_detach(&self.path).is_ok() {
            let _ = rmdir(&self.path);
        }
    }
}

/// Device nodes an image carries must not open the host's devices for the container's
/// root (runc mounts the container's own /dev).
fn make_nodev(root: &Path) -> Result<(), RootfsError> {
    sys::add_mount_attrs(root, sys::MOUNT_ATTR_NODEV)
        .map_err(io_err(format!("making {} nodev", root.display())))
}

fn is_our_overlay(m: &mountinfo::Mount, p: &Paths) -> bool {
    m.fstype == "overlay"
        && mountinfo::overlay(&m.super_opts)
            .ok()
            .and_then(|o| o.upper)
            .is_some_and(|u| u == p.upper)
}

/// What is mounted at a container's rootfs.
#[derive(Debug, PartialEq, Eq)]
enum Layout {
    /// Docker's overlay: its upper and work dirs, and its lower dirs top-most first.
    Overlay { upper: PathBuf, work: PathBuf, lowers: Vec<PathBuf> },
    /// A plain directory (a hand-made bundle).
    Plain,
}

/// How `rootfs` is made.
fn layout_of(mounts: &[mountinfo::Mount], rootfs: &Path, p: &Paths) -> Result<Layout, RootfsError> {
    let layout = |reason: String| RootfsError::Layout { path: rootfs.to_path_buf(), reason };
    let Some(top) = mountinfo::top_at(mounts, rootfs).filter(|m| m.fstype == "overlay") else {
        return Ok(Layout::Plain);
    };
    if top.root != Path::new("/") {
        return Err(layout(format!(
            "it is a bind mount of {} inside an overlay, not an overlay's root",
            top.root.display()
        )));
    }
    let o = mountinfo::overlay(&top.super_opts).map_err(layout)?;
    if o.upper.as_deref() == Some(p.upper.as_path()) || top.mount_point.starts_with(&p.dir) {
        return Err(layout("our own overlay is still mounted there".into()));
    }
    // Docker mounts with paths relative to its overlay2 home (`<home>/<id>/merged`) when
    // the absolute ones would not fit in a page.
    let home = rootfs.parent().and_then(Path::parent).unwrap_or(Path::new("/"));
    let resolve = |l: &PathBuf| {
        let l = if l.is_absolute() { l.clone() } else { home.join(l) };
        let c = fs::canonicalize(&l)
            .map_err(|e| layout(format!("overlay layer {}: {e}", l.display())))?;
        if !c.is_dir() {
            return Err(layout(format!("overlay layer {} is not a directory", c.display())));
        }
        Ok(c)
    };
    let (Some(upper), Some(work)) = (&o.upper, &o.work) else {
        return Err(layout("a read-only overlay (no upper dir): nothing could be written".into()));
    };
    Ok(Layout::Overlay {
        upper: resolve(upper)?,
        work: resolve(work)?,
        lowers: o.lowers.iter().map(resolve).collect::<Result<_, _>>()?,
    })
}

/// The upper layer an older sysvisor-runc kept for the container under the lib dir, if
/// any; it must belong to the container's range.
fn legacy_upper(p: &Paths, range: &IdRange) -> Result<Option<PathBuf>, RootfsError> {
    match fs::symlink_metadata(&p.upper) {
        Ok(m) if m.is_dir() && m.uid() == range.uid_base && m.gid() == range.gid_base => {
            Ok(Some(p.upper.clone()))
        }
        Ok(m) => Err(RootfsError::RangeMismatch {
            upper: p.upper.clone(),
            uid: m.uid(),
            gid: m.gid(),
            range: *range,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(format!("reading {}", p.upper.display()))(e)),
    }
}

fn userns(range: &IdRange, disk: DiskRoot) -> Result<OwnedFd, RootfsError> {
    if range.count == 0 {
        return Err(RootfsError::Layout { path: PathBuf::new(), reason: "empty id range".into() });
    }
    sys::userns_fd(range, disk).map_err(|e| {
        if e.kind() == io::ErrorKind::Unsupported {
            RootfsError::Unsupported(e.to_string())
        } else {
            io_err(format!("creating a user namespace for {range}"))(e)
        }
    })
}

/// Clones `source` into a detached mount, idmaps it with `userns` and attaches it at
/// `target`.
fn idmapped_clone(
    source: &Path,
    target: &Path,
    userns: &OwnedFd,
    recursive: bool,
    mounts: &[mountinfo::Mount],
) -> Result<(), RootfsError> {
    let mnt = sys::open_tree_clone(source, recursive).map_err(|e| {
        if sys::is_errno(&e, libc::ENOSYS) {
            RootfsError::Unsupported(format!(
                "kernel lacks the new mount API (open_tree: ENOSYS; Linux 5.2+ needed, 5.19+ \
                 for overlays over idmapped layers) at {}",
                source.display()
            ))
        } else {
            io_err(format!("open_tree {}", source.display()))(e)
        }
    })?;
    sys::set_idmap(mnt.as_fd(), userns.as_fd(), recursive).map_err(|e| {
        let n = e.raw_os_error().unwrap_or(0);
        if [libc::EINVAL, libc::ENOSYS, libc::EOPNOTSUPP, libc::EPERM].contains(&n) {
            RootfsError::Unsupported(format!(
                "kernel lacks idmapped mounts (mount_setattr MOUNT_ATTR_IDMAP: {}) on {} ({}{})",
                sys::errno_name(&e),
                mountinfo::fstype_of(mounts, source),
                source.display(),
                if recursive { " or a mount below it" } else { "" }
            ))
        } else {
            io_err(format!("idmapping {}", source.display()))(e)
        }
    })?;
    sys::move_mount_to(mnt.as_fd(), target).map_err(io_err(format!(
        "attaching the idmapped clone of {} at {}",
        source.display(),
        target.display()
    )))
}

/// Mounts an overlay at `target`. Prefers the new mount API with one `lowerdir+` per layer
/// (Linux 6.8+; no limit on the layer count); falls back to mount(2) with the classic
/// `lowerdir=a:b` string (one page at most).
fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), RootfsError> {
    mount_overlay_with(lowers, upper, work, target, true)
}

fn mount_overlay_with(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    new_api: bool,
) -> Result<(), RootfsError> {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    // fsconfig takes strings of up to 255 bytes.
    let fits = new_api
        && lowers
            .iter()
            .map(PathBuf::as_path)
            .chain([upper, work])
            .all(|p| p.as_os_str().len() < 256);
    let ctx = match sys::FsContext::open("overlay") {
        Ok(ctx) => Some(ctx),
        Err(e) if sys::is_errno(&e, libc::ENODEV) => {
            return Err(RootfsError::Unsupported(
                "kernel lacks overlayfs (fsopen overlay: ENODEV)".into(),
            ))
        }
        Err(e) if sys::is_errno(&e, libc::ENOSYS) => None,
        Err(e) => return Err(io_err("fsopen overlay")(e)),
    };
    if let Some(ctx) = ctx.filter(|_| fits) {
        match ctx.set_string("lowerdir+", &s(&lowers[0])) {
            Err(e) if sys::is_errno(&e, libc::EINVAL) => {} // no lowerdir+: fall back
            Err(e) => {
                return Err(io_err(format!(
                    "overlay lowerdir+ {}: {}",
                    lowers[0].display(),
                    ctx.log()
                ))(e))
            }
            Ok(()) => {
                let set = |k: &str, v: &Path| {
                    ctx.set_string(k, &s(v)).map_err(io_err(format!(
                        "overlay {k} {}: {}",
                        v.display(),
                        ctx.log()
                    )))
                };
                for l in &lowers[1..] {
                    set("lowerdir+", l)?;
                }
                set("upperdir", upper)?;
                set("workdir", work)?;
                // Docker's upper dir is one of our lowers: without index the kernel only
                // warns that it is in use by another overlay.
                let _ = ctx.set_string("index", "off");
                let mnt = ctx.create_and_mount().map_err(|e| overlay_error(e, &ctx.log()))?;
                return sys::move_mount_to(mnt.as_fd(), target)
                    .map_err(io_err(format!("attaching the overlay at {}", target.display())));
            }
        }
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={},index=off",
        lowers.iter().map(|l| s(l)).collect::<Vec<_>>().join(":"),
        s(upper),
        s(work)
    );
    if data.len() >= 4096 {
        return Err(RootfsError::Unsupported(format!(
            "kernel lacks the overlay option lowerdir+ (Linux 6.8+), and the {} layers do not \
             fit in mount(2)'s one-page option string",
            lowers.len()
        )));
    }
    sys::mount_overlay_legacy(target, &data).map_err(|e| overlay_error(e, ""))
}

fn overlay_error(e: io::Error, log: &str) -> RootfsError {
    let log = if log.is_empty() { String::new() } else { format!(" ({log})") };
    if sys::is_errno(&e, libc::EINVAL) {
        RootfsError::Unsupported(format!(
            "kernel refuses an overlay over idmapped lower layers (overlay mount: EINVAL{log}; \
             Linux 5.19+ needed)"
        ))
    } else {
        RootfsError::Io { context: format!("mounting the shifted overlay{log}"), source: e }
    }
}

fn load_state(p: &Paths) -> Result<State, RootfsError> {
    match fs::read(&p.state) {
        Ok(b) => {
            let st: State = serde_json::from_slice(&b).map_err(|e| RootfsError::Layout {
                path: p.state.clone(),
                reason: format!("corrupt state file: {e}"),
            })?;
            Ok(st)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Ok(State { version: STATE_VERSION, ..State::default() })
        }
        Err(e) => Err(io_err(format!("reading {}", p.state.display()))(e)),
    }
}

fn save_state(p: &Paths, st: &State) -> Result<(), RootfsError> {
    let data = serde_json::to_vec_pretty(st).expect("state serializes");
    crate::atomic_file::replace(&p.state, &data, 0o600)
        .map_err(io_err(format!("writing {}", p.state.display())))
}

/// Removes what `shift` created in the run dir (after teardown): `lower/<n>`, `lower`,
/// `root`. rmdir only: a directory still mounted on or not empty stays and is an error.
fn remove_rootfs_dirs(p: &Paths) -> Result<(), RootfsError> {
    remove_children(&p.lower)?;
    rmdir(&p.lower)?;
    rmdir(&p.layer)?;
    rmdir(&p.root)
}

/// Removes the container's run dir, its known entries one by one.
fn remove_run_dir(p: &Paths) -> Result<(), RootfsError> {
    if fs::symlink_metadata(&p.dir).is_err() {
        return Ok(());
    }
    remove_rootfs_dirs(p)?;
    remove_children(&p.bind)?;
    rmdir(&p.bind)?;
    remove_children(&p.view)?;
    rmdir(&p.view)?;
    for f in [p.state.clone(), p.dir.join(format!("{STATE_FILE}.tmp"))] {
        match fs::remove_file(&f) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err(format!("removing {}", f.display()))(e))
            }
            _ => {}
        }
    }
    rmdir(&p.dir)
}

fn remove_children(dir: &Path) -> Result<(), RootfsError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(format!("reading {}", dir.display()))(e)),
    };
    for entry in rd {
        let entry = entry.map_err(io_err(format!("reading {}", dir.display())))?;
        remove_placeholder(&entry.path())?;
    }
    Ok(())
}

/// Removes a mount point we made: an empty directory, or an empty regular file.
fn remove_placeholder(path: &Path) -> Result<(), RootfsError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("reading {}", path.display()))(e)),
        Ok(m) if m.is_dir() => rmdir(path),
        Ok(m) if m.is_file() && m.len() == 0 => {
            fs::remove_file(path).map_err(io_err(format!("removing {}", path.display())))
        }
        Ok(_) => Err(RootfsError::Busy {
            path: path.to_path_buf(),
            detail: "unexpected content where a mount point was".into(),
        }),
    }
}

fn rmdir(path: &Path) -> Result<(), RootfsError> {
    match fs::remove_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => {
            Err(RootfsError::Busy { path: path.to_path_buf(), detail: format!("rmdir: {e}") })
        }
        Ok(()) => Ok(()),
    }
}

fn mkdir(path: &Path, mode: u32) -> Result<(), RootfsError> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(io_err(format!("creating {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

fn mkdir_all(path: &Path, mode: u32) -> Result<(), RootfsError> {
    if !path.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .map_err(io_err(format!("creating {}", path.display())))?;
    }
    set_mode(path, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), RootfsError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {}", path.display())))
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), RootfsError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(io_err(format!("chown {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(root: &Path) -> Paths {
        Rootfs::with_dirs(&root.join("run"), &root.join("lib")).paths("c1").unwrap()
    }

    /// Docker mounts with paths relative to its overlay2 home when the absolute ones do
    /// not fit in a page: `lowerdir=l/ABC:l/DEF,upperdir=<id>/diff` after a chdir.
    #[test]
    fn relative_docker_layers_resolve_against_the_overlay2_home() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().join("overlay2");
        for d in ["img/diff", "ctr-init/diff", "ctr/diff", "ctr/work", "ctr/merged", "l"] {
            fs::create_dir_all(home.join(d)).unwrap();
        }
        std::os::unix::fs::symlink("../img/diff", home.join("l/IMG")).unwrap();
        std::os::unix::fs::symlink("../ctr-init/diff", home.join("l/INIT")).unwrap();
        let merged = home.join("ctr/merged");
        let line = format!(
            "90 42 0:50 / {} rw - overlay overlay rw,lowerdir=l/INIT:l/IMG,upperdir=ctr/diff,workdir=ctr/work\n",
            merged.display()
        );
        let mounts = mountinfo::parse(line.as_bytes());
        let layout = layout_of(&mounts, &merged, &paths(t.path())).unwrap();
        let c = |p: &str| fs::canonicalize(home.join(p)).unwrap();
        assert_eq!(
            layout,
            Layout::Overlay {
                upper: c("ctr/diff"),
                work: c("ctr/work"),
                lowers: vec![c("ctr-init/diff"), c("img/diff")]
            }
        );
        // A plain directory is used as it is.
        assert_eq!(layout_of(&[], &merged, &paths(t.path())).unwrap(), Layout::Plain);
        // A missing layer is an error naming it.
        let line = format!(
            "90 42 0:50 / {} rw - overlay overlay rw,lowerdir=l/GONE,upperdir=ctr/diff,workdir=ctr/work\n",
            merged.display()
        );
        let err =
            layout_of(&mountinfo::parse(line.as_bytes()), &merged, &paths(t.path())).unwrap_err();
        assert!(err.to_string().contains("l/GONE"), "{err}");
    }

    /// The fallback for kernels without `lowerdir+`: mount(2) with one option string.
    #[test]
    fn legacy_overlay_mount() {
        if !sysvisor_skip::unless_root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        for x in ["a", "b", "u", "w", "m"] {
            fs::create_dir(d.join(x)).unwrap();
        }
        fs::write(d.join("a/top"), "a").unwrap();
        fs::write(d.join("b/top"), "b").unwrap();
        fs::write(d.join("b/bottom"), "b").unwrap();
        mount_overlay_with(
            &[d.join("a"), d.join("b")],
            &d.join("u"),
            &d.join("w"),
            &d.join("m"),
            false,
        )
        .unwrap();
        let seen = (fs::read_to_string(d.join("m/top")), fs::read_to_string(d.join("m/bottom")));
        let opts = mountinfo::read()
            .unwrap()
            .into_iter()
            .find(|m| m.mount_point == d.join("m"))
            .map(|m| m.super_opts);
        sys::umount_detach(&d.join("m")).unwrap();
        assert_eq!((seen.0.unwrap(), seen.1.unwrap()), ("a".to_string(), "b".to_string()));
        let o = mountinfo::overlay(&opts.unwrap()).unwrap();
        assert_eq!(o.lowers, vec![d.join("a"), d.join("b")]);
    }
}
