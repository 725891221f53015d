//! `server update --high-availability enabled` cut short by a kill -9 of the
//! control plane right after the server became highly available with one node
//! (its own volume): the restarted control plane tells the truth (the server
//! serves, its rows there), and the same command finishes the change.
//!
//! Likewise `server update --key` of a customer-managed highly available server
//! cut short right after its first node moved to the new key: both nodes serve,
//! each on one key or the other, and the same command finishes the change.
//!
//! A control plane of its own (it is killed): a minute of a stack, an etcd
//! cluster and two nodes beyond the CI's budget for this change, so it is run by
//! hand: `cargo test -p pgcmk-control --test ha_update_crash -- --ignored`.
//! Each test starts a stack of its own.

mod support;

use std::time::Duration;

use pgcmk_testkit::wait::wait_for;
use support::ha::{psql_at, HaServer};
use support::*;

#[test]
#[ignore = "a stack of its own, killed: run by hand (see the module's documentation)"]
fn an_enable_cut_short_is_finished_by_the_same_command() {
    let mut stack = Stack::start(2, 30, None);
    let name = "ha-cut";
    let created = stack.cp.server(&["create", name, "-l", "westeurope"]);
    let password = created["password"].as_str().unwrap().to_string();
    let single = stack.cp.server(&["connection-string", name])["connection_string"]
        .as_str()
        .unwrap()
        .to_string();
    psql_at(
        &single,
        &password,
        "CREATE TABLE r AS SELECT generate_series(1, 500) AS id",
    )
    .unwrap();

    let update = stack
        .cp
        .spawn_server(&["update", name, "--high-availability", "enabled"]);
    wait_for("the first node recorded", Duration::from_secs(60), || {
        stack.cp.server(&["show", name])["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["what"] == "node added"))
    });
    stack.cp.kill();
    drop(update);
    stack.cp.start_again();

    // The update is for a Ready server: the restarted control plane says so once
    // the node it found serves.
    wait_for("the server Ready again", Duration::from_secs(90), || {
        psql_at(&single, &password, "SELECT count(*) FROM r").is_ok_and(|c| c == "500")
            && stack.cp.state(name).0 == "Ready"
    });
    let show = stack.cp.server(&["show", name]);
    let nodes = show["nodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(nodes.len(), 1, "one node after the cut: {show}");

    stack
        .cp
        .try_server(&["update", name, "--high-availability", "enabled"])
        .unwrap_or_else(|e| panic!("{e}\ncontrol log:\n{}", stack.cp.log()));
    let server = HaServer {
        name: name.into(),
        password: password.clone(),
        connection_string: stack.cp.server(&["connection-string", name])["connection_string"]
            .as_str()
            .unwrap()
            .to_string(),
    };
    let (primary, standby) = server.wait_healthy(&stack.cp, Duration::from_secs(90));
    assert_eq!(primary.name, "ha-cut-node-1");
    server.sql("INSERT INTO r VALUES (501)").unwrap();
    wait_for("the rows on the standby", Duration::from_secs(30), || {
        server
            .sql_on(&standby, "SELECT count(*) FROM r")
            .is_ok_and(|c| c == "501")
    });
}

#[test]
#[ignore = "a stack of its own, killed: run by hand (see the module's documentation)"]
fn a_key_change_cut_short_is_finished_by_the_same_command() {
    let mut stack = Stack::start(2, 30, None);
    let name = "ha-rekey-cut";
    let (key, server) = HaServer::customer_managed(&stack.cp, &stack.vault, name);
    server
        .sql("CREATE TABLE r AS SELECT generate_series(1, 500) AS id")
        .unwrap();
    server.wait_healthy(&stack.cp, Duration::from_secs(90));
    let second = stack.vault.key(&key.vault, "ha-rekey-cut-key-2", 2048);
    let to_second = ["update", name, "--key", &versionless(&second)];

    let update = stack.cp.spawn_server(&to_second);
    wait_for("the first node moved", Duration::from_secs(120), || {
        stack.cp.has_event(name, "node key changed")
    });
    stack.cp.kill();
    drop(update);
    stack.cp.start_again();

    let wrapped_by = |cp: &ControlPlane| -> Vec<String> {
        cp.server(&["show", name])["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["wrapped_by"].as_str().unwrap().to_string())
            .collect()
    };
    server.wait_healthy(&stack.cp, Duration::from_secs(90));
    let halfway = wrapped_by(&stack.cp);
    assert!(
        halfway.iter().all(|k| *k == key.kid || *k == second),
        "every node on one key or the other: {halfway:?}"
    );
    assert!(
        halfway.contains(&second) && halfway.contains(&key.kid),
        "cut half-way, one node on each key: {halfway:?}"
    );
    assert_eq!(server.sql("SELECT count(*) FROM r").unwrap(), "500");

    stack
        .cp
        .try_server(&to_second)
        .unwrap_or_else(|e| panic!("{e}\ncontrol log:\n{}", stack.cp.log()));
    server.wait_healthy(&stack.cp, Duration::from_secs(90));
    assert_eq!(wrapped_by(&stack.cp), [second.clone(), second]);
    server.sql("INSERT INTO r VALUES (501)").unwrap();
    assert_eq!(server.sql("SELECT count(*) FROM r").unwrap(), "501");
}
