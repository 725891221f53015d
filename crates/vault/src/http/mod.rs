//! HTTP plumbing shared by the data plane and the management API: TLS listeners,
//! errors in Azure Key Vault's shape, request bodies, query strings.

pub mod admin_api;
mod admin_identities;
pub mod admin_route;
mod admin_vaults;
pub mod error_text;
pub mod identity_api;
pub mod key_errors;
pub mod vault_api;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::anonymous_budget::Admission;
use crate::audit::AuditEntry;

/// Largest request body accepted (AKV requests are small: a JWK at most).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The TCP peer of a connection, attached to each request by the HTTPS listener.
pub use pgcmk_hostkeys::listener::PeerAddr as ClientAddr;

/// An error answer: `{"error":{"code","message","innererror"?}}`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Azure Key Vault error code.
    pub code: &'static str,
    /// What went wrong and what to do.
    pub message: String,
    /// Azure's inner error code, when it has one.
    pub inner: Option<&'static str>,
    /// `WWW-Authenticate` value for 401s.
    pub challenge: Option<String>,
}

impl ApiError {
    /// A status/code/message error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            inner: None,
            challenge: None,
        }
    }
    /// 400 BadParameter.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadParameter", message)
    }
    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }
    /// 409 Conflict.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", message)
    }
    /// 404 with the given code.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    /// Adds an inner error code.
    pub fn with_inner(mut self, inner: &'static str) -> Self {
        self.inner = Some(inner);
        self
    }
    /// 500 for failures that are not the caller's; the detail goes to the log only.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {err}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "the vault service failed to complete the request; see the service log",
        )
    }
    /// The JSON body. Its message needs no escape sequence (see [`error_text`]).
    pub fn body(&self) -> Value {
        let message = error_text::without_json_escapes(&self.message);
        let mut error = json!({ "code": self.code, "message": message });
        if let Some(inner) = self.inner {
            error["innererror"] = json!({ "code": inner });
        }
        json!({ "error": error })
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::IdentityExists(_) => Self::conflict(e.to_string()),
            e => Self::internal(e),
        }
    }
}

/// Runs `f` on a blocking thread: storage writes commit with fsync and must not
/// hold up the async runtime's workers.
pub async fn blocking<R: Send + 'static>(
    service: &std::sync::Arc<crate::service::Service>,
    f: impl FnOnce(&crate::service::Service) -> Result<R, ApiError> + Send + 'static,
) -> Result<R, ApiError> {
    let service = service.clone();
    tokio::task::spawn_blocking(move || f(&service))
        .await
        .map_err(ApiError::internal)?
}

/// A successful answer: status and JSON body (none for 204).
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: Option<Value>,
}

impl Reply {
    /// 200 with a body.
    pub fn ok(body: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body: Some(body),
        }
    }
}

/// Builds the HTTP response for a result, with the request id headers.
pub fn respond(
    result: Result<&Reply, &ApiError>,
    request_id: &str,
    request_headers: &HeaderMap,
) -> Response {
    let (status, body) = match result {
        Ok(r) => (r.status, r.body.clone()),
        Err(e) => (e.status, Some(e.body())),
    };
    let mut builder = Response::builder().status(status);
    if let Some(h) = builder.headers_mut() {
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert("x-ms-request-id", v);
        }
        if let Some(client_id) = request_headers.get("x-ms-client-request-id") {
            h.insert("x-ms-client-request-id", client_id.clone());
        }
        h.insert(
            "x-ms-keyvault-service-version",
            HeaderValue::from_static("1.9.0.0"),
        );
        if let Err(ApiError {
            challenge: Some(c), ..
        }) = result
        {
            if let Ok(v) = HeaderValue::from_str(c) {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if body.is_some() {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
        }
    }
    let bytes = body
        .map(|b| serde_json::to_vec(&b).unwrap_or_default())
        .unwrap_or_default();
    builder
        .body(Body::from(bytes))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// Reads a request body of at most [`MAX_BODY_BYTES`].
pub async fn read_body(body: Body) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestBodyTooLarge",
                format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        })
}

