//! Quiet logs under normal load: a customer-managed server created, loaded with many
//! clients (PostgreSQL's backends are signalled all the time, so FUSE requests get
//! interrupted), stopped and started again leaves no WARN or ERROR in the agent's log
//! and no FATAL, ERROR or PANIC in PostgreSQL's — nothing an operator would have to
//! read that is not a problem. Read through `pgcmk server logs`, as an operator does.

mod support;

use std::process::Command;

use pgcmk_agent::contract::task::{LogRecord, LogSource};
use support::*;

fn noisy_lines(records: &[LogRecord]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match r {
            LogRecord::Line { source, text } => {
                let noisy = match source {
                    LogSource::Agent => text.contains(" WARN ") || text.contains(" ERROR "),
                    LogSource::Postgres => ["FATAL:", "ERROR:", "PANIC:", "WARNING:"]
                        .iter()
                        .any(|level| text.contains(level)),
                };
                noisy.then(|| format!("{}: {text}", source.name()))
            }
            LogRecord::Volume(_) => None,
        })
        .collect()
}

#[test]
fn normal_load_leaves_no_warning_or_error_in_the_logs() {
    let root = scratch();
    let vault = Vault::start(root.path());
    let cp = ControlPlane::start(root.path(), &vault, 5, 60);
    let key = vault.customer_key("quiet");
    let created = cp.create_with("quiet", &key, &versionless(&key.kid));
    let port = created["server"]["port"].as_u64().unwrap().to_string();
    let password = created["password"].as_str().unwrap();
    let pgbench = |args: &[&str]| {
        let out = Command::new("/usr/lib/postgresql/15/bin/pgbench")
            .args(args)
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "postgres"])
            .env("PGPASSWORD", password)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pgbench {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    pgbench(&["-i", "-q", "-s", "2"]);
    pgbench(&["-c", "8", "-j", "2", "-T", "10", "-n"]);
    cp.server(&["stop", "quiet"]);
    cp.server(&["start", "quiet"]);
    pgbench(&["-S", "-c", "4", "-j", "2", "-T", "3", "-n"]);
    let records: Vec<LogRecord> =
        serde_json::from_value(cp.server(&["logs", "quiet", "--lines", "100000"])).unwrap();
    assert!(
        records.iter().any(|r| matches!(
            r,
            LogRecord::Line {
                source: LogSource::Postgres,
                ..
            }
        )),
        "no PostgreSQL log lines were read"
    );
    let noisy = noisy_lines(&records);
    assert!(noisy.is_empty(), "{}", noisy.join("\n"));
}

#[test]
fn logs_written_to_files_hold_no_colour_codes() {
    let root = scratch();
    let vault = Vault::start(root.path());
    let cp = ControlPlane::start(root.path(), &vault, 5, 60);
    cp.server(&["create", "plain", "--location", "local"]);
    let records: Vec<LogRecord> =
        serde_json::from_value(cp.server(&["logs", "plain", "--lines", "1000"])).unwrap();
    let agent_lines: Vec<&str> = records
        .iter()
        .filter_map(|r| match r {
            LogRecord::Line {
                source: LogSource::Agent,
                text,
            } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(!agent_lines.is_empty(), "no agent log lines were read");
    for (what, text) in [
        ("the vault's log", vault.process.log()),
        ("the control plane's log", cp.log()),
        ("the agent's log", agent_lines.join("\n")),
    ] {
        assert!(!text.is_empty(), "{what} is empty");
        assert!(!text.contains('\x1b'), "{what} has colour codes:\n{text}");
    }
}
