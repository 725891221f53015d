//! File times through a real FUSE mount (needs root and /dev/fuse, as in CI).
//!
//! Times set on an open file (what the writeback cache sends before every fsync)
//! are kept in memory and reach the backing file at fsync, close or unmount; stat
//! through the mount shows them at once and after a remount.

use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgcmk_cryptfs::{mount, MountHandle, MountOptions};
use pgcmk_crypto::SymmetricKey;

fn mounted(cipher: &Path, plain: &Path, key: &SymmetricKey) -> MountHandle {
    mount(cipher, plain, key.clone(), MountOptions::default()).unwrap()
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn mtime(path: &Path) -> SystemTime {
    fs::metadata(path).unwrap().modified().unwrap()
}

fn set_mtime(file: &File, time: SystemTime) {
    file.set_times(FileTimes::new().set_modified(time)).unwrap();
}

#[test]
fn times_set_on_open_files_reach_the_backing_file_at_close_and_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let (cipher, plain) = (dir.path().join("cipher"), dir.path().join("plain"));
    fs::create_dir(&plain).unwrap();
    let key = SymmetricKey::generate().unwrap();
    pgcmk_cryptfs::init(&cipher, &key).unwrap();
    let handle = mounted(&cipher, &plain, &key);

    // Close: the last time set before close is the one on disk after it.
    let mut file = File::create(plain.join("closed")).unwrap();
    file.write_all(b"data").unwrap();
    set_mtime(&file, at(1_000_000));
    set_mtime(&file, at(2_000_000));
    assert_eq!(mtime(&plain.join("closed")), at(2_000_000));
    drop(file);
    assert_eq!(mtime(&cipher.join("closed")), at(2_000_000));

    // Deferred while open, durable at fsync (fdatasync leaves them deferred).
    let file = OpenOptions::new()
        .write(true)
        .open(plain.join("closed"))
        .unwrap();
    set_mtime(&file, at(3_000_000));
    assert_eq!(
        mtime(&cipher.join("closed")),
        at(2_000_000),
        "a time set on an open file is not written to the backing file at once"
    );
    assert_eq!(mtime(&plain.join("closed")), at(3_000_000));
    file.sync_data().unwrap();
    assert_eq!(mtime(&cipher.join("closed")), at(2_000_000));
    file.sync_all().unwrap();
    assert_eq!(mtime(&cipher.join("closed")), at(3_000_000));

    // A later chmod (applied at once) must not be undone by deferred times.
    set_mtime(&file, at(4_000_000));
    let mut perms = file.metadata().unwrap().permissions();
    perms.set_mode(0o640);
    file.set_permissions(perms).unwrap();
    drop(file);
    assert_eq!(mtime(&cipher.join("closed")), at(4_000_000));

    // Unlinked while open: the link count shown is 0, not a cached 1.
    let file = File::create(plain.join("gone")).unwrap();
    set_mtime(&file, at(5_000_000));
    set_mtime(&file, at(6_000_000));
    fs::remove_file(plain.join("gone")).unwrap();
    set_mtime(&file, at(7_000_000));
    assert_eq!(file.metadata().unwrap().nlink(), 0);
    drop(file);

    handle.unmount().unwrap();
    let _handle = mounted(&cipher, &plain, &key);
    let meta = fs::metadata(plain.join("closed")).unwrap();
    assert_eq!(meta.modified().unwrap(), at(4_000_000));
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(fs::read(plain.join("closed")).unwrap(), b"data");
}
