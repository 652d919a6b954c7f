//! The FUSE operations (fuse-backend-rs [`FileSystem`]) on top of the static [`Tree`], the
//! [`DynInodes`] below mirror directories and the [`HandleTable`].
//!
//! - Static tree: directories 0555 and view files 0444 owned by root, nothing writable
//!   (EACCES); every open file a fresh per-caller snapshot rendered by the service, rendered
//!   again for the reader at each READ from offset 0 but the first (see [`VirtualFs::read`]).
//! - Below a mirror directory (`proc/sys`, `sys/kernel`, ...): what the source says the
//!   path is for the caller ([`ContentSource::lookup_dyn`]): its type, mode, owner and
//!   content; writable files take `open(O_WRONLY|O_TRUNC)` (a SETATTR of size 0, accepted
//!   without effect), then WRITEs that go to the target chosen at open.
//!
//! # Files, inodes and the page cache
//!
//! Files are opened with direct I/O, so read(2) always comes here with the opener's handle.
//! But sendfile/splice (busybox `cat`) ignore `FOPEN_DIRECT_IO` on kernels 6.5 to 6.18: they
//! read the inode's page cache (filled by READs on the handle of whoever reads first after
//! an open, which empties it) and stop at the kernel's size of the file. Hence:
//! - view files have one inode for every caller ([`file_ino`]`(node, 0)`), entries cached
//!   like directories: a lookup by another caller must never invalidate the dentry a
//!   runtime has just opened with O_PATH to bind-mount the view into a container (runc's
//!   mount then fails with ENOENT). Open always renders for the actual caller; the cost is
//!   the caveat in docs/design.md: sendfile readers of different cgroups may share pages;
//! - dynamic files whose content depends on the caller get an inode per caller view and
//!   calling thread, and an entry timeout of 0 (every path walk looks them up again and
//!   gets its own inode): no one bind-mounts them one by one, so no two threads share their
//!   page cache (another container's, or a writer of the same file, which changes its
//!   length under a reader's feet);
//! - `st_size` is the exact length of the caller's current content, and the attributes of
//!   files are not cached (timeout 0): with `default_permissions` the kernel asks for them
//!   (GETATTR) in the permission check of every open, by the opener, bind mount or not. A
//!   splice read thus stops exactly at the end of the content, however it grew or shrank
//!   since the last open;
//! - the open serves the very content whose length the opener's GETATTR just reported,
//!   kept briefly (`SIZED_TTL`) by (inode, thread) in `sized`, so content changed in
//!   between cannot be cut.
//!
//! Measured on 6.18, and why not the alternatives: a `st_size` larger than the content
//! relies on the short page-cache READ shrinking the kernel's size to find EOF, but the
//! shrink persists (a bind mount would keep the shortest length ever read), and any
//! attribute reply for the inode while such a READ is in flight (another caller's LOOKUP or
//! GETATTR) cancels it, so splice returns the kernel's zero padding up to `st_size`;
//! `FUSE_WRITEBACK_CACHE` never shrinks the size, so splice always returns the padding; a
//! `FUSE_NOTIFY_STORE` to grow the size at open must lock a page that a queued READ may hold
//! (it deadlocked a single worker).
//!
//! # Round trips
//!
//! Kept to the minimum the kernel allows. `open + read-to-EOF + close` of a view costs,
//! through a bind mount (how containers read), GETATTR, OPEN, READ, READ (returns 0: direct
//! I/O cannot know EOF otherwise; a splice reader stops at `st_size` instead) and an
//! asynchronous RELEASE; through the path, a LOOKUP of the file first:
//! - static directory entries, negative entries and directory attributes are cached by the
//!   kernel for a day (the tree never changes); dynamic ones for [`DYN_TTL`], or not at all
//!   where they depend on the caller's namespaces (`proc/sys/net`); with
//!   `default_permissions` (set by fuse-backend-rs) ACCESS is never sent;
//! - FLUSH, GETXATTR, LISTXATTR, LSEEK, POLL, FSYNC, STATX answer ENOSYS once and the kernel
//!   stops asking (fuse-backend-rs 0.14 does not expose FOPEN_NOFLUSH, so the very first
//!   close of the mount still costs one FLUSH);
//! - directories: OPENDIR of a static directory answers `CACHE_DIR | KEEP_CACHE`, so the
//!   kernel keeps its listing; a dynamic directory's OPENDIR lists it for the caller into a
//!   handle (never cached: the listing of `proc/sys/net/...` is the caller's network
//!   namespace's). READDIRPLUS fills the entry cache of static directories in one go
//!   (files and dynamic entries are left out: they are looked up per caller);
//! - an fstat() of an open file costs a GETATTR (answered with that handle's length).

use std::ffi::CStr;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use fuse_backend_rs::abi::fuse_abi::{stat64, CreateIn};
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileSystem, FsOptions, OpenOptions, SetattrValid, ZeroCopyReader,
    ZeroCopyWriter,
};

use super::handles::{HandleTable, Snapshot};
use super::inode::{file_ino, file_st_ino, DynInodes, DynNode, Ino, LookupError, Node, Tree};
use crate::service::{Service, ServiceError};
use crate::sysctl::{Asker, Found, Listed, NodeAttr, NodeType};
use crate::views::ViewError;

/// How long the kernel may cache static directory entries, negative entries and directory
/// attributes: the static tree never changes for the lifetime of the mount.
pub const TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Entry timeout of view files: as long as directories'. A file has one inode for every
/// caller: an inode per cgroup set would keep the page cache of sendfile readers apart
/// (kernels 6.5-6.18 splice FOPEN_DIRECT_IO files through the page cache), but a lookup by
/// another cgroup then invalidates the dentry a runtime has just opened with O_PATH to
/// bind-mount it into a container, and that mount fails with ENOENT. Bind mounts must
/// work; see docs/design.md for the sendfile caveat.
pub const FILE_ENTRY_TTL: Duration = TTL;

/// Attribute timeout of files: 0, so the kernel asks again (GETATTR) before every open, by
/// the opener, whose length then becomes the kernel's size of the file. (Any non-zero
/// timeout is at least a jiffy, 1 to 10 ms, during which other callers' opens would go by
/// the size of the last caller's rendering.)
pub const FILE_ATTR_TTL: Duration = Duration::ZERO;

/// How long the kernel may cache dynamic entries (and the attributes of dynamic
/// directories) that are the same for every caller: a module loaded on the host adds
/// sysctls, which then appear within this time.
pub const DYN_TTL: Duration = Duration::from_secs(1);

/// `st_size` of a file when the caller's content cannot be rendered (its open fails anyway).
pub const FILE_SIZE: i64 = 4096;

/// How long a rendering sized by LOOKUP or GETATTR waits for the open of the same thread
/// (which normally follows within microseconds; later, the open renders afresh).
const SIZED_TTL: Duration = Duration::from_millis(200);

/// Sweep `sized` of renderings nobody opened (stat without open) every this many entries.
const SIZED_SWEEP_EVERY: u64 = 256;

/// At most this many renderings are kept: a stat storm beyond it empties `sized` (opens then
/// render afresh).
const SIZED_MAX: usize = 16384;

/// The most bytes one WRITE may carry to a dynamic file (the kernel reads at most a page
/// of a sysctl write).
const MAX_WRITE: u32 = 1 << 16;

const DIR_MODE: u32 = libc::S_IFDIR | 0o555;
const FILE_MODE: u32 = libc::S_IFREG | 0o444;
/// A view only root may read ([`crate::views::ROOT_ONLY`]).
const ROOT_ONLY_FILE_MODE: u32 = libc::S_IFREG | 0o400;

/// Where file contents come from: "process `pid` reads view `view`" -> bytes, and what the
/// dynamic trees hold for a caller. Implemented by [`Service`]; tests plug in fakes.
pub trait ContentSource: Send + Sync {
    /// Where the writes of a dynamic file opened for writing go.
    type Target: Send + Sync + 'static;

    fn content(&self, view: usize, pid: u32) -> Result<Vec<u8>, ServiceError>;
    /// View `view` of the container whose init is `pid` and whose cgroup is `cgroup`,
    /// rendered now rather than taken from a cached rendering (the own files of a
    /// container, see [`super::own`], keep it themselves).
    fn container_content(
        &self,
        view: usize,
        pid: u32,
        _cgroup: Option<&str>,
    ) -> Result<Vec<u8>, ServiceError> {
        self.content(view, pid)
    }

    /// The host uid and gid of the root of the container process `pid` belongs to; `None`
    /// for a process of no registered container. The owner of the root-only views.
    fn container_root(&self, pid: u32) -> Option<(u32, u32)>;

    /// What `path` below mirror `mirror` is for `asker` (with its content, if asked and a
    /// file). Errors are errnos.
    fn lookup_dyn(
        &self,
        asker: Asker,
        mirror: usize,
        path: &str,
        content: bool,
    ) -> Result<Found, i32>;

    /// The entries of directory `path` below mirror `mirror` for `asker`.
    fn list_dyn(&self, asker: Asker, mirror: usize, path: &str) -> Result<Vec<Listed>, i32>;

    /// Opens file `path` for writing: EACCES unless `asker` may.
    fn open_write_dyn(&self, asker: Asker, mirror: usize, path: &str) -> Result<Self::Target, i32>;

    /// write(2) of `data` at `offset`.
    fn write_dyn(&self, target: &Self::Target, offset: u64, data: &[u8]) -> Result<usize, i32>;

    /// The target of symlink `path`.
    fn readlink_dyn(&self, asker: Asker, mirror: usize, path: &str) -> Result<Vec<u8>, i32>;
}

impl ContentSource for Service {
    type Target = crate::sysctl::Target;

    fn content(&self, view: usize, pid: u32) -> Result<Vec<u8>, ServiceError> {
        Service::content(self, view, pid)
    }

    fn container_root(&self, pid: u32) -> Option<(u32, u32)> {
        self.mirrors().container_root(pid)
    }

    fn container_content(
        &self,
        view: usize,
        pid: u32,
        cgroup: Option<&str>,
    ) -> Result<Vec<u8>, ServiceError> {
        Service::container_content(self, view, pid, cgroup)
    }

    fn lookup_dyn(
        &self,
        asker: Asker,
        mirror: usize,
        path: &str,
        content: bool,
    ) -> Result<Found, i32> {
        self.mirrors().lookup(asker, mirror, path, content)
    }

