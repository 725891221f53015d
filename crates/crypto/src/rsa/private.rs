//! [`RsaPrivateKey`]: generation, import (PKCS#8 or JWK components), decryption and
//! signing. The key material stays inside aws-lc.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeyPair, KeyPairComponents, OaepPrivateDecryptingKey, Pkcs1PrivateDecryptingKey,
    PrivateDecryptingKey, PublicKeyComponents,
};
use aws_lc_rs::signature::KeyPair as _;

use super::algorithm::oaep;
use super::{EncryptionAlgorithm, RsaKeySize, RsaPublicKey, SignatureAlgorithm};
use crate::{Error, SecretBytes};

/// An RSA key's JWK components, big-endian without leading zeros. The private
/// parts are zeroized on drop and never printed.
#[derive(Debug)]
pub struct RsaPrivateComponents {
    /// Modulus.
    pub n: Vec<u8>,
    /// Public exponent.
    pub e: Vec<u8>,
    /// Private exponent.
    pub d: SecretBytes,
    /// First prime.
    pub p: SecretBytes,
    /// Second prime.
    pub q: SecretBytes,
    /// `d mod (p-1)`.
    pub dp: SecretBytes,
    /// `d mod (q-1)`.
    pub dq: SecretBytes,
    /// `q^-1 mod p`.
    pub qi: SecretBytes,
}

/// An RSA private key. `Debug` prints only the size; the key material lives in
/// aws-lc, which zeroizes it when the key is dropped.
pub struct RsaPrivateKey {
    signing: KeyPair,
    decrypting: PrivateDecryptingKey,
    public: RsaPublicKey,
}

impl std::fmt::Debug for RsaPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RsaPrivateKey({} bits, REDACTED)",
            self.public.size_bits()
        )
    }
}

impl RsaPrivateKey {
    /// Generates a fresh key of `size`.
    pub fn generate(size: RsaKeySize) -> Result<Self, Error> {
        let signing = KeyPair::generate(size.aws())
            .map_err(|_| Error::Unsupported("RSA key generation failed"))?;
        let der = signing
            .as_der()
            .map_err(|_| Error::Unsupported("RSA key encoding failed"))?;
        Self::from_pkcs8_der(der.as_ref())
    }

    /// Imports a PKCS#8 DER private key (as produced by [`Self::to_pkcs8_der`]).
    /// Only 2048-, 3072- and 4096-bit keys are accepted.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, Error> {
        let rejected = || Error::Unsupported("not a valid PKCS#8 RSA private key");
        let signing = KeyPair::from_pkcs8(der).map_err(|_| rejected())?;
        let decrypting = PrivateDecryptingKey::from_pkcs8(der).map_err(|_| rejected())?;
        let public = signing.public_key();
        let public = RsaPublicKey {
            n: public.modulus().big_endian_without_leading_zero().to_vec(),
            e: public.exponent().big_endian_without_leading_zero().to_vec(),
        };
        RsaKeySize::from_bits(public.size_bits())?;
        Ok(Self {
            signing,
            decrypting,
            public,
        })
    }

    /// Imports a key from its JWK components (`n`, `e`, `d`, `p`, `q`, `dp`, `dq`, `qi`).
    /// The components must be consistent and the size 2048, 3072 or 4096 bits.
    pub fn from_components(c: &RsaPrivateComponents) -> Result<Self, Error> {
        let components = KeyPairComponents {
            public_key: PublicKeyComponents {
                n: c.n.as_slice(),
                e: c.e.as_slice(),
            },
            d: c.d.expose_secret(),
            p: c.p.expose_secret(),
            q: c.q.expose_secret(),
            dP: c.dp.expose_secret(),
            dQ: c.dq.expose_secret(),
            qInv: c.qi.expose_secret(),
        };
        let pair = KeyPair::from_components(&components).map_err(|_| {
            Error::Unsupported("the RSA key components are inconsistent or invalid")
        })?;
        let der = pair
            .as_der()
            .map_err(|_| Error::Unsupported("RSA key encoding failed"))?;
        let der = SecretBytes::new(der.as_ref().to_vec());
        Self::from_pkcs8_der(der.expose_secret())
    }

    /// Exports the private key as PKCS#8 DER, in a zeroizing buffer.
    pub fn to_pkcs8_der(&self) -> Result<SecretBytes, Error> {
        let der = self
            .signing
            .as_der()
            .map_err(|_| Error::Unsupported("RSA key encoding failed"))?;
        Ok(SecretBytes::new(der.as_ref().to_vec()))
    }

    /// The public half.
    pub fn public_key(&self) -> &RsaPublicKey {
        &self.public
    }

    /// Decrypts (unwraps) `ciphertext` with `algorithm`.
    pub fn decrypt(
        &self,
        algorithm: EncryptionAlgorithm,
        ciphertext: &[u8],
    ) -> Result<SecretBytes, Error> {
        let expected = self.decrypting.key_size_bytes();
        if ciphertext.len() != expected {
            return Err(Error::InvalidLength {
                what: "RSA ciphertext",
                expected,
                got: ciphertext.len(),
            });
        }
        let mut out = vec![0u8; expected];
        let result = match algorithm {
            EncryptionAlgorithm::RsaOaep | EncryptionAlgorithm::RsaOaep256 => {
                OaepPrivateDecryptingKey::new(self.decrypting.clone())
                    .map_err(|_| Error::Unsupported("invalid RSA private key"))?
                    .decrypt(oaep(algorithm), ciphertext, &mut out, None)
                    .map(|p| p.len())
            }
            EncryptionAlgorithm::Rsa1_5 => Pkcs1PrivateDecryptingKey::new(self.decrypting.clone())
                .map_err(|_| Error::Unsupported("invalid RSA private key"))?
                .decrypt(ciphertext, &mut out)
                .map(|p| p.len()),
        };
        match result {
            Ok(len) => {
                out.truncate(len);
                Ok(SecretBytes::new(out))
            }
            Err(_) => {
                // Drop through SecretBytes so any partial output is zeroized.
                drop(SecretBytes::new(out));
                Err(Error::Authentication)
            }
        }
    }

    /// Signs `digest` (the hash of the message) with `algorithm`.
    pub fn sign_digest(
        &self,
        algorithm: SignatureAlgorithm,
        digest: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let digest = algorithm.import_digest(digest)?;
        let mut sig = vec![0u8; self.signing.public_modulus_len()];
        self.signing
            .sign_digest(algorithm.encoding(), &digest, &mut sig)
            .map_err(|_| Error::Unsupported("RSA signing failed"))?;
        Ok(sig)
    }
}
