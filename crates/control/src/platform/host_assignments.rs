//! Servers on hosts ([docs/hosts.md](../../../../docs/hosts.md)): placing a new
//! server on an Online host, the assignments a host's heartbeat is answered with
//! (each start's handshake built for that answer only), and removing a server
//! from its host.

use std::time::{Duration, Instant};

use pgcmk_agent::contract::server_dir::read_json;
use pgcmk_agent::contract::{AgentConfig, ServerDir};
use pgcmk_keyprovider::WrappedDek;

use crate::assignments::{Assignment, DesiredRun, HostReport, HostedFiles};
use crate::error::IoContext;
use crate::hosts::{HostError, HostRecord};
use crate::model::{SecretString, ServerRecord, ServerState};
use crate::Error;

use super::create::CreateServer;
use super::hosts::AdmittedHost;
use super::remote_agent::Run;
use super::Platform;

/// How long a delete waits for the host to remove the server's directory.
const REMOVAL_WAIT: Duration = Duration::from_secs(30);

impl Platform {
    /// Refuses to place `req` on `host` unless the host is enrolled and Online;
    /// returns the host's record.
    pub(super) fn check_placement(
        &self,
        req: &CreateServer,
        host: &str,
    ) -> Result<HostRecord, Error> {
        let Some(record) = self.store.host(host)? else {
            return Err(HostError::NotFound(host.to_string()).into());
        };
        match self.host_presence.silence(host, Instant::now()) {
            None => Ok(record),
            Some(why) => {
                tracing::info!(server = %req.name, host, "not placed: the host {why}");
                Err(HostError::NotOnline {
                    host: host.to_string(),
                    why,
                }
                .into())
            }
        }
    }

    /// Refuses an operation on `server` when it runs on a host that does not speak
    /// now (503 "host unavailable": what it does there is not known).
    pub(super) fn require_host_online(&self, server: &ServerRecord) -> Result<(), Error> {
        let Some(host) = &server.host else {
            return Ok(());
        };
        match self.host_presence.silence(host, Instant::now()) {
            None => Ok(()),
            Some(why) => Err(HostError::Unavailable {
                server: server.name.clone(),
                host: host.clone(),
                why,
            }
            .into()),
        }
    }

    /// Refuses `what` for a server on a host, or a highly available one whose
    /// nodes run on hosts (not built for hosts yet).
    pub(super) fn local_only(
        &self,
        server: &ServerRecord,
        what: &'static str,
    ) -> Result<(), Error> {
        let host = match &server.host {
            Some(host) => Some(host.clone()),
            None => self.nodes_of(server)?.into_iter().find_map(|n| n.host),
        };
        match host {
            Some(host) => Err(HostError::NotOnHostsYet {
                server: server.name.clone(),
                host,
                what,
            }
            .into()),
            None => Ok(()),
        }
    }

    /// The `agent.json` of `server`'s agent: in its directory here, or as the plane
    /// keeps it for the server's host (`None`: there is none).
    pub(super) fn agent_config_of(&self, server: &ServerRecord) -> Option<AgentConfig> {
        match &server.host {
            Some(_) => self.store.assigned_config(&server.id).ok().flatten(),
            None => read_json(&ServerDir::new(&server.dir).agent_config()).ok(),
        }
    }

    /// Refuses an operation on `server` when it, or one of its nodes, runs on a
    /// host that does not speak now (see [`Platform::require_host_online`]).
    pub(super) fn require_hosts_online(&self, server: &ServerRecord) -> Result<(), Error> {
        self.require_host_online(server)?;
        self.nodes_of(server)?
            .iter()
            .try_for_each(|node| self.require_host_online(node))
    }

    /// A host's heartbeat: takes in what it relays of its servers, counts it as
    /// alive (after its reports, so a server never looks stale for a moment), and
    /// answers with its assignments.
    pub(super) fn host_assignments(
        &self,
        host: &AdmittedHost,
        report: &HostReport,
    ) -> Result<Vec<Assignment>, Error> {
        let name = host.name();
        self.host_presence.check(name, &report.instance)?;
        self.relay.take(name, &report.servers);
        self.take_rewrapped(name, &report.servers);
        self.host_presence
            .heartbeat(name, &report.instance, Instant::now())?;
        let mut assignments = Vec::new();
        for server in self.store.servers()? {
            if server.host.as_deref() != Some(name) {
                continue;
            }
            let Some((run, pending)) = self.relay.desired(&server.id, name) else {
                continue;
            };
            let Some(agent_config) = self.store.assigned_config(&server.id)? else {
                continue;
            };
            let handshake = match pending {
                Some(pending) => Some(self.handshake_text(&server, pending.first_start.as_ref())?),
                None => None,
            };
            let files = match run {
                // Its directory is being removed: nothing is written there.
                DesiredRun::Deleted => HostedFiles::default(),
                _ => self.hosted_files(&server, &agent_config),
            };
            assignments.push(Assignment {
                server_id: server.id.clone(),
                agent_config,
                wrapped_dek: server.wrapped_dek.clone(),
                files,
                run,
                handshake,
            });
        }
        Ok(assignments)
    }

