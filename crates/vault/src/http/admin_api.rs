//! The service's main port: token endpoints and the management API for identities,
//! vaults, access policies and the audit trail. Deny by default: each route's role
//! comes from the one table in [`super::admin_route`] — service administrators manage
//! identities, create vaults and read the audit trail; only a vault's administrators
//! change its settings and access policies; a vault's policy holders may read it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};
use tracing::Instrument;

use super::admin_identities::{create_identity, delete_identity, find_identity, identity_json};
use super::admin_route::{authorize, holds, AdminOp, AdminRoute, Role};
use super::admin_vaults::{change_vault, create_vault, update_vault, vault_for, vault_json};
use super::identity_api::{self, TokenAnswer};
use super::{blocking, form_pairs, json_body, read_body, respond, ApiError, AuditScope, Reply};
use crate::audit::AuditFilter;
use crate::policy::parse_permissions;
use crate::service::Service;
use crate::vaults::VaultChangeRefused;

/// The main port's router.
pub fn router(service: Arc<Service>) -> Router {
    Router::new().fallback(handle).with_state(service)
}

async fn handle(State(service): State<Arc<Service>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let route = AdminRoute::parse(req.method().as_str(), &path);
    let operation = route.as_ref().map_or("Unknown", |(r, _)| r.operation);
    let mut scope = AuditScope::begin(&req, &service, "", operation);
    let (parts, body) = req.into_parts();
    let response = match read_body(body).await {
        Err(e) => respond(Err(&e), &scope.request_id, &parts.headers),
        Ok(body) => {
            if let Some(answer) = token_request(
                &service,
                route.as_ref().map(|(r, _)| r.op),
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
                let request = ManageRequest {
                    method: &parts.method,
                    path: &path,
                    query: parts.uri.query(),
                    headers: &parts.headers,
                    body: &body,
                };
                let span =
                    tracing::info_span!("request", request_id = %scope.request_id, operation);
                let result = manage(&service, route, &request, &mut scope)
                    .instrument(span)
                    .await;
                if let Err(e) = &result {
                    scope.failed(e);
                }
                respond(result.as_ref(), &scope.request_id, &parts.headers)
            }
        }
    };
    if path.trim_matches('/') == "health" {
        return response;
    }
    scope.finish(&service, response, &parts.headers).await
}

