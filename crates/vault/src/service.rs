//! The running vault service: its state, its listeners, start-up and shutdown.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::Router;
use pgcmk_crypto::SecretBytes;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::AuditLog;
use crate::files::{self, DataDir};
use crate::http::{admin_api, vault_api, ApiError};
use crate::identity::{Directory, Principal, PrincipalKind};
use crate::keys::cache::KeyCache;
use crate::listen::{self, Listener};
use crate::seal::{self, DerivedKeys, RootKeySource};
use crate::storage::Store;
use crate::token::{self, TokenError};
use crate::vaults::{VaultRecord, Vaults};
use crate::{keys, now_unix, tls, Error};

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
    ip: IpAddr,
    tls: Arc<rustls::ServerConfig>,
    pub(crate) shutdown: watch::Receiver<bool>,
    listeners: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) token_lifetime_secs: i64,
    /// Admission control for data-plane operations (429 Throttled when exhausted).
    pub(crate) in_flight: Arc<tokio::sync::Semaphore>,
    /// Threads for cryptographic operations (FIFO, one per core).
    pub(crate) crypto_pool: crate::worker_pool::WorkerPool,
}

/// Keys kept unsealed in memory at most (LRU).
const KEY_CACHE_CAPACITY: usize = 512;

impl Service {
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

    /// Checks the bearer token for `audience` and returns the (still existing) caller.
    pub fn authenticate(&self, headers: &HeaderMap, audience: &str) -> Result<Principal, ApiError> {
        let unauthorized = |msg: String, err: Option<&TokenError>| {
            let mut e = ApiError::new(axum::http::StatusCode::UNAUTHORIZED, "Unauthorized", msg);
            e.challenge = Some(self.challenge(audience, err));
            e
        };
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let Some(token) = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
        else {
            return Err(unauthorized(
                "AKV10000: Request is missing a Bearer or PoP token.".into(),
                None,
            ));
        };
        let claims =
            token::verify(&self.keys.tokens, token.trim(), audience, now_unix()).map_err(|e| {
                unauthorized(
                    format!("AKV10022: Invalid audience or token: {e}."),
                    Some(&e),
                )
            })?;
        self.directory.get(&claims.oid).ok_or_else(|| {
            unauthorized(
                "AKV10032: the token's principal no longer exists.".into(),
                None,
            )
        })
    }

