//! Key vault benchmark: wrapkey, unwrapkey and sign over HTTPS against a release-built
//! `pgcmk vault serve`, with 1, 8 and 64 concurrent clients, for RSA 2048/3072/4096,
//! printed next to `openssl speed -multi N` (N = cores) run in the same process tree;
//! then the vault's RSS while it holds many keys.
//!
//! `cargo run --release -p pgcmk-keyprovider --example vault_bench -- [--seconds S] [--keys N]`
//! (bench/vault/run.sh runs exactly this). `--ops`, `--sizes` and `--clients` take
//! comma-separated lists to run only some cells (quick A/B comparisons).

#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/rss.rs"]
mod rss;
#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cpu::{clock_ticks_per_second, cpu_seconds, load_average};
use pgcmk_crypto::SecretBytes;
use pgcmk_keyprovider::akv::{
    AkvClient, ClientOptions, NewRsaKey, SignatureAlgorithm, TokenSource, WrapAlgorithm,
};
use pgcmk_keyprovider::WrappedDek;
use rss::proc_rss_mib;
use support::{pgcmk_binary, VaultService};

const SIZES: [u32; 3] = [2048, 3072, 4096];
const CLIENTS: [usize; 3] = [1, 8, 64];
const VAULT: &str = "benchvault";
const IDENTITY: &str = "bench-workload";

struct Settings {
    seconds: f64,
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
    eprintln!("vault_bench: {why}\nusage: vault_bench [--seconds S (default 3)] [--keys N (default 10000)] [--skip-load]\n  [--ops wrapkey,unwrapkey,sign] [--sizes 2048,3072,4096] [--clients 1,8,64]");
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
    /// Requests the CPU columns are divided by: the timed ones plus one warm-up per client.
    requests: usize,
    /// CPU the vault process spent per completed operation.
    vault_cpu_ms: f64,
    /// CPU this load generator spent per completed operation.
    client_cpu_ms: f64,
}

/// One row of the table: a cell and the openssl rate measured just before its size.
struct Row {
    op: Op,
    size: u32,
    clients: usize,
    cell: Cell,
    openssl: Option<f64>,
    /// The vault's own RSA library, in this process on all cores, no HTTP.
    aws_lc: f64,
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

/// Every op x size x client-count cell, printed next to openssl and aws-lc.
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
        // Measured right before this size's cells, so both see the same machine.
        eprintln!("openssl speed -multi {cores} rsa{size} ...");
        let openssl = openssl_sign_rate(cores, seconds, size);
        eprintln!("aws-lc RSA-OAEP-256 decrypt on {cores} threads, RSA-{size} ...");
        let aws_lc = aws_lc_unwrap_rate(cores, seconds, size);
        for &op in &settings.ops {
            for &clients in &settings.clients {
                eprintln!("{} RSA-{size} x{clients} ...", op.name());
                let probe = CpuProbe::start(vault.pid(), clock_ticks);
                let mut cell = run_cell(client, &name, &wrapped, op, clients, seconds);
                probe.finish(&mut cell);
                rows.push(Row {
                    op,
                    size,
                    clients,
                    cell,
                    openssl,
                    aws_lc,
                });
            }
        }
    }

    println!(
        "\nKey vault over HTTPS (loopback; load generator on the same {cores} cores), {} s per cell",
        seconds
    );
    println!(
        "openssl = `openssl speed -multi {cores} -seconds {} rsaN` private-key rate (sign/s), run just before each size",
    seconds.ceil()
    );
    println!("aws-lc = RSA-OAEP-256 decrypt with aws-lc-rs (the vault's library) on {cores} threads, no HTTP");
    println!(
        "load average before/after: {load_before} / {}\n",
        load_average()
    );
    println!("| op | RSA | clients | ops/s | p50 ms | p99 ms | errors | vault CPU ms/op | client CPU ms/op | openssl sign/s | aws-lc decrypt/s | vault/openssl |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        let cell = &row.cell;
        let (peer, ratio) = match (row.op, row.openssl) {
            (Op::Unwrap | Op::Sign, Some(rate)) => (
                format!("{rate:.0}"),
                format!("{:.0} %", 100.0 * cell.ops_per_sec / rate),
            ),
            (_, Some(rate)) => (format!("{rate:.0}"), "(public-key op)".into()),
            (_, None) => ("n/a".into(), "n/a".into()),
        };
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {peer} | {:.0} | {ratio} |",
            row.op.name(),
            row.size,
            row.clients,
            cell.ops_per_sec,
            cell.p50_ms,
            cell.p99_ms,
            cell.errors,
            cell.vault_cpu_ms,
            cell.client_cpu_ms,
            row.aws_lc,
        );
    }
    check_targets(&rows);
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

