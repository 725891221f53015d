//! `pgcmk serve` (the control plane), `pgcmk server ...` (the DBA's commands, a
//! REST client of the control plane) and the hidden `pgcmk agent` (a node agent,
//! started by the control plane).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use pgcmk_agent::contract::task::{AgentTask, LogRecord, VolumeCheck, VolumeView};
use pgcmk_agent::contract::ServerDir;
use pgcmk_agent::contract::VaultEndpoints;
use pgcmk_control::api::{ApiErrorBody, LogsQuery};
use pgcmk_control::api_tls::ApiClient;
use pgcmk_control::auth::read_credential;
use pgcmk_control::identity_file::{read_identity_secret, resolve_client_id};
use pgcmk_control::model::{Encryption, SecretString, ServerDetails, ServerRecord, ServerState};
use pgcmk_control::platform::{CreateServer, Created, Platform, PlatformConfig};
use pgcmk_control::root_key::RootKeySource;
use pgcmk_crypto::SecretBytes;
use pgcmk_keyprovider::KeyReference;
use serde_json::{json, Value};

use crate::{output, volume_check, Format};

/// Where `pgcmk server` finds the control plane unless told otherwise.
const DEFAULT_ENDPOINT: &str = "https://127.0.0.1:7480";
/// The CA certificate `pgcmk server` trusts unless told otherwise: the one
/// `pgcmk serve` writes in its default state directory.
const DEFAULT_CA_CERT: &str = "/var/lib/pgcmk/control/ca.pem";
/// Where `pgcmk server` finds the DBA credential unless told otherwise: the file
/// `pgcmk serve` writes in its default state directory.
const DEFAULT_CREDENTIAL_FILE: &str = "/var/lib/pgcmk/control/dba.credential";

/// `pgcmk serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Directory for the state store and the servers' (encrypted) files.
    #[arg(long, default_value = "/var/lib/pgcmk/control")]
    state_dir: PathBuf,
    /// Address of the REST API (HTTPS, loopback only: its certificate names
    /// localhost, 127.0.0.1 and ::1).
    #[arg(long, default_value = "127.0.0.1:7480")]
    listen: std::net::SocketAddr,
    /// The vault service's data directory (its service.json gives the identity
    /// endpoint and CA, followed when the service moves; its vault list gives vault
    /// locations).
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
}

/// `pgcmk agent` (internal).
#[derive(Args)]
pub struct AgentArgs {
    /// The server's directory.
    #[arg(long)]
    server_dir: PathBuf,
    /// The name `pgcmk serve` gave this start of the agent; every report carries it
    /// (needed to serve; a short-lived task run makes no reports).
    #[arg(long)]
    instance: Option<String>,
    /// One task instead of serving (a short-lived run started by the control plane).
    #[command(subcommand)]
    task: Option<AgentTaskCommand>,
}

/// The tasks of a short-lived agent run (`pgcmk_agent::contract::task::AgentTask`).
#[derive(Subcommand)]
enum AgentTaskCommand {
    /// Re-wrap the DEK with the key's current version if it moved on.
    AdoptKeyVersion,
    /// Print PostgreSQL's and the agent's logs as JSON lines.
    Logs {
        /// Lines of each log to start with.
        #[arg(long)]
        lines: usize,
        /// Keep printing lines while the server serves.
        #[arg(long)]
        follow: bool,
    },
    /// Check every block of the volume.
    Fsck,
}

impl From<AgentTaskCommand> for AgentTask {
    fn from(command: AgentTaskCommand) -> Self {
        match command {
            AgentTaskCommand::AdoptKeyVersion => AgentTask::AdoptKeyVersion,
            AgentTaskCommand::Logs { lines, follow } => AgentTask::Logs { lines, follow },
            AgentTaskCommand::Fsck => AgentTask::Fsck,
        }
    }
}

/// Encryption choices for `server create`.
#[derive(Clone, Copy, ValueEnum)]
pub enum EncryptionChoice {
    /// A platform-managed key (the default).
    ServiceManaged,
    /// Your key in your vault, through your managed identity.
    CustomerManaged,
}

