//! What the vault service tells Prometheus (docs/operations.md "Metrics"). Every label
//! comes from a fixed set — an operation name, an outcome, an error code — so that a
//! scrape shows how the service is used, never by whom or on which key: no identity,
//! vault or key name is a label (the security officer's audit trail has those).

use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};

use crate::keys::model::{KeyRecord, VersionRecord};
use crate::service::Service;
use crate::storage::{KEYS, VERSIONS};

/// Gives each metric its `# HELP` line (once the recorder is installed).
pub fn describe() {
    describe_counter!(
        "pgcmk_vault_requests_total",
        "Requests by operation and outcome (ok, denied, client_error, error)"
    );
    describe_counter!(
        "pgcmk_vault_denials_total",
        "Refused requests (401/403) by operation and reason (error code)"
    );
    describe_histogram!(
        "pgcmk_vault_request_duration_seconds",
        Unit::Seconds,
        "Request latency until its audit entry is durable"
    );
    describe_histogram!(
        "pgcmk_vault_audit_commit_duration_seconds",
        Unit::Seconds,
        "Latency of one audit commit (a batch of entries, fsynced)"
    );
    describe_counter!("pgcmk_vault_audit_entries_total", "Audit entries appended");
    describe_gauge!(
        "pgcmk_vault_audit_chain_length",
        "Entries in the audit chain"
    );
    describe_counter!(
        "pgcmk_vault_tokens_issued_total",
        "Access tokens issued, by grant"
    );
    describe_gauge!(
        "pgcmk_vault_keys",
        "Keys by the state of their current version"
    );
    describe_gauge!("pgcmk_vault_key_versions", "Key versions by state");
}

/// What a finished request came to, from its status.
fn outcome(status: u16) -> &'static str {
    match status {
        200..=399 => "ok",
        401 | 403 => "denied",
        400..=499 => "client_error",
        _ => "error",
    }
}

/// Counts and times one request; a denial also by its `reason` (the AKV error code).
pub fn request(operation: &str, status: u16, reason: Option<&'static str>, elapsed: Duration) {
    let outcome = outcome(status);
    let operation = operation.to_string();
    counter!("pgcmk_vault_requests_total", "operation" => operation.clone(), "outcome" => outcome)
        .increment(1);
    if outcome == "denied" {
        counter!(
            "pgcmk_vault_denials_total",
            "operation" => operation.clone(),
            "reason" => reason.unwrap_or(if status == 401 { "Unauthorized" } else { "Forbidden" })
        )
        .increment(1);
    }
    histogram!("pgcmk_vault_request_duration_seconds", "operation" => operation).record(elapsed);
}

/// One audit commit of `entries` entries that took `elapsed`.
pub fn audit_commit(entries: usize, elapsed: Duration) {
    histogram!("pgcmk_vault_audit_commit_duration_seconds").record(elapsed);
    counter!("pgcmk_vault_audit_entries_total").increment(entries as u64);
}

/// A token issued through `grant` (`client_credentials` or `managed_identity`).
pub fn token_issued(grant: &'static str) {
    counter!("pgcmk_vault_tokens_issued_total", "grant" => grant).increment(1);
}

/// The state of a key version now: `enabled`, `disabled`, `expired` or `not_yet_valid`.
fn version_state(version: &VersionRecord, now: i64) -> &'static str {
    let a = &version.attributes;
    if !a.enabled {
        "disabled"
    } else if a.exp.is_some_and(|exp| now >= exp) {
        "expired"
    } else if a.nbf.is_some_and(|nbf| now < nbf) {
        "not_yet_valid"
    } else {
        "enabled"
    }
}

const VERSION_STATES: [&str; 4] = ["enabled", "disabled", "expired", "not_yet_valid"];
const KEY_STATES: [&str; 5] = ["enabled", "disabled", "expired", "not_yet_valid", "deleted"];

/// Sets the gauges read from storage at each scrape: the audit chain's length, and
/// keys and versions by state.
pub fn refresh(service: &Service) {
    match service.audit.chain_length() {
        Ok(n) => gauge!("pgcmk_vault_audit_chain_length").set(n as f64),
        Err(e) => tracing::warn!("audit chain length for /metrics: {e}"),
    }
    refresh_key_states(service);
}

/// Keys and versions by state; a key's state is its current version's, or `deleted`
/// while it is soft-deleted.
fn refresh_key_states(service: &Service) {
    let mut keys = [0u64; KEY_STATES.len()];
    let mut versions = [0u64; VERSION_STATES.len()];
    let now = service.now();
    let count = |states: &[&str], tally: &mut [u64], state: &str| {
        if let Some(i) = states.iter().position(|s| *s == state) {
            tally[i] += 1;
        }
    };
    let mut after: Option<String> = None;
    loop {
        let batch: Vec<(String, KeyRecord)> =
            match service.store.scan(KEYS, "", after.as_deref(), 256) {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!("key states for /metrics: {e}");
                    return;
                }
            };
        let Some((last, _)) = batch.last() else { break };
        after = Some(last.clone());
        for (id, key) in batch {
            let mut current_state = "deleted";
            for v in &key.versions {
                let Ok(Some(record)) = service
                    .store
                    .get::<VersionRecord>(VERSIONS, &format!("{id}/{v}"))
                else {
                    continue;
                };
                let state = version_state(&record, now);
                count(&VERSION_STATES, &mut versions, state);
                if key.deleted.is_none() && v == key.current() {
                    current_state = state;
                }
            }
            count(&KEY_STATES, &mut keys, current_state);
        }
    }
    for (state, n) in KEY_STATES.iter().zip(keys) {
        gauge!("pgcmk_vault_keys", "state" => *state).set(n as f64);
    }
    for (state, n) in VERSION_STATES.iter().zip(versions) {
        gauge!("pgcmk_vault_key_versions", "state" => *state).set(n as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_outcomes() {
        for (status, want) in [
            (200, "ok"),
            (204, "ok"),
            (401, "denied"),
            (403, "denied"),
            (404, "client_error"),
            (429, "client_error"),
            (500, "error"),
        ] {
            assert_eq!(outcome(status), want, "{status}");
        }
    }
}
