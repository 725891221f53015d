//! Following the vault service when it moves: where agents reach it now, handed
//! to each agent in its `agent.json`.

use std::sync::PoisonError;

use pgcmk_agent::contract::invocation::{signal, AgentSignal};
use pgcmk_agent::contract::server_dir::{read_json, write_json_atomic};
use pgcmk_agent::contract::{AgentConfig, ServerDir, VaultEndpoints};

use super::Platform;
use crate::error::IoContext;
use crate::model::{Actor, ServerRecord};
use crate::Error;

impl Platform {
    /// Where agents reach the vault service now.
    pub(super) fn vault_endpoints(&self) -> VaultEndpoints {
        self.vault
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Follows the vault service when it was moved: re-reads its `service.json` (when
    /// the control plane was given its directory) and hands every running agent where
    /// it is now. Agents started later get it in their `agent.json` at spawn.
    pub fn follow_vault_service(&self) -> Result<(), Error> {
        let Some(service_dir) = &self.config.vault_service_dir else {
            return Ok(());
        };
        let now = VaultEndpoints::read(service_dir)?;
        {
            let mut held = self.vault.write().unwrap_or_else(PoisonError::into_inner);
            if *held != now {
                tracing::info!(
                    "the vault service moved: identity endpoint {} -> {}",
                    held.identity_endpoint,
                    now.identity_endpoint
                );
                *held = now;
            }
        }
        // Every pass, not only on a change: an agent spawned while the address changed
        // is brought up to date by the next one.
        let running: Vec<(String, u32)> = self
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|(id, supervised)| Some((id.clone(), supervised.agent()?.pid())))
            .collect();
        for (id, pid) in running {
            match self.store.server(&id) {
                Ok(server) => self.hand_vault_address(&server, Some(pid)),
                Err(e) => tracing::error!(server = %id, "following the vault service: {e}"),
            }
        }
        Ok(())
    }

    /// Writes where the vault service is now into the server's `agent.json`; when
    /// that changed it and the agent runs (`running`), asks the agent to check its key
    /// now (SIGHUP), which re-reads it. A failure is logged: an agent reports a
    /// configuration it cannot use itself, and the next pass of
    /// [`Platform::follow_vault_service`] tries again.
    pub(super) fn hand_vault_address(&self, record: &ServerRecord, running: Option<u32>) {
        if record.host.is_some() {
            // Its host writes the `agent.json` the plane assigns (docs/hosts.md).
            return;
        }
        let handed = (|| {
            let path = ServerDir::new(&record.dir).agent_config();
            let mut config: AgentConfig = read_json(&path)?;
            let vault = self.vault_endpoints();
            if config.kek.vault == vault {
                return Ok(());
            }
            config.kek.vault = vault.clone();
            write_json_atomic(&path, &config)?;
            if let Some(pid) = running {
                signal(pid, AgentSignal::CheckKeyNow).ctx(|| "signalling the agent")?;
                self.event(
                    record,
                    Actor::ControlPlane,
                    "vault address refreshed",
                    &format!(
                        "the agent reaches the vault service at {} from now on",
                        vault.identity_endpoint
                    ),
                )?;
            }
            Ok::<_, Error>(())
        })();
        if let Err(e) = handed {
            tracing::error!(server = %record.name, "handing the agent the vault service's address: {e}");
        }
    }
}
