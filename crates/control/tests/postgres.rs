//! Real PostgreSQL 15 supervised on a plain temporary directory.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use pgcmk_control::postgres::{PgInstall, PgLayout, Postgres, StopMode};
use pgcmk_crypto::SecretBytes;
use support::{free_port, psql};

#[test]
fn initdb_start_query_crash_restart_stop() {
    let dir = tempfile::tempdir().unwrap();
    // The postgres user must be able to traverse to its directories.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let port = free_port();
    let layout = PgLayout {
        data_dir: dir.path().join("pgdata"),
        socket_dir: dir.path().join("sockets"),
        port,
    };
    let install = PgInstall::discover().unwrap();
    let mut pg = Postgres::new(install, layout);
    assert!(!pg.is_initialized());
    let password = "test-password-1";
    pg.initdb(&SecretBytes::new(password.as_bytes().to_vec()))
        .unwrap();
    assert!(pg.is_initialized());
    assert!(
        !dir.path().join(".initdb-password").exists(),
        "password file left behind"
    );

    pg.start(Duration::from_secs(60)).unwrap();
    assert!(pg.is_ready());
    psql(
        u64::from(port),
        password,
        "CREATE TABLE t(v text); INSERT INTO t VALUES ('committed-row')",
    )
    .unwrap();
    let err = psql(u64::from(port), "wrong-password", "SELECT 1").unwrap_err();
    assert!(err.contains("password authentication failed"), "{err}");

    // The logging collector writes inside the data directory.
    let logs = std::fs::read_dir(dir.path().join("pgdata/log"))
        .unwrap()
        .count();
    assert!(logs > 0, "no server log in pgdata/log");

    // A crash of the postmaster is noticed, and a restart recovers committed data.
    let pid = pg.pid().unwrap();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pg.poll_exit().is_none() {
        assert!(std::time::Instant::now() < deadline, "crash not noticed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(pg.pid().is_none());
    pg.start(Duration::from_secs(60)).unwrap();
    assert_eq!(
        psql(u64::from(port), password, "SELECT v FROM t").unwrap(),
        "committed-row"
    );

    pg.stop(StopMode::Fast).unwrap();
    assert!(!pg.is_ready());
    psql(u64::from(port), password, "SELECT 1").unwrap_err();
}
