//! The geo-redundant copy of a server's backups (`docs/backups.md`), with real
//! parts: pgBackRest's `repo2` under its own repository key, wrapped by a key in a
//! vault of another location reached through its own identity. Each key governs
//! its own repository only: with the server's key revoked the copy restores; with
//! the geo key revoked the server stays Ready, says so, and its own backups and
//! restores work.

mod support;

use std::time::Duration;

use pgcmk_testkit::shared::{Held, Shared};
use pgcmk_testkit::wait::wait_for;
use serde_json::Value;
use support::backups::*;
use support::*;

/// Where the geo keys' vaults are: not the servers' location (westeurope).
const GEO_LOCATION: &str = "northeurope";

/// The servers of the tests, made side by side when the stack starts.
const SERVERS: [&str; 3] = ["geo-own-revoked", "geo-geo-revoked", "geo-repo2"];

/// One vault and control plane for the binary, and the servers (with their key and
/// geo key) no test has taken yet.
struct Fixture {
    stack: Stack,
    servers: MadeFor<(Created, CustomerKey, CustomerKey)>,
}

fn fixture() -> Held<Fixture> {
    static FIXTURE: Shared<Fixture> = Shared::new();
    FIXTURE.get(|| {
        let stack = Stack::start(60, 300, None);
        let servers = MadeFor::at_once(&SERVERS, |name| geo_server(&stack, name));
        Fixture { stack, servers }
    })
}

/// The security officer's steps for a geo key: identity `NAME-geo-mi`, vault
/// `NAME-geo-kv` in [`GEO_LOCATION`] granting it `get`, `wrapKey` and `unwrapKey`,
/// and RSA key `NAME-geo-key`.
fn geo_key(vault: &Vault, name: &str) -> CustomerKey {
    vault.customer_key_at(&format!("{name}-geo"), GEO_LOCATION, "RSA")
}

/// `pgcmk server create NAME` under `key`, with a geo-redundant copy under `geo`.
fn create_with_geo(
    stack: &Stack,
    name: &str,
    key: &CustomerKey,
    geo: &CustomerKey,
) -> Result<Value, String> {
    stack.cp.try_server(&[
        "create",
        "--name",
        name,
        "--location",
        "westeurope",
        "--identity",
        &key.identity.name,
        "--identity-credential-file",
        key.identity.credential_file.to_str().unwrap(),
        "--key",
        &versionless(&key.kid),
        "--geo-backup-key",
        &versionless(&geo.kid),
        "--geo-backup-identity",
        &geo.identity.name,
        "--geo-backup-identity-credential-file",
        geo.identity.credential_file.to_str().unwrap(),
    ])
}

/// A server with a geo copy, once the first full backup of both repositories is
/// done; its key and its geo key.
fn geo_server(stack: &Stack, name: &str) -> (Created, CustomerKey, CustomerKey) {
    let key = stack.vault.customer_key(name);
    let geo = geo_key(&stack.vault, name);
    let server = Created::from(&create_with_geo(stack, name, &key, &geo).unwrap());
    wait_for(
        "the first full backup of both repositories",
        Duration::from_secs(120),
        || {
            let events = stack.cp.events(name);
            let completed = |geo: bool| {
                events.iter().any(|e| {
                    e["what"] == "backup completed"
                        && e["why"].as_str().unwrap_or("").contains("geo-redundant") == geo
                })
            };
            completed(false) && completed(true)
        },
    );
    (server, key, geo)
}

/// `pgcmk server restore NAME --source SOURCE --point-in-time latest` and more options.
fn restore(stack: &Stack, source: &str, name: &str, more: &[&str]) -> Result<Created, String> {
    restore_with(stack, source, name, "latest", more)
}

#[test]
fn with_the_servers_key_revoked_the_geo_copy_restores() {
    let fixture = fixture();
    let stack = &fixture.stack;
    let (source, key, _geo) = fixture.servers.take("geo-own-revoked");
    source
        .sql("CREATE TABLE kept(t text); INSERT INTO kept VALUES ('geo-marker-7f3a')")
        .unwrap();
    archive_marker(&source, "geo-marker-7f3a");

    stack.vault.revoke(&key.vault, &key.identity);
    stack.cp.server(&["revalidate", "geo-own-revoked"]);
    wait_for("the source Inaccessible", Duration::from_secs(30), || {
        stack.cp.state("geo-own-revoked").0 == "Inaccessible"
    });

    // Chosen by itself: the source's own repository key is refused, the copy's is not.
    let restored = restore(stack, "geo-own-revoked", "geo-own-copy", &[]).unwrap();
    assert_eq!(
        restored.sql("SELECT t FROM kept").unwrap(),
        "geo-marker-7f3a"
    );
    assert!(
        stack
            .cp
            .events("geo-own-copy")
            .iter()
            .any(|e| e["what"] == "server created"
                && e["why"].as_str().unwrap().contains("(repository 2)")),
        "{:?}",
        stack.cp.events("geo-own-copy")
    );
    // The copy is encrypted like the server's own repository.
    let copy = stack.cp.state_dir.join("geo-backups").join(GEO_LOCATION);
    let files = files_under(&copy);
    assert!(files.len() > 3, "{files:?}");
    let plaintext: Vec<_> = files
        .iter()
        .filter(|f| contains(&std::fs::read(f).unwrap_or_default(), b"geo-marker-7f3a"))
        .collect();
    assert!(plaintext.is_empty(), "the marker in {plaintext:?}");
    // Asked for by name, the server's own repository names its refused key version.
    let err = restore(
        stack,
        "geo-own-revoked",
        "geo-own-repo1",
        &["--repository", "1"],
    )
    .err()
    .expect("a restore from the revoked repository");
    assert!(err.contains(version_of(&key.kid)), "{err}");
}

