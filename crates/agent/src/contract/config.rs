//! `DIR/agent.json`: what the control plane tells a node agent (no secrets), and
//! how to reach its KEK. The control plane writes it at create and rewrites it when
//! the vault service moved; the agent re-reads it before every key check.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgcmk_crypto::SecretBytes;
use pgcmk_keyprovider::akv::{AkvKek, AkvKeyReference, ClientOptions, TokenSource};
use pgcmk_keyprovider::kmip::KmipKek;
use pgcmk_keyprovider::pkcs11::Pkcs11Kek;
use pgcmk_keyprovider::{KeyEncryptionKey, KeyError, KeyReference};
use serde::{Deserialize, Serialize};

use super::server_dir::read_json;

/// What the control plane tells an agent; no secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// The server's id (also the HKDF salt for its cryptfs key).
    pub server_id: String,
    /// PostgreSQL's TCP port.
    pub port: u16,
    /// The addresses PostgreSQL listens on (TLS only; default 127.0.0.1). Its
    /// certificate names each.
    #[serde(default = "loopback_only")]
    pub listen_addresses: Vec<IpAddr>,
    /// How to reach the KEK.
    pub kek: KekAccess,
    /// Milliseconds between key checks.
    pub interval_ms: u64,
    /// Milliseconds of transient failures tolerated before locking.
    pub grace_ms: u64,
    /// The server's backups; `None`: none (WAL is not archived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<super::BackupConfig>,
    /// For a server restored from another's backups: where from (used at its
    /// first start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<super::backup::RestoreSource>,
    /// For a read replica: the server it streams from (a hot standby until it is
    /// promoted; then absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<super::replica::ReplicaSource>,
    /// For a node of a highly available server: its place in the cluster (it runs
    /// Patroni instead of PostgreSQL); `None` for a single-node server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<super::HaNode>,
}

impl AgentConfig {
    /// The file holding the server's backup repository key wrapped by its KEK,
    /// for the agent of the server in `dir`: its own, or the one of the highly
    /// available server it is a node of.
    pub fn backup_key_file(&self, dir: &super::ServerDir) -> PathBuf {
        self.backup
            .as_ref()
            .map_or_else(|| dir.wrapped_backup_key(), |b| b.key_file(dir))
    }

    /// The geo-redundant copy's wrapped repository key ([`BackupConfig::geo_key_file`]).
    pub fn geo_backup_key_file(&self, dir: &super::ServerDir) -> PathBuf {
        self.backup
            .as_ref()
            .map_or_else(|| dir.wrapped_geo_backup_key(), |b| b.geo_key_file(dir))
    }
}

/// The listen addresses of a server created before they were a setting.
pub fn loopback_only() -> Vec<IpAddr> {
    vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
}

/// Where the vault service hands out managed-identity tokens, and the CA to trust
/// it by: what the control plane reads from the vault service's `service.json` and
/// keeps current in every agent's `agent.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultEndpoints {
    /// The managed-identity token endpoint (`IDENTITY_ENDPOINT`).
    pub identity_endpoint: String,
    /// A PEM CA bundle to trust instead of the system roots (a private vault).
    pub ca_file: Option<PathBuf>,
}

impl VaultEndpoints {
    /// Reads them from `service.json` in the vault service's directory (written by
    /// `pgcmk vault serve` at every start).
    pub fn read(service_dir: &Path) -> Result<Self, crate::Error> {
        read_json(&service_dir.join("service.json"))
    }
}

/// How to reach one KEK: the key (whose reference names its provider), the managed
/// identity to act as (App Service managed-identity protocol), and the vault
/// service's endpoints. The credential is not here (this is written to the server's
/// `agent.json`): the control plane keeps it sealed in its state and hands it to the
/// agent over a pipe. For an Azure key it is the identity's `IDENTITY_HEADER`
/// secret; for a PKCS#11 key, the token user's PIN (the identity is `user`); for
/// a KMIP key, the client's PEM certificate chain and private key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KekAccess {
    /// The key, versioned or versionless.
    pub key: KeyReference,
    /// The vault service's identity endpoint and CA (`identity_endpoint`, `ca_file`).
    #[serde(flatten)]
    pub vault: VaultEndpoints,
    /// The managed identity's client id.
    pub client_id: String,
}

impl KekAccess {
    /// Connects with the credential `secret` (lazily: no request is sent until the
    /// first operation). The one place that chooses a provider: everything else uses
    /// the KEK through [`KeyEncryptionKey`].
    pub fn connect(&self, secret: SecretBytes) -> Result<Box<dyn KeyEncryptionKey>, KeyError> {
        let secret = SecretBytes::new(secret.expose_secret().trim_ascii().to_vec());
        match &self.key {
            KeyReference::Azure(key) => self.connect_azure(key, secret),
            KeyReference::Pkcs11(key) => Ok(Box::new(Pkcs11Kek::connect(key.clone(), secret)?)),
            KeyReference::Kmip(key) => Ok(Box::new(KmipKek::connect(key.clone(), secret)?)),
            other => Err(KeyError::Invalid {
                reason: format!(
                    "key {other}: this build has no {} provider",
                    other.provider()
                ),
            }),
        }
    }

    fn connect_azure(
        &self,
        key: &AkvKeyReference,
        header: SecretBytes,
    ) -> Result<Box<dyn KeyEncryptionKey>, KeyError> {
        let tokens =
            TokenSource::managed_identity(&self.vault.identity_endpoint, header, &self.client_id)?;
        let mut options = match &self.vault.ca_file {
            Some(ca) => ClientOptions::trusting_only(ca),
            None => ClientOptions::default(),
        };
        // A check must finish well within the monitor's interval.
        options.timeout = Duration::from_secs(5);
        options.connect_timeout = Duration::from_secs(2);
        Ok(Box::new(AkvKek::connect(key.clone(), tokens, &options)?))
    }
}
