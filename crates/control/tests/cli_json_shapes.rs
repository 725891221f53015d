//! Every `pgcmk` command a script runs answers `--output json` in the same shapes:
//! one JSON document on stdout, lists as bare arrays (never `{"value": [...]}`), every
//! time as an RFC 3339 string, a server's state as a name beside its fields; a failure
//! prints `{"error": {"code", "message", "exit_code"}}` on stderr and nothing on stdout.
//! The commands are walked against a real vault and control plane, and the list of
//! commands is checked against the CLI's own definition (its man pages), so a new
//! command without a case here fails this test.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use pgcmk_testkit::binary::pgcmk;
use serde_json::Value;
use support::*;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Commands that do not answer JSON, and why.
const NOT_JSON: [&str; 7] = [
    "serve",       // runs until stopped
    "host serve",  // runs until stopped
    "vault serve", // runs until stopped
    "fs mount",    // runs until unmounted
    "demo",        // a story for people
    "completions", // a shell script
    "man-pages",   // writes files
];

/// Fields that hold a time.
const TIME_FIELDS: [&str; 10] = [
    "created",
    "updated",
    "nbf",
    "exp",
    "deletedDate",
    "scheduledPurgeDate",
    "created_at",
    "at",
    "time",
    "enrolled_at",
];

/// What is wrong with the shape of `v`, at `path`.
fn shape_problems(v: &Value, path: &str, problems: &mut Vec<String>) {
    match v {
        Value::Object(fields) => {
            for (name, field) in fields {
                let here = format!("{path}.{name}");
                if name == "value" && field.is_array() {
                    problems.push(format!("{here}: a list wrapped in {{\"value\": [...]}}"));
                }
                if name == "state" && field.is_object() {
                    problems.push(format!("{here}: a nested state"));
                }
                if TIME_FIELDS.contains(&name.as_str()) && !field.is_null() {
                    let ok = field
                        .as_str()
                        .is_some_and(|s| OffsetDateTime::parse(s, &Rfc3339).is_ok());
                    if !ok {
                        problems.push(format!("{here}: {field} is not an RFC 3339 time"));
                    }
                }
                shape_problems(field, &here, problems);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                shape_problems(item, &format!("{path}[{i}]"), problems);
            }
        }
        _ => {}
    }
}

/// Runs commands with both roles' one setting each, and records what each answered.
struct Walk<'a> {
    vault_dir: &'a Path,
    control_dir: &'a Path,
    work: &'a Path,
    ran: BTreeSet<String>,
    problems: Vec<String>,
}

impl Walk<'_> {
    /// Runs `pgcmk ARGS -o json`; `words` is how many of ARGS name the command.
    fn run(&mut self, words: usize, args: &[&str], expect_success: bool) -> Value {
        let command = args[..words].join(" ");
        self.ran.insert(command.clone());
        let out = Command::new(pgcmk())
            .args(args)
            .args(["-o", "json"])
            .env("PGCMK_VAULT_SERVICE_DIR", self.vault_dir)
            .env("PGCMK_CONTROL_DIR", self.control_dir)
            .env_remove("PGCMK_CREDENTIALS")
            .env_remove("PGCMK_ENDPOINT")
            .env_remove("PGCMK_CONTROL_CREDENTIALS")
            .env_remove("PGCMK_CONTROL_CA_CERT")
            .current_dir(self.work)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() != expect_success {
            self.problems.push(format!(
                "`pgcmk {}` exited {:?}: {stderr}",
                args.join(" "),
                out.status.code()
            ));
            return Value::Null;
        }
        if !expect_success {
            if !out.stdout.is_empty() {
                self.problems
                    .push(format!("`pgcmk {command}` failed but printed on stdout"));
            }
            let error: Value = serde_json::from_slice(&out.stderr).unwrap_or_default();
            let e = &error["error"];
            if !(e["code"].is_string() && e["message"].is_string() && e["exit_code"].is_u64()) {
                self.problems.push(format!(
                    "`pgcmk {command}`: error is not the JSON shape: {stderr}"
                ));
            }
            return error;
        }
        match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(v) => {
                shape_problems(&v, &format!("`pgcmk {command}`"), &mut self.problems);
                v
            }
            Err(e) => {
                self.problems
                    .push(format!("`pgcmk {command}` printed no JSON ({e})"));
                Value::Null
            }
        }
    }

    fn ok(&mut self, words: usize, args: &[&str]) -> Value {
        self.run(words, args, true)
    }

    fn fails(&mut self, words: usize, args: &[&str]) -> Value {
        self.run(words, args, false)
    }
}