#[test]
fn a_revoked_geo_key_leaves_the_server_ready_and_its_own_backups_working() {
    let fixture = fixture();
    let stack = &fixture.stack;
    let (source, _key, geo) = fixture.servers.take("geo-geo-revoked");
    let name = "geo-geo-revoked";

    stack.vault.revoke(&geo.vault, &geo.identity);
    stack.cp.server(&["revalidate", name]);
    wait_for(
        "the geo key's refusal reported",
        Duration::from_secs(30),
        || stack.cp.has_event(name, "geo backup key refused"),
    );
    assert_eq!(stack.cp.state(name).0, "Ready");
    let catalog = list(stack, &source);
    let copy = catalog.geo.expect("the geo copy in backup list");
    assert_eq!(copy.location, GEO_LOCATION);
    let problem = copy.problem.expect("the refusal in backup list");
    assert!(problem.contains("geo key refuses"), "{problem}");

    // The server's own repository goes on: archiving, a backup, a restore.
    source
        .sql("CREATE TABLE kept(n int); INSERT INTO kept VALUES (42)")
        .unwrap();
    archive_marker(&source, "after-the-geo-revocation");
    let before = catalog.backups.len();
    stack
        .cp
        .try_backup(&["create", name, "--type", "incr"])
        .unwrap();
    assert_eq!(list(stack, &source).backups.len(), before + 1);
    let refused = stack
        .cp
        .backup_output(&["create", name, "--repository", "2"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("geo key refuses"),
        "{stderr}"
    );
    let restored = restore(stack, name, "geo-geo-copy", &[]).unwrap();
    assert_eq!(restored.sql("SELECT n FROM kept").unwrap(), "42");

    // The copy, asked for, names the geo key version refused.
    let err = restore(stack, name, "geo-geo-repo2", &["--repository", "2"])
        .err()
        .expect("a restore from the revoked geo copy");
    assert!(err.contains(version_of(&geo.kid)), "{err}");
}

#[test]
fn backup_create_and_verify_act_on_the_geo_copy_with_repository_2() {
    let fixture = fixture();
    let stack = &fixture.stack;
    let (source, _key, _geo) = fixture.servers.take("geo-repo2");
    let name = "geo-repo2";
    let before = list(stack, &source);
    let copy_before = before.geo.as_ref().unwrap().backups.len();

    let taken = stack
        .cp
        .try_backup(&["create", name, "--type", "incr", "--repository", "2"])
        .unwrap();
    let after = list(stack, &source);
    let copy = after.geo.expect("the geo copy in backup list");
    assert_eq!(copy.backups.len(), copy_before + 1, "{copy:?}");
    assert_eq!(taken["label"], copy.backups.last().unwrap().label.as_str());
    assert_eq!(after.backups.len(), before.backups.len(), "repo1 untouched");

    // A flipped byte in the copy is found by verifying repository 2, not 1.
    let id = source.dir.file_name().unwrap();
    let dir = stack
        .cp
        .state_dir
        .join("geo-backups")
        .join(GEO_LOCATION)
        .join(id);
    let file = files_under(&dir)
        .into_iter()
        .filter(|f| f.to_string_lossy().contains("/pg_data/base/"))
        .max_by_key(|f| std::fs::metadata(f).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let own: Value = stack.cp.try_backup(&["verify", name]).unwrap();
    assert_eq!(own["valid"], true, "{own}");
    let out = stack
        .cp
        .backup_output(&["verify", name, "--repository", "2"]);
    assert_eq!(out.status.code(), Some(8), "damage is exit code 8");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let damaged = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        report["problems"].to_string().contains(&damaged),
        "{damaged} not in {report}"
    );

    let wrong = stack
        .cp
        .backup_output(&["create", name, "--repository", "3"]);
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        !wrong.status.success() && stderr.contains("there is no backup repository 3"),
        "{stderr}"
    );
}

#[test]
fn a_geo_key_in_the_servers_location_is_refused_and_nothing_is_made() {
    let fixture = fixture();
    let stack = &fixture.stack;
    let key = stack.vault.customer_key("geo-same");
    let err = create_with_geo(stack, "geo-same", &key, &key)
        .expect_err("a geo copy in the server's own location");
    assert!(
        err.contains("'westeurope', the server's own") && err.contains("paired location"),
        "{err}"
    );
    assert!(stack.cp.try_server(&["show", "geo-same"]).is_err());
}
