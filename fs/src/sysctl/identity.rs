//! Who asks, as the dynamic trees care: the caller's network, UTS and IPC namespaces, and
//! the registered system container it belongs to, if any.
//!
//! A caller belongs to a container when its pid namespace, or an ancestor of it (a nested
//! container's), is the pid namespace of a registered container's init; the ancestors are
//! walked with the nsfs `NS_GET_PARENT` ioctl. Identities are cached per pid for the
//! service's TTL, each with a pidfd: a hit costs one liveness check and can never be
//! another process that got the same pid number.

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::nsworker::NsKey;
use crate::caller::pidfd::PidFd;
use crate::caller::pidns;

/// A registered system container, as the dynamic trees need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    pub id: String,
    /// Host uid of the container's root (first of its range).
    pub uid_base: u32,
    pub gid_base: u32,
    pub id_count: u32,
}

/// Where registered containers are looked up (the daemon's registry).
pub trait Containers: Send + Sync + std::fmt::Debug {
    /// The live container whose init is in pid namespace `pid_ns` (nsfs inode).
    fn by_pid_ns(&self, pid_ns: u64) -> Option<ContainerRef>;
}

/// One caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub pid: u32,
    /// Its network, UTS and IPC namespaces.
    pub ns: NsKey,
    /// Its container, `None` for the host, standalone mode and unregistered containers.
    pub container: Option<Arc<ContainerRef>>,
    /// The user namespace (nsfs inode) that owns the container's pid namespace: the
    /// container's own (runc makes every other namespace after it). Alive as long as the
    /// caller is (its pid namespace holds it).
    pub user_ns: Option<u64>,
}

impl Identity {
    /// A number naming what this caller sees (its container and namespaces): callers with
    /// the same one see the same dynamic files.
    pub fn view(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.ns.hash(&mut h);
        self.container.as_ref().map(|c| &c.id).hash(&mut h);
        h.finish() | 1 // never 0, which means "shared by all callers"
    }

    /// Whether the caller is its container's root (the owner of the container's files).
    pub fn is_container_root(&self, fsuid: u32) -> bool {
        self.container.as_ref().is_some_and(|c| c.uid_base == fsuid)
    }
}

struct Cached {
    identity: Arc<Identity>,
    pidfd: PidFd,
    checked: Instant,
}

/// The pid -> [`Identity`] cache.
pub struct Identities {
    entries: DashMap<u32, Cached>,
    ttl: Duration,
    containers: Option<Arc<dyn Containers>>,
    host_pid_ns: Option<u64>,
}

/// `NS_GET_USERNS` (`_IO(0xb7, 0x1)`): an fd on the user namespace owning a namespace.
const NS_GET_USERNS: libc::c_ulong = 0xb701;
/// `NS_GET_PARENT` (`_IO(0xb7, 0x2)`): an fd on the parent of a pid or user namespace.
const NS_GET_PARENT: libc::c_ulong = 0xb702;
/// Nesting deeper than this is not followed (the kernel allows 32 pid namespace levels).
const MAX_DEPTH: usize = 32;

impl Identities {
    pub fn new(ttl: Duration, containers: Option<Arc<dyn Containers>>) -> Identities {
        Identities {
            entries: DashMap::new(),
            ttl,
            containers,
            host_pid_ns: pidns::pid_ns_of(std::process::id()).ok(),
        }
    }

    /// Who process `pid` is; ESRCH when it is gone.
    pub fn resolve(&self, pid: u32) -> Result<Arc<Identity>, i32> {
        if let Some(entry) = self.entries.get(&pid) {
            if entry.checked.elapsed() < self.ttl && entry.pidfd.is_alive() {
                return Ok(entry.identity.clone());
            }
        }
        let gone = |_| libc::ESRCH;
        let pidfd = PidFd::open(pid).map_err(gone)?;
        let ns = NsKey::of_pid(pid).map_err(gone)?;
        let (container, user_ns) = match self.container_of(pid) {
            Some((container, user_ns)) => (Some(Arc::new(container)), user_ns),
            None => (None, None),
        };
        if !pidfd.is_alive() {
            return Err(libc::ESRCH);
        }
        let identity = Arc::new(Identity { pid, ns, container, user_ns });
        self.entries
            .insert(pid, Cached { identity: identity.clone(), pidfd, checked: Instant::now() });
        Ok(identity)
    }

    /// Drops the cached identity of `pid`.
    pub fn forget(&self, pid: u32) {
        self.entries.remove(&pid);
    }

