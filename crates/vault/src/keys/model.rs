//! Stored key records and the Azure Key Vault JSON shapes built from them.

use std::collections::BTreeMap;

use pgcmk_akv_model::{
    DeletedKeyBundle, DeletedKeyItem, DeletionInfo, JsonWebKey, KeyAttributes, KeyBundle, KeyItem,
};
use serde::{Deserialize, Serialize};

use super::hsm::HsmObject;
use super::rotation::RotationPolicy;

/// A key: its versions and its lifecycle state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Key name.
    pub name: String,
    /// Version ids, oldest first; the last is current.
    pub versions: Vec<String>,
    /// When the key was first created (unix seconds).
    pub created: i64,
    /// Set while the key is soft-deleted.
    pub deleted: Option<Deleted>,
    /// Rotation policy, when one was set.
    pub rotation: Option<RotationPolicy>,
    /// The version a near-expiry notification was last recorded for.
    #[serde(default)]
    pub notified_version: Option<String>,
}

impl KeyRecord {
    /// The current (newest) version id.
    pub fn current(&self) -> &str {
        self.versions.last().map(String::as_str).unwrap_or_default()
    }
}

/// Soft-delete state.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Deleted {
    /// When it was deleted (unix seconds).
    pub deleted_date: i64,
    /// When it will be purged automatically (unix seconds).
    pub scheduled_purge_date: i64,
}

/// One version of a key. The private key is sealed here, or (`kty: RSA-HSM`) held
/// by the vault's token and only referenced; `n`/`e` are public.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VersionRecord {
    /// 32 lowercase hex characters.
    pub version: String,
    /// Modulus size in bits.
    pub size: u32,
    /// Modulus, base64url.
    pub n: String,
    /// Public exponent, base64url.
    pub e: String,
    /// The PKCS#8 private key sealed under the storage key, base64 (empty for a
    /// version held by the token).
    pub sealed_private: String,
    /// The token's key pair, for an RSA-HSM version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsm: Option<HsmObject>,
    /// Attributes.
    pub attributes: Attributes,
    /// Permitted operations (JWK `key_ops`).
    pub key_ops: Vec<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// Key version attributes (unix seconds).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attributes {
    /// Whether cryptographic operations are allowed.
    pub enabled: bool,
    /// Not valid before.
    pub nbf: Option<i64>,
    /// Not valid after.
    pub exp: Option<i64>,
    /// Created.
    pub created: i64,
    /// Last updated.
    pub updated: i64,
}

/// The vault-level facts a key bundle shows.
pub struct VaultView<'a> {
    /// Base URL, no trailing slash.
    pub url: &'a str,
    /// Soft-delete retention in days.
    pub retention_days: u32,
    /// Purge protection on.
    pub purge_protection: bool,
}

impl VaultView<'_> {
    fn recovery_level(&self) -> &'static str {
        match (self.retention_days == 90, self.purge_protection) {
            (true, true) => "Recoverable",
            (true, false) => "Recoverable+Purgeable",
            (false, true) => "CustomizedRecoverable",
            (false, false) => "CustomizedRecoverable+Purgeable",
        }
    }

    /// `{vault}/keys/{name}[/{version}]`.
    pub fn kid(&self, name: &str, version: Option<&str>) -> String {
        match version {
            Some(v) => format!("{}/keys/{name}/{v}", self.url),
            None => format!("{}/keys/{name}", self.url),
        }
    }

    fn attributes(&self, a: &Attributes) -> KeyAttributes {
        KeyAttributes {
            enabled: Some(a.enabled),
            nbf: a.nbf,
            exp: a.exp,
            created: Some(a.created),
            updated: Some(a.updated),
            recovery_level: Some(self.recovery_level().into()),
            recoverable_days: Some(self.retention_days),
            exportable: Some(false),
        }
    }

    /// The key bundle of one version (public JWK only), with its deletion details
    /// when the key is soft-deleted.
    pub fn bundle(&self, key: &KeyRecord, v: &VersionRecord) -> DeletedKeyBundle {
        let bundle = KeyBundle {
            key: JsonWebKey {
                kid: self.kid(&key.name, Some(&v.version)),
                kty: if v.hsm.is_some() { "RSA-HSM" } else { "RSA" }.into(),
                key_ops: v.key_ops.clone(),
                n: Some(v.n.clone()),
                e: Some(v.e.clone()),
            },
            attributes: self.attributes(&v.attributes),
            tags: v.tags.clone(),
            managed: None,
        };
        DeletedKeyBundle {
            bundle,
            deletion: self.deletion(key),
        }
    }

    /// The list entry of a key: versionless kid for key lists, versioned for version lists.
    pub fn item(&self, key: &KeyRecord, v: &VersionRecord, with_version: bool) -> DeletedKeyItem {
        let item = KeyItem {
            kid: self.kid(&key.name, with_version.then_some(v.version.as_str())),
            attributes: self.attributes(&v.attributes),
            tags: v.tags.clone(),
        };
        DeletedKeyItem {
            item,
            deletion: self.deletion(key),
        }
    }

    /// Recovery id, deletion date and scheduled purge date of a soft-deleted key.
    fn deletion(&self, key: &KeyRecord) -> DeletionInfo {
        match key.deleted {
            Some(d) => DeletionInfo {
                recovery_id: Some(format!("{}/deletedkeys/{}", self.url, key.name)),
                deleted_date: Some(d.deleted_date),
                scheduled_purge_date: Some(d.scheduled_purge_date),
            },
            None => DeletionInfo::default(),
        }
    }
}
