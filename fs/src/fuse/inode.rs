//! The inodes served under the mount point.
//!
//! The static [`Tree`], built once from [`views::TABLE`](crate::views::TABLE) and
//! [`sysctl::rules::MIRRORS`](crate::sysctl::rules::MIRRORS): the root, every directory on
//! the way to a view (`proc/`, `sys/devices/system/cpu/`, ...), one file per view, and one
//! directory per mirror (`proc/sys`, `sys/kernel`, ...) whose contents are dynamic.
//! Tree numbers are dense: node `n` is `nodes[n - 1]`, the root is [`ROOT_INO`] (FUSE's
//! root id). Directories are given to the kernel under their tree number, files under
//! [`file_ino`]`(node, 0)` (top bit set): one inode per file for every caller, so that a
//! lookup by one caller never invalidates the dentry another (a runtime about to
//! bind-mount it) holds. The static tree needs no lookup counting: nothing in it is ever
//! forgotten.
//!
//! The [`DynInodes`]: what lies below a mirror directory, numbered on lookup
//! ([`DYN_INO_FLAG`] set) and counted like FUSE wants (each LOOKUP reply adds one, FORGET
//! takes them back; at zero the number is dropped, never reused). A dynamic file whose
//! content depends on the caller gets one inode per caller view (see
//! `sysctl::Identity::view`), so that sendfile readers (which go through the inode's page
//! cache, see [`super::filesystem`]) of different containers never share pages.
//! Nothing here knows about FUSE messages; [`super::filesystem`] maps both onto them.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::FuseError;
use crate::sysctl::NodeType;

/// Inode number of the mount point's root (FUSE_ROOT_ID).
pub const ROOT_INO: u64 = fuse_backend_rs::api::filesystem::ROOT_ID;

/// Set in the inode numbers of files, never in those of directories.
pub const FILE_INO_FLAG: u64 = 1 << 63;
/// Low bits of a file inode number: the file's tree number.
pub const NODE_BITS: u32 = 12;
/// The most nodes a tree may have (tree numbers must fit in [`NODE_BITS`]).
pub const MAX_NODES: usize = (1 << NODE_BITS) - 1;
const NODE_MASK: u64 = (1 << NODE_BITS) - 1;
/// Bits of the cgroup set id kept in a file inode number (between the flag and the node).
const CGROUP_MASK: u64 = (1 << (63 - NODE_BITS)) - 1;

/// The inode number of file node `node` (its tree number) for callers in cgroup set `cgroup`
/// (`Caller::cgroup_id`, interned ids that are never reused; only the low 51 bits are kept,
/// far more than a host will ever intern).
pub fn file_ino(node: u64, cgroup: u64) -> u64 {
    debug_assert!(node <= NODE_MASK);
    FILE_INO_FLAG | (cgroup & CGROUP_MASK) << NODE_BITS | (node & NODE_MASK)
}

/// The `st_ino` (and `d_ino`) of file inode `ino`: the number without its flag, so that it
/// fits in 32 bits for the first million cgroup sets (32-bit programs' stat() fails with
/// EOVERFLOW otherwise). Still unique: a file's tree number is no directory's.
pub fn file_st_ino(ino: u64) -> u64 {
    ino & !FILE_INO_FLAG
}

/// Set in the inode numbers of dynamic nodes (below a mirror), never in static ones.
pub const DYN_INO_FLAG: u64 = 1 << 62;
/// The first dynamic node's number (without the flag): above every static tree number,
/// so that `st_ino`s never collide.
const DYN_FIRST: u64 = MAX_NODES as u64 + 1;

/// What an inode number given to the kernel names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ino {
    /// A directory: its tree number.
    Dir(u64),
    /// A file: its tree number and the cgroup set (as kept in the number) it was looked up by.
    File { node: u64, cgroup: u64 },
    /// A node below a mirror: see [`DynInodes`].
    Dynamic(u64),
}

