//! The Azure Key Vault keys wire model ([`pgcmk_akv_model`], shared with the vault)
//! and the client's own parameter types built on it.

use std::collections::BTreeMap;

pub use pgcmk_akv_model::{
    AttributeChanges, DeletedKeyBundle, DeletedKeyItem, DeletionInfo, JsonWebKey, KeyAttributes,
    KeyBundle, KeyCreateParameters, KeyItem, KeyOperationParameters, KeyOperationResult,
    KeyUpdateParameters, KeyVerifyParameters, KeyVerifyResult, LifetimeAction, LifetimeActionKind,
    LifetimeTrigger, ListPage, RotationPolicy, RotationPolicyAttributes, RSA_KEY_SIZES,
};

use crate::KeyError;

/// What to change with [`super::AkvClient::update_key`]; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyUpdate {
    /// Enable or disable the key.
    pub enabled: Option<bool>,
    /// Set the not-before time (Unix seconds).
    pub nbf: Option<i64>,
    /// Set the expiry time (Unix seconds).
    pub exp: Option<i64>,
    /// Replace the permitted operations.
    pub key_ops: Option<Vec<String>>,
    /// Replace the tags.
    pub tags: Option<BTreeMap<String, String>>,
}

/// Parameters of a new RSA key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRsaKey {
    /// Modulus size: 2048, 3072 or 4096.
    pub size_bits: u32,
    /// Permitted operations; empty means the vault's default (all RSA operations).
    pub key_ops: Vec<String>,
    /// Attributes to set at creation (enabled, nbf, exp).
    pub attributes: KeyAttributes,
    /// Free-form tags.
    pub tags: BTreeMap<String, String>,
    /// Generated and kept in the vault's HSM (`kty: RSA-HSM`) instead of in software.
    pub hsm: bool,
}

impl NewRsaKey {
    /// An enabled RSA key of `size_bits` with default operations and no tags.
    pub fn new(size_bits: u32) -> Self {
        Self {
            size_bits,
            key_ops: Vec::new(),
            attributes: KeyAttributes::default(),
            tags: BTreeMap::new(),
            hsm: false,
        }
    }
}

/// RSA key-wrapping algorithms, in AKV's names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WrapAlgorithm {
    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256 (the default).
    #[default]
    RsaOaep256,
    /// RSAES-OAEP with SHA-1 (legacy).
    RsaOaep,
}

impl WrapAlgorithm {
    /// The algorithm's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RsaOaep256 => "RSA-OAEP-256",
            Self::RsaOaep => "RSA-OAEP",
        }
    }

    /// Parses an AKV algorithm name.
    pub fn parse(name: &str) -> Result<Self, KeyError> {
        match name {
            "RSA-OAEP-256" => Ok(Self::RsaOaep256),
            "RSA-OAEP" => Ok(Self::RsaOaep),
            other => Err(KeyError::Invalid {
                reason: format!(
                    "unsupported wrap algorithm '{other}': use RSA-OAEP-256 or RSA-OAEP"
                ),
            }),
        }
    }
}

/// RSA signature algorithms, in AKV's (JWA) names. The caller hashes; the vault signs the
/// digest. The same type the vault uses, so both sides agree on names and digest lengths.
pub use pgcmk_crypto::rsa::SignatureAlgorithm;

impl KeyUpdate {
    /// The PATCH body.
    pub(crate) fn parameters(&self) -> KeyUpdateParameters {
        let attributes = AttributeChanges {
            enabled: self.enabled,
            nbf: self.nbf.map(Some),
            exp: self.exp.map(Some),
            exportable: None,
        };
        KeyUpdateParameters {
            key_ops: self.key_ops.clone(),
            attributes: (attributes != AttributeChanges::default()).then_some(attributes),
            tags: self.tags.clone(),
        }
    }
}

impl NewRsaKey {
    /// The create body.
    pub(crate) fn parameters(&self) -> KeyCreateParameters {
        let a = &self.attributes;
        KeyCreateParameters {
            kty: if self.hsm { "RSA-HSM" } else { "RSA" }.into(),
            key_size: Some(u64::from(self.size_bits)),
            public_exponent: None,
            key_ops: (!self.key_ops.is_empty()).then(|| self.key_ops.clone()),
            attributes: Some(AttributeChanges {
                enabled: a.enabled,
                nbf: a.nbf.map(Some),
                exp: a.exp.map(Some),
                exportable: a.exportable,
            }),
            tags: (!self.tags.is_empty()).then(|| self.tags.clone()),
        }
    }
}
