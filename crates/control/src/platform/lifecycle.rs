//! A server's lifecycle after create: stop, start, revalidate, delete, key change.
//! Each holds only the server's own lock ([`super::locks`]).

use std::fs;
use std::sync::PoisonError;

use pgcmk_agent::contract::invocation::{signal, AgentSignal};
use pgcmk_agent::contract::server_dir::{read_json, write_json_atomic};
use pgcmk_agent::contract::{AgentConfig, KekAccess, ServerDir};
use pgcmk_keyprovider::{KeyEncryptionKey, WrappedDek};

use super::Platform;
use crate::error::{IoContext, StateConflict};
use crate::model::{Actor, Encryption, ServerRecord, ServerState};
use crate::node_agent::NodeAgent;
use crate::supervisor::Supervised;
use crate::validate::{self, Requirements};
use crate::Error;

impl Platform {
    /// Stops the server: PostgreSQL, mount and agent. The DEK leaves memory.
    pub fn stop(&self, name: &str) -> Result<ServerRecord, Error> {
        let _guard = self.locks.lock(name);
        let server = self.store.server(name)?;
        if server.state == ServerState::Stopped {
            return Err(StateConflict::AlreadyStopped(name.into()).into());
        }
        self.require_hosts_online(&server)?;
        for node in self.nodes_of(&server)? {
            if node.state != ServerState::Stopped {
                self.stop(&node.name)?;
            }
        }
        self.stop_agent(&server.id);
        self.set_state(&server, ServerState::Stopped, "stopped by the DBA")?;
        self.store.server(&server.id)
    }

