//! The key vault and the security officer's commands: `vault serve`, `identity`,
//! `keyvault`, `key` and `audit`. Management calls go through
//! `pgcmk_vault::client`; key calls (in `key_cmds`) go over the Azure Key Vault data
//! plane with `pgcmk_keyprovider::akv`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use pgcmk_crypto::SecretBytes;
use pgcmk_vault::client::{read_credential, AdminClient, ServiceDir};
use pgcmk_vault::identity::Credential;
use reqwest::Method;
use serde_json::{json, Value};

use crate::confirm;
use crate::error::CliError;
use crate::logging::LogFormat;
use crate::name_arg::NameArg;
use crate::setting::flag_or_env;
use crate::{output, Format};

mod audit_cmds;
mod key_cmds;

pub use audit_cmds::{audit, AuditArgs};
pub use key_cmds::{key, KeyArgs};

/// `pgcmk vault ...`
#[derive(Subcommand)]
pub enum VaultCommand {
    /// Run the key vault service (HTTPS, Azure Key Vault keys API, identities, audit).
    #[command(
        after_help = "Examples:\n  pgcmk vault serve --data-dir /var/lib/pgcmk/vault\n  pgcmk vault serve --data-dir /var/lib/pgcmk/vault --pkcs11-module /usr/lib/softhsm/libsofthsm2.so --pkcs11-token vault-hsm --pkcs11-pin-file /etc/pgcmk/vault-hsm.pin   # kty RSA-HSM keys live in that token"
    )]
    Serve(ServeArgs),
}

/// `pgcmk vault serve` options.
#[derive(Args)]
pub struct ServeArgs {
    /// Data directory (created 0700 on first start).
    #[arg(long)]
    data_dir: PathBuf,
    /// Address of the management and identity endpoints, kept across restarts: without it
    /// the stored address (first start: 127.0.0.1, a free port); given, it is used and
    /// stored (port 0: a free port on that IP, kept once chosen). Vaults keep their own
    /// ports on the same IP.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Derive the root key with Argon2id from the passphrase in this environment variable
    /// (instead of DATA_DIR/root.key).
    #[arg(long, value_name = "VAR")]
    passphrase_env: Option<String>,
    /// Seconds between rotation-policy and scheduled-purge checks.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    maintenance_interval_secs: u64,
    /// Lifetime of issued access tokens, seconds.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(i64).range(1..=86_400))]
    token_lifetime_secs: i64,
    /// Data-plane operations allowed in flight at once; more get 429 Throttled.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_in_flight: u64,
    /// Seconds a client has to send a request's headers, and again its body; a slower
    /// one is dropped (the TLS handshake has at most 10).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    client_timeout_secs: u64,
    /// Connections held at once (a quarter of them from one address) [default: half the
    /// open-file limit, at most 1024].
    #[arg(long, value_parser = clap::value_parser!(u64).range(8..=100_000))]
    max_connections: Option<u64>,
    /// PKCS#11 module (shared library) of the token that kty RSA-HSM keys are generated
    /// and used in (docs/providers/vault-hsm.md).
    #[arg(long, value_name = "PATH", requires_all = ["pkcs11_token", "pkcs11_pin_file"])]
    pkcs11_module: Option<PathBuf>,
    /// Label of that token.
    #[arg(long, value_name = "LABEL", requires = "pkcs11_module")]
    pkcs11_token: Option<String>,
    /// File (mode 0600) holding the token user's PIN.
    #[arg(long, value_name = "FILE", requires = "pkcs11_module")]
    pkcs11_pin_file: Option<PathBuf>,
    #[command(flatten)]
    observability: crate::observability_args::ObservabilityArgs,
}

