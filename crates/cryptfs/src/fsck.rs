//! Offline verification: authenticates every block of every file in a cipher directory.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pgcmk_crypto::SymmetricKey;

use crate::config::{self, CONFIG_FILE_NAME};
use crate::content::VolumeKey;
use crate::encrypted_file::EncryptedFile;
use crate::Error;

/// One block (or header) that failed verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadBlock {
    /// The file, relative to the cipher directory (names are stored in plaintext).
    pub file: PathBuf,
    /// The block number (4 KiB of plaintext each); `None` when the header is bad.
    pub block: Option<u64>,
    /// Why it failed.
    pub reason: String,
}

/// The result of [`fsck`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FsckReport {
    /// Regular files checked.
    pub files_checked: u64,
    /// Blocks checked (all files).
    pub blocks_checked: u64,
    /// Every block that failed, in directory-walk order.
    pub bad_blocks: Vec<BadBlock>,
}

impl FsckReport {
    /// True when nothing failed.
    pub fn is_clean(&self) -> bool {
        self.bad_blocks.is_empty()
    }
}

/// Verifies every block of every file under `cipher_dir` with `master_key`.
///
/// Fails only when the directory cannot be opened (not initialised, wrong key);
/// damaged files are listed in the report.
pub fn fsck(cipher_dir: &Path, master_key: &SymmetricKey) -> Result<FsckReport, Error> {
    let volume = Arc::new(config::open(cipher_dir, master_key)?);
    let mut report = FsckReport::default();
    check_dir(cipher_dir, Path::new(""), &volume, &mut report)?;
    Ok(report)
}

fn check_dir(
    root: &Path,
    relative: &Path,
    volume: &Arc<VolumeKey>,
    report: &mut FsckReport,
) -> Result<(), Error> {
    let dir = root.join(relative);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .map_err(Error::path("reading", &dir))?
        .collect::<Result<_, _>>()
        .map_err(Error::path("reading", &dir))?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let name = entry.file_name();
        if relative.as_os_str().is_empty() && name == CONFIG_FILE_NAME {
            continue;
        }
        let child = relative.join(&name);
        let kind = entry
            .file_type()
            .map_err(Error::path("reading", root.join(&child)))?;
        if kind.is_dir() {
            check_dir(root, &child, volume, report)?;
        } else if kind.is_file() {
            check_file(root, child, volume, report);
        }
    }
    Ok(())
}

fn check_file(root: &Path, file: PathBuf, volume: &Arc<VolumeKey>, report: &mut FsckReport) {
    report.files_checked += 1;
    let opened = File::open(root.join(&file))
        .map_err(Error::from)
        .and_then(|f| EncryptedFile::open(f, volume.clone()));
    let mut fail = |block: Option<u64>, reason: String| {
        tracing::warn!(file = %file.display(), block, %reason, "fsck: bad block");
        report.bad_blocks.push(BadBlock {
            file: file.clone(),
            block,
            reason,
        });
    };
    match opened {
        Err(e) => fail(None, e.to_string()),
        Ok(encrypted) => {
            report.blocks_checked += encrypted.len().div_ceil(crate::format::BLOCK_SIZE);
            match encrypted.bad_blocks() {
                Err(e) => fail(None, e.to_string()),
                Ok(blocks) => {
                    for block in blocks {
                        fail(Some(block), Error::Tampered { block }.to_string());
                    }
                }
            }
        }
    }
}
