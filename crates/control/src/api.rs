//! The control plane's REST API (`pgcmk serve`), over HTTPS on loopback with the
//! control plane's own local CA ([`crate::api_tls`]). Each handler runs the
//! blocking [`Platform`] operation on the blocking pool.
//!
//! Every `/servers` route needs the DBA's credential ([`crate::auth`]) as
//! `Authorization: Bearer TOKEN`; without it, or with a wrong one, the answer is
//! 401 and nothing is read or changed. Only `GET /healthz` is open.
//!
//! | method and path                          | does                              |
//! |------------------------------------------|-----------------------------------|
//! | `POST /servers`                          | create (body: [`CreateServer`])   |
//! | `GET /servers`                           | list                              |
//! | `GET /servers/{name}`                    | show, with its events             |
//! | `DELETE /servers/{name}`                 | delete                            |
//! | `POST /servers/{name}/stop`, `/start`    | stop, start                       |
//! | `POST /servers/{name}/revalidate`        | check the key now                 |
//! | `PUT /servers/{name}/key`                | move to another key (`{"key"}`)   |
//! | `PUT /servers/{name}/listen-addresses`   | listen elsewhere (`{"listen_addresses": [..]}`) |
//! | `PUT /servers/{name}/backup-settings`    | retention, schedule ([`BackupSettingsChange`]) |
//! | `GET /servers/{name}/connection-string`  | libpq URI                         |
//! | `POST /servers/{name}/replicas`          | new read replica ([`CreateReplica`]) |
//! | `GET /servers/{name}/replicas`           | its read replicas                 |
//! | `POST /servers/{name}/promote`           | a replica becomes independent     |
//! | `GET /servers/{name}/logs`               | logs ([`LogsQuery`]), NDJSON      |
//! | `POST /servers/{name}/fsck`              | check a stopped server's volume   |
//! | `POST /servers/{name}/reset-password`    | new superuser password, shown once|
//! | `POST /servers/{name}/restore`           | new server from its backups ([`RestoreServer`]) |
//! | `GET /servers/{name}/backups`            | backups and archived WAL          |
//! | `POST /servers/{name}/backups`           | take one ([`CreateBackup`])       |
//! | `GET /servers/{name}/backups/{label}`    | one backup                        |
//! | `POST /servers/{name}/backups/verify`    | verify backups and archived WAL ([`VerifyBackups`]) |
//! | `GET /servers/{name}/backups/keys`       | KEK versions the backups need     |
//! | `GET /servers/{name}/backups/progress`   | backups running now, with their progress |
//! | `/hosts...` (DBA's or a host's credential) | enroll hosts, hear from them (`api/hosts.rs`) |
//! | `GET /healthz` (no credential)           | `{"status": "ok"}`                |
//! | `/console/...` (its own sign-in)         | the DBA console ([`crate::console`]) |
//!
//! Errors are [`ApiErrorBody`]: `{"error": {"code", "message"}}`, with the status
//! and stable code of the [`Error`] variant ([`Error::status`], [`Error::code`]):
//!
//! | code                  | status | when                                                  |
//! |-----------------------|--------|-------------------------------------------------------|
//! | `BadRequest`          | 400    | malformed request, invalid name/location/key          |
//! | `KeyAccessDenied`     | 400    | the key or identity is refused (not retryable)        |
//! | `Unauthorized`        | 401    | no or wrong DBA credential                            |
//! | `NotFound`            | 404    | no such server                                        |
//! | `NameTaken`           | 409    | a server of that name exists or is being created      |
//! | `StateConflict`       | 409    | already stopped, being deleted, running, not running, |
//! |                       |        | not Ready (for a password reset)                      |
//! | `NotReady`            | 409    | created/started, but settled in another state         |
//! | `KeyVersionRefused`   | 409    | the vault refuses a key version the server needs      |
//! | `InternalError`       | 500    | storage, files, processes                             |
//! | `KeyVaultUnavailable` | 503    | the vault is unreachable or failing (retry)           |
//! | `ReadyTimeout`        | 504    | not Ready within the time allowed                     |

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use pgcmk_agent::contract::backup::BackupKind;

use crate::model::ServerDetails;
use crate::platform::{
    BackupSettingsChange, CreateBackup, CreateReplica, CreateServer, FailoverRequest,
    GeoBackupChange, HighAvailabilityChange, LogStreamItem, Platform, RestoreServer, VerifyBackups,
};
use crate::{Error, ErrorCode};

