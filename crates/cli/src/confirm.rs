//! Confirmation of destructive commands: on a terminal the user types the
//! resource's name; elsewhere `--yes` is required.

use std::io::{BufRead, IsTerminal, Write};

use crate::error::CliError;

/// Asks, on a terminal, that the server's name be typed before `pgcmk server delete
/// NAME` destroys it; `yes` (from `--yes`) skips the question. Without a terminal
/// and without `yes` the command is refused: a script must say `--yes`.
pub fn server_deletion(name: &str, yes: bool) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(CliError::usage(format!(
            "`pgcmk server delete {name}` destroys the server and its data, and there is no \
             terminal to confirm on: add --yes to delete it"
        )));
    }
    eprint!(
        "This deletes server '{name}', its database and its encrypted volume for good.\n\
         Type the server's name to delete it: "
    );
    let _ = std::io::stderr().flush();
    let mut typed = String::new();
    stdin.lock().read_line(&mut typed)?;
    if typed.trim() == name {
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "server '{name}' was not deleted: the name typed does not match (add --yes to \
             delete without the question)"
        )))
    }
}
