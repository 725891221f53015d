//! The keys data plane: each Azure Key Vault operation, run synchronously (callers
//! use a blocking thread: RSA and storage both block).

use pgcmk_akv_model::{
    b64url, KeyCreateParameters, KeyImportParameters, KeyUpdateParameters,
    RotationPolicy as WirePolicy,
};
use pgcmk_crypto::random;
use pgcmk_crypto::rsa::{RsaKeySize, RsaPrivateKey};
use serde::Serialize;
use serde_json::Value;

use super::error::{bad, KeyConflict, KeyOpError};
use super::hsm_version::{self, Protection};
use super::listing::ListQuery;
use super::model::{Attributes, KeyRecord, VaultView, VersionRecord};
use super::request::{self, decode, RSA_KEY_OPS};
use super::rotation::RotationPolicy;
use super::route::Route;
use super::{crypto, lifecycle, listing};
use crate::audit::AuditEntry;
use crate::service::Service;
use crate::storage::{WriteTx, KEYS, VERSIONS};
use crate::vaults::VaultRecord;
use crate::Error;

/// What an operation produced: the answer (none for a purge) and, for the audit
/// trail, the version used.
pub struct Outcome {
    /// The AKV-shaped answer; `None` when there is nothing to return.
    pub body: Option<Value>,
    /// The key version the operation used or created.
    pub version: Option<String>,
}

impl Outcome {
    pub(super) fn new(body: impl Serialize, version: Option<String>) -> Result<Self, KeyOpError> {
        let body = serde_json::to_value(body).map_err(Error::from)?;
        Ok(Self {
            body: Some(body),
            version,
        })
    }
}

/// Per-request context.
pub struct Ctx<'a> {
    /// The service.
    pub service: &'a Service,
    /// The vault addressed.
    pub vault: &'a VaultRecord,
    /// Its base URL.
    pub url: String,
    /// The listing parameters of the query string.
    pub query: &'a ListQuery,
    /// The audit entry of the request, committed with any state change it makes.
    pub audit: Option<&'a AuditEntry>,
}

impl Ctx<'_> {
    /// Commits the request's audit entry in `tx`, the transaction of its state change
    /// (of `version`, when it creates or changes one).
    pub(super) fn audit_with(&self, tx: &WriteTx<'_>, version: Option<&str>) -> Result<(), Error> {
        match self.audit {
            Some(intent) => crate::audit::commit_with_change(tx, intent, version),
            None => Ok(()),
        }
    }

    pub(super) fn view(&self) -> VaultView<'_> {
        VaultView {
            url: &self.url,
            retention_days: self.vault.retention_days,
            purge_protection: self.vault.purge_protection,
        }
    }
    pub(super) fn key_id(&self, name: &str) -> String {
        format!("{}/{name}", self.vault.name)
    }
    pub(super) fn version_id(&self, name: &str, version: &str) -> String {
        format!("{}/{name}/{version}", self.vault.name)
    }
}

pub(super) fn key_not_found(name: &str) -> KeyOpError {
    KeyOpError::KeyNotFound { name: name.into() }
}

pub(super) fn deleted_not_found(name: &str) -> KeyOpError {
    KeyOpError::DeletedKeyNotFound { name: name.into() }
}

/// The key as of this transaction, if it is in the wanted state (deleted or not).
pub(super) fn key_in(
    tx: &WriteTx<'_>,
    id: &str,
    deleted: bool,
) -> Result<Option<KeyRecord>, Error> {
    Ok(tx
        .get::<KeyRecord>(KEYS, id)?
        .filter(|k| k.deleted.is_some() == deleted))
}

fn version_not_found(name: &str, version: &str) -> KeyOpError {
    KeyOpError::VersionNotFound {
        name: name.into(),
        version: version.into(),
    }
}

