//! On-disk layout of one encrypted file (format v2): header, two slots per block,
//! slot headers, size arithmetic.
//!
//! ```text
//! [header 24 B][pair 0: slot A | slot B][pair 1: slot A | slot B] ...
//! slot: generation u64 | plaintext length u32 | nonce 12 | ciphertext ≤ 4096 | tag 16 | zero padding
//! ```
//! A block's current version is the slot with the higher generation; a write goes to
//! the other slot, so the last durable version is never overwritten. The plaintext
//! size is the number of pairs times 4096, less what the last block's current slot
//! lacks (see `docs/format.md`).

use crate::Error;
use pgcmk_crypto::aead::{NONCE_LEN, TAG_LEN};

/// Plaintext bytes per block.
pub const BLOCK_SIZE: u64 = 4096;
/// Ciphertext overhead of one sealed block: nonce + tag.
pub const BLOCK_OVERHEAD: u64 = (NONCE_LEN + TAG_LEN) as u64;
/// Clear slot header: generation (u64) ‖ plaintext length (u32).
pub const SLOT_HEADER_LEN: u64 = 12;
/// Bytes of one slot on disk (fixed width, whatever the plaintext length).
pub const SLOT_SIZE: u64 = SLOT_HEADER_LEN + BLOCK_SIZE + BLOCK_OVERHEAD;
/// Bytes of one block's two slots on disk.
pub const PAIR_SIZE: u64 = 2 * SLOT_SIZE;
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 2;
/// Magic bytes opening every encrypted file.
pub const FILE_MAGIC: [u8; 6] = *b"PGCMKF";
/// Length of the random per-file identifier.
pub const FILE_ID_LEN: usize = 16;
/// Length of the file header.
pub const HEADER_LEN: u64 = 24;
/// Length of a block's associated data.
pub const AAD_LEN: usize = 38;
/// Largest plaintext size (keeps every offset computation far from u64 overflow).
pub const MAX_PLAIN_SIZE: u64 = 1 << 50;

/// The header at the start of every non-empty encrypted file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// Random identifier: salt of the file key and part of every block's AAD.
    pub file_id: [u8; FILE_ID_LEN],
}

impl FileHeader {
    /// Serialises the header (magic, version, file id).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN as usize] {
        let mut out = [0u8; HEADER_LEN as usize];
        out[..6].copy_from_slice(&FILE_MAGIC);
        out[6..8].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
        out[8..].copy_from_slice(&self.file_id);
        out
    }

    /// Parses and validates a header.
    pub fn parse(bytes: &[u8; HEADER_LEN as usize]) -> Result<Self, Error> {
        if bytes[..6] != FILE_MAGIC {
            return Err(Error::BadHeader("bad magic"));
        }
        if u16::from_be_bytes([bytes[6], bytes[7]]) != FORMAT_VERSION {
            return Err(Error::BadHeader("unsupported format version"));
        }
        let mut file_id = [0u8; FILE_ID_LEN];
        file_id.copy_from_slice(&bytes[8..]);
        Ok(Self { file_id })
    }
}

/// One of a block's two slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The first slot of the pair.
    A,
    /// The second slot of the pair.
    B,
}

impl Slot {
    /// The other slot of the pair.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// Byte offset of this slot within its pair.
    pub fn offset_in_pair(self) -> u64 {
        match self {
            Slot::A => 0,
            Slot::B => SLOT_SIZE,
        }
    }
}

/// The clear header of a slot. Generation 0 marks an empty slot (never valid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotHeader {
    /// Larger = newer version of the block.
    pub generation: u64,
    /// Plaintext bytes in the slot (1..=4096 when valid).
    pub plain_len: u32,
}

impl SlotHeader {
    /// Serialises the header.
    pub fn to_bytes(&self) -> [u8; SLOT_HEADER_LEN as usize] {
        let mut out = [0u8; SLOT_HEADER_LEN as usize];
        out[..8].copy_from_slice(&self.generation.to_be_bytes());
        out[8..].copy_from_slice(&self.plain_len.to_be_bytes());
        out
    }

