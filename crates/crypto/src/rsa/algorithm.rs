//! The RSA key sizes and the encryption and signature algorithms, in JWA names.

use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::rsa::{KeySize, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256};
use aws_lc_rs::signature::{self, RsaEncoding, RsaParameters};

use crate::Error;

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

    pub(super) fn aws(self) -> KeySize {
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

    pub(super) fn encoding(self) -> &'static dyn RsaEncoding {
        match self {
            Self::Rs256 => &signature::RSA_PKCS1_SHA256,
            Self::Rs384 => &signature::RSA_PKCS1_SHA384,
            Self::Rs512 => &signature::RSA_PKCS1_SHA512,
            Self::Ps256 => &signature::RSA_PSS_SHA256,
            Self::Ps384 => &signature::RSA_PSS_SHA384,
            Self::Ps512 => &signature::RSA_PSS_SHA512,
        }
    }

    pub(super) fn verification(self) -> &'static RsaParameters {
        match self {
            Self::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Self::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Self::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Self::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
            Self::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
            Self::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
        }
    }

    pub(super) fn import_digest(self, digest: &[u8]) -> Result<Digest, Error> {
        Digest::import_less_safe(digest, self.digest()).map_err(|_| Error::InvalidLength {
            what: "digest",
            expected: self.digest_len(),
            got: digest.len(),
        })
    }
}

pub(super) fn oaep(algorithm: EncryptionAlgorithm) -> &'static aws_lc_rs::rsa::OaepAlgorithm {
    if algorithm == EncryptionAlgorithm::RsaOaep {
        &OAEP_SHA1_MGF1SHA1
    } else {
        &OAEP_SHA256_MGF1SHA256
    }
}
