//! Patroni's configuration for one node, typed, written as JSON (which is YAML)
//! to the node's encrypted mount: it holds the superuser's and the replication
//! role's passwords, so it never reaches the host's disk in plaintext, nor any
//! process's arguments or environment.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::contract::replica::REPLICATION_ROLE;
use crate::contract::HaNode;
use crate::postgres::base_settings;

/// The role the nodes of a created server replicate as (Patroni creates it at
/// bootstrap). A server made highly available after create replicates as the role
/// its read replicas use ([`REPLICATION_ROLE`]), set by the control plane with a
/// password it keeps sealed.
pub const REPLICATION_USER: &str = "replicator";
/// Seconds the leader's lock in etcd lives without renewal: a dead primary is
/// replaced within about this long. Patroni's default is 30.
const TTL: u32 = 9;
/// Seconds between two runs of Patroni's loop.
const LOOP_WAIT: u32 = 1;
/// Seconds Patroni retries etcd and PostgreSQL before it demotes itself.
const RETRY_TIMEOUT: u32 = 4;

/// Where one node's PostgreSQL lives and listens.
pub struct NodePlaces {
    /// PostgreSQL's data directory.
    pub data_dir: PathBuf,
    /// Its Unix socket's directory.
    pub socket_dir: PathBuf,
    /// The password file Patroni writes for its own connections.
    pub pgpass: PathBuf,
    /// Patroni's log directory.
    pub log_dir: PathBuf,
    /// PostgreSQL's programs.
    pub bin_dir: PathBuf,
    /// PostgreSQL's TCP port on the node's address.
    pub port: u16,
}

/// The passwords in the configuration (exposed only while it is written).
pub struct NodePasswords<'a> {
    /// The `postgres` superuser's; `None` on a server made highly available after
    /// create, whose superuser's password only its user knows: Patroni then
    /// connects as the superuser over the Unix socket only, and rewinds as the
    /// replication role (granted the functions `pg_rewind` calls).
    pub superuser: Option<&'a str>,
    /// The replication role's.
    pub replication: &'a str,
}

/// Patroni's configuration of one node (serialized as its YAML file).
#[derive(Serialize)]
pub struct PatroniConfig<'a> {
    scope: &'a str,
    name: &'a str,
    log: Log,
    restapi: RestApi<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ctl: Option<Ctl>,
    etcd3: Etcd<'a>,
    bootstrap: Bootstrap,
    postgresql: Postgresql<'a>,
}

#[derive(Serialize)]
struct Log {
    dir: PathBuf,
    level: &'static str,
}

/// Patroni's REST API: HTTPS with the node's certificate when the node speaks
/// TLS (`certfile`, `keyfile`; `cafile` is what Patroni verifies the other nodes'
/// APIs by), and, guarded ([`PatroniConfig::guarded`]), a client certificate of
/// the etcd CA required from every caller (`verify_client`, `cafile` then that CA)
/// and a password for the unsafe endpoints.
#[derive(Serialize)]
struct RestApi<'a> {
    listen: String,
    connect_address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    certfile: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keyfile: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cafile: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verify_client: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authentication: Option<RestApiCredential<'a>>,
}

/// How Patroni calls the other nodes' REST APIs when they require a client
/// certificate: it shows its etcd client certificate (`certfile`, `keyfile`) and
/// verifies theirs by the servers CA (`cacert`).
#[derive(Serialize)]
struct Ctl {
    certfile: PathBuf,
    keyfile: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    cacert: Option<PathBuf>,
}

#[derive(Serialize)]
struct RestApiCredential<'a> {
    username: &'static str,
    password: &'a str,
}

/// The consensus store: over HTTPS, the members verified by `cacert`, this node
/// let in by its client certificate (`cert`, `key`) and known by its server's
/// etcd user (`username`, `password`).
#[derive(Serialize)]
struct Etcd<'a> {
    hosts: Vec<String>,
    protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cacert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'a str>,
}

