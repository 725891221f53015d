//! Vaults: each served at the root of its own base URL (its own port), with
//! soft-delete settings, administrators and access policies.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::policy::Permission;
use crate::storage::{Store, VAULTS};
use crate::Error;

/// A stored vault.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VaultRecord {
    /// Unique name.
    pub name: String,
    /// Its port on the service's address (fixed at creation).
    pub port: u16,
    /// Free-form location label (e.g. `westeurope`).
    pub location: String,
    /// Soft-delete retention, 7–90 days.
    pub retention_days: u32,
    /// Once true, never false again.
    pub purge_protection: bool,
    /// Whether RSA1_5 encryption is allowed (off by default).
    #[serde(default)]
    pub allow_rsa1_5: bool,
    /// Object ids allowed to manage this vault's access policies.
    pub administrators: BTreeSet<String>,
    /// Access policies: object id → key permissions.
    pub policies: BTreeMap<String, BTreeSet<Permission>>,
    /// Created (unix seconds).
    pub created: i64,
}

impl VaultRecord {
    /// Whether `object_id` holds `permission` on this vault's keys.
    pub fn allows(&self, object_id: &str, permission: Permission) -> bool {
        self.policies
            .get(object_id)
            .is_some_and(|p| p.contains(&permission))
    }
}

/// Checks a vault name: 3–24 of `[0-9A-Za-z-]`, starting with a letter (Azure's rule).
pub fn valid_vault_name(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && name.as_bytes()[0].is_ascii_alphabetic()
        && !name.ends_with('-')
        && !name.contains("--")
}

/// Why a change to a vault's settings is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VaultChangeRefused {
    /// Purge protection is one-way.
    #[error("purge protection cannot be turned off once it is on")]
    PurgeProtectionIsPermanent,
    /// Soft-delete retention is fixed at creation.
    #[error("retention_days is fixed at creation ({days} days)")]
    RetentionIsFixed {
        /// The vault's retention.
        days: u32,
    },
    /// The change would leave the vault without an administrator.
    #[error("a vault needs at least one administrator")]
    NoAdministratorLeft,
    /// There is no policy to remove.
    #[error("vault '{vault}' has no access policy for '{identity}'")]
    NoSuchPolicy {
        /// The vault.
        vault: String,
        /// The identity's name.
        identity: String,
    },
}

/// Every vault, cached in memory and written through to storage.
pub struct Vaults {
    by_name: RwLock<BTreeMap<String, VaultRecord>>,
}

impl Vaults {
    /// Loads all vaults.
    pub fn load(store: &Store) -> Result<Self, Error> {
        let all: Vec<(String, VaultRecord)> = store.scan(VAULTS, "", None, usize::MAX)?;
        Ok(Self {
            by_name: RwLock::new(all.into_iter().collect()),
        })
    }

    /// One vault.
    pub fn get(&self, name: &str) -> Option<VaultRecord> {
        self.by_name
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// All vaults, by name.
    pub fn list(&self) -> Vec<VaultRecord> {
        self.by_name
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Inserts a new vault; fails if the name is taken.
    pub fn insert(&self, store: &Store, record: VaultRecord) -> Result<bool, Error> {
        let mut map = self.by_name.write().unwrap_or_else(|p| p.into_inner());
        if map.contains_key(&record.name) {
            return Ok(false);
        }
        store.write(|tx| tx.put(VAULTS, &record.name, &record))?;
        map.insert(record.name.clone(), record);
        Ok(true)
    }

    /// Applies `change` to a vault and stores the result (atomically with respect
    /// to other changes). `change` may refuse; `None` when there is no such vault.
    pub fn update(
        &self,
        store: &Store,
        name: &str,
        change: impl FnOnce(&mut VaultRecord) -> Result<(), VaultChangeRefused>,
    ) -> Result<Option<Result<VaultRecord, VaultChangeRefused>>, Error> {
        let mut map = self.by_name.write().unwrap_or_else(|p| p.into_inner());
        let Some(current) = map.get(name) else {
            return Ok(None);
        };
        let mut next = current.clone();
        if let Err(refused) = change(&mut next) {
            return Ok(Some(Err(refused)));
        }
        store.write(|tx| tx.put(VAULTS, name, &next))?;
        map.insert(name.to_string(), next.clone());
        Ok(Some(Ok(next)))
    }

    /// Removes a deleted principal from every policy and administrator list.
    pub fn forget_principal(&self, store: &Store, object_id: &str) -> Result<(), Error> {
        for vault in self.list() {
            if vault.policies.contains_key(object_id) || vault.administrators.contains(object_id) {
                self.update(store, &vault.name, |v| {
                    v.policies.remove(object_id);
                    v.administrators.remove(object_id);
                    Ok(())
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_names_follow_azure_rules() {
        for ok in ["kv1", "prod-keys", "A23456789012345678901234"] {
            assert!(valid_vault_name(ok), "{ok}");
        }
        for bad in [
            "",
            "ab",
            "1kv",
            "kv_1",
            "kv-",
            "k--v",
            "a234567890123456789012345",
            "kv.x",
        ] {
            assert!(!valid_vault_name(bad), "{bad}");
        }
    }
}
