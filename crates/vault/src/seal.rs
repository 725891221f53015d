//! The root key and the keys derived from it.
//!
//! The root key never touches the database. It lives in `root.key` (0600), or is
//! derived with Argon2id from a passphrase read from the environment. Every other
//! secret is derived from it with HKDF, one purpose each: sealing key material,
//! signing tokens, chaining the audit trail, hashing credentials, sealing backups.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use pgcmk_crypto::mac::MacKey;
pub use pgcmk_crypto::sealed::Sealer;
use pgcmk_crypto::{kdf, SymmetricKey};
pub use pgcmk_hostkeys::root_key::RootKeySource;
use pgcmk_hostkeys::root_key::{self, PassphraseRecord, RootKeyPlace};

use crate::files::{self, DataDir};
use crate::Error;

/// Loads the root key ([`pgcmk_hostkeys::root_key`]), creating it on first start.
/// A passphrase's salt and check value live in `root.passphrase.json`.
pub fn load_root_key(
    dir: &DataDir,
    source: RootKeySource,
    first_start: bool,
) -> Result<SymmetricKey, Error> {
    let path = dir.passphrase_file();
    let record = if path.exists() {
        let stored: PassphraseFile = serde_json::from_slice(&files::read(&path)?)?;
        Some(stored.record()?)
    } else {
        None
    };
    let key_file = dir.root_key_file();
    let place = RootKeyPlace {
        key_file: &key_file,
        directory: "data directory",
        first_start,
    };
    let loaded = root_key::load(&place, source, record)?;
    if let Some(record) = loaded.new_record {
        let stored = PassphraseFile {
            salt: hex::encode(&record.salt),
            check: B64.encode(record.check.unwrap_or_default()),
        };
        files::write_atomic(&path, &serde_json::to_vec(&stored)?, 0o600)?;
    }
    Ok(loaded.key)
}

/// `root.passphrase.json`.
#[derive(serde::Serialize, serde::Deserialize)]
struct PassphraseFile {
    /// The Argon2id salt, hex.
    salt: String,
    /// The check value sealed under the derived key, base64url.
    check: String,
}

impl PassphraseFile {
    fn record(&self) -> Result<PassphraseRecord, Error> {
        Ok(PassphraseRecord {
            salt: hex::decode(&self.salt).map_err(|_| Error::RootKey("corrupt salt".into()))?,
            check: Some(
                B64.decode(&self.check)
                    .map_err(|_| Error::RootKey("corrupt check value".into()))?,
            ),
        })
    }
}

/// The purpose-specific keys derived from the root key.
pub struct DerivedKeys {
    /// Seals key material and the TLS private key in the database.
    pub storage: Sealer,
    /// Seals backup blobs (restorable only by a service holding this root key).
    pub backup: Sealer,
    /// Signs access tokens.
    pub tokens: MacKey,
    /// Chains audit entries.
    pub audit: MacKey,
    /// Hashes principal credentials for storage and lookup.
    pub credentials: MacKey,
}

impl DerivedKeys {
    /// Derives every purpose key from `root`.
    pub fn derive(root: &SymmetricKey) -> Result<Self, Error> {
        let derive = |purpose: &[u8]| kdf::derive_key(root, b"pgcmk-vault-v1", purpose);
        let mac = |purpose: &[u8]| -> Result<MacKey, Error> { Ok(MacKey::new(&derive(purpose)?)) };
        Ok(Self {
            storage: Sealer::new(&derive(b"storage-seal")?)?,
            backup: Sealer::new(&derive(b"backup-seal")?)?,
            tokens: mac(b"token-signing")?,
            audit: mac(b"audit-chain")?,
            credentials: mac(b"credential-hash")?,
        })
    }
}

/// HMAC-SHA256 of `data` under `key`, as lowercase hex.
pub fn mac_hex(key: &MacKey, data: &[u8]) -> String {
    hex::encode(key.sign(data))
}