/// What guards a node's part of the cluster ([`super::access`]): the password of
/// its REST API's unsafe endpoints, its client certificate and key for etcd (and
/// for the other nodes' REST APIs), and its server's etcd user's password.
pub struct Guards<'a> {
    /// The REST API's password (user [`super::access::REST_API_USER`]).
    pub rest_api_password: &'a str,
    /// The etcd client certificate and key files, when etcd speaks TLS.
    pub etcd_client: Option<(PathBuf, PathBuf)>,
    /// The password of the server's etcd user ([`crate::contract::ha::etcd_user`]),
    /// in the control plane's own cluster.
    pub etcd_password: Option<&'a str>,
}

#[derive(Serialize)]
struct Bootstrap {
    dcs: Dcs,
    initdb: Vec<BTreeMap<&'static str, &'static str>>,
}

#[derive(Serialize)]
struct Dcs {
    ttl: u32,
    loop_wait: u32,
    retry_timeout: u32,
    /// Patroni promotes only the synchronous standby: an acknowledged commit is on
    /// both nodes, so a failover loses none.
    synchronous_mode: bool,
    postgresql: DcsPostgresql,
}

#[derive(Serialize)]
struct DcsPostgresql {
    use_pg_rewind: bool,
    parameters: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct Postgresql<'a> {
    listen: String,
    connect_address: String,
    data_dir: PathBuf,
    bin_dir: PathBuf,
    pgpass: PathBuf,
    use_unix_socket: bool,
    authentication: Authentication<'a>,
    parameters: BTreeMap<&'static str, String>,
    /// Without TLS only (the plain setup of the benchmark): with TLS the agent's
    /// `hba_file` (TCP only over TLS) is in `parameters` and Patroni leaves it be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pg_hba: Option<Vec<String>>,
    /// A rewind that fails, or a timeline that diverged, is healed by a new clone
    /// from the primary instead of leaving the node out.
    remove_data_directory_on_rewind_failure: bool,
    remove_data_directory_on_diverged_timelines: bool,
}

#[derive(Serialize)]
struct Authentication<'a> {
    superuser: Credential<'a>,
    replication: Credential<'a>,
    rewind: Credential<'a>,
}

#[derive(Clone, Serialize)]
struct Credential<'a> {
    username: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'a str>,
    /// `verify-full` against the servers' CA when the nodes speak TLS.
    sslmode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sslrootcert: Option<PathBuf>,
}

