//! Highly available servers with real parts: `pgcmk vault serve`, `pgcmk serve`
//! with its 3-member etcd cluster, two node agents per server on 127.0.0.2 and
//! 127.0.0.3, each with its own cryptfs mount over /dev/fuse and its own DEK, and
//! Patroni running PostgreSQL 15 on each (docs/high-availability.md).
//!
//! - Kill -9 of the primary node (agent, Patroni, PostgreSQL) three times in a
//!   row, the other node primary each time, while a client inserts: every
//!   acknowledged insert is there afterwards, and `pg_amcheck` finds every node
//!   clean, and the rejoined standby replicates over TLS. The node is frozen (SIGSTOP) until the standby took over, then killed:
//!   a host that went away, not one whose processes come back within Patroni's
//!   leader TTL (then its Patroni still holds the leader lock and resumes as the
//!   primary, which `a_killed_primary_that_comes_back_at_once_serves_again` shows).
//! - The key governs every node: revoking the identity's access takes both nodes
//!   Inaccessible (connections refused); granting it back brings both Ready with
//!   one primary, no operator; a rotation re-wraps each node's own DEK.
//! - Moving to a second key (`server update --key`), online: rows intact, every
//!   node's DEK wrapped by the new key, writes and an incremental backup work, and
//!   disabling the old key afterwards locks no node out.
//! - A marker inserted on the primary is in no byte of either node's disk, nor
//!   in etcd's data directory.
//! - Backups: the primary's agent takes the first full backup into the server's
//!   one stanza; a row committed, a planned switchover, a second row committed:
//!   a restore of `latest` into a new server has both (archiving went on from the
//!   new primary, on its new timeline, into the same stanza); the marker is in no
//!   byte of the repository; deleting the server deletes it.
//! - `server update --high-availability enabled` on a single server with rows:
//!   every row there, two nodes (a primary and a synchronous standby, each with its
//!   own DEK), writes through the connection string and the old one, a failover;
//!   `... disabled`: one server on the primary's data, the other node's directory
//!   and mount gone. Refused: enabling twice, disabling a single server.

mod support;

use std::time::{Duration, Instant};

use pgcmk_agent::contract::backup::{BackupCatalog, BackupKind, BackupSummary};
use pgcmk_testkit::shared::{Held, Shared};
use pgcmk_testkit::wait::wait_for;
use support::backups::{assert_encrypted_without, files_under, restore_with};
use support::ha::{
    crash, lose_primary, lost, node_processes, psql_at, AckedInserts, HaServer, Rejoins,
};
use support::*;

/// Key check interval for the tests (seconds).
const INTERVAL: u64 = 2;
/// How long a node may take to come back and catch up after a crash.
const REJOIN: Duration = Duration::from_secs(90);

fn shared_stack() -> Held<Stack> {
    static STACK: Shared<Stack> = Shared::new();
    STACK.get(|| Stack::start(INTERVAL, 30, None))
}