mod hosts;

/// How often agents' reports are taken in.
const SUPERVISE_EVERY: Duration = Duration::from_millis(200);
/// How often the vault service's `service.json` is re-read, to follow it when it moved.
const FOLLOW_VAULT_EVERY: Duration = Duration::from_secs(2);

/// The routes over `platform`.
pub fn router(platform: Arc<Platform>) -> Router {
    Router::new()
        .route("/servers", post(create).get(list))
        .route("/servers/{name}/restore", post(restore))
        .route("/servers/{name}", get(show).delete(delete))
        .route("/servers/{name}/stop", post(stop))
        .route("/servers/{name}/start", post(start))
        .route("/servers/{name}/revalidate", post(revalidate))
        .route("/servers/{name}/failover", post(failover))
        .route("/servers/{name}/key", put(update_key))
        .route("/servers/{name}/geo-backup", put(update_geo_backup))
        .route(
            "/servers/{name}/backup-settings",
            put(update_backup_settings),
        )
        .route(
            "/servers/{name}/high-availability",
            put(update_high_availability),
        )
        .route(
            "/servers/{name}/listen-addresses",
            put(update_listen_addresses),
        )
        .route("/servers/{name}/connection-string", get(connection_string))
        .route(
            "/servers/{name}/replicas",
            post(create_replica).get(list_replicas),
        )
        .route("/servers/{name}/promote", post(promote))
        .route("/servers/{name}/logs", get(logs))
        .route("/servers/{name}/fsck", post(fsck))
        .route("/servers/{name}/reset-password", post(reset_password))
        .route(
            "/servers/{name}/backups",
            get(list_backups).post(create_backup),
        )
        .route("/servers/{name}/backups/verify", post(verify_backups))
        .route("/servers/{name}/backups/keys", get(backup_keys))
        .route("/servers/{name}/backups/progress", get(backup_progress))
        .route("/servers/{name}/backups/{label}", get(show_backup))
        .merge(hosts::dba_routes())
        .route_layer(middleware::from_fn_with_state(
            platform.clone(),
            require_dba,
        ))
        .route("/healthz", get(healthz))
        .merge(hosts::host_routes())
        .with_state(platform.clone())
        .merge(crate::console::router(platform))
        .layer(middleware::from_fn(crate::api_metrics::observe))
}

/// Lets the request through only with the DBA's credential.
async fn require_dba(State(p): State<Arc<Platform>>, request: Request, next: Next) -> Response {
    let refusal = match bearer_token(request.headers()) {
        Some(token) if p.dba_allows(token) => return next.run(request).await,
        Some(_) => {
            "the DBA credential is not valid: use the dba.credential file that \
                    `pgcmk serve` wrote in its state directory on first start"
        }
        None => {
            "this request needs the DBA credential: send `Authorization: Bearer TOKEN` \
                 (`pgcmk server` reads it from --credential-file or PGCMK_CONTROL_CREDENTIALS)"
        }
    };
    unauthorized(Error::Unauthorized(refusal.into()))
}

/// The token of an `Authorization: Bearer TOKEN` header, if there is one.
fn bearer_token(headers: &header::HeaderMap) -> Option<&[u8]> {
    // The scheme is case-insensitive (RFC 9110); the token is not.
    headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(|v| v.split_at_checked(7))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|(_, token)| token)
}

/// A 401 answer for `error`, naming the scheme the credential goes in.
fn unauthorized(error: Error) -> Response {
    let mut response = ApiError(error).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Serves the API over HTTPS on `listener` and supervises agents until `shutdown`
/// resolves; every key-check interval, servers that are not running adopt their
/// key's current version. Agents keep running afterwards; the next `pgcmk serve`
/// re-attaches to them.
pub async fn serve(
    platform: Arc<Platform>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let supervisor = {
        let platform = platform.clone();
        tokio::spawn(async move {
            loop {
                let p = platform.clone();
                let _ = tokio::task::spawn_blocking(move || p.supervise_once()).await;
                tokio::time::sleep(SUPERVISE_EVERY).await;
            }
        })
    };
    let vault_follower = tokio::spawn(follow_vault_service(platform.clone()));
    let rotation = {
        let platform = platform.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(platform.key_check_interval());
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let p = platform.clone();
                let _ = tokio::task::spawn_blocking(move || p.adopt_key_versions_of_idle_servers())
                    .await;
            }
        })
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signal = tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let tls = platform.tls_config();
    pgcmk_hostkeys::listener::serve(listener, tls, router(platform), stopped).await;
    signal.abort();
    supervisor.abort();
    vault_follower.abort();
    rotation.abort();
}

