//! The service's main port: token endpoints and the management API for identities,
//! vaults, access policies and the audit trail. Deny by default: service
//! administrators manage identities, create vaults and read the audit trail; only a
//! vault's administrators change its settings and access policies.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};

use super::identity_api::{self, TokenAnswer};
use super::{form_pairs, json_body, read_body, respond, ApiError, AuditScope, Reply};
use crate::audit::AuditFilter;
use crate::identity::{valid_name, Principal, PrincipalKind};
use crate::now_unix;
use crate::policy::{parse_permissions, Permission};
use crate::service::Service;
use crate::vaults::{valid_vault_name, VaultRecord};

/// The main port's router.
pub fn router(service: Arc<Service>) -> Router {
    Router::new().fallback(handle).with_state(service)
}

async fn handle(State(service): State<Arc<Service>>, req: Request) -> Response {
    let segments: Vec<String> = req
        .uri()
        .path()
        .trim_matches('/')
        .split('/')
        .map(String::from)
        .collect();
    let mut scope = AuditScope::begin(&req, "", operation_name(req.method(), &segments));
    let (parts, body) = req.into_parts();
    let response = match read_body(body).await {
        Err(e) => respond(Err(&e), &scope.request_id, &parts.headers),
        Ok(body) => {
            if let Some(answer) = token_request(
                &service,
                &parts.method,
                &segments,
                parts.uri.query(),
                &parts.headers,
                &body,
            ) {
                if let Some(p) = &answer.principal {
                    scope.caller(p);
                }
                let reply = Reply {
                    status: answer.status,
                    body: Some(answer.body),
                };
                respond(Ok(&reply), &scope.request_id, &parts.headers)
            } else {
                let result = manage(
                    &service,
                    &parts.method,
                    &segments,
                    parts.uri.query(),
                    &parts.headers,
                    &body,
                    &mut scope,
                )
                .await;
                respond(result.as_ref(), &scope.request_id, &parts.headers)
            }
        }
    };
    if segments == ["health"] {
        return response;
    }
    scope.finish(&service, response, &parts.headers).await
}

fn operation_name(method: &Method, s: &[String]) -> &'static str {
    let s: Vec<&str> = s.iter().map(String::as_str).collect();
    match (method.as_str(), s.as_slice()) {
        (_, ["msi", "token"]) => "ManagedIdentityToken",
        (_, ["oauth2", "token"] | [_, "oauth2", "v2.0", "token"]) => "ClientCredentialsToken",
        ("POST", ["admin", "identities"]) => "IdentityCreate",
        ("GET", ["admin", "identities"]) => "IdentityList",
        ("GET", ["admin", "identities", _]) => "IdentityGet",
        ("DELETE", ["admin", "identities", _]) => "IdentityDelete",
        ("POST", ["admin", "vaults"]) => "VaultCreate",
        ("GET", ["admin", "vaults"]) => "VaultList",
        ("GET", ["admin", "vaults", _]) => "VaultGet",
        ("PATCH", ["admin", "vaults", _]) => "VaultUpdate",
        ("PUT", ["admin", "vaults", _, "policies", _]) => "SetPolicy",
        ("DELETE", ["admin", "vaults", _, "policies", _]) => "DeletePolicy",
        ("GET", ["admin", "audit"]) => "AuditList",
        ("GET", ["admin", "audit", "verify"]) => "AuditVerify",
        ("GET", ["health"]) => "Health",
        _ => "Unknown",
    }
}

