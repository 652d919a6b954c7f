//! Every registered container's own view files, served from the kernel's page cache
//! (daemon mode, a FUSE mount of their own beside the per-caller one, see
//! `sysvisor_proto::containers_mountpoint_for`):
//!
//! ```text
//! CONTAINERS/                        the registered containers (listing)
//! CONTAINERS/<id>/proc/meminfo ...   the view table's files, rendered for <id>
//! ```
//!
//! A file's content does not depend on who reads it: it is the container's view (its
//! registered cgroup, its init's pid namespace, the registered creation time; see
//! `Service::container_content`), and nobody but that container binds it. So the kernel may keep the content in the
//! inode's page cache and serve reads without asking:
//! - `st_size` is the exact length of the container's current rendering, with an
//!   attribute and entry timeout of `--cache-ttl-ms`: a LOOKUP or GETATTR (at most one per
//!   file and TTL, when the kernel's attributes expire) renders the view afresh; READs never
//!   render, they serve slices of the rendering the kernel was last told the size of;
//! - `mtime` changes only when a new rendering differs from the last one, and the mount asks
//!   for `FUSE_AUTO_INVAL_DATA`: the kernel drops the cached pages when the size or mtime it
//!   gets differs, and keeps them (across opens) otherwise;
//! - OPEN answers ENOSYS: the kernel then stops sending OPEN and RELEASE for the whole
//!   connection (zero-message opens), which is why these files are a mount of their own;
//!   FLUSH answers ENOSYS once too. An open + read + close within the TTL reaches no server.
//!
//! A container directory exists for any well-formed name that is looked up, registered or
//! not: the runtime bind-mounts the files during `runc create`, before it can register the
//! container (it needs the init's pid). Until the registration the files are empty (size 0,
//! attributes not cached). Once a container has been seen registered, the end of its
//! registration removes its files: GETATTR and READ answer ENOENT, the listing drops it, and
//! a new lookup of the name (a new `docker start` of the same id) gets new inodes. Slots
//! nobody registered within [`PENDING_MAX`] and removed ones are swept on lookups of the
//! root.

use std::ffi::CStr;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use fuse_backend_rs::abi::fuse_abi::stat64;
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileSystem, FsOptions, OpenOptions, ZeroCopyWriter,
};
use parking_lot::Mutex;

use super::filesystem::{errno, set_times, ContentSource, TTL};
use super::inode::{Node, Tree, NODE_BITS, ROOT_INO};
use super::FuseError;
use crate::views::ROOT_ONLY;

/// A registered container, as its own files are rendered for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInit {
    /// Host pid of its init.
    pub pid: u32,
    /// Its cgroup as registered (`/docker/<id>`), if known.
    pub cgroup: Option<String>,
    /// The host uid and gid of its root: the owner of its root-only views.
    pub root: (u32, u32),
}

/// The registered containers, as the own files need them. Implemented by the daemon's
/// registry.
pub trait ContainerInits: Send + Sync {
    /// Registered container `id`, `None` if `id` is not registered.
    fn init(&self, id: &str) -> Option<ContainerInit>;
    /// The ids of the registered containers.
    fn ids(&self) -> Vec<String>;
}

/// How long a container directory looked up but never registered is kept.
pub const PENDING_MAX: Duration = Duration::from_secs(60);

/// At most this many container directories at once (registered or not): lookups of more
/// names fail with ENOSPC rather than growing the table without bound.
pub const MAX_SLOTS: usize = 65536;

/// Sweep the slots every this many lookups in the root.
const SWEEP_EVERY: u64 = 64;

const DIR_MODE: u32 = libc::S_IFDIR | 0o555;
const FILE_MODE: u32 = libc::S_IFREG | 0o444;
/// A view only root may read ([`ROOT_ONLY`]).
const ROOT_ONLY_FILE_MODE: u32 = libc::S_IFREG | 0o400;
const NODE_MASK: u64 = (1 << NODE_BITS) - 1;

