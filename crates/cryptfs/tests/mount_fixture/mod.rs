//! A cipher directory initialised in a temporary directory, mounted on demand through a
//! real FUSE mount (needs root and /dev/fuse, as in CI); shared by the mount tests.

#![allow(dead_code)] // Each test binary uses a different part.

use std::fs;
use std::path::PathBuf;

use pgcmk_cryptfs::{mount, MountHandle, MountOptions};
use pgcmk_crypto::SymmetricKey;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub cipher: PathBuf,
    pub plain: PathBuf,
    pub key: SymmetricKey,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cipher = dir.path().join("cipher");
        let plain = dir.path().join("plain");
        fs::create_dir(&plain).unwrap();
        let key = SymmetricKey::generate().unwrap();
        pgcmk_cryptfs::init(&cipher, &key).unwrap();
        Self {
            dir,
            cipher,
            plain,
            key,
        }
    }

    /// Mounted until the handle drops (which unmounts, also when a test panics).
    pub fn mount(&self) -> MountHandle {
        mount(
            &self.cipher,
            &self.plain,
            self.key.clone(),
            MountOptions::default(),
        )
        .unwrap()
    }

    pub fn p(&self, name: &str) -> PathBuf {
        self.plain.join(name)
    }
}
