//! Attributes: backing metadata → FUSE attributes (plaintext sizes), and setattr.

use std::fs::{self, Metadata, Permissions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo, TimeOrNow};

use super::backing::{closed_file_len, pin};
use super::open_files::OpenFile;
use super::{estale, io_errno, CryptFs};
use crate::sys::{self, SetTime};

fn time(secs: i64, nsecs: i64) -> SystemTime {
    let nanos = Duration::from_nanos(nsecs.clamp(0, 999_999_999) as u64);
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nanos
    }
}

pub(crate) fn kind(meta: &Metadata) -> FileType {
    FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile)
}

/// FUSE attributes of inode `ino` from its backing metadata; `plain_len` is the
/// size of a regular file (an open file's cached length, or
/// `backing::closed_file_len`: it cannot be derived from the cipher size alone).
pub(crate) fn to_attr(ino: u64, meta: &Metadata, plain_len: Option<u64>) -> FileAttr {
    let kind = kind(meta);
    let size = match kind {
        FileType::RegularFile => plain_len.unwrap_or(0),
        _ => meta.len(),
    };
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: meta.blocks(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind,
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: 4096,
        flags: 0,
    }
}

fn set_time(time: Option<TimeOrNow>) -> SetTime {
    match time {
        None => SetTime::Keep,
        Some(TimeOrNow::Now) => SetTime::Now,
        Some(TimeOrNow::SpecificTime(t)) => SetTime::At(t),
    }
}

/// The attribute changes of one setattr request.
pub(crate) struct AttrChange {
    pub(crate) mode: Option<u32>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) size: Option<u64>,
    pub(crate) atime: Option<TimeOrNow>,
    pub(crate) mtime: Option<TimeOrNow>,
}

impl AttrChange {
    /// Only atime/mtime: what the writeback cache sends around every fsync.
    fn only_times(&self) -> bool {
        self.mode.is_none()
            && self.uid.is_none()
            && self.gid.is_none()
            && self.size.is_none()
            && (self.atime.is_some() || self.mtime.is_some())
    }
}

impl CryptFs {
    pub(crate) fn getattr_ino(&self, ino: u64) -> Result<FileAttr, Errno> {
        if let Some(open) = self.files.get(ino) {
            return open_attr(ino, &open);
        }
        let (pinned, meta) = self.pin_node(ino)?;
        let plain_len = closed_file_len(&pinned, &meta)?;
        Ok(to_attr(ino, &meta, plain_len))
    }

    /// Opens node `ino`'s backing file by its path, checking that the path still leads
    /// to it (ESTALE otherwise: the kernel then looks the name up again).
    fn pin_node(&self, ino: u64) -> Result<(fs::File, Metadata), Errno> {
        let path = self.inodes.locate(ino).ok_or_else(estale)?;
        let pinned = pin(&path)?;
        let meta = self.inodes.check_same_file(ino, &pinned)?;
        Ok((pinned, meta))
    }

    /// Runs `f` on `ino`'s open file if it is open, holding a reference meanwhile.
    fn if_open<T>(&self, ino: u64, f: impl FnOnce(&OpenFile) -> T) -> Option<T> {
        let open = self.files.take_ref(ino)?;
        let result = f(&open);
        drop(open);
        self.files.release(ino);
        Some(result)
    }

    /// Writes times deferred by setattr to the backing file (flush, fsync).
    pub(crate) fn apply_deferred_times(&self, ino: u64) -> Result<(), Errno> {
        self.if_open(ino, |open| open.apply_times().map_err(|e| io_errno(&e)))
            .unwrap_or(Ok(()))
    }

    pub(crate) fn setattr_ino(&self, ino: u64, change: AttrChange) -> Result<FileAttr, Errno> {
        if change.only_times() {
            let (atime, mtime) = (change.atime.map(resolve), change.mtime.map(resolve));
            let deferred = self.if_open(ino, |open| match open.defer_times(atime, mtime) {
                Some(attr) => Ok(attr),
                None => {
                    open_attr(ino, open)?;
                    open.defer_times(atime, mtime)
                        .ok_or(Errno::from_i32(libc::EIO))
                }
            });
            if let Some(result) = deferred {
                return result;
            }
        }
        let (is_file, is_symlink) = match self.files.get(ino) {
            Some(_) => (true, false),
            None => {
                let kind = self.pin_node(ino)?.1.file_type();
                (kind.is_file(), kind.is_symlink())
            }
        };
        if is_symlink && change.mode.is_some() {
            // chmod would follow the link in the backing directory (as root).
            return Err(Errno::from_i32(libc::EOPNOTSUPP));
        }
        if is_file {
            // Through the descriptor: works for unlinked-but-open files too.
            self.with_file(ino, |open| {
                // Deferred times first, so that they cannot overwrite these later.
                open.apply_times().map_err(|e| io_errno(&e))?;
                let handle = open.backing();
                if let Some(size) = change.size {
                    open.file.set_len(size).map_err(|e| self.fail(ino, e))?;
                }
                if let Some(mode) = change.mode {
                    handle
                        .set_permissions(Permissions::from_mode(mode & 0o7777))
                        .map_err(|e| io_errno(&e))?;
                }
                if change.uid.is_some() || change.gid.is_some() {
                    std::os::unix::fs::fchown(handle, change.uid, change.gid)
                        .map_err(|e| io_errno(&e))?;
                }
                if change.atime.is_some() || change.mtime.is_some() {
                    let mut times = fs::FileTimes::new();
                    if let Some(t) = change.atime {
                        times = times.set_accessed(resolve(t));
                    }
                    if let Some(t) = change.mtime {
                        times = times.set_modified(resolve(t));
                    }
                    handle.set_times(times).map_err(|e| io_errno(&e))?;
                }
                Ok(())
            })?;
        } else {
            let path = self.inodes.locate(ino).ok_or_else(estale)?;
            if change.size.is_some() {
                return Err(Errno::from_i32(libc::EISDIR));
            }
            if let Some(mode) = change.mode {
                fs::set_permissions(&path, Permissions::from_mode(mode & 0o7777))
                    .map_err(|e| io_errno(&e))?;
            }
            if change.uid.is_some() || change.gid.is_some() {
                std::os::unix::fs::lchown(&path, change.uid, change.gid)
                    .map_err(|e| io_errno(&e))?;
            }
            if change.atime.is_some() || change.mtime.is_some() {
                sys::utimens_nofollow(&path, set_time(change.atime), set_time(change.mtime))
                    .map_err(|e| io_errno(&e))?;
            }
        }
        self.getattr_ino(ino)
    }
}

/// Attributes of an open file from its backing descriptor (remembered for setattr).
fn open_attr(ino: u64, open: &OpenFile) -> Result<FileAttr, Errno> {
    let meta = open.backing().metadata().map_err(|e| io_errno(&e))?;
    let attr = to_attr(ino, &meta, Some(open.file.len()));
    Ok(open.remember_attr(attr))
}

fn resolve(time: TimeOrNow) -> SystemTime {
    match time {
        TimeOrNow::Now => SystemTime::now(),
        TimeOrNow::SpecificTime(t) => t,
    }
}
