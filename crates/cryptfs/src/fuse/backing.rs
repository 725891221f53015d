//! Reaching backing files: relative to their directory's descriptor ([`Located`]),
//! opened for content (read-write, never following a symlink) or pinned while their
//! identity is decided (see `inodes`).

use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::ops::Deref;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Opens whatever `path` names without following it, so that its inode (and inode
/// number) stays what it is while the descriptor is open, even if the name is removed
/// meanwhile: `O_PATH`, which opens nothing (a FIFO's other end does not notice, a
/// device is not opened), and for a regular file then read-only, to read its size.
pub(crate) fn pin(path: &Path) -> Result<File, Errno> {
    let pinned = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_PATH)
        .open(path)
        .map_err(|e| io_errno(&e))?;
    if !pinned.metadata().map_err(|e| io_errno(&e))?.is_file() {
        return Ok(pinned);
    }
    // The same inode, whatever the name leads to now.
    File::open(format!("/proc/self/fd/{}", pinned.as_raw_fd())).map_err(|e| io_errno(&e))
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

/// A backing file named relative to a descriptor of its directory: the `*at` system
/// calls, spelt as the short path `/proc/self/fd/<dir>/<name>` so that std's file API
/// works on it. The kernel resolves the descriptor's magic link to the directory
/// itself, whatever its real path's length, so only the name counts against the
/// kernel's limits, as on a plain filesystem; the descriptor is held as long as the
/// path is used.
pub(crate) struct Located {
    _dir: Arc<File>,
    path: PathBuf,
    in_wal: bool,
}

impl Located {
    /// `name` in the directory open as `dir` (`"."`: the directory itself);
    /// `in_wal`: that directory is named `pg_wal`.
    pub(crate) fn new(dir: Arc<File>, name: &OsStr, in_wal: bool) -> Self {
        let path = Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
        Self {
            _dir: dir,
            path,
            in_wal,
        }
    }

    /// A file directly under a `pg_wal` directory: PostgreSQL's WAL, rewritten in
    /// place and waited on with `fdatasync` at every commit.
    pub(crate) fn is_wal(&self) -> bool {
        self.in_wal
    }
}

impl AsRef<Path> for Located {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Deref for Located {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}
