//! The FUSE operations (fuse-backend-rs [`FileSystem`]) on top of the static [`Tree`] and the
//! [`HandleTable`]: directories 0555 and files 0444 owned by root, nothing writable (EACCES),
//! every open file a fresh per-caller snapshot rendered by the service.
//!
//! # Files, inodes and the page cache
//!
//! Files are opened with direct I/O, so read(2) always comes here with the opener's handle.
//! But sendfile/splice (busybox `cat`) ignore `FOPEN_DIRECT_IO` on kernels 6.5 to 6.18: they
//! read the inode's page cache (filled by READs on the handle of whoever reads first after
//! an open, which empties it) and stop at the kernel's size of the file. Hence:
//! - one inode per (file, cgroup set of the caller): LOOKUP resolves the caller and answers
//!   [`file_ino`]`(node, cgroup)` with an entry timeout of 0, so every path walk looks the
//!   file up again and gets the inode of its own cgroup set. Callers in different cgroups
//!   never share a page cache; a container's bind mount (made from inside its cgroup) keeps
//!   its inode without further lookups. Open still renders for the actual caller;
//! - `st_size` is the exact length of the caller's current rendering, and the attributes of
//!   files are not cached (timeout 0): with `default_permissions` the kernel asks for them
//!   (GETATTR) in the permission check of every open, by the opener, bind mount or not. A
//!   splice read thus stops exactly at the end of the content, however it grew or shrank
//!   since the last open;
//! - the open serves the very rendering whose length the opener's GETATTR (or LOOKUP) just
//!   reported, kept briefly (`SIZED_TTL`) by (inode, thread) in `sized`, so a view
//!   re-rendered in between cannot be cut.
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
//! Left: callers of one cgroup set share the page cache, so two of them reading the same
//! file at the moment its rendering changes length (the view cache expires) can see the
//! other's length: one read cut or zero-padded, measured about once in 1000 reads with four
//! busybox loops on /proc/stat. A process reading through another cgroup's inode (a bind
//! mount made elsewhere, or after changing cgroup) gets its own view with read(2), but
//! shares that inode's page cache with splice.
//!
//! # Round trips
//!
//! Kept to the minimum the kernel allows. `open + read-to-EOF + close` costs, through a bind
//! mount (how containers read), GETATTR, OPEN, READ, READ (returns 0: direct I/O cannot know
//! EOF otherwise; a splice reader stops at `st_size` instead) and an asynchronous RELEASE;
//! through the path, a LOOKUP of the file first:
//! - directory entries, negative entries and directory attributes are cached by the kernel
//!   for a day (the tree never changes); with `default_permissions` (set by fuse-backend-rs)
//!   ACCESS is never sent;
//! - FLUSH, GETXATTR, LISTXATTR, LSEEK, POLL, FSYNC, STATX answer ENOSYS once and the kernel
//!   stops asking (fuse-backend-rs 0.14 does not expose FOPEN_NOFLUSH, so the very first
//!   close of the mount still costs one FLUSH);
//! - directories: OPENDIR/RELEASEDIR are disabled (`ZERO_MESSAGE_OPENDIR`), which also makes
//!   the kernel cache directory listings; READDIRPLUS fills the entry cache of directories
//!   in one go (files are left out: they are looked up per caller anyway);
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
use super::inode::{file_ino, file_st_ino, Ino, LookupError, Node, Tree};
use crate::service::{Service, ServiceError};

/// How long the kernel may cache directory entries, negative entries and directory
/// attributes: the tree is static for the lifetime of the mount.
pub const TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Entry timeout of files: as long as directories'. A file has one inode for every caller:
/// an inode per cgroup set would keep the page cache of sendfile readers apart (kernels
/// 6.5-6.18 splice FOPEN_DIRECT_IO files through the page cache), but a lookup by another
/// cgroup then invalidates the dentry a runtime has just opened with O_PATH to bind-mount it
/// into a container, and that mount fails with ENOENT. Bind mounts must work; see
/// docs/design.md for the sendfile caveat.
pub const FILE_ENTRY_TTL: Duration = TTL;

/// Attribute timeout of files: 0, so the kernel asks again (GETATTR) before every open, by
/// the opener, whose length then becomes the kernel's size of the file. (Any non-zero
/// timeout is at least a jiffy, 1 to 10 ms, during which other callers' opens would go by
/// the size of the last caller's rendering.)
pub const FILE_ATTR_TTL: Duration = Duration::ZERO;

/// `st_size` of a file when the caller's view cannot be rendered (its open fails anyway).
pub const FILE_SIZE: i64 = 4096;

