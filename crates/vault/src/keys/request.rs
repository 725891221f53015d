//! Reading data-plane request bodies into the typed AKV model and validating them:
//! every bad input becomes a [`KeyOpError::BadParameter`] that says what was wrong.

use std::collections::BTreeMap;

use pgcmk_akv_model::{
    b64url, valid_key_name, valid_key_version, AttributeChanges, KeyImportParameters,
};
use pgcmk_crypto::rsa::{RsaPrivateComponents, RsaPrivateKey};
use pgcmk_crypto::SecretBytes;
use serde::de::DeserializeOwned;

use super::error::{bad, KeyOpError};

/// JWK operations an RSA key may permit.
pub const RSA_KEY_OPS: [&str; 6] = [
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "wrapKey",
    "unwrapKey",
];
/// Azure's tag limit.
const MAX_TAGS: usize = 15;

/// Parses a JSON request body into `T`; an empty body is `{}`. Unknown fields are
/// ignored, as Azure does.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, KeyOpError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => bad(format!("the request body is invalid: {e}")),
        _ => bad(format!("the request body is not valid JSON: {e}")),
    })
}

/// Checks a key name against `^[0-9a-zA-Z-]{1,127}$`.
pub fn check_key_name(name: &str) -> Result<(), KeyOpError> {
    if valid_key_name(name) {
        Ok(())
    } else {
        Err(bad(format!(
            "key name '{}' is invalid: use 1-127 letters, digits and dashes",
            name.chars().take(130).collect::<String>()
        )))
    }
}

/// Checks a version segment: empty (latest) or 32 lowercase hex characters.
pub fn check_version(version: &str) -> Result<(), KeyOpError> {
    if version.is_empty() || valid_key_version(version) {
        Ok(())
    } else {
        Err(bad(format!(
            "key version '{}' is invalid: versions are 32 lowercase hex characters",
            version.chars().take(40).collect::<String>()
        )))
    }
}

/// Decodes base64url (padding optional), naming the field on failure.
pub fn decode_b64url(field: &str, text: &str) -> Result<Vec<u8>, KeyOpError> {
    b64url::decode(text).map_err(|_| bad(format!("'{field}' is not valid base64url")))
}

/// The RSA private key of an import body (`PUT /keys/{name}`): a JWK of kty `RSA`
/// with every CRT component, 2048, 3072 or 4096 bits. The decoded private parts
/// live only in zeroized buffers.
pub fn imported_private_key(body: &KeyImportParameters) -> Result<RsaPrivateKey, KeyOpError> {
    let jwk = &body.key;
    if jwk.kty != "RSA" || body.hsm == Some(true) {
        return Err(bad(format!(
            "key type '{}' cannot be imported: this vault imports software-protected RSA \
             keys (kty RSA, hsm false); an RSA-HSM key would have to arrive wrapped for the \
             vault's HSM (Azure's BYOK), which this vault does not accept: create the key \
             in the vault with kty RSA-HSM instead",
            jwk.kty
        )));
    }
    let part = |field: &str, value: &Option<String>| -> Result<Vec<u8>, KeyOpError> {
        let field = format!("key.{field}");
        decode_b64url(&field, required(&field, value)?)
    };
    let secret = |field: &str, value: &Option<String>| part(field, value).map(SecretBytes::new);
    let components = RsaPrivateComponents {
        n: part("n", &jwk.n)?,
        e: part("e", &jwk.e)?,
        d: secret("d", &jwk.d)?,
        p: secret("p", &jwk.p)?,
        q: secret("q", &jwk.q)?,
        dp: secret("dp", &jwk.dp)?,
        dq: secret("dq", &jwk.dq)?,
        qi: secret("qi", &jwk.qi)?,
    };
    RsaPrivateKey::from_components(&components).map_err(|e| {
        bad(format!(
            "the key cannot be imported: {e} (RSA 2048, 3072 or 4096 with all CRT components)"
        ))
    })
}

/// A field the request must carry.
pub fn required<'a>(field: &str, value: &'a Option<String>) -> Result<&'a str, KeyOpError> {
    value
        .as_deref()
        .ok_or_else(|| bad(format!("'{field}' is required")))
}

/// `key_ops` drawn from [`RSA_KEY_OPS`] (any case), in canonical spelling, no duplicates.
pub fn key_ops(ops: Option<&[String]>) -> Result<Option<Vec<String>>, KeyOpError> {
    let Some(list) = ops else {
        return Ok(None);
    };
    let mut out: Vec<String> = Vec::new();
    for op in list {
        let canonical = RSA_KEY_OPS
            .iter()
            .find(|k| k.eq_ignore_ascii_case(op))
            .ok_or_else(|| {
                bad(format!(
                    "key operation '{op}' is invalid: use {}",
                    RSA_KEY_OPS.join(", ")
                ))
            })?;
        if !out.iter().any(|o| o == canonical) {
            out.push(canonical.to_string());
        }
    }
    Ok(Some(out))
}

