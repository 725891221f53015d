//! A server's backups as the control plane sees them: where its pgBackRest
//! repository is (`STATE/backups/ID`, outside the server's directory), and what
//! the DBA asks of them, done by the server's node agent (`docs/backups.md`).

use std::fs;
use std::path::PathBuf;

use pgcmk_agent::contract::backup::{
    BackupCatalog, BackupKind, BackupSummary, BackupVerification, Repository, RunningBackup,
    DEFAULT_RETENTION_DAYS, RETENTION_DAYS,
};
use pgcmk_agent::contract::server_dir::read_json;
use pgcmk_agent::contract::task::AgentTask;
use pgcmk_agent::contract::{AgentConfig, BackupConfig, ServerDir};
use pgcmk_keyprovider::{KeyVersionId, WrappedDek};

use serde::{Deserialize, Serialize};

use super::Platform;
use crate::error::{IoContext, StateConflict};
use crate::model::{Actor, ServerRecord, ServerState};
use crate::Error;

/// `POST /servers/{name}/backups`: take a backup now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateBackup {
    /// Full (the default), differential or incremental.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<BackupKind>,
    /// 1 (the server's own repository, the default) or 2 (its geo-redundant copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<u8>,
}

/// `POST /servers/{name}/backups/verify?repository=N`: which repository to verify.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyBackups {
    /// 1 (the server's own repository, the default) or 2 (its geo-redundant copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<u8>,
}

impl CreateBackup {
    /// The repository asked for (none: the server's own).
    pub fn repository(&self) -> Result<Repository, Error> {
        repository(self.repository)
    }
}

impl VerifyBackups {
    /// The repository asked for (none: the server's own).
    pub fn repository(&self) -> Result<Repository, Error> {
        repository(self.repository)
    }
}

/// The repository numbered `n` (none: the server's own).
fn repository(n: Option<u8>) -> Result<Repository, Error> {
    n.map_or(Ok(Repository::Primary), |n| {
        Repository::from_number(n).map_err(Error::BadRequest)
    })
}

/// `GET /servers/{name}/backups/keys`: the KEK versions the server's retained
/// backups need. A security officer must not disable or purge these while the
/// backups are to stay restorable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupKeys {
    /// The server.
    pub server: String,
    /// The versions: the one that wraps the repository key under which every
    /// backup and archived WAL segment of the server is encrypted.
    pub key_versions: Vec<KeyVersionId>,
    /// The version of the geo key that wraps the geo-redundant copy's repository
    /// key, when the server has a copy: the copy's backups need it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo_key_version: Option<KeyVersionId>,
}

/// Removes the file at `path`, if there is one.
pub(super) fn remove_file_if_present(path: &std::path::Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).ctx(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// The retention asked for, or the default; refused outside 1–35 days.
pub(super) fn validate_retention(days: Option<u32>) -> Result<u32, Error> {
    let days = days.unwrap_or(DEFAULT_RETENTION_DAYS);
    if !RETENTION_DAYS.contains(&days) {
        return Err(Error::BadRequest(format!(
            "a backup retention of {days} days is out of range: choose {} to {} days \
             (default {DEFAULT_RETENTION_DAYS})",
            RETENTION_DAYS.start(),
            RETENTION_DAYS.end()
        )));
    }
    Ok(days)
}

impl Platform {
    /// The directory holding every server's backup repository.
    pub(super) fn backups_dir(&self) -> PathBuf {
        self.config.state_dir.join("backups")
    }

    /// The backups of a new server `id`: its own repository (a local directory or
    /// in the platform's Azure container), kept for the default retention.
    pub(super) fn backup_config(&self, id: &str) -> BackupConfig {
        BackupConfig {
            azure: self.config.backup_store.clone(),
            ..BackupConfig::new(self.repository_path(id), DEFAULT_RETENTION_DAYS)
        }
    }

    /// Removes every backup of server `id` in `dir` (deleted, or never created):
    /// first its wrapped repository keys, which crypto-shreds every copy of its
    /// repositories wherever they are, then its repository in Azure Blob Storage
    /// (while `agent.json` still says where it is), then its local repository and
    /// geo-redundant copy. A failure leaves `agent.json`, so that the delete, done
    /// again, finds the rest.
    pub(super) fn remove_repositories(&self, dir: &ServerDir, id: &str) -> Result<(), Error> {
        shred_repository_keys(dir)?;
        if let Ok(config) = read_json::<AgentConfig>(&dir.agent_config()) {
            self.remove_blob_repository(&config)?;
        }
        self.remove_backups(id)
    }

    /// Removes the local backup repository of server `id`, and its geo-redundant
    /// copy.
    pub(super) fn remove_backups(&self, id: &str) -> Result<(), Error> {
        self.remove_geo_backups(id)?;
        let repository = self.backups_dir().join(id);
        match fs::remove_dir_all(&repository) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).ctx(|| format!("removing {}", repository.display()))
            }
            _ => Ok(()),
        }
    }
}

impl Platform {
    /// The server's complete backups and archived WAL, as its agent reads them
    /// from the repository.
    pub fn list_backups(&self, name: &str) -> Result<BackupCatalog, Error> {
        let server = self.serving_for_backups(name)?;
        self.run_task(&self.backup_agent(&server)?, &AgentTask::BackupList, None)
    }

