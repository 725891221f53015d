//! Backups under the customer's key, with pgBackRest as the engine
//! (`docs/backups.md`). One stanza per server, named after its id; the repository
//! is encrypted (aes-256-cbc) with a passphrase that is the hex form of a random
//! repository key wrapped by the server's KEK ([`key`]); WAL is archived
//! asynchronously from the server's first start on; a full backup is taken as soon
//! as the repository has none, then on a schedule ([`schedule`]: a full one a week,
//! a differential one a day between), and pgBackRest expires what the retention no
//! longer needs after each.
//!
//! pgBackRest's configuration, holding the passphrase, lives on the server's
//! encrypted mount: when the key is revoked the mount goes, and with it archiving
//! and backups.

pub(crate) mod info;
pub(crate) mod key;
pub(crate) mod pgbackrest;
pub(crate) mod restore;
mod schedule;
pub(crate) mod tasks;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use pgcmk_crypto::Dek;

use crate::contract::backup::BackupKind;
use crate::contract::{Actor, BackupConfig, ServerDir};
use crate::error::IoContext;
use crate::postgres::{PgInstall, PgLayout, Postgres};
use crate::report::Reporter;
use crate::sys::{self, Signal};
use crate::Error;
use pgbackrest::PgBackRest;
use schedule::Schedule;

/// Seconds after which a quiet server switches to a new WAL segment, so what it
/// wrote reaches the archive within that time.
const ARCHIVE_TIMEOUT: &str = "60s";
/// How long a backup under way may take to end after SIGTERM.
const JOB_STOP_GRACE: Duration = Duration::from_secs(10);
/// How long pgBackRest's asynchronous archiver may take to end after SIGTERM.
const STRAY_STOP_GRACE: Duration = Duration::from_secs(3);

/// After a scheduled backup failed, how long until the next try.
const RETRY_AFTER_FAILURE: i64 = 600;

/// A serving server's backups: pgBackRest configured on its mount, the schedule,
/// and the backup it runs in the background, if any.
pub(crate) struct Backups {
    engine: PgBackRest,
    schedule: Schedule,
    /// The stanza was checked against the cluster since the mount.
    stanza_ready: bool,
    /// When the last full backup and the last backup finished (Unix seconds), as
    /// the repository listed them; `None` until read since PostgreSQL started or
    /// since the last backup ended.
    finished: Option<(Option<i64>, Option<i64>)>,
    /// No scheduled backup is started before this (after a failure).
    not_before: i64,
    job: Option<(Child, BackupKind)>,
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
            schedule: Schedule::of(backup),
            stanza_ready: false,
            finished: None,
            not_before: 0,
            job: None,
        })
    }

    /// Before PostgreSQL starts: the stanza exists and matches the cluster, so the
    /// first segment it archives has somewhere to go.
    pub(crate) fn before_start(&mut self, layout: &PgLayout) -> Result<(), Error> {
        self.finished = None;
        if self.stanza_ready || !layout.data_dir.join("PG_VERSION").exists() {
            return Ok(());
        }
        self.engine.create_stanza()?;
        self.stanza_ready = true;
        Ok(())
    }

    /// While PostgreSQL serves: notices the end of the background backup, and
    /// starts the one the schedule says is due (a full one at once when the
    /// repository has none: a new server).
    pub(crate) fn supervise(&mut self, reporter: &Reporter) {
        let now = unix_now();
        if let Some((job, kind)) = self.job.as_mut() {
            let what = format!("the scheduled {} backup", kind.as_str());
            match job.try_wait() {
                Ok(None) => return,
                Ok(Some(status)) if status.success() => {
                    reporter.event(Actor::Agent, "backup completed", &what);
                }
                Ok(Some(status)) => {
                    self.not_before = now + RETRY_AFTER_FAILURE;
                    reporter.event(
                        Actor::Agent,
                        "backup failed",
                        &format!("{what} exited ({status}); see pgBackRest's log; retrying in 10 minutes"),
                    );
                }
                Err(e) => tracing::warn!("waiting for the backup: {e}"),
            }
            self.job = None;
            self.finished = None;
        }
        if now < self.not_before {
            return;
        }
        let (last_full, last_any) = match self.finished {
            Some(finished) => finished,
            None => match self.last_finished() {
                Ok(finished) => *self.finished.insert(finished),
                Err(e) => {
                    self.not_before = now + RETRY_AFTER_FAILURE;
                    return tracing::warn!("reading the backup repository: {e}");
                }
            },
        };
        let Some(kind) = self.schedule.due(now, last_full, last_any) else {
            return;
        };
        match self.start_backup(kind) {
            Ok(child) => {
                reporter.event(
                    Actor::Agent,
                    "backup started",
                    &format!("the scheduled {} backup", kind.as_str()),
                );
                self.job = Some((child, kind));
            }
            Err(e) => {
                self.not_before = now + RETRY_AFTER_FAILURE;
                reporter.event(Actor::Agent, "backup failed", &e.to_string());
            }
        }
    }

    /// When the last full backup and the last backup of any kind finished.
    fn last_finished(&self) -> Result<(Option<i64>, Option<i64>), Error> {
        let text = self.engine.run(&["info", "--output=json"])?;
        let stanza = info::parse(&text).map_err(Error::Backup)?;
        let last_full = stanza
            .backup
            .iter()
            .filter(|b| b.kind == "full")
            .map(|b| b.timestamp.stop)
            .max();
        let last_any = stanza.backup.iter().map(|b| b.timestamp.stop).max();
        Ok((last_full, last_any))
    }

    /// Starts a backup in the background; it gets SIGTERM if the agent dies.
    fn start_backup(&self, kind: BackupKind) -> Result<Child, Error> {
        let kind_arg = format!("--type={}", kind.as_str());
        let mut cmd = self.engine.command(&["backup", &kind_arg]);
        cmd.stdout(Stdio::null());
        sys::die_with_parent(&mut cmd, Signal::Term);
        cmd.spawn().ctx(|| "starting pgbackrest backup")
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Backups {
    /// Ends the backup under way, if any: SIGTERM, then SIGKILL after
    /// [`JOB_STOP_GRACE`]. pgBackRest leaves it incomplete in the repository,
    /// where it is listed as no backup and the next backup resumes or removes it.
    pub(crate) fn end_job(&mut self) {
        let Some((mut job, _)) = self.job.take() else {
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

    /// Ends the pgBackRest processes still using this server's configuration once
    /// PostgreSQL has stopped (the asynchronous archiver its last `archive_command`
    /// started): they hold files on the mount, which is to go now.
    pub(crate) fn end_strays(&self) {
        for pid in self.engine.running_processes() {
            end_within(pid, STRAY_STOP_GRACE);
        }
    }
}

impl Drop for Backups {
    fn drop(&mut self) {
        self.end_job();
    }
}

/// Sends SIGTERM to `pid` (not a child of the agent), and SIGKILL when it is still
/// there after `grace`.
fn end_within(pid: u32, grace: Duration) {
    let _ = sys::send_signal(pid, Signal::Term);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = sys::send_signal(pid, Signal::Kill);
}
