//! Names and directories: lookup, mkdir, rmdir, unlink, rename, symlinks, readdir,
//! fsyncdir, statfs.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, Permissions};
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fuser::{Errno, FileAttr, FileType};

use super::inodes::ROOT;
use super::{attr, io_errno, CryptFs};
use crate::config::CONFIG_FILE_NAME;
use crate::crash_recovery::DIRTY_MARKER_NAME;
use crate::sys::{self, FsStats};

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

impl CryptFs {
    fn is_reserved(&self, parent: u64, name: &OsStr) -> bool {
        parent == ROOT && (name == CONFIG_FILE_NAME || name == DIRTY_MARKER_NAME)
    }

    /// The backing path for a new entry; the configuration file's name is refused.
    pub(crate) fn new_child_path(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        if self.is_reserved(parent, name) {
            return Err(Errno::from_i32(libc::EPERM));
        }
        self.inodes.child_path(parent, name).ok_or_else(enoent)
    }

    /// Stats `path` and records it as `name` in `parent` (one kernel reference).
    fn entry(&self, parent: u64, name: &OsStr, path: &Path) -> Result<FileAttr, Errno> {
        let meta = fs::symlink_metadata(path).map_err(|e| io_errno(&e))?;
        let ino = self.inodes.fuse_ino(meta.ino());
        let plain_len = match self.files.get(ino) {
            Some(open) => Some(open.file.len()),
            None => super::file_ops::closed_file_len(path, &meta)?,
        };
        self.inodes.remember(ino, parent, name);
        Ok(attr::to_attr(ino, &meta, plain_len))
    }

    /// An open file's cached attributes hold its link count: re-read them next time.
    fn link_count_changed(&self, ino: u64) {
        if let Some(open) = self.files.get(ino) {
            open.forget_attr();
        }
    }

    pub(crate) fn lookup_name(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        if self.is_reserved(parent, name) {
            return Err(enoent());
        }
        let path = self.inodes.child_path(parent, name).ok_or_else(enoent)?;
        self.entry(parent, name, &path)
    }

    pub(crate) fn mkdir_name(
        &self,
        owner: (u32, u32),
        parent: u64,
        name: &OsStr,
        mode: u32,
    ) -> Result<FileAttr, Errno> {
        let path = self.new_child_path(parent, name)?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| io_errno(&e))?;
        let owned = fs::set_permissions(&path, Permissions::from_mode(mode & 0o7777))
            .and_then(|()| std::os::unix::fs::lchown(&path, Some(owner.0), Some(owner.1)));
        if let Err(e) = owned {
            let _ = fs::remove_dir(&path);
            return Err(io_errno(&e));
        }
        self.entry(parent, name, &path)
    }

    pub(crate) fn symlink_name(
        &self,
        owner: (u32, u32),
        parent: u64,
        name: &OsStr,
        target: &Path,
    ) -> Result<FileAttr, Errno> {
        let path = self.new_child_path(parent, name)?;
        std::os::unix::fs::symlink(target, &path).map_err(|e| io_errno(&e))?;
        if let Err(e) = std::os::unix::fs::lchown(&path, Some(owner.0), Some(owner.1)) {
            let _ = fs::remove_file(&path);
            return Err(io_errno(&e));
        }
        self.entry(parent, name, &path)
    }

    pub(crate) fn readlink_ino(&self, ino: u64) -> Result<Vec<u8>, Errno> {
        let path = self.inodes.path(ino).ok_or_else(enoent)?;
        let target = fs::read_link(&path).map_err(|e| io_errno(&e))?;
        Ok(std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()).to_vec())
    }

    /// unlink (`dir == false`) or rmdir (`dir == true`).
    pub(crate) fn remove_name(&self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let path = self.new_child_path(parent, name)?;
        let meta = fs::symlink_metadata(&path).map_err(|e| io_errno(&e))?;
        let removed = if dir {
            fs::remove_dir(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|e| io_errno(&e))?;
        let ino = self.inodes.fuse_ino(meta.ino());
        self.link_count_changed(ino);
        self.inodes.unlinked(ino, parent, name);
        Ok(())
    }

    pub(crate) fn rename_name(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<(), Errno> {
        if flags != 0 {
            // RENAME_NOREPLACE/EXCHANGE: callers (mv, PostgreSQL) fall back to plain rename.
            return Err(Errno::from_i32(libc::EINVAL));
        }
        let from = self.new_child_path(parent, name)?;
        let to = self.new_child_path(new_parent, new_name)?;
        let source = fs::symlink_metadata(&from).map_err(|e| io_errno(&e))?;
        let replaced = fs::symlink_metadata(&to).ok();
        fs::rename(&from, &to).map_err(|e| io_errno(&e))?;
        let source_ino = self.inodes.fuse_ino(source.ino());
        if let Some(replaced) = replaced {
            let replaced_ino = self.inodes.fuse_ino(replaced.ino());
            if replaced_ino != source_ino {
                self.link_count_changed(replaced_ino);
                self.inodes.unlinked(replaced_ino, new_parent, new_name);
            }
        }
        self.inodes.renamed(source_ino, new_parent, new_name);
        Ok(())
    }

    pub(crate) fn opendir_ino(&self, ino: u64) -> Result<u64, Errno> {
        let path = self.inodes.path(ino).ok_or_else(enoent)?;
        let parent_path = if ino == ROOT {
            path.clone()
        } else {
            path.parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| path.clone())
        };
        let parent_meta = fs::symlink_metadata(&parent_path).map_err(|e| io_errno(&e))?;
        let mut entries = vec![
            DirEntryInfo {
                ino,
                kind: FileType::Directory,
                name: ".".into(),
            },
            DirEntryInfo {
                ino: self.inodes.fuse_ino(parent_meta.ino()),
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
                ino: self.inodes.fuse_ino(entry.ino()),
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
        let path = self.inodes.path(ino).ok_or_else(enoent)?;
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
