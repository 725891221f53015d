//! How [`AkvClient`] talks to a vault: the bearer-challenge handshake, token reuse,
//! one retry on a stale connection, paging, and AKV error mapping.

use std::sync::PoisonError;

use reqwest::header::{HeaderValue, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use zeroize::Zeroizing;

use super::challenge::BearerChallenge;
use super::client::AkvClient;
use super::failure;
use super::model::ListPage;
use crate::KeyError;

/// A request body, wiped after sending when it carries key material.
pub(super) type Body = Zeroizing<Vec<u8>>;

impl AkvClient {
    pub(super) fn paged<T: DeserializeOwned>(
        &self,
        op: &str,
        first: String,
    ) -> Result<Vec<T>, KeyError> {
        let mut items = Vec::new();
        let mut next = Some(first);
        while let Some(url) = next {
            // Tokens go only to this vault, wherever a nextLink points.
            if !url.starts_with(&format!("{}/", self.vault_url)) {
                return Err(KeyError::Invalid {
                    reason: format!("{op}: the vault's nextLink '{url}' leaves the vault; refusing to follow it"),
                });
            }
            let page: ListPage<T> = self.json(op, Method::GET, &url, None)?;
            items.extend(page.value);
            next = page.next_link.filter(|l| !l.is_empty());
        }
        Ok(items)
    }

    pub(super) fn json<T: DeserializeOwned>(
        &self,
        op: &str,
        method: Method,
        url: &str,
        body: Option<Body>,
    ) -> Result<T, KeyError> {
        let reply = self.call(op, method, url, body)?;
        serde_json::from_slice(&reply).map_err(|e| failure::unexpected_body(op, &e))
    }

    /// Sends a request with a token, learning the token scope from the vault's
    /// challenge first if needed, and retrying once with a fresh token on a 401.
    pub(super) fn call(
        &self,
        op: &str,
        method: Method,
        url: &str,
        body: Option<Body>,
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let mut scope = self.learned_scope();
        if scope.is_none() {
            // As the Azure SDK does: an unauthenticated request without a body, so
            // nothing but the URL reaches a server that has not proved what it is.
            let (status, headers, reply) = self.send(op, method.clone(), url, None, None)?;
            if status != 401 {
                return Err(not_challenged(op, status, &reply));
            }
            scope = Some(self.learn_challenge(op, &headers, status, &reply)?);
        }
        let mut retried = false;
        loop {
            let scope_now = scope.clone().unwrap_or_default();
            let auth = self.tokens.authorization(&self.http, &scope_now)?;
            let (status, headers, reply) =
                self.send(op, method.clone(), url, Some(auth), body.as_ref())?;
            if (200..300).contains(&status) {
                return Ok(reply);
            }
            if status == 401 && !retried {
                // The token may have been revoked or the audience changed: start over once.
                retried = true;
                self.tokens.invalidate(&scope_now);
                scope = Some(self.learn_challenge(op, &headers, status, &reply)?);
                continue;
            }
            return Err(failure::from_response(op, status, &reply));
        }
    }

    fn learned_scope(&self) -> Option<String> {
        self.learned_challenge().map(|c| c.scope)
    }

    /// The vault's bearer challenge, once a request has learned it.
    pub(super) fn learned_challenge(&self) -> Option<BearerChallenge> {
        self.challenge
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn learn_challenge(
        &self,
        op: &str,
        headers: &reqwest::header::HeaderMap,
        status: u16,
        reply: &[u8],
    ) -> Result<String, KeyError> {
        let challenge = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|h| h.to_str().ok())
            .find_map(BearerChallenge::parse)
            .ok_or_else(|| failure::from_response(op, status, reply))?;
        challenge.verify_for(&self.vault_url)?;
        tracing::debug!(vault = %self.vault_url, scope = %challenge.scope, "vault asked for a token");
        let scope = challenge.scope.clone();
        *self
            .challenge
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(challenge);
        Ok(scope)
    }

    pub(super) fn send(
        &self,
        op: &str,
        method: Method,
        url: &str,
        auth: Option<HeaderValue>,
        body: Option<&Body>,
    ) -> Result<(u16, reqwest::header::HeaderMap, Zeroizing<Vec<u8>>), KeyError> {
        let has_body_semantics = [Method::POST, Method::PUT, Method::PATCH].contains(&method);
        let mut request = self.http.request(method, url);
        if !url.contains("api-version=") {
            request = request.query(&[("api-version", self.api_version.as_str())]);
        }
        if let Some(auth) = auth {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        } else if has_body_semantics {
            // An explicit empty body, so the probe carries `Content-Length: 0`.
            request = request.body(Vec::new());
        }
        let retry = request.try_clone();
        let response = match (request.send(), retry) {
            // A pooled connection the server closed as we reused it: one fresh attempt,
            // as Azure SDK clients retry connection errors. Timeouts are not retried.
            (Err(e), Some(retry)) if !e.is_timeout() => {
                tracing::debug!(op, error = %e, "retrying once on a new connection");
                retry.send()
            }
            (result, _) => result,
        }
        .map_err(|e| failure::from_transport(op, e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let reply = response
            .bytes()
            .map_err(|e| failure::from_transport(op, e))?;
        Ok((status, headers, Zeroizing::new(reply.to_vec())))
    }
}

/// Serializes a request body into a buffer that is wiped once sent.
pub(super) fn encode<T: Serialize + ?Sized>(op: &str, body: &T) -> Result<Body, KeyError> {
    serde_json::to_vec(body)
        .map(Zeroizing::new)
        .map_err(|e| KeyError::Invalid {
            reason: format!("{op}: cannot encode the request: {e}"),
        })
}

/// The vault answered an unauthenticated request with something other than a challenge.
fn not_challenged(op: &str, status: u16, reply: &[u8]) -> KeyError {
    if (200..300).contains(&status) {
        KeyError::Invalid {
            reason: format!("{op}: the server answered without asking for a token, so it is not a key vault: check the vault URL"),
        }
    } else {
        failure::from_response(op, status, reply)
    }
}
