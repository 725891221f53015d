//! Making a single server highly available and back, online: `pgcmk server
//! update NAME --high-availability enabled|disabled`
//! (`docs/high-availability.md`, "Enabling and disabling").
//!
//! Enabling keeps the server's record (its id, name, events, backups and key);
//! its own directory — volume, DEK, data — becomes its first node, on its address
//! and port, so the old connection string still reaches it while it is the
//! primary. Patroni takes over its data directory; then a second node with its
//! own DEK under the server's KEK is cloned into its own encrypted mount and
//! becomes the synchronous standby. Disabling ([`super::ha_disable`]) keeps the
//! current primary's directory as the single server's and removes the other node:
//! its agent, mount, DEK, directory and the cluster's keys in etcd.
//!
//! Every step is committed before the next starts, and a server and its nodes
//! change shape in one store transaction, so a control plane killed at any point
//! leaves either the server as it was, or a highly available server with one node
//! that serves: running the same command again finishes the change, the opposite
//! command undoes it.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use pgcmk_agent::contract::server_dir::{read_json, write_json_atomic};
use pgcmk_agent::contract::{AgentConfig, ServerDir};
use pgcmk_agent::postgres::tls::LOOPBACK;
use pgcmk_crypto::SecretBytes;
use serde::{Deserialize, Serialize};

use super::create::{hex_id, new_wrapped_dek, FirstStart};
use super::ha_create::{new_node, node_name, NodeParent, NodePlace};
use super::listen::free_port;
use super::supervise::READY_TIMEOUT;
use super::Platform;
use crate::model::{now_rfc3339, Actor, Encryption, NodeOf, ServerRecord, ServerState};
use crate::store::replication_owner;
use crate::Error;

/// The mode `server update --high-availability` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HighAvailability {
    /// A primary and a synchronous standby under Patroni.
    Enabled,
    /// A single server.
    Disabled,
}

/// The body of `PUT /servers/{name}/high-availability`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HighAvailabilityChange {
    /// The mode asked for.
    pub high_availability: HighAvailability,
}

/// Why a server's high availability could not be changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HaUpdateError {
    /// Enabling on a server that has its standby already.
    #[error("server '{0}' is already highly available: nothing to change")]
    AlreadyEnabled(String),
    /// Disabling on a single server.
    #[error("server '{0}' is not highly available: nothing to change")]
    AlreadyDisabled(String),
    /// A read replica follows its source; it has no standby of its own.
    #[error(
        "server '{0}' is a read replica: promote it first (`pgcmk server replica promote {0}`)"
    )]
    ReadReplica(String),
    /// The change is made on a serving server only.
    #[error(
        "server '{server}' is {state}: high availability is changed on a Ready server \
         (`pgcmk server show {server}` says why it is not)"
    )]
    NotReady {
        /// The server's name.
        server: String,
        /// Its state's name.
        state: &'static str,
    },
    /// A node did not take its role in time.
    #[error(
        "{node} of server '{server}' was not {role} within {after:?} (see `pgcmk server show \
         {server}` and `pgcmk server logs {node}`); run the same command again to finish, or \
         the opposite one to undo"
    )]
    NodeNotSettled {
        /// The server's name.
        server: String,
        /// The node's name.
        node: String,
        /// The role it was to take, as Patroni names it.
        role: &'static str,
        /// How long it was waited for.
        after: Duration,
    },
}

/// Patroni's name of the primary's role.
pub(super) const LEADER: &str = "leader";
/// Patroni's name of the synchronous standby's role.
pub(super) const SYNC_STANDBY: &str = "sync_standby";

impl Platform {
    /// Enables or disables high availability of server `name` (see the module's
    /// documentation); returns the server afterwards.
    pub fn update_high_availability(
        &self,
        name: &str,
        mode: HighAvailability,
    ) -> Result<ServerRecord, Error> {
        let _guard = self.locks.lock(name);
        let server = self.store.server(name)?;
        if server.node_of.is_some() {
            return Err(Error::BadRequest(format!(
                "'{name}' is a node of a highly available server: update the server itself"
            )));
        }
        if server.replica_of.is_some() {
            return Err(HaUpdateError::ReadReplica(name.into()).into());
        }
        self.local_only(&server, "changing high availability")?;
        // Replicas stream from the server's address, which a failover would move.
        self.refuse_with_replicas(name)?;
        let nodes = server.nodes.len();
        match mode {
            HighAvailability::Enabled
                if nodes >= 2 && self.unfinished_standby(&server)?.is_none() =>
            {
                return Err(HaUpdateError::AlreadyEnabled(name.into()).into())
            }
            HighAvailability::Disabled if nodes == 0 => {
                return Err(HaUpdateError::AlreadyDisabled(name.into()).into())
            }
            _ => {}
        }
        if server.state != ServerState::Ready {
            return Err(HaUpdateError::NotReady {
                server: name.into(),
                state: server.state.name(),
            }
            .into());
        }
        match mode {
            HighAvailability::Enabled => self.enable_ha(server),
            HighAvailability::Disabled => self.disable_ha(server),
        }
    }

