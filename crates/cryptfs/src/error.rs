//! The crate's one public error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in cryptfs.
///
/// Messages never contain key material or plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed on a known path.
    #[error("{action} {path}: {source}")]
    Path {
        /// What was being done ("reading", "creating", ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// An I/O call on an already-open backing file failed.
    #[error("I/O error on the backing file: {0}")]
    Io(#[from] io::Error),
    /// The key does not open this cipher directory.
    #[error("wrong key: this key does not match the cipher directory's key check value; use the key it was initialised with")]
    WrongKey,
    /// The directory has no cryptfs configuration file.
    #[error("{0} is not a cryptfs cipher directory (no {name}); run `pgcmk fs init` on an empty directory first", name = crate::config::CONFIG_FILE_NAME)]
    NotInitialized(PathBuf),
    /// `init` was pointed at a directory that already holds files.
    #[error("{0} is not empty; cryptfs init needs an empty (or new) directory")]
    NotEmpty(PathBuf),
    /// The configuration file exists but cannot be understood.
    #[error("invalid cryptfs configuration {path}: {reason}")]
    BadConfig {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A block failed authentication: flipped bits, a swapped or moved block, or a
    /// truncated block. Its bytes are never returned.
    #[error(
        "block {block} failed authentication (altered, moved, swapped or truncated ciphertext)"
    )]
    Tampered {
        /// Block number within the file (0-based, 4 KiB of plaintext each).
        block: u64,
    },
    /// A file's header is damaged (bad magic, truncated) or has an unknown version.
    #[error("file header is invalid: {0}")]
    BadHeader(&'static str),
    /// A write or truncate would exceed the largest supported file size.
    #[error("file would exceed the largest supported size of {max} bytes")]
    FileTooLarge {
        /// The limit in plaintext bytes.
        max: u64,
    },
    /// A long operation (extending a file) was stopped because the mount is being
    /// stopped; the file was put back as it was.
    #[error("stopped: the filesystem is being unmounted")]
    Stopped,
    /// An argument was unusable (mountpoint, thread count, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The FUSE mount failed.
    #[error("mounting at {mountpoint} failed: {source}; check that /dev/fuse exists, the mountpoint is an empty directory, and you run as root (or fusermount3 is installed)")]
    Mount {
        /// Where the mount was attempted.
        mountpoint: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Unmounting failed (usually: files under the mountpoint are still open).
    #[error("unmounting {mountpoint} failed: {source}; close files and stop processes using it, then retry")]
    Unmount {
        /// The mountpoint.
        mountpoint: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A cryptographic primitive failed (e.g. the system RNG).
    #[error("cryptographic operation failed: {0}")]
    Crypto(#[from] pgcmk_crypto::Error),
}

impl Error {
    /// The errno a FUSE reply should carry for this error.
    pub(crate) fn errno(&self) -> i32 {
        match self {
            Error::Path { source, .. } | Error::Io(source) => {
                source.raw_os_error().unwrap_or(libc::EIO)
            }
            Error::FileTooLarge { .. } => libc::EFBIG,
            Error::Stopped => libc::EINTR,
            Error::InvalidArgument(_) => libc::EINVAL,
            _ => libc::EIO,
        }
    }

    pub(crate) fn path(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Path {
            action,
            path,
            source,
        }
    }
}