    /// Starts a server that does not serve — stopped, failed, inaccessible,
    /// waiting for its agent's restart — at once, with a new agent, and waits
    /// until it is Ready (or says why not). A key version the vault refuses is
    /// found before any agent runs: the server stays as it was, and the error
    /// names the version and the fix.
    pub fn start(&self, name: &str) -> Result<ServerRecord, Error> {
        let _guard = self.locks.lock(name);
        let server = self.store.server(name)?;
        self.require_hosts_online(&server)?;
        if !server.nodes.is_empty() {
            return self.start_nodes(&server);
        }
        let running = self
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&server.id)
            .and_then(Supervised::live_agent)
            .map(NodeAgent::pid);
        match (&server.state, running) {
            (ServerState::Deleting, _) => {
                return Err(StateConflict::BeingDeleted(name.into()).into())
            }
            (ServerState::Ready | ServerState::Provisioning, Some(pid)) => {
                return Err(StateConflict::Running {
                    server: name.into(),
                    state: server.state.name(),
                    pid,
                }
                .into())
            }
            // An agent that is up but cannot serve is replaced, and one waiting for
            // its restart is not restarted by supervision meanwhile.
            _ => self.stop_agent(&server.id),
        }
        // A server on a host: its directory is there, and its agent refuses.
        if server.host.is_none() && !ServerDir::new(&server.dir).is_provisioned() {
            return Err(StateConflict::NeverProvisioned(name.into()).into());
        }
        self.check_key_before_start(&server)?;
        self.set_state(&server, ServerState::Provisioning, "started by the DBA")?;
        let server = self.store.server(&server.id)?;
        self.spawn_agent(&server, None)?;
        self.wait_settled(&server)?;
        self.store.server(&server.id)
    }

    /// Starts every node of a highly available server that does not serve.
    fn start_nodes(&self, server: &ServerRecord) -> Result<ServerRecord, Error> {
        if server.state == ServerState::Deleting {
            return Err(StateConflict::BeingDeleted(server.name.clone()).into());
        }
        self.set_state(server, ServerState::Provisioning, "started by the DBA")?;
        for node in self.nodes_of(server)? {
            if node.state != ServerState::Ready {
                self.start(&node.name)?;
            }
        }
        self.supervise_once();
        self.store.server(&server.id)
    }

    /// Asks the server's agent (each node's, for a highly available server) to
    /// check its key now.
    pub fn revalidate(&self, name: &str) -> Result<ServerRecord, Error> {
        let server = self.store.server(name)?;
        for node in self.nodes_of(&server)? {
            self.revalidate(&node.name)?;
        }
        if !server.nodes.is_empty() {
            return Ok(server);
        }
        self.local_only(&server, "revalidate")?;
        let pid = self
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&server.id)
            .and_then(Supervised::live_agent)
            .map(NodeAgent::pid)
            .ok_or_else(|| StateConflict::NotRunning(name.into()))?;
        signal(pid, AgentSignal::CheckKeyNow).ctx(|| "signalling the agent")?;
        self.event(
            &server,
            Actor::Dba,
            "revalidate requested",
            "key check requested by the DBA",
        )?;
        Ok(server)
    }

    /// Deletes the server: stops it and removes its directory and row.
    pub fn delete(&self, name: &str) -> Result<(), Error> {
        let _guard = self.locks.lock(name);
        let server = self.store.server(name)?;
        self.refuse_with_replicas(name)?;
        self.require_hosts_online(&server)?;
        self.set_state(&server, ServerState::Deleting, "deleted by the DBA")?;
        self.stop_agent(&server.id);
        if server.host.is_some() {
            self.remove_from_host(&server);
            return Ok(());
        }
        self.finish_delete(&server)
    }

    pub(super) fn finish_delete(&self, server: &ServerRecord) -> Result<(), Error> {
        let dir = ServerDir::new(&server.dir);
        // A highly available server keeps its repository key in its own directory:
        // it goes before its nodes remove the repository's files (crypto-shred first).
        super::backups::shred_repository_keys(&dir)?;
        // Every node stops first, so that no Patroni writes its cluster back; then the
        // cluster's keys, its etcd user and role go.
        if !server.nodes.is_empty() {
            for id in &server.nodes {
                self.stop_agent(id);
            }
            self.forget_etcd_cluster_of(server)?;
        }
        // A node already gone (a delete cut short) is skipped; a node on a host is
        // removed there.
        for node in server
            .nodes
            .iter()
            .filter_map(|id| self.store.server(id).ok())
        {
            self.stop_agent(&node.id);
            match node.host {
                Some(_) => self.remove_from_host(&node),
                None => self.finish_delete(&node)?,
            }
        }
        // An agent killed earlier may have left its mount behind.
        dir.detach_stale_mount();
        self.remove_repositories(&dir, &server.id)?;
        if dir.root().exists() {
            fs::remove_dir_all(dir.root()).ctx(|| format!("removing {}", dir.root().display()))?;
        }
        self.store.remove_server(&server.id)?;
        self.event(
            server,
            Actor::Dba,
            "server deleted",
            "directory and state removed",
        )?;
        Ok(())
    }

    /// Moves a customer-managed server to another key (same identity): the DEK is
    /// unwrapped with the old key and wrapped with the new one, which is validated
    /// like at create; the agent restarts with the new key. A highly available
    /// server moves node by node, online ([`super::ha_key`]).
    pub fn update_key(&self, name: &str, key_url: &str) -> Result<ServerRecord, Error> {
        let _guard = self.locks.lock(name);
        let server = self.store.server(name)?;
        let Encryption::CustomerManaged { identity, .. } = &server.encryption else {
            return Err(Error::BadRequest(format!(
                "server '{name}' uses service-managed encryption: the key can only be changed \
                 for customer-managed servers (chosen at create)"
            )));
        };
        if server.node_of.is_some() {
            return Err(Error::BadRequest(format!(
                "'{name}' is a node of a highly available server: change the key of the \
                 server itself"
            )));
        }
        self.local_only(&server, "changing the key")?;
        if !server.nodes.is_empty() {
            return self.update_ha_key(&server, identity, key_url);
        }
        let dir = ServerDir::new(&server.dir);
        let mut config: AgentConfig = read_json(&dir.agent_config())?;
        let secret = self.identity_secret(&server)?;
        let old = config.kek.connect(secret.clone())?;
        let (new_access, new) = self.validated_new_key(&server, identity, key_url, &config.kek)?;
        let key = new_access.key.clone();
        let current: WrappedDek = read_json(&dir.wrapped_dek())?;
        let dek = old.unwrap(&current)?;
        let wrapped = new.wrap(&dek)?;
        drop(dek);
        // The backups move to the new key too (their repository key, like the DEK).
        let backup_key = match read_json::<WrappedDek>(&dir.wrapped_backup_key()) {
            Ok(current) => {
                let key = old.unwrap(&current)?;
                Some(new.wrap(&key)?)
            }
            Err(_) => None,
        };
        self.stop_agent(&server.id);
        write_json_atomic(&dir.wrapped_dek(), &wrapped)?;
        if let Some(backup_key) = &backup_key {
            write_json_atomic(&dir.wrapped_backup_key(), backup_key)?;
        }
        config.kek = new_access;
        write_json_atomic(&dir.agent_config(), &config)?;
        let updated = self.store.update_server(&server.id, |s| {
            s.wrapped_dek = wrapped.clone();
            s.encryption = Encryption::CustomerManaged {
                identity: identity.clone(),
                key: key.clone(),
            };
            s.state = ServerState::Provisioning;
        })?;
        self.event(
            &server,
            Actor::Dba,
            "key changed",
            &format!("now {key}, DEK wrapped by {}", wrapped.kek),
        )?;
        self.spawn_agent(&updated, None)?;
        self.wait_settled(&updated)?;
        self.store.server(&server.id)
    }

    /// The access to key `key_url` of `identity`, reached like `current` (same
    /// vault service and identity) with `record`'s credential, and the key itself:
    /// validated end to end (a throwaway DEK wrapped and unwrapped, the create
    /// rules) before anything changes, so a key that would lock the server out is
    /// refused while the server is untouched.
    pub(super) fn validated_new_key(
        &self,
        record: &ServerRecord,
        identity: &str,
        key_url: &str,
        current: &KekAccess,
    ) -> Result<(KekAccess, Box<dyn KeyEncryptionKey>), Error> {
        let access = KekAccess {
            key: self.customer_key(identity, key_url)?,
            ..current.clone()
        };
        let kek = access
            .connect(self.identity_secret(record)?)
            .map_err(|e| Error::BadRequest(e.to_string()))?;
        validate::new_wrapped_dek(
            kek.as_ref(),
            identity,
            &Requirements {
                customer_managed: true,
                location: &record.location,
            },
        )?;
        Ok((access, kek))
    }

    /// Stops every agent (used when the control plane shuts down for good in tests;
    /// a normal control plane exit leaves agents running for re-attachment).
    pub fn stop_all_agents(&self) {
        let ids: Vec<String> = self
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for id in ids {
            self.stop_agent(&id);
        }
    }
}