/// Where the service is and who is calling.
#[derive(Args, Clone)]
pub struct Connection {
    /// Directory holding the service's service.json and ca.pem (usually its data directory)
    /// [env: PGCMK_VAULT_SERVICE_DIR].
    #[arg(long, global = true)]
    service_dir: Option<PathBuf>,
    /// The caller's credential file [env: PGCMK_CREDENTIALS; default:
    /// SERVICE_DIR/admin.credential].
    #[arg(long, global = true)]
    credentials: Option<PathBuf>,
}

impl Connection {
    pub(super) fn service(&self) -> Result<ServiceDir, CliError> {
        let dir = flag_or_env(&self.service_dir, "PGCMK_VAULT_SERVICE_DIR").ok_or_else(|| {
            CliError::usage(
                "no vault service given: set PGCMK_VAULT_SERVICE_DIR or pass --service-dir",
            )
        })?;
        ServiceDir::open(&dir).map_err(CliError::from)
    }

    pub(super) fn credential(&self, service: &ServiceDir) -> Result<Credential, CliError> {
        let path = flag_or_env(&self.credentials, "PGCMK_CREDENTIALS")
            .unwrap_or_else(|| service.admin_credential());
        read_credential(&path).map_err(|e| {
            CliError::usage(format!(
                "{e} (set PGCMK_CREDENTIALS to your credential file)"
            ))
        })
    }

    pub(super) fn admin(&self) -> Result<AdminClient, CliError> {
        let service = self.service()?;
        let credential = self.credential(&service)?;
        AdminClient::new(service, credential).map_err(CliError::from)
    }
}

/// Runs `pgcmk vault serve`.
pub fn vault(command: VaultCommand, format: Format) -> Result<(), CliError> {
    let VaultCommand::Serve(args) = command;
    let log_format = args.observability.log_format;
    crate::logging::init(log_format, None);
    let passphrase = match &args.passphrase_env {
        None => None,
        Some(var) => {
            let value = std::env::var(var).map_err(|_| {
                CliError::usage(format!(
                    "environment variable {var} is not set: put the passphrase there"
                ))
            })?;
            // Single-threaded here: no runtime yet. Keep the passphrase out of /proc/PID/environ.
            std::env::remove_var(var);
            Some(SecretBytes::new(value.into_bytes()))
        }
    };
    let hsm = match (args.pkcs11_module, args.pkcs11_token, args.pkcs11_pin_file) {
        (Some(module), Some(token), Some(pin_file)) => Some(pgcmk_vault::keys::hsm::HsmConfig {
            module,
            token,
            pin: pgcmk_control::identity_file::read_identity_secret(&pin_file)
                .map_err(|e| CliError::usage(format!("--pkcs11-pin-file: {e}")))?,
        }),
        _ => None,
    };
    let mut options = pgcmk_vault::service::ServeOptions::new(args.data_dir);
    options.hsm = hsm;
    options.listen = args.listen;
    options.passphrase = passphrase;
    options.maintenance_interval = Duration::from_secs(args.maintenance_interval_secs);
    options.token_lifetime_secs = args.token_lifetime_secs;
    options.max_in_flight = args.max_in_flight as usize;
    options.metrics_listen = args.observability.metrics_listen;
    let limits = &mut options.client_limits;
    let timeout = Duration::from_secs(args.client_timeout_secs);
    limits.handshake = limits.handshake.min(timeout);
    limits.headers = timeout;
    limits.body = timeout;
    if let Some(n) = args.max_connections {
        limits.max_connections = n as usize;
        limits.max_per_client = (n as usize / 4).max(4);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))?;
    runtime
        .block_on(pgcmk_vault::service::run(options, |info| {
            if format == Format::Human && log_format == LogFormat::Json {
                // The banner's lines would break a JSON log written to the same file.
                return tracing::info!(
                    url = %info.url,
                    ca_file = %info.ca_file.display(),
                    identity_endpoint = %info.identity_endpoint,
                    "pgcmk vault listening"
                );
            }
            let v = serde_json::to_value(info).unwrap_or_default();
            output::print(format, &v, |v| {
                format!(
                    "pgcmk vault listening on {}\nCA certificate (export REQUESTS_CA_BUNDLE={})\nmanaged identity endpoint (IDENTITY_ENDPOINT): {}",
                    v["url"].as_str().unwrap_or_default(),
                    v["ca_file"].as_str().unwrap_or_default(),
                    v["identity_endpoint"].as_str().unwrap_or_default()
                )
            });
        }))
        .map_err(CliError::from)
}

