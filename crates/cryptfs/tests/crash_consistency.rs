//! Crash consistency of the encrypted file layer (in the spirit of redb's crash tests).
//!
//! For each seed: random writes, truncations, reads and syncs on an
//! [`EncryptedFile`] over a [`SimulatedDisk`]; then a crash that keeps a random
//! subset of the unsynced operations, each torn at 512-byte sectors. The file must
//! reopen; every block no unsynced operation touched must read back exactly as
//! synced; a touched block must read as one of its versions since the last sync, or
//! fail authentication cleanly — never as other bytes. Compared against a model.

use std::collections::BTreeSet;
use std::sync::Arc;

use pgcmk_cryptfs::content::VolumeKey;
use pgcmk_cryptfs::crash_sim::SimulatedDisk;
use pgcmk_cryptfs::encrypted_file::EncryptedFile;
use pgcmk_cryptfs::format::BLOCK_SIZE;
use pgcmk_cryptfs::Error;
use pgcmk_crypto::SymmetricKey;

const SEEDS: u64 = 1200;
const B: usize = BLOCK_SIZE as usize;

/// SplitMix64: small, deterministic, good enough to drive a test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What the test knows about the file since the last sync.
struct Model {
    /// Plaintext after each operation since the last sync; `[0]` is the synced state.
    states: Vec<Vec<u8>>,
    /// Blocks any unsynced operation touched.
    touched: BTreeSet<u64>,
    shrunk: bool,
}

impl Model {
    fn new(synced: Vec<u8>) -> Self {
        Self {
            states: vec![synced],
            touched: BTreeSet::new(),
            shrunk: false,
        }
    }

    fn current(&self) -> &Vec<u8> {
        self.states.last().expect("never empty")
    }

    fn touch(&mut self, from: usize, to: usize) {
        if to > from {
            self.touched
                .extend((from / B) as u64..=((to - 1) / B) as u64);
        }
    }

    fn write(&mut self, offset: usize, data: &[u8]) {
        let mut next = self.current().clone();
        self.touch(offset.min(next.len()), offset + data.len());
        if next.len() < offset + data.len() {
            grow(&mut next, offset + data.len());
        }
        next[offset..offset + data.len()].copy_from_slice(data);
        self.states.push(next);
    }

    fn set_len(&mut self, len: usize) {
        let mut next = self.current().clone();
        let old = next.len();
        self.touch(len.min(old), len.max(old));
        if len < old {
            self.shrunk = true;
            // The new last block is re-sealed at its shorter length.
            self.touch(len.saturating_sub(1), len);
        }
        grow(&mut next, len);
        self.states.push(next);
    }

    fn synced(&mut self) {
        let current = self.current().clone();
        *self = Model::new(current);
    }
}

/// Truncates or zero-extends; faster than `Vec::resize` in debug builds.
fn grow(v: &mut Vec<u8>, len: usize) {
    if len <= v.len() {
        v.truncate(len);
    } else {
        let mut grown = vec![0u8; len];
        grown[..v.len()].copy_from_slice(v);
        *v = grown;
    }
}

fn block_of(state: &[u8], block: u64) -> Option<&[u8]> {
    let start = block as usize * B;
    (start < state.len()).then(|| &state[start..state.len().min(start + B)])
}

/// Distinct bytes per call (so versions of a block differ), cheap in debug builds.
fn random_data(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        data.extend_from_slice(&rng.next().to_le_bytes());
    }
    data.truncate(len);
    data
}

