//! On-disk layout of one encrypted file (format v4; v3 files are read and written
//! too): header page, groups of 32 blocks, two slots per block, metadata entries
//! (data or hole), size arithmetic.
//!
//! ```text
//! [header page][group 0][group 1] ...
//! group: [metadata page: 64 entries][32 slot-A data pages][32 slot-B data pages]
//! entry: generation u64 | kind bit + plaintext length u32 | nonce 12 | tag 16 | zeros 24
//! data page: ciphertext (plaintext length bytes) | zeros up to 4096
//! ```
//! A block's current version is the slot with the higher generation; a write goes to
//! the other slot, so the last durable version is never overwritten. Every data page
//! is 4 KiB-aligned in the cipher file, so a whole-block write replaces whole backing
//! pages. The plaintext size comes from the last block's entries (see
//! `docs/format.md`).

use crate::Error;
use pgcmk_crypto::aead::{NONCE_LEN, TAG_LEN};

/// Plaintext bytes per block, and bytes per page of the cipher file.
pub const BLOCK_SIZE: u64 = 4096;
/// Blocks per group (one metadata page describes them all).
pub const GROUP_BLOCKS: u64 = 32;
/// Bytes of one group: its metadata page and two data pages per block.
pub const GROUP_SIZE: u64 = (1 + 2 * GROUP_BLOCKS) * BLOCK_SIZE;
/// Bytes of one metadata entry (8 per 512-byte sector: never torn).
pub const ENTRY_SIZE: u64 = 64;
/// The format version this build writes (new volumes and new file headers).
pub const FORMAT_VERSION: u16 = 4;
/// The oldest format version this build still reads (and writes into).
pub const OLDEST_READ_VERSION: u16 = 3;
/// Set in an entry's length field (and so in its AAD) for a hole: a version of the
/// block that reads as zeros and has no data page.
pub const HOLE_FLAG: u32 = 1 << 31;
/// Magic bytes opening every encrypted file.
pub const FILE_MAGIC: [u8; 6] = *b"PGCMKF";
/// Length of the random per-file identifier.
pub const FILE_ID_LEN: usize = 16;
/// Length of the meaningful part of the header page.
pub const HEADER_LEN: u64 = 24;
/// Where group 0 starts: after the header page.
pub const GROUPS_START: u64 = BLOCK_SIZE;
/// Length of a block's associated data.
pub const AAD_LEN: usize = 38;
/// Largest plaintext size: 256 GiB (PostgreSQL's files are at most 1 GiB segments).
/// Extending an empty file to it writes 4 GiB of hole entries (64 bytes per 4 KiB
/// block, on 8 GiB of metadata pages), which bounds the work of one request.
pub const MAX_PLAIN_SIZE: u64 = 1 << 38;

/// The header at the start of every non-empty encrypted file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// The format version the file was created with (3 or 4); part of every block's
    /// AAD.
    pub version: u16,
    /// Random identifier: salt of the file key and part of every block's AAD.
    pub file_id: [u8; FILE_ID_LEN],
}

impl FileHeader {
    /// Serialises the header page (magic, version, file id, zeros).
    pub fn to_page(&self) -> [u8; BLOCK_SIZE as usize] {
        let mut out = [0u8; BLOCK_SIZE as usize];
        out[..6].copy_from_slice(&FILE_MAGIC);
        out[6..8].copy_from_slice(&self.version.to_be_bytes());
        out[8..HEADER_LEN as usize].copy_from_slice(&self.file_id);
        out
    }

    /// Parses and validates the first [`HEADER_LEN`] bytes of a header page.
    pub fn parse(bytes: &[u8; HEADER_LEN as usize]) -> Result<Self, Error> {
        if bytes[..6] != FILE_MAGIC {
            return Err(Error::BadHeader("bad magic"));
        }
        let version = u16::from_be_bytes([bytes[6], bytes[7]]);
        if !(OLDEST_READ_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(Error::BadHeader("unsupported format version"));
        }
        let mut file_id = [0u8; FILE_ID_LEN];
        file_id.copy_from_slice(&bytes[8..]);
        Ok(Self { version, file_id })
    }
}

/// One of a block's two slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The first slot.
    A,
    /// The second slot.
    B,
}

impl Slot {
    /// The other slot of the block.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    fn index(self) -> u64 {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }
}

