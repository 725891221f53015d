//! A host for the tests (docs/hosts.md): enrolled with `pgcmk host add`, its daemon
//! `pgcmk host serve` started with its own state directory, its requests leaving
//! from another loopback address. Dropped (also when a test fails), the daemon is
//! killed and every agent it left on the host is stopped and its mount detached.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pgcmk_agent::contract::ServerDir;
use pgcmk_testkit::process::{is_gone, kill_quietly, spawn_logged, terminate};
use pgcmk_testkit::wait::wait_for;
use serde_json::Value;

use super::{agent_pid, ControlPlane, Stack};

/// A host daemon and its state directory.
pub struct HostDaemon {
    pub process: std::process::Child,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    /// The credential `pgcmk host add` printed.
    pub credential: String,
    /// Its `pgcmk host serve` command line.
    command: Command,
}

impl HostDaemon {
    /// Enrolls host `name` at `address` and starts its daemon there.
    pub fn start(stack: &Stack, name: &str, address: &str) -> Self {
        let cp = &stack.cp;
        let enrolled = pgcmk_as_dba(cp, &["host", "add", name, "--address", address]);
        let credential = enrolled["credential"].as_str().unwrap().to_string();
        let credential_file = stack.root.path().join(format!("{name}.credential"));
        fs::write(&credential_file, &credential).unwrap();
        let state_dir = stack.root.path().join(name);
        let log = stack.root.path().join(format!("{name}.log"));
        let mut command = Command::new(pgcmk_testkit::binary::pgcmk());
        command
            .args(["host", "serve", name, "--control-plane", &cp.url])
            .arg("--ca-cert")
            .arg(cp.ca_file())
            .arg("--credential-file")
            .arg(&credential_file)
            .arg("--state-dir")
            .arg(&state_dir)
            .args(["--source-address", address]);
        Self {
            process: spawn_logged(&mut command, &log),
            state_dir,
            log,
            credential,
            command,
        }
    }

    /// Starts the daemon again with the same command line (after it was killed:
    /// a host back from a crash).
    pub fn restart(&mut self) {
        kill_quietly(&mut self.process);
        self.process = spawn_logged(&mut self.command, &self.log);
    }

    /// Where this host keeps its servers' directories.
    pub fn servers_dir(&self) -> PathBuf {
        self.state_dir.join("servers")
    }

    /// The directory of a server on this host (`dir` as `server show` says it).
    pub fn server_dir(&self, dir: &str) -> PathBuf {
        self.state_dir.join(dir)
    }

    /// What the daemon logged.
    pub fn said(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HostDaemon {
    fn drop(&mut self) {
        kill_quietly(&mut self.process);
        let servers = fs::read_dir(self.state_dir.join("servers"))
            .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_else(|_| Vec::new());
        for dir in servers {
            stop_leftover_agent(&dir);
        }
    }
}

/// Stops the agent still running for `dir` (by its pid file, when that pid is
/// still its agent) and detaches a mount a killed one left.
fn stop_leftover_agent(dir: &Path) {
    if let Some(pid) = agent_pid(dir) {
        if terminate(pid) {
            wait_for("a leftover agent to exit", Duration::from_secs(60), || {
                is_gone(pid)
            });
        }
    }
    ServerDir::new(dir).detach_stale_mount();
}

/// `pgcmk ARGS -o json` as the DBA of `cp`; its JSON answer.
pub fn pgcmk_as_dba(cp: &ControlPlane, args: &[&str]) -> Value {
    let output = pgcmk_output_as_dba(cp, args);
    assert!(output.status.success(), "{args:?}: {output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `pgcmk ARGS -o json` as the DBA of `cp`, whatever its exit status.
pub fn pgcmk_output_as_dba(cp: &ControlPlane, args: &[&str]) -> std::process::Output {
    Command::new(pgcmk_testkit::binary::pgcmk())
        .args(args)
        .args(["-o", "json", "--endpoint", &cp.url])
        .arg("--credential-file")
        .arg(cp.dba_credential())
        .arg("--ca-cert")
        .arg(cp.ca_file())
        .output()
        .unwrap()
}
