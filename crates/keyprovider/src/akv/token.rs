//! Access tokens for the vault: where they come from (a managed identity or a client
//! secret) and a cache that reuses each one until shortly before it expires.
//! Tokens and the secrets that obtain them live in [`SecretBytes`] and are never logged.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use pgcmk_crypto::SecretBytes;
use reqwest::header::HeaderValue;
use serde::{Deserialize, Deserializer};

use super::failure;
use crate::KeyError;

/// Refresh a token this long before it expires (as the Azure SDK does) ...
const REFRESH_MARGIN_SECS: u64 = 300;

/// Where tokens come from, with a cache shared by every clone.
#[derive(Clone)]
pub struct TokenSource {
    credential: Arc<Credential>,
    cache: Arc<Mutex<HashMap<String, CachedToken>>>,
}

enum Credential {
    ManagedIdentity {
        endpoint: String,
        header: SecretBytes,
        client_id: String,
    },
    ClientSecret {
        token_endpoint: String,
        client_id: String,
        secret: SecretBytes,
    },
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.credential {
            Credential::ManagedIdentity { client_id, .. } => {
                write!(f, "TokenSource::ManagedIdentity(client_id={client_id})")
            }
            Credential::ClientSecret { client_id, .. } => {
                write!(f, "TokenSource::ClientSecret(client_id={client_id})")
            }
        }
    }
}

impl TokenSource {
    /// A user-assigned managed identity through the App Service protocol:
    /// `GET endpoint?api-version=2019-08-01&resource=…&client_id=…` with the
    /// `X-IDENTITY-HEADER` secret.
    pub fn managed_identity(
        endpoint: &str,
        header: SecretBytes,
        client_id: &str,
    ) -> Result<Self, KeyError> {
        require_http_url("identity endpoint", endpoint)?;
        require_non_empty("client id", client_id)?;
        require_non_empty(
            "identity header",
            std::str::from_utf8(header.expose_secret()).unwrap_or(""),
        )?;
        Ok(Self::new(Credential::ManagedIdentity {
            endpoint: endpoint.to_string(),
            header,
            client_id: client_id.to_string(),
        }))
    }

    /// The managed identity `client_id` with the endpoint and header secret taken from
    /// the `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` environment variables.
    pub fn managed_identity_from_env(client_id: &str) -> Result<Self, KeyError> {
        let read = |name: &str| {
            std::env::var(name).map_err(|_| KeyError::Invalid {
                reason: format!(
                    "{name} is not set: run where a managed identity is available, or set it"
                ),
            })
        };
        let endpoint = read("IDENTITY_ENDPOINT")?;
        let header = SecretBytes::new(read("IDENTITY_HEADER")?.into_bytes());
        Self::managed_identity(&endpoint, header, client_id)
    }

    /// A principal with a client secret, through the OAuth2 client-credentials grant
    /// (`POST token_endpoint` with `grant_type=client_credentials`).
    pub fn client_secret(
        token_endpoint: &str,
        client_id: &str,
        secret: SecretBytes,
    ) -> Result<Self, KeyError> {
        require_http_url("token endpoint", token_endpoint)?;
        require_non_empty("client id", client_id)?;
        if secret.is_empty() {
            return Err(KeyError::Invalid {
                reason: "the client secret is empty: pass the principal's credential".into(),
            });
        }
        Ok(Self::new(Credential::ClientSecret {
            token_endpoint: token_endpoint.to_string(),
            client_id: client_id.to_string(),
            secret,
        }))
    }

    fn new(credential: Credential) -> Self {
        Self {
            credential: Arc::new(credential),
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// An `Authorization: Bearer …` header for `scope`, from the cache or freshly
    /// obtained. Concurrent callers wait for one fetch instead of all fetching.
    pub(crate) fn authorization(
        &self,
        http: &reqwest::blocking::Client,
        scope: &str,
    ) -> Result<HeaderValue, KeyError> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let now = unix_now();
        if let Some(token) = cache.get(scope).filter(|t| t.is_fresh(now)) {
            return token.header();
        }
        let token = self.fetch(http, scope, now)?;
        let header = token.header();
        cache.insert(scope.to_string(), token);
        header
    }

    /// Forgets the cached token for `scope` (the vault rejected it).
    pub(crate) fn invalidate(&self, scope: &str) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(scope);
    }

