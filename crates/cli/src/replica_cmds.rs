//! `pgcmk server replica ...`: read replicas (docs/replicas.md), a REST client of
//! the control plane like the other `server` commands.

use clap::{Args, Subcommand};
use pgcmk_control::model::ServerRecord;
use pgcmk_control::platform::CreateReplica;
use serde_json::Value;

use crate::dba_client::DbaClient;
use crate::error::CliError;
use crate::name_arg::NameArg;
use crate::server_encryption::EncryptionArgs;
use crate::server_render::{render_list, render_server};
use crate::{output, Format};

/// The read replica commands.
#[derive(Subcommand)]
pub enum ReplicaCommand {
    /// Create a read replica of a server: its own encrypted volume and key, a hot
    /// standby streaming from the source over TLS (waits until it is Ready).
    #[command(
        after_help = "Examples:\n  pgcmk server replica create --source orders --name orders-ro\n  pgcmk server replica create --source orders --name orders-ne -l northeurope --identity orders-ne-mi --identity-credential-file orders-ne-mi.credential -k https://NE-VAULT/keys/orders-ne-key"
    )]
    Create {
        /// The server to replicate (a primary that is Ready).
        #[arg(long)]
        source: String,
        /// The replica's name: 3-63 lowercase letters, digits and '-'.
        #[command(flatten)]
        name: NameArg,
        /// Where the replica runs (default: the source's location); a customer key
        /// must be in a vault of that location.
        #[arg(short, long)]
        location: Option<String>,
        #[command(flatten)]
        encryption: EncryptionArgs,
        /// IP addresses of this host it listens on, comma-separated (TLS only;
        /// default 127.0.0.1).
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        listen_addresses: Vec<String>,
    },
    /// List a server's read replicas.
    #[command(after_help = "Example:\n  pgcmk server replica list --source orders -o json")]
    List {
        /// The server whose replicas are listed.
        #[arg(long)]
        source: String,
    },
    /// Make a read replica an independent server that accepts writes (its agent
    /// restarts; it no longer follows its source).
    #[command(after_help = "Example:\n  pgcmk server replica promote orders-ro")]
    Promote {
        #[command(flatten)]
        name: NameArg,
    },
}

/// `pgcmk server replica` arguments.
#[derive(Args)]
pub struct ReplicaArgs {
    #[command(subcommand)]
    command: ReplicaCommand,
}

impl ReplicaArgs {
    /// True for a create, which clones the source and may take long.
    pub fn is_create(&self) -> bool {
        matches!(self.command, ReplicaCommand::Create { .. })
    }
}

/// Runs one `pgcmk server replica` command through `api`.
pub fn replica(args: ReplicaArgs, api: &DbaClient, format: Format) -> Result<(), CliError> {
    let client = api.http();
    let (request, render): (_, fn(&Value) -> String) = match args.command {
        ReplicaCommand::Create {
            source,
            name,
            location,
            encryption,
            listen_addresses,
        } => {
            let body = CreateReplica {
                name: name.into_name(),
                location,
                protection: encryption.into_key_choice()?,
                listen_addresses,
            };
            let url = api.servers_url(&format!("/{source}/replicas"));
            (client.post(url).json(&body), render_server)
        }
        ReplicaCommand::List { source } => (
            client.get(api.servers_url(&format!("/{source}/replicas"))),
            |v| match serde_json::from_value::<Vec<ServerRecord>>(v.clone()) {
                Ok(replicas) if replicas.is_empty() => "no read replicas".to_string(),
                _ => render_list(v),
            },
        ),
        ReplicaCommand::Promote { name } => (
            client.post(api.servers_url(&format!("/{name}/promote"))),
            render_server,
        ),
    };
    let value: Value = api.call(request)?.json().unwrap_or(Value::Null);
    output::print(format, &value, render);
    Ok(())
}
