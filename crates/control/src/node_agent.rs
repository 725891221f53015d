//! A server's node agent as supervision sees it, wherever it runs ([`NodeAgent`]):
//! on this machine ([`AgentProcess`]: our child, or one re-attached after a
//! control plane restart) or on a host (`platform::remote_agent`), and how an agent
//! ended ([`AgentExit`]).
//!
//! An agent on this machine is alive while its process runs: our child until it is
//! reaped, or — re-attached, so not our child — until `/proc/PID/stat` says it
//! exited (a zombie is dead, though `kill(pid, 0)` still finds it).

use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::Child;
use std::time::{Duration, Instant};

use pgcmk_agent::contract::invocation::{is_running, signal, AgentSignal};
use pgcmk_agent::contract::server_dir::read_json;
use pgcmk_agent::contract::{AgentStatus, ServerDir};
use serde::{Deserialize, Serialize};

/// How an agent ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentExit {
    /// It exited with this code (0: it was asked to stop).
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
    /// It is gone; it was not our child, so how it ended is unknown.
    Gone,
}

impl AgentExit {
    /// `None` while process `pid` runs; how it ended once it has. Our `child` is
    /// reaped; one that is not our child (re-attached) is only known to be gone.
    pub fn of_process(child: Option<&mut Child>, pid: u32) -> Option<Self> {
        match child {
            Some(child) => match child.try_wait() {
                Ok(None) => None,
                Ok(Some(status)) => Some(match (status.code(), status.signal()) {
                    (Some(code), _) => AgentExit::Code(code),
                    (None, Some(signal)) => AgentExit::Signal(signal),
                    (None, None) => AgentExit::Gone,
                }),
                Err(_) => Some(AgentExit::Gone),
            },
            None => (!is_running(pid)).then_some(AgentExit::Gone),
        }
    }
}

impl fmt::Display for AgentExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentExit::Code(code) => write!(f, "exited with code {code}"),
            AgentExit::Signal(9) => f.write_str("was killed by signal 9 (SIGKILL)"),
            AgentExit::Signal(signal) => write!(f, "was killed by signal {signal}"),
            AgentExit::Gone => f.write_str("is gone"),
        }
    }
}

/// A server's node agent as supervision sees it, wherever it runs: on this
/// machine ([`AgentProcess`]) or on a host (`platform::remote_agent`). Supervision
/// derives the server's state from these answers alone, in one code path.
pub trait NodeAgent: fmt::Debug + Send {
    /// Its pid (on its own machine; 0 while not known yet).
    fn pid(&self) -> u32;
    /// `None` while it runs, as far as is known now; how it ended once it has.
    fn exit(&mut self) -> Option<AgentExit>;
    /// `exit` in words, with the agent's last error when it gave one.
    fn exit_detail(&self, exit: AgentExit) -> String;
    /// Its latest report: its `status.json` as it wrote it (relayed by its host).
    fn report(&self) -> Option<AgentStatus>;
    /// `Some(why)` while nothing about it can be known (its host does not
    /// speak); `None` when its reports can be trusted to come.
    fn unreachable(&self, now: Instant) -> Option<String>;
    /// How much later than the agent wrote them its reports may reach the plane
    /// while nothing is wrong (zero here: the plane reads the file itself).
    fn report_delay(&self) -> Duration {
        Duration::ZERO
    }
    /// Asks it to stop the server and exit (SIGTERM).
    fn terminate(&mut self);
    /// Ends it, when it did not stop in time (SIGKILL).
    fn kill(&mut self);
    /// Waits until it has exited after [`NodeAgent::kill`].
    fn reap(&mut self);
    /// True when `report` was written by it.
    fn wrote(&self, report: &AgentStatus) -> bool;
}

/// A running agent on this machine: our child, or one re-attached after a
/// control plane restart.
#[derive(Debug)]
pub struct AgentProcess {
    child: Option<Child>,
    pid: u32,
    instance: String,
    dir: ServerDir,
}

impl AgentProcess {
    /// An agent we spawned with `instance` for `dir`.
    pub fn spawned(child: Child, instance: String, dir: ServerDir) -> Self {
        Self {
            pid: child.id(),
            child: Some(child),
            instance,
            dir,
        }
    }

    /// An agent found running (pid and instance from its command line).
    pub fn attached(pid: u32, instance: String, dir: ServerDir) -> Self {
        Self {
            child: None,
            pid,
            instance,
            dir,
        }
    }
}

impl NodeAgent for AgentProcess {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn exit(&mut self) -> Option<AgentExit> {
        AgentExit::of_process(self.child.as_mut(), self.pid)
    }

    /// `pgcmk agent` prints `error: ...` as its last line before it exits with
    /// an error.
    fn exit_detail(&self, exit: AgentExit) -> String {
        let AgentExit::Code(code) = exit else {
            return exit.to_string();
        };
        match self.dir.last_agent_error() {
            Some(error) if code != 0 => format!("{exit}: {error}"),
            _ => format!("{exit} (see {})", self.dir.agent_log().display()),
        }
    }

    fn report(&self) -> Option<AgentStatus> {
        read_json(&self.dir.status()).ok()
    }

    /// A local agent is always within reach: its process is checked directly.
    fn unreachable(&self, _now: Instant) -> Option<String> {
        None
    }

    fn terminate(&mut self) {
        let _ = signal(self.pid, AgentSignal::Stop);
    }

    fn kill(&mut self) {
        let _ = signal(self.pid, AgentSignal::Kill);
    }

    /// Waits for our child to exit (a no-op for a re-attached agent).
    fn reap(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.wait();
        }
    }

    fn wrote(&self, report: &AgentStatus) -> bool {
        report.agent_pid == self.pid && report.instance == self.instance
    }
}
