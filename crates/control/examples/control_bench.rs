//! Control plane benchmark (bench/control/run.sh): with a real vault, cryptfs and
//! PostgreSQL, the median over N runs of
//! - customer-managed server create time,
//! - revoke → connections refused, and re-grant → Ready again,
//! - key rotation (re-wrap of the DEK) on databases of the given sizes,
//!
//! printed next to the targets and the managed-service reference (Azure Database for
//! PostgreSQL documents up to 60 minutes to notice a revoked key and to come back).
//!
//! Options: --runs N (10), --interval S (5), --gb LIST (1,10).

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use pgcmk_testkit::wait::wait_for;
use support::*;

struct Args {
    runs: usize,
    interval: u64,
    sizes_gb: Vec<u64>,
}

fn parse_args() -> Args {
    let mut args = Args {
        runs: 10,
        interval: 5,
        sizes_gb: vec![1, 10],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => args.runs = value.parse().expect("--runs N"),
            "--interval" => args.interval = value.parse().expect("--interval SECONDS"),
            "--gb" => {
                args.sizes_gb = value
                    .split(',')
                    .map(|v| v.parse().expect("--gb 1,10"))
                    .collect()
            }
            other => panic!("unknown option {other}: use --runs N --interval S --gb LIST"),
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

fn main() {
    let args = parse_args();
    let root = scratch();
    let vault = Vault::start(root.path());
    let cp = ControlPlane::start(root.path(), &vault, args.interval, 60);
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
        cp.server(&["delete", &name]);
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
    cp.server(&["delete", "revoke"]);
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
        cp.server(&["delete", &name]);
    }
}
