//! The data directory and durable file writes (temp file, fsync, rename, fsync dir).

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::Error;

/// The files a vault service keeps in its data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Opens (creating with mode 0700 if needed) the data directory.
    pub fn create(root: &Path) -> Result<Self, Error> {
        if !root.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root)
                .map_err(|e| Error::io("creating data directory", root, e))?;
        }
        let root = root
            .canonicalize()
            .map_err(|e| Error::io("resolving data directory", root, e))?;
        // An existing directory may have been made by hand: keep it private anyway.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("restricting permissions of", &root, e))?;
        Ok(Self { root })
    }

    /// The CA certificate clients trust (`REQUESTS_CA_BUNDLE`).
    pub fn ca_file(&self) -> PathBuf {
        self.root.join("ca.pem")
    }
    /// The root key file (absent when a passphrase is used).
    pub fn root_key_file(&self) -> PathBuf {
        self.root.join("root.key")
    }
    /// Salt and check value for a passphrase-derived root key.
    pub fn passphrase_file(&self) -> PathBuf {
        self.root.join("root.passphrase.json")
    }
    /// The bootstrap administrator's credential.
    pub fn admin_credential_file(&self) -> PathBuf {
        self.root.join("admin.credential")
    }
    /// Connection information for clients, written once the service listens.
    pub fn service_file(&self) -> PathBuf {
        self.root.join("service.json")
    }
    /// The embedded database.
    pub fn database_file(&self) -> PathBuf {
        self.root.join("vault.redb")
    }
}

/// Writes `bytes` to `path` atomically and durably with the given mode.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    Ok(pgcmk_hostkeys::files::write_atomic(path, bytes, mode)?)
}

/// Reads a whole file.
pub fn read(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(|e| Error::io("reading", path, e))
}
