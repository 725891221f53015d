//! `pgcmk`: the one binary. Thin: parses arguments, calls a library, prints.
//!
//! Each command family lives in its own module; those modules hold no logic that
//! a test cannot reach through a library crate.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

mod agent_cmd;
mod api_listen;
mod backup_cmds;
mod backup_progress;
mod backup_settings_args;
mod backup_store_args;
mod confirm;
mod control_dir;
mod dba_client;
mod demo;
mod docs_cmds;
mod error;
mod etcd_tls_args;
mod fs_cmds;
mod geo_backup_args;
mod host_cmds;
mod logging;
mod name_arg;
mod observability_args;
mod output;
mod password_out;
mod replica_cmds;
mod serve_cmd;
mod server_cmds;
mod server_encryption;
mod server_failover;
mod server_geo_update;
mod server_ha_update;
mod server_logs;
mod server_render;
mod server_restore;
mod setting;
mod vault_cmds;
mod version;
mod volume_check;

use error::CliError;

/// PostgreSQL servers encrypted with customer-managed keys.
#[derive(Parser)]
#[command(name = "pgcmk", version, long_version = version::LONG_VERSION, about, propagate_version = true)]
struct Cli {
    /// Output format: human-readable text, or JSON for scripts.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Human)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Plain text for people.
    Human,
    /// One JSON document on stdout.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Print version and build information.
    #[command(after_help = "Example:\n  pgcmk version -o json")]
    Version,
    /// Encrypted filesystem (cryptfs): init, mount, unmount, fsck, keygen.
    #[command(subcommand)]
    Fs(fs_cmds::FsCommand),
    /// Run the control plane: REST API, state store, node agents.
    #[command(
        after_help = "Example:\n  pgcmk serve --state-dir /var/lib/pgcmk/control --vault-service-dir /var/lib/pgcmk/vault --platform-key https://127.0.0.1:PORT/keys/platform-key --platform-identity platform-mi --platform-identity-credential-file platform-mi.credential"
    )]
    Serve(Box<serve_cmd::ServeArgs>),
    /// Database servers: create, show, list, stop, start, delete, connection-string, update, revalidate.
    Server(server_cmds::ServerArgs),
    /// A server's backups: list, show, create, verify, keys.
    Backup(backup_cmds::BackupArgs),
    /// Hosts for node agents: add, list, remove; and the daemon on a host (serve).
    Host(host_cmds::HostArgs),
    /// Walk through the whole story on this machine: vault, control plane, the four
    /// steps, ciphertext on disk, revoke, restore, rotate; cleans up after itself.
    #[command(
        after_help = "Examples:\n  pgcmk demo\n  pgcmk demo --pause    # follow each step in the web consoles"
    )]
    Demo(DemoArgs),
    /// A server's node agent (started by the control plane).
    #[command(hide = true)]
    Agent(agent_cmd::AgentArgs),
    /// The key vault service.
    #[command(subcommand)]
    Vault(vault_cmds::VaultCommand),
    /// Identities (users, managed identities) of the key vault service.
    Identity(vault_cmds::IdentityArgs),
    /// Key vaults: create, show, list, update, access policies.
    Keyvault(vault_cmds::KeyvaultArgs),
    /// Keys in a vault: create, show, list, rotate, disable, enable, delete, recover, purge, rotation policy.
    Key(vault_cmds::KeyArgs),
    /// The key vault audit trail: list and verify.
    Audit(vault_cmds::AuditArgs),
    /// Print a shell completion script (e.g. `pgcmk completions bash > /etc/bash_completion.d/pgcmk`).
    #[command(after_help = "Example:\n  pgcmk completions bash > /etc/bash_completion.d/pgcmk")]
    Completions(docs_cmds::CompletionsArgs),
    /// Write the man pages (one per command) into a directory.
    #[command(after_help = "Example:\n  pgcmk man-pages /usr/local/share/man/man1")]
    ManPages(docs_cmds::ManPagesArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<(), CliError> = match cli.command {
        Command::Version => {
            version::print(cli.output);
            Ok(())
        }
        Command::Fs(command) => fs_cmds::run(command, cli.output),
        Command::Serve(args) => serve_cmd::serve(*args),
        Command::Server(args) => server_cmds::server(args, cli.output),
        Command::Backup(args) => backup_cmds::backup(args, cli.output),
        Command::Host(args) => host_cmds::host(args, cli.output),
        Command::Agent(args) => agent_cmd::agent(args),
        Command::Demo(args) => demo(args.pause),
        Command::Vault(command) => vault_cmds::vault(command, cli.output),
        Command::Identity(args) => vault_cmds::identity(args, cli.output),
        Command::Keyvault(args) => vault_cmds::keyvault(args, cli.output),
        Command::Key(args) => vault_cmds::key(args, cli.output),
        Command::Audit(args) => vault_cmds::audit(args, cli.output),
        Command::Completions(args) => docs_cmds::completions(args, Cli::command()),
        Command::ManPages(args) => docs_cmds::man_pages(args, Cli::command()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match cli.output {
                Format::Json => eprintln!("{}", e.to_json()),
                Format::Human => eprintln!("error: {e}"),
            }
            e.exit_code()
        }
    }
}

/// Runs `pgcmk demo` (needs root: it mounts FUSE and starts PostgreSQL).
/// Options of `pgcmk demo`.
#[derive(clap::Args)]
struct DemoArgs {
    /// Wait for Enter before each step of the story (on a terminal), so that it can be
    /// followed in the web consoles whose addresses the demo prints.
    #[arg(long)]
    pause: bool,
}

fn demo(pause: bool) -> Result<(), CliError> {
    let program = std::env::current_exe()?;
    demo::run(&program, pause).map_err(|e| CliError::failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command a user runs shows an example under `--help`.
    #[test]
    fn every_command_has_an_example() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let subcommands: Vec<_> = command
                .get_subcommands()
                .filter(|s| !s.is_hide_set() && s.get_name() != "help")
                .collect();
            if subcommands.is_empty() {
                let example = command.get_after_help().map(|h| h.to_string());
                if !example.is_some_and(|h| h.starts_with("Example") && h.contains("pgcmk ")) {
                    missing.push(path.to_string());
                }
            }
            for sub in subcommands {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "pgcmk", &mut missing);
        assert!(missing.is_empty(), "no example: {}", missing.join(", "));
    }

    /// Clap checks every subcommand's definition (duplicate names, clashing flags such as a
    /// field named `version` beside `--version`) only when it is parsed; this checks them all.
    #[test]
    fn every_command_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
