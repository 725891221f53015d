//! Several threads writing, reading and syncing one encrypted file at once, as the
//! kernel's writeback and PostgreSQL's processes do: writes of different blocks run
//! in parallel, yet no write is lost (blocks shared by two writes are merged, not
//! overwritten), no read ever sees a half-written block, and the file reads back the
//! same after reopening.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use pgcmk_cryptfs::content::VolumeKey;
use pgcmk_cryptfs::crash_sim::SimulatedDisk;
use pgcmk_cryptfs::encrypted_file::EncryptedFile;
use pgcmk_crypto::SymmetricKey;

fn volume() -> Arc<VolumeKey> {
    Arc::new(VolumeKey::new(SymmetricKey::from_bytes([7; 32]), [3; 16]))
}

/// A small deterministic generator (xorshift64*), one per thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The byte chunk `chunk` of an appended file holds at `i`: never zero.
fn chunk_byte(chunk: u64, i: u64) -> u8 {
    (chunk * 31 + i * 7) as u8 % 251 + 1
}

/// Writer threads append chunks (taken in order from a counter, like writeback's
/// requests, but sealed in whatever order the threads run; chunks are not
/// block-aligned, so neighbours share a block) while a reader reads what the file
/// holds so far: each byte is its chunk's byte, or zero where a later chunk's
/// writer has zero-filled the gap of one not yet written. Never an error.
#[test]
fn parallel_appends_lose_nothing_and_reads_never_fail() {
    const CHUNK: u64 = 300_001;
    const CHUNKS: u64 = 48;
    let file = EncryptedFile::open(SimulatedDisk::new(), volume()).unwrap();
    let next = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        let writers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| loop {
                    let chunk = next.fetch_add(1, Ordering::Relaxed);
                    if chunk >= CHUNKS {
                        return;
                    }
                    let data: Vec<u8> = (0..CHUNK).map(|i| chunk_byte(chunk, i)).collect();
                    file.write(chunk * CHUNK, &data).unwrap();
                })
            })
            .collect();
        s.spawn(|| {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let mut reads = 0;
            while !done.load(Ordering::Relaxed) || reads < 100 {
                let len = file.len();
                let offset = rng.below(len + 1);
                let got = file.read(offset, rng.below(200_000) as usize).unwrap();
                for (at, byte) in (offset..).zip(got) {
                    let want = chunk_byte(at / CHUNK, at % CHUNK);
                    assert!(
                        byte == want || byte == 0,
                        "byte {at} reads {byte}, neither its chunk's {want} nor a gap's 0"
                    );
                }
                reads += 1;
            }
        });
        for writer in writers {
            writer.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
    });
    let want: Vec<u8> = (0..CHUNKS * CHUNK)
        .map(|at| chunk_byte(at / CHUNK, at % CHUNK))
        .collect();
    assert_eq!(file.len(), want.len() as u64);
    assert!(file.read(0, want.len()).unwrap() == want, "content differs");
    file.sync().unwrap();
    let reopened = EncryptedFile::open(
        SimulatedDisk::from_bytes(file.storage().contents()),
        volume(),
    )
    .unwrap();
    assert!(reopened.read(0, want.len() + 1).unwrap() == want);
}

/// Four threads overwrite random ranges of a 2 MiB file, each only in its own
/// stripes (10,000 bytes wide, so every stripe boundary splits a block that two
/// threads write), while another thread syncs and another reads. Each thread keeps
/// a model of its stripes; at the end, and after reopening, the file must equal the
/// models merged: a read-modify-write of a shared block that raced another thread's
/// would have put back that thread's old bytes.
#[test]
fn parallel_overwrites_of_shared_blocks_merge() {
    const SIZE: usize = 2 << 20;
    const STRIPE: usize = 10_000;
    const THREADS: usize = 4;
    let file = EncryptedFile::open(SimulatedDisk::new(), volume()).unwrap();
    file.write(0, &vec![0xEE; SIZE]).unwrap();
    file.sync().unwrap();
    let model = Mutex::new(vec![0xEE; SIZE]);
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        let writers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let (file, model) = (&file, &model);
                s.spawn(move || {
                    let mut rng = Rng(thread as u64 * 0x1234_5678 + 1);
                    let stripes = SIZE / STRIPE / THREADS;
                    for round in 0..400 {
                        let stripe = (rng.below(stripes as u64) as usize) * THREADS + thread;
                        let start = stripe * STRIPE + rng.below(STRIPE as u64) as usize;
                        let end = (stripe + 1) * STRIPE;
                        let len = 1 + rng.below((end - start) as u64) as usize;
                        let fill = (thread * 64 + round % 64) as u8;
                        let data = vec![fill; len];
                        file.write(start as u64, &data).unwrap();
                        model.lock().unwrap()[start..start + len].copy_from_slice(&data);
                    }
                })
            })
            .collect();
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                file.sync().unwrap();
            }
        });
        s.spawn(|| {
            let mut rng = Rng(77);
            while !done.load(Ordering::Relaxed) {
                let offset = rng.below(SIZE as u64);
                let got = file.read(offset, 300_000).unwrap();
                assert_eq!(got.len() as u64, (SIZE as u64 - offset).min(300_000));
            }
        });
        for writer in writers {
            writer.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
    });
    let model = model.into_inner().unwrap();
    assert!(file.read(0, SIZE).unwrap() == model, "a write was lost");
    file.sync().unwrap();
    let reopened = EncryptedFile::open(
        SimulatedDisk::from_bytes(file.storage().contents()),
        volume(),
    )
    .unwrap();
    assert!(reopened.read(0, SIZE + 1).unwrap() == model);
}

/// Four threads read the same blocks without pause while a write of those blocks
/// queues among them: the write must land while the reads go on (not only once they
/// stop on their own, after `READS` each), every read must succeed, and the queue must
/// never deadlock. That a waiting write goes before reads arriving after it is
/// checked deterministically in `claims.rs`; here real threads run the queue, and
/// the scheduler may give a write a gap between reads even without it.
#[test]
fn a_stream_of_overlapping_reads_does_not_starve_a_write() {
    const READS: u64 = 20_000;
    const SIZE: usize = 256 << 10;
    let file = EncryptedFile::open(SimulatedDisk::new(), volume()).unwrap();
    file.write(0, &vec![1; SIZE]).unwrap();
    let reads = AtomicU64::new(0);
    let written = AtomicBool::new(false);
    let reads_when_written = thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..READS {
                    if written.load(Ordering::Relaxed) {
                        return;
                    }
                    assert_eq!(file.read(0, SIZE).unwrap().len(), SIZE);
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        while reads.load(Ordering::Relaxed) < 100 {
            thread::yield_now();
        }
        file.write(SIZE as u64 / 2, &[2; 4096]).unwrap();
        written.store(true, Ordering::Relaxed);
        reads.load(Ordering::Relaxed)
    });
    assert!(
        reads_when_written < 4 * READS,
        "the write waited until all {reads_when_written} reads were done"
    );
    let data = file.read(0, SIZE).unwrap();
    assert!(data[SIZE / 2..SIZE / 2 + 4096].iter().all(|&b| b == 2));
}
