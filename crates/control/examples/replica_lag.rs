//! Read replica lag benchmark (bench/ha/replica_lag.sh): a service-managed source
//! and a read replica of it (each on its own cryptfs volume, streaming over TLS),
//! pgbench TPC-B -c4 on the source, and the replica's replay lag as the source's
//! `pg_stat_replication` reports it, sampled every 100 ms: p50, p99 and max, in
//! seconds and in bytes of WAL behind; beside them the source's TPS and the
//! machine's CPU seconds per transaction.
//!
//! Options: --scale N (10), --secs S (60).

#[path = "../tests/support/mod.rs"]
mod support;

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::cpu::machine_cpu;
use support::*;

const BIN: &str = "/usr/lib/postgresql/15/bin";
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

fn parse_args() -> (u32, u32) {
    let (mut scale, mut secs) = (10, 60);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--scale" => scale = value.parse().expect("--scale N"),
            "--secs" => secs = value.parse().expect("--secs S"),
            other => panic!("unknown option {other}: use --scale N --secs S"),
        }
    }
    (scale, secs)
}

fn pgbench(server: &Created, args: &[&str]) -> Command {
    let mut cmd = Command::new(format!("{BIN}/pgbench"));
    cmd.args(args)
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
        .args(["-U", "postgres", "postgres"])
        .env("PGPASSWORD", &server.password)
        .env("PGSSLMODE", "require");
    cmd
}

/// The `q`-quantile of sorted `values`.
fn quantile(values: &[f64], q: f64) -> f64 {
    let i = ((values.len() as f64 - 1.0) * q).round() as usize;
    values.get(i).copied().unwrap_or(f64::NAN)
}

fn main() {
    let (scale, secs) = parse_args();
    let stack = Stack::start(60, 300, None);
    let cp = &stack.cp;
    let source = Created::from(&cp.server(&["create", "--name", "lag-src", "-l", "local"]));
    let init = pgbench(&source, &["-i", "-q", "-s", &scale.to_string()])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let replica = cp.server(&[
        "replica", "create", "--source", "lag-src", "--name", "lag-ro",
    ]);
    let id = replica["id"].as_str().unwrap().to_string();
    let lag = format!(
        "SELECT COALESCE(EXTRACT(epoch FROM replay_lag), 0), \
         pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) \
         FROM pg_stat_replication WHERE application_name = '{id}'"
    );
    let cpu = machine_cpu();
    let started = Instant::now();
    let bench = pgbench(&source, &["-c4", "-j2", "-T", &secs.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (mut seconds, mut bytes) = (Vec::new(), Vec::new());
    while started.elapsed() < Duration::from_secs(u64::from(secs)) {
        if let Ok(row) = source.sql(&lag) {
            if let Some((s, b)) = row.split_once('|') {
                seconds.push(s.parse::<f64>().unwrap_or(f64::NAN));
                bytes.push(b.parse::<f64>().unwrap_or(f64::NAN));
            }
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    let out = bench.wait_with_output().unwrap();
    let cpu = machine_cpu() - cpu;
    let report = String::from_utf8_lossy(&out.stdout);
    let tps: f64 = report
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    for values in [&mut seconds, &mut bytes] {
        values.retain(|v| v.is_finite());
        values.sort_by(f64::total_cmp);
    }
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("replica lag under pgbench TPC-B -c4 -j2, scale {scale}, {secs} s");
    println!(
        "  samples {} (every {SAMPLE_EVERY:?}); replay lag s: p50 {:.3} p99 {:.3} max {:.3}",
        seconds.len(),
        quantile(&seconds, 0.5),
        quantile(&seconds, 0.99),
        quantile(&seconds, 1.0)
    );
    println!(
        "  WAL bytes behind: p50 {:.0} p99 {:.0} max {:.0}",
        quantile(&bytes, 0.5),
        quantile(&bytes, 0.99),
        quantile(&bytes, 1.0)
    );
    println!(
        "  source TPS {tps:.0}; machine CPU {cpu:.1} s ({:.2} ms per transaction); load average {}",
        1000.0 * cpu / (tps * f64::from(secs)),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    cp.server(&["delete", "lag-ro", "--yes"]);
    cp.server(&["delete", "lag-src", "--yes"]);
}