impl Ino {
    pub fn decode(ino: u64) -> Ino {
        if ino & FILE_INO_FLAG != 0 {
            Ino::File { node: ino & NODE_MASK, cgroup: (ino & !FILE_INO_FLAG) >> NODE_BITS }
        } else if ino & DYN_INO_FLAG != 0 {
            Ino::Dynamic(ino)
        } else {
            Ino::Dir(ino)
        }
    }
}

/// What an inode is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory; `children` are inode numbers sorted by name.
    Dir { children: Vec<u64> },
    /// A virtual file: `view` is its index in the view table.
    File { view: usize },
    /// A directory whose contents are dynamic: `mirror` is its index in the mirror table.
    Mirror { mirror: usize },
}

/// One inode of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub ino: u64,
    /// The parent directory (the root is its own parent).
    pub parent: u64,
    /// Name in the parent directory (empty for the root).
    pub name: String,
    /// Path below the mount point, e.g. `proc/meminfo` (empty for the root).
    pub path: String,
    pub kind: NodeKind,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir { .. } | NodeKind::Mirror { .. })
    }

    /// The view index of a file, `None` for a directory.
    pub fn view(&self) -> Option<usize> {
        match self.kind {
            NodeKind::File { view } => Some(view),
            NodeKind::Dir { .. } | NodeKind::Mirror { .. } => None,
        }
    }

    /// The mirror index of a mirror directory.
    pub fn mirror(&self) -> Option<usize> {
        match self.kind {
            NodeKind::Mirror { mirror } => Some(mirror),
            _ => None,
        }
    }
}

/// One directory entry as listed by readdir, `.` and `..` included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEntryRef<'a> {
    pub ino: u64,
    pub name: &'a str,
    pub is_dir: bool,
}

/// Why a lookup failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupError {
    /// The parent inode does not exist.
    NoParent,
    /// The parent inode is a file.
    NotADirectory,
}

