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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgcmk_crypto::{kdf, Dek, SecretBytes};
use pgcmk_keyprovider::akv::AkvKek;
use pgcmk_keyprovider::{KeyEncryptionKey, KeyVersionId, WrappedDek};
use serde::{Deserialize, Serialize};

use crate::backoff::{describe_delay, Backoff};
use crate::error::IoContext;
use crate::kek::{self, KekAccess};
use crate::memory::{self, LockedDek};
use crate::model::Actor;
use crate::monitor::{Action, CheckResult, Monitor, MonitorConfig};
use crate::postgres::{PgInstall, PgLayout, Postgres, StopMode};
use crate::report::{Activity, Reporter};
use crate::server_dir::{read_json, write_json_atomic, ServerDir};
use crate::Error;

/// HKDF purpose of the cryptfs master key derived from a server's DEK.
const CRYPTFS_PURPOSE: &[u8] = b"pgcmk cryptfs";
/// How long PostgreSQL may take to accept connections (crash recovery included).
const PG_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the agent looks at signals and at PostgreSQL between checks.
const TICK: Duration = Duration::from_millis(100);
/// How long a stop waits for the last users of the mount to leave it.
const UNMOUNT_PATIENCE: Duration = Duration::from_secs(10);
/// How often the server log is read for crash restarts.
const LOG_EVERY: Duration = Duration::from_secs(1);
/// Back-off of PostgreSQL starts and of mounts that fail: the first retry comes
/// at once, the second after this, then twice as long each time...
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// ... up to this.
const RETRY_CAP: Duration = Duration::from_secs(30);

/// What the control plane tells an agent; no secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// The server's id (also the HKDF salt for its cryptfs key).
    pub server_id: String,
    /// PostgreSQL's TCP port on 127.0.0.1.
    pub port: u16,
    /// How to reach the KEK.
    pub kek: KekAccess,
    /// Milliseconds between key checks.
    pub interval_ms: u64,
    /// Milliseconds of transient failures tolerated before locking.
    pub grace_ms: u64,
}

impl AgentConfig {
    fn monitor(&self) -> MonitorConfig {
        let interval = Duration::from_millis(self.interval_ms);
        MonitorConfig {
            interval,
            grace: Duration::from_millis(self.grace_ms),
            first_retry: MonitorConfig::DEFAULT.first_retry.min(interval),
        }
    }
}

/// The cryptfs master key for server `server_id`, derived from its DEK.
pub fn cryptfs_key(dek: &Dek, server_id: &str) -> Result<pgcmk_crypto::SymmetricKey, Error> {
    Ok(kdf::derive_key(
        dek.key(),
        server_id.as_bytes(),
        CRYPTFS_PURPOSE,
    )?)
}

/// A server while it serves. Field order is teardown order: PostgreSQL stops
/// before the mount goes, and the DEK is zeroized last.
struct Serving {
    pg: Postgres,
    /// When PostgreSQL is to be started; `None` while it runs.
    start_at: Option<Instant>,
    starts: Backoff,
    log_read_at: Instant,
    mount: pgcmk_cryptfs::MountHandle,
    dek: LockedDek,
}

impl Serving {
    /// Mounts cryptfs with a key derived from `dek`; PostgreSQL starts at the next
    /// [`Serving::supervise_postgres`].
    fn mount(dir: &ServerDir, config: &AgentConfig, dek: Dek) -> Result<Self, Error> {
        let dek = LockedDek::new(dek)?;
        let mount = pgcmk_cryptfs::mount(
            &dir.cipher(),
            &dir.mountpoint(),
            cryptfs_key(dek.dek(), &config.server_id)?,
            pgcmk_cryptfs::MountOptions {
                allow_other: true,
                ..Default::default()
            },
        )?;
        let pg = Postgres::new(
            PgInstall::discover()?,
            PgLayout {
                data_dir: dir.data_dir(),
                socket_dir: dir.socket_dir(),
                port: config.port,
            },
        );
        let now = Instant::now();
        Ok(Self {
            pg,
            start_at: Some(now),
            starts: Backoff::new(RETRY_FIRST, RETRY_CAP),
            log_read_at: now,
            mount,
            dek,
        })
    }

