//! Helpers of the geo-redundant copy's tests: geo keys in a vault of the paired
//! location, servers created with a copy, their first backups.

use std::time::Duration;

use pgcmk_testkit::wait::wait_for;
use serde_json::Value;

use super::{versionless, CustomerKey, Stack, Vault};

/// Where the geo keys' vaults are: not the servers' location (westeurope).
pub const GEO_LOCATION: &str = "northeurope";

/// The security officer's steps for a geo key: identity `NAME-geo-mi`, vault
/// `NAME-geo-kv` in [`GEO_LOCATION`] granting it `get`, `wrapKey` and `unwrapKey`,
/// and RSA key `NAME-geo-key`.
pub fn geo_key(vault: &Vault, name: &str) -> CustomerKey {
    vault.customer_key_at(&format!("{name}-geo"), GEO_LOCATION, "RSA")
}

/// The options that give a server a geo-redundant copy under `geo`.
pub fn geo_options(geo: &CustomerKey) -> Vec<String> {
    vec![
        "--geo-backup-key".into(),
        versionless(&geo.kid),
        "--geo-backup-identity".into(),
        geo.identity.name.clone(),
        "--geo-backup-identity-credential-file".into(),
        geo.identity.credential_file.display().to_string(),
    ]
}

/// `pgcmk server create NAME` under `key`, with `more` options.
pub fn create_under(
    stack: &Stack,
    name: &str,
    key: &CustomerKey,
    more: &[String],
) -> Result<Value, String> {
    let more: Vec<&str> = more.iter().map(String::as_str).collect();
    stack.cp.create_with_credential_and(
        name,
        &key.identity.name,
        &key.identity.credential_file,
        &versionless(&key.kid),
        &more,
    )
}

/// Waits until server `name`'s own repository and its geo copy each completed a
/// backup.
pub fn wait_first_geo_backup(stack: &Stack, name: &str) {
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
}

/// Server `name`'s `server created` event says it was restored from a geo copy.
pub fn assert_restored_from_the_copy(stack: &Stack, name: &str) {
    let events = stack.cp.events(name);
    assert!(
        events.iter().any(|e| e["what"] == "server created"
            && e["why"].as_str().unwrap().contains("(repository 2)")),
        "{events:?}"
    );
}
