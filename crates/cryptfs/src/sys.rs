//! The only unsafe code in cryptfs: thin wrappers over libc calls that std does not
//! offer (statvfs, utimensat on symlinks, fallocate, syncfs, sync_file_range, umount2,
//! signal waiting, non-blocking reads).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Space and inode counts of the filesystem holding `path`.
pub(crate) struct FsStats {
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_available: u64,
    pub files: u64,
    pub files_free: u64,
    pub block_size: u32,
    pub name_max: u32,
    pub fragment_size: u32,
}

pub(crate) fn statvfs(path: &Path) -> io::Result<FsStats> {
    let path = c_path(path)?;
    let mut out = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid NUL-terminated string and `out` points to writable
    // memory of the right type; statvfs fully initialises it when it returns 0.
    check(unsafe { libc::statvfs(path.as_ptr(), out.as_mut_ptr()) })?;
    // SAFETY: the call succeeded, so `out` is initialised.
    let s = unsafe { out.assume_init() };
    Ok(FsStats {
        blocks: s.f_blocks,
        blocks_free: s.f_bfree,
        blocks_available: s.f_bavail,
        files: s.f_files,
        files_free: s.f_ffree,
        block_size: s.f_bsize as u32,
        name_max: s.f_namemax as u32,
        fragment_size: s.f_frsize as u32,
    })
}

/// A timestamp to set: leave alone, now, or a given time.
#[derive(Clone, Copy)]
pub(crate) enum SetTime {
    Keep,
    Now,
    At(SystemTime),
}

fn timespec(time: SetTime) -> libc::timespec {
    match time {
        SetTime::Keep => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        SetTime::Now => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        SetTime::At(t) => {
            let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
                Err(e) => {
                    let d: Duration = e.duration();
                    let mut sec = -(d.as_secs() as i64);
                    let mut nsec = -(d.subsec_nanos() as i64);
                    if nsec < 0 {
                        sec -= 1;
                        nsec += 1_000_000_000;
                    }
                    (sec, nsec)
                }
            };
            libc::timespec {
                tv_sec: sec,
                tv_nsec: nsec,
            }
        }
    }
}

/// Sets access and modification times of `path` without following a final symlink.
pub(crate) fn utimens_nofollow(path: &Path, atime: SetTime, mtime: SetTime) -> io::Result<()> {
    let path = c_path(path)?;
    let times = [timespec(atime), timespec(mtime)];
    // SAFETY: `path` is NUL-terminated and `times` is an array of two timespecs, as
    // utimensat requires; neither pointer is retained after the call.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            path.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Preallocates `len` bytes at `offset` of `file` without changing its size.
pub(crate) fn fallocate_keep_size(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    };
    // SAFETY: the descriptor is owned by `file`, which outlives the call.
    check(unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, offset, len) })
}

/// Marks `file`'s cached pages as not worth keeping: the kernel evicts them first.
pub(crate) fn fadvise_noreuse(file: &File) -> io::Result<()> {
    fadvise(file, 0, 0, libc::POSIX_FADV_NOREUSE)
}

/// Turns off the kernel's readahead on `file`: it would read the holes between the
/// runs a reader uses (see [`prefetch`]).
pub(crate) fn fadvise_random(file: &File) -> io::Result<()> {
    fadvise(file, 0, 0, libc::POSIX_FADV_RANDOM)
}

/// Starts reading `len` bytes at `offset` of `file` into the page cache, without
/// waiting for them.
pub(crate) fn prefetch(file: &File, offset: u64, len: u64) -> io::Result<()> {
    fadvise(file, offset, len, libc::POSIX_FADV_WILLNEED)
}

fn fadvise(file: &File, offset: u64, len: u64, advice: libc::c_int) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    };
    // SAFETY: the descriptor is owned by `file`, which outlives the call; the call
    // only reads its integer arguments.
    let ret = unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, advice) };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}

/// Starts writing `len` bytes at `offset` of `file` from the page cache to the disk,
/// without waiting for them (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`): makes
/// nothing durable (no cache flush, no metadata), only starts the I/O early.
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    };
    // SAFETY: the descriptor is owned by `file`, which outlives the call; the call
    // only reads its integer arguments.
    check(unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    })
}

