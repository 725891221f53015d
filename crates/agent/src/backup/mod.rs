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
//!
//! A server may have a geo-redundant copy: pgBackRest's `repo2`, under its own
//! repository key wrapped by a key in a vault of another location. WAL is pushed
//! to both; each repository has its own schedule. While the geo key is refused,
//! `repo2` is taken out of the configuration, so the server's own backups and
//! archiving go on; when it is back, `repo2` gets a full backup at once (its WAL
//! has a gap).

pub(crate) mod geo;
pub(crate) mod info;
pub(crate) mod key;
mod node;
pub(crate) mod pgbackrest;
mod progress;
pub(crate) mod restore;
mod schedule;
pub(crate) mod settings;
pub(crate) mod tasks;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use pgcmk_crypto::{Dek, SecretBytes};

use crate::contract::backup::{BackupKind, BackupSettings, Repository};
use crate::contract::{Actor, BackupConfig, ServerDir};
use crate::error::IoContext;
use crate::postgres::{PgInstall, PgLayout, Postgres};
use crate::report::Reporter;
use crate::sys::{self, Signal};
use crate::Error;
use pgbackrest::{PgBackRest, RepositoryKeys};
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
    config: BackupConfig,
    schedule: Schedule,
    /// The stanza was checked against the cluster since the mount.
    stanza_ready: bool,
    /// The geo-redundant copy is in pgBackRest's configuration (its key unwrapped).
    geo_active: bool,
    /// The paired location's storage account key, for a copy in Azure Blob
    /// Storage: the copy is put back with it when the geo key unwraps again.
    geo_storage: Option<SecretBytes>,
    /// Per repository (primary, geo): when the last full backup and the last
    /// backup finished (Unix seconds), as the repository listed them; `None` until
    /// read since PostgreSQL started or since that repository's last backup ended.
    finished: [Option<LastBackups>; 2],
    /// No scheduled backup is started before this (after a failure).
    not_before: i64,
    job: Option<(Child, BackupKind, Repository)>,
    /// On a node of a highly available server: whether it is the primary.
    node: node::NodeRole,
}

/// When a repository's last full backup and last backup of any kind finished.
type LastBackups = (Option<i64>, Option<i64>);

/// The repositories in the order their due backups are taken.
const REPOSITORIES: [Repository; 2] = [Repository::Primary, Repository::Geo];

impl Backups {
    /// Configures pgBackRest on the mount of the server in `dir` for `stanza`
    /// with its repositories' `keys` (the geo copy's when it has one and the geo
    /// key unwrapped it), and PostgreSQL `pg` to archive its WAL through it (on a
    /// node of a highly available server, `on_node`, Patroni passes these
    /// settings on).
    pub(crate) fn configure(
        dir: &ServerDir,
        stanza: &str,
        backup: &BackupConfig,
        keys: &RepositoryKeys<'_>,
        pg: &mut Postgres,
        on_node: bool,
    ) -> Result<Self, Error> {
        let mut engine = PgBackRest::new(dir, stanza, PgInstall::discover()?)?;
        if on_node {
            engine = engine.archiving_on_every_node();
        }
        engine.configure(pg.layout(), backup, keys)?;
        pg.set("archive_mode", node::archive_mode(on_node).into());
        pg.set("archive_command", engine.archive_command());
        pg.set("archive_timeout", ARCHIVE_TIMEOUT.into());
        Ok(Self {
            engine,
            config: backup.clone(),
            schedule: Schedule::of(backup),
            stanza_ready: false,
            geo_active: backup.geo.is_some() && keys.geo.is_some(),
            geo_storage: keys.storage.geo.cloned(),
            finished: [None, None],
            not_before: 0,
            job: None,
            node: node::NodeRole::default(),
        })
    }

    /// True when the geo-redundant copy is kept up to date now.
    pub(crate) fn geo_active(&self) -> bool {
        self.geo_active
    }

