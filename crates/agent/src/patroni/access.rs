//! What lets a node's Patroni into the consensus store and guards its REST API
//! (`docs/high-availability.md`, "Who may steer a server"): the client certificate
//! and key it shows etcd (and the other nodes' REST APIs), its server's etcd
//! user's password, and the password its REST API asks for the unsafe endpoints
//! (switchover, failover, restart, reload, configuration). They come in
//! the start-up handshake at every start of the agent and are written to the
//! node's encrypted mount only (`mnt/patroni/access/`): never an argument, the
//! environment, or a file on the host's disk.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use pgcmk_crypto::SecretBytes;

use crate::contract::handshake::NodeTls;
use crate::contract::ServerDir;
use crate::error::IoContext;
use crate::own_mount;
use crate::postgres::OsUser;
use crate::Error;

/// The user name of Patroni's REST API credential (the control plane's).
pub const REST_API_USER: &str = "pgcmk";

/// What the handshake brought for a node's Patroni.
pub(crate) struct PatroniAccess {
    etcd_client: Option<NodeTls>,
    etcd_password: Option<SecretBytes>,
    rest_api_password: SecretBytes,
}

/// Where [`PatroniAccess`] is on the mount.
pub(crate) struct AccessFiles {
    /// The etcd client certificate and key, when the handshake brought them.
    pub(crate) etcd_client: Option<(PathBuf, PathBuf)>,
    /// The REST API's password (read back to write Patroni's configuration).
    pub(crate) rest_api_password: SecretBytes,
    /// The server's etcd user's password, when the handshake brought one.
    pub(crate) etcd_password: Option<SecretBytes>,
}

fn access_dir(dir: &ServerDir) -> PathBuf {
    dir.mountpoint().join("patroni").join("access")
}

impl PatroniAccess {
    /// The handshake's part for Patroni. Deny by default: a node whose handshake
    /// brought no REST API password does not run Patroni with an open API.
    pub(crate) fn from_handshake(
        etcd_client: Option<NodeTls>,
        etcd_password: Option<SecretBytes>,
        rest_api_password: Option<SecretBytes>,
    ) -> Result<Self, Error> {
        let rest_api_password = rest_api_password.ok_or_else(|| {
            Error::Postgres(
                "the handshake of a highly available node brought no patroni_api_password: \
                 run the same pgcmk build for `pgcmk serve` and the agents"
                    .into(),
            )
        })?;
        Ok(Self {
            etcd_client,
            etcd_password,
            rest_api_password,
        })
    }

    /// Writes it onto the mounted volume of `dir`, replacing an earlier start's:
    /// the etcd key and the passwords 0600, `user`'s (Patroni's).
    pub(crate) fn install(&self, dir: &ServerDir, user: &OsUser) -> Result<(), Error> {
        let access = access_dir(dir);
        fs::create_dir_all(&access).ctx(|| format!("creating {}", access.display()))?;
        fs::set_permissions(&access, fs::Permissions::from_mode(0o700))
            .ctx(|| format!("setting permissions of {}", access.display()))?;
        user.chown(&access)?;
        let mut files = vec![(
            access.join("restapi-password"),
            self.rest_api_password.expose_secret(),
        )];
        if let Some(etcd) = &self.etcd_client {
            files.push((
                access.join("etcd-client.crt"),
                etcd.certificate_pem.as_bytes(),
            ));
            files.push((access.join("etcd-client.key"), etcd.key_pem.expose_secret()));
        } else {
            for stale in ["etcd-client.crt", "etcd-client.key"] {
                let _ = fs::remove_file(access.join(stale));
            }
        }
        match &self.etcd_password {
            Some(password) => files.push((access.join("etcd-password"), password.expose_secret())),
            None => {
                let _ = fs::remove_file(access.join("etcd-password"));
            }
        }
        for (path, bytes) in files {
            pgcmk_hostkeys::files::write_atomic(&path, bytes, 0o600)?;
            user.chown(&path)?;
        }
        Ok(())
    }
}

impl AccessFiles {
    /// What [`PatroniAccess::install`] wrote on the mount of `dir`.
    pub(crate) fn installed(dir: &ServerDir) -> Result<Self, Error> {
        let access = access_dir(dir);
        let password = access.join("restapi-password");
        let rest_api_password = own_mount::read_to_string(&password)
            .map(|text| SecretBytes::new(text.into_bytes()))
            .ok_or_else(|| {
                Error::Postgres(format!(
                    "{} cannot be read: Patroni's REST API would be open",
                    password.display()
                ))
            })?;
        let certificate = access.join("etcd-client.crt");
        let key = access.join("etcd-client.key");
        Ok(Self {
            etcd_client: (certificate.exists() && key.exists()).then_some((certificate, key)),
            rest_api_password,
            etcd_password: own_mount::read_to_string(&access.join("etcd-password"))
                .map(|text| SecretBytes::new(text.into_bytes())),
        })
    }
}
