//! One encrypted file over a [`Storage`]: plaintext reads, writes and truncation at
//! any offset, mapped onto whole authenticated blocks with two slots each.
//!
//! Every method takes `&self`: operations claim the blocks they touch (see
//! [`claims`]), so reads share blocks, writes of different blocks run in parallel,
//! and truncation and syncs wait for the writes in flight.

mod claims;
mod meta_pages;
mod reader;
mod recovery;
mod scratch;
mod slots;
mod writer;

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use pgcmk_crypto::random;

use crate::content::{FileCipher, VolumeKey};
use crate::format::{
    entry_offset, group_of, group_offset, FileHeader, Slot, BLOCK_SIZE, ENTRY_SIZE, FORMAT_VERSION,
    GROUP_BLOCKS, HEADER_LEN, MAX_PLAIN_SIZE,
};
use crate::storage::Storage;
use crate::Error;
use claims::{BlockClaims, WHOLE_FILE};
use meta_pages::{block_len, blocks_of, cut_after};
use slots::SlotState;
use writer::{BlockWriter, Content};

pub use meta_pages::{plain_len_of, reported_plain_len};
pub use recovery::{header_lost, FileRecovery};

/// Blocks sealed and written per window: one group (128 KiB of plaintext).
const WINDOW_BLOCKS: u64 = GROUP_BLOCKS;
const WINDOW_BYTES: u64 = WINDOW_BLOCKS * BLOCK_SIZE;

/// A plaintext view of one encrypted backing file.
pub struct EncryptedFile<S: Storage> {
    storage: S,
    volume: Arc<VolumeKey>,
    state: Mutex<FileState>,
    /// Signalled when a claim is released while others wait.
    released: Condvar,
    /// Write a new block's slot-B page (zeros) together with its first version; see
    /// [`EncryptedFile::reserving_rewrite_pages`].
    reserve_rewrite_pages: bool,
    /// Set when extensions in progress must stop; see [`EncryptedFile::stopping_on`].
    stop: Option<Arc<AtomicBool>>,
}

struct FileState {
    /// Plaintext length, including writes in flight: a write that extends the file
    /// claims every block from the old end to its own, so nobody reads them early.
    len: u64,
    /// `None` while the backing file is empty: the header is written on first growth.
    cipher: Option<Arc<FileCipher>>,
    slots: SlotState,
    claims: BlockClaims,
    /// Truncated to 0 since the last completed sync: the truncation must be durable
    /// before a new header (a new file id) goes in, see
    /// [`EncryptedFile::cipher_or_header`].
    emptied: bool,
}

/// Blocks held by one operation until dropped.
struct Claimed<'a, S: Storage> {
    file: &'a EncryptedFile<S>,
    id: u64,
}

impl<S: Storage> Drop for Claimed<'_, S> {
    /// Wakes the waiting claims, if any: a waiter queues itself under the state's
    /// lock before it waits, so none is missed, and a WAL flush (one write, one sync,
    /// nobody waiting) makes no `futex` call.
    fn drop(&mut self) {
        let waiting = self.file.state().claims.release(self.id);
        if waiting {
            self.file.released.notify_all();
        }
    }
}

impl<S: Storage> EncryptedFile<S> {
    /// Opens `storage`, reading its header and the last group's metadata page.
    ///
    /// A damaged tail (a last block without a plausible current slot) does not fail
    /// the open: reads of the damaged block fail instead, so the intact part stays
    /// readable.
    pub fn open(storage: S, volume: Arc<VolumeKey>) -> Result<Self, Error> {
        let cipher_len = storage.size()?;
        let cipher = if cipher_len == 0 {
            None
        } else if cipher_len < HEADER_LEN {
            return Err(Error::BadHeader("file shorter than its header"));
        } else {
            let mut header = [0u8; HEADER_LEN as usize];
            storage.read_exact_at(&mut header, 0)?;
            Some(Arc::new(volume.file_cipher(FileHeader::parse(&header)?)?))
        };
        let len = plain_len_of(&storage, cipher_len)?;
        Ok(Self {
            storage,
            volume,
            state: Mutex::new(FileState {
                len,
                cipher,
                slots: SlotState::default(),
                claims: BlockClaims::default(),
                emptied: false,
            }),
            released: Condvar::new(),
            reserve_rewrite_pages: false,
            stop: None,
        })
    }

