//! The data-plane listener of one vault: route, authenticate, authorize, run, audit.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{form_pairs, read_body, request_id, respond, ApiError, ClientAddr};
use crate::audit::AuditEntry;
use crate::keys::ops::{self, Ctx, Outcome};
use crate::keys::route::Route;
use crate::now_rfc3339;
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
    let started = Instant::now();
    let request_id = request_id();
    let client = req
        .extensions()
        .get::<ClientAddr>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let (parts, body) = req.into_parts();
    let route = Route::parse(parts.method.as_str(), parts.uri.path());
    let mut entry = AuditEntry {
        vault: ctx.vault.clone(),
        operation: route
            .as_ref()
            .map_or("Unknown", Route::operation)
            .to_string(),
        key: route.as_ref().and_then(Route::key_name).map(String::from),
        version: route.as_ref().and_then(Route::version).map(String::from),
        caller: "anonymous".into(),
        client,
        request_id: request_id.clone(),
        ..AuditEntry::default()
    };
    let result = process(&ctx, route, &parts, body, &mut entry).await;
    let response = respond(
        result.as_ref().map(|o| &o.reply),
        &request_id,
        &parts.headers,
    );
    entry.status = response.status().as_u16();
    entry.result = AuditEntry::result_for(entry.status).into();
    if let Ok(o) = &result {
        entry.version = o.version.clone().or(entry.version);
    }
    entry.time = now_rfc3339();
    entry.duration_us = started.elapsed().as_micros() as u64;
    if let Err(e) = ctx.service.audit.record(entry).await {
        tracing::error!("audit append failed: {e}");
        let failure = ApiError::internal("the audit trail could not be written");
        return respond(Err(&failure), &request_id, &parts.headers);
    }
    response
}

async fn process(
    ctx: &VaultCtx,
    route: Option<Route>,
    parts: &axum::http::request::Parts,
    body: axum::body::Body,
    entry: &mut AuditEntry,
) -> Result<Outcome, ApiError> {
    let vault = ctx.service.vaults.get(&ctx.vault).ok_or_else(|| {
        ApiError::not_found(
            "VaultNotFound",
            format!("vault '{}' no longer exists", ctx.vault),
        )
    })?;
    let url = ctx.service.vault_url(&vault);
    let body = read_body(body).await?;
    let caller = ctx.service.authenticate(&parts.headers, &url)?;
    entry.caller = caller.object_id.clone();
    entry.caller_name = Some(caller.name.clone());
    let route = route.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "{} {} is not a Key Vault keys operation",
                parts.method,
                parts.uri.path()
            ),
        )
    })?;
    let permission = route.permission();
    if !vault.allows(&caller.object_id, permission) {
        return Err(ApiError::forbidden(format!(
            "The user, group or application 'appid={};oid={}' does not have keys {} permission on key vault '{}'. Ask a vault administrator to grant it with: pgcmk keyvault set-policy --name {} --identity {} --key-permissions {}",
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
    let query = form_pairs(parts.uri.query().unwrap_or_default());
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let ctx = Ctx {
            service: &service,
            vault: &vault,
            url,
            query: &query,
        };
        ops::run(&ctx, &route, &body)
    })
    .await
    .map_err(ApiError::internal)?
}
