//! Crash consistency of directory operations as PostgreSQL performs them, over a
//! simulated directory ([`SimulatedDir`]) of encrypted files: what survives a crash at
//! any step matches what the fsyncs before it promised.
//!
//! - a new WAL segment: created under a temporary name, filled, fsynced, renamed to
//!   its segment name, the directory fsynced, then written in place and fdatasynced
//!   (PostgreSQL's `durable_rename`);
//! - relation files: created, written, fsynced with their directory; one unlinked
//!   while still open (and written through the open handle), the unlink made durable
//!   by the directory's fsync;
//! - `pg_control` replaced by write + fsync + rename + fsync of the directory;
//! - a relation's life: created, written and closed without a sync (as a backend's
//!   smgr closes files at the end of a transaction), reopened, fsynced, rewritten,
//!   emptied and written again, emptied and unlinked (PostgreSQL's DROP truncates the
//!   file to 0 first), and small files created and closed without any sync (temporary
//!   tables, DDL).
//!
//! After each crash every surviving file is recovered as the mount recovers it
//! ([`EncryptedFile::open_after_crash`]), and:
//! - a name whose creation, rename or unlink a directory fsync covered (and that no
//!   later operation touched) is there, leading to the same file — or is gone;
//! - every block of a surviving file reads as it was at the file's last fsync if no
//!   write since touched it, else as one of the versions written since, or fails
//!   with EIO — never as other bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use pgcmk_cryptfs::content::VolumeKey;
use pgcmk_cryptfs::crash_sim::{InodeId, SimulatedDir, SimulatedDisk};
use pgcmk_cryptfs::encrypted_file::EncryptedFile;
use pgcmk_cryptfs::format::BLOCK_SIZE;
use pgcmk_crypto::SymmetricKey;

const SEEDS: u64 = 300;
const B: usize = BLOCK_SIZE as usize;
const SEGMENT: &str = "000000010000000000000001";

#[path = "churn/rng.rs"]
mod rng;

use rng::Rng;

