//! Names and directories: lookup, mkdir, rmdir, unlink, rename, symlinks, readdir,
//! fsyncdir, statfs.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, Permissions};
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fuser::{Errno, FileAttr, FileType};

use super::backing::{closed_file_len, pin, Located};
use super::inodes::ROOT;
use super::{attr, estale, io_errno, CryptFs};
use crate::config::CONFIG_FILE_NAME;
use crate::crash_recovery::DIRTY_MARKER_NAME;
use crate::sys::{self, FsStats};

/// What a LOOKUP, MKDIR, SYMLINK or CREATE reply tells the kernel: the node's
/// attributes (its id among them) and its generation.
pub(crate) struct Entry {
    pub(crate) attr: FileAttr,
    pub(crate) generation: u64,
}

pub(crate) struct DirEntryInfo {
    pub(crate) ino: u64,
    pub(crate) kind: FileType,
    pub(crate) name: OsString,
}

/// Directory listings taken at opendir, served by offset until releasedir.
#[derive(Default)]
pub(crate) struct DirHandles {
    next: AtomicU64,
    listings: Mutex<HashMap<u64, Arc<Vec<DirEntryInfo>>>>,
}

impl DirHandles {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Vec<DirEntryInfo>>>> {
        self.listings.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, fh: u64) -> Option<Arc<Vec<DirEntryInfo>>> {
        self.lock().get(&fh).cloned()
    }

    pub(crate) fn remove(&self, fh: u64) {
        self.lock().remove(&fh);
    }
}

fn enoent() -> Errno {
    Errno::from_i32(libc::ENOENT)
}

/// Gives a new entry the mode the kernel computed (the daemon's umask must not
/// change it) and the requesting user as owner; removes it with `remove` if that fails.
fn give(
    path: &Path,
    mode: u32,
    owner: (u32, u32),
    remove: fn(&Path) -> std::io::Result<()>,
) -> Result<(), Errno> {
    let owned = fs::set_permissions(path, Permissions::from_mode(mode & 0o7777))
        .and_then(|()| std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1)));
    owned.map_err(|e| {
        let _ = remove(path);
        io_errno(&e)
    })
}

fn same_inode(a: &fs::File, b: &fs::File) -> Result<bool, Errno> {
    let ino = |f: &fs::File| f.metadata().map(|m| (m.dev(), m.ino()));
    Ok(ino(a).map_err(|e| io_errno(&e))? == ino(b).map_err(|e| io_errno(&e))?)
}

impl CryptFs {
    fn is_reserved(&self, parent: u64, name: &OsStr) -> bool {
        parent == ROOT && (name == CONFIG_FILE_NAME || name == DIRTY_MARKER_NAME)
    }

    /// Where a new entry goes; the configuration file's name is refused.
    pub(crate) fn new_child_path(&self, parent: u64, name: &OsStr) -> Result<Located, Errno> {
        if self.is_reserved(parent, name) {
            return Err(Errno::from_i32(libc::EPERM));
        }
        self.inodes.locate_child(parent, name).ok_or_else(enoent)
    }

    /// Records the file at `path` as `name` in `parent` (one kernel lookup) and returns
    /// its entry.
    fn entry(&self, parent: u64, name: &OsStr, path: &Path) -> Result<Entry, Errno> {
        let pinned = pin(path)?;
        let (node, meta) = self.inodes.lookup(&pinned, parent, name)?;
        let plain_len = match self.files.get(node.id) {
            Some(open) => Ok(Some(open.file.len())),
            None => closed_file_len(&pinned, &meta),
        };
        match plain_len {
            Ok(plain_len) => Ok(Entry {
                attr: attr::to_attr(node.id, &meta, plain_len),
                generation: node.generation,
            }),
            Err(e) => {
                // The kernel will not learn of this lookup: undo it.
                self.inodes.forget(node.id, 1);
                Err(e)
            }
        }
    }

    /// An open file's cached attributes hold its link count: re-read them next time.
    fn link_count_changed(&self, ino: u64) {
        if let Some(open) = self.files.get(ino) {
            open.forget_attr();
        }
    }

    pub(crate) fn lookup_name(&self, parent: u64, name: &OsStr) -> Result<Entry, Errno> {
        if self.is_reserved(parent, name) {
            return Err(enoent());
        }
        let path = self.inodes.locate_child(parent, name).ok_or_else(enoent)?;
        self.entry(parent, name, &path)
    }

