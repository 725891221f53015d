//! The hosts' routes ([docs/hosts.md](../../../../docs/hosts.md)).
//!
//! | method and path                   | credential | does                          |
//! |-----------------------------------|------------|-------------------------------|
//! | `POST /hosts`                     | DBA        | enroll ([`EnrollHost`]); the host's credential is in this answer only |
//! | `GET /hosts`                      | DBA        | list, with liveness           |
//! | `DELETE /hosts/{name}`            | DBA        | remove: its credential stops working |
//! | `POST /hosts/{name}/register`     | the host's | a daemon start ([`HostReport`]) |
//! | `POST /hosts/{name}/heartbeat`    | the host's | it is alive, its servers' reports ([`HostReport`]); answered with its assignments and tasks |
//! | `POST /hosts/{name}/tasks/{id}`   | the host's | the answer of a task it was handed |
//!
//! A host's routes check its credential and its address themselves (the DBA's
//! credential is no host's), so they sit outside the DBA's middleware.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Extension, Json, Router};
use pgcmk_crypto::SecretBytes;
use pgcmk_hostkeys::listener::PeerAddr;
use serde_json::json;

use crate::assignments::HostReport;
use crate::hosts::{EnrollHost, HostError};
use crate::platform::{AdmittedHost, Platform};
use crate::Error;

use super::{bearer_token, blocking, unauthorized, ApiError, ApiResult};

/// The routes the DBA's credential opens.
pub(super) fn dba_routes() -> Router<Arc<Platform>> {
    Router::new()
        .route("/hosts", post(enroll).get(list))
        .route("/hosts/{name}", delete(remove))
}

/// The routes a host's own credential opens.
pub(super) fn host_routes() -> Router<Arc<Platform>> {
    Router::new()
        .route("/hosts/{name}/{call}", post(host_call))
        .route("/hosts/{name}/tasks/{task_id}", post(task_answer))
}

async fn enroll(
    State(p): State<Arc<Platform>>,
    body: Result<Json<EnrollHost>, JsonRejection>,
) -> ApiResult {
    let Json(req) = body.map_err(|e| {
        ApiError(Error::BadRequest(format!(
            "bad request body: {e}; send {{\"name\": \"h1\", \"address\": \"IP\"}}"
        )))
    })?;
    blocking(p, StatusCode::CREATED, move |p| p.enroll_host(&req)).await
}

async fn list(State(p): State<Arc<Platform>>) -> ApiResult {
    blocking(p, StatusCode::OK, |p| p.hosts()).await
}

async fn remove(State(p): State<Arc<Platform>>, Path(name): Path<String>) -> ApiResult {
    blocking(p, StatusCode::OK, move |p| {
        p.remove_host(&name)?;
        Ok(json!({ "removed": name }))
    })
    .await
}

/// Which of a host's two calls a request is (the last segment of its path).
#[derive(Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum HostCall {
    Register,
    Heartbeat,
}

/// A host's call: checks the host's credential before it looks at the body, so
/// that an unauthenticated caller learns nothing from the body's errors.
async fn host_call(
    State(p): State<Arc<Platform>>,
    Extension(peer): Extension<PeerAddr>,
    Path((name, call)): Path<(String, HostCall)>,
    headers: HeaderMap,
    body: Result<Json<HostReport>, JsonRejection>,
) -> Response {
    as_host(p, peer, &headers, name, move |p, host| {
        let Json(hello) = body.map_err(|e| {
            Error::BadRequest(format!(
                "bad request body: {e}; send {{\"instance\": \"NAME\"}}"
            ))
        })?;
        match call {
            HostCall::Register => p.register_host(&host, &hello),
            HostCall::Heartbeat => p.host_heartbeat(&host, &hello),
        }
    })
    .await
}

/// A host posts the one JSON answer of a task it was handed (the run's stdout,
/// as the plane's `TaskAnswer` of that task).
async fn task_answer(
    State(p): State<Arc<Platform>>,
    Extension(peer): Extension<PeerAddr>,
    Path((name, task_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    as_host(p, peer, &headers, name, move |p, host| {
        p.host_task_answer(&host, &task_id, &body)?;
        Ok(json!({ "taken": task_id }))
    })
    .await
}

/// Runs `call` for host `name` once its credential, presented from its enrolled
/// address, is checked; every refusal is the one 401.
async fn as_host<T: serde::Serialize + Send + 'static>(
    p: Arc<Platform>,
    peer: PeerAddr,
    headers: &HeaderMap,
    name: String,
    call: impl FnOnce(&Platform, AdmittedHost) -> Result<T, Error> + Send + 'static,
) -> Response {
    let token = bearer_token(headers).map(|t| SecretBytes::new(t.to_vec()));
    let result = blocking(p, StatusCode::OK, move |p| {
        let host = p.admit_host(
            &name,
            token.as_ref().map(SecretBytes::expose_secret),
            peer.0.ip(),
        )?;
        call(p, host)
    })
    .await;
    match result {
        Ok(response) => response,
        Err(ApiError(Error::Host(HostError::Denied))) => {
            unauthorized(Error::Host(HostError::Denied))
        }
        Err(e) => e.into_response(),
    }
}
