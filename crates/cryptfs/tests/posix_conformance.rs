//! POSIX behaviour through a real mount, one test per behaviour, each compared with the
//! same operation on a plain directory of the backing filesystem where that helps:
//! sizes (EFBIG, cheap extension), special files, hard links, long paths and errnos,
//! and stopping the daemon while requests are in flight. Needs root and /dev/fuse.

mod real_support;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgcmk_cryptfs::format::MAX_PLAIN_SIZE;
use real_support::{CryptMount, TestDir};

/// A mount and, beside it, a plain directory on the backing filesystem.
struct Side {
    _root: TestDir,
    mount: CryptMount,
    plain: PathBuf,
}

impl Side {
    fn new() -> Self {
        let root = TestDir::new();
        let mount = CryptMount::new(&root);
        let plain = root.subdir("plain", false);
        Self {
            _root: root,
            mount,
            plain,
        }
    }

    /// `name` on the mount and in the plain directory.
    fn both(&self, name: &str) -> [PathBuf; 2] {
        [self.mount.plain().join(name), self.plain.join(name)]
    }
}

fn c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// The errno of a libc call's result (0 on success).
fn errno_of(ret: libc::c_int) -> i32 {
    if ret == 0 {
        0
    } else {
        io::Error::last_os_error().raw_os_error().unwrap()
    }
}

fn truncate(path: &Path, len: i64) -> i32 {
    // SAFETY: a valid C string; truncate does not keep the pointer.
    errno_of(unsafe { libc::truncate(c(path).as_ptr(), len) })
}

fn ftruncate(file: &File, len: i64) -> i32 {
    // SAFETY: a descriptor owned by `file`.
    errno_of(unsafe { libc::ftruncate(file.as_raw_fd(), len) })
}

fn fallocate(file: &File, mode: i32, offset: i64, len: i64) -> i32 {
    // SAFETY: a descriptor owned by `file`.
    errno_of(unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, len) })
}

fn rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap()
}

/// Bytes the backing filesystem allocated for the cipher file of `name`.
fn allocated(side: &Side, name: &str) -> u64 {
    fs::metadata(side.mount.cipher().join(name))
        .unwrap()
        .blocks()
        * 512
}

#[test]
fn sizes_beyond_the_maximum_answer_efbig_at_once() {
    let side = Side::new();
    for path in side.both("big") {
        fs::write(&path, b"data").unwrap();
        let started = Instant::now();
        // The reproduction: ext4 and gocryptfs answer EFBIG at once.
        assert_eq!(
            truncate(&path, 999_999_999_999_999),
            libc::EFBIG,
            "{path:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{path:?}");
        assert_eq!(
            fs::read(&path).unwrap(),
            b"data",
            "{path:?}: size unchanged"
        );
    }
    let file = rw(&side.mount.plain().join("big"));
    let over = MAX_PLAIN_SIZE as i64 + 1;
    assert_eq!(ftruncate(&file, over), libc::EFBIG);
    assert_eq!(fallocate(&file, 0, over - 10, 10), libc::EFBIG);
    assert_eq!(
        fallocate(&file, libc::FALLOC_FL_KEEP_SIZE, over - 10, 10),
        libc::EFBIG
    );
    assert_eq!(file.metadata().unwrap().len(), 4);
    assert!(allocated(&side, "big") < 64 * 1024);
}

#[test]
fn extending_a_file_costs_metadata_not_its_size() {
    const GIB: u64 = 1 << 30;
    let side = Side::new();
    let path = side.mount.plain().join("extended");
    let file = rw(&path);
    file.write_all_at(b"head", 0).unwrap();
    let started = Instant::now();
    file.set_len(GIB + 4).unwrap();
    file.sync_all().unwrap();
    let took = started.elapsed();
    let bytes = allocated(&side, "extended");
    eprintln!("extending by 1 GiB: {took:?}, {bytes} bytes allocated");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(bytes < 64 << 20, "{bytes} bytes allocated for a 1 GiB hole");
    // Holes read as zeros, around data and after a remount.
    file.write_all_at(b"tail", 2 * GIB).unwrap();
    drop(file);
    let mut mount = side.mount;
    mount.remount();
    let file = File::open(&path).unwrap();
    assert_eq!(file.metadata().unwrap().len(), 2 * GIB + 4);
    let mut buf = vec![1u8; 8192];
    for at in [4, GIB / 2 - 3, GIB, GIB + 4, 2 * GIB - 8192] {
        file.read_exact_at(&mut buf, at).unwrap();
        assert!(buf.iter().all(|b| *b == 0), "zeros at {at}");
    }
    let mut edge = [0u8; 8];
    file.read_exact_at(&mut edge, 0).unwrap();
    assert_eq!(&edge[..4], b"head");
    file.read_exact_at(&mut edge[..4], 2 * GIB).unwrap();
    assert_eq!(&edge[..4], b"tail");
    let bytes = fs::metadata(mount.cipher().join("extended"))
        .unwrap()
        .blocks()
        * 512;
    assert!(
        bytes < 128 << 20,
        "{bytes} bytes allocated for 2 GiB of holes"
    );
    // fallocate that keeps the size reserves space without writing it.
    let file = rw(&path);
    assert_eq!(fallocate(&file, libc::FALLOC_FL_KEEP_SIZE, 0, 1 << 20), 0);
    assert_eq!(file.metadata().unwrap().len(), 2 * GIB + 4);
}

