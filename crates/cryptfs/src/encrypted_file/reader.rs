//! The read path: the current slots of a range of blocks, read in runs and
//! opened straight into the caller's buffer, with readahead for sequential readers.

use std::io;

use super::meta_pages::{block_entries, block_len, read_meta_page};
use super::scratch::{with_scratch, READ_BUFFER};
use super::EncryptedFile;
use crate::content::FileCipher;
use crate::format::{
    current_entry, data_offset, group_of, group_offset, Slot, SlotEntry, BLOCK_SIZE, GROUP_BLOCKS,
};
use crate::storage::Storage;
use crate::Error;

/// How far ahead (in groups, 128 KiB of plaintext each) sequential reads prefetch.
const PREFETCH_GROUPS: u64 = 16;

/// Reads of at least this many blocks (64 KiB) count as sequential.
const SEQUENTIAL_BLOCKS: u64 = 16;

impl<S: Storage> EncryptedFile<S> {
    /// Decrypts the current version of plaintext bytes `start..start + out.len()`
    /// (within the file) into `out`, one group at a time.
    /// `len` is the file's length, `cipher` its cipher; the caller holds the blocks.
    pub(super) fn decrypt_range(
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
            let kinds = runs_by(current.len(), |i| (current[i].0, current[i].1.hole));
            for run in kinds {
                let run_first = first + run.start as u64;
                let run_last = first + run.end as u64 - 1;
                if current[run.start].1.hole {
                    // No data page: each entry's tag vouches for its zeros.
                    for block in run_first..=run_last {
                        let entry = &current[(block - first) as usize].1;
                        let block_start = block * BLOCK_SIZE;
                        let from = start.max(block_start);
                        let to = end.min(block_start + u64::from(entry.plain_len));
                        let out_at = (from - start) as usize;
                        cipher.verify_hole(block, entry)?;
                        out[out_at..out_at + (to - from) as usize].fill(0);
                    }
                    continue;
                }
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

/// Index ranges of maximal runs of blocks with the same slot: blocks whose pages
/// (and entries) are adjacent in the cipher file. No allocation: it runs per request.
pub(super) fn slot_runs<T>(
    blocks: &[(Slot, T)],
) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    runs_by(blocks.len(), |i| blocks[i].0)
}

/// Index ranges of maximal runs of `0..len` with equal `key`.
pub(super) fn runs_by<K: PartialEq>(
    len: usize,
    key: impl Fn(usize) -> K,
) -> impl Iterator<Item = std::ops::Range<usize>> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= len {
            return None;
        }
        let first = key(start);
        let end = (start + 1..len).find(|&i| key(i) != first).unwrap_or(len);
        let run = start..end;
        start = end;
        Some(run)
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
