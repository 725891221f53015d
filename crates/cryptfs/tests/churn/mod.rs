//! Many processes, each with several threads, creating, writing, syncing, truncating,
//! renaming and unlinking files in one directory while holding each other's files open —
//! what PostgreSQL's backends do to a database directory — each checked against a model
//! of what its files must hold (see `content` and `worker`).
//!
//! The runner re-executes this test binary once per process (the ignored test named by
//! [`WORKER_TEST`] with `CHURN_*` variables), bounded in time; every run prints its seed,
//! and `CHURN_SEED=<seed>` replays a run's choices (the interleaving stays the kernel's).

pub mod content;
pub mod rng;
pub mod worker;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use worker::{Stats, Worker};

/// The name of the ignored test that runs one worker process.
pub const WORKER_TEST: &str = "churn_worker_process";

/// How much churn to run.
pub struct Plan {
    pub processes: u32,
    pub threads: u32,
    pub seconds: u64,
    pub seed: u64,
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

impl Plan {
    /// `processes` x `threads` for `seconds`, unless `CHURN_PROCESSES`, `CHURN_THREADS`,
    /// `CHURN_SECONDS` or `CHURN_SEED` say otherwise (the seed defaults to the clock).
    pub fn from_env(processes: u32, threads: u32, seconds: u64) -> Self {
        let clock = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64;
        Self {
            processes: env_u64("CHURN_PROCESSES").map_or(processes, |n| n as u32),
            threads: env_u64("CHURN_THREADS").map_or(threads, |n| n as u32),
            seconds: env_u64("CHURN_SECONDS").unwrap_or(seconds),
            seed: env_u64("CHURN_SEED").unwrap_or(clock),
        }
    }
}

/// A worker process, killed (by its own pid) if the runner gives up on it.
struct WorkerProcess {
    child: Child,
    output: std::path::PathBuf,
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `plan` in `dir` and panics with every violation the workers report; returns the
/// summed counts of what they did.
pub fn run(dir: &Path, plan: &Plan) -> Stats {
    eprintln!(
        "churn: {} processes x {} threads for {} s in {}; replay with CHURN_SEED={}",
        plan.processes,
        plan.threads,
        plan.seconds,
        dir.display(),
        plan.seed
    );
    let logs = tempfile::tempdir().expect("temp dir for worker output");
    let mut workers: Vec<WorkerProcess> = (0..plan.processes)
        .map(|w| {
            let output = logs.path().join(format!("worker-{w}.log"));
            let log = fs::File::create(&output).expect("worker log");
            let child = Command::new(std::env::current_exe().expect("test binary"))
                .args([WORKER_TEST, "--exact", "--ignored", "--nocapture"])
                .env("CHURN_DIR", dir)
                .env("CHURN_WORKER", w.to_string())
                .env("CHURN_THREADS", plan.threads.to_string())
                .env("CHURN_SECONDS", plan.seconds.to_string())
                .env("CHURN_SEED", plan.seed.to_string())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .spawn()
                .expect("spawn worker process");
            WorkerProcess { child, output }
        })
        .collect();
    // Generous: the workers stop on their own at the deadline; a hang is a failure too.
    let give_up = Instant::now() + Duration::from_secs(plan.seconds + 120);
    let mut failures = Vec::new();
    let mut total = Stats::default();
    for (w, worker) in workers.iter_mut().enumerate() {
        let status = loop {
            if let Some(status) = worker.child.try_wait().expect("wait for worker") {
                break Some(status);
            }
            if Instant::now() > give_up {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = fs::read_to_string(&worker.output).unwrap_or_default();
        match status {
            Some(status) if status.success() => match parse_result(&log) {
                Some(stats) => total += stats,
                None => failures.push(format!("worker {w} exited 0 without a result:\n{log}")),
            },
            Some(status) => failures.push(format!("worker {w} failed ({status}):\n{log}")),
            None => failures.push(format!(
                "worker {w} still running after the deadline:\n{log}"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "churn with CHURN_SEED={} in {}:\n{}",
        plan.seed,
        dir.display(),
        failures.join("\n")
    );
    eprintln!("churn: {total:?}");
    total
}

const RESULT: &str = "churn-result";

fn parse_result(log: &str) -> Option<Stats> {
    let line = log.lines().find(|l| l.starts_with(RESULT))?;
    let numbers: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    let [creates, verified_bytes, foreign_checks, unlinks_while_open, renames_over] = numbers[..]
    else {
        return None;
    };
    Some(Stats {
        creates,
        verified_bytes,
        foreign_checks,
        unlinks_while_open,
        renames_over,
    })
}

/// The body of one worker process: its threads run until the deadline; a violation
/// panics (the process exits non-zero) with every thread's report.
pub fn worker_process() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"));
    let dir = std::path::PathBuf::from(var("CHURN_DIR"));
    let worker: u32 = var("CHURN_WORKER").parse().expect("CHURN_WORKER");
    let threads: u32 = var("CHURN_THREADS").parse().expect("CHURN_THREADS");
    let seconds: u64 = var("CHURN_SECONDS").parse().expect("CHURN_SECONDS");
    let seed: u64 = var("CHURN_SEED").parse().expect("CHURN_SEED");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let results: Vec<Result<Stats, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let thread_seed =
                    rng::Rng::new(seed ^ u64::from(worker) << 32 ^ u64::from(t)).next();
                let this = Worker::new(&dir, worker, t, threads, thread_seed);
                s.spawn(move || this.run(deadline))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker thread panicked"))
            .collect()
    });
    let mut total = Stats::default();
    let mut violations = Vec::new();
    for (t, result) in results.into_iter().enumerate() {
        match result {
            Ok(stats) => total += stats,
            Err(violation) => violations.push(format!("thread {t}: {violation}")),
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    println!(
        "{RESULT} {} {} {} {} {}",
        total.creates,
        total.verified_bytes,
        total.foreign_checks,
        total.unlinks_while_open,
        total.renames_over
    );
}
