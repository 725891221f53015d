//! `pgcmk fs`: standalone cryptfs commands (init, mount, unmount, fsck, keygen).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use pgcmk_cryptfs::{key_file, MountOptions, TerminationSignals};
use pgcmk_crypto::SymmetricKey;
use pgcmk_hostkeys::metrics_endpoint::{self, MetricsAddress};

use crate::error::CliError;
use crate::{logging, output, volume_check, Format};

/// Where the master key comes from.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct KeySource {
    /// File holding the key: 64 hex characters (see `pgcmk fs keygen`).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Read the key (64 hex characters) from standard input.
    #[arg(long)]
    key_stdin: bool,
}

impl KeySource {
    fn read(&self) -> Result<SymmetricKey, CliError> {
        match &self.key_file {
            Some(path) => key_file::read_key_file(path),
            None => key_file::read_key_stdin(),
        }
        .map_err(|e| CliError::usage(e.to_string()))
    }
}

/// Encrypted filesystem for PostgreSQL data directories.
#[derive(Subcommand)]
pub enum FsCommand {
    /// Prepare an empty cipher directory for a key.
    #[command(
        after_help = "Example:\n  pgcmk fs keygen --out data.key && pgcmk fs init --cipher-dir /srv/cipher --key-file data.key"
    )]
    Init {
        /// Directory that will hold the ciphertext (created if missing; must be empty).
        #[arg(long)]
        cipher_dir: PathBuf,
        #[command(flatten)]
        key: KeySource,
    },
    /// Mount a cipher directory; runs in the foreground until unmounted or signalled.
    #[command(
        after_help = "Example:\n  pgcmk fs mount --cipher-dir /srv/cipher --mountpoint /srv/plain --key-file data.key --allow-other"
    )]
    Mount {
        /// The cipher directory (from `pgcmk fs init`).
        #[arg(long)]
        cipher_dir: PathBuf,
        /// Empty directory where the plaintext view appears.
        #[arg(long)]
        mountpoint: PathBuf,
        #[command(flatten)]
        key: KeySource,
        /// Let other users (e.g. postgres) use the mount; file modes still apply.
        #[arg(long)]
        allow_other: bool,
        /// FUSE request threads (1-64) [default: the number of CPUs, 2 to 4].
        #[arg(long)]
        threads: Option<usize>,
        /// Serve files in pg_wal directories with direct I/O (saves a round trip per
        /// WAL flush) [default: true; `--direct-io-wal=false` turns it off].
        #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
        direct_io_wal: Option<bool>,
        /// Mount read-only: no change reaches the volume (no crash recovery either).
        #[arg(long)]
        read_only: bool,
        /// Serve the mount's Prometheus metrics (GET /metrics) on this loopback address.
        #[arg(long, value_name = "IP:PORT")]
        metrics_listen: Option<MetricsAddress>,
    },
    /// Unmount a cryptfs mount (the `pgcmk fs mount` process then exits).
    #[command(after_help = "Example:\n  pgcmk fs unmount /srv/plain")]
    Unmount {
        /// The mountpoint.
        mountpoint: PathBuf,
    },
    /// Verify every block of every file; exits non-zero if any is bad. After a crash,
    /// torn blocks that the next mount's recovery repairs are listed separately and
    /// do not fail. Run it while the directory is not mounted (in-flight writes can
    /// look damaged).
    #[command(
        after_help = "Example:\n  pgcmk fs fsck --cipher-dir /srv/cipher --key-file data.key"
    )]
    Fsck {
        /// The cipher directory.
        #[arg(long)]
        cipher_dir: PathBuf,
        #[command(flatten)]
        key: KeySource,
    },
    /// Write a new random 256-bit key file (mode 0600).
    #[command(after_help = "Example:\n  pgcmk fs keygen --out data.key")]
    Keygen {
        /// Where to write it (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs one `pgcmk fs` command.
pub fn run(command: FsCommand, format: Format) -> Result<(), CliError> {
    // Log lines (e.g. a block that failed authentication) go to stderr.
    logging::init(logging::LogFormat::Text, None);
    match command {
        FsCommand::Init { cipher_dir, key } => {
            pgcmk_cryptfs::init(&cipher_dir, &key.read()?)?;
            let value = serde_json::json!({ "initialized": cipher_dir });
            output::print(format, &value, |_| {
                format!(
                    "initialized cryptfs cipher directory {}",
                    cipher_dir.display()
                )
            });
            Ok(())
        }
        FsCommand::Mount {
            cipher_dir,
            mountpoint,
            key,
            allow_other,
            threads,
            direct_io_wal,
            read_only,
            metrics_listen,
        } => {
            let defaults = MountOptions::default();
            let options = MountOptions {
                allow_other,
                threads: threads.unwrap_or(defaults.threads),
                direct_io_wal: direct_io_wal.unwrap_or(defaults.direct_io_wal),
                read_only,
            };
            let key = key.read()?;
            mount(
                &cipher_dir,
                &mountpoint,
                key,
                (options, metrics_listen),
                format,
            )
        }
        FsCommand::Unmount { mountpoint } => {
            pgcmk_cryptfs::unmount(&mountpoint)?;
            let value = serde_json::json!({ "unmounted": mountpoint });
            output::print(format, &value, |_| {
                format!("unmounted {}", mountpoint.display())
            });
            Ok(())
        }
        FsCommand::Fsck { cipher_dir, key } => fsck(&cipher_dir, &key.read()?, format),
        FsCommand::Keygen { out } => {
            key_file::write_new_key_file(&out)?;
            let value = serde_json::json!({ "key_file": out });
            output::print(format, &value, |_| {
                format!("wrote new key to {}", out.display())
            });
            Ok(())
        }
    }
}

fn mount(
    cipher_dir: &Path,
    mountpoint: &Path,
    key: SymmetricKey,
    (options, metrics): (MountOptions, Option<MetricsAddress>),
    format: Format,
) -> Result<(), CliError> {
    // Before mounting, so the FUSE threads (and the metrics thread) inherit the
    // blocked signals.
    let signals = TerminationSignals::block()?;
    if let Some(address) = metrics {
        // Before mounting: the mount registers its handles with the recorder.
        let bound = metrics_endpoint::serve_in_thread(address)
            .map_err(|e| CliError::usage(e.to_string()))?;
        eprintln!("cryptfs metrics at http://{bound}/metrics");
    }
    let handle = pgcmk_cryptfs::mount(cipher_dir, mountpoint, key, options)?;
    let value = serde_json::json!({ "mounted": handle.mountpoint(), "cipher_dir": cipher_dir });
    output::print(format, &value, |_| {
        format!(
            "cryptfs mounted at {} (cipher dir {}); stop with Ctrl-C, SIGTERM or `pgcmk fs unmount {}`",
            handle.mountpoint().display(),
            cipher_dir.display(),
            handle.mountpoint().display()
        )
    });
    Ok(handle.serve_until_signal(&signals)?)
}

fn fsck(cipher_dir: &Path, key: &SymmetricKey, format: Format) -> Result<(), CliError> {
    let report = pgcmk_cryptfs::fsck(cipher_dir, key)?;
    volume_check::print(&cipher_dir.display().to_string(), &report.into(), format)
}