    fn enable_ha(&self, server: ServerRecord) -> Result<ServerRecord, Error> {
        self.event(
            &server,
            Actor::Dba,
            "enabling high availability",
            "the server's volume and DEK become its first node, under Patroni; a second node \
             with its own DEK is cloned from it and becomes the synchronous standby",
        )?;
        let server = match server.nodes.is_empty() {
            true => self.adopt_as_first_node(&server)?,
            // A change cut short: its first node serves already.
            false => server,
        };
        let first = self.store.server(&server.nodes[0])?;
        self.run_under_patroni(&server, &first)?;
        if let Some(unfinished) = self.unfinished_standby(&server)? {
            self.remove_node(&server, &unfinished, "it had not come up; it is made again")?;
        }
        let second = self.add_standby(&server, &first)?;
        self.event(
            &server,
            Actor::ControlPlane,
            "high availability enabled",
            &format!(
                "{} is the primary, {} its synchronous standby",
                first.name, second.name
            ),
        )?;
        self.store.server(&server.id)
    }

    /// Makes the single `server` a highly available one whose one node is the
    /// server's own directory (volume, DEK, data, address and port); its agent is
    /// stopped, the node's is not started yet.
    fn adopt_as_first_node(&self, server: &ServerRecord) -> Result<ServerRecord, Error> {
        // The role Patroni replicates and rewinds as, while the server still serves.
        self.set_replication_role(server, server)?;
        let endpoints = self.etcd_endpoints()?;
        // A cluster of this name left by an earlier disable is forgotten first.
        self.forget_etcd_cluster(&server.id, &endpoints)?;
        let ip = server.listen_addresses.first().copied().unwrap_or(LOOPBACK);
        let node = ServerRecord {
            id: hex_id()?,
            name: node_name(&server.name, 1),
            state: ServerState::Provisioning,
            listen_addresses: vec![ip],
            created_at: now_rfc3339(),
            node_of: Some(NodeOf {
                server_id: server.id.clone(),
                address: ip.to_string(),
                rest_port: free_port(&[ip])?,
            }),
            host: None,
            ..server.clone()
        };
        let sealed = self.sealed_for(&server.id, &node)?;
        let adopted = ServerRecord {
            state: ServerState::Provisioning,
            nodes: vec![node.id.clone()],
            ..server.clone()
        };
        self.stop_agent(&server.id);
        self.store
            .reshape_servers(&[(&adopted, None), (&node, sealed.as_deref())], &[])?;
        self.event(
            &adopted,
            Actor::ControlPlane,
            "node added",
            &format!(
                "{} on {ip}:{}: the server's own volume and DEK, wrapped by {}",
                node.name, node.port, node.wrapped_dek.kek
            ),
        )?;
        Ok(adopted)
    }

    /// Makes sure `first` (a node on the server's former directory) runs Patroni,
    /// and waits until it is the primary.
    fn run_under_patroni(&self, server: &ServerRecord, first: &ServerRecord) -> Result<(), Error> {
        let dir = ServerDir::new(&first.dir);
        let mut config: AgentConfig = read_json(&dir.agent_config())?;
        if config.ha.is_none() {
            // A control plane that restarted meanwhile may run it as a single server.
            self.stop_agent(&first.id);
            config.ha = self.ha_node(first, &self.etcd_endpoints()?, true);
            config.listen_addresses = first.listen_addresses.clone();
            write_json_atomic(&dir.agent_config(), &config)?;
        }
        if !self.is_supervised(&first.id) {
            self.spawn_agent(first, None)?;
        }
        self.wait_role(server, first, LEADER)
    }

