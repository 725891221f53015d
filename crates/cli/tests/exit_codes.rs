//! Exit codes of failures that need no running service (docs/operations.md, "Exit
//! codes"): a wrong command line or input file is 2, damage found by a check is 8.
//! The codes of the control plane's answers are tested against a real one in
//! crates/control/tests/cli_exit_codes.rs.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use pgcmk_testkit::binary::pgcmk;

fn run(args: &[&str]) -> Output {
    Command::new(pgcmk())
        .args(args)
        .env_remove("PGCMK_ENDPOINT")
        .env_remove("PGCMK_CONTROL_DIR")
        .env_remove("PGCMK_CONTROL_CREDENTIALS")
        .env_remove("PGCMK_CONTROL_CA_CERT")
        .env_remove("PGCMK_VAULT_SERVICE_DIR")
        .env_remove("PGCMK_CREDENTIALS")
        .stdin(Stdio::null())
        .output()
        .expect("run pgcmk")
}

fn assert_exit(args: &[&str], code: i32, says: &str) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "`pgcmk {}`: {stderr}",
        args.join(" ")
    );
    assert!(stderr.contains(says), "'{says}' not in: {stderr}");
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

#[test]
fn an_unknown_command_is_a_usage_error() {
    assert_exit(&["no-such-command"], 2, "unrecognized subcommand");
}

#[test]
fn a_plain_http_endpoint_is_a_usage_error() {
    assert_exit(
        &["server", "list", "--endpoint", "http://127.0.0.1:7480"],
        2,
        "is not an https:// URL",
    );
}

#[test]
fn delete_without_a_terminal_needs_yes_and_asks_nothing_of_the_control_plane() {
    // No control plane runs at the endpoint: the refusal comes first.
    assert_exit(
        &[
            "server",
            "delete",
            "orders",
            "--endpoint",
            "https://127.0.0.1:9",
        ],
        2,
        "add --yes to delete it",
    );
    // With --yes it goes on, to the (absent) control plane.
    let out = run(&[
        "server",
        "delete",
        "orders",
        "--yes",
        "--endpoint",
        "https://127.0.0.1:9",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("--yes"), "{stderr}");
}

#[test]
fn with_output_json_an_error_is_json_on_stderr() {
    let out = run(&["keyvault", "list", "--output", "json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let error: serde_json::Value = serde_json::from_slice(&out.stderr)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(error["error"]["code"], "usage", "{error}");
    assert_eq!(error["error"]["exit_code"], 2, "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("no vault service given"), "{message}");
}

#[test]
fn a_vault_command_without_a_service_is_a_usage_error() {
    assert_exit(&["keyvault", "list"], 2, "no vault service given");
}

#[test]
fn a_missing_key_file_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no.key");
    assert_exit(
        &[
            "fs",
            "fsck",
            "--cipher-dir",
            path(dir.path()),
            "--key-file",
            path(&missing),
        ],
        2,
        "no.key",
    );
}

#[test]
fn a_volume_check_that_finds_damage_exits_8() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("fs.key");
    let cipher = dir.path().join("cipher");
    for args in [
        vec!["fs", "keygen", "--out", path(&key)],
        vec![
            "fs",
            "init",
            "--cipher-dir",
            path(&cipher),
            "--key-file",
            path(&key),
        ],
    ] {
        let out = run(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A file whose header is not a cryptfs header: what an attacker's or a broken
    // disk's bytes look like.
    std::fs::write(cipher.join("16384"), vec![0x5a; 3 * 4096]).unwrap();
    assert_exit(
        &[
            "fs",
            "fsck",
            "--cipher-dir",
            path(&cipher),
            "--key-file",
            path(&key),
        ],
        8,
        "bad block(s)",
    );
}

#[test]
fn a_usage_line_does_not_list_settings_taken_from_the_environment() {
    let out = Command::new(pgcmk())
        .args(["identity", "create", "x"])
        .env("PGCMK_CREDENTIALS", "/tmp/officer.credential")
        .env("PGCMK_VAULT_SERVICE_DIR", "/tmp")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--credential-file <CREDENTIAL_FILE>"),
        "{stderr}"
    );
    assert!(!stderr.contains("--credentials"), "{stderr}");
    assert!(!stderr.contains("--service-dir"), "{stderr}");
}

#[test]
fn purging_a_key_or_deleting_an_identity_without_a_terminal_needs_yes() {
    // No vault service is given: the refusal comes before any is looked for.
    assert_exit(
        &["key", "purge", "orders-key", "--vault", "orders-kv"],
        2,
        "add --yes to purge it",
    );
    assert_exit(
        &["identity", "delete", "orders-mi"],
        2,
        "add --yes to delete it",
    );
    // With --yes they go on, to the missing service.
    assert_exit(
        &[
            "key",
            "purge",
            "orders-key",
            "--vault",
            "orders-kv",
            "--yes",
        ],
        2,
        "no vault service given",
    );
}
