//! Open encrypted files, shared by every handle on the same inode.
//!
//! One backing descriptor and one [`EncryptedFile`] per inode: all handles see the
//! same cached length, and the file's block claims order overlapping requests. Entries
//! are reference-counted by FUSE handles and by in-flight requests, so a request
//! never depends on a handle the kernel may release on another thread.

use std::collections::{HashMap, HashSet};
use std::fs::{File, FileTimes};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use fuser::{Errno, FileAttr};

use crate::content::VolumeKey;
use crate::encrypted_file::EncryptedFile;
use crate::storage::Storage;

pub(crate) struct OpenFile {
    /// The plaintext view (safe to share: it orders overlapping requests itself).
    pub(crate) file: EncryptedFile<File>,
    /// The backing file's inode number.
    backing_ino: u64,
    /// Times the kernel set that are not on the backing file yet.
    times: Mutex<LazyTimes>,
}

/// With the writeback cache the kernel keeps a file's mtime itself and sends it in a
/// SETATTR before every fsync of a written file (once per WAL flush). Those are
/// answered from memory and written to the backing file at flush, fsync or close.
#[derive(Default)]
struct LazyTimes {
    atime: Option<SystemTime>,
    mtime: Option<SystemTime>,
    /// The attributes last read from the backing file (mode, owner, links).
    attr: Option<FileAttr>,
}

impl OpenFile {
    /// The backing descriptor, for fstat, times, mode, owner and fallocate.
    pub(crate) fn backing(&self) -> &File {
        self.file.storage()
    }

    fn times(&self) -> std::sync::MutexGuard<'_, LazyTimes> {
        self.times.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records new times without touching the backing file; returns the attributes
    /// to reply with, or `None` (nothing recorded) if none were read yet.
    pub(crate) fn defer_times(
        &self,
        atime: Option<SystemTime>,
        mtime: Option<SystemTime>,
    ) -> Option<FileAttr> {
        let size = self.file.len();
        let mut times = self.times();
        let mut attr = times.attr?;
        times.atime = atime.or(times.atime);
        times.mtime = mtime.or(times.mtime);
        attr.atime = times.atime.unwrap_or(attr.atime);
        attr.mtime = times.mtime.unwrap_or(attr.mtime);
        attr.ctime = SystemTime::now();
        attr.size = size;
        Some(attr)
    }

    /// Remembers attributes just read from the backing file, with deferred times
    /// laid over them; returns them.
    pub(crate) fn remember_attr(&self, mut attr: FileAttr) -> FileAttr {
        let mut times = self.times();
        attr.atime = times.atime.unwrap_or(attr.atime);
        attr.mtime = times.mtime.unwrap_or(attr.mtime);
        times.attr = Some(attr);
        attr
    }

    /// Writes deferred times to the backing file.
    pub(crate) fn apply_times(&self) -> io::Result<()> {
        let mut times = self.times();
        if times.atime.is_none() && times.mtime.is_none() {
            return Ok(());
        }
        let mut set = FileTimes::new();
        if let Some(atime) = times.atime {
            set = set.set_accessed(atime);
        }
        if let Some(mtime) = times.mtime {
            set = set.set_modified(mtime);
        }
        self.backing().set_times(set)?;
        times.atime = None;
        times.mtime = None;
        Ok(())
    }

    /// Forgets the cached attributes (after a change that the cache does not track).
    pub(crate) fn forget_attr(&self) {
        self.times().attr = None;
    }
}

/// A node's backing file, just opened for [`OpenFiles::acquire`].
pub(crate) struct OpenedBacking {
    pub(crate) file: File,
    /// Directly under a `pg_wal` directory: its blocks' rewrite pages are reserved
    /// (see [`EncryptedFile::reserving_rewrite_pages`]).
    pub(crate) wal: bool,
    /// Its inode number.
    pub(crate) ino: u64,
}

/// Files emptied and closed whose emptied mark is kept (8 bytes each); past this, a
/// close syncs instead.
const EMPTIED_KEPT: usize = 1 << 16;

pub(crate) struct OpenFiles {
    entries: Mutex<HashMap<u64, (Arc<OpenFile>, u64)>>,
    /// Backing inode numbers of files emptied (truncated to 0) since their last sync
    /// and closed since: the mark the open file held ([`EncryptedFile::take_emptied`]),
    /// kept for the file's next open, which syncs before it writes a new header. It
    /// replaces an `fdatasync` at close: PostgreSQL's DROP empties every fork of a
    /// relation and closes it, and unlinks it at the next checkpoint. Dropped when the
    /// file loses its last name; a number reused by another file since only costs that
    /// file one sync before its header.
    emptied: Mutex<HashSet<u64>>,
    /// Set when the mount is being stopped: extensions in progress give up.
    stopping: Arc<AtomicBool>,
}