/// Hands agents the vault service's address when it moved, every
/// [`FOLLOW_VAULT_EVERY`]; a failure is logged when it starts and when it ends.
async fn follow_vault_service(platform: Arc<Platform>) {
    let mut failing = None;
    loop {
        let p = platform.clone();
        let result = tokio::task::spawn_blocking(move || p.follow_vault_service())
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match (result, &failing) {
            (Err(e), _) if failing.as_ref() != Some(&e) => {
                tracing::warn!("following the vault service's address: {e}");
                failing = Some(e);
            }
            (Ok(()), Some(_)) => {
                tracing::info!("following the vault service's address again");
                failing = None;
            }
            _ => {}
        }
        tokio::time::sleep(FOLLOW_VAULT_EVERY).await;
    }
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// What went wrong.
    pub error: ApiErrorDetail,
}

/// An error's code and message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorDetail {
    /// A stable code, e.g. `NotFound`, `KeyVersionRefused`.
    pub code: ErrorCode,
    /// What happened and what to do.
    pub message: String,
}

struct ApiError(Error);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ApiErrorBody {
            error: ApiErrorDetail {
                code: self.0.code(),
                message: self.0.to_string(),
            },
        };
        (status, Json(body)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// Runs `op` on the blocking pool and renders its result as JSON with `status`.
async fn blocking<T: serde::Serialize + Send + 'static>(
    platform: Arc<Platform>,
    status: StatusCode,
    op: impl FnOnce(&Platform) -> Result<T, Error> + Send + 'static,
) -> ApiResult {
    // The request's span (its id) goes along to the blocking thread's log lines.
    let span = tracing::Span::current();
    let value = tokio::task::spawn_blocking(move || span.in_scope(|| op(&platform)))
        .await
        .map_err(|e| ApiError(Error::Aborted(e.to_string())))?
        .map_err(ApiError)?;
    Ok((status, Json(value)).into_response())
}

async fn create(
    State(p): State<Arc<Platform>>,
    body: Result<Json<CreateServer>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(req) =
        body.map_err(|e| ApiError(Error::BadRequest(format!("bad request body: {e}"))))?;
    blocking(p, StatusCode::CREATED, move |p| p.create(&req)).await
}

async fn list(State(p): State<Arc<Platform>>) -> ApiResult {
    blocking(p, StatusCode::OK, |p| p.list()).await
}

async fn show(State(p): State<Arc<Platform>>, Path(name): Path<String>) -> ApiResult {
    blocking(p, StatusCode::OK, move |p| {
        let (server, events) = p.show(&name)?;
        let nodes = p.node_details(&server)?;
        let connection_string = p.connection_string(&server.id)?;
        Ok(ServerDetails {
            server,
            events,
            connection_string,
            nodes,
        })
    })
    .await
}

async fn delete(State(p): State<Arc<Platform>>, Path(name): Path<String>) -> ApiResult {
    blocking(p, StatusCode::OK, move |p| {
        p.delete(&name)?;
        Ok(json!({ "deleted": name }))
    })
    .await
}

async fn stop(State(p): State<Arc<Platform>>, Path(name): Path<String>) -> ApiResult {
    blocking(p, StatusCode::OK, move |p| p.stop(&name)).await
}

async fn start(State(p): State<Arc<Platform>>, Path(name): Path<String>) -> ApiResult {
    blocking(p, StatusCode::OK, move |p| p.start(&name)).await
}

async fn revalidate(State(p): State<Arc<Platform>>, Path(name): Path<String>) -> ApiResult {
    blocking(p, StatusCode::ACCEPTED, move |p| p.revalidate(&name)).await
}

async fn failover(
    State(p): State<Arc<Platform>>,
    Path(name): Path<String>,
    body: Result<Json<FailoverRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(req) =
        body.map_err(|e| ApiError(Error::BadRequest(format!("bad request body: {e}"))))?;
    blocking(p, StatusCode::OK, move |p| {
        let primary = p.failover(&name, req.planned)?;
        Ok(json!({ "server": name, "primary": primary }))
    })
    .await
}

