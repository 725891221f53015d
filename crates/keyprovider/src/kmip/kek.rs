//! [`KmipKek`]: an AES-256 key held by a KMIP server as a KEK. The DEK is wrapped
//! by the server's Encrypt (AES-256-GCM, a fresh 96-bit nonce each time) and
//! unwrapped by its Decrypt; the key's material is never asked for (no Get).

use pgcmk_crypto::{random, Dek, SecretBytes};

use super::client::KmipClient;
use super::message::{attribute, bytes, tag, Operation};
use super::ttlv::{Item, Value};
use super::uri::KmipKeyReference;
use crate::{
    KeyDescription, KeyEncryptionKey, KeyError, KeyInfo, KeyReference, KeyType, KeyVersionId,
    WrappedDek,
};

/// The wrapping algorithm's name (JOSE's, for AES-256-GCM), recorded beside the DEK.
const ALGORITHM: &str = "A256GCM";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// KMIP enumeration values (KMIP 1.4, section 9.1.3.2).
const AES: u32 = 0x03;
const GCM: u32 = 0x09;
const STATE_ACTIVE: u32 = 0x02;
const USAGE_ENCRYPT: i32 = 0x04;
const USAGE_DECRYPT: i32 = 0x08;

/// A KEK on a KMIP server, reached as the client whose certificate and key the
/// server's credential file holds.
#[derive(Debug)]
pub struct KmipKek {
    reference: KeyReference,
    key: KmipKeyReference,
    client: KmipClient,
}

/// What Get Attributes says about the key.
struct Attributes {
    state: Option<u32>,
    usage_mask: Option<i32>,
    algorithm: Option<u32>,
    length: Option<i32>,
}

impl KmipKek {
    /// The key `key`, presenting the PEM certificate chain and private key in
    /// `credential`. No request is sent until the first operation.
    pub fn connect(key: KmipKeyReference, credential: SecretBytes) -> Result<Self, KeyError> {
        let client = KmipClient::new(&key, &credential)?;
        Ok(Self {
            reference: KeyReference::Kmip(key.clone()),
            key,
            client,
        })
    }

    fn uid(&self) -> Item {
        Item::new(
            tag::UNIQUE_IDENTIFIER,
            Value::TextString(self.key.unique_identifier.clone()),
        )
    }

    fn parameters() -> Item {
        Item::new(
            tag::CRYPTOGRAPHIC_PARAMETERS,
            Value::Structure(vec![
                Item::new(tag::BLOCK_CIPHER_MODE, Value::Enumeration(GCM)),
                Item::new(tag::CRYPTOGRAPHIC_ALGORITHM, Value::Enumeration(AES)),
                Item::new(tag::TAG_LENGTH, Value::Integer(TAG_LEN as i32)),
            ]),
        )
    }

    fn attributes(&self) -> Result<Attributes, KeyError> {
        let mut payload = vec![self.uid()];
        for name in [
            "State",
            "Cryptographic Usage Mask",
            "Cryptographic Algorithm",
            "Cryptographic Length",
        ] {
            payload.push(Item::new(
                tag::ATTRIBUTE_NAME,
                Value::TextString(name.into()),
            ));
        }
        let answer = self.client.call(Operation::GetAttributes, payload)?;
        let enumeration = |name| match attribute(&answer, name) {
            Some(Value::Enumeration(v)) => Some(*v),
            _ => None,
        };
        let integer = |name| match attribute(&answer, name) {
            Some(Value::Integer(v)) => Some(*v),
            _ => None,
        };
        Ok(Attributes {
            state: enumeration("State"),
            usage_mask: integer("Cryptographic Usage Mask"),
            algorithm: enumeration("Cryptographic Algorithm"),
            length: integer("Cryptographic Length"),
        })
    }

    /// The key's description; a key that is not Active or may not both encrypt and
    /// decrypt is refused with what to change.
    fn described(&self) -> Result<KeyDescription, KeyError> {
        let a = self.attributes()?;
        let key = &self.reference;
        if a.state != Some(STATE_ACTIVE) {
            return Err(KeyError::Denied {
                reason: format!(
                    "key {key} is not Active (state {}): activate it, or choose another key \
                     (a revoked or destroyed key stays unusable)",
                    state_name(a.state)
                ),
            });
        }
        let mask = a.usage_mask.unwrap_or(0);
        if mask & USAGE_ENCRYPT == 0 || mask & USAGE_DECRYPT == 0 {
            return Err(KeyError::Denied {
                reason: format!(
                    "key {key} has the cryptographic usage mask 0x{mask:x}, which lacks \
                     Encrypt or Decrypt: use a key created for both"
                ),
            });
        }
        let aes = a.algorithm == Some(AES);
        Ok(KeyDescription {
            current: KeyVersionId::Kmip(self.key.version()),
            key_type: if aes {
                KeyType::Aes
            } else {
                KeyType::Other(format!("KMIP algorithm {:?}", a.algorithm))
            },
            size_bits: a.length.and_then(|l| u32::try_from(l).ok()),
            enabled: true,
            not_before: None,
            expires: None,
            vault: None,
        })
    }
}

