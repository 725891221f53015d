//! A rolling restart of a highly available server's nodes with a change to their
//! `agent.json` (which an agent reads at start), one node at a time, so that one
//! node serves throughout: each standby, then — after a planned switchover to a
//! node already changed — the old primary; each node is waited for in its role
//! (synchronous standby) before the next. A node whose configuration already has
//! the change is skipped, so a run cut short is finished by the same call.

use pgcmk_agent::contract::server_dir::{read_json, write_json_atomic};
use pgcmk_agent::contract::{AgentConfig, ServerDir};

use super::ha_update::SYNC_STANDBY;
use super::Platform;
use crate::model::{ServerRecord, ServerState};
use crate::Error;

impl Platform {
    /// Applies `change` to the `agent.json` of every node of `server` and
    /// restarts them one by one (see the module's documentation).
    pub(super) fn roll_nodes(
        &self,
        server: &ServerRecord,
        change: impl Fn(&mut AgentConfig),
    ) -> Result<(), Error> {
        let primary = self.primary_node(server)?;
        let mut pending = Vec::new();
        for node in self.nodes_of(server)? {
            let config: AgentConfig = read_json(&ServerDir::new(&node.dir).agent_config())?;
            let mut changed = config.clone();
            change(&mut changed);
            if changed != config {
                pending.push((node, changed));
            }
        }
        // The standbys first: the primary restarts last, after handing over.
        pending.sort_by_key(|(n, _)| n.id == primary.id);
        for (node, config) in &pending {
            if self.primary_node(server)?.id == node.id {
                self.hand_over(server)?;
            }
            self.stop_agent(&node.id);
            write_json_atomic(&ServerDir::new(&node.dir).agent_config(), config)?;
            let restarting = self.store.update_server(&node.id, |s| {
                s.state = ServerState::Provisioning;
            })?;
            self.spawn_agent(&restarting, None)?;
            self.wait_role(server, node, SYNC_STANDBY)?;
        }
        Ok(())
    }
}