    fn fetch(
        &self,
        http: &reqwest::blocking::Client,
        scope: &str,
        now: u64,
    ) -> Result<CachedToken, KeyError> {
        const OP: &str = "token request";
        let resource = scope.strip_suffix("/.default").unwrap_or(scope);
        let request = match &*self.credential {
            Credential::ManagedIdentity {
                endpoint,
                header,
                client_id,
            } => {
                let mut secret = HeaderValue::from_bytes(header.expose_secret()).map_err(|_| {
                    KeyError::Invalid {
                        reason: "IDENTITY_HEADER holds characters not allowed in an HTTP header"
                            .into(),
                    }
                })?;
                secret.set_sensitive(true);
                http.get(endpoint)
                    .query(&[
                        ("api-version", "2019-08-01"),
                        ("resource", resource),
                        ("client_id", client_id),
                    ])
                    .header("X-IDENTITY-HEADER", secret)
            }
            Credential::ClientSecret {
                token_endpoint,
                client_id,
                secret,
            } => {
                let secret =
                    std::str::from_utf8(secret.expose_secret()).map_err(|_| KeyError::Invalid {
                        reason: "the client secret is not UTF-8 text".into(),
                    })?;
                http.post(token_endpoint).form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    ("client_secret", secret),
                    ("scope", scope),
                ])
            }
        };
        let response = request.send().map_err(|e| failure::from_transport(OP, e))?;
        let status = response.status().as_u16();
        let body = zeroize::Zeroizing::new(
            response
                .bytes()
                .map_err(|e| failure::from_transport(OP, e))?
                .to_vec(),
        );
        if !(200..300).contains(&status) {
            return Err(token_refused(status, &body));
        }
        let reply: TokenReply =
            serde_json::from_slice(&body).map_err(|e| failure::unexpected_body(OP, &e))?;
        let expires_on = match (reply.expires_on, reply.expires_in) {
            (Some(on), _) => on,
            (None, Some(secs)) => now + secs,
            (None, None) => {
                return Err(KeyError::Transient {
                    reason: "token request: the reply has no expires_on or expires_in; retry later"
                        .into(),
                })
            }
        };
        // The token itself is never logged; only which audience and until when.
        tracing::debug!(scope, expires_on, credential = ?self, "obtained a vault access token");
        Ok(CachedToken {
            token: reply.access_token,
            obtained_at: now,
            expires_on,
        })
    }
}

/// The identity service refused: a wrong secret or an unknown identity is a denial
/// (the identity is gone or revoked), not something a retry fixes.
fn token_refused(status: u16, body: &[u8]) -> KeyError {
    match failure::from_response("token request", status, body) {
        KeyError::Invalid { reason } if status == 400 => KeyError::Denied { reason },
        other => other,
    }
}

fn require_http_url(what: &str, url: &str) -> Result<(), KeyError> {
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        Err(KeyError::Invalid {
            reason: format!("the {what} '{url}' is not an http(s) URL"),
        })
    }
}