/// Runs one data-plane operation on the request `body` (JSON; empty means `{}`).
pub fn run(ctx: &Ctx<'_>, route: &Route, body: &[u8]) -> Result<Outcome, KeyOpError> {
    if let Some(name) = route.key_name() {
        request::check_key_name(name)?;
    }
    if let Route::Get(_, v) | Route::Update(_, v) | Route::Crypto(_, v, _) = route {
        request::check_version(v)?;
    }
    match route {
        Route::Create(name) => create(ctx, name, decode(body)?),
        Route::Import(name) => import(ctx, name, decode(body)?),
        Route::Get(name, version) => {
            let key = active_key(ctx, name)?;
            let v = version_record(ctx, &key, version)?;
            Outcome::new(ctx.view().bundle(&key, &v), Some(v.version))
        }
        Route::Update(name, version) => update(ctx, name, version, decode(body)?),
        Route::Delete(name) => lifecycle::delete(ctx, name),
        Route::List => listing::list(ctx, false),
        Route::ListDeleted => listing::list(ctx, true),
        Route::ListVersions(name) => listing::list_versions(ctx, name),
        Route::Crypto(name, version, op) => crypto::crypto(ctx, name, version, *op, body),
        Route::Rotate(name) => {
            let (key, v) = rotate(ctx.service, ctx.vault, name, ctx.audit)?;
            let version = v.version.clone();
            Outcome::new(ctx.view().bundle(&key, &v), Some(version))
        }
        Route::GetRotationPolicy(name) => {
            let key = active_key(ctx, name)?;
            let id = format!("{}/rotationpolicy", ctx.view().kid(name, None));
            let policy = key
                .rotation
                .map_or_else(|| RotationPolicy::default_wire(&id), |p| p.to_wire(&id));
            Outcome::new(policy, None)
        }
        Route::SetRotationPolicy(name) => set_rotation_policy(ctx, name, &decode(body)?),
        Route::Backup(name) => super::backup::backup(ctx, name),
        Route::Restore => super::backup::restore(ctx, &decode(body)?),
        Route::GetDeleted(name) => {
            let key = deleted_key(ctx, name)?;
            let v = version_record(ctx, &key, "")?;
            Outcome::new(ctx.view().bundle(&key, &v), Some(v.version))
        }
        Route::Recover(name) => lifecycle::recover(ctx, name),
        Route::Purge(name) => lifecycle::purge(ctx, name),
        Route::GetRandomBytes => super::random::random_bytes(&decode(body)?),
    }
}

pub(super) fn load_key(ctx: &Ctx<'_>, name: &str) -> Result<Option<KeyRecord>, KeyOpError> {
    Ok(ctx
        .service
        .store
        .get::<KeyRecord>(KEYS, &ctx.key_id(name))?)
}

pub(super) fn active_key(ctx: &Ctx<'_>, name: &str) -> Result<KeyRecord, KeyOpError> {
    match load_key(ctx, name)? {
        Some(k) if k.deleted.is_none() => Ok(k),
        _ => Err(key_not_found(name)),
    }
}

pub(super) fn deleted_key(ctx: &Ctx<'_>, name: &str) -> Result<KeyRecord, KeyOpError> {
    match load_key(ctx, name)? {
        Some(k) if k.deleted.is_some() => Ok(k),
        _ => Err(deleted_not_found(name)),
    }
}

pub(super) fn version_record(
    ctx: &Ctx<'_>,
    key: &KeyRecord,
    version: &str,
) -> Result<VersionRecord, KeyOpError> {
    let version = if version.is_empty() {
        key.current()
    } else {
        version
    };
    if !key.versions.iter().any(|v| v == version) {
        return Err(version_not_found(&key.name, version));
    }
    ctx.service
        .store
        .get::<VersionRecord>(VERSIONS, &ctx.version_id(&key.name, version))?
        .ok_or_else(|| version_not_found(&key.name, version))
}

/// The public settings of a version being created.
pub(super) struct VersionProps {
    /// Version id.
    pub version: String,
    /// Attributes.
    pub attributes: Attributes,
    /// Permitted operations.
    pub key_ops: Vec<String>,
    /// Tags.
    pub tags: std::collections::BTreeMap<String, String>,
}

/// Seals a private key into a new version record.
pub(super) fn seal_version(
    service: &Service,
    vault: &str,
    name: &str,
    private: &RsaPrivateKey,
    props: VersionProps,
) -> Result<VersionRecord, Error> {
    let der = private.to_pkcs8_der()?;
    let aad = seal_aad(vault, name, &props.version);
    let sealed = service
        .keys
        .storage
        .seal(aad.as_bytes(), der.expose_secret())?;
    let public = private.public_key();
    Ok(VersionRecord {
        version: props.version,
        size: public.size_bits(),
        n: b64url::encode(public.n()),
        e: b64url::encode(public.e()),
        sealed_private: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sealed),
        hsm: None,
        attributes: props.attributes,
        key_ops: props.key_ops,
        tags: props.tags,
    })
}

/// Associated data binding a sealed private key to its vault, name and version.
pub(super) fn seal_aad(vault: &str, name: &str, version: &str) -> String {
    format!("key:{vault}/{name}/{version}")
}

