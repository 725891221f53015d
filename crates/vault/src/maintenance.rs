//! Background work: rotation policies whose lifetime actions are due, and soft-deleted
//! keys whose retention has passed. Each action is recorded in the audit trail with
//! the caller `system`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audit::AuditEntry;
use crate::http::key_errors;
use crate::keys::error::KeyOpError;
use crate::keys::model::{KeyRecord, VersionRecord};
use crate::keys::ops;
use crate::keys::rotation::ActionType;
use crate::service::Service;
use crate::storage::{KEYS, VERSIONS};
use crate::vaults::VaultRecord;
use crate::{now_rfc3339, Error};

/// Runs the checks every `interval` until shutdown.
pub async fn run(service: Arc<Service>, interval: Duration) {
    let mut shutdown = service.shutdown.clone();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        run_once(&service).await;
    }
}

/// One pass over every key of every vault, now (by the service's clock): due
/// rotations and notifications, and purges whose date has passed. Failures are logged.
pub async fn run_once(service: &Arc<Service>) {
    let svc = service.clone();
    let entries = tokio::task::spawn_blocking(move || check_all(&svc)).await;
    match entries {
        Ok(Ok(entries)) => {
            for e in entries {
                if let Err(err) = service.audit.record(e, None).await {
                    tracing::error!("recording a maintenance action failed: {err}");
                }
            }
        }
        Ok(Err(e)) => tracing::error!("key maintenance failed: {e}"),
        Err(e) => tracing::error!("key maintenance panicked: {e}"),
    }
}

fn entry(
    vault: &VaultRecord,
    operation: &str,
    key: &str,
    version: Option<String>,
    status: u16,
    started: Instant,
) -> AuditEntry {
    AuditEntry {
        time: now_rfc3339(),
        vault: vault.name.clone(),
        operation: operation.into(),
        key: Some(key.into()),
        version,
        caller: "system".into(),
        caller_name: Some("maintenance".into()),
        client: "internal".into(),
        status,
        result: AuditEntry::result_for(status).into(),
        challenge: false,
        duration_us: started.elapsed().as_micros() as u64,
        request_id: crate::identity::new_id(),
        ..AuditEntry::default()
    }
}

/// One pass over every key of every vault.
fn check_all(service: &Service) -> Result<Vec<AuditEntry>, Error> {
    let mut out = Vec::new();
    let now = service.now();
    for vault in service.vaults.list() {
        let prefix = format!("{}/", vault.name);
        let mut after: Option<String> = None;
        loop {
            let batch: Vec<(String, KeyRecord)> =
                service.store.scan(KEYS, &prefix, after.as_deref(), 256)?;
            let Some((last, _)) = batch.last() else { break };
            after = Some(last.clone());
            for (_, key) in batch {
                let started = Instant::now();
                if let Some(d) = key.deleted {
                    if now >= d.scheduled_purge_date {
                        let purged = entry(&vault, "KeyPurge", &key.name, None, 204, started);
                        match crate::keys::lifecycle::purge_key(
                            service,
                            &vault.name,
                            &key.name,
                            Some(&purged),
                        ) {
                            Ok(()) => out.push(purged),
                            Err(KeyOpError::Internal(e)) => return Err(e),
                            // The token refused: the key stays soft-deleted; next run retries.
                            Err(e) => tracing::warn!(
                                "scheduled purge of key '{}' in vault '{}': {e}",
                                key.name,
                                vault.name
                            ),
                        }
                    }
                    continue;
                }
                let Some(policy) = &key.rotation else {
                    continue;
                };
                let id = format!("{}/{}/{}", vault.name, key.name, key.current());
                let Some(current) = service.store.get::<VersionRecord>(VERSIONS, &id)? else {
                    continue;
                };
                match policy.due(current.attributes.created, current.attributes.exp, now) {
                    Some(ActionType::Rotate) => {
                        let rotating = entry(&vault, "KeyRotate", &key.name, None, 200, started);
                        match ops::rotate(service, &vault, &key.name, Some(&rotating)) {
                            Ok((_, v)) => out.push(AuditEntry {
                                version: Some(v.version),
                                duration_us: started.elapsed().as_micros() as u64,
                                ..rotating
                            }),
                            Err(e) => out.push(entry(
                                &vault,
                                "KeyRotate",
                                &key.name,
                                None,
                                key_errors::status(&e).as_u16(),
                                started,
                            )),
                        }
                    }
                    Some(ActionType::Notify)
                        if key.notified_version.as_deref() != Some(key.current()) =>
                    {
                        mark_notified(service, &vault, &key.name, key.current())?;
                        out.push(entry(
                            &vault,
                            "KeyNearExpiry",
                            &key.name,
                            Some(key.current().into()),
                            200,
                            started,
                        ));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}

fn mark_notified(
    service: &Service,
    vault: &VaultRecord,
    name: &str,
    version: &str,
) -> Result<(), Error> {
    let id = format!("{}/{name}", vault.name);
    service.store.write(|tx| {
        if let Some(mut key) = tx.get::<KeyRecord>(KEYS, &id)? {
            key.notified_version = Some(version.to_string());
            tx.put(KEYS, &id, &key)?;
        }
        Ok(())
    })
}
