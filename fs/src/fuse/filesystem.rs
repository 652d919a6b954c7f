//! The FUSE operations (fuse-backend-rs [`FileSystem`]) on top of the static [`Tree`] and the
//! [`HandleTable`]: directories 0555 and files 0444 owned by root, nothing writable (EACCES),
//! every open file a fresh per-caller snapshot rendered by the service.
//!
//! Round trips are kept to the minimum the kernel allows; for `open + read-to-EOF + close` of
//! a warm path that is OPEN, READ, READ (returns 0: direct I/O cannot know EOF otherwise) and
//! an asynchronous RELEASE:
//! - entries, negative entries and attributes are cached by the kernel for a day (the tree
//!   never changes), so no LOOKUP or GETATTR after the first access; with
//!   `default_permissions` (set by fuse-backend-rs) ACCESS is never sent;
//! - FLUSH, GETXATTR, LISTXATTR, LSEEK, POLL, FSYNC answer ENOSYS once and the kernel stops
//!   asking (fuse-backend-rs 0.14 does not expose FOPEN_NOFLUSH, so the very first close of
//!   the mount still costs one FLUSH);
//! - directories: OPENDIR/RELEASEDIR are disabled (`ZERO_MESSAGE_OPENDIR`), which also makes
//!   the kernel cache directory listings; READDIRPLUS fills the entry cache in one go.
//!
//! Kernel behaviour the server cannot change (measured on 6.18):
//! - every direct-I/O read invalidates the cached atime unless the superblock is read-only,
//!   so a reader that fstat()s its file (stdio, coreutils cat, Python) costs one GETATTR per
//!   open on this read-write mount (writes must fail with EACCES, a read-only mount would
//!   give EROFS);
//! - sendfile/splice (busybox cat) ignore FOPEN_DIRECT_IO and read through the page cache:
//!   they stop at `st_size`, and a short page read shrinks the cached size until the next
//!   GETATTR/LOOKUP refreshes it.

use std::ffi::CStr;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuse_backend_rs::abi::fuse_abi::{stat64, CreateIn};
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileSystem, FsOptions, OpenOptions, SetattrValid, ZeroCopyReader,
    ZeroCopyWriter,
};

use super::handles::{HandleTable, Snapshot};
use super::inode::{LookupError, Node, Tree};
use crate::service::{Service, ServiceError};

/// How long the kernel may cache entries (positive and negative) and attributes: the tree is
/// static for the lifetime of the mount.
pub const TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// `st_size` of every file. Not 0: readers that size their reads from `st_size` or use
/// sendfile (busybox cat) would read nothing. Reads are direct I/O and ignore it.
pub const FILE_SIZE: i64 = 4096;

const DIR_MODE: u32 = libc::S_IFDIR | 0o555;
const FILE_MODE: u32 = libc::S_IFREG | 0o444;

/// Where file contents come from: "process `pid` reads view `view`" -> bytes.
/// Implemented by [`Service`]; tests plug in fakes.
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

