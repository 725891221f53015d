//! The service's notion of "now" for everything whose behaviour depends on time:
//! token lifetimes, key validity windows (`nbf`/`exp`), soft-delete dates and rotation
//! policies. Production uses [`SystemClock`]; tests inject a [`ManualClock`] and move it
//! forward instead of waiting on the wall clock.

use std::sync::atomic::{AtomicI64, Ordering};

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// Seconds since the Unix epoch.
    fn now_unix(&self) -> i64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        crate::now_unix()
    }
}

/// A clock that stands still until told to move: the wall clock at creation plus
/// whatever [`advance`](Self::advance) added.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    /// A clock set to the current wall-clock time.
    pub fn new() -> Self {
        Self {
            now: AtomicI64::new(crate::now_unix()),
        }
    }

    /// Moves the clock forward by `seconds`.
    pub fn advance(&self, seconds: i64) {
        self.now.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now_unix(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::new();
        let start = clock.now_unix();
        assert!((start - SystemClock.now_unix()).abs() <= 1);
        clock.advance(86_400);
        assert_eq!(clock.now_unix(), start + 86_400);
    }
}
