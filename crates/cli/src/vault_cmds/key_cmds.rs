//! `pgcmk key ...`: keys over the Azure Key Vault data plane.

use std::time::Duration;

use clap::{Args, Subcommand};
use pgcmk_crypto::SecretBytes;
use pgcmk_keyprovider::akv::AkvKeyVersionId;
use pgcmk_keyprovider::akv::{
    AkvClient, ClientOptions, KeyUpdate, LifetimeAction, LifetimeActionKind, LifetimeTrigger,
    NewRsaKey, RotationPolicy, RotationPolicyAttributes, TokenSource,
};
use pgcmk_vault::client::AdminClient;
use pgcmk_vault::identity::PrincipalKind;
use reqwest::Method;
use serde_json::{json, Value};

use super::{vault_path, Connection};
use crate::confirm;
use crate::error::CliError;
use crate::name_arg::{NameArg, OptionalNameArg};
use crate::{output, Format};

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
    #[command(flatten)]
    name: NameArg,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an RSA key (or a new version of an existing one).
    #[command(
        after_help = "Example:\n  pgcmk key create orders-key --vault orders-kv --size 3072"
    )]
    Create {
        #[command(flatten)]
        key: KeyName,
        /// Key type: RSA, or RSA-HSM (generated and kept in the vault's HSM token).
        #[arg(long, default_value = "RSA", value_parser = ["RSA", "RSA-HSM"])]
        kty: String,
        /// Modulus size: 2048, 3072 or 4096.
        #[arg(long, default_value_t = 3072)]
        size: u32,
        /// Permitted operations (default: all RSA operations).
        #[arg(long, num_args = 1..)]
        ops: Vec<String>,
    },
    /// Show a key (public part and attributes).
    #[command(after_help = "Example:\n  pgcmk key show orders-key --vault orders-kv")]
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
    #[command(
        after_help = "Examples:\n  pgcmk key list --vault orders-kv\n  pgcmk key list orders-key --vault orders-kv   # its versions"
    )]
    List {
        /// Vault name (or its base URL).
        #[arg(long)]
        vault: String,
        /// List this key's versions.
        #[command(flatten)]
        name: OptionalNameArg,
        /// List soft-deleted keys.
        #[arg(long)]
        deleted: bool,
    },
    /// Create a new version now.
    #[command(after_help = "Example:\n  pgcmk key rotate orders-key --vault orders-kv")]
    Rotate(KeyName),
    /// Disable a key version (cryptographic operations are refused).
    #[command(
        after_help = "Example:\n  pgcmk key disable orders-key --vault orders-kv --key-version VERSION"
    )]
    Disable {
        #[command(flatten)]
        key: KeyName,
        /// A specific version (default: current).
        #[arg(long)]
        key_version: Option<String>,
    },
    /// Enable a key version.
    #[command(after_help = "Example:\n  pgcmk key enable orders-key --vault orders-kv")]
    Enable {
        #[command(flatten)]
        key: KeyName,
        /// A specific version (default: current).
        #[arg(long)]
        key_version: Option<String>,
    },
    /// Soft-delete a key (recoverable for the vault's retention days).
    #[command(after_help = "Example:\n  pgcmk key delete orders-key --vault orders-kv")]
    Delete(KeyName),
    /// Recover a soft-deleted key.
    #[command(after_help = "Example:\n  pgcmk key recover orders-key --vault orders-kv")]
    Recover(KeyName),
    /// Purge a soft-deleted key for good (refused under purge protection until retention passes).
    #[command(after_help = "Example:\n  pgcmk key purge orders-key --vault orders-kv --yes")]
    Purge {
        #[command(flatten)]
        key: KeyName,
        /// Purge without asking (required without a terminal).
        #[arg(short, long)]
        yes: bool,
    },
    /// Set the rotation policy: rotate after a time, notify before expiry, expiry of new versions.
    #[command(
        after_help = "Example:\n  pgcmk key set-rotation-policy orders-key --vault orders-kv --rotate-after P90D --expires-after P1Y"
    )]
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
    #[command(
        after_help = "Example:\n  pgcmk key show-rotation-policy orders-key --vault orders-kv"
    )]
    ShowRotationPolicy(KeyName),
}