fn state_name(state: Option<u32>) -> &'static str {
    match state {
        Some(1) => "Pre-Active",
        Some(3) => "Deactivated",
        Some(4) => "Compromised",
        Some(5) => "Destroyed",
        Some(6) => "Destroyed Compromised",
        _ => "unknown",
    }
}

impl KeyEncryptionKey for KmipKek {
    fn reference(&self) -> &KeyReference {
        &self.reference
    }

    fn info(&self) -> Result<KeyInfo, KeyError> {
        let d = self.described()?;
        Ok(KeyInfo {
            current: d.current,
            size_bits: d.size_bits.unwrap_or(0),
            enabled: d.enabled,
        })
    }

    fn version_info(&self, version: Option<&KeyVersionId>) -> Result<KeyInfo, KeyError> {
        match version {
            None => self.info(),
            Some(KeyVersionId::Kmip(v)) if *v == self.key.version() => self.info(),
            Some(other) => Err(KeyError::Invalid {
                reason: format!("{other} is not a version of key {}", self.reference),
            }),
        }
    }

    fn describe(&self) -> Result<KeyDescription, KeyError> {
        self.described()
    }

    fn wrap(&self, dek: &Dek) -> Result<WrappedDek, KeyError> {
        let nonce: [u8; NONCE_LEN] = random::array().map_err(|e| KeyError::Transient {
            reason: format!("no randomness for a nonce: {e}"),
        })?;
        let answer = self.client.call(
            Operation::Encrypt,
            vec![
                self.uid(),
                Self::parameters(),
                Item::new(tag::DATA, Value::ByteString(dek.expose_secret().to_vec())),
                Item::new(tag::IV_COUNTER_NONCE, Value::ByteString(nonce.to_vec())),
            ],
        )?;
        let sealed = bytes(answer.child(tag::DATA));
        let auth_tag = bytes(answer.child(tag::AUTHENTICATED_ENCRYPTION_TAG));
        let (Some(sealed), Some(auth_tag)) = (sealed, auth_tag) else {
            return Err(KeyError::Transient {
                reason: format!(
                    "KMIP Encrypt with key {}: the answer lacks the data or the GCM tag",
                    self.reference
                ),
            });
        };
        if sealed.len() != dek.expose_secret().len() || auth_tag.len() != TAG_LEN {
            return Err(KeyError::Transient {
                reason: format!(
                    "KMIP Encrypt with key {}: unexpected lengths in the answer",
                    self.reference
                ),
            });
        }
        Ok(WrappedDek {
            kek: KeyVersionId::Kmip(self.key.version()),
            algorithm: ALGORITHM.to_string(),
            // nonce || ciphertext || tag, as AES-GCM is usually stored.
            ciphertext: [&nonce[..], sealed, auth_tag].concat(),
        })
    }

    fn unwrap(&self, wrapped: &WrappedDek) -> Result<Dek, KeyError> {
        match &wrapped.kek {
            KeyVersionId::Kmip(v) if *v == self.key.version() => {}
            other => {
                return Err(KeyError::Invalid {
                    reason: format!(
                        "this DEK was wrapped by {other}, not by key {}",
                        self.reference
                    ),
                })
            }
        }
        let c = &wrapped.ciphertext;
        if wrapped.algorithm != ALGORITHM || c.len() <= NONCE_LEN + TAG_LEN {
            return Err(KeyError::Invalid {
                reason: format!(
                    "this wrapped DEK is not {ALGORITHM} ({} bytes of {})",
                    c.len(),
                    wrapped.algorithm
                ),
            });
        }
        let (nonce, rest) = c.split_at(NONCE_LEN);
        let (sealed, auth_tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut answer = self.client.call(
            Operation::Decrypt,
            vec![
                self.uid(),
                Self::parameters(),
                Item::new(tag::DATA, Value::ByteString(sealed.to_vec())),
                Item::new(tag::IV_COUNTER_NONCE, Value::ByteString(nonce.to_vec())),
                Item::new(
                    tag::AUTHENTICATED_ENCRYPTION_TAG,
                    Value::ByteString(auth_tag.to_vec()),
                ),
            ],
        )?;
        let plain = bytes(answer.child(tag::DATA)).unwrap_or_default();
        let dek = Dek::from_slice(plain).map_err(|_| KeyError::Invalid {
            reason: format!(
                "the key unwrapped by {} is {} bytes, not a 32-byte DEK",
                self.reference,
                plain.len()
            ),
        });
        answer.wipe();
        dek
    }
}
