//! The checked-in format-v2 vector (built independently by `vectors/make_vector.py`
//! from `docs/format.md`) decrypts to the expected plaintext — each block from the
//! slot with the higher generation, the size from the last block's current slot —
//! its key check value matches, and a flipped bit in a current slot is caught.

use std::collections::HashMap;
use std::sync::Arc;

use pgcmk_cryptfs::content::VolumeKey;
use pgcmk_cryptfs::crash_sim::SimulatedDisk;
use pgcmk_cryptfs::encrypted_file::EncryptedFile;
use pgcmk_cryptfs::format::{slot_offset, Slot};
use pgcmk_crypto::SymmetricKey;

fn vector() -> HashMap<String, String> {
    include_str!("vectors/v2.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.split_once(" = ").expect("name = value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn bytes(v: &HashMap<String, String>, name: &str) -> Vec<u8> {
    hex::decode(&v[name]).unwrap()
}

fn volume(v: &HashMap<String, String>) -> Arc<VolumeKey> {
    let master = SymmetricKey::from_slice(&bytes(v, "master_key")).unwrap();
    let volume_id: [u8; 16] = bytes(v, "volume_id").try_into().unwrap();
    Arc::new(VolumeKey::new(master, volume_id))
}

#[test]
fn vector_decrypts_to_the_documented_plaintext() {
    let v = vector();
    let volume = volume(&v);
    assert_eq!(
        volume.key_check_value().unwrap().to_vec(),
        bytes(&v, "key_check")
    );
    let cipher = bytes(&v, "cipher_file");
    let file = EncryptedFile::open(SimulatedDisk::from_bytes(cipher), volume).unwrap();
    let len: usize = v["plaintext_len"].parse().unwrap();
    assert_eq!(file.len() as usize, len);
    let expected: Vec<u8> = (0..len).map(|i| ((i * 7 + 3) % 256) as u8).collect();
    assert_eq!(file.read(0, len).unwrap(), expected);
}

#[test]
fn vector_with_a_flipped_bit_in_a_current_slot_fails() {
    let v = vector();
    for (block, slot) in [(1, Slot::B), (2, Slot::A)] {
        let mut cipher = bytes(&v, "cipher_file");
        cipher[slot_offset(block, slot) as usize + 40] ^= 1;
        let file = EncryptedFile::open(SimulatedDisk::from_bytes(cipher), volume(&v)).unwrap();
        assert_eq!(file.bad_blocks().unwrap(), vec![block]);
    }
}
