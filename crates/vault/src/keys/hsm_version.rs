//! Making a new key version of either protection: a software key generated here
//! and sealed, or (`kty: RSA-HSM`) a key pair generated in the vault's token, of
//! which the record keeps the reference and the public half.

use pgcmk_akv_model::b64url;
use pgcmk_crypto::rsa::{RsaKeySize, RsaPrivateKey};
use pgcmk_pkcs11::TokenError;

use super::error::{bad, KeyOpError};
use super::hsm::Hsm;
use super::model::VersionRecord;
use super::ops::{seal_version, VersionProps};
use crate::service::Service;

/// Where a key's private part lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Protection {
    /// Sealed in the vault's storage (`kty: RSA`).
    Software,
    /// In the vault's PKCS#11 token (`kty: RSA-HSM`).
    Hsm,
}

impl Protection {
    /// The protection a create's `kty` asks for.
    pub(super) fn of_kty(kty: &str) -> Result<Self, KeyOpError> {
        match kty {
            "RSA" => Ok(Self::Software),
            "RSA-HSM" => Ok(Self::Hsm),
            _ => Err(bad(format!(
                "key type '{kty}' is not supported: this vault creates RSA keys, \
                 software-protected (kty RSA) or in its HSM token (kty RSA-HSM)"
            ))),
        }
    }

    /// The protection of an existing version (a rotation keeps it).
    pub(super) fn of(v: &VersionRecord) -> Self {
        if v.hsm.is_some() {
            Self::Hsm
        } else {
            Self::Software
        }
    }
}

/// The vault's token, or why RSA-HSM keys cannot be used now.
pub(super) fn hsm(service: &Service) -> Result<&Hsm, KeyOpError> {
    service.hsm.as_ref().ok_or_else(|| {
        bad(
            "kty RSA-HSM needs the vault's HSM, and this vault was started without one: \
             start `pgcmk vault serve` with --pkcs11-module, --pkcs11-token and \
             --pkcs11-pin-file (docs/providers/vault-hsm.md)",
        )
    })
}

/// Generates the private key of a new version of `vault/name` and makes its record.
pub(super) fn generate(
    service: &Service,
    vault: &str,
    name: &str,
    size: RsaKeySize,
    protection: Protection,
    props: VersionProps,
) -> Result<VersionRecord, KeyOpError> {
    match protection {
        Protection::Software => {
            let private = RsaPrivateKey::generate(size)?;
            Ok(seal_version(service, vault, name, &private, props)?)
        }
        Protection::Hsm => {
            let label = format!("{vault}/{name}/{}", props.version);
            let (object, public) = hsm(service)?.generate(&label, &props.version, size)?;
            Ok(VersionRecord {
                version: props.version,
                size: size.bits(),
                n: b64url::encode(&public.n),
                e: b64url::encode(&public.e),
                sealed_private: String::new(),
                hsm: Some(object),
                attributes: props.attributes,
                key_ops: props.key_ops,
                tags: props.tags,
            })
        }
    }
}

/// Destroys the token key pair of a version whose record was not stored, so a
/// failed create or rotation leaves nothing behind in the token.
pub(super) fn discard(service: &Service, v: &VersionRecord) {
    if let (Some(object), Some(hsm)) = (&v.hsm, &service.hsm) {
        if let Err(e) = hsm.destroy(object) {
            tracing::warn!(
                "key pair '{}' was generated in the token but not stored, and could not be \
                 destroyed: {e}; destroy it with the token's tools",
                object.label
            );
        }
    }
}

/// Destroys the token key pairs of `versions` (purge). A pair already gone is fine.
pub(super) fn destroy_all(service: &Service, versions: &[VersionRecord]) -> Result<(), KeyOpError> {
    for v in versions {
        let Some(object) = &v.hsm else { continue };
        let hsm = service.hsm.as_ref().ok_or_else(|| TokenError::Invalid {
            reason: format!(
                "key version {} is held by HSM token '{}', but the vault was started without \
                 one: start it with --pkcs11-module, --pkcs11-token and --pkcs11-pin-file to \
                 purge it (the token's key pair is destroyed with it)",
                object.label, object.token
            ),
        })?;
        hsm.destroy(object)?;
    }
    Ok(())
}
