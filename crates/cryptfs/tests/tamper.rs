//! Tampering with ciphertext is detected at the file layer: the affected blocks fail
//! authentication (never wrong bytes), the others still read.

use std::sync::Arc;

use pgcmk_cryptfs::content::VolumeKey;
use pgcmk_cryptfs::crash_sim::SimulatedDisk;
use pgcmk_cryptfs::encrypted_file::EncryptedFile;
use pgcmk_cryptfs::format::{
    data_offset, entry_offset, group_offset, Slot, BLOCK_SIZE, ENTRY_SIZE, GROUP_BLOCKS,
};
use pgcmk_cryptfs::Error;
use pgcmk_crypto::SymmetricKey;

const B: u64 = BLOCK_SIZE;
/// The sample's last block (100 bytes, in group 1; every other block is full).
const LAST: u64 = GROUP_BLOCKS + 2;

fn volume() -> Arc<VolumeKey> {
    Arc::new(VolumeKey::new(SymmetricKey::from_bytes([9; 32]), [2; 16]))
}

/// A file of `LAST` full blocks (block i filled with byte i+1) plus 100 bytes of
/// 0xEE: group 0 full, three blocks in group 1. Every block was written once, so
/// slot A is current and slot B empty.
fn sample() -> Vec<u8> {
    let file = EncryptedFile::open(SimulatedDisk::new(), volume()).unwrap();
    for block in 0..LAST {
        file.write(block * B, &[block as u8 + 1; BLOCK_SIZE as usize])
            .unwrap();
    }
    file.write(LAST * B, &[0xEE; 100]).unwrap();
    file.storage().contents()
}

fn open(bytes: Vec<u8>) -> Result<EncryptedFile<SimulatedDisk>, Error> {
    EncryptedFile::open(SimulatedDisk::from_bytes(bytes), volume())
}

/// `len` bytes of the cipher file at `at`; past its end, zeros (as a read sees them).
fn range(bytes: &[u8], at: u64, len: u64) -> Vec<u8> {
    let mut out = vec![0u8; len as usize];
    let start = (at as usize).min(bytes.len());
    let end = ((at + len) as usize).min(bytes.len());
    out[..end - start].copy_from_slice(&bytes[start..end]);
    out
}

fn put(bytes: &mut Vec<u8>, at: u64, data: &[u8]) {
    let end = at as usize + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[at as usize..end].copy_from_slice(data);
}

/// Copies everything stored for block `from` of `src` (both entries and both data
/// pages) into the places of block `to` of `dst`.
fn copy_block(dst: &mut Vec<u8>, to: u64, src: &[u8], from: u64) {
    for slot in [Slot::A, Slot::B] {
        let entry = range(src, entry_offset(from, slot), ENTRY_SIZE);
        put(dst, entry_offset(to, slot), &entry);
        let page = range(src, data_offset(from, slot), B);
        put(dst, data_offset(to, slot), &page);
    }
}

/// Every block reads as expected or fails as expected; nothing else.
fn assert_blocks(file: &EncryptedFile<SimulatedDisk>, bad: &[u64]) {
    for block in 0..file.len().div_ceil(B) {
        let read = file.read(block * B, B as usize);
        if bad.contains(&block) {
            assert!(
                matches!(read, Err(Error::Tampered { block: b }) if b == block),
                "block {block}: {read:?}"
            );
        } else {
            let bytes = read.unwrap();
            let want = if block == LAST { 0xEE } else { block as u8 + 1 };
            assert!(bytes.iter().all(|&b| b == want), "block {block} content");
        }
    }
    assert_eq!(file.bad_blocks().unwrap(), bad);
}

#[test]
fn flipped_bit_fails_only_its_block() {
    let sample = sample();
    let entry = |block| entry_offset(block, Slot::A);
    let page = |block| data_offset(block, Slot::A);
    for (at, block) in [
        // The current slot's entry: generation, length, nonce, tag.
        (entry(1), 1),
        (entry(1) + 7, 1),
        (entry(1) + 9, 1),
        (entry(1) + 12, 1),
        (entry(1) + 23, 1),
        (entry(1) + 24, 1),
        (entry(1) + 39, 1),
        // Its ciphertext, first, middle and last byte.
        (page(1), 1),
        (page(1) + 2000, 1),
        (page(1) + B - 1, 1),
        // The empty slot's generation (which makes it current).
        (entry_offset(1, Slot::B) + 7, 1),
        // A block of group 1: its entry and its page.
        (entry(GROUP_BLOCKS) + 30, GROUP_BLOCKS),
        (page(GROUP_BLOCKS) + 5, GROUP_BLOCKS),
        // The last block's ciphertext.
        (page(LAST) + 99, LAST),
    ] {
        let mut bytes = sample.clone();
        bytes[at as usize] ^= 0x10;
        let file = open(bytes).unwrap();
        assert_eq!(file.len(), LAST * B + 100, "bit flipped at {at}");
        assert_blocks(&file, &[block]);
    }
}

