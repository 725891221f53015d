//! Starting, re-attaching to and stopping a server's node agent.

use std::fs;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use pgcmk_agent::contract::invocation::{running_instance, spawn_serving};
use pgcmk_agent::contract::{AgentConfig, Handshake, KekAccess, ServerDir};

use super::create::{hex_id, FirstStart};
use super::remote_agent::{PendingStart, RemoteAgent, Run};
use super::Platform;
use crate::error::IoContext;
use crate::model::{Actor, ServerRecord, ServerState};
use crate::node_agent::{AgentProcess, NodeAgent};
use crate::supervisor::Supervised;
use crate::Error;

/// How long an agent that keeps reporting may take to stop PostgreSQL, unmount
/// and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an agent asked to stop may go without a report before it is killed.
const UNANSWERED_STOP: Duration = Duration::from_secs(10);

impl Platform {
    pub(super) fn agent_config(&self, record: &ServerRecord, kek: KekAccess) -> AgentConfig {
        AgentConfig {
            server_id: record.id.clone(),
            port: record.port,
            listen_addresses: record.listen_addresses.clone(),
            kek,
            interval_ms: u64::try_from(self.config.interval.as_millis()).unwrap_or(u64::MAX),
            grace_ms: u64::try_from(self.config.grace.as_millis()).unwrap_or(u64::MAX),
            backup: Some(self.backup_config(&record.id)),
            restore: None,
            replica: None,
            ha: None,
        }
    }

    /// The start-up handshake of the server's agent: the identity's secret, a new
    /// TLS certificate and key for its listen addresses, and for a new server the
    /// superuser's initial password. Built for one start, locally or on a host.
    pub(super) fn start_handshake(
        &self,
        record: &ServerRecord,
        first_start: Option<&FirstStart>,
    ) -> Result<Handshake, Error> {
        let (storage_key, geo_storage_key) = self.storage_keys(record)?;
        Ok(Handshake {
            initial_password: first_start.map(|f| f.password.clone()),
            source_identity_secret: first_start.and_then(|f| f.source_identity_secret.clone()),
            geo_identity_secret: self.geo_identity_secret(record)?,
            storage_key,
            geo_storage_key,
            // A node of a highly available server: at its first start; a read
            // replica: at every start (its source's role).
            replication_password: match first_start.and_then(|f| f.replication_password.clone()) {
                Some(node_first_start) => Some(node_first_start),
                None => self.replication_password(record)?,
            },
            tls: Some(self.servers_ca.issue(record)?),
            // A node of a highly available server: its way into etcd, and the
            // password its Patroni's REST API asks (docs/high-availability.md).
            etcd_tls: self.etcd_client_tls(record)?,
            patroni_api_password: self.new_patroni_api_password(record)?,
            etcd_password: self.etcd_password(record)?,
            ..Handshake::identity_only(self.identity_secret(record)?)
        })
    }

    /// Starts the server's agent: here, `pgcmk agent --server-dir DIR --instance
    /// NAME` ([`spawn_serving`]) with the [`Platform::start_handshake`] on its
    /// stdin; on its host, by asking for a new instance in the host's next
    /// heartbeat answer, which carries the handshake (`docs/hosts.md`).
    pub(super) fn spawn_agent_process(
        &self,
        record: &ServerRecord,
        first_start: Option<&FirstStart>,
    ) -> Result<Box<dyn NodeAgent>, Error> {
        let instance = hex_id()?;
        if let Some(host) = &record.host {
            let pending = PendingStart {
                first_start: first_start.cloned(),
            };
            self.relay.start(&record.id, host, instance, pending);
            return Ok(Box::new(self.remote_agent(&record.id, host)));
        }
        let handshake = self.start_handshake(record, first_start)?.to_bytes()?;
        self.hand_vault_address(record, None);
        let dir = ServerDir::new(&record.dir);
        let child = spawn_serving(
            &self.config.agent_program,
            &dir,
            &instance,
            self.config.agent_observability,
            &handshake,
        )
        .ctx(|| format!("starting {} agent", self.config.agent_program.display()))?;
        Ok(Box::new(AgentProcess::spawned(child, instance, dir)))
    }

    /// The agent of server `id` on `host`, seen through the host's reports.
    pub(super) fn remote_agent(&self, id: &str, host: &str) -> RemoteAgent {
        RemoteAgent::new(id, host, self.relay.clone(), self.host_presence.clone())
    }

    /// Starts the server's agent and supervises it from now on.
    pub(super) fn spawn_agent(
        &self,
        record: &ServerRecord,
        first_start: Option<&FirstStart>,
    ) -> Result<(), Error> {
        // Held while spawning, so a supervision pass cannot restart it meanwhile.
        let mut agents = self.agents.lock().unwrap_or_else(PoisonError::into_inner);
        let agent = self.spawn_agent_process(record, first_start)?;
        let supervised = match first_start {
            Some(_) => Supervised::provisioning(agent, Instant::now()),
            None => Supervised::spawned(agent, Instant::now()),
        };
        agents.insert(record.id.clone(), supervised);
        Ok(())
    }

