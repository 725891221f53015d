//! The enrolled hosts' table: one [`HostRecord`] per name (credential verifiers
//! only, never credentials).

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{decode, encode, store_err, Store};
use pgcmk_agent::contract::AgentConfig;

use crate::hosts::{HostError, HostRecord};
use crate::Error;

/// Enrolled hosts, by name.
pub(super) const HOSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("hosts");
/// The `agent.json` of each server on a host, by server id: the plane keeps it
/// (no secrets) and hands it to the host in every heartbeat answer.
pub(super) const ASSIGNED_CONFIGS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("assigned_configs");

impl Store {
    /// Adds a host; its name must be unused.
    pub fn insert_host(&self, host: &HostRecord) -> Result<(), Error> {
        self.with(|db| {
            let tx = db.begin_write().map_err(store_err)?;
            {
                let mut table = tx.open_table(HOSTS).map_err(store_err)?;
                if table.get(host.name.as_str()).map_err(store_err)?.is_some() {
                    return Err(HostError::NameTaken(host.name.clone()).into());
                }
                table
                    .insert(host.name.as_str(), encode(host)?.as_slice())
                    .map_err(store_err)?;
            }
            tx.commit().map_err(store_err)
        })
    }

    /// The host named `name`, if enrolled.
    pub fn host(&self, name: &str) -> Result<Option<HostRecord>, Error> {
        self.get(HOSTS, name)?.map(|v| decode(&v)).transpose()
    }

    /// Every enrolled host, by name.
    pub fn hosts(&self) -> Result<Vec<HostRecord>, Error> {
        self.with(|db| {
            let tx = db.begin_read().map_err(store_err)?;
            let table = tx.open_table(HOSTS).map_err(store_err)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(store_err)? {
                let (_, v) = entry.map_err(store_err)?;
                out.push(decode::<HostRecord>(v.value())?);
            }
            Ok(out)
        })
    }

    /// Removes host `name`; its credential verifies nothing from then on.
    pub fn remove_host(&self, name: &str) -> Result<(), Error> {
        self.with(|db| {
            let tx = db.begin_write().map_err(store_err)?;
            let removed = tx
                .open_table(HOSTS)
                .map_err(store_err)?
                .remove(name)
                .map_err(store_err)?
                .is_some();
            if !removed {
                return Err(HostError::NotFound(name.to_string()).into());
            }
            tx.commit().map_err(store_err)
        })
    }

    /// Keeps the `agent.json` of server `id`, which runs on a host.
    pub fn put_assigned_config(&self, id: &str, config: &AgentConfig) -> Result<(), Error> {
        self.put(ASSIGNED_CONFIGS, &[(id, encode(config)?.as_slice())])
    }

    /// The `agent.json` of server `id` on a host.
    pub fn assigned_config(&self, id: &str) -> Result<Option<AgentConfig>, Error> {
        self.get(ASSIGNED_CONFIGS, id)?
            .map(|v| decode(&v))
            .transpose()
    }
}
