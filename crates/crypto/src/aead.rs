//! Authenticated encryption with associated data.
//!
//! Two AES-256 modes are offered: GCM (fastest; needs unique nonces) and GCM-SIV
//! (RFC 8452; nonce-misuse resistant, so random nonces stay safe far beyond GCM's
//! birthday bound). Callers choose per format and document why.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};

use crate::{Error, SymmetricKey};

/// Nonce length for both modes (96 bits).
pub const NONCE_LEN: usize = 12;
/// Authentication tag length for both modes (128 bits).
pub const TAG_LEN: usize = 16;

/// Which AEAD algorithm a key is used with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Algorithm {
    /// AES-256-GCM.
    Aes256Gcm,
    /// AES-256-GCM-SIV (RFC 8452).
    Aes256GcmSiv,
}

impl Algorithm {
    fn aws(self) -> &'static aead::Algorithm {
        match self {
            Algorithm::Aes256Gcm => &aead::AES_256_GCM,
            Algorithm::Aes256GcmSiv => &aead::AES_256_GCM_SIV,
        }
    }
}

/// A key bound to an AEAD algorithm, ready to seal and open.
pub struct AeadKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AeadKey({:?}, REDACTED)", self.key.algorithm())
    }
}

impl AeadKey {
    /// Binds `key` to `algorithm`.
    pub fn new(algorithm: Algorithm, key: &SymmetricKey) -> Result<Self, Error> {
        let unbound = UnboundKey::new(algorithm.aws(), key.expose_secret())
            .map_err(|_| Error::Unsupported("AEAD key rejected"))?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Encrypts `in_out` in place and returns the tag.
    pub fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error> {
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                in_out,
            )
            .map_err(|_| Error::Unsupported("AEAD seal failed"))?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Verifies and decrypts `in_out`, which holds the ciphertext followed by its
    /// tag. Returns the plaintext part. On failure `in_out` holds nothing usable.
    pub fn open_in_place<'a>(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &'a mut [u8],
    ) -> Result<&'a mut [u8], Error> {
        self.key
            .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), in_out)
            .map_err(|_| Error::Authentication)
    }

    /// Verifies `ciphertext` with its separate `tag` and decrypts it into `out`
    /// (same length as `ciphertext`), without an intermediate copy.
    pub fn open_into(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<(), Error> {
        if out.len() != ciphertext.len() {
            return Err(Error::InvalidLength {
                what: "plaintext buffer",
                expected: ciphertext.len(),
                got: out.len(),
            });
        }
        self.key
            .open_separate_gather(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                ciphertext,
                tag,
                out,
            )
            .map_err(|_| Error::Authentication)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(alg: Algorithm) {
        let key = AeadKey::new(alg, &SymmetricKey::from_bytes([7; 32])).unwrap();
        let nonce = [1u8; NONCE_LEN];
        let mut buf = b"postgres page".to_vec();
        let tag = key
            .seal_in_place(&nonce, b"file 1 block 0", &mut buf)
            .unwrap();
        assert_ne!(&buf[..], b"postgres page");

        let mut out = vec![0u8; buf.len()];
        key.open_into(&nonce, b"file 1 block 0", &buf, &tag, &mut out)
            .unwrap();
        assert_eq!(&out[..], b"postgres page");

        let mut joined = [buf.as_slice(), tag.as_slice()].concat();
        let plain = key
            .open_in_place(&nonce, b"file 1 block 0", &mut joined)
            .unwrap();
        assert_eq!(plain, b"postgres page");

        assert!(matches!(
            key.open_into(&nonce, b"file 1 block 1", &buf, &tag, &mut out),
            Err(Error::Authentication)
        ));
        let mut flipped = buf.clone();
        flipped[0] ^= 1;
        assert!(key
            .open_into(&nonce, b"file 1 block 0", &flipped, &tag, &mut out)
            .is_err());
    }

    #[test]
    fn gcm_roundtrip_and_tamper() {
        roundtrip(Algorithm::Aes256Gcm);
    }

    #[test]
    fn gcm_siv_roundtrip_and_tamper() {
        roundtrip(Algorithm::Aes256GcmSiv);
    }

    /// NIST-style known answer: AES-256-GCM, zero key, zero nonce, empty plaintext.
    #[test]
    fn gcm_known_answer() {
        let key = AeadKey::new(Algorithm::Aes256Gcm, &SymmetricKey::from_bytes([0; 32])).unwrap();
        let tag = key.seal_in_place(&[0; 12], b"", &mut []).unwrap();
        assert_eq!(hex::encode(tag), "530f8afbc74536b9a963b4f1c4cb738b");
    }
}
