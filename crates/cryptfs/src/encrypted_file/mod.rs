//! One encrypted file over a [`Storage`]: plaintext reads, writes and truncation at
//! any offset, mapped onto whole authenticated blocks with two slots each.
//!
//! Every method takes `&self`: operations claim the blocks they touch (see
//! [`claims`]), so reads share blocks, writes of different blocks run in parallel,
//! and truncation and syncs wait for the writes in flight.

mod claims;
mod recovery;
mod writer;

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::LocalKey;

use pgcmk_crypto::random;

use crate::content::{FileCipher, VolumeKey};
use crate::format::{
    current_entry, data_offset, entry_index, entry_offset, group_of, group_offset, groups_in,
    FileHeader, Slot, SlotEntry, BLOCK_SIZE, ENTRY_SIZE, GROUPS_START, GROUP_BLOCKS, HEADER_LEN,
    MAX_PLAIN_SIZE,
};
use crate::storage::Storage;
use crate::Error;
use claims::{BlockClaims, WHOLE_FILE};
use writer::BlockWriter;

pub use recovery::FileRecovery;

/// Blocks whose durable slot is remembered per file (≈ 160 KiB of memory at most),
/// so that rewriting a hot block needs no read of its group's metadata page.
const DURABLE_SLOTS_CACHED: usize = 4096;

/// How far ahead (in groups, 128 KiB of plaintext each) sequential reads prefetch.
const PREFETCH_GROUPS: u64 = 16;

/// Reads of at least this many blocks (64 KiB) count as sequential.
const SEQUENTIAL_BLOCKS: u64 = 16;

/// Blocks sealed and written per window: one group (128 KiB of plaintext).
const WINDOW_BLOCKS: u64 = GROUP_BLOCKS;
const WINDOW_BYTES: u64 = WINDOW_BLOCKS * BLOCK_SIZE;

/// What a file knows in memory about its blocks' slots.
#[derive(Default)]
struct SlotState {
    /// Blocks written since the last completed sync, with the slot and generation
    /// their pending version uses; the other slot holds the durable version, which
    /// must not be overwritten until a sync covers the pending one. Bounded by the
    /// unsynced data; emptied by every completed sync.
    pending: HashMap<u64, (Slot, u64)>,
    /// The current (durable) slot and generation of blocks written before the last
    /// completed sync: what their metadata entries say, without reading them. Bounded
    /// (cleared when full); only ever filled from `pending` at a completed sync.
    durable: HashMap<u64, (Slot, u64)>,
    /// A write failed since the last sync: a pending slot may not hold what was
    /// meant for it, so the next sync must not vouch for it.
    write_failed: bool,
}

impl SlotState {
    /// A sync completed: every pending version is now the durable one.
    fn synced(&mut self) {
        if self.durable.len() + self.pending.len() > DURABLE_SLOTS_CACHED {
            self.durable.clear();
        }
        let pending = std::mem::take(&mut self.pending);
        if !std::mem::take(&mut self.write_failed) && pending.len() <= DURABLE_SLOTS_CACHED {
            self.durable.extend(pending);
        }
    }

    fn forget(&mut self) {
        self.pending.clear();
        self.durable.clear();
    }
}

/// A plaintext view of one encrypted backing file.
pub struct EncryptedFile<S: Storage> {
    storage: S,
    volume: Arc<VolumeKey>,
    state: Mutex<FileState>,
    /// Signalled whenever a claim is released.
    released: Condvar,
    /// Write a new block's slot-B page (zeros) together with its first version; see
    /// [`EncryptedFile::reserving_rewrite_pages`].
    reserve_rewrite_pages: bool,
}

struct FileState {
    /// Plaintext length, including writes in flight: a write that extends the file
    /// claims every block from the old end to its own, so nobody reads them early.
    len: u64,
    /// `None` while the backing file is empty: the header is written on first growth.
    cipher: Option<Arc<FileCipher>>,
    slots: SlotState,
    claims: BlockClaims,
}

/// Blocks held by one operation until dropped.
struct Claimed<'a, S: Storage> {
    file: &'a EncryptedFile<S>,
    id: u64,
}

