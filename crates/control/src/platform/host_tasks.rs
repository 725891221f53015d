//! Agent tasks of servers on hosts ([docs/hosts.md](../../../../docs/hosts.md)):
//! a task (backup list, reset-password, ...) is queued for the server's host, handed
//! over in its next heartbeat answer with the run's handshake, run there as
//! `pgcmk agent --server-dir DIR TASK`, and its one JSON answer posted back to
//! `POST /hosts/{name}/tasks/{task_id}`. The API call that asked waits for that
//! answer, or ends with 503 "host unavailable" once the host is silent: never a
//! guess. In memory only: a plane restart ends the calls that waited.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use pgcmk_agent::contract::task::{AgentTask, TaskAnswer};
use pgcmk_crypto::SecretBytes;
use serde::de::DeserializeOwned;

use super::create::hex_id;
use super::hosts::AdmittedHost;
use super::Platform;
use crate::assignments::TaskAssignment;
use crate::hosts::HostError;
use crate::model::{SecretString, ServerRecord};
use crate::Error;

/// How often a waiting call looks for the answer.
const POLL: Duration = Duration::from_millis(100);

/// One task queued for a host.
struct QueuedTask {
    host: String,
    server_id: String,
    task: AgentTask,
    /// The run's handshake, until it is handed to the host (once).
    handshake: Option<SecretString>,
    /// The answer the host posted.
    answer: Option<SecretBytes>,
    /// The host's daemon restarted after the task was handed over: no answer
    /// will come.
    lost: bool,
}

/// The tasks queued for hosts, by task id.
#[derive(Default)]
pub(super) struct HostTasks {
    tasks: Mutex<HashMap<String, QueuedTask>>,
}

impl HostTasks {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, QueuedTask>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tasks for `host` not handed over yet, handed over now.
    pub(super) fn hand_over(&self, host: &str) -> Vec<TaskAssignment> {
        let mut tasks = self.lock();
        tasks
            .iter_mut()
            .filter(|(_, t)| t.host == host)
            .filter_map(|(id, t)| {
                Some(TaskAssignment {
                    task_id: id.clone(),
                    server_id: t.server_id.clone(),
                    task: t.task.clone(),
                    handshake: t.handshake.take()?,
                })
            })
            .collect()
    }

    /// Host `host`'s daemon started again: the tasks it was handed are lost.
    pub(super) fn daemon_restarted(&self, host: &str) {
        for task in self.lock().values_mut() {
            if task.host == host && task.handshake.is_none() {
                task.lost = true;
            }
        }
    }
}

impl Platform {
    /// Runs `task` of `server` on its host and waits for its answer (see the
    /// module's documentation).
    pub(super) fn run_task_on_host<T: DeserializeOwned>(
        &self,
        server: &ServerRecord,
        task: &AgentTask,
        new_password: Option<SecretBytes>,
    ) -> Result<TaskAnswer<T>, Error> {
        let output = self.task_output_on_host(server, task, new_password)?;
        serde_json::from_slice(output.expose_secret()).map_err(|e| {
            Error::AgentTask(format!(
                "the agent's {} run on the host of server '{}' gave no answer ({e})",
                task.name(),
                server.name
            ))
        })
    }

    /// Runs `task` of `server` on its host and returns what the run printed.
    pub(super) fn task_output_on_host(
        &self,
        server: &ServerRecord,
        task: &AgentTask,
        new_password: Option<SecretBytes>,
    ) -> Result<SecretBytes, Error> {
        let Some(host) = server.host.clone() else {
            return Err(Error::Aborted("the server has no host".into()));
        };
        self.require_host_online(server)?;
        let handshake = self.task_handshake(server, new_password)?;
        let handshake = std::str::from_utf8(handshake.expose_secret())
            .map_err(|_| Error::Aborted("a handshake was not text".into()))?;
        let id = hex_id()?;
        self.host_tasks.lock().insert(
            id.clone(),
            QueuedTask {
                host: host.clone(),
                server_id: server.id.clone(),
                task: task.clone(),
                handshake: Some(SecretString::new(handshake.to_string())),
                answer: None,
                lost: false,
            },
        );
        let unavailable = |why: String| {
            self.host_tasks.lock().remove(&id);
            Err(HostError::Unavailable {
                server: server.name.clone(),
                host: host.clone(),
                why,
            }
            .into())
        };
        loop {
            let (answer, lost) = match self.host_tasks.lock().get_mut(&id) {
                Some(queued) => (queued.answer.take(), queued.lost),
                None => (None, true),
            };
            if let Some(answer) = answer {
                self.host_tasks.lock().remove(&id);
                return Ok(answer);
            }
            if lost {
                return unavailable(format!(
                    "restarted its daemon while the {} run was on it",
                    task.name()
                ));
            }
            if let Some(why) = self.host_presence.silence(&host, Instant::now()) {
                return unavailable(why);
            }
            std::thread::sleep(POLL);
        }
    }

    /// A host posts the answer of one of its tasks.
    pub fn host_task_answer(
        &self,
        host: &AdmittedHost,
        task_id: &str,
        answer: &[u8],
    ) -> Result<(), Error> {
        let mut tasks = self.host_tasks.lock();
        let task = tasks
            .get_mut(task_id)
            .filter(|t| t.host == host.name() && t.handshake.is_none())
            .ok_or_else(|| HostError::UnknownTask(task_id.to_string()))?;
        task.answer = Some(SecretBytes::new(answer.to_vec()));
        Ok(())
    }
}
