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
mod tests {
    use super::*;

    /// Node `name` on `address`, over the etcd cluster at `etcd_endpoints`.
    fn node(name: &str, address: &str, etcd_endpoints: &[&str]) -> HaNode {
        HaNode {
            scope: "s1".into(),
            name: name.into(),
            address: address.into(),
            rest_port: 8008,
            etcd_endpoints: etcd_endpoints.iter().map(|e| e.to_string()).collect(),
            ca_file: "/state/servers-ca.pem".into(),
            etcd_ca_file: Some("/state/etcd-ca.pem".into()),
            adopted: false,
        }
    }

    fn places(port: u16) -> NodePlaces {
        NodePlaces {
            data_dir: "/m/pgdata".into(),
            socket_dir: "/d/run".into(),
            pgpass: "/m/patroni/pgpass".into(),
            log_dir: "/m/patroni/log".into(),
            bin_dir: "/usr/lib/postgresql/15/bin".into(),
            port,
        }
    }

    #[test]
    fn the_configuration_names_the_node_its_peers_and_synchronous_mode() {
        let node = node(
            "node-2",
            "127.0.0.3",
            &["http://127.0.0.1:2379", "http://127.0.0.1:2380/"],
        );
        let places = places(5433);
        let passwords = NodePasswords {
            superuser: Some("su-pw"),
            replication: "repl-pw",
        };
        let tls = [
            ("listen_addresses", "127.0.0.3".to_string()),
            ("ssl", "on".to_string()),
            ("ssl_cert_file", "/m/tls/server.crt".to_string()),
            ("ssl_key_file", "/m/tls/server.key".to_string()),
            ("hba_file", "/m/tls/pg_hba.conf".to_string()),
        ];
        let v = serde_json::to_value(PatroniConfig::new(&node, &places, &passwords, &tls)).unwrap();
        assert_eq!(v["name"], "node-2");
        assert_eq!(v["restapi"]["listen"], "127.0.0.3:8008");
        assert_eq!(v["postgresql"]["listen"], "127.0.0.3:5433");
        assert_eq!(v["etcd3"]["hosts"][1], "127.0.0.1:2380");
        assert_eq!(v["etcd3"]["protocol"], "http");
        assert_eq!(v["bootstrap"]["dcs"]["synchronous_mode"], true);
        assert_eq!(
            v["postgresql"]["authentication"]["replication"]["password"],
            "repl-pw"
        );
        assert_eq!(
            v["postgresql"]["parameters"]["wal_sync_method"],
            "open_datasync"
        );
        assert!(v["postgresql"]["parameters"]
            .get("listen_addresses")
            .is_none());
        assert_eq!(
            v["postgresql"]["parameters"]["hba_file"],
            "/m/tls/pg_hba.conf"
        );
        assert!(
            v["postgresql"].get("pg_hba").is_none(),
            "the agent's hba_file rules"
        );
        let replication = &v["postgresql"]["authentication"]["replication"];
        assert_eq!(replication["sslmode"], "verify-full");
        assert_eq!(replication["sslrootcert"], "/state/servers-ca.pem");
        assert_eq!(v["restapi"]["certfile"], "/m/tls/server.crt");
        assert_eq!(v["restapi"]["cafile"], "/state/servers-ca.pem");

        let plain =
            serde_json::to_value(PatroniConfig::new(&node, &places, &passwords, &[])).unwrap();
        assert_eq!(
            plain["postgresql"]["authentication"]["replication"]["sslmode"],
            "disable"
        );
        assert!(plain["postgresql"]["pg_hba"].is_array());
        assert_eq!(
            v["postgresql"]["authentication"]["rewind"]["username"],
            "postgres"
        );

        assert_eq!(replication["username"], REPLICATION_USER);

        // A server made highly available after create: no superuser password, the
        // replicas' role.
        let adopted_node = HaNode {
            adopted: true,
            ..node.clone()
        };
        let adopted = NodePasswords {
            superuser: None,
            replication: "repl-pw",
        };
        let v = serde_json::to_value(PatroniConfig::new(&adopted_node, &places, &adopted, &tls))
            .unwrap();
        let auth = &v["postgresql"]["authentication"];
        assert!(auth["superuser"].get("password").is_none(), "{auth}");
        assert_eq!(auth["replication"]["username"], REPLICATION_ROLE);
        assert_eq!(auth["rewind"]["username"], REPLICATION_ROLE);
        assert_eq!(auth["rewind"]["password"], "repl-pw");
    }

    #[test]
    fn a_guarded_configuration_asks_a_password_and_shows_etcd_a_certificate() {
        let node = node("node-1", "127.0.0.2", &["https://127.0.0.1:2379"]);
        let places = places(5432);
        let passwords = NodePasswords {
            superuser: Some("su"),
            replication: "repl",
        };
        let guards = Guards {
            rest_api_password: "api-pw",
            etcd_client: Some(("/m/a/etcd.crt".into(), "/m/a/etcd.key".into())),
            etcd_password: Some("etcd-pw"),
        };
        let open =
            serde_json::to_value(PatroniConfig::new(&node, &places, &passwords, &[])).unwrap();
        assert!(open["restapi"].get("authentication").is_none());
        assert_eq!(open["etcd3"]["protocol"], "https");
        assert_eq!(open["etcd3"]["cacert"], "/state/etcd-ca.pem");
        assert!(open["etcd3"].get("cert").is_none());
        let v = serde_json::to_value(
            PatroniConfig::new(&node, &places, &passwords, &[]).guarded(&guards),
        )
        .unwrap();
        assert_eq!(v["restapi"]["authentication"]["username"], "pgcmk");
        assert_eq!(v["restapi"]["authentication"]["password"], "api-pw");
        assert_eq!(v["etcd3"]["cert"], "/m/a/etcd.crt");
        assert_eq!(v["etcd3"]["key"], "/m/a/etcd.key");
        assert_eq!(v["etcd3"]["username"], "pgcmk-server-s1");
        assert_eq!(v["etcd3"]["password"], "etcd-pw");
        assert!(v["restapi"].get("verify_client").is_none(), "no TLS: {v}");

        // Over TLS every caller of the REST API shows a certificate of the etcd CA,
        // and Patroni shows its own to the other nodes, verifying theirs by the
        // servers CA.
        let tls = [
            ("ssl", "on".to_string()),
            ("ssl_cert_file", "/m/tls/server.crt".to_string()),
            ("ssl_key_file", "/m/tls/server.key".to_string()),
        ];
        let v = serde_json::to_value(
            PatroniConfig::new(&node, &places, &passwords, &tls).guarded(&guards),
        )
        .unwrap();
        assert_eq!(v["restapi"]["verify_client"], "required");
        assert_eq!(v["restapi"]["cafile"], "/state/etcd-ca.pem");
        assert_eq!(v["ctl"]["certfile"], "/m/a/etcd.crt");
        assert_eq!(v["ctl"]["keyfile"], "/m/a/etcd.key");
        assert_eq!(v["ctl"]["cacert"], "/state/servers-ca.pem");
    }
}
