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
    cipher_size, current_slot, pair_offset, slot_offset, whole_pairs, FileHeader, Slot, SlotHeader,
    BLOCK_OVERHEAD, BLOCK_SIZE, HEADER_LEN, MAX_PLAIN_SIZE, PAIR_SIZE, SLOT_HEADER_LEN, SLOT_SIZE,
};
use crate::storage::Storage;
use crate::Error;

pub use recovery::FileRecovery;

/// Blocks whose durable slot is remembered per file (≈ 160 KiB of memory at most),
/// so that rewriting a hot block needs no read of its slot headers.
const DURABLE_SLOTS_CACHED: usize = 4096;

/// Blocks sealed and written per window (128 KiB of plaintext).
const WINDOW_BLOCKS: u64 = 32;
const WINDOW_BYTES: u64 = WINDOW_BLOCKS * BLOCK_SIZE;

/// Where a block's next version goes.
#[derive(Clone, Copy, Debug)]
struct SlotTarget {
    slot: Slot,
    generation: u64,
    /// The pair does not exist yet: write it whole (the other slot empty).
    new_pair: bool,
}

/// What a file knows in memory about its blocks' slots.
#[derive(Default)]
struct SlotState {
    /// Blocks written since the last completed sync, with the slot and generation
    /// their pending version uses; the other slot holds the durable version, which
    /// must not be overwritten until a sync covers the pending one. Bounded by the
    /// unsynced data; emptied by every completed sync.
    pending: HashMap<u64, (Slot, u64)>,
    /// The current (durable) slot and generation of blocks written before the last
    /// completed sync: what their slot headers say, without reading them. Bounded
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
    /// Size of the backing file as last written or read (`None`: unknown, ask the
    /// store), so a write reaching the last block needs no `fstat`.
    backing_len: Option<u64>,
    slots: Mutex<SlotState>,
}