/// How long a rendering sized by LOOKUP or GETATTR waits for the open of the same thread
/// (which normally follows within microseconds; later, the open renders afresh).
const SIZED_TTL: Duration = Duration::from_millis(200);

/// Sweep `sized` of renderings nobody opened (stat without open) every this many entries.
const SIZED_SWEEP_EVERY: u64 = 256;

/// At most this many renderings are kept: a stat storm beyond it empties `sized` (opens then
/// render afresh).
const SIZED_MAX: usize = 16384;

const DIR_MODE: u32 = libc::S_IFDIR | 0o555;
const FILE_MODE: u32 = libc::S_IFREG | 0o444;

/// Where file contents come from: "process `pid` reads view `view`" -> bytes, and which
/// cgroup set `pid` is in. Implemented by [`Service`]; tests plug in fakes.
pub trait ContentSource: Send + Sync {
    fn content(&self, view: usize, pid: u32) -> Result<Vec<u8>, ServiceError>;
}

impl ContentSource for Service {
    fn content(&self, view: usize, pid: u32) -> Result<Vec<u8>, ServiceError> {
        Service::content(self, view, pid)
    }
}

impl<T: ContentSource + ?Sized> ContentSource for Arc<T> {
    fn content(&self, view: usize, pid: u32) -> Result<Vec<u8>, ServiceError> {
        (**self).content(view, pid)
    }
}

/// A rendering whose length was reported to the kernel.
struct SizedRendering {
    at: Instant,
    data: Vec<u8>,
}

/// The virtual file system served on the mount point.
pub struct VirtualFs<S = Arc<Service>> {
    tree: Tree,
    /// Attributes of tree node `n` at index `n - 1`, computed once; for files a template
    /// completed per caller (inode number, size).
    attrs: Vec<stat64>,
    handles: HandleTable,
    source: S,
    /// The kernel agreed to `ZERO_MESSAGE_OPENDIR`: opendir may answer ENOSYS.
    no_opendir: AtomicBool,
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
            handles: HandleTable::new(),
            source,
            no_opendir: AtomicBool::new(false),
            sized: DashMap::new(),
            sized_inserts: AtomicU64::new(0),
        }
    }

    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Open file handles (snapshots) right now.
    pub fn open_handles(&self) -> usize {
        self.handles.len()
    }

    /// Renderings sized by LOOKUP or GETATTR and not opened yet.
    pub fn pending_sizes(&self) -> usize {
        self.sized.len()
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

    /// The entry of `node`. Files report [`FILE_SIZE`] here: their attributes expire at once,
    /// so the kernel asks GETATTR, for the opener, before every open, and that answer carries
    /// the opener's exact size. Lookups resolve no caller: a runtime looks the views up from a
    /// process that then joins the container's cgroup under the same pid.
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

    /// Walks the entries of directory `ino` from `offset` (0 = start; entry `i` has offset
    /// `i + 1`) until `add` reports a full buffer (returns 0).
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
}

