//! The hidden `pgcmk agent`: a node agent, started by the control plane.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use pgcmk_agent::contract::backup::{BackupKind, Repository};
use pgcmk_agent::contract::task::AgentTask;
use pgcmk_agent::contract::ServerDir;

use crate::error::CliError;
use crate::logging;

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
    #[command(flatten)]
    observability: crate::observability_args::ObservabilityArgs,
    /// One task instead of serving (a short-lived run started by the control plane).
    #[command(subcommand)]
    task: Option<AgentTaskCommand>,
}

/// The tasks of a short-lived agent run (`pgcmk_agent::contract::task::AgentTask`).
#[derive(Subcommand)]
pub enum AgentTaskCommand {
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
    /// Set the superuser's password of the serving server (from the handshake).
    ResetPassword,
    /// Create or update the serving server's replication role (password from the handshake).
    ReplicationRole,
    /// List the serving server's backups.
    BackupList,
    /// Take a backup of the serving server.
    BackupCreate {
        /// full, diff or incr.
        #[arg(long = "type", value_parser = str::parse::<BackupKind>)]
        kind: BackupKind,
        /// 1 (the server's own) or 2 (its geo-redundant copy).
        #[arg(long, default_value = "1", value_parser = str::parse::<Repository>)]
        repository: Repository,
    },
    /// Verify the serving server's backups and archived WAL.
    BackupVerify {
        /// 1 (the server's own) or 2 (its geo-redundant copy).
        #[arg(long, default_value = "1", value_parser = str::parse::<Repository>)]
        repository: Repository,
    },
    /// The serving server's running backups and their progress.
    BackupProgress,
    /// Prove the vault unwraps the repository key.
    BackupKeyCheck,
    /// Prove the geo vault unwraps the geo-redundant copy's repository key.
    GeoBackupKeyCheck,
}

impl From<AgentTaskCommand> for AgentTask {
    fn from(command: AgentTaskCommand) -> Self {
        match command {
            AgentTaskCommand::AdoptKeyVersion => AgentTask::AdoptKeyVersion,
            AgentTaskCommand::Logs { lines, follow } => AgentTask::Logs { lines, follow },
            AgentTaskCommand::Fsck => AgentTask::Fsck,
            AgentTaskCommand::ResetPassword => AgentTask::ResetPassword,
            AgentTaskCommand::ReplicationRole => AgentTask::ReplicationRole,
            AgentTaskCommand::BackupList => AgentTask::BackupList,
            AgentTaskCommand::BackupCreate { kind, repository } => {
                AgentTask::BackupCreate { kind, repository }
            }
            AgentTaskCommand::BackupVerify { repository } => AgentTask::BackupVerify { repository },
            AgentTaskCommand::BackupProgress => AgentTask::BackupProgress,
            AgentTaskCommand::BackupKeyCheck => AgentTask::BackupKeyCheck,
            AgentTaskCommand::GeoBackupKeyCheck => AgentTask::GeoBackupKeyCheck,
        }
    }
}

/// Runs a node agent until SIGTERM, or one task of it; its identity's secret comes
/// on stdin.
pub fn agent(args: AgentArgs) -> Result<(), CliError> {
    // Every JSON line names the server (its directory is named after its id).
    let server = args.server_dir.file_name().map(|n| n.to_string_lossy());
    logging::init(args.observability.log_format, server.as_deref());
    let dir = ServerDir::new(args.server_dir);
    let stdin = std::io::stdin().lock();
    match (args.task, args.instance) {
        (None, Some(instance)) => {
            pgcmk_agent::agent::run(&dir, &instance, args.observability.metrics_listen, stdin)
        }
        (None, None) => {
            return Err(CliError::usage(
                "--instance is required to serve (pgcmk serve passes it)",
            ))
        }
        (Some(task), _) => {
            pgcmk_agent::task_run::run(&dir, &task.into(), stdin, std::io::stdout().lock())
        }
    }
    .map_err(CliError::from)
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
            AgentTask::ResetPassword,
            AgentTask::ReplicationRole,
            AgentTask::BackupList,
            AgentTask::BackupVerify {
                repository: Repository::Geo,
            },
            AgentTask::BackupKeyCheck,
            AgentTask::BackupProgress,
            AgentTask::GeoBackupKeyCheck,
            AgentTask::BackupCreate {
                kind: BackupKind::Incr,
                repository: Repository::Primary,
            },
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
