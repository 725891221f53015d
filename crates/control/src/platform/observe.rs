//! What the control plane's metrics read about each server at a scrape: its state,
//! when its agent last unwrapped the DEK, and where its agent serves metrics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::PoisonError;

use pgcmk_agent::contract::server_dir::read_json;
use pgcmk_agent::contract::{AgentStatus, ServerDir};

use super::Platform;
use crate::model::ServerState;
use crate::Error;

/// One server as the metrics show it.
#[derive(Clone, Debug)]
pub struct ServerObservation {
    /// Its name.
    pub name: String,
    /// Its state in the store.
    pub state: ServerState,
    /// When its agent last unwrapped the DEK (RFC 3339), as its last report says.
    pub last_unwrap_at: Option<String>,
    /// Where its running agent serves metrics: only an agent that is supervised now,
    /// reporting as that very process (never an address a dead agent left behind).
    pub agent_metrics: Option<SocketAddr>,
}

impl Platform {
    /// Every server, observed now.
    pub fn observe_servers(&self) -> Result<Vec<ServerObservation>, Error> {
        let servers = self.store.servers()?;
        // Taken and let go at once: supervision needs the lock, the reads below take time.
        let live_pids: HashMap<String, u32> = self
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|(id, s)| Some((id.clone(), s.agent()?.pid())))
            .collect();
        Ok(servers
            .into_iter()
            .map(|server| {
                let report = read_json::<AgentStatus>(&ServerDir::new(&server.dir).status()).ok();
                let live_pid = live_pids.get(&server.id).copied();
                let agent_metrics = report
                    .as_ref()
                    .filter(|r| Some(r.agent_pid) == live_pid)
                    .and_then(|r| r.metrics_address);
                ServerObservation {
                    name: server.name,
                    state: server.state,
                    last_unwrap_at: report.and_then(|r| r.last_unwrap_at),
                    agent_metrics,
                }
            })
            .collect())
    }
}