impl OpenFiles {
    pub(crate) fn new(stopping: Arc<AtomicBool>) -> Self {
        Self {
            entries: Mutex::default(),
            emptied: Mutex::default(),
            stopping,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Arc<OpenFile>, u64)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emptied(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.emptied.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open file of `ino`, if any, without taking a reference.
    pub(crate) fn get(&self, ino: u64) -> Option<Arc<OpenFile>> {
        self.lock().get(&ino).map(|(file, _)| file.clone())
    }

    /// Takes a reference on `ino`'s open file, opening it with `open` if needed.
    /// Every successful call must be paired with [`OpenFiles::release`].
    pub(crate) fn acquire(
        &self,
        ino: u64,
        volume: &Arc<VolumeKey>,
        open: impl FnOnce() -> Result<OpenedBacking, Errno>,
    ) -> Result<Arc<OpenFile>, Errno> {
        if let Some(file) = self.take_ref(ino) {
            return Ok(file);
        }
        // Open (a syscall and a header read) without holding the table lock, so a
        // slow open never stalls requests on other files.
        let OpenedBacking {
            file: backing,
            wal,
            ino: backing_ino,
        } = open()?;
        // The kernel caches the plaintext above us; the ciphertext below is only
        // re-read for partial-block writes, so let it be evicted first (a hint).
        // No kernel readahead: it would read (and zero-fill) the holes of slot B
        // pages never written; sequential reads prefetch what they need instead.
        let _ = crate::sys::fadvise_noreuse(&backing);
        let _ = crate::sys::fadvise_random(&backing);
        let encrypted = EncryptedFile::open(backing, volume.clone())
            .map_err(|e| Errno::from_i32(e.errno()))?
            .reserving_rewrite_pages(wal)
            .stopping_on(self.stopping.clone());
        let opened = Arc::new(OpenFile {
            file: encrypted,
            backing_ino,
            times: Mutex::default(),
        });
        let mut entries = self.lock();
        // Another request may have opened it meanwhile: everyone must share one, and
        // only the one shared takes over the file's emptied mark.
        let (file, refs) = entries.entry(ino).or_insert_with(|| {
            if self.emptied().remove(&backing_ino) {
                opened.file.mark_emptied();
            }
            (opened, 0)
        });
        *refs += 1;
        Ok(file.clone())
    }

    /// Moves a closing file's emptied mark into [`OpenFiles::emptied`], unless the file
    /// has no name left (it can never be opened again) or too many marks are kept
    /// (then the file syncs as it closes).
    fn keep_emptied_mark(&self, file: &OpenFile) {
        let mut emptied = self.emptied();
        if emptied.len() < EMPTIED_KEPT
            && file.file.take_emptied()
            && !file.file.storage().is_unlinked()
        {
            emptied.insert(file.backing_ino);
        }
    }

    /// The file open as `pinned` lost a name: if it has none left, its emptied mark
    /// is dropped (it can never be opened again).
    pub(crate) fn name_removed(&self, pinned: &File) {
        let mut emptied = self.emptied();
        if emptied.is_empty() {
            return; // Most unlinks: no `fstat`.
        }
        if let Ok(meta) = pinned.metadata() {
            if meta.nlink() == 0 {
                emptied.remove(&meta.ino());
            }
        }
    }

    /// Takes a reference on `ino`'s open file if it is open (never opens it).
    /// Every `Some` must be paired with [`OpenFiles::release`].
    pub(crate) fn take_ref(&self, ino: u64) -> Option<Arc<OpenFile>> {
        let mut entries = self.lock();
        let (file, refs) = entries.get_mut(&ino)?;
        *refs += 1;
        Some(file.clone())
    }

    /// Drops one reference; the backing file closes with the last, after its
    /// deferred times are written and its emptied mark is kept (under the table
    /// lock, so that a new open of the same inode cannot miss either).
    pub(crate) fn release(&self, ino: u64) {
        let mut entries = self.lock();
        if let Some((file, refs)) = entries.get_mut(&ino) {
            *refs -= 1;
            if *refs == 0 {
                if let Err(e) = file.apply_times() {
                    tracing::warn!(ino, "cryptfs: cannot set file times on close: {e}");
                }
                self.keep_emptied_mark(file);
                entries.remove(&ino);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::path::Path;

    use pgcmk_crypto::SymmetricKey;

    use super::*;

    fn backing(path: &Path) -> Result<OpenedBacking, Errno> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO)))?;
        let ino = file.metadata().unwrap().ino();
        Ok(OpenedBacking {
            file,
            wal: false,
            ino,
        })
    }

    #[test]
    fn an_emptied_file_keeps_its_mark_until_its_next_open_or_its_last_name_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let (path, other) = (dir.path().join("rel"), dir.path().join("other"));
        let volume = Arc::new(VolumeKey::new(SymmetricKey::from_bytes([4; 32]), [5; 16]));
        let files = OpenFiles::new(Arc::default());
        let open = |id: u64, path: &Path| files.acquire(id, &volume, || backing(path)).unwrap();
        let rel = open(7, &path);
        rel.file.write(0, &[1; 100]).unwrap();
        rel.file.sync().unwrap();
        rel.file.set_len(0).unwrap();
        drop(rel);
        files.release(7);
        // The next open of the same backing file (under any node id) gets the mark.
        let rel = open(9, &path);
        assert!(rel.file.take_emptied(), "the mark was lost at close");
        rel.file.mark_emptied();
        drop(rel);
        files.release(9);
        // Another file losing its name leaves the mark; this file's last name drops it.
        let unrelated = open(8, &other);
        drop(unrelated);
        files.release(8);
        let pinned_other = File::open(&other).unwrap();
        std::fs::remove_file(&other).unwrap();
        files.name_removed(&pinned_other);
        let pinned = File::open(&path).unwrap();
        files.name_removed(&pinned);
        assert_eq!(files.emptied().len(), 1, "a linked file's mark was dropped");
        std::fs::remove_file(&path).unwrap();
        files.name_removed(&pinned);
        assert!(
            files.emptied().is_empty(),
            "an unlinked file's mark was kept"
        );
    }
}
