//! The denominator of the vault benchmark: RSA-OAEP-256 decryption with aws-lc-rs, the
//! vault's own RSA library, in this process on every core, with no HTTP. A library of
//! another make (`openssl speed`) is no ceiling for the vault: its RSA code paths differ
//! by key size and version (see bench/RESULTS.md), so only the same library is.

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::rsa::{
    KeySize, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
    OAEP_SHA256_MGF1SHA256,
};

use crate::cpu::cpu_seconds;

/// What bare decryption achieved in one measurement.
#[derive(Clone, Copy)]
pub struct BareRsa {
    /// Decryptions per second on all threads together.
    pub rate: f64,
    /// CPU milliseconds one decryption costs (this process's CPU over the count).
    pub cpu_ms: f64,
}

/// A private key of `bits` and one ciphertext to decrypt with it, made once per size so
/// that every round measures the same key.
pub struct BareKey {
    private: Arc<OaepPrivateDecryptingKey>,
    ciphertext: Arc<Vec<u8>>,
}

impl BareKey {
    pub fn generate(bits: u32) -> Self {
        let size = match bits {
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
        Self {
            private: Arc::new(OaepPrivateDecryptingKey::new(private).expect("private key")),
            ciphertext: Arc::new(ciphertext),
        }
    }

    /// Decrypts back to back on `threads` threads for `seconds`.
    pub fn measure(&self, threads: usize, seconds: f64, ticks: f64) -> BareRsa {
        let cpu_before = cpu_seconds("self", ticks);
        let end = Instant::now() + Duration::from_secs_f64(seconds);
        let started = Instant::now();
        let done: usize = (0..threads)
            .map(|_| {
                let (private, ciphertext) =
                    (Arc::clone(&self.private), Arc::clone(&self.ciphertext));
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
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds("self", ticks) - cpu_before;
        BareRsa {
            rate: done as f64 / elapsed,
            cpu_ms: 1000.0 * cpu / done.max(1) as f64,
        }
    }

    /// The tail of the fairest server this machine can be right now: `clients`
    /// closed-loop threads each hand one decryption at a time to a FIFO queue that
    /// `workers` threads serve (the vault's crypto pool with no HTTP, audit or
    /// anything else), for `seconds`. Returns p99 over the mean latency: what the
    /// machine's own scheduling noise does to a tail that no queue discipline removes.
    pub fn fifo_tail(&self, clients: usize, workers: usize, seconds: f64) -> f64 {
        type Reply = mpsc::SyncSender<()>;
        let (queue, jobs) = mpsc::channel::<Reply>();
        let jobs = Arc::new(Mutex::new(jobs));
        let servers: Vec<_> = (0..workers)
            .map(|_| {
                let (private, ciphertext, jobs) = (
                    Arc::clone(&self.private),
                    Arc::clone(&self.ciphertext),
                    Arc::clone(&jobs),
                );
                std::thread::spawn(move || {
                    let mut out = vec![0; private.min_output_size()];
                    loop {
                        let next = jobs.lock().expect("queue").recv();
                        let Ok(reply) = next else { return };
                        private
                            .decrypt(&OAEP_SHA256_MGF1SHA256, &ciphertext, &mut out, None)
                            .expect("decrypt");
                        let _ = reply.send(());
                    }
                })
            })
            .collect();
        let end = Instant::now() + Duration::from_secs_f64(seconds);
        let mut latencies: Vec<f64> = (0..clients)
            .map(|_| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    let (reply, answer) = mpsc::sync_channel(1);
                    let mut latencies = Vec::new();
                    while Instant::now() < end {
                        let started = Instant::now();
                        queue.send(reply.clone()).expect("queue");
                        answer.recv().expect("answer");
                        latencies.push(started.elapsed().as_secs_f64());
                    }
                    latencies
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .flat_map(|t| t.join().expect("client thread"))
            .collect();
        drop(queue);
        for server in servers {
            server.join().expect("server thread");
        }
        latencies.sort_by(f64::total_cmp);
        let mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
        let p99 = latencies[((latencies.len() as f64 * 0.99) as usize).min(latencies.len() - 1)];
        p99 / mean
    }
}
