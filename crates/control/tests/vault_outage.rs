//! A vault outage is not a revocation: the server keeps serving through the grace
//! period, goes Inaccessible only after it, and comes back when the vault does.

mod support;

use std::time::{Duration, Instant};

use pgcmk_testkit::wait::wait_for;
use support::*;

const INTERVAL: u64 = 1;
const GRACE: u64 = 6;

#[test]
fn outage_is_tolerated_for_the_grace_period_then_locks_and_recovers() {
    let root = scratch();
    let mut vault = Vault::start(root.path());
    let cp = ControlPlane::start(root.path(), &vault, INTERVAL, GRACE);
    let created = cp.server(&["create", "--name", "steady", "--location", "local"]);
    let port = created["server"]["port"].as_u64().unwrap();
    let password = created["password"].as_str().unwrap().to_string();
    psql(port, &password, "CREATE TABLE t AS SELECT 1 AS v").unwrap();

    vault.kill();
    let outage = Instant::now();
    // Well inside the grace period the server still serves.
    std::thread::sleep(Duration::from_secs(GRACE / 2));
    assert_eq!(psql(port, &password, "SELECT v FROM t").unwrap(), "1");
    assert_eq!(cp.state("steady").0, "Ready");

    wait_for(
        "Inaccessible after the grace period",
        Duration::from_secs(GRACE + 10),
        || psql(port, &password, "SELECT 1").is_err(),
    );
    let locked_after = outage.elapsed();
    assert!(
        locked_after >= Duration::from_secs(GRACE - 1),
        "locked after {locked_after:?}, before the grace period"
    );
    wait_for("Inaccessible state", Duration::from_secs(5), || {
        cp.state("steady").0 == "Inaccessible"
    });
    let (_, reason) = cp.state("steady");
    assert!(reason.contains("unreachable"), "{reason}");

    vault.restart();
    wait_for(
        "Ready after the vault is back",
        Duration::from_secs(INTERVAL + 20),
        || cp.state("steady").0 == "Ready",
    );
    assert_eq!(psql(port, &password, "SELECT v FROM t").unwrap(), "1");
}