    /// Issues a token for `principal` and `audience`.
    pub fn issue_token(&self, principal: &Principal, audience: &str) -> (String, i64) {
        let now = now_unix();
        let exp = now + self.token_lifetime_secs;
        let claims = token::Claims {
            iss: self.url.clone(),
            aud: audience.trim_end_matches('/').to_string(),
            oid: principal.object_id.clone(),
            appid: principal.client_id.clone(),
            iat: now,
            nbf: now,
            exp,
            jti: crate::http::request_id(),
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

    /// Binds a free port for a new vault.
    pub async fn bind_new_vault_port(&self) -> Result<TcpListener, Error> {
        let addr = SocketAddr::new(self.ip, 0);
        TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io("binding a vault port on", addr.to_string(), e))
    }

    /// Starts serving a vault on `listener`.
    pub fn serve_vault(self: &Arc<Self>, name: &str, listener: TcpListener) {
        let router = Router::new()
            .fallback(vault_api::handle)
            .with_state(vault_api::VaultCtx {
                service: self.clone(),
                vault: name.to_string(),
            });
        self.spawn_listener(listener, router);
    }

    fn spawn_listener(&self, listener: TcpListener, router: Router) {
        let task = tokio::spawn(pgcmk_hostkeys::listener::serve(
            listener,
            self.tls.clone(),
            router,
            self.shutdown.clone(),
        ));
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }
}

/// Starts the service, calls `ready` once it listens (after writing `service.json`),
/// and runs until SIGTERM or SIGINT.
pub async fn run(options: ServeOptions, ready: impl FnOnce(&ServiceInfo)) -> Result<(), Error> {
    use tokio::signal::unix::{signal, SignalKind};
    // Install the handlers before service.json exists: a client may signal as soon as it sees it.
    let signal_error = |e| Error::io("installing signal handlers", "SIGTERM/SIGINT", e);
    let mut term = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut int = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let (stop, stopped) = watch::channel(false);
    let service = start(options, stopped).await?;
    let info = service_info(&service);
    ready(&info);
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
    let _ = stop.send(true);
    let tasks = std::mem::take(&mut *service.listeners.lock().unwrap_or_else(|p| p.into_inner()));
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

fn service_info(service: &Service) -> ServiceInfo {
    ServiceInfo {
        url: service.url.clone(),
        ca_file: service.dir.ca_file(),
        identity_endpoint: format!("{}/msi/token", service.url),
        token_endpoint: format!("{}/oauth2/token", service.url),
        pid: std::process::id(),
    }
}

/// Proves the root key belongs to this database (a sealed check value written on
/// first start), so a wrong key fails with a clear message instead of later.
fn check_root_key(store: &Store, keys: &DerivedKeys) -> Result<(), Error> {
    const AAD: &[u8] = b"root-key-check";
    match store.get::<Vec<u8>>(crate::storage::META, "root_check")? {
        Some(sealed) => keys.storage.open(AAD, &sealed).map(drop).map_err(|_| {
            Error::RootKey("the root key does not match this data directory: restore the right root key or passphrase".into())
        }),
        None => {
            let sealed = keys.storage.seal(AAD, b"pgcmk")?;
            store.write(|tx| tx.put(crate::storage::META, "root_check", &sealed))
        }
    }
}

/// Opens or initializes the data directory and starts all listeners.
pub async fn start(
    options: ServeOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<Arc<Service>, Error> {
    if options.token_lifetime_secs < 1 {
        return Err(Error::Config(
            "the token lifetime must be at least 1 second".into(),
        ));
    }
    let dir = DataDir::create(&options.data_dir)?;
    let first_start = !dir.database_file().exists();
    let source = match options.passphrase {
        Some(p) => RootKeySource::Passphrase(p),
        None => RootKeySource::File,
    };
    let keys = DerivedKeys::derive(&seal::load_root_key(&dir, source, first_start)?)?;
    let store = Arc::new(Store::open(&dir.database_file())?);
    check_root_key(&store, &keys)?;
    let tls = tls::server_config(&store, &keys, &dir)?;
    let directory = Directory::load(&store, keys.credentials.clone())?;
    if directory.list().is_empty() {
        let credential = directory.create(&store, "admin", PrincipalKind::User, true)?;
        files::write_atomic(
            &dir.admin_credential_file(),
            &serde_json::to_vec_pretty(&credential)?,
            0o600,
        )?;
    }
    let vaults = Vaults::load(&store)?;
    let audit = AuditLog::start(store.clone(), keys.audit.clone())?;
    let main = listen::bind_service(&store, options.listen).await?;
    let local = listen::local_address(&main)?;
    let mut vault_listeners = Vec::new();
    for vault in vaults.list() {
        let address = SocketAddr::new(local.ip(), vault.port);
        let listener = listen::bind(address, Listener::Vault(vault.name.clone())).await?;
        tracing::info!("vault '{}' serving at https://{address}", vault.name);
        vault_listeners.push((listener, vault.name));
    }
    let service = Arc::new(Service {
        dir,
        store,
        keys,
        directory,
        vaults,
        cache: KeyCache::new(KEY_CACHE_CAPACITY),
        audit,
        url: format!("https://{local}"),
        ip: local.ip(),
        tls,
        shutdown,
        listeners: Mutex::new(Vec::new()),
        token_lifetime_secs: options.token_lifetime_secs,
        in_flight: Arc::new(tokio::sync::Semaphore::new(options.max_in_flight.max(1))),
        crypto_pool: crate::worker_pool::WorkerPool::per_core(),
    });
    service.spawn_listener(main, admin_api::router(service.clone()));
    for (listener, name) in vault_listeners {
        service.serve_vault(&name, listener);
    }
    let maintenance = tokio::spawn(keys::maintenance::run(
        service.clone(),
        options.maintenance_interval,
    ));
    service
        .listeners
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(maintenance);
    let info = service_info(&service);
    files::write_atomic(
        &service.dir.service_file(),
        &serde_json::to_vec_pretty(&info)?,
        0o644,
    )?;
    Ok(service)
}
