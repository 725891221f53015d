//! Tampering with ciphertext is detected at the file layer: the affected blocks fail
//! authentication (never wrong bytes), the others still read.

use std::sync::Arc;

use pgcmk_cryptfs::content::VolumeKey;
use pgcmk_cryptfs::crash_sim::SimulatedDisk;
use pgcmk_cryptfs::encrypted_file::EncryptedFile;
use pgcmk_cryptfs::format::{pair_offset, slot_offset, Slot, BLOCK_SIZE, PAIR_SIZE, SLOT_SIZE};
use pgcmk_cryptfs::Error;
use pgcmk_crypto::SymmetricKey;

const B: u64 = BLOCK_SIZE;

fn volume() -> Arc<VolumeKey> {
    Arc::new(VolumeKey::new(SymmetricKey::from_bytes([9; 32]), [2; 16]))
}

/// A file of four full blocks (block i filled with byte i+1) plus 100 bytes.
fn sample() -> Vec<u8> {
    let file = EncryptedFile::open(SimulatedDisk::new(), volume()).unwrap();
    let mut file = file;
    for block in 0..4u8 {
        file.write(u64::from(block) * B, &[block + 1; BLOCK_SIZE as usize])
            .unwrap();
    }
    file.write(4 * B, &[0xEE; 100]).unwrap();
    file.storage().contents()
}

fn open(bytes: Vec<u8>) -> Result<EncryptedFile<SimulatedDisk>, Error> {
    EncryptedFile::open(SimulatedDisk::from_bytes(bytes), volume())
}

/// Both slots of a block.
fn block_range(block: u64) -> std::ops::Range<usize> {
    let start = pair_offset(block) as usize;
    start..start + PAIR_SIZE as usize
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
            let want = if block == 4 { 0xEE } else { block as u8 + 1 };
            assert!(bytes.iter().all(|&b| b == want), "block {block} content");
        }
    }
    assert_eq!(file.bad_blocks().unwrap(), bad);
}

#[test]
fn flipped_bit_fails_only_its_block() {
    // Every block of the sample was written once: slot A current, slot B empty.
    let slot_a = slot_offset(1, Slot::A) as usize;
    let slot_b = slot_offset(1, Slot::B) as usize;
    // Generation, length, nonce, ciphertext, tag of the current slot; the empty
    // slot's generation (which would make it current).
    for at in [
        slot_a,
        slot_a + 7,
        slot_a + 9,
        slot_a + 12,
        slot_a + 2000,
        slot_a + SLOT_SIZE as usize - 1,
        slot_b + 7,
    ] {
        let mut bytes = sample();
        bytes[at] ^= 0x10;
        assert_blocks(&open(bytes).unwrap(), &[1]);
    }
}

#[test]
fn flipped_bit_in_the_current_slot_is_eio_even_with_an_intact_older_slot() {
    // Block 1 rewritten after a sync: its old version stays intact in slot A, the
    // new one is current in slot B.
    let mut file = open(sample()).unwrap();
    file.sync().unwrap();
    file.write(B, &[2; BLOCK_SIZE as usize]).unwrap();
    file.sync().unwrap();
    let mut bytes = file.storage().contents();
    bytes[slot_offset(1, Slot::B) as usize + 100] ^= 1;
    let file = open(bytes).unwrap();
    // No fallback to the older slot outside crash recovery: EIO, not stale bytes.
    assert_blocks(&file, &[1]);
    // Crash recovery (only run after a crash) would take the older version.
    assert_eq!(file.check_recovery().unwrap().repaired, vec![1]);
}

#[test]
fn swapped_blocks_fail() {
    let mut bytes = sample();
    let (a, b) = (block_range(0), block_range(2));
    let block0 = bytes[a.clone()].to_vec();
    let block2 = bytes[b.clone()].to_vec();
    bytes[a].copy_from_slice(&block2);
    bytes[b].copy_from_slice(&block0);
    assert_blocks(&open(bytes).unwrap(), &[0, 2]);
}

#[test]
fn block_moved_to_another_offset_or_file_fails() {
    // Same file, another offset.
    let mut bytes = sample();
    let moved = bytes[block_range(1)].to_vec();
    bytes[block_range(3)].copy_from_slice(&moved);
    assert_blocks(&open(bytes).unwrap(), &[3]);

    // Same offset, another file (another file id, same key).
    let other = sample();
    let mut bytes = sample();
    bytes[block_range(2)].copy_from_slice(&other[block_range(2)]);
    assert_blocks(&open(bytes).unwrap(), &[2]);
}

#[test]
fn truncated_ciphertext_fails() {
    let full = sample();
    // Inside the last (partial) block, and inside a full block.
    let mut cut = full.clone();
    cut.truncate(full.len() - 10);
    assert_blocks(&open(cut).unwrap(), &[4]);
    let mut cut = full.clone();
    cut.truncate(pair_offset(2) as usize + 100);
    let file = open(cut).unwrap();
    assert_eq!(file.len(), 2 * B + 1, "the cut block still counts");
    assert!(matches!(
        file.read(2 * B, 1),
        Err(Error::Tampered { block: 2 })
    ));
    // Shorter than the overhead of one block.
    let mut cut = full.clone();
    cut.truncate(pair_offset(3) as usize + 20);
    let file = open(cut).unwrap();
    assert_eq!(
        file.len(),
        3 * B + 1,
        "a damaged tail is reported, not hidden"
    );
    assert!(matches!(
        file.read(3 * B, 10),
        Err(Error::Tampered { block: 3 })
    ));
    // Into the header.
    let mut cut = full;
    cut.truncate(10);
    assert!(matches!(open(cut), Err(Error::BadHeader(_))));
}

#[test]
fn altered_header_fails_every_block() {
    let mut bytes = sample();
    bytes[10] ^= 1; // inside the file id
    assert_blocks(&open(bytes).unwrap(), &[0, 1, 2, 3, 4]);
    let mut bytes = sample();
    bytes[0] = b'X';
    assert!(matches!(open(bytes), Err(Error::BadHeader(_))));
}

#[test]
fn wrong_key_fails_every_block() {
    let bytes = sample();
    let wrong = Arc::new(VolumeKey::new(SymmetricKey::from_bytes([8; 32]), [2; 16]));
    let file = EncryptedFile::open(SimulatedDisk::from_bytes(bytes), wrong).unwrap();
    assert_eq!(file.bad_blocks().unwrap(), vec![0, 1, 2, 3, 4]);
}
