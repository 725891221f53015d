//! Highly available servers after create: their state from their nodes', the
//! nodes' roles as Patroni reports them (REST API, HTTPS on the node's address,
//! [`super::ha_access`]), the connection string that reaches the primary, failover and
//! switchover, and the etcd cluster they need.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Platform;
use crate::etcd::EtcdCluster;
use crate::model::{Actor, NodeDetails, ServerRecord, ServerState};
use crate::Error;

/// How long a new local etcd cluster may take to elect a leader.
const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a highly available operation could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HaError {
    /// The operation is for highly available servers only.
    #[error(
        "server '{0}' is not highly available: create one with `pgcmk server create ... \
         --high-availability`"
    )]
    NotHighlyAvailable(String),
    /// An operation not built for highly available servers yet.
    #[error(
        "server '{server}' is highly available: {what} is not available for highly \
         available servers yet"
    )]
    NotForHighlyAvailable {
        /// The server's name.
        server: String,
        /// What was asked.
        what: &'static str,
    },
    /// No node is primary now.
    #[error("server '{0}' has no primary now (see `pgcmk server show {0}`); retry when it has")]
    NoPrimary(String),
    /// No node can take over.
    #[error(
        "server '{0}' has no standby that can take over now (see `pgcmk server show {0}`); \
         retry when its standby is running"
    )]
    NoCandidate(String),
    /// Patroni refused or failed the request.
    #[error("Patroni on {node} answered {status}: {said}")]
    Patroni {
        /// The node asked.
        node: String,
        /// Its HTTP status.
        status: u16,
        /// What it said.
        said: String,
    },
    /// The local etcd cluster did not come up.
    #[error("the etcd cluster did not answer within {0:?}; see STATE/etcd/m*.log")]
    EtcdNotReady(Duration),
}

/// `POST /servers/{name}/failover`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailoverRequest {
    /// A switchover (the primary hands over cleanly) rather than a failover.
    #[serde(default)]
    pub planned: bool,
}

/// One member as Patroni's `GET /cluster` lists it.
#[derive(Debug, Deserialize)]
struct ClusterMember {
    name: String,
    role: String,
    state: String,
    #[serde(default)]
    lag: Option<serde_json::Number>,
}

#[derive(Debug, Deserialize)]
struct Cluster {
    members: Vec<ClusterMember>,
}

/// `POST /switchover` (planned: the primary hands over cleanly).
#[derive(Serialize)]
struct Switchover<'a> {
    leader: &'a str,
    candidate: &'a str,
}

/// `POST /failover` (the candidate is promoted, whatever the primary does).
#[derive(Serialize)]
struct Failover<'a> {
    candidate: &'a str,
}

impl Platform {
    /// The nodes of a highly available server (none for another server).
    pub(super) fn nodes_of(&self, server: &ServerRecord) -> Result<Vec<ServerRecord>, Error> {
        server
            .nodes
            .iter()
            .map(|id| self.store.server(id))
            .collect()
    }

    /// What Patroni's cluster view says now, asked of each node in turn until one
    /// answers.
    fn cluster_view(&self, nodes: &[ServerRecord]) -> Option<Cluster> {
        let api = self.patroni_api().ok()?;
        nodes.iter().find_map(|node| {
            api.request(reqwest::Method::GET, node, "/cluster", None)?
                .send()
                .ok()?
                .json::<Cluster>()
                .ok()
        })
    }

    /// The node of highly available `server` that is its primary now.
    pub(super) fn primary_node(&self, server: &ServerRecord) -> Result<ServerRecord, Error> {
        let nodes = self.nodes_of(server)?;
        let leader = self
            .cluster_view(&nodes)
            .and_then(|c| c.members.into_iter().find(|m| m.role == "leader"))
            .ok_or_else(|| HaError::NoPrimary(server.name.clone()))?;
        nodes
            .into_iter()
            .find(|n| n.name == leader.name)
            .ok_or_else(|| HaError::NoPrimary(server.name.clone()).into())
    }

