//! What the control plane knows about a server, and its audit events.

use std::net::IpAddr;
use std::path::PathBuf;

use pgcmk_keyprovider::{KeyReference, WrappedDek};
use serde::{Deserialize, Serialize};

pub use pgcmk_agent::contract::{now_rfc3339, Actor, ServerState};

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
    /// Lifecycle state: `"state"` and, where it has one, `"reason"` beside the other
    /// fields.
    #[serde(flatten)]
    pub state: ServerState,
    /// PostgreSQL's TCP port.
    pub port: u16,
    /// The addresses PostgreSQL listens on, over TLS only (default 127.0.0.1).
    #[serde(default = "pgcmk_agent::contract::config::loopback_only")]
    pub listen_addresses: Vec<IpAddr>,
    /// For a read replica: the id of the server it streams from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_of: Option<String>,
    /// The server's directory (ciphertext, mount point, sockets, agent files).
    pub dir: PathBuf,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// For a highly available server: its nodes' ids, in order. Such a server has
    /// no agent of its own; its nodes do, and its state follows theirs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// For a node of a highly available server: which server, and where it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_of: Option<NodeOf>,
    /// The enrolled host its agent runs on (`docs/hosts.md`); absent: the control
    /// plane's own machine. On a host, `dir` is relative to the host's state
    /// directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Where a node of a highly available server belongs and runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeOf {
    /// The server's id.
    pub server_id: String,
    /// The address its PostgreSQL and Patroni listen on (a host of its own).
    pub address: String,
    /// Patroni's REST port on `address`.
    pub rest_port: u16,
}

/// A node of a highly available server as `server show` lists it: its record, and
/// what Patroni says of it now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDetails {
    /// The node's name (`SERVER-node-N`).
    pub name: String,
    /// Its address and PostgreSQL port.
    pub address: String,
    /// PostgreSQL's TCP port on `address`.
    pub port: u16,
    /// The enrolled host it runs on (`docs/hosts.md`); none: the control
    /// plane's machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The node's own state (its agent's: key, mount, PostgreSQL).
    #[serde(flatten)]
    pub state: ServerState,
    /// `leader`, `sync_standby`, `replica` as Patroni says; `None` when Patroni
    /// does not answer (the node is down, or locked).
    pub role: Option<String>,
    /// Patroni's state of its PostgreSQL (`running`, `starting`, ...).
    pub patroni_state: Option<String>,
    /// Replication lag in bytes behind the leader (standbys).
    pub lag_bytes: Option<u64>,
    /// The KEK version that wraps this node's own DEK.
    pub wrapped_by: String,
}

/// A server with its events, as `GET /servers/{name}` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerDetails {
    /// The server.
    pub server: ServerRecord,
    /// Its events, oldest first.
    pub events: Vec<Event>,
    /// A highly available server's nodes, with their roles now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeDetails>,
    /// How to connect to it (libpq URI, TLS verified against the servers CA).
    #[serde(default)]
    pub connection_string: String,
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(state: serde_json::Value) -> serde_json::Value {
        let mut v = json!({
            "id": "0".repeat(32),
            "name": "orders",
            "location": "local",
            "encryption": { "kind": "service-managed" },
            "wrapped_dek": {
                "kek": format!("https://127.0.0.1:1/keys/k/{}", "a".repeat(32)),
                "algorithm": "RSA-OAEP-256",
                "ciphertext": "AAAA",
            },
            "port": 5432,
            "dir": "/tmp/x",
            "created_at": "2026-12-07T00:00:00Z",
        });
        for (k, value) in state.as_object().unwrap() {
            v[k] = value.clone();
        }
        v
    }

    #[test]
    fn the_state_and_its_reason_sit_beside_the_other_fields() {
        let r: ServerRecord = serde_json::from_value(record(
            json!({ "state": "Inaccessible", "reason": "key disabled" }),
        ))
        .unwrap();
        assert_eq!(r.state, ServerState::Inaccessible("key disabled".into()));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["state"], "Inaccessible");
        assert_eq!(v["reason"], "key disabled");
        let ready = ServerRecord {
            state: ServerState::Ready,
            ..r
        };
        let v = serde_json::to_value(&ready).unwrap();
        assert_eq!(v["state"], "Ready");
        assert!(v.get("reason").is_none(), "{v}");
    }

    #[test]
    fn records_stored_with_the_nested_state_still_read() {
        let r: ServerRecord = serde_json::from_value(record(
            json!({ "state": { "state": "Failed", "reason": "port taken" } }),
        ))
        .unwrap();
        assert_eq!(r.state, ServerState::Failed("port taken".into()));
        let r: ServerRecord =
            serde_json::from_value(record(json!({ "state": { "state": "Stopped" } }))).unwrap();
        assert_eq!(r.state, ServerState::Stopped);
    }

    #[test]
    fn a_state_that_needs_a_reason_is_refused_without_one() {
        let e = serde_json::from_value::<ServerRecord>(record(json!({ "state": "Failed" })))
            .unwrap_err();
        assert!(e.to_string().contains("without its reason"), "{e}");
    }
}
