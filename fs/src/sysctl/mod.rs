//! The dynamic trees: `proc/sys` (the caller's own view of /proc/sys, read-write where a
//! system container may write) and `sys/kernel`, `sys/devices/virtual/dmi/id`,
//! `sys/module/nf_conntrack/parameters`.
//!
//! Unlike the views, these trees are not fixed: they mirror a host directory as the
//! caller sees it, and what each path does is one entry of [`rules`]:
//! - namespaced entries (net.* of the caller's network namespace, kernel.hostname and
//!   domainname, the IPC ones) are read for real by a thread that joined the caller's
//!   network, UTS and IPC namespaces ([`nsworker`]), and written by a process with exactly
//!   the power of the container's root ([`writer`]), only in namespaces that the
//!   container's user namespace owns;
//! - emulated entries (kernel.panic, nf_conntrack_max, ...) are kept per container
//!   ([`store`]), checked by the kernel's own parsing rules ([`format`]);
//! - everything else is the caller's view of the host, read-only.
//!
//! Only the root of a registered container may write, and only what its rules allow.
//! Callers that are in no registered container (the host, standalone mode, containers
//! of other runtimes) see a read-only mirror of their own namespaces' view.
//!
//! - [`identity`]: who asks (namespaces, container), pidfd-checked and cached per pid;
//! - here: [`Mirrors`], the operations the FUSE transport calls (lookup with attributes
//!   and optionally content, list, open for writing, write, readlink).

pub mod format;
pub mod identity;
pub mod nsworker;
pub mod rules;
pub mod store;
pub mod writer;

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use format::{Errno, Format};
use identity::{Containers, Identities, Identity};
use nsworker::{NsFds, NsKey, NsWorkers};
use rules::{Kind, Mirror, MIRRORS};
use store::Store;
use writer::{How, WriteJob, WriterFds, WriterKey, Writers};

use crate::host::HostProc;

/// How long an idle namespace worker lives.
pub const WORKER_IDLE: Duration = Duration::from_secs(10);
/// The most namespace workers at once.
pub const MAX_WORKERS: usize = 512;
/// The most bytes of one file served.
pub const MAX_CONTENT: u64 = 1 << 20;
/// The binary a writer process runs: the daemon's own (see [`writer`]).
pub const WRITER_EXE: &str = "/proc/self/exe";
/// The uid and gid the kernel shows for ids a namespace does not map.
pub const OVERFLOW_ID: u64 = 65534;

/// Who is asking: the FUSE request's pid and fsuid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asker {
    pub pid: u32,
    pub uid: u32,
}

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeType {
    Dir,
    File,
    Symlink,
}

/// A node as one caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAttr {
    pub typ: NodeType,
    /// Permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// 0: the same file for every caller; else what the caller sees (see
    /// [`Identity::view`]): callers with different views need different inodes.
    pub view: u64,
    /// The asker may open it for writing.
    pub writable: bool,
}

/// The answer to a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The node, `None` when the path does not exist for this caller.
    pub attr: Option<NodeAttr>,
    /// Whether the answer may differ between callers (the entry must not be cached).
    pub varies: bool,
    /// The file's content, when asked for and the node is a file.
    pub content: Option<Result<Vec<u8>, Errno>>,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub typ: NodeType,
}

/// An open-for-writing file: where its writes go, decided at open.
#[derive(Debug, Clone)]
pub struct Target {
    who: Arc<Identity>,
    access: Access,
}

/// How a file of one caller is read and written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Access {
    /// The host's file, read in the daemon's own namespaces.
    Host(PathBuf),
    /// The file as the caller's namespaces show it (written by its container's writer).
    Real(PathBuf),
    /// `kernel/hostname` or `domainname` of the caller's UTS namespace: read as `Real`,
    /// written with sethostname(2)/setdomainname(2) (the kernel lets only host root write
    /// the file).
    UtsName(PathBuf),
    /// ping_group_range in the caller's network namespace, ids through its gid map.
    GidRange(PathBuf),
    /// Per container: `key` in the store, the host's file for the initial value.
    Emulated { key: String, format: Format, host: PathBuf },
    /// The container's DMI product UUID.
    Uuid,
}

