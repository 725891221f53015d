//! PostgreSQL's own regression suites against a running server, over TCP as a client:
//! the core suite (`parallel_schedule`, up to 20 tests at once, as `make
//! installcheck-parallel` runs it), the isolation suite (`isolation_schedule`), then
//! `pg_amcheck --heapallindexed` on every database.
//!
//! The suites are the Debian source package of the installed server, with the C modules
//! built, that `scripts/setup-pg-regress` leaves in [`SUITES_DIR`]; the drivers are the
//! ones postgresql-client-15 installs. Without `--use-existing`, pg_regress drops and
//! creates its database (`regression`, `isolation_regression`) from template0 with the
//! server's encoding and locale and sets lc_messages, lc_monetary, lc_numeric, lc_time,
//! bytea_output and timezone_abbreviations on it; the time zone, date style and
//! interval style come from its clients' environment. So the server's own defaults are
//! left as they are.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pgcmk_agent::postgres::PgInstall;
use pgcmk_testkit::process::{kill_quietly, spawn_logged, wait_exit};
use pgcmk_testkit::wait::poll;

use super::psql;

/// Where `scripts/setup-pg-regress` leaves the suites: `VERSION` (the Debian version
/// of postgresql-15 they belong to) and `source/`.
const SUITES_DIR: &str = "/var/cache/pgcmk/postgresql-15-regress";
/// Where postgresql-client-15 installs pg_regress, pg_isolation_regress and isolationtester.
const DRIVERS_DIR: &str = "/usr/lib/postgresql/15/lib/pgxs/src/test";
/// PostgreSQL's own setting for the core suite (REGRESS_OPTS in src/test/regress/GNUmakefile).
const MAX_CONCURRENT_TESTS: u32 = 20;
/// How long one suite may run before it counts as hung (a plain cluster needs about a minute).
const SUITE_LIMIT: Duration = Duration::from_secs(10 * 60);
/// How long a server that crashed may take to accept connections again before a check.
const RECOVERY_LIMIT: Duration = Duration::from_secs(120);
/// What libpq says when a server ends a plaintext connection, as the suites expect it.
const CLOSED_IN_PLAINTEXT: &str = "server closed the connection unexpectedly\n\
    \tThis probably means the server terminated abnormally\n\
    \tbefore or while processing the request.";
/// What libpq says of the same over TLS.
const CLOSED_OVER_TLS: &str = "SSL connection has been closed unexpectedly";
/// How much of the digest of `regression.diffs` a failure report quotes.
const DIFFS_QUOTED: usize = 24 * 1024;
/// How many lines of one test's diff its digest keeps.
const DIFF_LINES_PER_TEST: usize = 4;
/// Added lines of a diff that show what the server said instead of the expected output.
const DIFF_ERRORS: &[&str] = &["ERROR:", "FATAL:", "PANIC:", "WARNING:", "server closed"];
/// How many server log lines a failure report quotes.
const LOG_LINES_QUOTED: usize = 100;
/// Server log lines that say the server itself broke, or recovered.
const SERVER_TROUBLE: &[&str] = &[
    "PANIC:",
    "terminated by signal",
    "invalid page",
    "Input/output error",
    "already contains data",
    "could not fsync",
    "reinitializing",
    "redo ",
    "ready to accept connections",
];

/// A server the suites run against: 127.0.0.1:`port` as the superuser `postgres`.
pub struct Target {
    pub port: u16,
    pub password: String,
    /// The server's log directory (quoted from when something fails).
    pub log_dir: PathBuf,
}

/// One of PostgreSQL's suites: a driver with its inputs.
struct Suite {
    name: &'static str,
    driver: PathBuf,
    input_dir: PathBuf,
    schedule: &'static str,
    options: Vec<String>,
    /// Its output directory's name under the scratch directory.
    output: &'static str,
}

