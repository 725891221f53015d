//! [`AkvClient`]: one vault's keys data plane over HTTPS, with the bearer-challenge
//! handshake, token reuse, timeouts and AKV error mapping.

use std::sync::Mutex;

use pgcmk_crypto::SecretBytes;
use reqwest::Method;

use super::challenge::BearerChallenge;
use super::model::{
    DeletedKeyBundle, DeletedKeyItem, KeyBundle, KeyItem, KeyOperationParameters,
    KeyOperationResult, KeyUpdate, KeyVerifyParameters, KeyVerifyResult, NewRsaKey, RotationPolicy,
    SignatureAlgorithm, WrapAlgorithm, RSA_KEY_SIZES,
};
use super::options::ClientOptions;
use super::token::TokenSource;
use super::transport::encode;
use super::AkvKeyVersionId;
use crate::{b64url, KeyError, KeyVersionId, WrappedDek};
use pgcmk_akv_model::{valid_key_name, valid_key_version};

/// Default AKV REST API version sent with every request.
pub const DEFAULT_API_VERSION: &str = "7.5";

/// A client for one vault's keys API (`https://HOST[:PORT]`, nothing after the authority).
///
/// Blocking; safe to share between threads (connections are pooled and the token is
/// reused). The first request learns the token audience from the vault's 401
/// challenge, without sending any request body; later requests carry the cached token.
///
/// ```no_run
/// use pgcmk_keyprovider::akv::{AkvClient, ClientOptions, NewRsaKey, TokenSource};
/// use pgcmk_crypto::SecretBytes;
/// # fn main() -> Result<(), pgcmk_keyprovider::KeyError> {
/// let tokens = TokenSource::managed_identity_from_env("client-id")?;
/// let vault = AkvClient::new("https://127.0.0.1:8443", tokens, &ClientOptions::trusting_only("ca.pem"))?;
/// let key = vault.create_rsa_key("k1", &NewRsaKey::new(3072))?;
/// println!("{}", key.key.kid);
/// # Ok(()) }
/// ```
pub struct AkvClient {
    pub(super) vault_url: String,
    pub(super) api_version: String,
    pub(super) http: reqwest::blocking::Client,
    pub(super) tokens: TokenSource,
    /// The vault's bearer challenge (token scope and authority), once learned.
    pub(super) challenge: Mutex<Option<BearerChallenge>>,
}

impl std::fmt::Debug for AkvClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AkvClient")
            .field("vault_url", &self.vault_url)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

/// A signature made by the vault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The exact key version that signed.
    pub kid: AkvKeyVersionId,
    /// The signature bytes.
    pub value: Vec<u8>,
}

