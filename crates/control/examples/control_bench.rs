//! Control plane benchmark (bench/control/run.sh): with a real vault, cryptfs and
//! PostgreSQL, the median over N runs of
//! - customer-managed server create time,
//! - revoke → connections refused, and re-grant → Ready again,
//! - key rotation (re-wrap of the DEK) on databases of the given sizes,
//! - recovery: kill -9 of the agent → Ready, kill -9 of the postmaster → Ready, and a
//!   full reboot (every process killed with -9, vault and control plane started again
//!   with the same arguments) → every server Ready,
//!
//! printed next to the targets and the managed-service reference (Azure Database for
//! PostgreSQL documents up to 60 minutes to notice a revoked key and to come back).
//!
//! Options: --runs N (10), --recovery-runs N (5), --interval S (5), --gb LIST (1,10; '' for
//! none).

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use pgcmk_testkit::wait::wait_for;
use support::*;

struct Args {
    runs: usize,
    recovery_runs: usize,
    interval: u64,
    sizes_gb: Vec<u64>,
}

fn parse_args() -> Args {
    let mut args = Args {
        runs: 10,
        recovery_runs: 5,
        interval: 5,
        sizes_gb: vec![1, 10],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => args.runs = value.parse().expect("--runs N"),
            "--recovery-runs" => args.recovery_runs = value.parse().expect("--recovery-runs N"),
            "--interval" => args.interval = value.parse().expect("--interval SECONDS"),
            "--gb" => {
                args.sizes_gb = value
                    .split(',')
                    .filter(|v| !v.is_empty())
                    .map(|v| v.parse().expect("--gb 1,10 (or '' for no rotation rows)"))
                    .collect()
            }
            other => panic!(
                "unknown option {other}: use --runs N --recovery-runs N --interval S --gb LIST"
            ),
        }
    }
    args
}

/// Prints each row as soon as it is measured, so a long run shows partial results.
struct Rows;

impl Rows {
    fn push(&mut self, r: Row) {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.what,
            r.samples.len(),
            secs(median(&r.samples)),
            secs(*r.samples.iter().min().unwrap()),
            secs(*r.samples.iter().max().unwrap()),
            r.target,
            r.reference
        );
    }
}

