//! Regular files: create, open, read, write, fsync, fallocate, release.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::sync::Arc;

use fuser::{Errno, FopenFlags};

use super::backing::open_backing;
use super::dir_ops::Entry;
use super::open_files::{OpenFile, OpenedBacking};
use super::{attr, estale, io_errno, CryptFs};
use crate::format::{group_of, group_offset, BLOCK_SIZE, MAX_PLAIN_SIZE};
use crate::sys;

/// The unit in which reads are authenticated: PostgreSQL's page (BLCKSZ and
/// XLOG_BLCKSZ), two cipher blocks.
pub(crate) const READ_UNIT: u64 = 2 * BLOCK_SIZE;

/// The range a read of `size` bytes at `offset` really reads: widened to whole
/// [`READ_UNIT`]s. When a read fails, the kernel retries it page by page and returns
/// what the pages it could read hold: an 8 KiB read whose second 4 KiB block is bad
/// would reach PostgreSQL as a 4 KiB short read, which it zero-fills during recovery.
/// Failing the whole unit turns every such retry into EIO.
pub(crate) fn unit_range(offset: u64, size: u64) -> (u64, usize) {
    let start = offset - offset % READ_UNIT;
    let end = offset.saturating_add(size).next_multiple_of(READ_UNIT);
    (start, (end - start) as usize)
}

impl CryptFs {
    /// Runs `f` on `ino`'s open file, holding a reference for exactly the duration.
    pub(crate) fn with_file<T>(
        &self,
        ino: u64,
        f: impl FnOnce(&OpenFile) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let open = self.acquire(ino)?;
        let result = f(&open);
        drop(open);
        self.files.release(ino);
        result
    }

    fn acquire(&self, ino: u64) -> Result<Arc<OpenFile>, Errno> {
        self.files.acquire(ino, &self.volume, || {
            let path = self.inodes.locate(ino).ok_or_else(estale)?;
            let backing = open_backing(&path)?;
            // The name may lead to another file by now (unlinked, renamed over).
            let meta = self.inodes.check_same_file(ino, &backing)?;
            Ok(OpenedBacking {
                file: backing,
                wal: path.is_wal(),
                ino: meta.ino(),
            })
        })
    }

    fn open_flags(&self, ino: u64) -> FopenFlags {
        let wal = || self.inodes.locate(ino).is_some_and(|path| path.is_wal());
        if self.options.direct_io_wal && wal() {
            FopenFlags::FOPEN_DIRECT_IO
        } else {
            FopenFlags::FOPEN_KEEP_CACHE
        }
    }

    pub(crate) fn open_ino(&self, ino: u64) -> Result<FopenFlags, Errno> {
        self.acquire(ino)?;
        Ok(self.open_flags(ino))
    }

