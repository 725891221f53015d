//! HKDF-SHA256 key derivation (RFC 5869).
//!
//! Every key below the DEK is derived with a distinct `info` (the purpose) and a
//! `salt` that binds the derived key to its owner (file id, server id, ...).

use aws_lc_rs::hkdf;

use crate::{Error, SymmetricKey};

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// Derives a 256-bit key from `ikm` for one `purpose`, bound to `salt`.
pub fn derive_key(ikm: &SymmetricKey, salt: &[u8], purpose: &[u8]) -> Result<SymmetricKey, Error> {
    let mut out = [0u8; 32];
    expand_into(ikm, salt, purpose, &mut out)?;
    Ok(SymmetricKey::from_bytes(out))
}

/// HKDF-SHA256 extract-then-expand into `out` (at most 255 × 32 bytes).
pub fn expand_into(
    ikm: &SymmetricKey,
    salt: &[u8],
    purpose: &[u8],
    out: &mut [u8],
) -> Result<(), Error> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm.expose_secret());
    let info = [purpose];
    prk.expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| Error::Unsupported("HKDF output longer than 8160 bytes"))
}

/// A 256-bit key from a passphrase with Argon2id (RFC 9106), bound to a random
/// `salt` of at least 8 bytes kept beside the data. OWASP's minimum profile
/// (19 MiB, 2 passes, 1 lane) keeps start-up memory bounded.
pub fn passphrase_key(passphrase: &[u8], salt: &[u8]) -> Result<SymmetricKey, Error> {
    let params = argon2::Params::new(19 * 1024, 2, 1, Some(32))
        .map_err(|_| Error::Unsupported("Argon2id parameters"))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    argon
        .hash_password_into(passphrase, salt, &mut out)
        .map_err(|_| Error::Unsupported("Argon2id needs a salt of 8 or more bytes"))?;
    Ok(SymmetricKey::from_bytes(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected output computed independently with Python's `hmac` module
    /// (PRK = HMAC(salt, ikm); OKM = HMAC(PRK, info || 0x01)).
    #[test]
    fn known_answer() {
        let ikm = SymmetricKey::from_bytes([0x0b; 32]);
        let mut out = [0u8; 32];
        expand_into(&ikm, b"salt", b"pgcmk test", &mut out).unwrap();
        assert_eq!(
            hex::encode(out),
            "95760a930c25bef96bdf1bea46bcf2efcf86454a17d131e9eb07570beeab5a9a"
        );
    }

    #[test]
    fn passphrase_keys_depend_on_passphrase_and_salt() {
        let a = passphrase_key(b"correct horse battery", b"salt-0001").unwrap();
        assert_eq!(
            a,
            passphrase_key(b"correct horse battery", b"salt-0001").unwrap()
        );
        assert_ne!(
            a,
            passphrase_key(b"correct horse batterz", b"salt-0001").unwrap()
        );
        assert_ne!(
            a,
            passphrase_key(b"correct horse battery", b"salt-0002").unwrap()
        );
        assert!(passphrase_key(b"p", b"short").is_err());
    }

    #[test]
    fn purpose_and_salt_separate_keys() {
        let ikm = SymmetricKey::generate().unwrap();
        let a = derive_key(&ikm, b"file-1", b"cryptfs content").unwrap();
        let b = derive_key(&ikm, b"file-2", b"cryptfs content").unwrap();
        let c = derive_key(&ikm, b"file-1", b"backup").unwrap();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, derive_key(&ikm, b"file-1", b"cryptfs content").unwrap());
    }
}
