//! The crate's one error type.

use pgcmk_keyprovider::KeyError;

use crate::task::VersionRefusal;

/// What went wrong in the control plane, a node agent or PostgreSQL supervision.
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
    /// PostgreSQL could not be found, initialized, started or stopped.
    #[error("postgresql: {0}")]
    Postgres(String),
    /// The key encryption key refused or failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A request was malformed or not allowed; the message says how to fix it.
    #[error("{0}")]
    InvalidRequest(String),
    /// No server with this name or id exists.
    #[error("server '{0}' not found: run `pgcmk server list` to see the servers")]
    NotFound(String),
    /// The operation conflicts with the server's current state or an existing server.
    #[error("{0}")]
    Conflict(String),
    /// The embedded state store failed.
    #[error("state store: {0}")]
    Store(String),
    /// The encrypted file system failed to initialize or mount.
    #[error("cryptfs: {0}")]
    Cryptfs(#[from] pgcmk_cryptfs::Error),
    /// A REST API request came without the DBA's credential, or with a wrong one.
    #[error("{0}")]
    Unauthorized(String),
    /// The control plane's root key is missing, wrong, or of the other kind
    /// (file or passphrase); the message says which to give.
    #[error("root key: {0}")]
    RootKey(String),
    /// A cryptographic primitive failed.
    #[error(transparent)]
    Crypto(#[from] pgcmk_crypto::Error),
    /// The root key, the API's TLS identity, a client's CA certificate or a
    /// durable file write failed ([`pgcmk_hostkeys`]); the message says what to do.
    #[error(transparent)]
    HostKeys(#[from] pgcmk_hostkeys::Error),
    /// A client could not reach the REST API, or does not trust its certificate.
    #[error("{0}")]
    Unreachable(String),
    /// The vault refuses a key version that the server needs (to start, or for its
    /// logs or fsck); the message names the version and how to fix it.
    #[error("{}", .refusal.explain(.server))]
    KeyVersionRefused {
        /// The server's name.
        server: String,
        /// The version, and what the vault said about it.
        refusal: Box<VersionRefusal>,
    },
    /// A short-lived run of the node agent failed or gave no answer; the message
    /// says which and where its diagnostics are.
    #[error("{0}")]
    AgentTask(String),
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
