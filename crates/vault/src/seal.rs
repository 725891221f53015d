//! The root key and the keys derived from it.
//!
//! The root key never touches the database. It lives in `root.key` (0600), or is
//! derived with Argon2id from a passphrase read from the environment. Every other
//! secret is derived from it with HKDF, one purpose each: sealing key material,
//! signing tokens, chaining the audit trail, hashing credentials, sealing backups.

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
pub use pgcmk_crypto::sealed::Sealer;
use pgcmk_crypto::{kdf, random, SecretBytes, SymmetricKey};

use crate::files::{self, DataDir};
use crate::Error;

const CHECK_PLAINTEXT: &[u8] = b"pgcmk vault root key check v1";

/// Where the root key comes from.
pub enum RootKeySource {
    /// `root.key` in the data directory (created on first start).
    File,
    /// Argon2id over this passphrase (salt kept in the data directory).
    Passphrase(SecretBytes),
}

/// Loads the root key, creating it on first start. Returns it and whether it is new.
pub fn load_root_key(
    dir: &DataDir,
    source: RootKeySource,
    first_start: bool,
) -> Result<SymmetricKey, Error> {
    match source {
        RootKeySource::File => {
            let path = dir.root_key_file();
            if path.exists() {
                let bytes = SecretBytes::new(files::read(&path)?);
                return SymmetricKey::from_slice(bytes.expose_secret()).map_err(|_| {
                    Error::RootKey(format!(
                        "{} is not a 32-byte key; restore it from your backup",
                        path.display()
                    ))
                });
            }
            if dir.passphrase_file().exists() {
                return Err(Error::RootKey(
                    "this data directory uses a passphrase: start with --passphrase-env VAR".into(),
                ));
            }
            if !first_start {
                return Err(Error::RootKey(format!(
                    "{} is missing but the database exists: restore the root key file",
                    path.display()
                )));
            }
            let key = SymmetricKey::generate()?;
            files::write_atomic(&path, key.expose_secret(), 0o600)?;
            Ok(key)
        }
        RootKeySource::Passphrase(passphrase) => {
            if passphrase.len() < 12 {
                return Err(Error::RootKey(
                    "the passphrase must have at least 12 characters".into(),
                ));
            }
            let path = dir.passphrase_file();
            if path.exists() {
                let stored: PassphraseFile = serde_json::from_slice(&files::read(&path)?)?;
                let salt =
                    hex::decode(&stored.salt).map_err(|_| Error::RootKey("corrupt salt".into()))?;
                let key = passphrase_key(&passphrase, &salt)?;
                let check = B64
                    .decode(&stored.check)
                    .map_err(|_| Error::RootKey("corrupt check value".into()))?;
                Sealer::new(&key)?
                    .open(b"root-check", &check)
                    .map_err(|_| Error::RootKey("wrong passphrase".into()))?;
                return Ok(key);
            }
            if dir.root_key_file().exists() || !first_start {
                return Err(Error::RootKey(
                    "this data directory was not created with a passphrase: start without --passphrase-env".into(),
                ));
            }
            let salt = random::array::<16>()?;
            let key = passphrase_key(&passphrase, &salt)?;
            let check = Sealer::new(&key)?.seal(b"root-check", CHECK_PLAINTEXT)?;
            let stored = PassphraseFile {
                salt: hex::encode(salt),
                check: B64.encode(check),
            };
            files::write_atomic(&path, &serde_json::to_vec(&stored)?, 0o600)?;
            Ok(key)
        }
    }
}

/// Argon2id over the passphrase (the crypto crate's profile: 19 MiB, 2 passes).
fn passphrase_key(passphrase: &SecretBytes, salt: &[u8]) -> Result<SymmetricKey, Error> {
    kdf::passphrase_key(passphrase.expose_secret(), salt).map_err(|e| Error::RootKey(e.to_string()))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PassphraseFile {
    salt: String,
    check: String,
}

/// The purpose-specific keys derived from the root key.
pub struct DerivedKeys {
    /// Seals key material and the TLS private key in the database.
    pub storage: Sealer,
    /// Seals backup blobs (restorable only by a service holding this root key).
    pub backup: Sealer,
    /// Signs access tokens.
    pub tokens: hmac::Key,
    /// Chains audit entries.
    pub audit: hmac::Key,
    /// Hashes principal credentials for storage and lookup.
    pub credentials: hmac::Key,
}

impl DerivedKeys {
    /// Derives every purpose key from `root`.
    pub fn derive(root: &SymmetricKey) -> Result<Self, Error> {
        let derive = |purpose: &[u8]| kdf::derive_key(root, b"pgcmk-vault-v1", purpose);
        let mac = |purpose: &[u8]| -> Result<hmac::Key, Error> {
            Ok(hmac::Key::new(
                hmac::HMAC_SHA256,
                derive(purpose)?.expose_secret(),
            ))
        };
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
pub fn mac_hex(key: &hmac::Key, data: &[u8]) -> String {
    hex::encode(hmac::sign(key, data).as_ref())
}