/// Checks the reopened file against the model; returns the recovered plaintext
/// (failed blocks as zeros) and whether any block failed.
fn check_after_crash(
    file: &EncryptedFile<SimulatedDisk>,
    model: &Model,
    seed: u64,
) -> (Vec<u8>, bool) {
    let synced = &model.states[0];
    let len = file.len() as usize;
    let longest = model.states.iter().map(Vec::len).max().unwrap_or(0);
    assert!(
        len <= longest,
        "seed {seed}: length {len} exceeds every state ({longest})"
    );
    if !model.shrunk {
        assert!(
            len >= synced.len(),
            "seed {seed}: synced length {} lost (now {len})",
            synced.len()
        );
    }
    let mut recovered = vec![0u8; len];
    let mut failed = false;
    for block in 0..len.div_ceil(B) as u64 {
        let read = file.read(block * BLOCK_SIZE, B);
        let stable = !model.touched.contains(&block) && block_of(synced, block).is_some();
        match read {
            Ok(bytes) => {
                if stable {
                    assert_eq!(
                        Some(bytes.as_slice()),
                        block_of(synced, block),
                        "seed {seed}: synced block {block} changed"
                    );
                } else {
                    assert!(
                        model
                            .states
                            .iter()
                            .any(|s| block_of(s, block) == Some(bytes.as_slice())),
                        "seed {seed}: block {block} reads as bytes no operation wrote"
                    );
                }
                let start = block as usize * B;
                recovered[start..start + bytes.len()].copy_from_slice(&bytes);
            }
            Err(Error::Tampered { .. }) => {
                assert!(
                    !stable,
                    "seed {seed}: synced, untouched block {block} fails after crash"
                );
                failed = true;
            }
            Err(other) => panic!("seed {seed}: block {block}: unexpected error {other}"),
        }
    }
    (recovered, failed)
}

fn run_seed(seed: u64) {
    let mut rng = Rng(seed);
    let volume = Arc::new(VolumeKey::new(
        SymmetricKey::from_bytes([seed as u8; 32]),
        [3; 16],
    ));
    let mut file = EncryptedFile::open(SimulatedDisk::new(), volume.clone()).unwrap();
    let mut model = Model::new(Vec::new());
    for _round in 0..3 {
        for _ in 0..rng.below(24) + 1 {
            let len = model.current().len() as u64;
            match rng.below(10) {
                0..=5 => {
                    let offset = match rng.below(3) {
                        0 => rng.below(len + 1),
                        1 => rng.below(len / BLOCK_SIZE + 2) * BLOCK_SIZE,
                        _ => len + rng.below(3 * BLOCK_SIZE),
                    } as usize;
                    let size = match rng.below(3) {
                        0 => rng.below(64) + 1,
                        1 => (rng.below(3) + 1) * BLOCK_SIZE,
                        _ => rng.below(3 * BLOCK_SIZE) + 1,
                    } as usize;
                    let data = random_data(&mut rng, size);
                    file.write(offset as u64, &data).unwrap();
                    model.write(offset, &data);
                }
                6 | 7 => {
                    let new_len = rng.below(len + 2 * BLOCK_SIZE) as usize;
                    file.set_len(new_len as u64).unwrap();
                    model.set_len(new_len);
                }
                8 => {
                    file.sync().unwrap();
                    model.synced();
                }
                _ => {
                    let offset = rng.below(len + 1);
                    let size = rng.below(2 * BLOCK_SIZE) as usize;
                    let got = file.read(offset, size).unwrap();
                    let current = model.current();
                    let end = current.len().min(offset as usize + size);
                    assert_eq!(
                        got,
                        current[(offset as usize).min(end)..end],
                        "seed {seed}: read before crash"
                    );
                }
            }
            assert_eq!(
                file.len() as usize,
                model.current().len(),
                "seed {seed}: length"
            );
        }
        let crashed = file.storage().crash(&mut || rng.next());
        file = EncryptedFile::open(crashed, volume.clone())
            .unwrap_or_else(|e| panic!("seed {seed}: file does not reopen after a crash: {e}"));
        let (recovered, failed) = check_after_crash(&file, &model, seed);
        if failed {
            // Start the next round from a clean copy of what survived.
            file.set_len(0).unwrap();
            file.write(0, &recovered).unwrap();
        }
        file.sync().unwrap();
        assert_eq!(
            file.read(0, recovered.len() + 1).unwrap(),
            recovered,
            "seed {seed}"
        );
        model = Model::new(recovered);
    }
}

#[test]
fn every_crash_keeps_synced_blocks_and_never_returns_foreign_bytes() {
    for seed in 0..SEEDS {
        run_seed(seed);
    }
}
