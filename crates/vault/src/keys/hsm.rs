//! The vault's own token (`pgcmk vault serve --pkcs11-module … --pkcs11-token …
//! --pkcs11-pin-file …`): where `kty: RSA-HSM` keys are generated and used. The
//! vault keeps only a reference to each version's key pair (token label and
//! `CKA_ID`) and its public half; decrypt, unwrap and sign run in the token, and
//! purge destroys the pair there.

use std::path::PathBuf;
use std::sync::Arc;

use pgcmk_crypto::rsa::{EncryptionAlgorithm, RsaKeySize, SignatureAlgorithm};
use pgcmk_crypto::SecretBytes;
use pgcmk_pkcs11::rsa_key::{self, RsaPublicParts};
use pgcmk_pkcs11::{Access, Module, TokenError};
use serde::{Deserialize, Serialize};

use super::error::KeyOpError;

/// Which token the vault uses, and the PIN of its user.
pub struct HsmConfig {
    /// The PKCS#11 module (shared library) of the token.
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The token user's PIN (read from a 0600 file, never argv or environment).
    pub pin: SecretBytes,
}

impl std::fmt::Debug for HsmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmConfig")
            .field("module", &self.module)
            .field("token", &self.token)
            .field("pin", &"REDACTED")
            .finish()
    }
}

/// Where one RSA-HSM key version lives: stored in its version record instead of a
/// sealed private key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HsmObject {
    /// The token's label.
    pub token: String,
    /// The key pair's `CKA_LABEL` (`vault/name/version`, for the HSM administrator).
    pub label: String,
    /// The key pair's `CKA_ID`: the version id's 16 bytes, hex.
    pub id: String,
}

impl HsmObject {
    fn id_bytes(&self) -> Result<Vec<u8>, KeyOpError> {
        hex::decode(&self.id).map_err(|_| {
            KeyOpError::Internal(
                crate::StorageError::CorruptSealedKey {
                    id: self.label.clone(),
                }
                .into(),
            )
        })
    }
}

/// The configured token, logged in to for each operation.
pub struct Hsm {
    module: Arc<Module>,
    token: String,
    pin: SecretBytes,
}

impl Hsm {
    /// Loads the module and proves the PIN opens the token, so that a wrong setting
    /// stops start-up with its reason instead of failing the first create.
    pub fn open(config: HsmConfig) -> Result<Self, crate::Error> {
        let refused = |e: TokenError| {
            crate::Error::Config(format!(
                "--pkcs11-module/--pkcs11-token/--pkcs11-pin-file: {}",
                e.reason()
            ))
        };
        let module = Module::get(&config.module).map_err(refused)?;
        let hsm = Self {
            module,
            token: config.token,
            pin: config.pin,
        };
        hsm.module
            .as_user(&hsm.token, &hsm.pin, Access::ReadOnly, |_| Ok(()))
            .map_err(refused)?;
        Ok(hsm)
    }

    /// Generates the key pair of a new version in the token.
    pub fn generate(
        &self,
        label: &str,
        version: &str,
        size: RsaKeySize,
    ) -> Result<(HsmObject, RsaPublicParts), KeyOpError> {
        let object = HsmObject {
            token: self.token.clone(),
            label: label.to_string(),
            id: version.to_string(),
        };
        let id = object.id_bytes()?;
        let public = self
            .module
            .as_user(&self.token, &self.pin, Access::ReadWrite, |session| {
                rsa_key::generate(session, label, &id, size.bits())
            })?;
        Ok((object, public))
    }

    /// Decrypts (unwraps) with the version's private key, in the token.
    pub fn decrypt(
        &self,
        object: &HsmObject,
        algorithm: EncryptionAlgorithm,
        ciphertext: &[u8],
    ) -> Result<SecretBytes, KeyOpError> {
        let id = self.usable(object)?;
        self.module
            .as_user(&self.token, &self.pin, Access::ReadOnly, |session| {
                rsa_key::decrypt(session, &id, algorithm, ciphertext)
            })
            .map_err(KeyOpError::from)
    }

    /// Signs a digest with the version's private key, in the token.
    pub fn sign(
        &self,
        object: &HsmObject,
        algorithm: SignatureAlgorithm,
        digest: &[u8],
    ) -> Result<Vec<u8>, KeyOpError> {
        let id = self.usable(object)?;
        self.module
            .as_user(&self.token, &self.pin, Access::ReadOnly, |session| {
                rsa_key::sign(session, &id, algorithm, digest)
            })
            .map_err(KeyOpError::from)
    }

    /// Destroys the version's key pair in the token (gone already: fine).
    pub fn destroy(&self, object: &HsmObject) -> Result<(), KeyOpError> {
        let id = self.usable(object)?;
        self.module
            .as_user(&self.token, &self.pin, Access::ReadWrite, |session| {
                rsa_key::destroy(session, &id)
            })?;
        Ok(())
    }

    /// The `CKA_ID` of `object`, which must live in this vault's token.
    fn usable(&self, object: &HsmObject) -> Result<Vec<u8>, KeyOpError> {
        if object.token != self.token {
            return Err(TokenError::Denied {
                reason: format!(
                    "this key version lives in token '{}', but the vault is configured \
                     with token '{}': start the vault with --pkcs11-token {}",
                    object.token, self.token, object.token
                ),
            }
            .into());
        }
        object.id_bytes()
    }
}
