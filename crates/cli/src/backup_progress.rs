//! Progress of a server's running backups: `pgcmk backup progress SERVER`, and the
//! lines `pgcmk backup create` prints on stderr while it waits for its backup.

use std::sync::mpsc;
use std::time::Duration;

use pgcmk_agent::contract::backup::RunningBackup;

use crate::backup_cmds::answer;
use crate::dba_client::DbaClient;
use crate::error::CliError;

/// Time between two progress lines of a command that waits for a backup.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// The backups of `server` running now.
pub(crate) fn running(api: &DbaClient, server: &str) -> Result<Vec<RunningBackup>, CliError> {
    let request = api
        .http()
        .get(api.servers_url(&format!("/{server}/backups/progress")));
    answer(api, request)
}

/// Runs `wait` (a request that ends with the backup) and, until it ends, prints a
/// line on stderr every [`PROGRESS_EVERY`] about the backups of `server` running
/// then: its own, or one it waits for. A progress request that fails prints
/// nothing: the answer of `wait` is what counts.
pub(crate) fn waiting_with_progress<T: Send>(
    api: &DbaClient,
    server: &str,
    wait: impl FnOnce() -> T + Send,
) -> T {
    let (done, ended) = mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            // The receiver lives until this scope ends.
            let _ = done.send(wait());
        });
        loop {
            match ended.recv_timeout(PROGRESS_EVERY) {
                Ok(answer) => return answer,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(backups) = running(api, server) {
                        for b in &backups {
                            eprintln!("{}", progress_line(server, b));
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("the request thread ended without an answer")
                }
            }
        }
    })
}

/// `full backup of 'billing' (repository 1): 34 % (1.2 of 3.5 GiB), 41 s`.
pub(crate) fn progress_line(server: &str, b: &RunningBackup) -> String {
    let done = match (b.percent_complete, b.bytes_done, b.bytes_total) {
        // Rounded down: 99.98 % is not done.
        (Some(p), Some(done), Some(total)) => {
            format!("{:.0} % ({} of {} GiB)", p.floor(), gib(done), gib(total))
        }
        (Some(p), _, _) => format!("{:.0} %", p.floor()),
        (None, _, _) => "starting".into(),
    };
    format!(
        "{} backup of '{server}' (repository {}): {done}, {} s",
        b.kind.as_str(),
        b.repository,
        b.elapsed_secs
    )
}

/// `bytes` in GiB, one decimal.
fn gib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / f64::from(1u32 << 30))
}

/// `pgcmk backup progress` in text.
pub(crate) fn render_running(server: &str, backups: &[RunningBackup]) -> String {
    if backups.is_empty() {
        return format!("no backup of server '{server}' is running");
    }
    backups
        .iter()
        .map(|b| format!("{}, started at {}", progress_line(server, b), b.started_at))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use pgcmk_agent::contract::backup::BackupKind;

    use super::*;

    fn running_backup(percent: Option<f64>, bytes: Option<(u64, u64)>) -> RunningBackup {
        RunningBackup {
            kind: BackupKind::Full,
            repository: 1,
            started_at: "2026-12-07T23:14:02Z".into(),
            elapsed_secs: 41,
            percent_complete: percent,
            bytes_done: bytes.map(|b| b.0),
            bytes_total: bytes.map(|b| b.1),
        }
    }

    #[test]
    fn a_progress_line_says_what_pgbackrest_told_and_no_more() {
        assert_eq!(
            progress_line("billing", &running_backup(Some(34.12), None)),
            "full backup of 'billing' (repository 1): 34 %, 41 s"
        );
        assert_eq!(
            progress_line("billing", &running_backup(Some(99.98), None)),
            "full backup of 'billing' (repository 1): 99 %, 41 s",
            "not done until it is"
        );
        assert_eq!(
            progress_line(
                "billing",
                &running_backup(Some(34.3), Some((1_288_490_189, 3_758_096_384)))
            ),
            "full backup of 'billing' (repository 1): 34 % (1.2 of 3.5 GiB), 41 s"
        );
        assert_eq!(
            progress_line("billing", &running_backup(None, None)),
            "full backup of 'billing' (repository 1): starting, 41 s"
        );
        assert_eq!(
            render_running("billing", &[]),
            "no backup of server 'billing' is running"
        );
    }
}
