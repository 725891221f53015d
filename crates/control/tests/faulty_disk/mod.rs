//! A disk whose sectors fail on demand: an ext4 filesystem on a loop device whose
//! backing file (`disk.img`, alone in its directory) is served by a FUSE daemon in
//! the test process, which answers `EIO` to reads or writes touching the byte
//! ranges the test marks bad. The filesystem above sees what a failing drive gives
//! it; this kernel has neither device-mapper nor block-layer fault injection.

use std::ffi::OsStr;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, Session, WriteFlags,
};

/// The ext4 block size, in which `filefrag` reports extents.
const BLOCK: u64 = 4096;
const IMAGE: &str = "disk.img";
const ROOT: INodeNo = INodeNo(1);
const IMAGE_INO: INodeNo = INodeNo(2);
const TTL: Duration = Duration::from_secs(1);

/// Which requests touching a bad range fail.
#[derive(Default)]
struct Faults {
    bad: Mutex<Vec<Range<u64>>>,
    reads: AtomicBool,
    writes: AtomicBool,
}

impl Faults {
    fn fails(&self, which: &AtomicBool, at: Range<u64>) -> bool {
        which.load(Ordering::SeqCst)
            && self
                .bad
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|r| r.start < at.end && at.start < r.end)
    }
}

/// The block device's backing file, served one request at a time as the kernel sends them.
struct ImageFs {
    image: File,
    faults: Arc<Faults>,
}

impl ImageFs {
    fn attr(&self, ino: INodeNo) -> FileAttr {
        let (kind, size, perm, nlink) = if ino == ROOT {
            (FileType::Directory, 0, 0o755, 2)
        } else {
            let size = self.image.metadata().map_or(0, |m| m.len());
            (FileType::RegularFile, size, 0o600, 1)
        };
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

fn errno(e: &std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

impl Filesystem for ImageFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == ROOT && name == IMAGE {
            reply.entry(&TTL, &self.attr(IMAGE_INO), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&TTL, &self.attr(ino));
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // No page cache between the loop device and the daemon: every block the
        // filesystem reads or writes back is a request here.
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if self
            .faults
            .fails(&self.faults.reads, offset..offset + u64::from(size))
        {
            return reply.error(Errno::EIO);
        }
        let mut buf = vec![0; size as usize];
        match self.image.read_at(&mut buf, offset) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if self
            .faults
            .fails(&self.faults.writes, offset..offset + data.len() as u64)
        {
            return reply.error(Errno::EIO);
        }
        match self.image.write_all_at(data, offset) {
            Ok(()) => reply.written(u32::try_from(data.len()).unwrap()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.image.sync_data() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

/// An ext4 filesystem of `size` on a loop device over the faulty image; unmounted,
/// detached and stopped when dropped.
pub struct FaultyDisk {
    /// Where the ext4 filesystem is mounted.
    pub path: PathBuf,
    loop_device: String,
    faults: Arc<Faults>,
    session: Option<BackgroundSession>,
}

impl FaultyDisk {
    /// Makes the image (sparse), serves it, attaches a loop device, makes and mounts
    /// ext4 (4 KiB blocks) on `dir/fs`.
    pub fn mount(dir: &Path, size: &str) -> Self {
        let (store, device_dir, path) = (dir.join("store"), dir.join("dev"), dir.join("fs"));
        for d in [&store, &device_dir, &path] {
            std::fs::create_dir_all(d).unwrap();
        }
        let image = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(store.join(IMAGE))
            .unwrap();
        run(Command::new("truncate")
            .args(["-s", size])
            .arg(store.join(IMAGE)));
        let faults = Arc::new(Faults::default());
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("pgcmk-faulty-disk".into())];
        let fs = ImageFs {
            image,
            faults: faults.clone(),
        };
        let session = Session::new(fs, &device_dir, &config)
            .and_then(Session::spawn)
            .expect("serve the faulty disk image");
        let loop_device = output(
            Command::new("losetup")
                .args(["--find", "--show"])
                .arg(device_dir.join(IMAGE)),
        );
        let disk = Self {
            path,
            loop_device,
            faults,
            session: Some(session),
        };
        run(Command::new("mkfs.ext4").args(["-q", "-b", "4096", &disk.loop_device]));
        run(Command::new("mount").arg(&disk.loop_device).arg(&disk.path));
        disk
    }

    /// The byte ranges of the device holding `file`'s data (a file on this disk).
    pub fn extents_of(&self, file: &Path) -> Vec<Range<u64>> {
        let report = output(Command::new("filefrag").args(["-e", "-b4096"]).arg(file));
        // "   0:        0..      15:      34816..     34831:     16:   last,eof"
        report
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(':').map(str::trim).collect();
                fields.first()?.parse::<u64>().ok()?;
                let (start, end) = fields.get(2)?.split_once("..")?;
                let (start, end) = (
                    start.trim().parse::<u64>().ok()?,
                    end.trim().parse::<u64>().ok()?,
                );
                Some(start * BLOCK..(end + 1) * BLOCK)
            })
            .collect()
    }

    /// From now on, reads touching `ranges` fail with `EIO`.
    pub fn fail_reads(&self, ranges: Vec<Range<u64>>) {
        *self.faults.bad.lock().unwrap() = ranges;
        self.faults.reads.store(true, Ordering::SeqCst);
    }

    /// From now on, writes touching `ranges` fail with `EIO`.
    pub fn fail_writes(&self, ranges: Vec<Range<u64>>) {
        *self.faults.bad.lock().unwrap() = ranges;
        self.faults.writes.store(true, Ordering::SeqCst);
    }

    /// Every sector works again (what was refused stays unwritten).
    pub fn heal(&self) {
        self.faults.reads.store(false, Ordering::SeqCst);
        self.faults.writes.store(false, Ordering::SeqCst);
    }
}

/// Writes back what is dirty and drops the kernel's clean page cache, so the next
/// read of any file comes from its device.
pub fn drop_page_cache() {
    run(&mut Command::new("sync"));
    std::fs::write("/proc/sys/vm/drop_caches", "1").unwrap();
}

impl Drop for FaultyDisk {
    fn drop(&mut self) {
        self.heal();
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = Command::new("losetup")
            .args(["-d", &self.loop_device])
            .status();
        drop(self.session.take());
    }
}

fn run(command: &mut Command) {
    let status = command.status().unwrap();
    assert!(status.success(), "{command:?}: {status}");
}

fn output(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