    /// One backup of the server, by label.
    pub fn show_backup(&self, name: &str, label: &str) -> Result<BackupSummary, Error> {
        self.list_backups(name)?
            .backups
            .into_iter()
            .find(|b| b.label == label)
            .ok_or_else(|| Error::BackupNotFound {
                server: name.into(),
                label: label.into(),
            })
    }

    /// Takes a backup of `kind` in `repository` now and returns it once complete.
    /// Backups of one server are taken one at a time (pgBackRest's lock refuses a
    /// second).
    pub fn create_backup(
        &self,
        name: &str,
        kind: BackupKind,
        repository: Repository,
    ) -> Result<BackupSummary, Error> {
        let server = self.serving_for_backups(name)?;
        let agent = self.backup_agent(&server)?;
        self.event(
            &server,
            Actor::Dba,
            "backup started",
            &format!(
                "a {} backup in repository {}",
                kind.as_str(),
                repository.number()
            ),
        )?;
        let task = AgentTask::BackupCreate { kind, repository };
        let created: Result<BackupSummary, Error> = self.run_task(&agent, &task, None);
        match &created {
            Ok(b) => self.event(
                &server,
                Actor::Dba,
                "backup completed",
                &format!(
                    "{} ({}) in repository {}, {} bytes in the repository, {} s",
                    b.label,
                    b.kind.as_str(),
                    repository.number(),
                    b.repository_bytes,
                    b.duration_secs
                ),
            )?,
            Err(e) => self.event(&server, Actor::Dba, "backup failed", &e.to_string())?,
        };
        created
    }

    /// The server's backups running now (the DBA's and the scheduled ones), with
    /// their progress, as its agent reads them from pgBackRest (on a highly
    /// available server, the primary's: only it takes backups).
    pub fn backup_progress(&self, name: &str) -> Result<Vec<RunningBackup>, Error> {
        let server = self.serving_for_backups(name)?;
        self.run_task(
            &self.backup_agent(&server)?,
            &AgentTask::BackupProgress,
            None,
        )
    }

    /// The KEK versions the server's backups need (from the wrapped repository
    /// key stored with the server; the server need not run).
    pub fn backup_keys(&self, name: &str) -> Result<BackupKeys, Error> {
        let server = self.store.server(name)?;
        self.local_only(&server, "listing the backups' key versions")?;
        let wrapped: WrappedDek = read_json(&ServerDir::new(&server.dir).wrapped_backup_key())
            .map_err(|_| {
                Error::BadRequest(format!(
                    "server '{name}' has no backup repository key: it has no backups"
                ))
            })?;
        let geo: Option<WrappedDek> =
            read_json(&ServerDir::new(&server.dir).wrapped_geo_backup_key()).ok();
        Ok(BackupKeys {
            server: server.name,
            key_versions: vec![wrapped.kek],
            geo_key_version: geo.map(|w| w.kek),
        })
    }

    /// Decrypts and checks every backup file and archived WAL segment of
    /// `repository`.
    pub fn verify_backups(
        &self,
        name: &str,
        repository: Repository,
    ) -> Result<BackupVerification, Error> {
        let server = self.serving_for_backups(name)?;
        let verification: BackupVerification = self.run_task(
            &self.backup_agent(&server)?,
            &AgentTask::BackupVerify { repository },
            None,
        )?;
        let n = repository.number();
        self.event(
            &server,
            Actor::Dba,
            "backups verified",
            &if verification.valid {
                format!("every backup file and archived WAL segment of repository {n} verified")
            } else {
                format!(
                    "repository {n}: {} damaged: {}",
                    verification.problems.len(),
                    verification.problems.join("; ")
                )
            },
        )?;
        Ok(verification)
    }

    /// The server, when it is Ready: its backups are reached through its mount.
    fn serving_for_backups(&self, name: &str) -> Result<ServerRecord, Error> {
        let server = self.store.server(name)?;
        if server.state != ServerState::Ready {
            return Err(StateConflict::BackupsNeedServing {
                server: name.into(),
                state: server.state.name(),
            }
            .into());
        }
        Ok(server)
    }
}

/// Removes the wrapped repository keys kept in `dir` (its own repository's and its
/// geo copy's): from then on no copy of those repositories can be read, wherever
/// its bytes are.
pub(super) fn shred_repository_keys(dir: &ServerDir) -> Result<(), Error> {
    for key in [dir.wrapped_backup_key(), dir.wrapped_geo_backup_key()] {
        remove_file_if_present(&key)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_1_to_35_days_and_7_by_default() {
        assert_eq!(validate_retention(None).unwrap(), 7);
        assert_eq!(validate_retention(Some(1)).unwrap(), 1);
        assert_eq!(validate_retention(Some(35)).unwrap(), 35);
        for refused in [0, 36] {
            let err = validate_retention(Some(refused)).unwrap_err().to_string();
            assert!(
                err.contains(&format!("{refused} days is out of range: choose 1 to 35")),
                "{err}"
            );
        }
    }
}
