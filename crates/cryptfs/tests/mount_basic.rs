//! Basic behaviour through a real FUSE mount (needs root and /dev/fuse, as in CI).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

use pgcmk_cryptfs::{mount, MountOptions};
use pgcmk_crypto::SymmetricKey;

mod mount_fixture;

use mount_fixture::Fixture;

fn all_cipher_bytes(dir: &Path, out: &mut Vec<u8>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all_cipher_bytes(&path, out);
        } else if path.is_file() {
            out.extend(fs::read(&path).unwrap());
        }
    }
}

#[test]
fn files_survive_remount_and_are_ciphertext_on_disk() {
    let fx = Fixture::new();
    let marker = b"MARKER-d41d8cd98f00b204e980";
    let mut big = Vec::new();
    for i in 0..20_000u32 {
        big.extend_from_slice(marker);
        big.extend_from_slice(&i.to_le_bytes());
    }
    {
        let handle = fx.mount();
        fs::create_dir(fx.p("dir")).unwrap();
        fs::write(fx.p("dir/big"), &big).unwrap();
        fs::write(fx.p("small"), b"hello").unwrap();
        // Partial overwrite in the middle of a block, then extend past a gap.
        let mut f = OpenOptions::new().write(true).open(fx.p("small")).unwrap();
        f.seek(SeekFrom::Start(1)).unwrap();
        f.write_all(b"EY").unwrap();
        f.seek(SeekFrom::Start(10_000)).unwrap();
        f.write_all(b"tail").unwrap();
        f.sync_all().unwrap();
        drop(f);
        fs::rename(fx.p("dir/big"), fx.p("big")).unwrap();
        File::open(&fx.plain).unwrap().sync_all().unwrap();
        std::os::unix::fs::symlink("big", fx.p("link")).unwrap();
        handle.unmount().unwrap();
    }
    let mut disk = Vec::new();
    all_cipher_bytes(&fx.cipher, &mut disk);
    assert!(
        !disk.windows(marker.len()).any(|w| w == marker),
        "plaintext marker found in the cipher directory"
    );

    let _handle = fx.mount();
    assert_eq!(fs::read(fx.p("big")).unwrap(), big);
    let small = fs::read(fx.p("small")).unwrap();
    assert_eq!(small.len(), 10_004);
    assert_eq!(&small[..5], b"hEYlo");
    assert!(small[5..10_000].iter().all(|&b| b == 0));
    assert_eq!(&small[10_000..], b"tail");
    assert_eq!(fs::metadata(fx.p("small")).unwrap().len(), 10_004);
    assert_eq!(fs::read_link(fx.p("link")).unwrap(), Path::new("big"));
    let mut names: Vec<_> = fs::read_dir(&fx.plain)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["big", "dir", "link", "small"]);
}

/// PostgreSQL's WAL files (directly under `pg_wal`) get both slots' pages when a block
/// is first written, so the rewrites that every commit waits on overwrite disk space
/// that is already allocated; other files stay sparse until a block is rewritten.
#[test]
fn wal_files_reserve_rewrite_pages_and_other_files_stay_sparse() {
    const SIZE: u64 = 1 << 20;
    let fx = Fixture::new();
    let _handle = fx.mount();
    fs::create_dir(fx.p("pg_wal")).unwrap();
    let wal = "pg_wal/000000010000000000000001";
    let allocated = |name: &str| fs::metadata(fx.cipher.join(name)).unwrap().blocks() * 512;
    let fill = |name: &str, byte: u8| {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(fx.p(name))
            .unwrap();
        f.write_all(&vec![byte; SIZE as usize]).unwrap();
        f.sync_all().unwrap();
    };
    for name in [wal, "other"] {
        fill(name, 0);
    }
    let (wal_first, other_first) = (allocated(wal), allocated("other"));
    assert!(
        wal_first >= 2 * SIZE,
        "a WAL file's slot-B pages are written with its blocks: {wal_first} bytes allocated"
    );
    assert!(
        other_first < SIZE * 5 / 4,
        "other files stay sparse: {other_first} bytes allocated"
    );
    // Every block rewritten once: the WAL file allocates nothing more.
    for name in [wal, "other"] {
        fill(name, 0x5a);
        assert!(fs::read(fx.p(name)).unwrap().iter().all(|&b| b == 0x5a));
    }
    assert_eq!(allocated(wal), wal_first);
    assert!(allocated("other") >= 2 * SIZE);
}

