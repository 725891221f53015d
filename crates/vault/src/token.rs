//! Access tokens: compact JWTs (HS256) signed with a key derived from the root key.
//! They carry the principal's object id and the audience (the vault or service
//! URL they are for), and expire.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use pgcmk_crypto::mac::MacKey;
use serde::{Deserialize, Serialize};

/// Default token lifetime (seconds).
pub const DEFAULT_LIFETIME_SECS: i64 = 3600;
/// Clock skew tolerated on `nbf`.
const SKEW_SECS: i64 = 60;

/// What a token says.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Issuer: the service URL.
    pub iss: String,
    /// Audience: the vault base URL (data plane) or service URL (management).
    pub aud: String,
    /// The principal's object id.
    pub oid: String,
    /// The principal's client id.
    pub appid: String,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Not before (unix seconds).
    pub nbf: i64,
    /// Expires at (unix seconds).
    pub exp: i64,
    /// Token id.
    pub jti: String,
}

/// Why a token was refused (said in the 401's `error_description`).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a well-formed token.
    #[error("the access token is malformed")]
    Malformed,
    /// Signature did not verify (forged or from another service).
    #[error("the access token signature is invalid")]
    BadSignature,
    /// Past `exp`.
    #[error("the access token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("the access token is not yet valid")]
    NotYetValid,
    /// Issued for another audience.
    #[error("the access token is for another audience")]
    WrongAudience,
}

/// Why a request's bearer token does not authenticate anyone (a 401 with a challenge).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("AKV10000: Request is missing a Bearer or PoP token.")]
    MissingToken,
    /// The token is malformed, forged, expired or for another audience.
    #[error("AKV10022: Invalid audience or token: {0}.")]
    InvalidToken(TokenError),
    /// The token is valid but its principal was deleted.
    #[error("AKV10032: the token's principal no longer exists.")]
    PrincipalGone,
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Signs `claims` into a compact JWT.
pub fn issue(key: &MacKey, claims: &Claims) -> String {
    let body = serde_json::to_vec(claims).unwrap_or_default();
    let signing_input = format!("{}.{}", B64.encode(HEADER), B64.encode(body));
    let tag = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", B64.encode(tag.as_ref()))
}

/// Verifies signature, time window and audience; returns the claims.
pub fn verify(key: &MacKey, token: &str, audience: &str, now: i64) -> Result<Claims, TokenError> {
    let (signing_input, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let (header, body) = signing_input.split_once('.').ok_or(TokenError::Malformed)?;
    let sig = B64.decode(sig).map_err(|_| TokenError::Malformed)?;
    key.verify(signing_input.as_bytes(), &sig)
        .map_err(|_| TokenError::BadSignature)?;
    if B64.decode(header).ok().as_deref() != Some(HEADER.as_bytes()) {
        return Err(TokenError::Malformed);
    }
    let claims: Claims = B64
        .decode(body)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(TokenError::Malformed)?;
    if now >= claims.exp {
        return Err(TokenError::Expired);
    }
    if now + SKEW_SECS < claims.nbf {
        return Err(TokenError::NotYetValid);
    }
    if claims.aud.trim_end_matches('/') != audience.trim_end_matches('/') {
        return Err(TokenError::WrongAudience);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgcmk_crypto::SymmetricKey;

    fn claims(aud: &str, exp: i64) -> Claims {
        Claims {
            iss: "https://127.0.0.1:1".into(),
            aud: aud.into(),
            oid: "o".into(),
            appid: "a".into(),
            iat: 100,
            nbf: 100,
            exp,
            jti: "j".into(),
        }
    }

    #[test]
    fn valid_forged_expired_and_wrong_audience_tokens() {
        let key = MacKey::new(&SymmetricKey::from_bytes([1; 32]));
        let other = MacKey::new(&SymmetricKey::from_bytes([2; 32]));
        let aud = "https://127.0.0.1:5000";
        let t = issue(&key, &claims(aud, 200));
        assert_eq!(verify(&key, &t, &format!("{aud}/"), 150).unwrap().oid, "o");
        assert_eq!(verify(&other, &t, aud, 150), Err(TokenError::BadSignature));
        assert_eq!(verify(&key, &t, aud, 200), Err(TokenError::Expired));
        assert_eq!(
            verify(&key, &t, "https://127.0.0.1:5001", 150),
            Err(TokenError::WrongAudience)
        );
        // Changing the claims without the key breaks the signature.
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        parts[1] = B64.encode(serde_json::to_vec(&claims(aud, 9_999)).unwrap());
        assert_eq!(
            verify(&key, &parts.join("."), aud, 150),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(&key, "garbage", aud, 150),
            Err(TokenError::Malformed)
        );
    }
}
