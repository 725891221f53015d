#![no_main]
//! A cipher file as it lies in the cipher directory (header, slot-entry metadata
//! pages, block slots) opened, read whole, verified block by block, checked and
//! recovered, as a mount, `pgcmk fs fsck` and crash recovery do. What it claims
//! stays within what its metadata pages can describe. The key and volume
//! id are those the seeds in `corpus/cryptfs_file` were written with by a real
//! mount, so the fuzzer starts from files that authenticate.

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use pgcmk_cryptfs::content::VolumeKey;
use pgcmk_cryptfs::crash_sim::SimulatedDisk;
use pgcmk_cryptfs::encrypted_file::EncryptedFile;
use pgcmk_cryptfs::format::{groups_in, BLOCK_SIZE, GROUP_BLOCKS};
use pgcmk_cryptfs::key_file::parse_key;

/// The seeds' key file (a test key: it protects nothing).
const KEY_FILE: &[u8] = b"f5caabbb4064016440fcc1c1f97db94b184a5123624ac70605e2e7504b0fe2c3\n";
/// The seeds' `volume_id` (from their `pgcmk-cryptfs.conf`).
const VOLUME_ID: [u8; 16] = [
    0xa3, 0xb6, 0xe6, 0xad, 0xee, 0x4d, 0xbd, 0xa5, 0xa7, 0xa6, 0xbd, 0xe2, 0x85, 0xb9, 0x83, 0xed,
];

fuzz_target!(|cipher: &[u8]| {
    let master = parse_key(KEY_FILE).expect("the seeds' key file parses");
    let volume = Arc::new(VolumeKey::new(master, VOLUME_ID));
    let Ok(mut file) = EncryptedFile::open(SimulatedDisk::from_bytes(cipher.to_vec()), volume)
    else {
        return;
    };
    // Holes (format 4) have no data pages, so a file may be longer than its cipher
    // file, but never longer than the groups whose metadata pages it holds.
    let len = file.len();
    let groups = groups_in(cipher.len() as u64);
    assert!(
        len <= groups * GROUP_BLOCKS * BLOCK_SIZE,
        "a file of {groups} groups claims {len} plain bytes"
    );
    if let Ok(plain) = file.read(0, len as usize) {
        assert_eq!(
            plain.len() as u64,
            len,
            "a whole-file read returns the file"
        );
    }
    let _ = file.bad_blocks();
    let _ = file.check_recovery();
    let _ = file.recover();
});
