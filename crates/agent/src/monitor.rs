//! The key monitor's decisions, as a pure state machine: check results and the
//! clock go in, actions come out. The node agent performs the checks (a real
//! unwrap of the wrapped DEK plus a read of the key's current version) and carries
//! out the actions; this module only decides, so every rule is unit-tested here.
//!
//! Rules (DESIGN.md, "Server states"):
//! - a definitive denial locks the server at once;
//! - transient failures are retried with exponential backoff, and lock the server
//!   only once they have lasted the grace period;
//! - a successful check unlocks a locked server;
//! - when the key's current version differs from the one that wrapped the DEK
//!   (versionless reference after a rotation, or a new pinned version), the DEK is
//!   re-wrapped to the current version.

use std::time::{Duration, Instant};

use pgcmk_keyprovider::KeyVersionId;

/// Timing of the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorConfig {
    /// Time between checks while nothing fails.
    pub interval: Duration,
    /// How long transient failures may last before the server is locked.
    pub grace: Duration,
    /// First retry delay after a transient failure; doubles up to `interval`.
    pub first_retry: Duration,
}

impl MonitorConfig {
    /// Production defaults: check every 60 s, 5 minutes' grace, first retry after 1 s.
    pub const DEFAULT: MonitorConfig = MonitorConfig {
        interval: Duration::from_secs(60),
        grace: Duration::from_secs(300),
        first_retry: Duration::from_secs(1),
    };
}

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// The wrapped DEK unwrapped and the key's current version was read.
    Ok {
        /// The version the key reference points to now.
        current: KeyVersionId,
    },
    /// The vault definitively refused (revoked, disabled, expired, deleted).
    Denied(String),
    /// The vault could not be reached or failed; may pass.
    Transient(String),
}

/// What the agent must do after a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop PostgreSQL, unmount, zeroize the DEK, record the reason.
    Lock(String),
    /// Mount with the freshly unwrapped DEK and start PostgreSQL.
    Unlock,
    /// Wrap the DEK with this key version and store the result durably.
    Rewrap(KeyVersionId),
}

/// The monitor's decision: actions to take now, and when to check next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// In order.
    pub actions: Vec<Action>,
    /// Delay until the next check.
    pub next_check: Duration,
}

/// The key monitor's state.
#[derive(Clone, Debug)]
pub struct Monitor {
    config: MonitorConfig,
    locked: bool,
    wrapped_by: KeyVersionId,
    /// Start of the current run of transient failures, and its length.
    failing_since: Option<(Instant, u32)>,
}

impl Monitor {
    /// A monitor for a DEK wrapped by `wrapped_by`. It starts locked: the first
    /// successful check unlocks.
    pub fn new(config: MonitorConfig, wrapped_by: KeyVersionId) -> Self {
        Self {
            config,
            locked: true,
            wrapped_by,
            failing_since: None,
        }
    }

    #[cfg(test)]
    /// True while the server must not serve.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    #[cfg(test)]
    /// The key version that wrapped the stored DEK.
    pub fn wrapped_by(&self) -> &KeyVersionId {
        &self.wrapped_by
    }

    /// Records that unlocking failed (mount or PostgreSQL): the server stays locked
    /// and the next successful check tries to unlock again.
    pub fn relock(&mut self) {
        self.locked = true;
    }

    /// Records that the DEK is now stored wrapped by `version`.
    pub fn rewrapped(&mut self, version: KeyVersionId) {
        self.wrapped_by = version;
    }

    /// Decides what to do about one check made at `now`.
    pub fn on_check(&mut self, now: Instant, result: CheckResult) -> Decision {
        let interval = self.config.interval;
        match result {
            CheckResult::Ok { current } => {
                self.failing_since = None;
                let mut actions = Vec::new();
                if self.locked {
                    self.locked = false;
                    actions.push(Action::Unlock);
                }
                if current != self.wrapped_by {
                    actions.push(Action::Rewrap(current));
                }
                Decision {
                    actions,
                    next_check: interval,
                }
            }
            CheckResult::Denied(reason) => {
                self.failing_since = None;
                Decision {
                    actions: self.lock(reason),
                    next_check: interval,
                }
            }
            CheckResult::Transient(reason) => {
                let (since, failures) = match self.failing_since {
                    Some((since, n)) => (since, n + 1),
                    None => (now, 1),
                };
                self.failing_since = Some((since, failures));
                let failing_for = now.saturating_duration_since(since);
                let actions = if failing_for >= self.config.grace {
                    self.lock(format!(
                        "key vault unreachable for {}s (grace period {}s): {reason}",
                        failing_for.as_secs(),
                        self.config.grace.as_secs()
                    ))
                } else {
                    Vec::new()
                };
                let backoff = self
                    .config
                    .first_retry
                    .saturating_mul(1u32 << (failures - 1).min(16))
                    .min(interval);
                // Never sleep past the end of the grace period while serving.
                let until_grace = self.config.grace.saturating_sub(failing_for);
                let next_check = if self.locked || until_grace.is_zero() {
                    backoff
                } else {
                    backoff.min(until_grace)
                };
                Decision {
                    actions,
                    next_check,
                }
            }
        }
    }

