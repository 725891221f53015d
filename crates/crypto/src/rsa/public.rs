//! [`RsaPublicKey`]: encryption and signature verification.

use aws_lc_rs::rsa::{
    OaepPublicEncryptingKey, Pkcs1PublicEncryptingKey, PublicEncryptingKey, PublicKeyComponents,
};

use super::algorithm::oaep;
use super::{EncryptionAlgorithm, SignatureAlgorithm};
use crate::Error;

/// The public half of an RSA key: modulus `n` and exponent `e`, big-endian, no
/// leading zeros (the JWK `n`/`e` values before base64url).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RsaPublicKey {
    pub(super) n: Vec<u8>,
    pub(super) e: Vec<u8>,
}

impl RsaPublicKey {
    /// Builds a public key from its components, checking that they form a valid key.
    pub fn from_components(n: &[u8], e: &[u8]) -> Result<Self, Error> {
        let key = Self {
            n: strip_leading_zeros(n).to_vec(),
            e: strip_leading_zeros(e).to_vec(),
        };
        key.encrypting_key()?;
        Ok(key)
    }

    /// The modulus, big-endian.
    pub fn n(&self) -> &[u8] {
        &self.n
    }

    /// The public exponent, big-endian.
    pub fn e(&self) -> &[u8] {
        &self.e
    }

    /// Modulus size in bits.
    pub fn size_bits(&self) -> u32 {
        let lead = self.n.first().copied().unwrap_or(0);
        (self.n.len() as u32) * 8 - lead.leading_zeros()
    }

    fn encrypting_key(&self) -> Result<PublicEncryptingKey, Error> {
        let components = PublicKeyComponents {
            n: self.n.as_slice(),
            e: self.e.as_slice(),
        };
        components
            .try_into()
            .map_err(|_| Error::Unsupported("invalid RSA public key"))
    }

    /// Encrypts (wraps) `plaintext` with `algorithm`.
    pub fn encrypt(
        &self,
        algorithm: EncryptionAlgorithm,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let key = self.encrypting_key()?;
        let too_long = Error::Unsupported("plaintext too long for this RSA key and algorithm");
        match algorithm {
            EncryptionAlgorithm::RsaOaep | EncryptionAlgorithm::RsaOaep256 => {
                let key = OaepPublicEncryptingKey::new(key)
                    .map_err(|_| Error::Unsupported("invalid RSA public key"))?;
                let oaep = oaep(algorithm);
                if plaintext.len() > key.max_plaintext_size(oaep) {
                    return Err(too_long);
                }
                let mut out = vec![0u8; key.ciphertext_size()];
                let len = key
                    .encrypt(oaep, plaintext, &mut out, None)
                    .map_err(|_| Error::Unsupported("RSA-OAEP encryption failed"))?
                    .len();
                out.truncate(len);
                Ok(out)
            }
            EncryptionAlgorithm::Rsa1_5 => {
                let key = Pkcs1PublicEncryptingKey::new(key)
                    .map_err(|_| Error::Unsupported("invalid RSA public key"))?;
                if plaintext.len() > key.max_plaintext_size() {
                    return Err(too_long);
                }
                let mut out = vec![0u8; key.ciphertext_size()];
                let len = key
                    .encrypt(plaintext, &mut out)
                    .map_err(|_| Error::Unsupported("RSA1_5 encryption failed"))?
                    .len();
                out.truncate(len);
                Ok(out)
            }
        }
    }

    /// Checks `sig` over `digest` (the hash of the message, not the message).
    /// Returns `Ok(false)` for a signature that does not verify.
    pub fn verify_digest(
        &self,
        algorithm: SignatureAlgorithm,
        digest: &[u8],
        sig: &[u8],
    ) -> Result<bool, Error> {
        let digest = algorithm.import_digest(digest)?;
        let components = PublicKeyComponents {
            n: self.n.as_slice(),
            e: self.e.as_slice(),
        };
        let parsed = components
            .to_parsed_public_key(algorithm.verification())
            .map_err(|_| Error::Unsupported("invalid RSA public key"))?;
        Ok(parsed.verify_digest_sig(&digest, sig).is_ok())
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}
