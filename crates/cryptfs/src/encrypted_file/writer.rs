//! Writing blocks: sealing each block a write touches into the slot that does not
//! hold its durable version, then writing data pages and metadata entries.
//!
//! A [`BlockWriter`] works only on blocks its caller has claimed exclusively, so
//! writes to other blocks of the same file may run at the same time.

use pgcmk_crypto::aead::NONCE_LEN;
use pgcmk_crypto::random;

use super::meta_pages::{block_entries, read_meta_page};
use super::reader::{runs_by, slot_runs};
use super::scratch::{with_scratch, SEAL_BUFFER};
use super::{EncryptedFile, WINDOW_BLOCKS, WINDOW_BYTES};
use crate::content::FileCipher;
use crate::format::{
    current_entry, data_offset, entry_offset, group_of, Slot, SlotEntry, BLOCK_SIZE, ENTRY_SIZE,
};
use crate::storage::Storage;
use crate::Error;

/// One write's view of a file, while it holds the blocks it writes.
pub(super) struct BlockWriter<'a, S: Storage> {
    file: &'a EncryptedFile<S>,
    cipher: &'a FileCipher,
    /// The plaintext length as this writer sees it: the file's length when it
    /// claimed its blocks, then the end of what it has written.
    len: u64,
}

impl<'a, S: Storage> BlockWriter<'a, S> {
    /// A writer of `file` (encrypted with `cipher`, `len` bytes long when its
    /// caller claimed the blocks it will write).
    pub(super) fn new(file: &'a EncryptedFile<S>, cipher: &'a FileCipher, len: u64) -> Self {
        Self { file, cipher, len }
    }

