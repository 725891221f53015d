//! Who may use the consensus store of highly available servers: etcd speaks TLS
//! only, on its client and peer URLs, and requires a client certificate
//! (`--client-cert-auth`), so that only the holders of a certificate of the etcd
//! CA — each node's Patroni and the control plane — can read or write the leader
//! locks and the clusters' configuration (`docs/high-availability.md`).
//!
//! A CA of its own, not the servers CA: every PostgreSQL server (single servers and
//! read replicas too) holds a certificate of the servers CA, and none of them may
//! touch the DCS. Its key is sealed in the state store under a key derived from
//! the root key; its certificate is written to `STATE/etcd-ca.pem` at every start.
//! Member certificates (server and client use, for the peer URLs) are issued at
//! every start of a member (the control plane restarts members before theirs
//! expire); client certificates at every start of a node's agent
//! (handed over its start-up handshake, kept on its encrypted mount) and for each
//! check the control plane makes.
//!
//! For an existing cluster (`pgcmk serve --etcd-endpoints`) the operator gives
//! its CA file and a client certificate and key ([`GivenEtcdTls`]), which the
//! control plane uses and hands to every node's Patroni.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pgcmk_agent::contract::handshake::NodeTls;
use pgcmk_crypto::sealed::Sealer;
use pgcmk_crypto::SecretBytes;
use pgcmk_hostkeys::issuing_ca::CertificateUse;
use zeroize::Zeroizing;

use crate::store::Store;
use crate::stored_ca::{CaPlace, StoredCa};
use crate::Error;

/// The etcd CA certificate's file name in the state directory.
pub const ETCD_CA_FILE: &str = "etcd-ca.pem";
/// Where the etcd CA is kept.
const ETCD_CA: CaPlace = CaPlace {
    setting: "etcd-ca",
    file_name: ETCD_CA_FILE,
    common_name: "pgcmk etcd CA",
    corrupt: "the etcd CA is corrupt",
};
/// How long a client certificate is valid: it is renewed at each start of a
/// node's agent (like the nodes' own).
const LIFETIME: Duration = crate::servers_ca::CERTIFICATE_LIFETIME;
/// How long a member's certificate is valid: renewed at each of its starts, and
/// by a restart once two thirds of it passed ([`crate::etcd`]).
pub const MEMBER_LIFETIME: Duration = crate::servers_ca::CERTIFICATE_LIFETIME;
/// The names a local member's certificate holds: it listens on loopback only.
const MEMBER_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// The control plane's CA for its local etcd cluster.
#[derive(Debug)]
pub struct EtcdCa {
    ca: StoredCa,
    member_lifetime: Duration,
}

impl EtcdCa {
    /// Loads the etcd CA, creating it on first start, and writes its certificate
    /// to `STATE/etcd-ca.pem`. Members' certificates live `member_lifetime`
    /// ([`MEMBER_LIFETIME`] but in tests that watch them renewed).
    pub fn open(
        state_dir: &Path,
        store: &Store,
        sealer: Sealer,
        member_lifetime: Duration,
    ) -> Result<Self, Error> {
        let ca = StoredCa::open(state_dir, store, sealer, &ETCD_CA)?;
        Ok(Self {
            ca,
            member_lifetime,
        })
    }

    /// How long a member's certificate lives.
    pub fn member_lifetime(&self) -> Duration {
        self.member_lifetime
    }

    /// The CA certificate's file: what members and clients trust each other by.
    pub fn file(&self) -> &Path {
        self.ca.file()
    }

    /// A new certificate and key for member `name`: a server on its client and
    /// peer URLs, and a client of the other members.
    pub fn member(&self, name: &str) -> Result<NodeTls, Error> {
        let names = MEMBER_NAMES.map(String::from);
        let common_name = format!("pgcmk etcd member {name}");
        self.ca.issue(
            CertificateUse::Peer,
            &common_name,
            &names,
            self.member_lifetime,
        )
    }

    /// A new client certificate and key for `who` (a node's Patroni, or the
    /// control plane itself).
    pub fn client(&self, who: &str) -> Result<NodeTls, Error> {
        let common_name = format!("pgcmk etcd client {who}");
        self.ca
            .issue(CertificateUse::Client, &common_name, &[], LIFETIME)
    }
}

/// An existing etcd cluster's trust, as `pgcmk serve --etcd-ca-file
/// --etcd-cert-file --etcd-key-file` gives it.
#[derive(Clone, Debug)]
pub struct GivenEtcdTls {
    /// The cluster's CA certificate (PEM): it must be readable by the PostgreSQL
    /// user, whose Patroni verifies the members by it.
    pub ca_file: PathBuf,
    /// The client certificate and its key, handed to every node's Patroni.
    pub client: NodeTls,
    /// The password of the cluster's root user, when the control plane is to give
    /// each highly available server a user of its own there (`pgcmk serve
    /// --etcd-root-password-file`); never handed to a node.
    pub root_password: Option<SecretBytes>,
}

