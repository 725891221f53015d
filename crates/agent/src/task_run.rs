//! The agent's side of a short-lived run ([`crate::contract::task`]): `pgcmk agent
//! --server-dir DIR TASK`. It never starts PostgreSQL and never writes the server's
//! `agent.pid` or `status.json`: those belong to the node agent.
//!
//! A DEK it unwraps lives in locked memory in this hardened process only, and is
//! zeroized when the task is done.

use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use pgcmk_crypto::SecretBytes;
use pgcmk_keyprovider::{KeyEncryptionKey, KeyError, KeyVersionId, WrappedDek};

use crate::agent::take_handshake;
use crate::contract::backup::RepositoryKeyCheck;
use crate::contract::replica::REPLICATION_ROLE;
use crate::contract::server_dir::{read_json, write_json_atomic, ServerDir};
use crate::contract::task::{
    AgentTask, LogRecord, LogSource, PasswordReset, TaskAnswer, TaskFailure, VersionRefusal,
    VolumeCheck, VolumeView, Wrapping,
};
use crate::contract::{AgentConfig, Handshake, KekAccess};
use crate::memory::LockedDek;
use crate::postgres::{PgInstall, PgLayout, SUPERUSER};
use crate::provision::cryptfs_key;
use crate::server_logs::LogFollower;
use crate::{backup, sys, Error};

/// How often a followed log is looked at.
const FOLLOW_POLL: Duration = Duration::from_millis(250);
/// After this long without a record, following writes an empty line, so that an
/// idle stream is not taken for a dead one (and a reader that left is noticed).
const KEEPALIVE: Duration = Duration::from_secs(20);

/// Runs `task` for the server in `dir` as the managed identity whose secret comes
/// in the start-up handshake read from `stdin` to its end; the answer goes to
/// `out` (stdout).
pub fn run(
    dir: &ServerDir,
    task: &AgentTask,
    stdin: impl io::Read,
    out: impl Write,
) -> Result<(), Error> {
    let Handshake {
        identity_secret,
        new_password,
        geo_identity_secret,
        ..
    } = take_handshake(stdin)?;
    let config: AgentConfig = read_json(&dir.agent_config())?;
    let vault = || Vault::connect(&config, &config.kek, identity_secret);
    let geo_vault = || match (
        config.backup.as_ref().and_then(|b| b.geo.as_ref()),
        geo_identity_secret,
    ) {
        (Some(geo), Some(secret)) => Vault::connect(&config, &geo.kek, secret),
        _ => Err(Error::Backup(
            "this server has no geo-redundant copy of its backups (or its geo identity's \
             secret did not come)"
                .into(),
        )),
    };
    match task {
        AgentTask::ResetPassword => answer(out, reset_password(dir, &config, new_password)),
        AgentTask::ReplicationRole => answer(out, replication_role(dir, &config, new_password)),
        AgentTask::AdoptKeyVersion => answer(out, adopt_key_version(dir, &vault()?)),
        AgentTask::Fsck => answer(out, fsck(dir, &vault()?)),
        AgentTask::BackupList => answer(
            out,
            failing(backup::tasks::list(
                dir,
                &config,
                geo_vault().ok().as_ref().map(|v| v.kek.as_ref()),
            )),
        ),
        AgentTask::BackupCreate { kind, repository } => answer(
            out,
            failing(backup::tasks::create(dir, &config, *kind, *repository)),
        ),
        AgentTask::BackupVerify { repository } => answer(
            out,
            failing(backup::tasks::verify(dir, &config, *repository)),
        ),
        AgentTask::BackupProgress => answer(out, failing(backup::tasks::progress(dir, &config))),
        AgentTask::BackupKeyCheck => answer(
            out,
            check_backup_key(&config.backup_key_file(dir), &vault()?),
        ),
        AgentTask::GeoBackupKeyCheck => answer(
            out,
            check_backup_key(&config.geo_backup_key_file(dir), &geo_vault()?),
        ),
        AgentTask::Logs { lines, follow } => {
            match logs(dir, &vault()?, *lines, *follow, RecordWriter::new(out)) {
                // The reader went away: nothing left to do.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                other => other.map_err(|e| Error::io("writing the logs", e)),
            }
        }
    }
}

