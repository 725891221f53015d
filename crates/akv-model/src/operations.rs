//! Request bodies of the keys operations, and the results of cryptographic ones.
//! Values that may carry key material are wiped when dropped and never printed.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use zeroize::Zeroize;

/// The settable attributes of a create, import or update body. In an update, a
/// field that is absent is left as it is, and `null` clears `nbf`/`exp`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeChanges {
    /// Enable or disable the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Not valid before (Unix seconds); `Some(None)` clears it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub nbf: Option<Option<i64>>,
    /// Expires at (Unix seconds); `Some(None)` clears it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub exp: Option<Option<i64>>,
    /// Whether the private key may be exported (pgcmk's vault refuses `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exportable: Option<bool>,
}

/// A field that is present (possibly `null`), as opposed to absent (`default`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /keys/{name}/create`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCreateParameters {
    /// Key type: `RSA` (pgcmk's vault creates software-protected RSA keys).
    pub kty: String,
    /// Modulus size in bits (default 2048).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_size: Option<u64>,
    /// Public exponent (only 65537).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_exponent: Option<u64>,
    /// Permitted operations (default: all RSA operations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    /// Initial attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<AttributeChanges>,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

/// `PATCH /keys/{name}/{version?}`: `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUpdateParameters {
    /// Replace the permitted operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    /// Change attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<AttributeChanges>,
    /// Replace the tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

/// `PUT /keys/{name}`: import an RSA private key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct KeyImportParameters {
    /// The key, with its private components.
    pub key: PrivateJsonWebKey,
    /// Import into an HSM (pgcmk's vault holds software keys only).
    #[serde(default, rename = "Hsm", alias = "hsm")]
    pub hsm: Option<bool>,
    /// Initial attributes.
    #[serde(default)]
    pub attributes: Option<AttributeChanges>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
}

/// An RSA private key in JWK form (all fields base64url). Wiped on drop; `Debug`
/// shows only the key type.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PrivateJsonWebKey {
    /// Key type (`RSA`).
    #[serde(default)]
    pub kty: String,
    /// Permitted operations.
    #[serde(default)]
    pub key_ops: Option<Vec<String>>,
    /// Modulus.
    #[serde(default)]
    pub n: Option<String>,
    /// Public exponent.
    #[serde(default)]
    pub e: Option<String>,
    /// Private exponent.
    #[serde(default)]
    pub d: Option<String>,
    /// First prime.
    #[serde(default)]
    pub p: Option<String>,
    /// Second prime.
    #[serde(default)]
    pub q: Option<String>,
    /// First CRT exponent.
    #[serde(default)]
    pub dp: Option<String>,
    /// Second CRT exponent.
    #[serde(default)]
    pub dq: Option<String>,
    /// CRT coefficient.
    #[serde(default)]
    pub qi: Option<String>,
}

impl Drop for PrivateJsonWebKey {
    fn drop(&mut self) {
        for part in [
            &mut self.d,
            &mut self.p,
            &mut self.q,
            &mut self.dp,
            &mut self.dq,
            &mut self.qi,
        ] {
            part.zeroize();
        }
    }
}

impl fmt::Debug for PrivateJsonWebKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateJsonWebKey")
            .field("kty", &self.kty)
            .finish_non_exhaustive()
    }
}

/// `POST .../encrypt|decrypt|wrapkey|unwrapkey|sign`: an algorithm and a base64url value.
/// The value is wiped on drop (it may be a DEK).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyOperationParameters {
    /// Algorithm (`RSA-OAEP-256`, `RS256`, ...).
    pub alg: String,
    /// The input, base64url.
    pub value: String,
}

/// `POST .../verify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVerifyParameters {
    /// Signature algorithm.
    pub alg: String,
    /// The digest that was signed, base64url.
    pub digest: String,
    /// The signature, base64url.
    pub value: String,
}

/// The result of encrypt, decrypt, wrap, unwrap and sign. The value is wiped on drop
/// (after an unwrap it is the plaintext key).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyOperationResult {
    /// The exact key version used.
    pub kid: String,
    /// The output, base64url.
    pub value: String,
}

macro_rules! wiped_value {
    ($t:ty) => {
        impl Drop for $t {
            fn drop(&mut self) {
                self.value.zeroize();
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($t))
                    .field("value", &"REDACTED")
                    .finish_non_exhaustive()
            }
        }
    };
}
wiped_value!(KeyOperationParameters);
wiped_value!(KeyOperationResult);
wiped_value!(RandomBytes);

/// `POST /rng`: how many random bytes to return. Optional here so that a missing
/// count gets a message that says the range, not serde's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetRandomBytesParameters {
    /// The number of bytes, 1 to [`MAX_RANDOM_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
}

/// The most random bytes one `POST /rng` returns (Azure's limit).
pub const MAX_RANDOM_BYTES: i64 = 128;

/// The answer of `POST /rng`. The value is wiped on drop (callers may use it as a key).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RandomBytes {
    /// The bytes, base64url.
    pub value: String,
}

/// The result of verify.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVerifyResult {
    /// Whether the signature is valid.
    pub value: bool,
}

/// A body with one base64url `value`: a backup blob (backup result, restore request).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueParameter {
    /// The blob, base64url.
    pub value: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_null_and_set_attributes_differ() {
        let a: AttributeChanges =
            serde_json::from_str(r#"{"enabled":false,"exp":10,"nbf":null}"#).unwrap();
        assert_eq!(
            (a.enabled, a.exp, a.nbf),
            (Some(false), Some(Some(10)), Some(None))
        );
        let none: AttributeChanges = serde_json::from_str("{}").unwrap();
        assert_eq!(none, AttributeChanges::default());
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"enabled":false,"nbf":null,"exp":10}"#
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_wrong_types_refused() {
        let c: KeyCreateParameters = serde_json::from_str(
            r#"{"kty":"RSA","key_size":3072,"curve":null,"release_policy":{}}"#,
        )
        .unwrap();
        assert_eq!(c.key_size, Some(3072));
        assert!(
            serde_json::from_str::<KeyCreateParameters>(r#"{"kty":"RSA","key_size":"big"}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<KeyCreateParameters>(r#"{"key_size":2048}"#).is_err());
    }

    #[test]
    fn secrets_are_not_printed() {
        let p = KeyOperationParameters {
            alg: "RSA-OAEP-256".into(),
            value: "c2VjcmV0".into(),
        };
        assert!(!format!("{p:?}").contains("c2VjcmV0"));
        let r = RandomBytes {
            value: "c2VjcmV0".into(),
        };
        assert!(!format!("{r:?}").contains("c2VjcmV0"));
        let k: PrivateJsonWebKey = serde_json::from_str(r#"{"kty":"RSA","d":"c2VjcmV0"}"#).unwrap();
        assert!(!format!("{k:?}").contains("c2VjcmV0"));
    }
}
