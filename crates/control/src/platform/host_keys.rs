//! Keys re-wrapped on hosts ([docs/hosts.md](../../../../docs/hosts.md)): when a
//! server's agent on a host follows its key's rotation, it re-wraps the DEK (and a
//! highly available server's repository key) in its directory there, and the host
//! relays the new wrapping. The plane takes it as the server's record once it is
//! sure it is the host's own server and a version of the server's own key, so
//! the next assignment carries it and the old version may be disabled.

use pgcmk_agent::contract::server_dir::{read_json, write_json_atomic};
use pgcmk_agent::contract::ServerDir;
use pgcmk_keyprovider::{KeyReference, KeyVersionId, WrappedDek};

use crate::assignments::RelayedServer;
use crate::Error;

use super::Platform;

/// Why a relayed wrapping is not taken (logged: the host's word is not trusted
/// beyond what is checked here).
#[derive(Debug, thiserror::Error)]
enum NotTaken {
    #[error("it is not a server assigned to this host")]
    NotThisHosts,
    #[error("{got} is not a version of the server's key {key}")]
    OtherKey {
        got: Box<KeyVersionId>,
        key: Box<KeyReference>,
    },
    #[error("the plane keeps no copy of this server's repository key")]
    NoRepositoryKeyHere,
    #[error(transparent)]
    Plane(#[from] Error),
}

impl Platform {
    /// Takes in the wrappings `host`'s agents made with a new key version, as it
    /// relays them; one that does not check out is logged and left.
    pub(super) fn take_rewrapped(&self, host: &str, servers: &[RelayedServer]) {
        for relayed in servers {
            if relayed.wrapped_dek.is_none() && relayed.wrapped_backup_key.is_none() {
                continue;
            }
            if let Err(e) = self.take_rewrapped_of(host, relayed) {
                tracing::warn!(
                    host,
                    server = %relayed.server_id,
                    "a key wrapping relayed by the host is not taken: {e}"
                );
            }
        }
    }

    fn take_rewrapped_of(&self, host: &str, relayed: &RelayedServer) -> Result<(), NotTaken> {
        let server = self
            .store
            .servers()?
            .into_iter()
            .find(|s| s.id == relayed.server_id && s.host.as_deref() == Some(host))
            .ok_or(NotTaken::NotThisHosts)?;
        let config = self
            .store
            .assigned_config(&server.id)?
            .ok_or(NotTaken::NotThisHosts)?;
        let key = &config.kek.key;
        if let Some(wrapped) = &relayed.wrapped_dek {
            if wrapped.kek != server.wrapped_dek.kek {
                version_of(&wrapped.kek, key)?;
                self.adopt_rewrapped_dek(&server, wrapped)?;
            }
        }
        if let Some(wrapped) = &relayed.wrapped_backup_key {
            let owner = config.backup.as_ref().and_then(|b| b.owner.as_ref());
            let file = ServerDir::new(&owner.ok_or(NotTaken::NoRepositoryKeyHere)?.dir)
                .wrapped_backup_key();
            let current: WrappedDek = read_json(&file).map_err(Error::from)?;
            if wrapped.kek != current.kek {
                version_of(&wrapped.kek, key)?;
                write_json_atomic(&file, wrapped).map_err(Error::from)?;
                tracing::info!(
                    server = %server.name,
                    host,
                    "the repository key is wrapped by {} (was {})",
                    wrapped.kek,
                    current.kek
                );
            }
        }
        Ok(())
    }
}

/// Refuses `got` unless it is a version of `key` (the pinned one, for a pinned
/// key). Keys of the other providers have no versions: a new key is a new
/// reference, never a re-wrap.
fn version_of(got: &KeyVersionId, key: &KeyReference) -> Result<(), NotTaken> {
    let ok = match (got, key) {
        (KeyVersionId::Azure(v), KeyReference::Azure(k)) => {
            v.vault_url == k.vault_url
                && v.name == k.name
                && k.version.as_ref().is_none_or(|pinned| *pinned == v.version)
        }
        _ => false,
    };
    if ok {
        return Ok(());
    }
    Err(NotTaken::OtherKey {
        got: Box::new(got.clone()),
        key: Box::new(key.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(url: &str) -> KeyVersionId {
        KeyVersionId::parse(url).unwrap()
    }

    #[test]
    fn only_a_version_of_the_servers_own_key_is_taken() {
        let v2 = "https://127.0.0.1:8443/keys/k/0123456789abcdef0123456789abcdef";
        let followed = KeyReference::parse("https://127.0.0.1:8443/keys/k").unwrap();
        assert!(version_of(&version(v2), &followed).is_ok());
        let pinned_v1 =
            KeyReference::parse("https://127.0.0.1:8443/keys/k/ffffffffffffffffffffffffffffffff")
                .unwrap();
        assert!(version_of(&version(v2), &pinned_v1).is_err());
        let other_key = "https://127.0.0.1:8443/keys/other/0123456789abcdef0123456789abcdef";
        assert!(version_of(&version(other_key), &followed).is_err());
        let other_vault = "https://127.0.0.9:8443/keys/k/0123456789abcdef0123456789abcdef";
        assert!(version_of(&version(other_vault), &followed).is_err());
    }
}
