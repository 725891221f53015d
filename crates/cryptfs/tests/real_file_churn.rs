//! PostgreSQL creating and dropping files from many backends at once: the pgbench workload of
//! `bench/cryptfs/file_churn/` (temporary tables and indexes, sorts spilling to pgsql_tmp,
//! TRUNCATE and VACUUM FULL of a table every client uses, per-client tables with primary keys
//! rewritten by VACUUM FULL, CLUSTER or REINDEX, then dropped) for a fixed time. Then what it
//! was built to check: pgbench finished without an error, one logged row per transaction that
//! read back what it had written, pg_amcheck clean after a restart, a server log without
//! storage errors. On cryptfs, and on a plain directory as the control.

mod real_support;

use std::fs;
use std::path::{Path, PathBuf};

use real_support::{CryptMount, PgCluster, TestDir};

/// Enough clients that several backends create and unlink files at the same moment.
const CLIENTS: &str = "16";
const SECONDS: &str = "20";

fn workload_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../bench/cryptfs/file_churn")
        .join(name)
}

/// Runs the workload on a fresh cluster in `data`, stops it, calls `while_stopped`, starts it
/// again and checks. Panics listing every problem found, not only the first.
fn churn_then_check(data: &Path, aux: &Path, while_stopped: impl FnOnce()) {
    let mut pg = PgCluster::initdb(data, aux);
    pg.start();
    pg.psql_file(&workload_file("setup.sql"), &[]);

    let bench = real_support::output(
        pg.client("pgbench")
            .args(["-n", "-c", CLIENTS, "-j", "2", "-T", SECONDS, "-f"])
            .arg(workload_file("churn.sql")),
    );
    let stdout = String::from_utf8_lossy(&bench.stdout);
    let mut problems = Vec::new();
    if !bench.status.success() {
        // Its own lines name each aborted client and the error; the rest repeats the
        // backends' crash notices.
        let stderr = String::from_utf8_lossy(&bench.stderr);
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("pgbench:"))
            .collect();
        problems.push(format!(
            "pgbench exited with {}:\n{}",
            bench.status,
            errors.join("\n")
        ));
    }
    if !stdout.contains("number of failed transactions: 0 (0.000%)") {
        problems.push(format!("pgbench counted failed transactions:\n{stdout}"));
    }
    let processed = transactions_processed(&stdout);

    // Restarted (and, on cryptfs, remounted), every page is read back from the filesystem.
    pg.stop();
    while_stopped();
    pg.start();
    match processed {
        Some(n) => problems.extend(
            pg.psql_file(
                &workload_file("check.sql"),
                &[("transactions", &n.to_string())],
            )
            .lines()
            .map(str::to_string),
        ),
        None => problems.push(format!("pgbench reported no transaction count:\n{stdout}")),
    }
    let amcheck = pg.amcheck_all();
    if !amcheck.is_empty() {
        problems.push(amcheck);
    }
    let temp_files: u64 = pg
        .psql("select temp_files from pg_stat_database where datname = 'postgres'")
        .parse()
        .expect("temp_files");
    pg.stop();

    let log = fs::read_to_string(pg.server_log()).expect("read server log");
    problems.extend(
        storage_errors(&log)
            .into_iter()
            .map(|line| format!("server log: {line}")),
    );
    assert!(
        problems.is_empty(),
        "{} problems after pgbench -c {CLIENTS} -T {SECONDS} ({} transactions):\n{}",
        problems.len(),
        processed.map_or("?".to_string(), |n| n.to_string()),
        problems.join("\n")
    );
    // Not vacuous: the clients got through transactions, and those spilled to temporary files.
    let processed = processed.unwrap_or_default();
    assert!(
        processed >= CLIENTS.parse().expect("CLIENTS"),
        "only {processed} transactions from {CLIENTS} clients"
    );
    assert!(
        temp_files >= processed,
        "{temp_files} temporary files for {processed} transactions: the sorts did not spill"
    );
}

/// The lines of a server log that `log-errors.txt` calls failures.
fn storage_errors(log: &str) -> Vec<&str> {
    let spec = fs::read_to_string(workload_file("log-errors.txt")).expect("read log-errors.txt");
    let strings = spec
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let (ok, failures): (Vec<&str>, Vec<&str>) = strings.partition(|l| l.starts_with("ok: "));
    let ok: Vec<&str> = ok.iter().map(|l| &l["ok: ".len()..]).collect();
    log.lines()
        .filter(|line| failures.iter().any(|f| line.contains(f)))
        .filter(|line| !ok.iter().any(|o| line.contains(o)))
        .collect()
}

/// "number of transactions actually processed: N" in pgbench's report (with -T, no "/total").
fn transactions_processed(report: &str) -> Option<u64> {
    let prefix = "number of transactions actually processed: ";
    report
        .lines()
        .find_map(|l| l.strip_prefix(prefix))?
        .parse()
        .ok()
}

#[test]
fn file_churn_on_cryptfs_leaves_consistent_data() {
    let _serial = real_support::serial();
    let dir = TestDir::new();
    let aux = dir.subdir("aux", true);
    let mut mount = CryptMount::new(&dir);
    let data = mount.plain().join("pgdata");
    churn_then_check(&data, &aux, || mount.remount());
}

/// The control: the same workload and checks without FUSE, so a failure on cryptfs is the
/// filesystem's, not the workload's.
#[test]
fn file_churn_on_a_plain_directory_leaves_consistent_data() {
    let _serial = real_support::serial();
    let dir = TestDir::new();
    let aux = dir.subdir("aux", true);
    churn_then_check(&dir.path().join("pgdata"), &aux, || {});
}