    /// With `reserve`, every block's slot-B page is written (with zeros) when the
    /// block gets its first version, so the block's first rewrite overwrites disk
    /// space that is already allocated. For files whose rewrites wait on
    /// `fdatasync` (PostgreSQL's WAL): an allocating write makes the backing
    /// filesystem write its allocation metadata too before `fdatasync` returns. The
    /// price is twice the bytes written when the file is first filled.
    pub fn reserving_rewrite_pages(mut self, reserve: bool) -> Self {
        self.reserve_rewrite_pages = reserve;
        self
    }

    /// Extensions (truncating up, writing past the end, growing) check `stop` after
    /// every group of 32 blocks; once it is set they put the file back as it was and
    /// fail with [`Error::Stopped`] — so a mount being stopped does not wait for an
    /// extension of hundreds of gigabytes.
    pub fn stopping_on(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// True once the flag given to [`EncryptedFile::stopping_on`] is set.
    fn stopping(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }

    /// Takes the mark "emptied by a truncation to 0 since the last sync" off this
    /// file (so dropping it does not sync for it) and returns it, for the next
    /// [`EncryptedFile`] of the same backing file ([`EncryptedFile::mark_emptied`]),
    /// which syncs before it writes a new header. The mark must not be lost in between
    /// (see this type's `Drop`).
    pub fn take_emptied(&self) -> bool {
        std::mem::take(&mut self.state().emptied)
    }

    /// Marks the file as emptied since its last sync: the mark an earlier
    /// [`EncryptedFile`] of the same backing file handed over
    /// ([`EncryptedFile::take_emptied`]).
    pub fn mark_emptied(&self) {
        self.state().emptied = true;
    }

    /// Plaintext length (including writes in flight).
    pub fn len(&self) -> u64 {
        self.state().len
    }

    /// True when the file holds no plaintext.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The backing store.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Reads up to `size` bytes at `offset` (fewer at end of file).
    pub fn read(&self, offset: u64, size: usize) -> Result<Vec<u8>, Error> {
        let available = self.len().saturating_sub(offset).min(size as u64);
        let mut out = vec![0u8; available as usize];
        let n = self.read_into(offset, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// Reads into `buf` at `offset`, decrypting straight into it; returns the bytes
    /// read (fewer than `buf.len()` only at end of file).
    pub fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<usize, Error> {
        let wanted = buf.len() as u64;
        let available = |len: u64| len.saturating_sub(offset).min(wanted);
        let (_claim, (len, cipher)) = self.claim(
            false,
            |state| blocks_of(offset, available(state.len)),
            |state| (state.len, state.cipher.clone()),
        );
        let n = available(len) as usize;
        if n > 0 {
            let cipher = cipher.ok_or(NO_HEADER)?;
            self.decrypt_range(&cipher, len, offset, &mut buf[..n])?;
        }
        Ok(n)
    }

    /// Writes `data` at `offset`; a gap past the end of file reads as zeros.
    /// Writes of other blocks of this file may run at the same time.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|end| *end <= MAX_PLAIN_SIZE)
            .ok_or(Error::FileTooLarge {
                max: MAX_PLAIN_SIZE,
            })?;
        let gap_end = offset / BLOCK_SIZE * BLOCK_SIZE;
        if gap_end > self.len().saturating_add(WINDOW_BYTES) {
            // A long gap: its whole blocks first, as an extension that can be stopped
            // and undone (the data's own block is sealed with the data below).
            self.grow_to(gap_end)?;
        }
        // From the old end on (a gap is zero-filled), or the whole file when the
        // header is still to be written.
        let (claim, (old_len, cipher)) = self.claim(
            true,
            |state| match state.cipher {
                Some(_) => blocks_of(state.len.min(offset), end - state.len.min(offset)),
                None => WHOLE_FILE,
            },
            |state| {
                let old_len = state.len;
                state.len = old_len.max(end);
                (old_len, state.cipher.clone())
            },
        );
        let result = self
            .cipher_or_header(cipher)
            .and_then(|cipher| BlockWriter::new(self, &cipher, old_len).write(offset, data));
        self.finish(claim, result)
    }

    /// After a write of `len` bytes at `offset` whose caller waits for it (direct
    /// I/O): if that was a group or more — PostgreSQL zero-filling a new WAL segment —
    /// starts the disk write of its backing pages on another thread (see
    /// [`Storage::write_behind`]), so the sync that follows waits for less. Smaller
    /// writes are followed by their sync at once.
    pub fn write_behind(&self, offset: u64, len: u64) {
        if len < WINDOW_BYTES {
            return;
        }
        let start = group_offset(group_of(offset / BLOCK_SIZE));
        let stop = group_offset(group_of((offset + len - 1) / BLOCK_SIZE) + 1);
        self.storage.write_behind(start, stop - start);
    }

    /// Truncates or extends (with zeros) to `new_len` plaintext bytes.
    pub fn set_len(&self, new_len: u64) -> Result<(), Error> {
        self.resize(new_len, false)
    }

    /// Extends (with zeros) to `min_len` bytes if the file is shorter; never
    /// shortens it, even when writes extend it meanwhile.
    pub fn grow_to(&self, min_len: u64) -> Result<(), Error> {
        self.resize(min_len, true)
    }

    /// Makes every completed write durable (data and size), then forgets which
    /// slots were pending: their versions are now the durable ones.
    ///
    /// Waits for the writes in flight and holds off new ones (reads go on): a write
    /// racing the sync could otherwise be taken for durable, and the next write of
    /// its block would overwrite the only durable version.
    pub fn sync(&self) -> Result<(), Error> {
        let _claim = self.claim(false, |_| WHOLE_FILE, |_| ());
        self.sync_claimed(Storage::sync_data)
    }

    /// Like [`EncryptedFile::sync`], and makes the file's metadata durable too.
    pub fn sync_all(&self) -> Result<(), Error> {
        let _claim = self.claim(false, |_| WHOLE_FILE, |_| ());
        self.sync_claimed(Storage::sync_all)
    }

    /// Block numbers whose current version fails authentication, in order.
    pub fn bad_blocks(&self) -> Result<Vec<u64>, Error> {
        let mut bad = Vec::new();
        let blocks = self.len().div_ceil(BLOCK_SIZE);
        let mut out = vec![0u8; WINDOW_BYTES as usize];
        let mut first = 0;
        while first < blocks {
            let last = (first + WINDOW_BLOCKS - 1).min(blocks - 1);
            if self.read_into(first * BLOCK_SIZE, &mut out).is_err() {
                // Narrow the window down to the blocks that fail.
                for block in first..=last {
                    let block_out = &mut out[..BLOCK_SIZE as usize];
                    if self.read_into(block * BLOCK_SIZE, block_out).is_err() {
                        bad.push(block);
                    }
                }
            }
            first = last + 1;
        }
        Ok(bad)
    }

    /// Waits until no operation in flight conflicts with `blocks` (computed from
    /// the current state, again after every wait), claims them, and runs `then` in
    /// the same critical section.
    fn claim<T>(
        &self,
        exclusive: bool,
        blocks: impl Fn(&FileState) -> Range<u64>,
        then: impl FnOnce(&mut FileState) -> T,
    ) -> (Claimed<'_, S>, T) {
        let mut state = self.state();
        let mut ticket = None;
        loop {
            let wanted = blocks(&state);
            match state.claims.try_hold(wanted, exclusive, ticket) {
                Ok(id) => {
                    let out = then(&mut state);
                    return (Claimed { file: self, id }, out);
                }
                Err(queued) => ticket = Some(queued),
            }
            state = self
                .released
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Releases a write's claim. After a failed write the length and the slots
    /// remembered in memory may be wrong: once no other write is in flight, the
    /// length is read again from disk and only the entries on disk are trusted.
    fn finish(&self, claim: Claimed<'_, S>, result: Result<(), Error>) -> Result<(), Error> {
        drop(claim);
        if result.is_err() {
            let _whole = self.claim(
                true,
                |_| WHOLE_FILE,
                |state| {
                    state.slots.durable.clear();
                    state.slots.write_failed = true;
                    if let Ok(len) = reported_plain_len(&self.storage) {
                        state.len = len;
                    }
                },
            );
        }
        result
    }

    /// [`EncryptedFile::set_len`] (`grow_only`: [`EncryptedFile::grow_to`]), with
    /// the whole file claimed.
    fn resize(&self, new_len: u64, grow_only: bool) -> Result<(), Error> {
        if new_len > MAX_PLAIN_SIZE {
            return Err(Error::FileTooLarge {
                max: MAX_PLAIN_SIZE,
            });
        }
        let (claim, (len, cipher)) = self.claim(
            true,
            |_| WHOLE_FILE,
            |state| (state.len, state.cipher.clone()),
        );
        let new_len = if grow_only { new_len.max(len) } else { new_len };
        let result = if new_len == len {
            Ok(())
        } else if new_len > len {
            self.extend_claimed(cipher, len, new_len)
        } else {
            self.truncate_claimed(cipher, len, new_len)
        };
        if result.is_ok() {
            self.state().len = new_len;
        }
        self.finish(claim, result)
    }

    /// Extends the file from `len` to `new_len` bytes with holes (whole file
    /// claimed). Stopped part way ([`EncryptedFile::stopping_on`]), it cuts off what
    /// it wrote, so the file keeps its size.
    fn extend_claimed(
        &self,
        cipher: Option<Arc<FileCipher>>,
        len: u64,
        new_len: u64,
    ) -> Result<(), Error> {
        let cipher = self.cipher_or_header(cipher)?;
        let extended = BlockWriter::new(self, &cipher, len).write_zeros(len, new_len);
        if !matches!(extended, Err(Error::Stopped)) {
            return extended;
        }
        let reached = reported_plain_len(&self.storage)?;
        self.truncate_claimed(Some(cipher), reached, len)?;
        Err(Error::Stopped)
    }

    /// Shortens the file from `len` to `new_len` bytes (whole file claimed).
    fn truncate_claimed(
        &self,
        cipher: Option<Arc<FileCipher>>,
        len: u64,
        new_len: u64,
    ) -> Result<(), Error> {
        if new_len == 0 {
            // A fresh file id (and key) is chosen on the next write. Not synced here:
            // PostgreSQL empties every relation file it drops, and the truncation only
            // needs to be durable before new content goes in.
            self.storage.set_len(0)?;
            let mut state = self.state();
            state.emptied |= cipher.is_some();
            state.cipher = None;
            state.slots.forget();
            return Ok(());
        }
        let cipher = cipher.ok_or(NO_HEADER)?;
        let block = (new_len - 1) / BLOCK_SIZE;
        let keep = new_len - block * BLOCK_SIZE;
        if keep < block_len(len, block) {
            // Re-seal the new last block at its shorter length (into the slot that
            // does not hold its durable version) before cutting the tail.
            let mut plain = [0u8; BLOCK_SIZE as usize];
            let block_start = block * BLOCK_SIZE;
            self.decrypt_range(&cipher, len, block_start, &mut plain[..keep as usize])?;
            BlockWriter::new(self, &cipher, len).write_window(
                block_start,
                &plain[..keep as usize],
                Some(new_len),
                Content::Data,
            )?;
        }
        cut_after(&self.storage, Some(block), len.div_ceil(BLOCK_SIZE))?;
        // Made durable at once: slots cut off must not survive a crash, or a later
        // extension (new blocks, generation 1) that is torn could let an older slot
        // of theirs — from before the last sync — become current again.
        self.sync_claimed(Storage::sync_data)?;
        self.state().slots.durable.retain(|&b, _| b <= block);
        Ok(())
    }

    /// The file's cipher, or, for an empty file, a new header and its cipher. Called
    /// with the whole file claimed when `cipher` is `None`.
    ///
    /// The header is not synced: it reaches the disk with the first sync of the file,
    /// as the blocks under it do, and a crash that loses it leaves a file that held
    /// nothing synced, which crash recovery empties ([`header_lost`]). Only a file
    /// emptied by a truncation since the last sync is synced *before* its new header:
    /// otherwise a crash could keep the old header and old slots (the truncation lost)
    /// under new blocks of generation 1, and an older slot of the old content would
    /// become current again.
    fn cipher_or_header(&self, cipher: Option<Arc<FileCipher>>) -> Result<Arc<FileCipher>, Error> {
        if let Some(cipher) = cipher {
            return Ok(cipher);
        }
        if self.state().emptied {
            self.sync_claimed(Storage::sync_data)?;
        }
        let header = FileHeader {
            version: FORMAT_VERSION,
            file_id: random::array()?,
        };
        self.storage.write_all_at(&header.to_page(), 0)?;
        let cipher = Arc::new(self.volume.file_cipher(header)?);
        self.state().cipher = Some(cipher.clone());
        Ok(cipher)
    }

    /// Syncs with `sync`; the caller holds a claim that excludes writers.
    fn sync_claimed(&self, sync: impl FnOnce(&S) -> io::Result<()>) -> Result<(), Error> {
        sync(&self.storage)?;
        let mut state = self.state();
        state.emptied = false;
        let filled_holes = state.slots.synced();
        drop(state);
        clear_filled_holes(&self.storage, &filled_holes);
        Ok(())
    }

    fn state(&self) -> MutexGuard<'_, FileState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<S: Storage> Drop for EncryptedFile<S> {
    /// Which slot is pending lives only in memory: a file closed with unsynced
    /// writes that replace a durable version is synced first, or a later open would
    /// take a pending version for the durable one and overwrite the real durable
    /// version. Likewise a file emptied since its last sync: a later open would write
    /// a new header without knowing the truncation is not durable yet
    /// ([`EncryptedFile::cipher_or_header`]).
    ///
    /// No sync is needed when every pending version is a block's first (a new file
    /// written and closed, PostgreSQL's most common case): there is no durable version
    /// to protect, and a later open that takes it for durable writes the block's next
    /// version into the other slot. A file already unlinked (PostgreSQL's temporary
    /// files) cannot be opened again: no sync. Nor one whose emptied mark was taken
    /// ([`EncryptedFile::take_emptied`]): whoever took it keeps it for the next open.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        let pending = state.slots.pending.len();
        let must_sync = state.emptied || state.slots.replaces_durable();
        if must_sync && !self.storage.is_unlinked() {
            match self.storage.sync_data() {
                Ok(()) => clear_filled_holes(&self.storage, &state.slots.synced()),
                Err(e) => tracing::warn!(
                    blocks = pending,
                    "cryptfs: syncing a file with unsynced writes on close failed: {e}"
                ),
            }
        }
    }
}

/// Clears the entries of hole slots whose blocks have a durable newer version now
/// (`SlotState::filled_holes`). Those slots are no block's durable version any more,
/// so this follows the two-slot rule; the writes need no sync (a stale hole entry
/// that survives a crash reads as before). Entries cut off the file stay so.
fn clear_filled_holes<S: Storage>(storage: &S, filled_holes: &[(u64, Slot)]) {
    if filled_holes.is_empty() {
        return; // Most syncs: no `fstat` for the size.
    }
    let Ok(size) = storage.size() else {
        return;
    };
    let empty = [0u8; ENTRY_SIZE as usize];
    for &(block, slot) in filled_holes {
        let at = entry_offset(block, slot);
        if at + ENTRY_SIZE <= size {
            if let Err(e) = storage.write_all_at(&empty, at) {
                tracing::warn!(block, "cryptfs: clearing a filled hole's entry failed: {e}");
            }
        }
    }
}

/// Nothing to decrypt with: a file with data but no header.
const NO_HEADER: Error = Error::BadHeader("file has data but no header");
