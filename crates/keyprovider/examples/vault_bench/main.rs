//! Key vault benchmark: wrapkey, unwrapkey and sign over HTTPS against a release-built
//! `pgcmk vault serve`, with 1, 8 and 64 concurrent clients, for RSA 2048/3072/4096,
//! printed next to the bare RSA decryption rate of the vault's own library (aws-lc-rs)
//! on all cores; then the vault's RSS while it holds many keys. Every cell is measured
//! in several rounds (bare rate first in each) and reported by its median.
//!
//! `cargo run --release -p pgcmk-keyprovider --example vault_bench -- [--seconds S] [--keys N]`
//! (bench/vault/run.sh runs exactly this). `--rounds` sets the repetitions; `--ops`,
//! `--sizes` and `--clients` take comma-separated lists to run only some cells (quick
//! A/B comparisons).

mod bare_rsa;
#[path = "../common/cpu.rs"]
mod cpu;
#[path = "../common/rss.rs"]
mod rss;
#[path = "../../tests/support/mod.rs"]
mod support;
mod table;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bare_rsa::BareKey;
use cpu::{clock_ticks_per_second, cpu_seconds, load_average};
use pgcmk_crypto::SecretBytes;
use pgcmk_keyprovider::akv::{
    AkvClient, ClientOptions, NewRsaKey, SignatureAlgorithm, TokenSource, WrapAlgorithm,
};
use pgcmk_keyprovider::WrappedDek;
use rss::proc_rss_mib;
use support::{pgcmk_binary, VaultService};
use table::{median_bare, median_cell, Cell, Row};

const SIZES: [u32; 3] = [2048, 3072, 4096];
const CLIENTS: [usize; 3] = [1, 8, 64];
const VAULT: &str = "benchvault";
const IDENTITY: &str = "bench-workload";

struct Settings {
    seconds: f64,
    /// Repetitions of every cell (and of the bare rate); the median is reported.
    rounds: usize,
    keys: usize,
    /// Only the RSS part (creating many keys takes minutes).
    skip_load: bool,
    ops: Vec<Op>,
    sizes: Vec<u32>,
    clients: Vec<usize>,
}

/// A comma-separated list whose items all parse, or the usage message.
fn list<T>(value: &str, flag: &str, parse: impl Fn(&str) -> Option<T>) -> Vec<T> {
    let items: Option<Vec<T>> = value.split(',').map(|v| parse(v.trim())).collect();
    match items {
        Some(items) if !items.is_empty() => items,
        _ => usage(&format!("{flag} got '{value}'")),
    }
}

fn settings() -> Settings {
    let mut s = Settings {
        seconds: 3.0,
        rounds: 3,
        keys: 10_000,
        skip_load: false,
        ops: vec![Op::Wrap, Op::Unwrap, Op::Sign],
        sizes: SIZES.to_vec(),
        clients: CLIENTS.to_vec(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--skip-load" {
            s.skip_load = true;
            continue;
        }
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--seconds" => {
                s.seconds = value
                    .parse()
                    .unwrap_or_else(|_| usage("--seconds takes a number"))
            }
            "--rounds" => {
                s.rounds = value
                    .parse()
                    .ok()
                    .filter(|&r| r > 0)
                    .unwrap_or_else(|| usage("--rounds takes a whole number above 0"))
            }
            "--keys" => {
                s.keys = value
                    .parse()
                    .unwrap_or_else(|_| usage("--keys takes a whole number"))
            }
            "--ops" => {
                s.ops = list(value, flag, |v| {
                    [Op::Wrap, Op::Unwrap, Op::Sign]
                        .into_iter()
                        .find(|op| op.name() == v)
                })
            }
            "--sizes" => {
                s.sizes = list(value, flag, |v| {
                    v.parse().ok().filter(|b| SIZES.contains(b))
                })
            }
            "--clients" => s.clients = list(value, flag, |v| v.parse().ok().filter(|&c| c > 0)),
            other => usage(&format!("unknown option {other}")),
        }
    }
    if !(0.5..=60.0).contains(&s.seconds) {
        usage("--seconds must be between 0.5 and 60");
    }
    s
}