impl AkvClient {
    /// A client for the vault at `vault_url`, authenticating with `tokens`.
    pub fn new(
        vault_url: &str,
        tokens: TokenSource,
        options: &ClientOptions,
    ) -> Result<Self, KeyError> {
        let vault_url = vault_url.trim_end_matches('/');
        let authority = vault_url.strip_prefix("https://").unwrap_or_default();
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(KeyError::Invalid {
                reason: format!(
                    "vault URL '{vault_url}' is not valid: expected https://HOST[:PORT]"
                ),
            });
        }
        if options.api_version.is_empty()
            || !options
                .api_version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(KeyError::Invalid {
                reason: format!(
                    "api-version '{}' is not valid, e.g. {DEFAULT_API_VERSION}",
                    options.api_version
                ),
            });
        }
        Ok(Self {
            vault_url: vault_url.to_string(),
            api_version: options.api_version.clone(),
            http: options.http_client()?,
            tokens,
            challenge: Mutex::new(None),
        })
    }

    /// The vault's base URL, without a trailing slash.
    pub fn vault_url(&self) -> &str {
        &self.vault_url
    }

    /// Creates an RSA key (or a new version of an existing one) (`create` permission).
    pub fn create_rsa_key(&self, name: &str, key: &NewRsaKey) -> Result<KeyBundle, KeyError> {
        if !RSA_KEY_SIZES.contains(&key.size_bits) {
            return Err(KeyError::Invalid {
                reason: format!(
                    "RSA key size {} is not supported: use 2048, 3072 or 4096",
                    key.size_bits
                ),
            });
        }
        let body = key.parameters();
        let op = format!("create key '{name}'");
        self.json(
            &op,
            Method::POST,
            &format!("{}/create", self.key_path(name, None)?),
            Some(encode(&op, &body)?),
        )
    }

    /// Reads a key's public part and attributes; `version: None` reads the current
    /// version (`get` permission).
    pub fn get_key(&self, name: &str, version: Option<&str>) -> Result<KeyBundle, KeyError> {
        let op = format!("get key '{name}'");
        self.json(&op, Method::GET, &self.key_path(name, version)?, None)
    }

    /// Lists the vault's keys, following every `nextLink` (`list` permission).
    pub fn list_keys(&self) -> Result<Vec<KeyItem>, KeyError> {
        self.paged("list keys", format!("{}/keys", self.vault_url))
    }

    /// Lists every version of a key (`list` permission).
    pub fn list_key_versions(&self, name: &str) -> Result<Vec<KeyItem>, KeyError> {
        let op = format!("list versions of key '{name}'");
        self.paged(&op, format!("{}/versions", self.key_path(name, None)?))
    }

    /// Lists soft-deleted keys (`list` permission).
    pub fn list_deleted_keys(&self) -> Result<Vec<DeletedKeyItem>, KeyError> {
        self.paged(
            "list deleted keys",
            format!("{}/deletedkeys", self.vault_url),
        )
    }

    /// Changes a key version's attributes, operations or tags; `version: None` changes
    /// the current version (`update` permission).
    pub fn update_key(
        &self,
        name: &str,
        version: Option<&str>,
        update: &KeyUpdate,
    ) -> Result<KeyBundle, KeyError> {
        let body = update.parameters();
        let op = format!("update key '{name}'");
        self.json(
            &op,
            Method::PATCH,
            &self.key_path(name, version)?,
            Some(encode(&op, &body)?),
        )
    }

    /// Creates a new version of a key with the same type and size (`rotate` permission).
    pub fn rotate_key(&self, name: &str) -> Result<KeyBundle, KeyError> {
        let op = format!("rotate key '{name}'");
        self.json(
            &op,
            Method::POST,
            &format!("{}/rotate", self.key_path(name, None)?),
            Some(encode(&op, &serde_json::json!({}))?),
        )
    }

    /// Soft-deletes a key with all its versions (`delete` permission).
    pub fn delete_key(&self, name: &str) -> Result<DeletedKeyBundle, KeyError> {
        let op = format!("delete key '{name}'");
        self.json(&op, Method::DELETE, &self.key_path(name, None)?, None)
    }

    /// Reads a soft-deleted key (`get` permission).
    pub fn get_deleted_key(&self, name: &str) -> Result<DeletedKeyBundle, KeyError> {
        let op = format!("get deleted key '{name}'");
        self.json(&op, Method::GET, &self.deleted_path(name)?, None)
    }

    /// Brings a soft-deleted key back (`recover` permission).
    pub fn recover_deleted_key(&self, name: &str) -> Result<KeyBundle, KeyError> {
        let op = format!("recover key '{name}'");
        self.json(
            &op,
            Method::POST,
            &format!("{}/recover", self.deleted_path(name)?),
            Some(encode(&op, &serde_json::json!({}))?),
        )
    }

    /// Destroys a soft-deleted key for good (`purge` permission). Refused while the
    /// vault's purge protection holds it.
    pub fn purge_deleted_key(&self, name: &str) -> Result<(), KeyError> {
        let op = format!("purge key '{name}'");
        self.call(&op, Method::DELETE, &self.deleted_path(name)?, None)
            .map(drop)
    }

    /// Wraps `key` (e.g. a DEK) with a key version; `version: None` uses the current
    /// one, whose exact id the result records (`wrapKey` permission).
    pub fn wrap_key(
        &self,
        name: &str,
        version: Option<&str>,
        algorithm: WrapAlgorithm,
        key: &[u8],
    ) -> Result<WrappedDek, KeyError> {
        let op = format!("wrap with key '{name}'");
        let body = KeyOperationParameters {
            alg: algorithm.as_str().to_string(),
            value: b64url::encode(key),
        };
        let path = format!("{}/wrapkey", self.key_path(name, version)?);
        let result: KeyOperationResult =
            self.json(&op, Method::POST, &path, Some(encode(&op, &body)?))?;
        Ok(WrappedDek {
            kek: KeyVersionId::Azure(self.result_kid(&op, name, &result.kid)?),
            algorithm: algorithm.as_str().to_string(),
            ciphertext: b64url::decode(&result.value).map_err(|e| bad_base64(&op, &e))?,
        })
    }

    /// Unwraps with the exact key version and algorithm recorded in `wrapped`
    /// (`unwrapKey` permission), which must be a version of a key in this vault.
    pub fn unwrap_key(&self, wrapped: &WrappedDek) -> Result<SecretBytes, KeyError> {
        let KeyVersionId::Azure(kek) = &wrapped.kek else {
            return Err(KeyError::Invalid {
                reason: format!(
                    "this DEK was wrapped by {}, not by a key in vault {}",
                    wrapped.kek, self.vault_url
                ),
            });
        };
        let op = format!("unwrap with key '{}'", kek.name);
        self.require_same_vault(&kek.vault_url)?;
        let algorithm = WrapAlgorithm::parse(&wrapped.algorithm)?;
        let body = KeyOperationParameters {
            alg: algorithm.as_str().to_string(),
            value: b64url::encode(&wrapped.ciphertext),
        };
        let path = format!(
            "{}/unwrapkey",
            self.key_path(&kek.name, Some(&kek.version))?
        );
        let result: KeyOperationResult =
            self.json(&op, Method::POST, &path, Some(encode(&op, &body)?))?;
        b64url::decode(&result.value)
            .map(SecretBytes::new)
            .map_err(|e| bad_base64(&op, &e))
    }

    /// Signs a digest the caller computed with the algorithm's hash (`sign` permission).
    pub fn sign(
        &self,
        name: &str,
        version: Option<&str>,
        algorithm: SignatureAlgorithm,
        digest: &[u8],
    ) -> Result<Signature, KeyError> {
        let op = format!("sign with key '{name}'");
        check_digest(algorithm, digest)?;
        let body = KeyOperationParameters {
            alg: algorithm.name().to_string(),
            value: b64url::encode(digest),
        };
        let path = format!("{}/sign", self.key_path(name, version)?);
        let result: KeyOperationResult =
            self.json(&op, Method::POST, &path, Some(encode(&op, &body)?))?;
        Ok(Signature {
            kid: self.result_kid(&op, name, &result.kid)?,
            value: b64url::decode(&result.value).map_err(|e| bad_base64(&op, &e))?,
        })
    }

    /// Asks the vault whether `signature` is valid for `digest` (`verify` permission).
    pub fn verify(
        &self,
        name: &str,
        version: Option<&str>,
        algorithm: SignatureAlgorithm,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<bool, KeyError> {
        let op = format!("verify with key '{name}'");
        check_digest(algorithm, digest)?;
        let body = KeyVerifyParameters {
            alg: algorithm.name().to_string(),
            digest: b64url::encode(digest),
            value: b64url::encode(signature),
        };
        let path = format!("{}/verify", self.key_path(name, version)?);
        let result: KeyVerifyResult =
            self.json(&op, Method::POST, &path, Some(encode(&op, &body)?))?;
        Ok(result.value)
    }

    /// Reads a key's rotation policy (`getrotationpolicy` permission).
    pub fn get_rotation_policy(&self, name: &str) -> Result<RotationPolicy, KeyError> {
        let op = format!("get rotation policy of key '{name}'");
        self.json(
            &op,
            Method::GET,
            &format!("{}/rotationpolicy", self.key_path(name, None)?),
            None,
        )
    }

    /// Replaces a key's rotation policy (`setrotationpolicy` permission).
    pub fn set_rotation_policy(
        &self,
        name: &str,
        policy: &RotationPolicy,
    ) -> Result<RotationPolicy, KeyError> {
        let op = format!("set rotation policy of key '{name}'");
        self.json(
            &op,
            Method::PUT,
            &format!("{}/rotationpolicy", self.key_path(name, None)?),
            Some(encode(&op, policy)?),
        )
    }

    fn key_path(&self, name: &str, version: Option<&str>) -> Result<String, KeyError> {
        if !valid_key_name(name) {
            return Err(KeyError::Invalid {
                reason: format!(
                    "key name '{name}' is not valid: use 1-127 letters, digits and dashes"
                ),
            });
        }
        match version {
            None => Ok(format!("{}/keys/{name}", self.vault_url)),
            Some(v) if valid_key_version(v) => Ok(format!("{}/keys/{name}/{v}", self.vault_url)),
            Some(v) => Err(KeyError::Invalid {
                reason: format!(
                    "key version '{v}' is not valid: expected 32 lowercase hex characters"
                ),
            }),
        }
    }

    fn deleted_path(&self, name: &str) -> Result<String, KeyError> {
        let key_path = self.key_path(name, None)?;
        Ok(key_path.replacen("/keys/", "/deletedkeys/", 1))
    }

    fn require_same_vault(&self, vault_url: &str) -> Result<(), KeyError> {
        if vault_url.eq_ignore_ascii_case(&self.vault_url) {
            Ok(())
        } else {
            Err(KeyError::Invalid {
                reason: format!(
                    "key in vault {vault_url} cannot be used through the client for {}",
                    self.vault_url
                ),
            })
        }
    }

    /// The kid of an operation's result, which must name the key that was asked for.
    fn result_kid(&self, op: &str, name: &str, kid: &str) -> Result<AkvKeyVersionId, KeyError> {
        match AkvKeyVersionId::parse(kid) {
            Ok(id) if id.name == name && id.vault_url.eq_ignore_ascii_case(&self.vault_url) => {
                Ok(id)
            }
            _ => Err(KeyError::Transient {
                reason: format!("{op}: the vault answered for another key ('{kid}'); retry later"),
            }),
        }
    }
}

fn check_digest(algorithm: SignatureAlgorithm, digest: &[u8]) -> Result<(), KeyError> {
    if digest.len() == algorithm.digest_len() {
        Ok(())
    } else {
        Err(KeyError::Invalid {
            reason: format!(
                "{} needs a {}-byte digest, got {} bytes: hash the message first",
                algorithm.name(),
                algorithm.digest_len(),
                digest.len()
            ),
        })
    }
}

fn bad_base64(op: &str, err: &base64::DecodeError) -> KeyError {
    KeyError::Transient {
        reason: format!("{op}: the vault sent a value that is not base64url ({err}); retry later"),
    }
}
