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
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgcmk_agent::contract::handshake::NodeTls;
use pgcmk_crypto::sealed::Sealer;
use pgcmk_hostkeys::issuing_ca::IssuingCa;

use crate::error::StoreError;
use crate::model::ServerRecord;
use crate::store::Store;
use crate::Error;

/// The CA certificate's file name in the state directory.
pub const SERVERS_CA_FILE: &str = "servers-ca.pem";
/// Settings: the servers CA (JSON; its key sealed).
const SERVERS_CA: &str = "servers-ca";
/// How long a node's certificate is valid: it is renewed at every start of the
/// node's agent, so this bounds only how long an agent may run without a restart
/// before clients stop trusting its server (docs/tls.md).
pub const CERTIFICATE_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The servers CA, able to issue.
#[derive(Debug)]
pub struct ServersCa {
    ca: IssuingCa,
    sealer: Sealer,
    file: PathBuf,
}

impl ServersCa {
    /// Loads the servers CA, creating it on first start, and writes its
    /// certificate to `STATE/servers-ca.pem`.
    pub fn open(state_dir: &Path, store: &Store, sealer: Sealer) -> Result<Self, Error> {
        let file = state_dir.join(SERVERS_CA_FILE);
        let ca = stored_ca(
            store,
            (SERVERS_CA, "pgcmk servers CA"),
            "the servers CA is corrupt",
            &sealer,
            &file,
        )?;
        Ok(Self { ca, sealer, file })
    }

    /// The CA certificate's file, which clients trust PostgreSQL by.
    pub fn file(&self) -> &Path {
        &self.file
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
        let issued = self.ca.issue(
            &self.sealer,
            &format!("pgcmk server {}", server.name),
            &names,
            CERTIFICATE_LIFETIME,
        )?;
        Ok(NodeTls {
            certificate_pem: issued.certificate_pem,
            key_pem: issued.key_pem,
        })
    }
}

/// The CA kept in the store's setting `setting`, generated (named `common_name`,
/// its key sealed with `sealer`) when there is none; its certificate is written to
/// `file` (0644: it is public). `corrupt` says what is wrong when it does not decode.
pub(crate) fn stored_ca(
    store: &Store,
    (setting, common_name): (&str, &str),
    corrupt: &'static str,
    sealer: &Sealer,
    file: &Path,
) -> Result<IssuingCa, Error> {
    let corrupt = |source| {
        Error::Store(StoreError::Codec {
            what: corrupt,
            source,
        })
    };
    let ca = match store.setting(setting)? {
        Some(json) => serde_json::from_slice::<IssuingCa>(&json).map_err(corrupt)?,
        None => {
            let ca = IssuingCa::generate(common_name, sealer)?;
            let json = serde_json::to_vec(&ca).map_err(corrupt)?;
            store.put_settings(&[(setting, &json)])?;
            ca
        }
    };
    pgcmk_hostkeys::files::write_atomic(file, ca.ca_pem()?.as_bytes(), 0o644)?;
    Ok(ca)
}