    /// Re-attaches to the server's agent if it still runs, else starts one. An
    /// agent on a host is taken as its host reports it.
    pub(super) fn attach_or_spawn(&self, record: &ServerRecord) -> Result<(), Error> {
        if let Some(host) = &record.host {
            self.relay.keep(&record.id, host, Run::Serving);
            let agent = Box::new(self.remote_agent(&record.id, host));
            self.agents
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    record.id.clone(),
                    // Whether it still provisions is its host's to know.
                    Supervised::attached(agent, Instant::now(), false),
                );
            return Ok(());
        }
        let dir = ServerDir::new(&record.dir);
        let running = fs::read_to_string(dir.agent_pid())
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .and_then(|pid| Some((pid, running_instance(pid, dir.root())?)));
        match running {
            Some((pid, instance)) => {
                self.agents
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(
                        record.id.clone(),
                        Supervised::attached(
                            Box::new(AgentProcess::attached(pid, instance, dir.clone())),
                            Instant::now(),
                            // Still at its first start: its death is final.
                            dir.provisioning_was_cut_short(),
                        ),
                    );
                self.event(
                    record,
                    Actor::ControlPlane,
                    "agent re-attached",
                    &format!("agent pid {pid} still running"),
                )?;
                self.hand_vault_address(record, Some(pid));
                Ok(())
            }
            // Only the create's first start provisions: a restart would start
            // whatever it left.
            None if !dir.is_provisioned() => {
                let why = "its first start ended before the server was provisioned \
                           (the control plane stopped during the create): it holds no \
                           usable cluster; delete it with `pgcmk server delete` and create \
                           it again";
                self.transition(
                    record,
                    ServerState::Failed(why.into()),
                    Actor::ControlPlane,
                    why,
                )
            }
            None => {
                self.event(
                    record,
                    Actor::ControlPlane,
                    "agent started",
                    "the server should run and had no agent",
                )?;
                self.spawn_agent(record, None)
            }
        }
    }

    /// Stops supervising the server: asks its agent (if it runs) to stop, waits
    /// until it has exited, and detaches a mount a killed agent left.
    ///
    /// An agent that stops reports every second while it shuts PostgreSQL down and
    /// unmounts, and gets [`STOP_TIMEOUT`] for it. One whose reports stopped for
    /// [`UNANSWERED_STOP`] (plus the relay's delay for an agent on a host,
    /// [`NodeAgent::report_delay`]) — hung, or stopped with SIGSTOP — is not answering and
    /// is killed then: waiting longer only holds the DBA up. Its PostgreSQL gets
    /// SIGQUIT from the kernel as its parent dies (crash-like, recovered at the
    /// next start) and its mount is detached here.
    pub(super) fn stop_agent(&self, id: &str) {
        let supervised = self
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        if let Some(mut agent) = supervised.and_then(|mut s| s.take_agent()) {
            agent.terminate();
            let started = Instant::now();
            let mut reports = ReportProgress::new(agent.as_ref(), started);
            while agent.exit().is_none() {
                let now = Instant::now();
                if let Some(why) = agent.unreachable(now) {
                    // Its host keeps being asked to stop it when it speaks again.
                    tracing::warn!("the agent's stop is not confirmed: {why}");
                    break;
                }
                // An agent on a host reports through its heartbeats: later.
                let unanswered = reports.silent_since(agent.as_ref(), now)
                    >= UNANSWERED_STOP + agent.report_delay();
                if unanswered || now >= started + STOP_TIMEOUT {
                    tracing::error!(
                        pid = agent.pid(),
                        "agent did not stop ({}); killing it",
                        if unanswered {
                            "it stopped reporting"
                        } else {
                            "too slow"
                        }
                    );
                    agent.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            agent.reap();
        }
        let local_dir = self
            .store
            .server(id)
            .ok()
            .filter(|server| server.host.is_none())
            .map(|server| ServerDir::new(server.dir));
        if let Some(dir) = local_dir {
            dir.detach_stale_mount();
        }
    }
}

/// Whether an agent's reports still come: the time of the last change of their
/// sequence number.
struct ReportProgress {
    seq: Option<u64>,
    changed_at: Instant,
}

impl ReportProgress {
    fn new(agent: &dyn NodeAgent, now: Instant) -> Self {
        Self {
            seq: agent.report().map(|r| r.seq),
            changed_at: now,
        }
    }

    /// How long no new report has come, at `now`.
    fn silent_since(&mut self, agent: &dyn NodeAgent, now: Instant) -> Duration {
        let seq = agent.report().map(|r| r.seq);
        if seq != self.seq {
            self.seq = seq;
            self.changed_at = now;
        }
        now - self.changed_at
    }
}