fn create(ctx: &Ctx<'_>, name: &str, body: KeyCreateParameters) -> Result<Outcome, KeyOpError> {
    let protection = Protection::of_kty(&body.kty)?;
    if protection == Protection::Hsm {
        hsm_version::hsm(ctx.service)?;
    }
    let bits = body.key_size.unwrap_or(2048);
    let size = u32::try_from(bits)
        .ok()
        .and_then(|b| RsaKeySize::from_bits(b).ok())
        .ok_or_else(|| {
            bad(format!(
                "RSA key size {bits} is not supported: use 2048, 3072 or 4096"
            ))
        })?;
    if body.public_exponent.is_some_and(|e| e != 65537) {
        return Err(bad("public_exponent must be 65537"));
    }
    let key_ops = request::key_ops(body.key_ops.as_deref())?;
    let props = new_version_props(body.attributes, body.tags, key_ops, ctx.service.now())?;
    // Generate outside the write transaction: 4096-bit keygen must not stall other writers.
    let v = hsm_version::generate(ctx.service, &ctx.vault.name, name, size, protection, props)?;
    store_new_version(ctx, name, v)
}

/// `PUT /keys/{name}`: imports an RSA private key given as a JWK (`key`), with
/// optional `attributes` and `tags`; `key.key_ops` limits its operations.
fn import(ctx: &Ctx<'_>, name: &str, body: KeyImportParameters) -> Result<Outcome, KeyOpError> {
    let private = request::imported_private_key(&body)?;
    let key_ops = request::key_ops(body.key.key_ops.as_deref())?;
    let props = new_version_props(
        body.attributes.clone(),
        body.tags.clone(),
        key_ops,
        ctx.service.now(),
    )?;
    let v = seal_version(ctx.service, &ctx.vault.name, name, &private, props)?;
    store_new_version(ctx, name, v)
}

/// Attributes and tags of a create or import body, for a version created now.
fn new_version_props(
    attributes: Option<pgcmk_akv_model::AttributeChanges>,
    tags: Option<std::collections::BTreeMap<String, String>>,
    key_ops: Option<Vec<String>>,
    now: i64,
) -> Result<VersionProps, KeyOpError> {
    let key_ops = key_ops.unwrap_or_else(|| RSA_KEY_OPS.iter().map(|s| s.to_string()).collect());
    let tags = request::tags(tags)?.unwrap_or_default();
    let changes = request::attributes(attributes)?;
    Ok(VersionProps {
        version: random::hex_id(16)?,
        attributes: Attributes {
            enabled: changes.enabled.unwrap_or(true),
            nbf: changes.nbf.flatten(),
            exp: changes.exp.flatten(),
            created: now,
            updated: now,
        },
        key_ops,
        tags,
    })
}

/// Stores `v` as a new version of `name` (a new key, or a new version of an
/// existing one, as in Azure); refused while the name is soft-deleted, and then
/// its token key pair, if any, is destroyed again.
fn store_new_version(ctx: &Ctx<'_>, name: &str, v: VersionRecord) -> Result<Outcome, KeyOpError> {
    let created = v.attributes.created;
    let stored = ctx.service.store.write(|tx| {
        let existing: Option<KeyRecord> = tx.get(KEYS, &ctx.key_id(name))?;
        let key = match existing {
            Some(k) if k.deleted.is_some() => return Ok(Err(deleted_conflict(name))),
            Some(mut k) => {
                k.versions.push(v.version.clone());
                k
            }
            None => KeyRecord {
                name: name.to_string(),
                versions: vec![v.version.clone()],
                created,
                deleted: None,
                rotation: None,
                notified_version: None,
            },
        };
        put_version(ctx, tx, name, &v)?;
        tx.put(KEYS, &ctx.key_id(name), &key)?;
        ctx.audit_with(tx, Some(&v.version))?;
        Ok(Ok(key))
    });
    let key = stored_or_discarded(ctx.service, &v, stored)?;
    Outcome::new(ctx.view().bundle(&key, &v), Some(v.version.clone()))
}

/// What storing `v` gave; when it failed, `v`'s token key pair (if any) is
/// destroyed again, so that nothing is left behind in the token.
fn stored_or_discarded<T>(
    service: &Service,
    v: &VersionRecord,
    stored: Result<Result<T, KeyOpError>, Error>,
) -> Result<T, KeyOpError> {
    stored
        .map_err(KeyOpError::from)
        .and_then(|r| r)
        .inspect_err(|_| {
            hsm_version::discard(service, v);
        })
}

fn put_version(
    ctx: &Ctx<'_>,
    tx: &WriteTx<'_>,
    name: &str,
    v: &VersionRecord,
) -> Result<(), Error> {
    tx.put(VERSIONS, &ctx.version_id(name, &v.version), v)
}

