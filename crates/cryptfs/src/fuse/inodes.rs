//! Node ids ↔ backing files: what the daemon promises the kernel about identity.
//!
//! The kernel names a file by the node id (and generation) we give it in a LOOKUP or
//! CREATE reply, and keeps its size, attributes and page cache under that id until it
//! sends FORGET for every lookup it counted. So a node id names one backing file for as
//! long as the kernel may refer to it, and never another:
//!
//! - A node is created when the kernel first learns of a backing file, and lives until
//!   the kernel has forgotten it (lookup count back to zero) — also after the file was
//!   unlinked or replaced by a rename, while the kernel may still hold it open.
//! - A node's id is its backing inode number when no live node has that id, else a
//!   spare id from a range the disk's inode numbers do not reach. The backing file
//!   system reuses the inode number of a deleted file at once, so a new file may get
//!   the number of an unlinked file that the kernel still holds: it gets a spare id.
//!   Each node also gets a fresh generation, so even a reused id is a new inode to the
//!   kernel.
//! - Only linked nodes are found by backing inode number (`by_backing`). Every call that
//!   maps a backing file to a node, or ends a node's link, decides from an open
//!   descriptor of that file (which keeps its inode number from being reused) and from
//!   `fstat` taken under the table lock, so no removal can slip between the check and
//!   the update.
//!
//! - A file with several names (hard links) has one node: nodes are found by backing
//!   inode number, so every name the kernel looks up leads to the same node id. The
//!   node remembers each name it was looked up or created by, and loses one when it
//!   is unlinked or renamed away; its link ends when the file has no name left.
//!
//! Each node remembers its parent and name, and a directory node holds a descriptor of
//! its directory: a file is reached relative to its parent's descriptor
//! ([`Located`]), never by a path rebuilt from the root, so path lengths are the
//! kernel's business and renaming a directory needs no fix-up of its descendants.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use fuser::Errno;

use super::backing::Located;

/// FUSE's root node id.
pub(crate) const ROOT: u64 = 1;
/// Ids given when a backing inode number is taken by a node the kernel still holds.
/// Disk file systems hand out inode numbers far below this.
const FIRST_SPARE_ID: u64 = 1 << 62;

/// What a LOOKUP-like reply tells the kernel about a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NodeId {
    pub(crate) id: u64,
    pub(crate) generation: u64,
}

struct Node {
    /// The backing file's inode number.
    backing: u64,
    generation: u64,
    /// (parent node, name) of every name the node is known by; the first one is used
    /// to reach it. A directory has exactly one.
    names: Vec<(u64, OsString)>,
    /// Lookups the kernel counted and has not forgotten yet.
    lookups: u64,
    /// Still reachable by name (not unlinked, not replaced by a rename).
    linked: bool,
    /// For a directory: a descriptor of it, which its children are reached through.
    dir: Option<Arc<File>>,
}

struct Table {
    nodes: HashMap<u64, Node>,
    /// Backing inode number → node id, for linked nodes only.
    by_backing: HashMap<u64, u64>,
    next_spare: u64,
    next_generation: u64,
}

pub(crate) struct InodeTable {
    root: PathBuf,
    table: Mutex<Table>,
}

fn stat(pinned: &File) -> Result<Metadata, Errno> {
    pinned.metadata().map_err(|e| super::io_errno(&e))
}

impl Node {
    /// Records that the node is known as `name` in `parent` (once per name).
    fn add_name(&mut self, parent: u64, name: &OsStr) {
        if !self.names.iter().any(|(p, n)| *p == parent && n == name) {
            self.names.push((parent, name.to_os_string()));
        }
    }

    /// A directory named `pg_wal`: its files are PostgreSQL's WAL.
    fn is_pg_wal(&self) -> bool {
        self.dir.is_some() && self.names.first().is_some_and(|(_, n)| n == "pg_wal")
    }
}

impl Table {
    /// A free node id for a new node of backing inode `backing`.
    fn free_id(&mut self, backing: u64) -> u64 {
        if backing != ROOT && backing < FIRST_SPARE_ID && !self.nodes.contains_key(&backing) {
            return backing;
        }
        while self.nodes.contains_key(&self.next_spare) {
            self.next_spare += 1;
        }
        self.next_spare += 1;
        self.next_spare - 1
    }

