//! Parsing and validating data-plane request bodies: every bad input becomes a 400
//! BadParameter that says what was wrong.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use serde_json::Value;

use crate::http::ApiError;

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

/// Checks a key name against `^[0-9a-zA-Z-]{1,127}$`.
pub fn check_key_name(name: &str) -> Result<(), ApiError> {
    if !name.is_empty()
        && name.len() <= 127
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "key name '{}' is invalid: use 1-127 letters, digits and dashes",
            name.chars().take(130).collect::<String>()
        )))
    }
}

/// Checks a version segment: empty (latest) or 32 lowercase hex characters.
pub fn check_version(version: &str) -> Result<(), ApiError> {
    if version.is_empty()
        || (version.len() == 32
            && version
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "key version '{}' is invalid: versions are 32 lowercase hex characters",
            version.chars().take(40).collect::<String>()
        )))
    }
}

/// Decodes base64url (padding optional), naming the field on failure.
pub fn b64url(field: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    B64URL
        .decode(text.trim_end_matches('='))
        .map_err(|_| ApiError::bad(format!("'{field}' is not valid base64url")))
}

/// Encodes base64url without padding.
pub fn to_b64url(bytes: &[u8]) -> String {
    B64URL.encode(bytes)
}

/// A required string field.
pub fn string_field<'a>(body: &'a Value, field: &str) -> Result<&'a str, ApiError> {
    match body.get(field) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(ApiError::bad(format!("'{field}' is required"))),
        Some(_) => Err(ApiError::bad(format!("'{field}' must be a string"))),
    }
}

/// Optional `key_ops`: a list drawn from [`RSA_KEY_OPS`].
pub fn key_ops(body: &Value) -> Result<Option<Vec<String>>, ApiError> {
    let Some(v) = body.get("key_ops").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let list = v
        .as_array()
        .ok_or_else(|| ApiError::bad("'key_ops' must be an array of strings"))?;
    let mut out = Vec::new();
    for op in list {
        let op = op
            .as_str()
            .ok_or_else(|| ApiError::bad("'key_ops' must be an array of strings"))?;
        let canonical = RSA_KEY_OPS
            .iter()
            .find(|k| k.eq_ignore_ascii_case(op))
            .ok_or_else(|| {
                ApiError::bad(format!(
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

/// Optional tags: at most 15 string → string pairs.
pub fn tags(body: &Value) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    let Some(v) = body.get("tags").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let map = v
        .as_object()
        .ok_or_else(|| ApiError::bad("'tags' must be an object of strings"))?;
    if map.len() > MAX_TAGS {
        return Err(ApiError::bad(format!(
            "at most {MAX_TAGS} tags are allowed"
        )));
    }
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let v = v
            .as_str()
            .ok_or_else(|| ApiError::bad(format!("tag '{k}' must have a string value")))?;
        if k.is_empty() || k.len() > 512 || v.len() > 256 {
            return Err(ApiError::bad(
                "tag names must have 1-512 characters and values at most 256",
            ));
        }
        out.insert(k.clone(), v.to_string());
    }
    Ok(Some(out))
}

/// The settable attributes of a create/update body.
#[derive(Default)]
pub struct AttributeChanges {
    /// New enabled flag.
    pub enabled: Option<bool>,
    /// New nbf (`Some(None)` clears it).
    pub nbf: Option<Option<i64>>,
    /// New exp (`Some(None)` clears it).
    pub exp: Option<Option<i64>>,
}

/// Parses `attributes` (enabled, nbf, exp; exportable must not be true).
pub fn attributes(body: &Value) -> Result<AttributeChanges, ApiError> {
    let Some(attrs) = body.get("attributes").filter(|v| !v.is_null()) else {
        return Ok(AttributeChanges::default());
    };
    if !attrs.is_object() {
        return Err(ApiError::bad("'attributes' must be an object"));
    }
    let time = |name: &str| -> Result<Option<Option<i64>>, ApiError> {
        match attrs.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => v
                .as_i64()
                .filter(|t| *t >= 0)
                .map(|t| Some(Some(t)))
                .ok_or_else(|| ApiError::bad(format!("attributes.{name} must be unix seconds"))),
        }
    };
    let enabled = match attrs.get("enabled") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(ApiError::bad("attributes.enabled must be true or false")),
    };
    if attrs.get("exportable").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::bad(
            "exportable keys are not supported: private keys never leave the vault",
        ));
    }
    let changes = AttributeChanges {
        enabled,
        nbf: time("nbf")?,
        exp: time("exp")?,
    };
    if let (Some(Some(nbf)), Some(Some(exp))) = (changes.nbf, changes.exp) {
        if exp <= nbf {
            return Err(ApiError::bad(
                "attributes.exp must be later than attributes.nbf",
            ));
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_versions_and_base64url() {
        assert!(check_key_name("k-1").is_ok());
        assert!(check_key_name(&"a".repeat(127)).is_ok());
        for bad in ["", "a_b", "a.b", "ключ", &"a".repeat(128)] {
            assert_eq!(
                check_key_name(bad).unwrap_err().code,
                "BadParameter",
                "{bad}"
            );
        }
        assert!(check_version("").is_ok());
        assert!(check_version(&"0a".repeat(16)).is_ok());
        assert!(check_version(&"0A".repeat(16)).is_err());
        assert!(check_version("123").is_err());
        assert_eq!(b64url("value", "AQID").unwrap(), vec![1, 2, 3]);
        assert_eq!(b64url("value", "AQI=").unwrap(), vec![1, 2]);
        assert!(b64url("value", "A+/=")
            .unwrap_err()
            .message
            .contains("'value'"));
    }

    #[test]
    fn ops_tags_and_attributes_are_validated() {
        assert_eq!(
            key_ops(&json!({"key_ops": ["WRAPKEY", "unwrapKey"]}))
                .unwrap()
                .unwrap(),
            vec!["wrapKey", "unwrapKey"]
        );
        assert!(key_ops(&json!({"key_ops": ["fly"]})).is_err());
        assert!(key_ops(&json!({"key_ops": "sign"})).is_err());
        assert!(tags(&json!({"tags": {"a": 1}})).is_err());
        let many: serde_json::Map<String, Value> =
            (0..16).map(|i| (format!("t{i}"), json!("v"))).collect();
        assert!(tags(&json!({ "tags": many })).is_err());
        let a =
            attributes(&json!({"attributes": {"enabled": false, "exp": 10, "nbf": null}})).unwrap();
        assert_eq!(
            (a.enabled, a.exp, a.nbf),
            (Some(false), Some(Some(10)), Some(None))
        );
        assert!(attributes(&json!({"attributes": {"enabled": "yes"}})).is_err());
        assert!(attributes(&json!({"attributes": {"nbf": 10, "exp": 5}})).is_err());
        assert!(attributes(&json!({"attributes": {"exportable": true}})).is_err());
    }
}
