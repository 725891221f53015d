//! Management API: vaults, their settings and administrators.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{json, Value};

use super::admin_identities::find_identity;
use super::{ApiError, Reply};
use crate::identity::Principal;
use crate::policy::Permission;
use crate::service::Service;
use crate::vaults::{valid_vault_name, VaultChangeRefused, VaultRecord};

pub(super) fn vault_for(service: &Service, name: &str) -> Result<VaultRecord, ApiError> {
    service.vaults.get(name).ok_or_else(|| {
        ApiError::not_found(
            "VaultNotFound",
            format!("no vault is named '{name}'; list them with: pgcmk keyvault list"),
        )
    })
}

pub(super) fn vault_json(service: &Service, v: &VaultRecord) -> Value {
    let name_of = |oid: &str| {
        service
            .directory
            .get(oid)
            .map(|p| p.name)
            .unwrap_or_else(|| oid.to_string())
    };
    let policies: Vec<Value> = v
        .policies
        .iter()
        .map(|(oid, perms)| {
            json!({
                "object_id": oid,
                "identity": name_of(oid),
                "key_permissions": perms.iter().map(|p| p.name()).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "name": v.name,
        "url": service.vault_url(v),
        "location": v.location,
        "retention_days": v.retention_days,
        "purge_protection": v.purge_protection,
        "allow_rsa1_5": v.allow_rsa1_5,
        "administrators": v.administrators.iter().map(|o| name_of(o)).collect::<Vec<_>>(),
        "policies": policies,
        "created": v.created,
    })
}

fn retention(body: &Value) -> Result<Option<u32>, ApiError> {
    match body.get("retention_days") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|d| (7..=90).contains(d))
            .map(|d| Some(d as u32))
            .ok_or_else(|| {
                ApiError::bad("retention_days must be a whole number of days from 7 to 90")
            }),
    }
}

fn flag(body: &Value, name: &str) -> Result<Option<bool>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad(format!("{name} must be true or false"))),
    }
}

fn location(body: &Value) -> Result<Option<String>, ApiError> {
    match body.get("location") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(l))
            if !l.is_empty()
                && l.len() <= 64
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            Ok(Some(l.clone()))
        }
        Some(_) => Err(ApiError::bad(
            "location must be 1-64 letters, digits and dashes, e.g. westeurope",
        )),
    }
}

pub(super) async fn create_vault(
    service: &Arc<Service>,
    caller: &Principal,
    body: &Value,
) -> Result<Value, ApiError> {
    let name = body.get("name").and_then(Value::as_str).unwrap_or_default();
    if !valid_vault_name(name) {
        return Err(ApiError::bad(format!(
            "vault name '{name}' is invalid: use 3-24 letters, digits and single dashes, starting with a letter"
        )));
    }
    let location =
        location(body)?.ok_or_else(|| ApiError::bad("location is required, e.g. westeurope"))?;
    let retention_days = retention(body)?.unwrap_or(90);
    if service.vaults.get(name).is_some() {
        return Err(ApiError::conflict(format!(
            "a vault named '{name}' already exists"
        )));
    }
    let listener = service.bind_new_vault_port().await?;
    let port = listener.local_addr().map_err(ApiError::internal)?.port();
    let record = VaultRecord {
        name: name.to_string(),
        port,
        location,
        retention_days,
        purge_protection: flag(body, "purge_protection")?.unwrap_or(false),
        allow_rsa1_5: flag(body, "allow_rsa1_5")?.unwrap_or(false),
        administrators: BTreeSet::from([caller.object_id.clone()]),
        // Like `az keyvault create`: the creator gets every key permission.
        policies: [(
            caller.object_id.clone(),
            Permission::ALL.iter().copied().collect(),
        )]
        .into(),
        created: service.now(),
    };
    // The durable write (fsync) runs off the async runtime.
    let inserted = super::blocking(service, {
        let record = record.clone();
        move |svc| Ok(svc.vaults.insert(&svc.store, record)?)
    })
    .await?;
    if !inserted {
        return Err(ApiError::conflict(format!(
            "a vault named '{name}' already exists"
        )));
    }
    service.serve_vault(name, listener);
    Ok(vault_json(service, &record))
}

pub(super) fn change_vault(
    service: &Service,
    name: &str,
    change: impl FnOnce(&mut VaultRecord) -> Result<(), VaultChangeRefused>,
) -> Result<Reply, ApiError> {
    match service.vaults.update(&service.store, name, change)? {
        None => Err(vault_for(service, name)
            .err()
            .unwrap_or_else(|| ApiError::bad("vault changed concurrently; retry"))),
        Some(Err(refused)) => Err(ApiError::bad(refused.to_string())),
        Some(Ok(v)) => Ok(Reply::ok(vault_json(service, &v))),
    }
}

pub(super) fn update_vault(service: &Service, name: &str, body: &Value) -> Result<Reply, ApiError> {
    let location = location(body)?;
    let retention_days = retention(body)?;
    let purge_protection = flag(body, "purge_protection")?;
    let allow_rsa1_5 = flag(body, "allow_rsa1_5")?;
    let ids = |field: &str| -> Result<Vec<Principal>, ApiError> {
        match body.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| ApiError::bad(format!("{field} must list identity names")))
                        .and_then(|w| find_identity(service, w))
                })
                .collect(),
            Some(_) => Err(ApiError::bad(format!(
                "{field} must be an array of identity names"
            ))),
        }
    };
    let add = ids("add_administrators")?;
    let remove = ids("remove_administrators")?;
    change_vault(service, name, |v| {
        if purge_protection == Some(false) && v.purge_protection {
            return Err(VaultChangeRefused::PurgeProtectionIsPermanent);
        }
        if retention_days.is_some_and(|d| d != v.retention_days) {
            return Err(VaultChangeRefused::RetentionIsFixed {
                days: v.retention_days,
            });
        }
        if let Some(l) = location {
            v.location = l;
        }
        if purge_protection == Some(true) {
            v.purge_protection = true;
        }
        if let Some(a) = allow_rsa1_5 {
            v.allow_rsa1_5 = a;
        }
        for p in &add {
            v.administrators.insert(p.object_id.clone());
        }
        for p in &remove {
            v.administrators.remove(&p.object_id);
        }
        if v.administrators.is_empty() {
            return Err(VaultChangeRefused::NoAdministratorLeft);
        }
        Ok(())
    })
}
