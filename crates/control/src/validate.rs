//! Create-time validation of a server's key, ending in the proof that matters: a
//! real wrap and unwrap of the new DEK as the server's identity.
//!
//! Each failure has its own message that says what to fix, and nothing has been
//! created when one is returned.

use pgcmk_crypto::{ct_eq, Dek};
use pgcmk_keyprovider::akv::{AkvKek, KeyBundle};
use pgcmk_keyprovider::{KeyEncryptionKey, KeyError, KeyReference, WrappedDek};

use crate::Error;

/// RSA modulus sizes accepted for a KEK.
const RSA_BITS: std::ops::RangeInclusive<u32> = 2048..=4096;

/// Where the control plane learns a vault's location (not part of the keys API).
pub trait VaultLocations {
    /// The location of the vault at `vault_url`, `None` if unknown.
    fn location_of(&self, vault_url: &str) -> Result<Option<String>, Error>;
}

/// What to require of the key besides the rights of the identity.
pub struct Requirements<'a> {
    /// Customer-managed: vault protections and location are checked too.
    pub customer_managed: bool,
    /// The server's location.
    pub location: &'a str,
}

/// Checks the key and the identity's rights and returns a new DEK wrapped by it.
pub fn new_wrapped_dek(
    kek: &AkvKek,
    identity: &str,
    req: &Requirements<'_>,
    locations: &dyn VaultLocations,
) -> Result<(Dek, WrappedDek), Error> {
    let key = kek.reference();
    let bundle = kek
        .client()
        .get_key(&key.name, key.version.as_deref())
        .map_err(|e| {
            denied(
                e,
                format!("identity '{identity}' cannot read key {key} (needs `get`)"),
            )
        })?;
    check_key(&bundle, key)?;
    if req.customer_managed {
        check_vault_protection(&bundle, &key.vault_url)?;
        match locations.location_of(&key.vault_url)? {
            Some(l) if l == req.location => {}
            Some(l) => {
                return Err(invalid(format!(
                    "the key's vault {} is in location '{l}' but the server is in '{}': \
                     use a key from a vault in '{}' or create the server in '{l}'",
                    key.vault_url, req.location, req.location
                )))
            }
            None => {
                return Err(invalid(format!(
                    "the location of vault {} is unknown to this platform: use a vault of \
                     the platform's vault service",
                    key.vault_url
                )))
            }
        }
    }
    let dek = Dek::generate()?;
    let wrapped = kek.wrap(&dek).map_err(|e| {
        denied(
            e,
            format!("identity '{identity}' cannot wrap with key {key} (needs `wrapKey`)"),
        )
    })?;
    let back = kek.unwrap(&wrapped).map_err(|e| {
        denied(
            e,
            format!("identity '{identity}' cannot unwrap with key {key} (needs `unwrapKey`)"),
        )
    })?;
    if !ct_eq(back.expose_secret(), dek.expose_secret()) {
        return Err(invalid(format!(
            "key {key} returned a different DEK on unwrap: the vault is misbehaving"
        )));
    }
    Ok((dek, wrapped))
}

