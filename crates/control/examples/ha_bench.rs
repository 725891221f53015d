//! High-availability benchmark (bench/ha/run.sh), side by side in one run:
//!
//! - failovers of a highly available pgcmk server while a client inserts through
//!   its connection string: the primary node frozen (a host gone), then killed
//!   (-9) once the standby took over, and brought back by the control plane; the
//!   time from the freeze to the first write the new primary acknowledged, median
//!   of N; lost acknowledged commits; how each returning primary rejoined (rewind
//!   or new clone, from the nodes' Patroni logs);
//! - pgbench TPC-B (-c4 -j2) on that server's primary next to the same Patroni
//!   setup (the same configuration generator, the same etcd cluster, synchronous
//!   mode) on plain directories, with the CPU seconds of each setup's processes
//!   (agents, Patroni, PostgreSQL) per 1,000 transactions.
//!
//! Options: --failovers N (10), --scale S (10), --tpcb-secs T (60), --quick (3
//! failovers, scale 2, 15 s).

#[path = "../tests/support/mod.rs"]
mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgcmk_agent::contract::HaNode;
use pgcmk_agent::patroni::config::{NodePasswords, NodePlaces, PatroniConfig};
use pgcmk_testkit::process::{children_of, terminate};
use pgcmk_testkit::wait::wait_for;
use support::ha::{lose_primary, lost, AckedInserts, HaServer, Rejoins};
use support::*;

const BIN: &str = "/usr/lib/postgresql/15/bin";
const REJOIN: Duration = Duration::from_secs(180);

struct Args {
    failovers: usize,
    scale: u32,
    tpcb_secs: u32,
}

