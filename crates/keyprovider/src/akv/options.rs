//! [`ClientOptions`]: how the client reaches vaults and token endpoints (trust, timeouts).

use std::path::PathBuf;
use std::time::Duration;

use super::client::DEFAULT_API_VERSION;
use crate::KeyError;

/// How long an idle pooled connection is kept for reuse.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Connection settings shared by the vault and the token endpoints.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// A PEM file of CA certificates to trust (e.g. `pgcmk vault serve`'s `ca.pem`).
    pub ca_file: Option<PathBuf>,
    /// Also trust the system's roots (true by default; false trusts `ca_file` only).
    pub system_roots: bool,
    /// Limit for a whole request, connect to last byte.
    pub timeout: Duration,
    /// Limit for establishing the TCP and TLS connection.
    pub connect_timeout: Duration,
    /// The `api-version` query parameter.
    pub api_version: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            ca_file: None,
            system_roots: true,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            api_version: DEFAULT_API_VERSION.to_string(),
        }
    }
}

impl ClientOptions {
    /// Trusts only the CAs in `ca_file` (a private vault's own CA).
    pub fn trusting_only(ca_file: impl Into<PathBuf>) -> Self {
        Self {
            ca_file: Some(ca_file.into()),
            system_roots: false,
            ..Self::default()
        }
    }

    pub(super) fn http_client(&self) -> Result<reqwest::blocking::Client, KeyError> {
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            // A bearer token must never follow a redirect somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            // Below common server idle limits (pgcmk's vault: 30 s), so a connection is
            // rarely reused just as the server closes it.
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .user_agent(concat!("pgcmk-keyprovider/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path).map_err(|e| KeyError::Invalid {
                reason: format!("cannot read CA file {}: {e}", path.display()),
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| KeyError::Invalid {
                    reason: format!("CA file {} holds no PEM certificate", path.display()),
                })?;
            builder = if self.system_roots {
                builder.tls_certs_merge(certs)
            } else {
                builder.tls_certs_only(certs)
            };
        } else if !self.system_roots {
            return Err(KeyError::Invalid {
                reason: "no CA to trust: give a CA file or allow the system roots".into(),
            });
        }
        builder.build().map_err(|e| KeyError::Invalid {
            reason: format!("cannot set up the HTTPS client: {e}"),
        })
    }
}
