//! The mount: /dev/fuse opened, mount(2) made with its descriptor, and undone on drop.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::sys;
use crate::Error;

/// A mounted FUSE connection. Dropping it unmounts (forcing if files are still in use).
pub struct Mount {
    device: File,
    mountpoint: PathBuf,
    mounted: bool,
}

impl Mount {
    /// Opens /dev/fuse and mounts it at `mountpoint` (needs root). `allow_other` lets other
    /// users (postgres, benchmarks run as another user) use the mount, and
    /// `default_permissions` has the kernel check their access against the modes and owners
    /// the daemon reports (the backing files'), since the daemon itself runs as root.
    pub fn new(mountpoint: &Path, subtype: &str) -> Result<Mount, Error> {
        let device = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .map_err(Error::Device)?;
        let options = format!(
            "fd={},rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions",
            device.as_raw_fd()
        );
        sys::mount_fuse(mountpoint, subtype, &options).map_err(|source| Error::Mount {
            mountpoint: mountpoint.to_path_buf(),
            source,
        })?;
        Ok(Mount {
            device,
            mountpoint: mountpoint.to_path_buf(),
            mounted: true,
        })
    }

    pub fn device(&self) -> &File {
        &self.device
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Records that the mount was undone from outside (the connection has ended).
    pub fn released(&mut self) {
        self.mounted = false;
    }

    /// Unmounts; if files are still open, aborts the connection (`MNT_FORCE`: every request
    /// fails with ENOTCONN) and detaches, so the transport threads always end.
    pub fn unmount(&mut self) -> io::Result<()> {
        if !self.mounted {
            return Ok(());
        }
        let result = sys::umount(&self.mountpoint, 0).or_else(|_| {
            sys::umount(&self.mountpoint, libc::MNT_FORCE)
                .or_else(|_| sys::umount(&self.mountpoint, libc::MNT_DETACH))
        });
        self.mounted = result.is_err();
        result
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}
