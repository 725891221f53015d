//! `spike-io`: one I/O pattern on one file, with O_DIRECT so that every call reaches the
//! filesystem (on the spike's mount: one FUSE request per call, or two with a sync), and
//! one `key=value` line out. Used by `bench/cryptfs/uring.sh`.
//!
//! ```text
//! spike-io seq-write  FILE MIB [PID]  1 MiB pwrites, then fsync; MB/s includes the fsync
//! spike-io seq-read   FILE [PID]      1 MiB preads to EOF
//! spike-io rand-read  FILE OPS [JOBS] random 8 KiB-aligned preads: ops/s, p50/p99 latency
//! spike-io rand-write FILE OPS [JOBS] random 8 KiB-aligned pwrites: ops/s, p50/p99 latency
//!                                     (then an untimed fsync); JOBS threads share OPS
//! spike-io wal-flush  FILE OPS        8 KiB pwrite + fdatasync in page order (PostgreSQL's
//!                                     WAL flush): ops/s, p50/p99 latency of the pair
//! ```
//! The sequential rows also print CPU-seconds per GiB moved: this process's, plus those of
//! PID (the daemon serving FILE) if given, from schedstat.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const CHUNK: usize = 1 << 20;
const PAGE: usize = 8192;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["seq-write", file, mib, pid @ ..] => {
            number(mib).and_then(|mib| with_cpu("seq_write", pid, || seq_write(file, mib)))
        }
        ["seq-read", file, pid @ ..] => with_cpu("seq_read", pid, || seq_read(file)),
        ["rand-read", file, ops, jobs @ ..] => {
            ops_jobs(ops, jobs).and_then(|(ops, jobs)| random(file, ops, false, jobs))
        }
        ["rand-write", file, ops, jobs @ ..] => {
            ops_jobs(ops, jobs).and_then(|(ops, jobs)| random(file, ops, true, jobs))
        }
        ["wal-flush", file, ops] => number(ops).and_then(|ops| wal_flush(file, ops)),
        _ => Err(
            "usage: spike-io seq-write FILE MIB [PID] | seq-read FILE [PID] | \
                  rand-read FILE OPS [JOBS] | rand-write FILE OPS [JOBS] | wal-flush FILE OPS"
                .into(),
        ),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("spike-io: {message}");
            ExitCode::FAILURE
        }
    }
}

/// OPS and the optional JOBS (default 1) of the random rows.
fn ops_jobs(ops: &str, jobs: &[&str]) -> Result<(usize, usize), String> {
    let jobs = jobs.first().map_or(Ok(1), |j| number(j))?;
    Ok((number(ops)?, jobs))
}

fn number(text: &str) -> Result<usize, String> {
    match text.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("'{text}' is not a positive integer")),
    }
}

fn open(file: &str, write: bool) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(file)
        .map_err(|e| format!("open {file} with O_DIRECT: {e}"))
}

/// A buffer aligned to 4 KiB, as O_DIRECT on a disk filesystem requires.
struct Aligned {
    storage: Vec<u8>,
    offset: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize, seed: u64) -> Aligned {
        let mut storage = vec![0u8; len + 4096];
        let offset = storage.as_ptr().align_offset(4096);
        // Varied, non-zero bytes: zeros could be special-cased by a filesystem.
        for (i, b) in storage.iter_mut().enumerate() {
            *b = (i as u64).wrapping_mul(31).wrapping_add(seed) as u8 | 1;
        }
        Aligned {
            storage,
            offset,
            len,
        }
    }

    fn bytes(&mut self) -> &mut [u8] {
        &mut self.storage[self.offset..self.offset + self.len]
    }
}

fn seq_write(file: &str, mib: usize) -> Result<(f64, usize), String> {
    let f = open(file, true)?;
    let mut buf = Aligned::new(CHUNK, 0x1234_5678);
    let start = Instant::now();
    for i in 0..mib {
        buf.bytes()[..8].copy_from_slice(&(i as u64).to_le_bytes());
        f.write_all_at(buf.bytes(), (i * CHUNK) as u64)
            .map_err(|e| format!("pwrite {file}: {e}"))?;
    }
    f.sync_all().map_err(|e| format!("fsync {file}: {e}"))?;
    Ok((start.elapsed().as_secs_f64(), mib * CHUNK))
}

fn seq_read(file: &str) -> Result<(f64, usize), String> {
    let f = open(file, false)?;
    let mut buf = Aligned::new(CHUNK, 0);
    let start = Instant::now();
    let mut total = 0;
    loop {
        match f.read_at(buf.bytes(), total as u64) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => return Err(format!("pread {file}: {e}")),
        }
    }
    Ok((start.elapsed().as_secs_f64(), total))
}

