//! The geo-redundant copy of a server's backups (`docs/backups.md`): pgBackRest's
//! `repo2`, kept in the location of the geo key's vault (another than the
//! server's), encrypted under its own random repository key wrapped by the geo key,
//! which the server's agent reaches through the geo identity. The control plane
//! validates the geo key as it does a server's key, with a real wrap and unwrap as
//! the geo identity, and keeps that identity's secret sealed beside the server's.

use std::fs;
use std::path::PathBuf;

use pgcmk_agent::contract::backup::GeoRepository;
use pgcmk_agent::contract::KekAccess;
use pgcmk_crypto::SecretBytes;
use pgcmk_keyprovider::WrappedDek;
use serde::{Deserialize, Serialize};

use super::create::assigning_secret;
use super::Platform;
use crate::error::IoContext;
use crate::model::{SecretString, ServerRecord};
use crate::store::geo_owner;
use crate::validate;
use crate::Error;

/// `geo_backup` of a create request: the geo key and the identity that reaches it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GeoBackupChoice {
    /// The geo key's URL (versionless: the copy's key follows its rotation), in a
    /// vault of another location than the server's.
    pub key: String,
    /// The user-assigned managed identity with `get`, `wrapKey` and `unwrapKey` on
    /// it (its client id).
    pub identity: String,
    /// The identity's header secret (from its credential file), which assigns it
    /// to the server.
    #[serde(default)]
    pub identity_secret: Option<SecretString>,
}

/// A new server's geo-redundant copy, validated.
pub(super) struct GeoBackup {
    /// Where it is kept and how to reach its key (in `agent.json`).
    pub(super) repository: GeoRepository,
    /// Its repository key, wrapped by the geo key.
    pub(super) wrapped_key: WrappedDek,
    /// The geo identity's secret, to seal.
    pub(super) secret: SecretBytes,
}

impl GeoBackup {
    /// The copy, in a new server's `server created` event.
    pub(super) fn describe(&self) -> String {
        format!(
            "geo-redundant backups in {} under key {}",
            self.repository.location, self.repository.kek.key
        )
    }
}

impl Platform {
    /// Where server `id`'s geo-redundant copy kept in `location` is: its path in
    /// the paired location's Azure container when the platform keeps copies there,
    /// else its local directory.
    fn geo_repository_path(&self, location: &str, id: &str) -> PathBuf {
        match &self.config.geo_backup_store {
            Some(_) => PathBuf::from(format!("/{id}")),
            None => self
                .config
                .state_dir
                .join("geo-backups")
                .join(location)
                .join(id),
        }
    }

    /// Validates the geo key of new server `id` in `location`, and makes the copy's
    /// repository key, wrapped by it. Nothing is stored yet.
    pub(super) fn geo_backup_for(
        &self,
        id: &str,
        location: &str,
        choice: &GeoBackupChoice,
    ) -> Result<GeoBackup, Error> {
        let secret = assigning_secret(
            choice.identity_secret.as_ref(),
            "a geo-redundant copy needs the geo identity's credential \
             (--geo-backup-identity-credential-file) to assign it to the server",
        )?;
        let access = KekAccess {
            key: self.customer_key(&choice.identity, &choice.key)?,
            vault: self.vault_endpoints(),
            client_id: choice.identity.clone(),
        };
        let kek = access
            .connect(secret.clone())
            .map_err(|e| Error::BadRequest(e.to_string()))?;
        // The copy's key exists here only while its wrapping is validated.
        let (key, wrapped_key, geo_location) =
            validate::new_geo_wrapped_key(kek.as_ref(), &choice.identity, location)?;
        drop(key);
        Ok(GeoBackup {
            repository: GeoRepository {
                repository: self.geo_repository_path(&geo_location, id),
                location: geo_location,
                kek: access,
                azure: self.config.geo_backup_store.clone(),
            },
            wrapped_key,
            secret,
        })
    }

    /// The secret of the geo identity of `server`, when it has a geo copy: for a
    /// node of a highly available server, its server's (the copy is the server's,
    /// and whichever node is primary keeps it up to date).
    pub(super) fn geo_identity_secret(
        &self,
        server: &ServerRecord,
    ) -> Result<Option<SecretBytes>, Error> {
        let owner = geo_owner(server.node_of.as_ref().map_or(&server.id, |n| &n.server_id));
        if self.store.sealed_identity_secret(&owner)?.is_none() {
            return Ok(None);
        }
        self.secrets.get(&self.store, &owner).map(Some)
    }

    /// Removes the geo-redundant copies of server `id` kept in local directories,
    /// in whichever location.
    pub(super) fn remove_geo_backups(&self, id: &str) -> Result<(), Error> {
        let root = self.config.state_dir.join("geo-backups");
        let Ok(locations) = fs::read_dir(&root) else {
            return Ok(());
        };
        for location in locations.filter_map(Result::ok) {
            let repository = location.path().join(id);
            match fs::remove_dir_all(&repository) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).ctx(|| format!("removing {}", repository.display()))
                }
                _ => {}
            }
        }
        Ok(())
    }
}
