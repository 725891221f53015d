//! A read replica's source, as `agent.json` says it (no secret): where the
//! source's PostgreSQL listens, the replication role, and the CA its certificate
//! is verified against. The role's password comes in the start-up handshake
//! (`replication_password`) and is kept on the replica's encrypted volume only.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The replication role a source creates for its replicas (one per source; its
/// password is sealed in the control plane's state).
pub const REPLICATION_ROLE: &str = "pgcmk_replication";

/// Where a read replica streams from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSource {
    /// The source server's name (its certificate's name, and for the record).
    pub server: String,
    /// The source's first listen address.
    pub host: IpAddr,
    /// The source's port.
    pub port: u16,
    /// The role the replica connects as ([`REPLICATION_ROLE`]).
    pub role: String,
    /// The servers CA certificate the source's certificate is verified against.
    pub ca_file: PathBuf,
    /// A highly available source's nodes, every one (`host` and `port` are the
    /// first's): the replica connects to whichever accepts writes now
    /// (`target_session_attrs=read-write`), so it follows the primary role across
    /// failovers. Empty for a single server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<SocketAddr>,
}
