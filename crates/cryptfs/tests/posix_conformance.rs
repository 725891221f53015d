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

    /// Runs `operations` in a new directory `name` in the plain directory, then on
    /// the mount, and asserts the same outcome; returns the mount's directory.
    fn compare<T: PartialEq + std::fmt::Debug>(
        &self,
        name: &str,
        operations: impl Fn(&Path) -> T,
    ) -> PathBuf {
        let [mounted, plain] = self.both(name);
        fs::create_dir(&mounted).unwrap();
        fs::create_dir(&plain).unwrap();
        let expected = operations(&plain);
        assert_eq!(operations(&mounted), expected, "mount vs. plain directory");
        mounted
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
    // What is written, not how long it takes (that moves with the disk and the
    // load; bench/cryptfs measures time): a 1 GiB hole costs its metadata only.
    eprintln!("extending by 1 GiB: {took:?}, {bytes} bytes allocated");
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

impl Daemon {
    /// Starts the daemon process on a new volume in `dir`; returns it once mounted,
    /// with its standard output.
    fn start(
        dir: &Path,
    ) -> (
        Self,
        impl Iterator<Item = io::Result<String>>,
        pgcmk_crypto::SymmetricKey,
    ) {
        use std::io::{BufRead, BufReader};
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        let (cipher, mnt) = (dir.join("cipher"), dir.join("mnt"));
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
        // The daemon blocks the termination signals in the thread that mounts;
        // libtest's own threads must not take them either, as in `pgcmk fs mount`,
        // where the main thread blocks them first. A blocked mask survives exec.
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
            mountpoint: mnt,
        };
        let mut lines = BufReader::new(daemon.child.stdout.take().unwrap()).lines();
        assert!(
            lines.any(|l| l.unwrap().contains("mounted")),
            "daemon did not mount"
        );
        (daemon, lines, key)
    }

    /// Sends SIGTERM and waits (at most 20 s) for a clean exit; returns how long
    /// it took. The mount must be gone.
    fn terminate(&mut self) -> Duration {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling the child this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the daemon did not stop within 20 s of SIGTERM with a busy client"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "daemon exited with {status}");
        assert!(
            !real_support::mount::is_mounted(&self.mountpoint),
            "still mounted"
        );
        started.elapsed()
    }
}

/// Mounts `dir`'s volume again and checks that it was closed cleanly.
fn remount_clean(dir: &Path, key: pgcmk_crypto::SymmetricKey) -> pgcmk_cryptfs::MountHandle {
    let (cipher, mnt) = (dir.join("cipher"), dir.join("mnt"));
    let again =
        pgcmk_cryptfs::mount(&cipher, &mnt, key, pgcmk_cryptfs::MountOptions::default()).unwrap();
    assert!(again.recovery().is_none(), "the stop left the volume dirty");
    again
}

#[test]
fn sigterm_stops_the_daemon_while_a_writer_is_busy() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, mut lines, key) = Daemon::start(dir.path());
    // A writer that keeps the mount busy: an open file, written and fsynced in a loop.
    let path = daemon.mountpoint.join("busy");
    let writer = std::thread::spawn(move || -> io::Result<()> {
        let mut file = File::create(&path)?;
        loop {
            file.write_all(&[7; 65536])?;
            file.sync_data()?;
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let took = daemon.terminate();
    let error = writer
        .join()
        .unwrap()
        .expect_err("the writer must fail once the mount is gone");
    eprintln!("stopped in {took:?}; the writer saw: {error}");
    assert!(lines.any(|l| l.unwrap().contains("stopped")));
    remount_clean(dir.path(), key).unmount().unwrap();
}

#[test]
fn sigterm_stops_the_daemon_during_a_huge_extension_and_the_file_keeps_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, _lines, key) = Daemon::start(dir.path());
    let path = daemon.mountpoint.join("grown");
    fs::write(&path, b"small").unwrap();
    // 200 GiB of holes: minutes of metadata writes, unless the stop cuts it short.
    let extender = std::thread::spawn(move || truncate(&path, 200 << 30));
    std::thread::sleep(Duration::from_millis(500));
    let took = daemon.terminate();
    let errno = extender.join().unwrap();
    eprintln!("stopped in {took:?}; the truncate answered errno {errno}");
    assert_ne!(errno, 0, "the extension cannot have finished");
    let mount = remount_clean(dir.path(), key);
    let file = mount.mountpoint().join("grown");
    assert_eq!(
        fs::read(&file).unwrap(),
        b"small",
        "the file keeps its size"
    );
    let cipher = fs::metadata(dir.path().join("cipher/grown")).unwrap();
    assert!(
        cipher.len() < 1 << 20,
        "{} bytes left in the cipher file",
        cipher.len()
    );
    mount.unmount().unwrap();
}