    /// Ends the link of the node of backing inode `backing`, if it has one.
    fn unlink_backing(&mut self, backing: u64) -> Option<u64> {
        let id = self.by_backing.remove(&backing)?;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.linked = false;
        }
        Some(id)
    }
}

impl InodeTable {
    /// The table of a cipher directory `root`, open as `root_dir`.
    pub(crate) fn new(root: PathBuf, root_dir: File) -> std::io::Result<Self> {
        let root_backing_ino = root_dir.metadata()?.ino();
        let root_node = Node {
            backing: root_backing_ino,
            generation: 0,
            names: vec![(ROOT, OsString::new())],
            lookups: 1,
            linked: true,
            dir: Some(Arc::new(root_dir)),
        };
        Ok(Self {
            root,
            table: Mutex::new(Table {
                nodes: HashMap::from([(ROOT, root_node)]),
                by_backing: HashMap::from([(root_backing_ino, ROOT)]),
                next_spare: FIRST_SPARE_ID,
                next_generation: 1,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one kernel lookup of the file open as `pinned`, reached as `name` in
    /// `parent`: its node (created if the kernel does not know the file yet) and its
    /// metadata. ENOENT if the file was removed before the lookup could be recorded.
    pub(crate) fn lookup(
        &self,
        pinned: &File,
        parent: u64,
        name: &OsStr,
    ) -> Result<(NodeId, Metadata), Errno> {
        let mut table = self.lock();
        let meta = stat(pinned)?;
        if meta.nlink() == 0 {
            return Err(Errno::from_i32(libc::ENOENT));
        }
        let backing = meta.ino();
        let id = match table.by_backing.get(&backing) {
            Some(&id) => id,
            None => {
                let id = table.free_id(backing);
                let generation = table.next_generation;
                table.next_generation += 1;
                let dir = if meta.is_dir() {
                    Some(Arc::new(
                        pinned.try_clone().map_err(|e| super::io_errno(&e))?,
                    ))
                } else {
                    None
                };
                table.nodes.insert(
                    id,
                    Node {
                        backing,
                        generation,
                        names: Vec::new(),
                        lookups: 0,
                        linked: true,
                        dir,
                    },
                );
                table.by_backing.insert(backing, id);
                id
            }
        };
        let node = table.nodes.get_mut(&id).expect("indexed nodes exist");
        if id != ROOT {
            node.add_name(parent, name);
            node.lookups += 1;
        }
        Ok((
            NodeId {
                id,
                generation: node.generation,
            },
            meta,
        ))
    }

    /// Drops `count` kernel lookups of node `id`; the node ends with the last.
    pub(crate) fn forget(&self, id: u64, count: u64) {
        if id == ROOT {
            return;
        }
        let mut table = self.lock();
        let Some(node) = table.nodes.get_mut(&id) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(count);
        if node.lookups == 0 {
            let backing = node.backing;
            table.nodes.remove(&id);
            if table.by_backing.get(&backing) == Some(&id) {
                table.by_backing.remove(&backing);
            }
        }
    }

    /// Checks that `opened` (just opened by node `id`'s path) is node `id`'s file: ESTALE
    /// if the node was unlinked or its name now leads to another file (the kernel then
    /// looks the name up again).
    pub(crate) fn check_same_file(&self, id: u64, opened: &File) -> Result<Metadata, Errno> {
        let table = self.lock();
        let meta = stat(opened)?;
        match table.nodes.get(&id) {
            Some(node) if node.linked && node.backing == meta.ino() && meta.nlink() > 0 => Ok(meta),
            _ => Err(super::estale()),
        }
    }

    /// After an unlink, rmdir or rename removed `name` in `parent`, which led to the
    /// file open as `pinned`: the node forgets that name, and if the file has no name
    /// left, its node (if any) is unlinked. Returns the node's id.
    pub(crate) fn removed(
        &self,
        pinned: &File,
        parent: u64,
        name: &OsStr,
    ) -> Result<Option<u64>, Errno> {
        let mut table = self.lock();
        let meta = stat(pinned)?;
        let Some(&id) = table.by_backing.get(&meta.ino()) else {
            return Ok(None);
        };
        if meta.nlink() == 0 {
            return Ok(table.unlink_backing(meta.ino()));
        }
        if let Some(node) = table.nodes.get_mut(&id) {
            node.names.retain(|(p, n)| !(*p == parent && n == name));
        }
        Ok(Some(id))
    }

    /// After a rename of the file open as `moved` from `from` to `to` (parent, name):
    /// its node (if the kernel knows it) is now reached there.
    pub(crate) fn renamed(
        &self,
        moved: &File,
        from: (u64, &OsStr),
        to: (u64, &OsStr),
    ) -> Result<(), Errno> {
        let mut table = self.lock();
        let meta = stat(moved)?;
        let Some(&id) = table.by_backing.get(&meta.ino()) else {
            return Ok(());
        };
        if let Some(node) = table.nodes.get_mut(&id) {
            node.names.retain(|(p, n)| !(*p == from.0 && n == from.1));
            node.names.insert(0, (to.0, to.1.to_os_string()));
        }
        Ok(())
    }

    /// The node id to report in a directory listing for backing inode `backing`: the
    /// node's id if the kernel knows the file, else the inode number (what a lookup
    /// will most likely give it).
    pub(crate) fn listed_id(&self, backing: u64) -> u64 {
        self.lock()
            .by_backing
            .get(&backing)
            .copied()
            .unwrap_or(backing)
    }

    /// Where node `id`'s file is, if it is still linked: its parent directory's
    /// descriptor and its name (for a directory: its own descriptor).
    pub(crate) fn locate(&self, id: u64) -> Option<Located> {
        let table = self.lock();
        let node = table.nodes.get(&id).filter(|node| node.linked)?;
        if let Some(dir) = &node.dir {
            return Some(Located::new(dir.clone(), OsStr::new("."), false));
        }
        let (parent, name) = node.names.first()?;
        let parent = table.nodes.get(parent).filter(|p| p.linked)?;
        Some(Located::new(parent.dir.clone()?, name, parent.is_pg_wal()))
    }

    /// Where `name` in directory `parent` is (if `parent` is a linked directory).
    pub(crate) fn locate_child(&self, parent: u64, name: &OsStr) -> Option<Located> {
        let table = self.lock();
        let node = table.nodes.get(&parent).filter(|node| node.linked)?;
        Some(Located::new(node.dir.clone()?, name, node.is_pg_wal()))
    }

    /// The node id of node `id`'s parent directory (the root's is the root).
    pub(crate) fn parent_of(&self, id: u64) -> u64 {
        let table = self.lock();
        let node = table.nodes.get(&id);
        node.and_then(|node| node.names.first())
            .map_or(ROOT, |(parent, _)| *parent)
    }

    /// The backing path of node `id` from the root, if it is still linked: for log
    /// lines only (it may be longer than the kernel accepts).
    fn path(&self, id: u64) -> Option<PathBuf> {
        let table = self.lock();
        let mut names = Vec::new();
        let mut current = id;
        while current != ROOT {
            let node = table.nodes.get(&current)?;
            let (parent, name) = node.names.first()?;
            if !node.linked || names.len() > 4096 {
                return None;
            }
            names.push(name.as_os_str());
            current = *parent;
        }
        let mut path = self.root.clone();
        path.extend(names.iter().rev());
        Some(path)
    }

    /// A name for log lines: the plaintext-side path, or a note that it is unlinked.
    pub(crate) fn display_name(&self, id: u64) -> String {
        match self.path(id) {
            Some(path) => Path::new("/")
                .join(path.strip_prefix(&self.root).unwrap_or(&path))
                .display()
                .to_string(),
            None => format!("<unlinked node {id}>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn table(dir: &Path) -> InodeTable {
        InodeTable::new(dir.to_path_buf(), File::open(dir).unwrap()).unwrap()
    }

    fn open(path: &Path) -> File {
        File::open(path).unwrap()
    }

    #[test]
    fn a_reused_inode_number_gets_a_new_node_while_the_old_one_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let inodes = table(dir.path());
        let a = dir.path().join("a");
        fs::write(&a, b"a").unwrap();
        let pinned = open(&a);
        let (old, meta) = inodes.lookup(&pinned, ROOT, OsStr::new("a")).unwrap();
        assert_eq!(old.id, meta.ino(), "a free inode number is the node id");
        fs::remove_file(&a).unwrap();
        assert_eq!(
            inodes.removed(&pinned, ROOT, OsStr::new("a")).unwrap(),
            Some(old.id)
        );
        drop(pinned);
        // The kernel still holds `old`: whatever inode number the new file gets, it must
        // not be given `old`'s node.
        let b = dir.path().join("b");
        fs::write(&b, b"b").unwrap();
        let (new, _) = inodes.lookup(&open(&b), ROOT, OsStr::new("b")).unwrap();
        assert_ne!(new.id, old.id);
        assert_ne!(new.generation, old.generation);
        assert_eq!(inodes.path(old.id), None, "an unlinked node has no path");
        assert_eq!(inodes.path(new.id), Some(b));
    }

    #[test]
    fn an_inode_number_whose_node_is_held_elsewhere_gets_a_spare_id() {
        let dir = tempfile::tempdir().unwrap();
        let inodes = table(dir.path());
        let a = dir.path().join("a");
        fs::write(&a, b"a").unwrap();
        let (first, meta) = inodes.lookup(&open(&a), ROOT, OsStr::new("a")).unwrap();
        // Simulate the kernel holding an unlinked node whose id equals a live file's
        // inode number: end the link by hand, then look the same file up again.
        inodes.lock().unlink_backing(meta.ino());
        let (second, _) = inodes.lookup(&open(&a), ROOT, OsStr::new("a")).unwrap();
        assert!(second.id >= FIRST_SPARE_ID, "got {}", second.id);
        assert_ne!(second.generation, first.generation);
        // Forgetting the old node frees its id without touching the new one.
        inodes.forget(first.id, 1);
        assert_eq!(inodes.path(second.id), Some(a.clone()));
        assert_eq!(inodes.listed_id(meta.ino()), second.id);
    }

    #[test]
    fn a_node_lives_until_its_last_lookup_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let inodes = table(dir.path());
        let a = dir.path().join("a");
        fs::write(&a, b"a").unwrap();
        let (node, _) = inodes.lookup(&open(&a), ROOT, OsStr::new("a")).unwrap();
        let (again, _) = inodes.lookup(&open(&a), ROOT, OsStr::new("a")).unwrap();
        assert_eq!(node, again, "one file, one node");
        inodes.forget(node.id, 1);
        assert_eq!(inodes.path(node.id), Some(a.clone()), "one lookup left");
        inodes.forget(node.id, 1);
        assert_eq!(inodes.path(node.id), None);
        let (fresh, _) = inodes.lookup(&open(&a), ROOT, OsStr::new("a")).unwrap();
        assert_ne!(fresh.generation, node.generation);
    }

    #[test]
    fn a_file_removed_before_its_lookup_is_recorded_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let inodes = table(dir.path());
        let a = dir.path().join("a");
        fs::write(&a, b"a").unwrap();
        let pinned = open(&a);
        fs::remove_file(&a).unwrap();
        let err = inodes.lookup(&pinned, ROOT, OsStr::new("a")).unwrap_err();
        assert_eq!(err, Errno::from_i32(libc::ENOENT));
    }

    #[test]
    fn opening_a_node_whose_name_now_leads_elsewhere_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let inodes = table(dir.path());
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, b"a").unwrap();
        fs::write(&b, b"b").unwrap();
        let (node_a, _) = inodes.lookup(&open(&a), ROOT, OsStr::new("a")).unwrap();
        assert!(inodes.check_same_file(node_a.id, &open(&a)).is_ok());
        // `b` renamed over `a` behind the node's back: `a` now opens b's file.
        let pinned_a = open(&a);
        fs::rename(&b, &a).unwrap();
        let err = inodes.check_same_file(node_a.id, &open(&a)).unwrap_err();
        assert_eq!(err, Errno::from_i32(libc::ESTALE));
        // Recorded as the rename does: the old file lost its node's link.
        assert_eq!(
            inodes.removed(&pinned_a, ROOT, OsStr::new("a")).unwrap(),
            Some(node_a.id)
        );
        assert_eq!(inodes.path(node_a.id), None);
    }
}
