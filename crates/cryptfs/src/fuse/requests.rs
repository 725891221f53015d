//! `fuser::Filesystem` for [`CryptFs`]: each request is translated to a call of its
//! family's handler (`file_ops`, `dir_ops`, `attr`) and the result to a reply.

use std::ffi::OsStr;
use std::io;
use std::path::Path;

use fuser::{
    Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::attr::AttrChange;
use super::dir_ops::Entry;
use super::request_metrics::Op;
use super::{CryptFs, MAX_WRITE, TTL};

fn reply_entry(reply: ReplyEntry, result: Result<Entry, Errno>) {
    match result {
        Ok(entry) => reply.entry(&TTL, &entry.attr, Generation(entry.generation)),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn reply_attr(reply: ReplyAttr, result: Result<fuser::FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.attr(&TTL, &attr),
        Err(e) => reply.error(e),
    }
}

/// Whether a WRITE must be made durable before replying: `Some(true)` for data
/// only (O_DSYNC), `Some(false)` for data and metadata (O_SYNC).
fn sync_requested(write_flags: WriteFlags, flags: OpenFlags) -> Option<bool> {
    if write_flags.contains(WriteFlags::FUSE_WRITE_CACHE) {
        None
    } else if flags.0 & libc::O_SYNC == libc::O_SYNC {
        Some(false)
    } else if flags.0 & libc::O_DSYNC != 0 {
        Some(true)
    } else {
        None
    }
}

impl Filesystem for CryptFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // The writeback cache is required for speed; the rest are best effort.
        config
            .add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE)
            .map_err(|_| io::Error::other("the kernel does not offer the FUSE writeback cache"))?;
        for flag in [InitFlags::FUSE_PARALLEL_DIROPS, InitFlags::FUSE_ASYNC_DIO] {
            let _ = config.add_capabilities(flag);
        }
        let _ = config.set_max_write(MAX_WRITE);
        if let Err(max) = config.set_max_readahead(MAX_WRITE) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _timer = self.metrics.start(Op::Lookup);
        reply_entry(reply, self.lookup_name(parent.0, name));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _timer = self.metrics.start(Op::Forget);
        self.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _timer = self.metrics.start(Op::Getattr);
        reply_attr(reply, self.getattr_ino(ino.0));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _timer = self.metrics.start(Op::Setattr);
        let change = AttrChange {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        };
        reply_attr(reply, self.setattr_ino(ino.0, change));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _timer = self.metrics.start(Op::Readlink);
        match self.readlink_ino(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _timer = self.metrics.start(Op::Mknod);
        let owner = (req.uid(), req.gid());
        let mode = mode & !(umask & 0o7777);
        reply_entry(reply, self.mknod_name(owner, parent.0, name, mode, rdev));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _timer = self.metrics.start(Op::Mkdir);
        let owner = (req.uid(), req.gid());
        reply_entry(reply, self.mkdir_name(owner, parent.0, name, mode & !umask));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _timer = self.metrics.start(Op::Unlink);
        reply_empty(reply, self.remove_name(parent.0, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _timer = self.metrics.start(Op::Rmdir);
        reply_empty(reply, self.remove_name(parent.0, name, true));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _timer = self.metrics.start(Op::Symlink);
        let owner = (req.uid(), req.gid());
        reply_entry(reply, self.symlink_name(owner, parent.0, link_name, target));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _timer = self.metrics.start(Op::Rename);
        reply_empty(
            reply,
            self.rename_name(parent.0, name, newparent.0, newname, flags.bits()),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _timer = self.metrics.start(Op::Link);
        reply_entry(reply, self.link_name(ino.0, newparent.0, newname));
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _timer = self.metrics.start(Op::Open);
        match self.open_ino(ino.0) {
            Ok(flags) => reply.opened(FileHandle(0), flags),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _timer = self.metrics.start(Op::Read);
        match self.read_ino(ino.0, offset, size) {
            Ok(data) => {
                self.metrics.read(data.len());
                reply.data(&data)
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _timer = self.metrics.start(Op::Write);
        let cached = write_flags.contains(WriteFlags::FUSE_WRITE_CACHE);
        let written = self
            .write_ino(ino.0, offset, data, cached)
            .and_then(|written| {
                // A direct-I/O write to an O_DSYNC/O_SYNC file gets no FSYNC request
                // after it: the kernel leaves the sync to the filesystem. (Writes from
                // the page cache are synced by the kernel's own fsync.)
                match sync_requested(write_flags, flags) {
                    Some(datasync) => self.fsync_ino(ino.0, datasync).map(|()| written),
                    None => Ok(written),
                }
            });
        match written {
            Ok(written) => {
                self.metrics.written(written as usize);
                reply.written(written)
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _timer = self.metrics.start(Op::Flush);
        // Every write reached the backing file already; only deferred times wait.
        reply_empty(reply, self.apply_deferred_times(ino.0));
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _timer = self.metrics.start(Op::Release);
        self.release_ino(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _timer = self.metrics.start(Op::Fsync);
        // fdatasync (the WAL's) need not make times durable: they stay deferred.
        let times = if datasync {
            Ok(())
        } else {
            self.apply_deferred_times(ino.0)
        };
        reply_empty(reply, times.and_then(|()| self.fsync_ino(ino.0, datasync)));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _timer = self.metrics.start(Op::Opendir);
        match self.opendir_ino(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _timer = self.metrics.start(Op::Readdir);
        let Some(entries) = self.dirs.get(fh.0) else {
            reply.error(Errno::from_i32(libc::EBADF));
            return;
        };
        for (index, entry) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(entry.ino),
                index as u64 + 1,
                entry.kind,
                &entry.name,
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _timer = self.metrics.start(Op::Releasedir);
        self.dirs.remove(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _timer = self.metrics.start(Op::Fsyncdir);
        reply_empty(reply, self.fsyncdir_ino(ino.0));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _timer = self.metrics.start(Op::Statfs);
        match self.statfs_root() {
            Ok(s) => reply.statfs(
                s.blocks,
                s.blocks_free,
                s.blocks_available,
                s.files,
                s.files_free,
                s.block_size,
                s.name_max,
                s.fragment_size,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _timer = self.metrics.start(Op::Create);
        match self.create_file(req.uid(), req.gid(), parent.0, name, mode, umask, flags) {
            Ok((entry, open_flags)) => reply.created(
                &TTL,
                &entry.attr,
                Generation(entry.generation),
                FileHandle(0),
                open_flags,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        let _timer = self.metrics.start(Op::Unsupported);
        // ENOSYS (not ENOTSUP) makes the kernel stop asking: extended attributes are
        // not stored, and callers see EOPNOTSUPP.
        reply.error(Errno::from_i32(libc::ENOSYS));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        let _timer = self.metrics.start(Op::Unsupported);
        reply.error(Errno::from_i32(libc::ENOSYS));
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        let _timer = self.metrics.start(Op::Unsupported);
        // No ioctl is supported: ENOTTY, as for any file that does not know one
        // (fuser's default logs a warning for every call).
        reply.error(Errno::from_i32(libc::ENOTTY));
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _timer = self.metrics.start(Op::Fallocate);
        reply_empty(reply, self.fallocate_ino(ino.0, offset, length, mode));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_writes_to_sync_files_are_synced_before_the_reply() {
        let direct = WriteFlags::empty();
        let cached = WriteFlags::FUSE_WRITE_CACHE;
        let flags = |f| OpenFlags(libc::O_WRONLY | f);
        assert_eq!(sync_requested(direct, flags(libc::O_DSYNC)), Some(true));
        assert_eq!(sync_requested(direct, flags(libc::O_SYNC)), Some(false));
        assert_eq!(sync_requested(direct, flags(0)), None);
        // The kernel syncs page-cache writes itself (an FSYNC request follows).
        assert_eq!(sync_requested(cached, flags(libc::O_DSYNC)), None);
    }
}
