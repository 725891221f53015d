//! Creating a highly available server: two nodes (a primary and a synchronous
//! standby), each a record of its own with its own directory, address, agent,
//! cryptfs mount and DEK — both DEKs wrapped by the server's KEK through the
//! server's identity — and Patroni on each, over the etcd cluster
//! (`docs/high-availability.md`).
//!
//! The server's own record has no agent: it names its nodes, and its state
//! follows theirs ([`super::ha`]).

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;

use pgcmk_agent::contract::backup::{BackupConfig, BackupSettings};
use pgcmk_agent::contract::server_dir::write_json_atomic;
use pgcmk_agent::contract::{HaNode, KekAccess, ServerDir};
use pgcmk_crypto::SecretBytes;
use pgcmk_keyprovider::WrappedDek;

use super::create::{hex_id, new_wrapped_dek, CreateServer, Created, FirstStart};
use super::listen::free_port;
use super::Platform;
use crate::error::IoContext;
use crate::model::{
    now_rfc3339, Actor, Encryption, NodeOf, SecretString, ServerRecord, ServerState,
};
use crate::store::{geo_owner, PLATFORM_IDENTITY};
use crate::Error;

/// Nodes of a highly available server: a primary and its synchronous standby.
pub(super) const NODES: usize = 2;

impl Platform {
    /// Creates a highly available server (see the module's documentation) and
    /// waits until both nodes are Ready. On any failure nothing is left.
    pub(super) fn create_ha(&self, req: &CreateServer) -> Result<Created, Error> {
        req.check()?;
        if !req.listen_addresses.is_empty() {
            return Err(Error::BadRequest(
                "a highly available server's nodes listen on addresses of their own: create it \
                 without --listen-addresses"
                    .into(),
            ));
        }
        let backup_settings = req.backup_settings.applied_to(BackupSettings::default())?;
        let _reserved = self.locks.reserve(&req.name)?;
        let _guard = self.locks.lock(&req.name);
        if self.store.server(&req.name).is_ok() {
            return Err(Error::NameTaken(req.name.clone()));
        }
        let places = self.node_places(req)?;
        let (encryption, access, secret) = self.encryption_for(&req.protection)?;
        let kek = match &secret {
            Some(secret) => access.connect(secret.clone()),
            None => access.connect(self.secrets.get(&self.store, PLATFORM_IDENTITY)?),
        }
        .map_err(|e| Error::BadRequest(e.to_string()))?;
        // One DEK per node, each validated with a real wrap and unwrap.
        let wrapped = (0..NODES)
            .map(|_| new_wrapped_dek(kek.as_ref(), &access, &encryption, &req.location))
            .collect::<Result<Vec<_>, _>>()?;
        // The server's one backup repository key, made and validated like a DEK.
        let backup_key = new_wrapped_dek(kek.as_ref(), &access, &encryption, &req.location)?;
        let etcd_endpoints = self.etcd_endpoints()?;
        let id = hex_id()?;
        // The server's geo-redundant copy, when asked for: one for the server, its
        // key in the server's directory beside the repository key.
        let geo = req
            .geo_backup
            .as_ref()
            .map(|choice| self.geo_backup_for(&id, &req.location, choice))
            .transpose()?;
        let password = hex_id()?;
        let replication = hex_id()?;
        let mut nodes = Vec::with_capacity(NODES);
        for (i, (wrapped, place)) in wrapped.into_iter().zip(places).enumerate() {
            let parent = NodeParent {
                name: &req.name,
                id: &id,
                location: &req.location,
                encryption: &encryption,
            };
            nodes.push(new_node(
                &parent,
                i + 1,
                place,
                wrapped,
                &self.config.state_dir,
            )?);
        }
        let server = ServerRecord {
            id: id.clone(),
            name: req.name.clone(),
            location: req.location.clone(),
            encryption,
            wrapped_dek: nodes[0].wrapped_dek.clone(),
            state: ServerState::Provisioning,
            port: nodes[0].port,
            listen_addresses: nodes
                .iter()
                .flat_map(|n| n.listen_addresses.clone())
                .collect(),
            replica_of: None,
            dir: self.config.state_dir.join("servers").join(&id),
            created_at: now_rfc3339(),
            nodes: nodes.iter().map(|n| n.id.clone()).collect(),
            node_of: None,
            host: None,
        };
        let written = (|| {
            fs::create_dir(&server.dir).ctx(|| format!("creating {}", server.dir.display()))?;
            write_json_atomic(
                &ServerDir::new(&server.dir).wrapped_backup_key(),
                &backup_key,
            )?;
            self.store.insert_server(&server, None)?;
            if let Some(geo) = &geo {
                write_json_atomic(
                    &ServerDir::new(&server.dir).wrapped_geo_backup_key(),
                    &geo.wrapped_key,
                )?;
                self.secrets
                    .put(&self.store, &geo_owner(&server.id), &geo.secret)?;
            }
            let backup = BackupConfig {
                geo: geo.as_ref().map(|g| g.repository.clone()),
                ..self.ha_backup_config(&server, backup_settings)
            };
            for node in &nodes {
                self.write_node_dir(
                    node,
                    access.clone(),
                    &etcd_endpoints,
                    false,
                    Some(backup.clone()),
                )?;
                let sealed = secret
                    .as_ref()
                    .map(|s| self.secrets.seal(&node.id, s))
                    .transpose()?;
                self.store.insert_server(node, sealed.as_deref())?;
            }
            Ok::<_, Error>(())
        })();
        let first_start = FirstStart {
            password: SecretBytes::new(password.as_bytes().to_vec()),
            source_identity_secret: None,
            replication_password: Some(SecretBytes::new(replication.as_bytes().to_vec())),
        };
        let started = written.and_then(|()| {
            let what = match &geo {
                Some(geo) => format!("{}; {}", describe(&server, &nodes), geo.describe()),
                None => describe(&server, &nodes),
            };
            self.event(&server, Actor::Dba, "server created", &what)?;
            for node in &nodes {
                self.spawn_agent(node, Some(&first_start))?;
            }
            for node in &nodes {
                self.wait_settled(node)?;
            }
            self.supervise_once();
            Ok(())
        });
        if let Err(e) = started {
            for node in &nodes {
                self.stop_agent(&node.id);
                if node.host.is_some() {
                    self.remove_from_host(node);
                    continue;
                }
                let _ = self.store.remove_server(&node.id);
                let _ = fs::remove_dir_all(&node.dir);
            }
            let _ = self.remove_repositories(&ServerDir::new(&server.dir), &server.id);
            let _ = self.store.remove_server(&server.id);
            let _ = fs::remove_dir_all(&server.dir);
            self.event(
                &server,
                Actor::ControlPlane,
                "server removed",
                &format!("create failed: {e}"),
            )?;
            return Err(e);
        }
        Ok(Created {
            server: self.store.server(&id)?,
            password: SecretString::new(password),
        })
    }
}

