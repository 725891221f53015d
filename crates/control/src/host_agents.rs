//! The agents a host daemon keeps ([docs/hosts.md](../../../docs/hosts.md)): it
//! writes each assigned server's directory under `STATE/servers/ID`, starts
//! `pgcmk agent` exactly as the control plane does on its own machine
//! ([`spawn_serving`]) with the handshake the plane sent written on its stdin,
//! stops and removes them as the plane's assignments say, and reports each
//! server's directory with its agent's own `status.json` and exit.
//!
//! Agents outlive the daemon: a restarted daemon re-attaches to the ones still
//! running (pid file and command line, as the plane does).

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;

use pgcmk_agent::contract::invocation::{
    running_instance, signal, spawn_serving, spawn_task, AgentSignal, Observability,
};
use pgcmk_agent::contract::server_dir::read_json;
use pgcmk_agent::contract::task::{AgentTask, TaskAnswer, TaskFailure};
use pgcmk_agent::contract::{AgentStatus, ServerDir};
use pgcmk_crypto::SecretBytes;

use crate::assignments::{Assignment, DesiredRun, RelayedExit, RelayedServer, TaskAssignment};
use crate::host_server_dir::{self, Assigned};
use crate::node_agent::AgentExit;

/// One agent the daemon started (or found running).
struct Hosted {
    instance: String,
    pid: u32,
    /// Our child; `None` for one re-attached after a daemon restart.
    child: Option<Child>,
    exit: Option<RelayedExit>,
    /// The stop already asked of it (sent once).
    asked: Option<AgentSignal>,
}

/// The agents of one host.
pub struct HostAgents {
    servers_dir: PathBuf,
    program: PathBuf,
    agents: HashMap<String, Hosted>,
    /// What wraps each server's keys in the plane's last assignment.
    assigned: HashMap<String, Assigned>,
}

impl HostAgents {
    /// The agents under `state_dir/servers`, re-attached to those still running;
    /// `program` is `pgcmk` itself.
    pub fn open(state_dir: &Path, program: PathBuf) -> std::io::Result<Self> {
        let servers_dir = state_dir.join("servers");
        fs::create_dir_all(&servers_dir)?;
        // PostgreSQL (another user) must traverse to its mount and socket.
        fs::set_permissions(&servers_dir, fs::Permissions::from_mode(0o711))?;
        let mut agents = HashMap::new();
        for id in server_ids(&servers_dir)? {
            let dir = ServerDir::new(servers_dir.join(&id));
            let running = fs::read_to_string(dir.agent_pid())
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
                .and_then(|pid| Some((pid, running_instance(pid, dir.root())?)));
            if let Some((pid, instance)) = running {
                tracing::info!(server = %id, pid, "agent re-attached");
                agents.insert(
                    id,
                    Hosted {
                        instance,
                        pid,
                        child: None,
                        exit: None,
                        asked: None,
                    },
                );
            }
        }
        Ok(Self {
            servers_dir,
            program,
            agents,
            assigned: HashMap::new(),
        })
    }

    /// Every server directory, with its agent's report and exit.
    pub fn report(&mut self) -> Vec<RelayedServer> {
        let ids = server_ids(&self.servers_dir).unwrap_or_default();
        ids.into_iter()
            .map(|id| {
                let dir = ServerDir::new(self.servers_dir.join(&id));
                let (wrapped_dek, wrapped_backup_key) = self
                    .assigned
                    .get(&id)
                    .map(|assigned| assigned.rewrapped(&dir))
                    .unwrap_or_default();
                let Some(hosted) = self.agents.get_mut(&id) else {
                    return RelayedServer {
                        server_id: id,
                        instance: None,
                        pid: None,
                        status: None,
                        exit: None,
                        wrapped_dek,
                        wrapped_backup_key,
                    };
                };
                if hosted.exit.is_none() {
                    hosted.exit = ended(hosted).map(|exit| RelayedExit {
                        exit,
                        error: dir.last_agent_error(),
                    });
                }
                let status = read_json::<AgentStatus>(&dir.status())
                    .ok()
                    .filter(|s| s.instance == hosted.instance);
                RelayedServer {
                    server_id: id,
                    instance: Some(hosted.instance.clone()),
                    pid: Some(hosted.pid),
                    status,
                    exit: hosted.exit.clone(),
                    wrapped_dek,
                    wrapped_backup_key,
                }
            })
            .collect()
    }

    /// Does what `assignment` asks of its server (one step; the next heartbeat
    /// continues what needs waiting for, such as an agent's exit).
    pub fn apply(&mut self, assignment: Assignment) {
        let id = assignment.server_id.clone();
        if !is_server_id(&id) {
            tracing::error!("an assignment names no server directory: ignored");
            return;
        }
        let dir = ServerDir::new(self.servers_dir.join(&id));
        self.assigned.insert(id.clone(), Assigned::of(&assignment));
        let outcome = match &assignment.run {
            DesiredRun::Serving { instance } => self.serve(&dir, &assignment, instance.as_deref()),
            DesiredRun::Stopped => self.ask(&id, AgentSignal::Stop),
            DesiredRun::Killed => self.ask(&id, AgentSignal::Kill),
            DesiredRun::Deleted => self.delete(&id, &dir),
        };
        if let Err(e) = outcome {
            tracing::error!(server = %id, "{e}");
        }
    }

