//! Who may steer a highly available server, and its read replicas, with real
//! parts: the control plane's 3-member etcd cluster over TLS, Patroni on two
//! nodes with its REST API over HTTPS (docs/high-availability.md, "Who may steer
//! a server"; docs/replicas.md).
//!
//! - etcd refuses plaintext clients and TLS clients without a certificate of its
//!   CA (none, or a PostgreSQL node's of the servers CA); the node's Patroni
//!   certificate is let in (and the server works).
//! - `pgcmk serve` refuses an existing etcd cluster over `http://`, or without
//!   its CA and a client certificate and key.
//! - Patroni's REST API refuses a switchover without its password (401), and
//!   plaintext HTTP; the leader stays.
//! - A read replica of the highly available server streams from whichever node is
//!   primary: a row committed after `server failover --planned` reaches it.

mod support;

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use pgcmk_testkit::shared::{Held, Shared};
use pgcmk_testkit::wait::wait_for;
use serde_json::{json, Value};
use support::ha::{HaServer, Node};
use support::*;

/// Key check interval for the tests (seconds).
const INTERVAL: u64 = 2;
/// How long the nodes may take to settle after a switchover.
const SETTLE: Duration = Duration::from_secs(90);

struct Fixture {
    stack: Stack,
    server: HaServer,
}

fn fixture() -> Held<Fixture> {
    static FIXTURE: Shared<Fixture> = Shared::new();
    FIXTURE.get(|| {
        let stack = Stack::start(INTERVAL, 30, None);
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

/// The local etcd cluster's first member's client port.
fn etcd_client_port(state_dir: &Path) -> u64 {
    let layout: Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("etcd/cluster.json")).unwrap())
            .unwrap();
    layout["members"][0]["client_port"].as_u64().unwrap()
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

    // The node's Patroni certificate (on its encrypted mount) is let in.
    let access = primary.dir.join("mnt/patroni/access");
    let mut pem = std::fs::read(access.join("etcd-client.key")).unwrap();
    pem.extend(std::fs::read(access.join("etcd-client.crt")).unwrap());
    let answer = https_client(&ca, Some(pem))
        .post(&url)
        .json(&range)
        .send()
        .unwrap();
    assert!(answer.status().is_success(), "{answer:?}");
    // And the server works through it.
    assert_eq!(f.server.sql("SELECT count(*) FROM t").unwrap(), "1");
    // The members' keys are on tmpfs, not in etcd's directory on the disk.
    let etcd = cp.state_dir.join("etcd");
    let keys = files_containing(&etcd, b"PRIVATE KEY", &etcd.join("none"));
    assert!(keys.is_empty(), "private keys on the disk: {keys:?}");
}

#[test]
fn an_existing_etcd_cluster_is_refused_without_tls_and_a_client_certificate() {
    let not_pem = "/etc/hostname";
    for (etcd, says) in [
        (
            vec!["--etcd-endpoints", "http://10.0.0.5:2379"],
            "https:// only",
        ),
        (
            vec!["--etcd-endpoints", "https://10.0.0.5:2379"],
            "needs --etcd-ca-file, --etcd-cert-file and --etcd-key-file",
        ),
        (
            vec![
                "--etcd-endpoints",
                "https://10.0.0.5:2379",
                "--etcd-ca-file",
                not_pem,
                "--etcd-cert-file",
                not_pem,
                "--etcd-key-file",
                not_pem,
            ],
            "holds no PEM certificate",
        ),
    ] {
        let state = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(pgcmk_testkit::binary::pgcmk())
            .arg("serve")
            .arg("--state-dir")
            .arg(state.path())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--vault-service-dir",
                "/nonexistent",
            ])
            .args(["--platform-key", "https://127.0.0.1:1/keys/k"])
            .args(["--platform-identity", "platform"])
            .args(&etcd)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{etcd:?}: {stderr}");
        assert!(stderr.contains(says), "{etcd:?}: '{says}' not in {stderr}");
        assert!(
            std::fs::read_dir(state.path()).unwrap().next().is_none(),
            "{etcd:?}: the state directory was written"
        );
    }
}

#[test]
fn patroni_refuses_a_switchover_without_its_password() {
    let f = fixture();
    let cp = &f.stack.cp;
    let _turn = leadership();
    let (primary, standby) = f.server.wait_healthy(cp, SETTLE);
    let api = rest_api_of(&primary);
    let ca = cp.state_dir.join("servers-ca.pem");
    let client = https_client(&ca, None);
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