    fn list_dyn(&self, asker: Asker, mirror: usize, path: &str) -> Result<Vec<Listed>, i32> {
        self.mirrors().list(asker, mirror, path)
    }

    fn open_write_dyn(&self, asker: Asker, mirror: usize, path: &str) -> Result<Self::Target, i32> {
        self.mirrors().open_write(asker, mirror, path)
    }

    fn write_dyn(&self, target: &Self::Target, offset: u64, data: &[u8]) -> Result<usize, i32> {
        self.mirrors().write(target, offset, data)
    }

    fn readlink_dyn(&self, asker: Asker, mirror: usize, path: &str) -> Result<Vec<u8>, i32> {
        self.mirrors().readlink(asker, mirror, path)
    }
}

impl<T: ContentSource + ?Sized> ContentSource for Arc<T> {
    type Target = T::Target;

    fn content(&self, view: usize, pid: u32) -> Result<Vec<u8>, ServiceError> {
        (**self).content(view, pid)
    }

    fn container_root(&self, pid: u32) -> Option<(u32, u32)> {
        (**self).container_root(pid)
    }

    fn container_content(
        &self,
        view: usize,
        pid: u32,
        cgroup: Option<&str>,
    ) -> Result<Vec<u8>, ServiceError> {
        (**self).container_content(view, pid, cgroup)
    }

    fn lookup_dyn(
        &self,
        asker: Asker,
        mirror: usize,
        path: &str,
        content: bool,
    ) -> Result<Found, i32> {
        (**self).lookup_dyn(asker, mirror, path, content)
    }

    fn list_dyn(&self, asker: Asker, mirror: usize, path: &str) -> Result<Vec<Listed>, i32> {
        (**self).list_dyn(asker, mirror, path)
    }

    fn open_write_dyn(&self, asker: Asker, mirror: usize, path: &str) -> Result<Self::Target, i32> {
        (**self).open_write_dyn(asker, mirror, path)
    }

    fn write_dyn(&self, target: &Self::Target, offset: u64, data: &[u8]) -> Result<usize, i32> {
        (**self).write_dyn(target, offset, data)
    }

    fn readlink_dyn(&self, asker: Asker, mirror: usize, path: &str) -> Result<Vec<u8>, i32> {
        (**self).readlink_dyn(asker, mirror, path)
    }
}

/// A rendering whose length was reported to the kernel.
struct SizedRendering {
    at: Instant,
    data: Vec<u8>,
}

/// A dynamic node as one caller sees it, with its content if asked for.
type FoundNode = (NodeAttr, Option<Result<Vec<u8>, i32>>);

/// What an open handle holds.
pub enum Handle<T> {
    /// A file's content, rendered at open or at the last read from offset 0, and where its
    /// writes go if opened for writing.
    File {
        snapshot: Snapshot,
        target: Option<T>,
        /// Whether a READ at offset 0 has been served: the next one renders afresh.
        started: AtomicBool,
    },
    /// A dynamic directory's entries at opendir.
    Dir(Vec<Listed>),
}

/// An inode number the kernel gave us, resolved.
enum Resolved<'a> {
    Static(&'a Node),
    Dyn(Arc<DynNode>),
}

/// A directory things can be looked up in.
enum DirRef<'a> {
    Static(&'a Node),
    /// Mirror `mirror`'s directory `path` ("" = the mirror's own).
    Mirror {
        mirror: usize,
        path: String,
    },
}

/// The virtual file system served on the mount point.
pub struct VirtualFs<S: ContentSource = Arc<Service>> {
    tree: Tree,
    /// Attributes of tree node `n` at index `n - 1`, computed once; for files a template
    /// completed per caller (inode number, size).
    attrs: Vec<stat64>,
    dyn_inodes: DynInodes,
    handles: HandleTable<Handle<S::Target>>,
    source: S,
    /// When the file system was made: the times of every inode.
    born: Duration,
    /// The rendering last sized for (file inode, thread) by LOOKUP or GETATTR, taken by the
    /// open that follows.
    sized: DashMap<(u64, u32), SizedRendering>,
    sized_inserts: AtomicU64,
}

