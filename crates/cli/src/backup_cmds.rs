//! `pgcmk backup ...`: a server's backups, through the control plane (which has
//! the server's node agent run pgBackRest).

use std::time::Duration;

use clap::{Args, Subcommand};
use pgcmk_agent::contract::backup::{
    BackupCatalog, BackupKind, BackupSummary, BackupVerification, WalArchive,
};
use pgcmk_control::platform::{BackupKeys, CreateBackup, VerifyBackups};
use serde::de::DeserializeOwned;

use crate::backup_progress;
use crate::control_dir::ControlConnection;
use crate::dba_client::DbaClient;
use crate::error::{CliError, Failure};
use crate::{output, Format};

/// How long a backup (or a verification) may take before the client gives up.
const LONG_OPERATION: Duration = Duration::from_secs(6 * 3600);

/// `pgcmk backup` subcommands.
#[derive(Subcommand)]
pub enum BackupCommand {
    /// List a server's complete backups and its archived WAL.
    #[command(after_help = "Example:\n  pgcmk backup list orders -o json")]
    List {
        /// Server name.
        server: String,
    },
    /// Show one backup of a server.
    #[command(after_help = "Example:\n  pgcmk backup show orders 20261207-093000F")]
    Show {
        /// Server name.
        server: String,
        /// The backup's label (from `pgcmk backup list`).
        label: String,
    },
    /// Take a backup of a server now, and wait for its end (with a progress line
    /// on stderr every few seconds).
    #[command(
        after_help = "Examples:\n  pgcmk backup create orders --type diff\n  pgcmk backup create orders --repository 2"
    )]
    Create {
        /// Server name.
        server: String,
        /// full, diff (changes since the last full) or incr (since the last backup).
        #[arg(long = "type", default_value = "full", value_parser = str::parse::<BackupKind>)]
        kind: BackupKind,
        /// 1 (the server's own repository) or 2 (its geo-redundant copy).
        #[arg(long, default_value_t = 1)]
        repository: u8,
    },
    /// The backups of a server running now (a scheduled one too), with their
    /// progress.
    #[command(
        after_help = "Examples:\n  pgcmk backup progress orders\n  pgcmk backup progress orders -o json"
    )]
    Progress {
        /// Server name.
        server: String,
    },
    /// The key versions a server's backups need: do not disable or purge them while
    /// the backups are to stay restorable.
    #[command(after_help = "Example:\n  pgcmk backup keys orders")]
    Keys {
        /// Server name.
        server: String,
    },
    /// Decrypt and check every backup file and archived WAL segment of a server;
    /// exits non-zero (8) when one is damaged.
    #[command(
        after_help = "Examples:\n  pgcmk backup verify orders\n  pgcmk backup verify orders --repository 2"
    )]
    Verify {
        /// Server name.
        server: String,
        /// 1 (the server's own repository) or 2 (its geo-redundant copy).
        #[arg(long, default_value_t = 1)]
        repository: u8,
    },
}

/// `pgcmk backup` and its options.
#[derive(Args)]
pub struct BackupArgs {
    #[command(flatten)]
    control: ControlConnection,
    #[command(subcommand)]
    command: BackupCommand,
}

/// Runs one `pgcmk backup` command against the control plane.
pub fn backup(args: BackupArgs, format: Format) -> Result<(), CliError> {
    let api = DbaClient::open(&args.control, LONG_OPERATION)?;
    let http = api.http();
    match args.command {
        BackupCommand::List { server } => {
            let catalog: BackupCatalog = answer(
                &api,
                http.get(api.servers_url(&format!("/{server}/backups"))),
            )?;
            print(format, &catalog, || render_catalog(&server, &catalog))
        }
        BackupCommand::Show { server, label } => {
            let backup: BackupSummary = answer(
                &api,
                http.get(api.servers_url(&format!("/{server}/backups/{label}"))),
            )?;
            print(format, &backup, || render_backup(&backup))
        }
        BackupCommand::Create {
            server,
            kind,
            repository,
        } => {
            if format == Format::Human {
                eprintln!(
                    "taking a {} backup of server '{server}' in repository {repository}...",
                    kind.as_str()
                );
            }
            let request = http
                .post(api.servers_url(&format!("/{server}/backups")))
                .json(&CreateBackup {
                    kind: Some(kind),
                    repository: Some(repository),
                });
            let backup: BackupSummary = match format {
                Format::Human => {
                    backup_progress::waiting_with_progress(&api, &server, || answer(&api, request))?
                }
                Format::Json => answer(&api, request)?,
            };
            print(format, &backup, || render_backup(&backup))
        }
        BackupCommand::Progress { server } => {
            let running = backup_progress::running(&api, &server)?;
            print(format, &running, || {
                backup_progress::render_running(&server, &running)
            })
        }
        BackupCommand::Keys { server } => {
            let keys: BackupKeys = answer(
                &api,
                http.get(api.servers_url(&format!("/{server}/backups/keys"))),
            )?;
            print(format, &keys, || render_keys(&keys))
        }
        BackupCommand::Verify { server, repository } => {
            if format == Format::Human {
                eprintln!(
                    "verifying the backups of server '{server}' in repository {repository}..."
                );
            }
            let request = http
                .post(api.servers_url(&format!("/{server}/backups/verify")))
                .query(&VerifyBackups {
                    repository: Some(repository),
                });
            let verification: BackupVerification = answer(&api, request)?;
            print(format, &verification, || render_verification(&verification))?;
            if verification.valid {
                Ok(())
            } else {
                Err(CliError::new(
                    Failure::Damaged,
                    format!(
                        "{} damaged file(s) in the backups of server '{server}': a restore \
                         that needs them fails",
                        verification.problems.len()
                    ),
                ))
            }
        }
    }
}

