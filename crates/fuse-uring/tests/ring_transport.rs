//! The spike on a real mount: requests served over the kernel's FUSE io_uring transport,
//! and the fallback to /dev/fuse when the `fuse` module does not offer it. Needs root
//! (mount(2), the module parameter) and a kernel with CONFIG_FUSE_IO_URING (6.14+).
//!
//! Each test sets `/sys/module/fuse/parameters/enable_uring` and puts back the value it
//! found. The parameter only offers io_uring to mounts that ask for it in INIT, so other
//! FUSE mounts on the machine (fuser's never ask) are not affected.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use pgcmk_fuse_uring::kernel;
use pgcmk_fuse_uring::{Fallback, Options, Passthrough, Session, Transport};

/// Serialises the tests of this file around the module parameter.
static PARAMETER: Mutex<()> = Mutex::new(());

/// Sets `enable_uring` for the life of the guard, then restores what was there.
struct EnableUring {
    previous: bool,
    _lock: MutexGuard<'static, ()>,
}

impl EnableUring {
    fn set(on: bool) -> EnableUring {
        let lock = PARAMETER.lock().unwrap_or_else(|e| e.into_inner());
        let previous = kernel::enable_uring().expect(
            "this kernel has no /sys/module/fuse/parameters/enable_uring: \
             FUSE over io_uring needs Linux 6.14+ built with CONFIG_FUSE_IO_URING",
        );
        kernel::set_enable_uring(on).expect("writing enable_uring needs root");
        EnableUring {
            previous,
            _lock: lock,
        }
    }
}

impl Drop for EnableUring {
    fn drop(&mut self) {
        let _ = kernel::set_enable_uring(self.previous);
    }
}

/// Sets `kernel.io_uring_disabled` (2: no process may create a ring) for the life of the
/// guard. Taken with `EnableUring` held, so the tests of this file do not overlap.
struct IoUringDisabled {
    previous: String,
}

const IO_URING_DISABLED: &str = "/proc/sys/kernel/io_uring_disabled";

impl IoUringDisabled {
    fn set(value: &str) -> IoUringDisabled {
        let previous = fs::read_to_string(IO_URING_DISABLED).expect(IO_URING_DISABLED);
        fs::write(IO_URING_DISABLED, value).expect("writing io_uring_disabled needs root");
        IoUringDisabled { previous }
    }
}

impl Drop for IoUringDisabled {
    fn drop(&mut self) {
        let _ = fs::write(IO_URING_DISABLED, self.previous.trim());
    }
}

/// A backing directory with one empty file `data`, and an empty mountpoint.
fn dirs() -> (tempfile::TempDir, tempfile::TempDir) {
    let backing = tempfile::tempdir().unwrap();
    File::create(backing.path().join("data")).unwrap();
    (backing, tempfile::tempdir().unwrap())
}

fn mount(backing: &Path, mountpoint: &Path) -> Session {
    let fs = Passthrough::open(backing).unwrap();
    Session::start(mountpoint, Arc::new(fs), Options::default()).unwrap()
}

/// 3 × 64 KiB of distinct bytes.
fn pattern() -> Vec<u8> {
    (0..3 * 65536u32).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Writes the pattern in three requests, fsyncs, and reads it back with O_DIRECT so
/// that every read reaches the daemon rather than the page cache. Fails (rather than hangs)
/// if the mount does not answer within 20 s; the session's drop then aborts it.
fn write_fsync_read(file: &Path) -> Vec<u8> {
    let file = file.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(write_fsync_read_now(&file));
    });
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .expect("the mount did not answer within 20 s")
}

fn write_fsync_read_now(file: &Path) -> Vec<u8> {
    let data = pattern();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(file)
        .unwrap();
    for (i, chunk) in data.chunks(65536).enumerate() {
        f.write_all_at(chunk, (i * 65536) as u64).unwrap();
    }
    f.sync_all().unwrap();
    let mut back = vec![0u8; data.len()];
    f.read_exact_at(&mut back, 0).unwrap();
    back
}