/// The virtual file system served on the mount point.
pub struct VirtualFs<S = Arc<Service>> {
    tree: Tree,
    /// Attributes of inode `n` at index `n - 1`, computed once.
    attrs: Vec<stat64>,
    handles: HandleTable,
    source: S,
    /// The kernel agreed to `ZERO_MESSAGE_OPENDIR`: opendir may answer ENOSYS.
    no_opendir: AtomicBool,
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
        }
    }

    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Open file handles (snapshots) right now.
    pub fn open_handles(&self) -> usize {
        self.handles.len()
    }

    fn node(&self, ino: u64) -> io::Result<&Node> {
        self.tree.get(ino).ok_or_else(|| errno(libc::ENOENT))
    }

    fn attr(&self, ino: u64) -> io::Result<stat64> {
        self.node(ino)?;
        Ok(self.attrs[(ino - 1) as usize])
    }

    fn entry(&self, ino: u64) -> io::Result<Entry> {
        Ok(Entry {
            inode: ino,
            generation: 0,
            attr: self.attr(ino)?,
            attr_flags: 0,
            attr_timeout: TTL,
            entry_timeout: TTL,
        })
    }

    /// Walks the entries of directory `ino` from `offset` (0 = start; entry `i` has offset
    /// `i + 1`) until `add` reports a full buffer (returns 0).
    fn list(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(DirEntry<'_>) -> io::Result<usize>,
    ) -> io::Result<()> {
        let node = self.node(ino)?;
        let entries = self.tree.entries(node.ino).ok_or_else(|| errno(libc::ENOTDIR))?;
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, e) in entries.iter().enumerate().skip(skip) {
            let dirent = DirEntry {
                ino: e.ino,
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
    }

    fn lookup(&self, _ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        match self.tree.lookup(parent, name.to_bytes()) {
            Ok(Some(node)) => self.entry(node.ino),
            // A negative entry the kernel may cache as long as a positive one.
            Ok(None) => Ok(Entry { inode: 0, entry_timeout: TTL, ..Entry::default() }),
            Err(LookupError::NotADirectory) => Err(errno(libc::ENOTDIR)),
            Err(LookupError::NoParent) => Err(errno(libc::ENOENT)),
        }
    }

    fn getattr(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: Option<u64>,
    ) -> io::Result<(stat64, Duration)> {
        Ok((self.attr(inode)?, TTL))
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
        // The pid is in the mounter's (host) pid namespace; 0 if the caller is not visible
        // there, which the service reports as an error.
        let pid = u32::try_from(ctx.pid).unwrap_or(0);
        match self.source.content(view, pid) {
            Ok(data) => {
                let handle = self.handles.insert(Snapshot::new(view, data));
                // Direct I/O: every read comes to us (no page cache shared between callers
                // that must see different contents), served from this handle's snapshot.
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
        self.list(inode, offset, add_entry)
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
        self.list(inode, offset, |dirent| add_entry(dirent, self.entry(dirent.ino)?))
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

    /// Renders "view V for pid P #N" with N counting renders, so each open differs.
    struct Fake {
        renders: AtomicU32,
        fail_view: Option<usize>,
    }

    impl ContentSource for Fake {
        fn content(&self, view: usize, pid: u32) -> Result<Vec<u8>, ServiceError> {
            if Some(view) == self.fail_view {
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

    fn resolve(fs: &VirtualFs<Fake>, path: &str) -> Entry {
        let mut ino = ROOT_INO;
        let mut entry = fs.entry(ino).unwrap();
        for part in path.split('/') {
            entry = fs.lookup(&ctx(1), ino, &CString::new(part).unwrap()).unwrap();
            assert_ne!(entry.inode, 0, "{path}: {part} not found");
            ino = entry.inode;
        }
        entry
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

    #[test]
    fn attributes_of_files_and_dirs() {
        let fs = fs(None);
        for spec in TABLE {
            let entry = resolve(&fs, spec.path);
            assert_eq!(entry.attr.st_mode, libc::S_IFREG | 0o444, "{}", spec.path);
            assert_eq!(entry.attr.st_size, 4096);
            assert_eq!(entry.attr.st_uid, 0);
            assert_eq!(entry.entry_timeout, TTL);
            assert_eq!(entry.attr_timeout, TTL);
            let (st, ttl) = fs.getattr(&ctx(1), entry.inode, None).unwrap();
            assert_eq!(st.st_ino, entry.inode);
            assert_eq!(ttl, TTL);
        }
        let (root, _) = fs.getattr(&ctx(1), ROOT_INO, None).unwrap();
        assert_eq!(root.st_mode, libc::S_IFDIR | 0o555);
        assert_eq!(root.st_nlink, 4); // ".", "..", proc, sys
        let proc_dir = resolve(&fs, "proc");
        assert_eq!(proc_dir.attr.st_mode, libc::S_IFDIR | 0o555);
        assert_eq!(fs.getattr(&ctx(1), 0, None).unwrap_err().raw_os_error(), Some(libc::ENOENT));
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
    }

    #[test]
    fn open_snapshots_once_and_reads_slices() {
        let fs = fs(None);
        let view = TABLE.iter().position(|s| s.path == "proc/meminfo").unwrap();
        let ino = resolve(&fs, "proc/meminfo").inode;
        let (fh, opts, _) = fs.open(&ctx(42), ino, libc::O_RDONLY as u32, 0).unwrap();
        let fh = fh.unwrap();
        assert!(opts.contains(OpenOptions::DIRECT_IO));
        let whole = read(&fs, ino, fh, 1 << 20, 0).unwrap();
        assert!(whole.starts_with(format!("view {view} for pid 42 #0\n").as_bytes()));
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
        let (fh2, _, _) = fs.open(&ctx(43), ino, libc::O_RDONLY as u32, 0).unwrap();
        let second = read(&fs, ino, fh2.unwrap(), 1 << 20, 0).unwrap();
        assert!(second.starts_with(format!("view {view} for pid 43 #1\n").as_bytes()));
        assert_eq!(fs.open_handles(), 2);
        fs.release(&ctx(1), ino, 0, fh, false, false, None).unwrap();
        fs.release(&ctx(1), ino, 0, fh2.unwrap(), false, false, None).unwrap();
        assert_eq!(fs.open_handles(), 0);
        let err = read(&fs, ino, fh, 10, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
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
    }

    #[test]
    fn service_errors_become_eio() {
        let view = TABLE.iter().position(|s| s.path == "proc/stat").unwrap();
        let fs = fs(Some(view));
        let ino = resolve(&fs, "proc/stat").inode;
        let err = fs.open(&ctx(7), ino, libc::O_RDONLY as u32, 0).unwrap_err();
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
        // readdirplus gives entries matching lookups.
        let mut plus = Vec::new();
        fs.readdirplus(&ctx(1), proc_dir, 0, 4096, 0, &mut |d, e| {
            assert_eq!(d.ino, e.inode);
            assert_eq!(e.attr.st_ino, e.inode);
            plus.push(String::from_utf8(d.name.to_vec()).unwrap());
            Ok(1)
        })
        .unwrap();
        assert_eq!(plus, want);
        let file = resolve(&fs, "proc/uptime").inode;
        let err = fs.readdir(&ctx(1), file, 0, 4096, 0, &mut |_| Ok(1)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
    }
}
