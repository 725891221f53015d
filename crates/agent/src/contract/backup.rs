//! Backups in the contract: where a server's pgBackRest repository is and how long
//! its backups are kept (in `agent.json`), and what the backup tasks of a
//! short-lived agent run answer.

use std::path::PathBuf;

use pgcmk_keyprovider::{KeyVersionId, WrappedDek};

use super::KekAccess;
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
    /// Hours between full backups.
    #[serde(default = "default_full_every_hours")]
    pub full_every_hours: u32,
    /// Hours between backups (differential between full ones).
    #[serde(default = "default_diff_every_hours")]
    pub diff_every_hours: u32,
    /// The geo-redundant copy (pgBackRest's `repo2`), when the DBA asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo: Option<GeoRepository>,
    /// When the repository is kept in Azure Blob Storage rather than a local
    /// directory: where (`repository` is then its path in the container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureStore>,
    /// When the repository belongs to a server other than the agent's own: a
    /// highly available server, whose nodes share its stanza and repository key
    /// (the key lives with the server, not the node, so a server that gains or
    /// loses its standby keeps both). `None`: the agent's own server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<BackupOwner>,
}

/// The server a shared repository belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupOwner {
    /// Its id: the stanza's name.
    pub server_id: String,
    /// Its directory, which holds `wrapped_backup_key.json`.
    pub dir: PathBuf,
}

/// An Azure Blob Storage container that holds repositories (pgBackRest's `azure`
/// repository type). The account's shared key is a secret: it comes in the
/// agent's handshake (`storage_key`) and is written only to pgBackRest's
/// configuration on the encrypted mount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AzureStore {
    /// The storage account.
    pub account: String,
    /// The container (it must exist).
    pub container: String,
    /// The Blob service's host name or address, and port.
    pub host: String,
    /// Its HTTPS port.
    pub port: u16,
    /// A PEM CA bundle to trust instead of the system roots (a private endpoint,
    /// an emulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The account in the URL's path (`https://HOST/ACCOUNT/CONTAINER`, as Azurite
    /// and private endpoints by address) rather than in the host name.
    pub path_style: bool,
}

/// The geo-redundant copy of a server's backups: a second pgBackRest repository
/// (`repo2`) in another location, encrypted under its own random key wrapped by a
/// key in a vault of that location, reached through its own managed identity
/// (whose secret comes in the handshake as `geo_identity_secret`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeoRepository {
    /// The location of the geo key's vault, where the copy is kept.
    pub location: String,
    /// The repository's directory, or its path in `azure`'s container.
    pub repository: PathBuf,
    /// How to reach the geo key.
    pub kek: KekAccess,
    /// When the copy is kept in the paired location's Azure Blob Storage account
    /// rather than a local directory: where. That account's shared key comes in the
    /// handshake as `geo_storage_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureStore>,
}

/// One of a server's backup repositories.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Repository {
    /// `repo1`, in the server's location, under the server's key.
    #[default]
    Primary,
    /// `repo2`, the geo-redundant copy, under the geo key.
    Geo,
}

impl Repository {
    /// pgBackRest's index of the repository (`--repo=N`, `repoN-...`).
    pub fn number(self) -> u8 {
        match self {
            Repository::Primary => 1,
            Repository::Geo => 2,
        }
    }

    /// The repository whose pgBackRest index is `n`.
    pub fn from_number(n: u8) -> Result<Self, String> {
        match n {
            1 => Ok(Repository::Primary),
            2 => Ok(Repository::Geo),
            other => Err(format!(
                "there is no backup repository {other}: {REPOSITORIES}"
            )),
        }
    }
}

/// What a wrong repository number is told.
const REPOSITORIES: &str = "use 1 (the server's own) or 2 (its geo-redundant copy)";

/// `1` or `2`, as pgBackRest numbers repositories (the command line's `--repository`).
impl std::str::FromStr for Repository {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.parse::<u8>() {
            Ok(n) => Self::from_number(n),
            Err(_) => Err(format!(
                "there is no backup repository '{s}': {REPOSITORIES}"
            )),
        }
    }
}

