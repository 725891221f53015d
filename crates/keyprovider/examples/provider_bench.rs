//! Key providers side by side in one run: unwrap latency and throughput through the
//! `KeyEncryptionKey` trait (what every key check and every start does) for the
//! Azure-compatible vault (`pgcmk vault serve`, release build, RSA-3072 over HTTPS,
//! as a software key and as an RSA-HSM key in the vault's SoftHSM2 token), a PKCS#11 token (SoftHSM2, RSA-3072, in-process module) and a KMIP server
//! (PyKMIP, AES-256-GCM over TLS), at 1 and 4 concurrent callers; then the key work of
//! a server create per provider (describe + wrap + unwrap, the median of 5).
//!
//! `cargo run --release -p pgcmk-keyprovider --example provider_bench -- [--seconds S]`
//! (bench/providers/run.sh runs exactly this).

#[path = "common/cpu.rs"]
mod cpu;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use pgcmk_crypto::{Dek, SecretBytes};
use pgcmk_keyprovider::akv::{
    AkvClient, AkvKek, AkvKeyReference, ClientOptions, NewRsaKey, TokenSource,
};
use pgcmk_keyprovider::kmip::{KmipKek, KmipKeyReference};
use pgcmk_keyprovider::pkcs11::{Pkcs11Kek, Pkcs11KeyReference};
use pgcmk_keyprovider::{KeyEncryptionKey, WrappedDek};
use pgcmk_testkit::kmip::KmipServer;
use pgcmk_testkit::softhsm::{SoftHsm, MODULE};
use support::{pgcmk_binary, VaultService};

const CLIENTS: [usize; 2] = [1, 4];
const PIN: &str = "bench-user-pin";

/// One provider: its name, its KEK, and the pid of the process that does the
/// key's work when it is not this one.
struct Provider {
    name: &'static str,
    kek: Arc<dyn KeyEncryptionKey>,
    server_pid: Option<u32>,
}

