//! Read replicas with real parts (docs/replicas.md): a replica in another location
//! under its own key clones its source over TLS and streams from it as a hot
//! standby; each key governs only its own server; a promoted replica accepts
//! writes; a source with replicas is not deleted.

mod support;

use std::time::Duration;

use pgcmk_testkit::shared::{Held, Shared};
use pgcmk_testkit::wait::wait_for;
use serde_json::Value;
use support::*;

/// Key check interval (seconds): revocations show within it.
const INTERVAL: u64 = 2;

/// The replicas of the tests: (name, source, its key in northeurope).
const REPLICAS: [(&str, &str, bool); 4] = [
    ("rep-read", "rep-src", true),
    ("rep-revoked", "rep-src", true),
    ("rep-promoted", "rep-src", false),
    ("rep-follow", "rep-src2", true),
];

/// A read replica: its name, port and key (none: service-managed).
struct Replica {
    name: String,
    port: u64,
    key: Option<CustomerKey>,
}

struct Fixture {
    stack: Stack,
    /// `rep-src`, shared: no test changes its key.
    source: Created,
    /// `rep-src2`, for the test that revokes its key.
    sources: MadeFor<(Created, CustomerKey)>,
    replicas: MadeFor<Replica>,
}

fn fixture() -> Held<Fixture> {
    static FIXTURE: Shared<Fixture> = Shared::new();
    FIXTURE.get(|| {
        let stack = Stack::start(INTERVAL, 300, None);
        let sources = MadeFor::at_once(&["rep-src", "rep-src2"], |name| {
            let key = stack.vault.customer_key(name);
            let server = Created::from(&stack.cp.create_with(name, &key, &versionless(&key.kid)));
            server
                .sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
                .unwrap();
            (server, key)
        });
        let names: Vec<&'static str> = REPLICAS.iter().map(|r| r.0).collect();
        let replicas = MadeFor::at_once(&names, |name| {
            let (_, source, own_key) = REPLICAS.iter().find(|r| r.0 == name).unwrap();
            make_replica(&stack, source, name, *own_key)
        });
        let (source, _) = sources.take("rep-src");
        Fixture {
            stack,
            source,
            sources,
            replicas,
        }
    })
}

/// `server replica create` of `name` from `source`: in northeurope under a key of
/// its own there (`own_key`), or service-managed in the source's location.
fn make_replica(stack: &Stack, source: &str, name: &str, own_key: bool) -> Replica {
    let key = own_key.then(|| stack.vault.customer_key_at(name, "northeurope", "RSA"));
    let mut args = vec!["replica", "create", "--source", source, "--name", name];
    let key_url = key.as_ref().map(|k| versionless(&k.kid));
    let credential = key
        .as_ref()
        .map(|k| k.identity.credential_file.display().to_string());
    if let (Some(key), Some(url), Some(credential)) = (&key, &key_url, &credential) {
        args.extend(["-l", "northeurope", "--identity", &key.identity.name]);
        args.extend(["--identity-credential-file", credential, "-k", url]);
    }
    let made = stack.cp.server(&args);
    assert_eq!(made["state"], "Ready", "{made}");
    Replica {
        name: name.into(),
        port: made["port"].as_u64().unwrap(),
        key,
    }
}

impl Replica {
    /// Runs SQL on the replica as `postgres` (the source's password: a clone has
    /// its roles).
    fn sql(&self, source: &Created, sql: &str) -> Result<String, String> {
        psql(self.port, &source.password, sql)
    }

    /// Waits until the replica shows the row `id` of `t`.
    fn wait_row(&self, source: &Created, id: u32, limit: Duration) {
        wait_for(&format!("row {id} on replica {}", self.name), limit, || {
            self.sql(source, &format!("SELECT id FROM t WHERE id = {id}")) == Ok(id.to_string())
        });
    }
}