/// The daemon of `sigterm_stops_the_daemon_while_a_writer_is_busy`, in its own
/// process: mounts `STOP_CIPHER` at `STOP_MOUNT` with `STOP_KEY` and serves until a
/// termination signal, as `pgcmk fs mount` does.
#[test]
#[ignore = "the daemon process of the SIGTERM test; started by it with STOP_* set"]
fn sigterm_daemon_process() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"));
    let key =
        pgcmk_crypto::SymmetricKey::from_slice(&hex::decode(var("STOP_KEY")).unwrap()).unwrap();
    let signals = pgcmk_cryptfs::TerminationSignals::block().unwrap();
    let handle = pgcmk_cryptfs::mount(
        Path::new(&var("STOP_CIPHER")),
        Path::new(&var("STOP_MOUNT")),
        key,
        pgcmk_cryptfs::MountOptions::default(),
    )
    .unwrap();
    println!("mounted");
    handle.serve_until_signal(&signals).unwrap();
    println!("stopped");
}

/// The daemon process of the SIGTERM test; whatever happens to the test, dropping it
/// stops the process (if still running) and detaches its mount.
struct Daemon {
    child: std::process::Child,
    mountpoint: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if real_support::mount::is_mounted(&self.mountpoint) {
            // SAFETY: a valid C string; umount2 does not keep it.
            unsafe { libc::umount2(c(&self.mountpoint).as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[test]
fn sigterm_stops_the_daemon_while_a_writer_is_busy() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let (cipher, mnt) = (dir.path().join("cipher"), dir.path().join("mnt"));
    fs::create_dir(&mnt).unwrap();
    let key = pgcmk_crypto::SymmetricKey::from_bytes([5; 32]);
    pgcmk_cryptfs::init(&cipher, &key).unwrap();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--ignored",
            "--exact",
            "sigterm_daemon_process",
            "--nocapture",
        ])
        .env("STOP_CIPHER", &cipher)
        .env("STOP_MOUNT", &mnt)
        .env("STOP_KEY", hex::encode([5u8; 32]))
        .stdout(Stdio::piped());
    // The daemon blocks the termination signals in the thread that mounts; libtest's
    // own threads must not take them either, as in `pgcmk fs mount`, where the main
    // thread blocks them first. A blocked mask survives exec.
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut daemon = Daemon {
        child: command.spawn().unwrap(),
        mountpoint: mnt.clone(),
    };
    let mut lines = BufReader::new(daemon.child.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.unwrap().contains("mounted")),
        "daemon did not mount"
    );
    // A writer that keeps the mount busy: an open file, written and fsynced in a loop.
    let path = mnt.join("busy");
    let writer = std::thread::spawn(move || -> io::Result<()> {
        let mut file = File::create(&path)?;
        loop {
            file.write_all(&[7; 65536])?;
            file.sync_data()?;
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let pid = daemon.child.id() as libc::pid_t;
    // SAFETY: signalling the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the daemon did not stop within 20 s of SIGTERM with a busy writer"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "daemon exited with {status}");
    assert!(!real_support::mount::is_mounted(&mnt), "still mounted");
    let error = writer
        .join()
        .unwrap()
        .expect_err("the writer must fail once the mount is gone");
    eprintln!(
        "stopped in {:?}; the writer saw: {error}",
        started.elapsed()
    );
    assert!(lines.any(|l| l.unwrap().contains("stopped")));
    // The volume was closed cleanly: it mounts again without crash recovery.
    let again =
        pgcmk_cryptfs::mount(&cipher, &mnt, key, pgcmk_cryptfs::MountOptions::default()).unwrap();
    assert!(again.recovery().is_none(), "the stop left the volume dirty");
    again.unmount().unwrap();
}
