//! `iobench`: measures one file-I/O pattern on one file and prints one `key=value` line.
//!
//! ```text
//! iobench seq-write FILE MIB     1 MiB writes, then fsync; MB/s includes the fsync
//! iobench seq-read  FILE         1 MiB reads to EOF
//!                                (both also print the caller's CPU seconds, `caller_cpu_s`)
//! iobench rand-read FILE OPS     random 8 KiB-aligned preads over the whole file
//! iobench rand-write FILE OPS    random 8 KiB-aligned pwrites, fdatasync every 32, fsync at end
//! iobench wal-flush FILE         PostgreSQL's WAL pattern (FILE belongs in a `pg_wal` directory):
//!                                a new 16 MiB segment (256 KiB zero writes, fsync), then every
//!                                8 KiB page written 3 times in order, fdatasync after each write
//!                                (commits filling a page); mean latency of one write + fdatasync,
//!                                the segment's latency and the caller's CPU for it
//! iobench files DIR N DIRS       N files of 100 B created in DIRS new directories under DIR, then
//!                                removed; time of each phase, caller CPU (see `files.rs`)
//! iobench drops DIR N            N files of 8 KiB (fsynced) each opened, truncated to 0 and
//!                                closed, as a DROP does to every fork; mean time (`drops.rs`)
//! ```
//! The caller drops the page cache between steps; this tool only times its own I/O.

#![forbid(unsafe_code)]

mod drops;
mod files;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::process::ExitCode;
use std::time::Instant;

const CHUNK: usize = 1 << 20;
const PAGE: u64 = 8192;
const SYNC_EVERY: u64 = 32;
const WAL_SEGMENT: u64 = 16 << 20;
const WAL_WRITES_PER_PAGE: u64 = 3;
const WAL_ZERO_FILL: usize = 256 << 10;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["seq-write", file, mib] => number(mib).and_then(|mib| seq_write(file, mib)),
        ["seq-read", file] => seq_read(file),
        ["rand-read", file, ops] => number(ops).and_then(|ops| rand_read(file, ops)),
        ["rand-write", file, ops] => number(ops).and_then(|ops| rand_write(file, ops)),
        ["wal-flush", file] => wal_flush(file),
        ["files", dir, n, dirs] => number(n)
            .and_then(|n| number(dirs).map(|dirs| (n, dirs)))
            .and_then(|(n, dirs)| files::create_remove(dir, n, dirs)),
        ["drops", dir, n] => number(n).and_then(|n| drops::drop_files(dir, n)),
        _ => Err("usage: iobench seq-write FILE MIB | seq-read FILE | rand-read FILE OPS | rand-write FILE OPS | wal-flush FILE | files DIR N DIRS | drops DIR N".into()),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("iobench: {message}");
            ExitCode::FAILURE
        }
    }
}

fn number(text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("'{text}' is not a positive integer"))
}

fn io_err<'a>(what: &'a str, file: &'a str) -> impl Fn(std::io::Error) -> String + 'a {
    move |e| format!("{what} {file}: {e}")
}

fn seq_write(file: &str, mib: u64) -> Result<String, String> {
    // Incompressible, non-zero bytes (zeros could be special-cased by a filesystem).
    let mut buf = vec![0u8; CHUNK];
    let mut rng = Rng(0x1234_5678);
    buf.iter_mut().for_each(|b| *b = rng.next() as u8);
    let cpu0 = files::own_cpu_ns()?;
    let start = Instant::now();
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(file)
        .map_err(io_err("create", file))?;
    for i in 0..mib {
        buf[..8].copy_from_slice(&i.to_le_bytes());
        f.write_all(&buf).map_err(io_err("write", file))?;
    }
    f.sync_all().map_err(io_err("fsync", file))?;
    let secs = start.elapsed().as_secs_f64();
    Ok(format!(
        "seq_write_mb_s={:.0} caller_cpu_s={:.3}",
        (mib * CHUNK as u64) as f64 / 1e6 / secs,
        cpu_since(cpu0)?
    ))
}

