//! Open encrypted files, shared by every handle on the same inode.
//!
//! One backing descriptor and one [`EncryptedFile`] per inode: all handles see the
//! same cached length, and the per-inode lock serialises read-modify-write. Entries
//! are reference-counted by FUSE handles and by in-flight requests, so a request
//! never depends on a handle the kernel may release on another thread.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex, RwLock};

use fuser::Errno;

use crate::content::VolumeKey;
use crate::encrypted_file::EncryptedFile;

pub(crate) struct OpenFile {
    /// Readers share, writers (read-modify-write, truncate) exclude.
    pub(crate) file: RwLock<EncryptedFile<File>>,
    /// A duplicate of the backing descriptor, for fsync and fstat without the lock.
    pub(crate) handle: File,
}

impl OpenFile {
    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, EncryptedFile<File>> {
        self.file.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn write(&self) -> std::sync::RwLockWriteGuard<'_, EncryptedFile<File>> {
        self.file.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
pub(crate) struct OpenFiles {
    entries: Mutex<HashMap<u64, (Arc<OpenFile>, u64)>>,
}

impl OpenFiles {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Arc<OpenFile>, u64)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
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
        open: impl FnOnce() -> Result<File, Errno>,
    ) -> Result<Arc<OpenFile>, Errno> {
        if let Some(file) = self.take_ref(ino) {
            return Ok(file);
        }
        // Open (a syscall and a header read) without holding the table lock, so a
        // slow open never stalls requests on other files.
        let backing = open()?;
        // The kernel caches the plaintext above us; the ciphertext below is only
        // re-read for partial-block writes, so let it be evicted first (a hint).
        let _ = crate::sys::fadvise_noreuse(&backing);
        let handle = backing.try_clone().map_err(Errno::from)?;
        let encrypted =
            EncryptedFile::open(backing, volume.clone()).map_err(|e| Errno::from_i32(e.errno()))?;
        let opened = Arc::new(OpenFile {
            file: RwLock::new(encrypted),
            handle,
        });
        let mut entries = self.lock();
        // Another request may have opened it meanwhile: everyone must share one.
        let (file, refs) = entries.entry(ino).or_insert((opened, 0));
        *refs += 1;
        Ok(file.clone())
    }

    fn take_ref(&self, ino: u64) -> Option<Arc<OpenFile>> {
        let mut entries = self.lock();
        let (file, refs) = entries.get_mut(&ino)?;
        *refs += 1;
        Some(file.clone())
    }

    /// Drops one reference; the backing file closes with the last.
    pub(crate) fn release(&self, ino: u64) {
        let mut entries = self.lock();
        if let Some((_, refs)) = entries.get_mut(&ino) {
            *refs -= 1;
            if *refs == 0 {
                entries.remove(&ino);
            }
        }
    }
}
