//! A server while it serves: its DEK in locked memory, its cryptfs mount, and
//! PostgreSQL on it — or, on a node of a highly available server, Patroni, which
//! runs PostgreSQL — restarted with back-off when it exits.

use std::time::{Duration, Instant};

use pgcmk_crypto::{Dek, SecretBytes};

use crate::backoff::{describe_delay, Backoff};
use crate::backup::pgbackrest::{RepositoryKeys, StorageKeys};
use crate::backup::Backups;
use crate::contract::handshake::NodeTls;
use crate::contract::{Actor, AgentConfig, HaNode, ServerDir};
use crate::memory::LockedDek;
use crate::patroni::Patroni;
use crate::postgres::standby::{end_standby, Standby};
use crate::postgres::tls::{socket_only_settings, TlsFiles};
use crate::postgres::{PgInstall, PgLayout, Postgres, StopMode};
use crate::provision::cryptfs_key;
use crate::report::{Activity, Reporter};
use crate::Error;

/// How long PostgreSQL may take to accept connections (crash recovery included).
const PG_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stop waits for the last users of the mount to leave it.
const UNMOUNT_PATIENCE: Duration = Duration::from_secs(10);
/// How often the server log is read for crash restarts.
const LOG_EVERY: Duration = Duration::from_secs(1);
/// Back-off of PostgreSQL starts and of mounts that fail: the first retry comes
/// at once, the second after this, then twice as long each time...
pub(crate) const RETRY_FIRST: Duration = Duration::from_secs(1);
/// ... up to this.
pub(crate) const RETRY_CAP: Duration = Duration::from_secs(30);

/// A server while it serves. Field order is teardown order: PostgreSQL stops
/// before the mount goes, and the DEK is zeroized last.
pub(crate) struct Serving {
    /// Its backup under way ends first, and pgBackRest's archiver after PostgreSQL
    /// (in [`Serving`]'s drop).
    backups: Option<Backups>,
    /// On a node of a highly available server: its place in the cluster, and
    /// Patroni once configured (at its first start); it stops before the mount goes.
    ha: Option<(HaNode, Option<Patroni>)>,
    dir: ServerDir,
    pub(crate) pg: Postgres,
    /// When PostgreSQL is to be started; `None` while it runs.
    start_at: Option<Instant>,
    starts: Backoff,
    log_read_at: Instant,
    mount: pgcmk_cryptfs::MountHandle,
    pub(crate) dek: LockedDek,
}

impl Serving {
    /// Mounts cryptfs with a key derived from `dek`, and configures backups with
    /// `repository_key` when the server has them (and its geo copy with `geo_key`
    /// when it has one and the geo key unwrapped it, and the storage accounts'
    /// keys `storage` for repositories in Azure Blob Storage); PostgreSQL starts at
    /// the next [`Serving::supervise_postgres`].
    pub(crate) fn mount(
        dir: &ServerDir,
        config: &AgentConfig,
        dek: Dek,
        repository_key: Option<Dek>,
        geo_key: Option<Dek>,
        storage: StorageKeys<'_>,
    ) -> Result<Self, Error> {
        let dek = LockedDek::new(dek)?;
        let repository_key = repository_key.map(LockedDek::new).transpose()?;
        let geo_key = geo_key.map(LockedDek::new).transpose()?;
        let mount = pgcmk_cryptfs::mount(
            &dir.cipher(),
            &dir.mountpoint(),
            cryptfs_key(dek.dek(), &config.server_id)?,
            pgcmk_cryptfs::MountOptions {
                allow_other: true,
                ..Default::default()
            },
        )?;
        let mut pg = Postgres::new(
            PgInstall::discover()?,
            PgLayout {
                data_dir: dir.data_dir(),
                socket_dir: dir.socket_dir(),
                port: config.port,
            },
        );
        let backups = match (&config.backup, &repository_key) {
            (Some(backup), Some(key)) => Some(Backups::configure(
                dir,
                backup.stanza(&config.server_id),
                backup,
                &RepositoryKeys {
                    cipher: key.dek(),
                    geo: geo_key.as_ref().map(LockedDek::dek),
                    storage,
                },
                &mut pg,
                config.ha.is_some(),
            )?),
            _ => None,
        };
        let now = Instant::now();
        Ok(Self {
            backups,
            ha: config.ha.clone().map(|node| (node, None)),
            dir: dir.clone(),
            pg,
            start_at: Some(now),
            starts: Backoff::new(RETRY_FIRST, RETRY_CAP),
            log_read_at: now,
            mount,
            dek,
        })
    }