#[test]
fn three_primary_crashes_lose_no_acknowledged_commit() {
    let stack = shared_stack();
    let cp = &stack.cp;
    let server = HaServer::create(cp, "ha-crash", &[]);
    server
        .sql("CREATE TABLE acked (id int PRIMARY KEY)")
        .unwrap();
    let (mut primary, _) = server.wait_healthy(cp, REJOIN);
    let inserts = AckedInserts::start(&server, "acked");
    for round in 1..=3 {
        let (took, (new_primary, standby)) = lose_primary(cp, &server, &primary, &inserts, REJOIN);
        eprintln!(
            "round {round}: {} down; first insert acknowledged after {took:?}",
            primary.name
        );
        assert_ne!(new_primary.name, primary.name, "the other node took over");
        assert_eq!(standby.name, primary.name, "the node rejoined as standby");
        primary = new_primary;
    }
    let acked = inserts.finish();
    let lost = lost(&server, "acked", &acked);
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    eprintln!("{} acknowledged inserts, none lost", acked.len());

    server
        .sql("CREATE EXTENSION IF NOT EXISTS amcheck")
        .unwrap();
    let (primary, standby) = server.wait_healthy(cp, REJOIN);
    // The rejoined standby replicates over TLS.
    let tls = server
        .sql_on(
            &primary,
            "SELECT s.ssl, s.version FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)",
        )
        .unwrap();
    assert!(
        tls.starts_with("t|TLSv1."),
        "replication without TLS: {tls}"
    );
    // How the crashed primaries came back (pg_rewind on cryptfs, or a new clone).
    eprintln!("{:?}", Rejoins::of(&server.nodes(cp)));
    wait_for("the extension replicated", Duration::from_secs(30), || {
        server
            .sql_on(
                &standby,
                "SELECT 1 FROM pg_extension WHERE extname = 'amcheck'",
            )
            .is_ok_and(|r| r == "1")
    });
    for node in [&primary, &standby] {
        let out = std::process::Command::new("/usr/lib/postgresql/15/bin/pg_amcheck")
            .arg(format!("--maintenance-db={}", server.uri_of(node)))
            .args(["--all", "--heapallindexed"])
            .env("PGPASSWORD", &server.password)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_amcheck on {}: {}{}",
            node.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_killed_primary_that_comes_back_at_once_serves_again() {
    let stack = shared_stack();
    let cp = &stack.cp;
    let server = HaServer::create(cp, "ha-kill", &[]);
    server.sql("CREATE TABLE t (v int)").unwrap();
    let (primary, _) = server.wait_healthy(cp, REJOIN);
    let killed_at = Instant::now();
    crash(&node_processes(&primary.dir));
    let took = wait_for("a write acknowledged again", REJOIN, || {
        server.sql("INSERT INTO t VALUES (1)").is_ok()
    });
    eprintln!("kill -9 of {} -> writes again after {took:?}", primary.name);
    let _ = killed_at;
    server.wait_healthy(cp, REJOIN);
}

#[test]
fn the_key_governs_every_node() {
    let stack = shared_stack();
    let (vault, cp) = (&stack.vault, &stack.cp);
    let (key, server) = HaServer::customer_managed(cp, vault, "ha-revoke");
    let (primary, standby) = server.wait_healthy(cp, REJOIN);
    server.sql("CREATE TABLE t AS SELECT 7 AS v").unwrap();

    vault.revoke(&key.vault, &key.identity);
    let took = wait_for(
        "both nodes Inaccessible and refusing connections",
        Duration::from_secs(3 * INTERVAL + 20),
        || {
            let nodes = server.nodes(cp);
            nodes.iter().all(|n| n.state == "Inaccessible")
                && nodes.iter().all(|n| server.sql_on(n, "SELECT 1").is_err())
        },
    );
    eprintln!("revoke -> every node Inaccessible in {took:?}");
    assert_eq!(cp.state("ha-revoke").0, "Inaccessible");
    server.sql("SELECT 1").unwrap_err();

    vault.grant(&key.vault, &key.identity, &["get", "wrapKey", "unwrapKey"]);
    let took = wait_for("a primary again", REJOIN, || {
        server.sql("SELECT v FROM t").is_ok_and(|v| v == "7")
    });
    eprintln!("grant -> writable primary in {took:?}");
    let (again, standby_again) = server.wait_healthy(cp, REJOIN);
    let primaries = server
        .nodes(cp)
        .iter()
        .filter(|n| n.role.as_deref() == Some("leader"))
        .count();
    assert_eq!(primaries, 1);
    assert_eq!(cp.state("ha-revoke").0, "Ready");
    let _ = (primary, standby, again, standby_again);

    let rotated = vault.rotate(&key);
    let took = wait_for(
        "every node's DEK re-wrapped by the new version",
        Duration::from_secs(3 * INTERVAL + 20),
        || {
            let show = cp.server(&["show", "ha-revoke"]);
            show["nodes"]
                .as_array()
                .is_some_and(|nodes| nodes.iter().all(|n| n["wrapped_by"] == rotated.as_str()))
        },
    );
    eprintln!("rotate -> both nodes re-wrapped in {took:?}");
    let show = cp.server(&["show", "ha-revoke"]);
    assert_eq!(show["server"]["wrapped_dek"]["kek"], rotated.as_str());
}

#[test]
fn moving_to_another_key_rolls_through_every_node_online() {
    let stack = shared_stack();
    let (vault, cp) = (&stack.vault, &stack.cp);
    let (key, server) = HaServer::customer_managed(cp, vault, "ha-rekey");
    server
        .sql("CREATE TABLE t AS SELECT g AS v FROM generate_series(1, 100) g")
        .unwrap();
    let full = || {
        cp.try_backup(&["list", "ha-rekey"])
            .ok()
            .and_then(|v| serde_json::from_value::<BackupCatalog>(v).ok())
            .is_some_and(|c| c.backups.iter().any(|b| b.kind == BackupKind::Full))
    };
    wait_for("the first full backup", REJOIN, full);
    let (primary, _) = server.wait_healthy(cp, REJOIN);
    let backup_keys = || cp.try_backup(&["keys", "ha-rekey"]).unwrap()["key_versions"].clone();
    assert_eq!(backup_keys(), serde_json::json!([key.kid]));

    // A key the identity may not use is refused before anything moves.
    vault.keyvault("ha-rekey-kv2", "westeurope", true);
    let ungranted = vault.key("ha-rekey-kv2", "ha-rekey-key-0", 2048);
    let refused = cp
        .try_server(&["update", "ha-rekey", "--key", &versionless(&ungranted)])
        .unwrap_err();
    assert!(refused.contains("needs `get`"), "{refused}");
    let wrapped_by = || {
        cp.server(&["show", "ha-rekey"])["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["wrapped_by"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(wrapped_by(), [key.kid.clone(), key.kid.clone()]);
    assert_eq!(backup_keys(), serde_json::json!([key.kid]));

    let second = vault.key(&key.vault, "ha-rekey-key-2", 2048);
    let updated = cp.server(&["update", "ha-rekey", "--key", &versionless(&second)]);
    assert_eq!(updated["state"], "Ready", "{updated}");
    let (new_primary, _) = server.wait_healthy(cp, REJOIN);
    assert_ne!(
        new_primary.name, primary.name,
        "the old primary moved after a switchover"
    );
    assert_eq!(server.sql("SELECT sum(v) FROM t").unwrap(), "5050");
    assert_eq!(wrapped_by(), [second.clone(), second.clone()]);
    assert_eq!(backup_keys(), serde_json::json!([second]));
    for step in [
        "backup key re-wrapped",
        "node key changed",
        "switchover",
        "key changed",
    ] {
        assert!(cp.has_event("ha-rekey", step), "no '{step}' event");
    }
    server.sql("INSERT INTO t VALUES (101)").unwrap();
    let incr: BackupSummary = serde_json::from_value(
        cp.try_backup(&["create", "ha-rekey", "--type", "incr"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(incr.kind, BackupKind::Incr);

    // The old key is needed by nothing any more: disabling it locks no node out.
    vault.set_enabled(&key.vault_url, &key.key, None, false);
    let disabled = pgcmk_control::model::now_rfc3339();
    cp.server(&["revalidate", "ha-rekey"]);
    wait_for(
        "two key checks of each node after the old key was disabled",
        Duration::from_secs(3 * INTERVAL + 20),
        || vault.calls_since(&key.identity, "KeyUnwrap", &disabled) >= 4,
    );
    assert!(
        server.nodes(cp).iter().all(|n| n.state == "Ready"),
        "{:?}",
        server.nodes(cp)
    );
    server.sql("INSERT INTO t VALUES (102)").unwrap();
    assert_eq!(cp.state("ha-rekey").0, "Ready");
}

#[test]
fn a_marker_reaches_no_node_disk_nor_etcd() {
    let stack = shared_stack();
    let cp = &stack.cp;
    let server = HaServer::create(cp, "ha-marker", &[]);
    let marker = "pgcmk-ha-marker-5f1d9c";
    server
        .sql(&format!(
            "CREATE TABLE m (v text); INSERT INTO m SELECT '{marker}' FROM generate_series(1, 200); CHECKPOINT"
        ))
        .unwrap();
    let (primary, standby) = server.wait_healthy(cp, REJOIN);
    wait_for("the marker on the standby", Duration::from_secs(30), || {
        server
            .sql_on(&standby, "SELECT count(*) FROM m")
            .is_ok_and(|c| c == "200")
    });
    // The standby's restartpoint puts it in its data files, not only its WAL.
    server.sql_on(&standby, "CHECKPOINT").unwrap();
    for node in [&primary, &standby] {
        let leaks = files_containing(&node.dir, marker.as_bytes(), &node.dir.join("mnt"));
        assert!(
            leaks.is_empty(),
            "'{marker}' on {}'s disk: {leaks:?}",
            node.name
        );
    }
    let etcd = cp.state_dir.join("etcd");
    assert!(etcd.join("m1").is_dir(), "the local etcd cluster runs");
    let leaks = files_containing(&etcd, marker.as_bytes(), &etcd.join("none"));
    assert!(leaks.is_empty(), "'{marker}' in etcd's data: {leaks:?}");
}

#[test]
fn backups_go_on_across_a_switchover_in_one_encrypted_stanza() {
    let stack = shared_stack();
    let cp = &stack.cp;
    let server = HaServer::create(cp, "ha-backup", &[]);
    let dir = std::path::PathBuf::from(
        cp.server(&["show", "ha-backup"])["server"]["dir"]
            .as_str()
            .unwrap(),
    );
    let id = dir.file_name().unwrap().to_str().unwrap().to_string();
    let repository = cp.state_dir.join("backups").join(&id);
    let catalog = || -> Option<BackupCatalog> {
        serde_json::from_value(cp.try_backup(&["list", "ha-backup"]).ok()?).ok()
    };
    wait_for(
        "the first full backup, taken by the primary's agent",
        REJOIN,
        || catalog().is_some_and(|c| c.backups.iter().any(|b| b.kind == BackupKind::Full)),
    );
    let (old_primary, standby) = server.wait_healthy(cp, REJOIN);
    // The agent's event reaches the control plane after pgBackRest lists the backup.
    wait_for("the primary's agent reporting the backup", REJOIN, || {
        cp.has_event(&old_primary.name, "backup completed")
    });
    assert!(
        !cp.has_event(&standby.name, "backup started"),
        "a standby's agent starts no backup"
    );
    let keys = cp.try_backup(&["keys", "ha-backup"]).unwrap();
    assert_eq!(keys["key_versions"].as_array().map(Vec::len), Some(1));
    let marker = "pgcmk-ha-backup-marker-8e21";
    server
        .sql(&format!(
            "CREATE TABLE rows (v text); INSERT INTO rows VALUES ('{marker}-before')"
        ))
        .unwrap();

    cp.server(&["failover", "ha-backup", "--planned"]);
    let (new_primary, _) = server.wait_healthy(cp, REJOIN);
    assert_ne!(new_primary.name, old_primary.name, "the standby took over");
    server
        .sql(&format!("INSERT INTO rows VALUES ('{marker}-after')"))
        .unwrap();
    let segment = server
        .sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        .unwrap();
    assert!(
        !segment.starts_with("00000001"),
        "the new primary writes a new timeline: {segment}"
    );
    server.sql("SELECT pg_switch_wal()").unwrap();
    wait_for("the new timeline's segment archived", REJOIN, || {
        server
            .sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
            .is_ok_and(|last| last.as_str() >= segment.as_str())
    });

    // The backup commands reach the new primary's agent (pgBackRest refuses to back
    // up a standby alone), which backs up into the same stanza on the new timeline.
    let incr: BackupSummary = serde_json::from_value(
        cp.try_backup(&["create", "ha-backup", "--type", "incr"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(incr.kind, BackupKind::Incr);

    // Only the WAL archived from both primaries into the one stanza holds both rows.
    let restored = restore_with(&stack, "ha-backup", "ha-backup-restored", "latest", &[])
        .unwrap_or_else(|e| panic!("{e}\ncontrol log:\n{}", cp.log()));
    assert_eq!(
        restored
            .sql("SELECT string_agg(v, ',' ORDER BY v) FROM rows")
            .unwrap(),
        format!("{marker}-after,{marker}-before")
    );
    // A single server: none of the node's settings that Patroni wrote into the
    // data directory (its synchronous standby, its archiving into the source's stanza).
    assert_eq!(restored.sql("SHOW synchronous_standby_names").unwrap(), "");
    let archive_command = restored.sql("SHOW archive_command").unwrap();
    assert!(
        !archive_command.contains(&id),
        "the restored server archives into its source's stanza: {archive_command}"
    );

    let files = files_under(&repository);
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(repository.join("archive").join(&id))),
        "the server's one stanza, named after its id, in {}",
        repository.display()
    );
    assert_encrypted_without(&files, marker);

    cp.server(&["delete", "ha-backup", "--yes"]);
    assert!(!repository.exists(), "the backups went with the server");
}

#[test]
fn a_single_server_becomes_highly_available_and_single_again() {
    let stack = shared_stack();
    let cp = &stack.cp;
    let name = "ha-update";
    let created = cp.server(&["create", name, "-l", "westeurope"]);
    let password = created["password"].as_str().unwrap().to_string();
    let connection_string = |cp: &support::ControlPlane| {
        cp.server(&["connection-string", name])["connection_string"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let single = connection_string(cp);
    psql_at(
        &single,
        &password,
        "CREATE TABLE r AS SELECT generate_series(1, 1000) AS id",
    )
    .unwrap();
    let refused = cp
        .try_server(&["update", name, "--high-availability", "disabled"])
        .unwrap_err();
    assert!(refused.contains("is not highly available"), "{refused}");

    let enabled = Instant::now();
    cp.try_server(&["update", name, "--high-availability", "enabled"])
        .unwrap_or_else(|e| panic!("{e}\ncontrol log:\n{}", cp.log()));
    eprintln!("enabled in {:?}", enabled.elapsed());
    let server = HaServer {
        name: name.into(),
        password: password.clone(),
        connection_string: connection_string(cp),
    };
    assert!(
        server
            .connection_string
            .contains("target_session_attrs=read-write"),
        "{}",
        server.connection_string
    );
    let (primary, standby) = server.wait_healthy(cp, REJOIN);
    assert_eq!(
        primary.name, "ha-update-node-1",
        "the server's own data leads"
    );
    let wrapped =
        |node: &support::ha::Node| std::fs::read(node.dir.join("wrapped_dek.json")).unwrap();
    assert_ne!(
        wrapped(&primary),
        wrapped(&standby),
        "each node has its own DEK"
    );
    let show = cp.server(&["show", name]);
    for node in show["nodes"].as_array().unwrap() {
        assert_eq!(
            node["wrapped_by"], show["server"]["wrapped_dek"]["kek"],
            "{node}"
        );
    }
    assert_eq!(server.sql("SELECT count(*) FROM r").unwrap(), "1000");
    server.sql("INSERT INTO r VALUES (1001)").unwrap();
    // The old connection string reaches the first node, the primary now.
    assert_eq!(
        psql_at(&single, &password, "SELECT count(*) FROM r").unwrap(),
        "1001"
    );
    wait_for("the row on the standby", Duration::from_secs(30), || {
        server
            .sql_on(&standby, "SELECT count(*) FROM r")
            .is_ok_and(|c| c == "1001")
    });
    let refused = cp
        .try_server(&["update", name, "--high-availability", "enabled"])
        .unwrap_err();
    assert!(refused.contains("already highly available"), "{refused}");

    cp.server(&["failover", name]);
    let (primary, standby) = server.wait_healthy(cp, REJOIN);
    assert_eq!(primary.name, "ha-update-node-2");
    server.sql("INSERT INTO r VALUES (1002)").unwrap();

    let disabled = Instant::now();
    cp.try_server(&["update", name, "--high-availability", "disabled"])
        .unwrap_or_else(|e| panic!("{e}\ncontrol log:\n{}", cp.log()));
    eprintln!("disabled in {:?}", disabled.elapsed());
    let show = cp.server(&["show", name]);
    assert!(show["nodes"].as_array().is_none_or(Vec::is_empty), "{show}");
    assert_eq!(cp.state(name).0, "Ready");
    let single = connection_string(cp);
    assert_eq!(
        psql_at(&single, &password, "SELECT count(*) FROM r").unwrap(),
        "1002"
    );
    // No synchronous standby is waited for any more.
    psql_at(&single, &password, "INSERT INTO r VALUES (1003)").unwrap();
    // The kept node was the clone: the server's backups from before stay readable
    // under the server's repository key, and an incremental one goes on from them.
    let listed: BackupCatalog =
        serde_json::from_value(cp.try_backup(&["list", name]).unwrap()).unwrap();
    assert!(!listed.backups.is_empty(), "no earlier backup listed");
    cp.try_backup(&["create", name, "--type", "incr"])
        .unwrap_or_else(|e| panic!("{e}\ncontrol log:\n{}", cp.log()));
    assert!(!standby.dir.exists(), "{} is left", standby.dir.display());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains(&standby.dir.display().to_string()),
        "{}'s mount is left",
        standby.name
    );
    cp.server(&["delete", name, "--yes"]);
}
