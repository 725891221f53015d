//! Cryptographic operations on one key version: encrypt/decrypt, wrap/unwrap,
//! sign/verify, after checking that the version is enabled, valid now and permits it.

use std::sync::Arc;

use pgcmk_akv_model::{
    b64url, KeyOperationParameters, KeyOperationResult, KeyVerifyParameters, KeyVerifyResult,
};
use pgcmk_crypto::rsa::{EncryptionAlgorithm, RsaPrivateKey, RsaPublicKey, SignatureAlgorithm};

use super::error::{bad, KeyOpError, Unusable};
use super::hsm_version;
use super::model::VersionRecord;
use super::ops::{active_key, seal_aad, version_record, Ctx, Outcome};
use super::request::{decode, decode_b64url};
use super::route::CryptoOp;
use crate::service::Service;
use crate::Error;

fn check_usable(v: &VersionRecord, op: CryptoOp, now: i64) -> Result<(), KeyOpError> {
    let name = op.key_op();
    let reason = if !v.attributes.enabled {
        Unusable::Disabled
    } else if v.attributes.nbf.is_some_and(|nbf| now < nbf) {
        Unusable::NotYetValid
    } else if v.attributes.exp.is_some_and(|exp| now >= exp) {
        Unusable::Expired
    } else if !v.key_ops.iter().any(|o| o == name) {
        Unusable::OperationNotPermitted
    } else {
        return Ok(());
    };
    Err(KeyOpError::Unusable {
        operation: name,
        reason,
    })
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
    .map_err(|_| crate::StorageError::CorruptSealedKey { id: id.clone() })?;
    let der = service
        .keys
        .storage
        .open(seal_aad(vault, name, &v.version).as_bytes(), &sealed)?;
    let key = Arc::new(RsaPrivateKey::from_pkcs8_der(der.expose_secret())?);
    service.cache.insert(&id, key.clone());
    Ok(key)
}

fn public_key(v: &VersionRecord) -> Result<RsaPublicKey, KeyOpError> {
    let n = decode_b64url("n", &v.n)?;
    let e = decode_b64url("e", &v.e)?;
    Ok(RsaPublicKey::from_components(&n, &e)?)
}

pub(super) fn crypto(
    ctx: &Ctx<'_>,
    name: &str,
    version: &str,
    op: CryptoOp,
    body: &[u8],
) -> Result<Outcome, KeyOpError> {
    let (alg, value, digest) = if op == CryptoOp::Verify {
        let p: KeyVerifyParameters = decode(body)?;
        let digest = decode_b64url("digest", &p.digest)?;
        (
            p.alg.clone(),
            decode_b64url("value", &p.value)?,
            Some(digest),
        )
    } else {
        let p: KeyOperationParameters = decode(body)?;
        (p.alg.clone(), decode_b64url("value", &p.value)?, None)
    };
    let alg = alg.as_str();
    let key = active_key(ctx, name)?;
    let v = version_record(ctx, &key, version)?;
    check_usable(&v, op, ctx.service.now())?;
    let kid = ctx.view().kid(name, Some(&v.version));
    let bad_alg = |e: pgcmk_crypto::Error| bad(format!("algorithm '{alg}': {e}"));
    let result = |out: &[u8]| KeyOperationResult {
        kid: kid.clone(),
        value: b64url::encode(out),
    };
    let version = Some(v.version.clone());
    match op {
        CryptoOp::Encrypt | CryptoOp::WrapKey => {
            let alg = EncryptionAlgorithm::parse(alg, ctx.vault.allow_rsa1_5).map_err(bad_alg)?;
            let out = public_key(&v)?
                .encrypt(alg, &value)
                .map_err(|e| bad(format!("cannot {}: {e}", op.key_op())))?;
            Outcome::new(result(&out), version)
        }
        CryptoOp::Decrypt | CryptoOp::UnwrapKey => {
            let alg = EncryptionAlgorithm::parse(alg, ctx.vault.allow_rsa1_5).map_err(bad_alg)?;
            let plain = match &v.hsm {
                Some(object) => hsm_version::hsm(ctx.service)?.decrypt(object, alg, &value)?,
                None => private_key(ctx.service, &ctx.vault.name, name, &v)?
                    .decrypt(alg, &value)
                    .map_err(decrypt_error)?,
            };
            Outcome::new(result(plain.expose_secret()), version)
        }
        CryptoOp::Sign => {
            let alg = SignatureAlgorithm::parse(alg).map_err(bad_alg)?;
            let sig = match &v.hsm {
                Some(object) => hsm_version::hsm(ctx.service)?.sign(object, alg, &value)?,
                None => private_key(ctx.service, &ctx.vault.name, name, &v)?
                    .sign_digest(alg, &value)
                    .map_err(|e| bad(format!("cannot sign: {e}")))?,
            };
            Outcome::new(result(&sig), version)
        }
        CryptoOp::Verify => {
            let alg = SignatureAlgorithm::parse(alg).map_err(bad_alg)?;
            let ok = public_key(&v)?
                .verify_digest(alg, &digest.unwrap_or_default(), &value)
                .map_err(|e| bad(format!("cannot verify: {e}")))?;
            Outcome::new(KeyVerifyResult { value: ok }, version)
        }
    }
}

/// A software decryption's failure, without telling padding errors apart.
fn decrypt_error(e: pgcmk_crypto::Error) -> KeyOpError {
    match e {
        pgcmk_crypto::Error::InvalidLength { expected, got, .. } => bad(format!(
            "the ciphertext must be {expected} bytes for this key, not {got}"
        )),
        _ => bad("the ciphertext could not be decrypted with this key version and algorithm"),
    }
}
