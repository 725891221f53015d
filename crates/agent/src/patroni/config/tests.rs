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

    let plain = serde_json::to_value(PatroniConfig::new(&node, &places, &passwords, &[])).unwrap();
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
    let v =
        serde_json::to_value(PatroniConfig::new(&adopted_node, &places, &adopted, &tls)).unwrap();
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
    let open = serde_json::to_value(PatroniConfig::new(&node, &places, &passwords, &[])).unwrap();
    assert!(open["restapi"].get("authentication").is_none());
    assert_eq!(open["etcd3"]["protocol"], "https");
    assert_eq!(open["etcd3"]["cacert"], "/state/etcd-ca.pem");
    assert!(open["etcd3"].get("cert").is_none());
    let v =
        serde_json::to_value(PatroniConfig::new(&node, &places, &passwords, &[]).guarded(&guards))
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
    let v =
        serde_json::to_value(PatroniConfig::new(&node, &places, &passwords, &tls).guarded(&guards))
            .unwrap();
    assert_eq!(v["restapi"]["verify_client"], "required");
    assert_eq!(v["restapi"]["cafile"], "/state/etcd-ca.pem");
    assert_eq!(v["ctl"]["certfile"], "/m/a/etcd.crt");
    assert_eq!(v["ctl"]["keyfile"], "/m/a/etcd.key");
    assert_eq!(v["ctl"]["cacert"], "/state/servers-ca.pem");
}
