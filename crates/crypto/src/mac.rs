//! HMAC-SHA256: message authentication for tokens, audit chains and stored
//! credential hashes. Verification compares in constant time.

use std::fmt;

use aws_lc_rs::hmac;

use crate::{Error, SecretBytes, SymmetricKey};

/// Length of a tag in bytes.
pub const TAG_LEN: usize = 32;

/// An HMAC-SHA256 key. The key bytes live in aws-lc, which wipes them when the key
/// is dropped; the [`SymmetricKey`] it is made from is zeroized by its own drop.
/// `Debug` prints `REDACTED`.
#[derive(Clone)]
pub struct MacKey(hmac::Key);

/// An HMAC-SHA256 tag.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Tag([u8; TAG_LEN]);

impl MacKey {
    /// A MAC key from 256 bits of key material.
    pub fn new(key: &SymmetricKey) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, key.expose_secret()))
    }

    /// A MAC key of any length, as another party gave it (an Azure storage
    /// account's 512-bit shared key signs its requests).
    pub fn from_secret(key: &SecretBytes) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, key.expose_secret()))
    }

    /// The tag of `data`.
    pub fn sign(&self, data: &[u8]) -> Tag {
        self.sign_parts(&[data])
    }

    /// The tag of the concatenation of `parts` (without copying them together).
    pub fn sign_parts(&self, parts: &[&[u8]]) -> Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        for part in parts {
            ctx.update(part);
        }
        let mut tag = [0; TAG_LEN];
        tag.copy_from_slice(ctx.sign().as_ref());
        Tag(tag)
    }

    /// Checks `tag` against `data` in constant time.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> Result<(), Error> {
        hmac::verify(&self.0, data, tag).map_err(|_| Error::Authentication)
    }
}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey(REDACTED)")
    }
}

impl Tag {
    /// The tag's bytes.
    pub fn as_bytes(&self) -> &[u8; TAG_LEN] {
        &self.0
    }
}

impl AsRef<[u8]> for Tag {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2_and_constant_time_verification() {
        // RFC 4231 test case 2 uses a 4-byte key; pad it as HMAC does (zeros to the block).
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let k = MacKey::new(&SymmetricKey::from_bytes(key));
        let tag = k.sign(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(tag.as_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(k.sign_parts(&[b"what do ya ", b"want for nothing?"]), tag);
        assert!(k
            .verify(b"what do ya want for nothing?", tag.as_ref())
            .is_ok());
        assert!(matches!(
            k.verify(b"what do ya want for nothing!", tag.as_ref()),
            Err(Error::Authentication)
        ));
        assert!(k
            .verify(b"what do ya want for nothing?", &tag.as_ref()[..31])
            .is_err());
        let other = MacKey::new(&SymmetricKey::from_bytes([1; 32]));
        assert!(other
            .verify(b"what do ya want for nothing?", tag.as_ref())
            .is_err());
        assert_eq!(format!("{k:?}"), "MacKey(REDACTED)");
    }

    #[test]
    fn rfc4231_case_6_a_key_longer_than_the_block() {
        let k = MacKey::from_secret(&SecretBytes::new(vec![0xaa; 131]));
        let tag = k.sign(b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(
            hex::encode(tag.as_bytes()),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