#[test]
fn write_fsync_and_read_back_travel_over_the_ring() {
    let _uring = EnableUring::set(true);
    let (backing, mountpoint) = dirs();
    let session = mount(backing.path(), mountpoint.path());
    assert_eq!(
        session.transport(),
        &Transport::IoUring {
            queues: kernel::possible_cpus(),
            depth: Options::default().queue_depth
        }
    );

    let back = write_fsync_read(&mountpoint.path().join("data"));

    assert!(back == pattern(), "read back through the mount differs");
    assert!(
        fs::read(backing.path().join("data")).unwrap() == pattern(),
        "the backing file does not hold what was written"
    );
    let served = session.served();
    // lookup, open, 3 writes, fsync, read, flush at least; none over /dev/fuse.
    assert!(served.ring >= 8, "ring served only {served:?}");
    assert_eq!(
        served.devfuse, 0,
        "requests went over /dev/fuse: {served:?}"
    );
    session.unmount().unwrap();
}

#[test]
fn falls_back_to_dev_fuse_and_says_why_when_enable_uring_is_n() {
    let _uring = EnableUring::set(false);
    let (backing, mountpoint) = dirs();
    let session = mount(backing.path(), mountpoint.path());
    assert_eq!(
        session.transport(),
        &Transport::DevFuse {
            threads: Options::default().threads,
            reason: Fallback::NotOffered {
                enable_uring: Some(false)
            }
        }
    );
    assert!(
        session
            .transport()
            .to_string()
            .contains("enable_uring is N"),
        "{}",
        session.transport()
    );

    let back = write_fsync_read(&mountpoint.path().join("data"));

    assert!(back == pattern(), "read back through the mount differs");
    let served = session.served();
    assert_eq!(served.ring, 0);
    assert!(served.devfuse >= 8, "/dev/fuse served only {served:?}");
    session.unmount().unwrap();
}

#[test]
fn falls_back_to_dev_fuse_when_this_process_may_not_create_a_ring() {
    let _uring = EnableUring::set(true);
    let _disabled = IoUringDisabled::set("2");
    let (backing, mountpoint) = dirs();
    let session = mount(backing.path(), mountpoint.path());

    // Had INIT asked for io_uring, the kernel would hold every request for a ring that
    // can never register.
    let back = write_fsync_read(&mountpoint.path().join("data"));

    assert!(back == pattern(), "read back through the mount differs");
    assert_eq!(
        session.transport(),
        &Transport::DevFuse {
            threads: Options::default().threads,
            reason: Fallback::RingUnavailable { errno: libc::EPERM }
        }
    );
    session.unmount().unwrap();
}

#[test]
fn other_users_get_only_what_the_backing_files_modes_allow() {
    let _uring = EnableUring::set(true);
    let (backing, mountpoint) = dirs();
    fs::write(backing.path().join("data"), b"root's").unwrap();
    let session = mount(backing.path(), mountpoint.path());
    let file = mountpoint.path().join("data");
    let as_nobody = |script: &str| {
        std::process::Command::new("runuser")
            .args(["-u", "nobody", "--", "sh", "-c", script, "sh"])
            .arg(&file)
            .output()
            .expect("runuser")
    };

    let read = as_nobody("cat \"$1\"");
    let write = as_nobody("echo tampered >> \"$1\"");

    assert!(read.status.success(), "{read:?}");
    assert_eq!(read.stdout, b"root's");
    assert!(
        !write.status.success(),
        "nobody wrote a root-owned 0644 file"
    );
    assert!(
        String::from_utf8_lossy(&write.stderr).contains("Permission denied"),
        "{write:?}"
    );
    assert_eq!(fs::read(backing.path().join("data")).unwrap(), b"root's");
    session.unmount().unwrap();
}

#[test]
fn unmount_with_a_file_still_open_aborts_the_ring_and_ends_every_queue_thread() {
    let _uring = EnableUring::set(true);
    let (backing, mountpoint) = dirs();
    let session = mount(backing.path(), mountpoint.path());
    assert!(matches!(session.transport(), Transport::IoUring { .. }));
    // O_DIRECT: the read after the unmount has to ask the daemon, not the page cache.
    let open = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(mountpoint.path().join("data"))
        .unwrap();

    // Busy: a plain unmount fails, so the connection is aborted; every registered ring
    // command then completes with ENOTCONN and the queue threads must end.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(session.unmount());
    });
    let ended = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the transport threads did not end within 20 s of the unmount");

    assert!(ended.is_ok(), "{ended:?}");
    let after = open.read_at(&mut [0u8; 16], 0).unwrap_err();
    assert_eq!(after.raw_os_error(), Some(libc::ENOTCONN), "{after}");
}