/// The whole tree. Immutable once built, so it is shared between worker threads without locks.
#[derive(Debug, Clone)]
pub struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    /// Builds the tree from view paths; the `i`-th path becomes a file serving view `i`.
    pub fn from_paths<'a>(paths: impl IntoIterator<Item = &'a str>) -> Result<Tree, FuseError> {
        Tree::build(paths, std::iter::empty())
    }

    /// Builds the tree from view paths (files) and mirror paths (the `i`-th becomes the
    /// directory of mirror `i`).
    pub fn build<'a>(
        views: impl IntoIterator<Item = &'a str>,
        mirrors: impl IntoIterator<Item = &'a str>,
    ) -> Result<Tree, FuseError> {
        let mut nodes = vec![Node {
            ino: ROOT_INO,
            parent: ROOT_INO,
            name: String::new(),
            path: String::new(),
            kind: NodeKind::Dir { children: Vec::new() },
        }];
        let leaves = views
            .into_iter()
            .enumerate()
            .map(|(view, path)| (path, NodeKind::File { view }))
            .chain(
                mirrors
                    .into_iter()
                    .enumerate()
                    .map(|(mirror, path)| (path, NodeKind::Mirror { mirror })),
            );
        for (path, leaf) in leaves {
            validate(path)?;
            let components: Vec<&str> = path.split('/').collect();
            let mut dir = ROOT_INO;
            for (i, component) in components.iter().enumerate() {
                let last = i + 1 == components.len();
                let existing = child_of(&nodes, dir, component);
                dir = match (existing, last) {
                    (Some(ino), false)
                        if matches!(nodes[index(ino)].kind, NodeKind::Dir { .. }) =>
                    {
                        ino
                    }
                    (Some(_), false) => {
                        return Err(invalid(path, "a parent directory is a view file or a mirror"))
                    }
                    (Some(_), true) => return Err(invalid(path, "duplicate path")),
                    (None, _) => {
                        let ino = nodes.len() as u64 + 1;
                        let kind = if last {
                            leaf.clone()
                        } else {
                            NodeKind::Dir { children: Vec::new() }
                        };
                        nodes.push(Node {
                            ino,
                            parent: dir,
                            name: (*component).to_string(),
                            path: components[..=i].join("/"),
                            kind,
                        });
                        if let NodeKind::Dir { children } = &mut nodes[index(dir)].kind {
                            children.push(ino);
                        }
                        ino
                    }
                };
            }
        }
        if nodes.len() > MAX_NODES {
            return Err(FuseError::InvalidViewPath {
                path: String::new(),
                reason: "too many files and directories for the inode numbering",
            });
        }
        // Sort every directory's children by name: stable, predictable readdir order.
        let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
        for node in &mut nodes {
            if let NodeKind::Dir { children } = &mut node.kind {
                children.sort_by(|a, b| names[index(*a)].cmp(&names[index(*b)]));
            }
        }
        Ok(Tree { nodes })
    }

    /// The tree of the crate's view and mirror tables.
    pub fn from_table() -> Result<Tree, FuseError> {
        Tree::build(
            crate::views::TABLE.iter().map(|spec| spec.path),
            crate::sysctl::rules::MIRRORS.iter().map(|m| m.path),
        )
    }

    /// The node with tree number `ino`.
    pub fn get(&self, ino: u64) -> Option<&Node> {
        ino.checked_sub(1).and_then(|i| self.nodes.get(usize::try_from(i).ok()?))
    }

    /// The node named by an inode number given to the kernel: a directory's tree number or a
    /// [`file_ino`]. `None` for anything else (unknown, or a file under its tree number).
    pub fn resolve(&self, ino: u64) -> Option<(&Node, Ino)> {
        let decoded = Ino::decode(ino);
        let node = match decoded {
            Ino::Dir(n) => self.get(n).filter(|node| node.is_dir())?,
            Ino::File { node, .. } => self.get(node).filter(|node| !node.is_dir())?,
            Ino::Dynamic(_) => return None,
        };
        Some((node, decoded))
    }

    /// Finds `name` in directory `parent`. `Ok(None)` means no such entry.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<&Node>, LookupError> {
        let dir = self.get(parent).ok_or(LookupError::NoParent)?;
        let children: &[u64] = match &dir.kind {
            NodeKind::Dir { children } => children,
            NodeKind::Mirror { .. } => &[],
            NodeKind::File { .. } => return Err(LookupError::NotADirectory),
        };
        let node = match name {
            b"." => Some(dir),
            b".." => self.get(dir.parent),
            _ => children
                .binary_search_by(|ino| self.nodes[index(*ino)].name.as_bytes().cmp(name))
                .ok()
                .map(|i| &self.nodes[index(children[i])]),
        };
        Ok(node)
    }

    /// The entries of directory `ino` in readdir order: `.`, `..`, then the children sorted
    /// by name. `None` if `ino` is not a directory.
    pub fn entries(&self, ino: u64) -> Option<Vec<DirEntryRef<'_>>> {
        let dir = self.get(ino)?;
        let children: &[u64] = match &dir.kind {
            NodeKind::Dir { children } => children,
            NodeKind::Mirror { .. } => &[],
            NodeKind::File { .. } => return None,
        };
        let mut entries = Vec::with_capacity(children.len() + 2);
        entries.push(DirEntryRef { ino: dir.ino, name: ".", is_dir: true });
        entries.push(DirEntryRef { ino: dir.parent, name: "..", is_dir: true });
        entries.extend(children.iter().map(|c| {
            let child = &self.nodes[index(*c)];
            DirEntryRef { ino: child.ino, name: &child.name, is_dir: child.is_dir() }
        }));
        Some(entries)
    }

    /// Number of subdirectories of directory `ino` (for its link count).
    pub fn subdir_count(&self, ino: u64) -> usize {
        match self.get(ino).map(|n| &n.kind) {
            Some(NodeKind::Dir { children }) => {
                children.iter().filter(|c| self.nodes[index(**c)].is_dir()).count()
            }
            _ => 0,
        }
    }

    /// Every node, in inode order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// A node below a mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynNode {
    /// Its inode number (with [`DYN_INO_FLAG`]).
    pub ino: u64,
    pub mirror: usize,
    /// Path below the mirror's directory, e.g. `net/ipv4/ip_forward`.
    pub path: Arc<str>,
    pub typ: NodeType,
    /// The caller view it was looked up for (0: every caller's).
    pub view: u64,
}

