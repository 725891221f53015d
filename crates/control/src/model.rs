//! What the control plane knows about a server, and its audit events.

use std::path::PathBuf;

use pgcmk_keyprovider::{KeyReference, WrappedDek};
use serde::{Deserialize, Serialize};

/// How a server's DEK is protected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Encryption {
    /// By the platform's own key in the platform vault (the default).
    ServiceManaged,
    /// By the customer's key, reached through the customer's managed identity.
    CustomerManaged {
        /// The user-assigned managed identity (name) the platform acts as.
        identity: String,
        /// The customer's key, versioned (pinned) or versionless (follows rotation).
        key: KeyReference,
    },
}

/// A server's lifecycle state (see docs/operations.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "reason")]
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
        }
    }

    /// Why the server is in this state, when that needs saying.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ServerState::Inaccessible(r) | ServerState::Failed(r) => Some(r),
            _ => None,
        }
    }
}

/// One server as stored by the control plane. Holds only the wrapped DEK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRecord {
    /// Unique id (32 lowercase hex), also the salt for keys derived from the DEK.
    pub id: String,
    /// The DBA's name for it, unique.
    pub name: String,
    /// Where it runs; must equal its key vault's location for customer-managed keys.
    pub location: String,
    /// How its DEK is protected.
    pub encryption: Encryption,
    /// The DEK wrapped by the KEK version recorded inside it.
    pub wrapped_dek: WrappedDek,
    /// Lifecycle state.
    pub state: ServerState,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// The server's directory (ciphertext, mount point, sockets, agent files).
    pub dir: PathBuf,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// A server with its events, as `GET /servers/{name}` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerDetails {
    /// The server.
    pub server: ServerRecord,
    /// Its events, oldest first.
    pub events: Vec<Event>,
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

/// One entry of the control plane's append-only audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the trail, from 1.
    pub seq: u64,
    /// RFC 3339 time.
    pub at: String,
    /// The server concerned.
    pub server_id: String,
    /// Who acted or caused it: an [`Actor`]'s name (`dba`, `control-plane`,
    /// `agent`, `postgres`, `key-monitor`).
    pub who: String,
    /// What happened, e.g. `state Ready -> Inaccessible`, `dek rewrapped`.
    pub what: String,
    /// Why, in words.
    pub why: String,
}

/// A secret carried in an API message (a password, an identity's secret): sent as a
/// plain JSON string, printed by `Debug` as `REDACTED`, zeroized on drop.
#[derive(
    Clone, PartialEq, Eq, Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop,
)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Takes ownership of the secret text.
    pub fn new(text: String) -> Self {
        Self(text)
    }

    /// The secret text. Call sites should be few and obvious.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("REDACTED")
    }
}

/// The current time in RFC 3339.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
