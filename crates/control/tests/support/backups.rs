//! Helpers of the backup tests: servers with their first backup, their
//! repositories, WAL archived on demand.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pgcmk_agent::contract::backup::BackupCatalog;
use pgcmk_agent::contract::ServerDir;
use pgcmk_testkit::wait::wait_for;

use super::{Created, Stack};

/// A service-managed server `name` on `stack`, once its first full backup is done.
pub fn create_backed_up(stack: &Stack, name: &str) -> Created {
    create_backed_up_with(stack, name, &[])
}

/// [`create_backed_up`] with more options of `server create`.
pub fn create_backed_up_with(stack: &Stack, name: &str, options: &[&str]) -> Created {
    let mut args = vec!["create", "--name", name, "--location", "local"];
    args.extend(options);
    let s = Created::from(&stack.cp.server(&args));
    // A bound, not a pause: servers of a binary back up side by side on 2 cores.
    wait_for("the first full backup", Duration::from_secs(120), || {
        stack.cp.has_event(name, "backup completed")
    });
    s
}

/// The server's pgBackRest repository: `STATE/backups/ID`.
pub fn repository(s: &Created) -> PathBuf {
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
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        // What pgBackRest removes meanwhile (temporary files) is passed over.
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                todo.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files
}

/// Asserts that every file of `files` (a repository's) is pgBackRest ciphertext
/// and holds no `marker`. A backup under way may be writing meanwhile: its
/// temporary files come and go, and a file just created is still empty.
pub fn assert_encrypted_without(files: &[PathBuf], marker: &str) {
    for file in files {
        let Ok(bytes) = fs::read(file) else {
            continue;
        };
        if bytes.is_empty() {
            continue;
        }
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
}

/// A WAL position `HI/LO` (hex) as a number.
pub fn lsn(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Inserts `marker` and has the WAL segment holding it archived; the segment's name.
pub fn archive_marker(s: &Created, marker: &str) -> String {
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

/// `pgcmk server restore NAME --source SOURCE --point-in-time AT` with `more`
/// options; the new server, or the error text.
pub fn restore_with(
    stack: &Stack,
    source: &str,
    name: &str,
    at: &str,
    more: &[&str],
) -> Result<Created, String> {
    let mut args = vec![
        "restore",
        "--source",
        source,
        "--name",
        name,
        "--point-in-time",
        at,
    ];
    args.extend(more);
    stack.cp.try_server(&args).map(|v| Created::from(&v))
}

/// The backups `pgcmk backup list` reports.
pub fn list(stack: &Stack, s: &Created) -> BackupCatalog {
    serde_json::from_value(stack.cp.try_backup(&["list", &s.name]).unwrap()).unwrap()
}

/// The repository passphrase, from pgBackRest's configuration on the live mount.
pub fn passphrase(s: &Created) -> String {
    let conf = ServerDir::new(&s.dir)
        .backup_engine_dir()
        .join("pgbackrest.conf");
    let text = fs::read_to_string(&conf).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("repo1-cipher-pass="))
        .expect("a passphrase in pgBackRest's configuration")
        .to_string()
}

/// `segment` fetched from the repository and decrypted by pgBackRest itself.
pub fn fetch_segment(s: &Created, segment: &str) -> Vec<u8> {
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
