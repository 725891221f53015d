//! The crate's one error type, and its typed parts.

use std::path::PathBuf;
use std::time::Duration;

use pgcmk_agent::contract::task::VersionRefusal;
use pgcmk_agent::contract::ServerState;
use pgcmk_keyprovider::KeyError;

use crate::error_code::ErrorCode;

/// What went wrong in the control plane, or in a client of its API.
///
/// Each variant has its own HTTP status and stable code in the REST API
/// ([`Error::status`], [`Error::code`]). Messages never contain key material,
/// credentials or database passwords.
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
    /// A request was malformed or not allowed; the message says how to fix it.
    #[error("{0}")]
    BadRequest(String),
    /// A REST API request came without the DBA's credential, or with a wrong one.
    #[error("{0}")]
    Unauthorized(String),
    /// No server with this name or id exists.
    #[error("server '{0}' not found: run `pgcmk server list` to see the servers")]
    NotFound(String),
    /// No backup with this label in the server's repository.
    #[error(
        "server '{server}' has no backup '{label}': run `pgcmk backup list {server}` to see \
         its backups"
    )]
    BackupNotFound {
        /// The server's name.
        server: String,
        /// The label asked for.
        label: String,
    },
    /// A server with this name exists, or is being created.
    #[error("a server named '{0}' already exists: choose another name")]
    NameTaken(String),
    /// The operation does not fit the server's current state.
    #[error(transparent)]
    State(#[from] StateConflict),
    /// A server that was being created or started settled in another state than Ready.
    #[error(
        "server '{server}' did not become Ready: {}{}",
        .state.name(),
        .state.reason().map(|r| format!(" ({r})")).unwrap_or_default()
    )]
    NotReady {
        /// The server's name.
        server: String,
        /// The state it settled in.
        state: ServerState,
    },
    /// A server that was being created or started was not Ready in time.
    #[error("server '{server}' did not become Ready within {after:?}; see {}", .log.display())]
    ReadyTimeout {
        /// The server's name.
        server: String,
        /// How long it was given.
        after: Duration,
        /// Its agent's log.
        log: PathBuf,
    },
    /// The key encryption key refused or failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The vault refuses a key version that the server needs (to start, or for its
    /// logs or fsck); the message names the version and how to fix it.
    #[error("{}", .refusal.explain(.server))]
    KeyVersionRefused {
        /// The server's name.
        server: String,
        /// The version, and what the vault said about it.
        refusal: Box<VersionRefusal>,
    },
    /// The vault refuses the key version that wraps a server's backup repository
    /// key: its backups cannot be restored; the message names the version and why.
    #[error("{}", pgcmk_agent::contract::backup::explain_backup_key_refusal(.refusal, .server))]
    BackupKeyRefused {
        /// The server whose backups they are.
        server: String,
        /// The version, and what the vault said about it.
        refusal: Box<VersionRefusal>,
    },
    /// Adding a geo-redundant copy to a server failed on the way (`cause`); the
    /// change was undone (`after` says whether that worked).
    #[error("the geo-redundant copy of server '{server}' was not added: {cause}; {after}")]
    GeoBackupNotAdded {
        /// The server's name.
        server: String,
        /// Why.
        cause: Box<Error>,
        /// What became of the server.
        after: String,
    },
    /// The first full backup of a geo-redundant copy being added failed, or did
    /// not end in time; the message says which.
    #[error("its first full backup {0}")]
    GeoFirstBackup(String),
    /// A repository in Azure Blob Storage could not be removed.
    #[error("removing a backup repository from Azure Blob Storage: {0}")]
    BlobStore(#[from] crate::azure_blob::BlobError),
    /// A short-lived run of the node agent failed or gave no answer; the message
    /// says which and where its diagnostics are.
    #[error("{0}")]
    AgentTask(String),
    /// A file of the agent contract (`agent.json`, `wrapped_dek.json`, ...) could not
    /// be read or written.
    #[error(transparent)]
    Agent(#[from] pgcmk_agent::Error),
    /// A start-up handshake could not be encoded.
    #[error(transparent)]
    Handshake(#[from] pgcmk_agent::contract::HandshakeError),
    /// The embedded state store failed.
    #[error("state store: {0}")]
    Store(#[from] StoreError),
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
    /// A highly available server's operation could not be done.
    #[error(transparent)]
    HighAvailability(#[from] crate::platform::HaError),
    /// A server's high availability could not be enabled or disabled.
    #[error(transparent)]
    HaUpdate(#[from] crate::platform::HaUpdateError),
    /// A host's enrollment, credential or registration was refused.
    #[error(transparent)]
    Host(#[from] crate::hosts::HostError),
    /// An operation's worker ended before it answered.
    #[error("operation aborted: {0}")]
    Aborted(String),
    /// A client could not reach the REST API, or does not trust its certificate.
    #[error("{0}")]
    Unreachable(String),
    /// The control plane could not administer etcd's access (users, roles, keys).
    #[error(transparent)]
    Etcd(#[from] crate::etcd_auth::EtcdError),
    /// The REST API answered a client's request with an error.
    #[error("{message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The stable code ([`Error::code`] on the server's side).
        code: ErrorCode,
        /// What happened and what to do.
        message: String,
    },
}

/// An operation that does not fit a server's current state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateConflict {
    /// Stopping a stopped server.
    #[error("server '{0}' is already stopped")]
    AlreadyStopped(String),
    /// Any operation on a server that is being deleted.
    #[error("server '{0}' is being deleted")]
    BeingDeleted(String),
    /// Starting a server that runs.
    #[error(
        "server '{server}' is {state} and its agent (pid {pid}) runs: stop it first to start \
         it again"
    )]
    Running {
        /// The server's name.
        server: String,
        /// Its state's name.
        state: &'static str,
        /// Its agent's pid.
        pid: u32,
    },
    /// Checking the volume of a server that runs.
    #[error(
        "server '{server}' is {state} with a running agent: fsck checks a volume that nothing \
         writes to; stop it first (`pgcmk server stop {server}`)"
    )]
    RunningVolume {
        /// The server's name.
        server: String,
        /// Its state's name.
        state: &'static str,
    },
    /// Starting a server whose first start was cut short before it was provisioned.
    #[error(
        "server '{0}' was never provisioned: its first start was cut short (the control \
         plane stopped during the create), so it holds no usable cluster; delete it \
         (`pgcmk server delete {0}`) and create it again"
    )]
    NeverProvisioned(String),
    /// Asking a server that does not run to check its key.
    #[error("server '{0}' is not running: start it first")]
    NotRunning(String),
    /// Resetting the password of a server that is not Ready.
    #[error(
        "server '{server}' is {state}: its password is set in the running PostgreSQL, so it \
         must be Ready (`pgcmk server start {server}`, or `pgcmk server show {server}` for why \
         it is not)"
    )]
    NotServing {
        /// The server's name.
        server: String,
        /// Its state's name.
        state: &'static str,
    },
    /// Deleting a server that read replicas stream from.
    #[error(
        "server '{server}' has read replicas ({replicas}): delete or promote them first \
         (`pgcmk server replica list --source {server}`)"
    )]
    HasReplicas {
        /// The server's name.
        server: String,
        /// Its replicas' names, comma-separated.
        replicas: String,
    },
    /// Working on the backups of a server that is not Ready.
    #[error(
        "server '{server}' is {state}: its backups are reached through its encrypted volume \
         (pgBackRest's configuration and repository passphrase live there), so it must be \
         Ready (`pgcmk server start {server}`, or `pgcmk server show {server}` for why it is \
         not)"
    )]
    BackupsNeedServing {
        /// The server's name.
        server: String,
        /// Its state's name.
        state: &'static str,
    },
    /// Adding a geo-redundant copy to a server that keeps one.
    #[error(
        "server '{server}' keeps a geo-redundant copy of its backups already (in {location}): \
         remove it first (`pgcmk server update {server} --no-geo-backup`) to keep one elsewhere"
    )]
    GeoBackupKept {
        /// The server's name.
        server: String,
        /// Where its copy is.
        location: String,
    },
    /// Removing the geo-redundant copy of a server that has none.
    #[error("server '{0}' has no geo-redundant copy of its backups: there is nothing to remove")]
    NoGeoBackup(String),
}