/// The DBA's commands.
#[derive(Subcommand)]
pub enum ServerCommand {
    /// Create a server (waits until it is Ready; prints the superuser password once).
    Create {
        /// Unique name: 3-63 lowercase letters, digits and '-'.
        #[arg(long)]
        name: String,
        /// Location; must equal the key vault's location for customer-managed keys.
        #[arg(long)]
        location: String,
        /// How the server's data encryption key is protected.
        #[arg(long, value_enum, default_value = "service-managed")]
        encryption: EncryptionChoice,
        /// Customer-managed: the user-assigned managed identity (name, object id or client id).
        #[arg(long)]
        identity: Option<String>,
        /// Customer-managed: the identity's credential file, assigning it to the server.
        #[arg(long)]
        identity_credential_file: Option<PathBuf>,
        /// Customer-managed: the key URL, https://VAULT/keys/NAME[/VERSION].
        #[arg(long)]
        key: Option<String>,
    },
    /// Show a server, its state and its events.
    Show {
        /// Server name.
        name: String,
    },
    /// List servers.
    List,
    /// Stop a server (PostgreSQL, mount and agent).
    Stop {
        /// Server name.
        name: String,
    },
    /// Start a stopped server.
    Start {
        /// Server name.
        name: String,
    },
    /// Delete a server and its files.
    Delete {
        /// Server name.
        name: String,
    },
    /// Print the server's connection string.
    ConnectionString {
        /// Server name.
        name: String,
    },
    /// Move a customer-managed server to another key.
    Update {
        /// Server name.
        name: String,
        /// The new key URL.
        #[arg(long)]
        key: String,
    },
    /// Check the server's key access now.
    Revalidate {
        /// Server name.
        name: String,
    },
    /// Show PostgreSQL's and the agent's logs, read through the agent (PostgreSQL's
    /// log is on the encrypted volume; a server that is not running is mounted
    /// read-only for it, if the key is accessible).
    Logs {
        /// Server name.
        name: String,
        /// Lines of each log to show.
        #[arg(long, default_value_t = LogsQuery::DEFAULT_LINES)]
        lines: usize,
        /// Keep showing lines as they are written, while the server serves.
        #[arg(long)]
        follow: bool,
    },
    /// Check every block of a stopped server's encrypted volume (cryptfs fsck through
    /// the agent); exits non-zero when a block is bad.
    Fsck {
        /// Server name.
        name: String,
    },
}

/// `pgcmk server` options shared by every subcommand.
#[derive(Args)]
pub struct ServerArgs {
    /// The control plane's URL.
    #[arg(long, env = "PGCMK_ENDPOINT", default_value = DEFAULT_ENDPOINT, global = true)]
    endpoint: String,
    /// The DBA credential file (`dba.credential`, written by `pgcmk serve` in its state
    /// directory on first start).
    #[arg(long, env = "PGCMK_CONTROL_CREDENTIALS", default_value = DEFAULT_CREDENTIAL_FILE, global = true)]
    credential_file: PathBuf,
    /// The control plane's CA certificate (`ca.pem`, written by `pgcmk serve` in its state
    /// directory); the only certificate trusted for the API.
    #[arg(long, env = "PGCMK_CONTROL_CA_CERT", default_value = DEFAULT_CA_CERT, global = true)]
    ca_cert: PathBuf,
    #[command(subcommand)]
    command: ServerCommand,
}

fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                // The agent serves a cryptfs mount.
                tracing_subscriber::EnvFilter::new(format!(
                    "info,{}",
                    pgcmk_cryptfs::LOG_DIRECTIVES
                ))
            }),
        )
        .with_writer(std::io::stderr)
        // Agents log to agent.log, which `pgcmk server logs` shows: no colour codes there.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs the control plane until SIGTERM or SIGINT.