#[derive(Deserialize)]
struct KeyChange {
    key: String,
}

async fn update_key(
    State(p): State<Arc<Platform>>,
    Path(name): Path<String>,
    body: Result<Json<KeyChange>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(change) = body.map_err(|e| {
        ApiError(Error::BadRequest(format!(
            "bad request body: {e}; expected {{\"key\": \"KEY_URL\"}}"
        )))
    })?;
    blocking(p, StatusCode::OK, move |p| p.update_key(&name, &change.key)).await
}

async fn update_geo_backup(
    State(p): State<Arc<Platform>>,
    Path(name): Path<String>,
    body: Result<Json<GeoBackupChange>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(change) = body.map_err(|e| {
        ApiError(Error::BadRequest(format!(
            "bad request body: {e}; expected {{\"geo_backup\": {{\"key\", \"identity\", \
             \"identity_secret\"}}}} to add a copy, or {{\"geo_backup\": null}} to remove it"
        )))
    })?;
    blocking(p, StatusCode::OK, move |p| {
        p.update_geo_backup(&name, &change)
    })
    .await
}

async fn update_backup_settings(
    State(p): State<Arc<Platform>>,
    Path(name): Path<String>,
    body: Result<Json<BackupSettingsChange>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(change) = body.map_err(|e| {
        ApiError(Error::BadRequest(format!(
            "bad request body: {e}; expected {{\"backup_retention_days\": N, \
             \"full_backup_every_hours\": N, \"diff_backup_every_hours\": N}} (at least one)"
        )))
    })?;
    blocking(p, StatusCode::OK, move |p| {
        p.update_backup_settings(&name, &change)
    })
    .await
}

async fn update_high_availability(
    State(p): State<Arc<Platform>>,
    Path(name): Path<String>,
    body: Result<Json<HighAvailabilityChange>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(change) = body.map_err(|e| {
        ApiError(Error::BadRequest(format!(
            "bad request body: {e}; expected {{\"high_availability\": \"enabled\"}} or \
             \"disabled\""
        )))
    })?;
    blocking(p, StatusCode::OK, move |p| {
        p.update_high_availability(&name, change.high_availability)
    })
    .await
}

/// The body of `PUT /servers/{name}/listen-addresses`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListenAddresses {
    /// IP addresses of this host (none: 127.0.0.1).
    pub listen_addresses: Vec<String>,
}

async fn update_listen_addresses(
    State(p): State<Arc<Platform>>,
    Path(name): Path<String>,
    body: Result<Json<ListenAddresses>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(change) = body.map_err(|e| {
        ApiError(Error::BadRequest(format!(
            "bad request body: {e}; expected {{\"listen_addresses\": [\"IP\", ...]}}"
        )))
    })?;
    blocking(p, StatusCode::OK, move |p| {
        p.update_listen_addresses(&name, &change.listen_addresses)
    })
    .await
}

async fn create_replica(
    State(p): State<Arc<Platform>>,
    Path(source): Path<String>,
    body: Result<Json<CreateReplica>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(req) = body.map_err(|e| {
        ApiError(Error::BadRequest(format!(
            "bad request body: {e}; expected {{\"name\": ..., \"location\": ..., \"key\": ...}}"
        )))
    })?;
    blocking(p, StatusCode::CREATED, move |p| {
        p.create_replica(&source, &req)
    })
    .await
}

async fn list_replicas(State(p): State<Arc<Platform>>, Path(source): Path<String>) -> ApiResult {
    blocking(p, StatusCode::OK, move |p| p.replicas_of(&source)).await
}

async fn promote(State(p): State<Arc<Platform>>, Path(name): Path<String>) -> ApiResult {
    blocking(p, StatusCode::OK, move |p| p.promote(&name)).await
}

async fn connection_string(State(p): State<Arc<Platform>>, Path(name): Path<String>) -> ApiResult {
    blocking(p, StatusCode::OK, move |p| {
        Ok::<Value, Error>(json!({ "connection_string": p.connection_string(&name)? }))
    })
    .await
}

/// The query of `GET /servers/{name}/logs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsQuery {
    /// Lines of each log to start with.
    #[serde(default = "LogsQuery::default_lines")]
    pub lines: usize,
    /// Keep the answer open and send lines as they are written (while the server serves).
    #[serde(default)]
    pub follow: bool,
}