/// A directory descriptor (closed on drop).
struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: a descriptor this test opened.
        unsafe { libc::close(self.0) };
    }
}

fn cname(name: &str) -> CString {
    CString::new(name).unwrap()
}

/// `openat(dir, name, flags)`: the descriptor, or the errno.
fn openat(dir: &Fd, name: &str, flags: i32) -> Result<Fd, i32> {
    // SAFETY: valid descriptor and C string; mode is read only with O_CREAT.
    let fd = unsafe { libc::openat(dir.0, cname(name).as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        Err(errno_of(fd))
    } else {
        Ok(Fd(fd))
    }
}

/// The results of a sequence of `*at` calls 30 directories of 200-byte names deep
/// (6,000 bytes below `root`, beyond PATH_MAX for any absolute path), for comparing
/// a mount with a plain directory.
fn deep_operations(root: &Path) -> Vec<(String, i32)> {
    let mut results: Vec<(String, i32)> = Vec::new();
    fn record(results: &mut Vec<(String, i32)>, what: &str, ret: libc::c_int) {
        results.push((what.to_string(), errno_of(ret)));
    }
    let name = "d".repeat(200);
    let mut dir = Fd(
        // SAFETY: a valid C string.
        unsafe { libc::open(c(root).as_ptr(), libc::O_DIRECTORY | libc::O_CLOEXEC) },
    );
    for _ in 0..30 {
        // SAFETY: valid descriptor and C string.
        record(&mut results, "mkdirat", unsafe {
            libc::mkdirat(dir.0, cname(&name).as_ptr(), 0o755)
        });
        dir = openat(&dir, &name, libc::O_DIRECTORY).expect("openat of a new directory");
    }
    let file = openat(&dir, "file", libc::O_CREAT | libc::O_RDWR).expect("create deep down");
    // SAFETY: a valid descriptor and buffer.
    let wrote = unsafe { libc::write(file.0, b"deep".as_ptr().cast(), 4) };
    results.push(("write".into(), wrote as i32));
    drop(file);
    // SAFETY (all calls below): valid descriptors, C strings and out-buffers.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    record(&mut results, "fstatat", unsafe {
        libc::fstatat(dir.0, cname("file").as_ptr(), &mut st, 0)
    });
    results.push(("size".into(), st.st_size as i32));
    record(&mut results, "renameat", unsafe {
        libc::renameat(
            dir.0,
            cname("file").as_ptr(),
            dir.0,
            cname("renamed").as_ptr(),
        )
    });
    record(&mut results, "symlinkat", unsafe {
        libc::symlinkat(cname("renamed").as_ptr(), dir.0, cname("link").as_ptr())
    });
    let mut buf = [0u8; 64];
    let n = unsafe { libc::readlinkat(dir.0, cname("link").as_ptr(), buf.as_mut_ptr().cast(), 64) };
    results.push(("readlinkat".into(), n as i32));
    record(&mut results, "fchmodat", unsafe {
        libc::fchmodat(dir.0, cname("renamed").as_ptr(), 0o600, 0)
    });
    record(&mut results, "utimensat", unsafe {
        libc::utimensat(
            dir.0,
            cname("renamed").as_ptr(),
            std::ptr::null(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    });
    let opened = openat(&dir, "renamed", libc::O_RDONLY).map(|_| ());
    results.push(("open renamed".into(), opened.err().unwrap_or(0)));
    // Errnos for names that do not exist: ENOENT, never ENAMETOOLONG.
    record(&mut results, "unlinkat missing", unsafe {
        libc::unlinkat(dir.0, cname("missing").as_ptr(), 0)
    });
    record(&mut results, "rmdir missing", unsafe {
        libc::unlinkat(dir.0, cname("missing").as_ptr(), libc::AT_REMOVEDIR)
    });
    record(&mut results, "fstatat missing", unsafe {
        libc::fstatat(dir.0, cname("missing").as_ptr(), &mut st, 0)
    });
    results.push((
        "open missing".into(),
        openat(&dir, "missing", 0).err().unwrap_or(0),
    ));
    record(&mut results, "unlinkat link", unsafe {
        libc::unlinkat(dir.0, cname("link").as_ptr(), 0)
    });
    record(&mut results, "unlinkat file", unsafe {
        libc::unlinkat(dir.0, cname("renamed").as_ptr(), 0)
    });
    record(&mut results, "mkdirat sub", unsafe {
        libc::mkdirat(dir.0, cname("sub").as_ptr(), 0o700)
    });
    record(&mut results, "rmdir sub", unsafe {
        libc::unlinkat(dir.0, cname("sub").as_ptr(), libc::AT_REMOVEDIR)
    });
    results
}

#[test]
fn operations_relative_to_directory_handles_reach_as_deep_as_the_kernel_allows() {
    let side = Side::new();
    side.compare("deep", |dir| {
        let results = deep_operations(dir);
        let missing = ("unlinkat missing".to_string(), libc::ENOENT);
        assert!(results.contains(&missing), "{results:?}");
        results
    });
}

/// What `stat` says about `path` that must not differ between a mount and a plain
/// directory: the file type, the permission bits, the device number and the links.
fn kind_mode_rdev_links(path: &Path) -> Result<(u32, u32, u64, u64), i32> {
    fs::symlink_metadata(path)
        .map(|m| {
            (
                m.mode() & libc::S_IFMT,
                m.mode() & 0o7777,
                m.rdev(),
                m.nlink(),
            )
        })
        .map_err(|e| e.raw_os_error().unwrap())
}

fn mknod(path: &Path, mode: u32, dev: libc::dev_t) -> i32 {
    // SAFETY: a valid C string.
    errno_of(unsafe { libc::mknod(c(path).as_ptr(), mode, dev) })
}

/// Makes one of each special file (and a regular one) in `dir` with mknod(2), plus a
/// socket bound there, and says what happened.
fn mknod_everything(dir: &Path) -> String {
    let made = [
        ("fifo", libc::S_IFIFO | 0o640, 0),
        ("socket", libc::S_IFSOCK | 0o600, 0),
        ("char", libc::S_IFCHR | 0o600, libc::makedev(1, 3)),
        ("block", libc::S_IFBLK | 0o660, libc::makedev(7, 200)),
        ("regular", libc::S_IFREG | 0o644, 0),
    ];
    let mut out: Vec<String> = made
        .iter()
        .map(|(name, mode, dev)| {
            let path = dir.join(name);
            let errno = mknod(&path, *mode, *dev);
            format!("{name}: {errno} {:?}", kind_mode_rdev_links(&path))
        })
        .collect();
    out.push(format!(
        "again: {}",
        mknod(&dir.join("fifo"), libc::S_IFIFO | 0o600, 0)
    ));
    let listener = std::os::unix::net::UnixListener::bind(dir.join("bound"));
    let bound = kind_mode_rdev_links(&dir.join("bound")).map(|k| k.0);
    out.push(format!("bind: {} {bound:?}", listener.is_ok()));
    out.join("\n")
}

#[test]
fn fifos_sockets_and_device_nodes_are_made_as_on_the_backing_filesystem() {
    let side = Side::new();
    side.compare("special", mknod_everything);
    // A FIFO on the mount passes data between two processes' ends.
    let fifo = side.mount.plain().join("special/fifo");
    let reader = std::thread::spawn({
        let fifo = fifo.clone();
        move || fs::read(fifo).unwrap()
    });
    fs::write(&fifo, b"through the pipe").unwrap();
    assert_eq!(reader.join().unwrap(), b"through the pipe");
    // After a remount they are still what they were.
    let mut mount = side.mount;
    mount.remount();
    let fifo = kind_mode_rdev_links(&mount.plain().join("special/fifo")).unwrap();
    assert_eq!(fifo, (libc::S_IFIFO, 0o640 & !umask(), 0, 1));
    let char_dev = kind_mode_rdev_links(&mount.plain().join("special/char")).unwrap();
    assert_eq!(char_dev.2, libc::makedev(1, 3));
}

/// The process umask (read without changing it for long).
fn umask() -> u32 {
    // SAFETY: umask cannot fail; the old value is put back at once.
    unsafe {
        let old = libc::umask(0o022);
        libc::umask(old);
        old
    }
}

/// One sequence of link(2) calls and checks, for comparing a mount with a plain
/// directory: link counts, shared content, shared inode numbers, and errnos.
fn link_operations(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
    fs::write(&a, b"first").unwrap();
    out.push(format!(
        "link: {:?}",
        fs::hard_link(&a, &b).map_err(|e| e.raw_os_error())
    ));
    let (ma, mb) = (fs::metadata(&a).unwrap(), fs::metadata(&b).unwrap());
    out.push(format!(
        "nlink {} {} same inode {}",
        ma.nlink(),
        mb.nlink(),
        ma.ino() == mb.ino()
    ));
    fs::write(&b, b"written through b").unwrap();
    out.push(format!(
        "a reads {:?}",
        String::from_utf8(fs::read(&a).unwrap())
    ));
    out.push(format!(
        "exists: {:?}",
        fs::hard_link(&a, &b).map_err(|e| e.raw_os_error())
    ));
    out.push(format!(
        "missing: {:?}",
        fs::hard_link(dir.join("missing"), &c).map_err(|e| e.raw_os_error())
    ));
    out.push(format!(
        "dir: {:?}",
        fs::hard_link(dir, dir.join("dirlink")).map_err(|e| e.raw_os_error())
    ));
    // The name the file was last reached by goes away; the other still opens it.
    fs::remove_file(&b).unwrap();
    out.push(format!(
        "nlink after unlink {}",
        fs::metadata(&a).unwrap().nlink()
    ));
    out.push(format!(
        "a reads {:?}",
        String::from_utf8(fs::read(&a).unwrap())
    ));
    fs::hard_link(&a, &b).unwrap();
    fs::remove_file(&a).unwrap();
    out.push(format!(
        "b reads {:?}",
        String::from_utf8(fs::read(&b).unwrap())
    ));
    // Renaming one name of a file over another name of it changes nothing.
    fs::hard_link(&b, &c).unwrap();
    out.push(format!(
        "rename onto itself: {:?}",
        fs::rename(&b, &c).map_err(|e| e.raw_os_error())
    ));
    out.push(format!("b {} c {}", b.exists(), c.exists()));
    out.push(format!("nlink {}", fs::metadata(&c).unwrap().nlink()));
    // Open through one name, unlink every other: the open file goes on.
    let open = rw(&c);
    fs::remove_file(&b).unwrap();
    open.write_all_at(b"still open", 0).unwrap();
    out.push(format!(
        "c reads {:?}",
        String::from_utf8(fs::read(&c).unwrap())
    ));
    out
}

#[test]
fn hard_links_share_one_node_and_count_links_as_on_the_backing_filesystem() {
    let side = Side::new();
    let mounted = side.compare("links", link_operations);
    // Through a remount (nothing cached): two names, one inode, one node.
    fs::hard_link(mounted.join("c"), mounted.join("d")).unwrap();
    let mut mount = side.mount;
    mount.remount();
    let dir = mount.plain().join("links");
    let (c, d) = (
        fs::metadata(dir.join("c")).unwrap(),
        fs::metadata(dir.join("d")).unwrap(),
    );
    assert_eq!((c.ino(), c.nlink()), (d.ino(), 2));
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> i32 {
    // SAFETY: valid C strings.
    errno_of(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c(from).as_ptr(),
            libc::AT_FDCWD,
            c(to).as_ptr(),
            flags,
        )
    })
}