/// A task's own failure as its answer.
fn failing<T>(result: Result<T, Error>) -> Result<T, TaskFailure> {
    result.map_err(TaskFailure::from)
}

/// Prints the answer of a task that ends.
fn answer<T: serde::Serialize>(
    mut out: impl Write,
    result: Result<T, TaskFailure>,
) -> Result<(), Error> {
    let answer = match result {
        Ok(done) => TaskAnswer::Done(done),
        Err(failure) => TaskAnswer::Failed(failure),
    };
    let json = serde_json::to_vec(&answer).map_err(|e| {
        Error::io(
            "encoding the task's answer",
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    out.write_all(&json)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("writing the task's answer", e))
}

impl From<Error> for TaskFailure {
    fn from(e: Error) -> Self {
        match e {
            Error::Key(KeyError::Transient { reason }) => TaskFailure::VaultUnavailable { reason },
            other => TaskFailure::Failed {
                message: other.to_string(),
            },
        }
    }
}

/// One of the server's KEKs (its own, or its geo copy's), as the managed identity
/// that reaches it.
struct Vault<'a> {
    kek: Box<dyn KeyEncryptionKey>,
    access: &'a KekAccess,
    config: &'a AgentConfig,
}

impl<'a> Vault<'a> {
    /// Connects (lazily) to the KEK `access` names as the managed identity whose
    /// secret is `secret`.
    fn connect(
        config: &'a AgentConfig,
        access: &'a KekAccess,
        secret: SecretBytes,
    ) -> Result<Self, Error> {
        Ok(Self {
            kek: access.connect(secret)?,
            access,
            config,
        })
    }

    /// The DEK in `wrapped`, unwrapped into locked memory.
    fn unlock(&self, wrapped: &WrappedDek) -> Result<LockedDek, TaskFailure> {
        let dek = self
            .kek
            .unwrap(wrapped)
            .map_err(|e| self.refusal(&wrapped.kek, true, e))?;
        Ok(LockedDek::new(dek)?)
    }

    /// What the vault's refusal of `version` means, with what the vault tells
    /// about the version and the key's current one.
    fn refusal(&self, version: &KeyVersionId, wraps_dek: bool, e: KeyError) -> TaskFailure {
        let reason = match e {
            KeyError::Denied { reason } => reason,
            other => return Error::Key(other).into(),
        };
        let disabled = self
            .kek
            .version_info(Some(version))
            .is_ok_and(|key| !key.enabled);
        let current = self.kek.version_info(None).ok().map(|key| key.current);
        TaskFailure::VersionRefused(Box::new(VersionRefusal {
            version: version.clone(),
            wraps_dek,
            current,
            disabled,
            follows_rotation: self.access.key.is_versionless(),
            reason,
        }))
    }
}

/// Proves the vault unwraps the DEK, and re-wraps it with the key's current
/// version when that moved on: what the key monitor does for a running server.
fn adopt_key_version(dir: &ServerDir, vault: &Vault<'_>) -> Result<Wrapping, TaskFailure> {
    let wrapped: WrappedDek = read_json(&dir.wrapped_dek())?;
    let dek = vault.unlock(&wrapped)?;
    let key = vault.kek.info().map_err(Error::Key)?;
    if !key.enabled {
        let denied = KeyError::Denied {
            reason: format!("key version {} is disabled", key.current),
        };
        return Err(vault.refusal(&key.current, false, denied));
    }
    // The backups follow too; when they cannot (the version their key is wrapped
    // by was disabled first), the server still starts, and `backup keys` names the
    // version they need.
    let backup_key = vault.config.backup_key_file(dir);
    if vault.config.backup.is_some() && backup_key.exists() {
        if let Err(e) = backup::key::follow(&backup_key, vault.kek.as_ref(), &key.current) {
            tracing::warn!("re-wrapping the backup repository key: {e}");
        }
    }
    if key.current == wrapped.kek {
        return Ok(Wrapping {
            wrapped_dek: wrapped,
            rewrapped_from: None,
        });
    }
    let rewrapped = vault
        .kek
        .wrap(dek.dek())
        .map_err(|e| vault.refusal(&key.current, false, e))?;
    drop(dek);
    write_json_atomic(&dir.wrapped_dek(), &rewrapped)?;
    tracing::info!(
        "DEK re-wrapped with {} (was {}) while the server is not running",
        rewrapped.kek,
        wrapped.kek
    );
    Ok(Wrapping {
        wrapped_dek: rewrapped,
        rewrapped_from: Some(wrapped.kek),
    })
}

/// Sets the superuser's password of the serving server to `password` (from the
/// handshake). The password is in this process's memory only until PostgreSQL has
/// its verifier.
fn reset_password(
    dir: &ServerDir,
    config: &AgentConfig,
    password: Option<SecretBytes>,
) -> Result<PasswordReset, TaskFailure> {
    let (password, layout) = live_with(dir, config, password, "new_password")?;
    PgInstall::discover()?.set_superuser_password(&layout, &password)?;
    tracing::info!("the {SUPERUSER} password was reset");
    Ok(PasswordReset {
        role: SUPERUSER.into(),
    })
}

/// Creates or updates the serving server's replication role with `password`
/// (from the handshake), for its read replicas.
fn replication_role(
    dir: &ServerDir,
    config: &AgentConfig,
    password: Option<SecretBytes>,
) -> Result<PasswordReset, TaskFailure> {
    let (password, layout) = live_with(dir, config, password, "new_password")?;
    PgInstall::discover()?.set_replication_role(&layout, REPLICATION_ROLE, &password)?;
    tracing::info!("the replication role {REPLICATION_ROLE} was set");
    Ok(PasswordReset {
        role: REPLICATION_ROLE.into(),
    })
}

/// The handshake's `password` (named `field`) and the layout of the serving
/// server, or why a password cannot be set now.
fn live_with(
    dir: &ServerDir,
    config: &AgentConfig,
    password: Option<SecretBytes>,
    field: &str,
) -> Result<(SecretBytes, PgLayout), TaskFailure> {
    let password = password.ok_or_else(|| TaskFailure::Failed {
        message: format!("the handshake has no {field} for this task"),
    })?;
    if !is_live(dir) {
        return Err(TaskFailure::Failed {
            message: "the server is not serving: the password is set in the running \
                      PostgreSQL; start it first"
                .into(),
        });
    }
    let layout = PgLayout {
        data_dir: dir.data_dir(),
        socket_dir: dir.socket_dir(),
        port: config.port,
    };
    Ok((password, layout))
}

/// Proves the vault unwraps the repository key; a refusal names its version.
fn check_backup_key(file: &Path, vault: &Vault<'_>) -> Result<RepositoryKeyCheck, TaskFailure> {
    let wrapped = backup::key::read_wrapped(file)?;
    let key = vault
        .kek
        .unwrap(&wrapped)
        .map_err(|e| vault.refusal(&wrapped.kek, false, e))?;
    drop(key);
    Ok(RepositoryKeyCheck {
        key_version: wrapped.kek,
    })
}

/// cryptfs's fsck of the volume, with the key derived from the unwrapped DEK.
fn fsck(dir: &ServerDir, vault: &Vault<'_>) -> Result<VolumeCheck, TaskFailure> {
    let wrapped: WrappedDek = read_json(&dir.wrapped_dek())?;
    let dek = vault.unlock(&wrapped)?;
    let key = cryptfs_key(dek.dek(), &vault.config.server_id)?;
    drop(dek);
    let report = pgcmk_cryptfs::fsck(&dir.cipher(), &key).map_err(Error::from)?;
    Ok(report.into())
}

/// True while the serving agent's mount shows PostgreSQL's data directory.
fn is_live(dir: &ServerDir) -> bool {
    dir.is_mounted() && dir.data_dir().join("PG_VERSION").exists()
}

/// Mounts the volume read-only at the server's mount point, in a mount namespace
/// private to this process: no one else sees it, and it goes with the process.
fn mount_read_only(
    dir: &ServerDir,
    vault: &Vault<'_>,
) -> Result<pgcmk_cryptfs::MountHandle, TaskFailure> {
    let wrapped: WrappedDek = read_json(&dir.wrapped_dek())?;
    let dek = vault.unlock(&wrapped)?;
    let key = cryptfs_key(dek.dek(), &vault.config.server_id)?;
    drop(dek);
    sys::enter_private_mount_namespace()
        .map_err(|e| Error::io("entering a private mount namespace", e))?;
    // Only this namespace's copy of a mount a killed agent left behind.
    dir.detach_stale_mount();
    let options = pgcmk_cryptfs::MountOptions {
        read_only: true,
        ..Default::default()
    };
    Ok(
        pgcmk_cryptfs::mount(&dir.cipher(), &dir.mountpoint(), key, options)
            .map_err(Error::from)?,
    )
}

impl TaskFailure {
    /// In words, for a reader of the logs.
    fn describe(&self) -> String {
        match self {
            TaskFailure::VersionRefused(refusal) => format!(
                "the vault refuses key version {} ({})",
                refusal.version, refusal.reason
            ),
            TaskFailure::VaultUnavailable { reason } => {
                format!("the key vault is unavailable: {reason}")
            }
            TaskFailure::Failed { message } => message.clone(),
        }
    }
}

/// Prints PostgreSQL's and the agent's logs: the last `lines` of each, then, with
/// `follow` and while the server serves, what they grow by.
fn logs(
    dir: &ServerDir,
    vault: &Vault<'_>,
    lines: usize,
    follow: bool,
    mut out: RecordWriter<impl Write>,
) -> io::Result<()> {
    let mut postgres = LogFollower::directory(dir.data_dir().join("log"));
    let mut agent = LogFollower::file(dir.agent_log());
    let mut live = is_live(dir);
    // Held until PostgreSQL's log has been read.
    let mut read_only = None;
    let view = if live {
        VolumeView::Live
    } else {
        match mount_read_only(dir, vault) {
            Ok(mount) => {
                read_only = Some(mount);
                VolumeView::ReadOnly
            }
            Err(failure) => VolumeView::Unavailable {
                reason: format!(
                    "PostgreSQL's log is on the encrypted volume, which cannot be read now: {}",
                    failure.describe()
                ),
            },
        }
    };
    let readable = !matches!(view, VolumeView::Unavailable { .. });
    out.record(&LogRecord::Volume(view))?;
    if readable {
        let tail = postgres.tail(lines);
        drop(read_only);
        out.lines(LogSource::Postgres, tail, postgres.location())?;
    }
    let tail = agent.tail(lines);
    out.lines(LogSource::Agent, tail, agent.location())?;
    if !(follow && live) {
        return Ok(());
    }
    loop {
        std::thread::sleep(FOLLOW_POLL);
        if is_live(dir) != live {
            live = !live;
            out.record(&LogRecord::Volume(if live {
                VolumeView::Live
            } else {
                VolumeView::Unavailable {
                    reason: "the server stopped serving: its volume is unmounted".into(),
                }
            }))?;
        }
        if live {
            // The mount may go between the check and the read: the next round says so.
            if let Ok(new) = postgres.poll() {
                out.lines(LogSource::Postgres, Ok(new), postgres.location())?;
            }
        }
        let new = agent.poll();
        out.lines(LogSource::Agent, new, agent.location())?;
        out.keep_alive()?;
    }
}

/// Writes log records, one JSON document per line, flushed at once.
struct RecordWriter<W: Write> {
    out: W,
    last_write: Instant,
}

impl<W: Write> RecordWriter<W> {
    fn new(out: W) -> Self {
        Self {
            out,
            last_write: Instant::now(),
        }
    }

    fn record(&mut self, record: &LogRecord) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        self.write(&line)
    }

    /// Writes `lines` read from the log at `location`, or says why it could not be read.
    fn lines(
        &mut self,
        source: LogSource,
        lines: io::Result<Vec<String>>,
        location: &std::path::Path,
    ) -> io::Result<()> {
        let lines = lines.unwrap_or_else(|e| {
            vec![format!(
                "(pgcmk: cannot read the log at {}: {e})",
                location.display()
            )]
        });
        for text in lines {
            self.record(&LogRecord::Line { source, text })?;
        }
        Ok(())
    }

    /// An empty line when nothing was written for [`KEEPALIVE`].
    fn keep_alive(&mut self) -> io::Result<()> {
        if self.last_write.elapsed() >= KEEPALIVE {
            self.write(b"\n")?;
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.out.flush()?;
        self.last_write = Instant::now();
        Ok(())
    }
}
