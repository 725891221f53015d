//! `POST /rng`: Azure Key Vault's Get Random Bytes, from the service's generator
//! (aws-lc-rs, the one that makes keys). It touches no key, so it needs only the
//! `rng` permission.

use pgcmk_akv_model::{b64url, GetRandomBytesParameters, RandomBytes, MAX_RANDOM_BYTES};
use pgcmk_crypto::SecretBytes;

use super::error::{bad, KeyOpError};
use super::ops::Outcome;

/// `count` random bytes, 1 to [`MAX_RANDOM_BYTES`].
pub fn random_bytes(params: &GetRandomBytesParameters) -> Result<Outcome, KeyOpError> {
    let count = match params.count {
        Some(n) if (1..=MAX_RANDOM_BYTES).contains(&n) => n as usize,
        Some(n) => {
            return Err(bad(format!(
                "count {n} is out of range: ask for 1 to {MAX_RANDOM_BYTES} random bytes"
            )))
        }
        None => {
            return Err(bad(format!(
                "'count' is required: ask for 1 to {MAX_RANDOM_BYTES} random bytes"
            )))
        }
    };
    let bytes = SecretBytes::random(count)?;
    Outcome::new(
        RandomBytes {
            value: b64url::encode(bytes.expose_secret()),
        },
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(count: Option<i64>) -> Result<Vec<u8>, KeyOpError> {
        let outcome = random_bytes(&GetRandomBytesParameters { count })?;
        let body = outcome.body.expect("a body");
        Ok(b64url::decode(body["value"].as_str().expect("a value")).expect("base64url"))
    }

    #[test]
    fn returns_exactly_count_bytes_for_the_whole_range() {
        assert_eq!(ask(Some(1)).unwrap().len(), 1);
        assert_eq!(ask(Some(MAX_RANDOM_BYTES)).unwrap().len(), 128);
        assert_ne!(ask(Some(32)).unwrap(), ask(Some(32)).unwrap());
    }

    #[test]
    fn counts_outside_1_to_128_are_bad_parameters() {
        for count in [Some(0), Some(-1), Some(129), Some(i64::MAX), None] {
            let err = ask(count).unwrap_err();
            assert!(
                matches!(err, KeyOpError::BadParameter(ref m) if m.contains("1 to 128")),
                "{count:?}: {err}"
            );
        }
    }
}