/// A failure of the embedded state store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file could not be opened.
    #[error(
        "cannot open {}: {source} (is another `pgcmk serve` using this state directory?)",
        .path.display()
    )]
    Open {
        /// The database file.
        path: PathBuf,
        /// redb's error.
        #[source]
        source: Box<redb::DatabaseError>,
    },
    /// The database failed.
    #[error(transparent)]
    Database(#[from] Box<redb::Error>),
    /// A stored value could not be encoded or decoded.
    #[error("{what}: {source}")]
    Codec {
        /// What was being encoded or decoded.
        what: &'static str,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// Something the state must hold is missing or does not open; the message
    /// says what to do.
    #[error("{0}")]
    Missing(String),
    /// A file in the state directory belongs to another state.
    #[error("{0}")]
    Foreign(String),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The HTTP status the REST API answers this error with.
    pub fn status(&self) -> u16 {
        match self {
            Error::Api { status, .. } => *status,
            _ => self.code().status(),
        }
    }

    /// The stable code of the REST API's error body.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::BadRequest(_) => ErrorCode::BadRequest,
            Error::Unauthorized(_) => ErrorCode::Unauthorized,
            Error::NotFound(_) | Error::BackupNotFound { .. } => ErrorCode::NotFound,
            Error::NameTaken(_) => ErrorCode::NameTaken,
            Error::State(_) => ErrorCode::StateConflict,
            Error::NotReady { .. } => ErrorCode::NotReady,
            Error::ReadyTimeout { .. } => ErrorCode::ReadyTimeout,
            Error::Key(e) if e.is_retryable() => ErrorCode::KeyVaultUnavailable,
            Error::Key(_) => ErrorCode::KeyAccessDenied,
            Error::KeyVersionRefused { .. } | Error::BackupKeyRefused { .. } => {
                ErrorCode::KeyVersionRefused
            }
            Error::Api { code, .. } => *code,
            Error::GeoBackupNotAdded { cause, .. } => cause.code(),
            Error::HighAvailability(
                crate::platform::HaError::NotHighlyAvailable(_)
                | crate::platform::HaError::NotForHighlyAvailable { .. }
                | crate::platform::HaError::NoPrimary(_)
                | crate::platform::HaError::NoCandidate(_),
            ) => ErrorCode::StateConflict,
            Error::HaUpdate(crate::platform::HaUpdateError::NodeNotSettled { .. }) => {
                ErrorCode::ReadyTimeout
            }
            Error::HaUpdate(_) => ErrorCode::StateConflict,
            Error::Host(e) => e.code(),
            _ => ErrorCode::InternalError,
        }
    }
}

impl From<redb::DatabaseError> for Error {
    fn from(e: redb::DatabaseError) -> Self {
        Error::Store(StoreError::Database(Box::new(e.into())))
    }
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Database(Box::new(e))
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
