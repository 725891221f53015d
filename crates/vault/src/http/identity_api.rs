//! Token endpoints: the App Service managed-identity protocol and OAuth2 client
//! credentials. Their errors use OAuth2's shape (`error`, `error_description`).

use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use super::{form_pairs, form_value};
use crate::identity::Principal;
use crate::service::Service;

/// A token endpoint's answer and who it was for (for the audit trail).
pub struct TokenAnswer {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: Value,
    /// The authenticated principal, if any.
    pub principal: Option<Principal>,
}

fn oauth_error(status: StatusCode, error: &str, description: impl Into<String>) -> TokenAnswer {
    // MSAL-style clients parse these too: no escape sequences (see `error_text`).
    let description = super::error_text::without_json_escapes(&description.into());
    TokenAnswer {
        status,
        // statusCode/message are what MSAL reports for managed-identity failures.
        body: json!({ "error": error, "error_description": description, "statusCode": status.as_u16(), "message": description }),
        principal: None,
    }
}

/// The audience a requested resource or scope names: the service URL or a vault URL.
fn audience(service: &Service, resource: &str) -> Option<String> {
    let r = resource.trim();
    let r = r
        .strip_suffix("/.default")
        .unwrap_or(r)
        .trim_end_matches('/');
    if r == service.url {
        return Some(r.to_string());
    }
    service.vault_for_resource(r).map(|v| service.vault_url(&v))
}

fn unknown_resource(resource: &str) -> TokenAnswer {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_resource",
        format!("resource '{resource}' is neither this service's URL nor a vault's base URL"),
    )
}

/// `GET /msi/token?api-version=2019-08-01&resource=…[&client_id=…|&object_id=…]`
/// with the `X-IDENTITY-HEADER` secret.
pub fn managed_identity(service: &Service, query: &str, headers: &HeaderMap) -> TokenAnswer {
    let q = form_pairs(query);
    let Some(secret) = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok())
    else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "the X-IDENTITY-HEADER header is required",
        );
    };
    if form_value(&q, "api-version").is_none() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "api-version is required (use 2019-08-01)",
        );
    }
    let Some(resource) = form_value(&q, "resource").filter(|r| !r.is_empty()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "resource is required: the vault's base URL",
        );
    };
    let Some(aud) = audience(service, resource) else {
        return unknown_resource(resource);
    };
    let client_id = form_value(&q, "client_id").filter(|s| !s.is_empty());
    let object_id = form_value(&q, "object_id")
        .or_else(|| form_value(&q, "principal_id"))
        .filter(|s| !s.is_empty());
    let Some(principal) = service
        .directory
        .authenticate_managed(secret, client_id, object_id)
    else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "no managed identity matches this X-IDENTITY-HEADER and client_id",
        );
    };
    let (token, exp) = service.issue_token(&principal, &aud);
    crate::metrics::token_issued("managed_identity");
    TokenAnswer {
        status: StatusCode::OK,
        body: json!({
            "access_token": token,
            "expires_on": exp.to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": principal.client_id,
        }),
        principal: Some(principal),
    }
}

/// `POST /oauth2/token` with `grant_type=client_credentials`, `client_id`,
/// `client_secret` and `scope=RESOURCE/.default` (or `resource=RESOURCE`).
pub fn client_credentials(service: &Service, form: &[u8]) -> TokenAnswer {
    let q = form_pairs(&String::from_utf8_lossy(form));
    if form_value(&q, "grant_type") != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        );
    }
    let (Some(client_id), Some(secret)) =
        (form_value(&q, "client_id"), form_value(&q, "client_secret"))
    else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_id and client_secret are required",
        );
    };
    let Some(resource) = form_value(&q, "scope").or_else(|| form_value(&q, "resource")) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "scope is required: VAULT_URL/.default",
        );
    };
    let Some(aud) = audience(service, resource) else {
        return unknown_resource(resource);
    };
    let Some(principal) = service.directory.authenticate(client_id, secret) else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client_id or client_secret is wrong",
        );
    };
    let (token, exp) = service.issue_token(&principal, &aud);
    crate::metrics::token_issued("client_credentials");
    TokenAnswer {
        status: StatusCode::OK,
        body: json!({
            "token_type": "Bearer",
            "access_token": token,
            "expires_in": service.token_lifetime_secs,
            "ext_expires_in": service.token_lifetime_secs,
            "expires_on": exp,
            "resource": aud,
        }),
        principal: Some(principal),
    }
}
