//! Starting and stopping the service: the data directory, the root key, storage,
//! and the HTTPS listeners of the main port and of every vault.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::audit::AuditLog;
use crate::files::{self, DataDir};
use crate::http::{admin_api, vault_api};
use crate::identity::{Directory, PrincipalKind};
use crate::keys::cache::KeyCache;
use crate::listen::{self, Listener};
use crate::seal::{self, DerivedKeys, RootKeySource};
use crate::service::{ServeOptions, Service, ServiceInfo};
use crate::storage::Store;
use crate::vaults::Vaults;
use crate::{tls, Error};

/// Keys kept unsealed in memory at most (LRU).
const KEY_CACHE_CAPACITY: usize = 512;

impl Service {
    /// Binds a free port for a new vault.
    pub async fn bind_new_vault_port(&self) -> Result<TcpListener, Error> {
        let addr = SocketAddr::new(self.ip, 0);
        TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io("binding a vault port on", addr.to_string(), e))
    }

    /// Starts serving a vault on `listener`.
    pub fn serve_vault(self: &Arc<Self>, name: &str, listener: TcpListener) {
        self.spawn_listener(listener, self.vault_router(name));
    }

    /// The data-plane routes of vault `name` (its listener's, and the security
    /// officer's console's).
    pub fn vault_router(self: &Arc<Self>, name: &str) -> Router {
        Router::new()
            .fallback(vault_api::handle)
            .with_state(vault_api::VaultCtx {
                service: self.clone(),
                vault: name.to_string(),
            })
    }

    /// Serves `/metrics` on `listener` until shutdown; key states are read at each scrape.
    fn spawn_metrics(self: &Arc<Self>, listener: TcpListener) {
        crate::metrics::describe();
        let service = Arc::downgrade(self);
        let router = pgcmk_hostkeys::metrics_endpoint::router(move || {
            if let Some(service) = service.upgrade() {
                crate::metrics::refresh(&service);
            }
        });
        let mut shutdown = self.shutdown.clone();
        let task = tokio::spawn(pgcmk_hostkeys::metrics_endpoint::serve(
            listener,
            router,
            async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            },
        ));
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }

    fn spawn_listener(&self, listener: TcpListener, router: Router) {
        let task = tokio::spawn(pgcmk_hostkeys::listener::serve_with(
            listener,
            self.tls.clone(),
            router,
            self.shutdown.clone(),
            self.client_limits,
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

/// What start-up opens before anything listens.
struct State {
    dir: DataDir,
    keys: DerivedKeys,
    store: Arc<Store>,
    tls: Arc<rustls::ServerConfig>,
    directory: Directory,
    vaults: Vaults,
    audit: AuditLog,
}

/// Opens or initializes the data directory, the root key, storage, the TLS identity,
/// the identities (creating `admin` on the first start), the vaults and the audit writer.
fn open_state(
    data_dir: &std::path::Path,
    passphrase: Option<pgcmk_crypto::SecretBytes>,
) -> Result<State, Error> {
    let dir = DataDir::create(data_dir)?;
    let first_start = !dir.database_file().exists();
    let source = match passphrase {
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
    Ok(State {
        dir,
        keys,
        store,
        tls,
        directory,
        vaults,
        audit,
    })
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
    // Installed before anything is counted, bound before anything else listens.
    let metrics_listener = match options.metrics_listen {
        Some(address) => Some(
            pgcmk_hostkeys::metrics_endpoint::bind(address)
                .await
                .map_err(|e| Error::Config(e.to_string()))?,
        ),
        None => None,
    };
    let data_dir = options.data_dir.clone();
    let passphrase = options.passphrase;
    // Loading the module and logging in block; a wrong setting stops start-up here.
    let hsm = match options.hsm {
        Some(config) => Some(
            tokio::task::spawn_blocking(move || crate::keys::hsm::Hsm::open(config))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?,
        ),
        None => None,
    };
    // Opening the database, deriving keys (Argon2 for a passphrase) and the first
    // writes block: run them off the async runtime.
    let state = tokio::task::spawn_blocking(move || open_state(&data_dir, passphrase))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    let main = listen::bind_service(&state.store, options.listen).await?;
    let local = listen::local_address(&main)?;
    let mut vault_listeners = Vec::new();
    for vault in state.vaults.list() {
        let address = SocketAddr::new(local.ip(), vault.port);
        let listener = listen::bind(address, Listener::Vault(vault.name.clone())).await?;
        tracing::info!("vault '{}' serving at https://{address}", vault.name);
        vault_listeners.push((listener, vault.name));
    }
    let service = Arc::new(Service {
        dir: state.dir,
        store: state.store,
        keys: state.keys,
        directory: state.directory,
        vaults: state.vaults,
        cache: KeyCache::new(KEY_CACHE_CAPACITY),
        audit: state.audit,
        url: format!("https://{local}"),
        ip: local.ip(),
        tls: state.tls,
        shutdown,
        listeners: Mutex::new(Vec::new()),
        client_limits: options.client_limits,
        anonymous_budget: Default::default(),
        token_lifetime_secs: options.token_lifetime_secs,
        in_flight: Arc::new(tokio::sync::Semaphore::new(options.max_in_flight.max(1))),
        crypto_pool: crate::worker_pool::WorkerPool::per_core(),
        clock: options.clock.clone(),
        hsm,
    });
    let main_routes =
        admin_api::router(service.clone()).merge(crate::console::router(service.clone()));
    service.spawn_listener(main, main_routes);
    for (listener, name) in vault_listeners {
        service.serve_vault(&name, listener);
    }
    if let Some(listener) = metrics_listener {
        service.spawn_metrics(listener);
    }
    let maintenance = tokio::spawn(crate::maintenance::run(
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