/// Every leaf command of the CLI, as its man pages name them (`pgcmk-key-rotate.1`
/// is `key rotate`; a page whose name prefixes another's is a family, not a leaf).
fn every_command() -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(pgcmk())
        .arg("man-pages")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.trim_end_matches(".1").to_string()
        })
        .collect();
    pages
        .iter()
        .filter(|p| !pages.iter().any(|q| q.starts_with(&format!("{p}-"))))
        .filter_map(|p| p.strip_prefix("pgcmk-"))
        .map(|p| p.replace('-', " "))
        .collect()
}

/// `key show rotation policy` back to `key show-rotation-policy`: command names with
/// dashes cannot be told apart from the page name's separators, so both sides are
/// compared with dashes as spaces.
fn spaced(commands: &BTreeSet<String>) -> BTreeSet<String> {
    commands.iter().map(|c| c.replace('-', " ")).collect()
}

#[test]
fn every_command_answers_json_in_the_common_shapes() {
    let root = scratch();
    let vault = Vault::start(root.path());
    let cp = ControlPlane::start(root.path(), &vault, 60, 300);
    let work = root.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let mut w = Walk {
        vault_dir: &vault.dir,
        control_dir: &cp.state_dir,
        work: &work,
        ran: BTreeSet::new(),
        problems: Vec::new(),
    };

    w.ok(1, &["version"]);

    // The security officer's commands.
    w.ok(
        2,
        &[
            "identity",
            "create",
            "shape-mi",
            "--credential-file",
            "shape.credential",
        ],
    );
    w.ok(2, &["identity", "list"]);
    w.ok(2, &["identity", "show", "shape-mi"]);
    w.ok(
        2,
        &[
            "keyvault",
            "create",
            "shape-kv",
            "-l",
            "local",
            "--purge-protection",
        ],
    );
    w.ok(2, &["keyvault", "show", "shape-kv"]);
    w.ok(2, &["keyvault", "list"]);
    w.ok(
        2,
        &["keyvault", "update", "shape-kv", "--location", "local"],
    );
    w.ok(
        2,
        &[
            "keyvault",
            "set-policy",
            "shape-kv",
            "--identity",
            "shape-mi",
            "--key-permissions",
            "get",
            "wrapKey",
            "unwrapKey",
        ],
    );
    let key = ["--vault", "shape-kv"];
    let created = w.ok(2, &["key", "create", "k", key[0], key[1], "--size", "2048"]);
    assert!(created["key_url"].is_string(), "{created}");
    w.ok(2, &["key", "show", "k", key[0], key[1]]);
    w.ok(2, &["key", "list", key[0], key[1]]);
    w.ok(2, &["key", "rotate", "k", key[0], key[1]]);
    w.ok(2, &["key", "disable", "k", key[0], key[1]]);
    w.ok(2, &["key", "enable", "k", key[0], key[1]]);
    w.ok(
        2,
        &[
            "key",
            "set-rotation-policy",
            "k",
            key[0],
            key[1],
            "--rotate-after",
            "P90D",
        ],
    );
    w.ok(2, &["key", "show-rotation-policy", "k", key[0], key[1]]);
    w.ok(2, &["key", "delete", "k", key[0], key[1]]);
    w.ok(2, &["key", "recover", "k", key[0], key[1]]);
    w.ok(2, &["key", "delete", "k", key[0], key[1]]);
    // Purge protection refuses the purge: an error in the JSON shape.
    w.fails(2, &["key", "purge", "k", key[0], key[1], "--yes"]);
    w.ok(2, &["audit", "list", "--limit", "20"]);
    w.ok(2, &["audit", "verify"]);
    w.ok(
        2,
        &[
            "keyvault",
            "delete-policy",
            "shape-kv",
            "--identity",
            "shape-mi",
        ],
    );
    w.ok(2, &["identity", "delete", "shape-mi", "--yes"]);

    // The DBA's commands.
    w.ok(2, &["server", "create", "shape", "-l", "local"]);
    w.ok(2, &["server", "show", "shape"]);
    let list = w.ok(2, &["server", "list"]);
    assert!(list.is_array(), "{list}");
    w.ok(2, &["server", "connection-string", "shape"]);
    w.ok(2, &["server", "revalidate", "shape"]);
    // A single-node server has no standby to fail over to: an error in the JSON shape
    // (a highly available one's failover: tests/high_availability.rs).
    w.fails(2, &["server", "failover", "shape", "--planned"]);
    w.ok(2, &["server", "logs", "shape", "--lines", "5"]);
    w.ok(
        2,
        &[
            "server",
            "reset-password",
            "shape",
            "--password-file",
            "shape.password",
        ],
    );
    // A service-managed server cannot move to a customer key.
    w.fails(
        2,
        &[
            "server",
            "update",
            "shape",
            "-k",
            "https://127.0.0.1:1/keys/k",
        ],
    );
    // A server without a geo-redundant copy has none to remove.
    w.fails(
        2,
        &["server", "update", "shape", "--no-geo-backup", "--yes"],
    );
    // A single server has no high availability to disable.
    w.fails(
        2,
        &[
            "server",
            "update",
            "shape",
            "--high-availability",
            "disabled",
        ],
    );
    // Backups of the server (its first full backup was taken at creation).
    let made = w.ok(2, &["backup", "create", "shape", "--type", "incr"]);
    let label = made["label"]
        .as_str()
        .unwrap_or_else(|| panic!("no label: {made}; {:?}", w.problems))
        .to_string();
    let listed = w.ok(2, &["backup", "list", "shape"]);
    assert!(
        listed["backups"]
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["label"] == label.as_str())),
        "backup {label} is not listed: {listed}"
    );
    w.ok(2, &["backup", "show", "shape", &label]);
    w.ok(2, &["backup", "keys", "shape"]);
    let running = w.ok(2, &["backup", "progress", "shape"]);
    assert!(running.is_array(), "not a bare array: {running}");
    w.ok(2, &["backup", "verify", "shape"]);
    w.ok(
        2,
        &[
            "server",
            "restore",
            "shape-copy",
            "--source",
            "shape",
            "--point-in-time",
            "latest",
        ],
    );
    w.ok(2, &["server", "delete", "shape-copy", "--yes"]);
    // A read replica of it, listed, and promoted to a server of its own.
    w.ok(
        3,
        &[
            "server", "replica", "create", "--source", "shape", "--name", "shape-ro",
        ],
    );
    let replicas = w.ok(3, &["server", "replica", "list", "--source", "shape"]);
    assert!(replicas.is_array(), "{replicas}");
    w.ok(3, &["server", "replica", "promote", "shape-ro"]);
    w.ok(2, &["server", "delete", "shape-ro", "--yes"]);
    w.ok(2, &["server", "stop", "shape"]);
    w.ok(2, &["server", "fsck", "shape"]);
    w.ok(2, &["server", "start", "shape"]);
    w.ok(2, &["server", "delete", "shape", "--yes"]);

    // Hosts (docs/hosts.md).
    let host = w.ok(2, &["host", "add", "shape-host", "--address", "127.0.0.2"]);
    assert!(host["credential"].is_string(), "{host}");
    let hosts = w.ok(2, &["host", "list"]);
    assert!(hosts.is_array(), "{hosts}");
    w.ok(2, &["host", "remove", "shape-host", "--yes"]);

    // Standalone cryptfs.
    w.ok(2, &["fs", "keygen", "--out", "fs.key"]);
    w.ok(
        2,
        &[
            "fs",
            "init",
            "--cipher-dir",
            "cipher",
            "--key-file",
            "fs.key",
        ],
    );
    w.ok(
        2,
        &[
            "fs",
            "fsck",
            "--cipher-dir",
            "cipher",
            "--key-file",
            "fs.key",
        ],
    );
    w.fails(2, &["fs", "unmount", "not-mounted"]);

    assert!(w.problems.is_empty(), "{}", w.problems.join("\n"));
    let walked: BTreeSet<String> = w
        .ran
        .iter()
        .cloned()
        .chain(NOT_JSON.iter().map(|c| c.to_string()))
        .collect();
    let every = every_command();
    assert!(every.len() > 40, "the CLI's commands: {every:?}");
    let missing: Vec<_> = spaced(&every)
        .difference(&spaced(&walked))
        .cloned()
        .collect();
    assert!(missing.is_empty(), "commands not walked: {missing:?}");
}

#[test]
fn the_shape_check_finds_wrapped_lists_epoch_times_and_nested_states() {
    let mut problems = Vec::new();
    shape_problems(
        &serde_json::json!({
            "value": [{ "attributes": { "created": 1_700_000_000 } }],
            "server": { "state": { "state": "Ready" } },
            "ok": { "created": "2026-12-07T00:00:00Z", "exp": null },
        }),
        "x",
        &mut problems,
    );
    assert_eq!(problems.len(), 3, "{problems:?}");
}
