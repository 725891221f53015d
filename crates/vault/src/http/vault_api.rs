//! The data-plane listener of one vault: route, authenticate, authorize, run, audit.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use tracing::Instrument;

use super::{form_pairs, form_value, read_body, respond, ApiError, AuditScope, Reply};
use crate::keys::listing::ListQuery;
use crate::keys::ops::{self, Ctx, Outcome};
use crate::keys::route::Route;
use crate::service::Service;

/// State of one vault's router.
#[derive(Clone)]
pub struct VaultCtx {
    /// The service.
    pub service: Arc<Service>,
    /// The vault this listener serves.
    pub vault: String,
}

/// Handles every request to a vault's base URL.
pub async fn handle(State(ctx): State<VaultCtx>, req: Request) -> Response {
    let route = Route::parse(req.method().as_str(), req.uri().path());
    let operation = route.as_ref().map_or("Unknown", Route::operation);
    let mut scope = AuditScope::begin(&req, &ctx.service, &ctx.vault, operation);
    // Names as the caller sent them, but only in their valid form: an entry costs the
    // same whatever the URL (a 60 KB "key name" from an anonymous client is noted
    // by its length, not stored).
    scope.entry.key = route.as_ref().and_then(Route::key_name).map(audited_name);
    scope.entry.version = route.as_ref().and_then(Route::version).map(audited_version);
    let (parts, body) = req.into_parts();
    // Log lines of the request carry its id (the one in x-ms-request-id and the audit trail).
    let span = tracing::info_span!("request", request_id = %scope.request_id, operation);
    let result = process(&ctx, route, &parts, body, &mut scope)
        .instrument(span)
        .await
        .map(|outcome| {
            if let Some(v) = outcome.version {
                scope.entry.version = Some(v);
            }
            match outcome.body {
                Some(body) => Reply::ok(body),
                None => Reply {
                    status: StatusCode::NO_CONTENT,
                    body: None,
                },
            }
        });
    if let Err(e) = &result {
        scope.failed(e);
    }
    let response = respond(result.as_ref(), &scope.request_id, &parts.headers);
    scope.finish(&ctx.service, response, &parts.headers).await
}

/// A key name for the audit trail: itself when valid (1-127 letters, digits and
/// dashes), else a note of its length.
fn audited_name(name: &str) -> String {
    match crate::keys::request::check_key_name(name) {
        Ok(()) => name.to_string(),
        Err(_) => format!("(invalid name of {} bytes)", name.len()),
    }
}

/// A key version for the audit trail: itself when it is 32 hex digits, else a note.
fn audited_version(version: &str) -> String {
    if version.len() == 32 && version.bytes().all(|b| b.is_ascii_hexdigit()) {
        version.to_string()
    } else {
        format!("(invalid version of {} bytes)", version.len())
    }
}

async fn process(
    ctx: &VaultCtx,
    route: Option<Route>,
    parts: &axum::http::request::Parts,
    body: axum::body::Body,
    scope: &mut AuditScope,
) -> Result<Outcome, ApiError> {
    let vault = ctx.service.vaults.get(&ctx.vault).ok_or_else(|| {
        ApiError::not_found(
            "VaultNotFound",
            format!("vault '{}' no longer exists", ctx.vault),
        )
    })?;
    let url = ctx.service.vault_url(&vault);
    if form_value(
        &form_pairs(parts.uri.query().unwrap_or_default()),
        "api-version",
    )
    .is_none()
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "the api-version query parameter is missing: add api-version=7.5 (or another \
             Key Vault keys API version) to the query",
        ));
    }
    // The caller first: the body of a request that does not authenticate is never read.
    let caller = scope.authenticate(&ctx.service, &parts.headers, &url)?;
    let body = read_body(body).await?;
    let route = route.ok_or_else(|| {
        let (method, path) = (parts.method.as_str(), parts.uri.path());
        let message = match Route::not_offered(method, path) {
            Some(why) => format!("{method} {path} is not offered by this vault: {why}"),
            None => format!("{method} {path} is not a Key Vault keys operation"),
        };
        ApiError::new(StatusCode::NOT_FOUND, "NotFound", message)
    })?;
    let permission = route.permission();
    if !vault.allows(&caller.object_id, permission) {
        return Err(ApiError::forbidden(format!(
            "The user, group or application '{}' (appid={};oid={}) does not have keys {} permission on key vault '{}'. Ask a vault administrator to grant it with: pgcmk keyvault set-policy {} --identity {} --key-permissions {}",
            caller.name,
            caller.client_id,
            caller.object_id,
            permission.name(),
            vault.name,
            vault.name,
            caller.name,
            permission.name()
        ))
        .with_inner("ForbiddenByPolicy"));
    }
    let Ok(permit) = ctx.service.in_flight.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Throttled",
            "Request was not processed because too many requests are in flight; retry after a short wait",
        ));
    };
    let service = ctx.service.clone();
    let pairs = form_pairs(parts.uri.query().unwrap_or_default());
    let param = |name: &str| form_value(&pairs, name).map(String::from);
    let query = ListQuery {
        max_results: param("maxresults"),
        skip_token: param("$skiptoken"),
        api_version: param("api-version"),
    };
    // Crypto operations queue for the per-core pool; the rest (key generation, which
    // can take a second, and storage-only work) must not hold up that queue.
    let in_pool = matches!(route, Route::Crypto(..));
    let intent = scope.entry.clone();
    let job = move || {
        let _permit = permit;
        let ctx = Ctx {
            service: &service,
            vault: &vault,
            url,
            query: &query,
            audit: Some(&intent),
        };
        ops::run(&ctx, &route, &body).map_err(ApiError::from)
    };
    if in_pool {
        ctx.service
            .crypto_pool
            .run(job)
            .await
            .ok_or_else(|| ApiError::internal("a crypto worker failed"))?
    } else {
        tokio::task::spawn_blocking(job)
            .await
            .map_err(ApiError::internal)?
    }
}
