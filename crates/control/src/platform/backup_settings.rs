//! A server's backup settings: retention in days and the full/differential
//! schedule, chosen at create (`--backup-retention-days`,
//! `--full-backup-every-hours`, `--diff-backup-every-hours`) and changed later
//! (`pgcmk server update NAME --backup-...`, `docs/backups.md`).
//!
//! A change is written to `agent.json` (each node's, for a highly available
//! server: every node archives, and the primary's backs up and expires); a
//! serving agent is asked for a key check,
//! at which it applies the settings in place (pgBackRest's configuration on the
//! mount, its schedule) without a restart: no backup under way is ended, no
//! connection dropped. The command returns once the agent said so.

use std::time::Duration;

use pgcmk_agent::contract::backup::{
    BackupConfig, BackupSettings, DIFF_EVERY_HOURS, FULL_EVERY_HOURS,
};
use pgcmk_agent::contract::invocation::{signal, AgentSignal};
use pgcmk_agent::contract::server_dir::{read_json, write_json_atomic};
use pgcmk_agent::contract::{AgentConfig, ServerDir};
use serde::{Deserialize, Serialize};

use super::backups::validate_retention;
use super::Platform;
use crate::error::IoContext;
use crate::model::{Actor, ServerRecord, ServerState};
use crate::node_agent::NodeAgent;
use crate::supervisor::Supervised;
use crate::Error;

/// How long a serving agent may take to apply new settings (its key check).
const APPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// The backup settings of a create request, or the ones `PUT
/// /servers/{name}/backup-settings` changes (at least one there); the others keep
/// their value (the defaults at create: 7 days, 168 and 24 hours).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSettingsChange {
    /// Days of backups kept (1–35).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_retention_days: Option<u32>,
    /// Hours between full backups (24–840).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_backup_every_hours: Option<u32>,
    /// Hours between differential backups (1–168, fewer than between full ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_backup_every_hours: Option<u32>,
}

impl BackupSettingsChange {
    /// True when no setting is given.
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `current` with the settings given here, validated.
    pub fn applied_to(&self, current: BackupSettings) -> Result<BackupSettings, Error> {
        let settings = BackupSettings {
            retention_days: validate_retention(Some(
                self.backup_retention_days.unwrap_or(current.retention_days),
            ))?,
            full_every_hours: self
                .full_backup_every_hours
                .unwrap_or(current.full_every_hours),
            diff_every_hours: self
                .diff_backup_every_hours
                .unwrap_or(current.diff_every_hours),
        };
        let out_of = |what: &str, hours: u32, range: &std::ops::RangeInclusive<u32>| {
            Error::BadRequest(format!(
                "{what} every {hours} hours is out of range: choose {} to {} hours",
                range.start(),
                range.end()
            ))
        };
        if !FULL_EVERY_HOURS.contains(&settings.full_every_hours) {
            let hours = settings.full_every_hours;
            return Err(out_of("a full backup", hours, &FULL_EVERY_HOURS));
        }
        if !DIFF_EVERY_HOURS.contains(&settings.diff_every_hours) {
            let hours = settings.diff_every_hours;
            return Err(out_of("a differential backup", hours, &DIFF_EVERY_HOURS));
        }
        if settings.diff_every_hours >= settings.full_every_hours {
            return Err(Error::BadRequest(format!(
                "a differential backup every {} hours would never come between full backups \
                 every {} hours: choose fewer hours for --diff-backup-every-hours",
                settings.diff_every_hours, settings.full_every_hours
            )));
        }
        Ok(settings)
    }
}