    /// Drops the identities of processes that are gone.
    pub fn sweep(&self) {
        self.entries.retain(|_, e| e.pidfd.is_alive());
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The container of `pid` (its pid namespace's, or the closest ancestor's) and the
    /// user namespace owning that pid namespace.
    fn container_of(&self, pid: u32) -> Option<(ContainerRef, Option<u64>)> {
        let containers = self.containers.as_ref()?;
        let mut ns = File::open(format!("/proc/{pid}/ns/pid")).ok()?;
        for _ in 0..MAX_DEPTH {
            let ino = ns.metadata().ok()?.ino();
            if Some(ino) == self.host_pid_ns {
                return None;
            }
            if let Some(container) = containers.by_pid_ns(ino) {
                let owner = ns_ioctl(&ns, NS_GET_USERNS).and_then(|u| u.metadata());
                return Some((container, owner.ok().map(|m| m.ino())));
            }
            ns = ns_ioctl(&ns, NS_GET_PARENT).ok()?;
        }
        None
    }
}

/// A handle on user namespace `user_ns` (nsfs inode) when it owns namespace `ns`, or is
/// an ancestor of the user namespace that does; `None` when it is neither.
pub fn owner_within(ns: &File, user_ns: u64) -> std::io::Result<Option<File>> {
    let mut owner = ns_ioctl(ns, NS_GET_USERNS)?;
    for _ in 0..MAX_DEPTH {
        if owner.metadata()?.ino() == user_ns {
            return Ok(Some(owner));
        }
        owner = match ns_ioctl(&owner, NS_GET_PARENT) {
            Ok(parent) => parent,
            // The initial user namespace has no parent (EPERM), and neither has one that
            // is outside the daemon's own.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Ok(None),
            Err(e) => return Err(e),
        };
    }
    Ok(None)
}

/// An nsfs ioctl that returns a new namespace fd (`NS_GET_USERNS`, `NS_GET_PARENT`).
fn ns_ioctl(ns: &File, request: libc::c_ulong) -> std::io::Result<File> {
    // SAFETY: these nsfs ioctls take no argument and return a new fd or -1.
    let fd = unsafe { libc::ioctl(ns.as_raw_fd(), request) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd; nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Parses /proc/PID/gid_map (or uid_map): `(inside, outside, count)` lines.
pub fn parse_id_map(text: &str) -> Vec<(u64, u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(|x| x.parse::<u64>().ok());
            Some((f.next()??, f.next()??, f.next()??))
        })
        .collect()
}

/// The id inside a namespace with map `map` of host id `outside`, if mapped.
pub fn map_to_inside(map: &[(u64, u64, u64)], outside: u64) -> Option<u64> {
    map.iter()
        .find(|(_, out, count)| outside >= *out && outside - out < *count)
        .map(|(inside, out, _)| inside + (outside - out))
}

/// The host id of id `inside` of a namespace with map `map`, if mapped.
pub fn map_to_outside(map: &[(u64, u64, u64)], inside: u64) -> Option<u64> {
    map.iter()
        .find(|(ins, _, count)| inside >= *ins && inside - ins < *count)
        .map(|(ins, out, _)| out + (inside - ins))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Only(u64, ContainerRef);

    impl Containers for Only {
        fn by_pid_ns(&self, pid_ns: u64) -> Option<ContainerRef> {
            (pid_ns == self.0).then(|| self.1.clone())
        }
    }

    fn container(id: &str) -> ContainerRef {
        ContainerRef { id: id.into(), uid_base: 100_000, gid_base: 100_000, id_count: 65536 }
    }

    #[test]
    fn the_host_is_in_no_container_and_hits_are_cached() {
        let me = pidns::pid_ns_of(std::process::id()).unwrap();
        // Even a registry that claims the host's namespace is not asked for it.
        let ids =
            Identities::new(Duration::from_secs(60), Some(Arc::new(Only(me, container("x")))));
        let a = ids.resolve(std::process::id()).unwrap();
        assert_eq!(a.container, None);
        assert_eq!(a.ns, NsKey::of_pid(std::process::id()).unwrap());
        assert!(Arc::ptr_eq(&a, &ids.resolve(std::process::id()).unwrap()));
        assert!(!a.is_container_root(0));
        assert_ne!(a.view(), 0);
        assert_eq!(ids.resolve(1 << 30), Err(libc::ESRCH));
    }

    #[test]
    fn reaped_processes_are_gone_and_swept() {
        let ids = Identities::new(Duration::from_secs(60), None);
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let pid = child.id();
        ids.resolve(pid).unwrap();
        child.kill().ok();
        child.wait().ok();
        assert_eq!(ids.resolve(pid), Err(libc::ESRCH));
        ids.sweep();
        assert!(ids.is_empty());
    }

    #[test]
    fn namespaces_are_owned_by_their_user_namespace_and_its_ancestors_only() {
        let own = File::open("/proc/self/ns/user").unwrap();
        let own_ino = own.metadata().unwrap().ino();
        let net = File::open("/proc/self/ns/net").unwrap();
        let found = owner_within(&net, own_ino).unwrap().expect("owned by our user namespace");
        assert_eq!(found.metadata().unwrap().ino(), own_ino);
        // A namespace's own inode is no user namespace of it; nor is an unknown one.
        let net_ino = net.metadata().unwrap().ino();
        assert!(owner_within(&net, net_ino).unwrap().is_none());
        assert!(owner_within(&net, 1).unwrap().is_none());
    }

    #[test]
    fn id_maps_translate_both_ways() {
        let map = parse_id_map("         0     100000      65536\n 70000 5 1\n");
        assert_eq!(map, [(0, 100_000, 65536), (70000, 5, 1)]);
        assert_eq!(map_to_inside(&map, 100_000), Some(0));
        assert_eq!(map_to_inside(&map, 165_535), Some(65535));
        assert_eq!(map_to_inside(&map, 165_536), None);
        assert_eq!(map_to_inside(&map, 5), Some(70000));
        assert_eq!(map_to_outside(&map, 65535), Some(165_535));
        assert_eq!(map_to_outside(&map, 65536), None);
        assert!(parse_id_map("garbage\n1 2").is_empty());
    }
}