/// The inode number of tree node `node` in container slot `slot` (slot 0: the root only).
fn ino_of(slot: u64, node: u64) -> u64 {
    slot << NODE_BITS | (node & NODE_MASK)
}

fn split_ino(ino: u64) -> (u64, u64) {
    (ino >> NODE_BITS, ino & NODE_MASK)
}

/// The name of a container directory: a registered id (no control characters), usable as
/// one path component.
fn valid_id(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

/// One rendering of a view for a container.
#[derive(Clone)]
struct Rendering {
    bytes: Arc<[u8]>,
    /// Changes only when the bytes do.
    mtime: Duration,
    at: Instant,
}

/// Where a slot's container stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Standing {
    /// Registered now.
    Registered(ContainerInit),
    /// Not registered yet (bound during `runc create`).
    Pending,
    /// Was registered, is no more.
    Removed,
}

/// The files of one container directory.
struct Slot {
    id: String,
    number: u64,
    created: Instant,
    /// Set once the container was seen registered: from then on, not being registered
    /// means removed.
    seen_registered: AtomicBool,
    removed: AtomicBool,
    /// By view (index into the view table).
    renderings: Vec<Mutex<Option<Rendering>>>,
}

/// The own files' [`FileSystem`].
pub struct OwnFs<S: ContentSource> {
    tree: Tree,
    source: S,
    inits: Arc<dyn ContainerInits>,
    /// `--cache-ttl-ms`: the kernel's attribute and entry timeout of the files.
    ttl: Duration,
    /// A rendering younger than this is given again instead of rendering anew (many
    /// readers whose attributes expire at once ask together).
    reuse: Duration,
    by_id: DashMap<String, Arc<Slot>>,
    by_number: DashMap<u64, Arc<Slot>>,
    next_slot: AtomicU64,
    root_lookups: AtomicU64,
    born: Duration,
    views: usize,
}

impl<S: ContentSource> OwnFs<S> {
    /// The own files of the view table's views, rendered by `source` for the inits that
    /// `inits` names, cached by the kernel for `ttl`.
    pub fn new(
        source: S,
        inits: Arc<dyn ContainerInits>,
        ttl: Duration,
    ) -> Result<Self, FuseError> {
        let paths: Vec<&str> = crate::views::TABLE.iter().map(|spec| spec.path).collect();
        Ok(OwnFs {
            tree: Tree::from_paths(paths.iter().copied())?,
            source,
            inits,
            ttl,
            reuse: (ttl / 10).min(Duration::from_millis(10)),
            by_id: DashMap::new(),
            by_number: DashMap::new(),
            next_slot: AtomicU64::new(1),
            root_lookups: AtomicU64::new(0),
            born: now(),
            views: paths.len(),
        })
    }

    /// Container directories known (registered, pending or removed but not yet swept).
    pub fn slots(&self) -> usize {
        self.by_number.len()
    }

    /// Where `slot`'s container stands now. A slot whose container was removed comes back
    /// if the same id is registered again before anyone looked the name up anew (a quick
    /// `docker restart`: runc binds through dentries the kernel still has); one superseded
    /// by a newer slot of its id stays removed.
    fn standing(&self, slot: &Slot) -> Standing {
        let current = self.by_id.get(&slot.id).is_some_and(|s| s.number == slot.number);
        if !current {
            slot.removed.store(true, Ordering::Relaxed);
            return Standing::Removed;
        }
        match self.inits.init(&slot.id) {
            Some(init) => {
                slot.seen_registered.store(true, Ordering::Relaxed);
                slot.removed.store(false, Ordering::Relaxed);
                Standing::Registered(init)
            }
            None if slot.seen_registered.load(Ordering::Relaxed) => {
                slot.removed.store(true, Ordering::Relaxed);
                Standing::Removed
            }
            None => Standing::Pending,
        }
    }

