//! The time the key monitor goes by: the system's monotonic clock in the agent, a
//! clock that moves only when told in tests, so a test walks the monitor through
//! intervals, back-off and grace periods without waiting for them.

use std::time::Instant;

/// A monotonic clock.
pub trait Clock {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The system's monotonic clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

#[cfg(test)]
pub use manual::ManualClock;

#[cfg(test)]
mod manual {
    use std::cell::Cell;
    use std::time::{Duration, Instant};

    use super::Clock;

    /// A clock that stands still until [`ManualClock::advance`].
    #[derive(Debug)]
    pub struct ManualClock(Cell<Instant>);

    impl ManualClock {
        /// A clock standing at some instant.
        pub fn new() -> Self {
            Self(Cell::new(Instant::now()))
        }

        /// Moves the clock `by` forward.
        pub fn advance(&self, by: Duration) {
            self.0.set(self.0.get() + by);
        }
    }

    impl Clock for &ManualClock {
        fn now(&self) -> Instant {
            self.0.get()
        }
    }
}
