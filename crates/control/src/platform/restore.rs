//! `server restore`: a new, ordinary server (its own DEK, repository key, stanza
//! and monitor; the same, another or the service-managed key) made from another
//! server's backups, at a point in time or at the latest archived WAL. The
//! source's repository key is unwrapped through the vault, by the source's
//! identity: first in a short-lived run of the source's agent, so that a refusal
//! is reported, naming the key version, before anything is made; then in the new
//! server's agent, which restores.
//!
//! A source with a geo-redundant copy is restored from either repository: the one
//! asked for (`repository` 1 or 2), or else its own repository when its key
//! unwraps, and the copy when only the geo key does (the source's key revoked).

use pgcmk_agent::contract::backup::{Repository, RepositoryKeyCheck, RestoreSource, RestoreTarget};
use pgcmk_agent::contract::server_dir::read_json;
use pgcmk_agent::contract::task::AgentTask;
use pgcmk_agent::contract::{AgentConfig, ServerDir};
use pgcmk_keyprovider::WrappedDek;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use super::backup_settings::BackupSettingsChange;
use super::create::{CreateServer, Created, KeyChoice, Origin, Restoring};
use super::geo::GeoBackupChoice;
use super::Platform;
use crate::model::ServerRecord;
use crate::Error;

/// `POST /servers/{source}/restore`: a new server from `source`'s backups.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RestoreServer {
    /// `latest`, or an RFC 3339 time: every transaction committed at or before it
    /// is restored, and none after.
    pub point_in_time: String,
    /// The new server's name.
    pub name: String,
    /// How the new server's DEK is protected, as for a create.
    #[serde(flatten)]
    pub protection: KeyChoice,
    /// Days of the new server's backups kept (1–35; default 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_retention_days: Option<u32>,
    /// The repository to restore from: 1 (the source's own) or 2 (its
    /// geo-redundant copy); by default the source's own when its key unwraps, else
    /// the copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<u8>,
    /// A geo-redundant copy of the new server's backups, under a key in another
    /// location, as for a create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo_backup: Option<GeoBackupChoice>,
}

impl Platform {
    /// Restores server `source`'s backups into a new server `req.name` in the
    /// source's location, and waits for it to be Ready. Refused before anything is
    /// made when the vault refuses the source's repository key; on any later
    /// failure nothing is left, as for a create.
    pub fn restore(&self, source: &str, req: &RestoreServer) -> Result<Created, Error> {
        let target = parse_target(&req.point_in_time)?;
        let source = self.store.server(source)?;
        self.local_only(&source, "a restore")?;
        let source_dir = ServerDir::new(&source.dir);
        // A highly available source's backups are reached through a node's agent.
        let agent = self.backup_key_agent(&source)?;
        let config: AgentConfig = read_json(&ServerDir::new(&agent.dir).agent_config())?;
        let Some(backup) = config.backup else {
            return Err(Error::BadRequest(format!(
                "server '{}' has no backups: it was created before backups existed",
                source.name
            )));
        };
        let asked = req
            .repository
            .map(Repository::from_number)
            .transpose()
            .map_err(Error::BadRequest)?;
        let geo = backup.geo;
        let check = |repo| self.check_repository_key(&source, &agent, repo);
        let repository = match (asked, &geo) {
            (Some(Repository::Geo), None) => {
                return Err(Error::BadRequest(format!(
                    "server '{}' has no geo-redundant copy of its backups: restore from \
                     repository 1",
                    source.name
                )))
            }
            (Some(repo), _) => check(repo).map(|()| repo)?,
            (None, None) => check(Repository::Primary).map(|()| Repository::Primary)?,
            (None, Some(_)) => match check(Repository::Primary) {
                Ok(()) => Repository::Primary,
                Err(primary) => match check(Repository::Geo) {
                    Ok(()) => Repository::Geo,
                    Err(_) => return Err(primary),
                },
            },
        };
        let repository_kind = repository;
        let azure = match repository {
            Repository::Primary => backup.azure.clone(),
            Repository::Geo => geo.as_ref().and_then(|g| g.azure.clone()),
        };
        let (repository, wrapped_key, kek, secret) = match (repository, geo) {
            (Repository::Geo, Some(geo)) => (
                geo.repository,
                read_json::<WrappedDek>(&source_dir.wrapped_geo_backup_key())?,
                geo.kek,
                self.geo_identity_secret(&agent)?.ok_or_else(|| {
                    Error::BadRequest(format!(
                        "server '{}' has no geo identity secret stored",
                        source.name
                    ))
                })?,
            ),
            _ => (
                backup.repository,
                read_json::<WrappedDek>(&source_dir.wrapped_backup_key())?,
                config.kek,
                self.identity_secret(&agent)?,
            ),
        };
        let restoring = Restoring {
            source: RestoreSource {
                server: source.name.clone(),
                repository,
                repository_kind,
                azure,
                stanza: source.id.clone(),
                wrapped_key,
                kek,
                target,
            },
            source_identity_secret: secret,
        };
        let create = CreateServer {
            name: req.name.clone(),
            location: source.location.clone(),
            protection: req.protection.clone(),
            backup_settings: BackupSettingsChange {
                backup_retention_days: req.backup_retention_days,
                ..Default::default()
            },
            geo_backup: req.geo_backup.clone(),
            high_availability: false,
            // A restored server listens on loopback; `server update --listen-addresses` moves it.
            listen_addresses: Vec::new(),
            host: None,
            hosts: Vec::new(),
        };
        self.create_server(&create, Origin::Restore(Box::new(restoring)))
    }

    /// Proves, in a short-lived run of `agent` (`source` itself, or a node of it),
    /// that the vault unwraps the key of `source`'s repository `repo`; a refusal
    /// names `source` and the key version.
    fn check_repository_key(
        &self,
        source: &ServerRecord,
        agent: &ServerRecord,
        repo: Repository,
    ) -> Result<(), Error> {
        let task = match repo {
            Repository::Primary => AgentTask::BackupKeyCheck,
            Repository::Geo => AgentTask::GeoBackupKeyCheck,
        };
        let _: RepositoryKeyCheck = self.run_task(agent, &task, None).map_err(|e| match e {
            Error::KeyVersionRefused { refusal, .. } => Error::BackupKeyRefused {
                server: source.name.clone(),
                refusal,
            },
            other => other,
        })?;
        Ok(())
    }
}

/// `latest`, or an RFC 3339 time as PostgreSQL's `recovery_target_time` (UTC,
/// microseconds) that pgBackRest also reads to choose the backup to start from.
fn parse_target(text: &str) -> Result<RestoreTarget, Error> {
    if text == "latest" {
        return Ok(RestoreTarget::Latest);
    }
    let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
        Error::BadRequest(format!(
            "point in time '{text}' is not valid ({e}): give `latest` or an RFC 3339 time \
             such as 2026-12-07T09:30:00Z"
        ))
    })?;
    let at = at.to_offset(UtcOffset::UTC);
    Ok(RestoreTarget::Time {
        at: format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.microsecond()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_latest_or_an_rfc3339_time_in_utc() {
        assert_eq!(parse_target("latest").unwrap(), RestoreTarget::Latest);
        assert_eq!(
            parse_target("2026-12-07T10:30:00.25+01:00").unwrap(),
            RestoreTarget::Time {
                at: "2026-12-07 09:30:00.250000+00".into()
            }
        );
        let err = parse_target("yesterday").unwrap_err().to_string();
        assert!(
            err.contains("'yesterday' is not valid") && err.contains("RFC 3339"),
            "{err}"
        );
    }
}
