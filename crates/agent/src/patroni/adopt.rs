//! A single server made highly available (`pgcmk server update
//! --high-availability enabled`), and a node made a single server again
//! (`... disabled`), as the agent sees them at a mount.
//!
//! Enabling: the server's own volume becomes the first node's; Patroni takes over
//! its data directory (Patroni's "convert a standalone to a Patroni cluster"). The
//! platform never kept the superuser's password, so the node's stored passwords
//! hold the replication role's only, handed over in the start-up handshake.
//!
//! Disabling: Patroni moved PostgreSQL's own `postgresql.conf` aside to
//! `postgresql.base.conf` and wrote its own (with `synchronous_standby_names`,
//! which would make every commit wait for a standby that is gone); the agent puts
//! the original back before it starts PostgreSQL itself.

use std::fs;
use std::path::Path;

use pgcmk_crypto::SecretBytes;

use super::{own_dirs, passwords_file, store_passwords};
use crate::contract::{AgentConfig, ServerDir};
use crate::error::IoContext;
use crate::postgres::PgInstall;
use crate::Error;

/// PostgreSQL's configuration file as Patroni moved it aside.
const BASE_CONF: &str = "postgresql.base.conf";
/// Patroni's own state in the data directory.
const DYNAMIC_JSON: &str = "patroni.dynamic.json";

/// Readies the mounted volume of `dir` for what `config` says it is: a node of a
/// highly available server whose volume has no passwords for Patroni yet (it was
/// a single server) gets them, with `replication` from the handshake; a single
/// server whose data directory Patroni managed gets its own configuration back.
pub(crate) fn prepare(
    dir: &ServerDir,
    config: &AgentConfig,
    install: &PgInstall,
    replication: Option<&SecretBytes>,
) -> Result<(), Error> {
    match &config.ha {
        Some(_) if passwords_file(dir).exists() => Ok(()),
        Some(node) => {
            let password = replication.ok_or_else(|| {
                Error::Postgres(format!(
                    "{} became a node of a highly available server, but the handshake brought \
                     no replication_password for Patroni",
                    node.name
                ))
            })?;
            store_passwords(dir, None, password)?;
            own_dirs(dir, install)?;
            tracing::info!(
                "the volume is now {}'s: Patroni takes over its data",
                node.name
            );
            Ok(())
        }
        None => release(&dir.data_dir()),
    }
}

/// Puts back the `postgresql.conf` Patroni moved aside in `data_dir`, if it did.
fn release(data_dir: &Path) -> Result<(), Error> {
    let base = data_dir.join(BASE_CONF);
    if !base.exists() {
        return Ok(());
    }
    let conf = data_dir.join("postgresql.conf");
    fs::rename(&base, &conf).ctx(|| format!("moving {} back", base.display()))?;
    match fs::remove_file(data_dir.join(DYNAMIC_JSON)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io(format!("removing {DYNAMIC_JSON}"), e))
        }
        _ => {}
    }
    tracing::info!("a single server again: PostgreSQL's own postgresql.conf is back");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_patroni_moved_aside_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        fs::write(
            data.join("postgresql.conf"),
            "synchronous_standby_names = 'n2'\n",
        )
        .unwrap();
        fs::write(data.join(BASE_CONF), "max_connections = 100\n").unwrap();
        fs::write(data.join(DYNAMIC_JSON), "{}").unwrap();
        release(data).unwrap();
        assert_eq!(
            fs::read_to_string(data.join("postgresql.conf")).unwrap(),
            "max_connections = 100\n"
        );
        assert!(!data.join(BASE_CONF).exists());
        assert!(!data.join(DYNAMIC_JSON).exists());
        // A server Patroni never managed is left as it is.
        release(data).unwrap();
        assert!(data.join("postgresql.conf").exists());
    }
}
