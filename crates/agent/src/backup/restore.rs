//! Restoring another server's backups into a new server's volume, at the new
//! server's first start: pgBackRest restores the source's backup set (decrypted
//! with the source's repository key, which the agent unwrapped through the
//! source's KEK) into the new data directory, and PostgreSQL replays the source's
//! archived WAL up to the target, then is promoted. The new server then has its
//! own DEK, its own repository key and stanza, and archives and backs up on its
//! own from its next start.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use pgcmk_crypto::SecretBytes;

use super::pgbackrest::{PgBackRest, RepositoryKeys};
use crate::contract::backup::{RestoreSource, RestoreTarget, DEFAULT_RETENTION_DAYS};
use crate::contract::{BackupConfig, ServerDir};
use crate::error::IoContext;
use crate::postgres::{PgInstall, StopMode};
use crate::serving::Serving;
use crate::Error;

/// How long replaying the source's WAL up to the target may take.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(600);

/// Restores `source` (whose repository `source_keys` open) into the volume
/// `serving` has mounted (PostgreSQL stopped again at the end), and gives the
/// superuser `password`. pgBackRest's files for
/// the source's repository, its passphrase among them, are removed from the mount
/// whether or not it succeeded.
pub(crate) fn restore(
    dir: &ServerDir,
    serving: &mut Serving,
    source: &RestoreSource,
    source_keys: &RepositoryKeys<'_>,
    password: &SecretBytes,
) -> Result<(), Error> {
    let result = (|| {
        let install = PgInstall::discover()?;
        let layout = serving.pg.layout().clone();
        let engine = PgBackRest::at(dir.restore_engine_dir(), &source.stanza, install.clone())?;
        let repository = BackupConfig {
            azure: source.azure.clone(),
            ..BackupConfig::new(source.repository.clone(), DEFAULT_RETENTION_DAYS)
        };
        engine.configure(&layout, &repository, source_keys)?;
        let data = &layout.data_dir;
        fs::create_dir_all(data).ctx(|| format!("creating {}", data.display()))?;
        fs::set_permissions(data, fs::Permissions::from_mode(0o700))
            .ctx(|| format!("setting permissions of {}", data.display()))?;
        install.user().chown(data)?;
        let args = restore_args(&source.target);
        engine.run(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        forget_patroni(data)?;
        // Without hot standby PostgreSQL accepts connections only once it is
        // promoted, so the start below returns when recovery reached the target.
        serving.pg.set("hot_standby", "off".into());
        serving.pg.start(RECOVERY_TIMEOUT).map_err(|e| {
            Error::Backup(format!(
                "recovering server '{}''s backups to {}: {e}",
                source.server, source.target
            ))
        })?;
        // The source's repository is not this server's: no later recovery reads it.
        install.run_statement(
            &layout,
            "ALTER SYSTEM RESET restore_command;\n",
            "forgetting the source's restore_command",
        )?;
        install.set_superuser_password(&layout, password)?;
        serving.pg.stop(StopMode::Fast)
    })();
    let engine_dir = dir.restore_engine_dir();
    if engine_dir.exists() {
        fs::remove_dir_all(&engine_dir).ctx(|| format!("removing {}", engine_dir.display()))?;
    }
    result
}

/// What Patroni renamed initdb's `postgresql.conf` to, writing its own in its place.
const PATRONI_BASE_CONF: &str = "postgresql.base.conf";
/// Patroni's own state in a data directory.
const PATRONI_STATE: &str = "patroni.dynamic.json";

/// Makes a data directory restored from a highly available server's backups (a
/// node's, where Patroni ran PostgreSQL) a single server's: Patroni's
/// `postgresql.conf` holds that node's settings — its `archive_command` into the
/// source's stanza, its synchronous standby (every commit of the new server would
/// wait for it), its certificate and `pg_hba` on the node's mount — so initdb's,
/// which Patroni kept as `postgresql.base.conf`, is put back, and Patroni's state
/// removed: PostgreSQL starts with the agent's settings only. A no-op for a single
/// server's backups.
fn forget_patroni(data: &Path) -> Result<(), Error> {
    let base = data.join(PATRONI_BASE_CONF);
    if !base.exists() {
        return Ok(());
    }
    let conf = data.join("postgresql.conf");
    fs::rename(&base, &conf).ctx(|| format!("moving {} to {}", base.display(), conf.display()))?;
    match fs::remove_file(data.join(PATRONI_STATE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).ctx(|| format!("removing {PATRONI_STATE}"))
        }
        _ => Ok(()),
    }
}

/// `pgbackrest restore`'s arguments for `target`.
fn restore_args(target: &RestoreTarget) -> Vec<String> {
    let mut args = vec!["restore".to_string()];
    match target {
        RestoreTarget::Latest => args.push("--type=default".into()),
        RestoreTarget::Time { at } => args.extend([
            "--type=time".into(),
            format!("--target={at}"),
            "--target-action=promote".into(),
        ]),
    }
    args
}
