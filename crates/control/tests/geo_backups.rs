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
use support::geo::*;
use support::*;

/// The servers of the tests, made side by side when the stack starts.
const SERVERS: [&str; 4] = ["geo-own-revoked", "geo-geo-revoked", "geo-repo2", LATER];
/// The server made without a geo copy, which gets one from `server update`.
const LATER: &str = "geo-later";

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

/// `pgcmk server create NAME` under `key`, with a geo-redundant copy under `geo`.
fn create_with_geo(
    stack: &Stack,
    name: &str,
    key: &CustomerKey,
    geo: &CustomerKey,
) -> Result<Value, String> {
    create_under(stack, name, key, &geo_options(geo))
}

/// A server with a geo copy, once the first full backup of both repositories is
/// done; its key and its geo key. [`LATER`] is made without a copy (its geo key is
/// for `server update`).
fn geo_server(stack: &Stack, name: &str) -> (Created, CustomerKey, CustomerKey) {
    let key = stack.vault.customer_key(name);
    let geo = geo_key(&stack.vault, name);
    if name == LATER {
        let server = Created::from(&create_under(stack, name, &key, &[]).unwrap());
        return (server, key, geo);
    }
    let server = Created::from(&create_with_geo(stack, name, &key, &geo).unwrap());
    wait_first_geo_backup(stack, name);
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
    let (source, key, geo) = fixture.servers.take("geo-own-revoked");
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
    // Asked for, the restored server keeps a geo copy of its own, as a new one would.
    let own_copy = geo_options(&geo);
    let own_copy: Vec<&str> = own_copy.iter().map(String::as_str).collect();
    let restored = restore(stack, "geo-own-revoked", "geo-own-copy", &own_copy).unwrap();
    let its_copy = list(stack, &restored)
        .geo
        .expect("the restored server's own geo copy");
    assert_eq!(its_copy.location, GEO_LOCATION);
    assert_eq!(its_copy.problem, None);
    assert_eq!(
        restored.sql("SELECT t FROM kept").unwrap(),
        "geo-marker-7f3a"
    );
    assert_restored_from_the_copy(stack, "geo-own-copy");
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

/// Makes a directory immutable (`chattr +i`: not even root adds an entry) until
/// dropped, also when the test fails.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn make(dir: std::path::PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let status = std::process::Command::new("chattr")
            .arg("+i")
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "chattr +i {}", dir.display());
        Self(dir)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_geo_copy_is_added_to_a_server_and_removed_again() {
    let fixture = fixture();
    let stack = &fixture.stack;
    let (source, _key, geo) = fixture.servers.take(LATER);
    let add = |geo: &CustomerKey| {
        let mut args = vec!["update".to_string(), LATER.into()];
        args.extend(geo_options(geo));
        stack
            .cp
            .try_server(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let key_file = source.dir.join("wrapped_geo_backup_key.json");

    // A copy whose repository cannot be made fails half-way (the agent restarted
    // with it cannot mount): the server comes back as it was, without a copy.
    let elsewhere = stack
        .vault
        .customer_key_at("geo-later-uk", "uksouth", "RSA");
    let _stuck = Immutable::make(stack.cp.state_dir.join("geo-backups").join("uksouth"));
    let err = add(&elsewhere).expect_err("a copy that cannot be made");
    assert!(
        err.contains("geo-redundant copy of server 'geo-later' was not added")
            && err.contains("Operation not permitted")
            && err.contains("back as it was"),
        "{err}"
    );
    assert_eq!(stack.cp.state(LATER).0, "Ready");
    assert!(list(stack, &source).geo.is_none());
    assert!(!key_file.exists());
    assert!(stack.cp.has_event(LATER, "geo backup not added"));

    // Added: the copy holds a full backup when the command returns.
    let updated = add(&geo).unwrap();
    assert_eq!(updated["state"], "Ready", "{updated}");
    let copy = list(stack, &source)
        .geo
        .expect("the geo copy in backup list");
    assert_eq!(copy.location, GEO_LOCATION);
    assert_eq!(copy.problem, None);
    assert_eq!(copy.backups.len(), 1, "{copy:?}");
    assert_eq!(copy.backups[0].kind.as_str(), "full");
    let keys = stack.cp.try_backup(&["keys", LATER]).unwrap();
    assert_eq!(keys["geo_key_version"], geo.kid.as_str(), "{keys}");
    let again = add(&geo).expect_err("a second copy");
    assert!(again.contains("already (in northeurope)"), "{again}");

    // Removed: without a terminal to confirm on, --yes is required; then the
    // copy's wrapped key and its files are gone, and the server serves.
    let id = source.dir.file_name().unwrap();
    let files = stack
        .cp
        .state_dir
        .join("geo-backups")
        .join(GEO_LOCATION)
        .join(id);
    assert!(files.exists() && key_file.exists());
    let unconfirmed = stack
        .cp
        .server_output(&["update", LATER, "--no-geo-backup"]);
    assert_eq!(unconfirmed.status.code(), Some(2));
    assert!(key_file.exists());
    let updated = stack
        .cp
        .try_server(&["update", LATER, "--no-geo-backup", "--yes"])
        .unwrap();
    assert_eq!(updated["state"], "Ready", "{updated}");
    assert!(!key_file.exists(), "the copy's wrapped key is gone");
    assert!(!files.exists(), "the copy's files are gone");
    assert!(list(stack, &source).geo.is_none());
    let keys = stack.cp.try_backup(&["keys", LATER]).unwrap();
    assert!(keys.get("geo_key_version").is_none(), "{keys}");
    assert!(stack.cp.has_event(LATER, "geo backup removed"));
    let err = restore(stack, LATER, "geo-later-copy", &["--repository", "2"])
        .err()
        .expect("a restore from the removed copy");
    assert!(err.contains("has no geo-redundant copy"), "{err}");
    let again = stack
        .cp
        .try_server(&["update", LATER, "--no-geo-backup", "--yes"])
        .expect_err("a second removal");
    assert!(again.contains("nothing to remove"), "{again}");
}
