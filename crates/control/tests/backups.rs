//! Backups under the customer's key (`docs/backups.md`), with real parts:
//! `pgcmk vault serve`, `pgcmk serve`, node agents, cryptfs over /dev/fuse,
//! PostgreSQL 15 and pgBackRest. A server archives its WAL from its first start and
//! takes a full backup at creation, into a repository that pgBackRest encrypts
//! with a passphrase only the server's key unlocks.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pgcmk_agent::contract::ServerDir;
use pgcmk_testkit::shared::{Held, Shared};
use pgcmk_testkit::wait::wait_for;
use support::*;

fn shared_stack() -> Held<Stack> {
    static STACK: Shared<Stack> = Shared::new();
    STACK.get(|| Stack::start(60, 300, None))
}

/// A service-managed server `name` on `stack`, once its first full backup is done.
fn create_backed_up(stack: &Stack, name: &str) -> Created {
    let s = Created::from(
        &stack
            .cp
            .server(&["create", "--name", name, "--location", "local"]),
    );
    wait_for("the first full backup", Duration::from_secs(60), || {
        stack.cp.has_event(name, "backup completed")
    });
    s
}

/// The server's pgBackRest repository: `STATE/backups/ID`.
fn repository(s: &Created) -> PathBuf {
    let id = s.dir.file_name().unwrap();
    s.dir
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("backups")
        .join(id)
}

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap().map(Result::unwrap) {
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                todo.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The repository passphrase, from pgBackRest's configuration on the live mount.
fn passphrase(s: &Created) -> String {
    let conf = ServerDir::new(&s.dir)
        .backup_engine_dir()
        .join("pgbackrest.conf");
    let text = fs::read_to_string(&conf).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("repo1-cipher-pass="))
        .expect("a passphrase in pgBackRest's configuration")
        .to_string()
}

/// Inserts `marker` and has the WAL segment holding it archived; the segment's name.
fn archive_marker(s: &Created, marker: &str) -> String {
    s.sql(&format!(
        "CREATE TABLE IF NOT EXISTS markers(t text); INSERT INTO markers VALUES ('{marker}')"
    ))
    .unwrap();
    let segment = s
        .sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        .unwrap();
    s.sql("SELECT pg_switch_wal()").unwrap();
    wait_for(
        "the marker's segment in the archive",
        Duration::from_secs(60),
        || {
            s.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
                .is_ok_and(|last| last.as_str() >= segment.as_str())
        },
    );
    segment
}

/// `segment` fetched from the repository and decrypted by pgBackRest itself.
fn fetch_segment(s: &Created, segment: &str) -> Vec<u8> {
    let out_dir = tempfile::tempdir().unwrap();
    let postgres = pgcmk_agent::postgres::OsUser::lookup("postgres").unwrap();
    postgres.chown(out_dir.path()).unwrap();
    let target = out_dir.path().join("segment");
    let conf = ServerDir::new(&s.dir)
        .backup_engine_dir()
        .join("pgbackrest.conf");
    let id = s.dir.file_name().unwrap().to_str().unwrap();
    let status = Command::new("runuser")
        .args(["-u", "postgres", "--", "pgbackrest"])
        .arg(format!("--config={}", conf.display()))
        .arg(format!("--stanza={id}"))
        .args(["archive-get", segment])
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success(), "archive-get {segment}: {status}");
    fs::read(target).unwrap()
}

#[test]
fn no_byte_of_the_repository_logs_or_processes_shows_a_row_or_the_passphrase() {
    let stack = shared_stack();
    let s = create_backed_up(&stack, "bk-marker");
    let marker = "pgcmk-backup-marker-5f3a9c1e";
    let segment = archive_marker(&s, marker);
    // The archived segment holds the row: what follows could fail.
    assert!(
        contains(&fetch_segment(&s, &segment), marker.as_bytes()),
        "the archived segment {segment} does not hold the marker"
    );
    let passphrase = passphrase(&s);
    assert_eq!(passphrase.len(), 64, "a 256-bit key in hex");

    let repo_files = files_under(&repository(&s));
    assert!(
        repo_files
            .iter()
            .any(|f| f.to_string_lossy().contains(".zst")),
        "no backup or WAL file in the repository: {repo_files:?}"
    );
    for file in &repo_files {
        let bytes = fs::read(file).unwrap();
        assert!(
            bytes.starts_with(b"Salted__"),
            "{} is not encrypted by pgBackRest",
            file.display()
        );
        assert!(
            !contains(&bytes, marker.as_bytes()),
            "marker in {}",
            file.display()
        );
    }

    let logs = files_under(&ServerDir::new(&s.dir).backup_engine_dir().join("log"));
    assert!(
        logs.iter()
            .any(|l| l.to_string_lossy().contains("archive-push")),
        "no pgBackRest archive-push log: {logs:?}"
    );
    let agent_log = ServerDir::new(&s.dir).agent_log();
    for file in logs.iter().chain([&agent_log]) {
        let bytes = fs::read(file).unwrap();
        for secret in [marker, passphrase.as_str()] {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "{secret} in {}",
                file.display()
            );
        }
    }

    // Arguments and environments of every process: the agent, PostgreSQL (its
    // archive_command) and pgBackRest's archivers among them.
    let mut seen_archive_command = false;
    for entry in fs::read_dir("/proc").unwrap().map(Result::unwrap) {
        if entry.file_name().to_str().unwrap().parse::<u32>().is_err() {
            continue;
        }
        for part in ["cmdline", "environ"] {
            let Ok(bytes) = fs::read(entry.path().join(part)) else {
                continue; // gone meanwhile
            };
            seen_archive_command |= contains(&bytes, b"archive-push");
            for secret in [marker, passphrase.as_str()] {
                assert!(
                    !contains(&bytes, secret.as_bytes()),
                    "{secret} in {}/{part}",
                    entry.path().display()
                );
            }
        }
    }
    assert!(
        seen_archive_command,
        "no process carries the archive command"
    );
}
