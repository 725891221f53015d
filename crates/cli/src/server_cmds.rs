//! `pgcmk server ...`: the DBA's commands, a REST client of the control plane.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use pgcmk_agent::contract::task::VolumeCheck;
use pgcmk_control::api::{ListenAddresses, LogsQuery};
use pgcmk_control::model::ServerRecord;
use pgcmk_control::platform::CreateServer;
use serde_json::{json, Value};

use crate::backup_settings_args::BackupScheduleArgs;
use crate::control_dir::ControlConnection;
use crate::dba_client::DbaClient;
use crate::error::CliError;
use crate::geo_backup_args::GeoBackupArgs;
use crate::name_arg::NameArg;
use crate::password_out::PasswordSink;
use crate::replica_cmds::{self, ReplicaArgs};
use crate::server_encryption::EncryptionArgs;
use crate::server_failover::FailoverArgs;
use crate::server_geo_update::GeoUpdateArgs;
use crate::server_ha_update::{self, HaMode};
use crate::server_render::{render_created, render_list, render_server, render_show, typed};
use crate::server_restore::RestoreArgs;
use crate::{confirm, output, server_logs, volume_check, Format};

/// The DBA's commands.
#[derive(Subcommand)]
pub enum ServerCommand {
    /// Create a server (waits until it is Ready; prints the superuser password once).
    #[command(
        after_help = "Examples:\n  pgcmk server create orders -l westeurope\n  pgcmk server create orders -l westeurope --listen-addresses 127.0.0.1,192.0.2.10\n  pgcmk server create orders -l westeurope --host h1 --listen-addresses 10.0.0.7\n  pgcmk server create orders -l westeurope --high-availability --host h1 --host h2\n  pgcmk server create orders -l westeurope --identity orders-mi --identity-credential-file orders-mi.credential -k https://VAULT/keys/orders-key\n  pgcmk server create orders -l westeurope --identity orders-mi --identity-credential-file orders-mi.credential -k https://VAULT/keys/orders-key --geo-backup-key https://GEO-VAULT/keys/orders-geo --geo-backup-identity orders-geo-mi --geo-backup-identity-credential-file orders-geo-mi.credential\n  pgcmk server create orders -l westeurope --backup-retention-days 14 --full-backup-every-hours 72 --diff-backup-every-hours 12"
    )]
    Create {
        /// Unique name: 3-63 lowercase letters, digits and '-'.
        #[command(flatten)]
        name: NameArg,
        /// Location; must equal the key vault's location for customer-managed keys.
        #[arg(short, long)]
        location: String,
        #[command(flatten)]
        encryption: EncryptionArgs,
        /// Days of the server's backups kept: 1 to 35 (default 7).
        #[arg(long)]
        backup_retention_days: Option<u32>,
        #[command(flatten)]
        backup_schedule: BackupScheduleArgs,
        #[command(flatten)]
        geo_backup: GeoBackupArgs,
        /// Run two nodes, a primary and a synchronous standby, each with its own
        /// encrypted volume and DEK, under Patroni (docs/high-availability.md).
        #[arg(long)]
        high_availability: bool,
        /// IP addresses of this host that PostgreSQL listens on, comma-separated (TLS
        /// only; default 127.0.0.1).
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        listen_addresses: Vec<String>,
        /// Run it on this enrolled host (`pgcmk host list`; it must be Online)
        /// instead of the control plane's machine (docs/hosts.md); with
        /// --high-availability, once per node, each a different host.
        #[arg(long)]
        host: Vec<String>,
    },
    /// Create a server from another server's backups, at a point in time or the latest
    /// archived one (waits until it is Ready; prints the superuser password once).
    #[command(
        after_help = "Examples:\n  pgcmk server restore orders-before --source orders --point-in-time 2026-12-07T09:30:00Z\n  pgcmk server restore orders-copy --source orders --point-in-time latest -k https://VAULT/keys/other-key --identity orders-mi --identity-credential-file orders-mi.credential\n  pgcmk server restore orders-copy --source orders --point-in-time latest --repository 2   # from the geo-redundant copy"
    )]
    Restore(RestoreArgs),
    /// Show a server, its state and its events.
    #[command(
        after_help = "Examples:\n  pgcmk server show orders\n  pgcmk server show orders -o json"
    )]
    Show {
        #[command(flatten)]
        name: NameArg,
    },
    /// List servers.
    #[command(after_help = "Example:\n  pgcmk server list -o json")]
    List,
    /// Stop a server (PostgreSQL, mount and agent).
    #[command(after_help = "Example:\n  pgcmk server stop orders")]
    Stop {
        #[command(flatten)]
        name: NameArg,
    },
    /// Start a stopped server.
    #[command(after_help = "Example:\n  pgcmk server start orders")]
    Start {
        #[command(flatten)]
        name: NameArg,
    },
    /// Delete a server and its files (on a terminal, asks for its name first).
    #[command(
        after_help = "Examples:\n  pgcmk server delete orders\n  pgcmk server delete orders --yes   # in a script"
    )]
    Delete {
        #[command(flatten)]
        name: NameArg,
        /// Delete without asking (required without a terminal).
        #[arg(short, long)]
        yes: bool,
    },
    /// Print the server's connection string.
    #[command(after_help = "Example:\n  psql \"$(pgcmk server connection-string orders)\"")]
    ConnectionString {
        #[command(flatten)]
        name: NameArg,
    },
    /// Move a customer-managed server to another key (a highly available one node
    /// by node, online), make it listen on other
    /// addresses (its agent restarts with a certificate for them), add or remove
    /// the geo-redundant copy of its backups (its agent restarts; adding waits for
    /// the copy's first full backup), or enable or disable its high availability
    /// (online: a standby node with its own DEK is added, or removed keeping the
    /// primary's data), or change its backups' retention or schedule (in place:
    /// nothing restarts). One kind of change at a time.
    #[command(
        after_help = "Examples:\n  pgcmk server update orders -k https://VAULT/keys/other-key\n  pgcmk server update orders --listen-addresses 127.0.0.1,192.0.2.10\n  pgcmk server update orders --geo-backup-key https://GEO-VAULT/keys/orders-geo --geo-backup-identity orders-geo-mi --geo-backup-identity-credential-file orders-geo-mi.credential\n  pgcmk server update orders --no-geo-backup --yes\n  pgcmk server update orders --high-availability enabled\n  pgcmk server update orders --high-availability disabled\n  pgcmk server update orders --backup-retention-days 14\n  pgcmk server update orders --full-backup-every-hours 72 --diff-backup-every-hours 12",
        group(clap::ArgGroup::new("change").required(true).multiple(true).args(["key", "listen_addresses", "geo_backup_key", "no_geo_backup", "high_availability", "backup_retention_days", "full_backup_every_hours", "diff_backup_every_hours"]))
    )]
    Update {
        #[command(flatten)]
        name: NameArg,
        /// The new key URL.
        #[arg(short, long)]
        key: Option<String>,
        /// The IP addresses of this host to listen on, comma-separated (TLS only).
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        listen_addresses: Vec<String>,
        #[command(flatten)]
        geo: GeoUpdateArgs,
        /// Enable or disable high availability.
        #[arg(long, value_enum)]
        high_availability: Option<HaMode>,
        /// Days of the server's backups kept from now on: 1 to 35. Lowered, older
        /// backups expire after the next backup, never one a point of the new window
        /// needs.
        #[arg(long)]
        backup_retention_days: Option<u32>,
        #[command(flatten)]
        backup_schedule: BackupScheduleArgs,
    },
    /// Check the server's key access now.
    #[command(after_help = "Example:\n  pgcmk server revalidate orders")]
    Revalidate {
        #[command(flatten)]
        name: NameArg,
    },
    /// Show PostgreSQL's and the agent's logs, read through the agent (PostgreSQL's
    /// log is on the encrypted volume; a server that is not running is mounted
    /// read-only for it, if the key is accessible).
    #[command(
        after_help = "Examples:\n  pgcmk server logs orders --lines 200\n  pgcmk server logs orders -f"
    )]
    Logs {
        #[command(flatten)]
        name: NameArg,
        /// Lines of each log to show.
        #[arg(long, default_value_t = LogsQuery::DEFAULT_LINES)]
        lines: usize,
        /// Keep showing lines as they are written, while the server serves.
        #[arg(short, long)]
        follow: bool,
    },
    /// Set a new random password for the server's `postgres` superuser (the server
    /// must be Ready); shown once, or written to a new file only you can read.
    #[command(
        after_help = "Example:\n  pgcmk server reset-password orders --password-file orders.password"
    )]
    ResetPassword {
        #[command(flatten)]
        name: NameArg,
        /// Write the password to this new file (mode 0600) instead of showing it.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Read replicas: create, list, promote (delete one with `server delete`).
    Replica(ReplicaArgs),
    /// Make a highly available server's standby its primary (Patroni failover, or a
    /// switchover with --planned); prints the new primary node.
    #[command(
        after_help = "Examples:\n  pgcmk server failover orders --planned\n  pgcmk server failover orders   # promote the standby at once"
    )]
    Failover(FailoverArgs),
    /// Check every block of a stopped server's encrypted volume (cryptfs fsck through
    /// the agent); exits non-zero when a block is bad.
    #[command(after_help = "Example:\n  pgcmk server stop orders && pgcmk server fsck orders")]
    Fsck {
        #[command(flatten)]
        name: NameArg,
    },
}