    pub(crate) fn mkdir_name(
        &self,
        owner: (u32, u32),
        parent: u64,
        name: &OsStr,
        mode: u32,
    ) -> Result<Entry, Errno> {
        let path = self.new_child_path(parent, name)?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| io_errno(&e))?;
        give(&path, mode, owner, |p| fs::remove_dir(p))?;
        self.entry(parent, name, &path)
    }

    pub(crate) fn symlink_name(
        &self,
        owner: (u32, u32),
        parent: u64,
        name: &OsStr,
        target: &Path,
    ) -> Result<Entry, Errno> {
        let path = self.new_child_path(parent, name)?;
        std::os::unix::fs::symlink(target, &path).map_err(|e| io_errno(&e))?;
        if let Err(e) = std::os::unix::fs::lchown(&path, Some(owner.0), Some(owner.1)) {
            let _ = fs::remove_file(&path);
            return Err(io_errno(&e));
        }
        self.entry(parent, name, &path)
    }

    pub(crate) fn readlink_ino(&self, ino: u64) -> Result<Vec<u8>, Errno> {
        let path = self.inodes.locate(ino).ok_or_else(enoent)?;
        let target = fs::read_link(&path).map_err(|e| io_errno(&e))?;
        Ok(std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()).to_vec())
    }

    /// unlink (`dir == false`) or rmdir (`dir == true`). The file stays pinned until its
    /// node has been unlinked, so its inode number cannot be reused before that.
    pub(crate) fn remove_name(&self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let path = self.new_child_path(parent, name)?;
        let pinned = pin(&path)?;
        let removed = if dir {
            fs::remove_dir(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|e| io_errno(&e))?;
        self.removed(&pinned, parent, name)
    }

    /// `name` in `parent`, a name of the pinned file, is gone: its node forgets it, and
    /// is unlinked if the file has no name left.
    fn removed(&self, pinned: &fs::File, parent: u64, name: &OsStr) -> Result<(), Errno> {
        self.files.name_removed(pinned);
        if let Some(id) = self.inodes.removed(pinned, parent, name)? {
            self.link_count_changed(id);
        }
        Ok(())
    }

    /// rename and renameat2 (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`, as the backing
    /// filesystem supports them); both files stay pinned until their nodes are updated.
    pub(crate) fn rename_name(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<(), Errno> {
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 {
            // RENAME_WHITEOUT is for overlay filesystems.
            return Err(Errno::from_i32(libc::EINVAL));
        }
        let from = self.new_child_path(parent, name)?;
        let to = self.new_child_path(new_parent, new_name)?;
        let moved = pin(&from)?;
        let replaced = match pin(&to) {
            Ok(file) => Some(file),
            Err(e) if e == enoent() => None,
            Err(e) => return Err(e),
        };
        sys::rename(&from, &to, flags).map_err(|e| io_errno(&e))?;
        let replaced = match replaced {
            // Two names of one file: rename(2) leaves both in place.
            Some(file) if same_inode(&file, &moved)? => return Ok(()),
            other => other,
        };
        self.inodes
            .renamed(&moved, (parent, name), (new_parent, new_name))?;
        match replaced {
            Some(other) if flags & libc::RENAME_EXCHANGE != 0 => {
                self.inodes
                    .renamed(&other, (new_parent, new_name), (parent, name))
            }
            Some(replaced) => self.removed(&replaced, new_parent, new_name),
            None => Ok(()),
        }
    }

    /// mknod: a FIFO, socket or device node (as root: the kernel checked the
    /// caller's right to make it), or an empty regular file, owned by `owner`.
    pub(crate) fn mknod_name(
        &self,
        owner: (u32, u32),
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
    ) -> Result<Entry, Errno> {
        let path = self.new_child_path(parent, name)?;
        if mode & libc::S_IFMT == libc::S_IFREG {
            // An empty regular file is an empty cipher file.
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| io_errno(&e))?;
        } else {
            sys::mknod(&path, mode & (libc::S_IFMT | 0o600), rdev).map_err(|e| io_errno(&e))?;
        }
        give(&path, mode, owner, |p| fs::remove_file(p))?;
        self.entry(parent, name, &path)
    }

    /// link: a new name for node `ino`'s file. The lookup that follows finds the
    /// node by its backing inode number, so both names lead to one node.
    pub(crate) fn link_name(
        &self,
        ino: u64,
        new_parent: u64,
        new_name: &OsStr,
    ) -> Result<Entry, Errno> {
        let to = self.new_child_path(new_parent, new_name)?;
        let from = self.inodes.locate(ino).ok_or_else(estale)?;
        let pinned = pin(&from)?;
        // The name may lead to another file by now: link the node's own file only.
        self.inodes.check_same_file(ino, &pinned)?;
        fs::hard_link(&from, &to).map_err(|e| io_errno(&e))?;
        self.link_count_changed(ino);
        self.entry(new_parent, new_name, &to)
    }

    pub(crate) fn opendir_ino(&self, ino: u64) -> Result<u64, Errno> {
        let path = self.inodes.locate(ino).ok_or_else(enoent)?;
        let mut entries = vec![
            DirEntryInfo {
                ino,
                kind: FileType::Directory,
                name: ".".into(),
            },
            DirEntryInfo {
                ino: self.inodes.parent_of(ino),
                kind: FileType::Directory,
                name: "..".into(),
            },
        ];
        for entry in fs::read_dir(&path).map_err(|e| io_errno(&e))? {
            let entry = entry.map_err(|e| io_errno(&e))?;
            let name = entry.file_name();
            if self.is_reserved(ino, &name) {
                continue;
            }
            let kind = entry
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            entries.push(DirEntryInfo {
                ino: self.inodes.listed_id(entry.ino()),
                kind,
                name,
            });
        }
        let fh = self.dirs.next.fetch_add(1, Ordering::Relaxed);
        self.dirs.lock().insert(fh, Arc::new(entries));
        Ok(fh)
    }

    /// fsyncdir really syncs the backing directory: renames and creations must be
    /// durable when PostgreSQL's fsync of the directory returns.
    pub(crate) fn fsyncdir_ino(&self, ino: u64) -> Result<(), Errno> {
        let path = self.inodes.locate(ino).ok_or_else(enoent)?;
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
            .open(&path)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io_errno(&e))
    }

    pub(crate) fn statfs_root(&self) -> Result<FsStats, Errno> {
        sys::statvfs(&self.root).map_err(|e| io_errno(&e))
    }
}
