//! [`Pkcs11Kek`]: an RSA key pair in a PKCS#11 token as a KEK.

use std::sync::Arc;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use pgcmk_crypto::{Dek, SecretBytes};
use zeroize::Zeroize;

use pgcmk_pkcs11::{oaep, Access, Module};

use super::uri::{Pkcs11KeyReference, Pkcs11KeyVersion};
use crate::{
    KeyDescription, KeyEncryptionKey, KeyError, KeyInfo, KeyReference, KeyType, KeyVersionId,
    WrappedDek,
};

/// `err` from doing `what`, as a server sees it.
fn key_error(what: &str, err: CkError) -> KeyError {
    pgcmk_pkcs11::classify(what, err).into()
}

/// A KEK held in a token: the private key decrypts inside it; the token user's PIN
/// (the server's credential) opens it for each operation.
#[derive(Debug)]
pub struct Pkcs11Kek {
    reference: KeyReference,
    key: Pkcs11KeyReference,
    module: Arc<Module>,
    pin: SecretBytes,
}

/// The key pair one operation works with.
struct KeyPair {
    version: Pkcs11KeyVersion,
    private: ObjectHandle,
    key_type: CkKeyType,
    modulus_bits: u32,
}

impl Pkcs11Kek {
    /// The key `key`, reached through its module (loaded now, once per process) as
    /// the token's user with `pin`. No token operation is made until the first use.
    pub fn connect(key: Pkcs11KeyReference, pin: SecretBytes) -> Result<Self, KeyError> {
        let module = Module::get(&key.module_path)?;
        Ok(Self {
            reference: KeyReference::Pkcs11(key.clone()),
            key,
            module,
            pin,
        })
    }

    /// Runs `op` on the key pair with `id` (`None`: the one the reference names).
    fn with_key<T>(
        &self,
        id: Option<&[u8]>,
        op: impl FnOnce(&Session, &KeyPair) -> Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        self.module
            .as_user(&self.key.token, &self.pin, Access::ReadOnly, |session| {
                let pair = self.find(session, id.or(self.key.id.as_deref()))?;
                op(session, &pair)
            })
    }

    fn find(&self, session: &Session, id: Option<&[u8]>) -> Result<KeyPair, KeyError> {
        let what = format!("looking up key {}", self.shown(id));
        let mut template = vec![
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(self.key.object.as_bytes().to_vec()),
        ];
        template.extend(id.map(|id| Attribute::Id(id.to_vec())));
        let found = session
            .find_objects(&template)
            .map_err(|e| key_error(&what, e))?;
        let private = match found[..] {
            [one] => one,
            [] => {
                return Err(KeyError::Denied {
                    reason: format!(
                        "{what}: the token has no such private key (deleted, or never \
                         created): restore it into the token or choose another key"
                    ),
                })
            }
            _ => {
                return Err(KeyError::Invalid {
                    reason: format!(
                        "{what}: {} private keys carry that label: name one with id= in the \
                         key URI",
                        found.len()
                    ),
                })
            }
        };
        let attributes = session
            .get_attributes(
                private,
                &[
                    AttributeType::KeyType,
                    AttributeType::Id,
                    AttributeType::Decrypt,
                    AttributeType::Modulus,
                ],
            )
            .map_err(|e| key_error(&what, e))?;
        let (mut key_type, mut key_id, mut decrypt, mut modulus_bits) = (None, None, false, 0);
        for a in attributes {
            match a {
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::Id(i) => key_id = Some(i),
                Attribute::Decrypt(d) => decrypt = d,
                Attribute::Modulus(m) => modulus_bits = significant_bits(&m),
                _ => {}
            }
        }
        let key_type = key_type.ok_or_else(|| KeyError::Invalid {
            reason: format!("{what}: the token does not tell the key's type"),
        })?;
        if key_type == CkKeyType::RSA && !decrypt {
            return Err(KeyError::Denied {
                reason: format!(
                    "{what}: the key may not decrypt (CKA_DECRYPT is false), so it cannot \
                     unwrap a DEK: allow decryption on it or choose another key"
                ),
            });
        }
        Ok(KeyPair {
            version: Pkcs11KeyVersion {
                token: self.key.token.clone(),
                object: self.key.object.clone(),
                id: key_id.unwrap_or_default(),
            },
            private,
            key_type,
            modulus_bits,
        })
    }

    /// The public half of `pair`, which must allow encryption.
    fn public_of(&self, session: &Session, pair: &KeyPair) -> Result<ObjectHandle, KeyError> {
        let what = format!("looking up the public key of {}", pair.version);
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Label(self.key.object.as_bytes().to_vec()),
                Attribute::Id(pair.version.id.clone()),
                Attribute::Encrypt(true),
            ])
            .map_err(|e| key_error(&what, e))?;
        found.first().copied().ok_or_else(|| KeyError::Denied {
            reason: format!(
                "{what}: the token holds no public key with that label and id that may \
                 encrypt (CKA_ENCRYPT): keep the key pair's public half in the token"
            ),
        })
    }

    fn shown(&self, id: Option<&[u8]>) -> String {
        match id {
            Some(id) => Pkcs11KeyVersion {
                token: self.key.token.clone(),
                object: self.key.object.clone(),
                id: id.to_vec(),
            }
            .to_string(),
            None => format!("pkcs11:token={};object={}", self.key.token, self.key.object),
        }
    }

    fn info_of(&self, id: Option<&[u8]>) -> Result<KeyInfo, KeyError> {
        let d = self.with_key(id, |_, pair| Ok(describe(pair)))?;
        let size_bits = d.size_bits.ok_or_else(|| KeyError::Invalid {
            reason: format!("key {} is not an RSA key ({})", d.current, d.key_type),
        })?;
        Ok(KeyInfo {
            current: d.current,
            size_bits,
            enabled: d.enabled,
        })
    }
}

