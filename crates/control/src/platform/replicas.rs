//! Read replicas: asynchronous, read-only servers that stream from a source over
//! TLS (`docs/replicas.md`). A replica is a server of its own — its own agent,
//! encrypted volume and DEK, under its own key in its own location (checked like
//! any create) — whose agent clones the source (`pg_basebackup`) and runs
//! PostgreSQL as a hot standby. It connects as the source's replication role,
//! whose password the control plane keeps sealed and hands to the replica's agent
//! in its handshake. Promotion makes it an independent server.
//!
//! The source may be highly available: the role is set on its primary node (it
//! reaches the standby with the WAL), and the replica's connection names every
//! node with `target_session_attrs=read-write`, so it streams from whichever is
//! primary, after a failover too.

use pgcmk_agent::contract::replica::{ReplicaSource, REPLICATION_ROLE};
use pgcmk_agent::contract::server_dir::{read_json, write_json_atomic};
use pgcmk_agent::contract::task::{AgentTask, PasswordReset};
use std::net::SocketAddr;

use pgcmk_agent::contract::{AgentConfig, ServerDir};
use pgcmk_crypto::SecretBytes;
use serde::{Deserialize, Serialize};

use super::create::{hex_id, CreateServer, KeyChoice, Origin, ReplicaOf};
use super::Platform;
use crate::error::StateConflict;
use crate::model::{Actor, ServerRecord, ServerState};
use crate::store::replication_owner;
use crate::Error;

/// A request to create a read replica of a server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateReplica {
    /// The replica's name (a server name).
    pub name: String,
    /// Where it runs (default: the source's location); its key must be there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// How its own DEK is protected.
    #[serde(flatten)]
    pub protection: KeyChoice,
    /// IP addresses of this host it listens on (none: 127.0.0.1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen_addresses: Vec<String>,
}

impl Platform {
    /// Creates a read replica of `source_name` (which must be Ready and no replica
    /// itself): sets the source's replication role, then creates the replica like
    /// any server (its key validated with a real wrap and unwrap), whose agent
    /// clones the source and serves as a hot standby; waits for Ready.
    pub fn create_replica(
        &self,
        source_name: &str,
        req: &CreateReplica,
    ) -> Result<ServerRecord, Error> {
        let (create, origin) = {
            let _guard = self.locks.lock(source_name);
            let source = self.store.server(source_name)?;
            self.local_only(&source, "a read replica")?;
            if let Some(place) = &source.node_of {
                let server = self.store.server(&place.server_id)?;
                return Err(Error::BadRequest(format!(
                    "'{source_name}' is a node of highly available server '{}': make the \
                     replica of the server (`--source {}`), which follows its primary",
                    server.name, server.name
                )));
            }
            if source.replica_of.is_some() {
                return Err(Error::BadRequest(format!(
                    "server '{source_name}' is a read replica: replicas are made of a primary \
                     (promote it first to make it one)"
                )));
            }
            if source.state != ServerState::Ready {
                return Err(StateConflict::NotServing {
                    server: source_name.into(),
                    state: source.state.name(),
                }
                .into());
            }
            // A highly available source: its primary node sets the role.
            let primary = match source.nodes.is_empty() {
                true => source.clone(),
                false => self.primary_node(&source)?,
            };
            self.set_replication_role(&source, &primary)?;
            let nodes = self
                .nodes_of(&source)?
                .iter()
                .filter_map(|n| Some(SocketAddr::new(*n.listen_addresses.first()?, n.port)))
                .collect();
            let create = CreateServer {
                name: req.name.clone(),
                location: req.location.clone().unwrap_or(source.location.clone()),
                protection: req.protection.clone(),
                backup_settings: Default::default(),
                geo_backup: None,
                listen_addresses: req.listen_addresses.clone(),
                high_availability: false,
                host: None,
                hosts: Vec::new(),
            };
            let origin = Origin::Replica(ReplicaOf {
                source_id: source.id.clone(),
                source: ReplicaSource {
                    server: source.name.clone(),
                    host: source
                        .listen_addresses
                        .first()
                        .copied()
                        .unwrap_or(pgcmk_agent::postgres::tls::LOOPBACK),
                    port: source.port,
                    role: REPLICATION_ROLE.into(),
                    ca_file: self.servers_ca_file().to_path_buf(),
                    nodes,
                },
            });
            (create, origin)
        };
        Ok(self.create_server(&create, origin)?.server)
    }

