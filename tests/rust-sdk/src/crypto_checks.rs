//! Cryptographic operations through `KeyClient`: wrap/unwrap, encrypt/decrypt,
//! sign/verify (checked against the public key locally too) and random bytes.

use aws_lc_rs::signature::{RsaParameters, RsaPublicKeyComponents, RSA_PSS_2048_8192_SHA256};
use azure_security_keyvault_keys::models::{
    EncryptionAlgorithm, GetRandomBytesParameters, JsonWebKey, KeyOperationParameters,
    SignParameters, SignatureAlgorithm, VerifyParameters,
};
use azure_security_keyvault_keys::ResourceExt;

use crate::checks::create;
use crate::{ensure, expect_error, model, Context, Env, Outcome};

/// SHA-256 of `message`.
pub fn sha256(message: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message)
        .as_ref()
        .to_vec()
}

/// Checks `signature` over `message` with the public part of `jwk`.
pub fn verify_locally(
    jwk: &JsonWebKey,
    params: &'static RsaParameters,
    message: &[u8],
    signature: &[u8],
) -> Outcome {
    let (Some(n), Some(e)) = (&jwk.n, &jwk.e) else {
        return Err("the key has no public part".into());
    };
    RsaPublicKeyComponents { n, e }
        .verify(params, message, signature)
        .map_err(|_| "the signature does not verify with the key's public part".to_string())
}

fn operation(algorithm: EncryptionAlgorithm, value: Vec<u8>) -> KeyOperationParameters {
    KeyOperationParameters {
        algorithm: Some(algorithm),
        value: Some(value),
        ..KeyOperationParameters::default()
    }
}

pub async fn wrap_and_unwrap_round_trip(env: &Env) -> Outcome {
    let c = &env.protected;
    create(c, "sdk-wrap", 2048).await?;
    let dek = vec![0x5a; 32];
    let wrapped = model(
        c.wrap_key(
            "sdk-wrap",
            operation(EncryptionAlgorithm::RsaOaep256, dek.clone())
                .try_into()
                .context("body")?,
            None,
        ),
        "wrap_key",
    )
    .await?;
    let version = wrapped
        .resource_id()
        .context("wrapped kid")?
        .version
        .ok_or("wrap_key answered a versionless kid")?;
    let ciphertext = wrapped.result.unwrap_or_default();
    ensure(ciphertext.len() == 256, || {
        format!("a 2048-bit wrap is 256 bytes, got {}", ciphertext.len())
    })?;
    let unwrapped = model(
        c.unwrap_key(
            "sdk-wrap",
            &version,
            operation(EncryptionAlgorithm::RsaOaep256, ciphertext)
                .try_into()
                .context("body")?,
            None,
        ),
        "unwrap_key",
    )
    .await?;
    ensure(unwrapped.result == Some(dek), || {
        "unwrap gave other bytes".into()
    })
}

pub async fn encrypt_and_decrypt_round_trip(env: &Env) -> Outcome {
    let c = &env.protected;
    create(c, "sdk-encrypt", 2048).await?;
    let plaintext = b"a short secret".to_vec();
    let encrypted = model(
        c.encrypt(
            "sdk-encrypt",
            operation(EncryptionAlgorithm::RsaOaep, plaintext.clone())
                .try_into()
                .context("body")?,
            None,
        ),
        "encrypt",
    )
    .await?;
    let version = encrypted
        .resource_id()
        .context("encrypted kid")?
        .version
        .ok_or("encrypt answered a versionless kid")?;
    let decrypted = model(
        c.decrypt(
            "sdk-encrypt",
            &version,
            operation(
                EncryptionAlgorithm::RsaOaep,
                encrypted.result.unwrap_or_default(),
            )
            .try_into()
            .context("body")?,
            None,
        ),
        "decrypt",
    )
    .await?;
    ensure(decrypted.result == Some(plaintext), || {
        "decrypt gave other bytes".into()
    })
}

pub async fn sign_verifies_in_the_vault_and_locally(env: &Env) -> Outcome {
    let c = &env.protected;
    create(c, "sdk-sign", 2048).await?;
    let message = b"the message";
    let digest = sha256(message);
    let signed = model(
        c.sign(
            "sdk-sign",
            SignParameters {
                algorithm: Some(SignatureAlgorithm::Ps256),
                value: Some(digest.clone()),
            }
            .try_into()
            .context("body")?,
            None,
        ),
        "sign",
    )
    .await?;
    let version = signed
        .resource_id()
        .context("signed kid")?
        .version
        .ok_or("sign answered a versionless kid")?;
    let signature = signed.result.unwrap_or_default();
    let verify = |digest: Vec<u8>| VerifyParameters {
        algorithm: Some(SignatureAlgorithm::Ps256),
        digest: Some(digest),
        signature: Some(signature.clone()),
    };
    for (digest, expected) in [(digest, true), (sha256(b"another message"), false)] {
        let answer = model(
            c.verify(
                "sdk-sign",
                &version,
                verify(digest).try_into().context("body")?,
                None,
            ),
            "verify",
        )
        .await?;
        ensure(answer.value == Some(expected), || {
            format!("verify answered {:?}, expected {expected}", answer.value)
        })?;
    }
    let public = model(c.get_key("sdk-sign", None), "get_key")
        .await?
        .key
        .unwrap_or_default();
    verify_locally(&public, &RSA_PSS_2048_8192_SHA256, message, &signature)
}

pub async fn random_bytes_come_in_the_count_asked(env: &Env) -> Outcome {
    let c = &env.protected;
    let ask = |count: i32| async move {
        let body = GetRandomBytesParameters { count: Some(count) };
        c.get_random_bytes(body.try_into()?, None)
            .await?
            .into_model()
    };
    let first = ask(32)
        .await
        .context("get_random_bytes")?
        .value
        .unwrap_or_default();
    let second = ask(32)
        .await
        .context("get_random_bytes")?
        .value
        .unwrap_or_default();
    ensure(first.len() == 32 && second.len() == 32, || {
        format!("asked 32 bytes, got {} and {}", first.len(), second.len())
    })?;
    ensure(first != second, || "two answers were the same bytes".into())?;
    let most = ask(128)
        .await
        .context("get_random_bytes of 128")?
        .value
        .unwrap_or_default();
    ensure(most.len() == 128, || {
        format!("asked 128 bytes, got {}", most.len())
    })?;
    expect_error(ask(129).await, "129 random bytes", 400, "BadParameter")
}
