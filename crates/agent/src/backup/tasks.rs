//! The backup tasks of a short-lived agent run, on a serving server: they use
//! pgBackRest's configuration on the live mount, so they work only while the
//! server's key is accessible and it serves.

use std::path::Path;

use pgcmk_keyprovider::{KeyEncryptionKey, KeyVersionId};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::info::{self, BackupSet};
use super::key;
use super::pgbackrest::PgBackRest;
use crate::contract::backup::{
    BackupCatalog, BackupKind, BackupSummary, BackupVerification, GeoCatalog, Repository,
    RunningBackup, WalArchive,
};
use crate::contract::{AgentConfig, ServerDir};
use crate::error::IoContext;
use crate::postgres::PgInstall;
use crate::sys::{self, Signal};
use crate::Error;

/// pgBackRest of the serving server in `dir` with `repo` in its configuration now,
/// or why not.
fn engine_with(
    dir: &ServerDir,
    config: &AgentConfig,
    repo: Repository,
) -> Result<PgBackRest, Error> {
    let engine = engine(dir, config)?;
    if repo == Repository::Geo {
        if config
            .backup
            .as_ref()
            .and_then(|b| b.geo.as_ref())
            .is_none()
        {
            return Err(Error::Backup(
                "this server has no geo-redundant copy of its backups: use repository 1".into(),
            ));
        }
        if !engine.has_repository(repo)? {
            return Err(Error::Backup(
                "the geo-redundant copy is out of pgBackRest's configuration: the geo key \
                 refuses its repository key (`pgcmk backup list` says why); give the geo \
                 identity get, wrapKey and unwrapKey on it again"
                    .into(),
            ));
        }
    }
    Ok(engine)
}

/// pgBackRest of the serving server in `dir`, or why there is none.
fn engine(dir: &ServerDir, config: &AgentConfig) -> Result<PgBackRest, Error> {
    let Some(backup) = &config.backup else {
        return Err(Error::Backup(
            "this server has no backups configured (it was created before backups existed)".into(),
        ));
    };
    if !dir.backup_engine_dir().join("pgbackrest.conf").exists() {
        return Err(Error::Backup(
            "the server is not serving: its backups are reached through its encrypted \
             volume; start it first"
                .into(),
        ));
    }
    PgBackRest::new(
        dir,
        backup.stanza(&config.server_id),
        PgInstall::discover()?,
    )
}

/// The complete backups and the archived WAL; with `geo_kek` (the geo key, as the
/// geo identity), the geo-redundant copy's too, and whether the geo key unwraps
/// the copy's key now.
pub(crate) fn list(
    dir: &ServerDir,
    config: &AgentConfig,
    geo_kek: Option<&dyn KeyEncryptionKey>,
) -> Result<BackupCatalog, Error> {
    let engine = engine(dir, config)?;
    let retention_days = config.backup.as_ref().map_or(0, |b| b.retention_days);
    let key_version = key::read_wrapped(&config.backup_key_file(dir))?.kek;
    let (backups, wal) = repository_contents(&engine, Repository::Primary, &key_version)?;
    let geo = match config.backup.as_ref().and_then(|b| b.geo.as_ref()) {
        Some(geo) => Some(geo_catalog(
            &config.geo_backup_key_file(dir),
            &engine,
            &geo.location,
            geo_kek,
        )?),
        None => None,
    };
    Ok(BackupCatalog {
        backups,
        wal,
        key_version,
        retention_days,
        geo,
    })
}

/// The geo-redundant copy at `location`, its key wrapped in `file`: its backups while it is in pgBackRest's
/// configuration, and why not when the geo key is refused now.
fn geo_catalog(
    file: &Path,
    engine: &PgBackRest,
    location: &str,
    geo_kek: Option<&dyn KeyEncryptionKey>,
) -> Result<GeoCatalog, Error> {
    let key_version = key::read_wrapped(file)?.kek;
    let problem = match geo_kek {
        Some(kek) => key::unwrap(file, kek).err().map(|e| {
            format!(
                "the geo key refuses the copy's repository key ({e}): the copy is not kept \
                 up to date; give the geo identity get, wrapKey and unwrapKey on it again"
            )
        }),
        None => Some("the geo identity's secret is not available to this run".into()),
    };
    let (backups, wal) = if engine.has_repository(Repository::Geo)? {
        repository_contents(engine, Repository::Geo, &key_version)?
    } else {
        (Vec::new(), None)
    };
    Ok(GeoCatalog {
        location: location.to_string(),
        key_version,
        problem,
        backups,
        wal,
    })
}

