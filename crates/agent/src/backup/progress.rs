//! The progress of a backup running now, the DBA's or a scheduled one
//! (`docs/backups.md`, "Progress").
//!
//! Sources, documented interface first:
//! - whether a backup runs: `pgbackrest info --output=json`'s
//!   `status.lock.backup.held`. The JSON is the output pgBackRest keeps stable, and
//!   pgBackRest tries the lock itself, so a lock file left by a killed process
//!   does not count.
//! - how far: the same JSON's `size` and `size-cplt` (pgBackRest 2.48 and later);
//!   2.45 leaves them out and gives the percentage only in its text output's status
//!   line (`backup/expire running - 34.12% complete`). The text is read only for
//!   that number, and a line that no longer reads so gives no percentage rather
//!   than a wrong one. The lock file itself (`pctCplt` in 2.45) is not read: its
//!   name and fields are pgBackRest's internals (sizes added in 2.48, per-repository
//!   locks in 2.53).
//! - which backup (kind, repository, start): the running `pgbackrest ... backup`
//!   process with this server's configuration, whose arguments the agent wrote.

use std::fs;

use time::OffsetDateTime;

use super::info;
use super::pgbackrest::PgBackRest;
use crate::contract::backup::{BackupKind, Repository, RunningBackup};
use crate::sys;
use crate::Error;

/// The backups of `engine`'s stanza running now (none, or one: pgBackRest 2.45
/// runs one backup of a stanza at a time).
pub(crate) fn running(engine: &PgBackRest) -> Result<Vec<RunningBackup>, Error> {
    let json = engine.run(&["info", "--output=json"])?;
    let lock = info::parse(&json)
        .map_err(Error::Backup)?
        .status
        .lock
        .backup;
    if !lock.held {
        return Ok(Vec::new());
    }
    // The lock is also held by a stanza command, and by expire after a backup's end.
    let processes: Vec<BackupProcess> = engine
        .running_commands()
        .into_iter()
        .filter_map(|(pid, args)| BackupProcess::of(pid, &args))
        .collect();
    if processes.is_empty() {
        return Ok(Vec::new());
    }
    let percent_complete = match (lock.size, lock.size_cplt) {
        (Some(total), Some(done)) if total > 0 => Some(done as f64 * 100.0 / total as f64),
        _ => percent_in_text(&engine.run(&["info"])?),
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    processes
        .into_iter()
        .map(|p| {
            Ok(RunningBackup {
                kind: p.kind,
                repository: p.repository.number(),
                started_at: super::tasks::rfc3339(p.started)?,
                elapsed_secs: u64::try_from(now - p.started).unwrap_or(0),
                percent_complete,
                bytes_done: lock.size_cplt,
                bytes_total: lock.size,
            })
        })
        .collect()
}

/// The percentage in the status line of `pgbackrest info`'s text output:
/// `status: ok (backup/expire running - 34.12% complete)`.
fn percent_in_text(text: &str) -> Option<f64> {
    let (_, after) = text.split_once("backup/expire running - ")?;
    let (number, _) = after.split_once("% complete")?;
    number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|p| (0.0..=100.0).contains(p))
}

/// A `pgbackrest ... backup` process of this server.
#[derive(Debug, PartialEq, Eq)]
struct BackupProcess {
    kind: BackupKind,
    repository: Repository,
    /// When it started, Unix seconds.
    started: i64,
}

impl BackupProcess {
    /// Process `pid` with arguments `args`, when it is a backup's main process.
    fn of(pid: u32, args: &[String]) -> Option<Self> {
        let (kind, repository) = backup_command(args)?;
        Some(Self {
            kind,
            repository,
            started: process_start(pid)?,
        })
    }
}

/// The kind and repository of a backup's main process, from the arguments the
/// agent gave it (`--repo=N backup --type=KIND`); `None` for any other pgBackRest
/// process (its workers run `backup:local`).
fn backup_command(args: &[String]) -> Option<(BackupKind, Repository)> {
    if !args.iter().any(|a| a == "backup") {
        return None;
    }
    let value = |option: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(option)?.strip_prefix('='))
    };
    let kind = value("--type")?.parse().ok()?;
    let repository = value("--repo")
        .map_or(Ok(Repository::Primary), str::parse)
        .ok()?;
    Some((kind, repository))
}

