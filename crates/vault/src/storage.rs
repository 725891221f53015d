//! Embedded, crash-safe storage (redb). Records are JSON; secrets inside them are
//! sealed by the caller before they get here. Every write commits durably before
//! the request that caused it is answered.

use std::path::Path;

use pgcmk_hostkeys::reopening_db::{needs_reopen, ReopeningDb};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::Error;

/// A table of JSON records keyed by string.
pub type JsonTable = TableDefinition<'static, &'static str, &'static [u8]>;

/// Service-wide values (TLS identity, audit head, tenant id).
pub const META: JsonTable = TableDefinition::new("meta");
/// Principals by object id.
pub const PRINCIPALS: JsonTable = TableDefinition::new("principals");
/// Vaults by name.
pub const VAULTS: JsonTable = TableDefinition::new("vaults");
/// Keys by `vault/name`.
pub const KEYS: JsonTable = TableDefinition::new("keys");
/// Key versions by `vault/name/version`.
pub const VERSIONS: JsonTable = TableDefinition::new("key_versions");
/// Audit entries committed with their state change, until the writer has appended
/// them to the chain (by request id); what is here at a start was interrupted.
pub const PENDING_AUDIT: JsonTable = TableDefinition::new("audit_pending");
/// The audit chain: entries by sequence number (1, 2, …).
pub const AUDIT: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("audit");

/// redb's page cache: small, so memory stays bounded however many keys exist.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The database handle, opened again after an I/O error (a full disk) so the service
/// serves again as soon as the disk has room, without a restart
/// ([`pgcmk_hostkeys::reopening_db`]).
pub struct Store {
    db: ReopeningDb,
}

fn open_db(path: &Path) -> Result<redb::Database, redb::DatabaseError> {
    redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(path)
}

impl Store {
    /// Opens the database at `path`, creating it and its tables if needed.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let store = Self {
            db: ReopeningDb::open(path, open_db)?,
        };
        store.write(|tx| {
            for table in [META, PRINCIPALS, VAULTS, KEYS, VERSIONS, PENDING_AUDIT] {
                tx.txn.open_table(table)?;
            }
            tx.txn.open_table(AUDIT)?;
            Ok(())
        })?;
        Ok(store)
    }

    /// Runs `op` on the open database.
    fn with_db<R>(&self, op: impl FnOnce(&redb::Database) -> Result<R, Error>) -> Result<R, Error> {
        self.db
            .with(op, |e| e.storage_cause().is_some_and(needs_reopen))
    }

    /// Runs `f` in one write transaction and commits it durably; nothing is written
    /// if `f` fails.
    pub fn write<R>(&self, f: impl FnOnce(&WriteTx<'_>) -> Result<R, Error>) -> Result<R, Error> {
        self.with_db(|db| {
            let txn = db.begin_write()?;
            let result = f(&WriteTx { txn: &txn })?;
            txn.commit()?;
            Ok(result)
        })
    }

    /// Reads one record.
    pub fn get<T: DeserializeOwned>(
        &self,
        table: JsonTable,
        key: &str,
    ) -> Result<Option<T>, Error> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(table)?;
            match table.get(key)? {
                Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
                None => Ok(None),
            }
        })
    }

    /// Records whose key starts with `prefix` and sorts after `after` (exclusive),
    /// in key order, at most `limit`.
    pub fn scan<T: DeserializeOwned>(
        &self,
        table: JsonTable,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, T)>, Error> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(table)?;
            scan(&table, prefix, after, limit)
        })
    }

    /// Audit entries with sequence numbers in `from..`, in order, at most `limit`.
    pub fn audit_range(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(AUDIT)?;
            let mut out = Vec::new();
            for item in table.range(from..)?.take(limit) {
                let (k, v) = item?;
                out.push((k.value(), v.value().to_vec()));
            }
            Ok(out)
        })
    }
}

/// A write transaction in progress.
pub struct WriteTx<'a> {
    txn: &'a redb::WriteTransaction,
}

impl WriteTx<'_> {
    /// Reads one record as of this transaction.
    pub fn get<T: DeserializeOwned>(
        &self,
        table: JsonTable,
        key: &str,
    ) -> Result<Option<T>, Error> {
        let table = self.txn.open_table(table)?;
        let value = table.get(key)?;
        match value {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    /// Inserts or replaces one record.
    pub fn put<T: Serialize>(&self, table: JsonTable, key: &str, value: &T) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value)?;
        self.txn.open_table(table)?.insert(key, bytes.as_slice())?;
        Ok(())
    }

    /// Removes one record (no error if absent).
    pub fn delete(&self, table: JsonTable, key: &str) -> Result<(), Error> {
        self.txn.open_table(table)?.remove(key)?;
        Ok(())
    }

    /// Like [`Store::scan`], inside this transaction.
    pub fn scan<T: DeserializeOwned>(
        &self,
        table: JsonTable,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, T)>, Error> {
        let table = self.txn.open_table(table)?;
        scan(&table, prefix, None, limit)
    }

    /// The raw transaction (audit appends).
    pub(crate) fn raw(&self) -> &redb::WriteTransaction {
        self.txn
    }
}

fn scan<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, T)>, Error> {
    let start = after.map_or_else(|| prefix.to_string(), |a| format!("{a}\0"));
    let mut out = Vec::new();
    for item in table.range(start.as_str()..)? {
        let (k, v) = item?;
        let key = k.value();
        if !key.starts_with(prefix) || out.len() >= limit {
            break;
        }
        out.push((key.to_string(), serde_json::from_slice(v.value())?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_survive_reopen_and_failed_transactions_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        {
            let store = Store::open(&path).unwrap();
            store.write(|tx| tx.put(VAULTS, "a/1", &1u32)).unwrap();
            store.write(|tx| tx.put(VAULTS, "a/2", &2u32)).unwrap();
            store.write(|tx| tx.put(VAULTS, "b/1", &3u32)).unwrap();
            let failed: Result<(), Error> = store.write(|tx| {
                tx.put(VAULTS, "a/3", &9u32)?;
                Err(Error::Config("stop".into()))
            });
            assert!(failed.is_err());
        }
        let store = Store::open(&path).unwrap();
        let all: Vec<(String, u32)> = store.scan(VAULTS, "a/", None, 10).unwrap();
        assert_eq!(all, vec![("a/1".into(), 1), ("a/2".into(), 2)]);
        let page: Vec<(String, u32)> = store.scan(VAULTS, "a/", Some("a/1"), 10).unwrap();
        assert_eq!(page, vec![("a/2".into(), 2)]);
        assert_eq!(store.get::<u32>(VAULTS, "b/1").unwrap(), Some(3));
    }
}