/// `openssl speed -multi N -seconds S rsaSIZE`: the sign/s (private-key) column.
fn openssl_sign_rate(cores: usize, seconds: f64, size: u32) -> Option<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-multi", &cores.to_string()])
        .args(["-seconds", &format!("{}", seconds.ceil())])
        .arg(format!("rsa{size}"))
        .output();
    let Ok(out) = out else {
        eprintln!("openssl is not installed: no comparison column");
        return None;
    };
    parse_openssl_speed(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .find_map(|(bits, rate)| (bits == size).then_some(rate))
}

/// RSA-OAEP-256 decryptions per second with aws-lc-rs on `threads` threads: the
/// ceiling for the vault's unwrap, which uses the same library.
fn aws_lc_unwrap_rate(threads: usize, seconds: f64, size: u32) -> f64 {
    use aws_lc_rs::rsa::{
        KeySize, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
        OAEP_SHA256_MGF1SHA256,
    };
    let size = match size {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        _ => KeySize::Rsa4096,
    };
    let private = PrivateDecryptingKey::generate(size).expect("RSA key generation");
    let public = OaepPublicEncryptingKey::new(private.public_key()).expect("public key");
    let mut ciphertext = vec![0; public.ciphertext_size()];
    public
        .encrypt(&OAEP_SHA256_MGF1SHA256, &[7u8; 32], &mut ciphertext, None)
        .expect("encrypt");
    let private = Arc::new(OaepPrivateDecryptingKey::new(private).expect("private key"));
    let ciphertext = Arc::new(ciphertext);
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let done: usize = (0..threads)
        .map(|_| {
            let (private, ciphertext) = (Arc::clone(&private), Arc::clone(&ciphertext));
            std::thread::spawn(move || {
                let mut out = vec![0; private.min_output_size()];
                let mut n = 0;
                while Instant::now() < end {
                    private
                        .decrypt(&OAEP_SHA256_MGF1SHA256, &ciphertext, &mut out, None)
                        .expect("decrypt");
                    n += 1;
                }
                n
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("decrypt thread"))
        .sum();
    done as f64 / started.elapsed().as_secs_f64()
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

fn check_targets(rows: &[Row]) {
    println!("\nTargets:");
    for row in rows
        .iter()
        .filter(|r| r.op == Op::Unwrap && r.clients == 64)
    {
        if let Some(rate) = row.openssl {
            let pct = 100.0 * row.cell.ops_per_sec / rate;
            let verdict = if pct >= 70.0 { "met" } else { "MISSED" };
            println!(
                "- RSA-{} unwrap at 64 clients = {pct:.0} % of openssl (target >= 70 %): {verdict}",
                row.size
            );
        }
        if row.size == 2048 {
            let verdict = if row.cell.p99_ms <= 25.0 {
                "met"
            } else {
                "MISSED"
            };
            println!(
                "- RSA-2048 unwrap p99 at 64 clients = {:.2} ms (target <= 25 ms): {verdict}",
                row.cell.p99_ms
            );
        }
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