fn require_non_empty(what: &str, value: &str) -> Result<(), KeyError> {
    if value.trim().is_empty() {
        Err(KeyError::Invalid {
            reason: format!("the {what} is empty"),
        })
    } else {
        Ok(())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A token and its lifetime.
struct CachedToken {
    token: SecretBytes,
    obtained_at: u64,
    expires_on: u64,
}

impl CachedToken {
    /// Fresh until the refresh margin before expiry; short-lived tokens are refreshed
    /// after half their lifetime instead, so they are never used at the last second.
    fn is_fresh(&self, now: u64) -> bool {
        let lifetime = self.expires_on.saturating_sub(self.obtained_at);
        let margin = REFRESH_MARGIN_SECS.min(lifetime / 2);
        now.saturating_add(margin) < self.expires_on
    }

    fn header(&self) -> Result<HeaderValue, KeyError> {
        let mut value = zeroize::Zeroizing::new(b"Bearer ".to_vec());
        value.extend_from_slice(self.token.expose_secret());
        let mut header = HeaderValue::from_bytes(&value).map_err(|_| KeyError::Transient {
            reason: "token request: the identity service returned a malformed token; retry later"
                .into(),
        })?;
        header.set_sensitive(true);
        Ok(header)
    }
}

#[derive(Deserialize)]
struct TokenReply {
    #[serde(deserialize_with = "secret_string")]
    access_token: SecretBytes,
    #[serde(default, deserialize_with = "number_or_string")]
    expires_on: Option<u64>,
    #[serde(default, deserialize_with = "number_or_string")]
    expires_in: Option<u64>,
}

/// Token endpoints send times as numbers or as strings of digits.
fn number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Number(n)) => Ok(Some(n)),
        Some(Raw::Text(s)) => s.trim().parse().map(Some).map_err(serde::de::Error::custom),
    }
}

fn secret_string<'de, D: Deserializer<'de>>(d: D) -> Result<SecretBytes, D::Error> {
    let text = zeroize::Zeroizing::new(String::deserialize(d)?);
    if text.is_empty() {
        return Err(serde::de::Error::custom("empty access_token"));
    }
    Ok(SecretBytes::new(text.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(obtained_at: u64, expires_on: u64) -> CachedToken {
        CachedToken {
            token: SecretBytes::new(b"t".to_vec()),
            obtained_at,
            expires_on,
        }
    }

    #[test]
    fn hour_tokens_refresh_five_minutes_early() {
        let t = token(1000, 1000 + 3600);
        assert!(t.is_fresh(1000));
        assert!(t.is_fresh(1000 + 3600 - 301));
        assert!(!t.is_fresh(1000 + 3600 - 300));
        assert!(!t.is_fresh(1000 + 4000));
    }

    #[test]
    fn short_tokens_refresh_at_half_life() {
        let t = token(1000, 1060);
        assert!(t.is_fresh(1029));
        assert!(!t.is_fresh(1030));
        assert!(!token(1000, 1000).is_fresh(1000));
    }

    #[test]
    fn token_replies_accept_string_or_number_times() {
        let r: TokenReply = serde_json::from_str(
            r#"{"access_token":"abc","expires_on":"1700000000","token_type":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!(r.expires_on, Some(1_700_000_000));
        assert_eq!(r.access_token.expose_secret(), b"abc");
        let r: TokenReply =
            serde_json::from_str(r#"{"access_token":"abc","expires_in":3599}"#).unwrap();
        assert_eq!((r.expires_on, r.expires_in), (None, Some(3599)));
        assert!(
            serde_json::from_str::<TokenReply>(r#"{"access_token":"","expires_in":1}"#).is_err()
        );
    }

    #[test]
    fn debug_shows_no_secret_and_bad_config_is_explained() {
        let s = TokenSource::client_secret(
            "https://127.0.0.1:1/token",
            "cid",
            SecretBytes::new(b"hunter2".to_vec()),
        )
        .unwrap();
        let printed = format!("{s:?}");
        assert!(
            printed.contains("cid") && !printed.contains("hunter2"),
            "{printed}"
        );
        let err = TokenSource::client_secret("ftp://x", "cid", SecretBytes::new(b"s".to_vec()))
            .unwrap_err();
        assert!(err.to_string().contains("not an http(s) URL"), "{err}");
        let err =
            TokenSource::managed_identity("https://x/msi", SecretBytes::new(Vec::new()), "cid")
                .unwrap_err();
        assert!(
            err.to_string().contains("identity header is empty"),
            "{err}"
        );
    }
}