#[test]
fn altered_length_of_the_last_block_fails_and_is_not_hidden() {
    let length = entry_offset(LAST, Slot::A) as usize + 8;
    // 100 -> 116: another valid length, which the AAD binds.
    let mut bytes = sample();
    bytes[length + 3] ^= 0x10;
    let file = open(bytes).unwrap();
    assert_eq!(file.len(), LAST * B + 116);
    assert_blocks(&file, &[LAST]);
    // 100 -> 0x10_0064: longer than a block. The size is one byte into the block.
    let mut bytes = sample();
    bytes[length + 1] ^= 0x10;
    let file = open(bytes).unwrap();
    assert_eq!(file.len(), LAST * B + 1);
    assert_blocks(&file, &[LAST]);
}

#[test]
fn flipped_bit_in_the_current_slot_is_eio_even_with_an_intact_older_slot() {
    // Block 1 rewritten after a sync: its old version stays intact in slot A, the
    // new one is current in slot B.
    let file = open(sample()).unwrap();
    file.sync().unwrap();
    file.write(B, &[2; BLOCK_SIZE as usize]).unwrap();
    file.sync().unwrap();
    let rewritten = file.storage().contents();
    for at in [data_offset(1, Slot::B) + 100, entry_offset(1, Slot::B) + 30] {
        let mut bytes = rewritten.clone();
        bytes[at as usize] ^= 1;
        let file = open(bytes).unwrap();
        // No fallback to the older slot outside crash recovery: EIO, not stale bytes.
        assert_blocks(&file, &[1]);
        // Crash recovery (only run after a crash) would take the older version.
        assert_eq!(file.check_recovery().unwrap().repaired, vec![1]);
    }
}

#[test]
fn swapped_blocks_fail() {
    // Within a group, and across groups: entries and data pages swapped together.
    for (x, y) in [(0, 2), (1, GROUP_BLOCKS + 1)] {
        let original = sample();
        let mut bytes = original.clone();
        copy_block(&mut bytes, y, &original, x);
        copy_block(&mut bytes, x, &original, y);
        assert_blocks(&open(bytes).unwrap(), &[x, y]);
    }
}

#[test]
fn block_moved_to_another_offset_or_file_fails() {
    // Same file, another offset (in the same group and in another one).
    for to in [3, GROUP_BLOCKS] {
        let original = sample();
        let mut bytes = original.clone();
        copy_block(&mut bytes, to, &original, 1);
        assert_blocks(&open(bytes).unwrap(), &[to]);
    }

    // Same offset, another file (another file id, same key).
    let other = sample();
    let mut bytes = sample();
    copy_block(&mut bytes, 2, &other, 2);
    assert_blocks(&open(bytes).unwrap(), &[2]);
}

#[test]
fn truncated_ciphertext_fails() {
    let full = sample();
    let cut = |len: u64| {
        let mut bytes = full.clone();
        assert!(len < bytes.len() as u64);
        bytes.truncate(len as usize);
        open(bytes)
    };
    // Inside the last (partial) block's ciphertext: its entry still gives the size.
    let file = cut(data_offset(LAST, Slot::A) + 50).unwrap();
    assert_eq!(file.len(), LAST * B + 100);
    assert_blocks(&file, &[LAST]);
    // Inside a full block's data page: it and the pages after it are gone.
    let file = cut(data_offset(LAST - 1, Slot::A) + 100).unwrap();
    assert_eq!(file.len(), LAST * B + 100, "the cut blocks still count");
    assert_blocks(&file, &[LAST - 1, LAST]);
    // Inside group 1's metadata page, after block 32's generation and length: that
    // entry names the last block, which fails (nonce and tag cut, no data page).
    let file = cut(group_offset(1) + 20).unwrap();
    assert_eq!(
        file.len(),
        (GROUP_BLOCKS + 1) * B,
        "a damaged tail is reported"
    );
    assert_blocks(&file, &[GROUP_BLOCKS]);
    // Exactly before group 1: the documented limitation (docs/format.md §3.2) —
    // the file is then a valid, shorter file of group 0's blocks. Never wrong bytes.
    let file = cut(group_offset(1)).unwrap();
    assert_eq!(file.len(), GROUP_BLOCKS * B);
    assert_blocks(&file, &[]);
    // Into the header.
    assert!(matches!(cut(10), Err(Error::BadHeader(_))));
}

#[test]
fn altered_header_fails_every_block() {
    let mut bytes = sample();
    bytes[10] ^= 1; // inside the file id
    assert_blocks(&open(bytes).unwrap(), &(0..=LAST).collect::<Vec<_>>());
    let mut bytes = sample();
    bytes[0] = b'X';
    assert!(matches!(open(bytes), Err(Error::BadHeader(_))));
    let mut bytes = sample();
    bytes[7] = 2; // version 2
    assert!(matches!(open(bytes), Err(Error::BadHeader(_))));
}