    /// The public files the agent of `config` reads, for its host to keep in the
    /// server's directory: a highly available node's CA certificates and its
    /// server's wrapped repository key (the plane's copy). One that cannot be read
    /// is left out (and logged): the host's other servers are still answered.
    fn hosted_files(&self, server: &ServerRecord, config: &AgentConfig) -> HostedFiles {
        let Some(ha) = &config.ha else {
            return HostedFiles::default();
        };
        let pem = |file: &std::path::Path| {
            std::fs::read_to_string(file).ctx(|| format!("reading {}", file.display()))
        };
        let owner = config.backup.as_ref().and_then(|b| b.owner.as_ref());
        let etcd_ca = ha.etcd_ca_file.as_deref().map(pem);
        let backup_key = owner.map(|owner| {
            read_json::<WrappedDek>(&ServerDir::new(&owner.dir).wrapped_backup_key())
                .map_err(Error::from)
        });
        HostedFiles {
            servers_ca: sent(server, "the servers CA", pem(&ha.ca_file)),
            etcd_ca: etcd_ca.and_then(|pem| sent(server, "the etcd CA", pem)),
            wrapped_backup_key: backup_key.and_then(|key| sent(server, "the repository key", key)),
        }
    }

    /// The start-up handshake as the text the host writes on the agent's stdin.
    fn handshake_text(
        &self,
        server: &ServerRecord,
        first_start: Option<&super::create::FirstStart>,
    ) -> Result<SecretString, Error> {
        let bytes = self.start_handshake(server, first_start)?.to_bytes()?;
        // The handshake is JSON, so text; the copy is zeroized with the answer.
        let text = std::str::from_utf8(bytes.expose_secret())
            .map_err(|_| Error::Aborted("a handshake was not text".into()))?;
        Ok(SecretString::new(text.to_string()))
    }

    /// After a plane restart: a stopped or deleted server on a host stays so.
    pub(super) fn keep_remote_at_rest(&self, server: &ServerRecord) {
        if let Some(host) = &server.host {
            let run = match server.state {
                ServerState::Deleting => Run::Deleted,
                _ => Run::Stopped,
            };
            self.relay.keep(&server.id, host, run);
        }
    }

    /// Asks the server's host to remove its directory (its agent was stopped),
    /// waits a while for that, and forgets the server once the host confirms; a
    /// host that does not confirm in time leaves the server Deleting, finished by
    /// supervision when it does.
    pub(super) fn remove_from_host(&self, server: &ServerRecord) {
        self.relay.set_run(&server.id, Run::Deleted);
        self.relay.unreport(&server.id);
        let _ = self
            .store
            .update_server(&server.id, |s| s.state = ServerState::Deleting);
        let deadline = Instant::now() + REMOVAL_WAIT;
        // Finished here or by a supervision pass, whichever sees the host's word
        // first: the row is gone either way.
        while self.store.server(&server.id).is_ok() && Instant::now() < deadline {
            if let Err(e) = self.finish_remote_delete_if_removed(server) {
                tracing::error!(server = %server.name, "removing it from its host: {e}");
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Forgets a deleted server once its host no longer lists it (once: the
    /// caller that takes the host's word removes the row).
    pub(super) fn finish_remote_delete_if_removed(
        &self,
        server: &ServerRecord,
    ) -> Result<(), Error> {
        if !self.relay.take_removed(&server.id) {
            return Ok(());
        }
        let removed = self
            .remove_backups(&server.id)
            .and_then(|()| self.store.remove_server(&server.id));
        if let Err(e) = removed {
            // Tried again once the host reports again.
            if let Some(host) = &server.host {
                self.relay.keep(&server.id, host, Run::Deleted);
            }
            return Err(e);
        }
        self.event(
            server,
            crate::model::Actor::ControlPlane,
            "server deleted",
            &format!(
                "host '{}' removed its directory; state removed",
                server.host.as_deref().unwrap_or_default()
            ),
        )?;
        Ok(())
    }
}

/// What `read` gave, or `None` once its failure is logged: `what` of `server` is
/// not sent to its host.
fn sent<T>(server: &ServerRecord, what: &str, read: Result<T, Error>) -> Option<T> {
    read.inspect_err(|e| tracing::warn!(server = %server.name, "not sent to its host: {what}: {e}"))
        .ok()
}
