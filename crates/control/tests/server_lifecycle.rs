//! End to end with real parts: `pgcmk vault serve`, `pgcmk serve`, node agents,
//! cryptfs over /dev/fuse and PostgreSQL 15. A customer-managed server is created,
//! holds data that never reaches the disk in the clear, goes Inaccessible when the
//! customer revokes access or disables the key and comes back when they undo it,
//! follows a key rotation, and survives agent and control plane restarts.
//!
//! Each test has its own server, key, identity and vault. They share one stack,
//! except those that restart the control
//! plane or read every byte of its disk, which have their own.

mod support;

use std::time::Duration;

use pgcmk_testkit::shared::{Held, Shared};
use pgcmk_testkit::wait::wait_for;
use support::*;

/// Key check interval for the tests (seconds).
const INTERVAL: u64 = 2;
/// Grace period for transient key failures (seconds).
const GRACE: u64 = 30;
/// The rows each server's table `t` starts with.
const ROWS: &str = "20000";

fn shared_stack() -> Held<Stack> {
    static STACK: Shared<Stack> = Shared::new();
    STACK.get(|| Stack::start(INTERVAL, GRACE, None))
}

/// A customer-managed server `name` following its key `NAME-key` (versionless),
/// with a table `t` of [`ROWS`] rows.
fn server_with_rows(stack: &Stack, name: &str) -> (CustomerKey, Created) {
    let key = stack.vault.customer_key(name);
    let server = Created::from(&stack.cp.create_with(name, &key, &versionless(&key.kid)));
    server
        .sql(&format!(
            "CREATE TABLE t AS SELECT g AS id, 'row ' || g AS v FROM generate_series(1, {ROWS}) g"
        ))
        .unwrap();
    (key, server)
}

/// Asserts that the server still serves all of its rows.
fn assert_rows_intact(server: &Created) {
    assert_eq!(
        server.sql("SELECT count(*) FROM t").unwrap(),
        ROWS,
        "{} lost rows",
        server.name
    );
}

/// Waits until, after `what`, connections are refused within an interval (plus the
/// check) and the server is Inaccessible; how long the refusal took.
fn wait_locked(cp: &ControlPlane, server: &Created, what: &str) -> Duration {
    let took = wait_for(
        &format!("connections refused after {what}"),
        Duration::from_secs(INTERVAL + 5),
        || server.sql("SELECT 1").is_err(),
    );
    wait_for(
        &format!("Inaccessible after {what}"),
        Duration::from_secs(5),
        || cp.state(&server.name).0 == "Inaccessible",
    );
    took
}

/// Waits until, after `what`, the server is Ready again without an operator, and
/// asserts its rows are intact.
fn wait_unlocked(cp: &ControlPlane, server: &Created, what: &str) {
    wait_for(
        &format!("Ready after {what}"),
        Duration::from_secs(INTERVAL + 30),
        || cp.state(&server.name).0 == "Ready",
    );
    assert_rows_intact(server);
}

#[test]
fn a_server_created_with_a_customer_key_is_ready_with_its_dek_wrapped_by_that_key() {
    let stack = shared_stack();
    let (vault, cp) = (&stack.vault, &stack.cp);
    // The security officer: identity, vault with soft delete and purge protection,
    // access policy, RSA key.
    let mi = vault.identity("created-mi");
    vault.keyvault("created-kv", "westeurope", true);
    vault.grant("created-kv", &mi, &["get", "wrapKey", "unwrapKey"]);
    let kid = vault.key("created-kv", "created-key", 3072);
    // The DBA: a server with that key.
    let created = cp
        .create_cmk("created", &mi, &mi.name, &versionless(&kid))
        .unwrap();
    assert_eq!(created["server"]["state"], "Ready");
    assert_eq!(created["server"]["wrapped_dek"]["kek"], kid);
    cp.server(&["delete", "created", "--yes"]);
}