impl DynNode {
    /// Its `st_ino`: the number without the flag (unique: above every tree number).
    pub fn st_ino(&self) -> u64 {
        self.ino & !DYN_INO_FLAG
    }
}

type DynKey = (usize, Arc<str>, NodeType, u64);

#[derive(Debug)]
struct Slot {
    node: Arc<DynNode>,
    lookups: u64,
}

#[derive(Debug, Default)]
struct DynTables {
    by_ino: HashMap<u64, Slot>,
    by_key: HashMap<DynKey, u64>,
    next: u64,
}

/// The dynamic inodes, by number and by (mirror, path, type, view). Lookups and forgets
/// take the write lock, everything else the read lock.
#[derive(Debug, Default)]
pub struct DynInodes {
    tables: RwLock<DynTables>,
}

impl DynInodes {
    pub fn new() -> DynInodes {
        DynInodes::default()
    }

    /// The inode of (`mirror`, `path`, `typ`, `view`), numbered if new, with one more
    /// lookup counted (the kernel counts one per LOOKUP reply).
    pub fn lookup(&self, mirror: usize, path: &str, typ: NodeType, view: u64) -> Arc<DynNode> {
        let mut t = self.tables.write();
        let key: DynKey = (mirror, Arc::from(path), typ, view);
        if let Some(ino) = t.by_key.get(&key).copied() {
            if let Some(slot) = t.by_ino.get_mut(&ino) {
                slot.lookups += 1;
                return slot.node.clone();
            }
        }
        let ino = DYN_INO_FLAG | (DYN_FIRST + t.next);
        t.next += 1;
        let node = Arc::new(DynNode { ino, mirror, path: key.1.clone(), typ, view });
        t.by_ino.insert(ino, Slot { node: node.clone(), lookups: 1 });
        t.by_key.insert(key, ino);
        node
    }

    /// The node of inode number `ino`, if the kernel still holds it.
    pub fn get(&self, ino: u64) -> Option<Arc<DynNode>> {
        self.tables.read().by_ino.get(&ino).map(|slot| slot.node.clone())
    }

    /// The kernel dropped `count` lookups of `ino`; at zero the number is forgotten.
    pub fn forget(&self, ino: u64, count: u64) {
        let mut t = self.tables.write();
        let Some(slot) = t.by_ino.get_mut(&ino) else { return };
        slot.lookups = slot.lookups.saturating_sub(count);
        if slot.lookups == 0 {
            let node = slot.node.clone();
            t.by_ino.remove(&ino);
            t.by_key.remove(&(node.mirror, node.path.clone(), node.typ, node.view));
        }
    }

    /// Forgets everything (the connection is gone).
    pub fn clear(&self) {
        let mut t = self.tables.write();
        t.by_ino.clear();
        t.by_key.clear();
    }

