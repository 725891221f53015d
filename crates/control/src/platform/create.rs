//! Creating a server: the request, its encryption, and the create itself.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use pgcmk_agent::contract::backup::{BackupSettings, RestoreSource};
use pgcmk_agent::contract::replica::ReplicaSource;
use pgcmk_agent::contract::server_dir::write_json_atomic;
use pgcmk_agent::contract::{KekAccess, ServerDir};
use pgcmk_crypto::{random, SecretBytes};
use pgcmk_keyprovider::KeyReference;
use serde::{Deserialize, Serialize};

use super::backup_settings::BackupSettingsChange;
use super::geo::GeoBackupChoice;
use super::ha_create::NODES;
use super::listen::{free_port, listen_addresses};
use super::names::{validate_location, validate_name};
use super::supervise::{READY_TIMEOUT, RESTORE_READY_TIMEOUT};
use super::Platform;
use crate::error::IoContext;
use crate::model::{now_rfc3339, Actor, Encryption, SecretString, ServerRecord, ServerState};
use crate::store::{geo_owner, PLATFORM_IDENTITY};
use crate::validate::{self, Requirements};
use crate::Error;

/// A request to create a server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateServer {
    /// Unique name: lowercase letters, digits and `-`, 3–63 characters.
    pub name: String,
    /// Where the server runs.
    pub location: String,
    /// How its DEK is protected.
    #[serde(flatten)]
    pub protection: KeyChoice,
    /// Days of backups kept and the backup schedule (default: 7 days, a full
    /// backup a week, a differential one a day).
    #[serde(flatten)]
    pub backup_settings: BackupSettingsChange,
    /// A geo-redundant copy of its backups, under a key in another location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo_backup: Option<GeoBackupChoice>,
    /// Two nodes, a primary and a synchronous standby, under Patroni
    /// (`docs/high-availability.md`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub high_availability: bool,
    /// IP addresses of this host that PostgreSQL listens on, over TLS only
    /// (none: 127.0.0.1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen_addresses: Vec<String>,
    /// The enrolled host to run it on (`docs/hosts.md`); none: the control
    /// plane's own machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// A highly available server's nodes on enrolled hosts: one distinct host per
    /// node, in node order (`docs/hosts.md`); none: the control plane's machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// How a new server's DEK is protected (the encryption fields of a create or a
/// restore request).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KeyChoice {
    /// `service-managed` (default) or `customer-managed`.
    #[serde(default)]
    pub encryption: Option<String>,
    /// Customer-managed: the managed identity's client id.
    #[serde(default)]
    pub identity: Option<String>,
    /// Customer-managed: the identity's header secret (from its credential file),
    /// which assigns the identity to the server.
    #[serde(default)]
    pub identity_secret: Option<SecretString>,
    /// Customer-managed: the key URL, versioned or versionless.
    #[serde(default)]
    pub key: Option<String>,
}

/// What a new server's agent gets at its first start, besides its identity's
/// secret.
#[derive(Clone)]
pub(super) struct FirstStart {
    /// The superuser's password.
    pub(super) password: SecretBytes,
    /// For a restore: the secret of the identity that unwraps the source's
    /// repository key.
    pub(super) source_identity_secret: Option<SecretBytes>,
    /// For a node of a highly available server: the replication role's password.
    pub(super) replication_password: Option<SecretBytes>,
}

/// What a new server's agent starts from.
pub(super) enum Origin {
    /// An empty cluster (`initdb`).
    Initdb,
    /// Another server's backups.
    Restore(Box<Restoring>),
    /// A clone of another server that it keeps streaming from (a read replica).
    Replica(ReplicaOf),
}

/// A new read replica's source.
pub(super) struct ReplicaOf {
    /// The source server's id.
    pub(super) source_id: String,
    /// Where the replica's agent connects to it.
    pub(super) source: ReplicaSource,
}

/// A new server restored from another's backups.
pub(super) struct Restoring {
    /// Where from, and to which point.
    pub(super) source: RestoreSource,
    /// The secret of the identity that unwraps the source's repository key.
    pub(super) source_identity_secret: SecretBytes,
}

/// The answer to a create: the server, and its superuser password, shown once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Created {
    /// The new server.
    pub server: ServerRecord,
    /// The `postgres` superuser's password: stored nowhere by the platform.
    pub password: SecretString,
}

