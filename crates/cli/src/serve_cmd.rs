//! `pgcmk serve`: the control plane.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use pgcmk_agent::contract::invocation::Observability;
use pgcmk_agent::contract::VaultEndpoints;
use pgcmk_control::etcd_tls::MEMBER_LIFETIME;
use pgcmk_control::identity_file::read_identity_secret;
use pgcmk_control::platform::{Platform, PlatformConfig};
use pgcmk_control::root_key::RootKeySource;
use pgcmk_control::serve_info::ServeInfo;
use pgcmk_crypto::SecretBytes;
use pgcmk_hostkeys::metrics_endpoint;
use pgcmk_keyprovider::KeyReference;

use crate::api_listen::checked_api_names;
use crate::backup_store_args::{BackupStoreArgs, GeoBackupStoreArgs};
use crate::error::CliError;
use crate::etcd_tls_args::EtcdTlsArgs;
use crate::logging::{self, LogFormat};
use crate::observability_args::ObservabilityArgs;

/// `pgcmk serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Directory for the state store and the servers' (encrypted) files.
    #[arg(long, default_value = "/var/lib/pgcmk/control")]
    state_dir: PathBuf,
    /// Address of the REST API (HTTPS; its certificate names localhost, 127.0.0.1
    /// and ::1, and each --api-name). Another address than loopback must be named
    /// by --api-name.
    #[arg(long, default_value = "127.0.0.1:7480")]
    listen: std::net::SocketAddr,
    /// A DNS name or IP address that clients and hosts on other machines reach the
    /// REST API by, for its certificate (repeat for several). Changing the names
    /// makes a new CA: every client and host must then trust the new ca.pem.
    #[arg(long = "api-name", value_name = "NAME")]
    api_names: Vec<String>,
    /// The vault service's data directory: its service.json gives the identity
    /// endpoint and CA, followed when the service moves (nothing else there is read).
    #[arg(long, env = "PGCMK_VAULT_SERVICE_DIR")]
    vault_service_dir: PathBuf,
    /// The platform key for service-managed encryption (key URL).
    #[arg(long)]
    platform_key: String,
    /// The platform's managed identity (client id).
    #[arg(long)]
    platform_identity: String,
    /// The platform identity's credential file: needed on first start, then its secret is
    /// kept sealed in the state (delete the file afterwards); given again, it replaces it.
    #[arg(long)]
    platform_identity_credential_file: Option<PathBuf>,
    /// Derive the root key that seals identity secrets with Argon2id from the passphrase in
    /// this environment variable (instead of STATE_DIR/root.key); needed at every start.
    #[arg(long, value_name = "VAR")]
    passphrase_env: Option<String>,
    /// Seconds between key checks.
    #[arg(long, default_value_t = 60)]
    key_check_interval_secs: u64,
    /// Seconds of transient key-vault failures tolerated before a server goes Inaccessible.
    #[arg(long, default_value_t = 300)]
    key_check_grace_secs: u64,
    /// Allow customers' PKCS#11 keys to name this module (absolute path of the token's
    /// shared library, e.g. /usr/lib/softhsm/libsofthsm2.so); repeat for several.
    /// None by default: a module is code that the control plane and agents load.
    #[arg(long = "pkcs11-module", value_name = "PATH")]
    pkcs11_modules: Vec<PathBuf>,
    /// Allow KMIP keys whose `ca-file=` is this PEM file of CA certificates (the CA of
    /// the customer's KMIP server); repeat for several. None by default: the CA
    /// decides which servers are trusted with the DEKs to wrap.
    #[arg(long = "kmip-ca-file", value_name = "PATH")]
    kmip_ca_files: Vec<PathBuf>,
    #[command(flatten)]
    observability: ObservabilityArgs,
    #[command(flatten)]
    backup_store: BackupStoreArgs,
    #[command(flatten)]
    geo_backup_store: GeoBackupStoreArgs,
    /// Keep highly available servers' consensus in this existing etcd cluster
    /// (client URLs, comma-separated: http://10.0.0.5:2379,...) instead of the
    /// 3-member cluster the control plane runs on loopback (docs/high-availability.md).
    #[arg(long, value_name = "URL,...", value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    #[command(flatten)]
    etcd_tls: EtcdTlsArgs,
    /// For tests that watch them renewed: how long the local etcd members'
    /// certificates live, in seconds (a member is restarted with a new one after
    /// two thirds of it). A year by default.
    #[arg(long, hide = true, value_name = "SECONDS")]
    etcd_member_certificate_lifetime_secs: Option<u64>,
}