impl<S: Storage> EncryptedFile<S> {
    /// Opens `storage`, reading its header and the last block's slot headers.
    ///
    /// A damaged tail (a partial pair, or a last pair without a current slot) does
    /// not fail the open: reads of the damaged block fail instead, so the intact part
    /// stays readable.
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
        let len = reported_plain_len(&storage)?;
        Ok(Self {
            storage,
            volume,
            cipher,
            len,
            backing_len: Some(cipher_len),
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
    /// (within the file) into `out`. Whole blocks are opened straight into `out`,
    /// the partial ones at either end through a block on the stack. No fallback: a
    /// current slot that fails authentication is an error, even if the other slot
    /// would pass.
    fn decrypt_range(&self, start: u64, out: &mut [u8]) -> Result<(), Error> {
        let cipher = self.cipher()?;
        let end = start + out.len() as u64;
        let first = start / BLOCK_SIZE;
        let last = (end - 1) / BLOCK_SIZE;
        let pairs_at = pair_offset(first);
        let pairs_len = (pair_offset(last + 1) - pairs_at) as usize;
        with_scratch(&READ_BUFFER, pairs_len, |pairs| {
            self.storage
                .read_exact_at(pairs, pairs_at)
                .map_err(|e| eof_is_tamper(e, last))?;
            let mut partial = [0u8; BLOCK_SIZE as usize];
            for (block, pair) in (first..=last).zip(pairs.chunks_exact(PAIR_SIZE as usize)) {
                let (a, b) = pair_headers(pair);
                let slot = current_slot(&a, &b).ok_or(Error::Tampered { block })?;
                let header = if slot == Slot::A { a } else { b };
                let block_start = block * BLOCK_SIZE;
                let plain_len = self.block_len(block);
                if u64::from(header.plain_len) != plain_len {
                    return Err(Error::Tampered { block });
                }
                let from = start.max(block_start);
                let to = end.min(block_start + plain_len);
                let out_at = (from - start) as usize;
                let out_range = out_at..out_at + (to - from) as usize;
                if from == block_start && to == block_start + plain_len {
                    open_slot(
                        cipher,
                        block,
                        slot_bytes(pair, slot),
                        &header,
                        &mut out[out_range],
                    )?;
                } else {
                    let plain = &mut partial[..plain_len as usize];
                    open_slot(cipher, block, slot_bytes(pair, slot), &header, plain)?;
                    out[out_range].copy_from_slice(
                        &plain[(from - block_start) as usize..(to - block_start) as usize],
                    );
                }
            }
            Ok(())
        })
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
            self.fix_tail_after_write(end)
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
            self.write_zeros(self.len, new_len)?;
            return self.fix_tail_after_write(new_len);
        }
        if new_len == 0 {
            // A fresh file id (and key) is chosen on the next write.
            self.storage.set_len(0)?;
            self.backing_len = Some(0);
            self.cipher = None;
            self.len = 0;
            self.slots().forget();
            return Ok(());
        }
        let block = (new_len - 1) / BLOCK_SIZE;
        let keep = new_len - block * BLOCK_SIZE;
        if keep < self.block_len(block) {
            // Re-seal the new last block at its shorter length (into the slot that
            // does not hold its durable version) before cutting the tail.
            let mut slot = [0u8; SLOT_SIZE as usize];
            let plain_at = (SLOT_HEADER_LEN as usize) + NONCE_LEN;
            self.read_into(
                block * BLOCK_SIZE,
                &mut slot[plain_at..plain_at + keep as usize],
            )?;
            let target = self.target_slot(block)?;
            let nonce: [u8; NONCE_LEN] = random::array()?;
            self.seal_slot(&mut slot, block, &target, keep as usize, &nonce)?;
            self.storage
                .write_all_at(&slot, slot_offset(block, target.slot))?;
        }
        self.storage.set_len(cipher_size(new_len))?;
        self.backing_len = Some(cipher_size(new_len));
        self.len = new_len;
        // Made durable at once: pairs cut off must not survive a crash, or a later
        // extension (written as new pairs, generation 1) that is torn could let an
        // older slot of theirs — from before the last sync — become current again.
        self.sync()?;
        self.slots().durable.retain(|&b, _| b <= block);
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

    /// Writes `data` at `offset` (≤ end of file), one window of blocks at a time.
    fn write_range(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let window_end = (pos / WINDOW_BYTES + 1) * WINDOW_BYTES;
            let n = (rest.len() as u64).min(window_end - pos) as usize;
            self.write_window(pos, &rest[..n])?;
            pos += n as u64;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Seals every block `data` touches (merging old content of partial blocks) into
    /// the slot that does not hold its durable version, and writes those slots —
    /// whole pairs for new blocks — with as few backing writes as are contiguous
    /// (one for an append). Plaintext is assembled in the output buffer and
    /// encrypted in place.
    fn write_window(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let end = offset + data.len() as u64;
        let first = offset / BLOCK_SIZE;
        let last = (end - 1) / BLOCK_SIZE;
        let pairs_len = ((last - first + 1) * PAIR_SIZE) as usize;
        with_scratch(&SEAL_BUFFER, pairs_len, |pairs| {
            self.seal_window(offset, data, pairs)
        })
    }

    /// [`EncryptedFile::write_window`] with its buffer (`pairs`, one pair per block
    /// touched, contents undefined on entry).
    fn seal_window(&mut self, offset: u64, data: &[u8], pairs: &mut [u8]) -> Result<(), Error> {
        let end = offset + data.len() as u64;
        let new_len = self.len.max(end);
        let first = offset / BLOCK_SIZE;
        let last = (end - 1) / BLOCK_SIZE;
        let base = pair_offset(first);
        let mut nonces = [0u8; WINDOW_BLOCKS as usize * NONCE_LEN];
        let nonces = &mut nonces[..(last - first + 1) as usize * NONCE_LEN];
        random::fill(nonces)?;
        // Byte ranges of `pairs` to write, merged when adjacent.
        let mut ranges: Vec<(usize, usize)> = Vec::with_capacity(WINDOW_BLOCKS as usize);
        for (block, nonce) in (first..=last).zip(nonces.chunks_exact(NONCE_LEN)) {
            let block_start = block * BLOCK_SIZE;
            let plain_len = (new_len - block_start).min(BLOCK_SIZE) as usize;
            let old_len = self.len.saturating_sub(block_start).min(BLOCK_SIZE) as usize;
            let from = (offset.max(block_start) - block_start) as usize;
            let to = (end.min(block_start + BLOCK_SIZE) - block_start) as usize;
            let pair_at = ((block - first) * PAIR_SIZE) as usize;
            let plain_at = SLOT_HEADER_LEN as usize + NONCE_LEN;
            let target = self.target_slot(block)?;
            let slot_at = pair_at + target.slot.offset_in_pair() as usize;
            let slot = &mut pairs[slot_at..slot_at + SLOT_SIZE as usize];
            if old_len > 0 && (from > 0 || to < old_len) {
                // The old content of a partial block, decrypted in place.
                self.read_into(block_start, &mut slot[plain_at..plain_at + old_len])?;
            }
            let data_at = (block_start + from as u64 - offset) as usize;
            slot[plain_at + from..plain_at + to]
                .copy_from_slice(&data[data_at..data_at + (to - from)]);
            let nonce: &[u8; NONCE_LEN] = nonce.try_into().expect("chunks_exact");
            self.seal_slot(slot, block, &target, plain_len, nonce)?;
            let range = if target.new_pair {
                // Slot B of a new pair is empty: all zeros.
                pairs[slot_at + SLOT_SIZE as usize..pair_at + PAIR_SIZE as usize].fill(0);
                (pair_at, pair_at + PAIR_SIZE as usize)
            } else {
                (slot_at, slot_at + SLOT_SIZE as usize)
            };
            match ranges.last_mut() {
                Some(previous) if previous.1 == range.0 => previous.1 = range.1,
                _ => ranges.push(range),
            }
        }
        for (from, to) in ranges {
            let at = base + from as u64;
            self.storage.write_all_at(&pairs[from..to], at)?;
            self.backing_len = self.backing_len.map(|len| len.max(at + (to - from) as u64));
        }
        self.len = new_len;
        Ok(())
    }

    /// Chooses the slot for block `block`'s next version and records it as pending
    /// (before anything is written, so even a failed write counts as unsynced):
    /// - written since the last sync: the same slot and generation again;
    /// - a new block: slot A, generation 1, the pair written whole;
    /// - otherwise the current slot is the durable version: the other slot, at the
    ///   current generation + 1 (remembered from an earlier sync, or read from the
    ///   two 12-byte slot headers).
    fn target_slot(&self, block: u64) -> Result<SlotTarget, Error> {
        let existing = block < self.len.div_ceil(BLOCK_SIZE);
        let known = {
            let mut slots = self.slots();
            if let Some(&(slot, generation)) = slots.pending.get(&block) {
                return Ok(SlotTarget {
                    slot,
                    generation,
                    new_pair: false,
                });
            }
            slots.durable.remove(&block).filter(|_| existing)
        };
        let headers = match known {
            Some((slot, generation)) => {
                let header = SlotHeader {
                    generation,
                    plain_len: 0,
                };
                let empty = SlotHeader {
                    generation: 0,
                    plain_len: 0,
                };
                Some(if slot == Slot::A {
                    (header, empty)
                } else {
                    (empty, header)
                })
            }
            None if existing => read_slot_headers(&self.storage, block)?,
            None => None,
        };
        let target = match headers {
            None => SlotTarget {
                slot: Slot::A,
                generation: 1,
                new_pair: true,
            },
            Some((a, b)) => match current_slot(&a, &b) {
                None => SlotTarget {
                    slot: Slot::A,
                    generation: 1,
                    new_pair: false,
                },
                Some(current) => {
                    let header = if current == Slot::A { a } else { b };
                    SlotTarget {
                        slot: current.other(),
                        generation: header
                            .generation
                            .checked_add(1)
                            .ok_or(Error::Tampered { block })?,
                        new_pair: false,
                    }
                }
            },
        };
        self.slots()
            .pending
            .insert(block, (target.slot, target.generation));
        Ok(target)
    }

    /// Fills in the slot header and seals in place: `slot` holds the plaintext of
    /// `plain_len` bytes after the header and nonce.
    fn seal_slot(
        &self,
        slot: &mut [u8],
        block: u64,
        target: &SlotTarget,
        plain_len: usize,
        nonce: &[u8; NONCE_LEN],
    ) -> Result<(), Error> {
        let header = SlotHeader {
            generation: target.generation,
            plain_len: plain_len as u32,
        };
        slot[..SLOT_HEADER_LEN as usize].copy_from_slice(&header.to_bytes());
        let sealed_end = SLOT_HEADER_LEN as usize + plain_len + BLOCK_OVERHEAD as usize;
        // The buffer is reused: the padding of a short block must be zeroed here.
        slot[sealed_end..].fill(0);
        self.cipher()?.seal_in_place(
            block,
            target.generation,
            nonce,
            &mut slot[SLOT_HEADER_LEN as usize..sealed_end],
        )
    }

    /// A write reaching the last block must leave the backing size exactly right:
    /// after a crash the file may carry a torn tail longer than its last pair.
    fn fix_tail_after_write(&mut self, end: u64) -> Result<(), Error> {
        if end.div_ceil(BLOCK_SIZE) < self.len.div_ceil(BLOCK_SIZE) {
            return Ok(());
        }
        let expected = cipher_size(self.len);
        let backing_len = match self.backing_len {
            Some(len) => len,
            None => self.storage.size()?,
        };
        if backing_len != expected {
            self.storage.set_len(expected)?;
        }
        self.backing_len = Some(expected);
        Ok(())
    }

    fn ensure_header(&mut self) -> Result<(), Error> {
        if self.cipher.is_none() {
            let header = FileHeader {
                file_id: random::array()?,
            };
            self.storage.write_all_at(&header.to_bytes(), 0)?;
            self.backing_len = self.backing_len.map(|len| len.max(HEADER_LEN));
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
    /// trust only the slot headers on disk for the blocks it touched.
    fn reload_len_after(&mut self, error: Option<&Error>) {
        if error.is_some() {
            let slots = self.slots.get_mut().unwrap_or_else(|p| p.into_inner());
            slots.durable.clear();
            slots.write_failed = true;
            self.backing_len = None;
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
    /// Per request thread: the pairs a read decrypts from, and the pairs a write
    /// seals into (separate, as a write reads the partial blocks it touches).
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

/// The plaintext size of the encrypted file in `storage`, read from its size and its
/// last pair's slot headers: `(pairs − 1) · 4096 + length in the last block's
/// current slot`. For a damaged tail (a partial pair, or a last pair without a
/// plausible current slot) one byte into the damaged block, so reads of it fail
/// loudly instead of the file silently looking shorter.
pub fn reported_plain_len<S: Storage>(storage: &S) -> Result<u64, Error> {
    let cipher_len = storage.size()?;
    if cipher_len <= HEADER_LEN {
        return Ok(0);
    }
    let (pairs, partial) = whole_pairs(cipher_len);
    if partial {
        return Ok(pairs * BLOCK_SIZE + 1);
    }
    let last = pairs - 1;
    let last_len = read_slot_headers(storage, last)?
        .and_then(|(a, b)| {
            let slot = current_slot(&a, &b)?;
            Some(if slot == Slot::A { a } else { b }.plain_len)
        })
        .filter(|len| (1..=BLOCK_SIZE).contains(&u64::from(*len)));
    Ok(last * BLOCK_SIZE + last_len.map_or(1, u64::from))
}

/// The two slot headers of block `block`; `None` when the pair lies past the end.
fn read_slot_headers<S: Storage>(
    storage: &S,
    block: u64,
) -> Result<Option<(SlotHeader, SlotHeader)>, Error> {
    let mut headers = [0u8; (SLOT_SIZE + SLOT_HEADER_LEN) as usize];
    match storage.read_exact_at(&mut headers, pair_offset(block)) {
        Ok(()) => Ok(Some((
            SlotHeader::parse(&headers),
            SlotHeader::parse(&headers[SLOT_SIZE as usize..]),
        ))),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The headers of both slots of one pair (`pair` = `PAIR_SIZE` bytes).
fn pair_headers(pair: &[u8]) -> (SlotHeader, SlotHeader) {
    (
        SlotHeader::parse(pair),
        SlotHeader::parse(&pair[SLOT_SIZE as usize..]),
    )
}

/// The bytes of one slot of a pair.
fn slot_bytes(pair: &[u8], slot: Slot) -> &[u8] {
    let at = slot.offset_in_pair() as usize;
    &pair[at..at + SLOT_SIZE as usize]
}

/// Authenticates and decrypts one slot (whose header is `header`) into `out`
/// (exactly `header.plain_len` bytes).
fn open_slot(
    cipher: &FileCipher,
    block: u64,
    slot: &[u8],
    header: &SlotHeader,
    out: &mut [u8],
) -> Result<(), Error> {
    let plain_len = header.plain_len as usize;
    if header.is_empty()
        || plain_len == 0
        || plain_len as u64 > BLOCK_SIZE
        || out.len() != plain_len
    {
        return Err(Error::Tampered { block });
    }
    let sealed = &slot
        [SLOT_HEADER_LEN as usize..SLOT_HEADER_LEN as usize + plain_len + BLOCK_OVERHEAD as usize];
    cipher.open(block, header.generation, sealed, out)
}

/// A backing file shorter than its size implies means a truncated block.
fn eof_is_tamper(error: io::Error, block: u64) -> Error {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        Error::Tampered { block }
    } else {
        Error::Io(error)
    }
}
