//! The service's main port: token endpoints and the management API for identities,
//! vaults, access policies and the audit trail. Deny by default: service
//! administrators manage identities, create vaults and read the audit trail; only a
//! vault's administrators change its settings and access policies.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};

use super::admin_identities::{create_identity, delete_identity, find_identity, identity_json};
use super::admin_vaults::{
    change_vault, create_vault, update_vault, vault_admin, vault_for, vault_json,
};
use super::identity_api::{self, TokenAnswer};
use super::{form_pairs, json_body, read_body, respond, ApiError, AuditScope, Reply};
use crate::audit::AuditFilter;
use crate::policy::parse_permissions;
use crate::service::Service;

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
    let mut scope = AuditScope::begin(&req, &service, "", operation_name(req.method(), &segments));
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

pub(super) fn forbidden(what: &str) -> ApiError {
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
    let caller = super::authenticate(service, headers, &service.url)?;
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
