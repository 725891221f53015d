//! The start-up handshake: the one message the control plane writes on a node
//! agent's stdin (a pipe) before closing it, for every run of the agent (serving
//! or one task). Secrets travel only here: never in arguments, environment or
//! files.
//!
//! Wire format, version 2: one JSON object, then end of input.
//!
//! ```json
//! {"version": 2, "identity_secret": "…", "initial_password": "…", "new_password": "…",
//!  "source_identity_secret": "…", "geo_identity_secret": "…", "storage_key": "…",
//!  "geo_storage_key": "…"}
//! ```
//!
//! - `version` (required): 1 or 2 (version 2 added `new_password`). An agent
//!   refuses any other version, naming it; the control plane writes 2.
//! - `identity_secret` (required, non-empty): the managed identity's header secret.
//! - `initial_password` (optional): present only for the first start of a new
//!   server; the agent provisions the server (encrypted volume, `initdb`) and
//!   gives the `postgres` superuser this password.
//! - `new_password` (optional, version 2): present only for the `reset-password`
//!   task; the run sets the `postgres` superuser's password of the serving server
//!   to it (PostgreSQL stores only its SCRAM verifier).
//! - `source_identity_secret` (optional, version 2): present only for the first
//!   start of a server restored from another's backups: the secret of the
//!   identity through which the source's repository key is unwrapped.
//! - `geo_identity_secret` (optional, version 2): present when the server has a
//!   geo-redundant copy of its backups: the secret of the identity through which
//!   the copy's repository key is unwrapped (`docs/backups.md`).
//! - `storage_key` (optional, version 2): present when the server's repository (or,
//!   at a restore, the source's) is in Azure Blob Storage: the account's shared key.
//! - `geo_storage_key` (optional, version 2): present when the server's
//!   geo-redundant copy (or, at a restore from a copy, the source's) is in the Azure
//!   Blob Storage account of the paired location: that account's shared key.
//! - `replication_password` (optional, version 2): the password of the role that
//!   standbys replicate as. For a read replica, present at every start (the source's
//!   replication role, which the source's `replication-role` task set from its
//!   `new_password`); for a node of a highly available server, only at its first
//!   start, beside `initial_password` (`docs/high-availability.md`).
//! - `tls_certificate` and `tls_key` (optional, version 2, both or neither): the
//!   node's server certificate (PEM), issued by the control plane's servers CA
//!   for this start, and its private key (PEM); the agent keeps the key on the
//!   encrypted volume only (`docs/tls.md`). Without them PostgreSQL listens on
//!   its Unix socket only.
//! - `etcd_certificate` and `etcd_key` (optional, version 2, both or neither): for
//!   a node of a highly available server, the client certificate (PEM) and key its
//!   Patroni shows the etcd cluster, which refuses clients without one; kept on the
//!   encrypted volume only (`docs/high-availability.md`).
//! - `patroni_api_password` (optional, version 2): for a node of a highly available
//!   server, at every start, the password Patroni's REST API asks for its unsafe
//!   endpoints (switchover, failover, restart, reload, configuration); a node
//!   refuses to run Patroni without it.
//! - `etcd_password` (optional, version 2): for a node of a highly available
//!   server in the control plane's own etcd cluster, at every start, the password
//!   of the server's etcd user, which may read and write that server's keys only;
//!   kept on the encrypted volume only.
//!
//! Errors never echo the input: it holds secrets.

use std::borrow::Cow;
use std::io::{Read, Write};

use pgcmk_crypto::SecretBytes;
use serde::{Deserialize, Serialize};

/// The handshake version this agent writes, and the newest it reads.
pub const HANDSHAKE_VERSION: u32 = 2;
/// The oldest handshake version this agent reads.
const OLDEST_VERSION: u32 = 1;
/// The longest handshake accepted (secrets are far shorter).
const MAX_LEN: usize = 64 * 1024;

