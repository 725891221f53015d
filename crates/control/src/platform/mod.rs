//! The control plane's core: creates, stops, starts and deletes servers, spawns
//! and supervises their node agents, and keeps the state store in step with what
//! the agents report. The REST API ([`crate::api`]) is a thin layer over this.
//!
//! | file               | concept                                                   |
//! |--------------------|-----------------------------------------------------------|
//! | `mod.rs`           | the platform: opening the state, reading, events, states  |
//! | `create.rs`        | a create request, its encryption, the create              |
//! | `lifecycle.rs`     | stop, start, revalidate, delete, key change               |
//! | `locks.rs`         | per-server locks and name reservations                    |
//! | `spawn.rs`         | starting, re-attaching to and stopping agents             |
//! | `supervise.rs`     | supervision passes, waiting for Ready                     |
//! | `tasks.rs`         | short-lived agent runs: key adoption, logs, fsck, password|
//! | `vault_follow.rs`  | following the vault service's address                     |
//! | `names.rs`         | server names and locations                                |
//! | `listen.rs`        | listen addresses: checked, changed                        |
//! | `replicas.rs`      | read replicas: create, list, promote                      |
//! | `backup_store.rs`  | where repositories are kept: directories or Azure Blob    |
//! | `backup_settings.rs`| retention and schedule: chosen at create, changed later  |
//! | `geo.rs`           | the geo-redundant copy of the backups: its key, its place |
//! | `geo_update.rs`    | adding a geo-redundant copy to a server, removing one     |
//! | `ha_create.rs`     | creating a highly available server (nodes, DEKs, Patroni) |
//! | `ha.rs`            | HA servers' state, roles, connection string, failover     |
//! | `ha_roll.rs`       | an HA server's nodes restarted one by one with a change   |
//! | `hosts.rs`         | enrolling hosts, their registrations and heartbeats       |
//! | `host_assignments.rs` | servers on hosts: placing, the heartbeat's assignments |
//! | `remote_agent.rs`  | agents on hosts as supervision sees them                  |
//! | `host_tasks.rs`    | agent tasks of servers on hosts, and their answers        |

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use pgcmk_agent::contract::backup::AzureStore;
use pgcmk_agent::contract::invocation::Observability;
use pgcmk_agent::contract::VaultEndpoints;
use pgcmk_crypto::SecretBytes;
use pgcmk_keyprovider::KeyReference;

use crate::api_tls;
use crate::auth::DbaAuth;
use crate::error::IoContext;
use crate::model::{Actor, Encryption, Event, ServerRecord, ServerState};
use crate::root_key::{ControlKeys, IdentitySecrets, RootKeySource};
use crate::servers_ca::ServersCa;
use crate::store::{Store, PLATFORM_IDENTITY};
use crate::supervisor::Supervised;
use crate::Error;

mod backup_settings;
mod backup_store;
mod backups;
mod create;
mod etcd_keys;
mod geo;
mod geo_update;
mod ha;
mod ha_access;
mod ha_backups;
mod ha_create;
mod ha_disable;
mod ha_key;
mod ha_roll;
mod ha_update;
mod host_assignments;
mod host_keys;
mod host_tasks;
mod hosts;
mod lifecycle;
mod listen;
mod locks;
mod names;
mod observe;
mod remote_agent;
mod replicas;
mod restore;
mod spawn;
mod supervise;
mod tasks;
mod vault_follow;

pub use backup_settings::BackupSettingsChange;
pub use backups::{BackupKeys, CreateBackup, VerifyBackups};
pub use create::{CreateServer, Created, KeyChoice};
pub use geo::GeoBackupChoice;
pub use geo_update::GeoBackupChange;
pub use ha::{FailoverRequest, HaError};
pub use ha_update::{HaUpdateError, HighAvailability, HighAvailabilityChange};
pub use hosts::AdmittedHost;
pub use observe::ServerObservation;
pub use replicas::CreateReplica;
pub use restore::RestoreServer;
pub use tasks::{LogStream, LogStreamItem, LogStreamStopper, PasswordChanged};

