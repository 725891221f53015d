//! A vault outage is not a revocation: the server keeps serving through the grace
//! period, goes Inaccessible only after it, and comes back when the vault does.
//!
//! Each test kills its own vault, so each has its own stack.

mod support;

use std::time::{Duration, Instant};

use pgcmk_testkit::wait::wait_for;
use support::*;

const INTERVAL: u64 = 1;
const GRACE: u64 = 6;

/// A stack and a service-managed server `steady` holding a row.
fn steady_server() -> (Stack, Created) {
    let stack = Stack::start(INTERVAL, GRACE, None);
    let server =
        Created::from(
            &stack
                .cp
                .server(&["create", "--name", "steady", "--location", "local"]),
        );
    server.sql("CREATE TABLE t AS SELECT 1 AS v").unwrap();
    (stack, server)
}

/// How many key checks the server's agent logged as failed.
fn failed_checks(server: &Created) -> usize {
    std::fs::read_to_string(server.dir.join("agent.log"))
        .unwrap_or_default()
        .matches("key check failed")
        .count()
}

#[test]
fn within_the_grace_period_of_an_outage_the_server_keeps_serving() {
    let (mut stack, server) = steady_server();
    let before = failed_checks(&server);
    stack.vault.kill();
    let outage = Instant::now();
    // The agent has noticed: two checks failed, the second a retry.
    wait_for(
        "two failed key checks",
        Duration::from_secs(GRACE - 1),
        || failed_checks(&server) >= before + 2,
    );
    assert_eq!(
        server.sql("SELECT v FROM t").unwrap(),
        "1",
        "not serving {:?} into an outage (grace period {GRACE} s)",
        outage.elapsed()
    );
    assert_eq!(stack.cp.state("steady").0, "Ready");
    assert!(
        outage.elapsed() < Duration::from_secs(GRACE),
        "checked only after the grace period"
    );
}

#[test]
fn after_the_grace_period_of_an_outage_the_server_locks_and_recovers_with_the_vault() {
    let (mut stack, server) = steady_server();
    stack.vault.kill();
    let outage = Instant::now();
    wait_for(
        "Inaccessible after the grace period",
        Duration::from_secs(GRACE + 10),
        || server.sql("SELECT 1").is_err(),
    );
    let locked_after = outage.elapsed();
    assert!(
        locked_after >= Duration::from_secs(GRACE - 1),
        "locked after {locked_after:?}, before the grace period"
    );
    wait_for("Inaccessible state", Duration::from_secs(5), || {
        stack.cp.state("steady").0 == "Inaccessible"
    });
    let (_, reason) = stack.cp.state("steady");
    assert!(reason.contains("unreachable"), "{reason}");

    stack.vault.restart();
    wait_for(
        "Ready after the vault is back",
        Duration::from_secs(INTERVAL + 20),
        || stack.cp.state("steady").0 == "Ready",
    );
    assert_eq!(server.sql("SELECT v FROM t").unwrap(), "1");
}