#[test]
fn list_show_and_connection_string_tell_the_dba_about_the_server() {
    let stack = shared_stack();
    let cp = &stack.cp;
    let (_, server) = server_with_rows(&stack, "described");
    let list = cp.server_text(&["list"]);
    assert!(
        list.lines()
            .any(|l| l.contains("described") && l.contains("Ready")),
        "{list}"
    );
    let show = cp.server_text(&["show", "described"]);
    for expected in [
        "state:      Ready",
        "customer-managed: key",
        "events:",
        "server created",
    ] {
        assert!(show.contains(expected), "'{expected}' not in:\n{show}");
    }
    let uri = cp.server_text(&["connection-string", "described"]);
    assert_eq!(
        uri.trim(),
        format!(
            "postgresql://postgres@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
            server.port,
            cp.state_dir.join("servers-ca.pem").display()
        )
    );
    cp.server(&["delete", "described", "--yes"]);
}

#[test]
fn rows_sorts_spilled_to_disk_and_logged_statements_never_reach_the_disk_in_the_clear() {
    // Its own stack: every byte under the control plane's directory is read.
    let _shared = shared_stack(); // kept up for the tests after this one
    let stack = Stack::start(INTERVAL, GRACE, None);
    let key = stack.vault.customer_key("secret");
    let server = Created::from(&stack.cp.create_with("secret", &key, &versionless(&key.kid)));
    // Data in, data out; a sort larger than work_mem spills to pgsql_tmp, and a
    // failing statement carrying the marker lands in the server log.
    let marker = "MARKER-7f3a9c-plaintext-must-not-hit-disk";
    server.sql(&format!(
        "CREATE TABLE t(id int, v text); INSERT INTO t SELECT g, '{marker}' || g FROM generate_series(1, 20000) g"
    )).unwrap();
    let sorted = server.sql(&format!(
        "SET work_mem = '64kB'; SET log_temp_files = 0; SELECT count(*) FROM (SELECT v FROM t ORDER BY v DESC) s WHERE v LIKE '{marker}%'"
    )).unwrap();
    assert_eq!(sorted, "20000");
    server.sql(&format!("SELECT '{marker}'::int")).unwrap_err();
    server.sql("CHECKPOINT").unwrap();
    assert_eq!(
        server.sql("SELECT v FROM t WHERE id = 7").unwrap(),
        format!("{marker}7")
    );

    // No byte on disk holds the marker: not the ciphertext, not the state store,
    // not the agent's files. (The live mount point is the plaintext view.)
    let leaks = files_containing(
        &stack.cp.state_dir,
        marker.as_bytes(),
        &server.dir.join("mnt"),
    );
    assert!(leaks.is_empty(), "plaintext on disk: {leaks:?}");
    assert!(server.dir.join("cipher").read_dir().unwrap().count() > 0);
}

#[test]
fn a_revoked_identity_locks_the_server_within_an_interval_and_a_new_grant_unlocks_it() {
    let stack = shared_stack();
    let (vault, cp) = (&stack.vault, &stack.cp);
    let (key, server) = server_with_rows(&stack, "revoked");

    // Revoke the identity's access: connections refused within interval + 5 s.
    vault.revoke(&key.vault, &key.identity);
    let took = wait_locked(cp, &server, "revoke");
    eprintln!("revoke -> refused in {took:?}");
    let (_, reason) = cp.state("revoked");
    assert!(!reason.is_empty(), "Inaccessible needs a reason");
    // PostgreSQL stops and the mount goes: the agent reports Inaccessible as it
    // starts shutting PostgreSQL down (so no probe meets a server half-stopped), and
    // unmounts once it has stopped.
    wait_for("the plaintext view to go", Duration::from_secs(30), || {
        !server.dir.join("mnt/pgdata/PG_VERSION").exists()
    });

    // Restore: Ready again without an operator, data intact.
    vault.grant(&key.vault, &key.identity, &["get", "wrapKey", "unwrapKey"]);
    wait_unlocked(cp, &server, "re-grant");
    cp.server(&["delete", "revoked", "--yes"]);
}