    pub(crate) fn release_ino(&self, ino: u64) {
        self.files.release(ino);
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create_file(
        &self,
        uid: u32,
        gid: u32,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(Entry, FopenFlags), Errno> {
        let path = self.new_child_path(parent, name)?;
        let created = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path);
        let (backing, is_new) = match created {
            Ok(file) => (file, true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && flags & libc::O_EXCL == 0 => {
                (open_backing(&path)?, false)
            }
            Err(e) => return Err(io_errno(&e)),
        };
        if is_new {
            let owned = backing
                .set_permissions(Permissions::from_mode(mode & !umask & 0o7777))
                .and_then(|()| std::os::unix::fs::fchown(&backing, Some(uid), Some(gid)));
            if let Err(e) = owned {
                let _ = fs::remove_file(&path);
                return Err(io_errno(&e));
            }
        }
        let (node, meta) = self.inodes.lookup(&backing, parent, name)?;
        let opened = self
            .files
            .acquire(node.id, &self.volume, || {
                Ok(OpenedBacking {
                    file: backing,
                    wal: path.is_wal(),
                    ino: meta.ino(),
                })
            })
            .and_then(|open| {
                if is_new || flags & libc::O_TRUNC == 0 {
                    return Ok(open);
                }
                match open.file.set_len(0) {
                    Ok(()) => Ok(open),
                    Err(e) => {
                        self.files.release(node.id);
                        Err(self.fail(node.id, e))
                    }
                }
            });
        let open = match opened {
            Ok(open) => open,
            Err(e) => {
                // The kernel will not learn of this node: undo the lookup.
                self.inodes.forget(node.id, 1);
                return Err(e);
            }
        };
        let entry = Entry {
            attr: attr::to_attr(node.id, &meta, Some(open.file.len())),
            generation: node.generation,
        };
        Ok((entry, self.open_flags(node.id)))
    }

    /// Reads `size` bytes at `offset`, authenticating every [`READ_UNIT`] the range
    /// touches: see [`unit_range`].
    pub(crate) fn read_ino(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        self.with_file(ino, |open| {
            let (start, len) = unit_range(offset, u64::from(size));
            let mut data = open.file.read(start, len).map_err(|e| self.fail(ino, e))?;
            let skip = ((offset - start) as usize).min(data.len());
            data.drain(..skip);
            data.truncate(size as usize);
            Ok(data)
        })
    }

    /// Writes `data` at `offset`; `cached`: the kernel's writeback of its page cache
    /// (else a direct-I/O write, whose caller waits: a large one starts its disk write
    /// at once, see [`EncryptedFile::write_behind`]).
    ///
    /// [`EncryptedFile::write_behind`]: crate::encrypted_file::EncryptedFile::write_behind
    pub(crate) fn write_ino(
        &self,
        ino: u64,
        offset: u64,
        data: &[u8],
        cached: bool,
    ) -> Result<u32, Errno> {
        self.with_file(ino, |open| {
            open.file
                .write(offset, data)
                .map_err(|e| self.fail(ino, e))?;
            if !cached {
                open.file.write_behind(offset, data.len() as u64);
            }
            Ok(data.len() as u32)
        })
    }

    /// fsync/fdatasync: the kernel has already sent every dirty page, so syncing the
    /// backing file makes ciphertext and size durable.
    ///
    /// Reads go on meanwhile, but writes of this file wait until the sync is done
    /// (see [`EncryptedFile::sync`]). PostgreSQL already serialises WAL writes with
    /// WAL fsyncs, so the wait costs little there.
    ///
    /// [`EncryptedFile::sync`]: crate::encrypted_file::EncryptedFile::sync
    pub(crate) fn fsync_ino(&self, ino: u64, datasync: bool) -> Result<(), Errno> {
        self.with_file(ino, |open| {
            let file = &open.file;
            let synced = if datasync {
                file.sync()
            } else {
                file.sync_all()
            };
            synced.map_err(|e| self.fail(ino, e))
        })
    }

    pub(crate) fn fallocate_ino(
        &self,
        ino: u64,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> Result<(), Errno> {
        let end = offset
            .checked_add(length)
            .filter(|end| *end <= MAX_PLAIN_SIZE)
            .ok_or(Errno::from_i32(libc::EFBIG))?;
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            return Err(Errno::from_i32(libc::EOPNOTSUPP));
        }
        self.with_file(ino, |open| {
            // Whole groups: the metadata pages and both slots of every block, so
            // later writes there cannot fail for lack of space.
            let first = group_of(offset / BLOCK_SIZE);
            let last = group_of(end.div_ceil(BLOCK_SIZE).saturating_sub(1));
            let start = group_offset(first);
            sys::fallocate_keep_size(open.backing(), start, group_offset(last + 1) - start)
                .map_err(|e| io_errno(&e))?;
            if mode == 0 {
                // The new size: holes (entries only) up to `end`.
                open.file.grow_to(end).map_err(|e| self.fail(ino, e))?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_widened_to_whole_units() {
        assert_eq!(unit_range(0, 8192), (0, 8192));
        assert_eq!(unit_range(0, 4096), (0, 8192));
        assert_eq!(unit_range(4096, 4096), (0, 8192));
        assert_eq!(unit_range(4096, 8192), (0, 16384));
        assert_eq!(unit_range(8192, 1), (8192, 8192));
        assert_eq!(unit_range(16384, 65536), (16384, 65536));
    }
}