impl<S: ContentSource> VirtualFs<S> {
    pub fn new(tree: Tree, source: S) -> VirtualFs<S> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let attrs = tree.nodes().iter().map(|node| make_attr(&tree, node, now)).collect();
        VirtualFs {
            tree,
            attrs,
            dyn_inodes: DynInodes::new(),
            handles: HandleTable::new(),
            source,
            born: now,
            sized: DashMap::new(),
            sized_inserts: AtomicU64::new(0),
        }
    }

    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Open file and directory handles right now.
    pub fn open_handles(&self) -> usize {
        self.handles.len()
    }

    /// Renderings sized by LOOKUP or GETATTR and not opened yet.
    pub fn pending_sizes(&self) -> usize {
        self.sized.len()
    }

    /// Dynamic inodes the kernel holds.
    pub fn dynamic_inodes(&self) -> usize {
        self.dyn_inodes.len()
    }

    fn resolve(&self, ino: u64) -> Option<Resolved<'_>> {
        match Ino::decode(ino) {
            Ino::Dynamic(_) => self.dyn_inodes.get(ino).map(Resolved::Dyn),
            _ => self.tree.resolve(ino).map(|(node, _)| Resolved::Static(node)),
        }
    }

    fn node(&self, ino: u64) -> io::Result<&Node> {
        self.tree.resolve(ino).map(|(node, _)| node).ok_or_else(|| errno(libc::ENOENT))
    }

    /// Attributes of inode `ino` (node `node`) of size `size` (ignored for directories).
    fn attr(&self, node: &Node, ino: u64, size: i64) -> stat64 {
        let mut st = self.attrs[(node.ino - 1) as usize];
        if !node.is_dir() {
            st.st_ino = file_st_ino(ino);
            st.st_size = size;
            st.st_blocks = (size + 511) / 512;
        }
        st
    }

    /// Attributes of dynamic node `node` as `attr` describes it for one caller.
    fn dyn_attr(&self, node: &DynNode, attr: &NodeAttr, size: i64) -> stat64 {
        let mut st = Entry::default().attr;
        st.st_ino = node.st_ino();
        st.st_mode = attr.mode & 0o7777
            | match attr.typ {
                NodeType::Dir => libc::S_IFDIR,
                NodeType::File => libc::S_IFREG,
                NodeType::Symlink => libc::S_IFLNK,
            };
        // 1: "unknown" for a directory, as for file systems that do not count subdirectories.
        st.st_nlink = 1;
        st.st_uid = attr.uid;
        st.st_gid = attr.gid;
        st.st_size = if attr.typ == NodeType::File { size } else { 0 };
        st.st_blksize = 4096;
        st.st_blocks = (st.st_size + 511) / 512;
        set_times(&mut st, self.born);
        st
    }

    /// `st_size` of file inode `ino` (view `view`) for process `pid`: the length of its
    /// current rendering, which is kept for the open that usually follows.
    fn size_for(&self, ino: u64, view: usize, pid: u32) -> i64 {
        match self.source.content(view, pid) {
            Ok(data) => {
                let size = i64::try_from(data.len()).unwrap_or(i64::MAX);
                self.keep_sized(ino, pid, data);
                size
            }
            Err(err) => {
                tracing::debug!(pid, view, error = %err, "cannot size view");
                FILE_SIZE
            }
        }
    }

    fn keep_sized(&self, ino: u64, pid: u32, data: Vec<u8>) {
        self.sized.insert((ino, pid), SizedRendering { at: Instant::now(), data });
        if self.sized_inserts.fetch_add(1, Ordering::Relaxed).is_multiple_of(SIZED_SWEEP_EVERY) {
            self.sized.retain(|_, s| s.at.elapsed() < SIZED_TTL);
            if self.sized.len() > SIZED_MAX {
                self.sized.clear();
            }
        }
    }

    /// The rendering sized for `pid`'s last LOOKUP or GETATTR of `ino`, if recent.
    fn take_sized(&self, ino: u64, pid: u32) -> Option<Vec<u8>> {
        let (_, sized) = self.sized.remove(&(ino, pid))?;
        (sized.at.elapsed() < SIZED_TTL).then_some(sized.data)
    }

    /// The entry of static node `node`. View files report [`FILE_SIZE`] here: their
    /// attributes expire at once, so the kernel asks GETATTR, for the opener, before every
    /// open, and that answer carries the opener's exact size. Lookups resolve no caller: a
    /// runtime looks the views up from a process that then joins the container's cgroup
    /// under the same pid.
    fn entry(&self, node: &Node) -> Entry {
        let (inode, size, attr_timeout, entry_timeout) = match node.view() {
            None => (node.ino, 0, TTL, TTL),
            Some(_) => (file_ino(node.ino, 0), FILE_SIZE, FILE_ATTR_TTL, FILE_ENTRY_TTL),
        };
        Entry {
            inode,
            generation: 0,
            attr: self.attr(node, inode, size),
            attr_flags: 0,
            attr_timeout,
            entry_timeout,
        }
    }

    /// The directory inode `ino` names, for lookups and listings.
    fn dir_ref(&self, ino: u64) -> io::Result<DirRef<'_>> {
        match self.resolve(ino) {
            Some(Resolved::Static(node)) => match node.mirror() {
                Some(mirror) => Ok(DirRef::Mirror { mirror, path: String::new() }),
                None if node.is_dir() => Ok(DirRef::Static(node)),
                None => Err(errno(libc::ENOTDIR)),
            },
            Some(Resolved::Dyn(node)) if node.typ == NodeType::Dir => {
                Ok(DirRef::Mirror { mirror: node.mirror, path: node.path.to_string() })
            }
            Some(Resolved::Dyn(_)) => Err(errno(libc::ENOTDIR)),
            None => Err(errno(libc::ENOENT)),
        }
    }

    /// LOOKUP below a mirror.
    fn lookup_dyn(
        &self,
        ctx: &Context,
        mirror: usize,
        dir: &str,
        name: &[u8],
    ) -> io::Result<Entry> {
        let Some(name) = std::str::from_utf8(name).ok().filter(|n| valid_name(n)) else {
            return Ok(negative(Duration::ZERO));
        };
        let path = if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") };
        let found = self.source.lookup_dyn(asker(ctx), mirror, &path, false).map_err(errno)?;
        let Some(attr) = found.attr else {
            return Ok(negative(if found.varies { Duration::ZERO } else { DYN_TTL }));
        };
        // A file whose content depends on the caller: an inode per calling thread (see the
        // module doc: a sendfile reader's page cache is then its own).
        let view = match attr.typ {
            NodeType::File if attr.view != 0 => thread_view(attr.view, caller_pid(ctx)),
            _ => attr.view,
        };
        let node = self.dyn_inodes.lookup(mirror, &path, attr.typ, view);
        let per_caller = found.varies || attr.view != 0;
        let (attr_timeout, entry_timeout) = match attr.typ {
            NodeType::File => (FILE_ATTR_TTL, if per_caller { Duration::ZERO } else { DYN_TTL }),
            NodeType::Dir | NodeType::Symlink => {
                (DYN_TTL, if per_caller { Duration::ZERO } else { DYN_TTL })
            }
        };
        Ok(Entry {
            inode: node.ino,
            generation: 0,
            attr: self.dyn_attr(&node, &attr, FILE_SIZE),
            attr_flags: 0,
            attr_timeout,
            entry_timeout,
        })
    }

    /// What dynamic node `node` is now for the caller (ENOENT when gone), with content.
    fn found(&self, ctx: &Context, node: &DynNode, content: bool) -> io::Result<FoundNode> {
        let found =
            self.source.lookup_dyn(asker(ctx), node.mirror, &node.path, content).map_err(errno)?;
        match found.attr {
            Some(attr) => Ok((attr, found.content)),
            None => Err(errno(libc::ENOENT)),
        }
    }

    /// Walks the entries of static directory `ino` from `offset` (0 = start; entry `i` has
    /// offset `i + 1`) until `add` reports a full buffer (returns 0).
    fn list(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(DirEntry<'_>, &Node) -> io::Result<usize>,
    ) -> io::Result<()> {
        let node = self.node(ino)?;
        let entries = self.tree.entries(node.ino).ok_or_else(|| errno(libc::ENOTDIR))?;
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, e) in entries.iter().enumerate().skip(skip) {
            let child = self.tree.get(e.ino).ok_or_else(|| errno(libc::EIO))?;
            let d_ino = if e.is_dir { e.ino } else { file_st_ino(file_ino(e.ino, 0)) };
            let dirent = DirEntry {
                ino: d_ino,
                offset: i as u64 + 1,
                type_: u32::from(if e.is_dir { libc::DT_DIR } else { libc::DT_REG }),
                name: e.name.as_bytes(),
            };
            if add(dirent, child)? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Walks the entries of dynamic directory `ino` (open as `handle`, or listed afresh)
    /// like [`VirtualFs::list`].
    fn list_dyn(
        &self,
        ctx: &Context,
        ino: u64,
        handle: u64,
        offset: u64,
        add: &mut dyn FnMut(DirEntry<'_>) -> io::Result<usize>,
    ) -> io::Result<()> {
        let DirRef::Mirror { mirror, path } = self.dir_ref(ino)? else {
            return Err(errno(libc::EIO));
        };
        let listed = self.handles.with(handle, |h| match h {
            Handle::Dir(entries) => Some(entries.clone()),
            Handle::File { .. } => None,
        });
        let entries = match listed.flatten() {
            Some(entries) => entries,
            None => self.source.list_dyn(asker(ctx), mirror, &path).map_err(errno)?,
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        let dots = [(".", NodeType::Dir), ("..", NodeType::Dir)];
        let all = dots
            .iter()
            .map(|(n, t)| (*n, *t))
            .chain(entries.iter().map(|e| (e.name.as_str(), e.typ)));
        for (i, (name, typ)) in all.enumerate().skip(skip) {
            let dirent = DirEntry {
                ino: pseudo_ino(mirror, &path, name),
                offset: i as u64 + 1,
                type_: u32::from(match typ {
                    NodeType::Dir => libc::DT_DIR,
                    NodeType::File => libc::DT_REG,
                    NodeType::Symlink => libc::DT_LNK,
                }),
                name: name.as_bytes(),
            };
            if add(dirent)? == 0 {
                break;
            }
        }
        Ok(())
    }
}

/// The asker of a FUSE request: its pid (thread id) in the mounter's (host) pid
/// namespace, 0 if the caller is not visible there (the service reports that as an error),
/// and its fsuid.
fn asker(ctx: &Context) -> Asker {
    Asker { pid: caller_pid(ctx), uid: ctx.uid }
}

fn caller_pid(ctx: &Context) -> u32 {
    u32::try_from(ctx.pid).unwrap_or(0)
}

pub(super) fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// A negative entry the kernel may cache for `ttl`.
fn negative(ttl: Duration) -> Entry {
    Entry { inode: 0, entry_timeout: ttl, ..Entry::default() }
}

/// A name a dynamic directory may hold.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}

/// The inode view of caller view `view` for thread `tid`.
fn thread_view(view: u64, tid: u32) -> u64 {
    (view ^ u64::from(tid).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1
}

/// A `d_ino` for a dynamic directory entry (readdir does not count lookups, so it cannot
/// hand out inode numbers): a stable hash of the path, in 31 bits.
fn pseudo_ino(mirror: usize, dir: &str, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ mirror as u64;
    for b in dir.bytes().chain([b'/']).chain(name.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h & 0x7fff_ffff) | 0x4000_0000
}

pub(super) fn set_times(st: &mut stat64, at: Duration) {
    let (secs, nsecs) = (at.as_secs() as i64, i64::from(at.subsec_nanos()));
    st.st_atime = secs;
    st.st_atime_nsec = nsecs;
    st.st_mtime = secs;
    st.st_mtime_nsec = nsecs;
    st.st_ctime = secs;
    st.st_ctime_nsec = nsecs;
}

fn make_attr(tree: &Tree, node: &Node, now: Duration) -> stat64 {
    // Entry::default() holds a zeroed stat64 (plain old data), no unsafe needed here.
    let mut st = Entry::default().attr;
    st.st_ino = node.ino;
    if node.is_dir() {
        st.st_mode = DIR_MODE;
        st.st_nlink = (2 + tree.subdir_count(node.ino)) as _;
    } else {
        let root_only = crate::views::ROOT_ONLY.contains(&node.path.as_str());
        st.st_mode = if root_only { ROOT_ONLY_FILE_MODE } else { FILE_MODE };
        st.st_nlink = 1;
    }
    st.st_uid = 0;
    st.st_gid = 0;
    st.st_size = FILE_SIZE;
    st.st_blksize = 4096;
    st.st_blocks = FILE_SIZE / 512;
    set_times(&mut st, now);
    st
}

impl<S: ContentSource> FileSystem for VirtualFs<S> {
    type Inode = u64;
    type Handle = u64;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        // Not WRITEBACK_CACHE: the kernel would never shrink a file's size to the end of a
        // short page-cache read, and splice would return zeroes up to `st_size`. Not
        // ZERO_MESSAGE_OPENDIR: it makes the kernel keep the listing of every directory,
        // and a dynamic directory's depends on the caller. Not ATOMIC_O_TRUNC: a truncating
        // open of a sysctl comes as SETATTR (size 0), accepted without effect, then OPEN.
        let wanted = FsOptions::ASYNC_READ
            | FsOptions::PARALLEL_DIROPS
            | FsOptions::DO_READDIRPLUS
            | FsOptions::READDIRPLUS_AUTO
            | FsOptions::MAX_PAGES;
        tracing::debug!(capable = ?capable, enabled = ?(capable & wanted), "FUSE init");
        Ok(wanted)
    }

    fn destroy(&self) {
        self.handles.clear();
        self.sized.clear();
        self.dyn_inodes.clear();
    }

    fn lookup(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        match self.dir_ref(parent)? {
            DirRef::Mirror { mirror, path } => self.lookup_dyn(ctx, mirror, &path, name.to_bytes()),
            DirRef::Static(dir) => match self.tree.lookup(dir.ino, name.to_bytes()) {
                Ok(Some(node)) => Ok(self.entry(node)),
                // A negative entry the kernel may cache as long as a directory entry.
                Ok(None) => Ok(negative(TTL)),
                Err(LookupError::NotADirectory) => Err(errno(libc::ENOTDIR)),
                Err(LookupError::NoParent) => Err(errno(libc::ENOENT)),
            },
        }
    }

    fn forget(&self, _ctx: &Context, inode: u64, count: u64) {
        if let Ino::Dynamic(ino) = Ino::decode(inode) {
            self.dyn_inodes.forget(ino, count);
        }
    }

    fn getattr(
        &self,
        ctx: &Context,
        inode: u64,
        handle: Option<u64>,
    ) -> io::Result<(stat64, Duration)> {
        let node = match self.resolve(inode) {
            Some(Resolved::Static(node)) => node,
            Some(Resolved::Dyn(node)) => return self.getattr_dyn(ctx, &node, handle),
            None => return Err(errno(libc::ENOENT)),
        };
        let Some(view) = node.view() else {
            return Ok((self.attr(node, inode, 0), TTL));
        };
        // fstat() of an open file: the length of its own snapshot. Otherwise (the permission
        // check of an open, stat) the caller's current rendering.
        let open_size = handle.and_then(|fh| self.open_size(fh));
        let size = match open_size {
            Some(len) => len,
            None => self.size_for(inode, view, caller_pid(ctx)),
        };
        let mut st = self.attr(node, inode, size);
        // A root-only view belongs to the caller's container root (the kernel's permission
        // check of the open asks this GETATTR, by the opener).
        if st.st_mode == ROOT_ONLY_FILE_MODE {
            if let Some((uid, gid)) = self.source.container_root(caller_pid(ctx)) {
                (st.st_uid, st.st_gid) = (uid, gid);
            }
        }
        Ok((st, FILE_ATTR_TTL))
    }

    fn setattr(
        &self,
        ctx: &Context,
        inode: u64,
        attr: stat64,
        _handle: Option<u64>,
        valid: SetattrValid,
    ) -> io::Result<(stat64, Duration)> {
        let Some(Resolved::Dyn(node)) = self.resolve(inode) else {
            return Err(errno(libc::EACCES));
        };
        // A truncating open of a writable file (O_TRUNC) or a time change: accepted,
        // without effect, as procfs does. Owner and mode changes: EPERM, as procfs.
        if valid.intersects(SetattrValid::MODE | SetattrValid::UID | SetattrValid::GID) {
            return Err(errno(libc::EPERM));
        }
        if valid.contains(SetattrValid::SIZE) && attr.st_size != 0 {
            return Err(errno(libc::EINVAL));
        }
        let (found, content) = self.found(ctx, &node, true)?;
        if node.typ != NodeType::File || !found.writable {
            tracing::debug!(pid = ctx.pid, uid = ctx.uid, path = %node.path, ?found, "setattr refused");
            return Err(errno(if node.typ == NodeType::Dir { libc::EISDIR } else { libc::EACCES }));
        }
        // The size of the content, not 0: the kernel takes the reply's size as the file's,
        // and a sendfile reader of this inode would read nothing.
        let size = match content {
            Some(Ok(data)) => i64::try_from(data.len()).unwrap_or(i64::MAX),
            _ => FILE_SIZE,
        };
        Ok((self.dyn_attr(&node, &found, size), FILE_ATTR_TTL))
    }

    fn readlink(&self, ctx: &Context, inode: u64) -> io::Result<Vec<u8>> {
        match self.resolve(inode) {
            Some(Resolved::Dyn(node)) if node.typ == NodeType::Symlink => {
                self.source.readlink_dyn(asker(ctx), node.mirror, &node.path).map_err(errno)
            }
            Some(_) => Err(errno(libc::EINVAL)),
            None => Err(errno(libc::ENOENT)),
        }
    }

    fn symlink(&self, _: &Context, _: &CStr, _: u64, _: &CStr) -> io::Result<Entry> {
        Err(errno(libc::EACCES))
    }

    fn mknod(&self, _: &Context, _: u64, _: &CStr, _: u32, _: u32, _: u32) -> io::Result<Entry> {
        Err(errno(libc::EACCES))
    }

    fn mkdir(&self, _: &Context, _: u64, _: &CStr, _: u32, _: u32) -> io::Result<Entry> {
        Err(errno(libc::EACCES))
    }

    fn unlink(&self, _: &Context, _: u64, _: &CStr) -> io::Result<()> {
        Err(errno(libc::EACCES))
    }

    fn rmdir(&self, _: &Context, _: u64, _: &CStr) -> io::Result<()> {
        Err(errno(libc::EACCES))
    }

    fn rename(&self, _: &Context, _: u64, _: &CStr, _: u64, _: &CStr, _: u32) -> io::Result<()> {
        Err(errno(libc::EACCES))
    }

    fn link(&self, _: &Context, _: u64, _: u64, _: &CStr) -> io::Result<Entry> {
        Err(errno(libc::EACCES))
    }

    fn open(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        _fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        let node = match self.resolve(inode) {
            Some(Resolved::Static(node)) => node,
            Some(Resolved::Dyn(node)) => return self.open_dyn(ctx, &node, flags),
            None => return Err(errno(libc::ENOENT)),
        };
        let view = node.view().ok_or_else(|| errno(libc::EISDIR))?;
        if flags as i32 & libc::O_ACCMODE != libc::O_RDONLY {
            return Err(errno(libc::EACCES));
        }
        // Always the caller's own view: the rendering its LOOKUP or GETATTR just sized (the
        // kernel's `st_size`), else a fresh one.
        let pid = caller_pid(ctx);
        let data = match self.take_sized(inode, pid) {
            Some(data) => data,
            None => self.render_view(node, view, pid)?,
        };
        Ok((Some(self.open_file(data, None)), OpenOptions::DIRECT_IO, None))
    }

    #[allow(clippy::type_complexity)]
    fn create(
        &self,
        _: &Context,
        _: u64,
        _: &CStr,
        _: CreateIn,
    ) -> io::Result<(Entry, Option<u64>, OpenOptions, Option<u32>)> {
        Err(errno(libc::EACCES))
    }

    /// Serves a slice of the handle's snapshot. A READ at offset 0 after the first one
    /// renders the file afresh for the reader and swaps it in (the reads at other offsets
    /// that follow continue it): tools such as top and vmstat keep /proc/stat open and
    /// `lseek(fd, 0)` + read every interval, as procfs (seq_file) allows. The first READ
    /// at 0 serves the open's rendering: the kernel's `st_size`, which a splice reader
    /// stops at, is its length.
    fn read(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        _lock_owner: Option<u64>,
        _flags: u32,
    ) -> io::Result<usize> {
        let serve = |h: &Handle<S::Target>, w: &mut dyn ZeroCopyWriter| match h {
            Handle::File { snapshot, .. } => {
                let part = snapshot.slice(offset, size as usize);
                w.write_all(part).map(|()| part.len())
            }
            Handle::Dir(_) => Err(errno(libc::EISDIR)),
        };
        if offset == 0 && self.restarted(handle)? {
            let fresh = Snapshot::new(self.rerender(ctx, inode)?);
            return self
                .handles
                .with_mut(handle, |h| {
                    if let Handle::File { snapshot, .. } = h {
                        *snapshot = fresh;
                    }
                    serve(h, w)
                })
                .unwrap_or_else(|| Err(errno(libc::EBADF)));
        }
        self.handles.with(handle, |h| serve(h, w)).unwrap_or_else(|| Err(errno(libc::EBADF)))
    }

    fn write(
        &self,
        _ctx: &Context,
        _inode: u64,
        handle: u64,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
        _lock_owner: Option<u64>,
        _delayed_write: bool,
        _flags: u32,
        _fuse_flags: u32,
    ) -> io::Result<usize> {
        let mut data = vec![0u8; size.min(MAX_WRITE) as usize];
        r.read_exact(&mut data)?;
        let result = self.handles.with(handle, |h| match h {
            Handle::File { target: Some(target), .. } => {
                self.source.write_dyn(target, offset, &data).map_err(errno)
            }
            _ => Err(errno(libc::EBADF)),
        });
        result.unwrap_or_else(|| Err(errno(libc::EBADF)))
    }

    /// ENOSYS: the kernel then treats flush as a success and never sends it again.
    fn flush(&self, _: &Context, _: u64, _: u64, _: u64) -> io::Result<()> {
        Err(errno(libc::ENOSYS))
    }

    fn fallocate(&self, _: &Context, _: u64, _: u64, _: u32, _: u64, _: u64) -> io::Result<()> {
        Err(errno(libc::EACCES))
    }

    fn release(
        &self,
        _ctx: &Context,
        _inode: u64,
        _flags: u32,
        handle: u64,
        _flush: bool,
        _flock_release: bool,
        _lock_owner: Option<u64>,
    ) -> io::Result<()> {
        self.handles.remove(handle);
        Ok(())
    }

    fn opendir(
        &self,
        ctx: &Context,
        inode: u64,
        _flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions)> {
        match self.dir_ref(inode)? {
            // Static: the kernel may keep the listing.
            DirRef::Static(_) => Ok((None, OpenOptions::CACHE_DIR | OpenOptions::KEEP_CACHE)),
            DirRef::Mirror { mirror, path } => {
                let entries = self.source.list_dyn(asker(ctx), mirror, &path).map_err(errno)?;
                Ok((Some(self.handles.insert(Handle::Dir(entries))), OpenOptions::empty()))
            }
        }
    }

    fn readdir(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        _size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        match self.dir_ref(inode)? {
            DirRef::Static(_) => self.list(inode, offset, |dirent, _| add_entry(dirent)),
            DirRef::Mirror { .. } => self.list_dyn(ctx, inode, handle, offset, add_entry),
        }
    }

    fn readdirplus(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        _size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        match self.dir_ref(inode)? {
            DirRef::Static(_) => self.list(inode, offset, |dirent, node| {
                // Static directories come with their entries. Files and mirror directories
                // do not: node id 0 tells the kernel to skip the entry part (files are looked
                // up per caller anyway, and sizing them would render every view of the
                // directory).
                let entry = if node.is_dir() && node.mirror().is_none() {
                    self.entry(node)
                } else {
                    negative(FILE_ENTRY_TTL)
                };
                add_entry(dirent, entry)
            }),
            // Dynamic entries are looked up per caller: none given here (and so no lookup
            // to count).
            DirRef::Mirror { .. } => self.list_dyn(ctx, inode, handle, offset, &mut |dirent| {
                add_entry(dirent, negative(Duration::ZERO))
            }),
        }
    }

    fn releasedir(&self, _: &Context, _: u64, _: u32, handle: u64) -> io::Result<()> {
        if handle != 0 {
            self.handles.remove(handle);
        }
        Ok(())
    }

    fn access(&self, _ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
        let mask = mask as i32;
        let is_dir = match self.resolve(inode) {
            Some(Resolved::Static(node)) => node.is_dir(),
            Some(Resolved::Dyn(node)) => node.typ == NodeType::Dir,
            None => return Err(errno(libc::ENOENT)),
        };
        if mask & libc::W_OK != 0 || (mask & libc::X_OK != 0 && !is_dir) {
            return Err(errno(libc::EACCES));
        }
        Ok(())
    }
}

impl<S: ContentSource> VirtualFs<S> {
    /// The length of open file `handle`'s snapshot.
    fn open_size(&self, handle: u64) -> Option<i64> {
        self.handles
            .with(handle, |h| match h {
                Handle::File { snapshot, .. } => {
                    Some(i64::try_from(snapshot.data.len()).unwrap_or(i64::MAX))
                }
                Handle::Dir(_) => None,
            })
            .flatten()
    }

    /// Stores an open file and returns its handle. Direct I/O: every read(2) comes to us,
    /// served from this handle's snapshot. No FOPEN_KEEP_CACHE: the kernel empties the
    /// inode's page cache, so a splice reader (which ignores direct I/O) fills it afresh
    /// through this handle.
    fn open_file(&self, data: Vec<u8>, target: Option<S::Target>) -> u64 {
        let started = AtomicBool::new(false);
        self.handles.insert(Handle::File { snapshot: Snapshot::new(data), target, started })
    }

    /// Notes a READ at offset 0 on `handle`: whether one was served before (the reader
    /// starts over and gets a new rendering).
    fn restarted(&self, handle: u64) -> io::Result<bool> {
        self.handles
            .with(handle, |h| match h {
                Handle::File { started, .. } => Ok(started.swap(true, Ordering::Relaxed)),
                Handle::Dir(_) => Err(errno(libc::EISDIR)),
            })
            .unwrap_or_else(|| Err(errno(libc::EBADF)))
    }

    /// The content of open file `inode` for the reader of `ctx`, now (through the view
    /// cache: within `--cache-ttl-ms`).
    fn rerender(&self, ctx: &Context, inode: u64) -> io::Result<Vec<u8>> {
        match self.resolve(inode) {
            Some(Resolved::Static(node)) => {
                let view = node.view().ok_or_else(|| errno(libc::EISDIR))?;
                self.render_view(node, view, caller_pid(ctx))
            }
            Some(Resolved::Dyn(node)) => self.dyn_content(ctx, &node),
            None => Err(errno(libc::ENOENT)),
        }
    }

    /// View `view` (of file `node`) for process `pid`; EIO if it cannot be rendered.
    fn render_view(&self, node: &Node, view: usize, pid: u32) -> io::Result<Vec<u8>> {
        self.source.content(view, pid).map_err(|err| match err {
            ServiceError::View(ViewError::Absent(_)) => errno(libc::ENOENT),
            err => {
                tracing::warn!(pid, path = %node.path, error = %err, "cannot render view");
                errno(libc::EIO)
            }
        })
    }

    /// The content of dynamic file `node` for the caller.
    fn dyn_content(&self, ctx: &Context, node: &DynNode) -> io::Result<Vec<u8>> {
        match self.found(ctx, node, true)? {
            (_, Some(Ok(data))) => Ok(data),
            (_, Some(Err(code))) => Err(errno(code)),
            (_, None) => Err(errno(libc::EISDIR)),
        }
    }

    fn getattr_dyn(
        &self,
        ctx: &Context,
        node: &DynNode,
        handle: Option<u64>,
    ) -> io::Result<(stat64, Duration)> {
        if node.typ != NodeType::File {
            let (attr, _) = self.found(ctx, node, false)?;
            return Ok((self.dyn_attr(node, &attr, 0), DYN_TTL));
        }
        if let Some(size) = handle.and_then(|fh| self.open_size(fh)) {
            let (attr, _) = self.found(ctx, node, false)?;
            return Ok((self.dyn_attr(node, &attr, size), FILE_ATTR_TTL));
        }
        let (attr, content) = self.found(ctx, node, true)?;
        let pid = caller_pid(ctx);
        let size = match content {
            Some(Ok(data)) => {
                let size = i64::try_from(data.len()).unwrap_or(i64::MAX);
                self.keep_sized(node.ino, pid, data);
                size
            }
            _ => FILE_SIZE,
        };
        Ok((self.dyn_attr(node, &attr, size), FILE_ATTR_TTL))
    }

    fn open_dyn(
        &self,
        ctx: &Context,
        node: &DynNode,
        flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        if node.typ != NodeType::File {
            return Err(errno(libc::EISDIR));
        }
        let access = flags as i32 & libc::O_ACCMODE;
        let target = match access {
            libc::O_RDONLY => None,
            _ => {
                // The content the permission check's GETATTR sized is before this write.
                self.sized.remove(&(node.ino, caller_pid(ctx)));
                let asker = asker(ctx);
                Some(self.source.open_write_dyn(asker, node.mirror, &node.path).map_err(errno)?)
            }
        };
        let data = match access {
            libc::O_WRONLY => Vec::new(),
            _ => match self.take_sized(node.ino, caller_pid(ctx)) {
                Some(data) => data,
                None => self.dyn_content(ctx, node)?,
            },
        };
        Ok((Some(self.open_file(data, target)), OpenOptions::DIRECT_IO, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuse::inode::ROOT_INO;
    use crate::sysctl::rules::MIRRORS;
    use crate::views::TABLE;
    use fuse_backend_rs::common::file_traits::FileReadWriteVolatile;
    use parking_lot::Mutex;
    use std::collections::HashMap;
    use std::ffi::CString;
    use std::sync::atomic::AtomicU32;

    /// Renders "view V for pid P #N" with N counting renders, so each rendering differs.
    /// Process P is in cgroup set P / 100; pid 0 cannot be identified.
    ///
    /// Mirror 0 holds `kernel/` (`panic`: per view, writable by uid 0, starts as "10";
    /// `ro`: the same for all, read-only), `link` -> `kernel`, and `net/` (existence
    /// varies: only pids below 1000 see it). A caller's view is its pid / 100 + 1.
    struct Fake {
        renders: AtomicU32,
        fail_view: Option<usize>,
        values: Mutex<HashMap<(u64, String), Vec<u8>>>,
    }

    fn fake_view(pid: u32) -> u64 {
        u64::from(pid / 100) + 1
    }

    impl Fake {
        fn attr(&self, asker: Asker, path: &str) -> Option<NodeAttr> {
            let attr =
                |typ, mode, view, writable| NodeAttr { typ, mode, uid: 0, gid: 0, view, writable };
            match path {
                "" | "kernel" => Some(attr(NodeType::Dir, 0o555, 0, false)),
                "net" if asker.pid < 1000 => Some(attr(NodeType::Dir, 0o555, 0, false)),
                "kernel/panic" => {
                    Some(attr(NodeType::File, 0o644, fake_view(asker.pid), asker.uid == 0))
                }
                "kernel/ro" => Some(attr(NodeType::File, 0o444, 0, false)),
                "link" => Some(attr(NodeType::Symlink, 0o777, 0, false)),
                _ => None,
            }
        }
    }

    impl ContentSource for Fake {
        type Target = (u64, String);

        fn content(&self, view: usize, pid: u32) -> Result<Vec<u8>, ServiceError> {
            if Some(view) == self.fail_view || pid == 0 {
                return Err(ServiceError::Caller(crate::caller::CallerError::Gone { pid }));
            }
            let n = self.renders.fetch_add(1, Ordering::Relaxed);
            Ok(format!("view {view} for pid {pid} #{n}\n").repeat(100).into_bytes())
        }

        /// Callers from pid 1000 on are a container's, whose root is host uid 100000.
        fn container_root(&self, pid: u32) -> Option<(u32, u32)> {
            (pid >= 1000).then_some((100_000, 100_000))
        }

        fn lookup_dyn(
            &self,
            asker: Asker,
            mirror: usize,
            path: &str,
            content: bool,
        ) -> Result<Found, i32> {
            if asker.pid == 0 {
                return Err(libc::EIO);
            }
            let attr = if mirror == 0 { self.attr(asker, path) } else { None };
            let varies = path == "net" || path.starts_with("net/");
            let content = match (&attr, content) {
                (Some(a), true) if a.typ == NodeType::File => Some(Ok(self
                    .values
                    .lock()
                    .get(&(a.view, path.to_string()))
                    .cloned()
                    .unwrap_or_else(|| b"10\n".to_vec()))),
                _ => None,
            };
            Ok(Found { attr, varies, content })
        }

        fn list_dyn(&self, asker: Asker, mirror: usize, path: &str) -> Result<Vec<Listed>, i32> {
            let entry = |name: &str, typ| Listed { name: name.into(), typ };
            match (mirror, path) {
                (0, "") => {
                    let mut all =
                        vec![entry("kernel", NodeType::Dir), entry("link", NodeType::Symlink)];
                    if asker.pid < 1000 {
                        all.push(entry("net", NodeType::Dir));
                    }
                    Ok(all)
                }
                (0, "kernel") => {
                    Ok(vec![entry("panic", NodeType::File), entry("ro", NodeType::File)])
                }
                _ => Err(libc::ENOENT),
            }
        }

        fn open_write_dyn(
            &self,
            asker: Asker,
            mirror: usize,
            path: &str,
        ) -> Result<Self::Target, i32> {
            match self.lookup_dyn(asker, mirror, path, false)?.attr {
                Some(a) if a.writable => Ok((a.view, path.to_string())),
                Some(_) => Err(libc::EACCES),
                None => Err(libc::ENOENT),
            }
        }

        fn write_dyn(&self, target: &Self::Target, offset: u64, data: &[u8]) -> Result<usize, i32> {
            if offset != 0 {
                return Ok(data.len());
            }
            if !data.iter().all(|c| c.is_ascii_digit() || *c == b'\n') {
                return Err(libc::EINVAL);
            }
            self.values.lock().insert(target.clone(), data.to_vec());
            Ok(data.len())
        }

        fn readlink_dyn(&self, _asker: Asker, _mirror: usize, path: &str) -> Result<Vec<u8>, i32> {
            (path == "link").then(|| b"kernel".to_vec()).ok_or(libc::EINVAL)
        }
    }

    struct VecWriter(Vec<u8>);

    impl io::Write for VecWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl ZeroCopyWriter for VecWriter {
        fn write_from(
            &mut self,
            _f: &mut dyn FileReadWriteVolatile,
            _count: usize,
            _off: u64,
        ) -> io::Result<usize> {
            unimplemented!("not used by VirtualFs")
        }
        fn available_bytes(&self) -> usize {
            usize::MAX
        }
    }

    fn fs(fail_view: Option<usize>) -> VirtualFs<Fake> {
        let fake =
            Fake { renders: AtomicU32::new(0), fail_view, values: Mutex::new(HashMap::new()) };
        VirtualFs::new(Tree::from_table().unwrap(), fake)
    }

    fn ctx(pid: i32) -> Context {
        Context { uid: 0, gid: 0, pid }
    }

    fn view_of(path: &str) -> usize {
        TABLE.iter().position(|s| s.path == path).unwrap()
    }

    /// Looks `path` up from the root as process `pid`.
    fn resolve_as(fs: &VirtualFs<Fake>, pid: i32, path: &str) -> Entry {
        let mut ino = ROOT_INO;
        let mut entry = Entry { inode: ROOT_INO, ..Entry::default() };
        for part in path.split('/') {
            entry = fs.lookup(&ctx(pid), ino, &CString::new(part).unwrap()).unwrap();
            assert_ne!(entry.inode, 0, "{path}: {part} not found");
            ino = entry.inode;
        }
        entry
    }

    fn resolve(fs: &VirtualFs<Fake>, path: &str) -> Entry {
        resolve_as(fs, 1, path)
    }

    fn open(fs: &VirtualFs<Fake>, pid: i32, ino: u64) -> u64 {
        let (fh, opts, _) = fs.open(&ctx(pid), ino, libc::O_RDONLY as u32, 0).unwrap();
        assert!(opts.contains(OpenOptions::DIRECT_IO));
        assert!(!opts.contains(OpenOptions::KEEP_CACHE));
        fh.unwrap()
    }

    fn read(
        fs: &VirtualFs<Fake>,
        ino: u64,
        fh: u64,
        size: u32,
        offset: u64,
    ) -> io::Result<Vec<u8>> {
        read_as(fs, 1, ino, fh, size, offset)
    }

    /// A READ by process `pid`.
    fn read_as(
        fs: &VirtualFs<Fake>,
        pid: i32,
        ino: u64,
        fh: u64,
        size: u32,
        offset: u64,
    ) -> io::Result<Vec<u8>> {
        let mut w = VecWriter(Vec::new());
        let n = fs.read(&ctx(pid), ino, fh, &mut w, size, offset, None, 0)?;
        assert_eq!(n, w.0.len());
        Ok(w.0)
    }

    /// Reads `fh` from `offset` to the end in READs of `chunk` bytes.
    fn read_rest(fs: &VirtualFs<Fake>, ino: u64, fh: u64, chunk: u32, offset: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let part = read(fs, ino, fh, chunk, offset + out.len() as u64).unwrap();
            if part.is_empty() {
                return out;
            }
            out.extend(part);
        }
    }

    fn rendering(view: usize, pid: u32, n: u32) -> Vec<u8> {
        format!("view {view} for pid {pid} #{n}\n").repeat(100).into_bytes()
    }

    #[test]
    fn attributes_of_files_and_dirs() {
        let fs = fs(None);
        for spec in TABLE {
            let n = fs.source.renders.load(Ordering::Relaxed);
            let entry = resolve(&fs, spec.path);
            assert_eq!(fs.source.renders.load(Ordering::Relaxed), n, "a lookup renders nothing");
            let perm = if crate::views::ROOT_ONLY.contains(&spec.path) { 0o400 } else { 0o444 };
            assert_eq!(entry.attr.st_mode, libc::S_IFREG | perm, "{}", spec.path);
            assert_eq!(entry.attr.st_size, FILE_SIZE, "{}: sized by the next GETATTR", spec.path);
            assert_eq!(entry.attr.st_blocks, (FILE_SIZE + 511) / 512);
            assert_eq!(entry.attr.st_uid, 0);
            assert_eq!(entry.attr.st_ino, file_st_ino(entry.inode));
            assert_eq!(entry.entry_timeout, FILE_ENTRY_TTL);
            assert_eq!(entry.attr_timeout, FILE_ATTR_TTL);
            let (st, ttl) = fs.getattr(&ctx(1), entry.inode, None).unwrap();
            assert_eq!(st.st_ino, file_st_ino(entry.inode));
            assert_eq!(st.st_mode, libc::S_IFREG | perm);
            assert_eq!(st.st_size, rendering(view_of(spec.path), 1, n).len() as i64);
            assert_eq!(ttl, FILE_ATTR_TTL);
            // A container's caller: root-only views are its root's, the others the host's.
            let (st, _) = fs.getattr(&ctx(1000), entry.inode, None).unwrap();
            let owner = if perm == 0o400 { 100_000 } else { 0 };
            assert_eq!((st.st_uid, st.st_gid), (owner, owner), "{}", spec.path);
        }
        let (root, ttl) = fs.getattr(&ctx(1), ROOT_INO, None).unwrap();
        assert_eq!(root.st_mode, libc::S_IFDIR | 0o555);
        assert_eq!(root.st_nlink, 4); // ".", "..", proc, sys
        assert_eq!(ttl, TTL);
        let proc_dir = resolve(&fs, "proc");
        assert_eq!(proc_dir.attr.st_mode, libc::S_IFDIR | 0o555);
        assert_eq!((proc_dir.entry_timeout, proc_dir.attr_timeout), (TTL, TTL));
        assert_eq!(proc_dir.inode, proc_dir.attr.st_ino);
        assert_eq!(fs.getattr(&ctx(1), 0, None).unwrap_err().raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn every_caller_gets_the_same_file_inode() {
        let fs = fs(None);
        let view = view_of("proc/meminfo");
        let a = resolve_as(&fs, 100, "proc/meminfo").inode;
        let b = resolve_as(&fs, 200, "proc/meminfo").inode;
        // One inode whoever looks: a lookup by another caller must never invalidate the
        // dentry a runtime has opened to bind-mount.
        assert_eq!(a, b);
        assert_eq!(resolve_as(&fs, 100, "proc").inode, resolve_as(&fs, 200, "proc").inode);
        assert_ne!(a, resolve_as(&fs, 100, "proc/stat").inode);
        // An open always renders for the actual caller.
        for pid in [300, 201] {
            let fh = open(&fs, pid, a);
            let body = read(&fs, a, fh, 1 << 20, 0).unwrap();
            assert!(body.starts_with(format!("view {view} for pid {pid} #").as_bytes()));
            fs.release(&ctx(pid), a, 0, fh, false, false, None).unwrap();
        }
        // The plain tree number of a file is not an inode the kernel ever gets.
        let node = fs.tree().lookup(ROOT_INO, b"proc").unwrap().unwrap().ino;
        let tree_ino = fs.tree().lookup(node, b"meminfo").unwrap().unwrap().ino;
        let err = fs.open(&ctx(100), tree_ino, libc::O_RDONLY as u32, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        let err = fs.getattr(&ctx(1), tree_ino, None).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn unidentified_callers_get_eio_on_open_only() {
        let fs = fs(None);
        let proc_dir = resolve(&fs, "proc");
        let meminfo = CString::new("meminfo").unwrap();
        let entry = fs.lookup(&ctx(0), proc_dir.inode, &meminfo).unwrap();
        assert_eq!(entry.attr.st_size, FILE_SIZE);
        let dir = fs.lookup(&ctx(0), ROOT_INO, &CString::new("proc").unwrap()).unwrap();
        assert_eq!(dir.inode, proc_dir.inode);
        let ino = resolve(&fs, "proc/meminfo").inode;
        let err = fs.open(&ctx(0), ino, libc::O_RDONLY as u32, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        let (st, _) = fs.getattr(&ctx(0), ino, None).unwrap();
        assert_eq!(st.st_size, FILE_SIZE);
    }

    #[test]
    fn unknown_names_are_cached_negative_entries() {
        let fs = fs(None);
        let proc_dir = resolve(&fs, "proc");
        let name = CString::new("nope").unwrap();
        let entry = fs.lookup(&ctx(1), proc_dir.inode, &name).unwrap();
        assert_eq!(entry.inode, 0);
        assert_eq!(entry.entry_timeout, TTL);
        let file = resolve(&fs, "proc/meminfo");
        let err = fs.lookup(&ctx(1), file.inode, &name).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
        let err = fs.lookup(&ctx(1), 9999, &name).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn open_snapshots_once_and_reads_slices() {
        let fs = fs(None);
        let view = view_of("proc/meminfo");
        let ino = resolve(&fs, "proc/meminfo").inode; // lookups render nothing
        let fh = open(&fs, 42, ino); // render #0
        let whole = read(&fs, ino, fh, 1 << 20, 0).unwrap();
        assert_eq!(whole, rendering(view, 42, 0));
        // Small reads at other offsets on the same handle: same snapshot, same bytes.
        assert_eq!(read_rest(&fs, ino, fh, 13, 1), whole[1..]);
        assert_eq!(read(&fs, ino, fh, 10, 5).unwrap(), whole[5..15]);
        assert_eq!(fs.source.renders.load(Ordering::Relaxed), 1);
        // A second open renders again.
        let fh2 = open(&fs, 43, ino);
        let second = read(&fs, ino, fh2, 1 << 20, 0).unwrap();
        assert_eq!(second, rendering(view, 43, 1));
        assert_eq!(fs.open_handles(), 2);
        fs.release(&ctx(1), ino, 0, fh, false, false, None).unwrap();
        fs.release(&ctx(1), ino, 0, fh2, false, false, None).unwrap();
        assert_eq!(fs.open_handles(), 0);
        let err = read(&fs, ino, fh, 10, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn a_read_from_offset_0_renders_afresh_and_later_offsets_continue_it() {
        let fs = fs(None);
        let view = view_of("proc/stat");
        let ino = resolve(&fs, "proc/stat").inode;
        let (st, _) = fs.getattr(&ctx(7), ino, None).unwrap(); // render #0, sized
        let fh = open(&fs, 7, ino);
        // The first READ at 0 serves what the open's GETATTR sized (a splice reader stops at
        // that `st_size`), even in small pieces.
        let first = read_as(&fs, 7, ino, fh, 100, 0).unwrap();
        assert_eq!(first, rendering(view, 7, 0)[..100]);
        assert_eq!(read_rest(&fs, ino, fh, 100, 100), rendering(view, 7, 0)[100..]);
        assert_eq!(st.st_size, rendering(view, 7, 0).len() as i64);
        // lseek(fd, 0) + read, as top does every interval: rendered again for the reader,
        // and the reads at other offsets that follow continue that rendering, untorn.
        for n in 1..=12 {
            let head = read_as(&fs, 7, ino, fh, 50, 0).unwrap();
            let rest = read_rest(&fs, ino, fh, 77, 50);
            assert_eq!([head, rest].concat(), rendering(view, 7, n), "restart {n}");
        }
        // The length changed (#12 is longer than #9): fstat follows the handle's rendering.
        let (st, _) = fs.getattr(&ctx(7), ino, Some(fh)).unwrap();
        assert_eq!(st.st_size, rendering(view, 7, 12).len() as i64);
        // A reader other than the opener gets its own view from the start.
        let other = read_as(&fs, 250, ino, fh, 1 << 20, 0).unwrap();
        assert_eq!(other, rendering(view, 250, 13));
        // A reader that cannot be identified gets EIO, and the handle keeps its content.
        let err = read_as(&fs, 0, ino, fh, 1 << 20, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        assert_eq!(read(&fs, ino, fh, 1 << 20, 1).unwrap(), rendering(view, 250, 13)[1..]);
        fs.release(&ctx(7), ino, 0, fh, false, false, None).unwrap();
        let err = read(&fs, ino, fh, 10, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        // Directory handles are not files.
        let (dir_fh, _) = fs.opendir(&ctx(1), resolve(&fs, "proc/sys").inode, 0).unwrap();
        let err = read(&fs, ino, dir_fh.unwrap(), 10, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EISDIR));
    }

    #[test]
    fn open_serves_the_rendering_its_getattr_sized() {
        let fs = fs(None);
        let view = view_of("proc/stat");
        // LOOKUP sizes nothing; GETATTR by pid 7 sizes render #0 and the open serves it.
        let entry = resolve_as(&fs, 7, "proc/stat");
        assert_eq!(fs.pending_sizes(), 0);
        let (st, _) = fs.getattr(&ctx(7), entry.inode, None).unwrap();
        assert_eq!(fs.pending_sizes(), 1);
        let fh = open(&fs, 7, entry.inode);
        assert_eq!(fs.pending_sizes(), 0);
        let body = read(&fs, entry.inode, fh, 1 << 20, 0).unwrap();
        assert_eq!(body, rendering(view, 7, 0));
        assert_eq!(st.st_size, body.len() as i64);
        // Again: GETATTR (render #1), then the open of the same thread.
        let (st, _) = fs.getattr(&ctx(7), entry.inode, None).unwrap();
        let fh2 = open(&fs, 7, entry.inode);
        let body2 = read(&fs, entry.inode, fh2, 1 << 20, 0).unwrap();
        assert_eq!(body2, rendering(view, 7, 1));
        assert_eq!(st.st_size, body2.len() as i64);
        // Another thread's sizing is not taken; an open without one renders afresh.
        fs.getattr(&ctx(8), entry.inode, None).unwrap(); // #2, kept for pid 8
        let fh3 = open(&fs, 7, entry.inode); // #3
        assert_eq!(read(&fs, entry.inode, fh3, 1 << 20, 0).unwrap(), rendering(view, 7, 3));
        assert_eq!(fs.pending_sizes(), 1);
        // fstat of an open file: its own snapshot's length, nothing rendered or kept.
        let (st, _) = fs.getattr(&ctx(9), entry.inode, Some(fh3)).unwrap();
        assert_eq!(st.st_size, rendering(view, 7, 3).len() as i64);
        assert_eq!(fs.pending_sizes(), 1);
        fs.destroy();
        assert_eq!(fs.pending_sizes(), 0);
        assert_eq!(fs.open_handles(), 0);
    }

    #[test]
    fn sizings_nobody_opens_are_swept() {
        let fs = fs(None);
        let ino = resolve(&fs, "proc/uptime").inode;
        for pid in 1..=3 * SIZED_SWEEP_EVERY as i32 {
            fs.getattr(&ctx(pid), ino, None).unwrap();
        }
        // Still fresh: nothing swept yet.
        assert_eq!(fs.pending_sizes(), 3 * SIZED_SWEEP_EVERY as usize);
        // Age them, then one sweep drops every stale one.
        for mut e in fs.sized.iter_mut() {
            e.at -= SIZED_TTL;
        }
        while !fs.sized_inserts.load(Ordering::Relaxed).is_multiple_of(SIZED_SWEEP_EVERY) {
            fs.getattr(&ctx(100_000), ino, None).unwrap();
        }
        fs.getattr(&ctx(100_001), ino, None).unwrap();
        assert!(fs.pending_sizes() <= 2, "{}", fs.pending_sizes());
        // A stale sizing is not served: the open renders afresh.
        fs.getattr(&ctx(5), ino, None).unwrap();
        fs.sized.get_mut(&(ino, 5)).unwrap().at -= SIZED_TTL;
        let n = fs.source.renders.load(Ordering::Relaxed);
        let fh = open(&fs, 5, ino);
        let body = read(&fs, ino, fh, 1 << 20, 0).unwrap();
        assert_eq!(body, rendering(view_of("proc/uptime"), 5, n));
    }

    #[test]
    fn writes_are_refused() {
        let fs = fs(None);
        let ino = resolve(&fs, "proc/meminfo").inode;
        for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_WRONLY | libc::O_TRUNC] {
            let err = fs.open(&ctx(1), ino, flags as u32, 0).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EACCES));
        }
        assert_eq!(fs.open_handles(), 0);
        let name = CString::new("new").unwrap();
        let err = fs.mkdir(&ctx(1), ROOT_INO, &name, 0o755, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));
        let err = fs.unlink(&ctx(1), ROOT_INO, &name).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));
        let err = fs.access(&ctx(1), ino, libc::W_OK as u32).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));
        fs.access(&ctx(1), ino, libc::R_OK as u32).unwrap();
        fs.access(&ctx(1), ROOT_INO, (libc::R_OK | libc::X_OK) as u32).unwrap();
        let (attrs, _) = fs.getattr(&ctx(1), ino, None).unwrap();
        let err = fs.setattr(&ctx(1), ino, attrs, None, SetattrValid::SIZE).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));
        // No write-back caching is asked for: nothing is ever written.
        let opts = fs.init(FsOptions::all()).unwrap();
        assert!(!opts.contains(FsOptions::WRITEBACK_CACHE));
    }

    #[test]
    fn service_errors_become_eio() {
        let fs = fs(Some(view_of("proc/stat")));
        let entry = resolve(&fs, "proc/stat");
        assert_eq!(entry.attr.st_size, FILE_SIZE);
        let err = fs.open(&ctx(7), entry.inode, libc::O_RDONLY as u32, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        assert_eq!(fs.open_handles(), 0);
        // Other views still work.
        let ok = resolve(&fs, "proc/meminfo").inode;
        assert!(fs.open(&ctx(7), ok, libc::O_RDONLY as u32, 0).is_ok());
    }

    #[test]
    fn directories_cannot_be_opened_as_files() {
        let fs = fs(None);
        let err = fs.open(&ctx(1), ROOT_INO, libc::O_RDONLY as u32, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EISDIR));
        let file = resolve(&fs, "proc/uptime").inode;
        let err = fs.opendir(&ctx(1), file, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
        // A static directory: a handle-less open whose listing the kernel keeps.
        let (fh, opts) = fs.opendir(&ctx(1), ROOT_INO, 0).unwrap();
        assert_eq!(fh, None);
        assert!(opts.contains(OpenOptions::CACHE_DIR | OpenOptions::KEEP_CACHE));
        // Never ZERO_MESSAGE_OPENDIR: the kernel would keep every listing, dynamic ones too.
        let opts = fs.init(FsOptions::all()).unwrap();
        assert!(!opts.contains(FsOptions::ZERO_MESSAGE_OPENDIR));
        assert!(!opts.contains(FsOptions::ATOMIC_O_TRUNC));
        let err = fs.open(&ctx(1), resolve(&fs, "proc/sys").inode, libc::O_RDONLY as u32, 0);
        assert_eq!(err.unwrap_err().raw_os_error(), Some(libc::EISDIR));
    }

    /// The inode of mirror 0 (`proc/sys`).
    fn sysctl_root(fs: &VirtualFs<Fake>) -> u64 {
        resolve(fs, "proc/sys").inode
    }

    fn lookup(fs: &VirtualFs<Fake>, pid: i32, parent: u64, name: &str) -> Entry {
        fs.lookup(&ctx(pid), parent, &CString::new(name).unwrap()).unwrap()
    }

    #[test]
    fn dynamic_lookups_count_and_forget() {
        let fs = fs(None);
        let root = sysctl_root(&fs);
        let root_entry = resolve(&fs, "proc/sys");
        assert_eq!((root_entry.entry_timeout, root_entry.attr.st_mode), (TTL, DIR_MODE));
        let kernel = lookup(&fs, 1, root, "kernel");
        assert!(kernel.inode & super::super::inode::DYN_INO_FLAG != 0);
        assert_eq!(kernel.attr.st_mode, libc::S_IFDIR | 0o555);
        assert_eq!((kernel.entry_timeout, kernel.attr_timeout), (DYN_TTL, DYN_TTL));
        assert_eq!(lookup(&fs, 2, root, "kernel").inode, kernel.inode, "shared by every caller");
        // A per-view file: an inode per view and thread, never cached.
        let a = lookup(&fs, 1, kernel.inode, "panic");
        let b = lookup(&fs, 150, kernel.inode, "panic");
        let a2 = lookup(&fs, 1, kernel.inode, "panic");
        let other_thread = lookup(&fs, 2, kernel.inode, "panic");
        assert_ne!(a.inode, b.inode);
        assert_eq!(a.inode, a2.inode);
        assert_ne!(a.inode, other_thread.inode, "the same view, another thread");
        assert_eq!((a.entry_timeout, a.attr_timeout), (Duration::ZERO, FILE_ATTR_TTL));
        assert_eq!(a.attr.st_mode, libc::S_IFREG | 0o644);
        assert_ne!(a.attr.st_ino, kernel.attr.st_ino);
        // A shared read-only file is cached like its directory.
        let ro = lookup(&fs, 1, kernel.inode, "ro");
        assert_eq!((ro.entry_timeout, ro.attr_timeout), (DYN_TTL, FILE_ATTR_TTL));
        // Negative entries: cached unless existence varies.
        assert_eq!(lookup(&fs, 1, kernel.inode, "nope").inode, 0);
        assert_eq!(lookup(&fs, 1, kernel.inode, "nope").entry_timeout, DYN_TTL);
        let net = lookup(&fs, 1, root, "net");
        assert_ne!(net.inode, 0);
        assert_eq!(net.entry_timeout, Duration::ZERO, "varies between callers");
        let missing = lookup(&fs, 5000, root, "net");
        assert_eq!((missing.inode, missing.entry_timeout), (0, Duration::ZERO));
        // Below a file, and bad names.
        let err = fs.lookup(&ctx(1), a.inode, &CString::new("x").unwrap()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
        assert_eq!(lookup(&fs, 1, root, "..").inode, 0);
        // kernel x2, panic x4 (3 inodes), ro, net: 6 inodes held.
        assert_eq!(fs.dynamic_inodes(), 6);
        fs.forget(&ctx(1), kernel.inode, 1);
        assert!(fs.getattr(&ctx(1), kernel.inode, None).is_ok(), "one lookup left");
        fs.batch_forget(
            &ctx(1),
            vec![(kernel.inode, 1), (a.inode, 2), (b.inode, 1), (other_thread.inode, 1)],
        );
        assert_eq!(fs.dynamic_inodes(), 2);
        let err = fs.getattr(&ctx(1), a.inode, None).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        // Forgetting static or unknown inodes is harmless.
        fs.forget(&ctx(1), ROOT_INO, 1);
        fs.forget(&ctx(1), a.inode, 1);
        // A new lookup gets a new number.
        assert_ne!(lookup(&fs, 1, root, "kernel").inode, kernel.inode);
    }

    #[test]
    fn dynamic_files_size_read_and_write() {
        let fs = fs(None);
        let kernel = lookup(&fs, 1, sysctl_root(&fs), "kernel").inode;
        let panic = lookup(&fs, 1, kernel, "panic").inode;
        let (st, ttl) = fs.getattr(&ctx(1), panic, None).unwrap();
        assert_eq!((st.st_size, ttl), (3, FILE_ATTR_TTL));
        // The open serves the sized content.
        let fh = open(&fs, 1, panic);
        assert_eq!(read(&fs, panic, fh, 100, 0).unwrap(), b"10\n");
        let kept_open = open(&fs, 1, panic);
        assert_eq!(read(&fs, panic, kept_open, 100, 0).unwrap(), b"10\n");
        fs.release(&ctx(1), panic, 0, fh, false, false, None).unwrap();
        // echo 7 > panic: SETATTR (size 0), OPEN O_WRONLY|O_TRUNC, WRITE.
        let (mut st, _) = fs.getattr(&ctx(1), panic, None).unwrap();
        st.st_size = 0;
        let (st, _) = fs.setattr(&ctx(1), panic, st, None, SetattrValid::SIZE).unwrap();
        assert_eq!(st.st_size, 3, "the content's size: the kernel takes it as the file's");
        let flags = (libc::O_WRONLY | libc::O_TRUNC) as u32;
        let (fh, opts, _) = fs.open(&ctx(1), panic, flags, 0).unwrap();
        assert!(opts.contains(OpenOptions::DIRECT_IO));
        let fh = fh.unwrap();
        assert_eq!(write(&fs, panic, fh, b"7\n", 0).unwrap(), 2);
        let err = write(&fs, panic, fh, b"x\n", 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        fs.release(&ctx(1), panic, 0, fh, false, false, None).unwrap();
        let fh = open(&fs, 1, panic);
        assert_eq!(read(&fs, panic, fh, 100, 0).unwrap(), b"7\n");
        // A handle opened before the write: read again from 0, it shows the new value.
        assert_eq!(read(&fs, panic, kept_open, 100, 1).unwrap(), b"0\n", "its own snapshot");
        assert_eq!(read(&fs, panic, kept_open, 100, 0).unwrap(), b"7\n");
        // Another view still reads its own.
        let other = lookup(&fs, 150, kernel, "panic").inode;
        let fh = open(&fs, 150, other);
        assert_eq!(read(&fs, other, fh, 100, 0).unwrap(), b"10\n");
        // Not writable for this caller (uid 1000), nor ever for a read-only file.
        let err = fs.open(&Context { uid: 1000, gid: 0, pid: 1 }, panic, flags, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));
        let ro = lookup(&fs, 1, kernel, "ro").inode;
        let err = fs.open(&ctx(1), ro, libc::O_RDWR as u32, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));
        let (mut st, _) = fs.getattr(&ctx(1), ro, None).unwrap();
        st.st_size = 0;
        let err = fs.setattr(&ctx(1), ro, st, None, SetattrValid::SIZE).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));
        // chmod and chown: EPERM; truncation to a size: EINVAL.
        let err = fs.setattr(&ctx(1), panic, st, None, SetattrValid::MODE).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        let mut sized = st;
        sized.st_size = 5;
        let err = fs.setattr(&ctx(1), panic, sized, None, SetattrValid::SIZE).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        // A handle opened read-only takes no writes.
        let fh = open(&fs, 1, panic);
        let err = write(&fs, panic, fh, b"1", 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        // Static files stay read-only.
        let meminfo = resolve(&fs, "proc/meminfo").inode;
        let err = fs.setattr(&ctx(1), meminfo, st, None, SetattrValid::SIZE).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));
    }

    fn write(
        fs: &VirtualFs<Fake>,
        ino: u64,
        fh: u64,
        data: &[u8],
        offset: u64,
    ) -> io::Result<usize> {
        struct Bytes<'a>(&'a [u8]);
        impl io::Read for Bytes<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.0.read(buf)
            }
        }
        impl ZeroCopyReader for Bytes<'_> {
            fn read_to(
                &mut self,
                _f: &mut dyn FileReadWriteVolatile,
                _count: usize,
                _off: u64,
            ) -> io::Result<usize> {
                unimplemented!("not used by VirtualFs")
            }
        }
        let mut r = Bytes(data);
        fs.write(&ctx(1), ino, fh, &mut r, data.len() as u32, offset, None, false, 0, 0)
    }

    #[test]
    fn dynamic_directories_list_per_caller_into_handles() {
        let fs = fs(None);
        let root = sysctl_root(&fs);
        let list = |pid: i32| {
            let (fh, opts) = fs.opendir(&ctx(pid), root, 0).unwrap();
            assert!(!opts.contains(OpenOptions::CACHE_DIR), "never cached");
            let fh = fh.expect("a handle with the listing");
            let mut names = Vec::new();
            fs.readdir(&ctx(pid), root, fh, 4096, 0, &mut |d| {
                names.push(String::from_utf8(d.name.to_vec()).unwrap());
                Ok(1)
            })
            .unwrap();
            // readdirplus gives no entries (no lookup counted).
            fs.readdirplus(&ctx(pid), root, fh, 4096, 2, &mut |d, e| {
                assert_eq!(e.inode, 0);
                assert_ne!(d.ino, 0);
                Ok(1)
            })
            .unwrap();
            fs.releasedir(&ctx(pid), root, 0, fh).unwrap();
            names
        };
        assert_eq!(list(1), [".", "..", "kernel", "link", "net"]);
        assert_eq!(list(5000), [".", "..", "kernel", "link"]);
        assert_eq!(fs.open_handles(), 0);
        // Resuming at an offset, with the handle's snapshot.
        let (fh, _) = fs.opendir(&ctx(1), root, 0).unwrap();
        let mut rest = Vec::new();
        fs.readdir(&ctx(1), root, fh.unwrap(), 4096, 3, &mut |d| {
            rest.push((String::from_utf8(d.name.to_vec()).unwrap(), d.offset, d.type_));
            Ok(1)
        })
        .unwrap();
        assert_eq!(
            rest,
            [
                ("link".into(), 4, u32::from(libc::DT_LNK)),
                ("net".into(), 5, u32::from(libc::DT_DIR))
            ]
        );
        // A symlink reads back.
        let link = lookup(&fs, 1, root, "link");
        assert_eq!(link.attr.st_mode & libc::S_IFMT, libc::S_IFLNK);
        assert_eq!(fs.readlink(&ctx(1), link.inode).unwrap(), b"kernel");
        let kernel = lookup(&fs, 1, root, "kernel").inode;
        assert_eq!(fs.readlink(&ctx(1), kernel).unwrap_err().raw_os_error(), Some(libc::EINVAL));
        let err = fs.opendir(&ctx(1), lookup(&fs, 1, kernel, "ro").inode, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
    }

    #[test]
    fn readdir_resumes_at_offsets_and_stops_when_full() {
        let fs = fs(None);
        let proc_dir = resolve(&fs, "proc").inode;
        let mut all = Vec::new();
        fs.readdir(&ctx(1), proc_dir, 0, 4096, 0, &mut |d| {
            all.push((String::from_utf8(d.name.to_vec()).unwrap(), d.offset, d.ino));
            Ok(1)
        })
        .unwrap();
        let names: Vec<&str> = all.iter().map(|(n, _, _)| n.as_str()).collect();
        let mut want = vec![".", ".."];
        // The view files and directories (`pressure`) and the mirror directory (`sys`) of
        // `proc`.
        let mut files: Vec<&str> = TABLE
            .iter()
            .map(|s| s.path)
            .chain(MIRRORS.iter().map(|m| m.path))
            .filter_map(|p| p.strip_prefix("proc/"))
            .map(|p| p.split('/').next().unwrap_or(p))
            .collect();
        files.sort();
        files.dedup();
        want.extend(files);
        assert_eq!(names, want);
        // Files are listed with the lister's inode numbers.
        let (_, _, meminfo_ino) = all.iter().find(|(n, _, _)| n == "meminfo").unwrap();
        assert_eq!(*meminfo_ino, file_st_ino(resolve(&fs, "proc/meminfo").inode));
        let mut unidentified = Vec::new();
        fs.readdir(&ctx(0), proc_dir, 0, 4096, 0, &mut |d| {
            unidentified.push(d.ino);
            Ok(1)
        })
        .unwrap();
        assert_eq!(unidentified, all.iter().map(|(_, _, ino)| *ino).collect::<Vec<_>>());
        // Resume after the third entry, and stop after one when the buffer is "full".
        let mut rest = Vec::new();
        let mut calls = 0;
        fs.readdir(&ctx(1), proc_dir, 0, 4096, all[2].1, &mut |d| {
            calls += 1;
            rest.push(String::from_utf8(d.name.to_vec()).unwrap());
            Ok(if calls == 2 { 0 } else { 1 })
        })
        .unwrap();
        assert_eq!(rest, [all[3].0.clone(), all[4].0.clone()]);
        // readdirplus: directories with their entries, files without (node id 0: looked up
        // per caller), and nothing rendered for them.
        let renders = fs.source.renders.load(Ordering::Relaxed);
        let mut plus = Vec::new();
        fs.readdirplus(&ctx(1), ROOT_INO, 0, 4096, 0, &mut |d, e| {
            assert_eq!(d.ino, e.inode);
            assert_eq!(e.attr.st_ino, e.inode);
            plus.push(String::from_utf8(d.name.to_vec()).unwrap());
            Ok(1)
        })
        .unwrap();
        assert_eq!(plus, [".", "..", "proc", "sys"]);
        let mut plus = Vec::new();
        fs.readdirplus(&ctx(1), proc_dir, 0, 4096, 0, &mut |d, e| {
            let name = String::from_utf8(d.name.to_vec()).unwrap();
            if d.type_ == u32::from(libc::DT_REG) || name == "sys" {
                // Files and mirror directories: looked up per caller.
                assert_eq!(e.inode, 0, "{name}");
                assert_ne!(d.ino, 0, "{name}");
            } else {
                assert_eq!(d.ino, e.inode, "{name}");
            }
            plus.push(name);
            Ok(1)
        })
        .unwrap();
        assert_eq!(plus, want);
        assert_eq!(fs.source.renders.load(Ordering::Relaxed), renders);
        let file = resolve(&fs, "proc/uptime").inode;
        let err = fs.readdir(&ctx(1), file, 0, 4096, 0, &mut |_| Ok(1)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
    }
}
