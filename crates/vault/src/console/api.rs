//! The console's way to the vault: every read and every change is a request to
//! the service's own routes — the management API's, or a vault's data plane —
//! handed to them in process, as the signed-in security officer, with a token the
//! service issues to them for that audience. So the console is authorized, audited
//! and answered by exactly the code that serves `pgcmk` and the Azure SDKs; it has
//! no operation of its own.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use pgcmk_akv_model::ErrorBody;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tower::ServiceExt;

use crate::http::{admin_api, ClientAddr, MAX_BODY_BYTES};
use crate::identity::Principal;
use crate::service::Service;

/// The data-plane API version the console speaks.
const API_VERSION: &str = "7.5";

/// Which routes a request goes to.
#[derive(Clone, Copy, Debug)]
pub(super) enum Target<'a> {
    /// The management API (identities, vaults, policies, audit).
    Manage,
    /// Vault `name`'s keys API.
    Vault(&'a str),
}

/// Why a console request did not succeed: the service's own answer.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(super) struct Refusal {
    /// The HTTP status the API answered.
    pub status: StatusCode,
    /// What the API said, which says what to do.
    pub message: String,
}

impl Refusal {
    fn internal(what: impl std::fmt::Display) -> Self {
        tracing::error!("console: {what}");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "the vault service failed to complete the request; see the service log".into(),
        }
    }
}

impl From<pgcmk_crypto::Error> for Refusal {
    fn from(e: pgcmk_crypto::Error) -> Self {
        Self::internal(e)
    }
}

/// The signed-in security officer, as their requests carry them.
pub(super) struct Caller {
    /// The principal (still existing: looked up on each request).
    pub principal: Principal,
    /// The browser's address, for the audit trail.
    pub client: Option<ClientAddr>,
}

/// Requests to the service's routes, in process.
pub(super) struct InProcess {
    service: Arc<Service>,
}

impl InProcess {
    pub(super) fn new(service: Arc<Service>) -> Self {
        Self { service }
    }

    /// Asks the token endpoint for a management token with `client_id` and
    /// `secret`, as a sign-in: the attempt lands in the audit trail like any other
    /// (`ClientCredentialsToken`, with its outcome). Whether it was granted.
    pub(super) async fn token_granted(
        &self,
        client_id: &str,
        secret: &str,
        client: Option<ClientAddr>,
    ) -> bool {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", &format!("{}/.default", self.service.url)),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", crate::client::urlencode(v)))
        .collect::<Vec<_>>()
        .join("&");
        let Ok(mut request) = Request::builder()
            .method(Method::POST)
            .uri("/oauth2/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form))
        else {
            return false;
        };
        if let Some(client) = client {
            request.extensions_mut().insert(client);
        }
        admin_api::router(self.service.clone())
            .oneshot(request)
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// `GET path` on `target`, its answer read as `T`.
    pub(super) async fn get<T: DeserializeOwned>(
        &self,
        caller: &Caller,
        target: Target<'_>,
        path: &str,
    ) -> Result<T, Refusal> {
        let bytes = self
            .send(caller, Method::GET, target, path, None::<&()>)
            .await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Refusal::internal(format!("GET {path} answered an unexpected body: {e}")))
    }

    /// `method path` on `target` with `body` as JSON; the answer's bytes.
    pub(super) async fn send<B: Serialize>(
        &self,
        caller: &Caller,
        method: Method,
        target: Target<'_>,
        path: &str,
        body: Option<&B>,
    ) -> Result<Vec<u8>, Refusal> {
        let (router, audience, uri) = match target {
            Target::Manage => (
                admin_api::router(self.service.clone()),
                self.service.url.clone(),
                path.to_string(),
            ),
            Target::Vault(name) => {
                let vault = self.service.vaults.get(name).ok_or_else(|| Refusal {
                    status: StatusCode::NOT_FOUND,
                    message: format!("no vault is named '{name}'"),
                })?;
                let joiner = if path.contains('?') { '&' } else { '?' };
                (
                    self.service.vault_router(name),
                    self.service.vault_url(&vault),
                    format!("{path}{joiner}api-version={API_VERSION}"),
                )
            }
        };
        let (token, _) = self.service.issue_token(&caller.principal, &audience);
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(Refusal::internal)?,
            None => Vec::new(),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(bytes))
            .map_err(Refusal::internal)?;
        if let Some(client) = caller.client {
            request.extensions_mut().insert(client);
        }
        let response = router.oneshot(request).await.map_err(Refusal::internal)?;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 64 * MAX_BODY_BYTES)
            .await
            .map_err(Refusal::internal)?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.error.message)
            .unwrap_or_else(|_| format!("the request was refused ({status})"));
        Err(Refusal { status, message })
    }
}
