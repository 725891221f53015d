//! The management API's answers that the pages read, typed (the keys API's are
//! in `pgcmk_akv_model`).

use serde::Deserialize;

/// A `{"value": [...]}` listing.
#[derive(Deserialize)]
pub(super) struct Listing<T> {
    pub value: Vec<T>,
}

/// A vault, as `GET /admin/vaults` shows it.
#[derive(Deserialize)]
pub(super) struct VaultView {
    pub name: String,
    pub url: String,
    pub location: String,
    pub retention_days: u32,
    pub purge_protection: bool,
    pub administrators: Vec<String>,
    pub policies: Vec<PolicyView>,
}

/// An access policy: who may do what with the vault's keys.
#[derive(Deserialize)]
pub(super) struct PolicyView {
    /// The identity's name.
    pub identity: String,
    pub key_permissions: Vec<String>,
}

/// An identity, as `GET /admin/identities` shows it.
#[derive(Deserialize)]
pub(super) struct IdentityView {
    pub name: String,
    pub kind: String,
    pub service_admin: bool,
}

/// `GET /admin/audit/verify`: the chain checked from its first entry.
#[derive(Deserialize)]
pub(super) struct ChainCheck {
    pub ok: bool,
    /// Entries verified, when intact.
    #[serde(default)]
    pub entries: Option<u64>,
    /// The first bad entry, when broken.
    #[serde(default)]
    pub entry: Option<u64>,
    #[serde(default)]
    pub problem: Option<String>,
}
