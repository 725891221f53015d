//! The encrypted file layer against a `Vec<u8>` model: random writes at any offset
//! and size, truncations up and down, and reads must always agree; after every
//! operation the cipher file has the layout `docs/format.md` §3 prescribes.

use std::sync::Arc;

use pgcmk_cryptfs::content::VolumeKey;
use pgcmk_cryptfs::crash_sim::SimulatedDisk;
use pgcmk_cryptfs::encrypted_file::reported_plain_len;
use pgcmk_cryptfs::encrypted_file::EncryptedFile;
use pgcmk_cryptfs::format::{
    current_slot, data_offset, entry_offset, group_of, group_offset, Slot, SlotEntry, BLOCK_SIZE,
    ENTRY_SIZE, GROUP_BLOCKS,
};
use pgcmk_crypto::SymmetricKey;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, len: usize, fill: u8 },
    SetLen(u64),
    Read { offset: u64, len: usize },
    Reopen,
    Sync,
}

/// Operations on files of up to about `size` bytes, reads and writes up to `io` bytes.
fn op(size: u64, io: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..size, 1..io, any::<u8>())
            .prop_map(|(offset, len, fill)| Op::Write { offset, len, fill }),
        2 => (0..size).prop_map(Op::SetLen),
        3 => (0..size + size / 8, 0..io).prop_map(|(offset, len)| Op::Read { offset, len }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Sync),
    ]
}

fn volume() -> Arc<VolumeKey> {
    Arc::new(VolumeKey::new(SymmetricKey::from_bytes([42; 32]), [1; 16]))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn matches_model(ops in proptest::collection::vec(op(40_000, 20_000), 1..40)) {
        check_against_model(ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Writes of several 128 KiB windows are sealed by two threads.
    #[test]
    fn large_writes_match_model(ops in proptest::collection::vec(op(3 << 20, 3 << 19), 1..10)) {
        check_against_model(ops)?;
    }
}

fn check_against_model(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let volume = volume();
    let mut file = EncryptedFile::open(SimulatedDisk::new(), volume.clone()).unwrap();
    let mut model: Vec<u8> = Vec::new();
    for op in ops {
        match op {
            Op::Write { offset, len, fill } => {
                let data: Vec<u8> = (0..len).map(|i| fill ^ (i as u8)).collect();
                file.write(offset, &data).unwrap();
                let end = offset as usize + len;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[offset as usize..end].copy_from_slice(&data);
            }
            Op::SetLen(len) => {
                file.set_len(len).unwrap();
                model.resize(len as usize, 0);
            }
            Op::Read { offset, len } => {
                let got = file.read(offset, len).unwrap();
                let start = (offset as usize).min(model.len());
                let end = (offset as usize + len).min(model.len());
                prop_assert_eq!(got, model[start..end].to_vec());
            }
            Op::Sync => file.sync().unwrap(),
            Op::Reopen => {
                let disk = SimulatedDisk::from_bytes(file.storage().contents());
                file = EncryptedFile::open(disk, volume.clone()).unwrap();
            }
        }
        prop_assert_eq!(file.len(), model.len() as u64);
        // The plaintext size follows from the last block's entries.
        prop_assert_eq!(
            reported_plain_len(file.storage()).unwrap(),
            model.len() as u64
        );
        check_layout(&file.storage().contents(), model.len() as u64)?;
    }
    prop_assert_eq!(file.read(0, model.len() + 1).unwrap(), model);
    Ok(())
}

/// The cipher file of a plaintext of `plain_len` bytes: empty for an empty file;
/// otherwise every block up to the last has a current slot of the right length whose
/// ciphertext (unless it is a hole) lies inside the file, every entry after the last block in its group is
/// empty (the invariant of §3.2), and the file ends within the last block's group.
fn check_layout(cipher: &[u8], plain_len: u64) -> Result<(), TestCaseError> {
    if plain_len == 0 {
        prop_assert_eq!(cipher.len(), 0, "an empty file has an empty cipher file");
        return Ok(());
    }
    let cipher_len = cipher.len() as u64;
    let last = (plain_len - 1) / BLOCK_SIZE;
    let group_end = group_offset(group_of(last) + 1);
    prop_assert!(
        cipher_len <= group_end,
        "cipher file of {} bytes reaches past the last block's group (ends at {})",
        cipher_len,
        group_end
    );
    let entry = |block, slot| {
        let at = entry_offset(block, slot);
        let mut bytes = [0u8; ENTRY_SIZE as usize];
        if at < cipher_len {
            let end = (at + ENTRY_SIZE).min(cipher_len);
            bytes[..(end - at) as usize].copy_from_slice(&cipher[at as usize..end as usize]);
        }
        SlotEntry::parse(&bytes)
    };
    for block in 0..(group_of(last) + 1) * GROUP_BLOCKS {
        let (a, b) = (entry(block, Slot::A), entry(block, Slot::B));
        if block > last {
            prop_assert!(
                a.is_empty() && b.is_empty(),
                "block {} past the last block {} has an entry",
                block,
                last
            );
            continue;
        }
        let Some(slot) = current_slot(&a, &b) else {
            return Err(TestCaseError::fail(format!("block {block} has no slot")));
        };
        let current = if slot == Slot::A { a } else { b };
        let want = if block == last {
            plain_len - last * BLOCK_SIZE
        } else {
            BLOCK_SIZE
        };
        prop_assert_eq!(
            u64::from(current.plain_len),
            want,
            "length of block {}",
            block
        );
        prop_assert!(
            current.hole || data_offset(block, slot) + want <= cipher_len,
            "ciphertext of block {} lies past the end of the cipher file",
            block
        );
    }
    Ok(())
}