    /// The slot of container `id`, made if new (or if the old one was removed).
    fn slot_for(&self, id: &str) -> io::Result<Arc<Slot>> {
        let known = self.by_id.get(id).map(|slot| Arc::clone(&slot));
        if let Some(slot) = known {
            if self.standing(&slot) != Standing::Removed {
                return Ok(slot);
            }
        }
        if self.by_number.len() >= MAX_SLOTS {
            self.sweep();
            if self.by_number.len() >= MAX_SLOTS {
                return Err(errno(libc::ENOSPC));
            }
        }
        let mut fresh = None;
        let slot = self
            .by_id
            .entry(id.to_string())
            .and_modify(|old| {
                if old.removed.load(Ordering::Relaxed) {
                    let slot = self.new_slot(id);
                    fresh = Some(Arc::clone(&slot));
                    *old = slot;
                }
            })
            .or_insert_with(|| {
                let slot = self.new_slot(id);
                fresh = Some(Arc::clone(&slot));
                slot
            })
            .clone();
        if let Some(new) = fresh {
            self.by_number.insert(new.number, new);
        }
        Ok(slot)
    }

    fn new_slot(&self, id: &str) -> Arc<Slot> {
        Arc::new(Slot {
            id: id.to_string(),
            number: self.next_slot.fetch_add(1, Ordering::Relaxed),
            created: Instant::now(),
            seen_registered: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            renderings: (0..self.views).map(|_| Mutex::new(None)).collect(),
        })
    }

    /// Drops removed slots and those never registered within [`PENDING_MAX`]. Their inode
    /// numbers are never given out again (slot numbers only grow).
    pub fn sweep(&self) {
        self.by_number.retain(|_, slot| match self.standing(slot) {
            Standing::Registered(_) => true,
            Standing::Pending => slot.created.elapsed() < PENDING_MAX,
            Standing::Removed => false,
        });
        self.by_id.retain(|_, slot| self.by_number.contains_key(&slot.number));
    }

    /// The slot and tree node inode `ino` names (the root has no slot).
    fn resolve(&self, ino: u64) -> io::Result<(Option<Arc<Slot>>, &Node)> {
        let (number, node) = split_ino(ino);
        let node = self.tree.get(node).ok_or_else(|| errno(libc::ENOENT))?;
        if number == 0 {
            return match node.ino == ROOT_INO {
                true => Ok((None, node)),
                false => Err(errno(libc::ENOENT)),
            };
        }
        // Whether its container is still there is for the caller to ask (`standing`).
        let slot = self.by_number.get(&number).map(|s| Arc::clone(&s));
        slot.map(|slot| (Some(slot), node)).ok_or_else(|| errno(libc::ENOENT))
    }

    /// The current rendering of `view` for `slot`'s container: made now unless one was
    /// made within `reuse`. `None` while the container is not registered yet.
    fn refresh(&self, slot: &Slot, view: usize) -> io::Result<Option<Rendering>> {
        let init = match self.standing(slot) {
            Standing::Registered(init) => init,
            Standing::Pending => return Ok(None),
            Standing::Removed => return Err(errno(libc::ENOENT)),
        };
        let cell = slot.renderings.get(view).ok_or_else(|| errno(libc::EIO))?;
        if let Some(r) = cell.lock().as_ref().filter(|r| r.at.elapsed() < self.reuse) {
            return Ok(Some(r.clone()));
        }
        let pid = init.pid;
        let bytes =
            self.source.container_content(view, pid, init.cgroup.as_deref()).map_err(|err| {
                tracing::warn!(container = %slot.id, pid, view, error = %err, "cannot render a view");
                errno(libc::EIO)
            })?;
        let mut cell = cell.lock();
        let rendering = match cell.as_ref() {
            Some(old) if *old.bytes == *bytes => {
                Rendering { bytes: Arc::clone(&old.bytes), mtime: old.mtime, at: Instant::now() }
            }
            old => {
                // Strictly later than the previous mtime, so that the kernel sees a change
                // even when two renderings fall in the same clock tick.
                let floor = old.map_or(Duration::ZERO, |o| o.mtime + Duration::from_nanos(1));
                Rendering { bytes: Arc::from(bytes), mtime: now().max(floor), at: Instant::now() }
            }
        };
        *cell = Some(rendering.clone());
        Ok(Some(rendering))
    }

