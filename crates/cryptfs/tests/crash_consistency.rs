//! Crash consistency of the encrypted file layer, per byte (in the spirit of redb's
//! crash tests).
//!
//! For each seed: random writes, truncations (to zero among them), reads, syncs and
//! closes (the file dropped and opened again, as PostgreSQL closes and reopens relation
//! files) on an [`EncryptedFile`] over a [`SimulatedDisk`] — a random mix, or a workload that
//! appends to and rewrites a fsynced partial tail block (PostgreSQL's WAL), or one
//! that rewrites middle blocks after a sync; then a crash that keeps a random subset
//! of the unsynced operations, each torn at 512-byte sectors, and crash recovery
//! (sometimes itself crashed and run again), as the mount runs it
//! ([`EncryptedFile::open_after_crash`]). Then, against a model:
//! - every byte covered by the last completed sync that no later operation touched
//!   reads back exactly, including unchanged bytes of a rewritten block;
//! - every block reads as that block in one of the states since the last sync, or
//!   fails authentication cleanly — never as other bytes.

use std::sync::Arc;

use pgcmk_cryptfs::content::VolumeKey;
use pgcmk_cryptfs::crash_sim::SimulatedDisk;
use pgcmk_cryptfs::encrypted_file::EncryptedFile;
use pgcmk_cryptfs::format::BLOCK_SIZE;
use pgcmk_cryptfs::Error;
use pgcmk_crypto::SymmetricKey;

const SEEDS: u64 = 1200;
const B: usize = BLOCK_SIZE as usize;

#[path = "churn/rng.rs"]
mod rng;

use rng::Rng;

/// What the test knows about the file since the last sync.
struct Model {
    /// Plaintext after each operation since the last sync; `[0]` is the synced state.
    states: Vec<Vec<u8>>,
    /// Per byte offset: did any operation since the last sync change or remove it?
    touched: Vec<bool>,
    shrunk: bool,
}

impl Model {
    fn new(synced: Vec<u8>) -> Self {
        Self {
            touched: vec![false; synced.len()],
            states: vec![synced],
            shrunk: false,
        }
    }

    fn current(&self) -> &Vec<u8> {
        self.states.last().expect("never empty")
    }

    fn touch(&mut self, from: usize, to: usize) {
        let to = to.min(self.touched.len());
        for byte in self.touched.iter_mut().take(to).skip(from) {
            *byte = true;
        }
    }

    fn write(&mut self, offset: usize, data: &[u8]) {
        let mut next = self.current().clone();
        // A write past the end also changes the gap it fills with zeros.
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
        // Only the bytes cut off (or added) change: the kept bytes of a re-sealed
        // last block are the same bytes and must survive a crash.
        self.touch(len.min(old), len.max(old));
        self.shrunk |= len < old;
        grow(&mut next, len);
        self.states.push(next);
    }

    fn synced(&mut self) {
        let current = self.current().clone();
        *self = Model::new(current);
    }

