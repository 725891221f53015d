//! Key encryption keys (KEKs): the trait the node agent and control plane use to
//! wrap and unwrap a server's DEK, and its providers: [`akv`] (Azure Key Vault REST,
//! `pgcmk vault serve`), [`pkcs11`] (HSM tokens) and [`kmip`] (KMIP servers). A
//! [`KeyReference`] says which provider reaches a key.
//!
//! A provider reports failures as [`KeyError`], which says whether the failure is a
//! definitive denial (the customer revoked access: go Inaccessible at once) or
//! transient (retry with backoff; a vault outage is not a revocation).

#![forbid(unsafe_code)]

pub mod akv;
mod b64url;
pub mod kmip;
pub mod pkcs11;
mod reference;

use pgcmk_crypto::Dek;
pub use reference::{InvalidKeyId, KeyReference, KeyVersionId};

/// A DEK wrapped by one KEK version. Safe to store: reveals nothing without the KEK.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WrappedDek {
    /// The exact key version that wrapped it.
    pub kek: KeyVersionId,
    /// The wrapping algorithm, in Azure Key Vault's naming (`RSA-OAEP-256`), for
    /// every provider.
    pub algorithm: String,
    /// The wrapped bytes.
    #[serde(with = "b64url")]
    pub ciphertext: Vec<u8>,
}

/// Why a KEK operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key vault definitively refused: access revoked (403), key disabled,
    /// expired, not yet valid, deleted or purged, or the identity is gone.
    #[error("key access denied: {reason}")]
    Denied {
        /// What the vault said, without secrets.
        reason: String,
    },
    /// A failure that may pass: timeout, connection refused, 5xx, throttling.
    #[error("key vault unreachable or failing: {reason}")]
    Transient {
        /// What went wrong, without secrets.
        reason: String,
    },
    /// The request itself is wrong (bad key reference, unsupported key type or size).
    #[error("invalid key request: {reason}")]
    Invalid {
        /// What was wrong and how to fix it.
        reason: String,
    },
}

impl From<InvalidKeyId> for KeyError {
    fn from(e: InvalidKeyId) -> Self {
        KeyError::Invalid { reason: e.reason }
    }
}

impl KeyError {
    /// True when retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, KeyError::Transient { .. })
    }
}

/// Metadata about the key a reference currently points to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The version a versionless reference resolves to now (or the pinned one).
    pub current: KeyVersionId,
    /// RSA modulus size in bits.
    pub size_bits: u32,
    /// Whether the key is enabled.
    pub enabled: bool,
}

/// The key's type, as the provider names it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyType {
    /// An RSA key held in software (AKV `kty` `RSA`).
    Rsa,
    /// An RSA key held in an HSM (AKV `kty` `RSA-HSM`).
    RsaHsm,
    /// An AES key held by a KMIP server, which wraps with AES-256-GCM.
    Aes,
    /// Any other type (`EC`, `oct-HSM`, ...), which cannot wrap a DEK here.
    Other(String),
}

impl KeyType {
    /// True for RSA keys, in software or in an HSM.
    pub fn is_rsa(&self) -> bool {
        matches!(self, KeyType::Rsa | KeyType::RsaHsm)
    }
}

impl std::fmt::Display for KeyType {
    /// The type's name in Azure Key Vault's terms (`kty`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyType::Rsa => "RSA",
            KeyType::RsaHsm => "RSA-HSM",
            KeyType::Aes => "AES",
            KeyType::Other(kty) => kty,
        })
    }
}

/// What a key vault (a service holding many customers' keys) tells about itself:
/// what create-time validation requires of a customer-managed key's vault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultFacts {
    /// The vault, for messages (its URL).
    pub vault: String,
    /// Soft delete and purge protection, as the vault reports them on the key.
    pub protection: DeletionProtection,
    /// The vault's location (e.g. `westeurope`), when the provider can learn it
    /// without an administrator credential; `None` when it cannot (for a real Azure
    /// Key Vault the location is an Azure Resource Manager property).
    pub location: Option<String>,
}

