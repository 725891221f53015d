//! Exponential back-off for restarting what crashed. The first retry comes at once
//! — a single crash should cost seconds (DESIGN.md, "Recovery is prompt") — and
//! each further failure in a row waits twice as long, up to a cap, so that
//! something that cannot start does not spin.

use std::time::Duration;

/// Delays between attempts: 0, `first`, 2 × `first`, ... capped at `cap`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// A back-off with no failure yet.
    pub const fn new(first: Duration, cap: Duration) -> Self {
        Self {
            first,
            cap,
            failures: 0,
        }
    }

    /// Records a failure; returns how long to wait before the next attempt.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        match self.failures {
            1 => Duration::ZERO,
            n => self
                .first
                .saturating_mul(1 << (n - 2).min(16))
                .min(self.cap),
        }
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a success: the next failure is retried at once again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// "now" or "in N s", for reasons and events.
pub fn describe_delay(delay: Duration) -> String {
    if delay.is_zero() {
        "now".into()
    } else {
        format!("in {} s", delay.as_secs_f32().ceil())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_once_then_doubling_up_to_the_cap_and_at_once_after_a_success() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let delays: Vec<u64> = (0..7).map(|_| b.failed().as_secs()).collect();
        assert_eq!(delays, [0, 1, 2, 4, 8, 10, 10]);
        assert_eq!(b.failures(), 7);
        b.reset();
        assert_eq!(b.failed(), Duration::ZERO);
        assert_eq!(b.failed(), Duration::from_secs(1));
    }

    #[test]
    fn delays_read_as_words() {
        assert_eq!(describe_delay(Duration::ZERO), "now");
        assert_eq!(describe_delay(Duration::from_millis(1500)), "in 2 s");
        assert_eq!(describe_delay(Duration::from_secs(30)), "in 30 s");
    }
}