    /// A synced byte that no operation since touched: it must read back exactly.
    fn stable(&self, offset: usize) -> bool {
        offset < self.states[0].len() && !self.touched[offset]
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

/// Checks the recovered file against the model; returns the recovered plaintext
/// (failed blocks as zeros) and whether any block failed.
fn check_after_crash(
    file: &EncryptedFile<Arc<SimulatedDisk>>,
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
    if let Some(lost) = (len..synced.len()).find(|&i| model.stable(i)) {
        panic!(
            "seed {seed}: synced byte {lost} is gone (length {len}, synced {})",
            synced.len()
        );
    }
    if !model.shrunk {
        assert!(len >= synced.len(), "seed {seed}: synced length lost");
    }
    let mut recovered = vec![0u8; len];
    let mut failed = false;
    for block in 0..len.div_ceil(B) as u64 {
        let start = block as usize * B;
        let end = len.min(start + B);
        match file.read(block * BLOCK_SIZE, B) {
            Ok(bytes) => {
                assert!(
                    model
                        .states
                        .iter()
                        .any(|s| block_of(s, block) == Some(bytes.as_slice())),
                    "seed {seed}: block {block} reads as bytes no operation wrote"
                );
                if let Some(i) =
                    (start..end).find(|&i| model.stable(i) && bytes[i - start] != synced[i])
                {
                    panic!("seed {seed}: synced byte {i} changed");
                }
                recovered[start..end].copy_from_slice(&bytes);
            }
            Err(Error::Tampered { .. }) => {
                if let Some(i) = (start..end).find(|&i| model.stable(i)) {
                    panic!("seed {seed}: block {block} fails after the crash, but its byte {i} was synced and never touched again");
                }
                failed = true;
            }
            Err(other) => panic!("seed {seed}: block {block}: unexpected error {other}"),
        }
    }
    (recovered, failed)
}

/// The workload a seed runs.
#[derive(Clone, Copy, Debug)]
enum Workload {
    /// Writes anywhere, truncations up and down, reads, syncs.
    Mixed,
    /// Small appends with frequent syncs: the last, partial block is rewritten in
    /// place after every sync, like PostgreSQL's WAL page.
    WalTail,
    /// Partial rewrites inside existing blocks after a sync.
    RewriteMiddle,
}

fn next_op(rng: &mut Rng, workload: Workload, len: u64) -> Op {
    match workload {
        Workload::Mixed => match rng.below(10) {
            0..=5 => {
                let offset = match rng.below(3) {
                    0 => rng.below(len + 1),
                    1 => rng.below(len / BLOCK_SIZE + 2) * BLOCK_SIZE,
                    _ => len + rng.below(3 * BLOCK_SIZE),
                };
                let size = match rng.below(3) {
                    0 => rng.below(64) + 1,
                    1 => (rng.below(3) + 1) * BLOCK_SIZE,
                    _ => rng.below(3 * BLOCK_SIZE) + 1,
                };
                Op::Write(offset, size as usize)
            }
            6 => Op::SetLen(rng.below(len + 2 * BLOCK_SIZE)),
            // Emptied, as PostgreSQL's DROP truncates a relation file before unlinking it,
            // then maybe written again (a new header, file id and key).
            7 if rng.below(3) == 0 => Op::SetLen(0),
            7 => Op::Reopen,
            8 => Op::Sync,
            _ => Op::Read(rng.below(len + 1), rng.below(2 * BLOCK_SIZE) as usize),
        },
        Workload::WalTail => match rng.below(8) {
            0..=3 => Op::Write(len, rng.below(700) as usize + 1),
            // Rewrite the tail of the last block (a WAL page flushed again).
            4 => Op::Write(
                len.saturating_sub(rng.below(300)),
                rng.below(600) as usize + 1,
            ),
            5 | 6 => Op::Sync,
            _ => Op::Read(rng.below(len + 1), rng.below(2 * BLOCK_SIZE) as usize),
        },
        Workload::RewriteMiddle => match rng.below(8) {
            _ if len < 4 * BLOCK_SIZE => Op::Write(len, 2 * B + rng.below(BLOCK_SIZE) as usize),
            0..=3 => Op::Write(rng.below(len), rng.below(3 * BLOCK_SIZE) as usize + 1),
            4 => Op::Reopen,
            5 | 6 => Op::Sync,
            _ => Op::Read(rng.below(len + 1), rng.below(2 * BLOCK_SIZE) as usize),
        },
    }
}

enum Op {
    Write(u64, usize),
    SetLen(u64),
    Sync,
    Read(u64, usize),
    /// Close (drop) and open again, without a sync: what the file remembers in memory
    /// about pending slots is gone.
    Reopen,
}

/// Totals over all seeds, to show that the crashes exercise recovery.
#[derive(Default)]
struct Totals {
    repaired: usize,
    dropped: usize,
    crashed_recoveries: usize,
}

/// Reopens a crashed disk and runs crash recovery as the mount does; every few seeds
/// the recovery is itself cut short by a crash (its sync fails, its writes are torn)
/// and run again.
fn reopen_and_recover(
    crashed: SimulatedDisk,
    volume: &Arc<VolumeKey>,
    rng: &mut Rng,
    seed: u64,
    totals: &mut Totals,
) -> EncryptedFile<Arc<SimulatedDisk>> {
    let mut disk = Arc::new(crashed);
    if rng.below(3) == 0 {
        disk.fail_syncs(true);
        if EncryptedFile::open_after_crash(disk.clone(), volume.clone()).is_err() {
            totals.crashed_recoveries += 1;
        }
        disk = Arc::new(disk.crash(&mut || rng.next()));
    }
    let (file, found) = EncryptedFile::open_after_crash(disk, volume.clone())
        .unwrap_or_else(|e| panic!("seed {seed}: recovery failed: {e}"));
    totals.repaired += found.repaired.len();
    totals.dropped += found.dropped.len();
    file
}

fn run_seed(seed: u64, totals: &mut Totals) {
    let mut rng = Rng::new(seed);
    let workload = match seed % 3 {
        0 => Workload::Mixed,
        1 => Workload::WalTail,
        _ => Workload::RewriteMiddle,
    };
    let volume = Arc::new(VolumeKey::new(
        SymmetricKey::from_bytes([seed as u8; 32]),
        [3; 16],
    ));
    let open = |disk| EncryptedFile::open(disk, volume.clone()).unwrap();
    let mut file = open(Arc::new(SimulatedDisk::new()));
    let mut model = Model::new(Vec::new());
    for _round in 0..3 {
        for _ in 0..rng.below(24) + 1 {
            let len = model.current().len() as u64;
            match next_op(&mut rng, workload, len) {
                Op::Write(offset, size) => {
                    let data = rng.bytes(size);
                    file.write(offset, &data).unwrap();
                    model.write(offset as usize, &data);
                }
                Op::SetLen(new_len) => {
                    file.set_len(new_len).unwrap();
                    model.set_len(new_len as usize);
                }
                Op::Sync => {
                    file.sync().unwrap();
                    model.synced();
                }
                Op::Reopen => {
                    let disk = file.storage().clone();
                    drop(file);
                    file = open(disk);
                }
                Op::Read(offset, size) => {
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
        file = reopen_and_recover(crashed, &volume, &mut rng, seed, totals);
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
fn every_crash_keeps_every_synced_byte_and_never_returns_foreign_bytes() {
    let mut totals = Totals::default();
    for seed in 0..SEEDS {
        run_seed(seed, &mut totals);
    }
    // The property above must come from recovery doing its job, not from crashes
    // that never tear anything.
    eprintln!(
        "{SEEDS} seeds: {} torn blocks repaired, {} incomplete blocks dropped, {} recoveries crashed",
        totals.repaired, totals.dropped, totals.crashed_recoveries
    );
    assert!(
        totals.repaired > SEEDS as usize / 4,
        "too few torn blocks repaired"
    );
    assert!(totals.dropped > 0 && totals.crashed_recoveries > 0);
}

#[test]
fn closing_a_file_with_unsynced_writes_keeps_the_durable_version_safe() {
    let volume = Arc::new(VolumeKey::new(SymmetricKey::from_bytes([7; 32]), [3; 16]));
    let disk = Arc::new(SimulatedDisk::new());
    let open = || EncryptedFile::open(disk.clone(), volume.clone()).unwrap();
    let file = open();
    file.write(0, &[1; B]).unwrap();
    file.sync().unwrap();
    file.write(0, &[2; B]).unwrap();
    // Closed without a sync; which slot is pending is forgotten with it.
    drop(file);
    let file = open();
    file.write(0, &[3; B]).unwrap();
    // Tear every unsynced write: keep its first sector only.
    let mut first_sector = [0u64, 1, 1, 1, 1, 1, 1, 1, 1].into_iter().cycle();
    let crashed = disk.crash(&mut || first_sector.next().unwrap());
    let (file, _) = EncryptedFile::open_after_crash(crashed, volume.clone()).unwrap();
    let got = file
        .read(0, B)
        .expect("a synced block must survive the crash");
    assert_eq!(got.len(), B, "the synced block is gone");
    assert!(got == [1; B] || got == [2; B], "block reads as other bytes");
}

#[test]
fn a_new_file_written_and_closed_costs_no_sync_and_a_crash_leaves_it_empty_or_whole() {
    let volume = Arc::new(VolumeKey::new(SymmetricKey::from_bytes([8; 32]), [3; 16]));
    let data = [5u8; 100];
    for seed in 0..64 {
        let disk = Arc::new(SimulatedDisk::new());
        let file = EncryptedFile::open(disk.clone(), volume.clone()).unwrap();
        file.write(0, &data).unwrap();
        drop(file);
        assert_eq!(disk.syncs(), 0, "creating and closing a file synced it");
        let mut rng = Rng::new(seed);
        let crashed = disk.crash(&mut || rng.next());
        let (file, _) = EncryptedFile::open_after_crash(crashed, volume.clone()).unwrap();
        let got = file.read(0, 200).unwrap();
        assert!(
            got.is_empty() || got == data,
            "seed {seed}: a never-synced new file reads as {} other bytes",
            got.len()
        );
    }
}

#[test]
fn a_file_emptied_and_closed_never_shows_an_older_version_when_written_again() {
    emptied_closed_and_written_again(false);
}

/// The mount keeps the emptied mark of a closed file for its next open instead of
/// syncing at close (a DROP empties and closes every fork): the next open syncs
/// before its new header, so the same crash never shows an older version either.
#[test]
fn an_emptied_mark_handed_to_the_next_open_replaces_the_sync_at_close() {
    emptied_closed_and_written_again(true);
}

/// Block 0 synced at generations 1 to 3, then emptied (PostgreSQL's DROP), closed,
/// opened again and written (slot A of block 0 gets a new file's generation 1), then
/// a crash. With `hand_over` the emptied mark goes from the closed file to the next
/// open ([`EncryptedFile::take_emptied`], [`EncryptedFile::mark_emptied`]), as the
/// mount does, and the close must not sync.
fn emptied_closed_and_written_again(hand_over: bool) {
    let volume = Arc::new(VolumeKey::new(SymmetricKey::from_bytes([9; 32]), [3; 16]));
    for seed in 0..64 {
        let disk = Arc::new(SimulatedDisk::new());
        let open = || EncryptedFile::open(disk.clone(), volume.clone()).unwrap();
        let file = open();
        // Block 0 ends with generation 3 in slot A over generation 2 ([2]) in slot B.
        for byte in [1, 2, 4] {
            file.write(0, &[byte; B]).unwrap();
            file.sync().unwrap();
        }
        file.set_len(0).unwrap();
        let syncs = disk.syncs();
        let mark = hand_over && file.take_emptied();
        assert_eq!(mark, hand_over, "an emptied file had no emptied mark");
        drop(file);
        if hand_over {
            assert_eq!(
                disk.syncs(),
                syncs,
                "closing synced a file whose mark was taken"
            );
        }
        let file = open();
        if mark {
            file.mark_emptied();
        }
        file.write(0, &[3; B]).unwrap();
        let mut rng = Rng::new(seed);
        let crashed = disk.crash(&mut || rng.next());
        let (file, _) = EncryptedFile::open_after_crash(crashed, volume.clone()).unwrap();
        if let Ok(got) = file.read(0, B) {
            assert!(
                got.is_empty() || got == [4; B] || got == [3; B],
                "seed {seed}: block 0 reads as a version older than its last synced one"
            );
        }
    }
}
