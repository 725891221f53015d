//! `DIR/status.json`: what a node agent reports, and what the control plane reads.
//! The agent rewrites it at least every second ([`crate::report`]); a report is a
//! fact about now only while new ones keep coming.

use pgcmk_keyprovider::KeyVersionId;
use serde::{Deserialize, Serialize};

/// What an agent reports in `status.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Provisioning, Ready, Inaccessible (with the reason), Failed (with the reason)
    /// or Stopped.
    pub state: ServerState,
    /// Who brought the server into this state.
    pub cause: Actor,
    /// Why, in words.
    pub why: String,
    /// The key version that wraps the stored DEK.
    pub wrapped_by: KeyVersionId,
    /// The agent's pid.
    pub agent_pid: u32,
    /// The name the control plane gave this start of the agent.
    pub instance: String,
    /// Counts this instance's reports, from 1.
    pub seq: u64,
    /// The postmaster's pid while PostgreSQL runs.
    pub postgres_pid: Option<u32>,
    /// This instance's latest events, oldest first.
    pub events: Vec<AgentEvent>,
    /// When this report was written (RFC 3339).
    pub at: String,
    /// When the key monitor last unwrapped the DEK (RFC 3339): the control plane's
    /// metrics show the time since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_unwrap_at: Option<String>,
    /// Where this agent serves its metrics (cryptfs, key checks), when the control
    /// plane asked for them; Prometheus finds it through the plane's `/agents`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_address: Option<std::net::SocketAddr>,
}

/// Something that happened in the agent that is not a state of its own, such as
/// PostgreSQL restarting after a crash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentEvent {
    /// Counts this instance's events, from 1.
    pub seq: u64,
    /// Who caused it.
    pub who: Actor,
    /// What happened.
    pub what: String,
    /// Why, in words (PostgreSQL's own message when it gave one).
    pub why: String,
}

/// A server's lifecycle state (see docs/operations.md). Written as `{"state": NAME,
/// "reason": TEXT}` (the reason only where the state has one); the control plane
/// flattens those two fields into a server's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "reason", try_from = "StateWire")]
pub enum ServerState {
    /// Being created: directory, DEK, cluster.
    Provisioning,
    /// PostgreSQL accepts connections.
    Ready,
    /// The key is unreachable or refused: PostgreSQL stopped, mount gone, DEK zeroized.
    Inaccessible(String),
    /// Stopped by the DBA.
    Stopped,
    /// Broken in a way the key monitor cannot fix; the reason says what to do.
    Failed(String),
    /// Being deleted.
    Deleting,
    /// What the server does is not known now: its host stopped speaking
    /// (`docs/hosts.md`); the reason says which host and since when.
    Unknown(String),
}

impl ServerState {
    /// The state's name without its reason.
    pub fn name(&self) -> &'static str {
        match self {
            ServerState::Provisioning => "Provisioning",
            ServerState::Ready => "Ready",
            ServerState::Inaccessible(_) => "Inaccessible",
            ServerState::Stopped => "Stopped",
            ServerState::Failed(_) => "Failed",
            ServerState::Deleting => "Deleting",
            ServerState::Unknown(_) => "Unknown",
        }
    }

    /// Why the server is in this state, when that needs saying.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ServerState::Inaccessible(r) | ServerState::Failed(r) | ServerState::Unknown(r) => {
                Some(r)
            }
            _ => None,
        }
    }
}

/// A state as read: its name and reason, or (in server records written before the
/// state was flattened into them) the whole state nested under `state`.
#[derive(Deserialize)]
struct StateWire {
    state: NameOrNested,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NameOrNested {
    Name(String),
    Nested(Box<StateWire>),
}

impl TryFrom<StateWire> for ServerState {
    type Error = String;

    fn try_from(wire: StateWire) -> Result<Self, String> {
        let name = match wire.state {
            NameOrNested::Nested(inner) => return Self::try_from(*inner),
            NameOrNested::Name(name) => name,
        };
        let reason = || {
            wire.reason
                .clone()
                .ok_or_else(|| format!("state {name} without its reason"))
        };
        Ok(match name.as_str() {
            "Provisioning" => ServerState::Provisioning,
            "Ready" => ServerState::Ready,
            "Inaccessible" => ServerState::Inaccessible(reason()?),
            "Stopped" => ServerState::Stopped,
            "Failed" => ServerState::Failed(reason()?),
            "Deleting" => ServerState::Deleting,
            "Unknown" => ServerState::Unknown(reason()?),
            _ => return Err(format!("unknown server state {name}")),
        })
    }
}

/// Who caused an event: the operator, a part of the platform, or PostgreSQL itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Actor {
    /// The DBA, through the API.
    Dba,
    /// The control plane (re-attaching, restarting agents, cleaning up).
    ControlPlane,
    /// The server's node agent (started, exited, killed, could not mount).
    Agent,
    /// PostgreSQL (started, accepting connections, crashed, would not start).
    Postgres,
    /// The agent's key monitor (key checks, re-wraps).
    KeyMonitor,
}

impl Actor {
    /// The name recorded in events' `who`.
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Dba => "dba",
            Actor::ControlPlane => "control-plane",
            Actor::Agent => "agent",
            Actor::Postgres => "postgres",
            Actor::KeyMonitor => "key-monitor",
        }
    }
}

/// The current time in RFC 3339.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
