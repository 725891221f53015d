//! A hot standby streaming from another server over TLS: the clone
//! (`pg_basebackup`) that provisions a read replica, and the settings of every
//! start. Promotion is a start without them: the `standby.signal` left in the data
//! directory is removed, and PostgreSQL ends recovery on a new timeline.
//!
//! The replication role's password is written only to a libpq password file on
//! the encrypted volume (0600, the PostgreSQL user's), which the connection
//! strings name (`passfile=`): it is in no argument, no environment and no
//! setting.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use pgcmk_crypto::SecretBytes;
use zeroize::Zeroizing;

use super::{succeeded, PgInstall, PgLayout, Postgres};
use crate::contract::replica::ReplicaSource;
use crate::error::IoContext;
use crate::Error;

/// How many times a clone is tried before the provisioning fails.
const CLONE_ATTEMPTS: u32 = 3;
/// The pause after the first failed clone (doubled after the second).
const CLONE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A standby of `source`, with its password file in `tls_dir` on the mount.
pub struct Standby<'a> {
    source: &'a ReplicaSource,
    passfile: PathBuf,
    /// The name the source sees it by (`application_name`).
    name: &'a str,
}

impl<'a> Standby<'a> {
    /// Writes the password file for `source`'s replication role with `password`
    /// into `dir` (on the encrypted mount), owned by the PostgreSQL user.
    pub fn prepare(
        install: &PgInstall,
        dir: &Path,
        source: &'a ReplicaSource,
        name: &'a str,
        password: &SecretBytes,
    ) -> Result<Self, Error> {
        fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        install.user().chown(dir)?;
        let passfile = dir.join("replication.pgpass");
        let password = std::str::from_utf8(password.expose_secret())
            .map_err(|_| Error::Postgres("the replication password is not UTF-8".into()))?;
        let line = Zeroizing::new(format!(
            "*:*:*:{}:{}\n",
            pgpass_field(&source.role),
            pgpass_field(password)
        ));
        pgcmk_hostkeys::files::write_atomic(&passfile, line.as_bytes(), 0o600)?;
        install.user().chown(&passfile)?;
        Ok(Self {
            source,
            passfile,
            name,
        })
    }

    /// The libpq connection string to the source: TLS, its certificate verified
    /// for its address against the servers CA, the password from the file. For a
    /// highly available source, every node's address: libpq tries them in turn
    /// and keeps the one that accepts writes, the primary whichever node it is.
    pub fn conninfo(&self) -> String {
        let (hosts, ports, primary) = match self.source.nodes.as_slice() {
            [] => (
                self.source.host.to_string(),
                self.source.port.to_string(),
                "",
            ),
            nodes => (
                join(nodes.iter().map(|n| n.ip().to_string())),
                join(nodes.iter().map(|n| n.port().to_string())),
                " target_session_attrs=read-write",
            ),
        };
        format!(
            "host={hosts} port={ports} user={} passfile={} sslmode=verify-full sslrootcert={} \
             application_name={}{primary}",
            self.source.role,
            self.passfile.display(),
            self.source.ca_file.display(),
            self.name
        )
    }

    /// Clones the source into the (new, empty) data directory of `layout` with
    /// `pg_basebackup`, WAL streamed alongside, and marks it a standby. A clone
    /// is a long conversation over the network: one cut short (CI saw the WAL
    /// stream's connection closed by the source under load) is tried again from
    /// an empty directory, [`CLONE_ATTEMPTS`] times in all, before the
    /// provisioning fails with the last reason.
    pub fn clone_source(&self, install: &PgInstall, layout: &PgLayout) -> Result<(), Error> {
        let data = &layout.data_dir;
        let mut attempt = 1;
        loop {
            match self.clone_once(install, data) {
                Ok(()) => return mark_standby(install, data),
                Err(e) if attempt < CLONE_ATTEMPTS => {
                    tracing::warn!(
                        "cloning the source, attempt {attempt} of {CLONE_ATTEMPTS}: {e}; \
                         trying again"
                    );
                    std::thread::sleep(CLONE_RETRY_AFTER * attempt);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One `pg_basebackup` into `data`, emptied first.
    fn clone_once(&self, install: &PgInstall, data: &Path) -> Result<(), Error> {
        if data.exists() {
            fs::remove_dir_all(data).ctx(|| format!("emptying {}", data.display()))?;
        }
        fs::create_dir_all(data).ctx(|| format!("creating {}", data.display()))?;
        // PostgreSQL refuses a data directory others may enter.
        fs::set_permissions(data, fs::Permissions::from_mode(0o700))
            .ctx(|| format!("setting permissions of {}", data.display()))?;
        install.user().chown(data)?;
        let out = install
            .command_as_postgres("pg_basebackup")
            .arg("-D")
            .arg(data)
            .args(["-d", &self.conninfo()])
            .args(["-X", "stream", "-c", "fast", "--no-password"])
            .stdin(Stdio::null())
            .output()
            .ctx(|| "running pg_basebackup")?;
        succeeded("pg_basebackup", &out)
    }

    /// Makes every start of `pg` a hot standby streaming from the source.
    pub fn configure(&self, pg: &mut Postgres) -> Result<(), Error> {
        mark_standby(pg.install(), &pg.layout().data_dir)?;
        pg.set("primary_conninfo", self.conninfo());
        pg.set("hot_standby", "on".into());
        Ok(())
    }
}

/// Makes the next start of the server in `data_dir` end recovery as a primary,
/// when it was a standby (promotion).
pub fn end_standby(data_dir: &Path) -> Result<bool, Error> {
    let signal = data_dir.join("standby.signal");
    if !signal.exists() {
        return Ok(false);
    }
    fs::remove_file(&signal).ctx(|| format!("removing {}", signal.display()))?;
    Ok(true)
}

fn mark_standby(install: &PgInstall, data_dir: &Path) -> Result<(), Error> {
    let signal = data_dir.join("standby.signal");
    fs::write(&signal, b"").ctx(|| format!("writing {}", signal.display()))?;
    install.user().chown(&signal)
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(",")
}

/// A field of a libpq password file: `:` and `\` escaped.
fn pgpass_field(text: &str) -> String {
    text.replace('\\', "\\\\").replace(':', "\\:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_highly_available_source_is_every_node_and_the_one_that_takes_writes() {
        let mut source = ReplicaSource {
            server: "orders".into(),
            host: "127.0.0.2".parse().unwrap(),
            port: 5001,
            role: "pgcmk_replication".into(),
            ca_file: "/s/servers-ca.pem".into(),
            nodes: Vec::new(),
        };
        fn standby(source: &ReplicaSource) -> Standby<'_> {
            Standby {
                source,
                passfile: "/m/tls/replication.pgpass".into(),
                name: "r1",
            }
        }
        let single = standby(&source).conninfo();
        assert!(single.starts_with("host=127.0.0.2 port=5001 "), "{single}");
        assert!(!single.contains("target_session_attrs"), "{single}");
        source.nodes = vec![
            "127.0.0.2:5001".parse().unwrap(),
            "127.0.0.3:5002".parse().unwrap(),
        ];
        let ha = standby(&source).conninfo();
        assert!(
            ha.starts_with("host=127.0.0.2,127.0.0.3 port=5001,5002 "),
            "{ha}"
        );
        assert!(ha.ends_with(" target_session_attrs=read-write"), "{ha}");
        assert!(ha.contains("sslmode=verify-full"), "{ha}");
    }

    #[test]
    fn password_file_fields_escape_colons_and_backslashes() {
        assert_eq!(pgpass_field(r"a:b\c"), r"a\:b\\c");
    }
}