fn token_request(
    service: &Service,
    op: Option<AdminOp>,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<TokenAnswer> {
    match op? {
        AdminOp::ManagedIdentityToken => Some(identity_api::managed_identity(
            service,
            query.unwrap_or_default(),
            headers,
        )),
        AdminOp::ClientCredentialsToken | AdminOp::ClientCredentialsTokenV2 => {
            Some(identity_api::client_credentials(service, body))
        }
        _ => None,
    }
}

fn created(body: Value) -> Reply {
    Reply {
        status: StatusCode::CREATED,
        body: Some(body),
    }
}

/// The parts of a management request the handlers read.
struct ManageRequest<'a> {
    method: &'a Method,
    path: &'a str,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

async fn manage(
    service: &Arc<Service>,
    route: Option<(&'static AdminRoute, Vec<String>)>,
    request: &ManageRequest<'_>,
    scope: &mut AuditScope,
) -> Result<Reply, ApiError> {
    let (method, path) = (request.method, request.path.trim_matches('/'));
    if route.as_ref().is_some_and(|(r, _)| r.op == AdminOp::Health) {
        return Ok(Reply::ok(json!({ "status": "ok" })));
    }
    let segments: Vec<&str> = path.split('/').collect();
    if segments.first() != Some(&"admin") {
        return Err(ApiError::not_found(
            "NotFound",
            format!("{method} /{path} is not an API of this service"),
        ));
    }
    let caller = scope.authenticate(service, request.headers, &service.url)?;
    if let Some(v) = segments
        .get(2)
        .filter(|_| segments.get(1) == Some(&"vaults"))
    {
        scope.entry.vault = (*v).to_string();
    }
    let body = json_body(request.body)?;
    let Some((route, params)) = route else {
        return Err(ApiError::not_found(
            "NotFound",
            format!("{method} /{path} is not a management API"),
        ));
    };
    let vault = if route.names_vault() {
        Some(vault_for(service, &params[0])?)
    } else {
        None
    };
    authorize(route, &caller, vault.as_ref())
        .map_err(|refusal| ApiError::forbidden(refusal).with_inner("ForbiddenByRole"))?;
    let param = |i: usize| params.get(i).map(String::as_str).unwrap_or_default();
    match route.op {
        AdminOp::CreateIdentity => {
            let made = blocking(service, move |svc| create_identity(svc, &body)).await?;
            scope.entry.target = Some(target_of(
                made["name"].as_str().unwrap_or_default(),
                made["object_id"].as_str().unwrap_or_default(),
            ));
            Ok(created(made))
        }
        AdminOp::ListIdentities => Ok(Reply::ok(
            json!({ "value": service.directory.list().iter().map(identity_json).collect::<Vec<_>>() }),
        )),
        AdminOp::GetIdentity => Ok(Reply::ok(identity_json(&find_identity(service, param(0))?))),
        AdminOp::DeleteIdentity => {
            let target = find_identity(service, param(0))?;
            scope.entry.target = Some(target_of(&target.name, &target.object_id));
            let who = param(0).to_string();
            blocking(service, move |svc| delete_identity(svc, &caller, &who)).await
        }
        AdminOp::CreateVault => create_vault(service, &caller, &body).await.map(created),
        AdminOp::ListVaults => {
            let visible: Vec<Value> = service
                .vaults
                .list()
                .iter()
                .filter(|v| holds(Role::VaultReader, &caller, Some(v)))
                .map(|v| vault_json(service, v))
                .collect();
            Ok(Reply::ok(json!({ "value": visible })))
        }
        AdminOp::GetVault => match &vault {
            Some(v) => Ok(Reply::ok(vault_json(service, v))),
            None => Err(vault_for(service, param(0)).err().unwrap_or_else(|| {
                ApiError::internal("a vault route was parsed without its vault")
            })),
        },
        AdminOp::UpdateVault => {
            let name = param(0).to_string();
            blocking(service, move |svc| update_vault(svc, &name, &body)).await
        }
        AdminOp::SetPolicy => {
            let principal = find_identity(service, param(1))?;
            let names: Vec<String> = match body.get("key_permissions") {
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_str().map(String::from))
                    .collect::<Option<_>>(),
                _ => None,
            }
            .ok_or_else(|| ApiError::bad("key_permissions must be an array of permission names"))?;
            let perms = parse_permissions(&names).map_err(ApiError::bad)?;
            scope.entry.target = Some(target_of(&principal.name, &principal.object_id));
            scope.entry.permissions = Some(perms.iter().map(|p| p.name().to_string()).collect());
            let name = param(0).to_string();
            blocking(service, move |svc| {
                change_vault(svc, &name, |v| {
                    v.policies
                        .insert(principal.object_id.clone(), perms.iter().copied().collect());
                    Ok(())
                })
            })
            .await
        }
        AdminOp::DeletePolicy => {
            let principal = find_identity(service, param(1))?;
            scope.entry.target = Some(target_of(&principal.name, &principal.object_id));
            let name = param(0).to_string();
            blocking(service, move |svc| {
                change_vault(svc, &name, |v| {
                    v.policies
                        .remove(&principal.object_id)
                        .map(|_| ())
                        .ok_or_else(|| VaultChangeRefused::NoSuchPolicy {
                            vault: v.name.clone(),
                            identity: principal.name.clone(),
                        })
                })
            })
            .await
        }
        AdminOp::ListAudit => list_audit(service, request.query).await,
        AdminOp::VerifyAudit => {
            let outcome = blocking(service, |svc| Ok(svc.audit.verify()?)).await?;
            Ok(Reply::ok(match outcome {
                Ok(n) => json!({ "ok": true, "entries": n }),
                Err(b) => json!({ "ok": false, "entry": b.entry, "problem": b.problem }),
            }))
        }
        AdminOp::Health
        | AdminOp::ManagedIdentityToken
        | AdminOp::ClientCredentialsToken
        | AdminOp::ClientCredentialsTokenV2 => Err(ApiError::not_found(
            "NotFound",
            format!("{method} /{path} is answered before authentication"),
        )),
    }
}

/// How an audit entry names the identity a change was about.
fn target_of(name: &str, object_id: &str) -> String {
    format!("{name} ({object_id})")
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
        include_challenges: match get("include_challenges").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ApiError::bad(format!(
                    "include_challenges must be true or false, not '{other}'"
                )))
            }
        },
        limit,
    };
    filter.validate().map_err(ApiError::bad)?;
    let entries = blocking(service, move |svc| Ok(svc.audit.list(&filter)?)).await?;
    Ok(Reply::ok(json!({ "value": entries })))
}