/// Runs the control plane until SIGTERM or SIGINT.
pub fn serve(args: ServeArgs) -> Result<(), CliError> {
    logging::init(args.observability.log_format, None);
    let api_names = checked_api_names(args.listen, &args.api_names)?;
    let root_key = match &args.passphrase_env {
        Some(var) => {
            let passphrase = std::env::var_os(var).ok_or_else(|| {
                CliError::usage(format!(
                    "--passphrase-env {var}: the variable {var} is not set"
                ))
            })?;
            // Still one thread: agents and other children must not inherit it.
            std::env::remove_var(var);
            RootKeySource::Passphrase(SecretBytes::new(passphrase.into_encoded_bytes()))
        }
        None => RootKeySource::File,
    };
    // After the passphrase left the environment: reading the files starts a thread.
    let etcd_tls = args.etcd_tls.given(&args.etcd_endpoints)?;
    let vault = VaultEndpoints::read(&args.vault_service_dir).map_err(|e| {
        CliError::usage(format!(
            "{e}: start `pgcmk vault serve` first, and give its data directory as --vault-service-dir"
        ))
    })?;
    let platform_key = KeyReference::parse(&args.platform_key)
        .map_err(|e| CliError::usage(format!("--platform-key: {e}")))?;
    let platform_identity_secret = args
        .platform_identity_credential_file
        .as_deref()
        .map(read_identity_secret)
        .transpose()?;
    let (backup_store, backup_store_key) = args.backup_store.into_store()?;
    let (geo_backup_store, geo_backup_store_key) = args.geo_backup_store.into_store()?;
    let config = PlatformConfig {
        state_dir: args.state_dir.clone(),
        api_names,
        vault,
        vault_service_dir: Some(args.vault_service_dir),
        platform_key,
        platform_client_id: args.platform_identity,
        platform_identity_secret,
        root_key,
        interval: Duration::from_secs(args.key_check_interval_secs.max(1)),
        grace: Duration::from_secs(args.key_check_grace_secs),
        agent_program: std::env::current_exe()?,
        pkcs11_modules: args.pkcs11_modules,
        kmip_ca_files: args.kmip_ca_files,
        agent_observability: Observability {
            metrics: args.observability.metrics_listen.is_some(),
            json_logs: args.observability.log_format == LogFormat::Json,
        },
        backup_store,
        backup_store_key,
        geo_backup_store,
        geo_backup_store_key,
        etcd_tls,
        etcd_endpoints: (!args.etcd_endpoints.is_empty()).then_some(args.etcd_endpoints),
        etcd_member_lifetime: args
            .etcd_member_certificate_lifetime_secs
            .map_or(MEMBER_LIFETIME, Duration::from_secs),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        // Bound (and the recorder installed) before the state is opened: re-attaching
        // agents already moves servers between states.
        let metrics_listener = match args.observability.metrics_listen {
            Some(address) => Some(
                metrics_endpoint::bind(address)
                    .await
                    .map_err(|e| CliError::usage(e.to_string()))?,
            ),
            None => None,
        };
        let platform = tokio::task::spawn_blocking(move || Platform::open(config))
            .await
            .map_err(|e| CliError::failed(format!("opening the control plane's state: {e}")))??;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| CliError::usage(format!("cannot listen on {}: {e}", args.listen)))?;
        let url = format!("https://{}", listener.local_addr()?);
        let ca_file = platform.ca_file();
        // Tests and scripts find the API and the CA to trust here when they asked for port 0.
        ServeInfo {
            url: url.clone(),
            ca_file: ca_file.clone(),
            pid: std::process::id(),
        }
        .write(&args.state_dir)?;
        // Log events (not bare lines), so that a JSON log stays JSON from its first line.
        tracing::info!(
            "pgcmk control plane listening on {url} (HTTPS; clients trust the CA certificate {})",
            ca_file.display()
        );
        if let Some(file) = platform.new_dba_credential() {
            tracing::info!(
                "the DBA credential was written to {} (0600): hand it to the DBA \
                 (with ca.pem and serve.json; `pgcmk server` finds all three through \
                 PGCMK_CONTROL_DIR) and remove it from this directory",
                file.display()
            );
        }
        let platform = Arc::new(platform);
        if let Some(metrics) = metrics_listener {
            let router = pgcmk_control::metrics::router(platform.clone());
            tokio::spawn(metrics_endpoint::serve(metrics, router, shutdown_signal()));
        }
        pgcmk_control::api::serve(platform, listener, shutdown_signal()).await;
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