/// What the control plane hands a starting agent.
pub struct Handshake {
    /// The managed identity's header secret.
    pub identity_secret: SecretBytes,
    /// The `postgres` superuser's password, when the agent is to provision a new
    /// server before serving it.
    pub initial_password: Option<SecretBytes>,
    /// The `postgres` superuser's new password, for the `reset-password` task.
    pub new_password: Option<SecretBytes>,
    /// For a server restored from another's backups, at its first start: the
    /// secret of the identity that unwraps the source's repository key.
    pub source_identity_secret: Option<SecretBytes>,
    /// For a server with a geo-redundant copy of its backups: the secret of the
    /// identity that unwraps the copy's repository key.
    pub geo_identity_secret: Option<SecretBytes>,
    /// For a repository in Azure Blob Storage: the storage account's shared key.
    pub storage_key: Option<SecretBytes>,
    /// For a geo-redundant copy in Azure Blob Storage: the paired location's
    /// storage account's shared key.
    pub geo_storage_key: Option<SecretBytes>,
    /// The password of the role standbys replicate as: for a read replica at every
    /// start (its source's replication role), for a node of a highly available
    /// server at its first start.
    pub replication_password: Option<SecretBytes>,
    /// The node's TLS server certificate and key for this start.
    pub tls: Option<NodeTls>,
    /// A highly available node's client certificate and key towards etcd.
    pub etcd_tls: Option<NodeTls>,
    /// A highly available node's Patroni REST API password.
    pub patroni_api_password: Option<SecretBytes>,
    /// A highly available node's etcd user's password.
    pub etcd_password: Option<SecretBytes>,
}

/// A node's TLS server certificate and its private key, as handed to its agent.
#[derive(Clone)]
pub struct NodeTls {
    /// The certificate, PEM (not secret).
    pub certificate_pem: String,
    /// The private key, PEM.
    pub key_pem: SecretBytes,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("certificate_pem", &self.certificate_pem)
            .field("key_pem", &"REDACTED")
            .finish()
    }
}

impl Handshake {
    /// A handshake that hands over the identity's secret only.
    pub fn identity_only(identity_secret: SecretBytes) -> Self {
        Self {
            identity_secret,
            initial_password: None,
            new_password: None,
            source_identity_secret: None,
            geo_identity_secret: None,
            storage_key: None,
            geo_storage_key: None,
            replication_password: None,
            tls: None,
            etcd_tls: None,
            patroni_api_password: None,
            etcd_password: None,
        }
    }
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("identity_secret", &"REDACTED")
            .field(
                "initial_password",
                &self.initial_password.as_ref().map(|_| "REDACTED"),
            )
            .field(
                "new_password",
                &self.new_password.as_ref().map(|_| "REDACTED"),
            )
            .field(
                "source_identity_secret",
                &self.source_identity_secret.as_ref().map(|_| "REDACTED"),
            )
            .field(
                "geo_identity_secret",
                &self.geo_identity_secret.as_ref().map(|_| "REDACTED"),
            )
            .field(
                "storage_key",
                &self.storage_key.as_ref().map(|_| "REDACTED"),
            )
            .field(
                "geo_storage_key",
                &self.geo_storage_key.as_ref().map(|_| "REDACTED"),
            )
            .field(
                "replication_password",
                &self.replication_password.as_ref().map(|_| "REDACTED"),
            )
            .field("tls", &self.tls)
            .field("etcd_tls", &self.etcd_tls)
            .field(
                "patroni_api_password",
                &self.patroni_api_password.as_ref().map(|_| "REDACTED"),
            )
            .field(
                "etcd_password",
                &self.etcd_password.as_ref().map(|_| "REDACTED"),
            )
            .finish()
    }
}

