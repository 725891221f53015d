//! The checked-in format-v3 vector (built independently by `vectors/make_vector.py`
//! from `docs/format.md`) decrypts to the expected plaintext — each block from the
//! slot with the higher generation, the size from the last block's current slot —
//! its key check value matches, a flipped bit in a current slot (data page or tag)
//! is caught, and damage to an older slot changes nothing a read returns.

use std::collections::HashMap;
use std::sync::Arc;

use pgcmk_cryptfs::content::VolumeKey;
use pgcmk_cryptfs::crash_sim::SimulatedDisk;
use pgcmk_cryptfs::encrypted_file::EncryptedFile;
use pgcmk_cryptfs::format::{data_offset, entry_offset, Slot, BLOCK_SIZE};
use pgcmk_crypto::SymmetricKey;

struct Vector {
    fields: HashMap<String, String>,
    /// The whole cipher file: zeros except the listed pages.
    cipher: Vec<u8>,
}

fn vector() -> Vector {
    let mut fields = HashMap::new();
    let mut pages = Vec::new();
    for line in include_str!("vectors/v3.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (name, value) = line.split_once(" = ").expect("name = value");
        match name.strip_prefix("page ") {
            Some(index) => {
                pages.push((index.parse::<usize>().unwrap(), hex::decode(value).unwrap()))
            }
            None => {
                fields.insert(name.to_string(), value.to_string());
            }
        }
    }
    let mut cipher = vec![0u8; fields["cipher_len"].parse().unwrap()];
    for (index, page) in pages {
        assert_eq!(page.len(), BLOCK_SIZE as usize, "page {index}");
        let start = index * BLOCK_SIZE as usize;
        cipher[start..start + page.len()].copy_from_slice(&page);
    }
    Vector { fields, cipher }
}

impl Vector {
    fn bytes(&self, name: &str) -> Vec<u8> {
        hex::decode(&self.fields[name]).unwrap()
    }

    fn volume(&self) -> Arc<VolumeKey> {
        let master = SymmetricKey::from_slice(&self.bytes("master_key")).unwrap();
        let volume_id: [u8; 16] = self.bytes("volume_id").try_into().unwrap();
        Arc::new(VolumeKey::new(master, volume_id))
    }

    fn open(&self, cipher: Vec<u8>) -> EncryptedFile<SimulatedDisk> {
        EncryptedFile::open(SimulatedDisk::from_bytes(cipher), self.volume()).unwrap()
    }

    fn plaintext(&self) -> Vec<u8> {
        let len: usize = self.fields["plaintext_len"].parse().unwrap();
        (0..len).map(|i| ((i * 7 + 3) % 256) as u8).collect()
    }

    /// The cipher file with one bit flipped at `at`.
    fn flipped(&self, at: u64) -> Vec<u8> {
        let mut cipher = self.cipher.clone();
        cipher[at as usize] ^= 1;
        cipher
    }
}

/// The current slot of each block, and the older one where the vector has it.
const CURRENT: [(u64, Slot); 3] = [(0, Slot::A), (1, Slot::B), (2, Slot::A)];
const OLDER: [(u64, Slot); 2] = [(1, Slot::A), (2, Slot::B)];

/// Where the tag lies in an entry (after generation, length and nonce).
const TAG_AT: u64 = 8 + 4 + 12;

#[test]
fn vector_decrypts_to_the_documented_plaintext() {
    let v = vector();
    assert_eq!(
        v.volume().key_check_value().unwrap().to_vec(),
        v.bytes("key_check")
    );
    let file = v.open(v.cipher.clone());
    let expected = v.plaintext();
    assert_eq!(file.len(), expected.len() as u64);
    assert_eq!(file.read(0, expected.len() + 1).unwrap(), expected);
    assert_eq!(file.bad_blocks().unwrap(), Vec::<u64>::new());
}

#[test]
fn flipped_bit_in_a_current_slot_fails_its_block() {
    let v = vector();
    for (block, slot) in CURRENT {
        for at in [
            data_offset(block, slot) + 40,
            entry_offset(block, slot) + TAG_AT + 5,
        ] {
            let file = v.open(v.flipped(at));
            assert_eq!(
                file.bad_blocks().unwrap(),
                vec![block],
                "bit flipped at {at} (block {block}, slot {slot:?})"
            );
            assert!(file.read(block * BLOCK_SIZE, 1).is_err());
        }
    }
}

#[test]
fn flipped_bit_in_an_older_slot_changes_no_read() {
    let v = vector();
    for (block, slot) in OLDER {
        let file = v.open(v.flipped(data_offset(block, slot) + 20));
        // Reads use only the current slot: same bytes, no failure.
        assert_eq!(file.len(), v.plaintext().len() as u64);
        assert_eq!(file.read(0, v.plaintext().len()).unwrap(), v.plaintext());
        assert_eq!(file.bad_blocks().unwrap(), Vec::<u64>::new());
        // Only crash recovery looks at the older slot: it would clear it as stale.
        let recovery = file.check_recovery().unwrap();
        assert_eq!(recovery.stale_cleared, vec![block], "{recovery:?}");
        assert!(recovery.repaired.is_empty() && recovery.bad.is_empty());
    }
}
