//! Azure Key Vault keys JSON shapes (camelCase on the wire, as AKV sends them).
//! Times are Unix seconds, as in AKV.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{KeyError, KeyVersionId};

/// Key sizes the vault accepts for RSA keys.
pub const RSA_KEY_SIZES: [u32; 3] = [2048, 3072, 4096];

/// A key as the vault returns it: the public JWK, attributes and tags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBundle {
    /// The public part and the key id.
    pub key: JsonWebKey,
    /// Enabled flag, validity window, timestamps, recovery level.
    #[serde(default)]
    pub attributes: KeyAttributes,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// True when the key's lifetime is managed by the vault (certificates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<bool>,
}

impl KeyBundle {
    /// The exact version this bundle describes.
    pub fn version_id(&self) -> Result<KeyVersionId, KeyError> {
        KeyVersionId::parse(&self.key.kid)
    }

    /// RSA modulus size in bits, from the public modulus.
    pub fn size_bits(&self) -> Option<u32> {
        self.key.size_bits()
    }
}

/// A soft-deleted key: the bundle plus its recovery information.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedKeyBundle {
    /// The key as it was when deleted.
    #[serde(flatten)]
    pub bundle: KeyBundle,
    /// The URL to recover or purge it with.
    #[serde(default)]
    pub recovery_id: Option<String>,
    /// When it was deleted.
    #[serde(default)]
    pub deleted_date: Option<i64>,
    /// When the vault will purge it by itself.
    #[serde(default)]
    pub scheduled_purge_date: Option<i64>,
}

/// The public part of an RSA key in JWK form. The private part never leaves the vault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonWebKey {
    /// The key id: `{vault}/keys/{name}/{version}`.
    pub kid: String,
    /// Key type (`RSA`, `RSA-HSM`).
    pub kty: String,
    /// Permitted operations (`wrapKey`, `unwrapKey`, `sign`, ...).
    #[serde(default)]
    pub key_ops: Vec<String>,
    /// RSA modulus, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

impl JsonWebKey {
    /// RSA modulus size in bits (leading zero bits of the big-endian modulus excluded).
    pub fn size_bits(&self) -> Option<u32> {
        let n = crate::b64url::decode(self.n.as_deref()?).ok()?;
        let first = n.iter().position(|&b| b != 0)?;
        let bytes = u32::try_from(n.len() - first).ok()?;
        Some(bytes * 8 - n[first].leading_zeros())
    }
}

/// A key's management attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyAttributes {
    /// Whether cryptographic operations are allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Not valid before (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Expires at (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Created at (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
    /// Last updated at (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<i64>,
    /// AKV's deletion recovery level, e.g. `Recoverable+Purgeable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_level: Option<String>,
    /// Soft-delete retention in days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recoverable_days: Option<u32>,
}

/// One entry of a key listing (no key material, only the id and attributes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyItem {
    /// `{vault}/keys/{name}` for key listings, `{vault}/keys/{name}/{version}` for versions.
    pub kid: String,
    /// The key's attributes.
    #[serde(default)]
    pub attributes: KeyAttributes,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// One entry of a deleted-keys listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedKeyItem {
    /// The key's id and attributes.
    #[serde(flatten)]
    pub item: KeyItem,
    /// The URL to recover or purge it with.
    #[serde(default)]
    pub recovery_id: Option<String>,
    /// When it was deleted.
    #[serde(default)]
    pub deleted_date: Option<i64>,
    /// When the vault will purge it by itself.
    #[serde(default)]
    pub scheduled_purge_date: Option<i64>,
}

/// One page of a listing.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Page<T> {
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    #[serde(default)]
    pub next_link: Option<String>,
}

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
}