impl CreateServer {
    /// Checks the request's own fields (name and location) before any state is
    /// touched; what needs the platform (the key, the identity) is checked by
    /// [`Platform::create`].
    pub fn check(&self) -> Result<(), Error> {
        validate_name(&self.name)?;
        validate_location(&self.location)?;
        let placed = self.host.is_some() || !self.hosts.is_empty();
        if placed && self.geo_backup.is_some() {
            return Err(Error::BadRequest(
                "geo-redundant backups of servers on hosts are not available yet \
                 (docs/hosts.md): create it without --host or without --geo-backup-key"
                    .into(),
            ));
        }
        if self.high_availability {
            if self.host.is_some() {
                return Err(Error::BadRequest(format!(
                    "a highly available server takes one host per node: give --host {NODES} \
                     times (\"hosts\"), each a different host"
                )));
            }
            self.check_node_hosts()?;
        } else if !self.hosts.is_empty() {
            return Err(Error::BadRequest(
                "\"hosts\" places the nodes of a highly available server: a single server \
                 takes one --host (\"host\")"
                    .into(),
            ));
        }
        listen_addresses(&self.listen_addresses).map(drop)
    }

    /// The request placed on `hosts` as the command line gives them (`--host`,
    /// repeated): a single server's one host, a highly available server's host
    /// per node; more than one for a single server is left for [`Self::check`]
    /// to refuse.
    pub fn placed_on(self, mut hosts: Vec<String>) -> Self {
        match (self.high_availability, hosts.len()) {
            (false, 0 | 1) => Self {
                host: hosts.pop(),
                ..self
            },
            _ => Self { hosts, ..self },
        }
    }

    /// A highly available server's hosts: none, or one distinct host per node.
    fn check_node_hosts(&self) -> Result<(), Error> {
        if self.hosts.is_empty() {
            return Ok(());
        }
        if self.hosts.len() != NODES {
            return Err(Error::BadRequest(format!(
                "a highly available server has {NODES} nodes, one per host: {} host(s) given \
                 ({}); give --host {NODES} times",
                self.hosts.len(),
                self.hosts.join(", ")
            )));
        }
        for (i, host) in self.hosts.iter().enumerate() {
            if self.hosts[..i].contains(host) {
                return Err(Error::BadRequest(format!(
                    "host '{host}' is given twice: each node of a highly available server \
                     runs on a host of its own, so that one host's loss leaves the other"
                )));
            }
        }
        Ok(())
    }
}

impl Platform {
    /// Creates a server: validates its key (with a real wrap and unwrap), writes
    /// its directory (`agent.json`, the wrapped DEK) and row, starts its agent —
    /// which provisions the encrypted volume and cluster with the superuser
    /// password handed over the start-up handshake — and waits for Ready. On any
    /// failure nothing is left: no directory, no process, no row. Only the
    /// server's own lock is held meanwhile: other servers are not held up.
    pub fn create(&self, req: &CreateServer) -> Result<Created, Error> {
        req.check()?;
        if req.high_availability {
            return self.create_ha(req);
        }
        self.create_server(req, Origin::Initdb)
    }

