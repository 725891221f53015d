//! Key rotation reaches every server, running or not, with real parts: `pgcmk vault
//! serve`, `pgcmk serve`, node agents, cryptfs over /dev/fuse and PostgreSQL 15.
//!
//! - A stopped server that follows its key (versionless reference) has its DEK
//!   re-wrapped to the new version without PostgreSQL starting, so the old version
//!   can be disabled and the server still starts.
//! - A start that the vault refuses because the DEK's version is disabled names
//!   that version, says it predates a rotation, gives the commands that fix it, and
//!   leaves the server Stopped with no agent.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use pgcmk_testkit::shared::{Held, Shared};
use pgcmk_testkit::wait::wait_for;
use support::*;

/// Key check interval for the tests (seconds).
const INTERVAL: u64 = 2;

/// One stack for the binary; each test has its own server, key and identity.
fn shared_stack() -> Held<Stack> {
    static STACK: Shared<Stack> = Shared::new();
    STACK.get(|| Stack::start(INTERVAL, 30, None))
}

#[test]
fn a_stopped_server_follows_a_rotation_and_starts_after_the_old_version_is_disabled() {
    let stack = shared_stack();
    let (vault, cp) = (&stack.vault, &stack.cp);
    let key = vault.customer_key("follows");
    let created = cp.create_with("follows", &key, &versionless(&key.kid));
    let port = created["server"]["port"].as_u64().unwrap();
    let password = created["password"].as_str().unwrap().to_string();
    psql(port, &password, "CREATE TABLE t AS SELECT 42 AS v").unwrap();
    cp.server(&["stop", "follows"]);

    let rotated = vault.rotate(&key);
    let took = wait_for(
        "the stopped server's DEK re-wrapped to the new version",
        Duration::from_secs(2 * INTERVAL + 5),
        || cp.wrapped_by("follows") == rotated,
    );
    eprintln!("rotate -> stopped server re-wrapped in {took:?}");
    assert!(cp.has_event("follows", "dek re-wrapped"));
    // Without starting PostgreSQL.
    assert_eq!(cp.state("follows").0, "Stopped");
    psql(port, &password, "SELECT 1").unwrap_err();
    let show = cp.server_text(&["show", "follows"]);
    assert!(
        show.contains(&format!("needs key version: {rotated}")),
        "{show}"
    );
    let list = cp.server_text(&["list"]);
    assert!(list.contains(version_of(&rotated)), "{list}");

    // The old version can go: the server starts with the new one.
    vault.set_version_enabled(&key, &key.kid, false);
    let started = cp.server(&["start", "follows"]);
    assert_eq!(started["state"], "Ready", "{started}");
    assert_eq!(psql(port, &password, "SELECT v FROM t").unwrap(), "42");
}

#[test]
fn a_start_refused_by_a_disabled_version_names_it_and_the_fix_and_leaves_the_server_stopped() {
    let stack = shared_stack();
    let (vault, cp) = (&stack.vault, &stack.cp);
    let key = vault.customer_key("pinned");
    // Pinned to the first version: the server does not follow rotation.
    let created = cp.create_with("pinned", &key, &key.kid);
    let port = created["server"]["port"].as_u64().unwrap();
    let password = created["password"].as_str().unwrap().to_string();
    let server_dir = PathBuf::from(created["server"]["dir"].as_str().unwrap());
    cp.server(&["stop", "pinned"]);
    let rotated = vault.rotate(&key);
    vault.set_version_enabled(&key, &key.kid, false);

    let err = cp.try_server(&["start", "pinned"]).unwrap_err();
    for expected in [
        key.kid.as_str(),
        "disabled",
        "predates a rotation",
        rotated.as_str(),
        &format!(
            "pgcmk key enable {} --vault {} --key-version {}",
            key.key,
            key.vault_url,
            version_of(&key.kid)
        ),
        &format!("pgcmk server update pinned --key {}", versionless(&key.kid)),
    ] {
        assert!(err.contains(expected), "'{expected}' not in: {err}");
    }
    assert_eq!(cp.state("pinned").0, "Stopped");
    assert_eq!(
        cp.agents_of(&server_dir),
        Vec::<u32>::new(),
        "an agent runs"
    );
    assert!(!server_dir.join("agent.pid").exists());
    psql(port, &password, "SELECT 1").unwrap_err();
    assert!(cp.has_event("pinned", "start refused"));

    // The fix it gave works.
    vault.set_version_enabled(&key, &key.kid, true);
    let started = cp.server(&["start", "pinned"]);
    assert_eq!(started["state"], "Ready", "{started}");
}