fn token_request(
    service: &Service,
    method: &Method,
    s: &[String],
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<TokenAnswer> {
    let s: Vec<&str> = s.iter().map(String::as_str).collect();
    match (method.as_str(), s.as_slice()) {
        ("GET", ["msi", "token"]) => Some(identity_api::managed_identity(
            service,
            query.unwrap_or_default(),
            headers,
        )),
        ("POST", ["oauth2", "token"] | [_, "oauth2", "v2.0", "token"]) => {
            Some(identity_api::client_credentials(service, body))
        }
        _ => None,
    }
}

fn forbidden(what: &str) -> ApiError {
    ApiError::forbidden(format!("the caller may not {what}")).with_inner("ForbiddenByRole")
}

fn created(body: Value) -> Reply {
    Reply {
        status: StatusCode::CREATED,
        body: Some(body),
    }
}

async fn manage(
    service: &Arc<Service>,
    method: &Method,
    s: &[String],
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    scope: &mut AuditScope,
) -> Result<Reply, ApiError> {
    let s: Vec<&str> = s.iter().map(String::as_str).collect();
    if let ("GET", ["health"]) = (method.as_str(), s.as_slice()) {
        return Ok(Reply::ok(json!({ "status": "ok" })));
    }
    if s.first() != Some(&"admin") {
        return Err(ApiError::not_found(
            "NotFound",
            format!("{method} /{} is not an API of this service", s.join("/")),
        ));
    }
    let caller = service.authenticate(headers, &service.url)?;
    scope.caller(&caller);
    if let Some(v) = s.get(2).filter(|_| s.get(1) == Some(&"vaults")) {
        scope.entry.vault = (*v).to_string();
    }
    let body = json_body(body)?;
    let admin = |what: &str| {
        if caller.service_admin {
            Ok(())
        } else {
            Err(forbidden(what))
        }
    };
    match (method.as_str(), &s[1..]) {
        ("POST", ["identities"]) => {
            admin("create identities (service administrators only)")?;
            create_identity(service, &body).map(created)
        }
        ("GET", ["identities"]) => {
            admin("list identities (service administrators only)")?;
            Ok(Reply::ok(
                json!({ "value": service.directory.list().iter().map(identity_json).collect::<Vec<_>>() }),
            ))
        }
        ("GET", ["identities", x]) => {
            admin("read identities (service administrators only)")?;
            Ok(Reply::ok(identity_json(&find_identity(service, x)?)))
        }
        ("DELETE", ["identities", x]) => {
            admin("delete identities (service administrators only)")?;
            delete_identity(service, &caller, x)
        }
        ("POST", ["vaults"]) => {
            admin("create vaults (service administrators only)")?;
            create_vault(service, &caller, &body).await.map(created)
        }
        ("GET", ["vaults"]) => {
            let visible: Vec<Value> = service
                .vaults
                .list()
                .iter()
                .filter(|v| {
                    caller.service_admin
                        || v.administrators.contains(&caller.object_id)
                        || v.policies.contains_key(&caller.object_id)
                })
                .map(|v| vault_json(service, v))
                .collect();
            Ok(Reply::ok(json!({ "value": visible })))
        }
        ("GET", ["vaults", name]) => {
            let v = vault_for(service, name)?;
            if !(caller.service_admin
                || v.administrators.contains(&caller.object_id)
                || v.policies.contains_key(&caller.object_id))
            {
                return Err(forbidden(&format!("read vault '{name}'")));
            }
            Ok(Reply::ok(vault_json(service, &v)))
        }
        ("PATCH", ["vaults", name]) => {
            vault_admin(service, &caller, name)?;
            update_vault(service, name, &body)
        }
        ("PUT", ["vaults", name, "policies", who]) => {
            vault_admin(service, &caller, name)?;
            let principal = find_identity(service, who)?;
            let names: Vec<String> = match body.get("key_permissions") {
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_str().map(String::from))
                    .collect::<Option<_>>(),
                _ => None,
            }
            .ok_or_else(|| ApiError::bad("key_permissions must be an array of permission names"))?;
            let perms = parse_permissions(&names).map_err(ApiError::bad)?;
            change_vault(service, name, |v| {
                v.policies
                    .insert(principal.object_id.clone(), perms.iter().copied().collect());
                Ok(())
            })
        }
        ("DELETE", ["vaults", name, "policies", who]) => {
            vault_admin(service, &caller, name)?;
            let principal = find_identity(service, who)?;
            change_vault(service, name, |v| {
                v.policies
                    .remove(&principal.object_id)
                    .map(|_| ())
                    .ok_or_else(|| {
                        format!(
                            "vault '{}' has no access policy for '{}'",
                            v.name, principal.name
                        )
                    })
            })
        }
        ("GET", ["audit"]) => {
            admin("read the audit trail (service administrators only)")?;
            list_audit(service, query).await
        }
        ("GET", ["audit", "verify"]) => {
            admin("verify the audit trail (service administrators only)")?;
            let svc = service.clone();
            let outcome = tokio::task::spawn_blocking(move || svc.audit.verify())
                .await
                .map_err(ApiError::internal)??;
            Ok(Reply::ok(match outcome {
                Ok(n) => json!({ "ok": true, "entries": n }),
                Err(b) => json!({ "ok": false, "entry": b.entry, "problem": b.problem }),
            }))
        }
        _ => Err(ApiError::not_found(
            "NotFound",
            format!("{method} /{} is not a management API", s.join("/")),
        )),
    }
}

