//! Why a keys operation failed, in the domain's terms. The HTTP layer
//! (`http::key_errors`) gives each variant Azure Key Vault's status and error code.

/// A keys operation's failure. Messages say what happened and what to do, and never
/// contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyOpError {
    /// The request is malformed or asks for something this vault does not do.
    #[error("{0}")]
    BadParameter(String),
    /// No key of this name (or it is soft-deleted).
    #[error("A key with (name/id) {name} was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command.")]
    KeyNotFound {
        /// The key name.
        name: String,
    },
    /// The key exists but not this version.
    #[error("A key with (name/id) {name}/{version} was not found in this key vault.")]
    VersionNotFound {
        /// The key name.
        name: String,
        /// The version asked for.
        version: String,
    },
    /// No soft-deleted key of this name.
    #[error("Deleted Key not found: {name}")]
    DeletedKeyNotFound {
        /// The key name.
        name: String,
    },
    /// The operation conflicts with the key's current state.
    #[error(transparent)]
    Conflict(#[from] KeyConflict),
    /// The key version may not be used for this operation now.
    #[error("Operation {operation} {reason}")]
    Unusable {
        /// The JWK operation (`wrapKey`, `sign`, ...).
        operation: &'static str,
        /// Why not.
        reason: Unusable,
    },
    /// Purge protection holds the key until its scheduled purge date.
    #[error("Operation purge is not allowed because purge protection is enabled for vault '{vault}': key {name} can be purged after its scheduled purge date ({scheduled_purge_date}).")]
    PurgeProtected {
        /// The vault.
        vault: String,
        /// The key name.
        name: String,
        /// When the key may be purged (Unix seconds).
        scheduled_purge_date: i64,
    },
    /// The vault's token refused or failed (RSA-HSM keys).
    #[error("the vault's HSM: {0}")]
    Token(#[from] pgcmk_pkcs11::TokenError),
    /// A failure that is not the caller's: storage, sealing, key generation.
    #[error(transparent)]
    Internal(#[from] crate::Error),
}

impl From<pgcmk_crypto::Error> for KeyOpError {
    fn from(e: pgcmk_crypto::Error) -> Self {
        Self::Internal(e.into())
    }
}

/// Conflicts between a request and a key's state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyConflict {
    /// The name belongs to a soft-deleted key.
    #[error("Key {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the key can only be recovered or purged.")]
    DeletedButRecoverable {
        /// The key name.
        name: String,
    },
    /// A restore names a key that already exists.
    #[error("a key named {name} already exists in this vault: delete and purge it, or restore into another vault")]
    AlreadyExists {
        /// The key name.
        name: String,
    },
}

/// Why a key version may not be used now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unusable {
    /// `attributes.enabled` is false.
    #[error("is not allowed on a disabled key.")]
    Disabled,
    /// Before `attributes.nbf`.
    #[error("is not allowed on a key that is not yet valid (nbf).")]
    NotYetValid,
    /// At or after `attributes.exp`.
    #[error("is not allowed on an expired key.")]
    Expired,
    /// The key's `key_ops` do not include the operation.
    #[error("is not permitted by this key's key_ops.")]
    OperationNotPermitted,
    /// The private key never leaves the vault's token (RSA-HSM).
    #[error("is not allowed on an RSA-HSM key: its private key never leaves the vault's HSM token; back up the token with its own tools instead.")]
    NotExportable,
}

/// `BadParameter` with a message.
pub(crate) fn bad(message: impl Into<String>) -> KeyOpError {
    KeyOpError::BadParameter(message.into())
}
