//! Real PostgreSQL 15 supervised on a plain temporary directory.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pgcmk_agent::postgres::{OsUser, PgInstall, PgLayout, Postgres, StopMode};
use pgcmk_crypto::SecretBytes;
use pgcmk_testkit::net::free_port;
use pgcmk_testkit::wait::wait_for;

/// Runs SQL over TCP as `postgres` with `password`; stdout or the error text.
fn psql(port: u64, password: &str, sql: &str) -> Result<String, String> {
    PgInstall::discover()
        .unwrap()
        .psql(u16::try_from(port).unwrap(), password, sql)
}

/// A new cluster in a temporary directory (not started), its port and password.
fn cluster() -> (tempfile::TempDir, Postgres, u16, &'static str) {
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
    let pg = Postgres::new(install, layout);
    assert!(!pg.is_initialized());
    let password = "test-password-1";
    pg.initdb(&SecretBytes::new(password.as_bytes().to_vec()))
        .unwrap();
    assert!(pg.is_initialized());
    assert!(
        !dir.path().join(".initdb-password").exists(),
        "password file left behind"
    );
    (dir, pg, port, password)
}

#[test]
fn initdb_start_query_crash_restart_stop() {
    let (dir, mut pg, port, password) = cluster();

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

/// The server log of a stopped cluster (every file under `pgdata/log`).
fn server_log(dir: &Path) -> String {
    std::fs::read_dir(dir.join("pgdata/log"))
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect()
}

#[test]
fn the_readiness_probe_leaves_no_trace_in_the_server_log() {
    let (dir, mut pg, _, _) = cluster();
    pg.start(Duration::from_secs(60)).unwrap();
    for _ in 0..3 {
        assert!(pg.is_ready());
    }
    pg.stop(StopMode::Fast).unwrap();
    let log = server_log(dir.path());
    assert!(!log.contains("FATAL"), "{log}");
}

/// Starts `pg` with its `postmaster.pid` naming `pid`, as an earlier postmaster that
/// is gone would have left it.
fn start_over_lock_file_of(pg: &mut Postgres, dir: &Path, pid: u32) {
    pg.start(Duration::from_secs(60)).unwrap();
    let lock_file = dir.join("pgdata/postmaster.pid");
    let lock = std::fs::read_to_string(&lock_file).unwrap();
    pg.stop(StopMode::Immediate).unwrap();
    let (_, rest) = lock.split_once('\n').unwrap();
    std::fs::write(&lock_file, format!("{pid}\n{rest}")).unwrap();
    pg.start(Duration::from_secs(60)).unwrap();
    pg.stop(StopMode::Fast).unwrap();
}

/// `program ARGS` running as the PostgreSQL user, as an earlier postmaster did
/// (PostgreSQL takes a process of another user for a stale lock by itself).
fn as_postgres(program: &str, args: &[&str]) -> std::process::Child {
    let user = OsUser::lookup("postgres").unwrap();
    Command::new(program)
        .args(args)
        .uid(user.uid)
        .gid(user.gid)
        .spawn()
        .unwrap()
}

#[test]
fn a_lock_file_left_by_a_postmaster_that_is_gone_does_not_block_the_start() {
    let (dir, mut pg, _, _) = cluster();
    // Exited but not reaped: kill(pid, 0) still succeeds on a zombie, so PostgreSQL
    // alone would refuse to start ("lock file already exists").
    let mut exited = as_postgres("true", &[]);
    wait_for("a zombie", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{}/stat", exited.id()))
            .is_ok_and(|stat| stat.contains(") Z "))
    });
    start_over_lock_file_of(&mut pg, dir.path(), exited.id());
    exited.wait().unwrap();

    // The pid now belongs to an unrelated process.
    let mut unrelated = as_postgres("sleep", &["60"]);
    start_over_lock_file_of(&mut pg, dir.path(), unrelated.id());
    unrelated.kill().unwrap();
    unrelated.wait().unwrap();
}
