//! Principals: users and user-assigned managed identities, each with an object id,
//! a client id and one secret. Only an HMAC of the secret is stored.

use std::collections::HashMap;
use std::sync::RwLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use pgcmk_crypto::mac::MacKey;
use pgcmk_crypto::{ct_eq, random, SecretBytes};
use serde::{Deserialize, Serialize};

use crate::storage::{Store, PRINCIPALS};
use crate::{now_unix, Error};

/// What kind of principal this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    /// A user-assigned managed identity (gets tokens through the managed-identity endpoint).
    Managed,
    /// A user or application (gets tokens with client credentials).
    User,
}

/// A stored principal.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Principal {
    /// Stable object id (what access policies name).
    pub object_id: String,
    /// Client (application) id, used to ask for tokens.
    pub client_id: String,
    /// Unique display name.
    pub name: String,
    /// User or managed identity.
    pub kind: PrincipalKind,
    /// May manage identities, create vaults and read the audit trail.
    pub service_admin: bool,
    /// HMAC of the secret under the credential key (never the secret itself).
    secret_mac: String,
    /// Creation time, unix seconds.
    pub created: i64,
}

/// A principal's credential as written to its 0600 file. `Debug` hides the secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credential {
    /// Principal name.
    pub name: String,
    /// Object id.
    pub object_id: String,
    /// Client id.
    pub client_id: String,
    /// User or managed identity.
    pub kind: PrincipalKind,
    /// The secret: client secret for users, `IDENTITY_HEADER` for managed identities.
    pub client_secret: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("object_id", &self.object_id)
            .field("client_secret", &"REDACTED")
            .finish()
    }
}

/// Checks a principal or vault name: 1–64 of `[0-9A-Za-z-]`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A random UUID-shaped identifier.
pub fn uuid() -> Result<String, Error> {
    let h = random::hex_id(16)?;
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

/// A fresh UUID-shaped id for a request or token; all zeros if the system's random
/// source fails (ids are unique labels, not secrets).
pub fn new_id() -> String {
    uuid().unwrap_or_else(|_| "00000000-0000-0000-0000-000000000000".into())
}

/// All principals, cached in memory (they are few) and written through to storage.
pub struct Directory {
    by_oid: RwLock<HashMap<String, Principal>>,
    mac_key: MacKey,
}

impl Directory {
    /// Loads every principal from storage.
    pub fn load(store: &Store, mac_key: MacKey) -> Result<Self, Error> {
        let all: Vec<(String, Principal)> = store.scan(PRINCIPALS, "", None, usize::MAX)?;
        Ok(Self {
            by_oid: RwLock::new(all.into_iter().collect()),
            mac_key,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Principal>> {
        self.by_oid.read().unwrap_or_else(|p| p.into_inner())
    }

    fn secret_mac(&self, secret: &[u8]) -> String {
        crate::seal::mac_hex(&self.mac_key, secret)
    }

    /// Creates a principal and returns its credential (the only time the secret exists).
    pub fn create(
        &self,
        store: &Store,
        name: &str,
        kind: PrincipalKind,
        service_admin: bool,
    ) -> Result<Credential, Error> {
        let secret = SecretBytes::random(32)?;
        let secret_text = B64.encode(secret.expose_secret());
        let principal = Principal {
            object_id: uuid()?,
            client_id: uuid()?,
            name: name.to_string(),
            kind,
            service_admin,
            secret_mac: self.secret_mac(secret_text.as_bytes()),
            created: now_unix(),
        };
        let mut map = self.by_oid.write().unwrap_or_else(|p| p.into_inner());
        if map.values().any(|p| p.name == name) {
            return Err(Error::IdentityExists(name.to_string()));
        }
        store.write(|tx| tx.put(PRINCIPALS, &principal.object_id, &principal))?;
        map.insert(principal.object_id.clone(), principal.clone());
        Ok(Credential {
            name: principal.name,
            object_id: principal.object_id,
            client_id: principal.client_id,
            kind,
            client_secret: secret_text,
        })
    }

    /// The principal with this object id, if it still exists.
    pub fn get(&self, object_id: &str) -> Option<Principal> {
        self.read().get(object_id).cloned()
    }

    /// Finds a principal by name, object id or client id.
    pub fn find(&self, name_or_id: &str) -> Option<Principal> {
        self.read()
            .values()
            .find(|p| {
                p.name == name_or_id || p.object_id == name_or_id || p.client_id == name_or_id
            })
            .cloned()
    }

    /// Every principal, sorted by name.
    pub fn list(&self) -> Vec<Principal> {
        let mut all: Vec<Principal> = self.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Deletes a principal; its tokens stop working at once (every request looks it up).
    pub fn delete(&self, store: &Store, object_id: &str) -> Result<bool, Error> {
        let mut map = self.by_oid.write().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(object_id) {
            return Ok(false);
        }
        store.write(|tx| tx.delete(PRINCIPALS, object_id))?;
        map.remove(object_id);
        Ok(true)
    }

    /// Client-credentials login: the principal whose client id and secret match.
    pub fn authenticate(&self, client_id: &str, secret: &str) -> Option<Principal> {
        let mac = self.secret_mac(secret.as_bytes());
        self.read()
            .values()
            .find(|p| p.client_id == client_id && ct_eq(p.secret_mac.as_bytes(), mac.as_bytes()))
            .cloned()
    }

    /// Managed-identity login: the managed identity whose secret is `header`,
    /// narrowed by client id or object id when the caller names one.
    pub fn authenticate_managed(
        &self,
        header: &str,
        client_id: Option<&str>,
        object_id: Option<&str>,
    ) -> Option<Principal> {
        let mac = self.secret_mac(header.as_bytes());
        self.read()
            .values()
            .find(|p| {
                p.kind == PrincipalKind::Managed
                    && client_id.is_none_or(|c| c == p.client_id)
                    && object_id.is_none_or(|o| o == p.object_id)
                    && ct_eq(p.secret_mac.as_bytes(), mac.as_bytes())
            })
            .cloned()
    }
}
