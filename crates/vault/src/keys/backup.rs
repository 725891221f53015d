//! Key backup and restore. A backup blob holds every version of a key, sealed with
//! a key derived from this service's root key: only this service can restore it,
//! and the blob reveals nothing without that root key.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use pgcmk_akv_model::{b64url, ValueParameter};
use pgcmk_crypto::rsa::RsaPrivateKey;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::error::{bad, KeyConflict, KeyOpError, Unusable};
use super::model::{Attributes, KeyRecord};
use super::ops::{self, Ctx, Outcome};
use super::request::{self, decode_b64url};
use super::rotation::RotationPolicy;
use crate::storage::{KEYS, VERSIONS};

const MAGIC: &[u8] = b"pgcmk-key-backup-v1:";
const AAD: &[u8] = b"pgcmk key backup v1";

#[derive(Serialize, Deserialize)]
struct BackupVersion {
    version: String,
    private_pkcs8: String,
    attributes: Attributes,
    key_ops: Vec<String>,
    tags: BTreeMap<String, String>,
}

impl Drop for BackupVersion {
    fn drop(&mut self) {
        self.private_pkcs8.zeroize();
    }
}

#[derive(Serialize, Deserialize)]
struct BackupPayload {
    name: String,
    created: i64,
    rotation: Option<RotationPolicy>,
    versions: Vec<BackupVersion>,
}

/// `POST /keys/{name}/backup`.
pub fn backup(ctx: &Ctx<'_>, name: &str) -> Result<Outcome, KeyOpError> {
    let key = ops::active_key(ctx, name)?;
    let mut versions = Vec::new();
    for version in &key.versions {
        let v = ops::version_record(ctx, &key, version)?;
        if v.hsm.is_some() {
            return Err(KeyOpError::Unusable {
                operation: "backup",
                reason: Unusable::NotExportable,
            });
        }
        let private = super::crypto::private_key(ctx.service, &ctx.vault.name, name, &v)?;
        let der = private.to_pkcs8_der()?;
        versions.push(BackupVersion {
            version: v.version,
            private_pkcs8: B64.encode(der.expose_secret()),
            attributes: v.attributes,
            key_ops: v.key_ops,
            tags: v.tags,
        });
    }
    let payload = BackupPayload {
        name: name.to_string(),
        created: key.created,
        rotation: key.rotation,
        versions,
    };
    let plain = Zeroizing::new(serde_json::to_vec(&payload).map_err(crate::Error::from)?);
    drop(payload);
    let mut blob = MAGIC.to_vec();
    blob.extend_from_slice(&ctx.service.keys.backup.seal(AAD, &plain)?);
    Outcome::new(
        ValueParameter {
            value: b64url::encode(&blob),
        },
        None,
    )
}

/// `POST /keys/restore`.
pub fn restore(ctx: &Ctx<'_>, body: &ValueParameter) -> Result<Outcome, KeyOpError> {
    let blob = decode_b64url("value", &body.value)?;
    let not_ours = || bad("the backup blob is corrupt or was not made by this vault service");
    let sealed = blob.strip_prefix(MAGIC).ok_or_else(not_ours)?;
    let plain = ctx
        .service
        .keys
        .backup
        .open(AAD, sealed)
        .map_err(|_| not_ours())?;
    let payload: BackupPayload =
        serde_json::from_slice(plain.expose_secret()).map_err(|_| not_ours())?;
    drop(plain);
    request::check_key_name(&payload.name)?;
    let mut records = Vec::new();
    for v in &payload.versions {
        let der = Zeroizing::new(B64.decode(&v.private_pkcs8).map_err(|_| not_ours())?);
        let private = RsaPrivateKey::from_pkcs8_der(&der).map_err(|_| not_ours())?;
        let props = ops::VersionProps {
            version: v.version.clone(),
            attributes: v.attributes.clone(),
            key_ops: v.key_ops.clone(),
            tags: v.tags.clone(),
        };
        let record =
            ops::seal_version(ctx.service, &ctx.vault.name, &payload.name, &private, props)?;
        records.push(record);
    }
    let Some(current) = records.last().cloned() else {
        return Err(not_ours());
    };
    let name = payload.name.clone();
    let key = KeyRecord {
        name: name.clone(),
        versions: records.iter().map(|r| r.version.clone()).collect(),
        created: payload.created,
        deleted: None,
        rotation: payload.rotation,
        notified_version: None,
    };
    let key_id = format!("{}/{name}", ctx.vault.name);
    ctx.service.store.write(|tx| {
        match tx.get::<KeyRecord>(KEYS, &key_id)? {
            Some(k) if k.deleted.is_some() => return Ok(Err(ops::deleted_conflict(&name))),
            Some(_) => return Ok(Err(KeyConflict::AlreadyExists { name: name.clone() }.into())),
            None => {}
        }
        for r in &records {
            tx.put(VERSIONS, &format!("{key_id}/{}", r.version), r)?;
        }
        tx.put(KEYS, &key_id, &key)?;
        if let Some(intent) = ctx.audit {
            let restored = crate::audit::AuditEntry {
                key: Some(name.clone()),
                ..intent.clone()
            };
            crate::audit::commit_with_change(tx, &restored, Some(&current.version))?;
        }
        Ok(Ok(()))
    })??;
    ctx.service.cache.forget_key(&ctx.vault.name, &name);
    Outcome::new(ctx.view().bundle(&key, &current), Some(current.version))
}
