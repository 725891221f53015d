//! `pgcmk host ...`: hosts on which node agents may run (docs/hosts.md). `add`,
//! `list` and `remove` are the DBA's, REST clients of the control plane like the
//! `server` commands; `serve` is the daemon on the host itself, with the host's own
//! credential.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use pgcmk_control::host_daemon::{self, HostDaemonConfig};
use pgcmk_control::hosts::EnrollHost;
use serde_json::Value;

use crate::confirm::{confirm, Destruction};
use crate::control_dir::ControlConnection;
use crate::dba_client::DbaClient;
use crate::error::CliError;
use crate::logging::{self, LogFormat};
use crate::name_arg::NameArg;
use crate::{output, Format};

/// How long a DBA's host command may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The host commands.
#[derive(Subcommand)]
pub enum HostCommand {
    /// Enroll a host: prints its credential once (the control plane keeps only a
    /// verifier); give it to `pgcmk host serve` on that host.
    #[command(
        after_help = "Example:\n  pgcmk host add db-host-1 --address 10.0.0.7 -o json > db-host-1.json"
    )]
    Add {
        #[command(flatten)]
        name: NameArg,
        /// The IP address the host's requests come from; others are refused.
        #[arg(long)]
        address: IpAddr,
        #[command(flatten)]
        control: ControlConnection,
    },
    /// List the enrolled hosts and whether their daemons speak now.
    #[command(after_help = "Example:\n  pgcmk host list -o json")]
    List {
        #[command(flatten)]
        control: ControlConnection,
    },
    /// Remove a host: its credential is refused from then on.
    #[command(after_help = "Example:\n  pgcmk host remove db-host-1 --yes")]
    Remove {
        #[command(flatten)]
        name: NameArg,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        control: ControlConnection,
    },
    /// Run the host daemon: register with the control plane over HTTPS with this
    /// host's credential and send heartbeats (runs until stopped).
    #[command(
        after_help = "Example:\n  pgcmk host serve db-host-1 --control-plane https://10.0.0.1:7480 --ca-cert ca.pem --credential-file db-host-1.credential --state-dir /var/lib/pgcmk/host"
    )]
    Serve(ServeArgs),
}

/// `pgcmk host serve` arguments.
#[derive(Args)]
pub struct ServeArgs {
    /// The host's name, as enrolled.
    #[command(flatten)]
    name: NameArg,
    /// The control plane's URL.
    #[arg(long)]
    control_plane: String,
    /// The control plane's CA certificate, the only one trusted for it.
    #[arg(long)]
    ca_cert: PathBuf,
    /// The file holding this host's credential (64 hex characters, 0600).
    #[arg(long)]
    credential_file: PathBuf,
    /// Where this host keeps its servers' directories.
    #[arg(long)]
    state_dir: PathBuf,
    /// The enrolled address to send requests from, when the system would choose another.
    #[arg(long)]
    source_address: Option<IpAddr>,
    /// Log format: text, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// `pgcmk host` arguments.
#[derive(Args)]
pub struct HostArgs {
    #[command(subcommand)]
    command: HostCommand,
}

/// Runs one `pgcmk host` command.
pub fn host(args: HostArgs, format: Format) -> Result<(), CliError> {
    let (control, request, render): (_, _, fn(&Value) -> String) = match args.command {
        HostCommand::Serve(serve) => return serve_host(serve),
        HostCommand::Add {
            name,
            address,
            control,
        } => {
            let body = EnrollHost {
                name: name.into_name(),
                address,
            };
            (control, Request::Enroll(body), |v| {
                format!(
                    "host {} enrolled; its credential (shown once, give it to `pgcmk host \
                     serve --credential-file` on that host):\n{}",
                    v["host"]["name"].as_str().unwrap_or_default(),
                    v["credential"].as_str().unwrap_or_default()
                )
            })
        }
        HostCommand::List { control } => (control, Request::List, |v| {
            let lines: Vec<String> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| format!("{}\t{}\t{}", h["name"], h["address"], h["liveness"]))
                .collect();
            if lines.is_empty() {
                "no hosts".to_string()
            } else {
                lines.join("\n").replace('"', "")
            }
        }),
        HostCommand::Remove { name, yes, control } => {
            confirm(
                &Destruction {
                    kind: "host",
                    name: name.as_str(),
                    command: format!("pgcmk host remove {name}"),
                    verb: "remove",
                    loss: format!("refuses host '{name}' from now on"),
                },
                yes,
            )?;
            (control, Request::Remove(name.into_name()), |v| {
                format!("host {} removed", v["removed"].as_str().unwrap_or_default())
            })
        }
    };
    let api = DbaClient::open(&control, TIMEOUT)?;
    let client = api.http();
    let request = match request {
        Request::Enroll(body) => client.post(api.url("/hosts")).json(&body),
        Request::List => client.get(api.url("/hosts")),
        Request::Remove(name) => client.delete(api.url(&format!("/hosts/{name}"))),
    };
    let value: Value = api.call(request)?.json().unwrap_or(Value::Null);
    output::print(format, &value, render);
    Ok(())
}

/// Which request a DBA's host command makes.
enum Request {
    Enroll(EnrollHost),
    List,
    Remove(String),
}

fn serve_host(args: ServeArgs) -> Result<(), CliError> {
    logging::init(args.log_format, None);
    let config = HostDaemonConfig {
        control_plane: args.control_plane,
        ca_file: args.ca_cert,
        credential_file: args.credential_file,
        name: args.name.into_name(),
        source_address: args.source_address,
        state_dir: args.state_dir,
        agent_program: std::env::current_exe()?,
    };
    Ok(host_daemon::run(&config)?)
}