    /// The rendering READs of `view` serve: the one whose size the kernel was last told.
    fn current(&self, slot: &Slot, view: usize) -> io::Result<Option<Rendering>> {
        let cell = slot.renderings.get(view).ok_or_else(|| errno(libc::EIO))?;
        if self.standing(slot) == Standing::Removed {
            return Err(errno(libc::ENOENT));
        }
        match cell.lock().clone() {
            Some(r) => Ok(Some(r)),
            None => self.refresh(slot, view),
        }
    }

    fn dir_attr(&self, ino: u64, node: &Node) -> stat64 {
        let mut st = Entry::default().attr;
        st.st_ino = ino;
        st.st_mode = DIR_MODE;
        st.st_nlink = (2 + self.tree.subdir_count(node.ino)) as _;
        st.st_blksize = 4096;
        set_times(&mut st, self.born);
        st
    }

    fn file_attr(&self, ino: u64, rendering: Option<&Rendering>) -> stat64 {
        let mut st = Entry::default().attr;
        st.st_ino = ino;
        st.st_mode = FILE_MODE;
        st.st_nlink = 1;
        st.st_blksize = 4096;
        let (size, mtime) = rendering
            .map_or((0, self.born), |r| (i64::try_from(r.bytes.len()).unwrap_or(0), r.mtime));
        st.st_size = size;
        st.st_blocks = (size + 511) / 512;
        set_times(&mut st, mtime);
        st
    }

    /// Attributes of inode `ino` and how long the kernel may keep them.
    fn attr_of(&self, ino: u64) -> io::Result<(stat64, Duration)> {
        let (slot, node) = self.resolve(ino)?;
        let Some(slot) = slot else {
            // The root: its attributes never change (its listing does, but the kernel does
            // not keep listings of this mount).
            return Ok((self.dir_attr(ino, node), TTL));
        };
        match node.view() {
            None => match self.standing(&slot) {
                Standing::Removed => Err(errno(libc::ENOENT)),
                _ => Ok((self.dir_attr(ino, node), self.ttl)),
            },
            Some(view) => {
                let (mut st, ttl) = match self.refresh(&slot, view)? {
                    Some(r) => (self.file_attr(ino, Some(&r)), self.ttl),
                    None => (self.file_attr(ino, None), Duration::ZERO),
                };
                // A root-only view (the kernel's 0400 files) belongs to the container's root.
                if ROOT_ONLY.contains(&node.path.as_str()) {
                    st.st_mode = ROOT_ONLY_FILE_MODE;
                    if let Standing::Registered(init) = self.standing(&slot) {
                        (st.st_uid, st.st_gid) = init.root;
                    }
                }
                Ok((st, ttl))
            }
        }
    }

    fn entry_of(&self, ino: u64) -> io::Result<Entry> {
        let (attr, attr_timeout) = self.attr_of(ino)?;
        Ok(Entry {
            inode: ino,
            generation: 0,
            attr,
            attr_flags: 0,
            attr_timeout,
            entry_timeout: self.ttl,
        })
    }

    fn list_root(
        &self,
        offset: u64,
        add: &mut dyn FnMut(DirEntry<'_>) -> io::Result<usize>,
    ) -> io::Result<()> {
        let mut ids = self.inits.ids();
        ids.retain(|id| valid_id(id));
        ids.sort();
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, id) in ids.iter().enumerate().skip(skip) {
            let slot = self.slot_for(id)?;
            let dirent = DirEntry {
                ino: ino_of(slot.number, ROOT_INO),
                offset: i as u64 + 1,
                type_: u32::from(libc::DT_DIR),
                name: id.as_bytes(),
            };
            if add(dirent)? == 0 {
                break;
            }
        }
        Ok(())
    }