#[test]
fn a_replica_streams_what_its_source_commits_over_tls_and_refuses_writes() {
    let f = fixture();
    let cp = &f.stack.cp;
    let source = &f.source;
    let replica = f.replicas.take("rep-read");
    source.sql("INSERT INTO t VALUES (2)").unwrap();
    replica.wait_row(source, 2, Duration::from_secs(10));
    assert_eq!(
        replica.sql(source, "SELECT pg_is_in_recovery()").unwrap(),
        "t"
    );
    let err = replica.sql(source, "INSERT INTO t VALUES (3)").unwrap_err();
    assert!(err.contains("read-only transaction"), "{err}");
    // Its own DEK, wrapped by its own key in its own location.
    let shown = cp.server(&["show", &replica.name]);
    let kid = &replica.key.as_ref().unwrap().kid;
    assert_eq!(shown["server"]["wrapped_dek"]["kek"], kid.as_str());
    assert_eq!(shown["server"]["location"], "northeurope");
    // The source streams to it over TLS, as the replication role.
    let id = shown["server"]["id"].as_str().unwrap();
    let streaming = source
        .sql(&format!(
            "SELECT r.usename, s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) \
             WHERE r.application_name = '{id}'"
        ))
        .unwrap();
    assert_eq!(streaming, "pgcmk_replication|t");
    let listed = cp.server(&["replica", "list", "--source", "rep-src"]);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(names.contains(&"rep-read"), "{listed}");
    assert!(!names.contains(&"rep-follow"), "{listed}");
    // A source with replicas stays, and so does the address they connect to.
    let err = cp.try_server(&["delete", "rep-src", "--yes"]).unwrap_err();
    assert!(err.contains("has read replicas"), "{err}");
    let err = cp
        .try_server(&["update", "rep-src", "--listen-addresses", "127.0.0.2"])
        .unwrap_err();
    assert!(err.contains("keep 127.0.0.1 first"), "{err}");
}

#[test]
fn revoking_the_replicas_key_takes_only_the_replica() {
    let f = fixture();
    let (cp, vault) = (&f.stack.cp, &f.stack.vault);
    let source = &f.source;
    let replica = f.replicas.take("rep-revoked");
    let key = replica.key.as_ref().unwrap();
    vault.revoke(&key.vault, &key.identity);
    wait_for(
        "the replica Inaccessible",
        Duration::from_secs(INTERVAL + 10),
        || cp.state(&replica.name).0 == "Inaccessible",
    );
    assert!(replica.sql(source, "SELECT 1").is_err());
    assert_eq!(cp.state("rep-src").0, "Ready");
    assert_eq!(source.sql("SELECT count(*) > 0 FROM t").unwrap(), "t");
}

#[test]
fn revoking_the_sources_key_leaves_the_replica_serving_until_the_source_returns() {
    let f = fixture();
    let (cp, vault) = (&f.stack.cp, &f.stack.vault);
    let (source, source_key) = f.sources.take("rep-src2");
    let replica = f.replicas.take("rep-follow");
    source.sql("INSERT INTO t VALUES (10)").unwrap();
    replica.wait_row(&source, 10, Duration::from_secs(10));
    vault.revoke(&source_key.vault, &source_key.identity);
    wait_for(
        "the source Inaccessible",
        Duration::from_secs(INTERVAL + 10),
        || cp.state(&source.name).0 == "Inaccessible",
    );
    // The replica serves reads under its own key, and receives nothing.
    assert_eq!(replica.sql(&source, "SELECT max(id) FROM t").unwrap(), "10");
    wait_for(
        "the replica's WAL receiver to stop streaming",
        Duration::from_secs(10),
        || {
            replica.sql(
                &source,
                "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'",
            ) == Ok("0".into())
        },
    );
    assert_eq!(cp.state(&replica.name).0, "Ready");
    vault.grant(
        &source_key.vault,
        &source_key.identity,
        &["get", "wrapKey", "unwrapKey"],
    );
    wait_for(
        "the source Ready again",
        Duration::from_secs(INTERVAL + 30),
        || cp.state(&source.name).0 == "Ready",
    );
    source.sql("INSERT INTO t VALUES (11)").unwrap();
    // The WAL receiver retries every 5 s (wal_retrieve_retry_interval).
    replica.wait_row(&source, 11, Duration::from_secs(30));
}

#[test]
fn a_promoted_replica_accepts_writes_and_follows_its_source_no_more() {
    let f = fixture();
    let cp = &f.stack.cp;
    let source = &f.source;
    let replica = f.replicas.take("rep-promoted");
    let promoted: Value = cp.server(&["replica", "promote", &replica.name]);
    assert_eq!(promoted["state"], "Ready", "{promoted}");
    assert!(promoted.get("replica_of").is_none(), "{promoted}");
    assert_eq!(
        replica.sql(source, "SELECT pg_is_in_recovery()").unwrap(),
        "f"
    );
    replica.sql(source, "INSERT INTO t VALUES (100)").unwrap();
    let listed = cp.server(&["replica", "list", "--source", "rep-src"]);
    assert!(
        !listed.to_string().contains("rep-promoted"),
        "still listed: {listed}"
    );
    let err = cp
        .try_server(&["replica", "promote", &replica.name])
        .unwrap_err();
    assert!(err.contains("no read replica"), "{err}");
    cp.server(&["delete", &replica.name, "--yes"]);
}
