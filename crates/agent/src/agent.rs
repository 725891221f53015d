//! The node agent: one process per server (`pgcmk agent --server-dir DIR
//! --instance NAME`).
//!
//! It disables core dumps, unwraps the server's DEK through the KEK into locked
//! memory, mounts cryptfs with a key derived from the DEK, runs PostgreSQL on the
//! mount as its child (restarting it with back-off when it exits), and runs the
//! key monitor. It reports its state in `status.json` ([`crate::report`]), which
//! the control plane reads.
//!
//! Its managed identity's secret comes on stdin from the control plane (never in
//! its arguments, environment or a file), read to the end at start and kept in
//! memory only.
//!
//! Before every key check it re-reads how to reach the key from `agent.json`, which
//! the control plane rewrites when the vault service moved.
//!
//! Signals: SIGTERM or SIGINT stop the server and exit; SIGHUP checks the key now.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgcmk_crypto::{Dek, SecretBytes};
use pgcmk_hostkeys::files::remove_durably;
use pgcmk_hostkeys::metrics_endpoint::MetricsAddress;
use pgcmk_keyprovider::{KeyEncryptionKey, KeyVersionId, WrappedDek};

use crate::backoff::{describe_delay, Backoff};
use crate::backup;
use crate::backup::geo::GeoKey;
use crate::backup::pgbackrest::{RepositoryKeys, StorageKeys};
use crate::clock::SystemClock;
use crate::contract::backup::Repository;
use crate::contract::server_dir::{read_json, write_json_atomic, write_private_file};
use crate::contract::{Actor, AgentConfig, Handshake, KekAccess, ServerDir};
use crate::error::IoContext;
use crate::key_watch::KeyWatch;
use crate::memory;
use crate::monitor::{Action, MonitorConfig};
use crate::patroni::access::PatroniAccess;
use crate::provision;
use crate::report::{Activity, Reporter};
use crate::serving::{Serving, RETRY_CAP, RETRY_FIRST};
use crate::Error;

/// How often the agent looks at signals and at PostgreSQL between checks.
const TICK: Duration = Duration::from_millis(100);

/// The key monitor's timing, as the control plane configured it.
fn monitor_config(config: &AgentConfig) -> MonitorConfig {
    let interval = Duration::from_millis(config.interval_ms);
    MonitorConfig {
        interval,
        grace: Duration::from_millis(config.grace_ms),
        first_retry: MonitorConfig::DEFAULT.first_retry.min(interval),
    }
}

/// Stop and revalidate requests, set from signal handlers.
#[derive(Clone, Default)]
struct Requests {
    stop: Arc<AtomicBool>,
    check_now: Arc<AtomicBool>,
}

impl Requests {
    /// Listens for SIGTERM/SIGINT (stop) and SIGHUP (check now) on a thread of its own.
    fn listen() -> Result<Self, Error> {
        use tokio::signal::unix::{signal, SignalKind};
        let requests = Self::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ctx(|| "starting the signal listener")?;
        let (mut term, mut int, mut hup) = runtime
            .block_on(async {
                Ok::<_, std::io::Error>((
                    signal(SignalKind::terminate())?,
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::hangup())?,
                ))
            })
            .ctx(|| "installing signal handlers")?;
        let r = requests.clone();
        std::thread::spawn(move || {
            runtime.block_on(async move {
                loop {
                    tokio::select! {
                        _ = term.recv() => r.stop.store(true, Ordering::SeqCst),
                        _ = int.recv() => r.stop.store(true, Ordering::SeqCst),
                        _ = hup.recv() => r.check_now.store(true, Ordering::SeqCst),
                    }
                }
            })
        });
        Ok(requests)
    }
}