    /// [`Platform::create`], of a server whose agent starts from `origin`.
    pub(super) fn create_server(
        &self,
        req: &CreateServer,
        origin: Origin,
    ) -> Result<Created, Error> {
        req.check()?;
        let backup_settings = req.backup_settings.applied_to(BackupSettings::default())?;
        let _reserved = self.locks.reserve(&req.name)?;
        let _guard = self.locks.lock(&req.name);
        if self.store.server(&req.name).is_ok() {
            return Err(Error::NameTaken(req.name.clone()));
        }
        if let Some(host) = &req.host {
            self.check_placement(req, host)?;
        }
        let id = hex_id()?;
        let dir = match &req.host {
            // Under the host's own state directory, which the plane never touches.
            Some(_) => ServerDir::new(std::path::Path::new("servers").join(&id)),
            None => ServerDir::new(self.config.state_dir.join("servers").join(&id)),
        };
        let (encryption, access, secret) = self.encryption_for(&req.protection)?;
        let kek = match &secret {
            Some(secret) => access.connect(secret.clone()),
            None => access.connect(self.secrets.get(&self.store, PLATFORM_IDENTITY)?),
        }
        .map_err(|e| Error::BadRequest(e.to_string()))?;
        let sealed_secret = secret
            .as_ref()
            .map(|s| self.secrets.seal(&id, s))
            .transpose()?;
        let wrapped = new_wrapped_dek(kek.as_ref(), &access, &encryption, &req.location)?;
        let geo = req
            .geo_backup
            .as_ref()
            .map(|choice| self.geo_backup_for(&id, &req.location, choice))
            .transpose()?;
        let listen = listen_addresses(&req.listen_addresses)?;
        let port = free_port(&listen)?;
        let password = hex_id()?;
        let record = ServerRecord {
            id: id.clone(),
            name: req.name.clone(),
            location: req.location.clone(),
            encryption,
            wrapped_dek: wrapped.clone(),
            state: ServerState::Provisioning,
            port,
            listen_addresses: listen,
            replica_of: match &origin {
                Origin::Replica(r) => Some(r.source_id.clone()),
                _ => None,
            },
            dir: dir.root().to_path_buf(),
            created_at: now_rfc3339(),
            nodes: Vec::new(),
            node_of: None,
            host: req.host.clone(),
        };
        let mut agent_config = self.agent_config(&record, access);
        let (restore, source_identity_secret) = match origin {
            Origin::Initdb => (None, None),
            Origin::Restore(r) => {
                let Restoring {
                    source,
                    source_identity_secret,
                } = *r;
                (Some(source), Some(source_identity_secret))
            }
            Origin::Replica(r) => {
                // A standby archives nothing: its backups start if it is promoted.
                agent_config.backup = None;
                agent_config.replica = Some(r.source);
                (None, None)
            }
        };
        agent_config.restore = restore;
        if let Some(backup) = agent_config.backup.as_mut() {
            backup.apply(backup_settings);
            backup.geo = geo.as_ref().map(|g| g.repository.clone());
        }
        let written = (|| {
            if record.host.is_some() {
                self.store.put_assigned_config(&id, &agent_config)?;
                return self.store.insert_server(&record, sealed_secret.as_deref());
            }
            fs::create_dir(dir.root()).ctx(|| format!("creating {}", dir.root().display()))?;
            fs::set_permissions(dir.root(), fs::Permissions::from_mode(0o711))
                .ctx(|| "setting permissions of the server directory")?;
            write_json_atomic(&dir.agent_config(), &agent_config)?;
            write_json_atomic(&dir.wrapped_dek(), &wrapped)?;
            if let Some(geo) = &geo {
                write_json_atomic(&dir.wrapped_geo_backup_key(), &geo.wrapped_key)?;
            }
            self.store
                .insert_server(&record, sealed_secret.as_deref())?;
            match &geo {
                Some(geo) => self.secrets.put(&self.store, &geo_owner(&id), &geo.secret),
                None => Ok(()),
            }
        })();
        if let Err(e) = written {
            let _ = self.store.remove_server(&id);
            if record.host.is_none() {
                let _ = fs::remove_dir_all(dir.root());
            }
            return Err(e);
        }
        let what = match &agent_config.restore {
            Some(source) => format!(
                "{}; restored from server '{}' (repository {}) to {}",
                describe(&record),
                source.server,
                source.repository_kind.number(),
                source.target
            ),
            None => describe(&record),
        };
        let what = match &agent_config.replica {
            Some(source) => format!(
                "{what}; read replica of server '{}', streaming from {}:{}",
                source.server, source.host, source.port
            ),
            None => what,
        };
        let what = match &geo {
            Some(geo) => format!("{what}; {}", geo.describe()),
            None => what,
        };
        self.event(&record, Actor::Dba, "server created", &what)?;
        // A restore copies the backup and replays the archived WAL up to the target
        // before the server serves, a replica clones its source: either may take as
        // long as the agent lets recovery run.
        let limit = match (&agent_config.restore, &agent_config.replica) {
            (None, None) => READY_TIMEOUT,
            _ => RESTORE_READY_TIMEOUT,
        };
        let first_start = FirstStart {
            password: SecretBytes::new(password.as_bytes().to_vec()),
            source_identity_secret,
            replication_password: None,
        };
        if let Err(e) = self
            .spawn_agent(&record, Some(&first_start))
            .and_then(|()| self.wait_settled_within(&record, limit))
        {
            self.stop_agent(&record.id);
            if record.host.is_some() {
                self.remove_from_host(&record);
                return Err(e);
            }
            self.store.remove_server(&record.id)?;
            let _ = self.remove_repositories(&dir, &record.id);
            let _ = fs::remove_dir_all(dir.root());
            self.event(
                &record,
                Actor::ControlPlane,
                "server removed",
                &format!("create failed: {e}"),
            )?;
            return Err(e);
        }
        let server = self.store.server(&record.id)?;
        Ok(Created {
            server,
            password: SecretString::new(password),
        })
    }

