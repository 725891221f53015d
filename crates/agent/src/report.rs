//! The node agent's report to the control plane (`status.json`).
//!
//! A thread of its own writes it at once after every change and at least every
//! [`HEARTBEAT`], so the report stays current while the agent's main loop waits
//! on the vault or on a PostgreSQL start. "Ready" in a report means PostgreSQL
//! answered a readiness probe made for that very report. Each report carries the
//! agent's pid, the instance name the control plane gave it at spawn and a
//! sequence number: the control plane takes a report only from the live agent it
//! started, and only while new ones keep coming (the control plane's supervisor).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use pgcmk_keyprovider::KeyVersionId;

use crate::contract::server_dir::{write_json_replace, ServerDir};
use crate::contract::{now_rfc3339, Actor, AgentEvent, AgentStatus, ServerState};
use crate::postgres::ReadinessProbe;
use crate::Error;

/// The longest time between two reports of a running agent.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How many of its latest events a report carries.
const KEPT_EVENTS: usize = 32;

/// What the agent's main loop is doing.
#[derive(Clone, Debug)]
pub enum Activity {
    /// Getting the server up (unwrapping, mounting, starting PostgreSQL), because of `who`.
    Starting {
        /// Who started it.
        who: Actor,
        /// Why, in words.
        why: String,
    },
    /// PostgreSQL runs: Ready while it accepts connections.
    Serving {
        /// The postmaster's pid.
        postgres_pid: u32,
        /// Asks PostgreSQL whether it accepts connections.
        probe: ReadinessProbe,
    },
    /// Locked by the key monitor.
    Inaccessible(String),
    /// Shutting PostgreSQL down because the agent stops: nothing to probe (a probe
    /// now would only make PostgreSQL log "the database system is shutting down").
    Stopping,
    /// Could not get the server up; retried.
    Failed {
        /// Whose failure it is.
        who: Actor,
        /// What failed, and when it is retried.
        reason: String,
    },
}

impl Activity {
    /// The state to report, who caused it and why; probes PostgreSQL when it runs.
    fn observe(&self) -> (ServerState, Actor, String, Option<u32>) {
        match self {
            Activity::Starting { who, why } => (ServerState::Provisioning, *who, why.clone(), None),
            Activity::Stopping => (
                ServerState::Stopped,
                Actor::Agent,
                "the node agent is stopping".into(),
                None,
            ),
            Activity::Serving {
                postgres_pid,
                probe,
            } => {
                let (state, why) = if probe.accepts_connections() {
                    (ServerState::Ready, "PostgreSQL accepts connections")
                } else {
                    (
                        ServerState::Provisioning,
                        "PostgreSQL does not accept connections (starting, or recovering after a crash)",
                    )
                };
                (state, Actor::Postgres, why.into(), Some(*postgres_pid))
            }
            Activity::Inaccessible(reason) => (
                ServerState::Inaccessible(reason.clone()),
                Actor::KeyMonitor,
                reason.clone(),
                None,
            ),
            Activity::Failed { who, reason } => (
                ServerState::Failed(reason.clone()),
                *who,
                reason.clone(),
                None,
            ),
        }
    }
}

/// What reports say for the metrics (see [`AgentStatus::last_unwrap_at`]).
#[derive(Clone, Debug, Default)]
struct Observed {
    last_unwrap_at: Option<String>,
    metrics_address: Option<SocketAddr>,
}

/// What the next report says, shared between the main loop and the writer thread.
struct Latest {
    activity: Activity,
    wrapped_by: KeyVersionId,
    observed: Observed,
    events: VecDeque<AgentEvent>,
    next_event: u64,
    /// Set on every change, so the writer reports at once.
    changed: bool,
    /// The writer is asking PostgreSQL whether it accepts connections.
    probing: bool,
    stopping: bool,
    /// Why the writer stopped before it was asked to.
    failure: Option<Error>,
}

