//! Unit tests of the RSA module.

use super::*;
use crate::Error;

fn key() -> RsaPrivateKey {
    RsaPrivateKey::generate(RsaKeySize::Bits2048).unwrap()
}

#[test]
fn oaep_round_trips_and_rejects_tampering() {
    let k = key();
    for alg in [
        EncryptionAlgorithm::RsaOaep,
        EncryptionAlgorithm::RsaOaep256,
    ] {
        let ct = k.public_key().encrypt(alg, &[7u8; 32]).unwrap();
        assert_eq!(ct.len(), 256);
        assert_eq!(k.decrypt(alg, &ct).unwrap().expose_secret(), &[7u8; 32]);
        let mut bad = ct.clone();
        bad[10] ^= 1;
        assert!(matches!(k.decrypt(alg, &bad), Err(Error::Authentication)));
    }
    let ct = k
        .public_key()
        .encrypt(EncryptionAlgorithm::RsaOaep, b"x")
        .unwrap();
    assert!(k.decrypt(EncryptionAlgorithm::RsaOaep256, &ct).is_err());
}

#[test]
fn rsa1_5_needs_an_explicit_opt_in() {
    assert!(EncryptionAlgorithm::parse("RSA1_5", false).is_err());
    let alg = EncryptionAlgorithm::parse("RSA1_5", true).unwrap();
    let k = key();
    let ct = k.public_key().encrypt(alg, b"legacy").unwrap();
    assert_eq!(k.decrypt(alg, &ct).unwrap().expose_secret(), b"legacy");
    assert!(EncryptionAlgorithm::parse("RSA-OAEP-512", true).is_err());
}

#[test]
fn signatures_verify_only_for_the_signed_digest() {
    let k = key();
    for name in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
        let alg = SignatureAlgorithm::parse(name).unwrap();
        let digest = alg.hash(b"message");
        let sig = k.sign_digest(alg, &digest).unwrap();
        assert!(
            k.public_key().verify_digest(alg, &digest, &sig).unwrap(),
            "{name}"
        );
        let other = alg.hash(b"other");
        assert!(
            !k.public_key().verify_digest(alg, &other, &sig).unwrap(),
            "{name}"
        );
    }
    let err = k
        .sign_digest(SignatureAlgorithm::Rs256, &[0u8; 20])
        .unwrap_err();
    assert!(
        err.to_string().contains("expected 32 bytes, got 20"),
        "{err}"
    );
}

#[test]
fn der_export_import_keeps_the_key_and_public_components_verify() {
    let k = key();
    let der = k.to_pkcs8_der().unwrap();
    let again = RsaPrivateKey::from_pkcs8_der(der.expose_secret()).unwrap();
    assert_eq!(again.public_key(), k.public_key());
    assert_eq!(k.public_key().size_bits(), 2048);
    assert_eq!(k.public_key().e(), &[1, 0, 1]);
    let public = RsaPublicKey::from_components(k.public_key().n(), k.public_key().e()).unwrap();
    let ct = public
        .encrypt(EncryptionAlgorithm::RsaOaep256, b"dek")
        .unwrap();
    assert_eq!(
        again
            .decrypt(EncryptionAlgorithm::RsaOaep256, &ct)
            .unwrap()
            .expose_secret(),
        b"dek"
    );
    assert!(RsaPrivateKey::from_pkcs8_der(b"not a key").is_err());
    assert!(format!("{k:?}").contains("REDACTED"));
}

#[test]
fn only_vault_sizes_are_accepted() {
    for bits in [1024, 3071, 8192, 0] {
        assert!(RsaKeySize::from_bits(bits).is_err(), "{bits}");
    }
    assert_eq!(RsaKeySize::from_bits(3072).unwrap().bits(), 3072);
}
