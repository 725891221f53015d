//! Access tokens for the vault: where they come from (a managed identity or a client
//! secret) and a cache that reuses each one until shortly before it expires.
//! Tokens and the secrets that obtain them live in [`SecretBytes`] and are never logged.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pgcmk_crypto::SecretBytes;
use reqwest::header::HeaderValue;
use serde::{Deserialize, Deserializer};

use super::failure;
use crate::KeyError;

/// Refresh a token this long before it expires (as the Azure SDK does) ...
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

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
        if let Some(token) = cache.get(scope).filter(|t| t.is_fresh(Instant::now())) {
            return token.header();
        }
        let token = self.fetch(http, scope)?;
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
        let obtained = Instant::now();
        let lifetime = reply
            .lifetime(unix_now())
            .ok_or_else(|| KeyError::Transient {
                reason: "token request: the reply has no expires_on or expires_in; retry later"
                    .into(),
            })?;
        // The token itself is never logged; only which audience and for how long.
        tracing::debug!(scope, lifetime_secs = lifetime.as_secs(), credential = ?self, "obtained a vault access token");
        Ok(CachedToken {
            token: reply.access_token,
            obtained,
            lifetime,
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

/// A token and how long it lasts from when it was obtained, on the monotonic
/// clock: a step of this host's wall clock (or its skew from the issuer's) neither
/// keeps an expired token in use nor throws away a fresh one at every request.
struct CachedToken {
    token: SecretBytes,
    obtained: Instant,
    lifetime: Duration,
}

impl CachedToken {
    /// Fresh until the refresh margin before expiry; short-lived tokens are refreshed
    /// after half their lifetime instead, so they are never used at the last second.
    fn is_fresh(&self, now: Instant) -> bool {
        let margin = REFRESH_MARGIN.min(self.lifetime / 2);
        now.saturating_duration_since(self.obtained) + margin < self.lifetime
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

impl TokenReply {
    /// How long the token lasts, relying on this host's wall clock (`now_unix`) only
    /// when nothing else says: `expires_in` (relative, as OAuth2 gives it), else the
    /// span from the token's own `iat` to its `exp` (the App Service managed-identity
    /// protocol gives only an absolute `expires_on`, but its tokens are JWTs), else
    /// `expires_on` minus now.
    fn lifetime(&self, now_unix: u64) -> Option<Duration> {
        self.expires_in
            .or_else(|| jwt_lifetime(self.access_token.expose_secret()))
            .or_else(|| self.expires_on.map(|on| on.saturating_sub(now_unix)))
            .map(Duration::from_secs)
    }
}

/// `exp - iat` of a JWT's claims, read without checking its signature: the token
/// is the issuer's business, this only decides how long to keep it.
fn jwt_lifetime(token: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Times {
        iat: u64,
        exp: u64,
    }
    let claims = token.split(|&b| b == b'.').nth(1)?;
    let claims =
        zeroize::Zeroizing::new(crate::b64url::decode(std::str::from_utf8(claims).ok()?).ok()?);
    let times: Times = serde_json::from_slice(&claims).ok()?;
    times.exp.checked_sub(times.iat)
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

    fn token(lifetime_secs: u64) -> (CachedToken, Instant) {
        let obtained = Instant::now();
        let token = CachedToken {
            token: SecretBytes::new(b"t".to_vec()),
            obtained,
            lifetime: Duration::from_secs(lifetime_secs),
        };
        (token, obtained)
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn hour_tokens_refresh_five_minutes_early() {
        let (t, at) = token(3600);
        assert!(t.is_fresh(at));
        assert!(t.is_fresh(at + secs(3600 - 301)));
        assert!(!t.is_fresh(at + secs(3600 - 300)));
        assert!(!t.is_fresh(at + secs(4000)));
    }

    #[test]
    fn short_tokens_refresh_at_half_life() {
        let (t, at) = token(60);
        assert!(t.is_fresh(at + secs(29)));
        assert!(!t.is_fresh(at + secs(30)));
        let (t, at) = token(0);
        assert!(!t.is_fresh(at));
    }

    fn reply(json: &str) -> TokenReply {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_relative_lifetime_wins_over_an_absolute_time_the_local_clock_disagrees_with() {
        let r = reply(r#"{"access_token":"abc","expires_in":3599,"expires_on":1000}"#);
        // This host's clock is far past expires_on: the relative lifetime is believed.
        assert_eq!(r.lifetime(1_000_000), Some(secs(3599)));
    }

    #[test]
    fn without_expires_in_a_jwt_lasts_from_its_iat_to_its_exp() {
        let claims = crate::b64url::encode(br#"{"iat":1000,"exp":4600,"aud":"x"}"#);
        let r = reply(&format!(
            r#"{{"access_token":"e30.{claims}.c2ln","expires_on":"4600"}}"#
        ));
        assert_eq!(r.lifetime(1_000_000), Some(secs(3600)));
    }

    #[test]
    fn an_opaque_token_with_only_expires_on_goes_by_the_local_clock() {
        let r = reply(r#"{"access_token":"opaque","expires_on":"5000"}"#);
        assert_eq!(r.lifetime(4000), Some(secs(1000)));
        assert_eq!(r.lifetime(6000), Some(secs(0)));
        assert_eq!(reply(r#"{"access_token":"opaque"}"#).lifetime(0), None);
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
