//! Node agents on other hosts ([docs/hosts.md](../../../../docs/hosts.md)): what
//! the plane wants of each (its [`HostRelay`] entry: the instance to run, the run
//! state, a start not yet acknowledged), what the host last relayed of it, and the
//! [`RemoteAgent`] through which supervision treats it like a local one.
//!
//! All in memory: after a plane restart a server's entry says "keep whatever
//! runs" until its host reports, and a start's secrets live only until the host
//! acknowledges it (they are zeroized when the entry lets go of them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use pgcmk_agent::contract::AgentStatus;

use super::create::FirstStart;
use crate::assignments::{DesiredRun, RelayedServer};
use crate::hosts::{HostPresence, RELAY_DELAY};
use crate::node_agent::{AgentExit, NodeAgent};

/// How long a killed remote agent's exit is waited for before the stop goes on.
const REAP_WAIT: Duration = Duration::from_secs(10);

/// How the plane wants a server's agent on its host to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Run {
    /// Serving, as the entry's instance.
    Serving,
    /// Asked to stop.
    Stopped,
    /// Asked to end at once.
    Killed,
    /// Deleted: the host removes its directory.
    Deleted,
}

/// A start the host has not acknowledged: the secrets its handshake carries
/// beyond the ones every start gets (a new server's first start).
#[derive(Clone)]
pub(super) struct PendingStart {
    /// For the first start of a new server.
    pub(super) first_start: Option<FirstStart>,
}

/// One server on a host.
struct Assigned {
    host: String,
    /// The instance the plane started; `None` after a plane restart, until the
    /// host reports the one that runs.
    instance: Option<String>,
    run: Run,
    pending: Option<PendingStart>,
    /// What the host said of the server in its last report (`None`: it did not
    /// list it).
    last: Option<RelayedServer>,
    /// The host has reported since this entry was made.
    reported: bool,
}

/// The plane's side of every server on a host, shared by the heartbeat handler
/// and the supervision of the servers' [`RemoteAgent`]s.
#[derive(Default)]
pub(super) struct HostRelay {
    servers: Mutex<HashMap<String, Assigned>>,
}

impl HostRelay {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Assigned>> {
        self.servers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Server `id` on `host` is to serve as a new `instance`, started with `pending`.
    pub(super) fn start(&self, id: &str, host: &str, instance: String, pending: PendingStart) {
        self.lock().insert(
            id.to_string(),
            Assigned {
                host: host.to_string(),
                instance: Some(instance),
                run: Run::Serving,
                pending: Some(pending),
                last: None,
                reported: false,
            },
        );
    }

    /// Server `id` on `host` should run as its host has it (a plane restart):
    /// serving with whatever instance the host reports, or as `run` says.
    pub(super) fn keep(&self, id: &str, host: &str, run: Run) {
        self.lock().insert(
            id.to_string(),
            Assigned {
                host: host.to_string(),
                instance: None,
                run,
                pending: None,
                last: None,
                reported: false,
            },
        );
    }

    /// Changes how server `id` should run.
    pub(super) fn set_run(&self, id: &str, run: Run) {
        if let Some(a) = self.lock().get_mut(id) {
            a.run = run;
        }
    }

    /// Takes in `host`'s report: what it says of each of its servers. A server
    /// of another host, or one the plane did not assign, is ignored.
    pub(super) fn take(&self, host: &str, servers: &[RelayedServer]) {
        let mut all = self.lock();
        for (id, assigned) in all.iter_mut().filter(|(_, a)| a.host == host) {
            assigned.reported = true;
            assigned.last = servers.iter().find(|s| &s.server_id == id).cloned();
            let Some(last) = &assigned.last else { continue };
            if last.instance.is_some() && last.instance == assigned.instance {
                // The host started it: its secrets are not needed any more.
                assigned.pending = None;
            }
            if assigned.instance.is_none() && last.exit.is_none() {
                assigned.instance = last.instance.clone();
            }
        }
    }

    /// What `host` should do with server `id` now, and the start to hand over when
    /// one is not acknowledged yet; `None` for a server not assigned to `host`.
    pub(super) fn desired(
        &self,
        id: &str,
        host: &str,
    ) -> Option<(DesiredRun, Option<PendingStart>)> {
        let all = self.lock();
        let a = all.get(id).filter(|a| a.host == host)?;
        let run = match a.run {
            Run::Serving => DesiredRun::Serving {
                instance: a.instance.clone(),
            },
            Run::Stopped => DesiredRun::Stopped,
            Run::Killed => DesiredRun::Killed,
            Run::Deleted => DesiredRun::Deleted,
        };
        Some((run, a.pending.clone()))
    }

    /// Forgets deleted server `id` once its host no longer lists it; true for
    /// the one caller that did (it removes the server's row).
    pub(super) fn take_removed(&self, id: &str) -> bool {
        let mut all = self.lock();
        let removed = all
            .get(id)
            .is_some_and(|a| a.run == Run::Deleted && a.reported && a.last.is_none());
        if removed {
            all.remove(id);
        }
        removed
    }

    /// Marks server `id` as not reported since now (before waiting for a change).
    pub(super) fn unreport(&self, id: &str) {
        if let Some(a) = self.lock().get_mut(id) {
            a.reported = false;
        }
    }
}

/// A server's agent on another host, seen through its host's reports.
pub(super) struct RemoteAgent {
    id: String,
    host: String,
    relay: Arc<HostRelay>,
    presence: Arc<HostPresence>,
}

impl std::fmt::Debug for RemoteAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteAgent")
            .field("server", &self.id)
            .field("host", &self.host)
            .finish()
    }
}

