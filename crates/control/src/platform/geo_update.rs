//! Adding a geo-redundant copy to a server that has none, and removing one
//! (`server update --geo-backup-key ...` / `--no-geo-backup`, `docs/backups.md`).
//!
//! The server's agent reads its repositories from `agent.json` at start, so both
//! changes restart it with the new configuration (as a key change does); a highly
//! available server's nodes are restarted one by one, the primary last after a
//! switchover ([`super::ha_roll`]), so one node serves throughout. Adding
//! waits for the copy's first full backup, so that the copy's restore window starts
//! when the command returns; any failure on the way takes the copy out again and
//! brings the server back as it was. Removing crypto-shreds the copy: its wrapped
//! repository key goes first, then the geo identity's secret, then its files.

use std::time::Duration;

use pgcmk_agent::contract::backup::GeoRepository;
use pgcmk_agent::contract::server_dir::{read_json, write_json_atomic};
use pgcmk_agent::contract::{AgentConfig, ServerDir};
use serde::{Deserialize, Serialize};

use super::backups::remove_file_if_present;
use super::geo::GeoBackupChoice;
use super::Platform;
use crate::error::StateConflict;
use crate::model::{Actor, ServerRecord, ServerState};
use crate::store::geo_owner;
use crate::Error;

/// How long the copy's first full backup may take before the change is undone.
const FIRST_BACKUP_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// What the agent's events of the copy's backups say (`backup completed`, `backup
/// failed`).
const GEO_BACKUP_WORDS: &str = "geo-redundant copy (repo2)";

/// `PUT /servers/{name}/geo-backup`: the server's geo-redundant copy from now on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GeoBackupChange {
    /// The copy to add (the server has none); `None` removes the server's copy and
    /// every backup in it.
    #[serde(default)]
    pub geo_backup: Option<GeoBackupChoice>,
}

impl Platform {
    /// Adds or removes the geo-redundant copy of a Ready server's backups, and waits
    /// until the server is Ready again (and, when adding, until the copy holds a
    /// full backup). A request that is not valid, or that fails on the way, leaves
    /// the server as it was.
    pub fn update_geo_backup(
        &self,
        name: &str,
        change: &GeoBackupChange,
    ) -> Result<ServerRecord, Error> {
        let _guard = self.locks.lock(name);
        let server = self.store.server(name)?;
        if let Some(place) = &server.node_of {
            return Err(Error::BadRequest(format!(
                "'{name}' is a node of a highly available server: update the server (its \
                 id is {})",
                place.server_id
            )));
        }
        self.local_only(&server, "a geo-redundant copy of the backups")?;
        if server.state != ServerState::Ready {
            return Err(StateConflict::BackupsNeedServing {
                server: name.into(),
                state: server.state.name(),
            }
            .into());
        }
        // A highly available server's repositories are in its nodes' configuration.
        let holder = self.backup_key_agent(&server)?;
        let config: AgentConfig = read_json(&ServerDir::new(&holder.dir).agent_config())?;
        let Some(backup) = &config.backup else {
            return Err(Error::BadRequest(format!(
                "server '{name}' has no backups (a read replica, or a server created before \
                 backups existed): it can have no geo-redundant copy"
            )));
        };
        match (&change.geo_backup, &backup.geo) {
            (Some(_), Some(geo)) => Err(StateConflict::GeoBackupKept {
                server: name.into(),
                location: geo.location.clone(),
            }
            .into()),
            (None, None) => Err(StateConflict::NoGeoBackup(name.into()).into()),
            (Some(choice), None) => self.add_geo_backup(&server, choice),
            (None, Some(geo)) => self.remove_geo_backup(&server, geo.clone()),
        }
    }

    /// Restarts the server's agent — a highly available server's nodes' agents,
    /// one by one — with `geo` as its geo-redundant copy; waits for Ready.
    fn set_geo_repository(
        &self,
        server: &ServerRecord,
        geo: Option<&GeoRepository>,
    ) -> Result<(), Error> {
        let change = |config: &mut AgentConfig| {
            if let Some(backup) = config.backup.as_mut() {
                backup.geo = geo.cloned();
            }
        };
        if !server.nodes.is_empty() {
            return self.roll_nodes(server, change);
        }
        let mut config: AgentConfig = read_json(&ServerDir::new(&server.dir).agent_config())?;
        change(&mut config);
        self.restart_with(server, &config)
    }