impl BackupConfig {
    /// A repository at `repository`, kept `retention_days`, on the default schedule.
    pub fn new(repository: PathBuf, retention_days: u32) -> Self {
        Self {
            repository,
            retention_days,
            full_every_hours: DEFAULT_FULL_EVERY_HOURS,
            diff_every_hours: DEFAULT_DIFF_EVERY_HOURS,
            geo: None,
            azure: None,
            owner: None,
        }
    }

    /// The stanza of the repository, for the agent of server `own_id`: named
    /// after the server the repository belongs to.
    pub fn stanza<'a>(&'a self, own_id: &'a str) -> &'a str {
        self.owner.as_ref().map_or(own_id, |o| o.server_id.as_str())
    }

    /// The file holding the repository key wrapped by the server's KEK, for the
    /// agent of the server in `own`: in the directory of the server the
    /// repository belongs to.
    pub fn key_file(&self, own: &super::ServerDir) -> PathBuf {
        match &self.owner {
            Some(owner) => super::ServerDir::new(&owner.dir).wrapped_backup_key(),
            None => own.wrapped_backup_key(),
        }
    }

    /// The file holding the geo-redundant copy's repository key wrapped by the
    /// geo key, for the agent of the server in `own`: like [`Self::key_file`], in
    /// the directory of the server the repository belongs to.
    pub fn geo_key_file(&self, own: &super::ServerDir) -> PathBuf {
        match &self.owner {
            Some(owner) => super::ServerDir::new(&owner.dir).wrapped_geo_backup_key(),
            None => own.wrapped_geo_backup_key(),
        }
    }
}

/// A full backup a week, as the managed services.
pub const DEFAULT_FULL_EVERY_HOURS: u32 = 168;
/// A differential backup a day between the full ones.
pub const DEFAULT_DIFF_EVERY_HOURS: u32 = 24;
/// Hours between full backups a DBA may choose: a day to the longest retention.
pub const FULL_EVERY_HOURS: std::ops::RangeInclusive<u32> = 24..=840;
/// Hours between differential backups a DBA may choose: an hour to a week.
pub const DIFF_EVERY_HOURS: std::ops::RangeInclusive<u32> = 1..=168;

/// The settings of a server's backups that the DBA chooses at create and may
/// change later: the control plane writes them to `agent.json`, and a serving
/// agent applies them at its next key check (`backup settings applied`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSettings {
    /// Days of backups and WAL kept.
    pub retention_days: u32,
    /// Hours between full backups.
    pub full_every_hours: u32,
    /// Hours between backups (differential between full ones).
    pub diff_every_hours: u32,
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self {
            retention_days: DEFAULT_RETENTION_DAYS,
            full_every_hours: DEFAULT_FULL_EVERY_HOURS,
            diff_every_hours: DEFAULT_DIFF_EVERY_HOURS,
        }
    }
}

impl std::fmt::Display for BackupSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "backups kept {} days, a full backup every {} hours, a differential one every {} \
             hours",
            self.retention_days, self.full_every_hours, self.diff_every_hours
        )
    }
}

impl BackupConfig {
    /// The settings the DBA chose.
    pub fn settings(&self) -> BackupSettings {
        BackupSettings {
            retention_days: self.retention_days,
            full_every_hours: self.full_every_hours,
            diff_every_hours: self.diff_every_hours,
        }
    }

    /// Takes `settings`.
    pub fn apply(&mut self, settings: BackupSettings) {
        self.retention_days = settings.retention_days;
        self.full_every_hours = settings.full_every_hours;
        self.diff_every_hours = settings.diff_every_hours;
    }
}

fn default_full_every_hours() -> u32 {
    DEFAULT_FULL_EVERY_HOURS
}

fn default_diff_every_hours() -> u32 {
    DEFAULT_DIFF_EVERY_HOURS
}

/// What kind of backup to take (pgBackRest's `--type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupKind {
    /// Every file of the cluster.
    Full,
    /// The files changed since the last full backup.
    Diff,
    /// The files changed since the last backup of any kind.
    Incr,
}

impl BackupKind {
    /// pgBackRest's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Diff => "diff",
            BackupKind::Incr => "incr",
        }
    }
}