impl RemoteAgent {
    pub(super) fn new(
        id: &str,
        host: &str,
        relay: Arc<HostRelay>,
        presence: Arc<HostPresence>,
    ) -> Self {
        Self {
            id: id.to_string(),
            host: host.to_string(),
            relay,
            presence,
        }
    }

    /// Reads this server's entry.
    fn with<R>(&self, read: impl FnOnce(&Assigned) -> Option<R>) -> Option<R> {
        self.relay.lock().get(&self.id).and_then(read)
    }

    /// The host's last word on this agent's own instance.
    fn own<R>(&self, read: impl FnOnce(&RelayedServer) -> Option<R>) -> Option<R> {
        self.with(|a| {
            let last = a.last.as_ref()?;
            (a.instance.is_some() && last.instance == a.instance)
                .then_some(last)
                .and_then(read)
        })
    }
}

impl NodeAgent for RemoteAgent {
    fn pid(&self) -> u32 {
        self.own(|s| s.pid).unwrap_or(0)
    }

    /// Running as far as is known while the start is pending or the host is
    /// silent; gone once the host reports it ended, or reports another instance
    /// (or none) after the start was acknowledged.
    fn exit(&mut self) -> Option<AgentExit> {
        self.with(|a| {
            if a.pending.is_some() || !a.reported {
                return None;
            }
            let Some(last) = &a.last else {
                return Some(AgentExit::Gone);
            };
            if a.instance.is_none() || last.instance != a.instance {
                return Some(AgentExit::Gone);
            }
            last.exit.as_ref().map(|e| e.exit)
        })
    }

    fn exit_detail(&self, exit: AgentExit) -> String {
        match self.own(|s| s.exit.as_ref()?.error.clone()) {
            Some(error) => format!("{exit} on host '{}': {error}", self.host),
            None => format!(
                "{exit} on host '{}' (see agent.log in its directory there)",
                self.host
            ),
        }
    }

    fn report(&self) -> Option<AgentStatus> {
        self.own(|s| s.status.clone())
    }

    fn unreachable(&self, now: Instant) -> Option<String> {
        self.presence
            .silence(&self.host, now)
            .map(|why| format!("host '{}' {why}", self.host))
    }

    /// A report may reach the plane a relay's delay late without anything being
    /// wrong (its host reads it once per heartbeat, and is Online until
    /// `silent_after` without one).
    fn report_delay(&self) -> Duration {
        RELAY_DELAY
    }

    fn terminate(&mut self) {
        self.relay.set_run(&self.id, Run::Stopped);
    }

    fn kill(&mut self) {
        self.relay.set_run(&self.id, Run::Killed);
    }

    /// Waits a while for the host to report the end; a silent host is not waited
    /// for (its entry keeps asking for the end when it speaks again).
    fn reap(&mut self) {
        let deadline = Instant::now() + REAP_WAIT;
        while self.exit().is_none()
            && self.unreachable(Instant::now()).is_none()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wrote(&self, report: &AgentStatus) -> bool {
        self.with(|a| Some(a.instance.as_deref() == Some(report.instance.as_str())))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::{HEARTBEAT_EVERY, SILENT_AFTER};
    use crate::supervisor::tests::report;
    use crate::supervisor::{Reading, Supervised, STALE_AFTER};

    /// Reads the agent's latest report at `now`: whether it was stale.
    fn stale_at(s: &mut Supervised, now: Instant) -> bool {
        let latest = s.report();
        matches!(s.read(latest.as_ref(), now), Reading::Stale)
    }

    #[test]
    fn a_removal_is_taken_once_and_only_after_the_host_stopped_listing_it() {
        let relay = HostRelay::default();
        relay.start("s1", "h1", "i-1".into(), PendingStart { first_start: None });
        relay.set_run("s1", Run::Deleted);
        assert!(!relay.take_removed("s1"), "the host has not reported since");
        let listed = RelayedServer {
            server_id: "s1".into(),
            instance: None,
            pid: None,
            status: None,
            exit: None,
            wrapped_dek: None,
            wrapped_backup_key: None,
        };
        relay.take("h1", &[listed]);
        assert!(!relay.take_removed("s1"), "the host still lists it");
        relay.take("h1", &[]);
        // The delete's wait and a supervision pass both look: one takes it.
        assert!(relay.take_removed("s1"));
        assert!(!relay.take_removed("s1"));
        assert!(relay.desired("s1", "h1").is_none());
    }

    #[test]
    fn a_relayed_report_goes_stale_only_after_the_relays_delay_too() {
        let relay = Arc::new(HostRelay::default());
        relay.start("s1", "h1", "i-1".into(), PendingStart { first_start: None });
        relay.take(
            "h1",
            &[RelayedServer {
                server_id: "s1".into(),
                instance: Some("i-1".into()),
                pid: Some(7),
                status: Some(report(7, "i-1", 1, &[])),
                exit: None,
                wrapped_dek: None,
                wrapped_backup_key: None,
            }],
        );
        let agent = RemoteAgent::new("s1", "h1", relay, Arc::default());
        let t0 = Instant::now();
        let mut s = Supervised::spawned(Box::new(agent), t0);
        let latest = s.report();
        assert!(matches!(s.read(latest.as_ref(), t0), Reading::Current(_)));
        // A local agent's report would be stale here; a relayed one may still be
        // on its way (a heartbeat period, and a host late but Online).
        assert!(!stale_at(
            &mut s,
            t0 + STALE_AFTER + Duration::from_millis(1)
        ));
        assert!(!stale_at(&mut s, t0 + STALE_AFTER + RELAY_DELAY));
        assert!(stale_at(
            &mut s,
            t0 + STALE_AFTER + RELAY_DELAY + Duration::from_millis(1)
        ));
        assert_eq!(RELAY_DELAY, HEARTBEAT_EVERY + SILENT_AFTER);
    }
}