    /// Starts the assigned instance unless it was started already; an agent of
    /// another instance is stopped first.
    fn serve(
        &mut self,
        dir: &ServerDir,
        assignment: &Assignment,
        instance: Option<&str>,
    ) -> std::io::Result<()> {
        let id = &assignment.server_id;
        let Some(instance) = instance else {
            return Ok(());
        };
        if let Some(hosted) = self.agents.get_mut(id) {
            if hosted.instance == instance {
                return Ok(());
            }
            if ended(hosted).is_none() {
                return self.ask(id, AgentSignal::Stop);
            }
        }
        let Some(handshake) = &assignment.handshake else {
            // A start this daemon did not see (it restarted): the plane asks
            // again with a new instance once it sees none runs.
            return Ok(());
        };
        host_server_dir::write(dir, assignment)?;
        let handshake = SecretBytes::new(handshake.expose_secret().as_bytes().to_vec());
        let hosted = match spawn_serving(
            &self.program,
            dir,
            instance,
            Observability::default(),
            &handshake,
        ) {
            Ok(child) => Hosted {
                instance: instance.to_string(),
                pid: child.id(),
                child: Some(child),
                exit: None,
                asked: None,
            },
            Err(e) => Hosted {
                instance: instance.to_string(),
                pid: 0,
                child: None,
                exit: Some(RelayedExit {
                    exit: AgentExit::Gone,
                    error: Some(format!("the host could not start the agent: {e}")),
                }),
                asked: None,
            },
        };
        tracing::info!(server = %id, pid = hosted.pid, "agent started");
        self.agents.insert(id.clone(), hosted);
        Ok(())
    }

    /// Sends `what` to the server's running agent, once.
    fn ask(&mut self, id: &str, what: AgentSignal) -> std::io::Result<()> {
        let Some(hosted) = self.agents.get_mut(id) else {
            return Ok(());
        };
        if ended(hosted).is_some() || hosted.asked == Some(what) {
            return Ok(());
        }
        hosted.asked = Some(what);
        signal(hosted.pid, what)
    }

    /// Ends the server's agent, then removes its directory.
    fn delete(&mut self, id: &str, dir: &ServerDir) -> std::io::Result<()> {
        if let Some(hosted) = self.agents.get_mut(id) {
            if ended(hosted).is_none() {
                return self.ask(id, AgentSignal::Kill);
            }
        }
        self.agents.remove(id);
        self.assigned.remove(id);
        dir.detach_stale_mount();
        if dir.root().exists() {
            fs::remove_dir_all(dir.root())?;
            tracing::info!(server = %id, "server directory removed");
        }
        Ok(())
    }
}

/// The answer of a task run on this host, to post to the plane.
pub struct TaskDone {
    /// The task's id.
    pub task_id: String,
    /// Its one JSON answer (a `TaskAnswer`), as the run printed it, or the failure
    /// this host saw.
    pub answer: SecretBytes,
}

impl HostAgents {
    /// Runs `assignment`'s task in a thread of its own (a backup may take long)
    /// and sends its answer to `done`.
    pub fn run_task(&self, assignment: TaskAssignment, done: mpsc::Sender<TaskDone>) {
        let program = self.program.clone();
        let valid = is_server_id(&assignment.server_id);
        let dir = ServerDir::new(self.servers_dir.join(&assignment.server_id));
        std::thread::spawn(move || {
            let TaskAssignment {
                task_id,
                task,
                handshake,
                ..
            } = assignment;
            let handshake = SecretBytes::new(handshake.expose_secret().as_bytes().to_vec());
            let answer = if valid && dir.root().is_dir() {
                run_to_answer(&program, &dir, &task, &handshake)
            } else {
                failed(format!(
                    "this host keeps no server directory for the {} run",
                    task.name()
                ))
            };
            let _ = done.send(TaskDone { task_id, answer });
        });
    }
}

/// Runs `task` for `dir` and returns its answer, or a failure that says why there
/// is none.
fn run_to_answer(
    program: &Path,
    dir: &ServerDir,
    task: &AgentTask,
    handshake: &SecretBytes,
) -> SecretBytes {
    let mut child = match spawn_task(program, dir, task, handshake) {
        Ok(child) => child,
        Err(e) => {
            return failed(format!(
                "the host could not start the {} run: {e}",
                task.name()
            ))
        }
    };
    let mut out = Vec::new();
    let read = child.stdout.take().map(|mut s| s.read_to_end(&mut out));
    let status = child.wait();
    let out = SecretBytes::new(out);
    match (read, status) {
        (Some(Ok(_)), Ok(_)) if !out.expose_secret().trim_ascii().is_empty() => out,
        (_, status) => failed(format!(
            "the {} run on the host gave no answer ({}; see its agent.log)",
            task.name(),
            status.map_or_else(|e| e.to_string(), |s| s.to_string())
        )),
    }
}

/// A task's answer that it failed, for `message`.
fn failed(message: String) -> SecretBytes {
    let answer: TaskAnswer<()> = TaskAnswer::Failed(TaskFailure::Failed { message });
    SecretBytes::new(serde_json::to_vec(&answer).unwrap_or_default())
}

/// How the agent ended, once it has (our child is reaped).
fn ended(hosted: &mut Hosted) -> Option<AgentExit> {
    if let Some(exit) = &hosted.exit {
        return Some(exit.exit);
    }
    AgentExit::of_process(hosted.child.as_mut(), hosted.pid)
}

/// The ids of the server directories under `servers_dir`.
fn server_ids(servers_dir: &Path) -> std::io::Result<Vec<String>> {
    let mut ids: Vec<String> = fs::read_dir(servers_dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| is_server_id(name))
        .collect();
    ids.sort();
    Ok(ids)
}

/// A server id: 32 lowercase hex characters (never a path).
fn is_server_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