    /// The read replicas of `source_name`.
    pub fn replicas_of(&self, source_name: &str) -> Result<Vec<ServerRecord>, Error> {
        let source = self.store.server(source_name)?;
        Ok(self
            .store
            .servers()?
            .into_iter()
            .filter(|s| s.replica_of.as_deref() == Some(source.id.as_str()))
            .collect())
    }

    /// Refuses (with their names) when read replicas stream from `source_name`.
    pub(super) fn refuse_with_replicas(&self, source_name: &str) -> Result<(), Error> {
        let replicas: Vec<String> = self
            .replicas_of(source_name)?
            .into_iter()
            .map(|r| r.name)
            .collect();
        if replicas.is_empty() {
            return Ok(());
        }
        Err(StateConflict::HasReplicas {
            server: source_name.into(),
            replicas: replicas.join(", "),
        }
        .into())
    }

    /// Makes read replica `name` an independent server: its agent restarts without
    /// its source, PostgreSQL ends recovery on a new timeline and accepts writes,
    /// and its backups start. Waits for Ready.
    pub fn promote(&self, name: &str) -> Result<ServerRecord, Error> {
        let _guard = self.locks.lock(name);
        let server = self.store.server(name)?;
        if server.replica_of.is_none() {
            return Err(Error::BadRequest(format!(
                "server '{name}' is no read replica: only replicas are promoted"
            )));
        }
        let dir = ServerDir::new(&server.dir);
        let mut config: AgentConfig = read_json(&dir.agent_config())?;
        let source = config.replica.take().map(|s| s.server).unwrap_or_default();
        config.backup = Some(self.backup_config(&server.id));
        let running = server.state != ServerState::Stopped;
        if running {
            self.stop_agent(&server.id);
        }
        write_json_atomic(&dir.agent_config(), &config)?;
        let updated = self.store.update_server(&server.id, |s| {
            s.replica_of = None;
            if running {
                s.state = ServerState::Provisioning;
            }
        })?;
        self.event(
            &server,
            Actor::Dba,
            "promoted",
            &format!("no longer a read replica of server '{source}': it accepts writes"),
        )?;
        if running {
            self.spawn_agent(&updated, None)?;
            self.wait_settled(&updated)?;
        }
        self.store.server(&server.id)
    }

    /// The replication password a read replica's agent connects with, or the one
    /// a node of a server made highly available after create hands to Patroni
    /// (none for another server: a created one's nodes keep theirs on their mounts).
    pub(super) fn replication_password(
        &self,
        server: &ServerRecord,
    ) -> Result<Option<SecretBytes>, Error> {
        if let Some(source) = server.replica_of.as_deref() {
            return self
                .secrets
                .get(&self.store, &replication_owner(source))
                .map(Some);
        }
        let Some(place) = &server.node_of else {
            return Ok(None);
        };
        let owner = replication_owner(&place.server_id);
        match self.store.sealed_identity_secret(&owner)? {
            Some(_) => self.secrets.get(&self.store, &owner).map(Some),
            None => Ok(None),
        }
    }

    /// Creates or updates `source`'s replication role through `primary` (the source
    /// itself, or its primary node), with the password kept sealed for its
    /// replicas and standbys (a new random one at the first), and returns that
    /// password.
    pub(super) fn set_replication_role(
        &self,
        source: &ServerRecord,
        primary: &ServerRecord,
    ) -> Result<SecretBytes, Error> {
        let owner = replication_owner(&source.id);
        let password = match self.store.sealed_identity_secret(&owner)? {
            Some(_) => self.secrets.get(&self.store, &owner)?,
            None => {
                let password = SecretBytes::new(hex_id()?.into_bytes());
                self.secrets.put(&self.store, &owner, &password)?;
                password
            }
        };
        let set: PasswordReset =
            self.run_task(primary, &AgentTask::ReplicationRole, Some(password.clone()))?;
        self.event(
            source,
            Actor::Dba,
            "replication role set",
            &format!("role {} for its read replicas and standbys", set.role),
        )?;
        Ok(password)
    }
}