/// `pgcmk server` options shared by every subcommand.
#[derive(Args)]
pub struct ServerArgs {
    #[command(flatten)]
    control: ControlConnection,
    #[command(subcommand)]
    command: ServerCommand,
}

/// Runs one `pgcmk server` command against the control plane.
pub fn server(args: ServerArgs, format: Format) -> Result<(), CliError> {
    if let ServerCommand::Delete { name, yes } = &args.command {
        confirm::server_deletion(name.as_str(), *yes)?;
    }
    if let ServerCommand::Update {
        name,
        key,
        listen_addresses,
        geo,
        high_availability,
        backup_retention_days,
        backup_schedule,
    } = &args.command
    {
        let kinds = [
            key.is_some(),
            !listen_addresses.is_empty(),
            geo.is_given(),
            high_availability.is_some(),
            backup_retention_days.is_some() || backup_schedule.is_given(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return Err(CliError::usage(
                "give one kind of change at a time: a key, listen addresses, the geo-redundant \
                 copy, high availability, or backup settings",
            ));
        }
        geo.confirm_removal(name.as_str())?;
    }
    // Creating a server includes initdb on the encrypted volume; a restore, copying
    // the backup and replaying the archived WAL; adding a geo copy, its first full
    // backup (the control plane waits up to 20 minutes for either).
    let timeout = match &args.command {
        ServerCommand::Restore(_) => Duration::from_secs(21 * 60),
        ServerCommand::Update { geo, .. } if geo.is_given() => Duration::from_secs(21 * 60),
        ServerCommand::Replica(replica) if replica.is_create() => Duration::from_secs(21 * 60),
        // A highly available server's key moves node by node, each waited for.
        ServerCommand::Update {
            high_availability: Some(_),
            ..
        }
        | ServerCommand::Update { key: Some(_), .. } => server_ha_update::TIMEOUT,
        _ => Duration::from_secs(180),
    };
    let api = DbaClient::open(&args.control, timeout)?;
    let client = api.http();
    let url = |path: &str| api.servers_url(path);
    let as_dba = |request: reqwest::blocking::RequestBuilder| api.call(request);
    let (request, render): (_, fn(&Value) -> String) = match args.command {
        ServerCommand::Create {
            name,
            location,
            encryption,
            backup_retention_days,
            backup_schedule,
            geo_backup,
            high_availability,
            listen_addresses,
            host,
        } => {
            let body = CreateServer {
                name: name.into_name(),
                location,
                protection: encryption.into_key_choice()?,
                backup_settings: backup_schedule.with_retention(backup_retention_days),
                geo_backup: geo_backup.into_choice()?,
                high_availability,
                listen_addresses,
                host: None,
                hosts: Vec::new(),
            }
            .placed_on(host);
            (client.post(url("")).json(&body), render_created)
        }
        ServerCommand::Restore(args) => {
            let (source, body) = args.into_request()?;
            (
                client.post(url(&format!("/{source}/restore"))).json(&body),
                render_created,
            )
        }
        ServerCommand::Failover(args) => {
            let (name, body) = args.into_request();
            (
                client.post(url(&format!("/{name}/failover"))).json(&body),
                |v| {
                    format!(
                        "primary is now {}",
                        v["primary"].as_str().unwrap_or_default()
                    )
                },
            )
        }
        ServerCommand::Show { name } => (client.get(url(&format!("/{name}"))), render_show),
        ServerCommand::List => (client.get(url("")), render_list),
        ServerCommand::Stop { name } => (client.post(url(&format!("/{name}/stop"))), render_server),
        ServerCommand::Start { name } => {
            (client.post(url(&format!("/{name}/start"))), render_server)
        }
        ServerCommand::Delete { name, .. } => (client.delete(url(&format!("/{name}"))), |v| {
            format!("deleted {}", v["deleted"].as_str().unwrap_or_default())
        }),
        ServerCommand::ConnectionString { name } => (
            client.get(url(&format!("/{name}/connection-string"))),
            |v| {
                v["connection_string"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            },
        ),
        ServerCommand::Update { name, geo, .. } if geo.is_given() => (
            client
                .put(url(&format!("/{name}/geo-backup")))
                .json(&geo.into_change()?),
            render_server,
        ),
        ServerCommand::Update {
            name,
            key: Some(key),
            ..
        } => (
            client
                .put(url(&format!("/{name}/key")))
                .json(&json!({ "key": key })),
            render_server,
        ),
        ServerCommand::Update {
            name,
            high_availability: Some(mode),
            ..
        } => (
            client
                .put(url(&format!("/{name}/high-availability")))
                .json(&mode.into_request()),
            render_server,
        ),
        ServerCommand::Update {
            name,
            backup_retention_days,
            backup_schedule,
            ..
        } if backup_retention_days.is_some() || backup_schedule.is_given() => (
            client
                .put(url(&format!("/{name}/backup-settings")))
                .json(&backup_schedule.with_retention(backup_retention_days)),
            render_server,
        ),
        ServerCommand::Update {
            name,
            key: None,
            listen_addresses,
            ..
        } => (
            client
                .put(url(&format!("/{name}/listen-addresses")))
                .json(&ListenAddresses { listen_addresses }),
            render_server,
        ),
        ServerCommand::Revalidate { name } => {
            (client.post(url(&format!("/{name}/revalidate"))), |v| {
                typed(v, |s: &ServerRecord| {
                    format!("key check requested for {}", s.name)
                })
            })
        }
        ServerCommand::Logs {
            name,
            lines,
            follow,
        } => {
            let query = LogsQuery { lines, follow };
            let request = client.get(url(&format!("/{name}/logs"))).query(&query);
            return server_logs::print_logs(as_dba(request)?, follow, format);
        }
        ServerCommand::ResetPassword {
            name,
            password_file,
        } => {
            let sink = PasswordSink::open(password_file)?;
            let answer =
                as_dba(client.post(url(&format!("/{name}/reset-password")))).and_then(|response| {
                    response.json::<Value>().map_err(|e| {
                        CliError::failed(format!("unexpected answer from the control plane: {e}"))
                    })
                });
            return match answer {
                Ok(value) => sink.deliver(&value, format),
                Err(e) => {
                    sink.abandon();
                    Err(e)
                }
            };
        }
        ServerCommand::Replica(replica) => return replica_cmds::replica(replica, &api, format),
        ServerCommand::Fsck { name } => {
            let response = as_dba(client.post(url(&format!("/{name}/fsck"))))?;
            let check: VolumeCheck = response.json().map_err(|e| {
                CliError::failed(format!("unexpected answer from the control plane: {e}"))
            })?;
            return volume_check::print(&format!("the volume of server '{name}'"), &check, format);
        }
    };
    let value: Value = as_dba(request)?.json().unwrap_or(Value::Null);
    output::print(format, &value, render);
    Ok(())
}
