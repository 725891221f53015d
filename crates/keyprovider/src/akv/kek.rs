//! [`AkvKek`]: a key in an Azure Key Vault (or `pgcmk vault serve`) as a KEK.

use pgcmk_crypto::Dek;

use super::client::AkvClient;
use super::model::KeyBundle;
use super::model::WrapAlgorithm;
use super::options::ClientOptions;
use super::token::TokenSource;
use super::{AkvKeyReference, AkvKeyVersionId};
use crate::{
    DeletionProtection, KeyDescription, KeyEncryptionKey, KeyError, KeyInfo, KeyReference, KeyType,
    KeyVersionId, VaultFacts, WrappedDek,
};

/// A KEK held in a vault. A versionless reference follows rotation: `wrap` and
/// `info` use the current version; `unwrap` always uses the exact version recorded in
/// the wrapped DEK, so DEKs wrapped before a rotation stay readable.
#[derive(Debug)]
pub struct AkvKek {
    reference: KeyReference,
    key: AkvKeyReference,
    client: AkvClient,
}

impl AkvKek {
    /// The KEK `reference` reached through `client`, which must be for the same vault.
    pub fn new(key: AkvKeyReference, client: AkvClient) -> Result<Self, KeyError> {
        if !key.vault_url.eq_ignore_ascii_case(client.vault_url()) {
            return Err(KeyError::Invalid {
                reason: format!(
                    "key {key} is not in the vault {} that the client talks to",
                    client.vault_url()
                ),
            });
        }
        Ok(Self {
            reference: KeyReference::Azure(key.clone()),
            key,
            client,
        })
    }

    /// The KEK `reference`, with a new client for its vault.
    pub fn connect(
        key: AkvKeyReference,
        tokens: TokenSource,
        options: &ClientOptions,
    ) -> Result<Self, KeyError> {
        let client = AkvClient::new(&key.vault_url, tokens, options)?;
        Self::new(key, client)
    }

    /// The client, for operations beyond the KEK trait.
    pub fn client(&self) -> &AkvClient {
        &self.client
    }

    fn version(&self) -> Option<&str> {
        self.key.version.as_deref()
    }

    /// [`KeyEncryptionKey::info`] of `version` of this key (`None`: the newest).
    fn not_this_key(&self, version: &KeyVersionId) -> KeyError {
        KeyError::Invalid {
            reason: format!(
                "this DEK was wrapped by {version}, not by key {}",
                self.reference
            ),
        }
    }

    fn info_of(&self, version: Option<&str>) -> Result<KeyInfo, KeyError> {
        let bundle = self.client.get_key(&self.key.name, version)?;
        let (d, _) = Self::describe_bundle(bundle)?;
        let size_bits = d.size_bits.ok_or_else(|| KeyError::Invalid {
            reason: format!(
                "key {} is not an RSA key (kty {})",
                self.reference, d.key_type
            ),
        })?;
        Ok(KeyInfo {
            current: d.current,
            size_bits,
            enabled: d.enabled,
        })
    }

    /// The key's properties from its bundle, and the vault's protections as the
    /// bundle tells them.
    fn describe_bundle(
        bundle: KeyBundle,
    ) -> Result<(KeyDescription, DeletionProtection), KeyError> {
        let key_type = match bundle.key.kty.as_str() {
            "RSA" => KeyType::Rsa,
            "RSA-HSM" => KeyType::RsaHsm,
            other => KeyType::Other(other.to_string()),
        };
        let size_bits = bundle.size_bits().filter(|_| key_type.is_rsa());
        let a = &bundle.attributes;
        let description = KeyDescription {
            current: KeyVersionId::Azure(bundle.version_id()?),
            key_type,
            size_bits,
            // AKV omits `enabled` only for keys that are enabled.
            enabled: a.enabled.unwrap_or(true),
            not_before: a.nbf,
            expires: a.exp,
            vault: None,
        };
        let protection = DeletionProtection {
            recovery_level: a.recovery_level.clone(),
            recoverable_days: a.recoverable_days,
        };
        Ok((description, protection))
    }
}

impl KeyEncryptionKey for AkvKek {
    fn reference(&self) -> &KeyReference {
        &self.reference
    }

    fn info(&self) -> Result<KeyInfo, KeyError> {
        self.info_of(self.version())
    }

    fn version_info(&self, version: Option<&KeyVersionId>) -> Result<KeyInfo, KeyError> {
        match version {
            None => self.info_of(None),
            Some(KeyVersionId::Azure(v)) => self.info_of(Some(&v.version)),
            Some(other) => Err(self.not_this_key(other)),
        }
    }

    fn describe(&self) -> Result<KeyDescription, KeyError> {
        let bundle = self.client.get_key(&self.key.name, self.version())?;
        let (mut description, protection) = Self::describe_bundle(bundle)?;
        description.vault = Some(VaultFacts {
            vault: self.key.vault_url.clone(),
            protection,
            location: self.client.vault_location()?,
        });
        Ok(description)
    }

    fn wrap(&self, dek: &Dek) -> Result<WrappedDek, KeyError> {
        self.client.wrap_key(
            &self.key.name,
            self.version(),
            WrapAlgorithm::RsaOaep256,
            dek.expose_secret(),
        )
    }

    fn unwrap(&self, wrapped: &WrappedDek) -> Result<Dek, KeyError> {
        let kek: &AkvKeyVersionId = match &wrapped.kek {
            KeyVersionId::Azure(v) if v.name == self.key.name => v,
            other => return Err(self.not_this_key(other)),
        };
        let plain = self.client.unwrap_key(wrapped)?;
        Dek::from_slice(plain.expose_secret()).map_err(|_| KeyError::Invalid {
            reason: format!(
                "the key unwrapped by {} is {} bytes, not a 32-byte DEK",
                kek,
                plain.len()
            ),
        })
    }
}