    /// The nodes of `server` with their roles now (empty for another server).
    pub fn node_details(&self, server: &ServerRecord) -> Result<Vec<NodeDetails>, Error> {
        let nodes = self.nodes_of(server)?;
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let cluster = self.cluster_view(&nodes);
        Ok(nodes
            .iter()
            .map(|node| {
                let member = cluster
                    .as_ref()
                    .and_then(|c| c.members.iter().find(|m| m.name == node.name));
                NodeDetails {
                    name: node.name.clone(),
                    address: node
                        .node_of
                        .as_ref()
                        .map(|p| p.address.clone())
                        .unwrap_or_default(),
                    port: node.port,
                    host: node.host.clone(),
                    state: node.state.clone(),
                    role: member.map(|m| m.role.clone()),
                    patroni_state: member.map(|m| m.state.clone()),
                    lag_bytes: member.and_then(|m| m.lag.as_ref()).and_then(|l| l.as_u64()),
                    wrapped_by: node.wrapped_dek.kek.to_string(),
                }
            })
            .collect())
    }

    /// A libpq URI that reaches the current primary of a highly available server
    /// whichever node it is: every node's address, `target_session_attrs=read-write`,
    /// TLS verified against the servers' CA (each node's certificate names its address).
    pub(super) fn ha_connection_string(&self, server: &ServerRecord) -> Result<String, Error> {
        let hosts = self
            .nodes_of(server)?
            .iter()
            .filter_map(|n| {
                n.node_of
                    .as_ref()
                    .map(|p| format!("{}:{}", p.address, n.port))
            })
            .collect::<Vec<_>>()
            .join(",");
        Ok(format!(
            "postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write\
             &sslmode=verify-full&sslrootcert={}",
            super::uri_component(&self.servers_ca_file().display().to_string())
        ))
    }

    /// Moves the primary role of server `name` to its standby: a switchover when
    /// `planned` (the primary checkpoints and hands over), else a failover (the
    /// standby is promoted at once). Returns the new primary's node name.
    pub fn failover(&self, name: &str, planned: bool) -> Result<String, Error> {
        let server = self.store.server(name)?;
        let nodes = self.nodes_of(&server)?;
        if nodes.is_empty() {
            return Err(HaError::NotHighlyAvailable(name.into()).into());
        }
        let cluster = self
            .cluster_view(&nodes)
            .ok_or_else(|| HaError::NoPrimary(name.into()))?;
        let leader = cluster
            .members
            .iter()
            .find(|m| m.role == "leader")
            .ok_or_else(|| HaError::NoPrimary(name.into()))?;
        let candidate = cluster
            .members
            .iter()
            .find(|m| m.role != "leader" && matches!(m.state.as_str(), "running" | "streaming"))
            .ok_or_else(|| HaError::NoCandidate(name.into()))?;
        let asked = nodes
            .iter()
            .find(|n| n.name == leader.name)
            .ok_or_else(|| HaError::NoPrimary(name.into()))?;
        let api = self.patroni_api()?;
        let password = self.patroni_api_password(asked)?;
        let post = |path| {
            api.request(reqwest::Method::POST, asked, path, Some(&password))
                .ok_or_else(|| HaError::NoPrimary(name.into()))
        };
        let request = match planned {
            true => post("/switchover")?.json(&Switchover {
                leader: &leader.name,
                candidate: &candidate.name,
            }),
            false => post("/failover")?.json(&Failover {
                candidate: &candidate.name,
            }),
        };
        let answer = request
            .timeout(Duration::from_secs(60))
            .send()
            .map_err(|e| HaError::Patroni {
                node: asked.name.clone(),
                status: 0,
                said: e.to_string(),
            })?;
        let status = answer.status().as_u16();
        let said = answer.text().unwrap_or_default();
        if status != 200 {
            return Err(HaError::Patroni {
                node: asked.name.clone(),
                status,
                said: said.trim().to_string(),
            }
            .into());
        }
        self.event(
            &server,
            Actor::Dba,
            if planned { "switchover" } else { "failover" },
            &format!("{} -> {}: {}", leader.name, candidate.name, said.trim()),
        )?;
        Ok(candidate.name.clone())
    }

