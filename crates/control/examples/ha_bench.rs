//! High-availability benchmark (bench/ha/run.sh), side by side in one run:
//!
//! - failovers of a highly available pgcmk server while a client inserts through
//!   its connection string: the primary node frozen (a host gone), then killed
//!   (-9) once the standby took over, and brought back by the control plane; the
//!   time from the freeze to the first write the new primary acknowledged, median
//!   of N; lost acknowledged commits; how each returning primary rejoined (rewind
//!   or new clone, from the nodes' Patroni logs);
//! - pgbench TPC-B (-c4 -j2) on that server's primary next to the same Patroni
//!   setup (the same configuration generator with the same PostgreSQL settings,
//!   the same etcd cluster, synchronous mode, TLS with `verify-full` for clients
//!   and replication under a CA of its own) on plain directories, with the CPU
//!   seconds of each setup's processes (agents, Patroni, PostgreSQL) per 1,000
//!   transactions.
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

use pgcmk_agent::contract::handshake::NodeTls;
use pgcmk_agent::contract::HaNode;
use pgcmk_agent::patroni::config::{Guards, NodePasswords, NodePlaces, PatroniConfig};
use pgcmk_agent::postgres::tls::TlsFiles;
use pgcmk_agent::postgres::PgInstall;
use pgcmk_control::etcd_tls;
use pgcmk_control::standalone_etcd::StandaloneEtcd;
use pgcmk_crypto::sealed::Sealer;
use pgcmk_crypto::SymmetricKey;
use pgcmk_hostkeys::issuing_ca::IssuingCa;
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
/// directories: two nodes on 127.0.0.4 and 127.0.0.5, over the same etcd cluster,
/// with TLS like the server's (a certificate per node from a CA of its own, the
/// agent's `pg_hba` rules: TCP over TLS only).
struct PlainPair {
    root: PathBuf,
    patronis: Vec<Child>,
    nodes: Vec<(String, u64, u16)>,
    password: String,
    ca_file: PathBuf,
    rest: reqwest::blocking::Client,
    etcd: StandaloneEtcd,
}

/// A CA for the plain pair, and a certificate of each node for its address.
struct PlainCa {
    ca: IssuingCa,
    sealer: Sealer,
}

impl PlainCa {
    fn new() -> Self {
        let sealer = Sealer::new(&SymmetricKey::generate().unwrap()).unwrap();
        let ca = IssuingCa::generate("plain pair CA", &sealer).unwrap();
        Self { ca, sealer }
    }

    fn issue(&self, address: &str) -> NodeTls {
        let issued = self
            .ca
            .issue(
                &self.sealer,
                address,
                &[address.to_string()],
                Duration::from_secs(24 * 3600),
            )
            .unwrap();
        NodeTls {
            certificate_pem: issued.certificate_pem,
            key_pem: issued.key_pem,
        }
    }
}