impl<S: Storage> Drop for Claimed<'_, S> {
    fn drop(&mut self) {
        self.file.state().claims.release(self.id);
        self.file.released.notify_all();
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
            Some(Arc::new(
                volume.file_cipher(FileHeader::parse(&header)?.file_id)?,
            ))
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
            }),
            released: Condvar::new(),
            reserve_rewrite_pages: false,
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
            self.cipher_or_header(cipher)
                .and_then(|cipher| BlockWriter::new(self, &cipher, len).write_zeros(len, new_len))
        } else {
            self.truncate_claimed(cipher, len, new_len)
        };
        if result.is_ok() {
            self.state().len = new_len;
        }
        self.finish(claim, result)
    }

    /// Shortens the file from `len` to `new_len` bytes (whole file claimed).
    fn truncate_claimed(
        &self,
        cipher: Option<Arc<FileCipher>>,
        len: u64,
        new_len: u64,
    ) -> Result<(), Error> {
        if new_len == 0 {
            // A fresh file id (and key) is chosen on the next write.
            self.storage.set_len(0)?;
            let mut state = self.state();
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

    /// The file's cipher, or, for an empty file, a new header (written and synced)
    /// and its cipher. Called with the whole file claimed when `cipher` is `None`.
    fn cipher_or_header(&self, cipher: Option<Arc<FileCipher>>) -> Result<Arc<FileCipher>, Error> {
        if let Some(cipher) = cipher {
            return Ok(cipher);
        }
        let header = FileHeader {
            file_id: random::array()?,
        };
        self.storage.write_all_at(&header.to_page(), 0)?;
        // The header must be durable before any block written under it, or a
        // crash could keep blocks whose key can no longer be derived.
        self.sync_claimed(Storage::sync_data)?;
        let cipher = Arc::new(self.volume.file_cipher(header.file_id)?);
        self.state().cipher = Some(cipher.clone());
        Ok(cipher)
    }

    /// Syncs with `sync`; the caller holds a claim that excludes writers.
    fn sync_claimed(&self, sync: impl FnOnce(&S) -> io::Result<()>) -> Result<(), Error> {
        sync(&self.storage)?;
        self.state().slots.synced();
        Ok(())
    }

    fn state(&self) -> MutexGuard<'_, FileState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decrypts the current version of plaintext bytes `start..start + out.len()`
    /// (within the file) into `out`, one group at a time.
    /// `len` is the file's length, `cipher` its cipher; the caller holds the blocks.
    fn decrypt_range(
        &self,
        cipher: &FileCipher,
        len: u64,
        start: u64,
        out: &mut [u8],
    ) -> Result<(), Error> {
        let end = start + out.len() as u64;
        let mut pos = start;
        while pos < end {
            let group_end = (group_of(pos / BLOCK_SIZE) + 1) * GROUP_BLOCKS * BLOCK_SIZE;
            let to = end.min(group_end);
            let out_at = (pos - start) as usize;
            self.decrypt_in_group(
                cipher,
                len,
                pos,
                &mut out[out_at..out_at + (to - pos) as usize],
            )?;
            pos = to;
        }
        Ok(())
    }

    /// [`EncryptedFile::decrypt_range`] within one group: reads the metadata page,
    /// then the current slots' data pages (one read per run of blocks whose current
    /// slots are adjacent), and opens them into `out` — whole blocks straight into
    /// it, the partial ones at either end through a block on the stack. No fallback:
    /// a current slot that fails authentication is an error, even if the other slot
    /// would pass.
    fn decrypt_in_group(
        &self,
        cipher: &FileCipher,
        len: u64,
        start: u64,
        out: &mut [u8],
    ) -> Result<(), Error> {
        let end = start + out.len() as u64;
        let first = start / BLOCK_SIZE;
        let last = (end - 1) / BLOCK_SIZE;
        let meta = self.read_meta_page_overlapped(first..=last)?;
        let mut current = [(Slot::A, SlotEntry::EMPTY); GROUP_BLOCKS as usize];
        for block in first..=last {
            let (a, b) = block_entries(&meta, block);
            let (slot, entry) = current_entry(&a, &b).ok_or(Error::Tampered { block })?;
            if u64::from(entry.plain_len) != block_len(len, block) {
                return Err(Error::Tampered { block });
            }
            current[(block - first) as usize] = (slot, entry);
        }
        let current = &current[..(last - first + 1) as usize];
        if last % GROUP_BLOCKS == GROUP_BLOCKS - 1 && last - first + 1 >= SEQUENTIAL_BLOCKS {
            // A large read to the end of a group: the kernel sends large reads once
            // its readahead has seen a sequential reader (a random 8 KiB read that
            // only happens to end a group must not fetch 2 MiB).
            for ahead in 1..=PREFETCH_GROUPS {
                self.prefetch_group(group_of(last) + ahead, current[current.len() - 1].0);
            }
        }
        let mut partial = [0u8; BLOCK_SIZE as usize];
        with_scratch(&READ_BUFFER, current.len() * BLOCK_SIZE as usize, |pages| {
            for run in slot_runs(current) {
                let run_first = first + run.start as u64;
                let run_last = first + run.end as u64 - 1;
                // Up to the last ciphertext byte: a short block's padding may be
                // missing after a crash, and is not part of the format.
                let last_len = current[run.end - 1].1.plain_len as usize;
                let read_len = (run.len() - 1) * BLOCK_SIZE as usize + last_len;
                self.storage
                    .read_exact_at(
                        &mut pages[..read_len],
                        data_offset(run_first, current[run.start].0),
                    )
                    .map_err(|e| eof_is_tamper(e, run_last))?;
                let pages = &pages[..run.len() * BLOCK_SIZE as usize];
                for (block, page) in
                    (run_first..=run_last).zip(pages.chunks_exact(BLOCK_SIZE as usize))
                {
                    let entry = &current[(block - first) as usize].1;
                    let block_start = block * BLOCK_SIZE;
                    let plain_len = u64::from(entry.plain_len);
                    let ciphertext = &page[..plain_len as usize];
                    let from = start.max(block_start);
                    let to = end.min(block_start + plain_len);
                    let out_at = (from - start) as usize;
                    let out_range = out_at..out_at + (to - from) as usize;
                    if from == block_start && to == block_start + plain_len {
                        cipher.open(block, entry, ciphertext, &mut out[out_range])?;
                    } else {
                        let plain = &mut partial[..plain_len as usize];
                        cipher.open(block, entry, ciphertext, plain)?;
                        out[out_range].copy_from_slice(
                            &plain[(from - block_start) as usize..(to - block_start) as usize],
                        );
                    }
                }
            }
            Ok(())
        })
    }

    /// The metadata page of `blocks`' group (one group). If it is not in the page
    /// cache, the blocks' data pages probably are not either: their reads (both
    /// slots, as which is current is in the page still to come) start before the
    /// page's, so a cold read waits for one disk read instead of two in a row.
    fn read_meta_page_overlapped(
        &self,
        blocks: std::ops::RangeInclusive<u64>,
    ) -> Result<[u8; BLOCK_SIZE as usize], Error> {
        let (first, last) = (*blocks.start(), *blocks.end());
        let mut page = [0u8; BLOCK_SIZE as usize];
        if self
            .storage
            .read_cached_at(&mut page, group_offset(group_of(first)))?
        {
            return Ok(page);
        }
        let len = (last - first + 1) * BLOCK_SIZE;
        for slot in [Slot::A, Slot::B] {
            self.storage.prefetch(data_offset(first, slot), len);
        }
        read_meta_page(&self.storage, group_of(first))
    }

    /// Asks the store to read ahead group `group`'s metadata page and its run of
    /// `slot` data pages (the slot the previous group's reads used): the kernel's
    /// own readahead is off, as it would also read the holes of unused slots.
    fn prefetch_group(&self, group: u64, slot: Slot) {
        let meta = group_offset(group);
        let run = data_offset(group * GROUP_BLOCKS, slot);
        let run_len = GROUP_BLOCKS * BLOCK_SIZE;
        if slot == Slot::A {
            self.storage.prefetch(meta, run + run_len - meta);
        } else {
            self.storage.prefetch(meta, BLOCK_SIZE);
            self.storage.prefetch(run, run_len);
        }
    }
}

impl<S: Storage> Drop for EncryptedFile<S> {
    /// Which slot is pending lives only in memory: a file closed with unsynced
    /// writes is synced first, or a later open would take a pending version for
    /// the durable one and overwrite the real durable version. A file already
    /// unlinked (PostgreSQL's temporary files) cannot be opened again: no sync.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        let pending = state.slots.pending.len();
        if pending > 0 && !self.storage.is_unlinked() {
            if let Err(e) = self.storage.sync_data() {
                tracing::warn!(
                    blocks = pending,
                    "cryptfs: syncing a file with unsynced writes on close failed: {e}"
                );
            }
        }
    }
}