    fn lock(&mut self, reason: String) -> Vec<Action> {
        if self.locked {
            return Vec::new();
        }
        self.locked = true;
        vec![Action::Lock(reason)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(v: char) -> KeyVersionId {
        KeyVersionId::parse(&format!(
            "https://vault:1/keys/k/{}",
            v.to_string().repeat(32)
        ))
        .unwrap()
    }

    const CONFIG: MonitorConfig = MonitorConfig {
        interval: Duration::from_secs(5),
        grace: Duration::from_secs(20),
        first_retry: Duration::from_secs(1),
    };

    fn ok(v: char) -> CheckResult {
        CheckResult::Ok {
            current: version(v),
        }
    }

    /// Drives a monitor through (seconds since start, result, expected actions,
    /// expected next check in seconds) rows.
    fn run(rows: &[(u64, CheckResult, Vec<Action>, u64)]) {
        let start = Instant::now();
        let mut m = Monitor::new(CONFIG, version('a'));
        for (i, (at, result, actions, next)) in rows.iter().enumerate() {
            let d = m.on_check(start + Duration::from_secs(*at), result.clone());
            assert_eq!(&d.actions, actions, "row {i}: actions");
            assert_eq!(
                d.next_check,
                Duration::from_secs(*next),
                "row {i}: next check"
            );
            if let Some(Action::Rewrap(v)) = d.actions.last() {
                m.rewrapped(v.clone());
            }
        }
    }

    #[test]
    fn first_success_unlocks_then_steady() {
        run(&[
            (0, ok('a'), vec![Action::Unlock], 5),
            (5, ok('a'), vec![], 5),
            (10, ok('a'), vec![], 5),
        ]);
    }

    #[test]
    fn denial_locks_at_once_and_access_back_unlocks() {
        let denied = || CheckResult::Denied("403 Forbidden".into());
        run(&[
            (0, ok('a'), vec![Action::Unlock], 5),
            (5, denied(), vec![Action::Lock("403 Forbidden".into())], 5),
            (10, denied(), vec![], 5),
            (15, ok('a'), vec![Action::Unlock], 5),
        ]);
    }

    #[test]
    fn denial_at_start_keeps_it_locked_without_a_lock_action() {
        run(&[
            (0, CheckResult::Denied("key disabled".into()), vec![], 5),
            (5, ok('a'), vec![Action::Unlock], 5),
        ]);
    }

    #[test]
    fn transient_failures_back_off_and_lock_only_after_grace() {
        let t = || CheckResult::Transient("connection refused".into());
        let lock = Action::Lock(
            "key vault unreachable for 20s (grace period 20s): connection refused".into(),
        );
        run(&[
            (0, ok('a'), vec![Action::Unlock], 5),
            (5, t(), vec![], 1),
            (6, t(), vec![], 2),
            (8, t(), vec![], 4),
            (12, t(), vec![], 5),
            (17, t(), vec![], 5),
            (22, t(), vec![], 3), // capped at the end of the grace period
            (25, t(), vec![lock], 5),
            (30, t(), vec![], 5),
            (35, ok('a'), vec![Action::Unlock], 5),
        ]);
    }

    #[test]
    fn a_success_resets_the_grace_period() {
        let t = || CheckResult::Transient("503".into());
        run(&[
            (0, ok('a'), vec![Action::Unlock], 5),
            (5, t(), vec![], 1),
            (20, t(), vec![], 2),
            (24, ok('a'), vec![], 5),
            (29, t(), vec![], 1),
            (45, t(), vec![], 2), // 16 s into the new run: still within grace
        ]);
    }

    #[test]
    fn denial_during_transient_run_locks_at_once() {
        run(&[
            (0, ok('a'), vec![Action::Unlock], 5),
            (5, CheckResult::Transient("timeout".into()), vec![], 1),
            (
                6,
                CheckResult::Denied("revoked".into()),
                vec![Action::Lock("revoked".into())],
                5,
            ),
        ]);
    }

    #[test]
    fn new_current_version_is_adopted_once() {
        run(&[
            (0, ok('a'), vec![Action::Unlock], 5),
            (5, ok('b'), vec![Action::Rewrap(version('b'))], 5),
            (10, ok('b'), vec![], 5),
        ]);
    }

    #[test]
    fn unlock_and_rewrap_together_when_rotated_while_locked() {
        run(&[
            (0, CheckResult::Denied("disabled".into()), vec![], 5),
            (
                5,
                ok('c'),
                vec![Action::Unlock, Action::Rewrap(version('c'))],
                5,
            ),
        ]);
    }

    #[test]
    fn failed_rewrap_is_retried_on_the_next_check() {
        let start = Instant::now();
        let mut m = Monitor::new(CONFIG, version('a'));
        m.on_check(start, ok('a'));
        let d = m.on_check(start + Duration::from_secs(5), ok('b'));
        assert_eq!(d.actions, vec![Action::Rewrap(version('b'))]);
        // The agent could not store the new wrapping: no `rewrapped` call.
        let d = m.on_check(start + Duration::from_secs(10), ok('b'));
        assert_eq!(d.actions, vec![Action::Rewrap(version('b'))]);
        m.rewrapped(version('b'));
        assert_eq!(m.wrapped_by(), &version('b'));
        assert!(m
            .on_check(start + Duration::from_secs(15), ok('b'))
            .actions
            .is_empty());
        assert!(!m.is_locked());
    }

    #[test]
    fn failed_unlock_is_retried_on_the_next_success() {
        let start = Instant::now();
        let mut m = Monitor::new(CONFIG, version('a'));
        assert_eq!(m.on_check(start, ok('a')).actions, vec![Action::Unlock]);
        m.relock();
        assert!(m.is_locked());
        let d = m.on_check(start + Duration::from_secs(5), ok('a'));
        assert_eq!(d.actions, vec![Action::Unlock]);
    }
}
