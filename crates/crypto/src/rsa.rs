//! RSA key encryption keys: generation, OAEP wrapping, PKCS#1 v1.5 / PSS signatures.
//!
//! Algorithm names follow JSON Web Algorithms as Azure Key Vault uses them
//! (`RSA-OAEP`, `RSA-OAEP-256`, `RSA1_5`, `RS256` … `PS512`). Signing and verifying take a
//! *digest*, as the Key Vault `sign`/`verify` operations do. RSA1_5 encryption is
//! vulnerable to padding-oracle attacks, so it is only reachable through an explicit
//! opt-in ([`EncryptionAlgorithm::parse`] with `allow_rsa1_5`).

use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeyPair, KeyPairComponents, KeySize, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    Pkcs1PrivateDecryptingKey, Pkcs1PublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
    PublicKeyComponents, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
};
use aws_lc_rs::signature::{self, KeyPair as _, RsaEncoding, RsaParameters};

use crate::{Error, SecretBytes};

/// The RSA modulus sizes a key vault accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsaKeySize {
    /// 2048 bits.
    Bits2048,
    /// 3072 bits.
    Bits3072,
    /// 4096 bits.
    Bits4096,
}

impl RsaKeySize {
    /// Maps a bit count to a size; only 2048, 3072 and 4096 are accepted.
    pub fn from_bits(bits: u32) -> Result<Self, Error> {
        match bits {
            2048 => Ok(Self::Bits2048),
            3072 => Ok(Self::Bits3072),
            4096 => Ok(Self::Bits4096),
            _ => Err(Error::Unsupported(
                "RSA key size must be 2048, 3072 or 4096 bits",
            )),
        }
    }

    /// The size in bits.
    pub fn bits(self) -> u32 {
        match self {
            Self::Bits2048 => 2048,
            Self::Bits3072 => 3072,
            Self::Bits4096 => 4096,
        }
    }

    fn aws(self) -> KeySize {
        match self {
            Self::Bits2048 => KeySize::Rsa2048,
            Self::Bits3072 => KeySize::Rsa3072,
            Self::Bits4096 => KeySize::Rsa4096,
        }
    }
}

/// An RSA encryption (key wrapping) algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncryptionAlgorithm {
    /// `RSA-OAEP`: OAEP with SHA-1 and MGF1-SHA-1.
    RsaOaep,
    /// `RSA-OAEP-256`: OAEP with SHA-256 and MGF1-SHA-256.
    RsaOaep256,
    /// `RSA1_5`: PKCS#1 v1.5 padding. Legacy; only with an explicit opt-in.
    Rsa1_5,
}

impl EncryptionAlgorithm {
    /// Parses a JWA name. `RSA1_5` is refused unless `allow_rsa1_5` is set.
    pub fn parse(name: &str, allow_rsa1_5: bool) -> Result<Self, Error> {
        match name {
            "RSA-OAEP" => Ok(Self::RsaOaep),
            "RSA-OAEP-256" => Ok(Self::RsaOaep256),
            "RSA1_5" if allow_rsa1_5 => Ok(Self::Rsa1_5),
            "RSA1_5" => Err(Error::Unsupported(
                "RSA1_5 is disabled: use RSA-OAEP-256, or enable RSA1_5 explicitly",
            )),
            _ => Err(Error::Unsupported(
                "unknown encryption algorithm: use RSA-OAEP or RSA-OAEP-256",
            )),
        }
    }

    /// The JWA name.
    pub fn name(self) -> &'static str {
        match self {
            Self::RsaOaep => "RSA-OAEP",
            Self::RsaOaep256 => "RSA-OAEP-256",
            Self::Rsa1_5 => "RSA1_5",
        }
    }
}

/// An RSA signature algorithm over a precomputed digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    /// PKCS#1 v1.5 with SHA-256.
    Rs256,
    /// PKCS#1 v1.5 with SHA-384.
    Rs384,
    /// PKCS#1 v1.5 with SHA-512.
    Rs512,
    /// PSS with SHA-256 (salt length = digest length).
    Ps256,
    /// PSS with SHA-384.
    Ps384,
    /// PSS with SHA-512.
    Ps512,
}

impl SignatureAlgorithm {
    /// Parses a JWA name (`RS256` … `PS512`).
    pub fn parse(name: &str) -> Result<Self, Error> {
        match name {
            "RS256" => Ok(Self::Rs256),
            "RS384" => Ok(Self::Rs384),
            "RS512" => Ok(Self::Rs512),
            "PS256" => Ok(Self::Ps256),
            "PS384" => Ok(Self::Ps384),
            "PS512" => Ok(Self::Ps512),
            _ => Err(Error::Unsupported(
                "unknown signature algorithm: use RS256/384/512 or PS256/384/512",
            )),
        }
    }

