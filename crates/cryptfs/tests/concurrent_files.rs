//! Files stay apart under concurrency: processes and threads creating, writing, syncing,
//! truncating, renaming and unlinking files while others hold them open (as PostgreSQL's
//! backends do), each checked against a model of what every file must contain. The same
//! run must pass on a plain directory, which shows the model itself is right.

mod churn;
mod real_support;

use churn::Plan;
use real_support::{CryptMount, TestDir};

/// 6 processes x 2 threads: more than the request threads, so requests queue and
/// interleave as they do under PostgreSQL's backends.
fn plan() -> Plan {
    Plan::from_env(6, 2, 12)
}

/// Enough happened for the run to mean something.
fn assert_worked(stats: &churn::worker::Stats) {
    assert!(stats.creates >= 200, "too few files created: {stats:?}");
    assert!(
        stats.unlinks_while_open >= 20,
        "too few unlinks while open: {stats:?}"
    );
    assert!(
        stats.renames_over >= 20,
        "too few renames over files: {stats:?}"
    );
    assert!(
        stats.foreign_checks >= 50,
        "too few reads of held files: {stats:?}"
    );
}

#[test]
fn files_stay_apart_on_cryptfs() {
    let _serial = real_support::serial();
    let dir = TestDir::new();
    let mount = CryptMount::new(&dir);
    let work = mount.plain().join("base");
    std::fs::create_dir(&work).expect("mkdir on the mount");
    let stats = churn::run(&work, &plan());
    assert_worked(&stats);
    // Every worker removed its files at the end: nothing is left behind in the cipher
    // directory either (an unlinked file stayed open in no one).
    let left: Vec<_> = std::fs::read_dir(mount.cipher().join("base"))
        .expect("cipher dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

#[test]
fn files_stay_apart_on_a_plain_directory() {
    let _serial = real_support::serial();
    let dir = TestDir::new();
    let stats = churn::run(dir.path(), &plan());
    assert_worked(&stats);
}

/// One worker process of the runs above (started by `churn::run`, not on its own).
#[test]
#[ignore = "a worker process of the churn tests; started by them with CHURN_* set"]
fn churn_worker_process() {
    churn::worker_process();
}