struct Row {
    what: String,
    samples: Vec<Duration>,
    target: String,
    reference: &'static str,
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[s.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn status_version(dir: &std::path::Path) -> Option<String> {
    let bytes = std::fs::read(dir.join("status.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["wrapped_by"].as_str().map(str::to_string)
}

/// The postmaster's pid from the agent's report.
fn postmaster_pid(dir: &std::path::Path) -> Option<u32> {
    let bytes = std::fs::read(dir.join("status.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["postgres_pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
}

/// A server the recovery rows break and wait for.
struct Victim {
    name: String,
    dir: std::path::PathBuf,
    port: u64,
    password: String,
}

impl Victim {
    /// Ready in the control plane's eyes, answering SQL, and served by other
    /// processes than `gone` (so a run never counts the processes it just killed).
    fn recovered(&self, cp: &ControlPlane, gone: &[u32]) -> bool {
        let serving = [agent_pid(&self.dir), postmaster_pid(&self.dir)];
        serving
            .iter()
            .all(|pid| pid.is_some_and(|p| !gone.contains(&p)))
            && cp.state(&self.name).0 == "Ready"
            && psql(self.port, &self.password, "SELECT 1").is_ok()
    }
}

/// Times `runs` rounds of `break_it` (returns the pids it killed) until `victim` has
/// recovered.
fn recovery_samples(
    runs: usize,
    limit: Duration,
    cp: &ControlPlane,
    victim: &Victim,
    mut break_it: impl FnMut() -> Vec<u32>,
) -> Vec<Duration> {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            let gone = break_it();
            wait_for("Ready again", limit, || victim.recovered(cp, &gone));
            t.elapsed()
        })
        .collect()
}

fn main() {
    let args = parse_args();
    let root = scratch();
    let mut vault = Vault::start(root.path());
    let mut cp = ControlPlane::start(root.path(), &vault, args.interval, 60);
    let mi = vault.identity("bench-mi");
    vault.keyvault("bench-kv", "westeurope", true);
    vault.grant("bench-kv", &mi, &["get", "wrapKey", "unwrapKey"]);
    let key = versionless(&vault.key("bench-kv", "bench-key", 3072));
    let create = |name: &str| cp.create_cmk(name, &mi, &mi.name, &key).unwrap();
    println!("| measurement | runs | median | min | max | target | managed service |");
    println!("|---|---|---|---|---|---|---|");
    let mut rows = Rows;

    eprintln!("create: {} runs", args.runs);
    let mut samples = Vec::new();
    for i in 0..args.runs {
        let name = format!("create-{i}");
        let t = Instant::now();
        create(&name);
        samples.push(t.elapsed());
        cp.server(&["delete", &name, "--yes"]);
    }
    rows.push(Row {
        what: "server create (customer-managed)".into(),
        samples,
        target: "<= 15 s".into(),
        reference: "-",
    });

    eprintln!("revoke / re-grant: {} runs", args.runs);
    let s = create("revoke");
    let (port, password) = (
        s["server"]["port"].as_u64().unwrap(),
        s["password"].as_str().unwrap().to_string(),
    );
    let (mut refused, mut ready) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let t = Instant::now();
        vault.revoke("bench-kv", &mi);
        wait_for("refused", Duration::from_secs(args.interval + 30), || {
            psql(port, &password, "SELECT 1").is_err()
        });
        refused.push(t.elapsed());
        let t = Instant::now();
        vault.grant("bench-kv", &mi, &["get", "wrapKey", "unwrapKey"]);
        wait_for("Ready", Duration::from_secs(args.interval + 60), || {
            psql(port, &password, "SELECT 1").is_ok()
        });
        ready.push(t.elapsed());
    }
    cp.server(&["delete", "revoke", "--yes"]);
    let i = args.interval;
    rows.push(Row {
        what: format!("revoke -> connections refused ({i} s interval)"),
        samples: refused,
        target: format!("<= {} s", i + 2),
        reference: "up to 60 min",
    });
    rows.push(Row {
        what: format!("re-grant -> Ready ({i} s interval)"),
        samples: ready,
        target: format!("<= {} s", i + 5),
        reference: "up to 60 min",
    });

    for &gb in &args.sizes_gb {
        let name = format!("rotate-{gb}gb");
        eprintln!("rotation on {gb} GB: loading (pgbench -i -s {})", 70 * gb);
        let s = create(&name);
        let port = s["server"]["port"].as_u64().unwrap().to_string();
        let dir = std::path::PathBuf::from(s["server"]["dir"].as_str().unwrap());
        let status = Command::new("/usr/lib/postgresql/15/bin/pgbench")
            .args([
                "-i",
                "-q",
                "-s",
                &(70 * gb).to_string(),
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "postgres",
            ])
            .env("PGPASSWORD", s["password"].as_str().unwrap())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pgbench -i failed");
        let size = psql(
            port.parse().unwrap(),
            s["password"].as_str().unwrap(),
            "SELECT pg_size_pretty(pg_database_size('postgres'))",
        )
        .unwrap();
        eprintln!(
            "rotation on {gb} GB: database is {size}; {} runs",
            args.runs
        );
        let mut samples = Vec::new();
        for _ in 0..args.runs {
            let new = kid_of(&vault.cli(&[
                "key",
                "rotate",
                "--vault",
                "bench-kv",
                "--name",
                "bench-key",
            ]));
            // The re-wrap itself: from the check request to the new wrapping on disk.
            let t = Instant::now();
            cp.server(&["revalidate", &name]);
            wait_for("re-wrap", Duration::from_secs(args.interval + 30), || {
                status_version(&dir).as_deref() == Some(new.as_str())
            });
            samples.push(t.elapsed());
        }
        rows.push(Row {
            what: format!("key rotation, {size} database"),
            samples,
            target: "< 1 s, size-independent".into(),
            reference: "no data rewrite either",
        });
        cp.server(&["delete", &name, "--yes"]);
    }

    eprintln!("recovery: {} runs each", args.recovery_runs);
    let s = create("recovery");
    let victim = Victim {
        name: "recovery".into(),
        dir: std::path::PathBuf::from(s["server"]["dir"].as_str().unwrap()),
        port: s["server"]["port"].as_u64().unwrap(),
        password: s["password"].as_str().unwrap().to_string(),
    };
    let limit = Duration::from_secs(i + 60);
    let samples = recovery_samples(args.recovery_runs, limit, &cp, &victim, || {
        let pid = agent_pid(&victim.dir).expect("a running agent");
        pgcmk_testkit::process::kill9(pid);
        vec![pid]
    });
    rows.push(Row {
        what: format!("kill -9 agent -> Ready ({i} s interval)"),
        samples,
        target: "<= 5 s".into(),
        reference: "-",
    });
    let samples = recovery_samples(args.recovery_runs, limit, &cp, &victim, || {
        let pid = postmaster_pid(&victim.dir).expect("a running postmaster");
        pgcmk_testkit::process::kill9(pid);
        vec![pid]
    });
    rows.push(Row {
        what: format!("kill -9 postmaster -> Ready ({i} s interval)"),
        samples,
        target: "<= 5 s".into(),
        reference: "-",
    });
    let samples = (0..args.recovery_runs)
        .map(|_| {
            let gone = [agent_pid(&victim.dir), postmaster_pid(&victim.dir)];
            let gone: Vec<u32> = gone.into_iter().flatten().collect();
            cp.kill();
            vault.kill();
            crash_server_processes(&victim.dir);
            let t = Instant::now();
            vault.restart();
            cp.start_again();
            wait_for("Ready after the reboot", limit, || {
                victim.recovered(&cp, &gone)
            });
            t.elapsed()
        })
        .collect();
    rows.push(Row {
        what: format!("full reboot (kill -9 of everything) -> Ready ({i} s interval)"),
        samples,
        target: format!("<= {} s", i + 10),
        reference: "-",
    });
    cp.server(&["delete", "recovery", "--yes"]);
}
