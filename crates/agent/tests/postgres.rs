//! Real PostgreSQL 15 supervised on a plain temporary directory: one cluster shared
//! by the tests that only read, one of its own for each test that crashes, stops or
//! restarts it.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pgcmk_agent::postgres::{OsUser, PgInstall, PgLayout, Postgres, StopMode};
use pgcmk_crypto::SecretBytes;
use pgcmk_testkit::net::free_port;
use pgcmk_testkit::shared::{Held, Shared};
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

/// A cluster started, its directory, port and password.
fn started() -> (tempfile::TempDir, Postgres, u64, &'static str) {
    let (dir, mut pg, port, password) = cluster();
    pg.start(Duration::from_secs(60)).unwrap();
    assert!(pg.is_ready(), "not ready after start");
    (dir, pg, u64::from(port), password)
}

/// A started cluster for the tests that only read from it.
struct Running {
    dir: tempfile::TempDir,
    _pg: Postgres,
    port: u64,
    password: &'static str,
}

fn running() -> Held<Running> {
    static RUNNING: Shared<Running> = Shared::new();
    RUNNING.get(|| {
        // PostgreSQL gets SIGQUIT when the thread that started it ends (its parent
        // death signal follows the thread, not the process), and the test asking
        // first ends before the others: start it on a thread that lives on.
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            sender.send(started()).unwrap();
            loop {
                std::thread::park();
            }
        });
        let (dir, pg, port, password) = receiver.recv().unwrap();
        Running {
            dir,
            _pg: pg,
            port,
            password,
        }
    })
}

#[test]
fn initdb_makes_a_cluster_and_leaves_no_password_file() {
    // `cluster` asserts both.
    running();
}

#[test]
fn a_started_cluster_answers_sql_and_refuses_a_wrong_password() {
    let pg = running();
    assert_eq!(psql(pg.port, pg.password, "SELECT 40 + 2").unwrap(), "42");
    let err = psql(pg.port, "wrong-password", "SELECT 1").unwrap_err();
    assert!(err.contains("password authentication failed"), "{err}");
}

#[test]
fn the_logging_collector_writes_inside_the_data_directory() {
    let pg = running();
    let logs = std::fs::read_dir(pg.dir.path().join("pgdata/log"))
        .unwrap()
        .count();
    assert!(logs > 0, "no server log in pgdata/log");
}

#[test]
fn a_killed_postmaster_is_noticed_and_a_restart_recovers_committed_data() {
    let _shared = running(); // kept up for the tests after this one
    let (_dir, mut pg, port, password) = started();
    psql(
        port,
        password,
        "CREATE TABLE t(v text); INSERT INTO t VALUES ('committed-row')",
    )
    .unwrap();
    let pid = pg.pid().unwrap();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    wait_for("the crash to be noticed", Duration::from_secs(10), || {
        pg.poll_exit().is_some()
    });
    assert!(pg.pid().is_none(), "a pid after the crash");
    pg.start(Duration::from_secs(60)).unwrap();
    assert_eq!(
        psql(port, password, "SELECT v FROM t").unwrap(),
        "committed-row"
    );
}

#[test]
fn a_stopped_cluster_is_not_ready_and_refuses_connections() {
    let _shared = running(); // kept up for the tests after this one
    let (_dir, mut pg, port, password) = started();
    pg.stop(StopMode::Fast).unwrap();
    assert!(!pg.is_ready(), "ready after stop");
    psql(port, password, "SELECT 1").unwrap_err();
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
    let _shared = running(); // kept up for the tests after this one
    let (dir, mut pg, _, _) = cluster();
    pg.start(Duration::from_secs(60)).unwrap();
    for _ in 0..3 {
        assert!(pg.is_ready());
    }
    pg.stop(StopMode::Fast).unwrap();
    // A probe's backend can still be exiting when the stop arrives; the shutdown
    // then terminates it with a FATAL of its own. What the probe itself would
    // log (a refused or failed authentication) is written before it returns.
    let log = server_log(dir.path());
    let (running, _) = log
        .split_once("received fast shutdown request")
        .expect("the log records the shutdown");
    assert!(!running.contains("FATAL"), "{log}");
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
    let _shared = running(); // kept up for the tests after this one
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
