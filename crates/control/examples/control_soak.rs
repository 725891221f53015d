//! Control plane soak (bench/control/soak.sh): a real vault, a control plane and N
//! customer-managed servers (default 20) for M minutes (default 30) under pgbench
//! (rate-limited per server) while, on a schedule, one server's key access is revoked
//! and given back (every 2 minutes) and another's key rotated (every 3 minutes).
//! Beside pgbench, a ledger writer per server inserts one row a second and remembers
//! every insert PostgreSQL acknowledged.
//!
//! Printed once a minute: servers by state, revoke → refused and grant → Ready times,
//! pgbench transactions, acknowledged ledger rows, and the RSS of the control plane,
//! of the agents (sum and largest) and of the vault. At the end: every server Ready,
//! and every acknowledged ledger row present ("no acknowledged commit lost").
//!
//! Options: --servers N (20), --minutes M (30), --tps T per server (5).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pgcmk_testkit::wait::wait_for;
use support::*;

const PGBENCH: &str = "/usr/lib/postgresql/15/bin/pgbench";
const INTERVAL: u64 = 5;
const GRACE: u64 = 60;

struct Args {
    servers: usize,
    minutes: u64,
    tps: u32,
}

fn parse_args() -> Args {
    let mut args = Args {
        servers: 20,
        minutes: 30,
        tps: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--servers" => args.servers = value.parse().expect("--servers N"),
            "--minutes" => args.minutes = value.parse().expect("--minutes M"),
            "--tps" => args.tps = value.parse().expect("--tps T"),
            other => panic!("unknown option {other}: use --servers N --minutes M --tps T"),
        }
    }
    args
}

/// One server under load, with what its clients saw.
struct Loaded {
    server: Created,
    key: CustomerKey,
    /// Ledger ids PostgreSQL acknowledged.
    acked: Mutex<Vec<u64>>,
    transactions: AtomicU64,
}

