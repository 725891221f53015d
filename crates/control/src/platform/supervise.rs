//! Supervision: taking the agents' reports into the store, restarting dead
//! agents with back-off, and waiting for a server to become Ready.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use pgcmk_agent::backoff::describe_delay;
use pgcmk_agent::contract::server_dir::read_json;
use pgcmk_agent::contract::{AgentStatus, ServerDir};
use pgcmk_keyprovider::WrappedDek;

use super::Platform;
use crate::model::{Actor, Event, ServerRecord, ServerState};
use crate::node_agent::NodeAgent;
use crate::supervisor::Reading;
use crate::Error;

/// How long a new or restarted server may take to become Ready (a new one
/// provisions its volume and cluster first).
pub(super) const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a restored server may take to be Ready: its agent's own limits (the
/// restore, then up to 10 minutes of recovery), and a margin.
pub(super) const RESTORE_READY_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// How long a server on a silent host is Unknown before it is taken for Failed:
/// as long as a stop may take (its agent may be shutting down unseen).
const FAILED_AFTER_SILENCE: Duration = Duration::from_secs(60);

impl Platform {
    /// The position of the last event in the trail of the server and of each of
    /// its nodes (whose agents report their own events).
    pub(super) fn last_event_seqs(
        &self,
        server: &ServerRecord,
    ) -> Result<Vec<(String, u64)>, Error> {
        std::iter::once(server.id.clone())
            .chain(server.nodes.iter().cloned())
            .map(|id| {
                let last = self.store.events(&id)?.last().map_or(0, |e| e.seq);
                Ok((id, last))
            })
            .collect()
    }

