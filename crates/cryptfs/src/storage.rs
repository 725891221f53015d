//! The byte store under one encrypted file: a real file, or a simulated disk in tests.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

/// Positional I/O on one backing file. Implementations must be safe to share
/// between threads; callers never write the same bytes from two threads at once.
pub trait Storage: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the store if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Current size in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Truncates or extends (with zeros) to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes every completed write and size change durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Like [`Storage::sync_data`], and makes all metadata (times) durable too.
    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
    /// True when no name refers to the store any more (it can never be reopened).
    fn is_unlinked(&self) -> bool {
        false
    }
    /// A hint: `len` bytes at `offset` will be read soon (best effort, no error).
    fn prefetch(&self, _offset: u64, _len: u64) {}
    /// A hint: the `len` bytes just written at `offset` will be synced soon, so their
    /// write to the disk may start now, on another thread (best effort, no error).
    /// Makes nothing durable.
    fn write_behind(&self, _offset: u64, _len: u64) {}
    /// Reads exactly `buf.len()` bytes at `offset` if that needs no wait for a disk;
    /// `Ok(false)` (contents of `buf` undefined) if it would, or if the store ends
    /// first.
    fn read_cached_at(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        read_or_report_eof(self, buf, offset)
    }
}

/// Reads exactly `buf.len()` bytes at `offset`: `Ok(false)` if the store ends first.
pub(crate) fn read_or_report_eof<S: Storage + ?Sized>(
    storage: &S,
    buf: &mut [u8],
    offset: u64,
) -> io::Result<bool> {
    match storage.read_exact_at(buf, offset) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

impl Storage for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn sync_all(&self) -> io::Result<()> {
        File::sync_all(self)
    }

    fn is_unlinked(&self) -> bool {
        self.metadata().is_ok_and(|m| m.nlink() == 0)
    }

    fn prefetch(&self, offset: u64, len: u64) {
        let _ = crate::sys::prefetch(self, offset, len);
    }

    fn write_behind(&self, offset: u64, len: u64) {
        crate::write_behind::start(self, offset, len);
    }

    fn read_cached_at(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        crate::sys::read_cached_at(self, buf, offset)
    }
}

/// A shared store (tests reopen one simulated disk several times).
impl<T: Storage + ?Sized> Storage for std::sync::Arc<T> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        (**self).write_all_at(buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        (**self).set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        (**self).sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        (**self).sync_all()
    }

    fn is_unlinked(&self) -> bool {
        (**self).is_unlinked()
    }

    fn prefetch(&self, offset: u64, len: u64) {
        (**self).prefetch(offset, len)
    }

    fn write_behind(&self, offset: u64, len: u64) {
        (**self).write_behind(offset, len)
    }

    fn read_cached_at(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        (**self).read_cached_at(buf, offset)
    }
}
