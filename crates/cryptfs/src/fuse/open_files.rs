//! Open encrypted files, shared by every handle on the same inode.
//!
//! One backing descriptor and one [`EncryptedFile`] per inode: all handles see the
//! same cached length, and the file's block claims order overlapping requests. Entries
//! are reference-counted by FUSE handles and by in-flight requests, so a request
//! never depends on a handle the kernel may release on another thread.

use std::collections::HashMap;
use std::fs::{File, FileTimes};
use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use fuser::{Errno, FileAttr};

use crate::content::VolumeKey;
use crate::encrypted_file::EncryptedFile;

pub(crate) struct OpenFile {
    /// The plaintext view (safe to share: it orders overlapping requests itself).
    pub(crate) file: EncryptedFile<File>,
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

pub(crate) struct OpenFiles {
    entries: Mutex<HashMap<u64, (Arc<OpenFile>, u64)>>,
    /// Set when the mount is being stopped: extensions in progress give up.
    stopping: Arc<AtomicBool>,
}

impl OpenFiles {
    pub(crate) fn new(stopping: Arc<AtomicBool>) -> Self {
        Self {
            entries: Mutex::default(),
            stopping,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Arc<OpenFile>, u64)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open file of `ino`, if any, without taking a reference.
    pub(crate) fn get(&self, ino: u64) -> Option<Arc<OpenFile>> {
        self.lock().get(&ino).map(|(file, _)| file.clone())
    }

    /// Takes a reference on `ino`'s open file, opening it with `open` if needed;
    /// `open` also says whether it is a WAL file, which reserves its blocks' rewrite
    /// pages (see [`EncryptedFile::reserving_rewrite_pages`]). Every successful call
    /// must be paired with [`OpenFiles::release`].
    pub(crate) fn acquire(
        &self,
        ino: u64,
        volume: &Arc<VolumeKey>,
        open: impl FnOnce() -> Result<(File, bool), Errno>,
    ) -> Result<Arc<OpenFile>, Errno> {
        if let Some(file) = self.take_ref(ino) {
            return Ok(file);
        }
        // Open (a syscall and a header read) without holding the table lock, so a
        // slow open never stalls requests on other files.
        let (backing, wal) = open()?;
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
            times: Mutex::default(),
        });
        let mut entries = self.lock();
        // Another request may have opened it meanwhile: everyone must share one.
        let (file, refs) = entries.entry(ino).or_insert((opened, 0));
        *refs += 1;
        Ok(file.clone())
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
    /// deferred times are written (under the table lock, so that a new open of
    /// the same inode cannot read the old times).
    pub(crate) fn release(&self, ino: u64) {
        let mut entries = self.lock();
        if let Some((file, refs)) = entries.get_mut(&ino) {
            *refs -= 1;
            if *refs == 0 {
                if let Err(e) = file.apply_times() {
                    tracing::warn!(ino, "cryptfs: cannot set file times on close: {e}");
                }
                entries.remove(&ino);
            }
        }
    }
}
