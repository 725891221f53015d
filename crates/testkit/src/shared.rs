//! A fixture shared by the tests of one binary: the first test that asks makes it,
//! every test running at the same time gets the same one, and the last test to let
//! go of it drops it (its processes stopped by their guards), also when a test
//! fails. A static is never dropped; this is, so no process outlives the binary.

use std::sync::{Arc, Mutex, PoisonError, Weak};

/// A slot for one fixture of type `T`; declare it as a `static`.
pub struct Shared<T> {
    slot: Mutex<Weak<T>>,
}

impl<T> Shared<T> {
    /// An empty slot.
    pub const fn new() -> Self {
        Self {
            slot: Mutex::new(Weak::new()),
        }
    }

    /// The fixture in use, or a new one from `make` when no test holds one. Tests
    /// asking meanwhile wait for `make` rather than making their own.
    pub fn get(&self, make: impl FnOnce() -> T) -> Arc<T> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(fixture) = slot.upgrade() {
            return fixture;
        }
        let fixture = Arc::new(make());
        *slot = Arc::downgrade(&fixture);
        fixture
    }
}

impl<T> Default for Shared<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static MADE: AtomicUsize = AtomicUsize::new(0);
    static DROPPED: AtomicUsize = AtomicUsize::new(0);

    struct Counted;

    impl Drop for Counted {
        fn drop(&mut self) {
            DROPPED.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn one_fixture_while_held_dropped_by_the_last_holder_then_made_again() {
        static FIXTURE: Shared<Counted> = Shared::new();
        let make = || {
            MADE.fetch_add(1, Ordering::SeqCst);
            Counted
        };
        let first = FIXTURE.get(make);
        let second = FIXTURE.get(make);
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(MADE.load(Ordering::SeqCst), 1);
        drop(first);
        assert_eq!(DROPPED.load(Ordering::SeqCst), 0, "dropped while held");
        drop(second);
        assert_eq!(
            DROPPED.load(Ordering::SeqCst),
            1,
            "not dropped by the last holder"
        );
        let _third = FIXTURE.get(make);
        assert_eq!(MADE.load(Ordering::SeqCst), 2);
    }
}