/// `pgcmk identity ...`
#[derive(Args)]
pub struct IdentityArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: IdentityCommand,
}

#[derive(Subcommand)]
enum IdentityCommand {
    /// Create a managed identity or user; its secret goes to --credential-file (0600), never stdout.
    #[command(
        after_help = "Examples:\n  pgcmk identity create orders-mi --credential-file orders-mi.credential\n  pgcmk identity create alice --kind user --service-admin --credential-file alice.credential"
    )]
    Create {
        /// Unique name (letters, digits, dashes).
        #[command(flatten)]
        name: NameArg,
        /// `managed` (user-assigned managed identity) or `user`.
        #[arg(long, default_value = "managed", value_parser = ["managed", "user"])]
        kind: String,
        /// Make this user a service administrator (may manage identities and vaults).
        #[arg(long)]
        service_admin: bool,
        /// Where to write the credential (must not exist yet).
        #[arg(long)]
        credential_file: PathBuf,
    },
    /// List identities.
    #[command(after_help = "Example:\n  pgcmk identity list -o json")]
    List,
    /// Show one identity (by name, object id or client id).
    #[command(after_help = "Example:\n  pgcmk identity show orders-mi")]
    Show {
        /// Name, object id or client id.
        #[command(flatten)]
        name: NameArg,
    },
    /// Delete an identity: its tokens stop working at once.
    #[command(after_help = "Example:\n  pgcmk identity delete orders-mi --yes")]
    Delete {
        /// Name, object id or client id.
        #[command(flatten)]
        name: NameArg,
        /// Delete without asking (required without a terminal).
        #[arg(short, long)]
        yes: bool,
    },
}

fn identity_line(v: &Value) -> String {
    format!(
        "{}  kind={}  object_id={}  client_id={}",
        v["name"].as_str().unwrap_or_default(),
        v["kind"].as_str().unwrap_or_default(),
        v["object_id"].as_str().unwrap_or_default(),
        v["client_id"].as_str().unwrap_or_default()
    )
}

/// Runs `pgcmk identity ...`.
pub fn identity(args: IdentityArgs, format: Format) -> Result<(), CliError> {
    if let IdentityCommand::Delete { name, yes } = &args.command {
        confirm::confirm(
            &confirm::Destruction {
                kind: "identity",
                name: name.as_str(),
                command: format!("pgcmk identity delete {name}"),
                verb: "delete",
                loss: format!(
                    "deletes identity '{name}': its tokens stop working at once, and every \
                     server that reaches its key through it goes Inaccessible"
                ),
            },
            *yes,
        )?;
    }
    let client = args.conn.admin()?;
    let call = |m: Method, path: &str, body: Option<&Value>| {
        client.call(m, path, body).map_err(CliError::from)
    };
    match args.command {
        IdentityCommand::Create {
            name,
            kind,
            service_admin,
            credential_file,
        } => {
            check_new_file(&credential_file)?;
            let v = call(
                Method::POST,
                "/admin/identities",
                Some(&json!({ "name": name, "kind": kind, "service_admin": service_admin })),
            )?;
            let credential: Credential = serde_json::from_value(v).map_err(|e| {
                CliError::failed(format!("unexpected answer from the service: {e}"))
            })?;
            let bytes = serde_json::to_vec_pretty(&credential).map_err(CliError::from)?;
            pgcmk_vault::files::write_atomic(&credential_file, &bytes, 0o600).map_err(|e| {
                CliError::failed(format!("{e}; the identity exists without a saved credential: delete it with `pgcmk identity delete {name}` and create it again"))
            })?;
            let shown = json!({
                "name": credential.name,
                "object_id": credential.object_id,
                "client_id": credential.client_id,
                "kind": credential.kind,
                "credential_file": credential_file,
            });
            output::print(format, &shown, |v| {
                format!(
                    "created {}\ncredential written to {}",
                    identity_line(v),
                    credential_file.display()
                )
            });
        }
        IdentityCommand::List => {
            let v = call(Method::GET, "/admin/identities", None)?;
            output::print_list(format, &v, identity_line);
        }
        IdentityCommand::Show { name } => {
            let v = call(
                Method::GET,
                &format!(
                    "/admin/identities/{}",
                    pgcmk_vault::client::urlencode(name.as_str())
                ),
                None,
            )?;
            output::print(format, &v, identity_line);
        }
        IdentityCommand::Delete { name, .. } => {
            let v = call(
                Method::DELETE,
                &format!(
                    "/admin/identities/{}",
                    pgcmk_vault::client::urlencode(name.as_str())
                ),
                None,
            )?;
            output::print(format, &v, |v| format!("deleted {}", identity_line(v)));
        }
    }
    Ok(())
}

