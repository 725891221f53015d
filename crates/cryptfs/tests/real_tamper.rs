//! Tampering with the cipher directory of a real mount: a flipped bit, two swapped blocks, a
//! block copied in from another file, a cipher file cut mid-block. Through a fresh mount the
//! 8 KiB units holding affected blocks read as EIO and the rest still reads; `pgcmk fs fsck` (the CLI) and the
//! library's fsck list exactly the damaged blocks. Plus: remount keeps data; a wrong key is
//! refused by the library and the CLI, and nothing gets mounted.

mod real_support;

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pgcmk_cryptfs::format::{data_offset, entry_offset, Slot, BLOCK_SIZE, ENTRY_SIZE};
use pgcmk_cryptfs::MountOptions;
use pgcmk_crypto::SymmetricKey;
use real_support::mount::is_mounted;
use real_support::{output, pgcmk_bin, wait_until, CryptMount, TestDir};

const BLOCKS: u64 = 8;

/// Distinct bytes for every (file, block) so a misplaced block could never compare equal.
fn block_bytes(name: &str, block: u64) -> Vec<u8> {
    let seed = name
        .bytes()
        .fold(block as u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    (0..BLOCK_SIZE)
        .map(|i| seed ^ (i as u8).wrapping_mul(7) ^ (i >> 8) as u8)
        .collect()
}

fn write_file(mount: &CryptMount, name: &str) {
    let data: Vec<u8> = (0..BLOCKS).flat_map(|b| block_bytes(name, b)).collect();
    fs::write(mount.plain().join(name), data).expect("write through mount");
}

/// Where everything stored for one block lies (offset, length): both metadata
/// entries, then both data pages.
fn block_parts(block: u64) -> [(u64, u64); 4] {
    [
        (entry_offset(block, Slot::A), ENTRY_SIZE),
        (entry_offset(block, Slot::B), ENTRY_SIZE),
        (data_offset(block, Slot::A), BLOCK_SIZE),
        (data_offset(block, Slot::B), BLOCK_SIZE),
    ]
}

/// Where slot A's data page starts in what [`cipher_block`] returns.
const PAGE_A: usize = 2 * ENTRY_SIZE as usize;

/// Everything stored for `block`, concatenated in [`block_parts`] order (past the
/// end of the cipher file, zeros: pages never written).
fn cipher_block(cipher: &Path, name: &str, block: u64) -> Vec<u8> {
    let file = File::open(cipher.join(name)).expect("open cipher file");
    let mut out = Vec::new();
    for (at, len) in block_parts(block) {
        let mut part = vec![0u8; len as usize];
        let mut done = 0;
        while done < part.len() {
            match file
                .read_at(&mut part[done..], at + done as u64)
                .expect("read cipher block")
            {
                0 => break,
                n => done += n,
            }
        }
        out.extend(part);
    }
    out
}

fn put_cipher_block(cipher: &Path, name: &str, block: u64, bytes: &[u8]) {
    let file = OpenOptions::new()
        .write(true)
        .open(cipher.join(name))
        .expect("open cipher file");
    let mut rest = bytes;
    for (at, len) in block_parts(block) {
        let (part, tail) = rest.split_at(len as usize);
        file.write_all_at(part, at).expect("write cipher block");
        rest = tail;
    }
}

/// Reads one plaintext block through the mount.
fn read_block(mount: &CryptMount, name: &str, block: u64) -> std::io::Result<Vec<u8>> {
    let file = File::open(mount.plain().join(name))?;
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    file.read_exact_at(&mut buf, block * BLOCK_SIZE)?;
    Ok(buf)
}

fn assert_eio(mount: &CryptMount, name: &str, block: u64) {
    match read_block(mount, name, block) {
        Ok(_) => panic!("{name} block {block}: tampered block read without error"),
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(libc::EIO),
            "{name} block {block}: {e}"
        ),
    }
}