/// One step of a sequence. Files are written through the handle opened when they
/// were created (`label`: the name they were created with), whatever their name now.
enum Step {
    Create(&'static str),
    Write(&'static str, u64, Vec<u8>),
    SyncFile(&'static str),
    /// Truncates (or extends) through the open handle.
    SetLen(&'static str, u64),
    /// Closes the handle and opens the file again by its label's inode (no sync).
    Reopen(&'static str),
    Rename(&'static str, &'static str),
    Unlink(&'static str),
    SyncDir,
}

fn wal_segment(rng: &mut Rng) -> Vec<Step> {
    let size = (8 + rng.below(24) as usize) * B;
    let mut steps = vec![
        Step::Create("xlogtemp"),
        Step::Write("xlogtemp", 0, vec![0; size]),
        Step::SyncFile("xlogtemp"),
        Step::Rename("xlogtemp", SEGMENT),
        Step::SyncDir,
    ];
    // WAL records: written in place, the last partial page rewritten, fdatasynced.
    let mut at = 0u64;
    for _ in 0..rng.below(6) + 2 {
        let len = rng.below(3 * B as u64) as usize + 1;
        steps.push(Step::Write("xlogtemp", at, rng.bytes(len)));
        if rng.below(2) == 0 {
            steps.push(Step::SyncFile("xlogtemp"));
        }
        at = (at + len as u64).min(size as u64 - 3 * B as u64);
    }
    steps
}

fn relation_files(rng: &mut Rng) -> Vec<Step> {
    vec![
        Step::Create("16384"),
        Step::Write("16384", 0, rng.bytes(3 * B)),
        Step::SyncFile("16384"),
        Step::SyncDir,
        Step::Write("16384", 3 * B as u64, rng.bytes(2 * B)),
        // Dropped while a backend still has it open and writes to it.
        Step::Unlink("16384"),
        Step::Write("16384", B as u64, rng.bytes(B)),
        Step::Create("16385"),
        Step::Write("16385", 0, rng.bytes(2 * B + 100)),
        Step::SyncFile("16385"),
        Step::SyncDir,
        Step::Write("16385", 0, rng.bytes(B)),
        Step::Create("16386"),
        Step::Write("16386", 0, rng.bytes(B)),
        Step::SyncFile("16386"),
    ]
}

fn pg_control(rng: &mut Rng) -> Vec<Step> {
    let mut steps = vec![
        Step::Create("pg_control"),
        Step::Write("pg_control", 0, rng.bytes(2 * B)),
        Step::SyncFile("pg_control"),
        Step::SyncDir,
    ];
    for tmp in ["pg_control.tmp1", "pg_control.tmp2"] {
        steps.extend([
            Step::Create(tmp),
            Step::Write(tmp, 0, rng.bytes(2 * B)),
            Step::SyncFile(tmp),
            Step::Rename(tmp, "pg_control"),
        ]);
        if rng.below(2) == 0 {
            steps.push(Step::SyncDir);
        }
    }
    steps
}

fn relation_life(rng: &mut Rng) -> Vec<Step> {
    let mut steps = vec![
        Step::Create("16400"),
        Step::Write("16400", 0, rng.bytes(2 * B + 300)),
        Step::Reopen("16400"),
        Step::Write("16400", 2 * B as u64 + 300, rng.bytes(B)),
        Step::SyncFile("16400"),
        Step::SyncDir,
        Step::Write("16400", B as u64, rng.bytes(B)),
        Step::Reopen("16400"),
        Step::Write("16400", 100, rng.bytes(B)),
        Step::SyncFile("16400"),
        Step::Reopen("16400"),
        Step::SetLen("16400", 0),
        Step::Write("16400", 0, rng.bytes(B + 50)),
        Step::Reopen("16400"),
        Step::Write("16400", 10, rng.bytes(100)),
    ];
    if rng.below(2) == 0 {
        steps.push(Step::SyncFile("16400"));
    }
    for name in ["t1", "t2", "t3"] {
        steps.extend([
            Step::Create(name),
            Step::Write(name, 0, rng.bytes(100)),
            Step::Reopen(name),
        ]);
    }
    steps.extend([
        Step::Unlink("t2"),
        Step::SetLen("16400", 0),
        Step::Unlink("16400"),
        Step::SyncDir,
    ]);
    steps
}

/// What the test knows about one file: its content after every write since its last
/// fsync (`[0]`: as of that fsync), and which bytes a write since then touched.
#[derive(Default)]
struct FileModel {
    states: Vec<Vec<u8>>,
    touched: BTreeSet<usize>,
}

impl FileModel {
    fn current(&self) -> &[u8] {
        self.states.last().map_or(&[], |s| s)
    }

    fn write(&mut self, offset: usize, data: &[u8]) {
        let mut next = self.current().to_vec();
        if next.len() < offset + data.len() {
            next.resize(offset + data.len(), 0);
        }
        next[offset..offset + data.len()].copy_from_slice(data);
        self.touched
            .extend(offset / B..(offset + data.len()).div_ceil(B));
        self.states.push(next);
    }

    fn set_len(&mut self, len: usize) {
        let mut next = self.current().to_vec();
        let old = next.len();
        next.resize(len, 0);
        self.touched
            .extend(len.min(old) / B..len.max(old).div_ceil(B));
        self.states.push(next);
    }

    fn synced(&mut self) {
        let current = self.current().to_vec();
        self.states = vec![current];
        self.touched.clear();
    }

    /// Checks a recovered file against the model, block by block.
    fn check(&self, file: &EncryptedFile<Arc<SimulatedDisk>>, what: &str) {
        let synced = self.states.first().map_or(0, Vec::len);
        let len = file.len() as usize;
        let longest = self.states.iter().map(Vec::len).max().unwrap_or(0);
        assert!(
            len <= longest,
            "{what}: {len} bytes, never written that long"
        );
        for block in 0..synced.div_ceil(B).max(len.div_ceil(B)) {
            let at = block * B;
            let got = file.read(at as u64, B);
            let stable = !self.touched.contains(&block);
            let versions: Vec<&[u8]> = self
                .states
                .iter()
                .map(|s| &s[at.min(s.len())..s.len().min(at + B)])
                .collect();
            match got {
                Ok(bytes) if stable && block * B < synced => assert_eq!(
                    bytes, versions[0],
                    "{what}: block {block} was fsynced and not written since"
                ),
                Ok(bytes) => assert!(
                    versions
                        .iter()
                        .any(|v| v.starts_with(&bytes) || bytes == *v),
                    "{what}: block {block} reads as bytes never written to it"
                ),
                Err(e) => assert!(!stable, "{what}: fsynced block {block} fails: {e}"),
            }
        }
    }
}

/// Runs `steps[..crash_at]`, crashes, and checks what survived.
fn run(steps: &[Step], crash_at: usize, rng: &mut Rng, volume: &Arc<VolumeKey>, seed: u64) {
    let dir = SimulatedDir::new();
    let mut handles: HashMap<&str, (InodeId, EncryptedFile<Arc<SimulatedDisk>>)> = HashMap::new();
    let mut files: BTreeMap<InodeId, FileModel> = BTreeMap::new();
    // Names as of the last directory fsync, and names touched since.
    let mut durable: BTreeMap<String, InodeId> = BTreeMap::new();
    let mut touched: BTreeSet<String> = BTreeSet::new();
    for step in &steps[..crash_at] {
        match step {
            Step::Create(name) => {
                let (id, disk) = dir.create(name).unwrap();
                let file = EncryptedFile::open(disk, volume.clone()).unwrap();
                handles.insert(name, (id, file));
                files.insert(id, FileModel::default());
                touched.insert(name.to_string());
            }
            Step::Write(label, offset, data) => {
                let (id, file) = &handles[label];
                file.write(*offset, data).unwrap();
                files.get_mut(id).unwrap().write(*offset as usize, data);
            }
            Step::SetLen(label, len) => {
                let (id, file) = &handles[label];
                file.set_len(*len).unwrap();
                files.get_mut(id).unwrap().set_len(*len as usize);
            }
            Step::Reopen(label) => {
                let (id, file) = handles.remove(label).unwrap();
                let disk = file.storage().clone();
                drop(file);
                handles.insert(
                    label,
                    (id, EncryptedFile::open(disk, volume.clone()).unwrap()),
                );
            }
            Step::SyncFile(label) => {
                let (id, file) = &handles[label];
                file.sync().unwrap();
                files.get_mut(id).unwrap().synced();
            }
            Step::Rename(from, to) => {
                dir.rename(from, to).unwrap();
                touched.extend([from.to_string(), to.to_string()]);
            }
            Step::Unlink(name) => {
                dir.unlink(name).unwrap();
                touched.insert(name.to_string());
            }
            Step::SyncDir => {
                dir.sync();
                durable = dir.entries().into_iter().collect();
                touched.clear();
            }
        }
    }
    let crashed = dir.crash(&mut || rng.next());
    // The crashed copies no longer share anything with the live files.
    drop(handles);
    let survived: BTreeMap<String, InodeId> = crashed.entries().into_iter().collect();
    let what = |name: &str| format!("seed {seed}, crash after step {crash_at}: {name}");
    for (name, id) in &durable {
        if !touched.contains(name) {
            assert_eq!(
                survived.get(name),
                Some(id),
                "{}: durable name lost",
                what(name)
            );
        }
    }
    for name in survived.keys() {
        assert!(
            durable.contains_key(name) || touched.contains(name),
            "{}: a name that was durably removed came back",
            what(name)
        );
    }
    for (name, id) in &survived {
        let (_, disk) = crashed.open(name).unwrap();
        let (file, _) = EncryptedFile::open_after_crash(disk, volume.clone())
            .unwrap_or_else(|e| panic!("{}: recovery failed: {e}", what(name)));
        files[id].check(&file, &what(name));
    }
}

#[test]
fn directory_operations_are_as_durable_as_their_fsyncs_promised() {
    let mut crashes = 0;
    for seed in 0..SEEDS {
        let mut rng = Rng::new(seed);
        let volume = Arc::new(VolumeKey::new(
            SymmetricKey::from_bytes([seed as u8; 32]),
            [4; 16],
        ));
        let steps = match seed % 4 {
            0 => wal_segment(&mut rng),
            1 => relation_files(&mut rng),
            2 => pg_control(&mut rng),
            _ => relation_life(&mut rng),
        };
        for crash_at in 0..=steps.len() {
            run(&steps, crash_at, &mut rng, &volume, seed);
            crashes += 1;
        }
    }
    eprintln!("{SEEDS} sequences, {crashes} crashes checked");
}