#[test]
fn a_disabled_key_locks_the_server_and_enabling_it_unlocks_it() {
    let stack = shared_stack();
    let (vault, cp) = (&stack.vault, &stack.cp);
    let (key, server) = server_with_rows(&stack, "disabled");
    vault.set_enabled(&key.vault_url, &key.key, None, false);
    wait_locked(cp, &server, "disable");
    vault.set_enabled(&key.vault_url, &key.key, None, true);
    wait_unlocked(cp, &server, "enable");
    cp.server(&["delete", "disabled", "--yes"]);
}

#[test]
fn a_rotation_rewraps_the_dek_within_an_interval_and_the_old_version_can_then_go() {
    let stack = shared_stack();
    let (vault, cp) = (&stack.vault, &stack.cp);
    let (key, server) = server_with_rows(&stack, "rotated");
    // Rotate: the DEK is re-wrapped to the new version within one interval (plus
    // the check itself), then the old version can be disabled without effect.
    let rotated = vault.rotate(&key);
    assert_ne!(rotated, key.kid);
    let took = wait_for(
        "re-wrap to the new version",
        Duration::from_secs(INTERVAL + 3),
        || cp.wrapped_by("rotated") == rotated,
    );
    eprintln!("rotate -> re-wrapped in {took:?}");
    assert!(cp.has_event("rotated", "dek re-wrapped"));
    vault.set_version_enabled(&key, &key.kid, false);
    cp.server(&["stop", "rotated"]);
    server.sql("SELECT 1").unwrap_err();
    let started = cp.server(&["start", "rotated"]);
    assert_eq!(started["state"], "Ready", "{started}");
    assert_rows_intact(&server);
    cp.server(&["delete", "rotated", "--yes"]);
}

#[test]
fn a_killed_postmaster_is_restarted_by_the_agent_with_the_committed_data() {
    let stack = shared_stack();
    let (_, server) = server_with_rows(&stack, "postmaster-killed");
    server
        .sql("INSERT INTO t VALUES (-2, 'before-postgres-kill')")
        .unwrap();
    let postmaster = agent_status(&server.dir)["postgres_pid"]
        .as_u64()
        .expect("postgres pid in status.json");
    kill(u32::try_from(postmaster).unwrap(), "-9");
    wait_for(
        "postgres back after kill -9",
        Duration::from_secs(60),
        || {
            server
                .sql("SELECT v FROM t WHERE id = -2")
                .is_ok_and(|v| v == "before-postgres-kill")
        },
    );
    stack.cp.server(&["delete", "postmaster-killed", "--yes"]);
}

#[test]
fn a_killed_agent_is_restarted_by_the_control_plane_with_the_committed_data() {
    let stack = shared_stack();
    let (_, server) = server_with_rows(&stack, "agent-killed");
    server
        .sql("INSERT INTO t VALUES (-1, 'after-restart')")
        .unwrap();
    kill(agent_pid(&server.dir).expect("a running agent"), "-9");
    wait_for("Ready after agent kill -9", Duration::from_secs(90), || {
        server
            .sql("SELECT v FROM t WHERE id = -1")
            .is_ok_and(|v| v == "after-restart")
    });
    stack.cp.server(&["delete", "agent-killed", "--yes"]);
}

#[test]
fn a_restarted_control_plane_reattaches_to_the_running_agent() {
    // Its own stack: the control plane goes away for a moment.
    let _shared = shared_stack(); // kept up for the tests after this one
    let mut stack = Stack::start(INTERVAL, GRACE, None);
    let (_, server) = server_with_rows(&stack, "reattached");
    stack.cp.restart();
    assert_eq!(stack.cp.state("reattached").0, "Ready");
    assert!(stack.cp.has_event("reattached", "agent re-attached"));
    assert_rows_intact(&server);
}

