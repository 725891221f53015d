//! Backups under the customer's key (`docs/backups.md`), with real parts:
//! `pgcmk vault serve`, `pgcmk serve`, node agents, cryptfs over /dev/fuse,
//! PostgreSQL 15 and pgBackRest. A server archives its WAL from its first start and
//! takes a full backup at creation, into a repository that pgBackRest encrypts
//! with a passphrase only the server's key unlocks.

mod support;

use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use pgcmk_agent::contract::backup::{BackupKind, BackupSummary, RunningBackup};
use pgcmk_agent::contract::ServerDir;
use pgcmk_testkit::shared::{Held, Shared};
use pgcmk_testkit::wait::wait_for;
use support::backups::*;
use support::*;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

fn shared_stack() -> Held<Stack> {
    static STACK: Shared<Stack> = Shared::new();
    STACK.get(|| Stack::start(60, 300, None))
}

/// Held by the tests that take a backup of the shared server, so that none lands
/// between another's two looks at its backups.
static SHARED_SERVER_BACKUPS: Mutex<()> = Mutex::new(());

/// One server for the checks that only add to its backups (made again, under
/// another name, if the tests using it do not overlap).
fn shared_server(stack: &Stack) -> Held<Created> {
    static SERVER: Shared<Created> = Shared::new();
    static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    SERVER.get(|| {
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("bk-shared-{n}");
        create_backed_up_with(stack, &name, &["--backup-retention-days", "14"])
    })
}

