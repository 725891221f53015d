//! Who may steer a highly available server, and its read replicas, with real
//! parts: the control plane's 3-member etcd cluster over TLS, Patroni on two
//! nodes with its REST API over HTTPS (docs/high-availability.md, "Who may steer
//! a server"; docs/replicas.md).
//!
//! - etcd refuses plaintext clients and TLS clients without a certificate of its
//!   CA (none, or a PostgreSQL node's of the servers CA), and the node's Patroni
//!   certificate without its server's etcd user; with the user it reads the
//!   server's keys (and the server works).
//! - One server's nodes can neither read nor write another's keys, nor any key
//!   outside their own server's; deleting a server removes its keys and its user.
//! - The etcd members are renewed (short-lived certificates here) one at a time,
//!   a majority always answering, the server serving throughout.
//! - `pgcmk serve` refuses an existing etcd cluster over `http://`, or without
//!   its CA and a client certificate and key, or with a root password file others
//!   may read.
//! - Given an existing cluster's root password, the control plane makes each
//!   server a user of its own there, confined to its keys, and removes it with
//!   the server; a wrong root password is refused with what to give.
//! - Patroni's REST API refuses a switchover without its password (401), and
//!   plaintext HTTP; the leader stays. It refuses every caller without a client
//!   certificate of the etcd CA, reads included; the control plane's reads, a
//!   planned failover (Patroni's member-to-member calls) still work.
//! - A node's REST API password is new at each start of its agent.
//! - `server reset-password` of a highly available server is refused with what
//!   to know, and the password keeps working.
//! - A read replica of the highly available server streams from whichever node is
//!   primary: a row committed after `server failover --planned` reaches it.

mod support;

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use pgcmk_control::etcd_auth::EtcdAdmin;
use pgcmk_control::standalone_etcd::StandaloneEtcd;
use pgcmk_crypto::SecretBytes;
use pgcmk_testkit::shared::{Held, Shared};
use pgcmk_testkit::wait::wait_for;
use serde_json::{json, Value};
use support::ha::{crash, node_processes, HaServer, Node};
use support::*;

/// Key check interval for the tests (seconds).
const INTERVAL: u64 = 2;
/// How long the nodes may take to settle after a switchover.
const SETTLE: Duration = Duration::from_secs(90);
/// The etcd members' certificate lifetime here (seconds): renewed after 30 s.
const MEMBER_LIFETIME: &str = "45";

struct Fixture {
    stack: Stack,
    server: HaServer,
}

fn fixture() -> Held<Fixture> {
    static FIXTURE: Shared<Fixture> = Shared::new();
    FIXTURE.get(|| {
        let stack = Stack::start_serving(
            INTERVAL,
            30,
            None,
            &["--etcd-member-certificate-lifetime-secs", MEMBER_LIFETIME],
        );
        let server = HaServer::create(&stack.cp, "ha-sec", &[]);
        server
            .sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
            .unwrap();
        Fixture { stack, server }
    })
}

/// The tests that read the leader and the one that moves it take turns.
static LEADERSHIP: Mutex<()> = Mutex::new(());

fn leadership() -> std::sync::MutexGuard<'static, ()> {
    LEADERSHIP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The local etcd cluster's members' client ports.
fn etcd_client_ports(state_dir: &Path) -> Vec<u64> {
    let layout: Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("etcd/cluster.json")).unwrap())
            .unwrap();
    layout["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["client_port"].as_u64().unwrap())
        .collect()
}

/// The local etcd cluster's first member's client port.
fn etcd_client_port(state_dir: &Path) -> u64 {
    etcd_client_ports(state_dir)[0]
}

/// The PEM key and certificate a node's Patroni shows etcd and the other node's
/// REST API (on its encrypted mount).
fn patroni_identity(node: &Node) -> Vec<u8> {
    let access = node.dir.join("mnt/patroni/access");
    let mut pem = std::fs::read(access.join("etcd-client.key")).unwrap();
    pem.extend(std::fs::read(access.join("etcd-client.crt")).unwrap());
    pem
}

