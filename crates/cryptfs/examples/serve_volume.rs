//! Serves a fresh cryptfs volume with the mount options PostgreSQL's volumes get
//! (`allow_other`, default permissions, writeback cache, direct I/O for `pg_wal`),
//! until SIGINT/SIGTERM — for running outside test suites (pjdfstest, benchmarks)
//! against the library without the `pgcmk` binary.
//!
//! `cargo run -p pgcmk-cryptfs --example serve_volume -- CIPHER_DIR MOUNTPOINT`
//! (CIPHER_DIR must be empty or absent; a random key is used and forgotten).

use std::path::PathBuf;

use pgcmk_cryptfs::{MountOptions, TerminationSignals};
use pgcmk_crypto::SymmetricKey;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(cipher), Some(mountpoint)) = (args.next(), args.next()) else {
        return Err("usage: serve_volume CIPHER_DIR MOUNTPOINT".into());
    };
    // Before any thread starts, so that every thread leaves the signals to us.
    let signals = TerminationSignals::block()?;
    let key = SymmetricKey::generate()?;
    pgcmk_cryptfs::init(&cipher, &key)?;
    let options = MountOptions {
        allow_other: true,
        ..MountOptions::default()
    };
    let handle = pgcmk_cryptfs::mount(&cipher, &mountpoint, key, options)?;
    println!("serving {} at {}", cipher.display(), mountpoint.display());
    handle.serve_until_signal(&signals)?;
    Ok(())
}
