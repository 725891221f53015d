//! Create-time validation of a server's key, ending in the proof that matters: a
//! real wrap and unwrap of the new DEK as the server's identity.
//!
//! Each failure has its own message that says what to fix, and nothing has been
//! created when one is returned.

use pgcmk_crypto::{ct_eq, Dek};
use pgcmk_keyprovider::{
    DeletionProtection, KeyDescription, KeyEncryptionKey, KeyError, KeyReference, KeyType,
    VaultFacts, WrappedDek,
};

use crate::Error;

/// RSA modulus sizes accepted for a KEK.
const RSA_BITS: std::ops::RangeInclusive<u32> = 2048..=4096;

/// What to require of the key besides the rights of the identity.
pub struct Requirements<'a> {
    /// Customer-managed: vault protections and location are checked too.
    pub customer_managed: bool,
    /// The server's location.
    pub location: &'a str,
}

/// Checks the key and the identity's rights and returns a new DEK wrapped by it.
/// Everything is learned through the KEK's provider with the identity's own
/// credential: the control plane holds no vault administrator's.
pub fn new_wrapped_dek(
    kek: &dyn KeyEncryptionKey,
    identity: &str,
    req: &Requirements<'_>,
) -> Result<(Dek, WrappedDek), Error> {
    let check: &VaultCheck<'_> = &|vault| check_vault(vault, req.location);
    let (dek, wrapped, _) = validated_wrap(kek, identity, req.customer_managed.then_some(check))?;
    Ok((dek, wrapped))
}

/// The geo key of a server in `server_location`: checked as a customer's key, its
/// vault must tell its location, which must be another than the server's (the
/// paired location, where the geo-redundant copy is kept). Returns a new
/// repository key wrapped by it, and that location.
pub fn new_geo_wrapped_key(
    kek: &dyn KeyEncryptionKey,
    identity: &str,
    server_location: &str,
) -> Result<(Dek, WrappedDek, String), Error> {
    let key = kek.reference();
    let check: &VaultCheck<'_> = &|vault| {
        check_vault_protection(&vault.protection, &vault.vault)?;
        check_geo_location(vault.location.as_deref(), &vault.vault, server_location)
    };
    match validated_wrap(kek, identity, Some(check))? {
        (dek, wrapped, Some(location)) => Ok((dek, wrapped, location)),
        _ => Err(invalid(format!(
            "geo key {key} is not in a key vault whose location this platform knows: use a \
             key in a vault of the platform's vault service in the paired location"
        ))),
    }
}

/// A check of the key's vault (protections, location).
type VaultCheck<'a> = dyn Fn(&VaultFacts) -> Result<(), Error> + 'a;

/// Checks the key (and its vault with `vault_check`), then wraps and unwraps a new
/// random key with it as `identity`; that key, wrapped, and the vault's location.
fn validated_wrap(
    kek: &dyn KeyEncryptionKey,
    identity: &str,
    vault_check: Option<&VaultCheck<'_>>,
) -> Result<(Dek, WrappedDek, Option<String>), Error> {
    let key = kek.reference();
    let denied = |e, what| denied(e, key, what);
    let description = kek.describe().map_err(|e| {
        denied(
            e,
            format!("identity '{identity}' cannot read key {key} (needs `get`)"),
        )
    })?;
    check_key(
        &description,
        key,
        time::OffsetDateTime::now_utc().unix_timestamp(),
    )?;
    // A key vault serving many customers must keep a deleted key recoverable and
    // be where the server is; a token or KMIP server is the customer's own.
    if let (Some(vault_check), Some(vault)) = (vault_check, &description.vault) {
        vault_check(vault)?;
    }
    let location = description.vault.as_ref().and_then(|v| v.location.clone());
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
    Ok((dek, wrapped, location))
}