fn seq_read(file: &str) -> Result<String, String> {
    let mut buf = vec![0u8; CHUNK];
    let cpu0 = files::own_cpu_ns()?;
    let start = Instant::now();
    let mut f = File::open(file).map_err(io_err("open", file))?;
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err("read", file))?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(format!(
        "seq_read_mb_s={:.0} bytes={total} caller_cpu_s={:.3}",
        total as f64 / 1e6 / secs,
        cpu_since(cpu0)?
    ))
}

fn pages(f: &File, file: &str) -> Result<u64, String> {
    let len = f.metadata().map_err(io_err("stat", file))?.len();
    match len / PAGE {
        0 => Err(format!(
            "{file} is smaller than one 8 KiB page: run seq-write first"
        )),
        n => Ok(n),
    }
}

fn rand_read(file: &str, ops: u64) -> Result<String, String> {
    let f = File::open(file).map_err(io_err("open", file))?;
    let n = pages(&f, file)?;
    let mut buf = vec![0u8; PAGE as usize];
    let mut rng = Rng(ops);
    let start = Instant::now();
    for _ in 0..ops {
        f.read_exact_at(&mut buf, rng.next() % n * PAGE)
            .map_err(io_err("pread", file))?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(format!("rand_read_iops={:.0}", ops as f64 / secs))
}

fn rand_write(file: &str, ops: u64) -> Result<String, String> {
    let f = OpenOptions::new()
        .write(true)
        .open(file)
        .map_err(io_err("open", file))?;
    let n = pages(&f, file)?;
    let mut buf = vec![0u8; PAGE as usize];
    let mut rng = Rng(ops ^ 0xabcd);
    buf.iter_mut().for_each(|b| *b = rng.next() as u8);
    let start = Instant::now();
    for i in 0..ops {
        buf[..8].copy_from_slice(&i.to_le_bytes());
        f.write_all_at(&buf, rng.next() % n * PAGE)
            .map_err(io_err("pwrite", file))?;
        if i % SYNC_EVERY == SYNC_EVERY - 1 {
            f.sync_data().map_err(io_err("fdatasync", file))?;
        }
    }
    f.sync_all().map_err(io_err("fsync", file))?;
    let secs = start.elapsed().as_secs_f64();
    Ok(format!("rand_write_iops={:.0}", ops as f64 / secs))
}

fn wal_flush(file: &str) -> Result<String, String> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(file)
        .map_err(io_err("create", file))?;
    // PostgreSQL 15 zero-fills a new segment with 256 KiB vectored writes.
    let zeros = vec![0u8; WAL_ZERO_FILL];
    let cpu0 = files::own_cpu_ns()?;
    let start = Instant::now();
    for chunk in 0..WAL_SEGMENT / WAL_ZERO_FILL as u64 {
        f.write_all_at(&zeros, chunk * WAL_ZERO_FILL as u64)
            .map_err(io_err("pwrite", file))?;
    }
    f.sync_all().map_err(io_err("fsync", file))?;
    let segment = start.elapsed();
    let segment_cpu = cpu_since(cpu0)?;
    let mut buf = vec![0u8; PAGE as usize];
    let mut rng = Rng(0x0057_414c);
    buf.iter_mut().for_each(|b| *b = rng.next() as u8);
    let start = Instant::now();
    for page in 0..WAL_SEGMENT / PAGE {
        for write in 0..WAL_WRITES_PER_PAGE {
            buf[..8].copy_from_slice(&(page * WAL_WRITES_PER_PAGE + write).to_le_bytes());
            f.write_all_at(&buf, page * PAGE)
                .map_err(io_err("pwrite", file))?;
            f.sync_data().map_err(io_err("fdatasync", file))?;
        }
    }
    let flushes = WAL_SEGMENT / PAGE * WAL_WRITES_PER_PAGE;
    Ok(format!(
        "wal_flush_us={:.0} wal_segment_ms={:.1} wal_segment_caller_cpu_s={:.4}",
        start.elapsed().as_secs_f64() * 1e6 / flushes as f64,
        segment.as_secs_f64() * 1e3,
        segment_cpu
    ))
}

/// This process's CPU seconds since `cpu0` (from [`files::own_cpu_ns`]).
fn cpu_since(cpu0: u64) -> Result<f64, String> {
    Ok((files::own_cpu_ns()? - cpu0) as f64 / 1e9)
}

/// splitmix64: reproducible offsets without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
