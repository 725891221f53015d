//! A node of a highly available server runs Patroni on its mount instead of
//! PostgreSQL: Patroni owns replication and promotion (it bootstraps the first
//! node with `initdb`, clones the others with `pg_basebackup`, keeps a leader lock
//! in etcd, promotes the synchronous standby when the primary is gone, rewinds a
//! returning primary); the agent owns the mount, the DEK and the key monitor. A
//! node whose key does not unwrap has no mount, so its Patroni never runs and it
//! never serves, whatever the cluster would make of it.
//!
//! Patroni runs as the PostgreSQL user, as the agent's child (SIGKILL when the
//! agent dies: a node whose agent died is a dead node), with its configuration on
//! the mount ([`config`]).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgcmk_crypto::SecretBytes;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::contract::server_dir::{write_json_atomic, write_private_file};
use crate::contract::{HaNode, ServerDir};
use crate::error::IoContext;
use crate::own_mount;
use crate::pg_lock;
use crate::postgres::{PgInstall, PgLayout};
use crate::sys::{self, Signal};
use crate::Error;

pub mod access;
pub mod adopt;
pub mod config;

use access::AccessFiles;
use config::{Guards, NodePasswords, NodePlaces, PatroniConfig};

/// The Patroni program (Debian's `patroni` package).
const PATRONI: &str = "/usr/bin/patroni";
/// How long Patroni may take to stop PostgreSQL and give up its leader lock.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// How long a postmaster left by a dead Patroni may take to exit.
const ORPHAN_GRACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// The node's passwords, kept on its mount (`DIR/mnt/ha-passwords.json`, 0600
/// root): written once when the node is provisioned, read at every mount to write
/// Patroni's configuration.
#[derive(Serialize, Deserialize, Zeroize)]
#[zeroize(drop)]
struct StoredPasswords {
    /// `None` on a server made highly available after create ([`adopt`]).
    superuser: Option<String>,
    replication: String,
}

pub(super) fn passwords_file(dir: &ServerDir) -> PathBuf {
    dir.mountpoint().join("ha-passwords.json")
}

fn patroni_dir(dir: &ServerDir) -> PathBuf {
    dir.mountpoint().join("patroni")
}

/// Prepares a new node's mounted volume: its passwords (the superuser's unless the
/// server was made highly available after create), and the empty directories
/// Patroni and PostgreSQL (as the PostgreSQL user) fill.
pub(crate) fn provision(
    dir: &ServerDir,
    install: &PgInstall,
    superuser: Option<&SecretBytes>,
    replication: &SecretBytes,
) -> Result<(), Error> {
    store_passwords(dir, superuser, replication)?;
    own_dirs(dir, install)
}

/// Writes the node's passwords onto its mount (0600 root).
pub(super) fn store_passwords(
    dir: &ServerDir,
    superuser: Option<&SecretBytes>,
    replication: &SecretBytes,
) -> Result<(), Error> {
    let text = |s: &SecretBytes| String::from_utf8_lossy(s.expose_secret()).into_owned();
    let stored = StoredPasswords {
        superuser: superuser.map(text),
        replication: text(replication),
    };
    let bytes = SecretBytes::new(
        serde_json::to_vec(&stored).map_err(|e| Error::Postgres(format!("encoding: {e}")))?,
    );
    write_private_file(&passwords_file(dir), bytes.expose_secret())
}

/// Patroni's directory and the data directory, the PostgreSQL user's, 0700.
pub(super) fn own_dirs(dir: &ServerDir, install: &PgInstall) -> Result<(), Error> {
    for owned in [patroni_dir(dir), dir.data_dir()] {
        fs::create_dir_all(&owned).ctx(|| format!("creating {}", owned.display()))?;
        fs::set_permissions(&owned, fs::Permissions::from_mode(0o700))
            .ctx(|| format!("setting permissions of {}", owned.display()))?;
        install.user().chown(&owned)?;
    }
    Ok(())
}

/// Patroni on one node, supervised as the agent's child.
pub(crate) struct Patroni {
    install: PgInstall,
    layout: PgLayout,
    config_file: PathBuf,
    child: Option<Child>,
}