impl LogsQuery {
    /// Lines of each log unless asked otherwise.
    pub const DEFAULT_LINES: usize = 100;

    fn default_lines() -> usize {
        Self::DEFAULT_LINES
    }
}

/// Streams the records of a short-lived agent run as `application/x-ndjson` (an
/// empty line now and then while following an idle log); the run ends when the
/// client goes away.
async fn logs(
    State(p): State<Arc<Platform>>,
    Path(name): Path<String>,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(query) = query.map_err(|e| {
        ApiError(Error::BadRequest(format!(
            "bad query: {e}; expected ?lines=N&follow=true|false"
        )))
    })?;
    let stream = tokio::task::spawn_blocking(move || p.logs(&name, query.lines, query.follow))
        .await
        .map_err(|e| ApiError(Error::Aborted(e.to_string())))?
        .map_err(ApiError)?;
    let stopper = stream.stopper();
    // Dropped with the body: the client went away, or everything was sent.
    let (body_gone, gone) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = gone.await;
        stopper.stop();
    });
    let (lines, mut received) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    tokio::task::spawn_blocking(move || {
        for item in stream {
            let line = match item {
                LogStreamItem::Record(record) => match serde_json::to_vec(&record) {
                    Ok(mut line) => {
                        line.push(b'\n');
                        line
                    }
                    Err(_) => continue,
                },
                LogStreamItem::KeepAlive => b"\n".to_vec(),
            };
            if lines.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let body = futures_util::stream::poll_fn(move |cx| {
        let _alive = &body_gone;
        received
            .poll_recv(cx)
            .map(|line| line.map(Ok::<_, std::convert::Infallible>))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response())
}

async fn fsck(State(p): State<Arc<Platform>>, Path(name): Path<String>) -> ApiResult {
    blocking(p, StatusCode::OK, move |p| p.fsck(&name)).await
}

async fn reset_password(State(p): State<Arc<Platform>>, Path(name): Path<String>) -> ApiResult {
    blocking(p, StatusCode::OK, move |p| p.reset_password(&name)).await
}

async fn list_backups(State(p): State<Arc<Platform>>, Path(name): Path<String>) -> ApiResult {
    blocking(p, StatusCode::OK, move |p| p.list_backups(&name)).await
}

async fn show_backup(
    State(p): State<Arc<Platform>>,
    Path((name, label)): Path<(String, String)>,
) -> ApiResult {
    blocking(p, StatusCode::OK, move |p| p.show_backup(&name, &label)).await
}

async fn create_backup(
    State(p): State<Arc<Platform>>,
    Path(name): Path<String>,
    body: Result<Json<CreateBackup>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(req) = body.map_err(|e| {
        ApiError(Error::BadRequest(format!(
            "bad request body: {e}; expected {{\"type\": \"full\"|\"diff\"|\"incr\"}}"
        )))
    })?;
    let kind = req.kind.unwrap_or(BackupKind::Full);
    let repository = req.repository().map_err(ApiError)?;
    blocking(p, StatusCode::CREATED, move |p| {
        p.create_backup(&name, kind, repository)
    })
    .await
}

async fn verify_backups(
    State(p): State<Arc<Platform>>,
    Path(name): Path<String>,
    query: Result<Query<VerifyBackups>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(req) = query.map_err(|e| {
        ApiError(Error::BadRequest(format!(
            "bad query: {e}; expected ?repository=1 or ?repository=2"
        )))
    })?;
    let repository = req.repository().map_err(ApiError)?;
    blocking(p, StatusCode::OK, move |p| {
        p.verify_backups(&name, repository)
    })
    .await
}

async fn restore(
    State(p): State<Arc<Platform>>,
    Path(source): Path<String>,
    body: Result<Json<RestoreServer>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(req) =
        body.map_err(|e| ApiError(Error::BadRequest(format!("bad request body: {e}"))))?;
    blocking(p, StatusCode::CREATED, move |p| p.restore(&source, &req)).await
}

async fn backup_keys(State(p): State<Arc<Platform>>, Path(name): Path<String>) -> ApiResult {
    blocking(p, StatusCode::OK, move |p| p.backup_keys(&name)).await
}

async fn backup_progress(State(p): State<Arc<Platform>>, Path(name): Path<String>) -> ApiResult {
    blocking(p, StatusCode::OK, move |p| p.backup_progress(&name)).await
}
