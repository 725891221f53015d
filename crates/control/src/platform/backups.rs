//! A server's backups as the control plane sees them: where its pgBackRest
//! repository is (`STATE/backups/ID`, outside the server's directory), and what
//! the DBA asks of them, done by the server's node agent (`docs/backups.md`).

use std::fs;
use std::path::PathBuf;

use pgcmk_agent::contract::backup::DEFAULT_RETENTION_DAYS;
use pgcmk_agent::contract::BackupConfig;

use super::Platform;
use crate::error::IoContext;
use crate::Error;

impl Platform {
    /// The directory holding every server's backup repository.
    pub(super) fn backups_dir(&self) -> PathBuf {
        self.config.state_dir.join("backups")
    }

    /// The backups of a new server `id`: its own repository, kept for the default
    /// retention.
    pub(super) fn backup_config(&self, id: &str) -> BackupConfig {
        BackupConfig {
            repository: self.backups_dir().join(id),
            retention_days: DEFAULT_RETENTION_DAYS,
        }
    }

    /// Removes the backup repository of server `id` (deleted, or never created).
    pub(super) fn remove_backups(&self, id: &str) -> Result<(), Error> {
        let repository = self.backups_dir().join(id);
        match fs::remove_dir_all(&repository) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).ctx(|| format!("removing {}", repository.display()))
            }
            _ => Ok(()),
        }
    }
}
