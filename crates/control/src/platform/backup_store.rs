//! Where the platform keeps its servers' backup repositories: local directories
//! (`STATE/backups/ID`) by default, or an Azure Blob Storage container that the
//! platform operator named at `pgcmk serve` (`docs/backups.md`). The storage
//! account's shared key is a secret: sealed in the state under the root key like
//! the identities' secrets, and handed to the agents that need it in their
//! start-up handshake only. A deleted server's repository is removed from the
//! container by the control plane itself ([`crate::azure_blob`]).

use std::path::PathBuf;

use pgcmk_agent::contract::server_dir::read_json;
use pgcmk_agent::contract::{AgentConfig, ServerDir};
use pgcmk_crypto::SecretBytes;

use super::Platform;
use crate::azure_blob::BlobContainer;
use crate::error::StoreError;
use crate::model::ServerRecord;
use crate::root_key::IdentitySecrets;
use crate::store::Store;
use crate::Error;

/// The owner under which the storage account's sealed key is stored.
const STORAGE_KEY: &str = "backup-store";

/// At start: stores the storage account's key `key` when given (replacing any),
/// else checks that one is stored when the platform keeps repositories in Azure.
pub(super) fn open_storage_key(
    secrets: &IdentitySecrets,
    store: &Store,
    in_azure: bool,
    key: Option<&SecretBytes>,
) -> Result<(), Error> {
    match key {
        Some(key) => secrets.put(store, STORAGE_KEY, key),
        None if in_azure && store.sealed_identity_secret(STORAGE_KEY)?.is_none() => {
            Err(Error::Store(StoreError::Missing(
                "no key of the backup storage account is stored yet: start `pgcmk serve` with \
                 --backup-azure-key-file once"
                    .into(),
            )))
        }
        None => Ok(()),
    }
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

    /// The storage account's key, for the agent of `server` when its repository
    /// (or, for a server being restored, its source's) is in Azure Blob Storage.
    pub(super) fn storage_key(&self, server: &ServerRecord) -> Result<Option<SecretBytes>, Error> {
        let Ok(config) = read_json::<AgentConfig>(&ServerDir::new(&server.dir).agent_config())
        else {
            return Ok(None);
        };
        let in_azure = config.backup.is_some_and(|b| b.azure.is_some())
            || config.restore.is_some_and(|r| r.azure.is_some());
        if !in_azure {
            return Ok(None);
        }
        self.secrets.get(&self.store, STORAGE_KEY).map(Some)
    }

    /// Removes the blobs of the repository of the server configured by `config`
    /// when it is kept in Azure Blob Storage (every blob under its path).
    pub(super) fn remove_blob_repository(&self, config: &AgentConfig) -> Result<(), Error> {
        let Some(backup) = &config.backup else {
            return Ok(());
        };
        let Some(store) = &backup.azure else {
            return Ok(());
        };
        let path = backup.repository.to_string_lossy();
        let prefix = format!("{}/", path.trim_matches('/'));
        if prefix == "/" {
            return Ok(());
        }
        let key = self.secrets.get(&self.store, STORAGE_KEY)?;
        let deleted = BlobContainer::open(store, &key)?.delete_prefix(&prefix)?;
        tracing::info!(
            container = %store.container,
            prefix,
            deleted,
            "removed a deleted server's repository from Azure Blob Storage"
        );
        Ok(())
    }
}