impl<'a> PatroniConfig<'a> {
    /// The configuration of `node`, whose files are at `places`, with PostgreSQL's
    /// `settings` beyond the base ones (the agent's TLS settings,
    /// [`crate::postgres::tls`]: then every connection between nodes is TLS,
    /// verified against the servers' CA).
    pub fn new(
        node: &'a HaNode,
        places: &NodePlaces,
        passwords: &NodePasswords<'a>,
        settings: &[(&'static str, String)],
    ) -> Self {
        let tls = settings
            .iter()
            .any(|(name, value)| *name == "ssl" && value == "on");
        let credential = |username, password| Credential {
            username,
            password,
            sslmode: if tls { "verify-full" } else { "disable" },
            sslrootcert: tls.then(|| node.ca_file.clone()),
        };
        let superuser = credential(crate::postgres::SUPERUSER, passwords.superuser);
        let setting = |wanted: &str| {
            settings
                .iter()
                .find(|(name, _)| *name == wanted)
                .map(|(_, value)| PathBuf::from(value))
        };
        let replication_user = if node.adopted {
            REPLICATION_ROLE
        } else {
            REPLICATION_USER
        };
        let replication = credential(replication_user, Some(passwords.replication));
        let rewind = match passwords.superuser {
            Some(_) => superuser.clone(),
            None => replication.clone(),
        };
        // Patroni sets the listen address from `listen`.
        let mut parameters: BTreeMap<&'static str, String> = base_settings(&node.address)
            .into_iter()
            .chain(settings.iter().cloned())
            .filter(|(name, _)| *name != "listen_addresses")
            .collect();
        parameters.insert(
            "unix_socket_directories",
            places.socket_dir.display().to_string(),
        );
        let (protocol, hosts) = etcd_hosts(&node.etcd_endpoints);
        let postgres_at = format!("{}:{}", node.address, places.port);
        let rest_at = format!("{}:{}", node.address, node.rest_port);
        Self {
            scope: &node.scope,
            name: &node.name,
            log: Log {
                dir: places.log_dir.clone(),
                level: "INFO",
            },
            restapi: RestApi {
                listen: rest_at.clone(),
                connect_address: rest_at,
                certfile: setting("ssl_cert_file").filter(|_| tls),
                keyfile: setting("ssl_key_file").filter(|_| tls),
                cafile: tls.then(|| node.ca_file.clone()),
                verify_client: None,
                authentication: None,
            },
            ctl: None,
            etcd3: Etcd {
                cacert: (protocol == "https")
                    .then(|| node.etcd_ca_file.clone())
                    .flatten(),
                hosts,
                protocol,
                cert: None,
                key: None,
                username: None,
                password: None,
            },
            bootstrap: Bootstrap {
                dcs: Dcs {
                    ttl: TTL,
                    loop_wait: LOOP_WAIT,
                    retry_timeout: RETRY_TIMEOUT,
                    synchronous_mode: true,
                    postgresql: DcsPostgresql {
                        use_pg_rewind: true,
                        // pg_rewind needs hint bits WAL-logged (or data checksums).
                        parameters: BTreeMap::from([("wal_log_hints", "on".to_string())]),
                    },
                },
                initdb: vec![
                    BTreeMap::from([("encoding", "UTF8")]),
                    BTreeMap::from([("locale", "C.UTF-8")]),
                    BTreeMap::from([("auth-local", "trust")]),
                    BTreeMap::from([("auth-host", "scram-sha-256")]),
                ],
            },
            postgresql: Postgresql {
                listen: postgres_at.clone(),
                connect_address: postgres_at,
                data_dir: places.data_dir.clone(),
                bin_dir: places.bin_dir.clone(),
                pgpass: places.pgpass.clone(),
                use_unix_socket: true,
                authentication: Authentication {
                    rewind,
                    superuser,
                    replication,
                },
                parameters,
                pg_hba: (!tls).then(pg_hba),
                remove_data_directory_on_rewind_failure: true,
                remove_data_directory_on_diverged_timelines: true,
            },
        }
    }
}

impl<'a> PatroniConfig<'a> {
    /// The configuration with `guards`: the REST API asks its password for the
    /// unsafe endpoints, Patroni shows etcd its client certificate and logs in as
    /// its server's etcd user. Over TLS with an etcd CA the REST API requires a
    /// client certificate of that CA from every caller (the control plane and the
    /// other nodes show theirs): no read without one either.
    pub fn guarded(mut self, guards: &'a Guards<'a>) -> Self {
        self.restapi.authentication = Some(RestApiCredential {
            username: super::access::REST_API_USER,
            password: guards.rest_api_password,
        });
        if let Some((cert, key)) = &guards.etcd_client {
            self.etcd3.cert = Some(cert.clone());
            self.etcd3.key = Some(key.clone());
            if let (Some(_), Some(etcd_ca)) = (&self.restapi.certfile, &self.etcd3.cacert) {
                self.ctl = Some(Ctl {
                    certfile: cert.clone(),
                    keyfile: key.clone(),
                    cacert: self.restapi.cafile.replace(etcd_ca.clone()),
                });
                self.restapi.verify_client = Some("required");
            }
        }
        if let Some(password) = guards.etcd_password {
            self.etcd3.username = Some(crate::contract::ha::etcd_user(self.scope));
            self.etcd3.password = Some(password);
        }
        self
    }
}

/// Without TLS (the benchmark's plain setup): local connections (the socket
/// directory only root and the PostgreSQL user can reach) are trusted; over TCP
/// every role needs its password (SCRAM).
fn pg_hba() -> Vec<String> {
    vec![
        "local all all trust".into(),
        format!("host replication {REPLICATION_USER} 0.0.0.0/0 scram-sha-256"),
        "host all all 0.0.0.0/0 scram-sha-256".into(),
    ]
}

/// Patroni's `protocol` and `hosts` (`HOST:PORT`) for etcd endpoint URLs.
fn etcd_hosts(endpoints: &[String]) -> (String, Vec<String>) {
    let protocol = if endpoints.iter().any(|e| e.starts_with("https://")) {
        "https"
    } else {
        "http"
    };
    let hosts = endpoints
        .iter()
        .map(|e| {
            e.trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string()
        })
        .collect();
    (protocol.to_string(), hosts)
}

#[cfg(test)]
mod tests;
