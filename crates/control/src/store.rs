//! The control plane's embedded state store (redb): servers, the append-only
//! event trail, and the enrolled hosts (`store/hosts.rs`). Every write is one
//! committed, fsynced transaction.

use std::path::Path;

use pgcmk_hostkeys::reopening_db::{error_needs_reopen, ReopeningDb};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::StoreError;
use crate::model::{now_rfc3339, Event, ServerRecord};
use crate::Error;

mod hosts;

const SERVERS: TableDefinition<&str, &[u8]> = TableDefinition::new("servers");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Managed-identity secrets, sealed under the root key (see [`crate::root_key`]),
/// by owner: a server's id, or [`PLATFORM_IDENTITY`].
const IDENTITY_SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("identity_secrets");
/// Small non-secret settings: the root key's salt and check value, the DBA
/// credential's verifier.
const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");

/// The owner under which the platform identity's sealed secret is stored.
pub const PLATFORM_IDENTITY: &str = "platform";

/// The owner under which the sealed secret of server `id`'s geo identity (the one
/// that reaches the key of its geo-redundant backups) is stored.
pub fn geo_owner(id: &str) -> String {
    format!("{id}/geo")
}

/// The owner under which the sealed password of server `id`'s replication role
/// (which its read replicas connect as) is stored.
pub fn replication_owner(id: &str) -> String {
    format!("{id}/replication")
}

/// The owner under which the sealed password of highly available server `id`'s
/// Patroni REST API (which guards its unsafe endpoints) is stored.
pub fn patroni_api_owner(id: &str) -> String {
    format!("{id}/patroni-api")
}

/// The owner under which the sealed password of highly available server `id`'s
/// etcd user (which its nodes' Patroni authenticates as) is stored.
pub fn etcd_user_owner(id: &str) -> String {
    format!("{id}/etcd-user")
}

fn store_err(e: impl Into<redb::Error>) -> Error {
    Error::Store(StoreError::from(e.into()))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|source| {
        Error::Store(StoreError::Codec {
            what: "encoding",
            source,
        })
    })
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|source| {
        Error::Store(StoreError::Codec {
            what: "decoding",
            source,
        })
    })
}

/// The state store, opened again after an I/O error (a full disk) so the control
/// plane works again as soon as the disk has room, without a restart
/// ([`pgcmk_hostkeys::reopening_db`]).
pub struct Store {
    db: ReopeningDb,
}

