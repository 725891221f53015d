//! A redb database that comes back after an I/O error. redb refuses every further
//! transaction once a write has failed (a full disk: "Previous I/O error occurred.
//! Please close and re-open the database"), so a service that keeps one handle would
//! stay broken until restarted, long after the disk has room again. This handle
//! closes the database after such an error, once the operations in flight are done,
//! and the next operation opens it again (redb repairs it if it must).

use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};

/// Opens the database file at a path (with the service's settings).
pub type Opener = fn(&Path) -> Result<redb::Database, redb::DatabaseError>;

/// A database that is reopened after an I/O error.
pub struct ReopeningDb {
    path: PathBuf,
    open: Opener,
    db: RwLock<Option<redb::Database>>,
}

/// Whether `e` leaves redb refusing transactions until the database is reopened.
pub fn needs_reopen(e: &redb::StorageError) -> bool {
    matches!(
        e,
        redb::StorageError::Io(_) | redb::StorageError::PreviousIo
    )
}

/// [`needs_reopen`] for redb's catch-all error.
pub fn error_needs_reopen(e: &redb::Error) -> bool {
    matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo)
}

impl ReopeningDb {
    /// Opens the database at `path` with `open`.
    pub fn open(path: &Path, open: Opener) -> Result<Self, redb::DatabaseError> {
        let db = open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            open,
            db: RwLock::new(Some(db)),
        })
    }

    /// The open database, opening it again first if an I/O error closed it.
    fn db(&self) -> Result<RwLockReadGuard<'_, Option<redb::Database>>, redb::DatabaseError> {
        let guard = self.db.read().unwrap_or_else(|e| e.into_inner());
        if guard.is_some() {
            return Ok(guard);
        }
        drop(guard);
        {
            let mut slot = self.db.write().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some((self.open)(&self.path)?);
                tracing::info!("{} is open again", self.path.display());
            }
        }
        Ok(self.db.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Runs `op` on the open database. When it fails with an error after which redb
    /// must be reopened (`reopen` says which: [`needs_reopen`] of the storage failure
    /// inside it), the database is closed; the next operation opens it again.
    pub fn with<R, E: From<redb::DatabaseError> + std::fmt::Display>(
        &self,
        op: impl FnOnce(&redb::Database) -> Result<R, E>,
        reopen: impl Fn(&E) -> bool,
    ) -> Result<R, E> {
        let guard = self.db()?;
        let result = op(guard.as_ref().expect("db() returns an open database"));
        drop(guard);
        if let Err(e) = &result {
            if reopen(e) {
                let mut slot = self.db.write().unwrap_or_else(|e| e.into_inner());
                if slot.take().is_some() {
                    tracing::warn!(
                        "{} failed ({e}): closing it to open it again",
                        self.path.display()
                    );
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use redb::ReadableDatabase;

    use super::*;

    const T: redb::TableDefinition<'static, &str, u64> = redb::TableDefinition::new("t");

    fn open(path: &Path) -> Result<redb::Database, redb::DatabaseError> {
        redb::Database::create(path)
    }

    #[test]
    fn an_io_error_closes_the_database_and_the_next_operation_opens_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let db = ReopeningDb::open(&dir.path().join("db.redb"), open).unwrap();
        let write = |v: u64| -> Result<(), redb::Error> {
            db.with(
                |d| {
                    let tx = d.begin_write()?;
                    tx.open_table(T)?.insert("k", v)?;
                    tx.commit()?;
                    Ok(())
                },
                |_| false,
            )
        };
        write(1).unwrap();
        // An operation failing with an I/O error closes it...
        let failed: Result<(), redb::Error> = db.with(
            |_| Err(redb::Error::Io(std::io::Error::other("disk full"))),
            error_needs_reopen,
        );
        assert!(failed.is_err());
        assert!(db.db.read().unwrap().is_none());
        // ...and the next one opens it again, with what was committed.
        write(2).unwrap();
        let read: u64 = db
            .with(
                |d| -> Result<u64, redb::Error> {
                    Ok(d.begin_read()?.open_table(T)?.get("k")?.unwrap().value())
                },
                |_| false,
            )
            .unwrap();
        assert_eq!(read, 2);
    }
}