    /// Opens PostgreSQL to TCP on the server's listen addresses with `tls` (the
    /// certificate and key go on the mount: [`TlsFiles`]), from its next start;
    /// without `tls`, to its Unix socket only.
    pub(crate) fn listen(
        &mut self,
        dir: &ServerDir,
        config: &AgentConfig,
        tls: Option<&NodeTls>,
    ) -> Result<(), Error> {
        let settings = match tls {
            Some(tls) => TlsFiles::install(&dir.tls_dir(), tls, self.pg.install().user())?
                .settings(&config.listen_addresses),
            None => {
                tracing::warn!(
                    "no TLS certificate was handed over: serving on the Unix socket only"
                );
                socket_only_settings()
            }
        };
        self.pg.set_all(settings);
        Ok(())
    }

    /// Makes a read replica's PostgreSQL a hot standby streaming from its source
    /// with the replication role's `password`, from its next start; a server that
    /// is no replica (any more: promoted) ends recovery as a primary.
    pub(crate) fn stream(
        &mut self,
        dir: &ServerDir,
        config: &AgentConfig,
        password: Option<&SecretBytes>,
    ) -> Result<(), Error> {
        match (&config.replica, password) {
            (Some(source), Some(password)) => Standby::prepare(
                self.pg.install(),
                &dir.tls_dir(),
                source,
                &config.server_id,
                password,
            )?
            .configure(&mut self.pg),
            (Some(source), None) => Err(Error::Postgres(format!(
                "a replica of '{}' needs the replication password in the handshake",
                source.server
            ))),
            (None, _) => {
                if end_standby(&self.pg.layout().data_dir)? {
                    tracing::info!("a standby no more: PostgreSQL ends recovery as a primary");
                }
                Ok(())
            }
        }
    }

    /// The server's backups, when it has them and their key unwrapped.
    pub(crate) fn backups_mut(&mut self) -> Option<&mut Backups> {
        self.backups.as_mut()
    }

    /// Passes on what PostgreSQL logged about crash restarts, notices the
    /// postmaster's exit, and (re)starts PostgreSQL when it is due: at once after
    /// an exit, with back-off after a failed start. A failed start keeps the mount.
    pub(crate) fn supervise_postgres(&mut self, now: Instant, reporter: &Reporter) {
        if self.ha.is_some() {
            return self.supervise_patroni(now, reporter);
        }
        if let Some(postmaster) = self.pg.pid() {
            if let Some(backups) = self.backups.as_mut() {
                backups.supervise(reporter);
            }
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
        let prepared = match self.backups.as_mut() {
            Some(backups) => backups.before_start(self.pg.layout()),
            None => Ok(()),
        };
        let started = prepared
            .and_then(|()| self.pg.start(PG_START_TIMEOUT))
            .map(|()| self.pg.pid());
        self.started(started, reporter);
    }

    /// Takes in how a start of PostgreSQL (or Patroni) went: serving with the pid
    /// it reports, or a retry with back-off.
    fn started(&mut self, started: Result<Option<u32>, Error>, reporter: &Reporter) {
        match started {
            Ok(pid) => {
                self.start_at = None;
                self.starts.reset();
                if let Some(postgres_pid) = pid {
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

    /// [`Serving::supervise_postgres`] on a node of a highly available server:
    /// notices Patroni's exit and (re)starts it when due, configuring it first.
    fn supervise_patroni(&mut self, now: Instant, reporter: &Reporter) {
        let Some((node, patroni)) = self.ha.as_mut() else {
            return;
        };
        if let Some(running) = patroni.as_mut() {
            if let Some(pid) = running.pid() {
                let Some(status) = running.poll_exit() else {
                    if let Some(backups) = self.backups.as_mut() {
                        backups.supervise_node(&self.pg, now, reporter);
                    }
                    return;
                };
                let why = format!("patroni (pid {pid}) exited ({status})");
                tracing::warn!("{why}; restarting it");
                reporter.event(Actor::Postgres, "patroni exited", &why);
                reporter.set(Activity::Starting {
                    who: Actor::Postgres,
                    why: format!("restarting Patroni: {why}"),
                });
                self.start_at = Some(now);
            }
        }
        if self.start_at.is_none_or(|at| now < at) {
            return;
        }
        let started = match patroni {
            Some(p) => p.start().map(|()| p.pid()),
            None => Patroni::configure(
                &self.dir,
                node,
                self.pg.install().clone(),
                self.pg.layout().clone(),
                self.pg.settings(),
            )
            .and_then(|p| {
                let p = patroni.insert(p);
                p.start().map(|()| p.pid())
            }),
        };
        self.started(started, reporter);
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some((_, Some(patroni))) = self.ha.as_mut() {
            patroni.stop();
        }
        if let Some(backups) = self.backups.as_mut() {
            backups.end_job();
        }
        if let Err(e) = self.pg.stop(StopMode::Fast) {
            tracing::error!("stopping postgres: {e}");
        }
        if let Some(backups) = self.backups.take() {
            backups.end_strays();
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
