//! Where the platform keeps its servers' backup repositories: local directories
//! (`STATE/backups/ID`, `STATE/geo-backups/LOCATION/ID`) by default, or Azure Blob
//! Storage containers that the platform operator named at `pgcmk serve`
//! (`docs/backups.md`): one for the servers' own repositories, and one in the
//! paired location's storage account for their geo-redundant copies. Each account's
//! shared key is a secret: sealed in the state under the root key like the
//! identities' secrets, and handed to the agents that need it in their start-up
//! handshake only. A deleted server's repositories are removed from the containers
//! by the control plane itself ([`crate::azure_blob`]).

use std::path::{Path, PathBuf};

use pgcmk_agent::contract::backup::{AzureStore, GeoRepository, Repository};
use pgcmk_agent::contract::server_dir::read_json;
use pgcmk_agent::contract::{AgentConfig, ServerDir};
use pgcmk_crypto::SecretBytes;

use super::{Platform, PlatformConfig};
use crate::azure_blob::BlobContainer;
use crate::error::StoreError;
use crate::model::ServerRecord;
use crate::root_key::IdentitySecrets;
use crate::store::Store;
use crate::Error;

/// The owner under which the sealed key of the account holding `repo` is stored.
fn owner(repo: Repository) -> &'static str {
    match repo {
        Repository::Primary => "backup-store",
        Repository::Geo => "geo-backup-store",
    }
}

/// The `pgcmk serve` option that gives the key of the account holding `repo`.
fn key_option(repo: Repository) -> &'static str {
    match repo {
        Repository::Primary => "--backup-azure-key-file",
        Repository::Geo => "--geo-backup-azure-key-file",
    }
}

/// At start: refuses a geo store that is the servers' own container (a copy and
/// its original, under one stanza name, in one place), then stores each account's
/// key when given (replacing any), else checks that one is stored for each store
/// in Azure.
pub(super) fn open_storage_keys(
    secrets: &IdentitySecrets,
    store: &Store,
    config: &PlatformConfig,
) -> Result<(), Error> {
    refuse_shared_container(
        config.backup_store.as_ref(),
        config.geo_backup_store.as_ref(),
    )?;
    let stores = [
        (
            Repository::Primary,
            &config.backup_store,
            &config.backup_store_key,
        ),
        (
            Repository::Geo,
            &config.geo_backup_store,
            &config.geo_backup_store_key,
        ),
    ];
    for (repo, azure, key) in stores {
        match key {
            Some(key) => secrets.put(store, owner(repo), key)?,
            None if azure.is_some() && store.sealed_identity_secret(owner(repo))?.is_none() => {
                return Err(Error::Store(StoreError::Missing(format!(
                    "no key of the storage account '{}' is stored yet: start `pgcmk serve` with \
                     {} once",
                    azure.as_ref().map_or("", |a| a.account.as_str()),
                    key_option(repo)
                ))))
            }
            None => {}
        }
    }
    Ok(())
}

/// Refuses a geo store `geo` that is the own repositories' container `own`: a copy
/// and its original, under one stanza name, in one place.
fn refuse_shared_container(
    own: Option<&AzureStore>,
    geo: Option<&AzureStore>,
) -> Result<(), Error> {
    let (Some(own), Some(geo)) = (own, geo) else {
        return Ok(());
    };
    if (&own.host, own.port, &own.account, &own.container)
        == (&geo.host, geo.port, &geo.account, &geo.container)
    {
        return Err(Error::BadRequest(format!(
            "--geo-backup-azure-* names container '{}' of account '{}', where the servers' \
             own repositories are: the geo-redundant copies need a storage account of their \
             own in the paired location",
            geo.container, geo.account
        )));
    }
    Ok(())
}

