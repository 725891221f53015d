//! Stored key records and the Azure Key Vault JSON shapes built from them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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

/// One version of a key. The private key is sealed; `n`/`e` are public.
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
    /// The PKCS#8 private key sealed under the storage key, base64.
    pub sealed_private: String,
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

    fn attributes(&self, a: &Attributes) -> Value {
        let mut v = json!({
            "enabled": a.enabled,
            "created": a.created,
            "updated": a.updated,
            "recoveryLevel": self.recovery_level(),
            "recoverableDays": self.retention_days,
            "exportable": false,
        });
        if let Some(nbf) = a.nbf {
            v["nbf"] = json!(nbf);
        }
        if let Some(exp) = a.exp {
            v["exp"] = json!(exp);
        }
        v
    }

    /// The KeyBundle for one version (public JWK only).
    pub fn bundle(&self, key: &KeyRecord, v: &VersionRecord) -> Value {
        let mut out = json!({
            "key": {
                "kid": self.kid(&key.name, Some(&v.version)),
                "kty": "RSA",
                "key_ops": v.key_ops,
                "n": v.n,
                "e": v.e,
            },
            "attributes": self.attributes(&v.attributes),
            "tags": v.tags,
        });
        self.add_deleted(&mut out, key);
        out
    }

    /// The KeyItem in lists: versionless kid for key lists, versioned for version lists.
    pub fn item(&self, key: &KeyRecord, v: &VersionRecord, with_version: bool) -> Value {
        let mut out = json!({
            "kid": self.kid(&key.name, with_version.then_some(v.version.as_str())),
            "attributes": self.attributes(&v.attributes),
            "tags": v.tags,
        });
        self.add_deleted(&mut out, key);
        out
    }

    fn add_deleted(&self, out: &mut Value, key: &KeyRecord) {
        if let Some(d) = key.deleted {
            out["recoveryId"] = json!(format!("{}/deletedkeys/{}", self.url, key.name));
            out["deletedDate"] = json!(d.deleted_date);
            out["scheduledPurgeDate"] = json!(d.scheduled_purge_date);
        }
    }
}
