//! Shell completions and man pages, generated from the command line's own definition so
//! they cannot drift from it: `pgcmk completions SHELL` prints a completion script;
//! `pgcmk man-pages DIR` writes one page per command (`pgcmk.1`, `pgcmk-server.1`,
//! `pgcmk-server-create.1`, ...), as `scripts/release` does for the release build.

use std::path::{Path, PathBuf};

use clap::{Args, Command};
use clap_complete::Shell;

use crate::error::CliError;

/// `pgcmk completions` options.
#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

/// `pgcmk man-pages` options.
#[derive(Args)]
pub struct ManPagesArgs {
    /// Directory to write the pages into (created if missing).
    dir: PathBuf,
}

/// Prints the completion script for `args.shell` on stdout.
pub fn completions(args: CompletionsArgs, mut command: Command) -> Result<(), CliError> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "pgcmk", &mut script);
    std::io::Write::write_all(&mut std::io::stdout(), &script)
        .map_err(|e| CliError::failed(format!("cannot print the completion script: {e}")))
}

/// Writes a man page for `command` and each of its subcommands into `args.dir`.
pub fn man_pages(args: ManPagesArgs, command: Command) -> Result<(), CliError> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", args.dir.display())))?;
    let mut command = command;
    command.build();
    let written = write_pages(&args.dir, &command, "pgcmk")?;
    println!("wrote {written} man pages to {}", args.dir.display());
    Ok(())
}

fn write_pages(dir: &Path, command: &Command, name: &str) -> Result<usize, CliError> {
    let page = command.clone().name(name.to_string());
    let mut bytes = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut bytes)
        .map_err(|e| CliError::failed(format!("rendering the man page of {name}: {e}")))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, bytes)
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", path.display())))?;
    let mut written = 1;
    // clap's generated `help` subcommands repeat `--help`: no pages of their own.
    for sub in command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        written += write_pages(dir, sub, &format!("{name}-{}", sub.get_name()))?;
    }
    Ok(written)
}
