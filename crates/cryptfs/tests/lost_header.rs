//! A new file's header is not synced on its own (`docs/format.md` §3.3): a crash before
//! the file's first sync can leave its blocks on disk without it. Through a real mount:
//! after an unclean session fsck calls such a file torn and the mount's crash recovery
//! empties it; on a cleanly unmounted volume a zeroed header stays damage.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use pgcmk_cryptfs::format::{BLOCK_SIZE, HEADER_LEN};
use pgcmk_cryptfs::DIRTY_MARKER_NAME;

mod mount_fixture;

use mount_fixture::Fixture;

#[test]
fn a_file_whose_header_a_crash_lost_is_torn_for_fsck_and_emptied_by_recovery() {
    let fx = Fixture::new();
    {
        let _handle = fx.mount();
        fs::write(fx.p("new"), vec![0x33; 2 * BLOCK_SIZE as usize]).unwrap();
        fs::write(fx.p("kept"), b"synced").unwrap();
    }
    // What a power cut before the first sync can leave: the blocks, not the header.
    let cipher_file = fx.cipher.join("new");
    OpenOptions::new()
        .write(true)
        .open(&cipher_file)
        .unwrap()
        .write_all_at(&[0; HEADER_LEN as usize], 0)
        .unwrap();

    let report = pgcmk_cryptfs::fsck(&fx.cipher, &fx.key).unwrap();
    assert!(!report.dirty, "{report:?}");
    let bad: Vec<_> = report.bad_blocks.iter().map(|b| b.file.clone()).collect();
    assert_eq!(bad, [PathBuf::from("new")], "{report:?}");

    fs::write(fx.cipher.join(DIRTY_MARKER_NAME), b"").unwrap();
    let report = pgcmk_cryptfs::fsck(&fx.cipher, &fx.key).unwrap();
    assert!(report.dirty && report.is_clean(), "{report:?}");
    assert_eq!(report.torn_blocks.len(), 1, "{report:?}");
    assert_eq!(report.torn_blocks[0].block, None, "{report:?}");

    let handle = fx.mount();
    let recovery = handle
        .recovery()
        .expect("recovery after an unclean session");
    assert_eq!((recovery.dropped_blocks, recovery.failed_files), (2, 0));
    assert_eq!(fs::read(fx.p("new")).unwrap(), b"");
    assert_eq!(fs::read(fx.p("kept")).unwrap(), b"synced");
}