#[test]
fn wrong_key_fails_every_block() {
    let bytes = sample();
    let wrong = Arc::new(VolumeKey::new(SymmetricKey::from_bytes([8; 32]), [2; 16]));
    let file = EncryptedFile::open(SimulatedDisk::from_bytes(bytes), wrong).unwrap();
    assert_eq!(file.bad_blocks().unwrap(), (0..=LAST).collect::<Vec<_>>());
}

/// A file extended past its data by truncation: blocks 0..3 data (byte i+1), blocks
/// 3..40 holes (the last one 100 bytes long).
fn with_holes() -> Vec<u8> {
    let file = EncryptedFile::open(SimulatedDisk::new(), volume()).unwrap();
    for block in 0..3 {
        file.write(block * B, &[block as u8 + 1; BLOCK_SIZE as usize])
            .unwrap();
    }
    file.set_len(39 * B + 100).unwrap();
    file.storage().contents()
}

/// Reading block `block` of the cipher file `bytes` fails authentication.
fn assert_tampered(bytes: Vec<u8>, block: u64, what: &str) {
    let read = open(bytes).and_then(|file| file.read(block * B, B as usize));
    assert!(
        matches!(read, Err(Error::Tampered { block: b }) if b == block),
        "{what}: {:?}",
        read.map(|bytes| format!("read {} bytes", bytes.len()))
    );
}

#[test]
fn holes_read_as_zeros_and_cannot_be_substituted() {
    let clean = with_holes();
    let file = open(clean.clone()).unwrap();
    assert_eq!(file.len(), 39 * B + 100);
    assert_eq!(file.read(10 * B, B as usize).unwrap(), vec![0; B as usize]);
    assert_eq!(file.read(39 * B, 200).unwrap(), vec![0; 100]);
    // Extension wrote entries only: no data page past the last data block.
    for block in 3..40 {
        let page = range(&clean, data_offset(block, Slot::A), B);
        assert!(page.iter().all(|b| *b == 0), "data page of hole {block}");
    }

    let entry_of = |bytes: &[u8], block| range(bytes, entry_offset(block, Slot::A), ENTRY_SIZE);
    let with_entry = |block, entry: &[u8]| {
        let mut bytes = clean.clone();
        put(&mut bytes, entry_offset(block, Slot::A), entry);
        bytes
    };
    let with_flag = |block, set: bool| {
        let mut entry = entry_of(&clean, block);
        entry[8] = if set {
            entry[8] | 0x80
        } else {
            entry[8] & 0x7f
        };
        with_entry(block, &entry)
    };
    // A written block turned into a hole: another hole's entry, or its hole bit set
    // (the tag sealed data, not a hole).
    assert_tampered(with_entry(1, &entry_of(&clean, 10)), 1, "data → hole entry");
    assert_tampered(with_flag(1, true), 1, "data with the hole bit");
    // A hole turned into data: a data block's entry and page copied over it, or its
    // hole bit cleared.
    let mut hole_to_data = clean.clone();
    copy_block(&mut hole_to_data, 10, &clean, 1);
    assert_tampered(hole_to_data, 10, "hole → data block");
    assert_tampered(with_flag(10, false), 10, "hole without the hole bit");
    // A hole's entry erased, moved from another hole, or taken from another file.
    assert_tampered(with_entry(10, &[0; ENTRY_SIZE as usize]), 10, "erased");
    assert_tampered(with_entry(10, &entry_of(&clean, 11)), 10, "moved");
    assert_tampered(with_entry(10, &entry_of(&with_holes(), 10)), 10, "foreign");
    // The untouched file still reads back whole.
    assert_eq!(
        open(clean).unwrap().read(2 * B, B as usize).unwrap(),
        vec![3; B as usize]
    );
}

#[test]
fn a_hole_filled_and_synced_cannot_be_brought_back_by_erasing_the_new_entry() {
    let file = open(with_holes()).unwrap();
    file.write(10 * B, &[0xAB; B as usize]).unwrap();
    file.write(11 * B + 5, b"partial").unwrap();
    file.sync().unwrap();
    let written = file.storage().contents();
    assert_eq!(
        open(written.clone()).unwrap().read(10 * B, 4).unwrap(),
        [0xAB; 4]
    );
    // The data went to slot B (the hole was slot A's durable version); erase it.
    for block in [10, 11] {
        let mut erased = written.clone();
        put(
            &mut erased,
            entry_offset(block, Slot::B),
            &[0; ENTRY_SIZE as usize],
        );
        assert_tampered(erased, block, "the filled hole's new entry erased");
    }
    // A hole never written keeps its entry.
    assert_eq!(open(written).unwrap().read(12 * B, 8).unwrap(), [0; 8]);
}
