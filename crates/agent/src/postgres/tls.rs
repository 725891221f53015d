//! PostgreSQL's network face, in one place for every way a node runs (the agent's
//! own supervision, and Patroni's configuration on HA nodes): the addresses it
//! listens on, TLS with the node's certificate, and the `pg_hba` rules.
//!
//! The rules: the Unix socket (whose directory only root and the PostgreSQL user
//! can enter) is trusted, which is how the agent itself connects; every TCP
//! connection, from clients and from replicating standbys alike, must be TLS and
//! authenticate with SCRAM-SHA-256. There is no plaintext `host` line, not even for
//! loopback: a connection without TLS matches no rule and is refused.
//!
//! The certificate and its key are written on the encrypted volume at every mount
//! (the key 0600, owned by the PostgreSQL user, as PostgreSQL demands), never on the
//! host's disk in the clear; `pg_hba.conf` is written beside them, so the rules are
//! the code's at every start whatever `initdb` wrote.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use crate::contract::handshake::NodeTls;
use crate::error::IoContext;
use crate::Error;

use super::OsUser;

/// Where a server listens when nothing else is said.
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The oldest TLS version PostgreSQL accepts (TLS 1.0 and 1.1 are broken).
pub const MIN_TLS_VERSION: &str = "TLSv1.2";

/// The `pg_hba.conf` rules, in order (the first that matches a connection decides).
pub const HBA_RULES: [&str; 4] = [
    "local   all          all        trust",
    "local   replication  all        trust",
    "hostssl all          all  all   scram-sha-256",
    "hostssl replication  all  all   scram-sha-256",
];

/// The node's TLS files on the encrypted volume.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The server certificate, PEM.
    pub certificate: PathBuf,
    /// Its private key, PEM (0600, the PostgreSQL user's).
    pub key: PathBuf,
    /// The `pg_hba.conf` of [`HBA_RULES`].
    pub hba: PathBuf,
}

impl TlsFiles {
    /// Writes `tls` and the `pg_hba` rules into `dir` (on the encrypted mount),
    /// replacing what an earlier start wrote, all owned by `user`.
    pub fn install(dir: &Path, tls: &NodeTls, user: &OsUser) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        user.chown(dir)?;
        let files = Self {
            certificate: dir.join("server.crt"),
            key: dir.join("server.key"),
            hba: dir.join("pg_hba.conf"),
        };
        let hba = format!(
            "# Written by the pgcmk agent at every start (docs/tls.md): TCP only over TLS.\n{}\n",
            HBA_RULES.join("\n")
        );
        for (path, bytes, mode) in [
            (&files.certificate, tls.certificate_pem.as_bytes(), 0o644),
            (&files.key, tls.key_pem.expose_secret(), 0o600),
            (&files.hba, hba.as_bytes(), 0o600),
        ] {
            pgcmk_hostkeys::files::write_atomic(path, bytes, mode)?;
            user.chown(path)?;
        }
        Ok(files)
    }

    /// PostgreSQL's settings for TLS on `listen` (none: the Unix socket only).
    pub fn settings(&self, listen: &[IpAddr]) -> Vec<(&'static str, String)> {
        vec![
            ("listen_addresses", listen_addresses(listen)),
            ("ssl", "on".into()),
            ("ssl_cert_file", self.certificate.display().to_string()),
            ("ssl_key_file", self.key.display().to_string()),
            ("ssl_min_protocol_version", MIN_TLS_VERSION.into()),
            ("hba_file", self.hba.display().to_string()),
            ("password_encryption", "scram-sha-256".into()),
        ]
    }
}

/// The settings of a node that has no TLS identity: no TCP at all, so nothing
/// can reach it in plaintext.
pub fn socket_only_settings() -> Vec<(&'static str, String)> {
    vec![("listen_addresses", String::new())]
}

/// `listen_addresses` for `listen`: comma-separated, IPv6 without brackets.
fn listen_addresses(listen: &[IpAddr]) -> String {
    listen
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rule_lets_tcp_in_without_tls() {
        for rule in HBA_RULES {
            let kind = rule.split_whitespace().next().unwrap();
            assert!(kind == "local" || kind == "hostssl", "{rule}");
            if kind == "hostssl" {
                assert!(rule.ends_with("scram-sha-256"), "{rule}");
            }
        }
    }

    #[test]
    fn settings_name_the_files_and_every_address() {
        let files = TlsFiles {
            certificate: "/m/tls/server.crt".into(),
            key: "/m/tls/server.key".into(),
            hba: "/m/tls/pg_hba.conf".into(),
        };
        let listen = [LOOPBACK, "fd00::5".parse().unwrap()];
        let settings = files.settings(&listen);
        let get = |name| settings.iter().find(|(n, _)| *n == name).unwrap().1.clone();
        assert_eq!(get("listen_addresses"), "127.0.0.1,fd00::5");
        assert_eq!(get("ssl"), "on");
        assert_eq!(get("ssl_min_protocol_version"), "TLSv1.2");
        assert_eq!(get("ssl_key_file"), "/m/tls/server.key");
        assert_eq!(get("hba_file"), "/m/tls/pg_hba.conf");
        assert_eq!(
            socket_only_settings(),
            [("listen_addresses", String::new())]
        );
    }
}