fn usage(why: &str) -> ! {
    eprintln!("vault_bench: {why}\nusage: vault_bench [--seconds S (default 3)] [--rounds R (default 3)] [--keys N (default 10000)] [--skip-load]\n  [--ops wrapkey,unwrapkey,sign] [--sizes 2048,3072,4096] [--clients 1,8,64]");
    std::process::exit(2)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Wrap,
    Unwrap,
    Sign,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Wrap => "wrapkey",
            Op::Unwrap => "unwrapkey",
            Op::Sign => "sign",
        }
    }
}

fn main() {
    let settings = settings();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("building and starting the release vault ...");
    let vault = VaultService::start(pgcmk_binary(true));
    let identity = vault.create_identity(IDENTITY);
    let url = vault.create_vault(VAULT, false);
    vault.set_policy(
        VAULT,
        IDENTITY,
        &["get", "list", "create", "wrapKey", "unwrapKey", "sign"],
    );
    let tokens = TokenSource::managed_identity(
        &vault.info.identity_endpoint,
        SecretBytes::new(vault.identity_header(&identity).into_bytes()),
        &identity.client_id,
    )
    .expect("token source");
    let client = Arc::new(
        AkvClient::new(
            &url,
            tokens,
            &ClientOptions::trusting_only(&vault.info.ca_file),
        )
        .expect("vault client"),
    );

    if !settings.skip_load {
        load_table(&vault, &client, &settings, cores);
    }

    rss_with_many_keys(&vault, &client, settings.keys);
}

/// Every op x size x client-count cell, `rounds` times, printed next to the bare rate.
fn load_table(vault: &VaultService, client: &Arc<AkvClient>, settings: &Settings, cores: usize) {
    let seconds = settings.seconds;
    let clock_ticks = clock_ticks_per_second();
    let load_before = load_average();
    let mut rows = Vec::new();
    for &size in &settings.sizes {
        let name = format!("bench-rsa{size}");
        client
            .create_rsa_key(&name, &NewRsaKey::new(size))
            .expect("create bench key");
        let wrapped = client
            .wrap_key(&name, None, WrapAlgorithm::RsaOaep256, &[7u8; 32])
            .expect("wrap a DEK");
        let bare_key = BareKey::generate(size);
        let cells: Vec<(Op, usize)> = settings
            .ops
            .iter()
            .flat_map(|&op| settings.clients.iter().map(move |&c| (op, c)))
            .collect();
        let mut bare_rounds = Vec::new();
        let mut fifo_rounds = Vec::new();
        let most_clients = settings.clients.iter().copied().max().unwrap_or(1);
        let mut cell_rounds = vec![Vec::new(); cells.len()];
        for round in 1..=settings.rounds {
            // Measured right before this round's cells, so both see the same machine.
            eprintln!(
                "round {round}: aws-lc RSA-OAEP-256 decrypt on {cores} threads, RSA-{size} ..."
            );
            bare_rounds.push(bare_key.measure(cores, seconds, clock_ticks));
            if settings.ops.contains(&Op::Unwrap) {
                eprintln!("round {round}: a FIFO queue of bare decrypts, {most_clients} clients, RSA-{size} ...");
                fifo_rounds.push(bare_key.fifo_tail(most_clients, cores, seconds));
            }
            for (&(op, clients), samples) in cells.iter().zip(&mut cell_rounds) {
                eprintln!("round {round}: {} RSA-{size} x{clients} ...", op.name());
                let probe = CpuProbe::start(vault.pid(), clock_ticks);
                let mut cell = run_cell(client, &name, &wrapped, op, clients, seconds);
                probe.finish(&mut cell);
                samples.push(cell);
            }
        }
        let bare = median_bare(&bare_rounds);
        let fifo_tail = table::median(fifo_rounds);
        for (&(op, clients), samples) in cells.iter().zip(&cell_rounds) {
            rows.push(Row {
                op,
                size,
                clients,
                cell: median_cell(samples),
                bare,
                fifo_tail,
            });
        }
    }

    table::print(&rows, settings, cores, &load_before);
}