    /// Waits, supervising, for the first event after `since` (a position in the
    /// trail of the server and of each of its nodes) of the Ready `server` that
    /// `outcome` recognizes, and returns what it says; refused when
    /// the server leaves Ready, or when none came within `timeout`
    /// ([`Error::AgentTask`], naming the agent's log).
    pub(super) fn wait_agent_event(
        &self,
        server: &ServerRecord,
        since: &[(String, u64)],
        timeout: Duration,
        outcome: impl Fn(&Event) -> Option<Result<(), Error>>,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(100);
        loop {
            self.supervise_once();
            for (id, seq) in since {
                let events = self.store.events(id)?;
                if let Some(result) = events.iter().filter(|e| e.seq > *seq).find_map(&outcome) {
                    return result;
                }
            }
            let state = self.store.server(&server.id)?.state;
            if state != ServerState::Ready {
                return Err(Error::NotReady {
                    server: server.name.clone(),
                    state,
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::AgentTask(format!(
                    "did not end within {} s (see the agent's log {})",
                    timeout.as_secs(),
                    ServerDir::new(&server.dir).agent_log().display()
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// Supervises the server until it is Ready (its agent's report taken into the
    /// store); any other settled state is the error.
    pub(super) fn wait_settled(&self, record: &ServerRecord) -> Result<(), Error> {
        self.wait_settled_within(record, READY_TIMEOUT)
    }

    /// [`Platform::wait_settled`], waiting at most `limit`.
    pub(super) fn wait_settled_within(
        &self,
        record: &ServerRecord,
        limit: Duration,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + limit;
        loop {
            self.supervise_once();
            match self.store.server(&record.id)?.state {
                ServerState::Ready => return Ok(()),
                ServerState::Provisioning => {}
                state => {
                    return Err(Error::NotReady {
                        server: record.name.clone(),
                        state,
                    })
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::ReadyTimeout {
                    server: record.name.clone(),
                    after: limit,
                    log: ServerDir::new(&record.dir).agent_log(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One supervision pass over every server (see [`Platform::supervise_server`]).
    pub fn supervise_once(&self) {
        let _pass = self
            .supervision
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let servers = match self.store.servers() {
            Ok(s) => s,
            Err(e) => return tracing::error!("supervision: {e}"),
        };
        let now = Instant::now();
        self.supervise_etcd();
        for server in &servers {
            if let Err(e) = self.supervise_server(server, now) {
                tracing::error!(server = %server.name, "supervision: {e}");
            }
        }
        if servers.iter().any(|s| !s.nodes.is_empty()) {
            if let Err(e) = self
                .store
                .servers()
                .and_then(|servers| self.follow_nodes(&servers))
            {
                tracing::error!("supervision of highly available servers: {e}");
            }
        }
    }

    /// Supervises one server at `now`: a dead agent makes it Failed and its
    /// restart is scheduled; a due restart is made; otherwise the live agent's
    /// current report is taken in (its events, its state, a re-wrapped DEK), and
    /// a live agent whose reports stopped makes it Failed.
    fn supervise_server(&self, server: &ServerRecord, now: Instant) -> Result<(), Error> {
        if server.state == ServerState::Deleting && server.host.is_some() {
            return self.finish_remote_delete_if_removed(server);
        }
        if matches!(server.state, ServerState::Stopped | ServerState::Deleting) {
            return Ok(());
        }
        let mut agents = self.agents.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(supervised) = agents.get_mut(&server.id) else {
            return Ok(());
        };
        if let Some(why) = supervised.agent().and_then(|a| a.unreachable(now)) {
            // Nothing is known of it now: never Ready from an old report.
            let state = if supervised.silent_for(now) > FAILED_AFTER_SILENCE {
                ServerState::Failed(format!(
                    "{why}: no report for more than {} s, so the server is taken for failed \
                     (it is taken in again when its host reports)",
                    FAILED_AFTER_SILENCE.as_secs()
                ))
            } else {
                ServerState::Unknown(format!("{why}: what the server does is not known"))
            };
            // One event per change, not one per pass as the seconds count up.
            if server.state.name() == state.name() {
                return Ok(());
            }
            return self.transition(server, state.clone(), Actor::ControlPlane, &why);
        }
        let after_death;
        let server = match supervised.check_alive(now) {
            Some((exit, delay)) => {
                let why = match delay {
                    Some(delay) => format!(
                        "the node agent {}; restarting it {}",
                        supervised.describe_exit(exit),
                        describe_delay(delay)
                    ),
                    None => format!(
                        "provisioning the new server failed: the node agent {} (not \
                         restarted: only a first start provisions)",
                        supervised.describe_exit(exit)
                    ),
                };
                tracing::warn!(server = %server.name, "{why}");
                self.transition(server, ServerState::Failed(why.clone()), Actor::Agent, &why)?;
                after_death = self.store.server(&server.id)?;
                &after_death
            }
            None => server,
        };
        if supervised.restart_due(now) {
            return match self.spawn_agent_process(server, None) {
                Ok(agent) => {
                    let why = format!(
                        "restart {} in a row; the new agent's pid is {}",
                        supervised.restarts(),
                        agent.pid()
                    );
                    supervised.restarted(agent, now);
                    self.event(server, Actor::ControlPlane, "agent restarted", &why)
                        .map(drop)
                }
                Err(e) => {
                    let delay = supervised.spawn_failed(now);
                    let why = format!(
                        "the node agent could not be started: {e}; retrying {}",
                        describe_delay(delay)
                    );
                    self.transition(
                        server,
                        ServerState::Failed(why.clone()),
                        Actor::ControlPlane,
                        &why,
                    )
                }
            };
        }
        let report = supervised.report();
        match supervised.read(report.as_ref(), now) {
            Reading::Current(report) => {
                for e in supervised.new_events(report) {
                    self.event(server, e.who, &e.what, &e.why)?;
                }
                if report.state == ServerState::Ready {
                    supervised.ready();
                }
                self.take_report(server, report)
            }
            Reading::Waiting => Ok(()),
            Reading::Stale => {
                let why = format!(
                    "the node agent (pid {}) has not reported for more than {} s: what it \
                     does is unknown",
                    supervised.agent().map_or(0, NodeAgent::pid),
                    supervised.stale_after().as_secs()
                );
                self.transition(
                    server,
                    ServerState::Failed(why.clone()),
                    Actor::ControlPlane,
                    &why,
                )
            }
        }
    }

    /// Takes in a current report: a DEK the agent re-wrapped, and its state.
    fn take_report(&self, server: &ServerRecord, status: &AgentStatus) -> Result<(), Error> {
        let dir = ServerDir::new(&server.dir);
        // An agent on a host re-wraps its DEK there: its host relays it
        // (`take_rewrapped`).
        if status.wrapped_by != server.wrapped_dek.kek && server.host.is_none() {
            let wrapped: WrappedDek = read_json(&dir.wrapped_dek())?;
            if wrapped.kek == status.wrapped_by {
                self.adopt_rewrapped_dek(server, &wrapped)?;
            }
        }
        // Stopped is the control plane's to record, when the DBA asked for it.
        if status.state == ServerState::Stopped {
            return Ok(());
        }
        self.transition(server, status.state.clone(), status.cause, &status.why)
    }

    /// Records the DEK its agent re-wrapped with a new key version as the server's.
    pub(super) fn adopt_rewrapped_dek(
        &self,
        server: &ServerRecord,
        wrapped: &WrappedDek,
    ) -> Result<(), Error> {
        self.store
            .update_server(&server.id, |s| s.wrapped_dek = wrapped.clone())?;
        self.event(
            server,
            Actor::KeyMonitor,
            "dek re-wrapped",
            &format!(
                "adopted key version {} (was {})",
                wrapped.kek, server.wrapped_dek.kek
            ),
        )?;
        Ok(())
    }
}
