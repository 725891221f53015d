//! How the control plane knows whether a server's node agent runs and whether
//! what it reports is true now.
//!
//! - An agent is alive while its process runs, as far as can be known now
//!   ([`crate::node_agent::NodeAgent`]: here, or on a host).
//! - A report counts only when it comes from that very agent (its pid and the
//!   instance name it was spawned with) and only while new ones keep coming: a
//!   report whose sequence number has not moved for [`STALE_AFTER`] (plus, for
//!   an agent on a host, the relay's delay, [`NodeAgent::report_delay`]) is not
//!   current.
//! - A dead agent is restarted with back-off: at once after a crash, then 1 s,
//!   2 s, ... up to 30 s while it keeps dying before its server is Ready.
//! - An agent that dies while provisioning a new server (its first start, before
//!   the server was ever Ready) is not restarted: only the first start carries
//!   what provisioning needs, so a restart could only start what it left
//!   half-made. The create fails with the first start's reason.

use std::time::{Duration, Instant};

use pgcmk_agent::backoff::Backoff;
use pgcmk_agent::contract::{AgentEvent, AgentStatus};

use crate::node_agent::{AgentExit, NodeAgent};

/// How long the reports of a live agent may stop before its state is unknown
/// (it reports every second; a readiness probe takes up to 2 s). An agent on a
/// host gets its relay's delay on top ([`Supervised::stale_after`]).
pub const STALE_AFTER: Duration = Duration::from_secs(5);
/// The delay before the second restart in a row (the first comes at once).
const RESTART_FIRST: Duration = Duration::from_secs(1);
/// The longest delay between restarts.
const RESTART_CAP: Duration = Duration::from_secs(30);

/// What the control plane makes of an agent's report file at one moment.
#[derive(Debug)]
pub enum Reading<'a> {
    /// A new report of the live agent: take it.
    Current(&'a AgentStatus),
    /// Nothing new yet, within [`Supervised::stale_after`] of the last report
    /// (or the spawn).
    Waiting,
    /// Nothing new for longer than [`Supervised::stale_after`]: what the agent
    /// does is unknown.
    Stale,
}

/// One server's supervision: its agent (none while a restart is pending), the
/// restart back-off and how far its reports were taken in.
#[derive(Debug)]
pub struct Supervised {
    agent: Option<Box<dyn NodeAgent>>,
    restarts: Backoff,
    restart_at: Option<Instant>,
    /// The last report's sequence number and when it was first seen.
    seq: u64,
    seen_at: Instant,
    /// Events up to this sequence number were taken; `None` until the first
    /// report of a re-attached agent, whose earlier events are history.
    events_taken: Option<u64>,
    /// The agent provisions a new server and it was not Ready yet: its death is
    /// final.
    provisioning: bool,
    /// How the last agent ended, in words, once it has.
    exit_detail: Option<String>,
}

impl Supervised {
    /// Supervises an agent spawned at `now`: all its events are news.
    pub fn spawned(agent: Box<dyn NodeAgent>, now: Instant) -> Self {
        Self {
            agent: Some(agent),
            restarts: Backoff::new(RESTART_FIRST, RESTART_CAP),
            restart_at: None,
            seq: 0,
            seen_at: now,
            events_taken: Some(0),
            provisioning: false,
            exit_detail: None,
        }
    }

    /// Supervises an agent spawned at `now` with the first-start handshake of a
    /// new server: if it dies before the server is Ready, it is not restarted.
    pub fn provisioning(agent: Box<dyn NodeAgent>, now: Instant) -> Self {
        Self {
            provisioning: true,
            ..Self::spawned(agent, now)
        }
    }

    /// Supervises an agent found running at `now`, `provisioning` when it is
    /// still at its first start.
    pub fn attached(agent: Box<dyn NodeAgent>, now: Instant, provisioning: bool) -> Self {
        Self {
            events_taken: None,
            provisioning,
            ..Self::spawned(agent, now)
        }
    }

    /// The live agent, if any.
    pub fn agent(&self) -> Option<&dyn NodeAgent> {
        self.agent.as_deref()
    }

    /// The agent, while it runs.
    pub fn live_agent(&mut self) -> Option<&dyn NodeAgent> {
        let agent = self.agent.as_mut()?;
        agent.exit().is_none().then_some(&**agent)
    }

    /// Takes the agent out (to stop it).
    pub fn take_agent(&mut self) -> Option<Box<dyn NodeAgent>> {
        self.agent.take()
    }

    /// Checks whether the agent has died; if so, forgets it and schedules its
    /// restart, unless it was provisioning. Returns how it ended and the delay
    /// before the restart (`None`: no restart).
    pub fn check_alive(&mut self, now: Instant) -> Option<(AgentExit, Option<Duration>)> {
        let exit = self.agent.as_mut()?.exit()?;
        self.exit_detail = self.agent.take().map(|dead| dead.exit_detail(exit));
        if self.provisioning {
            return Some((exit, None));
        }
        let delay = self.restarts.failed();
        self.restart_at = Some(now + delay);
        Some((exit, Some(delay)))
    }

