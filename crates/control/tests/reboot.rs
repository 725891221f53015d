//! A key vault's addresses are identities. After a host crash (every process of the
//! stack killed with -9, then the vault and the control plane started again with the
//! same arguments) every server is Ready within one key-check interval plus seconds;
//! and when the security officer moves the vault service on purpose, the node agents
//! follow it without anyone touching the servers.

mod support;

use std::time::{Duration, Instant};

use pgcmk_testkit::wait::{poll, wait_for};
use serde_json::Value;
use support::*;

/// The tests of this binary take turns: a reboot kills every process of its stack,
/// and a server the other test creates meanwhile may be given a port the rebooted
/// servers need again ("could not create any TCP/IP sockets").
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn every_server_is_ready_within_an_interval_after_a_full_reboot() {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    const INTERVAL: u64 = 5;
    let root = scratch();
    let mut vault = Vault::start(root.path());
    let mut cp = ControlPlane::start(root.path(), &vault, INTERVAL, 300);
    // A service-managed server (the platform key) and a customer-managed one whose
    // key is in another vault, served on that vault's own port.
    let platform_managed = Created::from(&cp.server(&[
        "create",
        "--name",
        "platform-managed",
        "--location",
        "local",
    ]));
    let mi = vault.identity("orders-mi");
    vault.keyvault("orders-kv", "westeurope", true);
    vault.grant("orders-kv", &mi, &["get", "wrapKey", "unwrapKey"]);
    let kid = vault.key("orders-kv", "orders-key", 2048);
    let customer_managed = Created::from(
        &cp.create_cmk("orders", &mi, &mi.name, &versionless(&kid))
            .unwrap(),
    );
    let servers = [platform_managed, customer_managed];
    for s in &servers {
        s.sql(&format!("CREATE TABLE t AS SELECT '{}' AS v", s.name))
            .unwrap();
    }

    // The crash: the control plane first (so it restarts nothing), the vault, then
    // every agent, postmaster and backend.
    cp.kill();
    vault.kill();
    for s in &servers {
        crash_server_processes(&s.dir);
        s.sql("SELECT 1").unwrap_err();
    }

    // The boot: the same commands as before.
    let booted = Instant::now();
    vault.restart();
    cp.start_again();
    let limit = Duration::from_secs(INTERVAL + 10);
    for s in &servers {
        let mut state = (String::new(), String::new());
        let ready = poll(
            limit.saturating_sub(booted.elapsed()),
            Duration::from_millis(100),
            || {
                state = cp.state(&s.name);
                state.0 == "Ready" && s.sql("SELECT v FROM t").is_ok_and(|v| v == s.name)
            },
        );
        assert!(
            ready.is_some(),
            "{} is {} ({}) {limit:?} after the reboot",
            s.name,
            state.0,
            state.1
        );
    }
    eprintln!(
        "reboot -> every server Ready in {:?} (key-check interval {INTERVAL} s)",
        booted.elapsed()
    );
}

#[test]
fn agents_follow_a_vault_service_moved_on_purpose() {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Checks are a minute apart: an agent that picks up the move within seconds was
    // told, it did not stumble on it.
    const INTERVAL: u64 = 60;
    let root = scratch();
    let mut vault = Vault::start(root.path());
    let mut cp = ControlPlane::start(root.path(), &vault, INTERVAL, 300);
    let server = Created::from(&cp.server(&["create", "--name", "follows", "--location", "local"]));

    // Moved while the control plane runs.
    let before = vault.identity_endpoint.clone();
    let moved = vault.move_to(free_loopback_address());
    assert_ne!(vault.identity_endpoint, before);
    assert_follows(&cp, &vault, &server, &moved);

    // Moved while the control plane is down: it re-attaches to the running agent
    // and hands it the new address.
    let mut moved = String::new();
    cp.restart_after(|| moved = vault.move_to(free_loopback_address()));
    assert_follows(&cp, &vault, &server, &moved);
    assert!(cp.has_event("follows", "agent re-attached"));
    assert_eq!(cp.state("follows").0, "Ready");
    server.sql("SELECT 1").unwrap();
}

/// Within seconds of the move (at `moved`), the server's agent gets a token from the
/// vault service's new identity endpoint (the old one is gone; a token cached from
/// before would need none) and unwraps with it; its configuration names that address.
fn assert_follows(cp: &ControlPlane, vault: &Vault, server: &Created, moved: &str) {
    wait_for(
        "a token from the moved identity endpoint and an unwrap, by the agent",
        Duration::from_secs(20),
        || {
            vault.calls_since(&cp.platform, "ManagedIdentityToken", moved) > 0
                && vault.calls_since(&cp.platform, "KeyUnwrap", moved) > 0
        },
    );
    let config: Value =
        serde_json::from_slice(&std::fs::read(server.dir.join("agent.json")).unwrap()).unwrap();
    assert_eq!(
        config["kek"]["identity_endpoint"].as_str(),
        Some(vault.identity_endpoint.as_str())
    );
}
