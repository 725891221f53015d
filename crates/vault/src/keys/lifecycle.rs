//! Soft delete, recover and purge.

use super::error::KeyOpError;
use super::model::{Deleted, KeyRecord, VersionRecord};
use super::ops::{
    deleted_key, deleted_not_found, key_in, key_not_found, version_record, Ctx, Outcome,
};
use crate::audit::AuditEntry;
use crate::service::Service;
use crate::storage::{KEYS, VERSIONS};

pub(super) fn delete(ctx: &Ctx<'_>, name: &str) -> Result<Outcome, KeyOpError> {
    let now = ctx.service.now();
    let key = ctx.service.store.write(|tx| {
        let Some(mut key) = key_in(tx, &ctx.key_id(name), false)? else {
            return Ok(Err(key_not_found(name)));
        };
        key.deleted = Some(Deleted {
            deleted_date: now,
            scheduled_purge_date: now + i64::from(ctx.vault.retention_days) * 86_400,
        });
        tx.put(KEYS, &ctx.key_id(name), &key)?;
        ctx.audit_with(tx, None)?;
        Ok(Ok(key))
    })??;
    let v = version_record(ctx, &key, "")?;
    Outcome::new(ctx.view().bundle(&key, &v), Some(v.version))
}

pub(super) fn recover(ctx: &Ctx<'_>, name: &str) -> Result<Outcome, KeyOpError> {
    let key = ctx.service.store.write(|tx| {
        let Some(mut key) = key_in(tx, &ctx.key_id(name), true)? else {
            return Ok(Err(deleted_not_found(name)));
        };
        key.deleted = None;
        tx.put(KEYS, &ctx.key_id(name), &key)?;
        ctx.audit_with(tx, None)?;
        Ok(Ok(key))
    })??;
    let v = version_record(ctx, &key, "")?;
    Outcome::new(ctx.view().bundle(&key, &v), Some(v.version))
}

pub(super) fn purge(ctx: &Ctx<'_>, name: &str) -> Result<Outcome, KeyOpError> {
    let key = deleted_key(ctx, name)?;
    if let Some(d) = key.deleted {
        if ctx.vault.purge_protection && ctx.service.now() < d.scheduled_purge_date {
            return Err(KeyOpError::PurgeProtected {
                vault: ctx.vault.name.clone(),
                name: name.into(),
                scheduled_purge_date: d.scheduled_purge_date,
            });
        }
    }
    purge_key(ctx.service, &ctx.vault.name, name, ctx.audit)?;
    Ok(Outcome {
        body: None,
        version: None,
    })
}

/// Removes a key and all its versions for good, committing `audit` (the purging
/// request's entry) with it. RSA-HSM versions' key pairs are destroyed in the token
/// first: if the token refuses, nothing is removed and the purge can be retried.
pub(crate) fn purge_key(
    service: &Service,
    vault: &str,
    name: &str,
    audit: Option<&AuditEntry>,
) -> Result<(), KeyOpError> {
    if let Some(key) = service
        .store
        .get::<KeyRecord>(KEYS, &format!("{vault}/{name}"))?
    {
        let mut versions = Vec::new();
        for v in &key.versions {
            versions.extend(
                service
                    .store
                    .get::<VersionRecord>(VERSIONS, &format!("{vault}/{name}/{v}"))?,
            );
        }
        super::hsm_version::destroy_all(service, &versions)?;
    }
    service.store.write(|tx| {
        if let Some(intent) = audit {
            crate::audit::commit_with_change(tx, intent, None)?;
        }
        let key: Option<KeyRecord> = tx.get(KEYS, &format!("{vault}/{name}"))?;
        if let Some(key) = key {
            for v in &key.versions {
                tx.delete(VERSIONS, &format!("{vault}/{name}/{v}"))?;
            }
            tx.delete(KEYS, &format!("{vault}/{name}"))?;
        }
        Ok(())
    })?;
    service.cache.forget_key(vault, name);
    Ok(())
}
