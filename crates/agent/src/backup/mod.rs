//! Backups under the customer's key, with pgBackRest as the engine
//! (`docs/backups.md`). One stanza per server, named after its id; the repository
//! is encrypted (aes-256-cbc) with a passphrase that is the hex form of a random
//! repository key wrapped by the server's KEK ([`key`]); WAL is archived
//! asynchronously from the server's first start on; a full backup is taken as soon
//! as the repository has none.
//!
//! pgBackRest's configuration, holding the passphrase, lives on the server's
//! encrypted mount: when the key is revoked the mount goes, and with it archiving
//! and backups.

pub(crate) mod info;
pub(crate) mod key;
pub(crate) mod pgbackrest;
pub(crate) mod restore;
pub(crate) mod tasks;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use pgcmk_crypto::Dek;

use crate::contract::{Actor, BackupConfig, ServerDir};
use crate::error::IoContext;
use crate::postgres::{PgInstall, PgLayout, Postgres};
use crate::report::Reporter;
use crate::sys::{self, Signal};
use crate::Error;
use pgbackrest::PgBackRest;

/// Seconds after which a quiet server switches to a new WAL segment, so what it
/// wrote reaches the archive within that time.
const ARCHIVE_TIMEOUT: &str = "60s";
/// How long a backup under way may take to end after SIGTERM.
const JOB_STOP_GRACE: Duration = Duration::from_secs(10);

/// A serving server's backups: pgBackRest configured on its mount, and the
/// backup it runs in the background, if any.
pub(crate) struct Backups {
    engine: PgBackRest,
    /// The stanza was checked against the cluster since the mount.
    stanza_ready: bool,
    /// Whether the repository holds a backup was checked since PostgreSQL started.
    checked_since_start: bool,
    job: Option<Child>,
}

impl Backups {
    /// Configures pgBackRest on the mount of the server in `dir` with the
    /// repository key `key`, and PostgreSQL `pg` to archive its WAL through it.
    pub(crate) fn configure(
        dir: &ServerDir,
        server_id: &str,
        backup: &BackupConfig,
        key: &Dek,
        pg: &mut Postgres,
    ) -> Result<Self, Error> {
        let engine = PgBackRest::new(dir, server_id, PgInstall::discover()?)?;
        engine.configure(pg.layout(), backup, key)?;
        pg.set("archive_mode", "on".into());
        pg.set("archive_command", engine.archive_command());
        pg.set("archive_timeout", ARCHIVE_TIMEOUT.into());
        Ok(Self {
            engine,
            stanza_ready: false,
            checked_since_start: false,
            job: None,
        })
    }

    /// Before PostgreSQL starts: the stanza exists and matches the cluster, so the
    /// first segment it archives has somewhere to go.
    pub(crate) fn before_start(&mut self, layout: &PgLayout) -> Result<(), Error> {
        self.checked_since_start = false;
        if self.stanza_ready || !layout.data_dir.join("PG_VERSION").exists() {
            return Ok(());
        }
        self.engine.create_stanza()?;
        self.stanza_ready = true;
        Ok(())
    }

    /// While PostgreSQL serves: notices the end of the background backup, and
    /// starts a full one when the repository has no backup (a new server).
    pub(crate) fn supervise(&mut self, reporter: &Reporter) {
        if let Some(job) = self.job.as_mut() {
            match job.try_wait() {
                Ok(None) => return,
                Ok(Some(status)) if status.success() => {
                    reporter.event(Actor::Agent, "backup completed", "the first full backup");
                }
                Ok(Some(status)) => reporter.event(
                    Actor::Agent,
                    "backup failed",
                    &format!("the first full backup exited ({status}); see pgBackRest's log"),
                ),
                Err(e) => tracing::warn!("waiting for the backup: {e}"),
            }
            self.job = None;
        }
        if self.checked_since_start {
            return;
        }
        self.checked_since_start = true;
        match self.has_backup() {
            Ok(true) => {}
            Ok(false) => match self.start_full_backup() {
                Ok(child) => {
                    reporter.event(Actor::Agent, "backup started", "the first full backup");
                    self.job = Some(child);
                }
                Err(e) => reporter.event(Actor::Agent, "backup failed", &e.to_string()),
            },
            Err(e) => tracing::warn!("reading the backup repository: {e}"),
        }
    }

    /// True when the repository lists a complete backup.
    fn has_backup(&self) -> Result<bool, Error> {
        let text = self.engine.run(&["info", "--output=json"])?;
        let stanza = info::parse(&text).map_err(Error::Backup)?;
        Ok(!stanza.backup.is_empty())
    }

    /// Starts a full backup in the background; it gets SIGTERM if the agent dies.
    fn start_full_backup(&self) -> Result<Child, Error> {
        let mut cmd = self.engine.command(&["backup", "--type=full"]);
        cmd.stdout(Stdio::null());
        sys::die_with_parent(&mut cmd, Signal::Term);
        cmd.spawn().ctx(|| "starting pgbackrest backup")
    }
}

impl Drop for Backups {
    /// A backup under way ends before PostgreSQL stops and the mount goes; it is
    /// left incomplete in the repository, where pgBackRest lists it as no backup
    /// and the next backup resumes or removes it.
    fn drop(&mut self) {
        let Some(mut job) = self.job.take() else {
            return;
        };
        let _ = sys::send_signal(job.id(), Signal::Term);
        let deadline = Instant::now() + JOB_STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = job.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = job.kill();
        let _ = job.wait();
    }
}
