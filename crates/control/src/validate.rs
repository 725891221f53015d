//! Create-time validation of a server's key, ending in the proof that matters: a
//! real wrap and unwrap of the new DEK as the server's identity.
//!
//! Each failure has its own message that says what to fix, and nothing has been
//! created when one is returned.

use pgcmk_crypto::{ct_eq, Dek};
use pgcmk_keyprovider::akv::{AkvKek, KeyBundle};
use pgcmk_keyprovider::{KeyEncryptionKey, KeyError, WrappedDek};

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
    check_key(&bundle, kek)?;
    if req.customer_managed {
        check_vault_protection(&bundle, kek)?;
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

fn check_key(bundle: &KeyBundle, kek: &AkvKek) -> Result<(), Error> {
    let key = kek.reference();
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
fn check_vault_protection(bundle: &KeyBundle, kek: &AkvKek) -> Result<(), Error> {
    let vault = &kek.reference().vault_url;
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
    Error::InvalidRequest(message)
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
