//! The key vault and the security officer's commands: `vault serve`, `identity`,
//! `keyvault`, `key` and `audit`. Management calls go through
//! `pgcmk_vault::client`; key calls go over the Azure Key Vault data plane with
//! `pgcmk_keyprovider::akv`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use pgcmk_crypto::SecretBytes;
use pgcmk_keyprovider::akv::{
    AkvClient, ClientOptions, KeyUpdate, LifetimeAction, LifetimeActionKind, LifetimeTrigger,
    NewRsaKey, RotationPolicy, RotationPolicyAttributes, TokenSource,
};
use pgcmk_vault::client::{read_credential, AdminClient, ServiceDir};
use pgcmk_vault::identity::{Credential, PrincipalKind};
use reqwest::Method;
use serde_json::{json, Value};

use crate::{output, Format};

/// `pgcmk vault ...`
#[derive(Subcommand)]
pub enum VaultCommand {
    /// Run the key vault service (HTTPS, Azure Key Vault keys API, identities, audit).
    Serve(ServeArgs),
}

/// `pgcmk vault serve` options.
#[derive(Args)]
pub struct ServeArgs {
    /// Data directory (created 0700 on first start).
    #[arg(long)]
    data_dir: PathBuf,
    /// Address of the management port; port 0 picks a free one. Vaults get their own ports on the same IP.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
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
}

/// Where the service is and who is calling.
#[derive(Args, Clone)]
pub struct Connection {
    /// Directory holding the service's service.json and ca.pem (usually its data directory).
    #[arg(long, global = true, env = "PGCMK_VAULT_SERVICE_DIR")]
    service_dir: Option<PathBuf>,
    /// The caller's credential file (default: SERVICE_DIR/admin.credential).
    #[arg(long, global = true, env = "PGCMK_CREDENTIALS")]
    credentials: Option<PathBuf>,
}

impl Connection {
    fn service(&self) -> Result<ServiceDir, String> {
        let dir = self
            .service_dir
            .clone()
            .ok_or("no vault service given: set PGCMK_VAULT_SERVICE_DIR or pass --service-dir")?;
        ServiceDir::open(&dir).map_err(|e| e.to_string())
    }

    fn credential(&self, service: &ServiceDir) -> Result<Credential, String> {
        let path = self
            .credentials
            .clone()
            .unwrap_or_else(|| service.admin_credential());
        read_credential(&path)
            .map_err(|e| format!("{e} (set PGCMK_CREDENTIALS to your credential file)"))
    }

    fn admin(&self) -> Result<AdminClient, String> {
        let service = self.service()?;
        let credential = self.credential(&service)?;
        AdminClient::new(service, credential).map_err(|e| e.to_string())
    }
}

