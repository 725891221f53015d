//! The control plane's short-lived agent runs ([`crate::task`]): adopting a rotated
//! key version for servers that are not running (every key-check interval, and
//! before every start), a server's logs, fsck of a stopped server's volume, and
//! resetting a serving server's superuser password. The control plane hands each
//! run its identity's secret (and a new password) and reads its answer; the DEK
//! stays in the run.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout};
use std::sync::{Arc, Mutex, PoisonError};

use pgcmk_crypto::SecretBytes;
use pgcmk_keyprovider::KeyError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use pgcmk_agent::contract::invocation::spawn_task;
use pgcmk_agent::contract::server_dir::read_json;
use pgcmk_agent::contract::task::{
    AgentTask, LogRecord, PasswordReset, TaskAnswer, TaskFailure, VolumeCheck, Wrapping,
};
use pgcmk_agent::contract::{AgentConfig, Handshake, ServerDir};

use super::create::hex_id;
use super::Platform;
use crate::error::{IoContext, StateConflict};
use crate::model::{Actor, SecretString, ServerRecord, ServerState};
use crate::Error;

impl Platform {
    /// Time between key checks: also how often servers that are not running adopt
    /// their key's current version.
    pub fn key_check_interval(&self) -> std::time::Duration {
        self.config.interval
    }

    /// True when the server is not running: stopped, or failed with no agent.
    fn is_idle(&self, server: &ServerRecord) -> bool {
        server.host.is_none()
            && matches!(server.state, ServerState::Stopped | ServerState::Failed(_))
            && !self
                .agents
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(&server.id)
    }

    /// Starts `pgcmk agent --server-dir DIR TASK`: the identity's secret (and
    /// `new_password`, for the task that sets it) on its stdin, its answer on a
    /// pipe, its diagnostics appended to `agent.log`.
    fn start_task(
        &self,
        server: &ServerRecord,
        task: &AgentTask,
        new_password: Option<SecretBytes>,
    ) -> Result<TaskProcess, Error> {
        self.local_only(server, "a streamed agent task (logs)")?;
        let handshake = self.task_handshake(server, new_password)?;
        // A server that is not running was not followed when the vault service moved.
        self.hand_vault_address(server, None);
        let dir = ServerDir::new(&server.dir);
        let mut child = spawn_task(&self.config.agent_program, &dir, task, &handshake)
            .ctx(|| format!("starting the agent's {} run", task.name()))?;
        let stdout = child.stdout.take().ok_or_else(|| {
            Error::AgentTask(format!(
                "the agent's {} run has no output pipe",
                task.name()
            ))
        })?;
        Ok(TaskProcess {
            child: Arc::new(Mutex::new(child)),
            stdout: BufReader::new(stdout),
            what: format!(
                "the agent's {} run for server '{}' (see {})",
                task.name(),
                server.name,
                dir.agent_log().display()
            ),
        })
    }

    /// The handshake of a task run: the identity's secret (and `new_password`, for
    /// the task that sets it), the geo identity's and the storage key when the
    /// server's backups need them.
    pub(super) fn task_handshake(
        &self,
        server: &ServerRecord,
        new_password: Option<SecretBytes>,
    ) -> Result<SecretBytes, Error> {
        let (storage_key, geo_storage_key) = self.storage_keys(server)?;
        let handshake = Handshake {
            new_password,
            geo_identity_secret: self.geo_identity_secret(server)?,
            storage_key,
            geo_storage_key,
            ..Handshake::identity_only(self.identity_secret(server)?)
        };
        Ok(handshake.to_bytes()?)
    }

    /// Runs a task that ends and returns what it did, or why it could not: here,
    /// or on the server's host (`docs/hosts.md`).
    pub(super) fn run_task<T: DeserializeOwned>(
        &self,
        server: &ServerRecord,
        task: &AgentTask,
        new_password: Option<SecretBytes>,
    ) -> Result<T, Error> {
        let answer = match &server.host {
            Some(_) => self.run_task_on_host(server, task, new_password)?,
            None => self.start_task(server, task, new_password)?.answer()?,
        };
        match answer {
            TaskAnswer::Done(done) => Ok(done),
            TaskAnswer::Failed(TaskFailure::VersionRefused(refusal)) => {
                Err(Error::KeyVersionRefused {
                    server: server.name.clone(),
                    refusal,
                })
            }
            TaskAnswer::Failed(TaskFailure::VaultUnavailable { reason }) => {
                Err(Error::Key(KeyError::Transient { reason }))
            }
            TaskAnswer::Failed(TaskFailure::Failed { message }) => Err(Error::AgentTask(format!(
                "the agent's {} run for server '{}' failed: {message}",
                task.name(),
                server.name
            ))),
        }
    }