/// Runs `clients` threads issuing `op` back to back for `seconds`, after each has
/// done one untimed request (connection and token set up).
fn run_cell(
    client: &Arc<AkvClient>,
    name: &str,
    wrapped: &WrappedDek,
    op: Op,
    clients: usize,
    seconds: f64,
) -> Cell {
    let barrier = Arc::new(Barrier::new(clients + 1));
    let errors = Arc::new(AtomicUsize::new(0));
    let duration = Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (client, barrier, errors) = (
                Arc::clone(client),
                Arc::clone(&barrier),
                Arc::clone(&errors),
            );
            let (name, wrapped) = (name.to_string(), wrapped.clone());
            std::thread::spawn(move || {
                let call = || match op {
                    Op::Wrap => client
                        .wrap_key(&name, None, WrapAlgorithm::RsaOaep256, &[7u8; 32])
                        .map(drop),
                    Op::Unwrap => client.unwrap_key(&wrapped).map(drop),
                    Op::Sign => client
                        .sign(&name, None, SignatureAlgorithm::Rs256, &[9u8; 32])
                        .map(drop),
                };
                let _ = call();
                barrier.wait();
                let end = Instant::now() + duration;
                let mut latencies = Vec::new();
                while Instant::now() < end {
                    let started = Instant::now();
                    match call() {
                        Ok(()) => latencies.push(started.elapsed()),
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("  first error: {e}");
                            }
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let mut latencies: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    Cell {
        ops_per_sec: latencies.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors: errors.load(Ordering::Relaxed),
        requests: latencies.len() + clients,
        vault_cpu_ms: f64::NAN,
        client_cpu_ms: f64::NAN,
    }
}

/// CPU time of the vault and of this process across one cell.
struct CpuProbe {
    vault_pid: u32,
    ticks: f64,
    vault_before: f64,
    self_before: f64,
}

impl CpuProbe {
    fn start(vault_pid: u32, ticks: f64) -> Self {
        Self {
            vault_pid,
            ticks,
            vault_before: cpu_seconds(&vault_pid.to_string(), ticks),
            self_before: cpu_seconds("self", ticks),
        }
    }

    fn finish(self, cell: &mut Cell) {
        let per_op = |spent: f64| 1000.0 * spent / cell.requests.max(1) as f64;
        cell.vault_cpu_ms =
            per_op(cpu_seconds(&self.vault_pid.to_string(), self.ticks) - self.vault_before);
        cell.client_cpu_ms = per_op(cpu_seconds("self", self.ticks) - self.self_before);
    }
}

/// Creates keys up to `total` (RSA-2048, 8 creators) and reports the vault's RSS at
/// checkpoints, and how long creation took.
fn rss_with_many_keys(vault: &VaultService, client: &Arc<AkvClient>, total: usize) {
    if total == 0 {
        return;
    }
    let pid = vault.pid();
    let created = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let checkpoints: Vec<usize> = [0, 1_000, 2_500, 5_000, 10_000, total]
        .into_iter()
        .filter(|&c| c <= total)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    println!("\nVault RSS while holding RSA-2048 keys (created with 8 concurrent clients):\n");
    println!("| keys | RSS MiB | peak RSS MiB | creation time s |");
    println!("|---|---|---|---|");
    let mut done = 0;
    for checkpoint in checkpoints {
        let batch = checkpoint - done;
        let next = Arc::new(AtomicUsize::new(done));
        let creators: Vec<_> = (0..8.min(batch.max(1)))
            .map(|_| {
                let (client, next, created) =
                    (Arc::clone(client), Arc::clone(&next), Arc::clone(&created));
                std::thread::spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= checkpoint {
                        break;
                    }
                    client
                        .create_rsa_key(&format!("many-{i}"), &NewRsaKey::new(2048))
                        .expect("create key");
                    let n = created.fetch_add(1, Ordering::Relaxed) + 1;
                    if n % 500 == 0 {
                        eprintln!(
                            "  {n} keys created ({:.0} s)",
                            started.elapsed().as_secs_f64()
                        );
                    }
                })
            })
            .collect();
        for c in creators {
            c.join().expect("creator");
        }
        done = checkpoint;
        let (rss, hwm) = proc_rss_mib(pid);
        println!(
            "| {checkpoint} | {rss:.1} | {hwm:.1} | {:.0} |",
            started.elapsed().as_secs_f64()
        );
    }
    let (rss, _) = proc_rss_mib(pid);
    let verdict = if total >= 10_000 && rss <= 100.0 {
        "met"
    } else if total < 10_000 {
        "not measured at 10,000"
    } else {
        "MISSED"
    };
    println!("\n- RSS with {total} keys = {rss:.1} MiB (target <= 100 MiB with 10,000): {verdict}");
}
