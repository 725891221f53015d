//! The dirty marker and crash recovery of a whole cipher directory.
//!
//! Mounting creates (and fsyncs) a marker file; a clean unmount removes it after
//! everything is synced. A mount that finds the marker knows the last session
//! ended in a crash: it syncs the backing filesystem, then runs
//! [`EncryptedFile::recover`] on every file before serving anything. Without the
//! marker nothing ever falls back to an older slot, so tampering stays `EIO`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cipher_tree::for_each_file;
use crate::config::sync_dir;
use crate::content::VolumeKey;
use crate::encrypted_file::{EncryptedFile, FileRecovery};
use crate::{sys, Error};

/// Name of the dirty marker at the root of a cipher directory (hidden from the
/// mounted view, like the configuration file).
pub const DIRTY_MARKER_NAME: &str = "pgcmk-cryptfs.dirty";

/// What crash recovery did at mount.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Regular files checked.
    pub files_checked: u64,
    /// Blocks whose newest slot was torn: back to their last synced version.
    pub repaired_blocks: u64,
    /// Torn older slots cleared (their blocks read as before).
    pub stale_slots_cleared: u64,
    /// Blocks cut off the end of files (extensions that never completed).
    pub dropped_blocks: u64,
    /// Blocks left without an intact slot (reads fail with `EIO`).
    pub bad_blocks: u64,
    /// Files that could not be recovered (unreadable or damaged header); listed in the log.
    pub failed_files: u64,
}

/// True when the cipher directory's last session did not end with a clean unmount.
pub(crate) fn is_dirty(cipher_dir: &Path) -> Result<bool, Error> {
    let marker = cipher_dir.join(DIRTY_MARKER_NAME);
    match fs::symlink_metadata(&marker) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::path("reading", marker)(e)),
    }
}

/// Starts a session: crash recovery if the last one did not end cleanly, then a
/// durable dirty marker. Returns what recovery did, if it ran.
pub(crate) fn begin_session(
    cipher_dir: &Path,
    volume: &Arc<VolumeKey>,
) -> Result<Option<RecoveryReport>, Error> {
    let report = if is_dirty(cipher_dir)? {
        let report = recover_volume(cipher_dir, volume)?;
        // Through the process's metrics recorder, when it has one (the node agent's).
        metrics::counter!("pgcmk_cryptfs_crash_recoveries_total").increment(1);
        metrics::counter!("pgcmk_cryptfs_recovery_repaired_blocks_total")
            .increment(report.repaired_blocks);
        Some(report)
    } else {
        None
    };
    // After recovery (a crash during it leaves the old marker: it simply runs again).
    let marker = cipher_dir.join(DIRTY_MARKER_NAME);
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&marker)
        .and_then(|mut file| {
            file.write_all(b"mounted; removed by a clean unmount (see docs/format.md)\n")?;
            file.sync_all()
        })
        .map_err(Error::path("writing", &marker))?;
    sync_dir(cipher_dir)?;
    Ok(report)
}

/// Ends a session after a clean unmount: everything made durable, then the marker
/// removed (durably).
pub(crate) fn end_session(cipher_dir: &Path) -> Result<(), Error> {
    syncfs_dir(cipher_dir)?;
    let marker = cipher_dir.join(DIRTY_MARKER_NAME);
    fs::remove_file(&marker).map_err(Error::path("removing", &marker))?;
    sync_dir(cipher_dir)
}

fn syncfs_dir(cipher_dir: &Path) -> Result<(), Error> {
    File::open(cipher_dir)
        .and_then(|dir| sys::syncfs(&dir))
        .map_err(Error::path("syncing the filesystem of", cipher_dir))
}

/// Recovers every file of `cipher_dir`, after making whatever the crashed session
/// left in the page cache durable (so repairs rest on what is really on disk).
fn recover_volume(cipher_dir: &Path, volume: &Arc<VolumeKey>) -> Result<RecoveryReport, Error> {
    tracing::warn!(
        cipher_dir = %cipher_dir.display(),
        "cryptfs: the last session did not unmount cleanly; running crash recovery"
    );
    syncfs_dir(cipher_dir)?;
    let mut report = RecoveryReport::default();
    for_each_file(cipher_dir, &mut |relative, _meta| {
        report.files_checked += 1;
        match recover_file(&cipher_dir.join(&relative), volume) {
            Ok(found) => {
                if !found.is_clean() || !found.bad.is_empty() {
                    tracing::warn!(
                        file = %relative.display(),
                        repaired = ?found.repaired,
                        stale_cleared = ?found.stale_cleared,
                        dropped = ?found.dropped,
                        bad = ?found.bad,
                        "cryptfs: crash recovery"
                    );
                }
                report.repaired_blocks += found.repaired.len() as u64;
                report.stale_slots_cleared += found.stale_cleared.len() as u64;
                report.dropped_blocks += found.dropped.len() as u64;
                report.bad_blocks += found.bad.len() as u64;
            }
            Err(e) => {
                tracing::error!(file = %relative.display(), "cryptfs: crash recovery failed: {e}");
                report.failed_files += 1;
            }
        }
    })?;
    tracing::warn!(
        files = report.files_checked,
        repaired_blocks = report.repaired_blocks,
        stale_slots_cleared = report.stale_slots_cleared,
        dropped_blocks = report.dropped_blocks,
        bad_blocks = report.bad_blocks,
        failed_files = report.failed_files,
        "cryptfs: crash recovery done"
    );
    Ok(report)
}

fn recover_file(path: &PathBuf, volume: &Arc<VolumeKey>) -> Result<FileRecovery, Error> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    Ok(EncryptedFile::open_after_crash(file, volume.clone())?.1)
}
