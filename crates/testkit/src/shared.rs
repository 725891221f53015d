//! A fixture shared by the tests of one binary: the first test that asks makes it,
//! every test running or waiting for it at the same time gets the same one, and the
//! last test to let go of it drops it (its processes stopped by their guards), also
//! when a test fails. A static is never dropped; this is, so no process outlives
//! the binary.
//!
//! A fixture that no test holds for a moment is made again by the next test that
//! asks, so a test of the binary that does not use it still holds it while it runs:
//! then it stays up from the first test to the last.

use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A slot for one fixture of type `T`; declare it as a `static`.
pub struct Shared<T> {
    slot: Mutex<Option<Arc<T>>>,
    /// Tests holding the fixture or waiting for it.
    users: AtomicUsize,
}

/// A test's hold on a shared fixture; the fixture is dropped with the last hold.
pub struct Held<T: 'static> {
    shared: &'static Shared<T>,
    fixture: Arc<T>,
}

impl<T> Shared<T> {
    /// An empty slot.
    pub const fn new() -> Self {
        Self {
            slot: Mutex::new(None),
            users: AtomicUsize::new(0),
        }
    }

    /// The fixture in use, or a new one from `make` when no test holds one. Tests
    /// asking meanwhile wait for `make` rather than making their own.
    pub fn get(&'static self, make: impl FnOnce() -> T) -> Held<T> {
        // Counted before waiting, so a test that lets go meanwhile keeps it up.
        self.users.fetch_add(1, Ordering::SeqCst);
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        let fixture = match slot.as_ref() {
            Some(fixture) => fixture.clone(),
            None => {
                // A failed `make` is no user: the next test tries again.
                let unwinding = Unregister(self);
                let made = Arc::new(make());
                std::mem::forget(unwinding);
                slot.insert(made).clone()
            }
        };
        Held {
            shared: self,
            fixture,
        }
    }

    /// Counts a user out; the last one takes the fixture out of the slot.
    fn release(&self) -> Option<Arc<T>> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if self.users.fetch_sub(1, Ordering::SeqCst) == 1 {
            slot.take()
        } else {
            None
        }
    }
}

impl<T> Default for Shared<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts a user out when its `make` panicked.
struct Unregister<T: 'static>(&'static Shared<T>);

impl<T> Drop for Unregister<T> {
    fn drop(&mut self) {
        self.0.users.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<T> Deref for Held<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.fixture
    }
}

impl<T> Drop for Held<T> {
    fn drop(&mut self) {
        // Dropped outside the slot's lock: stopping its processes takes a while.
        drop(self.shared.release());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static MADE: AtomicUsize = AtomicUsize::new(0);
    static DROPPED: AtomicUsize = AtomicUsize::new(0);

    struct Counted;

    impl Drop for Counted {
        fn drop(&mut self) {
            DROPPED.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn make() -> Counted {
        MADE.fetch_add(1, Ordering::SeqCst);
        Counted
    }

    #[test]
    fn one_fixture_while_held_dropped_by_the_last_holder_then_made_again() {
        static FIXTURE: Shared<Counted> = Shared::new();
        let first = FIXTURE.get(make);
        let second = FIXTURE.get(make);
        assert!(Arc::ptr_eq(&first.fixture, &second.fixture));
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

    #[test]
    fn a_test_waiting_for_the_fixture_keeps_it_up_when_its_maker_lets_go() {
        static FIXTURE: Shared<&'static str> = Shared::new();
        let (waiting, waited) = std::sync::mpsc::channel();
        let maker = FIXTURE.get(|| {
            let waiter = std::thread::spawn(move || {
                let held = FIXTURE.get(|| "made again");
                waiting.send(*held).unwrap();
            });
            // The waiter has counted itself in before the maker lets go.
            while FIXTURE.users.load(Ordering::SeqCst) < 2 {
                std::thread::yield_now();
            }
            std::mem::forget(waiter);
            "made once"
        });
        drop(maker);
        assert_eq!(waited.recv().unwrap(), "made once");
    }

    #[test]
    fn a_panicking_make_leaves_the_slot_for_the_next_test() {
        static FIXTURE: Shared<u8> = Shared::new();
        let failed = std::panic::catch_unwind(|| FIXTURE.get(|| panic!("cannot start")));
        assert!(failed.is_err());
        assert_eq!(FIXTURE.users.load(Ordering::SeqCst), 0);
        assert_eq!(*FIXTURE.get(|| 7), 7);
    }
}