fn pages(f: &File, file: &str) -> Result<usize, String> {
    let len = f.metadata().map_err(|e| format!("stat {file}: {e}"))?.len() as usize;
    match len / PAGE {
        0 => Err(format!(
            "{file} is smaller than one 8 KiB page: run seq-write first"
        )),
        n => Ok(n),
    }
}

fn random(file: &str, ops: usize, write: bool, jobs: usize) -> Result<String, String> {
    let start = Instant::now();
    // Each job (thread) has its own descriptor and its own share of the scattered pages.
    let per_job: Vec<Result<Vec<Duration>, String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs)
            .map(|job| scope.spawn(move || random_job(file, ops / jobs, write, job, jobs)))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err("job panicked".into())))
            .collect()
    });
    let took = start.elapsed();
    let mut latencies = Vec::with_capacity(ops);
    for job in per_job {
        latencies.extend(job?);
    }
    let row = match (write, jobs) {
        (false, 1) => "rand_read".to_string(),
        (true, 1) => "rand_write".to_string(),
        (false, j) => format!("rand_read_{j}jobs"),
        (true, j) => format!("rand_write_{j}jobs"),
    };
    Ok(latency_line(&row, latencies, took))
}

fn random_job(
    file: &str,
    ops: usize,
    write: bool,
    job: usize,
    jobs: usize,
) -> Result<Vec<Duration>, String> {
    let f = open(file, write)?;
    let n = pages(&f, file)?;
    let mut buf = Aligned::new(PAGE, (ops + job) as u64);
    let mut latencies = Vec::with_capacity(ops);
    for i in 0..ops {
        let offset = (scattered(i * jobs + job, n) * PAGE) as u64;
        let t = Instant::now();
        let done = if write {
            f.write_all_at(buf.bytes(), offset)
        } else {
            f.read_exact_at(buf.bytes(), offset)
        };
        done.map_err(|e| format!("{} {file}: {e}", if write { "pwrite" } else { "pread" }))?;
        latencies.push(t.elapsed());
    }
    if write {
        // Untimed by the caller's latencies: leaves no dirty data behind to slow down the
        // next row's syncs.
        f.sync_all().map_err(|e| format!("fsync {file}: {e}"))?;
    }
    Ok(latencies)
}

fn wal_flush(file: &str, ops: usize) -> Result<String, String> {
    let f = open(file, true)?;
    let n = pages(&f, file)?;
    let mut buf = Aligned::new(PAGE, 0x0057_414c);
    let mut latencies = Vec::with_capacity(ops);
    let start = Instant::now();
    for i in 0..ops {
        let t = Instant::now();
        f.write_all_at(buf.bytes(), ((i % n) * PAGE) as u64)
            .map_err(|e| format!("pwrite {file}: {e}"))?;
        f.sync_data()
            .map_err(|e| format!("fdatasync {file}: {e}"))?;
        latencies.push(t.elapsed());
    }
    Ok(latency_line("wal_flush", latencies, start.elapsed()))
}

fn latency_line(row: &str, mut latencies: Vec<Duration>, took: Duration) -> String {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    format!(
        "{row}_ops_s={:.0} {row}_p50_us={:.1} {row}_p99_us={:.1}",
        latencies.len() as f64 / took.as_secs_f64(),
        at(0.50).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6
    )
}

/// Runs a sequential row, which returns (seconds, bytes), and prints its rate and the
/// CPU-seconds per GiB that this process and the daemon `pid` (if given) spent meanwhile.
fn with_cpu(
    row: &str,
    pid: &[&str],
    run: impl FnOnce() -> Result<(f64, usize), String>,
) -> Result<String, String> {
    let daemon = pid.first().copied();
    let before = cpu_ns("self")? + daemon.map_or(Ok(0), cpu_ns)?;
    let (secs, bytes) = run()?;
    let cpu = cpu_ns("self")? + daemon.map_or(Ok(0), cpu_ns)? - before;
    let gib = bytes as f64 / (1u64 << 30) as f64;
    Ok(format!(
        "{row}_mb_s={:.0} {row}_cpu_s_per_gib={:.3}",
        bytes as f64 / 1e6 / secs,
        cpu as f64 / 1e9 / gib
    ))
}

/// On-CPU nanoseconds of every thread of a process (first field of each schedstat).
fn cpu_ns(pid: &str) -> Result<u64, String> {
    let tasks = format!("/proc/{pid}/task");
    let entries = std::fs::read_dir(&tasks).map_err(|e| format!("{tasks}: {e}"))?;
    let mut total = 0;
    for entry in entries.flatten() {
        if let Ok(stat) = std::fs::read_to_string(entry.path().join("schedstat")) {
            total += stat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// The i-th page of a fixed scattered order over `n` pages: stepping by a prime larger
/// than any page count visits every page once per `n` steps, far from its neighbours.
fn scattered(i: usize, n: usize) -> usize {
    const STEP: u64 = 2_654_435_761;
    ((i as u64).wrapping_mul(STEP) % n as u64) as usize
}
