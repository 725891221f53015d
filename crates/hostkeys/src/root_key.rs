//! A service's root key: the one secret every other key of the service is derived
//! from (with HKDF, one purpose each), so it never lies in the service's database.
//!
//! It is either a 32-byte file (0600, created on first start: a copy of the disk
//! then holds it) or derived with Argon2id from a passphrase the operator gives at
//! every start (then no copy of the disk holds it). A passphrase-derived key comes
//! with a [`PassphraseRecord`]: its salt, and a check value sealed under the key
//! that tells a wrong passphrase from a right one. Each service keeps that record
//! where it keeps its other settings; this module only says what is in it.

use std::path::Path;

use pgcmk_crypto::sealed::Sealer;
use pgcmk_crypto::{kdf, random, SecretBytes, SymmetricKey};

use crate::{files, Error};

/// The shortest passphrase accepted.
pub const MIN_PASSPHRASE: usize = 12;
/// Bytes of Argon2id salt.
const SALT_LEN: usize = 16;
/// Binds the check value to its purpose.
const CHECK_AAD: &[u8] = b"root-check";
const CHECK_PLAINTEXT: &[u8] = b"pgcmk root key check v1";

/// Where the root key comes from.
#[derive(Clone, Debug)]
pub enum RootKeySource {
    /// The root key file (created on first start).
    File,
    /// Argon2id over this passphrase (its salt is in the service's [`PassphraseRecord`]).
    Passphrase(SecretBytes),
}

/// What a passphrase-derived root key needs kept beside the service's data: not
/// secret, but needed at every start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassphraseRecord {
    /// The Argon2id salt.
    pub salt: Vec<u8>,
    /// A value sealed under the derived key; `None` in state made before it was kept.
    pub check: Option<Vec<u8>>,
}

/// Where one service keeps its root key, and whether it may create one.
#[derive(Clone, Copy, Debug)]
pub struct RootKeyPlace<'a> {
    /// The root key file, in root-key-file mode.
    pub key_file: &'a Path,
    /// What the service calls its directory in messages ("data directory").
    pub directory: &'a str,
    /// True when the service holds no state yet, so a new root key may be made.
    pub first_start: bool,
}

/// A root key, and the record to store when a passphrase-derived key was made now.
#[derive(Debug)]
pub struct LoadedRootKey {
    /// The root key.
    pub key: SymmetricKey,
    /// Set on the first start with a passphrase: store it before sealing anything
    /// under the key, or the key cannot be derived again.
    pub new_record: Option<PassphraseRecord>,
}