impl NewRsaKey {
    /// An enabled RSA key of `size_bits` with default operations and no tags.
    pub fn new(size_bits: u32) -> Self {
        Self {
            size_bits,
            key_ops: Vec::new(),
            attributes: KeyAttributes::default(),
            tags: BTreeMap::new(),
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

/// A key's rotation policy: when the vault rotates it by itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationPolicy {
    /// `{vault}/keys/{name}/rotationpolicy` (set by the vault).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What to do when.
    #[serde(default)]
    pub lifetime_actions: Vec<LifetimeAction>,
    /// The expiry given to new versions, and timestamps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<RotationPolicyAttributes>,
}

/// One trigger/action pair of a rotation policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifetimeAction {
    /// When the action fires.
    pub trigger: LifetimeTrigger,
    /// What happens.
    pub action: LifetimeActionKind,
}

/// When a lifetime action fires: ISO 8601 durations such as `P90D`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LifetimeTrigger {
    /// Time after the current version's creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_after_create: Option<String>,
    /// Time before the current version's expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_before_expiry: Option<String>,
}

/// The action of a lifetime action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifetimeActionKind {
    /// `Rotate` or `Notify`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// Rotation policy attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationPolicyAttributes {
    /// ISO 8601 duration given as expiry to each new version, e.g. `P1Y`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_time: Option<String>,
    /// Created at (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
    /// Last updated at (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<i64>,
}

/// Result of a wrap or sign operation.
#[derive(Deserialize)]
pub(crate) struct KeyOperationResult {
    pub kid: String,
    pub value: String,
}

/// Result of a verify operation.
#[derive(Deserialize)]
pub(crate) struct KeyVerifyResult {
    pub value: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_akv_key_bundle_and_size() {
        // A 2048-bit modulus: 256 bytes with the top bit set.
        let n = crate::b64url::encode(&[0x80; 256]);
        let body = format!(
            r#"{{"key":{{"kid":"https://127.0.0.1:9/keys/k1/0123456789abcdef0123456789abcdef",
            "kty":"RSA","key_ops":["wrapKey"],"n":"{n}","e":"AQAB"}},
            "attributes":{{"enabled":true,"created":1700000000,"recoveryLevel":"Recoverable","recoverableDays":7}},
            "tags":{{"team":"db"}}}}"#
        );
        let bundle: KeyBundle = serde_json::from_str(&body).unwrap();
        assert_eq!(bundle.size_bits(), Some(2048));
        assert_eq!(bundle.attributes.enabled, Some(true));
        assert_eq!(bundle.attributes.recoverable_days, Some(7));
        assert_eq!(bundle.version_id().unwrap().name, "k1");
        assert_eq!(bundle.tags["team"], "db");
    }

    #[test]
    fn deleted_bundle_flattens_the_key() {
        let body = r#"{"key":{"kid":"https://h/keys/k/0123456789abcdef0123456789abcdef","kty":"RSA"},
            "attributes":{"enabled":true},"recoveryId":"https://h/deletedkeys/k",
            "deletedDate":1,"scheduledPurgeDate":2}"#;
        let d: DeletedKeyBundle = serde_json::from_str(body).unwrap();
        assert_eq!(d.recovery_id.as_deref(), Some("https://h/deletedkeys/k"));
        assert_eq!(d.scheduled_purge_date, Some(2));
        assert_eq!(d.bundle.key.kty, "RSA");
    }

    #[test]
    fn rotation_policy_round_trips_in_akv_shape() {
        let body = r#"{"lifetimeActions":[{"trigger":{"timeAfterCreate":"P30D"},"action":{"type":"Rotate"}}],
            "attributes":{"expiryTime":"P90D"}}"#;
        let p: RotationPolicy = serde_json::from_str(body).unwrap();
        assert_eq!(p.lifetime_actions[0].action.kind, "Rotate");
        let back = serde_json::to_value(&p).unwrap();
        assert_eq!(
            back["lifetimeActions"][0]["trigger"]["timeAfterCreate"],
            "P30D"
        );
        assert_eq!(back["attributes"]["expiryTime"], "P90D");
    }
}
