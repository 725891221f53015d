//! `pgcmk server logs` and `pgcmk server fsck` go through the node agent, with real
//! parts: `pgcmk vault serve`, `pgcmk serve`, node agents, cryptfs over /dev/fuse
//! and PostgreSQL 15. PostgreSQL's log lives on the encrypted volume: it is read
//! from the live mount while the server serves, and from a read-only mount private
//! to a short-lived agent run when it does not. fsck unwraps the DEK in such a run.

mod support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::time::Duration;

use pgcmk_agent::contract::task::{LogRecord, LogSource, VolumeView};
use pgcmk_agent::contract::ServerDir;
use pgcmk_cryptfs::format::{data_offset, Slot};
use pgcmk_testkit::shared::{Held, Shared};
use pgcmk_testkit::wait::wait_for;
use serde_json::Value;
use support::*;

fn shared_stack() -> Held<Stack> {
    static STACK: Shared<Stack> = Shared::new();
    STACK.get(|| Stack::start(60, 300, None))
}

/// A service-managed server `name` on `stack`.
fn create(stack: &Stack, name: &str) -> Created {
    Created::from(
        &stack
            .cp
            .server(&["create", "--name", name, "--location", "local"]),
    )
}

/// The log records `pgcmk server logs NAME --output json` prints.
fn log_records(cp: &ControlPlane, name: &str) -> Vec<LogRecord> {
    serde_json::from_value(cp.server(&["logs", name, "--lines", "1000"])).unwrap()
}

fn has_line(records: &[LogRecord], source: LogSource, needle: &str) -> bool {
    records.iter().any(|r| {
        matches!(r, LogRecord::Line { source: s, text } if *s == source && text.contains(needle))
    })
}

/// Makes PostgreSQL log an error carrying `marker` (on the encrypted volume), and
/// waits until the server's logs show it.
fn log_marker(cp: &ControlPlane, s: &Created, marker: &str) {
    s.sql(&format!("SELECT '{marker}'::int")).unwrap_err();
    wait_for(
        &format!("the marker {marker} in the running server's log"),
        Duration::from_secs(20),
        || has_line(&log_records(cp, &s.name), LogSource::Postgres, marker),
    );
}

/// Follows the server's logs from now on while PostgreSQL logs an error carrying
/// `marker`: the follow run prints where the lines come from, then that line, and
/// ends with its reader.
fn follow_marker(cp: &ControlPlane, s: &Created, marker: &str) {
    let mut follower = cp.spawn_server(&["logs", &s.name, "--follow", "--lines", "0"]);
    let (lines, received) = mpsc::channel();
    let stdout = follower.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    // The follow run is up once it has printed where PostgreSQL's log comes from.
    let first = received.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(first.contains("serving agent's mount"), "{first}");
    s.sql(&format!("SELECT '{marker}'::int")).unwrap_err();
    let mut seen = Vec::new();
    wait_for("the followed line", Duration::from_secs(20), || {
        seen.extend(received.try_iter());
        seen.iter()
            .any(|l| l.starts_with("postgres | ") && l.contains(marker))
    });
    drop(follower);
    wait_for("the follow run to end", Duration::from_secs(30), || {
        cp.agents_of(&s.dir).len() == 1
    });
}

#[test]
fn a_running_servers_logs_come_from_the_live_mount_with_postgres_and_agent_lines() {
    let stack = shared_stack();
    let cp = &stack.cp;
    let s = create(&stack, "running-logs");
    // A statement that fails lands in PostgreSQL's log, on the encrypted volume.
    let marker = "LOGMARKER-running-4e1c";
    log_marker(cp, &s, marker);
    let records = log_records(cp, &s.name);
    assert_eq!(
        records[0],
        LogRecord::Volume(VolumeView::Live),
        "{records:?}"
    );
    assert!(
        has_line(&records, LogSource::Agent, ""),
        "no agent log lines: {records:?}"
    );
    let text = cp.server_text(&["logs", &s.name]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("postgres | ") && l.contains(marker)),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("agent    | ")), "{text}");
}

#[test]
fn following_the_logs_delivers_a_line_written_afterwards_and_ends_with_the_reader() {
    let stack = shared_stack();
    let s = create(&stack, "followed-logs");
    follow_marker(&stack.cp, &s, "LOGMARKER-followed-77ab");
}