pub(super) fn deleted_conflict(name: &str) -> KeyOpError {
    KeyConflict::DeletedButRecoverable { name: name.into() }.into()
}

fn update(
    ctx: &Ctx<'_>,
    name: &str,
    version: &str,
    body: KeyUpdateParameters,
) -> Result<Outcome, KeyOpError> {
    let key_ops = request::key_ops(body.key_ops.as_deref())?;
    let tags = request::tags(body.tags)?;
    let changes = request::attributes(body.attributes)?;
    let key = active_key(ctx, name)?;
    let current = version_record(ctx, &key, version)?;
    let updated = ctx.service.store.write(|tx| {
        let mut v: VersionRecord =
            match tx.get(VERSIONS, &ctx.version_id(name, &current.version))? {
                Some(v) => v,
                None => return Ok(Err(version_not_found(name, &current.version))),
            };
        if let Some(e) = changes.enabled {
            v.attributes.enabled = e;
        }
        if let Some(nbf) = changes.nbf {
            v.attributes.nbf = nbf;
        }
        if let Some(exp) = changes.exp {
            v.attributes.exp = exp;
        }
        if let Err(e) = request::check_window(v.attributes.nbf, v.attributes.exp) {
            return Ok(Err(e));
        }
        if let Some(ops) = key_ops {
            v.key_ops = ops;
        }
        if let Some(t) = tags {
            v.tags = t;
        }
        v.attributes.updated = ctx.service.now();
        put_version(ctx, tx, name, &v)?;
        ctx.audit_with(tx, Some(&v.version))?;
        Ok(Ok(v))
    })??;
    Outcome::new(
        ctx.view().bundle(&key, &updated),
        Some(updated.version.clone()),
    )
}

/// Adds a new version to a key with the current version's size, operations and tags;
/// its expiry comes from the rotation policy, if that sets one.
/// `audit` is the rotating request's entry (a user's, or the maintenance run's),
/// committed with the new version.
pub(crate) fn rotate(
    service: &Service,
    vault: &VaultRecord,
    name: &str,
    audit: Option<&AuditEntry>,
) -> Result<(KeyRecord, VersionRecord), KeyOpError> {
    let ctx = Ctx {
        service,
        vault,
        url: service.vault_url(vault),
        query: &ListQuery::default(),
        audit,
    };
    let key = active_key(&ctx, name)?;
    let current = version_record(&ctx, &key, "")?;
    let size = RsaKeySize::from_bits(current.size)?;
    let now = service.now();
    let attributes = Attributes {
        enabled: true,
        nbf: None,
        exp: key.rotation.as_ref().and_then(|p| p.expiry_for(now)),
        created: now,
        updated: now,
    };
    let props = VersionProps {
        version: random::hex_id(16)?,
        attributes,
        key_ops: current.key_ops.clone(),
        tags: current.tags.clone(),
    };
    let protection = Protection::of(&current);
    let v = hsm_version::generate(service, &vault.name, name, size, protection, props)?;
    let stored = service.store.write(|tx| {
        let Some(mut key) = key_in(tx, &ctx.key_id(name), false)? else {
            return Ok(Err(key_not_found(name)));
        };
        key.versions.push(v.version.clone());
        put_version(&ctx, tx, name, &v)?;
        tx.put(KEYS, &ctx.key_id(name), &key)?;
        ctx.audit_with(tx, Some(&v.version))?;
        Ok(Ok(key))
    });
    let key = stored_or_discarded(service, &v, stored)?;
    Ok((key, v))
}

fn set_rotation_policy(
    ctx: &Ctx<'_>,
    name: &str,
    body: &WirePolicy,
) -> Result<Outcome, KeyOpError> {
    let key = active_key(ctx, name)?;
    let policy = RotationPolicy::from_wire(body, ctx.service.now(), key.rotation.as_ref())
        .map_err(KeyOpError::BadParameter)?;
    let saved = ctx.service.store.write(|tx| {
        let Some(mut key) = key_in(tx, &ctx.key_id(name), false)? else {
            return Ok(Err(key_not_found(name)));
        };
        key.rotation = Some(policy.clone());
        tx.put(KEYS, &ctx.key_id(name), &key)?;
        ctx.audit_with(tx, None)?;
        Ok(Ok(policy))
    })??;
    let id = format!("{}/rotationpolicy", ctx.view().kid(name, None));
    Outcome::new(saved.to_wire(&id), None)
}
