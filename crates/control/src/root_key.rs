//! The control plane's root key, the keys derived from it, and the
//! managed-identity secrets sealed under it.
//!
//! An identity's secret (a customer's user-assigned identity, or the platform's)
//! is what lets a process ask the vault for tokens, so it never lies on disk in
//! the clear: the state store holds it sealed (AES-256-GCM-SIV) under a key
//! derived from the root key, and the control plane hands it to each node agent
//! over the agent's stdin.
//!
//! The root key is either `STATE/root.key` (0600, created on first start: a copy
//! of the disk is then enough to open the secrets) or derived with Argon2id from
//! a passphrase that the operator gives at every start (then it is not); loading
//! it is [`pgcmk_hostkeys::root_key`]'s, the vault's too. The passphrase's salt
//! and check value are settings in the store; another sealed check value there
//! tells a wrong root key (of either kind) from a right one.

use std::path::Path;

use pgcmk_crypto::sealed::Sealer;
use pgcmk_crypto::{kdf, SecretBytes, SymmetricKey};
pub use pgcmk_hostkeys::root_key::RootKeySource;
use pgcmk_hostkeys::root_key::{self, PassphraseRecord, RootKeyPlace};

use crate::error::StoreError;
use crate::store::{Store, PLATFORM_IDENTITY};
use crate::Error;

/// The root key file's name in the state directory.
pub const ROOT_KEY_FILE: &str = "root.key";
/// Settings: the passphrase's Argon2id salt and check value, and the check value
/// of the identity-secret key (either kind of root key).
const SALT: &str = "root-key-salt";
const PASSPHRASE_CHECK: &str = "root-key-passphrase-check";
const CHECK: &str = "root-key-check";
const CHECK_PLAINTEXT: &[u8] = b"pgcmk control root key check v1";

/// The keys the control plane derives from its root key.
#[derive(Debug)]
pub struct ControlKeys {
    /// Seals the managed-identity secrets in the state store.
    pub identity_secrets: IdentitySecrets,
    /// Seals the REST API's TLS server key in the state store.
    pub tls: Sealer,
    /// Seals the servers CA's key in the state store ([`crate::servers_ca`]).
    pub servers_ca: Sealer,
    /// Seals the etcd CA's key in the state store ([`crate::etcd_tls`]).
    pub etcd_ca: Sealer,
}

impl ControlKeys {
    /// Loads the root key (creating it on first start), checks that it is the one
    /// this state was sealed with, and derives the keys.
    pub fn open(state_dir: &Path, store: &Store, source: RootKeySource) -> Result<Self, Error> {
        let first_start = store.setting(CHECK)?.is_none();
        let root = load_root_key(state_dir, store, source, first_start)?;
        let derive = |purpose: &[u8]| kdf::derive_key(&root, b"pgcmk-control-v1", purpose);
        let sealer = Sealer::new(&derive(b"identity-secret-seal")?)?;
        match store.setting(CHECK)? {
            Some(check) => {
                sealer.open(CHECK.as_bytes(), &check).map_err(|_| {
                    Error::RootKey(
                        "the root key or passphrase does not match this state directory: \
                         give the one it was created with"
                            .into(),
                    )
                })?;
            }
            None => {
                let check = sealer.seal(CHECK.as_bytes(), CHECK_PLAINTEXT)?;
                store.put_settings(&[(CHECK, &check)])?;
            }
        }
        Ok(Self {
            identity_secrets: IdentitySecrets { sealer },
            tls: Sealer::new(&derive(b"tls-server-key-seal")?)?,
            servers_ca: Sealer::new(&derive(b"servers-ca-key-seal")?)?,
            etcd_ca: Sealer::new(&derive(b"etcd-ca-key-seal")?)?,
        })
    }
}

/// Seals and opens the managed-identity secrets kept in the state store.
#[derive(Debug)]
pub struct IdentitySecrets {
    sealer: Sealer,
}

impl IdentitySecrets {
    /// Seals `secret` for `owner` (a server id, or the platform).
    pub fn seal(&self, owner: &str, secret: &SecretBytes) -> Result<Vec<u8>, Error> {
        Ok(self.sealer.seal(&aad(owner), secret.expose_secret())?)
    }

    /// Stores `secret` for `owner`, sealed, replacing any earlier one.
    pub fn put(&self, store: &Store, owner: &str, secret: &SecretBytes) -> Result<(), Error> {
        store.put_sealed_identity_secret(owner, &self.seal(owner, secret)?)
    }

