//! One encrypted file over a [`Storage`]: plaintext reads, writes and truncation at
//! any offset, mapped onto whole authenticated blocks with two slots each.
//!
//! Callers serialise mutation (`&mut self`); reads and syncs may run concurrently
//! (`&self`), but a sync must not overlap a mutation (see [`EncryptedFile::sync`]).

mod recovery;

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::LocalKey;

use pgcmk_crypto::aead::NONCE_LEN;
use pgcmk_crypto::random;

use crate::content::{FileCipher, VolumeKey};
use crate::format::{
    current_entry, data_offset, entry_index, entry_offset, group_of, group_offset, groups_in,
    FileHeader, Slot, SlotEntry, BLOCK_SIZE, ENTRY_SIZE, GROUPS_START, GROUP_BLOCKS, HEADER_LEN,
    MAX_PLAIN_SIZE,
};
use crate::storage::Storage;
use crate::Error;

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
    /// `None` while the backing file is empty: the header is written on first growth.
    cipher: Option<FileCipher>,
    len: u64,
    slots: Mutex<SlotState>,
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
            Some(volume.file_cipher(FileHeader::parse(&header)?.file_id)?)
        };
        let len = plain_len_of(&storage, cipher_len)?;
        Ok(Self {
            storage,
            volume,
            cipher,
            len,
            slots: Mutex::new(SlotState::default()),
        })
    }

    /// Plaintext length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the file holds no plaintext.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The backing store.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Reads up to `size` bytes at `offset` (fewer at end of file).
    pub fn read(&self, offset: u64, size: usize) -> Result<Vec<u8>, Error> {
        let available = self.len.saturating_sub(offset).min(size as u64) as usize;
        let mut out = vec![0u8; available];
        self.read_into(offset, &mut out)?;
        Ok(out)
    }

    /// Reads into `buf` at `offset`, decrypting straight into it; returns the bytes
    /// read (fewer than `buf.len()` only at end of file).
    pub fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<usize, Error> {
        let n = self.len.saturating_sub(offset).min(buf.len() as u64) as usize;
        if n > 0 {
            self.decrypt_range(offset, &mut buf[..n])?;
        }
        Ok(n)
    }

    /// Decrypts the current version of plaintext bytes `start..start + out.len()`
    /// (within the file) into `out`, one group at a time.
    fn decrypt_range(&self, start: u64, out: &mut [u8]) -> Result<(), Error> {
        let end = start + out.len() as u64;
        let mut pos = start;
        while pos < end {
            let group_end = (group_of(pos / BLOCK_SIZE) + 1) * GROUP_BLOCKS * BLOCK_SIZE;
            let to = end.min(group_end);
            let out_at = (pos - start) as usize;
            self.decrypt_in_group(pos, &mut out[out_at..out_at + (to - pos) as usize])?;
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
    fn decrypt_in_group(&self, start: u64, out: &mut [u8]) -> Result<(), Error> {
        let cipher = self.cipher()?;
        let end = start + out.len() as u64;
        let first = start / BLOCK_SIZE;
        let last = (end - 1) / BLOCK_SIZE;
        let meta = read_meta_page(&self.storage, group_of(first))?;
        let mut current = [(Slot::A, SlotEntry::EMPTY); GROUP_BLOCKS as usize];
        for block in first..=last {
            let (a, b) = block_entries(&meta, block);
            let (slot, entry) = current_entry(&a, &b).ok_or(Error::Tampered { block })?;
            if u64::from(entry.plain_len) != self.block_len(block) {
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

    /// Writes `data` at `offset`; a gap past the end of file reads as zeros.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|end| *end <= MAX_PLAIN_SIZE)
            .ok_or(Error::FileTooLarge {
                max: MAX_PLAIN_SIZE,
            })?;
        let result = self.ensure_header().and_then(|()| {
            if offset > self.len {
                // Whole gap blocks first; the gap's last partial block is sealed together
                // with the data, so no intermediate zero-filled version of it exists.
                let block_start = offset / BLOCK_SIZE * BLOCK_SIZE;
                if block_start > self.len {
                    self.write_zeros(self.len, block_start)?;
                }
                let from = self.len.max(block_start);
                let mut padded = vec![0u8; (offset - from) as usize];
                padded.extend_from_slice(data);
                self.write_range(from, &padded)?;
            } else {
                self.write_range(offset, data)?;
            }
            Ok(())
        });
        self.reload_len_after(result.as_ref().err());
        debug_assert!(result.is_err() || self.len >= end);
        result
    }

    /// Truncates or extends (with zeros) to `new_len` plaintext bytes.
    pub fn set_len(&mut self, new_len: u64) -> Result<(), Error> {
        if new_len > MAX_PLAIN_SIZE {
            return Err(Error::FileTooLarge {
                max: MAX_PLAIN_SIZE,
            });
        }
        let result = self.set_len_inner(new_len);
        self.reload_len_after(result.as_ref().err());
        result
    }

    /// Makes every completed write durable (data and size), then forgets which
    /// slots were pending: their versions are now the durable ones.
    ///
    /// Must not overlap a mutation of this file (callers hold a lock that excludes
    /// writers, e.g. a read lock against `&mut` writers): a write racing the sync
    /// could otherwise be taken for durable, and the next write would overwrite the
    /// only durable version of its block.
    pub fn sync(&self) -> Result<(), Error> {
        self.storage.sync_data()?;
        self.slots().synced();
        Ok(())
    }

    /// Like [`EncryptedFile::sync`], and makes the file's metadata durable too.
    pub fn sync_all(&self) -> Result<(), Error> {
        self.storage.sync_all()?;
        self.slots().synced();
        Ok(())
    }

    /// Block numbers whose current version fails authentication, in order.
    pub fn bad_blocks(&self) -> Result<Vec<u64>, Error> {
        let mut bad = Vec::new();
        if self.len == 0 {
            return Ok(bad);
        }
        let blocks = self.len.div_ceil(BLOCK_SIZE);
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

    fn set_len_inner(&mut self, new_len: u64) -> Result<(), Error> {
        if new_len == self.len {
            return Ok(());
        }
        if new_len > self.len {
            self.ensure_header()?;
            return self.write_zeros(self.len, new_len);
        }
        if new_len == 0 {
            // A fresh file id (and key) is chosen on the next write.
            self.storage.set_len(0)?;
            self.cipher = None;
            self.len = 0;
            self.slots().forget();
            return Ok(());
        }
        let block = (new_len - 1) / BLOCK_SIZE;
        let keep = new_len - block * BLOCK_SIZE;
        let old_blocks = self.len.div_ceil(BLOCK_SIZE);
        if keep < self.block_len(block) {
            // Re-seal the new last block at its shorter length (into the slot that
            // does not hold its durable version) before cutting the tail.
            let mut plain = [0u8; BLOCK_SIZE as usize];
            self.read_into(block * BLOCK_SIZE, &mut plain[..keep as usize])?;
            let block_start = block * BLOCK_SIZE;
            self.write_window(block_start, &plain[..keep as usize], Some(new_len))?;
        }
        self.cut_after(Some(block), old_blocks)?;
        self.len = new_len;
        // Made durable at once: slots cut off must not survive a crash, or a later
        // extension (new blocks, generation 1) that is torn could let an older slot
        // of theirs — from before the last sync — become current again.
        self.sync()?;
        self.slots().durable.retain(|&b, _| b <= block);
        Ok(())
    }

    /// Drops blocks `last + 1 .. blocks` (`last = None`: all of them): clears their
    /// entries in `last`'s group and cuts the cipher file at that group's end.
    fn cut_after(&mut self, last: Option<u64>, blocks: u64) -> Result<(), Error> {
        let cleared = match last {
            Some(last) => last + 1..blocks.min((group_of(last) + 1) * GROUP_BLOCKS),
            None => 0..blocks.min(GROUP_BLOCKS),
        };
        let cut_to = cut_point(last);
        if !cleared.is_empty() {
            let zeros = [0u8; (GROUP_BLOCKS * ENTRY_SIZE) as usize];
            let len = ((cleared.end - cleared.start) * ENTRY_SIZE) as usize;
            for slot in [Slot::A, Slot::B] {
                self.storage
                    .write_all_at(&zeros[..len], entry_offset(cleared.start, slot))?;
            }
        }
        if self.storage.size()? > cut_to {
            self.storage.set_len(cut_to)?;
        }
        Ok(())
    }

    fn write_zeros(&mut self, from: u64, to: u64) -> Result<(), Error> {
        let zeros = vec![0u8; (to - from).min(WINDOW_BYTES) as usize];
        let mut pos = from;
        while pos < to {
            let n = (to - pos).min(zeros.len() as u64) as usize;
            self.write_range(pos, &zeros[..n])?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Writes `data` at `offset` (≤ end of file), one group of blocks at a time.
    fn write_range(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let window_end = (pos / WINDOW_BYTES + 1) * WINDOW_BYTES;
            let n = (rest.len() as u64).min(window_end - pos) as usize;
            self.write_window(pos, &rest[..n], None)?;
            pos += n as u64;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Seals every block `data` touches (within one group; merging the old content
    /// of partial blocks) into the slot that does not hold its durable version, then
    /// writes the data pages and the entries, each with as few backing writes as are
    /// contiguous (one each for an append). `new_len` overrides the file length
    /// after the write (truncation re-seals its last block shorter).
    fn write_window(
        &mut self,
        offset: u64,
        data: &[u8],
        new_len: Option<u64>,
    ) -> Result<(), Error> {
        let first = offset / BLOCK_SIZE;
        let last = (offset + data.len() as u64 - 1) / BLOCK_SIZE;
        let pages_len = ((last - first + 1) * BLOCK_SIZE) as usize;
        with_scratch(&SEAL_BUFFER, pages_len, |pages| {
            self.seal_window(offset, data, new_len, pages)
        })
    }

    /// [`EncryptedFile::write_window`] with its buffer (`pages`, one page per block
    /// touched, contents undefined on entry).
    fn seal_window(
        &mut self,
        offset: u64,
        data: &[u8],
        new_len: Option<u64>,
        pages: &mut [u8],
    ) -> Result<(), Error> {
        let end = offset + data.len() as u64;
        let new_len = new_len.unwrap_or(self.len.max(end));
        let first = offset / BLOCK_SIZE;
        let last = (end - 1) / BLOCK_SIZE;
        let count = (last - first + 1) as usize;
        let mut nonces = [0u8; WINDOW_BLOCKS as usize * NONCE_LEN];
        let nonces = &mut nonces[..count * NONCE_LEN];
        random::fill(nonces)?;
        let mut targets = [(Slot::A, SlotEntry::EMPTY); WINDOW_BLOCKS as usize];
        let mut meta = None;
        for ((block, nonce), page) in (first..=last)
            .zip(nonces.chunks_exact(NONCE_LEN))
            .zip(pages.chunks_exact_mut(BLOCK_SIZE as usize))
        {
            let block_start = block * BLOCK_SIZE;
            let plain_len = (new_len - block_start).min(BLOCK_SIZE) as usize;
            let old_len = self.len.saturating_sub(block_start).min(BLOCK_SIZE) as usize;
            let from = (offset.max(block_start) - block_start) as usize;
            let to = (end.min(block_start + BLOCK_SIZE) - block_start) as usize;
            let (slot, generation) = self.target_slot(block, &mut meta)?;
            if old_len > 0 && (from > 0 || to < old_len.min(plain_len)) {
                // The old content of a partial block, decrypted in place.
                let keep = old_len.min(plain_len);
                self.read_into(block_start, &mut page[..keep])?;
            }
            let data_at = (block_start + from as u64 - offset) as usize;
            page[from..to].copy_from_slice(&data[data_at..data_at + (to - from)]);
            // The buffer is reused: a short block's padding must be zeroed here.
            page[plain_len..].fill(0);
            let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("chunks_exact");
            let tag =
                self.cipher()?
                    .seal_in_place(block, generation, &nonce, &mut page[..plain_len])?;
            let entry = SlotEntry {
                generation,
                plain_len: plain_len as u32,
                nonce,
                tag,
            };
            targets[(block - first) as usize] = (slot, entry);
        }
        let targets = &targets[..count];
        for run in slot_runs(targets) {
            let at = data_offset(first + run.start as u64, targets[run.start].0);
            let bytes = &pages[run.start * BLOCK_SIZE as usize..run.end * BLOCK_SIZE as usize];
            self.storage.write_all_at(bytes, at)?;
        }
        let mut entries = [0u8; (WINDOW_BLOCKS * ENTRY_SIZE) as usize];
        for (i, (_, entry)) in targets.iter().enumerate() {
            entries[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize]
                .copy_from_slice(&entry.to_bytes());
        }
        for run in slot_runs(targets) {
            let at = entry_offset(first + run.start as u64, targets[run.start].0);
            let bytes = &entries[run.start * ENTRY_SIZE as usize..run.end * ENTRY_SIZE as usize];
            self.storage.write_all_at(bytes, at)?;
        }
        self.len = new_len;
        Ok(())
    }

    /// Chooses the slot and generation for block `block`'s next version and records
    /// them as pending (before anything is written, so even a failed write counts
    /// as unsynced):
    /// - written since the last sync: the same slot and generation again;
    /// - a new block (past the last): slot A, generation 1 (its entries are empty);
    /// - otherwise the current slot is the durable version: the other slot, at the
    ///   current generation + 1 (remembered from an earlier sync, or read from the
    ///   group's metadata page, once per window: `meta`).
    fn target_slot(
        &self,
        block: u64,
        meta: &mut Option<[u8; BLOCK_SIZE as usize]>,
    ) -> Result<(Slot, u64), Error> {
        let existing = block < self.len.div_ceil(BLOCK_SIZE);
        let known = {
            let mut slots = self.slots();
            if let Some(&pending) = slots.pending.get(&block) {
                return Ok(pending);
            }
            slots.durable.remove(&block).filter(|_| existing)
        };
        let current = match known {
            Some(durable) => Some(durable),
            None if existing => {
                if meta.is_none() {
                    *meta = Some(read_meta_page(&self.storage, group_of(block))?);
                }
                let (a, b) = block_entries(meta.as_ref().expect("just read"), block);
                current_entry(&a, &b).map(|(slot, entry)| (slot, entry.generation))
            }
            None => None,
        };
        let target = match current {
            None => (Slot::A, 1),
            Some((slot, generation)) => (
                slot.other(),
                generation.checked_add(1).ok_or(Error::Tampered { block })?,
            ),
        };
        self.slots().pending.insert(block, target);
        Ok(target)
    }

    fn ensure_header(&mut self) -> Result<(), Error> {
        if self.cipher.is_none() {
            let header = FileHeader {
                file_id: random::array()?,
            };
            self.storage.write_all_at(&header.to_page(), 0)?;
            // The header must be durable before any block written under it, or a
            // crash could keep blocks whose key can no longer be derived.
            self.sync()?;
            self.cipher = Some(self.volume.file_cipher(header.file_id)?);
        }
        Ok(())
    }

    fn cipher(&self) -> Result<&FileCipher, Error> {
        self.cipher
            .as_ref()
            .ok_or(Error::BadHeader("file has data but no header"))
    }

    fn slots(&self) -> MutexGuard<'_, SlotState> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Plaintext bytes in block `block` at the current length.
    fn block_len(&self, block: u64) -> u64 {
        (self.len - block * BLOCK_SIZE).min(BLOCK_SIZE)
    }

    /// After a failed mutation the cached length may be stale: re-derive it; and
    /// trust only the metadata entries on disk for the blocks it touched.
    fn reload_len_after(&mut self, error: Option<&Error>) {
        if error.is_some() {
            let slots = self.slots.get_mut().unwrap_or_else(|p| p.into_inner());
            slots.durable.clear();
            slots.write_failed = true;
            if let Ok(len) = reported_plain_len(&self.storage) {
                self.len = len;
            }
        }
    }
}

impl<S: Storage> Drop for EncryptedFile<S> {
    /// Which slot is pending lives only in memory: a file closed with unsynced
    /// writes is synced first, or a later open would take a pending version for
    /// the durable one and overwrite the real durable version. A file already
    /// unlinked (PostgreSQL's temporary files) cannot be opened again: no sync.
    fn drop(&mut self) {
        let pending = self.slots.get_mut().map_or(0, |s| s.pending.len());
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

/// [`reported_plain_len`] of a cipher file of `cipher_len` bytes.
fn plain_len_of<S: Storage>(storage: &S, cipher_len: u64) -> Result<u64, Error> {
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