    /// Has the server's DEK re-wrapped with its key's current version if that moved
    /// on, proving on the way that the vault unwraps it; the store follows. Called
    /// with the lifecycle lock held, on a server that is not running.
    pub(super) fn adopt_key_version(&self, server: &ServerRecord) -> Result<(), Error> {
        let wrapping: Wrapping = self.run_task(server, &AgentTask::AdoptKeyVersion, None)?;
        if wrapping.wrapped_dek != server.wrapped_dek {
            self.store
                .update_server(&server.id, |s| s.wrapped_dek = wrapping.wrapped_dek.clone())?;
        }
        if let Some(from) = &wrapping.rewrapped_from {
            self.event(
                server,
                Actor::ControlPlane,
                "dek re-wrapped",
                &format!(
                    "adopted key version {} (was {from}) while the server was not running",
                    wrapping.wrapped_dek.kek
                ),
            )?;
        }
        Ok(())
    }

    /// One pass over the servers that are not running and follow their key's
    /// rotation (a versionless key): each DEK is re-wrapped to the key's current
    /// version, so the old version may be disabled. `pgcmk serve` runs it every
    /// key-check interval. A version the vault refuses is recorded once as an
    /// event (`server start` then says what to do).
    pub fn adopt_key_versions_of_idle_servers(&self) {
        let servers = match self.store.servers() {
            Ok(servers) => servers,
            Err(e) => return tracing::error!("adopting key versions: {e}"),
        };
        for server in servers {
            if let Err(e) = self.adopt_key_version_if_idle(&server.name) {
                tracing::warn!(server = %server.name, "adopting the key's current version: {e}");
            }
        }
    }

