//! The running vault service: its state, its listeners, start-up and shutdown.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgcmk_crypto::SecretBytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::AuditLog;
use crate::clock::{Clock, SystemClock};
use crate::files::DataDir;
use crate::identity::{self, Directory, Principal};
use crate::keys::cache::KeyCache;
use crate::seal::DerivedKeys;
use crate::storage::Store;
use crate::token::{self, AuthError, TokenError};
use crate::vaults::{VaultRecord, Vaults};

/// Start-up and shutdown live in [`crate::serve`]; re-exported here, where
/// `pgcmk vault serve` has always found them.
pub use crate::serve::{run, start};

/// How `pgcmk vault serve` runs.
pub struct ServeOptions {
    /// Data directory (created 0700 on first start).
    pub data_dir: PathBuf,
    /// Address of the main port, when given (`--listen`); without it the stored
    /// address, or a free loopback port on the first start (see [`crate::listen`]).
    /// Vault ports use the same IP.
    pub listen: Option<SocketAddr>,
    /// Passphrase for an Argon2id-derived root key, instead of `root.key`.
    pub passphrase: Option<SecretBytes>,
    /// How often rotation policies and scheduled purges are checked.
    pub maintenance_interval: Duration,
    /// Lifetime of issued tokens, seconds.
    pub token_lifetime_secs: i64,
    /// Data-plane operations allowed in flight at once; more are answered 429 Throttled.
    pub max_in_flight: usize,
    /// The time that tokens, key validity and rotation policies follow.
    pub clock: Arc<dyn Clock>,
    /// What a client may cost a listener before it is dropped: deadlines for the
    /// handshake, headers and body, connection caps.
    pub client_limits: pgcmk_hostkeys::listener::Limits,
    /// The token RSA-HSM keys are generated in; without one, creating them is refused.
    pub hsm: Option<crate::keys::hsm::HsmConfig>,
    /// Where to serve Prometheus metrics (`--metrics-listen`); none by default.
    pub metrics_listen: Option<pgcmk_hostkeys::metrics_endpoint::MetricsAddress>,
}

impl ServeOptions {
    /// Defaults: the stored address (first start: loopback, a free port), root key
    /// file, checks every 60 s, 1-hour tokens.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            listen: None,
            passphrase: None,
            maintenance_interval: Duration::from_secs(60),
            token_lifetime_secs: token::DEFAULT_LIFETIME_SECS,
            max_in_flight: 1024,
            clock: Arc::new(SystemClock),
            client_limits: pgcmk_hostkeys::listener::Limits::default(),
            hsm: None,
            metrics_listen: None,
        }
    }
}

/// What clients need to reach the service: `service.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Management API base URL (`https://127.0.0.1:PORT`).
    pub url: String,
    /// CA certificate to trust (`REQUESTS_CA_BUNDLE`).
    pub ca_file: PathBuf,
    /// Managed-identity token endpoint (`IDENTITY_ENDPOINT`).
    pub identity_endpoint: String,
    /// OAuth2 client-credentials token endpoint.
    pub token_endpoint: String,
    /// Process id of the service.
    pub pid: u32,
}

/// Shared state of a running service.
pub struct Service {
    pub(crate) dir: DataDir,
    pub(crate) store: Arc<Store>,
    pub(crate) keys: DerivedKeys,
    pub(crate) directory: Directory,
    pub(crate) vaults: Vaults,
    pub(crate) cache: KeyCache,
    pub(crate) audit: AuditLog,
    pub(crate) url: String,
    pub(crate) ip: IpAddr,
    pub(crate) tls: Arc<rustls::ServerConfig>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) listeners: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) client_limits: pgcmk_hostkeys::listener::Limits,
    pub(crate) anonymous_budget: crate::anonymous_budget::AnonymousBudget,
    pub(crate) token_lifetime_secs: i64,
    /// Admission control for data-plane operations (429 Throttled when exhausted).
    pub(crate) in_flight: Arc<tokio::sync::Semaphore>,
    /// Threads for cryptographic operations (FIFO, one per core).
    pub(crate) crypto_pool: crate::worker_pool::WorkerPool,
    /// What "now" is.
    pub(crate) clock: Arc<dyn Clock>,
    /// The token of RSA-HSM keys, when configured.
    pub(crate) hsm: Option<crate::keys::hsm::Hsm>,
}

impl Service {
    /// Seconds since the Unix epoch, by the service's clock.
    pub fn now(&self) -> i64 {
        self.clock.now_unix()
    }

    /// The base URL of a vault.
    pub fn vault_url(&self, vault: &VaultRecord) -> String {
        format!("https://{}", SocketAddr::new(self.ip, vault.port))
    }

    /// The authority clients are pointed to in 401 challenges.
    pub fn authority(&self) -> String {
        format!("{}/pgcmk", self.url)
    }

    /// A `WWW-Authenticate` challenge for `resource`.
    pub fn challenge(&self, resource: &str, error: Option<&TokenError>) -> String {
        let mut c = format!(
            "Bearer authorization=\"{}\", resource=\"{resource}\"",
            self.authority()
        );
        if let Some(e) = error {
            c.push_str(&format!(
                ", error=\"invalid_token\", error_description=\"{e}\""
            ));
        }
        c
    }

    /// Checks an `Authorization` header's bearer token for `audience` and returns
    /// the (still existing) caller.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        audience: &str,
    ) -> Result<Principal, AuthError> {
        let header = authorization.unwrap_or_default();
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(AuthError::MissingToken)?;
        let claims = token::verify(&self.keys.tokens, token.trim(), audience, self.now())
            .map_err(AuthError::InvalidToken)?;
        self.directory
            .get(&claims.oid)
            .ok_or(AuthError::PrincipalGone)
    }

    /// Issues a token for `principal` and `audience`.
    pub fn issue_token(&self, principal: &Principal, audience: &str) -> (String, i64) {
        let now = self.now();
        let exp = now + self.token_lifetime_secs;
        let claims = token::Claims {
            iss: self.url.clone(),
            aud: audience.trim_end_matches('/').to_string(),
            oid: principal.object_id.clone(),
            appid: principal.client_id.clone(),
            iat: now,
            nbf: now,
            exp,
            jti: identity::new_id(),
        };
        (token::issue(&self.keys.tokens, &claims), exp)
    }

    /// The vault whose base URL is `resource` (a token audience), if any.
    pub fn vault_for_resource(&self, resource: &str) -> Option<VaultRecord> {
        let r = resource.trim_end_matches('/');
        self.vaults
            .list()
            .into_iter()
            .find(|v| self.vault_url(v) == r)
    }
}