#[test]
fn a_control_plane_restarted_without_its_agent_starts_the_server_from_its_wrapped_dek() {
    // A host reboot: the agent is gone too; the server is started again from its
    // wrapped DEK, unwrapping through the vault. Its own stack, as above.
    let _shared = shared_stack(); // kept up for the tests after this one
    let mut stack = Stack::start(INTERVAL, GRACE, None);
    let (_, server) = server_with_rows(&stack, "rebooted");
    server
        .sql("INSERT INTO t VALUES (-1, 'after-restart')")
        .unwrap();
    stack.cp.restart_after(|| {
        kill(agent_pid(&server.dir).expect("a running agent"), "-TERM");
        wait_for("the agent to stop", Duration::from_secs(60), || {
            !server.dir.join("agent.pid").exists()
        });
        server.sql("SELECT 1").unwrap_err();
    });
    assert!(stack.cp.has_event("rebooted", "agent started"));
    wait_for("Ready after the reboot", Duration::from_secs(60), || {
        server
            .sql("SELECT v FROM t WHERE id = -1")
            .is_ok_and(|v| v == "after-restart")
    });
}

#[test]
fn moving_to_another_key_rewraps_the_dek_with_it_and_keeps_the_data() {
    let stack = shared_stack();
    let (vault, cp) = (&stack.vault, &stack.cp);
    let (key, server) = server_with_rows(&stack, "moved");
    let second = vault.key(&key.vault, "moved-key-2", 4096);
    let updated = cp.server(&["update", "moved", "--key", &versionless(&second)]);
    assert_eq!(updated["state"], "Ready", "{updated}");
    assert_eq!(updated["wrapped_dek"]["kek"], second.as_str());
    assert_rows_intact(&server);
    assert!(cp.has_event("moved", "key changed"));
    cp.server(&["delete", "moved", "--yes"]);
}

#[test]
fn delete_removes_the_directory_and_the_row_and_the_server_stops_serving() {
    let stack = shared_stack();
    let cp = &stack.cp;
    let (_, server) = server_with_rows(&stack, "deleted");
    cp.server(&["delete", "deleted", "--yes"]);
    assert!(!server.dir.exists(), "the server's directory is left");
    let err = cp.try_server(&["show", "deleted"]).unwrap_err();
    assert!(err.contains("not found"), "{err}");
    server.sql("SELECT 1").unwrap_err();
}

#[test]
fn reset_password_sets_a_new_password_that_replaces_the_old_one() {
    let stack = shared_stack();
    let cp = &stack.cp;
    let server = Created::from(&cp.server(&["create", "--name", "reset", "--location", "local"]));
    let connects = |password: &str| psql(server.port, password, "SELECT 1").is_ok();
    assert!(connects(&server.password));

    let shown = cp.server(&["reset-password", "reset"]);
    let first = shown["password"].as_str().expect("a password").to_string();
    assert_eq!(shown["role"], "postgres", "{shown}");
    assert!(!connects(&server.password), "the old password still works");
    assert!(connects(&first), "the new password is refused");
    assert!(cp.has_event("reset", "password reset"));

    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("pw");
    let written = cp.server(&[
        "reset-password",
        "reset",
        "--password-file",
        file.to_str().unwrap(),
    ]);
    assert!(written.get("password").is_none(), "{written}");
    assert_eq!(written["password_file"], file.to_str().unwrap());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let second = std::fs::read_to_string(&file).unwrap();
    assert!(!connects(&first) && connects(&second));
    // An existing file is not overwritten, and the password stays as it was.
    let out = cp.server_output(&[
        "reset-password",
        "reset",
        "--password-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(connects(&second));

    for password in [&server.password, &first, &second] {
        assert!(
            !cp.log().contains(password.as_str()),
            "a password in the log"
        );
        let agent_log = std::fs::read_to_string(server.dir.join("agent.log")).unwrap();
        assert!(
            !agent_log.contains(password.as_str()),
            "a password in agent.log"
        );
    }

    cp.server(&["stop", "reset"]);
    let out = cp.server_output(&["reset-password", "reset"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("must be Ready"), "{stderr}");
    cp.server(&["delete", "reset", "--yes"]);
}