    /// Puts the geo-redundant copy back with its key `geo_key` (the geo key
    /// unwrapped it again), or takes it out (`None`: the geo key is refused). A
    /// geo backup under way when it goes is ended; when it comes back, its next
    /// backup is a full one (the WAL of the time between is not in it).
    pub(crate) fn set_geo(&mut self, geo_key: Option<&Dek>) -> Result<(), Error> {
        if self.config.geo.is_none() {
            return Ok(());
        }
        if geo_key.is_none() && matches!(self.job, Some((_, _, Repository::Geo))) {
            self.end_job();
        }
        self.engine
            .set_geo(&self.config, geo_key, self.geo_storage.as_ref())?;
        self.geo_active = geo_key.is_some();
        self.finished[1] = self.geo_active.then_some((None, None));
        Ok(())
    }

    /// Takes `settings` the control plane changed: the retention from the next
    /// expiry on (pgBackRest's time retention keeps the newest full backup older
    /// than the window, so every point of the new window stays restorable), the
    /// schedule from the next look at it. A backup under way goes on.
    pub(crate) fn apply_settings(&mut self, settings: BackupSettings) -> Result<(), Error> {
        self.engine.set_retention(settings.retention_days)?;
        self.config.apply(settings);
        self.schedule = Schedule::of(&self.config);
        Ok(())
    }

    /// The repositories backed up now.
    fn active(&self) -> impl Iterator<Item = Repository> + '_ {
        REPOSITORIES
            .into_iter()
            .filter(|r| *r == Repository::Primary || self.geo_active)
    }

    /// Before PostgreSQL starts: the stanza exists and matches the cluster, so the
    /// first segment it archives has somewhere to go.
    pub(crate) fn before_start(&mut self, layout: &PgLayout) -> Result<(), Error> {
        self.finished = [None, None];
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
        if let Some((job, kind, repo)) = self.job.as_mut() {
            let what = describe(*kind, *repo);
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
            let index = usize::from(*repo == Repository::Geo);
            self.job = None;
            self.finished[index] = None;
        }
        if now < self.not_before {
            return;
        }
        let repositories: Vec<Repository> = self.active().collect();
        for repo in repositories {
            let index = usize::from(repo == Repository::Geo);
            let (last_full, last_any) = match self.finished[index] {
                Some(finished) => finished,
                None => match self.last_finished(repo) {
                    Ok(finished) => *self.finished[index].insert(finished),
                    Err(e) => {
                        self.not_before = now + RETRY_AFTER_FAILURE;
                        return tracing::warn!("reading the backup repository: {e}");
                    }
                },
            };
            let Some(kind) = self.schedule.due(now, last_full, last_any) else {
                continue;
            };
            match self.start_backup(kind, repo) {
                Ok(child) => {
                    reporter.event(Actor::Agent, "backup started", &describe(kind, repo));
                    self.job = Some((child, kind, repo));
                }
                Err(e) => {
                    self.not_before = now + RETRY_AFTER_FAILURE;
                    let what = describe(kind, repo);
                    reporter.event(Actor::Agent, "backup failed", &format!("{what}: {e}"));
                }
            }
            return;
        }
    }

    /// When the last full backup and the last backup of any kind in `repo`
    /// finished.
    fn last_finished(&self, repo: Repository) -> Result<LastBackups, Error> {
        let repo_arg = format!("--repo={}", repo.number());
        let text = self.engine.run(&[&repo_arg, "info", "--output=json"])?;
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

    /// Starts a backup to `repo` in the background; it gets SIGTERM if the agent
    /// dies.
    fn start_backup(&self, kind: BackupKind, repo: Repository) -> Result<Child, Error> {
        let kind_arg = format!("--type={}", kind.as_str());
        let repo_arg = format!("--repo={}", repo.number());
        let mut cmd = self.engine.command(&[&repo_arg, "backup", &kind_arg]);
        cmd.stdout(Stdio::null());
        sys::die_with_parent(&mut cmd, Signal::Term);
        cmd.spawn().ctx(|| "starting pgbackrest backup")
    }
}

/// A scheduled backup of `kind` to `repo`, in events.
fn describe(kind: BackupKind, repo: Repository) -> String {
    match repo {
        Repository::Primary => format!("the scheduled {} backup", kind.as_str()),
        Repository::Geo => format!(
            "the scheduled {} backup of the geo-redundant copy (repo2)",
            kind.as_str()
        ),
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
        let Some((mut job, _, _)) = self.job.take() else {
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
