//! `pgcmk server restore`: a new server from another server's backups.

use clap::Args;
use pgcmk_control::platform::RestoreServer;

use crate::error::CliError;
use crate::geo_backup_args::GeoBackupArgs;
use crate::name_arg::NameArg;
use crate::server_encryption::EncryptionArgs;

/// `pgcmk server restore` options.
#[derive(Args)]
pub struct RestoreArgs {
    /// The server whose backups are restored.
    #[arg(long)]
    source: String,
    /// The new server's name.
    #[command(flatten)]
    name: NameArg,
    /// `latest`, or an RFC 3339 time (e.g. 2026-12-07T09:30:00Z): every transaction
    /// committed at or before it is restored, and none after.
    #[arg(long)]
    point_in_time: String,
    /// The new server's key: the source's, another, or service-managed.
    #[command(flatten)]
    encryption: EncryptionArgs,
    /// Days of the new server's backups kept: 1 to 35 (default 7).
    #[arg(long)]
    backup_retention_days: Option<u32>,
    /// The source's repository to restore from: 1 (its own) or 2 (its geo-redundant
    /// copy). Default: its own when its key unwraps, else the geo copy.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
    repository: Option<u8>,
    /// A geo-redundant copy of the new server's backups, as for a create.
    #[command(flatten)]
    geo_backup: GeoBackupArgs,
}

impl RestoreArgs {
    /// The source's name and the request.
    pub fn into_request(self) -> Result<(String, RestoreServer), CliError> {
        Ok((
            self.source,
            RestoreServer {
                point_in_time: self.point_in_time,
                name: self.name.into_name(),
                protection: self.encryption.into_key_choice()?,
                backup_retention_days: self.backup_retention_days,
                repository: self.repository,
                geo_backup: self.geo_backup.into_choice()?,
            },
        ))
    }
}