/// How the vault protects the key from deletion, as the vault reports it on the key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeletionProtection {
    /// AKV's `attributes.recoveryLevel`, e.g. `Recoverable` (soft delete and purge
    /// protection) or `Recoverable+Purgeable` (soft delete only); `None` when the
    /// vault does not say.
    pub recovery_level: Option<String>,
    /// AKV's `attributes.recoverableDays`: how long a deleted key stays recoverable.
    pub recoverable_days: Option<u32>,
}

impl DeletionProtection {
    /// True when a deleted key can be recovered (soft delete is on).
    pub fn soft_delete(&self) -> bool {
        self.recovery_level
            .as_deref()
            .is_some_and(|l| l.contains("Recoverable"))
    }

    /// True when a deleted key cannot be purged before its retention ends.
    pub fn purge_protection(&self) -> bool {
        self.soft_delete()
            && self
                .recovery_level
                .as_deref()
                .is_some_and(|l| !l.contains("Purgeable"))
    }
}

/// Everything create-time validation needs to know about a key and its vault,
/// learned with the key's own credential (`get`), never an administrator's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyDescription {
    /// The version a versionless reference resolves to now (or the pinned one).
    pub current: KeyVersionId,
    /// RSA in software or in an HSM, or another type.
    pub key_type: KeyType,
    /// RSA modulus size in bits; `None` for keys that are not RSA.
    pub size_bits: Option<u32>,
    /// Whether the key is enabled.
    pub enabled: bool,
    /// Not valid before (Unix seconds), if set.
    pub not_before: Option<i64>,
    /// Expires at (Unix seconds), if set.
    pub expires: Option<i64>,
    /// The key vault's protections and location; `None` for providers whose keys
    /// live in a device or server the customer runs (a PKCS#11 token, a KMIP
    /// server), where deletion and placement are the customer's own decisions.
    pub vault: Option<VaultFacts>,
}

/// A key encryption key reached through some provider. Blocking: callers in async
/// code use `spawn_blocking`.
pub trait KeyEncryptionKey: Send + Sync {
    /// The reference this KEK was configured with (versioned or versionless).
    fn reference(&self) -> &KeyReference;
    /// Reads the key's current version and properties (needs `get`). Cheap: one
    /// request, for the key monitor's periodic check.
    fn info(&self) -> Result<KeyInfo, KeyError>;
    /// Describes the key and its vault for validation (needs `get`; may make more
    /// requests than [`info`](Self::info), e.g. to learn the vault's location).
    fn describe(&self) -> Result<KeyDescription, KeyError>;
    /// Reads one version of the key: `Some(version)` that exact one, `None` the
    /// newest, whether or not this reference pins a version (needs `get`). What an
    /// operator is told when a version refuses to unwrap.
    fn version_info(&self, version: Option<&KeyVersionId>) -> Result<KeyInfo, KeyError>;
    /// Wraps `dek` with the current key version (needs `wrapKey`).
    fn wrap(&self, dek: &Dek) -> Result<WrappedDek, KeyError>;
    /// Unwraps with the exact version recorded in `wrapped` (needs `unwrapKey`).
    fn unwrap(&self, wrapped: &WrappedDek) -> Result<Dek, KeyError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_levels_say_soft_delete_and_purge_protection() {
        let level = |l: Option<&str>| DeletionProtection {
            recovery_level: l.map(String::from),
            recoverable_days: None,
        };
        for (l, soft, protected) in [
            (Some("Recoverable"), true, true),
            (Some("CustomizedRecoverable"), true, true),
            (Some("Recoverable+ProtectedSubscription"), true, true),
            (Some("Recoverable+Purgeable"), true, false),
            (Some("CustomizedRecoverable+Purgeable"), true, false),
            (Some("Purgeable"), false, false),
            (None, false, false),
        ] {
            let p = level(l);
            assert_eq!(
                (p.soft_delete(), p.purge_protection()),
                (soft, protected),
                "{l:?}"
            );
        }
        assert_eq!(KeyType::RsaHsm.to_string(), "RSA-HSM");
        assert!(!KeyType::Other("EC".into()).is_rsa());
    }
}