    fn list_dir(
        &self,
        slot: &Slot,
        node: &Node,
        offset: u64,
        add: &mut dyn FnMut(DirEntry<'_>) -> io::Result<usize>,
    ) -> io::Result<()> {
        let entries = self.tree.entries(node.ino).ok_or_else(|| errno(libc::ENOTDIR))?;
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, e) in entries.iter().enumerate().skip(skip) {
            let dirent = DirEntry {
                ino: ino_of(slot.number, e.ino),
                offset: i as u64 + 1,
                type_: u32::from(if e.is_dir { libc::DT_DIR } else { libc::DT_REG }),
                name: e.name.as_bytes(),
            };
            if add(dirent)? == 0 {
                break;
            }
        }
        Ok(())
    }
}

impl<S: ContentSource> FileSystem for OwnFs<S> {
    type Inode = u64;
    type Handle = u64;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        // AUTO_INVAL_DATA: cached pages are dropped when a GETATTR or LOOKUP reports another
        // size or mtime, kept otherwise. ZERO_MESSAGE_OPEN: OPEN answers ENOSYS.
        let wanted = FsOptions::ASYNC_READ
            | FsOptions::PARALLEL_DIROPS
            | FsOptions::AUTO_INVAL_DATA
            | FsOptions::ZERO_MESSAGE_OPEN
            | FsOptions::MAX_PAGES;
        if !capable.contains(FsOptions::AUTO_INVAL_DATA) {
            tracing::warn!("the kernel lacks FUSE_AUTO_INVAL_DATA: own files may be stale");
        }
        Ok(capable & wanted)
    }

    fn lookup(&self, _ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        let (slot, dir) = self.resolve(parent)?;
        let name = name.to_str().map_err(|_| errno(libc::ENOENT))?;
        if slot.as_ref().is_some_and(|slot| self.standing(slot) == Standing::Removed) {
            return Err(errno(libc::ENOENT));
        }
        let slot = match slot {
            Some(slot) => slot,
            None => {
                if !valid_id(name) {
                    return Err(errno(libc::ENOENT));
                }
                if self.root_lookups.fetch_add(1, Ordering::Relaxed).is_multiple_of(SWEEP_EVERY) {
                    self.sweep();
                }
                let slot = self.slot_for(name)?;
                return self.entry_of(ino_of(slot.number, ROOT_INO));
            }
        };
        match self.tree.lookup(dir.ino, name.as_bytes()) {
            Ok(Some(node)) => self.entry_of(ino_of(slot.number, node.ino)),
            Ok(None) => Ok(Entry { inode: 0, entry_timeout: TTL, ..Entry::default() }),
            Err(_) => Err(errno(libc::ENOTDIR)),
        }
    }

    fn getattr(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: Option<u64>,
    ) -> io::Result<(stat64, Duration)> {
        self.attr_of(inode)
    }

    /// Zero-message opens: the kernel opens every file of the mount without asking from now
    /// on, and keeps its page cache across opens.
    fn open(
        &self,
        _ctx: &Context,
        _inode: u64,
        _flags: u32,
        _fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        Err(errno(libc::ENOSYS))
    }

    fn read(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        _lock_owner: Option<u64>,
        _flags: u32,
    ) -> io::Result<usize> {
        let (Some(slot), node) = self.resolve(inode)? else {
            return Err(errno(libc::EISDIR));
        };
        let view = node.view().ok_or_else(|| errno(libc::EISDIR))?;
        let Some(rendering) = self.current(&slot, view)? else {
            return Ok(0);
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(rendering.bytes.len());
        let end = start.saturating_add(size as usize).min(rendering.bytes.len());
        let part = &rendering.bytes[start..end];
        w.write_all(part).map(|()| part.len())
    }

    fn flush(&self, _: &Context, _: u64, _: u64, _: u64) -> io::Result<()> {
        Err(errno(libc::ENOSYS))
    }

    fn readdir(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        _size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        match self.resolve(inode)? {
            (None, _) => self.list_root(offset, add_entry),
            (Some(slot), _) if self.standing(&slot) == Standing::Removed => {
                Err(errno(libc::ENOENT))
            }
            (Some(slot), node) => self.list_dir(&slot, node, offset, add_entry),
        }
    }

    fn access(&self, _ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
        let (_, node) = self.resolve(inode)?;
        let mask = mask as i32;
        if mask & libc::W_OK != 0 || (mask & libc::X_OK != 0 && !node.is_dir()) {
            return Err(errno(libc::EACCES));
        }
        Ok(())
    }
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ServiceError;
    use crate::sysctl::{Asker, Found, Listed};

    /// Renders `text` for every view; counts renderings.
    #[derive(Default)]
    struct Source {
        text: Mutex<String>,
        renders: AtomicU64,
    }

    impl ContentSource for Arc<Source> {
        type Target = ();

        fn content(&self, _view: usize, _pid: u32) -> Result<Vec<u8>, ServiceError> {
            self.renders.fetch_add(1, Ordering::Relaxed);
            Ok(self.text.lock().clone().into_bytes())
        }
        fn container_root(&self, _pid: u32) -> Option<(u32, u32)> {
            None
        }
        fn lookup_dyn(&self, _: Asker, _: usize, _: &str, _: bool) -> Result<Found, i32> {
            Err(libc::ENOSYS)
        }
        fn list_dyn(&self, _: Asker, _: usize, _: &str) -> Result<Vec<Listed>, i32> {
            Err(libc::ENOSYS)
        }
        fn open_write_dyn(&self, _: Asker, _: usize, _: &str) -> Result<(), i32> {
            Err(libc::ENOSYS)
        }
        fn write_dyn(&self, _: &(), _: u64, _: &[u8]) -> Result<usize, i32> {
            Err(libc::ENOSYS)
        }
        fn readlink_dyn(&self, _: Asker, _: usize, _: &str) -> Result<Vec<u8>, i32> {
            Err(libc::ENOSYS)
        }
    }

    /// Registered containers: id -> init pid.
    #[derive(Default)]
    struct Inits(Mutex<Vec<(String, u32)>>);

    impl ContainerInits for Inits {
        fn init(&self, id: &str) -> Option<ContainerInit> {
            let inits = self.0.lock();
            let pid = inits.iter().find(|(i, _)| i == id).map(|(_, pid)| *pid)?;
            Some(ContainerInit { pid, cgroup: None, root: (100_000, 100_000) })
        }
        fn ids(&self) -> Vec<String> {
            self.0.lock().iter().map(|(i, _)| i.clone()).collect()
        }
    }

    const TTL_MS: u64 = 100;

    fn setup() -> (OwnFs<Arc<Source>>, Arc<Source>, Arc<Inits>) {
        let source = Arc::new(Source::default());
        *source.text.lock() = "MemTotal: 1 kB\n".into();
        let inits = Arc::new(Inits::default());
        let fs = OwnFs::new(source.clone(), inits.clone(), Duration::from_millis(TTL_MS)).unwrap();
        (fs, source, inits)
    }

    /// The inode of `rel` (a view path) in container `id`'s directory, and its view.
    fn file(fs: &OwnFs<Arc<Source>>, id: &str, rel: &str) -> (u64, usize) {
        let slot = fs.slot_for(id).unwrap();
        let node = fs.tree.nodes().iter().find(|n| n.path == rel).unwrap();
        (ino_of(slot.number, node.ino), node.view().unwrap())
    }

    fn read_all(fs: &OwnFs<Arc<Source>>, ino: u64) -> Vec<u8> {
        let (slot, node) = fs.resolve(ino).unwrap();
        let rendering = fs.current(&slot.unwrap(), node.view().unwrap()).unwrap();
        rendering.map_or_else(Vec::new, |r| r.bytes.to_vec())
    }

    #[test]
    fn files_are_empty_and_uncached_until_registered() {
        let (fs, source, inits) = setup();
        let (ino, _) = file(&fs, "c1", "proc/meminfo");
        let (st, ttl) = fs.attr_of(ino).unwrap();
        assert_eq!((st.st_size, ttl), (0, Duration::ZERO));
        assert!(read_all(&fs, ino).is_empty());
        assert_eq!(source.renders.load(Ordering::Relaxed), 0);

        inits.0.lock().push(("c1".into(), 42));
        let (st, ttl) = fs.attr_of(ino).unwrap();
        assert_eq!((st.st_size, ttl), (15, Duration::from_millis(TTL_MS)));
        assert_eq!(read_all(&fs, ino), b"MemTotal: 1 kB\n");
    }

    #[test]
    fn mtime_changes_only_with_the_content_and_reads_never_render() {
        let (fs, source, inits) = setup();
        inits.0.lock().push(("c1".into(), 42));
        let (ino, _) = file(&fs, "c1", "proc/meminfo");
        let (first, _) = fs.attr_of(ino).unwrap();
        let renders = source.renders.load(Ordering::Relaxed);
        for _ in 0..10 {
            read_all(&fs, ino);
        }
        assert_eq!(source.renders.load(Ordering::Relaxed), renders, "a READ rendered");

        // Same bytes rendered again: same mtime (the kernel keeps its pages).
        std::thread::sleep(fs.reuse + Duration::from_millis(1));
        let (same, _) = fs.attr_of(ino).unwrap();
        assert!(source.renders.load(Ordering::Relaxed) > renders);
        assert_eq!((same.st_mtime, same.st_mtime_nsec), (first.st_mtime, first.st_mtime_nsec));

        // Other bytes of the same length: a later mtime, and READs serve them.
        *source.text.lock() = "MemTotal: 2 kB\n".into();
        std::thread::sleep(fs.reuse + Duration::from_millis(1));
        let (changed, _) = fs.attr_of(ino).unwrap();
        assert_eq!(changed.st_size, first.st_size);
        assert!((changed.st_mtime, changed.st_mtime_nsec) > (first.st_mtime, first.st_mtime_nsec));
        assert_eq!(read_all(&fs, ino), b"MemTotal: 2 kB\n");
    }

    #[test]
    fn the_end_of_a_registration_removes_the_files_and_a_new_one_gets_new_inodes() {
        let (fs, _source, inits) = setup();
        inits.0.lock().push(("c1".into(), 42));
        let (ino, view) = file(&fs, "c1", "proc/meminfo");
        fs.attr_of(ino).unwrap();
        assert_eq!(fs.inits.ids(), ["c1"]);

        inits.0.lock().clear();
        let gone = |r: io::Result<(stat64, Duration)>| r.unwrap_err().raw_os_error();
        assert_eq!(gone(fs.attr_of(ino)), Some(libc::ENOENT));
        let (slot, _) = split_ino(ino);
        assert!(fs.by_number.get(&slot).unwrap().removed.load(Ordering::Relaxed));

        // Registered again before anyone looked the name up anew (a quick restart, runc
        // binding through the kernel's cached dentries): the same files come back.
        inits.0.lock().push(("c1".into(), 44));
        assert!(fs.attr_of(ino).unwrap().0.st_size > 0);
        inits.0.lock().clear();
        assert_eq!(gone(fs.attr_of(ino)), Some(libc::ENOENT));

        // docker start of the same id: a new directory, new inode numbers.
        let (again, again_view) = file(&fs, "c1", "proc/meminfo");
        assert_ne!(again, ino);
        assert_eq!(again_view, view);
        inits.0.lock().push(("c1".into(), 43));
        assert!(fs.attr_of(again).unwrap().0.st_size > 0);
        assert_eq!(gone(fs.attr_of(ino)), Some(libc::ENOENT));

        // The removed slot is swept; the live one stays.
        fs.sweep();
        assert_eq!(fs.slots(), 1);
    }

    #[test]
    fn only_names_usable_as_one_path_component_are_container_directories() {
        for good in ["c1", "0123abcdef", "a.b-c_d"] {
            assert!(valid_id(good), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a\nb", &"x".repeat(256)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