impl Platform {
    /// Writes the directory of a new `node` (its record made by [`new_node`]): its
    /// `agent.json` — how it reaches the KEK through `access`, its place in the
    /// cluster over `etcd_endpoints`, its backups — and its wrapped DEK. A node on
    /// a host gets its directory there: the plane keeps its `agent.json` for the
    /// host's assignments, and the wrapped DEK goes with them.
    pub(super) fn write_node_dir(
        &self,
        node: &ServerRecord,
        access: KekAccess,
        etcd_endpoints: &[String],
        adopted: bool,
        backup: Option<BackupConfig>,
    ) -> Result<(), Error> {
        let mut config = self.agent_config(node, access);
        config.backup = backup;
        config.ha = self.ha_node(node, etcd_endpoints, adopted);
        if node.host.is_some() {
            return self.store.put_assigned_config(&node.id, &config);
        }
        let dir = ServerDir::new(&node.dir);
        fs::create_dir(dir.root()).ctx(|| format!("creating {}", dir.root().display()))?;
        fs::set_permissions(dir.root(), fs::Permissions::from_mode(0o711))
            .ctx(|| "setting permissions of the node directory")?;
        write_json_atomic(&dir.agent_config(), &config)?;
        write_json_atomic(&dir.wrapped_dek(), &node.wrapped_dek)?;
        Ok(())
    }