/// Loads the root key from `source`, given the service's passphrase `record` (if
/// it has one); creates the key on a first start.
pub fn load(
    place: &RootKeyPlace<'_>,
    source: RootKeySource,
    record: Option<PassphraseRecord>,
) -> Result<LoadedRootKey, Error> {
    let refuse = |message: String| Err(Error::RootKey(message));
    let directory = place.directory;
    match source {
        RootKeySource::File => {
            if record.is_some() {
                return refuse(format!(
                    "this {directory} uses a passphrase: start with --passphrase-env VAR"
                ));
            }
            let file = place.key_file;
            let key = match std::fs::read(file) {
                Ok(bytes) => SymmetricKey::from_slice(SecretBytes::new(bytes).expose_secret())
                    .map_err(|_| {
                        Error::RootKey(format!(
                            "{} is not a 32-byte key: restore it from your backup",
                            file.display()
                        ))
                    })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && place.first_start => {
                    let key = SymmetricKey::generate()?;
                    files::write_new_private(file, key.expose_secret())?;
                    key
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return refuse(format!(
                        "{} is missing but the {directory} exists: restore the root key file",
                        file.display()
                    ))
                }
                Err(e) => {
                    return refuse(format!(
                        "cannot read {} ({e}): fix its permissions or restore the root key file",
                        file.display()
                    ))
                }
            };
            Ok(LoadedRootKey {
                key,
                new_record: None,
            })
        }
        RootKeySource::Passphrase(passphrase) => {
            if passphrase.len() < MIN_PASSPHRASE {
                return refuse(format!(
                    "the passphrase must have at least {MIN_PASSPHRASE} characters"
                ));
            }
            if let Some(record) = record {
                let key = kdf::passphrase_key(passphrase.expose_secret(), &record.salt)?;
                if let Some(check) = &record.check {
                    Sealer::new(&key)?.open(CHECK_AAD, check).map_err(|_| {
                        Error::RootKey(format!(
                            "wrong passphrase: it does not match the one this {directory} \
                             was created with"
                        ))
                    })?;
                }
                return Ok(LoadedRootKey {
                    key,
                    new_record: None,
                });
            }
            if place.key_file.exists() || !place.first_start {
                return refuse(format!(
                    "this {directory} was not created with a passphrase: start without \
                     --passphrase-env"
                ));
            }
            let salt = random::array::<SALT_LEN>()?.to_vec();
            let key = kdf::passphrase_key(passphrase.expose_secret(), &salt)?;
            let check = Sealer::new(&key)?.seal(CHECK_AAD, CHECK_PLAINTEXT)?;
            Ok(LoadedRootKey {
                key,
                new_record: Some(PassphraseRecord {
                    salt,
                    check: Some(check),
                }),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn pass(p: &str) -> RootKeySource {
        RootKeySource::Passphrase(SecretBytes::new(p.as_bytes().to_vec()))
    }

    fn place(key_file: &Path, first_start: bool) -> RootKeyPlace<'_> {
        RootKeyPlace {
            key_file,
            directory: "test directory",
            first_start,
        }
    }

    fn refusal(result: Result<LoadedRootKey, Error>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn file_mode_creates_the_key_once_0600_and_refuses_a_missing_or_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("root.key");
        let first = load(&place(&file, true), RootKeySource::File, None).unwrap();
        assert!(first.new_record.is_none());
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load(&place(&file, false), RootKeySource::File, None).unwrap();
        assert_eq!(again.key, first.key);

        let err = refusal(load(&place(&file, false), pass("long enough phrase"), None));
        assert!(err.contains("not created with a passphrase"), "{err}");
        std::fs::write(&file, [1u8; 31]).unwrap();
        let err = refusal(load(&place(&file, false), RootKeySource::File, None));
        assert!(err.contains("is not a 32-byte key"), "{err}");
        std::fs::remove_file(&file).unwrap();
        let err = refusal(load(&place(&file, false), RootKeySource::File, None));
        assert!(
            err.contains("root.key is missing but the test directory exists"),
            "{err}"
        );
        assert!(!file.exists(), "a missing key is not replaced by a new one");
    }

    #[test]
    fn passphrase_mode_keeps_no_key_file_and_refuses_a_wrong_or_missing_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("root.key");
        let err = refusal(load(&place(&file, true), pass("short"), None));
        assert!(err.contains("at least 12"), "{err}");
        let first = load(&place(&file, true), pass("correct horse battery"), None).unwrap();
        let record = first.new_record.clone().expect("a record to keep");
        assert!(!file.exists());

        let again = load(
            &place(&file, false),
            pass("correct horse battery"),
            Some(record.clone()),
        )
        .unwrap();
        assert_eq!(again.key, first.key);
        assert!(again.new_record.is_none());
        let err = refusal(load(
            &place(&file, false),
            pass("correct horse batterz"),
            Some(record.clone()),
        ));
        assert!(err.contains("wrong passphrase"), "{err}");
        let err = refusal(load(
            &place(&file, false),
            RootKeySource::File,
            Some(record.clone()),
        ));
        assert!(err.contains("--passphrase-env"), "{err}");
        let err = refusal(load(
            &place(&file, false),
            pass("correct horse battery"),
            None,
        ));
        assert!(err.contains("not created with a passphrase"), "{err}");

        // A record kept before check values were: the salt alone gives the same key.
        let old = PassphraseRecord {
            check: None,
            ..record
        };
        let key = load(
            &place(&file, false),
            pass("correct horse battery"),
            Some(old),
        )
        .unwrap();
        assert_eq!(key.key, first.key);
    }
}