/// Reads `buf.len()` bytes at `offset` of `file` only if they are all in the page
/// cache (`preadv2` with `RWF_NOWAIT`): `Ok(false)` when reading would wait for the
/// disk (or the read came back short; the caller reads again the usual way). On a
/// filesystem without non-blocking reads, an ordinary read.
pub(crate) fn read_cached_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<bool> {
    let Ok(offset) = i64::try_from(offset) else {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    };
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: the descriptor is owned by `file`, which outlives the call; `iov`
    // describes `buf`, which is writable for its whole length during the call.
    let ret = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    match ret {
        n if n >= 0 => Ok(n as usize == buf.len()),
        _ => match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::EAGAIN) => Ok(false),
            e if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                crate::storage::read_or_report_eof(file, buf, offset as u64)
            }
            e => Err(e),
        },
    }
}

/// Writes back every dirty page and inode of the filesystem holding `file`.
pub(crate) fn syncfs(file: &File) -> io::Result<()> {
    // SAFETY: the descriptor is owned by `file`, which outlives the call.
    check(unsafe { libc::syncfs(file.as_raw_fd()) })
}

/// Raises this process's soft limit on open descriptors to its hard limit; returns the
/// new limit.
pub(crate) fn raise_open_file_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit for the duration of the call.
        check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) })?;
    }
    Ok(limit.rlim_cur)
}

/// Unmounts the filesystem at `path` (no lazy detach unless `detach`).
pub(crate) fn umount(path: &Path, detach: bool) -> io::Result<()> {
    let path = c_path(path)?;
    let flags = if detach { libc::MNT_DETACH } else { 0 };
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    check(unsafe { libc::umount2(path.as_ptr(), flags) })
}

/// `renameat2(2)` of `from` to `to` with `flags` (0: rename(2)).
pub(crate) fn rename(from: &Path, to: &Path, flags: u32) -> io::Result<()> {
    let (from, to) = (c_path(from)?, c_path(to)?);
    // SAFETY: both paths are valid NUL-terminated strings for the duration of the call.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    })
}

/// Makes a FIFO, socket or device node at `path` (`mode` includes the file type).
pub(crate) fn mknod(path: &Path, mode: u32, rdev: u32) -> io::Result<()> {
    let path = c_path(path)?;
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    check(unsafe { libc::mknod(path.as_ptr(), mode, libc::dev_t::from(rdev)) })
}

/// Aborts the FUSE connection of the mount at `path` (`umount2(MNT_FORCE)`: FUSE's
/// `umount_begin` fails every request in flight or queued with `ENOTCONN`). The
/// unmount itself may still fail with `EBUSY` while files are open.
pub(crate) fn umount_force(path: &Path) -> io::Result<()> {
    let path = c_path(path)?;
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    check(unsafe { libc::umount2(path.as_ptr(), libc::MNT_FORCE) })
}

/// SIGINT, SIGTERM and SIGHUP, blocked so they can be waited for synchronously.
pub(crate) struct BlockedSignals {
    set: libc::sigset_t,
}

impl BlockedSignals {
    /// Blocks the termination signals in the calling thread; threads it spawns
    /// afterwards inherit the mask, so the signals stay pending until waited for.
    pub(crate) fn block() -> io::Result<Self> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set; sigaddset and pthread_sigmask read
        // and write only the set we own; a null old-mask pointer is allowed.
        unsafe {
            check(libc::sigemptyset(set.as_mut_ptr()))?;
            let mut set = set.assume_init();
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                check(libc::sigaddset(&mut set, signal))?;
            }
            let ret = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if ret != 0 {
                return Err(io::Error::from_raw_os_error(ret));
            }
            Ok(Self { set })
        }
    }

    /// Waits up to `timeout` for one of the signals; returns its number.
    pub(crate) fn wait(&self, timeout: Duration) -> Option<i32> {
        let timeout = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: the set was initialised in `block`; a null siginfo pointer is allowed.
        let signal = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &timeout) };
        (signal > 0).then_some(signal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// Needs a filesystem whose clean pages `POSIX_FADV_DONTNEED` drops (ext4, as
    /// in CI), not tmpfs.
    #[test]
    fn read_cached_at_reads_only_what_is_in_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("f"))
            .unwrap();
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        file.write_all_at(&data, 0).unwrap();
        file.sync_all().unwrap();
        fadvise(&file, 0, 0, libc::POSIX_FADV_DONTNEED).unwrap();
        let mut page = [0u8; 4096];
        assert!(
            !read_cached_at(&file, &mut page, 4096).unwrap(),
            "evicted: reading would wait for the disk"
        );
        file.read_exact_at(&mut page, 4096).unwrap();
        page.fill(0);
        assert!(read_cached_at(&file, &mut page, 4096).unwrap());
        assert_eq!(page[..], data[4096..]);
        assert!(
            !read_cached_at(&file, &mut page, 8192).unwrap(),
            "past the end: short"
        );
    }
}