fn main() {
    let seconds: f64 = std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .map_or(5.0, |s| s.parse().expect("--seconds takes a number"));
    eprintln!("starting the release vault, a SoftHSM2 token and a PyKMIP server ...");
    // The tokens exist before the vault loads the module; the vault has one of its own.
    let hsm = SoftHsm::start(&["bench", "bench-vault"], PIN);
    let vault_pin = hsm.pin_file("vault.pin", PIN);
    let vault = VaultService::start_with(
        pgcmk_binary(true),
        &[
            "--pkcs11-module",
            MODULE,
            "--pkcs11-token",
            "bench-vault",
            "--pkcs11-pin-file",
            vault_pin.to_str().unwrap(),
        ],
    );
    let identity = vault.create_identity("bench-mi");
    let url = vault.create_vault("benchvault", false);
    vault.set_policy(
        "benchvault",
        &identity.name,
        &["get", "create", "wrapKey", "unwrapKey"],
    );
    let tokens = TokenSource::managed_identity(
        &vault.info.identity_endpoint,
        SecretBytes::new(vault.identity_header(&identity).into_bytes()),
        &identity.client_id,
    )
    .expect("token source");
    let options = ClientOptions::trusting_only(&vault.info.ca_file);
    let client = AkvClient::new(&url, tokens.clone(), &options).expect("vault client");
    client
        .create_rsa_key("kek", &NewRsaKey::new(3072))
        .expect("create the vault key");
    let mut in_token = NewRsaKey::new(3072);
    in_token.hsm = true;
    client
        .create_rsa_key("hsm-kek", &in_token)
        .expect("create the vault's RSA-HSM key");
    let vault_kek = |name: &str| {
        AkvKek::connect(
            AkvKeyReference::parse(&format!("{url}/keys/{name}")).unwrap(),
            tokens.clone(),
            &options,
        )
        .expect("vault KEK")
    };
    let (akv, akv_hsm) = (vault_kek("kek"), vault_kek("hsm-kek"));

    hsm.generate_rsa("bench", PIN, "kek", b"kek", 3072);
    let pkcs11 = Pkcs11Kek::connect(
        Pkcs11KeyReference::parse(&format!(
            "pkcs11:token=bench;object=kek?module-path={MODULE}"
        ))
        .unwrap(),
        SecretBytes::new(PIN.as_bytes().to_vec()),
    )
    .expect("PKCS#11 KEK");

    let kmip = KmipServer::start();
    let uid = kmip.create_key(256, "encrypt,decrypt", true);
    let kmip_kek = KmipKek::connect(
        KmipKeyReference::parse(&kmip.reference(&uid)).unwrap(),
        SecretBytes::new(std::fs::read(&kmip.credential).unwrap()),
    )
    .expect("KMIP KEK");

    let providers = [
        Provider {
            name: "vault (AKV REST, RSA-3072)",
            kek: Arc::new(akv),
            server_pid: Some(vault.pid()),
        },
        Provider {
            name: "vault RSA-HSM (AKV REST, SoftHSM2 RSA-3072)",
            kek: Arc::new(akv_hsm),
            server_pid: Some(vault.pid()),
        },
        Provider {
            name: "PKCS#11 (SoftHSM2, RSA-3072)",
            kek: Arc::new(pkcs11),
            server_pid: None,
        },
        Provider {
            name: "KMIP (PyKMIP, AES-256-GCM)",
            kek: Arc::new(kmip_kek),
            server_pid: Some(kmip.pid()),
        },
    ];
    let ticks = cpu::clock_ticks_per_second();
    let load_before = cpu::load_average();
    let mut rows = Vec::new();
    for p in &providers {
        let create = create_key_work(p.kek.as_ref());
        let wrapped = p.kek.wrap(&Dek::generate().unwrap()).expect("wrap a DEK");
        for clients in CLIENTS {
            eprintln!("{} x{clients} ...", p.name);
            let server_before = p
                .server_pid
                .map(|pid| cpu::cpu_seconds(&pid.to_string(), ticks));
            let self_before = cpu::cpu_seconds("self", ticks);
            let (ops, mut latencies, errors) = unwraps(&p.kek, &wrapped, clients, seconds);
            let per_op = |spent: f64| 1000.0 * spent / ops.max(1) as f64;
            let client_ms = per_op(cpu::cpu_seconds("self", ticks) - self_before);
            let server_ms = p
                .server_pid
                .zip(server_before)
                .map(|(pid, before)| per_op(cpu::cpu_seconds(&pid.to_string(), ticks) - before));
            latencies.sort();
            let pct = |q: f64| {
                latencies
                    .get(
                        ((latencies.len() as f64 * q) as usize)
                            .min(latencies.len().saturating_sub(1)),
                    )
                    .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
            };
            rows.push(format!(
                "| {} | {clients} | {:.0} | {:.2} | {:.2} | {errors} | {} | {client_ms:.2} | {:.0} |",
                p.name,
                ops as f64 / seconds,
                pct(0.5),
                pct(0.99),
                server_ms.map_or("in client".to_string(), |ms| format!("{ms:.2}")),
                create.as_secs_f64() * 1000.0,
            ));
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("\nKey providers, unwrap of a DEK through KeyEncryptionKey::unwrap, {seconds} s per cell, {cores} cores shared by client and servers");
    println!(
        "load average before/after: {load_before} / {}\n",
        cpu::load_average()
    );
    println!("| provider | callers | unwraps/s | p50 ms | p99 ms | errors | server CPU ms/op | client CPU ms/op | create key work ms |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    println!("\ncreate key work = describe + wrap + unwrap of a new DEK (what `server create` asks of the provider), median of 5");
}

/// The median time of the provider's part of a server create.
fn create_key_work(kek: &dyn KeyEncryptionKey) -> Duration {
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let start = Instant::now();
            kek.describe().expect("describe");
            let dek = Dek::generate().unwrap();
            let wrapped = kek.wrap(&dek).expect("wrap");
            kek.unwrap(&wrapped).expect("unwrap");
            start.elapsed()
        })
        .collect();
    times.sort();
    times[2]
}

/// `clients` threads unwrapping `wrapped` for `seconds`: how many succeeded, each
/// one's latency, and how many failed.
fn unwraps(
    kek: &Arc<dyn KeyEncryptionKey>,
    wrapped: &WrappedDek,
    clients: usize,
    seconds: f64,
) -> (usize, Vec<Duration>, usize) {
    let barrier = Arc::new(Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (kek, wrapped, barrier) = (kek.clone(), wrapped.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let end = Instant::now() + Duration::from_secs_f64(seconds);
                let (mut latencies, mut errors) = (Vec::new(), 0);
                while Instant::now() < end {
                    let start = Instant::now();
                    match kek.unwrap(&wrapped) {
                        Ok(_) => latencies.push(start.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in threads {
        let (l, e) = t.join().unwrap();
        all.extend(l);
        errors += e;
    }
    (all.len(), all, errors)
}
