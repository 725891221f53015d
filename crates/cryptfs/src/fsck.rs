//! Offline verification: authenticates every block of every file in a cipher directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pgcmk_crypto::SymmetricKey;

use crate::cipher_tree::for_each_file;
use crate::config;
use crate::content::VolumeKey;
use crate::crash_recovery::is_dirty;
use crate::encrypted_file::{header_lost, EncryptedFile, FileRecovery};
use crate::format::BLOCK_SIZE;
use crate::Error;

/// One block (or header) that failed verification, or that a crash tore.
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
    /// The last session did not unmount cleanly: the next mount runs crash recovery.
    pub dirty: bool,
    /// Every block that failed and that crash recovery cannot repair, in
    /// directory-walk order: tampering (or, after a crash, a block created since the
    /// last sync whose write was torn in the middle of a file).
    pub bad_blocks: Vec<BadBlock>,
    /// Only on a dirty volume: blocks torn by the crash that the next mount's crash
    /// recovery repairs (back to their last synced version) or cuts off the end of
    /// the file (an extension that never completed). Not an error.
    pub torn_blocks: Vec<BadBlock>,
}

impl FsckReport {
    /// True when nothing failed that crash recovery cannot repair.
    pub fn is_clean(&self) -> bool {
        self.bad_blocks.is_empty()
    }
}

/// Verifies every block of every file under `cipher_dir` with `master_key`.
///
/// On a cleanly unmounted volume every block that fails authentication — in either
/// slot — is bad (tampering). After a crash (dirty marker present), blocks whose
/// damage is what a crash leaves and crash recovery repairs are listed as torn
/// instead. Fails only when the directory cannot be opened (not initialised, wrong
/// key); damaged files are listed in the report.
pub fn fsck(cipher_dir: &Path, master_key: &SymmetricKey) -> Result<FsckReport, Error> {
    let volume = Arc::new(config::open(cipher_dir, master_key)?);
    let mut report = FsckReport {
        dirty: is_dirty(cipher_dir)?,
        ..FsckReport::default()
    };
    for_each_file(cipher_dir, &mut |file, _meta| {
        report.files_checked += 1;
        if let Err(e) = check_file(cipher_dir, &file, &volume, &mut report) {
            tracing::warn!(file = %file.display(), "fsck: {e}");
            report.bad_blocks.push(issue(&file, None, &e.to_string()));
        }
    })?;
    Ok(report)
}

fn issue(file: &Path, block: Option<u64>, reason: &str) -> BadBlock {
    BadBlock {
        file: file.to_path_buf(),
        block,
        reason: reason.to_string(),
    }
}

fn check_file(
    root: &Path,
    file: &Path,
    volume: &Arc<VolumeKey>,
    report: &mut FsckReport,
) -> Result<(), Error> {
    let backing = File::open(root.join(file))?;
    if report.dirty && header_lost(&backing)? {
        let reason =
            "header lost in a crash before the file's first sync; crash recovery empties it";
        report.torn_blocks.push(issue(file, None, reason));
        return Ok(());
    }
    let encrypted = EncryptedFile::open(backing, volume.clone())?;
    report.blocks_checked += encrypted.len().div_ceil(BLOCK_SIZE);
    let found = encrypted.check_recovery()?;
    if report.dirty {
        let torn = [
            (
                &found.repaired,
                "torn by a crash; recovery restores its last synced version",
            ),
            (
                &found.stale_cleared,
                "older copy torn by a crash; recovery clears it",
            ),
            (
                &found.dropped,
                "incomplete end of file left by a crash; recovery cuts it off",
            ),
        ];
        for (blocks, reason) in torn {
            for &block in blocks {
                report.torn_blocks.push(issue(file, Some(block), reason));
            }
        }
        for &block in &found.bad {
            report.bad_blocks.push(bad(file, block));
        }
    } else {
        for block in clean_volume_bad_blocks(&encrypted, &found)? {
            report.bad_blocks.push(bad(file, block));
        }
    }
    Ok(())
}

/// Without a crash, a current slot that fails (reads are `EIO`) and an older slot
/// that fails (nothing but tampering writes a bad older slot) are both tampering.
fn clean_volume_bad_blocks(
    encrypted: &EncryptedFile<File>,
    found: &FileRecovery,
) -> Result<Vec<u64>, Error> {
    let mut blocks = encrypted.bad_blocks()?;
    blocks.extend(&found.stale_cleared);
    blocks.sort_unstable();
    blocks.dedup();
    Ok(blocks)
}

fn bad(file: &Path, block: u64) -> BadBlock {
    let reason = Error::Tampered { block }.to_string();
    tracing::warn!(file = %file.display(), block, %reason, "fsck: bad block");
    issue(file, Some(block), &reason)
}
