//! What a host daemon and the control plane tell each other at every heartbeat
//! ([docs/hosts.md](../../../docs/hosts.md)): the host reports the servers it keeps
//! ([`RelayedServer`], its agents' own reports unchanged), the plane answers with
//! the host's [`Assignment`]s and the [`TaskAssignment`]s to run. Typed both ways;
//! no transport here.

use pgcmk_agent::contract::task::AgentTask;
use pgcmk_agent::contract::{AgentConfig, AgentStatus};
use pgcmk_keyprovider::WrappedDek;
use serde::{Deserialize, Serialize};

use crate::hosts::HostPace;
use crate::model::SecretString;
use crate::node_agent::AgentExit;

/// What a host daemon sends when it registers and at every heartbeat.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostReport {
    /// Names this start of the daemon (new at every start).
    pub instance: String,
    /// Every server directory the host keeps, with its agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<RelayedServer>,
}

/// One server directory on a host, and the agent the host last started for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayedServer {
    /// The server's id (its directory's name).
    pub server_id: String,
    /// The instance of the agent the host started last for it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// That agent's pid on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// That agent's `status.json`, as it wrote it (only its own instance's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AgentStatus>,
    /// How that agent ended, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<RelayedExit>,
    /// Its `wrapped_dek.json`, while it differs from the one the plane assigned
    /// (its agent re-wrapped the DEK with a new key version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapped_dek: Option<WrappedDek>,
    /// Its `wrapped_backup_key.json`, while it differs from the one the plane
    /// assigned (its agent re-wrapped the repository key of the highly available
    /// server it is a node of).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapped_backup_key: Option<WrappedDek>,
}

/// How an agent on a host ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayedExit {
    /// Its exit.
    pub exit: AgentExit,
    /// The last `error:` line of its `agent.log`, or why it could not be started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a server's agent on a host should run now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "run", rename_all = "kebab-case")]
pub enum DesiredRun {
    /// The agent of this instance serves. `None` (after a plane restart): keep
    /// whatever agent runs; the plane adopts it from the next report.
    Serving {
        /// The instance the plane started.
        instance: Option<String>,
    },
    /// Stop the agent (SIGTERM once).
    Stopped,
    /// End the agent that did not stop in time (SIGKILL).
    Killed,
    /// The server is deleted: end its agent, remove its directory.
    Deleted,
}

/// One server the host keeps, as the plane wants it now (unknown fields are
/// allowed: serde cannot refuse them beside a flattened field).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Assignment {
    /// The server's id: its directory is `STATE/servers/ID` on the host.
    pub server_id: String,
    /// Its `agent.json`.
    pub agent_config: AgentConfig,
    /// Its `wrapped_dek.json` (written only when the directory is made: the
    /// agent re-wraps it itself afterwards, and the host relays that back).
    pub wrapped_dek: WrappedDek,
    /// The public files its directory holds on the host, for `agent.json` to name
    /// there instead of the plane's paths.
    #[serde(default)]
    pub files: HostedFiles,
    /// How its agent should run.
    #[serde(flatten)]
    pub run: DesiredRun,
    /// For a start the host has not acknowledged yet (no report of that instance
    /// came): the start-up handshake, the exact text to write on the agent's
    /// stdin. Built for this answer only; the plane keeps no copy on its disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake: Option<SecretString>,
}

/// Public material a server's agent on a host reads from files (none of it is
/// secret: certificates, and keys wrapped by the server's key in its vault). The
/// host writes each into the server's directory and names it in `agent.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostedFiles {
    /// The servers CA certificate (PEM), for a node of a highly available
    /// server (`ha.ca_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servers_ca: Option<String>,
    /// The etcd cluster's CA certificate (PEM), for such a node (`ha.etcd_ca_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_ca: Option<String>,
    /// The repository key of the highly available server the node belongs to,
    /// wrapped by its key (`backup.owner.dir`'s `wrapped_backup_key.json`;
    /// written only when the directory has none: the agent re-wraps it there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapped_backup_key: Option<WrappedDek>,
}

/// A task for the host to run once for one of its servers: `pgcmk agent
/// --server-dir DIR TASK` with `handshake` on its stdin; its one JSON answer (a
/// `TaskAnswer`) goes to `POST /hosts/{name}/tasks/{task_id}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskAssignment {
    /// Names this run (new for each).
    pub task_id: String,
    /// The server's id.
    pub server_id: String,
    /// The task.
    pub task: AgentTask,
    /// The run's start-up handshake (the identity's secret, a new password...),
    /// handed over once.
    pub handshake: SecretString,
}

/// The plane's answer to a registration or a heartbeat.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeartbeatAnswer {
    /// The pace the plane expects.
    #[serde(flatten)]
    pub pace: HostPace,
    /// The host's servers (none in the answer to a registration).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assignments: Vec<Assignment>,
    /// Tasks to run now, each handed over once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskAssignment>,
}