/// The platform's settings.
#[derive(Clone, Debug)]
pub struct PlatformConfig {
    /// Where the state store and the servers' directories live.
    pub state_dir: PathBuf,
    /// The names the REST API's certificate adds to the loopback ones (`pgcmk
    /// serve --api-name`): what clients and hosts on other machines reach it by.
    pub api_names: Vec<String>,
    /// The vault service's identity endpoint and CA certificate at start.
    pub vault: VaultEndpoints,
    /// The vault service's data directory: only its `service.json` (the public
    /// endpoints and CA) is read, and followed when the service moves. Nothing else
    /// there — in particular no administrator's credential — is used.
    pub vault_service_dir: Option<PathBuf>,
    /// The platform key for service-managed encryption.
    pub platform_key: KeyReference,
    /// The platform identity's client id.
    pub platform_client_id: String,
    /// The platform identity's secret: needed on first start, then kept sealed in
    /// the state (given again, it replaces the stored one).
    pub platform_identity_secret: Option<SecretBytes>,
    /// Where the root key that seals identity secrets comes from.
    pub root_key: RootKeySource,
    /// Time between key checks.
    pub interval: Duration,
    /// Transient key failures tolerated for this long.
    pub grace: Duration,
    /// The `pgcmk` program, run as `pgcmk agent --server-dir DIR --instance NAME`.
    pub agent_program: PathBuf,
    /// The PKCS#11 modules that customers' keys may name (`module-path=`); none by
    /// default, since a module is code loaded into the control plane and agents.
    pub pkcs11_modules: Vec<PathBuf>,
    /// The CA files that KMIP keys may name (`ca-file=`) to trust their server by;
    /// none by default, since a CA decides which servers receive the DEKs to wrap.
    pub kmip_ca_files: Vec<PathBuf>,
    /// What agents show of themselves: metrics on a free loopback port (when the
    /// control plane serves metrics, its `/agents` says where), JSON logs.
    pub agent_observability: Observability,
    /// Keep new servers' backup repositories in this Azure Blob Storage container
    /// instead of local directories.
    pub backup_store: Option<AzureStore>,
    /// The storage account's shared key: needed on first start with
    /// `backup_store`, then kept sealed in the state (given again, it replaces it).
    pub backup_store_key: Option<SecretBytes>,
    /// Keep new geo-redundant copies in this Azure Blob Storage container (of a
    /// storage account in the paired location) instead of local directories.
    pub geo_backup_store: Option<AzureStore>,
    /// That account's shared key, as `backup_store_key`.
    pub geo_backup_store_key: Option<SecretBytes>,
    /// An existing etcd cluster's client endpoints for highly available servers;
    /// `None`: the control plane runs its own 3-member cluster ([`crate::etcd`]).
    pub etcd_endpoints: Option<Vec<String>>,
    /// With `etcd_endpoints`: the existing cluster's CA, and the client certificate
    /// and key the control plane and every node's Patroni use there.
    pub etcd_tls: Option<crate::etcd_tls::GivenEtcdTls>,
    /// How long the local etcd members' certificates live
    /// ([`crate::etcd_tls::MEMBER_LIFETIME`]; shorter only in tests that watch
    /// them renewed).
    pub etcd_member_lifetime: Duration,
}

/// The control plane.
pub struct Platform {
    config: PlatformConfig,
    store: Store,
    secrets: IdentitySecrets,
    /// The REST API's TLS configuration (its CA certificate is `STATE/ca.pem`).
    tls: Arc<rustls::ServerConfig>,
    /// Issues the nodes' TLS certificates (its certificate is `STATE/servers-ca.pem`).
    servers_ca: ServersCa,
    dba: DbaAuth,
    /// The DBA credential file, when this start created it.
    new_dba_credential: Option<PathBuf>,
    /// Every server that should run, by id: its agent and how it is supervised.
    agents: Mutex<HashMap<String, Supervised>>,
    /// Where agents reach the vault service now (see [`Platform::follow_vault_service`]).
    vault: RwLock<VaultEndpoints>,
    /// Serializes the operations on each server ([`locks`]).
    locks: locks::ServerLocks,
    /// Serializes supervision passes, so that one report becomes one event.
    supervision: Mutex<()>,
    /// The local etcd cluster of highly available servers, once there is one.
    etcd: Mutex<Option<crate::etcd::EtcdCluster>>,
    /// Issues the local etcd cluster's certificates (its certificate is
    /// `STATE/etcd-ca.pem`).
    etcd_ca: crate::etcd_tls::EtcdCa,
    /// Serializes the administration of etcd's users ([`etcd_keys`]): handshakes
    /// of nodes on hosts are built by concurrent heartbeats, and each makes its
    /// root's and its server's password at their first use.
    etcd_users: Mutex<()>,
    /// The heartbeats heard from hosts since this start (never from a file).
    host_presence: Arc<crate::hosts::HostPresence>,
    /// What the plane wants of the servers on hosts, and what the hosts relayed.
    relay: Arc<remote_agent::HostRelay>,
    /// Agent tasks queued for hosts and their answers.
    host_tasks: host_tasks::HostTasks,
}