/// A host file's or directory's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    typ: NodeType,
    mode: u32,
    uid: u32,
    gid: u32,
    dev: u64,
}

/// How the dynamic trees are set up.
pub struct MirrorsConfig {
    pub host: HostProc,
    /// The registry of containers (daemon mode); `None`: every caller is unregistered.
    pub containers: Option<Arc<dyn Containers>>,
    pub store: Arc<Store>,
    /// How long a caller's identity is trusted.
    pub identity_ttl: Duration,
}

/// The dynamic trees' service, shared by the FUSE workers.
pub struct Mirrors {
    /// The host directory of each of [`MIRRORS`].
    roots: Vec<PathBuf>,
    /// The device of each root, to stop at other file systems mounted below it.
    root_devs: Vec<Option<u64>>,
    identities: Identities,
    workers: NsWorkers,
    writers: Writers,
    store: Arc<Store>,
    own_ns: Option<NsKey>,
    /// Metadata read in callers' namespaces, by (namespaces, host path), for `stat_ttl`:
    /// a path walk (or `sysctl -a`) asks for the same directories over and over, and each
    /// answer costs a hop to a namespace worker.
    stats: DashMap<(NsKey, PathBuf), (Instant, Option<Stat>)>,
    stat_ttl: Duration,
}

fn io_errno(e: std::io::Error) -> Errno {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl Mirrors {
    pub fn new(config: MirrorsConfig) -> Mirrors {
        let roots: Vec<PathBuf> = MIRRORS
            .iter()
            .map(|m| match m.host {
                rules::HostRoot::Proc(rel) => config.host.proc_root.join(rel),
                rules::HostRoot::Sys(rel) => config.host.sys_root.join(rel),
            })
            .collect();
        let root_devs = roots.iter().map(|r| std::fs::metadata(r).ok().map(|m| m.dev())).collect();
        Mirrors {
            roots,
            root_devs,
            identities: Identities::new(config.identity_ttl, config.containers),
            workers: NsWorkers::new(WORKER_IDLE, MAX_WORKERS),
            writers: Writers::new(PathBuf::from(WRITER_EXE), WORKER_IDLE, MAX_WORKERS),
            store: config.store,
            own_ns: NsKey::of_current_thread().ok(),
            stats: DashMap::new(),
            stat_ttl: config.identity_ttl,
        }
    }

    /// Ends the writer processes of container `id` (its registration ended or begins).
    pub fn end_container(&self, id: &str) {
        self.writers.end_container(id);
    }

    /// Drops what exited processes left, and stale metadata (called periodically).
    pub fn sweep(&self) {
        self.identities.sweep();
        self.writers.reap_idle();
        self.stats.retain(|_, (at, _)| at.elapsed() < self.stat_ttl);
    }

    /// The host uid and gid of the root of the container process `pid` belongs to.
    pub fn container_root(&self, pid: u32) -> Option<(u32, u32)> {
        let who = self.identities.resolve(pid).ok()?;
        who.container.as_ref().map(|c| (c.uid_base, c.gid_base))
    }

    fn who(&self, asker: Asker) -> Result<Arc<Identity>, Errno> {
        self.identities.resolve(asker.pid).map_err(|_| libc::EIO)
    }

    /// Looks `path` (relative to mirror `mirror`; "" is its root) up for `asker`; with
    /// `content`, a file's content is read too (one resolution for both).
    pub fn lookup(
        &self,
        asker: Asker,
        mirror: usize,
        path: &str,
        content: bool,
    ) -> Result<Found, Errno> {
        let spec = MIRRORS.get(mirror).ok_or(libc::ENOENT)?;
        let varies = rules::varies(spec, path);
        let who = self.who(asker)?;
        let Some((attr, access)) = self.resolve(&who, asker, mirror, path)? else {
            return Ok(Found { attr: None, varies, content: None });
        };
        let content = match (&access, content) {
            (Some(access), true) => Some(self.read(&who, access)),
            _ => None,
        };
        Ok(Found { attr: Some(attr), varies, content })
    }

    /// The entries of directory `path` for `asker`, sorted by name.
    pub fn list(&self, asker: Asker, mirror: usize, path: &str) -> Result<Vec<Listed>, Errno> {
        let spec = MIRRORS.get(mirror).ok_or(libc::ENOENT)?;
        let who = self.who(asker)?;
        match self.resolve(&who, asker, mirror, path)? {
            Some((attr, _)) if attr.typ == NodeType::Dir => {}
            Some(_) => return Err(libc::ENOTDIR),
            // A mirror's own directory always exists (the host may lack what it mirrors:
            // no DMI table); then it is empty but for emulated entries.
            None if path.is_empty() => {}
            None => return Err(libc::ENOENT),
        }
        if rules::kind_of(spec.rules, path) == Kind::EmptyDir {
            return Ok(Vec::new());
        }
        let host = self.host_path(mirror, path);
        let mut entries = match self.real_stat(&who, spec, path, &host)? {
            Some(stat) if stat.typ == NodeType::Dir && self.same_fs(mirror, &stat) => {
                self.in_view(&who, spec, path, move || list_dir(&host))?
            }
            _ => Vec::new(),
        };
        if who.container.is_some() {
            for rule in rules::rules_below(spec.rules, path) {
                let name = rules::child_below(path, rule.path);
                if entries.iter().any(|e| e.name == name) || !self.emulated_exists(mirror, rule) {
                    continue;
                }
                let is_dir =
                    rule.path.len() > path.len() + name.len() + usize::from(!path.is_empty());
                let typ = if is_dir { NodeType::Dir } else { NodeType::File };
                entries.push(Listed { name: name.to_string(), typ });
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries.dedup_by(|a, b| a.name == b.name);
        Ok(entries)
    }

    /// Opens file `path` for writing by `asker`: EACCES unless it may.
    pub fn open_write(&self, asker: Asker, mirror: usize, path: &str) -> Result<Target, Errno> {
        let who = self.who(asker)?;
        match self.resolve(&who, asker, mirror, path)? {
            Some((attr, Some(access))) if attr.writable => {
                if matches!(access, Access::Real(_) | Access::UtsName(_) | Access::GidRange(_)) {
                    self.check_namespaces_owned(&who)?;
                }
                Ok(Target { who, access })
            }
            Some((attr, _)) if attr.typ == NodeType::Dir => Err(libc::EISDIR),
            Some((attr, _)) => {
                tracing::debug!(pid = asker.pid, uid = asker.uid, path, ?attr, container = ?who.container, "write refused");
                Err(libc::EACCES)
            }
            None => Err(libc::ENOENT),
        }
    }

    /// write(2) of `data` at `offset` to an open target.
    pub fn write(&self, target: &Target, offset: u64, data: &[u8]) -> Result<usize, Errno> {
        let who = &target.who;
        match &target.access {
            Access::Real(path) => self.write_as_container_root(who, How::File, path, data, offset),
            Access::UtsName(path) => {
                let how = match path.file_name().and_then(|n| n.to_str()) {
                    Some("domainname") => How::Domainname,
                    _ => How::Hostname,
                };
                self.write_as_container_root(who, how, path, data, offset)
            }
            Access::GidRange(path) => self.write_gid_range(who, path, data, offset),
            Access::Emulated { key, format, host } => {
                let container = who.container.as_ref().ok_or(libc::EACCES)?;
                let host = host.clone();
                let result = self.store.update(
                    &container.id,
                    key,
                    || read_file(&host).map(|c| format::value_of(&c)),
                    |current| format.write(current, data, offset),
                );
                if result.is_ok() {
                    tracing::debug!(container = %container.id, key, "emulated value written");
                }
                result
            }
            Access::Host(_) | Access::Uuid => Err(libc::EACCES),
        }
    }

    /// The target of symlink `path`.
    pub fn readlink(&self, asker: Asker, mirror: usize, path: &str) -> Result<Vec<u8>, Errno> {
        let spec = MIRRORS.get(mirror).ok_or(libc::ENOENT)?;
        let who = self.who(asker)?;
        let host = self.host_path(mirror, path);
        self.in_view(&who, spec, path, move || {
            std::fs::read_link(&host)
                .map(|t| t.into_os_string().into_encoded_bytes())
                .map_err(io_errno)
        })?
    }

    fn host_path(&self, mirror: usize, path: &str) -> PathBuf {
        if path.is_empty() {
            self.roots[mirror].clone()
        } else {
            self.roots[mirror].join(path)
        }
    }

    fn same_fs(&self, mirror: usize, stat: &Stat) -> bool {
        self.root_devs[mirror].is_none_or(|dev| dev == stat.dev)
    }

    /// What `path` is for this caller, and how its content is read and written.
    fn resolve(
        &self,
        who: &Arc<Identity>,
        asker: Asker,
        mirror: usize,
        path: &str,
    ) -> Result<Option<(NodeAttr, Option<Access>)>, Errno> {
        let spec = &MIRRORS[mirror];
        if !valid_path(path) {
            return Ok(None);
        }
        let kind = rules::kind_of(spec.rules, path);
        let host = self.host_path(mirror, path);
        let container = who.container.as_ref();
        let per_ns = rules::namespace_of(spec, path).is_some();
        let view = who.view();
        let dir = |stat: Option<Stat>| NodeAttr {
            typ: NodeType::Dir,
            mode: 0o555,
            uid: stat.map_or(0, |s| s.uid),
            gid: stat.map_or(0, |s| s.gid),
            view: 0,
            writable: false,
        };
        // A file the container's root owns (writes, if any, are the container's).
        let owned = |c: &identity::ContainerRef, mode: u32, writable_kind: bool| NodeAttr {
            typ: NodeType::File,
            mode,
            uid: c.uid_base,
            gid: c.gid_base,
            view,
            writable: writable_kind && mode & 0o200 != 0 && who.is_container_root(asker.uid),
        };
        let emulated = |c, format: Format| -> Result<Option<(NodeAttr, Option<Access>)>, Errno> {
            match host_stat(&host)? {
                Some(stat) if stat.typ == NodeType::File => {
                    let access =
                        Access::Emulated { key: store_key(spec, path), format, host: host.clone() };
                    Ok(Some((owned(c, stat.mode, true), Some(access))))
                }
                _ => Ok(None),
            }
        };
        if ancestors(path).any(|a| rules::kind_of(spec.rules, a) == Kind::EmptyDir) {
            return Ok(None);
        }
        match (kind, container) {
            (Kind::ContainerUuid, Some(c)) => {
                return Ok(Some((owned(c, 0o400, false), Some(Access::Uuid))));
            }
            (Kind::Emulated(format), Some(c)) => return emulated(c, format),
            (Kind::NetOrEmulated(format), Some(c)) => {
                return match self.real_stat(who, spec, path, &host)? {
                    Some(stat) if stat.typ == NodeType::File && stat.mode & 0o200 != 0 => {
                        Ok(Some((owned(c, stat.mode, true), Some(Access::Real(host)))))
                    }
                    _ => emulated(c, format),
                };
            }
            _ => {}
        }
        let real = self.real_stat(who, spec, path, &host)?;
        // Another file system mounted below the root: an empty directory, nothing below.
        let real = match real {
            Some(stat) if !self.same_fs(mirror, &stat) && stat.typ != NodeType::Dir => None,
            Some(stat) if !self.same_fs(mirror, &stat) => {
                let outside = ancestors(path).any(|a| {
                    host_stat(&self.host_path(mirror, a))
                        .ok()
                        .flatten()
                        .is_some_and(|s| !self.same_fs(mirror, &s))
                });
                (!outside).then_some(stat)
            }
            other => other,
        };
        let Some(stat) = real else {
            // A directory that only emulated entries make (neigh/default in a container).
            let makes_dir = container.is_some()
                && rules::rules_below(spec.rules, path).any(|r| self.emulated_exists(mirror, r));
            return Ok(makes_dir.then(|| (dir(None), None)));
        };
        // An emptied directory (/sys/kernel/debug, ...) is what the container's own mount
        // point of that file system would be: the host's mode, owned by the container's
        // root (the host's root would show as 65534 inside).
        if let (NodeType::Dir, Kind::EmptyDir, Some(c)) = (stat.typ, kind, container) {
            let attr = NodeAttr { mode: stat.mode, uid: c.uid_base, gid: c.gid_base, ..dir(None) };
            return Ok(Some((attr, None)));
        }
        match stat.typ {
            NodeType::Dir => return Ok(Some((dir(Some(stat)), None))),
            NodeType::Symlink => {
                let attr = NodeAttr {
                    typ: NodeType::Symlink,
                    mode: 0o777,
                    uid: stat.uid,
                    gid: stat.gid,
                    view: 0,
                    writable: false,
                };
                return Ok(Some((attr, None)));
            }
            NodeType::File => {}
        }
        if kind == Kind::EmptyDir {
            return Ok(None);
        }
        let real_access =
            || if per_ns { Access::Real(host.clone()) } else { Access::Host(host.clone()) };
        let (attr, access) = match (kind, container) {
            (Kind::Namespaced(rules::Ns::Uts), Some(c)) => {
                (owned(c, stat.mode, true), Access::UtsName(host.clone()))
            }
            (Kind::Namespaced(_), Some(c)) => {
                (owned(c, stat.mode, true), Access::Real(host.clone()))
            }
            (Kind::GidRange, Some(c)) => {
                (owned(c, stat.mode, true), Access::GidRange(host.clone()))
            }
            (Kind::Namespaced(_), None) => (read_only(stat, view), Access::Real(host.clone())),
            (Kind::GidRange, None) => (read_only(stat, view), Access::GidRange(host.clone())),
            _ => (read_only(stat, if per_ns { view } else { 0 }), real_access()),
        };
        Ok(Some((attr, Some(access))))
    }

    /// Whether emulated rule `rule` of `mirror` exists for registered callers: the host
    /// has the entry (a container's UUID always exists).
    fn emulated_exists(&self, mirror: usize, rule: &rules::Rule) -> bool {
        match rule.kind {
            Kind::ContainerUuid => true,
            Kind::Emulated(_) | Kind::NetOrEmulated(_) => {
                matches!(host_stat(&self.host_path(mirror, rule.path)), Ok(Some(s)) if s.typ == NodeType::File)
            }
            _ => false,
        }
    }

    /// `host`'s metadata as the caller sees it: in its namespaces for paths whose
    /// existence depends on them, else the host's. Other file systems mounted below the
    /// root are shown as empty directories.
    fn real_stat(
        &self,
        who: &Identity,
        spec: &Mirror,
        path: &str,
        host: &Path,
    ) -> Result<Option<Stat>, Errno> {
        if rules::namespace_of(spec, path).is_none() || Some(who.ns) == self.own_ns {
            return host_stat(host);
        }
        let key = (who.ns, host.to_path_buf());
        if let Some(entry) = self.stats.get(&key) {
            if entry.0.elapsed() < self.stat_ttl {
                return Ok(entry.1);
            }
        }
        let owned = host.to_path_buf();
        let stat = self.in_namespaces(who, move || host_stat(&owned))??;
        if self.stat_ttl > Duration::ZERO {
            self.stats.insert(key, (Instant::now(), stat));
        }
        Ok(stat)
    }

    /// Runs `f` where `path` of `spec` is seen as the caller sees it.
    fn in_view<R: Send + 'static>(
        &self,
        who: &Identity,
        spec: &Mirror,
        path: &str,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, Errno> {
        if rules::namespace_of(spec, path).is_some() {
            self.in_namespaces(who, f)
        } else {
            Ok(f())
        }
    }

    /// Runs `f` in the caller's network, UTS and IPC namespaces.
    fn in_namespaces<R: Send + 'static>(
        &self,
        who: &Identity,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, Errno> {
        if Some(who.ns) == self.own_ns {
            return Ok(f());
        }
        let pid = who.pid;
        self.workers.run(who.ns, || NsFds::open(pid), f).map_err(|e| {
            if e.errno() == libc::ESRCH {
                self.identities.forget(pid);
            } else {
                tracing::warn!(pid, error = %e, "namespaced sysctl");
            }
            e.errno()
        })
    }

    fn read(&self, who: &Arc<Identity>, access: &Access) -> Result<Vec<u8>, Errno> {
        match access {
            Access::Host(path) => read_file(path),
            Access::Real(path) | Access::UtsName(path) => {
                let path = path.clone();
                self.in_namespaces(who, move || read_file(&path))?
            }
            Access::GidRange(path) => {
                let (low, high) = self.gid_range(who, path)?;
                Ok(format::render(&format!("{low}\t{high}")))
            }
            Access::Emulated { key, host, .. } => {
                let stored = who.container.as_ref().and_then(|c| self.store.get(&c.id, key));
                match stored {
                    Some(value) => Ok(format::render(&value)),
                    None => read_file(host),
                }
            }
            Access::Uuid => {
                let container = who.container.as_ref().ok_or(libc::ENOENT)?;
                Ok(format::render(&container_uuid(&container.id)))
            }
        }
    }

    /// The caller's ping_group_range, in its own group ids (unmapped: 65534).
    fn gid_range(&self, who: &Identity, path: &Path) -> Result<(u64, u64), Errno> {
        let owned = path.to_path_buf();
        let text = self.in_namespaces(who, move || read_file(&owned))??;
        let map = gid_map(who.pid)?;
        let mut ids = format::value_of(&text)
            .split_ascii_whitespace()
            .map(|g| {
                g.parse::<u64>()
                    .ok()
                    .and_then(|g| identity::map_to_inside(&map, g))
                    .unwrap_or(OVERFLOW_ID)
            })
            .collect::<Vec<_>>()
            .into_iter();
        Ok((ids.next().unwrap_or(OVERFLOW_ID), ids.next().unwrap_or(OVERFLOW_ID)))
    }

    /// `ipv4_ping_group_range` for a write: the caller's ids, checked against its gid map.
    fn write_gid_range(
        &self,
        who: &Identity,
        path: &Path,
        data: &[u8],
        offset: u64,
    ) -> Result<usize, Errno> {
        let (low, high) = self.gid_range(who, path)?;
        let range = Format::Ints { len: 2, min: 0, max: i32::MAX as i64 };
        let written = range.write(&format!("{low}\t{high}"), data, offset);
        let (Some(value), Ok(consumed)) = (&written.value, written.result) else {
            return written.result;
        };
        let map = gid_map(who.pid)?;
        let mut parts = value.split('\t').map(|v| v.parse::<u64>().unwrap_or(u64::MAX));
        let (low, high) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        let outside = |g| identity::map_to_outside(&map, g).ok_or(libc::EINVAL);
        let (out_low, out_high) = (outside(low)?, outside(high)?);
        // The writer is the container's root: the kernel reads the ids in the container's
        // user namespace, which maps 0.. to the container's range.
        let container = who.container.as_ref().ok_or(libc::EACCES)?;
        let map = [(0, u64::from(container.gid_base), u64::from(container.id_count))];
        let inside = |g| identity::map_to_inside(&map, g).ok_or(libc::EINVAL);
        let (in_low, in_high) = (inside(out_low)?, inside(out_high)?);
        let text = if high < low || out_high < out_low {
            "1 0\n".to_string()
        } else {
            format!("{in_low} {in_high}\n")
        };
        self.write_as_container_root(who, How::File, path, text.as_bytes(), 0)?;
        Ok(consumed)
    }

    /// The writer key of a caller: its namespaces and its container's user namespace.
    fn writer_key(who: &Identity) -> Result<WriterKey, Errno> {
        match (&who.container, who.user_ns) {
            (Some(_), Some(user_ns)) => Ok(WriterKey { ns: who.ns, user_ns }),
            _ => Err(libc::EACCES),
        }
    }

    /// EACCES unless each of the caller's network, UTS and IPC namespaces is owned by its
    /// container's user namespace or one below it (not the host's, not another's).
    fn check_namespaces_owned(&self, who: &Identity) -> Result<(), Errno> {
        let key = Self::writer_key(who)?;
        WriterFds::open(who.pid, key).map(drop).map_err(|e| self.writer_error(who, &e))
    }

    /// Writes in the caller's namespaces as its container's root (see [`writer`]).
    fn write_as_container_root(
        &self,
        who: &Identity,
        how: How,
        path: &Path,
        data: &[u8],
        offset: u64,
    ) -> Result<usize, Errno> {
        let key = Self::writer_key(who)?;
        let data = &data[..data.len().min(writer::MAX_WRITE)];
        let job = WriteJob { how, path: path.to_path_buf(), offset, data: data.to_vec() };
        let pid = who.pid;
        let container = who.container.as_ref().map_or("", |c| c.id.as_str());
        self.writers
            .write(key, container, || WriterFds::open(pid, key), &job)
            .map_err(|e| self.writer_error(who, &e))?
    }

    /// The errno of a writer's failure, logged.
    fn writer_error(&self, who: &Identity, error: &nsworker::NsError) -> Errno {
        match error.errno() {
            libc::ESRCH => self.identities.forget(who.pid),
            _ => {
                let container = who.container.as_ref().map(|c| c.id.as_str());
                tracing::warn!(pid = who.pid, container, %error, "namespaced sysctl write refused");
            }
        }
        error.errno()
    }
}

/// Attributes of a read-only file.
fn read_only(stat: Stat, view: u64) -> NodeAttr {
    NodeAttr {
        typ: NodeType::File,
        mode: stat.mode & !0o222,
        uid: stat.uid,
        gid: stat.gid,
        view,
        writable: false,
    }
}

/// The store key of `path` of `mirror`: the path below the mount point.
fn store_key(mirror: &Mirror, path: &str) -> String {
    format!("{}/{path}", mirror.path)
}

/// The proper ancestors of `path` ("a/b/c" -> "a", "a/b"), not the root.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Paths come from FUSE names joined by `/`: no empty, `.` or `..` components.
fn valid_path(path: &str) -> bool {
    path.is_empty() || path.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

fn gid_map(pid: u32) -> Result<Vec<(u64, u64, u64)>, Errno> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/gid_map")).map_err(|_| libc::ESRCH)?;
    Ok(identity::parse_id_map(&text))
}

/// lstat(2) of a host path; `None` when it does not exist.
fn host_stat(path: &Path) -> Result<Option<Stat>, Errno> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            let Some(typ) = node_type(meta.file_type()) else {
                return Ok(None); // sockets and fifos are not mirrored
            };
            Ok(Some(Stat {
                typ,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                dev: meta.dev(),
            }))
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => Ok(None),
        Err(e) => Err(io_errno(e)),
    }
}

/// What a host file type is mirrored as (sockets and fifos are not).
fn node_type(ft: std::fs::FileType) -> Option<NodeType> {
    if ft.is_dir() {
        Some(NodeType::Dir)
    } else if ft.is_symlink() {
        Some(NodeType::Symlink)
    } else if ft.is_file() || ft.is_char_device() || ft.is_block_device() {
        Some(NodeType::File)
    } else {
        None
    }
}

fn list_dir(path: &Path) -> Vec<Listed> {
    let Ok(dir) = std::fs::read_dir(path) else { return Vec::new() };
    dir.flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let typ = node_type(entry.file_type().ok()?)?;
            Some(Listed { name, typ })
        })
        .collect()
}

fn read_file(path: &Path) -> Result<Vec<u8>, Errno> {
    let file = std::fs::File::open(path).map_err(io_errno)?;
    let mut out = Vec::new();
    file.take(MAX_CONTENT).read_to_end(&mut out).map_err(io_errno)?;
    Ok(out)
}

/// A container's DMI product UUID: 128 bits hashed from its id (two FNV-1a 64 passes with
/// different offsets), laid out as an RFC 9562 version 8 (custom) UUID, lower case as the
/// kernel prints SMBIOS 2.6+ UUIDs. The same id always gives the same UUID.
pub fn container_uuid(id: &str) -> String {
    let fnv = |seed: u64| {
        let mut h = seed;
        for b in b"sysvisor-dmi-product-uuid\0".iter().chain(id.as_bytes()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    let (hi, lo) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x6c62_272e_07bb_0142));
    let hi = (hi & !0xf000) | 0x8000; // version 8
    let lo = (lo & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}