fn akv_client(conn: &Connection, vault: &str) -> Result<AkvClient, CliError> {
    let service = conn.service()?;
    let credential = conn.credential(&service)?;
    let url = if vault.starts_with("https://") {
        vault.trim_end_matches('/').to_string()
    } else {
        let admin =
            AdminClient::new(service.clone(), credential.clone()).map_err(CliError::from)?;
        let v = admin
            .call(Method::GET, &vault_path(vault), None)
            .map_err(CliError::from)?;
        v["url"]
            .as_str()
            .ok_or_else(|| CliError::failed("the service returned no vault URL"))?
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
    .map_err(CliError::from)?;
    let mut options = ClientOptions::trusting_only(&service.info.ca_file);
    options.timeout = Duration::from_secs(60);
    AkvClient::new(&url, tokens, &options).map_err(CliError::from)
}

fn key_text(v: &Value) -> String {
    let kid = v["key"]["kid"]
        .as_str()
        .or_else(|| v["kid"].as_str())
        .unwrap_or_default();
    let a = &v["attributes"];
    let mut out = format!(
        "{kid}\n  enabled={} created={} updated={}",
        a["enabled"],
        a["created"].as_str().unwrap_or("-"),
        a["updated"].as_str().unwrap_or("-")
    );
    if let Some(url) = v["key_url"].as_str() {
        out.push_str(&format!(
            "\n  key URL: {url} (for `pgcmk server create --key`: follows rotation)"
        ));
    }
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
    if !v["deletedDate"].is_null() {
        out.push_str(&format!(
            "\n  deleted; scheduled purge at {}",
            v["scheduledPurgeDate"].as_str().unwrap_or("-")
        ));
    }
    out
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, CliError> {
    serde_json::to_value(value).map_err(CliError::from)
}

/// Runs `pgcmk key ...`.
pub fn key(args: KeyArgs, format: Format) -> Result<(), CliError> {
    let err = CliError::from;
    let v = match args.command {
        KeyCommand::Create {
            key,
            kty,
            size,
            ops,
        } => {
            let mut new = NewRsaKey::new(size);
            new.key_ops = ops;
            new.hsm = kty == "RSA-HSM";
            let created = akv_client(&args.conn, &key.vault)?
                .create_rsa_key(key.name.as_str(), &new)
                .map_err(err)?;
            let mut v = to_json(&created)?;
            if let Ok(kid) = AkvKeyVersionId::parse(&created.key.kid) {
                v["key_url"] = Value::String(kid.versionless().to_string());
            }
            v
        }
        KeyCommand::Show {
            key,
            key_version: version,
            deleted,
        } => {
            let c = akv_client(&args.conn, &key.vault)?;
            if deleted {
                to_json(&c.get_deleted_key(key.name.as_str()).map_err(err)?)?
            } else {
                to_json(
                    &c.get_key(key.name.as_str(), version.as_deref())
                        .map_err(err)?,
                )?
            }
        }
        KeyCommand::List {
            vault,
            name,
            deleted,
        } => {
            let c = akv_client(&args.conn, &vault)?;
            let items = match (name.into_name(), deleted) {
                (Some(n), _) => to_json(&c.list_key_versions(&n).map_err(err)?)?,
                (None, true) => to_json(&c.list_deleted_keys().map_err(err)?)?,
                (None, false) => to_json(&c.list_keys().map_err(err)?)?,
            };
            let v = json!({ "value": items });
            output::print_list(format, &v, key_text);
            return Ok(());
        }
        KeyCommand::Rotate(key) => to_json(
            &akv_client(&args.conn, &key.vault)?
                .rotate_key(key.name.as_str())
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
                .delete_key(key.name.as_str())
                .map_err(err)?,
        )?,
        KeyCommand::Recover(key) => to_json(
            &akv_client(&args.conn, &key.vault)?
                .recover_deleted_key(key.name.as_str())
                .map_err(err)?,
        )?,
        KeyCommand::Purge { key, yes } => {
            confirm::confirm(
                &confirm::Destruction {
                    kind: "key",
                    name: key.name.as_str(),
                    command: format!("pgcmk key purge {} --vault {}", key.name, key.vault),
                    verb: "purge",
                    loss: format!(
                        "purges key '{}' and every version of it for good: whatever it \
                         wraps (the DEK of a server, its backups) can never be decrypted again",
                        key.name
                    ),
                },
                yes,
            )?;
            akv_client(&args.conn, &key.vault)?
                .purge_deleted_key(key.name.as_str())
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
                return Err(CliError::usage(
                    "give --rotate-after or --rotate-before-expiry, not both",
                ));
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
                .set_rotation_policy(key.name.as_str(), &policy)
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
                    .get_rotation_policy(key.name.as_str())
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
) -> Result<Value, CliError> {
    let update = KeyUpdate {
        enabled: Some(enabled),
        ..KeyUpdate::default()
    };
    let bundle = akv_client(conn, &key.vault)?
        .update_key(key.name.as_str(), version, &update)
        .map_err(CliError::from)?;
    to_json(&bundle)
}
