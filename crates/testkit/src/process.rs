//! Child processes a test starts: output to a log file, stopped by their own handle
//! or pid (never by name), so a test only ever stops what it started.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::wait::poll;

/// How often a child is checked for having exited.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// Starts `command` with no stdin and its stdout and stderr appended to `log`.
pub fn spawn_logged(command: &mut Command, log: &Path) -> Child {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    let err = file.try_clone().expect("duplicate the log handle");
    command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("start {:?}: {e}", command.get_program()))
}

/// Sends SIGTERM to `pid` (a process the test started); true when it was delivered.
/// Never panics, so guards' `Drop` can use it.
pub fn terminate(pid: u32) -> bool {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits up to `limit` for `child` to exit; its status, or `None` while it still runs.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let mut status = None;
    poll(limit, EXIT_POLL, || {
        status = child.try_wait().expect("check the child");
        status.is_some()
    });
    status
}

/// SIGKILLs `child` and reaps it; for guards' `Drop`, so it never panics.
pub fn kill_quietly(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
