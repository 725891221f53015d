//! `pgcmk serve`'s options for where backup repositories are kept: local
//! directories by default, or Azure Blob Storage containers (docs/backups.md): one
//! for the servers' own repositories (`--backup-azure-*`), one in the paired
//! location's storage account for their geo-redundant copies
//! (`--geo-backup-azure-*`).

use std::path::PathBuf;

use clap::Args;
use pgcmk_agent::contract::backup::AzureStore;
use pgcmk_crypto::SecretBytes;

use crate::error::CliError;

/// Keep new servers' backup repositories in an Azure Blob Storage container.
#[derive(Args)]
pub struct BackupStoreArgs {
    /// The storage account that holds the container (e.g. `pgcmkbackups`).
    #[arg(long, requires_all = ["backup_azure_container", "backup_azure_endpoint"])]
    backup_azure_account: Option<String>,
    /// The container (it must exist).
    #[arg(long, requires = "backup_azure_account")]
    backup_azure_container: Option<String>,
    /// The Blob service's endpoint, https://HOST[:PORT] (the account's
    /// https://ACCOUNT.blob.core.windows.net, or a private endpoint or emulator, which
    /// is then addressed with the account in the path).
    #[arg(long, requires = "backup_azure_account")]
    backup_azure_endpoint: Option<String>,
    /// A PEM CA bundle to trust for the endpoint instead of the system roots.
    #[arg(long, requires = "backup_azure_account")]
    backup_azure_ca_file: Option<PathBuf>,
    /// A file holding the account's shared key (base64): needed on first start, then
    /// it is kept sealed in the state (delete the file afterwards); given again, it
    /// replaces it.
    #[arg(long, requires = "backup_azure_account")]
    backup_azure_key_file: Option<PathBuf>,
}

/// Keep new geo-redundant copies of backups in an Azure Blob Storage container of
/// a storage account in the paired location, with a key of its own.
#[derive(Args)]
pub struct GeoBackupStoreArgs {
    /// The paired location's storage account that holds the container (not the
    /// account of --backup-azure-account).
    #[arg(long, requires_all = ["geo_backup_azure_container", "geo_backup_azure_endpoint"])]
    geo_backup_azure_account: Option<String>,
    /// The container (it must exist).
    #[arg(long, requires = "geo_backup_azure_account")]
    geo_backup_azure_container: Option<String>,
    /// Its Blob service's endpoint, https://HOST[:PORT], as --backup-azure-endpoint.
    #[arg(long, requires = "geo_backup_azure_account")]
    geo_backup_azure_endpoint: Option<String>,
    /// A PEM CA bundle to trust for that endpoint instead of the system roots.
    #[arg(long, requires = "geo_backup_azure_account")]
    geo_backup_azure_ca_file: Option<PathBuf>,
    /// A file holding that account's shared key (base64): needed on first start,
    /// then kept sealed in the state (delete the file afterwards); given again, it
    /// replaces it.
    #[arg(long, requires = "geo_backup_azure_account")]
    geo_backup_azure_key_file: Option<PathBuf>,
}

impl BackupStoreArgs {
    /// The container, and the account key read from its file; `None` without
    /// `--backup-azure-account`.
    pub fn into_store(self) -> Result<(Option<AzureStore>, Option<SecretBytes>), CliError> {
        StoreOptions {
            prefix: "--backup-azure",
            account: self.backup_azure_account,
            container: self.backup_azure_container,
            endpoint: self.backup_azure_endpoint,
            ca_file: self.backup_azure_ca_file,
            key_file: self.backup_azure_key_file,
        }
        .into_store()
    }
}

impl GeoBackupStoreArgs {
    /// The container, and the account key read from its file; `None` without
    /// `--geo-backup-azure-account`.
    pub fn into_store(self) -> Result<(Option<AzureStore>, Option<SecretBytes>), CliError> {
        StoreOptions {
            prefix: "--geo-backup-azure",
            account: self.geo_backup_azure_account,
            container: self.geo_backup_azure_container,
            endpoint: self.geo_backup_azure_endpoint,
            ca_file: self.geo_backup_azure_ca_file,
            key_file: self.geo_backup_azure_key_file,
        }
        .into_store()
    }
}

/// One store's options, named `PREFIX-account`, `PREFIX-container`, ...
struct StoreOptions {
    prefix: &'static str,
    account: Option<String>,
    container: Option<String>,
    endpoint: Option<String>,
    ca_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

impl StoreOptions {
    fn into_store(self) -> Result<(Option<AzureStore>, Option<SecretBytes>), CliError> {
        let prefix = self.prefix;
        let key = self
            .key_file
            .map(|file| {
                std::fs::read(&file)
                    .map(|bytes| SecretBytes::new(bytes.trim_ascii().to_vec()))
                    .map_err(|e| {
                        CliError::usage(format!("{prefix}-key-file {}: {e}", file.display()))
                    })
            })
            .transpose()?;
        let (Some(account), Some(container), Some(endpoint)) =
            (self.account, self.container, self.endpoint)
        else {
            return Ok((None, key));
        };
        let (host, port) = parse_endpoint(&endpoint)
            .map_err(|why| CliError::usage(format!("{prefix}-endpoint {endpoint}: {why}")))?;
        let path_style = !host.starts_with(&format!("{account}."));
        Ok((
            Some(AzureStore {
                account,
                container,
                host,
                port,
                ca_file: self.ca_file,
                path_style,
            }),
            key,
        ))
    }
}

/// The host and port of `https://HOST[:PORT]`, or what is wrong with it.
fn parse_endpoint(endpoint: &str) -> Result<(String, u16), String> {
    let bad = |why: &str| format!("{why}; give https://HOST or https://HOST:PORT");
    let rest = endpoint
        .strip_prefix("https://")
        .ok_or_else(|| bad("not an https:// URL"))?
        .trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') {
        return Err(bad("it must be the service's address only"));
    }
    match rest.rsplit_once(':') {
        Some((host, port)) => Ok((
            host.to_string(),
            port.parse().map_err(|_| bad("its port is not a number"))?,
        )),
        None => Ok((rest.to_string(), 443)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_give_a_host_and_a_port() {
        assert_eq!(
            parse_endpoint("https://127.0.0.1:10443").unwrap(),
            ("127.0.0.1".to_string(), 10443)
        );
        assert_eq!(
            parse_endpoint("https://acct.blob.core.windows.net/").unwrap(),
            ("acct.blob.core.windows.net".to_string(), 443)
        );
        for bad in ["http://h", "https://", "https://h/c", "https://h:x"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_geo_endpoint_names_its_option() {
        let options = StoreOptions {
            prefix: "--geo-backup-azure",
            account: Some("geo".into()),
            container: Some("c".into()),
            endpoint: Some("http://h".into()),
            ca_file: None,
            key_file: None,
        };
        let err = options.into_store().expect_err("refused").to_string();
        assert!(
            err.contains("--geo-backup-azure-endpoint http://h: not an https:// URL"),
            "{err}"
        );
    }
}