impl std::str::FromStr for BackupKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(BackupKind::Full),
            "diff" => Ok(BackupKind::Diff),
            "incr" => Ok(BackupKind::Incr),
            other => Err(format!(
                "'{other}' is not a kind of backup: use full, diff or incr"
            )),
        }
    }
}

/// One complete backup in the repository (pgBackRest lists no other).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    /// pgBackRest's label (`YYYYMMDD-HHMMSSF`, or `..._YYYYMMDD-HHMMSSD|I`).
    pub label: String,
    /// Full, differential or incremental.
    pub kind: BackupKind,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it finished (RFC 3339): the earliest point a restore from it reaches.
    pub finished_at: String,
    /// Seconds it took.
    pub duration_secs: i64,
    /// Bytes of the database it holds.
    pub database_bytes: u64,
    /// Bytes it takes in the repository (compressed and encrypted).
    pub repository_bytes: u64,
    /// The WAL position where it starts.
    pub start_lsn: String,
    /// The WAL position where it ends.
    pub stop_lsn: String,
    /// The backup it depends on (differential and incremental).
    pub prior: Option<String>,
    /// The key version that wraps the repository key it is encrypted under.
    pub key_version: KeyVersionId,
}

/// The archived WAL: a restore reaches any point from the end of the oldest
/// backup to the newest segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalArchive {
    /// The oldest archived segment.
    pub oldest_segment: String,
    /// The newest archived segment.
    pub newest_segment: String,
}

/// The answer of [`crate::contract::task::AgentTask::BackupList`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupCatalog {
    /// Complete backups, oldest first.
    pub backups: Vec<BackupSummary>,
    /// The archived WAL, when any.
    pub wal: Option<WalArchive>,
    /// The key version that wraps the repository key.
    pub key_version: KeyVersionId,
    /// Days of backups kept: a restore reaches any point in that window.
    pub retention_days: u32,
    /// The geo-redundant copy, when the server has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo: Option<GeoCatalog>,
}

/// The geo-redundant copy's backups, as `backup list` tells them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeoCatalog {
    /// Where the copy is kept.
    pub location: String,
    /// The key version that wraps the copy's repository key.
    pub key_version: KeyVersionId,
    /// `None` when the geo key unwraps the copy's repository key now; else why the
    /// copy is not kept up to date (the vault's refusal): backups and WAL then go
    /// to the server's own repository only, and the server keeps serving.
    pub problem: Option<String>,
    /// Complete backups in the copy, oldest first.
    pub backups: Vec<BackupSummary>,
    /// The copy's archived WAL, when any.
    pub wal: Option<WalArchive>,
}

/// A backup running now, one of the answer of
/// [`crate::contract::task::AgentTask::BackupProgress`]: started by the DBA
/// (`backup create`) or by the schedule. Nothing in it is secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunningBackup {
    /// Full, differential or incremental.
    pub kind: BackupKind,
    /// 1 (the server's own repository) or 2 (its geo-redundant copy).
    pub repository: u8,
    /// When its pgBackRest process started (RFC 3339).
    pub started_at: String,
    /// Seconds since then.
    pub elapsed_secs: u64,
    /// Percent of its bytes copied, as pgBackRest counts them (a file counts once
    /// copied whole, the largest first); `None` while pgBackRest has not counted
    /// yet (the checkpoint, the file list).
    pub percent_complete: Option<f64>,
    /// Bytes copied, when pgBackRest tells them (2.48 and later; 2.45 does not).
    pub bytes_done: Option<u64>,
    /// Bytes to copy, when pgBackRest tells them (2.48 and later; 2.45 does not).
    pub bytes_total: Option<u64>,
}

/// The answer of [`crate::contract::task::AgentTask::BackupVerify`]: pgBackRest's
/// `verify`, which decrypts every backup file and archived segment and checks it
/// against its recorded checksum and size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupVerification {
    /// True when every file verified.
    pub valid: bool,
    /// Each file that did not, as pgBackRest named it (`LABEL/pg_data/...` for a
    /// backup file, `ARCHIVE-ID/.../SEGMENT-...` for a WAL segment), and why.
    pub problems: Vec<String>,
    /// pgBackRest's summary per WAL archive and per backup.
    pub summary: Vec<String>,
}

