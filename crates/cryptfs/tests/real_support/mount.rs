//! A cryptfs mount made through the library (as the node agent does), unmounted on drop.

use std::fs;
use std::path::{Path, PathBuf};

use pgcmk_cryptfs::{MountHandle, MountOptions};
use pgcmk_crypto::SymmetricKey;

use super::TestDir;

pub struct CryptMount {
    cipher: PathBuf,
    mountpoint: PathBuf,
    key: SymmetricKey,
    handle: Option<MountHandle>,
}

impl CryptMount {
    /// A fresh cipher directory under `root`, initialised with a random key, and mounted.
    pub fn new(root: &TestDir) -> Self {
        let cipher = root.subdir("cipher", false);
        let mountpoint = root.subdir("mnt", false);
        let key = SymmetricKey::generate().expect("generate key");
        pgcmk_cryptfs::init(&cipher, &key).expect("cryptfs init");
        let mut this = Self {
            cipher,
            mountpoint,
            key,
            handle: None,
        };
        this.mount();
        this
    }

    /// The plaintext view (the mount point).
    pub fn plain(&self) -> &Path {
        &self.mountpoint
    }

    /// The ciphertext directory backing the mount.
    pub fn cipher(&self) -> &Path {
        &self.cipher
    }

    pub fn key(&self) -> &SymmetricKey {
        &self.key
    }

    pub fn mount(&mut self) {
        assert!(self.handle.is_none(), "already mounted");
        let options = MountOptions {
            allow_other: true,
            ..MountOptions::default()
        };
        let handle =
            pgcmk_cryptfs::mount(&self.cipher, &self.mountpoint, self.key.clone(), options)
                .expect("cryptfs mount");
        self.handle = Some(handle);
        assert!(
            is_mounted(&self.mountpoint),
            "mount returned but {} is not mounted",
            self.mountpoint.display()
        );
    }

    /// Unmounts; every write the kernel still held has then reached the cipher directory.
    pub fn unmount(&mut self) {
        let handle = self.handle.take().expect("not mounted");
        handle.unmount().expect("cryptfs unmount");
        assert!(
            !is_mounted(&self.mountpoint),
            "{} still mounted after unmount",
            self.mountpoint.display()
        );
    }

    /// Unmounts and mounts again: nothing may survive in the kernel's or the daemon's caches.
    pub fn remount(&mut self) {
        self.unmount();
        self.mount();
    }
}

impl Drop for CryptMount {
    fn drop(&mut self) {
        // MountHandle unmounts on drop; dropping it explicitly makes the order visible.
        self.handle.take();
    }
}

/// Whether `path` is a mount point right now (from the kernel's mount table).
pub fn is_mounted(path: &Path) -> bool {
    let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let table = fs::read_to_string("/proc/self/mounts").expect("read /proc/self/mounts");
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(1))
        .any(|mnt| Path::new(&unescape_mount_path(mnt)) == target)
}

/// /proc/mounts escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}
