//! `agent.json`'s `ha`: what a node of a highly available server is told (no
//! secrets). Such a node runs Patroni instead of PostgreSQL on its mount
//! (`docs/high-availability.md`); everything else of the agent is the same.

use serde::{Deserialize, Serialize};

/// One node of a highly available server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaNode {
    /// The cluster's name in the consensus store (Patroni's `scope`): the server's id.
    pub scope: String,
    /// This node's name in the cluster (`node-1`, `node-2`, ...).
    pub name: String,
    /// The address PostgreSQL and Patroni's REST API listen on (a host of its own;
    /// distinct loopback addresses on one machine).
    pub address: String,
    /// The TCP port of Patroni's REST API on `address`.
    pub rest_port: u16,
    /// The etcd cluster's client endpoints (`http://HOST:PORT`).
    pub etcd_endpoints: Vec<String>,
    /// The servers' CA certificate (PEM file, readable by the PostgreSQL user):
    /// replication and rewind connections to the other nodes verify their
    /// certificates against it (`sslmode=verify-full`).
    pub ca_file: std::path::PathBuf,
    /// The etcd cluster's CA certificate (PEM file, readable by the PostgreSQL
    /// user): Patroni verifies the members by it, and shows them the client
    /// certificate the start-up handshake brought (`etcd_certificate`). `None` on
    /// nodes made before etcd spoke TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_ca_file: Option<std::path::PathBuf>,
    /// The server was a single server made highly available
    /// (`pgcmk server update --high-availability enabled`): its superuser's
    /// password is its user's alone, so the nodes do without it (Patroni rewinds
    /// as the replication role).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
}

/// The etcd user (and role) of highly available server `scope`'s nodes in the
/// control plane's own etcd cluster: it may read and write the server's keys
/// (Patroni's `/service/SCOPE/`) and no others.
pub fn etcd_user(scope: &str) -> String {
    format!("pgcmk-server-{scope}")
}