    /// The JWA name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
        }
    }

    /// The digest this algorithm signs.
    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Self::Rs256 | Self::Ps256 => &digest::SHA256,
            Self::Rs384 | Self::Ps384 => &digest::SHA384,
            Self::Rs512 | Self::Ps512 => &digest::SHA512,
        }
    }

    /// Length in bytes of the digest this algorithm signs.
    pub fn digest_len(self) -> usize {
        self.digest().output_len()
    }

    /// Hashes `message` with this algorithm's digest (for callers that hold the message).
    pub fn hash(self, message: &[u8]) -> Vec<u8> {
        digest::digest(self.digest(), message).as_ref().to_vec()
    }

    fn encoding(self) -> &'static dyn RsaEncoding {
        match self {
            Self::Rs256 => &signature::RSA_PKCS1_SHA256,
            Self::Rs384 => &signature::RSA_PKCS1_SHA384,
            Self::Rs512 => &signature::RSA_PKCS1_SHA512,
            Self::Ps256 => &signature::RSA_PSS_SHA256,
            Self::Ps384 => &signature::RSA_PSS_SHA384,
            Self::Ps512 => &signature::RSA_PSS_SHA512,
        }
    }

    fn verification(self) -> &'static RsaParameters {
        match self {
            Self::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Self::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Self::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Self::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
            Self::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
            Self::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
        }
    }

    fn import_digest(self, digest: &[u8]) -> Result<Digest, Error> {
        Digest::import_less_safe(digest, self.digest()).map_err(|_| Error::InvalidLength {
            what: "digest",
            expected: self.digest_len(),
            got: digest.len(),
        })
    }
}

/// The public half of an RSA key: modulus `n` and exponent `e`, big-endian, no
/// leading zeros (the JWK `n`/`e` values before base64url).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RsaPublicKey {
    n: Vec<u8>,
    e: Vec<u8>,
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