/// renameat2 with RENAME_NOREPLACE and RENAME_EXCHANGE, and what the names lead to.
fn renameat2_operations(dir: &Path) -> Vec<String> {
    let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
    fs::write(&a, b"A").unwrap();
    fs::write(&b, b"B").unwrap();
    let read = |p: &Path| String::from_utf8(fs::read(p).unwrap_or_default()).unwrap();
    let mut out = vec![format!(
        "noreplace existing: {}",
        renameat2(&a, &b, libc::RENAME_NOREPLACE)
    )];
    out.push(format!(
        "noreplace new: {}",
        renameat2(&a, &c, libc::RENAME_NOREPLACE)
    ));
    out.push(format!(
        "exchange: {}",
        renameat2(&b, &c, libc::RENAME_EXCHANGE)
    ));
    out.push(format!(
        "b={} c={} a exists={}",
        read(&b),
        read(&c),
        a.exists()
    ));
    out.push(format!(
        "exchange missing: {}",
        renameat2(&a, &c, libc::RENAME_EXCHANGE)
    ));
    // After an exchange each name still opens its own (new) file through the daemon.
    fs::write(&b, b"BB").unwrap();
    out.push(format!("b={} c={}", read(&b), read(&c)));
    out
}

#[test]
fn renameat2_noreplace_and_exchange_work_as_on_the_backing_filesystem() {
    Side::new().compare("renames", renameat2_operations);
}
