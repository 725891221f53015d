//! `pgcmk server logs` and `pgcmk server fsck` go through the node agent, with real
//! parts: `pgcmk vault serve`, `pgcmk serve`, node agents, cryptfs over /dev/fuse
//! and PostgreSQL 15. PostgreSQL's log lives on the encrypted volume: it is read
//! from the live mount while the server serves, and from a read-only mount private
//! to a short-lived agent run when it does not. fsck unwraps the DEK in such a run.

mod support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use pgcmk_agent::contract::task::{LogRecord, LogSource, VolumeView};
use pgcmk_cryptfs::format::{data_offset, Slot};
use pgcmk_testkit::wait::wait_for;
use serde_json::Value;
use support::*;

/// A server with a table, its port, password and directory.
struct Served {
    port: u64,
    password: String,
    dir: PathBuf,
}

fn create(cp: &ControlPlane, name: &str) -> Served {
    let created = cp.server(&["create", "--name", name, "--location", "local"]);
    Served {
        port: created["server"]["port"].as_u64().unwrap(),
        password: created["password"].as_str().unwrap().to_string(),
        dir: PathBuf::from(created["server"]["dir"].as_str().unwrap()),
    }
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

/// True when something is mounted at `dir`/mnt in the host's mount namespace.
fn mounted(dir: &Path) -> bool {
    let mnt = dir.join("mnt");
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == mnt.to_str())
}

#[test]
fn server_logs_show_postgres_lines_of_a_running_and_of_a_stopped_server() {
    let root = scratch();
    let vault = Vault::start(root.path());
    let cp = ControlPlane::start(root.path(), &vault, 60, 300);
    let s = create(&cp, "logged");

    // A statement that fails lands in PostgreSQL's log, on the encrypted volume.
    let marker = "LOGMARKER-running-4e1c";
    psql(s.port, &s.password, &format!("SELECT '{marker}'::int")).unwrap_err();
    wait_for(
        "the marker in the running server's log",
        Duration::from_secs(20),
        || has_line(&log_records(&cp, "logged"), LogSource::Postgres, marker),
    );
    let records = log_records(&cp, "logged");
    assert_eq!(
        records[0],
        LogRecord::Volume(VolumeView::Live),
        "{records:?}"
    );
    assert!(
        has_line(&records, LogSource::Agent, ""),
        "no agent log lines: {records:?}"
    );
    let text = cp.server_text(&["logs", "logged"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("postgres | ") && l.contains(marker)),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("agent    | ")), "{text}");

    // Following: a line written afterwards arrives; the run ends with the reader.
    let follow_marker = "LOGMARKER-followed-77ab";
    let mut follower = cp.spawn_server(&["logs", "logged", "--follow", "--lines", "0"]);
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
    psql(
        s.port,
        &s.password,
        &format!("SELECT '{follow_marker}'::int"),
    )
    .unwrap_err();
    let mut seen = Vec::new();
    wait_for("the followed line", Duration::from_secs(20), || {
        seen.extend(received.try_iter());
        seen.iter()
            .any(|l| l.starts_with("postgres | ") && l.contains(follow_marker))
    });
    drop(follower);
    wait_for("the follow run to end", Duration::from_secs(30), || {
        cp.agents_of(&s.dir).len() == 1
    });

    // Stopped: read from a read-only mount that only the run saw.
    cp.server(&["stop", "logged"]);
    assert!(!mounted(&s.dir));
    let records = log_records(&cp, "logged");
    assert_eq!(
        records[0],
        LogRecord::Volume(VolumeView::ReadOnly),
        "{records:?}"
    );
    for needle in [marker, follow_marker] {
        assert!(
            has_line(&records, LogSource::Postgres, needle),
            "{needle}: {records:?}"
        );
    }
    assert!(
        !mounted(&s.dir),
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
    assert_eq!(cp.state("logged").0, "Stopped");
    // It starts again as usual.
    cp.server(&["start", "logged"]);
    psql(s.port, &s.password, "SELECT 1").unwrap();
}

#[test]
fn fsck_of_a_stopped_server_is_clean_then_lists_a_tampered_block() {
    let root = scratch();
    let vault = Vault::start(root.path());
    let cp = ControlPlane::start(root.path(), &vault, 60, 300);
    let s = create(&cp, "checked");
    psql(
        s.port,
        &s.password,
        "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 5000) g; CHECKPOINT",
    )
    .unwrap();
    let relation = psql(s.port, &s.password, "SELECT pg_relation_filepath('t')").unwrap();

    let refused = cp.try_server(&["fsck", "checked"]).unwrap_err();
    assert!(refused.contains("stop it first"), "{refused}");

    cp.server(&["stop", "checked"]);
    let clean = cp.server(&["fsck", "checked"]);
    assert_eq!(clean["bad_blocks"], Value::Array(vec![]), "{clean}");
    assert!(clean["files_checked"].as_u64().unwrap() > 100, "{clean}");
    assert_eq!(clean["dirty"], false, "{clean}");
    assert!(cp.has_event("checked", "volume checked"));

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
    let out = cp.server_output(&["fsck", "checked"]);
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
    assert_eq!(cp.state("checked").0, "Stopped");
    assert!(cp.agents_of(&s.dir).is_empty(), "an agent run is left");
}