/// Sends `request` and reads its typed answer.
pub(crate) fn answer<T: DeserializeOwned>(
    api: &DbaClient,
    request: reqwest::blocking::RequestBuilder,
) -> Result<T, CliError> {
    api.call(request)?
        .json()
        .map_err(|e| CliError::failed(format!("unexpected answer from the control plane: {e}")))
}

fn print<T: serde::Serialize>(
    format: Format,
    value: &T,
    human: impl FnOnce() -> String,
) -> Result<(), CliError> {
    output::print(format, &serde_json::to_value(value)?, |_| human());
    Ok(())
}

fn render_backup(b: &BackupSummary) -> String {
    format!(
        "{} ({}): {} to {} ({} s), {} bytes of database, {} in the repository, LSN {} to {}, \
         key {}",
        b.label,
        b.kind.as_str(),
        b.started_at,
        b.finished_at,
        b.duration_secs,
        b.database_bytes,
        b.repository_bytes,
        b.start_lsn,
        b.stop_lsn,
        b.key_version
    )
}

fn render_catalog(server: &str, catalog: &BackupCatalog) -> String {
    let mut text = format!(
        "{} backup(s) of server '{server}', kept {} days, under the repository key wrapped by {}",
        catalog.backups.len(),
        catalog.retention_days,
        catalog.key_version
    );
    render_contents(&mut text, &catalog.backups, catalog.wal.as_ref());
    if let Some(geo) = &catalog.geo {
        text.push_str(&format!(
            "\ngeo-redundant copy in {}: {} backup(s), under the repository key wrapped by {}",
            geo.location,
            geo.backups.len(),
            geo.key_version
        ));
        if let Some(problem) = &geo.problem {
            text.push_str(&format!("\n  WARNING: {problem}"));
        }
        render_contents(&mut text, &geo.backups, geo.wal.as_ref());
    }
    text
}

/// One repository's backups and archived WAL, appended to `text`.
fn render_contents(text: &mut String, backups: &[BackupSummary], wal: Option<&WalArchive>) {
    for b in backups {
        text.push_str(&format!("\n  {}", render_backup(b)));
    }
    match wal {
        Some(wal) => text.push_str(&format!(
            "\n  archived WAL: {} to {}",
            wal.oldest_segment, wal.newest_segment
        )),
        None => text.push_str("\n  no WAL archived yet"),
    }
}

fn render_verification(v: &BackupVerification) -> String {
    let mut text = if v.valid {
        "every backup file and archived WAL segment verified".to_string()
    } else {
        format!("{} damaged file(s):", v.problems.len())
    };
    for p in &v.problems {
        text.push_str(&format!("\n  {p}"));
    }
    for line in &v.summary {
        text.push_str(&format!("\n{line}"));
    }
    text
}

fn render_keys(keys: &BackupKeys) -> String {
    let mut text = format!(
        "the backups of server '{}' need these key versions (do not disable or purge them):",
        keys.server
    );
    for v in &keys.key_versions {
        text.push_str(&format!("\n  {v}"));
    }
    if let Some(v) = &keys.geo_key_version {
        text.push_str(&format!("\n  {v} (the geo-redundant copy's)"));
    }
    text
}
