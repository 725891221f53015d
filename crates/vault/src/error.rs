//! The crate's one public error type.

use std::path::PathBuf;

/// Why a vault operation failed. Messages never contain key material or secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The embedded database failed or holds data this version cannot read.
    #[error("vault storage: {0}; check the data directory's disk and permissions")]
    Storage(#[from] StorageError),
    /// A cryptographic operation failed.
    #[error(transparent)]
    Crypto(#[from] pgcmk_crypto::Error),
    /// The root key is missing or wrong (wrong passphrase, or a different root.key file).
    #[error("root key: {0}")]
    RootKey(String),
    /// The root key, the TLS identity or a durable file write failed
    /// ([`pgcmk_hostkeys`]); the message says what to do.
    #[error(transparent)]
    HostKeys(#[from] pgcmk_hostkeys::Error),
    /// A port the service keeps across restarts is taken by another process.
    #[error(
        "{listener} cannot listen on {address}: the port is in use by another process. \
         The vault's addresses do not change across restarts (key ids, tokens and node \
         agents contain them), so it does not move by itself: stop the process holding \
         port {port} (`ss -ltnp 'sport = :{port}'` shows it) and start the vault again{how_to_move}",
        port = .address.port(),
        how_to_move = .listener.how_to_move()
    )]
    AddressInUse {
        /// Which listener.
        listener: crate::listen::Listener,
        /// The address it must have.
        address: std::net::SocketAddr,
    },
    /// An identity of this name exists already.
    #[error("an identity named '{0}' already exists")]
    IdentityExists(String),
    /// A configuration value or file is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A request to the vault service failed (client side).
    #[error("{0}")]
    Client(String),
    /// The vault service answered with an error.
    #[error("vault service answered {status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error code (Azure Key Vault style).
        code: String,
        /// The service's explanation.
        message: String,
    },
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// What went wrong in the embedded database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The database file could not be opened or created.
    #[error("opening the database: {0}")]
    Open(#[from] redb::DatabaseError),
    /// A transaction could not begin.
    #[error("beginning a transaction: {0}")]
    Transaction(#[from] redb::TransactionError),
    /// A table could not be opened.
    #[error("opening a table: {0}")]
    Table(#[from] redb::TableError),
    /// Reading or writing pages failed.
    #[error("reading or writing: {0}")]
    Io(#[from] redb::StorageError),
    /// A transaction could not be made durable.
    #[error("committing: {0}")]
    Commit(#[from] redb::CommitError),
    /// Any other database failure.
    #[error("{0}")]
    Database(#[from] redb::Error),
    /// A stored record could not be encoded or decoded.
    #[error("a stored record is unreadable: {0}")]
    Record(#[from] serde_json::Error),
    /// A sealed private key's text is not base64 (the record was damaged).
    #[error("sealed key {id} is corrupt")]
    CorruptSealedKey {
        /// `vault/name/version`.
        id: String,
    },
    /// The audit writer thread is gone (it panicked or the service is stopping).
    #[error("the audit writer stopped")]
    AuditWriterStopped,
    /// The audit writer could not make a batch durable.
    #[error("appending to the audit trail: {0}")]
    AuditWrite(std::sync::Arc<Error>),
}

impl Error {
    /// The database's own storage failure inside this error, if there is one.
    pub(crate) fn storage_cause(&self) -> Option<&redb::StorageError> {
        let Error::Storage(storage) = self else {
            return None;
        };
        match storage {
            StorageError::Io(e)
            | StorageError::Transaction(redb::TransactionError::Storage(e))
            | StorageError::Table(redb::TableError::Storage(e))
            | StorageError::Commit(redb::CommitError::Storage(e)) => Some(e),
            StorageError::AuditWrite(inner) => inner.storage_cause(),
            _ => None,
        }
    }
}

macro_rules! storage_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(StorageError::from(e))
            }
        }
    )*};
}
storage_error_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    serde_json::Error
);