/// The key's state, validity window (at `now`, Unix seconds), type and size.
fn check_key(d: &KeyDescription, key: &KeyReference, now: i64) -> Result<(), Error> {
    if !d.enabled {
        return Err(invalid(format!(
            "key {key} is disabled: enable it or choose another key"
        )));
    }
    if d.not_before.is_some_and(|nbf| nbf > now) {
        return Err(invalid(format!(
            "key {key} is not valid yet (its nbf is in the future): wait or choose another key"
        )));
    }
    if d.expires.is_some_and(|exp| exp <= now) {
        return Err(invalid(format!(
            "key {key} has expired: extend its expiry or choose another key"
        )));
    }
    match (&d.key_type, d.size_bits) {
        (t, Some(bits)) if t.is_rsa() && RSA_BITS.contains(&bits) => Ok(()),
        (t, Some(bits)) if t.is_rsa() => Err(invalid(format!(
            "key {key} is RSA {bits}: use an RSA key of 2048, 3072 or 4096 bits"
        ))),
        // A KMIP server wraps with AES-256-GCM under a key it holds.
        (KeyType::Aes, Some(256)) if matches!(key, KeyReference::Kmip(_)) => Ok(()),
        (KeyType::Aes, bits) => Err(invalid(format!(
            "key {key} is AES with {} bits: use an AES-256 key",
            bits.unwrap_or(0)
        ))),
        _ => Err(invalid(format!(
            "key {key} has type {}: use an RSA key of 2048, 3072 or 4096 bits (or an \
             AES-256 key on a KMIP server)",
            d.key_type
        ))),
    }
}

/// The vault's protections and location.
fn check_vault(v: &VaultFacts, server_location: &str) -> Result<(), Error> {
    check_vault_protection(&v.protection, &v.vault)?;
    check_location(v.location.as_deref(), &v.vault, server_location)
}

/// Soft delete and purge protection, as the vault reports them on the key (Azure
/// Key Vault's `recoveryLevel`).
fn check_vault_protection(p: &DeletionProtection, vault: &str) -> Result<(), Error> {
    let level = p.recovery_level.as_deref().unwrap_or("");
    if !p.soft_delete() {
        return Err(invalid(format!(
            "vault {vault} does not have soft delete enabled (recovery level '{level}'): \
             enable soft delete and purge protection on the vault"
        )));
    }
    if !p.purge_protection() {
        return Err(invalid(format!(
            "vault {vault} does not have purge protection enabled (recovery level '{level}'): \
             enable purge protection on the vault"
        )));
    }
    Ok(())
}

/// The key's vault must be where the server is.
fn check_location(vault_location: Option<&str>, vault: &str, server: &str) -> Result<(), Error> {
    match vault_location {
        Some(l) if l == server => Ok(()),
        Some(l) => Err(invalid(format!(
            "the key's vault {vault} is in location '{l}' but the server is in '{server}': \
             use a key from a vault in '{server}' or create the server in '{l}'"
        ))),
        None => Err(invalid(format!(
            "the location of vault {vault} is unknown to this platform: use a vault of the \
             platform's vault service (a vault that does not tell its location to the \
             identity cannot be checked)"
        ))),
    }
}

/// The geo key's vault must be in another location than the server: a copy in
/// the server's own location is no geo-redundant copy.
fn check_geo_location(
    vault_location: Option<&str>,
    vault: &str,
    server: &str,
) -> Result<(), Error> {
    match vault_location {
        Some(l) if l != server => Ok(()),
        Some(l) => Err(invalid(format!(
            "the geo key's vault {vault} is in location '{l}', the server's own: a \
             geo-redundant copy is kept in another location; use a key from a vault in the \
             paired location"
        ))),
        None => Err(invalid(format!(
            "the location of the geo key's vault {vault} is unknown to this platform: use a \
             vault of the platform's vault service in the paired location"
        ))),
    }
}

fn invalid(message: String) -> Error {
    Error::BadRequest(message)
}