/// The scope (the server's id) a node's Patroni keeps its cluster under.
fn scope_of(node: &Node) -> String {
    let config: Value =
        serde_json::from_slice(&std::fs::read(node.dir.join("agent.json")).unwrap()).unwrap();
    config["ha"]["scope"].as_str().unwrap().to_string()
}

/// etcd as one node's Patroni reaches it: its certificate, its server's etcd user
/// (the password on its mount) through the JSON gateway, each member in turn (one
/// may be restarting: its certificate renewed), logging in again when a member
/// that restarted forgot the token.
struct EtcdAs {
    client: reqwest::blocking::Client,
    ports: Vec<u64>,
    user: Option<(String, String)>,
}

impl EtcdAs {
    /// `node`'s Patroni in the control plane's cluster, logged in as its
    /// server's user when `login`.
    fn node(cp: &ControlPlane, node: &Node, login: bool) -> Self {
        let ca = cp.state_dir.join("etcd-ca.pem");
        Self::node_in(&ca, etcd_client_ports(&cp.state_dir), node, login)
    }

    /// `node`'s Patroni in the cluster of CA `ca` at `ports`.
    fn node_in(ca: &Path, ports: Vec<u64>, node: &Node, login: bool) -> Self {
        let user = login.then(|| {
            let password =
                std::fs::read_to_string(node.dir.join("mnt/patroni/access/etcd-password")).unwrap();
            (format!("pgcmk-server-{}", scope_of(node)), password)
        });
        Self {
            client: https_client(ca, Some(patroni_identity(node))),
            ports,
            user,
        }
    }

    /// A token for `user`, or etcd's error.
    fn login(&self, user: &str, password: &str) -> Result<String, String> {
        let body = json!({ "name": user, "password": password });
        let (ok, answer) = self.post_as(None, "auth/authenticate", &body);
        match ok {
            true => Ok(answer["token"].as_str().unwrap().to_string()),
            false => Err(answer.to_string()),
        }
    }

    /// POSTs `body` to `path` as the node's user: whether etcd did it, and its
    /// answer.
    fn post(&self, path: &str, body: &Value) -> (bool, Value) {
        let token = self
            .user
            .as_ref()
            .map(|(user, password)| self.login(user, password).unwrap());
        self.post_as(token.as_deref(), path, body)
    }

    /// POSTs `body` to `path` with `token`, to the first member that answers.
    fn post_as(&self, token: Option<&str>, path: &str, body: &Value) -> (bool, Value) {
        for port in &self.ports {
            let url = format!("https://127.0.0.1:{port}/v3/{path}");
            let mut request = self.client.post(url).json(body);
            if let Some(token) = token {
                request = request.header("Authorization", token);
            }
            if let Ok(answer) = request.send() {
                let ok = answer.status().is_success();
                return (ok, answer.json().unwrap_or(Value::Null));
            }
        }
        panic!("no etcd member answered {path}");
    }

    /// How many keys are under `prefix` (`Err`: etcd's refusal).
    fn count(&self, prefix: &str) -> Result<u64, Value> {
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut().unwrap() += 1;
        let (ok, answer) = self.post(
            "kv/range",
            &json!({ "key": b64(prefix.as_bytes()), "range_end": b64(&end), "count_only": true }),
        );
        match ok {
            true => Ok(answer["count"].as_str().map_or(0, |c| c.parse().unwrap())),
            false => Err(answer),
        }
    }