impl PlainPair {
    /// Starts the pair over an etcd cluster of its own.
    fn start(root: &Path) -> Self {
        // An etcd cluster of its own: the control plane's admits only its servers'
        // users, each confined to its own keys. Both sides pay the same consensus.
        let etcd = StandaloneEtcd::start(&root.join("etcd"), Duration::from_secs(60)).unwrap();
        let etcd_endpoints = etcd.endpoints();
        let etcd_ca_file = Some(etcd.ca_file().to_path_buf());
        let client_tls = etcd.client("plain pair").unwrap();
        let etcd_client = (root.join("etcd-client.crt"), root.join("etcd-client.key"));
        fs::write(&etcd_client.0, &client_tls.certificate_pem).unwrap();
        fs::write(&etcd_client.1, client_tls.key_pem.expose_secret()).unwrap();
        fs::set_permissions(&etcd_client.1, fs::Permissions::from_mode(0o600)).unwrap();
        let chown = Command::new("chown")
            .arg("-R")
            .arg("postgres:postgres")
            .arg(root)
            .status()
            .unwrap();
        assert!(chown.success());
        let guards = Guards {
            rest_api_password: "plain-bench-api",
            etcd_client: Some(etcd_client),
            etcd_password: None,
        };
        let password = "plain-bench-password".to_string();
        let ca = PlainCa::new();
        fs::create_dir_all(root).unwrap();
        let ca_file = root.join("ca.pem");
        fs::write(&ca_file, ca.ca.ca_pem().unwrap()).unwrap();
        // Patroni's REST API asks callers for a client certificate of etcd's CA.
        let rest = etcd_tls::client(
            ca.ca.ca_pem().unwrap().as_bytes(),
            &client_tls,
            Duration::from_secs(5),
        )
        .unwrap();
        let install = PgInstall::discover().unwrap();
        let mut pair = Self {
            root: root.to_path_buf(),
            patronis: Vec::new(),
            nodes: Vec::new(),
            password,
            ca_file: ca_file.clone(),
            rest,
            etcd,
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
                ca_file: ca_file.clone(),
                etcd_ca_file: etcd_ca_file.clone(),
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
            let tls = TlsFiles::install(&dir.join("tls"), &ca.issue(&address), install.user())
                .unwrap()
                .settings(&[address.parse().unwrap()]);
            let config = dir.join("patroni.yml");
            fs::write(
                &config,
                serde_json::to_vec(
                    &PatroniConfig::new(&node, &places, &passwords, &tls).guarded(&guards),
                )
                .unwrap(),
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
            let cluster: Option<serde_json::Value> = self
                .rest
                .get(format!("https://{address}:{rest}/cluster"))
                .send()
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

    /// Patroni's pids (with `runuser` above them).
    fn pids(&self) -> Vec<u32> {
        self.patronis.iter().map(Child::id).collect()
    }

    /// The nodes' postmasters (Patroni starts them detached).
    fn postmasters(&self) -> Vec<u32> {
        (1..=self.nodes.len())
            .filter_map(|i| postmaster_of(&self.root.join(format!("node{i}/pgdata"))))
            .collect()
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
        self.etcd.stop();
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// TPC-B runs per setup, alternated.
const ROUNDS: usize = 2;

/// One setup under pgbench: where it is reached, and its processes.
struct Side {
    what: &'static str,
    uri: String,
    password: String,
    /// The processes that supervise PostgreSQL (and, for pgcmk, serve its mount).
    supervisors: Vec<u32>,
    postmasters: Vec<u32>,
}

/// One TPC-B run of one setup.
struct Row {
    what: &'static str,
    tps: f64,
    postgres_cpu: f64,
    supervisor_cpu: f64,
    cpu_per_1000: f64,
    load: String,
}

impl Side {
    fn tpcb(&self, run: &[&str], secs: u32) -> Row {
        let load = load_average();
        let before = (tree_cpu(&self.postmasters), tree_cpu(&self.supervisors));
        let report = pgbench(&self.uri, &self.password, run);
        let postgres_cpu = tree_cpu(&self.postmasters) - before.0;
        let supervisor_cpu = tree_cpu(&self.supervisors) - before.1;
        let tps = tps_of(&report);
        let tx = tps * f64::from(secs);
        Row {
            what: self.what,
            tps,
            postgres_cpu,
            supervisor_cpu,
            cpu_per_1000: (postgres_cpu + supervisor_cpu) / tx * 1000.0,
            load,
        }
    }
}

/// The pid in `data_dir`'s `postmaster.pid`, while it runs.
fn postmaster_of(data_dir: &Path) -> Option<u32> {
    fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
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
    let plain = PlainPair::start(&stack.root.path().join("plain"));
    let (plain_host, plain_port) = plain.wait_healthy();
    let (ha_primary, _) = server.wait_healthy(cp, REJOIN);
    let ha_uri = server.uri_of(&ha_primary);
    let plain_uri = format!(
        "postgresql://postgres@{plain_host}:{plain_port}/postgres?sslmode=verify-full\
         &sslrootcert={}",
        plain.ca_file.display()
    );
    let scale = args.scale.to_string();
    pgbench(&ha_uri, &server.password, &["-i", "-q", "-s", &scale]);
    pgbench(&plain_uri, &plain.password, &["-i", "-q", "-s", &scale]);
    let secs = args.tpcb_secs.to_string();
    let run = ["-c", "4", "-j", "2", "-T", secs.as_str()];
    // The agents (FUSE, crypto) with Patroni under them, and the postmasters
    // (Patroni starts them detached) with their backends.
    let ha_side = Side {
        what: "pgcmk HA (cryptfs, TLS)",
        uri: ha_uri,
        password: server.password.clone(),
        supervisors: nodes.iter().filter_map(|n| agent_pid(&n.dir)).collect(),
        postmasters: nodes
            .iter()
            .filter_map(|n| postmaster_of(&n.dir.join("mnt/pgdata")))
            .collect(),
    };
    let plain_side = Side {
        what: "Patroni on plain dirs (TLS)",
        uri: plain_uri,
        password: plain.password.clone(),
        supervisors: plain.pids(),
        postmasters: plain.postmasters(),
    };
    // Alternated, so that a change of the machine's load meets both setups.
    let mut rows = Vec::new();
    for _ in 0..ROUNDS {
        for side in [&ha_side, &plain_side] {
            rows.push(side.tpcb(&run, args.tpcb_secs));
        }
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
        "| setup | TPC-B tps | CPU s PostgreSQL | CPU s agents + Patroni | CPU s / 1000 tx | \
         load avg before |"
    );
    println!("|---|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {:.0} | {:.1} | {:.1} | {:.2} | {} |",
            row.what, row.tps, row.postgres_cpu, row.supervisor_cpu, row.cpu_per_1000, row.load
        );
    }
    println!();
    println!("Targets:");
    if failovers.is_empty() {
        println!("- failover median: not measured (--failovers 0)");
    } else {
        println!(
            "- failover median {median:.2} s (target <= 15 s): {}",
            if median <= 15.0 { "met" } else { "MISSED" }
        );
    }
    println!(
        "- lost acknowledged commits {lost} (target 0): {}",
        if lost == 0 { "met" } else { "MISSED" }
    );
    let tps = |what: &str| -> f64 { rows.iter().filter(|r| r.what == what).map(|r| r.tps).sum() };
    let ratio = tps(ha_side.what) / tps(plain_side.what) * 100.0;
    println!(
        "- HA TPC-B = {ratio:.0} % of plain HA (target >= 90 %): {}",
        if ratio >= 90.0 { "met" } else { "MISSED" }
    );
    drop(plain);
}