    /// Records that a restart could not even spawn the agent; returns the delay
    /// before the next try.
    pub fn spawn_failed(&mut self, now: Instant) -> Duration {
        let delay = self.restarts.failed();
        self.restart_at = Some(now + delay);
        delay
    }

    /// True when a restart is pending and due at `now`.
    pub fn restart_due(&self, now: Instant) -> bool {
        self.agent.is_none() && self.restart_at.is_some_and(|at| now >= at)
    }

    /// Restarts in a row so far (the current one included).
    pub fn restarts(&self) -> u32 {
        self.restarts.failures()
    }

    /// Supervises `agent`, restarted at `now`, in place of the dead one; the
    /// back-off continues until it reaches Ready.
    pub fn restarted(&mut self, agent: Box<dyn NodeAgent>, now: Instant) {
        self.agent = Some(agent);
        self.restart_at = None;
        self.seq = 0;
        self.seen_at = now;
        self.events_taken = Some(0);
    }

    /// How long no new report of the agent was taken in, at `now`.
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.seen_at)
    }

    /// How the agent ended, in words (see [`NodeAgent::exit_detail`]).
    pub fn describe_exit(&self, exit: AgentExit) -> String {
        self.exit_detail.clone().unwrap_or_else(|| exit.to_string())
    }

    /// The live agent's latest report.
    pub fn report(&self) -> Option<AgentStatus> {
        self.agent.as_ref()?.report()
    }

    /// How long the live agent's reports may stand still before they are stale:
    /// [`STALE_AFTER`], plus the delay of their relay for an agent on a host.
    pub fn stale_after(&self) -> Duration {
        STALE_AFTER
            + self
                .agent
                .as_ref()
                .map_or(Duration::ZERO, |a| a.report_delay())
    }

    /// Judges `report` (the agent's latest, as read at `now`) for the live agent.
    pub fn read<'a>(&mut self, report: Option<&'a AgentStatus>, now: Instant) -> Reading<'a> {
        let stale_after = self.stale_after();
        let Some(agent) = &self.agent else {
            return Reading::Waiting;
        };
        match report.filter(|r| agent.wrote(r) && r.seq > self.seq) {
            Some(report) => {
                self.seq = report.seq;
                self.seen_at = now;
                Reading::Current(report)
            }
            None if now.saturating_duration_since(self.seen_at) > stale_after => Reading::Stale,
            None => Reading::Waiting,
        }
    }

    /// The events of `report` not taken yet (none from before a re-attach).
    pub fn new_events<'a>(&mut self, report: &'a AgentStatus) -> &'a [AgentEvent] {
        let last = report.events.last().map_or(0, |e| e.seq);
        match self.events_taken {
            None => {
                self.events_taken = Some(last);
                &[]
            }
            Some(taken) => {
                self.events_taken = Some(taken.max(last));
                &report.events[report.events.partition_point(|e| e.seq <= taken)..]
            }
        }
    }

    /// Records that the agent's server is Ready: the next crash is restarted at
    /// once (also after a first start, which has provisioned the server).
    pub fn ready(&mut self) {
        self.restarts.reset();
        self.provisioning = false;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{Actor, ServerState};
    use pgcmk_keyprovider::KeyVersionId;
    use std::process::{Child, Command};

    use pgcmk_agent::contract::ServerDir;

    use crate::node_agent::AgentProcess;

    /// A Ready report of agent `pid`, `instance`, with `seq` and events `events`.
    pub(crate) fn report(pid: u32, instance: &str, seq: u64, events: &[u64]) -> AgentStatus {
        AgentStatus {
            state: ServerState::Ready,
            cause: Actor::Postgres,
            why: String::new(),
            wrapped_by: KeyVersionId::parse(&format!("https://v:1/keys/k/{}", "a".repeat(32)))
                .unwrap(),
            agent_pid: pid,
            instance: instance.into(),
            seq,
            postgres_pid: None,
            events: events
                .iter()
                .map(|&seq| AgentEvent {
                    seq,
                    who: Actor::Postgres,
                    what: format!("e{seq}"),
                    why: String::new(),
                })
                .collect(),
            at: String::new(),
            last_unwrap_at: None,
            metrics_address: None,
        }
    }

    fn local(agent: AgentProcess) -> Box<dyn NodeAgent> {
        Box::new(agent)
    }

    fn nowhere() -> ServerDir {
        ServerDir::new("/nonexistent")
    }

    fn sleeper() -> Child {
        Command::new("sleep").arg("30").spawn().unwrap()
    }

    #[test]
    fn only_new_reports_of_this_instance_count_and_silence_goes_stale() {
        let t0 = Instant::now();
        let child = sleeper();
        let pid = child.id();
        let mut s = Supervised::spawned(
            local(AgentProcess::spawned(child, "i-2".into(), nowhere())),
            t0,
        );
        let at = |ms| t0 + Duration::from_millis(ms);

        // The report of an earlier instance (or another pid) is never taken.
        assert!(matches!(
            s.read(Some(&report(pid, "i-1", 9, &[])), at(100)),
            Reading::Waiting
        ));
        assert!(matches!(
            s.read(Some(&report(pid + 1, "i-2", 9, &[])), at(200)),
            Reading::Waiting
        ));
        let first = report(pid, "i-2", 1, &[]);
        assert!(matches!(s.read(Some(&first), at(300)), Reading::Current(_)));
        // The same report again is no news; after STALE_AFTER it is stale.
        assert!(matches!(s.read(Some(&first), at(5_300)), Reading::Waiting));
        assert!(matches!(s.read(Some(&first), at(5_301)), Reading::Stale));
        assert!(matches!(
            s.read(Some(&report(pid, "i-2", 2, &[])), at(5_400)),
            Reading::Current(_)
        ));
        // No report at all since the spawn goes stale the same way.
        let mut quiet = Supervised::spawned(
            local(AgentProcess::spawned(sleeper(), "i-3".into(), nowhere())),
            t0,
        );
        assert!(matches!(quiet.read(None, at(5_001)), Reading::Stale));

        for s in [&mut s, &mut quiet] {
            let mut agent = s.take_agent().unwrap();
            process_kill(agent.as_ref());
            agent.reap();
        }
    }

    fn process_kill(agent: &dyn NodeAgent) {
        Command::new("kill")
            .args(["-9", &agent.pid().to_string()])
            .status()
            .unwrap();
    }

    /// Kills the supervised agent and waits until supervision sees it dead.
    fn kill_and_notice(s: &mut Supervised, now: Instant) -> (AgentExit, Option<Duration>) {
        process_kill(s.agent().unwrap());
        loop {
            if let Some(died) = s.check_alive(now) {
                return died;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn events_are_taken_once_and_history_is_skipped_after_a_re_attach() {
        let t0 = Instant::now();
        let child = sleeper();
        let pid = child.id();
        let mut s = Supervised::spawned(
            local(AgentProcess::spawned(child, "i".into(), nowhere())),
            t0,
        );
        let whats = |events: &[AgentEvent]| -> Vec<u64> { events.iter().map(|e| e.seq).collect() };
        assert_eq!(whats(s.new_events(&report(pid, "i", 1, &[1, 2]))), [1, 2]);
        assert_eq!(whats(s.new_events(&report(pid, "i", 2, &[1, 2, 3]))), [3]);
        assert!(s.new_events(&report(pid, "i", 3, &[2, 3])).is_empty());

        let mut attached = Supervised::attached(
            local(AgentProcess::attached(pid, "i".into(), nowhere())),
            t0,
            false,
        );
        assert!(attached
            .new_events(&report(pid, "i", 7, &[4, 5]))
            .is_empty());
        assert_eq!(
            whats(attached.new_events(&report(pid, "i", 8, &[4, 5, 6]))),
            [6]
        );

        let mut agent = s.take_agent().unwrap();
        process_kill(agent.as_ref());
        agent.reap();
    }

    #[test]
    fn a_dead_agent_is_restarted_at_once_then_with_back_off_until_ready() {
        let t0 = Instant::now();
        let mut s = Supervised::spawned(
            local(AgentProcess::spawned(sleeper(), "i".into(), nowhere())),
            t0,
        );
        assert!(s.check_alive(t0).is_none());
        let (exit, delay) = kill_and_notice(&mut s, t0);
        assert_eq!(exit, AgentExit::Signal(9));
        assert_eq!(exit.to_string(), "was killed by signal 9 (SIGKILL)");
        assert_eq!(delay, Some(Duration::ZERO));
        assert!(s.restart_due(t0));

        s.restarted(
            local(AgentProcess::spawned(sleeper(), "j".into(), nowhere())),
            t0,
        );
        assert!(!s.restart_due(t0));
        let (_, delay) = kill_and_notice(&mut s, t0);
        assert_eq!(delay, Some(RESTART_FIRST));
        assert_eq!(s.restarts(), 2);
        assert!(!s.restart_due(t0));
        assert!(s.restart_due(t0 + RESTART_FIRST));

        s.restarted(
            local(AgentProcess::spawned(sleeper(), "k".into(), nowhere())),
            t0,
        );
        s.ready();
        let (_, delay) = kill_and_notice(&mut s, t0);
        assert_eq!(
            delay,
            Some(Duration::ZERO),
            "a Ready agent's crash waits for nothing"
        );
    }

    #[test]
    fn an_agent_that_dies_provisioning_is_not_restarted_until_its_server_was_ready() {
        let t0 = Instant::now();
        let mut s = Supervised::provisioning(
            local(AgentProcess::spawned(sleeper(), "i".into(), nowhere())),
            t0,
        );
        let (exit, delay) = kill_and_notice(&mut s, t0);
        assert_eq!(exit, AgentExit::Signal(9));
        assert_eq!(delay, None, "a half-provisioned server is not restarted");
        assert!(!s.restart_due(t0 + RESTART_CAP));

        let mut served = Supervised::provisioning(
            local(AgentProcess::spawned(sleeper(), "j".into(), nowhere())),
            t0,
        );
        served.ready();
        let (_, delay) = kill_and_notice(&mut served, t0);
        assert_eq!(
            delay,
            Some(Duration::ZERO),
            "once Ready, a crash is restarted"
        );
        assert!(served.restart_due(t0));
    }
}
