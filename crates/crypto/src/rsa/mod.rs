//! RSA key encryption keys: generation, OAEP wrapping, PKCS#1 v1.5 / PSS signatures.
//!
//! Algorithm names follow JSON Web Algorithms as Azure Key Vault uses them
//! (`RSA-OAEP`, `RSA-OAEP-256`, `RSA1_5`, `RS256` … `PS512`). Signing and verifying take a
//! *digest*, as the Key Vault `sign`/`verify` operations do. RSA1_5 encryption is
//! vulnerable to padding-oracle attacks, so it is only reachable through an explicit
//! opt-in ([`EncryptionAlgorithm::parse`] with `allow_rsa1_5`).

mod algorithm;
mod oaep_block;
mod private;
mod public;

pub use algorithm::{EncryptionAlgorithm, RsaKeySize, SignatureAlgorithm};
pub use oaep_block::oaep_decode;
pub use private::{RsaPrivateComponents, RsaPrivateKey};
pub use public::RsaPublicKey;

#[cfg(test)]
mod tests;