thread_local! {
    /// Per request thread: the data pages a read decrypts from, and the pages a
    /// write seals into (separate, as a write reads the partial blocks it touches).
    /// Reused without zeroing, so a request allocates nothing.
    static READ_BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    static SEAL_BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on `len` bytes of this thread's `buffer` (contents undefined).
fn with_scratch<T>(
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

/// The plaintext size of the encrypted file in `storage`: `4096 · last + length in
/// the last block's current slot`, where the last block is the highest one with a
/// non-empty entry (found in the last group that has one). For a last block without
/// a plausible current slot, one byte into it, so reads of it fail loudly instead of
/// the file silently looking shorter.
pub fn reported_plain_len<S: Storage>(storage: &S) -> Result<u64, Error> {
    plain_len_of(storage, storage.size()?)
}

/// [`reported_plain_len`] of a cipher file of `cipher_len` bytes (for a caller that
/// has its size already).
pub fn plain_len_of<S: Storage>(storage: &S, cipher_len: u64) -> Result<u64, Error> {
    if cipher_len <= HEADER_LEN {
        return Ok(0);
    }
    for group in (0..groups_in(cipher_len)).rev() {
        let meta = read_meta_page(storage, group)?;
        let Some(last) = last_block_in(&meta, group) else {
            continue;
        };
        let (a, b) = block_entries(&meta, last);
        let last_len = current_entry(&a, &b)
            .map(|(_, entry)| entry.plain_len)
            .filter(|len| (1..=BLOCK_SIZE).contains(&u64::from(*len)));
        return Ok(last * BLOCK_SIZE + last_len.map_or(1, u64::from));
    }
    Ok(0)
}

/// Where a cipher file whose last block is `last` (`None`: no block) ends at most:
/// the end of that block's group (the header page alone).
fn cut_point(last: Option<u64>) -> u64 {
    last.map_or(GROUPS_START, |last| group_offset(group_of(last) + 1))
}

/// The highest block of group `group` with a non-empty entry in either slot.
fn last_block_in(meta: &[u8; BLOCK_SIZE as usize], group: u64) -> Option<u64> {
    (group * GROUP_BLOCKS..(group + 1) * GROUP_BLOCKS)
        .rev()
        .find(|&block| {
            let (a, b) = block_entries(meta, block);
            !a.is_empty() || !b.is_empty()
        })
}

/// The metadata page of group `group`; bytes past the end of the cipher file read
/// as zeros (empty entries).
fn read_meta_page<S: Storage>(storage: &S, group: u64) -> Result<[u8; BLOCK_SIZE as usize], Error> {
    let mut page = [0u8; BLOCK_SIZE as usize];
    read_zero_padded(storage, &mut page, group_offset(group))?;
    Ok(page)
}

/// Reads `buf.len()` bytes at `offset`; what lies past the end of the store reads
/// as zeros.
fn read_zero_padded<S: Storage>(storage: &S, buf: &mut [u8], offset: u64) -> Result<(), Error> {
    match storage.read_exact_at(buf, offset) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            let present = storage.size()?.saturating_sub(offset).min(buf.len() as u64) as usize;
            buf[present..].fill(0);
            Ok(storage.read_exact_at(&mut buf[..present], offset)?)
        }
        other => Ok(other?),
    }
}