impl Platform {
    /// Changes the backup settings of server `name` — of each of its nodes when it
    /// is highly available — and waits until every serving agent applied them. A
    /// request that is not valid changes nothing.
    pub fn update_backup_settings(
        &self,
        name: &str,
        change: &BackupSettingsChange,
    ) -> Result<ServerRecord, Error> {
        let _guard = self.locks.lock(name);
        let server = self.store.server(name)?;
        if server.node_of.is_some() {
            return Err(Error::BadRequest(format!(
                "'{name}' is a node of a highly available server: change the backup settings \
                 of the server"
            )));
        }
        if change.is_empty() {
            return Err(Error::BadRequest(
                "no backup setting given: give --backup-retention-days, \
                 --full-backup-every-hours or --diff-backup-every-hours"
                    .into(),
            ));
        }
        let holders = self.backup_holders(&server)?;
        let mut configs = Vec::with_capacity(holders.len());
        for holder in &holders {
            self.local_only(holder, "a change of backup settings")?;
            let dir = ServerDir::new(&holder.dir);
            let config: AgentConfig = read_json(&dir.agent_config())?;
            if config.backup.is_none() {
                return Err(Error::BadRequest(format!(
                    "server '{name}' has no backups (a read replica, or a server created \
                     before backups existed): it has no backup settings"
                )));
            }
            configs.push((dir, config));
        }
        let settings_of = |c: &AgentConfig| c.backup.as_ref().map(BackupConfig::settings);
        // The nodes' agree but mid-change (a node down when it was made).
        let old = settings_of(&configs[0].1).unwrap_or_default();
        let new = change.applied_to(old)?;
        if configs.iter().all(|(_, c)| settings_of(c) == Some(new)) {
            return Ok(server);
        }
        let since = self.last_event_seqs(&server)?;
        for (dir, config) in &mut configs {
            if let Some(backup) = config.backup.as_mut() {
                backup.apply(new);
            }
            write_json_atomic(&dir.agent_config(), config)?;
        }
        self.event(
            &server,
            Actor::Dba,
            "backup settings changed",
            &format!("{new} (were: {old})"),
        )?;
        for holder in &holders {
            self.wait_settings_applied(holder, &since).map_err(|e| {
                Error::AgentTask(format!(
                    "the backup settings of server '{name}' are stored, but {e}; the agent \
                     applies them at its next key check or start"
                ))
            })?;
        }
        self.store.server(&server.id)
    }

    /// The records whose agents keep `server`'s backups: its own, or each node's.
    fn backup_holders(&self, server: &ServerRecord) -> Result<Vec<ServerRecord>, Error> {
        if server.nodes.is_empty() {
            return Ok(vec![server.clone()]);
        }
        server
            .nodes
            .iter()
            .map(|id| self.store.server(id))
            .collect()
    }

    /// When `holder`'s agent serves: asks it for a key check and waits until it
    /// said it applied the settings written after `since`. Not serving, it applies
    /// them when it mounts.
    fn wait_settings_applied(
        &self,
        holder: &ServerRecord,
        since: &[(String, u64)],
    ) -> Result<(), Error> {
        let live = self
            .agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(&holder.id)
            .and_then(Supervised::live_agent)
            .map(NodeAgent::pid);
        let Some(pid) = live.filter(|_| holder.state == ServerState::Ready) else {
            return Ok(());
        };
        signal(pid, AgentSignal::CheckKeyNow).ctx(|| "signalling the agent")?;
        let since: Vec<_> = since
            .iter()
            .filter(|(id, _)| *id == holder.id)
            .cloned()
            .collect();
        self.wait_agent_event(holder, &since, APPLY_TIMEOUT, |event| {
            match event.what.as_str() {
                "backup settings applied" => Some(Ok(())),
                "backup settings not applied" => Some(Err(Error::AgentTask(format!(
                    "the agent could not apply them: {}",
                    event.why
                )))),
                _ => None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(
        retention: Option<u32>,
        full: Option<u32>,
        diff: Option<u32>,
    ) -> BackupSettingsChange {
        BackupSettingsChange {
            backup_retention_days: retention,
            full_backup_every_hours: full,
            diff_backup_every_hours: diff,
        }
    }

    #[test]
    fn settings_not_given_keep_their_value() {
        let current = BackupSettings::default();
        let got = change(Some(14), None, Some(12))
            .applied_to(current)
            .unwrap();
        assert_eq!(
            got,
            BackupSettings {
                retention_days: 14,
                full_every_hours: 168,
                diff_every_hours: 12
            }
        );
        assert_eq!(
            change(None, None, None).applied_to(current).unwrap(),
            current
        );
    }

    #[test]
    fn settings_out_of_range_say_the_range() {
        let current = BackupSettings::default();
        for (bad, want) in [
            (
                change(Some(36), None, None),
                "36 days is out of range: choose 1 to 35",
            ),
            (
                change(None, Some(12), None),
                "a full backup every 12 hours is out of range: choose 24 to 840",
            ),
            (
                change(None, None, Some(0)),
                "a differential backup every 0 hours is out of range: choose 1 to 168",
            ),
            (
                change(None, Some(24), Some(24)),
                "would never come between full backups every 24 hours",
            ),
        ] {
            let err = bad.applied_to(current).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }
}