fn open_db(path: &Path) -> Result<Database, redb::DatabaseError> {
    Database::create(path)
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let db = ReopeningDb::open(path, open_db).map_err(|source| {
            Error::Store(StoreError::Open {
                path: path.to_path_buf(),
                source: Box::new(source),
            })
        })?;
        let store = Self { db };
        store.with(|db| {
            let tx = db.begin_write().map_err(store_err)?;
            tx.open_table(SERVERS).map_err(store_err)?;
            tx.open_table(EVENTS).map_err(store_err)?;
            tx.open_table(IDENTITY_SECRETS).map_err(store_err)?;
            tx.open_table(SETTINGS).map_err(store_err)?;
            tx.open_table(hosts::HOSTS).map_err(store_err)?;
            tx.open_table(hosts::ASSIGNED_CONFIGS).map_err(store_err)?;
            tx.commit().map_err(store_err)
        })?;
        Ok(store)
    }

    /// Runs `op` on the open database.
    fn with<R>(&self, op: impl FnOnce(&Database) -> Result<R, Error>) -> Result<R, Error> {
        self.db.with(
            op,
            |e| matches!(e, Error::Store(StoreError::Database(e)) if error_needs_reopen(e)),
        )
    }

    /// Adds a new server, and its identity's sealed secret when it has one of its
    /// own, in one transaction; its name must be unused.
    pub fn insert_server(
        &self,
        server: &ServerRecord,
        sealed_identity_secret: Option<&[u8]>,
    ) -> Result<(), Error> {
        self.with(|db| {
            let tx = db.begin_write().map_err(store_err)?;
            {
                let mut table = tx.open_table(SERVERS).map_err(store_err)?;
                for entry in table.iter().map_err(store_err)? {
                    let (_, v) = entry.map_err(store_err)?;
                    let existing: ServerRecord = decode(v.value())?;
                    if existing.name == server.name {
                        return Err(Error::NameTaken(server.name.clone()));
                    }
                }
                table
                    .insert(server.id.as_str(), encode(server)?.as_slice())
                    .map_err(store_err)?;
            }
            if let Some(sealed) = sealed_identity_secret {
                tx.open_table(IDENTITY_SECRETS)
                    .map_err(store_err)?
                    .insert(server.id.as_str(), sealed)
                    .map_err(store_err)?;
            }
            tx.commit().map_err(store_err)
        })
    }

    /// Applies `change` to server `id` and stores the result atomically.
    pub fn update_server(
        &self,
        id: &str,
        change: impl FnOnce(&mut ServerRecord),
    ) -> Result<ServerRecord, Error> {
        self.with(|db| {
            let tx = db.begin_write().map_err(store_err)?;
            let updated = {
                let mut table = tx.open_table(SERVERS).map_err(store_err)?;
                let mut server: ServerRecord = match table.get(id).map_err(store_err)? {
                    Some(v) => decode(v.value())?,
                    None => return Err(Error::NotFound(id.to_string())),
                };
                change(&mut server);
                table
                    .insert(id, encode(&server)?.as_slice())
                    .map_err(store_err)?;
                server
            };
            tx.commit().map_err(store_err)?;
            Ok(updated)
        })
    }

    /// Writes the servers of `put` (with their identity's sealed secret when they
    /// have one of their own) and removes the servers of `remove` (with their
    /// sealed secrets) in one transaction: a highly available server and its nodes
    /// change shape together or not at all. Every name must stay unique.
    pub fn reshape_servers(
        &self,
        put: &[(&ServerRecord, Option<&[u8]>)],
        remove: &[&str],
    ) -> Result<(), Error> {
        self.with(|db| {
            let tx = db.begin_write().map_err(store_err)?;
            {
                let mut table = tx.open_table(SERVERS).map_err(store_err)?;
                for entry in table.iter().map_err(store_err)? {
                    let (k, v) = entry.map_err(store_err)?;
                    let existing: ServerRecord = decode(v.value())?;
                    let replaced =
                        remove.contains(&k.value()) || put.iter().any(|(s, _)| s.id == existing.id);
                    if let Some((taken, _)) = put
                        .iter()
                        .find(|(s, _)| !replaced && s.name == existing.name)
                    {
                        return Err(Error::NameTaken(taken.name.clone()));
                    }
                }
                for id in remove {
                    table.remove(*id).map_err(store_err)?;
                }
                for (server, _) in put {
                    table
                        .insert(server.id.as_str(), encode(*server)?.as_slice())
                        .map_err(store_err)?;
                }
            }
            let mut secrets = tx.open_table(IDENTITY_SECRETS).map_err(store_err)?;
            for id in remove {
                for owner in [id.to_string(), geo_owner(id), replication_owner(id)] {
                    secrets.remove(owner.as_str()).map_err(store_err)?;
                }
            }
            for (server, sealed) in put {
                if let Some(sealed) = sealed {
                    secrets
                        .insert(server.id.as_str(), *sealed)
                        .map_err(store_err)?;
                }
            }
            drop(secrets);
            tx.commit().map_err(store_err)
        })
    }

    /// Removes server `id` and its identities' sealed secrets, its replication
    /// role's password, its Patroni REST API's and its etcd user's (its events stay
    /// in the trail).
    pub fn remove_server(&self, id: &str) -> Result<(), Error> {
        let geo = geo_owner(id);
        let replication = replication_owner(id);
        let patroni_api = patroni_api_owner(id);
        let etcd_user = etcd_user_owner(id);
        self.with(|db| {
            let tx = db.begin_write().map_err(store_err)?;
            for (table, key) in [
                (SERVERS, id),
                (IDENTITY_SECRETS, id),
                (IDENTITY_SECRETS, geo.as_str()),
                (IDENTITY_SECRETS, replication.as_str()),
                (IDENTITY_SECRETS, patroni_api.as_str()),
                (IDENTITY_SECRETS, etcd_user.as_str()),
                (hosts::ASSIGNED_CONFIGS, id),
            ] {
                tx.open_table(table)
                    .map_err(store_err)?
                    .remove(key)
                    .map_err(store_err)?;
            }
            tx.commit().map_err(store_err)
        })
    }

    /// The sealed identity secret stored for `owner`.
    pub fn sealed_identity_secret(&self, owner: &str) -> Result<Option<Vec<u8>>, Error> {
        self.get(IDENTITY_SECRETS, owner)
    }

    /// Stores (or replaces) the sealed identity secret of `owner`.
    pub fn put_sealed_identity_secret(&self, owner: &str, sealed: &[u8]) -> Result<(), Error> {
        self.put(IDENTITY_SECRETS, &[(owner, sealed)])
    }

    /// Removes the sealed identity secret of `owner`, if any.
    pub fn remove_sealed_identity_secret(&self, owner: &str) -> Result<(), Error> {
        self.with(|db| {
            let tx = db.begin_write().map_err(store_err)?;
            tx.open_table(IDENTITY_SECRETS)
                .map_err(store_err)?
                .remove(owner)
                .map_err(store_err)?;
            tx.commit().map_err(store_err)
        })
    }

    /// The setting `name`.
    pub fn setting(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        self.get(SETTINGS, name)
    }

    /// Stores settings, all or none.
    pub fn put_settings(&self, settings: &[(&str, &[u8])]) -> Result<(), Error> {
        self.put(SETTINGS, settings)
    }

    fn get(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<Vec<u8>>, Error> {
        self.with(|db| {
            let tx = db.begin_read().map_err(store_err)?;
            let table = tx.open_table(table).map_err(store_err)?;
            Ok(table
                .get(key)
                .map_err(store_err)?
                .map(|v| v.value().to_vec()))
        })
    }

    fn put(
        &self,
        table: TableDefinition<&str, &[u8]>,
        entries: &[(&str, &[u8])],
    ) -> Result<(), Error> {
        self.with(|db| {
            let tx = db.begin_write().map_err(store_err)?;
            {
                let mut table = tx.open_table(table).map_err(store_err)?;
                for (key, value) in entries {
                    table.insert(*key, *value).map_err(store_err)?;
                }
            }
            tx.commit().map_err(store_err)
        })
    }

    /// All servers, by name.
    pub fn servers(&self) -> Result<Vec<ServerRecord>, Error> {
        self.with(|db| {
            let tx = db.begin_read().map_err(store_err)?;
            let table = tx.open_table(SERVERS).map_err(store_err)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(store_err)? {
                let (_, v) = entry.map_err(store_err)?;
                out.push(decode::<ServerRecord>(v.value())?);
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }

    /// The server whose id or name is `id_or_name`.
    pub fn server(&self, id_or_name: &str) -> Result<ServerRecord, Error> {
        self.servers()?
            .into_iter()
            .find(|s| s.id == id_or_name || s.name == id_or_name)
            .ok_or_else(|| Error::NotFound(id_or_name.to_string()))
    }

    /// Appends an event to the trail and returns it.
    pub fn append_event(
        &self,
        server_id: &str,
        who: &str,
        what: &str,
        why: &str,
    ) -> Result<Event, Error> {
        self.with(|db| {
            let tx = db.begin_write().map_err(store_err)?;
            let event = {
                let mut table = tx.open_table(EVENTS).map_err(store_err)?;
                let seq = table
                    .last()
                    .map_err(store_err)?
                    .map_or(1, |(k, _)| k.value() + 1);
                let event = Event {
                    seq,
                    at: now_rfc3339(),
                    server_id: server_id.to_string(),
                    who: who.to_string(),
                    what: what.to_string(),
                    why: why.to_string(),
                };
                table
                    .insert(seq, encode(&event)?.as_slice())
                    .map_err(store_err)?;
                event
            };
            tx.commit().map_err(store_err)?;
            Ok(event)
        })
    }

    /// The events about server `server_id`, oldest first.
    pub fn events(&self, server_id: &str) -> Result<Vec<Event>, Error> {
        self.with(|db| {
            let tx = db.begin_read().map_err(store_err)?;
            let table = tx.open_table(EVENTS).map_err(store_err)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(store_err)? {
                let (_, v) = entry.map_err(store_err)?;
                let event: Event = decode(v.value())?;
                if event.server_id == server_id {
                    out.push(event);
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Encryption, ServerState};
    use pgcmk_keyprovider::{KeyVersionId, WrappedDek};

    fn record(id: &str, name: &str) -> ServerRecord {
        ServerRecord {
            id: id.into(),
            name: name.into(),
            location: "westeurope".into(),
            encryption: Encryption::ServiceManaged,
            wrapped_dek: WrappedDek {
                kek: KeyVersionId::parse(
                    "https://127.0.0.1:1/keys/platform/0123456789abcdef0123456789abcdef",
                )
                .unwrap(),
                algorithm: "RSA-OAEP-256".into(),
                ciphertext: vec![1, 2, 3],
            },
            state: ServerState::Provisioning,
            port: 5432,
            listen_addresses: pgcmk_agent::contract::config::loopback_only(),
            replica_of: None,
            dir: "/srv/x".into(),
            created_at: now_rfc3339(),
            nodes: Vec::new(),
            node_of: None,
            host: None,
        }
    }

    #[test]
    fn servers_and_events_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = Store::open(&path).unwrap();
            store.insert_server(&record("a1", "alpha"), None).unwrap();
            store
                .insert_server(&record("b2", "beta"), Some(b"sealed-b2"))
                .unwrap();
            let err = store
                .insert_server(&record("c3", "alpha"), Some(b"sealed-c3"))
                .unwrap_err();
            assert!(err.to_string().contains("already exists"), "{err}");
            store
                .update_server("a1", |s| {
                    s.state = ServerState::Inaccessible("revoked".into())
                })
                .unwrap();
            store
                .append_event("a1", "dba", "created", "request")
                .unwrap();
            store
                .append_event("b2", "dba", "created", "request")
                .unwrap();
            let e = store
                .append_event("a1", "key-monitor", "state Ready -> Inaccessible", "403")
                .unwrap();
            assert_eq!(e.seq, 3);
            assert_eq!(
                store.sealed_identity_secret("b2").unwrap().unwrap(),
                b"sealed-b2"
            );
            store.remove_server("b2").unwrap();
            store
                .put_sealed_identity_secret(PLATFORM_IDENTITY, b"sealed-p")
                .unwrap();
            store.put_settings(&[("k", b"v")]).unwrap();
        }
        let store = Store::open(&path).unwrap();
        let servers = store.servers().unwrap();
        assert_eq!(servers.len(), 1);
        assert_eq!(
            store.server("alpha").unwrap().state,
            ServerState::Inaccessible("revoked".into())
        );
        assert_eq!(store.server("a1").unwrap().name, "alpha");
        assert!(matches!(store.server("beta"), Err(Error::NotFound(_))));
        // A refused or removed server leaves no secret behind.
        assert_eq!(store.sealed_identity_secret("b2").unwrap(), None);
        assert_eq!(store.sealed_identity_secret("c3").unwrap(), None);
        assert_eq!(
            store
                .sealed_identity_secret(PLATFORM_IDENTITY)
                .unwrap()
                .unwrap(),
            b"sealed-p"
        );
        assert_eq!(store.setting("k").unwrap().unwrap(), b"v");
        assert_eq!(store.setting("missing").unwrap(), None);
        let events = store.events("a1").unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(events[1].who, "key-monitor");
        assert!(matches!(
            store.update_server("zz", |_| ()),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn a_server_and_its_nodes_change_shape_together_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        store
            .insert_server(&record("s1", "orders"), Some(b"sealed-s1"))
            .unwrap();
        store.insert_server(&record("o1", "other"), None).unwrap();
        let node = ServerRecord {
            node_of: Some(crate::model::NodeOf {
                server_id: "s1".into(),
                address: "127.0.0.1".into(),
                rest_port: 8008,
            }),
            host: None,
            ..record("n1", "orders-node-1")
        };
        let server = ServerRecord {
            nodes: vec!["n1".into()],
            ..record("s1", "orders")
        };
        store
            .reshape_servers(&[(&server, None), (&node, Some(b"sealed-n1"))], &[])
            .unwrap();
        assert_eq!(store.server("orders").unwrap().nodes, ["n1"]);
        assert_eq!(store.server("n1").unwrap().name, "orders-node-1");
        // The server keeps its own sealed secret; the node has its copy.
        assert!(store.sealed_identity_secret("s1").unwrap().is_some());
        assert!(store.sealed_identity_secret("n1").unwrap().is_some());

        // A name taken by another server refuses the whole change.
        let clash = ServerRecord {
            nodes: Vec::new(),
            ..record("n2", "other")
        };
        let single = record("s1", "orders");
        let err = store
            .reshape_servers(&[(&single, None), (&clash, None)], &["n1"])
            .unwrap_err();
        assert!(matches!(err, Error::NameTaken(_)), "{err}");
        assert_eq!(store.server("orders").unwrap().nodes, ["n1"]);
        assert!(store.server("n1").is_ok());

        // Back to one server: the node and its secret go in the same transaction.
        store.reshape_servers(&[(&single, None)], &["n1"]).unwrap();
        assert!(store.server("orders").unwrap().nodes.is_empty());
        assert!(matches!(store.server("n1"), Err(Error::NotFound(_))));
        assert_eq!(store.sealed_identity_secret("n1").unwrap(), None);
        assert!(store.sealed_identity_secret("s1").unwrap().is_some());
    }
}