/// Runs the agent for the server in `dir` until SIGTERM/SIGINT, with what the
/// [`Handshake`] read from `stdin` (a pipe from the control plane) brings: the
/// managed identity's secret, and for a new server the superuser's initial
/// password, with which the agent first provisions the server. `instance` is the
/// name the control plane gave this start; every report carries it.
/// With `metrics`, it serves its metrics there (see [`crate::metrics`]).
pub fn run(
    dir: &ServerDir,
    instance: &str,
    metrics: Option<MetricsAddress>,
    stdin: impl std::io::Read,
) -> Result<(), Error> {
    let handshake = take_handshake(stdin)?;
    let secret = handshake.identity_secret;
    let source_secret = handshake.source_identity_secret;
    let geo_secret = handshake.geo_identity_secret;
    let storage_key = handshake.storage_key;
    let geo_storage_key = handshake.geo_storage_key;
    let storage = StorageKeys {
        own: storage_key.as_ref(),
        geo: geo_storage_key.as_ref(),
    };
    let tls = handshake.tls;
    let replication_password = handshake.replication_password;
    let requests = Requests::listen()?;
    let mut config: AgentConfig = read_json(&dir.agent_config())?;
    let patroni_access = config
        .ha
        .as_ref()
        .map(|_| {
            PatroniAccess::from_handshake(
                handshake.etcd_tls,
                handshake.etcd_password,
                handshake.patroni_api_password,
            )
        })
        .transpose()?;
    let mut wrapped: WrappedDek = read_json(&dir.wrapped_dek())?;
    let new_server = match (handshake.initial_password, dir.cipher().exists()) {
        _ if dir.provisioning_was_cut_short() => {
            return Err(Error::ProvisioningCutShort(dir.root().to_path_buf()))
        }
        (Some(password), false) => Some(password),
        (None, true) => None,
        (Some(_), true) => return Err(Error::AlreadyProvisioned(dir.root().to_path_buf())),
        (None, false) => return Err(Error::NotProvisioned(dir.root().to_path_buf())),
    };
    std::fs::write(dir.agent_pid(), std::process::id().to_string()).ctx(|| "writing agent.pid")?;
    let reporter = Reporter::start(dir, instance.to_string(), wrapped.kek.clone())?;
    if let Some(address) = metrics {
        // Metrics are for watching: a listener that cannot start does not stop the server.
        match crate::metrics::serve(address) {
            Ok(bound) => reporter.metrics_at(bound),
            Err(e) => tracing::warn!("serving without metrics: {e}"),
        }
    }
    dir.detach_stale_mount();
    let mut kek = config.kek.connect(secret.clone())?;
    if let Some(password) = new_server {
        reporter.set(Activity::Starting {
            who: Actor::Agent,
            why: "provisioning: creating the encrypted volume and the PostgreSQL cluster".into(),
        });
        let dek = kek.unwrap(&wrapped)?;
        // Until it is removed, a later start knows the volume is half-made.
        write_private_file(&dir.provisioning_marker(), instance.as_bytes())?;
        match (&config.restore, &config.replica, &config.ha) {
            (None, Some(source), _) => {
                let password = replication_password.as_ref().ok_or_else(|| {
                    Error::Postgres(
                        "the handshake of a replica brought no replication_password".into(),
                    )
                })?;
                provision::provision_replica(dir, &config, &dek, source, password)?
            }
            (None, None, Some(_)) => {
                let replication = replication_password.as_ref().ok_or_else(|| {
                    Error::Postgres(
                        "the first handshake of a highly available node brought no \
                         replication_password"
                            .into(),
                    )
                })?;
                provision::provision_ha_node(dir, &config, &dek, &password, replication)?
            }
            (None, None, None) => provision::provision(dir, &config, &dek, &password)?,
            (Some(source), _, _) => {
                let secret = source_secret.ok_or_else(|| {
                    Error::Backup(
                        "the handshake of a restored server brought no source_identity_secret"
                            .into(),
                    )
                })?;
                let source_key = source.kek.connect(secret)?.unwrap(&source.wrapped_key)?;
                // The source's repository is the restore's only one, whichever
                // account holds it.
                let source_storage = match source.repository_kind {
                    Repository::Primary => storage.own,
                    Repository::Geo => storage.geo,
                };
                let source_keys = RepositoryKeys {
                    cipher: &source_key,
                    geo: None,
                    storage: StorageKeys {
                        own: source_storage,
                        geo: None,
                    },
                };
                provision::provision_restored(dir, &config, &dek, &password, source, &source_keys)?;
            }
        }
        remove_durably(&dir.provisioning_marker())?;
    }
    if config.backup.is_some() {
        backup::key::ensure_wrapped(&config.backup_key_file(dir), kek.as_ref())?;
    }
    let geo = GeoKey::connect(dir, &config, geo_secret, &reporter);
    let mut watch = KeyWatch::new(SystemClock, monitor_config(&config), wrapped.kek.clone());
    let mut mounts = Backoff::new(RETRY_FIRST, RETRY_CAP);
    let mut serving: Option<Serving> = None;
    let outcome = loop {
        if requests.stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        if let Some(e) = reporter.failure() {
            break Err(e);
        }
        if requests.check_now.swap(false, Ordering::SeqCst) {
            watch.check_now();
        }
        if watch.due() {
            follow_kek_access(dir, &mut config.kek, &mut kek, &secret);
            let checked = watch.check(kek.as_ref(), &wrapped);
            if checked.dek.is_some() {
                reporter.unwrapped();
            }
            if let Some(reason) = checked.failure {
                tracing::warn!("key check failed: {reason}");
                if serving.is_none() {
                    reporter.set(Activity::Inaccessible(reason));
                }
            }
            let mut dek = checked.dek;
            for action in checked.actions {
                match action {
                    Action::Unlock => {
                        let geo_key = dek
                            .as_ref()
                            .and(geo.as_ref())
                            .and_then(|g| g.key_at_mount(&reporter));
                        match dek.take().map(|d| {
                            let keys = (geo_key, storage);
                            unlock(dir, &config, kek.as_ref(), d, keys).and_then(|mut s| {
                                s.listen(dir, &config, tls.as_ref())?;
                                s.stream(dir, &config, replication_password.as_ref())?;
                                if let Some(access) = &patroni_access {
                                    access.install(dir, s.pg.install().user())?;
                                }
                                crate::patroni::adopt::prepare(
                                    dir,
                                    &config,
                                    s.pg.install(),
                                    replication_password.as_ref(),
                                )?;
                                Ok(s)
                            })
                        }) {
                            Some(Ok(s)) => {
                                mounts.reset();
                                serving = Some(s);
                                reporter.set(Activity::Starting {
                                    who: Actor::KeyMonitor,
                                    why: "key access verified; starting PostgreSQL".into(),
                                });
                            }
                            Some(Err(e)) => {
                                let delay = mounts.failed();
                                watch.unlock_failed(delay);
                                reporter.set(Activity::Failed {
                                    who: Actor::Agent,
                                    reason: format!(
                                        "mounting the encrypted volume failed: {e}; retrying {}",
                                        describe_delay(delay)
                                    ),
                                });
                            }
                            None => watch.relock(),
                        }
                    }
                    Action::Lock(reason) => {
                        // Reported first, so no probe meets PostgreSQL shutting down.
                        reporter.set(Activity::Inaccessible(reason));
                        serving = None;
                    }
                    Action::Rewrap(version) => {
                        if let Some(s) = &serving {
                            match rewrap(dir, kek.as_ref(), s.dek.dek(), &version) {
                                Ok(w) => {
                                    watch.rewrapped(w.kek.clone());
                                    reporter.wrapped_by(w.kek.clone());
                                    wrapped = w;
                                }
                                Err(e) => tracing::error!("re-wrapping the DEK: {e}"),
                            }
                        }
                    }
                }
            }
            drop(dek);
            if serving.is_some() && config.backup.is_some() {
                follow_backup_key(
                    &config.backup_key_file(dir),
                    kek.as_ref(),
                    &wrapped.kek,
                    &reporter,
                );
            }
            let backups = serving.as_mut().and_then(Serving::backups_mut);
            if let (Some(backups), Some(geo)) = (backups, &geo) {
                geo.check(backups, &reporter);
            }
            let backups = serving.as_mut().and_then(Serving::backups_mut);
            backup::settings::follow(dir, &mut config, backups, &reporter);
        }
        if let Some(s) = serving.as_mut() {
            s.supervise_postgres(Instant::now(), &reporter);
        }
        std::thread::sleep(TICK);
    };
    if serving.is_some() {
        reporter.set(Activity::Stopping);
    }
    drop(serving);
    let finished = reporter.finish();
    let _ = std::fs::remove_file(dir.agent_pid());
    outcome.and(finished)
}