    /// Inodes held by the kernel right now.
    pub fn len(&self) -> usize {
        self.tables.read().by_ino.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn index(ino: u64) -> usize {
    (ino - 1) as usize
}

fn child_of(nodes: &[Node], dir: u64, name: &str) -> Option<u64> {
    match &nodes[index(dir)].kind {
        NodeKind::Dir { children } => {
            children.iter().copied().find(|c| nodes[index(*c)].name == name)
        }
        NodeKind::File { .. } | NodeKind::Mirror { .. } => None,
    }
}

fn invalid(path: &str, reason: &'static str) -> FuseError {
    FuseError::InvalidViewPath { path: path.to_string(), reason }
}

fn validate(path: &str) -> Result<(), FuseError> {
    if path.is_empty() {
        return Err(invalid(path, "empty path"));
    }
    if path.contains('\0') {
        return Err(invalid(path, "contains a NUL byte"));
    }
    for component in path.split('/') {
        match component {
            "" => return Err(invalid(path, "empty component (leading, trailing or double '/')")),
            "." | ".." => return Err(invalid(path, "'.' or '..' component")),
            c if c.len() > 255 => return Err(invalid(path, "component longer than 255 bytes")),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysctl::rules::MIRRORS;
    use crate::views::TABLE;
    use std::collections::{BTreeMap, BTreeSet};

    fn table_tree() -> Tree {
        Tree::from_table().expect("the view table builds a tree")
    }

    /// Resolves a slash-separated path from the root.
    fn resolve<'t>(tree: &'t Tree, path: &str) -> Option<&'t Node> {
        let mut node = tree.get(ROOT_INO)?;
        for component in path.split('/').filter(|c| !c.is_empty()) {
            node = tree.lookup(node.ino, component.as_bytes()).ok()??;
        }
        Some(node)
    }

    /// Every directory implied by the table, with the names it must list.
    fn expected_dirs() -> BTreeMap<String, BTreeSet<String>> {
        let mut dirs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        dirs.entry(String::new()).or_default();
        for spec in TABLE {
            let parts: Vec<&str> = spec.path.split('/').collect();
            for i in 0..parts.len() {
                let parent = parts[..i].join("/");
                dirs.entry(parent).or_default().insert(parts[i].to_string());
                if i + 1 < parts.len() {
                    dirs.entry(parts[..=i].join("/")).or_default();
                }
            }
        }
        // Mirror directories: static, with no static entries.
        for mirror in MIRRORS {
            let parts: Vec<&str> = mirror.path.split('/').collect();
            for i in 0..parts.len() {
                dirs.entry(parts[..i].join("/")).or_default().insert(parts[i].to_string());
                dirs.entry(parts[..=i].join("/")).or_default();
            }
        }
        dirs
    }

    #[test]
    fn every_table_path_resolves_to_its_view() {
        let tree = table_tree();
        for (view, spec) in TABLE.iter().enumerate() {
            let node = resolve(&tree, spec.path).unwrap_or_else(|| panic!("{} missing", spec.path));
            assert_eq!(node.view(), Some(view), "{}", spec.path);
            assert_eq!(node.path, spec.path);
            assert_eq!(tree.get(node.ino), Some(node));
        }
    }

    #[test]
    fn readdir_of_every_directory_lists_its_entries() {
        let tree = table_tree();
        let expected = expected_dirs();
        let dirs: Vec<&Node> = tree.nodes().iter().filter(|n| n.is_dir()).collect();
        assert_eq!(dirs.len(), expected.len(), "directory count");
        for (path, names) in &expected {
            let dir = resolve(&tree, path).unwrap_or_else(|| panic!("dir {path:?} missing"));
            assert!(dir.is_dir(), "{path:?}");
            let entries = tree.entries(dir.ino).unwrap();
            assert_eq!(entries[0], DirEntryRef { ino: dir.ino, name: ".", is_dir: true });
            assert_eq!(entries[1], DirEntryRef { ino: dir.parent, name: "..", is_dir: true });
            let listed: Vec<&str> = entries[2..].iter().map(|e| e.name).collect();
            let want: Vec<&str> = names.iter().map(String::as_str).collect();
            assert_eq!(listed, want, "entries of {path:?} (sorted by name)");
            for entry in &entries[2..] {
                let child = tree.lookup(dir.ino, entry.name.as_bytes()).unwrap().unwrap();
                assert_eq!(child.ino, entry.ino);
                assert_eq!(child.is_dir(), entry.is_dir);
                assert_eq!(child.parent, dir.ino);
            }
        }
    }

    #[test]
    fn root_layout_matches_lxcfs() {
        let tree = table_tree();
        let root = tree.get(ROOT_INO).unwrap();
        assert!(root.is_dir());
        assert_eq!(root.parent, ROOT_INO);
        let names: Vec<&str> = tree.entries(ROOT_INO).unwrap().iter().map(|e| e.name).collect();
        assert_eq!(names, [".", "..", "proc", "sys"]);
        let cpu = resolve(&tree, "sys/devices/system/cpu").unwrap();
        assert!(cpu.is_dir());
        assert_eq!(tree.subdir_count(ROOT_INO), 2);
        assert_eq!(tree.subdir_count(cpu.ino), 0);
    }

    #[test]
    fn dot_and_dotdot_lookups() {
        let tree = table_tree();
        let proc_dir = resolve(&tree, "proc").unwrap();
        assert_eq!(tree.lookup(proc_dir.ino, b".").unwrap().unwrap().ino, proc_dir.ino);
        assert_eq!(tree.lookup(proc_dir.ino, b"..").unwrap().unwrap().ino, ROOT_INO);
        assert_eq!(tree.lookup(ROOT_INO, b"..").unwrap().unwrap().ino, ROOT_INO);
    }

    #[test]
    fn unknown_names_and_bad_parents() {
        let tree = table_tree();
        let proc_dir = resolve(&tree, "proc").unwrap();
        assert_eq!(tree.lookup(proc_dir.ino, b"nonexistent").unwrap(), None);
        assert_eq!(tree.lookup(proc_dir.ino, b"").unwrap(), None);
        assert_eq!(tree.lookup(ROOT_INO, b"meminfo").unwrap(), None);
        let meminfo = resolve(&tree, "proc/meminfo").unwrap();
        assert_eq!(tree.lookup(meminfo.ino, b"x"), Err(LookupError::NotADirectory));
        assert_eq!(tree.lookup(0, b"proc"), Err(LookupError::NoParent));
        assert_eq!(tree.lookup(tree.len() as u64 + 1, b"proc"), Err(LookupError::NoParent));
        assert!(tree.get(0).is_none());
        assert!(tree.get(u64::MAX).is_none());
        assert!(tree.entries(meminfo.ino).is_none());
    }

    #[test]
    fn inode_numbers_are_dense() {
        let tree = table_tree();
        for (i, node) in tree.nodes().iter().enumerate() {
            assert_eq!(node.ino, i as u64 + 1);
        }
        assert_eq!(tree.nodes().iter().filter(|n| !n.is_dir()).count(), TABLE.len());
    }

    #[test]
    fn file_inode_numbers_encode_node_and_cgroup() {
        let tree = table_tree();
        let meminfo = resolve(&tree, "proc/meminfo").unwrap();
        let proc_dir = resolve(&tree, "proc").unwrap();
        let mut seen = BTreeSet::new();
        for cgroup in [0u64, 1, 2, 77, CGROUP_MASK] {
            let ino = file_ino(meminfo.ino, cgroup);
            assert!(ino & FILE_INO_FLAG != 0);
            assert!(seen.insert(ino), "{cgroup}");
            assert_eq!(Ino::decode(ino), Ino::File { node: meminfo.ino, cgroup });
            assert_eq!(file_st_ino(ino), cgroup << NODE_BITS | meminfo.ino);
            let (node, decoded) = tree.resolve(ino).unwrap();
            assert_eq!(node, meminfo);
            assert_eq!(decoded, Ino::File { node: meminfo.ino, cgroup });
        }
        // The first cgroup sets' files get small st_ino numbers, none a directory's.
        assert_eq!(file_st_ino(file_ino(meminfo.ino, 0)), meminfo.ino);
        assert!(file_st_ino(file_ino(meminfo.ino, (1 << 20) - 1)) <= u64::from(u32::MAX));
        // Other files of the same cgroup set get other numbers.
        for spec in TABLE {
            let node = resolve(&tree, spec.path).unwrap();
            let ino = file_ino(node.ino, 1);
            assert_eq!(seen.insert(ino), node.ino != meminfo.ino);
        }
        // Directories keep their tree numbers; a file is never reachable under its own.
        assert_eq!(tree.resolve(proc_dir.ino).unwrap().1, Ino::Dir(proc_dir.ino));
        assert_eq!(tree.resolve(ROOT_INO).unwrap().0.ino, ROOT_INO);
        assert!(tree.resolve(meminfo.ino).is_none());
        assert!(tree.resolve(file_ino(proc_dir.ino, 1)).is_none());
        assert!(tree.resolve(file_ino(0, 1)).is_none());
        assert!(tree.resolve(0).is_none());
        assert!(tree.resolve(u64::MAX).is_none());
    }

    #[test]
    fn trees_too_big_for_the_numbering_are_rejected() {
        let paths: Vec<String> = (0..MAX_NODES).map(|i| format!("f{i}")).collect();
        assert!(Tree::from_paths(paths.iter().map(String::as_str)).is_err());
        let paths: Vec<String> = (0..MAX_NODES - 1).map(|i| format!("f{i}")).collect();
        assert_eq!(Tree::from_paths(paths.iter().map(String::as_str)).unwrap().len(), MAX_NODES);
    }

    #[test]
    fn mirrors_are_directories_without_static_entries() {
        let tree = table_tree();
        for (i, mirror) in MIRRORS.iter().enumerate() {
            let node =
                resolve(&tree, mirror.path).unwrap_or_else(|| panic!("{} missing", mirror.path));
            assert!(node.is_dir());
            assert_eq!(node.mirror(), Some(i));
            assert_eq!(node.view(), None);
            assert_eq!(tree.lookup(node.ino, b"anything").unwrap(), None);
            let names: Vec<&str> = tree.entries(node.ino).unwrap().iter().map(|e| e.name).collect();
            assert_eq!(names, [".", ".."]);
            assert_eq!(tree.resolve(node.ino).unwrap().1, Ino::Dir(node.ino));
        }
        for bad in [(vec!["proc/sys/x"], vec!["proc/sys"]), (vec!["proc/sys"], vec!["proc/sys/x"])]
        {
            assert!(Tree::build(bad.0.iter().copied(), bad.1.iter().copied()).is_err(), "{bad:?}");
        }
        assert!(Tree::build(["proc/meminfo"], ["proc/meminfo"]).is_err());
    }

    #[test]
    fn dynamic_inodes_count_lookups() {
        let inodes = DynInodes::new();
        let a = inodes.lookup(0, "kernel/panic", NodeType::File, 7);
        assert!(a.ino & DYN_INO_FLAG != 0 && a.ino & FILE_INO_FLAG == 0);
        assert_eq!(Ino::decode(a.ino), Ino::Dynamic(a.ino));
        assert!(a.st_ino() > MAX_NODES as u64);
        assert_eq!(inodes.lookup(0, "kernel/panic", NodeType::File, 7).ino, a.ino);
        let b = inodes.lookup(0, "kernel/panic", NodeType::File, 8);
        let c = inodes.lookup(1, "kernel/panic", NodeType::File, 7);
        let d = inodes.lookup(0, "kernel/panic", NodeType::Dir, 7);
        assert_eq!([a.ino, b.ino, c.ino, d.ino].iter().collect::<BTreeSet<_>>().len(), 4);
        assert_eq!(inodes.len(), 4);
        inodes.forget(a.ino, 1);
        assert_eq!(inodes.get(a.ino).as_deref(), Some(&*a));
        inodes.forget(a.ino, 5);
        assert_eq!(inodes.get(a.ino), None);
        let again = inodes.lookup(0, "kernel/panic", NodeType::File, 7);
        assert_ne!(again.ino, a.ino, "numbers are never reused");
        inodes.forget(12345, 1);
        inodes.clear();
        assert!(inodes.is_empty());
    }

    #[test]
    fn invalid_tables_are_rejected() {
        for bad in [
            vec!["proc/meminfo", "proc/meminfo"],
            vec!["proc", "proc/meminfo"],
            vec!["proc/meminfo", "proc/meminfo/x"],
            vec!["/proc/meminfo"],
            vec!["proc//meminfo"],
            vec!["proc/"],
            vec![""],
            vec!["proc/../x"],
        ] {
            assert!(Tree::from_paths(bad.iter().copied()).is_err(), "{bad:?} accepted");
        }
    }
}