    fn adopt_key_version_if_idle(&self, name: &str) -> Result<(), Error> {
        let _guard = self.locks.lock(name);
        // Read again under the lock: it may have started or gone since.
        let server = match self.store.server(name) {
            Ok(server) => server,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if !self.is_idle(&server) {
            return Ok(());
        }
        let config: AgentConfig = read_json(&ServerDir::new(&server.dir).agent_config())?;
        if !config.kek.key.is_versionless() {
            return Ok(()); // pinned: there is nothing to adopt
        }
        match self.adopt_key_version(&server) {
            Err(e @ Error::KeyVersionRefused { .. }) => {
                let why = e.to_string();
                let told = self
                    .store
                    .events(&server.id)?
                    .last()
                    .is_some_and(|last| last.what == "dek re-wrap refused" && last.why == why);
                if !told {
                    self.event(&server, Actor::ControlPlane, "dek re-wrap refused", &why)?;
                }
                Ok(())
            }
            other => other,
        }
    }

    /// Refuses a start that the vault would refuse, before any agent runs, naming
    /// the key version and the fix; adopts the key's current version on the way.
    /// The refusal is an event. Any other failure (an unreachable vault, unreadable
    /// files) is left to the node agent, which reports it as it starts.
    pub(super) fn check_key_before_start(&self, server: &ServerRecord) -> Result<(), Error> {
        if server.host.is_some() {
            // Its agent checks the key itself on its host (no task runs there yet).
            return Ok(());
        }
        match self.adopt_key_version(server) {
            Err(refused @ Error::KeyVersionRefused { .. }) => {
                self.event(server, Actor::Dba, "start refused", &refused.to_string())?;
                Err(refused)
            }
            Err(other) => {
                tracing::warn!(server = %server.name, "checking the key before the start: {other}");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// PostgreSQL's and the agent's logs, through a short-lived agent run: the
    /// last `lines` of each, then with `follow` what they grow by while the server
    /// serves (until the stream is dropped).
    /// On a host, the run's whole output comes back at once: following is not
    /// available there yet.
    pub fn logs(&self, name: &str, lines: usize, follow: bool) -> Result<LogStream, Error> {
        let server = self.store.server(name)?;
        let task = AgentTask::Logs { lines, follow };
        if server.host.is_some() {
            if follow {
                self.local_only(&server, "following the logs")?;
            }
            let output = self.task_output_on_host(&server, &task, None)?;
            return Ok(LogStream {
                lines: LogLines::Received(std::io::Cursor::new(output.expose_secret().to_vec())),
                what: format!("the agent's logs run for server '{name}' on its host"),
            });
        }
        let process = self.start_task(&server, &task, None)?;
        Ok(LogStream {
            what: process.what.clone(),
            lines: LogLines::Run(process),
        })
    }

    /// Checks every block of a server's volume (cryptfs fsck, with the DEK
    /// unwrapped in a short-lived agent run). The server must not be running.
    pub fn fsck(&self, name: &str) -> Result<VolumeCheck, Error> {
        let _guard = self.locks.lock(name);
        let server = self.store.server(name)?;
        self.local_only(&server, "fsck")?;
        if !self.is_idle(&server) {
            return Err(StateConflict::RunningVolume {
                server: name.into(),
                state: server.state.name(),
            }
            .into());
        }
        let check: VolumeCheck = self.run_task(&server, &AgentTask::Fsck, None)?;
        self.event(
            &server,
            Actor::Dba,
            "volume checked",
            &format!(
                "{} files, {} blocks: {} bad{}",
                check.files_checked,
                check.blocks_checked,
                check.bad_blocks.len(),
                if check.dirty {
                    format!(", {} torn by a crash", check.torn_blocks.len())
                } else {
                    String::new()
                }
            ),
        )?;
        Ok(check)
    }
}

impl Platform {
    /// Sets a new random password for the `postgres` superuser of a Ready server,
    /// through a short-lived agent run that gets it on its stdin; returns it to be
    /// shown once. The platform keeps it no longer than this call; PostgreSQL
    /// stores only its SCRAM verifier.
    pub fn reset_password(&self, name: &str) -> Result<PasswordChanged, Error> {
        let _guard = self.locks.lock(name);
        let server = self.store.server(name)?;
        if !server.nodes.is_empty() {
            // Each node keeps the superuser's password for Patroni's rewinds: a
            // reset would have to reach every node's stored copy too.
            return Err(super::HaError::NotForHighlyAvailable {
                server: name.into(),
                what: "reset-password",
            }
            .into());
        }
        if server.state != ServerState::Ready {
            return Err(StateConflict::NotServing {
                server: name.into(),
                state: server.state.name(),
            }
            .into());
        }
        let password = hex_id()?;
        let reset: PasswordReset = self.run_task(
            &server,
            &AgentTask::ResetPassword,
            Some(SecretBytes::new(password.as_bytes().to_vec())),
        )?;
        self.event(
            &server,
            Actor::Dba,
            "password reset",
            &format!(
                "a new password was set for the {} superuser; the old one no longer works",
                reset.role
            ),
        )?;
        Ok(PasswordChanged {
            server: server.name,
            role: reset.role,
            password: SecretString::new(password),
        })
    }
}

/// The answer to a password reset: the new password, shown once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PasswordChanged {
    /// The server's name.
    pub server: String,
    /// The role whose password was set (`postgres`).
    pub role: String,
    /// The new password: stored nowhere by the platform.
    pub password: SecretString,
}

/// A short-lived agent run whose answer comes on a pipe. Killed (with its private
/// mounts, which go with it) if dropped before it ends.
struct TaskProcess {
    child: Arc<Mutex<Child>>,
    stdout: BufReader<ChildStdout>,
    /// The run, for messages.
    what: String,
}

impl TaskProcess {
    /// Reads the answer to its end and waits for the run to exit.
    fn answer<T: DeserializeOwned>(mut self) -> Result<TaskAnswer<T>, Error> {
        let mut out = Vec::new();
        self.stdout
            .read_to_end(&mut out)
            .ctx(|| format!("reading the answer of {}", self.what))?;
        let status = self
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .wait()
            .ctx(|| format!("waiting for {}", self.what))?;
        serde_json::from_slice(&out).map_err(|e| {
            Error::AgentTask(format!(
                "{} gave no answer (it exited with {status}; {e})",
                self.what
            ))
        })
    }
}

impl Drop for TaskProcess {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        // A no-op once it has been waited for: never signals a recycled pid.
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// One item of a [`LogStream`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogStreamItem {
    /// A record.
    Record(LogRecord),
    /// Nothing new for a while (an empty line on the wire).
    KeepAlive,
}

/// PostgreSQL's and the agent's log records from a short-lived agent run; the run
/// is ended when this is dropped (or by a [`LogStreamStopper`]).
pub struct LogStream {
    lines: LogLines,
    /// The run, for messages.
    what: String,
}

/// Where a [`LogStream`]'s lines come from.
enum LogLines {
    /// A run here, as it prints them.
    Run(TaskProcess),
    /// The whole output of a run on the server's host.
    Received(std::io::Cursor<Vec<u8>>),
}

impl LogStream {
    /// A handle that ends the run from elsewhere, e.g. when the reader has gone
    /// while this stream waits for the next line.
    pub fn stopper(&self) -> LogStreamStopper {
        LogStreamStopper(match &self.lines {
            LogLines::Run(process) => Some(process.child.clone()),
            LogLines::Received(_) => None,
        })
    }
}

impl Iterator for LogStream {
    type Item = LogStreamItem;

    /// The next item; `None` once the run has ended (or printed something that is
    /// not a record, which is logged).
    fn next(&mut self) -> Option<LogStreamItem> {
        let mut line = String::new();
        let read = match &mut self.lines {
            LogLines::Run(process) => process.stdout.read_line(&mut line),
            LogLines::Received(output) => output.read_line(&mut line),
        };
        match read {
            Ok(0) => None,
            Ok(_) if line.trim().is_empty() => Some(LogStreamItem::KeepAlive),
            Ok(_) => match serde_json::from_str(&line) {
                Ok(record) => Some(LogStreamItem::Record(record)),
                Err(e) => {
                    tracing::error!("{} printed a line that is not a log record: {e}", self.what);
                    None
                }
            },
            Err(e) => {
                tracing::error!("reading {}: {e}", self.what);
                None
            }
        }
    }
}

/// Ends a [`LogStream`]'s run ([`LogStream::stopper`]); a run on a host has ended
/// already.
pub struct LogStreamStopper(Option<Arc<Mutex<Child>>>);

impl LogStreamStopper {
    /// Kills the run (a no-op once it has ended and been waited for).
    pub fn stop(&self) {
        if let Some(child) = &self.0 {
            let _ = child.lock().unwrap_or_else(PoisonError::into_inner).kill();
        }
    }
}