/// The metadata entry of one slot. Generation 0 marks an empty slot (never valid).
/// A hole entry authenticates "this version of the block is `plain_len` zeros"
/// (its tag seals an empty plaintext); it has no data page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SlotEntry {
    /// Larger = newer version of the block.
    pub generation: u64,
    /// Plaintext bytes in the slot (1..=4096 when valid).
    pub plain_len: u32,
    /// A hole: the version reads as `plain_len` zeros; nothing is in its data page.
    pub hole: bool,
    /// The nonce this version was sealed with.
    pub nonce: [u8; NONCE_LEN],
    /// Its authentication tag.
    pub tag: [u8; TAG_LEN],
}

impl SlotEntry {
    /// An empty entry (all zeros on disk).
    pub const EMPTY: SlotEntry = SlotEntry {
        generation: 0,
        plain_len: 0,
        hole: false,
        nonce: [0; NONCE_LEN],
        tag: [0; TAG_LEN],
    };

    /// A hole entry: version `generation` of its block is `plain_len` zeros.
    pub fn hole(
        generation: u64,
        plain_len: u32,
        nonce: [u8; NONCE_LEN],
        tag: [u8; TAG_LEN],
    ) -> Self {
        SlotEntry {
            generation,
            plain_len,
            hole: true,
            nonce,
            tag,
        }
    }

    /// The length field as stored and authenticated: the length, with
    /// [`HOLE_FLAG`] for a hole.
    pub fn stored_len(&self) -> u32 {
        if self.hole {
            self.plain_len | HOLE_FLAG
        } else {
            self.plain_len
        }
    }

    /// Serialises the entry (zero-padded to [`ENTRY_SIZE`]).
    pub fn to_bytes(&self) -> [u8; ENTRY_SIZE as usize] {
        let mut out = [0u8; ENTRY_SIZE as usize];
        out[..8].copy_from_slice(&self.generation.to_be_bytes());
        out[8..12].copy_from_slice(&self.stored_len().to_be_bytes());
        out[12..24].copy_from_slice(&self.nonce);
        out[24..40].copy_from_slice(&self.tag);
        out
    }

    /// Parses the first [`ENTRY_SIZE`] bytes of `entry`.
    pub fn parse(entry: &[u8]) -> Self {
        let field = |range: std::ops::Range<usize>| &entry[range];
        let mut out = SlotEntry::EMPTY;
        out.generation = u64::from_be_bytes(field(0..8).try_into().expect("8 bytes"));
        let stored_len = u32::from_be_bytes(field(8..12).try_into().expect("4 bytes"));
        out.hole = stored_len & HOLE_FLAG != 0;
        out.plain_len = stored_len & !HOLE_FLAG;
        out.nonce.copy_from_slice(field(12..24));
        out.tag.copy_from_slice(field(24..40));
        out
    }

    /// True for a slot never written (or cleared by truncation or crash recovery).
    pub fn is_empty(&self) -> bool {
        self.generation == 0
    }
}

/// The slot holding the block's current version: the higher generation (ties: A).
/// `None` when both are empty.
pub fn current_slot(a: &SlotEntry, b: &SlotEntry) -> Option<Slot> {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => None,
        _ if b.generation > a.generation => Some(Slot::B),
        _ => Some(Slot::A),
    }
}

/// The current slot and its entry (see [`current_slot`]).
pub fn current_entry(a: &SlotEntry, b: &SlotEntry) -> Option<(Slot, SlotEntry)> {
    current_slot(a, b).map(|slot| (slot, if slot == Slot::A { *a } else { *b }))
}

/// Associated data of one version of block `block` of file `header`:
/// version ‖ file id ‖ block number ‖ generation ‖ stored length (with
/// [`HOLE_FLAG`] for a hole).
pub fn block_aad(
    header: &FileHeader,
    block: u64,
    generation: u64,
    stored_len: u32,
) -> [u8; AAD_LEN] {
    let mut aad = [0u8; AAD_LEN];
    aad[..2].copy_from_slice(&header.version.to_be_bytes());
    aad[2..18].copy_from_slice(&header.file_id);
    aad[18..26].copy_from_slice(&block.to_be_bytes());
    aad[26..34].copy_from_slice(&generation.to_be_bytes());
    aad[34..].copy_from_slice(&stored_len.to_be_bytes());
    aad
}

/// The group holding block `block`.
pub fn group_of(block: u64) -> u64 {
    block / GROUP_BLOCKS
}

