//! Backups in the contract: where a server's pgBackRest repository is and how long
//! its backups are kept (in `agent.json`), and where its wrapped repository key is
//! stored (beside the wrapped DEK).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Retention of backups in days when the DBA chose none (as the managed services).
pub const DEFAULT_RETENTION_DAYS: u32 = 7;
/// The retention range the managed services offer.
pub const RETENTION_DAYS: std::ops::RangeInclusive<u32> = 1..=35;

/// A server's backups, as the control plane configured them: one pgBackRest
/// stanza (named after the server's id) in one repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupConfig {
    /// The repository's directory (created by the agent, owned by PostgreSQL's
    /// user; everything in it is encrypted by pgBackRest under the repository key).
    pub repository: PathBuf,
    /// Days of backups and WAL kept: a restore reaches any point in that window.
    pub retention_days: u32,
}