    /// The etcd endpoints for a new highly available server: the cluster given to
    /// `pgcmk serve --etcd-endpoints`, else the local one, made and started now
    /// when there is none yet.
    pub(super) fn etcd_endpoints(&self) -> Result<Vec<String>, Error> {
        if let Some(given) = &self.config.etcd_endpoints {
            return Ok(given.clone());
        }
        let endpoints = {
            let mut etcd = self
                .etcd
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let cluster = match etcd.take() {
                Some(c) => c,
                None => EtcdCluster::open_or_make(&self.config.state_dir.join("etcd"))?,
            };
            let cluster = etcd.insert(cluster);
            cluster.supervise(Instant::now(), &self.etcd_ca, |_| false);
            cluster.endpoints()
        };
        self.wait_etcd_ready(&endpoints)?;
        Ok(endpoints)
    }

    /// Waits until one of `endpoints` says it is healthy (a member just started
    /// may take a moment to elect a leader).
    pub(super) fn wait_etcd_ready(&self, endpoints: &[String]) -> Result<(), Error> {
        let deadline = Instant::now() + ETCD_READY_TIMEOUT;
        let client = self.etcd_http()?;
        while !endpoints.iter().any(|e| {
            client
                .get(format!("{e}/health"))
                .send()
                .is_ok_and(|r| r.status().is_success())
        }) {
            if Instant::now() >= deadline {
                return Err(HaError::EtcdNotReady(ETCD_READY_TIMEOUT).into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// Restarts the local etcd cluster's members that died, and renews a member's
    /// certificate when it is due (a supervision pass).
    pub(super) fn supervise_etcd(&self) {
        let mut etcd = self
            .etcd
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cluster) = etcd.as_mut() {
            // Made only when a renewal is due: each is a new client certificate.
            let client = std::cell::OnceCell::new();
            let healthy = |endpoint: &str| {
                client
                    .get_or_init(|| self.etcd_http().ok())
                    .as_ref()
                    .is_some_and(|c| {
                        c.get(format!("{endpoint}/health"))
                            .send()
                            .is_ok_and(|r| r.status().is_success())
                    })
            };
            cluster.supervise(Instant::now(), &self.etcd_ca, healthy);
        }
    }

    /// Sets each highly available server's state from its nodes': Ready while a
    /// node serves; Inaccessible when none serves and one is locked by its key
    /// monitor; else what its first node is. Its wrapped DEK shown is its first
    /// node's (each node re-wraps its own at a rotation).
    pub(super) fn follow_nodes(&self, servers: &[ServerRecord]) -> Result<(), Error> {
        for server in servers.iter().filter(|s| !s.nodes.is_empty()) {
            if matches!(server.state, ServerState::Stopped | ServerState::Deleting) {
                continue;
            }
            let nodes: Vec<ServerRecord> = servers
                .iter()
                .filter(|n| server.nodes.contains(&n.id))
                .cloned()
                .collect();
            let state = if nodes.iter().any(|n| n.state == ServerState::Ready) {
                ServerState::Ready
            } else if let Some(locked) = nodes
                .iter()
                .find(|n| matches!(n.state, ServerState::Inaccessible(_)))
            {
                locked.state.clone()
            } else {
                match nodes.first() {
                    Some(n) => n.state.clone(),
                    None => continue,
                }
            };
            if let Some(first) = nodes.first() {
                if first.wrapped_dek != server.wrapped_dek {
                    self.store
                        .update_server(&server.id, |s| s.wrapped_dek = first.wrapped_dek.clone())?;
                }
            }
            let why = nodes
                .iter()
                .map(|n| format!("{} {}", n.name, n.state.name()))
                .collect::<Vec<_>>()
                .join(", ");
            self.transition(server, state, Actor::ControlPlane, &why)?;
        }
        Ok(())
    }
}