fn check_key(bundle: &KeyBundle, key: &KeyReference) -> Result<(), Error> {
    let attrs = &bundle.attributes;
    if attrs.enabled == Some(false) {
        return Err(invalid(format!(
            "key {key} is disabled: enable it or choose another key"
        )));
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if attrs.nbf.is_some_and(|nbf| nbf > now) {
        return Err(invalid(format!(
            "key {key} is not valid yet (its nbf is in the future): wait or choose another key"
        )));
    }
    if attrs.exp.is_some_and(|exp| exp <= now) {
        return Err(invalid(format!(
            "key {key} has expired: extend its expiry or choose another key"
        )));
    }
    let is_rsa = bundle.key.kty == "RSA" || bundle.key.kty == "RSA-HSM";
    match bundle.size_bits() {
        Some(bits) if is_rsa && RSA_BITS.contains(&bits) => Ok(()),
        Some(bits) if is_rsa => Err(invalid(format!(
            "key {key} is RSA {bits}: use an RSA key of 2048, 3072 or 4096 bits"
        ))),
        _ => Err(invalid(format!(
            "key {key} has type {}: use an RSA key of 2048, 3072 or 4096 bits",
            bundle.key.kty
        ))),
    }
}

/// Soft delete and purge protection, as Azure Key Vault reports them on every key:
/// `recoveryLevel` names `Recoverable` with soft delete, and drops `Purgeable`
/// once purge protection is on.
fn check_vault_protection(bundle: &KeyBundle, vault: &str) -> Result<(), Error> {
    let level = bundle.attributes.recovery_level.as_deref().unwrap_or("");
    if !level.contains("Recoverable") {
        return Err(invalid(format!(
            "vault {vault} does not have soft delete enabled (recovery level '{level}'): \
             enable soft delete and purge protection on the vault"
        )));
    }
    if level.contains("Purgeable") {
        return Err(invalid(format!(
            "vault {vault} does not have purge protection enabled (recovery level '{level}'): \
             enable purge protection on the vault"
        )));
    }
    Ok(())
}

fn invalid(message: String) -> Error {
    Error::BadRequest(message)
}

/// A key failure during validation: transient ones stay retryable, the rest say
/// which right or setting is missing.
fn denied(e: KeyError, what: String) -> Error {
    match e {
        KeyError::Transient { .. } => Error::Key(e),
        _ => invalid(format!(
            "{what}: {e}. The security officer must grant the identity get, wrapKey and \
             unwrapKey on the key's vault"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KID: &str = "https://127.0.0.1:9/keys/k1/0123456789abcdef0123456789abcdef";

    /// A key bundle as the vault returns it, with `attributes` and a modulus of `bits`.
    fn bundle(kty: &str, bits: usize, attributes: serde_json::Value) -> KeyBundle {
        use base64::Engine;
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![0xC5; bits / 8]);
        serde_json::from_value(serde_json::json!({
            "key": { "kid": KID, "kty": kty, "key_ops": ["wrapKey"], "n": n, "e": "AQAB" },
            "attributes": attributes,
        }))
        .unwrap()
    }

    fn key_check(b: &KeyBundle) -> Result<(), String> {
        check_key(b, &KeyReference::parse(KID).unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn each_key_problem_has_its_own_message() {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let ok = serde_json::json!({ "enabled": true });
        key_check(&bundle("RSA", 3072, ok.clone())).unwrap();
        key_check(&bundle("RSA-HSM", 4096, ok.clone())).unwrap();
        for (b, expected) in [
            (
                bundle("RSA", 2048, serde_json::json!({ "enabled": false })),
                "is disabled",
            ),
            (
                bundle("RSA", 2048, serde_json::json!({ "nbf": now + 3600 })),
                "not valid yet",
            ),
            (
                bundle("RSA", 2048, serde_json::json!({ "exp": now - 1 })),
                "has expired",
            ),
            (bundle("RSA", 1024, ok.clone()), "is RSA 1024"),
            (bundle("RSA", 8192, ok.clone()), "is RSA 8192"),
            (bundle("oct", 256, ok.clone()), "has type oct"),
        ] {
            let err = key_check(&b).unwrap_err();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn vault_needs_soft_delete_and_purge_protection() {
        let level = |l: &str| bundle("RSA", 2048, serde_json::json!({ "recoveryLevel": l }));
        check_vault_protection(&level("Recoverable"), "v").unwrap();
        check_vault_protection(&level("CustomizedRecoverable+ProtectedSubscription"), "v").unwrap();
        let err = check_vault_protection(&level("Purgeable"), "v")
            .unwrap_err()
            .to_string();
        assert!(err.contains("soft delete"), "{err}");
        let err = check_vault_protection(&level("Recoverable+Purgeable"), "v")
            .unwrap_err()
            .to_string();
        assert!(err.contains("purge protection"), "{err}");
    }
}
