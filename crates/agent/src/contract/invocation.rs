//! How the control plane starts, recognizes and signals a node agent.
//!
//! - Serving: `PROGRAM agent --server-dir DIR --instance NAME`. NAME is new at
//!   every start and is in each of the agent's reports, so a report left by an
//!   earlier agent is never taken for this one's. The agent writes its pid to
//!   `DIR/agent.pid`; a control plane that restarts re-attaches to the process
//!   whose command line names DIR and an instance.
//! - One task: `PROGRAM agent --server-dir DIR TASK ARGS` ([`super::task`]), its
//!   answer on stdout.
//! - Both read the [`super::handshake`] on stdin and log to stderr.
//! - Signals to a serving agent: SIGTERM stops the server (PostgreSQL, mount, DEK)
//!   and exits; SIGHUP checks the key now (re-reading `agent.json`); SIGKILL is the
//!   last resort of a stop that was not answered.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use pgcmk_crypto::SecretBytes;

use super::server_dir::ServerDir;
use super::task::AgentTask;
use crate::process;
use crate::sys::{self, Signal};

/// What a serving agent is asked to show of itself beyond its reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observability {
    /// Serve metrics on a free loopback port (`--metrics-listen 127.0.0.1:0`); the
    /// agent reports the address in `status.json`.
    pub metrics: bool,
    /// Log one JSON object per line (`--log-format json`) instead of text.
    pub json_logs: bool,
}

/// The command of a serving agent for `dir`, started as `instance`.
pub fn serve_command(
    program: &Path,
    dir: &ServerDir,
    instance: &str,
    observability: Observability,
) -> Command {
    let mut command = Command::new(program);
    command
        .arg("agent")
        .arg("--server-dir")
        .arg(dir.root())
        .args(["--instance", instance]);
    if observability.metrics {
        command.args(["--metrics-listen", "127.0.0.1:0"]);
    }
    if observability.json_logs {
        command.args(["--log-format", "json"]);
    }
    command
}

/// Starts a serving agent for `dir` as `instance` ([`serve_command`]), its output
/// appended to `DIR/agent.log` (created 0600), and writes `handshake` (the bytes of
/// a [`super::Handshake`]) on its stdin, which closes then. The control plane and a
/// host daemon (`docs/hosts.md`) both start agents through this one function.
///
pub fn spawn_serving(
    program: &Path,
    dir: &ServerDir,
    instance: &str,
    observability: Observability,
    handshake: &SecretBytes,
) -> std::io::Result<Child> {
    let log = open_agent_log(dir)?;
    let err = log.try_clone()?;
    let mut child = serve_command(program, dir, instance, observability)
        .stdin(Stdio::piped())
        .stdout(log)
        .stderr(err)
        .spawn()?;
    write_handshake(&mut child, handshake);
    Ok(child)
}

/// Starts a short-lived agent run of `task` for `dir` ([`task_command`]), its
/// answer on a pipe (the child's stdout), its diagnostics appended to
/// `DIR/agent.log`, and writes `handshake` on its stdin, which closes then. The
/// control plane and a host daemon both start tasks through this one function.
pub fn spawn_task(
    program: &Path,
    dir: &ServerDir,
    task: &AgentTask,
    handshake: &SecretBytes,
) -> std::io::Result<Child> {
    let log = open_agent_log(dir)?;
    let mut child = task_command(program, dir, task)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()?;
    write_handshake(&mut child, handshake);
    Ok(child)
}

/// Writes `handshake` on the child's stdin and closes it, which ends its read.
/// Far below a pipe's capacity, so this never waits for the child; a child that
/// did not take it exited at once, and its exit and log say why.
fn write_handshake(child: &mut Child, handshake: &SecretBytes) {
    if let Some(mut stdin) = child.stdin.take() {
        if let Err(e) = stdin.write_all(handshake.expose_secret()) {
            tracing::warn!("the agent did not take its handshake: {e}");
        }
    }
}

/// Opens the server's `agent.log` for appending (created 0600).
pub fn open_agent_log(dir: &ServerDir) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.agent_log())
}

/// The command of a short-lived agent run of `task` for `dir`.
pub fn task_command(program: &Path, dir: &ServerDir, task: &AgentTask) -> Command {
    let mut command = Command::new(program);
    command
        .arg("agent")
        .arg("--server-dir")
        .arg(dir.root())
        .args(task.args());
    command
}

/// The instance name of `pid` when it is a running serving agent for `dir` (not a
/// recycled pid, not a zombie).
pub fn running_instance(pid: u32, dir: &Path) -> Option<String> {
    let args = process::cmdline(pid)?;
    let for_dir = args.iter().any(|a| a == b"agent")
        && process::arg_after(&args, "--server-dir").is_some_and(|d| process::arg_is_path(d, dir));
    let instance = process::arg_after(&args, "--instance")?;
    (for_dir && process::is_running(pid)).then(|| String::from_utf8_lossy(instance).into_owned())
}

/// True when `pid` is a running serving agent for `dir`.
pub fn is_agent_of(pid: u32, dir: &Path) -> bool {
    running_instance(pid, dir).is_some()
}

/// True while process `pid` exists and has not exited (a zombie has).
pub fn is_running(pid: u32) -> bool {
    process::is_running(pid)
}

/// What the control plane asks of a serving agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentSignal {
    /// SIGTERM: stop the server and exit.
    Stop,
    /// SIGHUP: check the key now.
    CheckKeyNow,
    /// SIGKILL: end an agent that did not answer [`AgentSignal::Stop`].
    Kill,
}

/// Sends `signal` to the agent `pid`.
pub fn signal(pid: u32, signal: AgentSignal) -> std::io::Result<()> {
    sys::send_signal(
        pid,
        match signal {
            AgentSignal::Stop => Signal::Term,
            AgentSignal::CheckKeyNow => Signal::Hup,
            AgentSignal::Kill => Signal::Kill,
        },
    )
}