/// Mounts the volume with `dek`, and unwraps the backup repository's key for the
/// server's backups when it has them (serving without backups when it cannot);
/// `more_keys` are the geo-redundant copy's key, when it has one the vault
/// unwrapped, and the storage accounts' keys of repositories in Azure Blob Storage.
fn unlock(
    dir: &ServerDir,
    config: &AgentConfig,
    kek: &dyn KeyEncryptionKey,
    dek: Dek,
    more_keys: (Option<Dek>, StorageKeys<'_>),
) -> Result<Serving, Error> {
    let (geo_key, storage) = more_keys;
    // A repository key the vault refuses stops the backups, not the server.
    let repository_key = match &config.backup {
        Some(_) => backup::key::unwrap(&config.backup_key_file(dir), kek)
            .inspect_err(|e| {
                tracing::error!("backups stopped: the repository key cannot be unwrapped: {e}")
            })
            .ok(),
        None => None,
    };
    Serving::mount(dir, config, dek, repository_key, geo_key, storage)
}

/// Keeps the backup repository's key wrapped by the version that wraps the DEK,
/// so that once the DEK follows a rotation the old version is needed by nothing.
/// A failure is retried at the next check.
fn follow_backup_key(
    file: &Path,
    kek: &dyn KeyEncryptionKey,
    version: &KeyVersionId,
    reporter: &Reporter,
) {
    match backup::key::follow(file, kek, version) {
        Ok(Some(from)) => reporter.event(
            Actor::KeyMonitor,
            "backup key re-wrapped",
            &format!("the backup repository key is wrapped by {version} (was {from})"),
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!("re-wrapping the backup repository key: {e}; retrying"),
    }
}

/// Reconnects `kek` when `agent.json` says to reach the key otherwise than `access`
/// (the control plane rewrote it: the vault service moved). An unreadable file or a
/// configuration that cannot connect keeps the connection in use.
fn follow_kek_access(
    dir: &ServerDir,
    access: &mut KekAccess,
    kek: &mut Box<dyn KeyEncryptionKey>,
    secret: &SecretBytes,
) {
    let configured = match read_json::<AgentConfig>(&dir.agent_config()) {
        Ok(config) if config.kek != *access => config.kek,
        Ok(_) => return,
        Err(e) => {
            return tracing::warn!("re-reading the configuration: {e}; keeping the one in use")
        }
    };
    match configured.connect(secret.clone()) {
        Ok(connected) => {
            tracing::info!(
                "reaching the key through {} from now on",
                configured.vault.identity_endpoint
            );
            *kek = connected;
            *access = configured;
        }
        Err(e) => tracing::error!("{e}; keeping the configuration in use"),
    }
}

/// Hardens the process against dumps (it is about to hold a DEK), then reads the
/// start-up handshake from `stdin` (a pipe from the control plane) to its end.
pub(crate) fn take_handshake(stdin: impl std::io::Read) -> Result<Handshake, Error> {
    memory::harden_process()?;
    Ok(Handshake::read(stdin)?)
}

/// Wraps `dek` with the key's current version, checks it is `version`, and
/// replaces the stored wrapped DEK durably.
fn rewrap(
    dir: &ServerDir,
    kek: &dyn KeyEncryptionKey,
    dek: &Dek,
    version: &KeyVersionId,
) -> Result<WrappedDek, Error> {
    let wrapped = kek.wrap(dek)?;
    if &wrapped.kek != version {
        return Err(Error::KeyMoved {
            wanted: Box::new(version.clone()),
            got: Box::new(wrapped.kek),
        });
    }
    write_json_atomic(&dir.wrapped_dek(), &wrapped)?;
    tracing::info!("DEK re-wrapped with {}", wrapped.kek);
    Ok(wrapped)
}