fn check_new_file(path: &Path) -> Result<(), CliError> {
    if path.exists() {
        return Err(CliError::usage(format!(
            "{} already exists: choose a new path for the credential",
            path.display()
        )));
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(CliError::usage(format!(
            "directory {} does not exist: create it first",
            parent.display()
        )));
    }
    Ok(())
}

/// `pgcmk keyvault ...`
#[derive(Args)]
pub struct KeyvaultArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: KeyvaultCommand,
}

#[derive(Subcommand)]
enum KeyvaultCommand {
    /// Create a vault (served at its own base URL); you become its administrator.
    #[command(
        after_help = "Example:\n  pgcmk keyvault create orders-kv -l westeurope --purge-protection"
    )]
    Create {
        /// 3-24 letters, digits and dashes, starting with a letter.
        #[command(flatten)]
        name: NameArg,
        /// Location label, e.g. westeurope.
        #[arg(short, long)]
        location: String,
        /// Soft-delete retention, 7-90 days.
        #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u64).range(7..=90))]
        retention_days: u64,
        /// Refuse purges until the retention has passed (cannot be turned off later).
        #[arg(long)]
        purge_protection: bool,
        /// Allow the legacy RSA1_5 encryption algorithm (off by default).
        #[arg(long)]
        allow_rsa1_5: bool,
    },
    /// Show a vault with its access policies.
    #[command(after_help = "Example:\n  pgcmk keyvault show orders-kv")]
    Show {
        /// Vault name.
        #[command(flatten)]
        name: NameArg,
    },
    /// List the vaults you can see.
    #[command(after_help = "Example:\n  pgcmk keyvault list -o json")]
    List,
    /// Change a vault's settings (purge protection is one-way).
    #[command(after_help = "Example:\n  pgcmk keyvault update orders-kv --purge-protection true")]
    Update {
        /// Vault name.
        #[command(flatten)]
        name: NameArg,
        /// New location label.
        #[arg(long)]
        location: Option<String>,
        /// Turn purge protection on (it cannot be turned off).
        #[arg(long)]
        purge_protection: Option<bool>,
        /// Allow or refuse RSA1_5.
        #[arg(long)]
        allow_rsa1_5: Option<bool>,
        /// Identities to make vault administrators.
        #[arg(long, num_args = 1..)]
        add_administrators: Vec<String>,
        /// Identities to remove from the vault administrators.
        #[arg(long, num_args = 1..)]
        remove_administrators: Vec<String>,
    },
    /// Grant an identity key permissions (replaces its previous ones).
    #[command(
        after_help = "Example:\n  pgcmk keyvault set-policy orders-kv --identity orders-mi --key-permissions get wrapKey unwrapKey"
    )]
    SetPolicy {
        /// Vault name.
        #[command(flatten)]
        name: NameArg,
        /// Identity name, object id or client id.
        #[arg(long)]
        identity: String,
        /// Azure permission names: get list create update import delete recover backup restore
        /// decrypt encrypt unwrapKey wrapKey verify sign purge rotate getrotationpolicy setrotationpolicy rng, or all.
        #[arg(long, num_args = 1.., required = true)]
        key_permissions: Vec<String>,
    },
    /// Remove an identity's access policy.
    #[command(
        after_help = "Example:\n  pgcmk keyvault delete-policy orders-kv --identity orders-mi   # revokes the server's access"
    )]
    DeletePolicy {
        /// Vault name.
        #[command(flatten)]
        name: NameArg,
        /// Identity name, object id or client id.
        #[arg(long)]
        identity: String,
    },
}