fn parse_args() -> Args {
    let words: Vec<String> = std::env::args().skip(1).collect();
    let quick = words.iter().any(|w| w == "--quick");
    let value = |flag: &str, default: u32| -> u32 {
        match words.iter().position(|w| w == flag) {
            Some(at) => words
                .get(at + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a whole number")),
            None => default,
        }
    };
    Args {
        failovers: value("--failovers", if quick { 3 } else { 10 }) as usize,
        scale: value("--scale", if quick { 2 } else { 10 }),
        tpcb_secs: value("--tpcb-secs", if quick { 15 } else { 60 }),
    }
}

/// CPU seconds (user + system, with reaped children's) of `roots` and every
/// process under them now.
fn tree_cpu(roots: &[u32]) -> f64 {
    let mut total = 0.0;
    let mut stack = roots.to_vec();
    while let Some(pid) = stack.pop() {
        if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
            let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
            // utime, stime, cutime, cstime: fields 14-17 of the whole line.
            total += f[11..15]
                .iter()
                .map(|v| v.parse::<f64>().unwrap())
                .sum::<f64>();
        }
        stack.extend(children_of(pid));
    }
    total / 100.0
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs pgbench against the libpq URI `uri`; its output.
fn pgbench(uri: &str, password: &str, args: &[&str]) -> String {
    let out = Command::new(format!("{BIN}/pgbench"))
        .args(args)
        .arg(uri)
        .env("PGPASSWORD", password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pgbench {args:?} on {uri}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tps_of(report: &str) -> f64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench's report:\n{report}"))
}

/// The same Patroni setup as a highly available server's nodes, on plain
/// directories: two nodes on 127.0.0.4 and 127.0.0.5, over the same etcd cluster.
struct PlainPair {
    root: PathBuf,
    patronis: Vec<Child>,
    nodes: Vec<(String, u64, u16)>,
    password: String,
}

impl PlainPair {
    fn start(root: &Path, etcd_endpoints: Vec<String>) -> Self {
        let password = "plain-bench-password".to_string();
        let mut pair = Self {
            root: root.to_path_buf(),
            patronis: Vec::new(),
            nodes: Vec::new(),
            password,
        };
        for i in 1..=2 {
            let address = format!("127.0.0.{}", i + 3);
            let dir = root.join(format!("node{i}"));
            for sub in ["pgdata", "run", "log"] {
                fs::create_dir_all(dir.join(sub)).unwrap();
            }
            let node = HaNode {
                scope: format!("plain-bench-{}", std::process::id()),
                name: format!("plain-{i}"),
                address: address.clone(),
                rest_port: free_port(),
                etcd_endpoints: etcd_endpoints.clone(),
                // No TLS on the plain pair: no CA to verify against.
                ca_file: PathBuf::new(),
                adopted: false,
            };
            let port = free_port();
            let places = NodePlaces {
                data_dir: dir.join("pgdata"),
                socket_dir: dir.join("run"),
                pgpass: dir.join("pgpass"),
                log_dir: dir.join("log"),
                bin_dir: BIN.into(),
                port,
            };
            let passwords = NodePasswords {
                superuser: Some(&pair.password),
                replication: "plain-bench-replication",
            };
            let config = dir.join("patroni.yml");
            fs::write(
                &config,
                serde_json::to_vec(&PatroniConfig::new(&node, &places, &passwords, &[])).unwrap(),
            )
            .unwrap();
            let chown = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(chown.success());
            fs::set_permissions(dir.join("pgdata"), fs::Permissions::from_mode(0o700)).unwrap();
            let child = Command::new("runuser")
                .args(["-u", "postgres", "--", "/usr/bin/patroni"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            pair.patronis.push(child);
            pair.nodes.push((address, u64::from(port), node.rest_port));
        }
        pair
    }

    /// (primary address, port) once both nodes run, one the synchronous standby.
    fn wait_healthy(&self) -> (String, u64) {
        let mut primary = None;
        wait_for("the plain pair: leader and sync standby", REJOIN, || {
            let (address, _, rest) = &self.nodes[0];
            let cluster: Option<serde_json::Value> =
                reqwest::blocking::get(format!("http://{address}:{rest}/cluster"))
                    .ok()
                    .and_then(|r| r.json().ok());
            let members = cluster
                .as_ref()
                .and_then(|c| c["members"].as_array().cloned())
                .unwrap_or_default();
            let running = |role: &str| {
                members
                    .iter()
                    .find(|m| m["role"] == role && m["state"] == "running")
                    .map(|m| {
                        (
                            m["host"].as_str().unwrap().to_string(),
                            m["port"].as_u64().unwrap(),
                        )
                    })
            };
            if running("sync_standby").is_some() {
                primary = running("leader");
            }
            primary.is_some()
        });
        primary.unwrap()
    }

    /// Patroni's pids (PostgreSQL runs under them).
    fn pids(&self) -> Vec<u32> {
        self.patronis.iter().map(Child::id).collect()
    }
}

impl Drop for PlainPair {
    fn drop(&mut self) {
        for child in &mut self.patronis {
            // runuser's child is Patroni: end it, runuser follows.
            for pid in children_of(child.id()) {
                terminate(pid);
            }
            terminate(child.id());
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn main() {
    let args = parse_args();
    let stack = Stack::start(60, 300, None);
    let cp = &stack.cp;
    println!("load average at start: {}", load_average());
    let created_at = Instant::now();
    let server = HaServer::create(cp, "bench-ha", &[]);
    let (mut primary, _) = server.wait_healthy(cp, REJOIN);
    println!(
        "HA server created and healthy in {:.1} s",
        created_at.elapsed().as_secs_f64()
    );
    server
        .sql("CREATE TABLE acked (id int PRIMARY KEY)")
        .unwrap();

    // Failovers under an insert loop that records acknowledged ids only.
    let inserts = AckedInserts::start(&server, "acked");
    let mut failovers = Vec::new();
    for round in 1..=args.failovers {
        let (took, (new_primary, _)) = lose_primary(cp, &server, &primary, &inserts, REJOIN);
        println!(
            "failover {round}: {} down -> first write on {} after {:.2} s",
            primary.name,
            new_primary.name,
            took.as_secs_f64()
        );
        failovers.push(took.as_secs_f64());
        primary = new_primary;
    }
    let acked = inserts.finish();
    let lost = lost(&server, "acked", &acked).len();
    let nodes = server.nodes(cp);
    let rejoined = Rejoins::of(&nodes);
    failovers.sort_by(f64::total_cmp);
    let median = failovers
        .get(failovers.len() / 2)
        .copied()
        .unwrap_or(f64::NAN);

    // TPC-B: the HA server's primary next to the same Patroni setup on plain directories.
    let etcd_endpoints: Vec<String> = {
        let config: serde_json::Value =
            serde_json::from_slice(&fs::read(nodes[0].dir.join("agent.json")).unwrap()).unwrap();
        serde_json::from_value(config["ha"]["etcd_endpoints"].clone()).unwrap()
    };
    let plain = PlainPair::start(&stack.root.path().join("plain"), etcd_endpoints);
    let (plain_host, plain_port) = plain.wait_healthy();
    let (ha_primary, _) = server.wait_healthy(cp, REJOIN);
    let ha_uri = server.uri_of(&ha_primary);
    let plain_uri =
        format!("postgresql://postgres@{plain_host}:{plain_port}/postgres?sslmode=disable");
    let scale = args.scale.to_string();
    pgbench(&ha_uri, &server.password, &["-i", "-q", "-s", &scale]);
    pgbench(&plain_uri, &plain.password, &["-i", "-q", "-s", &scale]);
    let secs = args.tpcb_secs.to_string();
    let run = ["-c", "4", "-j", "2", "-T", secs.as_str()];
    let ha_roots: Vec<u32> = nodes.iter().filter_map(|n| agent_pid(&n.dir)).collect();
    let mut rows = Vec::new();
    for (what, uri, password, roots) in [
        (
            "pgcmk HA (cryptfs, TLS)",
            &ha_uri,
            server.password.as_str(),
            ha_roots.clone(),
        ),
        (
            "Patroni on plain dirs",
            &plain_uri,
            plain.password.as_str(),
            plain.pids(),
        ),
    ] {
        let load = load_average();
        let cpu = tree_cpu(&roots);
        let report = pgbench(uri, password, &run);
        let cpu = tree_cpu(&roots) - cpu;
        let tps = tps_of(&report);
        let tx = tps * f64::from(args.tpcb_secs);
        rows.push((what, tps, cpu, cpu / tx * 1000.0, load));
    }

    println!();
    println!(
        "HA benchmark: {} failovers, pgbench scale {} -c4 -j2 {} s",
        args.failovers, args.scale, args.tpcb_secs
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!("| failover: node down -> first committed write, median | {median:.2} s |");
    println!(
        "| failover: min / max | {:.2} / {:.2} s |",
        failovers.first().unwrap_or(&f64::NAN),
        failovers.last().unwrap_or(&f64::NAN)
    );
    println!("| acknowledged inserts / lost | {} / {lost} |", acked.len());
    println!(
        "| pg_rewind runs / failed / clones by pg_basebackup (Patroni logs, both nodes) | {} / {} / {} |",
        rejoined.rewinds, rejoined.rewind_failures, rejoined.clones
    );
    println!();
    println!(
        "| setup | TPC-B tps | CPU s (servers' processes) | CPU s / 1000 tx | load avg before |"
    );
    println!("|---|---|---|---|---|");
    for (what, tps, cpu, per, load) in &rows {
        println!("| {what} | {tps:.0} | {cpu:.1} | {per:.2} | {load} |");
    }
    println!();
    println!("Targets:");
    println!(
        "- failover median {median:.2} s (target <= 15 s): {}",
        if median <= 15.0 { "met" } else { "MISSED" }
    );
    println!(
        "- lost acknowledged commits {lost} (target 0): {}",
        if lost == 0 { "met" } else { "MISSED" }
    );
    let ratio = rows[0].1 / rows[1].1 * 100.0;
    println!(
        "- HA TPC-B = {ratio:.0} % of plain HA (target >= 90 %): {}",
        if ratio >= 90.0 { "met" } else { "MISSED" }
    );
    drop(plain);
}