    /// The encryption, the way to reach its KEK, and (customer-managed) the
    /// identity's secret to store for the agent.
    pub(super) fn encryption_for(
        &self,
        req: &KeyChoice,
    ) -> Result<(Encryption, KekAccess, Option<SecretBytes>), Error> {
        match req.encryption.as_deref().unwrap_or("service-managed") {
            "service-managed" => {
                if req.identity.is_some() || req.key.is_some() {
                    return Err(Error::BadRequest(
                        "--identity and --key are only for --encryption customer-managed".into(),
                    ));
                }
                Ok((Encryption::ServiceManaged, self.platform_access(), None))
            }
            "customer-managed" => {
                const IDENTITY: &str = "--identity (the user-assigned managed identity: its \
                                        name, object id or client id)";
                const KEY: &str = "--key (the key's URL, https://VAULT/keys/NAME: `pgcmk key \
                                   create` prints it as its key URL)";
                let missing = match (&req.identity, &req.key) {
                    (Some(identity), Some(key)) => Ok((identity, key)),
                    (None, None) => Err(format!("{IDENTITY} and {KEY}")),
                    (None, Some(_)) => Err(IDENTITY.to_string()),
                    (Some(_), None) => Err(KEY.to_string()),
                };
                let (identity, key) = missing.map_err(|what| {
                    Error::BadRequest(format!("customer-managed encryption needs {what}"))
                })?;
                let secret = assigning_secret(
                    req.identity_secret.as_ref(),
                    "customer-managed encryption needs the identity's credential \
                     (--identity-credential-file) to assign the identity to the server",
                )?;
                let key = self.customer_key(identity, key)?;
                let access = KekAccess {
                    key: key.clone(),
                    vault: self.vault_endpoints(),
                    client_id: identity.clone(),
                };
                Ok((
                    Encryption::CustomerManaged {
                        identity: identity.clone(),
                        key,
                    },
                    access,
                    Some(secret),
                ))
            }
            other => Err(Error::BadRequest(format!(
                "unknown encryption '{other}': use service-managed or customer-managed"
            ))),
        }
    }

    /// Parses a customer's key reference and checks that this control plane may
    /// reach it: a PKCS#11 module is code that the control plane and the agents
    /// load, and a KMIP CA file decides which servers receive DEKs to wrap, so only
    /// the modules and CA files the platform operator allowed are used.
    pub(super) fn customer_key(&self, identity: &str, key: &str) -> Result<KeyReference, Error> {
        let key = KeyReference::parse(key).map_err(|e| Error::BadRequest(e.to_string()))?;
        if let KeyReference::Kmip(k) = &key {
            match &k.ca_file {
                Some(ca) if self.config.kmip_ca_files.contains(ca) => {}
                Some(ca) => {
                    return Err(Error::BadRequest(format!(
                        "KMIP CA file {} is not allowed on this control plane: the platform \
                         operator allows one with `pgcmk serve --kmip-ca-file PATH`",
                        ca.display()
                    )))
                }
                None => {
                    return Err(Error::BadRequest(format!(
                        "key {k}: say which CA issued the KMIP server's certificate with \
                         ?ca-file=/path/to/ca.pem (one that `pgcmk serve --kmip-ca-file` allows)"
                    )))
                }
            }
        }
        if let KeyReference::Pkcs11(k) = &key {
            if !self.config.pkcs11_modules.contains(&k.module_path) {
                return Err(Error::BadRequest(format!(
                    "PKCS#11 module {} is not allowed on this control plane: the platform \
                     operator allows a module with `pgcmk serve --pkcs11-module PATH`",
                    k.module_path.display()
                )));
            }
            if identity != PKCS11_IDENTITY {
                return Err(Error::BadRequest(format!(
                    "a PKCS#11 key is used as the token's user: give --identity \
                     {PKCS11_IDENTITY} and the user's PIN in --identity-credential-file \
                     (not '{identity}')"
                )));
            }
        }
        Ok(key)
    }