    /// Validates the geo key (a real wrap and unwrap as the geo identity), stores
    /// the copy's wrapped key and the identity's secret, restarts the agent with
    /// `repo2` and waits for its first full backup; undone on any failure.
    fn add_geo_backup(
        &self,
        server: &ServerRecord,
        choice: &GeoBackupChoice,
    ) -> Result<ServerRecord, Error> {
        let geo = self.geo_backup_for(&server.id, &server.location, choice)?;
        let dir = ServerDir::new(&server.dir);
        // Files of an earlier copy whose removal was cut short are unreadable (their
        // key is gone) and would make pgBackRest refuse the new key's stanza.
        self.remove_geo_backups(&server.id)?;
        self.remove_geo_blobs(&geo.repository)?;
        let since = self.last_event_seqs(server)?;
        let added = write_json_atomic(&dir.wrapped_geo_backup_key(), &geo.wrapped_key)
            .map_err(Error::from)
            .and_then(|()| {
                self.secrets
                    .put(&self.store, &geo_owner(&server.id), &geo.secret)
            })
            .and_then(|()| self.set_geo_repository(server, Some(&geo.repository)))
            .and_then(|()| self.wait_first_geo_backup(server, &since));
        if let Err(e) = added {
            let undone = self
                .set_geo_repository(server, None)
                .and_then(|()| self.forget_geo_backup(server, &geo.repository));
            let after = match &undone {
                Ok(()) => "the server is back as it was, without a copy".to_string(),
                Err(u) => format!("undoing it failed too: {u}"),
            };
            self.event(
                server,
                Actor::ControlPlane,
                "geo backup not added",
                &format!("{e}; {after}"),
            )?;
            return Err(Error::GeoBackupNotAdded {
                server: server.name.clone(),
                cause: Box::new(e),
                after,
            });
        }
        self.event(
            server,
            Actor::Dba,
            "geo backup added",
            &format!(
                "geo-redundant backups in {} under key {}, wrapped by {}; first full backup \
                 taken",
                geo.repository.location, geo.repository.kek.key, geo.wrapped_key.kek
            ),
        )?;
        self.store.server(&server.id)
    }

    /// Restarts the agent without `repo2` (the copy `geo`), then crypto-shreds
    /// the copy.
    fn remove_geo_backup(
        &self,
        server: &ServerRecord,
        geo: GeoRepository,
    ) -> Result<ServerRecord, Error> {
        let location = &geo.location;
        if let Err(e) = self.set_geo_repository(server, None) {
            let undone = self.set_geo_repository(server, Some(&geo));
            let why = match &undone {
                Ok(()) => format!("{e}; the server is back with its geo-redundant copy"),
                Err(u) => format!("{e}; undoing it failed too: {u}"),
            };
            self.event(server, Actor::ControlPlane, "geo backup not removed", &why)?;
            return Err(e);
        }
        self.forget_geo_backup(server, &geo)?;
        self.event(
            server,
            Actor::Dba,
            "geo backup removed",
            &format!(
                "the geo-redundant copy in {location} is gone: its repository key first \
                 (every backup in it crypto-shredded), then its files"
            ),
        )?;
        self.store.server(&server.id)
    }

    /// Removes the copy's wrapped repository key (from then on nothing in the copy
    /// can be read), the geo identity's secret, and the copy `geo`'s files or blobs.
    fn forget_geo_backup(&self, server: &ServerRecord, geo: &GeoRepository) -> Result<(), Error> {
        remove_file_if_present(&ServerDir::new(&server.dir).wrapped_geo_backup_key())?;
        self.store
            .remove_sealed_identity_secret(&geo_owner(&server.id))?;
        self.remove_geo_backups(&server.id)?;
        self.remove_geo_blobs(geo)
    }

    /// Stops the server's agent, writes `config`, and starts a new agent with it;
    /// waits for Ready.
    fn restart_with(&self, server: &ServerRecord, config: &AgentConfig) -> Result<(), Error> {
        self.stop_agent(&server.id);
        write_json_atomic(&ServerDir::new(&server.dir).agent_config(), config)?;
        let restarting = self.store.update_server(&server.id, |s| {
            s.state = ServerState::Provisioning;
        })?;
        self.spawn_agent(&restarting, None)?;
        self.wait_settled(&restarting)
    }

    /// Waits until an agent of the server (on a highly available server, the
    /// primary's) reports the end of the copy's first full backup (its schedule
    /// starts one at once, the copy having none), after the events `since`.
    fn wait_first_geo_backup(
        &self,
        server: &ServerRecord,
        since: &[(String, u64)],
    ) -> Result<(), Error> {
        self.wait_agent_event(server, since, FIRST_BACKUP_TIMEOUT, |event| {
            if !event.why.contains(GEO_BACKUP_WORDS) {
                return None;
            }
            match event.what.as_str() {
                "backup completed" => Some(Ok(())),
                "backup failed" => {
                    Some(Err(Error::GeoFirstBackup(format!("failed: {}", event.why))))
                }
                _ => None,
            }
        })
        .map_err(|e| match e {
            Error::AgentTask(why) => Error::GeoFirstBackup(why),
            other => other,
        })
    }
}