/// Tags: at most 15, names of 1-512 characters, values of at most 256.
pub fn tags(
    tags: Option<BTreeMap<String, String>>,
) -> Result<Option<BTreeMap<String, String>>, KeyOpError> {
    let Some(map) = tags else {
        return Ok(None);
    };
    if map.len() > MAX_TAGS {
        return Err(bad(format!("at most {MAX_TAGS} tags are allowed")));
    }
    if map
        .iter()
        .any(|(k, v)| k.is_empty() || k.len() > 512 || v.len() > 256)
    {
        return Err(bad(
            "tag names must have 1-512 characters and values at most 256",
        ));
    }
    Ok(Some(map))
}

/// Attribute changes: times are non-negative Unix seconds, `exp` after `nbf`, and
/// keys are never exportable.
pub fn attributes(changes: Option<AttributeChanges>) -> Result<AttributeChanges, KeyOpError> {
    let changes = changes.unwrap_or_default();
    for (name, value) in [("nbf", changes.nbf), ("exp", changes.exp)] {
        if value.flatten().is_some_and(|t| t < 0) {
            return Err(bad(format!("attributes.{name} must be unix seconds")));
        }
    }
    if changes.exportable == Some(true) {
        return Err(bad(
            "exportable keys are not supported: private keys never leave the vault",
        ));
    }
    check_window(changes.nbf.flatten(), changes.exp.flatten())?;
    Ok(changes)
}

/// Refuses an `exp` that is not later than `nbf`.
pub fn check_window(nbf: Option<i64>, exp: Option<i64>) -> Result<(), KeyOpError> {
    match (nbf, exp) {
        (Some(nbf), Some(exp)) if exp <= nbf => {
            Err(bad("attributes.exp must be later than attributes.nbf"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgcmk_akv_model::{KeyCreateParameters, KeyUpdateParameters};

    fn is_bad<T: std::fmt::Debug>(r: Result<T, KeyOpError>) -> bool {
        matches!(r, Err(KeyOpError::BadParameter(_)))
    }

    #[test]
    fn names_versions_and_base64url() {
        assert!(check_key_name("k-1").is_ok());
        assert!(check_key_name(&"a".repeat(127)).is_ok());
        for bad in ["", "a_b", "a.b", "ключ", &"a".repeat(128)] {
            assert!(is_bad(check_key_name(bad)), "{bad}");
        }
        assert!(check_version("").is_ok());
        assert!(check_version(&"0a".repeat(16)).is_ok());
        assert!(check_version(&"0A".repeat(16)).is_err());
        assert!(check_version("123").is_err());
        assert_eq!(decode_b64url("value", "AQID").unwrap(), vec![1, 2, 3]);
        assert_eq!(decode_b64url("value", "AQI=").unwrap(), vec![1, 2]);
        assert!(decode_b64url("value", "A+/=")
            .unwrap_err()
            .to_string()
            .contains("'value'"));
    }

    #[test]
    fn bodies_decode_typed_and_bad_json_is_a_bad_parameter() {
        let c: KeyCreateParameters = decode(br#"{"kty":"RSA","unknown":1}"#).unwrap();
        assert_eq!(c.kty, "RSA");
        let empty: KeyUpdateParameters = decode(b"  ").unwrap();
        assert_eq!(empty, KeyUpdateParameters::default());
        let syntax = decode::<KeyCreateParameters>(br#"{"kty": "RSA","#).unwrap_err();
        assert!(syntax.to_string().contains("not valid JSON"), "{syntax}");
        assert!(is_bad(decode::<KeyCreateParameters>(b"[1,2]")));
        assert!(is_bad(decode::<KeyCreateParameters>(
            br#"{"kty":"RSA","tags":{"a":1}}"#
        )));
    }

    #[test]
    fn ops_tags_and_attributes_are_validated() {
        let ops = ["WRAPKEY".to_string(), "unwrapKey".to_string()];
        assert_eq!(
            key_ops(Some(&ops)).unwrap().unwrap(),
            vec!["wrapKey", "unwrapKey"]
        );
        assert!(is_bad(key_ops(Some(&["fly".to_string()]))));
        let many: BTreeMap<String, String> =
            (0..16).map(|i| (format!("t{i}"), "v".into())).collect();
        assert!(is_bad(tags(Some(many))));
        let a: KeyUpdateParameters =
            decode(br#"{"attributes": {"enabled": false, "exp": 10, "nbf": null}}"#).unwrap();
        let a = attributes(a.attributes).unwrap();
        assert_eq!(
            (a.enabled, a.exp, a.nbf),
            (Some(false), Some(Some(10)), Some(None))
        );
        assert!(is_bad(decode::<KeyUpdateParameters>(
            br#"{"attributes": {"enabled": "yes"}}"#
        )));
        for body in [
            r#"{"attributes": {"nbf": 10, "exp": 5}}"#,
            r#"{"attributes": {"exportable": true}}"#,
            r#"{"attributes": {"nbf": -1}}"#,
        ] {
            let p: KeyUpdateParameters = decode(body.as_bytes()).unwrap();
            assert!(is_bad(attributes(p.attributes)), "{body}");
        }
    }
}
