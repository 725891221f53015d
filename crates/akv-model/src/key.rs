//! Keys as AKV shows them: bundles (public JWK, attributes, tags), list items,
//! deleted keys and list pages.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::kid::{InvalidKeyId, KeyVersionId};

/// A key version as the vault returns it: the public JWK, attributes and tags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBundle {
    /// The public part and the key id.
    pub key: JsonWebKey,
    /// Enabled flag, validity window, timestamps, recovery level.
    #[serde(default)]
    pub attributes: KeyAttributes,
    /// Free-form tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// True when the key's lifetime is managed by the vault (certificates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<bool>,
}

impl KeyBundle {
    /// The exact version this bundle describes.
    pub fn version_id(&self) -> Result<KeyVersionId, InvalidKeyId> {
        KeyVersionId::parse(&self.key.kid)
    }

    /// RSA modulus size in bits, from the public modulus.
    pub fn size_bits(&self) -> Option<u32> {
        self.key.size_bits()
    }
}

/// When a soft-deleted key was deleted, and how to recover or purge it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletionInfo {
    /// The URL to recover or purge it with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_id: Option<String>,
    /// When it was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_date: Option<i64>,
    /// When the vault will purge it by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_purge_date: Option<i64>,
}

/// A soft-deleted key: the bundle plus its recovery information.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedKeyBundle {
    /// The key as it was when deleted.
    #[serde(flatten)]
    pub bundle: KeyBundle,
    /// Its recovery information (absent while the key is not deleted).
    #[serde(flatten)]
    pub deletion: DeletionInfo,
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

/// A key version's management attributes.
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
    /// Whether the private key may be exported (never, in pgcmk's vault).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exportable: Option<bool>,
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
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// One entry of a deleted-keys listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedKeyItem {
    /// The key's id and attributes.
    #[serde(flatten)]
    pub item: KeyItem,
    /// Its recovery information (absent while the key is not deleted).
    #[serde(flatten)]
    pub deletion: DeletionInfo,
}

/// One page of a listing; `nextLink` is `null` on the last page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListPage<T> {
    /// The entries.
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    /// The absolute URL of the next page.
    #[serde(default)]
    pub next_link: Option<String>,
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
        assert_eq!(
            d.deletion.recovery_id.as_deref(),
            Some("https://h/deletedkeys/k")
        );
        assert_eq!(d.deletion.scheduled_purge_date, Some(2));
        assert_eq!(d.bundle.key.kty, "RSA");
        let back = serde_json::to_value(&d).unwrap();
        assert_eq!(back["deletedDate"], 1);
        assert_eq!(back["key"]["kty"], "RSA");
    }

    #[test]
    fn list_pages_say_null_on_the_last_page() {
        let page: ListPage<KeyItem> = ListPage {
            value: vec![],
            next_link: None,
        };
        assert_eq!(
            serde_json::to_string(&page).unwrap(),
            r#"{"value":[],"nextLink":null}"#
        );
    }
}