    /// Clones a second node of `server` from `first` into its own encrypted mount
    /// under a DEK of its own, and waits until it is the synchronous standby. On a
    /// failure the node is removed again.
    fn add_standby(
        &self,
        server: &ServerRecord,
        first: &ServerRecord,
    ) -> Result<ServerRecord, Error> {
        // Read before anything changes: without it the node could not replicate.
        let replication = self
            .secrets
            .get(&self.store, &replication_owner(&server.id))?;
        let first_config = read_json::<AgentConfig>(&ServerDir::new(&first.dir).agent_config())?;
        let access = first_config.kek;
        // The server's backups go on from whichever node is primary, in its stanza.
        let backup = first_config
            .backup
            .map(|b| self.ha_backup_config(server, b.settings()));
        let kek = access
            .connect(self.identity_secret(first)?)
            .map_err(|e| Error::BadRequest(e.to_string()))?;
        let wrapped = new_wrapped_dek(kek.as_ref(), &access, &first.encryption, &first.location)?;
        let taken = first.listen_addresses.first().copied();
        let ip = [2, 3]
            .map(|host| IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)))
            .into_iter()
            .find(|ip| Some(*ip) != taken)
            .unwrap_or(LOOPBACK);
        let parent = NodeParent {
            name: &server.name,
            id: &server.id,
            location: &server.location,
            encryption: &server.encryption,
        };
        let place = NodePlace { ip, host: None };
        let second = new_node(&parent, 2, place, wrapped, &self.config.state_dir)?;
        let with_standby = ServerRecord {
            nodes: vec![first.id.clone(), second.id.clone()],
            listen_addresses: vec![first.listen_addresses[0], ip],
            ..self.store.server(&server.id)?
        };
        let sealed = self.sealed_for(&first.id, &second)?;
        let added = self
            .write_node_dir(&second, access, &self.etcd_endpoints()?, true, backup)
            .and_then(|()| {
                self.store
                    .reshape_servers(&[(&with_standby, None), (&second, sealed.as_deref())], &[])
            });
        if let Err(e) = added {
            let _ = fs::remove_dir_all(&second.dir);
            return Err(e);
        }
        self.event(
            server,
            Actor::ControlPlane,
            "node added",
            &format!(
                "{} on {ip}:{} with its own DEK, wrapped by {}; cloned from {}",
                second.name, second.port, second.wrapped_dek.kek, first.name
            ),
        )?;
        let first_start = FirstStart {
            // The node stores no superuser password (its HaNode says adopted).
            password: SecretBytes::new(hex_id()?.into_bytes()),
            source_identity_secret: None,
            replication_password: Some(replication),
        };
        let started = self
            .spawn_agent(&second, Some(&first_start))
            .and_then(|()| self.wait_role(server, &second, SYNC_STANDBY));
        if let Err(e) = started {
            self.remove_node(server, &second, &format!("its start failed: {e}"))?;
            return Err(e);
        }
        self.store.server(&second.id)
    }

    /// The second node of a server made highly available by an update that was cut
    /// short before the node came up (its agent may lack its first start).
    fn unfinished_standby(&self, server: &ServerRecord) -> Result<Option<ServerRecord>, Error> {
        let Some(second) = server.nodes.get(1) else {
            return Ok(None);
        };
        let updated = self
            .store
            .sealed_identity_secret(&replication_owner(&server.id))?
            .is_some();
        let second = self.store.server(second)?;
        let adopted = read_json::<AgentConfig>(&ServerDir::new(&second.dir).agent_config())
            .map_or(updated, |c| c.ha.is_some_and(|n| n.adopted));
        Ok((adopted && second.state != ServerState::Ready).then_some(second))
    }

    /// For a customer-managed server: `to`'s copy of the identity's secret that
    /// `from` holds, sealed for `to` (service-managed: none).
    pub(super) fn sealed_for(
        &self,
        from: &str,
        to: &ServerRecord,
    ) -> Result<Option<Vec<u8>>, Error> {
        match to.encryption {
            Encryption::ServiceManaged => Ok(None),
            Encryption::CustomerManaged { .. } => {
                let secret = self.secrets.get(&self.store, from)?;
                self.secrets.seal(&to.id, &secret).map(Some)
            }
        }
    }

    /// Whether the agent of server `id` is supervised (running or due a restart).
    pub(super) fn is_supervised(&self, id: &str) -> bool {
        self.agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(id)
    }

    /// Supervises until Patroni says `node` of `server` has `role` and the node is
    /// Ready.
    pub(super) fn wait_role(
        &self,
        server: &ServerRecord,
        node: &ServerRecord,
        role: &'static str,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.supervise_once();
            let details = self.node_details(&self.store.server(&server.id)?)?;
            if details.iter().any(|n| {
                n.name == node.name
                    && n.role.as_deref() == Some(role)
                    && n.state == ServerState::Ready
            }) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HaUpdateError::NodeNotSettled {
                    server: server.name.clone(),
                    node: node.name.clone(),
                    role,
                    after: READY_TIMEOUT,
                }
                .into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