/// Offset in the cipher file where group `group` (its metadata page) starts.
pub fn group_offset(group: u64) -> u64 {
    GROUPS_START + group * GROUP_SIZE
}

/// Offset of the metadata entry of one slot of block `block`.
pub fn entry_offset(block: u64, slot: Slot) -> u64 {
    group_offset(group_of(block)) + entry_index(block, slot) as u64
}

/// Offset of the data page of one slot of block `block`.
pub fn data_offset(block: u64, slot: Slot) -> u64 {
    group_offset(group_of(block))
        + (1 + slot.index() * GROUP_BLOCKS + block % GROUP_BLOCKS) * BLOCK_SIZE
}

/// Position of one slot's entry within its group's metadata page.
pub fn entry_index(block: u64, slot: Slot) -> usize {
    ((slot.index() * GROUP_BLOCKS + block % GROUP_BLOCKS) * ENTRY_SIZE) as usize
}

/// Number of groups a cipher file of `cipher` bytes reaches into.
pub fn groups_in(cipher: u64) -> u64 {
    cipher.saturating_sub(GROUPS_START).div_ceil(GROUP_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry() {
        assert_eq!(GROUP_SIZE, 266_240);
        assert_eq!(entry_offset(0, Slot::A), 4096);
        assert_eq!(entry_offset(0, Slot::B), 4096 + 32 * 64);
        assert_eq!(entry_offset(33, Slot::B), 4096 + 266_240 + 33 * 64);
        assert_eq!(data_offset(0, Slot::A), 8192);
        assert_eq!(data_offset(31, Slot::A), 4096 + 32 * 4096);
        assert_eq!(data_offset(0, Slot::B), 4096 + 33 * 4096);
        assert_eq!(data_offset(32, Slot::A), 4096 + 266_240 + 4096);
        assert_eq!(data_offset(63, Slot::B), 4096 + 2 * 266_240 - 4096);
        assert_eq!(groups_in(0), 0);
        assert_eq!(groups_in(4096), 0);
        assert_eq!(groups_in(4097), 1);
        assert_eq!(groups_in(4096 + 266_240), 1);
        assert_eq!(groups_in(4096 + 266_241), 2);
        // No entry crosses a 512-byte sector.
        assert_eq!(512 % ENTRY_SIZE, 0);
    }

    #[test]
    fn current_slot_is_the_higher_generation() {
        let slot = |generation| SlotEntry {
            generation,
            plain_len: 4096,
            ..SlotEntry::EMPTY
        };
        assert_eq!(current_slot(&slot(0), &slot(0)), None);
        assert_eq!(current_slot(&slot(1), &slot(0)), Some(Slot::A));
        assert_eq!(current_slot(&slot(0), &slot(1)), Some(Slot::B));
        assert_eq!(current_slot(&slot(4), &slot(5)), Some(Slot::B));
        assert_eq!(current_slot(&slot(7), &slot(7)), Some(Slot::A));
        let entry = SlotEntry {
            generation: 0x0102,
            plain_len: 100,
            hole: false,
            nonce: [3; NONCE_LEN],
            tag: [4; TAG_LEN],
        };
        assert_eq!(SlotEntry::parse(&entry.to_bytes()), entry);
        let hole = SlotEntry {
            hole: true,
            ..entry
        };
        assert_eq!(hole.to_bytes()[8..12], [0x80, 0, 0, 100]);
        assert_eq!(SlotEntry::parse(&hole.to_bytes()), hole);
        assert!(entry.to_bytes()[40..].iter().all(|b| *b == 0));
    }

    #[test]
    fn header_round_trip_and_rejects() {
        let header = FileHeader {
            version: FORMAT_VERSION,
            file_id: [9; 16],
        };
        let page = header.to_page();
        let bytes: [u8; HEADER_LEN as usize] = page[..HEADER_LEN as usize].try_into().unwrap();
        assert_eq!(FileHeader::parse(&bytes).unwrap(), header);
        assert!(page[HEADER_LEN as usize..].iter().all(|b| *b == 0));
        let mut bad = bytes;
        bad[0] ^= 1;
        assert!(FileHeader::parse(&bad).is_err());
        let mut older = bytes;
        older[7] = 3;
        assert_eq!(
            FileHeader::parse(&older).unwrap().version,
            3,
            "v3 files stay readable"
        );
        older[7] = 2;
        assert!(FileHeader::parse(&older).is_err());
        older[7] = 5;
        assert!(FileHeader::parse(&older).is_err());
    }
}
