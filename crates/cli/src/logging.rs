//! Logging of the long-running commands (`pgcmk serve`, `pgcmk agent`, `pgcmk vault
//! serve`) to stderr.

/// Logs at `info` (or `RUST_LOG`) to stderr, in colour only on a terminal.
pub fn init() {
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
        // A log line that cannot be written (its disk is full) is lost, not reported
        // with `eprintln!`, which panics when stderr fails: the handler or the audit
        // writer logging it would die with it (found by a busy vault on a full disk).
        .log_internal_errors(false)
        // Services log to files (agent.log, which `pgcmk server logs` shows; the vault's
        // and control plane's logs when run as services): no colour codes there.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