    /// Parses the first [`SLOT_HEADER_LEN`] bytes of `slot`.
    pub fn parse(slot: &[u8]) -> Self {
        let mut generation = [0u8; 8];
        generation.copy_from_slice(&slot[..8]);
        let mut plain_len = [0u8; 4];
        plain_len.copy_from_slice(&slot[8..12]);
        Self {
            generation: u64::from_be_bytes(generation),
            plain_len: u32::from_be_bytes(plain_len),
        }
    }

    /// True for a slot never written (or cleared by crash recovery).
    pub fn is_empty(&self) -> bool {
        self.generation == 0
    }
}

/// The slot holding the block's current version: the higher generation (ties: A).
/// `None` when both are empty.
pub fn current_slot(a: &SlotHeader, b: &SlotHeader) -> Option<Slot> {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => None,
        _ if b.generation > a.generation => Some(Slot::B),
        _ => Some(Slot::A),
    }
}

/// Associated data of one slot of block `block` of file `file_id`:
/// version ‖ file id ‖ block number ‖ generation ‖ plaintext length.
pub fn block_aad(file_id: &[u8; FILE_ID_LEN], block: u64, header: &SlotHeader) -> [u8; AAD_LEN] {
    let mut aad = [0u8; AAD_LEN];
    aad[..2].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    aad[2..18].copy_from_slice(file_id);
    aad[18..26].copy_from_slice(&block.to_be_bytes());
    aad[26..].copy_from_slice(&header.to_bytes());
    aad
}

/// Offset in the cipher file where block `block`'s pair of slots starts.
pub fn pair_offset(block: u64) -> u64 {
    HEADER_LEN + block * PAIR_SIZE
}

/// Offset in the cipher file of one slot of block `block`.
pub fn slot_offset(block: u64, slot: Slot) -> u64 {
    pair_offset(block) + slot.offset_in_pair()
}

/// Cipher file size holding `plain` plaintext bytes (0 stays 0: no header yet).
pub fn cipher_size(plain: u64) -> u64 {
    if plain == 0 {
        return 0;
    }
    pair_offset(plain.div_ceil(BLOCK_SIZE))
}

/// Number of whole pairs in a cipher file of `cipher` bytes, and whether a partial
/// pair (a torn extension, or a cut file) follows them.
pub fn whole_pairs(cipher: u64) -> (u64, bool) {
    let body = cipher.saturating_sub(HEADER_LEN);
    (body / PAIR_SIZE, !body.is_multiple_of(PAIR_SIZE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry() {
        assert_eq!(SLOT_SIZE, 4136);
        assert_eq!(PAIR_SIZE, 8272);
        assert_eq!(cipher_size(0), 0);
        assert_eq!(cipher_size(1), 24 + 8272);
        assert_eq!(cipher_size(4096), 24 + 8272);
        assert_eq!(cipher_size(4097), 24 + 2 * 8272);
        assert_eq!(slot_offset(1, Slot::B), 24 + 8272 + 4136);
        assert_eq!(whole_pairs(24 + 2 * 8272), (2, false));
        assert_eq!(whole_pairs(24 + 2 * 8272 + 5), (2, true));
    }

    #[test]
    fn current_slot_is_the_higher_generation() {
        let slot = |generation| SlotHeader {
            generation,
            plain_len: 4096,
        };
        assert_eq!(current_slot(&slot(0), &slot(0)), None);
        assert_eq!(current_slot(&slot(1), &slot(0)), Some(Slot::A));
        assert_eq!(current_slot(&slot(0), &slot(1)), Some(Slot::B));
        assert_eq!(current_slot(&slot(4), &slot(5)), Some(Slot::B));
        assert_eq!(current_slot(&slot(7), &slot(7)), Some(Slot::A));
        let header = SlotHeader {
            generation: 0x0102,
            plain_len: 100,
        };
        assert_eq!(SlotHeader::parse(&header.to_bytes()), header);
    }

    #[test]
    fn header_round_trip_and_rejects() {
        let header = FileHeader { file_id: [9; 16] };
        let bytes = header.to_bytes();
        assert_eq!(FileHeader::parse(&bytes).unwrap(), header);
        let mut bad = bytes;
        bad[0] ^= 1;
        assert!(FileHeader::parse(&bad).is_err());
        let mut older = bytes;
        older[7] = 1;
        assert!(FileHeader::parse(&older).is_err());
    }
}