    /// Writes `key` (`Err`: etcd's refusal).
    fn put(&self, key: &str) -> Result<(), Value> {
        let (ok, answer) = self.post(
            "kv/put",
            &json!({ "key": b64(key.as_bytes()), "value": b64(b"x") }),
        );
        if ok {
            Ok(())
        } else {
            Err(answer)
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The number of keys etcd holds (its `etcd_debugging_mvcc_keys_total` metric),
/// as the first member that answers says.
fn etcd_keys_total(cp: &ControlPlane, node: &Node) -> u64 {
    let ca = cp.state_dir.join("etcd-ca.pem");
    let client = https_client(&ca, Some(patroni_identity(node)));
    let metrics = etcd_client_ports(&cp.state_dir)
        .iter()
        .find_map(|port| {
            client
                .get(format!("https://127.0.0.1:{port}/metrics"))
                .send()
                .ok()?
                .text()
                .ok()
        })
        .expect("an etcd member answering");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_keys_total "))
        .expect("the keys metric")
        .trim()
        .parse()
        .unwrap()
}

/// An HTTPS client trusting `ca` only, showing `identity` (PEM key and
/// certificate) when given.
fn https_client(ca: &Path, identity: Option<Vec<u8>>) -> reqwest::blocking::Client {
    let roots = reqwest::Certificate::from_pem_bundle(&std::fs::read(ca).unwrap()).unwrap();
    let mut builder = reqwest::blocking::Client::builder()
        .tls_certs_only(roots)
        .no_proxy()
        .timeout(Duration::from_secs(5));
    if let Some(pem) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

/// A plain HTTP client.
fn plain_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Patroni's REST API address of `node` (`address:port`, from its `agent.json`).
fn rest_api_of(node: &Node) -> String {
    let config: Value =
        serde_json::from_slice(&std::fs::read(node.dir.join("agent.json")).unwrap()).unwrap();
    format!("{}:{}", node.address, config["ha"]["rest_port"])
}

#[test]
fn etcd_refuses_clients_without_a_certificate_of_its_ca() {
    let f = fixture();
    let cp = &f.stack.cp;
    let (primary, _) = f.server.wait_healthy(cp, SETTLE);
    let port = etcd_client_port(&cp.state_dir);
    let range = json!({ "key": "Lw==" }); // "/"

    // Plaintext: the member speaks TLS only.
    let plain = plain_client()
        .post(format!("http://127.0.0.1:{port}/v3/kv/range"))
        .json(&range)
        .send();
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "etcd answered a plaintext client: {plain:?}"
    );

    // TLS, trusting the etcd CA, without a client certificate.
    let ca = cp.state_dir.join("etcd-ca.pem");
    let url = format!("https://127.0.0.1:{port}/v3/kv/range");
    let anonymous = https_client(&ca, None).post(&url).json(&range).send();
    assert!(
        anonymous.is_err(),
        "etcd answered a client without a certificate: {anonymous:?}"
    );

    // A certificate of the servers CA (the node's PostgreSQL's) is no way in either.
    let tls = primary.dir.join("mnt/tls");
    let mut pem = std::fs::read(tls.join("server.key")).unwrap();
    pem.extend(std::fs::read(tls.join("server.crt")).unwrap());
    let postgres = https_client(&ca, Some(pem)).post(&url).json(&range).send();
    assert!(
        postgres.is_err(),
        "etcd answered a PostgreSQL node's certificate: {postgres:?}"
    );

    // The node's Patroni certificate (on its encrypted mount) opens a connection,
    // but without its server's etcd user nothing is read.
    let anonymous = EtcdAs::node(cp, &primary, false);
    let (read, answer) = anonymous.post("kv/range", &range);
    assert!(
        !read,
        "etcd answered a certificate without a user: {answer}"
    );
    assert!(
        answer.to_string().contains("user name is empty"),
        "{answer}"
    );
    // Logged in as its server's user it reads its server's keys.
    let scope = scope_of(&primary);
    let keys = EtcdAs::node(cp, &primary, true).count(&format!("/service/{scope}/"));
    assert!(keys.as_ref().is_ok_and(|&n| n > 0), "{keys:?}");
    // And the server works through it.
    assert_eq!(
        f.server.sql("SELECT count(*) FROM t WHERE id = 1").unwrap(),
        "1"
    );
    // The members' keys are on tmpfs, not in etcd's directory on the disk.
    let etcd = cp.state_dir.join("etcd");
    let keys = files_containing(&etcd, b"PRIVATE KEY", &etcd.join("none"));
    assert!(keys.is_empty(), "private keys on the disk: {keys:?}");
}

#[test]
fn an_existing_etcd_cluster_is_refused_without_tls_and_a_client_certificate() {
    let not_pem = "/etc/hostname";
    let files_not_pem = [
        "--etcd-endpoints",
        "https://10.0.0.5:2379",
        "--etcd-ca-file",
        not_pem,
        "--etcd-cert-file",
        not_pem,
        "--etcd-key-file",
        not_pem,
    ];
    let password_file_readable = [&files_not_pem[..], &["--etcd-root-password-file", not_pem]];
    for (etcd, says) in [
        (
            vec!["--etcd-endpoints", "http://10.0.0.5:2379"],
            "https:// only",
        ),
        (
            vec!["--etcd-endpoints", "https://10.0.0.5:2379"],
            "needs --etcd-ca-file, --etcd-cert-file and --etcd-key-file",
        ),
        (files_not_pem.to_vec(), "holds no PEM certificate"),
        (password_file_readable.concat(), "chmod 600"),
    ] {
        assert_serve_refused(&[&["--listen", "127.0.0.1:0"], &etcd[..]].concat(), says);
    }
}

/// Writes `contents` to `dir/name` with `mode`; its path as an argument.
fn write_file(dir: &Path, name: &str, contents: &[u8], mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn an_existing_etcd_cluster_given_its_root_password_gets_a_user_per_server() {
    let root = scratch();
    let etcd =
        StandaloneEtcd::start(&root.path().join("operator-etcd"), Duration::from_secs(60)).unwrap();
    let endpoints = etcd.endpoints();
    // The operator turned authentication on (etcd then refuses gateway requests
    // of certificates with a common name: the client certificate has none).
    let root_password = SecretBytes::new(b"operators-root-password".to_vec());
    let admin = || EtcdAdmin::new(etcd.http("operator").unwrap(), &endpoints);
    admin().become_root(&root_password).unwrap();
    let wrong = admin()
        .log_in_as_root(&SecretBytes::new(b"not-it".to_vec()))
        .unwrap_err();
    assert!(
        wrong.to_string().contains("--etcd-root-password-file"),
        "{wrong}"
    );

    let client = etcd.client("control plane").unwrap();
    let dir = root.path();
    let cert = write_file(dir, "client.crt", client.certificate_pem.as_bytes(), 0o644);
    let key = write_file(dir, "client.key", client.key_pem.expose_secret(), 0o600);
    let password_file = write_file(dir, "root-password", b"operators-root-password\n", 0o600);
    let ca = etcd.ca_file().to_str().unwrap().to_string();
    let stack = Stack::start_serving(
        INTERVAL,
        30,
        None,
        &[
            "--etcd-endpoints",
            &endpoints.join(","),
            "--etcd-ca-file",
            &ca,
            "--etcd-cert-file",
            &cert,
            "--etcd-key-file",
            &key,
            "--etcd-root-password-file",
            &password_file,
        ],
    );
    let cp = &stack.cp;
    assert!(
        !cp.state_dir.join("etcd").exists(),
        "the control plane started an etcd cluster of its own"
    );
    let server = HaServer::create(cp, "ha-operator-etcd", &[]);
    server
        .sql("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .unwrap();
    let (primary, _) = server.wait_healthy(cp, SETTLE);
    let ports = endpoints
        .iter()
        .map(|e| e.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    let as_node = EtcdAs::node_in(etcd.ca_file(), ports, &primary, true);
    let scope = scope_of(&primary);
    let own = format!("/service/{scope}/");
    assert!(
        as_node.count(&own).is_ok_and(|n| n > 0),
        "it reads its keys"
    );
    let outside = as_node.count("/").map(|_| ()).expect_err("read every key");
    assert!(
        outside.to_string().contains("permission denied"),
        "{outside}"
    );
    let user = format!("pgcmk-server-{scope}");
    let password =
        std::fs::read_to_string(primary.dir.join("mnt/patroni/access/etcd-password")).unwrap();
    assert_ne!(password.as_bytes(), b"operators-root-password");

    cp.server(&["delete", "ha-operator-etcd", "--yes"]);
    let refused = as_node.login(&user, &password);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("authentication failed")),
        "the deleted server's etcd user: {refused:?}"
    );
}

#[test]
fn a_password_reset_of_a_highly_available_server_is_refused_and_changes_nothing() {
    let f = fixture();
    let cp = &f.stack.cp;
    let refused = cp
        .try_server(&["reset-password", "ha-sec"])
        .expect_err("a reset of a highly available server");
    assert!(
        refused.contains("highly available") && refused.contains("not available"),
        "{refused}"
    );
    assert_eq!(
        f.server.sql("SELECT count(*) FROM t WHERE id = 1").unwrap(),
        "1",
        "the superuser's password still opens the server"
    );
}

#[test]
fn patroni_refuses_a_switchover_without_its_password() {
    let f = fixture();
    let cp = &f.stack.cp;
    let _turn = leadership();
    let (primary, standby) = f.server.wait_healthy(cp, SETTLE);
    let api = rest_api_of(&primary);
    let ca = cp.state_dir.join("servers-ca.pem");
    // A caller with a client certificate (the standby's Patroni's), without the
    // password.
    let client = https_client(&ca, Some(patroni_identity(&standby)));
    let history = || -> Value {
        client
            .get(format!("https://{api}/history"))
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let before = history();
    let body = json!({ "leader": primary.name, "candidate": standby.name });

    let refused = client
        .post(format!("https://{api}/switchover"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401, "{refused:?}");
    let wrong = client
        .post(format!("https://{api}/switchover"))
        .basic_auth("pgcmk", Some("not-the-password"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401, "{wrong:?}");
    let plain = plain_client()
        .post(format!("http://{api}/switchover"))
        .json(&body)
        .send();
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "Patroni answered plaintext HTTP: {plain:?}"
    );

    let nodes = f.server.nodes(cp);
    let leader = nodes.iter().find(|n| n.role.as_deref() == Some("leader"));
    assert_eq!(leader.map(|n| n.name.as_str()), Some(primary.name.as_str()));
    assert_eq!(history(), before, "the timeline history changed");

    // The password is on the nodes' mounts only.
    let password = std::fs::read(primary.dir.join("mnt/patroni/access/restapi-password")).unwrap();
    for node in [&primary, &standby] {
        let leaks = files_containing(&node.dir, &password, &node.dir.join("mnt"));
        assert!(
            leaks.is_empty(),
            "the REST API password on the disk: {leaks:?}"
        );
    }
    let leaks = files_containing(&cp.state_dir.join("etcd"), &password, Path::new("/none"));
    assert!(leaks.is_empty(), "the REST API password in etcd: {leaks:?}");
}

#[test]
fn a_replica_of_a_highly_available_server_follows_a_planned_failover() {
    let f = fixture();
    let cp = &f.stack.cp;
    let _turn = leadership();
    let made = cp.server(&[
        "replica",
        "create",
        "--source",
        "ha-sec",
        "--name",
        "ha-sec-ro",
    ]);
    assert_eq!(made["state"], "Ready", "{made}");
    let port = made["port"].as_u64().unwrap();
    let on_replica = |sql: &str| psql(port, &f.server.password, sql);
    let (before, _) = f.server.wait_healthy(cp, SETTLE);
    f.server.sql("INSERT INTO t VALUES (2)").unwrap();
    wait_for("row 2 on the replica", Duration::from_secs(20), || {
        on_replica("SELECT count(*) FROM t WHERE id = 2") == Ok("1".into())
    });

    cp.server(&["failover", "ha-sec", "--planned"]);
    let (after, _) = f.server.wait_healthy(cp, SETTLE);
    assert_ne!(after.name, before.name, "the other node is primary");
    f.server.sql("INSERT INTO t VALUES (3)").unwrap();
    wait_for(
        "row 3, committed on the new primary, on the replica",
        Duration::from_secs(60),
        || on_replica("SELECT count(*) FROM t WHERE id = 3") == Ok("1".into()),
    );
    let sender = on_replica("SELECT sender_host FROM pg_stat_wal_receiver").unwrap();
    assert_eq!(sender, after.address, "streaming from the new primary");
    cp.server(&["delete", "ha-sec-ro", "--yes"]);
}

#[test]
fn one_servers_nodes_cannot_touch_anothers_keys_and_a_deleted_server_leaves_none() {
    let f = fixture();
    let cp = &f.stack.cp;
    let other = HaServer::create(cp, "ha-sec-other", &[]);
    let (b, _) = other.wait_healthy(cp, SETTLE);
    let (a, _) = f.server.wait_healthy(cp, SETTLE);
    let (scope_a, scope_b) = (scope_of(&a), scope_of(&b));
    let as_a = EtcdAs::node(cp, &a, true);
    let as_b = EtcdAs::node(cp, &b, true);

    let theirs = format!("/service/{scope_b}/");
    assert!(as_b.count(&theirs).is_ok_and(|n| n > 0), "B reads its keys");
    for (what, refused) in [
        ("read B's keys", as_a.count(&theirs).map(|_| ())),
        ("write B's leader", as_a.put(&format!("{theirs}leader"))),
        ("read every key", as_a.count("/").map(|_| ())),
        ("write outside its prefix", as_a.put("/service/x")),
    ] {
        let refusal = refused.expect_err(what);
        assert!(
            refusal.to_string().contains("permission denied"),
            "A's nodes {what}: {refusal}"
        );
    }
    assert!(as_a
        .count(&format!("/service/{scope_a}/"))
        .is_ok_and(|n| n > 0));
    let password_b =
        std::fs::read_to_string(b.dir.join("mnt/patroni/access/etcd-password")).unwrap();

    // No node of the fixture's server comes or goes meanwhile: its keys stay.
    let _turn = leadership();
    let keys_before = etcd_keys_total(cp, &a);
    let keys_of_b = as_b.count(&theirs).unwrap();
    cp.server(&["delete", "ha-sec-other", "--yes"]);
    assert_eq!(
        etcd_keys_total(cp, &a),
        keys_before - keys_of_b,
        "the deleted server's keys are gone, no other's"
    );
    let refused = as_a.login(&format!("pgcmk-server-{scope_b}"), &password_b);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("authentication failed")),
        "the deleted server's etcd user: {refused:?}"
    );
    assert_eq!(
        f.server.sql("SELECT count(*) FROM t WHERE id = 1").unwrap(),
        "1"
    );
}

#[test]
fn patroni_refuses_callers_without_a_client_certificate_of_the_etcd_ca() {
    let f = fixture();
    let cp = &f.stack.cp;
    let (primary, standby) = f.server.wait_healthy(cp, SETTLE);
    let api = rest_api_of(&primary);
    let ca = cp.state_dir.join("servers-ca.pem");
    let read = |identity| {
        https_client(&ca, identity)
            .get(format!("https://{api}/cluster"))
            .send()
    };
    let none = read(None);
    assert!(none.is_err(), "a read without a certificate: {none:?}");
    let tls = standby.dir.join("mnt/tls");
    let mut postgres = std::fs::read(tls.join("server.key")).unwrap();
    postgres.extend(std::fs::read(tls.join("server.crt")).unwrap());
    let postgres = read(Some(postgres));
    assert!(
        postgres.is_err(),
        "a PostgreSQL node's certificate: {postgres:?}"
    );
    // The other node's Patroni shows its own, as in its member-to-member calls.
    let peer = read(Some(patroni_identity(&standby))).unwrap();
    assert_eq!(peer.status().as_u16(), 200);
    // The control plane's reads (roles in `server show`) go on.
    let nodes = f.server.nodes(cp);
    assert!(
        nodes.iter().any(|n| n.role.as_deref() == Some("leader")),
        "{nodes:?}"
    );
}

#[test]
fn a_nodes_rest_api_password_is_new_at_each_start_of_its_agent() {
    let f = fixture();
    let cp = &f.stack.cp;
    let _turn = leadership();
    let (_, standby) = f.server.wait_healthy(cp, SETTLE);
    let file = standby.dir.join("mnt/patroni/access/restapi-password");
    let before = std::fs::read_to_string(&file).unwrap();
    crash(&node_processes(&standby.dir));
    let (_, back) = f.server.wait_healthy(cp, SETTLE);
    assert_eq!(
        back.name, standby.name,
        "the standby came back as the standby"
    );
    let after = std::fs::read_to_string(&file).unwrap();
    assert_ne!(after, before, "the same password after a restart");
    let ca = cp.state_dir.join("servers-ca.pem");
    let reload = |password: &str| {
        https_client(&ca, Some(patroni_identity(&back)))
            .post(format!("https://{}/reload", rest_api_of(&back)))
            .basic_auth("pgcmk", Some(password))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(reload(&before), 401, "the old password still opens the API");
    assert_eq!(reload(&after), 202);
}

/// The certificate an etcd member serves on `port` (PEM), as a TLS client sees it.
fn served_certificate(port: u64) -> String {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text.find("-----BEGIN CERTIFICATE-----");
    let end = text.find("-----END CERTIFICATE-----");
    match (start, end) {
        (Some(s), Some(e)) => text[s..e].to_string(),
        _ => String::new(),
    }
}

#[test]
fn etcd_members_are_renewed_one_at_a_time_before_their_certificates_expire() {
    let f = fixture();
    let cp = &f.stack.cp;
    // No node restarts meanwhile: every write below must succeed.
    let _turn = leadership();
    let (primary, _) = f.server.wait_healthy(cp, SETTLE);
    let ports = etcd_client_ports(&cp.state_dir);
    // What each member serves now (one may be restarting: asked again).
    let mut first = Vec::new();
    wait_for("every etcd member serving", Duration::from_secs(10), || {
        first = ports.iter().map(|&p| served_certificate(p)).collect();
        first.iter().all(|c| !c.is_empty())
    });
    let health = https_client(
        &cp.state_dir.join("etcd-ca.pem"),
        Some(patroni_identity(&primary)),
    );
    let mut fewest_answering = ports.len();
    let mut id = 1000;
    // Every member is renewed within 30 s of its start, one after the other, and
    // the server takes writes throughout.
    wait_for("every etcd member renewed", Duration::from_secs(60), || {
        id += 1;
        f.server
            .sql(&format!("INSERT INTO t VALUES ({id})"))
            .unwrap_or_else(|e| panic!("a write while etcd members renew: {e}"));
        let answering = ports
            .iter()
            .filter(|p| {
                health
                    .get(format!("https://127.0.0.1:{p}/health"))
                    .send()
                    .is_ok()
            })
            .count();
        fewest_answering = fewest_answering.min(answering);
        ports.iter().zip(&first).all(|(&p, was)| {
            let now = served_certificate(p);
            !now.is_empty() && now != *was
        })
    });
    assert!(
        fewest_answering >= 2,
        "a majority did not answer: {fewest_answering}"
    );
    let nodes = f.server.nodes(cp);
    let leader = nodes.iter().find(|n| n.role.as_deref() == Some("leader"));
    assert_eq!(leader.map(|n| n.name.as_str()), Some(primary.name.as_str()));
}