impl GivenEtcdTls {
    /// Reads the CA, the client certificate and its key from the files given, and
    /// the root user's password from `root_password_file` when given.
    pub fn read(
        ca_file: &Path,
        cert_file: &Path,
        key_file: &Path,
        root_password_file: Option<&Path>,
    ) -> Result<Self, Error> {
        let root_password = root_password_file.map(read_root_password).transpose()?;
        let read = |path: &Path, what: &str| {
            std::fs::read(path).map_err(|e| {
                Error::BadRequest(format!(
                    "cannot read the etcd {what} {} ({e}): give a readable PEM file",
                    path.display()
                ))
            })
        };
        let ca = read(ca_file, "CA certificate")?;
        if reqwest::Certificate::from_pem_bundle(&ca).map_or(true, |c| c.is_empty()) {
            return Err(Error::BadRequest(format!(
                "{} holds no PEM certificate: give the etcd cluster's CA certificate",
                ca_file.display()
            )));
        }
        let certificate_pem = String::from_utf8(read(cert_file, "client certificate")?)
            .map_err(|_| Error::BadRequest(format!("{} is not a PEM file", cert_file.display())))?;
        let key_pem = SecretBytes::new(read(key_file, "client key")?);
        let given = Self {
            ca_file: ca_file.to_path_buf(),
            client: NodeTls {
                certificate_pem,
                key_pem,
            },
            root_password,
        };
        client(&ca, &given.client, Duration::from_secs(1)).map_err(|_| {
            Error::BadRequest(format!(
                "{} and {} are not a PEM certificate and its private key",
                cert_file.display(),
                key_file.display()
            ))
        })?;
        Ok(given)
    }
}

/// The longest root password accepted (etcd's own limit is far above any
/// password a person or a generator makes).
const MAX_ROOT_PASSWORD: u64 = 1024;

/// The password in `path`, one line (a final newline is not part of it), from a
/// file no one but its owner may read: it opens every server's keys in etcd.
fn read_root_password(path: &Path) -> Result<SecretBytes, Error> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let refuse = |why: String| {
        Error::BadRequest(format!(
            "--etcd-root-password-file {}: {why}",
            path.display()
        ))
    };
    let too_large = || {
        refuse(format!(
            "give a file holding the password alone (at most {MAX_ROOT_PASSWORD} bytes)"
        ))
    };
    let cannot_read =
        |e: std::io::Error| refuse(format!("cannot read it ({e}): give a readable file"));
    // Not opened unless a file (a FIFO would block the open); then the checks and
    // the read go through one open file, so the path cannot change between.
    if !std::fs::metadata(path).map_err(cannot_read)?.is_file() {
        return Err(too_large());
    }
    let mut file = std::fs::File::open(path).map_err(cannot_read)?;
    let meta = file.metadata().map_err(cannot_read)?;
    if !meta.is_file() || meta.len() > MAX_ROOT_PASSWORD {
        return Err(too_large());
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(refuse(
            "others than its owner may read or write it: chmod 600 it".into(),
        ));
    }
    // Room for the whole bound up front: no reallocation leaves a copy behind.
    let mut read = Vec::with_capacity(MAX_ROOT_PASSWORD as usize + 1);
    let outcome = file
        .by_ref()
        .take(MAX_ROOT_PASSWORD + 1)
        .read_to_end(&mut read);
    let mut bytes = SecretBytes::new(read);
    outcome.map_err(cannot_read)?;
    if bytes.expose_secret().len() as u64 > MAX_ROOT_PASSWORD {
        return Err(too_large());
    }
    let text = bytes.expose_secret();
    let line = text
        .strip_suffix(b"\n")
        .map(|t| t.strip_suffix(b"\r").unwrap_or(t))
        .unwrap_or(text);
    if line.is_empty() || line.contains(&b'\n') {
        return Err(refuse("it must hold the password, on one line".into()));
    }
    if line.len() != text.len() {
        bytes = SecretBytes::new(line.to_vec());
    }
    Ok(bytes)
}

/// An HTTPS client of etcd (or of the nodes' Patroni REST APIs, which require the
/// same client certificates): trusts only `ca_pem`, and shows `identity`.
pub fn client(
    ca_pem: &[u8],
    identity: &NodeTls,
    timeout: Duration,
) -> Result<reqwest::blocking::Client, Error> {
    let roots = reqwest::Certificate::from_pem_bundle(ca_pem)
        .map_err(|e| Error::BadRequest(format!("the CA certificate: {e}")))?;
    let mut pem = Zeroizing::new(identity.key_pem.expose_secret().to_vec());
    pem.extend_from_slice(b"\n");
    pem.extend_from_slice(identity.certificate_pem.as_bytes());
    let identity = reqwest::Identity::from_pem(&pem)
        .map_err(|e| Error::BadRequest(format!("the client certificate: {e}")))?;
    reqwest::blocking::Client::builder()
        .tls_certs_only(roots)
        .identity(identity)
        .https_only(true)
        .no_proxy()
        .timeout(timeout)
        .build()
        .map_err(|e| Error::BadRequest(format!("an HTTPS client with a client certificate: {e}")))
}
