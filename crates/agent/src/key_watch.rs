//! The key monitor on a clock: when the next check is due, the check itself (a
//! real unwrap of the wrapped DEK and a read of the key's current version through
//! the KEK) and the [`Monitor`]'s decision about it. The agent carries out the
//! decided actions; the clock is the system's there and a manual one in the tests
//! below, which walk a server through outages, denials and rotations in no time.

use std::time::{Duration, Instant};

use pgcmk_crypto::Dek;
use pgcmk_keyprovider::{KeyEncryptionKey, KeyVersionId, WrappedDek};

use crate::clock::Clock;
use crate::kek;
use crate::monitor::{Action, CheckResult, Monitor, MonitorConfig};

/// What one check found and what the monitor decided.
#[derive(Debug)]
pub struct Checked {
    /// Why the check failed (denied or transient), when it did.
    pub failure: Option<String>,
    /// What the agent must do now, in order.
    pub actions: Vec<Action>,
    /// The DEK, when the unwrap succeeded (the agent mounts with it on unlock).
    pub dek: Option<Dek>,
}

/// The key monitor and its schedule on `C`.
pub struct KeyWatch<C: Clock> {
    clock: C,
    monitor: Monitor,
    next_check: Instant,
}

impl<C: Clock> KeyWatch<C> {
    /// A watch over a DEK wrapped by `wrapped_by`; the first check is due at once.
    pub fn new(clock: C, config: MonitorConfig, wrapped_by: KeyVersionId) -> Self {
        Self {
            next_check: clock.now(),
            monitor: Monitor::new(config, wrapped_by),
            clock,
        }
    }

    /// Makes a check due now (SIGHUP, a revalidation).
    pub fn check_now(&mut self) {
        self.next_check = self.clock.now();
    }

    /// True when a check is due.
    pub fn due(&self) -> bool {
        self.clock.now() >= self.next_check
    }

    /// Checks the key through `kek` with the stored `wrapped` DEK, and schedules the
    /// next check as the monitor decides.
    pub fn check(&mut self, kek: &dyn KeyEncryptionKey, wrapped: &WrappedDek) -> Checked {
        let now = self.clock.now();
        let started = std::time::Instant::now();
        let (result, dek) = kek::check(kek, wrapped);
        let (failure, outcome) = match &result {
            CheckResult::Denied(reason) => (Some(reason.clone()), "denied"),
            CheckResult::Transient(reason) => (Some(reason.clone()), "transient"),
            CheckResult::Ok { .. } => (None, "ok"),
        };
        crate::metrics::key_check(outcome, started.elapsed());
        let decision = self.monitor.on_check(now, result);
        self.next_check = now + decision.next_check;
        Checked {
            failure,
            actions: decision.actions,
            dek,
        }
    }

    /// Records that unlocking failed: the server stays locked and the next
    /// successful check tries again.
    pub fn relock(&mut self) {
        self.monitor.relock();
    }

    /// Records that unlocking failed; the next check, at most `retry` from now,
    /// tries again.
    pub fn unlock_failed(&mut self, retry: Duration) {
        self.relock();
        self.next_check = self.next_check.min(self.clock.now() + retry);
    }

    /// Records that the DEK is now stored wrapped by `version`.
    pub fn rewrapped(&mut self, version: KeyVersionId) {
        self.monitor.rewrapped(version);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use pgcmk_keyprovider::{KeyDescription, KeyError, KeyInfo, KeyReference};

    use super::*;
    use crate::clock::ManualClock;

    /// How the fake vault answers.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Vault {
        Grants,
        Denies,
        Unreachable,
    }

    /// A KEK in a fake vault: "wraps" by tagging the DEK with the current version,
    /// and counts what it was asked.
    struct FakeKek {
        reference: KeyReference,
        state: Mutex<FakeState>,
    }

    struct FakeState {
        vault: Vault,
        current: KeyVersionId,
        unwraps: usize,
        wraps: usize,
    }

