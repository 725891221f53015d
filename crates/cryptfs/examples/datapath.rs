//! Micro-benchmark of the data path below FUSE: sequential write (1 MiB requests,
//! without and with the final fdatasync), warm sequential read (128 KiB requests) and random 8 KiB
//! rewrites of an [`EncryptedFile`] over a real backing file.
//!
//! `cargo run --release -p pgcmk-cryptfs --example datapath -- [DIR] [MiB]`

use std::sync::Arc;
use std::time::Instant;

use pgcmk_cryptfs::content::VolumeKey;
use pgcmk_cryptfs::encrypted_file::EncryptedFile;
use pgcmk_crypto::SymmetricKey;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "/var/tmp".into());
    let mib: u64 = args.next().map_or(Ok(512), |s| s.parse())?;
    let path = std::path::Path::new(&dir).join(format!("datapath-{}", std::process::id()));
    let backing = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let volume = Arc::new(VolumeKey::new(SymmetricKey::from_bytes([7; 32]), [1; 16]));
    let file = EncryptedFile::open(backing, volume)?;
    let chunk = vec![0x5Au8; 1 << 20];
    let bytes = mib << 20;
    let mb_s = |start: Instant| bytes as f64 / start.elapsed().as_secs_f64() / 1e6;
    let mut cpu = cpu_seconds()?;
    let mut cpu_per_gib = || -> Result<f64, std::io::Error> {
        let (before, now) = (cpu, cpu_seconds()?);
        cpu = now;
        Ok((now - before) * (1u64 << 30) as f64 / bytes as f64)
    };

    let start = Instant::now();
    for i in 0..mib {
        file.write(i << 20, &chunk)?;
    }
    let speed = mb_s(start);
    println!(
        "seq write (no sync)   {speed:8.0} MB/s  {:5.2} CPU s/GiB",
        cpu_per_gib()?
    );
    file.sync()?;
    println!("seq write+fdatasync   {:8.0} MB/s", mb_s(start));
    cpu_per_gib()?;

    let start = Instant::now();
    let mut buf = vec![0u8; 128 << 10];
    let mut offset = 0;
    while offset < bytes {
        offset += file.read_into(offset, &mut buf)? as u64;
    }
    let speed = mb_s(start);
    println!(
        "seq read (warm)       {speed:8.0} MB/s  {:5.2} CPU s/GiB",
        cpu_per_gib()?
    );

    let start = Instant::now();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let pages = bytes / 8192;
    let ops = 65_536;
    for i in 0..ops {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        file.write((state % pages) * 8192, &chunk[..8192])?;
        if i % 32 == 31 {
            file.sync()?;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("rand 8K write (sync/32) {:6.0} IOPS", ops as f64 / secs);
    std::fs::remove_file(&path)?;
    Ok(())
}

/// User + system CPU time of this process, from /proc/self/stat (100 ticks/s).
fn cpu_seconds() -> Result<f64, std::io::Error> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_name = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    Ok(ticks as f64 / 100.0)
}
