//! The crate's one error type.

use std::path::PathBuf;

/// Why loading a root key, a TLS identity or a CA certificate failed. Messages
/// never contain key material; each says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The root key is missing, wrong, or of the other kind (file or passphrase).
    #[error("root key: {0}")]
    RootKey(String),
    /// The TLS identity could not be made or loaded.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// A client's CA certificate is missing or not a certificate, or the service's
    /// certificate is not signed by it.
    #[error("{0}")]
    Trust(String),
    /// A cryptographic primitive failed.
    #[error(transparent)]
    Crypto(#[from] pgcmk_crypto::Error),
}

impl Error {
    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
