//! Backups of a highly available server (`docs/backups.md`, "Highly available
//! servers"): one pgBackRest stanza and repository per server, not per node,
//! named after the server's id, under one repository key wrapped by the server's
//! KEK and kept in the server's directory (so a server that gains or loses its
//! standby keeps its stanza and key). Each node's agent configures the repository
//! on its own mount; the primary's archives and takes the backups. What the DBA
//! asks of the backups goes to the current primary's agent.

use pgcmk_agent::contract::backup::{BackupOwner, BackupSettings};
use pgcmk_agent::contract::BackupConfig;

use super::ha::HaError;
use super::Platform;
use crate::model::ServerRecord;
use crate::Error;

impl Platform {
    /// The backups of the nodes of the new highly available `server`: its one
    /// repository, with the backup `settings` chosen for it.
    pub(super) fn ha_backup_config(
        &self,
        server: &ServerRecord,
        settings: BackupSettings,
    ) -> BackupConfig {
        BackupConfig {
            retention_days: settings.retention_days,
            full_every_hours: settings.full_every_hours,
            diff_every_hours: settings.diff_every_hours,
            owner: Some(BackupOwner {
                server_id: server.id.clone(),
                dir: server.dir.clone(),
            }),
            ..self.backup_config(&server.id)
        }
    }

    /// The record whose agent reaches `server`'s backups through its live mount:
    /// the server itself, or, for a highly available server, its primary node now
    /// (as Patroni reports it); none while it has no primary.
    pub(super) fn backup_agent(&self, server: &ServerRecord) -> Result<ServerRecord, Error> {
        if server.nodes.is_empty() {
            return Ok(server.clone());
        }
        let leader = self
            .node_details(server)?
            .into_iter()
            .find(|n| n.role.as_deref() == Some("leader"))
            .ok_or_else(|| HaError::NoPrimary(server.name.clone()))?;
        self.nodes_of(server)?
            .into_iter()
            .find(|n| n.name == leader.name)
            .ok_or_else(|| HaError::NoPrimary(server.name.clone()).into())
    }

    /// The record whose agent holds `server`'s key access for its backups, whether
    /// or not it serves: the server itself, or a highly available server's first
    /// node (every node reaches the server's KEK through the server's identity).
    pub(super) fn backup_key_agent(&self, server: &ServerRecord) -> Result<ServerRecord, Error> {
        match self.nodes_of(server)?.into_iter().next() {
            Some(node) => Ok(node),
            None => Ok(server.clone()),
        }
    }
}
