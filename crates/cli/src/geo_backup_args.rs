//! The geo-redundant backup options of `server create`, `restore` and `update`, and the
//! request field they become.

use std::path::PathBuf;

use clap::Args;
use pgcmk_control::identity_file::{read_identity_secret, resolve_client_id};
use pgcmk_control::model::SecretString;
use pgcmk_control::platform::GeoBackupChoice;

use crate::error::CliError;

/// A geo-redundant copy of the server's backups (docs/backups.md).
#[derive(Args)]
pub struct GeoBackupArgs {
    /// Keep a geo-redundant copy of the backups, encrypted under this key: its URL,
    /// https://VAULT/keys/NAME, in a vault of another location (the paired one).
    #[arg(long, requires_all = ["geo_backup_identity", "geo_backup_identity_credential_file"])]
    geo_backup_key: Option<String>,
    /// The user-assigned managed identity that reaches the geo key (name, object id
    /// or client id).
    #[arg(long, requires = "geo_backup_key")]
    geo_backup_identity: Option<String>,
    /// The geo identity's credential file, assigning it to the server.
    #[arg(long, requires = "geo_backup_key")]
    geo_backup_identity_credential_file: Option<PathBuf>,
}

impl GeoBackupArgs {
    /// True when `--geo-backup-key` is given.
    pub fn is_given(&self) -> bool {
        self.geo_backup_key.is_some()
    }

    /// The request's field: the identity resolved to its client id, its credential
    /// file read; `None` without `--geo-backup-key`.
    pub fn into_choice(self) -> Result<Option<GeoBackupChoice>, CliError> {
        let (Some(key), Some(identity), Some(file)) = (
            self.geo_backup_key,
            self.geo_backup_identity,
            self.geo_backup_identity_credential_file,
        ) else {
            return Ok(None);
        };
        let secret = read_identity_secret(&file)?;
        Ok(Some(GeoBackupChoice {
            key,
            identity: resolve_client_id(&identity, &file)?,
            identity_secret: Some(SecretString::new(
                String::from_utf8_lossy(secret.expose_secret()).into_owned(),
            )),
        }))
    }
}
