//! Moving a highly available server to another key, online (`pgcmk server update
//! NAME --key URL`, `docs/high-availability.md`, "Changing the key"): a rolling
//! change, one node at a time, so that one node serves throughout.
//!
//! The new key is validated first (a throwaway DEK wrapped and unwrapped); then the
//! server's repository key is re-wrapped (a node still on the old key keeps the
//! repository key it unwrapped at its start in memory, and its agent cannot move
//! the file back: its old key refuses to unwrap what the new one wrapped); then
//! each standby, then — after a planned switchover to a node on the new key — the
//! old primary: its agent stops, its own DEK is re-wrapped under the new key, its
//! configuration names the new key, it restarts and is waited for in its role
//! (synchronous standby) before the next. Each node is either on the old key or
//! the new one at every point, so a failure half-way leaves the nodes serving on
//! one key or the other, and running the same command again finishes the change.

use pgcmk_agent::contract::server_dir::{read_json, write_json_atomic};
use pgcmk_agent::contract::{AgentConfig, KekAccess, ServerDir};
use pgcmk_keyprovider::{KeyEncryptionKey, WrappedDek};

use super::ha::HaError;
use super::ha_update::{HaUpdateError, LEADER, SYNC_STANDBY};
use super::Platform;
use crate::model::{Actor, Encryption, ServerRecord, ServerState};
use crate::Error;

impl Platform {
    /// Moves every node of highly available `server` (customer-managed through
    /// `identity`) to key `key_url`, one at a time (see the module's documentation).
    pub(super) fn update_ha_key(
        &self,
        server: &ServerRecord,
        identity: &str,
        key_url: &str,
    ) -> Result<ServerRecord, Error> {
        if server.state != ServerState::Ready {
            return Err(HaUpdateError::NotReady {
                server: server.name.clone(),
                state: server.state.name(),
            }
            .into());
        }
        let nodes = self.nodes_of(server)?;
        let first = nodes
            .first()
            .ok_or_else(|| HaError::NotHighlyAvailable(server.name.clone()))?;
        let current = read_json::<AgentConfig>(&ServerDir::new(&first.dir).agent_config())?.kek;
        let (access, new) = self.validated_new_key(first, identity, key_url, &current)?;
        // Without a primary there is no one to hand over to: refused before any change.
        let primary = self.primary_node(server)?;
        self.event(
            server,
            Actor::Dba,
            "changing the key",
            &format!(
                "to {}: the repository key first, then node by node, the standby first, \
                 the primary after a planned switchover",
                access.key
            ),
        )?;
        self.move_backup_key(server, first, new.as_ref())?;
        let on_new_key = |node: &ServerRecord| -> Result<bool, Error> {
            let config: AgentConfig = read_json(&ServerDir::new(&node.dir).agent_config())?;
            Ok(config.kek.key == access.key)
        };
        let mut pending = Vec::new();
        for node in nodes {
            match on_new_key(&node)? {
                false => pending.push(node),
                // Moved by an earlier run that stopped before its agent ran again.
                true if !self.is_supervised(&node.id) => self.spawn_agent(&node, None)?,
                true => {}
            }
        }
        // The standbys first: the primary moves last, after handing over.
        pending.sort_by_key(|n| n.id == primary.id);
        for node in &pending {
            if self.primary_node(server)?.id == node.id {
                self.hand_over(server)?;
            }
            self.move_node(server, node, &access, new.as_ref())?;
            self.wait_role(server, node, SYNC_STANDBY)?;
        }
        let moved = self.store.update_server(&server.id, |s| {
            s.encryption = Encryption::CustomerManaged {
                identity: identity.into(),
                key: access.key.clone(),
            };
        })?;
        self.event(
            &moved,
            Actor::Dba,
            "key changed",
            &format!(
                "every node's DEK and the repository key are wrapped by {}",
                access.key
            ),
        )?;
        Ok(moved)
    }

    /// Re-wraps `server`'s repository key (in the server's directory) under `new`
    /// unless it is already: unwrapped through `node`'s current access.
    fn move_backup_key(
        &self,
        server: &ServerRecord,
        node: &ServerRecord,
        new: &dyn KeyEncryptionKey,
    ) -> Result<(), Error> {
        let file = ServerDir::new(&server.dir).wrapped_backup_key();
        if !file.exists() {
            return Ok(());
        }
        let wrapped: WrappedDek = read_json(&file)?;
        if new.unwrap(&wrapped).is_ok() {
            return Ok(());
        }
        let config: AgentConfig = read_json(&ServerDir::new(&node.dir).agent_config())?;
        let key = config
            .kek
            .connect(self.identity_secret(node)?)?
            .unwrap(&wrapped)?;
        let rewrapped = new.wrap(&key)?;
        drop(key);
        write_json_atomic(&file, &rewrapped)?;
        self.event(
            server,
            Actor::ControlPlane,
            "backup key re-wrapped",
            &format!(
                "the repository key is wrapped by {} (was {})",
                rewrapped.kek, wrapped.kek
            ),
        )?;
        Ok(())
    }

    /// A planned switchover of `server` to its standby; waits until it leads.
    fn hand_over(&self, server: &ServerRecord) -> Result<(), Error> {
        let candidate = self.failover(&server.name, true)?;
        let node = self
            .nodes_of(server)?
            .into_iter()
            .find(|n| n.name == candidate)
            .ok_or_else(|| HaError::NoCandidate(server.name.clone()))?;
        self.wait_role(server, &node, LEADER)
    }

    /// Stops `node`'s agent, re-wraps its own DEK under `new` (reached by
    /// `access`), writes both, and starts it again.
    fn move_node(
        &self,
        server: &ServerRecord,
        node: &ServerRecord,
        access: &KekAccess,
        new: &dyn KeyEncryptionKey,
    ) -> Result<(), Error> {
        let dir = ServerDir::new(&node.dir);
        let mut config: AgentConfig = read_json(&dir.agent_config())?;
        let current: WrappedDek = read_json(&dir.wrapped_dek())?;
        let old = config.kek.connect(self.identity_secret(node)?)?;
        // An earlier run may have written the DEK and not the configuration.
        let dek = old.unwrap(&current).or_else(|_| new.unwrap(&current))?;
        let wrapped = new.wrap(&dek)?;
        drop(dek);
        self.stop_agent(&node.id);
        write_json_atomic(&dir.wrapped_dek(), &wrapped)?;
        config.kek = access.clone();
        write_json_atomic(&dir.agent_config(), &config)?;
        let updated = self.store.update_server(&node.id, |s| {
            s.wrapped_dek = wrapped.clone();
            s.encryption = server.encryption.clone();
            if let Encryption::CustomerManaged { key, .. } = &mut s.encryption {
                *key = access.key.clone();
            }
            s.state = ServerState::Provisioning;
        })?;
        self.event(
            server,
            Actor::ControlPlane,
            "node key changed",
            &format!("{}: its DEK is wrapped by {}", node.name, wrapped.kek),
        )?;
        self.spawn_agent(&updated, None)
    }
}
