//! The backup schedule options of `server create` and `server update`
//! (docs/backups.md): hours between full backups and between differential ones.

use clap::Args;
use pgcmk_control::platform::BackupSettingsChange;

/// When the server's backups are taken.
#[derive(Args)]
pub struct BackupScheduleArgs {
    /// Hours between full backups: 24 to 840 (default 168, a week).
    #[arg(long)]
    full_backup_every_hours: Option<u32>,
    /// Hours between differential backups, fewer than between full ones: 1 to 168
    /// (default 24).
    #[arg(long)]
    diff_backup_every_hours: Option<u32>,
}

impl BackupScheduleArgs {
    /// True when an option is given.
    pub fn is_given(&self) -> bool {
        self.full_backup_every_hours.is_some() || self.diff_backup_every_hours.is_some()
    }

    /// The settings asked for, with `retention_days` (`--backup-retention-days`).
    pub fn with_retention(self, retention_days: Option<u32>) -> BackupSettingsChange {
        BackupSettingsChange {
            backup_retention_days: retention_days,
            full_backup_every_hours: self.full_backup_every_hours,
            diff_backup_every_hours: self.diff_backup_every_hours,
        }
    }
}