/// Runs both suites and pg_amcheck against `target`, each once the server accepts
/// connections, writing their output under `scratch`; one report per check that
/// failed (empty when every check passed), and the server log's lines about its own
/// trouble when one did.
pub fn run_suites(target: &Target, scratch: &Path) -> Vec<String> {
    assert_suites_match(target);
    let tests = Path::new(SUITES_DIR).join("source/src/test");
    let core = tests.join("regress");
    let drivers = Path::new(DRIVERS_DIR);
    let suites = [
        Suite {
            name: "core suite (parallel_schedule)",
            driver: drivers.join("regress/pg_regress"),
            options: vec![
                format!("--max-concurrent-tests={MAX_CONCURRENT_TESTS}"),
                format!("--dlpath={}", core.display()),
            ],
            input_dir: core,
            schedule: "parallel_schedule",
            output: "regress",
        },
        Suite {
            name: "isolation suite (isolation_schedule)",
            driver: drivers.join("isolation/pg_isolation_regress"),
            input_dir: with_tls_alternatives(&tests.join("isolation"), &scratch.join("specs")),
            schedule: "isolation_schedule",
            options: Vec::new(),
            output: "isolation",
        },
    ];
    let mut failures = Vec::new();
    for suite in &suites {
        let output_dir = scratch.join(suite.output);
        if let Err(e) =
            accepting_connections(target).and_then(|()| run_suite(target, suite, &output_dir))
        {
            failures.push(e);
        }
    }
    if let Err(e) = accepting_connections(target).and_then(|()| amcheck(target)) {
        failures.push(e);
    }
    if !failures.is_empty() {
        failures.push(server_trouble(&target.log_dir));
    }
    failures
}

/// The suites are those of the server's exact version (another minor release's
/// expected output differs).
fn assert_suites_match(target: &Target) {
    let stamp = Path::new(SUITES_DIR).join("VERSION");
    let suites = fs::read_to_string(&stamp).unwrap_or_else(|e| {
        panic!(
            "no PostgreSQL regression suites ({}: {e}): run scripts/setup",
            stamp.display()
        )
    });
    let server = psql(u64::from(target.port), &target.password, "SELECT version()").unwrap();
    assert!(
        server.contains(&format!("(Debian {})", suites.trim())),
        "the suites in {SUITES_DIR} are postgresql-15 {}, the server is {server}: run scripts/setup",
        suites.trim()
    );
}

/// Waits while the server does not accept connections (after a crash it replays WAL
/// first), up to [`RECOVERY_LIMIT`].
fn accepting_connections(target: &Target) -> Result<(), String> {
    let mut last = Ok(String::new());
    let accepted = poll(RECOVERY_LIMIT, Duration::from_millis(500), || {
        last = psql(u64::from(target.port), &target.password, "SELECT 1");
        last.is_ok()
    });
    match accepted {
        Some(_) => Ok(()),
        None => Err(format!(
            "the server did not accept connections for {RECOVERY_LIMIT:?}: {}",
            last.unwrap_err()
        )),
    }
}

/// A copy at `copy` of the suite's input directory `input` in which every expected
/// output that quotes libpq on a connection the server ended has an alternative with
/// libpq's words for the same over TLS (`NAME_N.out`, pg_regress's own way for output
/// that differs by platform): a pgcmk server takes TCP clients over TLS only, and the
/// suites were written for plaintext (the isolation test temp-schema-cleanup).
fn with_tls_alternatives(input: &Path, copy: &Path) -> PathBuf {
    let copied = Command::new("cp")
        .arg("-a")
        .arg(input)
        .arg(copy)
        .status()
        .unwrap();
    assert!(copied.success(), "copying {} failed", input.display());
    let expected = copy.join("expected");
    for entry in fs::read_dir(&expected).unwrap() {
        let path = entry.unwrap().path();
        let text = fs::read_to_string(&path).unwrap_or_default();
        if !text.contains(CLOSED_IN_PLAINTEXT) {
            continue;
        }
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let free = (1..10)
            .map(|n| expected.join(format!("{stem}_{n}.out")))
            .find(|alternative| !alternative.exists())
            .expect("a free alternative name");
        fs::write(free, text.replace(CLOSED_IN_PLAINTEXT, CLOSED_OVER_TLS)).unwrap();
    }
    copy.to_path_buf()
}