fn assert_intact(mount: &CryptMount, name: &str, block: u64) {
    let got = read_block(mount, name, block)
        .unwrap_or_else(|e| panic!("{name} block {block} is untouched but failed: {e}"));
    assert!(
        got == block_bytes(name, block),
        "{name} block {block}: wrong bytes"
    );
}

fn cli(args: &[&str]) -> Output {
    output(Command::new(pgcmk_bin()).args(["fs"]).args(args))
}

/// Runs `pgcmk fs ARGS`, killing it (by pid) if it has not exited within `limit`.
fn cli_within(limit: Duration, args: &[&str]) -> Output {
    let mut child = Command::new(pgcmk_bin())
        .args(["fs"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pgcmk");
    if !wait_until(limit, || child.try_wait().expect("wait pgcmk").is_some()) {
        child.kill().expect("kill pgcmk");
        let _ = child.wait();
        panic!("pgcmk fs {args:?} still running after {limit:?}");
    }
    child.wait_with_output().expect("pgcmk output")
}

fn key_hex(key: &SymmetricKey) -> String {
    key.expose_secret()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A key file in the format `pgcmk fs keygen` writes: 64 hex characters, mode 0600.
fn key_file(dir: &TestDir, name: &str, key: &SymmetricKey) -> PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, key_hex(key) + "\n").expect("write key file");
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    path
}

#[test]
fn tampered_blocks_read_as_eio_and_fsck_lists_them() {
    let _serial = real_support::serial();
    let dir = TestDir::new();
    let mut mount = CryptMount::new(&dir);
    let names = ["flip", "swap", "moved", "donor", "cut", "clean"];
    names.iter().for_each(|name| write_file(&mount, name));
    mount.unmount();
    let cipher = mount.cipher().to_path_buf();

    // 1. One bit flipped in block 2's ciphertext (in slot A, its current slot).
    let mut block = cipher_block(&cipher, "flip", 2);
    block[PAGE_A + 100] ^= 0x08;
    put_cipher_block(&cipher, "flip", 2, &block);
    // 2. Blocks 3 and 5 swapped within the file (entries and data pages).
    let (b3, b5) = (
        cipher_block(&cipher, "swap", 3),
        cipher_block(&cipher, "swap", 5),
    );
    put_cipher_block(&cipher, "swap", 3, &b5);
    put_cipher_block(&cipher, "swap", 5, &b3);
    // 3. Block 1 of another file copied over block 1 (same offset, other file).
    put_cipher_block(&cipher, "moved", 1, &cipher_block(&cipher, "donor", 1));
    // 4. The cipher file cut in the middle of block 6's data page: block 7's data page
    // goes with it, while the metadata page (before them) still names both blocks.
    let cut = OpenOptions::new()
        .write(true)
        .open(cipher.join("cut"))
        .expect("open");
    cut.set_len(data_offset(6, Slot::A) + BLOCK_SIZE / 2)
        .expect("truncate cipher file");
    drop(cut);

    mount.mount();
    // Reads fail in whole 8 KiB units (PostgreSQL's page): a bad block's neighbour in
    // its unit fails too, every other block still reads.
    for (name, bad) in [
        ("flip", &[2][..]),
        ("swap", &[3, 5]),
        ("moved", &[1]),
        ("cut", &[6, 7]),
    ] {
        for b in 0..BLOCKS {
            if bad.iter().any(|bad| bad / 2 == b / 2) {
                assert_eio(&mount, name, b);
            } else {
                assert_intact(&mount, name, b);
            }
        }
    }
    (0..BLOCKS).for_each(|b| assert_intact(&mount, "clean", b));
    (0..BLOCKS).for_each(|b| assert_intact(&mount, "donor", b));
    // A whole-file read cannot return the bad block's bytes either.
    let whole = fs::read(mount.plain().join("flip")).expect_err("read of a damaged file");
    assert_eq!(whole.raw_os_error(), Some(libc::EIO));
    mount.unmount();

    let expected: BTreeSet<(String, u64)> = [
        ("flip", 2),
        ("swap", 3),
        ("swap", 5),
        ("moved", 1),
        ("cut", 6),
        ("cut", 7),
    ]
    .into_iter()
    .map(|(n, b)| (n.to_string(), b))
    .collect();
    let report = pgcmk_cryptfs::fsck(&cipher, mount.key()).expect("fsck");
    let found: BTreeSet<(String, u64)> = report
        .bad_blocks
        .iter()
        .map(|b| {
            (
                b.file.display().to_string(),
                b.block.expect("a block, not the header"),
            )
        })
        .collect();
    assert_eq!(found, expected, "library fsck");

    let key = key_file(&dir, "key", mount.key());
    let out = cli(&[
        "fsck",
        "--cipher-dir",
        cipher.to_str().unwrap(),
        "--key-file",
        key.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "pgcmk fs fsck exited 0 on a damaged directory:\n{stdout}"
    );
    for (name, block) in &expected {
        assert!(
            stdout.contains(&format!("{name}: block {block}:")),
            "fsck did not list {name} block {block}:\n{stdout}"
        );
    }
    assert_eq!(
        stdout.lines().filter(|l| l.contains(": block ")).count(),
        expected.len(),
        "fsck listed other blocks:\n{stdout}"
    );
}

#[test]
fn remount_keeps_files_directories_links_and_modes() {
    let _serial = real_support::serial();
    let dir = TestDir::new();
    let mut mount = CryptMount::new(&dir);
    let root = mount.plain().to_path_buf();
    fs::create_dir_all(root.join("a/b")).expect("mkdir");
    fs::write(root.join("a/b/data"), b"kept across remounts").expect("write");
    fs::write(root.join("a/old"), vec![7u8; 10_000]).expect("write");
    fs::rename(root.join("a/old"), root.join("a/renamed")).expect("rename");
    std::os::unix::fs::symlink("b/data", root.join("a/link")).expect("symlink");
    fs::set_permissions(
        root.join("a/b/data"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .expect("chmod");
    mount.remount();
    assert_eq!(
        fs::read(root.join("a/link")).expect("read via symlink"),
        b"kept across remounts"
    );
    assert_eq!(
        fs::read(root.join("a/renamed")).expect("read renamed"),
        vec![7u8; 10_000]
    );
    assert!(!root.join("a/old").exists(), "rename source still exists");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs::metadata(root.join("a/b/data")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o640);
}

#[test]
fn wrong_key_is_refused_and_nothing_is_mounted() {
    let _serial = real_support::serial();
    let dir = TestDir::new();
    let mut mount = CryptMount::new(&dir);
    fs::write(mount.plain().join("secret"), b"data").expect("write");
    mount.unmount();
    let wrong = SymmetricKey::generate().expect("key");

    let options = MountOptions {
        allow_other: true,
        ..MountOptions::default()
    };
    let err = pgcmk_cryptfs::mount(mount.cipher(), mount.plain(), wrong.clone(), options)
        .expect_err("mount with a wrong key");
    assert!(matches!(err, pgcmk_cryptfs::Error::WrongKey), "{err}");
    assert!(err.to_string().contains("wrong key"), "{err}");
    assert!(!is_mounted(mount.plain()));

    let key = key_file(&dir, "wrong-key", &wrong);
    // If the wrong key were accepted, `mount` would serve in the foreground: bound the wait.
    let out = cli_within(
        Duration::from_secs(30),
        &[
            "mount",
            "--cipher-dir",
            mount.cipher().to_str().unwrap(),
            "--mountpoint",
            mount.plain().to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "pgcmk fs mount accepted a wrong key");
    assert!(stderr.contains("wrong key"), "unclear error: {stderr}");
    assert!(
        !stderr.contains(&key_hex(&wrong)),
        "the error message shows the key"
    );
    assert!(
        !is_mounted(mount.plain()),
        "something got mounted with a wrong key"
    );

    // The right key still works and the data is there.
    mount.mount();
    assert_eq!(
        fs::read(mount.plain().join("secret")).expect("read"),
        b"data"
    );
}
