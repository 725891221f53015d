//! Key vault benchmark: wrapkey, unwrapkey and sign over HTTPS against a release-built
//! `pgcmk vault serve`, with 1, 8 and 64 concurrent clients, for RSA 2048/3072/4096,
//! printed next to `openssl speed -multi N` (N = cores) run in the same process tree;
//! then the vault's RSS while it holds many keys.
//!
//! `cargo run --release -p pgcmk-keyprovider --example vault_bench -- [--seconds S] [--keys N]`
//! (bench/vault/run.sh runs exactly this).

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use pgcmk_crypto::SecretBytes;
use pgcmk_keyprovider::akv::{
    AkvClient, ClientOptions, NewRsaKey, SignatureAlgorithm, TokenSource, WrapAlgorithm,
};
use pgcmk_keyprovider::WrappedDek;
use support::{pgcmk_binary, VaultService};

const SIZES: [u32; 3] = [2048, 3072, 4096];
const CLIENTS: [usize; 3] = [1, 8, 64];
const VAULT: &str = "benchvault";
const IDENTITY: &str = "bench-workload";

struct Settings {
    seconds: f64,
    keys: usize,
}

fn settings() -> Settings {
    let mut s = Settings {
        seconds: 3.0,
        keys: 10_000,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--seconds" => {
                s.seconds = value
                    .parse()
                    .unwrap_or_else(|_| usage("--seconds takes a number"))
            }
            "--keys" => {
                s.keys = value
                    .parse()
                    .unwrap_or_else(|_| usage("--keys takes a whole number"))
            }
            other => usage(&format!("unknown option {other}")),
        }
    }
    if !(0.5..=60.0).contains(&s.seconds) {
        usage("--seconds must be between 0.5 and 60");
    }
    s
}

fn usage(why: &str) -> ! {
    eprintln!("vault_bench: {why}\nusage: vault_bench [--seconds S (default 3)] [--keys N (default 10000)]");
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

/// One table cell's measurements.
struct Cell {
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
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

    eprintln!("running openssl speed -multi {cores} on all cores ...");
    let openssl = openssl_sign_rates(cores, settings.seconds);

    let mut rows = Vec::new();
    for size in SIZES {
        let name = format!("bench-rsa{size}");
        client
            .create_rsa_key(&name, &NewRsaKey::new(size))
            .expect("create bench key");
        let wrapped = client
            .wrap_key(&name, None, WrapAlgorithm::RsaOaep256, &[7u8; 32])
            .expect("wrap a DEK");
        for op in [Op::Wrap, Op::Unwrap, Op::Sign] {
            for clients in CLIENTS {
                eprintln!("{} RSA-{size} x{clients} ...", op.name());
                let cell = run_cell(&client, &name, &wrapped, op, clients, settings.seconds);
                rows.push((op, size, clients, cell));
            }
        }
    }

    println!("\nKey vault over HTTPS (loopback, load generator on the same {cores} cores), {} s per cell", settings.seconds);
    println!("openssl = `openssl speed -multi {cores} -seconds {} rsaN` private-key (sign/s) rate, same run\n", settings.seconds);
    println!("| op | RSA | clients | ops/s | p50 ms | p99 ms | errors | openssl sign/s | vault/openssl |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (op, size, clients, cell) in &rows {
        let peer = openssl.iter().find(|(s, _)| s == size).map(|(_, r)| *r);
        let (peer_text, ratio) = match (op, peer) {
            (Op::Unwrap | Op::Sign, Some(rate)) => (
                format!("{rate:.0}"),
                format!("{:.0} %", 100.0 * cell.ops_per_sec / rate),
            ),
            (_, Some(rate)) => (format!("{rate:.0}"), "(public op)".into()),
            _ => ("n/a".into(), "n/a".into()),
        };
        println!(
            "| {} | {size} | {clients} | {:.0} | {:.2} | {:.2} | {} | {peer_text} | {ratio} |",
            op.name(),
            cell.ops_per_sec,
            cell.p50_ms,
            cell.p99_ms,
            cell.errors
        );
    }
    check_targets(&rows, &openssl);

    rss_with_many_keys(&vault, &client, settings.keys);
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
    }
}

/// `openssl speed -multi N rsa2048 rsa3072 rsa4096`: the sign/s (private-key) column.
fn openssl_sign_rates(cores: usize, seconds: f64) -> Vec<(u32, f64)> {
    let out = Command::new("openssl")
        .args([
            "speed",
            "-multi",
            &cores.to_string(),
            "-seconds",
            &format!("{}", seconds.ceil() as u64),
        ])
        .args(SIZES.map(|s| format!("rsa{s}")))
        .output();
    let Ok(out) = out else {
        eprintln!("openssl is not installed: no comparison column");
        return Vec::new();
    };
    parse_openssl_speed(&String::from_utf8_lossy(&out.stdout))
}

/// Reads rows like `rsa 2048 bits 0.000370s 0.000011s   2704.0  92567.0` under a
/// header naming the columns (`sign verify sign/s verify/s`).
fn parse_openssl_speed(text: &str) -> Vec<(u32, f64)> {
    let mut column = None;
    let mut rates = Vec::new();
    for line in text.lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if let Some(i) = tokens.iter().position(|t| *t == "sign/s") {
            column = Some(i);
        } else if let (Some(i), ["rsa", bits, "bits", values @ ..]) = (column, tokens.as_slice()) {
            if let (Ok(bits), Some(Ok(rate))) =
                (bits.parse(), values.get(i).map(|v| v.parse::<f64>()))
            {
                rates.push((bits, rate));
            }
        }
    }
    rates
}

fn check_targets(rows: &[(Op, u32, usize, Cell)], openssl: &[(u32, f64)]) {
    println!("\nTargets:");
    for (op, size, clients, cell) in rows {
        if *op != Op::Unwrap || *clients != 64 {
            continue;
        }
        if let Some((_, rate)) = openssl.iter().find(|(s, _)| s == size) {
            let pct = 100.0 * cell.ops_per_sec / rate;
            let verdict = if pct >= 70.0 { "met" } else { "MISSED" };
            println!("- RSA-{size} unwrap at 64 clients = {pct:.0} % of openssl (target >= 70 %): {verdict}");
        }
        if *size == 2048 {
            let verdict = if cell.p99_ms <= 25.0 { "met" } else { "MISSED" };
            println!(
                "- RSA-2048 unwrap p99 at 64 clients = {:.2} ms (target <= 25 ms): {verdict}",
                cell.p99_ms
            );
        }
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

/// VmRSS and VmHWM of `pid` in MiB.
fn proc_rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_openssl_3_speed_output() {
        let text = "                  sign    verify    sign/s verify/s\n\
                    rsa 2048 bits 0.000370s 0.000011s   2704.0  92567.0\n\
                    rsa 3072 bits 0.001100s 0.000023s    909.1  43478.3\n";
        assert_eq!(
            super::parse_openssl_speed(text),
            vec![(2048, 2704.0), (3072, 909.1)]
        );
    }
}
