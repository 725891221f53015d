//! Per-server locking. Operations on one server (create, stop, start, delete, key
//! change, fsck) are serialized by a lock of that server's own; operations on
//! different servers never wait for each other. A create also reserves its name
//! before it looks for an existing server of that name, so two concurrent creates
//! of one name cannot both go on.

use std::collections::HashSet;
use std::sync::{Condvar, Mutex, PoisonError};

use crate::Error;

/// The names of the servers that an operation holds, and of those being created.
#[derive(Default)]
pub(super) struct ServerLocks {
    held: Mutex<HashSet<String>>,
    released: Condvar,
    creating: Mutex<HashSet<String>>,
}

/// Holds one server's lock; released on drop.
pub(super) struct ServerGuard<'a> {
    locks: &'a ServerLocks,
    name: String,
}

/// A name reserved by a create in progress; released on drop.
pub(super) struct NameReservation<'a> {
    locks: &'a ServerLocks,
    name: String,
}

impl ServerLocks {
    /// Waits for, then holds, the lock of the server named `name`.
    pub(super) fn lock(&self, name: &str) -> ServerGuard<'_> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        while held.contains(name) {
            held = self
                .released
                .wait(held)
                .unwrap_or_else(PoisonError::into_inner);
        }
        held.insert(name.to_string());
        ServerGuard {
            locks: self,
            name: name.to_string(),
        }
    }

    /// Reserves `name` for a create, or says that another create has it.
    pub(super) fn reserve(&self, name: &str) -> Result<NameReservation<'_>, Error> {
        let mut creating = self.creating.lock().unwrap_or_else(PoisonError::into_inner);
        if !creating.insert(name.to_string()) {
            return Err(Error::NameTaken(name.to_string()));
        }
        Ok(NameReservation {
            locks: self,
            name: name.to_string(),
        })
    }
}

impl Drop for ServerGuard<'_> {
    fn drop(&mut self) {
        self.locks
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.name);
        self.locks.released.notify_all();
    }
}

impl Drop for NameReservation<'_> {
    fn drop(&mut self) {
        self.locks
            .creating
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn one_name_is_reserved_once_and_freed_on_drop() {
        let locks = ServerLocks::default();
        let first = locks.reserve("db1").unwrap();
        assert!(matches!(locks.reserve("db1"), Err(Error::NameTaken(n)) if n == "db1"));
        let _other = locks.reserve("db2").unwrap();
        drop(first);
        locks.reserve("db1").unwrap();
    }

    #[test]
    fn a_server_lock_blocks_only_that_server() {
        let locks = Arc::new(ServerLocks::default());
        let held = locks.lock("slow");
        // Another server's lock is free at once.
        drop(locks.lock("other"));
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let locks = locks.clone();
            std::thread::spawn(move || {
                let _g = locks.lock("slow");
                tx.send(()).unwrap();
            })
        };
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(held);
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        waiter.join().unwrap();
    }
}