fn identity_json(p: &Principal) -> Value {
    json!({
        "name": p.name,
        "object_id": p.object_id,
        "client_id": p.client_id,
        "kind": p.kind,
        "service_admin": p.service_admin,
        "created": p.created,
    })
}

fn find_identity(service: &Service, who: &str) -> Result<Principal, ApiError> {
    service.directory.find(who).ok_or_else(|| {
        ApiError::not_found(
            "IdentityNotFound",
            format!(
                "no identity is named or has the id '{who}'; list them with: pgcmk identity list"
            ),
        )
    })
}

fn create_identity(service: &Service, body: &Value) -> Result<Value, ApiError> {
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

fn delete_identity(service: &Service, caller: &Principal, who: &str) -> Result<Reply, ApiError> {
    let target = find_identity(service, who)?;
    if target.object_id == caller.object_id {
        return Err(ApiError::bad("you cannot delete your own identity"));
    }
    service
        .directory
        .delete(&service.store, &target.object_id)?;
    service
        .vaults
        .forget_principal(&service.store, &target.object_id)?;
    Ok(Reply::ok(identity_json(&target)))
}

fn vault_for(service: &Service, name: &str) -> Result<VaultRecord, ApiError> {
    service.vaults.get(name).ok_or_else(|| {
        ApiError::not_found(
            "VaultNotFound",
            format!("no vault is named '{name}'; list them with: pgcmk keyvault list"),
        )
    })
}

fn vault_admin(service: &Service, caller: &Principal, name: &str) -> Result<VaultRecord, ApiError> {
    let v = vault_for(service, name)?;
    if v.administrators.contains(&caller.object_id) {
        Ok(v)
    } else {
        Err(forbidden(&format!(
            "manage vault '{name}': only its administrators may"
        )))
    }
}

fn vault_json(service: &Service, v: &VaultRecord) -> Value {
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

async fn create_vault(
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
        created: now_unix(),
    };
    if !service.vaults.insert(&service.store, record.clone())? {
        return Err(ApiError::conflict(format!(
            "a vault named '{name}' already exists"
        )));
    }
    service.serve_vault(name, listener);
    Ok(vault_json(service, &record))
}

fn change_vault(
    service: &Service,
    name: &str,
    change: impl FnOnce(&mut VaultRecord) -> Result<(), String>,
) -> Result<Reply, ApiError> {
    match service.vaults.update(&service.store, name, change)? {
        None => Err(vault_for(service, name)
            .err()
            .unwrap_or_else(|| ApiError::bad("vault changed concurrently; retry"))),
        Some(Err(msg)) => Err(ApiError::bad(msg)),
        Some(Ok(v)) => Ok(Reply::ok(vault_json(service, &v))),
    }
}

fn update_vault(service: &Service, name: &str, body: &Value) -> Result<Reply, ApiError> {
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
            return Err("purge protection cannot be turned off once it is on".into());
        }
        if retention_days.is_some_and(|d| d != v.retention_days) {
            return Err(format!(
                "retention_days is fixed at creation ({} days)",
                v.retention_days
            ));
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
            return Err("a vault needs at least one administrator".into());
        }
        Ok(())
    })
}

async fn list_audit(service: &Arc<Service>, query: Option<&str>) -> Result<Reply, ApiError> {
    let q = form_pairs(query.unwrap_or_default());
    let get = |k: &str| {
        q.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let limit = match get("limit") {
        None => 1000,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100_000).contains(n))
            .ok_or_else(|| ApiError::bad("limit must be a number from 1 to 100000"))?,
    };
    let filter = AuditFilter {
        vault: get("vault"),
        key: get("key"),
        principal: get("principal"),
        operation: get("operation"),
        since: get("since"),
        until: get("until"),
        result: get("result"),
        limit,
    };
    filter.validate().map_err(ApiError::bad)?;
    let svc = service.clone();
    let entries = tokio::task::spawn_blocking(move || svc.audit.list(&filter))
        .await
        .map_err(ApiError::internal)??;
    Ok(Reply::ok(json!({ "value": entries })))
}