/// Why a handshake could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Nothing came on stdin.
    #[error(
        "no handshake on stdin: the agent is started by `pgcmk serve`, which passes it \
         through a pipe"
    )]
    Empty,
    /// Reading stdin failed.
    #[error("reading the handshake from stdin: {0}")]
    Read(#[source] std::io::Error),
    /// Writing to the agent's stdin failed (it exited at once).
    #[error("writing the handshake to the agent: {0}")]
    Write(#[source] std::io::Error),
    /// More than the handshake's size limit came.
    #[error("the handshake on stdin is longer than {MAX_LEN} bytes")]
    TooLong,
    /// Not a handshake object (the input is not shown: it holds secrets).
    #[error(
        "the handshake on stdin is not valid ({what} at line {line}, column {column}): \
         expected {{\"version\": {HANDSHAKE_VERSION}, \"identity_secret\": ...}}"
    )]
    Malformed {
        /// serde_json's category of the error (syntax, data, eof).
        what: &'static str,
        /// Where it was found.
        line: usize,
        /// Where it was found.
        column: usize,
    },
    /// A version this agent does not speak.
    #[error(
        "handshake version {found} is not supported by this agent (it reads versions \
         {OLDEST_VERSION} to {HANDSHAKE_VERSION}): run the same pgcmk build for `pgcmk serve` and the agents"
    )]
    UnsupportedVersion {
        /// The version that came.
        found: u32,
    },
    /// A field that an older version than the one given does not have.
    #[error("the handshake's {field} needs version {needs}, but it came as version {found}")]
    FieldOfLaterVersion {
        /// The field.
        field: &'static str,
        /// The version that added it.
        needs: u32,
        /// The version that came.
        found: u32,
    },
    /// Only one of a certificate and its key came.
    #[error(
        "the handshake has {0} without the other: send tls_certificate and tls_key (and \
         etcd_certificate and etcd_key) together"
    )]
    HalfTls(&'static str),
    /// The identity secret is empty.
    #[error("the handshake on stdin has an empty identity_secret")]
    NoIdentitySecret,
    /// A secret to send is not UTF-8 text.
    #[error("the {0} to hand to the agent is not UTF-8 text")]
    NotText(&'static str),
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    version: u32,
    #[serde(borrow)]
    identity_secret: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    initial_password: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    new_password: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    source_identity_secret: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    geo_identity_secret: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    storage_key: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    geo_storage_key: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    replication_password: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    tls_certificate: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    tls_key: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    etcd_certificate: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    etcd_key: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    patroni_api_password: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    etcd_password: Option<Cow<'a, str>>,
}

fn malformed(e: &serde_json::Error) -> HandshakeError {
    use serde_json::error::Category;
    HandshakeError::Malformed {
        what: match e.classify() {
            Category::Io => "unreadable",
            Category::Syntax => "not JSON",
            Category::Data => "a missing or mistyped field",
            Category::Eof => "cut short",
        },
        line: e.line(),
        column: e.column(),
    }
}

fn text_of<'a>(what: &'static str, secret: &'a SecretBytes) -> Result<&'a str, HandshakeError> {
    std::str::from_utf8(secret.expose_secret()).map_err(|_| HandshakeError::NotText(what))
}

fn optional_text<'a>(
    what: &'static str,
    secret: &'a Option<SecretBytes>,
) -> Result<Option<Cow<'a, str>>, HandshakeError> {
    secret
        .as_ref()
        .map(|s| text_of(what, s).map(Cow::Borrowed))
        .transpose()
}

fn secret_of(text: Cow<'_, str>) -> SecretBytes {
    SecretBytes::new(text.into_owned().into_bytes())
}

