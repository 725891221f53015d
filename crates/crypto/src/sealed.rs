//! Small secrets sealed for storage at rest (credentials, key material): one
//! self-contained blob per secret, `nonce ‖ ciphertext ‖ tag`.
//!
//! AES-256-GCM-SIV with a random nonce: a stored secret is sealed again on every
//! write, and GCM-SIV keeps random nonces safe where plain GCM would rely on luck.
//! The associated data binds each blob to what it is, so a blob moved to another
//! slot fails to open.

use zeroize::Zeroizing;

use crate::aead::{AeadKey, Algorithm, NONCE_LEN, TAG_LEN};
use crate::{random, Error, SecretBytes, SymmetricKey};

/// Seals and opens small secrets under one key.
#[derive(Debug)]
pub struct Sealer {
    key: AeadKey,
}

impl Sealer {
    /// A sealer under `key` (a purpose key derived for this use alone).
    pub fn new(key: &SymmetricKey) -> Result<Self, Error> {
        Ok(Self {
            key: AeadKey::new(Algorithm::Aes256GcmSiv, key)?,
        })
    }

    /// Encrypts `plaintext` bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let nonce = random::array::<NONCE_LEN>()?;
        let mut blob = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(plaintext);
        let tag = self
            .key
            .seal_in_place(&nonce, aad, &mut blob[NONCE_LEN..])?;
        blob.extend_from_slice(&tag);
        Ok(blob)
    }

    /// Verifies and decrypts a blob from [`Sealer::seal`] with the same `aad`.
    pub fn open(&self, aad: &[u8], blob: &[u8]) -> Result<SecretBytes, Error> {
        let (nonce, sealed) = blob
            .split_first_chunk::<NONCE_LEN>()
            .filter(|(_, rest)| rest.len() >= TAG_LEN)
            .ok_or(Error::Authentication)?;
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain = self.key.open_in_place(nonce, aad, &mut buf)?;
        Ok(SecretBytes::new(plain.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_blobs_open_only_with_their_key_and_purpose() {
        let sealer = Sealer::new(&SymmetricKey::from_bytes([3; 32])).unwrap();
        let blob = sealer.seal(b"identity/a", b"header-secret").unwrap();
        assert!(!blob.windows(13).any(|w| w == b"header-secret"));
        assert_ne!(blob, sealer.seal(b"identity/a", b"header-secret").unwrap());
        let opened = sealer.open(b"identity/a", &blob).unwrap();
        assert_eq!(opened.expose_secret(), b"header-secret");
        assert!(matches!(
            sealer.open(b"identity/b", &blob),
            Err(Error::Authentication)
        ));
        let other = Sealer::new(&SymmetricKey::from_bytes([4; 32])).unwrap();
        assert!(other.open(b"identity/a", &blob).is_err());
        let mut flipped = blob.clone();
        flipped[NONCE_LEN] ^= 1;
        assert!(sealer.open(b"identity/a", &flipped).is_err());
        assert!(sealer.open(b"identity/a", &blob[..NONCE_LEN + 3]).is_err());
    }
}