/// Parses a JSON request body; an empty body is `{}`.
pub fn json_body(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad(format!("the request body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad("the request body must be a JSON object"));
    }
    Ok(v)
}

/// Decodes an `application/x-www-form-urlencoded` string or query into pairs.
pub fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// The first value of `name` in decoded pairs.
pub fn form_value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A fresh request id (UUID-shaped).
pub fn request_id() -> String {
    crate::identity::new_id()
}

/// The audit record of one request in progress.
pub struct AuditScope {
    started: std::time::Instant,
    coming: crate::audit::EntryComing,
    /// The id returned in `x-ms-request-id`.
    pub request_id: String,
    /// The entry being filled in.
    pub entry: AuditEntry,
    /// The error code of a refusal, for the denials metric.
    reason: Option<&'static str>,
}

/// The caller of a request that did not authenticate.
const ANONYMOUS: &str = "anonymous";

impl AuditScope {
    /// Starts timing a request and its audit entry (caller `anonymous` until authenticated).
    pub fn begin(
        req: &axum::extract::Request,
        service: &crate::service::Service,
        vault: &str,
        operation: &str,
    ) -> Self {
        let request_id = request_id();
        let client = req
            .extensions()
            .get::<ClientAddr>()
            .map(|c| c.0.to_string())
            .unwrap_or_default();
        Self {
            started: std::time::Instant::now(),
            coming: service.audit.entry_coming(),
            entry: AuditEntry {
                vault: vault.to_string(),
                operation: operation.to_string(),
                caller: ANONYMOUS.into(),
                client,
                request_id: request_id.clone(),
                ..AuditEntry::default()
            },
            request_id,
            reason: None,
        }
    }

    /// Notes why the request failed (the metrics count denials by this code).
    pub fn failed(&mut self, error: &ApiError) {
        self.reason = Some(error.inner.unwrap_or(error.code));
    }

    /// Records the caller.
    pub fn caller(&mut self, principal: &crate::identity::Principal) {
        self.entry.caller = principal.object_id.clone();
        self.entry.caller_name = Some(principal.name.clone());
    }

    /// The caller of a request, authenticated by its bearer token for `audience` and
    /// recorded; else a 401 with a `WWW-Authenticate` challenge, recorded as an
    /// anonymous challenge when the request carried no `Authorization` header at all.
    pub fn authenticate(
        &mut self,
        service: &crate::service::Service,
        headers: &HeaderMap,
        audience: &str,
    ) -> Result<crate::identity::Principal, ApiError> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match service.authenticate(authorization, audience) {
            Ok(principal) => {
                self.caller(&principal);
                Ok(principal)
            }
            Err(e) => {
                // Any Authorization header (a Basic one too) is an attempt, not the
                // SDK's bare first request: only its absence makes a challenge.
                self.entry.challenge =
                    authorization.is_none() && e == crate::token::AuthError::MissingToken;
                let token_error = match &e {
                    crate::token::AuthError::InvalidToken(t) => Some(t),
                    _ => None,
                };
                self.reason = Some(match &e {
                    crate::token::AuthError::MissingToken => "MissingToken",
                    crate::token::AuthError::InvalidToken(_) => "InvalidToken",
                    crate::token::AuthError::PrincipalGone => "PrincipalGone",
                });
                let mut answer =
                    ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", e.to_string());
                answer.challenge = Some(service.challenge(audience, token_error));
                Err(answer)
            }
        }
    }

    /// Appends the entry (durably) and returns `response`, or a 500 if the audit
    /// trail cannot be written.
    pub async fn finish(
        mut self,
        service: &crate::service::Service,
        response: Response,
        headers: &HeaderMap,
    ) -> Response {
        self.entry.status = response.status().as_u16();
        self.entry.result = AuditEntry::result_for(self.entry.status).into();
        self.entry.time = crate::now_rfc3339();
        let elapsed = self.started.elapsed();
        self.entry.duration_us = elapsed.as_micros() as u64;
        crate::metrics::request(
            &self.entry.operation,
            self.entry.status,
            self.reason,
            elapsed,
        );
        // A known caller's refusal is worth a line in the service's log too (the audit
        // trail has everything); an anonymous client's are not: they would cost it
        // unbounded log.
        if self.entry.caller != ANONYMOUS && matches!(self.entry.status, 401 | 403) {
            tracing::info!(
                request_id = %self.request_id,
                operation = %self.entry.operation,
                status = self.entry.status,
                reason = self.reason.unwrap_or_default(),
                "request refused"
            );
        }
        if self.entry.caller == ANONYMOUS {
            match service.anonymous_budget.admit(std::time::Instant::now()) {
                Admission::LeaveOut => return response,
                Admission::Record { left_out } => {
                    self.entry.anonymous_left_out = (left_out > 0).then_some(left_out);
                }
            }
        }
        if let Err(e) = service.audit.record(self.entry, Some(self.coming)).await {
            let failure = ApiError::internal(e);
            return respond(Err(&failure), &self.request_id, headers);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        let p = form_pairs("grant_type=client_credentials&scope=https%3A%2F%2Fa%3A1%2F.default&x=a+b&bad=%zz&end=%4");
        assert_eq!(form_value(&p, "scope"), Some("https://a:1/.default"));
        assert_eq!(form_value(&p, "x"), Some("a b"));
        assert_eq!(form_value(&p, "bad"), Some("%zz"));
        assert_eq!(form_value(&p, "end"), Some("%4"));
        assert_eq!(form_value(&p, "missing"), None);
    }
}