/// Where a restored server comes from (in its `agent.json`): the source's
/// repository and stanza, its repository key wrapped by the source's KEK, how to
/// reach that KEK (the identity's secret comes in the handshake), and the point
/// to recover to. Used at the restored server's first start only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSource {
    /// The source server's name (for messages).
    pub server: String,
    /// The source's repository.
    pub repository: PathBuf,
    /// Which of the source's repositories that is.
    #[serde(default)]
    pub repository_kind: Repository,
    /// When that repository is in Azure Blob Storage: where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureStore>,
    /// The source's stanza (its id).
    pub stanza: String,
    /// The source's repository key, wrapped by the source's KEK.
    pub wrapped_key: WrappedDek,
    /// How to reach the source's KEK.
    pub kek: KekAccess,
    /// Where recovery stops.
    pub target: RestoreTarget,
}

/// Where a restore's recovery stops.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "kebab-case")]
pub enum RestoreTarget {
    /// The end of the archived WAL.
    Latest,
    /// Every transaction committed at or before `at`, and none after.
    Time {
        /// `YYYY-MM-DD HH:MM:SS.FFFFFF+00`, as PostgreSQL and pgBackRest read it.
        at: String,
    },
}

impl std::fmt::Display for RestoreTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreTarget::Latest => f.write_str("the end of the archived WAL"),
            RestoreTarget::Time { at } => f.write_str(at),
        }
    }
}

/// The answer of [`crate::contract::task::AgentTask::BackupKeyCheck`]: the vault
/// unwrapped the repository's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryKeyCheck {
    /// The key version that wraps it.
    pub key_version: KeyVersionId,
}

/// Why server `source`'s backups cannot be restored now: the vault refuses the
/// key version that wraps their repository key (`refusal`, from
/// [`crate::contract::task::AgentTask::BackupKeyCheck`]), and what to do about it.
pub fn explain_backup_key_refusal(refusal: &super::task::VersionRefusal, source: &str) -> String {
    let v = &refusal.version;
    let head = format!(
        "the backups of server '{source}' are encrypted under a repository key wrapped by \
         key version {v}"
    );
    let gone = refusal.reason.to_ascii_lowercase().contains("not found");
    let KeyVersionId::Azure(v) = v else {
        return format!(
            "{head}, which is refused ({}). To restore them, make that key usable again where \
             it is held; if it was destroyed, every backup of server '{source}' is \
             crypto-shredded and none can be restored",
            refusal.reason
        );
    };
    if refusal.disabled {
        format!(
            "{head}, which is disabled ({}). To restore them, enable that version: \
             `pgcmk key enable {} --vault {} --key-version {}`",
            refusal.reason, v.name, v.vault_url, v.version
        )
    } else if gone {
        format!(
            "{head}, which the vault no longer has ({}). If the key was purged, every backup \
             of server '{source}' is crypto-shredded and none can be restored; if it was \
             deleted and not purged, `pgcmk key recover {} --vault {}` brings it back",
            refusal.reason, v.name, v.vault_url
        )
    } else {
        format!(
            "{head}, which the vault refuses to server '{source}''s identity ({}). To restore \
             them, give that identity get, wrapKey and unwrapKey on key '{}' in {} again",
            refusal.reason, v.name, v.vault_url
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::ServerDir;

    #[test]
    fn a_node_uses_the_stanza_and_key_of_the_server_it_belongs_to() {
        let own = ServerDir::new("/state/servers/node1");
        let single = BackupConfig::new("/state/backups/node1".into(), 7);
        assert_eq!(single.stanza("node1"), "node1");
        assert_eq!(
            single.key_file(&own),
            PathBuf::from("/state/servers/node1/wrapped_backup_key.json")
        );
        let node = BackupConfig {
            owner: Some(BackupOwner {
                server_id: "ha1".into(),
                dir: "/state/servers/ha1".into(),
            }),
            ..single
        };
        assert_eq!(node.stanza("node1"), "ha1");
        assert_eq!(
            node.key_file(&own),
            PathBuf::from("/state/servers/ha1/wrapped_backup_key.json")
        );
    }
}