fn vault_text(v: &Value) -> String {
    let mut out = format!(
        "{}  {}\n  location={}  retention_days={}  purge_protection={}  allow_rsa1_5={}\n  administrators: {}",
        v["name"].as_str().unwrap_or_default(),
        v["url"].as_str().unwrap_or_default(),
        v["location"].as_str().unwrap_or_default(),
        v["retention_days"],
        v["purge_protection"],
        v["allow_rsa1_5"],
        v["administrators"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()
    );
    for p in v["policies"].as_array().cloned().unwrap_or_default() {
        out.push_str(&format!(
            "\n  policy {}: {}",
            p["identity"].as_str().unwrap_or_default(),
            p["key_permissions"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "))
                .unwrap_or_default()
        ));
    }
    out
}

pub(super) fn vault_path(name: &str) -> String {
    format!("/admin/vaults/{}", pgcmk_vault::client::urlencode(name))
}

/// Runs `pgcmk keyvault ...`.
pub fn keyvault(args: KeyvaultArgs, format: Format) -> Result<(), CliError> {
    let client = args.conn.admin()?;
    let call = |m: Method, path: &str, body: Option<&Value>| {
        client.call(m, path, body).map_err(CliError::from)
    };
    let v = match args.command {
        KeyvaultCommand::Create {
            name,
            location,
            retention_days,
            purge_protection,
            allow_rsa1_5,
        } => call(
            Method::POST,
            "/admin/vaults",
            Some(&json!({
                "name": name, "location": location, "retention_days": retention_days,
                "purge_protection": purge_protection, "allow_rsa1_5": allow_rsa1_5,
            })),
        )?,
        KeyvaultCommand::Show { name } => call(Method::GET, &vault_path(name.as_str()), None)?,
        KeyvaultCommand::List => {
            let v = call(Method::GET, "/admin/vaults", None)?;
            output::print_list(format, &v, vault_text);
            return Ok(());
        }
        KeyvaultCommand::Update {
            name,
            location,
            purge_protection,
            allow_rsa1_5,
            add_administrators,
            remove_administrators,
        } => call(
            Method::PATCH,
            &vault_path(name.as_str()),
            Some(&json!({
                "location": location, "purge_protection": purge_protection, "allow_rsa1_5": allow_rsa1_5,
                "add_administrators": add_administrators, "remove_administrators": remove_administrators,
            })),
        )?,
        KeyvaultCommand::SetPolicy {
            name,
            identity,
            key_permissions,
        } => call(
            Method::PUT,
            &format!(
                "{}/policies/{}",
                vault_path(name.as_str()),
                pgcmk_vault::client::urlencode(&identity)
            ),
            Some(&json!({ "key_permissions": key_permissions })),
        )?,
        KeyvaultCommand::DeletePolicy { name, identity } => call(
            Method::DELETE,
            &format!(
                "{}/policies/{}",
                vault_path(name.as_str()),
                pgcmk_vault::client::urlencode(&identity)
            ),
            None,
        )?,
    };
    output::print(format, &v, vault_text);
    Ok(())
}
