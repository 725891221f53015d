//! Provisioning a new server, in its agent at first start: the encrypted volume
//! and the PostgreSQL cluster on it.

use pgcmk_crypto::{kdf, Dek, SecretBytes};

use crate::backup::pgbackrest::RepositoryKeys;
use crate::contract::backup::RestoreSource;
use crate::contract::replica::ReplicaSource;
use crate::contract::{AgentConfig, ServerDir};
use crate::error::IoContext;
use crate::postgres::standby::Standby;
use crate::serving::Serving;
use crate::Error;

/// HKDF purpose of the cryptfs master key derived from a server's DEK.
const CRYPTFS_PURPOSE: &[u8] = b"pgcmk cryptfs";

/// The cryptfs master key for server `server_id`, derived from its DEK.
pub fn cryptfs_key(dek: &Dek, server_id: &str) -> Result<pgcmk_crypto::SymmetricKey, Error> {
    Ok(kdf::derive_key(
        dek.key(),
        server_id.as_bytes(),
        CRYPTFS_PURPOSE,
    )?)
}

/// Creates a new server's encrypted volume and PostgreSQL cluster with `dek`:
/// cryptfs init, mount, `initdb` with `password` for the `postgres` superuser,
/// unmount. Runs in the node agent at the first start of a new server, with the
/// password the control plane handed over the start-up handshake.
pub fn provision(
    dir: &ServerDir,
    config: &AgentConfig,
    dek: &Dek,
    password: &SecretBytes,
) -> Result<(), Error> {
    let serving = new_volume(dir, config, dek)?;
    serving.pg.initdb(password)?;
    drop(serving);
    Ok(())
}

/// Creates a read replica's encrypted volume with `dek` and clones its `source`
/// into it over TLS as the replication role with `password` (`pg_basebackup`); the
/// clone is a standby, which serves once it is started. The superuser's password
/// is the source's (the clone has its roles).
pub(crate) fn provision_replica(
    dir: &ServerDir,
    config: &AgentConfig,
    dek: &Dek,
    source: &ReplicaSource,
    password: &SecretBytes,
) -> Result<(), Error> {
    let serving = new_volume(dir, config, dek)?;
    let install = serving.pg.install();
    Standby::prepare(install, &dir.tls_dir(), source, &config.server_id, password)?
        .clone_source(install, serving.pg.layout())
}

/// Creates a new node of a highly available server with `dek`: its encrypted
/// volume, with the superuser's `password` (unless the server was made highly
/// available after create: then the password is unused) and the `replication`
/// role's password stored on it for Patroni, which creates the cluster (or clones
/// it from the primary) at the node's first start.
pub fn provision_ha_node(
    dir: &ServerDir,
    config: &AgentConfig,
    dek: &Dek,
    password: &SecretBytes,
    replication: &SecretBytes,
) -> Result<(), Error> {
    let serving = new_volume(dir, config, dek)?;
    let adopted = config.ha.as_ref().is_some_and(|node| node.adopted);
    let superuser = (!adopted).then_some(password);
    crate::patroni::provision(dir, serving.pg.install(), superuser, replication)?;
    drop(serving);
    Ok(())
}

/// Creates a restored server's encrypted volume with `dek` and restores `source`'s
/// backups into it with the source's repository key `source_key`
/// ([`crate::backup::restore`]); the superuser's password becomes `password`.
pub(crate) fn provision_restored(
    dir: &ServerDir,
    config: &AgentConfig,
    dek: &Dek,
    password: &SecretBytes,
    source: &RestoreSource,
    source_keys: &RepositoryKeys<'_>,
) -> Result<(), Error> {
    let mut serving = new_volume(dir, config, dek)?;
    crate::backup::restore::restore(dir, &mut serving, source, source_keys, password)
}

/// A new encrypted volume, mounted (PostgreSQL not started).
fn new_volume(dir: &ServerDir, config: &AgentConfig, dek: &Dek) -> Result<Serving, Error> {
    use std::os::unix::fs::PermissionsExt;
    pgcmk_cryptfs::init(&dir.cipher(), &cryptfs_key(dek, &config.server_id)?)?;
    std::fs::create_dir_all(dir.mountpoint()).ctx(|| "creating the mount point")?;
    let serving = Serving::mount(dir, config, dek.clone(), None, None, Default::default())?;
    // PostgreSQL (another user) only needs to traverse the mount's root.
    std::fs::set_permissions(dir.mountpoint(), std::fs::Permissions::from_mode(0o711))
        .ctx(|| "setting permissions of the mount's root")?;
    Ok(serving)
}