    /// Passes on what PostgreSQL logged about crash restarts, notices the
    /// postmaster's exit, and (re)starts PostgreSQL when it is due: at once after
    /// an exit, with back-off after a failed start. A failed start keeps the mount.
    fn supervise_postgres(&mut self, now: Instant, reporter: &Reporter) {
        if let Some(postmaster) = self.pg.pid() {
            if now >= self.log_read_at + LOG_EVERY {
                self.log_read_at = now;
                for cause in self.pg.crash_restarts() {
                    reporter.event(Actor::Postgres, "postgres restarted after a crash", &cause);
                }
            }
            let Some(status) = self.pg.poll_exit() else {
                return;
            };
            let said = self
                .pg
                .last_fatal()
                .map(|f| format!(": {f}"))
                .unwrap_or_default();
            let why = format!("the postmaster (pid {postmaster}) exited ({status}){said}");
            tracing::warn!("{why}; restarting it");
            reporter.event(Actor::Postgres, "postgres exited", &why);
            reporter.set(Activity::Starting {
                who: Actor::Postgres,
                why: format!("restarting PostgreSQL: {why}"),
            });
            self.start_at = Some(now);
        }
        if self.start_at.is_none_or(|at| now < at) {
            return;
        }
        match self.pg.start(PG_START_TIMEOUT) {
            Ok(()) => {
                self.start_at = None;
                self.starts.reset();
                if let Some(postgres_pid) = self.pg.pid() {
                    reporter.set(Activity::Serving {
                        postgres_pid,
                        probe: self.pg.readiness_probe(),
                    });
                }
            }
            Err(e) => {
                let delay = self.starts.failed();
                self.start_at = Some(Instant::now() + delay);
                let reason = format!("{e}; retrying {}", describe_delay(delay));
                tracing::warn!("{reason}");
                reporter.set(Activity::Failed {
                    who: Actor::Postgres,
                    reason,
                });
            }
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Err(e) = self.pg.stop(StopMode::Fast) {
            tracing::error!("stopping postgres: {e}");
        }
        // The postmaster is reaped, but its logger and the agent's own readers of the
        // mount (child processes) may still be on their way out: the mount is busy for
        // a moment. A clean unmount marks the volume clean; the lazy detach that
        // follows a failure leaves it to crash recovery.
        if let Err(e) = self.mount.try_unmount_within(UNMOUNT_PATIENCE) {
            tracing::error!("unmounting: {e}");
        }
    }
}

/// Creates a new server's encrypted volume and PostgreSQL cluster with `dek`:
/// cryptfs init, mount, `initdb` with `password` for the `postgres` superuser,
/// unmount. Runs in the control plane at create time.
pub fn provision(
    dir: &ServerDir,
    config: &AgentConfig,
    dek: &Dek,
    password: &SecretBytes,
) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    pgcmk_cryptfs::init(&dir.cipher(), &cryptfs_key(dek, &config.server_id)?)?;
    std::fs::create_dir_all(dir.mountpoint()).ctx(|| "creating the mount point")?;
    let serving = Serving::mount(dir, config, dek.clone())?;
    // PostgreSQL (another user) only needs to traverse the mount's root.
    std::fs::set_permissions(dir.mountpoint(), std::fs::Permissions::from_mode(0o711))
        .ctx(|| "setting permissions of the mount's root")?;
    serving.pg.initdb(password)?;
    drop(serving);
    Ok(())
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

/// Runs the agent for the server in `dir` until SIGTERM/SIGINT, acting as the
/// managed identity whose secret is read from `identity_secret` (the agent's
/// stdin, a pipe from the control plane) to its end. `instance` is the name the
/// control plane gave this start; every report carries it.
pub fn run(
    dir: &ServerDir,
    instance: &str,
    identity_secret: impl std::io::Read,
) -> Result<(), Error> {
    let secret = take_identity_secret(identity_secret)?;
    let requests = Requests::listen()?;
    let mut config: AgentConfig = read_json(&dir.agent_config())?;
    let mut wrapped: WrappedDek = read_json(&dir.wrapped_dek())?;
    std::fs::write(dir.agent_pid(), std::process::id().to_string()).ctx(|| "writing agent.pid")?;
    let reporter = Reporter::start(dir, instance.to_string(), wrapped.kek.clone())?;
    dir.detach_stale_mount();
    let mut kek = config.kek.connect(secret.clone())?;
    let mut monitor = Monitor::new(config.monitor(), wrapped.kek.clone());
    let mut mounts = Backoff::new(RETRY_FIRST, RETRY_CAP);
    let mut serving: Option<Serving> = None;
    let mut next_check = Instant::now();
    let outcome = loop {
        if requests.stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        if let Some(e) = reporter.failure() {
            break Err(e);
        }
        let now = Instant::now();
        if requests.check_now.swap(false, Ordering::SeqCst) {
            next_check = now;
        }
        if now >= next_check {
            follow_kek_access(dir, &mut config.kek, &mut kek, &secret);
            let (result, mut dek) = kek::check(&kek, &wrapped);
            if let CheckResult::Denied(reason) | CheckResult::Transient(reason) = &result {
                tracing::warn!("key check failed: {reason}");
                if serving.is_none() {
                    reporter.set(Activity::Inaccessible(reason.clone()));
                }
            }
            let decision = monitor.on_check(now, result);
            next_check = now + decision.next_check;
            for action in decision.actions {
                match action {
                    Action::Unlock => match dek.take().map(|d| Serving::mount(dir, &config, d)) {
                        Some(Ok(s)) => {
                            mounts.reset();
                            serving = Some(s);
                            reporter.set(Activity::Starting {
                                who: Actor::KeyMonitor,
                                why: "key access verified; starting PostgreSQL".into(),
                            });
                        }
                        Some(Err(e)) => {
                            monitor.relock();
                            let delay = mounts.failed();
                            next_check = next_check.min(now + delay);
                            reporter.set(Activity::Failed {
                                who: Actor::Agent,
                                reason: format!(
                                    "mounting the encrypted volume failed: {e}; retrying {}",
                                    describe_delay(delay)
                                ),
                            });
                        }
                        None => monitor.relock(),
                    },
                    Action::Lock(reason) => {
                        // Reported first, so no probe meets PostgreSQL shutting down.
                        reporter.set(Activity::Inaccessible(reason));
                        serving = None;
                    }
                    Action::Rewrap(version) => {
                        if let Some(s) = &serving {
                            match rewrap(dir, &kek, s.dek.dek(), &version) {
                                Ok(w) => {
                                    monitor.rewrapped(w.kek.clone());
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

/// Reconnects `kek` when `agent.json` says to reach the key otherwise than `access`
/// (the control plane rewrote it: the vault service moved). An unreadable file or a
/// configuration that cannot connect keeps the connection in use.
fn follow_kek_access(
    dir: &ServerDir,
    access: &mut KekAccess,
    kek: &mut AkvKek,
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
/// managed identity's secret from `input` (stdin: a pipe from the control plane) to
/// its end.
pub(crate) fn take_identity_secret(mut input: impl std::io::Read) -> Result<SecretBytes, Error> {
    memory::harden_process()?;
    // Room for any identity secret up front: no reallocation leaves copies behind.
    let mut secret = Vec::with_capacity(4096);
    let read = input.read_to_end(&mut secret);
    let secret = SecretBytes::new(secret);
    read.ctx(|| "reading the identity secret from stdin")?;
    if secret.expose_secret().trim_ascii().is_empty() {
        return Err(Error::InvalidRequest(
            "no identity secret on stdin: the agent is started by `pgcmk serve`, which \
             passes it through a pipe"
                .into(),
        ));
    }
    Ok(secret)
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
        return Err(Error::Conflict(format!(
            "the key moved on to {} while re-wrapping for {version}; retrying at the next check",
            wrapped.kek
        )));
    }
    write_json_atomic(&dir.wrapped_dek(), &wrapped)?;
    tracing::info!("DEK re-wrapped with {}", wrapped.kek);
    Ok(wrapped)
}