    fn version(v: char) -> KeyVersionId {
        KeyVersionId::parse(&format!(
            "https://vault:1/keys/k/{}",
            v.to_string().repeat(32)
        ))
        .unwrap()
    }

    impl FakeKek {
        fn new() -> Self {
            Self {
                reference: KeyReference::parse("https://vault:1/keys/k").unwrap(),
                state: Mutex::new(FakeState {
                    vault: Vault::Grants,
                    current: version('a'),
                    unwraps: 0,
                    wraps: 0,
                }),
            }
        }

        fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
            self.state.lock().unwrap()
        }

        fn set(&self, vault: Vault) {
            self.state().vault = vault;
        }

        fn refusal(&self) -> Option<KeyError> {
            match self.state().vault {
                Vault::Grants => None,
                Vault::Denies => Some(KeyError::Denied {
                    reason: "403 Forbidden".into(),
                }),
                Vault::Unreachable => Some(KeyError::Transient {
                    reason: "connection refused".into(),
                }),
            }
        }
    }

    impl KeyEncryptionKey for FakeKek {
        fn reference(&self) -> &KeyReference {
            &self.reference
        }

        fn info(&self) -> Result<KeyInfo, KeyError> {
            match self.refusal() {
                Some(e) => Err(e),
                None => Ok(KeyInfo {
                    current: self.state().current.clone(),
                    size_bits: 2048,
                    enabled: true,
                }),
            }
        }

        /// The monitor never asks for this: a key check is an unwrap and `info`.
        fn describe(&self) -> Result<KeyDescription, KeyError> {
            Err(KeyError::Invalid {
                reason: "the fake KEK describes nothing".into(),
            })
        }

        /// The fake key has one version: its current one.
        fn version_info(&self, _: Option<&KeyVersionId>) -> Result<KeyInfo, KeyError> {
            self.info()
        }

        fn wrap(&self, dek: &Dek) -> Result<WrappedDek, KeyError> {
            if let Some(e) = self.refusal() {
                return Err(e);
            }
            let mut state = self.state();
            state.wraps += 1;
            Ok(WrappedDek {
                kek: state.current.clone(),
                algorithm: "FAKE".into(),
                ciphertext: dek.expose_secret().to_vec(),
            })
        }

        fn unwrap(&self, wrapped: &WrappedDek) -> Result<Dek, KeyError> {
            if let Some(e) = self.refusal() {
                return Err(e);
            }
            self.state().unwraps += 1;
            Ok(Dek::from_slice(&wrapped.ciphertext).unwrap())
        }
    }

    /// The server's state as its DBA sees it.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Seen {
        Starting,
        Ready,
        Inaccessible(String),
    }

    /// A node agent reduced to its key monitor: a manual clock, the fake KEK, the
    /// stored wrapped DEK, and the state the actions lead to, driven the way the
    /// agent's loop drives it (a look at the watch every tick).
    struct Agent<'c> {
        clock: &'c ManualClock,
        kek: FakeKek,
        wrapped: WrappedDek,
        watch: KeyWatch<&'c ManualClock>,
        seen: Seen,
        checks: Vec<Duration>,
        started: Instant,
    }

    const TICK: Duration = Duration::from_millis(100);
    const CONFIG: MonitorConfig = MonitorConfig {
        interval: Duration::from_secs(60),
        grace: Duration::from_secs(300),
        first_retry: Duration::from_secs(1),
    };

    impl<'c> Agent<'c> {
        fn start(clock: &'c ManualClock) -> Self {
            let kek = FakeKek::new();
            let wrapped = kek.wrap(&Dek::generate().unwrap()).unwrap();
            Self {
                watch: KeyWatch::new(clock, CONFIG, wrapped.kek.clone()),
                clock,
                kek,
                wrapped,
                seen: Seen::Starting,
                checks: Vec::new(),
                started: clock.now(),
            }
        }

        /// One tick of the agent's loop: a check when one is due, its actions
        /// carried out, then the clock moves on by a tick.
        fn tick(&mut self) {
            if self.watch.due() {
                self.checks.push(self.clock.now() - self.started);
                let checked = self.watch.check(&self.kek, &self.wrapped);
                for action in checked.actions {
                    match action {
                        Action::Unlock => {
                            assert!(checked.dek.is_some(), "unlock without a DEK");
                            self.seen = Seen::Ready;
                        }
                        Action::Lock(reason) => self.seen = Seen::Inaccessible(reason),
                        Action::Rewrap(v) => {
                            let dek = Dek::from_slice(&self.wrapped.ciphertext).unwrap();
                            self.wrapped = self.kek.wrap(&dek).unwrap();
                            assert_eq!(self.wrapped.kek, v);
                            self.watch.rewrapped(v);
                        }
                    }
                }
            }
            self.clock.advance(TICK);
        }

        /// Runs the loop for `span` of the manual clock.
        fn run_for(&mut self, span: Duration) {
            let until = self.clock.now() + span;
            while self.clock.now() < until {
                self.tick();
            }
        }

        /// Runs the loop until the next check has been made; how long that took.
        fn run_to_next_check(&mut self) -> Duration {
            let from = self.clock.now();
            let before = self.checks.len();
            while self.checks.len() == before {
                self.tick();
            }
            self.checks[before] - (from - self.started)
        }

        /// Started, and Ready after the first check.
        fn ready(clock: &'c ManualClock) -> Self {
            let mut agent = Self::start(clock);
            agent.tick();
            assert_eq!(agent.seen, Seen::Ready, "not Ready after the first check");
            agent
        }

        fn is_inaccessible(&self) -> bool {
            matches!(self.seen, Seen::Inaccessible(_))
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_first_check_is_at_once_then_one_every_interval() {
        let clock = ManualClock::new();
        let mut agent = Agent::ready(&clock);
        agent.run_for(secs(3 * 60));
        assert_eq!(agent.checks, [secs(0), secs(60), secs(120), secs(180)]);
        assert_eq!(agent.seen, Seen::Ready);
        assert_eq!(agent.kek.state().unwraps, 4, "every check is a real unwrap");
    }

    #[test]
    fn a_vault_outage_keeps_the_server_ready_through_the_grace_period_then_locks_it() {
        let clock = ManualClock::new();
        let mut agent = Agent::ready(&clock);
        agent.run_for(secs(30));
        agent.kek.set(Vault::Unreachable);
        agent.run_to_next_check();
        // The grace period runs from the first failed check, one tick ago.
        let failing_since = (&clock).now() - TICK;
        // Retried with back-off (1, 2, 4, ... s, capped at the interval) and never
        // locked within the grace period.
        agent.run_for(CONFIG.grace - TICK * 2);
        assert_eq!(agent.seen, Seen::Ready, "locked within the grace period");
        let retries: Vec<Duration> = agent
            .checks
            .windows(2)
            .skip(1)
            .map(|w| w[1] - w[0])
            .take(7)
            .collect();
        assert_eq!(
            retries,
            [1, 2, 4, 8, 16, 32, 60].map(secs),
            "back-off of the retries"
        );
        // Locked when the grace period ends, with the reason.
        agent.run_for(TICK * 2);
        match &agent.seen {
            Seen::Inaccessible(reason) => {
                assert!(reason.contains("unreachable"), "{reason}");
                assert!(reason.contains("grace period 300s"), "{reason}");
            }
            other => panic!("{other:?} after the grace period of an outage"),
        }
        assert_eq!(
            agent.checks.last().copied(),
            Some(failing_since - agent.started + CONFIG.grace),
            "not locked by a check at the end of the grace period"
        );
    }

    #[test]
    fn a_vault_back_within_the_grace_period_leaves_the_server_ready_and_checks_steady() {
        let clock = ManualClock::new();
        let mut agent = Agent::ready(&clock);
        agent.run_for(secs(60));
        agent.kek.set(Vault::Unreachable);
        agent.run_for(secs(200));
        agent.kek.set(Vault::Grants);
        agent.run_to_next_check();
        agent.run_to_next_check();
        let [.., back, next] = agent.checks[..] else {
            unreachable!("checks were made")
        };
        let steady = next - back;
        assert_eq!(agent.seen, Seen::Ready);
        assert_eq!(
            steady, CONFIG.interval,
            "not back to one check per interval"
        );
        // A later outage gets a whole grace period again.
        agent.kek.set(Vault::Unreachable);
        agent.run_for(CONFIG.grace - secs(1));
        assert_eq!(agent.seen, Seen::Ready, "the grace period was not reset");
    }

    #[test]
    fn a_denial_locks_the_server_at_the_next_check_without_a_grace_period() {
        let clock = ManualClock::new();
        let mut agent = Agent::ready(&clock);
        agent.run_for(secs(10));
        agent.kek.set(Vault::Denies);
        let took = agent.run_to_next_check();
        assert!(took <= CONFIG.interval, "{took:?}");
        assert_eq!(
            agent.seen,
            Seen::Inaccessible("key access denied: 403 Forbidden".into())
        );
    }

    #[test]
    fn access_back_makes_the_server_ready_at_the_next_check() {
        let clock = ManualClock::new();
        let mut agent = Agent::ready(&clock);
        agent.kek.set(Vault::Denies);
        agent.run_to_next_check();
        assert!(agent.is_inaccessible());
        // Still checked every interval while locked, and nothing else unlocks it.
        agent.run_for(CONFIG.interval * 2 - TICK);
        assert!(agent.is_inaccessible(), "unlocked while access is denied");
        agent.kek.set(Vault::Grants);
        let took = agent.run_to_next_check();
        assert!(took <= CONFIG.interval, "{took:?}");
        assert_eq!(agent.seen, Seen::Ready);
    }

    #[test]
    fn a_new_version_of_a_versionless_key_is_adopted_at_the_next_check() {
        let clock = ManualClock::new();
        let mut agent = Agent::ready(&clock);
        agent.run_for(secs(5));
        agent.kek.state().current = version('b');
        let took = agent.run_to_next_check();
        assert!(took <= CONFIG.interval, "{took:?}");
        assert_eq!(
            agent.wrapped.kek,
            version('b'),
            "the DEK was not re-wrapped"
        );
        assert_eq!(
            agent.kek.state().wraps,
            2,
            "one wrap at start, one to adopt"
        );
        // Once: the next checks find nothing to do.
        agent.run_for(CONFIG.interval * 2);
        assert_eq!(agent.kek.state().wraps, 2, "re-wrapped again");
        assert_eq!(agent.seen, Seen::Ready);
    }

    #[test]
    fn check_now_makes_a_check_due_at_once() {
        let clock = ManualClock::new();
        let mut agent = Agent::ready(&clock);
        agent.run_for(secs(5));
        assert!(!agent.watch.due());
        agent.watch.check_now();
        assert!(agent.watch.due());
    }

    #[test]
    fn a_failed_unlock_is_retried_after_its_delay_not_a_whole_interval() {
        let clock = ManualClock::new();
        let mut agent = Agent::start(&clock);
        let checked = agent.watch.check(&agent.kek, &agent.wrapped);
        assert!(matches!(checked.actions[..], [Action::Unlock]));
        agent.watch.unlock_failed(secs(2));
        clock.advance(secs(2) - TICK);
        assert!(!agent.watch.due(), "retried before its delay");
        clock.advance(TICK);
        assert!(agent.watch.due(), "not retried after its delay");
        let checked = agent.watch.check(&agent.kek, &agent.wrapped);
        assert!(
            matches!(checked.actions[..], [Action::Unlock]),
            "the retry does not unlock: {:?}",
            checked.actions
        );
    }
}