impl Platform {
    /// Opens the state in `config.state_dir` and brings every server that should
    /// run back: re-attaches to agents still running, restarts the others.
    pub fn open(config: PlatformConfig) -> Result<Self, Error> {
        fs::create_dir_all(config.state_dir.join("servers"))
            .ctx(|| format!("creating {}", config.state_dir.display()))?;
        // PostgreSQL (another user) must traverse to its mount and socket.
        fs::create_dir_all(config.state_dir.join("backups"))
            .ctx(|| format!("creating {}", config.state_dir.display()))?;
        for dir in [
            config.state_dir.clone(),
            config.state_dir.join("servers"),
            config.state_dir.join("backups"),
        ] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o711))
                .ctx(|| format!("setting permissions of {}", dir.display()))?;
        }
        let store = Store::open(&config.state_dir.join("state.redb"))?;
        let keys = ControlKeys::open(&config.state_dir, &store, config.root_key.clone())?;
        let secrets = keys.identity_secrets;
        let tls = api_tls::server_config(&config.state_dir, &store, &keys.tls, &config.api_names)?;
        let servers_ca = ServersCa::open(&config.state_dir, &store, keys.servers_ca)?;
        let etcd_ca = crate::etcd_tls::EtcdCa::open(
            &config.state_dir,
            &store,
            keys.etcd_ca,
            config.etcd_member_lifetime,
        )?;
        match &config.platform_identity_secret {
            Some(secret) => secrets.put(&store, PLATFORM_IDENTITY, secret)?,
            None => drop(secrets.get(&store, PLATFORM_IDENTITY)?),
        }
        backup_store::open_storage_keys(&secrets, &store, &config)?;
        let (dba, new_dba_credential) = DbaAuth::open(&config.state_dir, &store)?;
        let vault = RwLock::new(config.vault.clone());
        let etcd = Mutex::new(crate::etcd::EtcdCluster::existing(
            &config.state_dir.join("etcd"),
        )?);
        let platform = Self {
            config,
            store,
            secrets,
            tls,
            servers_ca,
            dba,
            new_dba_credential,
            agents: Mutex::new(HashMap::new()),
            vault,
            locks: locks::ServerLocks::default(),
            supervision: Mutex::new(()),
            etcd,
            etcd_ca,
            etcd_users: Mutex::new(()),
            host_presence: Arc::default(),
            relay: Arc::default(),
            host_tasks: host_tasks::HostTasks::default(),
        };
        platform.supervise_etcd();
        for server in platform.store.servers()? {
            match server.state {
                ServerState::Stopped | ServerState::Deleting if server.host.is_some() => {
                    platform.keep_remote_at_rest(&server)
                }
                ServerState::Stopped => {}
                ServerState::Deleting => platform.finish_delete(&server)?,
                // A highly available server has no agent of its own: its nodes do.
                _ if !server.nodes.is_empty() => {}
                _ => platform.attach_or_spawn(&server)?,
            }
        }
        Ok(platform)
    }

    /// The state store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The REST API's TLS server configuration.
    pub fn tls_config(&self) -> Arc<rustls::ServerConfig> {
        self.tls.clone()
    }

    /// The CA certificate clients of the REST API trust (`STATE/ca.pem`).
    pub fn ca_file(&self) -> PathBuf {
        self.config.state_dir.join(api_tls::CA_FILE)
    }

    /// True when `token` is the DBA's API credential.
    pub fn dba_allows(&self, token: &[u8]) -> bool {
        self.dba.allows(token)
    }

    /// The DBA credential file, when this start created it (first start).
    pub fn new_dba_credential(&self) -> Option<&Path> {
        self.new_dba_credential.as_deref()
    }

    /// The secret of the identity the server's agent acts as.
    pub(super) fn identity_secret(&self, server: &ServerRecord) -> Result<SecretBytes, Error> {
        let owner = match server.encryption {
            Encryption::ServiceManaged => PLATFORM_IDENTITY,
            Encryption::CustomerManaged { .. } => &server.id,
        };
        self.secrets.get(&self.store, owner)
    }

    /// All servers (a highly available server's nodes are in its `show`).
    pub fn list(&self) -> Result<Vec<ServerRecord>, Error> {
        let mut servers = self.store.servers()?;
        servers.retain(|s| s.node_of.is_none());
        Ok(servers)
    }

    /// One server and its events.
    pub fn show(&self, name: &str) -> Result<(ServerRecord, Vec<Event>), Error> {
        let server = self.store.server(name)?;
        let events = self.store.events(&server.id)?;
        Ok((server, events))
    }

    /// The CA certificate that PostgreSQL's clients trust (`STATE/servers-ca.pem`).
    pub fn servers_ca_file(&self) -> &Path {
        self.servers_ca.file()
    }

    /// A libpq connection URI for the server (the password is not included): its
    /// first listen address, TLS with the certificate verified against the servers
    /// CA for that address (`sslmode=verify-full`).
    pub fn connection_string(&self, name: &str) -> Result<String, Error> {
        let s = self.store.server(name)?;
        if !s.nodes.is_empty() {
            return self.ha_connection_string(&s);
        }
        Ok(self.connection_string_of(&s))
    }

    /// [`Platform::connection_string`] of a server read already.
    ///
    /// The CA file's path is percent-encoded as a URI query value wants, its `/`
    /// kept readable.
    pub fn connection_string_of(&self, server: &ServerRecord) -> String {
        let host = match server.listen_addresses.first() {
            Some(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
            Some(v4) => v4.to_string(),
            None => pgcmk_agent::postgres::tls::LOOPBACK.to_string(),
        };
        format!(
            "postgresql://postgres@{host}:{}/postgres?sslmode=verify-full&sslrootcert={}",
            server.port,
            uri_component(&self.servers_ca_file().display().to_string())
        )
    }

    pub(super) fn event(
        &self,
        record: &ServerRecord,
        who: Actor,
        what: &str,
        why: &str,
    ) -> Result<Event, Error> {
        let who = who.as_str();
        tracing::info!(server = %record.name, who, what, why, "event");
        self.store.append_event(&record.id, who, what, why)
    }

    /// Moves the server from the state it had when read (`server.state`) to `to`,
    /// recorded as an event caused by `who`. A no-op when it is in `to` already, or
    /// when its state changed since it was read: a supervision pass does not undo
    /// what a DBA did meanwhile (a stop, a delete).
    pub(super) fn transition(
        &self,
        server: &ServerRecord,
        to: ServerState,
        who: Actor,
        why: &str,
    ) -> Result<(), Error> {
        if server.state == to {
            return Ok(());
        }
        let mut moved = false;
        self.store.update_server(&server.id, |s| {
            if s.state == server.state {
                s.state = to.clone();
                moved = true;
            }
        })?;
        if moved {
            crate::metrics::transition(&server.state, &to);
            let what = format!("state {} -> {}", server.state.name(), to.name());
            self.event(server, who, &what, why)?;
        }
        Ok(())
    }

    pub(super) fn set_state(
        &self,
        server: &ServerRecord,
        state: ServerState,
        why: &str,
    ) -> Result<(), Error> {
        self.store
            .update_server(&server.id, |s| s.state = state.clone())?;
        if server.state != state {
            crate::metrics::transition(&server.state, &state);
        }
        self.event(
            server,
            Actor::Dba,
            &format!("state {} -> {}", server.state.name(), state.name()),
            why,
        )?;
        Ok(())
    }
}

/// `text` as a URI query value, its `/` kept (a path stays readable).
pub(super) fn uri_component(text: &str) -> String {
    pgcmk_console::html::percent_encoded(text, b"/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_in_uris_keep_slashes_and_escape_the_rest() {
        assert_eq!(
            uri_component("/var/lib/pgcmk/servers-ca.pem"),
            "/var/lib/pgcmk/servers-ca.pem"
        );
        assert_eq!(uri_component("/tmp/a b&c=d"), "/tmp/a%20b%26c%3Dd");
    }
}