fn describe(pair: &KeyPair) -> KeyDescription {
    let rsa = pair.key_type == CkKeyType::RSA;
    KeyDescription {
        current: KeyVersionId::Pkcs11(pair.version.clone()),
        key_type: if rsa {
            KeyType::RsaHsm
        } else {
            KeyType::Other(pair.key_type.to_string())
        },
        size_bits: rsa.then_some(pair.modulus_bits),
        enabled: true,
        not_before: None,
        expires: None,
        vault: None,
    }
}

/// The bit length of a big-endian unsigned integer.
fn significant_bits(be: &[u8]) -> u32 {
    let Some(first) = be.iter().position(|b| *b != 0) else {
        return 0;
    };
    let bytes = (be.len() - first) as u32;
    bytes * 8 - be[first].leading_zeros()
}

impl KeyEncryptionKey for Pkcs11Kek {
    fn reference(&self) -> &KeyReference {
        &self.reference
    }

    fn info(&self) -> Result<KeyInfo, KeyError> {
        self.info_of(None)
    }

    fn version_info(&self, version: Option<&KeyVersionId>) -> Result<KeyInfo, KeyError> {
        match version {
            None => self.info_of(None),
            Some(KeyVersionId::Pkcs11(v)) => self.info_of(Some(&v.id)),
            Some(other) => Err(not_this_key(other, &self.reference)),
        }
    }

    fn describe(&self) -> Result<KeyDescription, KeyError> {
        self.with_key(None, |_, pair| Ok(describe(pair)))
    }

    fn wrap(&self, dek: &Dek) -> Result<WrappedDek, KeyError> {
        self.with_key(None, |session, pair| {
            let public = self.public_of(session, pair)?;
            let what = format!("wrapping with {}", pair.version);
            // The one used is recorded beside the wrapped DEK and used to unwrap it.
            for algorithm in oaep::ALGORITHMS {
                let Some(mechanism) = oaep::mechanism(algorithm) else {
                    continue;
                };
                match session.encrypt(&mechanism, public, dek.expose_secret()) {
                    Ok(ciphertext) => {
                        return Ok(WrappedDek {
                            kek: KeyVersionId::Pkcs11(pair.version.clone()),
                            algorithm: algorithm.to_string(),
                            ciphertext,
                        })
                    }
                    // The token lacks this hash for OAEP: try the next one.
                    Err(CkError::Pkcs11(
                        RvError::ArgumentsBad | RvError::MechanismParamInvalid,
                        _,
                    )) => continue,
                    Err(e) => return Err(key_error(&what, e)),
                }
            }
            Err(KeyError::Invalid {
                reason: format!(
                    "{what}: the token supports none of RSA-OAEP with SHA-256 or SHA-1"
                ),
            })
        })
    }

    fn unwrap(&self, wrapped: &WrappedDek) -> Result<Dek, KeyError> {
        let version = match &wrapped.kek {
            KeyVersionId::Pkcs11(v) if v.token == self.key.token && v.object == self.key.object => {
                v
            }
            other => return Err(not_this_key(other, &self.reference)),
        };
        let mechanism = oaep::mechanism(&wrapped.algorithm).ok_or_else(|| KeyError::Invalid {
            reason: format!(
                "this DEK was wrapped with {}; a PKCS#11 key unwraps RSA-OAEP-256 and \
                 RSA-OAEP only",
                wrapped.algorithm
            ),
        })?;
        self.with_key(Some(&version.id), |session, pair| {
            let mut plain = session
                .decrypt(&mechanism, pair.private, &wrapped.ciphertext)
                .map_err(|e| key_error(&format!("unwrapping with {version}"), e))?;
            let dek = Dek::from_slice(&plain).map_err(|_| KeyError::Invalid {
                reason: format!(
                    "the key unwrapped by {version} is {} bytes, not a 32-byte DEK",
                    plain.len()
                ),
            });
            plain.zeroize();
            dek
        })
    }
}

fn not_this_key(version: &KeyVersionId, reference: &KeyReference) -> KeyError {
    KeyError::Invalid {
        reason: format!("this DEK was wrapped by {version}, not by key {reference}"),
    }
}

#[cfg(test)]
mod tests {
    use super::significant_bits;

    #[test]
    fn modulus_sizes_count_significant_bits() {
        assert_eq!(significant_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(significant_bits(&[0x01, 0xff]), 9);
        assert_eq!(significant_bits(&[0, 0]), 0);
    }
}
