//! The agent crate's one error type.

use std::path::PathBuf;

use pgcmk_keyprovider::{KeyError, KeyVersionId};

use crate::contract::HandshakeError;

/// What went wrong in a node agent or in PostgreSQL supervision, or with a file
/// of the [`crate::contract`].
///
/// Messages never contain key material, credentials or database passwords.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path involved.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A file of the contract could not be encoded, or is not valid.
    #[error("{} {reason}", .path.display())]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it ("is not valid: ...", "cannot be encoded: ...").
        reason: String,
    },
    /// The start-up handshake on stdin could not be read.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The server has no encrypted volume yet and the handshake brought no initial
    /// password to create it with.
    #[error(
        "server directory {} holds no encrypted volume and the handshake brought no \
         initial password: a server is provisioned only at create",
        .0.display()
    )]
    NotProvisioned(PathBuf),
    /// A first start began provisioning the server and was cut short: what it left
    /// is half-made, and only a new create provisions a server.
    #[error(
        "server directory {} was left half-made: the server's first start was cut short \
         while provisioning it, so it holds no usable cluster; delete the server and \
         create it again",
        .0.display()
    )]
    ProvisioningCutShort(PathBuf),
    /// The handshake brought an initial password for a server that has a volume.
    #[error(
        "server directory {} already holds an encrypted volume: an initial password is \
         only for a new server",
        .0.display()
    )]
    AlreadyProvisioned(PathBuf),
    /// PostgreSQL could not be found, initialized, started or stopped.
    #[error("postgresql: {0}")]
    Postgres(String),
    /// pgBackRest is missing, or one of its commands failed (with what it said).
    #[error("backup: {0}")]
    Backup(String),
    /// The key encryption key refused or failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The key's current version changed while the DEK was being re-wrapped.
    #[error(
        "the key moved on to {got} while re-wrapping for {wanted}; retrying at the next check"
    )]
    KeyMoved {
        /// The version the re-wrap was for.
        wanted: Box<KeyVersionId>,
        /// The version that wrapped it.
        got: Box<KeyVersionId>,
    },
    /// The encrypted file system failed to initialize or mount.
    #[error("cryptfs: {0}")]
    Cryptfs(#[from] pgcmk_cryptfs::Error),
    /// A cryptographic primitive failed.
    #[error(transparent)]
    Crypto(#[from] pgcmk_crypto::Error),
    /// A durable file write failed ([`pgcmk_hostkeys`]).
    #[error(transparent)]
    HostKeys(#[from] pgcmk_hostkeys::Error),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Lets `?` turn an I/O error into [`Error::Io`] with context: `.ctx(|| "...")`.
pub(crate) trait IoContext<T> {
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T, Error>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T, Error> {
        self.map_err(|e| Error::io(context(), e))
    }
}