fn oaep(algorithm: EncryptionAlgorithm) -> &'static aws_lc_rs::rsa::OaepAlgorithm {
    if algorithm == EncryptionAlgorithm::RsaOaep {
        &OAEP_SHA1_MGF1SHA1
    } else {
        &OAEP_SHA256_MGF1SHA256
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

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

/// Reads one DER element with the expected tag: (tag, contents, rest).
fn der_read(input: &[u8], tag: u8) -> Option<(u8, &[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (t, &rest[..len], &rest[len..]))
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

    /// The key's JWK components, private parts in zeroizing buffers (for export to
    /// another key store; the vault itself never calls this).
    pub fn to_components(&self) -> Result<RsaPrivateComponents, Error> {
        let der = self.to_pkcs8_der()?;
        let bad = || Error::Unsupported("unexpected PKCS#8 encoding");
        // PrivateKeyInfo ::= SEQUENCE { version, algorithm, OCTET STRING RSAPrivateKey }
        let (_, info, _) = der_read(der.expose_secret(), 0x30).ok_or_else(bad)?;
        let (_, _, rest) = der_read(info, 0x02).ok_or_else(bad)?;
        let (_, _, rest) = der_read(rest, 0x30).ok_or_else(bad)?;
        let (_, octets, _) = der_read(rest, 0x04).ok_or_else(bad)?;
        // RSAPrivateKey ::= SEQUENCE { version, n, e, d, p, q, dp, dq, qi }
        let (_, mut fields, _) = der_read(octets, 0x30).ok_or_else(bad)?;
        let mut ints = Vec::with_capacity(9);
        for _ in 0..9 {
            let (_, value, rest) = der_read(fields, 0x02).ok_or_else(bad)?;
            ints.push(SecretBytes::new(strip_leading_zeros(value).to_vec()));
            fields = rest;
        }
        let mut it = ints.into_iter().skip(1);
        let mut next = || it.next().ok_or_else(bad);
        Ok(RsaPrivateComponents {
            n: next()?.expose_secret().to_vec(),
            e: next()?.expose_secret().to_vec(),
            d: next()?,
            p: next()?,
            q: next()?,
            dp: next()?,
            dq: next()?,
            qi: next()?,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RsaPrivateKey {
        RsaPrivateKey::generate(RsaKeySize::Bits2048).unwrap()
    }

    #[test]
    fn oaep_round_trips_and_rejects_tampering() {
        let k = key();
        for alg in [
            EncryptionAlgorithm::RsaOaep,
            EncryptionAlgorithm::RsaOaep256,
        ] {
            let ct = k.public_key().encrypt(alg, &[7u8; 32]).unwrap();
            assert_eq!(ct.len(), 256);
            assert_eq!(k.decrypt(alg, &ct).unwrap().expose_secret(), &[7u8; 32]);
            let mut bad = ct.clone();
            bad[10] ^= 1;
            assert!(matches!(k.decrypt(alg, &bad), Err(Error::Authentication)));
        }
        let ct = k
            .public_key()
            .encrypt(EncryptionAlgorithm::RsaOaep, b"x")
            .unwrap();
        assert!(k.decrypt(EncryptionAlgorithm::RsaOaep256, &ct).is_err());
    }

    #[test]
    fn rsa1_5_needs_an_explicit_opt_in() {
        assert!(EncryptionAlgorithm::parse("RSA1_5", false).is_err());
        let alg = EncryptionAlgorithm::parse("RSA1_5", true).unwrap();
        let k = key();
        let ct = k.public_key().encrypt(alg, b"legacy").unwrap();
        assert_eq!(k.decrypt(alg, &ct).unwrap().expose_secret(), b"legacy");
        assert!(EncryptionAlgorithm::parse("RSA-OAEP-512", true).is_err());
    }

    #[test]
    fn signatures_verify_only_for_the_signed_digest() {
        let k = key();
        for name in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
            let alg = SignatureAlgorithm::parse(name).unwrap();
            let digest = alg.hash(b"message");
            let sig = k.sign_digest(alg, &digest).unwrap();
            assert!(
                k.public_key().verify_digest(alg, &digest, &sig).unwrap(),
                "{name}"
            );
            let other = alg.hash(b"other");
            assert!(
                !k.public_key().verify_digest(alg, &other, &sig).unwrap(),
                "{name}"
            );
        }
        let err = k
            .sign_digest(SignatureAlgorithm::Rs256, &[0u8; 20])
            .unwrap_err();
        assert!(
            err.to_string().contains("expected 32 bytes, got 20"),
            "{err}"
        );
    }

    #[test]
    fn der_export_import_keeps_the_key_and_public_components_verify() {
        let k = key();
        let der = k.to_pkcs8_der().unwrap();
        let again = RsaPrivateKey::from_pkcs8_der(der.expose_secret()).unwrap();
        assert_eq!(again.public_key(), k.public_key());
        assert_eq!(k.public_key().size_bits(), 2048);
        assert_eq!(k.public_key().e(), &[1, 0, 1]);
        let public = RsaPublicKey::from_components(k.public_key().n(), k.public_key().e()).unwrap();
        let ct = public
            .encrypt(EncryptionAlgorithm::RsaOaep256, b"dek")
            .unwrap();
        assert_eq!(
            again
                .decrypt(EncryptionAlgorithm::RsaOaep256, &ct)
                .unwrap()
                .expose_secret(),
            b"dek"
        );
        assert!(RsaPrivateKey::from_pkcs8_der(b"not a key").is_err());
        assert!(format!("{k:?}").contains("REDACTED"));
    }

    #[test]
    fn jwk_components_round_trip_and_inconsistent_ones_are_refused() {
        let k = key();
        let c = k.to_components().unwrap();
        assert_eq!(c.n, k.public_key().n());
        assert_eq!(c.e, k.public_key().e());
        assert_eq!(c.p.len() + c.q.len(), 256);
        let again = RsaPrivateKey::from_components(&c).unwrap();
        let ct = k
            .public_key()
            .encrypt(EncryptionAlgorithm::RsaOaep256, b"x")
            .unwrap();
        assert_eq!(
            again
                .decrypt(EncryptionAlgorithm::RsaOaep256, &ct)
                .unwrap()
                .expose_secret(),
            b"x"
        );
        let mut broken = k.to_components().unwrap();
        broken.d = SecretBytes::new(vec![3; 256]);
        assert!(RsaPrivateKey::from_components(&broken).is_err());
        assert!(!format!("{c:?}").contains(&format!("{:?}", c.d.expose_secret())));
    }

    #[test]
    fn only_vault_sizes_are_accepted() {
        for bits in [1024, 3071, 8192, 0] {
            assert!(RsaKeySize::from_bits(bits).is_err(), "{bits}");
        }
        assert_eq!(RsaKeySize::from_bits(3072).unwrap().bits(), 3072);
    }
}
