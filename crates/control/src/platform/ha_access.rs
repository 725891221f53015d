//! Who may steer a highly available server (`docs/high-availability.md`, "Who
//! may steer a server"): whoever writes its consensus store or calls the unsafe
//! endpoints of its Patroni REST API can move its primary, restart or reconfigure
//! it. So each node's Patroni gets a client certificate of the etcd CA at every
//! start of its agent (etcd refuses clients without one, [`crate::etcd_tls`]), and
//! Patroni's REST API is HTTPS with the node's certificate and asks a password
//! for its unsafe endpoints: a random one per server, kept sealed by the control
//! plane (like the replication role's) and handed to each node's agent in its
//! start-up handshake, which writes it on the node's encrypted mount only.

use std::path::PathBuf;
use std::time::Duration;

use pgcmk_agent::contract::handshake::NodeTls;
use pgcmk_agent::patroni::access::REST_API_USER;
use pgcmk_crypto::SecretBytes;
use reqwest::blocking::{Client, RequestBuilder};

use super::create::hex_id;
use super::Platform;
use crate::model::ServerRecord;
use crate::store::patroni_api_owner;
use crate::Error;

/// How long a request to a node's Patroni or to etcd may take.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Patroni's REST API of a highly available server's nodes, as the control plane
/// calls it: HTTPS verified against the servers CA, with the server's password.
pub(super) struct PatroniApi {
    http: Client,
    password: SecretBytes,
}

impl PatroniApi {
    /// A request to `path` on `node`'s REST API (`None`: not a node).
    pub(super) fn request(
        &self,
        method: reqwest::Method,
        node: &ServerRecord,
        path: &str,
    ) -> Option<RequestBuilder> {
        let place = node.node_of.as_ref()?;
        let url = format!("https://{}:{}{path}", place.address, place.rest_port);
        let password = String::from_utf8_lossy(self.password.expose_secret());
        Some(
            self.http
                .request(method, url)
                .basic_auth(REST_API_USER, Some(password)),
        )
    }
}

impl Platform {
    /// The client certificate `node`'s Patroni shows etcd for this start of its
    /// agent (none for a server that is no node of a highly available one).
    pub(super) fn etcd_client_tls(&self, node: &ServerRecord) -> Result<Option<NodeTls>, Error> {
        if node.node_of.is_none() {
            return Ok(None);
        }
        match &self.config.etcd_tls {
            Some(given) => Ok(Some(given.client.clone())),
            None => self.etcd_ca.client(&node.name).map(Some),
        }
    }

    /// The CA certificate the nodes verify etcd's members by.
    pub(super) fn etcd_ca_file(&self) -> PathBuf {
        match &self.config.etcd_tls {
            Some(given) => given.ca_file.clone(),
            None => self.etcd_ca.file().to_path_buf(),
        }
    }

    /// An HTTPS client of etcd that shows a client certificate of the control plane.
    pub(super) fn etcd_http(&self) -> Result<Client, Error> {
        let ca_file = self.etcd_ca_file();
        let ca = std::fs::read(&ca_file)
            .map_err(|e| Error::BadRequest(format!("cannot read {} ({e})", ca_file.display())))?;
        let identity = match &self.config.etcd_tls {
            Some(given) => given.client.clone(),
            None => self.etcd_ca.client("control plane")?,
        };
        crate::etcd_tls::client(&ca, &identity, TIMEOUT)
    }

    /// The password of highly available server `server_id`'s Patroni REST API:
    /// made (random) and sealed at its first use, so that servers created before
    /// it existed get one at their nodes' next start.
    pub(super) fn patroni_api_password(&self, server_id: &str) -> Result<SecretBytes, Error> {
        let owner = patroni_api_owner(server_id);
        if self.store.sealed_identity_secret(&owner)?.is_some() {
            return self.secrets.get(&self.store, &owner);
        }
        let password = SecretBytes::new(hex_id()?.into_bytes());
        self.secrets.put(&self.store, &owner, &password)?;
        Ok(password)
    }

    /// The REST API of `node`'s server's Patroni.
    pub(super) fn patroni_api(&self, node: &ServerRecord) -> Result<PatroniApi, Error> {
        let server_id = node
            .node_of
            .as_ref()
            .map(|p| p.server_id.clone())
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "'{}' is no node of a highly available server",
                    node.name
                ))
            })?;
        let ca_file = self.servers_ca_file();
        let ca = pgcmk_hostkeys::trust::read_ca_pem(ca_file, "restart `pgcmk serve`")?;
        Ok(PatroniApi {
            http: pgcmk_hostkeys::trust::blocking_client(&ca, TIMEOUT)?,
            password: self.patroni_api_password(&server_id)?,
        })
    }
}
