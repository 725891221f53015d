//! What reads ask the store to prefetch: large (sequential) reads fetch the next
//! groups' metadata page and the run of the slot in use, never the holes of the other
//! slot; a small random read that happens to end a group fetches nothing ahead (it
//! once fetched 2 MiB, halving cold random-read IOPS in `bench/cryptfs`).

use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use pgcmk_cryptfs::content::VolumeKey;
use pgcmk_cryptfs::crash_sim::SimulatedDisk;
use pgcmk_cryptfs::encrypted_file::EncryptedFile;
use pgcmk_cryptfs::format::{data_offset, group_offset, Slot, BLOCK_SIZE, GROUP_BLOCKS};
use pgcmk_cryptfs::storage::Storage;
use pgcmk_crypto::SymmetricKey;

/// The byte ranges a store was asked to prefetch, in order.
type Hints = Arc<Mutex<Vec<Range<u64>>>>;

/// A store that records the prefetch hints it is given.
struct Recording {
    disk: SimulatedDisk,
    prefetched: Hints,
}

impl Storage for Recording {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.disk.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.disk.write_all_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        self.disk.size()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.disk.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.disk.sync_data()
    }
    fn prefetch(&self, offset: u64, len: u64) {
        self.prefetched.lock().unwrap().push(offset..offset + len);
    }
}

const GROUP_BYTES: u64 = GROUP_BLOCKS * BLOCK_SIZE;
const GROUPS: u64 = 24;

/// A file of `GROUPS` full groups, every block in slot A, or (`rewritten`) every
/// block rewritten once after a sync, so that slot B is current.
fn file(rewritten: bool) -> (EncryptedFile<Recording>, Hints) {
    let prefetched = Arc::new(Mutex::new(Vec::new()));
    let store = Recording {
        disk: SimulatedDisk::new(),
        prefetched: prefetched.clone(),
    };
    let volume = Arc::new(VolumeKey::new(SymmetricKey::from_bytes([4; 32]), [5; 16]));
    let file = EncryptedFile::open(store, volume).unwrap();
    let data = vec![7u8; (GROUPS * GROUP_BYTES) as usize];
    file.write(0, &data).unwrap();
    file.sync().unwrap();
    if rewritten {
        file.write(0, &data).unwrap();
        file.sync().unwrap();
    }
    prefetched.lock().unwrap().clear();
    (file, prefetched)
}

/// The data pages of `slot` for every block of groups `groups`.
fn slot_pages(slot: Slot, groups: Range<u64>) -> Vec<Range<u64>> {
    groups
        .map(|g| {
            let start = data_offset(g * GROUP_BLOCKS, slot);
            start..start + GROUP_BYTES
        })
        .collect()
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

fn covered(ranges: &[Range<u64>], wanted: &Range<u64>) -> bool {
    ranges
        .iter()
        .any(|r| r.start <= wanted.start && wanted.end <= r.end)
}

#[test]
fn a_small_read_ending_a_group_prefetches_nothing() {
    let (file, prefetched) = file(false);
    // PostgreSQL's 8 KiB page: the last two blocks of group 3.
    let offset = 4 * GROUP_BYTES - 2 * BLOCK_SIZE;
    assert_eq!(file.read(offset, 8192).unwrap(), vec![7u8; 8192]);
    assert_eq!(*prefetched.lock().unwrap(), Vec::<Range<u64>>::new());
}

#[test]
fn a_sequential_read_prefetches_the_next_groups_in_the_slot_in_use() {
    for (rewritten, used, unused) in [(false, Slot::A, Slot::B), (true, Slot::B, Slot::A)] {
        let (file, prefetched) = file(rewritten);
        assert_eq!(
            file.read(2 * GROUP_BYTES, GROUP_BYTES as usize).unwrap(),
            vec![7u8; GROUP_BYTES as usize]
        );
        let got = prefetched.lock().unwrap().clone();
        for g in 3..=18 {
            let meta = group_offset(g)..group_offset(g) + BLOCK_SIZE;
            assert!(covered(&got, &meta), "metadata page of group {g}: {got:?}");
        }
        for pages in slot_pages(used, 3..19) {
            assert!(covered(&got, &pages), "{used:?} run {pages:?}: {got:?}");
        }
        for pages in slot_pages(unused, 0..GROUPS + 20) {
            assert!(
                !got.iter().any(|r| overlaps(r, &pages)),
                "prefetched {unused:?} pages {pages:?} (holes or stale): {got:?}"
            );
        }
        // Nothing past 16 groups ahead.
        assert!(got.iter().all(|r| r.end <= group_offset(19)), "{got:?}");
    }
}