    pub(super) fn platform_access(&self) -> KekAccess {
        KekAccess {
            key: self.config.platform_key.clone(),
            vault: self.vault_endpoints(),
            client_id: self.config.platform_client_id.clone(),
        }
    }
}

/// The identity's secret of a request (which assigns the identity to the server),
/// or the error `missing` when it has none.
pub(super) fn assigning_secret(
    secret: Option<&SecretString>,
    missing: &str,
) -> Result<SecretBytes, Error> {
    let secret = secret.map_or("", |s| s.expose_secret()).trim();
    if secret.is_empty() {
        return Err(Error::BadRequest(missing.into()));
    }
    Ok(SecretBytes::new(secret.as_bytes().to_vec()))
}

/// A new DEK wrapped by `kek`, validated with a real wrap and unwrap against what
/// `encryption` in `location` requires. The DEK exists here only while its
/// wrapping is validated: the agent unwraps its own copy to provision the server.
pub(super) fn new_wrapped_dek(
    kek: &dyn pgcmk_keyprovider::KeyEncryptionKey,
    access: &KekAccess,
    encryption: &Encryption,
    location: &str,
) -> Result<pgcmk_keyprovider::WrappedDek, Error> {
    let (dek, wrapped) = validate::new_wrapped_dek(
        kek,
        &access.client_id,
        &Requirements {
            customer_managed: matches!(encryption, Encryption::CustomerManaged { .. }),
            location,
        },
    )?;
    drop(dek);
    Ok(wrapped)
}

/// The identity a PKCS#11 key is used as: the token's user (`CKU_USER`), whose
/// PIN is the server's credential.
const PKCS11_IDENTITY: &str = "user";

/// 128 random bits as 32 lowercase hex characters.
pub(super) fn hex_id() -> Result<String, Error> {
    let bytes: [u8; 16] = random::array()?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn describe(record: &ServerRecord) -> String {
    match &record.encryption {
        Encryption::ServiceManaged => format!(
            "service-managed key; DEK wrapped by {}",
            record.wrapped_dek.kek
        ),
        Encryption::CustomerManaged { identity, key } => format!(
            "customer-managed key {key} via identity {identity}; DEK wrapped by {}",
            record.wrapped_dek.kek
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_requests_are_not_printed() {
        let req: CreateServer = serde_json::from_str(
            r#"{"name":"a1b","location":"l","identity_secret":"s3cr3t-header"}"#,
        )
        .unwrap();
        assert_eq!(
            req.protection
                .identity_secret
                .as_ref()
                .unwrap()
                .expose_secret(),
            "s3cr3t-header"
        );
        let printed = format!("{req:?}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert!(printed.contains("REDACTED"), "{printed}");
    }

    #[test]
    fn hosts_are_one_distinct_host_per_node_of_a_highly_available_server_only() {
        let request = |high_availability: bool, hosts: &[&str]| {
            CreateServer {
                high_availability,
                ..serde_json::from_str(r#"{"name":"a1b","location":"l"}"#).unwrap()
            }
            .placed_on(hosts.iter().map(|h| h.to_string()).collect())
        };
        let refusal =
            |high_availability, hosts: &[&str]| match request(high_availability, hosts).check() {
                Err(Error::BadRequest(said)) => said,
                other => panic!("{hosts:?}: {other:?}"),
            };
        // A single server takes its one host as `host`; a pair as `hosts`.
        assert_eq!(request(false, &["h1"]).host.as_deref(), Some("h1"));
        request(false, &["h1"]).check().unwrap();
        request(true, &["h1", "h2"]).check().unwrap();
        request(true, &[]).check().unwrap();
        assert!(refusal(true, &["h1"]).contains("1 host(s) given"));
        assert!(refusal(true, &["h1", "h2", "h3"]).contains("3 host(s) given"));
        assert!(refusal(true, &["h1", "h1"]).contains("'h1' is given twice"));
        assert!(refusal(false, &["h1", "h2"]).contains("a single server takes one --host"));
    }

    #[test]
    fn ids_are_32_hex_and_distinct() {
        let (a, b) = (hex_id().unwrap(), hex_id().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