/// A certificate and its key from the wire fields `names`: both or neither.
fn node_tls(
    fields: (Option<Cow<'_, str>>, Option<Cow<'_, str>>),
    names: (&'static str, &'static str),
) -> Result<Option<NodeTls>, HandshakeError> {
    match fields {
        (Some(certificate), Some(key)) => Ok(Some(NodeTls {
            certificate_pem: certificate.into_owned(),
            key_pem: secret_of(key),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(HandshakeError::HalfTls(names.0)),
        (None, Some(_)) => Err(HandshakeError::HalfTls(names.1)),
    }
}

impl Handshake {
    /// Reads a handshake from `input` to its end.
    pub fn read(input: impl Read) -> Result<Self, HandshakeError> {
        // Room up front: no reallocation leaves copies of the secrets behind.
        let mut buffer = Vec::with_capacity(8192);
        let read = input.take(MAX_LEN as u64 + 1).read_to_end(&mut buffer);
        let buffer = SecretBytes::new(buffer);
        read.map_err(HandshakeError::Read)?;
        let bytes = buffer.expose_secret();
        if bytes.trim_ascii().is_empty() {
            return Err(HandshakeError::Empty);
        }
        if bytes.len() > MAX_LEN {
            return Err(HandshakeError::TooLong);
        }
        let VersionOnly { version } = serde_json::from_slice(bytes).map_err(|e| malformed(&e))?;
        if !(OLDEST_VERSION..=HANDSHAKE_VERSION).contains(&version) {
            return Err(HandshakeError::UnsupportedVersion { found: version });
        }
        let wire: Wire<'_> = serde_json::from_slice(bytes).map_err(|e| malformed(&e))?;
        for (field, present) in [
            ("new_password", wire.new_password.is_some()),
            (
                "source_identity_secret",
                wire.source_identity_secret.is_some(),
            ),
            ("geo_identity_secret", wire.geo_identity_secret.is_some()),
            ("storage_key", wire.storage_key.is_some()),
            ("geo_storage_key", wire.geo_storage_key.is_some()),
            ("replication_password", wire.replication_password.is_some()),
            ("tls_certificate", wire.tls_certificate.is_some()),
            ("tls_key", wire.tls_key.is_some()),
            ("etcd_certificate", wire.etcd_certificate.is_some()),
            ("etcd_key", wire.etcd_key.is_some()),
            ("patroni_api_password", wire.patroni_api_password.is_some()),
            ("etcd_password", wire.etcd_password.is_some()),
        ] {
            if version < 2 && present {
                return Err(HandshakeError::FieldOfLaterVersion {
                    field,
                    needs: 2,
                    found: version,
                });
            }
        }
        let identity_secret = secret_of(wire.identity_secret);
        if identity_secret.expose_secret().trim_ascii().is_empty() {
            return Err(HandshakeError::NoIdentitySecret);
        }
        let tls = node_tls(
            (wire.tls_certificate, wire.tls_key),
            ("tls_certificate", "tls_key"),
        )?;
        let etcd_tls = node_tls(
            (wire.etcd_certificate, wire.etcd_key),
            ("etcd_certificate", "etcd_key"),
        )?;
        Ok(Self {
            identity_secret,
            tls,
            etcd_tls,
            patroni_api_password: wire.patroni_api_password.map(secret_of),
            etcd_password: wire.etcd_password.map(secret_of),
            replication_password: wire.replication_password.map(secret_of),
            initial_password: wire.initial_password.map(secret_of),
            new_password: wire.new_password.map(secret_of),
            source_identity_secret: wire.source_identity_secret.map(secret_of),
            geo_identity_secret: wire.geo_identity_secret.map(secret_of),
            storage_key: wire.storage_key.map(secret_of),
            geo_storage_key: wire.geo_storage_key.map(secret_of),
        })
    }

    /// Writes the handshake to `output` (the agent's stdin; the caller closes it).
    pub fn write(&self, mut output: impl Write) -> Result<(), HandshakeError> {
        let bytes = self.to_bytes()?;
        // Far below a pipe's capacity, so this never waits for the agent.
        output
            .write_all(bytes.expose_secret())
            .map_err(HandshakeError::Write)
    }

    /// The handshake as the bytes an agent reads on its stdin: what a host daemon
    /// receives for an agent it starts (`docs/hosts.md`) and writes unchanged.
    pub fn to_bytes(&self) -> Result<SecretBytes, HandshakeError> {
        let wire = Wire {
            version: HANDSHAKE_VERSION,
            identity_secret: Cow::Borrowed(text_of("identity secret", &self.identity_secret)?),
            initial_password: optional_text("initial password", &self.initial_password)?,
            new_password: optional_text("new password", &self.new_password)?,
            source_identity_secret: optional_text(
                "source identity secret",
                &self.source_identity_secret,
            )?,
            geo_identity_secret: optional_text("geo identity secret", &self.geo_identity_secret)?,
            storage_key: optional_text("storage key", &self.storage_key)?,
            geo_storage_key: optional_text("geo storage key", &self.geo_storage_key)?,
            replication_password: optional_text(
                "replication password",
                &self.replication_password,
            )?,
            tls_certificate: self
                .tls
                .as_ref()
                .map(|t| Cow::Borrowed(t.certificate_pem.as_str())),
            tls_key: self
                .tls
                .as_ref()
                .map(|t| text_of("TLS key", &t.key_pem).map(Cow::Borrowed))
                .transpose()?,
            etcd_certificate: self
                .etcd_tls
                .as_ref()
                .map(|t| Cow::Borrowed(t.certificate_pem.as_str())),
            etcd_key: self
                .etcd_tls
                .as_ref()
                .map(|t| text_of("etcd client key", &t.key_pem).map(Cow::Borrowed))
                .transpose()?,
            patroni_api_password: optional_text(
                "Patroni REST API password",
                &self.patroni_api_password,
            )?,
            etcd_password: optional_text("etcd password", &self.etcd_password)?,
        };
        let len = |p: &Option<SecretBytes>| p.as_ref().map_or(0, |p| 2 * p.expose_secret().len());
        let pem_len = |t: &Option<NodeTls>| {
            t.as_ref().map_or(0, |t| {
                2 * (t.certificate_pem.len() + t.key_pem.expose_secret().len())
            })
        };
        let mut bytes = Vec::with_capacity(
            256 + 2 * self.identity_secret.expose_secret().len()
                + len(&self.initial_password)
                + len(&self.new_password)
                + len(&self.source_identity_secret)
                + len(&self.geo_identity_secret)
                + len(&self.storage_key)
                + len(&self.geo_storage_key)
                + len(&self.replication_password)
                + len(&self.patroni_api_password)
                + len(&self.etcd_password)
                + pem_len(&self.tls)
                + pem_len(&self.etcd_tls),
        );
        serde_json::to_writer(&mut bytes, &wire).map_err(|e| malformed(&e))?;
        Ok(SecretBytes::new(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Handshake, HandshakeError> {
        Handshake::read(text.as_bytes())
    }

    #[test]
    fn round_trips_with_and_without_a_password() {
        for password in [None, Some("pw-\"quoted\"\\")] {
            let sent = Handshake {
                identity_secret: SecretBytes::new(b"header-secret".to_vec()),
                initial_password: password.map(|p| SecretBytes::new(p.as_bytes().to_vec())),
                new_password: password.map(|p| SecretBytes::new(format!("new-{p}").into_bytes())),
                source_identity_secret: password
                    .map(|p| SecretBytes::new(format!("source-{p}").into_bytes())),
                geo_identity_secret: password
                    .map(|p| SecretBytes::new(format!("geo-{p}").into_bytes())),
                storage_key: password
                    .map(|p| SecretBytes::new(format!("storage-{p}").into_bytes())),
                geo_storage_key: password
                    .map(|p| SecretBytes::new(format!("geo-storage-{p}").into_bytes())),
                replication_password: password
                    .map(|p| SecretBytes::new(format!("replication-{p}").into_bytes())),
                tls: password.map(|p| NodeTls {
                    certificate_pem: "-----BEGIN CERTIFICATE-----\nMII\n".into(),
                    key_pem: SecretBytes::new(format!("key-{p}").into_bytes()),
                }),
                etcd_tls: password.map(|p| NodeTls {
                    certificate_pem: "etcd-cert".into(),
                    key_pem: SecretBytes::new(format!("etcd-key-{p}").into_bytes()),
                }),
                patroni_api_password: password
                    .map(|p| SecretBytes::new(format!("patroni-{p}").into_bytes())),
                etcd_password: password.map(|p| SecretBytes::new(format!("etcd-{p}").into_bytes())),
            };
            let mut wire = Vec::new();
            sent.write(&mut wire).unwrap();
            let got = Handshake::read(wire.as_slice()).unwrap();
            assert_eq!(got.identity_secret.expose_secret(), b"header-secret");
            assert_eq!(
                got.initial_password.as_ref().map(|p| p.expose_secret()),
                password.map(str::as_bytes)
            );
            assert_eq!(
                got.new_password
                    .as_ref()
                    .map(|p| p.expose_secret().to_vec()),
                password.map(|p| format!("new-{p}").into_bytes())
            );
            assert_eq!(
                got.source_identity_secret
                    .as_ref()
                    .map(|p| p.expose_secret().to_vec()),
                password.map(|p| format!("source-{p}").into_bytes())
            );
            assert_eq!(
                got.geo_identity_secret
                    .as_ref()
                    .map(|p| p.expose_secret().to_vec()),
                password.map(|p| format!("geo-{p}").into_bytes())
            );
            assert_eq!(
                got.storage_key.as_ref().map(|p| p.expose_secret().to_vec()),
                password.map(|p| format!("storage-{p}").into_bytes())
            );
            assert_eq!(
                got.geo_storage_key
                    .as_ref()
                    .map(|p| p.expose_secret().to_vec()),
                password.map(|p| format!("geo-storage-{p}").into_bytes())
            );
            assert_eq!(
                got.tls.as_ref().map(|t| (
                    t.certificate_pem.as_str(),
                    t.key_pem.expose_secret().to_vec()
                )),
                password.map(|p| (
                    "-----BEGIN CERTIFICATE-----\nMII\n",
                    format!("key-{p}").into_bytes()
                ))
            );
            assert_eq!(
                got.etcd_tls.as_ref().map(|t| (
                    t.certificate_pem.as_str(),
                    t.key_pem.expose_secret().to_vec()
                )),
                password.map(|p| ("etcd-cert", format!("etcd-key-{p}").into_bytes()))
            );
            assert_eq!(
                got.patroni_api_password
                    .as_ref()
                    .map(|p| p.expose_secret().to_vec()),
                password.map(|p| format!("patroni-{p}").into_bytes())
            );
            assert_eq!(
                got.etcd_password
                    .as_ref()
                    .map(|p| p.expose_secret().to_vec()),
                password.map(|p| format!("etcd-{p}").into_bytes())
            );
        }
    }

    #[test]
    fn a_tls_certificate_comes_with_its_key() {
        for (input, half) in [
            (
                r#"{"version":2,"identity_secret":"s","tls_certificate":"c"}"#,
                "tls_certificate",
            ),
            (
                r#"{"version":2,"identity_secret":"s","tls_key":"k3y"}"#,
                "tls_key",
            ),
            (
                r#"{"version":2,"identity_secret":"s","etcd_key":"k3y"}"#,
                "etcd_key",
            ),
        ] {
            let err = read(input).unwrap_err().to_string();
            assert!(err.contains(half) && !err.contains("k3y"), "{err}");
        }
    }

    #[test]
    fn version_1_is_read_but_cannot_carry_a_new_password() {
        let old = read(r#"{"version":1,"identity_secret":"s","initial_password":"p"}"#).unwrap();
        assert!(old.initial_password.is_some() && old.new_password.is_none());
        let err = read(r#"{"version":1,"identity_secret":"s","new_password":"n3w"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("new_password needs version 2") && !err.contains("n3w"),
            "{err}"
        );
    }

    #[test]
    fn bad_handshakes_say_what_is_wrong_without_echoing_secrets() {
        let cases: [(&str, &str); 6] = [
            ("", "no handshake on stdin"),
            ("  \n", "no handshake on stdin"),
            ("s3cr3t-raw-secret", "not JSON at line 1"),
            (
                r#"{"version":3,"identity_secret":"s3cr3t"}"#,
                "handshake version 3 is not supported",
            ),
            (r#"{"version":1}"#, "a missing or mistyped field"),
            (
                r#"{"version":1,"identity_secret":" "}"#,
                "empty identity_secret",
            ),
        ];
        for (input, want) in cases {
            let err = read(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input:?}: {err}");
            assert!(!err.contains("s3cr3t"), "{input:?}: {err}");
        }
        let err = read(r#"{"version":1,"identity_secret":7}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("mistyped"), "{err}");
        let long = format!(
            r#"{{"version":1,"identity_secret":"{}"}}"#,
            "x".repeat(MAX_LEN)
        );
        assert!(matches!(read(&long), Err(HandshakeError::TooLong)));
    }

    #[test]
    fn debug_prints_no_secret() {
        let h =
            read(r#"{"version":2,"identity_secret":"s3cr3t","initial_password":"pw0rd","new_password":"n3w","tls_certificate":"c","tls_key":"k3y","etcd_certificate":"e","etcd_key":"etcdk3y","patroni_api_password":"ap1","geo_storage_key":"g3o"}"#).unwrap();
        let printed = format!("{h:?}");
        assert!(
            !printed.contains("s3cr3t")
                && !printed.contains("pw0rd")
                && !printed.contains("n3w")
                && !printed.contains("k3y")
                && !printed.contains("ap1")
                && !printed.contains("g3o"),
            "{printed}"
        );
    }
}
