//! A server's directory on a host ([docs/hosts.md](../../../docs/hosts.md)): what
//! the host daemon writes there from the plane's assignment — `agent.json` naming
//! only files of the host, the public files it names, the wrapped DEK and
//! repository key when the directory has none — and what its agent re-wrapped
//! there since, which the host relays back until the plane's assignment carries it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pgcmk_agent::contract::server_dir::{read_json, write_json_atomic};
use pgcmk_agent::contract::{AgentConfig, ServerDir};
use pgcmk_keyprovider::{KeyVersionId, WrappedDek};

use crate::assignments::{Assignment, HostedFiles};

/// The servers CA certificate in a server's directory on a host.
const SERVERS_CA: &str = "servers-ca.pem";
/// The etcd cluster's CA certificate there.
const ETCD_CA: &str = "etcd-ca.pem";

/// The key versions that wrap a server's keys in the plane's last assignment:
/// what the host compares its directory's files with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    dek: KeyVersionId,
    backup_key: Option<KeyVersionId>,
}

impl Assigned {
    /// What `assignment` says wraps its server's keys.
    pub fn of(assignment: &Assignment) -> Self {
        Self {
            dek: assignment.wrapped_dek.kek.clone(),
            backup_key: assignment
                .files
                .wrapped_backup_key
                .as_ref()
                .map(|w| w.kek.clone()),
        }
    }

    /// The wrapped DEK and repository key in `dir` that another version wraps than
    /// the assigned ones (its agent re-wrapped them), to relay to the plane.
    pub fn rewrapped(&self, dir: &ServerDir) -> (Option<WrappedDek>, Option<WrappedDek>) {
        let newer = |file: &Path, assigned: &KeyVersionId| {
            read_json::<WrappedDek>(file)
                .ok()
                .filter(|w| &w.kek != assigned)
        };
        let backup_key = self
            .backup_key
            .as_ref()
            .and_then(|assigned| newer(&dir.wrapped_backup_key(), assigned));
        (newer(&dir.wrapped_dek(), &self.dek), backup_key)
    }
}

/// Writes the server's directory for a start: the assigned public files, its
/// `agent.json` naming them, and the wrapped DEK and repository key only when the
/// directory has none (its agent re-wraps them itself).
pub fn write(dir: &ServerDir, assignment: &Assignment) -> std::io::Result<()> {
    if !dir.root().exists() {
        fs::create_dir(dir.root())?;
        fs::set_permissions(dir.root(), fs::Permissions::from_mode(0o711))?;
    }
    let io = |e: pgcmk_agent::Error| std::io::Error::other(e.to_string());
    let files = &assignment.files;
    for (name, pem) in [(SERVERS_CA, &files.servers_ca), (ETCD_CA, &files.etcd_ca)] {
        if let Some(pem) = pem {
            // Read by PostgreSQL and Patroni (another user): public.
            pgcmk_hostkeys::files::write_atomic(&dir.root().join(name), pem.as_bytes(), 0o644)
                .map_err(std::io::Error::other)?;
        }
    }
    let config = localized(&assignment.agent_config, dir, files);
    write_json_atomic(&dir.agent_config(), &config).map_err(io)?;
    if !dir.wrapped_dek().exists() {
        write_json_atomic(&dir.wrapped_dek(), &assignment.wrapped_dek).map_err(io)?;
    }
    if let Some(key) = &files.wrapped_backup_key {
        if !dir.wrapped_backup_key().exists() {
            write_json_atomic(&dir.wrapped_backup_key(), key).map_err(io)?;
        }
    }
    Ok(())
}

/// `config` naming the files `files` puts into `dir` instead of the plane's paths.
fn localized(config: &AgentConfig, dir: &ServerDir, files: &HostedFiles) -> AgentConfig {
    let mut config = config.clone();
    if let Some(ha) = config.ha.as_mut() {
        if files.servers_ca.is_some() {
            ha.ca_file = dir.root().join(SERVERS_CA);
        }
        if files.etcd_ca.is_some() {
            ha.etcd_ca_file = Some(dir.root().join(ETCD_CA));
        }
    }
    let owner = config.backup.as_mut().and_then(|b| b.owner.as_mut());
    if let (Some(owner), Some(_)) = (owner, &files.wrapped_backup_key) {
        // The node keeps its copy of the server's repository key itself.
        owner.dir = dir.root().to_path_buf();
    }
    config
}