#[test]
fn no_byte_of_the_repository_logs_or_processes_shows_a_row_or_the_passphrase() {
    let stack = shared_stack();
    let s = shared_server(&stack);
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
    assert_encrypted_without(&repo_files, marker);

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

/// A WAL switch (a backup's start and stop) with O_DSYNC writes and WAL buffers
/// smaller than a segment wrote its padding page by page, each synced: 1-6 s on
/// cryptfs, a backup's whole fixed cost. One segment of buffers writes it at once.
#[test]
fn the_server_keeps_a_whole_wal_segment_in_its_buffers() {
    let stack = shared_stack();
    let s = shared_server(&stack);
    assert_eq!(s.sql("SHOW wal_sync_method").unwrap(), "open_datasync");
    assert_eq!(s.sql("SHOW wal_buffers").unwrap(), "16MB");
    assert_eq!(s.sql("SHOW wal_segment_size").unwrap(), "16MB");
}

#[test]
fn backups_are_listed_shown_and_taken_with_their_lsn_range_and_key_version() {
    let stack = shared_stack();
    let s = shared_server(&stack);
    let _alone = SHARED_SERVER_BACKUPS
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let before = list(&stack, &s);
    assert_eq!(before.retention_days, 14, "as created");
    let first = &before.backups[0];
    assert_eq!(first.kind, BackupKind::Full, "the backup at creation");
    assert!(before.wal.is_some(), "WAL is archived from creation on");
    assert_eq!(
        first.key_version.to_string(),
        stack.cp.wrapped_by(&s.name),
        "the repository key is wrapped by the key version that wraps the DEK"
    );

    s.sql("CREATE TABLE IF NOT EXISTS grows(n int); INSERT INTO grows SELECT generate_series(1, 1000)")
        .unwrap();
    let incr: BackupSummary = serde_json::from_value(
        stack
            .cp
            .try_backup(&["create", &s.name, "--type", "incr"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(incr.kind, BackupKind::Incr);
    assert!(
        incr.prior.is_some(),
        "an incremental backup depends on another"
    );
    assert!(
        lsn(&incr.start_lsn) > lsn(&first.stop_lsn),
        "{incr:?} after {first:?}"
    );
    assert!(lsn(&incr.stop_lsn) >= lsn(&incr.start_lsn), "{incr:?}");
    assert!(incr.finished_at >= incr.started_at, "{incr:?}");
    let after = list(&stack, &s);
    assert_eq!(after.backups.len(), before.backups.len() + 1);
    assert_eq!(after.backups.last(), Some(&incr));

    let shown: BackupSummary = serde_json::from_value(
        stack
            .cp
            .try_backup(&["show", &s.name, &incr.label])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(shown, incr);
    let missing = stack
        .cp
        .backup_output(&["show", &s.name, "20000101-000000F"]);
    assert_eq!(missing.status.code(), Some(3), "not found");
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("has no backup '20000101-000000F'"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

#[test]
fn verify_names_a_flipped_byte_in_a_backup_file_and_in_an_archived_segment() {
    let stack = shared_stack();
    let s = create_backed_up(&stack, "bk-damage");
    archive_marker(&s, "damage-me");
    let clean: serde_json::Value = stack.cp.try_backup(&["verify", &s.name]).unwrap();
    assert_eq!(clean["valid"], true, "{clean}");

    let files = files_under(&repository(&s));
    // A file of the newest backup (labels sort by time), which a restore of the
    // latest state reads; an older backup's copy of a file changed since is not read.
    let label = |f: &PathBuf| {
        let path = f.to_string_lossy();
        let before = path
            .split("/pg_data/")
            .next()
            .unwrap_or_default()
            .to_string();
        before.rsplit('/').next().unwrap_or_default().to_string()
    };
    let in_backups: Vec<&PathBuf> = files
        .iter()
        .filter(|f| f.to_string_lossy().contains("/pg_data/base/"))
        .collect();
    let newest = in_backups.iter().map(|f| label(f)).max().unwrap();
    let backup_file = *in_backups
        .iter()
        .filter(|f| label(f) == newest)
        .max_by_key(|f| fs::metadata(f).unwrap().len())
        .unwrap();
    let segment = files
        .iter()
        .filter(|f| {
            let name = f.file_name().unwrap().to_string_lossy();
            f.to_string_lossy().contains("/archive/") && name.len() > 24 && name.ends_with(".zst")
        })
        .max_by_key(|f| fs::metadata(f).unwrap().len())
        .unwrap();
    for file in [backup_file, segment] {
        let mut bytes = fs::read(file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        fs::write(file, bytes).unwrap();
    }

    let out = stack.cp.backup_output(&["verify", &s.name]);
    assert_eq!(out.status.code(), Some(8), "damage is exit code 8");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], false, "{report}");
    let problems = report["problems"].to_string();
    let name_of = |f: &PathBuf| f.file_name().unwrap().to_string_lossy().into_owned();
    let segment_name = name_of(segment);
    assert!(
        problems.contains(&segment_name[..24]),
        "{segment_name} not in {problems}"
    );
    assert!(
        problems.contains(&name_of(backup_file)),
        "{backup_file:?} not in {problems}"
    );

    // A restore that needs the damaged file fails loudly and leaves no server.
    let err = stack
        .cp
        .try_server(&[
            "restore",
            "--source",
            &s.name,
            "--name",
            "bk-damage-copy",
            "--point-in-time",
            "latest",
        ])
        .unwrap_err();
    // pgBackRest refuses the damaged backup file when it restores it; when it does
    // not read that file (CI saw one run where the restore of the files passed),
    // PostgreSQL stops at the damaged segment during recovery. Either way the
    // restore fails, names why, and the half-made server is removed.
    assert!(
        (err.contains("pgbackrest restore") && err.contains("failed"))
            || err.contains("postgres exited during startup"),
        "{err}"
    );
    assert!(stack.cp.try_server(&["show", "bk-damage-copy"]).is_err());
}

#[test]
fn a_running_backup_reports_its_progress_while_it_runs_and_none_after() {
    let stack = shared_stack();
    let s = shared_server(&stack);
    let _alone = SHARED_SERVER_BACKUPS
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    // A few files of ~30 MB: pgBackRest counts a file once it is copied whole.
    for t in 0..3 {
        s.sql(&format!(
            "CREATE TABLE IF NOT EXISTS progress_{t} AS SELECT n, md5(n::text) || md5((n + {t})::text) \
             || md5((n * 7)::text) AS t FROM generate_series(1, 200000) n"
        ))
        .unwrap();
    }
    let began = OffsetDateTime::now_utc();
    let mut taking = stack
        .cp
        .spawn_backup_text(&["create", &s.name, "--type", "full"]);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = taking.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the backup did not end: {seen:?}"
        );
        let running: Vec<RunningBackup> =
            serde_json::from_value(stack.cp.try_backup(&["progress", &s.name]).unwrap()).unwrap();
        seen.extend(running);
    };
    let ended = OffsetDateTime::now_utc();
    let mut said = String::new();
    taking
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert!(status.success(), "{said}");
    assert!(
        seen.iter()
            .any(|b| b.percent_complete.is_some_and(|p| p > 0.0 && p < 100.0)),
        "no progress between 0 and 100 while it ran: {seen:?}"
    );
    for b in &seen {
        assert_eq!((b.kind, b.repository), (BackupKind::Full, 1), "{b:?}");
        // pgBackRest's start, in whole seconds.
        let started = OffsetDateTime::parse(&b.started_at, &Rfc3339).unwrap();
        assert!(
            started >= began - time::Duration::seconds(1) && started < ended,
            "{b:?} not between {began} and {ended}"
        );
        assert_eq!(b.bytes_done, None, "pgBackRest 2.45 tells no bytes: {b:?}");
    }
    assert!(
        said.contains(&format!("full backup of '{}' (repository 1): ", s.name)),
        "no progress line on stderr: {said}"
    );
    let after: Vec<RunningBackup> =
        serde_json::from_value(stack.cp.try_backup(&["progress", &s.name]).unwrap()).unwrap();
    assert_eq!(after, [], "the ended backup is still reported");
}

/// The pid of a `pgbackrest ... backup` process of stanza `id`, if one runs.
fn running_backup(id: &str) -> Option<u32> {
    fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .find_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let stanza = format!("--stanza={id}");
            (args.first().is_some_and(|a| a.ends_with(b"pgbackrest"))
                && args.contains(&stanza.as_bytes())
                && args.contains(&&b"backup"[..]))
            .then_some(pid)
        })
}

#[test]
fn kill_9_of_the_agent_mid_backup_lists_no_incomplete_backup_and_the_next_succeeds() {
    let stack = shared_stack();
    let s = create_backed_up(&stack, "bk-kill");
    s.sql("CREATE TABLE filler AS SELECT n, md5(n::text) AS t FROM generate_series(1, 200000) n")
        .unwrap();
    let before = list(&stack, &s).backups;
    let id = s.dir.file_name().unwrap().to_str().unwrap().to_string();
    let mut taking = stack
        .cp
        .spawn_backup(&["create", &s.name, "--type", "full"]);
    wait_for("pgbackrest backup running", Duration::from_secs(30), || {
        running_backup(&id).is_some()
    });
    let agent = agent_pid(&s.dir).expect("a node agent");
    kill(agent, "-9");
    let status = taking.0.wait().unwrap();
    assert!(!status.success(), "the backup survived its server's agent");
    wait_for("the server Ready again", Duration::from_secs(60), || {
        agent_pid(&s.dir).is_some_and(|pid| pid != agent) && stack.cp.state(&s.name).0 == "Ready"
    });
    wait_for(
        "the interrupted backup gone",
        Duration::from_secs(30),
        || running_backup(&id).is_none(),
    );
    let after = list(&stack, &s).backups;
    assert_eq!(after, before, "an interrupted backup is listed");

    let next: BackupSummary = serde_json::from_value(
        stack
            .cp
            .try_backup(&["create", &s.name, "--type", "full"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(list(&stack, &s).backups.last(), Some(&next));
}

#[test]
fn a_retention_outside_1_to_35_days_is_refused_before_anything_is_made() {
    let stack = shared_stack();
    let err = stack
        .cp
        .try_server(&[
            "create",
            "--name",
            "bk-36",
            "--location",
            "local",
            "--backup-retention-days",
            "36",
        ])
        .unwrap_err();
    assert!(
        err.contains("36 days is out of range: choose 1 to 35 days"),
        "{err}"
    );
    assert!(
        stack.cp.try_server(&["show", "bk-36"]).is_err(),
        "a server was made"
    );
}

#[test]
fn backup_settings_chosen_at_create_change_in_place_and_out_of_range_changes_nothing() {
    let stack = shared_stack();
    let s = create_backed_up_with(
        &stack,
        "bk-settings",
        &[
            "--full-backup-every-hours",
            "72",
            "--diff-backup-every-hours",
            "12",
        ],
    );
    let settings = || {
        let config: serde_json::Value =
            serde_json::from_slice(&fs::read(ServerDir::new(&s.dir).agent_config()).unwrap())
                .unwrap();
        let b = &config["backup"];
        (
            b["retention_days"].as_u64().unwrap(),
            b["full_every_hours"].as_u64().unwrap(),
            b["diff_every_hours"].as_u64().unwrap(),
        )
    };
    let on_mount = || {
        let conf = ServerDir::new(&s.dir)
            .backup_engine_dir()
            .join("pgbackrest.conf");
        fs::read_to_string(conf)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("repo1-retention-full=").map(str::to_string))
            .unwrap()
    };
    assert_eq!(settings(), (7, 72, 12), "as created");
    let agent = agent_pid(&s.dir).expect("a node agent");

    stack
        .cp
        .try_server(&["update", "bk-settings", "--backup-retention-days", "21"])
        .unwrap();
    // Applied when the command returns, by the same agent: nothing restarted.
    assert_eq!(on_mount(), "21");
    assert_eq!(agent_pid(&s.dir), Some(agent));
    assert_eq!(list(&stack, &s).retention_days, 21);
    assert!(stack.cp.has_event("bk-settings", "backup settings applied"));
    stack
        .cp
        .try_server(&["update", "bk-settings", "--full-backup-every-hours", "48"])
        .unwrap();
    assert_eq!(settings(), (21, 48, 12));

    for (option, value, want) in [
        (
            "--backup-retention-days",
            "0",
            "0 days is out of range: choose 1 to 35",
        ),
        (
            "--diff-backup-every-hours",
            "48",
            "would never come between full backups",
        ),
    ] {
        let err = stack
            .cp
            .try_server(&["update", "bk-settings", option, value])
            .unwrap_err();
        assert!(err.contains(want), "{err}");
    }
    assert_eq!(settings(), (21, 48, 12), "refused changes change nothing");
    assert_eq!(on_mount(), "21");
}
