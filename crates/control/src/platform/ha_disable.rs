//! Disabling high availability (`pgcmk server update NAME --high-availability
//! disabled`, [`super::ha_update`]): the current primary's directory becomes the
//! single server's, the other node goes (agent, mount, DEK, directory, record), and
//! so do the cluster's keys in etcd.

use std::fs;
use std::net::IpAddr;

use pgcmk_agent::contract::backup::BackupOwner;
use pgcmk_agent::contract::server_dir::{read_json, write_json_atomic};
use pgcmk_agent::contract::{AgentConfig, ServerDir};
use pgcmk_keyprovider::WrappedDek;

use super::ha_update::LEADER;
use super::Platform;
use crate::error::IoContext;
use crate::model::{Actor, ServerRecord, ServerState};
use crate::Error;

impl Platform {
    /// Makes highly available `server` single again (see [`super::ha_update`]):
    /// the current primary's directory is kept, the other node removed.
    pub(super) fn disable_ha(&self, server: ServerRecord) -> Result<ServerRecord, Error> {
        let nodes = self.nodes_of(&server)?;
        let kept = match nodes.as_slice() {
            [only] => only.clone(),
            _ => {
                let details = self.node_details(&server)?;
                let leader = details
                    .iter()
                    .find(|n| n.role.as_deref() == Some(LEADER) && n.state == ServerState::Ready)
                    .ok_or_else(|| super::HaError::NoPrimary(server.name.clone()))?;
                nodes
                    .iter()
                    .find(|n| n.name == leader.name)
                    .cloned()
                    .ok_or_else(|| super::HaError::NoPrimary(server.name.clone()))?
            }
        };
        self.event(
            &server,
            Actor::Dba,
            "disabling high availability",
            &format!(
                "keeping the primary {}'s data as the single server's; removing the other node",
                kept.name
            ),
        )?;
        let endpoints = read_json::<AgentConfig>(&ServerDir::new(&kept.dir).agent_config())?
            .ha
            .map(|node| node.etcd_endpoints);
        self.keep_backup_key(&server, &kept)?;
        for other in nodes.iter().filter(|n| n.id != kept.id) {
            self.remove_node(&server, other, "high availability disabled")?;
        }
        let single = self.release_last_node(&self.store.server(&server.id)?, &kept)?;
        if let Some(endpoints) = endpoints {
            self.forget_etcd_cluster(&server.id, &endpoints)?;
        }
        self.event(
            &single,
            Actor::ControlPlane,
            "high availability disabled",
            &format!(
                "a single server on {}:{} (formerly {}); the cluster's keys in etcd are removed",
                single
                    .listen_addresses
                    .first()
                    .map_or_else(String::new, IpAddr::to_string),
                single.port,
                kept.name
            ),
        )?;
        self.store.server(&single.id)
    }

    /// Stops `node` of `server`, removes its directory (mount, wrapped DEK,
    /// volume) and then its record, saying `why` in the server's events.
    pub(super) fn remove_node(
        &self,
        server: &ServerRecord,
        node: &ServerRecord,
        why: &str,
    ) -> Result<(), Error> {
        self.stop_agent(&node.id);
        let dir = ServerDir::new(&node.dir);
        dir.detach_stale_mount();
        if dir.root().exists() {
            fs::remove_dir_all(dir.root()).ctx(|| format!("removing {}", dir.root().display()))?;
        }
        let current = self.store.server(&server.id)?;
        let remaining = ServerRecord {
            nodes: current
                .nodes
                .iter()
                .filter(|id| **id != node.id)
                .cloned()
                .collect(),
            listen_addresses: current
                .listen_addresses
                .iter()
                .filter(|a| !node.listen_addresses.contains(a))
                .copied()
                .collect(),
            ..current
        };
        self.store
            .reshape_servers(&[(&remaining, None)], &[node.id.as_str()])?;
        self.event(
            server,
            Actor::ControlPlane,
            "node removed",
            &format!(
                "{}: its agent, mount, DEK and directory are gone ({why})",
                node.name
            ),
        )?;
        Ok(())
    }

    /// Moves `server`'s repository key (and its geo-redundant copy's) into
    /// `kept`'s directory when that is not the server's own (node-1 of a
    /// converted server, or a created server's directory, holds it) and points
    /// `kept`'s backups there, before any other node goes: without the key the
    /// server's backups could not be read again. The stanza stays the server's.
    fn keep_backup_key(&self, server: &ServerRecord, kept: &ServerRecord) -> Result<(), Error> {
        let from = ServerDir::new(&server.dir);
        if kept.dir == server.dir || !from.wrapped_backup_key().exists() {
            return Ok(());
        }
        let dir = ServerDir::new(&kept.dir);
        for (source, target) in [
            (from.wrapped_backup_key(), dir.wrapped_backup_key()),
            (from.wrapped_geo_backup_key(), dir.wrapped_geo_backup_key()),
        ] {
            if source.exists() {
                write_json_atomic(&target, &read_json::<WrappedDek>(&source)?)?;
            }
        }
        let mut config: AgentConfig = read_json(&dir.agent_config())?;
        if let Some(backup) = config.backup.as_mut() {
            backup.owner = Some(BackupOwner {
                server_id: server.id.clone(),
                dir: kept.dir.clone(),
            });
        }
        write_json_atomic(&dir.agent_config(), &config)?;
        Ok(())
    }

    /// Makes `server`'s last node `kept` the single server again: its agent
    /// restarts without Patroni (PostgreSQL's own configuration back), with
    /// backups, as the server's own; waits for Ready.
    fn release_last_node(
        &self,
        server: &ServerRecord,
        kept: &ServerRecord,
    ) -> Result<ServerRecord, Error> {
        self.stop_agent(&kept.id);
        let dir = ServerDir::new(&kept.dir);
        let mut config: AgentConfig = read_json(&dir.agent_config())?;
        config.ha = None;
        // The server's own directory kept its backup settings; a clone gets the defaults.
        if config.backup.is_none() {
            config.backup = Some(self.backup_config(&server.id));
        }
        write_json_atomic(&dir.agent_config(), &config)?;
        let single = ServerRecord {
            state: ServerState::Provisioning,
            nodes: Vec::new(),
            dir: kept.dir.clone(),
            port: kept.port,
            listen_addresses: kept.listen_addresses.clone(),
            wrapped_dek: kept.wrapped_dek.clone(),
            ..server.clone()
        };
        let sealed = self.sealed_for(&kept.id, &single)?;
        self.store
            .reshape_servers(&[(&single, sealed.as_deref())], &[kept.id.as_str()])?;
        self.spawn_agent(&single, None)?;
        self.wait_settled(&single)?;
        self.store.server(&single.id)
    }
}