/// When process `pid` started, Unix seconds: its start in clock ticks after boot
/// (`/proc/PID/stat`, field 22) plus the boot time (`/proc/stat`'s `btime`).
fn process_start(pid: u32) -> Option<i64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let (_, fields) = stat.rsplit_once(')')?;
    // Field 3 is the first after the name: field 22 is the 20th.
    let ticks: u64 = fields.split_whitespace().nth(19)?.parse().ok()?;
    let boot: i64 = fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    let secs = ticks / sys::clock_ticks_per_second()?;
    Some(boot + i64::try_from(secs).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pgBackRest 2.45's `info` while a full backup ran (a stanza with one
    /// earlier backup), captured on this project's machine.
    const RUNNING_TEXT: &str = "\
stanza: s1
    status: ok (backup/expire running - 54.91% complete)
    cipher: aes-256-cbc

    db (current)
        wal archive min/max (15): 000000010000000000000001/000000010000000000000028

        full backup: 20261207-231402F
            timestamp start/stop: 2026-12-07 23:14:02 / 2026-12-07 23:14:16
            wal start/stop: 000000010000000000000017 / 000000010000000000000017
            database size: 334.4MB, database backup size: 334.4MB
            repo1: backup set size: 33.9MB, backup size: 33.9MB
";

    /// Its `info --output=json` at the same moment: the lock held, no sizes.
    const RUNNING_JSON: &str = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000010000000000000028","min":"000000010000000000000001"}],"backup":[{"archive":{"start":"000000010000000000000017","stop":"000000010000000000000017"},"backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},"error":false,"info":{"delta":350680749,"repository":{"delta":35594736,"size":35594736},"size":350680749},"label":"20261207-231402F","lsn":{"start":"0/17000028","stop":"0/17000138"},"prior":null,"reference":null,"timestamp":{"start":1796685242,"stop":1796685256},"type":"full"}],"cipher":"aes-256-cbc","db":[{"id":1,"repo-key":1,"system-id":7716704289745290773,"version":"15"}],"name":"s1","repo":[{"cipher":"aes-256-cbc","key":1,"status":{"code":0,"message":"ok"}}],"status":{"code":0,"lock":{"backup":{"held":true}},"message":"ok"}}]"#;

    #[test]
    fn pgbackrest_2_45_tells_a_running_backup_and_its_percentage() {
        let lock = info::parse(RUNNING_JSON).unwrap().status.lock.backup;
        assert!(lock.held);
        assert_eq!(
            (lock.size, lock.size_cplt),
            (None, None),
            "2.45 has no sizes"
        );
        assert_eq!(percent_in_text(RUNNING_TEXT), Some(54.91));
        // A new stanza's first backup, before pgBackRest counted its files.
        assert_eq!(
            percent_in_text("    status: error (no valid backups, backup/expire running)\n"),
            None
        );
        assert_eq!(
            percent_in_text(
                "    status: error (no valid backups, backup/expire running - 0.00% complete)\n"
            ),
            Some(0.0)
        );
        assert_eq!(percent_in_text("    status: ok\n"), None);
        assert_eq!(
            percent_in_text("status: ok (backup/expire running - 340.1% complete)"),
            None,
            "never a percentage out of range"
        );
    }

    #[test]
    fn pgbackrest_2_48_gives_the_running_backups_bytes_in_json() {
        // The shape 2.48 added (pgBackRest pull request 2141).
        let json = RUNNING_JSON.replace(
            r#""lock":{"backup":{"held":true}}"#,
            r#""lock":{"backup":{"held":true,"size":967412859,"size-cplt":155385856}}"#,
        );
        let lock = info::parse(&json).unwrap().status.lock.backup;
        assert_eq!(lock.size, Some(967412859));
        assert_eq!(lock.size_cplt, Some(155385856));
        let idle = RUNNING_JSON.replace(r#""held":true"#, r#""held":false"#);
        assert!(!info::parse(&idle).unwrap().status.lock.backup.held);
    }

    #[test]
    fn only_a_backups_main_process_is_a_running_backup() {
        let args = |line: &str| line.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            backup_command(&args(
                "/usr/bin/pgbackrest --config=/m/pgbackrest.conf --stanza=s --repo=2 backup --type=diff"
            )),
            Some((BackupKind::Diff, Repository::Geo))
        );
        assert_eq!(
            backup_command(&args(
                "pgbackrest --config=c --stanza=s --repo=1 backup:local --type=full"
            )),
            None,
            "a worker"
        );
        assert_eq!(
            backup_command(&args("pgbackrest --config=c --stanza=s archive-push p")),
            None
        );
        let started = process_start(std::process::id()).unwrap();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert!(started <= now && now - started < 3600, "{started} vs {now}");
    }
}