/// Inserts one ledger row a second until `stop`, remembering the acknowledged ones.
fn ledger_writer(s: &Loaded, stop: &AtomicBool) {
    let mut next = 0u64;
    while !stop.load(Ordering::Relaxed) {
        next += 1;
        if s.server
            .sql(&format!("insert into ledger values ({next})"))
            .is_ok()
        {
            s.acked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(next);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Runs pgbench a minute at a time at `tps` until `stop`, counting transactions.
fn pgbench_loop(s: &Loaded, tps: u32, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let out = Command::new(PGBENCH)
            .args(["-n", "-c", "1", "-T", "60", "-R", &tps.to_string()])
            .args(["-h", "127.0.0.1", "-p", &s.server.port.to_string()])
            .args(["-U", "postgres", "postgres"])
            .env("PGPASSWORD", &s.server.password)
            .stderr(Stdio::null())
            .output()
            .expect("pgbench");
        let text = String::from_utf8_lossy(&out.stdout);
        let done = text
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|v| v.split('/').next()?.trim().parse().ok())
            .unwrap_or(0);
        s.transactions.fetch_add(done, Ordering::Relaxed);
        if done == 0 {
            // Refused (the server is locked): try again shortly.
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

/// VmRSS of `pid` in MiB (0 when gone).
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn states(stack: &Stack) -> BTreeMap<String, usize> {
    let mut by_state = BTreeMap::new();
    for s in stack.cp.server(&["list"]).as_array().unwrap() {
        *by_state
            .entry(s["state"].as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    by_state
}

fn main() {
    let args = parse_args();
    let stack = Stack::start(INTERVAL, GRACE, None);
    eprintln!("creating {} customer-managed servers ...", args.servers);
    let servers: Vec<Arc<Loaded>> = (0..args.servers)
        .map(|i| {
            let name = format!("soak{i:02}");
            let key = stack.vault.customer_key(&name);
            let server = Created::from(&stack.cp.create_with(&name, &key, &versionless(&key.kid)));
            server
                .sql("create table ledger (id bigint primary key)")
                .unwrap();
            let init = Command::new(PGBENCH)
                .args(["-i", "-q", "-s", "1", "-h", "127.0.0.1", "-p"])
                .arg(server.port.to_string())
                .args(["-U", "postgres", "postgres"])
                .env("PGPASSWORD", &server.password)
                .output()
                .expect("pgbench -i");
            assert!(init.status.success(), "pgbench -i on {name}");
            Arc::new(Loaded {
                server,
                key,
                acked: Mutex::new(Vec::new()),
                transactions: AtomicU64::new(0),
            })
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for s in &servers {
        for pgbench in [false, true] {
            let (s, stop, tps) = (s.clone(), stop.clone(), args.tps);
            threads.push(std::thread::spawn(move || {
                if pgbench {
                    pgbench_loop(&s, tps, &stop);
                } else {
                    ledger_writer(&s, &stop);
                }
            }));
        }
    }

    println!(
        "\nControl plane soak: {} customer-managed servers, pgbench -c1 -R {} each, key check every {INTERVAL} s; \
         a revoke + grant every 2 min, a rotation every 3 min\n",
        args.servers, args.tps
    );
    println!("| minute | states | event | pgbench tx | ledger acks | control plane RSS MiB | agents RSS MiB (sum / max) | vault RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|");
    let started = Instant::now();
    for minute in 1..=args.minutes {
        let mut event = String::new();
        let target = &servers[(minute as usize) % servers.len()];
        if minute % 2 == 0 {
            let t = Instant::now();
            stack.vault.revoke(&target.key.vault, &target.key.identity);
            wait_for(
                "refused after the revoke",
                Duration::from_secs(INTERVAL + 30),
                || target.server.sql("select 1").is_err(),
            );
            let refused = t.elapsed();
            stack.vault.grant(
                &target.key.vault,
                &target.key.identity,
                &["get", "wrapKey", "unwrapKey"],
            );
            let t = Instant::now();
            wait_for(
                "Ready after the grant",
                Duration::from_secs(INTERVAL + 60),
                || stack.cp.state(&target.server.name).0 == "Ready",
            );
            event = format!(
                "{}: revoke→refused {:.1} s, grant→Ready {:.1} s",
                target.server.name,
                refused.as_secs_f64(),
                t.elapsed().as_secs_f64()
            );
        }
        if minute % 3 == 0 {
            let rotated = &servers[(minute as usize * 7) % servers.len()];
            stack.vault.rotate(&rotated.key);
            event.push_str(&format!(" {} rotated", rotated.server.name));
        }
        let until = started + Duration::from_secs(60 * minute);
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        let agents: Vec<f64> = servers
            .iter()
            .filter_map(|s| agent_pid(&s.server.dir))
            .map(rss_mib)
            .collect();
        println!(
            "| {minute} | {:?} | {event} | {} | {} | {:.1} | {:.1} / {:.1} | {:.1} |",
            states(&stack),
            servers
                .iter()
                .map(|s| s.transactions.load(Ordering::Relaxed))
                .sum::<u64>(),
            servers
                .iter()
                .map(|s| s.acked.lock().unwrap_or_else(PoisonError::into_inner).len())
                .sum::<usize>(),
            rss_mib(stack.cp.pid()),
            agents.iter().sum::<f64>(),
            agents.iter().cloned().fold(0.0, f64::max),
            rss_mib(stack.vault.process.pid()),
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("load thread");
    }

    wait_for(
        "every server Ready",
        Duration::from_secs(INTERVAL + 60),
        || states(&stack).keys().all(|s| s == "Ready"),
    );
    let mut lost = 0;
    for s in &servers {
        let acked = s.acked.lock().unwrap_or_else(PoisonError::into_inner);
        let present: Vec<u64> = s
            .server
            .sql("select id from ledger")
            .unwrap()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        let present: std::collections::HashSet<u64> = present.into_iter().collect();
        lost += acked.iter().filter(|id| !present.contains(id)).count();
    }
    println!(
        "\n- every server Ready at the end; acknowledged ledger rows lost: {lost} (target 0): {}",
        if lost == 0 { "met" } else { "MISSED" }
    );
}
