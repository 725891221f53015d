//! Who may steer a highly available server (`docs/high-availability.md`, "Who
//! may steer a server"): whoever writes its consensus store or calls the unsafe
//! endpoints of its Patroni REST API can move its primary, restart or reconfigure
//! it, and whoever reads either learns its topology. So each node's Patroni gets
//! a client certificate of the etcd CA at every start of its agent (etcd refuses
//! clients without one, [`crate::etcd_tls`]) and logs in to etcd as its server's
//! own user ([`super::etcd_keys`]); Patroni's REST API is HTTPS with the node's
//! certificate, requires a client certificate of the etcd CA from every caller
//! (the control plane shows its own, the other node its Patroni's), and asks a
//! password for its unsafe endpoints: a random one per node, made anew at every
//! start of the node's agent, kept sealed by the control plane (like the
//! replication role's) and handed to the agent in its start-up handshake, which
//! writes it on the node's encrypted mount only.

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
/// calls it: HTTPS verified against the servers CA, showing the control plane's
/// client certificate of the etcd CA.
pub(super) struct PatroniApi {
    http: Client,
}

impl PatroniApi {
    /// A request to `path` on `node`'s REST API (`None`: not a node); with
    /// `password` (the node's) for an unsafe endpoint.
    pub(super) fn request(
        &self,
        method: reqwest::Method,
        node: &ServerRecord,
        path: &str,
        password: Option<&SecretBytes>,
    ) -> Option<RequestBuilder> {
        let place = node.node_of.as_ref()?;
        let url = format!("https://{}:{}{path}", place.address, place.rest_port);
        let request = self.http.request(method, url);
        Some(match password {
            Some(password) => {
                let password = String::from_utf8_lossy(password.expose_secret());
                request.basic_auth(REST_API_USER, Some(password))
            }
            None => request,
        })
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

    /// The control plane's client certificate of the etcd CA: what it shows etcd
    /// and the nodes' Patroni REST APIs.
    fn etcd_client_identity(&self) -> Result<NodeTls, Error> {
        match &self.config.etcd_tls {
            Some(given) => Ok(given.client.clone()),
            None => self.etcd_ca.client("control plane"),
        }
    }

    /// An HTTPS client of etcd that shows a client certificate of the control plane.
    pub(super) fn etcd_http(&self) -> Result<Client, Error> {
        let ca_file = self.etcd_ca_file();
        let ca = std::fs::read(&ca_file)
            .map_err(|e| Error::BadRequest(format!("cannot read {} ({e})", ca_file.display())))?;
        crate::etcd_tls::client(&ca, &self.etcd_client_identity()?, TIMEOUT)
    }

    /// A new password for `node`'s Patroni REST API (none for a server that is no
    /// node), sealed for the control plane's own calls before the node's agent
    /// gets it in its handshake: every start of a node's agent rotates it.
    pub(super) fn new_patroni_api_password(
        &self,
        node: &ServerRecord,
    ) -> Result<Option<SecretBytes>, Error> {
        if node.node_of.is_none() {
            return Ok(None);
        }
        let password = SecretBytes::new(hex_id()?.into_bytes());
        self.secrets
            .put(&self.store, &patroni_api_owner(&node.id), &password)?;
        Ok(Some(password))
    }

    /// The password `node`'s Patroni REST API asks now: the one of its agent's
    /// start, or, for an agent started before passwords were a node's own, its
    /// server's.
    pub(super) fn patroni_api_password(&self, node: &ServerRecord) -> Result<SecretBytes, Error> {
        let own = patroni_api_owner(&node.id);
        match (&node.node_of, self.store.sealed_identity_secret(&own)?) {
            (Some(place), None) => self
                .secrets
                .get(&self.store, &patroni_api_owner(&place.server_id)),
            _ => self.secrets.get(&self.store, &own),
        }
    }

    /// The nodes' Patroni REST API, as the control plane calls it.
    pub(super) fn patroni_api(&self) -> Result<PatroniApi, Error> {
        let ca_file = self.servers_ca_file();
        let ca = pgcmk_hostkeys::trust::read_ca_pem(ca_file, "restart `pgcmk serve`")?;
        Ok(PatroniApi {
            http: crate::etcd_tls::client(&ca, &self.etcd_client_identity()?, TIMEOUT)?,
        })
    }
}
