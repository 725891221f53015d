//! End to end with real parts: `pgcmk vault serve`, `pgcmk serve`, node agents,
//! cryptfs over /dev/fuse and PostgreSQL 15. A customer-managed server is created,
//! holds data that never reaches the disk in the clear, goes Inaccessible when the
//! customer revokes access or disables the key and comes back when they undo it,
//! follows a key rotation, and survives agent and control plane restarts.

mod support;

use std::time::Duration;

use pgcmk_testkit::wait::wait_for;
use support::*;

/// Key check interval for the test (seconds).
const INTERVAL: u64 = 2;

#[test]
fn customer_managed_server_lifecycle() {
    let root = scratch();
    let vault = Vault::start(root.path());
    let cp = ControlPlane::start(root.path(), &vault, INTERVAL, 30);
    let mut cp = cp;

    // The security officer: identity, vault with soft delete and purge protection,
    // access policy, RSA key.
    let mi = vault.identity("orders-mi");
    let kv_url = vault.keyvault("orders-kv", "westeurope", true);
    vault.grant("orders-kv", &mi, &["get", "wrapKey", "unwrapKey"]);
    let kid = vault.key("orders-kv", "orders-key", 3072);
    let key_url = versionless(&kid);

    // The DBA: a server with that key.
    let created = cp.create_cmk("orders", &mi, &mi.name, &key_url).unwrap();
    let password = created["password"].as_str().unwrap().to_string();
    let port = created["server"]["port"].as_u64().unwrap();
    let server_dir = std::path::PathBuf::from(created["server"]["dir"].as_str().unwrap());
    assert_eq!(created["server"]["state"]["state"], "Ready");
    assert_eq!(created["server"]["wrapped_dek"]["kek"], kid);

    // What the DBA reads.
    let list = cp.server_text(&["list"]);
    assert!(list.contains("orders") && list.contains("Ready"), "{list}");
    let show = cp.server_text(&["show", "orders"]);
    for expected in [
        "state:      Ready",
        "customer-managed: key",
        "events:",
        "server created",
    ] {
        assert!(show.contains(expected), "'{expected}' not in:\n{show}");
    }
    let uri = cp.server_text(&["connection-string", "orders"]);
    assert_eq!(
        uri.trim(),
        format!("postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable")
    );

    // Data in, data out; a sort larger than work_mem spills to pgsql_tmp, and a
    // failing statement carrying the marker lands in the server log.
    let marker = "MARKER-7f3a9c-plaintext-must-not-hit-disk";
    psql(port, &password, &format!(
        "CREATE TABLE t(id int, v text); INSERT INTO t SELECT g, '{marker}' || g FROM generate_series(1, 20000) g"
    )).unwrap();
    let sorted = psql(port, &password, &format!(
        "SET work_mem = '64kB'; SET log_temp_files = 0; SELECT count(*) FROM (SELECT v FROM t ORDER BY v DESC) s WHERE v LIKE '{marker}%'"
    )).unwrap();
    assert_eq!(sorted, "20000");
    psql(port, &password, &format!("SELECT '{marker}'::int")).unwrap_err();
    psql(port, &password, "CHECKPOINT").unwrap();
    assert_eq!(
        psql(port, &password, "SELECT v FROM t WHERE id = 7").unwrap(),
        format!("{marker}7")
    );

    // No byte on disk holds the marker: not the ciphertext, not the state store,
    // not the agent's files. (The live mount point is the plaintext view.)
    let leaks = files_containing(&cp.state_dir, marker.as_bytes(), &server_dir.join("mnt"));
    assert!(leaks.is_empty(), "plaintext on disk: {leaks:?}");
    assert!(server_dir.join("cipher").read_dir().unwrap().count() > 0);

    // Revoke the identity's access: connections refused within interval + 5 s.
    vault.revoke("orders-kv", &mi);
    let took = wait_for(
        "connections refused after revoke",
        Duration::from_secs(INTERVAL + 5),
        || psql(port, &password, "SELECT 1").is_err(),
    );
    eprintln!("revoke -> refused in {took:?}");
    wait_for("Inaccessible", Duration::from_secs(5), || {
        cp.state("orders").0 == "Inaccessible"
    });
    let (_, reason) = cp.state("orders");
    assert!(!reason.is_empty(), "Inaccessible needs a reason");
    // PostgreSQL stopped and the mount is gone.
    assert!(!server_dir.join("mnt/pgdata/PG_VERSION").exists());

    // Restore: Ready again without an operator, data intact.
    vault.grant("orders-kv", &mi, &["get", "wrapKey", "unwrapKey"]);
    wait_for(
        "Ready after re-grant",
        Duration::from_secs(INTERVAL + 30),
        || cp.state("orders").0 == "Ready",
    );
    assert_eq!(
        psql(port, &password, "SELECT count(*) FROM t").unwrap(),
        "20000"
    );

    // Disable the key -> Inaccessible; enable -> Ready.
    vault.set_enabled(&kv_url, "orders-key", None, false);
    wait_for(
        "Inaccessible after disable",
        Duration::from_secs(INTERVAL + 5),
        || psql(port, &password, "SELECT 1").is_err(),
    );
    wait_for("Inaccessible state", Duration::from_secs(5), || {
        cp.state("orders").0 == "Inaccessible"
    });
    vault.set_enabled(&kv_url, "orders-key", None, true);
    wait_for(
        "Ready after enable",
        Duration::from_secs(INTERVAL + 30),
        || cp.state("orders").0 == "Ready",
    );

    // Rotate: the DEK is re-wrapped to the new version within one interval (plus
    // the check itself), then the old version can be disabled without effect.
    let rotated = kid_of(&vault.cli(&[
        "key",
        "rotate",
        "--vault",
        "orders-kv",
        "--name",
        "orders-key",
    ]));
    assert_ne!(rotated, kid);
    let took = wait_for(
        "re-wrap to the new version",
        Duration::from_secs(INTERVAL + 3),
        || cp.server(&["show", "orders"])["server"]["wrapped_dek"]["kek"] == rotated.as_str(),
    );
    eprintln!("rotate -> re-wrapped in {took:?}");
    assert!(cp.has_event("orders", "dek re-wrapped"));
    let old_version = kid.rsplit('/').next().unwrap();
    vault.set_enabled(&kv_url, "orders-key", Some(old_version), false);
    cp.server(&["stop", "orders"]);
    psql(port, &password, "SELECT 1").unwrap_err();
    let started = cp.server(&["start", "orders"]);
    assert_eq!(started["state"]["state"], "Ready", "{started}");
    assert_eq!(
        psql(port, &password, "SELECT count(*) FROM t").unwrap(),
        "20000"
    );

    // kill -9 of the postmaster: the agent restarts it; committed data is there.
    psql(
        port,
        &password,
        "INSERT INTO t VALUES (-2, 'before-postgres-kill')",
    )
    .unwrap();
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(server_dir.join("status.json")).unwrap()).unwrap();
    let postmaster = status["postgres_pid"]
        .as_u64()
        .expect("postgres pid in status.json");
    std::process::Command::new("kill")
        .args(["-9", &postmaster.to_string()])
        .status()
        .unwrap();
    wait_for(
        "postgres back after kill -9",
        Duration::from_secs(60),
        || {
            psql(port, &password, "SELECT v FROM t WHERE id = -2")
                .is_ok_and(|v| v == "before-postgres-kill")
        },
    );

    // kill -9 of the agent: the control plane restarts it; committed data is there.
    psql(
        port,
        &password,
        "INSERT INTO t VALUES (-1, 'after-restart')",
    )
    .unwrap();
    let agent_pid = std::fs::read_to_string(server_dir.join("agent.pid")).unwrap();
    std::process::Command::new("kill")
        .args(["-9", agent_pid.trim()])
        .status()
        .unwrap();
    wait_for("Ready after agent kill -9", Duration::from_secs(90), || {
        psql(port, &password, "SELECT v FROM t WHERE id = -1").is_ok_and(|v| v == "after-restart")
    });

    // A control plane restart re-attaches to the running agent.
    cp.restart();
    assert_eq!(cp.state("orders").0, "Ready");
    assert!(cp.has_event("orders", "agent re-attached"));

    // A control plane restart while the agent is gone too (a host reboot) starts
    // the server again from its wrapped DEK, unwrapping through the vault.
    cp.restart_after(|| {
        let pid = std::fs::read_to_string(server_dir.join("agent.pid")).unwrap();
        std::process::Command::new("kill")
            .args(["-TERM", pid.trim()])
            .status()
            .unwrap();
        wait_for("the agent to stop", Duration::from_secs(60), || {
            !server_dir.join("agent.pid").exists()
        });
        psql(port, &password, "SELECT 1").unwrap_err();
    });
    assert!(cp.has_event("orders", "agent started"));
    wait_for("Ready after the reboot", Duration::from_secs(60), || {
        psql(port, &password, "SELECT v FROM t WHERE id = -1").is_ok_and(|v| v == "after-restart")
    });

    // Moving to another key re-wraps the DEK with it; the data stays.
    let second = vault.key("orders-kv", "orders-key-2", 4096);
    let updated = cp.server(&["update", "orders", "--key", &versionless(&second)]);
    assert_eq!(updated["state"]["state"], "Ready", "{updated}");
    assert_eq!(updated["wrapped_dek"]["kek"], second.as_str());
    assert_eq!(
        psql(port, &password, "SELECT count(*) FROM t").unwrap(),
        "20002"
    );
    assert!(cp.has_event("orders", "key changed"));

    // Delete removes the directory and the row.
    cp.server(&["delete", "orders"]);
    assert!(!server_dir.exists());
    assert!(cp
        .try_server(&["show", "orders"])
        .unwrap_err()
        .contains("not found"));
    psql(port, &password, "SELECT 1").unwrap_err();
}
