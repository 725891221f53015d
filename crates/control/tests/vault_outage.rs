//! A vault outage is not a revocation: the server keeps serving through the grace
//! period, goes Inaccessible only after it, and comes back when the vault does. A
//! vault that stalls (SIGSTOP: connections accepted by the kernel, no answer) is
//! slow while it answers within the client's timeout, and an outage when it does not.
//!
//! Each test kills or stalls its own vault, so each has its own stack.

mod support;

use std::time::{Duration, Instant};

use pgcmk_testkit::process::Paused;
use pgcmk_testkit::wait::wait_for;
use support::*;

const INTERVAL: u64 = 1;
const GRACE: u64 = 6;
/// The agent's timeout for one request to the vault (`ClientOptions::default`).
const REQUEST_TIMEOUT: u64 = 10;

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

#[test]
fn a_vault_stalling_seconds_at_a_time_slows_checks_but_never_locks_the_server() {
    let (stack, server) = steady_server();
    let pid = stack.vault.process.pid();
    let started = Instant::now();
    // Stalled 3 s of every 4, for three grace periods: every check waits, none fails.
    while started.elapsed() < Duration::from_secs(3 * GRACE) {
        let stalled = Paused::pause(pid);
        std::thread::sleep(Duration::from_secs(3));
        drop(stalled);
        assert_eq!(server.sql("SELECT v FROM t").as_deref(), Ok("1"));
        assert_eq!(stack.cp.state("steady").0, "Ready");
        std::thread::sleep(Duration::from_secs(1));
    }
    let events = stack.cp.events("steady");
    assert!(
        !events.iter().any(|e| e["what"]
            .as_str()
            .is_some_and(|w| w.ends_with("-> Inaccessible"))),
        "{events:?}"
    );
}

#[test]
fn a_vault_that_stops_answering_is_an_outage_bounded_by_the_request_timeout() {
    let (stack, server) = steady_server();
    let stalled = Paused::pause(stack.vault.process.pid());
    let outage = Instant::now();
    // Each check waits out the request timeout; the grace period runs from the
    // first one that failed, and the lock follows the retry after it.
    let bound = Duration::from_secs(2 * REQUEST_TIMEOUT + GRACE + INTERVAL + 5);
    wait_for("Inaccessible while the vault is stalled", bound, || {
        stack.cp.state("steady").0 == "Inaccessible"
    });
    assert!(server.sql("SELECT 1").is_err());
    assert!(
        outage.elapsed() >= Duration::from_secs(GRACE),
        "locked after {:?}, before the grace period",
        outage.elapsed()
    );
    drop(stalled);
    wait_for(
        "Ready once the vault answers again",
        Duration::from_secs(INTERVAL + REQUEST_TIMEOUT + 20),
        || stack.cp.state("steady").0 == "Ready",
    );
    assert_eq!(server.sql("SELECT v FROM t").unwrap(), "1");
}
