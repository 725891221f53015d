//! Per-thread scratch buffers for the pages a request reads or seals.

use std::cell::Cell;
use std::thread::LocalKey;

thread_local! {
    /// Per request thread: the data pages a read decrypts from, and the pages a
    /// write seals into (separate, as a write reads the partial blocks it touches).
    /// Reused without zeroing, so a request allocates nothing.
    pub(super) static READ_BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    pub(super) static SEAL_BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on `len` bytes of this thread's `buffer` (contents undefined).
pub(super) fn with_scratch<T>(
    buffer: &'static LocalKey<Cell<Vec<u8>>>,
    len: usize,
    f: impl FnOnce(&mut [u8]) -> T,
) -> T {
    let mut scratch = buffer.take();
    if scratch.len() < len {
        scratch.resize(len, 0);
    }
    let result = f(&mut scratch[..len]);
    buffer.set(scratch);
    result
}