struct Shared {
    latest: Mutex<Latest>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Latest> {
        self.latest.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Writes one agent instance's numbered reports.
struct Writer {
    path: PathBuf,
    instance: String,
    seq: u64,
}

impl Writer {
    fn write(
        &mut self,
        (state, cause, why, postgres_pid): (ServerState, Actor, String, Option<u32>),
        wrapped_by: KeyVersionId,
        events: Vec<AgentEvent>,
        observed: Observed,
    ) -> Result<(), Error> {
        self.seq += 1;
        write_json_replace(
            &self.path,
            &AgentStatus {
                state,
                cause,
                why,
                wrapped_by,
                agent_pid: std::process::id(),
                instance: self.instance.clone(),
                seq: self.seq,
                postgres_pid,
                events,
                at: now_rfc3339(),
                last_unwrap_at: observed.last_unwrap_at,
                metrics_address: observed.metrics_address,
            },
        )
    }
}

/// The agent's reporter: the main loop says what it does, a thread reports it.
pub struct Reporter {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Writer>>,
}

impl Reporter {
    /// Writes the first report (Provisioning: the agent started) before it
    /// returns, so a directory that cannot take reports fails the agent at once,
    /// then keeps reporting from a thread.
    pub fn start(
        dir: &ServerDir,
        instance: String,
        wrapped_by: KeyVersionId,
    ) -> Result<Self, Error> {
        Self::start_with_heartbeat(dir, instance, wrapped_by, HEARTBEAT)
    }

    fn start_with_heartbeat(
        dir: &ServerDir,
        instance: String,
        wrapped_by: KeyVersionId,
        heartbeat: Duration,
    ) -> Result<Self, Error> {
        let activity = Activity::Starting {
            who: Actor::Agent,
            why: "the node agent started; checking key access".into(),
        };
        let mut writer = Writer {
            path: dir.status(),
            instance,
            seq: 0,
        };
        writer.write(
            activity.observe(),
            wrapped_by.clone(),
            Vec::new(),
            Observed::default(),
        )?;
        let shared = Arc::new(Shared {
            latest: Mutex::new(Latest {
                activity,
                wrapped_by,
                observed: Observed::default(),
                events: VecDeque::new(),
                next_event: 1,
                changed: false,
                probing: false,
                stopping: false,
                failure: None,
            }),
            wake: Condvar::new(),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::spawn(move || report_until_stopped(&shared, writer, heartbeat))
        };
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    fn change(&self, apply: impl FnOnce(&mut Latest)) {
        self.change_after_probe(false, apply);
    }

    /// [`Reporter::change`]; with `after_probe`, first waits (in the same critical
    /// section, so no new probe can start in between) until no probe is under way.
    fn change_after_probe(&self, after_probe: bool, apply: impl FnOnce(&mut Latest)) {
        let mut latest = self.shared.lock();
        while after_probe && latest.probing {
            latest = self
                .shared
                .wake
                .wait(latest)
                .unwrap_or_else(PoisonError::into_inner);
        }
        apply(&mut latest);
        latest.changed = true;
        self.shared.wake.notify_all();
    }

    /// Says what the agent does now. For an activity without a probe (Stopping,
    /// Inaccessible: PostgreSQL is about to be shut down), waits until a probe under
    /// way has ended (at most `pg_isready`'s timeout): a probe meeting the shutdown
    /// makes PostgreSQL log "FATAL: the database system is shutting down".
    pub fn set(&self, activity: Activity) {
        let after_probe = !matches!(activity, Activity::Serving { .. });
        self.change_after_probe(after_probe, |l| l.activity = activity);
    }

    /// Says which key version now wraps the stored DEK.
    pub fn wrapped_by(&self, version: KeyVersionId) {
        self.change(|l| l.wrapped_by = version);
    }

    /// Says that the key monitor unwrapped the DEK just now.
    pub fn unwrapped(&self) {
        self.change(|l| l.observed.last_unwrap_at = Some(now_rfc3339()));
    }

    /// Says where the agent serves its metrics.
    pub fn metrics_at(&self, address: SocketAddr) {
        self.change(|l| l.observed.metrics_address = Some(address));
    }

    /// Records an event for the control plane's trail.
    pub fn event(&self, who: Actor, what: &str, why: &str) {
        tracing::info!(who = who.as_str(), what, why, "event");
        self.change(|l| {
            l.events.push_back(AgentEvent {
                seq: l.next_event,
                who,
                what: what.into(),
                why: why.into(),
            });
            l.next_event += 1;
            if l.events.len() > KEPT_EVENTS {
                l.events.pop_front();
            }
        });
    }

    /// The error that stopped the reports, if they stopped: the control plane
    /// cannot learn anything from this agent any more, so it should exit with it.
    pub fn failure(&self) -> Option<Error> {
        self.shared.lock().failure.take()
    }

    /// Stops the thread and writes the last report: Stopped.
    pub fn finish(mut self) -> Result<(), Error> {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_one();
        let Some(mut writer) = self.thread.take().and_then(|t| t.join().ok()) else {
            return Ok(());
        };
        let latest = self.shared.lock();
        let events = latest.events.iter().cloned().collect();
        writer.write(
            (
                ServerState::Stopped,
                Actor::Agent,
                "the node agent stopped".into(),
                None,
            ),
            latest.wrapped_by.clone(),
            events,
            Observed {
                metrics_address: None,
                ..latest.observed.clone()
            },
        )
    }
}

/// The writer thread: reports whenever something changed, and every `heartbeat`.
fn report_until_stopped(shared: &Shared, mut writer: Writer, heartbeat: Duration) -> Writer {
    loop {
        let (activity, wrapped_by, events, observed) = {
            let mut latest = shared.lock();
            if !latest.changed && !latest.stopping {
                latest = shared
                    .wake
                    .wait_timeout(latest, heartbeat)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            if latest.stopping {
                return writer;
            }
            latest.changed = false;
            latest.probing = matches!(latest.activity, Activity::Serving { .. });
            (
                latest.activity.clone(),
                latest.wrapped_by.clone(),
                latest.events.iter().cloned().collect(),
                latest.observed.clone(),
            )
        };
        let state = activity.observe();
        {
            let mut latest = shared.lock();
            latest.probing = false;
            shared.wake.notify_all();
            // What the agent does may have changed while PostgreSQL was probed:
            // report that instead of what is no longer true.
            if latest.changed {
                continue;
            }
        }
        if let Err(e) = writer.write(state, wrapped_by, events, observed) {
            tracing::error!("cannot write the report: {e}");
            shared.lock().failure = Some(e);
            return writer;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stopping waits for a readiness probe under way, so that no probe reaches
    /// PostgreSQL while it shuts down.
    #[test]
    fn a_set_without_a_probe_waits_for_the_probe_under_way() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ServerDir::new(tmp.path());
        let reporter = Arc::new(
            Reporter::start_with_heartbeat(
                &dir,
                "i-1".into(),
                version(),
                Duration::from_secs(3600),
            )
            .unwrap(),
        );
        reporter.shared.lock().probing = true;
        let (done, returned) = std::sync::mpsc::channel();
        let setter = {
            let reporter = reporter.clone();
            std::thread::spawn(move || {
                reporter.set(Activity::Stopping);
                done.send(()).unwrap();
            })
        };
        assert!(
            returned.recv_timeout(Duration::from_millis(300)).is_err(),
            "set(Stopping) returned while a probe was under way"
        );
        {
            let mut latest = reporter.shared.lock();
            latest.probing = false;
            reporter.shared.wake.notify_all();
        }
        returned.recv_timeout(Duration::from_secs(5)).unwrap();
        setter.join().unwrap();
        assert!(matches!(
            reporter.shared.lock().activity,
            Activity::Stopping
        ));
    }

    fn version() -> KeyVersionId {
        KeyVersionId::parse(&format!("https://vault:1/keys/k/{}", "a".repeat(32))).unwrap()
    }

    fn read(dir: &ServerDir) -> AgentStatus {
        crate::contract::server_dir::read_json(&dir.status()).unwrap()
    }

    #[test]
    fn reports_at_once_on_change_with_events_and_numbers() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ServerDir::new(tmp.path());
        // No heartbeat within the test: every report after the first comes from a change.
        let reporter = Reporter::start_with_heartbeat(
            &dir,
            "i-1".into(),
            version(),
            Duration::from_secs(3600),
        )
        .unwrap();
        let first = read(&dir);
        assert_eq!(
            (first.state.clone(), first.cause, first.seq),
            (ServerState::Provisioning, Actor::Agent, 1)
        );
        assert_eq!(first.instance, "i-1");
        assert_eq!(first.agent_pid, std::process::id());

        reporter.event(Actor::Postgres, "postgres exited", "signal 9");
        reporter.set(Activity::Inaccessible("key disabled".into()));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let report = loop {
            let report = read(&dir);
            if report.state != ServerState::Provisioning {
                break report;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no report after a change"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(
            report.state,
            ServerState::Inaccessible("key disabled".into())
        );
        assert_eq!(report.cause, Actor::KeyMonitor);
        assert!(report.seq > first.seq);
        assert_eq!(report.events.len(), 1);
        assert_eq!(report.events[0].what, "postgres exited");
        assert!(reporter.failure().is_none());

        reporter.finish().unwrap();
        assert_eq!(read(&dir).state, ServerState::Stopped);
    }

    #[test]
    fn a_directory_that_cannot_take_the_report_fails_the_start() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ServerDir::new(tmp.path().join("missing"));
        let err = Reporter::start(&dir, "i-1".into(), version())
            .err()
            .expect("started without a report");
        assert!(err.to_string().contains("status.json"), "{err}");
    }
}
