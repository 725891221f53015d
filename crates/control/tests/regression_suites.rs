//! PostgreSQL's own regression suites pass on a customer-managed pgcmk server: the core
//! suite with up to 20 tests at once (many backends creating, filling, truncating and
//! dropping relation files side by side on cryptfs) and the isolation suite, after
//! which `pg_amcheck --heapallindexed` finds every database intact.
//!
//! The control: the same suites on a cluster made and run exactly as the node agent
//! makes and runs a server's (same initdb, same settings), on the plain disk. When only
//! the pgcmk server fails, the storage under it is at fault, not the suite or the machine.
//!
//! The suites run as the DBA connects: over TCP as `postgres` with the password `server
//! create` returned. That role is the cluster's bootstrap superuser (initdb
//! --username=postgres), which the core suite needs (C functions from regress.so, roles,
//! tablespaces, server-side COPY).

mod support;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use pgcmk_agent::contract::ServerDir;
use pgcmk_agent::postgres::{PgInstall, PgLayout, Postgres};
use pgcmk_crypto::SecretBytes;
use support::regress::{run_suites, Target};
use support::*;

/// The two tests take turns: each runs up to 20 backends on the machine's two cores,
/// and some of the suites' tests rely on lock and statement timeouts that a second
/// suite's load would stretch.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn assert_suites_pass(target: &Target, scratch: &Path) {
    let failures = run_suites(target, scratch);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn regression_suites_pass_on_a_customer_managed_server() {
    let _turn = one_at_a_time();
    let root = scratch();
    let vault = Vault::start(root.path());
    let cp = ControlPlane::start(root.path(), &vault, 60, 300);
    let key = vault.customer_key("regress");
    let created = cp.create_with("regress", &key, &versionless(&key.kid));
    let server_dir = ServerDir::new(created["server"]["dir"].as_str().unwrap());
    let target = Target {
        port: u16::try_from(created["server"]["port"].as_u64().unwrap()).unwrap(),
        password: created["password"].as_str().unwrap().to_string(),
        log_dir: server_dir.data_dir().join("log"),
    };
    assert_suites_pass(&target, root.path());
}

#[test]
fn regression_suites_pass_on_a_plain_cluster() {
    let _turn = one_at_a_time();
    let root = scratch();
    let password = "regress-control-password";
    let mut cluster = Postgres::new(
        PgInstall::discover().unwrap(),
        PgLayout {
            data_dir: root.path().join("pgdata"),
            socket_dir: root.path().join("sockets"),
            port: free_port(),
        },
    );
    cluster
        .initdb(&SecretBytes::new(password.as_bytes().to_vec()))
        .unwrap();
    cluster.start(Duration::from_secs(60)).unwrap();
    let target = Target {
        port: cluster.layout().port,
        password: password.to_string(),
        log_dir: root.path().join("pgdata/log"),
    };
    assert_suites_pass(&target, root.path());
}