/// Runs `suite` against `target`, writing under `output_dir`.
fn run_suite(target: &Target, suite: &Suite, output_dir: &Path) -> Result<(), String> {
    let install = PgInstall::discover().unwrap();
    // Some tests make the server write files there (COPY ... TO '.../results/...').
    let results = output_dir.join("results");
    fs::create_dir_all(&results).unwrap();
    install.user().chown(&results).unwrap();
    let bindir = install.program("psql").parent().unwrap().to_path_buf();
    let log = output_dir.join("driver.log");
    let mut cmd = Command::new(&suite.driver);
    cmd.args(["--host=127.0.0.1", "--user=postgres"])
        .arg(format!("--port={}", target.port))
        .arg(format!("--bindir={}", bindir.display()))
        .arg(format!("--inputdir={}", suite.input_dir.display()))
        .arg(format!("--outputdir={}", output_dir.display()))
        .arg(format!(
            "--schedule={}",
            suite.input_dir.join(suite.schedule).display()
        ))
        .args(&suite.options)
        .env("PGPASSWORD", &target.password);
    let started = Instant::now();
    let mut child = spawn_logged(&mut cmd, &log);
    let status = wait_exit(&mut child, SUITE_LIMIT);
    if status.is_none() {
        kill_quietly(&mut child);
    }
    eprintln!("{}: {:?}", suite.name, started.elapsed());
    let output = fs::read_to_string(&log).unwrap_or_default();
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!(
            "{}: {} exited with {s}\n{}\n{}",
            suite.name,
            suite.driver.display(),
            failed_tests(&output),
            diffs(output_dir)
        )),
        None => Err(format!(
            "{}: not finished after {SUITE_LIMIT:?}; its output:\n{output}",
            suite.name
        )),
    }
}

/// The lines of a driver's output that name a failed test, its totals and its errors.
fn failed_tests(output: &str) -> String {
    output
        .lines()
        .filter(|l| l.contains("FAILED") || l.contains("failed") || l.contains("error"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A digest of `regression.diffs` in `output_dir`: for each test that failed, what the
/// server said instead of the expected output (its errors, else the first changed lines).
fn diffs(output_dir: &Path) -> String {
    let text = fs::read_to_string(output_dir.join("regression.diffs")).unwrap_or_default();
    let mut digest = String::new();
    for test in text.split("diff -U3 ").skip(1) {
        let name = test.lines().next().unwrap_or_default();
        let changed = || {
            test.lines()
                .skip(3)
                .filter(|l| l.starts_with('+') || l.starts_with('-'))
        };
        let errors: Vec<&str> = changed()
            .filter(|l| l.starts_with('+') && DIFF_ERRORS.iter().any(|e| l.contains(e)))
            .take(DIFF_LINES_PER_TEST)
            .collect();
        let shown = if errors.is_empty() {
            changed().take(DIFF_LINES_PER_TEST).collect()
        } else {
            errors
        };
        writeln!(digest, "{name}\n{}", shown.join("\n")).unwrap();
    }
    let mut end = digest.len().min(DIFFS_QUOTED);
    while !digest.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "regression.diffs ({} bytes), digest ({} bytes; the first {end}):\n{}",
        text.len(),
        digest.len(),
        &digest[..end]
    )
}

/// `pg_amcheck --heapallindexed` on every database: heap and B-tree indexes, each
/// index against every heap tuple (installing amcheck where it is missing).
pub fn amcheck(target: &Target) -> Result<(), String> {
    let out = Command::new(PgInstall::discover().unwrap().program("pg_amcheck"))
        .args(["--host=127.0.0.1", "--username=postgres", "--no-password"])
        .arg(format!("--port={}", target.port))
        .args(["--all", "--install-missing", "--heapallindexed"])
        .env("PGPASSWORD", &target.password)
        .output()
        .unwrap();
    if out.status.success() && out.stdout.is_empty() {
        return Ok(());
    }
    Err(format!(
        "pg_amcheck --heapallindexed exited with {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// The server log lines that say the server itself broke, or recovered.
fn server_trouble(log_dir: &Path) -> String {
    let mut files: Vec<PathBuf> = fs::read_dir(log_dir)
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    files.sort();
    let mut lines = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).unwrap_or_default();
        lines.extend(
            text.lines()
                .filter(|l| SERVER_TROUBLE.iter().any(|t| l.contains(t)))
                .map(str::to_string),
        );
    }
    let mut quoted = format!(
        "server log ({}): {} lines about the server's own trouble (the first {} here):\n",
        log_dir.display(),
        lines.len(),
        lines.len().min(LOG_LINES_QUOTED)
    );
    for line in lines.iter().take(LOG_LINES_QUOTED) {
        writeln!(quoted, "{line}").unwrap();
    }
    quoted
}
