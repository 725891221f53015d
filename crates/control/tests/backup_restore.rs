//! `pgcmk server restore` (`docs/backups.md`), with real parts: a new, ordinary
//! server made from another server's pgBackRest backups and archived WAL, at a
//! point in time or at the latest archived one; refused, naming the key version,
//! when the vault refuses the source's repository key — and then nothing is left.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use pgcmk_testkit::shared::{Held, Shared};
use pgcmk_testkit::wait::wait_for;
use support::backups::*;
use support::*;

fn shared_stack() -> Held<Stack> {
    static STACK: Shared<Stack> = Shared::new();
    STACK.get(|| Stack::start(60, 300, None))
}

/// `pgcmk server restore --source SOURCE --name NAME --point-in-time AT`, service-managed.
fn restore(stack: &Stack, source: &str, name: &str, at: &str) -> Result<Created, String> {
    restore_with(stack, source, name, at, &[])
}

fn rows(s: &Created, table: &str) -> String {
    s.sql(&format!(
        "SELECT string_agg(n::text, ',' ORDER BY n) FROM {table}"
    ))
    .unwrap()
}

#[test]
fn point_in_time_restore_returns_exactly_the_first_insert_and_latest_both() {
    let stack = shared_stack();
    let source = create_backed_up(&stack, "rs-source");
    // A restore reaches points after the end of a backup; pgBackRest records it to
    // the second.
    let backup_end = list(&stack, &source).backups[0].finished_at.clone();
    wait_for(
        "a second past the first backup's end",
        Duration::from_secs(5),
        || {
            source.sql(&format!(
                "SELECT clock_timestamp() > '{backup_end}'::timestamptz + interval '1 second'"
            )) == Ok("t".into())
        },
    );
    source
        .sql("CREATE TABLE pitr(n int); INSERT INTO pitr VALUES (1)")
        .unwrap();
    // Committed after the first insert's commit and before the second's.
    let between = source
        .sql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
        .unwrap();
    source.sql("INSERT INTO pitr VALUES (2)").unwrap();
    archive_marker(&source, "after-the-second-insert");

    let at = restore(&stack, "rs-source", "rs-at", &between).unwrap();
    assert_eq!(rows(&at, "pitr"), "1", "restored to {between}");
    let latest = restore(&stack, "rs-source", "rs-latest", "latest").unwrap();
    assert_eq!(rows(&latest, "pitr"), "1,2");

    // An ordinary server: its own DEK, its own repository with a first backup, and
    // writable (promoted).
    let wrapped_dek = |name: &str| {
        stack.cp.server(&["show", name])["server"]["wrapped_dek"]["ciphertext"].clone()
    };
    assert_ne!(wrapped_dek("rs-at"), wrapped_dek("rs-source"));
    latest.sql("INSERT INTO pitr VALUES (3)").unwrap();
    wait_for(
        "the restored server's first backup",
        Duration::from_secs(60),
        || stack.cp.has_event("rs-latest", "backup completed"),
    );
    assert_eq!(list(&stack, &latest).backups.len(), 1);
    assert_ne!(repository(&latest), repository(&source));
}

/// The ids of every server directory and backup repository of the stack.
fn made_things(stack: &Stack) -> BTreeSet<String> {
    let names = |dir: &Path| -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let state = &stack.cp.state_dir;
    let mut all: BTreeSet<String> = names(&state.join("servers")).into_iter().collect();
    all.extend(names(&state.join("backups")));
    all
}

/// A restore from `source` that the vault's refusal stops: its message has every
/// one of `expected`, and it leaves no server, directory or repository behind.
fn refused_restore(stack: &Stack, source: &str, name: &str, expected: &[&str]) {
    let before = made_things(stack);
    let Err(err) = restore(stack, source, name, "latest") else {
        panic!("the restore of '{source}' into '{name}' went through");
    };
    for e in expected {
        assert!(err.contains(e), "'{e}' not in: {err}");
    }
    assert!(
        stack.cp.try_server(&["show", name]).is_err(),
        "a server '{name}' is left"
    );
    let ids: BTreeSet<String> = stack
        .cp
        .server(&["list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let left: Vec<_> = made_things(stack)
        .difference(&before)
        .filter(|id| !ids.contains(*id))
        .cloned()
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn restores_refused_by_the_vault_name_the_key_version_and_leave_nothing() {
    let stack = shared_stack();
    let key = stack.vault.customer_key("rs-cmk");
    let created = stack.cp.create_with("rs-cmk", &key, &versionless(&key.kid));
    let source = Created::from(&created);
    wait_for("the first full backup", Duration::from_secs(60), || {
        stack.cp.has_event("rs-cmk", "backup completed")
    });
    let version = version_of(&key.kid);

    stack.vault.revoke(&key.vault, &key.identity);
    refused_restore(
        &stack,
        "rs-cmk",
        "rs-no-access",
        &[
            version,
            "refuses to server 'rs-cmk''s identity",
            "unwrapKey",
        ],
    );
    stack
        .vault
        .grant(&key.vault, &key.identity, &["get", "wrapKey", "unwrapKey"]);

    stack.vault.set_version_enabled(&key, &key.kid, false);
    refused_restore(
        &stack,
        "rs-cmk",
        "rs-disabled",
        &[version, "is disabled", "pgcmk key enable"],
    );
    stack.vault.set_version_enabled(&key, &key.kid, true);

    stack
        .vault
        .cli(&["key", "delete", "--vault", &key.vault, "--name", &key.key]);
    refused_restore(
        &stack,
        "rs-cmk",
        "rs-deleted",
        &[
            version,
            "no longer has",
            "crypto-shredded",
            "pgcmk key recover",
        ],
    );
    drop(source);
}

/// `pgcmk backup keys NAME`: the key versions the server's backups need.
fn backup_keys(stack: &Stack, name: &str) -> Vec<String> {
    let keys = stack.cp.try_backup(&["keys", name]).unwrap();
    keys["key_versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn after_rotation_backups_restore_iff_the_version_backup_keys_names_is_enabled() {
    let stack = shared_stack();
    let key = stack.vault.customer_key("rs-rot");
    let source = Created::from(&stack.cp.create_with("rs-rot", &key, &versionless(&key.kid)));
    wait_for("the first full backup", Duration::from_secs(60), || {
        stack.cp.has_event("rs-rot", "backup completed")
    });
    source
        .sql("CREATE TABLE kept(n int); INSERT INTO kept VALUES (7)")
        .unwrap();
    archive_marker(&source, "before-the-rotation");
    assert_eq!(backup_keys(&stack, "rs-rot"), vec![key.kid.clone()]);

    let rotated = stack.vault.rotate(&key);
    stack.cp.server(&["revalidate", "rs-rot"]);
    wait_for("the backup key re-wrapped", Duration::from_secs(30), || {
        backup_keys(&stack, "rs-rot") == vec![rotated.clone()]
    });
    // What `backup keys` no longer names may go: the backups taken before the
    // rotation restore without it.
    stack.vault.set_version_enabled(&key, &key.kid, false);
    let restored = restore(&stack, "rs-rot", "rs-rot-copy", "latest").unwrap();
    assert_eq!(rows(&restored, "kept"), "7");

    // What it names may not.
    stack.vault.set_version_enabled(&key, &rotated, false);
    refused_restore(
        &stack,
        "rs-rot",
        "rs-rot-refused",
        &[version_of(&rotated), "is disabled"],
    );
    stack.vault.set_version_enabled(&key, &rotated, true);
}
