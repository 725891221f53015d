//! How many requests that never authenticated get an audit entry of their own. Every
//! request is audited, but an anonymous one costs its sender nothing, so without a
//! budget a local client could grow the trail (which can never be shortened without
//! breaking its chain) as fast as the disk takes it. Beyond a sustained rate (with a
//! burst), anonymous requests are counted instead, and the next anonymous entry
//! written says how many were left out. Entries of authenticated callers are never
//! left out.

use std::sync::Mutex;
use std::time::Instant;

/// Anonymous entries written per second, sustained.
const RATE_PER_SEC: f64 = 20.0;
/// Anonymous entries written in a burst (after a quiet time).
const BURST: f64 = 200.0;

/// A token bucket for anonymous audit entries, with the count of those left out.
#[derive(Debug)]
pub struct AnonymousBudget {
    state: Mutex<State>,
    rate_per_sec: f64,
    burst: f64,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    refilled: Instant,
    left_out: u64,
}

/// Whether an anonymous request gets its entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Write it; it says how many anonymous requests were left out before it.
    Record {
        /// Anonymous requests not recorded since the previous anonymous entry.
        left_out: u64,
    },
    /// Leave it out (counted).
    LeaveOut,
}

impl Default for AnonymousBudget {
    fn default() -> Self {
        Self::new(RATE_PER_SEC, BURST)
    }
}

impl AnonymousBudget {
    /// A budget of `rate_per_sec` entries per second with bursts of `burst`.
    pub fn new(rate_per_sec: f64, burst: f64) -> Self {
        Self {
            state: Mutex::new(State {
                tokens: burst,
                refilled: Instant::now(),
                left_out: 0,
            }),
            rate_per_sec,
            burst,
        }
    }

    /// Takes one entry's worth of budget, at `now`.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(s.refilled).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.rate_per_sec).min(self.burst);
        s.refilled = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            Admission::Record {
                left_out: std::mem::take(&mut s.left_out),
            }
        } else {
            s.left_out += 1;
            Admission::LeaveOut
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_the_rate_and_the_next_entry_counts_what_was_left_out() {
        let budget = AnonymousBudget::new(10.0, 3.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(budget.admit(t0), Admission::Record { left_out: 0 });
        }
        assert_eq!(budget.admit(t0), Admission::LeaveOut);
        assert_eq!(budget.admit(t0), Admission::LeaveOut);
        // 100 ms later one token came back.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(budget.admit(t1), Admission::Record { left_out: 2 });
        assert_eq!(budget.admit(t1), Admission::LeaveOut);
        // A quiet time refills the burst, never beyond it.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(matches!(budget.admit(t2), Admission::Record { .. }));
        }
        assert_eq!(budget.admit(t2), Admission::LeaveOut);
    }
}