#[test]
fn a_stopped_servers_logs_come_from_a_read_only_mount_only_its_run_saw() {
    let stack = shared_stack();
    let cp = &stack.cp;
    let s = create(&stack, "stopped-logs");
    let (marker, followed) = ("LOGMARKER-running-5f2d", "LOGMARKER-followed-88bc");
    log_marker(cp, &s, marker);
    follow_marker(cp, &s, followed);

    cp.server(&["stop", &s.name]);
    let dir = ServerDir::new(&s.dir);
    assert!(!dir.is_mounted());
    let records = log_records(cp, &s.name);
    assert_eq!(
        records[0],
        LogRecord::Volume(VolumeView::ReadOnly),
        "{records:?}"
    );
    for needle in [marker, followed] {
        assert!(
            has_line(&records, LogSource::Postgres, needle),
            "{needle}: {records:?}"
        );
    }
    assert!(
        !dir.is_mounted(),
        "the read-only mount is visible on the host"
    );
    assert!(cp.agents_of(&s.dir).is_empty(), "an agent run is left");
    assert!(
        !s.dir
            .join("cipher")
            .join(pgcmk_cryptfs::DIRTY_MARKER_NAME)
            .exists(),
        "the read-only mount marked the volume dirty"
    );
    assert_eq!(cp.state(&s.name).0, "Stopped");
    // It starts again as usual.
    cp.server(&["start", &s.name]);
    s.sql("SELECT 1").unwrap();
}

/// A server `name` with a table `t` of 5000 rows checkpointed to the volume; the
/// table's file path relative to the data directory.
fn server_with_table(stack: &Stack, name: &str) -> (Created, String) {
    let s = create(stack, name);
    s.sql("CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 5000) g; CHECKPOINT")
        .unwrap();
    let relation = s.sql("SELECT pg_relation_filepath('t')").unwrap();
    (s, relation)
}

#[test]
fn fsck_of_a_running_server_is_refused() {
    let stack = shared_stack();
    let s = create(&stack, "fsck-running");
    let refused = stack.cp.try_server(&["fsck", &s.name]).unwrap_err();
    assert!(refused.contains("stop it first"), "{refused}");
}

#[test]
fn fsck_of_a_stopped_untouched_server_is_clean_and_an_event() {
    let stack = shared_stack();
    let cp = &stack.cp;
    let (s, _) = server_with_table(&stack, "fsck-clean");
    cp.server(&["stop", &s.name]);
    let clean = cp.server(&["fsck", &s.name]);
    assert_eq!(clean["bad_blocks"], Value::Array(vec![]), "{clean}");
    assert!(clean["files_checked"].as_u64().unwrap() > 100, "{clean}");
    assert_eq!(clean["dirty"], false, "{clean}");
    assert!(cp.has_event(&s.name, "volume checked"));
}

#[test]
fn fsck_lists_a_tampered_block_and_only_it_and_leaves_the_server_stopped() {
    let stack = shared_stack();
    let cp = &stack.cp;
    let (s, relation) = server_with_table(&stack, "fsck-tampered");
    cp.server(&["stop", &s.name]);
    // Tamper with block 0 of the table's file: both slots, whichever is current.
    let relation_file = format!("pgdata/{relation}");
    let cipher_file = s.dir.join("cipher").join(&relation_file);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&cipher_file)
        .unwrap();
    let len = file.metadata().unwrap().len();
    for slot in [Slot::A, Slot::B] {
        let at = data_offset(0, slot) + 100;
        if at < len {
            let mut byte = [0u8];
            file.read_exact_at(&mut byte, at).unwrap();
            file.write_all_at(&[byte[0] ^ 0x5a], at).unwrap();
        }
    }
    drop(file);
    let out = cp.server_output(&["fsck", &s.name]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "fsck passed a tampered volume:\n{stdout}"
    );
    assert!(
        stdout.contains(&format!("{relation_file}: block 0:")),
        "the tampered block is not listed:\n{stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.contains(": block ")).count(),
        1,
        "{stdout}"
    );
    assert!(stderr.contains("1 bad block(s)"), "{stderr}");
    assert_eq!(cp.state(&s.name).0, "Stopped");
    assert!(cp.agents_of(&s.dir).is_empty(), "an agent run is left");
}
