//! The FUSE frontend: `fuser::Filesystem` over encrypted backing files.
//!
//! This module only translates requests and replies; the work is split by family:
//! `file_ops` (regular files), `dir_ops` (names, directories, statfs), `attr`
//! (getattr/setattr), with `inodes` and `open_files` as the shared state;
//! `requests` maps fuser's requests and replies onto them.

mod attr;
mod backing;
mod dir_ops;
mod file_ops;
mod inodes;
mod open_files;
mod request_metrics;
mod requests;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fuser::Errno;

use crate::content::VolumeKey;
use crate::Error;
use dir_ops::DirHandles;
use inodes::InodeTable;
use open_files::OpenFiles;
use request_metrics::{FileClass, RequestMetrics};

/// Attribute and entry lifetime in the kernel. Long, because every change goes
/// through this mount (PostgreSQL's data directory has one writer); short timeouts
/// halve PostgreSQL's throughput (measured, see DESIGN.md).
const TTL: Duration = Duration::from_secs(3600);
/// Largest write the kernel sends in one request.
const MAX_WRITE: u32 = 1 << 20;

/// Frontend settings chosen at mount time.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FsOptions {
    /// Open files directly under a `pg_wal` directory with FOPEN_DIRECT_IO.
    pub(crate) direct_io_wal: bool,
}

pub(crate) struct CryptFs {
    root: PathBuf,
    volume: Arc<VolumeKey>,
    options: FsOptions,
    inodes: InodeTable,
    files: OpenFiles,
    dirs: DirHandles,
    metrics: RequestMetrics,
}

pub(crate) fn io_errno(error: &io::Error) -> Errno {
    Errno::from_i32(error.raw_os_error().unwrap_or(libc::EIO))
}

/// A node whose name no longer leads to its file: the kernel retries the lookup.
pub(crate) fn estale() -> Errno {
    Errno::from_i32(libc::ESTALE)
}

impl CryptFs {
    /// The filesystem of cipher directory `root`, open as `root_dir`; long requests
    /// give up once `stopping` is set.
    pub(crate) fn new(
        root: PathBuf,
        root_dir: std::fs::File,
        volume: VolumeKey,
        options: FsOptions,
        stopping: Arc<std::sync::atomic::AtomicBool>,
    ) -> io::Result<Self> {
        Ok(Self {
            inodes: InodeTable::new(root.clone(), root_dir)?,
            root,
            volume: Arc::new(volume),
            options,
            files: OpenFiles::new(stopping),
            dirs: DirHandles::default(),
            metrics: RequestMetrics::register(),
        })
    }

    /// Maps a library error to an errno, logging authentication failures with the
    /// file's name and block (never its content).
    pub(crate) fn fail(&self, ino: u64, error: Error) -> Errno {
        if matches!(error, Error::Tampered { .. } | Error::BadHeader(_)) {
            let file = self.inodes.display_name(ino);
            self.metrics.auth_failure(FileClass::of(&file));
            match &error {
                Error::Tampered { block } => tracing::warn!(
                    file = %file,
                    block = *block,
                    "cryptfs: block failed authentication (altered, swapped, moved or truncated); returning EIO"
                ),
                Error::BadHeader(why) => tracing::warn!(
                    file = %file,
                    reason = *why,
                    "cryptfs: file header invalid; returning EIO"
                ),
                _ => {}
            }
        }
        Errno::from_i32(error.errno())
    }
}