    /// Writes `data` at `offset`; a gap past the end reads as zeros.
    pub(super) fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        if offset <= self.len {
            return self.write_range(offset, data);
        }
        // Whole gap blocks first; the gap's last partial block is sealed together
        // with the data, so no intermediate zero-filled version of it exists.
        let block_start = offset / BLOCK_SIZE * BLOCK_SIZE;
        if block_start > self.len {
            self.write_zeros(self.len, block_start)?;
        }
        let from = self.len.max(block_start);
        let mut padded = vec![0u8; (offset - from) as usize];
        padded.extend_from_slice(data);
        self.write_range(from, &padded)
    }

    /// Extends the file with zeros over `from..to` (`from` is the length): the old
    /// last block is re-sealed with its zeros, every block past it becomes a hole —
    /// an entry, no data page — so extending costs 64 bytes per 4 KiB block. Checks
    /// for a stop before every group ([`Error::Stopped`]).
    pub(super) fn write_zeros(&mut self, from: u64, to: u64) -> Result<(), Error> {
        static ZEROS: [u8; WINDOW_BYTES as usize] = [0; WINDOW_BYTES as usize];
        let mut pos = from;
        while pos < to {
            if self.file.stopping() {
                return Err(Error::Stopped);
            }
            let window_end = (pos / WINDOW_BYTES + 1) * WINDOW_BYTES;
            let n = (to.min(window_end) - pos) as usize;
            self.write_window(pos, &ZEROS[..n], None, Content::Zeros)?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Writes `data` at `offset` (≤ the length), one group of blocks at a time.
    fn write_range(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let window_end = (pos / WINDOW_BYTES + 1) * WINDOW_BYTES;
            let n = (rest.len() as u64).min(window_end - pos) as usize;
            self.write_window(pos, &rest[..n], None, Content::Data)?;
            pos += n as u64;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Seals every block `data` touches (within one group; merging the old content
    /// of partial blocks) into the slot that does not hold its durable version, then
    /// writes the data pages and the entries, each with as few backing writes as are
    /// contiguous (one each for an append). `new_len` overrides the length after the
    /// write (truncation re-seals its last block shorter). With [`Content::Zeros`],
    /// blocks past the old end become holes.
    pub(super) fn write_window(
        &mut self,
        offset: u64,
        data: &[u8],
        new_len: Option<u64>,
        content: Content,
    ) -> Result<(), Error> {
        let first = offset / BLOCK_SIZE;
        let last = (offset + data.len() as u64 - 1) / BLOCK_SIZE;
        let pages_len = ((last - first + 1) * BLOCK_SIZE) as usize;
        with_scratch(&SEAL_BUFFER, pages_len, |pages| {
            self.seal_window(offset, data, new_len, content, pages)
        })
    }

    /// [`BlockWriter::write_window`] with its buffer (`pages`, one page per block
    /// touched, contents undefined on entry).
    fn seal_window(
        &mut self,
        offset: u64,
        data: &[u8],
        new_len: Option<u64>,
        content: Content,
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
        let (targets, created) = self.target_slots(first..=last, content)?;
        let mut entries = [(Slot::A, SlotEntry::EMPTY); WINDOW_BLOCKS as usize];
        for (((block, nonce), page), (&(slot, generation), entry)) in (first..=last)
            .zip(nonces.chunks_exact(NONCE_LEN))
            .zip(pages.chunks_exact_mut(BLOCK_SIZE as usize))
            .zip(targets.iter().zip(&mut entries))
        {
            let block_start = block * BLOCK_SIZE;
            let plain_len = (new_len - block_start).min(BLOCK_SIZE) as usize;
            let old_len = self.len.saturating_sub(block_start).min(BLOCK_SIZE) as usize;
            let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("chunks_exact");
            if old_len == 0 && content == Content::Zeros {
                let len = plain_len as u32;
                let tag = self.cipher.seal_hole(block, generation, &nonce, len)?;
                *entry = (slot, SlotEntry::hole(generation, len, nonce, tag));
                continue;
            }
            let from = (offset.max(block_start) - block_start) as usize;
            let to = (end.min(block_start + BLOCK_SIZE) - block_start) as usize;
            if old_len > 0 && (from > 0 || to < old_len.min(plain_len)) {
                // The old content of a partial block, decrypted in place.
                let keep = old_len.min(plain_len);
                self.file
                    .decrypt_range(self.cipher, self.len, block_start, &mut page[..keep])?;
            }
            let data_at = (block_start + from as u64 - offset) as usize;
            page[from..to].copy_from_slice(&data[data_at..data_at + (to - from)]);
            // The buffer is reused: a short block's padding must be zeroed here.
            page[plain_len..].fill(0);
            let tag =
                self.cipher
                    .seal_in_place(block, generation, &nonce, &mut page[..plain_len])?;
            *entry = (
                slot,
                SlotEntry {
                    generation,
                    plain_len: plain_len as u32,
                    hole: false,
                    nonce,
                    tag,
                },
            );
        }
        let entries = &entries[..count];
        let storage = &self.file.storage;
        for run in page_runs(entries).filter(|run| !entries[run.start].1.hole) {
            let at = data_offset(first + run.start as u64, entries[run.start].0);
            let bytes = &pages[run.start * BLOCK_SIZE as usize..run.end * BLOCK_SIZE as usize];
            storage.write_all_at(bytes, at)?;
        }
        if self.file.reserve_rewrite_pages && content == Content::Data {
            self.reserve_rewrite_pages(first, created)?;
        }
        let mut encoded = [0u8; (WINDOW_BLOCKS * ENTRY_SIZE) as usize];
        for (i, (_, entry)) in entries.iter().enumerate() {
            encoded[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize]
                .copy_from_slice(&entry.to_bytes());
        }
        for run in slot_runs(entries) {
            let at = entry_offset(first + run.start as u64, entries[run.start].0);
            let bytes = &encoded[run.start * ENTRY_SIZE as usize..run.end * ENTRY_SIZE as usize];
            storage.write_all_at(bytes, at)?;
        }
        self.len = new_len;
        Ok(())
    }

    /// Writes zeros into the slot-B pages of the blocks this window creates (bit i:
    /// block `first + i`), one backing write per run of adjacent blocks.
    fn reserve_rewrite_pages(&self, first: u64, mut created: u64) -> Result<(), Error> {
        static ZEROS: [u8; WINDOW_BYTES as usize] = [0; WINDOW_BYTES as usize];
        while created != 0 {
            let start = created.trailing_zeros();
            let run = (created >> start).trailing_ones();
            let bytes = &ZEROS[..(u64::from(run) * BLOCK_SIZE) as usize];
            let at = data_offset(first + u64::from(start), Slot::B);
            self.file.storage.write_all_at(bytes, at)?;
            created &= !(((1u64 << run) - 1) << start);
        }
        Ok(())
    }

    /// Chooses the slot and generation of the next version of each block in
    /// `blocks` (one group at most) and records them as pending (before anything is
    /// written, so even a failed write counts as unsynced); also returns which of
    /// them get their first version (bit i: block `first + i`):
    /// - written since the last sync: the same slot and generation again;
    /// - a new block (past the end): slot A, generation 1 (its entries are empty);
    /// - otherwise the current slot is the durable version: the other slot, at the
    ///   current generation + 1 (remembered from an earlier sync, or read from the
    ///   group's metadata page, at most once).
    ///
    /// New blocks that become holes ([`Content::Zeros`]) are not recorded: they have
    /// no durable version to protect, and recording them would cost memory in
    /// proportion to the extension (16 bytes per 4 KiB block).
    fn target_slots(
        &self,
        blocks: std::ops::RangeInclusive<u64>,
        content: Content,
    ) -> Result<([(Slot, u64); WINDOW_BLOCKS as usize], u64), Error> {
        let existing = self.len.div_ceil(BLOCK_SIZE);
        let first = *blocks.start();
        let mut targets = [(Slot::A, 0); WINDOW_BLOCKS as usize];
        // Bit i: block `first + i` is neither pending nor remembered as durable.
        let mut unknown = 0u64;
        let mut created = 0u64;
        {
            let slots = &mut self.file.state().slots;
            for (i, block) in blocks.clone().enumerate() {
                targets[i] = match slots.pending.get(&block) {
                    Some(&pending) => pending,
                    None => match slots.durable.remove(&block).filter(|_| block < existing) {
                        Some(durable) => next_version(block, Some(durable))?,
                        None if block < existing => {
                            unknown |= 1 << i;
                            continue;
                        }
                        None => {
                            created |= 1 << i;
                            next_version(block, None)?
                        }
                    },
                };
            }
        }
        let mut filled_holes = Vec::new();
        if unknown != 0 {
            let meta = read_meta_page(&self.file.storage, group_of(first))?;
            for (i, block) in blocks.clone().enumerate() {
                if unknown & (1 << i) != 0 {
                    let (a, b) = block_entries(&meta, block);
                    let current = current_entry(&a, &b);
                    if let Some((slot, _)) = current.filter(|(_, e)| e.hole) {
                        filled_holes.push((block, slot));
                    }
                    let current = current.map(|(slot, entry)| (slot, entry.generation));
                    targets[i] = next_version(block, current)?;
                }
            }
        }
        let mut state = self.file.state();
        state.slots.filled_holes.extend(filled_holes);
        for (i, (block, target)) in blocks.zip(targets).enumerate() {
            if content == Content::Data || created & (1 << i) == 0 {
                state.slots.pending.insert(block, target);
            }
        }
        Ok((targets, created))
    }
}

/// What a window writes: caller data, or zeros that extend the file (holes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Content {
    Data,
    Zeros,
}

/// Runs of blocks whose data pages are adjacent (same slot) and of one kind (holes
/// have no page to write).
fn page_runs(entries: &[(Slot, SlotEntry)]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    runs_by(entries.len(), |i| (entries[i].0, entries[i].1.hole))
}

/// The slot and generation after `current` (none: a new block).
fn next_version(block: u64, current: Option<(Slot, u64)>) -> Result<(Slot, u64), Error> {
    match current {
        None => Ok((Slot::A, 1)),
        Some((slot, generation)) => Ok((
            slot.other(),
            generation.checked_add(1).ok_or(Error::Tampered { block })?,
        )),
    }
}
