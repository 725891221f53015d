//! Opening backing files: for content (read-write, never following a symlink) and to
//! pin one while its identity is decided (see `inodes`).

use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use fuser::Errno;

use super::io_errno;
use crate::encrypted_file::plain_len_of;

/// Opens a backing file read-write whatever the caller asked for: with the
/// writeback cache the kernel reads pages through write-only handles too.
/// Never follows a symlink: the daemon runs as root, and a link's target may lie
/// outside the cipher directory.
pub(crate) fn open_backing(path: &Path) -> Result<File, Errno> {
    let open = |write: bool| {
        OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    };
    match open(true) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EROFS | libc::EACCES | libc::EPERM)
            ) =>
        {
            open(false).map_err(|e| io_errno(&e))
        }
        other => other.map_err(|e| io_errno(&e)),
    }
}

/// Opens whatever `path` names without following it — read-only for files and
/// directories, `O_PATH` for symlinks — so that its inode (and inode number) stays
/// what it is while the descriptor is open, even if the name is removed meanwhile.
pub(crate) fn pin(path: &Path) -> Result<File, Errno> {
    let open = |flags| {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | flags)
            .open(path)
    };
    match open(0) {
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => open(libc::O_PATH),
        other => other,
    }
    .map_err(|e| io_errno(&e))
}

/// The plaintext length of a regular file that is not open in the daemon (`None` for
/// other kinds): the last block's length is in its metadata entry, so this reads the
/// last group's metadata page.
pub(crate) fn closed_file_len(pinned: &File, meta: &Metadata) -> Result<Option<u64>, Errno> {
    if !meta.is_file() {
        return Ok(None);
    }
    // The size is in `meta` already: no second fstat on every lookup and getattr.
    plain_len_of(pinned, meta.len())
        .map(Some)
        .map_err(|e| Errno::from_i32(e.errno()))
}

/// A file directly under a `pg_wal` directory: PostgreSQL's WAL, rewritten in place
/// and waited on with `fdatasync` at every commit.
pub(crate) fn is_wal(path: &Path) -> bool {
    path.parent().and_then(Path::file_name) == Some(OsStr::new("pg_wal"))
}