/// A key failure during validation. An unreachable key manager stays "unavailable"
/// (a retry may succeed) but says which address was tried and how to check it, since
/// nothing retries a create; a key the provider cannot use says why; a refusal
/// quotes the provider, whose message says whether the key is missing or a right is.
fn denied(e: KeyError, key: &KeyReference, what: String) -> Error {
    match (e, key) {
        (KeyError::Transient { reason }, KeyReference::Azure(_)) => {
            Error::Key(KeyError::Transient {
                reason: format!(
                    "the vault of key {key} did not answer ({reason}). Check the vault's host and \
                 port in the key URL (`pgcmk keyvault show VAULT` prints the vault's URL) and \
                 that the vault service is running; nothing was created"
                ),
            })
        }
        (KeyError::Transient { reason }, _) => Error::Key(KeyError::Transient {
            reason: format!(
                "the key manager of key {key} did not answer ({reason}); check its address in \
                 the key reference and that it is running; nothing was created"
            ),
        }),
        (KeyError::Invalid { reason }, _) => invalid(reason),
        (e, KeyReference::Azure(_)) => invalid(format!("{what}: {e}")),
        // The provider's reason names what the token or server refused.
        (e, _) => invalid(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use pgcmk_keyprovider::KeyVersionId;

    use super::*;

    const KID: &str = "https://127.0.0.1:9/keys/k1/0123456789abcdef0123456789abcdef";
    const NOW: i64 = 1_800_000_000;

    /// A usable RSA key as a provider describes it.
    fn usable(key_type: KeyType, bits: u32) -> KeyDescription {
        KeyDescription {
            current: KeyVersionId::parse(KID).unwrap(),
            key_type,
            size_bits: Some(bits),
            enabled: true,
            not_before: None,
            expires: None,
            vault: None,
        }
    }

    fn key_check(d: &KeyDescription) -> Result<(), String> {
        check_key(d, &KeyReference::parse(KID).unwrap(), NOW).map_err(|e| e.to_string())
    }

    #[test]
    fn usable_rsa_keys_pass() {
        key_check(&usable(KeyType::Rsa, 3072)).unwrap();
        key_check(&usable(KeyType::RsaHsm, 4096)).unwrap();
    }

    #[test]
    fn each_key_problem_has_its_own_message() {
        let with = |f: fn(&mut KeyDescription)| {
            let mut d = usable(KeyType::Rsa, 2048);
            f(&mut d);
            d
        };
        for (d, expected) in [
            (with(|d| d.enabled = false), "is disabled"),
            (with(|d| d.not_before = Some(NOW + 3600)), "not valid yet"),
            (with(|d| d.expires = Some(NOW - 1)), "has expired"),
            (with(|d| d.size_bits = Some(1024)), "is RSA 1024"),
            (with(|d| d.size_bits = Some(8192)), "is RSA 8192"),
            (
                with(|d| {
                    d.key_type = KeyType::Other("oct".into());
                    d.size_bits = None;
                }),
                "has type oct",
            ),
        ] {
            let err = key_check(&d).unwrap_err();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn vault_needs_soft_delete_and_purge_protection() {
        let level = |l: &str| DeletionProtection {
            recovery_level: Some(l.into()),
            recoverable_days: Some(90),
        };
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
        let err = check_vault_protection(&DeletionProtection::default(), "v")
            .unwrap_err()
            .to_string();
        assert!(err.contains("soft delete"), "{err}");
    }

    #[test]
    fn the_vault_must_be_in_the_servers_location() {
        check_location(Some("westeurope"), "v", "westeurope").unwrap();
        let err = check_location(Some("eastus"), "v", "westeurope")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is in location 'eastus'"), "{err}");
        let err = check_location(None, "v", "westeurope")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown to this platform"), "{err}");
    }

    #[test]
    fn the_geo_vault_must_be_in_another_location() {
        check_geo_location(Some("northeurope"), "v", "westeurope").unwrap();
        let err = check_geo_location(Some("westeurope"), "v", "westeurope")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'westeurope', the server's own") && err.contains("paired location"),
            "{err}"
        );
        let err = check_geo_location(None, "v", "westeurope")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown to this platform"), "{err}");
    }
}
