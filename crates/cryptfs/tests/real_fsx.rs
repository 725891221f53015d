//! fsx-style random I/O over a real cryptfs mount, compared byte for byte against the same
//! operations on a plain file: writes, reads and truncates at any offset and size (inside a
//! block, across block boundaries, beyond EOF), fsync/fdatasync, close and reopen, a second
//! descriptor, and finally an unmount and a fresh mount.

mod real_support;

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::Path;

use proptest::prelude::Rng as _;
use proptest::test_runner::{RngAlgorithm, TestRng};
use real_support::{CryptMount, TestDir};

/// Sizes that PostgreSQL and the block math care about; offsets cluster around multiples of these.
const BOUNDARIES: [u64; 4] = [512, 4096, 8192, 65536];
const MAX_FILE: u64 = 3 << 20;
const OPS_PER_SEED: usize = 1500;
const SEEDS: [u64; 3] = [1, 0x5eed_cafe, 0xdead_beef_f00d];

/// The operation stream: seeded and reproducible (a failure names its seed and op number).
struct Rng(TestRng);

impl Rng {
    fn seeded(seed: u64) -> Self {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        Self(TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n.max(1)
    }

    /// An offset: uniform, or within a few bytes of a block boundary, or past the end of file.
    fn offset(&mut self, file_len: u64) -> u64 {
        match self.below(4) {
            0 => self.below(MAX_FILE),
            1 | 2 => {
                let unit = BOUNDARIES[self.below(BOUNDARIES.len() as u64) as usize];
                let base = self.below(MAX_FILE / unit) * unit;
                (base + self.below(17)).saturating_sub(8)
            }
            _ => file_len + self.below(20_000),
        }
        .min(MAX_FILE)
    }

    /// A length: a few bytes, about a block, or large (many blocks).
    fn length(&mut self) -> usize {
        (match self.below(3) {
            0 => 1 + self.below(64),
            1 => 4096 + self.below(8193) - 4096 / 2,
            _ => 1 + self.below(256 << 10),
        }) as usize
    }
}

/// The same file opened twice: on the mount (under test) and on the plain disk (the model).
struct Pair {
    under_test: File,
    model: File,
}

impl Pair {
    fn open(a: &Path, b: &Path, create: bool) -> Self {
        let open = |p: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .truncate(create)
                .open(p)
                .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
        };
        Self {
            under_test: open(a),
            model: open(b),
        }
    }
}

/// Reads up to `len` bytes at `offset`, looping over short reads until EOF.
fn read_full(file: &File, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read at {offset}+{len}: {e}"),
        }
    }
    buf.truncate(done);
    buf
}

fn assert_same_contents(pair: &Pair, context: &str) {
    let len_t = pair.under_test.metadata().expect("stat").len();
    let len_m = pair.model.metadata().expect("stat").len();
    assert_eq!(len_t, len_m, "file size differs {context}");
    let a = read_full(&pair.under_test, 0, len_t as usize + 1);
    let b = read_full(&pair.model, 0, len_m as usize + 1);
    if let Some(pos) = a.iter().zip(&b).position(|(x, y)| x != y) {
        panic!("contents differ at byte {pos} {context}");
    }
    assert_eq!(a.len(), b.len(), "read length differs {context}");
}

fn run_seed(mount_dir: &Path, plain_dir: &Path, seed: u64) {
    let name = format!("fsx-{seed:x}");
    let (path_t, path_m) = (mount_dir.join(&name), plain_dir.join(&name));
    let mut pair = Pair::open(&path_t, &path_m, true);
    let mut rng = Rng::seeded(seed);
    let mut counter = 0u8;
    for op in 0..OPS_PER_SEED {
        let len = pair.model.metadata().expect("stat").len();
        let context = format!("(seed {seed:#x}, op {op})");
        match rng.below(100) {
            0..=39 => {
                let offset = rng.offset(len);
                let size = rng.length().min((MAX_FILE - offset) as usize).max(1);
                counter = counter.wrapping_add(1);
                // Distinct, position-dependent bytes so misplaced data cannot compare equal.
                let data: Vec<u8> = (0..size)
                    .map(|i| {
                        (i as u8).wrapping_mul(31) ^ counter ^ ((offset as usize + i) >> 9) as u8
                    })
                    .collect();
                pair.under_test
                    .write_all_at(&data, offset)
                    .expect("write on mount");
                pair.model
                    .write_all_at(&data, offset)
                    .expect("write on plain");
            }
            40..=74 => {
                let offset = rng.offset(len);
                let size = rng.length();
                let a = read_full(&pair.under_test, offset, size);
                let b = read_full(&pair.model, offset, size);
                assert_eq!(a.len(), b.len(), "read length at {offset}+{size} {context}");
                assert!(
                    a == b,
                    "read at {offset}+{size} returned other bytes {context}"
                );
            }
            75..=84 => {
                let new_len = match rng.below(3) {
                    0 => rng.below(len + 1),
                    1 => rng.offset(len),
                    _ => len.saturating_sub(1 + rng.below(4096)),
                };
                pair.under_test.set_len(new_len).expect("truncate on mount");
                pair.model.set_len(new_len).expect("truncate on plain");
            }
            85..=89 => {
                pair.under_test.sync_all().expect("fsync on mount");
            }
            90..=93 => {
                pair.under_test.sync_data().expect("fdatasync on mount");
            }
            94..=96 => {
                drop(pair);
                pair = Pair::open(&path_t, &path_m, false);
            }
            _ => {
                // A second, read-only descriptor sees what the first one wrote.
                let other = File::open(&path_t).expect("second open");
                let offset = rng.offset(len);
                let a = read_full(&other, offset, 8192);
                let b = read_full(&pair.model, offset, 8192);
                assert!(
                    a == b,
                    "second descriptor read at {offset} differs {context}"
                );
            }
        }
        let len_t = pair.under_test.metadata().expect("stat").len();
        assert_eq!(
            len_t,
            pair.model.metadata().expect("stat").len(),
            "size {context}"
        );
        if op % 250 == 249 {
            assert_same_contents(&pair, &context);
        }
    }
    assert_same_contents(&pair, &format!("(seed {seed:#x}, end)"));
}

#[test]
fn fsx_random_io_matches_plain_file_and_survives_remount() {
    let _serial = real_support::serial();
    let dir = TestDir::new();
    let plain = dir.subdir("plain", false);
    let mut mount = CryptMount::new(&dir);
    for seed in SEEDS {
        run_seed(mount.plain(), &plain, seed);
    }
    mount.remount();
    for seed in SEEDS {
        let name = format!("fsx-{seed:x}");
        let pair = Pair::open(&mount.plain().join(&name), &plain.join(&name), false);
        assert_same_contents(&pair, &format!("(seed {seed:#x}, after remount)"));
    }
}