/// The pid (thread id) of the caller, in the mounter's (host) pid namespace; 0 if the caller
/// is not visible there, which the service reports as an error.
fn caller_pid(ctx: &Context) -> u32 {
    u32::try_from(ctx.pid).unwrap_or(0)
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn make_attr(tree: &Tree, node: &Node, now: Duration) -> stat64 {
    // Entry::default() holds a zeroed stat64 (plain old data), no unsafe needed here.
    let mut st = Entry::default().attr;
    st.st_ino = node.ino;
    if node.is_dir() {
        st.st_mode = DIR_MODE;
        st.st_nlink = (2 + tree.subdir_count(node.ino)) as _;
    } else {
        st.st_mode = FILE_MODE;
        st.st_nlink = 1;
    }
    st.st_uid = 0;
    st.st_gid = 0;
    st.st_size = FILE_SIZE;
    st.st_blksize = 4096;
    st.st_blocks = FILE_SIZE / 512;
    let (secs, nsecs) = (now.as_secs() as i64, i64::from(now.subsec_nanos()));
    st.st_atime = secs;
    st.st_atime_nsec = nsecs;
    st.st_mtime = secs;
    st.st_mtime_nsec = nsecs;
    st.st_ctime = secs;
    st.st_ctime_nsec = nsecs;
    st
}

impl<S: ContentSource> FileSystem for VirtualFs<S> {
    type Inode = u64;
    type Handle = u64;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        // Not WRITEBACK_CACHE: the kernel would never shrink a file's size to the end of a
        // short page-cache read, and splice would return zeroes up to `st_size`.
        let wanted = FsOptions::ASYNC_READ
            | FsOptions::PARALLEL_DIROPS
            | FsOptions::DO_READDIRPLUS
            | FsOptions::READDIRPLUS_AUTO
            | FsOptions::ZERO_MESSAGE_OPENDIR
            | FsOptions::MAX_PAGES;
        self.no_opendir.store(capable.contains(FsOptions::ZERO_MESSAGE_OPENDIR), Ordering::Relaxed);
        tracing::debug!(capable = ?capable, enabled = ?(capable & wanted), "FUSE init");
        Ok(wanted)
    }

    fn destroy(&self) {
        self.handles.clear();
        self.sized.clear();
    }

    fn lookup(&self, _ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        let dir = match self.tree.resolve(parent) {
            Some((dir, Ino::Dir(_))) => dir,
            Some((_, Ino::File { .. })) => return Err(errno(libc::ENOTDIR)),
            None => return Err(errno(libc::ENOENT)),
        };
        match self.tree.lookup(dir.ino, name.to_bytes()) {
            Ok(Some(node)) => Ok(self.entry(node)),
            // A negative entry the kernel may cache as long as a directory entry.
            Ok(None) => Ok(Entry { inode: 0, entry_timeout: TTL, ..Entry::default() }),
            Err(LookupError::NotADirectory) => Err(errno(libc::ENOTDIR)),
            Err(LookupError::NoParent) => Err(errno(libc::ENOENT)),
        }
    }

    fn getattr(
        &self,
        ctx: &Context,
        inode: u64,
        handle: Option<u64>,
    ) -> io::Result<(stat64, Duration)> {
        let node = self.node(inode)?;
        let Some(view) = node.view() else {
            return Ok((self.attr(node, inode, 0), TTL));
        };
        // fstat() of an open file: the length of its own snapshot. Otherwise (the permission
        // check of an open, stat) the caller's current rendering.
        let open_size = handle.and_then(|fh| self.handles.with(fh, |s| s.data.len()));
        let size = match open_size {
            Some(len) => i64::try_from(len).unwrap_or(i64::MAX),
            None => self.size_for(inode, view, caller_pid(ctx)),
        };
        Ok((self.attr(node, inode, size), FILE_ATTR_TTL))
    }

    fn setattr(
        &self,
        _ctx: &Context,
        _inode: u64,
        _attr: stat64,
        _handle: Option<u64>,
        _valid: SetattrValid,
    ) -> io::Result<(stat64, Duration)> {
        Err(errno(libc::EACCES))
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
        let node = self.node(inode)?;
        let view = node.view().ok_or_else(|| errno(libc::EISDIR))?;
        if flags as i32 & libc::O_ACCMODE != libc::O_RDONLY {
            return Err(errno(libc::EACCES));
        }
        // Always the caller's own view, whichever cgroup set's inode it opens: the rendering
        // its LOOKUP or GETATTR just sized (the kernel's `st_size`), else a fresh one.
        let pid = caller_pid(ctx);
        let data = match self.take_sized(inode, pid) {
            Some(data) => Ok(data),
            None => self.source.content(view, pid),
        };
        match data {
            Ok(data) => {
                let handle = self.handles.insert(Snapshot::new(view, data));
                // Direct I/O: every read(2) comes to us, served from this handle's snapshot.
                // No FOPEN_KEEP_CACHE: the kernel empties the inode's page cache, so a splice
                // reader (which ignores direct I/O) fills it afresh through this handle.
                Ok((Some(handle), OpenOptions::DIRECT_IO, None))
            }
            Err(err) => {
                tracing::warn!(pid, path = %node.path, error = %err, "cannot render view");
                Err(errno(libc::EIO))
            }
        }
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

    fn read(
        &self,
        _ctx: &Context,
        _inode: u64,
        handle: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        _lock_owner: Option<u64>,
        _flags: u32,
    ) -> io::Result<usize> {
        self.handles
            .with(handle, |snapshot| {
                let part = snapshot.slice(offset, size as usize);
                w.write_all(part).map(|()| part.len())
            })
            .unwrap_or_else(|| Err(errno(libc::EBADF)))
    }

    fn write(
        &self,
        _: &Context,
        _: u64,
        _: u64,
        _: &mut dyn ZeroCopyReader,
        _: u32,
        _: u64,
        _: Option<u64>,
        _: bool,
        _: u32,
        _: u32,
    ) -> io::Result<usize> {
        Err(errno(libc::EACCES))
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
        _ctx: &Context,
        inode: u64,
        _flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions)> {
        if !self.node(inode)?.is_dir() {
            return Err(errno(libc::ENOTDIR));
        }
        if self.no_opendir.load(Ordering::Relaxed) {
            // Taken as success; the kernel stops sending OPENDIR/RELEASEDIR and caches the
            // listings of the (static) directories.
            return Err(errno(libc::ENOSYS));
        }
        Ok((None, OpenOptions::CACHE_DIR | OpenOptions::KEEP_CACHE))
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
        self.list(inode, offset, |dirent, _| add_entry(dirent))
    }

    fn readdirplus(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        _size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.list(inode, offset, |dirent, node| {
            // Files: node id 0 tells the kernel to skip the entry part (files are looked up
            // per caller anyway, and sizing them would render every view of the directory).
            let entry = if node.is_dir() {
                self.entry(node)
            } else {
                Entry { inode: 0, entry_timeout: FILE_ENTRY_TTL, ..Entry::default() }
            };
            add_entry(dirent, entry)
        })
    }

    fn releasedir(&self, _: &Context, _: u64, _: u32, _: u64) -> io::Result<()> {
        Ok(())
    }

    fn access(&self, _ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
        let node = self.node(inode)?;
        let mask = mask as i32;
        if mask & libc::W_OK != 0 || (mask & libc::X_OK != 0 && !node.is_dir()) {
            return Err(errno(libc::EACCES));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuse::inode::ROOT_INO;
    use crate::views::TABLE;
    use fuse_backend_rs::common::file_traits::FileReadWriteVolatile;
    use std::ffi::CString;
    use std::sync::atomic::AtomicU32;

    /// Renders "view V for pid P #N" with N counting renders, so each rendering differs.
    /// Process P is in cgroup set P / 100; pid 0 cannot be identified.
    struct Fake {
        renders: AtomicU32,
        fail_view: Option<usize>,
    }

    impl ContentSource for Fake {
        fn content(&self, view: usize, pid: u32) -> Result<Vec<u8>, ServiceError> {
            if Some(view) == self.fail_view || pid == 0 {
                return Err(ServiceError::Caller(crate::caller::CallerError::Gone { pid }));
            }
            let n = self.renders.fetch_add(1, Ordering::Relaxed);
            Ok(format!("view {view} for pid {pid} #{n}\n").repeat(100).into_bytes())
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
        VirtualFs::new(Tree::from_table().unwrap(), Fake { renders: AtomicU32::new(0), fail_view })
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
        let mut w = VecWriter(Vec::new());
        let n = fs.read(&ctx(1), ino, fh, &mut w, size, offset, None, 0)?;
        assert_eq!(n, w.0.len());
        Ok(w.0)
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
            assert_eq!(entry.attr.st_mode, libc::S_IFREG | 0o444, "{}", spec.path);
            assert_eq!(entry.attr.st_size, FILE_SIZE, "{}: sized by the next GETATTR", spec.path);
            assert_eq!(entry.attr.st_blocks, (FILE_SIZE + 511) / 512);
            assert_eq!(entry.attr.st_uid, 0);
            assert_eq!(entry.attr.st_ino, file_st_ino(entry.inode));
            assert_eq!(entry.entry_timeout, FILE_ENTRY_TTL);
            assert_eq!(entry.attr_timeout, FILE_ATTR_TTL);
            let (st, ttl) = fs.getattr(&ctx(1), entry.inode, None).unwrap();
            assert_eq!(st.st_ino, file_st_ino(entry.inode));
            assert_eq!(st.st_mode, libc::S_IFREG | 0o444);
            assert_eq!(st.st_size, rendering(view_of(spec.path), 1, n).len() as i64);
            assert_eq!(ttl, FILE_ATTR_TTL);
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
        // Small reads at offsets on the same handle: same snapshot, same bytes.
        let mut pieces = Vec::new();
        let mut offset = 0;
        loop {
            let part = read(&fs, ino, fh, 13, offset).unwrap();
            if part.is_empty() {
                break;
            }
            offset += part.len() as u64;
            pieces.extend(part);
        }
        assert_eq!(pieces, whole);
        assert_eq!(read(&fs, ino, fh, 10, 5).unwrap(), whole[5..15]);
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
        // Without ZERO_MESSAGE_OPENDIR: a handle-less, cached directory open.
        let (fh, opts) = fs.opendir(&ctx(1), ROOT_INO, 0).unwrap();
        assert_eq!(fh, None);
        assert!(opts.contains(OpenOptions::CACHE_DIR));
        fs.init(FsOptions::ZERO_MESSAGE_OPENDIR).unwrap();
        let err = fs.opendir(&ctx(1), ROOT_INO, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSYS));
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
        let mut files: Vec<&str> =
            TABLE.iter().filter_map(|s| s.path.strip_prefix("proc/")).collect();
        files.sort();
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
            if d.type_ == u32::from(libc::DT_REG) {
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