pub fn serve(args: ServeArgs) -> Result<(), String> {
    init_logging();
    if !args.listen.ip().is_loopback() {
        return Err(format!(
            "--listen {} is not a loopback address: the REST API's certificate names only \
             localhost, 127.0.0.1 and ::1, so it listens only there",
            args.listen
        ));
    }
    let root_key = match &args.passphrase_env {
        Some(var) => {
            let passphrase = std::env::var_os(var)
                .ok_or_else(|| format!("--passphrase-env {var}: the variable {var} is not set"))?;
            // Still one thread: agents and other children must not inherit it.
            std::env::remove_var(var);
            RootKeySource::Passphrase(SecretBytes::new(passphrase.into_encoded_bytes()))
        }
        None => RootKeySource::File,
    };
    let vault = VaultEndpoints::read(&args.vault_service_dir).map_err(|e| {
        format!("{e}: start `pgcmk vault serve` first, and give its data directory as --vault-service-dir")
    })?;
    let platform_key = KeyReference::parse(&args.platform_key).map_err(|e| e.to_string())?;
    let platform_identity_secret = args
        .platform_identity_credential_file
        .as_deref()
        .map(read_identity_secret)
        .transpose()
        .map_err(|e| e.to_string())?;
    let config = PlatformConfig {
        state_dir: args.state_dir.clone(),
        vault,
        vault_service_dir: Some(args.vault_service_dir),
        platform_key,
        platform_client_id: args.platform_identity,
        platform_identity_secret,
        root_key,
        interval: Duration::from_secs(args.key_check_interval_secs.max(1)),
        grace: Duration::from_secs(args.key_check_grace_secs),
        agent_program: std::env::current_exe().map_err(|e| e.to_string())?,
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let platform = tokio::task::spawn_blocking(move || Platform::open(config))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let url = format!(
            "https://{}",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        let ca_file = platform.ca_file();
        // Tests and scripts find the API and the CA to trust here when they asked for port 0.
        pgcmk_agent::contract::server_dir::write_json_atomic(
            &args.state_dir.join("serve.json"),
            &json!({ "url": url, "ca_file": ca_file, "pid": std::process::id() }),
        )
        .map_err(|e| e.to_string())?;
        eprintln!(
            "pgcmk control plane listening on {url} (HTTPS; clients trust the CA certificate {})",
            ca_file.display()
        );
        if let Some(file) = platform.new_dba_credential() {
            eprintln!(
                "the DBA credential was written to {} (0600): hand it to the DBA \
                 (pgcmk server --credential-file) and remove it from this directory",
                file.display()
            );
        }
        pgcmk_control::api::serve(Arc::new(platform), listener, shutdown_signal()).await;
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

/// Runs a node agent until SIGTERM, or one task of it; its identity's secret comes
/// on stdin.
pub fn agent(args: AgentArgs) -> Result<(), String> {
    init_logging();
    let dir = ServerDir::new(args.server_dir);
    let stdin = std::io::stdin().lock();
    match (args.task, args.instance) {
        (None, Some(instance)) => pgcmk_agent::agent::run(&dir, &instance, stdin),
        (None, None) => {
            return Err("--instance is required to serve (pgcmk serve passes it)".into())
        }
        (Some(task), _) => {
            pgcmk_agent::task_run::run(&dir, &task.into(), stdin, std::io::stdout().lock())
        }
    }
    .map_err(|e| e.to_string())
}

/// Runs `pgcmk demo` (needs root: it mounts FUSE and starts PostgreSQL).
pub fn demo() -> Result<(), String> {
    let program = std::env::current_exe().map_err(|e| e.to_string())?;
    crate::demo::run(&program).map_err(|e| e.to_string())
}

/// Runs one `pgcmk server` command against the control plane.
pub fn server(args: ServerArgs, format: Format) -> Result<(), String> {
    // Creating a server includes initdb on the encrypted volume.
    let api = ApiClient::new(&args.endpoint, &args.ca_cert, Duration::from_secs(180))
        .map_err(|e| e.to_string())?;
    let token = read_credential(&args.credential_file).map_err(|e| e.to_string())?;
    let token = String::from_utf8(token.expose_secret().to_vec())
        .map(SecretString::new)
        .map_err(|_| {
            format!(
                "{} is not a DBA credential: use the dba.credential file `pgcmk serve` wrote",
                args.credential_file.display()
            )
        })?;
    let client = api.http();
    let url = |path: &str| api.url(&format!("/servers{path}"));
    let as_dba = |request: reqwest::blocking::RequestBuilder| {
        api.send(request.bearer_auth(token.expose_secret()))
            .map_err(|e| e.to_string())
    };
    let (request, render): (_, fn(&Value) -> String) = match args.command {
        ServerCommand::Create {
            name,
            location,
            encryption,
            identity,
            identity_credential_file,
            key,
        } => {
            let identity = match (&identity, &identity_credential_file) {
                (Some(i), Some(f)) => Some(resolve_client_id(i, f).map_err(|e| e.to_string())?),
                _ => identity,
            };
            let identity_secret = identity_credential_file
                .map(|f| read_identity_secret(&f).map_err(|e| e.to_string()))
                .transpose()?
                .map(|s| {
                    SecretString::new(String::from_utf8_lossy(s.expose_secret()).into_owned())
                });
            let body = CreateServer {
                name,
                location,
                encryption: Some(
                    match encryption {
                        EncryptionChoice::ServiceManaged => "service-managed",
                        EncryptionChoice::CustomerManaged => "customer-managed",
                    }
                    .into(),
                ),
                identity,
                identity_secret,
                key,
            };
            (client.post(url("")).json(&body), render_created)
        }
        ServerCommand::Show { name } => (client.get(url(&format!("/{name}"))), render_show),
        ServerCommand::List => (client.get(url("")), render_list),
        ServerCommand::Stop { name } => (client.post(url(&format!("/{name}/stop"))), render_server),
        ServerCommand::Start { name } => {
            (client.post(url(&format!("/{name}/start"))), render_server)
        }
        ServerCommand::Delete { name } => (client.delete(url(&format!("/{name}"))), |v| {
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
        ServerCommand::Update { name, key } => (
            client
                .put(url(&format!("/{name}/key")))
                .json(&json!({ "key": key })),
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
            return print_logs(success(as_dba(request)?)?, follow, format);
        }
        ServerCommand::Fsck { name } => {
            let response = success(as_dba(client.post(url(&format!("/{name}/fsck"))))?)?;
            let check: VolumeCheck = response.json().map_err(|e| e.to_string())?;
            return volume_check::print(&format!("the volume of server '{name}'"), &check, format);
        }
    };
    let value: Value = success(as_dba(request)?)?.json().unwrap_or(Value::Null);
    output::print(format, &value, render);
    Ok(())
}

/// The response if it is a success, else the error the control plane described.
fn success(response: reqwest::blocking::Response) -> Result<reqwest::blocking::Response, String> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    Err(response.json::<ApiErrorBody>().map_or_else(
        |_| format!("control plane answered {status}"),
        |body| body.error.message,
    ))
}

/// Prints the log records of `response` as they arrive: `SOURCE | LINE`, or with
/// `--output json` one JSON document (one per line while following).
fn print_logs(
    response: reqwest::blocking::Response,
    follow: bool,
    format: Format,
) -> Result<(), String> {
    use std::io::{BufRead, Write};
    let mut records = Vec::new();
    let mut view = None;
    for line in std::io::BufReader::new(response).lines() {
        let line = line.map_err(|e| format!("reading the logs: {e}"))?;
        if line.trim().is_empty() {
            continue; // keeps an idle stream alive
        }
        let record: LogRecord = serde_json::from_str(&line)
            .map_err(|e| format!("unexpected log record ({e}): {line}"))?;
        match (format, follow) {
            (Format::Json, false) => records.push(record),
            (Format::Json, true) => println!("{line}"),
            (Format::Human, _) => {
                if let LogRecord::Volume(v) = &record {
                    view = Some(v.clone());
                }
                println!("{}", render_log_record(&record));
            }
        }
        let _ = std::io::stdout().flush();
    }
    if format == Format::Json && !follow {
        output::print(
            format,
            &serde_json::to_value(&records).map_err(|e| e.to_string())?,
            |_| String::new(),
        );
    }
    if follow && format == Format::Human && view != Some(VolumeView::Live) {
        println!("(the server is not serving: its logs do not grow; not following)");
    }
    Ok(())
}

fn render_log_record(record: &LogRecord) -> String {
    match record {
        LogRecord::Line { source, text } => format!("{:<8} | {text}", source.name()),
        LogRecord::Volume(VolumeView::Live) => {
            "-- PostgreSQL's log, from the serving agent's mount".into()
        }
        LogRecord::Volume(VolumeView::ReadOnly) => {
            "-- PostgreSQL's log, from a read-only mount of the volume (the server is not serving)"
                .into()
        }
        LogRecord::Volume(VolumeView::Unavailable { reason }) => format!("-- {reason}"),
    }
}

/// Renders the API's JSON answer `v` as a `T`.
fn typed<T: serde::de::DeserializeOwned>(v: &Value, render: impl Fn(&T) -> String) -> String {
    match T::deserialize(v) {
        Ok(t) => render(&t),
        Err(e) => format!("unexpected answer from the control plane ({e}): {v}"),
    }
}

fn state_line(state: &ServerState) -> String {
    match state.reason() {
        Some(reason) => format!("{} ({reason})", state.name()),
        None => state.name().to_string(),
    }
}

fn render_server(v: &Value) -> String {
    typed(v, describe_server)
}

fn describe_server(s: &ServerRecord) -> String {
    let encryption = match &s.encryption {
        Encryption::CustomerManaged { key, identity } => format!(
            "customer-managed: key {key} via identity {identity} ({})",
            if key.version.is_some() {
                "pinned to that version"
            } else {
                "follows its rotation"
            }
        ),
        Encryption::ServiceManaged => "service-managed".to_string(),
    };
    format!(
        "server {}\n  state:      {}\n  location:   {}\n  port:       {}\n  encryption: {encryption}\n  needs key version: {} (it wraps the DEK: keep it enabled)\n  created:    {}",
        s.name,
        state_line(&s.state),
        s.location,
        s.port,
        s.wrapped_dek.kek,
        s.created_at,
    )
}

fn render_created(v: &Value) -> String {
    typed(v, |c: &Created| {
        format!(
            "{}\n  superuser:  postgres, password {} (shown once; the platform does not keep it)",
            describe_server(&c.server),
            c.password.expose_secret()
        )
    })
}

fn render_show(v: &Value) -> String {
    typed(v, |d: &ServerDetails| {
        let mut text = describe_server(&d.server);
        text.push_str("\n  events:");
        for e in &d.events {
            text.push_str(&format!(
                "\n    {} {:<13} {} — {}",
                e.at, e.who, e.what, e.why
            ));
        }
        text
    })
}

fn render_list(v: &Value) -> String {
    typed(v, |servers: &Vec<ServerRecord>| {
        if servers.is_empty() {
            return "no servers".to_string();
        }
        let rows: Vec<String> = servers
            .iter()
            .map(|s| {
                let kek = &s.wrapped_dek.kek;
                format!(
                    "{:<24} {:<14} {:<6} {:<46} {}",
                    s.name,
                    s.location,
                    s.port,
                    format!("{}/{}", kek.name, kek.version),
                    state_line(&s.state)
                )
            })
            .collect();
        format!(
            "{:<24} {:<14} {:<6} {:<46} STATE\n{}",
            "NAME",
            "LOCATION",
            "PORT",
            "NEEDS KEY VERSION",
            rows.join("\n")
        )
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `pgcmk agent` alone, as the control plane starts it.
    #[derive(Parser)]
    struct Agent {
        #[command(flatten)]
        args: AgentArgs,
    }

    /// What the control plane passes for a task is what this command line reads back.
    #[test]
    fn agent_task_arguments_round_trip() {
        for task in [
            AgentTask::AdoptKeyVersion,
            AgentTask::Fsck,
            AgentTask::Logs {
                lines: 7,
                follow: false,
            },
            AgentTask::Logs {
                lines: 0,
                follow: true,
            },
        ] {
            let mut line = vec!["agent".to_string(), "--server-dir".into(), "/srv/x".into()];
            line.extend(task.args());
            let parsed = Agent::try_parse_from(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert_eq!(parsed.args.server_dir, PathBuf::from("/srv/x"));
            let back: AgentTask = parsed.args.task.expect("a task").into();
            assert_eq!(back, task);
        }
        let serve = Agent::try_parse_from(["agent", "--server-dir", "/srv/x"]).unwrap();
        assert!(serve.args.task.is_none());
    }
}
