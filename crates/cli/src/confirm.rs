//! Confirmation of destructive commands: on a terminal the user types the
//! resource's name; elsewhere `--yes` is required.

use std::io::{BufRead, IsTerminal, Write};

use crate::error::CliError;

/// A command that destroys something for good.
pub struct Destruction<'a> {
    /// What is destroyed: "server", "key", "identity".
    pub kind: &'a str,
    /// Its name, which the user types to confirm.
    pub name: &'a str,
    /// The command as the user would type it.
    pub command: String,
    /// The verb for the refusal: "delete", "purge".
    pub verb: &'a str,
    /// What is lost, said on the terminal before the question.
    pub loss: String,
}

/// Asks, on a terminal, that the resource's name be typed before the command goes
/// on; `yes` (from `--yes`) skips the question. Without a terminal and without `yes`
/// the command is refused before anything is asked of a service: a script must say
/// `--yes`.
pub fn confirm(d: &Destruction<'_>, yes: bool) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(CliError::usage(format!(
            "`{}` {}, and there is no terminal to confirm on: add --yes to {} it",
            d.command, d.loss, d.verb
        )));
    }
    eprint!(
        "This {}.\nType the {}'s name to {} it: ",
        d.loss, d.kind, d.verb
    );
    let _ = std::io::stderr().flush();
    let mut typed = String::new();
    stdin.lock().read_line(&mut typed)?;
    if typed.trim() == d.name {
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "{} '{}' is kept: the name typed does not match (add --yes to {} without the \
             question)",
            d.kind, d.name, d.verb
        )))
    }
}

/// `pgcmk server delete NAME`.
pub fn server_deletion(name: &str, yes: bool) -> Result<(), CliError> {
    confirm(
        &Destruction {
            kind: "server",
            name,
            command: format!("pgcmk server delete {name}"),
            verb: "delete",
            loss: format!(
                "destroys server '{name}', its database and its encrypted volume for good"
            ),
        },
        yes,
    )
}
