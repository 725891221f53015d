//! Vault soak: N clients, each with its own token cache and connections (as N agents
//! would be), against a release-built `pgcmk vault serve` for a fixed time. Every
//! client unwraps, with a wrap and a key read in every ten calls; the key is rotated
//! once a minute. Printed once a minute: throughput, p99 latency, errors, the vault's
//! RSS, peak RSS and CPU; halfway the vault is restarted (SIGTERM, start) to see the
//! memory it comes back with; at the end the audit chain is verified.
//!
//! `cargo run --release -p pgcmk-keyprovider --example vault_soak -- [--minutes M]
//! [--clients N] [--rate OPS_PER_SECOND]` (bench/vault/soak.sh runs exactly this).
//! Without `--rate` the clients call as fast as the vault answers.

#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/rss.rs"]
mod rss;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cpu::{clock_ticks_per_second, cpu_seconds, load_average};
use pgcmk_crypto::SecretBytes;
use pgcmk_keyprovider::akv::{AkvClient, ClientOptions, NewRsaKey, TokenSource, WrapAlgorithm};
use rss::proc_rss_mib;
use support::{pgcmk_binary, Identity, VaultService};

const VAULT: &str = "soakvault";
const KEY: &str = "soak-key";
const MINUTE: Duration = Duration::from_secs(60);

struct Settings {
    minutes: u64,
    clients: usize,
    rate: Option<f64>,
}

fn settings() -> Settings {
    let mut s = Settings {
        minutes: 30,
        clients: 64,
        rate: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let (flag, value) = (&pair[0], pair.get(1).map(String::as_str));
        let value = value.unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--minutes" => s.minutes = value.parse().unwrap_or_else(|_| usage("--minutes N")),
            "--clients" => s.clients = value.parse().unwrap_or_else(|_| usage("--clients N")),
            "--rate" => s.rate = Some(value.parse().unwrap_or_else(|_| usage("--rate OPS"))),
            other => usage(&format!("unknown option {other}")),
        }
    }
    if s.minutes < 2 || s.clients == 0 {
        usage("at least 2 minutes and 1 client");
    }
    s
}

fn usage(why: &str) -> ! {
    eprintln!("{why}\nusage: vault_soak [--minutes M] [--clients N] [--rate OPS_PER_SECOND]");
    std::process::exit(2)
}

/// What the clients did in the current minute.
#[derive(Default)]
struct Minute {
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
}

fn client_for(vault: &VaultService, url: &str, identity: &Identity) -> AkvClient {
    let tokens = TokenSource::managed_identity(
        &vault.info.identity_endpoint,
        SecretBytes::new(vault.identity_header(identity).into_bytes()),
        &identity.client_id,
    )
    .expect("token source");
    AkvClient::new(
        url,
        tokens,
        &ClientOptions::trusting_only(&vault.info.ca_file),
    )
    .expect("vault client")
}

fn main() {
    let settings = settings();
    eprintln!("building and starting the release vault ...");
    let mut vault = VaultService::start(pgcmk_binary(true));
    let identity = vault.create_identity("soak-workload");
    let url = vault.create_vault(VAULT, false);
    vault.set_policy(
        VAULT,
        "soak-workload",
        &["get", "create", "rotate", "wrapKey", "unwrapKey"],
    );
    let officer = client_for(&vault, &url, &identity);
    officer
        .create_rsa_key(KEY, &NewRsaKey::new(2048))
        .expect("create the soak key");
    let wrapped = officer
        .wrap_key(KEY, None, WrapAlgorithm::RsaOaep256, &[7u8; 32])
        .expect("wrap a DEK");

    let minute = Arc::new(Mutex::new(Minute::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let pause = settings
        .rate
        .map(|r| Duration::from_secs_f64(settings.clients as f64 / r));
    let workers: Vec<_> = (0..settings.clients)
        .map(|_| {
            let client = client_for(&vault, &url, &identity);
            let (minute, stop, calls, wrapped) =
                (minute.clone(), stop.clone(), calls.clone(), wrapped.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let n = calls.fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    let result = match n % 10 {
                        0 => client
                            .wrap_key(KEY, None, WrapAlgorithm::RsaOaep256, &[9u8; 32])
                            .map(drop),
                        5 => client.get_key(KEY, None).map(drop),
                        _ => client.unwrap_key(&wrapped).map(drop),
                    };
                    let took = started.elapsed();
                    let mut m = minute.lock().unwrap_or_else(PoisonError::into_inner);
                    match result {
                        Ok(()) => m.latencies.push(took),
                        Err(e) => {
                            m.errors += 1;
                            m.first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                    drop(m);
                    if let Some(pause) = pause {
                        std::thread::sleep(pause.saturating_sub(took));
                    }
                }
            })
        })
        .collect();

    let ticks = clock_ticks_per_second();
    let store = vault.data_dir().join("vault.redb");
    let store_mib = || std::fs::metadata(&store).map_or(f64::NAN, |m| m.len() as f64 / 1048576.0);
    println!(
        "\nVault soak: {} clients, {}, RSA-2048 (8 unwraps : 1 wrap : 1 get), a rotation a minute, \
         a restart at minute {}\n",
        settings.clients,
        settings
            .rate
            .map_or("unthrottled".to_string(), |r| format!("{r} calls/s offered")),
        settings.minutes / 2
    );
    println!("| minute | calls/s | p99 ms | errors | vault RSS MiB | peak RSS MiB | vault CPU s | store MiB | load |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut cpu_before = cpu_seconds(&vault.pid().to_string(), ticks);
    for n in 1..=settings.minutes {
        std::thread::sleep(MINUTE);
        let m = std::mem::take(&mut *minute.lock().unwrap_or_else(PoisonError::into_inner));
        let mut latencies = m.latencies;
        latencies.sort_unstable();
        let p99 = latencies
            .get(latencies.len() * 99 / 100)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
        let pid = vault.pid();
        let cpu_now = cpu_seconds(&pid.to_string(), ticks);
        let (rss, peak) = proc_rss_mib(pid);
        println!(
            "| {n} | {:.0} | {p99:.1} | {} | {rss:.1} | {peak:.1} | {:.1} | {:.1} | {} |",
            latencies.len() as f64 / MINUTE.as_secs_f64(),
            m.errors,
            cpu_now - cpu_before,
            store_mib(),
            load_average()
        );
        if let Some(e) = m.first_error {
            eprintln!("  minute {n}, first error: {e}");
        }
        cpu_before = cpu_now;
        if let Err(e) = officer.rotate_key(KEY) {
            eprintln!("  rotation failed: {e}");
        }
        if n == settings.minutes / 2 {
            eprintln!("  restarting the vault ...");
            vault.restart();
            cpu_before = 0.0;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("client");
    }
    let verify = vault.cli(&["audit", "verify"]);
    println!("\n- audit verify: {verify}");
}