    /// The secret stored for `owner`.
    pub fn get(&self, store: &Store, owner: &str) -> Result<SecretBytes, Error> {
        let sealed = store.sealed_identity_secret(owner)?.ok_or_else(|| {
            Error::Store(StoreError::Missing(if owner == PLATFORM_IDENTITY {
                "no platform identity secret is stored yet: start `pgcmk serve` with \
                 --platform-identity-credential-file"
                    .into()
            } else {
                format!(
                    "server {owner} has no identity secret in the state: delete the server and \
                     create it again with its identity's credential file"
                )
            }))
        })?;
        self.sealer.open(&aad(owner), &sealed).map_err(|_| {
            Error::Store(StoreError::Missing(format!(
                "the identity secret of '{owner}' does not open"
            )))
        })
    }
}

/// Binds a sealed secret to its owner, so that blobs cannot be swapped.
fn aad(owner: &str) -> Vec<u8> {
    [b"identity-secret/".as_slice(), owner.as_bytes()].concat()
}

/// Loads the root key; a passphrase's salt and check value are settings.
fn load_root_key(
    state_dir: &Path,
    store: &Store,
    source: RootKeySource,
    first_start: bool,
) -> Result<SymmetricKey, Error> {
    // State made before the passphrase's check value was kept has the salt alone.
    let record = match store.setting(SALT)? {
        Some(salt) => Some(PassphraseRecord {
            salt,
            check: store.setting(PASSPHRASE_CHECK)?,
        }),
        None => None,
    };
    let key_file = state_dir.join(ROOT_KEY_FILE);
    let place = RootKeyPlace {
        key_file: &key_file,
        directory: "state directory",
        first_start,
    };
    let loaded = root_key::load(&place, source, record)?;
    if let Some(record) = loaded.new_record {
        let check = record.check.unwrap_or_default();
        store.put_settings(&[(SALT, &record.salt), (PASSPHRASE_CHECK, &check)])?;
    }
    Ok(loaded.key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, store: &Store, source: RootKeySource) -> Result<IdentitySecrets, Error> {
        ControlKeys::open(dir, store, source).map(|keys| keys.identity_secrets)
    }

    fn pass(p: &str) -> RootKeySource {
        RootKeySource::Passphrase(SecretBytes::new(p.as_bytes().to_vec()))
    }

    #[test]
    fn root_key_file_mode_creates_once_and_refuses_a_wrong_or_missing_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let secrets = open(dir.path(), &store, RootKeySource::File).unwrap();
        let secret = SecretBytes::new(b"mi-header-secret".to_vec());
        secrets.put(&store, "srv1", &secret).unwrap();
        let sealed = store.sealed_identity_secret("srv1").unwrap().unwrap();
        assert!(!sealed.windows(16).any(|w| w == b"mi-header-secret"));
        let again = open(dir.path(), &store, RootKeySource::File).unwrap();
        assert_eq!(again.get(&store, "srv1").unwrap(), secret);
        // A blob moved to another owner does not open.
        store.put_sealed_identity_secret("srv2", &sealed).unwrap();
        assert!(again.get(&store, "srv2").is_err());

        let file = dir.path().join(ROOT_KEY_FILE);
        std::fs::write(&file, [9u8; 32]).unwrap();
        let err = open(dir.path(), &store, RootKeySource::File).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        std::fs::remove_file(&file).unwrap();
        let err = open(dir.path(), &store, RootKeySource::File).unwrap_err();
        assert!(
            err.to_string().contains("restore the root key file"),
            "{err}"
        );
        let err = open(dir.path(), &store, pass("long enough passphrase")).unwrap_err();
        assert!(
            err.to_string().contains("not created with a passphrase"),
            "{err}"
        );
    }

    #[test]
    fn passphrase_mode_keeps_no_key_on_disk_and_refuses_a_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let err = open(dir.path(), &store, pass("short")).unwrap_err();
        assert!(err.to_string().contains("at least 12"), "{err}");
        let secrets = open(dir.path(), &store, pass("correct horse battery")).unwrap();
        secrets
            .put(&store, "p", &SecretBytes::new(b"platform".to_vec()))
            .unwrap();
        assert!(!dir.path().join(ROOT_KEY_FILE).exists());
        let err = open(dir.path(), &store, pass("correct horse batterz")).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        let err = open(dir.path(), &store, RootKeySource::File).unwrap_err();
        assert!(err.to_string().contains("--passphrase-env"), "{err}");
        let again = open(dir.path(), &store, pass("correct horse battery")).unwrap();
        assert_eq!(again.get(&store, "p").unwrap().expose_secret(), b"platform");
    }
}
