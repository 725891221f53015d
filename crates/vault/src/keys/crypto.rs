//! Cryptographic operations on one key version: encrypt/decrypt, wrap/unwrap,
//! sign/verify, after checking that the version is enabled, valid now and permits it.

use std::sync::Arc;

use pgcmk_crypto::rsa::{EncryptionAlgorithm, RsaPrivateKey, RsaPublicKey, SignatureAlgorithm};
use serde_json::{json, Value};

use super::model::VersionRecord;
use super::ops::{active_key, seal_aad, version_record, Ctx, Outcome};
use super::request::{self, b64url, to_b64url};
use super::route::CryptoOp;
use crate::http::ApiError;
use crate::service::Service;
use crate::{now_unix, Error};

fn check_usable(v: &VersionRecord, op: CryptoOp) -> Result<(), ApiError> {
    let name = op.key_op();
    let now = now_unix();
    if !v.attributes.enabled {
        return Err(ApiError::forbidden(format!(
            "Operation {name} is not allowed on a disabled key."
        ))
        .with_inner("KeyDisabled"));
    }
    if v.attributes.nbf.is_some_and(|nbf| now < nbf) {
        return Err(ApiError::forbidden(format!(
            "Operation {name} is not allowed on a key that is not yet valid (nbf)."
        ))
        .with_inner("KeyNotYetValid"));
    }
    if v.attributes.exp.is_some_and(|exp| now >= exp) {
        return Err(ApiError::forbidden(format!(
            "Operation {name} is not allowed on an expired key."
        ))
        .with_inner("KeyExpired"));
    }
    if !v.key_ops.iter().any(|o| o == name) {
        return Err(ApiError::forbidden(format!(
            "Operation {name} is not permitted by this key's key_ops."
        ))
        .with_inner("KeyOperationForbidden"));
    }
    Ok(())
}

/// The unsealed private key of a version (cached).
pub(super) fn private_key(
    service: &Service,
    vault: &str,
    name: &str,
    v: &VersionRecord,
) -> Result<Arc<RsaPrivateKey>, Error> {
    let id = format!("{vault}/{name}/{}", v.version);
    if let Some(k) = service.cache.get(&id) {
        return Ok(k);
    }
    let sealed = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        &v.sealed_private,
    )
    .map_err(|_| Error::Storage(format!("sealed key {id} is corrupt")))?;
    let der = service
        .keys
        .storage
        .open(seal_aad(vault, name, &v.version).as_bytes(), &sealed)?;
    let key = Arc::new(RsaPrivateKey::from_pkcs8_der(der.expose_secret())?);
    service.cache.insert(&id, key.clone());
    Ok(key)
}

fn public_key(v: &VersionRecord) -> Result<RsaPublicKey, ApiError> {
    let n = b64url("n", &v.n)?;
    let e = b64url("e", &v.e)?;
    RsaPublicKey::from_components(&n, &e).map_err(ApiError::internal)
}

pub(super) fn crypto(
    ctx: &Ctx<'_>,
    name: &str,
    version: &str,
    op: CryptoOp,
    body: &Value,
) -> Result<Outcome, ApiError> {
    let alg = request::string_field(body, "alg")?;
    let value = b64url("value", request::string_field(body, "value")?)?;
    let key = active_key(ctx, name)?;
    let v = version_record(ctx, &key, version)?;
    check_usable(&v, op)?;
    let kid = ctx.view().kid(name, Some(&v.version));
    let bad_alg = |e: pgcmk_crypto::Error| ApiError::bad(format!("algorithm '{alg}': {e}"));
    let result = match op {
        CryptoOp::Encrypt | CryptoOp::WrapKey => {
            let alg = EncryptionAlgorithm::parse(alg, ctx.vault.allow_rsa1_5).map_err(bad_alg)?;
            let out = public_key(&v)?
                .encrypt(alg, &value)
                .map_err(|e| ApiError::bad(format!("cannot {}: {e}", op.key_op())))?;
            json!({ "kid": kid, "value": to_b64url(&out) })
        }
        CryptoOp::Decrypt | CryptoOp::UnwrapKey => {
            let alg = EncryptionAlgorithm::parse(alg, ctx.vault.allow_rsa1_5).map_err(bad_alg)?;
            let private = private_key(ctx.service, &ctx.vault.name, name, &v)?;
            let plain = private.decrypt(alg, &value).map_err(|e| match e {
                pgcmk_crypto::Error::InvalidLength { expected, got, .. } => ApiError::bad(format!(
                    "the ciphertext must be {expected} bytes for this key, not {got}"
                )),
                _ => ApiError::bad(
                    "the ciphertext could not be decrypted with this key version and algorithm",
                ),
            })?;
            json!({ "kid": kid, "value": to_b64url(plain.expose_secret()) })
        }
        CryptoOp::Sign => {
            let alg = SignatureAlgorithm::parse(alg).map_err(bad_alg)?;
            let private = private_key(ctx.service, &ctx.vault.name, name, &v)?;
            let sig = private
                .sign_digest(alg, &value)
                .map_err(|e| ApiError::bad(format!("cannot sign: {e}")))?;
            json!({ "kid": kid, "value": to_b64url(&sig) })
        }
        CryptoOp::Verify => {
            let alg = SignatureAlgorithm::parse(alg).map_err(bad_alg)?;
            let digest = b64url("digest", request::string_field(body, "digest")?)?;
            let ok = public_key(&v)?
                .verify_digest(alg, &digest, &value)
                .map_err(|e| ApiError::bad(format!("cannot verify: {e}")))?;
            json!({ "value": ok })
        }
    };
    Ok(Outcome::new(result, Some(v.version)))
}
