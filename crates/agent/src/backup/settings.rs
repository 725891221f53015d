//! Backup settings changed after creation (`pgcmk server update --backup-*`): the
//! control plane writes them to `agent.json` and asks for a key check; at each
//! check the agent reads them and, when they differ from its own, applies them to
//! the serving server's backups without a restart, so that no backup under way is
//! lost and no connection dropped.

use super::Backups;
use crate::contract::server_dir::read_json;
use crate::contract::{Actor, AgentConfig, ServerDir};
use crate::report::Reporter;

/// Applies the backup settings of `dir`'s `agent.json` when they differ from
/// `config`'s: to `backups` when the server serves, else from its next mount.
pub(crate) fn follow(
    dir: &ServerDir,
    config: &mut AgentConfig,
    backups: Option<&mut Backups>,
    reporter: &Reporter,
) {
    let Some(current) = config.backup.as_mut() else {
        return;
    };
    let wanted = match read_json::<AgentConfig>(&dir.agent_config()) {
        Ok(written) => match written.backup {
            Some(backup) => backup.settings(),
            None => return,
        },
        Err(e) => return tracing::warn!("reading the backup settings: {e}; retrying"),
    };
    if wanted == current.settings() {
        return;
    }
    if let Some(backups) = backups {
        if let Err(e) = backups.apply_settings(wanted) {
            return reporter.event(
                Actor::Agent,
                "backup settings not applied",
                &format!("{wanted}: {e}"),
            );
        }
    }
    current.apply(wanted);
    reporter.event(Actor::Agent, "backup settings applied", &wanted.to_string());
}
