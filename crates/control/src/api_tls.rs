//! HTTPS for the REST API, both ends.
//!
//! The server side is the vault's mechanism ([`pgcmk_hostkeys::local_ca`]) with the
//! control plane's own CA: made on first start, kept in the state store with its
//! server key sealed under a key derived from the root key, and its certificate
//! (re)written to `STATE/ca.pem` at every start for clients.
//!
//! The client side ([`ApiClient`]) trusts exactly that CA certificate and speaks
//! HTTPS only, and turns connection failures into messages that say what to give.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pgcmk_crypto::sealed::Sealer;
use pgcmk_hostkeys::local_ca::TlsIdentity;
use pgcmk_hostkeys::trust;

use crate::api::ApiErrorBody;
use crate::error::StoreError;
use crate::store::Store;
use crate::{Error, ErrorCode};

/// The CA certificate's file name in the state directory.
pub const CA_FILE: &str = "ca.pem";
/// Settings: the TLS identity (JSON; its server key sealed).
const TLS_IDENTITY: &str = "tls-identity";
/// What a client is told to do when its CA certificate is missing or wrong.
const HOW_TO_TRUST: &str = "set PGCMK_CONTROL_DIR to the control plane's directory (its state \
                            directory, holding the ca.pem `pgcmk serve` wrote there), or pass \
                            --ca-cert";

/// Settings: the names the server certificate adds to the loopback ones (JSON).
const TLS_IDENTITY_NAMES: &str = "tls-identity-names";

/// Loads the API's TLS identity, creating it on first start, writes
/// `STATE/ca.pem`, and returns the rustls server configuration. The certificate
/// names the loopback names and `names` (`pgcmk serve --api-name`); given other
/// names than the stored identity's, a new identity (a new CA) replaces it, and
/// every client and host must take the new `ca.pem`.
pub fn server_config(
    state_dir: &Path,
    store: &Store,
    sealer: &Sealer,
    names: &[String],
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let corrupt = |source| {
        Error::Store(StoreError::Codec {
            what: "the TLS identity is corrupt",
            source,
        })
    };
    let stored_names = match store.setting(TLS_IDENTITY_NAMES)? {
        Some(json) => serde_json::from_slice::<Vec<String>>(&json).map_err(corrupt)?,
        None => Vec::new(),
    };
    let stored = match store.setting(TLS_IDENTITY)? {
        Some(json) => Some(serde_json::from_slice::<TlsIdentity>(&json).map_err(corrupt)?),
        None => None,
    };
    let identity = match stored {
        Some(identity) if stored_names == names => identity,
        replaced => {
            if replaced.is_some() {
                tracing::warn!(
                    names = ?names,
                    were = ?stored_names,
                    "the REST API's certificate names other addresses now: a new CA signed it; \
                     clients and hosts must trust the new ca.pem"
                );
            }
            let identity = TlsIdentity::generate_for("pgcmk control plane", names, sealer)?;
            let json = serde_json::to_vec(&identity).map_err(corrupt)?;
            let names_json = serde_json::to_vec(names).map_err(corrupt)?;
            store.put_settings(&[(TLS_IDENTITY, &json), (TLS_IDENTITY_NAMES, &names_json)])?;
            identity
        }
    };
    pgcmk_hostkeys::files::write_atomic(
        &state_dir.join(CA_FILE),
        identity.ca_pem()?.as_bytes(),
        0o644,
    )?;
    Ok(identity.server_config(sealer)?)
}

/// A client of the REST API at one endpoint, trusting one CA certificate.
#[derive(Debug)]
pub struct ApiClient {
    http: reqwest::blocking::Client,
    base: String,
    ca_file: PathBuf,
}

impl ApiClient {
    /// A client for `endpoint` (`https://HOST:PORT`) trusting only the CA
    /// certificate in `ca_file`; requests time out after `timeout`.
    pub fn new(endpoint: &str, ca_file: &Path, timeout: Duration) -> Result<Self, Error> {
        Self::leaving_from(endpoint, ca_file, timeout, None)
    }

    /// Like [`ApiClient::new`], its connections leaving from `local_address` when
    /// given (a host daemon: the plane admits a host only from its address).
    pub fn leaving_from(
        endpoint: &str,
        ca_file: &Path,
        timeout: Duration,
        local_address: Option<std::net::IpAddr>,
    ) -> Result<Self, Error> {
        let base = endpoint.trim_end_matches('/');
        if !base.starts_with("https://") {
            return Err(Error::BadRequest(format!(
                "--endpoint {endpoint} is not an https:// URL: the control plane's API is \
                 served over HTTPS only (default https://127.0.0.1:7480)"
            )));
        }
        let ca_pem = trust::read_ca_pem(ca_file, HOW_TO_TRUST)?;
        Ok(Self {
            http: trust::blocking_client_from(&ca_pem, timeout, local_address)?,
            base: base.to_string(),
            ca_file: ca_file.to_path_buf(),
        })
    }

    /// The HTTPS client.
    pub fn http(&self) -> &reqwest::blocking::Client {
        &self.http
    }

    /// The URL of `path` (starting with `/`) on the API.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `request` and returns the answer if it is a success, else the error
    /// the API described ([`Error::Api`], with its stable code).
    pub fn call(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response, Error> {
        let response = self.send(request)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        Err(match response.json::<ApiErrorBody>() {
            Ok(body) => Error::Api {
                status: status.as_u16(),
                code: body.error.code,
                message: body.error.message,
            },
            Err(_) => Error::Api {
                status: status.as_u16(),
                code: ErrorCode::of_status(status.as_u16()),
                message: format!("the control plane at {} answered {status}", self.base),
            },
        })
    }

    /// Sends `request`, explaining a failure to connect or to trust the server.
    pub fn send(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response, Error> {
        request.send().map_err(|e| {
            Error::Unreachable(if trust::is_untrusted_certificate(&e) {
                format!(
                    "the control plane at {} presented a certificate that {} does not vouch \
                     for: {HOW_TO_TRUST} (the one of the `pgcmk serve` listening there)",
                    self.base,
                    self.ca_file.display()
                )
            } else {
                format!(
                    "cannot reach the control plane at {}: {e}; is `pgcmk serve` running? \
                     (--endpoint / PGCMK_ENDPOINT)",
                    self.base
                )
            })
        })
    }
}
