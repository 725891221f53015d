//! Reading and cutting a cipher file's metadata pages: its plaintext length, the
//! entries of a block, and dropping the blocks past a new end.

use std::io;
use std::ops::Range;

use crate::format::{
    current_entry, entry_index, entry_offset, group_of, group_offset, groups_in, Slot, SlotEntry,
    BLOCK_SIZE, ENTRY_SIZE, GROUPS_START, GROUP_BLOCKS, HEADER_LEN,
};
use crate::storage::Storage;
use crate::Error;

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
pub(super) fn cut_point(last: Option<u64>) -> u64 {
    last.map_or(GROUPS_START, |last| group_offset(group_of(last) + 1))
}

/// The highest block of group `group` with a non-empty entry in either slot.
pub(super) fn last_block_in(meta: &[u8; BLOCK_SIZE as usize], group: u64) -> Option<u64> {
    (group * GROUP_BLOCKS..(group + 1) * GROUP_BLOCKS)
        .rev()
        .find(|&block| {
            let (a, b) = block_entries(meta, block);
            !a.is_empty() || !b.is_empty()
        })
}

/// The metadata page of group `group`; bytes past the end of the cipher file read
/// as zeros (empty entries).
pub(super) fn read_meta_page<S: Storage>(
    storage: &S,
    group: u64,
) -> Result<[u8; BLOCK_SIZE as usize], Error> {
    let mut page = [0u8; BLOCK_SIZE as usize];
    read_zero_padded(storage, &mut page, group_offset(group))?;
    Ok(page)
}

/// Reads `buf.len()` bytes at `offset`; what lies past the end of the store reads
/// as zeros.
pub(super) fn read_zero_padded<S: Storage>(
    storage: &S,
    buf: &mut [u8],
    offset: u64,
) -> Result<(), Error> {
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
pub(super) fn block_entries(
    meta: &[u8; BLOCK_SIZE as usize],
    block: u64,
) -> (SlotEntry, SlotEntry) {
    let entry = |slot| SlotEntry::parse(&meta[entry_index(block, slot)..]);
    (entry(Slot::A), entry(Slot::B))
}

/// Blocks holding plaintext bytes `offset..offset + len`.
pub(super) fn blocks_of(offset: u64, len: u64) -> Range<u64> {
    if len == 0 {
        0..0
    } else {
        offset / BLOCK_SIZE..(offset + len - 1) / BLOCK_SIZE + 1
    }
}

/// Plaintext bytes in block `block` of a file of `len` bytes.
pub(super) fn block_len(len: u64, block: u64) -> u64 {
    (len - block * BLOCK_SIZE).min(BLOCK_SIZE)
}

/// Drops blocks `last + 1 .. blocks` (`last = None`: all of them): clears their
/// entries in `last`'s group and cuts the cipher file at that group's end.
pub(super) fn cut_after<S: Storage>(
    storage: &S,
    last: Option<u64>,
    blocks: u64,
) -> Result<(), Error> {
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
