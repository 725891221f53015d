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
    signal(pid, "-TERM")
}

/// Sends SIGKILL to `pid` (a process the test started): a crash with no cleanup.
pub fn kill9(pid: u32) -> bool {
    signal(pid, "-KILL")
}

/// Sends SIGSTOP to `pid` (a process the test started): it hangs, holding whatever
/// it held, until [`resume`].
pub fn pause(pid: u32) -> bool {
    signal(pid, "-STOP")
}

/// Sends SIGCONT to `pid` (a process the test paused); never panics, so guards'
/// `Drop` can use it.
pub fn resume(pid: u32) -> bool {
    signal(pid, "-CONT")
}

/// A process stopped with SIGSTOP, resumed when dropped, also when the test fails
/// (a resumed process that was killed meanwhile is gone anyway).
pub struct Paused(u32);

impl Paused {
    /// Stops `pid` (a process the test started).
    pub fn pause(pid: u32) -> Self {
        assert!(pause(pid), "could not SIGSTOP {pid}");
        Self(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        resume(self.0);
    }
}

fn signal(pid: u32, which: &str) -> bool {
    Command::new("kill")
        .args([which, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when no process `pid` exists any more: it exited and was reaped (a zombie
/// still holds its pid, and PostgreSQL takes such a pid for a running postmaster).
pub fn is_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// The processes whose parent is `pid`, now.
pub fn children_of(pid: u32) -> Vec<u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| parent_of(child) == Some(pid))
        .collect()
}

/// A process's parent pid, from `/proc/PID/stat` (the second field after the command
/// name, which may itself hold spaces and parentheses).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
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