/// Runs `pgcmk vault serve`.
pub fn vault(command: VaultCommand, format: Format) -> Result<(), String> {
    let VaultCommand::Serve(args) = command;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let passphrase = match &args.passphrase_env {
        None => None,
        Some(var) => {
            let value = std::env::var(var).map_err(|_| {
                format!("environment variable {var} is not set: put the passphrase there")
            })?;
            // Single-threaded here: no runtime yet. Keep the passphrase out of /proc/PID/environ.
            std::env::remove_var(var);
            Some(SecretBytes::new(value.into_bytes()))
        }
    };
    let mut options = pgcmk_vault::service::ServeOptions::new(args.data_dir);
    options.listen = args.listen;
    options.passphrase = passphrase;
    options.maintenance_interval = Duration::from_secs(args.maintenance_interval_secs);
    options.token_lifetime_secs = args.token_lifetime_secs;
    options.max_in_flight = args.max_in_flight as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime
        .block_on(pgcmk_vault::service::run(options, |info| {
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
        .map_err(|e| e.to_string())
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
    Create {
        /// Unique name (letters, digits, dashes).
        #[arg(long)]
        name: String,
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
    List,
    /// Show one identity (by name, object id or client id).
    Show {
        /// Name, object id or client id.
        name: String,
    },
    /// Delete an identity: its tokens stop working at once.
    Delete {
        /// Name, object id or client id.
        name: String,
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

fn list_lines(v: &Value, line: fn(&Value) -> String) -> String {
    let items = v["value"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return "(none)".into();
    }
    items.iter().map(line).collect::<Vec<_>>().join("\n")
}

/// Runs `pgcmk identity ...`.
pub fn identity(args: IdentityArgs, format: Format) -> Result<(), String> {
    let client = args.conn.admin()?;
    let call = |m: Method, path: &str, body: Option<&Value>| {
        client.call(m, path, body).map_err(|e| e.to_string())
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
            let credential: Credential = serde_json::from_value(v)
                .map_err(|e| format!("unexpected answer from the service: {e}"))?;
            let bytes = serde_json::to_vec_pretty(&credential).map_err(|e| e.to_string())?;
            pgcmk_vault::files::write_atomic(&credential_file, &bytes, 0o600).map_err(|e| {
                format!("{e}; the identity exists without a saved credential: delete it with `pgcmk identity delete {name}` and create it again")
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
            output::print(format, &v, |v| list_lines(v, identity_line));
        }
        IdentityCommand::Show { name } => {
            let v = call(
                Method::GET,
                &format!(
                    "/admin/identities/{}",
                    pgcmk_vault::client::urlencode(&name)
                ),
                None,
            )?;
            output::print(format, &v, identity_line);
        }
        IdentityCommand::Delete { name } => {
            let v = call(
                Method::DELETE,
                &format!(
                    "/admin/identities/{}",
                    pgcmk_vault::client::urlencode(&name)
                ),
                None,
            )?;
            output::print(format, &v, |v| format!("deleted {}", identity_line(v)));
        }
    }
    Ok(())
}

fn check_new_file(path: &Path) -> Result<(), String> {
    if path.exists() {
        return Err(format!(
            "{} already exists: choose a new path for the credential",
            path.display()
        ));
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(format!(
            "directory {} does not exist: create it first",
            parent.display()
        ));
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
    Create {
        /// 3-24 letters, digits and dashes, starting with a letter.
        #[arg(long)]
        name: String,
        /// Location label, e.g. westeurope.
        #[arg(long)]
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
    Show {
        /// Vault name.
        #[arg(long)]
        name: String,
    },
    /// List the vaults you can see.
    List,
    /// Change a vault's settings (purge protection is one-way).
    Update {
        /// Vault name.
        #[arg(long)]
        name: String,
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
    SetPolicy {
        /// Vault name.
        #[arg(long)]
        name: String,
        /// Identity name, object id or client id.
        #[arg(long)]
        identity: String,
        /// Azure permission names: get list create update import delete recover backup restore
        /// decrypt encrypt unwrapKey wrapKey verify sign purge rotate getrotationpolicy setrotationpolicy, or all.
        #[arg(long, num_args = 1.., required = true)]
        key_permissions: Vec<String>,
    },
    /// Remove an identity's access policy.
    DeletePolicy {
        /// Vault name.
        #[arg(long)]
        name: String,
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

fn vault_path(name: &str) -> String {
    format!("/admin/vaults/{}", pgcmk_vault::client::urlencode(name))
}

/// Runs `pgcmk keyvault ...`.
pub fn keyvault(args: KeyvaultArgs, format: Format) -> Result<(), String> {
    let client = args.conn.admin()?;
    let call = |m: Method, path: &str, body: Option<&Value>| {
        client.call(m, path, body).map_err(|e| e.to_string())
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
        KeyvaultCommand::Show { name } => call(Method::GET, &vault_path(&name), None)?,
        KeyvaultCommand::List => {
            let v = call(Method::GET, "/admin/vaults", None)?;
            output::print(format, &v, |v| list_lines(v, vault_text));
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
            &vault_path(&name),
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
                vault_path(&name),
                pgcmk_vault::client::urlencode(&identity)
            ),
            Some(&json!({ "key_permissions": key_permissions })),
        )?,
        KeyvaultCommand::DeletePolicy { name, identity } => call(
            Method::DELETE,
            &format!(
                "{}/policies/{}",
                vault_path(&name),
                pgcmk_vault::client::urlencode(&identity)
            ),
            None,
        )?,
    };
    output::print(format, &v, vault_text);
    Ok(())
}

/// `pgcmk key ...`
#[derive(Args)]
pub struct KeyArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: KeyCommand,
}

/// Which key.
#[derive(Args)]
struct KeyName {
    /// Vault name (or its base URL).
    #[arg(long)]
    vault: String,
    /// Key name.
    #[arg(long)]
    name: String,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an RSA key (or a new version of an existing one).
    Create {
        #[command(flatten)]
        key: KeyName,
        /// Key type: RSA.
        #[arg(long, default_value = "RSA", value_parser = ["RSA"])]
        kty: String,
        /// Modulus size: 2048, 3072 or 4096.
        #[arg(long, default_value_t = 3072)]
        size: u32,
        /// Permitted operations (default: all RSA operations).
        #[arg(long, num_args = 1..)]
        ops: Vec<String>,
    },
    /// Show a key (public part and attributes).
    Show {
        #[command(flatten)]
        key: KeyName,
        /// A specific version (default: current).
        #[arg(long)]
        key_version: Option<String>,
        /// Show the soft-deleted key instead.
        #[arg(long)]
        deleted: bool,
    },
    /// List keys (or one key's versions with --name, or deleted keys with --deleted).
    List {
        /// Vault name (or its base URL).
        #[arg(long)]
        vault: String,
        /// List this key's versions.
        #[arg(long)]
        name: Option<String>,
        /// List soft-deleted keys.
        #[arg(long)]
        deleted: bool,
    },
    /// Create a new version now.
    Rotate(KeyName),
    /// Disable a key version (cryptographic operations are refused).
    Disable {
        #[command(flatten)]
        key: KeyName,
        /// A specific version (default: current).
        #[arg(long)]
        key_version: Option<String>,
    },
    /// Enable a key version.
    Enable {
        #[command(flatten)]
        key: KeyName,
        /// A specific version (default: current).
        #[arg(long)]
        key_version: Option<String>,
    },
    /// Soft-delete a key (recoverable for the vault's retention days).
    Delete(KeyName),
    /// Recover a soft-deleted key.
    Recover(KeyName),
    /// Purge a soft-deleted key for good (refused under purge protection until retention passes).
    Purge(KeyName),
    /// Set the rotation policy: rotate after a time, notify before expiry, expiry of new versions.
    SetRotationPolicy {
        #[command(flatten)]
        key: KeyName,
        /// Rotate this long after a version's creation (ISO 8601, e.g. P90D).
        #[arg(long)]
        rotate_after: Option<String>,
        /// Rotate this long before the current version expires (ISO 8601, e.g. P30D).
        #[arg(long)]
        rotate_before_expiry: Option<String>,
        /// Record a notification this long before expiry (ISO 8601).
        #[arg(long)]
        notify_before_expiry: Option<String>,
        /// New versions expire this long after creation (ISO 8601, e.g. P1Y).
        #[arg(long)]
        expires_after: Option<String>,
    },
    /// Show the rotation policy.
    ShowRotationPolicy(KeyName),
}

fn akv_client(conn: &Connection, vault: &str) -> Result<AkvClient, String> {
    let service = conn.service()?;
    let credential = conn.credential(&service)?;
    let url = if vault.starts_with("https://") {
        vault.trim_end_matches('/').to_string()
    } else {
        let admin =
            AdminClient::new(service.clone(), credential.clone()).map_err(|e| e.to_string())?;
        let v = admin
            .call(Method::GET, &vault_path(vault), None)
            .map_err(|e| e.to_string())?;
        v["url"]
            .as_str()
            .ok_or("the service returned no vault URL")?
            .to_string()
    };
    let secret = SecretBytes::new(credential.client_secret.clone().into_bytes());
    let tokens = match credential.kind {
        PrincipalKind::Managed => TokenSource::managed_identity(
            &service.info.identity_endpoint,
            secret,
            &credential.client_id,
        ),
        PrincipalKind::User => {
            TokenSource::client_secret(&service.info.token_endpoint, &credential.client_id, secret)
        }
    }
    .map_err(|e| e.to_string())?;
    let mut options = ClientOptions::trusting_only(&service.info.ca_file);
    options.timeout = Duration::from_secs(60);
    AkvClient::new(&url, tokens, &options).map_err(|e| e.to_string())
}

fn key_text(v: &Value) -> String {
    let kid = v["key"]["kid"]
        .as_str()
        .or_else(|| v["kid"].as_str())
        .unwrap_or_default();
    let a = &v["attributes"];
    let mut out = format!(
        "{kid}\n  enabled={} created={} updated={}",
        a["enabled"], a["created"], a["updated"]
    );
    for field in ["nbf", "exp"] {
        if !a[field].is_null() {
            out.push_str(&format!(" {field}={}", a[field]));
        }
    }
    if let Some(ops) = v["key"]["key_ops"].as_array() {
        out.push_str(&format!(
            "\n  key_ops: {}",
            ops.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    if !v["deletedDate"].is_null() || !v["deleted_date"].is_null() {
        out.push_str(&format!(
            "\n  deleted; scheduled purge at {}",
            v["scheduledPurgeDate"]
                .as_i64()
                .or(v["scheduled_purge_date"].as_i64())
                .unwrap_or_default()
        ));
    }
    out
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, String> {
    serde_json::to_value(value).map_err(|e| e.to_string())
}

/// Runs `pgcmk key ...`.
pub fn key(args: KeyArgs, format: Format) -> Result<(), String> {
    let err = |e: pgcmk_keyprovider::KeyError| e.to_string();
    let v = match args.command {
        KeyCommand::Create { key, size, ops, .. } => {
            let mut new = NewRsaKey::new(size);
            new.key_ops = ops;
            to_json(
                &akv_client(&args.conn, &key.vault)?
                    .create_rsa_key(&key.name, &new)
                    .map_err(err)?,
            )?
        }
        KeyCommand::Show {
            key,
            key_version: version,
            deleted,
        } => {
            let c = akv_client(&args.conn, &key.vault)?;
            if deleted {
                to_json(&c.get_deleted_key(&key.name).map_err(err)?)?
            } else {
                to_json(&c.get_key(&key.name, version.as_deref()).map_err(err)?)?
            }
        }
        KeyCommand::List {
            vault,
            name,
            deleted,
        } => {
            let c = akv_client(&args.conn, &vault)?;
            let items = match (name, deleted) {
                (Some(n), _) => to_json(&c.list_key_versions(&n).map_err(err)?)?,
                (None, true) => to_json(&c.list_deleted_keys().map_err(err)?)?,
                (None, false) => to_json(&c.list_keys().map_err(err)?)?,
            };
            let v = json!({ "value": items });
            output::print(format, &v, |v| list_lines(v, key_text));
            return Ok(());
        }
        KeyCommand::Rotate(key) => to_json(
            &akv_client(&args.conn, &key.vault)?
                .rotate_key(&key.name)
                .map_err(err)?,
        )?,
        KeyCommand::Disable {
            key,
            key_version: version,
        } => set_enabled(&args.conn, &key, version.as_deref(), false)?,
        KeyCommand::Enable {
            key,
            key_version: version,
        } => set_enabled(&args.conn, &key, version.as_deref(), true)?,
        KeyCommand::Delete(key) => to_json(
            &akv_client(&args.conn, &key.vault)?
                .delete_key(&key.name)
                .map_err(err)?,
        )?,
        KeyCommand::Recover(key) => to_json(
            &akv_client(&args.conn, &key.vault)?
                .recover_deleted_key(&key.name)
                .map_err(err)?,
        )?,
        KeyCommand::Purge(key) => {
            akv_client(&args.conn, &key.vault)?
                .purge_deleted_key(&key.name)
                .map_err(err)?;
            let v = json!({ "purged": key.name, "vault": key.vault });
            output::print(format, &v, |_| {
                format!("purged key {} from {}", key.name, key.vault)
            });
            return Ok(());
        }
        KeyCommand::SetRotationPolicy {
            key,
            rotate_after,
            rotate_before_expiry,
            notify_before_expiry,
            expires_after,
        } => {
            let action =
                |after: Option<String>, before: Option<String>, kind: &str| LifetimeAction {
                    trigger: LifetimeTrigger {
                        time_after_create: after,
                        time_before_expiry: before,
                    },
                    action: LifetimeActionKind { kind: kind.into() },
                };
            let mut actions = Vec::new();
            if rotate_after.is_some() && rotate_before_expiry.is_some() {
                return Err("give --rotate-after or --rotate-before-expiry, not both".into());
            }
            if rotate_after.is_some() || rotate_before_expiry.is_some() {
                actions.push(action(rotate_after, rotate_before_expiry, "Rotate"));
            }
            if notify_before_expiry.is_some() {
                actions.push(action(None, notify_before_expiry, "Notify"));
            }
            let policy = RotationPolicy {
                id: None,
                lifetime_actions: actions,
                attributes: Some(RotationPolicyAttributes {
                    expiry_time: expires_after,
                    created: None,
                    updated: None,
                }),
            };
            let saved = akv_client(&args.conn, &key.vault)?
                .set_rotation_policy(&key.name, &policy)
                .map_err(err)?;
            let v = to_json(&saved)?;
            output::print(format, &v, |v| {
                serde_json::to_string_pretty(v).unwrap_or_default()
            });
            return Ok(());
        }
        KeyCommand::ShowRotationPolicy(key) => {
            let v = to_json(
                &akv_client(&args.conn, &key.vault)?
                    .get_rotation_policy(&key.name)
                    .map_err(err)?,
            )?;
            output::print(format, &v, |v| {
                serde_json::to_string_pretty(v).unwrap_or_default()
            });
            return Ok(());
        }
    };
    output::print(format, &v, key_text);
    Ok(())
}

fn set_enabled(
    conn: &Connection,
    key: &KeyName,
    version: Option<&str>,
    enabled: bool,
) -> Result<Value, String> {
    let update = KeyUpdate {
        enabled: Some(enabled),
        ..KeyUpdate::default()
    };
    let bundle = akv_client(conn, &key.vault)?
        .update_key(&key.name, version, &update)
        .map_err(|e| e.to_string())?;
    to_json(&bundle)
}

/// `pgcmk audit ...`
#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// List audit entries, oldest first.
    List {
        /// Only this vault.
        #[arg(long)]
        vault: Option<String>,
        /// Only this key name.
        #[arg(long)]
        key: Option<String>,
        /// Only this caller (object id or name).
        #[arg(long)]
        principal: Option<String>,
        /// Only this operation (KeyUnwrap, SetPolicy, …).
        #[arg(long)]
        operation: Option<String>,
        /// Only entries at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only entries before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Only allowed or denied requests.
        #[arg(long, value_parser = ["allowed", "denied"])]
        result: Option<String>,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Verify the hash chain: exits non-zero naming the first bad entry.
    Verify,
}

fn audit_line(s: &Value) -> String {
    let e = &s["entry"];
    let key = match (e["key"].as_str(), e["version"].as_str()) {
        (Some(k), Some(v)) => format!("{k}/{v}"),
        (Some(k), None) => k.to_string(),
        _ => "-".into(),
    };
    format!(
        "#{} {} {} {} {} caller={} ({}) client={} status={} {} {}us req={}",
        s["seq"],
        e["time"].as_str().unwrap_or_default(),
        if e["vault"].as_str().unwrap_or_default().is_empty() {
            "-"
        } else {
            e["vault"].as_str().unwrap_or_default()
        },
        e["operation"].as_str().unwrap_or_default(),
        key,
        e["caller"].as_str().unwrap_or_default(),
        e["caller_name"].as_str().unwrap_or("-"),
        e["client"].as_str().unwrap_or_default(),
        e["status"],
        e["result"].as_str().unwrap_or_default(),
        e["duration_us"],
        e["request_id"].as_str().unwrap_or_default(),
    )
}

/// Runs `pgcmk audit ...`.
pub fn audit(args: AuditArgs, format: Format) -> Result<(), String> {
    let client = args.conn.admin()?;
    match args.command {
        AuditCommand::List {
            vault,
            key,
            principal,
            operation,
            since,
            until,
            result,
            limit,
        } => {
            let mut query = vec![format!("limit={limit}")];
            for (k, v) in [
                ("vault", vault),
                ("key", key),
                ("principal", principal),
                ("operation", operation),
                ("since", since),
                ("until", until),
                ("result", result),
            ] {
                if let Some(v) = v {
                    query.push(format!("{k}={}", pgcmk_vault::client::urlencode(&v)));
                }
            }
            let v = client
                .call(
                    Method::GET,
                    &format!("/admin/audit?{}", query.join("&")),
                    None,
                )
                .map_err(|e| e.to_string())?;
            output::print(format, &v, |v| list_lines(v, audit_line));
            Ok(())
        }
        AuditCommand::Verify => {
            let v = client
                .call(Method::GET, "/admin/audit/verify", None)
                .map_err(|e| e.to_string())?;
            if v["ok"].as_bool() == Some(true) {
                output::print(format, &v, |v| {
                    format!("audit trail intact: {} entries verified", v["entries"])
                });
                Ok(())
            } else {
                if format == Format::Json {
                    output::print(format, &v, |_| String::new());
                }
                Err(format!(
                    "audit trail is broken: {}",
                    v["problem"].as_str().unwrap_or("unknown problem")
                ))
            }
        }
    }
}
