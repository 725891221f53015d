//! Secret types: zeroized on drop, never printed.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{random, Error};

/// Compares two byte strings in constant time (for their common length).
///
/// Use for every comparison that involves a secret: tokens, MACs, credentials.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// A 256-bit symmetric key. `Debug` prints `REDACTED`; the bytes are zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SymmetricKey([u8; 32]);

impl SymmetricKey {
    /// Length of the key in bytes.
    pub const LEN: usize = 32;

    /// A fresh random key.
    pub fn generate() -> Result<Self, Error> {
        Ok(Self(random::array()?))
    }

    /// Takes ownership of key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Copies a key from a slice, which must be exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| Error::InvalidLength {
            what: "256-bit key",
            expected: Self::LEN,
            got: bytes.len(),
        })?;
        Ok(Self(arr))
    }

    /// The raw key bytes. Call sites should be few and obvious.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SymmetricKey(REDACTED)")
    }
}

impl PartialEq for SymmetricKey {
    fn eq(&self, other: &Self) -> bool {
        ct_eq(&self.0, &other.0)
    }
}
impl Eq for SymmetricKey {}

/// A server's data encryption key: 256 random bits, wrapped by the KEK at rest.
///
/// Exists in plaintext only in memory; `Debug` prints `REDACTED`.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Dek(SymmetricKey);

impl Dek {
    /// A fresh random DEK.
    pub fn generate() -> Result<Self, Error> {
        Ok(Self(SymmetricKey::generate()?))
    }

    /// Rebuilds a DEK from unwrapped bytes (exactly 32).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        Ok(Self(SymmetricKey::from_slice(bytes)?))
    }

    /// The key as a symmetric key, for derivation.
    pub fn key(&self) -> &SymmetricKey {
        &self.0
    }

    /// The raw key bytes, for wrapping.
    pub fn expose_secret(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Dek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dek(REDACTED)")
    }
}

/// Arbitrary-length secret bytes (credentials, private key encodings).
/// `Debug` prints `REDACTED`; zeroized on drop.
#[derive(Clone, Default, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Takes ownership of the bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// `n` fresh random bytes.
    pub fn random(n: usize) -> Result<Self, Error> {
        let mut v = vec![0u8; n];
        random::fill(&mut v)?;
        Ok(Self(v))
    }

    /// The bytes. Call sites should be few and obvious.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(REDACTED, {} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_key_bytes() {
        let key = SymmetricKey::from_bytes([0xAB; 32]);
        let dek = Dek::from_slice(&[0xCD; 32]).unwrap();
        let bytes = SecretBytes::new(vec![0xEF; 5]);
        for printed in [format!("{key:?}"), format!("{dek:?}"), format!("{bytes:?}")] {
            assert!(printed.contains("REDACTED"), "{printed}");
            assert!(!printed.to_lowercase().contains("ab"), "{printed}");
            assert!(
                !printed.contains("205") && !printed.contains("239"),
                "{printed}"
            );
        }
    }

    #[test]
    fn wrong_length_is_a_clear_error() {
        let err = Dek::from_slice(&[1; 31]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid length for 256-bit key: expected 32 bytes, got 31"
        );
    }

    #[test]
    fn constant_time_equality_is_equality() {
        assert!(ct_eq(b"token", b"token"));
        assert!(!ct_eq(b"token", b"tokem"));
        assert!(!ct_eq(b"token", b"token2"));
        assert_ne!(Dek::generate().unwrap(), Dek::generate().unwrap());
    }
}