/// Both slots' entries of block `block`, from its group's metadata page.
fn block_entries(meta: &[u8; BLOCK_SIZE as usize], block: u64) -> (SlotEntry, SlotEntry) {
    let entry = |slot| SlotEntry::parse(&meta[entry_index(block, slot)..]);
    (entry(Slot::A), entry(Slot::B))
}

/// Index ranges of maximal runs of blocks with the same slot: blocks whose pages
/// (and entries) are adjacent in the cipher file. No allocation: it runs per request.
fn slot_runs<T>(blocks: &[(Slot, T)]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        let slot = blocks.get(start)?.0;
        let len = blocks[start..]
            .iter()
            .take_while(|(s, _)| *s == slot)
            .count();
        start += len;
        Some(start - len..start)
    })
}

/// A cipher file shorter than its entries imply means a truncated block.
fn eof_is_tamper(error: io::Error, block: u64) -> Error {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        Error::Tampered { block }
    } else {
        Error::Io(error)
    }
}

/// Nothing to decrypt with: a file with data but no header.
const NO_HEADER: Error = Error::BadHeader("file has data but no header");

/// Blocks holding plaintext bytes `offset..offset + len`.
fn blocks_of(offset: u64, len: u64) -> Range<u64> {
    if len == 0 {
        0..0
    } else {
        offset / BLOCK_SIZE..(offset + len - 1) / BLOCK_SIZE + 1
    }
}

/// Plaintext bytes in block `block` of a file of `len` bytes.
fn block_len(len: u64, block: u64) -> u64 {
    (len - block * BLOCK_SIZE).min(BLOCK_SIZE)
}

/// Drops blocks `last + 1 .. blocks` (`last = None`: all of them): clears their
/// entries in `last`'s group and cuts the cipher file at that group's end.
fn cut_after<S: Storage>(storage: &S, last: Option<u64>, blocks: u64) -> Result<(), Error> {
    let cleared = match last {
        Some(last) => last + 1..blocks.min((group_of(last) + 1) * GROUP_BLOCKS),
        None => 0..blocks.min(GROUP_BLOCKS),
    };
    let cut_to = cut_point(last);
    if !cleared.is_empty() {
        let zeros = [0u8; (GROUP_BLOCKS * ENTRY_SIZE) as usize];
        let len = ((cleared.end - cleared.start) * ENTRY_SIZE) as usize;
        for slot in [Slot::A, Slot::B] {
            storage.write_all_at(&zeros[..len], entry_offset(cleared.start, slot))?;
        }
    }
    if storage.size()? > cut_to {
        storage.set_len(cut_to)?;
    }
    Ok(())
}