impl Patroni {
    /// Writes Patroni's configuration for `node` onto the mounted volume of `dir`
    /// (with the passwords stored there, what guards its REST API and its way into
    /// etcd ([`access`]), and PostgreSQL's `settings` — TLS, its
    /// `pg_hba` — as the agent would start it); nothing runs until [`Patroni::start`].
    pub(crate) fn configure(
        dir: &ServerDir,
        node: &HaNode,
        install: PgInstall,
        layout: PgLayout,
        settings: &[(&'static str, String)],
    ) -> Result<Self, Error> {
        let text = own_mount::read_to_string(&passwords_file(dir)).ok_or_else(|| {
            Error::Postgres(format!(
                "{} cannot be read: the node was not provisioned as a node of a highly \
                 available server",
                passwords_file(dir).display()
            ))
        })?;
        let text = SecretBytes::new(text.into_bytes());
        let stored: StoredPasswords = serde_json::from_slice(text.expose_secret())
            .map_err(|e| Error::Postgres(format!("{}: {e}", passwords_file(dir).display())))?;
        let patroni = patroni_dir(dir);
        let places = NodePlaces {
            data_dir: layout.data_dir.clone(),
            socket_dir: layout.socket_dir.clone(),
            pgpass: patroni.join("pgpass"),
            log_dir: patroni.join("log"),
            bin_dir: install.bindir().to_path_buf(),
            port: layout.port,
        };
        let passwords = NodePasswords {
            superuser: stored.superuser.as_deref(),
            replication: &stored.replication,
        };
        let access = AccessFiles::installed(dir)?;
        let rest_api_password = std::str::from_utf8(access.rest_api_password.expose_secret())
            .map_err(|_| Error::Postgres("the Patroni REST API password is not UTF-8".into()))?;
        let etcd_password = access
            .etcd_password
            .as_ref()
            .map(|p| std::str::from_utf8(p.expose_secret()))
            .transpose()
            .map_err(|_| Error::Postgres("the etcd password is not UTF-8".into()))?;
        let guards = Guards {
            rest_api_password,
            etcd_client: access.etcd_client,
            etcd_password,
        };
        let config_file = patroni.join("patroni.yml");
        write_json_atomic(
            &config_file,
            &PatroniConfig::new(node, &places, &passwords, settings).guarded(&guards),
        )?;
        install.user().chown(&config_file)?;
        for owned in [places.log_dir, layout.socket_dir.clone()] {
            fs::create_dir_all(&owned).ctx(|| format!("creating {}", owned.display()))?;
            fs::set_permissions(&owned, fs::Permissions::from_mode(0o700))
                .ctx(|| format!("setting permissions of {}", owned.display()))?;
            install.user().chown(&owned)?;
        }
        Ok(Self {
            install,
            layout,
            config_file,
            child: None,
        })
    }

    /// Starts Patroni. A postmaster left running by an earlier Patroni of this node
    /// (its agent was killed, so its mount went away under it) is ended first.
    pub(crate) fn start(&mut self) -> Result<(), Error> {
        if self.child.is_some() {
            return Err(Error::Postgres("patroni already started".into()));
        }
        pg_lock::end_orphan(&self.layout.data_dir, ORPHAN_GRACE)?;
        let mut cmd: Command = self.install.run_as_postgres(Path::new(PATRONI));
        cmd.arg(&self.config_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        sys::die_with_parent(&mut cmd, Signal::Kill);
        self.child = Some(cmd.spawn().ctx(|| format!("starting {PATRONI}"))?);
        Ok(())
    }

    /// Patroni's pid while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Reaps Patroni if it has exited and says how; `None` while it runs.
    pub(crate) fn poll_exit(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Stops Patroni (SIGTERM: it stops PostgreSQL and gives up its leader lock, so
    /// the other node takes over at once), then makes sure no postmaster is left.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = sys::send_signal(child.id(), Signal::Term);
            let deadline = Instant::now() + STOP_GRACE;
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() >= deadline {
                    tracing::error!("patroni did not stop within {STOP_GRACE:?}; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(POLL);
            }
        }
        if let Err(e) = pg_lock::end_orphan(&self.layout.data_dir, ORPHAN_GRACE) {
            tracing::error!("{e}");
        }
    }
}

impl Drop for Patroni {
    fn drop(&mut self) {
        self.stop();
    }
}