impl Platform {
    /// Where new server `id`'s repository is: its path in the Azure container when
    /// the platform keeps repositories there, else its local directory.
    pub(super) fn repository_path(&self, id: &str) -> PathBuf {
        match &self.config.backup_store {
            Some(_) => PathBuf::from(format!("/{id}")),
            None => self.backups_dir().join(id),
        }
    }

    /// The storage accounts' keys for the agent of `server`: the own repositories'
    /// account when its repository (or, for a server being restored from a
    /// repository 1, its source's) is in Azure Blob Storage; the paired location's
    /// when its geo-redundant copy (or its source's, restored from) is.
    pub(super) fn storage_keys(
        &self,
        server: &ServerRecord,
    ) -> Result<(Option<SecretBytes>, Option<SecretBytes>), Error> {
        let Ok(config) = read_json::<AgentConfig>(&ServerDir::new(&server.dir).agent_config())
        else {
            return Ok((None, None));
        };
        let backup = config.backup.as_ref();
        let restored_from = config
            .restore
            .as_ref()
            .filter(|r| r.azure.is_some())
            .map(|r| r.repository_kind);
        let own =
            backup.is_some_and(|b| b.azure.is_some()) || restored_from == Some(Repository::Primary);
        let geo = backup
            .and_then(|b| b.geo.as_ref())
            .is_some_and(|g| g.azure.is_some())
            || restored_from == Some(Repository::Geo);
        let key = |needed: bool, repo| {
            needed
                .then(|| self.secrets.get(&self.store, owner(repo)))
                .transpose()
        };
        Ok((key(own, Repository::Primary)?, key(geo, Repository::Geo)?))
    }

    /// Removes the blobs of the repositories of the server configured by `config`
    /// that are kept in Azure Blob Storage: its own and its geo-redundant copy.
    pub(super) fn remove_blob_repository(&self, config: &AgentConfig) -> Result<(), Error> {
        let Some(backup) = &config.backup else {
            return Ok(());
        };
        if let Some(store) = &backup.azure {
            self.remove_blobs(store, &backup.repository, Repository::Primary)?;
        }
        match &backup.geo {
            Some(geo) => self.remove_geo_blobs(geo),
            None => Ok(()),
        }
    }

    /// Removes the blobs of the geo-redundant copy `geo` when it is kept in Azure
    /// Blob Storage.
    pub(super) fn remove_geo_blobs(&self, geo: &GeoRepository) -> Result<(), Error> {
        match &geo.azure {
            Some(store) => self.remove_blobs(store, &geo.repository, Repository::Geo),
            None => Ok(()),
        }
    }

    /// Removes every blob under `path` in `store`'s container, signed with the key
    /// of the account holding `repo`.
    fn remove_blobs(&self, store: &AzureStore, path: &Path, repo: Repository) -> Result<(), Error> {
        let path = path.to_string_lossy();
        let prefix = format!("{}/", path.trim_matches('/'));
        if prefix == "/" {
            return Ok(());
        }
        let key = self.secrets.get(&self.store, owner(repo))?;
        let deleted = BlobContainer::open(store, &key)?.delete_prefix(&prefix)?;
        tracing::info!(
            account = %store.account,
            container = %store.container,
            prefix,
            deleted,
            "removed a backup repository from Azure Blob Storage"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(account: &str, container: &str) -> AzureStore {
        AzureStore {
            account: account.into(),
            container: container.into(),
            host: "127.0.0.1".into(),
            port: 10443,
            ca_file: None,
            path_style: true,
        }
    }

    #[test]
    fn the_geo_store_may_not_be_the_own_repositories_container() {
        let own = store("acct", "backups");
        let err = refuse_shared_container(Some(&own), Some(&own.clone()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("need a storage account of their own"), "{err}");
        let other_account = store("geoacct", "backups");
        let other_container = store("acct", "geo");
        for geo in [&other_account, &other_container] {
            assert!(refuse_shared_container(Some(&own), Some(geo)).is_ok());
        }
        assert!(refuse_shared_container(None, Some(&own)).is_ok());
    }
}
