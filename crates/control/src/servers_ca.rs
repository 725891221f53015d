//! The servers CA: the control plane's CA for PostgreSQL's TLS.
//!
//! A CA of its own rather than the REST API's ([`crate::api_tls`]): that CA's key
//! is discarded once it signed the API's certificate, and a client that trusts it
//! for the API must not trust a PostgreSQL node's certificate for the API's
//! address (or the other way round). This one keeps its key sealed in the state
//! store under a key derived from the root key, and issues every node a new
//! certificate for its listen addresses, with a new key, at every start of its
//! agent; the key goes to the agent over the start-up handshake and onto the
//! encrypted volume only. Its certificate is (re)written to `STATE/servers-ca.pem`
//! at every start: the file a connection string's `sslrootcert` names.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use pgcmk_agent::contract::handshake::NodeTls;
use pgcmk_crypto::sealed::Sealer;
use pgcmk_hostkeys::issuing_ca::CertificateUse;

use crate::model::ServerRecord;
use crate::store::Store;
use crate::stored_ca::{CaPlace, StoredCa};
use crate::Error;

/// The CA certificate's file name in the state directory.
pub const SERVERS_CA_FILE: &str = "servers-ca.pem";
/// Where the servers CA is kept.
const SERVERS_CA: CaPlace = CaPlace {
    setting: "servers-ca",
    file_name: SERVERS_CA_FILE,
    common_name: "pgcmk servers CA",
    corrupt: "the servers CA is corrupt",
};
/// How long a node's certificate is valid: it is renewed at every start of the
/// node's agent, so this bounds only how long an agent may run without a restart
/// before clients stop trusting its server (docs/tls.md).
pub const CERTIFICATE_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The servers CA, able to issue.
#[derive(Debug)]
pub struct ServersCa(StoredCa);

impl ServersCa {
    /// Loads the servers CA, creating it on first start, and writes its
    /// certificate to `STATE/servers-ca.pem`.
    pub fn open(state_dir: &Path, store: &Store, sealer: Sealer) -> Result<Self, Error> {
        StoredCa::open(state_dir, store, sealer, &SERVERS_CA).map(Self)
    }

    /// The CA certificate's file, which clients trust PostgreSQL by.
    pub fn file(&self) -> &Path {
        self.0.file()
    }

    /// A new certificate and key for `server`'s node, valid for its listen
    /// addresses (and `localhost` when it listens on loopback).
    pub fn issue(&self, server: &ServerRecord) -> Result<NodeTls, Error> {
        let mut names: Vec<String> = server
            .listen_addresses
            .iter()
            .map(IpAddr::to_string)
            .collect();
        if server.listen_addresses.iter().any(IpAddr::is_loopback) {
            names.push("localhost".into());
        }
        self.0.issue(
            CertificateUse::Server,
            &format!("pgcmk server {}", server.name),
            &names,
            CERTIFICATE_LIFETIME,
        )
    }
}