#[test]
fn truncate_rename_over_unlink_while_open_and_metadata() {
    let fx = Fixture::new();
    let _handle = fx.mount();
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(fx.p("f"), &data).unwrap();

    let f = OpenOptions::new().write(true).open(fx.p("f")).unwrap();
    f.set_len(4097).unwrap();
    assert_eq!(fs::read(fx.p("f")).unwrap(), &data[..4097]);
    f.set_len(9000).unwrap();
    let grown = fs::read(fx.p("f")).unwrap();
    assert_eq!(&grown[..4097], &data[..4097]);
    assert!(grown[4097..].iter().all(|&b| b == 0));
    drop(f);

    fs::write(fx.p("g"), b"replacement").unwrap();
    let mut open_old = File::open(fx.p("f")).unwrap();
    fs::rename(fx.p("g"), fx.p("f")).unwrap();
    assert_eq!(fs::read(fx.p("f")).unwrap(), b"replacement");
    let mut old = Vec::new();
    open_old.read_to_end(&mut old).unwrap();
    assert_eq!(old.len(), 9000, "a replaced file stays readable while open");

    let mut doomed = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(fx.p("doomed"))
        .unwrap();
    fs::remove_file(fx.p("doomed")).unwrap();
    doomed.write_all(b"still here").unwrap();
    doomed.sync_data().unwrap();
    doomed.seek(SeekFrom::Start(0)).unwrap();
    let mut back = String::new();
    doomed.read_to_string(&mut back).unwrap();
    assert_eq!(back, "still here");
    assert!(!fx.p("doomed").exists());

    fs::set_permissions(fx.p("f"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(fx.p("f"), Some(12345), Some(54321)).unwrap();
    let meta = fs::metadata(fx.p("f")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (12345, 54321));

    fs::create_dir(fx.p("d")).unwrap();
    File::open(fx.p("d")).unwrap().sync_all().unwrap();
    fs::remove_dir(fx.p("d")).unwrap();
    assert!(!fx.p("d").exists());
    assert!(fs::write(fx.p(pgcmk_cryptfs::CONFIG_FILE_NAME), b"x").is_err());
}

#[test]
fn unsupported_ioctls_answer_enotty_quietly() {
    use std::os::fd::AsRawFd;
    let log = capture_log();
    let fx = Fixture::new();
    let _handle = fx.mount();
    fs::write(fx.p("f"), b"x").unwrap();
    let file = File::open(fx.p("f")).unwrap();
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long to the pointer, which outlives the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
    assert_eq!(rc, -1);
    let err = std::io::Error::last_os_error();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTTY), "{err}");
    // Answered, not logged as an unimplemented request.
    let lines = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    assert!(!lines.contains("ioctl"), "{lines}");
}

#[test]
fn wrong_key_fails_before_mounting() {
    let fx = Fixture::new();
    let err = mount(
        &fx.cipher,
        &fx.plain,
        SymmetricKey::generate().unwrap(),
        MountOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, pgcmk_cryptfs::Error::WrongKey), "{err}");
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(fx.plain.to_str().unwrap()));
}

/// A read-only mount serves the files as they are and changes nothing: the kernel
/// refuses writes, and the volume gets no dirty marker and no crash recovery.
#[test]
fn read_only_mount_reads_and_changes_nothing() {
    use pgcmk_cryptfs::DIRTY_MARKER_NAME;
    let fx = Fixture::new();
    {
        let _rw = fx.mount();
        fs::write(fx.p("log"), b"line 1\n").unwrap();
    }
    let marker = fx.cipher.join(DIRTY_MARKER_NAME);
    let read_only = |fx: &Fixture| {
        let options = MountOptions {
            read_only: true,
            ..MountOptions::default()
        };
        mount(&fx.cipher, &fx.plain, fx.key.clone(), options).unwrap()
    };
    let cipher_before = {
        let mut bytes = Vec::new();
        all_cipher_bytes(&fx.cipher, &mut bytes);
        bytes
    };
    {
        let handle = read_only(&fx);
        assert!(
            !marker.exists(),
            "a read-only mount marked the volume dirty"
        );
        assert_eq!(fs::read(fx.p("log")).unwrap(), b"line 1\n");
        for refused in [
            fs::write(fx.p("log"), b"x"),
            fs::write(fx.p("new"), b"x"),
            fs::remove_file(fx.p("log")),
        ] {
            let err = refused.unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        }
        handle.unmount().unwrap();
    }
    let mut cipher_after = Vec::new();
    all_cipher_bytes(&fx.cipher, &mut cipher_after);
    assert!(
        cipher_after == cipher_before,
        "the cipher directory changed"
    );

    // After an unclean session the marker stays for the next read-write mount.
    fs::write(&marker, b"").unwrap();
    let handle = read_only(&fx);
    assert!(
        handle.recovery().is_none(),
        "recovery ran on a read-only mount"
    );
    assert_eq!(fs::read(fx.p("log")).unwrap(), b"line 1\n");
    drop(handle);
    assert!(
        marker.exists(),
        "the read-only mount removed the dirty marker"
    );
}

