//! `pgcmk server update NAME --geo-backup-key ...` adds a geo-redundant copy of the
//! server's backups; `--no-geo-backup` removes it and every backup in it
//! (docs/backups.md).

use clap::Args;
use pgcmk_control::platform::GeoBackupChange;

use crate::confirm::{confirm, Destruction};
use crate::error::CliError;
use crate::geo_backup_args::GeoBackupArgs;

/// The geo-redundant copy options of `server update`.
#[derive(Args)]
pub struct GeoUpdateArgs {
    #[command(flatten)]
    add: GeoBackupArgs,
    /// Remove the server's geo-redundant copy and every backup in it: its
    /// repository key goes first (the copy is crypto-shredded), then its files.
    #[arg(long, conflicts_with = "geo_backup_key")]
    no_geo_backup: bool,
    /// Remove the copy without asking (required without a terminal).
    #[arg(short, long, requires = "no_geo_backup")]
    yes: bool,
}

impl GeoUpdateArgs {
    /// True when the command changes the geo-redundant copy.
    pub fn is_given(&self) -> bool {
        self.no_geo_backup || self.add.is_given()
    }

    /// With `--no-geo-backup`: the backups in the copy are lost, so the server's
    /// name is typed on a terminal first, or `--yes` given.
    pub fn confirm_removal(&self, server: &str) -> Result<(), CliError> {
        if !self.no_geo_backup {
            return Ok(());
        }
        confirm(
            &Destruction {
                kind: "server",
                name: server,
                command: format!("pgcmk server update {server} --no-geo-backup"),
                verb: "remove the geo-redundant copy of",
                loss: format!(
                    "destroys every backup in the geo-redundant copy of server '{server}' for \
                     good"
                ),
            },
            self.yes,
        )
    }

    /// The request: the copy to add, or none (remove it).
    pub fn into_change(self) -> Result<GeoBackupChange, CliError> {
        Ok(GeoBackupChange {
            geo_backup: self.add.into_choice()?,
        })
    }
}