/// The complete backups and archived WAL of `repo`.
fn repository_contents(
    engine: &PgBackRest,
    repo: Repository,
    key_version: &KeyVersionId,
) -> Result<(Vec<BackupSummary>, Option<WalArchive>), Error> {
    let repo_arg = format!("--repo={}", repo.number());
    let text = engine.run(&[&repo_arg, "info", "--output=json"])?;
    let stanza = info::parse(&text).map_err(Error::Backup)?;
    let backups = stanza
        .backup
        .iter()
        .map(|set| summary(set, key_version))
        .collect::<Result<_, _>>()?;
    let wal = stanza.archive.last().and_then(|range| {
        Some(WalArchive {
            oldest_segment: range.min.clone()?,
            newest_segment: range.max.clone()?,
        })
    });
    Ok((backups, wal))
}

/// pgBackRest's exit code when another of its processes holds the stanza's lock.
const PGBACKREST_LOCK_ERROR: i32 = 50;
/// How long a new backup waits for one already running to end.
const RUNNING_BACKUP_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);
/// First and longest pause between two attempts while another backup runs.
const RUNNING_BACKUP_POLL: (std::time::Duration, std::time::Duration) = (
    std::time::Duration::from_millis(500),
    std::time::Duration::from_secs(10),
);

/// Takes a backup of `kind` in `repo` and waits for its end (and for a backup
/// already running to end first); the new backup.
pub(crate) fn create(
    dir: &ServerDir,
    config: &AgentConfig,
    kind: BackupKind,
    repo: Repository,
) -> Result<BackupSummary, Error> {
    let engine = engine_with(dir, config, repo)?;
    let kind_arg = format!("--type={}", kind.as_str());
    let repo_arg = format!("--repo={}", repo.number());
    let started = std::time::Instant::now();
    let mut pause = RUNNING_BACKUP_POLL.0;
    let out = loop {
        let mut cmd = engine.command(&[&repo_arg, "backup", &kind_arg]);
        // A run killed (its control plane gone) takes its backup with it: pgBackRest
        // leaves it incomplete, unlisted, and the next backup resumes or removes it.
        sys::die_with_parent(&mut cmd, Signal::Term);
        let out = cmd.output().ctx(|| "running pgbackrest backup")?;
        // Another backup of this server holds the stanza's lock (the one taken at
        // creation, or a scheduled one): this one waits for it, as the DBA would.
        let locked = out.status.code() == Some(PGBACKREST_LOCK_ERROR);
        if !locked || started.elapsed() >= RUNNING_BACKUP_WAIT {
            break out;
        }
        tracing::info!("a backup of this server is running: waiting for it to end");
        std::thread::sleep(pause);
        pause = (pause * 2).min(RUNNING_BACKUP_POLL.1);
    };
    if !out.status.success() {
        return Err(Error::Backup(format!(
            "pgbackrest backup failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    if config.ha.is_some() {
        wait_for_its_wal(&engine, &repo_arg)?;
    }
    let key_file = match repo {
        Repository::Primary => config.backup_key_file(dir),
        Repository::Geo => config.geo_backup_key_file(dir),
    };
    let (backups, _) = repository_contents(&engine, repo, &key::read_wrapped(&key_file)?.kek)?;
    backups
        .into_iter()
        .next_back()
        .ok_or_else(|| Error::Backup("pgbackrest backup succeeded but lists no backup".into()))
}

/// How long a backup's last WAL segment may take to reach the archive.
const ITS_WAL_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits until the archive of `repo_arg` holds the last WAL segment the newest
/// backup needs. On a node of a highly available server pgBackRest does not wait
/// for it (`archive-check=n`: [`PgBackRest::archiving_on_every_node`]), so the
/// agent does, and a backup is not reported before it can be restored.
fn wait_for_its_wal(engine: &PgBackRest, repo_arg: &str) -> Result<(), Error> {
    let deadline = std::time::Instant::now() + ITS_WAL_WAIT;
    loop {
        let text = engine.run(&[repo_arg, "info", "--output=json"])?;
        let stanza = info::parse(&text).map_err(Error::Backup)?;
        let Some((label, stop)) = stanza
            .backup
            .last()
            .and_then(|b| Some((b.label.clone(), b.archive.as_ref()?.stop.clone())))
        else {
            return Ok(());
        };
        let newest = stanza.archive.last().and_then(|a| a.max.clone());
        if newest.is_some_and(|newest| newest >= stop) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::Backup(format!(
                "backup {label} is complete, but the WAL segment it needs ({stop}) did not \
                 reach the archive within {} s: it cannot be restored until it does; see \
                 pgBackRest's log on the node's mount",
                ITS_WAL_WAIT.as_secs()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// The backups of the serving server running now, with their progress.
pub(crate) fn progress(dir: &ServerDir, config: &AgentConfig) -> Result<Vec<RunningBackup>, Error> {
    super::progress::running(&engine(dir, config)?)
}

/// Decrypts and checks every backup file and archived segment of `repo`.
pub(crate) fn verify(
    dir: &ServerDir,
    config: &AgentConfig,
    repo: Repository,
) -> Result<BackupVerification, Error> {
    let engine = engine_with(dir, config, repo)?;
    let repo_arg = format!("--repo={}", repo.number());
    // Without retries: a damaged file is reported at once, not after 15 s.
    let out = engine
        .command(&[
            &repo_arg,
            "--log-level-console=info",
            "--job-retry=0",
            "verify",
        ])
        .output()
        .ctx(|| "running pgbackrest verify")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(Error::Backup(format!(
            "pgbackrest verify failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(read_verification(&text))
}

/// What pgBackRest 2.45's `verify` logged at level info (it has no JSON output):
/// a line `INFO: invalid ...` per damaged file and, when one was, a summary whose
/// `status:` is `error`; then `verify command end: completed successfully`.
fn read_verification(text: &str) -> BackupVerification {
    let mut problems = Vec::new();
    let mut summary = Vec::new();
    let mut status_error = false;
    let mut completed = false;
    let mut in_summary = false;
    for line in text.lines() {
        let body = line.split_once("INFO: ").map_or(line, |(_, b)| b).trim();
        if let Some(problem) = body.strip_prefix("invalid ") {
            problems.push(problem.to_string());
        } else if body.starts_with("stanza: ") {
            in_summary = true;
        } else if body.starts_with("verify command end") {
            in_summary = false;
            completed = body.contains("completed successfully");
        } else if let Some(status) = body.strip_prefix("status: ") {
            status_error = status != "ok";
        } else if in_summary && !body.is_empty() {
            summary.push(body.to_string());
        }
    }
    BackupVerification {
        valid: completed && !status_error && problems.is_empty(),
        problems,
        summary,
    }
}

/// A backup set as the contract tells it.
fn summary(set: &BackupSet, key_version: &KeyVersionId) -> Result<BackupSummary, Error> {
    Ok(BackupSummary {
        label: set.label.clone(),
        kind: set.kind.parse().map_err(Error::Backup)?,
        started_at: rfc3339(set.timestamp.start)?,
        finished_at: rfc3339(set.timestamp.stop)?,
        duration_secs: set.timestamp.stop - set.timestamp.start,
        database_bytes: set.info.size,
        repository_bytes: set.info.repository.size,
        start_lsn: set.lsn.start.clone(),
        stop_lsn: set.lsn.stop.clone(),
        prior: set.prior.clone(),
        key_version: key_version.clone(),
    })
}

pub(super) fn rfc3339(unix_secs: i64) -> Result<String, Error> {
    OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .ok_or_else(|| Error::Backup(format!("pgBackRest gave an invalid time: {unix_secs}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What pgBackRest 2.45's verify logged for a flipped byte in a WAL segment and
    /// in a backup file.
    const DAMAGED: &str = "\
2026-12-07 09:33:13.923 P01   INFO: invalid result 15-1/0000000100000000/000000010000000000000003-c837.zst: [29] raised from local-1 protocol: zst error: [-20] Data corruption detected
2026-12-07 09:33:13.955 P01   INFO: invalid checksum '20261207-092058F/pg_data/base/1/1259.zst'
2026-12-07 09:33:14.099 P00   INFO: stanza: s1
                                    status: error
                                      archiveId: 15-1, total WAL checked: 4, total valid WAL: 3
                                        other: 1
                                      backup: 20261207-092058F, status: invalid, total files checked: 964, total valid files: 963
                                        checksum invalid: 1
2026-12-07 09:33:14.099 P00   INFO: verify command end: completed successfully (15296ms)
";

    #[test]
    fn verify_output_names_each_damaged_file() {
        let v = read_verification(DAMAGED);
        assert!(!v.valid);
        assert_eq!(v.problems.len(), 2, "{:?}", v.problems);
        assert!(v.problems[0].contains("000000010000000000000003"));
        assert!(v.problems[1].contains("20261207-092058F/pg_data/base/1/1259.zst"));
        assert!(v.summary.iter().any(|l| l.contains("checksum invalid: 1")));
        let clean = read_verification(
            "x P00   INFO: verify command begin 2.45: --stanza=s1\n\
             x P00   INFO: verify command end: completed successfully (365ms)\n",
        );
        assert!(clean.valid && clean.problems.is_empty());
        assert!(!read_verification("").valid, "no end, no verdict");
    }
}