#[test]
fn tampered_blocks_read_eio_through_the_mount_and_fsck_lists_them() {
    use pgcmk_cryptfs::format::{data_offset, Slot, BLOCK_SIZE};
    let fx = Fixture::new();
    let data = vec![0x5A; 3 * BLOCK_SIZE as usize];
    {
        let _handle = fx.mount();
        fs::write(fx.p("a"), &data).unwrap();
        fs::write(fx.p("b"), &data).unwrap();
    }
    assert!(pgcmk_cryptfs::fsck(&fx.cipher, &fx.key).unwrap().is_clean());
    // Flip a bit in block 1's ciphertext in `a`; cut `b` inside block 2's (every
    // block was written once: slot A is current).
    let a = fx.cipher.join("a");
    let mut bytes = fs::read(&a).unwrap();
    bytes[data_offset(1, Slot::A) as usize + 40] ^= 4;
    fs::write(&a, bytes).unwrap();
    let b = fx.cipher.join("b");
    let cut = data_offset(2, Slot::A) + BLOCK_SIZE - 7;
    assert!(fs::metadata(&b).unwrap().len() > cut);
    OpenOptions::new()
        .write(true)
        .open(&b)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let report = pgcmk_cryptfs::fsck(&fx.cipher, &fx.key).unwrap();
    let listed: Vec<_> = report
        .bad_blocks
        .iter()
        .map(|b| (b.file.to_str().unwrap().to_string(), b.block))
        .collect();
    assert_eq!(
        listed,
        [("a".to_string(), Some(1)), ("b".to_string(), Some(2))]
    );
    assert_eq!(report.files_checked, 2);

    let log = capture_log();
    let _handle = fx.mount();
    let f = File::open(fx.p("a")).unwrap();
    // PostgreSQL's read of the 8 KiB page whose second half is damaged: EIO, not the
    // first half as a short read (which recovery would zero-fill). The kernel retries
    // a failed read page by page, so the intact first block fails alone too.
    let mut page = vec![0u8; 2 * BLOCK_SIZE as usize];
    let err = f.read_at(&mut page, 0).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let mut block = vec![0u8; BLOCK_SIZE as usize];
    let err = f.read_at(&mut block, 0).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // The next 8 KiB page is intact and still reads.
    f.read_exact_at(&mut block, 2 * BLOCK_SIZE).unwrap();
    assert!(
        block.iter().all(|&b| b == 0x5A),
        "intact block 2 still reads"
    );
    let err = fs::read(fx.p("b")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // Each failure is logged with the file and block, never the content.
    let lines = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    for (file, block) in [("/a", 1), ("/b", 2)] {
        assert!(
            lines.lines().any(|l| l.contains("WARN")
                && l.contains(&format!("file={file}"))
                && l.contains(&format!("block={block}"))),
            "no log line for {file} block {block}:\n{lines}"
        );
    }
}

#[test]
fn crash_recovery_runs_only_after_an_unclean_session_and_never_hides_tampering() {
    use pgcmk_cryptfs::format::{data_offset, Slot, BLOCK_SIZE};
    use pgcmk_cryptfs::DIRTY_MARKER_NAME;
    use std::os::unix::fs::FileExt;
    let b = BLOCK_SIZE as usize;
    let fx = Fixture::new();
    let marker = fx.cipher.join(DIRTY_MARKER_NAME);
    {
        let handle = fx.mount();
        assert!(
            handle.recovery().is_none(),
            "a new volume needs no recovery"
        );
        assert!(marker.exists(), "no dirty marker while mounted");
        let file = File::create(fx.p("f")).unwrap();
        file.write_all_at(&vec![0x11; 2 * b], 0).unwrap();
        file.sync_all().unwrap();
        // Block 1 rewritten after the sync: the new version goes to the other slot.
        file.write_all_at(&vec![0x22; b], b as u64).unwrap();
        file.sync_all().unwrap();
    }
    assert!(!marker.exists(), "a clean unmount removes the dirty marker");
    // Tamper with the current slot of block 1 (its older slot is intact).
    let cipher_file = fx.cipher.join("f");
    let mut bytes = fs::read(&cipher_file).unwrap();
    bytes[data_offset(1, Slot::B) as usize + 100] ^= 1;
    fs::write(&cipher_file, bytes).unwrap();

    // Clean volume: no recovery, no fallback to the older slot: EIO.
    {
        let handle = fx.mount();
        assert!(handle.recovery().is_none());
        let file = File::open(fx.p("f")).unwrap();
        let mut block = vec![0u8; b];
        // Block 0 shares block 1's 8 KiB read unit: both fail.
        for at in [0, b as u64] {
            let err = file.read_exact_at(&mut block, at).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
        }
    }
    let report = pgcmk_cryptfs::fsck(&fx.cipher, &fx.key).unwrap();
    assert!(!report.dirty && report.torn_blocks.is_empty());
    let bad: Vec<_> = report.bad_blocks.iter().map(|b| b.block).collect();
    assert_eq!(bad, [Some(1)], "{report:?}");

    // The same bytes after an unclean session (the marker left behind): fsck calls
    // the block torn, and mounting repairs it back to its last intact version.
    fs::write(&marker, b"").unwrap();
    let report = pgcmk_cryptfs::fsck(&fx.cipher, &fx.key).unwrap();
    assert!(report.dirty && report.is_clean(), "{report:?}");
    let torn: Vec<_> = report.torn_blocks.iter().map(|b| b.block).collect();
    assert_eq!(torn, [Some(1)], "{report:?}");
    let log = capture_log();
    {
        let handle = fx.mount();
        let recovery = handle
            .recovery()
            .expect("recovery after an unclean session");
        assert_eq!(
            (
                recovery.files_checked,
                recovery.repaired_blocks,
                recovery.bad_blocks
            ),
            (1, 1, 0)
        );
        assert_eq!(fs::read(fx.p("f")).unwrap(), vec![0x11; 2 * b]);
    }
    let lines = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    assert!(
        lines
            .lines()
            .any(|l| l.contains("crash recovery done") && l.contains("repaired_blocks=1")),
        "no recovery summary in the log:\n{lines}"
    );
    let report = pgcmk_cryptfs::fsck(&fx.cipher, &fx.key).unwrap();
    assert!(!report.dirty && report.is_clean() && report.torn_blocks.is_empty());
}

/// Captures every log line of this test process (FUSE requests run on other
/// threads, so the subscriber must be global).
fn capture_log() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || LogWriter(sink.clone()))
            .init();
        log
    })
    .clone()
}

struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `sh -c script` as the `postgres` user; returns (success, stdout+stderr).
fn as_postgres(script: &str) -> (bool, String) {
    let out = std::process::Command::new("runuser")
        .args(["-u", "postgres", "--", "sh", "-c", script])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn other_users_own_what_they_create_and_modes_are_enforced() {
    let fx = Fixture::new();
    // The temp dir is 0700 root; let postgres reach the mountpoint.
    fs::set_permissions(fx.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let options = MountOptions {
        allow_other: true,
        ..MountOptions::default()
    };
    let _handle = mount(&fx.cipher, &fx.plain, fx.key.clone(), options).unwrap();
    fs::set_permissions(&fx.plain, fs::Permissions::from_mode(0o777)).unwrap();
    let plain = fx.plain.display();

    let (ok, out) = as_postgres(&format!(
        "mkdir -m 0700 {plain}/pgdata && echo row > {plain}/pgdata/f && \
         fallocate -l 20000 {plain}/pgdata/f && stat -c %s {plain}/pgdata/f"
    ));
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "20000");
    for path in [fx.p("pgdata"), fx.p("pgdata/f")] {
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (101, 104), "{}", path.display());
        // The backing files carry the same owner.
        let backing = fx.cipher.join(path.strip_prefix(&fx.plain).unwrap());
        assert_eq!(fs::metadata(backing).unwrap().uid(), 101);
    }
    assert_eq!(fs::metadata(fx.p("pgdata")).unwrap().mode() & 0o7777, 0o700);
    let content = fs::read(fx.p("pgdata/f")).unwrap();
    assert_eq!(&content[..4], b"row\n");
    assert!(content[4..].iter().all(|&b| b == 0));

    // Modes are enforced for other users: nobody cannot enter postgres' 0700 dir.
    let out = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "ls", fx.p("pgdata").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "nobody listed a 0700 directory");

    // statfs answers (df-style tools and PostgreSQL's checks rely on it).
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%b %S", fx.plain.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let blocks: u64 = text.split_whitespace().next().unwrap().parse().unwrap();
    assert!(out.status.success() && blocks > 0, "{text}");
}