    /// `node`'s place in its server's Patroni cluster (none for another record).
    pub(super) fn ha_node(
        &self,
        node: &ServerRecord,
        etcd_endpoints: &[String],
        adopted: bool,
    ) -> Option<HaNode> {
        let place = node.node_of.as_ref()?;
        Some(HaNode {
            scope: place.server_id.clone(),
            name: node.name.clone(),
            address: place.address.clone(),
            rest_port: place.rest_port,
            etcd_endpoints: etcd_endpoints.to_vec(),
            ca_file: self.servers_ca_file().to_path_buf(),
            etcd_ca_file: Some(self.etcd_ca_file()),
            adopted,
        })
    }
}

/// What a new node takes from its server.
pub(super) struct NodeParent<'a> {
    pub(super) name: &'a str,
    pub(super) id: &'a str,
    pub(super) location: &'a str,
    pub(super) encryption: &'a Encryption,
}

/// Where a new node runs: its address, and the enrolled host it runs on (none:
/// the control plane's machine).
pub(super) struct NodePlace {
    pub(super) ip: IpAddr,
    pub(super) host: Option<String>,
}

impl NodePlace {
    /// Node `number` on the control plane's machine: 127.0.0.2, 127.0.0.3, ...,
    /// each node on an address of its own, as on a host.
    pub(super) fn here(number: usize) -> Self {
        Self {
            ip: IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                u8::try_from(number + 1).unwrap_or(2),
            )),
            host: None,
        }
    }
}

impl Platform {
    /// Where each node of new highly available server `req` runs: on the hosts it
    /// names (each enrolled and Online; the node listens on the host's enrolled
    /// address), else here.
    fn node_places(&self, req: &CreateServer) -> Result<Vec<NodePlace>, Error> {
        if req.hosts.is_empty() {
            return Ok((1..=NODES).map(NodePlace::here).collect());
        }
        req.hosts
            .iter()
            .map(|host| {
                let record = self.check_placement(req, host)?;
                Ok(NodePlace {
                    ip: record.address,
                    host: Some(host.clone()),
                })
            })
            .collect()
    }
}

/// The record of node `number` of `parent`, at `place` with free ports, its
/// DEK wrapped as `wrapped`, its directory under `state_dir` (on a host: under
/// the host's state directory).
pub(super) fn new_node(
    parent: &NodeParent<'_>,
    number: usize,
    place: NodePlace,
    wrapped: WrappedDek,
    state_dir: &std::path::Path,
) -> Result<ServerRecord, Error> {
    let node_id = hex_id()?;
    let ip = place.ip;
    let dir = match place.host {
        Some(_) => std::path::Path::new("servers").join(&node_id),
        None => state_dir.join("servers").join(&node_id),
    };
    Ok(ServerRecord {
        id: node_id.clone(),
        name: node_name(parent.name, number),
        location: parent.location.to_string(),
        encryption: parent.encryption.clone(),
        wrapped_dek: wrapped,
        state: ServerState::Provisioning,
        port: free_port(&[ip])?,
        listen_addresses: vec![ip],
        replica_of: None,
        dir,
        created_at: now_rfc3339(),
        nodes: Vec::new(),
        node_of: Some(NodeOf {
            server_id: parent.id.to_string(),
            rest_port: free_port(&[ip])?,
            address: ip.to_string(),
        }),
        host: place.host,
    })
}

/// The name of node `number` of server `server_name`.
pub(super) fn node_name(server_name: &str, number: usize) -> String {
    format!("{server_name}-node-{number}")
}

fn describe(server: &ServerRecord, nodes: &[ServerRecord]) -> String {
    format!(
        "highly available: {} nodes ({}), each with its own DEK, wrapped by {}",
        nodes.len(),
        nodes
            .iter()
            .filter_map(|n| n.node_of.as_ref().map(|p| match &n.host {
                Some(host) => format!("{} on host '{host}' at {}:{}", n.name, p.address, n.port),
                None => format!("{} on {}:{}", n.name, p.address, n.port),
            }))
            .collect::<Vec<_>>()
            .join(", "),
        nodes
            .iter()
            .map(|n| n.wrapped_dek.kek.to_string())
            .collect::<Vec<_>>()
            .join(" and ")
    ) + match &server.encryption {
        Encryption::ServiceManaged => "; service-managed key",
        Encryption::CustomerManaged { .. } => "; customer-managed key",
    }
}
