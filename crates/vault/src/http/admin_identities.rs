//! Management API: identities.

use serde_json::{json, Value};

use super::{ApiError, Reply};
use crate::identity::{valid_name, Principal, PrincipalKind};
use crate::service::Service;

pub(super) fn identity_json(p: &Principal) -> Value {
    json!({
        "name": p.name,
        "object_id": p.object_id,
        "client_id": p.client_id,
        "kind": p.kind,
        "service_admin": p.service_admin,
        "created": p.created,
    })
}

pub(super) fn find_identity(service: &Service, who: &str) -> Result<Principal, ApiError> {
    service.directory.find(who).ok_or_else(|| {
        ApiError::not_found(
            "IdentityNotFound",
            format!(
                "no identity is named or has the id '{who}'; list them with: pgcmk identity list"
            ),
        )
    })
}

pub(super) fn create_identity(service: &Service, body: &Value) -> Result<Value, ApiError> {
    let name = body.get("name").and_then(Value::as_str).unwrap_or_default();
    if !valid_name(name) {
        return Err(ApiError::bad(format!(
            "identity name '{name}' is invalid: use 1-64 letters, digits and dashes"
        )));
    }
    let kind = match body
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("managed")
    {
        "managed" => PrincipalKind::Managed,
        "user" => PrincipalKind::User,
        other => {
            return Err(ApiError::bad(format!(
                "kind must be 'managed' or 'user', not '{other}'"
            )))
        }
    };
    let service_admin = match body.get("service_admin") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) if !*b || kind == PrincipalKind::User => *b,
        _ => {
            return Err(ApiError::bad(
                "service_admin must be a boolean, and only users can be service administrators",
            ))
        }
    };
    if service.directory.find(name).is_some() {
        return Err(ApiError::conflict(format!(
            "an identity named '{name}' already exists"
        )));
    }
    let credential = service
        .directory
        .create(&service.store, name, kind, service_admin)?;
    serde_json::to_value(&credential).map_err(ApiError::internal)
}

pub(super) fn delete_identity(
    service: &Service,
    caller: &Principal,
    who: &str,
) -> Result<Reply, ApiError> {
    let target = find_identity(service, who)?;
    if target.object_id == caller.object_id {
        return Err(ApiError::bad("you cannot delete your own identity"));
    }
    let sole = service
        .vaults
        .list()
        .into_iter()
        .find(|v| v.administrators.len() == 1 && v.administrators.contains(&target.object_id));
    if let Some(v) = sole {
        return Err(ApiError::conflict(format!(
            "'{}' is the only administrator of vault '{}': add another with `pgcmk keyvault update {} --add-administrators NAME` first",
            target.name, v.name, v.name
        )));
    }
    service
        .directory
        .delete(&service.store, &target.object_id)?;
    service
        .vaults
        .forget_principal(&service.store, &target.object_id)?;
    Ok(Reply::ok(identity_json(&target)))
}
