//! The encrypted file layer against a `Vec<u8>` model: random writes at any offset
//! and size, truncations up and down, and reads must always agree.

use std::sync::Arc;

use pgcmk_cryptfs::content::VolumeKey;
use pgcmk_cryptfs::crash_sim::SimulatedDisk;
use pgcmk_cryptfs::encrypted_file::reported_plain_len;
use pgcmk_cryptfs::encrypted_file::EncryptedFile;
use pgcmk_cryptfs::format::cipher_size;
use pgcmk_cryptfs::storage::Storage;
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
        // The plaintext size follows from the cipher size and the last slot.
        let cipher_len = file.storage().size().unwrap();
        prop_assert_eq!(
            reported_plain_len(file.storage()).unwrap(),
            model.len() as u64
        );
        prop_assert_eq!(cipher_size(model.len() as u64), cipher_len);
    }
    prop_assert_eq!(file.read(0, model.len() + 1).unwrap(), model);
    Ok(())
}
