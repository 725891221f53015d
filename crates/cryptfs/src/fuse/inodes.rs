//! Inode numbers ↔ backing paths.
//!
//! FUSE inode numbers are the backing files' inode numbers (the cipher directory's
//! own inode swapped with 1, FUSE's root), so they stay stable across lookups and
//! renames. Each node remembers its parent and name; a path is rebuilt by walking
//! up, so renaming a directory needs no fix-up of its descendants.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// FUSE's root inode number.
pub(crate) const ROOT: u64 = 1;

struct Node {
    parent: u64,
    name: OsString,
    lookups: u64,
    /// Unlinked or replaced by a rename: only an open handle can still reach it.
    unlinked: bool,
}

pub(crate) struct InodeTable {
    root: PathBuf,
    root_backing_ino: u64,
    nodes: Mutex<HashMap<u64, Node>>,
}

impl InodeTable {
    pub(crate) fn new(root: PathBuf, root_backing_ino: u64) -> Self {
        Self {
            root,
            root_backing_ino,
            nodes: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Node>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The FUSE inode number of a backing inode number.
    pub(crate) fn fuse_ino(&self, backing_ino: u64) -> u64 {
        if backing_ino == self.root_backing_ino {
            ROOT
        } else if backing_ino == ROOT {
            self.root_backing_ino
        } else {
            backing_ino
        }
    }

    /// The backing path of `ino`, if it is still linked.
    pub(crate) fn path(&self, ino: u64) -> Option<PathBuf> {
        let nodes = self.lock();
        let mut names = Vec::new();
        let mut current = ino;
        while current != ROOT {
            let node = nodes.get(&current)?;
            if node.unlinked || names.len() > 4096 {
                return None;
            }
            names.push(node.name.as_os_str());
            current = node.parent;
        }
        let mut path = self.root.clone();
        path.extend(names.iter().rev());
        Some(path)
    }

    /// The backing path of `name` in directory `parent`.
    pub(crate) fn child_path(&self, parent: u64, name: &OsStr) -> Option<PathBuf> {
        self.path(parent).map(|p| p.join(name))
    }

    /// Records a lookup of `ino` as `name` in `parent` (one more kernel reference).
    pub(crate) fn remember(&self, ino: u64, parent: u64, name: &OsStr) {
        if ino == ROOT {
            return;
        }
        let mut nodes = self.lock();
        let node = nodes.entry(ino).or_insert_with(|| Node {
            parent,
            name: name.to_os_string(),
            lookups: 0,
            unlinked: false,
        });
        node.parent = parent;
        node.name = name.to_os_string();
        node.unlinked = false;
        node.lookups += 1;
    }

    /// Drops `count` kernel references to `ino`.
    pub(crate) fn forget(&self, ino: u64, count: u64) {
        let mut nodes = self.lock();
        if let Some(node) = nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(count);
            if node.lookups == 0 {
                nodes.remove(&ino);
            }
        }
    }

    /// Marks `ino` as no longer reachable by name, if it is still known as `name` in `parent`.
    pub(crate) fn unlinked(&self, ino: u64, parent: u64, name: &OsStr) {
        if let Some(node) = self.lock().get_mut(&ino) {
            if node.parent == parent && node.name == name {
                node.unlinked = true;
            }
        }
    }

    /// Records a rename of `ino` to `name` in `parent`.
    pub(crate) fn renamed(&self, ino: u64, parent: u64, name: &OsStr) {
        if let Some(node) = self.lock().get_mut(&ino) {
            node.parent = parent;
            node.name = name.to_os_string();
        }
    }

    /// A name for log lines: the plaintext-side path, or a note that it is unlinked.
    pub(crate) fn display_name(&self, ino: u64) -> String {
        match self.path(ino) {
            Some(path) => Path::new("/")
                .join(path.strip_prefix(&self.root).unwrap_or(&path))
                .display()
                .to_string(),
            None => format!("<unlinked inode {ino}>"),
        }
    }
}
