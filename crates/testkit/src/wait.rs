//! Waiting for a condition with a deadline, instead of sleeping for a guessed time.

use std::time::{Duration, Instant};

/// Checks `condition` every `every` until it holds; the time it took, or `None`
/// once `limit` has passed.
pub fn poll(
    limit: Duration,
    every: Duration,
    mut condition: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if condition() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Checks `condition` every 100 ms until it holds; the time it took. Panics naming
/// `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, condition: impl FnMut() -> bool) -> Duration {
    poll(limit, Duration::from_millis(100), condition)
        .unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}
